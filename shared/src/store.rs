//! Case state shared by the services: locking a case, recording a transition (status, a
//! timeline entry and the internal event, in the caller's transaction), reading the timeline
//! and the content a unit may be shown.

use crate::db::outbox::{self, Outgoing};
use crate::domain::{
    CaseStatus, Category, Channel, Kind, KkNumber, Nik, PhoneNumber, ProvinceCode, RegencyCode,
    TrackingId, UnitCode,
};
use crate::messages::{
    Attachment, AttachmentKind, CaseContent, CaseEventV1, Location, Reporter, exchange,
};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A case as stored, without the reporter's identity.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CaseRow {
    pub id: Uuid,
    pub tracking_id: String,
    pub status: String,
    pub channel: String,
    pub claimed_kind: Option<String>,
    pub title: Option<String>,
    pub body: String,
    pub province_code: String,
    pub regency_code: Option<String>,
    pub anonymous: bool,
    pub confidential: bool,
    pub lapor_tracking_id: Option<String>,
    pub reporter_ref: Vec<u8>,
    pub received_at: DateTime<Utc>,
    pub kind: Option<String>,
    pub in_scope: Option<bool>,
    pub category: Option<String>,
    pub needs_followup: Option<bool>,
    pub holder_unit: Option<String>,
    pub duplicate_of: Option<Uuid>,
    pub reporter_message: Option<String>,
}

/// A stored value that no longer parses is a broken invariant, not bad input: such a
/// message is parked with this error.
#[derive(Debug, thiserror::Error)]
#[error("stored case {case_id} has an invalid {field}")]
pub struct Corrupt {
    pub case_id: Uuid,
    pub field: &'static str,
}

impl CaseRow {
    fn corrupt(&self, field: &'static str) -> Corrupt {
        Corrupt {
            case_id: self.id,
            field,
        }
    }
    pub fn status(&self) -> Result<CaseStatus, Corrupt> {
        CaseStatus::parse(&self.status).map_err(|_| self.corrupt("status"))
    }
    pub fn tracking(&self) -> Result<TrackingId, Corrupt> {
        TrackingId::parse(&self.tracking_id).map_err(|_| self.corrupt("tracking_id"))
    }
    pub fn channel(&self) -> Result<Channel, Corrupt> {
        Channel::parse(&self.channel).map_err(|_| self.corrupt("channel"))
    }
    pub fn province(&self) -> Result<ProvinceCode, Corrupt> {
        ProvinceCode::parse(&self.province_code).map_err(|_| self.corrupt("province_code"))
    }
    pub fn regency(&self) -> Result<Option<RegencyCode>, Corrupt> {
        self.regency_code
            .as_deref()
            .map(RegencyCode::parse)
            .transpose()
            .map_err(|_| self.corrupt("regency_code"))
    }
    pub fn decided_kind(&self) -> Result<Option<Kind>, Corrupt> {
        self.kind
            .as_deref()
            .map(Kind::parse)
            .transpose()
            .map_err(|_| self.corrupt("kind"))
    }
    pub fn claimed_kind(&self) -> Result<Option<Kind>, Corrupt> {
        self.claimed_kind
            .as_deref()
            .map(Kind::parse)
            .transpose()
            .map_err(|_| self.corrupt("claimed_kind"))
    }
    pub fn decided_category(&self) -> Result<Option<Category>, Corrupt> {
        self.category
            .as_deref()
            .map(Category::parse)
            .transpose()
            .map_err(|_| self.corrupt("category"))
    }
    pub fn holder(&self) -> Result<Option<UnitCode>, Corrupt> {
        self.holder_unit
            .as_deref()
            .map(UnitCode::parse)
            .transpose()
            .map_err(|_| self.corrupt("holder_unit"))
    }
}

const CASE_COLUMNS: &str = "id, tracking_id, status, channel, claimed_kind, title, body, province_code, regency_code, \
    anonymous, confidential, lapor_tracking_id, reporter_ref, received_at, kind, in_scope, category, needs_followup, \
    holder_unit, duplicate_of, reporter_message";

/// Locks the case row for the rest of the transaction: every writer of a case goes through
/// this, so transitions of one case are serialised across services and replicas.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<CaseRow>> {
    Ok(lock_many(conn, &[id]).await?.remove(&id))
}

