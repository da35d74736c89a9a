//! Names and sizes of the BPF maps, so the kernel and user sides cannot disagree.
//!
//! The maps themselves are declared in `classifier-ebpf/src/maps.rs`; a map's name is the
//! name of its `static` there.

/// Per-flow counters and classification, keyed by [`crate::flow::FlowKey`].
pub const FLOWS: &str = "FLOWS";
/// 256 Ki flows: a council site with a few thousand clients keeps well under this, and an
/// LRU map evicts the least recently used flow rather than refusing new ones.
/// Memory: 256 Ki × (40 B key + 88 B value + ~64 B kernel overhead) ≈ 50 MiB.
pub const FLOWS_MAX_ENTRIES: usize = 262_144;

/// Global per-CPU counters indexed by [`crate::stats::Stat`].
pub const STATS: &str = "STATS";

/// Every map the daemon pins under its pin directory, in the order it pins them.
pub const PINNED_MAPS: [&str; 2] = [FLOWS, STATS];
