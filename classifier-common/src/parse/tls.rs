//! The TLS ClientHello: where its server name is, and whether it carries ECH.
//!
//! The parser reads a client's first stream bytes as a whole record: the datapath collects
//! segments until the record is complete (a post-quantum ClientHello is ~1.8 KB and crosses
//! the wire as two segments), then parses once. Extensions are walked in whatever order they
//! come (Chrome permutes them), GREASE values are just unknown types.
//!
//! A handshake message may also be spread over several TLS records (record fragmentation,
//! RFC 8446 §5.1, which servers accept and SNI-filter evasion tools use): [`plan_records`]
//! lists where each record's part of it is, so the datapath can join the parts and parse
//! the message with [`parse_handshake`].

use core::ops::ControlFlow;

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
pub const MAX_EXTENSIONS: usize = 40;
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
///
/// Three steps, which the datapath runs apart (the extension walk as a `bpf_loop`):
/// [`locate_record`] checks the headers and finds the extensions, [`extension_step`] reads
/// one extension at a time, and [`conclude`] gives the status.
#[inline(always)]
pub fn parse_record<P: PacketBytes + ?Sized>(
    p: &P,
    len: usize,
    max_total: usize,
    out: &mut ClientHello,
) -> TlsStatus {
    match locate_record(p, len, max_total) {
        Located::Done(status) => status,
        Located::Extensions(mut walk) => {
            walk_all(p, &mut walk, out);
            conclude(&walk, out)
        }
    }
}

/// Parses a bare ClientHello handshake message (type, 24-bit length, body) in `[0, len)`,
/// as QUIC carries it in CRYPTO frames (no TLS record header), or as joined from records.
pub fn parse_handshake<P: PacketBytes + ?Sized>(
    p: &P,
    len: usize,
    out: &mut ClientHello,
) -> TlsStatus {
    match locate_handshake(p, len) {
        Located::Done(status) => status,
        Located::Extensions(mut walk) => {
            walk_all(p, &mut walk, out);
            conclude(&walk, out)
        }
    }
}

/// Runs the extension walk to its end in a plain loop.
fn walk_all<P: PacketBytes + ?Sized>(p: &P, walk: &mut ExtensionWalk, out: &mut ClientHello) {
    for _ in 0..MAX_EXTENSIONS + 1 {
        if extension_step(p, walk, out).is_break() {
            break;
        }
    }
}

/// Where a ClientHello's parse stands after its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Located {
    /// Settled without walking the extensions.
    Done(TlsStatus),
    /// The extensions are to be walked.
    Extensions(ExtensionWalk),
}

/// The walk over a ClientHello's extensions, one [`extension_step`] at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtensionWalk {
    /// The next extension's offset.
    pub offset: usize,
    /// Where the walk stops: the extensions' end, or what the caller holds of them.
    pub end: usize,
    /// Extensions read.
    pub steps: usize,
    /// The hello is larger than the caller holds (`end` is what it holds).
    pub truncated: bool,
    /// [`walk_result`].
    pub result: u8,
}

/// Values of [`ExtensionWalk::result`].
pub mod walk_result {
    /// Still walking.
    pub const WALKING: u8 = 0;
    /// Every extension up to the end was read.
    pub const DONE: u8 = 1;
    /// A length pointed past its container, or more extensions than any client sends
    /// came before a name.
    pub const MALFORMED: u8 = 2;
}

/// The headers of a TLS record holding a ClientHello in `[0, len)`.
#[inline(always)]
pub fn locate_record<P: PacketBytes + ?Sized>(p: &P, len: usize, max_total: usize) -> Located {
    let Some(header) = p.read::<RECORD_HEADER_LEN>(0) else {
        return Located::Done(need_more_or_not_tls(p, len));
    };
    // Content type handshake, protocol version 3.x (SSL 3.0 to TLS 1.3 all say 3).
    if header[0] != CONTENT_TYPE_HANDSHAKE || header[1] != 3 || header[2] > 4 {
        return Located::Done(TlsStatus::NotTls);
    }
    let record_len = u16::from_be_bytes([header[3], header[4]]) as usize;
    let Some(handshake) = p.read::<HANDSHAKE_HEADER_LEN>(RECORD_HEADER_LEN) else {
        return Located::Done(TlsStatus::NeedMore { total: 0 });
    };
    if handshake[0] != HANDSHAKE_CLIENT_HELLO {
        return Located::Done(TlsStatus::NotTls);
    }
    let body_len = u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
    if HANDSHAKE_HEADER_LEN + body_len > record_len {
        return Located::Done(TlsStatus::Unparsable(Unparsable::RecordFragmented));
    }
    let total = RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + body_len;
    // Larger than the caller can hold: the part it holds is read, and settles if the name
    // is in it (the server walks the same extensions in the same order, so a name whole in
    // the part is the name it reads).
    let held = if total > max_total { max_total } else { total };
    if len < held {
        return Located::Done(TlsStatus::NeedMore { total: held as u16 });
    }
    locate_extensions(p, RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN, total, held)
}

