//! Handing a case to a unit: the holder changes, the timeline says so, and the messages for
//! the assignee and the copies go into the outbox in the same transaction.

use chrono::{DateTime, Utc};
use lapor_shared::db::outbox::{self, Outgoing};
use lapor_shared::domain::{CaseStatus, UnitCode};
use lapor_shared::messages::{Delivery, Reason, Role, UnitCaseV1, exchange};
use lapor_shared::service::Context;
use lapor_shared::store::{self, CaseRow, Transition};
use sqlx::PgConnection;

pub const ACTOR: &str = "distributor";

/// Gives the case to `assignee` (copies to `tembusan`), recording `event` on the timeline.
/// Returns the assignee's follow-up deadline.
#[allow(clippy::too_many_arguments)]
pub async fn deliver(
    tx: &mut PgConnection,
    ctx: &Context,
    case: &CaseRow,
    assignee: &UnitCode,
    tembusan: &[UnitCode],
    reason: Reason,
    event: &'static str,
    note: String,
    actor: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<DateTime<Utc>> {
    let unit_name = ctx
        .reference
        .units
        .get(assignee)
        .map_or_else(|| assignee.to_string(), |u| u.name.clone());
    let message = ctx
        .reference
        .answers
        .message("routed", &[("unit", &unit_name)]);
    sqlx::query("UPDATE cases SET holder_unit = $2, reporter_message = $3 WHERE id = $1")
        .bind(case.id)
        .bind(assignee.as_str())
        .bind(&message)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE assignments SET active = false WHERE case_id = $1 AND role = 'assignee' AND active",
    )
    .bind(case.id)
    .execute(&mut *tx)
    .await?;
    // The deadline the unit is given is the one the SLA monitor watches: the clock recorded
    // with this very transition.
    let clock = ctx
        .record(
            tx,
            case,
            &Transition {
                event,
                status: CaseStatus::Routed,
                unit: Some(assignee),
                actor,
                note: Some(note),
                at: now,
            },
        )
        .await?;
    let due_at = clock
        .and_then(|c| c.due_at(&ctx.reference.calendar))
        .unwrap_or(now);

    let content = store::content(tx, case).await?;
    let mut messages = Vec::new();
    let recipients = std::iter::once((assignee, Role::Assignee))
        .chain(tembusan.iter().map(|u| (u, Role::Tembusan)));
    for (unit, role) in recipients {
        let sequence: i64 = sqlx::query_scalar(
            "SELECT count(*) + 1 FROM assignments WHERE case_id = $1 AND unit = $2 AND role = $3",
        )
        .bind(case.id)
        .bind(unit.as_str())
        .bind(role.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let msg = UnitCaseV1::build(
            &content,
            Delivery {
                unit,
                role,
                reason,
                assignee,
                sequence,
                due_at,
                at: now,
            },
        );
        sqlx::query("INSERT INTO assignments (case_id, unit, role, message_id, assigned_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(case.id)
            .bind(unit.as_str())
            .bind(role.as_str())
            .bind(msg.message_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        messages.push(Outgoing::json(
            exchange::UNITS,
            msg.routing_key(),
            msg.message_id,
            &msg,
        ));
    }
    outbox::enqueue(tx, &messages).await?;
    metrics::counter!("lapor_unit_deliveries_total", "reason" => format!("{reason:?}").to_lowercase()).increment(messages.len() as u64);
    Ok(due_at)
}
