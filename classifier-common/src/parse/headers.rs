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
    /// An IP packet with a usable 5-tuple, described in the [`PacketMeta`] passed in.
    Ip,
    /// An Ethernet frame that carries neither IPv4 nor IPv6.
    NotIp,
    /// An IPv4 or IPv6 fragment: no transport header to key a flow by.
    Fragment,
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
    meta.l3_len = total_len as u16;
    meta.src_addr = ipv4_mapped([header[12], header[13], header[14], header[15]]);
    meta.dst_addr = ipv4_mapped([header[16], header[17], header[18], header[19]]);
    // More-fragments flag or a non-zero fragment offset.
    let fragment_bits = u16::from_be_bytes([header[6], header[7]]) & 0x3fff;
    if fragment_bits != 0 {
        return Ok(None);
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
    meta.l3_len = l3_len as u16;
    meta.src_addr = pkt.read(l3 + 8).ok_or(ParseError::Truncated)?;
    meta.dst_addr = pkt.read(l3 + 24).ok_or(ParseError::Truncated)?;

    let mut next_header = fixed[6];
    let mut offset = l3 + IPV6_HEADER_LEN;
    let end = l3 + l3_len;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let ext_len = match next_header {
            IPV6_EXT_HOP_BY_HOP | IPV6_EXT_ROUTING | IPV6_EXT_DEST_OPTS => {
                let [next, len] = pkt.read(offset).ok_or(ParseError::Truncated)?;
                next_header = next;
                // Length in 8-octet units, not counting the first 8 octets.
                (len as usize + 1) * 8
            }
            IPV6_EXT_AUTH => {
                let [next, len] = pkt.read(offset).ok_or(ParseError::Truncated)?;
                next_header = next;
                // Length in 4-octet units, minus 2 (RFC 4302 §2.2).
                (len as usize + 2) * 4
            }
            IPV6_EXT_FRAGMENT => return Ok(None),
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
#[inline(always)]
fn parse_transport<P: PacketBytes + ?Sized>(
    pkt: &P,
    l4: usize,
    meta: &mut PacketMeta,
) -> Result<(), ParseError> {
    let header_len = match meta.protocol {
        ip_proto::TCP => {
            let header: [u8; TCP_MIN_HEADER_LEN] = pkt.read(l4).ok_or(ParseError::Truncated)?;
            let data_offset = ((header[12] >> 4) as usize) * 4;
            if data_offset < TCP_MIN_HEADER_LEN {
                return Err(ParseError::Invalid);
            }
            meta.src_port = u16::from_be_bytes([header[0], header[1]]);
            meta.dst_port = u16::from_be_bytes([header[2], header[3]]);
            meta.tcp_flags = header[13];
            meta.tcp_seq = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            data_offset
        }
        ip_proto::UDP => {
            let header: [u8; UDP_HEADER_LEN] = pkt.read(l4).ok_or(ParseError::Truncated)?;
            meta.src_port = u16::from_be_bytes([header[0], header[1]]);
            meta.dst_port = u16::from_be_bytes([header[2], header[3]]);
            UDP_HEADER_LEN
        }
        _ => return Ok(()),
    };
    let available = meta.payload_len as usize;
    if header_len > available {
        return Err(ParseError::Invalid);
    }
    meta.payload_offset = (l4 + header_len) as u16;
    meta.payload_len = (available - header_len) as u16;
    Ok(())
}

#[cfg(test)]
mod tests;
