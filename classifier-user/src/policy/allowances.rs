//! What is left of a rule's allowances for a client, as `policy explain` and `status` tell
//! it. The policy knows what a rule gives; only the running datapath knows what a client
//! has used (the daemon's `shaping::allowances` reads it).

use std::{fmt::Write as _, net::IpAddr};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::rules::Allowances;

/// Bytes left below which the volume allowance counts as spent: a full-size packet no
/// longer fits.
pub const VOLUME_SPENT_BELOW: u64 = 1514;

/// A rule's allowances for one client (or, for minutes a shared rule counts for everyone,
/// for no client in particular).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowanceLeft {
    /// The rule, counted from 1 as `explain` counts them.
    pub rule: usize,
    /// The client; none for minutes everyone under a shared rule uses together.
    pub client: Option<IpAddr>,
    /// What the rule gives, as people read it: `10 minutes/hour at full speed per client`.
    pub allowance: String,
    /// Read from the running datapath; false: the policy's figures, as for a client that
    /// has used nothing (no daemon asked, or another moment than now).
    pub measured: bool,
    pub minutes_allowed: Option<u32>,
    /// Minutes of use counted in the window, the one in progress included.
    pub minutes_used: Option<u32>,
    pub minutes_left: Option<u32>,
    /// When the window of minutes ends; none while no window runs (the next minute of use
    /// starts one).
    pub window_ends: Option<Timestamp>,
    pub bytes_allowed: Option<u64>,
    /// Bytes left at full speed now (the volume allowance refills evenly over its period).
    pub bytes_left: Option<u64>,
    /// An allowance is spent: the rule shapes (or blocks) this client's traffic now.
    pub spent: bool,
}

impl AllowanceLeft {
    /// The allowances of rule `rule` (counted from 1) untouched.
    pub fn unused(rule: usize, client: Option<IpAddr>, allowances: &Allowances) -> Self {
        let minutes = allowances.time.map(|t| u32::from(t.minutes));
        let bytes = allowances.volume.as_ref().map(|v| v.bytes);
        Self {
            rule,
            client,
            allowance: allowances.to_string(),
            measured: false,
            minutes_allowed: minutes,
            minutes_used: minutes.map(|_| 0),
            minutes_left: minutes,
            window_ends: None,
            bytes_allowed: bytes,
            bytes_left: bytes,
            spent: false,
        }
    }

    /// Sets the minutes used in the window ending at `window_ends` (none: no window runs).
    pub fn with_minutes_used(mut self, used: u32, window_ends: Option<Timestamp>) -> Self {
        if let Some(allowed) = self.minutes_allowed {
            self.minutes_used = Some(used);
            self.minutes_left = Some(allowed.saturating_sub(used));
            self.window_ends = window_ends;
            // The last allowed minute runs at full speed until it ends: spent is beyond it.
            self.spent |= used > allowed;
        }
        self.measured = true;
        self
    }

    /// Sets the bytes left at full speed.
    pub fn with_bytes_left(mut self, left: u64) -> Self {
        if self.bytes_allowed.is_some() {
            self.bytes_left = Some(left);
            self.spent |= left < VOLUME_SPENT_BELOW;
        }
        self.measured = true;
        self
    }

    /// One line: `rule 6: 3 of 10 minutes left (window ends 2026-11-23T10:41:00Z); ...`.
    pub fn render(&self) -> String {
        let mut text = format!("rule {}: ", self.rule);
        let mut parts = Vec::new();
        if let (Some(left), Some(allowed)) = (self.minutes_left, self.minutes_allowed) {
            let mut part = format!("{left} of {allowed} minutes left");
            match self.window_ends {
                Some(ends) => {
                    let _ = write!(part, " (window ends {ends})");
                }
                None => part.push_str(" (no window running)"),
            }
            parts.push(part);
        }
        if let (Some(left), Some(allowed)) = (self.bytes_left, self.bytes_allowed) {
            parts.push(format!(
                "{:.1} of {:.1} MB left",
                left as f64 / 1e6,
                allowed as f64 / 1e6
            ));
        }
        text += &parts.join("; ");
        if self.spent {
            text += ": spent, shaped or blocked now";
        }
        if !self.measured {
            text += " (none used: only a running daemon counts use, and only for now)";
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::rules::{Allowance, TimeAllowance};

    fn both() -> Allowances {
        Allowances {
            per_client: true,
            volume: Some(Allowance {
                bytes: 20_000_000,
                per: Duration::from_secs(3600),
            }),
            time: Some(TimeAllowance {
                minutes: 10,
                window_minutes: 60,
            }),
        }
    }

    #[test]
    fn untouched_allowances_are_whole_and_say_they_are_the_policy_s() {
        let left = AllowanceLeft::unused(6, None, &both());
        assert_eq!(left.minutes_left, Some(10));
        assert_eq!(left.bytes_left, Some(20_000_000));
        assert!(!left.spent && !left.measured);
        assert!(
            left.render().contains("10 of 10 minutes left"),
            "{}",
            left.render()
        );
        assert!(left.render().contains("none used"), "{}", left.render());
    }

    #[test]
    fn the_last_minute_runs_at_full_speed_and_the_next_is_spent() {
        let ends: Timestamp = "2026-11-23T10:41:00Z".parse().unwrap();
        let last = AllowanceLeft::unused(6, None, &both()).with_minutes_used(10, Some(ends));
        assert_eq!(last.minutes_left, Some(0));
        assert!(!last.spent, "the tenth minute is still within");
        let beyond = AllowanceLeft::unused(6, None, &both()).with_minutes_used(11, Some(ends));
        assert!(beyond.spent);
        assert!(beyond.render().contains("window ends 2026-11-23T10:41:00Z"));
        let volume = AllowanceLeft::unused(6, None, &both()).with_bytes_left(1000);
        assert!(volume.spent, "{}", volume.render());
        assert!(volume.render().contains("0.0 of 20.0 MB left"));
    }
}
