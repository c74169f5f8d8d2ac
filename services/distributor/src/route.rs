//! `case.verified` → the unit that must act, or the normative answer.

use crate::delivery::{self, ACTOR};
use lapor_shared::amqp::consume::{HandleError, Handler, Incoming};
use lapor_shared::domain::CaseStatus;
use lapor_shared::messages::{CaseEventV1, Reason, decode};
use lapor_shared::service::Context;
use lapor_shared::store::{self, Transition};
use sqlx::PgConnection;

pub struct RouteHandler {
    pub ctx: Context,
}

fn park(e: impl std::fmt::Display) -> HandleError {
    HandleError::Park(e.to_string())
}

impl Handler for RouteHandler {
    fn name(&self) -> &'static str {
        "distributor"
    }

    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let ev: CaseEventV1 = decode(&msg.body)?;
        let case = store::lock(tx, ev.case_id)
            .await?
            .ok_or_else(|| park(format!("case {} does not exist", ev.case_id)))?;
        if case.status().map_err(park)? != CaseStatus::Verified {
            return Ok(());
        }
        let now = self.ctx.clock.now();
        let kind = case
            .decided_kind()
            .map_err(park)?
            .ok_or_else(|| park("verified case has no kind"))?;
        let category = case.decided_category().map_err(park)?;
        if !case.needs_followup.unwrap_or(false) {
            let answer = self.ctx.reference.answers.normative(category, kind);
            sqlx::query("UPDATE cases SET reporter_message = $2 WHERE id = $1")
                .bind(case.id)
                .bind(&answer)
                .execute(&mut *tx)
                .await?;
            self.ctx.record(
                tx,
                &case,
                &Transition {
                    event: "answered",
                    status: CaseStatus::Answered,
                    unit: None,
                    actor: ACTOR,
                    note: Some("Jawaban disampaikan kepada pelapor; tidak memerlukan tindak lanjut lapangan.".into()),
                    at: now,
                },
            )
            .await
            .map_err(HandleError::Retry)?;
            metrics::counter!("lapor_distributions_total", "outcome" => "answered").increment(1);
            return Ok(());
        }
        let category = category.ok_or_else(|| park("case needing follow-up has no category"))?;
        let d = self.ctx.reference.routing.dispose(
            category,
            case.province().map_err(park)?,
            case.regency().map_err(park)?,
            &self.ctx.reference.units,
        );
        // A confidential report is seen by the unit that must act and by nobody else: no
        // copies to field offices.
        let d = if case.confidential {
            lapor_shared::data::Disposition {
                tembusan: Vec::new(),
                ..d
            }
        } else {
            d
        };
        let name = self
            .ctx
            .reference
            .units
            .get(&d.assignee)
            .map_or_else(|| d.assignee.to_string(), |u| u.name.clone());
        let note = format!("Laporan diteruskan kepada {name} untuk ditindaklanjuti.");
        delivery::deliver(
            tx,
            &self.ctx,
            &case,
            &d.assignee,
            &d.tembusan,
            Reason::Routed,
            "routed",
            note,
            ACTOR,
            now,
        )
        .await
        .map_err(HandleError::Retry)?;
        metrics::counter!("lapor_distributions_total", "outcome" => "routed").increment(1);
        tracing::info!(case_id = %case.id, unit = %d.assignee, copies = d.tembusan.len(), "case routed");
        Ok(())
    }
}
