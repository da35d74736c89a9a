//! Deciding: what the policy does with a client's traffic of a category at a moment, and
//! why; and the decision tables the datapath enforces for a period.

use std::net::IpAddr;

use classifier_common::policy::{ActionEntry, verdict};
use jiff::Timestamp;
use serde::Serialize;

use super::{Action, Policy, rules};
use crate::tables::DecisionTables;

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
        for group in 0..self.groups.len() as u16 {
            for category in 0..=self.classes.categories.len() as u16 {
                if let Some(entry) = self.group_verdict(group, category, period, at) {
                    tables.actions.push(((group, category), entry));
                }
            }
        }
        for exception in self.exceptions.iter().filter(|e| e.is_active(at)) {
            if let super::exceptions::Target::Client(client) = exception.target {
                for category in &exception.categories {
                    tables.client_exceptions.push((client, *category));
                }
            }
        }
        tables
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
                fail_fast: 1,
                ..ActionEntry::default()
            }),
            Action::Shape(_) => Some(ActionEntry {
                verdict: verdict::SHAPE,
                // One shaping class per rule (HTB minor ids start at 1).
                shape_class: rule.index as u16 + 1,
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
