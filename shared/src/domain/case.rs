use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not one of: {allowed}")]
pub struct UnknownCode {
    pub value: String,
    pub allowed: &'static str,
}

/// Declares a closed set of wire codes with `parse`, `as_str`, serde and `ALL`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            const ALLOWED: &'static str = concat!($($code, " "),+);

            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $code),+ }
            }

            pub fn parse(s: &str) -> Result<Self, UnknownCode> {
                match s {
                    $($code => Ok($name::$variant),)+
                    _ => Err(UnknownCode { value: s.chars().take(40).collect(), allowed: Self::ALLOWED.trim_end() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl TryFrom<String> for $name {
            type Error = UnknownCode;
            fn try_from(s: String) -> Result<Self, Self::Error> { Self::parse(&s) }
        }
        impl From<$name> for &'static str {
            fn from(v: $name) -> &'static str { v.as_str() }
        }
        impl std::str::FromStr for $name {
            type Err = UnknownCode;
            fn from_str(s: &str) -> Result<Self, Self::Err> { Self::parse(s) }
        }
    };
}

wire_enum!(
    /// What the reporter sends: a complaint, an aspiration or an information request.
    Kind {
        Complaint = "aduan",
        Aspiration = "aspirasi",
        InformationRequest = "permintaan_informasi",
    }
);

wire_enum!(
    /// Where the report came in.
    Channel {
        Web = "web",
        App = "app",
        Sms = "sms",
        CallCenter = "call_center",
        Lapor = "lapor",
    }
);

wire_enum!(
    /// The default taxonomy. Routing maps each category to the unit responsible for it.
    Category {
        Pkh = "pkh",
        Sembako = "sembako",
        PbiJk = "pbi_jk",
        DataPenerima = "data_penerima",
        Bencana = "bencana",
        Disabilitas = "disabilitas",
        Lansia = "lansia",
        Anak = "anak",
        RehabilitasiSosial = "rehabilitasi_sosial",
        Pemberdayaan = "pemberdayaan",
        Penyimpangan = "penyimpangan",
    }
);

wire_enum!(
    /// Where a case stands. The tracking answer shows this; the SLA clock keys off it.
    CaseStatus {
        /// Accepted by intake, waiting for verification.
        Received = "received",
        /// Waiting on the reporter (missing KK number or KK copy); the SLA clock is paused.
        NeedsInfo = "needs_info",
        /// Waiting for an officer's decision.
        InReview = "in_review",
        /// Verified and categorised, waiting for distribution.
        Verified = "verified",
        /// With a unit for follow-up (disposisi).
        Routed = "routed",
        /// The unit has answered; closes after the reply window unless the reporter replies.
        Resolved = "resolved",
        /// Closed with a normative answer, no field follow-up.
        Answered = "answered",
        /// Not within the ministry's authority; the reporter was told where to go.
        OutOfScope = "out_of_scope",
        /// Linked to an earlier case from the same reporter.
        Duplicate = "duplicate",
        /// Closed after resolution.
        Closed = "closed",
    }
);

impl CaseStatus {
    /// No further work happens on a case in one of these states.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CaseStatus::Answered
                | CaseStatus::OutOfScope
                | CaseStatus::Duplicate
                | CaseStatus::Closed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_json() {
        for c in Category::ALL {
            let json = serde_json::to_string(c).expect("serialise");
            assert_eq!(&serde_json::from_str::<Category>(&json).expect("parse"), c);
        }
        assert_eq!(
            serde_json::to_string(&Kind::InformationRequest).expect("ser"),
            "\"permintaan_informasi\""
        );
    }

    #[test]
    fn unknown_codes_list_the_allowed_ones() {
        let err = Channel::parse("fax").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "\"fax\" is not one of: web app sms call_center lapor"
        );
    }
}
