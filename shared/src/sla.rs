//! Stage clocks, computed from a case's timeline. Pure: the same timeline, calendar and policy
//! always give the same clock, so recomputing after any event, a restart or a calendar change
//! is always right, and events arriving out of order cannot confuse it.
//!
//! Three clocks, each counted in working time (seconds that fall on working days in the
//! holder's time zone):
//! - **handling**: the ministry's own work (receive → verify → distribute), held by the
//!   complaint desk; runs while the case is received, in review or verified; paused while it
//!   waits on the reporter (`needs_info`).
//! - **followup**: the unit's work, held by whoever holds the case (delegation moves it to the
//!   field office, in that office's zone); runs while routed. Reassignment and delegation keep
//!   the time already used.
//! - **autoclose**: after each resolution, the window for the reporter to reply.
//!
//! A clock's budget is fixed when it first starts: the working time from that moment to the
//! deadline rule's end (23:59:59 local on the N-th working day after). When it resumes after a
//! pause, what is left of the budget counts on from the resumption.

use crate::config::SlaSettings;
use crate::data::{UnitRegistry, WorkingCalendar};
use crate::domain::{CaseStatus, UnitCode};
use crate::messages::SlaNotice;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClockKind {
    Handling,
    Followup,
    Autoclose,
}

impl ClockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClockKind::Handling => "handling",
            ClockKind::Followup => "followup",
            ClockKind::Autoclose => "autoclose",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ClockKind::Handling,
            ClockKind::Followup,
            ClockKind::Autoclose,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Which clock runs in a status; `None` when none does (paused or finished).
    pub fn for_status(s: CaseStatus) -> Option<Self> {
        match s {
            CaseStatus::Received | CaseStatus::InReview | CaseStatus::Verified => {
                Some(ClockKind::Handling)
            }
            CaseStatus::Routed => Some(ClockKind::Followup),
            CaseStatus::Resolved => Some(ClockKind::Autoclose),
            CaseStatus::NeedsInfo
            | CaseStatus::Answered
            | CaseStatus::OutOfScope
            | CaseStatus::Duplicate
            | CaseStatus::Closed => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub zone: Tz,
    pub handling_days: u32,
    pub followup_days: u32,
    pub autoclose_days: u32,
    pub reminders: Vec<f64>,
    pub escalation_days: Vec<u32>,
}

impl Policy {
    pub fn from_settings(s: &SlaSettings) -> Self {
        Self {
            zone: s.zone.parse().unwrap_or(chrono_tz::Asia::Jakarta),
            handling_days: s.handling_working_days,
            followup_days: s.followup_working_days,
            autoclose_days: s.autoclose_working_days,
            reminders: s.reminders.clone(),
            escalation_days: s.escalation_working_days.clone(),
        }
    }

    fn days(&self, k: ClockKind) -> u32 {
        match k {
            ClockKind::Handling => self.handling_days,
            ClockKind::Followup => self.followup_days,
            ClockKind::Autoclose => self.autoclose_days,
        }
    }
}

/// What the clock needs from a timeline entry.
#[derive(Debug, Clone)]
pub struct Step {
    pub at: DateTime<Utc>,
    pub event: String,
    pub status: CaseStatus,
    pub unit: Option<UnitCode>,
}

/// The clock that matters now: the one running, or the one that was running when the case
/// paused.
#[derive(Debug, Clone, PartialEq)]
pub struct Clock {
    pub kind: ClockKind,
    pub cycle: u32,
    pub holder: UnitCode,
    pub zone: Tz,
    pub started_at: DateTime<Utc>,
    pub budget_secs: i64,
    pub used_secs: i64,
    /// Set while running: the moment it last (re)started.
    pub running_since: Option<DateTime<Utc>>,
    /// When the budget ran out, if it has: the deadline stays there, whatever happens later.
    pub exhausted_at: Option<DateTime<Utc>>,
}

impl Clock {
    pub fn running(&self) -> bool {
        self.running_since.is_some()
    }

    /// When the budget runs (or ran) out, if the clock is running.
    pub fn due_at(&self, cal: &WorkingCalendar) -> Option<DateTime<Utc>> {
        let since = self.running_since?;
        Some(self.exhausted_at.unwrap_or_else(|| {
            cal.advance(since, (self.budget_secs - self.used_secs).max(0), self.zone)
        }))
    }

    /// When `fraction` of the budget will have been used.
    fn at_fraction(&self, cal: &WorkingCalendar, fraction: f64) -> Option<DateTime<Utc>> {
        let since = self.running_since?;
        let target = (self.budget_secs as f64 * fraction).round() as i64;
        Some(cal.advance(since, (target - self.used_secs).max(0), self.zone))
    }
}

#[derive(Debug, Default)]
struct Acc {
    started_at: Option<DateTime<Utc>>,
    exhausted_at: Option<DateTime<Utc>>,
    budget: i64,
    used: i64,
    cycle: u32,
    holder: Option<UnitCode>,
    zone: Option<Tz>,
}

/// Replays a timeline (in order) and returns the current clock, if any clock ever ran and the
/// case is not finished.
pub fn current_clock(
    steps: &[Step],
    cal: &WorkingCalendar,
    policy: &Policy,
    units: &UnitRegistry,
) -> Option<Clock> {
    let desk = units.complaint_desk().clone();
    let zone_of = |u: &UnitCode| units.get(u).map_or(policy.zone, |x| x.zone);
    let mut clocks: [Acc; 3] = Default::default();
    let idx = |k: ClockKind| k as usize;
    let mut current: Option<(ClockKind, DateTime<Utc>)> = None;
    let mut last: Option<ClockKind> = None;
    let mut holder: Option<UnitCode> = None;

    for s in steps {
        if let Some(u) = &s.unit
            && matches!(s.status, CaseStatus::Routed | CaseStatus::Resolved)
        {
            holder = Some(u.clone());
        }
        // Stop the running clock at this step; it restarts below if it still runs.
        if let Some((k, since)) = current.take() {
            let acc = &mut clocks[idx(k)];
            let zone = acc.zone.unwrap_or(policy.zone);
            let secs = cal.working_seconds(since, s.at, zone);
            if acc.exhausted_at.is_none() && acc.used + secs >= acc.budget {
                acc.exhausted_at = Some(cal.advance(since, acc.budget - acc.used, zone));
            }
            acc.used += secs;
        }
        let Some(k) = ClockKind::for_status(s.status) else {
            if s.status.is_final() {
                last = None;
            }
            continue;
        };
        let who = match k {
            ClockKind::Handling => desk.clone(),
            _ => holder.clone().unwrap_or_else(|| desk.clone()),
        };
        let zone = if k == ClockKind::Handling {
            policy.zone
        } else {
            zone_of(&who)
        };
        let acc = &mut clocks[idx(k)];
        let fresh_cycle = k == ClockKind::Autoclose && s.event == "resolved";
        if acc.started_at.is_none() || fresh_cycle {
            let deadline = cal.deadline(s.at, policy.days(k), zone);
            *acc = Acc {
                started_at: Some(s.at),
                exhausted_at: None,
                budget: cal.working_seconds(s.at, deadline, zone),
                used: 0,
                cycle: acc.cycle + 1,
                holder: None,
                zone: None,
            };
        }
        acc.holder = Some(who);
        acc.zone = Some(zone);
        current = Some((k, s.at));
        last = Some(k);
    }
    let k = last?;
    let acc = &clocks[idx(k)];
    Some(Clock {
        kind: k,
        cycle: acc.cycle,
        holder: acc.holder.clone()?,
        zone: acc.zone?,
        started_at: acc.started_at?,
        budget_secs: acc.budget,
        used_secs: acc.used,
        running_since: current.map(|(_, since)| since),
        exhausted_at: acc.exhausted_at,
    })
}

/// A notice the monitor must send when its time comes.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedNotice {
    /// Unique within (case, clock, cycle): `reminder_50`, `breach`, `escalation_1`, `autoclose`.
    pub key: String,
    pub notice: Option<SlaNotice>,
    pub due_at: DateTime<Utc>,
    pub recipient: UnitCode,
    pub elapsed: f64,
    pub level: u32,
}

