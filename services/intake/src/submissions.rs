//! Storing submissions, with group commit: complaints that arrive while a transaction is
//! storing others wait for it and are stored together in the next one, with a fixed number of
//! statements whatever their number. A lone complaint is stored at once, never held back to
//! fill a group. Each request is answered only after the transaction holding its case and its
//! `case.received` event committed, exactly as if it had been stored alone.
//!
//! A group that fails as a whole (a tracking id drawn twice, an idempotency key sent
//! concurrently by another request, a lost connection) is stored again one complaint at a
//! time, so one complaint's problem costs the others a retry, never their answer.

use crate::submission::NewComplaint;
use chrono::{DateTime, Utc};
use lapor_shared::db::kept::Kept;
use lapor_shared::db::outbox;
use lapor_shared::domain::{CaseStatus, TrackingId};
use lapor_shared::messages::Attachment;
use lapor_shared::privacy;
use lapor_shared::service::Context;
use lapor_shared::store::{Entry, Transition};
use sqlx::Connection;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// A validated complaint with what its request carried besides.
pub struct Submission {
    pub complaint: NewComplaint,
    pub key: Option<String>,
    pub request_hash: Vec<u8>,
    /// The request's trace context, continued by the `case.received` event.
    pub trace: HashMap<String, String>,
}

#[derive(Debug)]
pub enum Created {
    New(TrackingId),
    /// Another request with the same idempotency key committed first.
    KeyTaken,
}

struct Job {
    submission: Arc<Submission>,
    reply: oneshot::Sender<anyhow::Result<Created>>,
}

/// Where request handlers hand their submissions.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts `ctx.settings.http.submit_writers` writers. They stop once every clone of the
    /// returned `Writer` is dropped and the submissions already handed over are stored.
    pub fn start(ctx: &Context) -> (Self, Vec<JoinHandle<anyhow::Result<()>>>) {
        let batch_max = ctx.settings.http.submit_batch_max.max(1);
        let (tx, rx) = mpsc::channel(batch_max * 4);
        let rx = Arc::new(Mutex::new(rx));
        // The writers' transactions run on connections kept between groups (`db::kept`).
        let kept = Kept::new(ctx.pool.clone());
        let tasks = (0..ctx.settings.http.submit_writers.max(1))
            .map(|_| {
                let (ctx, rx, kept) = (ctx.clone(), rx.clone(), kept.clone());
                tokio::spawn(async move {
                    while let Some(jobs) = next_group(&rx, batch_max).await {
                        store_group(&ctx, &kept, jobs).await;
                    }
                    Ok(())
                })
            })
            .collect();
        (Self { tx }, tasks)
    }

    /// Stores a submission; returns once its transaction committed (or failed).
    pub async fn store(&self, submission: Arc<Submission>) -> anyhow::Result<Created> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { submission, reply })
            .await
            .map_err(|_| anyhow::anyhow!("intake is stopping: no writer takes submissions"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the writer stopped before storing the submission"))?
    }
}

/// The next group: waits for one submission, then takes those already waiting, up to `max`.
async fn next_group(rx: &Mutex<mpsc::Receiver<Job>>, max: usize) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut jobs = vec![first];
    while jobs.len() < max {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
    Some(jobs)
}

async fn store_group(ctx: &Context, kept: &Kept, jobs: Vec<Job>) {
    // Two submissions with one key cannot share a transaction: the later waits for the
    // earlier to commit, then finds its key taken and is answered with the earlier's case.
    let mut keys = HashSet::new();
    let (group, later): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| {
        j.submission
            .key
            .as_deref()
            .is_none_or(|k| keys.insert(k.to_owned()))
    });
    metrics::histogram!("lapor_intake_group_size").record(group.len() as f64);
    let alone = if group.len() > 1 {
        let submissions: Vec<&Submission> = group.iter().map(|j| &*j.submission).collect();
        match store_and_hand_off(ctx, kept, &submissions).await {
            Ok(created) => {
                for (job, c) in group.into_iter().zip(created) {
                    job.reply.send(Ok(c)).ok();
                }
                Vec::new()
            }
            Err(e) => {
                tracing::debug!(error = %privacy::scrub(&format!("{e:#}")), size = group.len(), "group not stored together; storing each alone");
                group
            }
        }
    } else {
        group
    };
    for job in alone.into_iter().chain(later) {
        store_alone(ctx, kept, job).await;
    }
}

