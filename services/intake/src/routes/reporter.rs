//! What a reporter can do after submitting: complete a case waiting for documents
//! (`supplement`), and reply to a unit's answer (`replies`), which reopens the case. Both need
//! the reporter's NIK besides the tracking id, so that knowing a tracking id is not enough to
//! change someone's case.

use super::complaints::{json_body, parse_tracking};
use crate::problem::{FieldError, Problem};
use crate::submission::{AttachmentV1, validate_attachments};
use crate::submissions::insert_attachments;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lapor_shared::db::outbox::{self, Outgoing};
use lapor_shared::domain::{CaseStatus, KkNumber, Nik, TrackingId};
use lapor_shared::messages::{UnitReplyV1, derived_id, exchange, schema};
use lapor_shared::privacy;
use lapor_shared::service::Context;
use lapor_shared::store::{self, CaseRow, Transition};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct SupplementV1 {
    pub nik: Option<String>,
    pub kk_number: Option<String>,
    pub attachments: Option<Vec<AttachmentV1>>,
}

#[derive(Deserialize)]
pub struct ReplyV1 {
    pub nik: Option<String>,
    pub text: Option<String>,
}

fn conflict(status: &str, what: &str) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "wrong-status",
        "The case is not in a state that accepts this",
    )
    .detail(format!("its status is {status}; {what}"))
}

fn check_nik(raw: Option<String>, errors: &mut Vec<FieldError>) -> Option<Nik> {
    match raw.as_deref().map(Nik::parse) {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            errors.push(FieldError::new("nik", e));
            None
        }
        None => {
            errors.push(FieldError::new("nik", "is required (the reporter's NIK)"));
            None
        }
    }
}

/// Locks the case and checks that `nik` is its reporter's. A mismatch answers 404, like an
/// unknown tracking id, so the endpoint cannot be used to test NIKs against tracking ids.
async fn reporters_case(
    ctx: &Context,
    tx: &mut sqlx::PgConnection,
    tid: &TrackingId,
    nik: &Nik,
) -> Result<CaseRow, Problem> {
    let found = store::by_tracking_id(tx, tid)
        .await?
        .ok_or_else(|| Problem::not_found("complaint"))?;
    let case = store::lock(tx, found.id)
        .await?
        .ok_or_else(|| Problem::not_found("complaint"))?;
    if privacy::pseudonym(ctx.settings.privacy.pseudonym_key.expose(), nik.expose())
        != case.reporter_ref
    {
        return Err(Problem::not_found("complaint"));
    }
    Ok(case)
}

fn accepted(tid: &TrackingId, status: CaseStatus) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "tracking_id": tid.to_string(), "status": status.as_str() })),
    )
        .into_response()
}

