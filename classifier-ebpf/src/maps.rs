//! Every map of the datapath, in one place. Each is an entry of the list in
//! `classifier_common::maps` (a static's name is the map's name there; sizes come from
//! there too), which the daemon pins and reads by; a test of the daemon checks this
//! object's maps against that list.
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
    maps::{
        ACTIONS_MAX_ENTRIES, BUCKETS_MAX_ENTRIES, CLASS_IDS_MAX_ENTRIES, CLASS_RESULTS_MAX_ENTRIES,
        CLIENT_CLASSES_MAX_ENTRIES, CLIENT_EXCEPTIONS_MAX_ENTRIES, DOMAINS_DEFAULT_ENTRIES,
        EVENTS_BYTES, FLOWS_MAX_ENTRIES, FRAGMENTS_MAX_ENTRIES, GROUP_PREFIXES_MAX_ENTRIES,
        GROUP_VLANS_MAX_ENTRIES, LAN_PREFIXES_MAX_ENTRIES, LOOP_STEPS_MAX, NAMES_MAX_ENTRIES,
        NAT_PUBLIC_MAX_ENTRIES, PEERS_MAX_ENTRIES, PORTS_MAX_ENTRIES, REASSEMBLY_MAX_ENTRIES,
        SOURCES_MAX_ENTRIES,
    },
    names::{FlowName, NameKey},
    nat::{NAT_SLOTS_ENTRIES, NatConfig, NatSlot, PublicSource},
    parse::http::RequestScanner,
    policy::{ActionEntry, ActionKey, ClassNameKey, ExceptionKey, GroupPrefixData, VlanKey},
    shaping::{BucketKey, ClientClassKey, MAX_SHAPE_CLASSES, ShapeRule, TokenBucket},
    stats::Stat,
};

/// Sparse tables grow as the daemon fills them instead of reserving their maximum.
const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

/// The flow table: one entry per 5-tuple, client side first. LRU so that a full table
/// evicts the coldest flow instead of refusing new ones; the daemon reads the entries out
/// before they age.
#[btf_map]
pub static FLOWS: LruHashMap<FlowKey, FlowEntry, FLOWS_MAX_ENTRIES> = LruHashMap::new();

/// A new flow's first entry, built per CPU before it is inserted into `FLOWS` (off the
/// 512-byte stack, which TC's shaping path needs). Not pinned: scratch.
#[btf_map]
pub static NEW_FLOW: PerCpuArray<FlowEntry, 1> = PerCpuArray::new();

/// Global counters ([`Stat`]), per CPU so that counting costs no atomic operation.
#[btf_map]
pub static STATS: PerCpuArray<u64, { Stat::COUNT as usize }> = PerCpuArray::new();

/// Domain suffix hash → category and application. Sized by the loader to the policy's
/// lists (up to millions of entries); a lookup costs the same at any size.
#[btf_map]
pub static DOMAINS: HashMap<u64, DomainEntry, DOMAINS_DEFAULT_ENTRIES, NO_PREALLOC> =
    HashMap::new();

/// (protocol, server port) → category and application, for flows no name classifies.
#[btf_map]
pub static PORTS: HashMap<PortKey, ClassResult, PORTS_MAX_ENTRIES, NO_PREALLOC> = HashMap::new();

/// Built-in protocol (app id) → the category the policy gives it.
#[btf_map]
pub static PROTO_CATS: Array<u16, { app::BUILTIN_COUNT as usize }> = Array::new();

/// BitTorrent peers (client, peer address, port) seen recently → when (boot ns). Per
/// client: one host's evidence never classifies another's flows. LRU: old peers fall out
/// by themselves.
#[btf_map]
pub static PEERS: LruHashMap<PeerKey, u64, PEERS_MAX_ENTRIES> = LruHashMap::new();

/// Flows whose ClientHello or request spans segments (in order or not) → the bytes so far;
/// kept after the name is read while the flow is watched for a second version. LRU: the
/// least recently used entry is a stalled one, not one being filled; each client's
/// starts are metered by `SOURCES`.
#[btf_map]
pub static REASM: LruHashMap<FlowKey, StreamBuf, REASSEMBLY_MAX_ENTRIES> = LruHashMap::new();

