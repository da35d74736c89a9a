//! Reading the kernel's flow table into [`FlowRecord`]s, showing them, and telling when
//! a flow has ended ([`ending`]).

mod batch;
pub mod ending;
pub mod names;
pub mod neighbours;

pub use names::{FlowNames, Name, Names};

use std::{
    io::{self, Write},
    net::{IpAddr, Ipv6Addr, SocketAddr},
};

use anyhow::Context as _;
use aya::maps::{HashMap, MapData};
use classifier_common::{
    classify::{Method, class_flags, evasion},
    flow::{DirectionCounters, FlowEntry, FlowKey, flow_flags, ip_proto},
    policy::{policy_flags, verdict},
};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// One flow as people and programs outside the daemon see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// The LAN-side host.
    pub client: SocketAddr,
    /// The client's Ethernet address from the LAN's neighbour table (`aa:bb:cc:dd:ee:ff`),
    /// filled in when the flow is recorded.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_mac: Option<String>,
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
    /// The server name the flow was classified by (TLS SNI, HTTP Host, QUIC SNI): always a
    /// host name or address literal (see `evasion` for bytes that were not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Category name (`uncategorized` when none matched).
    pub category: String,
    /// Application: a policy app (youtube), a protocol (tls, bittorrent) or `unknown`.
    pub app: String,
    /// How the class was found: sni, host, quic, bt-handshake, ..., port, none.
    pub method: String,
    /// The ClientHello carried ECH (or GREASE ECH).
    pub ech: bool,
    /// The first bytes looked like TLS or HTTP but could not be read within the datapath's
    /// bounds: the flow has the policy's `unreadable` category.
    #[serde(default)]
    pub unreadable: bool,
    /// What the client did to hide the name (`bad-checksum`, `bad-ttl`, `bad-sequence`,
    /// `bad-options`, `conflict`: decoys and contradictions; `reordered`, `tls-records`,
    /// `ip-fragments`: ways of cutting the bytes; `not-a-host-name`: it sent bytes that
    /// are not a host name where a name goes, which are then not recorded as its name).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub evasion: Vec<String>,
    /// A second name read from a second version of the same stream bytes (a decoy and the
    /// real hello): the verdict answers to both.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub second_name: Option<String>,
    /// The category the verdict also answers to: the second name's, or `unreadable`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub second_category: Option<String>,
    /// The client's group under the policy in force (`default` when none matched).
    pub group: String,
    /// allow, block or shape, as the datapath last worked it out; `undecided` before the
    /// datapath has looked the flow up (e.g. a flow adopted from an older datapath).
    pub verdict: String,
    /// Dropped by a block verdict, both ways together.
    pub blocked: Counters,
    /// Put into a shaping class, both ways together.
    pub shaped: Counters,
    /// Why the flow ended, once it has (absent for a live flow).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ended: Option<ending::EndReason>,
    /// The source address and port the client's uploads left the WAN interface with, after
    /// the gateway's address translation (`run --nat-mark-mask`): what a server, or a
    /// complaint about the gateway's public address, names. Absent without NAT hand-over,
    /// and for a flow that sent nothing out of the WAN.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub public_source: Option<SocketAddr>,
}

