//! Publishing with publisher confirms. Every publish is persistent and waits for the broker's
//! confirm, bounded by a timeout: a broker under a memory alarm blocks publishers, and a
//! blocked publish must fail (and be retried from the outbox) rather than hang.

use super::{headers, short};
use crate::db::outbox::OutboxRow;
use crate::messages::{batch, exchange};
use crate::telemetry;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker did not confirm within {0:?} (blocked by a resource alarm, or unreachable)")]
    Timeout(Duration),
    #[error("broker refused (nack) message {0}")]
    Nack(uuid::Uuid),
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub struct Publisher {
    channel: Channel,
    timeout: Duration,
    app_id: &'static str,
    /// The most case events one message on `lapor.events` carries (1: each alone).
    events_per_message: usize,
}

impl Publisher {
    pub async fn open(
        conn: &Connection,
        timeout: Duration,
        app_id: &'static str,
    ) -> Result<Self, PublishError> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            timeout,
            app_id,
            events_per_message: 1,
        })
    }

    /// Carries up to `n` case events of one routing key in one message (`lapor.batch.v1`, see
    /// [`crate::messages::batch`]).
    pub fn batching_events(mut self, n: usize) -> Self {
        self.events_per_message = n.max(1);
        self
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes every row and waits until the broker has confirmed all of them. Each message
    /// gets a `publish` span, child of the span that wrote it to the outbox, whose context is
    /// what the consumer continues. Case events on `lapor.events` with the same routing key
    /// travel together, up to `events_per_message` in one batch, each member with its own
    /// trace context.
    ///
    /// The messages are handed to lapin all at once, not one after the other: a publish
    /// resolves once lapin's I/O thread has written it, so publishing them in turn would cost
    /// a hand-over between the threads, and under light load two wake-ups, per message. They
    /// still go out in order, on the one channel.
    pub async fn publish_rows(&self, rows: &[OutboxRow]) -> Result<(), PublishError> {
        // What goes out: (exchange, routing key, message id, body, headers, span).
        type Out<'r> = (
            &'r str,
            &'r str,
            uuid::Uuid,
            std::borrow::Cow<'r, [u8]>,
            HashMap<String, String>,
            tracing::Span,
        );
        let mut out: Vec<Out<'_>> = Vec::with_capacity(rows.len());
        // Open batches by routing key: (key, members with their headers and spans).
        type Members<'r> = Vec<(&'r OutboxRow, HashMap<String, String>, tracing::Span)>;
        let mut batches: Vec<(&str, Members<'_>)> = Vec::new();
        for row in rows {
            let span = tracing::info_span!(
                "publish",
                otel.name = format!("publish {}", row.exchange),
                otel.kind = "producer",
                messaging.system = "rabbitmq",
                messaging.operation.type = "publish",
                messaging.destination.name = %row.exchange,
                messaging.rabbitmq.destination.routing_key = %row.routing_key,
                messaging.message.id = %row.message_id,
            );
            telemetry::extract_into(&span, &row.headers.0);
            let hdrs = span.in_scope(|| {
                let mut hdrs: HashMap<String, String> = telemetry::inject_current();
                hdrs.retain(|k, v| (k == "traceparent" || k == "tracestate") && !v.is_empty());
                hdrs
            });
            if self.events_per_message > 1
                && row.exchange == exchange::EVENTS
                && batch::can_carry(row.message_id, &row.payload)
            {
                let open = batches.iter_mut().find(|(key, members)| {
                    *key == row.routing_key && members.len() < self.events_per_message
                });
                match open {
                    Some((_, members)) => members.push((row, hdrs, span)),
                    None => batches.push((&row.routing_key, vec![(row, hdrs, span)])),
                }
                continue;
            }
            out.push((
                &row.exchange,
                &row.routing_key,
                row.message_id,
                std::borrow::Cow::Borrowed(&row.payload),
                hdrs,
                span,
            ));
        }
        for (key, members) in &batches {
            match members.as_slice() {
                [(row, hdrs, span)] => out.push((
                    exchange::EVENTS,
                    key,
                    row.message_id,
                    std::borrow::Cow::Borrowed(&row.payload),
                    hdrs.clone(),
                    span.clone(),
                )),
                _ => {
                    let id = uuid::Uuid::now_v7();
                    let body = batch::encode(
                        id,
                        members.iter().map(|(r, h, _)| (h, r.payload.as_slice())),
                    );
                    // The members' spans end once the broker has confirmed it.
                    out.push((
                        exchange::EVENTS,
                        key,
                        id,
                        std::borrow::Cow::Owned(body),
                        HashMap::new(),
                        tracing::Span::none(),
                    ));
                }
            }
        }
        // Every publish is polled, in order, before any waits, so all their frames are queued
        // together and go out in this order.
        let mut sends: Vec<_> = out
            .iter()
            .map(|(exchange, key, id, body, hdrs, span)| {
                Box::pin(futures::future::maybe_done(
                    self.publish_one(exchange, key, *id, body, hdrs)
                        .instrument(span.clone()),
                ))
            })
            .collect();
        let all_sent = std::future::poll_fn(|cx| {
            let mut pending = false;
            for send in sends.iter_mut() {
                pending |= send.as_mut().poll(cx).is_pending();
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        });
        tokio::time::timeout(self.timeout, all_sent)
            .await
            .map_err(|_| PublishError::Timeout(self.timeout))?;
        let confirms = sends
            .iter_mut()
            .map(|send| {
                send.as_mut()
                    .take_output()
                    .unwrap_or_else(|| Err(anyhow::anyhow!("a publish ended twice").into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        crate::fault::point("before_confirm");
        let messages = confirms.len() as u64;
        let wait = async {
            for ((_, _, id, _, _, _), confirm) in out.iter().zip(confirms) {
                let c = confirm.await?;
                if c.is_nack() {
                    return Err(PublishError::Nack(*id));
                }
            }
            Ok(())
        };
        let confirmed = tokio::time::timeout(self.timeout, wait)
            .await
            .map_err(|_| PublishError::Timeout(self.timeout))?;
        drop(batches);
        if confirmed.is_ok() {
            // Beside the relay's count of rows: how many messages the broker took for them.
            metrics::counter!("lapor_amqp_published_messages_total").increment(messages);
        }
        confirmed
    }

    async fn publish_one(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: uuid::Uuid,
        payload: &[u8],
        hdrs: &HashMap<String, String>,
    ) -> Result<lapin::PublisherConfirm, PublishError> {
        let props = BasicProperties::default()
            .with_message_id(message_id.to_string().into())
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_app_id(self.app_id.into())
            .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
            .with_headers(headers::to_table(hdrs));
        Ok(self
            .channel
            .basic_publish(
                short(exchange)?,
                short(routing_key)?,
                BasicPublishOptions::default(),
                payload,
                props,
            )
            .await?)
    }
}
