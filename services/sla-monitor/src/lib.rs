//! SLA monitor: watches every stage deadline on the ministry's working-day calendar, sends
//! reminders, breach notices and escalations to units, closes resolved cases nobody replied
//! to, and records what RabbitMQ could not deliver in the parking lot.

pub mod archiver;
pub mod deadlines;
pub mod startup;
pub mod stats;
pub mod sweep;

pub use startup::Monitor;
