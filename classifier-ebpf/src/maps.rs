//! Every map of the datapath, declared from the one list in `classifier_common::maps`
//! ([`classifier_common::for_each_map`]): each entry becomes a `#[btf_map]` static of the
//! map's name, of the aya-ebpf type its kind, types and size give ([`declare_maps`]). The
//! daemon pins them and reads them by the same list; a test of the daemon checks this
//! object's maps against it.
//!
//! The daemon pins these under its pin directory (`/sys/fs/bpf/classifier` by default) so
//! that flow state and the policy tables outlive the daemon process.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    macros::btf_map,
};
use classifier_common::{
    classify::app,
    config::{ClassResult, ClassifyJob, Config, PeerKey, PortKey, SourceQuota, StreamBuf, tail},
    domain::DomainEntry,
    flow::{FlowEntry, FlowKey, FragmentKey},
    for_each_map,
    maps::{
        ACTIONS_MAX_ENTRIES, Address, BUCKETS_MAX_ENTRIES, CLASS_IDS_MAX_ENTRIES,
        CLASS_RESULTS_MAX_ENTRIES, CLIENT_CLASSES_MAX_ENTRIES, CLIENT_EXCEPTIONS_MAX_ENTRIES,
        DOMAINS_DEFAULT_ENTRIES, EVENTS_BYTES, FLOWS_MAX_ENTRIES, FRAGMENTS_MAX_ENTRIES,
        GROUP_PREFIXES_MAX_ENTRIES, GROUP_VLANS_MAX_ENTRIES, LAN_PREFIXES_MAX_ENTRIES,
        LOOP_STEPS_MAX, NAMES_MAX_ENTRIES, NAT_PUBLIC_MAX_ENTRIES, PEERS_MAX_ENTRIES,
        PORTS_MAX_ENTRIES, REASSEMBLY_MAX_ENTRIES, SOURCES_MAX_ENTRIES,
    },
    names::{FlowName, NameKey},
    nat::{NAT_SLOTS_ENTRIES, NatConfig, NatSlot, PublicSource},
    parse::{PacketMeta, http::RequestScanner},
    policy::{ActionEntry, ActionKey, ClassNameKey, ExceptionKey, GroupPrefixData, VlanKey},
    shaping::{BucketKey, ClientClassKey, MAX_SHAPE_CLASSES, ShapeRule, TokenBucket},
    stats::Stat,
};

/// Sparse tables grow as the daemon fills them instead of reserving their maximum: every
/// `Hash` of the list (the policy's tables; the LRU maps and tries need no such flag).
const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

