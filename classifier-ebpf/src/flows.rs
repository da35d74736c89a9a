//! Counting packets against their flow in the `FLOWS` table.

use core::ops::{Deref, DerefMut};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
};
use classifier_common::{
    flow::{DirectionCounters, FlowEntry, FlowKey, flow_flags},
    parse::PacketMeta,
    stats::Stat,
};

use crate::{
    atomic,
    maps::{CONFIG, FLOWS, NEW_FLOW},
    sources::{self, Admission},
    stats,
};

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

/// CLOCK_MONOTONIC in ns, the clock of every timestamp in the maps (userspace reads the same
/// clock: `classifier_user::flows::datapath_clock_ns`).
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a helper without arguments or side effects.
    unsafe { bpf_ktime_get_ns() }
}

/// CLOCK_MONOTONIC_COARSE in ns: the same clock as [`now_ns`] as of the last timer tick
/// (4 ms at HZ=250, Debian's), for the stamps every packet writes: a flow's first and last
/// packet. A precise read cost a third of an established flow's packet (109 ns with it,
/// 89 without, `datapath-bench`); idle timeouts are counted in seconds, and records in
/// milliseconds at this resolution. Both stamps of a flow come from it, so the last is
/// never before the first (the precise clock runs up to a tick ahead of it).
#[inline(always)]
fn coarse_now_ns() -> u64 {
    // SAFETY: a helper without arguments or side effects.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// A flow's entry in `FLOWS`, for one program run: looked up once per packet where the
/// program starts (or where [`account`] counts the packet), and lent from there as a plain
/// `&mut FlowEntry` to everything that reads or writes the flow. The one `unsafe` of the
/// flow's entry is in [`Flow::lookup`].
pub struct Flow<'run>(&'run mut FlowEntry);

impl<'run> Flow<'run> {
    /// The flow's entry, if `FLOWS` has one for `key`. Called once per program run (each
    /// program's entry point, or [`account`] for it), never while another handle lives.
    #[inline(always)]
    pub fn lookup(key: &FlowKey) -> Option<Self> {
        let entry = FLOWS.get_ptr_mut(key)?;
        // SAFETY: valid for the run: `FLOWS` is an LRU hash, whose values are preallocated
        // with the map and never freed while it lives (nor, for any hash, before an RCU
        // grace period, which waits for running programs); an element evicted meanwhile
        // may be reused for another flow, and this run's writes then land there, as they
        // did with the raw pointer this replaces. The handle cannot outlive the run:
        // programs return a plain action code, and nothing stores a handle. Aligned and
        // initialised: a `FlowEntry` the map holds. Not aliased within the run: each
        // program looks its flow up once (here) and lends the handle down; nothing else in
        // the run makes a pointer to the entry (tail calls are new runs, and look it up
        // afresh). Other CPUs may run these programs on the same flow at once (`FLOWS` is
        // one shared hash, without a lock), as before: the packet counters are added
        // atomically (`atomic::add_counters`), and the other fields are plain stores the
        // datapath accepts losing to another CPU's (each CPU works the class and verdict
        // out alike from the same packets and tables).
        Some(Self(unsafe { &mut *entry }))
    }
}

impl Deref for Flow<'_> {
    type Target = FlowEntry;

    #[inline(always)]
    fn deref(&self) -> &FlowEntry {
        self.0
    }
}

impl DerefMut for Flow<'_> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut FlowEntry {
        self.0
    }
}

/// What counting a packet came to.
pub enum Accounted<'run> {
    /// Counted against this flow's entry.
    Flow(Flow<'run>),
    /// No flow: local control traffic from outside the LAN prefixes, or the table refused
    /// the insert. The packet passes.
    Untracked,
    /// No flow, and the packet is dropped: a source outside the LAN prefixes, or a client
    /// over its quota of new flows.
    Refused,
}

/// Counts a packet (`meta`, `count`) against its flow, creating the flow if it is new and
/// its client may start one (client→server packets only: the quotas meter LAN clients).
#[inline(always)]
pub fn account<'run>(
    key: &FlowKey,
    meta: &PacketMeta,
    count: WireCount,
    direction: Direction,
) -> Accounted<'run> {
    let now = coarse_now_ns();
    if let Some(mut flow) = Flow::lookup(key) {
        add_packet(&mut flow, meta, count, direction, now);
        return Accounted::Flow(flow);
    }
    if direction == Direction::Upload {
        let Some(config) = CONFIG.get(0) else {
            return Accounted::Untracked;
        };
        match sources::admit(meta, config) {
            Admission::Track => {}
            Admission::Untracked => return Accounted::Untracked,
            Admission::Refuse => return Accounted::Refused,
        }
    }
    let Some(new) = NEW_FLOW.get_ptr_mut(0) else {
        return Accounted::Untracked;
    };
    // SAFETY: this CPU's value, live for the program run, and only this CPU's run uses it.
    // Built there rather than on the 512-byte stack, which TC's shaping needs.
    let new = unsafe { &mut *new };
    fill_new_entry(new, meta, count, direction, now);
    // The insert copies it (by reference: by value, it would be copied onto the stack first).
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = FLOWS.insert(key, &*new, BPF_NOEXIST as u64).is_ok();
    if inserted {
        stats::bump(Stat::FlowsCreated);
        if let Some(flow) = Flow::lookup(key) {
            return Accounted::Flow(flow);
        }
        return Accounted::Untracked;
    }
    // Another CPU created the flow between our lookup and insert: count on its entry.
    match Flow::lookup(key) {
        Some(mut flow) => {
            add_packet(&mut flow, meta, count, direction, now);
            Accounted::Flow(flow)
        }
        None => {
            stats::bump(Stat::FlowInsertFailed);
            Accounted::Untracked
        }
    }
}

/// Counts a packet against an existing flow's entry (a later fragment of its datagram).
#[inline(always)]
pub fn count_on(entry: &mut FlowEntry, meta: &PacketMeta, count: WireCount, direction: Direction) {
    add_packet(entry, meta, count, direction, coarse_now_ns());
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

/// Writes a new flow's entry for its first packet into `entry`.
#[inline(always)]
fn fill_new_entry(
    entry: &mut FlowEntry,
    meta: &PacketMeta,
    count: WireCount,
    direction: Direction,
    now: u64,
) {
    let first_packet = DirectionCounters {
        packets: count.packets,
        bytes: count.bytes,
    };
    *entry = FlowEntry::default();
    entry.first_seen_ns = now;
    entry.last_seen_ns = now;
    entry.vlan_id = meta.vlan_id;
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
}

#[inline(always)]
fn add_packet(
    entry: &mut FlowEntry,
    meta: &PacketMeta,
    count: WireCount,
    direction: Direction,
    now: u64,
) {
    // Counters may be updated concurrently by other CPUs, hence atomics for them; the
    // other fields tolerate a lost update.
    let (counters, flags) = match direction {
        Direction::Upload => (&mut entry.upload, &mut entry.tcp_flags_upload),
        Direction::Download => (&mut entry.download, &mut entry.tcp_flags_download),
    };
    atomic::add_counters(counters, count.packets, count.bytes);
    *flags |= meta.tcp_flags;
    // The coarse clock may lag the precise stamp of the flow's first packet (and
    // another CPU's later one): the stamp never goes back.
    entry.last_seen_ns = now;
}
