//! Datapath cost under BPF_PROG_TEST_RUN: nanoseconds per packet for each kind of packet,
//! reported as a ratio to an empty XDP program measured in the same round. The machines are
//! shared and noisy, so rounds interleave baseline and cases and the median ratio is kept.
//!
//! Two kinds of cases:
//! - steady ones (an established flow, a SYN, ...) run `repeat` times per measurement;
//! - first-payload ones (a ClientHello, an HTTP request, a BitTorrent handshake) change the
//!   flow's state, so each sample is a fresh flow: its handshake runs unmeasured, then each
//!   measured frame runs once, as does the empty program on the same frame (the kernel's
//!   timer around a single run adds the same overhead to both).
//!
//! The ClientHello is also measured with 10 … 1,000,000 domains loaded from a list file,
//! through the same policy compiler the daemon uses.
//!
//! The per-client quotas are lifted (the benchmark is one client opening flows far faster
//! than any real one), and the checksums verified as on a NIC.
//!
//! The build of the BPF programs is the one `CLASSIFIER_DATAPATH` names (default `auto`);
//! `cargo xtask bench` measures both, in turn.
//!
//! Run with `cargo xtask bench [--quick]`; writes target/bench/datapath.json (and
//! datapath-legacy.json for the legacy build). `--only CASE
//! --flows N` runs one first-payload case, for `perf record`.

use std::path::PathBuf;

use aya::maps::{MapData, RingBuf};
use bench_results::datapath::{CaseResult, MapMemory, Report};
use clap::Parser;
use classifier_common::testing::{Hello, chrome_like};
use classifier_common::{maps, programs};
use classifier_tests::{
    frames::{self, Way},
    run::{run_frame, xdp_ns_per_run},
};
use classifier_user::{loader::Datapath, policy::Policy, tables};

#[derive(Parser)]
struct Args {
    /// Fewer rounds and repetitions.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/datapath.json")]
    out: PathBuf,
    /// Only the first-payload cases whose name contains this (for profiling one case, e.g.
    /// under `perf record`); skips the steady and list-size cases.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Fresh flows per first-payload case (default 2000, 300 with --quick).
    #[arg(long, value_name = "N")]
    flows: Option<usize>,
    /// With --only: segment checksums not verified (what that check costs).
    #[arg(long, requires = "only")]
    no_checksums: bool,
}

/// The maps that hold the state of reading flows' first bytes, and the flow table.
const STATE_MAPS: [(&str, &str); 12] = [
    (maps::FLOWS.name(), "flow table (for scale)"),
    (maps::NAMES.name(), "flows' names, kept for the next daemon"),
    (maps::NAME_SLOT.name(), "per CPU: a name being kept"),
    (
        maps::REASM.name(),
        "stream buffers of flows whose first bytes span segments",
    ),
    (
        maps::SCRATCH.name(),
        "per CPU: a first segment's stream buffer",
    ),
    (
        maps::SEGMENT.name(),
        "per CPU: a segment over held bytes, to compare",
    ),
    (
        maps::DEFRAG.name(),
        "per CPU: a hello joined from TLS records",
    ),
    (
        maps::SOURCES.name(),
        "per client: quotas of flows, buffers, QUIC Initials",
    ),
    (
        maps::FRAGMENTS.name(),
        "first IP fragments: their flow, for later ones",
    ),
    (maps::LOOPS.name(), "per CPU: bpf_loop state"),
    (maps::JOBS.name(), "per CPU: the hand-over between programs"),
    (
        maps::SCRATCH_KEYS.name(),
        "per CPU: fragment key, TLS record plan",
    ),
];

/// The name every ClientHello carries; listed in every policy the benchmark loads.
const NAME: &str = "www.youtube.com";