/// Declares each map of the list as a `#[btf_map]` static (the callback of
/// [`for_each_map`]); the map's kind picks the aya-ebpf type ([`btf_map_static`]).
macro_rules! declare_maps {
    ($(
        $(#[$doc:meta])*
        $name:ident: $kind:ident<$key:tt, $value:tt>, $pinning:ident, $sizing:ident($entries:expr);
    )*) => {
        $(
            btf_map_static!($(#[$doc])* $name, $kind, $key, value_type!($name, $value), $entries);
        )*
    };
}

/// One map's static, by its kind. The object declares a loader-sized map (`ByLoader`) at
/// its declared size too. An array's key is its `u32` index; the ring buffer's size is in
/// bytes.
macro_rules! btf_map_static {
    ($(#[$doc:meta])* $name:ident, LruHash, $key:ty, $value:ty, $entries:expr) => {
        $(#[$doc])*
        #[btf_map]
        pub static $name: LruHashMap<$key, $value, { $entries }> = LruHashMap::new();
    };
    ($(#[$doc:meta])* $name:ident, Hash, $key:ty, $value:ty, $entries:expr) => {
        $(#[$doc])*
        #[btf_map]
        pub static $name: HashMap<$key, $value, { $entries }, NO_PREALLOC> = HashMap::new();
    };
    ($(#[$doc:meta])* $name:ident, LpmTrie, $key:ty, $value:ty, $entries:expr) => {
        $(#[$doc])*
        #[btf_map]
        pub static $name: LpmTrie<$key, $value, { $entries }> = LpmTrie::new();
    };
    ($(#[$doc:meta])* $name:ident, Array, $key:ty, $value:ty, $entries:expr) => {
        $(#[$doc])*
        #[btf_map]
        pub static $name: Array<$value, { $entries }> = Array::new();
    };
    ($(#[$doc:meta])* $name:ident, PerCpuArray, $key:ty, $value:ty, $entries:expr) => {
        $(#[$doc])*
        #[btf_map]
        pub static $name: PerCpuArray<$value, { $entries }> = PerCpuArray::new();
    };
    ($(#[$doc:meta])* $name:ident, ProgramArray, $key:ty, $value:ty, $entries:expr) => {
        $(#[$doc])*
        #[btf_map]
        pub static $name: ProgramArray<{ $entries }> = ProgramArray::new();
    };
    ($(#[$doc:meta])* $name:ident, RingBuf, $key:ty, $value:ty, $entries:expr) => {
        $(#[$doc])*
        #[btf_map]
        pub static $name: RingBuf<u8, { $entries }> = RingBuf::new();
    };
}

/// A map's value type: the list's, or for the scratch maps it leaves to this side (`_`),
/// the type defined below.
macro_rules! value_type {
    (SCRATCH_KEYS, _) => {
        ScratchKeys
    };
    (LOOPS, _) => {
        LoopState
    };
    (NAME_SLOT, _) => {
        NameSlot
    };
    ($name:ident, $value:tt) => {
        $value
    };
}

for_each_map!(declare_maps);

/// What [`SCRATCH_KEYS`] holds.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ScratchKeys {
    pub fragment: FragmentKey,
    pub plan: classifier_common::parse::tls::RecordPlan,
    pub walk: classifier_common::parse::tls::RecordWalk,
    /// The record walk's status, packed (see `classify::stream`).
    pub status: u32,
    pub _pad: u32,
}

/// What [`LOOPS`] holds: one field per loop.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LoopState {
    /// A [`RequestScanner`] (see [`LoopState::http`]), as plain bytes: the map's BTF must
    /// not describe a Rust enum with data, which the kernel's BTF checks refuse.
    pub http_bytes: [u64; HTTP_SCANNER_WORDS],
    pub options: classifier_common::parse::tcp::OptionWalk,
    pub suffix: classifier_common::domain::SuffixHash,
    pub best: DomainEntry,
    /// Whether `best` holds a match.
    pub found: u8,
    /// A compared byte differed.
    pub differ: u8,
    /// Bytes of TLS records joined so far, and whether a copy failed.
    pub written: u16,
    pub failed: u8,
    pub _pad: u8,
    /// A header copied out of the frame to be summed (checksums), 60 bytes at most.
    pub header: [u32; 15],
    /// The legacy build's loop in progress: how many steps it takes (`bounded_loop`).
    pub steps: u32,
    /// The ClientHello extension walk and what it found.
    pub extensions: classifier_common::parse::tls::ExtensionWalk,
    pub hello: classifier_common::parse::tls::ClientHello,
}

/// Room for a [`RequestScanner`] in 8-byte words.
const HTTP_SCANNER_WORDS: usize = size_of::<RequestScanner>().div_ceil(8);

impl LoopState {
    /// The HTTP scanner kept in `http_bytes`.
    #[inline(always)]
    pub fn http(state: *mut LoopState) -> *mut RequestScanner {
        const {
            assert!(size_of::<RequestScanner>() <= HTTP_SCANNER_WORDS * 8);
            assert!(align_of::<RequestScanner>() <= 8);
        };
        // SAFETY: only the address is taken; the bytes are big and aligned enough (above).
        unsafe { (&raw mut (*state).http_bytes).cast() }
    }
}

/// What [`NAME_SLOT`] holds.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NameSlot {
    pub key: NameKey,
    pub _pad: u32,
    pub name: FlowName,
}
