//! Body v1 of `POST /v1/complaints`, and its validation into a [`NewComplaint`]. Pure: no I/O,
//! every invalid field reported at once with the reason, no value echoed back.
//!
//! A missing KK number is accepted here: the verifier sets such a case to `needs_info` and
//! tells the reporter, so that a citizen calling 171 without the card at hand still gets a
//! tracking id. A KK number that is present but malformed is refused now, while the reporter
//! can still correct a typo.

use crate::problem::FieldError;
use lapor_shared::domain::{Channel, Kind, KkNumber, Nik, PhoneNumber, ProvinceCode, RegencyCode};
use lapor_shared::messages::{Attachment, AttachmentKind, Location, Reporter};
use serde::Deserialize;

pub const MAX_TEXT: usize = 4000;
pub const MAX_ATTACHMENTS: usize = 10;

/// The body as received: every field optional so that all problems can be reported together.
/// Unknown fields are ignored: a newer channel may send fields this version does not know.
#[derive(Debug, Default, Deserialize)]
pub struct SubmissionV1 {
    pub kind: Option<String>,
    pub channel: Option<String>,
    pub title: Option<String>,
    pub text: Option<String>,
    pub reporter: Option<ReporterV1>,
    pub kk_number: Option<String>,
    pub location: Option<LocationV1>,
    pub anonymous: Option<bool>,
    pub confidential: Option<bool>,
    pub attachments: Option<Vec<AttachmentV1>>,
    pub lapor_tracking_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ReporterV1 {
    pub name: Option<String>,
    pub nik: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LocationV1 {
    pub province_code: Option<String>,
    pub regency_code: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AttachmentV1 {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub sha256: Option<String>,
}

/// A complaint that passed validation.
#[derive(Debug, Clone)]
pub struct NewComplaint {
    pub kind: Option<Kind>,
    pub channel: Channel,
    pub title: Option<String>,
    pub text: String,
    pub reporter: Reporter,
    pub kk_number: Option<KkNumber>,
    pub location: Location,
    pub anonymous: bool,
    pub confidential: bool,
    pub attachments: Vec<Attachment>,
    pub lapor_tracking_id: Option<String>,
}

struct Check {
    errors: Vec<FieldError>,
}

impl Check {
    fn fail(&mut self, field: &str, reason: impl std::fmt::Display) {
        self.errors.push(FieldError::new(field, reason));
    }

    fn required<T>(&mut self, field: &str, v: Option<T>) -> Option<T> {
        if v.is_none() {
            self.fail(field, "is required");
        }
        v
    }

    /// Trimmed free text within a length, without control characters other than newlines and
    /// tabs. Empty optional text counts as absent.
    fn text(
        &mut self,
        field: &str,
        v: Option<String>,
        min: usize,
        max: usize,
        required: bool,
    ) -> Option<String> {
        let v = match v.map(|s| s.trim().to_owned()) {
            Some(s) if s.is_empty() && !required => return None,
            None if !required => return None,
            None => {
                self.fail(field, "is required");
                return None;
            }
            Some(s) => s,
        };
        let n = v.chars().count();
        if n < min || n > max {
            self.fail(
                field,
                format!("must be {min} to {max} characters long (is {n})"),
            );
            return None;
        }
        if v.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
        {
            self.fail(field, "contains control characters");
            return None;
        }
        Some(v)
    }

    fn parse<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        v: Option<String>,
        f: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        match f(v?.trim()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.fail(field, e);
                None
            }
        }
    }
}

fn valid_email(s: &str) -> Result<String, &'static str> {
    let (local, domain) = s.split_once('@').ok_or("must be an e-mail address")?;
    if local.is_empty()
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || s.len() > 254
        || s.contains(char::is_whitespace)
    {
        return Err("must be an e-mail address");
    }
    Ok(s.to_owned())
}

fn valid_url(s: &str) -> Result<String, &'static str> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or("must be an http(s) URL")?;
    if rest.is_empty() || s.len() > 2000 || s.contains(char::is_whitespace) {
        return Err("must be an http(s) URL of at most 2000 characters");
    }
    Ok(s.to_owned())
}

fn valid_sha256(s: &str) -> Result<String, &'static str> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("must be 64 hexadecimal characters (SHA-256)")
    }
}

