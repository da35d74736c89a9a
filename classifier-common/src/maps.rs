//! Names and sizes of the BPF maps, so the kernel and user sides cannot disagree.
//!
//! The maps themselves are declared in `classifier-ebpf/src/maps.rs`; a map's name is the
//! name of its `static` there.

/// Per-flow counters and classification, keyed by [`crate::flow::FlowKey`].
pub const FLOWS: &str = "FLOWS";
/// 256 Ki flows: a council site with a few thousand clients keeps well under this, and an
/// LRU map evicts the least recently used flow rather than refusing new ones.
/// Memory: 256 Ki × (40 B key + 112 B value + ~64 B kernel overhead) ≈ 54 MiB.
pub const FLOWS_MAX_ENTRIES: usize = 262_144;

/// Global per-CPU counters indexed by [`crate::stats::Stat`].
pub const STATS: &str = "STATS";

/// Domain suffix hash → category and application ([`crate::domain`]).
pub const DOMAINS: &str = "DOMAINS";
/// Size the object declares; the loader sizes the map to the compiled lists.
pub const DOMAINS_DEFAULT_ENTRIES: usize = 65_536;

/// (protocol, port) → category and application.
pub const PORTS: &str = "PORTS";
/// Every TCP and UDP port could have a rule.
pub const PORTS_MAX_ENTRIES: usize = 131_072;

/// Built-in protocol (app id) → the category the policy gives it (e.g. bittorrent → file
/// sharing, quic → quic).
pub const PROTOCOL_CATEGORIES: &str = "PROTO_CATS";

/// BitTorrent peers (address, port) seen recently: later flows to them are BitTorrent too.
pub const PEERS: &str = "PEERS";
pub const PEERS_MAX_ENTRIES: usize = 65_536;

/// Per-flow reassembly of a ClientHello or HTTP request that spans segments. Entries live
/// only while a flow is being classified; at ~6 KiB each, 2 Ki entries are ~12 MiB.
pub const REASSEMBLY: &str = "REASM";
pub const REASSEMBLY_MAX_ENTRIES: usize = 2048;

/// Per-CPU scratch stream buffer for a single-segment ClientHello or request.
pub const SCRATCH: &str = "SCRATCH";
/// Per-CPU copy of a segment that overlaps bytes already held, to compare them.
pub const SEGMENT: &str = "SEGMENT";
/// Per-CPU buffer for a ClientHello joined from several TLS records.
pub const DEFRAG: &str = "DEFRAG";

/// Per-client quotas of new flows, reassembly buffers and QUIC Initials
/// ([`crate::config::SourceQuota`]).
pub const SOURCES: &str = "SOURCES";
/// 64 Ki clients; LRU, so a client idle long enough to have a full quota again is the one
/// that goes. ~4.5 MiB.
pub const SOURCES_MAX_ENTRIES: usize = 65_536;

/// The LAN's prefixes (IPv4-mapped, LPM): with `[datapath] lan_prefixes` set, packets from
/// other sources make no flow and are dropped.
pub const LAN_PREFIXES: &str = "LAN_PREFIXES";
pub const LAN_PREFIXES_MAX_ENTRIES: usize = 1024;

/// A fragmented datagram (source, destination, protocol, identification) → the flow its
/// first fragment named, so later fragments are counted and judged with it.
pub const FRAGMENTS: &str = "FRAGMENTS";
pub const FRAGMENTS_MAX_ENTRIES: usize = 8192;

/// Flow (and which of its names) → the server name it was classified by
/// ([`crate::names`]): written by the datapath as it reads a name (and by the daemon for
/// QUIC), so that names survive the daemon. LRU.
///
/// Pinned, so its layout is part of the upgrade contract: a change to [`crate::names::NameKey`]
/// or [`crate::names::FlowName`] gets a new map name (`NAMES2`, ...), so that a new daemon
/// never adopts an old map it would misread (the loader also refuses a pinned map whose
/// type, key or value size differs from this object's).
pub const NAMES: &str = "NAMES";
/// 128 Ki names, half the flow table: names belong to TLS, HTTP and QUIC flows, while DNS,
/// NTP and other unnamed datagrams fill much of the rest. Past that, the least recently
/// named flows lose their kernel copy (the running daemon still holds theirs in memory).
/// Memory: 48 MiB by the kernel's accounting (`datapath-bench` prints it): 128 Ki × 384 B a name.
pub const NAMES_MAX_ENTRIES: usize = 131_072;

/// Ring buffer of [`crate::event`]s to the daemon.
pub const EVENTS: &str = "EVENTS";
/// 4 MiB: ~13,000 classification events or ~2,000 QUIC Initials between two reads.
pub const EVENTS_BYTES: usize = 4 << 20;

