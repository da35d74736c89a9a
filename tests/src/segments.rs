//! TCP segments with every field an evasion test sets: sequence and acknowledgment numbers,
//! TTL, timestamps, the MD5 option, urgent data, a broken checksum; and the ways evasion
//! tools cut a client's first bytes (zapret, GoodbyeDPI, byedpi): at chosen offsets, in
//! chosen orders, with decoys among them. IPv4 or IPv6, built with etherparse.

use etherparse::{IpNumber, PacketBuilder};

use crate::frames::{
    CLIENT_MAC, CLIENT_V4, CLIENT_V6, FIRST_SEQ, GATEWAY_MAC, ISN, SERVER_V4, SERVER_V6, Way,
    fix_ipv4_header_checksum,
};

/// The TTL (hop limit) every real segment of these connections carries, as its SYN does.
pub const TTL: u8 = 64;
/// The SYN's TSval; each later client segment's is higher.
pub const SYN_TSVAL: u32 = 100_000;

/// One TCP segment between the test client and server.
#[derive(Clone, Debug)]
pub struct Segment {
    pub v6: bool,
    /// The last byte of the client's and the server's address (the test addresses have 10).
    pub client_host: u8,
    pub server_host: u8,
    pub way: Way,
    pub client_port: u16,
    pub server_port: u16,
    /// Flag letters: S, A, P, F, R.
    pub flags: &'static str,
    pub seq: u32,
    pub ack: u32,
    pub ttl: u8,
    /// (TSval, TSecr) of a timestamps option.
    pub timestamps: Option<(u32, u32)>,
    /// An MD5 signature option (RFC 2385).
    pub md5: bool,
    /// The URG flag, pointing at the payload's first byte.
    pub urgent: bool,
    /// Flip bits of the TCP checksum after building.
    pub bad_checksum: bool,
    /// Flip bits of the IPv4 header checksum after building (IPv4 only).
    pub bad_ip_checksum: bool,
    /// IPv6: a destination options header, then a hop-by-hop header (which must come first).
    pub misplaced_hop_by_hop: bool,
    pub payload: Vec<u8>,
}

/// A connection's endpoints: the client's source port, the server's port, the family,
/// and which hosts (the last byte of the test addresses; by default the test client's and
/// server's own).
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    pub v6: bool,
    pub client_port: u16,
    pub server_port: u16,
    pub client_host: u8,
    pub server_host: u8,
}

impl Conn {
    pub fn new(v6: bool, client_port: u16, server_port: u16) -> Self {
        Self {
            v6,
            client_port,
            server_port,
            client_host: if v6 { CLIENT_V6[15] } else { CLIENT_V4[3] },
            server_host: if v6 { SERVER_V6[15] } else { SERVER_V4[3] },
        }
    }

    /// The same connection between other hosts (last address bytes).
    pub fn between(mut self, client_host: u8, server_host: u8) -> Self {
        self.client_host = client_host;
        self.server_host = server_host;
        self
    }

    /// The flow key the datapath files this connection under.
    pub fn key(&self) -> classifier_common::flow::FlowKey {
        let (client, server) = addresses(self.v6, self.client_host, self.server_host);
        classifier_common::flow::FlowKey {
            client_addr: client.mapped,
            server_addr: server.mapped,
            client_port: self.client_port,
            server_port: self.server_port,
            protocol: classifier_common::flow::ip_proto::TCP,
            _pad: [0; 3],
        }
    }

    /// A UDP datagram of this connection's endpoints, either way.
    pub fn datagram(&self, way: Way, payload: &[u8]) -> Vec<u8> {
        let (client, server) = addresses(self.v6, self.client_host, self.server_host);
        let (source, destination, source_port, destination_port, source_mac, destination_mac) =
            match way {
                Way::Up => (
                    client,
                    server,
                    self.client_port,
                    self.server_port,
                    CLIENT_MAC,
                    GATEWAY_MAC,
                ),
                Way::Down => (
                    server,
                    client,
                    self.server_port,
                    self.client_port,
                    GATEWAY_MAC,
                    CLIENT_MAC,
                ),
            };
        let ethernet = PacketBuilder::ethernet2(source_mac, destination_mac);
        let udp = if self.v6 {
            ethernet
                .ipv6(source.v6, destination.v6, TTL)
                .udp(source_port, destination_port)
        } else {
            ethernet
                .ipv4(source.v4, destination.v4, TTL)
                .udp(source_port, destination_port)
        };
        let mut frame = Vec::new();
        udp.write(&mut frame, payload).expect("frame fits");
        frame
    }

