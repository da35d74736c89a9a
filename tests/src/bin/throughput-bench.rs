//! Throughput through the lab gateway: iperf3 TCP with several parallel streams, with no
//! program on the gateway, with empty programs at the classifier's hooks (the hooks' own
//! cost), with the classifier daemon (a policy that allows everything, with 10 domains and
//! with a large list; and the shipped council policy as at work, its shape rules and HTB in
//! place, with and without the large list), and with iptables string-match rules
//! (`xt_string`) of N SNI-like names that never occur in the traffic, so every packet is
//! searched by every rule and passes. Beside throughput, new TLS connections per second
//! (`handshake-client`: one process, a new TCP connection and full handshake each, against
//! the lab's `openssl s_server`), and the daemon's CPU time per new connection.
//!
//! The machines are shared and noisy: configurations are interleaved round-robin within one
//! run (the starting one rotates each round), so noise hits all alike; each row reports the
//! median, min and max of its samples, the ratio of its median to the `none` median, and the
//! spread of the ratios to the `none` sample of the same round. Nothing here is asserted on
//! timing.
//!
//! nftables has no native match for a string at an unknown offset in the payload (its
//! payload expression reads fixed offsets), so the comparison uses iptables' `-m string`
//! (through nft_compat when iptables is the nf_tables flavour).
//!
//! Everything runs inside the lab's namespaces; the iptables rules live in one user chain in
//! the gateway namespace, removed after each use (also on failure: a drop guard), and the
//! namespace itself goes with the lab.
//!
//! Run with `cargo xtask bench [--quick]`; writes target/bench/throughput.json and prints a
//! Markdown table.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bench_results::throughput::{HeavyProbe, Machine, Report, Row};
use clap::Parser;
use classifier_lab::BENCH_FLOOR_OBJECT;
use classifier_lab::{
    Host, Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
    tls::{HTTPS_PORT, TlsServer},
    topology::{GATEWAY_LAN_IFACE, GATEWAY_WAN_IFACE, SERVICE_V4},
};
use classifier_tests::{classifier_bin, iperf, setup::council_policy_at_work};
use classifier_user::netns;

#[derive(Parser)]
struct Args {
    /// Short runs, fewer repetitions and configurations (under two minutes).
    #[arg(long)]
    quick: bool,
    /// Repetitions of each configuration (default: 3 quick, 5 full).
    #[arg(long)]
    repetitions: Option<usize>,
    /// Seconds per iperf3 run (default: 2 quick, 4 full).
    #[arg(long)]
    seconds: Option<u32>,
    /// Parallel iperf3 streams.
    #[arg(long, default_value_t = 4)]
    streams: u32,
    /// What to measure (default: download,handshakes quick; download,upload,handshakes full).
    #[arg(long, value_delimiter = ',')]
    measures: Vec<Measure>,
    /// iperf3's --window: socket buffer size per stream (default: the kernel's).
    #[arg(long)]
    window: Option<String>,
    /// Numbers of iptables string rules to compare with (default: 10,1000 quick;
    /// 10,1000,10000 full).
    #[arg(long, value_delimiter = ',')]
    string_rules: Vec<usize>,
    /// After the rounds, one download with this many string rules, outside the table: too
    /// slow here to repeat (default: 10000 full, none quick; 0: none).
    #[arg(long)]
    heavy_probe: Option<usize>,
    /// Domains in the large list (default: 100,000 quick, 1,000,000 full).
    #[arg(long)]
    big_list: Option<usize>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/throughput.json")]
    out: PathBuf,
}

const PORT: u16 = 5201;
/// The name the TLS client connects to: listed in the allow-all policies here, and allowed
/// at all times by the shipped policy (which lists it nowhere).
const NAME: &str = "www.gov.uk";
/// The user chain the string rules live in (jumped to from FORWARD).
const CHAIN: &str = "TPUT_BENCH";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    /// No XDP/TC program and no iptables rule on the gateway.
    None,
    /// Programs that pass everything at the classifier's hooks: XDP on the LAN ingress, TC
    /// on both egresses.
    EmptyPrograms,
    /// The classifier daemon with `domains` domains loaded, nothing blocked or shaped.
    Classifier { domains: usize },
    /// The classifier daemon with the shipped council policy as at work (its shape rules and
    /// HTB in place), and `extra` more domains from a list file.
    Shipped { extra: usize },
    /// `rules` iptables string rules in the gateway's FORWARD path.
    XtString { rules: usize },
}

