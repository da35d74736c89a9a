//! The schedule: which named period (`working`, `lunch`, `outside`, ...) is in force at any
//! instant, in the site's time zone.
//!
//! Periods are local wall-clock hours per weekday, read top to bottom, the first that
//! covers a moment wins (so breaks are listed before the hours they interrupt); a moment no
//! period covers is the `default` period. Bank holidays (a list of dates) are covered only
//! by periods that say `bank-holidays = true`.
//!
//! Wall-clock semantics make DST simple and predictable: "08:30" is 08:30 on the clocks of
//! the site, GMT in winter and BST in summer. On the night the clocks go forward, a range
//! that starts inside the missing hour starts when the clocks jump (its first existing
//! minute); on the night they go back, the repeated hour is inside or outside a range by
//! its wall-clock time, both times.

use std::{collections::BTreeSet, path::Path};

use indexmap::IndexMap;
use jiff::{
    Timestamp, ToSpan as _,
    civil::{Date, DateTime, Weekday},
    tz::TimeZone,
};
use serde::Deserialize;

use super::source::FieldPath;

/// Seconds in a day.
const DAY: u32 = 24 * 3600;
/// How far ahead `next_change` looks (a schedule that never changes has none).
const SEARCH_DAYS: i32 = 400;

/// The `[schedule]` section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScheduleSection {
    /// What a moment no period covers is called.
    #[serde(default = "default_period_name")]
    pub default: String,
    /// Dates (YYYY-MM-DD) on which only periods with `bank-holidays = true` apply.
    #[serde(default)]
    pub bank_holidays: Vec<String>,
    /// A copy of gov.uk's `bank-holidays.json` whose `bank-holidays-division` dates are
    /// bank holidays too (relative paths are from the policy file's directory).
    pub bank_holidays_file: Option<String>,
    /// `england-and-wales`, `scotland` or `northern-ireland`: the file's division.
    pub bank_holidays_division: Option<String>,
    /// Periods, first match wins.
    #[serde(default, rename = "period")]
    pub periods: Vec<PeriodSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PeriodSection {
    pub name: String,
    /// `mon`..`sun`, full names, `weekdays`, `weekend` or `daily`.
    pub days: OneOrMany,
    /// `HH:MM-HH:MM` local time, or several; an end at or before the start crosses midnight.
    pub hours: OneOrMany,
    /// Hours that replace `hours` on some days, e.g. `fri = "08:30-16:30"`.
    #[serde(default)]
    pub hours_by_day: IndexMap<String, OneOrMany>,
    /// Whether the period applies on bank holidays too.
    #[serde(default)]
    pub bank_holidays: bool,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            Self::One(one) => vec![one.as_str()],
            Self::Many(many) => many.iter().map(String::as_str).collect(),
        }
    }
}

fn default_period_name() -> String {
    "outside".into()
}

impl Default for ScheduleSection {
    /// The council schedule: lunch 12:00-13:00 and working hours 08:30-17:00 on weekdays,
    /// `outside` otherwise, England and Wales bank holidays from the shipped copy of
    /// gov.uk's file.
    fn default() -> Self {
        let weekdays = OneOrMany::One("weekdays".into());
        let bank_holidays =
            super::bank_holidays::dates_of(super::bank_holidays::SHIPPED, "england-and-wales")
                .expect("the shipped bank-holidays.json is gov.uk's (tested)");
        Self {
            default: default_period_name(),
            bank_holidays: bank_holidays.iter().map(Date::to_string).collect(),
            bank_holidays_file: None,
            bank_holidays_division: None,
            periods: vec![
                PeriodSection {
                    name: "lunch".into(),
                    days: weekdays.clone(),
                    hours: OneOrMany::One("12:00-13:00".into()),
                    hours_by_day: IndexMap::new(),
                    bank_holidays: false,
                },
                PeriodSection {
                    name: "working".into(),
                    days: weekdays,
                    hours: OneOrMany::One("08:30-17:00".into()),
                    hours_by_day: IndexMap::new(),
                    bank_holidays: false,
                },
            ],
        }
    }
}

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    timezone: TimeZone,
    default: String,
    bank_holidays: BTreeSet<Date>,
    /// gov.uk's file and the division read from it, when the schedule names one.
    bank_holidays_source: Option<(String, String)>,
    periods: Vec<Period>,
}

