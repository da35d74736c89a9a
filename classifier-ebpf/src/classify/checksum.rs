//! TCP and UDP checksums of the segments the classifier reads, summed with the kernel's
//! `bpf_csum_diff` (its `csum_partial`) over the bytes already copied into a map value, so
//! that a decoy with a wrong checksum names nothing. The sums are memory-order words, like
//! [`classifier_common::parse::tcp::checksum`]'s, and judged there.

use core::ptr::null_mut;

use aya_ebpf::{helpers::generated::bpf_csum_diff, programs::XdpContext};
use classifier_common::{
    config::{STREAM_CAP, StreamBuf},
    parse::{
        PacketBytes,
        tcp::{ChecksumStatus, checksum, judge_checksum},
    },
};

use crate::{
    maps::LOOPS,
    packet::{DirectPacket, MAX_SEGMENT, verifier_opaque, xdp_load},
};

/// `bpf_csum_diff` sums at most this many bytes a call.
const CHUNK: usize = 512;
/// The longest TCP header.
const MAX_HEADER: usize = 60;
/// Where the checksum field is in a TCP and a UDP header.
const TCP_CHECKSUM_AT: usize = 16;
const UDP_CHECKSUM_AT: usize = 6;

/// The transport a segment's checksum is of.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    /// UDP; over IPv4 a zero checksum field means "none sent".
    Udp {
        ipv4: bool,
    },
}

/// Where a segment is: its transport header (`header_len` bytes at `l4_offset` in the
/// frame), and its payload, `len` bytes already copied into a buffer at `pos`.
pub struct Segment {
    pub transport: Transport,
    pub l4_offset: usize,
    pub header_len: usize,
    pub pseudo_sum: u64,
    pub pos: usize,
    pub len: usize,
}

/// The segment's checksum status, its payload read from `buf`.
///
/// # Safety
/// `buf` must point to a live map value for the rest of the program run.
#[inline(always)]
pub unsafe fn segment_status(
    ctx: &XdpContext,
    segment: &Segment,
    buf: *mut StreamBuf,
) -> ChecksumStatus {
    let udp = segment.transport != Transport::Tcp;
    let Some((header_sum, field)) = header_sum(ctx, segment.l4_offset, segment.header_len, udp)
    else {
        return ChecksumStatus::Invalid;
    };
    // SAFETY: forwarded from the caller.
    let Some(payload_sum) = (unsafe { buffer_sum(buf, segment.pos, segment.len) }) else {
        return ChecksumStatus::Invalid;
    };
    let udp_over_ipv4 = segment.transport == Transport::Udp { ipv4: true };
    judge_checksum(
        segment.pseudo_sum,
        header_sum + payload_sum,
        field,
        udp_over_ipv4,
    )
}

/// The sum of `len` bytes of the frame at `offset` (at most `CAP`, a multiple of 4): a
/// header copied to the stack and summed in one helper call.
#[inline(always)]
pub fn packet_sum<const CAP: usize>(ctx: &XdpContext, offset: usize, len: usize) -> Option<u64> {
    packet_sum_and_word::<CAP>(ctx, offset, len, 0).map(|(sum, _)| sum)
}

/// [`packet_sum`], also returning the two bytes at `word_at` of the copied header.
#[inline(always)]
fn packet_sum_and_word<const CAP: usize>(
    ctx: &XdpContext,
    offset: usize,
    len: usize,
    word_at: usize,
) -> Option<(u64, [u8; 2])> {
    if len > CAP || CAP > MAX_HEADER || word_at + 2 > MAX_HEADER {
        return None;
    }
    // This CPU's scratch, off the 512-byte stack.
    let state = LOOPS.get_ptr_mut(0)?;
    // SAFETY: this CPU's value, live for the program run; `header` has MAX_HEADER ≥ CAP
    // writable bytes, zeroed first so the bytes past `len` add nothing to the sum.
    let sum = unsafe {
        let header = &raw mut (*state).header;
        *header = [0; MAX_HEADER / 4];
        if xdp_load::<CAP>(ctx, offset, header.cast(), len) != Ok(len) {
            return None;
        }
        bpf_csum_diff(null_mut(), 0, header.cast(), MAX_HEADER as u32, 0)
    };
    if sum < 0 {
        return None;
    }
    // SAFETY: as above.
    let word = unsafe { (*state).header[word_at / 4] }.to_ne_bytes();
    Some((sum as u64, [word[word_at % 4], word[word_at % 4 + 1]]))
}

/// The sum of the transport header and its checksum field (memory order).
#[inline(always)]
fn header_sum(
    ctx: &XdpContext,
    l4_offset: usize,
    header_len: usize,
    udp: bool,
) -> Option<(u64, [u8; 2])> {
    let at = if udp {
        UDP_CHECKSUM_AT
    } else {
        TCP_CHECKSUM_AT
    };
    // The usual headers (UDP's 8 bytes, TCP's 20 without options, 32 with timestamps) are
    // summed where they lie, without a copy and two helper calls.
    let direct = match header_len {
        8 => direct_sum::<8>(ctx, l4_offset, at),
        20 => direct_sum::<20>(ctx, l4_offset, at),
        32 => direct_sum::<32>(ctx, l4_offset, at),
        _ => None,
    };
    direct.or_else(|| packet_sum_and_word::<MAX_HEADER>(ctx, l4_offset, header_len, at))
}