impl Config {
    fn label(self) -> String {
        match self {
            Config::None => "none".into(),
            Config::EmptyPrograms => "empty programs at the hooks".into(),
            Config::Classifier { domains } => format!("classifier, {} domains", thousands(domains)),
            Config::Shipped { extra: 0 } => "classifier, shipped policy at work".into(),
            Config::Shipped { extra } => format!(
                "classifier, shipped policy at work + {} domains",
                thousands(extra)
            ),
            Config::XtString { rules } => format!("xt_string, {} rules", thousands(rules)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Measure {
    /// Client → server TCP goodput.
    Upload,
    /// Server → client TCP goodput (iperf3 --reverse).
    Download,
    /// New TLS connections per second (full handshakes, one after another).
    Handshakes,
}

impl Measure {
    fn short(self) -> &'static str {
        match self {
            Measure::Upload => "upload",
            Measure::Download => "download",
            Measure::Handshakes => "TLS connections",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Measure::Upload => "upload (client→server)",
            Measure::Download => "download (server→client)",
            Measure::Handshakes => "TLS connections/s",
        }
    }
    fn unit(self) -> &'static str {
        match self {
            Measure::Upload | Measure::Download => "Gbit/s",
            Measure::Handshakes => "connections/s",
        }
    }
}

/// What each sample runs.
#[derive(Clone)]
struct Plan {
    measures: Vec<Measure>,
    seconds: u32,
    streams: u32,
    /// iperf3's --window (socket buffer size), when given.
    window: Option<String>,
    /// TLS fetches per sample, at most, and for at most this long.
    handshakes: usize,
    handshake_budget: Duration,
    /// How long past its --time an iperf3 run may take before it is killed.
    iperf_grace: Duration,
}

/// What the runs saw besides the samples.
#[derive(Default)]
struct Observed {
    xdp_mode: String,
    daemon_start_seconds: BTreeMap<String, Vec<f64>>,
    classifier_qdiscs: String,
    shipped_qdiscs: String,
    daemon_cpu_us_per_connection: BTreeMap<String, Vec<f64>>,
}

/// Samples of every (configuration, measure), round by round.
struct Samples {
    configs: Vec<Config>,
    measures: Vec<Measure>,
    values: Vec<Vec<Vec<f64>>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "throughput-bench needs root (network namespaces, BPF, iptables)"
    );
    let started = Instant::now();
    let repetitions = args
        .repetitions
        .unwrap_or(if args.quick { 3 } else { 5 })
        .max(1);
    let seconds = args
        .seconds
        .unwrap_or(if args.quick { 2 } else { 4 })
        .max(1);
    let handshakes = if args.quick { 100 } else { 200 };
    let big_list = args
        .big_list
        .unwrap_or(if args.quick { 100_000 } else { 1_000_000 });
    let string_rules: &[usize] = match (&args.string_rules[..], args.quick) {
        ([], true) => &[10, 1000],
        ([], false) => &[10, 100, 1000],
        (given, _) => given,
    };
    let heavy_probe = args
        .heavy_probe
        .unwrap_or(if args.quick { 0 } else { 10_000 });
    let measures = match (&args.measures[..], args.quick) {
        ([], true) => vec![Measure::Download, Measure::Handshakes],
        ([], false) => vec![Measure::Download, Measure::Upload, Measure::Handshakes],
        (given, _) => given.to_vec(),
    };
    let mut configs = vec![
        Config::None,
        Config::EmptyPrograms,
        Config::Classifier { domains: 10 },
        Config::Classifier { domains: big_list },
        Config::Shipped { extra: 0 },
        Config::Shipped { extra: big_list },
    ];
    configs.extend(string_rules.iter().map(|&rules| Config::XtString { rules }));
    configs.dedup();

    let plan = Plan {
        measures: measures.clone(),
        seconds,
        streams: args.streams,
        window: args.window.clone(),
        handshakes,
        handshake_budget: Duration::from_secs(if args.quick { 2 } else { 4 }),
        iperf_grace: Duration::from_secs(20),
    };
    let iptables = iptables_version()?;
    let lab = Lab::up(&LabSpec {
        clients: 1,
        server_names: vec![NAME.to_owned()],
        ..LabSpec::default()
    })?;
    iperf::serve(&lab, PORT);
    let _tls = TlsServer::start(&lab, &[NAME.to_owned()])?;
    let files = PolicyFiles::write(&lab.id, big_list)?;
    // The filter table exists from the start, empty, so that every configuration (not only
    // the ones after the first string rules) crosses the same empty FORWARD chain:
    // iptables-nft leaves its base chains behind when the rules go.
    Strings::install(&lab.gateway, 0)?.remove()?;
    // Warm-up, not recorded.
    iperf_run(
        &lab.clients[0],
        Measure::Download,
        &Plan {
            seconds: 1,
            ..plan.clone()
        },
    )?;
    handshake_rate(&lab.clients[0], 20, Duration::from_secs(5))?;

    let mut samples = Samples {
        values: vec![vec![Vec::new(); measures.len()]; configs.len()],
        configs: configs.clone(),
        measures: measures.clone(),
    };
    let mut observed = Observed::default();
    for round in 0..repetitions {
        let mut order: Vec<usize> = (0..configs.len()).collect();
        order.rotate_left(round % configs.len());
        for index in order {
            let config = configs[index];
            settle(&lab);
            eprintln!(
                "[{:>5.1}s] round {}/{repetitions}: {}",
                started.elapsed().as_secs_f64(),
                round + 1,
                config.label()
            );
            let values = measure_config(&lab, &files, config, &plan, &mut observed)
                .with_context(|| format!("round {}, {}", round + 1, config.label()))?;
            for (slot, value) in samples.values[index].iter_mut().zip(values) {
                slot.push(value);
            }
        }
    }
    drop(files);
    let heavy = (heavy_probe > 0).then(|| {
        settle(&lab);
        eprintln!(
            "[{:>5.1}s] one download with {heavy_probe} string rules",
            started.elapsed().as_secs_f64()
        );
        probe_heavy(&lab, heavy_probe, &plan)
    });

    let rows = samples.rows();
    let mut heavy = heavy;
    if let Some(probe) = &mut heavy {
        let none_download = rows.iter().find(|row| {
            row.configuration == Config::None.label() && row.measure == Measure::Download.label()
        });
        probe.ratio_to_none = probe
            .download_gbps
            .zip(none_download)
            .map(|(bps, row)| bps / row.median);
    }
    let report = Report {
        machine: machine(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        date: jiff::Timestamp::now().to_string(),
        quick: args.quick,
        iptables: iptables.clone(),
        xdp_mode: observed.xdp_mode,
        daemon_start_seconds: observed.daemon_start_seconds,
        classifier_qdiscs: observed.classifier_qdiscs,
        shipped_qdiscs: observed.shipped_qdiscs,
        daemon_cpu_us_per_connection: observed.daemon_cpu_us_per_connection,
        seconds_per_run: seconds,
        streams: args.streams,
        repetitions,
        handshakes_per_sample: handshakes,
        handshake_budget_seconds: plan.handshake_budget.as_secs(),
        notes: vec![
            "Throughput is iperf3's TCP goodput on the receiving side, all streams summed; \
             veth offloads (TSO/GSO/GRO) are off in the lab, so packets cross at wire size."
                .into(),
            "none: no XDP/TC program and an empty iptables filter table (iptables-nft keeps \
             its base chains once created; every configuration has them)."
                .into(),
            "empty programs: an XDP program on the LAN ingress and TC programs on both \
             egresses (TCX) that pass every packet, attached where the classifier attaches: \
             the hooks' own cost, none of ours."
                .into(),
            "classifier, N domains: the daemon attached to the gateway (XDP on the LAN \
             ingress, TC on both egresses) with a policy of categories and domains and no \
             rule, so nothing is blocked or shaped and no HTB qdisc is set up (the daemon adds \
             one only for shape rules); the large list is one list file."
                .into(),
            "classifier, shipped policy at work: the council policy the package installs, its \
             working-hours period in force (so its shape rules and their HTB qdisc are set up), \
             optionally with the large list as one more category. The measured traffic (iperf3 \
             on port 5201, TLS to www.gov.uk) is in no category: allowed, unshaped, as most of \
             a council's traffic is."
                .into(),
            format!(
                "xt_string: N rules `-m string --algo bm --string <name> -j DROP` in one user \
                 chain jumped to from FORWARD, names host<i>.site<j>.example that never occur \
                 in the traffic (iperf3 sends random payload); {}. nftables cannot match a \
                 string at an unknown payload offset natively, so iptables' xt_string is used.",
                iptables
            ),
            format!(
                "TLS connections/s: handshake-client (rustls, one process) over IPv4 fetching \
                 /bytes-16384 from openssl s_server one connection after another, up to \
                 {handshakes} connections or {} s, a new TCP connection and full TLS handshake \
                 each (no resumption), SNI {NAME}; the rate from the end of the first \
                 connection to the end of the last. The daemon's CPU time over the same \
                 connections (all its threads' schedstat) is reported per connection.",
                plan.handshake_budget.as_secs()
            ),
        ],
        rows,
        heavy_probe: heavy,
    };
    print_markdown(&report);
    if let Some(dir) = report_dir(&args.out) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!(
        "\nwritten to {} ({:.0} s)",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn report_dir(out: &Path) -> Option<&Path> {
    out.parent().filter(|dir| !dir.as_os_str().is_empty())
}

/// Sets `config` up on the gateway, takes one sample of each measure, and takes it down.
fn measure_config(
    lab: &Lab,
    files: &PolicyFiles,
    config: Config,
    plan: &Plan,
    notes: &mut Observed,
) -> anyhow::Result<Vec<f64>> {
    let client = &lab.clients[0];
    let run_all = || run_measures(client, plan, None).map(|(values, _)| values);
    match config {
        Config::None => {
            ensure_bare(lab)?;
            run_all()
        }
        Config::EmptyPrograms => {
            ensure_bare(lab)?;
            let attached = EmptyPrograms::attach(lab)?;
            let values = run_all()?;
            drop(attached);
            Ok(values)
        }
        Config::Classifier { .. } | Config::Shipped { .. } => {
            let policy = match config {
                Config::Classifier { domains } => files.policy(domains),
                _ => files.shipped(config),
            };
            let options = DaemonOptions {
                extra_args: vec!["--policy".into(), policy.display().to_string()],
                // Its log goes to a file, shown only if it fails to start.
                log_file: Some(files.dir.join("daemon.log")),
                ..DaemonOptions::default()
            };
            let _ = std::fs::remove_file(files.dir.join("daemon.log"));
            let begun = Instant::now();
            let daemon = DaemonProcess::start(&classifier_bin(), lab, &options)?;
            notes
                .daemon_start_seconds
                .entry(config.label())
                .or_default()
                .push(begun.elapsed().as_secs_f64());
            let qdiscs = match config {
                Config::Classifier { .. } => &mut notes.classifier_qdiscs,
                _ => &mut notes.shipped_qdiscs,
            };
            if qdiscs.is_empty() {
                for iface in [GATEWAY_LAN_IFACE, GATEWAY_WAN_IFACE] {
                    *qdiscs += &gateway_cmd(lab, "tc", &["qdisc", "show", "dev", iface])?;
                }
            }
            let status = daemon.status()?;
            match config {
                Config::Classifier { domains } => anyhow::ensure!(
                    status.domains == domains && status.rules == 0,
                    "the daemon has {} domains and {} rules in force, not {domains} and 0",
                    status.domains,
                    status.rules
                ),
                Config::Shipped { extra } => anyhow::ensure!(
                    status.domains > extra && status.rules > 0,
                    "the shipped policy is in force with {} domains and {} rules: expected \
                     more than {extra} domains and some rules",
                    status.domains,
                    status.rules
                ),
                _ => unreachable!("only daemon configurations here"),
            }
            notes.xdp_mode = status.xdp_mode.clone();
            let (values, cpu_per_connection) = run_measures(client, plan, Some(daemon.pid()))?;
            if let Some(seconds) = cpu_per_connection {
                notes
                    .daemon_cpu_us_per_connection
                    .entry(config.label())
                    .or_default()
                    .push(seconds * 1e6);
            }
            let status = daemon.status()?;
            anyhow::ensure!(
                status.blocked_packets == 0 && status.shaped_bytes == 0,
                "the allow-all policy blocked {} packets and shaped {} bytes",
                status.blocked_packets,
                status.shaped_bytes
            );
            let exit = daemon.stop()?;
            anyhow::ensure!(exit.success(), "classifier run exited with {exit}");
            Ok(values)
        }
        Config::XtString { rules } => {
            let strings = Strings::install(&lab.gateway, rules)?;
            let values = run_all()?;
            let matched = strings.matched_packets()?;
            strings.remove()?;
            anyhow::ensure!(
                matched == 0,
                "the string rules matched {matched} packets: a name occurs in the traffic"
            );
            Ok(values)
        }
    }
}

/// One sample of each measure; with a daemon's pid, also its CPU seconds per TLS connection
/// over the connections measure.
fn run_measures(
    client: &Host,
    plan: &Plan,
    daemon: Option<u32>,
) -> anyhow::Result<(Vec<f64>, Option<f64>)> {
    let mut values = Vec::new();
    let mut cpu_per_connection = None;
    for &measure in &plan.measures {
        values.push(match measure {
            Measure::Handshakes => {
                let before = daemon.map(process_cpu_seconds).transpose()?;
                let run = handshake_rate(client, plan.handshakes, plan.handshake_budget)?;
                if let (Some(pid), Some(before)) = (daemon, before) {
                    let used = process_cpu_seconds(pid)? - before;
                    cpu_per_connection = Some(used / run.connections as f64);
                }
                run.per_second
            }
            _ => iperf_run(client, measure, plan)?,
        });
    }
    Ok((values, cpu_per_connection))
}

/// A process's CPU time so far, all its threads, in seconds: the scheduler's nanosecond
/// account (`/proc/<pid>/task/*/schedstat`, first field), as `/proc/<pid>/stat` counts in
/// 10 ms ticks, too coarse for a few hundred connections.
fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let tasks = format!("/proc/{pid}/task");
    let mut nanoseconds = 0u64;
    for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
        let path = task?.path().join("schedstat");
        // A thread that ended between the listing and the read took its time with it.
        let Ok(stat) = std::fs::read_to_string(&path) else {
            continue;
        };
        nanoseconds += stat
            .split_whitespace()
            .next()
            .and_then(|field| field.parse::<u64>().ok())
            .with_context(|| format!("{} is not `<ns on CPU> ...`: {stat:?}", path.display()))?;
    }
    Ok(nanoseconds as f64 / 1e9)
}

/// One download through `rules` string rules, bounded at its length and a minute more.
fn probe_heavy(lab: &Lab, rules: usize, plan: &Plan) -> HeavyProbe {
    let begun = Instant::now();
    let result = Strings::install(&lab.gateway, rules).and_then(|strings| {
        let plan = Plan {
            iperf_grace: Duration::from_secs(60),
            ..plan.clone()
        };
        let bps = iperf_run(&lab.clients[0], Measure::Download, &plan);
        strings.remove()?;
        bps
    });
    let (download_gbps, error) = match result {
        Ok(bps) => (Some(bps), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    HeavyProbe {
        rules,
        seconds_per_run: plan.seconds,
        download_gbps,
        ratio_to_none: None,
        wall_seconds: begun.elapsed().as_secs_f64(),
        error,
    }
}

/// Waits (at most 15 s) until the client and the server have no TCP connection left but TIME-WAIT ones: a
/// run through slow rules leaves data queued behind them, which must not load the next.
fn settle(lab: &Lab) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let busy = [&lab.clients[0], &lab.server].iter().any(|host| {
            Lab::command(host, "ss")
                .args(["-Htn", "state", "connected", "exclude", "time-wait"])
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false)
        });
        if !busy {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("    connections still open after 15 s; going on");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fails unless the gateway has no XDP program, no TC filter and no HTB qdisc left.
fn ensure_bare(lab: &Lab) -> anyhow::Result<()> {
    for iface in [GATEWAY_LAN_IFACE, GATEWAY_WAN_IFACE] {
        let link = gateway_cmd(lab, "ip", &["-d", "link", "show", "dev", iface])?;
        let qdiscs = gateway_cmd(lab, "tc", &["qdisc", "show", "dev", iface])?;
        let mut filters = String::new();
        for hook in ["ingress", "egress"] {
            filters += &gateway_cmd(lab, "tc", &["filter", "show", "dev", iface, hook])
                .unwrap_or_default();
        }
        anyhow::ensure!(
            !link.contains("prog/xdp") && !qdiscs.contains("htb") && filters.trim().is_empty(),
            "the gateway's {iface} is not bare after the classifier stopped:\n{link}{qdiscs}{filters}"
        );
    }
    Ok(())
}

fn gateway_cmd(lab: &Lab, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["netns", "exec", &lab.gateway.netns, program];
    full.extend_from_slice(args);
    classifier_lab::run_command("ip", &full)
}

/// Runs `command`, killing it if it has not ended within `limit`.
fn output_within(mut command: Command, limit: Duration) -> anyhow::Result<Output> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let pid = child.id();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || send.send(child.wait_with_output()));
    match receive.recv_timeout(limit) {
        Ok(output) => Ok(output?),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            // The waiting thread reaps it.
            let _ = receive.recv_timeout(Duration::from_secs(5));
            bail!("{command:?} did not end within {limit:?}")
        }
    }
}

/// One iperf3 TCP run of `streams` parallel streams; receiver-side goodput, Gbit/s.
fn iperf_run(client: &Host, measure: Measure, plan: &Plan) -> anyhow::Result<f64> {
    let seconds = plan.seconds;
    let mut command = Lab::command(client, "iperf3");
    command
        .args([
            "--client",
            &SERVICE_V4.to_string(),
            "--port",
            &PORT.to_string(),
        ])
        .args(["--time", &seconds.to_string()])
        .args(["--parallel", &plan.streams.to_string()])
        .args(["--connect-timeout", "3000", "--json"])
        .stdin(Stdio::null());
    if measure == Measure::Download {
        command.arg("--reverse");
    }
    if let Some(window) = &plan.window {
        command.args(["--window", window]);
    }
    let begun = Instant::now();
    let output = output_within(
        command,
        Duration::from_secs(u64::from(seconds)) + plan.iperf_grace,
    )?;
    let took = begun.elapsed().as_secs_f64();
    if took > f64::from(seconds) + 2.0 {
        eprintln!("    iperf3 {measure:?} of {seconds} s took {took:.1} s to end");
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("iperf3 printed no JSON: {text}"))?;
    if !output.status.success() || json.get("error").is_some() {
        bail!("iperf3 failed: {}", json.get("error").unwrap_or(&json));
    }
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3's received rate")?;
    Ok(bps / 1e9)
}

/// Up to `count` HTTPS fetches over IPv4 (as iperf3 and the string rules), each a new
/// connection with a full handshake, for at most `budget`; connections per second over the
/// ones that completed.
/// What one connections sample measured.
#[derive(serde::Deserialize)]
struct HandshakeRun {
    connections: usize,
    per_second: f64,
}

/// New TLS connections per second from `client` to the lab's server, one process
/// (`handshake-client`), up to `count` connections or `budget`.
fn handshake_rate(client: &Host, count: usize, budget: Duration) -> anyhow::Result<HandshakeRun> {
    let server = std::net::SocketAddr::from((SERVICE_V4, HTTPS_PORT));
    let mut command = Lab::command(client, &sibling_binary("handshake-client")?);
    command
        .arg(server.to_string())
        .args(["--sni", NAME, "--path", "/bytes-16384"])
        .args(["--count", &count.to_string()])
        .args(["--budget", &budget.as_secs_f64().to_string()]);
    let output = output_within(command, budget + Duration::from_secs(30))?;
    let line = String::from_utf8_lossy(&output.stdout);
    let answer: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("handshake-client printed {line:?}"))?;
    if let Some(error) = answer.get("error") {
        bail!("handshake-client: {error}");
    }
    Ok(serde_json::from_value(answer)?)
}

