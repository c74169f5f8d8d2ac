//! `POST /v1/complaints` and `GET /v1/complaints/{tracking_id}`.

use crate::problem::{FieldError, Problem};
use crate::submission::{NewComplaint, SubmissionV1};
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
use lapor_shared::store::{self, TimelineEntry, Transition};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

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
    State(ctx): State<Context>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let (submission, value): (SubmissionV1, _) = json_body(&headers, body)?;
    let complaint = submission.validate().map_err(Problem::invalid)?;
    // serde_json's maps are ordered by key, so equal documents hash equally however they were
    // formatted.
    let request_hash = Sha256::digest(serde_json::to_vec(&value).unwrap_or_default()).to_vec();

    // A retried request is recognised by its key when the insert below meets the earlier one
    // (no lookup first: retries are rare, first attempts are not).
    for _ in 0..3 {
        match create_and_hand_off(&ctx, &complaint, key.as_deref(), &request_hash).await {
            Ok(Created::New(tid)) => {
                tracing::info!(tracking_id = %tid, channel = %complaint.channel, "complaint accepted");
                metrics::counter!("lapor_complaints_accepted_total", "channel" => complaint.channel.as_str()).increment(1);
                return Ok(accepted(tid, false));
            }
            Ok(Created::KeyTaken) => {
                if let Some(key) = &key
                    && let Some(tid) = replay(&ctx, key, &request_hash).await?
                {
                    return Ok(accepted(tid, true));
                }
            }
            Err(e) if is_tracking_collision(&e) => continue,
            Err(e) => return Err(e.into()),
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

enum Created {
    New(TrackingId),
    /// A concurrent request with the same key committed first.
    KeyTaken,
}

fn is_tracking_collision(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .is_some_and(|d| d.constraint() == Some("cases_tracking_id_key"))
}

/// [`create`], then hands its `case.received` to the relay once it has committed, so that it is
/// published without waiting for a claim.
async fn create_and_hand_off(
    ctx: &Context,
    c: &NewComplaint,
    key: Option<&str>,
    request_hash: &[u8],
) -> anyhow::Result<Created> {
    let Some(handoff) = &ctx.handoff else {
        return create(ctx, c, key, request_hash).await;
    };
    let (created, rows) = handoff.collecting(create(ctx, c, key, request_hash)).await;
    if matches!(created, Ok(Created::New(_))) {
        handoff.send(rows);
    }
    created
}

/// Stores the case, the reporter's identity, the attachments, the first timeline entry and the
/// `case.received` event in one transaction.
async fn create(
    ctx: &Context,
    c: &NewComplaint,
    key: Option<&str>,
    request_hash: &[u8],
) -> anyhow::Result<Created> {
    let id = Uuid::now_v7();
    let tid = TrackingId::generate();
    let now: DateTime<Utc> = ctx.clock.now();
    let reporter_ref = privacy::pseudonym(
        ctx.settings.privacy.pseudonym_key.expose(),
        c.reporter.nik.expose(),
    );
    let mut tx = ctx.pool.begin().await?;
    sqlx::query(
        "INSERT INTO cases (id, tracking_id, status, channel, claimed_kind, title, body, province_code, regency_code,
                            anonymous, confidential, lapor_tracking_id, reporter_ref, received_at, updated_at)
         VALUES ($1, $2, 'received', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
    )
    .bind(id)
    .bind(tid.to_string())
    .bind(c.channel.as_str())
    .bind(c.kind.map(|k| k.as_str()))
    .bind(&c.title)
    .bind(&c.text)
    .bind(c.location.province_code.as_str())
    .bind(c.location.regency_code.map(|r| r.to_string()))
    .bind(c.anonymous)
    .bind(c.confidential)
    .bind(&c.lapor_tracking_id)
    .bind(&reporter_ref)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO case_identity (case_id, name, nik, phone, email, address, kk_number, location_address)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(&c.reporter.name)
    .bind(c.reporter.nik.expose())
    .bind(c.reporter.phone.expose())
    .bind(&c.reporter.email)
    .bind(&c.reporter.address)
    .bind(c.kk_number.as_ref().map(|k| k.expose()))
    .bind(&c.location.address)
    .execute(&mut *tx)
    .await?;
    insert_attachments(&mut tx, id, 0, &c.attachments, now).await?;
    if let Some(key) = key {
        let r = sqlx::query(
            "INSERT INTO idempotency_keys (key, request_sha256, case_id, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(request_hash)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Created::KeyTaken);
        }
    }
    ctx.log(
        &mut tx,
        id,
        tid,
        &Transition {
            event: "received",
            status: CaseStatus::Received,
            unit: None,
            actor: "intake",
            note: Some(format!("Laporan diterima melalui kanal {}.", c.channel)),
            at: now,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Created::New(tid))
}

pub async fn insert_attachments(
    conn: &mut sqlx::PgConnection,
    case_id: Uuid,
    first_position: i32,
    attachments: &[lapor_shared::messages::Attachment],
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    if attachments.is_empty() {
        return Ok(());
    }
    let kinds: Vec<String> = attachments
        .iter()
        .map(|a| {
            serde_json::to_value(a.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    let urls: Vec<&str> = attachments.iter().map(|a| a.url.as_str()).collect();
    let hashes: Vec<&str> = attachments.iter().map(|a| a.sha256.as_str()).collect();
    sqlx::query(
        "INSERT INTO case_attachments (case_id, position, kind, url, sha256, added_at)
         SELECT $1, $2 + ord - 1, k, u, h, $6 FROM UNNEST($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS t(k, u, h, ord)",
    )
    .bind(case_id)
    .bind(first_position)
    .bind(&kinds)
    .bind(&urls)
    .bind(&hashes)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
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
