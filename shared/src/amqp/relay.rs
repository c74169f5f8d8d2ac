//! The outbox relay: claims outbox rows with `FOR UPDATE SKIP LOCKED`, publishes them with
//! confirms, deletes them, commits. Any number of relays (in any number of replicas) can run:
//! locked rows are skipped, never read twice at once, and no row is skipped for good because
//! nothing depends on a sequence position. A failure before commit leaves the rows in place to
//! be published again under the same message id.
//!
//! The relay sleeps on PostgreSQL `LISTEN lapor_outbox` (a trigger notifies on insert), with a
//! poll interval as the fallback if a notification is lost. It also publishes the rows its own
//! service's producers hand it after their commits ([`outbox::Handoff`]), and deletes those
//! every 100 ms, together; rows it cannot publish that way are claimed after their
//! `publish_after` like any other.

use super::publish::{PublishError, Publisher};
use super::topology::Topology;
use crate::config::Settings;
use crate::db::kept::Kept;
use crate::db::outbox;
use crate::ops::Readiness;
use backon::{BackoffBuilder, ExponentialBuilder};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Publish(#[from] PublishError),
}

/// Publishes one batch. Returns how many messages went out.
pub async fn relay_once(
    pool: &PgPool,
    publisher: &Publisher,
    which: outbox::Claim<'_>,
    batch: i64,
) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    let rows = outbox::claim(&mut tx, which, batch).await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    publisher.publish_rows(&rows).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    outbox::delete(&mut tx, &ids).await?;
    tx.commit().await?;
    metrics::counter!("lapor_outbox_published_total").increment(rows.len() as u64);
    Ok(rows.len())
}

/// Runs relay workers until `shutdown`, then publishes what is left (within the grace period).
pub async fn run(
    settings: Settings,
    pool: PgPool,
    topology: std::sync::Arc<Topology>,
    app_id: &'static str,
    handoff: Option<outbox::Handoff>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let workers = (0..settings.outbox.relay_workers)
        .map(|n| {
            let (settings, pool, readiness, shutdown) = (
                settings.clone(),
                pool.clone(),
                readiness.clone(),
                shutdown.clone(),
            );
            let (topology, handoff) = (topology.clone(), handoff.clone());
            tokio::spawn(async move {
                let w = Worker {
                    settings: &settings,
                    pool: &pool,
                    topology: &topology,
                    app_id,
                    handoff: handoff.as_ref(),
                };
                supervise(n, &w, readiness, shutdown).await
            })
        })
        .collect::<Vec<_>>();
    for w in workers {
        w.await??;
    }
    Ok(())
}

/// What a relay worker works with.
struct Worker<'a> {
    settings: &'a Settings,
    pool: &'a PgPool,
    topology: &'a Topology,
    app_id: &'static str,
    handoff: Option<&'a outbox::Handoff>,
}

async fn supervise(
    n: u32,
    w: &Worker<'_>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let part = format!("outbox-relay-{n}");
    readiness.set(&part, false);
    let mut backoff = reconnect_backoff();
    loop {
        match session(w, &readiness, &part, &shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                readiness.set(&part, false);
                let wait = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %crate::privacy::scrub(&format!("{e:#}")), retry_in = ?wait, "outbox relay lost its connection");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }
}

/// Waits for a notification from `producer`. Any others already received are dropped with
/// it: their transactions committed before the claim that follows, which therefore sees their
/// rows. Without this, a burst of commits woke the relay once per row, to claims that found
/// nothing left.
async fn wait_for(listener: &mut PgListener, producer: &str) -> Result<(), sqlx::Error> {
    loop {
        if listener.recv().await?.payload() == producer {
            while listener.next_buffered().is_some() {}
            return Ok(());
        }
    }
}