/// A period as `policy show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeriodLine {
    pub name: String,
    /// `mon-thu 08:30-17:00`, `fri 08:30-16:30`: days with the same hours together.
    pub hours: Vec<String>,
    pub on_bank_holidays: bool,
}

#[derive(Debug, Clone)]
struct Period {
    name: String,
    /// Ranges per weekday, Monday first.
    hours: [Vec<Range>; 7],
    on_bank_holidays: bool,
}

/// A kind of day, for [`Schedule::never_in_force`].
#[derive(Debug, Clone, Copy)]
struct DayContext {
    /// Monday is 0.
    weekday: usize,
    holiday: bool,
    yesterday_holiday: bool,
}

/// The minutes of one day a period covers (hours are written to the minute).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Minutes([u64; MINUTE_WORDS]);

const MINUTES_A_DAY: usize = 24 * 60;
const MINUTE_WORDS: usize = MINUTES_A_DAY.div_ceil(64);

impl Minutes {
    /// Adds seconds `[start, end)` of the day.
    fn add_range(&mut self, start: u32, end: u32) {
        for minute in (start / 60) as usize..(end / 60) as usize {
            self.0[minute / 64] |= 1 << (minute % 64);
        }
    }

    fn add(&mut self, other: &Minutes) {
        for (word, other) in self.0.iter_mut().zip(&other.0) {
            *word |= other;
        }
    }

    fn remove(&mut self, other: &Minutes) {
        for (word, other) in self.0.iter_mut().zip(&other.0) {
            *word &= !other;
        }
    }

    fn is_within(&self, other: &Minutes) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .all(|(word, other)| word & !other == 0)
    }

    fn meets(&self, other: &Minutes) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .any(|(word, other)| word & other != 0)
    }

    fn is_full(&self) -> bool {
        let mut full = Minutes::default();
        full.add_range(0, DAY);
        *self == full
    }
}

impl Period {
    /// The minutes of a `context` day this period covers: its ranges of that day, and
    /// the part after midnight of a range that began the day before.
    fn minutes(&self, context: DayContext) -> Minutes {
        let mut minutes = Minutes::default();
        if self.on_bank_holidays || !context.holiday {
            for range in &self.hours[context.weekday] {
                let end = if range.crosses_midnight() {
                    DAY
                } else {
                    range.end
                };
                minutes.add_range(range.start, end);
            }
        }
        if self.on_bank_holidays || !context.yesterday_holiday {
            for range in &self.hours[(context.weekday + 6) % 7] {
                if range.crosses_midnight() {
                    minutes.add_range(0, range.end);
                }
            }
        }
        minutes
    }
}

/// Seconds of the local day: `[start, end)`; `end <= start` crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: u32,
    end: u32,
}

impl Range {
    fn crosses_midnight(self) -> bool {
        self.end <= self.start
    }
}

/// The period at an instant, and why, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodAt {
    pub name: String,
    pub reason: String,
}

