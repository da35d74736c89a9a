//! Deciding: what the policy does with a client's traffic of a category at a moment, and
//! why; and the decision tables the datapath enforces for a period.

use std::net::IpAddr;

use classifier_common::{
    policy::{ActionEntry, verdict},
    shaping::{ShapeRule, allowance_rate, shape_flags},
};
use jiff::Timestamp;
use serde::Serialize;

use super::{Action, Policy, ShapingMethod, rules};

/// One table of the policy as the datapath holds it, for one period and moment: groups,
/// the non-allow (group, category) verdicts, and the clients' active exceptions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DecisionTables {
    pub prefixes: Vec<(ipnet::IpNet, u16)>,
    pub vlans: Vec<(u16, u16)>,
    /// (group, category) → entry; pairs not listed are allowed.
    pub actions: Vec<((u16, u16), ActionEntry)>,
    /// (client, category) pairs an exception allows.
    pub client_exceptions: Vec<(std::net::IpAddr, u16)>,
    /// Shape class → how the datapath shapes it.
    pub shapers: Vec<(u16, ShapeRule)>,
}

/// A shape rule's class: one per rule, its position counted from 1 (HTB minor ids start
/// at 1; `policy check` keeps it below [`classifier_common::shaping::MAX_SHAPE_CLASSES`]).
pub fn shape_class(rule: &rules::Rule) -> u16 {
    rule.index as u16 + 1
}

/// The policer's bucket depth: 200 ms at the rate, and never less than two of the largest
/// packets TC sees (GSO super-packets of 64 KiB), which it could otherwise never pass.
fn policer_burst(rate_bytes: u64) -> u64 {
    (rate_bytes / 5).max(2 * 65_536)
}

fn shape_rule(action: &rules::Action, method: ShapingMethod) -> Option<ShapeRule> {
    let (rate_bps, allowances) = match action {
        Action::Shape(shaping) => (shaping.rate_bps, shaping.allowances()),
        Action::BlockAfter(allowances) => (0, allowances.clone()),
        Action::Allow | Action::Block => return None,
    };
    let rate_bytes = rate_bps / 8;
    let mut flags = 0;
    if allowances.per_client {
        flags |= shape_flags::PER_CLIENT;
    }
    if method == ShapingMethod::Policer {
        flags |= shape_flags::POLICER;
    }
    if matches!(action, Action::BlockAfter(_)) {
        flags |= shape_flags::BLOCK_WHEN_SPENT;
    }
    let (allowance_bytes, allowance_refill) = match &allowances.volume {
        Some(allowance) => {
            flags |= shape_flags::ALLOWANCE;
            let period_ns = allowance.per.as_nanos().min(u64::MAX as u128) as u64;
            (allowance.bytes, allowance_rate(allowance.bytes, period_ns))
        }
        None => (0, 0),
    };
    let (allowance_minutes, allowance_window_minutes) = match allowances.time {
        Some(time) => {
            flags |= shape_flags::TIME_ALLOWANCE;
            (time.minutes, time.window_minutes)
        }
        None => (0, 0),
    };
    Some(ShapeRule {
        rate_bytes,
        burst_bytes: if rate_bytes == 0 {
            0
        } else {
            policer_burst(rate_bytes)
        },
        allowance_bytes,
        allowance_refill,
        flags,
        allowance_minutes,
        allowance_window_minutes,
    })
}

/// What decided, for explanations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// An exception for this client (its reference and approver).
    ClientException {
        reference: String,
        approved_by: String,
        expires: Timestamp,
    },
    /// An exception for the client's group.
    GroupException {
        reference: String,
        approved_by: String,
        expires: Timestamp,
    },
    /// Rule number `rule` (counted from 1, as people count rules in a file).
    Rule { rule: usize, description: String },
    /// No rule matched: allowed.
    Default,
}

/// A decision and its reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub group: u16,
    pub action: Action,
    pub reason: Reason,
}

