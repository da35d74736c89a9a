//! Opens the client Initial packets of a QUIC connection and reassembles the TLS ClientHello
//! they carry, so that a gateway can learn the server name (SNI) of QUIC traffic.
//!
//! Initial packets are encrypted, but with keys that anyone can derive from the Destination
//! Connection ID sent in the clear (RFC 9001 §5.2 for QUIC v1, RFC 9369 §3.3 for QUIC v2).
//! Opening them therefore needs no secret, only the exact steps of the RFCs: parse the long
//! header, derive the client's Initial keys, remove header protection, open the AEAD, walk the
//! frames and put the CRYPTO stream back together.
//!
//! Everything here works on untrusted bytes off the wire: every length is checked before it is
//! used, buffers are bounded ([`MAX_CRYPTO_BYTES`], [`MAX_DATAGRAMS`]), and malformed input yields
//! a [`QuicError`], never a panic.

#![forbid(unsafe_code)]

use aes::Aes128;
use aes::cipher::BlockEncrypt;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;

/// At most this many bytes of CRYPTO stream are buffered: a ClientHello, even a post-quantum
/// one with large key shares, is a few KiB; anything reaching further is refused as
/// [`QuicError::TooLarge`] rather than letting a peer make the gateway allocate at will.
pub const MAX_CRYPTO_BYTES: usize = 64 * 1024;

/// At most this many datagrams of the input are looked at, so that the cost of one call stays
/// bounded whatever the caller hands in; a ClientHello needs two or three in practice.
pub const MAX_DATAGRAMS: usize = 16;

/// Connection IDs in QUIC v1 and v2 are at most 20 bytes (RFC 9000 §17.2).
const MAX_CID_LEN: usize = 20;
/// Header protection samples 16 bytes of ciphertext (RFC 9001 §5.4.2).
const SAMPLE_LEN: usize = 16;
/// AEAD_AES_128_GCM appends a 16-byte tag (RFC 9001 §5.3).
const TAG_LEN: usize = 16;
/// The sample is taken as if the packet number were 4 bytes long (RFC 9001 §5.4.2).
const MAX_PN_LEN: usize = 4;
/// Stream offsets are limited to 2^62 - 1 (RFC 9000 §19.6).
const MAX_STREAM_OFFSET: u64 = (1 << 62) - 1;
/// TLS handshake type of ClientHello (RFC 8446 §4).
const CLIENT_HELLO: u8 = 0x01;
/// A TLS handshake message header: 1-byte type and 3-byte length (RFC 8446 §4).
const HANDSHAKE_HEADER_LEN: usize = 4;

/// Nonzero reserved bits after header protection is removed (RFC 9000 §17.2): the packet
/// opened but is not one a real client sends.
const RESERVED_BITS: QuicError = QuicError::Malformed("reserved header bits are set");

/// initial_salt of QUIC v1 (RFC 9001 §5.2).
const V1_INITIAL_SALT: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
/// initial_salt of QUIC v2 (RFC 9369 §3.3.1).
const V2_INITIAL_SALT: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];

/// QUIC versions whose Initial packets we can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuicVersion {
    /// QUIC version 1, 0x00000001 (RFC 9000, RFC 9001).
    V1,
    /// QUIC version 2, 0x6b3343cf (RFC 9369).
    V2,
}

impl QuicVersion {
    /// The version number of QUIC v1 in the long header.
    pub const V1_WIRE: u32 = 0x0000_0001;
    /// The version number of QUIC v2 in the long header (RFC 9369 §3.1).
    pub const V2_WIRE: u32 = 0x6b33_43cf;

    /// Maps the Version field of a long header to a version we can open, if it is one.
    pub const fn from_wire(version: u32) -> Option<Self> {
        match version {
            Self::V1_WIRE => Some(Self::V1),
            Self::V2_WIRE => Some(Self::V2),
            _ => None,
        }
    }

    /// The Version field this version puts in long headers.
    pub const fn wire(self) -> u32 {
        match self {
            Self::V1 => Self::V1_WIRE,
            Self::V2 => Self::V2_WIRE,
        }
    }

    /// The salt of HKDF-Extract for Initial secrets: each version has its own, so that
    /// middleboxes cannot ossify on one.
    const fn initial_salt(self) -> &'static [u8; 20] {
        match self {
            Self::V1 => &V1_INITIAL_SALT,
            Self::V2 => &V2_INITIAL_SALT,
        }
    }

    /// HKDF-Expand-Label labels for the packet key, IV and header protection key; v2 renamed
    /// them (RFC 9369 §3.3.2).
    const fn labels(self) -> KeyLabels {
        match self {
            Self::V1 => KeyLabels {
                key: b"quic key",
                iv: b"quic iv",
                hp: b"quic hp",
            },
            Self::V2 => KeyLabels {
                key: b"quicv2 key",
                iv: b"quicv2 iv",
                hp: b"quicv2 hp",
            },
        }
    }

    /// Interprets the two Long Packet Type bits; v2 permuted them (RFC 9369 §3.2), so an
    /// Initial is 0b00 in v1 but 0b01 in v2.
    const fn long_type(self, bits: u8) -> LongType {
        match (self, bits & 0x03) {
            (Self::V1, 0b00) | (Self::V2, 0b01) => LongType::Initial,
            (Self::V1, 0b01) | (Self::V2, 0b10) => LongType::ZeroRtt,
            (Self::V1, 0b10) | (Self::V2, 0b11) => LongType::Handshake,
            _ => LongType::Retry,
        }
    }
}

/// The per-version names of the three keys derived from a packet protection secret.
struct KeyLabels {
    key: &'static [u8],
    iv: &'static [u8],
    hp: &'static [u8],
}

/// The four kinds of long-header packet that carry a version of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LongType {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
}

/// Errors name what was wrong with the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuicError {
    /// The datagram does not start with a QUIC long-header Initial packet (short header,
    /// Version Negotiation, 0-RTT, Handshake or Retry).
    #[error("not a QUIC Initial packet")]
    NotInitial,
    /// A long header whose version we cannot open.
    #[error("unsupported QUIC version {0:#010x}")]
    UnsupportedVersion(u32),
    /// The bytes end before the named field does.
    #[error("truncated QUIC packet: {0}")]
    Truncated(&'static str),
    /// The AEAD tag did not verify: wrong keys (e.g. a server Initial), corruption, or not QUIC.
    #[error("QUIC Initial packet failed to decrypt")]
    DecryptFailed,
    /// More Initial datagrams are needed: `have` bytes of the CRYPTO stream are contiguous from
    /// offset 0, and `need` is the ClientHello's full size once its 4-byte header is known.
    #[error("ClientHello incomplete: have {have} bytes, need {}", need.map_or_else(|| "unknown".to_string(), |n| n.to_string()))]
    Incomplete {
        /// Bytes of the CRYPTO stream present without a gap from offset 0.
        have: usize,
        /// 4 + the ClientHello's 24-bit length, once those 4 bytes are in.
        need: Option<usize>,
    },
    /// The packet or its frames break the protocol in the named way.
    #[error("malformed QUIC Initial: {0}")]
    Malformed(&'static str),
    /// The CRYPTO stream reaches, or the ClientHello claims, more than [`MAX_CRYPTO_BYTES`].
    #[error("ClientHello exceeds the {MAX_CRYPTO_BYTES}-byte limit")]
    TooLarge,
}

/// What a datagram's first packet header says, without decrypting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialHeader {
    /// The QUIC version, which selects salt, labels and packet type bits.
    pub version: QuicVersion,
    /// Destination Connection ID: the client's choice in its first Initial, and the input of
    /// the Initial key derivation.
    pub dcid: Vec<u8>,
    /// Source Connection ID: the client's own ID, stable for the connection.
    pub scid: Vec<u8>,
    /// The Initial token: empty unless the client answers a Retry or reuses a NEW_TOKEN.
    pub token: Vec<u8>,
    /// Offset of the (protected) Packet Number field from the start of the packet.
    pub pn_offset: usize,
    /// Bytes this packet spans in the datagram, header included; coalesced packets follow it.
    pub packet_len: usize,
}

/// The client's Initial packet protection keys (RFC 9001 §5.1–5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialKeys {
    /// AEAD_AES_128_GCM key.
    pub key: [u8; 16],
    /// AEAD IV, XORed with the packet number to form the nonce.
    pub iv: [u8; 12],
    /// AES-128 header protection key.
    pub hp: [u8; 16],
}

/// What a datagram's first packet header says, without decrypting: Some when it is a client
/// Initial of a version we support.
///
/// A server's Initial has the same shape and is also accepted here; it is told apart only by
/// failing to decrypt with client keys.
pub fn client_initial_header(datagram: &[u8]) -> Option<InitialHeader> {
    let packet = parse_long_packet(datagram).ok()?;
    (packet.kind == LongType::Initial).then(|| packet.to_header())
}

