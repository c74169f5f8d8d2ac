//! The consumer loop every service uses. For each delivery:
//!
//! 1. read the `message_id` (a message without one is parked);
//! 2. in one transaction: record the id in the inbox (already there → a redelivery: nothing to
//!    do) and apply the handler's effect, including any outbox messages;
//! 3. commit, then acknowledge. A crash between commit and ack redelivers the message, and the
//!    inbox turns it into a no-op.
//!
//! A handler says what a failure means. [`HandleError::Park`]: the message can never succeed
//! (bad content, an impossible state); it is recorded with its reason in the parking lot and
//! acknowledged, and the flow around it continues. [`HandleError::Retry`]: something transient
//! (the database is down); the message is held and retried with backoff, never requeued in a
//! tight loop. A retryable error that keeps coming back for the same message is parked after
//! `MAX_ATTEMPTS`, unless it is a connectivity problem, which is retried for as long as it
//! lasts. Deliveries that crash the process every time reach the queue's delivery limit and
//! are dead-lettered by the broker instead.

use super::headers;
use crate::config::Settings;
use crate::db::{self, inbox, parked};
use crate::ops::Readiness;
use crate::privacy;
use crate::telemetry;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

const MAX_ATTEMPTS: u32 = 8;

/// A delivery, decoded just enough to deduplicate and trace it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub message_id: Uuid,
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Can never succeed; park with this reason (written by us, no personal data).
    #[error("{0}")]
    Park(String),
    /// May succeed later.
    #[error(transparent)]
    Retry(anyhow::Error),
}

impl From<sqlx::Error> for HandleError {
    fn from(e: sqlx::Error) -> Self {
        HandleError::Retry(e.into())
    }
}

impl From<crate::messages::DecodeError> for HandleError {
    fn from(e: crate::messages::DecodeError) -> Self {
        HandleError::Park(e.to_string())
    }
}

/// What a consumer does with one message, inside the transaction that records it.
pub trait Handler: Send + Sync + 'static {
    /// The inbox key: one per logical consumer, shared by its replicas.
    fn name(&self) -> &'static str;

    fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &Incoming,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;
}

/// What happened to a delivery; returned so tests can drive the loop one message at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    Parked(String),
    /// Shutdown came while a transient error was being retried; the message was not
    /// acknowledged and will be delivered again.
    Abandoned,
}

fn incoming(d: &Delivery, queue: &str) -> Result<Incoming, String> {
    #[derive(serde::Deserialize)]
    struct Id {
        message_id: Option<Uuid>,
    }
    let headers = headers::from_table(d.properties.headers().as_ref());
    let from_body = serde_json::from_slice::<Id>(&d.data)
        .ok()
        .and_then(|i| i.message_id);
    let from_props = d
        .properties
        .message_id()
        .as_ref()
        .and_then(|m| Uuid::parse_str(m.as_str()).ok());
    let message_id = from_body.or(from_props).ok_or_else(|| {
        if serde_json::from_slice::<serde_json::Value>(&d.data).is_err() {
            "body is not JSON".to_owned()
        } else {
            "message has no valid message_id (a UUID) in its body".to_owned()
        }
    })?;
    Ok(Incoming {
        message_id,
        queue: queue.to_owned(),
        exchange: d.exchange.as_str().to_owned(),
        routing_key: d.routing_key.as_str().to_owned(),
        redelivered: d.redelivered,
        headers,
        body: d.data.clone(),
    })
}

async fn attempt<H: Handler>(
    handler: &H,
    pool: &PgPool,
    msg: &Incoming,
) -> Result<Outcome, HandleError> {
    let mut tx = pool.begin().await?;
    if !inbox::claim(&mut tx, handler.name(), msg.message_id).await? {
        tx.commit().await?;
        return Ok(Outcome::Duplicate);
    }
    handler.handle(&mut tx, msg).await?;
    tx.commit().await?;
    crate::fault::point("after_commit");
    Ok(Outcome::Applied)
}

