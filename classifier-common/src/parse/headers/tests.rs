use std::{vec, vec::Vec};

use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder, VlanId};

use super::*;
use crate::flow::tcp_flags;

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const CLIENT_V4: [u8; 4] = [192, 0, 2, 10];
const SERVER_V4: [u8; 4] = [203, 0, 113, 5];
const CLIENT_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const SERVER_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05,
];

fn tcp_v4(payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv4(CLIENT_V4, SERVER_V4, 64)
        .tcp(40000, 443, 1, 64240)
        .syn();
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).unwrap();
    frame
}

fn meta_of(frame: &[u8]) -> PacketMeta {
    let mut meta = PacketMeta::default();
    match parse_headers(frame, &mut meta) {
        Ok(Parsed::Ip) => meta,
        other => panic!("expected an IP packet, got {other:?}"),
    }
}

/// The parse result alone, for frames that are not expected to describe a flow.
fn kind_of(frame: &[u8]) -> Result<Parsed, ParseError> {
    parse_headers(frame, &mut PacketMeta::default())
}

#[test]
fn ipv4_tcp_gives_five_tuple_and_payload() {
    let frame = tcp_v4(b"hello");
    let meta = meta_of(&frame);
    assert_eq!(meta.ip_version, 4);
    assert_eq!(meta.protocol, ip_proto::TCP);
    assert_eq!(meta.src_addr, ipv4_mapped(CLIENT_V4));
    assert_eq!(meta.dst_addr, ipv4_mapped(SERVER_V4));
    assert_eq!((meta.src_port, meta.dst_port), (40000, 443));
    assert_eq!(meta.tcp_flags, tcp_flags::SYN);
    assert_eq!(meta.tcp_seq, 1);
    assert_eq!(meta.l3_offset, 14);
    assert_eq!(meta.l4_offset, 34);
    assert_eq!(meta.payload_offset, 54);
    assert_eq!(meta.payload_len, 5);
    assert_eq!(meta.l3_len, 20 + 20 + 5);
    assert_eq!(&frame[meta.payload_offset as usize..], b"hello");
}

#[test]
fn tcp_options_move_the_payload() {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv4(CLIENT_V4, SERVER_V4, 64)
        .tcp(40000, 80, 1, 64240)
        .options(&[
            etherparse::TcpOptionElement::MaximumSegmentSize(1460),
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::WindowScale(7),
            etherparse::TcpOptionElement::Timestamp(1, 2),
        ])
        .unwrap();
    let mut frame = Vec::new();
    builder.write(&mut frame, b"GET / HTTP/1.1\r\n").unwrap();
    let meta = meta_of(&frame);
    assert_eq!(
        &frame[meta.payload_offset as usize..],
        b"GET / HTTP/1.1\r\n"
    );
    assert_eq!(meta.payload_len, 16);
}

#[test]
fn ipv4_options_are_skipped() {
    let mut header = Ipv4Header::new(0, 64, IpNumber::UDP, CLIENT_V4, SERVER_V4).unwrap();
    // Two router-alert options' worth of bytes: IHL 7.
    header.options = [148u8, 4, 0, 0, 148, 4, 0, 0][..].try_into().unwrap();
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ip(etherparse::IpHeaders::Ipv4(header, Default::default()))
        .udp(5353, 53);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"query").unwrap();
    let meta = meta_of(&frame);
    assert_eq!(meta.l4_offset, 14 + 28);
    assert_eq!((meta.src_port, meta.dst_port), (5353, 53));
    assert_eq!(&frame[meta.payload_offset as usize..], b"query");
}

#[test]
fn ipv6_udp() {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv6(CLIENT_V6, SERVER_V6, 64)
        .udp(50000, 443);
    let mut frame = Vec::new();
    builder.write(&mut frame, &[0xc3; 30]).unwrap();
    let meta = meta_of(&frame);
    assert_eq!(meta.ip_version, 6);
    assert_eq!(meta.protocol, ip_proto::UDP);
    assert_eq!(meta.src_addr, CLIENT_V6);
    assert_eq!(meta.dst_addr, SERVER_V6);
    assert_eq!(meta.l3_len, 40 + 8 + 30);
    assert_eq!(meta.payload_len, 30);
}