/// A binary built beside this one (target/<profile>/).
fn sibling_binary(name: &str) -> anyhow::Result<String> {
    let path = std::env::current_exe()?
        .parent()
        .context("the benchmark's directory")?
        .join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it with `cargo build --release -p classifier-tests --bins`",
        path.display()
    );
    Ok(path.display().to_string())
}

/// The policy files: 10 domains inline, and `big` from one list file. Removed on drop.
struct PolicyFiles {
    dir: PathBuf,
    big: usize,
}

/// Ten real names in two categories, none blocked or shaped (no rules); the TLS name among
/// them (as host names: `gov.uk` and `nhs.uk` are public suffixes, refused in lists).
const SMALL_POLICY: &str = "[categories.streaming-video]\n\
    domains = [\"youtube.com\", \"dailymotion.com\", \"netflix.com\", \"twitch.tv\", \"vimeo.com\"]\n\
    [categories.public-sector]\n\
    domains = [\"www.gov.uk\", \"www.nhs.uk\", \"www.police.uk\", \"www.parliament.uk\", \"www.mod.uk\"]\n";

impl PolicyFiles {
    fn write(lab_id: &str, big: usize) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("classifier-throughput-bench-{lab_id}"));
        std::fs::create_dir_all(dir.join("list"))?;
        let files = Self { dir, big };
        std::fs::write(files.policy(10), SMALL_POLICY)?;
        // As the datapath benchmark's list: distinct names, the lab's name last.
        let mut list = String::with_capacity(big * 28);
        for i in 0..big.saturating_sub(1) {
            list.push_str(&format!("host{i}.site{}.example\n", i % 9973));
        }
        list.push_str("www.gov.uk\n");
        std::fs::write(files.dir.join("list/domains"), list)?;
        let list_category = format!(
            "\n[categories.bench]\ndescription = \"The benchmark's large list\"\nlists = [\"{}\"]\n",
            files.dir.join("list").display()
        );
        std::fs::write(files.policy(big), &list_category)?;
        let shipped = council_policy_at_work();
        std::fs::write(files.dir.join("shipped.toml"), &shipped)?;
        std::fs::write(files.dir.join("shipped-big.toml"), shipped + &list_category)?;
        Ok(files)
    }

    /// The shipped policy's file for a `Config::Shipped`.
    fn shipped(&self, config: Config) -> PathBuf {
        match config {
            Config::Shipped { extra: 0 } => self.dir.join("shipped.toml"),
            _ => self.dir.join("shipped-big.toml"),
        }
    }

    fn policy(&self, domains: usize) -> PathBuf {
        if domains == self.big {
            self.dir.join("big.toml")
        } else {
            self.dir.join("small.toml")
        }
    }
}

