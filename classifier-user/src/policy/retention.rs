//! `[records] retention` and `degradation_retention`: periods written in units nobody can
//! misread, and the councils' limit on how long a record may name a person.
//!
//! jiff reads `14m` as fourteen *minutes* and `14M` as fourteen months in ISO 8601: a
//! policy that meant months would delete every record within the hour, or one that meant
//! minutes would keep them for a year. So a unit must be spelled so that it can only mean
//! one thing (`14 months`, `420 days`), and what the words mean is then jiff's calendar
//! arithmetic.

use anyhow::Context as _;
use jiff::{Span, Timestamp, ToSpan as _, tz::TimeZone};
use serde::Serialize;

/// The longest a record may keep who made it without an override: "Personal data is
/// retained for a maximum of 14 months, although anonymised data may be retained for
/// longer" (Gloucestershire County Council, Internet and Digital Communications Policy,
/// 10.0 Privacy information for GCC Mobile Wi-Fi; `shared/seeds/000_*.txt`).
pub const MAX_MONTHS: i64 = 14;

/// Why [`MAX_MONTHS`], as policy errors say it.
pub const LIMIT_REASON: &str = "the councils' policy keeps personal data at most 14 months \
     (\"Personal data is retained for a maximum of 14 months, although anonymised data may \
     be retained for longer\")";

/// The forms a period may be written in, for error messages.
pub const ACCEPTED: &str = "a number and a unit spelled out: `14 months`, `420 days`, \
     `1 year 2 months`, `12 weeks` (years, months, weeks, days, hours, minutes; `m` and `M` \
     are refused: minutes or months?)";

/// Units that cannot be misread, as jiff's friendly format names them.
const UNITS: &[&str] = &[
    "year", "years", "yr", "yrs", "y", "month", "months", "mo", "mos", "week", "weeks", "wk",
    "wks", "w", "day", "days", "d", "hour", "hours", "hr", "hrs", "h", "minute", "minutes", "min",
    "mins",
];

/// Reads a period such as `14 months` or `420 days`. The error says what was wrong and
/// the accepted forms.
pub fn parse_period(text: &str) -> Result<Span, String> {
    super::durations::check_units(text, UNITS, ACCEPTED)?;
    let trimmed = text.trim();
    let span: Span = trimmed
        .parse()
        .map_err(|e| format!("`{text}`: {e}: write {ACCEPTED}"))?;
    if span.is_zero() || span.is_negative() {
        return Err(format!("`{text}`: must be longer than nothing"));
    }
    Ok(span)
}

/// Whether `span`, counted back from some day, reaches further than `months` calendar
/// months from the same day. Months differ in length, so every day of a four-year cycle
/// (one leap day; in UTC, no daylight saving) is tried: `420 days` is within 14 months
/// from any day, `425 days` is not from some.
pub fn longer_than_months(span: Span, months: i64) -> bool {
    let limit = months.months();
    let start: Timestamp = "2024-01-01T00:00:00Z".parse().expect("a valid timestamp");
    let start = start.to_zoned(TimeZone::UTC);
    (0..4 * 366 + 31).any(|day| {
        let Ok(now) = start.checked_add(day.days()) else {
            return true;
        };
        match (now.checked_sub(span), now.checked_sub(limit)) {
            (Ok(back), Ok(limit)) => back < limit,
            // Reaches before the calendar's start: certainly too long.
            _ => true,
        }
    })
}

/// What happens to records past the retention period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterRetention {
    /// Deleted, once their volume is added to the daily totals.
    #[default]
    Delete,
    /// Kept without the client's address, port and MAC.
    Anonymise,
}

impl AfterRetention {
    pub fn name(self) -> &'static str {
        match self {
            AfterRetention::Delete => "delete",
            AfterRetention::Anonymise => "anonymise",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "delete" => Some(AfterRetention::Delete),
            "anonymise" => Some(AfterRetention::Anonymise),
            _ => None,
        }
    }
}

/// The retention the policy sets.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Retention {
    /// How long a record keeps who made the flow (calendar units: `14 months`).
    #[serde(serialize_with = "span_text")]
    pub keep: Span,
    pub after: AfterRetention,
    /// How long a degradation report is kept at all.
    #[serde(serialize_with = "span_text")]
    pub degradation_keep: Span,
}

fn span_text<S: serde::Serializer>(span: &Span, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format!("{span:#}"))
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep: Span::new().months(14),
            after: AfterRetention::Delete,
            degradation_keep: Span::new().days(90),
        }
    }
}

impl Retention {
    /// Records that ended before this are past retention. Months are calendar months,
    /// counted back in UTC.
    pub fn cutoff(&self, now: Timestamp) -> anyhow::Result<Timestamp> {
        back(now, self.keep)
    }

    /// Degradation reports that ended before this are deleted.
    pub fn degradation_cutoff(&self, now: Timestamp) -> anyhow::Result<Timestamp> {
        back(now, self.degradation_keep)
    }
}

/// `span` before `now`, in calendar units counted back in UTC.
fn back(now: Timestamp, span: Span) -> anyhow::Result<Timestamp> {
    let cutoff = now
        .to_zoned(TimeZone::UTC)
        .checked_sub(span)
        .with_context(|| format!("retention `{span:#}` reaches before the calendar's start"))?;
    Ok(cutoff.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_out_units_are_read_as_written() {
        for (text, expected) in [
            ("14 months", 14.months()),
            ("420 days", 420.days()),
            ("1 year 2 months", 1.year().months(2)),
            ("12 weeks", 12.weeks()),
            ("90d", 90.days()),
            ("2 hours", 2.hours()),
            ("30 minutes", 30.minutes()),
            ("6mo", 6.months()),
        ] {
            let span = parse_period(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(span.fieldwise(), expected.fieldwise(), "{text}");
        }
    }

    #[test]
    fn ambiguous_and_unknown_units_are_refused_with_the_accepted_forms() {
        for text in ["14m", "14M", "14 m", "P14M", "PT14M", "1y 2m"] {
            let err = parse_period(text).unwrap_err();
            assert!(
                err.contains("`14 months`") && err.contains("`420 days`"),
                "{text}: {err}"
            );
        }
        assert!(parse_period("14m").unwrap_err().contains("ambiguous"));
        assert!(
            parse_period("14 fortnights")
                .unwrap_err()
                .contains("`fortnights`")
        );
        for text in [
            "",
            "0 days",
            "-3 days",
            "3 days ago",
            "1.5 months",
            "months",
        ] {
            assert!(parse_period(text).is_err(), "{text} accepted");
        }
    }

    #[test]
    fn the_limit_is_fourteen_calendar_months_from_any_day() {
        let longer = |text: &str| longer_than_months(parse_period(text).unwrap(), MAX_MONTHS);
        for within in [
            "14 months",
            "1 year 2 months",
            "1 year",
            "420 days",
            "60 weeks",
        ] {
            assert!(!longer(within), "{within} is within 14 months");
        }
        for beyond in [
            "15 months",
            "14 months 1 day",
            "425 days",
            "2 years",
            "30 years",
        ] {
            assert!(longer(beyond), "{beyond} is more than 14 months");
        }
    }
}
