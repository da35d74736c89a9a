//! The classifier's kernel side: one BPF object whose programs share the maps in
//! [`maps`].
//!
//! - `lan_ingress` (XDP, gateway LAN interface, ingress): sees every client→server packet
//!   first; counts it against its flow, and tail-calls `classify_upload` while the flow's
//!   class is not settled.
//! - `classify_upload` (XDP, tail call): TLS SNI, HTTP Host, QUIC, BitTorrent, ports.
//! - `lan_egress` (TC, gateway LAN interface, egress): sees every server→client packet;
//!   counts it against the same flow, drops it if blocked, shapes it if shaped.
//! - `wan_egress` (TC, gateway WAN interface, egress): client→server packets on their way
//!   out, after XDP counted them: shapes the uploads of shaped flows.
//! - `empty_xdp`: does nothing; the baseline that benchmarks divide by.
//!
//! Built only for `bpfel-unknown-none` (see `classifier-user/build.rs`); on the host the
//! crate compiles to a stub so `cargo clippy --workspace` lints the same source.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// `atomic_xadd` (see atomic.rs); Debian's BPF `core` is built with RUSTC_BOOTSTRAP.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

mod atomic;
mod bounded_loop;
mod classify;
mod enforce;
mod flows;
mod maps;
mod packet;
mod reset;
mod shape;
mod stats;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use classifier_common::{
    classify::state,
    config::tail,
    flow::{FlowEntry, FlowKey},
    parse::{PacketBytes, PacketMeta, Parsed, parse_headers},
    stats::Stat,
};

use crate::{
    flows::{Direction, WireCount},
    maps::CLASSIFIERS,
    packet::DirectPacket,
};

/// Client→server packets on the LAN interface: counted, then classified while the flow's
/// class is open. A packet we cannot parse is passed and counted, never dropped.
#[xdp]
pub fn lan_ingress(ctx: XdpContext) -> u32 {
    let Some(seen) = observe(&DirectPacket::xdp(&ctx), 1, Direction::Upload) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: the flow's map value, live for this program run.
    if unsafe { (*seen.entry).class_state } != state::DONE {
        // SAFETY: tail calls end this program; the classifier gives the verdict then. On
        // failure (no program loaded) the flow is judged as it stands.
        unsafe { CLASSIFIERS.tail_call(&ctx, tail::CLASSIFY_UPLOAD) };
    }
    // SAFETY: as above.
    unsafe { enforce::upload_action(&ctx, &seen.meta, &seen.key, seen.entry) }
}

/// Classification of an open flow's client→server packet (tail call from `lan_ingress`).
#[xdp]
pub fn classify_upload(ctx: XdpContext) -> u32 {
    classify::classify_upload(&ctx)
}

/// The flow's first bytes as a TLS ClientHello (tail call from `classify_upload`).
#[xdp]
pub fn parse_tls(ctx: XdpContext) -> u32 {
    classify::parse_tls(&ctx)
}

/// The flow's first bytes as an HTTP request (tail call from `classify_upload`).
#[xdp]
pub fn parse_http(ctx: XdpContext) -> u32 {
    classify::parse_http(&ctx)
}

/// A found server name to the flow's class (tail call from `parse_tls` / `parse_http`).
#[xdp]
pub fn name_lookup(ctx: XdpContext) -> u32 {
    classify::name_lookup(&ctx)
}

/// Server→client packets leaving the LAN interface. `TC_ACT_PIPE` hands the packet on to
/// whatever runs after us (with TCX: the next program, then the default action).
#[classifier]
pub fn lan_egress(ctx: TcContext) -> i32 {
    // SAFETY: `skb` is the program's context pointer, valid for the whole run.
    let segments = unsafe { (*ctx.skb.skb).gso_segs };
    let Some(seen) = observe(&DirectPacket::tc(&ctx), segments, Direction::Download) else {
        return TC_ACT_PIPE;
    };
    // SAFETY: as below.
    unsafe { classify::tracker::forward_reply(&ctx, &seen.meta, &seen.key, seen.entry) };
    // SAFETY: the flow's map value, live for this program run.
    if unsafe { enforce::blocks(&seen.key, seen.entry, seen.count.bytes) } {
        return TC_ACT_SHOT;
    }
    // SAFETY: as above; `blocks` has worked the verdict out.
    unsafe { shape_if_shaped(&ctx, &seen.key, seen.entry, seen.count) }
}

