//! Classification of client → server packets, run (by tail call from the fast path) only
//! for flows whose class is not settled yet, and for a named TCP flow's next segments.
//!
//! A flow's `class_state` walks INSPECTING → (REASSEMBLING | QUIC_PENDING) → (WATCH) → DONE:
//! - first look (any packet): a port rule (provisional: a name replaces it);
//! - TCP: the SYN's facts; each data segment the server would take (decoys name nothing) is
//!   placed by sequence number in a stream buffer, and the first bytes read as a BitTorrent
//!   handshake, a TLS ClientHello (over segments and records) or an HTTP request;
//!   first bytes that name nothing: the client's peer cache, then later segments one by
//!   one for a BitTorrent handshake;
//! - UDP: QUIC Initial (to the daemon), BitTorrent DHT / uTP / UDP tracker, the peer cache;
//! - WATCH (TCP, named): a segment over the named bytes is read as a second version;
//! - IP fragments carrying a first payload: unreadable (TCP, QUIC), noted (other UDP);
//! - DONE: the fast path only counts.
//!
//! What looks like TLS or HTTP but cannot be read gets the policy's `unreadable` category.

pub mod apply;
mod checksum;
mod datagram;
mod job;
mod name;
mod stream;
mod tcp;
pub mod tracker;

pub use name::name_lookup;
pub use stream::{parse_http, parse_tls_records, stream_segment};

use aya_ebpf::{bindings::xdp_action::XDP_PASS, programs::XdpContext};
use classifier_common::{
    classify::{Method, app, class_flags, evasion, state},
    config::{Config, PortKey},
    flow::{FlowEntry, FlowKey, flow_flags, ip_proto},
    parse::{PacketMeta, Parsed, headers::fragment, parse_headers},
};

use self::apply::{finish, give_up, set_class};
use crate::{
    flows::{Direction, Flow, flow_key},
    maps::{CONFIG, PACKET, PORTS},
    packet::{DirectPacket, HelperPacket},
};

/// UDP port of QUIC (HTTP/3): names travel in its Initials.
const QUIC_PORT: u16 = 443;

/// The `classify_upload` program: re-parses the packet (a tail call passes only the
/// context), finds its flow, and moves the flow's classification on.
#[inline(always)]
pub fn classify_upload(ctx: &XdpContext) -> u32 {
    let Some(meta) = PACKET.get_ptr_mut(0) else {
        return XDP_PASS;
    };
    // SAFETY: this CPU's value, live for the program run.
    let meta = unsafe { &mut *meta };
    *meta = PacketMeta::default();
    if parse_headers(&DirectPacket::xdp(ctx), meta) != Ok(Parsed::Ip) {
        return XDP_PASS;
    }
    let key = flow_key(meta, Direction::Upload);
    let Some(mut flow) = Flow::lookup(&key) else {
        return XDP_PASS;
    };
    let Some(config) = CONFIG.get(0) else {
        return XDP_PASS;
    };
    let verdict = classify(ctx, meta, &key, &mut flow, config);
    if verdict != XDP_PASS {
        return verdict; // a QUIC flow held while its name is read
    }
    job::verdict(ctx, &key, &mut flow)
}

/// The `enforce_upload` program: the packet's verdict under its flow's class so far, the
/// last step of every classification (tail call).
#[inline(always)]
pub fn enforce_upload(ctx: &XdpContext) -> u32 {
    let mut meta = PacketMeta::default();
    if parse_headers(&DirectPacket::xdp(ctx), &mut meta) != Ok(Parsed::Ip) {
        return XDP_PASS;
    }
    let key = flow_key(&meta, Direction::Upload);
    let Some(mut flow) = Flow::lookup(&key) else {
        return XDP_PASS;
    };
    crate::enforce::upload_action(ctx, &meta, &key, &mut flow)
}

#[inline(always)]
fn classify(
    ctx: &XdpContext,
    meta: &PacketMeta,
    key: &FlowKey,
    entry: &mut FlowEntry,
    config: &Config,
) -> u32 {
    if meta.fragment != fragment::NONE && fragmented(meta, key, entry) {
        return XDP_PASS;
    }
    if meta.protocol == ip_proto::TCP {
        // The SYN of a new connection on a settled flow's addresses goes first, so that
        // the port rules are looked at again for it.
        if entry.class_flags & class_flags::FIRST_LOOK_DONE == 0 {
            first_look(key, entry);
        }
        return tcp::classify_segment(ctx, meta, key, entry, config);
    }
    match entry.class_state {
        state::INSPECTING => {}
        state::QUIC_PENDING => {
            let packet = HelperPacket::new(ctx);
            return datagram::pending(ctx, &packet, meta, key, entry, config);
        }
        _ => return XDP_PASS,
    }
    if entry.class_flags & class_flags::FIRST_LOOK_DONE == 0 {
        first_look(key, entry);
    }
    if meta.payload_len == 0 {
        return XDP_PASS;
    }
    entry.inspected = entry.inspected.saturating_add(1);
    if meta.protocol == ip_proto::UDP {
        let packet = HelperPacket::new(ctx);
        let verdict = datagram::inspect(ctx, &packet, meta, key, entry, config);
        if entry.class_state == state::INSPECTING && entry.inspected >= config.max_inspected {
            finish(key, entry, None);
        }
        return verdict;
    }
    finish(key, entry, None);
    XDP_PASS
}

/// A first fragment of a flow still being classified: its payload is cut, so a TCP stream
/// or a QUIC datagram carried this way cannot be read (the flow is unreadable, which the
/// policy judges); other UDP is read as far as the fragment goes. Returns whether that
/// settled the packet.
#[inline(always)]
fn fragmented(meta: &PacketMeta, key: &FlowKey, entry: &mut FlowEntry) -> bool {
    let settled = entry.class_state == state::DONE || entry.class_state == state::WATCH;
    if settled {
        return true;
    }
    // (Counted as a first fragment where the fast path saw it.)
    entry.evasion |= evasion::FRAGMENTED;
    let named_by_payload = meta.protocol == ip_proto::TCP
        || (meta.protocol == ip_proto::UDP && key.server_port == QUIC_PORT);
    if named_by_payload {
        let protocol = if meta.protocol == ip_proto::TCP {
            app::TLS
        } else {
            app::QUIC
        };
        give_up(key, entry, protocol);
        return true;
    }
    false
}

/// Before any payload: a port rule gives a provisional class that a name may still
/// replace. (The BitTorrent peer cache is asked only once the flow's first bytes name
/// nothing: a name always wins.)
#[inline(always)]
fn first_look(key: &FlowKey, entry: &mut FlowEntry) {
    entry.class_flags |= class_flags::FIRST_LOOK_DONE;
    // The port that names the service: the server's, or for a flow the other side
    // opened (an inbound peer), the LAN client's own listening port.
    let port = if entry.flags & flow_flags::STARTED_DOWNSTREAM != 0 {
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
        // SAFETY: a map value pointer, valid for this program run.
        let mut class = unsafe { *rule };
        class.method = Method::Port as u8;
        class.class_flags |= class_flags::PORT_PROVISIONAL;
        if class.app == app::UNKNOWN {
            class.app = entry.app;
        }
        set_class(entry, class);
    }
}
