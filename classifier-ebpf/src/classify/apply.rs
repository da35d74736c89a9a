//! Giving a flow its class, finishing its classification, and telling the daemon.

use classifier_common::{
    classify::{Method, app, class_flags, evasion, state},
    config::{ClassResult, Config, PeerKey, peer_cache_applies},
    event::{ClassifiedEvent, NAME_CAP, kind},
    flow::{FlowEntry, FlowKey, flow_flags},
    names::{NameKey, version},
    policy::policy_flags,
    stats::Stat,
};

use crate::{
    flows::now_ns,
    maps::{EVENTS, NAME_SLOT, NAMES, PEERS, PROTO_CATS, REASM},
    packet::StreamView,
    stats,
};

/// A name inside a stream buffer: where the flow's class came from.
pub struct NameRef<'a> {
    pub view: &'a StreamView,
    pub offset: usize,
    pub len: usize,
}

/// The category the policy gives a built-in protocol (or [`app::UNREADABLE`] flows).
#[inline(always)]
pub fn protocol_category(app: u16) -> u16 {
    PROTO_CATS.get(app as u32).copied().unwrap_or(0)
}

/// Sets the flow's class.
#[inline(always)]
pub fn set_class(entry: &mut FlowEntry, class: ClassResult) {
    entry.category = class.category;
    entry.app = class.app;
    entry.method = class.method;
    entry.class_flags |= class.class_flags;
}

/// A BitTorrent class by `method`; peers (not trackers) join the client's peer cache.
#[inline(always)]
pub fn set_bittorrent(key: &FlowKey, entry: &mut FlowEntry, method: Method) {
    let class = ClassResult {
        category: protocol_category(app::BITTORRENT),
        app: app::BITTORRENT,
        method: method as u8,
        ..ClassResult::default()
    };
    set_class(entry, class);
    if method != Method::BtTracker {
        let _ = PEERS.insert(PeerKey::server_of(key), now_ns(), 0);
    }
}

/// Whether the flow's server is a BitTorrent peer its client learnt of (a tracker reply,
/// its own BitTorrent flows), recently enough. Asked only of flows whose own bytes name
/// nothing, and never for well-known service ports: one client's evidence never touches
/// another's flows, and a name always wins over the cache.
#[inline(always)]
pub fn known_peer(key: &FlowKey, config: &Config) -> bool {
    let Some(seen) = PEERS.get_ptr(PeerKey::server_of(key)) else {
        return false;
    };
    if !peer_cache_applies(key.server_port) {
        stats::bump(Stat::PeerCacheDeclined);
        return false;
    }
    // SAFETY: a map value pointer, valid for this program run.
    let age = now_ns().saturating_sub(unsafe { *seen });
    age < config.peer_ttl_secs as u64 * 1_000_000_000
}

/// Ends classification: the fast path will only count from now on. Tells the daemon the
/// flow's class (and the name it came from) once.
#[inline(always)]
pub fn finish(key: &FlowKey, entry: &mut FlowEntry, name: Option<NameRef<'_>>) {
    entry.class_state = state::DONE;
    entry.class_flags &= !class_flags::PORT_PROVISIONAL;
    let (method, flags) = (Method::from_u8(entry.method), entry.class_flags);
    count_class(method);
    if method != Method::None || flags & class_flags::REPORTED != 0 || has_evasion(entry) {
        emit_classified(key, entry, name, false);
    }
}

/// [`finish`] for a TCP stream whose first `end` bytes were read: the flow is then watched
/// for a second version of those bytes (the name's hash tells a retransmission from one).
#[inline(always)]
pub fn finish_stream(
    key: &FlowKey,
    entry: &mut FlowEntry,
    name: Option<NameRef<'_>>,
    end: u16,
    name_hash: u32,
) {
    finish(key, entry, name);
    entry.class_state = state::WATCH;
    entry.named_end = end;
    entry.name_hash = name_hash;
}

/// The client has moved past the bytes the name came from: nothing more to watch.
#[inline(always)]
pub fn end_watch(key: &FlowKey, entry: &mut FlowEntry) {
    entry.class_state = state::DONE;
    entry.class_flags &= !class_flags::RECHECK;
    release_buffer(key, entry);
}

/// Frees the flow's stream buffer, if it has one.
#[inline(always)]
pub fn release_buffer(key: &FlowKey, entry: &mut FlowEntry) {
    if entry.flags & flow_flags::STREAM_BUFFER != 0 {
        entry.flags &= !flow_flags::STREAM_BUFFER;
        let _ = REASM.remove(key);
    }
}

/// A second version of the named bytes reads as another category (or as nothing): the
/// verdict now answers to both.
#[inline(always)]
pub fn second_category(entry: &mut FlowEntry, category: u16) {
    stats::bump(Stat::StreamConflicts);
    entry.evasion |= evasion::CONFLICT;
    if entry.alt_category == 0 {
        entry.alt_category = category;
    }
    entry.class_flags &= !class_flags::RECHECK;
    // Worked out again on the next packet, with both categories.
    entry.policy_flags &= !policy_flags::DECIDED;
}

