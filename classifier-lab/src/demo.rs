//! The demo: a lab, the real daemon on its gateway, and clients downloading from the
//! server host over IPv4 and IPv6 while the daemon prints its per-flow counters.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
    http::HttpServer,
    tls::{self, TlsServer},
    topology::{SERVICE_V4, SERVICE_V6},
};
use classifier_user::flows;

/// What the clients visit, in turn: (URL scheme, name, what the default policy makes of it).
/// The names resolve to the lab's server through the clients' hosts files.
const SITES: [(&str, &str); 8] = [
    ("https", "www.youtube.com"),
    ("http", "www.bbc.co.uk"),
    ("https", "rr4---sn-demo.googlevideo.com"),
    ("https", "open.spotify.com"),
    ("https", "www.bet365.com"),
    ("https", "www.dropbox.com"),
    ("https", "music.youtube.com"),
    ("https", "intranet.example.gov.uk"),
];
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
    let names: Vec<String> = SITES.iter().map(|(_, name)| (*name).to_owned()).collect();
    let lab = Lab::up(&LabSpec {
        server_names: names.clone(),
        ..LabSpec::default()
    })?;
    print!("{}", lab.describe());
    let _http = HttpServer::start(
        &lab.server.netns,
        &[
            SocketAddr::new(SERVICE_V4.into(), HTTP_PORT),
            SocketAddr::new(SERVICE_V6.into(), HTTP_PORT),
        ],
    )?;
    let _https = TlsServer::start(&lab, &names)?;
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
            ..DaemonOptions::default()
        },
    )?;
    println!(
        "== clients visit {} sites (HTTPS and HTTP, IPv4 and IPv6) for {}",
        SITES.len(),
        humantime::format_duration(options.duration)
    );
    drive_traffic(&lab, options.duration);

    println!("== final flow table (asked of the daemon, as `classifier flows` does)");
    let records = daemon.flows()?;
    flows::write_table(&mut std::io::stdout().lock(), &records, 30, usize::MAX)?;
    let status = daemon.stop()?;
    println!("== daemon stopped ({status}): programs detached, maps unpinned");
    let store = classifier_user::store::FlowStore::open(&lab.store_path())?;
    println!(
        "== {} ended flows recorded in the flow store {} (`classifier export` reads it; \
         `classifier degradation --store ...` shows the degradation log); removing the lab",
        store.count()?,
        lab.store_path().display()
    );
    let intervals = store.degradation(None, None, 3)?;
    for interval in intervals {
        println!(
            "   {}s interval to {}: down {} bit/s, up {} bit/s",
            interval.interval_seconds, interval.end, interval.download_bps, interval.upload_bps
        );
    }
    drop(lab);
    Ok(())
}

fn drive_traffic(lab: &Lab, duration: Duration) {
    let deadline = Instant::now() + duration;
    for round in 0..MAX_ROUNDS {
        if Instant::now() >= deadline {
            break;
        }
        // Each round, every client visits the same site: even clients over IPv4, odd ones
        // over IPv6.
        let (scheme, name) = SITES[round % SITES.len()];
        let size = tls::FILE_SIZES[round % tls::FILE_SIZES.len()];
        for (index, client) in lab.clients.iter().enumerate() {
            let family = if index % 2 == 0 { "--ipv4" } else { "--ipv6" };
            let url = match scheme {
                "https" => format!("https://{name}/bytes-{size}"),
                _ => format!("http://{name}/bytes/{size}"),
            };
            if let Err(e) = curl(client, family, &url) {
                eprintln!("   {} {url}: {e:#}", client.netns);
            }
        }
        std::thread::sleep(PAUSE_BETWEEN_ROUNDS);
    }
}

fn curl(client: &crate::Host, family: &str, url: &str) -> anyhow::Result<()> {
    // --insecure: the lab's server has a self-signed certificate.
    let output = Lab::command(client, "curl")
        .args(["--silent", "--show-error", "--insecure", family])
        .args(["--output", "/dev/null", "--max-time", "10", url])
        .output()
        .context("running curl (is it installed? `cargo xtask setup`)")?;
    anyhow::ensure!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}
