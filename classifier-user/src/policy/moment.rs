//! `--at`: the moment a command answers for, as people write it: RFC 3339
//! (`2026-12-07T12:30:00Z`), or a local time in the site's time zone (`2026-12-07 12:30`,
//! or `12:30` for today), with what a clock change makes of it said, not guessed silently.

use jiff::{
    Timestamp,
    civil::{DateTime, Time},
    tz::{AmbiguousOffset, Offset, TimeZone},
};

/// A moment read from `--at`, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moment {
    pub at: Timestamp,
    /// How the text was read, when it was a local time: the zone used, and what a clock
    /// change made of it.
    pub note: Option<String>,
}

/// Reads `text` as RFC 3339, else as a local date and time (or a time today) in `zone`
/// (`zone_name` names it in messages). A local time the clocks skip is refused; one they
/// pass twice is the first, and the note says so.
pub fn parse_moment(
    text: &str,
    zone: &TimeZone,
    zone_name: &str,
    now: Timestamp,
) -> Result<Moment, String> {
    let text = text.trim();
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(Moment { at, note: None });
    }
    let civil = match text.parse::<DateTime>() {
        Ok(civil) => civil,
        Err(_) => match text.parse::<Time>() {
            Ok(time) => now.to_zoned(zone.clone()).date().to_datetime(time),
            Err(_) => {
                return Err(format!(
                    "`{text}`: give a local time in the site's time zone ({zone_name}): \
                     `2026-12-07 12:30` or `12:30` (today), or RFC 3339: \
                     `2026-12-07T12:30:00Z`"
                ));
            }
        },
    };
    let ambiguous = zone.to_ambiguous_timestamp(civil);
    let stamp = civil.strftime("%Y-%m-%dT%H:%M:%S");
    let local = civil.strftime("%Y-%m-%d %H:%M");
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { offset } => {
            let at = ambiguous.compatible().map_err(|e| e.to_string())?;
            Ok(Moment {
                at,
                note: Some(format!(
                    "{local} read in {zone_name} (UTC{})",
                    rfc3339(offset)
                )),
            })
        }
        AmbiguousOffset::Gap { before, after } => Err(format!(
            "`{text}`: {local} does not exist in {zone_name}: the clocks go forward from \
             UTC{} to UTC{} then; give a time outside the gap, or an offset ({stamp}{})",
            rfc3339(before),
            rfc3339(after),
            rfc3339(before)
        )),
        AmbiguousOffset::Fold { before, after } => {
            let at = ambiguous.earlier().map_err(|e| e.to_string())?;
            Ok(Moment {
                at,
                note: Some(format!(
                    "{local} happens twice in {zone_name} (the clocks go back): read as the \
                     first, UTC{}; write {stamp}{} for the second",
                    rfc3339(before),
                    rfc3339(after)
                )),
            })
        }
    }
}

/// An offset as RFC 3339 writes it: `+01:00` (jiff's own display shortens it to `+01`).
fn rfc3339(offset: Offset) -> String {
    let seconds = offset.seconds();
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn london() -> TimeZone {
        TimeZone::get("Europe/London").unwrap()
    }

    fn read(text: &str) -> Result<Moment, String> {
        let now: Timestamp = "2026-12-05T18:00:00Z".parse().unwrap();
        parse_moment(text, &london(), "Europe/London", now)
    }

    #[test]
    fn local_times_are_read_in_the_site_zone() {
        let winter = read("2026-12-07 12:30").unwrap();
        assert_eq!(winter.at.to_string(), "2026-12-07T12:30:00Z");
        assert!(winter.note.unwrap().contains("Europe/London"));
        let summer = read("2026-07-06T12:30").unwrap();
        assert_eq!(summer.at.to_string(), "2026-07-06T11:30:00Z");
        assert_eq!(
            read("12:30").unwrap().at.to_string(),
            "2026-12-05T12:30:00Z"
        );
        let rfc = read("2026-07-06T12:30:00Z").unwrap();
        assert_eq!(
            (rfc.at.to_string().as_str(), rfc.note),
            ("2026-07-06T12:30:00Z", None)
        );
    }

    #[test]
    fn clock_changes_are_said_not_guessed() {
        let gap = read("2026-03-29 01:30").unwrap_err();
        assert!(gap.contains("does not exist"), "{gap}");
        let fold = read("2026-10-25 01:30").unwrap();
        assert_eq!(fold.at.to_string(), "2026-10-25T00:30:00Z");
        assert!(fold.note.unwrap().contains("happens twice"));
        assert!(read("lunchtime").unwrap_err().contains("12:30"));
    }
}
