//! Packet parsers shared by the BPF programs and the host.
//!
//! Parsers read through [`PacketBytes`], which the kernel side implements over XDP's direct
//! packet access (with the bounds check the verifier wants) and over `bpf_skb_load_bytes`
//! in TC, and the host implements over a byte slice for unit tests. Every parser is a
//! bounded sequence of steps: no unbounded loop, no offset used before it is checked.

pub mod bittorrent;
pub mod headers;
pub mod http;
pub mod quic;
pub mod tcp;
pub mod tls;

pub use headers::{PacketMeta, ParseError, Parsed, parse_headers};

/// Read access to a packet's bytes.
pub trait PacketBytes {
    /// The `N` bytes at `offset`, or `None` when any of them lies past the end of the packet.
    ///
    /// `N` must be at least 2: for one byte LLVM folds the bounds check `p + 1 > end` into
    /// `p >= end`, which the verifier does not take as proof that `*p` is readable. Read a
    /// byte together with its neighbour instead.
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    /// The big-endian u16 at `offset`.
    #[inline(always)]
    fn read_u16(&self, offset: usize) -> Option<u16> {
        self.read::<2>(offset).map(u16::from_be_bytes)
    }
}

impl PacketBytes for [u8] {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        let bytes = self.get(offset..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Some(out)
    }
}
