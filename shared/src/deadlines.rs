//! Each open case's deadline row (`case_deadlines`), kept in step with its timeline in the
//! same transaction as every timeline entry: the deadline can never lag the state. The SLA
//! monitor reads these rows through the index on `next_check_at`.

use crate::data::ReferenceData;
use crate::sla::{self, Clock, Policy, Step};
use crate::store;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::collections::{HashMap, HashSet};
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
    let mut clocks = store_clocks(
        conn,
        &[(case_id, steps)],
        &HashMap::new(),
        reference,
        policy,
        now,
    )
    .await?;
    Ok(clocks.remove(&case_id).flatten())
}

/// [`store_clock`] for many cases, in at most three statements: the notices already sent
/// (for the cases `known` lacks: it holds every notice sent for each case it names), the
/// rows removed, the rows written. Each case appears once in `timelines`.
pub async fn store_clocks(
    conn: &mut PgConnection,
    timelines: &[(Uuid, &[Step])],
    known: &HashMap<Uuid, Vec<store::SentNotice>>,
    reference: &ReferenceData,
    policy: &Policy,
    now: DateTime<Utc>,
) -> sqlx::Result<HashMap<Uuid, Option<Clock>>> {
    let clocks: Vec<(Uuid, Option<Clock>, bool)> = timelines
        .iter()
        .map(|(id, steps)| {
            let clock = sla::current_clock(steps, &reference.calendar, policy, &reference.units);
            // A brand-new clock has sent nothing yet; no need to look.
            (*id, clock, steps.len() > 1)
        })
        .collect();

    let ended: Vec<Uuid> = clocks
        .iter()
        .filter(|(_, c, _)| c.is_none())
        .map(|(id, _, _)| *id)
        .collect();
    if !ended.is_empty() {
        sqlx::query("DELETE FROM case_deadlines WHERE case_id = ANY($1)")
            .bind(&ended)
            .execute(&mut *conn)
            .await?;
    }

    let mut sent: HashMap<Uuid, HashSet<String>> = HashMap::new();
    let mut asked: Vec<(Uuid, &Clock)> = Vec::new();
    for (id, clock, look) in &clocks {
        let Some(clock) = clock.as_ref().filter(|_| *look) else {
            continue;
        };
        match known.get(id) {
            // Only the notices of the clock now running count.
            Some(notices) => {
                let of_clock = notices
                    .iter()
                    .filter(|n| n.clock == clock.kind.as_str() && n.cycle == clock.cycle as i32)
                    .map(|n| n.notice.clone());
                sent.entry(*id).or_default().extend(of_clock);
            }
            None => asked.push((*id, clock)),
        }
    }
    if !asked.is_empty() {
        let ids: Vec<Uuid> = asked.iter().map(|(id, _)| *id).collect();
        let kinds: Vec<&str> = asked.iter().map(|(_, c)| c.kind.as_str()).collect();
        let cycles: Vec<i32> = asked.iter().map(|(_, c)| c.cycle as i32).collect();
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT n.case_id, n.notice FROM sla_notices n
             JOIN UNNEST($1::uuid[], $2::text[], $3::int[]) AS t(case_id, clock, cycle)
               ON n.case_id = t.case_id AND n.clock = t.clock AND n.cycle = t.cycle",
        )
        .bind(&ids)
        .bind(&kinds)
        .bind(&cycles)
        .fetch_all(&mut *conn)
        .await?;
        for (id, notice) in rows {
            sent.entry(id).or_default().insert(notice);
        }
    }

    let running: Vec<(Uuid, &Clock)> = clocks
        .iter()
        .filter_map(|(id, c, _)| c.as_ref().map(|c| (*id, c)))
        .collect();
    if !running.is_empty() {
        let none = HashSet::new();
        let ids: Vec<Uuid> = running.iter().map(|(id, _)| *id).collect();
        let kinds: Vec<&str> = running.iter().map(|(_, c)| c.kind.as_str()).collect();
        let cycles: Vec<i32> = running.iter().map(|(_, c)| c.cycle as i32).collect();
        let holders: Vec<&str> = running.iter().map(|(_, c)| c.holder.as_str()).collect();
        let zones: Vec<&str> = running.iter().map(|(_, c)| c.zone.name()).collect();
        let started: Vec<DateTime<Utc>> = running.iter().map(|(_, c)| c.started_at).collect();
        let budgets: Vec<i64> = running.iter().map(|(_, c)| c.budget_secs).collect();
        let used: Vec<i64> = running.iter().map(|(_, c)| c.used_secs).collect();
        let is_running: Vec<bool> = running.iter().map(|(_, c)| c.running()).collect();
        let due: Vec<Option<DateTime<Utc>>> = running
            .iter()
            .map(|(_, c)| c.due_at(&reference.calendar))
            .collect();
        let next: Vec<Option<DateTime<Utc>>> = running
            .iter()
            .map(|(id, c)| next_check(c, reference, policy, sent.get(id).unwrap_or(&none)))
            .collect();
        sqlx::query(
            "INSERT INTO case_deadlines (case_id, clock, cycle, holder_unit, zone, started_at, budget_secs, used_secs, running, due_at, next_check_at, updated_at)
             SELECT *, $12 FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::timestamptz[],
                                       $7::bigint[], $8::bigint[], $9::bool[], $10::timestamptz[], $11::timestamptz[])
             ON CONFLICT (case_id) DO UPDATE SET clock = EXCLUDED.clock, cycle = EXCLUDED.cycle,
                 holder_unit = EXCLUDED.holder_unit, zone = EXCLUDED.zone, started_at = EXCLUDED.started_at,
                 budget_secs = EXCLUDED.budget_secs, used_secs = EXCLUDED.used_secs, running = EXCLUDED.running,
                 due_at = EXCLUDED.due_at, next_check_at = EXCLUDED.next_check_at, updated_at = EXCLUDED.updated_at",
        )
        .bind(&ids)
        .bind(&kinds)
        .bind(&cycles)
        .bind(&holders)
        .bind(&zones)
        .bind(&started)
        .bind(&budgets)
        .bind(&used)
        .bind(&is_running)
        .bind(&due)
        .bind(&next)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(clocks.into_iter().map(|(id, c, _)| (id, c)).collect())
}

