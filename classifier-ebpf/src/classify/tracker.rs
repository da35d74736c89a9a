//! BitTorrent tracker replies: a tracker flow's first server→client payload packets go to
//! the daemon, which puts the peers they list into the peer cache, so that the client's
//! later flows to those peers (encrypted ones too) are known as BitTorrent from their
//! first packet.

use aya_ebpf::programs::TcContext;
use classifier_common::{
    classify::Method,
    event::{PAYLOAD_CAP, kind},
    flow::{FlowEntry, FlowKey},
    parse::PacketMeta,
    stats::Stat,
};

use crate::{events::send_payload, packet::skb_load};

/// Reply packets of one tracker flow handed over: an HTTP reply's headers and body may
/// come in two segments; a UDP tracker answers in one datagram.
const MAX_REPLIES: u8 = 2;

/// Hands the packet's payload to the daemon when it is one of the first replies of a
/// tracker flow.
#[inline(always)]
pub fn forward_reply(ctx: &TcContext, meta: &PacketMeta, key: &FlowKey, entry: &mut FlowEntry) {
    if entry.method != Method::BtTracker as u8
        || entry.tracker_replies >= MAX_REPLIES
        || meta.payload_len == 0
    {
        return;
    }
    entry.tracker_replies += 1;
    let sent = Stat::TrackerRepliesToDaemon;
    send_payload(kind::TRACKER_REPLY, meta, key, sent, |data| {
        let (from, len) = (meta.payload_offset as usize, meta.payload_len as usize);
        // SAFETY: `data` takes PAYLOAD_CAP bytes (send_payload).
        unsafe { skb_load::<PAYLOAD_CAP>(ctx, from, data, len) }
    });
}
