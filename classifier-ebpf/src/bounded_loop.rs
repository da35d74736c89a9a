//! Loops the verifier checks once, whatever their length: `bpf_loop` (kernel ≥ 5.17) calls
//! a callback `count` times, and the verifier verifies the callback on its own, with an
//! unknown index, instead of walking every iteration with every path that leads out of it.
//!
//! A name walk of 255 bytes whose every exit leads on into more code costs the verifier
//! hundreds of thousands of instructions as a plain loop; as a `bpf_loop` body, a few hundred.

use core::{ffi::c_void, ops::ControlFlow};

use aya_ebpf::helpers::generated::bpf_loop;

/// The body of a [`bounded_loop`]: its state lives in `self`.
pub trait LoopBody {
    /// One iteration; `Break` ends the loop.
    fn step(&mut self, index: u32) -> ControlFlow<()>;
}

/// Runs `body.step(0)`, `body.step(1)`, ... up to `count` times or until it breaks.
#[inline(always)]
pub fn bounded_loop<B: LoopBody>(count: u32, body: &mut B) {
    let callback = trampoline::<B> as *const ();
    // SAFETY: `callback` is a BPF subprogram taking (index, ctx); `ctx` points to `body`,
    // alive on our stack for the whole call.
    unsafe {
        bpf_loop(count, callback as *mut c_void, (body as *mut B).cast(), 0);
    }
}

/// The callback `bpf_loop` calls: a separate BPF function (never inlined), one per body type.
#[inline(never)]
extern "C" fn trampoline<B: LoopBody>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `&mut B` `bounded_loop` passed, alive during the loop.
    let body = unsafe { &mut *ctx.cast::<B>() };
    let stop = match body.step(index as u32) {
        ControlFlow::Continue(()) => 0,
        ControlFlow::Break(()) => 1,
    };
    // The verifier wants the return value provably 0 or 1. LLVM may compute it from state
    // it knows to be 0 or 1 (a bool byte), which the verifier only sees as 0..=255: the
    // opaque value and the mask make the bound explicit.
    (crate::packet::verifier_opaque(stop) & 1) as i64
}