    /// The flow key of this connection's endpoints as a UDP flow.
    pub fn udp_key(&self) -> classifier_common::flow::FlowKey {
        classifier_common::flow::FlowKey {
            protocol: classifier_common::flow::ip_proto::UDP,
            ..self.key()
        }
    }

    /// A server→client data segment at the server's stream offset `offset`.
    pub fn reply(&self, offset: usize, payload: &[u8]) -> Segment {
        let mut segment = self.data(0, payload);
        segment.way = Way::Down;
        segment.seq = FIRST_SEQ.wrapping_add(offset as u32);
        segment.timestamps = Some((2 + offset as u32, SYN_TSVAL));
        segment
    }

    /// A client→server data segment at stream offset `offset`, with timestamps, as a real
    /// stack sends it after the handshake.
    pub fn data(&self, offset: usize, payload: &[u8]) -> Segment {
        Segment {
            v6: self.v6,
            client_host: self.client_host,
            server_host: self.server_host,
            way: Way::Up,
            client_port: self.client_port,
            server_port: self.server_port,
            flags: "PA",
            seq: FIRST_SEQ.wrapping_add(offset as u32),
            ack: FIRST_SEQ,
            ttl: TTL,
            timestamps: Some((SYN_TSVAL + 1 + offset as u32, 1)),
            md5: false,
            urgent: false,
            bad_checksum: false,
            bad_ip_checksum: false,
            misplaced_hop_by_hop: false,
            payload: payload.to_vec(),
        }
    }

    /// SYN (with timestamps), SYN-ACK, ACK.
    pub fn handshake(&self) -> Vec<(Way, Vec<u8>)> {
        let mut syn = self.data(0, b"");
        syn.flags = "S";
        syn.seq = ISN;
        syn.ack = 0;
        syn.timestamps = Some((SYN_TSVAL, 0));
        let mut syn_ack = self.data(0, b"");
        syn_ack.way = Way::Down;
        syn_ack.flags = "SA";
        syn_ack.seq = ISN;
        syn_ack.ack = FIRST_SEQ;
        syn_ack.timestamps = Some((1, SYN_TSVAL));
        let mut ack = self.data(0, b"");
        ack.flags = "A";
        [syn, syn_ack, ack]
            .iter()
            .map(|s| (s.way, s.frame()))
            .collect()
    }

    /// The client's `stream` cut at `cuts` (offsets, ascending), one segment per piece.
    pub fn pieces(&self, stream: &[u8], cuts: &[usize]) -> Vec<Segment> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(stream.len());
        bounds
            .windows(2)
            .map(|w| self.data(w[0], &stream[w[0]..w[1]]))
            .collect()
    }

    /// The client's `stream` in segments of at most `mss` bytes.
    pub fn mss(&self, stream: &[u8], mss: usize) -> Vec<Segment> {
        let cuts: Vec<usize> = (1..stream.len().div_ceil(mss)).map(|i| i * mss).collect();
        self.pieces(stream, &cuts)
    }
}

/// A test host's address both ways, and as the datapath keys it.
#[derive(Clone, Copy)]
struct Address {
    v4: [u8; 4],
    v6: [u8; 16],
    mapped: [u8; 16],
}

/// The client's and server's addresses: the test addresses with their last byte replaced.
fn addresses(v6: bool, client_host: u8, server_host: u8) -> (Address, Address) {
    let host = |v4: [u8; 4], v6_addr: [u8; 16], last: u8| {
        let mut a4 = v4;
        a4[3] = last;
        let mut a6 = v6_addr;
        a6[15] = last;
        Address {
            v4: a4,
            v6: a6,
            mapped: if v6 {
                a6
            } else {
                classifier_common::flow::ipv4_mapped(a4)
            },
        }
    };
    (
        host(CLIENT_V4, CLIENT_V6, client_host),
        host(SERVER_V4, SERVER_V6, server_host),
    )
}

/// The frames of `segments`, client→server.
pub fn frames(segments: &[Segment]) -> Vec<(Way, Vec<u8>)> {
    segments.iter().map(|s| (s.way, s.frame())).collect()
}

