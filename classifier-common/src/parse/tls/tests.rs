use std::vec;

use super::*;
use crate::testing::{Hello, chrome_like, split_records};

fn parse(bytes: &[u8]) -> (TlsStatus, ClientHello) {
    let mut hello = ClientHello::default();
    let status = parse_record(bytes, bytes.len(), 4096, &mut hello);
    (status, hello)
}

fn sni_of(bytes: &[u8]) -> &str {
    let (status, hello) = parse(bytes);
    assert_eq!(status, TlsStatus::Complete);
    let start = hello.sni_offset as usize;
    core::str::from_utf8(&bytes[start..start + hello.sni_len as usize]).unwrap()
}

#[test]
fn server_name_is_found_whatever_the_extension_order() {
    let plain = Hello::new().sni("www.youtube.com").bytes();
    assert_eq!(sni_of(&plain), "www.youtube.com");
    let late = Hello::new()
        .ext(0x000a, vec![0, 4, 0, 0x1d, 0, 0x17])
        .ext(0x0015, vec![0; 300]) // padding
        .sni("open.spotify.com")
        .bytes();
    assert_eq!(sni_of(&late), "open.spotify.com");
    let chrome = chrome_like("rr3---sn-aigl6nzr.googlevideo.com");
    assert!(
        chrome.len() > 1448,
        "the test hello must not fit one segment"
    );
    assert_eq!(sni_of(&chrome), "rr3---sn-aigl6nzr.googlevideo.com");
}

#[test]
fn ech_is_reported_and_the_outer_name_kept() {
    let (status, hello) = parse(&chrome_like("public.example.com"));
    assert_eq!(status, TlsStatus::Complete);
    assert!(hello.ech);
    assert!(!parse(&Hello::new().sni("a.example").bytes()).1.ech);
}

#[test]
fn no_server_name_is_complete_without_a_name() {
    let (status, hello) = parse(&Hello::new().ext(0x000d, vec![0, 2, 4, 3]).bytes());
    assert_eq!(status, TlsStatus::Complete);
    assert_eq!(hello.sni_len, 0);
}

#[test]
fn partial_records_ask_for_the_total() {
    let record = chrome_like("www.netflix.com");
    for cut in [1, 4] {
        assert_eq!(
            parse(&record[..cut]).0,
            TlsStatus::NeedMore { total: 0 },
            "cut {cut}"
        );
    }
    for cut in [9, 100, 1448, record.len() - 1] {
        assert_eq!(
            parse(&record[..cut]).0,
            TlsStatus::NeedMore {
                total: record.len() as u16
            },
            "cut {cut}"
        );
    }
}

#[test]
fn other_traffic_is_not_tls() {
    for bytes in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"\x13BitTorrent protocol",
        b"\x17\x03\x03\x00\x10application data",
        b"\x16\x03\x03\x00\x04\x02\x00\x00\x00", // ServerHello, not ClientHello
        b"\x16\x05\x01\x00\x10",                 // version 5.x
    ] {
        assert_eq!(parse(bytes).0, TlsStatus::NotTls, "{bytes:02x?}");
    }
}

#[test]
fn record_fragmentation_and_size_limits_are_unparsable() {
    let mut fragmented = Hello::new().sni("www.twitch.tv").bytes();
    let shorter = (fragmented.len() - 5 - 20) as u16; // the record ends before the message
    fragmented[3..5].copy_from_slice(&shorter.to_be_bytes());
    assert_eq!(
        parse(&fragmented).0,
        TlsStatus::Unparsable(Unparsable::RecordFragmented)
    );
    let big = chrome_like("www.twitch.tv");
    let mut hello = ClientHello::default();
    assert_eq!(
        parse_record(&big[..], big.len(), 1024, &mut hello),
        TlsStatus::Unparsable(Unparsable::TooLarge)
    );
}

