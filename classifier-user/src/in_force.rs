//! The policy in force: which policy, which schedule period and which generation of the
//! decision tables the datapath enforces, and how that changes — at each schedule boundary
//! and exception expiry (the clock), and on reload (a new file).
//!
//! Every change is one [`swap_policy`](crate::loader::Datapath::swap_policy): the new tables
//! are written into the idle half of the double-buffered maps, then one 4-byte write makes
//! them the ones in force, so no packet sees a half-written table. A policy file that does
//! not load changes nothing.

use anyhow::Context as _;
use jiff::Timestamp;
use serde::Serialize;
use tracing::{info, warn};

use crate::{
    loader::Datapath,
    policy::{Policy, PolicySources},
    tables,
};

/// What the datapath enforces now.
#[derive(Debug)]
pub struct InForce {
    pub policy: Policy,
    /// The files it was read from (reload reads them again).
    pub sources: PolicySources,
    pub period: String,
    /// Why `period` is the one in force (for `status` and logs).
    pub period_reason: String,
    /// Generation of the decision tables in the datapath.
    pub generation: u32,
    pub applied_at: Timestamp,
    /// When the period changes or an exception expires: the tables are worked out again.
    pub next_change: Option<Timestamp>,
}

/// The answer to `policy reload`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReloadReport {
    pub policy: String,
    pub period: String,
    pub generation: u32,
    pub categories: usize,
    pub domains: usize,
    pub rules: usize,
}

impl InForce {
    /// Installs `policy`'s decisions for `now` and its classification tables.
    pub fn install(
        policy: Policy,
        sources: PolicySources,
        datapath: &mut Datapath,
        now: Timestamp,
    ) -> anyhow::Result<Self> {
        let mut in_force = Self {
            policy,
            sources,
            period: String::new(),
            period_reason: String::new(),
            generation: 0,
            applied_at: now,
            next_change: None,
        };
        // Decisions before classes, as on reload: a daemon taking over a running datapath
        // never lets a category it adds pass unruled.
        in_force.decide_again(datapath, now)?;
        datapath.install_tables(&in_force.policy.classes, &in_force.policy.datapath)?;
        in_force.log_compile_notes();
        Ok(in_force)
    }

    /// Works the decisions out for `now` and swaps them in: the period's rules, the
    /// exceptions still valid.
    pub fn decide_again(&mut self, datapath: &mut Datapath, now: Timestamp) -> anyhow::Result<()> {
        let period = self.policy.schedule.period_at(now);
        let tables = self.policy.decision_tables(&period.name, now);
        let generation = datapath
            .swap_policy(&tables)
            .context("swapping the decision tables")?;
        let next_change = [
            self.policy.schedule.next_change(now),
            self.policy.next_expiry(now),
        ]
        .into_iter()
        .flatten()
        .min();
        // The first decision is logged with the attachment, once it has worked.
        if period.name != self.period && !self.period.is_empty() {
            info!(
                from = %self.period,
                to = %period.name,
                why = %period.reason,
                generation,
                "schedule period in force"
            );
        }
        self.period = period.name;
        self.period_reason = period.reason;
        self.generation = generation;
        self.applied_at = now;
        self.next_change = next_change;
        Ok(())
    }

    /// At or after the next change: decides again. Returns whether it did.
    pub fn on_clock(&mut self, datapath: &mut Datapath, now: Timestamp) -> anyhow::Result<bool> {
        match self.next_change {
            Some(change) if now >= change => {
                self.log_expired_exceptions(now);
                self.decide_again(datapath, now)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Reads the policy and exceptions files again and, when they are valid, puts them in
    /// force; otherwise the running policy stays and the error names file, line and field.
    pub fn reload(
        &mut self,
        datapath: &mut Datapath,
        now: Timestamp,
    ) -> anyhow::Result<ReloadReport> {
        // Names keep their ids: running flows carry them (see `policy::ids`).
        let policy = self
            .sources
            .load_with_ids(&self.policy.classes.ids)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e}\nthe policy in force is unchanged ({})",
                    self.policy.origin
                )
            })?;
        let file = self
            .sources
            .policy
            .as_deref()
            .map_or_else(|| policy.origin.clone(), |p| p.display().to_string());
        let needed = tables::domain_capacity(policy.classes.domains.len());
        let room = datapath.domain_capacity()?;
        anyhow::ensure!(
            needed <= room,
            "{file}: {} domains need a domain table of {needed} entries, the datapath has {room}: \
             restart the daemon to grow it; the policy in force is unchanged",
            policy.classes.domains.len()
        );
        let previous = std::mem::replace(&mut self.policy, policy);
        // Decisions first, then classes: ids mean the same names in both policies, so
        // flows classified by the old tables meanwhile get the new policy's verdict for
        // their category; the other order would let new categories pass unruled.
        let switched = self
            .decide_again(datapath, now)
            .and_then(|()| datapath.install_tables(&self.policy.classes, &self.policy.datapath));
        if let Err(e) = switched {
            // Put the old policy's classes and decisions back.
            self.policy = previous;
            datapath.install_tables(&self.policy.classes, &self.policy.datapath)?;
            self.decide_again(datapath, now)?;
            return Err(e);
        }
        info!(policy = %self.policy.origin, generation = self.generation, "policy reloaded");
        self.log_compile_notes();
        Ok(self.report())
    }

    pub fn report(&self) -> ReloadReport {
        ReloadReport {
            policy: self.policy.origin.clone(),
            period: self.period.clone(),
            generation: self.generation,
            categories: self.policy.classes.categories.len(),
            domains: self.policy.classes.domains.len(),
            rules: self.policy.rules.len(),
        }
    }

    /// What compiling the policy noticed (hash collisions, duplicates, skipped lines).
    fn log_compile_notes(&self) {
        for note in self.policy.classes.report.notes() {
            warn!(policy = %self.policy.origin, "{note}");
        }
    }

    fn log_expired_exceptions(&self, now: Timestamp) {
        for exception in &self.policy.exceptions {
            if exception.expires > self.applied_at && exception.expires <= now {
                info!(
                    reference = %exception.reference,
                    approved_by = %exception.approved_by,
                    expired = %exception.expires,
                    "exception expired: no longer applied"
                );
            }
        }
    }
}

/// How the last policy load or reload (SIGHUP, `classifier policy reload`) went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastReload {
    /// When it was tried.
    pub at: jiff::Timestamp,
    /// Whether the policy read then is the one in force (a refused file changes nothing).
    pub succeeded: bool,
    /// When a policy was last put in force.
    pub last_success: jiff::Timestamp,
}

impl LastReload {
    /// The policy the daemon started with, loaded at `at`.
    pub fn loaded_at(at: jiff::Timestamp) -> Self {
        Self {
            at,
            succeeded: true,
            last_success: at,
        }
    }

    pub fn record(&mut self, at: jiff::Timestamp, succeeded: bool) {
        self.at = at;
        self.succeeded = succeeded;
        if succeeded {
            self.last_success = at;
        }
    }
}
