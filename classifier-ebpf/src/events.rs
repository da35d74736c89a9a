//! When an event in the `EVENTS` ring buffer wakes the daemon. Each wake-up is an
//! interrupt and a context switch; one per new flow costs more than classifying it (on
//! this project's VMs, microseconds against a microsecond). So an event that only informs
//! (a flow's name, for its record) wakes nobody: the daemon reads them on its next turn
//! (it looks every few tens of milliseconds), or at once when the ring is a quarter full.
//! An event the daemon must act on at once (a held QUIC flow's Initial, a tracker's peers,
//! a client's shaping class) wakes it whatever came before: the kernel's default wakes a
//! reader only when nothing unread is ahead of the event, which unread names may be.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::bpf_ringbuf_query,
};
use classifier_common::{
    event::PayloadEvent, flow::FlowKey, maps::EVENTS_BYTES, parse::PacketMeta, stats::Stat,
};

use crate::{maps::EVENTS, stats};

/// The ring buffer's header before each record (`BPF_RINGBUF_HDR_SZ`).
const RECORD_HEADER: usize = 8;

/// Submit flags for an event of `len` bytes the daemon must act on at once: the kernel's
/// own choice (a wake-up if the reader has read everything before it, none if it is busy
/// reading anyway), or a forced one when unread events are ahead of it.
#[inline(always)]
pub fn urgent(len: usize) -> u64 {
    // The event's own room in the ring: its 8-byte header, rounded up to 8 bytes.
    let own = (len + RECORD_HEADER + 7) & !7;
    if unread() > own as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        0
    }
}

/// Submit flags for an event the daemon may read on its next turn: no wake-up, unless the
/// ring is filling up.
#[inline(always)]
pub fn informing() -> u64 {
    if unread() > (EVENTS_BYTES / 4) as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Hands a packet's payload to the daemon at once as a [`PayloadEvent`] of `kind` for the
/// flow `key`, and counts it as `sent`. `load` copies the payload (at most
/// [`classifier_common::event::PAYLOAD_CAP`] bytes, to the address it is given) and says
/// how many bytes it copied: XDP and TC read their packets with different helpers. A payload that cannot be copied
/// sends nothing; a full ring counts a dropped event.
#[inline(always)]
pub fn send_payload(
    kind: u8,
    meta: &PacketMeta,
    key: &FlowKey,
    sent: Stat,
    load: impl FnOnce(*mut u8) -> Result<usize, ()>,
) {
    let Some(mut slot) = EVENTS.reserve_untyped::<PayloadEvent>(0) else {
        stats::bump(Stat::EventsDropped);
        return;
    };
    let event = slot.as_mut_ptr();
    // SAFETY: `event` is ring buffer memory reserved for a PayloadEvent, whose `data` holds
    // PAYLOAD_CAP bytes (what `load` may write).
    let copied = unsafe {
        (*event).kind = kind;
        (*event).original_len = meta.payload_len;
        (*event).key = *key;
        load((&raw mut (*event).data).cast())
    };
    match copied {
        // SAFETY: as above.
        Ok(len) if len > 0 => unsafe { (*event).len = len as u16 },
        _ => {
            slot.discard(0);
            return;
        }
    }
    slot.submit(urgent(size_of::<PayloadEvent>()));
    stats::bump(sent);
}

/// Bytes written to the ring (reserved ones included) and not read yet.
#[inline(always)]
fn unread() -> u64 {
    // SAFETY: the helper takes the ring buffer map's address and only reads its counters.
    unsafe {
        bpf_ringbuf_query(
            core::ptr::from_ref(&EVENTS).cast_mut().cast(),
            BPF_RB_AVAIL_DATA as u64,
        )
    }
}
