//! Rules: (groups, categories, periods) → allow, block or shape. Read top to bottom; the
//! first rule that matches decides, as network teams read firewall rules.

use std::time::Duration;

use serde::Deserialize;

use super::source::{FieldPath, PolicyError, Source};

/// One name or a list of them, as people write either.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn names(&self) -> Vec<&str> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(name) => vec![name.as_str()],
            OneOrMany::Many(names) => names.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    #[serde(default)]
    pub description: String,
    /// Categories the rule is about; every category when left out.
    #[serde(default, alias = "category")]
    pub categories: OneOrMany,
    /// Groups it applies to; every group when left out.
    #[serde(default, alias = "group")]
    pub groups: OneOrMany,
    /// Periods it applies in (working, lunch, outside, ...); always when left out.
    #[serde(default, alias = "period")]
    pub periods: OneOrMany,
    /// `allow`, `block` or `shape`.
    pub action: String,
    /// For `shape`: the rate, as tc writes it: `512kbit`, `2mbit`, `1gbit`.
    pub rate: Option<String>,
    /// For `shape`: `shared` (one rate for all matching traffic, the default) or
    /// `per-client` (each client gets the rate).
    pub share: Option<String>,
    /// For `shape`: full speed for this much per client and period first, e.g. `20MB/hour`
    /// or `500kB/10min` (`m` is refused: minutes or months?)
    /// ("occasional short clips only"). With `block`: blocked once it is spent.
    pub allowance: Option<String>,
    /// For `shape` or `block`: full speed for this many minutes of use per hour or day first,
    /// e.g. `10 minutes/hour` (a minute of use: 60 s from a packet, idle minutes not
    /// counted), then shaped or blocked. Per client, or shared with `share = "shared"`.
    pub time_allowance: Option<String>,
    /// For `block`: tell the client at once (a TCP reset; for UDP, QUIC included, an ICMP
    /// "administratively prohibited", which makes a browser fall back to TCP without
    /// waiting), the default; `false` drops silently.
    pub fail_fast: Option<bool>,
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Allow,
    Block,
    Shape(Shaping),
    /// `block` with an allowance: full speed while it lasts, then dropped.
    BlockAfter(Allowances),
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Block | Action::BlockAfter(_) => "block",
            Action::Shape(_) => "shape",
        }
    }

    /// The allowances before the rule shapes or blocks, if it has any.
    pub fn allowances(&self) -> Option<Allowances> {
        match self {
            Action::Shape(shaping) => Some(shaping.allowances()),
            Action::BlockAfter(allowances) => Some(allowances.clone()),
            Action::Allow | Action::Block => None,
        }
        .filter(|a| a.volume.is_some() || a.time.is_some())
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Shape(shaping) => write!(f, "shape {shaping}"),
            Action::BlockAfter(allowances) => write!(f, "block after {allowances}"),
            other => f.write_str(other.name()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shaping {
    /// Bits per second.
    pub rate_bps: u64,
    pub per_client: bool,
    pub allowance: Option<Allowance>,
    pub time_allowance: Option<TimeAllowance>,
}

impl Shaping {
    pub fn allowances(&self) -> Allowances {
        Allowances {
            per_client: self.per_client,
            volume: self.allowance.clone(),
            time: self.time_allowance,
        }
    }
}

impl std::fmt::Display for Shaping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", format_rate(self.rate_bps))?;
        f.write_str(if self.per_client {
            " per client"
        } else {
            " shared"
        })?;
        let allowances = self.allowances();
        if allowances.volume.is_some() || allowances.time.is_some() {
            write!(f, " after {allowances}")?;
        }
        Ok(())
    }
}

/// What a rule gives at full speed before it shapes or blocks: the volume, the minutes of
/// use, or both (full speed while both last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowances {
    /// The volume is always each client's; the minutes are each client's, or shared by
    /// everyone under the rule.
    pub per_client: bool,
    pub volume: Option<Allowance>,
    pub time: Option<TimeAllowance>,
}

impl std::fmt::Display for Allowances {
    /// `5 minutes/hour and 50 MB per 1h at full speed per client`; under a shared rule
    /// `30 minutes/day shared at full speed` (the volume is always each client's).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let volume = self.volume.as_ref().map(|volume| {
            format!(
                "{} MB per {}",
                volume.bytes / 1_000_000,
                humantime::format_duration(volume.per)
            )
        });
        match (&self.time, volume) {
            (Some(time), Some(volume)) if self.per_client => {
                write!(f, "{time} and {volume} at full speed per client")
            }
            (Some(time), Some(volume)) => {
                write!(f, "{time} shared and {volume} per client at full speed")
            }
            (Some(time), None) if self.per_client => write!(f, "{time} at full speed per client"),
            (Some(time), None) => write!(f, "{time} shared at full speed"),
            (None, Some(volume)) => write!(f, "{volume} at full speed per client"),
            (None, None) => Ok(()),
        }
    }
}

