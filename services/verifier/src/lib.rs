//! Verifier: step 3 of the procedure. Consumes received (and supplemented, and reviewed)
//! cases, checks requirements, detects duplicates, classifies kind, scope and category, and
//! moves each case on: verified, needs_info, in_review, out_of_scope or duplicate.

pub mod classify;
pub mod cli;
pub mod eval;
mod handler;
pub mod startup;
pub mod verify;

pub use startup::Verifier;
