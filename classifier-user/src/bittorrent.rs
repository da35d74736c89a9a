//! BitTorrent tracker replies, read for the peers they list (BEP 3 and BEP 23 for HTTP
//! trackers, BEP 7 for IPv6 peers, BEP 15 for UDP trackers). The datapath hands the daemon
//! a tracker flow's first reply packets; the peers found go into the peer cache, so the
//! client's flows to them are BitTorrent from their first packet, encrypted or not.
//!
//! Only the compact forms are read (what trackers send unless asked otherwise): a peer is
//! 6 bytes (IPv4 address, port) or 18 bytes (IPv6 address, port), network byte order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Most peers taken from one reply: a tracker lists 50 by default (BEP 3 `numwant`).
const MAX_PEERS: usize = 200;

/// The peers a tracker reply lists. `udp` says which tracker protocol the flow speaks;
/// `ipv6_tracker` whether the UDP tracker was reached over IPv6 (its peers are then
/// 18-byte entries, BEP 15). Anything unreadable gives no peers.
pub fn tracker_reply_peers(reply: &[u8], udp: bool, ipv6_tracker: bool) -> Vec<SocketAddr> {
    if udp {
        udp_announce_peers(reply, ipv6_tracker)
    } else {
        http_announce_peers(reply)
    }
}

/// Peers of a BEP 15 announce response: action 1, transaction id, interval, leechers,
/// seeders, then the peers.
fn udp_announce_peers(reply: &[u8], ipv6: bool) -> Vec<SocketAddr> {
    const ANNOUNCE: u32 = 1;
    const HEADER: usize = 20;
    let Some(action) = reply.get(..4) else {
        return Vec::new();
    };
    if u32::from_be_bytes([action[0], action[1], action[2], action[3]]) != ANNOUNCE {
        return Vec::new();
    }
    let peers = reply.get(HEADER..).unwrap_or_default();
    if ipv6 {
        compact_peers_v6(peers)
    } else {
        compact_peers_v4(peers)
    }
}

/// Peers of an HTTP tracker's bencoded reply body: the `peers` (IPv4) and `peers6` (IPv6)
/// byte strings. The body may be cut short by the packet; what is whole is read.
fn http_announce_peers(reply: &[u8]) -> Vec<SocketAddr> {
    let body = match find(reply, b"\r\n\r\n") {
        Some(end_of_headers) => &reply[end_of_headers + 4..],
        None => reply, // the body alone, when the headers came in an earlier segment
    };
    let mut peers = byte_string_after(body, b"5:peers")
        .map(compact_peers_v4)
        .unwrap_or_default();
    if let Some(v6) = byte_string_after(body, b"6:peers6") {
        peers.extend(compact_peers_v6(v6));
    }
    peers
}

/// The bencoded byte string (`<length>:<bytes>`) right after `key`; a string cut short
/// by the end of `data` yields its whole part.
fn byte_string_after<'a>(data: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut start = 0;
    // `5:peers` is also a prefix of `6:peers6`'s text `peers6`: look for the key followed by
    // a length digit, which a longer key would not have.
    while let Some(found) = find(&data[start..], key) {
        let value = start + found + key.len();
        if let Some(bytes) = length_prefixed(&data[value..]) {
            return Some(bytes);
        }
        start = value;
    }
    None
}

/// `<digits>:<bytes>` → the bytes (as many of them as there are).
fn length_prefixed(data: &[u8]) -> Option<&[u8]> {
    let colon = data.iter().take(8).position(|b| *b == b':')?;
    let digits = std::str::from_utf8(&data[..colon]).ok()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: usize = digits.parse().ok()?;
    let bytes = &data[colon + 1..];
    Some(&bytes[..len.min(bytes.len())])
}

fn compact_peers_v4(bytes: &[u8]) -> Vec<SocketAddr> {
    bytes
        .chunks_exact(6)
        .take(MAX_PEERS)
        .map(|p| {
            let ip = Ipv4Addr::new(p[0], p[1], p[2], p[3]);
            SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([p[4], p[5]]))
        })
        .filter(is_usable)
        .collect()
}

fn compact_peers_v6(bytes: &[u8]) -> Vec<SocketAddr> {
    bytes
        .chunks_exact(18)
        .take(MAX_PEERS)
        .map(|p| {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&p[..16]);
            let port = u16::from_be_bytes([p[16], p[17]]);
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port)
        })
        .filter(is_usable)
        .collect()
}

/// Port 0 and unspecified addresses are padding or junk, not peers.
fn is_usable(peer: &SocketAddr) -> bool {
    peer.port() != 0 && !peer.ip().is_unspecified()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn http_reply_with_compact_ipv4_and_ipv6_peers() {
        let mut body = b"d8:intervali1800e5:peers12:".to_vec();
        body.extend_from_slice(&[203, 0, 113, 10, 0x1a, 0xe1, 198, 51, 100, 7, 0xc8, 0xd5]);
        body.extend_from_slice(b"6:peers618:");
        body.extend_from_slice(&"2001:db8:3::10".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&6881u16.to_be_bytes());
        body.push(b'e');
        let mut reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        reply.extend_from_slice(&body);
        assert_eq!(
            tracker_reply_peers(&reply, false, false),
            vec![
                peer("203.0.113.10:6881"),
                peer("198.51.100.7:51413"),
                peer("[2001:db8:3::10]:6881"),
            ]
        );
    }

    #[test]
    fn a_body_cut_short_gives_its_whole_peers() {
        let mut body = b"d5:peers12:".to_vec();
        body.extend_from_slice(&[203, 0, 113, 10, 0x1a, 0xe1, 198, 51]);
        assert_eq!(
            tracker_reply_peers(&body, false, false),
            vec![peer("203.0.113.10:6881")]
        );
    }

    #[test]
    fn udp_announce_response() {
        let mut reply = Vec::new();
        for word in [1u32, 0xdead_beef, 1800, 0, 1] {
            reply.extend_from_slice(&word.to_be_bytes());
        }
        reply.extend_from_slice(&[203, 0, 113, 10, 0x1a, 0xe1]);
        assert_eq!(
            tracker_reply_peers(&reply, true, false),
            vec![peer("203.0.113.10:6881")]
        );
        // A connect response (action 0) lists nothing.
        reply[3] = 0;
        assert!(tracker_reply_peers(&reply, true, false).is_empty());
    }

    #[test]
    fn junk_and_failures_give_no_peers() {
        for reply in [
            &b""[..],
            b"HTTP/1.1 404 Not Found\r\n\r\n",
            b"d14:failure reason12:unregisterede",
            b"d5:peersld2:ip12:203.0.113.104:porti6881eeee", // non-compact: not read
            b"5:peers99999999999999999999:x",
        ] {
            assert!(
                tracker_reply_peers(reply, false, false).is_empty(),
                "{reply:?}"
            );
        }
    }
}
