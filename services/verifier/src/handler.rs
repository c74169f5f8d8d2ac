//! The verifier's consumer: gathers the facts about a case, asks [`verify::decide`], and
//! records the verdict (decision, status, timeline, event) in the inbox transaction.

use crate::classify::{Classification, Classifier, Decision};
use crate::verify::{self, EarlierCase, Facts, OfficerDecision, Requirements, Verdict};
use lapor_shared::amqp::consume::{HandleError, Handler, Incoming};
use lapor_shared::domain::{CaseStatus, Category, Kind, KkNumber, Nik};
use lapor_shared::messages::{CaseEventV1, decode};
use lapor_shared::service::Context;
use lapor_shared::store::{self, CaseRow, Transition};
use sqlx::PgConnection;
use std::sync::Arc;

pub struct VerifyHandler {
    pub ctx: Context,
    pub classifier: Arc<Classifier>,
}

pub const ACTOR: &str = "verifier";

async fn officer_decision(
    conn: &mut PgConnection,
    case: &CaseRow,
) -> sqlx::Result<Option<OfficerDecision>> {
    type Row = (
        String,
        Option<String>,
        Option<bool>,
        Option<String>,
        Option<bool>,
        Option<String>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT actor, kind, in_scope, category, needs_followup, note FROM case_decisions
         WHERE case_id = $1 AND actor LIKE 'officer:%' ORDER BY id DESC LIMIT 1",
    )
    .bind(case.id)
    .fetch_optional(conn)
    .await?;
    Ok(
        row.and_then(|(actor, kind, in_scope, category, needs_followup, note)| {
            Some(OfficerDecision {
                officer: actor.trim_start_matches("officer:").to_owned(),
                kind: Kind::parse(kind.as_deref()?).ok()?,
                in_scope: in_scope?,
                category: category.as_deref().and_then(|c| Category::parse(c).ok()),
                needs_followup: needs_followup.unwrap_or(false),
                note,
            })
        }),
    )
}

async fn requirements(conn: &mut PgConnection, case: &CaseRow) -> sqlx::Result<Requirements> {
    let (nik, kk, kk_copy): (String, Option<String>, bool) = sqlx::query_as(
        "SELECT nik, kk_number, EXISTS (SELECT 1 FROM case_attachments a WHERE a.case_id = $1 AND a.kind = 'kk_copy')
         FROM case_identity WHERE case_id = $1",
    )
    .bind(case.id)
    .fetch_one(&mut *conn)
    .await?;
    // The NIK was checked at intake; a stored NIK that no longer parses counts as a missing
    // family card, which makes the reporter send their documents again.
    let identity_ok = Nik::parse(&nik).is_ok();
    Ok(Requirements {
        kk_number: identity_ok && kk.as_deref().is_some_and(|k| KkNumber::parse(k).is_ok()),
        kk_copy,
    })
}

async fn earlier_cases(
    conn: &mut PgConnection,
    case: &CaseRow,
    window_days: u32,
) -> sqlx::Result<Vec<EarlierCase>> {
    let rows: Vec<(uuid::Uuid, String, String, bool)> = sqlx::query_as(
        "SELECT id, tracking_id, body, COALESCE(lapor_tracking_id = $5, false) FROM cases
         WHERE id <> $1 AND duplicate_of IS NULL AND status <> 'closed'
           AND (received_at, id) < ($3, $1)
           AND ((reporter_ref = $2 AND received_at >= $3 - make_interval(days => $4))
                OR ($5::text IS NOT NULL AND lapor_tracking_id = $5))
         ORDER BY received_at, id LIMIT 50",
    )
    .bind(case.id)
    .bind(&case.reporter_ref)
    .bind(case.received_at)
    .bind(window_days as i32)
    .bind(&case.lapor_tracking_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, tracking_id, text, same_lapor_id)| EarlierCase {
            id,
            tracking_id,
            text,
            same_lapor_id,
        })
        .collect())
}

