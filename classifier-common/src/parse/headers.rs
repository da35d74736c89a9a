//! Ethernet (+ up to two VLAN tags), IPv4 (with options), IPv6 (with extension headers),
//! TCP (with options) and UDP: where the flow's 5-tuple and payload are.

use super::PacketBytes;
use crate::flow::{ip_proto, ipv4_mapped};

const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Q-in-Q at most; a third tag is not something a gateway's LAN port carries.
const MAX_VLAN_TAGS: usize = 2;

const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
/// Enough for any sane chain (hop-by-hop, routing, destination options, AH); a longer chain
/// is reported as malformed rather than walked further.
const MAX_IPV6_EXT_HEADERS: usize = 6;
const IPV6_EXT_HOP_BY_HOP: u8 = 0;
const IPV6_EXT_ROUTING: u8 = 43;
const IPV6_EXT_FRAGMENT: u8 = 44;
const IPV6_EXT_AUTH: u8 = 51;
const IPV6_EXT_DEST_OPTS: u8 = 60;

const TCP_MIN_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;

/// What [`parse_headers`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// An IP packet with a usable 5-tuple, described in the [`PacketMeta`] passed in. The
    /// first fragment of a fragmented datagram is one too (`meta.fragment` says so): its
    /// transport header is there.
    Ip,
    /// An Ethernet frame that carries neither IPv4 nor IPv6.
    NotIp,
    /// A later IPv4 or IPv6 fragment: no transport header to key a flow by. The addresses,
    /// protocol and `frag_id` are filled in, so the fragment can be matched to the flow
    /// its first fragment named.
    Fragment,
}

/// Values of [`PacketMeta::fragment`].
pub mod fragment {
    /// A whole datagram.
    pub const NONE: u8 = 0;
    /// The first fragment (offset 0, more to come): ports are known, the payload is cut.
    pub const FIRST: u8 = 1;
    /// A later fragment: no transport header.
    pub const LATER: u8 = 2;
}

/// Bits of [`PacketMeta::ip_flags`]: how the IP header departs from the ordinary.
pub mod ip_flags {
    /// IPv4 header with options.
    pub const V4_OPTIONS: u8 = 1 << 0;
    /// An IPv6 hop-by-hop options header that is not the first extension header, or a
    /// second one: RFC 8200 §4.1 allows one, first; receivers discard the packet.
    pub const V6_HOP_BY_HOP_MISPLACED: u8 = 1 << 1;
    /// IPv6 extension headers other than a fragment header.
    pub const V6_EXTENSIONS: u8 = 1 << 2;
}

/// Why a packet could not be parsed. The datapath passes such packets and counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A header runs past the end of the packet.
    Truncated,
    /// A header field is out of its valid range (IP version, header length, ...).
    Invalid,
}

/// Where an IP packet's parts are and what identifies its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PacketMeta {
    /// Innermost 802.1Q VLAN id, 0 when untagged.
    pub vlan_id: u16,
    /// 4 or 6.
    pub ip_version: u8,
    /// Transport protocol (IP protocol number after any IPv6 extension headers).
    pub protocol: u8,
    /// Source address, IPv4-mapped for IPv4.
    pub src_addr: [u8; 16],
    /// Destination address, IPv4-mapped for IPv4.
    pub dst_addr: [u8; 16],
    /// Source port (0 without ports).
    pub src_port: u16,
    /// Destination port (0 without ports).
    pub dst_port: u16,
    /// TCP flags byte, 0 for other protocols.
    pub tcp_flags: u8,
    /// TCP sequence number, 0 for other protocols.
    pub tcp_seq: u32,
    /// TCP acknowledgment number, 0 for other protocols.
    pub tcp_ack: u32,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// [`fragment`] value.
    pub fragment: u8,
    /// [`ip_flags`] bits.
    pub ip_flags: u8,
    /// IPv4 identification or IPv6 fragment identification (fragments only).
    pub frag_id: u32,
    /// Layer-3 length: the IP header and everything it says follows it.
    pub l3_len: u16,
    /// Offset of the IP header from the start of the frame.
    pub l3_offset: u16,
    /// Offset of the transport header.
    pub l4_offset: u16,
    /// Offset of the transport payload (TCP/UDP), or of the end of the IP header otherwise.
    pub payload_offset: u16,
    /// Transport payload length according to the IP header (frame padding excluded).
    pub payload_len: u16,
}

