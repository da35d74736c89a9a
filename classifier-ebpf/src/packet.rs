//! [`PacketBytes`] over direct packet access, for both program types.

use aya_ebpf::programs::{TcContext, XdpContext};
use classifier_common::parse::PacketBytes;

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
