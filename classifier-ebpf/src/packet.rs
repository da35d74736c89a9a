//! [`PacketBytes`] over direct packet access, for both program types; reads and copies at
//! offsets known only at run time.
//!
//! The modern build reads the XDP frame with `bpf_xdp_load_bytes` (5.18) and copies between
//! map values with dynptrs (5.19). The legacy build (feature `legacy-kernel`, kernels 5.15
//! to 5.18) does both with `bpf_probe_read_kernel` (5.5, for every program type of a loader
//! with CAP_PERFMON), after checking the range itself: the frame's bytes are `[data,
//! data_end)` (linear: multi-buffer frames came with 5.18), a map value's its size.

use core::ffi::c_void;

#[cfg(feature = "legacy-kernel")]
use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
#[cfg(not(feature = "legacy-kernel"))]
use aya_ebpf::{
    bindings::bpf_dynptr,
    helpers::generated::{bpf_dynptr_from_mem, bpf_dynptr_read, bpf_xdp_load_bytes},
};
use aya_ebpf::{
    helpers::generated::bpf_skb_load_bytes,
    programs::{TcContext, XdpContext},
};
use classifier_common::{
    config::{STREAM_CAP, STREAM_SLACK, StreamBuf},
    parse::PacketBytes,
};

/// Bytes TC makes sure are in the skb's linear area before parsing: Ethernet, two VLAN
/// tags, an IPv6 header with a few extension headers and a TCP header with options.
const TC_LINEAR_HEADER_BYTES: u32 = 256;

/// The packet as the program sees it: `[start, end)` in kernel memory.
///
/// Direct access instead of `bpf_skb_load_bytes` in TC: every load through the helper
/// needs a stack buffer, and the 512-byte BPF stack does not hold a parser's worth.
pub struct DirectPacket {
    start: usize,
    end: usize,
}

impl DirectPacket {
    /// The XDP frame (always linear on the drivers we attach to).
    #[inline(always)]
    pub fn xdp(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// The skb's linear area, after asking the kernel to make the headers part of it.
    #[inline(always)]
    pub fn tc(ctx: &TcContext) -> Self {
        // Forwarded packets normally carry their headers linearly already; pulling is then a
        // no-op. It fails only for packets shorter than asked, which are wholly linear anyway.
        let want = if ctx.len() < TC_LINEAR_HEADER_BYTES {
            ctx.len()
        } else {
            TC_LINEAR_HEADER_BYTES
        };
        let _ = ctx.pull_data(want);
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }
}

impl PacketBytes for DirectPacket {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        const {
            assert!(
                N >= 2,
                "one-byte reads defeat the verifier's bounds tracking"
            )
        };
        // The comparison must be between packet pointers, in this form, for the verifier to
        // learn that [ptr, ptr + N) is inside the packet.
        let ptr = self.start + offset;
        if ptr + N > self.end {
            return None;
        }
        // SAFETY: checked just above to lie inside the packet; [u8; N] has alignment 1.
        Some(unsafe { *(ptr as *const [u8; N]) })
    }
}

/// An XDP frame read through `bpf_xdp_load_bytes`: every read is bounds-checked by the
/// helper at run time, so no packet-pointer arithmetic has to convince the verifier. For
/// the classifier's payload reads at offsets computed from lengths in the packet, where
/// LLVM otherwise rewrites the pointer arithmetic into forms the verifier rejects (see
/// docs/verifier-notes.md). Costs a helper call per read: slow path only.
pub struct HelperPacket<'a> {
    ctx: &'a XdpContext,
}

impl<'a> HelperPacket<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a XdpContext) -> Self {
        Self { ctx }
    }
}

impl PacketBytes for HelperPacket<'_> {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let mut bytes = [0u8; N];
        // SAFETY: the helper writes at most N bytes into `bytes` and checks the frame.
        let result = unsafe { frame_read(self.ctx, offset, bytes.as_mut_ptr(), N as u32) };
        (result == 0).then_some(bytes)
    }
}

/// Copies `len` bytes of the XDP frame at `offset` to `dst`: 0, or negative when the range
/// is not inside the frame (`bpf_xdp_load_bytes`'s contract).
///
/// # Safety
/// `dst` must be valid for `len` bytes of writes, and `len` provably bounded by that room
/// for the verifier.
#[cfg(not(feature = "legacy-kernel"))]
#[inline(always)]
unsafe fn frame_read(ctx: &XdpContext, offset: usize, dst: *mut u8, len: u32) -> i64 {
    // SAFETY: forwarded from the caller; the helper checks the frame side.
    unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, dst.cast(), len) }
}

