//! The consumer loop every service uses. Each channel takes the deliveries that are ready (up
//! to `amqp.batch_max`; under light load that is one) and handles them as a batch:
//!
//! 1. take out the messages each delivery carries: itself, or the members of a
//!    `lapor.batch.v1` ([`crate::messages::batch`]), which from here on are messages like any
//!    other; read each `message_id` (a message without one is parked alone);
//! 2. in one transaction: record the ids in the inbox (those already there are redeliveries:
//!    nothing to do) and apply the handler's effect for the rest, including their outbox
//!    messages; a message the handler refuses is parked in the same transaction;
//! 3. commit (one transaction per `amqp.batch_max` messages), then acknowledge the whole batch
//!    of deliveries with one `ack multiple`. A crash between commit and ack redelivers the
//!    messages, and the inbox turns them into no-ops.
//!
//! A handler says what a failure means. A per-message refusal, or [`HandleError::Park`]: the
//! message can never succeed (bad content, an impossible state); it is recorded with its
//! reason in the parking lot and acknowledged, and the flow around it continues.
//! [`HandleError::Retry`]: something transient (the database is down). A batch that fails is
//! rolled back and its messages are handled again one at a time, so one bad message cannot
//! hold the others back; a single message is retried with backoff, never requeued in a tight
//! loop. A retryable error that keeps coming back for the same message is parked after
//! `MAX_ATTEMPTS`, unless it is a connectivity problem, which is retried for as long as it
//! lasts. Deliveries that crash the process every time reach the queue's delivery limit and
//! are dead-lettered by the broker instead.

use super::headers;
use crate::config::Settings;
use crate::db::kept::Kept;
use crate::db::{self, inbox, outbox, parked};
use crate::ops::Readiness;
use crate::privacy;
use crate::telemetry;
use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sqlx::{Connection, PgConnection, PgPool};
use std::collections::{HashMap, HashSet};
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
    /// This message's own span, a child of the trace it arrived with. Build what the message
    /// causes inside it (`span.in_scope`), so that its outbox messages continue its trace.
    pub span: tracing::Span,
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

/// What a consumer does with one message, inside the transaction that records it. Run it
/// with [`PerMessage`].
pub trait Handler: Send + Sync + 'static {
    /// The inbox key: one per logical consumer, shared by its replicas.
    fn name(&self) -> &'static str;

    fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &Incoming,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;
}

/// The result a [`BatchHandler`] gives for one message: applied, or the reason to park it.
pub type Verdict = Result<(), String>;

/// What a consumer does with a batch of messages, inside the one transaction that records
/// them. Set-based: a fixed number of statements per batch, whatever its size.
pub trait BatchHandler: Send + Sync + 'static {
    /// The inbox key: one per logical consumer, shared by its replicas.
    fn name(&self) -> &'static str;

    /// Applies `msgs`, each new to this consumer and each once. Returns one verdict per
    /// message, in order. A message refused with `Err(reason)` is parked, and must have had
    /// nothing written for it. An error of the whole call rolls the batch back.
    fn handle_batch(
        &self,
        tx: &mut PgConnection,
        msgs: &[&Incoming],
    ) -> impl Future<Output = Result<Vec<Verdict>, HandleError>> + Send;
}

/// Decodes every message of a batch as `T`: the decoded ones in order (`None` where decoding
/// failed), and a verdict per message that refuses those with the reason.
pub fn decode_each<T: crate::messages::Message>(
    msgs: &[&Incoming],
) -> (Vec<Option<T>>, Vec<Verdict>) {
    let mut verdicts: Vec<Verdict> = vec![Ok(()); msgs.len()];
    let decoded = msgs
        .iter()
        .zip(verdicts.iter_mut())
        .map(|(m, v)| match crate::messages::decode::<T>(&m.body) {
            Ok(t) => Some(t),
            Err(e) => {
                *v = Err(e.to_string());
                None
            }
        })
        .collect();
    (decoded, verdicts)
}

/// Runs a per-message [`Handler`] as a [`BatchHandler`]: each message of a batch in its own
/// savepoint, so that parking one undoes only its own writes.
pub struct PerMessage<H>(pub H);

