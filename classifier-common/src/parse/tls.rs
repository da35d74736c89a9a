//! The TLS ClientHello: where its server name is, and whether it carries ECH.
//!
//! The parser reads a client's first stream bytes as a whole record: the datapath collects
//! in-order segments until the record is complete (a post-quantum ClientHello is ~1.8 KB and
//! crosses the wire as two segments), then parses once. Extensions are walked in whatever
//! order they come (Chrome permutes them), GREASE values are just unknown types.

use super::PacketBytes;

pub const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const RANDOM_LEN: usize = 32;
const MAX_SESSION_ID_LEN: usize = 32;
const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
const SNI_HOST_NAME: u8 = 0;
/// Chrome sends about 18 extensions, Firefox about 17; more than this is not a browser.
const MAX_EXTENSIONS: usize = 40;
/// Server name list entries looked at (there is only ever one host_name in practice).
const MAX_SNI_ENTRIES: usize = 4;
/// Longest DNS name.
pub const MAX_NAME_LEN: usize = 255;

/// The parts of a ClientHello the classifier uses; offsets are into the parsed bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// Offset of the server name, valid when `sni_len > 0`.
    pub sni_offset: u16,
    /// Length of the server name; 0 when there is none.
    pub sni_len: u16,
    /// The ECH extension is present (real or GREASE).
    pub ech: bool,
}

/// What [`parse_record`] made of the bytes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsStatus {
    /// Not a TLS handshake record carrying a ClientHello.
    NotTls,
    /// A ClientHello whose record is not all there: `total` bytes are needed (0 while even
    /// the headers are incomplete).
    NeedMore { total: u16 },
    /// Parsed; see the [`ClientHello`].
    Complete,
    /// A ClientHello the classifier cannot read.
    Unparsable(Unparsable),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unparsable {
    /// The handshake message continues in another TLS record.
    RecordFragmented,
    /// Larger than `max_total` bytes.
    TooLarge,
    /// A length field points past its container.
    Malformed,
}

/// Parses a client's first stream bytes `[0, len)` as a TLS record holding a ClientHello.
/// `max_total` is the most the caller can buffer.
#[inline(always)]
pub fn parse_record<P: PacketBytes + ?Sized>(
    p: &P,
    len: usize,
    max_total: usize,
    out: &mut ClientHello,
) -> TlsStatus {
    let Some(header) = p.read::<RECORD_HEADER_LEN>(0) else {
        return need_more_or_not_tls(p, len);
    };
    // Content type handshake, protocol version 3.x (SSL 3.0 to TLS 1.3 all say 3).
    if header[0] != CONTENT_TYPE_HANDSHAKE || header[1] != 3 || header[2] > 4 {
        return TlsStatus::NotTls;
    }
    let record_len = u16::from_be_bytes([header[3], header[4]]) as usize;
    let Some(handshake) = p.read::<HANDSHAKE_HEADER_LEN>(RECORD_HEADER_LEN) else {
        return TlsStatus::NeedMore { total: 0 };
    };
    if handshake[0] != HANDSHAKE_CLIENT_HELLO {
        return TlsStatus::NotTls;
    }
    let body_len = u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
    if HANDSHAKE_HEADER_LEN + body_len > record_len {
        return TlsStatus::Unparsable(Unparsable::RecordFragmented);
    }
    let total = RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + body_len;
    if total > max_total {
        return TlsStatus::Unparsable(Unparsable::TooLarge);
    }
    if len < total {
        return TlsStatus::NeedMore {
            total: total as u16,
        };
    }
    let body = RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN;
    match parse_body(p, body, total, out) {
        Ok(()) => TlsStatus::Complete,
        Err(()) => TlsStatus::Unparsable(Unparsable::Malformed),
    }
}

/// Parses a bare ClientHello handshake message (type, 24-bit length, body) in `[0, len)`,
/// as QUIC carries it in CRYPTO frames (no TLS record header).
pub fn parse_handshake<P: PacketBytes + ?Sized>(
    p: &P,
    len: usize,
    out: &mut ClientHello,
) -> TlsStatus {
    let Some(handshake) = p.read::<HANDSHAKE_HEADER_LEN>(0) else {
        return TlsStatus::NeedMore { total: 0 };
    };
    if handshake[0] != HANDSHAKE_CLIENT_HELLO {
        return TlsStatus::NotTls;
    }
    let body_len = u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
    let total = HANDSHAKE_HEADER_LEN + body_len;
    if len < total {
        return TlsStatus::NeedMore {
            total: total.min(u16::MAX as usize) as u16,
        };
    }
    match parse_body(p, HANDSHAKE_HEADER_LEN, total, out) {
        Ok(()) => TlsStatus::Complete,
        Err(()) => TlsStatus::Unparsable(Unparsable::Malformed),
    }
}

