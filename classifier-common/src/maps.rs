//! The one list of the datapath's BPF maps: each map's name, kind, key and value types,
//! whether the daemon pins it, and its size where that is fixed.
//!
//! The kernel side declares each map as a `static` of the same name in
//! `classifier-ebpf/src/maps.rs` (the name of the static is the map's name in the object);
//! the daemon pins the maps marked [`Pinning::Pinned`] and gets typed handles by naming
//! an entry here (`classifier-user/src/bpf_maps.rs`). A test of the daemon checks this list
//! against the built object: every map in it is here, of the same kind, key and value
//! size and size, and nothing listed is missing.
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

/// Declares each map as a [`MapDef`] constant named as the map, and [`ALL`] listing them.
macro_rules! maps {
    ($(
        $(#[$doc:meta])*
        $name:ident: $kind:ident<$key:tt, $value:tt>, $pinning:ident, $entries:expr;
    )*) => {
        $(
            $(#[$doc])*
            pub const $name: MapDef<$key, value_type!($value)> = MapDef::new(
                stringify!($name),
                MapKind::$kind,
                Pinning::$pinning,
                $entries,
                value_size!($value),
            );
        )*

        /// Every map of the BPF object.
        pub const ALL: &[MapSpec] = &[$($name.spec),*];
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

type Address = [u8; 16];

maps! {
    /// Per-flow counters and classification: one entry per 5-tuple, client side first.
    /// LRU so that a full table evicts the coldest flow instead of refusing new ones.
    FLOWS: LruHash<FlowKey, FlowEntry>, Pinned, Some(FLOWS_MAX_ENTRIES);
    /// A new flow's first entry, built per CPU before it is inserted into `FLOWS`.
    NEW_FLOW: PerCpuArray<u32, FlowEntry>, Private, Some(1);
    /// Global per-CPU counters indexed by [`Stat`].
    STATS: PerCpuArray<u32, u64>, Pinned, Some(Stat::COUNT as usize);
    /// Domain suffix hash → category and application ([`crate::domain`]); sized by the
    /// loader to the policy's lists.
    DOMAINS: Hash<u64, DomainEntry>, Pinned, None;
    /// (protocol, port) → category and application.
    PORTS: Hash<PortKey, ClassResult>, Pinned, Some(PORTS_MAX_ENTRIES);
    /// Built-in protocol (app id) → the category the policy gives it (e.g. bittorrent →
    /// file sharing, quic → quic).
    PROTO_CATS: Array<u32, u16>, Pinned, Some(app::BUILTIN_COUNT as usize);
    /// BitTorrent peers (client, address, port) seen recently: later flows to them are
    /// BitTorrent too.
    PEERS: LruHash<PeerKey, u64>, Pinned, Some(PEERS_MAX_ENTRIES);
    /// Per-flow reassembly of a ClientHello or HTTP request that spans segments.
    REASM: LruHash<FlowKey, StreamBuf>, Pinned, Some(REASSEMBLY_MAX_ENTRIES);
    /// Per-CPU scratch stream buffer for a single-segment ClientHello or request.
    SCRATCH: PerCpuArray<u32, StreamBuf>, Pinned, Some(1);
    /// Per-CPU copy of a segment that overlaps bytes already held, to compare them.
    SEGMENT: PerCpuArray<u32, StreamBuf>, Pinned, Some(1);
    /// Per-CPU buffer for a ClientHello joined from several TLS records.
    DEFRAG: PerCpuArray<u32, StreamBuf>, Pinned, Some(1);
    /// Per-CPU keys of fragmented datagrams and TLS record walks.
    SCRATCH_KEYS: PerCpuArray<u32, _>, Private, Some(1);
    /// Per-CPU headers of the packet being classified.
    PACKET: PerCpuArray<u32, PacketMeta>, Private, Some(1);
    /// Per-CPU state of the kernel side's `bpf_loop` bodies.
    LOOPS: PerCpuArray<u32, _>, Private, Some(1);
    /// One element per step of the longest loop: the legacy build's loops run their body
    /// once per element (`bpf_for_each_map_elem`, for kernels without `bpf_loop`). Its
    /// values are never read.
    LOOP_STEPS: Array<u32, u8>, Private, Some(LOOP_STEPS_MAX);
    /// Per-client quotas of new flows, reassembly buffers and QUIC Initials
    /// ([`crate::config::SourceQuota`]).
    SOURCES: LruHash<Address, SourceQuota>, Pinned, Some(SOURCES_MAX_ENTRIES);
    /// The LAN's prefixes (IPv4-mapped, LPM): with `[datapath] lan_prefixes` set, packets
    /// from other sources make no flow and are dropped.
    LAN_PREFIXES: LpmTrie<Address, u8>, Pinned, Some(LAN_PREFIXES_MAX_ENTRIES);
    /// A fragmented datagram (source, destination, protocol, identification) → the flow
    /// its first fragment named, so later fragments are counted and judged with it.
    FRAGMENTS: LruHash<FragmentKey, FlowKey>, Pinned, Some(FRAGMENTS_MAX_ENTRIES);
    /// Ring buffer of [`crate::event`]s to the daemon (its size in bytes).
    EVENTS: RingBuf<(), ()>, Pinned, Some(EVENTS_BYTES);
    /// Flow (and which of its names) → the server name it was classified by
    /// ([`crate::names`]): written by the datapath as it reads a name (and by the daemon
    /// for QUIC), so that names survive the daemon. LRU.
    ///
    /// Pinned, so its layout is part of the upgrade contract: a change to
    /// [`crate::names::NameKey`] or [`crate::names::FlowName`] gets a new map name
    /// (`NAMES2`, ...), so that a new daemon never adopts an old map it would misread (the
    /// loader also refuses a pinned map whose type, key or value size differs from this
    /// object's).
    NAMES: LruHash<NameKey, FlowName>, Pinned, Some(NAMES_MAX_ENTRIES);
    /// A `NAMES` key and value built per CPU before they are inserted.
    NAME_SLOT: PerCpuArray<u32, _>, Private, Some(1);
    /// Classifications the daemon made for the datapath (QUIC: after decrypting the
    /// Initial).
    CLASS_RESULTS: LruHash<FlowKey, ClassResult>, Pinned, Some(CLASS_RESULTS_MAX_ENTRIES);
    /// One [`crate::config::Config`].
    CONFIG: Array<u32, Config>, Pinned, Some(1);
    /// Tail-call targets of the fast path ([`crate::config::tail`]).
    CLASSIFIERS: ProgramArray<u32, u32>, Pinned, Some(tail::COUNT as usize);
    /// Per-CPU hand-over between the classification programs
    /// ([`crate::config::ClassifyJob`]).
    JOBS: PerCpuArray<u32, ClassifyJob>, Private, Some(1);
    /// Client prefix (IPv4-mapped, LPM) → group id.
    GROUP_PREFIXES: LpmTrie<GroupPrefixData, u16>, Pinned, Some(GROUP_PREFIXES_MAX_ENTRIES);
    /// VLAN id → group id.
    GROUP_VLANS: Hash<VlanKey, u16>, Pinned, Some(GROUP_VLANS_MAX_ENTRIES);
    /// (table, group, category) → verdict ([`crate::policy`]).
    ACTIONS: Hash<ActionKey, ActionEntry>, Pinned, Some(ACTIONS_MAX_ENTRIES);
    /// (client, category, table) → allowed by an exception.
    CLIENT_EXC: Hash<ExceptionKey, u8>, Pinned, Some(CLIENT_EXCEPTIONS_MAX_ENTRIES);
    /// One u32: the policy generation (its low bit picks the action table in force).
    POLICY_GEN: Array<u32, u32>, Pinned, Some(1);
    /// (table, shape class) → [`crate::shaping::ShapeRule`], double-buffered with the
    /// actions.
    SHAPERS: Array<u32, ShapeRule>, Pinned, Some(2 * MAX_SHAPE_CLASSES as usize);
    /// Token buckets: clients' short-clip allowances and the policer's buckets.
    BUCKETS: LruHash<BucketKey, TokenBucket>, Pinned, Some(BUCKETS_MAX_ENTRIES);
    /// (client, shape class) → the minor id of the client's own HTB class.
    CLIENT_CLASSES: Hash<ClientClassKey, u16>, Pinned, Some(CLIENT_CLASSES_MAX_ENTRIES);
    /// Category or application name → its id, for as long as the flow table lives
    /// ([`crate::policy::ClassNameKey`]). The datapath never reads it.
    CLASS_IDS: Hash<ClassNameKey, u16>, Pinned, Some(CLASS_IDS_MAX_ENTRIES);
    /// One [`crate::nat::NatConfig`]: the NAT hand-over's mark mask (all zero: off).
    NAT_CONFIG: Array<u32, NatConfig>, Pinned, Some(1);
    /// Slot number (in the skb mark) → the flow that holds it ([`crate::nat::NatSlot`]).
    NAT_SLOTS: Array<u32, NatSlot>, Pinned, Some(NAT_SLOTS_ENTRIES);
    /// Flow → the translated source its uploads left the WAN with
    /// ([`crate::nat::PublicSource`]). LRU, as large as the flow table; the daemon takes a
    /// flow's entry out with its record.
    NAT_PUBLIC: LruHash<FlowKey, PublicSource>, Pinned, Some(NAT_PUBLIC_MAX_ENTRIES);
}

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
