//! The classifier's kernel side: one BPF object whose programs share the maps in
//! [`maps`].
//!
//! - `lan_ingress` (XDP, gateway LAN interface, ingress): sees every client→server packet
//!   first; counts it against its flow, and tail-calls `classify_upload` while the flow's
//!   class is not settled.
//! - `classify_upload` (XDP, tail call): TLS SNI, HTTP Host, QUIC, BitTorrent, ports.
//! - `lan_egress` (TC, gateway LAN interface, egress): sees every server→client packet;
//!   counts it against the same flow, drops it if blocked, shapes it if shaped.
//! - `lan_replies` (TC, gateway LAN interface, ingress; only where XDP_TX cannot be relied
//!   on): sends the fail-fast answers XDP built back out of the interface ([`replies`]).
//! - `lan_nat_mark` (TC, gateway LAN interface, ingress; only on a gateway that translates
//!   addresses): hands each upload's flow over to `wan_egress` in the skb mark ([`nat`]).
//! - `wan_egress` (TC, gateway WAN interface, egress): client→server packets on their way
//!   out, after XDP counted them (and after NAT): shapes the uploads of shaped flows.
//! - `empty_xdp`: does nothing; the baseline that benchmarks divide by.
//!
//! Built only for `bpfel-unknown-none` (see `bpf-build/src/lib.rs`); on the host the
//! crate compiles to a stub so `cargo clippy --workspace` lints the same source.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// `atomic_xadd` (see atomic.rs); Debian's BPF `core` is built with RUSTC_BOOTSTRAP.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
// The legacy build's register-only barrier (`packet::register_opaque`).
#![cfg_attr(
    all(target_arch = "bpf", feature = "legacy-kernel"),
    feature(asm_experimental_arch)
)]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

mod atomic;
mod bounded_loop;
mod classify;
mod enforce;
mod events;
mod flows;
mod maps;
mod nat;
mod packet;
mod replies;
mod reset;
mod shape;
mod sources;
mod stats;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use classifier_common::{
    classify::state,
    config::tail,
    flow::{FlowEntry, FlowKey, FragmentKey, tcp_flags, tcp_start},
    parse::{PacketBytes, PacketMeta, Parsed, headers::fragment, parse_headers},
    stats::Stat,
};

use crate::{
    flows::{Accounted, Direction, Flow, WireCount},
    maps::{CLASSIFIERS, FRAGMENTS, SCRATCH_KEYS},
    packet::DirectPacket,
};

/// Client→server packets on the LAN interface: counted, then classified while the flow's
/// class is open. A packet we cannot parse is passed and counted, never dropped.
#[xdp]
pub fn lan_ingress(ctx: XdpContext) -> u32 {
    let mut meta = PacketMeta::default();
    let mut key = FlowKey::default();
    let mut seen = match observe(
        &DirectPacket::xdp(&ctx),
        &mut meta,
        &mut key,
        1,
        Direction::Upload,
    ) {
        Observed::Flow(seen) => seen,
        Observed::Pass => return xdp_action::XDP_PASS,
        Observed::Drop => return xdp_action::XDP_DROP,
    };
    if needs_classifier(&seen, &meta) {
        // SAFETY: tail calls end this program; the classifier gives the verdict then. On
        // failure (no program loaded) the flow is judged as it stands.
        unsafe { CLASSIFIERS.tail_call(&ctx, tail::CLASSIFY_UPLOAD) };
    }
    enforce::upload_action(&ctx, &meta, &key, &mut seen.entry)
}

/// Whether the classifier has something to learn from this client packet: anything of a
/// flow still being classified; the payload of a watched one; and a SYN on a flow whose
/// class is settled, which opens a new connection on the same addresses and ports (its
/// name must be read, not inherited).
#[inline(always)]
fn needs_classifier(seen: &Seen<'_>, meta: &PacketMeta) -> bool {
    if meta.fragment == fragment::LATER {
        return false; // no transport header: nothing to read
    }
    let syn = meta.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
    match seen.entry.class_state {
        state::DONE => syn,
        state::WATCH => syn || meta.payload_len != 0,
        _ => true,
    }
}

