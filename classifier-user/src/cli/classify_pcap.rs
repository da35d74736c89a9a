//! `classifier classify-pcap`: a capture through the real datapath, one line per flow.

use std::{
    io::{self, Write},
    path::PathBuf,
};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use crate::{
    flows::FlowRecord,
    policy::Policy,
    replay::{Moment, Replay, ReplayCounts},
};

#[derive(Debug, Args)]
#[command(after_help = "\
Each flow's packets run through the same BPF programs the gateway runs (BPF_PROG_TEST_RUN,
so it needs root or CAP_BPF), with the policy's tables installed; the verdict is the one the
datapath works out for the period asked about.

Examples:
  # What would the default council policy do with this capture now?
  classifier classify-pcap lunchtime.pcapng

  # ... on Monday morning (working hours)
  classifier classify-pcap lunchtime.pcapng --at 2026-11-23T10:00:00Z

  # A candidate policy, at lunch, as JSON lines for jq
  classifier classify-pcap capture.pcap --policy new-policy.toml --period lunch --json

  # Several captures, each on its own (the programs are loaded once)
  classifier classify-pcap evidence/*.pcap --json")]
pub struct ClassifyPcapArgs {
    /// The captures: pcap or pcapng; Ethernet, Linux cooked (`tcpdump -i any`) or raw IP.
    /// Each is replayed on its own, from a datapath that has seen nothing.
    #[arg(value_name = "FILE", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,

    /// Policy file (default: the built-in council policy).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// The moment the verdicts are given for: its schedule period and the exceptions valid
    /// then (RFC 3339, e.g. 2026-11-23T10:00:00Z; default: now).
    #[arg(long, value_name = "TIME")]
    pub at: Option<jiff::Timestamp>,

    /// Give the verdicts of this schedule period (working, lunch, outside, ...) instead of
    /// the one in force at --at.
    #[arg(long)]
    pub period: Option<String>,

    /// One JSON object per flow (capture, client, server, proto, name, category, app, method,
    /// verdict).
    #[arg(long)]
    pub json: bool,
}

/// One flow as `--json` prints it.
#[derive(Debug, Serialize)]
struct JsonFlow<'a> {
    /// The capture file, as given.
    capture: String,
    client: String,
    server: String,
    proto: &'a str,
    name: Option<&'a str>,
    category: &'a str,
    app: &'a str,
    method: &'a str,
    verdict: &'a str,
    group: &'a str,
    ech: bool,
    unreadable: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    evasion: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    second_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    second_category: Option<&'a str>,
    upload_packets: u64,
    upload_bytes: u64,
    download_packets: u64,
    download_bytes: u64,
}

pub fn execute(args: &ClassifyPcapArgs) -> anyhow::Result<()> {
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::default_council(),
    };
    let at = args.at.unwrap_or_else(jiff::Timestamp::now);
    let period = match &args.period {
        Some(period) if !policy.periods.contains(period) => anyhow::bail!(
            "--period {period}: the policy has no such period (it has: {})",
            policy.periods.join(", ")
        ),
        Some(period) => period.clone(),
        None => policy.schedule.period_at(at).name,
    };
    let moment = Moment { period, at };
    let origin = policy.origin.clone();
    let mut replay = Replay::new(policy, &moment).context(
        "loading the datapath to replay the capture (needs root or CAP_BPF, and a mounted bpffs)",
    )?;
    let mut out = io::stdout().lock();
    for file in &args.files {
        replay.file(file)?;
        let replayed = replay.take_capture()?;
        let capture = file.display().to_string();
        if !args.json && args.files.len() > 1 {
            writeln!(out, "# {capture}")?;
        }
        for (index, flow) in replayed.flows.iter().enumerate() {
            if args.json {
                serde_json::to_writer(&mut out, &json_flow(&capture, flow))?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", ndpi_style_line(index + 1, flow))?;
            }
        }
        eprintln!(
            "{capture}: {}; {} flows; policy {origin}, period `{}`",
            describe_counts(&replayed.counts),
            replayed.flows.len(),
            moment.period
        );
    }
    Ok(())
}

fn json_flow<'a>(capture: &str, flow: &'a FlowRecord) -> JsonFlow<'a> {
    JsonFlow {
        capture: capture.to_owned(),
        client: flow.client.to_string(),
        server: flow.server.to_string(),
        proto: &flow.protocol,
        name: flow.name.as_deref(),
        category: &flow.category,
        app: &flow.app,
        method: &flow.method,
        verdict: &flow.verdict,
        group: &flow.group,
        ech: flow.ech,
        unreadable: flow.unreadable,
        evasion: &flow.evasion,
        second_name: flow.second_name.as_deref(),
        second_category: flow.second_category.as_deref(),
        upload_packets: flow.upload.packets,
        upload_bytes: flow.upload.bytes,
        download_packets: flow.download.packets,
        download_bytes: flow.download.bytes,
    }
}

/// `  1  TCP 192.0.2.10:42904 <-> 203.0.113.10:443 [name: ...][proto: tls/sni]...`, as
/// nDPI's ndpiReader lists flows.
fn ndpi_style_line(index: usize, flow: &FlowRecord) -> String {
    let mut line = format!(
        "{index:>4}  {} {} <-> {}",
        flow.protocol.to_uppercase(),
        flow.client,
        flow.server
    );
    if let Some(name) = &flow.name {
        line.push_str(&format!(" [name: {name}]"));
    }
    line.push_str(&format!(
        " [app: {}][method: {}][cat: {}][group: {}][verdict: {}]",
        flow.app, flow.method, flow.category, flow.group, flow.verdict
    ));
    if flow.ech {
        line.push_str("[ECH]");
    }
    if flow.unreadable {
        line.push_str("[unreadable]");
    }
    if !flow.evasion.is_empty() {
        line.push_str(&format!("[evasion: {}]", flow.evasion.join(",")));
    }
    if let Some(second) = &flow.second_name {
        line.push_str(&format!("[second name: {second}]"));
    }
    line.push_str(&format!(
        "[{} pkts/{} bytes <-> {} pkts/{} bytes]",
        flow.upload.packets, flow.upload.bytes, flow.download.packets, flow.download.bytes
    ));
    line
}

fn describe_counts(counts: &ReplayCounts) -> String {
    let mut text = format!(
        "{} packets ({} client→server, {} server→client",
        counts.packets, counts.upload, counts.download
    );
    if counts.not_ip > 0 {
        text.push_str(&format!(", {} not IP", counts.not_ip));
    }
    if counts.refused > 0 {
        text.push_str(&format!(", {} refused by the test harness", counts.refused));
    }
    text.push(')');
    text
}
