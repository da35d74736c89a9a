//! BitTorrent signatures in a flow's first payload.

use super::PacketBytes;

/// `\x13BitTorrent protocol`: the peer-wire handshake (BEP 3).
const HANDSHAKE: &[u8; 20] = b"\x13BitTorrent protocol";
/// BEP 15 connect request: protocol id 0x41727101980, action 0 (connect).
const UDP_TRACKER_CONNECT: [u8; 12] = [0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0];
const UDP_TRACKER_CONNECT_LEN: usize = 16;
/// uTP (BEP 29): type ST_SYN (4) in the high nibble, version 1 in the low one.
const UTP_SYN: u8 = 0x41;
const UTP_HEADER_LEN: usize = 20;
/// KRPC messages (BEP 5) are bencoded dictionaries whose keys come sorted: a query opens
/// with its arguments (`a`), a response with `r`, both holding the node `id` first...
const DHT_QUERY: &[u8; 12] = b"d1:ad2:id20:";
const DHT_RESPONSE: &[u8; 12] = b"d1:rd2:id20:";
/// ...unless the response carries the requester's address (`ip`, BEP 42), sorted first...
const DHT_RESPONSE_WITH_IP: &[u8; 5] = b"d2:ip";
/// ...and an error opens with its list `e`.
const DHT_ERROR: &[u8; 6] = b"d1:eli";

/// What a payload looks like, BitTorrent-wise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BtSignature {
    Handshake,
    Dht,
    Utp,
    UdpTrackerConnect,
}

/// A TCP payload of `len` bytes at `offset`: the peer-wire handshake?
#[inline(always)]
pub fn tcp_signature<P: PacketBytes + ?Sized>(
    p: &P,
    offset: usize,
    len: usize,
) -> Option<BtSignature> {
    (len >= HANDSHAKE.len() && p.read::<20>(offset) == Some(*HANDSHAKE))
        .then_some(BtSignature::Handshake)
}

/// Bytes of the peer-wire handshake's fixed start.
pub const HANDSHAKE_PREFIX_LEN: usize = 20;

/// Whether the first `len` bytes (fewer than [`HANDSHAKE_PREFIX_LEN`]) at offset 0 are the
/// start of the peer-wire handshake: a handshake cut short by the segment it came in.
#[inline(always)]
pub fn handshake_prefix_matches<P: PacketBytes + ?Sized>(p: &P, len: usize) -> bool {
    let mut matches = true;
    for (i, expected) in HANDSHAKE.iter().enumerate() {
        if i < len {
            matches &= p.read::<1>(i) == Some([*expected]);
        }
    }
    matches
}

/// A UDP payload of `len` bytes at `offset`: DHT, uTP or a UDP tracker?
#[inline(always)]
pub fn udp_signature<P: PacketBytes + ?Sized>(
    p: &P,
    offset: usize,
    len: usize,
) -> Option<BtSignature> {
    if len == UDP_TRACKER_CONNECT_LEN && p.read::<12>(offset) == Some(UDP_TRACKER_CONNECT) {
        return Some(BtSignature::UdpTrackerConnect);
    }
    if is_dht(p, offset, len) {
        return Some(BtSignature::Dht);
    }
    if is_utp_syn(p, offset, len) {
        return Some(BtSignature::Utp);
    }
    None
}

/// A bencoded KRPC dictionary: a known opening and the closing `e`.
#[inline(always)]
fn is_dht<P: PacketBytes + ?Sized>(p: &P, offset: usize, len: usize) -> bool {
    if len < 12 || p.read::<2>(offset + len - 2).map(|b| b[1]) != Some(b'e') {
        return false;
    }
    let Some(start) = p.read::<12>(offset) else {
        return false;
    };
    start == *DHT_QUERY
        || start == *DHT_RESPONSE
        || start[..5] == *DHT_RESPONSE_WITH_IP
        || start[..6] == *DHT_ERROR
}

/// The SYN that opens a uTP connection: type and version, a known extension, and exactly a
/// header (plus extension headers) with no payload. Other uTP packets are left to the peer
/// cache: their header alone is too weak a signature.
#[inline(always)]
fn is_utp_syn<P: PacketBytes + ?Sized>(p: &P, offset: usize, len: usize) -> bool {
    if len < UTP_HEADER_LEN {
        return false;
    }
    let Some([kind, extension]) = p.read::<2>(offset) else {
        return false;
    };
    kind == UTP_SYN
        && match extension {
            0 => len == UTP_HEADER_LEN,
            // selective ACK (1) or extension bits (2): a length-prefixed extension follows.
            1 | 2 => len > UTP_HEADER_LEN && len <= UTP_HEADER_LEN + 2 + 32,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    #[test]
    fn handshake() {
        let mut hs = HANDSHAKE.to_vec();
        hs.extend_from_slice(&[0; 48]);
        assert_eq!(
            tcp_signature(&hs[..], 0, hs.len()),
            Some(BtSignature::Handshake)
        );
        assert_eq!(tcp_signature(&hs[..19], 0, 19), None);
        assert_eq!(tcp_signature(&b"\x13BitTorrent protocoX"[..], 0, 20), None);
    }

    #[test]
    fn dht_query_response_error() {
        let query = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        let response = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re";
        let with_ip =
            b"d2:ip6:\xc6\x33\x64\x02\x1a\xe11:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re";
        let error = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee";
        for message in [&query[..], response, with_ip, error] {
            assert_eq!(
                udp_signature(message, 0, message.len()),
                Some(BtSignature::Dht),
                "{}",
                message.escape_ascii()
            );
        }
        let truncated = &query[..query.len() - 1];
        assert_eq!(udp_signature(truncated, 0, truncated.len()), None);
        assert_eq!(
            udp_signature(&b"d1:xd2:id20:abcdefghij0123456789ee"[..], 0, 34),
            None
        );
    }

    #[test]
    fn utp_syn_only() {
        let mut syn = [0u8; 20];
        syn[0] = 0x41;
        assert_eq!(udp_signature(&syn[..], 0, 20), Some(BtSignature::Utp));
        let mut data = syn;
        data[0] = 0x01; // ST_DATA
        assert_eq!(udp_signature(&data[..], 0, 20), None);
        let mut with_ext: Vec<u8> = syn.to_vec();
        with_ext[1] = 2;
        with_ext.extend_from_slice(&[0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            udp_signature(&with_ext[..], 0, with_ext.len()),
            Some(BtSignature::Utp)
        );
        assert_eq!(
            udp_signature(&[0x41u8; 21][..], 0, 21),
            None,
            "bogus extension byte"
        );
    }

    #[test]
    fn udp_tracker_connect() {
        let mut connect = UDP_TRACKER_CONNECT.to_vec();
        connect.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            udp_signature(&connect[..], 0, 16),
            Some(BtSignature::UdpTrackerConnect)
        );
        connect.push(0);
        assert_eq!(udp_signature(&connect[..], 0, 17), None);
    }

    #[test]
    fn quic_and_dns_are_not_bittorrent() {
        let mut quic = [0u8; 1200];
        quic[0] = 0xc3;
        quic[4] = 1;
        assert_eq!(udp_signature(&quic[..], 0, 1200), None);
        let dns = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01";
        assert_eq!(udp_signature(&dns[..], 0, dns.len()), None);
    }
}
