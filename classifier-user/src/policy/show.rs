//! A policy as people read it back (`policy show`), and one decision explained step by step
//! (`policy explain`): which group, category, period, rule and exception decide, and why.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{
    Action, Policy, Rule, allowances::AllowanceLeft, decide::Reason, entries::normalize_domain,
    exceptions::Target, groups::GroupReason, rules, schedule::PeriodLine,
};

/// `policy show`: the policy in a form for people and for `--json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    pub policy: String,
    pub site: String,
    pub timezone: String,
    /// The period in force, when asked of a running daemon.
    pub period_in_force: Option<String>,
    pub periods: Vec<String>,
    pub categories: Vec<CategoryLine>,
    pub groups: Vec<String>,
    pub rules: Vec<RuleLine>,
    pub exceptions: Vec<ExceptionLine>,
    /// When each period is in force. (Fields from here on default when an older daemon
    /// answers without them.)
    #[serde(default)]
    pub schedule: ScheduleLines,
    #[serde(default)]
    pub bank_holidays: HolidayLines,
    #[serde(default)]
    pub retention: RetentionLines,
}

/// `[schedule]`: the periods top to bottom (the first that covers a moment is in force),
/// and the period in force when none does.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ScheduleLines {
    pub periods: Vec<PeriodLine>,
    pub default: String,
}

/// The bank holidays, and gov.uk's file they come from when the schedule names one.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct HolidayLines {
    pub dates: Vec<jiff::civil::Date>,
    pub file: Option<String>,
    pub division: Option<String>,
}