impl<H: Handler> BatchHandler for PerMessage<H> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        msgs: &[&Incoming],
    ) -> Result<Vec<Verdict>, HandleError> {
        if let [msg] = msgs {
            // Alone in its transaction: a refusal rolls the transaction back.
            self.0.handle(tx, msg).instrument(msg.span.clone()).await?;
            return Ok(vec![Ok(())]);
        }
        let mut verdicts = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let mark = outbox::collected();
            let mut sp = sqlx::Connection::begin(&mut *tx).await?;
            match self
                .0
                .handle(&mut sp, msg)
                .instrument(msg.span.clone())
                .await
            {
                Ok(()) => {
                    sp.commit().await?;
                    verdicts.push(Ok(()));
                }
                Err(HandleError::Park(reason)) => {
                    sp.rollback().await?;
                    // What it wrote to the outbox is gone: it must not be handed over.
                    outbox::forget_collected_after(mark);
                    verdicts.push(Err(reason));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(verdicts)
    }
}

/// What happened to a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    Parked(String),
    /// Shutdown came while a transient error was being retried; the message was not
    /// acknowledged and will be delivered again.
    Abandoned,
}

/// The messages a delivery carries: itself, or the members of a batch (`lapor.batch.v1`, see
/// [`crate::messages::batch`]), each with its own id, trace and span. One that cannot be read
/// comes back as the record to park it with.
fn incoming(
    d: &Delivery,
    queue: &str,
    consumer: &'static str,
) -> Vec<Result<Incoming, Box<parked::Parked>>> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        // Any JSON, read in place: a `schema` of the wrong type is the handler's to refuse,
        // by name.
        #[serde(borrow)]
        schema: Option<&'a serde_json::value::RawValue>,
        message_id: Option<Uuid>,
    }
    let headers = headers::from_table(d.properties.headers().as_ref());
    let head = serde_json::from_slice::<Head>(&d.data).ok();
    let from_props = d
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_owned());
    let unreadable = |headers, payload, reason| parked::Parked {
        queue: queue.to_owned(),
        exchange: d.exchange.as_str().to_owned(),
        routing_key: d.routing_key.as_str().to_owned(),
        message_id: from_props.clone(),
        reason,
        headers,
        payload,
    };
    let Some(head) = head else {
        let reason = if serde_json::from_slice::<serde_json::Value>(&d.data).is_err() {
            "body is not JSON"
        } else {
            "message has no valid message_id (a UUID) in its body"
        };
        return vec![Err(Box::new(unreadable(
            headers,
            d.data.clone(),
            reason.to_owned(),
        )))];
    };
    let is_batch = head.schema.is_some_and(|v| {
        v.get().strip_prefix('"').and_then(|v| v.strip_suffix('"'))
            == Some(crate::messages::schema::BATCH_V1)
    });
    if is_batch {
        let members = match crate::messages::batch::decode(&d.data) {
            Ok(members) => members,
            Err(reason) => {
                return vec![Err(Box::new(unreadable(headers, d.data.clone(), reason)))];
            }
        };
        return members
            .into_iter()
            .map(|m| {
                #[derive(serde::Deserialize)]
                struct Id {
                    message_id: Uuid,
                }
                let body = m.message.get().as_bytes().to_vec();
                match serde_json::from_slice::<Id>(&body) {
                    Ok(id) => Ok(one(d, queue, consumer, id.message_id, m.headers, body)),
                    Err(_) => Err(Box::new(parked::Parked {
                        message_id: None,
                        ..unreadable(
                            m.headers,
                            body,
                            "batch member has no valid message_id (a UUID)".to_owned(),
                        )
                    })),
                }
            })
            .collect();
    }
    match head
        .message_id
        .or_else(|| from_props.as_deref().and_then(|m| Uuid::parse_str(m).ok()))
    {
        Some(id) => vec![Ok(one(d, queue, consumer, id, headers, d.data.clone()))],
        None => vec![Err(Box::new(unreadable(
            headers,
            d.data.clone(),
            "message has no valid message_id (a UUID) in its body".to_owned(),
        )))],
    }
}