/// A first-payload case: the client frames of a fresh flow, measured, after its handshake.
struct FreshCase {
    name: &'static str,
    server_port: u16,
    /// A UDP flow: its first datagram is the payload (no handshake).
    udp: bool,
    /// The measured frames of the flow from `port` (TCP: the stream starts at FIRST_SEQ).
    frames: Box<dyn Fn(u16) -> Vec<Vec<u8>>>,
    /// Stream bytes the frames carry (TCP): the client's next segment starts after them.
    stream_len: usize,
    /// The client goes on after the measured frames (unmeasured), as a real one does: its
    /// next segment ends the watch for a second version of the hello and frees the flow's
    /// reassembly buffer. Without it, buffers pile up until the table evicts.
    goes_on: bool,
    /// Flows of the case run unmeasured first (to fill the reassembly table).
    warm_up: usize,
}

impl FreshCase {
    /// A TCP case: `stream` cut into segments of at most `mss` bytes, in order.
    fn in_order(name: &'static str, server_port: u16, stream: Vec<u8>, mss: usize) -> Self {
        Self::cut(name, server_port, stream, move |stream| pieces(stream, mss))
    }

    /// A TCP case: `stream` cut by `cut` into (stream offset, bytes) pieces, sent in the
    /// order given.
    fn cut(
        name: &'static str,
        server_port: u16,
        stream: Vec<u8>,
        cut: impl Fn(&[u8]) -> Vec<(usize, Vec<u8>)> + 'static,
    ) -> Self {
        let stream_len = stream.len();
        Self {
            name,
            server_port,
            udp: false,
            frames: Box::new(move |port| {
                cut(&stream)
                    .iter()
                    .map(|(offset, piece)| {
                        let seq = frames::FIRST_SEQ.wrapping_add(*offset as u32);
                        frames::tcp4_seq(Way::Up, port, server_port, "PA", seq, piece)
                    })
                    .collect()
            }),
            stream_len,
            goes_on: true,
            warm_up: 0,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (rounds, repeat) = if args.quick {
        (5, 200_000)
    } else {
        (15, 1_000_000)
    };
    let mut datapath = Datapath::load()?;
    let build = datapath.build();
    lift_quotas(&mut datapath)?;
    let mut events = datapath.take_events()?;
    let memory = map_memory()?;
    let fresh_samples = args.flows.unwrap_or(if args.quick { 300 } else { 2000 });
    if let Some(only) = &args.only {
        if args.no_checksums {
            datapath.set_checksums(classifier_common::config::checksums::OFF)?;
        }
        return profile_fresh_flows(&mut datapath, &mut events, only, fresh_samples);
    }

    let established = frames::tcp4(Way::Up, 40000, 443, "PA", &[0x17; 1400]);
    // Make the flow exist, so the measured runs take the established-flow path.
    run_frame(&mut datapath, Way::Up, &established);
    let cases: Vec<(&'static str, Vec<u8>)> = vec![
        ("established TCP flow, 1400-byte segment", established),
        (
            "TCP SYN (flow already in table)",
            frames::tcp4(Way::Up, 40000, 443, "S", b""),
        ),
        (
            "IPv6 UDP 1200 bytes",
            frames::udp6(Way::Up, 50000, 443, &[0xc3; 1200]),
        ),
        ("ARP (not IP)", frames::arp()),
    ];
    let baseline_frame = frames::tcp4(Way::Up, 1, 2, "S", b"");

    let mut floor = Floor::load()?;
    floor.run(&cases[0].1, 1); // its flow exists, as ours does
    let mut baseline = Vec::new();
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); cases.len()];
    let mut floor_samples = Vec::new();
    let mut over_floor = Vec::new();
    for _ in 0..rounds {
        for (index, (_, frame)) in cases.iter().enumerate() {
            let empty = xdp_ns_per_run(&mut datapath, programs::EMPTY_XDP, &baseline_frame, repeat);
            let cost = xdp_ns_per_run(&mut datapath, programs::LAN_INGRESS, frame, repeat);
            baseline.push(empty);
            samples[index].push((cost, cost / empty));
            if index == 0 {
                // The floor on the same frame in the same round, and ours over it.
                let least = floor.run(frame, repeat);
                floor_samples.push((least, least / empty));
                over_floor.push((cost, cost / least));
            }
        }
    }