fn retry_backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Records a message in the parking lot, retrying while the database is unreachable.
async fn park_retrying(pool: &PgPool, p: &parked::Parked, shutdown: &CancellationToken) -> bool {
    let mut backoff = retry_backoff();
    loop {
        let result = async {
            let mut conn = pool.acquire().await?;
            parked::park(&mut conn, p).await
        }
        .await;
        match result {
            Ok(id) => {
                tracing::warn!(parked_id = id, queue = %p.queue, reason = %p.reason, "message parked");
                metrics::counter!("lapor_messages_parked_total", "queue" => p.queue.clone())
                    .increment(1);
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %privacy::scrub(&e.to_string()), "could not park message; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))) => {}
                    _ = shutdown.cancelled() => return false,
                }
            }
        }
    }
}

/// Processes one delivery to its end (applied, duplicate, parked) unless shutdown interrupts a
/// retry. Acknowledges in every case but the last.
pub async fn process<H: Handler>(
    handler: &H,
    pool: &PgPool,
    queue: &str,
    delivery: Delivery,
    shutdown: &CancellationToken,
) -> Outcome {
    let outcome = match incoming(&delivery, queue) {
        Err(reason) => {
            let p = parked::Parked {
                queue: queue.to_owned(),
                exchange: delivery.exchange.as_str().to_owned(),
                routing_key: delivery.routing_key.as_str().to_owned(),
                message_id: delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|m| m.as_str().to_owned()),
                reason,
                headers: headers::from_table(delivery.properties.headers().as_ref()),
                payload: delivery.data.clone(),
            };
            if park_retrying(pool, &p, shutdown).await {
                Outcome::Parked(p.reason)
            } else {
                Outcome::Abandoned
            }
        }
        Ok(msg) => {
            let span = tracing::info_span!(
                "process",
                otel.name = format!("process {queue}"),
                otel.kind = "consumer",
                messaging.system = "rabbitmq",
                messaging.operation.type = "process",
                messaging.destination.name = %msg.exchange,
                messaging.rabbitmq.destination.routing_key = %msg.routing_key,
                messaging.consumer.group.name = handler.name(),
                messaging.message.id = %msg.message_id,
                outcome = tracing::field::Empty,
            );
            telemetry::extract_into(&span, &msg.headers);
            let outcome = process_decoded(handler, pool, &msg, shutdown)
                .instrument(span.clone())
                .await;
            span.record("outcome", format!("{outcome:?}").as_str());
            outcome
        }
    };
    if outcome != Outcome::Abandoned {
        match delivery.acker.ack(BasicAckOptions::default()).await {
            Ok(true) => {}
            // A stale acker (the channel was lost after the commit): the broker will deliver the
            // message again and the inbox will recognise it.
            Ok(false) => {
                tracing::debug!("ack skipped: channel was closed; the message will be redelivered")
            }
            Err(e) => tracing::warn!(error = %e, "ack failed; the message will be redelivered"),
        }
    }
    let label = match &outcome {
        Outcome::Applied => "applied",
        Outcome::Duplicate => "duplicate",
        Outcome::Parked(_) => "parked",
        Outcome::Abandoned => "abandoned",
    };
    metrics::counter!("lapor_messages_total", "consumer" => handler.name(), "outcome" => label)
        .increment(1);
    outcome
}

async fn process_decoded<H: Handler>(
    handler: &H,
    pool: &PgPool,
    msg: &Incoming,
    shutdown: &CancellationToken,
) -> Outcome {
    let mut backoff = retry_backoff();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let reason = match attempt(handler, pool, msg).await {
            Ok(outcome) => return outcome,
            Err(HandleError::Park(reason)) => reason,
            Err(HandleError::Retry(e)) => {
                let transient = e.downcast_ref::<sqlx::Error>().is_none_or(db::is_transient);
                let why = privacy::scrub(&format!("{e:#}"));
                if !transient && attempts >= MAX_ATTEMPTS {
                    format!("failed {attempts} times: {why}")
                } else {
                    tracing::warn!(attempt = attempts, error = %why, "handling failed; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(10))) => continue,
                        _ = shutdown.cancelled() => return Outcome::Abandoned,
                    }
                }
            }
        };
        let p = parked::Parked {
            queue: msg.queue.clone(),
            exchange: msg.exchange.clone(),
            routing_key: msg.routing_key.clone(),
            message_id: Some(msg.message_id.to_string()),
            reason: reason.clone(),
            headers: msg.headers.clone(),
            payload: msg.body.clone(),
        };
        return if park_retrying(pool, &p, shutdown).await {
            Outcome::Parked(reason)
        } else {
            Outcome::Abandoned
        };
    }
}

