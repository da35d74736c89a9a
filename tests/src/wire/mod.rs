//! Reading what real clients put on the wire, from pcap files: flows, their TCP streams and
//! datagrams, and what a classifier should see in them (TLS SNI and ECH, HTTP Host, QUIC
//! Initials, BitTorrent handshakes, trackers, DHT, uTP). `make-captures` fills
//! `tests/captures/manifest.toml` from this; the classifier's own parsers are tested against
//! those files.

pub mod bencode;
pub mod quic;
pub mod tls;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr, SocketAddrV4},
    ops::Range,
    path::Path,
    time::Duration,
};

use anyhow::Context as _;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// How a correct classifier recognises a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// TLS ClientHello server_name (over TCP).
    Sni,
    /// HTTP/1 Host header.
    Host,
    /// QUIC Initial (the SNI is in its decryptable ClientHello).
    Quic,
    /// `\x13BitTorrent protocol` peer handshake (over TCP).
    BtHandshake,
    /// Bencoded KRPC messages of the BitTorrent DHT (BEP 5) over UDP.
    BtDht,
    /// uTP (BEP 29) over UDP.
    BtUtp,
    /// An HTTP tracker announce/scrape or a UDP tracker (BEP 15) exchange.
    BtTracker,
    /// Nothing in the flow itself; its server endpoint was named by a tracker response earlier
    /// in the capture (e.g. a BitTorrent connection with message stream encryption).
    PeerCache,
    None,
}

impl Detection {
    pub fn as_str(self) -> &'static str {
        match self {
            Detection::Sni => "sni",
            Detection::Host => "host",
            Detection::Quic => "quic",
            Detection::BtHandshake => "bt-handshake",
            Detection::BtDht => "bt-dht",
            Detection::BtUtp => "bt-utp",
            Detection::BtTracker => "bt-tracker",
            Detection::PeerCache => "peer-cache",
            Detection::None => "none",
        }
    }
}

/// One captured TCP or UDP packet.
#[derive(Clone, Debug)]
pub struct Packet {
    pub time: Duration,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub protocol: Protocol,
    /// TCP sequence number and SYN flag.
    pub tcp: Option<(u32, bool)>,
    pub payload: Vec<u8>,
}

/// Reads the TCP and UDP packets of an Ethernet pcap file.
pub fn read_pcap(path: &Path) -> anyhow::Result<Vec<Packet>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader =
        PcapReader::new(file).with_context(|| format!("reading {}", path.display()))?;
    let mut packets = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet?;
        let Ok(sliced) = SlicedPacket::from_ethernet(&packet.data) else {
            continue;
        };
        let (src_ip, dst_ip): (IpAddr, IpAddr) = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            Some(NetSlice::Ipv6(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            _ => continue,
        };
        let (protocol, sport, dport, tcp, payload) = match &sliced.transport {
            Some(TransportSlice::Tcp(tcp)) => (
                Protocol::Tcp,
                tcp.source_port(),
                tcp.destination_port(),
                Some((tcp.sequence_number(), tcp.syn())),
                tcp.payload(),
            ),
            Some(TransportSlice::Udp(udp)) => (
                Protocol::Udp,
                udp.source_port(),
                udp.destination_port(),
                None,
                udp.payload(),
            ),
            _ => continue,
        };
        packets.push(Packet {
            time: packet.timestamp,
            src: SocketAddr::new(src_ip, sport),
            dst: SocketAddr::new(dst_ip, dport),
            protocol,
            tcp,
            payload: payload.to_vec(),
        });
    }
    Ok(packets)
}

/// Whether `ip` is on the lab's LAN (192.0.2.0/24, 2001:db8:1::/64): the client side of a
/// flow, as the classifier keys flows.
pub fn is_lan(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [192, 0, 2],
        IpAddr::V6(v6) => v6.segments()[..4] == [0x2001, 0xdb8, 1, 0],
    }
}

/// One direction of a TCP connection: the distinct payload segments in sequence order and
/// the bytes they make.
#[derive(Clone, Debug, Default)]
pub struct Stream {
    pub bytes: Vec<u8>,
    /// Byte range of each segment (segment 1 is `segments[0]`).
    pub segments: Vec<Range<usize>>,
}

impl Stream {
    /// The 1-based segment holding stream byte `offset`.
    pub fn segment_of(&self, offset: usize) -> Option<u32> {
        self.segments
            .iter()
            .position(|r| r.contains(&offset))
            .map(|i| i as u32 + 1)
    }

