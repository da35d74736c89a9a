//! `classifier flows`: the flow table of a running daemon.

use std::{io::Write as _, path::PathBuf};

use clap::Args;

use crate::{flows, loader::DEFAULT_PIN_DIR};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  classifier flows --top 10
  classifier flows --json | jq 'select(.download.bytes > 1000000)'")]
pub struct FlowsArgs {
    /// The running daemon's pin directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,

    /// One JSON object per flow and line, instead of a table.
    #[arg(long)]
    json: bool,

    /// Show only the N largest flows.
    #[arg(long, value_name = "N")]
    top: Option<usize>,
}

pub fn execute(args: &FlowsArgs) -> anyhow::Result<()> {
    let records = flows::read_pinned(&args.pin_dir)?;
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