/// The legacy [`frame_read`]: the range is checked against the linear frame here, then
/// copied by `bpf_probe_read_kernel`.
///
/// # Safety
/// As the modern one.
#[cfg(feature = "legacy-kernel")]
#[inline(always)]
unsafe fn frame_read(ctx: &XdpContext, offset: usize, dst: *mut u8, len: u32) -> i64 {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    // A scalar for the verifier (packet pointer minus packet pointer, allowed to a loader
    // with CAP_PERFMON, like the helper itself).
    let frame_len = data_end - data;
    let offset = register_opaque(offset);
    let len_bytes = len as usize;
    if offset > MAX_FRAME_OFFSET || len_bytes > frame_len || offset > frame_len - len_bytes {
        return -1;
    }
    // The mask keeps the packet pointer's variable offset bounded for the verifier (it is
    // a no-op: `offset` was checked above).
    let from = data + (offset & MAX_FRAME_OFFSET);
    // SAFETY: [from, from + len) lies inside the frame (checked above); `dst` as the caller
    // says. The helper never faults: it returns an error and zeroes `dst` instead.
    unsafe { bpf_probe_read_kernel(dst.cast(), len, from as *const c_void) }
}

/// Copies `len` bytes at `from` (kernel memory the caller has checked) to `dst`; whether
/// it could. The legacy build's one way of copying at run-time offsets and lengths.
///
/// # Safety
/// `dst` must be valid for `len` bytes of writes, `len` provably bounded by that room.
#[cfg(feature = "legacy-kernel")]
#[inline(always)]
pub unsafe fn read_kernel(dst: *mut u8, len: u32, from: *const u8) -> bool {
    // SAFETY: forwarded from the caller; the helper never faults.
    unsafe { bpf_probe_read_kernel(dst.cast(), len, from.cast()) == 0 }
}

/// The highest frame offset the legacy build reads at (frames are shorter than 64 KiB).
#[cfg(feature = "legacy-kernel")]
const MAX_FRAME_OFFSET: usize = 0xffff;

/// A map value's bytes, the source of copies at offsets and lengths known only at run time
/// (a dynptr over them in the modern build; their address and size in the legacy one).
pub struct ValueSource {
    #[cfg(not(feature = "legacy-kernel"))]
    dynptr: bpf_dynptr,
    #[cfg(feature = "legacy-kernel")]
    base: *const u8,
    #[cfg(feature = "legacy-kernel")]
    size: usize,
}

impl ValueSource {
    /// A source over nothing yet ([`ValueSource::attach`]). Made in place, where it stays:
    /// the verifier does not let a dynptr be copied.
    #[inline(always)]
    pub fn empty() -> Self {
        Self {
            #[cfg(not(feature = "legacy-kernel"))]
            dynptr: bpf_dynptr {
                __opaque: [0u64; 2],
            },
            #[cfg(feature = "legacy-kernel")]
            base: core::ptr::null(),
            #[cfg(feature = "legacy-kernel")]
            size: 0,
        }
    }

    /// Makes the source the `size` bytes at `base`; whether it could.
    ///
    /// # Safety
    /// `base` must point to `size` bytes of a live map value for the rest of the program run.
    #[cfg(not(feature = "legacy-kernel"))]
    #[inline(always)]
    pub unsafe fn attach(&mut self, base: *const u8, size: usize) -> bool {
        // SAFETY: forwarded from the caller; the helper checks every later read against it.
        unsafe {
            bpf_dynptr_from_mem(base as *mut c_void, size as u32, 0, &raw mut self.dynptr) == 0
        }
    }

    /// The legacy [`ValueSource::attach`].
    ///
    /// # Safety
    /// As the modern one.
    #[cfg(feature = "legacy-kernel")]
    #[inline(always)]
    pub unsafe fn attach(&mut self, base: *const u8, size: usize) -> bool {
        self.base = base;
        self.size = size;
        true
    }

    /// Copies `len` bytes from `offset` to `dst`; whether they were all inside the source.
    ///
    /// # Safety
    /// `dst` must be valid for `len` bytes of writes, and `len` provably bounded by that room
    /// for the verifier.
    #[cfg(not(feature = "legacy-kernel"))]
    #[inline(always)]
    pub unsafe fn read(&self, dst: *mut u8, len: u32, offset: u32) -> bool {
        // SAFETY: forwarded from the caller; the helper checks the source range.
        unsafe { bpf_dynptr_read(dst.cast(), len, &raw const self.dynptr, offset, 0) == 0 }
    }

    /// The legacy [`ValueSource::read`]: the range is checked here, then copied by
    /// `bpf_probe_read_kernel`.
    ///
    /// # Safety
    /// As the modern one.
    #[cfg(feature = "legacy-kernel")]
    #[inline(always)]
    pub unsafe fn read(&self, dst: *mut u8, len: u32, offset: u32) -> bool {
        let (offset, len_bytes) = (verifier_opaque(offset as usize), len as usize);
        if len_bytes > self.size || offset > self.size - len_bytes {
            return false;
        }
        // SAFETY: [offset, offset + len) is inside the source value (checked above); the
        // helper never faults.
        unsafe {
            let from = self.base.add(offset);
            bpf_probe_read_kernel(dst.cast(), len, from.cast()) == 0
        }
    }
}