    fn assemble(packets: &[&Packet]) -> Self {
        let isn = packets
            .iter()
            .find(|p| p.tcp.is_some_and(|(_, syn)| syn))
            .map(|p| p.tcp.unwrap().0.wrapping_add(1))
            .or_else(|| packets.iter().find_map(|p| p.tcp.map(|(seq, _)| seq)));
        let Some(isn) = isn else {
            return Self::default();
        };
        let mut by_offset: BTreeMap<u32, &[u8]> = BTreeMap::new();
        for p in packets.iter().filter(|p| !p.payload.is_empty()) {
            let offset = p.tcp.unwrap().0.wrapping_sub(isn);
            by_offset.entry(offset).or_insert(&p.payload);
        }
        let mut stream = Self::default();
        for (offset, data) in by_offset {
            let offset = offset as usize;
            // Skip retransmitted bytes already covered; stop at a gap (lost capture).
            if offset > stream.bytes.len() {
                break;
            }
            let new = &data[(stream.bytes.len() - offset).min(data.len())..];
            if new.is_empty() {
                continue;
            }
            let start = stream.bytes.len();
            stream.bytes.extend_from_slice(new);
            stream.segments.push(start..stream.bytes.len());
        }
        stream
    }
}

/// The packets of one flow, client (LAN) side first.
#[derive(Clone, Debug)]
pub struct Flow {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub protocol: Protocol,
    pub packets: usize,
    /// UDP payload or TCP payload bytes, client to server and back.
    pub payload_up: usize,
    pub payload_down: usize,
    /// TCP only.
    pub up: Stream,
    pub down: Stream,
    /// UDP only: datagram payloads in order, with their direction (true: client to server).
    pub datagrams: Vec<(bool, Vec<u8>)>,
}

/// Groups packets into flows, in order of their first packet.
pub fn flows(packets: &[Packet]) -> Vec<Flow> {
    let mut order: Vec<(SocketAddr, SocketAddr, Protocol)> = Vec::new();
    let mut members: BTreeMap<(SocketAddr, SocketAddr, Protocol), Vec<&Packet>> = BTreeMap::new();
    for p in packets {
        let key = if is_lan(p.src.ip()) {
            (p.src, p.dst, p.protocol)
        } else {
            (p.dst, p.src, p.protocol)
        };
        let list = members.entry(key).or_default();
        if list.is_empty() {
            order.push(key);
        }
        list.push(p);
    }
    order
        .into_iter()
        .map(|key @ (client, server, protocol)| {
            let list = &members[&key];
            let (up, down): (Vec<&Packet>, Vec<&Packet>) =
                list.iter().partition(|p| p.src == client);
            let mut flow = Flow {
                client,
                server,
                protocol,
                packets: list.len(),
                payload_up: up.iter().map(|p| p.payload.len()).sum(),
                payload_down: down.iter().map(|p| p.payload.len()).sum(),
                up: Stream::default(),
                down: Stream::default(),
                datagrams: Vec::new(),
            };
            match protocol {
                Protocol::Tcp => {
                    flow.up = Stream::assemble(&up);
                    flow.down = Stream::assemble(&down);
                }
                Protocol::Udp => {
                    flow.datagrams = list
                        .iter()
                        .map(|p| (p.src == client, p.payload.clone()))
                        .collect();
                }
            }
            flow
        })
        .collect()
}

/// What the capture shows about one flow: the manifest's fields and details for people.
#[derive(Clone, Debug)]
pub struct FlowFacts {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub protocol: Protocol,
    pub name: String,
    pub detection: Detection,
    pub ech: bool,
    pub client_hello_segments: u32,
    pub sni_in_segment: u32,
    pub packets: usize,
    pub payload_up: usize,
    pub payload_down: usize,
    pub tls: Option<TlsFacts>,
    pub quic: Option<QuicFacts>,
    pub http: Option<HttpFacts>,
    /// Peers a tracker response in this flow named.
    pub tracker_peers: Vec<SocketAddr>,
    pub bt_handshake: Option<BtHandshake>,
}

/// Where a plaintext BitTorrent handshake was found.
#[derive(Clone, Copy, Debug)]
pub struct BtHandshake {
    /// Sent by the client (else by the server).
    pub from_client: bool,
    /// Stream offset: 0 for a plain connection, after the key exchange when message stream
    /// encryption chose plaintext.
    pub offset: usize,
    /// 1-based payload segment of that direction.
    pub segment: u32,
}

