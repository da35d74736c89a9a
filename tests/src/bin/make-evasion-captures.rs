//! Evasion captures: real clients' first messages, taken out of the captures in
//! tests/captures (Chromium's and Firefox's ML-KEM ClientHellos, curl's and openssl's
//! ClientHellos, curl's HTTP request), re-sent the ways the tools made to get past SNI
//! filters send them (zapret, GoodbyeDPI, byedpi, SpoofDPI): cut into segments, reordered,
//! wrapped in several TLS records, behind decoys a server drops, in IP fragments, with
//! out-of-band data.
//!
//! Each flow keeps its real handshake (SYN, SYN-ACK, ACK with their options, sequence
//! numbers, TTLs, IP identifications or flow labels, MACs) and the server's real answer (its
//! ACK and its first data segment, acknowledgment numbers made to match what the client
//! sent); every checksum is right except where a decoy wants it wrong (never the offload
//! placeholder). A flow may be moved to the other address family (the lab's addresses
//! 192.0.2.10/203.0.113.10 and 2001:db8:1::10/2001:db8:3::10, MSS options 20 bytes apart).
//!
//! Before writing, every flow is checked: what a server's TCP would read from it (dropping
//! what the server drops: wrong checksum, wrong TTL, sequence or acknowledgment out of the
//! window, no ACK, an MD5 option, an old timestamp; reassembling fragments; leaving out
//! urgent data) must be the real message, and its name the real name (tests/src/wire).
//!
//! Writes tests/captures/evasion/*.pcap, manifest.toml and README.md. Needs no privilege.
//! Deterministic: the same real captures give byte-identical files (the evasion_captures
//! test regenerates them into a temporary directory and compares).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use classifier_common::{
    parse::{
        PacketMeta, Parsed,
        headers::fragment,
        parse_headers,
        tcp::{ChecksumStatus, frame_checksum_status},
    },
    testing::split_records,
};
use classifier_tests::wire::tls;
use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter},
};
use serde::Deserialize;

#[derive(Parser)]
#[command(about = "Write tests/captures/evasion from the real captures in tests/captures")]
struct Args {
    /// Directory for the pcap files, manifest.toml and README.md.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/captures/evasion"))]
    out: PathBuf,
    /// Directory of the real captures and their manifest.toml.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/captures"))]
    captures: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sources = Sources::read(&args.captures)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut written = Vec::new();
    for case in cases() {
        let mut flows = Vec::new();
        let mut end = Duration::ZERO;
        for &(source, v6) in case.flows {
            let real = sources.get(source)?.in_family(v6);
            let built = build_flow(&real, &case, end)
                .with_context(|| format!("{}: {} over {}", case.file, source.file, family(v6)))?;
            end = built.end;
            flows.push((real, built));
        }
        let bytes = pcap_bytes(flows.iter().flat_map(|(_, built)| &built.frames))?;
        let path = args.out.join(case.file);
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        written.push(Written {
            case,
            flows,
            size: bytes.len(),
        });
    }
    // Captures of cases no longer made go, so the directory is exactly what is listed.
    for entry in std::fs::read_dir(&args.out)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".pcap") && !written.iter().any(|w| w.case.file == name) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    std::fs::write(args.out.join("manifest.toml"), manifest(&written))?;
    std::fs::write(args.out.join("README.md"), readme(&written, &sources))?;
    eprintln!(
        "make-evasion-captures: {} captures, {} flows, {} bytes in {}",
        written.len(),
        written.iter().map(|w| w.flows.len()).sum::<usize>(),
        written.iter().map(|w| w.size).sum::<usize>(),
        args.out.display()
    );
    Ok(())
}

fn family(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

// ---------------------------------------------------------------------------------------
// TCP segments and frames

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;

const OPT_MSS: u8 = 2;
const OPT_TIMESTAMPS: u8 = 8;
const OPT_MD5: u8 = 19;

/// One TCP segment of a flow, either way, with the IP fields a frame needs.
#[derive(Clone, Debug)]
struct Seg {
    /// Client → server.
    up: bool,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    urgent: u16,
    /// Raw TCP options (a multiple of 4 bytes).
    options: Vec<u8>,
    payload: Vec<u8>,
    /// TTL or hop limit.
    ttl: u8,
    /// IPv4 identification.
    ip_id: u16,
    /// IPv6 flow label.
    flow_label: u32,
    /// Flip bits of the right TCP checksum.
    bad_checksum: bool,
}

impl Seg {
    /// The (kind, data) of each option.
    fn option_list(&self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.options.len() {
            match self.options[i] {
                0 => break,
                1 => i += 1,
                kind => {
                    let len = usize::from(*self.options.get(i + 1).unwrap_or(&2)).max(2);
                    let end = (i + len).min(self.options.len());
                    out.push((kind, self.options[i + 2..end].to_vec()));
                    i += len;
                }
            }
        }
        out
    }

    fn mss(&self) -> Option<u16> {
        self.option_list()
            .into_iter()
            .find(|(kind, data)| *kind == OPT_MSS && data.len() == 2)
            .map(|(_, data)| u16::from_be_bytes([data[0], data[1]]))
    }

    /// Rewrites the MSS option's value in place.
    fn set_mss(&mut self, mss: u16) {
        if let Some(at) = self.option_at(OPT_MSS) {
            self.options[at + 2..at + 4].copy_from_slice(&mss.to_be_bytes());
        }
    }

    fn tsval(&self) -> Option<u32> {
        let at = self.option_at(OPT_TIMESTAMPS)?;
        Some(u32::from_be_bytes(
            self.options[at + 2..at + 6].try_into().ok()?,
        ))
    }

    fn set_tsval(&mut self, value: u32) {
        if let Some(at) = self.option_at(OPT_TIMESTAMPS) {
            self.options[at + 2..at + 6].copy_from_slice(&value.to_be_bytes());
        }
    }

    /// Offset of the first option of `kind` in the raw options.
    fn option_at(&self, want: u8) -> Option<usize> {
        let mut i = 0;
        while i < self.options.len() {
            match self.options[i] {
                0 => return None,
                1 => i += 1,
                kind if kind == want => return Some(i),
                _ => i += usize::from(*self.options.get(i + 1)?).max(2),
            }
        }
        None
    }
}

/// A flow's link and network identity.
#[derive(Clone, Copy, Debug)]
struct Wire {
    client_mac: [u8; 6],
    gateway_mac: [u8; 6],
    client: SocketAddr,
    server: SocketAddr,
}

impl Wire {
    fn v6(&self) -> bool {
        self.client.is_ipv6()
    }
}

/// The ones' complement sum of `bytes` as big-endian words, unfolded.
fn sum_words(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The TCP header and payload of `seg` on `wire`, checksum included.
fn tcp_bytes(wire: &Wire, seg: &Seg) -> Vec<u8> {
    let (source, destination) = if seg.up {
        (wire.client, wire.server)
    } else {
        (wire.server, wire.client)
    };
    let mut options = seg.options.clone();
    while !options.len().is_multiple_of(4) {
        options.push(0);
    }
    let header_len = 20 + options.len();
    let mut tcp = Vec::with_capacity(header_len + seg.payload.len());
    tcp.extend_from_slice(&source.port().to_be_bytes());
    tcp.extend_from_slice(&destination.port().to_be_bytes());
    tcp.extend_from_slice(&seg.seq.to_be_bytes());
    tcp.extend_from_slice(&seg.ack.to_be_bytes());
    tcp.push(((header_len / 4) as u8) << 4);
    tcp.push(seg.flags);
    tcp.extend_from_slice(&seg.window.to_be_bytes());
    tcp.extend_from_slice(&[0, 0]);
    tcp.extend_from_slice(&seg.urgent.to_be_bytes());
    tcp.extend_from_slice(&options);
    tcp.extend_from_slice(&seg.payload);
    let mut pseudo = ip_bytes(source.ip());
    pseudo.extend_from_slice(&ip_bytes(destination.ip()));
    if wire.v6() {
        pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 6]);
    } else {
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    }
    let mut checksum = !fold(sum_words(&pseudo) + sum_words(&tcp));
    if seg.bad_checksum {
        checksum ^= 0x5aa5;
    }
    tcp[16..18].copy_from_slice(&checksum.to_be_bytes());
    tcp
}