/// Every notice of a running clock, in time order. A paused clock plans nothing.
pub fn plan(
    clock: &Clock,
    cal: &WorkingCalendar,
    policy: &Policy,
    units: &UnitRegistry,
) -> Vec<PlannedNotice> {
    let Some(due) = clock.due_at(cal) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if clock.kind == ClockKind::Autoclose {
        out.push(PlannedNotice {
            key: "autoclose".into(),
            notice: None,
            due_at: due,
            recipient: clock.holder.clone(),
            elapsed: 1.0,
            level: 0,
        });
        return out;
    }
    for f in &policy.reminders {
        if let Some(at) = clock.at_fraction(cal, *f) {
            out.push(PlannedNotice {
                key: format!("reminder_{}", (f * 100.0).round() as u32),
                notice: Some(SlaNotice::Reminder),
                due_at: at,
                recipient: clock.holder.clone(),
                elapsed: *f,
                level: 0,
            });
        }
    }
    out.push(PlannedNotice {
        key: "breach".into(),
        notice: Some(SlaNotice::Breach),
        due_at: due,
        recipient: clock.holder.clone(),
        elapsed: 1.0,
        level: 0,
    });
    let chain = units.escalation_chain(&clock.holder);
    for (i, (days, up)) in policy.escalation_days.iter().zip(chain).enumerate() {
        out.push(PlannedNotice {
            key: format!("escalation_{}", i + 1),
            notice: Some(SlaNotice::Escalation),
            due_at: cal.deadline(due, *days, clock.zone),
            recipient: up,
            elapsed: 1.0,
            level: i as u32 + 1,
        });
    }
    out.sort_by_key(|n| n.due_at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ReferenceData;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    fn step(at: &str, event: &str, status: CaseStatus, unit: Option<&str>) -> Step {
        Step {
            at: t(at),
            event: event.into(),
            status,
            unit: unit.map(|u| UnitCode::parse(u).expect("valid")),
        }
    }

    fn policy() -> Policy {
        Policy {
            zone: chrono_tz::Asia::Jakarta,
            handling_days: 3,
            followup_days: 5,
            autoclose_days: 10,
            reminders: vec![0.5, 0.8],
            escalation_days: vec![1, 3],
        }
    }

    #[test]
    fn the_handling_clock_ends_on_the_third_working_day() {
        let d = ReferenceData::built_in();
        let steps = [step(
            "2026-12-07T10:00:00+07:00",
            "received",
            CaseStatus::Received,
            None,
        )];
        let c = current_clock(&steps, &d.calendar, &policy(), &d.units).expect("clock");
        assert_eq!((c.kind, c.holder.as_str()), (ClockKind::Handling, "HUMAS"));
        assert_eq!(c.due_at(&d.calendar), Some(t("2026-12-10T23:59:59+07:00")));
    }

    #[test]
    fn waiting_on_the_reporter_pauses_and_resumes_where_it_stopped() {
        let d = ReferenceData::built_in();
        // Received Mon 10:00; needs_info Mon 16:00 (6 h used); supplemented Thu 09:00.
        let steps = [
            step(
                "2026-12-07T10:00:00+07:00",
                "received",
                CaseStatus::Received,
                None,
            ),
            step(
                "2026-12-07T16:00:00+07:00",
                "needs_info",
                CaseStatus::NeedsInfo,
                None,
            ),
        ];
        let paused = current_clock(&steps, &d.calendar, &policy(), &d.units).expect("clock");
        assert!(!paused.running());
        assert_eq!(paused.used_secs, 6 * 3600);
        assert!(plan(&paused, &d.calendar, &policy(), &d.units).is_empty());

        let mut resumed = steps.to_vec();
        resumed.push(step(
            "2026-12-10T09:00:00+07:00",
            "supplemented",
            CaseStatus::Received,
            None,
        ));
        let c = current_clock(&resumed, &d.calendar, &policy(), &d.units).expect("clock");
        // Budget: Mon 14 h + Tue, Wed, Thu 24 h = 86 h; 80 h left from Thu 09:00 →
        // Thu 15 h, Fri 24 h, (weekend), Mon 24 h, Tue 17 h → Tue 15 Dec 17:00.
        assert_eq!(c.budget_secs, 86 * 3600 - 1);
        assert_eq!(c.due_at(&d.calendar), Some(t("2026-12-15T16:59:59+07:00")));
    }

    #[test]
    fn delegation_keeps_the_time_used_and_moves_to_the_offices_zone() {
        let d = ReferenceData::built_in();
        let steps = [
            step(
                "2026-12-07T08:00:00+07:00",
                "received",
                CaseStatus::Received,
                None,
            ),
            step(
                "2026-12-07T09:00:00+07:00",
                "verified",
                CaseStatus::Verified,
                None,
            ),
            step(
                "2026-12-07T10:00:00+07:00",
                "routed",
                CaseStatus::Routed,
                Some("REHSOS"),
            ),
            step(
                "2026-12-08T10:00:00+07:00",
                "delegated",
                CaseStatus::Routed,
                Some("SENTRA_WIRAJAYA"),
            ),
        ];
        let c = current_clock(&steps, &d.calendar, &policy(), &d.units).expect("clock");
        assert_eq!(
            (c.kind, c.holder.as_str()),
            (ClockKind::Followup, "SENTRA_WIRAJAYA")
        );
        assert_eq!(c.used_secs, 24 * 3600);
        assert_eq!(c.zone, chrono_tz::Asia::Makassar);
        // Same budget as if REHSOS had kept it: 5 working days from Monday 10:00 WIB.
        assert_eq!(c.budget_secs, 14 * 3600 + 5 * 24 * 3600 - 1);
    }

    #[test]
    fn reminders_breach_and_escalation_are_planned_in_order() {
        let d = ReferenceData::built_in();
        let steps = [step(
            "2026-12-07T00:00:00+07:00",
            "routed",
            CaseStatus::Routed,
            Some("SENTRA_WYATA_GUNA"),
        )];
        let c = current_clock(&steps, &d.calendar, &policy(), &d.units).expect("clock");
        let p = plan(&c, &d.calendar, &policy(), &d.units);
        let keys: Vec<_> = p
            .iter()
            .map(|n| (n.key.as_str(), n.recipient.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("reminder_50", "SENTRA_WYATA_GUNA"),
                ("reminder_80", "SENTRA_WYATA_GUNA"),
                ("breach", "SENTRA_WYATA_GUNA"),
                ("escalation_1", "REHSOS"),
                ("escalation_2", "HUMAS"),
            ]
        );
        // The deadline is the fifth working day after Monday's date (Mon 14 Dec); the budget is
        // Mon 00:00 to then, six days less a second, so half of it is used at Thursday 00:00.
        assert_eq!(p[0].due_at, t("2026-12-10T00:00:00+07:00"));
        assert_eq!(p[2].due_at, t("2026-12-14T23:59:59+07:00"));
        assert_eq!(p[3].due_at, t("2026-12-15T23:59:59+07:00"));
    }

    #[test]
    fn entries_after_the_breach_do_not_move_the_deadline() {
        let d = ReferenceData::built_in();
        let mut steps = vec![step(
            "2026-12-07T09:00:00+07:00",
            "routed",
            CaseStatus::Routed,
            Some("LINJAMSOS"),
        )];
        let due = current_clock(&steps, &d.calendar, &policy(), &d.units)
            .expect("clock")
            .due_at(&d.calendar);
        assert_eq!(due, Some(t("2026-12-14T23:59:59+07:00")));
        // The monitor's own notices land on the timeline, before and after the deadline.
        steps.push(step(
            "2026-12-10T12:00:00+07:00",
            "sla_reminder",
            CaseStatus::Routed,
            Some("LINJAMSOS"),
        ));
        steps.push(step(
            "2026-12-15T10:00:00+07:00",
            "sla_breach",
            CaseStatus::Routed,
            Some("LINJAMSOS"),
        ));
        steps.push(step(
            "2026-12-17T10:00:00+07:00",
            "acknowledged",
            CaseStatus::Routed,
            Some("LINJAMSOS"),
        ));
        let c = current_clock(&steps, &d.calendar, &policy(), &d.units).expect("clock");
        assert_eq!(c.due_at(&d.calendar), due);
        let plan = plan(&c, &d.calendar, &policy(), &d.units);
        let escalation = plan
            .iter()
            .find(|n| n.key == "escalation_1")
            .expect("planned");
        assert_eq!(escalation.due_at, t("2026-12-15T23:59:59+07:00"));
    }

    #[test]
    fn each_resolution_opens_a_new_autoclose_window_and_final_states_stop_everything() {
        let d = ReferenceData::built_in();
        let mut steps = vec![
            step(
                "2026-12-07T10:00:00+07:00",
                "routed",
                CaseStatus::Routed,
                Some("LINJAMSOS"),
            ),
            step(
                "2026-12-08T10:00:00+07:00",
                "resolved",
                CaseStatus::Resolved,
                Some("LINJAMSOS"),
            ),
        ];
        let c = current_clock(&steps, &d.calendar, &policy(), &d.units).expect("clock");
        assert_eq!((c.kind, c.cycle), (ClockKind::Autoclose, 1));
        steps.push(step(
            "2026-12-09T10:00:00+07:00",
            "reopened",
            CaseStatus::Routed,
            Some("LINJAMSOS"),
        ));
        steps.push(step(
            "2026-12-10T10:00:00+07:00",
            "resolved",
            CaseStatus::Resolved,
            Some("LINJAMSOS"),
        ));
        let c = current_clock(&steps, &d.calendar, &policy(), &d.units).expect("clock");
        assert_eq!((c.kind, c.cycle), (ClockKind::Autoclose, 2));
        steps.push(step(
            "2026-12-24T10:00:00+07:00",
            "closed",
            CaseStatus::Closed,
            None,
        ));
        assert!(current_clock(&steps, &d.calendar, &policy(), &d.units).is_none());
    }

    #[test]
    fn a_calendar_change_moves_open_deadlines() {
        let d = ReferenceData::built_in();
        let steps = [step(
            "2026-12-07T10:00:00+07:00",
            "received",
            CaseStatus::Received,
            None,
        )];
        let before = current_clock(&steps, &d.calendar, &policy(), &d.units)
            .expect("clock")
            .due_at(&d.calendar);
        let extra = crate::data::WorkingCalendar::from_files(&[(
            "2026.toml".to_string(),
            "year = 2026\ncomplete = true\n[[day]]\ndate = \"2026-12-08\"\nkind = \"cuti_bersama\"\nname = \"x\"\n".to_string(),
        )])
        .expect("calendar");
        let after = current_clock(&steps, &extra, &policy(), &d.units)
            .expect("clock")
            .due_at(&extra);
        assert_eq!(before, Some(t("2026-12-10T23:59:59+07:00")));
        assert_eq!(after, Some(t("2026-12-11T23:59:59+07:00")));
    }
}
