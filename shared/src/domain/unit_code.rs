use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unit code must be 2-32 characters of A-Z, 0-9 and _, starting with a letter")]
pub struct UnitCodeError;

/// A unit's code, e.g. `LINJAMSOS` or `SENTRA_WYATA_GUNA`. It becomes part of routing keys
/// (`<CODE>.case`), queue names and RabbitMQ user names, so dots, `#` and `*` are excluded.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnitCode(String);

impl UnitCode {
    pub fn parse(s: &str) -> Result<Self, UnitCodeError> {
        let b = s.as_bytes();
        let ok = (2..=32).contains(&b.len())
            && b[0].is_ascii_uppercase()
            && b.iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(UnitCodeError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The unit's own queue.
    pub fn queue(&self) -> String {
        format!("units.{}", self.0)
    }

    /// A routing key under this unit, e.g. `LINJAMSOS.case`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}.{}", self.0, suffix)
    }
}

impl fmt::Display for UnitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for UnitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl TryFrom<String> for UnitCode {
    type Error = UnitCodeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<UnitCode> for String {
    fn from(u: UnitCode) -> String {
        u.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_safe_in_routing_keys() {
        assert!(UnitCode::parse("LINJAMSOS").is_ok());
        assert!(UnitCode::parse("SENTRA_WYATA_GUNA").is_ok());
        for bad in ["", "L", "linjamsos", "A.B", "A#", "A*", "1ABC", "ÄB"] {
            assert_eq!(UnitCode::parse(bad), Err(UnitCodeError), "{bad}");
        }
        let u = UnitCode::parse("REHSOS").expect("valid");
        assert_eq!(u.queue(), "units.REHSOS");
        assert_eq!(u.key("tembusan"), "REHSOS.tembusan");
    }
}
