use super::{DataError, invalid, parse_toml};
use crate::domain::ProvinceCode;
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Province {
    pub code: ProvinceCode,
    pub name: String,
    pub capital: String,
    pub zone: Tz,
}

#[derive(Debug, Clone)]
pub struct Provinces(BTreeMap<ProvinceCode, Province>);

#[derive(Deserialize)]
struct File {
    province: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    code: String,
    name: String,
    capital: String,
    zone: String,
}

impl Provinces {
    pub fn parse(file: &str, text: &str) -> Result<Self, DataError> {
        let f: File = parse_toml(file, text)?;
        let mut map = BTreeMap::new();
        for e in f.province {
            let code = ProvinceCode::parse(&e.code)
                .map_err(|err| invalid(file, format!("province {}: {err}", e.code)))?;
            let zone: Tz = e.zone.parse().map_err(|_| {
                invalid(
                    file,
                    format!("province {}: unknown time zone {}", e.code, e.zone),
                )
            })?;
            if map
                .insert(
                    code,
                    Province {
                        code,
                        name: e.name,
                        capital: e.capital,
                        zone,
                    },
                )
                .is_some()
            {
                return Err(invalid(file, format!("province {} listed twice", e.code)));
            }
        }
        if let Some(missing) = ProvinceCode::all().find(|p| !map.contains_key(p)) {
            return Err(invalid(file, format!("province {missing} is missing")));
        }
        Ok(Self(map))
    }

    pub fn get(&self, code: ProvinceCode) -> Option<&Province> {
        self.0.get(&code)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
