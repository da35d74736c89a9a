//! Ethernet frames for datapath tests, built with etherparse.

use etherparse::{PacketBuilder, VlanId};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const CLIENT_V4: [u8; 4] = [192, 0, 2, 10];
pub const SERVER_V4: [u8; 4] = [203, 0, 113, 10];
pub const CLIENT_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
pub const SERVER_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Which way a frame travels through the gateway's LAN interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// Client → server: XDP on LAN ingress.
    Up,
    /// Server → client: TC on LAN egress.
    Down,
}

/// (source address, destination address, source port, destination port) for `way`.
fn endpoints<A: Copy>(
    way: Way,
    client: A,
    server: A,
    client_port: u16,
    server_port: u16,
) -> (A, A, u16, u16) {
    match way {
        Way::Up => (client, server, client_port, server_port),
        Way::Down => (server, client, server_port, client_port),
    }
}

/// Both ends' initial sequence number in these frames: a SYN or SYN-ACK carries it, data
/// starts one after it ([`FIRST_SEQ`]), and every ACK acknowledges that much of the other
/// side, as a real stack's first segments do.
pub const ISN: u32 = 999;
/// Sequence number of the first data byte either way.
pub const FIRST_SEQ: u32 = ISN + 1;

/// The sequence number a segment with `flags` starts at in a fresh connection.
fn default_seq(flags: &str) -> u32 {
    if flags.contains('S') { ISN } else { FIRST_SEQ }
}

/// A TCP segment over IPv4 between the test client and server.
pub fn tcp4(way: Way, client_port: u16, server_port: u16, flags: &str, payload: &[u8]) -> Vec<u8> {
    tcp4_seq(
        way,
        client_port,
        server_port,
        flags,
        default_seq(flags),
        payload,
    )
}

/// [`tcp4`] with sequence number `seq`.
pub fn tcp4_seq(
    way: Way,
    client_port: u16,
    server_port: u16,
    flags: &str,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    let (src, dst, sport, dport) = endpoints(way, CLIENT_V4, SERVER_V4, client_port, server_port);
    let builder = ethernet(way)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 64240);
    with_tcp_flags(builder, flags).build(payload)
}

/// [`tcp4_seq`] with acknowledgment number `ack` (and the ACK flag if `flags` has `A`).
pub fn tcp4_seq_ack(
    way: Way,
    client_port: u16,
    server_port: u16,
    flags: &str,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = tcp4_seq(way, client_port, server_port, flags, seq, payload);
    // The acknowledgment number sits 8 bytes into the TCP header (Ethernet 14 + IPv4 20).
    frame[14 + 20 + 8..14 + 20 + 12].copy_from_slice(&ack.to_be_bytes());
    fix_tcp4_checksum(&mut frame);
    frame
}

/// Recomputes the TCP checksum of an IPv4 frame built here (after a field was changed).
pub fn fix_tcp4_checksum(frame: &mut [u8]) {
    let (ip, tcp) = frame[14..].split_at_mut(20);
    tcp[16..18].copy_from_slice(&[0, 0]);
    let mut sum = 0u32;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += word as u32;
        }
    };
    add(&ip[12..20]);
    add(&[0, 6]);
    add(&(tcp.len() as u16).to_be_bytes());
    add(tcp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    tcp[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// The client's `stream` (starting at sequence number `seq`) cut into segments of at most
/// `mss` bytes, as TCP sends it after the handshake.
pub fn tcp4_stream(
    client_port: u16,
    server_port: u16,
    seq: u32,
    stream: &[u8],
    mss: usize,
) -> Vec<Vec<u8>> {
    stream
        .chunks(mss)
        .scan(seq, |next, chunk| {
            let segment = tcp4_seq(Way::Up, client_port, server_port, "PA", *next, chunk);
            *next = next.wrapping_add(chunk.len() as u32);
            Some(segment)
        })
        .collect()
}

/// A TCP segment over IPv6.
pub fn tcp6(way: Way, client_port: u16, server_port: u16, flags: &str, payload: &[u8]) -> Vec<u8> {
    let (src, dst, sport, dport) = endpoints(way, CLIENT_V6, SERVER_V6, client_port, server_port);
    let builder = ethernet(way)
        .ipv6(src, dst, 64)
        .tcp(sport, dport, default_seq(flags), 64240);
    with_tcp_flags(builder, flags).build(payload)
}

/// A UDP datagram over IPv4.
pub fn udp4(way: Way, client_port: u16, server_port: u16, payload: &[u8]) -> Vec<u8> {
    let (src, dst, sport, dport) = endpoints(way, CLIENT_V4, SERVER_V4, client_port, server_port);
    ethernet(way)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .build(payload)
}

/// A UDP datagram over IPv6.
pub fn udp6(way: Way, client_port: u16, server_port: u16, payload: &[u8]) -> Vec<u8> {
    let (src, dst, sport, dport) = endpoints(way, CLIENT_V6, SERVER_V6, client_port, server_port);
    ethernet(way)
        .ipv6(src, dst, 64)
        .udp(sport, dport)
        .build(payload)
}

/// A UDP datagram over IPv4 in an 802.1Q-tagged frame.
pub fn udp4_vlan(vlan: u16, client_port: u16, server_port: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .single_vlan(VlanId::try_new(vlan).expect("valid VLAN id"))
        .ipv4(CLIENT_V4, SERVER_V4, 64)
        .udp(client_port, server_port);
    builder.build(payload)
}

/// A client → server TCP segment in an 802.1Q-tagged frame, its IPv4 header carrying an
/// option (router alert) and its TCP header MSS and timestamp options: every header the
/// datapath must step over to reach the payload is longer than its minimum.
pub fn tcp4_vlan_with_options(
    vlan: u16,
    client_port: u16,
    server_port: u16,
    flags: &str,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut ip =
        etherparse::Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, CLIENT_V4, SERVER_V4)
            .expect("a valid IPv4 header");
    ip.options = etherparse::Ipv4Options::try_from(&[0x94u8, 0x04, 0, 0][..])
        .expect("a 4-byte router alert option");
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .single_vlan(VlanId::try_new(vlan).expect("valid VLAN id"))
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .tcp(client_port, server_port, seq, 64240)
        .options(&[
            etherparse::TcpOptionElement::MaximumSegmentSize(1460),
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Timestamp(12345, 0),
        ])
        .expect("TCP options fit");
    with_tcp_flags(builder, flags).build(payload)
}

/// An ICMP echo request from the client.
pub fn ping4(payload: &[u8]) -> Vec<u8> {
    ethernet(Way::Up)
        .ipv4(CLIENT_V4, SERVER_V4, 64)
        .icmpv4_echo_request(7, 1)
        .build(payload)
}

/// A datagram shaped like a QUIC v1 client Initial (long header, type Initial, padded to
/// 1200 bytes); its protected payload is filler, as the datapath never decrypts.
pub fn quic_initial_like(client_port: u16) -> Vec<u8> {
    let mut datagram = vec![0u8; 1200];
    datagram[0] = 0xc3;
    datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
    datagram[5] = 8; // destination connection id length
    for (i, byte) in datagram[6..].iter_mut().enumerate() {
        *byte = (i * 7) as u8;
    }
    udp4(Way::Up, client_port, 443, &datagram)
}

/// An ARP request (not IP).
pub fn arp() -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&0x0806u16.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&CLIENT_V4);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&SERVER_V4);
    frame
}

