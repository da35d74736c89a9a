//! Reading the kernel's flow table into [`FlowRecord`]s, and showing them.

use std::{
    io::{self, Write},
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::Path,
};

use anyhow::Context as _;
use aya::maps::{HashMap, Map, MapData};
use classifier_common::{
    flow::{DirectionCounters, FlowEntry, FlowKey, flow_flags, ip_proto},
    maps,
};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// One flow as people and programs outside the daemon see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowRecord {
    /// The LAN-side host.
    pub client: SocketAddr,
    /// The host beyond the gateway.
    pub server: SocketAddr,
    /// "tcp", "udp", "icmp", "ipv6-icmp" or the IP protocol number.
    pub protocol: String,
    /// Client → server.
    pub upload: Counters,
    /// Server → client.
    pub download: Counters,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// 802.1Q VLAN id of the client's packets, when tagged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// True when the first packet came from the server side.
    pub server_initiated: bool,
}

/// Packets and layer-3 bytes in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

impl From<DirectionCounters> for Counters {
    fn from(c: DirectionCounters) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

impl FlowRecord {
    pub fn from_entry(key: &FlowKey, entry: &FlowEntry, clock: &BootClock) -> Self {
        let client = socket_addr(key.client_addr, key.client_port);
        let server = socket_addr(key.server_addr, key.server_port);
        Self {
            client,
            server,
            protocol: protocol_name(key.protocol),
            upload: entry.upload.into(),
            download: entry.download.into(),
            first_seen: clock.timestamp(entry.first_seen_ns),
            last_seen: clock.timestamp(entry.last_seen_ns),
            vlan: (entry.vlan_id != 0).then_some(entry.vlan_id),
            server_initiated: entry.flags & flow_flags::STARTED_DOWNSTREAM != 0,
        }
    }

    /// Bytes both ways.
    pub fn total_bytes(&self) -> u64 {
        self.upload.bytes + self.download.bytes
    }
}

/// Converts the kernel's `bpf_ktime_get_boot_ns()` stamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    /// Wall-clock time at boot.
    boot: Timestamp,
}

impl BootClock {
    /// Reads both clocks now.
    pub fn now() -> anyhow::Result<Self> {
        let since_boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .context("reading CLOCK_BOOTTIME")?;
        let since_boot = SignedDuration::new(since_boot.tv_sec(), since_boot.tv_nsec() as i32);
        let boot = Timestamp::now()
            .checked_sub(since_boot)
            .context("boot time before the epoch")?;
        Ok(Self { boot })
    }

    pub fn timestamp(&self, boot_ns: u64) -> Timestamp {
        let since_boot = SignedDuration::from_nanos(boot_ns.min(i64::MAX as u64) as i64);
        self.boot.checked_add(since_boot).unwrap_or(self.boot)
    }
}

fn socket_addr(addr: [u8; 16], port: u16) -> SocketAddr {
    let v6 = Ipv6Addr::from(addr);
    let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    SocketAddr::new(ip, port)
}

/// The protocol's usual name, or its number.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        ip_proto::TCP => "tcp".into(),
        ip_proto::UDP => "udp".into(),
        ip_proto::ICMP => "icmp".into(),
        ip_proto::ICMPV6 => "ipv6-icmp".into(),
        other => other.to_string(),
    }
}

/// Every flow in `table`, largest first.
pub fn read_table<T: std::borrow::Borrow<MapData>>(
    table: &HashMap<T, FlowKey, FlowEntry>,
) -> anyhow::Result<Vec<FlowRecord>> {
    let clock = BootClock::now()?;
    let mut records = Vec::new();
    for item in table.iter() {
        // An entry evicted or deleted while we iterate ends the walk early with an error;
        // the next read sees the table again, so report what we have.
        let Ok((key, entry)) = item else { break };
        records.push(FlowRecord::from_entry(&key, &entry, &clock));
    }
    records.sort_by_key(|r| std::cmp::Reverse(r.total_bytes()));
    Ok(records)
}

/// Every flow in the table pinned under `pin_dir` by a running daemon.
pub fn read_pinned(pin_dir: &Path) -> anyhow::Result<Vec<FlowRecord>> {
    let path = pin_dir.join(maps::FLOWS);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "no flow table pinned at {}: is `classifier run` running with --pin-dir {}?",
            path.display(),
            pin_dir.display()
        )
    })?;
    let map = Map::from_map_data(data).context("reading the pinned flow table")?;
    let table: HashMap<MapData, FlowKey, FlowEntry> =
        HashMap::try_from(map).context("the pinned FLOWS map has an unexpected layout")?;
    read_table(&table)
}

/// Writes `records` (the first `top` of them) as an aligned table.
pub fn write_table(out: &mut impl Write, records: &[FlowRecord], top: usize) -> io::Result<()> {
    writeln!(
        out,
        "{:<9} {:<41} {:<41} {:>9} {:>12} {:>9} {:>12} {:>8}",
        "PROTO", "CLIENT", "SERVER", "UP PKTS", "UP BYTES", "DN PKTS", "DN BYTES", "AGE"
    )?;
    let now = Timestamp::now();
    for record in records.iter().take(top) {
        let age = now.duration_since(record.first_seen).as_secs();
        writeln!(
            out,
            "{:<9} {:<41} {:<41} {:>9} {:>12} {:>9} {:>12} {:>7}s",
            record.protocol,
            record.client.to_string(),
            record.server.to_string(),
            record.upload.packets,
            record.upload.bytes,
            record.download.packets,
            record.download.bytes,
            age
        )?;
    }
    if records.len() > top {
        writeln!(out, "... and {} more flows", records.len() - top)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use classifier_common::flow::ipv4_mapped;

    #[test]
    fn ipv4_mapped_keys_read_back_as_ipv4() {
        let addr = socket_addr(ipv4_mapped([192, 0, 2, 10]), 40000);
        assert_eq!(addr.to_string(), "192.0.2.10:40000");
        let v6: [u8; 16] = "2001:db8:1::10".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(socket_addr(v6, 443).to_string(), "[2001:db8:1::10]:443");
    }

    #[test]
    fn boot_stamps_become_recent_wall_time() {
        let clock = BootClock::now().unwrap();
        let since_boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).unwrap();
        let now_ns = since_boot.tv_sec() as u64 * 1_000_000_000 + since_boot.tv_nsec() as u64;
        let drift = Timestamp::now().duration_since(clock.timestamp(now_ns));
        assert!(drift.abs() < SignedDuration::from_secs(1), "{drift:?}");
    }
}