/// Classification of an open flow's client→server packet (tail call from `lan_ingress`).
#[xdp]
// Legacy build: the body in the entry's own frame. 5.15 counts the entry's empty frame as
// 32 bytes of the 512 a chain of calls may use, and the deepest chain needs them all.
#[cfg_attr(feature = "legacy-kernel", inline(always))]
pub fn classify_upload(ctx: XdpContext) -> u32 {
    classify::classify_upload(&ctx)
}

/// The flow's first bytes as an HTTP request (tail call from `classify_upload`).
#[xdp]
pub fn parse_http(ctx: XdpContext) -> u32 {
    classify::parse_http(&ctx)
}

/// A found server name to the flow's class (tail call from `parse_http` and
/// `parse_tls_records`; a ClientHello's name is looked up in `stream_segment` itself).
#[xdp]
pub fn name_lookup(ctx: XdpContext) -> u32 {
    classify::name_lookup(&ctx)
}

/// A TCP segment into the flow's stream buffer, in sequence-number order whatever order it
/// came in (tail call from `classify_upload`).
#[xdp]
// Legacy build: as `classify_upload`.
#[cfg_attr(feature = "legacy-kernel", inline(always))]
pub fn stream_segment(ctx: XdpContext) -> u32 {
    classify::stream_segment(&ctx)
}

/// A ClientHello spread over several TLS records, joined and parsed (tail call from
/// `stream_segment`).
#[xdp]
pub fn parse_tls_records(ctx: XdpContext) -> u32 {
    classify::parse_tls_records(&ctx)
}

/// The packet's verdict once classification has looked at it (tail call from every
/// classification program).
#[xdp]
pub fn enforce_upload(ctx: XdpContext) -> u32 {
    classify::enforce_upload(&ctx)
}

/// Server→client packets leaving the LAN interface. `TC_ACT_PIPE` hands the packet on to
/// whatever runs after us (with TCX: the next program, then the default action).
#[classifier]
pub fn lan_egress(ctx: TcContext) -> i32 {
    if replies::is_sent_answer(&ctx) {
        return TC_ACT_PIPE; // the client's blocked packet, answered: counted at XDP
    }
    // SAFETY: `skb` is the program's context pointer, valid for the whole run.
    let segments = unsafe { (*ctx.skb.skb).gso_segs };
    let mut meta = PacketMeta::default();
    let mut key = FlowKey::default();
    let mut seen = match observe(
        &DirectPacket::tc(&ctx),
        &mut meta,
        &mut key,
        segments,
        Direction::Download,
    ) {
        Observed::Flow(seen) => seen,
        Observed::Pass | Observed::Drop => return TC_ACT_PIPE,
    };
    note_syn_ack(&mut seen.entry, &meta);
    note_server_ack(&mut seen.entry, &meta, &key);
    classify::tracker::forward_reply(&ctx, &meta, &key, &mut seen.entry);
    if enforce::blocks(&key, &mut seen.entry, seen.count.bytes) {
        return TC_ACT_SHOT;
    }
    // `blocks` has worked the verdict out.
    shape_if_shaped(&ctx, &key, &mut seen.entry, seen.count)
}

/// Fail-fast answers XDP passed up marked, sent back out of the LAN interface (attached to
/// its ingress only where XDP_TX cannot be relied on; see [`replies`]).
#[classifier]
pub fn lan_replies(ctx: TcContext) -> i32 {
    replies::redirect_marked(&ctx)
}

/// Uploads entering the LAN interface, before netfilter: their flow goes into the skb
/// mark for `wan_egress`, which sees them translated (attached only with a NAT mark mask).
#[classifier]
pub fn lan_nat_mark(ctx: TcContext) -> i32 {
    nat::mark_upload(&ctx)
}