#[derive(Clone, Debug)]
pub struct TlsFacts {
    pub hello: tls::ClientHello,
    /// Payload sizes of the client's first segments, up to the end of the ClientHello.
    pub hello_segment_sizes: Vec<usize>,
    /// The first record's declared length (the ClientHello record).
    pub first_record_len: usize,
    /// The segment holding the last host name byte (differs from `sni_in_segment` when the
    /// name straddles two segments).
    pub sni_last_segment: u32,
    /// The version the server chose, when its ServerHello is in the capture.
    pub server_version: Option<u16>,
}

#[derive(Clone, Debug)]
pub struct QuicFacts {
    pub version: u32,
    /// UDP payload size of each client datagram that carried an Initial packet.
    pub initial_datagrams: Vec<usize>,
    /// Whether the Initials could be decrypted (known version, keys from the first DCID).
    pub decrypted: bool,
    pub hello: Option<tls::ClientHello>,
    /// How many Initial packets, in order sent, it takes to hold the whole ClientHello.
    pub hello_initials: usize,
    /// The Initial packet (1-based, in order sent) whose CRYPTO frames first carry the SNI.
    pub sni_in_initial: usize,
    /// CRYPTO frames per Initial packet, in order sent.
    pub crypto_frames_per_initial: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct HttpFacts {
    pub request_line: String,
    pub host: Option<String>,
    /// Segments the request head (up to the blank line) spans.
    pub head_segments: u32,
    /// The segment holding the Host header line.
    pub host_in_segment: u32,
}

const HTTP_METHODS: [&[u8]; 6] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"OPTIONS ",
    b"DELETE ",
];
const BT_HANDSHAKE: &[u8] = b"\x13BitTorrent protocol";
/// BEP 15: the protocol id of a UDP tracker connect request.
pub const UDP_TRACKER_MAGIC: u64 = 0x0417_2710_1980;

/// Analyses every flow of a capture.
pub fn analyze(packets: &[Packet]) -> Vec<FlowFacts> {
    let mut facts: Vec<FlowFacts> = flows(packets).iter().map(analyze_flow).collect();
    let named: BTreeSet<SocketAddr> = facts
        .iter()
        .flat_map(|f| f.tracker_peers.iter().copied())
        .collect();
    for f in &mut facts {
        if f.detection == Detection::None
            && f.payload_up + f.payload_down > 0
            && named.contains(&f.server)
        {
            f.detection = Detection::PeerCache;
        }
    }
    facts
}

fn analyze_flow(flow: &Flow) -> FlowFacts {
    let mut facts = FlowFacts {
        client: flow.client,
        server: flow.server,
        protocol: flow.protocol,
        name: String::new(),
        detection: Detection::None,
        ech: false,
        client_hello_segments: 0,
        sni_in_segment: 0,
        packets: flow.packets,
        payload_up: flow.payload_up,
        payload_down: flow.payload_down,
        tls: None,
        quic: None,
        http: None,
        tracker_peers: Vec::new(),
        bt_handshake: None,
    };
    match flow.protocol {
        Protocol::Tcp => analyze_tcp(flow, &mut facts),
        Protocol::Udp => analyze_udp(flow, &mut facts),
    }
    facts
}