impl Drop for PolicyFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The empty programs (`classifier-ebpf/src/bin/bench_floor.rs`) attached at the
/// classifier's hooks in the gateway's namespace; detached when dropped (the links belong to
/// the loaded object).
struct EmptyPrograms {
    _ebpf: aya::Ebpf,
}

impl EmptyPrograms {
    fn attach(lab: &Lab) -> anyhow::Result<Self> {
        use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};
        let ebpf = netns::run_in(&lab.gateway.netns, || {
            let mut ebpf =
                aya::Ebpf::load(BENCH_FLOOR_OBJECT).context("loading the bench object")?;
            let xdp: &mut Xdp = ebpf
                .program_mut("empty_xdp")
                .context("empty_xdp is in the bench object")?
                .try_into()?;
            xdp.load()?;
            xdp.attach(GATEWAY_LAN_IFACE, XdpMode::Driver)
                .context("attaching empty_xdp to the LAN interface")?;
            let tc: &mut SchedClassifier = ebpf
                .program_mut("empty_tc")
                .context("empty_tc is in the bench object")?
                .try_into()?;
            tc.load()?;
            for iface in [GATEWAY_LAN_IFACE, GATEWAY_WAN_IFACE] {
                tc.attach(iface, TcAttachType::Egress)
                    .with_context(|| format!("attaching empty_tc to {iface}'s egress"))?;
            }
            Ok(ebpf)
        })?;
        Ok(Self { _ebpf: ebpf })
    }
}

