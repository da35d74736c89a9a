//! Failing fast: the client of a blocked flow is told at once, so a visit to a blocked site
//! ends in one round trip instead of hanging until the browser's timeout. The packet that
//! was to be dropped is turned into the answer and sent back out of the LAN interface with
//! XDP_TX:
//! - TCP: a reset from the "server";
//! - UDP (QUIC, BitTorrent's DHT and uTP, ...): ICMP destination unreachable,
//!   "communication administratively prohibited" (ICMPv6: "prohibited by administrative
//!   policy"), quoting the client's IP and UDP headers so its stack finds the socket; a
//!   browser then falls back from QUIC to TCP, where the name is visible, at once.
//!
//! Only the plain layouts are answered: IPv4 without options and IPv6 without extension
//! headers, (up to two VLAN tags). Anything else is dropped silently, as without fail-fast.

use aya_ebpf::{
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use classifier_common::{
    flow::{ip_proto, tcp_flags},
    parse::PacketMeta,
};

const ETH_ADDR_LEN: usize = 6;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const ICMP_HEADER_LEN: usize = 8;
/// The Ethernet header: the least before the IP header (a bound the verifier needs to
/// see, or LLVM keeps a path for an IP header at offset 0 whose frame start it never checked).
const ETH_HEADER_LEN: usize = 14;
/// Ethernet and two VLAN tags: the most the parser puts before the IP header.
const MAX_L3_OFFSET: usize = 22;
const REPLY_TTL: u8 = 64;

/// Turns the client's TCP packet described by `meta` into a reset to the client. Returns
/// false (frame unchanged or not worth sending) when the layout is not one it answers.
#[inline(always)]
pub fn tcp_reset(ctx: &XdpContext, meta: &PacketMeta) -> bool {
    if meta.protocol != ip_proto::TCP || meta.tcp_flags & tcp_flags::RST != 0 {
        return false; // never answer a reset with a reset
    }
    let l3 = meta.l3_offset as usize;
    let ip_len = if meta.ip_version == 4 {
        IPV4_HEADER_LEN
    } else {
        IPV6_HEADER_LEN
    };
    if !(ETH_HEADER_LEN..=MAX_L3_OFFSET).contains(&l3) || meta.l4_offset as usize != l3 + ip_len {
        return false;
    }
    let their_ack = meta.tcp_ack;
    // SYN and FIN take a sequence number each.
    let mut consumed = meta.payload_len as u32;
    if meta.tcp_flags & tcp_flags::SYN != 0 {
        consumed += 1;
    }
    if meta.tcp_flags & tcp_flags::FIN != 0 {
        consumed += 1;
    }
    let reply = Reply {
        // RFC 9293 §3.10.7.1: answer an ACK with its acknowledgement as our sequence number.
        seq: if meta.tcp_flags & tcp_flags::ACK != 0 {
            their_ack
        } else {
            0
        },
        ack: meta.tcp_seq.wrapping_add(consumed),
    };
    if !shrink_to(ctx, l3 + ip_len + TCP_HEADER_LEN) {
        return false;
    }
    // The frame moved: every pointer is taken again, and checked.
    let start = ctx.data();
    // 14..=22, as checked above; the verifier is shown 14..=29, through a barrier that keeps
    // LLVM from dropping the mask it knows to be redundant (or from keeping a path for 0).
    let l3 = ETH_HEADER_LEN + (crate::packet::verifier_opaque(l3 - ETH_HEADER_LEN) & 0xf);
    let ip = crate::packet::verifier_opaque(start + l3);
    if meta.ip_version == 4 {
        if !frame_holds(ctx, start, ip, IPV4_HEADER_LEN + TCP_HEADER_LEN) {
            return false;
        }
        // SAFETY: the Ethernet, IPv4 and TCP headers are inside the frame (checked above).
        unsafe {
            swap_macs(start as *mut u8);
            let ip = ip as *mut u8;
            write_ipv4(ip);
            let tcp = ip.add(IPV4_HEADER_LEN);
            write_tcp(tcp, &reply);
            write_be16(tcp.add(16), tcp_checksum(tcp, ip.add(12), 4));
        }
    } else {
        if !frame_holds(ctx, start, ip, IPV6_HEADER_LEN + TCP_HEADER_LEN) {
            return false;
        }
        // SAFETY: the Ethernet, IPv6 and TCP headers are inside the frame (checked above).
        unsafe {
            swap_macs(start as *mut u8);
            let ip = ip as *mut u8;
            write_ipv6(ip);
            let tcp = ip.add(IPV6_HEADER_LEN);
            write_tcp(tcp, &reply);
            write_be16(tcp.add(16), tcp_checksum(tcp, ip.add(8), 16));
        }
    }
    true
}

/// Turns the client's UDP packet described by `meta` into an ICMP "administratively
/// prohibited" to the client. Returns false (the frame is then only dropped) when the
/// layout is not one it answers.
#[inline(always)]
pub fn udp_unreachable(ctx: &XdpContext, meta: &PacketMeta) -> bool {
    if meta.protocol != ip_proto::UDP {
        return false;
    }
    let l3 = meta.l3_offset as usize;
    let v4 = meta.ip_version == 4;
    let ip_len = if v4 { IPV4_HEADER_LEN } else { IPV6_HEADER_LEN };
    if !(ETH_HEADER_LEN..=MAX_L3_OFFSET).contains(&l3) || meta.l4_offset as usize != l3 + ip_len {
        return false;
    }
    // In front of the client's IP and UDP headers (which stay where they are, quoted) go a
    // new IP header and the ICMP header; the Ethernet header moves to the new front.
    let added = ip_len + ICMP_HEADER_LEN;
    // SAFETY: the helper checks the frame's headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(added as i32)) } != 0 {
        return false;
    }
    let quoted = ip_len + UDP_HEADER_LEN;
    if !shrink_to(ctx, l3 + added + quoted) {
        return false;
    }
    let start = ctx.data();
    // 14..=22, as checked above; the verifier is shown 14..=29, through a barrier that keeps
    // LLVM from dropping the mask it knows to be redundant (or from keeping a path for 0).
    let l3 = ETH_HEADER_LEN + (crate::packet::verifier_opaque(l3 - ETH_HEADER_LEN) & 0xf);
    let ip_at = crate::packet::verifier_opaque(start + l3);
    if v4 {
        if !frame_holds(
            ctx,
            start,
            ip_at,
            2 * IPV4_HEADER_LEN + ICMP_HEADER_LEN + UDP_HEADER_LEN,
        ) {
            return false;
        }
        // SAFETY: the new front, the moved Ethernet header and the quoted headers are inside
        // the frame (checked above).
        unsafe {
            let front = start as *mut u8;
            move_ethernet(front, front.add(IPV4_HEADER_LEN + ICMP_HEADER_LEN), l3);
            swap_macs(front);
            let ip = ip_at as *mut u8;
            let original = ip.add(IPV4_HEADER_LEN + ICMP_HEADER_LEN);
            write_icmp_ipv4(ip, original);
            let icmp = ip.add(IPV4_HEADER_LEN);
            write_icmp_header(icmp, ICMP_UNREACHABLE, ICMP_ADMIN_PROHIBITED);
            let checksum = fold(sum_words(
                icmp,
                (ICMP_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN) / 2,
            ));
            write_be16(icmp.add(2), checksum);
        }
    } else {
        if !frame_holds(
            ctx,
            start,
            ip_at,
            2 * IPV6_HEADER_LEN + ICMP_HEADER_LEN + UDP_HEADER_LEN,
        ) {
            return false;
        }
        // SAFETY: as for IPv4.
        unsafe {
            let front = start as *mut u8;
            move_ethernet(front, front.add(IPV6_HEADER_LEN + ICMP_HEADER_LEN), l3);
            swap_macs(front);
            let ip = ip_at as *mut u8;
            let original = ip.add(IPV6_HEADER_LEN + ICMP_HEADER_LEN);
            let icmp_len = ICMP_HEADER_LEN + IPV6_HEADER_LEN + UDP_HEADER_LEN;
            write_icmp_ipv6(ip, original, icmp_len as u16);
            let icmp = ip.add(IPV6_HEADER_LEN);
            write_icmp_header(icmp, ICMPV6_UNREACHABLE, ICMPV6_ADMIN_PROHIBITED);
            // The pseudo-header: both addresses, the length and the next header (58).
            let mut sum = sum_words(ip.add(8), 16);
            sum += icmp_len as u32 + ip_proto::ICMPV6 as u32;
            sum += sum_words(icmp, icmp_len / 2);
            write_be16(icmp.add(2), fold(sum));
        }
    }
    true
}