/// The first fragment of a UDP datagram (more-fragments flag set).
pub fn udp4_first_fragment() -> Vec<u8> {
    let mut frame = udp4(Way::Up, 5000, 5001, &[0xab; 64]);
    frame[14 + 6] |= 0x20;
    fix_ipv4_header_checksum(&mut frame);
    frame
}

/// A later fragment of the datagram [`udp4_first_fragment`] starts (same identification,
/// offset 9 × 8 bytes: after the first fragment's 72 bytes), carrying `data`.
pub fn udp4_later_fragment(data: &[u8]) -> Vec<u8> {
    let first = udp4_first_fragment();
    let mut frame = first[..14 + 20].to_vec();
    frame.extend_from_slice(data);
    let total = (20 + data.len()) as u16;
    frame[14 + 2..14 + 4].copy_from_slice(&total.to_be_bytes());
    frame[14 + 6..14 + 8].copy_from_slice(&9u16.to_be_bytes()); // offset 9, no more
    fix_ipv4_header_checksum(&mut frame);
    frame
}

/// Recomputes the IPv4 header checksum of a frame built here (after a field was changed).
pub fn fix_ipv4_header_checksum(frame: &mut [u8]) {
    let ihl = ((frame[14] & 0x0f) as usize) * 4;
    frame[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let mut sum = 0u32;
    for pair in frame[14..14 + ihl].chunks(2) {
        sum += u16::from_be_bytes([pair[0], pair[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[14 + 10..14 + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Layer-3 length of a frame built here (everything after the Ethernet header and tags).
pub fn l3_len(frame: &[u8]) -> u64 {
    let tagged = u16::from_be_bytes([frame[12], frame[13]]) == 0x8100;
    (frame.len() - if tagged { 18 } else { 14 }) as u64
}

fn ethernet(way: Way) -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    match way {
        Way::Up => PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC),
        Way::Down => PacketBuilder::ethernet2(GATEWAY_MAC, CLIENT_MAC),
    }
}

fn with_tcp_flags(
    mut builder: etherparse::PacketBuilderStep<etherparse::TcpHeader>,
    flags: &str,
) -> etherparse::PacketBuilderStep<etherparse::TcpHeader> {
    for flag in flags.chars() {
        builder = match flag {
            'S' => builder.syn(),
            'A' => builder.ack(FIRST_SEQ),
            'F' => builder.fin(),
            'R' => builder.rst(),
            'P' => builder.psh(),
            other => panic!("unknown TCP flag {other}"),
        };
    }
    builder
}

/// The last step of an etherparse builder, whatever the transport.
pub trait Buildable {
    fn build(self, payload: &[u8]) -> Vec<u8>;
}

macro_rules! buildable {
    ($($header:ty),*) => {$(
        impl Buildable for etherparse::PacketBuilderStep<$header> {
            fn build(self, payload: &[u8]) -> Vec<u8> {
                let mut frame = Vec::with_capacity(self.size(payload.len()));
                self.write(&mut frame, payload).expect("frame fits");
                frame
            }
        }
    )*};
}

buildable!(
    etherparse::TcpHeader,
    etherparse::UdpHeader,
    etherparse::Icmpv4Header
);
