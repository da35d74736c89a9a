//! The bandwidth-degradation log: per interval (10 s and 5 min by default), link use in each
//! direction, the share of each category and group, the volume each rule withheld
//! (dropped by a block, queued by a shape rule), the top clients by streaming and
//! file-sharing volume, and an event when those categories take more than a configured
//! share of the link or a shape rule runs at its rate. It is what the network team reads to
//! tune rate limits. The same accounting feeds the Prometheus metrics' running totals.
//!
//! The recorder's walk of the flow table (every 2 s) gives each flow's bytes since the walk
//! before; intervals add those up. Bytes are layer-3 bytes, as the flow records count them.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Duration,
};

use classifier_common::flow::FlowEntry;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::policy::{Policy, rules};

pub use crate::policy::settings::DegradationPolicy;

/// One flow's bytes since the last walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowDelta {
    pub client: Option<IpAddr>,
    pub category: u16,
    pub group: u16,
    pub upload: u64,
    pub download: u64,
    pub blocked: u64,
    pub shaped: u64,
}

impl FlowDelta {
    /// What `now` counted since `before` (the whole entry for a flow new to the walk).
    pub fn between(client: IpAddr, before: Option<&FlowEntry>, now: &FlowEntry) -> Self {
        let zero = FlowEntry::default();
        let before = before.unwrap_or(&zero);
        Self {
            client: Some(client),
            category: now.category,
            group: now.group,
            upload: now.upload.bytes.saturating_sub(before.upload.bytes),
            download: now.download.bytes.saturating_sub(before.download.bytes),
            blocked: now.blocked.bytes.saturating_sub(before.blocked.bytes),
            shaped: now.shaped.bytes.saturating_sub(before.shaped.bytes),
        }
    }
}

/// Running totals since the daemon started, by category and group (for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Volume {
    pub upload: u64,
    pub download: u64,
    pub blocked: u64,
    pub shaped: u64,
}

impl Volume {
    fn add(&mut self, delta: &FlowDelta) {
        self.upload += delta.upload;
        self.download += delta.download;
        self.blocked += delta.blocked;
        self.shaped += delta.shaped;
    }
}

/// One interval's sums, by ids (names are looked up when it closes).
#[derive(Debug, Default)]
struct Sums {
    by_class: HashMap<(u16, u16), Volume>,
    clients: HashMap<(IpAddr, u16), u64>,
}

struct Window {
    length: Duration,
    started: Timestamp,
    sums: Sums,
}

/// The degradation log's accounting.
pub struct Degradation {
    windows: Vec<Window>,
    /// Since start, by (category id, group id).
    pub totals: HashMap<(u16, u16), Volume>,
}

impl Degradation {
    pub fn new(policy: &DegradationPolicy, now: Timestamp) -> Self {
        Self {
            windows: policy
                .intervals
                .iter()
                .map(|&length| Window {
                    length,
                    started: now,
                    sums: Sums::default(),
                })
                .collect(),
            totals: HashMap::new(),
        }
    }

    /// Adds one walk's deltas.
    pub fn add(&mut self, deltas: &[FlowDelta]) {
        for delta in deltas {
            self.totals
                .entry((delta.category, delta.group))
                .or_default()
                .add(delta);
            for window in &mut self.windows {
                window
                    .sums
                    .by_class
                    .entry((delta.category, delta.group))
                    .or_default()
                    .add(delta);
                if let Some(client) = delta.client {
                    *window
                        .sums
                        .clients
                        .entry((client, delta.category))
                        .or_default() += delta.upload + delta.download;
                }
            }
        }
    }

    /// Closes every interval that is over at `now` and returns its report.
    pub fn close_due(
        &mut self,
        now: Timestamp,
        policy: &Policy,
        period: &str,
    ) -> Vec<IntervalReport> {
        let settings = &policy.degradation;
        let mut reports = Vec::new();
        for window in &mut self.windows {
            let elapsed = now.duration_since(window.started);
            if elapsed.as_secs_f64() < window.length.as_secs_f64() {
                continue;
            }
            let sums = std::mem::take(&mut window.sums);
            reports.push(report(
                &sums,
                window.started,
                now,
                window.length,
                policy,
                settings,
                period,
            ));
            window.started = now;
        }
        reports
    }
}