/// One message of a delivery, with its own `process` span.
fn one(
    d: &Delivery,
    queue: &str,
    consumer: &'static str,
    message_id: Uuid,
    headers: HashMap<String, String>,
    body: Vec<u8>,
) -> Incoming {
    let span = tracing::info_span!(
        "process",
        otel.name = format!("process {queue}"),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.destination.name = %d.exchange,
        messaging.rabbitmq.destination.routing_key = %d.routing_key,
        messaging.consumer.group.name = consumer,
        messaging.message.id = %message_id,
        outcome = tracing::field::Empty,
    );
    telemetry::extract_into(&span, &headers);
    Incoming {
        message_id,
        queue: queue.to_owned(),
        exchange: d.exchange.as_str().to_owned(),
        routing_key: d.routing_key.as_str().to_owned(),
        redelivered: d.redelivered,
        headers,
        body,
        span,
    }
}

fn parked_record(msg: &Incoming, reason: String) -> parked::Parked {
    parked::Parked {
        queue: msg.queue.clone(),
        exchange: msg.exchange.clone(),
        routing_key: msg.routing_key.clone(),
        message_id: Some(msg.message_id.to_string()),
        reason,
        headers: msg.headers.clone(),
        payload: msg.body.clone(),
    }
}

fn parked_metric(id: i64, p: &parked::Parked) {
    tracing::warn!(parked_id = id, queue = %p.queue, reason = %p.reason, "message parked");
    metrics::counter!("lapor_messages_parked_total", "queue" => p.queue.clone()).increment(1);
}

/// Where a consumer runs: its handler, the database, and the hand-off to its relay.
struct Consumer<H> {
    handler: Arc<H>,
    pool: PgPool,
    /// The connections the batches' transactions run on, kept between batches.
    kept: Kept,
    handoff: Option<outbox::Handoff>,
    /// The most messages one transaction handles.
    batch_max: usize,
}

/// [`transact`], handing what it wrote to the outbox to the relay once it has committed.
async fn attempt<H: BatchHandler>(
    c: &Consumer<H>,
    msgs: &[&Incoming],
) -> Result<Vec<Outcome>, HandleError> {
    outbox::handing_off(
        c.handoff.as_ref(),
        transact(c.handler.as_ref(), &c.kept, msgs),
    )
    .await
}

/// One transaction for the batch: inbox, handler, parking of what the handler refused. `Ok`
/// only once it has committed.
async fn transact<H: BatchHandler>(
    handler: &H,
    kept: &Kept,
    msgs: &[&Incoming],
) -> Result<Vec<Outcome>, HandleError> {
    let mut conn = kept.acquire().await?;
    let mut tx = conn.begin().await?;
    let ids: Vec<Uuid> = msgs.iter().map(|m| m.message_id).collect();
    let fresh = inbox::claim_many(&mut tx, handler.name(), &ids).await?;
    let mut seen = HashSet::new();
    let todo: Vec<&Incoming> = msgs
        .iter()
        .copied()
        .filter(|m| fresh.contains(&m.message_id) && seen.insert(m.message_id))
        .collect();
    let verdicts = if todo.is_empty() {
        Vec::new()
    } else {
        handler.handle_batch(&mut tx, &todo).await?
    };
    if verdicts.len() != todo.len() {
        return Err(HandleError::Retry(anyhow::anyhow!(
            "consumer {} gave {} verdicts for {} messages",
            handler.name(),
            verdicts.len(),
            todo.len()
        )));
    }
    let mut refused = Vec::new();
    let mut verdict_of: HashMap<Uuid, Verdict> = HashMap::with_capacity(todo.len());
    for (m, v) in todo.iter().zip(verdicts) {
        if let Err(reason) = &v {
            refused.push((m.message_id, parked_record(m, reason.clone())));
        }
        verdict_of.insert(m.message_id, v);
    }
    let mut parked_ids = Vec::new();
    if !refused.is_empty() {
        let ids: Vec<Uuid> = refused.iter().map(|(id, _)| *id).collect();
        inbox::release(&mut tx, handler.name(), &ids).await?;
        for (_, p) in &refused {
            parked_ids.push((parked::park(&mut tx, p).await?, p));
        }
    }
    tx.commit().await?;
    conn.keep();
    crate::fault::point("after_commit");
    for (id, p) in parked_ids {
        parked_metric(id, p);
    }
    Ok(msgs
        .iter()
        .map(|m| match verdict_of.remove(&m.message_id) {
            Some(Ok(())) => Outcome::Applied,
            Some(Err(reason)) => Outcome::Parked(reason),
            None => Outcome::Duplicate,
        })
        .collect())
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
                parked_metric(id, p);
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

/// Handles one message to its end (applied, duplicate, parked) unless shutdown interrupts a
/// retry.
async fn process_one<H: BatchHandler>(
    c: &Consumer<H>,
    msg: &Incoming,
    shutdown: &CancellationToken,
) -> Outcome {
    let mut backoff = retry_backoff();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let reason = match attempt(c, &[msg]).instrument(msg.span.clone()).await {
            Ok(mut outcomes) => return outcomes.pop().unwrap_or(Outcome::Duplicate),
            Err(HandleError::Park(reason)) => reason,
            Err(HandleError::Retry(e)) => {
                let transient = e.downcast_ref::<sqlx::Error>().is_none_or(db::is_transient);
                let why = privacy::scrub(&format!("{e:#}"));
                if !transient && attempts >= MAX_ATTEMPTS {
                    format!("failed {attempts} times: {why}")
                } else {
                    tracing::warn!(parent: &msg.span, attempt = attempts, error = %why, "handling failed; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(10))) => continue,
                        _ = shutdown.cancelled() => return Outcome::Abandoned,
                    }
                }
            }
        };
        return if park_retrying(&c.pool, &parked_record(msg, reason.clone()), shutdown).await {
            Outcome::Parked(reason)
        } else {
            Outcome::Abandoned
        };
    }
}

