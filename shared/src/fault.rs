//! Fault injection for `make chaos`: the process aborts, as if SIGKILLed, at the two moments
//! where a crash is hardest to survive:
//! - `after_commit`: a consumer has committed its transaction but not acknowledged the message
//!   (the broker redelivers; the inbox must make it a no-op);
//! - `before_confirm`: the relay has published but the broker has not confirmed (the rows stay
//!   in the outbox and are published again under the same message ids).
//!
//! Off unless `LAPOR_FAULTS` is set, e.g. `LAPOR_FAULTS=after_commit:0.002,before_confirm:0.002`
//! (probability per passage). A service with faults enabled says so loudly at start-up.

use rand::Rng;
use std::collections::HashMap;
use std::sync::OnceLock;

static FAULTS: OnceLock<HashMap<String, f64>> = OnceLock::new();

fn faults() -> &'static HashMap<String, f64> {
    FAULTS.get_or_init(|| {
        std::env::var("LAPOR_FAULTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once(':'))
            .filter_map(|(k, v)| {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .map(|p| (k.trim().to_owned(), p))
            })
            .collect()
    })
}

/// Warns when fault injection is on (called once at start-up).
pub fn announce() {
    if !faults().is_empty() {
        tracing::warn!(faults = ?faults(), "FAULT INJECTION ENABLED (LAPOR_FAULTS): this process will abort on purpose");
    }
}

/// Aborts the process with the configured probability for `point`.
pub fn point(point: &str) {
    if let Some(p) = faults().get(point)
        && rand::rng().random_bool(p.clamp(0.0, 1.0))
    {
        eprintln!("fault injection: aborting at {point}");
        std::process::abort();
    }
}
