//! The daemon's flow recording: every few seconds, flows that ended are taken out of the
//! kernel's table and written to the flow store; the retention job runs every hour.
//!
//! No flow is lost silently: one the kernel's LRU table evicted before it ended is
//! recorded with the counters of the last walk (and counted), and a stopping daemon,
//! which takes the datapath with it, records the flows still live.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use classifier_common::flow::FlowKey;
use serde::Serialize;
use tracing::{info, warn};

use crate::{
    degradation::{Degradation, FlowDelta, IntervalReport},
    export::ipfix::{
        Layout, ObservationPoint,
        live::{LiveExport, Reports},
    },
    flows::{
        DatapathClock, FlowRecord,
        ending::{Ended, FlowEnds},
        names::{self, FlowNames},
        neighbours::Neighbours,
        read_entries,
    },
    in_force::InForce,
    loader::Datapath,
    policy::IpfixPolicy,
    store::{EndReason, Store, pg_connect, retention},
};

/// How often the flow table is walked for ended flows.
pub const WALK_EVERY: Duration = Duration::from_secs(2);
/// How often the retention job runs (and once at start).
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Counters of what the recorder did, for status and metrics.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RecorderStats {
    /// Flows written to the store (or ended, without one).
    pub flows_ended: u64,
    /// Of those, found evicted by the kernel's LRU table.
    pub flows_evicted: u64,
    /// Records that could not be written (the store failed); they are retried once with
    /// the next batch, then dropped with a warning.
    pub records_failed: u64,
    /// IPFIX messages sent to the collector, and those the network refused.
    pub ipfix_messages: u64,
    pub ipfix_failed: u64,
    /// Reports of flows still live (the active timeout), a subset of the flows' records
    /// sent.
    #[serde(default)]
    pub ipfix_interim_reports: u64,
}

/// What a walk needs of the daemon's state, lent for the time of one closure under the
/// daemon's lock: the datapath's tables, the policy in force, the flow names learned, and
/// the recorder's own bookkeeping (kept in the state for `status`, `flows` and `/metrics`,
/// written only here).
pub struct Lent<'a> {
    pub datapath: &'a mut Datapath,
    pub in_force: &'a InForce,
    pub names: &'a mut FlowNames,
    pub stats: &'a mut RecorderStats,
    pub recent: &'a mut RecentlyEnded,
    pub degradation: &'a mut Degradation,
    pub flows_at_last_walk: &'a mut usize,
    pub last_intervals: &'a mut BTreeMap<u64, IntervalReport>,
}

