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
    // Holder, message and status in one update.
    sqlx::query("UPDATE cases SET holder_unit = $2, reporter_message = $3, status = 'routed', updated_at = $4 WHERE id = $1")
        .bind(case.id)
        .bind(assignee.as_str())
        .bind(&message)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    // The first routing has no earlier assignee to retire.
    if reason != Reason::Routed {
        sqlx::query("UPDATE assignments SET active = false WHERE case_id = $1 AND role = 'assignee' AND active")
            .bind(case.id)
            .execute(&mut *tx)
            .await?;
    }
    // The deadline the unit is given is the one the SLA monitor watches: the clock recorded
    // with this very transition.
    let clock = ctx
        .log(
            tx,
            case.id,
            case.tracking()?,
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
    let recipients: Vec<(&UnitCode, Role)> = std::iter::once((assignee, Role::Assignee))
        .chain(tembusan.iter().map(|u| (u, Role::Tembusan)))
        .collect();
    let units: Vec<&str> = recipients.iter().map(|(u, _)| u.as_str()).collect();
    let roles: Vec<&str> = recipients.iter().map(|(_, r)| r.as_str()).collect();
    // How many deliveries each recipient already had, in one query: the next one's sequence
    // number makes its message id.
    let previous: Vec<i64> = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM assignments a WHERE a.case_id = $1 AND a.unit = r.unit AND a.role = r.role)
         FROM UNNEST($2::text[], $3::text[]) WITH ORDINALITY AS r(unit, role, ord) ORDER BY r.ord",
    )
    .bind(case.id)
    .bind(&units)
    .bind(&roles)
    .fetch_all(&mut *tx)
    .await?;
    let mut messages = Vec::with_capacity(recipients.len());
    let mut ids = Vec::with_capacity(recipients.len());
    for ((unit, role), prev) in recipients.iter().zip(previous) {
        let msg = UnitCaseV1::build(
            &content,
            Delivery {
                unit,
                role: *role,
                reason,
                assignee,
                sequence: prev + 1,
                due_at,
                at: now,
            },
        );
        ids.push(msg.message_id);
        messages.push(Outgoing::json(
            exchange::UNITS,
            msg.routing_key(),
            msg.message_id,
            &msg,
        ));
    }
    sqlx::query(
        "INSERT INTO assignments (case_id, unit, role, message_id, assigned_at)
         SELECT $1, u, r, m, $5 FROM UNNEST($2::text[], $3::text[], $4::uuid[]) AS t(u, r, m)",
    )
    .bind(case.id)
    .bind(&units)
    .bind(&roles)
    .bind(&ids)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    outbox::enqueue(tx, &messages).await?;
    metrics::counter!("lapor_unit_deliveries_total", "reason" => format!("{reason:?}").to_lowercase()).increment(messages.len() as u64);
    Ok(due_at)
}