/// `[records]`: how long flow records keep the client, and what happens after.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RetentionLines {
    /// `14 months`.
    pub keep: String,
    /// `delete` or `anonymise`.
    pub after: String,
    pub degradation_keep: String,
    /// Why records are kept beyond the councils' 14 months, when they are.
    pub override_reason: Option<String>,
    /// A flow with no packet for this long ends.
    pub idle_timeout: String,
}
#[derive(Debug, Serialize, Deserialize)]
pub struct CategoryLine {
    pub name: String,
    pub domains: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RuleLine {
    /// Counted from 1, as in `explain`.
    pub number: usize,
    pub description: String,
    pub action: String,
    /// What the rule matches; `None`: any (the key left out).
    #[serde(default)]
    pub categories: Option<Vec<String>>,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    #[serde(default)]
    pub periods: Option<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ExceptionLine {
    pub reference: String,
    pub approved_by: String,
    pub who: String,
    pub categories: Vec<String>,
    pub expires: Timestamp,
    pub reason: String,
}

impl Summary {
    pub fn of(policy: &Policy, period_in_force: Option<&str>) -> Self {
        let classes = &policy.classes;
        Self {
            policy: policy.origin.clone(),
            site: policy.site_name.clone(),
            timezone: policy
                .timezone
                .iana_name()
                .unwrap_or("(fixed offset)")
                .to_owned(),
            period_in_force: period_in_force.map(str::to_owned),
            periods: policy.periods.clone(),
            categories: classes
                .categories
                .iter()
                .map(|c| c.id)
                .map(|id| CategoryLine {
                    name: classes.category_name(id).to_owned(),
                    domains: classes
                        .domains
                        .values()
                        .filter(|d| d.category == id)
                        .count(),
                })
                .collect(),
            groups: policy.groups.names().map(str::to_owned).collect(),
            rules: policy
                .rules
                .iter()
                .map(|rule| {
                    let condition = RuleCondition::of(policy, rule);
                    RuleLine {
                        number: condition.number,
                        description: condition.description,
                        action: condition.action,
                        categories: condition.categories,
                        groups: condition.groups,
                        periods: condition.periods,
                    }
                })
                .collect(),
            exceptions: policy
                .exceptions
                .iter()
                .map(|e| ExceptionLine {
                    reference: e.reference.clone(),
                    approved_by: e.approved_by.clone(),
                    who: match e.target {
                        Target::Client(addr) => addr.to_string(),
                        Target::Group(group) => format!("group {}", policy.groups.name(group)),
                    },
                    categories: e
                        .categories
                        .iter()
                        .map(|c| classes.category_name(*c).to_owned())
                        .collect(),
                    expires: e.expires,
                    reason: e.reason.clone(),
                })
                .collect(),
            schedule: ScheduleLines {
                periods: policy.schedule.period_lines(),
                default: policy.schedule.default_name().to_owned(),
            },
            bank_holidays: HolidayLines {
                dates: policy.schedule.bank_holidays().iter().copied().collect(),
                file: policy
                    .schedule
                    .bank_holidays_source()
                    .map(|(file, _)| file.to_owned()),
                division: policy
                    .schedule
                    .bank_holidays_source()
                    .map(|(_, division)| division.to_owned()),
            },
            retention: RetentionLines::of(&policy.records),
        }
    }

    /// The summary as text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "policy:   {} ({})", self.policy, self.site);
        let _ = writeln!(text, "timezone: {}", self.timezone);
        let in_force = self
            .period_in_force
            .as_deref()
            .map(|p| format!(" (in force: {p})"))
            .unwrap_or_default();
        let _ = writeln!(text, "periods:  {}{in_force}", self.periods.join(", "));
        let _ = writeln!(text, "groups:   {}", self.groups.join(", "));
        let _ = writeln!(text, "\ncategories:");
        for category in &self.categories {
            let _ = writeln!(
                text,
                "  {:<22} {:>9} domains",
                category.name, category.domains
            );
        }
        self.render_schedule(&mut text);
        let _ = writeln!(text, "\nrules (first match wins; no match: allow):");
        for rule in &self.rules {
            let condition = RuleCondition {
                number: rule.number,
                description: String::new(),
                categories: rule.categories.clone(),
                groups: rule.groups.clone(),
                periods: rule.periods.clone(),
                action: String::new(),
            };
            let _ = writeln!(
                text,
                "  {:>2}. {:<60} → {}",
                rule.number, rule.description, rule.action
            );
            let _ = writeln!(text, "      when: {}", condition.render());
        }
        let _ = writeln!(text, "\nexceptions:");
        if self.exceptions.is_empty() {
            let _ = writeln!(text, "  (none)");
        }
        for e in &self.exceptions {
            let _ = writeln!(
                text,
                "  {} for {} ({}), approved by {}, until {}: {}",
                e.reference,
                e.who,
                e.categories.join(", "),
                e.approved_by,
                e.expires,
                e.reason
            );
        }
        self.render_retention(&mut text);
        text
    }

    fn render_schedule(&self, text: &mut String) {
        let _ = writeln!(
            text,
            "\nschedule (the first period that covers a moment is in force; else `{}`):",
            self.schedule.default
        );
        for period in &self.schedule.periods {
            let _ = writeln!(
                text,
                "  {:<12} {}{}",
                period.name,
                period.hours.join("; "),
                if period.on_bank_holidays {
                    ""
                } else {
                    " (not on bank holidays)"
                }
            );
        }
        let holidays = &self.bank_holidays;
        let from = match (&holidays.file, &holidays.division) {
            (Some(file), Some(division)) => format!(" (with {file}, division {division})"),
            _ => String::new(),
        };
        let _ = writeln!(
            text,
            "\nbank holidays{from}:{}",
            if holidays.dates.is_empty() {
                " none"
            } else {
                ""
            }
        );
        let mut years: Vec<(i16, Vec<String>)> = Vec::new();
        for date in &holidays.dates {
            let day = date.strftime("%m-%d").to_string();
            match years.last_mut() {
                Some((year, days)) if *year == date.year() => days.push(day),
                _ => years.push((date.year(), vec![day])),
            }
        }
        for (year, days) in years {
            let _ = writeln!(text, "  {year}: {}", days.join(" "));
        }
    }

    fn render_retention(&self, text: &mut String) {
        let retention = &self.retention;
        if retention.keep.is_empty() {
            return;
        }
        let _ = writeln!(
            text,
            "\nretention: flow records keep the client for {}, then {}; degradation \
             reports are kept {}; a flow ends after {} idle",
            retention.keep, retention.after, retention.degradation_keep, retention.idle_timeout
        );
        if let Some(reason) = &retention.override_reason {
            let _ = writeln!(text, "  beyond 14 months because: {reason}");
        }
    }
}

impl RetentionLines {
    fn of(records: &super::RecordsPolicy) -> Self {
        use jiff::fmt::friendly::{Designator, Spacing, SpanPrinter};
        let retention = &records.retention;
        let words = |span: &jiff::Span| {
            SpanPrinter::new()
                .designator(Designator::Verbose)
                .spacing(Spacing::BetweenUnitsAndDesignators)
                .span_to_string(span)
        };
        Self {
            keep: words(&retention.keep),
            after: retention.after.name().to_owned(),
            degradation_keep: words(&retention.degradation_keep),
            override_reason: records.retention_override_reason.clone(),
            idle_timeout: humantime::format_duration(records.end_rules.idle_timeout).to_string(),
        }
    }
}

/// `policy explain`: one decision and every step that led to it. Fields added since the
/// first version default when a daemon of that version answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Explanation {
    /// The policy that answered: its file, or the built-in policy's name.
    #[serde(default)]
    pub policy: String,
    pub client: IpAddr,
    /// The VLAN asked about, if any.
    #[serde(default)]
    pub vlan: Option<u16>,
    /// The domain or port asked about (a domain as the tables key it: lowercase, punycode).
    pub target: String,
    pub at: Timestamp,
    /// The site's time zone (the policy's), in which periods are read.
    #[serde(default)]
    pub timezone: String,
    /// `at` on the site's clock: `2026-12-07 12:30:00 GMT`.
    #[serde(default)]
    pub at_local: String,
    /// How `--at` was read, when it was a local time (the zone; a clock change).
    #[serde(default)]
    pub at_note: Option<String>,
    pub group: String,
    /// Why the client is in `group`: its VLAN, a prefix, an address, or none.
    #[serde(default)]
    pub group_reason: GroupReason,
    pub category: String,
    /// How the category was found: the listed domain that matched, a port rule, or none.
    pub category_reason: String,
    /// The application whose domain matched, if an application's.
    #[serde(default)]
    pub app: Option<String>,
    /// The listed domain that matched (the longest listed suffix of the target).
    #[serde(default)]
    pub matched_entry: Option<String>,
    /// The file that lists it: a list file, or the policy file for `domains = [...]`.
    #[serde(default)]
    pub list_file: Option<String>,
    /// Its line in `list_file` (1-based).
    #[serde(default)]
    pub list_line: Option<usize>,
    /// For an entry in the policy file, its field: `categories.news.domains[2]`.
    #[serde(default)]
    pub list_field: Option<String>,
    pub period: String,
    pub period_reason: String,
    /// `allow`, `block`, `shape 1mbit per client after ...`: the action as people read it.
    pub action: String,
    /// The shaping rate (`1mbit`), for `shape`.
    #[serde(default)]
    pub rate: Option<String>,
    #[serde(default)]
    pub rate_bps: Option<u64>,
    /// For `shape`: each client gets the rate (true) or all share it (false).
    #[serde(default)]
    pub per_client: Option<bool>,
    /// For `block`: the client is told at once (a reset or ICMP) rather than dropped.
    #[serde(default)]
    pub fail_fast: Option<bool>,
    pub decided_by: Reason,
    /// The deciding rule's whole condition.
    #[serde(default)]
    pub rule: Option<RuleCondition>,
    /// What is left of the deciding rule's allowances for the client (time and volume at
    /// full speed), when it has any.
    #[serde(default)]
    pub allowance: Option<AllowanceLeft>,
}

