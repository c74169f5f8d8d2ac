//! The transactional outbox. A state change and the messages it causes are written in one
//! transaction; the relay ([`crate::amqp::relay`]) publishes them with publisher confirms and
//! deletes them once confirmed. A crash between confirm and delete republishes the same
//! message id, which consumers deduplicate.
//!
//! On the hot path (intake's submissions, the consumers' batches) the producer hands its rows
//! to its own relay right after its commit ([`Handoff`]), sparing the relay a notification, a
//! claim and a transaction per batch. Such rows are written with `publish_after` a little in
//! the future: until then claims leave them alone, and after it they are ordinary outbox rows,
//! so a producer that crashed after its commit, or a relay that could not publish, loses
//! nothing.

use crate::telemetry;
use serde::Serialize;
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

tokio::task_local! {
    static COLLECTING: std::cell::RefCell<Collected>;
}

struct Collected {
    grace_secs: f64,
    rows: Vec<OutboxRow>,
}

/// Rows handed from a producer, after its commit, to its service's relay.
pub struct HandedOff {
    pub at: std::time::Instant,
    pub rows: Vec<OutboxRow>,
}

/// The hand-off between a service's producers and its relay: a bounded channel. When it is
/// full, or the relay is away, rows wait for a claim after their `publish_after`.
#[derive(Clone)]
pub struct Handoff {
    grace: std::time::Duration,
    tx: tokio::sync::mpsc::Sender<HandedOff>,
    rx: std::sync::Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<HandedOff>>>,
}

impl Handoff {
    /// `grace`: how long the relay leaves handed-off rows to their producer.
    pub fn new(grace: std::time::Duration, capacity: usize) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        Self {
            grace,
            tx,
            rx: std::sync::Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }

    pub fn grace(&self) -> std::time::Duration {
        self.grace
    }

    /// Runs `f`, a transaction, collecting the rows it enqueues (written with
    /// `publish_after` = now + grace). Returns them with `f`'s output. Hand them over with
    /// [`Handoff::send`] only if `f` committed; otherwise drop them.
    pub async fn collecting<F: std::future::Future>(&self, f: F) -> (F::Output, Vec<OutboxRow>) {
        let cell = std::cell::RefCell::new(Collected {
            grace_secs: self.grace.as_secs_f64(),
            rows: Vec::new(),
        });
        COLLECTING
            .scope(cell, async {
                let out = f.await;
                let rows = COLLECTING.with(|c| std::mem::take(&mut c.borrow_mut().rows));
                (out, rows)
            })
            .await
    }

    /// Hands committed rows to the relay; if it cannot take them now, they wait for a claim.
    pub fn send(&self, rows: Vec<OutboxRow>) {
        if rows.is_empty() {
            return;
        }
        let handed = HandedOff {
            at: std::time::Instant::now(),
            rows,
        };
        if self.tx.try_send(handed).is_err() {
            metrics::counter!("lapor_outbox_handoff_skipped_total").increment(1);
        }
    }

    /// Rows already handed over, without waiting (for the relay).
    pub fn try_recv(&self) -> Option<HandedOff> {
        self.rx.try_lock().ok()?.try_recv().ok()
    }

    /// The next rows handed over (for the relay). Never completes once every sender is gone.
    pub async fn recv(&self) -> HandedOff {
        match self.rx.lock().await.recv().await {
            Some(h) => h,
            None => std::future::pending().await,
        }
    }
}

/// Runs `f`, a transaction that returns `Ok` only once it has committed, and hands the rows it
/// enqueued to the relay if it did (dropping them if it did not). Without a hand-off, just
/// runs it.
pub async fn handing_off<T, E>(
    handoff: Option<&Handoff>,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let Some(handoff) = handoff else {
        return f.await;
    };
    let (result, rows) = handoff.collecting(f).await;
    if result.is_ok() {
        handoff.send(rows);
    }
    result
}

/// How many rows the enclosing [`Handoff::collecting`] holds (0 outside one): a mark to roll
/// back to with [`forget_collected_after`].
pub fn collected() -> usize {
    COLLECTING.try_with(|c| c.borrow().rows.len()).unwrap_or(0)
}

/// Forgets the rows collected after `mark`: the savepoint that wrote them was rolled back.
pub fn forget_collected_after(mark: usize) {
    COLLECTING
        .try_with(|c| c.borrow_mut().rows.truncate(mark))
        .ok();
}

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

/// Messages to add to the outbox, as the parameters of [`outbox_insert!`](crate::outbox_insert),
/// bound first: `$1` message ids, `$2` exchanges, `$3` routing keys, `$4` headers (the trace
/// context each was built in), `$5` payloads, and `$6` how many seconds to leave them to the
/// producer ([`Handoff::collecting`]'s grace; 0 outside one: at once, with a notification).
/// A statement's own parameters start at `$7`.
pub struct Columns<'a> {
    ids: Vec<Uuid>,
    exchanges: Vec<&'a str>,
    keys: Vec<&'a str>,
    headers: Vec<serde_json::Value>,
    payloads: Vec<&'a [u8]>,
    grace_secs: f64,
    collecting: bool,
}

