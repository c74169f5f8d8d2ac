//! Tracking ids are read over the phone to call center 171 and typed from SMS, so they use
//! Crockford's base-32 alphabet (no I, L, O, U), are grouped `XXXX-XXXX-XXXX`, and end with a
//! Luhn mod 32 check character that catches any single wrong character and most swaps.
//! The 11 random characters carry 55 bits from a CSPRNG, so ids cannot be guessed or
//! enumerated; the rare collision is caught by the database's unique constraint and retried
//! with a fresh id.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RANDOM_LEN: usize = 11;
const LEN: usize = RANDOM_LEN + 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackingIdError {
    #[error("must be 12 characters (for example 7KQ2-9XDM-4F0R)")]
    Length,
    #[error("contains {0:?}, which is not used in tracking ids")]
    Character(char),
    #[error("check character does not match: a character was probably misread")]
    Check,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrackingId([u8; LEN]);

fn value(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|a| *a == c).map(|p| p as u32)
}

fn luhn_sum(values: impl DoubleEndedIterator<Item = u32>, start_factor: u32) -> u32 {
    let mut factor = start_factor;
    let mut sum = 0;
    for v in values.rev() {
        let addend = factor * v;
        sum += addend / 32 + addend % 32;
        factor = if factor == 2 { 1 } else { 2 };
    }
    sum
}

impl TrackingId {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut out = [0u8; LEN];
        for slot in out.iter_mut().take(RANDOM_LEN) {
            *slot = ALPHABET[rng.random_range(0..32)];
        }
        let sum = luhn_sum(out[..RANDOM_LEN].iter().filter_map(|c| value(*c)), 2);
        out[RANDOM_LEN] = ALPHABET[((32 - sum % 32) % 32) as usize];
        Self(out)
    }

    /// Accepts what people type: any case, with or without dashes or spaces, and the usual
    /// confusions (I/L for 1, O for 0).
    pub fn parse(s: &str) -> Result<Self, TrackingIdError> {
        let mut out = [0u8; LEN];
        let mut n = 0;
        for ch in s.chars() {
            if matches!(ch, '-' | ' ') {
                continue;
            }
            let c = match ch.to_ascii_uppercase() {
                'I' | 'L' => '1',
                'O' => '0',
                c => c,
            };
            if !c.is_ascii() || value(c as u8).is_none() {
                return Err(TrackingIdError::Character(ch));
            }
            if n == LEN {
                return Err(TrackingIdError::Length);
            }
            out[n] = c as u8;
            n += 1;
        }
        if n != LEN {
            return Err(TrackingIdError::Length);
        }
        if luhn_sum(out.iter().filter_map(|c| value(*c)), 1) % 32 != 0 {
            return Err(TrackingIdError::Check);
        }
        Ok(Self(out))
    }
}

impl fmt::Display for TrackingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = std::str::from_utf8(&self.0).map_err(|_| fmt::Error)?;
        write!(f, "{}-{}-{}", &s[0..4], &s[4..8], &s[8..12])
    }
}

impl fmt::Debug for TrackingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrackingId({self})")
    }
}

impl TryFrom<String> for TrackingId {
    type Error = TrackingIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TrackingId> for String {
    fn from(t: TrackingId) -> String {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip() {
        for _ in 0..1000 {
            let id = TrackingId::generate();
            let shown = id.to_string();
            assert_eq!(shown.len(), 14);
            assert_eq!(TrackingId::parse(&shown), Ok(id));
            assert_eq!(
                TrackingId::parse(&shown.to_lowercase().replace('-', "")),
                Ok(id)
            );
        }
    }

    #[test]
    fn every_single_character_error_is_caught() {
        let id = TrackingId::generate().to_string().replace('-', "");
        for pos in 0..LEN {
            for &c in ALPHABET {
                let mut b = id.clone().into_bytes();
                if b[pos] == c {
                    continue;
                }
                b[pos] = c;
                let typo = String::from_utf8(b).expect("ascii");
                assert!(TrackingId::parse(&typo).is_err(), "{typo} accepted");
            }
        }
    }

    #[test]
    fn confusable_letters_are_read_as_digits() {
        let id = TrackingId::generate();
        let s = id.to_string().replace('1', "l").replace('0', "O");
        assert_eq!(TrackingId::parse(&s), Ok(id));
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(TrackingId::parse("ABC"), Err(TrackingIdError::Length));
        assert_eq!(
            TrackingId::parse("ABCD-EFGH-UUUU"),
            Err(TrackingIdError::Character('U'))
        );
    }
}