/// An Ethernet frame carrying `l4` (`protocol`) from one end of `wire` to the other; IPv4
/// with DF and `ip_id`, or IPv6 with `flow_label`. `fragment`: (offset in bytes, more
/// fragments, identification) puts it in an IP fragment (IPv6: a fragment header).
fn ip_frame(
    wire: &Wire,
    up: bool,
    ttl: u8,
    ip_id: u16,
    flow_label: u32,
    l4: &[u8],
    fragment: Option<(usize, bool, u32)>,
) -> Vec<u8> {
    let (source, destination) = if up {
        (wire.client.ip(), wire.server.ip())
    } else {
        (wire.server.ip(), wire.client.ip())
    };
    let (source_mac, destination_mac) = if up {
        (wire.client_mac, wire.gateway_mac)
    } else {
        (wire.gateway_mac, wire.client_mac)
    };
    let mut frame = Vec::with_capacity(14 + 48 + l4.len());
    frame.extend_from_slice(&destination_mac);
    frame.extend_from_slice(&source_mac);
    if wire.v6() {
        frame.extend_from_slice(&0x86ddu16.to_be_bytes());
        let extension = if fragment.is_some() { 8 } else { 0 };
        frame.extend_from_slice(&((6u32 << 28) | (flow_label & 0xfffff)).to_be_bytes());
        frame.extend_from_slice(&((l4.len() + extension) as u16).to_be_bytes());
        frame.push(if fragment.is_some() { 44 } else { 6 });
        frame.push(ttl);
        frame.extend_from_slice(&ip_bytes(source));
        frame.extend_from_slice(&ip_bytes(destination));
        if let Some((offset, more, id)) = fragment {
            frame.extend_from_slice(&[6, 0]);
            frame.extend_from_slice(&(((offset / 8) as u16) << 3 | u16::from(more)).to_be_bytes());
            frame.extend_from_slice(&id.to_be_bytes());
        }
    } else {
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        let start = frame.len();
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        let (id, flags_offset) = match fragment {
            Some((offset, more, id)) => (
                id as u16,
                (offset / 8) as u16 | if more { 0x2000 } else { 0 },
            ),
            None => (ip_id, 0x4000), // DF
        };
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&flags_offset.to_be_bytes());
        frame.extend_from_slice(&[ttl, 6, 0, 0]);
        frame.extend_from_slice(&ip_bytes(source));
        frame.extend_from_slice(&ip_bytes(destination));
        let checksum = !fold(sum_words(&frame[start..start + 20]));
        frame[start + 10..start + 12].copy_from_slice(&checksum.to_be_bytes());
    }
    frame.extend_from_slice(l4);
    frame
}

fn frame(wire: &Wire, seg: &Seg) -> Vec<u8> {
    ip_frame(
        wire,
        seg.up,
        seg.ttl,
        seg.ip_id,
        seg.flow_label,
        &tcp_bytes(wire, seg),
        None,
    )
}

/// `seg` in IP fragments: the first `at` bytes of the TCP segment, then the rest.
fn fragments(wire: &Wire, seg: &Seg, at: usize, id: u32) -> Vec<Vec<u8>> {
    let tcp = tcp_bytes(wire, seg);
    let (first, second) = tcp.split_at(at);
    vec![
        ip_frame(
            wire,
            seg.up,
            seg.ttl,
            0,
            seg.flow_label,
            first,
            Some((0, true, id)),
        ),
        ip_frame(
            wire,
            seg.up,
            seg.ttl,
            0,
            seg.flow_label,
            second,
            Some((at, false, id)),
        ),
    ]
}

/// A captured TCP frame: endpoints, MACs, the segment.
struct Captured {
    time: Duration,
    source: SocketAddr,
    destination: SocketAddr,
    source_mac: [u8; 6],
    destination_mac: [u8; 6],
    seg: Seg,
}

fn parse_frame(time: Duration, data: &[u8]) -> Option<Captured> {
    let destination_mac: [u8; 6] = data.get(0..6)?.try_into().ok()?;
    let source_mac: [u8; 6] = data.get(6..12)?.try_into().ok()?;
    let ip = data.get(14..)?;
    let (source, destination, ttl, ip_id, flow_label, l4) =
        match u16::from_be_bytes([data[12], data[13]]) {
            0x0800 => {
                let ihl = usize::from(ip.first()? & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                if ip[9] != 6 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                    return None;
                }
                let source: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
                let destination: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
                (
                    IpAddr::from(source),
                    IpAddr::from(destination),
                    ip[8],
                    u16::from_be_bytes([ip[4], ip[5]]),
                    0,
                    ip.get(ihl..total)?,
                )
            }
            0x86dd => {
                if *ip.get(6)? != 6 {
                    return None;
                }
                let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                let source: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
                let destination: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
                (
                    IpAddr::from(source),
                    IpAddr::from(destination),
                    ip[7],
                    0,
                    u32::from_be_bytes(ip[0..4].try_into().ok()?) & 0xfffff,
                    ip.get(40..40 + payload_len)?,
                )
            }
            _ => return None,
        };
    let header_len = usize::from(l4.get(12)? >> 4) * 4;
    let word = |at: usize| u32::from_be_bytes(l4[at..at + 4].try_into().unwrap());
    let half = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    if l4.len() < header_len || header_len < 20 {
        return None;
    }
    Some(Captured {
        time,
        source: SocketAddr::new(source, half(0)),
        destination: SocketAddr::new(destination, half(2)),
        source_mac,
        destination_mac,
        seg: Seg {
            up: true,
            seq: word(4),
            ack: word(8),
            flags: l4[13],
            window: half(14),
            urgent: half(18),
            options: l4[20..header_len].to_vec(),
            payload: l4[header_len..].to_vec(),
            ttl,
            ip_id,
            flow_label,
            bad_checksum: false,
        },
    })
}

// ---------------------------------------------------------------------------------------
// The real flows

/// tests/captures/manifest.toml, the parts used here.
#[derive(Deserialize)]
struct RealManifest {
    capture: Vec<RealCapture>,
}

#[derive(Deserialize)]
struct RealCapture {
    file: String,
    client: String,
    flow: Vec<RealManifestFlow>,
}

#[derive(Deserialize)]
struct RealManifestFlow {
    client: SocketAddr,
    server: SocketAddr,
    name: String,
    detection: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tls,
    Http,
}

/// Which real flow: the first of `file` the real manifest finds with `detection`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Source {
    file: &'static str,
    detection: &'static str,
    /// Short name of the client, for tables.
    client: &'static str,
}

const CHROMIUM: Source = Source {
    file: "chromium-split-clienthello.pcap",
    detection: "sni",
    client: "Chromium",
};
const FIREFOX: Source = Source {
    file: "firefox-split-clienthello.pcap",
    detection: "sni",
    client: "Firefox",
};
const CURL_TLS: Source = Source {
    file: "curl-tls13.pcap",
    detection: "sni",
    client: "curl",
};
const OPENSSL_TLS: Source = Source {
    file: "openssl-tls13.pcap",
    detection: "sni",
    client: "openssl",
};
const CURL_HTTP: Source = Source {
    file: "curl-http-host.pcap",
    detection: "host",
    client: "curl",
};
const ALL_SOURCES: [Source; 5] = [CHROMIUM, FIREFOX, CURL_TLS, OPENSSL_TLS, CURL_HTTP];

/// One real flow: its handshake, first message and the server's answer, as captured.
#[derive(Clone, Debug)]
struct RealFlow {
    source: Source,
    /// The client as the real manifest names it.
    software: String,
    /// The endpoints in the real capture.
    captured_client: SocketAddr,
    captured_server: SocketAddr,
    /// Moved to the other address family.
    converted: bool,
    kind: Kind,
    /// The name the real manifest gives (as sent).
    name: String,
    wire: Wire,
    syn: Seg,
    syn_ack: Seg,
    ack: Seg,
    /// Times of the SYN, SYN-ACK, ACK and first data segment.
    times: [Duration; 4],
    /// The client's first message: the whole ClientHello record, or the HTTP request head.
    message: Vec<u8>,
    /// How the client's TCP sent it: payload sizes.
    sent_as: Vec<usize>,
    /// Stream offset of the name's first byte.
    name_at: usize,
    /// The client's first data segment: flags, options, window, TTL of what follows.
    data: Seg,
    server_ack: Seg,
    server_data: Seg,
    client_ack: Seg,
}

struct Sources {
    flows: BTreeMap<&'static str, RealFlow>,
}