/// Derives the client's Initial keys from the Destination Connection ID of the client's first
/// Initial (RFC 9001 §5.2; labels and salt per version).
pub fn client_initial_keys(version: QuicVersion, dcid: &[u8]) -> InitialKeys {
    let initial_secret = Hkdf::<Sha256>::new(Some(version.initial_salt()), dcid);
    let mut client_secret = [0u8; 32];
    expand_label(&initial_secret, b"client in", &mut client_secret);
    let client =
        Hkdf::<Sha256>::from_prk(&client_secret).expect("a 32-byte secret is a valid SHA-256 PRK");
    let labels = version.labels();
    let mut keys = InitialKeys {
        key: [0; 16],
        iv: [0; 12],
        hp: [0; 16],
    };
    expand_label(&client, labels.key, &mut keys.key);
    expand_label(&client, labels.iv, &mut keys.iv);
    expand_label(&client, labels.hp, &mut keys.hp);
    keys
}

/// Reassembles the TLS ClientHello carried in CRYPTO frames of the client Initial packets of
/// one connection.
///
/// `datagrams` are UDP payloads in the order seen; only the first [`MAX_DATAGRAMS`] are
/// considered. The connection (version, DCID, SCID, and so the keys) is fixed by the first
/// datagram that starts with an Initial of a supported version which opens; datagrams before
/// it, and packets of other kinds or other connections, are skipped. Later Initials of the
/// connection that fail to open are dropped, as a server would drop them; malformed frames
/// inside an opened Initial are an error, as they would be for the server.
///
/// Returns the complete handshake message: type 0x01, 3-byte length, body (4 + length bytes).
pub fn client_hello_from_initials(datagrams: &[&[u8]]) -> Result<Vec<u8>, QuicError> {
    let considered = &datagrams[..datagrams.len().min(MAX_DATAGRAMS)];
    let mut not_initial = None;
    let mut failed_to_open = None;
    for (index, datagram) in considered.iter().enumerate() {
        let first = match first_initial(datagram) {
            Ok(first) => first,
            Err(error) => {
                not_initial.get_or_insert(error);
                continue;
            }
        };
        let reassembly = Reassembly::new(first);
        match reassembly.open_first() {
            // Not an Initial of a real connection (a forgery, a server's, corruption): look
            // for the next one rather than let it hide the real ClientHello.
            Err(error) => {
                failed_to_open.get_or_insert(error);
            }
            Ok(opened) => return reassembly.run(opened, datagram, &considered[index + 1..]),
        }
    }
    Err(failed_to_open
        .or(not_initial)
        .unwrap_or(QuicError::Incomplete {
            have: 0,
            need: None,
        }))
}

/// The first packet of a datagram, when it is an Initial of a supported version: the
/// candidate that fixes the connection and its keys. Other kinds of packet are reported as
/// [`QuicError::NotInitial`] before their lengths are trusted.
fn first_initial(datagram: &[u8]) -> Result<LongPacket<'_>, QuicError> {
    match long_header_kind(datagram)? {
        (_, LongType::Initial) => parse_long_packet(datagram),
        _ => Err(QuicError::NotInitial),
    }
}

/// HKDF-Expand-Label of TLS 1.3 (RFC 8446 §7.1) with an empty context, which is all QUIC's
/// Initial key schedule uses.
fn expand_label(prk: &Hkdf<Sha256>, label: &[u8], out: &mut [u8]) {
    let info = hkdf_label(label, out.len());
    prk.expand(&info, out)
        .expect("outputs of at most 32 bytes are within HKDF-SHA256's limit");
}

/// The HkdfLabel structure: u16 length, then "tls13 " + label and an empty context, each
/// prefixed by its u8 length. Labels here are constants shorter than 20 bytes.
fn hkdf_label(label: &[u8], len: usize) -> Vec<u8> {
    const PREFIX: &[u8] = b"tls13 ";
    let mut info = Vec::with_capacity(4 + PREFIX.len() + label.len());
    info.extend_from_slice(&(len as u16).to_be_bytes());
    info.push((PREFIX.len() + label.len()) as u8);
    info.extend_from_slice(PREFIX);
    info.extend_from_slice(label);
    info.push(0);
    info
}

/// A cursor over untrusted bytes whose reads return None instead of running off the end, so
/// callers can name the field that was cut short.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn u8(&mut self) -> Option<u8> {
        let byte = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(byte)
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        let bytes: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_be_bytes(bytes))
    }

    /// A QUIC variable-length integer (RFC 9000 §16): the top two bits of the first byte give
    /// its length, 1, 2, 4 or 8 bytes.
    fn varint(&mut self) -> Option<u64> {
        let first = *self.buf.get(self.pos)?;
        let len = 1usize << (first >> 6);
        let bytes = self.take(len)?;
        let value = bytes
            .iter()
            .skip(1)
            .fold(u64::from(first & 0x3f), |acc, &b| (acc << 8) | u64::from(b));
        Some(value)
    }

    /// A varint used as a length of bytes that follow; anything beyond usize is surely more
    /// than the buffer holds.
    fn varint_len(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    /// A connection ID: a length byte then that many bytes, at most 20 in v1 and v2.
    fn connection_id(&mut self, which: &'static str) -> Result<&'a [u8], QuicError> {
        let len = self.u8().ok_or(QuicError::Truncated(which))?;
        if usize::from(len) > MAX_CID_LEN {
            return Err(QuicError::Malformed("connection ID longer than 20 bytes"));
        }
        self.take(usize::from(len))
            .ok_or(QuicError::Truncated(which))
    }
}

/// A long-header packet of a supported version, located in its datagram but still protected.
#[derive(Debug, Clone)]
struct LongPacket<'a> {
    version: QuicVersion,
    kind: LongType,
    dcid: &'a [u8],
    scid: &'a [u8],
    token: &'a [u8],
    /// Offset of the Packet Number field from the packet start.
    pn_offset: usize,
    /// The packet's bytes, header through the end of its payload (Length field honoured).
    bytes: &'a [u8],
}

impl LongPacket<'_> {
    fn to_header(&self) -> InitialHeader {
        InitialHeader {
            version: self.version,
            dcid: self.dcid.to_vec(),
            scid: self.scid.to_vec(),
            token: self.token.to_vec(),
            pn_offset: self.pn_offset,
            packet_len: self.bytes.len(),
        }
    }

    /// Whether this packet belongs to the connection `other` started: same version and the
    /// same connection IDs, which a client keeps until it hears from the server.
    fn same_connection(&self, other: &LongPacket<'_>) -> bool {
        self.version == other.version && self.dcid == other.dcid && self.scid == other.scid
    }
}

/// Reads the first byte and Version of a long header: enough to tell whether it is an Initial
/// of a version we support before any of its lengths are trusted.
fn long_header_kind(bytes: &[u8]) -> Result<(QuicVersion, LongType), QuicError> {
    let mut r = Reader::new(bytes);
    let first = r.u8().ok_or(QuicError::Truncated("empty datagram"))?;
    if first & 0x80 == 0 {
        return Err(QuicError::NotInitial);
    }
    let wire = r.u32().ok_or(QuicError::Truncated("version"))?;
    if wire == 0 {
        return Err(QuicError::NotInitial);
    }
    let version = QuicVersion::from_wire(wire).ok_or(QuicError::UnsupportedVersion(wire))?;
    Ok((version, version.long_type(first >> 4)))
}

/// Parses the long header at the start of `bytes` (RFC 9000 §17.2) up to the Packet Number and
/// cuts the packet to its Length, so coalesced packets after it can be found.
///
/// The fixed bit is not checked: RFC 9287 lets a client grease it.
fn parse_long_packet(bytes: &[u8]) -> Result<LongPacket<'_>, QuicError> {
    let (version, kind) = long_header_kind(bytes)?;
    let mut r = Reader::new(bytes);
    r.pos = 5;
    let dcid = r.connection_id("destination connection ID")?;
    let scid = r.connection_id("source connection ID")?;
    let token = match kind {
        LongType::Initial => {
            let len = r.varint_len().ok_or(QuicError::Truncated("token length"))?;
            r.take(len).ok_or(QuicError::Truncated("token"))?
        }
        LongType::Retry => {
            // A Retry has no Length and runs to the end of the datagram; clients never send it.
            return Ok(LongPacket {
                version,
                kind,
                dcid,
                scid,
                token: &[],
                pn_offset: r.pos,
                bytes,
            });
        }
        LongType::ZeroRtt | LongType::Handshake => &[],
    };
    let length = r.varint_len().ok_or(QuicError::Truncated("length"))?;
    let pn_offset = r.pos;
    let end = pn_offset
        .checked_add(length)
        .filter(|&end| end <= bytes.len())
        .ok_or(QuicError::Truncated("packet shorter than its Length field"))?;
    if length < MAX_PN_LEN + SAMPLE_LEN {
        return Err(QuicError::Malformed(
            "Length too short for the header protection sample",
        ));
    }
    Ok(LongPacket {
        version,
        kind,
        dcid,
        scid,
        token,
        pn_offset,
        bytes: &bytes[..end],
    })
}

