//! [`PacketBytes`] over direct packet access, for both program types.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::bpf_dynptr,
    helpers::generated::{
        bpf_dynptr_from_mem, bpf_dynptr_read, bpf_skb_load_bytes, bpf_xdp_load_bytes,
    },
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
        let result = unsafe {
            bpf_xdp_load_bytes(
                self.ctx.ctx,
                offset as u32,
                bytes.as_mut_ptr().cast(),
                N as u32,
            )
        };
        (result == 0).then_some(bytes)
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
    /// helper call: `bpf_dynptr_read` takes offsets and lengths known only at run time,
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
        let mut source = bpf_dynptr {
            __opaque: [0u64; 2],
        };
        // SAFETY: `base` is the `bytes` field of a live map value, this long.
        let made = unsafe {
            bpf_dynptr_from_mem(
                self.base as *mut c_void,
                (STREAM_CAP + STREAM_SLACK) as u32,
                0,
                &raw mut source,
            )
        };
        if made != 0 {
            return 0;
        }
        // The mask shows the verifier the bound checked above (CAP is a power of two).
        let len = verifier_opaque(len) & (CAP - 1);
        // SAFETY: `dst` has CAP > len bytes (caller); the helper checks the source range.
        let read =
            unsafe { bpf_dynptr_read(dst.cast(), len as u32, &raw const source, offset as u32, 0) };
        if read == 0 { len } else { 0 }
    }
}

impl PacketBytes for StreamView {
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
    // SAFETY: 1 ≤ n ≤ CAP bytes at `dst` (caller); the helper checks the frame side.
    let result = unsafe { bpf_xdp_load_bytes(ctx.ctx, from as u32, dst.cast(), n as u32) };
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
    let pos = pos & (STREAM_CAP - 1);
    // SAFETY: `bytes + pos` has STREAM_SLACK - 1 writable bytes (above); `buf` is live.
    unsafe {
        let dst = (&raw mut (*buf).bytes).cast::<u8>().add(pos);
        xdp_load::<MAX_SEGMENT>(ctx, from, dst, len)
    }
}

/// The most payload bytes of one segment the classifier copies, checks and places: more
/// than any segment on a 1500- or 4000-byte MTU carries.
pub const MAX_SEGMENT: usize = STREAM_SLACK - 1;