/// ICMP type 3 (destination unreachable), code 13 (communication administratively
/// prohibited, RFC 1812 §5.2.7.1).
const ICMP_UNREACHABLE: u8 = 3;
const ICMP_ADMIN_PROHIBITED: u8 = 13;
/// ICMPv6 type 1 (destination unreachable), code 1 (communication with destination
/// administratively prohibited, RFC 4443 §3.1).
const ICMPV6_UNREACHABLE: u8 = 1;
const ICMPV6_ADMIN_PROHIBITED: u8 = 1;

/// Copies the `len`-byte link header (Ethernet and VLAN tags) from `from` to `to`, which
/// lies before it: the regions do not overlap (the shift is at least 28 bytes, the header
/// at most 22).
///
/// # Safety
/// `from` must have `len` readable bytes and `to` `len` writable ones.
#[inline(always)]
unsafe fn move_ethernet(to: *mut u8, from: *const u8, len: usize) {
    // Whole 2-byte words: a link header is 14, 18 or 22 bytes long.
    for i in 0..MAX_L3_OFFSET / 2 {
        if 2 * i >= len {
            break;
        }
        // SAFETY: forwarded from the caller.
        unsafe { *(to.add(2 * i) as *mut [u8; 2]) = *(from.add(2 * i) as *const [u8; 2]) };
    }
}