/// [`lock`] for many cases in one statement, in the order of their ids, so that two batches
/// sharing cases wait for each other instead of deadlocking. Cases that do not exist are
/// absent from the map.
pub async fn lock_many(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> sqlx::Result<std::collections::HashMap<Uuid, CaseRow>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let rows = sqlx::query_as::<_, CaseRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {CASE_COLUMNS} FROM cases WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    )))
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r)).collect())
}

pub async fn by_tracking_id(
    conn: &mut PgConnection,
    tracking_id: &TrackingId,
) -> sqlx::Result<Option<CaseRow>> {
    sqlx::query_as::<_, CaseRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {CASE_COLUMNS} FROM cases WHERE tracking_id = $1"
    )))
    .bind(tracking_id.to_string())
    .fetch_optional(conn)
    .await
}

/// A change of a case's state, as recorded on its timeline.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    pub event: &'a str,
    pub status: CaseStatus,
    pub unit: Option<&'a UnitCode>,
    pub actor: &'a str,
    /// Shown to the reporter; never personal data.
    pub note: Option<String>,
    pub at: DateTime<Utc>,
}

/// A transition of one case, for recording many at once.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub case_id: Uuid,
    pub tracking_id: TrackingId,
    pub t: Transition<'a>,
    /// The trace the hand-off event continues (see [`Outgoing::trace`]).
    pub trace: std::collections::HashMap<String, String>,
}

impl<'a> Entry<'a> {
    /// Captures the current span as the entry's trace: build it under the span of the
    /// delivery or request that caused it.
    pub fn new(case_id: Uuid, tracking_id: TrackingId, t: Transition<'a>) -> Self {
        Self {
            case_id,
            tracking_id,
            t,
            trace: crate::telemetry::inject_current(),
        }
    }
}

/// Applies a transition: the case's status, a timeline entry and (usually) the internal event,
/// all in the caller's transaction.
/// Returns what [`log_many_reading`] reads back.
pub async fn record(
    conn: &mut PgConnection,
    case: &CaseRow,
    t: &Transition<'_>,
) -> anyhow::Result<ReadBack> {
    sqlx::query("UPDATE cases SET status = $2, updated_at = $3 WHERE id = $1")
        .bind(case.id)
        .bind(t.status.as_str())
        .bind(t.at)
        .execute(&mut *conn)
        .await?;
    log_many_reading(conn, &[Entry::new(case.id, case.tracking()?, t.clone())]).await
}

/// Adds a timeline entry (and the internal event) without touching the case row, for a case
/// whose row already has the new status (just inserted or just updated).
pub async fn log(
    conn: &mut PgConnection,
    case_id: Uuid,
    tracking_id: TrackingId,
    t: &Transition<'_>,
) -> anyhow::Result<()> {
    log_many(conn, &[Entry::new(case_id, tracking_id, t.clone())]).await
}

/// What [`log_many_reading`] reads back about every case it wrote for: the whole timeline as
/// the SLA clock reads it (the new entries included), and the SLA notices already sent.
#[derive(Debug, Default)]
pub struct ReadBack {
    pub steps: std::collections::HashMap<Uuid, Vec<crate::sla::Step>>,
    /// Every case read has an entry, empty if nothing was sent for it.
    pub notices: std::collections::HashMap<Uuid, Vec<SentNotice>>,
}

/// A notice the SLA monitor sent for a case (`sla_notices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentNotice {
    pub clock: String,
    pub cycle: i32,
    pub notice: String,
}