impl<'a> Columns<'a> {
    pub fn new(messages: &'a [Outgoing]) -> Self {
        let grace = COLLECTING.try_with(|c| c.borrow().grace_secs).ok();
        Self {
            ids: messages.iter().map(|m| m.message_id).collect(),
            exchanges: messages.iter().map(|m| m.exchange).collect(),
            keys: messages.iter().map(|m| m.routing_key.as_str()).collect(),
            headers: messages
                .iter()
                .map(|m| serde_json::to_value(&m.trace).unwrap_or_default())
                .collect(),
            payloads: messages.iter().map(|m| m.payload.as_slice()).collect(),
            grace_secs: grace.unwrap_or(0.0),
            collecting: grace.is_some(),
        }
    }

    /// Whether the rows written must come back (to be handed to the relay after the commit).
    pub fn collecting(&self) -> bool {
        self.collecting
    }

    /// Binds the six parameters, in the order the type's documentation gives.
    pub fn bind<'q, O>(
        &'q self,
        q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        q.bind(&self.ids)
            .bind(&self.exchanges)
            .bind(&self.keys)
            .bind(&self.headers)
            .bind(&self.payloads)
            .bind(self.grace_secs)
    }
}

/// The `INSERT` of [`Columns`] bound from `$1`, returning the rows written (hand them to
/// [`collect`]): a literal, so that a statement can put it after its own CTEs with `concat!`.
#[macro_export]
macro_rules! outbox_insert {
    () => {
        "INSERT INTO outbox (message_id, exchange, routing_key, headers, payload, publish_after)
         SELECT m, e, k, h, p, now() + make_interval(secs => $6)
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::bytea[])
              WITH ORDINALITY AS t(m, e, k, h, p, ord)
         ORDER BY ord
         RETURNING id, message_id, exchange, routing_key, headers, payload"
    };
}

/// Keeps rows just written for the relay, if a [`Handoff::collecting`] encloses the caller.
pub fn collect(rows: Vec<OutboxRow>) {
    if rows.is_empty() {
        return;
    }
    COLLECTING
        .try_with(|c| c.borrow_mut().rows.extend(rows))
        .ok();
}

/// Adds messages to the outbox inside the caller's transaction, in one statement; each keeps
/// the trace context it was built in. Inside [`Handoff::collecting`] the rows are written
/// with `publish_after` = now + grace and kept for the relay.
pub async fn enqueue(conn: &mut PgConnection, messages: &[Outgoing]) -> sqlx::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let columns = Columns::new(messages);
    // The rows come back only for a hand-off ($7).
    let rows: Vec<OutboxRow> = columns
        .bind(sqlx::query_as(concat!(
            "WITH ob AS (",
            crate::outbox_insert!(),
            ") SELECT id, message_id, exchange, routing_key, headers, payload FROM ob WHERE $7"
        )))
        .bind(columns.collecting())
        .fetch_all(conn)
        .await?;
    collect(rows);
    Ok(())
}

/// Which rows a relay claims. Rows handed off to a relay are left alone until their
/// `publish_after`, except by [`Claim::Flush`].
#[derive(Debug, Clone, Copy)]
pub enum Claim<'a> {
    /// Rows its own service wrote (after a notification).
    Own(&'a str),
    /// Its own rows, and anyone's older than a few seconds (the periodic poll): a producer
    /// that is down does not hold its messages back.
    OwnAndStale(&'a str),
    /// Every row its own service wrote, hand-offs included: at shutdown, once this process's
    /// producers have stopped.
    Flush(&'a str),
}

/// Claims up to `limit` rows for publishing. The rows stay locked (and invisible to other
/// relays, which skip them) until the caller's transaction ends.
pub async fn claim(
    conn: &mut PgConnection,
    which: Claim<'_>,
    limit: i64,
) -> sqlx::Result<Vec<OutboxRow>> {
    let (producer, stale, all) = match which {
        Claim::Own(p) => (p, false, false),
        Claim::OwnAndStale(p) => (p, true, false),
        Claim::Flush(p) => (p, false, true),
    };
    sqlx::query_as::<_, OutboxRow>(
        "SELECT id, message_id, exchange, routing_key, headers, payload FROM outbox
         WHERE (producer = $1 OR ($2 AND created_at < now() - interval '2 seconds'))
           AND (publish_after <= now() OR $4)
         ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
    )
    .bind(producer)
    .bind(stale)
    .bind(limit)
    .bind(all)
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
