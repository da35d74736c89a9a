//! Every map of the datapath, in one place. Names and sizes come from
//! `classifier_common::maps`, which the daemon reads too.
//!
//! The daemon pins each of these under its pin directory (`/sys/fs/bpf/classifier` by
//! default) so that flow state outlives the daemon process.

use aya_ebpf::{
    btf_maps::{LruHashMap, PerCpuArray},
    macros::btf_map,
};
use classifier_common::{
    flow::{FlowEntry, FlowKey},
    maps::FLOWS_MAX_ENTRIES,
    stats::Stat,
};

/// The flow table: one entry per 5-tuple, client side first. LRU so that a full table
/// evicts the coldest flow instead of refusing new ones; the daemon reads the entries out
/// before they age.
#[btf_map]
pub static FLOWS: LruHashMap<FlowKey, FlowEntry, FLOWS_MAX_ENTRIES> = LruHashMap::new();

/// Global counters ([`Stat`]), per CPU so that counting costs no atomic operation.
#[btf_map]
pub static STATS: PerCpuArray<u64, { Stat::COUNT as usize }> = PerCpuArray::new();