impl Sources {
    fn read(dir: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(dir.join("manifest.toml"))
            .with_context(|| format!("reading {}/manifest.toml", dir.display()))?;
        let manifest: RealManifest = toml::from_str(&text).context("parsing manifest.toml")?;
        let mut flows = BTreeMap::new();
        for source in ALL_SOURCES {
            let capture = manifest
                .capture
                .iter()
                .find(|c| c.file == source.file)
                .with_context(|| format!("{} is not in the real manifest", source.file))?;
            let truth = capture
                .flow
                .iter()
                .find(|f| f.detection == source.detection)
                .with_context(|| format!("{}: no {} flow", source.file, source.detection))?;
            let real = RealFlow::read(&dir.join(source.file), source, &capture.client, truth)
                .with_context(|| format!("reading the real flow of {}", source.file))?;
            flows.insert(source.file, real);
        }
        Ok(Self { flows })
    }

    fn get(&self, source: Source) -> anyhow::Result<&RealFlow> {
        self.flows
            .get(source.file)
            .with_context(|| format!("{} not read", source.file))
    }
}

impl RealFlow {
    fn read(
        path: &Path,
        source: Source,
        software: &str,
        truth: &RealManifestFlow,
    ) -> anyhow::Result<Self> {
        let file = std::fs::File::open(path)?;
        let mut reader = PcapReader::new(file)?;
        ensure!(
            reader.header().datalink == DataLink::ETHERNET,
            "not an Ethernet capture"
        );
        let mut packets = Vec::new();
        while let Some(packet) = reader.next_packet() {
            let packet = packet?;
            if let Some(mut captured) = parse_frame(packet.timestamp, &packet.data) {
                let (client, server) = (truth.client, truth.server);
                if (captured.source, captured.destination) == (client, server) {
                    packets.push(captured);
                } else if (captured.source, captured.destination) == (server, client) {
                    captured.seg.up = false;
                    packets.push(captured);
                }
            }
        }
        let position = |what: &str, from: usize, test: &dyn Fn(&Captured) -> bool| {
            packets
                .iter()
                .skip(from)
                .position(test)
                .map(|i| i + from)
                .with_context(|| format!("no {what}"))
        };
        let syn = position("SYN", 0, &|p| p.seg.up && p.seg.flags & (SYN | ACK) == SYN)?;
        let syn_ack = position("SYN-ACK", syn, &|p| {
            !p.seg.up && p.seg.flags & (SYN | ACK) == SYN | ACK
        })?;
        let ack = position("ACK", syn_ack, &|p| {
            p.seg.up && p.seg.flags & (SYN | ACK) == ACK && p.seg.payload.is_empty()
        })?;
        let first_data = position("client data", ack, &|p| {
            p.seg.up && !p.seg.payload.is_empty()
        })?;
        let isn = packets[syn].seg.seq.wrapping_add(1);
        // The client's stream, in sequence order, until it holds the whole message.
        let mut stream: Vec<u8> = Vec::new();
        let mut sent_as = Vec::new();
        let kind = match source.detection {
            "sni" => Kind::Tls,
            _ => Kind::Http,
        };
        let mut message_len = None;
        for p in packets[first_data..].iter().filter(|p| p.seg.up) {
            if p.seg.payload.is_empty() || p.seg.seq.wrapping_sub(isn) as usize != stream.len() {
                continue;
            }
            stream.extend_from_slice(&p.seg.payload);
            sent_as.push(p.seg.payload.len());
            message_len = message_end(kind, &stream);
            if message_len.is_some() {
                break;
            }
        }
        let message_len = message_len.context("the first message never completes")?;
        ensure!(
            message_len == stream.len(),
            "the first message ({message_len} bytes) shares a segment with more ({} bytes)",
            stream.len()
        );
        let (name, name_at) = name_in(kind, &stream).context("no name in the first message")?;
        ensure!(
            name == truth.name,
            "the message names {name}, the real manifest {}",
            truth.name
        );
        let last_message_segment = packets
            .iter()
            .rposition(|p| {
                p.seg.up
                    && !p.seg.payload.is_empty()
                    && p.seg.seq.wrapping_sub(isn) as usize + p.seg.payload.len() == stream.len()
            })
            .context("the message's last segment")?;
        let server_ack = position("the server's ACK", last_message_segment, &|p| {
            !p.seg.up && p.seg.payload.is_empty() && p.seg.flags & (SYN | FIN) == 0
        })?;
        let server_data = position("the server's answer", last_message_segment, &|p| {
            !p.seg.up && !p.seg.payload.is_empty()
        })?;
        let client_ack = position("the client's ACK of the answer", server_data, &|p| {
            p.seg.up && p.seg.payload.is_empty() && p.seg.flags & (SYN | FIN) == 0
        })?;
        let client_mac = packets[syn].source_mac;
        let gateway_mac = packets[syn].destination_mac;
        Ok(Self {
            source,
            software: software.split(" (").next().unwrap_or(software).to_string(),
            captured_client: truth.client,
            captured_server: truth.server,
            converted: false,
            kind,
            name,
            wire: Wire {
                client_mac,
                gateway_mac,
                client: truth.client,
                server: truth.server,
            },
            syn: packets[syn].seg.clone(),
            syn_ack: packets[syn_ack].seg.clone(),
            ack: packets[ack].seg.clone(),
            times: [
                packets[syn].time,
                packets[syn_ack].time,
                packets[ack].time,
                packets[first_data].time,
            ],
            message: stream,
            sent_as,
            name_at,
            data: packets[first_data].seg.clone(),
            server_ack: packets[server_ack].seg.clone(),
            server_data: packets[server_data].seg.clone(),
            client_ack: packets[client_ack].seg.clone(),
        })
    }

    /// This flow in `v6`'s family: itself, or moved to the lab's addresses of the other
    /// family (MSS options 20 bytes apart, IPv4 identifications or IPv6 flow labels made up
    /// from the client's port).
    fn in_family(&self, v6: bool) -> RealFlow {
        let mut flow = self.clone();
        if self.wire.v6() == v6 {
            return flow;
        }
        flow.converted = true;
        let (client, server): (IpAddr, IpAddr) = if v6 {
            (
                Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10).into(),
                Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 0x10).into(),
            )
        } else {
            (
                Ipv4Addr::new(192, 0, 2, 10).into(),
                Ipv4Addr::new(203, 0, 113, 10).into(),
            )
        };
        flow.wire.client = SocketAddr::new(client, self.wire.client.port());
        flow.wire.server = SocketAddr::new(server, self.wire.server.port());
        let port = u32::from(self.wire.client.port());
        let client_label = port.wrapping_mul(0x9e37_79b1) & 0xfffff;
        let server_label = (port ^ 0xffff).wrapping_mul(0x85eb_ca6b) & 0xfffff;
        let client_id = (port as u16).wrapping_mul(7);
        let server_id = (port as u16).wrapping_mul(13);
        for (index, seg) in [
            &mut flow.syn,
            &mut flow.syn_ack,
            &mut flow.ack,
            &mut flow.data,
            &mut flow.server_ack,
            &mut flow.server_data,
            &mut flow.client_ack,
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(mss) = seg.mss() {
                seg.set_mss(if v6 { mss - 20 } else { mss + 20 });
            }
            seg.flow_label = if seg.up { client_label } else { server_label };
            seg.ip_id = match (seg.up, index) {
                (false, 1) => 0, // Linux sends its SYN-ACK with DF and identification 0
                (true, _) => client_id.wrapping_add(index as u16),
                (false, _) => server_id.wrapping_add(index as u16),
            };
        }
        flow
    }
}

/// The length of the first message at the start of `stream`, once it is all there.
fn message_end(kind: Kind, stream: &[u8]) -> Option<usize> {
    match kind {
        Kind::Tls => {
            let (_, offsets) = tls::handshake_from_records(stream, 1)?;
            let end = offsets.last()? + 1;
            // The record it ends in must end there too (one record, nothing after it).
            let record_end = 5 + usize::from(u16::from_be_bytes([stream[3], stream[4]]));
            (record_end == end).then_some(end)
        }
        Kind::Http => stream
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4),
    }
}

/// The name a server reads in the first message at the start of `stream` (TLS records,
/// however many; an HTTP request head), and its stream offset when it lies in one piece.
fn name_in(kind: Kind, stream: &[u8]) -> Option<(String, usize)> {
    match kind {
        Kind::Tls => {
            let (message, offsets) = tls::handshake_from_records(stream, 1)?;
            let hello = tls::parse_client_hello(&message)?;
            Some((hello.sni?, offsets[hello.sni_offset]))
        }
        Kind::Http => {
            let head = std::str::from_utf8(&stream[..message_end(kind, stream)?]).ok()?;
            let mut at = 0;
            for line in head.split_inclusive("\r\n") {
                if let Some((field, value)) = line.split_once(':')
                    && field.eq_ignore_ascii_case("host")
                {
                    let value_at = at + field.len() + 1;
                    let trimmed = value.trim_start();
                    let name = trimmed.trim_end();
                    return Some((name.to_string(), value_at + (value.len() - trimmed.len())));
                }
                at += line.len();
            }
            None
        }
    }
}

