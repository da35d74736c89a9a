//! Settings the daemon writes for the datapath, and the other small shared records.

use crate::flow::FlowKey;

/// How QUIC client Initials are treated.
pub mod quic_mode {
    /// Hand the Initials to the daemon, which reads the server name (default).
    pub const CLASSIFY: u8 = 0;
    /// Give QUIC flows the policy's QUIC category at once, without reading names.
    pub const PROTOCOL_ONLY: u8 = 1;
}

/// The datapath's settings: one entry of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// [`quic_mode`].
    pub quic_mode: u8,
    /// Drop a QUIC flow's packets while its Initial is with the daemon (1), or pass them (0).
    pub quic_hold: u8,
    /// Client payload packets looked at before a flow is left unclassified.
    pub max_inspected: u8,
    pub _pad: u8,
    /// How long a BitTorrent peer stays in the cache, in seconds.
    pub peer_ttl_secs: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            quic_mode: quic_mode::CLASSIFY,
            quic_hold: 0,
            // A 4 KiB ClientHello at a 536-byte MSS is 8 segments.
            max_inspected: 8,
            _pad: 0,
            peer_ttl_secs: 600,
        }
    }
}

/// Indices into the `CLASSIFIERS` program array. Classification is split into programs
/// the verifier checks one at a time; they hand over through the per-CPU [`ClassifyJob`].
pub mod tail {
    /// XDP: client → server packets of flows not yet classified; collects stream bytes.
    pub const CLASSIFY_UPLOAD: u32 = 0;
    /// XDP: parses the collected bytes as a TLS ClientHello.
    pub const PARSE_TLS: u32 = 1;
    /// XDP: parses the collected bytes as an HTTP request.
    pub const PARSE_HTTP: u32 = 2;
    /// XDP: a found name → category (longest listed suffix) → the flow's class and event.
    pub const NAME_LOOKUP: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// What one classification program hands the next (the per-CPU `JOBS` map): which flow,
/// where its stream bytes are, and what was found in them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassifyJob {
    pub key: FlowKey,
    /// The bytes are in the flow's `REASM` entry (1) or this CPU's `SCRATCH` buffer (0).
    pub in_reassembly: u8,
    /// [`crate::classify::Method`] the name was found by (SNI or Host).
    pub method: u8,
    /// The request is a BitTorrent tracker announce.
    pub tracker: u8,
    pub _pad: u8,
    /// The protocol, as application, when the name is not listed.
    pub protocol_app: u16,
    pub name_offset: u16,
    pub name_len: u16,
    /// Layer-3 length of the packet being classified (for the blocked counters).
    pub packet_l3_len: u16,
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

/// Key of the `PEERS` map: a BitTorrent peer's address (IPv4-mapped) and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 2],
}

impl PeerKey {
    /// The server side of a flow.
    pub fn server_of(key: &FlowKey) -> Self {
        Self {
            addr: key.server_addr,
            port: key.server_port,
            _pad: [0; 2],
        }
    }
}

/// Bytes of a client's stream the classifier reads (a ClientHello or request headers).
pub const STREAM_CAP: usize = 4096;
/// Room after the cap: a segment (≤ 2047 bytes) appended at any offset below the cap stays
/// inside the buffer, which the verifier can prove from the two bounds alone.
pub const STREAM_SLACK: usize = 2048;

/// What a [`StreamBuf`] is collecting.
pub mod stream_kind {
    pub const TLS: u8 = 1;
    pub const HTTP: u8 = 2;
}

/// The first bytes of a client's stream, collected segment by segment.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StreamBuf {
    /// Bytes collected.
    pub len: u32,
    /// TCP sequence number of the next byte expected.
    pub next_seq: u32,
    /// [`stream_kind`].
    pub kind: u8,
    pub _pad: [u8; 7],
    pub bytes: [u8; STREAM_CAP + STREAM_SLACK],
}
