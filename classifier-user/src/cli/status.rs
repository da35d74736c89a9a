//! `classifier status`: what the running daemon enforces, and its counters.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::{
    control::{self, Request},
    daemon::Status,
};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  classifier status
  classifier status --json | jq .period")]
pub struct StatusArgs {
    /// The running daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    control_socket: PathBuf,

    /// The status as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn execute(args: &StatusArgs) -> anyhow::Result<()> {
    let lines = control::ask(&args.control_socket, &Request::Status)?;
    let line = lines.first().context("the daemon sent no status")?;
    if args.json {
        println!("{line}");
        return Ok(());
    }
    let status: Status = serde_json::from_str(line).context("the daemon's status")?;
    let next = status
        .next_change
        .map_or_else(|| "none".to_owned(), |t| t.to_string());
    let tc = match status.tc_attach.as_str() {
        "netlink" => ", TC as clsact filters",
        "tcx" => ", TC as TCX links",
        _ => "",
    };
    println!(
        "interface:  {} (XDP {}{tc}{})",
        status.interface,
        status.xdp_mode,
        if status.adopted {
            ", taken over from the previous daemon"
        } else {
            ""
        }
    );
    println!(
        "fail fast:  answers sent by {} ({})",
        status.fail_fast_replies.way, status.fail_fast_replies.reason
    );
    println!(
        "policy:     {} ({} categories, {} domains, {} rules, {} exceptions active)",
        status.policy, status.categories, status.domains, status.rules, status.exceptions_active
    );
    println!(
        "period:     {} ({}); next change {next}",
        status.period, status.period_reason
    );
    println!("generation: {}", status.policy_generation);
    println!(
        "flows:      {} in the table; blocked {} packets / {} bytes; shaped {} bytes",
        status.flows, status.blocked_packets, status.blocked_bytes, status.shaped_bytes
    );
    let shaping = &status.shaping;
    println!(
        "shaping:    {} on {}; {} rules, {} client classes; EDT pacing: {}",
        shaping.method,
        if shaping.interfaces.is_empty() {
            "no interface".to_owned()
        } else {
            shaping.interfaces.join(", ")
        },
        shaping.rules,
        shaping.client_classes,
        shaping.edt_pacing
    );
    print_allowances(&status.allowances);
    let records = &status.records;
    println!(
        "records:    {} flows ended and recorded ({} found evicted by the LRU table); {} could \
         not be written",
        records.flows_ended, records.flows_evicted, records.records_failed
    );
    println!(
        "quic:       {} Initials shed (decryption queue full; judged as QUIC without a name)",
        status.quic_initials_shed
    );
    println!("uptime:     {} s", status.uptime_seconds);
    println!("datapath:   {}", serde_json::to_string(&status.datapath)?);
    Ok(())
}

/// Most clients `status` lists by their allowances (the JSON has them all).
const ALLOWANCES_SHOWN: usize = 20;

/// The clients the datapath has counted allowances for, spent and fewest left first.
fn print_allowances(allowances: &[crate::policy::allowances::AllowanceLeft]) {
    if allowances.is_empty() {
        println!("allowances: no client has used a rule's allowance");
        return;
    }
    println!(
        "allowances: {} counted, {} spent",
        allowances.len(),
        allowances.iter().filter(|a| a.spent).count()
    );
    for allowance in allowances.iter().take(ALLOWANCES_SHOWN) {
        let who = allowance
            .client
            .map_or_else(|| "everyone (shared)".to_owned(), |c| c.to_string());
        println!("  {who:<24} {}", allowance.render());
    }
    if allowances.len() > ALLOWANCES_SHOWN {
        println!(
            "  ... and {} more (`classifier status --json` lists them all)",
            allowances.len() - ALLOWANCES_SHOWN
        );
    }
}
