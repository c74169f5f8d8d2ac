use serde::{Deserialize, Serialize};
use std::fmt;

/// The 38 province codes of Kemendagri/BPS in force since the 2022 Papua split.
/// Kept in code (not data) because NIK validation depends on it and it changes only by law.
const PROVINCES: [&str; 38] = [
    "11", "12", "13", "14", "15", "16", "17", "18", "19", "21", "31", "32", "33", "34", "35", "36",
    "51", "52", "53", "61", "62", "63", "64", "65", "71", "72", "73", "74", "75", "76", "81", "82",
    "91", "92", "93", "94", "95", "96",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("must be 2 digits")]
    ProvinceFormat,
    #[error("{0} is not one of Indonesia's 38 province codes")]
    UnknownProvince(String),
    #[error("must be 4 digits (province code followed by regency/city code)")]
    RegencyFormat,
    #[error("regency code {regency} does not belong to province {province}")]
    RegencyOutsideProvince { regency: String, province: String },
}

/// A province code such as `32` (Jawa Barat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProvinceCode([u8; 2]);

impl ProvinceCode {
    pub fn parse(s: &str) -> Result<Self, RegionError> {
        let b = s.as_bytes();
        if b.len() != 2 || !b.iter().all(u8::is_ascii_digit) {
            return Err(RegionError::ProvinceFormat);
        }
        if !PROVINCES.contains(&s) {
            return Err(RegionError::UnknownProvince(s.to_owned()));
        }
        Ok(Self([b[0], b[1]]))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    pub fn all() -> impl Iterator<Item = ProvinceCode> {
        PROVINCES.iter().filter_map(|p| Self::parse(p).ok())
    }
}

impl fmt::Display for ProvinceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl TryFrom<String> for ProvinceCode {
    type Error = RegionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<ProvinceCode> for String {
    fn from(p: ProvinceCode) -> String {
        p.as_str().to_owned()
    }
}

/// A regency/city code in Kemendagri form without the dot: `3273` is Kota Bandung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegencyCode([u8; 4]);

impl RegencyCode {
    pub fn parse(s: &str) -> Result<Self, RegionError> {
        let s = s.replace('.', "");
        let b = s.as_bytes();
        if b.len() != 4 || !b.iter().all(u8::is_ascii_digit) || &b[2..] == b"00" {
            return Err(RegionError::RegencyFormat);
        }
        ProvinceCode::parse(&s[..2])?;
        Ok(Self([b[0], b[1], b[2], b[3]]))
    }

    pub fn province(&self) -> ProvinceCode {
        ProvinceCode([self.0[0], self.0[1]])
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("????")
    }

    /// Checks that this regency lies in `province`.
    pub fn within(self, province: ProvinceCode) -> Result<Self, RegionError> {
        if self.province() == province {
            Ok(self)
        } else {
            Err(RegionError::RegencyOutsideProvince {
                regency: self.as_str().to_owned(),
                province: province.as_str().to_owned(),
            })
        }
    }
}

impl fmt::Display for RegencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl TryFrom<String> for RegencyCode {
    type Error = RegionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<RegencyCode> for String {
    fn from(r: RegencyCode) -> String {
        r.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_38_distinct_provinces() {
        let mut all: Vec<_> = ProvinceCode::all().collect();
        all.dedup();
        assert_eq!(all.len(), 38);
    }

    #[test]
    fn province_codes_parse_and_reject() {
        assert_eq!(
            ProvinceCode::parse("32").map(|p| p.to_string()),
            Ok("32".into())
        );
        assert_eq!(
            ProvinceCode::parse("20"),
            Err(RegionError::UnknownProvince("20".into()))
        );
        assert_eq!(ProvinceCode::parse("3"), Err(RegionError::ProvinceFormat));
        assert_eq!(ProvinceCode::parse("ab"), Err(RegionError::ProvinceFormat));
    }

    #[test]
    fn regency_codes_know_their_province() {
        let r = RegencyCode::parse("32.73").expect("valid");
        assert_eq!(r.as_str(), "3273");
        assert_eq!(r.province().as_str(), "32");
        assert!(r.within(ProvinceCode::parse("18").expect("valid")).is_err());
        assert!(RegencyCode::parse("3200").is_err());
        assert!(RegencyCode::parse("2001").is_err());
    }
}
