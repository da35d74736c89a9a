//! A TCP flow's client segments while it is classified: the SYN's facts, the decoys no
//! server would take (which name nothing), the watch after a name for a second version of
//! its bytes, and the hand-over of real segments to `stream_segment`.

use core::ops::ControlFlow;

use aya_ebpf::{bindings::xdp_action::XDP_PASS, programs::XdpContext};
use classifier_common::{
    classify::{app, class_flags, evasion, state},
    config::{Config, MAX_STREAM_SEGMENTS, STREAM_CAP, tail},
    flow::{FlowEntry, FlowKey, TcpStart, tcp_flags, tcp_start},
    parse::{
        PacketBytes, PacketMeta, bittorrent,
        headers::ip_flags,
        tcp::{self, MAX_OPTION_STEPS, OptionWalk, TcpOptions, checksum},
    },
    policy::policy_flags,
    stats::Stat,
};

use super::{
    apply::{end_watch, finish, give_up, note_evasion, release_buffer, set_bittorrent},
    job,
};
use crate::{
    bounded_loop::{LoopBody, bounded_loop},
    maps::{LOOPS, LoopState},
    packet::{DirectPacket, HelperPacket, within},
};

/// Segments a named flow is watched for at most (a second version of its first bytes comes
/// right after the first, or not at all).
const MAX_WATCHED: u8 = MAX_STREAM_SEGMENTS + 16;

/// A client→server TCP packet of a flow being classified (or watched).
#[inline(always)]
pub fn classify_segment(
    ctx: &XdpContext,
    meta: &PacketMeta,
    key: &FlowKey,
    entry: &mut FlowEntry,
    config: &Config,
) -> u32 {
    let syn = meta.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
    if syn {
        note_syn(ctx, meta, key, entry);
    }
    if meta.payload_len == 0 || entry.class_state == state::DONE {
        return XDP_PASS; // handshake, bare ACKs, FIN: nothing to read
    }
    if entry.tcp.flags & tcp_start::BASE == 0 {
        // Picked up mid-stream (no SYN seen): this segment is where the stream starts.
        entry.tcp = TcpStart {
            client_isn: meta.tcp_seq.wrapping_sub(1),
            ttl: meta.ttl,
            ip_flags: meta.ip_flags,
            flags: tcp_start::BASE,
            ..entry.tcp
        };
    }
    let bit = decoy(ctx, meta, entry, syn);
    if bit != 0 {
        // The server drops this segment: it names nothing.
        note_evasion(entry, bit, decoy_stat(bit));
        return XDP_PASS;
    }
    let offset = meta
        .tcp_seq
        .wrapping_sub(entry.tcp.client_isn.wrapping_add(1)) as i32;
    if offset < 0 {
        // Before the stream's start: outside the window.
        note_evasion(entry, evasion::BAD_SEQUENCE, Stat::DecoySequence);
        return XDP_PASS;
    }
    let offset = offset as u32 as usize;
    entry.inspected = entry.inspected.saturating_add(1);
    let class_state = entry.class_state;
    if class_state == state::WATCH {
        if offset >= entry.named_end as usize || entry.inspected >= MAX_WATCHED {
            end_watch(key, entry);
            return XDP_PASS;
        }
        // Bytes the name was read from, again: read them as a second version.
        entry.class_flags |= class_flags::RECHECK;
    } else if entry.class_flags & class_flags::OPAQUE != 0 {
        return opaque_segment(ctx, meta, key, entry, config);
    }
    if meta.tcp_flags & tcp_flags::URG != 0 {
        // Urgent data is taken out of the stream the server's application reads
        // (byedpi's --oob): the bytes cannot be read as that application sees them.
        note_evasion(entry, evasion::BAD_OPTIONS, Stat::DecoyOptions);
        give_up(key, entry, app::TLS);
        return XDP_PASS;
    }
    if offset >= STREAM_CAP {
        // The client has gone on past the bytes the classifier reads without them
        // having been read: unreadable, not allowed.
        give_up(key, entry, app::TLS);
        return XDP_PASS;
    }
    let Some(job) = job::start(key, meta.l3_len) else {
        return XDP_PASS;
    };
    let l4_len = meta.l3_len - (meta.l4_offset - meta.l3_offset);
    // SAFETY: this CPU's job value, live for the program run.
    unsafe {
        (*job).stream_offset = offset as u16;
        (*job).payload_offset = meta.payload_offset;
        (*job).payload_len = meta.payload_len;
        (*job).l4_offset = meta.l4_offset;
        (*job).l4_header_len = meta.payload_offset - meta.l4_offset;
        (*job).pseudo_sum = checksum::pseudo_header_sum(meta, l4_len) as u32;
    }
    job::hand_over(ctx, tail::STREAM_SEGMENT)
}

