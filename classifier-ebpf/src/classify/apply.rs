//! Giving a flow its class, finishing its classification, and telling the daemon.

use classifier_common::{
    classify::{Method, app, class_flags, state},
    config::{ClassResult, PeerKey},
    event::{ClassifiedEvent, NAME_CAP, kind},
    flow::{FlowEntry, FlowKey},
    parse::PacketBytes,
    stats::Stat,
};

use crate::{
    flows::now_ns,
    maps::{EVENTS, PEERS, PROTO_CATS},
    packet::StreamView,
    stats,
};

/// A name inside a stream buffer: where the flow's class came from.
pub struct NameRef<'a> {
    pub view: &'a StreamView,
    pub offset: usize,
    pub len: usize,
}

/// The category the policy gives a built-in protocol.
#[inline(always)]
pub fn protocol_category(app: u16) -> u16 {
    PROTO_CATS.get(app as u32).copied().unwrap_or(0)
}

/// Sets the flow's class.
///
/// # Safety
/// `entry` must point to the flow's live map value.
#[inline(always)]
pub unsafe fn set_class(entry: *mut FlowEntry, class: ClassResult) {
    // SAFETY: forwarded from the caller.
    unsafe {
        (*entry).category = class.category;
        (*entry).app = class.app;
        (*entry).method = class.method;
        (*entry).class_flags |= class.class_flags;
    }
}

/// A BitTorrent class by `method`; peers (not trackers) join the peer cache.
///
/// # Safety
/// `entry` must point to the flow's live map value.
#[inline(always)]
pub unsafe fn set_bittorrent(key: &FlowKey, entry: *mut FlowEntry, method: Method) {
    let class = ClassResult {
        category: protocol_category(app::BITTORRENT),
        app: app::BITTORRENT,
        method: method as u8,
        ..ClassResult::default()
    };
    // SAFETY: forwarded from the caller.
    unsafe { set_class(entry, class) };
    if method != Method::BtTracker {
        let _ = PEERS.insert(PeerKey::server_of(key), now_ns(), 0);
    }
}

/// Ends classification: the fast path will only count from now on. Tells the daemon the
/// flow's class (and the name it came from) once.
///
/// # Safety
/// `entry` must point to the flow's live map value.
#[inline(always)]
pub unsafe fn finish(key: &FlowKey, entry: *mut FlowEntry, name: Option<NameRef<'_>>) {
    // SAFETY: forwarded from the caller.
    let (method, flags) = unsafe {
        (*entry).class_state = state::DONE;
        (*entry).class_flags &= !class_flags::PORT_PROVISIONAL;
        (Method::from_u8((*entry).method), (*entry).class_flags)
    };
    count_class(method);
    if method != Method::None || flags & class_flags::REPORTED != 0 {
        // SAFETY: forwarded from the caller.
        unsafe { emit_classified(key, entry, name) };
    }
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
#[inline(always)]
unsafe fn emit_classified(key: &FlowKey, entry: *mut FlowEntry, name: Option<NameRef<'_>>) {
    let Some(mut slot) = EVENTS.reserve_untyped::<ClassifiedEvent>(0) else {
        stats::bump(Stat::EventsDropped);
        return;
    };
    let event = slot.as_mut_ptr();
    // SAFETY: `event` is ring buffer memory reserved for a ClassifiedEvent; `entry` is live.
    unsafe {
        (*event).kind = kind::FLOW_CLASSIFIED;
        (*event).method = (*entry).method;
        (*event).class_flags = (*entry).class_flags & class_flags::REPORTED;
        (*event).category = (*entry).category;
        (*event).app = (*entry).app;
        (*event).key = *key;
        (*event).name_len = match name {
            Some(name) => copy_name(&name, &raw mut (*event).name),
            None => 0,
        };
    }
    slot.submit(0);
}

/// Copies the name byte by byte (a variable-offset memcpy has no BPF lowering).
#[inline(always)]
unsafe fn copy_name(name: &NameRef<'_>, dst: *mut [u8; NAME_CAP]) -> u8 {
    let mut copied = 0usize;
    for i in 0..NAME_CAP - 1 {
        if i >= name.len {
            break;
        }
        let Some([byte]) = name.view.read::<1>(name.offset + i) else {
            break;
        };
        // SAFETY: i < NAME_CAP, inside the event's name array.
        unsafe { (*dst)[i] = byte };
        copied = i + 1;
    }
    copied as u8
}