fn valid_lapor_id(s: &str) -> Result<String, &'static str> {
    if (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/')
    {
        Ok(s.to_owned())
    } else {
        Err("must be 1 to 64 letters, digits, '-' or '/'")
    }
}

fn valid_name(s: &str) -> Result<String, &'static str> {
    if s.chars().any(char::is_alphabetic) {
        Ok(s.to_owned())
    } else {
        Err("must contain letters")
    }
}

impl Check {
    fn attachments(&mut self, list: Option<Vec<AttachmentV1>>) -> Vec<Attachment> {
        let mut attachments = Vec::new();
        let list = list.unwrap_or_default();
        if list.len() > MAX_ATTACHMENTS {
            self.fail(
                "attachments",
                format!("at most {MAX_ATTACHMENTS} attachments"),
            );
        }
        for (i, a) in list.into_iter().take(MAX_ATTACHMENTS).enumerate() {
            let at = |f: &str| format!("attachments[{i}].{f}");
            let kind = self.required(&at("kind"), a.kind).and_then(|k| {
                self.parse(&at("kind"), Some(k), |s| match s {
                    "kk_copy" => Ok(AttachmentKind::KkCopy),
                    "photo" => Ok(AttachmentKind::Photo),
                    "document" => Ok(AttachmentKind::Document),
                    _ => Err("must be one of: kk_copy photo document"),
                })
            });
            let url = self
                .required(&at("url"), a.url)
                .and_then(|u| self.parse(&at("url"), Some(u), valid_url));
            let sha256 = self
                .required(&at("sha256"), a.sha256)
                .and_then(|h| self.parse(&at("sha256"), Some(h), valid_sha256));
            if let (Some(kind), Some(url), Some(sha256)) = (kind, url, sha256) {
                attachments.push(Attachment { kind, url, sha256 });
            }
        }
        attachments
    }
}

/// Validates a list of attachments on its own (for documents sent after the complaint).
pub fn validate_attachments(
    list: Option<Vec<AttachmentV1>>,
) -> Result<Vec<Attachment>, Vec<FieldError>> {
    let mut c = Check { errors: Vec::new() };
    let a = c.attachments(list);
    if c.errors.is_empty() {
        Ok(a)
    } else {
        Err(c.errors)
    }
}