/// Handles decoded messages: all in one transaction, or, if that fails, one at a time.
async fn process_decoded<H: BatchHandler>(
    c: &Consumer<H>,
    queue: &str,
    msgs: &[&Incoming],
    shutdown: &CancellationToken,
) -> Vec<Outcome> {
    match msgs {
        [] => return Vec::new(),
        [msg] => return vec![process_one(c, msg, shutdown).await],
        _ => {}
    }
    let batch = tracing::info_span!(
        "process batch",
        otel.name = format!("process {queue}"),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.consumer.group.name = c.handler.name(),
        messaging.batch.message_count = msgs.len(),
    );
    {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        for m in msgs {
            batch.add_link(m.span.context().span().span_context().clone());
        }
    }
    match attempt(c, msgs).instrument(batch.clone()).await {
        Ok(outcomes) => return outcomes,
        Err(e) => {
            let why = match &e {
                HandleError::Park(reason) => reason.clone(),
                HandleError::Retry(e) => privacy::scrub(&format!("{e:#}")),
            };
            tracing::warn!(parent: &batch, messages = msgs.len(), error = %why, "batch failed; handling its messages one at a time");
        }
    }
    let mut outcomes = Vec::with_capacity(msgs.len());
    for msg in msgs {
        if outcomes.last() == Some(&Outcome::Abandoned) {
            outcomes.push(Outcome::Abandoned);
            continue;
        }
        outcomes.push(process_one(c, msg, shutdown).await);
    }
    outcomes
}