/// A category's or group's part of an interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub name: String,
    pub bytes: u64,
    /// Of the link when its capacity is configured, else of the traffic seen.
    pub share: f64,
}

/// What a rule held back in an interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withheld {
    /// `rule 3: streaming at work`.
    pub rule: String,
    /// Dropped by a block verdict.
    pub dropped_bytes: u64,
    /// Queued (or policed) by a shape verdict.
    pub throttled_bytes: u64,
}

/// A client's streaming or file-sharing volume in an interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientVolume {
    pub client: IpAddr,
    pub category: String,
    pub bytes: u64,
}

/// Something the network team should look at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A watched category took more than `[degradation] alert_share` of the link.
    ShareExceeded {
        category: String,
        direction: String,
        share: f64,
        threshold: f64,
    },
    /// A shape rule's traffic ran at (90 % or more of) its rate: it was holding traffic
    /// back.
    RuleSaturated {
        rule: String,
        rate_bps: u64,
        throughput_bps: u64,
    },
}

/// One closed interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntervalReport {
    pub interval_seconds: u64,
    pub start: Timestamp,
    pub end: Timestamp,
    pub download_bps: u64,
    pub upload_bps: u64,
    /// Of the configured link capacity; absent without one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub download_utilisation: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub upload_utilisation: Option<f64>,
    pub by_category: Vec<Share>,
    pub by_group: Vec<Share>,
    pub withheld: Vec<Withheld>,
    /// Removed by the retention job once the report is past retention.
    #[serde(default)]
    pub top_clients: Vec<ClientVolume>,
    pub events: Vec<Event>,
}

/// How many clients `top_clients` lists.
const TOP_CLIENTS: usize = 10;
/// A shape rule at this fraction of its rate or more is saturated.
const SATURATED: f64 = 0.9;