/// The ClientHello record `record` with its server name replaced by `name`, every length
/// around it fixed (extension, server_name list, extensions, handshake, record).
fn with_name(record: &[u8], name: &str) -> anyhow::Result<Vec<u8>> {
    let message = &record[5..];
    let hello = tls::parse_client_hello(message).context("the hello parses")?;
    let old_len = hello.sni_len;
    let at = 5 + hello.sni_offset; // the name's first byte in the record
    let delta = name.len() as isize - old_len as isize;
    let mut out = Vec::with_capacity(record.len() + name.len());
    out.extend_from_slice(&record[..at]);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&record[at + old_len..]);
    let adjust16 = |out: &mut Vec<u8>, pos: usize| {
        let value = u16::from_be_bytes([out[pos], out[pos + 1]]) as isize + delta;
        out[pos..pos + 2].copy_from_slice(&(value as u16).to_be_bytes());
    };
    adjust16(&mut out, at - 2); // host name length
    adjust16(&mut out, at - 5); // server_name list length
    adjust16(&mut out, at - 7); // extension length
    // The extensions' length: after version, random, session id, suites, compression.
    let mut pos = 5 + 4 + 2 + 32;
    pos += 1 + usize::from(out[pos]);
    pos += 2 + usize::from(u16::from_be_bytes([out[pos], out[pos + 1]]));
    pos += 1 + usize::from(out[pos]);
    adjust16(&mut out, pos);
    let handshake_len = (out.len() - 9) as u32;
    out[6..9].copy_from_slice(&handshake_len.to_be_bytes()[1..]);
    let record_len = (out.len() - 5) as u16;
    out[3..5].copy_from_slice(&record_len.to_be_bytes());
    let check = tls::parse_client_hello(&out[5..]).context("the decoy parses")?;
    ensure!(check.sni.as_deref() == Some(name), "the decoy names {name}");
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The cases

/// What a decoy names: listed nowhere in the council policy, so allowed.
const DECOY_NAME: &str = "www.bbc.co.uk";

/// The category and the verdict at work of a name under the built-in council policy
/// (classifier-user/policy/council-default.toml), written down here independently.
fn council(name: &str) -> (&'static str, &'static str) {
    let name = name.to_ascii_lowercase();
    let under = |domain: &str| name == domain || name.ends_with(&format!(".{domain}"));
    if under("youtube.com") || under("netflix.com") {
        ("streaming-video", "shape")
    } else if under("spotify.com") {
        ("streaming-audio", "shape")
    } else {
        ("uncategorized", "allow")
    }
}

fn stricter(a: &'static str, b: &'static str) -> &'static str {
    let rank = |v: &str| match v {
        "block" => 2,
        "shape" => 1,
        _ => 0,
    };
    if rank(a) >= rank(b) { a } else { b }
}

/// What a correct classifier reports for a case's flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The real name, its category and verdict.
    Real,
    /// The decoy's name and the real one (two versions of the same bytes): the stricter
    /// verdict.
    Conflict,
    /// Nothing can be read: the `unreadable` class, blocked at work.
    Unreadable,
}

/// How a data segment is spoiled so that the server drops it (or reads it otherwise).
#[derive(Clone, Copy, Debug, Default)]
struct Spoil {
    ttl: Option<u8>,
    bad_checksum: bool,
    /// Subtracted from the sequence number.
    seq_back: u32,
    /// Subtracted from the acknowledgment number.
    ack_back: u32,
    no_ack: bool,
    md5: bool,
    /// Subtracted from the timestamp value.
    ts_back: u32,
    /// URG set, the urgent pointer just past the payload's last byte (Linux's way).
    urgent: bool,
}

/// One send of the client's: bytes at a stream offset.
#[derive(Clone, Debug)]
struct Send {
    offset: usize,
    bytes: Vec<u8>,
    spoil: Spoil,
    /// Cut the segment into two IP fragments after this many bytes of TCP.
    fragment_at: Option<usize>,
}

impl Send {
    fn plain(offset: usize, bytes: &[u8]) -> Self {
        Self {
            offset,
            bytes: bytes.to_vec(),
            spoil: Spoil::default(),
            fragment_at: None,
        }
    }
}

/// What the client sends after the handshake, and what the server reads of it.
struct Plan {
    /// The bytes the server's application reads (the message, maybe re-wrapped).
    stream: Vec<u8>,
    /// The sequence space the client's data takes (the stream, plus any urgent byte).
    seq_len: usize,
    sends: Vec<Send>,
    /// The SYN-ACK's MSS, if not the real one.
    server_mss: Option<u16>,
}

/// What a technique works from.
struct Ctx<'a> {
    message: &'a [u8],
    name: &'a str,
    /// Stream offset of the name.
    name_at: usize,
    /// The largest payload the client's TCP sends in one segment.
    max_payload: usize,
}

impl Ctx<'_> {
    /// zapret's `midsld`: the middle of the name's second-level label.
    fn midsld(&self) -> usize {
        let labels: Vec<&str> = self.name.split('.').collect();
        let sld = labels.len().saturating_sub(2);
        let before: usize = labels[..sld].iter().map(|l| l.len() + 1).sum();
        self.name_at + before + labels[sld].len() / 2
    }

    /// The message's handshake offset of a stream offset (TLS: one 5-byte record header).
    fn in_message(&self, stream_offset: usize) -> usize {
        stream_offset - 5
    }

    fn plan(&self, stream: Vec<u8>, sends: Vec<Send>) -> Plan {
        Plan {
            seq_len: stream.len(),
            stream,
            sends,
            server_mss: None,
        }
    }

    /// The message cut at `cuts`, sent in `order` (indices of the pieces).
    fn cut(&self, stream: &[u8], cuts: &[usize], order: &[usize]) -> Vec<Send> {
        let pieces = pieces(stream, cuts);
        order.iter().map(|&i| pieces[i].clone()).collect()
    }

    fn in_order(&self, stream: &[u8], cuts: &[usize]) -> Vec<Send> {
        pieces(stream, cuts)
    }

    /// A decoy (the message naming [`DECOY_NAME`]) spoiled by `spoil`, then the message.
    fn decoy_then_real(&self, spoil: Spoil) -> anyhow::Result<Plan> {
        let decoy = with_name(self.message, DECOY_NAME)?;
        let mut decoy = Send::plain(0, &decoy);
        decoy.spoil = spoil;
        Ok(self.plan(
            self.message.to_vec(),
            vec![decoy, Send::plain(0, self.message)],
        ))
    }
}

fn pieces(stream: &[u8], cuts: &[usize]) -> Vec<Send> {
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < stream.len()));
    bounds.push(stream.len());
    bounds
        .windows(2)
        .map(|w| Send::plain(w[0], &stream[w[0]..w[1]]))
        .collect()
}

type Technique = fn(&Ctx) -> anyhow::Result<Plan>;

/// One evasion capture: a technique over a few real flows.
#[derive(Clone, Copy)]
struct Case {
    file: &'static str,
    technique: &'static str,
    /// What the client does, for people.
    what: &'static str,
    /// Which tools do this, and how they are told to.
    mimics: &'static str,
    flows: &'static [(Source, bool)],
    build: Technique,
    outcome: Outcome,
    /// Notes the flow record must carry.
    evasion: &'static [&'static str],
}

/// The big browser hellos: Chromium's over IPv4, Firefox's over IPv6.
const BROWSERS: &[(Source, bool)] = &[(CHROMIUM, false), (FIREFOX, true)];
/// The one-segment hellos: openssl's over IPv4, curl's over IPv6.
const SMALL: &[(Source, bool)] = &[(OPENSSL_TLS, false), (CURL_TLS, true)];
/// curl's HTTP request: moved to IPv4, and as captured over IPv6.
const HTTP: &[(Source, bool)] = &[(CURL_HTTP, false), (CURL_HTTP, true)];

