//! The verifier's consumer. For a batch of `case.*` events it gathers the facts about every
//! case with one query per kind of fact, asks [`verify::decide`] for each case, and records
//! the verdicts (decisions, statuses, timeline entries, hand-off events, deadlines) with one
//! statement per table, all in the inbox transaction.

use crate::classify::{Classification, Classifier, Decision};
use crate::verify::{self, EarlierCase, Facts, OfficerDecision, Requirements, Verdict};
use chrono::{DateTime, Utc};
use lapor_shared::amqp::consume::{self, BatchHandler, HandleError, Incoming};
use lapor_shared::deadlines;
use lapor_shared::domain::{CaseStatus, Category, Kind, KkNumber, Nik, TrackingId};
use lapor_shared::messages::CaseEventV1;
use lapor_shared::service::Context;
use lapor_shared::store::{self, CaseRow, Entry, Transition};
use sqlx::PgConnection;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use uuid::Uuid;

pub struct VerifyHandler {
    pub ctx: Context,
    pub classifier: Arc<Classifier>,
}

pub const ACTOR: &str = "verifier";

/// The latest officer's decision on each case that has one.
async fn officer_decisions(
    conn: &mut PgConnection,
    case_ids: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, OfficerDecision>> {
    if case_ids.is_empty() {
        return Ok(HashMap::new());
    }
    type Row = (
        Uuid,
        String,
        Option<String>,
        Option<bool>,
        Option<String>,
        Option<bool>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT DISTINCT ON (case_id) case_id, actor, kind, in_scope, category, needs_followup, note
         FROM case_decisions WHERE case_id = ANY($1) AND actor LIKE 'officer:%'
         ORDER BY case_id, id DESC",
    )
    .bind(case_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(id, actor, kind, in_scope, category, needs_followup, note)| {
                Some((
                    id,
                    OfficerDecision {
                        officer: actor.trim_start_matches("officer:").to_owned(),
                        kind: Kind::parse(kind.as_deref()?).ok()?,
                        in_scope: in_scope?,
                        category: category.as_deref().and_then(|c| Category::parse(c).ok()),
                        needs_followup: needs_followup.unwrap_or(false),
                        note,
                    },
                ))
            },
        )
        .collect())
}

/// An earlier case a new one may repeat, with the status it had when the batch read it.
struct Candidate {
    case: EarlierCase,
    status: String,
}

/// What the batch reads about its cases before deciding, in one query.
#[derive(Default)]
struct CaseFacts {
    /// What each case has of the service standard's requirements. A case without an
    /// identity record is absent (a broken invariant: its message is parked).
    requirements: HashMap<Uuid, Requirements>,
    /// For each case looked for (`fresh`), the reporter's earlier open cases within the
    /// window (or with the same LAPOR! id), oldest first.
    earlier: HashMap<Uuid, Vec<Candidate>>,
}