/// A rule's condition as written: `None` is "any" (the key left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCondition {
    /// Counted from 1.
    pub number: usize,
    pub description: String,
    pub categories: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub periods: Option<Vec<String>>,
    pub action: String,
}

impl RuleCondition {
    pub fn of(policy: &Policy, rule: &Rule) -> Self {
        let names = |ids: &Option<Vec<u16>>, name: &dyn Fn(u16) -> String| {
            ids.as_ref()
                .map(|ids| ids.iter().map(|id| name(*id)).collect())
        };
        Self {
            number: rule.index + 1,
            description: rule.description.clone(),
            categories: names(&rule.categories, &|id| {
                policy.classes.category_name(id).to_owned()
            }),
            groups: names(&rule.groups, &|id| policy.groups.name(id).to_owned()),
            periods: rule.periods.clone(),
            action: rule.action.to_string(),
        }
    }

    /// `categories streaming-video; groups every group; periods working, lunch`.
    pub fn render(&self) -> String {
        let list = |names: &Option<Vec<String>>, any: &str| {
            names
                .as_ref()
                .map_or_else(|| any.to_owned(), |n| n.join(", "))
        };
        format!(
            "categories {}; groups {}; periods {}",
            list(&self.categories, "any"),
            list(&self.groups, "every group"),
            list(&self.periods, "always")
        )
    }
}