/// Fewer than 5 bytes: a TLS record in the making, or not TLS at all.
#[inline(always)]
fn need_more_or_not_tls<P: PacketBytes + ?Sized>(p: &P, len: usize) -> TlsStatus {
    if len == 0 || len >= RECORD_HEADER_LEN {
        return TlsStatus::NotTls;
    }
    match p.read::<1>(0) {
        Some([CONTENT_TYPE_HANDSHAKE]) => TlsStatus::NeedMore { total: 0 },
        _ => TlsStatus::NotTls,
    }
}

/// Walks the ClientHello body in `[start, end)`: version, random, session id, cipher
/// suites, compression methods, then the extensions.
#[inline(always)]
fn parse_body<P: PacketBytes + ?Sized>(
    p: &P,
    start: usize,
    end: usize,
    out: &mut ClientHello,
) -> Result<(), ()> {
    let mut offset = start + 2 + RANDOM_LEN; // legacy_version, random
    let [session_id_len] = p.read::<1>(offset).ok_or(())?;
    if session_id_len as usize > MAX_SESSION_ID_LEN {
        return Err(());
    }
    offset += 1 + session_id_len as usize;
    let cipher_suites_len = u16::from_be_bytes(p.read::<2>(offset).ok_or(())?) as usize;
    offset += 2 + cipher_suites_len;
    let [compression_len] = p.read::<1>(offset).ok_or(())?;
    offset += 1 + compression_len as usize;
    if offset == end {
        return Ok(()); // no extensions (SSL 3.0 style): no server name
    }
    let extensions_len = u16::from_be_bytes(p.read::<2>(offset).ok_or(())?) as usize;
    offset += 2;
    let extensions_end = offset + extensions_len;
    if extensions_end > end {
        return Err(());
    }
    parse_extensions(p, offset, extensions_end, out)
}

#[inline(always)]
fn parse_extensions<P: PacketBytes + ?Sized>(
    p: &P,
    mut offset: usize,
    end: usize,
    out: &mut ClientHello,
) -> Result<(), ()> {
    for _ in 0..MAX_EXTENSIONS {
        if offset >= end {
            return Ok(());
        }
        let header = p.read::<4>(offset).ok_or(())?;
        let ext_type = u16::from_be_bytes([header[0], header[1]]);
        let ext_len = u16::from_be_bytes([header[2], header[3]]) as usize;
        let data = offset + 4;
        if data + ext_len > end {
            return Err(());
        }
        match ext_type {
            EXT_SERVER_NAME => parse_server_name(p, data, data + ext_len, out)?,
            EXT_ENCRYPTED_CLIENT_HELLO => out.ech = true,
            _ => {}
        }
        offset = data + ext_len;
    }
    // More extensions than any real client sends. A name found among them stands; without
    // one, the rest went unread, and the flow counts as unparsed rather than as nameless.
    if out.sni_len > 0 { Ok(()) } else { Err(()) }
}

/// The server_name extension: a list of (type, name) whose last entry is the host_name.
#[inline(always)]
fn parse_server_name<P: PacketBytes + ?Sized>(
    p: &P,
    start: usize,
    end: usize,
    out: &mut ClientHello,
) -> Result<(), ()> {
    let list_len = u16::from_be_bytes(p.read::<2>(start).ok_or(())?) as usize;
    let list_end = start + 2 + list_len;
    // The list fills the extension, and the host name ends the list, as TLS servers
    // require: lengths that disagree could make a prefix of the name look like the name.
    if list_end != end {
        return Err(());
    }
    let mut offset = start + 2;
    for _ in 0..MAX_SNI_ENTRIES {
        if offset + 3 > list_end {
            return Ok(());
        }
        // Type and length read apart: an odd-sized read is assembled with shifts, which in
        // BPF once shifted a pointer on a path the verifier explores (verifier-notes.md).
        let [name_type] = p.read::<1>(offset).ok_or(())?;
        let name_len = u16::from_be_bytes(p.read::<2>(offset + 1).ok_or(())?) as usize;
        let name = offset + 3;
        if name + name_len > list_end {
            return Err(());
        }
        if name_type == SNI_HOST_NAME {
            if name_len == 0 || name_len > MAX_NAME_LEN || name + name_len != list_end {
                return Err(());
            }
            out.sni_offset = name as u16;
            out.sni_len = name_len as u16;
            return Ok(());
        }
        offset = name + name_len;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
