//! Settings the daemon writes for the datapath, and the other small shared records.

use crate::flow::FlowKey;

/// How QUIC client Initials are treated.
pub mod quic_mode {
    /// Hand the Initials to the daemon, which reads the server name (default).
    pub const CLASSIFY: u8 = 0;
    /// Give QUIC flows the policy's QUIC category at once, without reading names.
    pub const PROTOCOL_ONLY: u8 = 1;
}

/// How the datapath checks the TCP and UDP checksums of the segments it classifies by.
pub mod checksums {
    /// Not checked (generic XDP, where GRO merges segments and leaves stale checksums).
    pub const OFF: u8 = 0;
    /// A segment with a wrong checksum names nothing (frames from a physical NIC).
    pub const VERIFY: u8 = 1;
    /// As VERIFY, but a checksum left for the sender's NIC to finish counts as valid: a
    /// veth carries a local sender's segments with the placeholder (checksum offload).
    pub const ALLOW_OFFLOADED: u8 = 2;

    /// The mode's name, as logs show it.
    pub const fn name(mode: u8) -> &'static str {
        match mode {
            OFF => "off",
            VERIFY => "verify",
            ALLOW_OFFLOADED => "allow-offloaded",
            _ => "unknown",
        }
    }
}

/// How a fail-fast answer (a TCP reset, an ICMP unreachable) built at XDP from the client's
/// packet goes back out of the LAN interface.
pub mod fail_fast_replies {
    /// XDP_TX: the driver sends the frame back itself. Right for a NIC with native XDP; on a
    /// veth the frame reaches the peer only when the peer runs XDP itself (otherwise it
    /// waits, seconds or for ever, for other traffic to flush it), and generic XDP sends it
    /// past the qdisc, lost when the queue is stopped.
    pub const XDP_TX: u8 = 0;
    /// XDP passes the answer up with [`REPLY_METADATA`] in front of it; the TC ingress
    /// program `lan_replies` sends it out of the same interface with `bpf_redirect`, through
    /// the interface's ordinary transmit path (works on any interface).
    pub const TC_REDIRECT: u8 = 1;

    /// The way's name, as logs, `status` and `--fail-fast-replies` show it.
    pub const fn name(way: u8) -> &'static str {
        match way {
            XDP_TX => "xdp-tx",
            TC_REDIRECT => "tc-redirect",
            _ => "unknown",
        }
    }

    /// The 4 bytes of XDP metadata that mark a frame as a fail-fast answer for
    /// `lan_replies` to send (only XDP programs write metadata: a client cannot).
    pub const REPLY_METADATA: u32 = 0xfa11_fa57;
    /// The skb mark `lan_replies` gives the answer it redirects, so that `lan_egress` lets it
    /// out uncounted (it is the client's own blocked packet, counted at XDP). Only together
    /// with "received on the interface it leaves by", which no forwarded download is.
    pub const REPLY_MARK: u32 = 0xfa11_fa57;
}

/// The datapath's settings: one entry of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// [`quic_mode`].
    pub quic_mode: u8,
    /// Drop a QUIC flow's packets while its Initial is with the daemon (1), or pass them (0).
    pub quic_hold: u8,
    /// Client payload packets looked at before a flow that is not TLS or HTTP is left
    /// unclassified.
    pub max_inspected: u8,
    /// [`checksums`].
    pub checksums: u8,
    /// How long a BitTorrent peer stays in the cache, in seconds.
    pub peer_ttl_secs: u32,
    /// Per client: new flows a second, and how many at once ([`SourceQuota`]).
    pub flow_rate: u32,
    pub flow_burst: u32,
    /// Per client: reassembly buffers started a second, and at once.
    pub reassembly_rate: u16,
    pub reassembly_burst: u16,
    /// Per client: QUIC Initials handed to the daemon a second, and at once.
    pub quic_rate: u16,
    pub quic_burst: u16,
    /// Flows are made only for sources in `LAN_PREFIXES` (1), or for any source (0).
    pub lan_filter: u8,
    /// [`fail_fast_replies`]: set by the daemon for the interface, never by the policy.
    pub fail_fast_replies: u8,
    pub _pad: [u8; 2],
}