impl Segment {
    /// The Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        let (source_port, destination_port) = match self.way {
            Way::Up => (self.client_port, self.server_port),
            Way::Down => (self.server_port, self.client_port),
        };
        let (source_mac, destination_mac) = match self.way {
            Way::Up => (CLIENT_MAC, GATEWAY_MAC),
            Way::Down => (GATEWAY_MAC, CLIENT_MAC),
        };
        let ethernet = PacketBuilder::ethernet2(source_mac, destination_mac);
        let (client, server) = addresses(self.v6, self.client_host, self.server_host);
        let (source, destination) = match self.way {
            Way::Up => (client, server),
            Way::Down => (server, client),
        };
        let ip = if self.v6 {
            ethernet.ipv6(source.v6, destination.v6, self.ttl)
        } else {
            ethernet.ipv4(source.v4, destination.v4, self.ttl)
        };
        let mut tcp = ip
            .tcp(source_port, destination_port, self.seq, 64240)
            .options_raw(&self.options())
            .expect("options fit");
        for flag in self.flags.chars() {
            tcp = match flag {
                'S' => tcp.syn(),
                'A' => tcp.ack(self.ack),
                'F' => tcp.fin(),
                'R' => tcp.rst(),
                'P' => tcp.psh(),
                other => panic!("unknown TCP flag {other}"),
            };
        }
        if self.urgent {
            tcp = tcp.urg(1);
        }
        let mut frame = Vec::new();
        tcp.write(&mut frame, &self.payload).expect("frame fits");
        let l3 = 14;
        let l4 = if self.v6 { l3 + 40 } else { l3 + 20 };
        if self.bad_checksum {
            frame[l4 + 16] ^= 0x5a;
            frame[l4 + 17] ^= 0xa5;
        }
        if self.bad_ip_checksum && !self.v6 {
            fix_ipv4_header_checksum(&mut frame);
            frame[l3 + 10] ^= 0x33;
        }
        if self.misplaced_hop_by_hop && self.v6 {
            frame = with_misplaced_hop_by_hop(&frame);
        }
        frame
    }

    /// The TCP options: NOP NOP timestamps, then NOP NOP MD5 (each a multiple of 4 bytes).
    fn options(&self) -> Vec<u8> {
        let mut options = Vec::new();
        if let Some((value, echo)) = self.timestamps {
            options.extend_from_slice(&[1, 1, 8, 10]);
            options.extend_from_slice(&value.to_be_bytes());
            options.extend_from_slice(&echo.to_be_bytes());
        }
        if self.md5 {
            options.extend_from_slice(&[1, 1, 19, 18]);
            options.extend_from_slice(&[0x42; 16]);
        }
        options
    }
}

/// An IPv6 frame with a destination-options header and then a hop-by-hop header put in
/// front of its TCP header: RFC 8200 allows hop-by-hop only first, receivers drop this.
fn with_misplaced_hop_by_hop(frame: &[u8]) -> Vec<u8> {
    let (head, tcp) = frame.split_at(14 + 40);
    let mut out = head.to_vec();
    out[14 + 6] = 60; // destination options
    out.extend_from_slice(&[0, 0, 1, 4, 0, 0, 0, 0]); // next: hop-by-hop (0), PadN
    out.extend_from_slice(&[IpNumber::TCP.0, 0, 1, 4, 0, 0, 0, 0]); // next: TCP, PadN
    out.extend_from_slice(tcp);
    let payload_len = (out.len() - 14 - 40) as u16;
    out[14 + 4..14 + 6].copy_from_slice(&payload_len.to_be_bytes());
    out
}

/// `segment`'s IP datagram cut into fragments of at most `size` data bytes (a multiple of
/// 8), IPv4 or IPv6 (a fragment header), with identification `id`.
pub fn fragments(segment: &Segment, size: usize, id: u32) -> Vec<Vec<u8>> {
    assert!(size.is_multiple_of(8));
    let frame = segment.frame();
    let l3 = 14;
    let header_len = if segment.v6 { 40 } else { 20 };
    let data = &frame[l3 + header_len..];
    let pieces: Vec<&[u8]> = data.chunks(size).collect();
    pieces
        .iter()
        .enumerate()
        .map(|(index, piece)| {
            let offset = (index * size / 8) as u16;
            let more = index + 1 < pieces.len();
            let mut out = frame[..l3 + header_len].to_vec();
            if segment.v6 {
                out[l3 + 6] = 44; // fragment header
                let offset_word = (offset << 3) | more as u16;
                out.extend_from_slice(&[IpNumber::TCP.0, 0]);
                out.extend_from_slice(&offset_word.to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(piece);
                let payload_len = (out.len() - l3 - 40) as u16;
                out[l3 + 4..l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
            } else {
                out.extend_from_slice(piece);
                let total = (out.len() - l3) as u16;
                out[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
                out[l3 + 4..l3 + 6].copy_from_slice(&(id as u16).to_be_bytes());
                let flags_offset = if more { 0x2000 } else { 0 } | offset;
                out[l3 + 6..l3 + 8].copy_from_slice(&flags_offset.to_be_bytes());
                fix_ipv4_header_checksum(&mut out);
            }
            out
        })
        .collect()
}