    let fresh_cases = fresh_flow_cases();
    let mut next_port = 10_000u16;
    let mut fresh_flow_cases = Vec::new();
    for case in &fresh_cases {
        let samples = fresh_flow_samples(
            &mut datapath,
            &mut events,
            case,
            fresh_samples,
            &mut next_port,
        );
        fresh_flow_cases.push(summarize(case.name, &samples));
    }
    drop(datapath);

    let sizes: &[usize] = if args.quick {
        &[10, 1_000_000]
    } else {
        &[10, 10_000, 100_000, 1_000_000]
    };
    let mut list_size_cases = Vec::new();
    for &size in sizes {
        eprintln!("loading {size} domains ...");
        let mut datapath = datapath_with_domains(size)?;
        let mut events = datapath.take_events()?;
        let case = &fresh_cases[0];
        let mut port = 10_000u16;
        let samples =
            fresh_flow_samples(&mut datapath, &mut events, case, fresh_samples, &mut port);
        list_size_cases.push(summarize(domains_label(size), &samples));
    }

    let report = Report {
        kernel: kernel_release(),
        build: build.to_string(),
        rounds,
        repeat,
        empty_xdp_median_ns: median(&baseline),
        cases: cases
            .iter()
            .zip(&samples)
            .map(|((name, _), samples)| summarize(name, samples))
            .collect(),
        fresh_flow_samples: fresh_samples,
        fresh_flow_cases,
        list_size_cases,
        memory,
        floor: summarize(
            "floor: minimal flow-counting XDP program, same frame",
            &floor_samples,
        ),
        established_over_floor: summarize("established TCP flow ÷ the floor", &over_floor),
    };
    print_report(&report);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("\nwritten to {}", args.out.display());
    Ok(())
}

fn fresh_flow_cases() -> Vec<FreshCase> {
    let mut bt_handshake = b"\x13BitTorrent protocol".to_vec();
    bt_handshake.extend_from_slice(&[0; 8]); // reserved
    bt_handshake.extend_from_slice(&[0xab; 20]); // info hash
    bt_handshake.extend_from_slice(b"-TR3000-abcdefghijkl"); // peer id
    let openssl = Hello::new().sni(NAME).bytes();
    let chrome = chrome_like(NAME);
    let quic = quic_initial();
    let mut never_goes_on = FreshCase::in_order(
        "ClientHello, two segments, client silent after (table full)",
        443,
        chrome.clone(),
        1448,
    );
    never_goes_on.goes_on = false;
    never_goes_on.warm_up = classifier_common::maps::REASSEMBLY_MAX_ENTRIES;
    vec![
        FreshCase::in_order(
            "ClientHello, one segment (OpenSSL-sized)",
            443,
            openssl.clone(),
            1448,
        ),
        FreshCase::in_order(
            "ClientHello, two segments (Chrome ML-KEM, both)",
            443,
            chrome.clone(),
            1448,
        ),
        FreshCase::in_order(
            "HTTP request, one segment",
            80,
            format!(
                "GET / HTTP/1.1\r\nHost: {NAME}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
            )
            .into_bytes(),
            1448,
        ),
        FreshCase::in_order("BitTorrent handshake", 51413, bt_handshake, 1448),
        FreshCase {
            name: "QUIC v1 Initial (to the daemon)",
            server_port: 443,
            udp: true,
            frames: Box::new(move |port| vec![frames::udp4(Way::Up, port, 443, &quic)]),
            stream_len: 0,
            goes_on: false,
            warm_up: 0,
        },
        // What evasion tools send (zapret, GoodbyeDPI, byedpi): the cost of reading through.
        FreshCase::cut(
            "ClientHello split after byte 1 (both)",
            443,
            openssl.clone(),
            |hello| vec![(0, hello[..1].to_vec()), (1, hello[1..].to_vec())],
        ),
        FreshCase::cut(
            "ClientHello, two segments in reverse order (both)",
            443,
            chrome.clone(),
            |hello| {
                let mut pieces = pieces(hello, 1448);
                pieces.reverse();
                pieces
            },
        ),
        FreshCase::in_order(
            "ClientHello in 4 TLS records, one segment",
            443,
            classifier_common::testing::split_records(&openssl, &[30, 60, 90]),
            1448,
        ),
        decoy_case(&openssl),
        never_goes_on,
    ]
}

