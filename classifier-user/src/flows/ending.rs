//! When a flow has ended: a TCP close or reset, an idle timeout, or an eviction by the
//! kernel's LRU table that the daemon only notices by the flow's absence.
//!
//! The daemon walks the flow table every few seconds. Flows that ended are taken out of
//! the table and written to the store; flows that vanished between two walks without
//! ending were evicted and are written with the counters of the last walk, and counted,
//! so no flow is lost silently.

use std::{collections::HashMap, time::Duration};

use classifier_common::flow::{FlowEntry, FlowKey, ip_proto, tcp_flags};
use serde::{Deserialize, Serialize};

use super::TableWalk;

/// Why a flow's record was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// TCP FIN seen both ways.
    Fin,
    /// TCP reset.
    Rst,
    /// No packet for the idle timeout.
    Idle,
    /// The kernel's LRU flow table evicted it before the daemon read its end: its
    /// counters are those of the daemon's last look.
    Evicted,
    /// Still live when the daemon stopped and removed the datapath.
    Stopped,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Idle => "idle",
            EndReason::Evicted => "evicted",
            EndReason::Stopped => "stopped",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "fin" => EndReason::Fin,
            "rst" => EndReason::Rst,
            "evicted" => EndReason::Evicted,
            "stopped" => EndReason::Stopped,
            _ => EndReason::Idle,
        }
    }
}

pub use crate::policy::settings::EndRules;

/// Why `entry` has ended by `now_ns` (CLOCK_MONOTONIC, [`super::datapath_clock_ns`]), or `None` while it is live.
pub fn end_reason(
    key: &FlowKey,
    entry: &FlowEntry,
    now_ns: u64,
    rules: &EndRules,
) -> Option<EndReason> {
    let quiet = Duration::from_nanos(now_ns.saturating_sub(entry.last_seen_ns));
    if let Some(closed) = tcp_close(key, entry) {
        // A closed flow ends after the linger, or the idle timeout if that is shorter;
        // either way it ended by its close.
        return (quiet >= rules.close_linger.min(rules.idle_timeout)).then_some(closed);
    }
    (quiet >= rules.idle_timeout).then_some(EndReason::Idle)
}

/// A reset either way, or a FIN both ways.
fn tcp_close(key: &FlowKey, entry: &FlowEntry) -> Option<EndReason> {
    if key.protocol != ip_proto::TCP {
        return None;
    }
    if (entry.tcp_flags_upload | entry.tcp_flags_download) & tcp_flags::RST != 0 {
        return Some(EndReason::Rst);
    }
    let fin_both_ways = entry.tcp_flags_upload & entry.tcp_flags_download & tcp_flags::FIN;
    (fin_both_ways != 0).then_some(EndReason::Fin)
}

/// A flow the walk found ended, or found gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub key: FlowKey,
    pub entry: FlowEntry,
    pub reason: EndReason,
}

/// What the daemon remembers between walks of the flow table.
#[derive(Debug, Default)]
pub struct FlowEnds {
    /// Every live flow of the last walk, as it was then.
    seen: HashMap<FlowKey, FlowEntry>,
    /// Flows found evicted since the daemon started.
    pub evicted: u64,
    /// Walks sorted so far.
    pub walks: u64,
}

impl FlowEnds {
    /// Sorts one walk into the flows that ended (for the caller to take out of the table
    /// and record) and keeps the rest for the next walk. Flows of the last walk that are
    /// gone now were evicted: they come back with the entry last seen.
    pub fn sort(&mut self, walk: TableWalk, now_ns: u64, rules: &EndRules) -> Vec<Ended> {
        self.walks += 1;
        let mut ended = Vec::new();
        let mut live = HashMap::with_capacity(walk.entries.len());
        for (key, entry) in walk.entries {
            self.seen.remove(&key);
            match end_reason(&key, &entry, now_ns, rules) {
                Some(reason) => ended.push(Ended { key, entry, reason }),
                None => {
                    live.insert(key, entry);
                }
            }
        }
        let vanished = std::mem::replace(&mut self.seen, live);
        if walk.complete {
            for (key, entry) in vanished {
                self.evicted += 1;
                ended.push(Ended {
                    key,
                    entry,
                    reason: EndReason::Evicted,
                });
            }
        } else {
            // A cut-short walk proves nothing about the flows it did not reach.
            self.seen.extend(vanished);
        }
        ended
    }

    /// The entry as the last walk saw it.
    pub fn previous(&self, key: &FlowKey) -> Option<&FlowEntry> {
        self.seen.get(key)
    }

