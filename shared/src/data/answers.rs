//! Reporter-facing text: the standard messages of each outcome and the normative answers per
//! category and kind. Loaded from `answers.toml`.

use super::{DataError, invalid, parse_toml};
use crate::domain::{Category, Kind};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Answers {
    messages: BTreeMap<String, String>,
    answers: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    messages: BTreeMap<String, String>,
    answers: BTreeMap<String, BTreeMap<String, String>>,
}

const REQUIRED_MESSAGES: [&str; 8] = [
    "needs_info",
    "missing_kk_number",
    "missing_kk_copy",
    "in_review",
    "routed",
    "duplicate",
    "resolved_default",
    "closed",
];

impl Answers {
    pub fn parse(file: &str, text: &str) -> Result<Self, DataError> {
        let f: File = parse_toml(file, text)?;
        if let Some(m) = REQUIRED_MESSAGES
            .iter()
            .find(|m| !f.messages.contains_key(**m))
        {
            return Err(invalid(file, format!("messages.{m} is missing")));
        }
        let default = f
            .answers
            .get("default")
            .ok_or_else(|| invalid(file, "answers.default is missing"))?;
        for kind in [Kind::InformationRequest, Kind::Aspiration] {
            if !default.contains_key(kind.as_str()) {
                return Err(invalid(file, format!("answers.default.{kind} is missing")));
            }
        }
        for key in f.answers.keys() {
            if key != "default" && Category::parse(key).is_err() {
                return Err(invalid(file, format!("answers.{key}: not a category")));
            }
        }
        Ok(Self {
            messages: f.messages,
            answers: f.answers,
        })
    }

    /// A standard message with its `{placeholders}` filled in.
    pub fn message(&self, key: &str, vars: &[(&str, &str)]) -> String {
        let mut s = self.messages.get(key).cloned().unwrap_or_default();
        for (k, v) in vars {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    }

    /// The normative answer for a category and kind (falling back to the default answer).
    pub fn normative(&self, category: Option<Category>, kind: Kind) -> String {
        let kind_key = if kind == Kind::Aspiration {
            "aspirasi"
        } else {
            "permintaan_informasi"
        };
        category
            .and_then(|c| self.answers.get(c.as_str()))
            .and_then(|m| m.get(kind_key))
            .or_else(|| self.answers.get("default").and_then(|m| m.get(kind_key)))
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use crate::data::ReferenceData;
    use crate::domain::{Category, Kind};

    #[test]
    fn every_category_has_answers_for_both_kinds() {
        let a = ReferenceData::built_in().answers;
        for c in Category::ALL {
            for k in [Kind::InformationRequest, Kind::Aspiration] {
                assert!(a.normative(Some(*c), k).len() > 40, "{c} {k}");
            }
        }
        assert!(
            a.message("needs_info", &[("missing", "X"), ("tracking_id", "T")])
                .contains("X")
        );
    }
}
