//! `classifier run`: the daemon.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
use tracing::info;

use crate::{
    flows,
    loader::{DEFAULT_PIN_DIR, Datapath, XdpModeChoice},
    metrics, netns, preflight,
};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  classifier run --iface eth1
  classifier run --iface lan0 --netns gw --print-flows --report-interval 2s")]
pub struct RunArgs {
    /// The gateway's LAN-facing interface: XDP on its ingress, TC on its egress.
    #[arg(long, short = 'i', value_name = "IFACE")]
    iface: String,

    /// Network namespace the interface is in (as made by `ip netns add`). Only the network
    /// namespace is entered: maps are still pinned in the host's /sys/fs/bpf.
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,

    /// Directory on a BPF filesystem where the maps are pinned; an existing one is re-used.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,

    /// XDP attach mode: native (driver) is fastest; auto falls back to generic with a warning.
    #[arg(long, value_enum, default_value_t)]
    xdp_mode: XdpModeChoice,

    /// How often to log counters (and print flows with --print-flows), e.g. `10s`, `1m`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    report_interval: Duration,

    /// Print the flow table to stdout at every report.
    #[arg(long)]
    print_flows: bool,

    /// How many flows (largest first) --print-flows shows.
    #[arg(long, value_name = "N", default_value_t = 20)]
    top: usize,

    /// Write the daemon's PID to FILE once the datapath is attached (removed at exit).
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
}

pub fn execute(args: &RunArgs) -> anyhow::Result<()> {
    preflight::require_root("run")?;
    preflight::require_kernel_btf()?;
    if let Some(name) = &args.netns {
        netns::enter(name)?;
    }
    preflight::require_interface(&args.iface, args.netns.as_deref())?;
    preflight::require_bpffs(&args.pin_dir)?;

    let mut datapath = Datapath::load_pinned(&args.pin_dir)?;
    let outcome = attach_and_serve(&mut datapath, args);
    let shutdown = datapath.shutdown();
    if let Some(pid_file) = &args.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    if outcome.is_ok() && shutdown.is_ok() {
        info!(pin_dir = %args.pin_dir.display(), "programs detached, maps unpinned");
    }
    outcome.and(shutdown)
}

fn attach_and_serve(datapath: &mut Datapath, args: &RunArgs) -> anyhow::Result<()> {
    let xdp_mode = datapath.attach_lan(&args.iface, args.xdp_mode)?;
    info!(
        interface = %args.iface,
        xdp_mode = %xdp_mode,
        pin_dir = %args.pin_dir.display(),
        "datapath attached: XDP on ingress, TC on egress"
    );
    if let Some(pid_file) = &args.pid_file {
        write_pid_file(pid_file)?;
    }
    // Built after entering the namespace: worker threads inherit the caller's namespace.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(report_until_stopped(datapath, args))
}

fn write_pid_file(path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing pid file {}", path.display()))
}

async fn report_until_stopped(datapath: &Datapath, args: &RunArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut ticks = tokio::time::interval(args.report_interval);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => report(datapath, args)?,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    info!("shutting down");
    Ok(())
}

fn report(datapath: &Datapath, args: &RunArgs) -> anyhow::Result<()> {
    let records = flows::read_table(&datapath.flow_table()?)?;
    let stats = metrics::read_stats(&datapath.stats_table()?)?;
    info!(
        flows = records.len(),
        packets = stats.get(classifier_common::stats::Stat::Packets),
        malformed = stats.get(classifier_common::stats::Stat::Malformed),
        fragments = stats.get(classifier_common::stats::Stat::Fragments),
        "datapath counters"
    );
    if args.print_flows {
        let mut out = std::io::stdout().lock();
        flows::write_table(&mut out, &records, args.top)?;
        writeln!(out)?;
    }
    Ok(())
}