pub async fn supplement(
    State(ctx): State<Context>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let tid = parse_tracking(&raw)?;
    let (s, _): (SupplementV1, _) = json_body(&headers, body)?;
    let mut errors = Vec::new();
    let nik = check_nik(s.nik, &mut errors);
    let kk = match s.kk_number.as_deref().map(KkNumber::parse) {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            errors.push(FieldError::new("kk_number", e));
            None
        }
        None => None,
    };
    let attachments = validate_attachments(s.attachments).unwrap_or_else(|e| {
        errors.extend(e);
        Vec::new()
    });
    if errors.is_empty() && kk.is_none() && attachments.is_empty() {
        errors.push(FieldError::new(
            "body",
            "send a kk_number, attachments, or both",
        ));
    }
    let Some(nik) = nik.filter(|_| errors.is_empty()) else {
        return Err(Problem::invalid(errors));
    };

    let mut tx = ctx.pool.begin().await?;
    let case = reporters_case(&ctx, &mut tx, &tid, &nik).await?;
    if case.status != CaseStatus::NeedsInfo.as_str() {
        return Err(conflict(
            &case.status,
            "documents are accepted while the case is needs_info",
        ));
    }
    let now = ctx.clock.now();
    if let Some(kk) = &kk {
        sqlx::query("UPDATE case_identity SET kk_number = $2 WHERE case_id = $1")
            .bind(case.id)
            .bind(kk.expose())
            .execute(&mut *tx)
            .await?;
    }
    let next: i32 = sqlx::query_scalar(
        "SELECT COALESCE(max(position) + 1, 0) FROM case_attachments WHERE case_id = $1",
    )
    .bind(case.id)
    .fetch_one(&mut *tx)
    .await?;
    insert_attachments(&mut tx, &[(case.id, next, &attachments)], now).await?;
    sqlx::query("UPDATE cases SET reporter_message = NULL WHERE id = $1")
        .bind(case.id)
        .execute(&mut *tx)
        .await?;
    ctx.record(
        &mut tx,
        &case,
        &Transition {
            event: "supplemented",
            status: CaseStatus::Received,
            unit: None,
            actor: "reporter",
            note: Some("Pelapor melengkapi persyaratan; laporan diverifikasi kembali.".into()),
            at: now,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(accepted(&tid, CaseStatus::Received))
}

pub async fn reply(
    State(ctx): State<Context>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let tid = parse_tracking(&raw)?;
    let (r, _): (ReplyV1, _) = json_body(&headers, body)?;
    let mut errors = Vec::new();
    let nik = check_nik(r.nik, &mut errors);
    let text = r.text.map(|t| t.trim().to_owned()).unwrap_or_default();
    let n = text.chars().count();
    if !(1..=crate::submission::MAX_TEXT).contains(&n) {
        errors.push(FieldError::new(
            "text",
            format!(
                "must be 1 to {} characters long (is {n})",
                crate::submission::MAX_TEXT
            ),
        ));
    }
    let Some(nik) = nik.filter(|_| errors.is_empty()) else {
        return Err(Problem::invalid(errors));
    };

    let mut tx = ctx.pool.begin().await?;
    let case = reporters_case(&ctx, &mut tx, &tid, &nik).await?;
    if case.status != CaseStatus::Resolved.as_str() {
        return Err(conflict(
            &case.status,
            "replies reopen a resolved case; for a new problem, submit a new complaint",
        ));
    }
    let holder = case
        .holder()
        .map_err(|e| anyhow::anyhow!(e))?
        .ok_or_else(|| anyhow::anyhow!("resolved case without holder"))?;
    let now = ctx.clock.now();
    let clock = ctx
        .record(
            &mut tx,
            &case,
            &Transition {
                event: "reopened",
                status: CaseStatus::Routed,
                unit: Some(&holder),
                actor: "reporter",
                note: Some(
                    "Pelapor menanggapi jawaban; laporan dibuka kembali untuk ditindaklanjuti."
                        .into(),
                ),
                at: now,
            },
        )
        .await?;
    let due_at = clock
        .and_then(|c| c.due_at(&ctx.reference.calendar))
        .unwrap_or(now);
    let replies: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM case_events WHERE case_id = $1 AND event = 'reopened'",
    )
    .bind(case.id)
    .fetch_one(&mut *tx)
    .await?;
    let msg = UnitReplyV1 {
        schema: schema::UNIT_REPLY_V1.to_owned(),
        message_id: derived_id(case.id, &["reply", &replies.to_string()]),
        case_id: case.id,
        tracking_id: tid,
        occurred_at: now,
        unit: holder.clone(),
        // The unit sees the reply as it would the complaint: masked when anonymous.
        text: if case.anonymous {
            privacy::mask_identifiers(&text)
        } else {
            text
        },
        due_at,
    };
    outbox::enqueue(
        &mut tx,
        &[Outgoing::json(
            exchange::UNITS,
            holder.key("reply"),
            msg.message_id,
            &msg,
        )],
    )
    .await?;
    tx.commit().await?;
    Ok(accepted(&tid, CaseStatus::Routed))
}
