//! The header parser the datapath runs on every packet, on arbitrary frames. Beyond "no
//! panic": the offsets it reports are ordered and inside what the IP header claims; and
//! when etherparse (an independent parser) reads the frame as untagged Ethernet + IPv4/IPv6
//! + TCP/UDP, both agree on addresses, ports and protocol.
#![no_main]

use classifier_common::parse::{PacketMeta, Parsed, parse_headers};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut meta = PacketMeta::default();
    let Ok(Parsed::Ip) = parse_headers(data, &mut meta) else {
        return;
    };
    let (l3, l4, payload) = (
        meta.l3_offset as usize,
        meta.l4_offset as usize,
        meta.payload_offset as usize,
    );
    assert!(l3 < l4 && l4 <= payload, "offsets {l3} {l4} {payload}");
    assert!(
        payload + meta.payload_len as usize <= l3 + meta.l3_len as usize,
        "payload past the IP packet: {meta:?}"
    );
    compare_with_etherparse(data, &meta);
});

fn compare_with_etherparse(data: &[u8], meta: &PacketMeta) {
    // Only untagged frames: etherparse and the datapath number VLAN stacks differently.
    if meta.vlan_id != 0 || data.get(12..14) == Some(&[0x81, 0x00]) {
        return;
    }
    let Ok(packet) = SlicedPacket::from_ethernet(data) else {
        return;
    };
    let (src, dst) = match &packet.net {
        Some(NetSlice::Ipv4(ip)) if !ip.is_payload_fragmented() => (
            to_mapped(ip.header().source()),
            to_mapped(ip.header().destination()),
        ),
        Some(NetSlice::Ipv6(ip)) if !ip.is_payload_fragmented() => {
            (ip.header().source(), ip.header().destination())
        }
        _ => return,
    };
    let (src_port, dst_port, protocol) = match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => (tcp.source_port(), tcp.destination_port(), 6),
        Some(TransportSlice::Udp(udp)) => (udp.source_port(), udp.destination_port(), 17),
        _ => return,
    };
    assert_eq!(meta.src_addr, src, "source address");
    assert_eq!(meta.dst_addr, dst, "destination address");
    assert_eq!((meta.src_port, meta.dst_port, meta.protocol), (src_port, dst_port, protocol));
}

fn to_mapped(v4: [u8; 4]) -> [u8; 16] {
    let mut mapped = [0u8; 16];
    mapped[10] = 0xff;
    mapped[11] = 0xff;
    mapped[12..].copy_from_slice(&v4);
    mapped
}