/// A stream buffer (a map value) read as the client's first stream bytes.
pub struct StreamView {
    base: *const u8,
    len: usize,
}

impl StreamView {
    /// The in-order bytes of `buf` (its prefix).
    ///
    /// # Safety
    /// `buf` must point to a live map value for the rest of the program run.
    #[inline(always)]
    pub unsafe fn of(buf: *const StreamBuf) -> Self {
        // SAFETY: forwarded from the caller.
        let len = unsafe { (*buf).coverage.prefix } as usize;
        // SAFETY: as above.
        unsafe { Self::with_len(buf, len) }
    }

    /// The first `len` bytes of `buf` (for a buffer whose length is kept elsewhere).
    ///
    /// # Safety
    /// `buf` must point to a live map value for the rest of the program run.
    #[inline(always)]
    pub unsafe fn with_len(buf: *const StreamBuf, len: usize) -> Self {
        Self {
            // SAFETY: forwarded from the caller; `bytes` is a field of the same value.
            base: unsafe { (&raw const (*buf).bytes).cast::<u8>() },
            len: if len > STREAM_CAP { STREAM_CAP } else { len },
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Copies `len` held bytes from `offset` to `dst` (which has room for `CAP`) in one
    /// helper call ([`ValueSource`]): it takes offsets and lengths known only at run time,
    /// which a plain copy cannot have in BPF (a byte loop costs a `bpf_loop` step a byte).
    /// Returns the bytes copied: 0 when the range is not inside the held bytes.
    ///
    /// # Safety
    /// `dst` must be writable memory of `CAP` bytes (a map value or ring-buffer memory).
    #[inline(always)]
    pub unsafe fn copy_out<const CAP: usize>(
        &self,
        offset: usize,
        len: usize,
        dst: *mut u8,
    ) -> usize {
        if len == 0 || len > CAP || offset + len > self.len {
            return 0;
        }
        let mut source = ValueSource::empty();
        // SAFETY: `base` is the `bytes` field of a live map value, this long.
        if !unsafe { source.attach(self.base, STREAM_CAP + STREAM_SLACK) } {
            return 0;
        }
        // The mask shows the verifier the bound checked above (CAP is a power of two).
        let len = verifier_opaque(len) & (CAP - 1);
        // SAFETY: `dst` has CAP > len bytes (caller); the source range is checked.
        let read = unsafe { source.read(dst, len as u32, offset as u32) };
        if read { len } else { 0 }
    }
}

impl PacketBytes for StreamView {
    #[cfg(not(feature = "legacy-kernel"))]
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // LLVM knows more about `offset` than the verifier (e.g. that a loop index is ≥ 1)
        // and folds that into negative constant offsets the verifier rejects: hide it.
        let offset = verifier_opaque(offset);
        // First the bound the verifier needs (inside the map value), then the logical one.
        if offset > STREAM_CAP + STREAM_SLACK - N {
            return None;
        }
        if offset + N > self.len {
            return None;
        }
        // SAFETY: `offset + N` is within the value's `bytes` (checked above); alignment 1.
        Some(unsafe { *(self.base.add(offset) as *const [u8; N]) })
    }

    /// The legacy read: the bytes are read whether the range is held or not (at an offset
    /// masked into the buffer), and only then judged. Where a read returns `None` early,
    /// LLVM builds the `Option`'s undefined payload from whatever register is at hand, and
    /// the 5.15 verifier, which cannot tell that a length it checked and then reloaded
    /// from the stack is not zero, walks that path and refuses the shift of a stack pointer
    /// it finds there ("R2 pointer arithmetic with <<= operator prohibited").
    #[cfg(feature = "legacy-kernel")]
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        const { assert!(N <= STREAM_SLACK, "a read ends inside the buffer's slack") };
        let offset = verifier_opaque(offset);
        let at = offset & (STREAM_CAP - 1);
        // SAFETY: `at < STREAM_CAP`, so `at + N` is within the value's `bytes`
        // (STREAM_CAP + STREAM_SLACK long); alignment 1.
        let bytes = unsafe { *(self.base.add(at) as *const [u8; N]) };
        // `len ≤ STREAM_CAP`: a held range starts below it, where `at` is `offset`.
        (offset < STREAM_CAP && offset + N <= self.len).then_some(bytes)
    }
}