/// `stream` cut into segments of at most `mss` bytes, each with its stream offset.
fn pieces(stream: &[u8], mss: usize) -> Vec<(usize, Vec<u8>)> {
    stream
        .chunks(mss)
        .enumerate()
        .map(|(i, chunk)| (i * mss, chunk.to_vec()))
        .collect()
}

/// A fake ClientHello for another name with a wrong checksum, then the real one at the
/// same sequence number (zapret's `fake` with `badsum`): both frames measured.
fn decoy_case(real: &[u8]) -> FreshCase {
    let real = real.to_vec();
    let fake = Hello::new().sni("www.bbc.co.uk").bytes();
    FreshCase {
        name: "decoy with a bad checksum, then the ClientHello",
        server_port: 443,
        udp: false,
        stream_len: real.len(),
        frames: Box::new(move |port| {
            let mut decoy = frames::tcp4_seq(Way::Up, port, 443, "PA", frames::FIRST_SEQ, &fake);
            let checksum_at = 14 + 20 + 16;
            decoy[checksum_at] ^= 0x5a;
            let hello = frames::tcp4_seq(Way::Up, port, 443, "PA", frames::FIRST_SEQ, &real);
            vec![decoy, hello]
        }),
        goes_on: true,
        warm_up: 0,
    }
}

/// A Chrome-sized client Initial: the first 1100 bytes of a ClientHello in a padded,
/// protected QUIC v1 packet, as the datapath sees a browser's first datagram.
fn quic_initial() -> Vec<u8> {
    use classifier_user::quic::initial::{QuicVersion, testing::client_initial};
    let record = chrome_like(NAME);
    let hello = classifier_common::testing::handshake_of(&record);
    client_initial(QuicVersion::V1, &[7; 8], 0, 0, &hello[..1100])
}

/// Only the first-payload cases named by `only`, printed (nothing written).
fn profile_fresh_flows(
    datapath: &mut Datapath,
    events: &mut RingBuf<MapData>,
    only: &str,
    flows: usize,
) -> anyhow::Result<()> {
    let mut next_port = 10_000u16;
    let mut matched = 0;
    for case in fresh_flow_cases()
        .iter()
        .filter(|case| case.name.contains(only))
    {
        let samples = fresh_flow_samples(datapath, events, case, flows, &mut next_port);
        print_cases(&[summarize(case.name, &samples)]);
        matched += 1;
    }
    anyhow::ensure!(
        matched > 0,
        "no first-payload case's name contains {only:?}"
    );
    let stats = classifier_user::metrics::read_stats(&datapath.maps().stats)?;
    for stat in classifier_common::stats::Stat::ALL {
        let value = stats.get(stat);
        if value != 0 {
            eprintln!("{:<28} {value}", stat.name());
        }
    }
    Ok(())
}