/// Whoever holds the state the recorder works on (the daemon): it lends it piece by piece,
/// so the recorder needs nothing of the daemon's types.
pub trait Host {
    fn lend<R>(&self, work: impl FnOnce(Lent<'_>) -> R) -> R;
}

/// Where and how the daemon records flows.
pub struct Recorder {
    store: Option<Store>,
    store_path: Option<String>,
    ends: FlowEnds,
    neighbours: Neighbours,
    /// Records of the last batch the store refused, tried again with the next one.
    unwritten: Vec<FlowRecord>,
    last_retention: Option<Instant>,
    /// The retention the job last enforced: a reload that changes it runs the job at once.
    retention_in_force: Option<(String, &'static str, String)>,
    ipfix: Option<LiveExport>,
    /// What the collector was told of flows that last: each report is a delta.
    reports: Reports,
    /// The gateway's interfaces and LAN MAC, as IPFIX records them.
    observation: ObservationPoint,
}

impl Recorder {
    /// Opens the store at `store` (none: flows are ended and counted, not written).
    /// `lan_interface` and `wan_interface` are where the gateway observes the flows.
    pub fn open(
        store: Option<String>,
        lan_interface: &str,
        wan_interface: Option<&str>,
    ) -> anyhow::Result<Self> {
        let opened = store.as_deref().map(Store::open).transpose()?;
        if let Some(location) = &store {
            info!(store = %pg_connect::redact(location), "recording ended flows");
        }
        Ok(Self {
            store: opened,
            store_path: store,
            ends: FlowEnds::default(),
            neighbours: Neighbours::of(lan_interface),
            unwritten: Vec::new(),
            last_retention: None,
            retention_in_force: None,
            ipfix: None,
            reports: Reports::default(),
            observation: observation_point(lan_interface, wan_interface),
        })
    }

    /// One walk: ended flows out of the table and into the store; the retention job when
    /// it is due.
    pub fn walk(&mut self, host: &impl Host) {
        self.neighbours.refresh();
        let taken = host.lend(|mut state| {
            take_ended(&mut state, &mut self.ends, &self.neighbours)
                .map(|taken| (taken, self.due_reports(&state)))
        });
        let ((ended, records), lasting) = match taken {
            Ok(taken) => taken,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "could not walk the flow table");
                return;
            }
        };
        self.report_lasting(lasting, host);
        // Written first, then taken out of the kernel's tables: a daemon killed in between
        // leaves the flows (and their names) to the next one, which records them.
        let named: Vec<bool> = records
            .iter()
            .map(|r| r.name.is_some() || r.second_name.is_some())
            .collect();
        self.write(records, host);
        host.lend(|mut state| release(&mut state, &ended, &named));
        self.close_intervals(host);
        let (retention, override_reason) = host.lend(|state| {
            let records = &state.in_force.policy.records;
            (records.retention, records.retention_override_reason.clone())
        });
        let changed = self.retention_in_force.as_ref()
            != Some(&crate::store::retention::retention_row(&retention));
        if changed
            || self
                .last_retention
                .is_none_or(|at| at.elapsed() >= RETENTION_EVERY)
        {
            if changed && let Some(reason) = override_reason {
                warn!(
                    retention = %format!("{:#}", retention.keep),
                    reason = %reason,
                    "records are kept longer than the councils' 14 months, by the policy's override"
                );
            }
            self.last_retention = Some(Instant::now());
            self.retention_in_force = Some(crate::store::retention::retention_row(&retention));
            self.run_retention(&retention);
        }
    }

    /// Records the flows still live, as a stopping daemon (which removes the datapath)
    /// must.
    pub fn finish(&mut self, host: &impl Host) {
        self.neighbours.refresh();
        let live = host.lend(|state| {
            let walk = read_entries(&state.datapath.maps().flows).entries;
            let ended: Vec<Ended> = walk
                .into_iter()
                .map(|(key, entry)| Ended {
                    key,
                    entry,
                    reason: EndReason::Stopped,
                })
                .collect();
            to_records(&state, &ended, &self.neighbours)
        });
        if let Ok(records) = live {
            let count = records.len();
            self.write(records, host);
            if let Some(location) = &self.store_path {
                info!(flows = count, store = %pg_connect::redact(location), "recorded the flows live at stop");
            }
        }
    }

    fn write(&mut self, mut records: Vec<FlowRecord>, host: &impl Host) {
        if records.is_empty() && self.unwritten.is_empty() {
            return;
        }
        let ipfix = host.lend(|state| state.in_force.policy.records.ipfix);
        let finals: Vec<FlowRecord> = records.iter().map(|r| self.reports.last(r)).collect();
        let (sent, unsent) = self.send_ipfix(&finals, &ipfix);
        let ended = records.len() as u64;
        let evicted = records
            .iter()
            .filter(|r| r.ended == Some(EndReason::Evicted))
            .count() as u64;
        let retried = std::mem::take(&mut self.unwritten);
        let failed = if let Some(store) = &mut self.store {
            let mut batch = retried;
            let first_try = batch.len();
            batch.append(&mut records);
            match store.insert(&batch) {
                Ok(()) => 0,
                Err(e) => {
                    warn!(error = %format!("{e:#}"), records = batch.len(), "could not write flow records");
                    // What failed twice is given up; this batch gets a second try.
                    let given_up = first_try as u64;
                    self.unwritten = batch.split_off(first_try);
                    given_up
                }
            }
        } else {
            0
        };
        host.lend(|state| {
            state.stats.flows_ended += ended;
            state.stats.flows_evicted += evicted;
            state.stats.records_failed += failed;
            state.stats.ipfix_messages += sent;
            state.stats.ipfix_failed += unsent;
        });
    }

    /// The interim reports of live flows whose active timeout is up (each a delta since
    /// the flow's previous report); none without a collector.
    fn due_reports(&mut self, state: &Lent<'_>) -> Vec<FlowRecord> {
        let ipfix = state.in_force.policy.records.ipfix;
        if ipfix.collector.is_none() {
            self.reports.clear();
            return Vec::new();
        }
        let Ok(now_ns) = crate::flows::datapath_clock_ns() else {
            return Vec::new();
        };
        let due: Vec<Ended> = self
            .ends
            .live()
            .filter(|(key, entry)| {
                let id = (
                    crate::flows::socket_addr(key.client_addr, key.client_port),
                    crate::flows::socket_addr(key.server_addr, key.server_port),
                    key.protocol,
                );
                self.reports.due(
                    &id,
                    entry.first_seen_ns,
                    entry.last_seen_ns,
                    ipfix.active_timeout,
                )
            })
            .map(|(key, entry)| Ended {
                key: *key,
                entry: *entry,
                // Replaced below: a live flow's record has no end.
                reason: EndReason::Stopped,
            })
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let Ok(records) = to_records(state, &due, &self.neighbours) else {
            return Vec::new();
        };
        records
            .into_iter()
            .map(|mut record| {
                record.ended = None;
                self.reports.interim(&record, now_ns)
            })
            .collect()
    }

    /// Sends the interim reports of lasting flows.
    fn report_lasting(&mut self, reports: Vec<FlowRecord>, host: &impl Host) {
        if reports.is_empty() {
            return;
        }
        let ipfix = host.lend(|state| state.in_force.policy.records.ipfix);
        let (sent, unsent) = self.send_ipfix(&reports, &ipfix);
        host.lend(|state| {
            state.stats.ipfix_interim_reports += reports.len() as u64;
            state.stats.ipfix_messages += sent;
            state.stats.ipfix_failed += unsent;
        });
    }

    /// Sends `records` to the policy's collector, if it names one; (sent, failed).
    fn send_ipfix(&mut self, records: &[FlowRecord], ipfix: &IpfixPolicy) -> (u64, u64) {
        let Some(collector) = ipfix.collector else {
            self.ipfix = None;
            self.reports.clear();
            return (0, 0);
        };
        if records.is_empty() {
            return (0, 0);
        }
        let layout = Layout {
            enterprise: ipfix.enterprise,
            observation: self.observation,
        };
        if self
            .ipfix
            .as_ref()
            .is_none_or(|live| !live.serves(collector, layout))
        {
            match LiveExport::connect(collector, layout) {
                Ok(live) => {
                    info!(
                        %collector,
                        enterprise_number = ?ipfix.enterprise,
                        active_timeout = %humantime::format_duration(ipfix.active_timeout),
                        "exporting flows as IPFIX"
                    );
                    self.ipfix = Some(live);
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), %collector, "no IPFIX export");
                    return (0, 1);
                }
            }
        }
        let live = self.ipfix.as_mut().expect("connected above");
        match live.send(records) {
            Ok(messages) => (messages as u64, 0),
            Err(e) => {
                warn!(error = %e, %collector, "could not send IPFIX");
                (0, 1)
            }
        }
    }

    /// Closes the degradation intervals that are over: logged, kept for `/metrics`, stored.
    fn close_intervals(&mut self, host: &impl Host) {
        let reports: Vec<IntervalReport> = host.lend(|state| {
            let reports = state.degradation.close_due(
                jiff::Timestamp::now(),
                &state.in_force.policy,
                &state.in_force.period,
            );
            for report in &reports {
                state
                    .last_intervals
                    .insert(report.interval_seconds, report.clone());
            }
            reports
        });
        for report in &reports {
            for event in &report.events {
                warn!(
                    interval_seconds = report.interval_seconds,
                    event = %serde_json::to_string(event).unwrap_or_default(),
                    "bandwidth degradation"
                );
            }
        }
        if let Some(store) = &mut self.store
            && !reports.is_empty()
            && let Err(e) = store.insert_degradation(&reports)
        {
            warn!(error = %format!("{e:#}"), "could not write the degradation log");
        }
    }

    fn run_retention(&mut self, retention: &retention::Retention) {
        let Some(store) = &mut self.store else { return };
        match store.apply_retention(retention, jiff::Timestamp::now()) {
            Ok(report) if report.changed() => info!(
                cutoff = %report.cutoff,
                deleted = report.deleted,
                anonymised = report.anonymised,
                degradation_deleted = report.degradation_deleted,
                "retention: records past the retention period handled"
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %format!("{e:#}"), "the retention job failed"),
        }
    }
}

