//! The NAT hand-over ([`classifier_common::nat`]): `lan_nat_mark` (TC, LAN ingress, before
//! netfilter) puts the upload's flow into a slot and the slot's number into the skb mark;
//! `wan_egress` (after masquerade) reads the flow back from the mark.

use aya_ebpf::programs::TcContext;
use classifier_common::{
    flow::FlowKey,
    nat::{NatConfig, NatSlot, PublicSource, SLOT_HOLD_NS, SLOT_PROBES, key_hash, names_server},
    parse::{PacketMeta, Parsed, parse_headers},
};

use crate::{
    flows::{self, Direction, now_ns},
    maps::{NAT_CONFIG, NAT_PUBLIC, NAT_SLOTS},
    packet::DirectPacket,
};

/// `TC_ACT_UNSPEC` (TCX_NEXT): on to the next program on the hook, then the packet's way.
/// (`TC_ACT_PIPE` would end the TCX chain, and `lan_replies` may come after us.)
const TCX_NEXT: i32 = -1;

/// The hand-over's settings, when it is on.
#[inline(always)]
fn config() -> Option<NatConfig> {
    NAT_CONFIG.get(0).copied().filter(NatConfig::is_on)
}

/// `lan_nat_mark`: an upload gets its flow's slot number in the skb mark.
#[inline(always)]
pub fn mark_upload(ctx: &TcContext) -> i32 {
    let Some(config) = config() else {
        return TCX_NEXT;
    };
    let mut meta = PacketMeta::default();
    if !matches!(
        parse_headers(&DirectPacket::tc(ctx), &mut meta),
        Ok(Parsed::Ip)
    ) {
        return TCX_NEXT;
    }
    let key = flows::flow_key(&meta, Direction::Upload);
    let slot = take_slot(&config, &key, now_ns());
    let skb = ctx.skb.skb;
    // SAFETY: `skb` is the program's context pointer; TC programs may write `mark`.
    unsafe { (*skb).mark = config.marked((*skb).mark, slot) };
    TCX_NEXT
}

/// The slot the flow holds, or a free one it takes (0: none free among its probes).
#[inline(always)]
fn take_slot(config: &NatConfig, key: &FlowKey, now: u64) -> u32 {
    let hash = key_hash(key);
    for probe in 0..SLOT_PROBES {
        let slot = config.probe(hash, probe);
        let Some(held) = NAT_SLOTS.get_ptr_mut(slot) else {
            return 0;
        };
        // SAFETY: an array value, live for the program run. Two CPUs taking one free slot
        // at once leave one key; the other flow's packet then fails the WAN side's check
        // (`names_server`) and passes unshaped, once.
        unsafe {
            if (*held).key == *key {
                (*held).last_ns = now;
                return slot;
            }
            if now.wrapping_sub((*held).last_ns) > SLOT_HOLD_NS {
                *held = NatSlot {
                    key: *key,
                    last_ns: now,
                };
                return slot;
            }
        }
    }
    0
}

/// At the WAN egress: the flow of an upload the mark hands over, if the mark carries a
/// slot whose flow goes to this packet's server; its translated source is noted for the
/// flow's record.
#[inline(always)]
pub fn handed_over(ctx: &TcContext, meta: &PacketMeta) -> Option<FlowKey> {
    let config = config()?;
    // SAFETY: `skb` is the program's context pointer.
    let slot = config.slot_of(unsafe { (*ctx.skb.skb).mark });
    if slot == 0 {
        return None;
    }
    let held = NAT_SLOTS.get(slot)?;
    if !names_server(&held.key, &meta.dst_addr, meta.dst_port, meta.protocol) {
        return None;
    }
    let key = held.key;
    note_public_source(&key, meta);
    Some(key)
}

/// Writes the flow's translated source into `NAT_PUBLIC` when it is new or changed.
#[inline(always)]
fn note_public_source(key: &FlowKey, meta: &PacketMeta) {
    if let Some(known) = NAT_PUBLIC.get_ptr(key) {
        // SAFETY: a map value, live for the program run.
        let known = unsafe { &*known };
        if known.addr == meta.src_addr && known.port == meta.src_port {
            return;
        }
    }
    let public = PublicSource {
        addr: meta.src_addr,
        port: meta.src_port,
        _pad: [0; 6],
    };
    // A full LRU map evicts its coldest entry; a failed insert is tried by the next packet.
    let _ = NAT_PUBLIC.insert(key, public, 0);
}