/// A decoy then the real hello, over the one-segment hellos.
fn decoy(
    file: &'static str,
    technique: &'static str,
    what: &'static str,
    mimics: &'static str,
    evasion: &'static [&'static str],
    build: Technique,
) -> Case {
    Case {
        file,
        technique,
        what,
        mimics,
        flows: SMALL,
        build,
        outcome: Outcome::Real,
        evasion,
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            file: "split-1.pcap",
            technique: "split-1",
            what: "the hello cut after its first byte: a 1-byte first segment, the rest as the \
                   client's TCP segments it",
            mimics: "SpoofDPI (by default), byedpi `--split 1`, zapret `--dpi-desync=split2 \
                     --dpi-desync-split-pos=1`",
            flows: BROWSERS,
            build: |c| Ok(c.plan(c.message.to_vec(), c.in_order(c.message, &[1]))),
            outcome: Outcome::Real,
            evasion: &[],
        },
        Case {
            file: "split-2.pcap",
            technique: "split-2",
            what: "a 2-byte first segment",
            mimics: "GoodbyeDPI `-e 2` (its modes -1 to -4), zapret `--dpi-desync=split2` \
                     (position 2 by default)",
            flows: BROWSERS,
            build: |c| Ok(c.plan(c.message.to_vec(), c.in_order(c.message, &[2]))),
            outcome: Outcome::Real,
            evasion: &[],
        },
        Case {
            file: "split-in-name.pcap",
            technique: "split-in-name",
            what: "cut in the middle of the name's second-level label",
            mimics: "zapret `--dpi-desync=split2 --dpi-desync-split-pos=midsld`, byedpi \
                     `--split` at an offset from the SNI (`N+s`)",
            flows: BROWSERS,
            build: |c| Ok(c.plan(c.message.to_vec(), c.in_order(c.message, &[c.midsld()]))),
            outcome: Outcome::Real,
            evasion: &[],
        },
        Case {
            file: "segments-20.pcap",
            technique: "segments-20",
            what: "twenty segments of about 96 bytes",
            mimics: "SpoofDPI `--window-size`, zapret `--dpi-desync=multisplit` with many \
                     positions",
            flows: BROWSERS,
            build: |c| {
                let size = c.message.len().div_ceil(20);
                let cuts: Vec<usize> = (1..20).map(|i| i * size).collect();
                Ok(c.plan(c.message.to_vec(), c.in_order(c.message, &cuts)))
            },
            outcome: Outcome::Real,
            evasion: &[],
        },
        Case {
            file: "mss-536.pcap",
            technique: "mss-536",
            what: "the SYN-ACK announces an MSS of 536 (a path clamping it, as RFC 879's \
                   default): the client's TCP sends the hello in four segments",
            mimics: "a path clamping the MSS (no tool needed), the smallest segments a client \
                     sends unasked",
            flows: BROWSERS,
            build: |c| {
                let mut plan = c.plan(c.message.to_vec(), c.in_order(c.message, &[]));
                plan.server_mss = Some(536);
                Ok(plan)
            },
            outcome: Outcome::Real,
            evasion: &[],
        },
        Case {
            file: "disorder.pcap",
            technique: "disorder",
            what: "the client's first packet cut at byte 2 and its second part sent first, then \
                   the first part, then the rest of the hello",
            mimics: "zapret `--dpi-desync=disorder2` (split position 2 by default; \
                     `multidisorder` in newer versions)",
            flows: BROWSERS,
            build: |c| {
                let first = c.max_payload.min(c.message.len());
                Ok(c.plan(
                    c.message.to_vec(),
                    c.cut(c.message, &[2, first], &[1, 0, 2]),
                ))
            },
            outcome: Outcome::Real,
            evasion: &["reordered"],
        },
        Case {
            file: "reverse.pcap",
            technique: "reverse",
            what: "four segments sent last first",
            mimics: "zapret `--dpi-desync=multidisorder` with three positions; GoodbyeDPI \
                     `--reverse-frag` does it with two",
            flows: BROWSERS,
            build: |c| {
                let quarter = c.message.len() / 4;
                Ok(c.plan(
                    c.message.to_vec(),
                    c.cut(
                        c.message,
                        &[quarter, 2 * quarter, 3 * quarter],
                        &[3, 2, 1, 0],
                    ),
                ))
            },
            outcome: Outcome::Real,
            evasion: &["reordered"],
        },
        Case {
            file: "ttl1-disorder.pcap",
            technique: "ttl1-disorder",
            what: "the first byte with TTL 1 (it dies at the first router), the rest, then the \
                   first byte again as the kernel retransmits it",
            mimics: "byedpi `--disorder 1`",
            flows: BROWSERS,
            build: |c| {
                let mut pieces = c.in_order(c.message, &[1]);
                let mut dies = pieces[0].clone();
                dies.spoil.ttl = Some(1);
                let again = pieces[0].clone();
                pieces[0] = dies;
                pieces.push(again);
                Ok(c.plan(c.message.to_vec(), pieces))
            },
            outcome: Outcome::Real,
            evasion: &["bad-ttl", "reordered"],
        },
        Case {
            file: "tlsrec-1.pcap",
            technique: "tlsrec-1",
            what: "the handshake message in two TLS records, cut after its first byte",
            mimics: "byedpi `--tlsrec`, zapret tpws `--tlsrec`",
            flows: BROWSERS,
            build: |c| {
                let stream = split_records(c.message, &[1]);
                let sends = c.in_order(&stream, &[]);
                Ok(c.plan(stream, sends))
            },
            outcome: Outcome::Real,
            evasion: &["tls-records"],
        },
        Case {
            file: "tlsrec-in-name.pcap",
            technique: "tlsrec-in-name",
            what: "the handshake message in two TLS records, cut in the middle of the name's \
                   second-level label",
            mimics: "zapret tpws `--tlsrec=midsld`, byedpi `--tlsrec N+s`",
            flows: BROWSERS,
            build: |c| {
                let stream = split_records(c.message, &[c.in_message(c.midsld())]);
                let sends = c.in_order(&stream, &[]);
                Ok(c.plan(stream, sends))
            },
            outcome: Outcome::Real,
            evasion: &["tls-records"],
        },
        Case {
            file: "tlsrec-6.pcap",
            technique: "tlsrec-6",
            what: "the handshake message in six TLS records (cut after 2, 40 and 120 bytes, at \
                   the name and inside it)",
            mimics: "byedpi with `--tlsrec` given several times",
            flows: BROWSERS,
            build: |c| {
                let name = c.in_message(c.name_at);
                let mut cuts = vec![2, 40, 120, name, name + 4];
                cuts.sort_unstable();
                cuts.dedup();
                ensure!(cuts.len() == 5, "six records");
                let stream = split_records(c.message, &cuts);
                let sends = c.in_order(&stream, &[]);
                Ok(c.plan(stream, sends))
            },
            outcome: Outcome::Real,
            evasion: &["tls-records"],
        },
        Case {
            file: "tlsrec-disorder.pcap",
            technique: "tlsrec-disorder",
            what: "three TLS records (cut after one byte and inside the name) in four \
                   segments, the last sent first",
            mimics: "byedpi `--tlsrec` with `--disorder`, zapret tpws `--tlsrec` with nfqws \
                     `multidisorder`",
            flows: BROWSERS,
            build: |c| {
                let stream = split_records(c.message, &[1, c.in_message(c.midsld())]);
                let quarter = stream.len() / 4;
                let sends = c.cut(&stream, &[quarter, 2 * quarter, 3 * quarter], &[3, 0, 1, 2]);
                Ok(c.plan(stream, sends))
            },
            outcome: Outcome::Real,
            evasion: &["reordered", "tls-records"],
        },
        decoy(
            "decoy-badsum.pcap",
            "decoy-badsum",
            "a decoy hello naming www.bbc.co.uk with a wrong TCP checksum, then the real one",
            "zapret `--dpi-desync=fake --dpi-desync-fooling=badsum`, GoodbyeDPI \
             `--wrong-chksum`",
            &["bad-checksum"],
            |c| {
                c.decoy_then_real(Spoil {
                    bad_checksum: true,
                    ..Spoil::default()
                })
            },
        ),
        decoy(
            "decoy-ttl1.pcap",
            "decoy-ttl1",
            "a decoy with TTL 1, then the real hello",
            "byedpi `--fake` with `--ttl 1`",
            &["bad-ttl"],
            |c| {
                c.decoy_then_real(Spoil {
                    ttl: Some(1),
                    ..Spoil::default()
                })
            },
        ),
        decoy(
            "decoy-ttl.pcap",
            "decoy-ttl",
            "a decoy with TTL 5 (the SYN had 64): it dies before the server",
            "zapret `--dpi-desync=fake --dpi-desync-ttl=5`, GoodbyeDPI `--set-ttl 5`, byedpi \
             `--fake` (TTL 8 by default)",
            &["bad-ttl"],
            |c| {
                c.decoy_then_real(Spoil {
                    ttl: Some(5),
                    ..Spoil::default()
                })
            },
        ),
        decoy(
            "decoy-badseq.pcap",
            "decoy-badseq",
            "a decoy whose sequence number is 10000 before the stream's start",
            "zapret `--dpi-desync-fooling=badseq` (sequence part), GoodbyeDPI `--wrong-seq`",
            &["bad-sequence"],
            |c| {
                c.decoy_then_real(Spoil {
                    seq_back: 10_000,
                    ..Spoil::default()
                })
            },
        ),
        decoy(
            "decoy-badack.pcap",
            "decoy-badack",
            "a decoy acknowledging 66000 bytes before anything the server sent",
            "zapret `--dpi-desync-fooling=badseq` (acknowledgment part)",
            &["bad-sequence"],
            |c| {
                c.decoy_then_real(Spoil {
                    ack_back: 66_000,
                    ..Spoil::default()
                })
            },
        ),
        decoy(
            "decoy-noack.pcap",
            "decoy-noack",
            "a decoy with data but no ACK flag",
            "zapret `--dpi-desync-fooling=datanoack`",
            &["bad-sequence"],
            |c| {
                c.decoy_then_real(Spoil {
                    no_ack: true,
                    ..Spoil::default()
                })
            },
        ),
        decoy(
            "decoy-md5.pcap",
            "decoy-md5",
            "a decoy with a TCP MD5 signature option the SYN did not have",
            "zapret `--dpi-desync-fooling=md5sig`, byedpi `--md5sig`",
            &["bad-options"],
            |c| {
                c.decoy_then_real(Spoil {
                    md5: true,
                    ..Spoil::default()
                })
            },
        ),
        decoy(
            "decoy-ts.pcap",
            "decoy-ts",
            "a decoy whose TCP timestamp is 600000 back: older than the SYN's, so PAWS drops it",
            "zapret `--dpi-desync-fooling=ts`",
            &["bad-options"],
            |c| {
                c.decoy_then_real(Spoil {
                    ts_back: 600_000,
                    ..Spoil::default()
                })
            },
        ),
        Case {
            file: "decoy-conflict.pcap",
            technique: "decoy-conflict",
            what: "a decoy nothing at the gateway can tell from a real segment, then the real \
                   hello over the same bytes: the flow answers to both names",
            mimics: "zapret `--dpi-desync=fake` with a fooling that acts only beyond the \
                     gateway",
            flows: SMALL,
            build: |c| c.decoy_then_real(Spoil::default()),
            outcome: Outcome::Conflict,
            evasion: &["conflict"],
        },
        Case {
            file: "ipfrag.pcap",
            technique: "ipfrag",
            what: "the hello's segment in two IP fragments, cut 8 bytes into the TCP segment \
                   (the first fragment holds the ports and sequence number only); IPv6 with a \
                   fragment header",
            mimics: "zapret `--dpi-desync=ipfrag2` (`--dpi-desync-ipfrag-pos-tcp` is 8 by \
                     default)",
            flows: SMALL,
            build: |c| {
                let mut send = Send::plain(0, c.message);
                send.fragment_at = Some(8);
                Ok(c.plan(c.message.to_vec(), vec![send]))
            },
            outcome: Outcome::Unreadable,
            evasion: &["ip-fragments"],
        },
        Case {
            file: "ipfrag-32.pcap",
            technique: "ipfrag-32",
            what: "the hello's segment in two IP fragments, cut 32 bytes into the TCP segment \
                   (the first fragment holds the whole TCP header with its options, the second \
                   the hello)",
            mimics: "zapret `--dpi-desync=ipfrag2 --dpi-desync-ipfrag-pos-tcp=32`",
            flows: SMALL,
            build: |c| {
                let mut send = Send::plain(0, c.message);
                send.fragment_at = Some(32);
                Ok(c.plan(c.message.to_vec(), vec![send]))
            },
            outcome: Outcome::Unreadable,
            evasion: &["ip-fragments"],
        },
        Case {
            file: "oob.pcap",
            technique: "oob",
            what: "the first byte and one out-of-band byte (`a`, URG) in the first segment, the \
                   rest after it: the server's application reads the hello without that byte",
            mimics: "byedpi `--oob 1`",
            flows: SMALL,
            build: |c| {
                let mut first = c.message[..1].to_vec();
                first.push(b'a');
                let mut oob = Send::plain(0, &first);
                oob.spoil.urgent = true;
                let rest = Send::plain(2, &c.message[1..]);
                Ok(Plan {
                    stream: c.message.to_vec(),
                    seq_len: c.message.len() + 1,
                    sends: vec![oob, rest],
                    server_mss: None,
                })
            },
            outcome: Outcome::Unreadable,
            evasion: &["bad-options"],
        },
        Case {
            file: "http-split-1.pcap",
            technique: "http-split-1",
            what: "the HTTP request cut after its first byte",
            mimics: "GoodbyeDPI `-f 1`, SpoofDPI, zapret `--dpi-desync=split2 \
                     --dpi-desync-split-pos=1`",
            flows: HTTP,
            build: |c| Ok(c.plan(c.message.to_vec(), c.in_order(c.message, &[1]))),
            outcome: Outcome::Real,
            evasion: &[],
        },
    ]
}