/// [`log_many`], reading back in the same statement what the deadlines that follow need
/// ([`ReadBack`]).
pub async fn log_many_reading(
    conn: &mut PgConnection,
    entries: &[Entry<'_>],
) -> anyhow::Result<ReadBack> {
    write_entries(conn, entries, true).await
}

/// [`log`] for many cases: one statement writes the timeline entries and the events,
/// whatever the number of entries. Reads nothing back (for writers that do not update
/// deadlines, such as the monitor's notices).
pub async fn log_many(conn: &mut PgConnection, entries: &[Entry<'_>]) -> anyhow::Result<()> {
    write_entries(conn, entries, false).await?;
    Ok(())
}

/// A row of [`write_entries`]'s statement: `part` 0 is a timeline entry, 1 an outbox row
/// written, 2 a notice already sent; the other parts' columns are NULL.
#[derive(sqlx::FromRow)]
struct WrittenRow {
    part: i32,
    case_id: Option<Uuid>,
    id: Option<i64>,
    at: Option<DateTime<Utc>>,
    event: Option<String>,
    status: Option<String>,
    unit: Option<String>,
    actor: Option<String>,
    note: Option<String>,
    message_id: Option<Uuid>,
    exchange: Option<String>,
    routing_key: Option<String>,
    headers: Option<sqlx::types::Json<std::collections::HashMap<String, String>>>,
    payload: Option<Vec<u8>>,
    clock: Option<String>,
    cycle: Option<i32>,
    notice: Option<String>,
}

async fn write_entries(
    conn: &mut PgConnection,
    entries: &[Entry<'_>],
    read_back: bool,
) -> anyhow::Result<ReadBack> {
    if entries.is_empty() {
        return Ok(ReadBack::default());
    }
    let handoffs: Vec<Outgoing> = entries
        .iter()
        .filter(|e| crate::messages::is_handoff(e.t.event))
        .map(|e| {
            let ev = CaseEventV1::new(e.case_id, e.tracking_id, e.t.event, e.t.status, e.t.at);
            Outgoing {
                trace: e.trace.clone(),
                ..Outgoing::json(exchange::EVENTS, ev.routing_key(), ev.message_id, &ev)
            }
        })
        .collect();
    let outgoing = outbox::Columns::new(&handoffs);
    let ids: Vec<Uuid> = entries.iter().map(|e| e.case_id).collect();
    let ats: Vec<DateTime<Utc>> = entries.iter().map(|e| e.t.at).collect();
    let events: Vec<&str> = entries.iter().map(|e| e.t.event).collect();
    let statuses: Vec<&str> = entries.iter().map(|e| e.t.status.as_str()).collect();
    let units: Vec<Option<&str>> = entries
        .iter()
        .map(|e| e.t.unit.map(UnitCode::as_str))
        .collect();
    let actors: Vec<&str> = entries.iter().map(|e| e.t.actor).collect();
    let notes: Vec<Option<&str>> = entries.iter().map(|e| e.t.note.as_deref()).collect();
    // One round trip: the entries, the events (as `outbox::enqueue` writes them) and, with
    // $7, what the deadlines need. WITH ORDINALITY keeps the given order in the ids, so each
    // case's timeline reads in the order its entries were recorded. The SELECTs do not see
    // the rows the CTEs insert (one snapshot), so the new entries come from RETURNING. The
    // outbox rows come back only for a hand-off ($8). Notices are sent by the SLA monitor
    // under the case's lock, which the caller holds, so none can appear between this read
    // and the caller's commit.
    let rows: Vec<WrittenRow> = outgoing
        .bind(sqlx::query_as(concat!(
            "WITH ob AS (",
            crate::outbox_insert!(),
            "), new AS (
               INSERT INTO case_events (case_id, at, event, status, unit, actor, note)
               SELECT c, a, e, s, u, w, n
               FROM UNNEST($9::uuid[], $10::timestamptz[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
                    WITH ORDINALITY AS t(c, a, e, s, u, w, n, ord)
               ORDER BY ord
               RETURNING case_id, id, at, event, status, unit, actor, note)
             SELECT 0 AS part, case_id, id, at, event, status, unit, actor, note,
                    NULL::uuid AS message_id, NULL::text AS exchange, NULL::text AS routing_key,
                    NULL::jsonb AS headers, NULL::bytea AS payload,
                    NULL::text AS clock, NULL::int4 AS cycle, NULL::text AS notice
             FROM case_events WHERE $7 AND case_id = ANY($9)
             UNION ALL
             SELECT 0, case_id, id, at, event, status, unit, actor, note,
                    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
             FROM new WHERE $7
             UNION ALL
             SELECT 1, NULL, id, NULL, NULL, NULL, NULL, NULL, NULL,
                    message_id, exchange, routing_key, headers, payload, NULL, NULL, NULL
             FROM ob WHERE $8
             UNION ALL
             SELECT 2, case_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                    NULL, NULL, NULL, NULL, NULL, clock, cycle, notice
             FROM sla_notices WHERE $7 AND case_id = ANY($9)
             ORDER BY part, case_id, id"
        )))
        .bind(read_back)
        .bind(outgoing.collecting())
        .bind(&ids)
        .bind(&ats)
        .bind(&events)
        .bind(&statuses)
        .bind(&units)
        .bind(&actors)
        .bind(&notes)
        .fetch_all(&mut *conn)
        .await?;

    let mut timeline = Vec::new();
    let mut written = Vec::new();
    let mut notices: std::collections::HashMap<Uuid, Vec<SentNotice>> = if read_back {
        ids.iter().map(|id| (*id, Vec::new())).collect()
    } else {
        Default::default()
    };
    for r in rows {
        let broken = || anyhow::anyhow!("the timeline statement returned an incomplete row");
        match r.part {
            0 => timeline.push(TimelineRow {
                case_id: r.case_id.ok_or_else(broken)?,
                entry: TimelineEntry {
                    id: r.id.ok_or_else(broken)?,
                    at: r.at.ok_or_else(broken)?,
                    event: r.event.ok_or_else(broken)?,
                    status: r.status.ok_or_else(broken)?,
                    unit: r.unit,
                    actor: r.actor.ok_or_else(broken)?,
                    note: r.note,
                },
            }),
            1 => written.push(outbox::OutboxRow {
                id: r.id.ok_or_else(broken)?,
                message_id: r.message_id.ok_or_else(broken)?,
                exchange: r.exchange.ok_or_else(broken)?,
                routing_key: r.routing_key.ok_or_else(broken)?,
                headers: r.headers.ok_or_else(broken)?,
                payload: r.payload.ok_or_else(broken)?,
            }),
            _ => notices
                .entry(r.case_id.ok_or_else(broken)?)
                .or_default()
                .push(SentNotice {
                    clock: r.clock.ok_or_else(broken)?,
                    cycle: r.cycle.ok_or_else(broken)?,
                    notice: r.notice.ok_or_else(broken)?,
                }),
        }
    }
    outbox::collect(written);
    if !read_back {
        return Ok(ReadBack::default());
    }
    Ok(ReadBack {
        steps: steps_by_case(&ids, timeline),
        notices,
    })
}

/// One entry of a case's timeline.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct TimelineEntry {
    #[serde(skip)]
    pub id: i64,
    pub at: DateTime<Utc>,
    pub event: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(skip)]
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

pub async fn timeline(conn: &mut PgConnection, case_id: Uuid) -> sqlx::Result<Vec<TimelineEntry>> {
    sqlx::query_as::<_, TimelineEntry>(
        "SELECT id, at, event, status, unit, actor, note FROM case_events WHERE case_id = $1 ORDER BY id",
    )
    .bind(case_id)
    .fetch_all(conn)
    .await
}

#[derive(sqlx::FromRow)]
struct IdentityRow {
    name: String,
    nik: String,
    phone: String,
    email: Option<String>,
    address: Option<String>,
    kk_number: Option<String>,
    location_address: Option<String>,
    attachments: sqlx::types::Json<Vec<Attachment>>,
}

#[derive(sqlx::FromRow)]
struct AttachmentRow {
    kind: String,
    url: String,
    sha256: String,
}

pub async fn attachments(conn: &mut PgConnection, case_id: Uuid) -> sqlx::Result<Vec<Attachment>> {
    let rows = sqlx::query_as::<_, AttachmentRow>(
        "SELECT kind, url, sha256 FROM case_attachments WHERE case_id = $1 ORDER BY position",
    )
    .bind(case_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let kind = match r.kind.as_str() {
                "kk_copy" => AttachmentKind::KkCopy,
                "photo" => AttachmentKind::Photo,
                "document" => AttachmentKind::Document,
                _ => return None,
            };
            Some(Attachment {
                kind,
                url: r.url,
                sha256: r.sha256,
            })
        })
        .collect())
}

/// Everything a unit could be shown about a verified case (identity included); the message
/// builder removes what each recipient may not see.
pub async fn content(conn: &mut PgConnection, case: &CaseRow) -> anyhow::Result<CaseContent> {
    content_many(conn, &[case])
        .await?
        .remove(&case.id)
        .unwrap_or_else(|| Err(case.corrupt("identity")))
        .map_err(Into::into)
}

/// [`content`] for many cases in one query. A case whose stored data no longer parses (or
/// that has no identity record) maps to the field at fault.
pub async fn content_many(
    conn: &mut PgConnection,
    cases: &[&CaseRow],
) -> sqlx::Result<std::collections::HashMap<Uuid, Result<CaseContent, Corrupt>>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        case_id: Uuid,
        #[sqlx(flatten)]
        identity: IdentityRow,
    }
    let ids: Vec<Uuid> = cases.iter().map(|c| c.id).collect();
    let rows = sqlx::query_as::<_, Row>(
        "SELECT i.case_id, i.name, i.nik, i.phone, i.email, i.address, i.kk_number, i.location_address,
                COALESCE((SELECT jsonb_agg(jsonb_build_object('kind', a.kind, 'url', a.url, 'sha256', a.sha256) ORDER BY a.position)
                          FROM case_attachments a WHERE a.case_id = i.case_id), '[]') AS attachments
         FROM case_identity i WHERE i.case_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    let mut identities: std::collections::HashMap<Uuid, IdentityRow> =
        rows.into_iter().map(|r| (r.case_id, r.identity)).collect();
    Ok(cases
        .iter()
        .map(|case| {
            let content = match identities.remove(&case.id) {
                Some(id) => assemble(case, id),
                None => Err(case.corrupt("identity")),
            };
            (case.id, content)
        })
        .collect())
}

