//! Wire schemas: every message is JSON with a versioned `schema`, a unique `message_id` (the
//! deduplication key), the `case_id` and `occurred_at`. Trace context travels in the AMQP
//! headers, not in the body. These types are the contract described by `docs/asyncapi.yaml`
//! and the JSON Schemas beside it; add fields, never rename them.

use crate::domain::{
    CaseStatus, Category, Channel, Kind, KkNumber, Nik, PhoneNumber, ProvinceCode, RegencyCode,
    TrackingId, UnitCode,
};
use crate::privacy;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod exchange {
    /// Internal stage traffic (`case.<event>`).
    pub const EVENTS: &str = "lapor.events";
    /// Cases, copies and SLA notices to units (`<UNIT>.case`, `<UNIT>.tembusan`, `<UNIT>.sla`).
    pub const UNITS: &str = "lapor.units";
    /// Units' follow-ups (`<UNIT>.followup`).
    pub const FOLLOWUP: &str = "lapor.followup";
    /// Dead letters of every work queue (delivery limit reached).
    pub const DEAD_LETTER: &str = "lapor.dlx";
    /// Alternate exchange of the three above: messages no queue was bound for.
    pub const UNROUTABLE: &str = "lapor.unroutable";

    pub fn by_name(name: &str) -> Option<&'static str> {
        [EVENTS, UNITS, FOLLOWUP].into_iter().find(|e| *e == name)
    }
}

pub mod schema {
    pub const CASE_EVENT_V1: &str = "lapor.case_event.v1";
    pub const UNIT_CASE_V1: &str = "lapor.unit_case.v1";
    pub const UNIT_REPLY_V1: &str = "lapor.unit_reply.v1";
    pub const UNIT_SLA_V1: &str = "lapor.unit_sla.v1";
    pub const FOLLOWUP_V1: &str = "lapor.followup.v1";
    pub const BATCH_V1: &str = "lapor.batch.v1";
}

/// A message type with a fixed schema name.
pub trait Message: Serialize + DeserializeOwned {
    const SCHEMA: &'static str;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("message has no `schema` field")]
    NoSchema,
    #[error("schema {found:?} is not handled here (expected {expected})")]
    UnknownSchema {
        found: String,
        expected: &'static str,
    },
    #[error("field `{path}`: {reason}")]
    Field { path: String, reason: String },
}

#[derive(Deserialize)]
struct Head {
    schema: Option<String>,
}

/// Decodes a message of type `T`. Reasons never echo values from the body.
pub fn decode<T: Message>(body: &[u8]) -> Result<T, DecodeError> {
    let head: Head = serde_json::from_slice(body)
        .map_err(|e| DecodeError::NotJson(privacy::scrub(&e.to_string())))?;
    match head.schema {
        None => return Err(DecodeError::NoSchema),
        Some(s) if s != T::SCHEMA => {
            return Err(DecodeError::UnknownSchema {
                found: s.chars().take(60).collect(),
                expected: T::SCHEMA,
            });
        }
        Some(_) => {}
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| DecodeError::Field {
        path: e.path().to_string(),
        reason: privacy::scrub(&e.inner().to_string()),
    })
}

/// Several messages of one routing key carried by one AMQP message on `lapor.events`
/// (`lapor.batch.v1`): what a producer's transaction hands over together crosses the broker
/// once instead of once per case. Each member keeps its own `message_id` (the deduplication
/// key) and its own trace context, and is handled, deduplicated and parked exactly as if it
/// had arrived alone; a member parked or re-driven travels alone.
pub mod batch {
    use serde::Deserialize;
    use serde_json::value::RawValue;
    use std::collections::HashMap;
    use uuid::Uuid;

