//! `verifier eval FILE`: scores the classifier on a labelled JSON-lines file and prints
//! per-field accuracy, the manual-review rate, a confusion table of categories, and every
//! disagreement (so a lexicon change can be judged before it ships).

use crate::classify::{Classifier, Decision};
use lapor_shared::data::RoutingTable;
use lapor_shared::domain::{Category, Kind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Deserialize)]
pub struct Labelled {
    pub id: String,
    #[serde(default)]
    pub channel: Option<String>,
    pub text: String,
    pub expect: Expected,
}

#[derive(Debug, Deserialize)]
pub struct Expected {
    pub kind: Kind,
    pub in_scope: bool,
    pub category: Option<Category>,
    pub needs_followup: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub total: usize,
    pub kind_accuracy: f64,
    pub in_scope_accuracy: f64,
    /// Among automatic decisions only (what reaches units without an officer).
    pub category_accuracy_auto: f64,
    pub category_accuracy_all: f64,
    pub followup_accuracy: f64,
    pub manual_review_rate: f64,
    pub auto_decisions: usize,
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
    pub disagreements: Vec<String>,
}

/// Whether a classification means field follow-up: a complaint, in scope, in a category whose
/// route needs field action.
pub fn needs_followup(
    kind: Kind,
    in_scope: bool,
    category: Option<Category>,
    routing: &RoutingTable,
) -> bool {
    kind == Kind::Complaint
        && in_scope
        && category.is_some_and(|c| routing.route_for(c).field_followup)
}

fn label(c: Option<Category>) -> String {
    c.map_or("(out of scope)".to_owned(), |c| c.to_string())
}

pub fn parse(text: &str) -> Result<Vec<Labelled>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

pub fn evaluate(items: &[Labelled], classifier: &Classifier, routing: &RoutingTable) -> Report {
    let mut r = Report {
        total: items.len(),
        ..Default::default()
    };
    let (mut kind_ok, mut scope_ok, mut cat_ok_auto, mut cat_ok, mut fu_ok, mut review) =
        (0, 0, 0, 0, 0, 0);
    for item in items {
        let c = classifier.classify(&item.text, None);
        let fu = needs_followup(c.kind, c.in_scope, c.category, routing);
        let auto = c.decision == Decision::Auto;
        kind_ok += usize::from(c.kind == item.expect.kind);
        scope_ok += usize::from(c.in_scope == item.expect.in_scope);
        cat_ok += usize::from(c.category == item.expect.category);
        fu_ok += usize::from(fu == item.expect.needs_followup);
        if auto {
            r.auto_decisions += 1;
            cat_ok_auto += usize::from(c.category == item.expect.category);
        } else {
            review += 1;
        }
        *r.confusion
            .entry(label(item.expect.category))
            .or_default()
            .entry(label(c.category))
            .or_default() += 1;
        let mut wrong = Vec::new();
        if c.kind != item.expect.kind {
            wrong.push(format!("kind {} (expected {})", c.kind, item.expect.kind));
        }
        if c.in_scope != item.expect.in_scope {
            wrong.push(format!(
                "in_scope {} (expected {})",
                c.in_scope, item.expect.in_scope
            ));
        }
        if c.category != item.expect.category {
            wrong.push(format!(
                "category {} (expected {})",
                label(c.category),
                label(item.expect.category)
            ));
        }
        if fu != item.expect.needs_followup {
            wrong.push(format!(
                "needs_followup {fu} (expected {})",
                item.expect.needs_followup
            ));
        }
        if !wrong.is_empty() || !auto {
            let mode = if auto { "auto" } else { "review" };
            r.disagreements.push(format!(
                "{} [{mode} {:.2}] {}",
                item.id,
                c.confidence,
                if wrong.is_empty() {
                    "correct".into()
                } else {
                    wrong.join("; ")
                }
            ));
        }
    }
    let ratio = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    r.kind_accuracy = ratio(kind_ok, items.len());
    r.in_scope_accuracy = ratio(scope_ok, items.len());
    r.category_accuracy_all = ratio(cat_ok, items.len());
    r.category_accuracy_auto = ratio(cat_ok_auto, r.auto_decisions);
    r.followup_accuracy = ratio(fu_ok, items.len());
    r.manual_review_rate = ratio(review, items.len());
    r
}

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    writeln!(s, "complaints          {}", r.total).expect("writing to a String cannot fail");
    writeln!(s, "kind                {:.3}", r.kind_accuracy)
        .expect("writing to a String cannot fail");
    writeln!(s, "in_scope            {:.3}", r.in_scope_accuracy)
        .expect("writing to a String cannot fail");
    writeln!(
        s,
        "category (auto)     {:.3}   ({} automatic decisions)",
        r.category_accuracy_auto, r.auto_decisions
    )
    .expect("writing to a String cannot fail");
    writeln!(s, "category (all)      {:.3}", r.category_accuracy_all)
        .expect("writing to a String cannot fail");
    writeln!(s, "needs_followup      {:.3}", r.followup_accuracy)
        .expect("writing to a String cannot fail");
    writeln!(s, "manual review rate  {:.3}", r.manual_review_rate)
        .expect("writing to a String cannot fail");
    let mut cols: Vec<String> = r
        .confusion
        .values()
        .flat_map(|m| m.keys().cloned())
        .collect();
    cols.extend(r.confusion.keys().cloned());
    cols.sort();
    cols.dedup();
    writeln!(s, "\nconfusion (rows: expected, columns: predicted)")
        .expect("writing to a String cannot fail");
    let short = |c: &str| c.chars().take(6).collect::<String>();
    write!(s, "{:<22}", "").expect("writing to a String cannot fail");
    for c in &cols {
        write!(s, "{:>7}", short(c)).expect("writing to a String cannot fail");
    }
    writeln!(s).expect("writing to a String cannot fail");
    for (row, m) in &r.confusion {
        write!(s, "{row:<22}").expect("writing to a String cannot fail");
        for c in &cols {
            let n = m.get(c).copied().unwrap_or(0);
            write!(
                s,
                "{:>7}",
                if n == 0 {
                    ".".to_owned()
                } else {
                    n.to_string()
                }
            )
            .expect("writing to a String cannot fail");
        }
        writeln!(s).expect("writing to a String cannot fail");
    }
    if !r.disagreements.is_empty() {
        writeln!(s, "\ndisagreements and reviews").expect("writing to a String cannot fail");
        for d in &r.disagreements {
            writeln!(s, "  {d}").expect("writing to a String cannot fail");
        }
    }
    s
}