/// Reads the requirements of every case of `cases`, and the earlier cases of those marked
/// fresh. One round trip: both are keyed by the batch's cases.
async fn case_facts(
    conn: &mut PgConnection,
    cases: &[(&CaseRow, bool)],
    window_days: u32,
) -> sqlx::Result<CaseFacts> {
    if cases.is_empty() {
        return Ok(CaseFacts::default());
    }
    let ids: Vec<Uuid> = cases.iter().map(|(c, _)| c.id).collect();
    let fresh: Vec<bool> = cases.iter().map(|(_, f)| *f).collect();
    let refs: Vec<&[u8]> = cases
        .iter()
        .map(|(c, _)| c.reporter_ref.as_slice())
        .collect();
    let received: Vec<DateTime<Utc>> = cases.iter().map(|(c, _)| c.received_at).collect();
    let lapor_ids: Vec<Option<&str>> = cases
        .iter()
        .map(|(c, _)| c.lapor_tracking_id.as_deref())
        .collect();
    type Row = (
        Uuid,
        Option<String>,
        Option<String>,
        bool,
        Option<Uuid>,
        Option<String>,
        Option<String>,
        bool,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT t.case_id, i.nik, i.kk_number,
                EXISTS (SELECT 1 FROM case_attachments a WHERE a.case_id = t.case_id AND a.kind = 'kk_copy'),
                e.id, e.tracking_id, e.body, COALESCE(e.lapor_tracking_id = t.lapor_id, false), e.status
         FROM UNNEST($1::uuid[], $2::bytea[], $3::timestamptz[], $4::text[], $6::bool[])
              AS t(case_id, reporter_ref, received_at, lapor_id, fresh)
         LEFT JOIN case_identity i ON i.case_id = t.case_id
         LEFT JOIN LATERAL (
             SELECT id, tracking_id, body, lapor_tracking_id, status, received_at FROM cases
             WHERE t.fresh AND id <> t.case_id AND duplicate_of IS NULL AND status <> 'closed'
               AND (received_at, id) < (t.received_at, t.case_id)
               AND ((reporter_ref = t.reporter_ref AND received_at >= t.received_at - make_interval(days => $5))
                    OR (t.lapor_id IS NOT NULL AND lapor_tracking_id = t.lapor_id))
             ORDER BY received_at, id LIMIT 50) e ON true
         ORDER BY t.case_id, e.received_at, e.id",
    )
    .bind(&ids)
    .bind(&refs)
    .bind(&received)
    .bind(&lapor_ids)
    .bind(window_days as i32)
    .bind(&fresh)
    .fetch_all(conn)
    .await?;
    let mut facts = CaseFacts::default();
    for (case_id, nik, kk, kk_copy, earlier_id, tracking_id, text, same_lapor_id, status) in rows {
        if let Some(nik) = nik {
            // The NIK was checked at intake; a stored NIK that no longer parses counts as a
            // missing family card, which makes the reporter send their documents again.
            let identity_ok = Nik::parse(&nik).is_ok();
            facts.requirements.insert(
                case_id,
                Requirements {
                    kk_number: identity_ok
                        && kk.as_deref().is_some_and(|k| KkNumber::parse(k).is_ok()),
                    kk_copy,
                },
            );
        }
        if let (Some(id), Some(tracking_id), Some(text), Some(status)) =
            (earlier_id, tracking_id, text, status)
        {
            facts.earlier.entry(case_id).or_default().push(Candidate {
                case: EarlierCase {
                    id,
                    tracking_id,
                    text,
                    same_lapor_id,
                },
                status,
            });
        }
    }
    Ok(facts)
}

/// A case of the batch that is waiting for verification, with its message's index.
struct Pending<'a> {
    index: usize,
    case: &'a CaseRow,
    tracking: TrackingId,
    claimed_kind: Option<Kind>,
    event: &'a str,
}

/// The rows one verdict writes.
struct Written<'a> {
    update: CaseUpdate,
    decision: Option<(Classification, String)>,
    entries: Vec<Entry<'a>>,
    outcome: &'static str,
}

struct CaseUpdate {
    id: Uuid,
    status: CaseStatus,
    message: Option<String>,
    duplicate_of: Option<Uuid>,
    decided: Option<verify::Decided>,
}

