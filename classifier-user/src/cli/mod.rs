//! The `classifier` command line: one binary, one subcommand per job.

mod audit;
mod classify_pcap;
mod completions;
mod degradation;
mod exceptions;
mod export;
mod flows;
mod lists;
mod policy;
mod preflight;
mod run;
mod status;
mod stop;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::service::{self, LogFormat};

const EXAMPLES: &str = "\
Examples:
  # Run the daemon on the gateway's LAN interface (as root)
  classifier run --iface eth1

  # What is in force now, and why may this PC not watch YouTube?
  classifier status
  classifier policy explain 192.0.2.10 www.youtube.com

  # Check an edited policy, then make the daemon read it (a bad file changes nothing)
  classifier policy check /etc/classifier/policy.toml && classifier policy reload

  # Show the ten largest flows of the running daemon, or all of them as JSON
  classifier flows --top 10
  classifier flows --json

  # What the policy would do with the flows of a capture, before deploying it
  classifier classify-pcap capture.pcapng --policy new-policy.toml

  # An investigation export (as root; needs a case and a requester; audited in the log
  # and the journal), and the audit check
  sudo classifier export --case HR-2026-014 --requested-by 'J. Smith' --client 192.0.2.10 \
      --format csv --out case-014.csv
  sudo classifier audit verify

  # Under systemd: reload the policy, restart (the datapath is handed over), stop (detached)
  systemctl reload classifier; systemctl restart classifier; systemctl stop classifier";

/// eBPF traffic classifier for organisation edge gateways.
///
/// An XDP program on the gateway's LAN interface and a TC program on its egress count every
/// flow in the kernel; the daemon loads them, pins their maps under /sys/fs/bpf, and reports.
#[derive(Debug, Parser)]
#[command(name = "classifier", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log filter, e.g. `info`, `debug`, `classifier_user=debug` (also RUST_LOG).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    log: String,

    /// How log lines look: under systemd (stderr is the journal) `auto` starts each with
    /// its syslog priority, so `journalctl -p warning` finds the warnings.
    #[arg(
        long,
        global = true,
        env = "CLASSIFIER_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: load and attach the datapath and report per-flow counters.
    Run(run::RunArgs),
    /// Check this kernel for every feature the datapath needs (helpers, maps, BTF, TCX), and
    /// whether its verifier takes the BPF programs `run` would load.
    Preflight(preflight::PreflightArgs),
    /// What the running daemon enforces: interface, policy, period in force, counters.
    Status(status::StatusArgs),
    /// Show the flows of a running daemon (read from its pinned flow table).
    Flows(flows::FlowsArgs),
    /// Check, reload, show and explain the policy.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Import UT1 / Shallalist domain lists (checked, swapped in atomically, daemon
    /// reloaded), or go back to the previous copy.
    #[command(subcommand)]
    Lists(lists::ListsCommand),
    /// List, grant and end exceptions (kept in an exceptions file beside the policy).
    #[command(subcommand)]
    Exceptions(exceptions::ExceptionsCommand),
    /// Export the flow records an investigation needs (CSV, JSON Lines, IPFIX), audited.
    Export(export::ExportArgs),
    /// The bandwidth-degradation log: use, shares, withheld volume and events per interval.
    Degradation(degradation::DegradationArgs),
    /// Check the export audit log (alone and against the journal).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Classify the flows of a pcap/pcapng capture with the real datapath, offline.
    ClassifyPcap(classify_pcap::ClassifyPcapArgs),
    /// Stop a running daemon: detach the datapath, or hand it to the next daemon (how the
    /// systemd unit stops and restarts it).
    Stop(stop::StopArgs),
    /// Shell completions: `classifier completions bash > /etc/bash_completion.d/classifier`.
    Completions(completions::CompletionsArgs),
    /// Write a man page per subcommand into a directory (the Debian package's).
    #[command(hide = true)]
    ManPages(completions::ManPagesArgs),
}

/// Parses the command line, runs the subcommand, and turns an error into one line on
/// stderr and exit status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    service::init_logging(&cli.log, cli.log_format);
    let result = match cli.command {
        Command::Run(args) => run::execute(&args),
        Command::Preflight(args) => preflight::execute(&args),
        Command::Status(args) => status::execute(&args),
        Command::Flows(args) => flows::execute(&args),
        Command::Policy(command) => policy::execute(&command),
        Command::Lists(command) => lists::execute(&command),
        Command::Exceptions(command) => exceptions::execute(&command),
        Command::Export(args) => export::execute(&args),
        Command::Degradation(args) => degradation::execute(&args),
        Command::Audit(command) => audit::execute(&command),
        Command::ClassifyPcap(args) => classify_pcap::execute(&args),
        Command::Stop(args) => stop::execute(&args),
        Command::Completions(args) => completions::execute(&args, command()),
        Command::ManPages(args) => completions::man_pages(&args, command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}error: {err:#}", service::error_prefix());
            ExitCode::FAILURE
        }
    }
}

/// The whole command line's definition (for completions and man pages).
pub fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every argument, flag and option of every subcommand (hidden ones too) as
    /// `classifier sub sub --flag`, with no help text.
    fn arguments_without_help(command: &clap::Command, path: &str) -> Vec<String> {
        let path = format!("{path} {}", command.get_name());
        let mut missing: Vec<String> = command
            .get_arguments()
            .filter(|arg| !matches!(arg.get_id().as_str(), "help" | "version"))
            .filter(|arg| arg.get_help().is_none() && arg.get_long_help().is_none())
            .map(|arg| match arg.get_long() {
                Some(long) => format!("{path} --{long}"),
                None => format!("{path} <{}>", arg.get_id()),
            })
            .collect();
        for sub in command.get_subcommands() {
            missing.extend(arguments_without_help(sub, &path));
        }
        missing
    }

    #[test]
    fn every_argument_of_every_subcommand_has_help() {
        let mut command = Cli::command();
        command.build();
        let missing = arguments_without_help(&command, "");
        assert!(missing.is_empty(), "no help text: {missing:#?}");
        let walked = command.get_subcommands().count();
        assert!(walked > 10, "the walk saw {walked} subcommands");
    }

    #[test]
    fn the_walk_finds_an_argument_without_help() {
        let bare = clap::Command::new("demo")
            .subcommand(clap::Command::new("sub").arg(clap::Arg::new("json").long("json")));
        assert_eq!(arguments_without_help(&bare, ""), [" demo sub --json"]);
    }
}