    /// Every flow live at the last walk, as it was then.
    pub fn live(&self) -> impl Iterator<Item = (&FlowKey, &FlowEntry)> {
        self.seen.iter()
    }

    /// Whether `key` was live at the last walk.
    pub fn is_live(&self, key: &FlowKey) -> bool {
        self.seen.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn key(port: u16, protocol: u8) -> FlowKey {
        FlowKey {
            client_port: port,
            server_port: 443,
            protocol,
            ..FlowKey::default()
        }
    }

    fn tcp(last_seen_s: u64, up: u8, down: u8) -> FlowEntry {
        FlowEntry {
            last_seen_ns: last_seen_s * SECOND,
            tcp_flags_upload: up,
            tcp_flags_download: down,
            ..FlowEntry::default()
        }
    }

    const ACK: u8 = tcp_flags::ACK;
    const FIN: u8 = tcp_flags::FIN | tcp_flags::ACK;
    const RST: u8 = tcp_flags::RST;

    #[test]
    fn tcp_ends_after_fins_both_ways_or_a_reset_once_the_linger_is_over() {
        let rules = EndRules::default();
        let now = 100 * SECOND;
        let tcp_key = key(1, ip_proto::TCP);
        let end = |entry: FlowEntry| end_reason(&tcp_key, &entry, now, &rules);
        assert_eq!(end(tcp(90, FIN, FIN)), Some(EndReason::Fin));
        assert_eq!(end(tcp(90, ACK, RST)), Some(EndReason::Rst));
        // Half-closed: still live.
        assert_eq!(end(tcp(90, FIN, ACK)), None);
        // Closed a moment ago: the last ACK may still come.
        assert_eq!(end(tcp(99, FIN, FIN)), None);
        assert_eq!(end(tcp(99, RST, ACK)), None);
        // An idle timeout shorter than the linger still ends a closed flow as closed.
        let short_idle = EndRules {
            idle_timeout: Duration::from_secs(3),
            ..rules
        };
        assert_eq!(
            end_reason(&tcp_key, &tcp(96, FIN, FIN), now, &short_idle),
            Some(EndReason::Fin)
        );
    }

    #[test]
    fn any_flow_ends_when_idle_for_the_timeout() {
        let rules = EndRules {
            idle_timeout: Duration::from_secs(30),
            ..EndRules::default()
        };
        let now = 100 * SECOND;
        let udp = key(2, ip_proto::UDP);
        assert_eq!(
            end_reason(&udp, &tcp(69, 0, 0), now, &rules),
            Some(EndReason::Idle)
        );
        assert_eq!(end_reason(&udp, &tcp(71, 0, 0), now, &rules), None);
        // FIN flags mean nothing to UDP.
        assert_eq!(end_reason(&udp, &tcp(90, FIN, FIN), now, &rules), None);
    }

    #[test]
    fn flows_gone_between_walks_are_evicted_with_their_last_counters() {
        let rules = EndRules::default();
        let mut ends = FlowEnds::default();
        let mut last = tcp(10, ACK, ACK);
        last.download.bytes = 5000;
        let walk = |entries: Vec<(FlowKey, FlowEntry)>, complete| TableWalk { entries, complete };
        let first = ends.sort(
            walk(
                vec![(key(1, ip_proto::TCP), last), (key(2, ip_proto::TCP), last)],
                true,
            ),
            11 * SECOND,
            &rules,
        );
        assert!(first.is_empty());
        // A walk cut short: flow 2 was not reached, which proves nothing.
        let cut = ends.sort(
            walk(vec![(key(1, ip_proto::TCP), last)], false),
            12 * SECOND,
            &rules,
        );
        assert!(cut.is_empty());
        assert_eq!(ends.evicted, 0);
        // A whole walk without flow 2: it was evicted.
        let whole = ends.sort(
            walk(vec![(key(1, ip_proto::TCP), last)], true),
            13 * SECOND,
            &rules,
        );
        assert_eq!(
            whole,
            [Ended {
                key: key(2, ip_proto::TCP),
                entry: last,
                reason: EndReason::Evicted
            }]
        );
        assert_eq!(ends.evicted, 1);
        // A flow that ended is handed over once, not later found "evicted" as well.
        let closed = ends.sort(
            walk(vec![(key(1, ip_proto::TCP), tcp(13, FIN, FIN))], true),
            30 * SECOND,
            &rules,
        );
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].reason, EndReason::Fin);
        assert!(
            ends.sort(walk(vec![], true), 31 * SECOND, &rules)
                .is_empty()
        );
        assert_eq!(ends.evicted, 1);
    }
}
