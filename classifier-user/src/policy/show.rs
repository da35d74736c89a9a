//! A policy as people read it back (`policy show`), and one decision explained step by step
//! (`policy explain`): which group, category, period, rule and exception decide, and why.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Policy, allowances::AllowanceLeft, decide::Reason, exceptions::Target};

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
                .map(|rule| RuleLine {
                    number: rule.index + 1,
                    description: rule.description.clone(),
                    action: rule.action.to_string(),
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
        let _ = writeln!(text, "\nrules (first match wins; no match: allow):");
        for rule in &self.rules {
            let _ = writeln!(
                text,
                "  {:>2}. {:<60} → {}",
                rule.number, rule.description, rule.action
            );
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
        text
    }
}

/// `policy explain`: one decision and every step that led to it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Explanation {
    /// The policy that answered: its file, or the built-in policy's name.
    #[serde(default)]
    pub policy: String,
    pub client: IpAddr,
    /// The domain or port asked about.
    pub target: String,
    pub at: Timestamp,
    pub group: String,
    pub category: String,
    /// How the category was found: the listed domain that matched, a port rule, or none.
    pub category_reason: String,
    pub period: String,
    pub period_reason: String,
    pub action: String,
    pub decided_by: Reason,
    /// What is left of the deciding rule's allowances for the client (time and volume at
    /// full speed), when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowance: Option<AllowanceLeft>,
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
        let (category, category_reason, target_text) = self.category_of(target);
        let period = self.schedule.period_at(at);
        let decision = self.decide(client, None, category, &period.name, at);
        let allowance = match (&decision.reason, decision.action.allowances()) {
            (Reason::Rule { rule, .. }, Some(allowances)) => {
                let for_client = allowances.per_client || allowances.time.is_none();
                Some(AllowanceLeft::unused(
                    *rule,
                    for_client.then_some(client),
                    &allowances,
                ))
            }
            _ => None,
        };
        Explanation {
            policy: self.origin.clone(),
            client,
            target: target_text,
            at,
            group: self.groups.name(decision.group).to_owned(),
            category: self.classes.category_name(category).to_owned(),
            category_reason,
            period: period.name,
            period_reason: period.reason,
            action: decision.action.to_string(),
            decided_by: decision.reason,
            allowance,
        }
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
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "{} → {} at {}", self.client, self.target, self.at);
        let _ = writeln!(text, "  policy:   {}", self.policy);
        let _ = writeln!(text, "  group:    {}", self.group);
        let _ = writeln!(
            text,
            "  category: {} ({})",
            self.category, self.category_reason
        );
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
    Ok(Asked::Name(text.to_owned()))
}
