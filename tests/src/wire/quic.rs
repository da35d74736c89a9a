//! QUIC client Initial packets: their keys derive from the client's first Destination
//! Connection ID and a published salt (RFC 9001 §5.2, RFC 9369 for v2), so anyone on the
//! path (a classifier too) can decrypt them and read the ClientHello in their CRYPTO frames.

use aes::{
    Aes128,
    cipher::{BlockEncrypt as _, KeyInit as _, generic_array::GenericArray},
};
use aes_gcm::{Aes128Gcm, aead::Aead as _, aead::Payload};
use hkdf::Hkdf;
use sha2::Sha256;

pub const VERSION_1: u32 = 0x0000_0001;
pub const VERSION_2: u32 = 0x6b33_43cf;
const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];

/// Client Initial packet protection keys.
#[derive(Debug, PartialEq, Eq)]
pub struct Keys {
    pub key: [u8; 16],
    pub iv: [u8; 12],
    pub hp: [u8; 16],
}

fn expand_label(hkdf: &Hkdf<Sha256>, label: &str, out: &mut [u8]) {
    let full = format!("tls13 {label}");
    let mut info = (out.len() as u16).to_be_bytes().to_vec();
    info.push(full.len() as u8);
    info.extend(full.as_bytes());
    info.push(0);
    hkdf.expand(&info, out).expect("short HKDF output");
}

/// The client's Initial keys for `version` and the original Destination Connection ID.
pub fn client_initial_keys(version: u32, dcid: &[u8]) -> Option<Keys> {
    let (salt, prefix) = match version {
        VERSION_1 => (&SALT_V1, "quic"),
        VERSION_2 => (&SALT_V2, "quicv2"),
        _ => return None,
    };
    let (initial, _) = Hkdf::<Sha256>::extract(Some(salt), dcid);
    let initial = Hkdf::<Sha256>::from_prk(&initial).ok()?;
    let mut secret = [0u8; 32];
    expand_label(&initial, "client in", &mut secret);
    let client = Hkdf::<Sha256>::from_prk(&secret).ok()?;
    let mut keys = Keys {
        key: [0; 16],
        iv: [0; 12],
        hp: [0; 16],
    };
    expand_label(&client, &format!("{prefix} key"), &mut keys.key);
    expand_label(&client, &format!("{prefix} iv"), &mut keys.iv);
    expand_label(&client, &format!("{prefix} hp"), &mut keys.hp);
    Some(keys)
}

/// A QUIC variable-length integer at `data[*pos..]`.
fn varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *data.get(*pos)?;
    let len = 1usize << (first >> 6);
    let bytes = data.get(*pos..*pos + len)?;
    let mut value = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        value = value << 8 | u64::from(*b);
    }
    *pos += len;
    Some(value)
}

/// One long-header packet's fields, as far as they are readable without keys.
#[derive(Clone, Debug)]
pub struct LongHeader {
    pub version: u32,
    pub is_initial: bool,
    pub dcid: Vec<u8>,
    pub scid: Vec<u8>,
    pub token_len: usize,
    /// Offset of the packet number field in the packet.
    pub pn_offset: usize,
    /// Length of the whole packet (it may be followed by coalesced packets).
    pub packet_len: usize,
}

/// Reads the long header at the start of `packet`.
pub fn long_header(packet: &[u8]) -> Option<LongHeader> {
    let first = *packet.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    let version = u32::from_be_bytes(packet.get(1..5)?.try_into().ok()?);
    let packet_type = (first >> 4) & 0x03;
    let is_initial = match version {
        VERSION_2 => packet_type == 0b01,
        0 => false, // version negotiation
        _ => packet_type == 0b00,
    };
    let mut pos = 5;
    let dcid_len = usize::from(*packet.get(pos)?);
    let dcid = packet.get(pos + 1..pos + 1 + dcid_len)?.to_vec();
    pos += 1 + dcid_len;
    let scid_len = usize::from(*packet.get(pos)?);
    let scid = packet.get(pos + 1..pos + 1 + scid_len)?.to_vec();
    pos += 1 + scid_len;
    let mut token_len = 0;
    if is_initial {
        token_len = usize::try_from(varint(packet, &mut pos)?).ok()?;
        pos += token_len;
    }
    let length = usize::try_from(varint(packet, &mut pos)?).ok()?;
    let packet_len = pos + length;
    if packet_len > packet.len() {
        return None;
    }
    Some(LongHeader {
        version,
        is_initial,
        dcid,
        scid,
        token_len,
        pn_offset: pos,
        packet_len,
    })
}

