//! Units' follow-ups (`lapor.followup.v1` on `<UNIT>.followup`). A follow-up applies only when
//! the unit holds the case and the case is with a unit; anything else is parked with the reason
//! and the case is left untouched. RabbitMQ topic permissions already stop a unit from
//! publishing under another unit's code; the handler also refuses a body whose `unit` differs
//! from the routing key, so the two can never disagree.

use crate::delivery;
use lapor_shared::amqp::consume::{HandleError, Handler, Incoming};
use lapor_shared::data::UnitKind;
use lapor_shared::domain::CaseStatus;
use lapor_shared::messages::{FollowupStatus, FollowupV1, Reason, decode};
use lapor_shared::privacy;
use lapor_shared::service::Context;
use lapor_shared::store::{self, Transition};
use sqlx::PgConnection;

pub struct FollowupHandler {
    pub ctx: Context,
}

fn park(e: impl std::fmt::Display) -> HandleError {
    HandleError::Park(e.to_string())
}

impl Handler for FollowupHandler {
    fn name(&self) -> &'static str {
        "distributor-followup"
    }

    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let f: FollowupV1 = decode(&msg.body)?;
        let expected_key = f.unit.key("followup");
        if msg.routing_key != expected_key {
            return Err(park(format!(
                "follow-up from unit {} was published with routing key {}",
                f.unit, msg.routing_key
            )));
        }
        let case = store::lock(tx, f.case_id)
            .await?
            .ok_or_else(|| park(format!("case {} does not exist", f.case_id)))?;
        if case.tracking_id != f.tracking_id.to_string() {
            return Err(park("tracking_id does not belong to case_id"));
        }
        let status = case.status().map_err(park)?;
        let holder = case.holder().map_err(park)?;
        if status != CaseStatus::Routed || holder.as_ref() != Some(&f.unit) {
            return Err(park(format!(
                "unit {} does not hold case {} (status {status}, holder {})",
                f.unit,
                f.tracking_id,
                holder.map_or("none".to_owned(), |h| h.to_string())
            )));
        }
        let now = self.ctx.clock.now();
        let unit_name = self
            .ctx
            .reference
            .units
            .get(&f.unit)
            .map_or_else(|| f.unit.to_string(), |u| u.name.clone());
        // Notes are shown to the reporter; identifiers a unit may have typed are masked.
        let note = f
            .note
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(privacy::mask_identifiers);
        let actor = format!("unit:{}", f.unit);
        let answers = &self.ctx.reference.answers;
        match f.status {
            FollowupStatus::Acknowledged | FollowupStatus::InProgress => {
                let (event, default) = if f.status == FollowupStatus::Acknowledged {
                    (
                        "acknowledged",
                        format!("{unit_name} telah menerima laporan."),
                    )
                } else {
                    (
                        "in_progress",
                        format!("{unit_name} sedang menindaklanjuti laporan."),
                    )
                };
                self.ctx
                    .record(
                        tx,
                        &case,
                        &Transition {
                            event,
                            status: CaseStatus::Routed,
                            unit: Some(&f.unit),
                            actor: &actor,
                            note: Some(note.unwrap_or(default)),
                            at: now,
                        },
                    )
                    .await
                    .map_err(HandleError::Retry)?;
            }
            FollowupStatus::Delegated => {
                let to = f
                    .delegate_to
                    .clone()
                    .ok_or_else(|| park("delegated without delegate_to"))?;
                let office =
                    self.ctx.reference.units.get(&to).ok_or_else(|| {
                        park(format!("delegate_to {to} is not a registered unit"))
                    })?;
                if office.kind != UnitKind::Upt || to == f.unit {
                    return Err(park(format!(
                        "delegate_to {to} is not a field office (UPT) other than the delegating unit"
                    )));
                }
                let text = format!(
                    "{unit_name} menugaskan {} untuk menindaklanjuti laporan.",
                    office.name
                );
                delivery::deliver(
                    tx,
                    &self.ctx,
                    &case,
                    &to,
                    &[],
                    Reason::Delegated,
                    "delegated",
                    text,
                    &actor,
                    now,
                )
                .await
                .map_err(HandleError::Retry)?;
            }
            FollowupStatus::Resolved => {
                let answer = note
                    .clone()
                    .unwrap_or_else(|| answers.message("resolved_default", &[]));
                sqlx::query("UPDATE cases SET reporter_message = $2 WHERE id = $1")
                    .bind(case.id)
                    .bind(&answer)
                    .execute(&mut *tx)
                    .await?;
                self.ctx
                    .record(
                        tx,
                        &case,
                        &Transition {
                            event: "resolved",
                            status: CaseStatus::Resolved,
                            unit: Some(&f.unit),
                            actor: &actor,
                            note: Some(answer),
                            at: now,
                        },
                    )
                    .await
                    .map_err(HandleError::Retry)?;
            }
            FollowupStatus::Returned => {
                let message = answers.message("in_review", &[]);
                sqlx::query(
                    "UPDATE cases SET holder_unit = NULL, reporter_message = $2 WHERE id = $1",
                )
                .bind(case.id)
                .bind(&message)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE assignments SET active = false WHERE case_id = $1 AND active")
                    .bind(case.id)
                    .execute(&mut *tx)
                    .await?;
                let text = format!(
                    "{unit_name} mengembalikan laporan kepada pengelola pengaduan untuk ditelaah ulang.{}",
                    note.map(|n| format!(" Catatan: {n}")).unwrap_or_default()
                );
                self.ctx
                    .record(
                        tx,
                        &case,
                        &Transition {
                            event: "returned",
                            status: CaseStatus::InReview,
                            unit: Some(&f.unit),
                            actor: &actor,
                            note: Some(text),
                            at: now,
                        },
                    )
                    .await
                    .map_err(HandleError::Retry)?;
            }
        }
        metrics::counter!("lapor_followups_total", "status" => f.status.as_str()).increment(1);
        Ok(())
    }
}