/// The ICMP message's IPv4 header, from the quoted one at `original`: from its destination
/// to its source, 56 bytes long, a fresh checksum.
///
/// # Safety
/// `ip` must have 20 writable bytes and `original` 20 readable ones.
#[inline(always)]
unsafe fn write_icmp_ipv4(ip: *mut u8, original: *const u8) {
    // SAFETY: forwarded from the caller.
    unsafe {
        *ip = 0x45;
        *ip.add(1) = 0xc0; // precedence "internetwork control", as routers send ICMP
        write_be16(
            ip.add(2),
            (2 * IPV4_HEADER_LEN + ICMP_HEADER_LEN + UDP_HEADER_LEN) as u16,
        );
        write_be16(ip.add(4), 0); // identification
        write_be16(ip.add(6), 0); // may be fragmented
        *ip.add(8) = REPLY_TTL;
        *ip.add(9) = ip_proto::ICMP;
        write_be16(ip.add(10), 0);
        *(ip.add(12) as *mut [u8; 4]) = *(original.add(16) as *const [u8; 4]);
        *(ip.add(16) as *mut [u8; 4]) = *(original.add(12) as *const [u8; 4]);
        let checksum = fold(sum_words(ip, IPV4_HEADER_LEN / 2));
        write_be16(ip.add(10), checksum);
    }
}

/// The ICMPv6 message's IPv6 header, from the quoted one at `original`.
///
/// # Safety
/// `ip` must have 40 writable bytes and `original` 40 readable ones.
#[inline(always)]
unsafe fn write_icmp_ipv6(ip: *mut u8, original: *const u8, payload_len: u16) {
    // SAFETY: forwarded from the caller.
    unsafe {
        *(ip as *mut [u8; 4]) = [0x60, 0, 0, 0];
        write_be16(ip.add(4), payload_len);
        *ip.add(6) = ip_proto::ICMPV6;
        *ip.add(7) = REPLY_TTL;
        *(ip.add(8) as *mut [u8; 16]) = *(original.add(24) as *const [u8; 16]);
        *(ip.add(24) as *mut [u8; 16]) = *(original.add(8) as *const [u8; 16]);
    }
}

/// Type, code, a zero checksum (computed last) and the four unused bytes.
///
/// # Safety
/// `icmp` must have 8 writable bytes.
#[inline(always)]
unsafe fn write_icmp_header(icmp: *mut u8, kind: u8, code: u8) {
    // SAFETY: forwarded from the caller.
    unsafe { *(icmp as *mut [u8; 8]) = [kind, code, 0, 0, 0, 0, 0, 0] };
}

struct Reply {
    seq: u32,
    ack: u32,
}

/// Whether the frame at `start` holds `after` bytes past its IP header at `ip`, checked
/// twice for the verifier: from `start` with the shortest link header (LLVM addresses the
/// front of the frame from `start` with constant offsets), and from `ip` (a pointer of its
/// own to the verifier, whose checked range does not carry over to `start`). `ip` must be
/// the very value the caller then writes through (taken through `verifier_opaque`, so that
/// LLVM cannot compute it afresh into a register the verifier has not seen checked).
#[inline(always)]
fn frame_holds(ctx: &XdpContext, start: usize, ip: usize, after: usize) -> bool {
    start + ETH_HEADER_LEN + after <= ctx.data_end() && ip + after <= ctx.data_end()
}

/// Cuts the frame to `len` bytes (the TCP payload and options go).
#[inline(always)]
fn shrink_to(ctx: &XdpContext, len: usize) -> bool {
    let current = ctx.data_end() - ctx.data();
    if current < len {
        return false;
    }
    let delta = (current - len) as i32;
    // SAFETY: the helper checks the frame; a negative delta only shrinks it.
    delta == 0 || unsafe { bpf_xdp_adjust_tail(ctx.ctx, -delta) } == 0
}