/// Parses Ethernet, VLAN, IP and TCP/UDP headers of the frame in `pkt` into `meta`, which
/// is meaningful when the result is `Ok(Parsed::Ip)`.
///
/// The caller owns `meta` (rather than receiving it in the result) so that the BPF side
/// keeps a single copy on its 512-byte stack.
#[inline(always)]
pub fn parse_headers<P: PacketBytes + ?Sized>(
    pkt: &P,
    meta: &mut PacketMeta,
) -> Result<Parsed, ParseError> {
    let (ethertype, l3_offset, vlan_id) = parse_ethernet(pkt)?;
    meta.vlan_id = vlan_id;
    meta.l3_offset = l3_offset as u16;
    let l4 = match ethertype {
        ETH_P_IPV4 => parse_ipv4(pkt, l3_offset, meta)?,
        ETH_P_IPV6 => parse_ipv6(pkt, l3_offset, meta)?,
        _ => return Ok(Parsed::NotIp),
    };
    let Some(l4_offset) = l4 else {
        return Ok(Parsed::Fragment);
    };
    parse_transport(pkt, l4_offset, meta)?;
    Ok(Parsed::Ip)
}

/// A later fragment's data `[start, end)`: no transport header, all payload.
#[inline(always)]
fn set_fragment_data(meta: &mut PacketMeta, start: usize, end: usize) {
    let start = if start < end { start } else { end };
    meta.l4_offset = start as u16;
    meta.payload_offset = start as u16;
    meta.payload_len = (end - start) as u16;
}

/// IPv4's flags and fragment offset word: more-fragments bit and offset (8-byte units).
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
const IPV4_OFFSET_MASK: u16 = 0x1fff;

/// Returns (ethertype, offset of the layer-3 header, innermost VLAN id).
#[inline(always)]
fn parse_ethernet<P: PacketBytes + ?Sized>(pkt: &P) -> Result<(u16, usize, u16), ParseError> {
    let mut ethertype = pkt.read_u16(12).ok_or(ParseError::Truncated)?;
    let mut offset = ETH_HEADER_LEN;
    let mut vlan_id = 0;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        // Tag control information (PCP, DEI, VID), then the encapsulated ethertype.
        let tci = pkt.read_u16(offset).ok_or(ParseError::Truncated)?;
        vlan_id = tci & 0x0fff;
        ethertype = pkt.read_u16(offset + 2).ok_or(ParseError::Truncated)?;
        offset += VLAN_TAG_LEN;
    }
    Ok((ethertype, offset, vlan_id))
}