fn analyze_tcp(flow: &Flow, facts: &mut FlowFacts) {
    let up = &flow.up;
    if up.bytes.starts_with(&[0x16, 0x03]) {
        let Some((message, offsets)) = tls::handshake_from_records(&up.bytes, 1) else {
            return;
        };
        let Some(hello) = tls::parse_client_hello(&message) else {
            return;
        };
        let last = up.segment_of(*offsets.last().unwrap()).unwrap_or(0);
        facts.client_hello_segments = last;
        facts.ech = hello.ech;
        let mut sni_last_segment = 0;
        if let Some(sni) = &hello.sni {
            facts.name = sni.clone();
            facts.detection = Detection::Sni;
            facts.sni_in_segment = up.segment_of(offsets[hello.sni_offset]).unwrap_or(0);
            sni_last_segment = up
                .segment_of(offsets[hello.sni_offset + hello.sni_len.max(1) - 1])
                .unwrap_or(0);
        }
        let server_version = tls::handshake_from_records(&flow.down.bytes, 2)
            .and_then(|(m, _)| tls::server_hello_version(&m));
        facts.tls = Some(TlsFacts {
            hello_segment_sizes: up.segments[..last as usize]
                .iter()
                .map(|r| r.len())
                .collect(),
            first_record_len: usize::from(u16::from_be_bytes([up.bytes[3], up.bytes[4]])),
            hello,
            sni_last_segment,
            server_version,
        });
    } else if HTTP_METHODS.iter().any(|m| up.bytes.starts_with(m)) {
        let head_end = find(&up.bytes, b"\r\n\r\n").map_or(up.bytes.len(), |i| i + 4);
        let head = &up.bytes[..head_end];
        let line_end = find(head, b"\r\n").unwrap_or(head.len());
        let request_line = String::from_utf8_lossy(&head[..line_end]).into_owned();
        let mut host = None;
        let mut host_in_segment = 0;
        let mut pos = line_end + 2;
        while pos < head.len() {
            let end = find(&head[pos..], b"\r\n").map_or(head.len(), |i| pos + i);
            let line = &head[pos..end];
            if line.len() > 5 && line[..5].eq_ignore_ascii_case(b"host:") {
                host = Some(String::from_utf8_lossy(&line[5..]).trim().to_owned());
                host_in_segment = up.segment_of(pos).unwrap_or(0);
                break;
            }
            pos = end + 2;
        }
        let path = request_line.split(' ').nth(1).unwrap_or_default();
        let tracker = (path.starts_with("/announce") || path.starts_with("/scrape"))
            && path.contains("info_hash=");
        facts.detection = if tracker {
            Detection::BtTracker
        } else if host.is_some() {
            Detection::Host
        } else {
            Detection::None
        };
        facts.name = host.clone().unwrap_or_default();
        if tracker {
            facts.tracker_peers = http_tracker_peers(&flow.down.bytes);
        }
        facts.http = Some(HttpFacts {
            request_line,
            host,
            head_segments: up.segment_of(head_end.saturating_sub(1)).unwrap_or(0),
            host_in_segment,
        });
    } else if let Some(found) = bt_handshake(up, true).or_else(|| bt_handshake(&flow.down, false)) {
        facts.detection = Detection::BtHandshake;
        facts.bt_handshake = Some(found);
    }
}

/// Segments searched for a BitTorrent handshake: aria2, for one, opens with a message stream
/// encryption exchange and may then agree on plaintext, so the handshake comes a few
/// segments in, at the start of a segment of its own.
const BT_HANDSHAKE_SEGMENTS: usize = 8;

/// Where the first `\x13BitTorrent protocol` of `stream` starts, at the start of one of its
/// first segments.
fn bt_handshake(stream: &Stream, from_client: bool) -> Option<BtHandshake> {
    stream
        .segments
        .iter()
        .take(BT_HANDSHAKE_SEGMENTS)
        .position(|r| stream.bytes[r.start..].starts_with(BT_HANDSHAKE))
        .map(|i| BtHandshake {
            from_client,
            offset: stream.segments[i].start,
            segment: i as u32 + 1,
        })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Compact IPv4 peers of an HTTP tracker response (head and bencoded body).
fn http_tracker_peers(response: &[u8]) -> Vec<SocketAddr> {
    let Some(body_start) = find(response, b"\r\n\r\n") else {
        return Vec::new();
    };
    let Some((body, _)) = bencode::parse_prefix(&response[body_start + 4..]) else {
        return Vec::new();
    };
    body.get(b"peers")
        .and_then(|p| p.bytes())
        .map(compact_peers)
        .unwrap_or_default()
}

fn compact_peers(bytes: &[u8]) -> Vec<SocketAddr> {
    bytes
        .chunks_exact(6)
        .map(|c| {
            SocketAddr::V4(SocketAddrV4::new(
                [c[0], c[1], c[2], c[3]].into(),
                u16::from_be_bytes([c[4], c[5]]),
            ))
        })
        .collect()
}

fn analyze_udp(flow: &Flow, facts: &mut FlowFacts) {
    let up: Vec<&[u8]> = flow
        .datagrams
        .iter()
        .filter(|(up, _)| *up)
        .map(|(_, d)| d.as_slice())
        .collect();
    let first_up = up.first().copied().unwrap_or_default();
    let first_any = flow
        .datagrams
        .first()
        .map(|(_, d)| d.as_slice())
        .unwrap_or_default();
    if flow.server.port() == 443 && quic::long_header(first_up).is_some() {
        facts.detection = Detection::Quic;
        let quic = analyze_quic(&up);
        if let Some(hello) = &quic.hello {
            facts.name = hello.sni.clone().unwrap_or_default();
            facts.ech = hello.ech;
        }
        facts.quic = Some(quic);
    } else if first_up.len() >= 16 && first_up[..8] == UDP_TRACKER_MAGIC.to_be_bytes() {
        facts.detection = Detection::BtTracker;
        for (is_up, d) in &flow.datagrams {
            // An announce response: action 1, transaction, interval, leechers, seeders, peers.
            if !is_up && d.len() >= 20 && d[..4] == 1u32.to_be_bytes() {
                facts.tracker_peers.extend(compact_peers(&d[20..]));
            }
        }
    } else if flow.datagrams.iter().any(|(_, d)| is_krpc(d)) {
        facts.detection = Detection::BtDht;
    } else if is_utp_syn(first_any) && flow.datagrams.iter().all(|(_, d)| is_utp(d)) {
        facts.detection = Detection::BtUtp;
    }
}

/// A DHT (KRPC, BEP 5) message: a bencoded dictionary with a `y` of q, r or e.
pub fn is_krpc(datagram: &[u8]) -> bool {
    bencode::parse_exact(datagram)
        .and_then(|v| {
            v.get(b"y")
                .and_then(|y| y.bytes())
                .map(|y| matches!(y, b"q" | b"r" | b"e"))
        })
        .unwrap_or(false)
}

/// A uTP (BEP 29) header: version 1, type 0..=4, a known first extension.
pub fn is_utp(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] & 0x0f == 1 && datagram[0] >> 4 <= 4 && datagram[1] <= 4
}

