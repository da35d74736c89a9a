//! The HTTP request parser the datapath runs (the same steps it takes in a `bpf_loop`), on
//! arbitrary bytes. Beyond "no panic": a Host lies inside the bytes, is at most 255 bytes
//! and has no port, space or line end in it; and once a prefix of the stream gives a
//! Host, the whole stream gives the same one (the datapath stops at the first answer).
#![no_main]

use classifier_common::parse::http::{HttpStatus, Request, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut whole = Request::default();
    let status = parse_request(data, data.len(), &mut whole);
    check_host(data, &whole);
    for cut in [data.len() / 4, data.len() / 2, (data.len() * 3) / 4] {
        let mut partial = Request::default();
        if parse_request(&data[..cut], cut, &mut partial) == HttpStatus::Complete
            && partial.host_len > 0
        {
            assert_eq!(status, HttpStatus::Complete, "a prefix completed, the whole did not");
            assert_eq!(host(data, &partial), host(data, &whole), "prefix {cut}");
        }
    }
});

fn host<'a>(data: &'a [u8], request: &Request) -> &'a [u8] {
    let start = request.host_offset as usize;
    &data[start..start + request.host_len as usize]
}

fn check_host(data: &[u8], request: &Request) {
    if request.host_len == 0 {
        return;
    }
    let end = request.host_offset as usize + request.host_len as usize;
    assert!(end <= data.len());
    assert!(request.host_len <= 255);
    let name = host(data, request);
    assert!(
        !name.iter().any(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')),
        "whitespace in host {name:?}"
    );
}
