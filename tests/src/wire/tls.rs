//! TLS handshake messages as they cross the wire: the ClientHello's server name (SNI),
//! whether it carries ECH, and where its bytes lie; the ServerHello's chosen version.

/// ECH (draft-ietf-tls-esni): the extension a client sends, real or GREASE.
pub const EXT_ECH: u16 = 0xfe0d;
const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_SUPPORTED_GROUPS: u16 = 0x000a;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_KEY_SHARE: u16 = 0x0033;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const HANDSHAKE_SERVER_HELLO: u8 = 2;
const RECORD_HANDSHAKE: u8 = 0x16;

/// What a ClientHello says, with positions relative to the start of the handshake message
/// (its 4-byte header included).
#[derive(Clone, Debug, Default)]
pub struct ClientHello {
    /// The host name of the server_name extension, byte for byte (lossy UTF-8).
    pub sni: Option<String>,
    /// Offset of the first host name byte in the handshake message.
    pub sni_offset: usize,
    pub sni_len: usize,
    /// Length of the whole handshake message, header included.
    pub len: usize,
    pub ech: bool,
    /// Extension types in the order sent.
    pub extensions: Vec<u16>,
    pub supported_versions: Vec<u16>,
    pub supported_groups: Vec<u16>,
    /// Groups of the key shares sent, with the size of each key.
    pub key_shares: Vec<(u16, usize)>,
    pub alpn: Vec<String>,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

/// Parses a ClientHello handshake message (starting at its type byte). Fails unless the
/// message is complete.
pub fn parse_client_hello(message: &[u8]) -> Option<ClientHello> {
    let mut r = Reader {
        data: message,
        pos: 0,
    };
    if r.u8()? != HANDSHAKE_CLIENT_HELLO {
        return None;
    }
    let body_len = r.u24()?;
    let len = 4 + body_len;
    if message.len() < len {
        return None;
    }
    r.data = &message[..len];
    r.take(2 + 32)?; // legacy_version, random
    let session_id_len = r.u8()?.into();
    r.take(session_id_len)?;
    let suites_len = r.u16()?.into();
    r.take(suites_len)?;
    let compression_len = r.u8()?.into();
    r.take(compression_len)?;
    let mut hello = ClientHello {
        len,
        ..Default::default()
    };
    if r.pos == len {
        return Some(hello); // no extensions at all
    }
    let extensions_len: usize = r.u16()?.into();
    let end = r.pos + extensions_len;
    while r.pos < end {
        let kind = r.u16()?;
        let ext_len: usize = r.u16()?.into();
        let ext_start = r.pos;
        let ext = r.take(ext_len)?;
        hello.extensions.push(kind);
        let mut e = Reader { data: ext, pos: 0 };
        match kind {
            EXT_SERVER_NAME if ext_len > 0 => {
                let _list_len = e.u16()?;
                let name_type = e.u8()?;
                let name_len: usize = e.u16()?.into();
                let name = e.take(name_len)?;
                if name_type == 0 {
                    hello.sni = Some(String::from_utf8_lossy(name).into_owned());
                    hello.sni_offset = ext_start + e.pos - name_len;
                    hello.sni_len = name_len;
                }
            }
            EXT_ECH => hello.ech = true,
            EXT_SUPPORTED_VERSIONS => {
                let n = e.u8()? / 2;
                for _ in 0..n {
                    hello.supported_versions.push(e.u16()?);
                }
            }
            EXT_SUPPORTED_GROUPS => {
                let n = e.u16()? / 2;
                for _ in 0..n {
                    hello.supported_groups.push(e.u16()?);
                }
            }
            EXT_KEY_SHARE => {
                let total: usize = e.u16()?.into();
                while e.pos < 2 + total {
                    let group = e.u16()?;
                    let key_len: usize = e.u16()?.into();
                    e.take(key_len)?;
                    hello.key_shares.push((group, key_len));
                }
            }
            EXT_ALPN => {
                let total: usize = e.u16()?.into();
                while e.pos < 2 + total {
                    let n = e.u8()?.into();
                    hello
                        .alpn
                        .push(String::from_utf8_lossy(e.take(n)?).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

/// The version a ServerHello message chose: supported_versions if present, else its
/// legacy_version.
pub fn server_hello_version(message: &[u8]) -> Option<u16> {
    let mut r = Reader {
        data: message,
        pos: 0,
    };
    if r.u8()? != HANDSHAKE_SERVER_HELLO {
        return None;
    }
    let body_len = r.u24()?;
    r.data = message.get(..4 + body_len)?;
    let legacy = r.u16()?;
    r.take(32)?;
    let session_id_len = r.u8()?.into();
    r.take(session_id_len)?;
    r.take(3)?; // cipher suite, compression
    if r.pos == r.data.len() {
        return Some(legacy);
    }
    let extensions_len: usize = r.u16()?.into();
    let end = r.pos + extensions_len;
    while r.pos < end {
        let kind = r.u16()?;
        let ext_len = r.u16()?.into();
        let ext = r.take(ext_len)?;
        if kind == EXT_SUPPORTED_VERSIONS && ext.len() == 2 {
            return Some(u16::from_be_bytes([ext[0], ext[1]]));
        }
    }
    Some(legacy)
}

/// A handshake message of `kind` read from the TLS records at the start of a TCP stream,
/// with the stream offset of each of its bytes (a message may span records).
pub fn handshake_from_records(stream: &[u8], kind: u8) -> Option<(Vec<u8>, Vec<usize>)> {
    let mut message = Vec::new();
    let mut offsets = Vec::new();
    let mut pos = 0;
    loop {
        let header = stream.get(pos..pos + 5)?;
        if header[0] != RECORD_HANDSHAKE || header[1] != 3 {
            return None;
        }
        let record_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let body_start = pos + 5;
        let body_end = (body_start + record_len).min(stream.len());
        message.extend_from_slice(&stream[body_start..body_end]);
        offsets.extend(body_start..body_end);
        if message.len() >= 4 {
            if message[0] != kind {
                return None;
            }
            let want = 4
                + (usize::from(message[1]) << 16
                    | usize::from(message[2]) << 8
                    | usize::from(message[3]));
            if message.len() >= want {
                message.truncate(want);
                offsets.truncate(want);
                return Some((message, offsets));
            }
        }
        if body_end < body_start + record_len {
            return None; // the stream ends inside this record
        }
        pos = body_end;
    }
}

/// A TLS version's name.
pub fn version_name(version: u16) -> String {
    match version {
        0x0301 => "TLS 1.0".into(),
        0x0302 => "TLS 1.1".into(),
        0x0303 => "TLS 1.2".into(),
        0x0304 => "TLS 1.3".into(),
        v if v & 0x0f0f == 0x0a0a => "GREASE".into(),
        v => format!("0x{v:04x}"),
    }
}

/// A named group's name, for the groups these clients send.
pub fn group_name(group: u16) -> String {
    match group {
        0x0017 => "secp256r1".into(),
        0x0018 => "secp384r1".into(),
        0x0019 => "secp521r1".into(),
        0x001d => "x25519".into(),
        0x001e => "x448".into(),
        0x0100 => "ffdhe2048".into(),
        0x0101 => "ffdhe3072".into(),
        0x11ec => "X25519MLKEM768".into(),
        0x6399 => "X25519Kyber768Draft00".into(),
        g if g & 0x0f0f == 0x0a0a => "GREASE".into(),
        g => format!("0x{g:04x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with the given extensions (type, data).
    fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([0u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one suite
        body.extend([1, 0]); // null compression
        let mut ext = Vec::new();
        for (kind, data) in extensions {
            ext.extend(kind.to_be_bytes());
            ext.extend((data.len() as u16).to_be_bytes());
            ext.extend(data);
        }
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut message = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        message.extend(body);
        message
    }

    fn sni(name: &str) -> Vec<u8> {
        let mut data = ((name.len() + 3) as u16).to_be_bytes().to_vec();
        data.push(0);
        data.extend((name.len() as u16).to_be_bytes());
        data.extend(name.as_bytes());
        data
    }

    #[test]
    fn finds_sni_ech_and_offsets_across_records() {
        let message = client_hello(&[
            (0x0a0a, vec![]),
            (0, sni("WWW.Example.COM.")),
            (EXT_ECH, vec![1, 2]),
        ]);
        let hello = parse_client_hello(&message).unwrap();
        assert_eq!(hello.sni.as_deref(), Some("WWW.Example.COM."));
        assert_eq!(
            &message[hello.sni_offset..][..hello.sni_len],
            b"WWW.Example.COM."
        );
        assert!(hello.ech);
        // The same message in two records.
        let (a, b) = message.split_at(20);
        let mut stream = Vec::new();
        for part in [a, b] {
            stream.extend([0x16, 3, 1, 0, part.len() as u8]);
            stream.extend(part);
        }
        let (joined, offsets) = handshake_from_records(&stream, 1).unwrap();
        assert_eq!(joined, message);
        assert_eq!(offsets[0], 5);
        assert_eq!(offsets[20], 30);
        // Truncated: no message.
        assert!(handshake_from_records(&stream[..stream.len() - 1], 1).is_none());
        assert!(parse_client_hello(&message[..message.len() - 1]).is_none());
    }
}
