//! Shaping accuracy and cost in the lab: for several rates, the throughput a shaped TCP
//! download achieves under the classifier's HTB shaping, as a ratio to the configured rate,
//! next to `tc tbf` at the same rate on the same path in the same run; and the round-trip
//! time of unshaped traffic (ping) while a shaped download saturates its class, as a ratio
//! to the round-trip time with no shaping at all.
//!
//! Throughput is iperf3's goodput (TCP payload) on the receiving side; both shapers count
//! Ethernet frames, so a perfect shaper shows about 0.96 (1448 payload bytes per 1514-byte
//! frame).
//!
//! Run with `cargo xtask bench [--quick]`; writes target/bench/shaping.json.

use std::{path::PathBuf, process::Command, time::Duration};

use bench_results::shaping::{LatencyResult, RateResult, Report};
use clap::Parser;
use classifier_lab::{
    Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
    topology::{GATEWAY_LAN_IFACE, SERVICE_V4},
};
use classifier_tests::{
    classifier_bin,
    iperf::{self, Way},
};

#[derive(Parser)]
struct Args {
    /// Two rates and shorter runs.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/shaping.json")]
    out: PathBuf,
}

const PORT: u16 = 5201;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (rates, seconds): (&[&str], u32) = if args.quick {
        (&["2mbit", "10mbit"], 5)
    } else {
        (&["512kbit", "2mbit", "10mbit", "50mbit"], 10)
    };
    let lab = Lab::up(&LabSpec {
        clients: 1,
        server_names: Vec::new(),
        ..LabSpec::default()
    })?;
    iperf::serve(&lab, PORT);
    let mut results = Vec::new();
    for rate in rates {
        let rate_bps =
            classifier_user::policy::rules::parse_rate(rate).map_err(anyhow::Error::msg)? as f64;
        let classifier_bps = with_classifier(&lab, rate, |_| download(&lab, seconds))?;
        let tbf_bps = with_tbf(&lab, rate, || download(&lab, seconds))?;
        let result = RateResult {
            rate: rate.to_string(),
            rate_bps,
            classifier_bps,
            classifier_ratio: classifier_bps / rate_bps,
            tbf_bps,
            tbf_ratio: tbf_bps / rate_bps,
        };
        println!(
            "{:>8}: classifier {:.3} of the rate, tc tbf {:.3}",
            result.rate, result.classifier_ratio, result.tbf_ratio
        );
        results.push(result);
    }
    let idle = median_rtt_ms(&lab)?;
    let under_load = with_classifier(&lab, "2mbit", |lab| {
        let load = iperf::start(&lab.clients[0], SERVICE_V4, PORT, Way::Download, 6, 1000);
        std::thread::sleep(Duration::from_secs(2));
        let rtt = median_rtt_ms(lab);
        load.finish();
        rtt
    })??;
    let latency = LatencyResult {
        idle_no_shaping_ms: idle,
        under_shaped_load_ms: under_load,
        ratio: under_load / idle,
    };
    println!(
        "unshaped ping RTT: {:.3} ms idle without shaping, {:.3} ms beside a saturated shaped class ({:.2}x)",
        latency.idle_no_shaping_ms, latency.under_shaped_load_ms, latency.ratio
    );
    let report = Report {
        kernel: kernel_release(),
        seconds_per_run: seconds,
        rates: results,
        unshaped_latency: latency,
    };
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("results in {}", args.out.display());
    Ok(())
}

/// Runs `work` with the daemon shaping the iperf3 port at `rate` (HTB).
fn with_classifier<T>(lab: &Lab, rate: &str, work: impl FnOnce(&Lab) -> T) -> anyhow::Result<T> {
    let policy = format!(
        "[schedule]\ndefault = \"working\"\n[categories.bulk]\nports = [\"tcp/{PORT}\"]\n\
         [[rules]]\ncategories = \"bulk\"\naction = \"shape\"\nrate = \"{rate}\"\n"
    );
    let file = std::env::temp_dir().join(format!("classifier-shaping-bench-{}.toml", lab.id));
    std::fs::write(&file, policy)?;
    let options = DaemonOptions {
        extra_args: vec!["--policy".into(), file.display().to_string()],
        ..DaemonOptions::default()
    };
    let daemon = DaemonProcess::start(&classifier_bin(), lab, &options)?;
    let result = work(lab);
    daemon.stop()?;
    let _ = std::fs::remove_file(&file);
    Ok(result)
}

/// Runs `work` with `tc tbf` at `rate` as the gateway's LAN egress qdisc.
fn with_tbf<T>(lab: &Lab, rate: &str, work: impl FnOnce() -> T) -> anyhow::Result<T> {
    let tc = |args: &[&str]| {
        let status = Lab::command(&lab.gateway, "tc").args(args).status()?;
        anyhow::ensure!(status.success(), "tc {args:?} failed");
        Ok(())
    };
    // The same burst the classifier's HTB classes get: 20 ms at the rate, at least four
    // full frames.
    let rate_bytes =
        classifier_user::policy::rules::parse_rate(rate).map_err(anyhow::Error::msg)? / 8;
    let burst = (rate_bytes / 50).max(4 * 1514).to_string();
    tc(&[
        "qdisc",
        "replace",
        "dev",
        GATEWAY_LAN_IFACE,
        "root",
        "tbf",
        "rate",
        rate,
        "burst",
        &burst,
        "latency",
        "100ms",
    ])?;
    let result = work();
    tc(&["qdisc", "del", "dev", GATEWAY_LAN_IFACE, "root"])?;
    Ok(result)
}

/// A shaped download's goodput over `seconds`, bits per second.
fn download(lab: &Lab, seconds: u32) -> f64 {
    iperf::start(
        &lab.clients[0],
        SERVICE_V4,
        PORT,
        Way::Download,
        seconds,
        1000,
    )
    .finish()
    .bits_per_second
}

/// Median RTT of 20 pings from the client to the server (ICMP: never shaped), ms.
fn median_rtt_ms(lab: &Lab) -> anyhow::Result<f64> {
    let output = Lab::command(&lab.clients[0], "ping")
        .args(["-c", "20", "-i", "0.1", "-W", "2", &SERVICE_V4.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut rtts: Vec<f64> = text
        .lines()
        .filter_map(|line| line.split("time=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    anyhow::ensure!(!rtts.is_empty(), "no ping replies: {text}");
    rtts.sort_by(f64::total_cmp);
    Ok(rtts[rtts.len() / 2])
}

fn kernel_release() -> String {
    Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
