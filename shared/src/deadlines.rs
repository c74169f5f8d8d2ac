//! Each open case's deadline row (`case_deadlines`), kept in step with its timeline in the
//! same transaction as every timeline entry: the deadline can never lag the state. The SLA
//! monitor reads these rows through the index on `next_check_at`.

use crate::data::ReferenceData;
use crate::sla::{self, Clock, Policy, Step};
use crate::store;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::collections::HashSet;
use uuid::Uuid;

/// The next moment something is due for `clock`, given the notices already sent.
pub fn next_check(
    clock: &Clock,
    reference: &ReferenceData,
    policy: &Policy,
    sent: &HashSet<String>,
) -> Option<DateTime<Utc>> {
    sla::plan(clock, &reference.calendar, policy, &reference.units)
        .into_iter()
        .filter(|n| !sent.contains(&n.key))
        .map(|n| n.due_at)
        .min()
}

pub async fn sent_notices(
    conn: &mut PgConnection,
    case_id: Uuid,
    clock: &Clock,
) -> sqlx::Result<HashSet<String>> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT notice FROM sla_notices WHERE case_id = $1 AND clock = $2 AND cycle = $3",
    )
    .bind(case_id)
    .bind(clock.kind.as_str())
    .bind(clock.cycle as i32)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Writes (or removes) the deadline row of a case from the given timeline.
pub async fn store_clock(
    conn: &mut PgConnection,
    case_id: Uuid,
    steps: &[Step],
    reference: &ReferenceData,
    policy: &Policy,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Clock>> {
    let Some(clock) = sla::current_clock(steps, &reference.calendar, policy, &reference.units)
    else {
        sqlx::query("DELETE FROM case_deadlines WHERE case_id = $1")
            .bind(case_id)
            .execute(conn)
            .await?;
        return Ok(None);
    };
    // A brand-new clock has sent nothing yet; skip the lookup.
    let sent = if steps.len() <= 1 {
        HashSet::new()
    } else {
        sent_notices(conn, case_id, &clock).await?
    };
    let next = next_check(&clock, reference, policy, &sent);
    sqlx::query(
        "INSERT INTO case_deadlines (case_id, clock, cycle, holder_unit, zone, started_at, budget_secs, used_secs, running, due_at, next_check_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (case_id) DO UPDATE SET clock = $2, cycle = $3, holder_unit = $4, zone = $5, started_at = $6,
             budget_secs = $7, used_secs = $8, running = $9, due_at = $10, next_check_at = $11, updated_at = $12",
    )
    .bind(case_id)
    .bind(clock.kind.as_str())
    .bind(clock.cycle as i32)
    .bind(clock.holder.as_str())
    .bind(clock.zone.name())
    .bind(clock.started_at)
    .bind(clock.budget_secs)
    .bind(clock.used_secs)
    .bind(clock.running())
    .bind(clock.due_at(&reference.calendar))
    .bind(next)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(Some(clock))
}

/// Recomputes a case's deadline row from its stored timeline.
pub async fn refresh(
    conn: &mut PgConnection,
    case_id: Uuid,
    reference: &ReferenceData,
    policy: &Policy,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Clock>> {
    let steps = store::steps(conn, case_id).await?;
    store_clock(conn, case_id, &steps, reference, policy, now).await
}
