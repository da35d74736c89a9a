//! TCP beyond the ports: the options and the checksum, which tell a segment the server will
//! accept from a decoy it will drop.
//!
//! Tools made to get past SNI filters (zapret, GoodbyeDPI, byedpi) send a fake ClientHello
//! naming an allowed site just before the real one, made so that the server discards it: a
//! wrong checksum, an old timestamp (PAWS, RFC 7323 §5), an MD5 signature option the
//! server has no key for (RFC 2385), no ACK flag. The classifier reads these the way the
//! server's stack would and lets no such segment name a flow.

use core::ops::ControlFlow;

use super::{PacketBytes, PacketMeta};

const KIND_END: u8 = 0;
const KIND_NOP: u8 = 1;
const KIND_TIMESTAMP: u8 = 8;
const TIMESTAMP_LEN: usize = 10;
/// TCP MD5 signature (RFC 2385): a server without a key for the peer drops the segment.
const KIND_MD5_SIGNATURE: u8 = 19;
/// TCP Authentication Option (RFC 5925): likewise.
const KIND_AUTHENTICATION: u8 = 29;
/// The fixed TCP header; options follow it, up to 40 bytes.
pub const MIN_HEADER_LEN: usize = 20;
/// Option steps at most: every option is at least one byte long.
pub const MAX_OPTION_STEPS: usize = 40;

/// What the options of one segment say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// A timestamps option was there; `ts_val` is its TSval.
    pub has_timestamp: bool,
    pub ts_val: u32,
    /// An MD5 signature or authentication option was there.
    pub signature: bool,
    /// An option's length ran past the header: the server drops such a segment.
    pub malformed: bool,
}

/// The options of a TCP header, one option per [`OptionWalk::step`] (the datapath runs the
/// steps in a `bpf_loop`; [`tcp_options`] in a plain loop).
#[derive(Clone, Copy, Debug)]
pub struct OptionWalk {
    offset: usize,
    end: usize,
    pub options: TcpOptions,
}

impl OptionWalk {
    /// The options of the TCP header at `l4_offset`, `header_len` bytes long.
    pub fn new(l4_offset: usize, header_len: usize) -> Self {
        Self {
            offset: l4_offset + MIN_HEADER_LEN,
            end: l4_offset + header_len,
            options: TcpOptions::default(),
        }
    }

    /// Reads one option; `Break` at the end of the options.
    #[inline(always)]
    pub fn step<P: PacketBytes + ?Sized>(&mut self, p: &P) -> ControlFlow<()> {
        if self.offset >= self.end {
            return ControlFlow::Break(());
        }
        // Kind and length together (one-byte reads defeat the verifier); a lone NOP or
        // end-of-list in the header's last byte has no length byte after it.
        let Some([kind, len]) = p.read::<2>(self.offset) else {
            return ControlFlow::Break(());
        };
        match kind {
            KIND_END => return ControlFlow::Break(()),
            KIND_NOP => {
                self.offset += 1;
                return ControlFlow::Continue(());
            }
            _ => {}
        }
        let len = len as usize;
        if len < 2 || self.offset + len > self.end {
            self.options.malformed = true;
            return ControlFlow::Break(());
        }
        match kind {
            KIND_TIMESTAMP if len == TIMESTAMP_LEN => {
                if let Some(value) = p.read::<4>(self.offset + 2) {
                    self.options.has_timestamp = true;
                    self.options.ts_val = u32::from_be_bytes(value);
                }
            }
            KIND_MD5_SIGNATURE | KIND_AUTHENTICATION => self.options.signature = true,
            _ => {}
        }
        self.offset += len;
        ControlFlow::Continue(())
    }
}

/// The options of the TCP header at `l4_offset`, `header_len` bytes long.
pub fn tcp_options<P: PacketBytes + ?Sized>(
    p: &P,
    l4_offset: usize,
    header_len: usize,
) -> TcpOptions {
    let mut walk = OptionWalk::new(l4_offset, header_len);
    for _ in 0..MAX_OPTION_STEPS {
        if walk.step(p).is_break() {
            break;
        }
    }
    walk.options
}