/// A stream buffer per CPU for the common case, a ClientHello in one segment: too big for
/// the 512-byte stack, and no per-flow entry is needed when it parses at once.
#[btf_map]
pub static SCRATCH: PerCpuArray<StreamBuf, 1> = PerCpuArray::new();

/// A copy of a segment that covers bytes already held, per CPU, to compare them before
/// the segment's checksum is trusted and its bytes placed.
#[btf_map]
pub static SEGMENT: PerCpuArray<StreamBuf, 1> = PerCpuArray::new();

/// A ClientHello joined from several TLS records, per CPU (parsed, then dropped).
#[btf_map]
pub static DEFRAG: PerCpuArray<StreamBuf, 1> = PerCpuArray::new();

/// Per-CPU scratch: the key of a fragmented datagram being looked up or remembered, and
/// the record walk of a ClientHello spread over TLS records (off the 512-byte stack).
#[btf_map]
pub static SCRATCH_KEYS: PerCpuArray<ScratchKeys, 1> = PerCpuArray::new();

/// The headers of the packet `classify_upload` is classifying, per CPU: its paths need
/// the 512-byte stack for themselves.
#[btf_map]
pub static PACKET: PerCpuArray<classifier_common::parse::PacketMeta, 1> = PerCpuArray::new();

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

/// Per-CPU state of the `bpf_loop` bodies. Kept in map memory, not on the stack: the
/// verifier then reads every field as an unknown value and checks a body once, instead of
/// walking it again for each value a stack field could hold (which, for the HTTP scanner,
/// ran past its million-instruction budget).
#[btf_map]
pub static LOOPS: PerCpuArray<LoopState, 1> = PerCpuArray::new();

/// One element per step of the longest loop, for the legacy build's loops
/// (`bounded_loop`): `bpf_for_each_map_elem` calls the body once per element. Declared in
/// both builds so that both objects have the same maps.
#[btf_map]
pub static LOOP_STEPS: Array<u8, LOOP_STEPS_MAX> = Array::new();

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

/// Client address → its quotas of new flows, reassembly buffers and QUIC Initials. LRU: a
/// client gone long enough to have its quota back is the one that goes.
#[btf_map]
pub static SOURCES: LruHashMap<[u8; 16], SourceQuota, SOURCES_MAX_ENTRIES> = LruHashMap::new();

/// The LAN's prefixes (IPv4-mapped) when the policy lists them: flows only for these.
#[btf_map]
pub static LAN_PREFIXES: LpmTrie<[u8; 16], u8, LAN_PREFIXES_MAX_ENTRIES> = LpmTrie::new();

/// A fragmented datagram → the flow its first fragment named. LRU: a datagram's fragments
/// arrive within milliseconds of each other.
#[btf_map]
pub static FRAGMENTS: LruHashMap<FragmentKey, FlowKey, FRAGMENTS_MAX_ENTRIES> = LruHashMap::new();

/// Events to the daemon: classified flows (with their names) and QUIC Initials.
#[btf_map]
pub static EVENTS: RingBuf<u8, EVENTS_BYTES> = RingBuf::new();

/// The names flows were classified by (SNI, Host; QUIC names from the daemon), outside the
/// daemon's memory so that they outlive it: the daemon reads them back after a restart and
/// removes a flow's once it is recorded. LRU: past its size, the flows named longest ago
/// lose their kernel copy first.
#[btf_map]
pub static NAMES: LruHashMap<NameKey, FlowName, NAMES_MAX_ENTRIES> = LruHashMap::new();

/// A `NAMES` key and value built per CPU before they are inserted (272 bytes would not fit
/// the 512-byte stack beside a classifier's locals). Not pinned: scratch.
#[btf_map]
pub static NAME_SLOT: PerCpuArray<NameSlot, 1> = PerCpuArray::new();

/// What [`NAME_SLOT`] holds.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NameSlot {
    pub key: NameKey,
    pub _pad: u32,
    pub name: FlowName,
}

