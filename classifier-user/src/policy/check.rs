//! `classifier policy check`: a policy that loads may still be probably wrong. What would
//! silently change enforcement is refused when the policy loads (see the parsers); what is
//! legal but looks like a mistake is warned about here, each warning located like an
//! error (file, line, field), and `--strict` refuses the file for any of them:
//!
//! - a period that can never be in force, because earlier periods cover all its hours
//!   (lunch listed after working hours);
//! - a rule no traffic can reach, because earlier rules match everything it matches;
//! - an exception that has already expired;
//! - bank holidays that run out: none in the coming calendar year;
//! - `default` naming a period whose rules are stricter than another period's, so that
//!   nights, weekends and bank holidays get the strict rules;
//! - a category no rule names (its sites are classified and reported, and always allowed).
//!
//! Every check takes time in proportion to the size of the policy: a rule's reach is
//! worked out over the categories and groups rules name (plus one standing for all the
//! others, which no rule tells apart), never over every pair of categories.

use std::{
    collections::HashSet,
    hash::Hash,
    path::{Path, PathBuf},
};

use jiff::Timestamp;

use super::{
    ClassIds, Policy, PolicyError,
    file::PolicyFile,
    rules::{Action, Rule},
    source::{FieldPath, Source},
};

/// A policy that loaded, and what looks wrong in it.
#[derive(Debug)]
pub struct Checked {
    pub policy: Policy,
    /// Located like errors; empty when nothing looks wrong.
    pub warnings: Vec<PolicyError>,
}

/// Loads the policy file at `path` and checks it as of `now`.
pub fn check_file(path: &Path, now: Timestamp) -> Result<Checked, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        field: "(file)".into(),
        message: format!("cannot read the policy: {e}"),
    })?;
    let base_dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned);
    check_text(&text, path, &base_dir, now)
}

/// Loads policy `text` (named `origin`, its lists under `base_dir`) and checks it as of
/// `now`.
pub fn check_text(
    text: &str,
    origin: &Path,
    base_dir: &Path,
    now: Timestamp,
) -> Result<Checked, PolicyError> {
    check_text_with_lists(text, origin, base_dir, now, &|_| None)
}

/// [`check_text`], each list path the policy names (joined to `base_dir`) read where
/// `redirect` says instead (where it says anything): `classifier lists import` checks the policy against lists it
/// has staged, before they replace the installed ones. Errors keep the policy's own lines.
pub fn check_text_with_lists(
    text: &str,
    origin: &Path,
    base_dir: &Path,
    now: Timestamp,
    redirect: &dyn Fn(&Path) -> Option<PathBuf>,
) -> Result<Checked, PolicyError> {
    let source = Source::new(origin, text);
    let mut file: PolicyFile = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    for section in file.categories.values_mut() {
        for list in &mut section.lists {
            if let Some(elsewhere) = redirect(&base_dir.join(&*list)) {
                *list = elsewhere;
            }
        }
    }
    let policy = Policy::compile(&file, &source, base_dir, &ClassIds::default())?;
    let mut warnings = periods_never_in_force(&policy, &source);
    warnings.extend(unreachable_rules(&policy, &source));
    warnings.extend(expired_exceptions(&policy, &source, now));
    warnings.extend(bank_holidays_run_out(&policy, &file, &source, now));
    warnings.extend(restrictive_default(&policy, &source));
    warnings.extend(unused_categories(&policy, &source));
    Ok(Checked { policy, warnings })
}

fn period_path(index: usize) -> FieldPath {
    FieldPath::root().key("schedule").key("period").index(index)
}

fn rule_path(index: usize) -> FieldPath {
    FieldPath::root().key("rules").index(index)
}

