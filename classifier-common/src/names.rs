//! The server names flows were classified by, kept in the kernel (`NAMES`) so that they
//! outlive the daemon: a crash, a `kill -9`, a SIGUSR1 hand-over or an upgrade loses none.
//!
//! The datapath writes a flow's name when it reads one (TLS SNI, HTTP Host, a tracker's
//! Host), the daemon writes the QUIC names it decrypts; the daemon reads them back at start
//! and for any flow it records without a name in memory, and removes a flow's names once
//! the flow is recorded.

use crate::{event::NAME_CAP, flow::FlowKey};

/// Which of a flow's names an entry holds.
pub mod version {
    /// The name the flow was classified by.
    pub const FIRST: u8 = 0;
    /// A second name, read from a second version of the same stream bytes (an evasion
    /// attempt: see `FlowEntry::alt_category`).
    pub const SECOND: u8 = 1;
}

/// Key of the `NAMES` map: a flow and which of its names.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NameKey {
    pub flow: FlowKey,
    /// [`version`].
    pub version: u8,
    /// Explicit padding: the kernel hashes every key byte, so it must always be zero.
    pub _pad: [u8; 3],
}

impl NameKey {
    #[inline(always)]
    pub fn new(flow: FlowKey, version: u8) -> Self {
        Self {
            flow,
            version,
            _pad: [0; 3],
        }
    }
}

/// Value of the `NAMES` map: one name, as it was on the wire (case kept).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowName {
    /// The `first_seen_ns` of the flow entry the name belongs to. A name whose flow entry
    /// has another (the flow was evicted and its addresses and ports used again by a new
    /// flow) is not that flow's: the daemon ignores and removes it.
    pub first_seen_ns: u64,
    /// Bytes of `name` in use (at most `NAME_CAP - 1`).
    pub len: u8,
    pub _pad: [u8; 7],
    pub name: [u8; NAME_CAP],
}

impl Default for FlowName {
    fn default() -> Self {
        Self {
            first_seen_ns: 0,
            len: 0,
            _pad: [0; 7],
            name: [0; NAME_CAP],
        }
    }
}

impl FlowName {
    /// `name` (cut to `NAME_CAP - 1` bytes) for the flow entry first seen at `first_seen_ns`.
    pub fn new(first_seen_ns: u64, name: &[u8]) -> Self {
        let len = name.len().min(NAME_CAP - 1);
        let mut value = Self {
            first_seen_ns,
            len: len as u8,
            ..Self::default()
        };
        value.name[..len].copy_from_slice(&name[..len]);
        value
    }

    /// The name's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.name[..(self.len as usize).min(NAME_CAP)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_fixed() {
        // Pinned: a change of layout needs a new map name (see `maps::NAMES`).
        assert_eq!(core::mem::size_of::<NameKey>(), 44);
        assert_eq!(core::mem::offset_of!(NameKey, version), 40);
        assert_eq!(core::mem::size_of::<FlowName>(), 272);
        assert_eq!(core::mem::offset_of!(FlowName, name), 16);
    }

    #[test]
    fn a_name_round_trips_and_long_ones_are_cut() {
        let name = FlowName::new(7, b"www.example.com");
        assert_eq!(
            (name.first_seen_ns, name.bytes()),
            (7, &b"www.example.com"[..])
        );
        let long = [b'a'; 300];
        assert_eq!(FlowName::new(0, &long).bytes().len(), NAME_CAP - 1);
    }
}
