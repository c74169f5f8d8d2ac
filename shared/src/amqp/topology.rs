//! What every service declares on the vhost it is given. Declarations are idempotent; the
//! arguments below are fixed when a queue is first created (RabbitMQ refuses to redeclare with
//! different ones), so change delivery limits later with a policy.
//!
//! - `lapor.events`, `lapor.units`, `lapor.followup`: durable topic exchanges whose alternate
//!   exchange `lapor.unroutable` catches anything no queue is bound for.
//! - Work queues and unit queues: durable quorum queues with a delivery limit; a message that
//!   keeps failing is dead-lettered at-least-once to `lapor.dlx`.
//! - `parked.dead-letters` and `parked.unroutable`: where those two kinds of message wait until
//!   the parking archiver records them with their reason.

use super::short;
use crate::domain::UnitCode;
use crate::messages::exchange;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

pub const PARKED_DEAD_LETTERS: &str = "parked.dead-letters";
pub const PARKED_UNROUTABLE: &str = "parked.unroutable";

/// The pipeline's own work queues.
pub const VERIFIER: &str = "verifier.cases";
pub const DISTRIBUTOR_VERIFIED: &str = "distributor.verified";
pub const DISTRIBUTOR_FOLLOWUPS: &str = "distributor.followups";

/// A work queue and what it is bound to.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    pub bindings: Vec<(&'static str, String)>,
}

impl QueueSpec {
    pub fn new(name: &str, bindings: &[(&'static str, &str)]) -> Self {
        Self {
            name: name.to_owned(),
            bindings: bindings
                .iter()
                .map(|(e, k)| (*e, (*k).to_owned()))
                .collect(),
        }
    }

    /// A unit's own queue: `units.<CODE>` bound to `<CODE>.#` on `lapor.units`.
    pub fn unit(code: &UnitCode) -> Self {
        Self {
            name: code.queue(),
            bindings: vec![(exchange::UNITS, code.key("#"))],
        }
    }
}

fn durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

fn quorum_args(delivery_limit: u32, dead_letter: bool) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), s("quorum"));
    if dead_letter {
        t.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(delivery_limit as i32),
        );
        t.insert("x-dead-letter-exchange".into(), s(exchange::DEAD_LETTER));
        t.insert("x-dead-letter-strategy".into(), s("at-least-once"));
        t.insert("x-overflow".into(), s("reject-publish"));
    }
    t
}

/// Exchanges and the two parking queues.
pub async fn declare_core(ch: &Channel) -> anyhow::Result<()> {
    ch.exchange_declare(
        exchange::UNROUTABLE.into(),
        ExchangeKind::Fanout,
        durable(),
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        exchange::DEAD_LETTER.into(),
        ExchangeKind::Fanout,
        durable(),
        FieldTable::default(),
    )
    .await?;
    let mut ae = FieldTable::default();
    ae.insert("alternate-exchange".into(), s(exchange::UNROUTABLE));
    for name in [exchange::EVENTS, exchange::UNITS, exchange::FOLLOWUP] {
        ch.exchange_declare(name.into(), ExchangeKind::Topic, durable(), ae.clone())
            .await?;
    }
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (queue, from) in [
        (PARKED_DEAD_LETTERS, exchange::DEAD_LETTER),
        (PARKED_UNROUTABLE, exchange::UNROUTABLE),
    ] {
        ch.queue_declare(queue.into(), opts, quorum_args(0, false))
            .await?;
        ch.queue_bind(
            queue.into(),
            from.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// Everything the pipeline needs on its vhost. Every service declares all of it on every
/// connection, so whichever service starts first, nothing it publishes can find its queue
/// missing (an early `case.received` would otherwise wait in the unroutable parking queue).
#[derive(Debug, Clone)]
pub struct Topology {
    pub queues: Vec<QueueSpec>,
    pub delivery_limit: u32,
}

impl Topology {
    pub fn pipeline(units: &crate::data::UnitRegistry, delivery_limit: u32) -> Self {
        let mut queues = vec![
            QueueSpec::new(
                VERIFIER,
                &[
                    (exchange::EVENTS, "case.received"),
                    (exchange::EVENTS, "case.supplemented"),
                    (exchange::EVENTS, "case.reviewed"),
                ],
            ),
            QueueSpec::new(DISTRIBUTOR_VERIFIED, &[(exchange::EVENTS, "case.verified")]),
            QueueSpec::new(DISTRIBUTOR_FOLLOWUPS, &[(exchange::FOLLOWUP, "*.followup")]),
        ];
        queues.extend(units.iter().map(|u| QueueSpec::unit(&u.code)));
        Self {
            queues,
            delivery_limit,
        }
    }

    pub fn spec(&self, name: &str) -> Option<&QueueSpec> {
        self.queues.iter().find(|q| q.name == name)
    }

    pub async fn declare(&self, ch: &Channel) -> anyhow::Result<()> {
        declare_core(ch).await?;
        for q in &self.queues {
            declare_queue(ch, q, self.delivery_limit).await?;
        }
        Ok(())
    }
}

/// A durable quorum work queue with its bindings.
pub async fn declare_queue(
    ch: &Channel,
    spec: &QueueSpec,
    delivery_limit: u32,
) -> anyhow::Result<()> {
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(short(&spec.name)?, opts, quorum_args(delivery_limit, true))
        .await?;
    for (ex, key) in &spec.bindings {
        ch.queue_bind(
            short(&spec.name)?,
            (*ex).into(),
            short(key)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}