fn periods_never_in_force(policy: &Policy, source: &Source<'_>) -> Vec<PolicyError> {
    let names: Vec<&str> = policy.schedule.period_names().collect();
    policy
        .schedule
        .never_in_force()
        .into_iter()
        .map(|(index, covered_by)| {
            let name = names[index];
            let message = if covered_by.is_empty() {
                format!("period `{name}` covers no moment: it is never in force")
            } else {
                let earlier: Vec<String> = covered_by
                    .iter()
                    .map(|i| format!("`{}` ({})", names[*i], period_path(*i)))
                    .collect();
                let first = names[covered_by[0]];
                format!(
                    "period `{name}` can never be in force: {}, listed before it, cover{} every \
                     moment it does. Periods are read top to bottom and the first that covers a \
                     moment wins: list `{name}` before `{first}`",
                    earlier.join(" and "),
                    if earlier.len() == 1 { "s" } else { "" }
                )
            };
            source.error_at(&period_path(index).key("name"), message)
        })
        .collect()
}

/// The ids one dimension of the rules tells apart: those some rule names, and one that no
/// rule names (when there is one), which stands for all the others.
fn universe<T: Copy + Eq + Hash>(
    named: impl Iterator<Item = T>,
    mut all: impl Iterator<Item = T>,
) -> Vec<T> {
    let mut ids: Vec<T> = Vec::new();
    let mut seen = HashSet::new();
    for id in named {
        if seen.insert(id) {
            ids.push(id);
        }
    }
    if let Some(other) = all.find(|id| !seen.contains(id)) {
        ids.push(other);
    }
    ids
}

/// Every (group, category, period) the rules can tell apart; periods only those that can
/// be in force.
struct Cells {
    groups: Vec<u16>,
    categories: Vec<u16>,
    periods: Vec<String>,
}

impl Cells {
    fn of(policy: &Policy) -> Self {
        let rules = &policy.rules;
        let groups = universe(
            rules
                .iter()
                .flat_map(|r| r.groups.iter().flatten().copied()),
            0..policy.groups.len() as u16,
        );
        // 0 (uncategorised) is never named and stands for every category no rule names.
        let categories = universe(
            rules
                .iter()
                .flat_map(|r| r.categories.iter().flatten().copied()),
            std::iter::once(0),
        );
        Self {
            groups,
            categories,
            periods: periods_in_force(policy),
        }
    }

    /// The cells `rule` matches: its own groups and categories (or every one told apart)
    /// in the periods it names that can be in force.
    fn of_rule<'a>(&'a self, rule: &'a Rule) -> impl Iterator<Item = (u16, u16, &'a str)> + 'a {
        let groups = rule.groups.as_ref().unwrap_or(&self.groups);
        let categories = rule.categories.as_ref().unwrap_or(&self.categories);
        let periods: Vec<&'a str> = self
            .periods
            .iter()
            .map(String::as_str)
            .filter(|period| {
                rule.periods
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|name| name == period))
            })
            .collect();
        groups.iter().flat_map(move |group| {
            let periods = periods.clone();
            categories.iter().flat_map(move |category| {
                periods
                    .clone()
                    .into_iter()
                    .map(move |period| (*group, *category, period))
            })
        })
    }
}

/// The names of the periods that can be in force: those of periods some moment falls in,
/// and the default when some moment falls in none.
fn periods_in_force(policy: &Policy) -> Vec<String> {
    let schedule = &policy.schedule;
    let never: HashSet<usize> = schedule
        .never_in_force()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    let mut names: Vec<String> = Vec::new();
    let reachable = schedule
        .period_names()
        .enumerate()
        .filter(|(i, _)| !never.contains(i))
        .map(|(_, name)| name);
    let default = schedule
        .default_in_force()
        .then_some(schedule.default_name());
    for name in reachable.chain(default) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// A rule with its names as sets, so that matching a cell takes the same time however
/// many categories the rule lists.
struct RuleSets<'a> {
    rule: &'a Rule,
    groups: Option<HashSet<u16>>,
    categories: Option<HashSet<u16>>,
}

