//! The one list of the datapath's BPF maps: each map's name, kind, key and value types,
//! whether the daemon pins it, and its size where that is fixed.
//!
//! The list is written once, in [`for_each_map`], which hands it to a macro of each side:
//! the kernel side declares each map from it as a `#[btf_map]` static of the same name in
//! `classifier-ebpf/src/maps.rs` (the name of the static is the map's name in the object);
//! here it becomes the [`MapDef`] constants and [`ALL`], by which the daemon pins the maps
//! marked [`Pinning::Pinned`] and gets typed handles (`classifier-user/src/bpf_maps.rs`). A
//! test of the daemon checks this list against the built object: every map in it is here,
//! of the same kind, key and value size and size, and nothing listed is missing.
//!
//! Names are at most 15 bytes: the kernel keeps that many of a map's name
//! (`BPF_OBJ_NAME_LEN`), and `bpftool` shows no more. That is why the protocol categories
//! are `PROTO_CATS`, the reassembly buffers `REASM` and the exceptions `CLIENT_EXC`; their
//! pinned names are also part of the upgrade contract (a daemon adopts the maps an older
//! one pinned, by name), so they keep these names.

use core::marker::PhantomData;

use crate::{
    classify::app,
    config::{ClassResult, ClassifyJob, Config, PeerKey, PortKey, SourceQuota, StreamBuf, tail},
    domain::DomainEntry,
    flow::{FlowEntry, FlowKey, FragmentKey},
    names::{FlowName, NameKey},
    nat::{NAT_SLOTS_ENTRIES, NatConfig, NatSlot, PublicSource},
    parse::PacketMeta,
    policy::{ActionEntry, ActionKey, ClassNameKey, ExceptionKey, GroupPrefixData, VlanKey},
    shaping::{BucketKey, ClientClassKey, MAX_SHAPE_CLASSES, ShapeRule, TokenBucket},
    stats::Stat,
};

/// The kind of a map, as its `bpf_map_type` number (the kernel's UAPI: these never change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MapKind {
    Hash = 1,
    Array = 2,
    ProgramArray = 3,
    PerCpuArray = 6,
    LruHash = 9,
    LpmTrie = 11,
    RingBuf = 27,
}

impl MapKind {
    /// The size of a key of type `K` in a map of this kind: an LPM trie's keys carry the
    /// prefix length (a `u32`) before the data.
    const fn key_size(self, key: usize) -> usize {
        match self {
            MapKind::LpmTrie => 4 + key,
            _ => key,
        }
    }
}

/// Whether the daemon pins a map (and so a restarted daemon adopts it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinning {
    /// Pinned under the pin directory by its name: the map outlives the daemon.
    Pinned,
    /// The loaded object's own: per-CPU scratch of the kernel side.
    Private,
}

/// A map's entry in the list, without its types: what the test against the object and the
/// pinning read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub kind: MapKind,
    pub pinning: Pinning,
    /// Bytes of a key as the kernel sees it.
    pub key_size: usize,
    /// Bytes of a value; `None` for scratch whose type the kernel side alone defines.
    pub value_size: Option<usize>,
    /// `None` where the loader sizes the map (the domain table).
    pub max_entries: Option<usize>,
}

/// A map's entry in the list, with its key type `K` and value type `V`: the user side's
/// typed handles take these, so a map is never read with types other than its own.
pub struct MapDef<K, V> {
    pub spec: MapSpec,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for MapDef<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for MapDef<K, V> {}

impl<K, V> MapDef<K, V> {
    const fn new(
        name: &'static str,
        kind: MapKind,
        pinning: Pinning,
        max_entries: Option<usize>,
        value_size: Option<usize>,
    ) -> Self {
        Self {
            spec: MapSpec {
                name,
                kind,
                pinning,
                key_size: kind.key_size(size_of::<K>()),
                value_size,
                max_entries,
            },
            _types: PhantomData,
        }
    }

    /// The map's name in the object and under the pin directory.
    pub const fn name(&self) -> &'static str {
        self.spec.name
    }
}

/// An IPv6 (or IPv4-mapped) address, the key of the per-client maps.
pub type Address = [u8; 16];

/// The value type of a per-CPU scratch map whose type the kernel side defines for itself
/// (listed as `_`): no value of it crosses to the user side.
pub enum KernelOnly {}

macro_rules! value_type {
    (_) => {
        KernelOnly
    };
    ($value:tt) => {
        $value
    };
}

macro_rules! value_size {
    (_) => {
        None
    };
    ($value:tt) => {
        Some(size_of::<$value>())
    };
}

