//! Intake: the HTTP door of the pipeline. It validates a complaint, stores it with its
//! `case.received` event in one transaction, and answers `202` with a tracking id only after
//! that commit. It also answers the status timeline, without personal data.

pub mod problem;
mod routes;
pub mod startup;
pub mod submission;
pub mod submissions;

pub use startup::Application;