/// Fills the IPv4 part of `meta`; returns the transport header's offset, or `None` for a
/// fragment.
#[inline(always)]
fn parse_ipv4<P: PacketBytes + ?Sized>(
    pkt: &P,
    l3: usize,
    meta: &mut PacketMeta,
) -> Result<Option<usize>, ParseError> {
    let header: [u8; IPV4_MIN_HEADER_LEN] = pkt.read(l3).ok_or(ParseError::Truncated)?;
    if header[0] >> 4 != 4 {
        return Err(ParseError::Invalid);
    }
    let header_len = ((header[0] & 0x0f) as usize) * 4;
    let total_len = u16::from_be_bytes([header[2], header[3]]) as usize;
    if header_len < IPV4_MIN_HEADER_LEN || total_len < header_len {
        return Err(ParseError::Invalid);
    }
    meta.ip_version = 4;
    meta.protocol = header[9];
    meta.ttl = header[8];
    meta.l3_len = total_len as u16;
    meta.src_addr = ipv4_mapped([header[12], header[13], header[14], header[15]]);
    meta.dst_addr = ipv4_mapped([header[16], header[17], header[18], header[19]]);
    if header_len > IPV4_MIN_HEADER_LEN {
        meta.ip_flags |= ip_flags::V4_OPTIONS;
    }
    let fragment_word = u16::from_be_bytes([header[6], header[7]]);
    if fragment_word & (IPV4_MORE_FRAGMENTS | IPV4_OFFSET_MASK) != 0 {
        meta.frag_id = u16::from_be_bytes([header[4], header[5]]) as u32;
        if fragment_word & IPV4_OFFSET_MASK != 0 {
            meta.fragment = fragment::LATER;
            set_fragment_data(meta, l3 + header_len, l3 + total_len);
            return Ok(None);
        }
        // The first fragment: its transport header keys the flow.
        meta.fragment = fragment::FIRST;
    }
    let mut l4 = l3 + header_len;
    // IPsec AH in transport mode authenticates without encrypting: the transport header
    // follows it (RFC 4302; its length is in 4-octet units, minus 2).
    if meta.protocol == IPV6_EXT_AUTH {
        let [next, len] = pkt.read(l4).ok_or(ParseError::Truncated)?;
        let ah_len = (len as usize + 2) * 4;
        if header_len + ah_len > total_len {
            return Err(ParseError::Invalid);
        }
        meta.protocol = next;
        l4 += ah_len;
    }
    meta.l4_offset = l4 as u16;
    meta.payload_offset = l4 as u16;
    meta.payload_len = (l3 + total_len - l4) as u16;
    Ok(Some(l4))
}

/// Fills the IPv6 part of `meta`, walking extension headers; returns the transport header's
/// offset, or `None` for a fragment.
#[inline(always)]
fn parse_ipv6<P: PacketBytes + ?Sized>(
    pkt: &P,
    l3: usize,
    meta: &mut PacketMeta,
) -> Result<Option<usize>, ParseError> {
    let fixed: [u8; 8] = pkt.read(l3).ok_or(ParseError::Truncated)?;
    if fixed[0] >> 4 != 6 {
        return Err(ParseError::Invalid);
    }
    let payload_len = u16::from_be_bytes([fixed[4], fixed[5]]) as usize;
    // A 65,535-byte payload and its header do not fit the u16 lengths: no such packet
    // crosses an Ethernet link, so the lengths are capped rather than wrapped (found by
    // fuzzing: a wrapped length put the payload past the packet).
    let l3_len = (IPV6_HEADER_LEN + payload_len).min(u16::MAX as usize);
    meta.ip_version = 6;
    meta.ttl = fixed[7];
    meta.l3_len = l3_len as u16;
    meta.src_addr = pkt.read(l3 + 8).ok_or(ParseError::Truncated)?;
    meta.dst_addr = pkt.read(l3 + 24).ok_or(ParseError::Truncated)?;

    let mut next_header = fixed[6];
    let mut offset = l3 + IPV6_HEADER_LEN;
    let end = l3 + l3_len;
    for index in 0..MAX_IPV6_EXT_HEADERS {
        let ext_len = match next_header {
            IPV6_EXT_HOP_BY_HOP | IPV6_EXT_ROUTING | IPV6_EXT_DEST_OPTS => {
                if next_header == IPV6_EXT_HOP_BY_HOP && index > 0 {
                    meta.ip_flags |= ip_flags::V6_HOP_BY_HOP_MISPLACED;
                }
                meta.ip_flags |= ip_flags::V6_EXTENSIONS;
                let [next, len] = pkt.read(offset).ok_or(ParseError::Truncated)?;
                next_header = next;
                // Length in 8-octet units, not counting the first 8 octets.
                (len as usize + 1) * 8
            }
            IPV6_EXT_AUTH => {
                meta.ip_flags |= ip_flags::V6_EXTENSIONS;
                let [next, len] = pkt.read(offset).ok_or(ParseError::Truncated)?;
                next_header = next;
                // Length in 4-octet units, minus 2 (RFC 4302 §2.2).
                (len as usize + 2) * 4
            }
            IPV6_EXT_FRAGMENT => {
                // Next header, reserved, offset (13 bits) with the M flag, identification.
                let header: [u8; 8] = pkt.read(offset).ok_or(ParseError::Truncated)?;
                let offset_word = u16::from_be_bytes([header[2], header[3]]);
                meta.frag_id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
                if offset_word & 0xfff8 != 0 {
                    meta.fragment = fragment::LATER;
                    meta.protocol = header[0];
                    set_fragment_data(meta, offset + 8, end);
                    return Ok(None);
                }
                // Offset 0: the first fragment, whose upper-layer header follows. (An
                // "atomic" fragment, offset 0 without the M flag, is a whole datagram.)
                if offset_word & 1 != 0 {
                    meta.fragment = fragment::FIRST;
                }
                next_header = header[0];
                8
            }
            transport => {
                if offset > end {
                    return Err(ParseError::Invalid);
                }
                meta.protocol = transport;
                meta.l4_offset = offset as u16;
                meta.payload_offset = offset as u16;
                meta.payload_len = (end - offset) as u16;
                return Ok(Some(offset));
            }
        };
        offset += ext_len;
    }
    Err(ParseError::Invalid)
}