/// String rules in the gateway namespace's FORWARD path; removed on drop.
struct Strings {
    netns: String,
    removed: bool,
}

impl Strings {
    /// Loads `rules` string rules into [`CHAIN`] (one iptables-restore), jumped to from
    /// FORWARD.
    fn install(gateway: &Host, rules: usize) -> anyhow::Result<Self> {
        let mut script = format!("*filter\n:{CHAIN} - [0:0]\n");
        for i in 0..rules {
            script += &format!(
                "-A {CHAIN} -m string --algo bm --string host{i}.site{}.example -j DROP\n",
                i % 9973
            );
        }
        script += &format!("-A FORWARD -j {CHAIN}\nCOMMIT\n");
        // From here on the guard removes whatever part got in.
        let strings = Self {
            netns: gateway.netns.clone(),
            removed: false,
        };
        let mut command = Lab::command(gateway, "iptables-restore");
        command
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .context("starting iptables-restore (is iptables installed? `cargo xtask setup`)")?;
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().context("iptables-restore's stdin")?;
            stdin.write_all(script.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        anyhow::ensure!(
            output.status.success(),
            "iptables-restore of {rules} string rules failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let listed = strings.iptables(&["-S", CHAIN])?;
        let loaded = listed.lines().filter(|l| l.contains("--string")).count();
        anyhow::ensure!(loaded == rules, "{loaded} string rules loaded, not {rules}");
        Ok(strings)
    }

    fn iptables(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", &self.netns, "iptables"];
        full.extend_from_slice(args);
        classifier_lab::run_command("ip", &full)
    }

    /// Packets the string rules matched (and dropped) so far.
    fn matched_packets(&self) -> anyhow::Result<u64> {
        let listing = self.iptables(&["-nvxL", CHAIN])?;
        Ok(listing
            .lines()
            .skip(2)
            .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
            .sum())
    }

    fn remove(mut self) -> anyhow::Result<()> {
        self.removed = true;
        self.iptables(&["-D", "FORWARD", "-j", CHAIN])?;
        self.iptables(&["-F", CHAIN])?;
        self.iptables(&["-X", CHAIN])?;
        Ok(())
    }
}

impl Drop for Strings {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.iptables(&["-D", "FORWARD", "-j", CHAIN]);
            let _ = self.iptables(&["-F", CHAIN]);
            let _ = self.iptables(&["-X", CHAIN]);
        }
    }
}