/// Ciphers for the client's Initial packets, keyed once per connection.
struct Opener {
    aead: Aes128Gcm,
    hp: Aes128,
    iv: [u8; 12],
}

impl Opener {
    fn new(keys: &InitialKeys) -> Self {
        Self {
            aead: Aes128Gcm::new(&keys.key.into()),
            hp: Aes128::new(&keys.hp.into()),
            iv: keys.iv,
        }
    }

    /// The header protection mask: AES-128-ECB of the sample under the hp key, first 5 bytes
    /// (RFC 9001 §5.4.3).
    fn header_mask(&self, sample: [u8; SAMPLE_LEN]) -> [u8; 5] {
        let mut block = sample.into();
        self.hp.encrypt_block(&mut block);
        let mut mask = [0u8; 5];
        mask.copy_from_slice(&block[..5]);
        mask
    }

    /// The AEAD nonce: the IV XORed with the packet number, left-padded to 12 bytes
    /// (RFC 9001 §5.3).
    fn nonce(&self, pn: u64) -> Nonce<aes_gcm::aead::consts::U12> {
        let mut nonce = self.iv;
        for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
            *n ^= p;
        }
        nonce.into()
    }

    /// Removes header and packet protection from one Initial (RFC 9001 §5.4, §5.3) and returns
    /// its packet number and plaintext frames.
    ///
    /// `largest_pn` is the largest packet number opened so far, for decoding truncated packet
    /// numbers (RFC 9000 §A.3).
    fn open(&self, packet: &LongPacket<'_>, largest_pn: Option<u64>) -> Result<Opened, QuicError> {
        let pn_offset = packet.pn_offset;
        let mut buf = packet.bytes.to_vec();
        let sample: [u8; SAMPLE_LEN] = buf
            .get(pn_offset + MAX_PN_LEN..pn_offset + MAX_PN_LEN + SAMPLE_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(QuicError::Truncated("header protection sample"))?;
        let mask = self.header_mask(sample);
        buf[0] ^= mask[0] & 0x0f;
        let pn_len = usize::from(buf[0] & 0x03) + 1;
        let mut truncated_pn = 0u64;
        for (i, m) in mask[1..=pn_len].iter().enumerate() {
            buf[pn_offset + i] ^= m;
            truncated_pn = (truncated_pn << 8) | u64::from(buf[pn_offset + i]);
        }
        let pn = decode_packet_number(largest_pn, truncated_pn, pn_len);
        let header_len = pn_offset + pn_len;
        let (header, rest) = buf.split_at_mut(header_len);
        let tag_at = rest
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(QuicError::Truncated("AEAD tag"))?;
        let (ciphertext, tag) = rest.split_at_mut(tag_at);
        let tag: [u8; TAG_LEN] = (&*tag)
            .try_into()
            .map_err(|_| QuicError::Truncated("AEAD tag"))?;
        self.aead
            .decrypt_in_place_detached(&self.nonce(pn), header, ciphertext, &Tag::from(tag))
            .map_err(|_| QuicError::DecryptFailed)?;
        if header[0] & 0x0c != 0 {
            return Err(RESERVED_BITS);
        }
        let payload = ciphertext.to_vec();
        Ok(Opened { pn, payload })
    }
}

/// An opened Initial packet.
struct Opened {
    pn: u64,
    payload: Vec<u8>,
}

/// Recovers a full packet number from its truncated encoding, the one closest to the next
/// expected number (RFC 9000 §A.3). Before any packet was opened the expected number is 0.
fn decode_packet_number(largest_pn: Option<u64>, truncated: u64, pn_len: usize) -> u64 {
    let expected = largest_pn.map_or(0, |pn| pn.saturating_add(1));
    let win = 1u64 << (pn_len * 8);
    let half = win / 2;
    let candidate = (expected & !(win - 1)) | truncated;
    if candidate.saturating_add(half) <= expected && candidate < (1 << 62) - win {
        candidate + win
    } else if candidate > expected.saturating_add(half) && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}

/// Walks the frames of an opened Initial and feeds CRYPTO data to the stream. Only the frames
/// allowed in a client Initial are known (RFC 9000 §12.4); any other type is an error, because
/// its length cannot be known and the rest of the packet could not be read.
fn read_frames(payload: &[u8], stream: &mut CryptoStream) -> Result<(), QuicError> {
    if payload.is_empty() {
        return Err(QuicError::Malformed("Initial packet carries no frames"));
    }
    let mut r = Reader::new(payload);
    while let Some(frame_type) = r.u8() {
        match frame_type {
            0x00 | 0x01 => {} // PADDING, PING: the type byte is the whole frame.
            0x02 | 0x03 => skip_ack(&mut r, frame_type == 0x03)?,
            0x06 => {
                let (offset, data) = read_crypto(&mut r)?;
                stream.insert(offset, data)?;
            }
            0x1c => skip_connection_close(&mut r)?,
            _ => {
                return Err(QuicError::Malformed(
                    "frame type not allowed in an Initial packet",
                ));
            }
        }
    }
    Ok(())
}

/// Skips an ACK frame (RFC 9000 §19.3); a client's second Initial may acknowledge the
/// server's. Every range costs at least two bytes, so a huge Range Count ends at the buffer.
fn skip_ack(r: &mut Reader<'_>, with_ecn: bool) -> Result<(), QuicError> {
    const TRUNCATED: QuicError = QuicError::Malformed("ACK frame truncated");
    let _largest = r.varint().ok_or(TRUNCATED)?;
    let _delay = r.varint().ok_or(TRUNCATED)?;
    let range_count = r.varint().ok_or(TRUNCATED)?;
    let _first_range = r.varint().ok_or(TRUNCATED)?;
    for _ in 0..range_count {
        let _gap = r.varint().ok_or(TRUNCATED)?;
        let _len = r.varint().ok_or(TRUNCATED)?;
    }
    if with_ecn {
        for _ in 0..3 {
            let _count = r.varint().ok_or(TRUNCATED)?;
        }
    }
    Ok(())
}

/// Reads a CRYPTO frame (RFC 9000 §19.6): offset, length, data.
fn read_crypto<'a>(r: &mut Reader<'a>) -> Result<(u64, &'a [u8]), QuicError> {
    let offset = r
        .varint()
        .ok_or(QuicError::Malformed("CRYPTO frame offset truncated"))?;
    let len = r
        .varint_len()
        .ok_or(QuicError::Malformed("CRYPTO frame length truncated"))?;
    let data = r
        .take(len)
        .ok_or(QuicError::Malformed("CRYPTO frame data truncated"))?;
    Ok((offset, data))
}

/// Skips a transport CONNECTION_CLOSE frame (RFC 9000 §19.19), the only close allowed in an
/// Initial.
fn skip_connection_close(r: &mut Reader<'_>) -> Result<(), QuicError> {
    const TRUNCATED: QuicError = QuicError::Malformed("CONNECTION_CLOSE frame truncated");
    let _error_code = r.varint().ok_or(TRUNCATED)?;
    let _frame_type = r.varint().ok_or(TRUNCATED)?;
    let reason_len = r.varint_len().ok_or(TRUNCATED)?;
    r.take(reason_len).ok_or(TRUNCATED)?;
    Ok(())
}

/// The Initial CRYPTO stream being put back together from frames at any offsets, in any order,
/// with overlaps and duplicates, as Chrome's "chaos protection" sends them.
#[derive(Default)]
struct CryptoStream {
    data: Vec<u8>,
    filled: Vec<bool>,
    /// Bytes present without a gap from offset 0.
    contiguous: usize,
}

