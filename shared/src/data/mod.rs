//! The ministry's reference data — provinces, units, routing, the working-day calendar — as
//! reviewable files under `data/` in the repository. The binaries carry a built-in copy of
//! each file; `data.dir` names a folder whose files replace the built-in ones, so the ministry
//! can change routing or add a year of holidays without a rebuild.

mod answers;
mod calendar;
mod regions;
mod registry;
mod routing;

pub use answers::Answers;
pub use calendar::{CalendarDay, DayKind, WorkingCalendar};
pub use regions::{Province, Provinces};
pub use registry::{Unit, UnitKind, UnitRegistry};
pub use routing::{Disposition, Route, RoutingTable, TembusanRule};

use std::borrow::Cow;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data file {file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("data file {file} could not be read: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
}

pub(crate) fn invalid(file: &str, reason: impl std::fmt::Display) -> DataError {
    DataError::Invalid {
        file: file.to_owned(),
        reason: reason.to_string(),
    }
}

/// Built-in copies, by path relative to the data folder.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "provinces.toml",
        include_str!("../../../data/provinces.toml"),
    ),
    ("units.toml", include_str!("../../../data/units.toml")),
    ("routing.toml", include_str!("../../../data/routing.toml")),
    (
        "calendar/2026.toml",
        include_str!("../../../data/calendar/2026.toml"),
    ),
    (
        "calendar/2027.toml",
        include_str!("../../../data/calendar/2027.toml"),
    ),
    ("lexicon.toml", include_str!("../../../data/lexicon.toml")),
    (
        "normalisation.toml",
        include_str!("../../../data/normalisation.toml"),
    ),
    ("agencies.toml", include_str!("../../../data/agencies.toml")),
    ("answers.toml", include_str!("../../../data/answers.toml")),
];

/// Where a file came from, so start-up can say which data is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    BuiltIn,
    Folder(PathBuf),
}

#[derive(Debug, Clone, Default)]
pub struct DataSource {
    dir: Option<PathBuf>,
}

impl DataSource {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    pub fn built_in() -> Self {
        Self { dir: None }
    }

    /// The file's text: from the folder when it has the file, otherwise the built-in copy.
    pub fn read(&self, name: &str) -> Result<(Cow<'static, str>, Origin), DataError> {
        if let Some(dir) = &self.dir {
            let path = dir.join(name);
            if path.is_file() {
                let text = std::fs::read_to_string(&path).map_err(|source| DataError::Io {
                    file: path.display().to_string(),
                    source,
                })?;
                return Ok((Cow::Owned(text), Origin::Folder(path)));
            }
        }
        EMBEDDED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| (Cow::Borrowed(*text), Origin::BuiltIn))
            .ok_or_else(|| invalid(name, "no such data file (and none built in)"))
    }

    /// Every calendar file: the built-in years plus any `calendar/*.toml` in the folder.
    pub fn calendar_files(&self) -> Result<Vec<(String, Cow<'static, str>)>, DataError> {
        let mut names: Vec<String> = EMBEDDED
            .iter()
            .filter(|(n, _)| n.starts_with("calendar/"))
            .map(|(n, _)| n.to_string())
            .collect();
        if let Some(dir) = &self.dir {
            let cal = dir.join("calendar");
            if cal.is_dir() {
                let entries = std::fs::read_dir(&cal).map_err(|source| DataError::Io {
                    file: cal.display().to_string(),
                    source,
                })?;
                for e in entries.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "toml")
                        && let Some(f) = p.file_name().and_then(|f| f.to_str())
                    {
                        let name = format!("calendar/{f}");
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                }
            }
        }
        names.sort();
        names
            .into_iter()
            .map(|n| self.read(&n).map(|(t, _)| (n, t)))
            .collect()
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, DataError> {
    toml::from_str(text).map_err(|e| invalid(file, e))
}

/// Everything the routing side needs, loaded and cross-checked together.
#[derive(Debug, Clone)]
pub struct ReferenceData {
    pub provinces: Provinces,
    pub units: UnitRegistry,
    pub routing: RoutingTable,
    pub calendar: WorkingCalendar,
    pub answers: Answers,
}

impl ReferenceData {
    pub fn load(source: &DataSource) -> Result<Self, DataError> {
        let (text, _) = source.read("provinces.toml")?;
        let provinces = Provinces::parse("provinces.toml", &text)?;
        let (text, _) = source.read("units.toml")?;
        let units = UnitRegistry::parse("units.toml", &text)?;
        let (text, _) = source.read("routing.toml")?;
        let routing = RoutingTable::parse("routing.toml", &text, &units)?;
        let calendar = WorkingCalendar::from_files(&source.calendar_files()?)?;
        let (text, _) = source.read("answers.toml")?;
        let answers = Answers::parse("answers.toml", &text)?;
        Ok(Self {
            provinces,
            units,
            routing,
            calendar,
            answers,
        })
    }

    pub fn built_in() -> Self {
        Self::load(&DataSource::built_in()).expect("the built-in data files are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_data_loads_and_cross_checks() {
        let data = ReferenceData::built_in();
        assert_eq!(data.provinces.len(), 38);
    }

    #[test]
    fn a_folder_file_replaces_the_built_in_one() {
        let dir = std::env::temp_dir().join(format!("lapor-data-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("calendar")).expect("mkdir");
        std::fs::write(
            dir.join("calendar/2028.toml"),
            "year = 2028\ncomplete = true\n[[day]]\ndate = \"2028-03-01\"\nkind = \"cuti_bersama\"\nname = \"test\"\n",
        )
        .expect("write");
        let src = DataSource::new(Some(dir.clone()));
        let (_, origin) = src.read("units.toml").expect("built-in fallback");
        assert_eq!(origin, Origin::BuiltIn);
        let data = ReferenceData::load(&src).expect("loads");
        let d = chrono::NaiveDate::from_ymd_opt(2028, 3, 1).expect("date");
        assert!(!data.calendar.is_working_day(d));
        std::fs::remove_dir_all(dir).ok();
    }
}