/// Full speed for `minutes` minutes of use in every window of `window_minutes` (an hour, a
/// day), counted from the first of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeAllowance {
    pub minutes: u16,
    pub window_minutes: u16,
}

impl std::fmt::Display for TimeAllowance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: u16, unit: &str| {
            if n == 1 {
                unit.to_owned()
            } else {
                format!("{n} {unit}s")
            }
        };
        let window = if self.window_minutes.is_multiple_of(1440) {
            plural(self.window_minutes / 1440, "day")
        } else {
            plural(self.window_minutes / 60, "hour")
        };
        let minutes = if self.minutes == 1 {
            "minute"
        } else {
            "minutes"
        };
        write!(f, "{} {minutes}/{window}", self.minutes)
    }
}

/// Full speed for `bytes` per client every `per`, then shaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    pub bytes: u64,
    pub per: Duration,
}

/// A validated rule. `None` in a list means "any".
#[derive(Debug, Clone)]
pub struct Rule {
    /// Position in the file (0-based), for explanations.
    pub index: usize,
    pub description: String,
    pub categories: Option<Vec<u16>>,
    pub groups: Option<Vec<u16>>,
    pub periods: Option<Vec<String>>,
    pub action: Action,
    /// A block tells the client at once (reset or ICMP) instead of dropping silently.
    pub fail_fast: bool,
}

impl Rule {
    pub fn matches(&self, group: u16, category: u16, period: &str) -> bool {
        self.groups.as_ref().is_none_or(|g| g.contains(&group))
            && self
                .categories
                .as_ref()
                .is_none_or(|c| c.contains(&category))
            && self
                .periods
                .as_ref()
                .is_none_or(|p| p.iter().any(|p| p == period))
    }
}

/// Names a rule may refer to, to check them.
pub struct Names<'a> {
    pub category: &'a dyn Fn(&str) -> Option<u16>,
    pub group: &'a dyn Fn(&str) -> Option<u16>,
    pub periods: &'a [String],
}

pub fn compile(
    sections: &[RuleSection],
    names: &Names<'_>,
    source: &Source<'_>,
) -> Result<Vec<Rule>, PolicyError> {
    sections
        .iter()
        .enumerate()
        .map(|(index, section)| compile_rule(index, section, names, source))
        .collect()
}

