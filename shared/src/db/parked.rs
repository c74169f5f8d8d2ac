//! The parking lot: messages that can never be processed, kept with the reason so an operator
//! can read them and re-drive them once the cause is fixed. Reasons are written by our code
//! and scrubbed; they never carry personal data.

use crate::db::outbox::{self, Outgoing};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Parked {
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub reason: String,
    pub headers: HashMap<String, String>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ParkedRow {
    pub id: i64,
    pub parked_at: chrono::DateTime<chrono::Utc>,
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub reason: String,
    pub redriven_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn park(conn: &mut PgConnection, p: &Parked) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO parked_messages (queue, exchange, routing_key, message_id, reason, headers, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(&p.queue)
    .bind(&p.exchange)
    .bind(&p.routing_key)
    .bind(&p.message_id)
    .bind(&p.reason)
    .bind(serde_json::to_value(&p.headers).unwrap_or_default())
    .bind(&p.payload)
    .fetch_one(conn)
    .await
}

pub async fn list(
    pool: &PgPool,
    include_redriven: bool,
    limit: i64,
) -> sqlx::Result<Vec<ParkedRow>> {
    sqlx::query_as::<_, ParkedRow>(
        "SELECT id, parked_at, queue, exchange, routing_key, message_id, reason, redriven_at
         FROM parked_messages WHERE ($1 OR redriven_at IS NULL) ORDER BY id LIMIT $2",
    )
    .bind(include_redriven)
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("no parked message with id {0}")]
    NotFound(i64),
    #[error("parked message {0} was already re-driven")]
    AlreadyRedriven(i64),
    #[error("parked message came from exchange {0:?}, which this pipeline does not publish to")]
    UnknownExchange(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Puts a parked message back on its original exchange and routing key, through the outbox so
/// that the hand-over is as safe as any other publish. It keeps its message id: a consumer
/// that already handled it will recognise it.
pub async fn redrive(pool: &PgPool, id: i64) -> Result<Uuid, RedriveError> {
    let mut tx = pool.begin().await?;
    type Row = (
        String,
        String,
        Option<String>,
        Vec<u8>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT exchange, routing_key, message_id, payload, redriven_at FROM parked_messages WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (exchange, routing_key, message_id, payload, redriven_at) =
        row.ok_or(RedriveError::NotFound(id))?;
    if redriven_at.is_some() {
        return Err(RedriveError::AlreadyRedriven(id));
    }
    let message_id = message_id
        .and_then(|m| Uuid::parse_str(&m).ok())
        .unwrap_or_else(Uuid::new_v4);
    let exchange = crate::messages::exchange::by_name(&exchange)
        .ok_or(RedriveError::UnknownExchange(exchange))?;
    outbox::enqueue(
        &mut tx,
        &[Outgoing {
            message_id,
            exchange,
            routing_key,
            payload,
            trace: crate::telemetry::inject_current(),
        }],
    )
    .await?;
    sqlx::query("UPDATE parked_messages SET redriven_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(message_id)
}