// ---------------------------------------------------------------------------------------
// Building a flow

/// One flow of an evasion capture.
struct Built {
    frames: Vec<(Duration, Vec<u8>)>,
    /// Client data segments (IP fragments count once).
    client_segments: usize,
    end: Duration,
}

const STEP: Duration = Duration::from_micros(20);

fn build_flow(real: &RealFlow, case: &Case, not_before: Duration) -> anyhow::Result<Built> {
    let wire = real.wire;
    // A flow starts at its real time, or after the capture's previous flow.
    let start = real.times[0].max(not_before + Duration::from_millis(1));
    let at = |real_time: Duration| start + (real_time - real.times[0]);
    let syn = real.syn.clone();
    let mut syn_ack = real.syn_ack.clone();
    let options_len = real.data.options.len();
    let natural =
        usize::from(syn.mss().unwrap_or(536).min(syn_ack.mss().unwrap_or(536))) - options_len;
    let ctx = Ctx {
        message: &real.message,
        name: &real.name,
        name_at: real.name_at,
        max_payload: natural,
    };
    let plan = (case.build)(&ctx)?;
    if let Some(mss) = plan.server_mss {
        syn_ack.set_mss(mss);
    }
    let max_payload =
        usize::from(syn.mss().unwrap_or(536).min(syn_ack.mss().unwrap_or(536))) - options_len;
    let client_isn = syn.seq.wrapping_add(1);
    let server_isn = syn_ack.seq.wrapping_add(1);
    let mut frames = vec![
        (at(real.times[0]), frame(&wire, &syn)),
        (at(real.times[1]), frame(&wire, &syn_ack)),
        (at(real.times[2]), frame(&wire, &real.ack)),
    ];
    let mut next_id = real.ack.ip_id;
    let mut time = at(real.times[3]);
    let mut sent: Vec<Seg> = Vec::new();
    let mut wrong_checksum = Vec::new();
    let syn_tsval = syn.tsval().context("the SYN has timestamps")?;
    for send in &plan.sends {
        // A send longer than a segment goes as the client's TCP cuts it.
        for piece in pieces_of(&send.bytes, max_payload) {
            let mut seg = real.data.clone();
            seg.seq = client_isn.wrapping_add((send.offset + piece.0) as u32);
            seg.ack = server_isn;
            seg.flags = PSH | ACK;
            seg.payload = piece.1.to_vec();
            next_id = next_id.wrapping_add(1);
            seg.ip_id = next_id;
            let spoil = send.spoil;
            if let Some(ttl) = spoil.ttl {
                seg.ttl = ttl;
            }
            seg.bad_checksum = spoil.bad_checksum;
            seg.seq = seg.seq.wrapping_sub(spoil.seq_back);
            seg.ack = seg.ack.wrapping_sub(spoil.ack_back);
            if spoil.no_ack {
                seg.flags &= !ACK;
                seg.ack = 0;
            }
            if spoil.md5 {
                seg.options.extend_from_slice(&[1, 1, OPT_MD5, 18]);
                seg.options.extend((0..16u8).map(|i| 0xa0 ^ i));
            }
            if spoil.ts_back > 0 {
                let tsval = seg.tsval().context("data segments have timestamps")?;
                seg.set_tsval(tsval.wrapping_sub(spoil.ts_back));
            }
            if spoil.urgent {
                seg.flags |= URG;
                seg.urgent = seg.payload.len() as u16;
            }
            match send.fragment_at {
                Some(cut) => {
                    // IPv4: the datagram's identification; IPv6: one made up from the port.
                    let id = if wire.v6() {
                        0x4000_0000 | u32::from(wire.client.port())
                    } else {
                        u32::from(seg.ip_id)
                    };
                    for fragment in fragments(&wire, &seg, cut, id) {
                        frames.push((time, fragment));
                        time += STEP;
                    }
                }
                None => {
                    if seg.bad_checksum {
                        wrong_checksum.push(frames.len());
                    }
                    frames.push((time, frame(&wire, &seg)));
                    time += STEP;
                }
            }
            sent.push(seg);
        }
    }
    // The server's answer, acknowledging what the client sent.
    let client_end = client_isn.wrapping_add(plan.seq_len as u32);
    let mut server_ack = real.server_ack.clone();
    server_ack.seq = server_isn;
    server_ack.ack = client_end;
    time += Duration::from_micros(100);
    frames.push((time, frame(&wire, &server_ack)));
    let mut server_data = real.server_data.clone();
    server_data.seq = server_isn;
    server_data.ack = client_end;
    time += Duration::from_millis(1);
    frames.push((time, frame(&wire, &server_data)));
    let mut client_ack = real.client_ack.clone();
    client_ack.seq = client_end;
    client_ack.ack = server_isn.wrapping_add(server_data.payload.len() as u32);
    next_id = next_id.wrapping_add(1);
    client_ack.ip_id = next_id;
    time += STEP;
    frames.push((time, frame(&wire, &client_ack)));

    check_flow(
        real,
        case,
        &plan,
        &sent,
        syn_tsval,
        &frames,
        &wrong_checksum,
    )?;
    Ok(Built {
        client_segments: sent.len(),
        frames,
        end: time,
    })
}

