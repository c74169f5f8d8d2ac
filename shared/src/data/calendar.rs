//! Working days: Monday to Friday, minus national holidays and cuti bersama. Fixed-date
//! national holidays hold every year by Keppres 8/2024; the movable ones and cuti bersama
//! come from one data file per year. A year without a complete file is reported by
//! [`WorkingCalendar::coverage_warnings`] so that services can say so loudly at start-up.
//!
//! Deadlines are computed in the time zone of whoever holds the case (WIB, WITA or WIT).
//! Indonesia has no daylight saving time, but nothing here assumes 24-hour days.

use super::{DataError, invalid, parse_toml};
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayKind {
    LiburNasional,
    CutiBersama,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarDay {
    pub date: NaiveDate,
    pub kind: DayKind,
    pub name: String,
}

/// Fixed-date national holidays (Keppres 8/2024).
const FIXED: [(u32, u32, &str); 5] = [
    (1, 1, "Tahun Baru Masehi"),
    (5, 1, "Hari Buruh Internasional"),
    (6, 1, "Hari Lahir Pancasila"),
    (8, 17, "Proklamasi Kemerdekaan RI"),
    (12, 25, "Kelahiran Yesus Kristus"),
];

#[derive(Debug, Clone, Default)]
pub struct WorkingCalendar {
    days: BTreeMap<NaiveDate, CalendarDay>,
    /// Year → whether its file says it is complete.
    years: BTreeMap<i32, bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    year: i32,
    complete: bool,
    #[serde(default)]
    day: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    date: NaiveDate,
    kind: DayKind,
    name: String,
}

impl WorkingCalendar {
    pub fn from_files<S: AsRef<str>>(files: &[(String, S)]) -> Result<Self, DataError> {
        let mut cal = Self::default();
        for (name, text) in files {
            let f: File = parse_toml(name, text.as_ref())?;
            if cal.years.insert(f.year, f.complete).is_some() {
                return Err(invalid(
                    name,
                    format!("year {} is described by two files", f.year),
                ));
            }
            for e in f.day {
                if e.date.year() != f.year {
                    return Err(invalid(name, format!("{} is not in {}", e.date, f.year)));
                }
                cal.days.insert(
                    e.date,
                    CalendarDay {
                        date: e.date,
                        kind: e.kind,
                        name: e.name,
                    },
                );
            }
        }
        Ok(cal)
    }

    /// A digest of every day off and every year's completeness: changes whenever the data
    /// that deadlines depend on changes.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (d, day) in &self.days {
            h.update(format!("{d}:{:?};", day.kind));
        }
        for (y, complete) in &self.years {
            h.update(format!("{y}:{complete};"));
        }
        hex_string(&h.finalize())
    }

    /// Why `date` is not a working day, if it is a holiday or cuti bersama.
    pub fn holiday(&self, date: NaiveDate) -> Option<CalendarDay> {
        if let Some(d) = self.days.get(&date) {
            return Some(d.clone());
        }
        FIXED
            .iter()
            .find(|(m, d, _)| date.month() == *m && date.day() == *d)
            .map(|(_, _, name)| CalendarDay {
                date,
                kind: DayKind::LiburNasional,
                name: (*name).to_owned(),
            })
    }

    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) && self.holiday(date).is_none()
    }

    /// Problems with the years a deadline started today could reach (today and the next 60
    /// days): no data at all, or data marked incomplete.
    pub fn coverage_warnings(&self, today: NaiveDate) -> Vec<String> {
        let mut years = vec![today.year()];
        let later = (today + Duration::days(60)).year();
        if later != today.year() {
            years.push(later);
        }
        years
            .into_iter()
            .filter_map(|y| match self.years.get(&y) {
                None => Some(format!(
                    "no holiday data for {y}: only weekends and the fixed-date holidays count as days off; \
                     add data/calendar/{y}.toml from the SKB on national holidays and cuti bersama"
                )),
                Some(false) => Some(format!(
                    "holiday data for {y} is incomplete (see data/calendar/{y}.toml): deadlines may end \
                     before the holidays it is missing"
                )),
                Some(true) => None,
            })
            .collect()
    }

    fn local_date(t: DateTime<Utc>, tz: Tz) -> NaiveDate {
        t.with_timezone(&tz).date_naive()
    }

    fn start_of(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
        // Midnight exists in every zone Indonesia uses.
        tz.from_local_datetime(&date.and_time(NaiveTime::MIN))
            .earliest()
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|| Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN)))
    }

    /// The deadline of `n` working days from `start`: 23:59:59 local time on the n-th working
    /// day after `start`'s local date.
    pub fn deadline(&self, start: DateTime<Utc>, n: u32, tz: Tz) -> DateTime<Utc> {
        let mut date = Self::local_date(start, tz);
        let mut counted = 0;
        while counted < n {
            date = date.succ_opt().unwrap_or(date);
            if self.is_working_day(date) {
                counted += 1;
            }
        }
        Self::start_of(date.succ_opt().unwrap_or(date), tz) - Duration::seconds(1)
    }

    /// Seconds between `from` and `to` that fall on working days in `tz`.
    pub fn working_seconds(&self, from: DateTime<Utc>, to: DateTime<Utc>, tz: Tz) -> i64 {
        if to <= from {
            return 0;
        }
        let mut total = 0;
        let mut date = Self::local_date(from, tz);
        loop {
            let day_start = Self::start_of(date, tz);
            if day_start >= to {
                break;
            }
            let next = date.succ_opt().unwrap_or(date);
            let day_end = Self::start_of(next, tz);
            if self.is_working_day(date) {
                let a = from.max(day_start);
                let b = to.min(day_end);
                if b > a {
                    total += (b - a).num_seconds();
                }
            }
            date = next;
        }
        total
    }

    /// The instant at which `seconds` of working time have passed after `from`.
    pub fn advance(&self, from: DateTime<Utc>, seconds: i64, tz: Tz) -> DateTime<Utc> {
        let mut left = seconds.max(0);
        let mut cursor = from;
        let mut date = Self::local_date(from, tz);
        loop {
            let next = date.succ_opt().unwrap_or(date);
            let day_end = Self::start_of(next, tz);
            if self.is_working_day(date) {
                let available = (day_end - cursor).num_seconds();
                if left <= available {
                    return cursor + Duration::seconds(left);
                }
                left -= available;
            }
            cursor = day_end;
            date = next;
        }
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ReferenceData;

    fn wib() -> Tz {
        chrono_tz::Asia::Jakarta
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    fn cal() -> WorkingCalendar {
        ReferenceData::built_in().calendar
    }

    #[test]
    fn three_working_days_from_a_monday_end_on_thursday_night() {
        let d = cal().deadline(t("2026-12-07T10:00:00+07:00"), 3, wib());
        assert_eq!(d, t("2026-12-10T23:59:59+07:00"));
    }

    #[test]
    fn weekends_are_skipped() {
        // Friday 4 December 2026 → Mon, Tue, Wed.
        let d = cal().deadline(t("2026-12-04T16:00:00+07:00"), 3, wib());
        assert_eq!(d, t("2026-12-09T23:59:59+07:00"));
        // Received on a Saturday: the count starts on Monday.
        let d = cal().deadline(t("2026-12-05T09:00:00+07:00"), 1, wib());
        assert_eq!(d, t("2026-12-07T23:59:59+07:00"));
    }

    #[test]
    fn christmas_and_its_cuti_bersama_are_not_working_days() {
        // Wed 23 Dec 2026 + 3: Thu 24 (cuti bersama), Fri 25 (Natal), weekend → Mon 28, Tue 29, Wed 30.
        let d = cal().deadline(t("2026-12-23T08:00:00+07:00"), 3, wib());
        assert_eq!(d, t("2026-12-30T23:59:59+07:00"));
    }

    #[test]
    fn the_idul_fitri_block_of_2026_is_closed() {
        // Tue 17 Mar 2026 + 1: 18 cuti, 19 Nyepi, 20 cuti, 21-22 weekend and Idul Fitri,
        // 23-24 cuti → Wed 25 March.
        let d = cal().deadline(t("2026-03-17T12:00:00+07:00"), 1, wib());
        assert_eq!(d, t("2026-03-25T23:59:59+07:00"));
    }

    #[test]
    fn the_date_is_local_to_the_zone() {
        // 23:30 WIB on Monday is already Tuesday 01:30 in WIT.
        let start = t("2026-12-07T23:30:00+07:00");
        let wit: Tz = chrono_tz::Asia::Jayapura;
        assert_eq!(
            cal().deadline(start, 1, wib()),
            t("2026-12-08T23:59:59+07:00")
        );
        assert_eq!(
            cal().deadline(start, 1, wit),
            t("2026-12-09T23:59:59+09:00")
        );
    }

    #[test]
    fn advancing_by_the_working_time_to_a_deadline_lands_on_it() {
        let c = cal();
        for start in [
            "2026-12-04T16:00:00+07:00",
            "2026-12-05T09:00:00+07:00",
            "2026-12-23T08:00:00+07:00",
        ] {
            let s = t(start);
            let d = c.deadline(s, 5, wib());
            let budget = c.working_seconds(s, d, wib());
            assert_eq!(c.advance(s, budget, wib()), d, "{start}");
        }
    }

    #[test]
    fn working_seconds_skip_days_off() {
        let c = cal();
        // Friday 20:00 to Monday 04:00 WIB: 4 h on Friday and 4 h on Monday.
        let s = c.working_seconds(
            t("2026-12-04T20:00:00+07:00"),
            t("2026-12-07T04:00:00+07:00"),
            wib(),
        );
        assert_eq!(s, 8 * 3600);
    }

    #[test]
    fn fixed_holidays_hold_in_years_without_data() {
        let c = cal();
        assert!(
            c.holiday(NaiveDate::from_ymd_opt(2030, 8, 17).expect("date"))
                .is_some()
        );
        let warnings = c.coverage_warnings(NaiveDate::from_ymd_opt(2030, 6, 1).expect("date"));
        assert!(
            warnings[0].contains("no holiday data for 2030"),
            "{warnings:?}"
        );
    }

    #[test]
    fn december_2026_warns_about_the_incomplete_2027() {
        let warnings = cal().coverage_warnings(NaiveDate::from_ymd_opt(2026, 12, 4).expect("date"));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("2027 is incomplete"), "{warnings:?}");
    }

    #[test]
    fn a_year_described_twice_is_refused() {
        let f = "year = 2026\ncomplete = true\n".to_string();
        let err = WorkingCalendar::from_files(&[
            ("a.toml".to_string(), f.clone()),
            ("b.toml".to_string(), f),
        ])
        .expect_err("duplicate");
        assert!(err.to_string().contains("two files"), "{err}");
    }
}