    /// One member: the message as it would be published alone, and its trace headers.
    #[derive(Debug, Deserialize)]
    pub struct Member<'a> {
        #[serde(default)]
        pub headers: HashMap<String, String>,
        #[serde(borrow)]
        pub message: &'a RawValue,
    }

    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        messages: Vec<Member<'a>>,
    }

    /// Whether the message `message_id` with body `payload` may travel in a batch: its body
    /// is a JSON object carrying that same id, which is all a member keeps of it and what a
    /// consumer deduplicates on. Anything else (a re-driven malformed message, say) is
    /// published alone, so that it cannot spoil the batch around it or lose its id.
    pub fn can_carry(message_id: Uuid, payload: &[u8]) -> bool {
        #[derive(Deserialize)]
        struct Id {
            message_id: Uuid,
        }
        serde_json::from_slice::<Id>(payload).is_ok_and(|b| b.message_id == message_id)
    }

    /// Writes the batch of `members` (headers, payload), each accepted by [`can_carry`].
    pub fn encode<'a>(
        message_id: Uuid,
        members: impl IntoIterator<Item = (&'a HashMap<String, String>, &'a [u8])>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"{\"schema\":\"");
        out.extend_from_slice(super::schema::BATCH_V1.as_bytes());
        out.extend_from_slice(b"\",\"message_id\":\"");
        out.extend_from_slice(message_id.hyphenated().to_string().as_bytes());
        out.extend_from_slice(b"\",\"messages\":[");
        for (i, (headers, payload)) in members.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"headers\":");
            // A map of strings always serialises.
            serde_json::to_writer(&mut out, headers).unwrap_or_default();
            out.extend_from_slice(b",\"message\":");
            out.extend_from_slice(payload);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// The members of a batch, in order. The error names what is wrong, never a value.
    pub fn decode(body: &[u8]) -> Result<Vec<Member<'_>>, String> {
        let members = serde_json::from_slice::<Envelope<'_>>(body)
            .map(|e| e.messages)
            .map_err(|e| format!("batch: {}", crate::privacy::scrub(&e.to_string())))?;
        if members.is_empty() {
            return Err("batch: it carries no messages".to_owned());
        }
        Ok(members)
    }
}

/// Deterministic message ids: the same logical message always gets the same id, so no retry
/// or replay can mint a second one.
pub fn derived_id(case_id: Uuid, parts: &[&str]) -> Uuid {
    Uuid::new_v5(&case_id, parts.join("/").as_bytes())
}

/// The events another stage consumes, and so the only ones published on `lapor.events`
/// (`case.<event>`). Everything else is recorded on the timeline only: a published event
/// without a queue bound for it would end up in the unroutable parking lot.
pub const HANDOFF_EVENTS: [&str; 4] = ["received", "supplemented", "reviewed", "verified"];

pub fn is_handoff(event: &str) -> bool {
    HANDOFF_EVENTS.contains(&event)
}

/// Internal notification on `lapor.events` with routing key `case.<event>`. It carries ids
/// only; consumers read the case from PostgreSQL, so no personal data rides the internal bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseEventV1 {
    pub schema: String,
    pub message_id: Uuid,
    pub case_id: Uuid,
    pub tracking_id: TrackingId,
    pub occurred_at: DateTime<Utc>,
    pub event: String,
    pub status: CaseStatus,
}

impl Message for CaseEventV1 {
    const SCHEMA: &'static str = schema::CASE_EVENT_V1;
}

impl CaseEventV1 {
    pub fn new(
        case_id: Uuid,
        tracking_id: TrackingId,
        event: &str,
        status: CaseStatus,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            schema: Self::SCHEMA.to_owned(),
            message_id: Uuid::now_v7(),
            case_id,
            tracking_id,
            occurred_at: at,
            event: event.to_owned(),
            status,
        }
    }

    pub fn routing_key(&self) -> String {
        format!("case.{}", self.event)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The unit must act on the case.
    Assignee,
    /// A copy for information.
    Tembusan,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Assignee => "assignee",
            Role::Tembusan => "tembusan",
        }
    }

    /// The routing key suffix under the unit's code.
    pub fn key_suffix(self) -> &'static str {
        match self {
            Role::Assignee => "case",
            Role::Tembusan => "tembusan",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentKind {
    KkCopy,
    Photo,
    Document,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub kind: AttachmentKind,
    pub url: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reporter {
    pub name: String,
    pub nik: Nik,
    pub phone: PhoneNumber,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub province_code: ProvinceCode,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub regency_code: Option<RegencyCode>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub address: Option<String>,
}

/// Why a unit receives the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// First distribution (disposisi).
    Routed,
    /// The responsible unit delegated the case to this field office.
    Delegated,
    /// Re-routed after the previous unit returned it.
    Reassigned,
}

/// A case or a copy for a unit, on `lapor.units` with `<UNIT>.case` or `<UNIT>.tembusan`.
/// What it carries depends on the role and the reporter's choices; see [`UnitCaseV1::build`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitCaseV1 {
    pub schema: String,
    pub message_id: Uuid,
    pub case_id: Uuid,
    pub tracking_id: TrackingId,
    pub occurred_at: DateTime<Utc>,
    /// The recipient.
    pub unit: UnitCode,
    pub role: Role,
    pub reason: Reason,
    /// The unit that must act (the recipient itself unless this is a copy).
    pub assignee: UnitCode,
    pub kind: Kind,
    pub category: Category,
    pub channel: Channel,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub title: Option<String>,
    pub text: String,
    pub location: Location,
    /// Absent for anonymous reports and for copies.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reporter: Option<Reporter>,
    /// Absent for anonymous reports and for copies.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kk_number: Option<KkNumber>,
    pub attachments: Vec<Attachment>,
    pub anonymous: bool,
    pub confidential: bool,
    pub received_at: DateTime<Utc>,
    /// The assignee's follow-up deadline.
    pub due_at: DateTime<Utc>,
}

