//! `case.verified` → the unit that must act, or the normative answer; a batch of events at a
//! time, with the same few statements whatever its size.

use crate::delivery::{self, ACTOR, Handover};
use lapor_shared::amqp::consume::{self, BatchHandler, HandleError, Incoming, Verdict};
use lapor_shared::data::Disposition;
use lapor_shared::domain::CaseStatus;
use lapor_shared::messages::{CaseEventV1, Reason};
use lapor_shared::service::Context;
use lapor_shared::store::{self, CaseRow, Entry, Transition};
use sqlx::PgConnection;
use std::collections::HashSet;
use uuid::Uuid;

pub struct RouteHandler {
    pub ctx: Context,
}

/// What a verified case needs.
enum Plan<'a> {
    /// No field follow-up: the normative answer closes the matter.
    Answer { case: &'a CaseRow, answer: String },
    /// To the unit that must act, with copies to the field offices.
    Route {
        case: &'a CaseRow,
        disposition: Disposition,
    },
}

impl RouteHandler {
    /// What to do with one verified case; `Err` is a reason to park its message.
    fn plan<'a>(&self, case: &'a CaseRow) -> Result<Plan<'a>, String> {
        let e = |e: store::Corrupt| e.to_string();
        let kind = case
            .decided_kind()
            .map_err(e)?
            .ok_or("verified case has no kind")?;
        let category = case.decided_category().map_err(e)?;
        if !case.needs_followup.unwrap_or(false) {
            let answer = self.ctx.reference.answers.normative(category, kind);
            return Ok(Plan::Answer { case, answer });
        }
        let category = category.ok_or("case needing follow-up has no category")?;
        let d = self.ctx.reference.routing.dispose(
            category,
            case.province().map_err(e)?,
            case.regency().map_err(e)?,
            &self.ctx.reference.units,
        );
        // A confidential report is seen by the unit that must act and by nobody else: no
        // copies to field offices.
        let disposition = if case.confidential {
            Disposition {
                tembusan: Vec::new(),
                ..d
            }
        } else {
            d
        };
        Ok(Plan::Route { case, disposition })
    }
}

impl BatchHandler for RouteHandler {
    fn name(&self) -> &'static str {
        "distributor"
    }

    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        msgs: &[&Incoming],
    ) -> Result<Vec<Verdict>, HandleError> {
        let (events, mut verdicts) = consume::decode_each::<CaseEventV1>(msgs);
        let ids: Vec<Uuid> = events.iter().flatten().map(|e| e.case_id).collect();
        let cases = store::lock_many(tx, &ids).await?;

        let mut plans: Vec<(usize, Plan<'_>)> = Vec::new();
        let mut seen = HashSet::new();
        for (i, ev) in events.iter().enumerate() {
            let Some(ev) = ev else { continue };
            let Some(case) = cases.get(&ev.case_id) else {
                verdicts[i] = Err(format!("case {} does not exist", ev.case_id));
                continue;
            };
            match case.status() {
                Err(e) => verdicts[i] = Err(e.to_string()),
                // Already handled (a redelivery, or a second event for it in this batch).
                Ok(s) if s != CaseStatus::Verified || !seen.insert(case.id) => {}
                Ok(_) => match self.plan(case) {
                    Ok(p) => plans.push((i, p)),
                    Err(reason) => verdicts[i] = Err(reason),
                },
            }
        }
        let now = self.ctx.clock.now();

        // The normative answers.
        let answered: Vec<(usize, &CaseRow, &str)> = plans
            .iter()
            .filter_map(|(i, p)| match p {
                Plan::Answer { case, answer } => Some((*i, *case, answer.as_str())),
                Plan::Route { .. } => None,
            })
            .collect();
        if !answered.is_empty() {
            let mut entries = Vec::with_capacity(answered.len());
            for (i, case, _) in &answered {
                match case.tracking() {
                    Ok(tid) => entries.push(msgs[*i].span.in_scope(|| {
                        Entry::new(case.id, tid, Transition {
                            event: "answered",
                            status: CaseStatus::Answered,
                            unit: None,
                            actor: ACTOR,
                            note: Some("Jawaban disampaikan kepada pelapor; tidak memerlukan tindak lanjut lapangan.".into()),
                            at: now,
                        })
                    })),
                    Err(e) => verdicts[*i] = Err(e.to_string()),
                }
            }
            let ids: Vec<Uuid> = entries.iter().map(|e| e.case_id).collect();
            let texts: Vec<&str> = answered
                .iter()
                .filter(|(_, c, _)| ids.contains(&c.id))
                .map(|(_, _, a)| *a)
                .collect();
            sqlx::query(
                "UPDATE cases c SET reporter_message = t.answer, status = 'answered', updated_at = $1
                 FROM UNNEST($2::uuid[], $3::text[]) AS t(id, answer) WHERE c.id = t.id",
            )
            .bind(now)
            .bind(&ids)
            .bind(&texts)
            .execute(&mut *tx)
            .await?;
            self.ctx
                .log_many(tx, &entries)
                .await
                .map_err(HandleError::Retry)?;
            metrics::counter!("lapor_distributions_total", "outcome" => "answered")
                .increment(entries.len() as u64);
        }

        // The cases that go to a unit: what each unit may be shown, then the hand-over.
        let routed: Vec<(usize, &CaseRow, &Disposition)> = plans
            .iter()
            .filter_map(|(i, p)| match p {
                Plan::Route { case, disposition } => Some((*i, *case, disposition)),
                Plan::Answer { .. } => None,
            })
            .collect();
        if routed.is_empty() {
            return Ok(verdicts);
        }
        let rows: Vec<&CaseRow> = routed.iter().map(|(_, c, _)| *c).collect();
        let mut contents = store::content_many(tx, &rows).await?;
        let mut ready = Vec::with_capacity(routed.len());
        for (i, case, d) in &routed {
            match contents.remove(&case.id) {
                Some(Ok(content)) => ready.push((*i, *case, *d, content)),
                Some(Err(e)) => verdicts[*i] = Err(e.to_string()),
                None => verdicts[*i] = Err(format!("case {} has no identity record", case.id)),
            }
        }
        let handovers: Vec<Handover<'_>> = ready
            .iter()
            .map(|(i, case, d, content)| {
                let name = self
                    .ctx
                    .reference
                    .units
                    .get(&d.assignee)
                    .map_or_else(|| d.assignee.to_string(), |u| u.name.clone());
                Handover {
                    case,
                    content,
                    assignee: &d.assignee,
                    tembusan: &d.tembusan,
                    reason: Reason::Routed,
                    event: "routed",
                    note: format!("Laporan diteruskan kepada {name} untuk ditindaklanjuti."),
                    actor: ACTOR,
                    span: msgs[*i].span.clone(),
                }
            })
            .collect();
        delivery::deliver_many(tx, &self.ctx, &handovers, now)
            .await
            .map_err(HandleError::Retry)?;
        metrics::counter!("lapor_distributions_total", "outcome" => "routed")
            .increment(handovers.len() as u64);
        for h in &handovers {
            tracing::info!(parent: &h.span, case_id = %h.case.id, unit = %h.assignee, copies = h.tembusan.len(), "case routed");
        }
        Ok(verdicts)
    }
}