fn report(
    sums: &Sums,
    start: Timestamp,
    end: Timestamp,
    length: Duration,
    policy: &Policy,
    settings: &DegradationPolicy,
    period: &str,
) -> IntervalReport {
    let seconds = end
        .duration_since(start)
        .as_secs_f64()
        .max(length.as_secs_f64() / 2.0);
    let bps = |bytes: u64| (bytes as f64 * 8.0 / seconds) as u64;
    let download: u64 = sums.by_class.values().map(|v| v.download).sum();
    let upload: u64 = sums.by_class.values().map(|v| v.upload).sum();
    // Shares are of the link's capacity over the interval, when it is known.
    let capacity_bytes = settings
        .link_download_bps
        .zip(settings.link_upload_bps)
        .map(|(down, up)| ((down + up) as f64 / 8.0 * seconds) as u64);
    let whole = capacity_bytes.unwrap_or(download + upload).max(1);
    let classes = &policy.classes;
    let mut by_category: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_group: BTreeMap<String, u64> = BTreeMap::new();
    let mut withheld: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut shaped_by_rule: BTreeMap<usize, u64> = BTreeMap::new();
    for (&(category, group), volume) in &sums.by_class {
        let bytes = volume.upload + volume.download;
        *by_category
            .entry(classes.category_name(category).to_owned())
            .or_default() += bytes;
        *by_group
            .entry(policy.groups.name(group).to_owned())
            .or_default() += bytes;
        if volume.blocked + volume.shaped == 0 {
            continue;
        }
        let rule = rules::first_match(&policy.rules, group, category, period);
        let name = rule.map_or_else(
            || "no rule (an exception or a period change)".to_owned(),
            |r| format!("rule {}: {}", r.index + 1, r.description),
        );
        let entry = withheld.entry(name).or_default();
        entry.0 += volume.blocked;
        entry.1 += volume.shaped;
        if let Some(rule) = rule {
            *shaped_by_rule.entry(rule.index).or_default() += volume.shaped;
        }
    }
    let shares = |sums: BTreeMap<String, u64>| -> Vec<Share> {
        let mut shares: Vec<Share> = sums
            .into_iter()
            .map(|(name, bytes)| Share {
                name,
                bytes,
                share: bytes as f64 / whole as f64,
            })
            .collect();
        shares.sort_by_key(|s| std::cmp::Reverse(s.bytes));
        shares
    };
    let by_category = shares(by_category);
    let watched = |category: &str| settings.watched_categories.iter().any(|c| c == category);
    let mut top_clients: Vec<ClientVolume> = sums
        .clients
        .iter()
        .map(|(&(client, category), &bytes)| ClientVolume {
            client,
            category: classes.category_name(category).to_owned(),
            bytes,
        })
        .filter(|c| watched(&c.category) && c.bytes > 0)
        .collect();
    top_clients.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.client.cmp(&b.client)));
    top_clients.truncate(TOP_CLIENTS);

    let mut events = Vec::new();
    for share in by_category.iter().filter(|s| watched(&s.name)) {
        if share.share > settings.alert_share {
            events.push(Event::ShareExceeded {
                category: share.name.clone(),
                direction: "both".into(),
                share: share.share,
                threshold: settings.alert_share,
            });
        }
    }
    for (index, shaped) in shaped_by_rule {
        let rule = &policy.rules[index];
        let rules::Action::Shape(shaping) = &rule.action else {
            continue;
        };
        let throughput = bps(shaped);
        // A per-client rule's rate is each client's; its sum says little of saturation.
        if !shaping.per_client && throughput as f64 >= SATURATED * shaping.rate_bps as f64 {
            events.push(Event::RuleSaturated {
                rule: format!("rule {}: {}", index + 1, rule.description),
                rate_bps: shaping.rate_bps,
                throughput_bps: throughput,
            });
        }
    }
    IntervalReport {
        interval_seconds: length.as_secs(),
        start,
        end,
        download_bps: bps(download),
        upload_bps: bps(upload),
        download_utilisation: settings
            .link_download_bps
            .map(|link| bps(download) as f64 / link.max(1) as f64),
        upload_utilisation: settings
            .link_upload_bps
            .map(|link| bps(upload) as f64 / link.max(1) as f64),
        by_category,
        by_group: shares(by_group),
        withheld: withheld
            .into_iter()
            .map(|(rule, (dropped_bytes, throttled_bytes))| Withheld {
                rule,
                dropped_bytes,
                throttled_bytes,
            })
            .collect(),
        top_clients,
        events,
    }
}

/// A made-up report for the store's tests (here and in classifier-tests), which each test
/// changes where it matters.
#[cfg(any(test, feature = "test-util"))]
pub mod testing {
    use jiff::{SignedDuration, Timestamp};

    use super::{ClientVolume, IntervalReport};