/// `value`, bounded by `mask` (one less than a power of two) where the verifier must see the
/// bound on the register it is used in: the legacy build masks it (the 5.15 verifier does
/// not carry a bound checked on a register over to a copy reloaded from the stack); the
/// modern one, whose verifier does, leaves it as it is. Only for values already checked to
/// be within `mask`.
#[inline(always)]
pub fn within(value: usize, mask: usize) -> usize {
    #[cfg(feature = "legacy-kernel")]
    let value = verifier_opaque(value) & mask;
    #[cfg(not(feature = "legacy-kernel"))]
    let _ = mask;
    value
}

/// [`verifier_opaque`] without the stack slot: an inline-asm move of the register to itself,
/// whose result the compiler knows nothing about. For the legacy build's callbacks, whose stack counts against
/// the 512 bytes the 5.15 verifier allows a whole chain of calls.
#[cfg(feature = "legacy-kernel")]
#[inline(always)]
pub fn register_opaque(mut value: usize) -> usize {
    // SAFETY: one move of the register to itself: nothing else is read or written. (A
    // real instruction, not an empty statement: an empty one leaves two line-info entries
    // at one offset, which the 5.15 kernel refuses: "Invalid line_info[..].insn_off".)
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) value, options(pure, nomem, nostack)) };
    value
}

/// `value`, with everything the compiler knows about it forgotten: the verifier then sees
/// exactly the bounds checks that follow, in the register they are made on. (An empty
/// inline-asm barrier, as C's `barrier_var()`; costs a stack store and load.)
#[inline(always)]
pub fn verifier_opaque(value: usize) -> usize {
    core::hint::black_box(value)
}

/// Copies up to `len` bytes of the XDP frame at `from` to `dst`, never more than `CAP`.
/// Returns the bytes copied (0 when `len` is 0).
///
/// The helper's length must be provably in 1..=CAP for the verifier; callers usually know
/// `len ≥ 1`, and LLVM would then drop the zero check, so `len` is made opaque first.
/// ([`skb_load`] shows the bound as `below + 1` instead, which 6.1's verifier needs.)
///
/// # Safety
/// `dst` must be valid for `CAP` bytes of writes (the verifier checks this too).
#[inline(always)]
pub unsafe fn xdp_load<const CAP: usize>(
    ctx: &XdpContext,
    from: usize,
    dst: *mut u8,
    len: usize,
) -> Result<usize, ()> {
    let len = verifier_opaque(len);
    let n = if len < CAP { len } else { CAP };
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: 1 ≤ n ≤ CAP bytes at `dst` (caller); the frame side is checked.
    let result = unsafe { frame_read(ctx, from, dst, n as u32) };
    if result < 0 { Err(()) } else { Ok(n) }
}

/// [`xdp_load`] for an skb (TC): copies up to `CAP` of `len` bytes at `from` to `dst`.
///
/// # Safety
/// `dst` must be valid for `CAP` bytes of writes.
#[inline(always)]
pub unsafe fn skb_load<const CAP: usize>(
    ctx: &TcContext,
    from: usize,
    dst: *mut u8,
    len: usize,
) -> Result<usize, ()> {
    if len == 0 {
        return Ok(0);
    }
    // 6.1's verifier does not learn `n >= 1` from `n != 0`; from `below + 1` it does.
    let below = verifier_opaque(len - 1);
    let n = if below < CAP { below + 1 } else { CAP };
    // SAFETY: 1 ≤ n ≤ CAP bytes at `dst` (caller); the helper checks the packet side.
    let result =
        unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), from as u32, dst.cast(), n as u32) };
    if result < 0 { Err(()) } else { Ok(n) }
}

/// Copies `len` bytes of the XDP frame at `from` into `buf` at stream offset `pos`
/// (`pos < STREAM_CAP`), at most [`MAX_SEGMENT`] of them. Returns the bytes copied.
///
/// # Safety
/// `buf` must point to a live map value for the rest of the program run.
#[inline(always)]
pub unsafe fn load_into(
    ctx: &XdpContext,
    buf: *mut StreamBuf,
    pos: usize,
    from: usize,
    len: usize,
) -> Result<usize, ()> {
    if pos >= STREAM_CAP {
        return Err(());
    }
    // pos < STREAM_CAP (the mask shows it to the verifier) and a copy of at most
    // STREAM_SLACK - 1 bytes therefore ends inside `bytes` (STREAM_CAP + STREAM_SLACK long).
    let pos = within(pos & (STREAM_CAP - 1), STREAM_CAP - 1);
    // SAFETY: `bytes + pos` has STREAM_SLACK - 1 writable bytes (above); `buf` is live.
    unsafe {
        let dst = (&raw mut (*buf).bytes).cast::<u8>().add(pos);
        xdp_load::<MAX_SEGMENT>(ctx, from, dst, len)
    }
}

/// The most payload bytes of one segment the classifier copies, checks and places: more
/// than any segment on a 1500- or 4000-byte MTU carries.
pub const MAX_SEGMENT: usize = STREAM_SLACK - 1;