/// Fills ports, TCP flags and the payload's place for TCP and UDP; other protocols keep
/// ports 0 and their payload starts after the IP header.
///
/// A first fragment whose transport header is cut short (the "tiny fragment" of RFC 1858)
/// still names its flow by the ports, which any fragment carries (fragment data comes in
/// multiples of 8 bytes): its payload is left empty, and the classifier treats the flow as
/// unreadable rather than letting the datagram through unseen.
#[inline(always)]
fn parse_transport<P: PacketBytes + ?Sized>(
    pkt: &P,
    l4: usize,
    meta: &mut PacketMeta,
) -> Result<(), ParseError> {
    let available = meta.payload_len as usize;
    let header_len = match meta.protocol {
        ip_proto::TCP => match pkt.read::<TCP_MIN_HEADER_LEN>(l4) {
            Some(header) => {
                let data_offset = ((header[12] >> 4) as usize) * 4;
                if data_offset < TCP_MIN_HEADER_LEN {
                    return Err(ParseError::Invalid);
                }
                meta.src_port = u16::from_be_bytes([header[0], header[1]]);
                meta.dst_port = u16::from_be_bytes([header[2], header[3]]);
                meta.tcp_flags = header[13];
                meta.tcp_seq = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
                meta.tcp_ack = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
                data_offset
            }
            None if meta.fragment == fragment::FIRST => return ports_only(pkt, l4, meta),
            None => return Err(ParseError::Truncated),
        },
        ip_proto::UDP => {
            let header: [u8; UDP_HEADER_LEN] = pkt.read(l4).ok_or(ParseError::Truncated)?;
            meta.src_port = u16::from_be_bytes([header[0], header[1]]);
            meta.dst_port = u16::from_be_bytes([header[2], header[3]]);
            UDP_HEADER_LEN
        }
        _ => return Ok(()),
    };
    if header_len > available {
        if meta.fragment == fragment::FIRST {
            return ports_only(pkt, l4, meta);
        }
        return Err(ParseError::Invalid);
    }
    meta.payload_offset = (l4 + header_len) as u16;
    meta.payload_len = (available - header_len) as u16;
    Ok(())
}

/// A first fragment too short for its transport header: the ports alone, no payload.
#[inline(always)]
fn ports_only<P: PacketBytes + ?Sized>(
    pkt: &P,
    l4: usize,
    meta: &mut PacketMeta,
) -> Result<(), ParseError> {
    let ports: [u8; 4] = pkt.read(l4).ok_or(ParseError::Truncated)?;
    meta.src_port = u16::from_be_bytes([ports[0], ports[1]]);
    meta.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    meta.tcp_flags = 0;
    meta.payload_offset = l4 as u16;
    meta.payload_len = 0;
    Ok(())
}

#[cfg(test)]
mod tests;