#[test]
fn lengths_pointing_past_their_container_are_malformed_never_a_name() {
    let good = Hello::new().sni("www.bbc.co.uk").bytes();
    let sni_ext = good.windows(2).rposition(|w| w == [0, 0]).unwrap();
    let (_, sent) = parse(&good);
    // Corrupt each byte of the server_name extension and its list in turn: the result is
    // the name where it was sent (its own bytes may be what changed), no name, or
    // malformed — never another span of bytes passed off as the name.
    for index in sni_ext.saturating_sub(6)..good.len() {
        for value in [0x00, 0x01, 0x7f, 0xff] {
            let mut bytes = good.clone();
            bytes[index] = value;
            let (status, hello) = parse(&bytes);
            if status == TlsStatus::Complete && hello.sni_len > 0 {
                assert_eq!(
                    (hello.sni_offset, hello.sni_len),
                    (sent.sni_offset, sent.sni_len),
                    "byte {index} = {value:#x}"
                );
            }
        }
    }
    let mut zero_name = Hello::new().sni("x").bytes();
    let last = zero_name.len() - 1;
    zero_name[last - 2..last].copy_from_slice(&[0, 0]); // name length 0
    assert!(matches!(
        parse(&zero_name[..last]).0,
        TlsStatus::Unparsable(_) | TlsStatus::NeedMore { .. }
    ));
}

#[test]
fn longest_legal_name_is_accepted_and_longer_refused() {
    let longest = "a".repeat(MAX_NAME_LEN);
    assert_eq!(sni_of(&Hello::new().sni(&longest).bytes()), longest);
    let too_long = "a".repeat(MAX_NAME_LEN + 1);
    assert_eq!(
        parse(&Hello::new().sni(&too_long).bytes()).0,
        TlsStatus::Unparsable(Unparsable::Malformed)
    );
}

#[test]
fn bare_handshake_as_quic_carries_it() {
    let record = chrome_like("www.youtube.com");
    let handshake = &record[RECORD_HEADER_LEN..];
    let mut hello = ClientHello::default();
    assert_eq!(
        parse_handshake(handshake, handshake.len(), &mut hello),
        TlsStatus::Complete
    );
    let start = hello.sni_offset as usize;
    assert_eq!(
        &handshake[start..start + hello.sni_len as usize],
        b"www.youtube.com"
    );
    assert!(matches!(
        parse_handshake(&handshake[..500], 500, &mut ClientHello::default()),
        TlsStatus::NeedMore { .. }
    ));
}

#[test]
fn every_prefix_and_random_bytes_never_panic() {
    let record = chrome_like("www.example.com");
    for cut in 0..record.len() {
        let _ = parse(&record[..cut]);
    }
    let mut state = 0x1234_5678_9abc_def0u64;
    for _ in 0..20_000 {
        let mut bytes = record.clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let index = (state % bytes.len() as u64) as usize;
            bytes[index] = (state >> 32) as u8;
        }
        let (status, hello) = parse(&bytes);
        if status == TlsStatus::Complete && hello.sni_len > 0 {
            assert!(hello.sni_offset as usize + hello.sni_len as usize <= bytes.len());
        }
    }
}

#[test]
fn trailing_bytes_in_the_name_list_are_malformed() {
    let good = Hello::new().sni("www.bbc.co.uk").bytes();
    let name_at = good
        .windows(13)
        .position(|w| w == b"www.bbc.co.uk")
        .unwrap();
    // The name's length says 9 ("www.bbc.c"), leaving "o.uk" as junk in the list.
    let mut short = good.clone();
    short[name_at - 2..name_at].copy_from_slice(&9u16.to_be_bytes());
    assert_eq!(
        parse(&short).0,
        TlsStatus::Unparsable(Unparsable::Malformed)
    );
}

#[test]
fn more_extensions_than_a_client_sends_hide_no_name() {
    let mut crowded = Hello::new();
    for i in 0..MAX_EXTENSIONS as u16 {
        crowded = crowded.ext(0xff00 + i, vec![]);
    }
    let late = crowded.sni("www.twitch.tv").bytes();
    assert_eq!(
        parse(&late).0,
        TlsStatus::Unparsable(Unparsable::Malformed),
        "a name after the 40th extension is not read: unparsed, not nameless"
    );
    let mut early = Hello::new().sni("www.twitch.tv");
    for i in 0..MAX_EXTENSIONS as u16 {
        early = early.ext(0xff00 + i, vec![]);
    }
    assert_eq!(
        sni_of(&early.bytes()),
        "www.twitch.tv",
        "a name found stands"
    );
}