impl Message for UnitCaseV1 {
    const SCHEMA: &'static str = schema::UNIT_CASE_V1;
}

/// Everything known about a case that a unit might be shown; [`UnitCaseV1::build`] decides
/// what each recipient actually gets.
#[derive(Debug, Clone)]
pub struct CaseContent {
    pub case_id: Uuid,
    pub tracking_id: TrackingId,
    pub kind: Kind,
    pub category: Category,
    pub channel: Channel,
    pub title: Option<String>,
    pub text: String,
    pub location: Location,
    pub reporter: Reporter,
    pub kk_number: Option<KkNumber>,
    pub attachments: Vec<Attachment>,
    pub anonymous: bool,
    pub confidential: bool,
    pub received_at: DateTime<Utc>,
}

pub struct Delivery<'a> {
    pub unit: &'a UnitCode,
    pub role: Role,
    pub reason: Reason,
    pub assignee: &'a UnitCode,
    pub sequence: i64,
    pub due_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

impl UnitCaseV1 {
    /// The privacy rules, in one place:
    /// - the assignee of a named report gets the reporter's identity, KK number and every
    ///   attachment;
    /// - an anonymous report reaches even its assignee without identity, KK number, KK copy or
    ///   address, and numbers and e-mail addresses in its text are masked;
    /// - a copy (tembusan) carries only what a field office needs: no identity, no NIK, KK
    ///   number or phone (masked in the text too), no KK copy, no street address.
    pub fn build(content: &CaseContent, d: Delivery<'_>) -> Self {
        let identified = d.role == Role::Assignee && !content.anonymous;
        let text = if identified {
            content.text.clone()
        } else {
            privacy::mask_identifiers(&content.text)
        };
        let title = content.title.as_ref().map(|t| {
            if identified {
                t.clone()
            } else {
                privacy::mask_identifiers(t)
            }
        });
        let attachments = content
            .attachments
            .iter()
            .filter(|a| identified || a.kind != AttachmentKind::KkCopy)
            .cloned()
            .collect();
        Self {
            schema: Self::SCHEMA.to_owned(),
            message_id: derived_id(
                content.case_id,
                &[d.unit.as_str(), d.role.as_str(), &d.sequence.to_string()],
            ),
            case_id: content.case_id,
            tracking_id: content.tracking_id,
            occurred_at: d.at,
            unit: d.unit.clone(),
            role: d.role,
            reason: d.reason,
            assignee: d.assignee.clone(),
            kind: content.kind,
            category: content.category,
            channel: content.channel,
            title,
            text,
            location: Location {
                province_code: content.location.province_code,
                regency_code: content.location.regency_code,
                address: if identified {
                    content.location.address.clone()
                } else {
                    None
                },
            },
            reporter: identified.then(|| content.reporter.clone()),
            kk_number: if identified {
                content.kk_number.clone()
            } else {
                None
            },
            attachments,
            anonymous: content.anonymous,
            confidential: content.confidential,
            received_at: content.received_at,
            due_at: d.due_at,
        }
    }

    pub fn routing_key(&self) -> String {
        self.unit.key(self.role.key_suffix())
    }
}

/// Follow-up statuses a unit may report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowupStatus {
    Acknowledged,
    InProgress,
    Delegated,
    Resolved,
    Returned,
}

impl FollowupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FollowupStatus::Acknowledged => "acknowledged",
            FollowupStatus::InProgress => "in_progress",
            FollowupStatus::Delegated => "delegated",
            FollowupStatus::Resolved => "resolved",
            FollowupStatus::Returned => "returned",
        }
    }
}