impl<'a> RuleSets<'a> {
    fn new(rule: &'a Rule) -> Self {
        Self {
            rule,
            groups: rule.groups.as_ref().map(|g| g.iter().copied().collect()),
            categories: rule
                .categories
                .as_ref()
                .map(|c| c.iter().copied().collect()),
        }
    }

    fn matches(&self, group: u16, category: u16, period: &str) -> bool {
        self.groups.as_ref().is_none_or(|g| g.contains(&group))
            && self
                .categories
                .as_ref()
                .is_none_or(|c| c.contains(&category))
            && self
                .rule
                .periods
                .as_ref()
                .is_none_or(|p| p.iter().any(|p| p == period))
    }
}

fn unreachable_rules(policy: &Policy, source: &Source<'_>) -> Vec<PolicyError> {
    let cells = Cells::of(policy);
    let sets: Vec<RuleSets<'_>> = policy.rules.iter().map(RuleSets::new).collect();
    let mut warnings = Vec::new();
    for (index, rule) in policy.rules.iter().enumerate() {
        let mut any_cell = false;
        let mut reached = false;
        let mut first_matches: Vec<usize> = Vec::new();
        for (group, category, period) in cells.of_rule(rule) {
            any_cell = true;
            match sets[..index]
                .iter()
                .position(|earlier| earlier.matches(group, category, period))
            {
                Some(earlier) if !first_matches.contains(&earlier) => first_matches.push(earlier),
                Some(_) => {}
                None => {
                    reached = true;
                    break;
                }
            }
        }
        if reached {
            continue;
        }
        let message = if !any_cell {
            format!(
                "rule {} can never apply: none of its periods is ever in force",
                describe(rule)
            )
        } else {
            first_matches.sort_unstable();
            let earlier: Vec<String> = first_matches
                .iter()
                .map(|i| {
                    let line = source.line_of(&rule_path(*i).key("action"));
                    format!("{} (line {line})", describe(&policy.rules[*i]))
                })
                .collect();
            format!(
                "rule {} can never decide: {} match{} first everything it matches (rules are \
                 read top to bottom; the first that matches decides)",
                describe(rule),
                earlier.join(" and "),
                if earlier.len() == 1 { "es" } else { "" }
            )
        };
        warnings.push(source.error_at(&rule_path(index).key("action"), message));
    }
    warnings
}

/// `rules[2] ("Streaming at work")`.
fn describe(rule: &Rule) -> String {
    if rule.description.is_empty() {
        rule_path(rule.index).to_string()
    } else {
        format!("{} (\"{}\")", rule_path(rule.index), rule.description)
    }
}

fn expired_exceptions(policy: &Policy, source: &Source<'_>, now: Timestamp) -> Vec<PolicyError> {
    policy
        .exceptions
        .iter()
        .enumerate()
        .filter(|(_, exception)| !exception.is_active(now))
        .map(|(index, exception)| {
            let expired = exception.expires.to_zoned(policy.timezone.clone());
            source.error_at(
                &FieldPath::root()
                    .key("exceptions")
                    .index(index)
                    .key("expires"),
                format!(
                    "exception {} expired at {}: it no longer applies; remove it, or renew it \
                     with a new approval and expiry",
                    exception.reference,
                    expired.strftime("%Y-%m-%d %H:%M %Z")
                ),
            )
        })
        .collect()
}

