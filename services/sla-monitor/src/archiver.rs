//! The parking archiver: messages RabbitMQ dead-lettered (delivery limit reached) or could not
//! route (no queue bound for the key) wait in two parking queues; this records each in the
//! `parked_messages` table with a readable reason and the original exchange and routing key,
//! so `laporctl parked list` shows them and `laporctl parked redrive` can send them back.
//!
//! It acknowledges after the insert commits; a crash in between may record a message twice,
//! which is harmless (re-driving both yields the same message id, which consumers recognise).

use futures::FutureExt;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapor_shared::amqp::consume::{self, OnDelivery};
use lapor_shared::amqp::{headers, topology};
use lapor_shared::db::parked::{self, Parked};
use lapor_shared::service::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn describe(d: &Delivery, queue: &str) -> Parked {
    let table = d.properties.headers().as_ref();
    let death = headers::death(table);
    let (reason, origin_queue, exchange, routing_key) = match &death {
        Some(x) => {
            let why = match x.reason.as_str() {
                "delivery_limit" => format!(
                    "delivery limit reached on queue {} (the message kept failing or crashing its consumer)",
                    x.queue
                ),
                "rejected" => format!("rejected by a consumer of queue {}", x.queue),
                "expired" => format!("expired in queue {}", x.queue),
                other => format!("dead-lettered from queue {} ({other})", x.queue),
            };
            (
                why,
                x.queue.clone(),
                x.exchange.clone(),
                x.routing_key.clone(),
            )
        }
        None => (
            format!(
                "unroutable: no queue is bound for routing key {} on exchange {}",
                d.routing_key, d.exchange
            ),
            queue.to_owned(),
            d.exchange.as_str().to_owned(),
            d.routing_key.as_str().to_owned(),
        ),
    };
    Parked {
        queue: origin_queue,
        exchange,
        routing_key,
        message_id: d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned()),
        reason,
        headers: headers::from_table(table),
        payload: d.data.clone(),
    }
}

pub fn spawn(ctx: &Context, stop: CancellationToken) -> Vec<JoinHandle<anyhow::Result<()>>> {
    [topology::PARKED_DEAD_LETTERS, topology::PARKED_UNROUTABLE]
        .into_iter()
        .map(|queue| {
            let pool = ctx.pool.clone();
            let s = stop.clone();
            let on: OnDelivery = Arc::new(move |d: Delivery| {
                let (pool, s) = (pool.clone(), s.clone());
                async move {
                    let p = describe(&d, queue);
                    loop {
                        let r = async {
                            let mut c = pool.acquire().await?;
                            parked::park(&mut c, &p).await
                        }
                        .await;
                        match r {
                            Ok(id) => {
                                tracing::warn!(parked_id = id, queue = %p.queue, reason = %p.reason, "message parked by the broker");
                                if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
                                    tracing::warn!(error = %e, "ack of parked message failed; it may be recorded twice");
                                }
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(error = %lapor_shared::privacy::scrub(&e.to_string()), "cannot record parked message; retrying");
                                tokio::select! {
                                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                    _ = s.cancelled() => return,
                                }
                            }
                        }
                    }
                }
                .boxed()
            });
            tokio::spawn(consume::run_raw(ctx.settings.clone(), queue.to_owned(), ctx.declare(), "parking-archiver", on, ctx.readiness.clone(), stop.clone()))
        })
        .collect()
}