/// A later segment of a stream whose first bytes named nothing: a BitTorrent handshake at
/// its start (after an MSE exchange that settled on plaintext), or, after enough of them,
/// nothing to learn.
#[inline(always)]
fn opaque_segment(
    ctx: &XdpContext,
    meta: &PacketMeta,
    key: &FlowKey,
    entry: &mut FlowEntry,
    config: &Config,
) -> u32 {
    let packet = HelperPacket::new(ctx);
    let offset = meta.payload_offset as usize;
    let len = meta.payload_len as usize;
    if bittorrent::tcp_signature(&packet, offset, len).is_some() {
        set_bittorrent(key, entry, classifier_common::classify::Method::BtHandshake);
        finish(key, entry, None);
    } else if entry.inspected >= config.max_inspected {
        finish(key, entry, None);
    }
    XDP_PASS
}

/// The client's SYN: where its stream starts, and how its real segments will look (TTL,
/// timestamps, signature option, IP header layout). A SYN with another ISN on a flow that
/// has a class is a new connection on the same addresses and ports: its class is read
/// afresh, not inherited.
// Its own BPF function: its locals would not fit the caller's 512-byte stack frame.
#[inline(never)]
fn note_syn(ctx: &XdpContext, meta: &PacketMeta, key: &FlowKey, entry: &mut FlowEntry) {
    let options = options_of(ctx, meta);
    let tcp = entry.tcp;
    if tcp.flags & tcp_start::SYN != 0 {
        if tcp.client_isn == meta.tcp_seq {
            return; // a retransmitted SYN
        }
        reset_class(key, entry);
    }
    let mut flags = tcp_start::BASE | tcp_start::SYN;
    if options.has_timestamp {
        flags |= tcp_start::TIMESTAMPS;
    }
    if options.signature {
        flags |= tcp_start::SIGNATURE;
    }
    entry.tcp = TcpStart {
        client_isn: meta.tcp_seq,
        server_isn: 0,
        ts_val: options.ts_val,
        ttl: meta.ttl,
        flags,
        ip_flags: meta.ip_flags,
        _pad: 0,
    };
}

/// Forgets a flow's class, for a new connection on its addresses and ports.
#[inline(always)]
fn reset_class(key: &FlowKey, entry: &mut FlowEntry) {
    entry.class_state = state::INSPECTING;
    entry.class_flags = 0;
    entry.method = 0;
    entry.category = 0;
    entry.app = app::UNKNOWN;
    entry.inspected = 0;
    entry.evasion = 0;
    entry.alt_category = 0;
    entry.named_end = 0;
    entry.name_hash = 0;
    entry.held = 0;
    entry.policy_flags &= !policy_flags::DECIDED;
    release_buffer(key, entry);
}