impl Config {
    /// Every field zero: a `CONFIG` entry nothing has written yet (which checks no
    /// checksum, meters nothing and inspects no segment: never the settings to run with).
    pub const UNSET: Self = Self {
        quic_mode: 0,
        quic_hold: 0,
        max_inspected: 0,
        checksums: 0,
        peer_ttl_secs: 0,
        flow_rate: 0,
        flow_burst: 0,
        reassembly_rate: 0,
        reassembly_burst: 0,
        quic_rate: 0,
        quic_burst: 0,
        lan_filter: 0,
        fail_fast_replies: 0,
        _pad: [0; 2],
    };
}

impl Default for Config {
    fn default() -> Self {
        Self {
            quic_mode: quic_mode::CLASSIFY,
            quic_hold: 0,
            // Segments of a stream whose first bytes are neither TLS nor HTTP.
            max_inspected: 8,
            checksums: checksums::VERIFY,
            peer_ttl_secs: 600,
            // A browser opens tens of connections for a page; a client opening thousands a
            // second is scanning or flooding. Generous enough for a small NAT behind a LAN
            // address; `[datapath]` in the policy changes them.
            flow_rate: 500,
            flow_burst: 2000,
            // One per TLS or HTTP connection whose first bytes span segments.
            reassembly_rate: 50,
            reassembly_burst: 200,
            // A QUIC connection sends one or two Initials to be read.
            quic_rate: 50,
            quic_burst: 200,
            lan_filter: 0,
            fail_fast_replies: fail_fast_replies::XDP_TX,
            _pad: [0; 2],
        }
    }
}

/// Segments of a TLS or HTTP stream collected before its first bytes are read, at most.
/// Chrome's ML-KEM hello at MSS 536 is 4; tools that cut the hello into pieces use a few
/// more; a hello in more segments than this is unreadable (and blocked where the policy
/// blocks that), not allowed.
pub const MAX_STREAM_SEGMENTS: u8 = 32;

/// What one client may use of the datapath's shared tables, metered per source address
/// (the `SOURCES` map), so that one host cannot fill them at the others' expense.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceQuota {
    /// New flows (tokens are flows).
    pub flows: crate::shaping::TokenBucket,
    /// Reassembly buffers started.
    pub reassembly: crate::shaping::TokenBucket,
    /// QUIC Initials handed to the daemon.
    pub quic: crate::shaping::TokenBucket,
}

/// Indices into the `CLASSIFIERS` program array. Classification is split into programs
/// the verifier checks one at a time; they hand over through the per-CPU [`ClassifyJob`].
pub mod tail {
    /// XDP: client → server packets of flows not yet classified; collects stream bytes.
    pub const CLASSIFY_UPLOAD: u32 = 0;
    /// XDP: parses the collected bytes as an HTTP request.
    pub const PARSE_HTTP: u32 = 1;
    /// XDP: a found name → category (longest listed suffix) → the flow's class and event.
    pub const NAME_LOOKUP: u32 = 2;
    /// XDP: places a TCP segment's payload in the flow's stream buffer (checksum,
    /// overlaps, out-of-order pieces) and, when the bytes grew, reads them: a ClientHello
    /// there (and its name looked up there: each hand-over costs the flow's lookup
    /// again), an HTTP request in `PARSE_HTTP`.
    pub const STREAM_SEGMENT: u32 = 3;
    /// XDP: joins a ClientHello spread over several TLS records and parses it.
    pub const PARSE_TLS_RECORDS: u32 = 4;
    /// XDP: the packet's verdict under its flow's class so far, after classification.
    pub const ENFORCE: u32 = 5;
    pub const COUNT: u32 = 6;
}

/// Which buffer a [`ClassifyJob`]'s stream bytes are in.
pub mod job_buffer {
    /// This CPU's `SCRATCH`: a first segment that may settle the class at once.
    pub const SCRATCH: u8 = 0;
    /// The flow's `REASM` entry.
    pub const REASSEMBLY: u8 = 1;
    /// This CPU's `DEFRAG`: a handshake joined from several TLS records.
    pub const DEFRAG: u8 = 2;
}

