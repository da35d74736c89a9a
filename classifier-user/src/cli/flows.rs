//! `classifier flows`: the flows of the running daemon.

use std::{io::Write as _, path::PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::{
    control::{self, Request},
    flows::{self, FlowRecord},
};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  classifier flows --top 10
  classifier flows --category streaming-video
  classifier flows --verdict block
  classifier flows --json | jq 'select(.download.bytes > 1000000)'")]
pub struct FlowsArgs {
    /// The running daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    control_socket: PathBuf,

    /// One JSON object per flow and line, instead of a table.
    #[arg(long)]
    json: bool,

    /// Show only the N largest flows.
    #[arg(long, value_name = "N")]
    top: Option<usize>,

    /// Only flows of this client address.
    #[arg(long, value_name = "ADDR")]
    client: Option<std::net::IpAddr>,

    /// Only flows of this category (e.g. streaming-video).
    #[arg(long, value_name = "NAME")]
    category: Option<String>,

    /// Only flows with this verdict.
    #[arg(long, value_parser = ["allow", "block", "shape", "undecided"])]
    verdict: Option<String>,
}

pub fn execute(args: &FlowsArgs) -> anyhow::Result<()> {
    let lines = control::ask(&args.control_socket, &Request::Flows)?;
    let mut records: Vec<FlowRecord> = lines
        .iter()
        .map(|line| {
            serde_json::from_str(line).context("the daemon sent a flow this tool cannot read")
        })
        .collect::<anyhow::Result<_>>()?;
    records.retain(|r| args.client.is_none_or(|c| r.client.ip() == c));
    records.retain(|r| args.category.as_ref().is_none_or(|c| &r.category == c));
    records.retain(|r| args.verdict.as_ref().is_none_or(|v| &r.verdict == v));
    let top = args.top.unwrap_or(records.len());
    let mut out = std::io::stdout().lock();
    if args.json {
        for record in records.iter().take(top) {
            serde_json::to_writer(&mut out, record)?;
            writeln!(out)?;
        }
    } else {
        flows::write_table(&mut out, &records, top)?;
    }
    Ok(())
}