/// Reconnection delays: quick at first, at most 2 s apart, so consumers resume within seconds
/// of the broker coming back (one attempt per 2 s per connection during a long outage).
pub(crate) fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Publishes rows a producer handed over after its commit, and notes them for deletion. Rows
/// handed over longer ago than half their grace are left to the claims, which may already
/// have them.
async fn publish_handed_off(
    publisher: &Publisher,
    handoff: &outbox::Handoff,
    first: outbox::HandedOff,
    batch: usize,
    published: &mut Published,
) -> Result<(), RelayError> {
    let fresh = |h: &outbox::HandedOff| h.at.elapsed() < handoff.grace() / 2;
    let mut rows = Vec::new();
    if fresh(&first) {
        rows = first.rows;
    }
    // Whatever else is already waiting goes in the same round of confirms.
    while rows.len() < batch {
        match handoff.try_recv() {
            Some(h) if fresh(&h) => rows.extend(h.rows),
            Some(_) => {}
            None => break,
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    publisher.publish_rows(&rows).await?;
    metrics::counter!("lapor_outbox_published_total").increment(rows.len() as u64);
    published.add(rows.iter().map(|r| r.id));
    Ok(())
}

/// Handed-off rows already published, deleted together: one statement (and one commit) per
/// `DELETE_EVERY` instead of one per round of confirms, which under light load is one per
/// message. Until their `publish_after` no claim takes them, and they are deleted long
/// before it; if this relay dies first, they are published again under the same ids after
/// it, which consumers absorb.
#[derive(Default)]
struct Published {
    ids: Vec<i64>,
    since: Option<tokio::time::Instant>,
}

const DELETE_EVERY: Duration = Duration::from_millis(100);

impl Published {
    fn add(&mut self, ids: impl Iterator<Item = i64>) {
        self.ids.extend(ids);
        self.since.get_or_insert_with(tokio::time::Instant::now);
    }

    /// When the ids waiting must be deleted (never, while none wait).
    async fn due(&self) {
        match self.since {
            Some(t) => tokio::time::sleep_until(t + DELETE_EVERY).await,
            None => std::future::pending().await,
        }
    }

    async fn delete(&mut self, kept: &Kept) -> Result<(), RelayError> {
        if !self.ids.is_empty() {
            let mut conn = kept.acquire().await?;
            outbox::delete(&mut conn, &self.ids).await?;
            conn.keep();
        }
        self.ids.clear();
        self.since = None;
        Ok(())
    }
}

async fn session(
    w: &Worker<'_>,
    readiness: &Readiness,
    part: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let (settings, pool, topology, app_id) = (w.settings, w.pool, w.topology, w.app_id);
    let conn = super::connect(&settings.amqp, &format!("{app_id} outbox relay")).await?;
    let publisher = Publisher::open(&conn, settings.amqp.publish_timeout(), app_id)
        .await?
        .batching_events(settings.outbox.events_per_message as usize);
    topology.declare(publisher.channel()).await?;
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen("lapor_outbox").await?;
    readiness.set(part, true);
    let batch = i64::from(settings.outbox.batch);
    let poll = Duration::from_millis(settings.outbox.poll_interval_ms);
    let own = outbox::Claim::Own(app_id);
    let mut which = outbox::Claim::OwnAndStale(app_id);
    let mut next_poll = tokio::time::Instant::now() + poll;
    let handed_off = || async {
        match w.handoff {
            Some(h) => h.recv().await,
            None => std::future::pending().await,
        }
    };
    let mut published = Published::default();
    // The deletions' connection, kept between them (`db::kept`).
    let kept = Kept::new(pool.clone());
    loop {
        if shutdown.is_cancelled() {
            // Flush: whatever the last transactions wrote goes out before we exit, handed
            // off or not (this process's producers have stopped). What is already published
            // goes first, so that the flush does not publish it again.
            published.delete(&kept).await?;
            while relay_once(pool, &publisher, outbox::Claim::Flush(app_id), batch).await? > 0 {}
            conn.close(200, "shutting down".into()).await.ok();
            return Ok(());
        }
        let sent = relay_once(pool, &publisher, which, batch).await?;
        if sent as i64 == batch {
            continue;
        }
        // Publish what producers hand over until our own service writes a row for the
        // relay (notification payload = producer), or the poll interval passes.
        which = loop {
            tokio::select! {
                n = wait_for(&mut listener, app_id) => {
                    if let Err(e) = n {
                        tracing::debug!(error = %e, "outbox listener interrupted; polling until it is back");
                        tokio::time::sleep(poll).await;
                    }
                    break own;
                }
                h = handed_off() => {
                    if let Some(handoff) = w.handoff {
                        publish_handed_off(&publisher, handoff, h, batch as usize, &mut published).await?;
                    }
                }
                _ = published.due() => published.delete(&kept).await?,
                _ = tokio::time::sleep_until(next_poll) => {
                    next_poll = tokio::time::Instant::now() + poll;
                    break outbox::Claim::OwnAndStale(app_id);
                }
                _ = shutdown.cancelled() => break own,
            }
        };
    }
}