/// The header of a bare ClientHello handshake message in `[0, len)`.
#[inline(always)]
pub fn locate_handshake<P: PacketBytes + ?Sized>(p: &P, len: usize) -> Located {
    let Some(handshake) = p.read::<HANDSHAKE_HEADER_LEN>(0) else {
        return Located::Done(TlsStatus::NeedMore { total: 0 });
    };
    if handshake[0] != HANDSHAKE_CLIENT_HELLO {
        return Located::Done(TlsStatus::NotTls);
    }
    let body_len = u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
    let total = HANDSHAKE_HEADER_LEN + body_len;
    if len < total {
        return Located::Done(TlsStatus::NeedMore {
            total: total.min(u16::MAX as usize) as u16,
        });
    }
    locate_extensions(p, HANDSHAKE_HEADER_LEN, total, total)
}

/// The ClientHello body in `[start, end)`, of which `[start, held)` is at hand: version,
/// random, session id, cipher suites and compression methods are stepped over to the
/// extensions, walked as far as `held`.
#[inline(always)]
fn locate_extensions<P: PacketBytes + ?Sized>(
    p: &P,
    start: usize,
    end: usize,
    held: usize,
) -> Located {
    let truncated = held < end;
    let Ok((extensions, extensions_end)) = extensions_of(p, start, end) else {
        return Located::Done(malformed(truncated));
    };
    if extensions_end > end {
        return Located::Done(malformed(truncated));
    }
    Located::Extensions(ExtensionWalk {
        offset: extensions,
        end: if extensions_end < held {
            extensions_end
        } else {
            held
        },
        steps: 0,
        truncated,
        result: walk_result::WALKING,
    })
}

/// A hello that cannot be read: too large when the caller could not hold it all.
#[inline(always)]
fn malformed(truncated: bool) -> TlsStatus {
    if truncated {
        TlsStatus::Unparsable(Unparsable::TooLarge)
    } else {
        TlsStatus::Unparsable(Unparsable::Malformed)
    }
}

/// Reads the extension at `walk.offset`; `Break` once the walk is over.
#[inline(always)]
pub fn extension_step<P: PacketBytes + ?Sized>(
    p: &P,
    walk: &mut ExtensionWalk,
    out: &mut ClientHello,
) -> ControlFlow<()> {
    if walk.result != walk_result::WALKING {
        return ControlFlow::Break(());
    }
    if walk.offset >= walk.end {
        walk.result = walk_result::DONE;
        return ControlFlow::Break(());
    }
    if walk.steps >= MAX_EXTENSIONS {
        // More extensions than any real client sends. A name found among them stands;
        // without one, the rest went unread, and the flow counts as unreadable rather than
        // as nameless.
        walk.result = if out.sni_len > 0 {
            walk_result::DONE
        } else {
            walk_result::MALFORMED
        };
        return ControlFlow::Break(());
    }
    walk.steps += 1;
    let offset = walk.offset;
    let Some(header) = p.read::<4>(offset) else {
        walk.result = walk_result::MALFORMED;
        return ControlFlow::Break(());
    };
    let ext_type = u16::from_be_bytes([header[0], header[1]]);
    let ext_len = u16::from_be_bytes([header[2], header[3]]) as usize;
    let data = offset + 4;
    if data + ext_len > walk.end {
        walk.result = walk_result::MALFORMED;
        return ControlFlow::Break(());
    }
    match ext_type {
        EXT_SERVER_NAME if parse_server_name(p, data, data + ext_len, out).is_err() => {
            walk.result = walk_result::MALFORMED;
            return ControlFlow::Break(());
        }
        EXT_ENCRYPTED_CLIENT_HELLO => out.ech = true,
        _ => {}
    }
    walk.offset = data + ext_len;
    ControlFlow::Continue(())
}

/// The status once the walk is over: a hello larger than held settles only with a name.
#[inline(always)]
pub fn conclude(walk: &ExtensionWalk, out: &ClientHello) -> TlsStatus {
    if walk.truncated {
        return if out.sni_len > 0 {
            TlsStatus::Complete
        } else {
            TlsStatus::Unparsable(Unparsable::TooLarge)
        };
    }
    if walk.result == walk_result::DONE {
        TlsStatus::Complete
    } else {
        TlsStatus::Unparsable(Unparsable::Malformed)
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

/// Where the extensions of the ClientHello body `[start, end)` are: (first byte, end).
/// Empty at `end` when there are none (SSL 3.0 style).
#[inline(always)]
fn extensions_of<P: PacketBytes + ?Sized>(
    p: &P,
    start: usize,
    end: usize,
) -> Result<(usize, usize), ()> {
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
        return Ok((end, end));
    }
    let extensions_len = u16::from_be_bytes(p.read::<2>(offset).ok_or(())?) as usize;
    offset += 2;
    Ok((offset, offset + extensions_len))
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

/// Records one handshake message may be spread over, at most. Clients send one; evasion
/// tools split at one to a few chosen places (byedpi `--tlsrec`, zapret `tlsrec`). A
/// message in more records than this is unreadable, not allowed.
pub const MAX_RECORDS: usize = 16;

/// One record's part of the handshake message: `len` bytes at `offset` in the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordSpan {
    pub offset: u16,
    pub len: u16,
}

/// Where a handshake message spread over records is, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordPlan {
    pub spans: [RecordSpan; MAX_RECORDS],
    pub count: usize,
}

