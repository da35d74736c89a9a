//! Events the datapath sends the daemon through the `EVENTS` ring buffer. Every event starts
//! with its kind byte.

use crate::flow::FlowKey;

pub mod kind {
    /// [`super::ClassifiedEvent`]: a flow got its class (sent once per flow).
    pub const FLOW_CLASSIFIED: u8 = 1;
    /// [`super::PayloadEvent`]: a QUIC client Initial datagram, for the daemon to decrypt.
    pub const QUIC_INITIAL: u8 = 2;
    /// [`super::PayloadEvent`]: a BitTorrent tracker's reply (HTTP or UDP), whose peers the
    /// daemon puts in the peer cache.
    pub const TRACKER_REPLY: u8 = 3;
    /// [`super::ShapeClientEvent`]: a client under a per-client rule needs its own HTB class.
    pub const SHAPE_CLIENT: u8 = 4;
}

/// Longest name an event carries (a DNS name is at most 255 bytes).
pub const NAME_CAP: usize = 256;
/// Most payload bytes a [`PayloadEvent`] carries (a 1500-byte MTU's UDP payload fits).
pub const PAYLOAD_CAP: usize = 2048;

/// A flow's classification and the name (SNI or Host) it was classified by; or, with
/// [`crate::classify::class_flags::RECHECK`] in `class_flags`, a second name read from a
/// second version of the same stream bytes (an evasion attempt).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ClassifiedEvent {
    pub kind: u8,
    /// [`crate::classify::Method`] as u8.
    pub method: u8,
    pub class_flags: u8,
    pub name_len: u8,
    pub category: u16,
    pub app: u16,
    /// [`crate::classify::evasion`] bits so far.
    pub evasion: u8,
    /// 1: the datapath also put the name into `NAMES` ([`crate::names`]), where it outlives
    /// the daemon. 0: it did not (no name, the write failed, or a datapath older than
    /// `NAMES`, whose byte here was padding), and the daemon keeps it there itself.
    pub name_kept: u8,
    /// The flow's second category ([`crate::flow::FlowEntry::alt_category`]).
    pub alt_category: u16,
    pub key: FlowKey,
    /// The name as it was on the wire (case kept), `name_len` bytes.
    pub name: [u8; NAME_CAP],
}

/// A datagram handed to the daemon.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PayloadEvent {
    pub kind: u8,
    pub _pad: u8,
    /// Bytes of `data` that are the datagram's UDP payload.
    pub len: u16,
    /// The datagram's original length, when longer than [`PAYLOAD_CAP`].
    pub original_len: u16,
    pub _pad2: [u8; 2],
    pub key: FlowKey,
    pub data: [u8; PAYLOAD_CAP],
}

/// A client of a per-client shaping rule has no HTB class of its own yet: the daemon makes
/// one and writes it into `CLIENT_CLASSES`. Sent once per flow and policy generation;
/// until the class is there the flow's packets go into the rule's shared class.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ShapeClientEvent {
    pub kind: u8,
    pub _pad: u8,
    /// The rule's shape class.
    pub class: u16,
    pub _pad2: u32,
    /// The client (IPv4-mapped).
    pub client_addr: [u8; 16],
}