impl SubmissionV1 {
    pub fn validate(self) -> Result<NewComplaint, Vec<FieldError>> {
        let mut c = Check { errors: Vec::new() };
        let kind = c.parse("kind", self.kind, Kind::parse);
        let channel = c
            .required("channel", self.channel.clone())
            .and_then(|v| c.parse("channel", Some(v), Channel::parse));
        let title = c.text("title", self.title, 1, 200, false);
        let text = c.text("text", self.text, 1, MAX_TEXT, true);

        let reporter = c.required("reporter", self.reporter).and_then(|r| {
            let name = c
                .text("reporter.name", r.name, 1, 100, true)
                .and_then(|n| c.parse("reporter.name", Some(n), valid_name));
            let nik = c
                .required("reporter.nik", r.nik)
                .and_then(|v| c.parse("reporter.nik", Some(v), Nik::parse));
            let phone = c
                .required("reporter.phone", r.phone)
                .and_then(|v| c.parse("reporter.phone", Some(v), PhoneNumber::parse));
            let email = c
                .text("reporter.email", r.email, 3, 254, false)
                .and_then(|v| c.parse("reporter.email", Some(v), valid_email));
            let address = c.text("reporter.address", r.address, 1, 300, false);
            Some(Reporter {
                name: name?,
                nik: nik?,
                phone: phone?,
                email,
                address,
            })
        });

        let kk_number = c.parse(
            "kk_number",
            self.kk_number.filter(|s| !s.trim().is_empty()),
            KkNumber::parse,
        );

        let location = c.required("location", self.location).and_then(|l| {
            let province = c
                .required("location.province_code", l.province_code)
                .and_then(|v| c.parse("location.province_code", Some(v), ProvinceCode::parse));
            let regency = c.parse(
                "location.regency_code",
                l.regency_code.filter(|s| !s.trim().is_empty()),
                RegencyCode::parse,
            );
            let address = c.text("location.address", l.address, 1, 300, false);
            let province = province?;
            let regency = match regency.map(|r| r.within(province)) {
                Some(Err(e)) => {
                    c.fail("location.regency_code", e);
                    return None;
                }
                Some(Ok(r)) => Some(r),
                None => None,
            };
            Some(Location {
                province_code: province,
                regency_code: regency,
                address,
            })
        });

        let anonymous = c.required("anonymous", self.anonymous);
        let confidential = c.required("confidential", self.confidential);

        let attachments = c.attachments(self.attachments);
        let lapor_tracking_id = c.parse(
            "lapor_tracking_id",
            self.lapor_tracking_id.filter(|s| !s.trim().is_empty()),
            valid_lapor_id,
        );

        if !c.errors.is_empty() {
            return Err(c.errors);
        }
        match (channel, text, reporter, location, anonymous, confidential) {
            (
                Some(channel),
                Some(text),
                Some(reporter),
                Some(location),
                Some(anonymous),
                Some(confidential),
            ) => Ok(NewComplaint {
                kind,
                channel,
                title,
                text,
                reporter,
                kk_number,
                location,
                anonymous,
                confidential,
                attachments,
                lapor_tracking_id,
            }),
            // Every None above recorded an error.
            _ => Err(vec![FieldError::new("body", "is incomplete")]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> serde_json::Value {
        json!({
            "channel": "web",
            "text": "Bantuan PKH belum cair tiga bulan.",
            "reporter": {"name": "Siti", "nik": "3201014506900001", "phone": "081234567890"},
            "kk_number": "3273011203150007",
            "location": {"province_code": "32", "regency_code": "3273"},
            "anonymous": false,
            "confidential": false,
            "attachments": [{"kind": "kk_copy", "url": "https://files.example/kk.jpg", "sha256": "ab".repeat(32)}]
        })
    }

    fn check(v: serde_json::Value) -> Result<NewComplaint, Vec<FieldError>> {
        serde_json::from_value::<SubmissionV1>(v)
            .expect("shape")
            .validate()
    }

    fn fields(v: serde_json::Value) -> Vec<String> {
        check(v)
            .expect_err("invalid")
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_valid_body_passes() {
        let c = check(valid()).expect("valid");
        assert_eq!(c.channel, Channel::Web);
        assert_eq!(
            c.location.regency_code.map(|r| r.to_string()),
            Some("3273".into())
        );
    }

    #[test]
    fn every_invalid_field_is_named() {
        let mut v = valid();
        v["channel"] = json!("fax");
        v["text"] = json!("   ");
        v["reporter"]["nik"] = json!("3201013506900001");
        v["reporter"]["phone"] = json!("123");
        v["reporter"]["email"] = json!("nope");
        v["kk_number"] = json!("12");
        v["location"]["province_code"] = json!("99");
        v["attachments"][0]["sha256"] = json!("xyz");
        v["kind"] = json!("complaint");
        assert_eq!(
            fields(v),
            [
                "kind",
                "channel",
                "text",
                "reporter.nik",
                "reporter.phone",
                "reporter.email",
                "kk_number",
                "location.province_code",
                "attachments[0].sha256"
            ]
        );
    }

    #[test]
    fn required_fields_are_named_when_missing() {
        assert_eq!(
            fields(json!({})),
            [
                "channel",
                "text",
                "reporter",
                "location",
                "anonymous",
                "confidential"
            ]
        );
    }

    #[test]
    fn a_regency_outside_the_province_is_refused() {
        let mut v = valid();
        v["location"]["regency_code"] = json!("1807");
        assert_eq!(fields(v), ["location.regency_code"]);
    }

    #[test]
    fn text_length_counts_characters() {
        let mut v = valid();
        v["text"] = json!("é".repeat(MAX_TEXT));
        assert!(check(v.clone()).is_ok());
        v["text"] = json!("é".repeat(MAX_TEXT + 1));
        assert_eq!(fields(v), ["text"]);
    }

    #[test]
    fn a_missing_kk_number_is_accepted_for_the_verifier_to_chase() {
        let mut v = valid();
        v.as_object_mut().expect("object").remove("kk_number");
        assert!(check(v).expect("valid").kk_number.is_none());
    }

    #[test]
    fn reasons_never_echo_the_value() {
        let mut v = valid();
        v["reporter"]["nik"] = json!("3201013506900001");
        let errs = check(v).expect_err("invalid");
        assert!(errs.iter().all(|e| !e.reason.contains("3201013506900001")));
    }
}