/// Per fresh flow: (ns of the case's frames, ratio to the empty program on them).
fn fresh_flow_samples(
    datapath: &mut Datapath,
    events: &mut RingBuf<MapData>,
    case: &FreshCase,
    samples: usize,
    next_port: &mut u16,
) -> Vec<(f64, f64)> {
    let mut all: Vec<(f64, f64)> = (0..case.warm_up + samples)
        .map(|_| {
            let port = *next_port;
            *next_port = next_port.wrapping_add(1).max(10_000);
            if !case.udp {
                run_frame(
                    datapath,
                    Way::Up,
                    &frames::tcp4(Way::Up, port, case.server_port, "S", b""),
                );
                run_frame(
                    datapath,
                    Way::Up,
                    &frames::tcp4(Way::Up, port, case.server_port, "A", b""),
                );
            }
            let mut cost = 0.0;
            let mut empty = 0.0;
            for frame in (case.frames)(port) {
                cost += xdp_ns_per_run(datapath, programs::LAN_INGRESS, &frame, 1);
                empty += xdp_ns_per_run(datapath, programs::EMPTY_XDP, &frame, 1);
            }
            if case.goes_on {
                let next_seq = frames::FIRST_SEQ.wrapping_add(case.stream_len as u32);
                let next = frames::tcp4_seq(
                    Way::Up,
                    port,
                    case.server_port,
                    "PA",
                    next_seq,
                    &[0x14, 3, 3, 0, 1, 1],
                );
                run_frame(datapath, Way::Up, &next);
            }
            // The daemon's part: it keeps up with the ring buffer. (A flow's name wakes no
            // reader; a QUIC Initial does, and that wake-up is measured with its program.)
            while events.next().is_some() {}
            (cost, cost / empty)
        })
        .collect();
    all.split_off(case.warm_up)
}

/// The datapath with a policy of `count` domains (from a list file) installed.
fn datapath_with_domains(count: usize) -> anyhow::Result<Datapath> {
    let dir = std::env::temp_dir().join(format!("classifier-bench-{}-{count}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut list = String::with_capacity(count * 24);
    for i in 0..count.saturating_sub(1) {
        list.push_str(&format!("host{i}.site{}.example\n", i % 9973));
    }
    list.push_str("youtube.com\n");
    std::fs::write(dir.join("domains"), list)?;
    let text = format!("[categories.bench]\nlists = [\"{}\"]\n", dir.display());
    let policy = Policy::parse(&text, &dir.join("bench.toml"), &dir);
    std::fs::remove_dir_all(&dir)?;
    let policy = policy?;
    anyhow::ensure!(
        policy.classes.domains.len() == count,
        "{} domains compiled, {count} written",
        policy.classes.domains.len()
    );
    let mut datapath = Datapath::load_sized(tables::domain_capacity(count))?;
    datapath.install_tables(&policy.classes, &policy.datapath)?;
    lift_quotas(&mut datapath)?;
    Ok(datapath)
}

/// The kernel's accounting of this process's maps named in [`STATE_MAPS`] (from the
/// fdinfo of each map descriptor: `map_id` and `memlock`).
fn map_memory() -> anyhow::Result<Vec<MapMemory>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let fd = entry?.file_name();
        let is_map = std::fs::read_link(format!("/proc/self/fd/{}", fd.to_string_lossy()))
            .is_ok_and(|target| target.to_string_lossy() == "anon_inode:bpf-map");
        if !is_map {
            continue;
        }
        let Ok(info) =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.to_string_lossy()))
        else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().parse::<u64>().ok())
        };
        let (Some(id), Some(bytes)) = (field("map_id:"), field("memlock:")) else {
            continue;
        };
        let name = aya::maps::MapInfo::from_id(id as u32)?
            .name_as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some((_, what)) = STATE_MAPS.iter().find(|(map, _)| *map == name)
            && !found.iter().any(|m: &MapMemory| m.map == name)
        {
            found.push(MapMemory {
                map: name,
                what: what.to_string(),
                bytes,
            });
        }
    }
    found.sort_by_key(|m| STATE_MAPS.iter().position(|(map, _)| *map == m.map));
    Ok(found)
}