#[test]
fn ipv6_extension_headers_are_walked() {
    // Hop-by-hop (8 bytes) then destination options (16 bytes) then TCP.
    let mut frame = Vec::new();
    frame.extend_from_slice(&GATEWAY_MAC);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&0x86ddu16.to_be_bytes());
    let tcp = {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&1234u16.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = tcp_flags::ACK;
        t
    };
    let payload_len = 8 + 16 + tcp.len() + 3;
    let header = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: payload_len as u16,
        next_header: IpNumber(0),
        hop_limit: 64,
        source: CLIENT_V6,
        destination: SERVER_V6,
    };
    header.write(&mut frame).unwrap();
    frame.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop → dest opts
    frame.extend_from_slice(&[6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // → TCP
    frame.extend_from_slice(&tcp);
    frame.extend_from_slice(b"abc");
    let meta = meta_of(&frame);
    assert_eq!(meta.protocol, ip_proto::TCP);
    assert_eq!(meta.l4_offset, 14 + 40 + 24);
    assert_eq!((meta.src_port, meta.dst_port), (1234, 80));
    assert_eq!(meta.payload_len, 3);
}

#[test]
fn single_and_double_vlan_tags() {
    let single = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .single_vlan(VlanId::try_new(20).unwrap())
        .ipv4(CLIENT_V4, SERVER_V4, 64)
        .udp(1, 2);
    let mut frame = Vec::new();
    single.write(&mut frame, b"x").unwrap();
    let meta = meta_of(&frame);
    assert_eq!((meta.vlan_id, meta.l3_offset), (20, 18));

    let double = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .double_vlan(VlanId::try_new(100).unwrap(), VlanId::try_new(30).unwrap())
        .ipv4(CLIENT_V4, SERVER_V4, 64)
        .udp(1, 2);
    let mut frame = Vec::new();
    double.write(&mut frame, b"x").unwrap();
    let meta = meta_of(&frame);
    assert_eq!((meta.vlan_id, meta.l3_offset), (30, 22));
}

#[test]
fn ethernet_padding_does_not_count_as_payload() {
    let mut frame = tcp_v4(b"");
    frame.resize(60, 0); // minimum Ethernet frame, zero-padded by the sender
    let meta = meta_of(&frame);
    assert_eq!(meta.payload_len, 0);
    assert_eq!(meta.l3_len, 40);
}

#[test]
fn arp_is_not_ip() {
    let mut frame = [0u8; 42];
    frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(kind_of(&frame[..]), Ok(Parsed::NotIp));
}

#[test]
fn first_fragments_name_their_flow_and_later_ones_their_datagram() {
    let mut first = tcp_v4(b"0123456789");
    first[14 + 4..14 + 6].copy_from_slice(&0x1234u16.to_be_bytes());
    first[14 + 6] |= 0x20; // more fragments, offset 0
    let mut meta = PacketMeta::default();
    assert_eq!(parse_headers(&first[..], &mut meta), Ok(Parsed::Ip));
    assert_eq!(meta.fragment, fragment::FIRST);
    assert_eq!((meta.src_port, meta.dst_port), (40000, 443));
    assert_eq!(meta.frag_id, 0x1234);
    assert_eq!(meta.payload_len, 10);

    let mut later = tcp_v4(b"0123456789");
    later[14 + 4..14 + 6].copy_from_slice(&0x1234u16.to_be_bytes());
    later[14 + 7] = 0x10; // fragment offset 16 × 8 bytes
    let mut meta = PacketMeta::default();
    assert_eq!(parse_headers(&later[..], &mut meta), Ok(Parsed::Fragment));
    assert_eq!(meta.fragment, fragment::LATER);
    assert_eq!(meta.frag_id, 0x1234);
    assert_eq!(meta.src_addr, ipv4_mapped(CLIENT_V4));
    assert_eq!(meta.protocol, ip_proto::TCP);

    let mut v6 = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv6(CLIENT_V6, SERVER_V6, 64)
        .udp(1, 2)
        .write(&mut v6, b"abcdefgh")
        .unwrap();
    // A fragment header (offset 16, identification 7) between the IPv6 and UDP headers.
    v6[14 + 6] = IPV6_EXT_FRAGMENT;
    let mut fragment_header = vec![ip_proto::UDP, 0, 0, 0x80, 0, 0, 0, 7];
    let mut later6 = v6[..54].to_vec();
    later6.append(&mut fragment_header);
    later6.extend_from_slice(&v6[54..]);
    later6[18..20].copy_from_slice(&(8u16 + 16).to_be_bytes());
    let mut meta = PacketMeta::default();
    assert_eq!(parse_headers(&later6[..], &mut meta), Ok(Parsed::Fragment));
    assert_eq!((meta.fragment, meta.frag_id), (fragment::LATER, 7));

    let mut first6 = later6.clone();
    first6[54 + 2..54 + 4].copy_from_slice(&1u16.to_be_bytes()); // offset 0, M set
    let mut meta = PacketMeta::default();
    assert_eq!(parse_headers(&first6[..], &mut meta), Ok(Parsed::Ip));
    assert_eq!(
        (meta.fragment, meta.protocol),
        (fragment::FIRST, ip_proto::UDP)
    );
    assert_eq!((meta.src_port, meta.dst_port, meta.payload_len), (1, 2, 8));
}

#[test]
fn a_tiny_first_fragment_still_names_its_flow_by_ports() {
    // RFC 1858: only 8 bytes of the TCP header in the first fragment.
    let mut frame = tcp_v4(b"");
    frame.truncate(14 + 20 + 8);
    frame[14 + 2..14 + 4].copy_from_slice(&28u16.to_be_bytes());
    frame[14 + 6] |= 0x20;
    let mut meta = PacketMeta::default();
    assert_eq!(parse_headers(&frame[..], &mut meta), Ok(Parsed::Ip));
    assert_eq!(meta.fragment, fragment::FIRST);
    assert_eq!((meta.src_port, meta.dst_port), (40000, 443));
    assert_eq!(meta.payload_len, 0);
    // The same bytes as a whole datagram are truncated, not a flow.
    let mut whole = frame.clone();
    whole[14 + 6] &= !0x20;
    assert!(parse_headers(&whole[..], &mut PacketMeta::default()).is_err());
}

#[test]
fn ttl_ack_and_unusual_ip_headers_are_reported() {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv4(CLIENT_V4, SERVER_V4, 3)
        .tcp(40000, 443, 1, 64240)
        .ack(0xdead_beef);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"x").unwrap();
    let meta = meta_of(&frame);
    assert_eq!((meta.ttl, meta.tcp_ack, meta.ip_flags), (3, 0xdead_beef, 0));

    // IPv6 with a destination-options header and then a hop-by-hop header: misplaced.
    let mut v6 = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv6(CLIENT_V6, SERVER_V6, 1)
        .udp(1, 2)
        .write(&mut v6, b"abcdefgh")
        .unwrap();
    let udp = v6.split_off(54);
    v6[14 + 6] = IPV6_EXT_DEST_OPTS;
    v6.extend_from_slice(&[IPV6_EXT_HOP_BY_HOP, 0, 1, 4, 0, 0, 0, 0]);
    v6.extend_from_slice(&[ip_proto::UDP, 0, 1, 4, 0, 0, 0, 0]);
    v6.extend_from_slice(&udp);
    let len = (v6.len() - 54) as u16;
    v6[18..20].copy_from_slice(&len.to_be_bytes());
    let meta = meta_of(&v6);
    assert_eq!(meta.ttl, 1);
    assert_eq!(
        meta.ip_flags,
        ip_flags::V6_EXTENSIONS | ip_flags::V6_HOP_BY_HOP_MISPLACED
    );
}

