//! BitTorrent tracker replies: a tracker flow's first server→client payload packets go to
//! the daemon, which puts the peers they list into the peer cache, so that the client's
//! later flows to those peers (encrypted ones too) are known as BitTorrent from their
//! first packet.

use aya_ebpf::programs::TcContext;
use classifier_common::{
    classify::Method,
    event::{PAYLOAD_CAP, PayloadEvent, kind},
    flow::{FlowEntry, FlowKey},
    parse::PacketMeta,
    stats::Stat,
};

use crate::{maps::EVENTS, packet::skb_load, stats};

/// Reply packets of one tracker flow handed over: an HTTP reply's headers and body may
/// come in two segments; a UDP tracker answers in one datagram.
const MAX_REPLIES: u8 = 2;

/// Hands the packet's payload to the daemon when it is one of the first replies of a
/// tracker flow.
///
/// # Safety
/// `entry` must point to the flow's live map value.
#[inline(always)]
pub unsafe fn forward_reply(
    ctx: &TcContext,
    meta: &PacketMeta,
    key: &FlowKey,
    entry: *mut FlowEntry,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if (*entry).method != Method::BtTracker as u8
            || (*entry).tracker_replies >= MAX_REPLIES
            || meta.payload_len == 0
        {
            return;
        }
        (*entry).tracker_replies += 1;
    }
    send(ctx, meta, key);
}

fn send(ctx: &TcContext, meta: &PacketMeta, key: &FlowKey) {
    let Some(mut slot) = EVENTS.reserve_untyped::<PayloadEvent>(0) else {
        stats::bump(Stat::EventsDropped);
        return;
    };
    let event = slot.as_mut_ptr();
    // SAFETY: `event` is ring buffer memory reserved for a PayloadEvent, whose `data` holds
    // PAYLOAD_CAP bytes.
    let copied = unsafe {
        (*event).kind = kind::TRACKER_REPLY;
        (*event).original_len = meta.payload_len;
        (*event).key = *key;
        skb_load::<PAYLOAD_CAP>(
            ctx,
            meta.payload_offset as usize,
            (&raw mut (*event).data).cast(),
            meta.payload_len as usize,
        )
    };
    match copied {
        // SAFETY: as above.
        Ok(len) if len > 0 => unsafe { (*event).len = len as u16 },
        _ => {
            slot.discard(0);
            return;
        }
    }
    slot.submit(crate::events::urgent(size_of::<PayloadEvent>()));
    stats::bump(Stat::TrackerRepliesToDaemon);
}