    /// A report of `interval_seconds` that ended at `end`: 8000 bit/s down, 800 up, one top
    /// client (192.0.2.77, streaming video, 1000 bytes).
    pub fn sample_report(interval_seconds: u64, end: Timestamp) -> IntervalReport {
        IntervalReport {
            interval_seconds,
            start: end - SignedDuration::from_secs(interval_seconds as i64),
            end,
            download_bps: 8000,
            upload_bps: 800,
            download_utilisation: None,
            upload_utilisation: None,
            by_category: Vec::new(),
            by_group: Vec::new(),
            withheld: Vec::new(),
            top_clients: vec![ClientVolume {
                client: "192.0.2.77".parse().unwrap(),
                category: "streaming-video".into(),
                bytes: 1000,
            }],
            events: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::default_council()
    }

    fn delta(policy: &Policy, client: &str, category: &str, group: &str, down: u64) -> FlowDelta {
        FlowDelta {
            client: Some(client.parse().unwrap()),
            category: policy.classes.category_id(category).unwrap(),
            group: policy.groups.id(group).unwrap(),
            upload: down / 20,
            download: down,
            blocked: 0,
            shaped: 0,
        }
    }

    #[test]
    fn an_interval_reports_shares_top_clients_and_a_share_event() {
        let policy = policy();
        let start: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let mut log = Degradation::new(&policy.degradation, start);
        log.add(&[
            delta(&policy, "192.0.2.10", "streaming-video", "staff", 8_000_000),
            delta(&policy, "192.0.2.11", "streaming-video", "staff", 2_000_000),
            delta(&policy, "192.0.2.12", "cloud-storage", "staff", 1_000_000),
        ]);
        let early = start + jiff::SignedDuration::from_secs(5);
        assert!(log.close_due(early, &policy, "working").is_empty());
        let end = start + jiff::SignedDuration::from_secs(10);
        let reports = log.close_due(end, &policy, "working");
        assert_eq!(
            reports.len(),
            1,
            "the 10 s interval closes, the 5 min one does not"
        );
        let report = &reports[0];
        assert_eq!(report.download_bps, 11_000_000 * 8 / 10);
        assert_eq!(report.by_category[0].name, "streaming-video");
        let streaming_share = report.by_category[0].share;
        assert!(
            (streaming_share - 10.5 / 11.55).abs() < 1e-9,
            "{streaming_share}"
        );
        assert_eq!(report.top_clients.len(), 2, "only watched categories");
        assert_eq!(report.top_clients[0].client.to_string(), "192.0.2.10");
        assert_eq!(report.top_clients[0].bytes, 8_400_000);
        assert!(matches!(
            &report.events[..],
            [Event::ShareExceeded { category, .. }] if category == "streaming-video"
        ));
        // The next interval starts empty; the totals go on.
        let next = log.close_due(
            end + jiff::SignedDuration::from_secs(10),
            &policy,
            "working",
        );
        assert_eq!(next[0].download_bps, 0);
        let total: u64 = log.totals.values().map(|v| v.download).sum();
        assert_eq!(total, 11_000_000);
    }

    #[test]
    fn withheld_volume_is_put_to_the_rule_and_a_busy_shape_rule_is_saturated() {
        let policy = Policy::parse(
            r#"
[schedule]
default = "working"
[categories.streaming-video]
domains = ["video.example.test"]
[categories.gambling]
domains = ["bet.example.test"]
[[rules]]
description = "Gambling blocked"
categories = "gambling"
action = "block"
[[rules]]
description = "Video at 8 Mbit/s together"
categories = "streaming-video"
action = "shape"
rate = "8mbit"
[degradation]
link_download = "100mbit"
link_upload = "10mbit"
"#,
            std::path::Path::new("test.toml"),
            std::path::Path::new("."),
        )
        .unwrap();
        let start: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let mut log = Degradation::new(&policy.degradation, start);
        let category = |name: &str| policy.classes.category_id(name).unwrap();
        // A whole 10 s interval at the shape rule's rate, and a blocked flow's drops.
        let shaped = 8_000_000 / 8 * 10;
        log.add(&[
            FlowDelta {
                client: Some("192.0.2.10".parse().unwrap()),
                category: category("streaming-video"),
                download: shaped,
                shaped,
                ..FlowDelta::default()
            },
            FlowDelta {
                client: Some("192.0.2.11".parse().unwrap()),
                category: category("gambling"),
                upload: 3000,
                blocked: 3000,
                ..FlowDelta::default()
            },
        ]);
        let report = &log.close_due(
            start + jiff::SignedDuration::from_secs(10),
            &policy,
            "working",
        )[0];
        assert_eq!(
            report.withheld,
            [
                Withheld {
                    rule: "rule 1: Gambling blocked".into(),
                    dropped_bytes: 3000,
                    throttled_bytes: 0
                },
                Withheld {
                    rule: "rule 2: Video at 8 Mbit/s together".into(),
                    dropped_bytes: 0,
                    throttled_bytes: shaped
                },
            ]
        );
        assert!(
            report.events.iter().any(|e| matches!(
                e,
                Event::RuleSaturated { rate_bps: 8_000_000, rule, .. } if rule.starts_with("rule 2:")
            )),
            "{:?}",
            report.events
        );
        // Half the rate is not saturation.
        log.add(&[FlowDelta {
            category: category("streaming-video"),
            download: shaped / 2,
            shaped: shaped / 2,
            ..FlowDelta::default()
        }]);
        let calm = &log.close_due(
            start + jiff::SignedDuration::from_secs(20),
            &policy,
            "working",
        )[0];
        assert!(
            !calm
                .events
                .iter()
                .any(|e| matches!(e, Event::RuleSaturated { .. }))
        );
    }
}
