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

/// A TCP segment over IPv4 between the test client and server.
pub fn tcp4(way: Way, client_port: u16, server_port: u16, flags: &str, payload: &[u8]) -> Vec<u8> {
    tcp4_seq(way, client_port, server_port, flags, 1000, payload)
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
        .tcp(sport, dport, 1000, 64240);
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
    frame
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
            'A' => builder.ack(1),
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