/// # Safety
/// `frame` must have 12 writable bytes.
#[inline(always)]
unsafe fn swap_macs(frame: *mut u8) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let destination = *(frame as *const [u8; ETH_ADDR_LEN]);
        let source = *(frame.add(ETH_ADDR_LEN) as *const [u8; ETH_ADDR_LEN]);
        *(frame as *mut [u8; ETH_ADDR_LEN]) = source;
        *(frame.add(ETH_ADDR_LEN) as *mut [u8; ETH_ADDR_LEN]) = destination;
    }
}

/// The reply's IPv4 header: addresses swapped, 40 bytes long, a fresh checksum.
///
/// # Safety
/// `ip` must have 20 writable bytes.
#[inline(always)]
unsafe fn write_ipv4(ip: *mut u8) {
    // SAFETY: forwarded from the caller.
    unsafe {
        swap::<4>(ip.add(12), ip.add(16));
        *ip = 0x45;
        write_be16(ip.add(2), (IPV4_HEADER_LEN + TCP_HEADER_LEN) as u16);
        write_be16(ip.add(4), 0); // identification
        write_be16(ip.add(6), 0x4000); // don't fragment
        *ip.add(8) = REPLY_TTL;
        *ip.add(9) = ip_proto::TCP;
        write_be16(ip.add(10), 0);
        let checksum = fold(sum_words(ip, IPV4_HEADER_LEN / 2));
        write_be16(ip.add(10), checksum);
    }
}

/// The reply's IPv6 header: addresses swapped, a 20-byte payload.
///
/// # Safety
/// `ip` must have 40 writable bytes.
#[inline(always)]
unsafe fn write_ipv6(ip: *mut u8) {
    // SAFETY: forwarded from the caller.
    unsafe {
        swap::<16>(ip.add(8), ip.add(24));
        *(ip as *mut [u8; 4]) = [0x60, 0, 0, 0];
        write_be16(ip.add(4), TCP_HEADER_LEN as u16);
        *ip.add(6) = ip_proto::TCP;
        *ip.add(7) = REPLY_TTL;
    }
}

/// # Safety
/// `tcp` must have 20 writable bytes.
#[inline(always)]
unsafe fn write_tcp(tcp: *mut u8, reply: &Reply) {
    // SAFETY: forwarded from the caller.
    unsafe {
        swap::<2>(tcp, tcp.add(2));
        *(tcp.add(4) as *mut [u8; 4]) = reply.seq.to_be_bytes();
        *(tcp.add(8) as *mut [u8; 4]) = reply.ack.to_be_bytes();
        *tcp.add(12) = (TCP_HEADER_LEN as u8 / 4) << 4;
        *tcp.add(13) = tcp_flags::RST | tcp_flags::ACK;
        write_be16(tcp.add(14), 0); // window
        write_be16(tcp.add(16), 0); // checksum, computed last
        write_be16(tcp.add(18), 0); // urgent pointer
    }
}

/// The TCP checksum over the pseudo-header (the two addresses of `addr_len` bytes at
/// `addrs`, protocol, length) and the 20-byte header.
///
/// # Safety
/// `tcp` must have 20 readable bytes and `addrs` 2 × `addr_len`.
#[inline(always)]
unsafe fn tcp_checksum(tcp: *const u8, addrs: *const u8, addr_len: usize) -> u16 {
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut sum = if addr_len == 4 {
            sum_words(addrs, 4)
        } else {
            sum_words(addrs, 16)
        };
        sum += ip_proto::TCP as u32 + TCP_HEADER_LEN as u32;
        sum += sum_words(tcp, TCP_HEADER_LEN / 2);
        fold(sum)
    }
}

/// The sum of `words` big-endian 16-bit words at `ptr`.
///
/// # Safety
/// `ptr` must have 2 × `words` readable bytes.
#[inline(always)]
unsafe fn sum_words(ptr: *const u8, words: usize) -> u32 {
    let mut sum = 0u32;
    for i in 0..words {
        // SAFETY: forwarded from the caller.
        let word = unsafe { *(ptr.add(2 * i) as *const [u8; 2]) };
        sum += u16::from_be_bytes(word) as u32;
    }
    sum
}

/// One's-complement fold of a 32-bit sum into the checksum field's value.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// # Safety
/// `ptr` must have 2 writable bytes.
#[inline(always)]
unsafe fn write_be16(ptr: *mut u8, value: u16) {
    // SAFETY: forwarded from the caller.
    unsafe { *(ptr as *mut [u8; 2]) = value.to_be_bytes() };
}

/// # Safety
/// `a` and `b` must each have `N` readable and writable bytes.
#[inline(always)]
unsafe fn swap<const N: usize>(a: *mut u8, b: *mut u8) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let first = *(a as *const [u8; N]);
        *(a as *mut [u8; N]) = *(b as *const [u8; N]);
        *(b as *mut [u8; N]) = first;
    }
}