/// Client→server packets leaving the WAN interface: the uploads of shaped flows go into
/// their class. Counted already by `lan_ingress`; only looked up here: by the flow the
/// NAT hand-over names in the mark, or by the packet's own addresses. A packet of no
/// known flow (the gateway's own) passes untouched.
#[classifier]
pub fn wan_egress(ctx: TcContext) -> i32 {
    let mut meta = PacketMeta::default();
    if !matches!(
        parse_headers(&DirectPacket::tc(&ctx), &mut meta),
        Ok(Parsed::Ip)
    ) {
        return TC_ACT_PIPE;
    }
    let key =
        nat::handed_over(&ctx, &meta).unwrap_or_else(|| flows::flow_key(&meta, Direction::Upload));
    let Some(mut flow) = Flow::lookup(&key) else {
        return TC_ACT_PIPE;
    };
    // SAFETY: as in lan_egress.
    let segments = unsafe { (*ctx.skb.skb).gso_segs };
    enforce::verdict_of(&key, &mut flow);
    shape_if_shaped(&ctx, &key, &mut flow, WireCount::of(&meta, segments))
}

/// [`shape::shape_skb`] for a flow whose verdict (worked out) is `shape`; else pass.
#[inline(always)]
fn shape_if_shaped(ctx: &TcContext, key: &FlowKey, entry: &mut FlowEntry, count: WireCount) -> i32 {
    if entry.verdict != classifier_common::policy::verdict::SHAPE {
        return TC_ACT_PIPE;
    }
    shape::shape_skb(ctx, key, entry, count)
}

/// `TC_ACT_PIPE` from linux/pkt_cls.h, typed as TC programs return it (the generated
/// bindings' type differs between targets).
pub(crate) const TC_ACT_PIPE: i32 = 3;
/// `TC_ACT_SHOT`: drop.
pub(crate) const TC_ACT_SHOT: i32 = 2;

/// The server's SYN-ACK of a flow being classified: its ISN bounds the acknowledgment
/// numbers the client's real segments can carry (a decoy's need not).
#[inline(always)]
fn note_syn_ack(entry: &mut FlowEntry, meta: &PacketMeta) {
    if meta.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) != tcp_flags::SYN | tcp_flags::ACK {
        return;
    }
    if entry.class_state != state::DONE {
        entry.tcp.server_isn = meta.tcp_seq;
        entry.tcp.flags |= tcp_start::SYN_ACK;
    }
}

/// The server acknowledging stream bytes the classifier did not hold, while the flow's
/// first bytes are being read: it took bytes the classifier judged decoys, or never saw.
/// What the server reads must not pass unread, so the flow is unreadable (a FIN takes one
/// sequence number, hence the one byte of slack).
#[inline(always)]
fn note_server_ack(entry: &mut FlowEntry, meta: &PacketMeta, key: &FlowKey) {
    if meta.protocol != classifier_common::flow::ip_proto::TCP
        || meta.tcp_flags & tcp_flags::ACK == 0
    {
        return;
    }
    let class_state = entry.class_state;
    if class_state != state::INSPECTING && class_state != state::REASSEMBLING {
        return;
    }
    let tcp = entry.tcp;
    if tcp.flags & tcp_start::BASE == 0
        || entry.class_flags & classifier_common::classify::class_flags::OPAQUE != 0
    {
        return;
    }
    let acked = meta.tcp_ack.wrapping_sub(tcp.client_isn.wrapping_add(1)) as i32;
    if acked > entry.held as i32 + 1 {
        classify::apply::mark_unreadable(key, entry);
    }
}

/// A packet counted against its flow (its headers and flow key are the caller's).
struct Seen<'run> {
    entry: Flow<'run>,
    count: WireCount,
}

/// What [`observe`] made of a packet.
enum Observed<'run> {
    /// Counted against a flow.
    Flow(Seen<'run>),
    /// No flow: pass (not IP, unparsable, an unmatched fragment, local control traffic).
    Pass,
    /// No flow, and dropped (see [`flows::Accounted::Refused`]).
    Drop,
}