impl Samples {
    fn rows(&self) -> Vec<Row> {
        let none = self
            .configs
            .iter()
            .position(|&c| c == Config::None)
            .expect("the configurations include none");
        let mut rows = Vec::new();
        for (m, &measure) in self.measures.iter().enumerate() {
            let baseline = &self.values[none][m];
            let baseline_median = median(baseline);
            for (c, config) in self.configs.iter().enumerate() {
                let values = &self.values[c][m];
                let paired: Vec<f64> = values.iter().zip(baseline).map(|(v, b)| v / b).collect();
                let (median_value, min, max) = (
                    median(values),
                    values.iter().copied().fold(f64::INFINITY, f64::min),
                    values.iter().copied().fold(0.0, f64::max),
                );
                rows.push(Row {
                    name: format!("{}: {}", measure.short(), config.label()),
                    configuration: config.label(),
                    measure: measure.label().to_string(),
                    unit: measure.unit().to_string(),
                    samples: values.clone(),
                    median: median_value,
                    min,
                    max,
                    ratio_to_none: median_value / baseline_median,
                    paired_ratio_median: median(&paired),
                    paired_ratio_min: paired.iter().copied().fold(f64::INFINITY, f64::min),
                    paired_ratio_max: paired.iter().copied().fold(0.0, f64::max),
                });
            }
        }
        rows
    }
}

