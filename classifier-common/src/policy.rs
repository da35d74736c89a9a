//! The policy as the datapath holds it: groups, the (group, category) → verdict table for
//! the period in force, and per-client exceptions.
//!
//! Every policy map is double-buffered: its keys start with a table bit (0 or 1), and the
//! low bit of the generation word in `POLICY_GEN` says which table is in force. The daemon
//! fills the idle table (groups, actions, exceptions), then writes the next generation: one
//! aligned 4-byte store flips every packet to the new policy at once, so none ever sees a
//! half-written one, and every flow works its group and verdict out again.

/// Verdicts.
pub mod verdict {
    /// Pass and count (also: no entry in the action table).
    pub const ALLOW: u8 = 0;
    /// Drop (and, with `fail_fast`, tell the client at once).
    pub const BLOCK: u8 = 1;
    /// Put into a shaping class at TC.
    pub const SHAPE: u8 = 2;

    pub const fn name(verdict: u8) -> &'static str {
        match verdict {
            BLOCK => "block",
            SHAPE => "shape",
            _ => "allow",
        }
    }
}

/// Bits of [`crate::flow::FlowEntry::policy_flags`].
pub mod policy_flags {
    /// `verdict` and `group` were worked out (under `policy_gen`).
    pub const DECIDED: u8 = 1 << 0;
    /// The verdict is a block that tells the client at once (TCP reset).
    pub const FAIL_FAST: u8 = 1 << 1;
}

/// Key of the `ACTIONS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ActionKey {
    /// 0 or 1: which of the two tables.
    pub table: u8,
    pub _pad: u8,
    pub group: u16,
    pub category: u16,
    pub _pad2: u16,
}

/// What the action table says for a (group, category).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActionEntry {
    /// [`verdict`].
    pub verdict: u8,
    /// For a block: reset TCP / send ICMP unreachable so the client gives up at once.
    pub fail_fast: u8,
    /// For a shape: the HTB class (minor id) the flow's packets go to.
    pub shape_class: u16,
    pub _pad: u32,
}

/// Key of the `CLIENT_EXCEPTIONS` map: a client (IPv4-mapped) allowed a category.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExceptionKey {
    pub client_addr: [u8; 16],
    pub category: u16,
    pub table: u8,
    pub _pad: u8,
}

/// Key of the `GROUP_VLANS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VlanKey {
    pub table: u8,
    pub _pad: u8,
    pub vlan: u16,
}

/// The data of a `GROUP_PREFIXES` trie key: the table bit, a zero byte (the trie wants a
/// size aligned to its u16 value; the byte is inside every prefix, so always zero), then the
/// IPv4-mapped address. The prefix length counts those two bytes: 16 + 128 for an address.
pub type GroupPrefixData = [u8; 18];

/// The trie data for `addr` (IPv4-mapped) in `table`.
pub const fn group_prefix_data(table: u8, addr: [u8; 16]) -> GroupPrefixData {
    let mut data = [0u8; 18];
    data[0] = table;
    let mut i = 0;
    while i < 16 {
        data[i + 2] = addr[i];
        i += 1;
    }
    data
}

/// Trie prefix length for an address prefix of `len` bits in the 128-bit (IPv4-mapped)
/// space, after the table and zero bytes.
pub const fn group_prefix_len(len_in_mapped_space: u32) -> u32 {
    16 + len_in_mapped_space
}

/// The table a generation puts in force.
pub const fn table_of(generation: u32) -> u8 {
    (generation & 1) as u8
}

/// Prefix length of an IPv4 prefix in the IPv4-mapped address space.
pub const fn mapped_prefix_len(ipv4_prefix_len: u8) -> u32 {
    96 + ipv4_prefix_len as u32
}

/// Key of the `CLASS_IDS` registry: a category or policy application name, zero-padded.
///
/// Flows keep the category and application ids they were classified with for their whole
/// life, in a flow table that outlives the daemon. The registry, pinned beside it, keeps
/// each name's id for as long as that table lives, so a reload or restart that adds,
/// removes or reorders categories never changes what a running flow's id means.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClassNameKey {
    /// [`class_kind`].
    pub kind: u8,
    pub name: [u8; CLASS_NAME_MAX],
}

/// The longest category or application name the registry holds.
pub const CLASS_NAME_MAX: usize = 63;

/// [`ClassNameKey::kind`].
pub mod class_kind {
    pub const CATEGORY: u8 = b'c';
    pub const APP: u8 = b'a';
}

impl ClassNameKey {
    /// The key of `name`, or `None` when it is longer than [`CLASS_NAME_MAX`] bytes.
    pub fn new(kind: u8, name: &str) -> Option<Self> {
        let bytes = name.as_bytes();
        if bytes.len() > CLASS_NAME_MAX {
            return None;
        }
        let mut key = Self {
            kind,
            name: [0; CLASS_NAME_MAX],
        };
        key.name[..bytes.len()].copy_from_slice(bytes);
        Some(key)
    }

    /// The name, up to the first zero byte.
    pub fn name_bytes(&self) -> &[u8] {
        let len = self
            .name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(CLASS_NAME_MAX);
        &self.name[..len]
    }
}
