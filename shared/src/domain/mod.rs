//! Domain values that can only exist valid. Every type here parses on construction and
//! returns a typed error that names what is wrong; none of them knows about lapin or sqlx.

mod case;
mod identity;
mod region;
mod tracking_id;
mod unit_code;

pub use case::{CaseStatus, Category, Channel, Kind, UnknownCode};
pub use identity::{IdentityError, KkNumber, Nik, PhoneNumber};
pub use region::{ProvinceCode, RegencyCode, RegionError};
pub use tracking_id::{TrackingId, TrackingIdError};
pub use unit_code::{UnitCode, UnitCodeError};
