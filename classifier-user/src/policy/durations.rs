//! Lengths of time in a policy (`idle_timeout`, `peer_ttl`, `ipfix_active_timeout`,
//! `[degradation] intervals`, an allowance's `per`), written so they can only mean one
//! thing.
//!
//! The parsers disagree about a lone `m`: humantime and jiff read `5m` as five minutes,
//! humantime reads `5M` as five *months*, ISO 8601 reads `P5M` as months. A timeout that
//! silently became months would keep every flow open forever, so `m` and `M` are refused
//! here as in `[records] retention` ([`super::retention`]), and a duration's units are
//! spelled so that nobody can misread them: `5 minutes`, `5min`, `30s`, `2 hours`.

use std::time::Duration;

use jiff::{Span, SpanRelativeTo};

/// The forms a duration may be written in, for error messages.
pub const ACCEPTED: &str = "a number and a unit: `30s`, `5min`, `5 minutes`, `2 hours`, \
     `1 day` (weeks, days, hours, min, s; `m` and `M` are refused: minutes or months?)";

/// Units of a fixed length, as jiff's friendly format names them. Months and years are
/// left out: neither has a fixed length.
const UNITS: &[&str] = &[
    "week", "weeks", "wk", "wks", "w", "day", "days", "d", "hour", "hours", "hr", "hrs", "h",
    "minute", "minutes", "min", "mins", "second", "seconds", "sec", "secs", "s",
];

/// Refuses `text` unless every unit in it is one of `units` (and neither `m` nor `M`), and
/// every number is whole and positive. `accepted` says what may be written instead.
pub fn check_units(text: &str, units: &[&str], accepted: &str) -> Result<(), String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("empty: write {accepted}"));
    }
    // Every run of letters is a unit (this also refuses ISO 8601 `P14M` and `ago`).
    for unit in trimmed
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
    {
        if unit == "m" || unit == "M" {
            return Err(format!(
                "`{text}`: `{unit}` is ambiguous (minutes or months?): write {accepted}"
            ));
        }
        if !units.contains(&unit) {
            return Err(format!("`{text}`: unknown unit `{unit}`: write {accepted}"));
        }
    }
    if trimmed.contains(['-', '+', '.', ':']) {
        return Err(format!(
            "`{text}`: whole positive numbers only: write {accepted}"
        ));
    }
    Ok(())
}

/// Reads a duration such as `5 minutes` or `30s`; the error says what was wrong and the
/// accepted forms. Zero is refused: no setting this reads means "never" by 0.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    check_units(text, UNITS, ACCEPTED)?;
    let span: Span = text
        .trim()
        .parse()
        .map_err(|e| format!("`{text}`: {e}: write {ACCEPTED}"))?;
    let signed = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("`{text}`: {e}: write {ACCEPTED}"))?;
    let duration = Duration::try_from(signed).map_err(|_| format!("`{text}`: negative"))?;
    if duration.is_zero() {
        return Err(format!("`{text}`: must be longer than nothing"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelled_units_are_read_as_written() {
        for (text, seconds) in [
            ("30s", 30),
            ("5min", 300),
            ("5 minutes", 300),
            ("10 mins", 600),
            ("2 hours", 7200),
            ("1h 30min", 5400),
            ("1 day", 86_400),
            ("1 week", 604_800),
            ("90 seconds", 90),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
    }

    #[test]
    fn ambiguous_and_calendar_units_are_refused_with_the_accepted_forms() {
        for text in ["5m", "5M", "5 m", "1h 5m", "10m"] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains("ambiguous"), "{text}: {err}");
            assert!(err.contains("`5min`"), "{text}: {err}");
        }
        for text in ["1 month", "2 years", "3 fortnights"] {
            assert!(
                parse_duration(text).unwrap_err().contains("unknown unit"),
                "{text}"
            );
        }
        for text in [
            "",
            "0s",
            "-3s",
            "1.5 hours",
            "minutes",
            "soon",
            "3s ago",
            "PT5M",
            "P1D",
        ] {
            assert!(parse_duration(text).is_err(), "{text} accepted");
        }
    }
}