fn compile_rule(
    index: usize,
    section: &RuleSection,
    names: &Names<'_>,
    source: &Source<'_>,
) -> Result<Rule, PolicyError> {
    let path = FieldPath::root().key("rules").index(index);
    for (field, list, every) in [
        ("categories", &section.categories, "every category"),
        ("groups", &section.groups, "every group"),
        ("periods", &section.periods, "at all times"),
    ] {
        if matches!(list, OneOrMany::Many(names) if names.is_empty()) {
            return Err(source.error_at(
                &path.key(field),
                format!(
                    "an empty list: the rule would apply {every}; leave `{field}` out if that \
                     is meant, or name some"
                ),
            ));
        }
    }
    let resolve =
        |field: &str, list: &OneOrMany, lookup: &dyn Fn(&str) -> Option<u16>, known: &str| {
            let names = list.names();
            if names.is_empty() {
                return Ok(None);
            }
            names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    lookup(name).ok_or_else(|| {
                        let at = match list {
                            OneOrMany::Many(_) => path.key(field).index(i),
                            _ => path.key(field),
                        };
                        source.error_at(&at, format!("no {known} `{name}`"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        };
    let categories = resolve(
        "categories",
        &section.categories,
        names.category,
        "category",
    )?;
    let groups = resolve("groups", &section.groups, names.group, "group")?;
    let periods = {
        let list = section.periods.names();
        for (i, period) in list.iter().enumerate() {
            if !names.periods.iter().any(|p| p == period) {
                let at = match &section.periods {
                    OneOrMany::Many(_) => path.key("periods").index(i),
                    _ => path.key("periods"),
                };
                return Err(source.error_at(
                    &at,
                    format!(
                        "no period `{period}` (the schedule has: {})",
                        names.periods.join(", ")
                    ),
                ));
            }
        }
        (!list.is_empty()).then(|| list.iter().map(|p| p.to_string()).collect())
    };
    let action = compile_action(section, &path, source)?;
    if section.fail_fast.is_some() && matches!(action, Action::BlockAfter(_)) {
        return Err(source.error_at(
            &path.key("fail_fast"),
            "a block after an allowance drops a flow that has been running: there is no first \
             packet left to answer at once; leave `fail_fast` out",
        ));
    }
    if section.fail_fast.is_some() && action != Action::Block {
        return Err(source.error_at(
            &path.key("fail_fast"),
            format!(
                "only a `block` rule fails fast or drops silently; this one is `{}`",
                action.name()
            ),
        ));
    }
    Ok(Rule {
        index,
        description: section.description.clone(),
        categories,
        groups,
        periods,
        action,
        fail_fast: section.fail_fast.unwrap_or(true),
    })
}

/// Refuses a shape rule whose class id (its position, counted from 1) does not fit the
/// datapath's shape classes.
pub fn check_shape_classes(rules: &[Rule], source: &Source<'_>) -> Result<(), PolicyError> {
    let last = classifier_common::shaping::MAX_SHAPE_CLASSES as usize - 1;
    match rules
        .iter()
        .find(|rule| matches!(rule.action, Action::Shape(_)) && rule.index + 1 > last)
    {
        Some(rule) => Err(source.error_at(
            &FieldPath::root().key("rules").index(rule.index),
            format!(
                "a shape rule must be among the first {last} rules (its class id is its position)"
            ),
        )),
        None => Ok(()),
    }
}

fn compile_action(
    section: &RuleSection,
    path: &FieldPath,
    source: &Source<'_>,
) -> Result<Action, PolicyError> {
    let allowed_with = |action: &str| -> &'static [&'static str] {
        match action {
            "block" => &["share", "allowance", "time_allowance"],
            "shape" => &["rate", "share", "allowance", "time_allowance"],
            _ => &[],
        }
    };
    let set = [
        ("rate", section.rate.is_some()),
        ("share", section.share.is_some()),
        ("allowance", section.allowance.is_some()),
        ("time_allowance", section.time_allowance.is_some()),
    ];
    if let Some((field, _)) = set
        .iter()
        .find(|(field, set)| *set && !allowed_with(&section.action).contains(field))
        .filter(|_| matches!(section.action.as_str(), "allow" | "block" | "shape"))
    {
        let goes_with = match *field {
            "rate" => "action = \"shape\"",
            _ => "action = \"shape\" or \"block\"",
        };
        return Err(source.error_at(
            &path.key(field),
            format!("`{field}` only goes with {goes_with}"),
        ));
    }
    let per_client = || match section.share.as_deref() {
        None | Some("shared") => Ok(false),
        Some("per-client") => Ok(true),
        Some(other) => Err(source.error_at(
            &path.key("share"),
            format!("`{other}`: choose `shared` or `per-client`"),
        )),
    };
    let allowances = || -> Result<(Option<Allowance>, Option<TimeAllowance>), PolicyError> {
        let volume = section
            .allowance
            .as_deref()
            .map(parse_allowance)
            .transpose()
            .map_err(|e| source.error_at(&path.key("allowance"), e))?;
        let time = section
            .time_allowance
            .as_deref()
            .map(parse_time_allowance)
            .transpose()
            .map_err(|e| source.error_at(&path.key("time_allowance"), e))?;
        Ok((volume, time))
    };
    match section.action.as_str() {
        "allow" => Ok(Action::Allow),
        "block" => {
            let (volume, time) = allowances()?;
            if volume.is_none() && time.is_none() {
                if section.share.is_some() {
                    return Err(source.error_at(
                        &path.key("share"),
                        "`share` goes with a block rule only when it has an allowance (who \
                         shares the minutes)",
                    ));
                }
                return Ok(Action::Block);
            }
            Ok(Action::BlockAfter(Allowances {
                per_client: per_client()?,
                volume,
                time,
            }))
        }
        "shape" => {
            let rate = section.rate.as_deref().ok_or_else(|| {
                source.error_at(
                    &path.key("action"),
                    "a shape rule needs a `rate`, e.g. rate = \"2mbit\"",
                )
            })?;
            let rate_bps = parse_rate(rate).map_err(|e| source.error_at(&path.key("rate"), e))?;
            let per_client = per_client()?;
            let (allowance, time_allowance) = allowances()?;
            Ok(Action::Shape(Shaping {
                rate_bps,
                per_client,
                allowance,
                time_allowance,
            }))
        }
        other => Err(source.error_at(
            &path.key("action"),
            format!("`{other}`: choose `allow`, `block` or `shape`"),
        )),
    }
}

/// A rate as tc writes it: `512kbit`, `2mbit`, `1.5mbit`, `1gbit`, `64000bit` (SI: k =
/// 1000). Bytes-per-second units are refused rather than guessed: tc's `mbps` means
/// megabytes per second, which few people expect.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let multiplier = match unit.trim() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" | "kbps" | "mbps" | "gbps" => {
            return Err(format!(
                "`{text}`: write rates in bits per second (kbit, mbit, gbit); in tc, `{unit}` means \
                 bytes per second"
            ));
        }
        _ => {
            return Err(format!(
                "`{text}`: write a rate like 512kbit, 2mbit or 1gbit"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}`: write a rate like 512kbit, 2mbit or 1gbit"))?;
    let bps = value * multiplier;
    if !(8_000.0..=100e9).contains(&bps) {
        return Err(format!("`{text}`: rates run from 8kbit to 100gbit"));
    }
    Ok(bps as u64)
}

/// Writes a rate back the way it is read: `2mbit`, `512kbit`.
pub fn format_rate(bps: u64) -> String {
    if bps.is_multiple_of(1_000_000_000) {
        format!("{}gbit", bps / 1_000_000_000)
    } else if bps.is_multiple_of(1_000_000) {
        format!("{}mbit", bps / 1_000_000)
    } else if bps.is_multiple_of(1_000) {
        format!("{}kbit", bps / 1_000)
    } else {
        format!("{bps}bit")
    }
}

/// `20MB/hour`, `500kB/10m`, `1GB/day` (SI bytes).
fn parse_allowance(text: &str) -> Result<Allowance, String> {
    let usage = || format!("`{text}`: write an allowance like 20MB/hour or 500kB/10min");
    let (amount, per) = text.split_once('/').ok_or_else(usage)?;
    let amount = amount.trim();
    let split = amount
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(usage)?;
    let (number, unit) = amount.split_at(split);
    let multiplier = match unit {
        "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return Err(usage()),
    };
    let bytes = number.parse::<f64>().map_err(|_| usage())? * multiplier;
    let per = match per.trim() {
        "minute" => Duration::from_secs(60),
        "hour" => Duration::from_secs(3600),
        "day" => Duration::from_secs(86_400),
        other => super::durations::parse_duration(other)
            .map_err(|e| format!("{e} (or `minute`, `hour`, `day`)"))?,
    };
    if bytes < 1.0 || per.is_zero() {
        return Err(usage());
    }
    Ok(Allowance {
        bytes: bytes as u64,
        per,
    })
}

/// `10 minutes/hour`, `1 minute/hour`, `30 minutes/day`, `1 hour/day`, `45 minutes/2 hours`:
/// units written out, as `m` could be minutes or months and `10 minutes/h` reads as a typo.
/// The window is whole hours or days, up to a week, and longer than the allowance.
fn parse_time_allowance(text: &str) -> Result<TimeAllowance, String> {
    let usage = || {
        format!(
            "`{text}`: write a time allowance like \"10 minutes/hour\" or \"30 minutes/day\" \
             (units written out: minute(s) or hour(s) per hour(s) or day(s))"
        )
    };
    let (amount, window) = text.split_once('/').ok_or_else(usage)?;
    let minutes_in = |words: &str, units: &[(&str, u32)], bare: bool| -> Option<u32> {
        let mut parts = words.split_whitespace();
        let (number, unit) = match (parts.next(), parts.next(), parts.next()) {
            (Some(unit), None, None) if bare => ("1", unit),
            (Some(number), Some(unit), None) => (number, unit),
            _ => return None,
        };
        // Digits only: no signs, fractions or exponents.
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let number: u32 = number.parse().ok()?;
        let (_, per) = units
            .iter()
            .find(|(name, _)| unit == *name || unit.strip_suffix('s') == Some(name))?;
        number.checked_mul(*per)
    };
    let minutes = minutes_in(amount, &[("minute", 1), ("hour", 60)], false).ok_or_else(usage)?;
    let window_minutes =
        minutes_in(window, &[("hour", 60), ("day", 1440)], true).ok_or_else(usage)?;
    if minutes == 0 {
        return Err(format!(
            "`{text}`: no minutes at full speed is `action = \"shape\"` or `\"block\"` without \
             an allowance"
        ));
    }
    if window_minutes == 0 || window_minutes > 7 * 1440 {
        return Err(format!("`{text}`: the window runs from an hour to 7 days"));
    }
    if minutes >= window_minutes {
        return Err(format!(
            "`{text}`: the allowance fills its whole window, so it never runs out: leave it out \
             or shorten it"
        ));
    }
    Ok(TimeAllowance {
        minutes: minutes as u16,
        window_minutes: window_minutes as u16,
    })
}