/// Validates `section`: errors name the field from the document root. A bank-holidays
/// file is read relative to `base_dir`.
pub fn compile(
    section: &ScheduleSection,
    timezone: &TimeZone,
    base_dir: &Path,
) -> Result<Schedule, (FieldPath, String)> {
    let root = FieldPath::root().key("schedule");
    if section.default.trim().is_empty() {
        return Err((
            root.key("default"),
            "the default period needs a name, e.g. \"outside\"".into(),
        ));
    }
    let mut bank_holidays = BTreeSet::new();
    for (i, text) in section.bank_holidays.iter().enumerate() {
        let date: Date = text.parse().map_err(|_| {
            (
                root.key("bank-holidays").index(i),
                format!("`{text}`: write dates as YYYY-MM-DD"),
            )
        })?;
        bank_holidays.insert(date);
    }
    bank_holidays.extend(bank_holidays_from_file(section, &root, base_dir)?);
    let periods = section
        .periods
        .iter()
        .enumerate()
        .map(|(i, period)| compile_period(period, &root.key("period").index(i)))
        .collect::<Result<_, _>>()?;
    Ok(Schedule {
        timezone: timezone.clone(),
        default: section.default.clone(),
        bank_holidays,
        bank_holidays_source: section
            .bank_holidays_file
            .as_ref()
            .zip(section.bank_holidays_division.as_ref())
            .map(|(file, division)| (base_dir.join(file).display().to_string(), division.clone())),
        periods,
    })
}

/// The dates of `bank-holidays-file`'s `bank-holidays-division`, if the schedule names a
/// file; the two keys go together.
fn bank_holidays_from_file(
    section: &ScheduleSection,
    root: &FieldPath,
    base_dir: &Path,
) -> Result<Vec<Date>, (FieldPath, String)> {
    use super::bank_holidays::{DIVISIONS, read};
    match (&section.bank_holidays_file, &section.bank_holidays_division) {
        (None, None) => Ok(Vec::new()),
        (Some(_), None) => Err((
            root.key("bank-holidays-file"),
            format!("name the file's division in `bank-holidays-division` ({DIVISIONS})"),
        )),
        (None, Some(_)) => Err((
            root.key("bank-holidays-division"),
            "a division of which file? Name gov.uk's bank-holidays.json in \
             `bank-holidays-file`"
                .into(),
        )),
        (Some(file), Some(division)) => read(&base_dir.join(file), division)
            .map_err(|message| (root.key("bank-holidays-file"), message)),
    }
}

fn compile_period(
    section: &PeriodSection,
    path: &FieldPath,
) -> Result<Period, (FieldPath, String)> {
    if section.name.trim().is_empty() {
        return Err((
            path.key("name"),
            "a period needs a name, e.g. \"working\"".into(),
        ));
    }
    refuse_empty(
        &section.days,
        path.key("days"),
        "days: weekdays, mon, sat, ...",
    )?;
    refuse_empty(&section.hours, path.key("hours"), "hours: 08:30-17:00")?;
    let mut days = Vec::new();
    for (i, day) in section.days.items().into_iter().enumerate() {
        let at = || match section.days {
            OneOrMany::One(_) => path.key("days"),
            OneOrMany::Many(_) => path.key("days").index(i),
        };
        days.extend(parse_days(day).map_err(|e| (at(), e))?);
    }
    let ranges = parse_ranges(&section.hours, &path.key("hours"))?;
    let mut hours: [Vec<Range>; 7] = Default::default();
    for day in &days {
        hours[day.to_monday_zero_offset() as usize] = ranges.clone();
    }
    for (day_name, day_hours) in &section.hours_by_day {
        let at = path.key("hours-by-day").key(day_name);
        refuse_empty(
            day_hours,
            at.clone(),
            "hours (to have none that day, leave the day out of `days`)",
        )?;
        let day_ranges = parse_ranges(day_hours, &at)?;
        for day in parse_days(day_name).map_err(|e| (at.clone(), e))? {
            hours[day.to_monday_zero_offset() as usize] = day_ranges.clone();
        }
    }
    Ok(Period {
        name: section.name.clone(),
        hours,
        on_bank_holidays: section.bank_holidays,
    })
}

/// An empty list would make the period cover nothing, silently: refused.
fn refuse_empty(list: &OneOrMany, at: FieldPath, what: &str) -> Result<(), (FieldPath, String)> {
    match list {
        OneOrMany::Many(items) if items.is_empty() => Err((
            at,
            format!("an empty list: the period would never be in force; name the {what}"),
        )),
        _ => Ok(()),
    }
}