fn bank_holidays_run_out(
    policy: &Policy,
    file: &PolicyFile,
    source: &Source<'_>,
    now: Timestamp,
) -> Option<PolicyError> {
    let schedule = &policy.schedule;
    if !schedule.bank_holidays_matter() {
        return None;
    }
    let next_year = now.to_zoned(policy.timezone.clone()).year() + 1;
    let holidays = schedule.bank_holidays();
    if holidays.iter().any(|day| day.year() == next_year) {
        return None;
    }
    let section = file.schedule.as_ref();
    let from_file = section.is_some_and(|s| s.bank_holidays_file.is_some());
    let field = FieldPath::root().key("schedule").key(if from_file {
        "bank-holidays-file"
    } else {
        "bank-holidays"
    });
    let what = match holidays.last() {
        Some(last) => format!("the last bank holiday listed is {last}"),
        None => "no bank holidays are listed".to_owned(),
    };
    let fix = if from_file {
        "refresh the copy of gov.uk's file from https://www.gov.uk/bank-holidays.json"
    } else if section.is_none() {
        "write a [schedule] with `bank-holidays-file` (gov.uk's bank-holidays.json) or \
         `bank-holidays`"
    } else {
        "add its dates (https://www.gov.uk/bank-holidays), or name a copy of gov.uk's \
         bank-holidays.json in `bank-holidays-file`"
    };
    Some(source.error_at(
        &field,
        format!(
            "{what}, and none falls in {next_year}: from then on bank holidays are working \
             days; {fix}"
        ),
    ))
}

/// How strict a decision is: block, then shape (slower is stricter), then allow.
fn strictness(action: Option<&Action>) -> (u8, u64) {
    match action {
        None | Some(Action::Allow) => (0, 0),
        Some(Action::Shape(shaping)) => (1, u64::MAX - shaping.rate_bps),
        // Full speed for a while, then nothing: stricter than any rate, not a block.
        Some(Action::BlockAfter(_)) => (1, u64::MAX),
        Some(Action::Block) => (2, 0),
    }
}

fn restrictive_default(policy: &Policy, source: &Source<'_>) -> Option<PolicyError> {
    let schedule = &policy.schedule;
    if !schedule.default_in_force() {
        return None;
    }
    let default = schedule.default_name();
    let cells = Cells::of(policy);
    let sets: Vec<RuleSets<'_>> = policy.rules.iter().map(RuleSets::new).collect();
    let decide = |group: u16, category: u16, period: &str| {
        sets.iter()
            .find(|rule| rule.matches(group, category, period))
            .map(|rule| rule.rule)
    };
    for group in &cells.groups {
        for category in &cells.categories {
            let at_default = decide(*group, *category, default);
            for period in cells.periods.iter().filter(|p| *p != default) {
                let elsewhere = decide(*group, *category, period);
                if strictness(at_default.map(|r| &r.action))
                    > strictness(elsewhere.map(|r| &r.action))
                {
                    return Some(source.error_at(
                        &FieldPath::root().key("schedule").key("default"),
                        format!(
                            "`default = \"{default}\"`: every moment no period covers (nights, \
                             weekends, bank holidays) gets `{default}`'s rules, and they are \
                             stricter than `{period}`'s: {} in group `{}` is {} in `{default}` \
                             and {} in `{period}`. Name the period of the hours outside work \
                             as the default",
                            policy.classes.category_name(*category),
                            policy.groups.name(*group),
                            verdict(at_default),
                            verdict(elsewhere),
                        ),
                    ));
                }
            }
        }
    }
    None
}

/// `block (rules[0])`, `allowed (no rule)`.
fn verdict(rule: Option<&Rule>) -> String {
    match rule {
        Some(rule) => format!("{} ({})", rule.action, rule_path(rule.index)),
        None => "allowed (no rule)".to_owned(),
    }
}

fn unused_categories(policy: &Policy, source: &Source<'_>) -> Vec<PolicyError> {
    if policy.rules.iter().any(|rule| rule.categories.is_none()) {
        return Vec::new();
    }
    let named: HashSet<u16> = policy
        .rules
        .iter()
        .flat_map(|rule| rule.categories.iter().flatten().copied())
        .collect();
    policy
        .classes
        .categories
        .iter()
        .filter(|category| !named.contains(&category.id))
        .map(|category| {
            source.error_at(
                &FieldPath::root().key("categories").key(&category.name),
                format!(
                    "no rule names category `{}`: its sites are classified and reported, and \
                     always allowed",
                    category.name
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
