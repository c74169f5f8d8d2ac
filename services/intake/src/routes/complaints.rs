//! `POST /v1/complaints` and `GET /v1/complaints/{tracking_id}`.

use crate::problem::{FieldError, Problem};
use crate::submission::SubmissionV1;
use crate::submissions::{Created, Submission, Writer};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use lapor_shared::domain::{CaseStatus, TrackingId};
use lapor_shared::privacy;
use lapor_shared::service::Context;
use lapor_shared::store::{self, TimelineEntry};
use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Serialize)]
pub struct Accepted {
    pub tracking_id: String,
    pub status: &'static str,
}

fn accepted(tracking_id: TrackingId, replayed: bool) -> Response {
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(Accepted {
            tracking_id: tracking_id.to_string(),
            status: CaseStatus::Received.as_str(),
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/complaints/{tracking_id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

/// Reads a JSON body: 415 without a JSON content type, 413 over the size limit, 400 when it
/// is not JSON or a field has the wrong type (naming the field).
pub fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(T, serde_json::Value), Problem> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json_type {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Send the body as application/json",
        ));
    }
    let bytes = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "The body is too large",
            )
            .detail("complaints are limited in size; send attachments as links")
        }
        other => Problem::malformed(privacy::scrub(&other.body_text())),
    })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Problem::malformed(privacy::scrub(&e.to_string())))?;
    if !value.is_object() {
        return Err(Problem::malformed("the body must be a JSON object"));
    }
    let parsed = serde_path_to_error::deserialize(&value).map_err(|e| {
        Problem::invalid(vec![FieldError::new(
            e.path().to_string(),
            privacy::scrub(&e.inner().to_string()),
        )])
    })?;
    Ok((parsed, value))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let ok = v
        .to_str()
        .ok()
        .filter(|s| (1..=255).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()));
    match ok {
        Some(s) => Ok(Some(s.to_owned())),
        None => Err(Problem::invalid(vec![FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )])),
    }
}

pub async fn submit(
    State(writer): State<Writer>,
    State(ctx): State<Context>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let (submission, value): (SubmissionV1, _) = json_body(&headers, body)?;
    let complaint = submission.validate().map_err(Problem::invalid)?;
    let channel = complaint.channel;
    // serde_json's maps are ordered by key, so equal documents hash equally however they were
    // formatted.
    let request_hash = Sha256::digest(serde_json::to_vec(&value).unwrap_or_default()).to_vec();
    let submission = std::sync::Arc::new(Submission {
        complaint,
        key,
        request_hash,
        trace: lapor_shared::telemetry::inject_current(),
    });

    // A retried request is recognised by its key when the insert meets the earlier one (no
    // lookup first: retries are rare, first attempts are not). A key met but no longer there
    // (its transaction rolled back after all) is tried again.
    for _ in 0..3 {
        match writer.store(submission.clone()).await? {
            Created::New(tid) => {
                tracing::info!(tracking_id = %tid, channel = %channel, "complaint accepted");
                metrics::counter!("lapor_complaints_accepted_total", "channel" => channel.as_str())
                    .increment(1);
                return Ok(accepted(tid, false));
            }
            Created::KeyTaken => {
                if let Some(key) = &submission.key
                    && let Some(tid) = replay(&ctx, key, &submission.request_hash).await?
                {
                    return Ok(accepted(tid, true));
                }
            }
        }
    }
    Err(Problem::internal())
}

/// The earlier answer for this key, or a 422 if the key came with a different body.
async fn replay(
    ctx: &Context,
    key: &str,
    request_hash: &[u8],
) -> Result<Option<TrackingId>, Problem> {
    let row: Option<(Vec<u8>, String)> = sqlx::query_as(
        "SELECT k.request_sha256, c.tracking_id FROM idempotency_keys k JOIN cases c ON c.id = k.case_id WHERE k.key = $1",
    )
    .bind(key)
    .fetch_optional(&ctx.pool)
    .await?;
    match row {
        None => Ok(None),
        Some((hash, _)) if hash != request_hash => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "This Idempotency-Key was already used for a different complaint",
        )
        .detail("use a new key for a new complaint; resend the identical body to get the earlier answer")),
        Some((_, tid)) => Ok(TrackingId::parse(&tid).ok()),
    }
}

#[derive(Serialize)]
pub struct UnitRef {
    pub code: String,
    pub name: String,
}

/// The reporter's view of a case: where it is and what happened, never who sent it.
#[derive(Serialize)]
pub struct StatusV1 {
    pub tracking_id: String,
    pub status: String,
    pub received_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_scope: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    pub timeline: Vec<TimelineEntry>,
}

pub fn parse_tracking(raw: &str) -> Result<TrackingId, Problem> {
    TrackingId::parse(raw).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-tracking-id",
            "This is not a valid tracking id",
        )
        .detail(e.to_string())
    })
}

pub async fn status(
    State(ctx): State<Context>,
    Path(raw): Path<String>,
) -> Result<Json<StatusV1>, Problem> {
    let tid = parse_tracking(&raw)?;
    let mut conn = ctx.pool.acquire().await?;
    let case = store::by_tracking_id(&mut conn, &tid)
        .await?
        .ok_or_else(|| Problem::not_found("complaint"))?;
    let timeline = store::timeline(&mut conn, case.id).await?;
    let duplicate_of = match case.duplicate_of {
        Some(d) => {
            sqlx::query_scalar::<_, String>("SELECT tracking_id FROM cases WHERE id = $1")
                .bind(d)
                .fetch_optional(&mut *conn)
                .await?
        }
        None => None,
    };
    let due_at: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT due_at FROM case_deadlines WHERE case_id = $1 AND running")
            .bind(case.id)
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
    let unit = case.holder().ok().flatten().map(|code| UnitRef {
        name: ctx
            .reference
            .units
            .get(&code)
            .map(|u| u.name.clone())
            .unwrap_or_default(),
        code: code.to_string(),
    });
    Ok(Json(StatusV1 {
        tracking_id: tid.to_string(),
        status: case.status.clone(),
        received_at: case.received_at,
        kind: case.kind.clone(),
        category: case.category.clone(),
        in_scope: case.in_scope,
        unit,
        message: case.reporter_message.clone(),
        duplicate_of,
        due_at,
        timeline,
    }))
}
