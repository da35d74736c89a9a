//! Classification of client → server packets, run (by tail call from the fast path) only
//! for flows whose class is not settled yet.
//!
//! A flow's `class_state` walks INSPECTING → (REASSEMBLING | QUIC_PENDING) → DONE:
//! - first look (any packet): the BitTorrent peer cache, then a port rule (provisional);
//! - first payload: TCP → BitTorrent handshake, TLS ClientHello, HTTP request (collected
//!   over in-order segments when split); UDP → QUIC Initial (to the daemon), BitTorrent
//!   DHT / uTP / UDP tracker;
//! - DONE: the fast path only counts.

pub mod apply;
mod datagram;
mod job;
mod name;
mod stream;
pub mod tracker;

pub use name::name_lookup;
pub use stream::{parse_http, parse_tls};

use aya_ebpf::{bindings::xdp_action::XDP_PASS, programs::XdpContext};
use classifier_common::{
    classify::{Method, app, class_flags, state},
    config::{Config, PeerKey, PortKey},
    flow::{FlowEntry, FlowKey, flow_flags, ip_proto},
    parse::{PacketMeta, Parsed, parse_headers},
};

use self::apply::{finish, set_bittorrent, set_class};
use crate::{
    flows::{Direction, flow_key, now_ns},
    maps::{CONFIG, FLOWS, PEERS, PORTS},
    packet::{DirectPacket, HelperPacket},
};

/// The `classify_upload` program: re-parses the packet (a tail call passes only the
/// context), finds its flow, and moves the flow's classification on.
#[inline(always)]
pub fn classify_upload(ctx: &XdpContext) -> u32 {
    let mut meta = PacketMeta::default();
    if parse_headers(&DirectPacket::xdp(ctx), &mut meta) != Ok(Parsed::Ip) {
        return XDP_PASS;
    }
    let packet = HelperPacket::new(ctx);
    let key = flow_key(&meta, Direction::Upload);
    let Some(entry) = FLOWS.get_ptr_mut(key) else {
        return XDP_PASS;
    };
    let config = CONFIG.get(0).copied().unwrap_or_default();
    // SAFETY: `entry` is the flow's map value, live for this program run.
    let verdict = unsafe {
        match (*entry).class_state {
            state::INSPECTING => inspect(ctx, &packet, &meta, &key, entry, &config),
            state::REASSEMBLING => stream::continue_reassembly(ctx, &meta, &key, entry),
            state::QUIC_PENDING => datagram::pending(ctx, &packet, &meta, &key, entry, &config),
            _ => XDP_PASS,
        }
    };
    if verdict != XDP_PASS {
        return verdict; // a QUIC flow held while its name is read
    }
    // SAFETY: as above.
    unsafe { crate::enforce::upload_action(ctx, &meta, &key, entry) }
}

#[inline(always)]
unsafe fn inspect(
    ctx: &XdpContext,
    packet: &HelperPacket<'_>,
    meta: &PacketMeta,
    key: &FlowKey,
    entry: *mut FlowEntry,
    config: &Config,
) -> u32 {
    // SAFETY: forwarded from the caller.
    unsafe {
        if (*entry).class_flags & class_flags::FIRST_LOOK_DONE == 0 {
            first_look(key, entry, config);
            if (*entry).class_state == state::DONE {
                return XDP_PASS;
            }
        }
        if meta.payload_len == 0 {
            return XDP_PASS; // handshake and bare ACKs: wait for payload
        }
        (*entry).inspected = (*entry).inspected.saturating_add(1);
        let verdict = match meta.protocol {
            ip_proto::TCP => stream::inspect_first(ctx, packet, meta, key, entry),
            ip_proto::UDP => datagram::inspect(ctx, packet, meta, key, entry, config),
            _ => {
                finish(key, entry, None);
                XDP_PASS
            }
        };
        if (*entry).class_state == state::INSPECTING && (*entry).inspected >= config.max_inspected {
            finish(key, entry, None);
        }
        verdict
    }
}

/// Before any payload: a peer the cache knows makes the flow BitTorrent at once; a port
/// rule gives a provisional class that a name may still replace.
#[inline(always)]
unsafe fn first_look(key: &FlowKey, entry: *mut FlowEntry, config: &Config) {
    // SAFETY: forwarded from the caller.
    unsafe {
        (*entry).class_flags |= class_flags::FIRST_LOOK_DONE;
        if let Some(seen) = PEERS.get_ptr(PeerKey::server_of(key)) {
            let age = now_ns().saturating_sub(*seen);
            if age < config.peer_ttl_secs as u64 * 1_000_000_000 {
                set_bittorrent(key, entry, Method::PeerCache);
                finish(key, entry, None);
                return;
            }
        }
        // The port that names the service: the server's, or for a flow the other side
        // opened (an inbound peer), the LAN client's own listening port.
        let port = if (*entry).flags & flow_flags::STARTED_DOWNSTREAM != 0 {
            key.client_port
        } else {
            key.server_port
        };
        let port_key = PortKey {
            protocol: key.protocol,
            _pad: 0,
            port,
        };
        if let Some(rule) = PORTS.get_ptr(port_key) {
            let mut class = *rule;
            class.method = Method::Port as u8;
            class.class_flags |= class_flags::PORT_PROVISIONAL;
            if class.app == app::UNKNOWN {
                class.app = (*entry).app;
            }
            set_class(entry, class);
        }
    }
}
