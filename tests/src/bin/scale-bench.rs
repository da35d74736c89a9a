//! Scale: the kernel memory the flow table takes per tracked flow, at the shipped size
//! (256 Ki flows) and at 1 Mi flows; and the daemon's cost of reading the table, which it
//! does every 2 s, per flow and as a share of one CPU at several table sizes, in batches
//! (BPF_MAP_LOOKUP_BATCH) and key by key, in the same run.
//!
//! Memory is the kernel's own accounting of each map (`memlock` in the map's fdinfo): the
//! flow table is an LRU hash, preallocated, so its memory is taken when it is made, full
//! or empty. The walk is the recorder's (`flows::read_entries`) over a table filled with
//! distinct flows from user space, timed with the process's CPU time (getrusage), so that
//! other load on the machine does not count.
//!
//! Run with `cargo xtask bench [--quick]`; writes target/bench/scale.json.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::PathBuf,
};

use anyhow::Context as _;
use aya::{
    EbpfLoader,
    maps::{HashMap, IterableMap as _, MapData},
};
use bench_results::scale::{Memory, Results, Walk};
use clap::Parser;
use classifier_common::{
    flow::{FlowEntry, FlowKey, ip_proto, ipv4_mapped},
    maps,
};
use classifier_user::{flows, loader::EBPF_OBJECT};

#[derive(Parser)]
struct Args {
    /// Smaller tables.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/scale.json")]
    out: PathBuf,
}

/// How often the recorder walks the flow table.
const WALK_PERIOD_SECONDS: f64 = 2.0;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let capacities = [maps::FLOWS_MAX_ENTRIES, 1 << 20];
    let memory = capacities
        .iter()
        .map(|capacity| flow_table_memory(*capacity))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sizes: &[usize] = if args.quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, maps::FLOWS_MAX_ENTRIES]
    };
    let walks = walks(sizes)?;
    let results = Results {
        key_bytes: size_of::<FlowKey>(),
        entry_bytes: size_of::<FlowEntry>(),
        memory,
        walks,
    };
    print(&results);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)?;
    println!("written to {}", args.out.display());
    Ok(())
}

/// The object loaded with a flow table of `capacity` entries; the table's memlock.
fn flow_table_memory(capacity: usize) -> anyhow::Result<Memory> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(maps::FLOWS.name(), capacity as u32)
        .load(EBPF_OBJECT)
        .context("loading the BPF object")?;
    let table: HashMap<MapData, FlowKey, FlowEntry> =
        classifier_user::bpf_maps::take(&mut ebpf, maps::FLOWS)?;
    let bytes = memlock(table.map().fd().as_fd().as_raw_fd())?;
    Ok(Memory {
        capacity,
        bytes,
        bytes_per_flow: bytes as f64 / capacity as f64,
    })
}

/// The kernel's memory accounting of the map behind `fd`.
fn memlock(fd: i32) -> anyhow::Result<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    info.lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .and_then(|value| value.trim().parse().ok())
        .context("no memlock in the map's fdinfo")
}

/// For each size: a fresh table filled with that many flows, walked as the recorder does.
fn walks(sizes: &[usize]) -> anyhow::Result<Vec<Walk>> {
    let mut ebpf = EbpfLoader::new()
        .load(EBPF_OBJECT)
        .context("loading the BPF object")?;
    let mut table: HashMap<MapData, FlowKey, FlowEntry> =
        classifier_user::bpf_maps::take(&mut ebpf, maps::FLOWS)?;
    let mut filled = 0;
    let mut results = Vec::new();
    for &size in sizes {
        for index in filled..size {
            table.insert(flow_key(index), FlowEntry::default(), 0)?;
        }
        filled = size;
        let by_key = timed(size, || flows::read_entries_by_key(&table))?;
        let batched = timed(size, || flows::read_entries(&table))?;
        results.push(Walk {
            flows: size,
            cpu_seconds: batched,
            ns_per_flow: batched * 1e9 / size as f64,
            share_of_one_cpu: batched / WALK_PERIOD_SECONDS,
            by_key_cpu_seconds: by_key,
            by_key_over_batched: by_key / batched,
        });
    }
    Ok(results)
}

/// CPU seconds `walk` takes; it must find all `size` flows.
fn timed(size: usize, walk: impl FnOnce() -> flows::TableWalk) -> anyhow::Result<f64> {
    let started = cpu_seconds();
    let found = walk();
    let cpu = cpu_seconds() - started;
    anyhow::ensure!(
        found.complete && found.entries.len() == size,
        "the walk found {} of {size} flows",
        found.entries.len()
    );
    Ok(cpu)
}

/// A distinct client port and address per index.
fn flow_key(index: usize) -> FlowKey {
    let client = [10, (index >> 16) as u8, (index >> 8) as u8, index as u8];
    FlowKey {
        client_addr: ipv4_mapped(client),
        server_addr: ipv4_mapped([203, 0, 113, 10]),
        client_port: 40_000,
        server_port: 443,
        protocol: ip_proto::TCP,
        _pad: [0; 3],
    }
}

/// User and system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage works");
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    seconds(usage.user_time()) + seconds(usage.system_time())
}

fn print(results: &Results) {
    println!(
        "flow table: {}-byte keys, {}-byte entries",
        results.key_bytes, results.entry_bytes
    );
    for m in &results.memory {
        println!(
            "  {:>9} flows: {:>6.1} MiB, {:.0} bytes per flow",
            m.capacity,
            m.bytes as f64 / (1 << 20) as f64,
            m.bytes_per_flow
        );
    }
    for w in &results.walks {
        println!(
            "  walk of {:>7} flows: {:.3} s CPU, {:.0} ns per flow, {:.1}% of one CPU every 2 s; \
             key by key {:.1}x that",
            w.flows,
            w.cpu_seconds,
            w.ns_per_flow,
            w.share_of_one_cpu * 100.0,
            w.by_key_over_batched
        );
    }
}
