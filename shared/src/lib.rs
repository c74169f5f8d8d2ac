//! The library every LAPOR service shares: domain values, configuration, telemetry, the
//! ministry's reference data, wire schemas, and the delivery machinery (outbox, inbox,
//! parking) over PostgreSQL and RabbitMQ.
//!
//! Nothing here binds a port or listens for signals; binaries do that.

pub mod amqp;
pub mod broker_admin;
pub mod clock;
pub mod config;
pub mod data;
pub mod db;
pub mod deadlines;
pub mod domain;
pub mod fault;
pub mod messages;
pub mod ops;
pub mod privacy;
pub mod service;
pub mod shutdown;
pub mod sla;
pub mod store;
pub mod telemetry;
pub mod units;