/// Why the server would drop this data segment, as an [`evasion`] bit (0: it would take
/// it): a decoy names nothing. (A wrong checksum is found when the payload is summed.) A
/// plain integer, not an `Option`: a non-inlined BPF function's signature goes into the
/// object's BTF, where the kernel refuses Rust's enums with data.
// Its own BPF function: its locals would not fit the caller's 512-byte stack frame.
#[inline(never)]
fn decoy(ctx: &XdpContext, meta: &PacketMeta, entry: &mut FlowEntry, syn: bool) -> u8 {
    let (tcp, download_bytes) = (entry.tcp, entry.download.bytes);
    // A TTL of 1 dies at this gateway; any TTL other than the SYN's was set to die on the
    // way (zapret's and GoodbyeDPI's low-TTL fakes): the client's real segments all carry
    // the TTL its stack gave the SYN.
    if meta.ttl <= 1 || meta.ttl != tcp.ttl {
        return evasion::BAD_TTL;
    }
    if !syn {
        // Data without ACK on an open connection is dropped (RFC 9293 §3.10.7.4).
        if meta.tcp_flags & tcp_flags::ACK == 0 {
            return evasion::BAD_SEQUENCE;
        }
        // It acknowledges what the server has sent, not more, nor before its ISN.
        if tcp.flags & tcp_start::SYN_ACK != 0 {
            let acked = meta.tcp_ack.wrapping_sub(tcp.server_isn.wrapping_add(1)) as u64;
            if acked > download_bytes {
                return evasion::BAD_SEQUENCE;
            }
        }
    }
    if meta.ip_flags != tcp.ip_flags || meta.ip_flags & ip_flags::V6_HOP_BY_HOP_MISPLACED != 0 {
        return evasion::BAD_OPTIONS;
    }
    if meta.ip_version == 4 && !ipv4_header_checksum_ok(ctx, meta) {
        return evasion::BAD_CHECKSUM;
    }
    let options = options_of(ctx, meta);
    let signed = options.signature && tcp.flags & tcp_start::SIGNATURE == 0;
    // PAWS (RFC 7323 §5): a TSval older than one the server has seen is dropped.
    let stale = options.has_timestamp
        && tcp.flags & tcp_start::TIMESTAMPS != 0
        && (options.ts_val.wrapping_sub(tcp.ts_val) as i32) < 0;
    if options.malformed || signed || stale {
        return evasion::BAD_OPTIONS;
    }
    0
}

/// The counter of decoys of kind `bit`.
#[inline(always)]
fn decoy_stat(bit: u8) -> Stat {
    match bit {
        evasion::BAD_TTL => Stat::DecoyTtl,
        evasion::BAD_SEQUENCE => Stat::DecoySequence,
        evasion::BAD_CHECKSUM => Stat::DecoyChecksum,
        _ => Stat::DecoyOptions,
    }
}

/// The segment's TCP options.
#[inline(always)]
fn options_of(ctx: &XdpContext, meta: &PacketMeta) -> TcpOptions {
    if tcp::header_len(meta) <= tcp::MIN_HEADER_LEN {
        return TcpOptions::default(); // none to walk
    }
    let Some(state) = LOOPS.get_ptr_mut(0) else {
        return TcpOptions {
            malformed: true,
            ..TcpOptions::default()
        };
    };
    // SAFETY: this CPU's loop state, live for the program run.
    unsafe {
        (*state).options = OptionWalk::new(meta.l4_offset as usize, tcp::header_len(meta));
    }
    let mut walk = Options {
        packet: HelperPacket::new(ctx),
        state,
    };
    bounded_loop(MAX_OPTION_STEPS as u32, &mut walk);
    // SAFETY: as above.
    unsafe { (*state).options.options }
}

/// [`OptionWalk`] as a `bpf_loop` body; the walk is in this CPU's `LOOPS`.
struct Options<'a> {
    packet: HelperPacket<'a>,
    state: *mut LoopState,
}

impl LoopBody for Options<'_> {
    #[inline(always)]
    fn step(&mut self, _index: u32) -> ControlFlow<()> {
        // SAFETY: this CPU's loop state (see `options_of`).
        unsafe { (*self.state).options.step(&self.packet) }
    }

    #[inline(always)]
    fn loop_state(&self) -> Option<*mut LoopState> {
        Some(self.state)
    }
}

/// Whether the IPv4 header's checksum holds: a router drops a packet whose does not, so
/// such a decoy never leaves the gateway.
#[inline(always)]
fn ipv4_header_checksum_ok(ctx: &XdpContext, meta: &PacketMeta) -> bool {
    let l3 = meta.l3_offset as usize;
    // The usual header, without options, is summed where it lies. (The IP header starts
    // within the first 64 bytes: the bound lets the verifier follow the packet read.)
    if l3 < 64
        && let Some(header) = DirectPacket::xdp(ctx).read::<20>(within(l3, 63))
        && header[0] == 0x45
    {
        return checksum::fold(checksum::sum_bytes(&header)) == 0xffff;
    }
    let Some([version_ihl, _]) = HelperPacket::new(ctx).read::<2>(l3) else {
        return false;
    };
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    match super::checksum::packet_sum::<60>(ctx, l3, header_len) {
        Some(sum) => checksum::fold(sum) == 0xffff,
        None => false,
    }
}
