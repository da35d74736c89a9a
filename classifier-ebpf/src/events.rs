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
use classifier_common::maps::EVENTS_BYTES;

use crate::maps::EVENTS;

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