/// Recomputes a case's deadline row from its stored timeline.
pub async fn refresh(
    conn: &mut PgConnection,
    case_id: Uuid,
    reference: &ReferenceData,
    policy: &Policy,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Clock>> {
    let mut clocks = refresh_many(conn, &[case_id], reference, policy, now).await?;
    Ok(clocks.remove(&case_id).flatten())
}

/// Recomputes the deadline rows of many cases from their stored timelines: one query reads
/// every timeline, [`store_clocks`] writes.
pub async fn refresh_many(
    conn: &mut PgConnection,
    case_ids: &[Uuid],
    reference: &ReferenceData,
    policy: &Policy,
    now: DateTime<Utc>,
) -> sqlx::Result<HashMap<Uuid, Option<Clock>>> {
    refresh_from(
        conn,
        case_ids,
        store::ReadBack::default(),
        reference,
        policy,
        now,
    )
    .await
}

/// [`refresh_many`] with what `store::log_many_reading` read back: reads only the timelines
/// and notices of the cases in `case_ids` that `read` lacks.
pub async fn refresh_from(
    conn: &mut PgConnection,
    case_ids: &[Uuid],
    read: store::ReadBack,
    reference: &ReferenceData,
    policy: &Policy,
    now: DateTime<Utc>,
) -> sqlx::Result<HashMap<Uuid, Option<Clock>>> {
    let store::ReadBack { mut steps, notices } = read;
    let mut ids = case_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let missing: Vec<Uuid> = ids
        .iter()
        .copied()
        .filter(|id| !steps.contains_key(id))
        .collect();
    if !missing.is_empty() {
        steps.extend(store::steps_many(conn, &missing).await?);
    }
    let timelines: Vec<(Uuid, &[Step])> = ids
        .iter()
        .map(|id| (*id, steps.get(id).map_or(&[][..], Vec::as_slice)))
        .collect();
    store_clocks(conn, &timelines, &notices, reference, policy, now).await
}
