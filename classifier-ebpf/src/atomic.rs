//! Atomic counter adds.
//!
//! The BPF target has no compare-and-swap, so `core`'s `AtomicU64::fetch_add` does not
//! exist there; the `atomic_xadd` intrinsic does, and LLVM lowers it to BPF's
//! `lock *(u64 *)(dst) += src` when the old value is unused.

use classifier_common::flow::DirectionCounters;

/// Adds a packet count to a pair of a flow's counters, each atomically with respect to
/// other CPUs counting on the same flow.
#[inline(always)]
pub fn add_counters(counters: &mut DirectionCounters, packets: u64, bytes: u64) {
    // SAFETY: fields of a live reference: valid for writes, and 8-byte aligned (u64s).
    unsafe {
        add(&raw mut counters.packets, packets);
        add(&raw mut counters.bytes, bytes);
    }
}

/// Adds `value` to the counter at `counter`, atomically with respect to other CPUs.
///
/// # Safety
/// `counter` must be valid for writes and 8-byte aligned (map values are).
#[inline(always)]
unsafe fn add(counter: *mut u64, value: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: forwarded from the caller.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            counter, value,
        );
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: forwarded from the caller.
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(counter)
            .fetch_add(value, core::sync::atomic::Ordering::Relaxed);
    }
}
