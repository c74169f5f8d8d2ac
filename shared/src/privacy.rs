//! Keeping personal data where it belongs: scrubbing text that may reach a log line or a
//! parking reason, masking identifiers in free text before it goes to a unit that may not
//! see them, and a keyed pseudonym for matching a reporter's cases without reading the NIK.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Makes a diagnostic message (a serde error, a database error) safe for logs and parking
/// reasons: quoted values become `"…"` and every run of 4 or more digits becomes `#`s, so
/// neither an echoed NIK nor a phone number survives.
pub fn scrub(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() >= 4 {
            out.push_str("####");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        flush(&mut digits, &mut out);
        if c == '"' || c == '`' {
            // Skip to the closing quote; keep the quotes so the sentence still reads.
            let close = c;
            out.push(close);
            out.push('…');
            for n in chars.by_ref() {
                if n == close {
                    break;
                }
            }
            out.push(close);
        } else {
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// Masks what looks like an identity number, phone number or e-mail address in free text that
/// goes to a reader who may not see the reporter's identity (a tembusan, an anonymous report).
/// A run of 9 or more digits, possibly broken by spaces, dots or dashes, is masked; shorter
/// numbers (amounts, dates, RT/RW) are kept because the case is unreadable without them.
pub fn mask_identifiers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // e-mail: mask the whole token around '@'
        if c == '@' {
            while out.chars().last().is_some_and(|p| !p.is_whitespace()) {
                out.pop();
            }
            while i < chars.len() && !chars[i].is_whitespace() {
                i += 1;
            }
            out.push_str("[email disamarkan]");
            continue;
        }
        if c.is_ascii_digit() || (c == '+' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            let mut j = i;
            let mut count = 0;
            let mut end = i;
            while j < chars.len() {
                let d = chars[j];
                if d.is_ascii_digit() {
                    count += 1;
                    end = j + 1;
                } else if !(matches!(d, ' ' | '.' | '-' | '+')
                    && j + 1 < chars.len()
                    && chars[j + 1].is_ascii_digit())
                {
                    break;
                }
                j += 1;
            }
            if count >= 9 {
                out.push_str("[nomor disamarkan]");
            } else {
                out.extend(&chars[start..end]);
            }
            i = end.max(start + 1);
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Keyed hash of an identifier: equal inputs match, and without the key the value cannot be
/// brute-forced back out of the small NIK space.
pub fn pseudonym(key: &str, value: &str) -> Vec<u8> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC accepts any key length");
    mac.update(value.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_echoed_values_and_long_numbers() {
        let s =
            scrub("invalid type: string \"3201014506900001\", expected u32 at line 1 column 40");
        assert_eq!(
            s,
            "invalid type: string \"…\", expected u32 at line 1 column 40"
        );
        assert_eq!(scrub("NIK 3201014506900001 rejected"), "NIK #### rejected");
    }

    #[test]
    fn masking_keeps_amounts_and_dates_but_not_identifiers() {
        let t = "NIK saya 3201014506900001, hp 0812-3456-7890 atau +62 812 3456 7890, \
                 email budi@contoh.id. Dipotong Rp100.000 pada 12-03-2026 di RT 03.";
        let m = mask_identifiers(t);
        assert!(
            !m.contains("3201014506900001") && !m.contains("3456") && !m.contains("budi@"),
            "{m}"
        );
        assert!(
            m.contains("Rp100.000") && m.contains("12-03-2026") && m.contains("RT 03"),
            "{m}"
        );
    }

    #[test]
    fn pseudonyms_are_keyed() {
        assert_eq!(
            pseudonym("k1-0123456789abcdef", "x"),
            pseudonym("k1-0123456789abcdef", "x")
        );
        assert_ne!(
            pseudonym("k1-0123456789abcdef", "x"),
            pseudonym("k2-0123456789abcdef", "x")
        );
    }
}