/// Declares each map as a [`MapDef`] constant named as the map, and [`ALL`] listing them
/// (the user side's callback of [`for_each_map`]).
macro_rules! map_defs {
    ($(
        $(#[$doc:meta])*
        $name:ident: $kind:ident<$key:tt, $value:tt>, $pinning:ident, $sizing:ident($entries:expr);
    )*) => {
        $(
            $(#[$doc])*
            pub const $name: MapDef<$key, value_type!($value)> = MapDef::new(
                stringify!($name),
                MapKind::$kind,
                Pinning::$pinning,
                max_entries!($sizing, $entries),
                value_size!($value),
            );
        )*

        /// Every map of the BPF object.
        pub const ALL: &[MapSpec] = &[$($name.spec),*];
    };
}

/// A map's size as the list gives it: `Fixed(n)` entries, or `ByLoader(n)`: sized by the
/// loader, `n` being what the object declares.
macro_rules! max_entries {
    (Fixed, $entries:expr) => {
        Some($entries)
    };
    (ByLoader, $entries:expr) => {
        None
    };
}

/// The names of the maps the daemon pins under its pin directory. The tail-call table is
/// pinned too: the kernel empties a program array once no process or pin holds it, which
/// would stop classification while a restarted daemon is on its way; a new daemon writes
/// its own programs into it.
pub fn pinned_names() -> impl Iterator<Item = &'static str> {
    ALL.iter()
        .filter(|map| map.pinning == Pinning::Pinned)
        .map(|map| map.name)
}

/// The list: hands every map's entry to `$callback!`, which declares the maps its side's
/// way: [`map_defs`] here (the user side's typed [`MapDef`]s and [`ALL`]), and
/// `classifier-ebpf/src/maps.rs` the kernel side's `#[btf_map]` statics, so that a map is
/// named, typed and sized once. An entry is
///
/// `NAME: Kind<Key, Value>, Pinned | Private, Fixed(max entries) | ByLoader(declared);`
///
/// with `Kind` a [`MapKind`], each type a single token (`_`: a value type the kernel side
/// defines for itself, see [`KernelOnly`]), and the types and sizes resolved where the
/// callback expands (each side imports them). Array-like maps have `u32` keys; the ring
/// buffer's size is in bytes. (The docs are plain text, not links: they expand in both
/// crates.)
#[macro_export]
macro_rules! for_each_map {
    ($callback:ident) => {
        $callback! {
            /// The flow table: per-flow counters and classification, one entry per
            /// 5-tuple, client side first. LRU so that a full table evicts the coldest flow
            /// instead of refusing new ones; the daemon reads the entries out before they
            /// age.
            FLOWS: LruHash<FlowKey, FlowEntry>, Pinned, Fixed(FLOWS_MAX_ENTRIES);
            /// A new flow's first entry, built per CPU before it is inserted into `FLOWS`
            /// (off the 512-byte stack, which TC's shaping path needs). Scratch.
            NEW_FLOW: PerCpuArray<u32, FlowEntry>, Private, Fixed(1);
            /// Global counters indexed by `Stat`, per CPU so that counting costs no atomic
            /// operation.
            STATS: PerCpuArray<u32, u64>, Pinned, Fixed(Stat::COUNT as usize);
            /// Domain suffix hash → category and application (`classifier_common::domain`).
            /// Sized by the loader to the policy's lists (up to millions of entries); a
            /// lookup costs the same at any size.
            DOMAINS: Hash<u64, DomainEntry>, Pinned, ByLoader(DOMAINS_DEFAULT_ENTRIES);
            /// (protocol, server port) → category and application, for flows no name
            /// classifies.
            PORTS: Hash<PortKey, ClassResult>, Pinned, Fixed(PORTS_MAX_ENTRIES);
            /// Built-in protocol (app id) → the category the policy gives it (e.g.
            /// bittorrent → file sharing, quic → quic).
            PROTO_CATS: Array<u32, u16>, Pinned, Fixed(app::BUILTIN_COUNT as usize);
            /// BitTorrent peers (client, peer address, port) seen recently → when (boot ns):
            /// later flows to them are BitTorrent too. Per client: one host's evidence never
            /// classifies another's flows. LRU: old peers fall out by themselves.
            PEERS: LruHash<PeerKey, u64>, Pinned, Fixed(PEERS_MAX_ENTRIES);
            /// Flows whose ClientHello or request spans segments (in order or not) → the
            /// bytes so far; kept after the name is read while the flow is watched for a
            /// second version. LRU: the least recently used entry is a stalled one, not one
            /// being filled; each client's starts are metered by `SOURCES`.
            REASM: LruHash<FlowKey, StreamBuf>, Pinned, Fixed(REASSEMBLY_MAX_ENTRIES);
            /// A stream buffer per CPU for the common case, a ClientHello or request in one
            /// segment: too big for the 512-byte stack, and no per-flow entry is needed
            /// when it parses at once.
            SCRATCH: PerCpuArray<u32, StreamBuf>, Pinned, Fixed(1);
            /// A copy of a segment that covers bytes already held, per CPU, to compare them
            /// before the segment's checksum is trusted and its bytes placed.
            SEGMENT: PerCpuArray<u32, StreamBuf>, Pinned, Fixed(1);
            /// A ClientHello joined from several TLS records, per CPU (parsed, then
            /// dropped).
            DEFRAG: PerCpuArray<u32, StreamBuf>, Pinned, Fixed(1);
            /// Per-CPU scratch: the key of a fragmented datagram being looked up or
            /// remembered, and the record walk of a ClientHello spread over TLS records
            /// (off the 512-byte stack).
            SCRATCH_KEYS: PerCpuArray<u32, _>, Private, Fixed(1);
            /// The headers of the packet `classify_upload` is classifying, per CPU: its
            /// paths need the 512-byte stack for themselves.
            PACKET: PerCpuArray<u32, PacketMeta>, Private, Fixed(1);
            /// Per-CPU state of the kernel side's `bpf_loop` bodies. Kept in map memory,
            /// not on the stack: the verifier then reads every field as an unknown value and
            /// checks a body once, instead of walking it again for each value a stack field
            /// could hold (which, for the HTTP scanner, ran past its million-instruction
            /// budget).
            LOOPS: PerCpuArray<u32, _>, Private, Fixed(1);
            /// One element per step of the longest loop: the legacy build's loops run their
            /// body once per element (`bpf_for_each_map_elem`, for kernels without
            /// `bpf_loop`). Its values are never read; the modern build does not use it.
            LOOP_STEPS: Array<u32, u8>, Private, Fixed(LOOP_STEPS_MAX);
            /// Client address → its quotas of new flows, reassembly buffers and QUIC
            /// Initials (`SourceQuota`). LRU: a client gone long enough to have its quota
            /// back is the one that goes.
            SOURCES: LruHash<Address, SourceQuota>, Pinned, Fixed(SOURCES_MAX_ENTRIES);
            /// The LAN's prefixes (IPv4-mapped, LPM): with `[datapath] lan_prefixes` set,
            /// packets from other sources make no flow and are dropped.
            LAN_PREFIXES: LpmTrie<Address, u8>, Pinned, Fixed(LAN_PREFIXES_MAX_ENTRIES);
            /// A fragmented datagram (source, destination, protocol, identification) → the
            /// flow its first fragment named, so later fragments are counted and judged
            /// with it. LRU: a datagram's fragments arrive within milliseconds of each
            /// other.
            FRAGMENTS: LruHash<FragmentKey, FlowKey>, Pinned, Fixed(FRAGMENTS_MAX_ENTRIES);
            /// Events to the daemon (`classifier_common::event`): classified flows (with
            /// their names), QUIC Initials, tracker replies, client class requests. Its size
            /// is in bytes.
            EVENTS: RingBuf<(), ()>, Pinned, Fixed(EVENTS_BYTES);
            /// Flow (and which of its names) → the server name it was classified by
            /// (`classifier_common::names`; SNI, Host; QUIC names from the daemon),
            /// outside the daemon's memory so that names outlive it: the daemon reads them
            /// back after a restart and removes a flow's once it is recorded. LRU: past its
            /// size, the flows named longest ago lose their kernel copy first.
            ///
            /// Pinned, so its layout is part of the upgrade contract: a change to `NameKey`
            /// or `FlowName` gets a new map name (`NAMES2`, ...), so that a new daemon never
            /// adopts an old map it would misread (the loader also refuses a pinned map
            /// whose type, key or value size differs from this object's).
            NAMES: LruHash<NameKey, FlowName>, Pinned, Fixed(NAMES_MAX_ENTRIES);
            /// A `NAMES` key and value built per CPU before they are inserted (272 bytes
            /// would not fit the 512-byte stack beside a classifier's locals). Scratch.
            NAME_SLOT: PerCpuArray<u32, _>, Private, Fixed(1);
            /// Classes the daemon worked out for the datapath (QUIC: after decrypting the
            /// Initial), picked up by the flow's next packet.
            CLASS_RESULTS: LruHash<FlowKey, ClassResult>, Pinned, Fixed(CLASS_RESULTS_MAX_ENTRIES);
            /// The datapath's settings (one `Config`), written by the daemon.
            CONFIG: Array<u32, Config>, Pinned, Fixed(1);
            /// Programs the fast path tail-calls (`classifier_common::config::tail`).
            CLASSIFIERS: ProgramArray<u32, u32>, Pinned, Fixed(tail::COUNT as usize);
            /// Hand-over between the classification programs of one packet
            /// (`ClassifyJob`), per CPU: one CPU runs them all.
            JOBS: PerCpuArray<u32, ClassifyJob>, Private, Fixed(1);
            /// (table, client prefix, IPv4-mapped) → group id: the longest prefix wins.
            GROUP_PREFIXES: LpmTrie<GroupPrefixData, u16>, Pinned, Fixed(GROUP_PREFIXES_MAX_ENTRIES);
            /// (table, VLAN id) → group id (VLANs are looked at before prefixes).
            GROUP_VLANS: Hash<VlanKey, u16>, Pinned, Fixed(GROUP_VLANS_MAX_ENTRIES);
            /// (table, group, category) → verdict (`classifier_common::policy`); two
            /// tables, the generation's low bit picks one. (group, category) pairs without
            /// an entry are allowed.
            ACTIONS: Hash<ActionKey, ActionEntry>, Pinned, Fixed(ACTIONS_MAX_ENTRIES);
            /// (client, category, table) triples an unexpired exception allows.
            CLIENT_EXC: Hash<ExceptionKey, u8>, Pinned, Fixed(CLIENT_EXCEPTIONS_MAX_ENTRIES);
            /// The policy generation: bumped by the daemon at every change of tables,
            /// period or exceptions; its low bit is the action table in force.
            POLICY_GEN: Array<u32, u32>, Pinned, Fixed(1);
            /// (table, shape class) → the shaping rule (`shaper_index`); written into the
            /// idle table with the actions, in force with the same generation.
            SHAPERS: Array<u32, ShapeRule>, Pinned, Fixed(2 * MAX_SHAPE_CLASSES as usize);
            /// Token buckets: clients' short-clip allowances and minutes, and the policer's
            /// buckets. LRU: a bucket idle for long has refilled, and a new one starts
            /// full, so losing it changes nothing.
            BUCKETS: LruHash<BucketKey, TokenBucket>, Pinned, Fixed(BUCKETS_MAX_ENTRIES);
            /// (client, shape class) → the minor id of the client's own HTB class, made by
            /// the daemon.
            CLIENT_CLASSES: Hash<ClientClassKey, u16>, Pinned, Fixed(CLIENT_CLASSES_MAX_ENTRIES);
            /// Category or application name → its id (`ClassNameKey`), kept by the daemon
            /// beside the flow table so that ids mean the same across reloads and restarts.
            /// The datapath never reads it.
            CLASS_IDS: Hash<ClassNameKey, u16>, Pinned, Fixed(CLASS_IDS_MAX_ENTRIES);
            /// The NAT hand-over's settings (one `NatConfig`): its mark mask (all zero:
            /// off).
            NAT_CONFIG: Array<u32, NatConfig>, Pinned, Fixed(1);
            /// Slot number (in the skb mark) → the flow that holds it (`NatSlot`).
            NAT_SLOTS: Array<u32, NatSlot>, Pinned, Fixed(NAT_SLOTS_ENTRIES);
            /// Flow → the translated source its uploads left the WAN with
            /// (`PublicSource`). LRU, as large as the flow table; the daemon takes a flow's
            /// entry out with its record.
            NAT_PUBLIC: LruHash<FlowKey, PublicSource>, Pinned, Fixed(NAT_PUBLIC_MAX_ENTRIES);
        }
    };
}

for_each_map!(map_defs);

/// Steps of the longest loop of the kernel side: the HTTP scan (`parse::http::MAX_SCAN`),
/// one more than a segment's comparison (`STREAM_SLACK - 1` bytes).
pub const LOOP_STEPS_MAX: usize = crate::parse::http::MAX_SCAN;

/// 256 Ki flows: a council site with a few thousand clients keeps well under this, and an
/// LRU map evicts the least recently used flow rather than refusing new ones.
/// Memory: 256 Ki × (40 B key + 112 B value + ~64 B kernel overhead) ≈ 54 MiB.
pub const FLOWS_MAX_ENTRIES: usize = 262_144;

/// Size the object declares for `DOMAINS`; the loader sizes the map to the compiled lists.
pub const DOMAINS_DEFAULT_ENTRIES: usize = 65_536;

/// Every TCP and UDP port could have a rule.
pub const PORTS_MAX_ENTRIES: usize = 131_072;

pub const PEERS_MAX_ENTRIES: usize = 65_536;

/// Reassembly entries live only while a flow is being classified; at ~6 KiB each, 2 Ki
/// entries are ~12 MiB.
pub const REASSEMBLY_MAX_ENTRIES: usize = 2048;

/// 64 Ki clients; LRU, so a client idle long enough to have a full quota again is the one
/// that goes. ~4.5 MiB.
pub const SOURCES_MAX_ENTRIES: usize = 65_536;

pub const LAN_PREFIXES_MAX_ENTRIES: usize = 1024;

pub const FRAGMENTS_MAX_ENTRIES: usize = 8192;

/// 128 Ki names, half the flow table: names belong to TLS, HTTP and QUIC flows, while DNS,
/// NTP and other unnamed datagrams fill much of the rest. Past that, the least recently
/// named flows lose their kernel copy (the running daemon still holds theirs in memory).
/// Memory: 48 MiB by the kernel's accounting (`datapath-bench` prints it): 128 Ki × 384 B a name.
pub const NAMES_MAX_ENTRIES: usize = 131_072;

/// 4 MiB: ~13,000 classification events or ~2,000 QUIC Initials between two reads.
pub const EVENTS_BYTES: usize = 4 << 20;

pub const CLASS_RESULTS_MAX_ENTRIES: usize = 16_384;

pub const GROUP_PREFIXES_MAX_ENTRIES: usize = 16_384;
pub const GROUP_VLANS_MAX_ENTRIES: usize = 4096;
pub const ACTIONS_MAX_ENTRIES: usize = 131_072;
pub const CLIENT_EXCEPTIONS_MAX_ENTRIES: usize = 16_384;

/// 64 Ki buckets: an allowance and a policer bucket for each of 32 Ki clients; LRU, so a
/// bucket idle long enough to have refilled anyway is the one that goes.
pub const BUCKETS_MAX_ENTRIES: usize = 65_536;
/// Minor ids 0x100..=0xffff: at most this many per-client classes at once.
pub const CLIENT_CLASSES_MAX_ENTRIES: usize = 0xff00;

pub const CLASS_IDS_MAX_ENTRIES: usize = 4096;

pub const NAT_PUBLIC_MAX_ENTRIES: usize = FLOWS_MAX_ENTRIES;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_fit_the_kernels_name_length() {
        for (i, map) in ALL.iter().enumerate() {
            assert!(
                map.name.len() <= 15,
                "{}: the kernel keeps 15 bytes",
                map.name
            );
            assert!(
                ALL[..i].iter().all(|other| other.name != map.name),
                "{} listed twice",
                map.name
            );
        }
    }

    /// The maps a released daemon pins: a new one adopts them by these names, so a map
    /// renamed here would be a new, empty map after an upgrade (flow counters, names and
    /// class ids lost). A rename needs a reason and a note in docs/upgrading (or the like).
    #[test]
    fn the_pinned_names_are_those_released_daemons_pin() {
        let released = [
            "CLASSIFIERS",
            "FLOWS",
            "STATS",
            "DOMAINS",
            "PORTS",
            "PROTO_CATS",
            "PEERS",
            "REASM",
            "SCRATCH",
            "SEGMENT",
            "DEFRAG",
            "SOURCES",
            "LAN_PREFIXES",
            "FRAGMENTS",
            "EVENTS",
            "NAMES",
            "CLASS_RESULTS",
            "CONFIG",
            "GROUP_PREFIXES",
            "GROUP_VLANS",
            "ACTIONS",
            "CLIENT_EXC",
            "POLICY_GEN",
            "SHAPERS",
            "BUCKETS",
            "CLIENT_CLASSES",
            "CLASS_IDS",
            "NAT_CONFIG",
            "NAT_SLOTS",
            "NAT_PUBLIC",
        ];
        let mut pinned: std::vec::Vec<&str> = pinned_names().collect();
        let mut expected = released.to_vec();
        pinned.sort_unstable();
        expected.sort_unstable();
        assert_eq!(pinned, expected);
    }

    #[test]
    fn an_lpm_key_carries_its_prefix_length() {
        assert_eq!(LAN_PREFIXES.spec.key_size, 4 + 16);
        assert_eq!(FLOWS.spec.key_size, size_of::<FlowKey>());
        assert_eq!(SCRATCH_KEYS.spec.value_size, None);
        assert_eq!(EVENTS.spec.value_size, Some(0));
    }
}