/// The per-client quotas as large as they go: the benchmark opens thousands of flows a
/// second from one address, a flood the default quotas would refuse after a few thousand
/// (and the refusal is not what is measured). The quotas are still looked up and drawn on.
fn lift_quotas(datapath: &mut Datapath) -> anyhow::Result<()> {
    datapath.update_config(|config| {
        config.flow_rate = u32::MAX;
        config.flow_burst = u32::MAX;
        config.reassembly_rate = u16::MAX;
        config.reassembly_burst = u16::MAX;
        config.quic_rate = u16::MAX;
        config.quic_burst = u16::MAX;
    })
}

fn domains_label(count: usize) -> &'static str {
    match count {
        10 => "ClientHello with 10 domains",
        10_000 => "ClientHello with 10,000 domains",
        100_000 => "ClientHello with 100,000 domains",
        1_000_000 => "ClientHello with 1,000,000 domains",
        _ => "ClientHello with N domains",
    }
}

fn summarize(case: &'static str, samples: &[(f64, f64)]) -> CaseResult {
    let ns: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let ratios: Vec<f64> = samples.iter().map(|s| s.1).collect();
    CaseResult {
        case: case.to_string(),
        median_ns: median(&ns),
        min_ns: ns.iter().copied().fold(f64::INFINITY, f64::min),
        max_ns: ns.iter().copied().fold(0.0, f64::max),
        median_ratio_to_empty: median(&ratios),
        min_ratio: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        max_ratio: ratios.iter().copied().fold(0.0, f64::max),
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn print_report(report: &Report) {
    println!(
        "BPF_PROG_TEST_RUN of the {} build, kernel {}, {} rounds x {} runs; empty XDP \
         program: {:.1} ns",
        report.build, report.kernel, report.rounds, report.repeat, report.empty_xdp_median_ns
    );
    println!(
        "{:<50} {:>10} {:>16} {:>18}",
        "case", "median ns", "ratio to empty", "ratio min..max"
    );
    print_cases(&report.cases);
    print_cases(std::slice::from_ref(&report.floor));
    println!(
        "{:<50} median {:.2}× ({:.2}..{:.2})",
        report.established_over_floor.case,
        report.established_over_floor.median_ratio_to_empty,
        report.established_over_floor.min_ratio,
        report.established_over_floor.max_ratio
    );
    println!(
        "\nFirst payload of a fresh flow ({} flows each; frames run once, ratio to the empty \
         program on the same frames):",
        report.fresh_flow_samples
    );
    print_cases(&report.fresh_flow_cases);
    println!("\nList size (one-segment ClientHello, fresh flows):");
    print_cases(&report.list_size_cases);
    println!("\nMemory of the classification state (the kernel's accounting):");
    for map in &report.memory {
        println!("{:<14} {:>12} bytes  {}", map.map, map.bytes, map.what);
    }
}

fn print_cases(cases: &[CaseResult]) {
    for case in cases {
        println!(
            "{:<50} {:>10.1} {:>16.2} {:>9.2}..{:<8.2}",
            case.case, case.median_ns, case.median_ratio_to_empty, case.min_ratio, case.max_ratio
        );
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The floor program (`floor_flow_count`), loaded on its own.
struct Floor {
    ebpf: aya::Ebpf,
}

impl Floor {
    fn load() -> anyhow::Result<Self> {
        let mut ebpf = aya::Ebpf::load(classifier_lab::BENCH_FLOOR_OBJECT)?;
        let program: &mut aya::programs::Xdp =
            ebpf.program_mut("floor_flow_count").unwrap().try_into()?;
        program.load()?;
        Ok(Self { ebpf })
    }

    /// ns per run of `frame`.
    fn run(&mut self, frame: &[u8], repeat: u32) -> f64 {
        use aya::programs::{TestRun as _, TestRunOptions};
        let program: &mut aya::programs::Xdp = self
            .ebpf
            .program_mut("floor_flow_count")
            .unwrap()
            .try_into()
            .unwrap();
        program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN of the floor")
            .duration
            .as_nanos() as f64
    }
}
