use super::{DataError, invalid, parse_toml};
use crate::domain::{ProvinceCode, RegencyCode, UnitCode};
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    /// A directorate general, the secretariat or the inspectorate.
    Eselon1,
    /// A bureau or centre under the secretariat.
    Bureau,
    /// A technical field office (Sentra, Balai); receives tembusan copies by area.
    Upt,
}

#[derive(Debug, Clone)]
pub struct Unit {
    pub code: UnitCode,
    pub name: String,
    pub kind: UnitKind,
    pub parent: Option<UnitCode>,
    pub zone: Tz,
    pub provinces: Vec<ProvinceCode>,
    pub regencies: Vec<RegencyCode>,
    pub evidence: String,
}

#[derive(Debug, Clone)]
pub struct UnitRegistry {
    units: BTreeMap<UnitCode, Unit>,
    complaint_desk: UnitCode,
    by_province: BTreeMap<ProvinceCode, Vec<UnitCode>>,
    by_regency: BTreeMap<RegencyCode, Vec<UnitCode>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    complaint_desk: String,
    unit: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    code: String,
    name: String,
    kind: UnitKind,
    #[serde(default)]
    parent: String,
    zone: String,
    #[serde(default)]
    provinces: Vec<String>,
    #[serde(default)]
    regencies: Vec<String>,
    #[serde(default)]
    evidence: String,
    #[serde(default)]
    #[allow(dead_code)]
    note: String,
}