/// Stores one submission in its own transaction, drawing a new tracking id if the one drawn
/// is taken (twice at most).
async fn store_alone(ctx: &Context, kept: &Kept, job: Job) {
    let mut result = Err(anyhow::anyhow!("no attempt made"));
    for _ in 0..3 {
        result = store_and_hand_off(ctx, kept, &[&job.submission])
            .await
            .map(|mut c| c.remove(0));
        match &result {
            Err(e) if is_tracking_collision(e) => continue,
            _ => break,
        }
    }
    job.reply.send(result).ok();
}

fn is_tracking_collision(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .is_some_and(|d| d.constraint() == Some("cases_tracking_id_key"))
}

/// [`store`], then hands the `case.received` events to the relay once they committed.
async fn store_and_hand_off(
    ctx: &Context,
    kept: &Kept,
    submissions: &[&Submission],
) -> anyhow::Result<Vec<Created>> {
    outbox::handing_off(ctx.handoff.as_ref(), store(ctx, kept, submissions)).await
}

/// Stores the cases, their reporters' identities, attachments and idempotency keys, their
/// first timeline entries and `case.received` events in one transaction. With more than one
/// submission, a key already taken fails the whole group; alone, it is answered `KeyTaken`.
async fn store(
    ctx: &Context,
    kept: &Kept,
    submissions: &[&Submission],
) -> anyhow::Result<Vec<Created>> {
    let now: DateTime<Utc> = ctx.clock.now();
    let ids: Vec<Uuid> = submissions.iter().map(|_| Uuid::now_v7()).collect();
    let tids: Vec<TrackingId> = submissions.iter().map(|_| TrackingId::generate()).collect();
    let c: Vec<&NewComplaint> = submissions.iter().map(|s| &s.complaint).collect();
    let pseudonym_key = ctx.settings.privacy.pseudonym_key.expose();
    let keys: Vec<Option<&str>> = submissions.iter().map(|s| s.key.as_deref()).collect();
    let expected_keys = keys.iter().flatten().count();

    let mut conn = kept.acquire().await?;
    let mut tx = conn.begin().await?;
    // One statement for the four tables: the identity rows, attachments and keys reference
    // cases inserted by the same statement, which foreign keys accept (they are checked at
    // its end).
    let attachments: Vec<(Uuid, i32, &Attachment)> = ids
        .iter()
        .zip(&c)
        .flat_map(|(id, c)| (0..).zip(&c.attachments).map(move |(p, a)| (*id, p, a)))
        .collect();
    let keys_written: i64 = sqlx::query_scalar(
        "WITH input AS (
           SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                $7::text[], $8::text[], $9::bool[], $10::bool[], $11::text[], $12::bytea[],
                                $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[],
                                $20::text[], $21::text[], $22::bytea[])
             AS t(id, tid, channel, claimed_kind, title, body, province, regency, anonymous, confidential,
                  lapor_id, reporter_ref, name, nik, phone, email, address, kk, location_address, key, hash)),
         c AS (
           INSERT INTO cases (id, tracking_id, status, channel, claimed_kind, title, body, province_code,
                              regency_code, anonymous, confidential, lapor_tracking_id, reporter_ref,
                              received_at, updated_at)
           SELECT id, tid, 'received', channel, claimed_kind, title, body, province, regency, anonymous,
                  confidential, lapor_id, reporter_ref, $13, $13 FROM input),
         i AS (
           INSERT INTO case_identity (case_id, name, nik, phone, email, address, kk_number, location_address)
           SELECT id, name, nik, phone, email, address, kk, location_address FROM input),
         a AS (
           INSERT INTO case_attachments (case_id, position, kind, url, sha256, added_at)
           SELECT c, p, k, u, h, $13 FROM UNNEST($23::uuid[], $24::int[], $25::text[], $26::text[], $27::text[])
             AS t(c, p, k, u, h)),
         k AS (
           INSERT INTO idempotency_keys (key, request_sha256, case_id, created_at)
           SELECT key, hash, id, $13 FROM input WHERE key IS NOT NULL
           ON CONFLICT (key) DO NOTHING
           RETURNING key)
         SELECT count(*) FROM k",
    )
    .bind(&ids)
    .bind(tids.iter().map(ToString::to_string).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.channel.as_str()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.kind.map(|k| k.as_str())).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.title.as_deref()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.text.as_str()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.location.province_code.as_str()).collect::<Vec<_>>())
    .bind(
        c.iter()
            .map(|c| c.location.regency_code.map(|r| r.to_string()))
            .collect::<Vec<_>>(),
    )
    .bind(c.iter().map(|c| c.anonymous).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.confidential).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.lapor_tracking_id.as_deref()).collect::<Vec<_>>())
    .bind(
        c.iter()
            .map(|c| privacy::pseudonym(pseudonym_key, c.reporter.nik.expose()))
            .collect::<Vec<_>>(),
    )
    .bind(now)
    .bind(c.iter().map(|c| c.reporter.name.as_str()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.reporter.nik.expose()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.reporter.phone.expose()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.reporter.email.as_deref()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.reporter.address.as_deref()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.kk_number.as_ref().map(|k| k.expose())).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.location.address.as_deref()).collect::<Vec<_>>())
    .bind(&keys)
    .bind(submissions.iter().map(|s| s.request_hash.as_slice()).collect::<Vec<_>>())
    .bind(attachments.iter().map(|a| a.0).collect::<Vec<_>>())
    .bind(attachments.iter().map(|a| a.1).collect::<Vec<_>>())
    .bind(attachments.iter().map(|a| attachment_kind(a.2)).collect::<Vec<_>>())
    .bind(attachments.iter().map(|a| a.2.url.as_str()).collect::<Vec<_>>())
    .bind(attachments.iter().map(|a| a.2.sha256.as_str()).collect::<Vec<_>>())
    .fetch_one(&mut *tx)
    .await?;
    if keys_written as usize != expected_keys {
        tx.rollback().await?;
        conn.keep();
        if submissions.len() == 1 {
            return Ok(vec![Created::KeyTaken]);
        }
        anyhow::bail!("an idempotency key of the group is already taken");
    }
    let entries: Vec<Entry<'_>> = ids
        .iter()
        .zip(&tids)
        .zip(submissions)
        .map(|((id, tid), s)| Entry {
            case_id: *id,
            tracking_id: *tid,
            t: Transition {
                event: "received",
                status: CaseStatus::Received,
                unit: None,
                actor: "intake",
                note: Some(format!(
                    "Laporan diterima melalui kanal {}.",
                    s.complaint.channel
                )),
                at: now,
            },
            trace: s.trace.clone(),
        })
        .collect();
    ctx.log_many(&mut tx, &entries).await?;
    tx.commit().await?;
    conn.keep();
    Ok(tids.into_iter().map(Created::New).collect())
}