impl Policy {
    /// The action for `client` (on `vlan`) reaching `category` at `at`, in `period`.
    pub fn decide(
        &self,
        client: IpAddr,
        vlan: Option<u16>,
        category: u16,
        period: &str,
        at: Timestamp,
    ) -> Decision {
        let group = self.groups.group_of(client, vlan);
        let exception = self
            .exceptions
            .iter()
            .filter(|e| e.applies(client, group, category, at))
            // A client's own exception is the more specific one.
            .min_by_key(|e| !matches!(e.target, super::exceptions::Target::Client(_)));
        if let Some(exception) = exception {
            let reference = exception.reference.clone();
            let approved_by = exception.approved_by.clone();
            let expires = exception.expires;
            let reason = match exception.target {
                super::exceptions::Target::Client(_) => Reason::ClientException {
                    reference,
                    approved_by,
                    expires,
                },
                super::exceptions::Target::Group(_) => Reason::GroupException {
                    reference,
                    approved_by,
                    expires,
                },
            };
            return Decision {
                group,
                action: Action::Allow,
                reason,
            };
        }
        match rules::first_match(&self.rules, group, category, period) {
            Some(rule) => Decision {
                group,
                action: rule.action.clone(),
                reason: Reason::Rule {
                    rule: rule.index + 1,
                    description: rule.description.clone(),
                },
            },
            None => Decision {
                group,
                action: Action::Allow,
                reason: Reason::Default,
            },
        }
    }

    /// The tables the datapath enforces in `period`, with the exceptions active at `at`.
    pub fn decision_tables(&self, period: &str, at: Timestamp) -> DecisionTables {
        let mut tables = DecisionTables {
            prefixes: self.groups.prefixes.clone(),
            vlans: self.groups.vlans.iter().map(|(v, g)| (*v, *g)).collect(),
            ..DecisionTables::default()
        };
        tables.vlans.sort_unstable();
        let removed = self.classes.removed_category_ids();
        for group in 0..self.groups.len() as u16 {
            for category in self.classes.category_ids() {
                if let Some(entry) = self.group_verdict(group, category, period, at) {
                    tables.actions.push(((group, category), entry));
                }
            }
            // Flows classified under an earlier policy into a category this one no longer
            // has are treated as uncategorized, not left to whatever an id once meant.
            if let Some(entry) = self.group_verdict(group, 0, period, at) {
                tables
                    .actions
                    .extend(removed.iter().map(|category| ((group, *category), entry)));
            }
        }
        tables.shapers = self.shapers();
        for exception in self.exceptions.iter().filter(|e| e.is_active(at)) {
            if let super::exceptions::Target::Client(client) = exception.target {
                for category in &exception.categories {
                    tables.client_exceptions.push((client, *category));
                }
            }
        }
        tables
    }

    /// Every shape rule as the datapath applies it, by shape class.
    pub fn shapers(&self) -> Vec<(u16, ShapeRule)> {
        self.rules
            .iter()
            .filter_map(|rule| Some((shape_class(rule), shape_rule(&rule.action, self.shaping)?)))
            .collect()
    }

    /// The group's verdict for a category, `None` when it is allowed.
    fn group_verdict(
        &self,
        group: u16,
        category: u16,
        period: &str,
        at: Timestamp,
    ) -> Option<ActionEntry> {
        let excepted = self.exceptions.iter().any(|e| {
            e.target == super::exceptions::Target::Group(group)
                && e.categories.contains(&category)
                && e.is_active(at)
        });
        if excepted {
            return None;
        }
        let rule = rules::first_match(&self.rules, group, category, period)?;
        match &rule.action {
            Action::Allow => None,
            Action::Block => Some(ActionEntry {
                verdict: verdict::BLOCK,
                fail_fast: u8::from(rule.fail_fast),
                ..ActionEntry::default()
            }),
            // Full speed while the allowances last, then dropped: the datapath's shaping
            // step counts them and drops (see classifier-ebpf's `shape`).
            Action::Shape(_) | Action::BlockAfter(_) => Some(ActionEntry {
                verdict: verdict::SHAPE,
                shape_class: shape_class(rule),
                ..ActionEntry::default()
            }),
        }
    }

    /// The next instant after `at` when an exception expires (the tables change then).
    pub fn next_expiry(&self, at: Timestamp) -> Option<Timestamp> {
        self.exceptions
            .iter()
            .map(|e| e.expires)
            .filter(|expires| *expires > at)
            .min()
    }
}
