//! The sweep: finds the cases whose next notice is due (through the index on
//! `case_deadlines.next_check_at`, so its cost follows what is due, not what is open), sends
//! each due notice once, and plans the next check. Any number of monitors can sweep at once:
//! each locks the case rows it takes with `SKIP LOCKED`, and the `sla_notices` key turns a
//! second attempt at the same notice into a no-op.

use chrono::{DateTime, Utc};
use lapor_shared::db::outbox::{self, Outgoing};
use lapor_shared::deadlines;
use lapor_shared::domain::{CaseStatus, TrackingId};
use lapor_shared::messages::{SlaNotice, UnitSlaV1, derived_id, exchange, schema};
use lapor_shared::service::Context;
use lapor_shared::sla::{self, Policy, Step};
use lapor_shared::store::{self, TimelineEntry, Transition};
use std::collections::HashMap;
use uuid::Uuid;

pub const ACTOR: &str = "sla-monitor";

/// What one sweep did; tests drive the monitor one sweep at a time and read this.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepOutcome {
    pub cases: usize,
    pub notices: usize,
    pub closed: usize,
}

fn note(n: &sla::PlannedNotice, unit_name: &str, clock: sla::ClockKind) -> (&'static str, String) {
    let stage = match clock {
        sla::ClockKind::Handling => "verifikasi dan penyaluran",
        _ => "tindak lanjut",
    };
    match n.notice {
        Some(SlaNotice::Reminder) => (
            "sla_reminder",
            format!(
                "Pengingat: {}% waktu {stage} telah berjalan; {unit_name} diingatkan.",
                (n.elapsed * 100.0).round()
            ),
        ),
        Some(SlaNotice::Breach) => (
            "sla_breach",
            format!("Batas waktu {stage} terlampaui; {unit_name} diberi tahu."),
        ),
        Some(SlaNotice::Escalation) => (
            "sla_escalation",
            format!("Keterlambatan {stage} dieskalasi kepada {unit_name}."),
        ),
        None => ("closed", String::new()),
    }
}

pub async fn sweep_once(
    ctx: &Context,
    policy: &Policy,
    now: DateTime<Utc>,
) -> anyhow::Result<SweepOutcome> {
    let mut tx = ctx.pool.begin().await?;
    let due: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT c.id, c.tracking_id FROM case_deadlines d JOIN cases c ON c.id = d.case_id
         WHERE d.next_check_at <= $1 ORDER BY d.next_check_at LIMIT $2 FOR UPDATE OF c SKIP LOCKED",
    )
    .bind(now)
    .bind(i64::from(ctx.settings.sla.sweep_batch))
    .fetch_all(&mut *tx)
    .await?;
    let mut out = SweepOutcome {
        cases: due.len(),
        ..Default::default()
    };
    if due.is_empty() {
        tx.commit().await?;
        return Ok(out);
    }
    let ids: Vec<Uuid> = due.iter().map(|(id, _)| *id).collect();
    let mut timelines: HashMap<Uuid, Vec<Step>> = HashMap::new();
    let rows: Vec<(Uuid, TimelineEntry)> = sqlx::query_as::<_, (Uuid, i64, DateTime<Utc>, String, String, Option<String>, String, Option<String>)>(
        "SELECT case_id, id, at, event, status, unit, actor, note FROM case_events WHERE case_id = ANY($1) ORDER BY case_id, id",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(case_id, id, at, event, status, unit, actor, note)| (case_id, TimelineEntry { id, at, event, status, unit, actor, note }))
    .collect();
    for (case_id, entry) in rows {
        if let Some(step) = entry.step() {
            timelines.entry(case_id).or_default().push(step);
        }
    }
    let reference = &ctx.reference;
    for (case_id, tracking) in &due {
        let steps = timelines.remove(case_id).unwrap_or_default();
        let Some(clock) = sla::current_clock(&steps, &reference.calendar, policy, &reference.units)
        else {
            deadlines::store_clock(&mut tx, *case_id, &steps, reference, policy, now).await?;
            continue;
        };
        let sent = deadlines::sent_notices(&mut tx, *case_id, &clock).await?;
        let tracking_id = TrackingId::parse(tracking)?;
        let plan = sla::plan(&clock, &reference.calendar, policy, &reference.units);
        let due_at = clock.due_at(&reference.calendar).unwrap_or(now);
        let mut closed = false;
        for n in plan
            .iter()
            .filter(|n| n.due_at <= now && !sent.contains(&n.key))
        {
            let inserted = sqlx::query(
                "INSERT INTO sla_notices (case_id, clock, cycle, notice, unit, sent_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(case_id)
            .bind(clock.kind.as_str())
            .bind(clock.cycle as i32)
            .bind(&n.key)
            .bind(n.recipient.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !inserted {
                continue;
            }
            let case = store::lock(&mut tx, *case_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("case {case_id} vanished"))?;
            let Some(kind) = n.notice else {
                // The reporter did not reply within the window after resolution.
                let message = reference.answers.message("closed", &[]);
                sqlx::query("UPDATE cases SET reporter_message = $2 WHERE id = $1")
                    .bind(case_id)
                    .bind(&message)
                    .execute(&mut *tx)
                    .await?;
                store::record(
                    &mut tx,
                    &case,
                    &Transition {
                        event: "closed",
                        status: CaseStatus::Closed,
                        unit: None,
                        actor: ACTOR,
                        note: Some(message),
                        at: now,
                    },
                )
                .await?;
                out.closed += 1;
                closed = true;
                break;
            };
            let msg = UnitSlaV1 {
                schema: schema::UNIT_SLA_V1.to_owned(),
                message_id: derived_id(
                    *case_id,
                    &["sla", clock.kind.as_str(), &clock.cycle.to_string(), &n.key],
                ),
                case_id: *case_id,
                tracking_id,
                occurred_at: now,
                unit: n.recipient.clone(),
                holder: clock.holder.clone(),
                notice: kind,
                clock: clock.kind.as_str().to_owned(),
                due_at,
                elapsed: n.elapsed,
                level: n.level,
            };
            outbox::enqueue(
                &mut tx,
                &[Outgoing::json(
                    exchange::UNITS,
                    n.recipient.key("sla"),
                    msg.message_id,
                    &msg,
                )],
            )
            .await?;
            let unit_name = reference
                .units
                .get(&n.recipient)
                .map_or_else(|| n.recipient.to_string(), |u| u.name.clone());
            let (event, text) = note(n, &unit_name, clock.kind);
            let status = case.status()?;
            store::log(
                &mut tx,
                *case_id,
                tracking_id,
                &Transition {
                    event,
                    status,
                    unit: Some(&n.recipient),
                    actor: ACTOR,
                    note: Some(text),
                    at: now,
                },
            )
            .await?;
            metrics::counter!("lapor_sla_notices_total", "notice" => event, "clock" => clock.kind.as_str()).increment(1);
            out.notices += 1;
        }
        let steps = if closed {
            store::steps(&mut tx, *case_id).await?
        } else {
            steps
        };
        deadlines::store_clock(&mut tx, *case_id, &steps, reference, policy, now).await?;
    }
    tx.commit().await?;
    Ok(out)
}