/// The stream's first bytes looked like TLS or HTTP (`protocol`) but cannot be read within
/// the datapath's bounds: the flow gets the policy's `unreadable` category, so the policy
/// decides (the council default blocks it at work) instead of it passing as unknown. A
/// second version that cannot be read adds that category to the verdict instead.
#[inline(always)]
pub fn give_up(key: &FlowKey, entry: &mut FlowEntry, protocol: u16) {
    stats::bump(Stat::Unreadable);
    let category = protocol_category(app::UNREADABLE);
    if entry.class_flags & class_flags::RECHECK != 0 {
        second_category(entry, category);
        return;
    }
    entry.class_flags |= class_flags::UNREADABLE;
    if entry.app == app::UNKNOWN {
        entry.app = protocol;
    }
    entry.category = category;
    entry.method = Method::None as u8;
    finish(key, entry, None);
    release_buffer(key, entry);
}

/// [`give_up`] from TC, where the stack is taken: the class is set without an event (the
/// daemon reads it from the flow table).
#[inline(always)]
pub fn mark_unreadable(key: &FlowKey, entry: &mut FlowEntry) {
    stats::bump(Stat::Unreadable);
    entry.class_flags |= class_flags::UNREADABLE;
    entry.class_flags &= !class_flags::PORT_PROVISIONAL;
    entry.category = protocol_category(app::UNREADABLE);
    entry.method = Method::None as u8;
    entry.class_state = state::DONE;
    entry.policy_flags &= !policy_flags::DECIDED;
    release_buffer(key, entry);
}

/// Notes what the client did to hide the flow's name; `stat` counts it.
#[inline(always)]
pub fn note_evasion(entry: &mut FlowEntry, bit: u8, stat: Stat) {
    stats::bump(stat);
    entry.evasion |= bit;
}

#[inline(always)]
fn has_evasion(entry: &FlowEntry) -> bool {
    entry.evasion & evasion::DECEPTION != 0
}

#[inline(always)]
fn count_class(method: Method) {
    match method {
        Method::Sni | Method::Host | Method::Quic => stats::bump(Stat::ClassifiedByName),
        Method::BtHandshake
        | Method::BtDht
        | Method::BtUtp
        | Method::BtTracker
        | Method::PeerCache => stats::bump(Stat::ClassifiedBittorrent),
        Method::Port => stats::bump(Stat::ClassifiedByPort),
        Method::None => {}
    }
}

/// One [`ClassifiedEvent`] into the ring buffer; counted as dropped when it is full.
/// `second`: the name is a second version's (flagged with RECHECK for the daemon). The
/// name goes into `NAMES` first, so that it outlives the daemon, and a full ring buffer.
#[inline(always)]
pub fn emit_classified(key: &FlowKey, entry: &FlowEntry, name: Option<NameRef<'_>>, second: bool) {
    let kept = match &name {
        Some(name) => keep_name(key, entry, name, second),
        None => false,
    };
    let Some(mut slot) = EVENTS.reserve_untyped::<ClassifiedEvent>(0) else {
        stats::bump(Stat::EventsDropped);
        return;
    };
    let event = slot.as_mut_ptr();
    // SAFETY: `event` is ring buffer memory reserved for a ClassifiedEvent.
    unsafe {
        (*event).kind = kind::FLOW_CLASSIFIED;
        (*event).method = entry.method;
        (*event).class_flags = (entry.class_flags & class_flags::REPORTED)
            | if second { class_flags::RECHECK } else { 0 };
        (*event).category = entry.category;
        (*event).app = entry.app;
        (*event).evasion = entry.evasion;
        (*event).name_kept = kept as u8;
        (*event).alt_category = entry.alt_category;
        (*event).key = *key;
        (*event).name_len = match name {
            Some(name) => copy_name(&name, &raw mut (*event).name),
            None => 0,
        };
    }
    slot.submit(crate::events::informing());
}

/// Puts the flow's name (its first, or with `second` its second) into `NAMES`, tagged
/// with the flow entry's first packet time; whether it is there.
#[inline(always)]
fn keep_name(key: &FlowKey, entry: &FlowEntry, name: &NameRef<'_>, second: bool) -> bool {
    let Some(slot) = NAME_SLOT.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot, live for the program run.
    unsafe {
        let len = copy_name(name, &raw mut (*slot).name.name);
        if len == 0 {
            return false;
        }
        (*slot).name.len = len;
        (*slot).name.first_seen_ns = entry.first_seen_ns;
        (*slot).key = NameKey::new(
            *key,
            if second {
                version::SECOND
            } else {
                version::FIRST
            },
        );
        // By reference: by value, the 272 bytes would be copied onto the stack first.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let inserted = NAMES.insert(&(*slot).key, &(*slot).name, 0);
        inserted.is_ok()
    }
}

/// Copies the name into the event (at most NAME_CAP - 1 bytes); returns its length.
///
/// # Safety
/// `dst` must be a name array in reserved ring-buffer memory or a map value.
#[inline(always)]
unsafe fn copy_name(name: &NameRef<'_>, dst: *mut [u8; NAME_CAP]) -> u8 {
    let len = if name.len < NAME_CAP {
        name.len
    } else {
        NAME_CAP - 1
    };
    // SAFETY: forwarded from the caller: NAME_CAP writable bytes.
    unsafe { name.view.copy_out::<NAME_CAP>(name.offset, len, dst.cast()) as u8 }
}
