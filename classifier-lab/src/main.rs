//! `classifier-lab`: the network-namespace lab by hand (the demo, a lab to explore, the
//! removal of leftovers). Not part of the product: the `classifier` binary a gateway runs has
//! no lab commands.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use classifier_lab::{self as lab, Lab, LabSpec, demo::DemoOptions};
use classifier_user::{
    preflight,
    service::{self, LogFormat},
};

const EXAMPLES: &str = "\
Examples (as root):
  # See the classifier work: a lab, the daemon on its gateway, live per-flow counters
  classifier-lab demo

  # A lab to explore with `ip netns exec` (Ctrl-C removes it)
  classifier-lab up --clients 3

  # Remove lab namespaces and pins left behind by a killed test run
  classifier-lab down";

/// A lab of network namespaces (clients, gateway, server) for the classifier's demo and tests.
///
/// Everything lives in namespaces the lab creates, with documentation addresses only and no
/// default route; it is removed at the end, also on Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "classifier-lab", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: LabCommand,

    /// Log filter, e.g. `info`, `debug` (also RUST_LOG).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Run the demo: a lab, the daemon on its gateway, clients downloading over IPv4 and
    /// IPv6, live per-flow counters; everything is removed at the end.
    Demo {
        /// How long the clients generate traffic.
        #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// How often the daemon prints its flow table.
        #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
        report_interval: Duration,
        /// The `classifier` binary to run as the gateway's daemon [default: the one beside
        /// this binary].
        #[arg(long, value_name = "PATH", env = "CLASSIFIER_BIN")]
        classifier: Option<PathBuf>,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    service::init_logging(&cli.log, LogFormat::Auto);
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: LabCommand) -> anyhow::Result<()> {
    // Namespaces, veths and mounts besides the daemon's own needs: in practice, root.
    let mut needed = preflight::RUN_CAPABILITIES.to_vec();
    needed.push(preflight::NETNS_CAPABILITY);
    preflight::require_capabilities("lab", &needed)?;
    match command {
        LabCommand::Demo {
            duration,
            report_interval,
            classifier,
        } => lab::demo::run(&DemoOptions {
            binary: classifier.map_or_else(classifier_beside_us, Ok)?,
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

/// The `classifier` binary cargo builds into the same directory as this one.
fn classifier_beside_us() -> anyhow::Result<PathBuf> {
    let here = std::env::current_exe().context("locating the classifier-lab binary")?;
    let binary = here.with_file_name("classifier");
    anyhow::ensure!(
        binary.exists(),
        "{} not found: build it (`cargo build -p classifier-user`) or name one with --classifier",
        binary.display()
    );
    Ok(binary)
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
