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
//! Run with `cargo xtask bench [--quick]`; writes target/bench/datapath.json.

use std::path::PathBuf;

use clap::Parser;
use classifier_common::testing::{Hello, chrome_like};
use classifier_tests::{
    frames::{self, Way},
    run::{run_frame, xdp_ns_per_run},
};
use classifier_user::{
    loader::{Datapath, program},
    policy::Policy,
    tables,
};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Fewer rounds and repetitions.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/datapath.json")]
    out: PathBuf,
}

#[derive(Serialize)]
struct CaseResult {
    case: &'static str,
    median_ns: f64,
    min_ns: f64,
    max_ns: f64,
    median_ratio_to_empty: f64,
    min_ratio: f64,
    max_ratio: f64,
}

#[derive(Serialize)]
struct Report {
    kernel: String,
    rounds: usize,
    repeat: u32,
    empty_xdp_median_ns: f64,
    cases: Vec<CaseResult>,
    /// First-payload cases: one fresh flow per sample.
    fresh_flow_samples: usize,
    fresh_flow_cases: Vec<CaseResult>,
    /// The one-segment ClientHello with this many domains loaded.
    list_size_cases: Vec<CaseResult>,
}

/// The name every ClientHello carries; listed in every policy the benchmark loads.
const NAME: &str = "www.youtube.com";

/// A first-payload case: the frames of a fresh flow from `port`, after its handshake.
struct FreshCase {
    name: &'static str,
    server_port: u16,
    payload: Vec<u8>,
    mss: usize,
    /// A UDP flow: its first datagram is the payload (no handshake).
    udp: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (rounds, repeat) = if args.quick {
        (5, 200_000)
    } else {
        (15, 1_000_000)
    };
    let mut datapath = Datapath::load()?;

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

    let mut baseline = Vec::new();
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (index, (_, frame)) in cases.iter().enumerate() {
            let empty = xdp_ns_per_run(&mut datapath, program::EMPTY_XDP, &baseline_frame, repeat);
            let cost = xdp_ns_per_run(&mut datapath, program::LAN_INGRESS, frame, repeat);
            baseline.push(empty);
            samples[index].push((cost, cost / empty));
        }
    }

    let fresh_samples = if args.quick { 300 } else { 2000 };
    let fresh_cases = fresh_flow_cases();
    let mut next_port = 10_000u16;
    let mut fresh_flow_cases = Vec::new();
    for case in &fresh_cases {
        let samples = fresh_flow_samples(&mut datapath, case, fresh_samples, &mut next_port);
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
        let case = &fresh_cases[0];
        let mut port = 10_000u16;
        let samples = fresh_flow_samples(&mut datapath, case, fresh_samples, &mut port);
        list_size_cases.push(summarize(domains_label(size), &samples));
    }

    let report = Report {
        kernel: kernel_release(),
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
    vec![
        FreshCase {
            name: "ClientHello, one segment (OpenSSL-sized)",
            server_port: 443,
            payload: Hello::new().sni(NAME).bytes(),
            mss: 1448,
            udp: false,
        },
        FreshCase {
            name: "ClientHello, two segments (Chrome ML-KEM, both)",
            server_port: 443,
            payload: chrome_like(NAME),
            mss: 1448,
            udp: false,
        },
        FreshCase {
            name: "HTTP request, one segment",
            server_port: 80,
            payload: format!(
                "GET / HTTP/1.1\r\nHost: {NAME}\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
            )
            .into_bytes(),
            mss: 1448,
            udp: false,
        },
        FreshCase {
            name: "BitTorrent handshake",
            server_port: 51413,
            payload: bt_handshake,
            mss: 1448,
            udp: false,
        },
        FreshCase {
            name: "QUIC v1 Initial (to the daemon)",
            server_port: 443,
            payload: quic_initial(),
            mss: 1448,
            udp: true,
        },
    ]
}

/// A Chrome-sized client Initial: the first 1100 bytes of a ClientHello in a padded,
/// protected QUIC v1 packet, as the datapath sees a browser's first datagram.
fn quic_initial() -> Vec<u8> {
    use classifier_user::quic::initial::{QuicVersion, testing::client_initial};
    let record = chrome_like(NAME);
    let hello = classifier_common::testing::handshake_of(&record);
    client_initial(QuicVersion::V1, &[7; 8], 0, 0, &hello[..1100])
}

/// Per fresh flow: (ns of the case's frames, ratio to the empty program on them).
fn fresh_flow_samples(
    datapath: &mut Datapath,
    case: &FreshCase,
    samples: usize,
    next_port: &mut u16,
) -> Vec<(f64, f64)> {
    (0..samples)
        .map(|_| {
            let port = *next_port;
            *next_port = next_port.wrapping_add(1).max(10_000);
            if case.udp {
                let datagram = frames::udp4(Way::Up, port, case.server_port, &case.payload);
                let cost = xdp_ns_per_run(datapath, program::LAN_INGRESS, &datagram, 1);
                let empty = xdp_ns_per_run(datapath, program::EMPTY_XDP, &datagram, 1);
                return (cost, cost / empty);
            }
            run_frame(
                datapath,
                Way::Up,
                &frames::tcp4_seq(Way::Up, port, case.server_port, "S", 999, b""),
            );
            run_frame(
                datapath,
                Way::Up,
                &frames::tcp4_seq(Way::Up, port, case.server_port, "A", 1000, b""),
            );
            let segments =
                frames::tcp4_stream(port, case.server_port, 1000, &case.payload, case.mss);
            let mut cost = 0.0;
            let mut empty = 0.0;
            for segment in &segments {
                cost += xdp_ns_per_run(datapath, program::LAN_INGRESS, segment, 1);
                empty += xdp_ns_per_run(datapath, program::EMPTY_XDP, segment, 1);
            }
            (cost, cost / empty)
        })
        .collect()
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
    Ok(datapath)
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
        case,
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
        "BPF_PROG_TEST_RUN, kernel {}, {} rounds x {} runs; empty XDP program: {:.1} ns",
        report.kernel, report.rounds, report.repeat, report.empty_xdp_median_ns
    );
    println!(
        "{:<50} {:>10} {:>16} {:>18}",
        "case", "median ns", "ratio to empty", "ratio min..max"
    );
    print_cases(&report.cases);
    println!(
        "\nFirst payload of a fresh flow ({} flows each; frames run once, ratio to the empty \
         program on the same frames):",
        report.fresh_flow_samples
    );
    print_cases(&report.fresh_flow_cases);
    println!("\nList size (one-segment ClientHello, fresh flows):");
    print_cases(&report.list_size_cases);
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
