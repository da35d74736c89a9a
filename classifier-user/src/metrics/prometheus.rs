//! `/metrics` for Prometheus: traffic by category and group each way, what the policy
//! withheld, the last closed degradation intervals, the recorder's and the datapath's
//! counters, and the QUIC Initials shed under a flood. Grafana's dashboard for them is
//! docs/grafana-dashboard.json.
//!
//! Served by the daemon on `run --metrics ADDR` (default 127.0.0.1:9464, the port
//! Prometheus' exporter list gives this kind of exporter).

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::daemon::State;

/// Where `/metrics` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Traffic {
    category: String,
    group: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Withheld {
    category: String,
    group: String,
    how: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IntervalDirection {
    interval: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IntervalCategory {
    interval: String,
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Named {
    counter: &'static str,
}

/// The exposition text for the state now (OpenMetrics text format).
pub fn render(state: &State) -> anyhow::Result<String> {
    let mut registry = Registry::with_prefix("classifier");
    let policy = &state.in_force.policy;

    let traffic = Family::<Traffic, Counter>::default();
    let withheld = Family::<Withheld, Counter>::default();
    for (&(category, group), volume) in &state.degradation.totals {
        let category = policy.classes.category_name(category).to_owned();
        let group = policy.groups.name(group).to_owned();
        for (direction, bytes) in [("upload", volume.upload), ("download", volume.download)] {
            traffic
                .get_or_create(&Traffic {
                    category: category.clone(),
                    group: group.clone(),
                    direction,
                })
                .inc_by(bytes);
        }
        for (how, bytes) in [("dropped", volume.blocked), ("throttled", volume.shaped)] {
            withheld
                .get_or_create(&Withheld {
                    category: category.clone(),
                    group: group.clone(),
                    how,
                })
                .inc_by(bytes);
        }
    }
    registry.register(
        "traffic_bytes",
        "Layer-3 bytes through the gateway by category, group and direction",
        traffic,
    );
    registry.register(
        "withheld_bytes",
        "Bytes a block verdict dropped or a shape verdict queued",
        withheld,
    );

    let rate = Family::<IntervalDirection, Gauge>::default();
    let share = Family::<IntervalCategory, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (seconds, report) in &state.last_intervals {
        let interval = format!("{seconds}s");
        for (direction, bps) in [
            ("upload", report.upload_bps),
            ("download", report.download_bps),
        ] {
            rate.get_or_create(&IntervalDirection {
                interval: interval.clone(),
                direction,
            })
            .set(bps.min(i64::MAX as u64) as i64);
        }
        for category in &report.by_category {
            share
                .get_or_create(&IntervalCategory {
                    interval: interval.clone(),
                    category: category.name.clone(),
                })
                .set(category.share);
        }
    }
    registry.register(
        "interval_bits_per_second",
        "Throughput over the last closed degradation interval",
        rate,
    );
    registry.register(
        "interval_category_share",
        "A category's share of the link (or of the traffic) over the last closed interval",
        share,
    );

    let flows = Gauge::<i64>::default();
    flows.set(state.flows_at_last_walk as i64);
    registry.register(
        "flows",
        "Flows in the kernel's flow table at the last walk",
        flows,
    );
    let generation = Gauge::<i64>::default();
    generation.set(state.in_force.generation as i64);
    registry.register(
        "policy_generation",
        "Generation of the policy decisions in force",
        generation,
    );

    let recorded = Family::<Named, Counter>::default();
    let r = &state.recorded;
    for (counter, value) in [
        ("flows_ended", r.flows_ended),
        ("flows_evicted", r.flows_evicted),
        ("records_failed", r.records_failed),
        ("ipfix_messages", r.ipfix_messages),
        ("ipfix_failed", r.ipfix_failed),
    ] {
        recorded.get_or_create(&Named { counter }).inc_by(value);
    }
    registry.register("recorder", "What the flow recorder did", recorded);

    let shed = Counter::<u64>::default();
    shed.inc_by(state.learned.quic_initials_shed);
    registry.register(
        "quic_initials_shed",
        "QUIC Initials not decrypted because the daemon's queue for them was full (a flood); \
         their flows got the class of QUIC without a readable name",
        shed,
    );

    let datapath = Family::<Named, Counter>::default();
    let stats = super::read_stats(&state.datapath.stats_table()?)?;
    for stat in classifier_common::stats::Stat::ALL {
        datapath
            .get_or_create(&Named {
                counter: stat.name(),
            })
            .inc_by(stats.get(stat));
    }
    registry.register(
        "datapath",
        "The datapath's global counters, summed over CPUs",
        datapath,
    );

    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}
