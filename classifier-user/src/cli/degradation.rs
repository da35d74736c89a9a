//! `classifier degradation`: the bandwidth-degradation log, read from the flow store.

use clap::Args;

use crate::{degradation::IntervalReport, store};

#[derive(Debug, Args)]
#[command(after_help = "\
Each line is one interval: throughput each way (and use of the link, when [degradation]
gives its capacity), the largest categories, what rules withheld, the top streaming and
file-sharing clients, and events (a watched category above its share of the link, a shape
rule running at its rate).

Examples:
  classifier degradation                      # the newest 20 intervals of any length
  classifier degradation --interval 5m --last 12
  classifier degradation --events --since 2026-12-03T09:00:00Z
  classifier degradation --json | jq .events")]
pub struct DegradationArgs {
    /// Only intervals of this length (as `[degradation] intervals` writes them).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    interval: Option<std::time::Duration>,

    /// Only intervals that ended at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    since: Option<jiff::Timestamp>,

    /// How many of the newest intervals.
    #[arg(long, value_name = "N", default_value_t = 20)]
    last: usize,

    /// Only intervals with events.
    #[arg(long)]
    events: bool,

    /// One JSON object per interval.
    #[arg(long)]
    json: bool,

    /// The daemon's flow store (an SQLite file or a PostgreSQL connection string).
    #[arg(long, value_name = "FILE|POSTGRES", default_value = store::DEFAULT_STORE)]
    store: String,
}

pub fn execute(args: &DegradationArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        store::Store::exists(&args.store),
        "no flow store at {} (the daemon's `run --store`)",
        store::pg_connect::redact(&args.store)
    );
    let mut store = store::Store::open(&args.store)?;
    let limit = if args.events {
        usize::MAX >> 1
    } else {
        args.last
    };
    // Never what the retention job should have removed, whether or not it has run.
    let mut reports = store.degradation_retained(
        args.interval.map(|d| d.as_secs()),
        args.since,
        limit,
        jiff::Timestamp::now(),
    )?;
    if args.events {
        reports.retain(|r| !r.events.is_empty());
        let skip = reports.len().saturating_sub(args.last);
        reports.drain(..skip);
    }
    for report in &reports {
        if args.json {
            println!("{}", serde_json::to_string(report)?);
        } else {
            println!("{}", describe(report));
        }
    }
    if reports.is_empty() && !args.json {
        println!("no intervals recorded yet");
    }
    Ok(())
}

/// One line for people.
fn describe(report: &IntervalReport) -> String {
    let mbit = |bps: u64| bps as f64 / 1e6;
    let mut line = format!(
        "{} {:>4}s  down {:.1} Mbit/s up {:.1} Mbit/s",
        report.end,
        report.interval_seconds,
        mbit(report.download_bps),
        mbit(report.upload_bps)
    );
    if let Some(use_down) = report.download_utilisation {
        line += &format!(" ({:.0}% of the link down)", use_down * 100.0);
    }
    let categories: Vec<String> = report
        .by_category
        .iter()
        .take(3)
        .map(|s| format!("{} {:.0}%", s.name, s.share * 100.0))
        .collect();
    line += &format!("; {}", categories.join(", "));
    for withheld in &report.withheld {
        line += &format!(
            "; {} withheld {} B dropped, {} B throttled",
            withheld.rule, withheld.dropped_bytes, withheld.throttled_bytes
        );
    }
    if let Some(top) = report.top_clients.first() {
        line += &format!("; top {} {} {} B", top.client, top.category, top.bytes);
    }
    for event in &report.events {
        line += &format!(
            "; EVENT {}",
            serde_json::to_string(event).unwrap_or_default()
        );
    }
    line
}