fn assemble(case: &CaseRow, id: IdentityRow) -> Result<CaseContent, Corrupt> {
    let corrupt = |field| case.corrupt(field);
    Ok(CaseContent {
        case_id: case.id,
        tracking_id: case.tracking()?,
        kind: case.decided_kind()?.ok_or_else(|| corrupt("kind"))?,
        category: case
            .decided_category()?
            .ok_or_else(|| corrupt("category"))?,
        channel: case.channel()?,
        title: case.title.clone(),
        text: case.body.clone(),
        location: Location {
            province_code: case.province()?,
            regency_code: case.regency()?,
            address: id.location_address,
        },
        reporter: Reporter {
            name: id.name,
            nik: Nik::parse(&id.nik).map_err(|_| corrupt("nik"))?,
            phone: PhoneNumber::parse(&id.phone).map_err(|_| corrupt("phone"))?,
            email: id.email,
            address: id.address,
        },
        kk_number: id
            .kk_number
            .as_deref()
            .map(KkNumber::parse)
            .transpose()
            .map_err(|_| corrupt("kk_number"))?,
        attachments: id.attachments.0,
        anonymous: case.anonymous,
        confidential: case.confidential,
        received_at: case.received_at,
    })
}

/// The timeline as the SLA clock reads it.
pub async fn steps(conn: &mut PgConnection, case_id: Uuid) -> sqlx::Result<Vec<crate::sla::Step>> {
    Ok(timeline(conn, case_id)
        .await?
        .into_iter()
        .filter_map(TimelineEntry::step)
        .collect())
}