impl BatchHandler for VerifyHandler {
    fn name(&self) -> &'static str {
        "verifier"
    }

    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        msgs: &[&Incoming],
    ) -> Result<Vec<consume::Verdict>, HandleError> {
        let (events, mut verdicts) = consume::decode_each::<CaseEventV1>(msgs);
        let ids: Vec<Uuid> = events.iter().flatten().map(|e| e.case_id).collect();
        let cases = store::lock_many(tx, &ids).await?;

        let mut pending = Vec::new();
        let mut seen = HashSet::new();
        for (i, ev) in events.iter().enumerate() {
            let Some(ev) = ev else { continue };
            let Some(case) = cases.get(&ev.case_id) else {
                verdicts[i] = Err(format!("case {} does not exist", ev.case_id));
                continue;
            };
            let checked = (|| {
                Ok::<_, store::Corrupt>((case.status()?, case.tracking()?, case.claimed_kind()?))
            })();
            let (status, tracking, claimed_kind) = match checked {
                Ok(c) => c,
                Err(e) => {
                    verdicts[i] = Err(e.to_string());
                    continue;
                }
            };
            // An event that arrives after the case moved on (redelivered, overtaken by a
            // later one, or a second event for the same case in this batch): nothing left to
            // verify.
            if status != CaseStatus::Received || !seen.insert(case.id) {
                tracing::debug!(parent: &msgs[i].span, case_id = %case.id, status = %status, "case is past verification");
                continue;
            }
            pending.push(Pending {
                index: i,
                case,
                tracking,
                claimed_kind,
                event: ev.event.as_str(),
            });
        }
        if pending.is_empty() {
            return Ok(verdicts);
        }

        // The facts: the officers' decisions, then the requirements and the earlier cases in
        // one query. A case just received cannot have an officer's decision yet, and one an
        // officer decided is not compared with earlier cases.
        let asked_officer: Vec<Uuid> = pending
            .iter()
            .filter(|p| p.event != "received")
            .map(|p| p.case.id)
            .collect();
        let officers = officer_decisions(tx, &asked_officer).await?;
        let cases: Vec<(&CaseRow, bool)> = pending
            .iter()
            .map(|p| (p.case, p.event == "received"))
            .collect();
        let settings = &self.ctx.settings.verifier;
        let CaseFacts {
            requirements,
            earlier,
        } = case_facts(tx, &cases, settings.duplicate_window_days).await?;

        // Decide in the order the cases were received, as if one at a time: a case that this
        // batch links as a duplicate is no longer a candidate for the cases after it.
        pending.sort_by_key(|p| (p.case.received_at, p.case.id));
        let now = self.ctx.clock.now();
        let mut linked: HashSet<Uuid> = HashSet::new();
        let mut new_status: HashMap<Uuid, CaseStatus> = HashMap::new();
        let mut written: Vec<(usize, Written<'_>)> = Vec::with_capacity(pending.len());
        for p in &pending {
            let Some(reqs) = requirements.get(&p.case.id).copied() else {
                verdicts[p.index] = Err(format!("case {} has no identity record", p.case.id));
                continue;
            };
            let candidates: Vec<&Candidate> = earlier
                .get(&p.case.id)
                .map(|c| c.iter().filter(|c| !linked.contains(&c.case.id)).collect())
                .unwrap_or_default();
            let result = msgs[p.index].span.in_scope(|| {
                self.verdict(
                    p,
                    officers.get(&p.case.id),
                    &candidates,
                    reqs,
                    &new_status,
                    now,
                )
            });
            match result {
                Ok(w) => {
                    if w.update.duplicate_of.is_some() {
                        linked.insert(p.case.id);
                    }
                    new_status.insert(p.case.id, w.update.status);
                    written.push((p.index, w));
                }
                Err(reason) => verdicts[p.index] = Err(reason),
            }
        }
        if written.is_empty() {
            return Ok(verdicts);
        }
        self.write(tx, &written, now)
            .await
            .map_err(HandleError::Retry)?;
        for (i, w) in &written {
            metrics::counter!("lapor_verifications_total", "outcome" => w.outcome).increment(1);
            tracing::info!(parent: &msgs[*i].span, case_id = %w.update.id, outcome = w.outcome, "case verified");
        }
        Ok(verdicts)
    }
}