/// An attachment's kind as stored: its wire code.
fn attachment_kind(a: &Attachment) -> String {
    serde_json::to_value(a.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Adds attachments to cases (a supplement's to its case), each case's numbered from its given
/// first position, in one statement.
pub async fn insert_attachments(
    conn: &mut sqlx::PgConnection,
    attachments: &[(Uuid, i32, &[Attachment])],
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    let all = || {
        attachments.iter().flat_map(|(id, first, list)| {
            (*first..).zip(list.iter()).map(move |(p, a)| (*id, p, a))
        })
    };
    if all().next().is_none() {
        return Ok(());
    }
    let kinds: Vec<String> = all().map(|(_, _, a)| attachment_kind(a)).collect();
    sqlx::query(
        "INSERT INTO case_attachments (case_id, position, kind, url, sha256, added_at)
         SELECT c, p, k, u, h, $6 FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[]) AS t(c, p, k, u, h)",
    )
    .bind(all().map(|(id, _, _)| id).collect::<Vec<_>>())
    .bind(all().map(|(_, p, _)| p).collect::<Vec<_>>())
    .bind(&kinds)
    .bind(all().map(|(_, _, a)| a.url.as_str()).collect::<Vec<_>>())
    .bind(all().map(|(_, _, a)| a.sha256.as_str()).collect::<Vec<_>>())
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}
