use std::string::String;

use super::*;

fn parse(bytes: &[u8]) -> (HttpStatus, Request) {
    let mut request = Request::default();
    let status = parse_request(bytes, bytes.len(), &mut request);
    (status, request)
}

fn host_of(bytes: &[u8]) -> Option<&str> {
    let (status, request) = parse(bytes);
    assert_eq!(
        status,
        HttpStatus::Complete,
        "{}",
        String::from_utf8_lossy(bytes)
    );
    (request.host_len > 0).then(|| {
        let start = request.host_offset as usize;
        core::str::from_utf8(&bytes[start..start + request.host_len as usize]).unwrap()
    })
}

#[test]
fn host_header_in_any_case_and_position() {
    assert_eq!(
        host_of(b"GET / HTTP/1.1\r\nHost: www.bbc.co.uk\r\nAccept: */*\r\n\r\n"),
        Some("www.bbc.co.uk")
    );
    assert_eq!(
        host_of(b"POST /x HTTP/1.1\r\nUser-Agent: curl\r\nhOsT:example.org:8080\r\n\r\n"),
        Some("example.org")
    );
    assert_eq!(
        host_of(b"HEAD / HTTP/1.1\nHost: \t spaced.example \t\n\n"),
        Some("spaced.example")
    );
    assert_eq!(
        host_of(b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n"),
        Some("2001:db8::1")
    );
}

#[test]
fn request_without_host_is_complete_at_the_blank_line() {
    assert_eq!(host_of(b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n"), None);
}

#[test]
fn split_requests_need_more_until_the_host_line_is_whole() {
    let request = b"GET /watch?v=abc HTTP/1.1\r\nHost: www.youtube.com\r\n\r\n";
    for cut in 1..request.len() {
        let (status, found) = parse(&request[..cut]);
        // Whole once its CR LF is: a CR alone could be a bare CR, which is no line end.
        let host_line_end = b"GET /watch?v=abc HTTP/1.1\r\nHost: www.youtube.com\r".len();
        if cut <= host_line_end {
            assert_eq!(status, HttpStatus::NeedMore, "cut at {cut}");
        } else {
            assert_eq!(status, HttpStatus::Complete, "cut at {cut}");
            assert_eq!(found.host_len, 15);
        }
    }
}

#[test]
fn tracker_announces_are_recognised() {
    let (status, request) = parse(
        b"GET /announce?info_hash=%12%34&peer_id=-AR1360-&port=6881 HTTP/1.1\r\nHost: tracker.example\r\n\r\n",
    );
    assert_eq!(status, HttpStatus::Complete);
    assert!(request.tracker_announce);
    let (_, later) = parse(b"GET /a.php?peer_id=x&info_hash=%ab HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(later.tracker_announce);
    let (_, header_only) =
        parse(b"GET / HTTP/1.1\r\nReferer: http://x/?info_hash=1\r\nHost: t\r\n\r\n");
    assert!(
        !header_only.tracker_announce,
        "only the request line counts"
    );
}

#[test]
fn non_http_is_refused_early() {
    for bytes in [
        &b"\x16\x03\x01\x02\x00"[..],
        b"SSH-2.0-OpenSSH",
        b"\x13BitTorrent",
        b"get / HTTP/1.1",
    ] {
        assert_eq!(parse(bytes).0, HttpStatus::NotHttp, "{bytes:02x?}");
    }
    assert_eq!(parse(b"GE").0, HttpStatus::NeedMore);
    assert_eq!(parse(b"OPTI").0, HttpStatus::NeedMore);
}

#[test]
fn oversized_values_and_headers_never_yield_a_bogus_name() {
    let mut long_host = b"GET / HTTP/1.1\r\nHost: ".to_vec();
    long_host.extend(core::iter::repeat_n(b'a', 300));
    long_host.extend_from_slice(b"\r\n\r\n");
    assert_eq!(host_of(&long_host), None);
    let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
    while huge.len() < MAX_SCAN + 100 {
        huge.extend_from_slice(b"X-Filler: 0123456789abcdef\r\n");
    }
    huge.extend_from_slice(b"Host: late.example\r\n\r\n");
    assert_eq!(
        parse(&huge).0,
        HttpStatus::Unreadable,
        "a Host beyond the scan window is not read, and not taken for no Host"
    );
}

#[test]
fn the_request_target_names_the_host_before_the_host_header() {
    // RFC 9112 §3.2.2: a server takes an absolute-form target's host and ignores Host.
    assert_eq!(
        host_of(b"GET http://www.youtube.com/watch?v=1 HTTP/1.1\r\nHost: www.bbc.co.uk\r\n\r\n"),
        Some("www.youtube.com")
    );
    assert_eq!(
        host_of(b"GET HTTPS://WWW.Netflix.com:443/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        Some("WWW.Netflix.com")
    );
    assert_eq!(
        host_of(b"GET http://user@open.spotify.com HTTP/1.1\r\nHost: a.example\r\n\r\n"),
        Some("open.spotify.com")
    );
    assert_eq!(
        host_of(b"CONNECT www.twitch.tv:443 HTTP/1.1\r\nHost: www.twitch.tv:443\r\n\r\n"),
        Some("www.twitch.tv")
    );
    // An origin-form target leaves the name to Host.
    assert_eq!(
        host_of(b"GET /http://www.youtube.com/ HTTP/1.1\r\nHost: www.bbc.co.uk\r\n\r\n"),
        Some("www.bbc.co.uk")
    );
    // Cut anywhere, the target's host is found once the line is there.
    let request = b"GET http://www.youtube.com/ HTTP/1.1\r\nHost: www.bbc.co.uk\r\n\r\n";
    for cut in 1..request.len() {
        let (status, found) = parse(&request[..cut]);
        if status == HttpStatus::Complete {
            let start = found.host_offset as usize;
            assert_eq!(
                &request[start..start + found.host_len as usize],
                b"www.youtube.com"
            );
        }
    }
}

/// Found by fuzzing (fuzz/fuzz_targets/http_request.rs): a blank inside the Host value made
/// a name with a space in it. Blanks around the value are fine; inside, there is no name.
#[test]
fn a_host_with_a_blank_inside_is_no_name() {
    assert_eq!(
        host_of(b"GET / HTTP/1.1\r\nHost: www.bbc /byuk\r\n\r\n"),
        None
    );
    assert_eq!(
        host_of(b"GET / HTTP/1.1\r\nHost: www.bbc\t.co.uk\r\n\r\n"),
        None
    );
    assert_eq!(
        host_of(b"GET / HTTP/1.1\r\nHost:   www.bbc.co.uk  \r\n\r\n"),
        Some("www.bbc.co.uk")
    );
}

/// A control or non-ASCII byte in the Host value: no HTTP server reads that as a host, so
/// neither does the classifier.
#[test]
fn a_host_with_a_control_or_non_ascii_byte_is_no_name() {
    for bad in [
        &b"GET / HTTP/1.1\r\nHost:\0open.spotify.com\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: open.spo\x7ftify.com\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: open.spotify.com\xff\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: open\x01spotify.com\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: o\ren.spotify.com\r\n\r\n",
    ] {
        assert_eq!(host_of(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}
