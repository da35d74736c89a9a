//! `/metrics` for Prometheus: traffic by category and group each way, what the policy
//! withheld, the last closed degradation intervals, the recorder's and the datapath's
//! counters, the QUIC Initials shed under a flood, the build, the XDP mode and how the last
//! policy reload went. Grafana's dashboard for them is docs/grafana-dashboard.json.
//!
//! One meaning per metric name (a datapath counter is its own family, never a label
//! value beside counters of other things), base units (bytes, seconds), HELP and TYPE on
//! every family: what `promtool check metrics` asks, and a test runs it on the live
//! daemon's output. Served in the text format 0.0.4, which every Prometheus reads.
//!
//! Served by the daemon on `run --metrics ADDR` (default 127.0.0.1:9464, the port
//! Prometheus' exporter list gives this kind of exporter).

use anyhow::Context as _;
use prometheus::{
    Encoder as _, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, core::Collector,
};

use std::collections::{BTreeMap, HashMap};

use super::DatapathStats;
use crate::{
    degradation::{IntervalReport, Volume},
    in_force::LastReload,
    loader::XdpAttachMode,
    policy::Policy,
    recorder::RecorderStats,
};

/// What `/metrics` shows, taken from the daemon's state (under its lock) by the daemon:
/// the renderer reads nothing else.
pub struct Snapshot<'a> {
    /// The LAN interface the XDP program is on, and how.
    pub interface: &'a str,
    pub xdp_mode: XdpAttachMode,
    /// The generation of the decisions in force, and how the last reload went.
    pub generation: u32,
    pub last_reload: LastReload,
    /// The policy in force, for category and group names.
    pub policy: &'a Policy,
    /// Volume since start by (category id, group id).
    pub totals: &'a HashMap<(u16, u16), Volume>,
    /// The newest closed degradation interval of each length (seconds).
    pub last_intervals: &'a BTreeMap<u64, IntervalReport>,
    /// Flows in the table at the recorder's last walk, and what the recorder did.
    pub flows_at_last_walk: usize,
    pub recorded: RecorderStats,
    pub quic_initials_shed: u64,
    /// The datapath's global counters, summed over CPUs.
    pub datapath: DatapathStats,
}

/// Where `/metrics` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// Every metric name starts with this.
const PREFIX: &str = "classifier";

/// The Content-Type of what [`render`] returns.
pub fn content_type() -> String {
    TextEncoder::new().format_type().to_owned()
}

/// The exposition text for the state now.
pub fn render(state: &Snapshot<'_>) -> anyhow::Result<String> {
    let registry = Registry::new_custom(Some(PREFIX.to_owned()), None)?;
    register_build_and_daemon(&registry, state)?;
    register_traffic(&registry, state)?;
    register_intervals(&registry, state)?;
    register_recorder(&registry, state)?;
    register_datapath(&registry, state)?;
    let mut text = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut text)?;
    String::from_utf8(text).context("the exposition is not UTF-8")
}

fn register(registry: &Registry, metric: impl Collector + 'static) -> anyhow::Result<()> {
    registry
        .register(Box::new(metric))
        .context("registering a metric")
}

fn counter(registry: &Registry, name: &str, help: &str, value: u64) -> anyhow::Result<()> {
    let metric = IntCounter::new(name, help)?;
    metric.inc_by(value);
    register(registry, metric)
}

fn gauge(registry: &Registry, name: &str, help: &str, value: i64) -> anyhow::Result<()> {
    let metric = IntGauge::new(name, help)?;
    metric.set(value);
    register(registry, metric)
}

fn seconds(at: jiff::Timestamp) -> f64 {
    at.as_millisecond() as f64 / 1000.0
}

/// The build, the XDP mode, the policy in force and how its last reload went.
fn register_build_and_daemon(registry: &Registry, state: &Snapshot<'_>) -> anyhow::Result<()> {
    let build = IntGaugeVec::new(
        Opts::new(
            "build_info",
            "The classifier's version; always 1 (join on it for the version)",
        ),
        &["version"],
    )?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    register(registry, build)?;

    let xdp = IntGaugeVec::new(
        Opts::new(
            "xdp_mode",
            "How the XDP program is attached to the LAN interface: 1 for the mode in use \
             (native: in the driver; generic: after the kernel built the packet, slower)",
        ),
        &["interface", "mode"],
    )?;
    for mode in [XdpAttachMode::Native, XdpAttachMode::Generic] {
        xdp.with_label_values(&[state.interface, &mode.to_string()])
            .set(i64::from(state.xdp_mode == mode));
    }
    register(registry, xdp)?;

    gauge(
        registry,
        "policy_generation",
        "Generation of the policy decisions in force (it grows with every reload and \
         period change)",
        i64::from(state.generation),
    )?;
    let reload = &state.last_reload;
    gauge(
        registry,
        "policy_last_reload_successful",
        "1 if the last policy load or reload put the file in force, 0 if it was refused \
         (the policy before it stays in force)",
        i64::from(reload.succeeded),
    )?;
    for (name, help, at) in [
        (
            "policy_last_reload_timestamp_seconds",
            "When the policy was last loaded or reloaded, successfully or not (Unix time)",
            reload.at,
        ),
        (
            "policy_last_reload_success_timestamp_seconds",
            "When a policy was last put in force (Unix time)",
            reload.last_success,
        ),
    ] {
        let metric = Gauge::new(name, help)?;
        metric.set(seconds(at));
        register(registry, metric)?;
    }
    gauge(
        registry,
        "flows",
        "Flows in the kernel's flow table at the recorder's last walk",
        state.flows_at_last_walk as i64,
    )
}