/// The timelines of many cases as the SLA clock reads them, in one query. Every asked-for
/// case is in the map, with no steps if it has no timeline.
pub async fn steps_many(
    conn: &mut PgConnection,
    case_ids: &[Uuid],
) -> sqlx::Result<std::collections::HashMap<Uuid, Vec<crate::sla::Step>>> {
    let rows = sqlx::query_as::<_, TimelineRow>(
        "SELECT case_id, id, at, event, status, unit, actor, note FROM case_events
         WHERE case_id = ANY($1) ORDER BY case_id, id",
    )
    .bind(case_ids)
    .fetch_all(conn)
    .await?;
    Ok(steps_by_case(case_ids, rows))
}

/// A timeline entry with its case, rows ordered by case and id.
#[derive(sqlx::FromRow)]
struct TimelineRow {
    case_id: Uuid,
    #[sqlx(flatten)]
    entry: TimelineEntry,
}

/// Every asked-for case, with its steps (none if it has no timeline).
fn steps_by_case(
    case_ids: &[Uuid],
    rows: Vec<TimelineRow>,
) -> std::collections::HashMap<Uuid, Vec<crate::sla::Step>> {
    let mut steps: std::collections::HashMap<Uuid, Vec<crate::sla::Step>> =
        case_ids.iter().map(|id| (*id, Vec::new())).collect();
    for r in rows {
        if let Some(step) = r.entry.step() {
            steps.entry(r.case_id).or_default().push(step);
        }
    }
    steps
}

impl TimelineEntry {
    pub fn step(self) -> Option<crate::sla::Step> {
        Some(crate::sla::Step {
            at: self.at,
            status: CaseStatus::parse(&self.status).ok()?,
            unit: self.unit.as_deref().and_then(|u| UnitCode::parse(u).ok()),
            event: self.event,
        })
    }
}