/// How a consumer declares the topology before it reads (see [`super::topology::Topology`]).
pub type Declare = Arc<
    dyn Fn(lapin::Channel) -> futures::future::BoxFuture<'static, anyhow::Result<()>> + Send + Sync,
>;

/// What a raw consumer does with each delivery (it must acknowledge it itself).
pub type OnDelivery =
    Arc<dyn Fn(Delivery) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Consumes `queue` with a [`Handler`] until `shutdown`, reconnecting after any loss.
/// In-flight messages finish (and are acknowledged) before it returns; prefetched ones go back
/// to the queue.
pub async fn run<H: Handler>(
    settings: Settings,
    pool: PgPool,
    queue: String,
    declare: Declare,
    handler: Arc<H>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (q, stop) = (queue.clone(), shutdown.clone());
    let name = handler.name();
    let on_delivery: OnDelivery = Arc::new(move |delivery| {
        let (handler, pool, q, stop) = (handler.clone(), pool.clone(), q.clone(), stop.clone());
        Box::pin(async move {
            process(handler.as_ref(), &pool, &q, delivery, &stop).await;
        })
    });
    run_raw(
        settings,
        queue,
        declare,
        name,
        on_delivery,
        readiness,
        shutdown,
    )
    .await
}

/// The connection supervisor under [`run`], for consumers that do their own acknowledging.
pub async fn run_raw(
    settings: Settings,
    queue: String,
    declare: Declare,
    name: &'static str,
    on_delivery: OnDelivery,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let part = format!("consumer:{queue}");
    // Registered unready at once, so /readyz cannot pass before this consumer consumes.
    readiness.set(&part, false);
    let mut backoff = super::relay::reconnect_backoff();
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        match session(
            &settings,
            &queue,
            &declare,
            name,
            &on_delivery,
            &readiness,
            &part,
            &shutdown,
        )
        .await
        {
            Ok(()) if shutdown.is_cancelled() => return Ok(()),
            Ok(()) => {
                tracing::warn!(queue = %queue, "consumer cancelled by the broker; reconnecting")
            }
            Err(e) => {
                tracing::warn!(queue = %queue, error = %privacy::scrub(&format!("{e:#}")), "consumer lost its connection; reconnecting")
            }
        }
        readiness.set(&part, false);
        tokio::select! {
            _ = tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    settings: &Settings,
    queue: &str,
    declare: &Declare,
    name: &str,
    on_delivery: &OnDelivery,
    readiness: &Readiness,
    part: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let conn = super::connect(&settings.amqp, &format!("{name} consumer {queue}")).await?;
    let ch = conn.create_channel().await?;
    declare(ch.clone()).await?;
    ch.basic_qos(settings.amqp.prefetch, BasicQosOptions::default())
        .await?;
    let consumer = ch
        .basic_consume(
            super::short(queue)?,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    readiness.set(part, true);
    tracing::info!(queue = %queue, "consuming");
    let lost = std::sync::Mutex::new(None::<String>);
    let concurrency = usize::from(settings.amqp.prefetch).max(1);
    consumer
        .take_until(shutdown.cancelled())
        .take_while(|d| {
            if let Err(e) = d {
                *lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
            futures::future::ready(d.is_ok())
        })
        .filter_map(|d| futures::future::ready(d.ok()))
        .for_each_concurrent(concurrency, |delivery| on_delivery(delivery))
        .await;
    if let Some(e) = lost.lock().unwrap_or_else(|p| p.into_inner()).take() {
        anyhow::bail!("delivery stream failed: {e}");
    }
    // Closing the channel returns prefetched, unstarted deliveries to the queue.
    ch.close(200, "shutting down".into()).await.ok();
    conn.close(200, "shutting down".into()).await.ok();
    Ok(())
}
