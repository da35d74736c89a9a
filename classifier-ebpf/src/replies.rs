//! How a fail-fast answer, built at XDP from the client's packet ([`crate::reset`]), goes
//! back out of the LAN interface: the way the daemon chose for the interface
//! ([`fail_fast_replies`]).
//!
//! - XDP_TX: the driver sends the frame back. Right for NICs with native XDP.
//! - TC redirect: XDP_TX cannot be relied on everywhere. A veth hands XDP_TX frames to its
//!   peer, which delivers them at once only if it runs XDP itself (`veth_xdp_flush` skips a
//!   peer without, and a peer without NAPI drops them); generic XDP transmits past the
//!   qdisc, and loses the frame when the queue is stopped. So XDP passes the answer up
//!   with [`REPLY_METADATA`] in its metadata (`bpf_xdp_adjust_meta`: only XDP writes
//!   metadata, a client cannot forge it), and the TC ingress program `lan_replies` sends
//!   it out of the same interface with `bpf_redirect`, through the ordinary transmit path.
//!   On its way out it passes `lan_egress`, which must neither count it as a download nor
//!   drop it as a blocked flow's: `lan_replies` marks it ([`REPLY_MARK`]).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::generated::{bpf_redirect, bpf_xdp_adjust_meta},
    programs::{TcContext, XdpContext},
};
use classifier_common::{
    config::fail_fast_replies::{self, REPLY_MARK, REPLY_METADATA},
    stats::Stat,
};

use crate::{TC_ACT_PIPE, maps::CONFIG, stats};

/// Bytes of metadata the mark takes.
const METADATA_LEN: usize = size_of::<u32>();

/// The XDP action that sends the answer the frame now holds back to the client, counted
/// as `sent`; a drop when the answer cannot be marked for TC.
#[inline(always)]
pub fn send_back(ctx: &XdpContext, sent: Stat) -> u32 {
    let way = CONFIG
        .get(0)
        .map_or(fail_fast_replies::XDP_TX, |config| config.fail_fast_replies);
    if way != fail_fast_replies::TC_REDIRECT {
        stats::bump(sent);
        return XDP_TX;
    }
    if !mark_for_tc(ctx) {
        return XDP_DROP;
    }
    stats::bump(sent);
    XDP_PASS
}

/// Puts [`REPLY_METADATA`] in front of the frame; false if the driver keeps no metadata.
#[inline(always)]
fn mark_for_tc(ctx: &XdpContext) -> bool {
    // SAFETY: the helper checks the room in front of the frame.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(METADATA_LEN as i32)) } != 0 {
        return false;
    }
    // The metadata moved: its pointers are taken again, and checked.
    let metadata = ctx.metadata();
    if metadata + METADATA_LEN > ctx.metadata_end() {
        return false;
    }
    // SAFETY: the metadata's 4 bytes are inside it (checked above).
    unsafe { *(metadata as *mut u32) = REPLY_METADATA };
    true
}

/// The `lan_replies` program (TC, LAN ingress, attached only on the TC way): a frame that
/// XDP marked as an answer goes out of the interface it came in on; anything else passes
/// on untouched.
#[inline(always)]
pub fn redirect_marked(ctx: &TcContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: `skb` is the program's context pointer, valid for the whole run.
    let (metadata, data) = unsafe { ((*skb).data_meta as usize, (*skb).data as usize) };
    if metadata + METADATA_LEN > data {
        return TC_ACT_PIPE;
    }
    // SAFETY: 4 bytes of metadata are there (checked above).
    if unsafe { *(metadata as *const u32) } != REPLY_METADATA {
        return TC_ACT_PIPE;
    }
    // SAFETY: as above; both fields are writable by TC programs.
    unsafe {
        (*skb).mark = REPLY_MARK;
        // The gateway's own answer: the default class of a shaping qdisc, whatever priority
        // the client's socket gave its packet.
        (*skb).priority = 0;
        // TC_ACT_REDIRECT (TCX_REDIRECT) on success; the packet then leaves by `ifindex`.
        bpf_redirect((*skb).ifindex, 0) as i32
    }
}

/// Whether the packet leaving by the LAN interface is an answer `lan_replies` sent: marked,
/// and received on the interface it leaves by (no forwarded download is; a client cannot
/// set the mark). Its mark is cleared: it was only for this.
#[inline(always)]
pub fn is_sent_answer(ctx: &TcContext) -> bool {
    let skb = ctx.skb.skb;
    // SAFETY: `skb` is the program's context pointer, valid for the whole run.
    unsafe {
        if (*skb).mark != REPLY_MARK || (*skb).ingress_ifindex != (*skb).ifindex {
            return false;
        }
        (*skb).mark = 0;
    }
    true
}
