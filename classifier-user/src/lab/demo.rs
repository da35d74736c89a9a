//! The demo: a lab, the real daemon on its gateway, and clients downloading from the
//! server host over IPv4 and IPv6 while the daemon prints its per-flow counters.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
    http::HttpServer,
    topology::{SERVICE_V4, SERVICE_V6},
};
use crate::flows;

/// Download sizes the clients take turns at, in bytes.
const DOWNLOAD_SIZES: [u64; 4] = [64 * 1024, 1024 * 1024, 256 * 1024, 4 * 1024 * 1024];
/// Upper bound on traffic rounds whatever the duration: the demo's traffic is bounded.
const MAX_ROUNDS: usize = 600;
const PAUSE_BETWEEN_ROUNDS: Duration = Duration::from_secs(1);
const HTTP_PORT: u16 = 80;

pub struct DemoOptions {
    /// The `classifier` binary to run as the daemon.
    pub binary: PathBuf,
    /// How long clients generate traffic.
    pub duration: Duration,
    /// How often the daemon prints its flow table.
    pub report_interval: Duration,
}

pub fn run(options: &DemoOptions) -> anyhow::Result<()> {
    println!("== bringing up the lab (network namespaces, nothing in the root namespace)");
    let lab = Lab::up(&LabSpec::default())?;
    print!("{}", lab.describe());
    let _server = HttpServer::start(
        &lab.server.netns,
        &[
            SocketAddr::new(SERVICE_V4.into(), HTTP_PORT),
            SocketAddr::new(SERVICE_V6.into(), HTTP_PORT),
        ],
    )?;
    println!(
        "== starting `classifier run` on the gateway's {}",
        lab.gateway.iface
    );
    let daemon = DaemonProcess::start(
        &options.binary,
        &lab,
        &DaemonOptions {
            extra_args: vec![
                "--print-flows".into(),
                "--report-interval".into(),
                humantime::format_duration(options.report_interval).to_string(),
            ],
            show_output: true,
        },
    )?;
    println!(
        "== clients download from {SERVICE_V4} and [{SERVICE_V6}] for {}",
        humantime::format_duration(options.duration)
    );
    drive_traffic(&lab, options.duration);

    println!("== final flow table (read from the pinned map, as `classifier flows` does)");
    let records = flows::read_pinned(&daemon.pin_dir)?;
    flows::write_table(&mut std::io::stdout().lock(), &records, 30)?;
    let status = daemon.stop()?;
    println!("== daemon stopped ({status}): programs detached, maps unpinned; removing the lab");
    drop(lab);
    Ok(())
}

fn drive_traffic(lab: &Lab, duration: Duration) {
    let deadline = Instant::now() + duration;
    for round in 0..MAX_ROUNDS {
        if Instant::now() >= deadline {
            break;
        }
        for (index, client) in lab.clients.iter().enumerate() {
            let turn = round + index;
            let size = DOWNLOAD_SIZES[turn % DOWNLOAD_SIZES.len()];
            let url = if turn % 2 == 0 {
                format!("http://{SERVICE_V4}/bytes/{size}")
            } else {
                format!("http://[{SERVICE_V6}]/bytes/{size}")
            };
            if let Err(e) = curl(client, &url) {
                eprintln!("   {} {url}: {e:#}", client.netns);
            }
        }
        std::thread::sleep(PAUSE_BETWEEN_ROUNDS);
    }
}

fn curl(client: &super::Host, url: &str) -> anyhow::Result<()> {
    let output = Lab::command(client, "curl")
        .args([
            "--silent",
            "--show-error",
            "--output",
            "/dev/null",
            "--max-time",
            "10",
            url,
        ])
        .output()
        .context("running curl (is it installed? `cargo xtask setup`)")?;
    anyhow::ensure!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}