/// Handles a batch of deliveries from one channel and acknowledges them: one `ack multiple`
/// when all are done, or each done one alone when shutdown abandoned some. Returns whether
/// the channel may go on.
async fn process_batch<H: BatchHandler>(
    c: &Consumer<H>,
    queue: &str,
    deliveries: Vec<Delivery>,
    shutdown: &CancellationToken,
) -> bool {
    // Every message, and the delivery that carried it (a batch carries several).
    let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(deliveries.len());
    let mut decoded: Vec<(usize, Incoming)> = Vec::with_capacity(deliveries.len());
    for (i, d) in deliveries.iter().enumerate() {
        for m in incoming(d, queue, c.handler.name()) {
            match m {
                Ok(m) => decoded.push((i, m)),
                Err(p) => {
                    let o = if park_retrying(&c.pool, &p, shutdown).await {
                        Outcome::Parked(p.reason)
                    } else {
                        Outcome::Abandoned
                    };
                    outcomes.push((i, o));
                }
            }
        }
    }
    // At most `batch_max` messages per transaction, however they were carried.
    let msgs: Vec<&Incoming> = decoded.iter().map(|(_, m)| m).collect();
    let mut results = Vec::with_capacity(msgs.len());
    for part in msgs.chunks(c.batch_max) {
        if results.last() == Some(&Outcome::Abandoned) {
            results.extend(part.iter().map(|_| Outcome::Abandoned));
            continue;
        }
        results.extend(process_decoded(c, queue, part, shutdown).await);
    }
    for ((i, m), o) in decoded.iter().zip(results) {
        m.span.record("outcome", format!("{o:?}").as_str());
        outcomes.push((*i, o));
    }
    // A delivery is done when every message it carried is.
    let mut abandoned = vec![false; deliveries.len()];
    for (i, o) in &outcomes {
        abandoned[*i] |= *o == Outcome::Abandoned;
    }

    let complete = !abandoned.contains(&true);
    let acks: Vec<(&Delivery, BasicAckOptions)> = if complete {
        // Everything up to the last delivery tag of the batch, in one frame: the channel
        // handles one batch at a time, so nothing before it is still in progress.
        deliveries
            .last()
            .map(|d| (d, BasicAckOptions { multiple: true }))
            .into_iter()
            .collect()
    } else {
        deliveries
            .iter()
            .zip(&abandoned)
            .filter(|(_, abandoned)| !**abandoned)
            .map(|(d, _)| (d, BasicAckOptions::default()))
            .collect()
    };
    for (d, options) in acks {
        match d.acker.ack(options).await {
            Ok(true) => {}
            // A stale acker (the channel was lost after the commit): the broker will deliver
            // the messages again and the inbox will recognise them.
            Ok(false) => {
                tracing::debug!("ack skipped: channel was closed; the messages will be redelivered")
            }
            Err(e) => tracing::warn!(error = %e, "ack failed; the messages will be redelivered"),
        }
    }
    let mut counts: HashMap<&'static str, u64> = HashMap::new();
    for (_, o) in &outcomes {
        let label = match o {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Parked(_) => "parked",
            Outcome::Abandoned => "abandoned",
        };
        *counts.entry(label).or_default() += 1;
    }
    for (label, n) in counts {
        metrics::counter!("lapor_messages_total", "consumer" => c.handler.name(), "outcome" => label)
            .increment(n);
    }
    complete
}

/// How a consumer declares the topology before it reads (see [`super::topology::Topology`]).
pub type Declare =
    Arc<dyn Fn(lapin::Channel) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// What a raw consumer does with each delivery (it must acknowledge it itself).
pub type OnDelivery = Arc<dyn Fn(Delivery) -> BoxFuture<'static, ()> + Send + Sync>;

/// How one channel's deliveries are consumed until shutdown; `Err` when the stream fails or
/// the broker cancels the consumer.
type Drive = Arc<dyn Fn(lapin::Consumer) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

fn stream_ended(shutdown: &CancellationToken, lost: Option<lapin::Error>) -> anyhow::Result<()> {
    match lost {
        Some(e) => anyhow::bail!("delivery stream failed: {e}"),
        None if !shutdown.is_cancelled() => anyhow::bail!("consumer cancelled by the broker"),
        None => Ok(()),
    }
}