#[test]
fn inconsistent_headers_are_invalid() {
    let mut short_ihl = tcp_v4(b"");
    short_ihl[14] = 0x44; // IHL 4 words = 16 bytes
    assert_eq!(kind_of(&short_ihl[..]), Err(ParseError::Invalid));

    let mut wrong_version = tcp_v4(b"");
    wrong_version[14] = 0x65;
    assert_eq!(kind_of(&wrong_version[..]), Err(ParseError::Invalid));

    let mut short_tcp = tcp_v4(b"");
    short_tcp[14 + 20 + 12] = 4 << 4; // data offset 16 bytes
    assert_eq!(kind_of(&short_tcp[..]), Err(ParseError::Invalid));

    let mut total_below_header = tcp_v4(b"");
    total_below_header[16..18].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(kind_of(&total_below_header[..]), Err(ParseError::Invalid));
}

#[test]
fn every_truncation_is_an_error_never_a_panic() {
    let frames = [tcp_v4(b"payload"), {
        let mut v6 = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
            .single_vlan(VlanId::try_new(7).unwrap())
            .ipv6(CLIENT_V6, SERVER_V6, 64)
            .tcp(1, 2, 3, 4)
            .write(&mut v6, b"")
            .unwrap();
        v6
    }];
    for frame in frames {
        let header_end = meta_of(&frame).payload_offset as usize;
        for len in 0..header_end {
            assert_eq!(
                kind_of(&frame[..len]),
                Err(ParseError::Truncated),
                "frame cut at {len} of {header_end} header bytes"
            );
        }
    }
}

