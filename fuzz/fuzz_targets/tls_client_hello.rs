//! The ClientHello parser the datapath runs, on arbitrary stream bytes. Beyond "no panic":
//! a name found lies inside the bytes and is at most 255 bytes; and the parser is
//! consistent on prefixes, as the datapath reparses a growing stream segment by segment:
//! before the whole record is there the answer is "need more", never another verdict.
#![no_main]

use classifier_common::{
    config::STREAM_CAP,
    parse::tls::{ClientHello, MAX_NAME_LEN, TlsStatus, parse_handshake, parse_record},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut hello = ClientHello::default();
    let status = parse_record(data, data.len(), STREAM_CAP, &mut hello);
    if status == TlsStatus::Complete {
        check_name(data, &hello);
        // The datapath reparses a growing stream: every prefix shorter than the record says
        // "need more", every longer one gives the same name.
        let total = 9 + u32::from_be_bytes([0, data[6], data[7], data[8]]) as usize;
        for cut in [total / 3, total / 2, total - 1, total, data.len()] {
            if cut < 5 || cut > data.len() {
                continue;
            }
            let mut partial = ClientHello::default();
            let prefix_status = parse_record(&data[..cut], cut, STREAM_CAP, &mut partial);
            if cut < total {
                assert!(
                    matches!(prefix_status, TlsStatus::NeedMore { .. }),
                    "prefix {cut} of a {total}-byte ClientHello: {prefix_status:?}"
                );
            } else {
                assert_eq!(prefix_status, TlsStatus::Complete, "prefix {cut} of {total}");
                assert_eq!(partial, hello, "prefix {cut} of {total}");
            }
        }
    }
    if let TlsStatus::NeedMore { total } = status {
        assert!(total == 0 || total as usize > data.len(), "need more than there is");
    }
    // The QUIC path parses a bare handshake message.
    let mut bare = ClientHello::default();
    if parse_handshake(data, data.len(), &mut bare) == TlsStatus::Complete {
        check_name(data, &bare);
    }
});

fn check_name(data: &[u8], hello: &ClientHello) {
    if hello.sni_len == 0 {
        return;
    }
    let end = hello.sni_offset as usize + hello.sni_len as usize;
    assert!(end <= data.len(), "name {}..{end} past {}", hello.sni_offset, data.len());
    assert!(hello.sni_len as usize <= MAX_NAME_LEN);
}
