//! UDP flows: QUIC Initials (to the daemon, which reads their server name) and BitTorrent
//! DHT, uTP and UDP tracker datagrams. A datagram the server would not take (a wrong
//! checksum, a TTL of 1) names nothing; one that names nothing may be a peer its client
//! learnt of.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    programs::XdpContext,
};
use classifier_common::{
    classify::{Method, app, evasion, state},
    config::{ClassResult, Config, checksums},
    event::{PAYLOAD_CAP, kind},
    flow::{FlowEntry, FlowKey},
    parse::{
        PacketMeta,
        bittorrent::{self, BtSignature},
        quic,
        tcp::{ChecksumStatus, checksum},
    },
    stats::Stat,
};

use super::{
    apply::{finish, known_peer, note_evasion, protocol_category, set_bittorrent, set_class},
    checksum::{Segment, Transport, segment_status},
};
use crate::{
    events::send_payload,
    maps::{CLASS_RESULTS, SEGMENT},
    packet::{HelperPacket, MAX_SEGMENT, load_into, xdp_load},
    sources::{self, Quota},
    stats,
};

/// Initials of one flow handed to the daemon at most: Chrome's post-quantum ClientHello
/// needs two; retransmissions add nothing.
const MAX_QUIC_INITIALS: u8 = 3;
/// Client packets a QUIC flow may wait for the daemon's answer before it is left at
/// "QUIC, name unknown".
const MAX_QUIC_PENDING_PACKETS: u64 = 64;

/// The first datagram of a UDP flow.
#[inline(always)]
pub fn inspect(
    ctx: &XdpContext,
    packet: &HelperPacket<'_>,
    meta: &PacketMeta,
    key: &FlowKey,
    entry: &mut FlowEntry,
    config: &Config,
) -> u32 {
    let offset = meta.payload_offset as usize;
    let len = meta.payload_len as usize;
    if let Some((bit, stat)) = decoy(ctx, meta, config) {
        note_evasion(entry, bit, stat);
        // Not counted as looked at: the real datagram is still to come.
        entry.inspected = entry.inspected.saturating_sub(1);
        return XDP_PASS;
    }
    if quic::client_initial_version(packet, offset, len).is_some() {
        let class = ClassResult {
            category: protocol_category(app::QUIC),
            app: app::QUIC,
            method: Method::None as u8,
            ..ClassResult::default()
        };
        set_class(entry, class);
        // The daemon reads a client's Initials within its quota; beyond it (a flood of
        // fake Initials) the flow is QUIC of no known name, which the policy judges.
        if config.quic_mode == classifier_common::config::quic_mode::CLASSIFY
            && sources::take(&key.client_addr, Quota::Quic, config)
        {
            send_initial(ctx, meta, key);
            entry.class_state = state::QUIC_PENDING;
            return hold(config);
        }
        entry.method = Method::Quic as u8;
        finish(key, entry, None);
        return XDP_PASS;
    }
    if let Some(signature) = bittorrent::udp_signature(packet, offset, len) {
        let method = match signature {
            BtSignature::Dht => Method::BtDht,
            BtSignature::Utp => Method::BtUtp,
            BtSignature::UdpTrackerConnect | BtSignature::Handshake => Method::BtTracker,
        };
        set_bittorrent(key, entry, method);
        finish(key, entry, None);
        return XDP_PASS;
    }
    if known_peer(key, config) {
        set_bittorrent(key, entry, Method::PeerCache);
        finish(key, entry, None);
        return XDP_PASS;
    }
    finish(key, entry, None);
    XDP_PASS
}

/// Why the server would not take this datagram, if it would not: a TTL or hop limit of 1
/// (it dies at this gateway), or a wrong UDP checksum.
#[inline(always)]
fn decoy(ctx: &XdpContext, meta: &PacketMeta, config: &Config) -> Option<(u8, Stat)> {
    if meta.ttl <= 1 {
        return Some((evasion::BAD_TTL, Stat::DecoyTtl));
    }
    let len = meta.payload_len as usize;
    if config.checksums == checksums::OFF || len > MAX_SEGMENT {
        return None;
    }
    let staged = SEGMENT.get_ptr_mut(0)?;
    // SAFETY: this CPU's value, live for the program run.
    if unsafe { load_into(ctx, staged, 0, meta.payload_offset as usize, len) } != Ok(len) {
        return None;
    }
    let l4_len = meta.l3_len - (meta.l4_offset - meta.l3_offset);
    let segment = Segment {
        transport: Transport::Udp {
            ipv4: meta.ip_version == 4,
        },
        l4_offset: meta.l4_offset as usize,
        header_len: (meta.payload_offset - meta.l4_offset) as usize,
        pseudo_sum: checksum::pseudo_header_sum(meta, l4_len),
        pos: 0,
        len,
    };
    // SAFETY: as above.
    let accepted = match unsafe { segment_status(ctx, &segment, staged) } {
        ChecksumStatus::Valid => true,
        ChecksumStatus::Offloaded => config.checksums == checksums::ALLOW_OFFLOADED,
        ChecksumStatus::Invalid => false,
    };
    (!accepted).then_some((evasion::BAD_CHECKSUM, Stat::DecoyChecksum))
}

/// A later client packet of a QUIC flow whose Initial is with the daemon: apply its answer
/// if it has come, hand over further Initials (the ClientHello may span two), hold or pass.
#[inline(always)]
pub fn pending(
    ctx: &XdpContext,
    packet: &HelperPacket<'_>,
    meta: &PacketMeta,
    key: &FlowKey,
    entry: &mut FlowEntry,
    config: &Config,
) -> u32 {
    if let Some(result) = CLASS_RESULTS.get_ptr(key) {
        // SAFETY: a map value pointer, valid for this program run.
        set_class(entry, unsafe { *result });
        let _ = CLASS_RESULTS.remove(key);
        // The daemon made this class and knows the name: no event back to it.
        entry.class_state = state::DONE;
        stats::bump(Stat::ClassifiedByName);
        return XDP_PASS;
    }
    let initial = quic::client_initial_version(
        packet,
        meta.payload_offset as usize,
        meta.payload_len as usize,
    );
    if initial.is_some() && entry.inspected < MAX_QUIC_INITIALS {
        match decoy(ctx, meta, config) {
            Some((bit, stat)) => note_evasion(entry, bit, stat),
            None => {
                entry.inspected += 1;
                send_initial(ctx, meta, key);
            }
        }
    }
    if entry.upload.packets > MAX_QUIC_PENDING_PACKETS {
        entry.method = Method::Quic as u8;
        finish(key, entry, None);
        return XDP_PASS;
    }
    hold(config)
}

/// XDP verdict for a QUIC flow waiting for the daemon.
#[inline(always)]
fn hold(config: &Config) -> u32 {
    if config.quic_hold != 0 {
        XDP_DROP
    } else {
        XDP_PASS
    }
}

/// Hands the datagram's UDP payload to the daemon ([`send_payload`]).
#[inline(always)]
fn send_initial(ctx: &XdpContext, meta: &PacketMeta, key: &FlowKey) {
    send_payload(kind::QUIC_INITIAL, meta, key, Stat::QuicToDaemon, |data| {
        let (from, len) = (meta.payload_offset as usize, meta.payload_len as usize);
        // SAFETY: `data` takes PAYLOAD_CAP bytes (send_payload).
        unsafe { xdp_load::<PAYLOAD_CAP>(ctx, from, data, len) }
    });
}