/// Packets and layer-3 bytes in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The flow's translated source from the NAT hand-over's map, when it has one.
    pub fn public_source_from<T: std::borrow::Borrow<aya::maps::MapData>>(
        sources: Option<&aya::maps::HashMap<T, FlowKey, classifier_common::nat::PublicSource>>,
        key: &FlowKey,
    ) -> Option<SocketAddr> {
        let source = sources?.get(key, 0).ok()?;
        Some(socket_addr(source.addr, source.port))
    }

    pub fn from_entry(
        key: &FlowKey,
        entry: &FlowEntry,
        clock: &DatapathClock,
        policy: &Policy,
        names: Option<&Names>,
    ) -> Self {
        let classes = &policy.classes;
        let decided = entry.policy_flags & policy_flags::DECIDED != 0;
        let client = socket_addr(key.client_addr, key.client_port);
        let server = socket_addr(key.server_addr, key.server_port);
        Self {
            client,
            client_mac: None,
            server,
            protocol: protocol_name(key.protocol),
            upload: entry.upload.into(),
            download: entry.download.into(),
            first_seen: clock.timestamp(entry.first_seen_ns),
            last_seen: clock.timestamp(entry.last_seen_ns),
            vlan: (entry.vlan_id != 0).then_some(entry.vlan_id),
            server_initiated: entry.flags & flow_flags::STARTED_DOWNSTREAM != 0,
            name: names.and_then(Names::first_host).map(str::to_owned),
            category: classes.category_name(entry.category).to_owned(),
            app: classes.app_name(entry.app).to_owned(),
            method: Method::from_u8(entry.method).name().to_owned(),
            ech: entry.class_flags & class_flags::ECH != 0,
            unreadable: entry.class_flags & class_flags::UNREADABLE != 0,
            evasion: evasion_notes(entry.evasion, names),
            second_name: names.and_then(Names::second_host).map(str::to_owned),
            second_category: (entry.alt_category != 0 && entry.alt_category != entry.category)
                .then(|| classes.category_name(entry.alt_category).to_owned()),
            group: policy.groups.name(entry.group).to_owned(),
            verdict: if decided {
                verdict::name(entry.verdict).to_owned()
            } else {
                "undecided".to_owned()
            },
            blocked: entry.blocked.into(),
            shaped: entry.shaped.into(),
            ended: None,
            public_source: None,
        }
    }

    /// Bytes both ways.
    pub fn total_bytes(&self) -> u64 {
        self.upload.bytes + self.download.bytes
    }
}

/// The record's evasion notes: the datapath's [`evasion`] bits, and whether a name the flow
/// sent was not a host name ([`names::NOT_A_HOST_NAME`]).
fn evasion_notes(bits: u8, names: Option<&Names>) -> Vec<String> {
    let mut notes = evasion_names(bits);
    if names.is_some_and(Names::has_non_host_name) {
        notes.push(names::NOT_A_HOST_NAME.to_owned());
    }
    notes
}

/// The names of [`evasion`] bits.
pub fn evasion_names(bits: u8) -> Vec<String> {
    evasion::NAMES
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| (*name).to_owned())
        .collect()
}

/// CLOCK_MONOTONIC in ns: the clock the datapath stamps the peer cache and quotas with
/// (`bpf_ktime_get_ns()`), and flows with at the timer tick's resolution
/// (`bpf_ktime_get_coarse_ns()`, never ahead of this; see `classifier-ebpf/src/flows.rs`).
pub fn datapath_clock_ns() -> anyhow::Result<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .context("reading CLOCK_MONOTONIC")?;
    Ok(now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64)
}

/// Converts the datapath's stamps ([`datapath_clock_ns`]) to wall-clock time. CLOCK_MONOTONIC
/// stops while the machine is suspended, so a stamp taken before a suspend converts to a
/// time too early by the suspension's length: gateways do not suspend.
#[derive(Clone, Copy, Debug)]
pub struct DatapathClock {
    /// Wall-clock time when the datapath clock read 0.
    origin: Timestamp,
}

impl DatapathClock {
    /// Reads both clocks now.
    pub fn now() -> anyhow::Result<Self> {
        let since = SignedDuration::from_nanos(datapath_clock_ns()?.min(i64::MAX as u64) as i64);
        let origin = Timestamp::now()
            .checked_sub(since)
            .context("the monotonic clock's origin before the epoch")?;
        Ok(Self { origin })
    }

    pub fn timestamp(&self, clock_ns: u64) -> Timestamp {
        let since = SignedDuration::from_nanos(clock_ns.min(i64::MAX as u64) as i64);
        self.origin.checked_add(since).unwrap_or(self.origin)
    }
}

/// `aa:bb:cc:dd:ee:ff`.
fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn socket_addr(addr: [u8; 16], port: u16) -> SocketAddr {
    let v6 = Ipv6Addr::from(addr);
    let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    SocketAddr::new(ip, port)
}

