//! The BitTorrent and QUIC recognisers the datapath runs on payloads, at any offset and
//! length: they never read outside the bytes (no panic) and agree with themselves.
#![no_main]

use classifier_common::parse::{bittorrent, quic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &[u8])| {
    let (offset, data) = input;
    let offset = (offset as usize).min(data.len());
    let len = data.len() - offset;
    let udp = bittorrent::udp_signature(data, offset, len);
    assert_eq!(udp, bittorrent::udp_signature(data, offset, len));
    let _ = bittorrent::tcp_signature(data, offset, len);
    if let Some(version) = quic::client_initial_version(data, offset, len) {
        assert!(len >= quic::MIN_CLIENT_INITIAL_LEN, "version {version:#x} on a short datagram");
    }
});
