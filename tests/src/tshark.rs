//! Wireshark's IPFIX dissector, run with `tshark` on a capture of the live export: the
//! second collector, written independently of nfdump, and one that names every standard
//! element it decodes (applicationName, httpRequestHost, forwardingStatus, MACs, ...).

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// One IPFIX data record as tshark decodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpfixRecord {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub protocol: u8,
    /// flowDirection: 0 client → server, 1 server → client.
    pub direction: u8,
    pub end_reason: u8,
    pub packets: u64,
    pub bytes: u64,
    /// flowStartMilliseconds and flowEndMilliseconds, as tshark prints them.
    pub start: String,
    pub end: String,
    pub ingress_interface: u32,
    pub egress_interface: u32,
    pub source_mac: String,
    pub destination_mac: String,
    /// forwardingStatus' status (its top two bits): 1 forwarded, 2 dropped.
    pub forwarding_status: u8,
    pub application_name: String,
    pub application_category: String,
    /// Absent when the flow had no name (tshark shows no empty string).
    pub http_request_host: Option<String>,
    /// Enterprise-specific fields in the record (of any enterprise number).
    pub enterprise_fields: usize,
}

/// Every IPFIX data record in `pcap` sent to UDP `port`, in order.
pub fn read_ipfix(pcap: &Path, port: u16) -> anyhow::Result<Vec<IpfixRecord>> {
    let output = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-d", &format!("udp.port=={port},cflow")])
        .args(["-T", "json", "--no-duplicate-keys"])
        .output()
        .context("running tshark (apt install tshark; `cargo xtask setup` does)")?;
    if !output.status.success() {
        bail!(
            "tshark -r {}: {}",
            pcap.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let packets: Vec<Value> =
        serde_json::from_slice(&output.stdout).context("reading tshark's JSON")?;
    let mut records = Vec::new();
    for packet in &packets {
        for cflow in layers(&packet["_source"]["layers"]["cflow"]) {
            records.extend(records_of(cflow)?);
        }
    }
    Ok(records)
}

/// A layer that occurs once is an object, several times an array.
fn layers(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        one => vec![one],
    }
}

/// The data records of one IPFIX message: its sets' `Flow N` objects.
fn records_of(message: &Value) -> anyhow::Result<Vec<IpfixRecord>> {
    let mut records = Vec::new();
    let Some(fields) = message.as_object() else {
        return Ok(records);
    };
    for (name, set) in fields {
        if !name.starts_with("Set ") {
            continue;
        }
        for (name, flow) in set.as_object().into_iter().flatten() {
            if name.starts_with("Flow ") {
                records.push(record(flow).with_context(|| format!("{flow:#}"))?);
            }
        }
    }
    Ok(records)
}

fn record(flow: &Value) -> anyhow::Result<IpfixRecord> {
    let text = |key: &str| -> anyhow::Result<String> {
        flow[key]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no {key}"))
    };
    let number = |key: &str| -> anyhow::Result<u64> { Ok(text(key)?.parse()?) };
    let address = |v4: &str, v6: &str| -> anyhow::Result<IpAddr> {
        Ok(text(v4).or_else(|_| text(v6))?.parse()?)
    };
    let port = |key: &str| -> anyhow::Result<u16> { Ok(text(key)?.parse()?) };
    let times = &flow["cflow.timedelta_tree"];
    let enterprise_fields = match &flow["cflow.enterprise_private_entry"] {
        Value::Array(items) => items.len(),
        Value::Null => 0,
        _ => 1,
    };
    Ok(IpfixRecord {
        src: SocketAddr::new(
            address("cflow.srcaddr", "cflow.srcaddrv6")?,
            port("cflow.srcport")?,
        ),
        dst: SocketAddr::new(
            address("cflow.dstaddr", "cflow.dstaddrv6")?,
            port("cflow.dstport")?,
        ),
        protocol: number("cflow.protocol")? as u8,
        direction: number("cflow.direction")? as u8,
        end_reason: number("cflow.flow_end_reason")? as u8,
        packets: number("cflow.packets")?,
        bytes: number("cflow.octets")?,
        start: times["cflow.abstimestart"]
            .as_str()
            .context("no flowStartMilliseconds")?
            .to_owned(),
        end: times["cflow.abstimeend"]
            .as_str()
            .context("no flowEndMilliseconds")?
            .to_owned(),
        ingress_interface: number("cflow.inputint")? as u32,
        egress_interface: number("cflow.outputint")? as u32,
        source_mac: text("cflow.srcmac")?,
        destination_mac: text("cflow.dstmac")?,
        forwarding_status: flow["Forwarding Status"]["cflow.forwarding_status"]
            .as_str()
            .context("no forwardingStatus")?
            .parse()?,
        application_name: text("cflow.appl_name")?,
        application_category: text("cflow.application_category_name")?,
        http_request_host: text("cflow.http_request_host").ok(),
        enterprise_fields,
    })
}
