//! The classifier: from a complaint's text to kind, scope and category, with a confidence and
//! the evidence that decided it. Pure function of (text, lexicon). Everything it knows about
//! the domain is in data files (lexicon, normalisation, agencies), which officers can read
//! and the ministry can change without a rebuild.
//!
//! How it decides:
//! - **Kind**: information-request and aspiration cues compete with grievance cues; a report
//!   with no cues at all is a complaint (most reports are). A kind the reporter chose is kept.
//! - **Scope**: the best category's evidence (plus general social-welfare signals) against
//!   the best out-of-scope agency's. The stronger side wins.
//! - **Category**: the highest-scoring category.
//! - **Confidence**: for each decision, how far the winner is ahead of the runner-up; the
//!   lowest of the three. Below the review threshold, or with no evidence at all, the case
//!   goes to an officer.

mod lexicon;
mod normalise;

pub use lexicon::{MEDIUM, STRONG, Term, TermSet, Text, Tiers, WEAK};
pub use normalise::Normaliser;

use lapor_shared::data::DataSource;
use lapor_shared::domain::{Category, Kind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Auto,
    ManualReview,
}

/// One piece of evidence: which target it supports, the term, and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub target: String,
    pub term: String,
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agency {
    pub code: String,
    pub name: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    pub kind: Kind,
    pub in_scope: bool,
    pub category: Option<Category>,
    pub confidence: f64,
    pub decision: Decision,
    /// For out-of-scope matters: where the reporter should go.
    pub agency: Option<Agency>,
    pub evidence: Vec<Evidence>,
    /// Why an officer should look, when the decision is manual review.
    pub review_reasons: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("classifier data {file}: {reason}")]