/// The first rule that matches, if any.
pub fn first_match<'a>(
    rules: &'a [Rule],
    group: u16,
    category: u16,
    period: &str,
) -> Option<&'a Rule> {
    rules
        .iter()
        .find(|rule| rule.matches(group, category, period))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_like_tc_and_refuse_bytes() {
        assert_eq!(parse_rate("2mbit").unwrap(), 2_000_000);
        assert_eq!(parse_rate("512kbit").unwrap(), 512_000);
        assert_eq!(parse_rate("1.5Mbit").unwrap(), 1_500_000);
        assert_eq!(parse_rate("1gbit").unwrap(), 1_000_000_000);
        assert!(
            parse_rate("2mbps")
                .unwrap_err()
                .contains("bytes per second")
        );
        for bad in ["2", "fast", "1kbit", "mbit", "-2mbit"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(format_rate(parse_rate("512kbit").unwrap()), "512kbit");
    }

    #[test]
    fn allowances() {
        assert_eq!(
            parse_allowance("20MB/hour").unwrap(),
            Allowance {
                bytes: 20_000_000,
                per: Duration::from_secs(3600)
            }
        );
        assert_eq!(
            parse_allowance("500kB/10min").unwrap().per,
            Duration::from_secs(600)
        );
        for bad in [
            "20MB",
            "20/hour",
            "20MB/sometimes",
            "0MB/hour",
            "500kB/10m",
            "1GB/1M",
        ] {
            assert!(parse_allowance(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_allowances_write_their_units_out() {
        let allowance = |minutes, window_minutes| TimeAllowance {
            minutes,
            window_minutes,
        };
        for (text, expected) in [
            ("10 minutes/hour", allowance(10, 60)),
            ("1 minute/hour", allowance(1, 60)),
            ("30 minutes / day", allowance(30, 1440)),
            ("1 hour/day", allowance(60, 1440)),
            ("45 minutes/2 hours", allowance(45, 120)),
            ("2 hours/7 days", allowance(120, 7 * 1440)),
        ] {
            assert_eq!(parse_time_allowance(text), Ok(expected), "{text}");
        }
        assert_eq!(allowance(10, 60).to_string(), "10 minutes/hour");
        assert_eq!(allowance(1, 1440).to_string(), "1 minute/day");
        assert_eq!(allowance(45, 120).to_string(), "45 minutes/2 hours");
        for bad in [
            "10m/hour",
            "10 m/hour",
            "10 min/hour",
            "10 minutes/h",
            "10 minutes/1h",
            "10 minutes",
            "10/hour",
            "minutes/hour",
            "1.5 minutes/hour",
            "-1 minutes/hour",
            "0 minutes/hour",
            "10 seconds/minute",
            "10 minutes/minute",
            "60 minutes/hour",
            "2 hours/hour",
            "1 minute/8 days",
            "1 minute/0 hours",
            "99999999999 minutes/day",
            "10 minutes/hour/day",
            "",
        ] {
            assert!(parse_time_allowance(bad).is_err(), "{bad}");
        }
        assert!(
            parse_time_allowance("10m/hour")
                .unwrap_err()
                .contains("units written out")
        );
    }

    #[test]
    fn first_matching_rule_wins() {
        let rule = |index,
                    groups: Option<Vec<u16>>,
                    categories: Option<Vec<u16>>,
                    periods: Option<Vec<&str>>,
                    action| Rule {
            fail_fast: true,
            index,
            description: String::new(),
            categories,
            groups,
            periods: periods.map(|p| p.into_iter().map(String::from).collect()),
            action,
        };
        let rules = vec![
            rule(0, Some(vec![3]), None, None, Action::Allow), // ICT may do anything
            rule(1, None, Some(vec![1]), Some(vec!["working"]), Action::Block),
            rule(2, None, Some(vec![1]), None, Action::Allow),
        ];
        assert_eq!(first_match(&rules, 3, 1, "working").unwrap().index, 0);
        assert_eq!(first_match(&rules, 1, 1, "working").unwrap().index, 1);
        assert_eq!(first_match(&rules, 1, 1, "lunch").unwrap().index, 2);
        assert!(first_match(&rules, 1, 2, "working").is_none());
    }
}