impl CryptoStream {
    /// Adds one CRYPTO frame's data. Overlapping bytes must agree: differing retransmissions
    /// would let the gateway and the server see different ClientHellos.
    fn insert(&mut self, offset: u64, chunk: &[u8]) -> Result<(), QuicError> {
        let end = offset
            .checked_add(chunk.len() as u64)
            .filter(|&end| end <= MAX_STREAM_OFFSET)
            .ok_or(QuicError::Malformed("CRYPTO frame ends beyond 2^62 - 1"))?;
        if end > MAX_CRYPTO_BYTES as u64 {
            return Err(QuicError::TooLarge);
        }
        let (start, end) = (offset as usize, end as usize);
        if self.data.len() < end {
            self.data.resize(end, 0);
            self.filled.resize(end, false);
        }
        let slots = self.data[start..end]
            .iter_mut()
            .zip(&mut self.filled[start..end]);
        for ((slot, filled), &byte) in slots.zip(chunk) {
            if *filled && *slot != byte {
                return Err(QuicError::Malformed(
                    "CRYPTO frames disagree on overlapping bytes",
                ));
            }
            *slot = byte;
            *filled = true;
        }
        while self.filled.get(self.contiguous) == Some(&true) {
            self.contiguous += 1;
        }
        self.check_handshake_header()
    }

    /// Checks the TLS handshake header as soon as it is in: a client's Initial stream starts
    /// with a ClientHello, and its length bounds what we will wait for.
    fn check_handshake_header(&self) -> Result<(), QuicError> {
        if self.contiguous >= 1 && self.data[0] != CLIENT_HELLO {
            return Err(QuicError::Malformed(
                "CRYPTO stream does not start with a ClientHello",
            ));
        }
        match self.needed() {
            Some(need) if need > MAX_CRYPTO_BYTES => Err(QuicError::TooLarge),
            _ => Ok(()),
        }
    }

    /// The full size of the ClientHello, once its 4-byte header is contiguous.
    fn needed(&self) -> Option<usize> {
        let header = self.data.get(..HANDSHAKE_HEADER_LEN)?;
        if self.contiguous < HANDSHAKE_HEADER_LEN {
            return None;
        }
        let body =
            usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
        Some(HANDSHAKE_HEADER_LEN + body)
    }

    /// The complete ClientHello, if every byte of it has arrived.
    fn client_hello(&self) -> Option<&[u8]> {
        let need = self.needed()?;
        (self.contiguous >= need).then(|| &self.data[..need])
    }

    fn incomplete(&self) -> QuicError {
        QuicError::Incomplete {
            have: self.contiguous,
            need: self.needed(),
        }
    }
}

/// The state of one connection's reassembly: who it is, its keys, what arrived.
struct Reassembly<'a> {
    /// The Initial that fixed the connection, at the start of the first datagram used.
    first: LongPacket<'a>,
    opener: Opener,
    stream: CryptoStream,
    largest_pn: Option<u64>,
}

impl<'a> Reassembly<'a> {
    fn new(first: LongPacket<'a>) -> Self {
        let opener = Opener::new(&client_initial_keys(first.version, first.dcid));
        Self {
            first,
            opener,
            stream: CryptoStream::default(),
            largest_pn: None,
        }
    }

    /// Opens the Initial that fixes the connection. Unlike later packets, its failure is
    /// reported: it tells the caller this start was not a real client Initial.
    fn open_first(&self) -> Result<Opened, QuicError> {
        self.opener.open(&self.first, None)
    }

    /// Takes in the opened first Initial, the packets coalesced after it, then `later`
    /// datagrams, until the ClientHello is complete.
    fn run(
        mut self,
        first: Opened,
        first_datagram: &[u8],
        later: &[&[u8]],
    ) -> Result<Vec<u8>, QuicError> {
        self.take_frames(first)?;
        let after_first = self.first.bytes.len();
        self.absorb_packets(first_datagram, after_first)?;
        for datagram in later {
            if let Some(hello) = self.stream.client_hello() {
                return Ok(hello.to_vec());
            }
            self.absorb_packets(datagram, 0)?;
        }
        match self.stream.client_hello() {
            Some(hello) => Ok(hello.to_vec()),
            None => Err(self.stream.incomplete()),
        }
    }

    /// Goes through the packets coalesced in a datagram from `offset` on (RFC 9000 §12.2).
    /// Initials of our connection are opened; other long packets are stepped over by their
    /// Length; a short header, a Retry, or bytes that do not parse end the datagram, since
    /// nothing after them can be located.
    fn absorb_packets(&mut self, datagram: &[u8], mut offset: usize) -> Result<(), QuicError> {
        while let Some(rest) = datagram.get(offset..).filter(|rest| !rest.is_empty()) {
            let Ok(packet) = parse_long_packet(rest) else {
                break;
            };
            if packet.kind == LongType::Retry {
                break;
            }
            if packet.kind == LongType::Initial && packet.same_connection(&self.first) {
                self.absorb_initial(&packet)?;
            }
            offset += packet.bytes.len();
        }
        Ok(())
    }

    /// Opens a later Initial of our connection and takes in its frames; one that fails to
    /// open is dropped, as a server would drop it.
    fn absorb_initial(&mut self, packet: &LongPacket<'_>) -> Result<(), QuicError> {
        match self.opener.open(packet, self.largest_pn) {
            Ok(opened) => self.take_frames(opened),
            Err(_) => Ok(()),
        }
    }

    /// Records the packet number, for decoding later ones, and feeds the CRYPTO frames.
    fn take_frames(&mut self, opened: Opened) -> Result<(), QuicError> {
        self.largest_pn = Some(self.largest_pn.map_or(opened.pn, |pn| pn.max(opened.pn)));
        read_frames(&opened.payload, &mut self.stream)
    }
}

/// Building protected client Initials, for tests of this module and of the whole QUIC path
/// (datapath → daemon): the inverse of what the module does.
#[cfg(any(test, feature = "test-util"))]
pub mod testing {
    use aes_gcm::aead::AeadInPlace;

    use super::*;