fn parse_days(text: &str) -> Result<Vec<Weekday>, String> {
    use Weekday::*;
    let days = match text.trim().to_ascii_lowercase().as_str() {
        "mon" | "monday" => vec![Monday],
        "tue" | "tues" | "tuesday" => vec![Tuesday],
        "wed" | "wednesday" => vec![Wednesday],
        "thu" | "thur" | "thurs" | "thursday" => vec![Thursday],
        "fri" | "friday" => vec![Friday],
        "sat" | "saturday" => vec![Saturday],
        "sun" | "sunday" => vec![Sunday],
        "weekdays" => vec![Monday, Tuesday, Wednesday, Thursday, Friday],
        "weekend" => vec![Saturday, Sunday],
        "daily" => vec![
            Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
        ],
        _ => {
            return Err(format!(
                "`{text}`: days are mon, tue, wed, thu, fri, sat, sun (or full names), weekdays, \
                 weekend or daily"
            ));
        }
    };
    Ok(days)
}

fn parse_ranges(hours: &OneOrMany, path: &FieldPath) -> Result<Vec<Range>, (FieldPath, String)> {
    hours
        .items()
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let at = match hours {
                OneOrMany::One(_) => path.clone(),
                OneOrMany::Many(_) => path.index(i),
            };
            parse_range(text).map_err(|e| (at, e))
        })
        .collect()
}

fn parse_range(text: &str) -> Result<Range, String> {
    let bad = || format!("`{text}`: hours are HH:MM-HH:MM, 00:00 to 24:00, e.g. 08:30-17:00");
    let (start, end) = text.split_once('-').ok_or_else(bad)?;
    let (start, end) = (
        parse_time(start).ok_or_else(bad)?,
        parse_time(end).ok_or_else(bad)?,
    );
    if start == end {
        return Err(format!(
            "`{text}`: the range is empty (start and end are the same)"
        ));
    }
    if start == DAY {
        return Err(format!("`{text}`: a range starts at 00:00 to 23:59"));
    }
    Ok(Range { start, end })
}

/// `HH:MM` → seconds of the day; 24:00 is the end of the day.
fn parse_time(text: &str) -> Option<u32> {
    let (hours, minutes) = text.trim().split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
    let seconds = (hours * 60 + minutes) * 60;
    (minutes < 60 && seconds <= DAY).then_some(seconds)
}