/// Baseline for benchmarks: the cost of running any XDP program at all.
#[xdp]
pub fn empty_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Parses the packet and counts it against its flow (returned), or against the global
/// counter that says why it has none. `segments` is the skb's GSO segment count (1 in XDP).
#[inline(always)]
fn observe<'run, P: PacketBytes>(
    packet: &P,
    meta: &mut PacketMeta,
    key: &mut FlowKey,
    segments: u32,
    direction: Direction,
) -> Observed<'run> {
    stats::bump(Stat::Packets);
    match parse_headers(packet, meta) {
        Ok(Parsed::Ip) => {
            *key = flows::flow_key(meta, direction);
            let count = WireCount::of(meta, segments);
            match flows::account(key, meta, count, direction) {
                Accounted::Flow(entry) => {
                    if meta.fragment == fragment::FIRST {
                        remember_fragment(meta, key);
                    }
                    Observed::Flow(Seen { entry, count })
                }
                Accounted::Untracked => Observed::Pass,
                Accounted::Refused => Observed::Drop,
            }
        }
        Ok(Parsed::NotIp) => {
            stats::bump(Stat::NotIp);
            Observed::Pass
        }
        Ok(Parsed::Fragment) => later_fragment(meta, key, segments, direction),
        Err(_) => {
            stats::bump(Stat::Malformed);
            Observed::Pass
        }
    }
}

/// The datagram a fragment belongs to, in this CPU's scratch (off the stack TC needs).
#[inline(always)]
fn fragment_key(meta: &PacketMeta) -> Option<*const FragmentKey> {
    let scratch = SCRATCH_KEYS.get_ptr_mut(0)?;
    // SAFETY: this CPU's value, live for the program run.
    unsafe {
        let key = &raw mut (*scratch).fragment;
        (*key).src_addr = meta.src_addr;
        (*key).dst_addr = meta.dst_addr;
        (*key).id = meta.frag_id;
        (*key).protocol = meta.protocol;
        (*key)._pad = [0; 3];
        Some(key)
    }
}

/// A first fragment names its flow: its datagram's later fragments are that flow's too.
#[inline(always)]
fn remember_fragment(meta: &PacketMeta, key: &FlowKey) {
    stats::bump(Stat::FirstFragments);
    if let Some(datagram) = fragment_key(meta) {
        // By reference, the key stays in the scratch map instead of being copied onto the
        // stack. SAFETY: scratch value (above), valid for the run.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let _ = FRAGMENTS.insert(unsafe { &*datagram }, key, 0);
    }
}

/// A later fragment: counted and judged with the flow its first fragment named (a blocked
/// flow's fragments are dropped too), or passed and counted apart when none did.
#[inline(always)]
fn later_fragment<'run>(
    meta: &PacketMeta,
    key: &mut FlowKey,
    segments: u32,
    direction: Direction,
) -> Observed<'run> {
    // By reference, the key stays in the scratch map (see `remember_fragment`).
    #[allow(clippy::needless_borrows_for_generic_args)]
    let named = fragment_key(meta)
        // SAFETY: scratch value (above), valid for the run.
        .and_then(|datagram| FRAGMENTS.get_ptr(unsafe { &*datagram }));
    let Some(named) = named else {
        stats::bump(Stat::Fragments);
        return Observed::Pass;
    };
    // SAFETY: a map value pointer, valid for this program run.
    *key = unsafe { *named };
    let Some(mut entry) = Flow::lookup(key) else {
        stats::bump(Stat::Fragments);
        return Observed::Pass;
    };
    let count = WireCount::of(meta, segments);
    flows::count_on(&mut entry, meta, count, direction);
    stats::bump(Stat::LaterFragments);
    Observed::Flow(Seen { entry, count })
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable path that does not end in an exit, so a reachable
    // panic fails the load; this body is never run.
    loop {}
}

/// GPL-compatible licence: required for helpers such as `bpf_ktime_get_ns`.
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