/// `tcp 192.0.2.10:40000 -> 203.0.113.10:443`, for logs.
pub fn describe_key(key: &FlowKey) -> String {
    format!(
        "{} {} -> {}",
        protocol_name(key.protocol),
        socket_addr(key.client_addr, key.client_port),
        socket_addr(key.server_addr, key.server_port)
    )
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

/// The flow table through a file descriptor of its own.
pub type OwnedFlowTable = HashMap<MapData, FlowKey, FlowEntry>;

/// A handle on `table` with a file descriptor of its own, so that the table can be walked
/// by a thread that does not hold the datapath (the daemon's state stays unlocked).
pub fn own_handle(table: &OwnedFlowTable) -> anyhow::Result<OwnedFlowTable> {
    use aya::maps::IterableMap as _;
    use std::os::fd::AsFd as _;
    let fd = table
        .map()
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating the flow table's descriptor")?;
    let map = aya::maps::Map::from_map_data(MapData::from_fd(fd)?)?;
    HashMap::try_from(map).context("FLOWS is not a hash map")
}

/// Every flow in `table` with its class and name, largest first. A name the daemon has not
/// heard yet (its event still waits in the ring buffer) is read from `kept`, the kernel's
/// `NAMES`, where the datapath put it first.
pub fn read_table<T: std::borrow::Borrow<MapData>, N: std::borrow::Borrow<MapData>>(
    table: &HashMap<T, FlowKey, FlowEntry>,
    policy: &Policy,
    names: &FlowNames,
    kept: Option<&names::NamesMap<N>>,
) -> anyhow::Result<Vec<(FlowKey, FlowRecord)>> {
    let clock = DatapathClock::now()?;
    let mut records: Vec<(FlowKey, FlowRecord)> = read_entries(table)
        .entries
        .iter()
        .map(|(key, entry)| {
            let flow_names = names::of_flow(names, kept, key, entry);
            let record = FlowRecord::from_entry(key, entry, &clock, policy, flow_names.as_ref());
            (*key, record)
        })
        .collect();
    records.sort_by_key(|(_, r)| std::cmp::Reverse(r.total_bytes()));
    Ok(records)
}

/// The flow table's entries as one walk found them.
pub struct TableWalk {
    pub entries: Vec<(FlowKey, FlowEntry)>,
    /// False when an entry vanished under the walk and cut it short: a flow missing from
    /// `entries` may then still be in the table.
    pub complete: bool,
}

/// Every entry of `table`, raw: in batches where the kernel can, else key by key.
pub fn read_entries<T: std::borrow::Borrow<MapData>>(
    table: &HashMap<T, FlowKey, FlowEntry>,
) -> TableWalk {
    use aya::maps::IterableMap as _;
    match batch::lookup_all(table.map()) {
        Ok(entries) => TableWalk {
            entries,
            complete: true,
        },
        Err(_) => read_entries_by_key(table),
    }
}

/// Every entry of `table`, two system calls a flow (what [`read_entries`] falls back to).
pub fn read_entries_by_key<T: std::borrow::Borrow<MapData>>(
    table: &HashMap<T, FlowKey, FlowEntry>,
) -> TableWalk {
    let mut entries = Vec::new();
    for item in table.iter() {
        // An entry evicted or deleted while we iterate ends the walk early with an error;
        // the next walk sees the table again.
        match item {
            Ok(pair) => entries.push(pair),
            Err(_) => {
                return TableWalk {
                    entries,
                    complete: false,
                };
            }
        }
    }
    TableWalk {
        entries,
        complete: true,
    }
}

/// A column of the flows table.
struct Column {
    header: &'static str,
    /// Numbers are right-aligned.
    right: bool,
    /// Cut with an ellipsis down to this width when the terminal is narrow; none: never
    /// cut (an address cut short would name another host).
    shrinks_to: Option<usize>,
}

const COLUMNS: [Column; 13] = {
    const fn text(header: &'static str, shrinks_to: Option<usize>) -> Column {
        Column {
            header,
            right: false,
            shrinks_to,
        }
    }
    const fn number(header: &'static str) -> Column {
        Column {
            header,
            right: true,
            shrinks_to: None,
        }
    }
    [
        text("PROTO", None),
        text("CLIENT", None),
        text("SERVER", None),
        text("NAME", Some(20)),
        text("CATEGORY", Some(12)),
        text("APP", Some(8)),
        text("METHOD", None),
        text("VERDICT", None),
        number("UP PKTS"),
        number("UP BYTES"),
        number("DN PKTS"),
        number("DN BYTES"),
        number("AGE"),
    ]
};

/// Columns left out, first to last, until the table fits: packet counts and the age
/// before the method and the application, then upload bytes, the protocol, and last the
/// server's address (the name says where the client went; an IPv6 address and port take
/// 47 columns). Client, name, category, verdict and download bytes always stay.
const DROPPED_FIRST: [&str; 8] = [
    "UP PKTS", "DN PKTS", "AGE", "METHOD", "APP", "UP BYTES", "PROTO", "SERVER",
];

/// The cells of one flow, in [`COLUMNS`] order.
fn cells(record: &FlowRecord, now: Timestamp) -> [String; 13] {
    let mut method = record.method.clone();
    if record.unreadable {
        method.push_str("!unreadable");
    } else if record.ech {
        method.push_str("+ech");
    }
    if record.evasion.iter().any(|e| is_deception(e)) {
        method.push_str("!evasion");
    }
    [
        record.protocol.clone(),
        record.client.to_string(),
        record.server.to_string(),
        record.name.clone().unwrap_or_else(|| "-".into()),
        record.category.clone(),
        record.app.clone(),
        method,
        record.verdict.clone(),
        record.upload.packets.to_string(),
        record.upload.bytes.to_string(),
        record.download.packets.to_string(),
        record.download.bytes.to_string(),
        format!("{}s", now.duration_since(record.first_seen).as_secs()),
    ]
}

/// The width of each column kept (none: left out) for a table of `rows` at most `width`
/// characters wide: as few columns left out as will do, the shrinkable ones cut only as
/// far as needed. A table that cannot fit keeps its never-dropped columns whole.
fn layout(rows: &[[String; 13]], width: usize) -> [Option<usize>; 13] {
    let natural: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, column)| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .chain([column.header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut kept = [true; 13];
    let mut dropping = DROPPED_FIRST.iter();
    loop {
        let columns = kept.iter().filter(|k| **k).count();
        let budget = width.saturating_sub(columns.saturating_sub(1));
        let least: usize = (0..13)
            .filter(|i| kept[*i])
            .map(|i| {
                COLUMNS[i]
                    .shrinks_to
                    .map_or(natural[i], |m| m.min(natural[i]))
            })
            .sum();
        let drop_next = dropping.next();
        if least <= budget || drop_next.is_none() {
            return shrink(&natural, &kept, budget);
        }
        if let Some(header) = drop_next {
            let index = COLUMNS
                .iter()
                .position(|c| c.header == *header)
                .unwrap_or(0);
            kept[index] = false;
        }
    }
}

/// Widths for the `kept` columns within `budget`: the shrinkable ones cut, widest first,
/// until the rest fits or each is at its least.
fn shrink(natural: &[usize], kept: &[bool; 13], budget: usize) -> [Option<usize>; 13] {
    let mut widths: [Option<usize>; 13] = [None; 13];
    for i in (0..13).filter(|i| kept[*i]) {
        widths[i] = Some(natural[i]);
    }
    let total = |widths: &[Option<usize>; 13]| widths.iter().flatten().sum::<usize>();
    while total(&widths) > budget {
        let widest = (0..13)
            .filter(|i| {
                let least = COLUMNS[*i].shrinks_to.unwrap_or(usize::MAX);
                widths[*i].is_some_and(|w| w > least)
            })
            .max_by_key(|i| widths[*i]);
        match widest {
            Some(i) => widths[i] = widths[i].map(|w| w - 1),
            None => break,
        }
    }
    widths
}

/// Writes `records` (the first `top` of them) as an aligned table at most `width`
/// characters wide (`usize::MAX`: every column whole): see [`layout`].
pub fn write_table(
    out: &mut impl Write,
    records: &[FlowRecord],
    top: usize,
    width: usize,
) -> io::Result<()> {
    let now = Timestamp::now();
    let rows: Vec<[String; 13]> = records.iter().take(top).map(|r| cells(r, now)).collect();
    let widths = layout(&rows, width);
    let headers = COLUMNS.map(|c| c.header.to_owned());
    for row in std::iter::once(&headers).chain(&rows) {
        let line: Vec<String> = (0..13)
            .filter_map(|i| {
                let width = widths[i]?;
                let cell = shorten(&row[i], width);
                Some(if COLUMNS[i].right {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                })
            })
            .collect();
        writeln!(out, "{}", line.join(" ").trim_end())?;
    }
    if records.len() > top {
        writeln!(out, "... and {} more flows", records.len() - top)?;
    }
    Ok(())
}

/// Whether an evasion note is a decoy or contradiction (not just a way of cutting): one of
/// the [`evasion::DECEPTION`] bits, or a name that was not a host name.
pub fn is_deception(name: &str) -> bool {
    name == names::NOT_A_HOST_NAME
        || evasion::NAMES
            .iter()
            .any(|(bit, known)| *known == name && bit & evasion::DECEPTION != 0)
}

/// `text`, cut with an ellipsis to at most `width` characters.
fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let kept: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{kept}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use classifier_common::flow::ipv4_mapped;

    /// A flow as `classifier flows --json` carries it.
    fn flow(client: &str, server: &str, name: &str, category: &str, down: u64) -> FlowRecord {
        serde_json::from_value(serde_json::json!({
            "client": client, "server": server, "protocol": "tcp",
            "upload": {"packets": 10, "bytes": 1000},
            "download": {"packets": 20, "bytes": down},
            "first_seen": "2026-11-23T10:00:00Z", "last_seen": "2026-11-23T10:00:30Z",
            "server_initiated": false, "name": name, "category": category, "app": "youtube",
            "method": "sni", "ech": false, "group": "staff", "verdict": "shape",
            "blocked": {"packets": 0, "bytes": 0}, "shaped": {"packets": 5, "bytes": 5000},
        }))
        .unwrap()
    }

    /// Flows as a gateway has them: IPv4 and IPv6 clients, a long name, a long category.
    fn gateway_flows() -> Vec<FlowRecord> {
        let v6 = flow(
            "[2001:db8:1::10]:51234",
            "[2001:db8:ffff:1:2:3:4:5]:443",
            "rr3---sn-aigl6nsd.googlevideo-cdn-edge.example.com",
            "streaming-video",
            123_456_789,
        );
        let mut v4 = flow(
            "192.0.2.10:40000",
            "203.0.113.10:443",
            "www.youtube.com",
            "violence-weapons-and-extremism",
            42,
        );
        v4.method = "quic".into();
        v4.unreadable = true;
        vec![v6, v4]
    }

    fn table(width: usize) -> String {
        let mut out = Vec::new();
        write_table(&mut out, &gateway_flows(), 10, width).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_table_fits_80_and_120_columns_keeping_what_matters() {
        for width in [80, 120] {
            let text = table(width);
            for line in text.lines() {
                assert!(
                    line.chars().count() <= width,
                    "{width}: {line:?} in\n{text}"
                );
            }
            let header = text.lines().next().unwrap();
            for kept in ["CLIENT", "NAME", "CATEGORY", "VERDICT", "DN BYTES"] {
                assert!(header.contains(kept), "{width}: {kept} dropped:\n{text}");
            }
            // Addresses are dropped whole or shown whole, never cut.
            assert!(text.contains("[2001:db8:1::10]:51234"), "{text}");
            assert_eq!(
                header.contains("SERVER"),
                text.contains("[2001:db8:ffff:1:2:3:4:5]:443"),
                "{text}"
            );
            assert!(text.contains("123456789"), "{text}");
        }
        let wide = table(120);
        let wide_header = wide.lines().next().unwrap();
        assert!(wide_header.contains("SERVER"), "{wide}");
        let narrow = table(80);
        assert!(
            !narrow.contains("UP PKTS") && !narrow.contains("METHOD"),
            "{narrow}"
        );
        assert!(narrow.contains('…'), "the long name is cut: {narrow}");
    }

    #[test]
    fn wide_keeps_every_column_whole() {
        let text = table(usize::MAX);
        let header = text.lines().next().unwrap();
        for column in &COLUMNS {
            assert!(header.contains(column.header), "{header}");
        }
        assert!(text.contains("rr3---sn-aigl6nsd.googlevideo-cdn-edge.example.com"));
        assert!(text.contains("quic!unreadable"), "{text}");
    }

    #[test]
    fn ipv4_mapped_keys_read_back_as_ipv4() {
        let addr = socket_addr(ipv4_mapped([192, 0, 2, 10]), 40000);
        assert_eq!(addr.to_string(), "192.0.2.10:40000");
        let v6: [u8; 16] = "2001:db8:1::10".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(socket_addr(v6, 443).to_string(), "[2001:db8:1::10]:443");
    }

    #[test]
    fn boot_stamps_become_recent_wall_time() {
        let clock = DatapathClock::now().unwrap();
        let now_ns = datapath_clock_ns().unwrap();
        let drift = Timestamp::now().duration_since(clock.timestamp(now_ns));
        assert!(drift.abs() < SignedDuration::from_secs(1), "{drift:?}");
    }
}