impl UnitRegistry {
    pub fn parse(file: &str, text: &str) -> Result<Self, DataError> {
        let f: File = parse_toml(file, text)?;
        let mut units = BTreeMap::new();
        for e in f.unit {
            let at = |reason: String| invalid(file, format!("unit {}: {reason}", e.code));
            let code = UnitCode::parse(&e.code).map_err(|err| at(err.to_string()))?;
            let parent = if e.parent.is_empty() {
                None
            } else {
                Some(UnitCode::parse(&e.parent).map_err(|err| at(format!("parent: {err}")))?)
            };
            let zone: Tz = e
                .zone
                .parse()
                .map_err(|_| at(format!("unknown time zone {}", e.zone)))?;
            let provinces = e
                .provinces
                .iter()
                .map(|p| ProvinceCode::parse(p).map_err(|err| at(format!("province {p}: {err}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let regencies = e
                .regencies
                .iter()
                .map(|r| RegencyCode::parse(r).map_err(|err| at(format!("regency {r}: {err}"))))
                .collect::<Result<Vec<_>, _>>()?;
            if e.kind != UnitKind::Upt && !(provinces.is_empty() && regencies.is_empty()) {
                return Err(at("only upt units cover areas".into()));
            }
            let unit = Unit {
                code: code.clone(),
                name: e.name,
                kind: e.kind,
                parent,
                zone,
                provinces,
                regencies,
                evidence: e.evidence,
            };
            if units.insert(code, unit).is_some() {
                return Err(at("listed twice".into()));
            }
        }
        let complaint_desk = UnitCode::parse(&f.complaint_desk)
            .ok()
            .filter(|c| units.contains_key(c))
            .ok_or_else(|| {
                invalid(
                    file,
                    format!("complaint_desk {} is not a listed unit", f.complaint_desk),
                )
            })?;

        // Parents exist and chains end (no cycles).
        for u in units.values() {
            let mut seen = vec![u.code.clone()];
            let mut cur = u.parent.clone();
            while let Some(p) = cur {
                let parent = units.get(&p).ok_or_else(|| {
                    invalid(
                        file,
                        format!("unit {}: parent {p} is not a listed unit", u.code),
                    )
                })?;
                if seen.contains(&p) {
                    return Err(invalid(
                        file,
                        format!("unit {}: parent chain loops through {p}", u.code),
                    ));
                }
                seen.push(p);
                cur = parent.parent.clone();
            }
        }

        let mut by_province: BTreeMap<ProvinceCode, Vec<UnitCode>> = BTreeMap::new();
        let mut by_regency: BTreeMap<RegencyCode, Vec<UnitCode>> = BTreeMap::new();
        for u in units.values() {
            for p in &u.provinces {
                by_province.entry(*p).or_default().push(u.code.clone());
            }
            for r in &u.regencies {
                by_regency.entry(*r).or_default().push(u.code.clone());
            }
        }
        if let Some(p) = ProvinceCode::all().find(|p| !by_province.contains_key(p)) {
            return Err(invalid(
                file,
                format!(
                    "province {p} has no default field office (every province needs one for tembusan)"
                ),
            ));
        }
        Ok(Self {
            units,
            complaint_desk,
            by_province,
            by_regency,
        })
    }

    pub fn get(&self, code: &UnitCode) -> Option<&Unit> {
        self.units.get(code)
    }

    pub fn contains(&self, code: &UnitCode) -> bool {
        self.units.contains_key(code)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Unit> {
        self.units.values()
    }

    /// The unit that owns the ministry's own handling stage (verification and distribution).
    pub fn complaint_desk(&self) -> &UnitCode {
        &self.complaint_desk
    }

    /// The field offices for a place: those known to serve the regency, otherwise the
    /// province's default office(s).
    pub fn field_offices(
        &self,
        province: ProvinceCode,
        regency: Option<RegencyCode>,
    ) -> Vec<UnitCode> {
        if let Some(r) = regency
            && let Some(units) = self.by_regency.get(&r)
        {
            return units.clone();
        }
        self.by_province.get(&province).cloned().unwrap_or_default()
    }

    /// Who hears about a breach after the holder, in order: the holder's parents, then the
    /// complaint desk if the chain did not already reach it.
    pub fn escalation_chain(&self, holder: &UnitCode) -> Vec<UnitCode> {
        let mut chain = Vec::new();
        let mut cur = self.units.get(holder).and_then(|u| u.parent.clone());
        while let Some(p) = cur {
            cur = self.units.get(&p).and_then(|u| u.parent.clone());
            chain.push(p);
        }
        if holder != &self.complaint_desk && !chain.contains(&self.complaint_desk) {
            chain.push(self.complaint_desk.clone());
        }
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ReferenceData;

    fn code(s: &str) -> UnitCode {
        UnitCode::parse(s).expect("valid code")
    }

    #[test]
    fn every_province_has_a_field_office() {
        let reg = ReferenceData::built_in().units;
        for p in ProvinceCode::all() {
            let offices = reg.field_offices(p, None);
            assert!(!offices.is_empty(), "province {p}");
            for o in offices {
                assert_eq!(reg.get(&o).map(|u| u.kind), Some(UnitKind::Upt));
            }
        }
    }

    #[test]
    fn regency_coverage_crosses_provinces() {
        let reg = ReferenceData::built_in().units;
        let lampung = ProvinceCode::parse("18").expect("valid");
        let lampung_timur = RegencyCode::parse("1807").expect("valid");
        assert_eq!(
            reg.field_offices(lampung, Some(lampung_timur)),
            vec![code("SENTRA_WYATA_GUNA")]
        );
        let sijunjung = RegencyCode::parse("1303").expect("valid");
        let sumbar = ProvinceCode::parse("13").expect("valid");
        assert_eq!(
            reg.field_offices(sumbar, Some(sijunjung)),
            vec![code("SENTRA_MULYA_JAYA")]
        );
        // A regency nobody is known to serve falls back to the province default.
        let padang = RegencyCode::parse("1371").expect("valid");
        assert_eq!(
            reg.field_offices(sumbar, Some(padang)),
            vec![code("SENTRA_ABISEKA")]
        );
    }

    #[test]
    fn escalation_climbs_then_reaches_the_complaint_desk() {
        let reg = ReferenceData::built_in().units;
        assert_eq!(
            reg.escalation_chain(&code("SENTRA_WYATA_GUNA")),
            vec![code("REHSOS"), code("HUMAS")]
        );
        assert_eq!(
            reg.escalation_chain(&code("PUSDATIN")),
            vec![code("SETJEN"), code("HUMAS")]
        );
        assert_eq!(reg.escalation_chain(&code("HUMAS")), vec![code("SETJEN")]);
    }

    #[test]
    fn bad_registries_are_refused_with_the_reason() {
        let base = "complaint_desk = \"A1\"\n[[unit]]\ncode = \"A1\"\nname = \"a\"\nkind = \"eselon1\"\nzone = \"Asia/Jakarta\"\n";
        let loop_ = format!(
            "{base}parent = \"B1\"\n[[unit]]\ncode = \"B1\"\nname = \"b\"\nkind = \"eselon1\"\nzone = \"Asia/Jakarta\"\nparent = \"A1\"\n"
        );
        let err = UnitRegistry::parse("units.toml", &loop_).expect_err("loop");
        assert!(err.to_string().contains("loops"), "{err}");
        let err = UnitRegistry::parse("units.toml", base).expect_err("no offices");
        assert!(err.to_string().contains("no default field office"), "{err}");
        let bad_zone = base.replace("Asia/Jakarta", "Asia/Nowhere");
        let err = UnitRegistry::parse("units.toml", &bad_zone).expect_err("zone");
        assert!(
            err.to_string().contains("unit A1: unknown time zone"),
            "{err}"
        );
    }
}
