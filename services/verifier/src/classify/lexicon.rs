//! Lexicon entries compiled into matchers. A term is a sequence of word patterns matched
//! against consecutive tokens; each term counts once per text, however often it occurs.

use super::Normaliser;
use foldhash::HashSet;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
enum WordPattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl WordPattern {
    fn parse(w: &str) -> Self {
        let w = w.to_lowercase();
        match (w.strip_prefix('*'), w.strip_suffix('*')) {
            (Some(_), Some(_)) if w.len() > 2 => {
                WordPattern::Contains(w[1..w.len() - 1].to_owned())
            }
            (Some(rest), None) => WordPattern::Suffix(rest.to_owned()),
            (None, Some(rest)) => WordPattern::Prefix(rest.to_owned()),
            _ => WordPattern::Exact(w),
        }
    }

    fn matches(&self, token: &str) -> bool {
        match self {
            WordPattern::Exact(w) => token == w,
            WordPattern::Prefix(w) => token.starts_with(w.as_str()),
            WordPattern::Suffix(w) => token.ends_with(w.as_str()),
            WordPattern::Contains(w) => token.contains(w.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Term {
    pub label: String,
    pub weight: f64,
    words: Vec<WordPattern>,
}

impl Term {
    /// Compiles a lexicon entry. Plain words go through the same normaliser as complaint text
    /// (so "sebaiknya" in the lexicon matches "sebaiknya" in a complaint whatever the
    /// normaliser does to it); words with a * are taken as written.
    pub fn new(label: &str, weight: f64, normaliser: &Normaliser) -> Self {
        let mut words = Vec::new();
        for w in label.split_whitespace() {
            if w.contains('*') || w == "?" {
                words.push(WordPattern::parse(w));
            } else {
                words.extend(normaliser.tokens(w).into_iter().map(WordPattern::Exact));
            }
        }
        Self {
            label: label.to_owned(),
            weight,
            words,
        }
    }

    /// Whether every whole word the term names is somewhere in the text: a check by hash
    /// that rules out nearly every term before the scan of windows in [`Term::occurs_in`].
    fn may_occur_in(&self, text: &Text<'_>) -> bool {
        self.words.iter().all(|w| match w {
            WordPattern::Exact(w) => text.present.contains(w.as_str()),
            _ => true,
        })
    }

    pub fn occurs_in(&self, tokens: &[String]) -> bool {
        let n = self.words.len();
        n > 0
            && tokens.len() >= n
            && tokens
                .windows(n)
                .any(|w| w.iter().zip(&self.words).all(|(t, p)| p.matches(t)))
    }
}

/// The strong/medium/weak lists of one target, as in the data files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tiers {
    #[serde(default)]
    pub strong: Vec<String>,
    #[serde(default)]
    pub medium: Vec<String>,
    #[serde(default)]
    pub weak: Vec<String>,
}

pub const STRONG: f64 = 3.0;
pub const MEDIUM: f64 = 2.0;
pub const WEAK: f64 = 1.0;

/// A normalised text as the term sets read it: its tokens in order, and the set of distinct
/// tokens, built once per text and shared by every term set. The set hashes with foldhash,
/// seeded per process: several times faster than the standard SipHash on short words, where
/// this lookup was most of the classifier's time.
pub struct Text<'a> {
    tokens: &'a [String],
    present: HashSet<&'a str>,
}

impl<'a> Text<'a> {
    pub fn new(tokens: &'a [String]) -> Self {
        Self {
            tokens,
            present: tokens.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TermSet(Vec<Term>);

impl TermSet {
    pub fn from_tiers(t: &Tiers, normaliser: &Normaliser) -> Self {
        let mut terms = Vec::new();
        for (list, w) in [(&t.strong, STRONG), (&t.medium, MEDIUM), (&t.weak, WEAK)] {
            terms.extend(
                list.iter()
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| Term::new(s, w, normaliser)),
            );
        }
        Self(terms)
    }

    /// Total weight and the terms that matched.
    pub fn score<'a>(&'a self, text: &Text<'_>) -> (f64, Vec<&'a Term>) {
        let hits: Vec<&Term> = self
            .0
            .iter()
            .filter(|t| t.may_occur_in(text) && t.occurs_in(text.tokens))
            .collect();
        (hits.iter().map(|t| t.weight).sum(), hits)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn term(s: &str) -> Term {
        Term::new(s, 3.0, &Normaliser::default())
    }

    #[test]
    fn phrases_and_wildcards() {
        assert!(term("bantuan pangan").occurs_in(&toks("belum dapat bantuan pangan bulan ini")));
        assert!(!term("bantuan pangan").occurs_in(&toks("bantuan untuk pangan")));
        assert!(term("*potong*").occurs_in(&toks("bantuan dipotong ketua")));
        // me-/pe- drop the initial p: memotong, pemotongan need their own entry.
        assert!(!term("*potong*").occurs_in(&toks("ada pemotongan")));
        assert!(term("*motong*").occurs_in(&toks("ada pemotongan")));
        assert!(term("potong*").occurs_in(&toks("ada potongan")));
        assert!(!term("potong*").occurs_in(&toks("dipotong")));
        assert!(term("*potong").occurs_in(&toks("dipotong")));
        assert!(term("?").occurs_in(&toks("kapan ?")));
    }

    #[test]
    fn each_term_counts_once() {
        let set = TermSet::from_tiers(
            &Tiers {
                strong: vec!["pkh".into()],
                medium: vec![],
                weak: vec![],
            },
            &Normaliser::default(),
        );
        let tokens = toks("pkh pkh pkh");
        assert_eq!(set.score(&Text::new(&tokens)).0, 3.0);
    }

    /// The check by hash only skips terms the scan of windows would not find.
    #[test]
    fn quick_rejection_agrees_with_the_scan() {
        let set = TermSet::from_tiers(
            &Tiers {
                strong: vec!["bantuan pangan".into(), "*potong* ketua".into()],
                medium: vec!["kapan ?".into(), "belum cair".into(), "*motong*".into()],
                weak: vec!["?".into(), "pkh".into()],
            },
            &Normaliser::default(),
        );
        for text in [
            "bantuan pangan belum cair kapan ?",
            "pangan bantuan cair belum",
            "dana dipotong ketua rt",
            "ketua dipotong",
            "ada pemotongan pkh",
            "kapan cair",
            "",
        ] {
            let tokens = toks(text);
            let scanned: Vec<&str> = set
                .0
                .iter()
                .filter(|t| t.occurs_in(&tokens))
                .map(|t| t.label.as_str())
                .collect();
            let scored: Vec<&str> = set
                .score(&Text::new(&tokens))
                .1
                .iter()
                .map(|t| t.label.as_str())
                .collect();
            assert_eq!(scored, scanned, "{text}");
        }
        let tokens = toks("bantuan pangan belum cair kapan ?");
        assert_eq!(set.score(&Text::new(&tokens)).1.len(), 4);
    }
}