/// What one classification program hands the next (the per-CPU `JOBS` map): which flow,
/// where its stream bytes are, and what was found in them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassifyJob {
    pub key: FlowKey,
    /// Where the stream bytes are ([`job_buffer`]).
    pub buffer: u8,
    /// [`crate::classify::Method`] the name was found by (SNI or Host).
    pub method: u8,
    /// The request is a BitTorrent tracker announce.
    pub tracker: u8,
    /// The name's offsets are into `DEFRAG`, `joined_len` bytes joined from TLS records.
    pub joined: u8,
    /// The protocol, as application, when the name is not listed.
    pub protocol_app: u16,
    pub name_offset: u16,
    pub name_len: u16,
    /// Layer-3 length of the packet being classified (for the blocked counters).
    pub packet_l3_len: u16,
    pub joined_len: u16,
    /// Stream bytes the parser had when it found the name (what a second version must
    /// start before to be one).
    pub parsed_end: u16,
    /// The segment being placed: its stream offset, its payload's offset in the frame and
    /// length, and its TCP header's offset and length.
    pub stream_offset: u16,
    pub payload_offset: u16,
    pub payload_len: u16,
    pub l4_offset: u16,
    pub l4_header_len: u16,
    pub _pad: u16,
    /// Sum of the segment's pseudo-header ([`crate::parse::tcp::checksum`]).
    pub pseudo_sum: u32,
}

/// Key of the `PORTS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub protocol: u8,
    pub _pad: u8,
    pub port: u16,
}

/// What a port rule or a daemon's classification gives a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassResult {
    pub category: u16,
    pub app: u16,
    /// [`crate::classify::Method`] as u8.
    pub method: u8,
    /// [`crate::classify::class_flags`] to add.
    pub class_flags: u8,
    pub _pad: [u8; 2],
}

/// Key of the `PEERS` map: a BitTorrent peer (address, IPv4-mapped, and port) as one LAN
/// client learnt it. The cache is per client so that what one host's traffic (or a
/// tracker it asked) says about a server never changes how another host's flows to that
/// server are classified.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub client_addr: [u8; 16],
    pub addr: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 2],
}

impl PeerKey {
    /// The server side of a flow, as its client knows it.
    pub fn server_of(key: &FlowKey) -> Self {
        Self {
            client_addr: key.client_addr,
            addr: key.server_addr,
            port: key.server_port,
            _pad: [0; 2],
        }
    }
}

/// Server ports the peer cache never makes BitTorrent on its own: every port below 1024
/// (DNS, HTTP, HTTPS, DNS over TLS, mail, ...) and these well-known service ports above it
/// (OpenVPN, RDP, SIP, HTTP alternates, WireGuard). A flow to one of them is BitTorrent only
/// if its own bytes say so.
pub const PEER_CACHE_EXEMPT_PORTS: [u16; 8] = [1194, 3389, 5060, 5061, 8080, 8443, 9443, 51820];

/// Whether the peer cache may classify a flow to server port `port`.
#[inline(always)]
pub fn peer_cache_applies(port: u16) -> bool {
    if port < 1024 {
        return false;
    }
    let mut exempt = false;
    for p in PEER_CACHE_EXEMPT_PORTS {
        exempt |= p == port;
    }
    !exempt
}

/// Bytes of a client's stream the classifier reads (a ClientHello or request headers).
pub const STREAM_CAP: usize = 4096;
/// Room after the cap: a segment (≤ 2047 bytes) appended at any offset below the cap stays
/// inside the buffer, which the verifier can prove from the two bounds alone.
pub const STREAM_SLACK: usize = 2048;

/// What a [`StreamBuf`] is collecting.
pub mod stream_kind {
    /// Not told yet: too few bytes.
    pub const UNKNOWN: u8 = 0;
    pub const TLS: u8 = 1;
    pub const HTTP: u8 = 2;
}

/// The first bytes of a client's stream, collected segment by segment, in order or not.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StreamBuf {
    /// Which stream offsets `bytes` holds (prefix and out-of-order pieces).
    pub coverage: crate::stream::Coverage,
    /// Segments taken in.
    pub segments: u8,
    /// [`stream_kind`], once the first bytes tell.
    pub kind: u8,
    pub _pad: [u8; 2],
    pub bytes: [u8; STREAM_CAP + STREAM_SLACK],
}