/// Bytes by category and group each way, and what the policy withheld.
fn register_traffic(registry: &Registry, state: &Snapshot<'_>) -> anyhow::Result<()> {
    let policy = state.policy;
    let traffic = IntCounterVec::new(
        Opts::new(
            "traffic_bytes_total",
            "Layer-3 bytes through the gateway by category, group and direction",
        ),
        &["category", "group", "direction"],
    )?;
    let withheld = IntCounterVec::new(
        Opts::new(
            "withheld_bytes_total",
            "Bytes a block verdict dropped or a shape verdict queued, by category and group",
        ),
        &["category", "group", "how"],
    )?;
    for (&(category, group), volume) in state.totals {
        let category = policy.classes.category_name(category);
        let group = policy.groups.name(group);
        for (direction, bytes) in [("upload", volume.upload), ("download", volume.download)] {
            traffic
                .with_label_values(&[category, group, direction])
                .inc_by(bytes);
        }
        for (how, bytes) in [("dropped", volume.blocked), ("throttled", volume.shaped)] {
            withheld
                .with_label_values(&[category, group, how])
                .inc_by(bytes);
        }
    }
    register(registry, traffic)?;
    register(registry, withheld)
}

/// The last closed degradation interval of each length.
fn register_intervals(registry: &Registry, state: &Snapshot<'_>) -> anyhow::Result<()> {
    let rate = GaugeVec::new(
        Opts::new(
            "interval_throughput_bytes_per_second",
            "Layer-3 throughput each way over the last closed degradation interval",
        ),
        &["interval", "direction"],
    )?;
    let share = GaugeVec::new(
        Opts::new(
            "interval_category_share",
            "A category's share (0 to 1) of the link, or of the traffic when the link's \
             capacity is not configured, over the last closed degradation interval",
        ),
        &["interval", "category"],
    )?;
    for (seconds, report) in state.last_intervals {
        let interval = format!("{seconds}s");
        for (direction, bits) in [
            ("upload", report.upload_bps),
            ("download", report.download_bps),
        ] {
            rate.with_label_values(&[interval.as_str(), direction])
                .set(bits as f64 / 8.0);
        }
        for category in &report.by_category {
            share
                .with_label_values(&[interval.as_str(), category.name.as_str()])
                .set(category.share);
        }
    }
    register(registry, rate)?;
    register(registry, share)
}

/// What the recorder did: each its own counter.
fn register_recorder(registry: &Registry, state: &Snapshot<'_>) -> anyhow::Result<()> {
    let r = &state.recorded;
    for (name, help, value) in [
        (
            "flows_ended_total",
            "Flows that ended and were recorded (or counted, without a store), evicted ones \
             included",
            r.flows_ended,
        ),
        (
            "flows_evicted_total",
            "Flows the kernel's LRU table evicted before the daemon saw them end (recorded \
             with the counters of its last walk)",
            r.flows_evicted,
        ),
        (
            "record_write_failures_total",
            "Flow records given up after the store refused them twice",
            r.records_failed,
        ),
        (
            "ipfix_messages_sent_total",
            "IPFIX messages sent to the collector",
            r.ipfix_messages,
        ),
        (
            "ipfix_send_failures_total",
            "IPFIX sends the network refused (their records are lost to the collector)",
            r.ipfix_failed,
        ),
        (
            "ipfix_interim_reports_total",
            "Reports of flows still live, sent every active timeout",
            r.ipfix_interim_reports,
        ),
        (
            "quic_initials_shed_total",
            "QUIC Initials not decrypted because the daemon's queue for them was full (a \
             flood); their flows got the class of QUIC without a readable name",
            state.quic_initials_shed,
        ),
    ] {
        counter(registry, name, help, value)?;
    }
    Ok(())
}

/// The datapath's global counters, summed over CPUs: one family each.
fn register_datapath(registry: &Registry, state: &Snapshot<'_>) -> anyhow::Result<()> {
    let stats = &state.datapath;
    for stat in classifier_common::stats::Stat::ALL {
        counter(
            registry,
            &datapath_metric(stat),
            stat.help(),
            stats.get(stat),
        )?;
    }
    Ok(())
}

/// `datapath_<counter>_total`: the name of a datapath counter's family (after the prefix).
pub fn datapath_metric(stat: classifier_common::stats::Stat) -> String {
    format!("datapath_{}_total", stat.name())
}
