//! AMQP header tables ↔ plain maps, and reading RabbitMQ's `x-death` header.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use std::collections::HashMap;

pub fn to_table(map: &HashMap<String, String>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in map {
        if let Ok(key) = ShortString::try_new(k.as_str()) {
            t.insert(key, AMQPValue::LongString(LongString::from(v.as_str())));
        }
    }
    t
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The string-valued headers (trace context and our own); structured ones are skipped.
pub fn from_table(table: Option<&FieldTable>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Some(t) = table {
        for (k, v) in t.inner() {
            if let Some(s) = text(v) {
                map.insert(k.as_str().to_owned(), s);
            }
        }
    }
    map
}

/// The most recent dead-lettering recorded in `x-death`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    pub reason: String,
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    pub count: i64,
}

pub fn death(table: Option<&FieldTable>) -> Option<Death> {
    let entries = match table?.inner().get("x-death")? {
        AMQPValue::FieldArray(a) => a,
        _ => return None,
    };
    let first = entries.as_slice().iter().find_map(|v| match v {
        AMQPValue::FieldTable(t) => Some(t),
        _ => None,
    })?;
    let get = |k: &str| first.inner().get(k).and_then(text).unwrap_or_default();
    let routing_key = match first.inner().get("routing-keys") {
        Some(AMQPValue::FieldArray(keys)) => {
            keys.as_slice().iter().find_map(text).unwrap_or_default()
        }
        _ => String::new(),
    };
    let count = match first.inner().get("count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        _ => 0,
    };
    Some(Death {
        reason: get("reason"),
        queue: get("queue"),
        exchange: get("exchange"),
        routing_key,
        count,
    })
}
