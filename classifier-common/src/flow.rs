//! The flow table's key and value.
//!
//! A flow is named from the LAN side: the *client* is the host on the gateway's LAN
//! interface, the *server* the host beyond it, whichever of them sent the first packet.
//! Both directions of a connection therefore share one entry: XDP on LAN ingress counts
//! client→server (upload), TC on LAN egress counts server→client (download).

/// IP protocol numbers the datapath tells apart.
pub mod ip_proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// Flow table key: the 5-tuple, client side first.
///
/// Addresses are 16 bytes; IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291
/// §2.5.5.2) so one table holds both families. Ports are in host byte order; they are 0 for
/// protocols without ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub client_addr: [u8; 16],
    pub server_addr: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    pub protocol: u8,
    /// Explicit padding: the kernel hashes every key byte, so it must always be zero.
    pub _pad: [u8; 3],
}

/// Packets and bytes in one direction. Bytes are layer-3 bytes (IP header and payload, as
/// IPFIX's octetDeltaCount counts them): no Ethernet header, no VLAN tags, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DirectionCounters {
    pub packets: u64,
    pub bytes: u64,
}

/// Bits of [`FlowEntry::flags`].
pub mod flow_flags {
    /// The first packet of this flow was seen going server→client (not initiated from the LAN).
    pub const STARTED_DOWNSTREAM: u8 = 1 << 0;
    /// The flow's first bytes are kept in a `REASM` entry (they took more than one
    /// segment). Only such flows look there: a lookup that finds nothing costs as much as
    /// one that does, on every new flow.
    pub const STREAM_BUFFER: u8 = 1 << 1;
}

/// Flow table value: counters both ways plus what the datapath learnt about the flow.
///
/// The counters are updated with atomic adds from any CPU; the timestamps and TCP flag
/// unions with plain stores, where a lost race costs nothing that matters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEntry {
    /// The first packet's time, CLOCK_MONOTONIC_COARSE ns (`bpf_ktime_get_coarse_ns()`:
    /// CLOCK_MONOTONIC at the timer tick's resolution).
    pub first_seen_ns: u64,
    /// The latest packet's time, on the same clock; never before `first_seen_ns`.
    pub last_seen_ns: u64,
    /// Client → server.
    pub upload: DirectionCounters,
    /// Server → client.
    pub download: DirectionCounters,
    /// 802.1Q VLAN id the client's packets carried, 0 when untagged.
    pub vlan_id: u16,
    /// Union of the TCP flags seen client → server.
    pub tcp_flags_upload: u8,
    /// Union of the TCP flags seen server → client.
    pub tcp_flags_download: u8,
    /// [`flow_flags`] bits.
    pub flags: u8,
    /// Where classification stands ([`crate::classify::state`]).
    pub class_state: u8,
    /// How the flow was classified ([`crate::classify::Method`] as u8).
    pub method: u8,
    /// [`crate::classify::class_flags`] bits.
    pub class_flags: u8,
    /// Category id from the compiled policy (0: uncategorized).
    pub category: u16,
    /// Application id: a built-in protocol ([`crate::classify::app`]) or a policy app.
    pub app: u16,
    /// Client payload packets (or QUIC Initials) the classifier has looked at.
    pub inspected: u8,
    /// The policy's verdict for the flow ([`crate::policy::verdict`]), as last worked out.
    pub verdict: u8,
    /// The client's group, once looked up (see `policy_flags`).
    pub group: u16,
    /// The policy generation `verdict` was worked out under: a new policy, period or
    /// exception bumps the generation and every flow works its verdict out again.
    pub policy_gen: u32,
    /// The category `verdict` was worked out for (classification may change it).
    pub verdict_category: u16,
    /// [`crate::policy::policy_flags`] bits.
    pub policy_flags: u8,
    /// Server→client payload packets of a BitTorrent tracker flow handed to the daemon
    /// (which reads the peers they list into the peer cache).
    pub tracker_replies: u8,
    /// Packets and bytes dropped by a block verdict.
    pub blocked: DirectionCounters,
    /// Packets and bytes put into a shaping class (or, with the policer, dropped by it).
    pub shaped: DirectionCounters,
    /// The shape class of a shape verdict (0: none), worked out with `verdict`.
    pub shape_class: u16,
    /// [`crate::shaping::flow_shape_flags`] bits.
    pub shape_flags: u8,
    /// [`crate::classify::evasion`] bits: what the client did to hide the flow's name.
    pub evasion: u8,
    /// A second category the verdict must also answer to (0: none): the other name's, when
    /// two versions of the stream named different sites, or the policy's `unreadable`
    /// category, when a version could not be read. The stricter verdict of the two applies.
    pub alt_category: u16,
    /// TCP: the stream offset just past the bytes the name was read from. A later segment
    /// that starts before it is a second version of those bytes.
    pub named_end: u16,
    /// The low 32 bits of the name's hash, to tell a retransmission from a different name.
    pub name_hash: u32,
    /// What the TCP handshake said, to tell segments the server takes from decoys.
    pub tcp: TcpStart,
    /// TCP, while classifying: stream bytes held in order from offset 0. The server
    /// acknowledging more than this means it took bytes the classifier did not read.
    pub held: u16,
    pub _pad: [u8; 2],
}

