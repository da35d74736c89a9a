//! Test helpers shared by this crate's unit tests and the datapath tests: builders for the
//! payloads the classifier parses. Only with the `test-util` feature (or in tests).

use std::{vec, vec::Vec};

use crate::parse::tls::RECORD_HEADER_LEN;

const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: u16 = 0x0000;
const SNI_HOST_NAME: u8 = 0;
const RANDOM_LEN: usize = 32;

/// A ClientHello record built from parts, for tests.
pub struct Hello {
    pub extensions: Vec<(u16, Vec<u8>)>,
    pub session_id: Vec<u8>,
    pub record_version: [u8; 2],
}

impl Hello {
    pub fn new() -> Self {
        Self {
            extensions: Vec::new(),
            session_id: vec![0x5a; 32],
            record_version: [3, 1],
        }
    }

    pub fn ext(mut self, ext_type: u16, data: Vec<u8>) -> Self {
        self.extensions.push((ext_type, data));
        self
    }

    pub fn sni(self, name: &str) -> Self {
        self.sni_bytes(name.as_bytes())
    }

    /// A server_name extension carrying `name` as it is (any bytes, as a hostile client
    /// sends them).
    pub fn sni_bytes(self, name: &[u8]) -> Self {
        let mut data = Vec::new();
        data.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        data.push(SNI_HOST_NAME);
        data.extend_from_slice(&(name.len() as u16).to_be_bytes());
        data.extend_from_slice(name);
        self.ext(EXT_SERVER_NAME, data)
    }

    /// The record: header, handshake header, body.
    pub fn bytes(&self) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0x11; RANDOM_LEN]);
        body.push(self.session_id.len() as u8);
        body.extend_from_slice(&self.session_id);
        let suites: [u16; 4] = [0x0a0a, 0x1301, 0x1302, 0xc02b]; // GREASE first, like Chrome
        body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
        for suite in suites {
            body.extend_from_slice(&suite.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]); // compression: null
        let mut extensions = Vec::new();
        for (ext_type, data) in &self.extensions {
            extensions.extend_from_slice(&ext_type.to_be_bytes());
            extensions.extend_from_slice(&(data.len() as u16).to_be_bytes());
            extensions.extend_from_slice(data);
        }
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(&extensions);
        let mut handshake = vec![HANDSHAKE_CLIENT_HELLO];
        handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        let mut record = vec![
            CONTENT_TYPE_HANDSHAKE,
            self.record_version[0],
            self.record_version[1],
        ];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }
}

/// A Chrome-like ClientHello: GREASE, many extensions in a shuffled order, an ML-KEM-sized
/// key share that pushes the server name past the first 1448-byte segment.
pub fn chrome_like(name: &str) -> Vec<u8> {
    Hello::new()
        .ext(0x2a2a, vec![]) // GREASE
        .ext(0x0033, vec![0x44; 1250]) // key_share with X25519MLKEM768
        .ext(0x0010, b"\x00\x0c\x02h2\x08http/1.1".to_vec()) // ALPN
        .ext(0x0023, vec![0x77; 200]) // session ticket
        .ext(0xfe0d, vec![0x00; 250]) // (GREASE) ECH
        .sni(name)
        .ext(0x002b, vec![0x04, 0x03, 0x04, 0x03, 0x03]) // supported_versions
        .ext(0x1a1a, vec![0]) // GREASE
        .bytes()
}

impl Default for Hello {
    fn default() -> Self {
        Self::new()
    }
}

/// The ClientHello record `record` re-sent as several records, its handshake message cut at
/// `cuts` (offsets into the message, ascending), as byedpi's `--tlsrec` and zapret's
/// `tlsrec` send it: each part in a record of its own with the same header fields.
pub fn split_records(record: &[u8], cuts: &[usize]) -> Vec<u8> {
    let message = &record[RECORD_HEADER_LEN..];
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(core::iter::once(&message.len())) {
        let part = &message[start..end];
        out.extend_from_slice(&record[..3]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
        start = end;
    }
    out
}

/// The handshake message inside a record (what QUIC carries in CRYPTO frames).
pub fn handshake_of(record: &[u8]) -> &[u8] {
    &record[RECORD_HEADER_LEN..]
}