/// What `explain` is asked about: a name as in an SNI or Host, or a (protocol, port).
#[derive(Debug, Clone)]
pub enum Asked {
    Name(String),
    Port {
        protocol: u8,
        port: u16,
    },
    /// A flow found by a built-in detection rather than a name: `bittorrent`, `quic`, or
    /// `unreadable` (first bytes that look like TLS or HTTP but cannot be read).
    Protocol(u16),
}

impl Policy {
    /// Explains what the policy does with `client` reaching `target` at `at`.
    pub fn explain(&self, client: IpAddr, target: &Asked, at: Timestamp) -> Explanation {
        self.explain_on(client, None, target, at)
    }

    /// [`Policy::explain`] for a client on VLAN `vlan`.
    pub fn explain_on(
        &self,
        client: IpAddr,
        vlan: Option<u16>,
        target: &Asked,
        at: Timestamp,
    ) -> Explanation {
        let (mut explanation, lists) = self.explain_in_memory(client, vlan, target, at);
        explanation.find_in_lists(&lists);
        explanation
    }

    /// [`Policy::explain_on`] without reading a list file: when the matched entry is not
    /// in the policy file, the list files to read for its line with
    /// [`Explanation::find_in_lists`] (the daemon reads them without holding its state).
    pub fn explain_in_memory(
        &self,
        client: IpAddr,
        vlan: Option<u16>,
        target: &Asked,
        at: Timestamp,
    ) -> (Explanation, Vec<std::path::PathBuf>) {
        let (category, category_reason, target_text) = self.category_of(target);
        let (matched, lists) = match target {
            Asked::Name(name) => match self.classes.matched_entry_in_memory(name) {
                Some((matched, lists)) => (Some(matched), lists),
                None => (None, Vec::new()),
            },
            _ => (None, Vec::new()),
        };
        let period = self.schedule.period_at(at);
        let decision = self.decide(client, vlan, category, &period.name, at);
        let (_, group_reason) = self.groups.membership(client, vlan);
        let rule = match &decision.reason {
            Reason::Rule { rule, .. } => self.rules.get(rule.saturating_sub(1)),
            _ => None,
        };
        let allowance = match (rule, decision.action.allowances()) {
            (Some(rule), Some(allowances)) => {
                let for_client = allowances.per_client || allowances.time.is_none();
                Some(AllowanceLeft::unused(
                    rule.index + 1,
                    for_client.then_some(client),
                    &allowances,
                ))
            }
            _ => None,
        };
        let shaping = match &decision.action {
            Action::Shape(shaping) => Some(shaping),
            _ => None,
        };
        let fail_fast = match decision.action {
            Action::Block => Some(rule.is_none_or(|r| r.fail_fast)),
            // Blocked once spent: the flow has packets through already, nothing to answer.
            Action::BlockAfter(_) => Some(false),
            _ => None,
        };
        let explanation = Explanation {
            policy: self.origin.clone(),
            client,
            vlan,
            target: target_text,
            at,
            timezone: self
                .timezone
                .iana_name()
                .unwrap_or("(fixed offset)")
                .to_owned(),
            at_local: at
                .to_zoned(self.timezone.clone())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
                .to_string(),
            at_note: None,
            group: self.groups.name(decision.group).to_owned(),
            group_reason,
            category: self.classes.category_name(category).to_owned(),
            category_reason,
            app: matched
                .as_ref()
                .filter(|m| m.app != 0)
                .map(|m| self.classes.app_name(m.app).to_owned()),
            matched_entry: matched.as_ref().map(|m| m.domain.clone()),
            list_file: matched.as_ref().and_then(|m| m.file.clone()),
            list_line: matched.as_ref().and_then(|m| m.line),
            list_field: matched.and_then(|m| m.field),
            period: period.name,
            period_reason: period.reason,
            action: decision.action.to_string(),
            rate: shaping.map(|s| rules::format_rate(s.rate_bps)),
            rate_bps: shaping.map(|s| s.rate_bps),
            per_client: shaping.map(|s| s.per_client),
            fail_fast,
            rule: rule.map(|rule| RuleCondition::of(self, rule)),
            decided_by: decision.reason,
            allowance,
        };
        (explanation, lists)
    }