/// The median (the upper one of an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn print_markdown(report: &Report) {
    println!(
        "\nThroughput through the lab gateway: kernel {}, {} x {} CPUs, {}; iperf3 TCP, {} \
         streams, {} s per run, {} repetitions interleaved round-robin; XDP mode {}; {}\n",
        report.kernel,
        report.machine.cpus,
        report.machine.cpu,
        report.date,
        report.streams,
        report.seconds_per_run,
        report.repetitions,
        report.xdp_mode,
        report.iptables
    );
    println!(
        "| measure | configuration | median | min | max | ratio to none | paired ratio (min..max) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for row in &report.rows {
        // Throughput in Mbit/s (the string rules bring it down to a few).
        let (scale, unit, digits) = if row.unit == "Gbit/s" {
            (1e-3, "Mbit/s", 1)
        } else {
            (1.0, "conn/s", 0)
        };
        println!(
            "| {} | {} | {:.digits$} {unit} | {:.digits$} | {:.digits$} | {:.3} | {:.3} ({:.3}..{:.3}) |",
            row.measure,
            row.configuration,
            row.median / scale,
            row.min / scale,
            row.max / scale,
            row.ratio_to_none,
            row.paired_ratio_median,
            row.paired_ratio_min,
            row.paired_ratio_max,
        );
    }
    println!();
    for (config, seconds) in &report.daemon_start_seconds {
        println!(
            "- daemon start to attached, {config}: median {:.2} s (min {:.2}, max {:.2})",
            median(seconds),
            seconds.iter().copied().fold(f64::INFINITY, f64::min),
            seconds.iter().copied().fold(0.0, f64::max)
        );
    }
    if let Some(probe) = &report.heavy_probe {
        match (probe.download_gbps, &probe.error) {
            (Some(gbps), _) => println!(
                "- not repeated (too slow here): one {} s download through {} string rules: \
                 {:.2} Mbit/s, {:.5} of the none median; {:.0} s from loading the rules to \
                 removing them",
                probe.seconds_per_run,
                thousands(probe.rules),
                gbps * 1e3,
                probe.ratio_to_none.unwrap_or(f64::NAN),
                probe.wall_seconds
            ),
            (None, error) => println!(
                "- not repeated (too slow here): one {} s download through {} string rules \
                 did not complete ({:.0} s): {}",
                probe.seconds_per_run,
                thousands(probe.rules),
                probe.wall_seconds,
                error.as_deref().unwrap_or("?")
            ),
        }
    }
    for note in &report.notes {
        println!("- {note}");
    }
}

fn iptables_version() -> anyhow::Result<String> {
    let output = Command::new("iptables")
        .arg("--version")
        .output()
        .context("running iptables (is it installed? `cargo xtask setup`)")?;
    anyhow::ensure!(output.status.success(), "iptables --version failed");
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn machine() -> Machine {
    let cpuinfo = read_trimmed("/proc/cpuinfo");
    let meminfo = read_trimmed("/proc/meminfo");
    Machine {
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_kib: meminfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0),
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
