//! Loops the verifier checks once, whatever their length: the body is a callback that the
//! verifier verifies on its own, with an unknown index, instead of walking every iteration
//! with every path that leads out of it.
//!
//! A name walk of 255 bytes whose every exit leads on into more code costs the verifier
//! hundreds of thousands of instructions as a plain loop; as a callback, a few hundred.
//!
//! The modern build calls the body through `bpf_loop` (kernel ≥ 5.17). The legacy build
//! (feature `legacy-kernel`, kernels 5.15–5.16) calls it through `bpf_for_each_map_elem`
//! (5.13) over [`LOOP_STEPS`](crate::maps::LOOP_STEPS), an array of as many elements as the
//! longest loop: the same callback verification, one element per iteration.

use core::{ffi::c_void, ops::ControlFlow};

#[cfg(feature = "legacy-kernel")]
use aya_ebpf::helpers::generated::bpf_for_each_map_elem;
#[cfg(not(feature = "legacy-kernel"))]
use aya_ebpf::helpers::generated::bpf_loop;

/// The body of a [`bounded_loop`]: its state lives in `self`.
pub trait LoopBody {
    /// One iteration; `Break` ends the loop.
    fn step(&mut self, index: u32) -> ControlFlow<()>;

    /// This CPU's `LOOPS`, where the body has it at hand: the legacy loop keeps its step
    /// count there, and a body on the deepest chain of calls saves it a lookup (whose key
    /// takes 8 bytes of that chain's 512 on 5.15).
    #[cfg_attr(not(feature = "legacy-kernel"), allow(dead_code))]
    #[inline(always)]
    fn loop_state(&self) -> Option<*mut crate::maps::LoopState> {
        None
    }
}

/// Runs `body.step(0)`, `body.step(1)`, ... up to `count` times or until it breaks.
#[cfg(not(feature = "legacy-kernel"))]
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
#[cfg(not(feature = "legacy-kernel"))]
#[inline(never)]
extern "C" fn trampoline<B: LoopBody>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `&mut B` `bounded_loop` passed, alive during the loop.
    let body = unsafe { &mut *ctx.cast::<B>() };
    stop_code(body.step(index as u32))
}

/// Runs `body.step(0)`, `body.step(1)`, ... up to `count` times (at most
/// [`LOOP_STEPS_MAX`](classifier_common::maps::LOOP_STEPS_MAX)) or until it breaks.
///
/// `count` goes to the callback through this CPU's `LOOPS` (loops do not nest), not beside
/// the body on the stack: the 5.15 verifier allows 512 bytes of stack for a whole chain of
/// calls, and the classifier's deepest chain has no 16 bytes to spare.
#[cfg(feature = "legacy-kernel")]
#[inline(always)]
pub fn bounded_loop<B: LoopBody>(count: u32, body: &mut B) {
    let Some(state) = body
        .loop_state()
        .or_else(|| crate::maps::LOOPS.get_ptr_mut(0))
    else {
        return;
    };
    // SAFETY: this CPU's loop state, live for the program run.
    unsafe { (*state).steps = count };
    let callback = each_element::<B> as *const ();
    let map = core::ptr::from_ref(&crate::maps::LOOP_STEPS).cast_mut();
    // SAFETY: `callback` is a BPF subprogram taking (map, key, value, ctx); `ctx` points to
    // `body`, alive on our stack for the whole call.
    unsafe {
        bpf_for_each_map_elem(
            map.cast(),
            callback as *mut c_void,
            (body as *mut B).cast(),
            0,
        );
    }
}

/// The callback `bpf_for_each_map_elem` calls for each element of `LOOP_STEPS`: the key is
/// the element's index, which is the step's.
#[cfg(feature = "legacy-kernel")]
#[inline(never)]
extern "C" fn each_element<B: LoopBody>(
    _map: *mut c_void,
    key: *mut u32,
    _value: *mut c_void,
    ctx: *mut c_void,
) -> i64 {
    // SAFETY: `ctx` is the `&mut B` `bounded_loop` passed, alive during the loop.
    let body = unsafe { &mut *ctx.cast::<B>() };
    let Some(state) = body
        .loop_state()
        .or_else(|| crate::maps::LOOPS.get_ptr_mut(0))
    else {
        return 1;
    };
    // SAFETY: `key` is the element's index, this CPU's loop state is live for the run.
    let (index, steps) = unsafe { (*key, (*state).steps) };
    if index >= steps {
        return 1;
    }
    stop_code(body.step(index))
}

/// What a loop callback returns: 0 goes on, 1 stops.
#[inline(always)]
fn stop_code(step: ControlFlow<()>) -> i64 {
    let stop = match step {
        ControlFlow::Continue(()) => 0,
        ControlFlow::Break(()) => 1,
    };
    // The verifier wants the return value provably 0 or 1. LLVM may compute it from state
    // it knows to be 0 or 1 (a bool byte), which the verifier only sees as 0..=255: the
    // opaque value and the mask make the bound explicit.
    (crate::packet::verifier_opaque(stop) & 1) as i64
}