    fn category_of(&self, target: &Asked) -> (u16, String, String) {
        match target {
            Asked::Name(name) => match self.classes.lookup(name) {
                Some(entry) => (
                    entry.category,
                    format!(
                        "`{name}` is listed in {} (longest listed suffix wins)",
                        self.classes.category_name(entry.category)
                    ),
                    name.clone(),
                ),
                None => (
                    0,
                    format!("no listed domain matches `{name}`"),
                    name.clone(),
                ),
            },
            Asked::Protocol(app) => {
                let name = classifier_common::classify::app::builtin_name(*app).unwrap_or("?");
                let category = self
                    .classes
                    .protocol_categories
                    .get(*app as usize)
                    .copied()
                    .unwrap_or(0);
                let reason = if category == 0 {
                    format!("no category lists protocol `{name}`")
                } else {
                    format!(
                        "{} lists protocol `{name}`{}",
                        self.classes.category_name(category),
                        if *app == classifier_common::classify::app::UNREADABLE {
                            " (first bytes that look like TLS or HTTP but cannot be read)"
                        } else {
                            ""
                        }
                    )
                };
                (category, reason, format!("protocol/{name}"))
            }
            Asked::Port { protocol, port } => {
                let text = format!("{}/{port}", crate::flows::protocol_name(*protocol));
                match self.classes.port_category(*protocol, *port) {
                    Some(category) => (category, format!("port rule for {text}"), text),
                    None => (0, format!("no port rule for {text}"), text),
                }
            }
        }
    }
}

