//! Handing a case to a unit: the holder changes, the timeline says so, and the messages for
//! the assignee and the copies go into the outbox in the same transaction. Many cases are
//! handed over with the same few statements as one.

use chrono::{DateTime, Utc};
use lapor_shared::db::outbox::{self, Outgoing};
use lapor_shared::domain::{CaseStatus, UnitCode};
use lapor_shared::messages::{CaseContent, Delivery, Reason, Role, UnitCaseV1, exchange};
use lapor_shared::service::Context;
use lapor_shared::store::{self, CaseRow, Entry, Transition};
use sqlx::PgConnection;
use uuid::Uuid;

pub const ACTOR: &str = "distributor";

/// One case given to a unit.
pub struct Handover<'a> {
    pub case: &'a CaseRow,
    pub content: &'a CaseContent,
    pub assignee: &'a UnitCode,
    /// Field offices that get a copy.
    pub tembusan: &'a [UnitCode],
    pub reason: Reason,
    /// The timeline event, and its note for the reporter.
    pub event: &'static str,
    pub note: String,
    pub actor: &'a str,
    /// The trace the unit's messages continue.
    pub span: tracing::Span,
}

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
    let content = store::content(tx, case).await?;
    let due = deliver_many(
        tx,
        ctx,
        &[Handover {
            case,
            content: &content,
            assignee,
            tembusan,
            reason,
            event,
            note,
            actor,
            span: tracing::Span::current(),
        }],
        now,
    )
    .await?;
    Ok(due.into_iter().next().unwrap_or(now))
}

/// Hands many cases over (each case once). Returns each assignee's follow-up deadline, in
/// the order given.
pub async fn deliver_many(
    tx: &mut PgConnection,
    ctx: &Context,
    handovers: &[Handover<'_>],
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<DateTime<Utc>>> {
    if handovers.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = handovers.iter().map(|h| h.case.id).collect();
    let holders: Vec<&str> = handovers.iter().map(|h| h.assignee.as_str()).collect();
    let messages: Vec<String> = handovers
        .iter()
        .map(|h| {
            let unit_name = ctx
                .reference
                .units
                .get(h.assignee)
                .map_or_else(|| h.assignee.to_string(), |u| u.name.clone());
            ctx.reference
                .answers
                .message("routed", &[("unit", &unit_name)])
        })
        .collect();
    // Every recipient of every case, and how many deliveries each already had: the next
    // one's sequence number makes its message id. Counted in the statement that sets the
    // cases' holder, message and status.
    let recipients: Vec<(usize, &UnitCode, Role)> = handovers
        .iter()
        .enumerate()
        .flat_map(|(i, h)| {
            std::iter::once((i, h.assignee, Role::Assignee))
                .chain(h.tembusan.iter().map(move |u| (i, u, Role::Tembusan)))
        })
        .collect();
    let case_ids: Vec<Uuid> = recipients.iter().map(|r| handovers[r.0].case.id).collect();
    let units: Vec<&str> = recipients.iter().map(|r| r.1.as_str()).collect();
    let roles: Vec<&str> = recipients.iter().map(|r| r.2.as_str()).collect();
    let previous: Vec<i64> = sqlx::query_scalar(
        "WITH u AS (
           UPDATE cases c SET holder_unit = t.holder, reporter_message = t.message, status = 'routed', updated_at = $1
           FROM UNNEST($2::uuid[], $3::text[], $4::text[]) AS t(id, holder, message) WHERE c.id = t.id)
         SELECT (SELECT count(*) FROM assignments a WHERE a.case_id = r.case_id AND a.unit = r.unit AND a.role = r.role)
         FROM UNNEST($5::uuid[], $6::text[], $7::text[]) WITH ORDINALITY AS r(case_id, unit, role, ord) ORDER BY r.ord",
    )
    .bind(now)
    .bind(&ids)
    .bind(&holders)
    .bind(&messages)
    .bind(&case_ids)
    .bind(&units)
    .bind(&roles)
    .fetch_all(&mut *tx)
    .await?;
    // The first routing has no earlier assignee to retire.
    let moved: Vec<Uuid> = handovers
        .iter()
        .filter(|h| h.reason != Reason::Routed)
        .map(|h| h.case.id)
        .collect();
    if !moved.is_empty() {
        sqlx::query("UPDATE assignments SET active = false WHERE case_id = ANY($1) AND role = 'assignee' AND active")
            .bind(&moved)
            .execute(&mut *tx)
            .await?;
    }
    // The deadline each unit is given is the one the SLA monitor watches: the clock recorded
    // with this very transition.
    let entries: Vec<Entry<'_>> = handovers
        .iter()
        .map(|h| {
            h.span.in_scope(|| {
                Ok::<_, anyhow::Error>(Entry::new(
                    h.case.id,
                    h.case.tracking()?,
                    Transition {
                        event: h.event,
                        status: CaseStatus::Routed,
                        unit: Some(h.assignee),
                        actor: h.actor,
                        note: Some(h.note.clone()),
                        at: now,
                    },
                ))
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let clocks = ctx.log_many(tx, &entries).await?;
    let due: Vec<DateTime<Utc>> = handovers
        .iter()
        .map(|h| {
            clocks
                .get(&h.case.id)
                .and_then(|c| c.as_ref())
                .and_then(|c| c.due_at(&ctx.reference.calendar))
                .unwrap_or(now)
        })
        .collect();

    let mut outgoing = Vec::with_capacity(recipients.len());
    let mut message_ids = Vec::with_capacity(recipients.len());
    for ((i, unit, role), prev) in recipients.iter().zip(previous) {
        let h = &handovers[*i];
        let msg = UnitCaseV1::build(
            h.content,
            Delivery {
                unit,
                role: *role,
                reason: h.reason,
                assignee: h.assignee,
                sequence: prev + 1,
                due_at: due[*i],
                at: now,
            },
        );
        message_ids.push(msg.message_id);
        outgoing.push(
            h.span.in_scope(|| {
                Outgoing::json(exchange::UNITS, msg.routing_key(), msg.message_id, &msg)
            }),
        );
    }
    // The assignments and their messages in one statement.
    let columns = outbox::Columns::new(&outgoing);
    let written: Vec<outbox::OutboxRow> = columns
        .bind(sqlx::query_as(concat!(
            "WITH a AS (
               INSERT INTO assignments (case_id, unit, role, message_id, assigned_at)
               SELECT c, u, r, m, $11 FROM UNNEST($7::uuid[], $8::text[], $9::text[], $10::uuid[]) AS t(c, u, r, m)) ",
            lapor_shared::outbox_insert!()
        )))
        .bind(&case_ids)
        .bind(&units)
        .bind(&roles)
        .bind(&message_ids)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
    outbox::collect(written);
    for h in handovers {
        metrics::counter!("lapor_unit_deliveries_total", "reason" => format!("{:?}", h.reason).to_lowercase())
            .increment(1 + h.tembusan.len() as u64);
    }
    Ok(due)
}