/// What [`plan_records`] made of the bytes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordsStatus {
    /// The spans hold the whole handshake message, `len` bytes.
    Ready { len: u16 },
    /// More records are needed.
    NeedMore,
    /// A record that is not a handshake record, an empty one, or not a ClientHello.
    Malformed,
    /// More than [`MAX_RECORDS`] records, or a message longer than `max_total`.
    TooLarge,
}

/// The state of a [`plan_records`] walk between records.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordWalk {
    /// Offset of the next record header.
    pub offset: usize,
    /// Handshake bytes the spans so far hold.
    pub gathered: usize,
    /// The handshake header's four bytes, as they come in.
    pub header: [u8; HANDSHAKE_HEADER_LEN],
    /// The message's length with its header, once the header is in.
    pub need: usize,
}

/// Lists the records of a client's first bytes `[0, len)` that carry its handshake
/// message, one record per call of [`record_step`] (the datapath runs the steps one by one
/// too). `max_total` bounds the message.
pub fn plan_records<P: PacketBytes + ?Sized>(
    p: &P,
    len: usize,
    max_total: usize,
    plan: &mut RecordPlan,
) -> RecordsStatus {
    let mut walk = RecordWalk::default();
    for index in 0..MAX_RECORDS {
        if let Some(status) = record_step(p, len, max_total, index, &mut walk, plan) {
            return status;
        }
    }
    RecordsStatus::TooLarge
}

/// Reads record `index` at `walk.offset` into `plan`; `Some(status)` once the walk is over.
#[inline(always)]
pub fn record_step<P: PacketBytes + ?Sized>(
    p: &P,
    len: usize,
    max_total: usize,
    index: usize,
    walk: &mut RecordWalk,
    plan: &mut RecordPlan,
) -> Option<RecordsStatus> {
    let Some(header) = p.read::<RECORD_HEADER_LEN>(walk.offset) else {
        return Some(RecordsStatus::NeedMore);
    };
    // Handshake records only: TLS forbids interleaving other record types with a
    // handshake message (RFC 8446 §5.1), and empty handshake records.
    if header[0] != CONTENT_TYPE_HANDSHAKE || header[1] != 3 || header[2] > 4 {
        return Some(RecordsStatus::Malformed);
    }
    let record_len = u16::from_be_bytes([header[3], header[4]]) as usize;
    if record_len == 0 {
        return Some(RecordsStatus::Malformed);
    }
    let start = walk.offset + RECORD_HEADER_LEN;
    let held = len.saturating_sub(start);
    let take = if record_len < held { record_len } else { held };
    if index < MAX_RECORDS {
        plan.spans[index] = RecordSpan {
            offset: start as u16,
            len: take as u16,
        };
        plan.count = index + 1;
    }
    // The handshake header's bytes, wherever the records cut it.
    for i in 0..HANDSHAKE_HEADER_LEN {
        let at = walk.gathered + i;
        if i < take && at < HANDSHAKE_HEADER_LEN {
            match p.read::<1>(start + i) {
                Some([byte]) => walk.header[at] = byte,
                None => return Some(RecordsStatus::NeedMore),
            }
        }
    }
    walk.gathered += take;
    if walk.need == 0 && walk.gathered >= HANDSHAKE_HEADER_LEN {
        if walk.header[0] != HANDSHAKE_CLIENT_HELLO {
            return Some(RecordsStatus::Malformed);
        }
        let body_len =
            u32::from_be_bytes([0, walk.header[1], walk.header[2], walk.header[3]]) as usize;
        walk.need = HANDSHAKE_HEADER_LEN + body_len;
        if walk.need > max_total {
            return Some(RecordsStatus::TooLarge);
        }
    }
    if walk.need != 0 && walk.gathered >= walk.need {
        return Some(RecordsStatus::Ready {
            len: walk.need as u16,
        });
    }
    if take < record_len {
        return Some(RecordsStatus::NeedMore);
    }
    walk.offset = start + record_len;
    None
}

/// Joins the spans of `plan` from `stream` into `out` (host side; the datapath copies them
/// with a helper). Returns the bytes written.
pub fn join_records(stream: &[u8], plan: &RecordPlan, out: &mut [u8]) -> usize {
    let mut written = 0;
    for span in &plan.spans[..plan.count] {
        let from = span.offset as usize;
        let part = &stream[from..from + span.len as usize];
        let room = out.len() - written;
        let n = part.len().min(room);
        out[written..written + n].copy_from_slice(&part[..n]);
        written += n;
    }
    written
}

#[cfg(test)]
mod tests;
