//! Text normalisation: what turns "sy sdh 3 bln gk dpt bansos!!" into
//! `saya sudah 3 bulan tidak dapat bansos`. Pure; the token table is data.

use serde::Deserialize;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Default)]
pub struct Normaliser {
    tokens: HashMap<String, Vec<String>>,
    keep_nya: HashSet<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    keep_nya: Vec<String>,
    tokens: HashMap<String, String>,
}

impl Normaliser {
    pub fn parse(text: &str) -> Result<Self, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let tokens = f
            .tokens
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_lowercase(),
                    v.split_whitespace().map(str::to_lowercase).collect(),
                )
            })
            .collect();
        Ok(Self {
            tokens,
            keep_nya: f.keep_nya.into_iter().map(|w| w.to_lowercase()).collect(),
        })
    }

    /// Lower-cased word tokens, with `?` kept as a token of its own.
    pub fn tokens(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let lower = text.to_lowercase();
        for raw in lower.split(|c: char| !(c.is_alphanumeric() || c == '?')) {
            let mut word = String::new();
            for c in raw.chars() {
                if c == '?' {
                    self.push_word(&mut out, &word);
                    word.clear();
                    out.push("?".to_owned());
                } else {
                    word.push(c);
                }
            }
            self.push_word(&mut out, &word);
        }
        out
    }

    fn push_word(&self, out: &mut Vec<String>, word: &str) {
        if word.is_empty() {
            return;
        }
        // "anak2" is how SMS writes "anak-anak".
        if let Some(stem) = word.strip_suffix('2')
            && stem.chars().count() > 1
            && stem.chars().all(char::is_alphabetic)
        {
            let w = collapse(stem);
            let w = self.tokens.get(&w).cloned().unwrap_or_else(|| vec![w]);
            out.extend(w.iter().cloned());
            out.extend(w);
            return;
        }
        for part in split_letters_digits(word) {
            let part = self.strip_nya(collapse(&part));
            match self.tokens.get(&part) {
                Some(repl) => out.extend(repl.iter().cloned()),
                None => out.push(part),
            }
        }
    }
}

impl Normaliser {
    fn strip_nya(&self, word: String) -> String {
        match word.strip_suffix("nya") {
            Some(stem) if stem.chars().count() >= 3 && !self.keep_nya.contains(&word) => {
                stem.to_owned()
            }
            _ => word,
        }
    }
}

/// "rp100" → ["rp", "100"], "3x" → ["3", "x"].
fn split_letters_digits(word: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut cur_digit = None;
    for c in word.chars() {
        let d = c.is_ascii_digit();
        if cur_digit.is_some_and(|cd| cd != d) {
            parts.push(std::mem::take(&mut cur));
        }
        cur_digit = Some(d);
        cur.push(c);
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

/// Letters repeated three or more times for emphasis become one ("tolooong" → "tolong").
fn collapse(word: &str) -> String {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::with_capacity(word.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut j = i;
        while j < chars.len() && chars[j] == c {
            j += 1;
        }
        let run = j - i;
        if c.is_alphabetic() && run >= 3 {
            out.push(c);
        } else {
            out.extend(&chars[i..j]);
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n() -> Normaliser {
        Normaliser::parse(
            "[tokens]\nsy = \"saya\"\ngk = \"tidak\"\nbln = \"bulan\"\northu = \"orang tua\"\n",
        )
        .expect("valid")
    }

    #[test]
    fn sms_shorthand_expands() {
        assert_eq!(
            n().tokens("sy sdh 3 bln GK cair!!"),
            ["saya", "sdh", "3", "bulan", "tidak", "cair"]
        );
        assert_eq!(n().tokens("orthu sy"), ["orang", "tua", "saya"]);
    }

    #[test]
    fn question_marks_amounts_and_reduplication() {
        assert_eq!(n().tokens("knp?"), ["knp", "?"]);
        assert_eq!(n().tokens("Rp100.000"), ["rp", "100", "000"]);
        assert_eq!(
            n().tokens("anak2 di jalan"),
            ["anak", "anak", "di", "jalan"]
        );
        assert_eq!(n().tokens("anak-anak"), ["anak", "anak"]);
        assert_eq!(n().tokens("tolooong"), ["tolong"]);
        assert_eq!(n().tokens("e-warong"), ["e", "warong"]);
    }

    #[test]
    fn the_nya_suffix_is_removed_except_where_it_belongs() {
        let n = Normaliser::parse("keep_nya = [\"tanya\", \"hanya\"]\n[tokens]\n").expect("valid");
        assert_eq!(
            n.tokens("keluarganya bantuannya ibunya"),
            ["keluarga", "bantuan", "ibu"]
        );
        assert_eq!(n.tokens("hanya tanya nya"), ["hanya", "tanya", "nya"]);
    }
}
