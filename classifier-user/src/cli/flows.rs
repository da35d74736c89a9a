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

    /// Every column, whole, however wide the terminal (otherwise the table fits the
    /// terminal: COLUMNS, else the terminal's width, else 100 columns when not a terminal;
    /// packet counts, age, method and application go first).
    #[arg(long)]
    wide: bool,
}

/// The table's width when not on a terminal and COLUMNS is not set.
const WIDTH_NOT_A_TERMINAL: usize = 100;

/// The width the table fits: `--wide` none; else COLUMNS; else the terminal's.
fn table_width(wide: bool, columns: Option<&str>, terminal: Option<usize>) -> usize {
    if wide {
        return usize::MAX;
    }
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c > 0)
        .or(terminal)
        .unwrap_or(WIDTH_NOT_A_TERMINAL)
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
        let terminal = terminal_size::terminal_size_of(std::io::stdout())
            .map(|(terminal_size::Width(w), _)| usize::from(w));
        let columns = std::env::var("COLUMNS").ok();
        let width = table_width(args.wide, columns.as_deref(), terminal);
        flows::write_table(&mut out, &records, top, width)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_width_is_wide_columns_terminal_or_100() {
        assert_eq!(table_width(true, Some("80"), Some(120)), usize::MAX);
        assert_eq!(table_width(false, Some("80"), Some(120)), 80);
        assert_eq!(table_width(false, Some("junk"), Some(120)), 120);
        assert_eq!(table_width(false, None, None), WIDTH_NOT_A_TERMINAL);
    }
}