/// Internet checksums (RFC 1071) as the kernel's `csum_partial` computes them: 16-bit words
/// read in memory order (little-endian on the machines BPF runs on). A sum is valid when it
/// folds to 0xffff, whichever byte order the words were read in, so partial sums from the
/// kernel's `bpf_csum_diff` and from here can be added together.
pub mod checksum {
    use crate::parse::PacketMeta;

    /// Folds a running sum to 16 bits (end-around carry).
    #[inline(always)]
    pub const fn fold(mut sum: u64) -> u16 {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        sum as u16
    }

    /// The sum of `bytes` as memory-order 16-bit words (an odd last byte padded with zero).
    #[inline(always)]
    pub fn sum_bytes(bytes: &[u8]) -> u64 {
        let mut sum = 0u64;
        let mut words = bytes.chunks_exact(2);
        for word in &mut words {
            sum += u16::from_le_bytes([word[0], word[1]]) as u64;
        }
        if let [last] = words.remainder() {
            sum += *last as u64;
        }
        sum
    }

    /// The sum of the pseudo-header (RFC 793 §3.1, RFC 8200 §8.1) of the packet's transport
    /// segment of `l4_len` bytes.
    ///
    /// Both addresses are summed whole, IPv4 ones too: in their IPv4-mapped form the extra
    /// words are `0` and `ffff`, and adding `ffff` (one's-complement zero) changes no sum
    /// (and one path, not two, is all the verifier has to walk).
    #[inline(always)]
    pub fn pseudo_header_sum(meta: &PacketMeta, l4_len: u16) -> u64 {
        let mut sum = 0u64;
        for i in 0..8 {
            let at = 2 * i;
            sum += u16::from_le_bytes([meta.src_addr[at], meta.src_addr[at + 1]]) as u64;
            sum += u16::from_le_bytes([meta.dst_addr[at], meta.dst_addr[at + 1]]) as u64;
        }
        // The protocol and the length, each as a big-endian word, read in memory order.
        sum += u16::from_le_bytes([0, meta.protocol]) as u64;
        sum += u16::from_le_bytes(l4_len.to_be_bytes()) as u64;
        sum
    }

    /// The checksum field as a sender leaves it for its NIC to finish (checksum offload,
    /// `CHECKSUM_PARTIAL`): the folded pseudo-header sum, not yet covering the segment. A
    /// capture taken on the sending host, or a veth from a local sender, carries this.
    #[inline(always)]
    pub fn offload_placeholder(meta: &PacketMeta, l4_len: u16) -> u16 {
        fold(pseudo_header_sum(meta, l4_len))
    }
}

/// Where a segment stands with the checksum in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumStatus {
    Valid,
    /// The sender's NIC was to finish it (see [`checksum::offload_placeholder`]).
    Offloaded,
    Invalid,
}

/// Judges a transport segment whose bytes (header and payload, checksum field included) sum
/// to `segment_sum`, with the checksum field as read from memory in `field`. UDP over IPv4
/// may send no checksum (field 0).
#[inline(always)]
pub fn checksum_status(
    meta: &PacketMeta,
    l4_len: u16,
    segment_sum: u64,
    field: [u8; 2],
) -> ChecksumStatus {
    let udp_over_ipv4 = meta.protocol == crate::flow::ip_proto::UDP && meta.ip_version == 4;
    judge_checksum(
        checksum::pseudo_header_sum(meta, l4_len),
        segment_sum,
        field,
        udp_over_ipv4,
    )
}

/// [`checksum_status`] from the pseudo-header's sum, as the datapath keeps it between its
/// programs.
#[inline(always)]
pub fn judge_checksum(
    pseudo_sum: u64,
    segment_sum: u64,
    field: [u8; 2],
    udp_over_ipv4: bool,
) -> ChecksumStatus {
    if checksum::fold(pseudo_sum + segment_sum) == 0xffff {
        return ChecksumStatus::Valid;
    }
    if udp_over_ipv4 && field == [0, 0] {
        return ChecksumStatus::Valid;
    }
    if u16::from_le_bytes(field) == checksum::fold(pseudo_sum) {
        return ChecksumStatus::Offloaded;
    }
    ChecksumStatus::Invalid
}