/// The sum of the `N` bytes at `offset` in the frame, read in place, and the two at `at`.
#[inline(always)]
fn direct_sum<const N: usize>(
    ctx: &XdpContext,
    offset: usize,
    at: usize,
) -> Option<(u64, [u8; 2])> {
    // Transport headers start within the first 128 bytes; the bound lets the verifier
    // follow the read.
    if offset >= 128 || at + 2 > N {
        return None;
    }
    // 6.1 forgets the bound when LLVM reloads `offset` from the stack: mask the one used.
    let offset = verifier_opaque(offset) & 127;
    let header = DirectPacket::xdp(ctx).read::<N>(offset)?;
    Some((checksum::sum_bytes(&header), [header[at], header[at + 1]]))
}

/// The sum of `len` bytes of `buf` at `pos` (`len` at most [`MAX_SEGMENT`]).
///
/// # Safety
/// `buf` must point to a live map value for the rest of the program run.
#[inline(always)]
pub unsafe fn buffer_sum(buf: *mut StreamBuf, pos: usize, len: usize) -> Option<u64> {
    if pos >= STREAM_CAP || len > MAX_SEGMENT {
        return None;
    }
    // SAFETY: forwarded from the caller; `bytes` is a field of the same value.
    let bytes = unsafe { (&raw mut (*buf).bytes).cast::<u8>() };
    let pos = pos & (STREAM_CAP - 1);
    let words = len & !3;
    let mut sum = 0u64;
    // 4 × 512 bytes cover MAX_SEGMENT. Each call starts below STREAM_CAP + 1536 and reads
    // at most 512 bytes, inside `bytes` (STREAM_CAP + STREAM_SLACK long).
    for k in 0..4 {
        let done = k * CHUNK;
        if done >= words {
            break;
        }
        let left = verifier_opaque(words - done);
        let chunk = if left > CHUNK { CHUNK } else { left & !3 };
        // SAFETY: [pos + done, pos + done + chunk) is inside `bytes` (above).
        let part =
            unsafe { bpf_csum_diff(null_mut(), 0, bytes.add(pos + done).cast(), chunk as u32, 0) };
        if part < 0 {
            return None;
        }
        sum += part as u64;
    }
    // SAFETY: `bytes + pos + words` starts the last one to three of the `len` bytes,
    // inside the value (above).
    sum += unsafe { tail_sum(bytes, pos, words, len) }?;
    Some(sum)
}

/// The last one to three bytes (`words..len`) of the `len` at `bytes + pos`, as the first
/// bytes of 16-bit words (even offsets) or their second bytes (odd ones).
///
/// # Safety
/// `[bytes + pos, bytes + pos + len)` must lie inside a live map value, `pos < STREAM_CAP`
/// and `len ≤ MAX_SEGMENT`.
#[cfg(not(feature = "legacy-kernel"))]
#[inline(always)]
unsafe fn tail_sum(bytes: *mut u8, pos: usize, words: usize, len: usize) -> Option<u64> {
    let mut sum = 0u64;
    for i in 0..3 {
        if words + i < len {
            let at = verifier_opaque(pos + words + i);
            if at >= STREAM_CAP + classifier_common::config::STREAM_SLACK {
                break;
            }
            // SAFETY: inside `bytes` (checked just above).
            let byte = unsafe { *bytes.add(at) } as u64;
            sum += if i % 2 == 0 { byte } else { byte << 8 };
        }
    }
    Some(sum)
}

/// The legacy [`tail_sum`]: the bytes are copied by `bpf_probe_read_kernel`. Read in place,
/// they need the buffer's pointer back from the stack, where the 5.15 verifier, on some
/// paths, no longer knows it for a pointer ("R2 invalid mem access 'inv'").
///
/// # Safety
/// As the modern one.
#[cfg(feature = "legacy-kernel")]
#[inline(always)]
unsafe fn tail_sum(bytes: *mut u8, pos: usize, words: usize, len: usize) -> Option<u64> {
    let rest = verifier_opaque(len - words) & 3;
    if rest == 0 {
        return Some(0);
    }
    let mut tail = [0u8; 4];
    // SAFETY: `rest` ≤ 3 bytes into `tail`; the source is inside the value (caller).
    if !unsafe {
        crate::packet::read_kernel(tail.as_mut_ptr(), rest as u32, bytes.add(pos + words))
    } {
        return None;
    }
    Some(tail[0] as u64 + ((tail[1] as u64) << 8) + tail[2] as u64)
}