/// uTP ST_SYN, which opens a uTP connection.
pub fn is_utp_syn(datagram: &[u8]) -> bool {
    is_utp(datagram) && datagram[0] == 0x41
}

fn analyze_quic(up: &[&[u8]]) -> QuicFacts {
    let mut facts = QuicFacts {
        version: 0,
        initial_datagrams: Vec::new(),
        decrypted: false,
        hello: None,
        hello_initials: 0,
        sni_in_initial: 0,
        crypto_frames_per_initial: Vec::new(),
    };
    let mut keys = None;
    let mut crypto: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut packet_no = 0;
    // Stream offsets of the ClientHello's name, once known; filled in a second pass.
    let mut frames_by_initial: Vec<Vec<(u64, usize)>> = Vec::new();
    for datagram in up {
        let mut rest: &[u8] = datagram;
        let mut carried_initial = false;
        while let Some(header) = quic::long_header(rest) {
            if facts.version == 0 {
                facts.version = header.version;
            }
            if header.is_initial {
                carried_initial = true;
                packet_no += 1;
                if keys.is_none() {
                    keys = quic::client_initial_keys(header.version, &header.dcid);
                }
                let decrypted = keys
                    .as_ref()
                    .and_then(|k| quic::decrypt_initial(rest, &header, k));
                let mut spans = Vec::new();
                if let Some((_, frames)) = decrypted {
                    facts.decrypted = true;
                    let (frames, _) = quic::crypto_frames(&frames);
                    for (offset, data) in frames {
                        spans.push((offset, data.len()));
                        crypto.entry(offset).or_insert(data);
                    }
                }
                facts.crypto_frames_per_initial.push(spans.len());
                frames_by_initial.push(spans);
                // After this packet, is the ClientHello complete?
                if facts.hello.is_none() {
                    let stream = contiguous(&crypto);
                    if let Some(hello) = tls::parse_client_hello(&stream) {
                        facts.hello_initials = packet_no;
                        facts.hello = Some(hello);
                    }
                }
            }
            rest = &rest[header.packet_len..];
        }
        if carried_initial {
            facts.initial_datagrams.push(datagram.len());
        }
    }
    if let Some(hello) = &facts.hello
        && hello.sni.is_some()
    {
        let sni = hello.sni_offset as u64;
        facts.sni_in_initial = frames_by_initial
            .iter()
            .position(|spans| {
                spans
                    .iter()
                    .any(|&(o, len)| o <= sni && sni < o + len as u64)
            })
            .map_or(0, |i| i + 1);
    }
    facts
}

/// The bytes of a CRYPTO stream from offset 0 up to its first gap.
fn contiguous(frames: &BTreeMap<u64, Vec<u8>>) -> Vec<u8> {
    let mut stream = Vec::new();
    for (&offset, data) in frames {
        let offset = offset as usize;
        if offset > stream.len() {
            break;
        }
        let skip = stream.len() - offset;
        if skip < data.len() {
            stream.extend_from_slice(&data[skip..]);
        }
    }
    stream
}