/// [`checksum_status`] of the packet `frame` on the host (tests, captures).
pub fn frame_checksum_status(frame: &[u8], meta: &PacketMeta) -> Option<ChecksumStatus> {
    let l4 = meta.l4_offset as usize;
    let end = meta.l3_offset as usize + meta.l3_len as usize;
    let segment = frame.get(l4..end)?;
    let field_at = match meta.protocol {
        crate::flow::ip_proto::TCP => 16,
        crate::flow::ip_proto::UDP => 6,
        _ => return None,
    };
    let field = [*segment.get(field_at)?, *segment.get(field_at + 1)?];
    Some(checksum_status(
        meta,
        segment.len() as u16,
        checksum::sum_bytes(segment),
        field,
    ))
}

/// The TCP header length of the packet (from where its payload starts).
#[inline(always)]
pub fn header_len(meta: &PacketMeta) -> usize {
    (meta.payload_offset - meta.l4_offset) as usize
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use etherparse::{PacketBuilder, TcpOptionElement};

    use super::*;
    use crate::parse::{Parsed, parse_headers};

    fn frame(options: &[TcpOptionElement], payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([192, 0, 2, 10], [203, 0, 113, 10], 64)
            .tcp(40000, 443, 1000, 64240)
            .options(options)
            .unwrap()
            .ack(1)
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    fn meta(frame: &[u8]) -> PacketMeta {
        let mut meta = PacketMeta::default();
        assert_eq!(parse_headers(frame, &mut meta), Ok(Parsed::Ip));
        meta
    }

    #[test]
    fn timestamps_and_signatures_are_read() {
        let f = frame(
            &[
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::Timestamp(0x0102_0304, 9),
            ],
            b"hi",
        );
        let m = meta(&f);
        let options = tcp_options(&f[..], m.l4_offset as usize, header_len(&m));
        assert_eq!(
            options,
            TcpOptions {
                has_timestamp: true,
                ts_val: 0x0102_0304,
                ..TcpOptions::default()
            }
        );
        // An MD5 signature option (kind 19, 18 bytes) after a NOP pair.
        let mut with_md5 = f.clone();
        let options_at = m.l4_offset as usize + MIN_HEADER_LEN;
        with_md5[options_at..options_at + 2].copy_from_slice(&[19, 10]);
        let options = tcp_options(&with_md5[..], m.l4_offset as usize, header_len(&m));
        assert!(options.signature);
        // A length running past the header.
        let mut bad = f.clone();
        bad[options_at..options_at + 2].copy_from_slice(&[30, 40]);
        assert!(tcp_options(&bad[..], m.l4_offset as usize, header_len(&m)).malformed);
    }

    #[test]
    fn checksums_valid_offloaded_and_invalid() {
        let f = frame(&[], b"GET / HTTP/1.1\r\n\r\n!");
        let m = meta(&f);
        assert_eq!(frame_checksum_status(&f, &m), Some(ChecksumStatus::Valid));
        let field = m.l4_offset as usize + 16;
        let mut bad = f.clone();
        bad[field] ^= 0x40;
        assert_eq!(
            frame_checksum_status(&bad, &m),
            Some(ChecksumStatus::Invalid)
        );
        let mut offloaded = f.clone();
        let l4_len = m.l3_len - (m.l4_offset - m.l3_offset);
        let placeholder = checksum::offload_placeholder(&m, l4_len);
        offloaded[field..field + 2].copy_from_slice(&placeholder.to_le_bytes());
        assert_eq!(
            frame_checksum_status(&offloaded, &m),
            Some(ChecksumStatus::Offloaded)
        );
        // A changed payload byte is caught.
        let mut tampered = f.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            frame_checksum_status(&tampered, &m),
            Some(ChecksumStatus::Invalid)
        );
    }

    #[test]
    fn ipv6_checksums() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                64,
            )
            .udp(5000, 443)
            .write(&mut f, &[7u8; 33])
            .unwrap();
        let m = meta(&f);
        assert_eq!(frame_checksum_status(&f, &m), Some(ChecksumStatus::Valid));
        let mut zero = f.clone();
        let field = m.l4_offset as usize + 6;
        zero[field..field + 2].copy_from_slice(&[0, 0]);
        // Zero is "no checksum" only over IPv4.
        assert_eq!(
            frame_checksum_status(&zero, &m),
            Some(ChecksumStatus::Invalid)
        );
    }
}
