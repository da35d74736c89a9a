//! Flow store write rate: how many ended flows a second the daemon's batched inserts
//! (one transaction per 2 s walk) write to a real SQLite file, as a ratio to the 10,000
//! flows a second the store must keep up with, and to one transaction per flow measured in
//! the same run (what batching buys).
//!
//! Run with `cargo xtask bench [--quick]`; writes target/bench/store.json.

use std::{path::PathBuf, time::Instant};

use bench_results::store::Results;
use clap::Parser;
use classifier_tests::samples::youtube_flow;
use classifier_user::{
    flows::{Counters, FlowRecord},
    store::FlowStore,
};

#[derive(Parser)]
struct Args {
    /// Fewer flows.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/store.json")]
    out: PathBuf,
}

/// The rate the issue asks the store to keep up with.
const TARGET_FLOWS_PER_SECOND: f64 = 10_000.0;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (batches, singles) = if args.quick { (10, 500) } else { (50, 2000) };
    // At 10k flows/s a 2 s walk hands the store 20k flows.
    let batch = 20_000;
    let dir = tempfile_dir()?;
    let mut store = FlowStore::open(&dir.join("bench.sqlite"))?;

    let flows: Vec<FlowRecord> = (0..batch).map(record).collect();
    let started = Instant::now();
    for _ in 0..batches {
        store.insert(&flows)?;
    }
    let batched = (batches * batch) as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    for flow in flows.iter().take(singles) {
        store.insert(std::slice::from_ref(flow))?;
    }
    let single = singles as f64 / started.elapsed().as_secs_f64();

    let results = Results {
        batch,
        batched_flows_per_second: batched,
        one_per_transaction_flows_per_second: single,
        batched_vs_target: batched / TARGET_FLOWS_PER_SECOND,
        batched_vs_one_per_transaction: batched / single,
    };
    println!(
        "flow store: {:.0} flows/s in batches of {batch} ({:.1}x the 10k/s target); one \
         transaction per flow {:.0} flows/s (batching {:.0}x faster)",
        results.batched_flows_per_second,
        results.batched_vs_target,
        results.one_per_transaction_flows_per_second,
        results.batched_vs_one_per_transaction
    );
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)?;
    println!("results in {}", args.out.display());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("classifier-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A realistic record: a TLS flow with a name, an address from a /16 of clients.
fn record(i: usize) -> FlowRecord {
    let first_seen = jiff::Timestamp::from_second(1_764_000_000 + i as i64).expect("in range");
    let client = format!(
        "10.{}.{}.{}:{}",
        20,
        (i >> 8) & 0xff,
        i & 0xff,
        40000 + (i % 20000)
    )
    .parse()
    .expect("an address");
    FlowRecord {
        client_mac: Some(format!(
            "02:00:00:00:{:02x}:{:02x}",
            (i >> 8) & 0xff,
            i & 0xff
        )),
        upload: Counters {
            packets: 12,
            bytes: 2400,
        },
        download: Counters {
            packets: 40,
            bytes: 52_000,
        },
        last_seen: first_seen + jiff::SignedDuration::from_secs(20),
        name: Some(format!("video-{}.example.com", i % 1000)),
        shaped: Counters {
            packets: 30,
            bytes: 40_000,
        },
        ..youtube_flow(
            client,
            "203.0.113.10:443".parse().expect("an address"),
            first_seen,
        )
    }
}
