//! RabbitMQ over lapin: connections, the topology every service declares, publishing with
//! confirms, the outbox relay, and the consumer loop that acknowledges only after commit.
//!
//! Reconnection is done by our own supervisors (a fresh connection, channels and topology
//! after any loss) rather than by lapin's automatic recovery, because a recovered channel
//! cannot make stale ackers valid again and a channel closed by the broker is not recovered at
//! all; starting over is simpler to reason about, and the inbox makes every redelivery that
//! follows harmless.

pub mod consume;
pub mod headers;
pub mod publish;
pub mod relay;
pub mod topology;

use crate::config::AmqpSettings;
use anyhow::Context;
use lapin::{Connection, ConnectionProperties};

/// Opens a connection, bounded by the configured timeout. `name` shows in the management UI.
pub async fn connect(settings: &AmqpSettings, name: &str) -> anyhow::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.to_owned().into());
    tokio::time::timeout(
        settings.connect_timeout(),
        Connection::connect(&settings.url, props),
    )
    .await
    .context("connecting to RabbitMQ timed out")?
    .context("connecting to RabbitMQ")
}

/// A `ShortString` from dynamic text; lapin panics on more than 255 bytes, we refuse instead.
pub fn short(s: &str) -> anyhow::Result<lapin::types::ShortString> {
    lapin::types::ShortString::try_new(s)
        .map_err(|_| anyhow::anyhow!("AMQP name longer than 255 bytes"))
}