/// Found by fuzzing (fuzz/fuzz_targets/packet_headers.rs): IPv4 with IPsec AH in transport
/// mode was keyed as protocol 51 without ports; the TCP header after AH is the flow's.
#[test]
fn ipv4_ipsec_ah_is_walked_to_the_transport_header() {
    let plain = tcp_v4(b"hello");
    let (ip_start, tcp_start) = (14, 34);
    // AH: next header TCP, length 4 (= (4 + 2) * 4 = 24 bytes), reserved, SPI, sequence, ICV.
    let mut ah = vec![6u8, 4, 0, 0];
    ah.extend_from_slice(&[0x11; 20]);
    let mut frame = plain[..tcp_start].to_vec();
    frame.extend_from_slice(&ah);
    frame.extend_from_slice(&plain[tcp_start..]);
    frame[ip_start + 9] = 51;
    let total = u16::from_be_bytes([frame[ip_start + 2], frame[ip_start + 3]]) + ah.len() as u16;
    frame[ip_start + 2..ip_start + 4].copy_from_slice(&total.to_be_bytes());
    let meta = meta_of(&frame);
    assert_eq!(meta.protocol, ip_proto::TCP);
    assert_eq!((meta.src_port, meta.dst_port), (40000, 443));
    assert_eq!(meta.l4_offset as usize, tcp_start + ah.len());
    assert_eq!(meta.payload_len, 5);
    assert_eq!(&frame[meta.payload_offset as usize..], b"hello");
    // An AH longer than the packet is refused, not read past.
    frame[tcp_start + 1] = 200;
    assert_eq!(kind_of(&frame), Err(ParseError::Invalid));
}

/// Found by fuzzing (fuzz/fuzz_targets/packet_headers.rs): an IPv6 payload length near
/// 65,535 wrapped the u16 layer-3 length; it is capped now, and the payload stays inside it.
#[test]
fn an_ipv6_length_that_does_not_fit_is_capped_not_wrapped() {
    let builder = PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv6(CLIENT_V6, SERVER_V6, 64)
        .udp(40000, 443);
    let mut bytes = Vec::new();
    builder.write(&mut bytes, b"x").unwrap();
    bytes[14 + 4..14 + 6].copy_from_slice(&u16::MAX.to_be_bytes());
    let meta = meta_of(&bytes);
    assert_eq!(meta.l3_len, u16::MAX);
    assert!(
        meta.payload_offset as usize + meta.payload_len as usize
            <= meta.l3_offset as usize + meta.l3_len as usize
    );
}