impl Explanation {
    /// Fills in the list file and line of the matched entry from the first of `lists`
    /// that lists it (see [`Policy::explain_in_memory`]).
    pub fn find_in_lists(&mut self, lists: &[std::path::PathBuf]) {
        let Some(domain) = &self.matched_entry else {
            return;
        };
        if self.list_file.is_some() || lists.is_empty() {
            return;
        }
        let mut matched = super::classes::MatchedEntry {
            domain: domain.clone(),
            category: 0,
            app: 0,
            file: None,
            line: None,
            field: None,
        };
        matched.find_in_lists(lists);
        self.list_file = matched.file;
        self.list_line = matched.line;
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "{} → {} at {}", self.client, self.target, self.at);
        let _ = writeln!(text, "  policy:   {}", self.policy);
        if !self.at_local.is_empty() {
            let _ = writeln!(text, "  time:     {} ({})", self.at_local, self.timezone);
        }
        if let Some(note) = &self.at_note {
            let _ = writeln!(text, "            --at {note}");
        }
        let vlan = self
            .vlan
            .map(|v| format!(" on VLAN {v}"))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "  group:    {} ({}{vlan}: {})",
            self.group, self.client, self.group_reason
        );
        let _ = writeln!(
            text,
            "  category: {} ({})",
            self.category, self.category_reason
        );
        if let Some(entry) = &self.matched_entry {
            let place = match (&self.list_file, self.list_line, &self.list_field) {
                (Some(file), Some(line), Some(field)) => format!(" ({file}:{line}, {field})"),
                (Some(file), Some(line), None) => format!(" ({file}:{line})"),
                _ => String::new(),
            };
            let _ = writeln!(text, "  matched:  {entry}{place}");
        }
        if let Some(app) = &self.app {
            let _ = writeln!(text, "  app:      {app}");
        }
        let _ = writeln!(text, "  period:   {} ({})", self.period, self.period_reason);
        let why = match &self.decided_by {
            Reason::ClientException {
                reference,
                approved_by,
                expires,
            } => format!(
                "exception {reference} for this client, approved by {approved_by}, until {expires}"
            ),
            Reason::GroupException {
                reference,
                approved_by,
                expires,
            } => format!(
                "exception {reference} for the group, approved by {approved_by}, until {expires}"
            ),
            Reason::Rule { rule, description } => format!("rule {rule}: {description}"),
            Reason::Default => "no rule matches: allowed".to_owned(),
        };
        let _ = writeln!(text, "  decision: {} ({why})", self.action);
        if let Some(rule) = &self.rule {
            let _ = writeln!(text, "  rule:     {}: {}", rule.number, rule.render());
        }
        if let Some(fail_fast) = self.fail_fast {
            let _ = writeln!(
                text,
                "  blocking: {}",
                if fail_fast {
                    "fail fast (the client is told at once: a TCP reset or ICMP)"
                } else {
                    "silent (packets dropped)"
                }
            );
        }
        if let Some(allowance) = &self.allowance {
            let _ = writeln!(text, "  left:     {}", allowance.render());
        }
        text
    }
}

/// Parses `explain`'s target: `tcp/443`, `udp/6881`, a bare port (TCP), a built-in
/// detection (`protocol/bittorrent`, `protocol/quic`, `protocol/unreadable`, or
/// `unreadable` alone), or a name.
pub fn parse_target(text: &str) -> Result<Asked, String> {
    use classifier_common::classify::app;
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("`{text}`: a port is 1 to 65535, as in tcp/443"))
    };
    if text.contains("://") {
        return url_host(text).map(Asked::Name);
    }
    let detection = match text.split_once('/') {
        Some(("protocol", name)) => Some(name),
        _ if text == "unreadable" => Some(text),
        _ => None,
    };
    if let Some(name) = detection {
        return (1..app::BUILTIN_COUNT)
            .find(|id| app::builtin_name(*id) == Some(name) && *id != app::TLS && *id != app::HTTP)
            .map(Asked::Protocol)
            .ok_or_else(|| {
                format!("`{name}`: the built-in detections are bittorrent, quic and unreadable")
            });
    }
    if let Some((protocol, p)) = text.split_once('/') {
        let protocol = match protocol.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            other if other.contains('.') => {
                return Err(format!(
                    "`{text}`: give the host alone, or a whole URL (https://{text})"
                ));
            }
            other => return Err(format!("`{other}`: write tcp/PORT or udp/PORT")),
        };
        return Ok(Asked::Port {
            protocol,
            port: port(p)?,
        });
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Asked::Port {
            protocol: 6,
            port: port(text)?,
        });
    }
    if text.parse::<SocketAddr>().is_ok() || text.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "`{text}`: give a domain name or a port, not an address"
        ));
    }
    normalize_domain(text).map(Asked::Name)
}

/// The host of an `http://` or `https://` URL, as a browser would connect to it (after any
/// `user@`, without the port; an internationalised name in punycode, as lists are), or why
/// there is none.
fn url_host(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{text}`: only http:// and https:// URLs name a site (give the host alone \
             otherwise)"
        ));
    }
    match url.host() {
        Some(url::Host::Domain(host)) => normalize_domain(host),
        Some(url::Host::Ipv4(addr)) => Err(format!(
            "`{text}`: the URL names an address ({addr}), not a domain: lists hold names"
        )),
        Some(url::Host::Ipv6(addr)) => Err(format!(
            "`{text}`: the URL names an address ({addr}), not a domain: lists hold names"
        )),
        None => Err(format!("`{text}`: the URL has no host")),
    }
}