/// Classifications the daemon made for the datapath (QUIC: after decrypting the Initial).
pub const CLASS_RESULTS: &str = "CLASS_RESULTS";
pub const CLASS_RESULTS_MAX_ENTRIES: usize = 16_384;

/// One [`crate::config::Config`].
pub const CONFIG: &str = "CONFIG";

/// Tail-call targets of the fast path ([`crate::config::tail`]).
pub const CLASSIFIERS: &str = "CLASSIFIERS";

/// Per-CPU hand-over between the classification programs ([`crate::config::ClassifyJob`]).
pub const JOBS: &str = "JOBS";

/// Client prefix (IPv4-mapped, LPM) → group id.
pub const GROUP_PREFIXES: &str = "GROUP_PREFIXES";
pub const GROUP_PREFIXES_MAX_ENTRIES: usize = 16_384;
/// VLAN id → group id.
pub const GROUP_VLANS: &str = "GROUP_VLANS";
pub const GROUP_VLANS_MAX_ENTRIES: usize = 4096;
/// (table, group, category) → verdict ([`crate::policy`]).
pub const ACTIONS: &str = "ACTIONS";
pub const ACTIONS_MAX_ENTRIES: usize = 131_072;
/// (client, category) → allowed by an exception.
pub const CLIENT_EXCEPTIONS: &str = "CLIENT_EXC";
pub const CLIENT_EXCEPTIONS_MAX_ENTRIES: usize = 16_384;
/// One u32: the policy generation (its low bit picks the action table in force).
pub const POLICY_GEN: &str = "POLICY_GEN";

/// (table, shape class) → [`crate::shaping::ShapeRule`], double-buffered with the actions.
pub const SHAPERS: &str = "SHAPERS";
/// Token buckets: clients' short-clip allowances and the policer's buckets.
pub const BUCKETS: &str = "BUCKETS";
/// 64 Ki buckets: an allowance and a policer bucket for each of 32 Ki clients; LRU, so a
/// bucket idle long enough to have refilled anyway is the one that goes.
pub const BUCKETS_MAX_ENTRIES: usize = 65_536;
/// (client, shape class) → the minor id of the client's own HTB class.
pub const CLIENT_CLASSES: &str = "CLIENT_CLASSES";
/// Minor ids 0x100..=0xffff: at most this many per-client classes at once.
pub const CLIENT_CLASSES_MAX_ENTRIES: usize = 0xff00;

/// Category or application name → its id, for as long as the flow table lives
/// ([`crate::policy::ClassNameKey`]). The datapath never reads it.
pub const CLASS_IDS: &str = "CLASS_IDS";
pub const CLASS_IDS_MAX_ENTRIES: usize = 4096;

/// One [`crate::nat::NatConfig`]: the NAT hand-over's mark mask (all zero: off).
pub const NAT_CONFIG: &str = "NAT_CONFIG";
/// Slot number (in the skb mark) → the flow that holds it ([`crate::nat::NatSlot`]).
pub const NAT_SLOTS: &str = "NAT_SLOTS";
/// Flow → the translated source its uploads left the WAN with ([`crate::nat::PublicSource`]).
/// LRU, as large as the flow table; the daemon takes a flow's entry out with its record.
pub const NAT_PUBLIC: &str = "NAT_PUBLIC";
pub const NAT_PUBLIC_MAX_ENTRIES: usize = FLOWS_MAX_ENTRIES;

/// Every map the daemon pins under its pin directory. The tail-call table is pinned too:
/// the kernel empties a program array once no process or pin holds it, which would stop
/// classification while a restarted daemon is on its way; a new daemon writes its own
/// programs into it.
pub const PINNED_MAPS: [&str; 30] = [
    CLASSIFIERS,
    FLOWS,
    STATS,
    DOMAINS,
    PORTS,
    PROTOCOL_CATEGORIES,
    PEERS,
    REASSEMBLY,
    SCRATCH,
    SEGMENT,
    DEFRAG,
    SOURCES,
    LAN_PREFIXES,
    FRAGMENTS,
    EVENTS,
    NAMES,
    CLASS_RESULTS,
    CONFIG,
    GROUP_PREFIXES,
    GROUP_VLANS,
    ACTIONS,
    CLIENT_EXCEPTIONS,
    POLICY_GEN,
    SHAPERS,
    BUCKETS,
    CLIENT_CLASSES,
    CLASS_IDS,
    NAT_CONFIG,
    NAT_SLOTS,
    NAT_PUBLIC,
];