/// Joins the records of `stream` and parses the message as [`plan_records`] finds it.
fn parse_split(stream: &[u8]) -> (RecordsStatus, Option<std::string::String>) {
    let mut plan = RecordPlan::default();
    let status = plan_records(stream, stream.len(), 4096, &mut plan);
    let RecordsStatus::Ready { len } = status else {
        return (status, None);
    };
    let mut joined = std::vec![0u8; 4096];
    let n = join_records(stream, &plan, &mut joined);
    assert_eq!(n, len as usize);
    let mut hello = ClientHello::default();
    assert_eq!(
        parse_handshake(&joined[..n], n, &mut hello),
        TlsStatus::Complete
    );
    let name = &joined[hello.sni_offset as usize..][..hello.sni_len as usize];
    (
        status,
        Some(std::string::String::from_utf8(name.to_vec()).unwrap()),
    )
}

#[test]
fn a_handshake_spread_over_records_is_joined_wherever_it_is_cut() {
    let record = chrome_like("www.youtube.com");
    let name_at = record
        .windows(15)
        .position(|w| w == b"www.youtube.com")
        .unwrap()
        - 5;
    // Cut inside the handshake header, inside the name, and at many places at once.
    for cuts in [
        std::vec![1],
        std::vec![2],
        std::vec![name_at + 3],
        std::vec![1, 2, 3, 100, name_at, name_at + 1, name_at + 7],
    ] {
        let stream = split_records(&record, &cuts);
        assert_eq!(
            parse_record(&stream[..], stream.len(), 4096, &mut ClientHello::default()),
            TlsStatus::Unparsable(Unparsable::RecordFragmented),
            "cuts {cuts:?}"
        );
        let (status, name) = parse_split(&stream);
        assert!(
            matches!(status, RecordsStatus::Ready { .. }),
            "cuts {cuts:?}"
        );
        assert_eq!(name.as_deref(), Some("www.youtube.com"), "cuts {cuts:?}");
        // Every prefix that stops short asks for more, never names.
        for cut in [3, 6, stream.len() / 2, stream.len() - 1] {
            let mut plan = RecordPlan::default();
            assert_eq!(
                plan_records(&stream[..cut], cut, 4096, &mut plan),
                RecordsStatus::NeedMore,
                "cuts {cuts:?}, prefix {cut}"
            );
        }
    }
}

#[test]
fn records_beyond_the_bound_or_of_other_types_are_not_read() {
    let record = Hello::new().sni("www.youtube.com").bytes();
    let many: std::vec::Vec<usize> = (1..=MAX_RECORDS).collect();
    let stream = split_records(&record, &many);
    assert_eq!(parse_split(&stream).0, RecordsStatus::TooLarge);
    // A change_cipher_spec record in the middle of the message.
    let mut interleaved = split_records(&record, &[50]);
    interleaved[5 + 50] = 0x14;
    assert_eq!(parse_split(&interleaved).0, RecordsStatus::Malformed);
    // An empty handshake record.
    let mut empty = split_records(&record, &[0]);
    assert_eq!(&empty[3..5], &[0, 0]);
    assert_eq!(parse_split(&empty).0, RecordsStatus::Malformed);
    empty[0] = 0x17;
    assert_eq!(parse_split(&empty).0, RecordsStatus::Malformed);
}

#[test]
fn a_hello_larger_than_the_buffer_is_read_as_far_as_held() {
    let early = Hello::new()
        .sni("www.youtube.com")
        .ext(0x0015, std::vec![0; 4200])
        .bytes();
    let mut hello = ClientHello::default();
    assert_eq!(
        parse_record(&early[..], 4000, 4096, &mut hello),
        TlsStatus::NeedMore { total: 4096 }
    );
    assert_eq!(
        parse_record(&early[..4096], 4096, 4096, &mut hello),
        TlsStatus::Complete
    );
    assert_eq!(hello.sni_len, 15);
    let late = Hello::new()
        .ext(0x0015, std::vec![0; 4200])
        .sni("www.youtube.com")
        .bytes();
    assert_eq!(
        parse_record(&late[..4096], 4096, 4096, &mut ClientHello::default()),
        TlsStatus::Unparsable(Unparsable::TooLarge)
    );
}
