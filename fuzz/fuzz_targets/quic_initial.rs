//! The daemon's QUIC Initial reader (`classifier-user::quic`: `QuicNames::add`, which opens
//! the Initials with `initial::client_hello_from_initials` and reads the ClientHello's
//! server name) on one or two datagrams of one flow. Beyond "no panic, no unbounded
//! allocation": a verdict comes by the last datagram allowed, a name is at most 255
//! characters, nothing is kept once there is a verdict, and a second reading of the same
//! datagrams gives the same verdicts.
//!
//! Random bytes almost never pass the AEAD tag, so the input is read in one of two ways
//! (its first byte's low bit says which):
//!
//! - raw (`0`): bytes 1-2 (big-endian) split the rest into two datagrams, taken as they are
//!   (one datagram when the split is at or past its end): the header parser, the key
//!   derivation, header protection and the tag check on what a forger could send;
//! - sealed (`1`): byte 1 picks the packet-number length (bits 0-1), the version (bit 2,
//!   v2 when set) and the Destination Connection ID's length (bits 3-7, modulo 21); bytes
//!   2-3 split the rest into the plaintext payloads of one or two client Initials, which are
//!   then protected as a client would (`initial::testing`): the frame walk, the CRYPTO
//!   stream's reassembly and the ClientHello parser on what a real connection could carry.
#![no_main]

use classifier_common::{flow::FlowKey, parse::tls::MAX_NAME_LEN};
use libfuzzer_sys::fuzz_target;

// The decryptor's own files, compiled here: depending on `classifier-user` would build the
// whole daemon and its BPF object (with Debian's toolchain) into the fuzzer.
#[allow(dead_code)]
#[path = "../../classifier-user/src/quic/initial.rs"]
mod initial;
#[allow(dead_code)]
#[path = "../../classifier-user/src/quic/names.rs"]
mod names;

use initial::{QuicVersion, testing};
use names::{QuicNames, QuicVerdict};

/// The connection ID the sealed Initials are protected for (the RFC 9001 example's, then
/// more bytes up to the 20 QUIC allows).
const DCID: [u8; 20] = [
    0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f, 0x70, 0x81,
    0x92, 0xa3, 0xb4, 0xc5,
];

/// The test encryptor writes the Length field as a 2-byte varint: payloads stay below it.
const MAX_SEALED_PAYLOAD: usize = 0x3fff - 4 - 16;

fuzz_target!(|data: &[u8]| {
    let Some((&how, rest)) = data.split_first() else {
        return;
    };
    let datagrams = if how & 1 == 0 {
        raw_datagrams(rest)
    } else {
        sealed_datagrams(rest)
    };
    let verdicts = read(&datagrams);
    assert_eq!(verdicts, read(&datagrams), "a second reading differs");
});

/// The verdict after each datagram, with the invariants every reading keeps.
fn read(datagrams: &[Vec<u8>]) -> Vec<Option<QuicVerdict>> {
    let key = FlowKey::default();
    let mut names = QuicNames::default();
    let mut verdicts = Vec::new();
    for datagram in datagrams {
        let _ = initial::client_initial_header(datagram);
        let verdict = names.add(key, datagram.clone());
        match &verdict {
            Some(QuicVerdict::Named { name, .. }) => {
                let chars = name.chars().count();
                assert!(chars <= MAX_NAME_LEN, "a {chars}-character server name");
                assert_eq!(names.pending_flows(), 0, "a named flow is still kept");
            }
            Some(QuicVerdict::Unreadable(why)) => {
                assert!(!why.is_empty(), "an unreadable verdict without a reason");
                assert_eq!(names.pending_flows(), 0, "a judged flow is still kept");
            }
            None => assert_eq!(names.pending_flows(), 1, "a waiting flow is not kept"),
        }
        verdicts.push(verdict);
    }
    verdicts
}

/// `bytes` after a 2-byte split point, as one or two datagrams.
fn raw_datagrams(bytes: &[u8]) -> Vec<Vec<u8>> {
    let Some((split, rest)) = split_point(bytes) else {
        return vec![bytes.to_vec()];
    };
    two_parts(rest, split)
}

/// Client Initials protected around the plaintext payloads the input gives.
fn sealed_datagrams(bytes: &[u8]) -> Vec<Vec<u8>> {
    let Some((&shape, rest)) = bytes.split_first() else {
        return Vec::new();
    };
    let Some((split, plaintext)) = split_point(rest) else {
        return Vec::new();
    };
    let pn_len = usize::from(shape & 0b11) + 1;
    let version = if shape & 0b100 == 0 {
        QuicVersion::V1
    } else {
        QuicVersion::V2
    };
    let dcid = &DCID[..usize::from(shape >> 3) % (DCID.len() + 1)];
    two_parts(plaintext, split)
        .into_iter()
        .enumerate()
        .map(|(pn, mut payload)| {
            payload.truncate(MAX_SEALED_PAYLOAD);
            // Header protection samples 16 bytes from 4 past the packet number: PADDING
            // frames (zeros) make sure they are there.
            payload.resize(payload.len().max(4), 0);
            testing::Initial {
                version,
                dcid,
                scid: &[0x5c; 8],
                token: &[],
                pn: pn as u64,
                pn_len,
            }
            .protect(&payload)
        })
        .collect()
}

/// The big-endian u16 in front of `bytes`, and what follows it.
fn split_point(bytes: &[u8]) -> Option<(usize, &[u8])> {
    match bytes {
        [high, low, rest @ ..] => Some((usize::from(u16::from_be_bytes([*high, *low])), rest)),
        _ => None,
    }
}

/// `bytes` cut at `split`: two parts, or one when the cut leaves nothing after it.
fn two_parts(bytes: &[u8], split: usize) -> Vec<Vec<u8>> {
    if split >= bytes.len() {
        return vec![bytes.to_vec()];
    }
    let (first, second) = bytes.split_at(split);
    vec![first.to_vec(), second.to_vec()]
}