/// Consumes `queue` with a [`BatchHandler`] until `shutdown`, reconnecting after any loss.
/// The batch in progress on each channel finishes (and is acknowledged) before it returns;
/// prefetched deliveries go back to the queue. With a `handoff`, what a batch writes to the
/// outbox is handed to the service's relay after the commit.
#[allow(clippy::too_many_arguments)]
pub async fn run<H: BatchHandler>(
    settings: Settings,
    pool: PgPool,
    queue: String,
    declare: Declare,
    handler: Arc<H>,
    handoff: Option<outbox::Handoff>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (q, stop) = (queue.clone(), shutdown.clone());
    let name = handler.name();
    let batch_max = usize::from(settings.amqp.batch_max).max(1);
    let consumer = Arc::new(Consumer {
        handler,
        kept: Kept::new(pool.clone()),
        pool,
        handoff,
        batch_max,
    });
    let drive: Drive = Arc::new(move |deliveries| {
        let (c, q, stop) = (consumer.clone(), q.clone(), stop.clone());
        Box::pin(async move {
            let mut batches = std::pin::pin!(
                deliveries
                    .take_until(stop.clone().cancelled_owned())
                    .ready_chunks(batch_max)
            );
            while let Some(chunk) = batches.next().await {
                let mut deliveries = Vec::with_capacity(chunk.len());
                let mut lost = None;
                for d in chunk {
                    match d {
                        Ok(d) => deliveries.push(d),
                        Err(e) => {
                            lost = Some(e);
                            break;
                        }
                    }
                }
                if !deliveries.is_empty() && !process_batch(c.as_ref(), &q, deliveries, &stop).await
                {
                    // Shutdown interrupted a retry; the rest goes back to the queue.
                    return Ok(());
                }
                if lost.is_some() {
                    return stream_ended(&stop, lost);
                }
            }
            stream_ended(&stop, None)
        })
    });
    let channels = settings.amqp.consumer_channels.max(1);
    supervise(
        settings, queue, declare, name, drive, channels, readiness, shutdown,
    )
    .await
}

/// Consumes `queue` on one channel until `shutdown`, for consumers that do their own
/// acknowledging: up to `amqp.prefetch` deliveries are handled at once.
pub async fn run_raw(
    settings: Settings,
    queue: String,
    declare: Declare,
    name: &'static str,
    on_delivery: OnDelivery,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stop = shutdown.clone();
    let concurrency = usize::from(settings.amqp.prefetch).max(1);
    let drive: Drive = Arc::new(move |consumer| {
        let (on_delivery, stop) = (on_delivery.clone(), stop.clone());
        Box::pin(async move {
            let lost = std::sync::Mutex::new(None::<lapin::Error>);
            consumer
                .take_until(stop.cancelled())
                .take_while(|d| {
                    if let Err(e) = d {
                        *lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                    }
                    futures::future::ready(d.is_ok())
                })
                .filter_map(|d| futures::future::ready(d.ok()))
                .for_each_concurrent(concurrency, |delivery| on_delivery(delivery))
                .await;
            let lost = lost.lock().unwrap_or_else(|p| p.into_inner()).take();
            stream_ended(&stop, lost)
        })
    });
    supervise(
        settings, queue, declare, name, drive, 1, readiness, shutdown,
    )
    .await
}

/// The connection supervisor: a session at a time, reconnecting with backoff after any loss.
#[allow(clippy::too_many_arguments)]
async fn supervise(
    settings: Settings,
    queue: String,
    declare: Declare,
    name: &'static str,
    drive: Drive,
    channels: u16,
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
        let result = session(
            &settings, &queue, &declare, name, &drive, channels, &readiness, &part,
        )
        .await;
        match result {
            Ok(()) if shutdown.is_cancelled() => return Ok(()),
            Ok(()) => tracing::warn!(queue = %queue, "consumer stopped; reconnecting"),
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
    drive: &Drive,
    channels: u16,
    readiness: &Readiness,
    part: &str,
) -> anyhow::Result<()> {
    let conn = super::connect(&settings.amqp, &format!("{name} consumer {queue}")).await?;
    let mut open = Vec::with_capacity(usize::from(channels));
    let mut consumers = Vec::with_capacity(usize::from(channels));
    for n in 0..channels {
        let ch = conn.create_channel().await?;
        if n == 0 {
            declare(ch.clone()).await?;
        }
        ch.basic_qos(settings.amqp.prefetch, BasicQosOptions::default())
            .await?;
        consumers.push(
            ch.basic_consume(
                super::short(queue)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?,
        );
        open.push(ch);
    }
    readiness.set(part, true);
    tracing::info!(queue = %queue, channels, "consuming");
    // The first channel to fail ends the session; the connection is then closed, and what
    // the others had in progress and not acknowledged goes back to the queue.
    let result = futures::future::try_join_all(consumers.into_iter().map(|c| drive(c))).await;
    // Closing the channels returns prefetched, unstarted deliveries to the queue.
    for ch in open {
        ch.close(200, "shutting down".into()).await.ok();
    }
    conn.close(200, "shutting down".into()).await.ok();
    result.map(|_| ())
}
