//! The transactional outbox. A state change and the messages it causes are written in one
//! transaction; the relay ([`crate::amqp::relay`]) publishes them with publisher confirms and
//! deletes them once confirmed. A crash between confirm and delete republishes the same
//! message id, which consumers deduplicate.

use crate::telemetry;
use serde::Serialize;
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

/// A message waiting to be published.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub message_id: Uuid,
    pub exchange: &'static str,
    pub routing_key: String,
    pub payload: Vec<u8>,
    /// The trace context the publish continues: the span current when the message was built.
    /// In a batch, that is the span of the delivery that caused it, so each complaint keeps
    /// one trace however its messages were grouped.
    pub trace: HashMap<String, String>,
}

impl Outgoing {
    pub fn json<T: Serialize>(
        exchange: &'static str,
        routing_key: String,
        message_id: Uuid,
        body: &T,
    ) -> Self {
        Self {
            message_id,
            exchange,
            routing_key,
            // Serialising our own message types cannot fail (no maps with non-string keys).
            payload: serde_json::to_vec(body).unwrap_or_default(),
            trace: telemetry::inject_current(),
        }
    }
}

/// A row claimed by the relay.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub message_id: Uuid,
    pub exchange: String,
    pub routing_key: String,
    pub headers: sqlx::types::Json<std::collections::HashMap<String, String>>,
    pub payload: Vec<u8>,
}

/// Adds messages to the outbox inside the caller's transaction, in one statement; each keeps
/// the trace context it was built in.
pub async fn enqueue(conn: &mut PgConnection, messages: &[Outgoing]) -> sqlx::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
    let exchanges: Vec<&str> = messages.iter().map(|m| m.exchange).collect();
    let keys: Vec<&str> = messages.iter().map(|m| m.routing_key.as_str()).collect();
    let headers: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| serde_json::to_value(&m.trace).unwrap_or_default())
        .collect();
    let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_slice()).collect();
    sqlx::query(
        "INSERT INTO outbox (message_id, exchange, routing_key, headers, payload)
         SELECT m, e, k, h, p
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::bytea[])
              WITH ORDINALITY AS t(m, e, k, h, p, ord)
         ORDER BY ord",
    )
    .bind(&ids)
    .bind(&exchanges)
    .bind(&keys)
    .bind(&headers)
    .bind(&payloads)
    .execute(conn)
    .await?;
    Ok(())
}

/// Which rows a relay claims.
#[derive(Debug, Clone, Copy)]
pub enum Claim<'a> {
    /// Rows its own service wrote (after a notification).
    Own(&'a str),
    /// Its own rows, and anyone's older than a few seconds (the periodic poll): a producer
    /// that is down does not hold its messages back.
    OwnAndStale(&'a str),
}

/// Claims up to `limit` rows for publishing. The rows stay locked (and invisible to other
/// relays, which skip them) until the caller's transaction ends.
pub async fn claim(
    conn: &mut PgConnection,
    which: Claim<'_>,
    limit: i64,
) -> sqlx::Result<Vec<OutboxRow>> {
    let (producer, stale) = match which {
        Claim::Own(p) => (p, false),
        Claim::OwnAndStale(p) => (p, true),
    };
    sqlx::query_as::<_, OutboxRow>(
        "SELECT id, message_id, exchange, routing_key, headers, payload FROM outbox
         WHERE producer = $1 OR ($2 AND created_at < now() - interval '2 seconds')
         ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
    )
    .bind(producer)
    .bind(stale)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn delete(conn: &mut PgConnection, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// How many messages wait to be published (for readiness and metrics).
pub async fn backlog(pool: &sqlx::PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
}
