//! The verifier's command-line tools: `classify` (JSON lines in, JSON lines out) and `eval`.

use crate::classify::{Classifier, Decision};
use crate::eval;
use lapor_shared::data::RoutingTable;
use lapor_shared::domain::{Category, Channel, Kind};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

#[derive(Deserialize)]
struct Input {
    id: serde_json::Value,
    #[serde(default)]
    channel: Option<String>,
    text: String,
}

#[derive(Serialize)]
struct Output {
    id: serde_json::Value,
    kind: Kind,
    in_scope: bool,
    category: Option<Category>,
    needs_followup: bool,
    confidence: f64,
    decision: Decision,
}

/// Classifies each input line. A bad line gets an `{"id", "error"}` line in its place (so
/// outputs stay aligned with inputs) and makes the exit status 1.
pub fn classify(
    classifier: &Classifier,
    routing: &RoutingTable,
    input: impl BufRead,
    mut out: impl Write,
) -> std::io::Result<bool> {
    let mut all_ok = true;
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let result = serde_json::from_str::<Input>(&line)
            .map_err(|e| {
                format!(
                    "line {}: {}",
                    n + 1,
                    lapor_shared::privacy::scrub(&e.to_string())
                )
            })
            .and_then(|i| match &i.channel {
                Some(c) => Channel::parse(c)
                    .map(|_| i)
                    .map_err(|e| format!("line {}: channel: {e}", n + 1)),
                None => Ok(i),
            });
        match result {
            Ok(i) => {
                let c = classifier.classify(&i.text, None);
                let o = Output {
                    id: i.id,
                    kind: c.kind,
                    in_scope: c.in_scope,
                    category: c.category,
                    needs_followup: eval::needs_followup(c.kind, c.in_scope, c.category, routing),
                    confidence: c.confidence,
                    decision: c.decision,
                };
                serde_json::to_writer(&mut out, &o)?;
            }
            Err(e) => {
                all_ok = false;
                let id = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("id").cloned());
                serde_json::to_writer(&mut out, &serde_json::json!({ "id": id, "error": e }))?;
            }
        }
        out.write_all(b"\n")?;
    }
    Ok(all_ok)
}