pub struct LexiconError {
    file: &'static str,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LexiconFile {
    version: String,
    yield_weight: f64,
    general: Tiers,
    kinds: BTreeMap<String, Tiers>,
    categories: BTreeMap<String, CategoryEntry>,
    ages: Ages,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryEntry {
    #[serde(default)]
    yields_to: Vec<String>,
    #[serde(default)]
    needs_context: bool,
    #[serde(default)]
    strong: Vec<String>,
    #[serde(default)]
    medium: Vec<String>,
    #[serde(default)]
    weak: Vec<String>,
}

struct CategoryRule {
    category: Category,
    terms: TermSet,
    yields_to: Vec<Category>,
    needs_context: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ages {
    elderly_from: u32,
    elderly_weight: f64,
    child_until: u32,
    child_weight: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgenciesFile {
    message: String,
    agency: Vec<AgencyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgencyEntry {
    code: String,
    name: String,
    channel: String,
    #[serde(flatten)]
    tiers: Tiers,
}

struct CompiledAgency {
    agency: Agency,
    terms: TermSet,
}

pub struct Classifier {
    pub version: String,
    normaliser: Normaliser,
    general: TermSet,
    kinds: Vec<(Kind, TermSet)>,
    categories: Vec<CategoryRule>,
    agencies: Vec<CompiledAgency>,
    ages: Ages,
    yield_weight: f64,
    threshold: f64,
}

/// How far `best` is ahead of `second`, as a confidence in [0, 1]: 0.5 when level, towards 1
/// as the lead grows relative to the evidence. No evidence at all gives 0.
fn lead(best: f64, second: f64) -> f64 {
    if best <= 0.0 {
        return 0.0;
    }
    let c = 0.5 + 0.5 * (best - second) / (best + 1.0);
    if best == second { c - 0.05 } else { c }
}

/// Ages in the text: "umur 80", "berusia 14", "90 tahun" (but not "sudah 3 tahun", "2 tahun lalu").
fn ages(tokens: &[String]) -> Vec<u32> {
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let Ok(n) = t.parse::<u32>() else { continue };
        let prev = i.checked_sub(1).map(|p| tokens[p].as_str()).unwrap_or("");
        let next = tokens.get(i + 1).map(String::as_str).unwrap_or("");
        let after_next = tokens.get(i + 2).map(String::as_str).unwrap_or("");
        let stated = matches!(
            prev,
            "umur" | "usia" | "berumur" | "berusia" | "umurnya" | "usianya"
        );
        let years = next == "tahun"
            && !matches!(
                prev,
                "sudah"
                    | "selama"
                    | "sejak"
                    | "lebih"
                    | "hampir"
                    | "dari"
                    | "tiap"
                    | "setiap"
                    | "per"
            )
            && !matches!(
                after_next,
                "lalu" | "terakhir" | "silam" | "belakangan" | "ini"
            );
        if (stated || years) && n <= 120 {
            out.push(n);
        }
    }
    out
}

impl Classifier {
    pub fn load(source: &DataSource, review_threshold: f64) -> Result<Self, LexiconError> {
        let read = |file: &'static str| {
            source
                .read(file)
                .map(|(t, _)| t.into_owned())
                .map_err(|e| LexiconError {
                    file,
                    reason: e.to_string(),
                })
        };
        Self::from_texts(
            &read("lexicon.toml")?,
            &read("normalisation.toml")?,
            &read("agencies.toml")?,
            review_threshold,
        )
    }

    pub fn built_in(review_threshold: f64) -> Self {
        Self::load(&DataSource::built_in(), review_threshold)
            .expect("the built-in lexicon is valid")
    }

    pub fn from_texts(
        lexicon: &str,
        normalisation: &str,
        agencies: &str,
        threshold: f64,
    ) -> Result<Self, LexiconError> {
        let err = |file: &'static str| move |reason: String| LexiconError { file, reason };
        let normaliser = Normaliser::parse(normalisation).map_err(err("normalisation.toml"))?;
        let lex: LexiconFile =
            toml::from_str(lexicon).map_err(|e| err("lexicon.toml")(e.to_string()))?;
        let mut kinds = Vec::new();
        for (name, tiers) in &lex.kinds {
            let kind =
                Kind::parse(name).map_err(|e| err("lexicon.toml")(format!("kinds.{name}: {e}")))?;
            kinds.push((kind, TermSet::from_tiers(tiers, &normaliser)));
        }
        let mut categories = Vec::new();
        for (name, entry) in &lex.categories {
            let at = |e: String| err("lexicon.toml")(format!("categories.{name}: {e}"));
            let category = Category::parse(name).map_err(|e| at(e.to_string()))?;
            let yields_to = entry
                .yields_to
                .iter()
                .map(|y| Category::parse(y).map_err(|e| at(format!("yields_to: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let tiers = Tiers {
                strong: entry.strong.clone(),
                medium: entry.medium.clone(),
                weak: entry.weak.clone(),
            };
            categories.push(CategoryRule {
                category,
                terms: TermSet::from_tiers(&tiers, &normaliser),
                yields_to,
                needs_context: entry.needs_context,
            });
        }
        if let Some(missing) = Category::ALL
            .iter()
            .find(|c| !categories.iter().any(|r| r.category == **c))
        {
            return Err(err("lexicon.toml")(format!(
                "category {missing} has no evidence terms"
            )));
        }
        let ag: AgenciesFile =
            toml::from_str(agencies).map_err(|e| err("agencies.toml")(e.to_string()))?;
        let agencies = ag
            .agency
            .into_iter()
            .map(|a| CompiledAgency {
                terms: TermSet::from_tiers(&a.tiers, &normaliser),
                agency: Agency {
                    message: ag
                        .message
                        .replace("{agency}", &a.name)
                        .replace("{channel}", &a.channel),
                    code: a.code,
                    name: a.name,
                },
            })
            .collect();
        Ok(Self {
            version: lex.version,
            general: TermSet::from_tiers(&lex.general, &normaliser),
            normaliser,
            kinds,
            categories,
            agencies,
            ages: lex.ages,
            yield_weight: lex.yield_weight,
            threshold,
        })
    }

    pub fn normaliser(&self) -> &Normaliser {
        &self.normaliser
    }

    pub fn classify(&self, text: &str, claimed_kind: Option<Kind>) -> Classification {
        let tokens = self.normaliser.tokens(text);
        let words = Text::new(&tokens);
        let mut evidence = Vec::new();
        let note = |evidence: &mut Vec<Evidence>, target: String, hits: &[&Term]| {
            evidence.extend(hits.iter().map(|t| Evidence {
                target: target.clone(),
                term: t.label.clone(),
                weight: t.weight,
            }));
        };
        let mut reasons = Vec::new();

        // Kind.
        let mut kind_scores: Vec<(Kind, f64)> = Vec::new();
        for (kind, set) in &self.kinds {
            let (s, hits) = set.score(&words);
            note(&mut evidence, format!("kind:{kind}"), &hits);
            kind_scores.push((*kind, s));
        }
        let score_of = |k: Kind| {
            kind_scores
                .iter()
                .find(|(x, _)| *x == k)
                .map_or(0.0, |(_, s)| *s)
        };
        let (info, asp, adu) = (
            score_of(Kind::InformationRequest),
            score_of(Kind::Aspiration),
            score_of(Kind::Complaint),
        );
        let (kind, kind_conf) = if let Some(k) = claimed_kind {
            (k, 0.9)
        } else if info == 0.0 && asp == 0.0 {
            (Kind::Complaint, 0.8)
        } else {
            let mut ranked = [
                (Kind::Aspiration, asp),
                (Kind::InformationRequest, info),
                (Kind::Complaint, adu),
            ];
            // Stable sort keeps aspiration before information before complaint on ties.
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            (ranked[0].0, lead(ranked[0].1, ranked[1].1))
        };

        // Category and scope.
        // Raw scores and which categories have strong evidence.
        let mut raw: Vec<(Category, f64, bool)> = Vec::new();
        for rule in &self.categories {
            let (s, hits) = rule.terms.score(&words);
            note(&mut evidence, format!("category:{}", rule.category), &hits);
            raw.push((rule.category, s, hits.iter().any(|t| t.weight >= STRONG)));
        }
        for age in ages(&tokens) {
            let (target, w) = if age >= self.ages.elderly_from {
                (Category::Lansia, self.ages.elderly_weight)
            } else if age <= self.ages.child_until {
                (Category::Anak, self.ages.child_weight)
            } else {
                continue;
            };
            if let Some(entry) = raw.iter_mut().find(|(c, _, _)| *c == target) {
                entry.1 += w;
                evidence.push(Evidence {
                    target: format!("category:{target}"),
                    term: format!("{age} tahun"),
                    weight: w,
                });
            }
        }
        let (general, hits) = self.general.score(&words);
        note(&mut evidence, "general".into(), &hits);
        let strong = |c: Category| raw.iter().any(|(x, _, st)| *x == c && *st);
        let mut cats: Vec<(Category, f64)> = Vec::new();
        for rule in &self.categories {
            let own = raw
                .iter()
                .find(|(c, _, _)| *c == rule.category)
                .map_or(0.0, |r| r.1);
            let mut score = own;
            if rule.needs_context {
                let context =
                    general > 0.0 || raw.iter().any(|(c, s, _)| *c != rule.category && *s > 0.0);
                if !context {
                    score = 0.0;
                }
            }
            if rule.yields_to.iter().any(|y| strong(*y)) {
                score *= self.yield_weight;
            }
            cats.push((rule.category, score));
        }
        cats.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (best_cat, best) = cats[0];
        let second = cats.get(1).map_or(0.0, |c| c.1);

        let mut agency_best: Option<(&CompiledAgency, f64)> = None;
        for a in &self.agencies {
            let (s, hits) = a.terms.score(&words);
            note(&mut evidence, format!("agency:{}", a.agency.code), &hits);
            if s > 0.0 && agency_best.is_none_or(|(_, b)| s > b) {
                agency_best = Some((a, s));
            }
        }
        let welfare = best + 0.5 * general;
        let outside = agency_best.map_or(0.0, |(_, s)| s);

        let (in_scope, category, agency, scope_conf, cat_conf) = if outside > welfare {
            (
                false,
                None,
                agency_best.map(|(a, _)| a.agency.clone()),
                lead(outside, welfare),
                1.0,
            )
        } else if best > 0.0 {
            (
                true,
                Some(best_cat),
                None,
                lead(welfare, outside),
                lead(best, second),
            )
        } else {
            // Nothing points anywhere: social-welfare words alone, or no evidence at all.
            reasons.push("no category evidence".to_owned());
            (true, None, None, if general > 0.0 { 0.5 } else { 0.0 }, 0.0)
        };

        if kind_conf < self.threshold {
            reasons.push(format!("kind unclear ({kind} by a narrow margin)"));
        }
        if scope_conf < self.threshold {
            reasons.push("authority unclear (in-scope and out-of-scope evidence close)".to_owned());
        }
        if in_scope && category.is_some() && cat_conf < self.threshold {
            reasons.push(format!("category unclear ({} vs {})", cats[0].0, cats[1].0));
        }
        let confidence = kind_conf.min(scope_conf).min(cat_conf);
        let decision = if confidence < self.threshold || !reasons.is_empty() {
            Decision::ManualReview
        } else {
            Decision::Auto
        };
        Classification {
            kind,
            in_scope,
            category,
            confidence: (confidence * 100.0).round() / 100.0,
            decision,
            agency,
            evidence,
            review_reasons: reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> Classifier {
        Classifier::built_in(0.5)
    }

    #[test]
    fn sms_shorthand_about_pkh_is_a_complaint() {
        let r = c().classify("pkh sy blm cair 2 bln, mhn dibantu", None);
        assert_eq!(
            (r.kind, r.in_scope, r.category),
            (Kind::Complaint, true, Some(Category::Pkh))
        );
        assert_eq!(r.decision, Decision::Auto);
        assert!(
            r.evidence
                .iter()
                .any(|e| e.target == "category:pkh" && e.term == "pkh")
        );
    }

    #[test]
    fn questions_are_information_requests() {
        let r = c().classify(
            "Bagaimana cara mendaftar sebagai penerima bansos di DTSEN?",
            None,
        );
        assert_eq!(
            (r.kind, r.category),
            (Kind::InformationRequest, Some(Category::DataPenerima))
        );
    }

    #[test]
    fn suggestions_are_aspirations() {
        let r = c().classify(
            "Saran saya, penyaluran bantuan sembako diumumkan lebih awal.",
            None,
        );
        assert_eq!(
            (r.kind, r.category),
            (Kind::Aspiration, Some(Category::Sembako))
        );
    }

    #[test]
    fn misconduct_outweighs_the_programme_it_happens_in() {
        let r = c().classify(
            "Oknum pendamping memotong bantuan PKH warga Rp50.000 per orang.",
            None,
        );
        assert_eq!(r.category, Some(Category::Penyimpangan));
    }

    #[test]
    fn other_agencies_are_named() {
        let r = c().classify(
            "Token listrik di rumah saya tidak bisa diisi sejak kemarin.",
            None,
        );
        assert!(!r.in_scope);
        let agency = r.agency.expect("agency");
        assert_eq!(agency.code, "pln");
        assert!(agency.message.contains("PLN"));
    }

    #[test]
    fn stated_ages_count_but_durations_do_not() {
        let toks = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(ages(&toks("kakek saya 90 tahun")), [90]);
        assert_eq!(ages(&toks("umur 14 sudah menikah")), [14]);
        assert!(ages(&toks("sudah 3 tahun menunggu")).is_empty());
        assert!(ages(&toks("2 tahun lalu")).is_empty());
    }

    #[test]
    fn no_evidence_goes_to_an_officer() {
        let r = c().classify("Halo selamat pagi", None);
        assert_eq!(r.decision, Decision::ManualReview);
    }

    #[test]
    fn the_reporters_own_kind_is_kept() {
        let r = c().classify("Bagaimana cara mendaftar PKH?", Some(Kind::Complaint));
        assert_eq!(r.kind, Kind::Complaint);
    }
}