/// Client→server packets leaving the WAN interface: the uploads of shaped flows go into
/// their class. Counted already by `lan_ingress`; only looked up here. A packet of no
/// known flow (the gateway's own, or rewritten by NAT on the way) passes untouched.
#[classifier]
pub fn wan_egress(ctx: TcContext) -> i32 {
    let mut meta = PacketMeta::default();
    if !matches!(
        parse_headers(&DirectPacket::tc(&ctx), &mut meta),
        Ok(Parsed::Ip)
    ) {
        return TC_ACT_PIPE;
    }
    let key = flows::flow_key(&meta, Direction::Upload);
    let Some(entry) = maps::FLOWS.get_ptr_mut(key) else {
        return TC_ACT_PIPE;
    };
    // SAFETY: as in lan_egress.
    let segments = unsafe { (*ctx.skb.skb).gso_segs };
    // SAFETY: the flow's map value, live for this program run.
    unsafe {
        enforce::verdict_of(&key, entry);
        shape_if_shaped(&ctx, &key, entry, WireCount::of(&meta, segments))
    }
}

/// [`shape::shape_skb`] for a flow whose verdict (worked out) is `shape`; else pass.
///
/// # Safety
/// `entry` must point to the flow's live map value.
#[inline(always)]
unsafe fn shape_if_shaped(
    ctx: &TcContext,
    key: &FlowKey,
    entry: *mut FlowEntry,
    count: WireCount,
) -> i32 {
    // SAFETY: forwarded from the caller.
    unsafe {
        if (*entry).verdict != classifier_common::policy::verdict::SHAPE {
            return TC_ACT_PIPE;
        }
        shape::shape_skb(ctx, key, entry, count)
    }
}

/// `TC_ACT_PIPE` from linux/pkt_cls.h, typed as TC programs return it (the generated
/// bindings' type differs between targets).
pub(crate) const TC_ACT_PIPE: i32 = 3;
/// `TC_ACT_SHOT`: drop.
pub(crate) const TC_ACT_SHOT: i32 = 2;

/// A packet counted against its flow.
struct Seen {
    key: FlowKey,
    entry: *mut FlowEntry,
    count: WireCount,
    meta: PacketMeta,
}

/// Baseline for benchmarks: the cost of running any XDP program at all.
#[xdp]
pub fn empty_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Parses the packet and counts it against its flow (returned), or against the global
/// counter that says why it has none. `segments` is the skb's GSO segment count (1 in XDP).
#[inline(always)]
fn observe<P: PacketBytes>(packet: &P, segments: u32, direction: Direction) -> Option<Seen> {
    stats::bump(Stat::Packets);
    let mut meta = PacketMeta::default();
    match parse_headers(packet, &mut meta) {
        Ok(Parsed::Ip) => {
            let key = flows::flow_key(&meta, direction);
            let count = WireCount::of(&meta, segments);
            let entry = flows::account(&key, &meta, count, direction)?;
            Some(Seen {
                key,
                entry,
                count,
                meta,
            })
        }
        Ok(Parsed::NotIp) => {
            stats::bump(Stat::NotIp);
            None
        }
        Ok(Parsed::Fragment) => {
            stats::bump(Stat::Fragments);
            None
        }
        Err(_) => {
            stats::bump(Stat::Malformed);
            None
        }
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable path that does not end in an exit, so a reachable
    // panic fails the load; this body is never run.
    loop {}
}

/// GPL-compatible licence: required for helpers such as `bpf_ktime_get_boot_ns`.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "classifier-ebpf is a BPF object: it is built for bpfel-unknown-none by classifier-user's build script"
    );
    std::process::exit(2);
}
