use super::{DataError, UnitRegistry, invalid, parse_toml};
use crate::domain::{Category, ProvinceCode, RegencyCode, UnitCode};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TembusanRule {
    /// Copies to the field offices covering the reporter's area.
    Area,
    None,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub unit: UnitCode,
    pub field_followup: bool,
    pub tembusan: TembusanRule,
}

/// Where a case goes: the unit that must act, and who gets a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposition {
    pub assignee: UnitCode,
    pub tembusan: Vec<UnitCode>,
}

#[derive(Debug, Clone)]
pub struct RoutingTable(BTreeMap<Category, Route>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    route: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    category: String,
    unit: String,
    field_followup: bool,
    tembusan: TembusanRule,
    #[serde(default)]
    #[allow(dead_code)]
    evidence: String,
}

impl RoutingTable {
    pub fn parse(file: &str, text: &str, units: &UnitRegistry) -> Result<Self, DataError> {
        let f: File = parse_toml(file, text)?;
        let mut map = BTreeMap::new();
        for e in f.route {
            let at = |reason: String| invalid(file, format!("route {}: {reason}", e.category));
            let category = Category::parse(&e.category).map_err(|err| at(err.to_string()))?;
            let unit = UnitCode::parse(&e.unit).map_err(|err| at(err.to_string()))?;
            if !units.contains(&unit) {
                return Err(at(format!("unit {unit} is not in the unit registry")));
            }
            if map
                .insert(
                    category,
                    Route {
                        unit,
                        field_followup: e.field_followup,
                        tembusan: e.tembusan,
                    },
                )
                .is_some()
            {
                return Err(at("listed twice".into()));
            }
        }
        if let Some(c) = Category::ALL.iter().find(|c| !map.contains_key(c)) {
            return Err(invalid(file, format!("category {c} has no route")));
        }
        Ok(Self(map))
    }

    pub fn route_for(&self, category: Category) -> &Route {
        // Construction guarantees every category has a route.
        &self.0[&category]
    }

    /// The disposition of a case: pure function of category, place and configuration.
    pub fn dispose(
        &self,
        category: Category,
        province: ProvinceCode,
        regency: Option<RegencyCode>,
        units: &UnitRegistry,
    ) -> Disposition {
        let route = self.route_for(category);
        let tembusan = match route.tembusan {
            TembusanRule::None => Vec::new(),
            TembusanRule::Area => units
                .field_offices(province, regency)
                .into_iter()
                .filter(|u| u != &route.unit)
                .collect(),
        };
        Disposition {
            assignee: route.unit.clone(),
            tembusan,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ReferenceData;

    #[test]
    fn pkh_in_bandung_goes_to_linjamsos_with_a_copy_to_wyata_guna() {
        let data = ReferenceData::built_in();
        let d = data.routing.dispose(
            Category::Pkh,
            ProvinceCode::parse("32").expect("valid"),
            Some(RegencyCode::parse("3273").expect("valid")),
            &data.units,
        );
        assert_eq!(d.assignee.as_str(), "LINJAMSOS");
        assert_eq!(
            d.tembusan.iter().map(UnitCode::as_str).collect::<Vec<_>>(),
            ["SENTRA_WYATA_GUNA"]
        );
    }

    #[test]
    fn misconduct_goes_to_the_inspectorate_without_copies() {
        let data = ReferenceData::built_in();
        let d = data.routing.dispose(
            Category::Penyimpangan,
            ProvinceCode::parse("73").expect("valid"),
            None,
            &data.units,
        );
        assert_eq!(d.assignee.as_str(), "ITJEN");
        assert!(d.tembusan.is_empty());
    }

    #[test]
    fn papua_gets_copies_to_both_documented_offices() {
        let data = ReferenceData::built_in();
        let d = data.routing.dispose(
            Category::Anak,
            ProvinceCode::parse("91").expect("valid"),
            None,
            &data.units,
        );
        assert_eq!(d.tembusan.len(), 2);
    }

    #[test]
    fn every_category_must_be_routed() {
        let data = ReferenceData::built_in();
        let partial = "[[route]]\ncategory = \"pkh\"\nunit = \"LINJAMSOS\"\nfield_followup = true\ntembusan = \"area\"\n";
        let err =
            RoutingTable::parse("routing.toml", partial, &data.units).expect_err("incomplete");
        assert!(err.to_string().contains("has no route"), "{err}");
        let unknown = partial.replace("LINJAMSOS", "NOBODY");
        let err =
            RoutingTable::parse("routing.toml", &unknown, &data.units).expect_err("unknown unit");
        assert!(
            err.to_string()
                .contains("NOBODY is not in the unit registry"),
            "{err}"
        );
    }
}
