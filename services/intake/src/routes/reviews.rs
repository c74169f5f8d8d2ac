//! The officers' review queue: cases the verifier could not settle (or a unit returned) wait
//! here; an officer decides kind, scope, category and follow-up, and the case continues
//! through the verifier from there. Every decision is recorded with the officer's name.

use super::auth::{self, Unauthorised};
use super::complaints::{json_body, parse_tracking};
use crate::problem::{FieldError, Problem};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use lapor_shared::domain::{CaseStatus, Category, Kind};
use lapor_shared::service::Context;
use lapor_shared::store::{self, Transition};
use serde::{Deserialize, Serialize};

#[derive(Serialize, sqlx::FromRow)]
pub struct ReviewItem {
    pub tracking_id: String,
    pub received_at: DateTime<Utc>,
    pub channel: String,
    pub claimed_kind: Option<String>,
    pub title: Option<String>,
    pub text: String,
    pub province_code: String,
    pub regency_code: Option<String>,
    pub confidential: bool,
    /// What the classifier would have decided, and why it did not.
    pub suggestion: Option<serde_json::Value>,
    /// The latest timeline note (for a case a unit returned: its reason).
    pub last_note: Option<String>,
}

pub async fn list(State(ctx): State<Context>, headers: HeaderMap) -> Result<Response, Response> {
    auth::officer(&headers, &ctx.settings.review).map_err(Unauthorised::into_response)?;
    let items = sqlx::query_as::<_, ReviewItem>(
        "SELECT c.tracking_id, c.received_at, c.channel, c.claimed_kind, c.title, c.body AS text, c.province_code,
                c.regency_code, c.confidential,
                (SELECT jsonb_build_object('kind', d.kind, 'in_scope', d.in_scope, 'category', d.category,
                                           'confidence', d.confidence, 'reasons', d.note, 'evidence', d.evidence, 'by', d.actor)
                 FROM case_decisions d WHERE d.case_id = c.id ORDER BY d.id DESC LIMIT 1) AS suggestion,
                (SELECT e.note FROM case_events e WHERE e.case_id = c.id ORDER BY e.id DESC LIMIT 1) AS last_note
         FROM review_queue q JOIN cases c ON c.id = q.case_id
         WHERE c.status = 'in_review' ORDER BY q.received_at LIMIT 200",
    )
    .fetch_all(&ctx.pool)
    .await
    .map_err(|e| Problem::from(e).into_response())?;
    Ok(Json(serde_json::json!({ "reviews": items })).into_response())
}

#[derive(Deserialize)]
pub struct DecisionV1 {
    pub kind: Option<String>,
    pub in_scope: Option<bool>,
    pub category: Option<String>,
    pub needs_followup: Option<bool>,
    pub note: Option<String>,
}

struct Valid {
    kind: Kind,
    in_scope: bool,
    category: Option<Category>,
    needs_followup: bool,
    note: Option<String>,
}

fn validate(d: DecisionV1) -> Result<Valid, Vec<FieldError>> {
    let mut errors = Vec::new();
    let kind = match d.kind.as_deref().map(Kind::parse) {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            errors.push(FieldError::new("kind", e));
            None
        }
        None => {
            errors.push(FieldError::new("kind", "is required"));
            None
        }
    };
    let in_scope = d.in_scope;
    if in_scope.is_none() {
        errors.push(FieldError::new("in_scope", "is required"));
    }
    let category = match d.category.as_deref().map(Category::parse) {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            errors.push(FieldError::new("category", e));
            None
        }
        None => None,
    };
    match (in_scope, &category, d.category.is_some()) {
        (Some(true), None, false) => errors.push(FieldError::new(
            "category",
            "is required when the case is in scope",
        )),
        (Some(false), _, true) => errors.push(FieldError::new(
            "category",
            "must be absent when the case is out of scope",
        )),
        _ => {}
    }
    let needs_followup = d.needs_followup.unwrap_or(false);
    if needs_followup && in_scope == Some(false) {
        errors.push(FieldError::new(
            "needs_followup",
            "cannot be true for a case out of scope",
        ));
    }
    let note = d
        .note
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        errors.push(FieldError::new("note", "must be at most 1000 characters"));
    }
    match (kind, in_scope) {
        (Some(kind), Some(in_scope)) if errors.is_empty() => Ok(Valid {
            kind,
            in_scope,
            category,
            needs_followup,
            note,
        }),
        _ => Err(errors),
    }
}

pub async fn decide(
    State(ctx): State<Context>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let officer =
        auth::officer(&headers, &ctx.settings.review).map_err(Unauthorised::into_response)?;
    let tid = parse_tracking(&raw).map_err(IntoResponse::into_response)?;
    let (d, _): (DecisionV1, _) = json_body(&headers, body).map_err(IntoResponse::into_response)?;
    let v = validate(d).map_err(|e| Problem::invalid(e).into_response())?;
    let result = async {
        let mut tx = ctx.pool.begin().await?;
        let Some(found) = store::by_tracking_id(&mut tx, &tid).await? else { return Ok::<_, anyhow::Error>(Err(Problem::not_found("case in review"))) };
        let case = store::lock(&mut tx, found.id).await?.ok_or_else(|| anyhow::anyhow!("case vanished"))?;
        if case.status != CaseStatus::InReview.as_str() {
            return Ok(Err(Problem::new(StatusCode::CONFLICT, "not-in-review", "This case is not waiting for a review")
                .detail(format!("its status is {}", case.status))));
        }
        let now = ctx.clock.now();
        sqlx::query(
            "INSERT INTO case_decisions (case_id, at, actor, decision, kind, in_scope, category, needs_followup, confidence, evidence, note)
             VALUES ($1, $2, $3, 'officer', $4, $5, $6, $7, NULL, '[]', $8)",
        )
        .bind(case.id)
        .bind(now)
        .bind(format!("officer:{}", officer.0))
        .bind(v.kind.as_str())
        .bind(v.in_scope)
        .bind(v.category.map(|c| c.as_str()))
        .bind(v.needs_followup)
        .bind(&v.note)
        .execute(&mut *tx)
        .await?;
        ctx.record(
            &mut tx,
            &case,
            &Transition {
                event: "reviewed",
                status: CaseStatus::Received,
                unit: None,
                actor: &format!("officer:{}", officer.0),
                note: Some("Laporan telah ditelaah petugas pengelola pengaduan.".into()),
                at: now,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }
    .await;
    match result {
        Ok(Ok(())) => {
            tracing::info!(tracking_id = %tid, officer = %officer.0, "review decided");
            Ok((
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "tracking_id": tid.to_string(), "status": "received" })),
            )
                .into_response())
        }
        Ok(Err(p)) => Err(p.into_response()),
        Err(e) => Err(Problem::from(e).into_response()),
    }
}
