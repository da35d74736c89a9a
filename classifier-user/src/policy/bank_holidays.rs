//! Bank holidays from gov.uk's published file, `https://www.gov.uk/bank-holidays.json`:
//! a policy names a copy of it and a division (`schedule.bank-holidays-file`,
//! `schedule.bank-holidays-division`) instead of typing the dates.
//!
//! The file is one object per division (`england-and-wales`, `scotland`,
//! `northern-ireland`), each `{"division": ..., "events": [{"title", "date", "notes",
//! "bunting"}]}`. A copy ships beside the default policy (`policy/bank-holidays.json`); it
//! holds the years gov.uk had published when it was copied, so it must be refreshed from
//! gov.uk (`policy check` warns when it holds no date in the coming year).

use std::{collections::BTreeMap, path::Path};

use jiff::civil::Date;
use serde::Deserialize;

/// The copy of gov.uk's file shipped with the classifier.
pub const SHIPPED: &str = include_str!("../../policy/bank-holidays.json");

/// The divisions gov.uk publishes, for messages.
pub const DIVISIONS: &str = "england-and-wales, scotland, northern-ireland";

#[derive(Debug, Deserialize)]
struct Division {
    #[serde(default)]
    events: Vec<Event>,
}

/// One bank holiday as gov.uk lists it; `notes` and `bunting` are read and not used.
#[derive(Debug, Deserialize)]
struct Event {
    #[serde(default)]
    title: String,
    date: String,
}

/// A problem in the file: at a line and column (1-based), or, when `line` is 0, in the
/// file as a whole.
#[derive(Debug, PartialEq, Eq)]
pub struct FileError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl FileError {
    fn whole(message: String) -> Self {
        Self {
            line: 0,
            column: 0,
            message,
        }
    }
}

/// Reads the dates of `division` from a copy of gov.uk's file at `path`. The error names
/// the file, and the line for what is not JSON of gov.uk's shape.
pub fn read(path: &Path, division: &str) -> Result<Vec<Date>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    dates_of(&text, division).map_err(|e| match e.line {
        0 => format!("{}: {}", path.display(), e.message),
        line => format!("{}:{line}:{}: {}", path.display(), e.column, e.message),
    })
}

/// The dates of `division` in gov.uk's JSON `text`.
pub fn dates_of(text: &str, division: &str) -> Result<Vec<Date>, FileError> {
    let divisions: BTreeMap<String, Division> =
        serde_json::from_str(text).map_err(|e| FileError {
            line: e.line(),
            column: e.column(),
            message: format!(
                "not gov.uk's bank-holidays.json ({{\"england-and-wales\": {{\"events\": \
                 [{{\"title\", \"date\"}}, ...]}}, ...}}): {e}"
            ),
        })?;
    let Some(found) = divisions.get(division) else {
        let known: Vec<&str> = divisions.keys().map(String::as_str).collect();
        return Err(FileError::whole(format!(
            "no division `{division}` (the file has: {}; gov.uk's are {DIVISIONS})",
            known.join(", ")
        )));
    };
    if found.events.is_empty() {
        return Err(FileError::whole(format!(
            "division `{division}` lists no bank holidays"
        )));
    }
    found
        .events
        .iter()
        .map(|event| {
            event.date.parse::<Date>().map_err(|_| {
                FileError::whole(format!(
                    "`{division}`: `{}` ({}) is not a date (YYYY-MM-DD)",
                    event.date, event.title
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        text.parse().unwrap()
    }

    #[test]
    fn the_shipped_copy_has_every_division_through_2027() {
        for division in ["england-and-wales", "scotland", "northern-ireland"] {
            let dates = dates_of(SHIPPED, division).unwrap();
            assert!(dates.contains(&date("2027-12-28")), "{division}");
            for year in [2025, 2026, 2027] {
                assert!(
                    dates.iter().filter(|d| d.year() == year).count() >= 8,
                    "{division} {year}"
                );
            }
        }
        let scotland = dates_of(SHIPPED, "scotland").unwrap();
        assert!(scotland.contains(&date("2026-01-02")), "2nd January");
        assert!(scotland.contains(&date("2026-11-30")), "St Andrew's Day");
        assert!(!scotland.contains(&date("2026-04-06")), "no Easter Monday");
        let northern_ireland = dates_of(SHIPPED, "northern-ireland").unwrap();
        assert!(
            northern_ireland.contains(&date("2026-03-17")),
            "St Patrick's"
        );
        assert!(northern_ireland.contains(&date("2026-07-13")), "the Boyne");
    }

    #[test]
    fn bank_holidays_fall_on_weekdays() {
        for division in ["england-and-wales", "scotland", "northern-ireland"] {
            for day in dates_of(SHIPPED, division).unwrap() {
                assert!(
                    day.weekday().to_monday_one_offset() <= 5,
                    "{division}: {day} is a {:?} (substitute days are Mondays or Tuesdays)",
                    day.weekday()
                );
            }
        }
    }

    #[test]
    fn what_is_not_gov_uks_file_is_refused_with_its_line() {
        let err = dates_of(
            "{\n\"scotland\": {\"events\": [\n{\"date\": 20260101}\n]}}",
            "scotland",
        )
        .unwrap_err();
        assert_eq!(err.line, 3, "{err:?}");
        let err = dates_of(SHIPPED, "wales").unwrap_err().message;
        assert!(
            err.contains("no division `wales`") && err.contains("england-and-wales"),
            "{err}"
        );
        let err = dates_of(
            r#"{"scotland": {"events": [{"title": "Hogmanay", "date": "31/12/2026"}]}}"#,
            "scotland",
        )
        .unwrap_err()
        .message;
        assert!(
            err.contains("31/12/2026") && err.contains("Hogmanay"),
            "{err}"
        );
        assert!(
            dates_of(r#"{"scotland": {"events": []}}"#, "scotland")
                .unwrap_err()
                .message
                .contains("no bank holidays")
        );
    }
}