/// `bytes` in pieces of at most `size`: (offset, piece).
fn pieces_of(bytes: &[u8], size: usize) -> Vec<(usize, &[u8])> {
    bytes
        .chunks(size.max(1))
        .enumerate()
        .map(|(i, chunk)| (i * size, chunk))
        .collect()
}

/// Checks a built flow: every frame parses, checksums are right unless a decoy's is meant
/// to be wrong (and then not the offload placeholder a replay would finish), and what a
/// server's TCP reads is the real message with the real name — or, for a conflict, the
/// decoy (first come), the real message being the other version.
fn check_flow(
    real: &RealFlow,
    case: &Case,
    plan: &Plan,
    sent: &[Seg],
    syn_tsval: u32,
    frames: &[(Duration, Vec<u8>)],
    wrong_checksum: &[usize],
) -> anyhow::Result<()> {
    for (index, (_, frame)) in frames.iter().enumerate() {
        let mut meta = PacketMeta::default();
        match parse_headers(&frame[..], &mut meta) {
            Ok(Parsed::Ip) if meta.fragment == fragment::NONE => {}
            Ok(Parsed::Ip) if meta.fragment == fragment::FIRST => continue,
            Ok(Parsed::Fragment) => continue,
            other => bail!("frame {index} does not parse: {other:?}"),
        }
        let want = if wrong_checksum.contains(&index) {
            ChecksumStatus::Invalid
        } else {
            ChecksumStatus::Valid
        };
        let status = frame_checksum_status(frame, &meta);
        if status != Some(want) {
            bail!("frame {index}: checksum {status:?}, meant {want:?}");
        }
    }
    ensure!(
        frames.windows(2).all(|w| w[0].0 <= w[1].0),
        "times go forward"
    );
    // The server's view: what its TCP accepts, first come first kept, urgent byte out.
    let client_isn = real.syn.seq.wrapping_add(1);
    let server_isn = real.syn_ack.seq.wrapping_add(1);
    let mut bytes: BTreeMap<usize, u8> = BTreeMap::new();
    let mut urgent = Vec::new();
    for seg in sent {
        let offset = seg.seq.wrapping_sub(client_isn) as usize;
        let accepted = !seg.bad_checksum
            && seg.ttl == real.syn.ttl
            && seg.flags & ACK != 0
            && seg.ack == server_isn
            && offset < 1 << 30
            && seg.option_at(OPT_MD5).is_none()
            && seg
                .tsval()
                .is_some_and(|ts| ts.wrapping_sub(syn_tsval) < 1 << 31);
        if !accepted {
            continue;
        }
        for (i, byte) in seg.payload.iter().enumerate() {
            bytes.entry(offset + i).or_insert(*byte);
        }
        if seg.flags & URG != 0 {
            urgent.push(offset + usize::from(seg.urgent) - 1);
        }
    }
    ensure!(
        bytes.keys().copied().eq(0..plan.seq_len),
        "the server's stream has holes"
    );
    let read: Vec<u8> = bytes
        .into_iter()
        .filter(|(offset, _)| !urgent.contains(offset))
        .map(|(_, byte)| byte)
        .collect();
    match case.outcome {
        Outcome::Conflict => {
            let decoy = with_name(&real.message, DECOY_NAME)?;
            ensure!(
                read.starts_with(&decoy),
                "the server keeps the first version"
            );
            ensure!(
                sent.iter().any(|s| s.payload == real.message),
                "the real message follows"
            );
        }
        Outcome::Real | Outcome::Unreadable => {
            ensure!(read == plan.stream, "the server reads the planned stream");
            let (name, _) = name_in(real.kind, &read).context("the server reads a name")?;
            ensure!(
                name == real.name,
                "the server reads {name}, not {}",
                real.name
            );
            let message = match real.kind {
                Kind::Tls => {
                    tls::handshake_from_records(&read, 1)
                        .context("the hello")?
                        .0
                }
                Kind::Http => read.clone(),
            };
            let original = match real.kind {
                Kind::Tls => real.message[5..].to_vec(),
                Kind::Http => real.message.clone(),
            };
            ensure!(message == original, "the server reads the real message");
        }
    }
    Ok(())
}

fn pcap_bytes<'a>(
    frames: impl Iterator<Item = &'a (Duration, Vec<u8>)>,
) -> anyhow::Result<Vec<u8>> {
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: 262_144,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
    };
    let mut writer = PcapWriter::with_header(Vec::new(), header)?;
    let mut frames: Vec<&(Duration, Vec<u8>)> = frames.collect();
    frames.sort_by_key(|(time, _)| *time); // stable: flows stay in order at equal times
    for (time, data) in frames {
        let packet = PcapPacket::new(*time, data.len() as u32, data);
        writer.write_packet(&packet)?;
    }
    Ok(writer.into_writer())
}

// ---------------------------------------------------------------------------------------
// manifest.toml and README.md

struct Written {
    case: Case,
    flows: Vec<(RealFlow, Built)>,
    size: usize,
}

fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// One flow's expectations: (name, category, verdict, second name, second category,
/// unreadable).
fn expected(case: &Case, real: &RealFlow) -> (String, String, String, String, String, bool) {
    let (category, verdict) = council(&real.name);
    match case.outcome {
        Outcome::Real => (
            real.name.clone(),
            category.into(),
            verdict.into(),
            String::new(),
            String::new(),
            false,
        ),
        Outcome::Conflict => {
            let (decoy_category, decoy_verdict) = council(DECOY_NAME);
            (
                DECOY_NAME.into(),
                decoy_category.into(),
                stricter(verdict, decoy_verdict).into(),
                real.name.clone(),
                category.into(),
                false,
            )
        }
        Outcome::Unreadable => (
            String::new(),
            "unreadable".into(),
            "block".into(),
            String::new(),
            String::new(),
            true,
        ),
    }
}

