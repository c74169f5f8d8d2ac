//! Personal identifiers. Their `Debug` output is redacted and they have no `Display`, so a
//! stray `{:?}` or `%value` in a log line cannot leak them; the digits are reachable only
//! through `expose()`, which is greppable.

use super::region::ProvinceCode;
use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("must be exactly 16 digits")]
    NotSixteenDigits,
    #[error("starts with {0}, which is not an Indonesian province code")]
    UnknownProvince(String),
    #[error("regency/city part (digits 3-4) cannot be 00")]
    ZeroRegency,
    #[error("district part (digits 5-6) cannot be 00")]
    ZeroDistrict,
    #[error("digits 7-12 are not a real date (DDMMYY; women add 40 to the day)")]
    BadDate,
    #[error("serial number (last 4 digits) cannot be 0000")]
    ZeroSerial,
    #[error("must be an Indonesian phone number: 9 to 15 digits, starting with 0, 62 or +62")]
    BadPhone,
}

/// Structure shared by NIK and KK number: `PPKKCC DDMMYY SSSS`.
fn check_sixteen(s: &str, female_offset: bool) -> Result<[u8; 16], IdentityError> {
    let b = s.as_bytes();
    if b.len() != 16 || !b.iter().all(u8::is_ascii_digit) {
        return Err(IdentityError::NotSixteenDigits);
    }
    if ProvinceCode::parse(&s[0..2]).is_err() {
        return Err(IdentityError::UnknownProvince(s[0..2].to_owned()));
    }
    if &s[2..4] == "00" {
        return Err(IdentityError::ZeroRegency);
    }
    if &s[4..6] == "00" {
        return Err(IdentityError::ZeroDistrict);
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
    let mut day = num(6..8);
    if female_offset && day > 40 {
        day -= 40;
    }
    let (month, yy) = (num(8..10), num(10..12) as i32);
    // A two-digit year is ambiguous; the date is real if it exists in either century
    // (this only matters for 29 February).
    let real = [1900 + yy, 2000 + yy]
        .iter()
        .any(|y| NaiveDate::from_ymd_opt(*y, month, day).is_some());
    if !real {
        return Err(IdentityError::BadDate);
    }
    if &s[12..16] == "0000" {
        return Err(IdentityError::ZeroSerial);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(b);
    Ok(out)
}

macro_rules! sixteen_digit_identifier {
    ($name:ident, $label:literal, $female_offset:expr) => {
        #[doc = concat!("A structurally valid ", $label, ".")]
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name([u8; 16]);

        impl $name {
            /// Accepts digits with optional spaces, dots or dashes between them.
            pub fn parse(s: &str) -> Result<Self, IdentityError> {
                let compact: String = s
                    .chars()
                    .filter(|c| !matches!(c, ' ' | '.' | '-'))
                    .collect();
                check_sixteen(&compact, $female_offset).map(Self)
            }

            /// The digits, for storage and for the one unit allowed to see them.
            pub fn expose(&self) -> &str {
                std::str::from_utf8(&self.0).unwrap_or("")
            }

            pub fn province(&self) -> ProvinceCode {
                // Validated at construction.
                ProvinceCode::parse(&self.expose()[..2]).unwrap_or_else(|_| unreachable_province())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(****************)"))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.expose())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                // The error message names the rule, never the value.
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

#[cold]
fn unreachable_province() -> ProvinceCode {
    // Both identifier types validate the province before construction.
    ProvinceCode::all()
        .next()
        .expect("the province table is not empty")
}

sixteen_digit_identifier!(Nik, "NIK (Nomor Induk Kependudukan)", true);
sixteen_digit_identifier!(KkNumber, "family card (Kartu Keluarga) number", false);

/// An Indonesian phone number, normalised to `+62…`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let digits: String = s
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let national = if let Some(rest) = digits.strip_prefix("+62") {
            rest
        } else if let Some(rest) = digits.strip_prefix("62") {
            rest
        } else if let Some(rest) = digits.strip_prefix('0') {
            rest
        } else {
            return Err(IdentityError::BadPhone);
        };
        if !(7..=13).contains(&national.len())
            || !national.bytes().all(|b| b.is_ascii_digit())
            || national.starts_with('0')
        {
            return Err(IdentityError::BadPhone);
        }
        Ok(Self(format!("+62{national}")))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PhoneNumber(+62*******)")
    }
}

impl Serialize for PhoneNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nik_accepts_men_and_women() {
        // 32 01 01, born 05-06-1990 (man), serial 0001
        assert!(Nik::parse("3201010506900001").is_ok());
        // same date for a woman: day + 40
        assert!(Nik::parse("3201014506900001").is_ok());
        assert!(Nik::parse("3201-0145 0690 0001").is_ok());
    }

    #[test]
    fn nik_rejections_name_the_rule() {
        use IdentityError::*;
        assert_eq!(Nik::parse("320101450690000"), Err(NotSixteenDigits));
        assert_eq!(Nik::parse("32010145069000a1"), Err(NotSixteenDigits));
        assert_eq!(
            Nik::parse("2001014506900001"),
            Err(UnknownProvince("20".into()))
        );
        assert_eq!(Nik::parse("3200014506900001"), Err(ZeroRegency));
        assert_eq!(Nik::parse("3201004506900001"), Err(ZeroDistrict));
        assert_eq!(
            Nik::parse("3201013506900001"),
            Err(BadDate),
            "day 35 is neither sex"
        );
        assert_eq!(Nik::parse("3201017206900001"), Err(BadDate), "72 - 40 = 32");
        assert_eq!(Nik::parse("3201010513900001"), Err(BadDate), "month 13");
        assert_eq!(Nik::parse("3201013102900001"), Err(BadDate), "31 February");
        assert_eq!(Nik::parse("3201010506900000"), Err(ZeroSerial));
    }

    #[test]
    fn leap_day_is_accepted_when_some_century_has_it() {
        assert!(Nik::parse("3201012902000001").is_ok(), "29-02-2000");
        assert!(Nik::parse("3201012902960001").is_ok(), "29-02-1996");
        assert_eq!(Nik::parse("3201012902970001"), Err(IdentityError::BadDate));
    }

    #[test]
    fn kk_number_has_no_female_offset() {
        assert!(KkNumber::parse("3273011203150007").is_ok());
        assert_eq!(
            KkNumber::parse("3273015203150007"),
            Err(IdentityError::BadDate)
        );
    }

    #[test]
    fn debug_output_never_shows_digits() {
        let nik = Nik::parse("3201014506900001").expect("valid");
        let shown = format!(
            "{nik:?} {:?}",
            PhoneNumber::parse("081234567890").expect("valid")
        );
        assert!(
            !shown
                .chars()
                .any(|c| c.is_ascii_digit() && c != '6' && c != '2'),
            "{shown}"
        );
        assert!(!shown.contains("4506"));
    }

    #[test]
    fn deserialise_errors_do_not_echo_the_value() {
        let err = serde_json::from_str::<Nik>("\"3201013506900001\"").expect_err("bad date");
        assert!(!err.to_string().contains("3201013506900001"), "{err}");
    }

    #[test]
    fn phone_numbers_normalise() {
        for ok in ["081234567890", "+62 812-3456-7890", "6281234567890"] {
            assert_eq!(PhoneNumber::parse(ok).expect(ok).expose(), "+6281234567890");
        }
        for bad in [
            "12345",
            "0812",
            "+1 555 0100 200",
            "08123456789012345",
            "0812abc45678",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }
}