/// Removes header protection and decrypts one Initial packet; returns its packet number and
/// plaintext frames.
pub fn decrypt_initial(packet: &[u8], header: &LongHeader, keys: &Keys) -> Option<(u64, Vec<u8>)> {
    let sample = packet.get(header.pn_offset + 4..header.pn_offset + 20)?;
    let mut mask = GenericArray::clone_from_slice(sample);
    Aes128::new(GenericArray::from_slice(&keys.hp)).encrypt_block(&mut mask);
    let mut head = packet[..header.pn_offset].to_vec();
    head[0] ^= mask[0] & 0x0f;
    let pn_len = usize::from(head[0] & 0x03) + 1;
    let mut pn = 0u64;
    for i in 0..pn_len {
        let b = packet[header.pn_offset + i] ^ mask[1 + i];
        head.push(b);
        pn = pn << 8 | u64::from(b);
    }
    let mut nonce = keys.iv;
    for (i, b) in pn.to_be_bytes().iter().enumerate() {
        nonce[4 + i] ^= b;
    }
    let ciphertext = &packet[header.pn_offset + pn_len..header.packet_len];
    let plaintext = Aes128Gcm::new(GenericArray::from_slice(&keys.key))
        .decrypt(
            GenericArray::from_slice(&nonce),
            Payload {
                msg: ciphertext,
                aad: &head,
            },
        )
        .ok()?;
    Some((pn, plaintext))
}

/// The CRYPTO frames (offset, data) of a decrypted packet's frames, and whether every frame
/// was understood.
pub fn crypto_frames(frames: &[u8]) -> (Vec<(u64, Vec<u8>)>, bool) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < frames.len() {
        let Some(kind) = varint(frames, &mut pos) else {
            return (out, false);
        };
        let ok = match kind {
            0x00 | 0x01 => Some(()), // PADDING, PING
            0x02 | 0x03 => (|| {
                varint(frames, &mut pos)?; // largest acknowledged
                varint(frames, &mut pos)?; // delay
                let ranges = varint(frames, &mut pos)?;
                varint(frames, &mut pos)?; // first range
                for _ in 0..ranges * 2 {
                    varint(frames, &mut pos)?;
                }
                if kind == 0x03 {
                    for _ in 0..3 {
                        varint(frames, &mut pos)?;
                    }
                }
                Some(())
            })(),
            0x06 => (|| {
                let offset = varint(frames, &mut pos)?;
                let len = usize::try_from(varint(frames, &mut pos)?).ok()?;
                let data = frames.get(pos..pos + len)?.to_vec();
                pos += len;
                out.push((offset, data));
                Some(())
            })(),
            0x1c | 0x1d => (|| {
                varint(frames, &mut pos)?;
                if kind == 0x1c {
                    varint(frames, &mut pos)?;
                }
                let len = usize::try_from(varint(frames, &mut pos)?).ok()?;
                pos += len;
                Some(())
            })(),
            _ => None,
        };
        if ok.is_none() {
            return (out, false);
        }
    }
    (out, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 9001 Appendix A.1 and RFC 9369 Appendix A.1.
    #[test]
    fn initial_keys_match_the_rfc_examples() {
        let dcid = hex("8394c8f03e515708");
        let v1 = client_initial_keys(VERSION_1, &dcid).unwrap();
        assert_eq!(v1.key.to_vec(), hex("1f369613dd76d5467730efcbe3b1a22d"));
        assert_eq!(v1.iv.to_vec(), hex("fa044b2f42a3fd3b46fb255c"));
        assert_eq!(v1.hp.to_vec(), hex("9f50449e04a0e810283a1e9933adedd2"));
        let v2 = client_initial_keys(VERSION_2, &dcid).unwrap();
        assert_eq!(v2.key.to_vec(), hex("8b1a0bc121284290a29e0971b5cd045d"));
        assert_eq!(v2.iv.to_vec(), hex("91f73e2351d8fa91660e909f"));
        assert_eq!(v2.hp.to_vec(), hex("45b95e15235d6f45a6b19cbcb0294ba9"));
        assert!(client_initial_keys(0x1a2a3a4a, &dcid).is_none());
    }

    /// Frames a client Initial carries: PING, PADDING, ACK, CRYPTO; anything else stops.
    #[test]
    fn reads_crypto_frames_after_padding_ping_and_ack() {
        let mut frames = vec![0x01, 0x00, 0x02, 0x05, 0x00, 0x00, 0x00];
        frames.extend([0x06, 0x40, 0x10, 0x03]); // CRYPTO offset 16 len 3
        frames.extend(b"abc");
        frames.extend([0u8; 5]);
        let (crypto, ok) = crypto_frames(&frames);
        assert!(ok);
        assert_eq!(crypto, vec![(16, b"abc".to_vec())]);
        let (_, ok) = crypto_frames(&[0x30]);
        assert!(!ok);
    }
}