impl VerifyHandler {
    /// The verdict on one case and the rows it writes; pure. `Err` is a reason to park.
    fn verdict<'a>(
        &self,
        p: &Pending<'a>,
        officer: Option<&OfficerDecision>,
        candidates: &[&Candidate],
        requirements: Requirements,
        new_status: &HashMap<Uuid, CaseStatus>,
        now: DateTime<Utc>,
    ) -> Result<Written<'a>, String> {
        let classification = match officer {
            Some(_) => None,
            None => Some(self.classifier.classify(&p.case.body, p.claimed_kind)),
        };
        let earlier: Vec<EarlierCase> = if p.event == "received" && officer.is_none() {
            candidates.iter().map(|c| c.case.clone()).collect()
        } else {
            Vec::new()
        };
        let duplicate_of = verify::find_duplicate(
            self.classifier.normaliser(),
            &p.case.body,
            &earlier,
            self.ctx.settings.verifier.duplicate_similarity,
        );
        let verdict = verify::decide(
            &Facts {
                classification: classification.as_ref(),
                officer,
                duplicate_of,
                requirements,
            },
            &self.ctx.reference.routing,
        );
        let answers = &self.ctx.reference.answers;
        let tracking_id = p.tracking.to_string();
        let (event, status, decided, message, note, duplicate_of, outcome) = match &verdict {
            Verdict::Duplicate { of, of_tracking_id } => {
                let m = answers.message("duplicate", &[("tracking_id", of_tracking_id)]);
                let dup = (CaseStatus::Duplicate, "duplicate");
                (
                    "duplicate",
                    dup.0,
                    None,
                    Some(m.clone()),
                    m,
                    Some(*of),
                    dup.1,
                )
            }
            Verdict::Review { .. } => {
                let m = answers.message("in_review", &[]);
                (
                    "in_review",
                    CaseStatus::InReview,
                    None,
                    Some(m.clone()),
                    m,
                    None,
                    "in_review",
                )
            }
            Verdict::OutOfScope { decided, message } => (
                "out_of_scope",
                CaseStatus::OutOfScope,
                Some(decided.clone()),
                Some(message.clone()),
                message.clone(),
                None,
                "out_of_scope",
            ),
            Verdict::NeedsInfo { decided, missing } => {
                let m = verify::needs_info_message(answers, missing, &tracking_id);
                (
                    "needs_info",
                    CaseStatus::NeedsInfo,
                    Some(decided.clone()),
                    Some(m.clone()),
                    m,
                    None,
                    "needs_info",
                )
            }
            Verdict::Verified { decided } => {
                let note = match decided.category {
                    Some(c) => format!("Laporan diverifikasi: {}, kategori {c}.", decided.kind),
                    None => format!("Laporan diverifikasi: {}.", decided.kind),
                };
                (
                    "verified",
                    CaseStatus::Verified,
                    Some(decided.clone()),
                    None,
                    note,
                    None,
                    "verified",
                )
            }
        };
        let mut entries = vec![Entry::new(
            p.case.id,
            p.tracking,
            Transition {
                event,
                status,
                unit: None,
                actor: ACTOR,
                note: Some(note),
                at: now,
            },
        )];
        if let Some(of) = duplicate_of {
            // The earlier case's timeline shows that the reporter wrote again.
            let first = candidates
                .iter()
                .find(|c| c.case.id == of)
                .ok_or_else(|| format!("duplicate target {of} is not among the candidates"))?;
            let of_status = match new_status.get(&of) {
                Some(s) => *s,
                None => CaseStatus::parse(&first.status)
                    .map_err(|_| format!("stored case {of} has an invalid status"))?,
            };
            let of_tracking = TrackingId::parse(&first.case.tracking_id)
                .map_err(|_| format!("stored case {of} has an invalid tracking_id"))?;
            entries.push(Entry::new(
                of,
                of_tracking,
                Transition {
                    event: "duplicate_linked",
                    status: of_status,
                    unit: None,
                    actor: ACTOR,
                    note: Some(format!(
                        "Laporan serupa dari pelapor yang sama diterima melalui kanal {} dan digabungkan.",
                        p.case.channel
                    )),
                    at: now,
                },
            ));
        }
        Ok(Written {
            update: CaseUpdate {
                id: p.case.id,
                status,
                message,
                duplicate_of,
                decided,
            },
            decision: classification
                .map(|c| (c, format!("classifier:{}", self.classifier.version))),
            entries,
            outcome,
        })
    }

    /// Writes the verdicts of a batch: one statement for the decisions and the cases, one
    /// for the timeline, then the deadlines of the verified cases.
    async fn write(
        &self,
        tx: &mut PgConnection,
        written: &[(usize, Written<'_>)],
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let decisions: Vec<(Uuid, &Classification, &str)> = written
            .iter()
            .filter_map(|(_, w)| {
                w.decision
                    .as_ref()
                    .map(|(c, a)| (w.update.id, c, a.as_str()))
            })
            .collect();
        let d_ids: Vec<Uuid> = decisions.iter().map(|d| d.0).collect();
        let d_actors: Vec<&str> = decisions.iter().map(|d| d.2).collect();
        let d_kinds: Vec<&str> = decisions.iter().map(|d| d.1.kind.as_str()).collect();
        let d_how: Vec<&str> = decisions
            .iter()
            .map(|d| match d.1.decision {
                Decision::Auto => "auto",
                Decision::ManualReview => "manual_review",
            })
            .collect();
        let d_in_scope: Vec<bool> = decisions.iter().map(|d| d.1.in_scope).collect();
        let d_categories: Vec<Option<&str>> = decisions
            .iter()
            .map(|d| d.1.category.map(|c| c.as_str()))
            .collect();
        let d_confidence: Vec<f32> = decisions.iter().map(|d| d.1.confidence as f32).collect();
        let d_evidence: Vec<serde_json::Value> = decisions
            .iter()
            .map(|d| serde_json::to_value(&d.1.evidence).unwrap_or_default())
            .collect();
        let d_notes: Vec<Option<String>> = decisions
            .iter()
            .map(|d| (!d.1.review_reasons.is_empty()).then(|| d.1.review_reasons.join("; ")))
            .collect();

        let updates: Vec<&CaseUpdate> = written.iter().map(|(_, w)| &w.update).collect();
        let ids: Vec<Uuid> = updates.iter().map(|u| u.id).collect();
        let statuses: Vec<&str> = updates.iter().map(|u| u.status.as_str()).collect();
        let messages: Vec<Option<&str>> = updates.iter().map(|u| u.message.as_deref()).collect();
        let duplicates: Vec<Option<Uuid>> = updates.iter().map(|u| u.duplicate_of).collect();
        let kinds: Vec<Option<&str>> = updates
            .iter()
            .map(|u| u.decided.as_ref().map(|d| d.kind.as_str()))
            .collect();
        let in_scope: Vec<Option<bool>> = updates
            .iter()
            .map(|u| u.decided.as_ref().map(|d| d.in_scope))
            .collect();
        let categories: Vec<Option<&str>> = updates
            .iter()
            .map(|u| {
                u.decided
                    .as_ref()
                    .and_then(|d| d.category.map(|c| c.as_str()))
            })
            .collect();
        let followup: Vec<Option<bool>> = updates
            .iter()
            .map(|u| u.decided.as_ref().map(|d| d.needs_followup))
            .collect();
        // The decisions and the cases in one statement. A verdict without a decision
        // (duplicate, review) keeps what the case had.
        sqlx::query(
            "WITH d AS (
               INSERT INTO case_decisions (case_id, at, actor, decision, kind, in_scope, category, needs_followup, confidence, evidence, note)
               SELECT c, $1, a, d, k, s, g, NULL, f, e, n
               FROM UNNEST($10::uuid[], $11::text[], $12::text[], $13::text[], $14::bool[], $15::text[], $16::real[], $17::jsonb[], $18::text[])
                    AS t(c, a, d, k, s, g, f, e, n))
             UPDATE cases c SET status = t.status, updated_at = $1, reporter_message = t.message,
                    duplicate_of = COALESCE(t.dup, c.duplicate_of),
                    kind = COALESCE(t.kind, c.kind), in_scope = COALESCE(t.in_scope, c.in_scope),
                    category = CASE WHEN t.kind IS NULL THEN c.category ELSE t.category END,
                    needs_followup = COALESCE(t.followup, c.needs_followup)
             FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::bool[], $8::text[], $9::bool[])
                  AS t(id, status, message, dup, kind, in_scope, category, followup)
             WHERE c.id = t.id",
        )
        .bind(now)
        .bind(&ids)
        .bind(&statuses)
        .bind(&messages)
        .bind(&duplicates)
        .bind(&kinds)
        .bind(&in_scope)
        .bind(&categories)
        .bind(&followup)
        .bind(&d_ids)
        .bind(&d_actors)
        .bind(&d_how)
        .bind(&d_kinds)
        .bind(&d_in_scope)
        .bind(&d_categories)
        .bind(&d_confidence)
        .bind(&d_evidence)
        .bind(&d_notes)
        .execute(&mut *tx)
        .await?;

        let entries: Vec<Entry<'_>> = written
            .iter()
            .flat_map(|(_, w)| w.entries.iter().cloned())
            .collect();
        let steps = store::log_many_reading(tx, &entries).await?;
        // The deadlines of the cases decided here (a linked earlier case keeps its clock).
        deadlines::refresh_from(tx, &ids, steps, &self.ctx.reference, &self.ctx.policy, now)
            .await?;
        Ok(())
    }
}