/// The ifIndex of the LAN and WAN interfaces and the LAN's MAC, in the daemon's namespace;
/// what cannot be found is 0 (IPFIX's "unknown").
fn observation_point(lan_interface: &str, wan_interface: Option<&str>) -> ObservationPoint {
    let ifindex = |name: &str| nix::net::if_::if_nametoindex(name).unwrap_or(0);
    let lan_ifindex = ifindex(lan_interface);
    let lan_mac = crate::netlink::Netlink::open()
        .and_then(|mut netlink| netlink.link(lan_ifindex))
        .ok()
        .and_then(|link| link.address)
        .unwrap_or_default();
    ObservationPoint {
        lan_ifindex,
        wan_ifindex: wan_interface.map_or(0, ifindex),
        lan_mac,
    }
}

/// Walks the table and returns the flows that ended, with their records (for the caller
/// to write, then [`release`]); they also go to the state's recently-ended list, so
/// `classifier flows` shows them a while longer.
fn take_ended(
    state: &mut Lent<'_>,
    ends: &mut FlowEnds,
    neighbours: &Neighbours,
) -> anyhow::Result<(Vec<Ended>, Vec<FlowRecord>)> {
    let rules = state.in_force.policy.records.end_rules;
    let walk = read_entries(&state.datapath.maps().flows);
    let complete = walk.complete;
    *state.flows_at_last_walk = walk.entries.len();
    account(state, ends, &walk);
    let ended = ends.sort(walk, crate::flows::datapath_clock_ns()?, &rules);
    let records = to_records(state, &ended, neighbours)?;
    if complete {
        // Names of flows that left the table some other way (evicted between two walks
        // before the daemon saw them) go too.
        state.names.retain(|key| ends.is_live(key));
    }
    for (flow, record) in ended.iter().zip(&records) {
        state.recent.push(flow.key, record.clone());
    }
    Ok((ended, records))
}