/// Facts of a TCP flow's handshake, kept while it is being classified.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpStart {
    /// Sequence number of the stream's offset 0, less one: the client's ISN when its SYN
    /// was seen, else worked back from the first payload seen.
    pub client_isn: u32,
    /// The server's ISN, from its SYN-ACK.
    pub server_isn: u32,
    /// TSval of the client's SYN, when it carried timestamps.
    pub ts_val: u32,
    /// TTL or hop limit of the client's SYN.
    pub ttl: u8,
    /// [`tcp_start`] bits.
    pub flags: u8,
    /// [`crate::parse::headers::ip_flags`] of the client's SYN.
    pub ip_flags: u8,
    pub _pad: u8,
}

/// Bits of [`TcpStart::flags`].
pub mod tcp_start {
    /// `client_isn`, `ttl` and `ip_flags` are known (from the SYN, or the first payload).
    pub const BASE: u8 = 1 << 0;
    /// The client's SYN was seen (else the flow was picked up mid-stream).
    pub const SYN: u8 = 1 << 1;
    /// The server's SYN-ACK was seen: `server_isn` is known.
    pub const SYN_ACK: u8 = 1 << 2;
    /// The client's SYN carried timestamps: `ts_val` is known.
    pub const TIMESTAMPS: u8 = 1 << 3;
    /// The client's SYN carried an MD5 or authentication option (the peers use one).
    pub const SIGNATURE: u8 = 1 << 4;
}

/// Key of the `FRAGMENTS` map: what names one fragmented datagram (RFC 791, RFC 8200).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragmentKey {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub id: u32,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

/// TCP flag bits as they appear in the header's 13th byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// Stores an IPv4 address the way [`FlowKey`] holds it: IPv4-mapped IPv6.
#[inline(always)]
pub const fn ipv4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_fixed() {
        // The kernel sees these sizes through pinned maps: a change needs a migration.
        assert_eq!(core::mem::size_of::<FlowKey>(), 40);
        assert_eq!(core::mem::size_of::<FlowEntry>(), 136);
        assert_eq!(core::mem::offset_of!(FlowEntry, category), 56);
        assert_eq!(core::mem::offset_of!(FlowEntry, blocked), 72);
        assert_eq!(core::mem::offset_of!(FlowEntry, tcp), 116);
        assert_eq!(core::mem::size_of::<TcpStart>(), 16);
        assert_eq!(core::mem::align_of::<FlowEntry>(), 8);
    }

    #[test]
    fn ipv4_is_mapped() {
        assert_eq!(
            ipv4_mapped([192, 0, 2, 1]),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]
        );
    }
}