async fn record_decision(
    conn: &mut PgConnection,
    case: &CaseRow,
    c: &Classification,
    actor: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<()> {
    let decision = match c.decision {
        Decision::Auto => "auto",
        Decision::ManualReview => "manual_review",
    };
    sqlx::query(
        "INSERT INTO case_decisions (case_id, at, actor, decision, kind, in_scope, category, needs_followup, confidence, evidence, note)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10)",
    )
    .bind(case.id)
    .bind(at)
    .bind(actor)
    .bind(decision)
    .bind(c.kind.as_str())
    .bind(c.in_scope)
    .bind(c.category.map(|c| c.as_str()))
    .bind(c.confidence as f32)
    .bind(serde_json::to_value(&c.evidence).unwrap_or_default())
    .bind((!c.review_reasons.is_empty()).then(|| c.review_reasons.join("; ")))
    .execute(conn)
    .await?;
    Ok(())
}

impl Handler for VerifyHandler {
    fn name(&self) -> &'static str {
        "verifier"
    }

    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let ev: CaseEventV1 = decode(&msg.body)?;
        let case = store::lock(tx, ev.case_id)
            .await?
            .ok_or_else(|| HandleError::Park(format!("case {} does not exist", ev.case_id)))?;
        let status = case
            .status()
            .map_err(|e| HandleError::Park(e.to_string()))?;
        if status != CaseStatus::Received {
            // An event that arrives after the case moved on (redelivered, or overtaken by a
            // later one): nothing left to verify.
            tracing::debug!(case_id = %case.id, status = %status, "case is past verification");
            return Ok(());
        }
        let now = self.ctx.clock.now();
        let settings = &self.ctx.settings.verifier;
        let tracking = case
            .tracking()
            .map_err(|e| HandleError::Park(e.to_string()))?;
        // A case just received cannot have an officer's decision yet.
        let officer = if ev.event == "received" {
            None
        } else {
            officer_decision(tx, &case).await?
        };
        let classification = match &officer {
            Some(_) => None,
            None => Some(
                self.classifier.classify(
                    &case.body,
                    case.claimed_kind()
                        .map_err(|e| HandleError::Park(e.to_string()))?,
                ),
            ),
        };
        let earlier = if ev.event == "received" && officer.is_none() {
            earlier_cases(tx, &case, settings.duplicate_window_days).await?
        } else {
            Vec::new()
        };
        let duplicate_of = verify::find_duplicate(
            self.classifier.normaliser(),
            &case.body,
            &earlier,
            settings.duplicate_similarity,
        );
        let requirements = requirements(tx, &case).await?;
        let verdict = verify::decide(
            &Facts {
                classification: classification.as_ref(),
                officer: officer.as_ref(),
                duplicate_of,
                requirements,
            },
            &self.ctx.reference.routing,
        );
        if let Some(c) = &classification {
            record_decision(
                tx,
                &case,
                c,
                &format!("classifier:{}", self.classifier.version),
                now,
            )
            .await?;
        }
        apply(tx, &self.ctx, &case, &tracking.to_string(), &verdict, now)
            .await
            .map_err(HandleError::Retry)?;
        let outcome = match &verdict {
            Verdict::Duplicate { .. } => "duplicate",
            Verdict::Review { .. } => "in_review",
            Verdict::OutOfScope { .. } => "out_of_scope",
            Verdict::NeedsInfo { .. } => "needs_info",
            Verdict::Verified { .. } => "verified",
        };
        metrics::counter!("lapor_verifications_total", "outcome" => outcome).increment(1);
        tracing::info!(case_id = %case.id, outcome, "case verified");
        Ok(())
    }
}

/// Applies a verdict: one update of the case (decision, message, status), its timeline entry,
/// deadline and hand-off, all in the caller's transaction.
async fn apply(
    tx: &mut PgConnection,
    ctx: &Context,
    case: &CaseRow,
    tracking_id: &str,
    verdict: &Verdict,
    at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let answers = &ctx.reference.answers;
    let (event, status, decided, message, note, duplicate_of) = match verdict {
        Verdict::Duplicate { of, of_tracking_id } => {
            let m = answers.message("duplicate", &[("tracking_id", of_tracking_id)]);
            (
                "duplicate",
                CaseStatus::Duplicate,
                None,
                Some(m.clone()),
                m,
                Some(*of),
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
            )
        }
        Verdict::OutOfScope { decided, message } => (
            "out_of_scope",
            CaseStatus::OutOfScope,
            Some(decided),
            Some(message.clone()),
            message.clone(),
            None,
        ),
        Verdict::NeedsInfo { decided, missing } => {
            let m = verify::needs_info_message(answers, missing, tracking_id);
            (
                "needs_info",
                CaseStatus::NeedsInfo,
                Some(decided),
                Some(m.clone()),
                m,
                None,
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
                Some(decided),
                None,
                note,
                None,
            )
        }
    };
    sqlx::query(
        "UPDATE cases SET status = $2, updated_at = $3, reporter_message = $4, duplicate_of = COALESCE($5, duplicate_of),
                kind = COALESCE($6, kind), in_scope = COALESCE($7, in_scope),
                category = CASE WHEN $6::text IS NULL THEN category ELSE $8 END,
                needs_followup = COALESCE($9, needs_followup)
         WHERE id = $1",
    )
    .bind(case.id)
    .bind(status.as_str())
    .bind(at)
    .bind(&message)
    .bind(duplicate_of)
    .bind(decided.map(|d| d.kind.as_str()))
    .bind(decided.map(|d| d.in_scope))
    .bind(decided.and_then(|d| d.category.map(|c| c.as_str())))
    .bind(decided.map(|d| d.needs_followup))
    .execute(&mut *tx)
    .await?;
    ctx.log(
        tx,
        case.id,
        case.tracking()?,
        &Transition {
            event,
            status,
            unit: None,
            actor: ACTOR,
            note: Some(note),
            at,
        },
    )
    .await?;
    if let Some(of) = duplicate_of {
        // The earlier case's timeline shows that the reporter wrote again.
        sqlx::query(
            "INSERT INTO case_events (case_id, at, event, status, unit, actor, note)
             SELECT id, $2, 'duplicate_linked', status, NULL, $3, $4 FROM cases WHERE id = $1",
        )
        .bind(of)
        .bind(at)
        .bind(ACTOR)
        .bind(format!(
            "Laporan serupa dari pelapor yang sama diterima melalui kanal {} dan digabungkan.",
            case.channel
        ))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
