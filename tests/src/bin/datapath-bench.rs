//! Datapath cost under BPF_PROG_TEST_RUN: nanoseconds per packet for each kind of packet,
//! reported as a ratio to an empty XDP program measured in the same round. The machines are
//! shared and noisy, so rounds interleave baseline and cases and the median ratio is kept.
//!
//! Run with `cargo xtask bench [--quick]`; writes target/bench/datapath.json.

use std::path::PathBuf;

use clap::Parser;
use classifier_tests::{
    frames::{self, Way},
    run::{run_frame, xdp_ns_per_run},
};
use classifier_user::loader::{Datapath, program};
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
    };
    print_report(&report);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("\nwritten to {}", args.out.display());
    Ok(())
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
        "{:<42} {:>10} {:>16} {:>18}",
        "case", "median ns", "ratio to empty", "ratio min..max"
    );
    for case in &report.cases {
        println!(
            "{:<42} {:>10.1} {:>16.2} {:>9.2}..{:<8.2}",
            case.case, case.median_ns, case.median_ratio_to_empty, case.min_ratio, case.max_ratio
        );
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
