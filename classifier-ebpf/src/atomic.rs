//! Atomic counter adds.
//!
//! The BPF target has no compare-and-swap, so `core`'s `AtomicU64::fetch_add` does not
//! exist there; the `atomic_xadd` intrinsic does, and LLVM lowers it to BPF's
//! `lock *(u64 *)(dst) += src` when the old value is unused.

/// Adds `value` to the counter at `counter`, atomically with respect to other CPUs.
///
/// # Safety
/// `counter` must be valid for writes and 8-byte aligned (map values are).
#[inline(always)]
pub unsafe fn add(counter: *mut u64, value: u64) {
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
