//! Distributor: steps 4 to 7 of the procedure. A verified case that needs field follow-up goes
//! to the responsible unit (`<UNIT>.case`) with copies to the field offices of its area
//! (`<UPT>.tembusan`); one that does not gets its normative answer. Units' follow-ups
//! (`<UNIT>.followup`) move the case on: acknowledged, in progress, delegated to a field
//! office, resolved, or returned to the ministry.

pub mod delivery;
mod followup;
mod route;
pub mod startup;

pub use startup::Distributor;
