//! End-to-end tests: the four services in-process against the real RabbitMQ and PostgreSQL,
//! each test on its own vhost and database, observed as an outsider would.

#![allow(clippy::unwrap_used)]

mod batches;
mod contracts;
mod handoff;
mod intake_api;
mod kept;
mod outcomes;
mod parking;
mod privacy;
mod publishing;
mod shutdown;
mod sla;
mod units;
mod verification;