/// A unit's follow-up, on `lapor.followup` with routing key `<UNIT>.followup`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowupV1 {
    pub schema: String,
    pub message_id: Uuid,
    pub case_id: Uuid,
    pub tracking_id: TrackingId,
    pub occurred_at: DateTime<Utc>,
    pub unit: UnitCode,
    pub status: FollowupStatus,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub delegate_to: Option<UnitCode>,
}

impl Message for FollowupV1 {
    const SCHEMA: &'static str = schema::FOLLOWUP_V1;
}

/// The reporter's reply to a resolved case, sent to the unit holding it (`<UNIT>.reply`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitReplyV1 {
    pub schema: String,
    pub message_id: Uuid,
    pub case_id: Uuid,
    pub tracking_id: TrackingId,
    pub occurred_at: DateTime<Utc>,
    pub unit: UnitCode,
    pub text: String,
    pub due_at: DateTime<Utc>,
}

impl Message for UnitReplyV1 {
    const SCHEMA: &'static str = schema::UNIT_REPLY_V1;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaNotice {
    Reminder,
    Breach,
    Escalation,
}

/// A deadline notice to a unit (`<UNIT>.sla`): a reminder before the deadline, the breach, or
/// an escalation to a unit up the holder's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitSlaV1 {
    pub schema: String,
    pub message_id: Uuid,
    pub case_id: Uuid,
    pub tracking_id: TrackingId,
    pub occurred_at: DateTime<Utc>,
    pub unit: UnitCode,
    pub holder: UnitCode,
    pub notice: SlaNotice,
    /// `handling` (the ministry's 3 days) or `followup` (the unit's).
    pub clock: String,
    pub due_at: DateTime<Utc>,
    /// Share of the time used when the notice was due (0.5, 0.8, 1.0, ...).
    pub elapsed: f64,
    /// 0 for reminders and the breach, 1 for the first level of escalation, and so on.
    pub level: u32,
}

