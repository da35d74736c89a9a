//! Counting packets against their flow in the `FLOWS` table.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_boot_ns};
use classifier_common::{
    flow::{DirectionCounters, FlowEntry, FlowKey, flow_flags},
    parse::PacketMeta,
    stats::Stat,
};

use crate::{atomic, maps::FLOWS, stats};

/// Which way a packet travels, seen from the LAN client.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → server (XDP on LAN ingress).
    Upload,
    /// Server → client (TC on LAN egress).
    Download,
}

/// What one observed packet adds to its flow's counters.
#[derive(Clone, Copy)]
pub struct WireCount {
    pub packets: u64,
    pub bytes: u64,
}

impl WireCount {
    /// A packet as it will be on the wire. A GSO super-packet (`segments` > 1, seen at TC
    /// egress when the kernel has merged segments with GRO) counts as the segments it is
    /// cut into, each carrying its own copy of the IP and transport headers.
    #[inline(always)]
    pub fn of(meta: &PacketMeta, segments: u32) -> Self {
        let segments = if segments == 0 { 1 } else { segments as u64 };
        let header_bytes = (meta.payload_offset - meta.l3_offset) as u64;
        Self {
            packets: segments,
            bytes: meta.l3_len as u64 + (segments - 1) * header_bytes,
        }
    }
}

/// Nanoseconds since boot, the clock of every timestamp in the maps.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a helper without arguments or side effects.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// Counts a packet (`meta`, `count`) against its flow, creating the flow if it is new.
/// Returns the flow's entry, unless the table refused it.
#[inline(always)]
pub fn account(
    key: &FlowKey,
    meta: &PacketMeta,
    count: WireCount,
    direction: Direction,
) -> Option<*mut FlowEntry> {
    let now = now_ns();
    if let Some(entry) = FLOWS.get_ptr_mut(key) {
        add_packet(entry, meta, count, direction, now);
        return Some(entry);
    }
    let entry = new_entry(meta, count, direction, now);
    if FLOWS.insert(key, entry, BPF_NOEXIST as u64).is_ok() {
        stats::bump(Stat::FlowsCreated);
        return FLOWS.get_ptr_mut(key);
    }
    // Another CPU created the flow between our lookup and insert: count on its entry.
    match FLOWS.get_ptr_mut(key) {
        Some(entry) => {
            add_packet(entry, meta, count, direction, now);
            Some(entry)
        }
        None => {
            stats::bump(Stat::FlowInsertFailed);
            None
        }
    }
}

/// The flow's key: the LAN client is the source of uploads and the destination of downloads.
#[inline(always)]
pub fn flow_key(meta: &PacketMeta, direction: Direction) -> FlowKey {
    let (client_addr, client_port, server_addr, server_port) = match direction {
        Direction::Upload => (meta.src_addr, meta.src_port, meta.dst_addr, meta.dst_port),
        Direction::Download => (meta.dst_addr, meta.dst_port, meta.src_addr, meta.src_port),
    };
    FlowKey {
        client_addr,
        server_addr,
        client_port,
        server_port,
        protocol: meta.protocol,
        _pad: [0; 3],
    }
}

#[inline(always)]
fn new_entry(meta: &PacketMeta, count: WireCount, direction: Direction, now: u64) -> FlowEntry {
    let first_packet = DirectionCounters {
        packets: count.packets,
        bytes: count.bytes,
    };
    let mut entry = FlowEntry {
        first_seen_ns: now,
        last_seen_ns: now,
        vlan_id: meta.vlan_id,
        ..FlowEntry::default()
    };
    match direction {
        Direction::Upload => {
            entry.upload = first_packet;
            entry.tcp_flags_upload = meta.tcp_flags;
        }
        Direction::Download => {
            entry.download = first_packet;
            entry.tcp_flags_download = meta.tcp_flags;
            entry.flags = flow_flags::STARTED_DOWNSTREAM;
        }
    }
    entry
}

#[inline(always)]
fn add_packet(
    entry: *mut FlowEntry,
    meta: &PacketMeta,
    count: WireCount,
    direction: Direction,
    now: u64,
) {
    // SAFETY: `entry` comes from a map lookup in this program run; the map value stays
    // valid until the program returns. Counters may be updated concurrently by other CPUs,
    // hence atomics for them; the other fields tolerate a lost update.
    unsafe {
        let (counters, flags) = match direction {
            Direction::Upload => (&raw mut (*entry).upload, &raw mut (*entry).tcp_flags_upload),
            Direction::Download => (
                &raw mut (*entry).download,
                &raw mut (*entry).tcp_flags_download,
            ),
        };
        atomic::add(&raw mut (*counters).packets, count.packets);
        atomic::add(&raw mut (*counters).bytes, count.bytes);
        *flags |= meta.tcp_flags;
        (*entry).last_seen_ns = now;
    }
}