/// Classes the daemon worked out (QUIC server names), picked up by the flow's next packet.
#[btf_map]
pub static CLASS_RESULTS: LruHashMap<FlowKey, ClassResult, CLASS_RESULTS_MAX_ENTRIES> =
    LruHashMap::new();

/// The datapath's settings, written by the daemon.
#[btf_map]
pub static CONFIG: Array<Config, 1> = Array::new();

/// Programs the fast path tail-calls ([`tail`]).
#[btf_map]
pub static CLASSIFIERS: ProgramArray<{ tail::COUNT as usize }> = ProgramArray::new();

/// Hand-over between the classification programs of one packet (one CPU runs them all).
#[btf_map]
pub static JOBS: PerCpuArray<ClassifyJob, 1> = PerCpuArray::new();

/// (table, client prefix, IPv4-mapped) → group id: the longest prefix wins.
#[btf_map]
pub static GROUP_PREFIXES: LpmTrie<GroupPrefixData, u16, GROUP_PREFIXES_MAX_ENTRIES> =
    LpmTrie::new();

/// (table, VLAN id) → group id (VLANs are looked at before prefixes).
#[btf_map]
pub static GROUP_VLANS: HashMap<VlanKey, u16, GROUP_VLANS_MAX_ENTRIES, NO_PREALLOC> =
    HashMap::new();

/// (table, group, category) → verdict; two tables, the generation's low bit picks one.
/// (group, category) pairs without an entry are allowed.
#[btf_map]
pub static ACTIONS: HashMap<ActionKey, ActionEntry, ACTIONS_MAX_ENTRIES, NO_PREALLOC> =
    HashMap::new();

/// (client, category, table) triples an unexpired exception allows.
#[btf_map]
pub static CLIENT_EXC: HashMap<ExceptionKey, u8, CLIENT_EXCEPTIONS_MAX_ENTRIES, NO_PREALLOC> =
    HashMap::new();

/// The policy generation: bumped by the daemon at every change of tables, period or
/// exceptions; its low bit is the action table in force.
#[btf_map]
pub static POLICY_GEN: Array<u32, 1> = Array::new();

/// (table, shape class) → the shaping rule ([`classifier_common::shaping::shaper_index`]);
/// written into the idle table with the actions, in force with the same generation.
#[btf_map]
pub static SHAPERS: Array<ShapeRule, { 2 * MAX_SHAPE_CLASSES as usize }> = Array::new();

/// Short-clip allowances and policer buckets. LRU: a bucket idle for long has refilled,
/// and a new one starts full, so losing it changes nothing.
#[btf_map]
pub static BUCKETS: LruHashMap<BucketKey, TokenBucket, BUCKETS_MAX_ENTRIES> = LruHashMap::new();

/// (client, shape class) → minor id of the client's own HTB class, made by the daemon.
#[btf_map]
pub static CLIENT_CLASSES: HashMap<ClientClassKey, u16, CLIENT_CLASSES_MAX_ENTRIES, NO_PREALLOC> =
    HashMap::new();

/// Category and application names → their ids, kept by the daemon beside the flow table so
/// that ids mean the same across reloads and restarts. Never read here.
#[btf_map]
pub static CLASS_IDS: HashMap<ClassNameKey, u16, CLASS_IDS_MAX_ENTRIES, NO_PREALLOC> =
    HashMap::new();

/// The NAT hand-over's settings ([`classifier_common::nat`]); all zero: off.
#[btf_map]
pub static NAT_CONFIG: Array<NatConfig, 1> = Array::new();

/// Slot number carried in the skb mark → the flow holding it.
#[btf_map]
pub static NAT_SLOTS: Array<NatSlot, NAT_SLOTS_ENTRIES> = Array::new();

/// Flow → the translated source its uploads leave the WAN with.
#[btf_map]
pub static NAT_PUBLIC: LruHashMap<FlowKey, PublicSource, NAT_PUBLIC_MAX_ENTRIES> =
    LruHashMap::new();