impl Message for UnitSlaV1 {
    const SCHEMA: &'static str = schema::UNIT_SLA_V1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_back_each_member_with_its_own_headers_and_bytes() {
        let events: Vec<CaseEventV1> = (0..3)
            .map(|i| {
                CaseEventV1::new(
                    Uuid::new_v4(),
                    TrackingId::generate(),
                    "received",
                    CaseStatus::Received,
                    Utc::now() + chrono::Duration::seconds(i),
                )
            })
            .collect();
        let payloads: Vec<Vec<u8>> = events
            .iter()
            .map(|e| serde_json::to_vec(e).expect("serialises"))
            .collect();
        let headers: Vec<std::collections::HashMap<String, String>> = (0..3)
            .map(|i| [("traceparent".to_owned(), format!("00-{i:032x}-{i:016x}-01"))].into())
            .collect();
        assert!(
            events
                .iter()
                .zip(&payloads)
                .all(|(e, p)| batch::can_carry(e.message_id, p))
        );
        let id = Uuid::now_v7();
        let body = batch::encode(id, headers.iter().zip(payloads.iter().map(Vec::as_slice)));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("the batch is JSON");
        assert_eq!(v["schema"], schema::BATCH_V1);
        assert_eq!(v["message_id"], id.to_string());
        let members = batch::decode(&body).expect("decodes");
        assert_eq!(members.len(), 3);
        for ((m, e), h) in members.iter().zip(&events).zip(&headers) {
            assert_eq!(&m.headers, h);
            assert_eq!(
                decode::<CaseEventV1>(m.message.get().as_bytes()).expect("member decodes"),
                *e
            );
        }
    }

    #[test]
    fn only_objects_carrying_their_own_message_id_travel_in_a_batch() {
        let id = Uuid::parse_str("0190f5a8-6c1e-7cc2-9a0b-5b7d8e1f2a3b").expect("a UUID");
        assert!(!batch::can_carry(id, b"{this is not json"));
        assert!(!batch::can_carry(
            id,
            br#"{"schema":"lapor.case_event.v1"}"#
        ));
        assert!(!batch::can_carry(id, br#"{"message_id":"not-a-uuid"}"#));
        assert!(!batch::can_carry(id, br#"["message_id"]"#));
        let body = br#"{"message_id":"0190f5a8-6c1e-7cc2-9a0b-5b7d8e1f2a3b","x":1}"#;
        assert!(batch::can_carry(id, body));
        assert!(
            !batch::can_carry(Uuid::new_v4(), body),
            "a body carrying another id than its message's"
        );
        let err = batch::decode(br#"{"schema":"lapor.batch.v1","messages":{}}"#)
            .expect_err("messages must be a list");
        assert!(err.starts_with("batch: "), "{err}");
        let err = batch::decode(br#"{"schema":"lapor.batch.v1","messages":[]}"#)
            .expect_err("an empty batch is malformed, not nothing to do");
        assert!(err.contains("no messages"), "{err}");
    }

    fn content(anonymous: bool) -> CaseContent {
        CaseContent {
            case_id: Uuid::new_v4(),
            tracking_id: TrackingId::generate(),
            kind: Kind::Complaint,
            category: Category::Pkh,
            channel: Channel::Sms,
            title: None,
            text: "PKH belum cair, NIK saya 3201014506900001 hp 081234567890".into(),
            location: Location {
                province_code: ProvinceCode::parse("32").expect("valid"),
                regency_code: None,
                address: Some("Jl. Melati 5".into()),
            },
            reporter: Reporter {
                name: "Siti Aminah".into(),
                nik: Nik::parse("3201014506900001").expect("valid"),
                phone: PhoneNumber::parse("081234567890").expect("valid"),
                email: None,
                address: Some("Jl. Melati 5".into()),
            },
            kk_number: Some(KkNumber::parse("3273011203150007").expect("valid")),
            attachments: vec![
                Attachment {
                    kind: AttachmentKind::KkCopy,
                    url: "https://x/kk.jpg".into(),
                    sha256: "a".repeat(64),
                },
                Attachment {
                    kind: AttachmentKind::Photo,
                    url: "https://x/p.jpg".into(),
                    sha256: "b".repeat(64),
                },
            ],
            anonymous,
            confidential: false,
            received_at: Utc::now(),
        }
    }

    fn deliver(c: &CaseContent, role: Role) -> String {
        let unit = UnitCode::parse("LINJAMSOS").expect("valid");
        let msg = UnitCaseV1::build(
            c,
            Delivery {
                unit: &unit,
                role,
                reason: Reason::Routed,
                assignee: &unit,
                sequence: 1,
                due_at: Utc::now(),
                at: Utc::now(),
            },
        );
        serde_json::to_string(&msg).expect("serialise")
    }

    #[test]
    fn the_assignee_of_a_named_report_sees_the_identity() {
        let json = deliver(&content(false), Role::Assignee);
        assert!(
            json.contains("3201014506900001")
                && json.contains("Siti Aminah")
                && json.contains("kk_copy")
        );
    }

    #[test]
    fn copies_and_anonymous_reports_carry_no_identity() {
        for (anonymous, role) in [
            (false, Role::Tembusan),
            (true, Role::Assignee),
            (true, Role::Tembusan),
        ] {
            let json = deliver(&content(anonymous), role);
            for secret in [
                "3201014506900001",
                "081234567890",
                "6281234567890",
                "Siti",
                "3273011203150007",
                "kk_copy",
                "Melati",
            ] {
                assert!(
                    !json.contains(secret),
                    "{secret} leaked to {role:?} (anonymous {anonymous}): {json}"
                );
            }
            assert!(json.contains("PKH belum cair"));
        }
    }

    #[test]
    fn message_ids_are_stable_per_delivery() {
        let c = content(false);
        assert_eq!(
            deliver(&c, Role::Assignee).len(),
            deliver(&c, Role::Assignee).len()
        );
        let a = derived_id(c.case_id, &["LINJAMSOS", "assignee", "1"]);
        assert_eq!(a, derived_id(c.case_id, &["LINJAMSOS", "assignee", "1"]));
        assert_ne!(a, derived_id(c.case_id, &["LINJAMSOS", "tembusan", "1"]));
    }

    #[test]
    fn decoding_names_the_problem_without_echoing_values() {
        let err = decode::<CaseEventV1>(b"{not json").expect_err("bad json");
        assert!(matches!(err, DecodeError::NotJson(_)));
        let err =
            decode::<CaseEventV1>(br#"{"schema":"lapor.case_event.v9"}"#).expect_err("schema");
        assert!(err.to_string().contains("lapor.case_event.v9"));
        let body =
            br#"{"schema":"lapor.case_event.v1","message_id":"3201014506900001","case_id":"x"}"#;
        let err = decode::<CaseEventV1>(body).expect_err("bad field");
        assert!(
            err.to_string().contains("message_id") && !err.to_string().contains("3201014506900001"),
            "{err}"
        );
    }
}