    /// Minimal-length QUIC varint encoding.
    pub fn put_varint(out: &mut Vec<u8>, v: u64) {
        match v {
            0..=0x3f => out.push(v as u8),
            0x40..=0x3fff => out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes()),
            0x4000..=0x3fff_ffff => out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes()),
            _ => out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
        }
    }

    /// Test-only encryptor: builds a client Initial (long header with a 2-byte Length, as the
    /// RFC example does) and protects it per RFC 9001 §5.3–5.4.
    pub struct Initial<'a> {
        pub version: QuicVersion,
        pub dcid: &'a [u8],
        pub scid: &'a [u8],
        pub token: &'a [u8],
        pub pn: u64,
        pub pn_len: usize,
    }

    impl Initial<'_> {
        pub fn protect(&self, payload: &[u8]) -> Vec<u8> {
            let keys = client_initial_keys(self.version, self.dcid);
            let initial_bits: u8 = match self.version {
                QuicVersion::V1 => 0b00,
                QuicVersion::V2 => 0b01,
            };
            let mut packet = vec![0xc0 | initial_bits << 4 | (self.pn_len as u8 - 1)];
            packet.extend_from_slice(&self.version.wire().to_be_bytes());
            packet.push(self.dcid.len() as u8);
            packet.extend_from_slice(self.dcid);
            packet.push(self.scid.len() as u8);
            packet.extend_from_slice(self.scid);
            put_varint(&mut packet, self.token.len() as u64);
            packet.extend_from_slice(self.token);
            let length = self.pn_len + payload.len() + TAG_LEN;
            packet.extend_from_slice(&(length as u16 | 0x4000).to_be_bytes());
            let pn_offset = packet.len();
            packet.extend_from_slice(&self.pn.to_be_bytes()[8 - self.pn_len..]);
            protect_packet(&keys, packet, pn_offset, self.pn_len, self.pn, payload)
        }
    }

    /// Encrypts `payload` after the unprotected `header`, then applies header protection.
    pub fn protect_packet(
        keys: &InitialKeys,
        mut header: Vec<u8>,
        pn_offset: usize,
        pn_len: usize,
        pn: u64,
        payload: &[u8],
    ) -> Vec<u8> {
        let opener = Opener::new(keys);
        let mut body = payload.to_vec();
        let tag = opener
            .aead
            .encrypt_in_place_detached(&opener.nonce(pn), &header, &mut body)
            .expect("encrypt");
        let header_len = header.len();
        header.extend_from_slice(&body);
        header.extend_from_slice(&tag);
        let mut packet = header;
        let sample: [u8; 16] = packet[pn_offset + 4..pn_offset + 20].try_into().unwrap();
        let mask = opener.header_mask(sample);
        packet[0] ^= mask[0] & 0x0f;
        for i in 0..pn_len {
            packet[pn_offset + i] ^= mask[1 + i];
        }
        assert_eq!(header_len, pn_offset + pn_len);
        packet
    }

    /// A client Initial datagram of 1200 bytes carrying `crypto` as one CRYPTO frame at
    /// `offset`, padded, protected with the keys of `dcid`.
    pub fn client_initial(
        version: QuicVersion,
        dcid: &[u8],
        pn: u64,
        offset: u64,
        crypto: &[u8],
    ) -> Vec<u8> {
        let mut payload = vec![0x06];
        put_varint(&mut payload, offset);
        put_varint(&mut payload, crypto.len() as u64);
        payload.extend_from_slice(crypto);
        let initial = Initial {
            version,
            dcid,
            scid: &[0x5c; 8],
            token: &[],
            pn,
            pn_len: 2,
        };
        // Header (1 + 4 + 1 + dcid + 1 + 8 + 1 + 2 + 2) + payload + tag = 1200.
        let overhead = 20 + dcid.len() + TAG_LEN;
        if payload.len() + overhead < 1200 {
            payload.resize(1200 - overhead, 0);
        }
        let datagram = initial.protect(&payload);
        debug_assert!(datagram.len() >= 1200, "clients pad Initials to 1200 bytes");
        datagram
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::*, *};

    // ---- RFC vectors, copied by script from the RFC texts (RFC 9001 and RFC 9369, Appendix
    // A.2): the CRYPTO frame of the client Initial and the whole 1200-byte protected packet.
    const RFC_V1_CRYPTO_FRAME: &str = concat!(
        "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868",
        "04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578",
        "616d706c652e636f6dff01000100000a00080006001d00170018001000070005",
        "04616c706e000500050100000000003300260024001d00209370b2c9caa47fba",
        "baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400",
        "0d0010000e0403050306030203080408050806002d00020101001c0002400100",
        "3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000",
        "75300901100f088394c8f03e51570806048000ffff",
    );
    const RFC_V1_PROTECTED_PACKET: &str = concat!(
        "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11",
        "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399",
        "1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c",
        "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212",
        "30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5",
        "457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208",
        "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec",
        "4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3",
        "485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db",
        "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c",
        "7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8",
        "9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556",
        "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74",
        "68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a",
        "c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00",
        "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632",
        "291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964",
        "25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd",
        "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff",
        "ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198",
        "e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd",
        "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73",
        "203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f",
        "cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e",
        "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade",
        "a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047",
        "90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2",
        "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4",
        "40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0",
        "6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e",
        "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0",
        "be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400",
        "54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab",
        "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9",
        "f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4",
        "056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064",
        "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241",
        "e221af44860018ab0856972e194cd934",
    );
    const RFC_V2_CRYPTO_FRAME: &str = concat!(
        "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868",
        "04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578",
        "616d706c652e636f6dff01000100000a00080006001d00170018001000070005",
        "04616c706e000500050100000000003300260024001d00209370b2c9caa47fba",
        "baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400",
        "0d0010000e0403050306030203080408050806002d00020101001c0002400100",
        "3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000",
        "75300901100f088394c8f03e51570806048000ffff",
    );
    const RFC_V2_PROTECTED_PACKET: &str = concat!(
        "d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485",
        "dd04de806071bf03dceebfa162e75d6c96058bdbfb127cdfcbf903388e99ad04",
        "9f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d",
        "250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a",
        "12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda5500",
        "cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68",
        "18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff33",
        "12ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3",
        "d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd",
        "6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520",
        "bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045",
        "636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f",
        "ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c12",
        "16ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e5",
        "4df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4",
        "fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b",
        "8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de7",
        "14d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9",
        "9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91",
        "abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd",
        "80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db",
        "848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18",
        "d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15",
        "c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc",
        "7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61",
        "f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e70710",
        "10d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b",
        "3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e",
        "06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce",
        "8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1",
        "34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1",
        "e86215c2d54e6670e07383a27bbffb5addf47d66aa85a0c6f9f32e59d85a44dd",
        "5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3",
        "8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89",
        "d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd7e19ba58cf4b53",
        "6f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19",
        "9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96b",
        "a18b2faa745b6fe189cf772a9f84cbfc",
    );

    // RFC 9001 A.3 (server Initial) and A.4 (Retry), also copied by script.
    const RFC_V1_SERVER_INITIAL: &str = concat!(
        "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a",
        "5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3",
        "dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84",
        "022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4",
        "2158407dd074ee",
    );
    const RFC_V1_RETRY: &str = concat!(
        "ff000000010008f067a5502a4262b5746f6b656e04a265ba2eff4d829058fb3f",
        "0f2496ba",
    );

    /// The RFC's A.1 key derivation outputs for DCID 0x8394c8f03e515708.
    const RFC_DCID: &str = "8394c8f03e515708";

    fn hex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
            .collect()
    }

    /// The ClientHello inside the RFC's CRYPTO frame: the frame is 06 00 40f1 then 241 bytes.
    fn rfc_client_hello() -> Vec<u8> {
        let frame = hex(RFC_V1_CRYPTO_FRAME);
        assert_eq!(&frame[..4], &[0x06, 0x00, 0x40, 0xf1]);
        frame[4..].to_vec()
    }

    /// A small deterministic generator (xorshift64*), so failing cases can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// Uniform-ish in lo..=hi.
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + (self.next() % (hi - lo + 1) as u64) as usize
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }

        fn shuffle<T>(&mut self, items: &mut [T]) {
            for i in (1..items.len()).rev() {
                let j = self.range(0, i);
                items.swap(i, j);
            }
        }
    }

    /// The RFC A.2 payload: the CRYPTO frame plus PADDING to 1162 bytes.
    fn rfc_payload() -> Vec<u8> {
        let mut payload = hex(RFC_V1_CRYPTO_FRAME);
        payload.resize(1162, 0);
        payload
    }

    fn rfc_initial(version: QuicVersion, dcid: &[u8]) -> Initial<'_> {
        Initial {
            version,
            dcid,
            scid: &[],
            token: &[],
            pn: 2,
            pn_len: 4,
        }
    }

    // ---- 1. RFC 9001 Appendix A (QUIC v1) ----

    #[test]
    fn rfc9001_a1_hkdf_labels() {
        assert_eq!(
            hkdf_label(b"client in", 32),
            hex("00200f746c73313320636c69656e7420696e00")
        );
        assert_eq!(
            hkdf_label(b"quic key", 16),
            hex("00100e746c7331332071756963206b657900")
        );
        assert_eq!(
            hkdf_label(b"quic iv", 12),
            hex("000c0d746c733133207175696320697600")
        );
        assert_eq!(
            hkdf_label(b"quic hp", 16),
            hex("00100d746c733133207175696320687000")
        );
    }

    #[test]
    fn rfc9001_a1_client_keys() {
        let keys = client_initial_keys(QuicVersion::V1, &hex(RFC_DCID));
        assert_eq!(keys.key.to_vec(), hex("1f369613dd76d5467730efcbe3b1a22d"));
        assert_eq!(keys.iv.to_vec(), hex("fa044b2f42a3fd3b46fb255c"));
        assert_eq!(keys.hp.to_vec(), hex("9f50449e04a0e810283a1e9933adedd2"));
    }

    #[test]
    fn rfc9001_a2_header_mask() {
        let keys = client_initial_keys(QuicVersion::V1, &hex(RFC_DCID));
        let sample: [u8; 16] = hex("d1b1c98dd7689fb8ec11d242b123dc9b").try_into().unwrap();
        assert_eq!(
            Opener::new(&keys).header_mask(sample).to_vec(),
            hex("437b9aec36")
        );
    }

    #[test]
    fn rfc9001_a2_header_parses() {
        let packet = hex(RFC_V1_PROTECTED_PACKET);
        let header = client_initial_header(&packet).expect("client Initial");
        assert_eq!(header.version, QuicVersion::V1);
        assert_eq!(header.dcid, hex(RFC_DCID));
        assert!(header.scid.is_empty() && header.token.is_empty());
        assert_eq!(header.pn_offset, 18);
        assert_eq!(header.packet_len, 1200);
    }

    #[test]
    fn rfc9001_a2_client_initial_opens_to_the_rfc_client_hello() {
        let packet = hex(RFC_V1_PROTECTED_PACKET);
        assert_eq!(packet.len(), 1200);
        let hello = client_hello_from_initials(&[&packet]).expect("ClientHello");
        assert_eq!(hello, rfc_client_hello());
        assert_eq!(hello.len(), 4 + 0xed);
    }

    #[test]
    fn rfc9001_a2_test_encryptor_reproduces_the_rfc_packet() {
        let dcid = hex(RFC_DCID);
        let packet = rfc_initial(QuicVersion::V1, &dcid).protect(&rfc_payload());
        assert_eq!(packet, hex(RFC_V1_PROTECTED_PACKET));
    }

    #[test]
    fn rfc9001_a2_opened_payload_is_the_rfc_payload() {
        let packet = hex(RFC_V1_PROTECTED_PACKET);
        let parsed = parse_long_packet(&packet).unwrap();
        let keys = client_initial_keys(QuicVersion::V1, &hex(RFC_DCID));
        let opened = Opener::new(&keys).open(&parsed, None).unwrap();
        assert_eq!(opened.pn, 2);
        assert_eq!(opened.payload, rfc_payload());
    }

    #[test]
    fn rfc9001_a3_server_initial_is_not_opened_with_client_keys() {
        let server = hex(RFC_V1_SERVER_INITIAL);
        let header = client_initial_header(&server).expect("same shape as a client Initial");
        assert!(header.dcid.is_empty());
        assert_eq!(header.scid, hex("f067a5502a4262b5"));
        assert_eq!(header.packet_len, 135);
        assert_eq!(
            client_hello_from_initials(&[&server]),
            Err(QuicError::DecryptFailed)
        );
        // A server Initial seen first does not hide the client's that follows.
        let client = hex(RFC_V1_PROTECTED_PACKET);
        assert_eq!(
            client_hello_from_initials(&[&server, &client]),
            Ok(rfc_client_hello())
        );
    }

    #[test]
    fn rfc9001_a4_retry_is_not_an_initial() {
        let retry = hex(RFC_V1_RETRY);
        assert_eq!(client_initial_header(&retry), None);
        assert_eq!(
            client_hello_from_initials(&[&retry]),
            Err(QuicError::NotInitial)
        );
    }

    #[test]
    fn forged_first_initial_does_not_hide_the_real_one() {
        let s = chaos_scenario(QuicVersion::V1, 21);
        let mut forged = s.initials[0].clone();
        let at = forged.len() / 2;
        forged[at] ^= 0x10;
        let mut datagrams = vec![forged.as_slice()];
        datagrams.extend(refs(&s.initials));
        assert_eq!(
            client_hello_from_initials(&datagrams).as_deref(),
            Ok(&s.hello[..])
        );
    }

    // ---- 2. RFC 9369 Appendix A (QUIC v2) ----

    #[test]
    fn rfc9369_a1_hkdf_labels() {
        assert_eq!(
            hkdf_label(b"quicv2 key", 16),
            hex("001010746c73313320717569637632206b657900")
        );
        assert_eq!(
            hkdf_label(b"quicv2 iv", 12),
            hex("000c0f746c7331332071756963763220697600")
        );
        assert_eq!(
            hkdf_label(b"quicv2 hp", 16),
            hex("00100f746c7331332071756963763220687000")
        );
    }

    #[test]
    fn rfc9369_a1_client_keys() {
        let keys = client_initial_keys(QuicVersion::V2, &hex(RFC_DCID));
        assert_eq!(keys.key.to_vec(), hex("8b1a0bc121284290a29e0971b5cd045d"));
        assert_eq!(keys.iv.to_vec(), hex("91f73e2351d8fa91660e909f"));
        assert_eq!(keys.hp.to_vec(), hex("45b95e15235d6f45a6b19cbcb0294ba9"));
    }

    #[test]
    fn rfc9369_a2_header_mask() {
        let keys = client_initial_keys(QuicVersion::V2, &hex(RFC_DCID));
        let sample: [u8; 16] = hex("ffe67b6abcdb4298b485dd04de806071").try_into().unwrap();
        assert_eq!(
            Opener::new(&keys).header_mask(sample).to_vec(),
            hex("94a0c95e80")
        );
    }

    #[test]
    fn rfc9369_a2_client_initial_opens_to_the_rfc_client_hello() {
        let packet = hex(RFC_V2_PROTECTED_PACKET);
        let header = client_initial_header(&packet).expect("v2 client Initial");
        assert_eq!(header.version, QuicVersion::V2);
        assert_eq!(header.dcid, hex(RFC_DCID));
        assert_eq!(hex(RFC_V2_CRYPTO_FRAME), hex(RFC_V1_CRYPTO_FRAME));
        let hello = client_hello_from_initials(&[&packet]).expect("ClientHello");
        assert_eq!(hello, rfc_client_hello());
    }

    #[test]
    fn rfc9369_a2_test_encryptor_reproduces_the_rfc_packet() {
        let dcid = hex(RFC_DCID);
        let packet = rfc_initial(QuicVersion::V2, &dcid).protect(&rfc_payload());
        assert_eq!(packet, hex(RFC_V2_PROTECTED_PACKET));
    }

    #[test]
    fn v1_packet_relabelled_as_v2_does_not_open() {
        let mut packet = hex(RFC_V1_PROTECTED_PACKET);
        packet[0] = (packet[0] & 0xcf) | 0x10; // the v2 Initial type bits
        packet[1..5].copy_from_slice(&QuicVersion::V2_WIRE.to_be_bytes());
        assert_eq!(
            client_hello_from_initials(&[&packet]),
            Err(QuicError::DecryptFailed)
        );
    }

    // ---- 3. Multi-packet reassembly with chaos-protection-like CRYPTO frames ----

    /// A ~1.8 KB ClientHello-shaped message: type 1, 24-bit length, pseudo-random body.
    fn synthetic_client_hello(rng: &mut Rng, body_len: usize) -> Vec<u8> {
        let mut hello = vec![CLIENT_HELLO];
        hello.extend_from_slice(&(body_len as u32).to_be_bytes()[1..]);
        hello.extend(rng.bytes(body_len));
        hello
    }

    /// Cuts `hello` into small chunks that overlap their predecessors, adds duplicates, and
    /// shuffles them, as Chrome's chaos protection does.
    fn chaos_chunks(rng: &mut Rng, total: usize) -> Vec<(usize, usize)> {
        let mut chunks = Vec::new();
        let mut pos = 0;
        while pos < total {
            let start = pos.saturating_sub(rng.range(0, 12));
            let end = (pos + rng.range(8, 150)).min(total);
            chunks.push((start, end));
            pos = end;
        }
        for _ in 0..4 {
            let dup = chunks[rng.range(0, chunks.len() - 1)];
            chunks.push(dup);
        }
        rng.shuffle(&mut chunks);
        chunks
    }

    /// Frames for one packet: CRYPTO frames with PING and PADDING runs between them.
    fn crypto_frame(out: &mut Vec<u8>, offset: usize, data: &[u8]) {
        out.push(0x06);
        put_varint(out, offset as u64);
        put_varint(out, data.len() as u64);
        out.extend_from_slice(data);
    }

    /// Spreads the chunks over Initial payloads of at most `budget` bytes each, interleaving
    /// PING and PADDING; the second packet also acknowledges a server Initial.
    fn chaos_payloads(rng: &mut Rng, hello: &[u8], budget: usize) -> Vec<Vec<u8>> {
        let mut payloads = vec![Vec::new()];
        for (start, end) in chaos_chunks(rng, hello.len()) {
            let mut frames = vec![0x01; rng.range(0, 2)]; // PINGs
            frames.extend(std::iter::repeat_n(0u8, rng.range(0, 6)));
            crypto_frame(&mut frames, start, &hello[start..end]);
            if payloads.last().unwrap().len() + frames.len() > budget {
                payloads.push(Vec::new());
                if payloads.len() == 2 {
                    // ACK of server Initial packet 0 (type, largest, delay, count, first range).
                    payloads[1].extend_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00]);
                }
            }
            payloads.last_mut().unwrap().extend_from_slice(&frames);
        }
        payloads
    }

    /// A coalesced 0-RTT packet (not for us): long header, 0-RTT type, random protected body.
    fn zero_rtt_packet(rng: &mut Rng, version: QuicVersion, dcid: &[u8], scid: &[u8]) -> Vec<u8> {
        let bits: u8 = match version {
            QuicVersion::V1 => 0b01,
            QuicVersion::V2 => 0b10,
        };
        let mut packet = vec![0xc1 | bits << 4];
        packet.extend_from_slice(&version.wire().to_be_bytes());
        packet.push(dcid.len() as u8);
        packet.extend_from_slice(dcid);
        packet.push(scid.len() as u8);
        packet.extend_from_slice(scid);
        let body = rng.bytes(60);
        put_varint(&mut packet, body.len() as u64);
        packet.extend_from_slice(&body);
        packet
    }

    /// Pads an Initial payload with PADDING so the datagram is at least 1200 bytes
    /// (RFC 9000 §14.1), leaving room for `other` coalesced bytes.
    fn pad_to_datagram(payload: &mut Vec<u8>, header_len: usize, other: usize) {
        let target = 1200usize.saturating_sub(header_len + TAG_LEN + other);
        if payload.len() < target {
            payload.resize(target, 0);
        }
    }

    struct Scenario {
        hello: Vec<u8>,
        /// Initial datagrams of the connection, in send order.
        initials: Vec<Vec<u8>>,
        /// The same plus noise: short header, other connection, coalesced 0-RTT.
        noisy: Vec<Vec<u8>>,
    }

    fn chaos_scenario(version: QuicVersion, seed: u64) -> Scenario {
        let mut rng = Rng(seed);
        let dcid = rng.bytes(8);
        let scid_len = rng.range(0, 20);
        let scid = rng.bytes(scid_len);
        let hello = synthetic_client_hello(&mut rng, 1796);
        let payloads = chaos_payloads(&mut rng, &hello, 1100);
        assert!(
            (2..=3).contains(&payloads.len()),
            "{} packets",
            payloads.len()
        );
        let header_len = 1 + 4 + 1 + dcid.len() + 1 + scid.len() + 1 + 2 + 2;
        let mut initials = Vec::new();
        let mut noisy = Vec::new();
        for (pn, mut payload) in payloads.into_iter().enumerate() {
            let zero_rtt = (pn == 1).then(|| zero_rtt_packet(&mut rng, version, &dcid, &scid));
            pad_to_datagram(
                &mut payload,
                header_len,
                zero_rtt.as_ref().map_or(0, Vec::len),
            );
            let initial = Initial {
                version,
                dcid: &dcid,
                scid: &scid,
                token: &[],
                pn: pn as u64,
                pn_len: 2,
            };
            let mut datagram = initial.protect(&payload);
            assert_eq!(datagram.len(), header_len + payload.len() + TAG_LEN);
            datagram.extend(zero_rtt.unwrap_or_default());
            assert!(datagram.len() >= 1200);
            initials.push(datagram.clone());
            noisy.push(datagram);
            if pn == 0 {
                // A 1-RTT short-header packet and another connection's Initial in between.
                let mut short = vec![0x41];
                short.extend(rng.bytes(40));
                noisy.push(short);
                let other_dcid = rng.bytes(8);
                let mut other_payload = Vec::new();
                crypto_frame(&mut other_payload, 0, &[CLIENT_HELLO, 0, 0, 1, 0xee]);
                other_payload.resize(1100, 0);
                let other = Initial {
                    version,
                    dcid: &other_dcid,
                    scid: &scid,
                    token: &[],
                    pn: 0,
                    pn_len: 1,
                };
                noisy.push(other.protect(&other_payload));
            }
        }
        Scenario {
            hello,
            initials,
            noisy,
        }
    }

    fn refs(datagrams: &[Vec<u8>]) -> Vec<&[u8]> {
        datagrams.iter().map(Vec::as_slice).collect()
    }

    fn check_chaos_reassembly(version: QuicVersion, seed: u64) {
        let s = chaos_scenario(version, seed);
        assert_eq!(s.hello.len(), 1800);
        let header = client_initial_header(&s.initials[0]).expect("Initial header");
        assert_eq!(header.version, version);
        assert_eq!(
            client_hello_from_initials(&refs(&s.initials)).as_deref(),
            Ok(&s.hello[..])
        );
        assert_eq!(
            client_hello_from_initials(&refs(&s.noisy)).as_deref(),
            Ok(&s.hello[..])
        );
        let mut reversed = refs(&s.initials);
        reversed.reverse();
        assert_eq!(
            client_hello_from_initials(&reversed).as_deref(),
            Ok(&s.hello[..])
        );
        match client_hello_from_initials(&[&s.initials[0]]) {
            Err(QuicError::Incomplete { have, need }) => {
                assert!(have < s.hello.len());
                assert!(need.is_none() || need == Some(1800));
            }
            other => panic!("first datagram alone gave {other:?}"),
        }
    }

    #[test]
    fn chaos_reassembly_v1() {
        for seed in 1..=20 {
            check_chaos_reassembly(QuicVersion::V1, seed);
        }
    }

    #[test]
    fn chaos_reassembly_v2() {
        for seed in 101..=120 {
            check_chaos_reassembly(QuicVersion::V2, seed);
        }
    }

    #[test]
    fn incomplete_reports_the_needed_size() {
        let mut rng = Rng(7);
        let hello = synthetic_client_hello(&mut rng, 1796);
        let mut payload = Vec::new();
        crypto_frame(&mut payload, 0, &hello[..900]);
        let dcid = rng.bytes(8);
        let packet = rfc_initial(QuicVersion::V1, &dcid).protect(&payload);
        assert_eq!(
            client_hello_from_initials(&[&packet]),
            Err(QuicError::Incomplete {
                have: 900,
                need: Some(1800)
            })
        );
    }

    #[test]
    fn only_the_first_sixteen_datagrams_are_considered() {
        let s = chaos_scenario(QuicVersion::V1, 3);
        let junk = vec![0x40u8; 30];
        // Exactly MAX_DATAGRAMS: the last Initial is the 16th datagram and still counts.
        let mut datagrams = vec![s.initials[0].as_slice()];
        let fill = MAX_DATAGRAMS - s.initials.len();
        datagrams.extend(std::iter::repeat_n(junk.as_slice(), fill));
        datagrams.extend(s.initials[1..].iter().map(Vec::as_slice));
        assert_eq!(datagrams.len(), MAX_DATAGRAMS);
        assert_eq!(
            client_hello_from_initials(&datagrams).as_deref(),
            Ok(&s.hello[..])
        );
        // One more junk datagram pushes the last Initial out of reach.
        datagrams.insert(1, &junk);
        assert!(matches!(
            client_hello_from_initials(&datagrams),
            Err(QuicError::Incomplete { .. })
        ));
        datagrams.truncate(MAX_DATAGRAMS);
        assert!(matches!(
            client_hello_from_initials(&datagrams),
            Err(QuicError::Incomplete { .. })
        ));
        datagrams.remove(1);
        datagrams.extend(s.initials.last().map(Vec::as_slice));
        assert_eq!(
            client_hello_from_initials(&datagrams).as_deref(),
            Ok(&s.hello[..])
        );
    }

    #[test]
    fn later_initial_that_fails_to_decrypt_is_dropped() {
        let s = chaos_scenario(QuicVersion::V1, 5);
        let mut corrupt = s.initials[1].clone();
        let last = corrupt.len() - 70; // inside the Initial's ciphertext, before the 0-RTT
        corrupt[last] ^= 0x01;
        let mut datagrams = refs(&s.initials);
        datagrams.insert(1, &corrupt);
        assert_eq!(
            client_hello_from_initials(&datagrams).as_deref(),
            Ok(&s.hello[..])
        );
    }

    #[test]
    fn packet_number_decoding_follows_rfc9000_a3() {
        assert_eq!(
            decode_packet_number(Some(0xa82f30ea), 0x9b32, 2),
            0xa82f9b32
        );
        assert_eq!(decode_packet_number(None, 2, 4), 2);
        assert_eq!(decode_packet_number(None, 0xff, 1), 0xff);
        assert_eq!(decode_packet_number(Some(0xff), 0x01, 1), 0x101);
    }

    #[test]
    fn errors_display_what_was_wrong() {
        assert_eq!(
            QuicError::UnsupportedVersion(0xff00_001d).to_string(),
            "unsupported QUIC version 0xff00001d"
        );
        assert_eq!(
            QuicError::Incomplete {
                have: 3,
                need: None
            }
            .to_string(),
            "ClientHello incomplete: have 3 bytes, need unknown"
        );
        assert_eq!(
            QuicError::Truncated("token").to_string(),
            "truncated QUIC packet: token"
        );
        let _: &dyn std::error::Error = &QuicError::TooLarge;
    }

    // ---- 4. Adversarial input ----

    /// Encrypts `payload` as an Initial for the RFC's DCID, to reach the frame parser.
    fn sealed(payload: &[u8]) -> Vec<u8> {
        let dcid = hex(RFC_DCID);
        rfc_initial(QuicVersion::V1, &dcid).protect(payload)
    }

    fn padded(mut frames: Vec<u8>) -> Vec<u8> {
        frames.resize(frames.len().max(1162), 0);
        frames
    }

    #[test]
    fn truncated_at_every_length_is_truncated() {
        let packet = hex(RFC_V1_PROTECTED_PACKET);
        for len in 0..packet.len() {
            let result = client_hello_from_initials(&[&packet[..len]]);
            assert!(
                matches!(result, Err(QuicError::Truncated(_))),
                "length {len}: {result:?}"
            );
            if len < 18 {
                assert_eq!(client_initial_header(&packet[..len]), None);
            }
        }
    }

    #[test]
    fn truncated_later_datagrams_never_panic() {
        let s = chaos_scenario(QuicVersion::V2, 9);
        for which in 1..s.initials.len() {
            for len in 0..s.initials[which].len() {
                let mut datagrams = refs(&s.initials);
                datagrams[which] = &s.initials[which][..len];
                // The hello may be complete without the cut datagram (it can hold duplicates
                // only); either way the answer is the hello or an error, never a wrong hello.
                if let Ok(hello) = client_hello_from_initials(&datagrams) {
                    assert_eq!(hello, s.hello);
                }
            }
        }
    }

    #[test]
    fn versions_and_packet_types_that_are_not_client_initials() {
        let packet = hex(RFC_V1_PROTECTED_PACKET);
        let with_version = |v: u32| {
            let mut p = packet.clone();
            p[1..5].copy_from_slice(&v.to_be_bytes());
            p
        };
        assert_eq!(
            client_hello_from_initials(&[&with_version(0xff00_001d)]),
            Err(QuicError::UnsupportedVersion(0xff00_001d))
        );
        assert_eq!(
            client_hello_from_initials(&[&with_version(0)]),
            Err(QuicError::NotInitial)
        );
        let mut handshake = packet.clone();
        handshake[0] = 0xe0; // v1 Handshake
        assert_eq!(client_initial_header(&handshake), None);
        assert_eq!(
            client_hello_from_initials(&[&handshake]),
            Err(QuicError::NotInitial)
        );
        let mut short = packet.clone();
        short[0] = 0x40;
        assert_eq!(
            client_hello_from_initials(&[&short]),
            Err(QuicError::NotInitial)
        );
        assert_eq!(
            client_hello_from_initials(&[]),
            Err(QuicError::Incomplete {
                have: 0,
                need: None
            })
        );
        let mut long_cid = packet.clone();
        long_cid[5] = 21;
        assert!(matches!(
            client_hello_from_initials(&[&long_cid]),
            Err(QuicError::Malformed(_))
        ));
    }

    #[test]
    fn corrupted_first_initial_fails_to_decrypt() {
        let mut packet = hex(RFC_V1_PROTECTED_PACKET);
        packet[600] ^= 0x80;
        assert_eq!(
            client_hello_from_initials(&[&packet]),
            Err(QuicError::DecryptFailed)
        );
        let mut dcid_changed = hex(RFC_V1_PROTECTED_PACKET);
        dcid_changed[6] ^= 1;
        assert_eq!(
            client_hello_from_initials(&[&dcid_changed]),
            Err(QuicError::DecryptFailed)
        );
    }

    #[test]
    fn crypto_frame_at_a_huge_offset_is_refused() {
        let mut frames = vec![0x06];
        put_varint(&mut frames, 1 << 40);
        put_varint(&mut frames, 4);
        frames.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            client_hello_from_initials(&[&sealed(&padded(frames))]),
            Err(QuicError::TooLarge)
        );

        let mut frames = vec![0x06];
        put_varint(&mut frames, MAX_STREAM_OFFSET);
        put_varint(&mut frames, 4);
        frames.extend_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(
            client_hello_from_initials(&[&sealed(&padded(frames))]),
            Err(QuicError::Malformed(_))
        ));

        let mut frames = vec![0x06];
        put_varint(&mut frames, (MAX_CRYPTO_BYTES - 2) as u64);
        put_varint(&mut frames, 4);
        frames.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            client_hello_from_initials(&[&sealed(&padded(frames))]),
            Err(QuicError::TooLarge)
        );
    }

    #[test]
    fn client_hello_claiming_too_much_is_refused() {
        let mut frames = Vec::new();
        crypto_frame(&mut frames, 0, &[CLIENT_HELLO, 0xff, 0xff, 0xff, 0x03]);
        assert_eq!(
            client_hello_from_initials(&[&sealed(&padded(frames))]),
            Err(QuicError::TooLarge)
        );
    }

    #[test]
    fn frame_errors_are_malformed() {
        let hello = rfc_client_hello();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty payload", Vec::new()),
            ("STREAM frame", padded(vec![0x08, 0x00, 0x00])),
            ("two-byte frame type", padded(vec![0x40, 0x06])),
            (
                "CRYPTO length past the end",
                vec![0x06, 0x00, 0x44, 0x00, 0x01],
            ),
            ("ACK cut short", vec![0x02, 0x00, 0x00]),
            (
                "ACK with a huge range count",
                vec![0x02, 0x00, 0x00, 0xbf, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00],
            ),
            (
                "CONNECTION_CLOSE cut short",
                vec![0x1c, 0x00, 0x00, 0x20, 0x41],
            ),
            (
                "not a ClientHello",
                padded({
                    let mut f = Vec::new();
                    crypto_frame(&mut f, 0, &[0x02, 0x00, 0x00, 0x01, 0x00]);
                    f
                }),
            ),
            (
                "overlaps disagree",
                padded({
                    let mut f = Vec::new();
                    crypto_frame(&mut f, 0, &hello[..100]);
                    let mut other = hello[50..150].to_vec();
                    other[10] ^= 0xff;
                    crypto_frame(&mut f, 50, &other);
                    f
                }),
            ),
        ];
        for (name, payload) in cases {
            let result = client_hello_from_initials(&[&sealed(&payload)]);
            assert!(
                matches!(result, Err(QuicError::Malformed(_))),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn ack_and_connection_close_are_stepped_over() {
        let hello = rfc_client_hello();
        let mut frames = vec![0x03, 0x05, 0x00, 0x01, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00];
        frames.extend_from_slice(&[0x1c, 0x00, 0x06, 0x02, b'h', b'i']);
        crypto_frame(&mut frames, 100, &hello[100..]);
        frames.push(0x01);
        crypto_frame(&mut frames, 0, &hello[..120]);
        assert_eq!(
            client_hello_from_initials(&[&sealed(&padded(frames))]),
            Ok(hello)
        );
    }

    #[test]
    fn garbage_is_rejected() {
        let mut rng = Rng(0x5eed);
        for _ in 0..2000 {
            let len = rng.range(0, 1500);
            let mut datagram = rng.bytes(len);
            if rng.range(0, 1) == 0 && len >= 5 {
                datagram[0] |= 0xc0;
                datagram[1..5].copy_from_slice(&QuicVersion::V1_WIRE.to_be_bytes());
            }
            assert!(client_hello_from_initials(&[&datagram]).is_err());
        }
    }

    /// Applies 1–8 random edits: bit flips, byte overwrites, truncation or insertion.
    fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..rng.range(1, 8) {
            match rng.range(0, 4) {
                0 if !out.is_empty() => {
                    let i = rng.range(0, out.len() - 1);
                    out[i] ^= 1 << rng.range(0, 7);
                }
                1 if !out.is_empty() => {
                    // Mostly hit the header, where the parsing is.
                    let i = rng.range(0, out.len().min(40) - 1);
                    out[i] = rng.next() as u8;
                }
                2 => out.truncate(rng.range(0, out.len())),
                _ => {
                    let i = rng.range(0, out.len());
                    out.insert(i, rng.next() as u8);
                }
            }
        }
        out
    }

    /// 10,000 per fuzz test unless QUIC_FUZZ_ITERATIONS asks for a longer run.
    fn fuzz_iterations() -> usize {
        std::env::var("QUIC_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000)
    }

    #[test]
    fn fuzz_mutated_datagrams_never_panic() {
        let mut rng = Rng(0xf022);
        let rfc = hex(RFC_V1_PROTECTED_PACKET);
        let s = chaos_scenario(QuicVersion::V1, 11);
        for i in 0..fuzz_iterations() {
            let base = if i % 2 == 0 { &rfc } else { &s.initials[0] };
            let mutated = mutate(&mut rng, base);
            let _ = client_initial_header(&mutated);
            let _ = client_hello_from_initials(&[&mutated]);
            if i % 10 == 0 {
                let _ = client_hello_from_initials(&[&s.initials[0], &mutated, &s.initials[1]]);
            }
        }
    }

    #[test]
    fn fuzz_mutated_frames_never_panic() {
        // Mutating plaintext and sealing it again gets past the AEAD to the frame parser.
        let mut rng = Rng(0xf4a3e5);
        let mut frames = Vec::new();
        let hello = rfc_client_hello();
        crypto_frame(&mut frames, 120, &hello[120..]);
        frames.extend_from_slice(&[0x01, 0x00, 0x02, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00]);
        crypto_frame(&mut frames, 0, &hello[..130]);
        frames.extend_from_slice(&[0x1c, 0x00, 0x06, 0x01, b'x']);
        let mut accepted = 0;
        for _ in 0..fuzz_iterations() {
            let mut payload = mutate(&mut rng, &frames);
            payload.resize(payload.len().max(40), 0);
            if client_hello_from_initials(&[&sealed(&payload)]).is_ok() {
                accepted += 1;
            }
        }
        assert!(
            accepted > 0,
            "some mutations (e.g. in PADDING) keep the hello intact"
        );
    }
}
