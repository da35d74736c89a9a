//! `classifier lab`: the network-namespace lab.

use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;

use crate::{
    lab::{self, Lab, LabSpec, demo::DemoOptions},
    preflight,
};

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Run the demo: a lab, the daemon on its gateway, clients downloading over IPv4 and
    /// IPv6, live per-flow counters; everything is removed at the end.
    Demo {
        /// How long the clients generate traffic.
        #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// How often the daemon prints its flow table.
        #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
        report_interval: Duration,
    },
    /// Bring a lab up and keep it until Ctrl-C, to explore with `ip netns exec`.
    Up {
        /// Number of client hosts.
        #[arg(long, default_value_t = 2)]
        clients: usize,
        /// Leave the switch port facing the gateway without the pass-through XDP program
        /// that makes it take XDP_TX frames at once: a plain veth LAN, as a gateway in a
        /// container has.
        #[arg(long)]
        plain_veth: bool,
        /// The gateway masquerades on its WAN interface (nftables); the server sees only
        /// the gateway's address. Run the daemon with `--nat-mark-mask`.
        #[arg(long)]
        nat: bool,
    },
    /// Remove lab namespaces and pins left by runs that were killed.
    Down {
        /// Also remove labs whose creating process still runs.
        #[arg(long)]
        all: bool,
    },
}

pub fn execute(command: LabCommand) -> anyhow::Result<()> {
    // Namespaces, veths and mounts besides the daemon's own needs: in practice, root.
    let mut needed = preflight::RUN_CAPABILITIES.to_vec();
    needed.push(preflight::NETNS_CAPABILITY);
    preflight::require_capabilities("lab", &needed)?;
    match command {
        LabCommand::Demo {
            duration,
            report_interval,
        } => lab::demo::run(&DemoOptions {
            binary: std::env::current_exe().context("locating the classifier binary")?,
            duration,
            report_interval,
        }),
        LabCommand::Up {
            clients,
            plain_veth,
            nat,
        } => hold_lab_up(&LabSpec {
            clients,
            xdp_pass_through: !plain_veth,
            nat,
            ..LabSpec::default()
        }),
        LabCommand::Down { all } => remove_leftovers(all),
    }
}

fn hold_lab_up(spec: &LabSpec) -> anyhow::Result<()> {
    anyhow::ensure!(spec.clients >= 1, "--clients must be at least 1");
    let lab = Lab::up(spec)?;
    println!("lab {} is up; Ctrl-C removes it", lab.id);
    print!("{}", lab.describe());
    println!("enter a host with `ip netns exec NAMESPACE bash`; run the daemon with");
    println!(
        "  classifier run --netns {} --iface {} --pin-dir {}",
        lab.gateway.netns,
        lab.gateway.iface,
        lab.pin_dir().display()
    );
    // The lab's signal handler tears it down and exits on Ctrl-C.
    loop {
        std::thread::park();
    }
}

fn remove_leftovers(all: bool) -> anyhow::Result<()> {
    let report = lab::cleanup::remove_leftovers(all)?;
    for netns in &report.removed_namespaces {
        println!("removed network namespace {netns}");
    }
    for dir in &report.removed_pin_dirs {
        println!("removed pin directory {}", dir.display());
    }
    for netns in &report.skipped_live {
        println!("kept {netns}: its process still runs (use --all to remove it anyway)");
    }
    if report.removed_namespaces.is_empty() && report.removed_pin_dirs.is_empty() {
        println!("no lab leftovers");
    }
    Ok(())
}
