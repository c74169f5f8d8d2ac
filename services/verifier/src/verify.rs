//! Step 3 of the procedure, as a pure function: given what is known about a case, decide what
//! happens to it. The handler gathers the facts and applies the verdict; nothing here touches
//! the database or the broker.
//!
//! Order of the checks, and why:
//! 1. A duplicate of the reporter's earlier case is linked to it before anything else, so the
//!    same problem is never worked twice.
//! 2. Classification (or the officer's decision, which always wins). Unclear → an officer.
//! 3. Out of scope → closed, with the agency the reporter should turn to.
//! 4. Only cases that go to a unit for field follow-up must satisfy the requirements (KK number
//!    and KK copy): a unit cannot act on a family it cannot identify, but asking for a family
//!    card to answer a question would only delay the answer.

use crate::classify::{Classification, Decision, Normaliser};
use lapor_shared::data::{Answers, RoutingTable};
use lapor_shared::domain::{Category, Kind};
use std::collections::BTreeSet;
use uuid::Uuid;

/// What an officer decided in the review queue.
#[derive(Debug, Clone, PartialEq)]
pub struct OfficerDecision {
    pub officer: String,
    pub kind: Kind,
    pub in_scope: bool,
    pub category: Option<Category>,
    pub needs_followup: bool,
    pub note: Option<String>,
}

/// The requirements of the service standard, as found on the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirements {
    pub kk_number: bool,
    pub kk_copy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    KkNumber,
    KkCopy,
}

/// An earlier case of the same reporter.
#[derive(Debug, Clone)]
pub struct EarlierCase {
    pub id: Uuid,
    pub tracking_id: String,
    pub text: String,
    pub same_lapor_id: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub kind: Kind,
    pub in_scope: bool,
    pub category: Option<Category>,
    pub needs_followup: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Duplicate {
        of: Uuid,
        of_tracking_id: String,
    },
    Review {
        reasons: Vec<String>,
    },
    OutOfScope {
        decided: Decided,
        message: String,
    },
    NeedsInfo {
        decided: Decided,
        missing: Vec<Missing>,
    },
    Verified {
        decided: Decided,
    },
}

/// Share of distinct words the two texts have in common (Jaccard), after normalisation.
pub fn similarity(n: &Normaliser, a: &str, b: &str) -> f64 {
    let set = |t: &str| {
        n.tokens(t)
            .into_iter()
            .filter(|w| w != "?")
            .collect::<BTreeSet<_>>()
    };
    let (x, y) = (set(a), set(b));
    if x.is_empty() && y.is_empty() {
        return 1.0;
    }
    x.intersection(&y).count() as f64 / x.union(&y).count() as f64
}

/// The earliest earlier case this one repeats: same LAPOR! id, or the same reporter with a
/// near-identical text.
pub fn find_duplicate<'a>(
    n: &Normaliser,
    text: &str,
    earlier: &'a [EarlierCase],
    threshold: f64,
) -> Option<&'a EarlierCase> {
    earlier
        .iter()
        .find(|e| e.same_lapor_id || similarity(n, text, &e.text) >= threshold)
}

pub struct Facts<'a> {
    pub classification: Option<&'a Classification>,
    pub officer: Option<&'a OfficerDecision>,
    pub duplicate_of: Option<&'a EarlierCase>,
    pub requirements: Requirements,
}

pub fn decide(facts: &Facts<'_>, routing: &RoutingTable) -> Verdict {
    if let Some(d) = facts.duplicate_of {
        return Verdict::Duplicate {
            of: d.id,
            of_tracking_id: d.tracking_id.clone(),
        };
    }
    let decided = match (facts.officer, facts.classification) {
        (Some(o), _) => Decided {
            kind: o.kind,
            in_scope: o.in_scope,
            category: o.category,
            needs_followup: o.needs_followup && o.in_scope,
        },
        (None, Some(c)) if c.decision == Decision::Auto => Decided {
            kind: c.kind,
            in_scope: c.in_scope,
            category: c.category,
            needs_followup: crate::eval::needs_followup(c.kind, c.in_scope, c.category, routing),
        },
        (None, Some(c)) => {
            return Verdict::Review {
                reasons: c.review_reasons.clone(),
            };
        }
        (None, None) => {
            return Verdict::Review {
                reasons: vec!["no classification available".into()],
            };
        }
    };
    if !decided.in_scope {
        let message = facts
            .officer
            .and_then(|o| o.note.clone())
            .or_else(|| facts.classification.and_then(|c| c.agency.as_ref()).map(|a| a.message.clone()))
            .unwrap_or_else(|| {
                "Laporan Anda berada di luar kewenangan Kementerian Sosial. Silakan sampaikan kepada instansi yang berwenang melalui lapor.go.id.".to_owned()
            });
        return Verdict::OutOfScope { decided, message };
    }
    if decided.category.is_none() {
        return Verdict::Review {
            reasons: vec!["in scope but no category".into()],
        };
    }
    if decided.needs_followup {
        let mut missing = Vec::new();
        if !facts.requirements.kk_number {
            missing.push(Missing::KkNumber);
        }
        if !facts.requirements.kk_copy {
            missing.push(Missing::KkCopy);
        }
        if !missing.is_empty() {
            return Verdict::NeedsInfo { decided, missing };
        }
    }
    Verdict::Verified { decided }
}