impl Schedule {
    /// Every period name, the default last; rules may name only these.
    pub fn periods(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for name in self.periods.iter().map(|p| &p.name).chain([&self.default]) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    pub fn timezone(&self) -> &TimeZone {
        &self.timezone
    }

    /// The name of the period in force when no period covers a moment.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// The name of each `[[schedule.period]]`, in file order.
    pub fn period_names(&self) -> impl Iterator<Item = &str> {
        self.periods.iter().map(|p| p.name.as_str())
    }

    /// Whether the dates of bank holidays change what is in force: some period does not
    /// apply on them.
    pub fn bank_holidays_matter(&self) -> bool {
        self.periods.iter().any(|p| !p.on_bank_holidays)
    }

    /// gov.uk's bank-holidays file and its division, when the schedule reads one.
    pub fn bank_holidays_source(&self) -> Option<(&str, &str)> {
        self.bank_holidays_source
            .as_ref()
            .map(|(file, division)| (file.as_str(), division.as_str()))
    }

    /// Each `[[schedule.period]]` as people read it back, in file order.
    pub fn period_lines(&self) -> Vec<PeriodLine> {
        const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let text = |ranges: &[Range]| -> String {
            let clock = |s: u32| format!("{:02}:{:02}", s / 3600, s % 3600 / 60);
            ranges
                .iter()
                .map(|r| format!("{}-{}", clock(r.start), clock(r.end)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.periods
            .iter()
            .map(|period| {
                let mut hours = Vec::new();
                let mut day = 0;
                while day < 7 {
                    let same = (day..7)
                        .take_while(|d| period.hours[*d] == period.hours[day])
                        .count();
                    if !period.hours[day].is_empty() {
                        let days = match same {
                            1 => DAYS[day].to_owned(),
                            _ => format!("{}-{}", DAYS[day], DAYS[day + same - 1]),
                        };
                        hours.push(format!("{days} {}", text(&period.hours[day])));
                    }
                    day += same;
                }
                PeriodLine {
                    name: period.name.clone(),
                    hours,
                    on_bank_holidays: period.on_bank_holidays,
                }
            })
            .collect()
    }

    /// Every bank holiday, listed and from the file, in date order.
    pub fn bank_holidays(&self) -> &BTreeSet<Date> {
        &self.bank_holidays
    }

    /// The periods (their positions in `[[schedule.period]]`) that can never be in force,
    /// each with the earlier periods that take its moments: periods are read top to
    /// bottom, so one listed after others that cover all its hours (lunch after working)
    /// never applies.
    pub fn never_in_force(&self) -> Vec<(usize, Vec<usize>)> {
        let contexts = self.day_contexts();
        let mut taken = vec![Minutes::default(); contexts.len()];
        let mut never = Vec::new();
        for (index, period) in self.periods.iter().enumerate() {
            let mut reachable = false;
            let mut covered_by = Vec::new();
            for (context, taken_before) in contexts.iter().zip(&mut taken) {
                let own = period.minutes(*context);
                reachable |= !own.is_within(taken_before);
                // Which earlier periods take its minutes: each the first to cover some.
                let mut left = own.clone();
                for (earlier, other) in self.periods[..index].iter().enumerate() {
                    let other = other.minutes(*context);
                    if left.meets(&other) && !covered_by.contains(&earlier) {
                        covered_by.push(earlier);
                    }
                    left.remove(&other);
                }
                taken_before.add(&own);
            }
            if !reachable {
                covered_by.sort_unstable();
                never.push((index, covered_by));
            }
        }
        never
    }

    /// Whether the default period is ever in force: some moment of some kind of day no
    /// period covers.
    pub fn default_in_force(&self) -> bool {
        self.day_contexts().into_iter().any(|context| {
            let mut taken = Minutes::default();
            for period in &self.periods {
                taken.add(&period.minutes(context));
            }
            !taken.is_full()
        })
    }

    /// Every kind of day a period's hours depend on: the weekday, whether it is a bank
    /// holiday, and whether the day before was (a range crossing midnight began then).
    /// Bank-holiday days only when the schedule has bank holidays.
    fn day_contexts(&self) -> Vec<DayContext> {
        let holiday_states: &[bool] = if self.bank_holidays.is_empty() {
            &[false]
        } else {
            &[false, true]
        };
        let mut contexts = Vec::new();
        for weekday in 0..7 {
            for &holiday in holiday_states {
                for &yesterday_holiday in holiday_states {
                    contexts.push(DayContext {
                        weekday,
                        holiday,
                        yesterday_holiday,
                    });
                }
            }
        }
        contexts
    }

    /// The period in force at `at`, and why.
    pub fn period_at(&self, at: Timestamp) -> PeriodAt {
        let local = at.to_zoned(self.timezone.clone());
        let (date, second) = (local.date(), second_of_day(local.datetime()));
        let when = format!(
            "{} {} {}",
            date.weekday_name(),
            local.strftime("%H:%M"),
            local.strftime("%Z")
        );
        if let Some((period, range)) = self.matching(date, second) {
            return PeriodAt {
                name: period.name.clone(),
                reason: format!("{when} is in `{}` ({})", period.name, format_range(range)),
            };
        }
        let reason = if self.bank_holidays.contains(&date) {
            format!("{date} is a bank holiday: `{}`", self.default)
        } else {
            format!("{when} is in no period: `{}`", self.default)
        };
        PeriodAt {
            name: self.default.clone(),
            reason,
        }
    }

    /// The first period (and its range) covering `second` of local `date`: a range of
    /// that day, or one that began the day before and crosses midnight.
    fn matching(&self, date: Date, second: u32) -> Option<(&Period, Range)> {
        let yesterday = date.yesterday().ok();
        self.periods.iter().find_map(|period| {
            let today = self
                .applies_on(period, date)
                .then(|| &period.hours[weekday_index(date)])
                .into_iter()
                .flatten()
                .find(|r| {
                    if r.crosses_midnight() {
                        second >= r.start
                    } else {
                        (r.start..r.end).contains(&second)
                    }
                });
            let from_yesterday = yesterday
                .filter(|d| self.applies_on(period, *d))
                .into_iter()
                .flat_map(|d| period.hours[weekday_index(d)].iter())
                .find(|r| r.crosses_midnight() && second < r.end);
            today.or(from_yesterday).map(|range| (period, *range))
        })
    }

    fn applies_on(&self, period: &Period, date: Date) -> bool {
        period.on_bank_holidays || !self.bank_holidays.contains(&date)
    }

    /// The first instant after `at` at which the period in force is another one.
    pub fn next_change(&self, at: Timestamp) -> Option<Timestamp> {
        let now = self.period_at(at).name;
        let start = at.to_zoned(self.timezone.clone()).date();
        for offset in -1..SEARCH_DAYS {
            let Ok(day) = start.checked_add(offset.days()) else {
                break;
            };
            let mut candidates: Vec<Timestamp> = self
                .boundaries_of(day)
                .filter(|candidate| *candidate > at)
                .collect();
            candidates.sort();
            if let Some(change) = candidates
                .into_iter()
                .find(|candidate| self.period_at(*candidate).name != now)
            {
                return Some(change);
            }
        }
        None
    }

    /// Every instant of `day` where a period might begin or end: range edges and midnight
    /// (bank holidays begin and end there).
    fn boundaries_of(&self, day: Date) -> impl Iterator<Item = Timestamp> + '_ {
        let edges = self.periods.iter().flat_map(move |period| {
            period.hours[weekday_index(day)]
                .iter()
                .flat_map(|r| [r.start, r.end])
        });
        std::iter::once(0)
            .chain(edges)
            .filter_map(move |second| self.instant(day, second))
    }

    /// The instant of `second` of local `day` (24:00 is the next midnight).
    fn instant(&self, day: Date, second: u32) -> Option<Timestamp> {
        let day = if second >= DAY {
            day.tomorrow().ok()?
        } else {
            day
        };
        let second = second % DAY;
        let time = jiff::civil::Time::new(
            (second / 3600) as i8,
            (second / 60 % 60) as i8,
            (second % 60) as i8,
            0,
        )
        .ok()?;
        self.timezone
            .to_ambiguous_zoned(day.to_datetime(time))
            .compatible()
            .ok()
            .map(|zoned| zoned.timestamp())
    }
}

fn weekday_index(date: Date) -> usize {
    date.weekday().to_monday_zero_offset() as usize
}

fn second_of_day(local: DateTime) -> u32 {
    local.hour() as u32 * 3600 + local.minute() as u32 * 60 + local.second() as u32
}

fn format_range(range: Range) -> String {
    let hm = |s: u32| format!("{:02}:{:02}", s / 3600, s / 60 % 60);
    format!("{}-{}", hm(range.start), hm(range.end))
}

/// `Monday`, as people write it.
trait WeekdayName {
    fn weekday_name(&self) -> &'static str;
}

impl WeekdayName for Date {
    fn weekday_name(&self) -> &'static str {
        match self.weekday() {
            Weekday::Monday => "Monday",
            Weekday::Tuesday => "Tuesday",
            Weekday::Wednesday => "Wednesday",
            Weekday::Thursday => "Thursday",
            Weekday::Friday => "Friday",
            Weekday::Saturday => "Saturday",
            Weekday::Sunday => "Sunday",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn london() -> TimeZone {
        TimeZone::get("Europe/London").unwrap()
    }

    fn council() -> Schedule {
        compile(&ScheduleSection::default(), &london(), Path::new(".")).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn period(schedule: &Schedule, text: &str) -> String {
        schedule.period_at(at(text)).name
    }

    fn parse(toml_text: &str) -> Result<Schedule, (FieldPath, String)> {
        #[derive(Deserialize)]
        struct Doc {
            schedule: ScheduleSection,
        }
        let doc: Doc = toml::from_str(toml_text).unwrap();
        compile(&doc.schedule, &london(), Path::new("."))
    }

    #[test]
    fn the_council_schedule_names_its_periods_in_order() {
        assert_eq!(council().periods(), ["lunch", "working", "outside"]);
    }

    #[test]
    fn lunch_boundaries_to_the_second() {
        let s = council();
        // Monday 2026-11-23, GMT (UTC+0).
        assert_eq!(period(&s, "2026-11-23T11:59:59Z"), "working");
        assert_eq!(period(&s, "2026-11-23T12:00:00Z"), "lunch");
        assert_eq!(period(&s, "2026-11-23T12:59:59Z"), "lunch");
        assert_eq!(period(&s, "2026-11-23T13:00:00Z"), "working");
        assert_eq!(period(&s, "2026-11-23T08:29:59Z"), "outside");
        assert_eq!(period(&s, "2026-11-23T16:59:59Z"), "working");
        assert_eq!(period(&s, "2026-11-23T17:00:00Z"), "outside");
    }

    #[test]
    fn working_hours_are_wall_clock_hours_across_dst() {
        let s = council();
        // After the March change (29 March 2026) 08:30 BST is 07:30 UTC.
        assert_eq!(period(&s, "2026-03-30T07:29:59Z"), "outside");
        assert_eq!(period(&s, "2026-03-30T07:30:00Z"), "working");
        // After the October change (25 October 2026) 08:30 GMT is 08:30 UTC.
        assert_eq!(period(&s, "2026-10-26T07:30:00Z"), "outside");
        assert_eq!(period(&s, "2026-10-26T08:30:00Z"), "working");
        // The boundary is found exactly across the change.
        assert_eq!(
            s.next_change(at("2026-03-27T18:00:00Z")),
            Some(at("2026-03-30T07:30:00Z"))
        );
    }

    #[test]
    fn a_night_period_across_the_spring_change_lasts_seven_hours() {
        let s = parse(
            r#"[schedule]
               default = "day"
               [[schedule.period]]
               name = "night"
               days = "daily"
               hours = "22:00-06:00""#,
        )
        .unwrap();
        // Saturday 28 March 2026 22:00 GMT to Sunday 06:00 BST (05:00 UTC).
        let start = at("2026-03-28T22:00:00Z");
        assert_eq!(s.period_at(start).name, "night");
        let end = s.next_change(start).unwrap();
        assert_eq!(end, at("2026-03-29T05:00:00Z"));
        assert_eq!(end.duration_since(start).as_hours(), 7);
        assert_eq!(period(&s, "2026-03-29T04:59:59Z"), "night");
        assert_eq!(period(&s, "2026-03-29T05:00:00Z"), "day");
    }

    #[test]
    fn midnight_and_the_end_of_the_day() {
        let s = parse(
            r#"[schedule]
               [[schedule.period]]
               name = "late"
               days = "mon"
               hours = "20:00-24:00""#,
        )
        .unwrap();
        assert_eq!(period(&s, "2026-11-23T23:59:59Z"), "late");
        assert_eq!(period(&s, "2026-11-24T00:00:00Z"), "outside");
        assert_eq!(
            s.next_change(at("2026-11-23T21:00:00Z")),
            Some(at("2026-11-24T00:00:00Z"))
        );
    }

    #[test]
    fn bank_holidays_are_outside_unless_a_period_says_otherwise() {
        let s = council();
        // Friday 25 December 2026, midday.
        let christmas = s.period_at(at("2026-12-25T12:30:00Z"));
        assert_eq!(christmas.name, "outside");
        assert!(
            christmas.reason.contains("bank holiday"),
            "{}",
            christmas.reason
        );
        let on_call = parse(
            r#"[schedule]
               bank-holidays = ["2026-12-25"]
               [[schedule.period]]
               name = "on-call"
               days = "daily"
               hours = "00:00-24:00"
               bank-holidays = true"#,
        )
        .unwrap();
        assert_eq!(period(&on_call, "2026-12-25T12:30:00Z"), "on-call");
    }

    #[test]
    fn next_change_skips_weekends_and_bank_holidays() {
        let s = council();
        // Friday 20 November 2026, 18:00 → Monday 08:30.
        assert_eq!(
            s.next_change(at("2026-11-20T18:00:00Z")),
            Some(at("2026-11-23T08:30:00Z"))
        );
        // Thursday 24 December 18:00 → Friday 25 and Monday 28 are bank holidays → Tuesday.
        assert_eq!(
            s.next_change(at("2026-12-24T18:00:00Z")),
            Some(at("2026-12-29T08:30:00Z"))
        );
        // During working hours, the next change is lunch.
        assert_eq!(
            s.next_change(at("2026-11-23T09:00:00Z")),
            Some(at("2026-11-23T12:00:00Z"))
        );
    }

    #[test]
    fn hours_by_day_replace_the_usual_hours() {
        let s = parse(
            r#"[schedule]
               [[schedule.period]]
               name = "working"
               days = "weekdays"
               hours = ["08:30-12:00", "13:00-17:00"]
               hours-by-day = { fri = "08:30-16:30" }"#,
        )
        .unwrap();
        // Friday 27 November 2026.
        assert_eq!(period(&s, "2026-11-27T16:45:00Z"), "outside");
        assert_eq!(period(&s, "2026-11-27T12:30:00Z"), "working");
        // Thursday: the two ranges, a gap at lunch.
        assert_eq!(period(&s, "2026-11-26T12:30:00Z"), "outside");
        assert_eq!(period(&s, "2026-11-26T16:45:00Z"), "working");
    }

    #[test]
    fn a_schedule_with_no_periods_never_changes() {
        let s = parse("[schedule]\ndefault = \"working\"").unwrap();
        assert_eq!(period(&s, "2026-11-23T03:00:00Z"), "working");
        assert_eq!(s.next_change(at("2026-11-23T03:00:00Z")), None);
    }

    #[test]
    fn every_error_names_its_field() {
        let cases = [
            (
                "[schedule]\n[[schedule.period]]\nname = \"w\"\ndays = \"weekdays\"\nhours = \"25:00-26:00\"",
                "schedule.period[0].hours",
                "HH:MM-HH:MM",
            ),
            (
                "[schedule]\n[[schedule.period]]\nname = \"w\"\ndays = [\"mon\", \"funday\"]\nhours = \"08:00-09:00\"",
                "schedule.period[0].days[1]",
                "funday",
            ),
            (
                "[schedule]\nbank-holidays = [\"2026-12-25\", \"Christmas\"]",
                "schedule.bank-holidays[1]",
                "YYYY-MM-DD",
            ),
            (
                "[schedule]\n[[schedule.period]]\nname = \"w\"\ndays = \"mon\"\nhours = \"09:00-09:00\"",
                "schedule.period[0].hours",
                "empty",
            ),
            (
                "[schedule]\n[[schedule.period]]\nname = \"w\"\ndays = \"mon\"\nhours = \"09:00-10:00\"\nhours-by-day = { fri = \"9-5\" }",
                "schedule.period[0].hours-by-day.fri",
                "HH:MM",
            ),
            (
                "[schedule]\n[[schedule.period]]\nname = \" \"\ndays = \"mon\"\nhours = \"09:00-10:00\"",
                "schedule.period[0].name",
                "name",
            ),
            ("[schedule]\ndefault = \"\"", "schedule.default", "name"),
        ];
        for (text, field, fragment) in cases {
            let (path, message) = parse(text).expect_err(text);
            assert_eq!(path.to_string(), field, "{text}");
            assert!(message.contains(fragment), "{text}: {message}");
        }
    }
}
