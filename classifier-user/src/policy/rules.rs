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
    /// ("occasional short clips only").
    pub allowance: Option<String>,
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
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Block => "block",
            Action::Shape(_) => "shape",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Shape(shaping) => write!(f, "shape {shaping}"),
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
}

impl std::fmt::Display for Shaping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", format_rate(self.rate_bps))?;
        f.write_str(if self.per_client {
            " per client"
        } else {
            " shared"
        })?;
        if let Some(allowance) = &self.allowance {
            write!(
                f,
                " after {} MB per {}",
                allowance.bytes / 1_000_000,
                humantime::format_duration(allowance.per)
            )?;
        }
        Ok(())
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
    let shaping_only = [
        ("rate", section.rate.is_some()),
        ("share", section.share.is_some()),
        ("allowance", section.allowance.is_some()),
    ];
    match section.action.as_str() {
        "allow" | "block" => {
            if let Some((field, _)) = shaping_only.iter().find(|(_, set)| *set) {
                return Err(source.error_at(
                    &path.key(field),
                    format!("`{field}` only goes with action = \"shape\""),
                ));
            }
            Ok(if section.action == "allow" {
                Action::Allow
            } else {
                Action::Block
            })
        }
        "shape" => {
            let rate = section.rate.as_deref().ok_or_else(|| {
                source.error_at(
                    &path.key("action"),
                    "a shape rule needs a `rate`, e.g. rate = \"2mbit\"",
                )
            })?;
            let rate_bps = parse_rate(rate).map_err(|e| source.error_at(&path.key("rate"), e))?;
            let per_client = match section.share.as_deref() {
                None | Some("shared") => false,
                Some("per-client") => true,
                Some(other) => {
                    return Err(source.error_at(
                        &path.key("share"),
                        format!("`{other}`: choose `shared` or `per-client`"),
                    ));
                }
            };
            let allowance = section
                .allowance
                .as_deref()
                .map(parse_allowance)
                .transpose()
                .map_err(|e| source.error_at(&path.key("allowance"), e))?;
            Ok(Action::Shape(Shaping {
                rate_bps,
                per_client,
                allowance,
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