/// The reporter's message for missing requirements.
pub fn needs_info_message(answers: &Answers, missing: &[Missing], tracking_id: &str) -> String {
    let items: Vec<String> = missing
        .iter()
        .map(|m| match m {
            Missing::KkNumber => answers.message("missing_kk_number", &[]),
            Missing::KkCopy => answers.message("missing_kk_copy", &[]),
        })
        .collect();
    answers.message(
        "needs_info",
        &[
            ("missing", &items.join(" dan ")),
            ("tracking_id", tracking_id),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Classifier;
    use lapor_shared::data::ReferenceData;

    fn data() -> ReferenceData {
        ReferenceData::built_in()
    }

    fn all_there() -> Requirements {
        Requirements {
            kk_number: true,
            kk_copy: true,
        }
    }

    #[test]
    fn a_clear_pkh_complaint_is_verified_for_follow_up() {
        let (d, c) = (
            data(),
            Classifier::built_in(0.5)
                .classify("Bantuan PKH saya tidak cair sejak tiga bulan.", None),
        );
        let v = decide(
            &Facts {
                classification: Some(&c),
                officer: None,
                duplicate_of: None,
                requirements: all_there(),
            },
            &d.routing,
        );
        assert_eq!(
            v,
            Verdict::Verified {
                decided: Decided {
                    kind: Kind::Complaint,
                    in_scope: true,
                    category: Some(Category::Pkh),
                    needs_followup: true
                }
            }
        );
    }

    #[test]
    fn a_complaint_without_the_family_card_waits_for_it() {
        let (d, c) = (
            data(),
            Classifier::built_in(0.5)
                .classify("Bantuan PKH saya tidak cair sejak tiga bulan.", None),
        );
        let req = Requirements {
            kk_number: false,
            kk_copy: false,
        };
        let v = decide(
            &Facts {
                classification: Some(&c),
                officer: None,
                duplicate_of: None,
                requirements: req,
            },
            &d.routing,
        );
        assert!(
            matches!(v, Verdict::NeedsInfo { ref missing, .. } if missing == &[Missing::KkNumber, Missing::KkCopy])
        );
        let msg = needs_info_message(
            &d.answers,
            &[Missing::KkNumber, Missing::KkCopy],
            "AAAA-BBBB-CCCC",
        );
        assert!(
            msg.contains("nomor Kartu Keluarga")
                && msg.contains("salinan Kartu Keluarga")
                && msg.contains("AAAA-BBBB-CCCC")
        );
    }

    #[test]
    fn a_question_needs_no_family_card() {
        let (d, c) = (
            data(),
            Classifier::built_in(0.5).classify("Bagaimana cara mendaftar PKH?", None),
        );
        let req = Requirements {
            kk_number: false,
            kk_copy: false,
        };
        let v = decide(
            &Facts {
                classification: Some(&c),
                officer: None,
                duplicate_of: None,
                requirements: req,
            },
            &d.routing,
        );
        assert!(
            matches!(
                v,
                Verdict::Verified {
                    decided: Decided {
                        needs_followup: false,
                        ..
                    }
                }
            ),
            "{v:?}"
        );
    }

    #[test]
    fn the_officer_decides_over_the_classifier() {
        let (d, c) = (data(), Classifier::built_in(0.5).classify("Halo", None));
        let o = OfficerDecision {
            officer: "siti".into(),
            kind: Kind::Complaint,
            in_scope: true,
            category: Some(Category::Lansia),
            needs_followup: true,
            note: None,
        };
        let v = decide(
            &Facts {
                classification: Some(&c),
                officer: Some(&o),
                duplicate_of: None,
                requirements: all_there(),
            },
            &d.routing,
        );
        assert!(matches!(
            v,
            Verdict::Verified {
                decided: Decided {
                    category: Some(Category::Lansia),
                    ..
                }
            }
        ));
    }

    #[test]
    fn near_identical_texts_are_duplicates_and_different_ones_are_not() {
        let n = Classifier::built_in(0.5);
        let norm = n.normaliser();
        let earlier = vec![EarlierCase {
            id: Uuid::nil(),
            tracking_id: "T".into(),
            text: "PKH saya belum cair sudah 3 bulan, mohon dibantu.".into(),
            same_lapor_id: false,
        }];
        assert!(
            find_duplicate(
                norm,
                "pkh sy blm cair sdh 3 bln mohon dibantu",
                &earlier,
                0.8
            )
            .is_some()
        );
        assert!(find_duplicate(norm, "Anak saya butuh kursi roda.", &earlier, 0.8).is_none());
    }
}