/// Takes recorded flows out of the flow table, and their names (`named`: the record had
/// one) out of the kernel's `NAMES`.
fn release(state: &mut Lent<'_>, ended: &[Ended], named: &[bool]) {
    let maps = state.datapath.maps_mut();
    for flow in ended.iter().filter(|f| f.reason != EndReason::Evicted) {
        // Gone already (evicted since the walk) is as good as removed.
        let _ = maps.flows.remove(&flow.key);
    }
    for (flow, named) in ended.iter().zip(named) {
        if *named || names::may_be_named(&flow.entry) {
            names::forget(&mut maps.names, &flow.key);
        }
    }
    for flow in ended {
        // Absent (no NAT, or nothing went out) is as good as removed.
        let _ = maps.public_sources.remove(&flow.key);
    }
}

/// Adds each flow's bytes since the last walk to the degradation log (not on the first
/// walk: a restarted daemon would count the whole life of every flow it took over).
fn account(state: &mut Lent<'_>, ends: &FlowEnds, walk: &crate::flows::TableWalk) {
    if ends.walks == 0 {
        return;
    }
    let deltas: Vec<FlowDelta> = walk
        .entries
        .iter()
        .map(|(key, entry)| {
            let client = crate::flows::socket_addr(key.client_addr, key.client_port).ip();
            FlowDelta::between(client, ends.previous(key), entry)
        })
        .filter(|d| d.upload + d.download + d.blocked + d.shaped > 0)
        .collect();
    state.degradation.add(&deltas);
}

fn to_records(
    state: &Lent<'_>,
    ended: &[Ended],
    neighbours: &Neighbours,
) -> anyhow::Result<Vec<FlowRecord>> {
    let clock = DatapathClock::now()?;
    let policy = &state.in_force.policy;
    let kept = Some(&state.datapath.maps().names);
    let public_sources = Some(&state.datapath.maps().public_sources);
    Ok(ended
        .iter()
        .map(|flow| {
            let flow_names = names::of_flow(state.names, kept, &flow.key, &flow.entry);
            let mut record =
                FlowRecord::from_entry(&flow.key, &flow.entry, &clock, policy, flow_names.as_ref());
            record.client_mac = neighbours.mac_of(record.client.ip());
            record.public_source = FlowRecord::public_source_from(public_sources, &flow.key);
            record.ended = Some(flow.reason);
            record
        })
        .collect())
}

/// Flows that ended in the last minute, which `classifier flows` still shows (with why
/// they ended): a download that just finished is what people look for.
#[derive(Debug, Default)]
pub struct RecentlyEnded {
    flows: VecDeque<(Instant, FlowKey, FlowRecord)>,
}

impl RecentlyEnded {
    const KEEP: Duration = Duration::from_secs(60);
    const MAX: usize = 10_000;

    pub fn push(&mut self, key: FlowKey, record: FlowRecord) {
        if self.flows.len() >= Self::MAX {
            self.flows.pop_front();
        }
        self.flows.push_back((Instant::now(), key, record));
    }

    /// The flows that ended within the last minute, oldest first.
    pub fn records(&mut self) -> impl Iterator<Item = &(Instant, FlowKey, FlowRecord)> {
        while self
            .flows
            .front()
            .is_some_and(|(at, _, _)| at.elapsed() > Self::KEEP)
        {
            self.flows.pop_front();
        }
        self.flows.iter()
    }
}