fn manifest(written: &[Written]) -> String {
    let mut out = String::from(
        "# What a correct classifier reports for each flow of each evasion capture in this\n\
         # directory, under the built-in council policy at work (Monday 2026-11-23 10:00 UTC).\n\
         # Generated with the captures by make-evasion-captures (tests/src/bin): do not edit.\n\
         # `real_name` is what the server reads; `name`/`category` what the flow record must\n\
         # say (\"\" = no name). A conflict (two versions of the same bytes) answers to both\n\
         # names, `name` being the first seen, and takes the stricter verdict; `unreadable`\n\
         # flows have no name, the `unreadable` category and are blocked. `evasion`: notes\n\
         # the record must carry. `source`: the real capture and flow the bytes come from.\n",
    );
    for w in written {
        let case = &w.case;
        writeln!(out, "\n[[capture]]").unwrap();
        writeln!(out, "file = {}", quote(case.file)).unwrap();
        writeln!(out, "technique = {}", quote(case.technique)).unwrap();
        writeln!(out, "what = {}", quote(case.what)).unwrap();
        writeln!(out, "mimics = {}", quote(case.mimics)).unwrap();
        for (real, built) in &w.flows {
            let (name, category, verdict, second_name, second_category, unreadable) =
                expected(case, real);
            writeln!(out, "\n[[capture.flow]]").unwrap();
            writeln!(out, "client = {}", quote(&real.wire.client.to_string())).unwrap();
            writeln!(out, "server = {}", quote(&real.wire.server.to_string())).unwrap();
            writeln!(out, "family = {}", quote(family(real.wire.v6()))).unwrap();
            writeln!(out, "protocol = \"tcp\"").unwrap();
            writeln!(out, "client_software = {}", quote(&real.software)).unwrap();
            writeln!(
                out,
                "source = {}",
                quote(&format!(
                    "{} {} -> {}{}",
                    real.source.file,
                    real.captured_client,
                    real.captured_server,
                    if real.converted {
                        ", moved to the other address family"
                    } else {
                        ""
                    }
                ))
            )
            .unwrap();
            writeln!(out, "real_name = {}", quote(&real.name)).unwrap();
            writeln!(out, "name = {}", quote(&name)).unwrap();
            writeln!(out, "category = {}", quote(&category)).unwrap();
            writeln!(out, "verdict = {}", quote(&verdict)).unwrap();
            if !second_name.is_empty() {
                writeln!(out, "second_name = {}", quote(&second_name)).unwrap();
                writeln!(out, "second_category = {}", quote(&second_category)).unwrap();
            }
            writeln!(out, "unreadable = {unreadable}").unwrap();
            let notes: Vec<String> = case.evasion.iter().map(|n| quote(n)).collect();
            writeln!(out, "evasion = [{}]", notes.join(", ")).unwrap();
            writeln!(out, "client_data_segments = {}", built.client_segments).unwrap();
        }
    }
    out
}

fn readme(written: &[Written], sources: &Sources) -> String {
    let mut md = String::new();
    let w = &mut md;
    writeln!(
        w,
        "# Evasion captures\n\n\
         Real clients' first messages re-sent the ways the tools made to get past SNI filters \
         send them (zapret, GoodbyeDPI, byedpi, SpoofDPI), one pcap per technique, each with \
         an IPv4 and an IPv6 flow. `manifest.toml` says what a correct classifier reports for \
         every flow under the built-in council policy at work; `tests/tests/evasion_captures.rs` \
         runs each file through `classifier classify-pcap --json --at 2026-11-23T10:00:00Z` and \
         checks it, and `ndpi-compare` (`cargo xtask bench`) sets our answers beside nDPI \
         4.2's. These files, the manifest and this README are generated together: do not edit \
         them by hand.\n"
    )
    .unwrap();
    writeln!(
        w,
        "## How they are made\n\n\
         `cargo run -p classifier-tests --bin make-evasion-captures` (no privilege needed; \
         `--out DIR` writes elsewhere) reads the real captures of \
         [tests/captures](../README.md) (made in the lab by `regenerate.sh`; run it again \
         after them) and takes from each source \
         flow:\n\n\
         - its handshake as captured: SYN, SYN-ACK and ACK with their real TCP options \
           (MSS, SACK, timestamps, window scale), sequence numbers, windows, TTLs, IPv4 \
           identifications or IPv6 flow labels, MACs and times;\n\
         - the client's first message: the whole ClientHello record (however the client's \
           TCP cut it) or the HTTP request head;\n\
         - the server's answer: its ACK and its first data segment, and the client's ACK of \
           that, their acknowledgment numbers made to match what the client sent.\n\n\
         It then sends the message again as the technique says: every data segment carries \
         the real first data segment's options (timestamps), window and TTL, sequence \
         numbers follow the real handshake's, and a send longer than the path's MSS is cut \
         as the client's TCP would. Checksums (IPv4 header, TCP) are computed, so a replay \
         has nothing to finish; only a `badsum` decoy's TCP checksum is wrong. A decoy is \
         the real hello with its server name replaced by `{DECOY_NAME}` (allowed) and every \
         length around it fixed. A flow may be moved to the other address family: the \
         lab's addresses (`192.0.2.10`/`203.0.113.10`, `2001:db8:1::10`/`2001:db8:3::10`), \
         the MSS options 20 bytes apart, the IPv4 identifications or IPv6 flow labels made \
         up from the client's port.\n\n\
         Before writing, every flow is checked: what a server's TCP would read from it \
         (dropping what a server drops: wrong checksum, a TTL other than the SYN's, a \
         sequence number before the stream, an acknowledgment of nothing sent, no ACK, an \
         MD5 option, a timestamp older than the SYN's; reassembling fragments; leaving out \
         urgent data) must be the real message with the real name, read by the independent \
         parser in `tests/src/wire`. The output is deterministic: the same real captures \
         give byte-identical files (the test regenerates them into a temporary directory \
         and compares).\n"
    )
    .unwrap();
    writeln!(w, "## Source flows\n").unwrap();
    writeln!(w, "| client | capture | flow | message | name | sent as |").unwrap();
    writeln!(w, "| --- | --- | --- | --- | --- | --- |").unwrap();
    for real in sources.flows.values() {
        writeln!(
            w,
            "| {} | [`{}`](../README.md) | {} → {} | {} | `{}` | {} segment(s) of {:?} bytes |",
            real.software,
            real.source.file,
            real.captured_client,
            real.captured_server,
            match real.kind {
                Kind::Tls => format!("ClientHello, {}-byte record", real.message.len()),
                Kind::Http => format!("HTTP request head, {} bytes", real.message.len()),
            },
            real.name,
            real.sent_as.len(),
            real.sent_as
        )
        .unwrap();
    }
    writeln!(
        w,
        "\n## The captures\n\n\
         The verdict is the council policy's at work: streaming video and audio shaped, \
         `{DECOY_NAME}` (news) allowed, what cannot be read blocked. A conflict's flow \
         answers to both names and takes the stricter verdict.\n"
    )
    .unwrap();
    writeln!(
        w,
        "| file | technique | mimics | flows (client, family, data segments: name → category, \
         verdict at work) | \
         notes | bytes |"
    )
    .unwrap();
    writeln!(w, "| --- | --- | --- | --- | --- | ---: |").unwrap();
    for written in written {
        let case = &written.case;
        let flows: Vec<String> = written
            .flows
            .iter()
            .map(|(real, built)| {
                let (name, category, verdict, second, second_category, _) = expected(case, real);
                let name = match (name.as_str(), second.as_str()) {
                    ("", _) => format!("no name → {category}"),
                    (name, "") => format!("`{name}` → {category}"),
                    (name, second) => {
                        format!("`{name}` ({category}) and `{second}` ({second_category})")
                    }
                };
                format!(
                    "{}, {}{}, {} segment(s): {name}, {verdict}",
                    real.source.client,
                    family(real.wire.v6()),
                    if real.converted { " (moved)" } else { "" },
                    built.client_segments
                )
            })
            .collect();
        let notes = if case.evasion.is_empty() {
            "-".to_string()
        } else {
            case.evasion.join(", ")
        };
        writeln!(
            w,
            "| [`{}`](#{}) | {} | {} | {} | {notes} | {} |",
            case.file,
            case.technique,
            case.technique,
            case.mimics,
            flows.join("; "),
            written.size
        )
        .unwrap();
    }
    writeln!(w, "\n## Each technique\n").unwrap();
    for written in written {
        let case = &written.case;
        writeln!(w, "### {}\n", case.technique).unwrap();
        writeln!(
            w,
            "`{}`: {}. Mimics {}.\n",
            case.file, case.what, case.mimics
        )
        .unwrap();
        for (real, _) in &written.flows {
            writeln!(
                w,
                "- {} {} → {}: {}'s {} from `{}`{}",
                family(real.wire.v6()),
                real.wire.client,
                real.wire.server,
                real.software,
                match real.kind {
                    Kind::Tls => "ClientHello",
                    Kind::Http => "HTTP request",
                },
                real.source.file,
                if real.converted {
                    format!(
                        " (captured as {} → {})",
                        real.captured_client, real.captured_server
                    )
                } else {
                    String::new()
                }
            )
            .unwrap();
        }
        writeln!(w).unwrap();
    }
    md.trim_end().to_string() + "\n"
}
