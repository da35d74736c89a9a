//! The ways tools made to get past SNI filters cut, reorder, wrap and fake a client's first
//! bytes (zapret, GoodbyeDPI, byedpi, SpoofDPI), through the real programs
//! (BPF_PROG_TEST_RUN) with the default council policy in force at work: each case, over
//! IPv4 and IPv6, must come out with the name the server reads, its category and verdict,
//! and what the client tried noted on the record.

use classifier_common::{
    flow::{FlowKey, ip_proto, ipv4_mapped},
    stats::Stat,
    testing::{Hello, chrome_like, split_records},
};
use classifier_tests::{
    frames::{CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6, Way},
    harness::{Harness, MONDAY_AT_WORK},
    privileged,
    run::XDP_PASS,
    segments::{self, Conn, Segment},
};

/// Blocked at all times by the council policy (gambling).
const BLOCKED: &str = "www.bet365.com";
/// Listed nowhere: allowed. What a decoy names.
const ALLOWED: &str = "www.bbc.co.uk";
/// Streaming video: shaped at work.
const SHAPED: &str = "www.youtube.com";

/// What a flow must come out as.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    name: Option<String>,
    category: String,
    verdict: String,
    second_name: Option<String>,
    unreadable: bool,
}

fn named(name: &str, category: &str, verdict: &str) -> Outcome {
    Outcome {
        name: Some(name.into()),
        category: category.into(),
        verdict: verdict.into(),
        second_name: None,
        unreadable: false,
    }
}

fn blocked() -> Outcome {
    named(BLOCKED, "gambling", "block")
}

fn unreadable(protocol_name: Option<&str>) -> Outcome {
    Outcome {
        name: protocol_name.map(str::to_owned),
        category: "unreadable".into(),
        verdict: "block".into(),
        second_name: None,
        unreadable: true,
    }
}

/// One row: the frames after the handshake, what the flow must come out as, and the
/// evasion notes its record must carry.
struct Case {
    name: &'static str,
    segments: Vec<Frame>,
    expected: Outcome,
    evasion: &'static [&'static str],
}

/// A frame of a case: a segment, or raw frames (IP fragments).
enum Frame {
    Segment(Segment),
    Raw(Vec<u8>),
}

impl From<Segment> for Frame {
    fn from(segment: Segment) -> Self {
        Frame::Segment(segment)
    }
}

fn hello(name: &str) -> Vec<u8> {
    Hello::new()
        .sni(name)
        .ext(0x000d, vec![0, 4, 4, 3, 8, 4])
        .bytes()
}

fn name_offset(stream: &[u8], name: &str) -> usize {
    stream
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .expect("the name is in the stream")
}

fn key(v6: bool, client_port: u16, server_port: u16) -> FlowKey {
    let (client, server) = if v6 {
        (CLIENT_V6, SERVER_V6)
    } else {
        (ipv4_mapped(CLIENT_V4), ipv4_mapped(SERVER_V4))
    };
    FlowKey {
        client_addr: client,
        server_addr: server,
        client_port,
        server_port,
        protocol: ip_proto::TCP,
        _pad: [0; 3],
    }
}

/// Segments of `stream` cut at `cuts`, sent in `order` (indices of the pieces).
fn reordered(conn: &Conn, stream: &[u8], cuts: &[usize], order: &[usize]) -> Vec<Frame> {
    let pieces = conn.pieces(stream, cuts);
    order.iter().map(|&i| pieces[i].clone().into()).collect()
}

fn in_order(conn: &Conn, stream: &[u8], cuts: &[usize]) -> Vec<Frame> {
    let all: Vec<usize> = (0..=cuts.len()).collect();
    reordered(conn, stream, cuts, &all)
}

/// A decoy: the whole hello for `ALLOWED` at offset 0, changed by `spoil` so that the
/// server drops it.
fn decoy(conn: &Conn, spoil: impl Fn(&mut Segment)) -> Frame {
    let mut segment = conn.data(0, &hello(ALLOWED));
    spoil(&mut segment);
    segment.into()
}

/// A decoy's name, the evasion notes it must leave, and how it is spoiled.
type Decoy = (&'static str, &'static [&'static str], fn(&mut Segment));

/// The cases for one address family; each flow from its own client port.
fn cases(v6: bool) -> Vec<(Conn, Case)> {
    let mut port = if v6 { 46000 } else { 45000 };
    let mut conn = || {
        port += 1;
        Conn::new(v6, port, 443)
    };
    let blocked_hello = hello(BLOCKED);
    let name_at = name_offset(&blocked_hello, BLOCKED);
    let chrome = chrome_like(BLOCKED);
    let mut rows = Vec::new();
    let mut row = |conn: Conn, case: Case| rows.push((conn, case));

    // Cut anywhere.
    let c = conn();
    row(
        c,
        Case {
            name: "a first segment of one byte",
            segments: in_order(&c, &blocked_hello, &[1]),
            expected: blocked(),
            evasion: &[],
        },
    );
    let c = conn();
    row(
        c,
        Case {
            name: "a first segment of two bytes",
            segments: in_order(&c, &blocked_hello, &[2]),
            expected: blocked(),
            evasion: &[],
        },
    );
    let c = conn();
    row(
        c,
        Case {
            name: "cut inside the name",
            segments: in_order(&c, &blocked_hello, &[name_at + 4]),
            expected: blocked(),
            evasion: &[],
        },
    );
    let c = conn();
    row(
        c,
        Case {
            name: "Chrome's ML-KEM hello at MSS 536: four segments",
            segments: c.mss(&chrome, 536).into_iter().map(Frame::from).collect(),
            expected: blocked(),
            evasion: &[],
        },
    );
    let c = conn();
    row(
        c,
        Case {
            name: "pieces of ten bytes",
            segments: c
                .mss(&blocked_hello, 10)
                .into_iter()
                .map(Frame::from)
                .collect(),
            expected: blocked(),
            evasion: &[],
        },
    );
    let c = conn();
    row(
        c,
        Case {
            name: "more pieces than the bound: unreadable, not allowed",
            segments: c
                .mss(&blocked_hello, 3)
                .into_iter()
                .map(Frame::from)
                .collect(),
            expected: unreadable(None),
            evasion: &[],
        },
    );

    // Out of order.
    let c = conn();
    row(
        c,
        Case {
            name: "the second segment first",
            segments: reordered(&c, &blocked_hello, &[name_at + 2], &[1, 0]),
            expected: blocked(),
            evasion: &["reordered"],
        },
    );
    let c = conn();
    row(
        c,
        Case {
            name: "four segments in reverse order",
            segments: reordered(&c, &chrome, &[536, 1072, 1608], &[3, 2, 1, 0]),
            expected: blocked(),
            evasion: &["reordered"],
        },
    );
    let c = conn();
    let pieces = c.pieces(&blocked_hello, &[1]);
    let mut first_dies = pieces[0].clone();
    first_dies.ttl = 1;
    row(
        c,
        Case {
            name: "byedpi --disorder: the first byte with TTL 1, the rest, the first byte again",
            segments: vec![
                first_dies.into(),
                pieces[1].clone().into(),
                pieces[0].clone().into(),
            ],
            expected: blocked(),
            evasion: &["bad-ttl", "reordered"],
        },
    );

    // TLS record fragmentation, alone and with segments.
    for (name, cuts) in [
        ("the handshake in two records, cut after one byte", vec![1]),
        (
            "the handshake in two records, cut inside the name",
            vec![name_at - 5 + 3],
        ),
        (
            "the handshake in six records",
            vec![2, 30, 60, name_at - 5, name_at - 3],
        ),
    ] {
        let c = conn();
        let stream = split_records(&blocked_hello, &cuts);
        row(
            c,
            Case {
                name,
                segments: in_order(&c, &stream, &[]),
                expected: blocked(),
                evasion: &["tls-records"],
            },
        );
    }
    let c = conn();
    let records = split_records(&chrome, &[700, 1500]);
    row(
        c,
        Case {
            name: "three records over four segments, the last first",
            segments: reordered(&c, &records, &[536, 1072, 1608], &[3, 0, 1, 2]),
            expected: blocked(),
            evasion: &["reordered", "tls-records"],
        },
    );

    // Decoys the server drops, then the real hello: the decoy names nothing.
    let decoys: [Decoy; 7] = [
        ("a decoy with a wrong checksum", &["bad-checksum"], |s| {
            s.bad_checksum = true
        }),
        ("a decoy with TTL 1", &["bad-ttl"], |s| s.ttl = 1),
        (
            "a decoy with a TTL set to die on the way",
            &["bad-ttl"],
            |s| s.ttl = 5,
        ),
        (
            "a decoy with its sequence number out of the window",
            &["bad-sequence"],
            |s| s.seq = s.seq.wrapping_sub(10_000),
        ),
        (
            "a decoy acknowledging what the server never sent",
            &["bad-sequence"],
            |s| s.ack = s.ack.wrapping_sub(66_000),
        ),
        ("a decoy without ACK", &["bad-sequence"], |s| s.flags = "P"),
        ("a decoy with an MD5 signature", &["bad-options"], |s| {
            s.md5 = true
        }),
    ];
    for (name, notes, spoil) in decoys {
        let c = conn();
        let mut segments = vec![decoy(&c, spoil)];
        segments.extend(in_order(&c, &blocked_hello, &[]));
        row(
            c,
            Case {
                name,
                segments,
                expected: blocked(),
                evasion: notes,
            },
        );
    }
    let c = conn();
    let mut segments = vec![decoy(&c, |s| {
        s.timestamps = Some((segments::SYN_TSVAL.wrapping_sub(600_000), 1))
    })];
    segments.extend(in_order(&c, &blocked_hello, &[]));
    row(
        c,
        Case {
            name: "a decoy with an older timestamp than the SYN's (PAWS)",
            segments,
            expected: blocked(),
            evasion: &["bad-options"],
        },
    );
    let c = conn();
    let spoiled = if v6 {
        decoy(&c, |s| s.misplaced_hop_by_hop = true)
    } else {
        decoy(&c, |s| s.bad_ip_checksum = true)
    };
    let mut segments = vec![spoiled];
    segments.extend(in_order(&c, &blocked_hello, &[]));
    row(
        c,
        Case {
            name: if v6 {
                "a decoy with a misplaced hop-by-hop header"
            } else {
                "a decoy with a wrong IPv4 header checksum"
            },
            segments,
            expected: blocked(),
            evasion: if v6 {
                &["bad-options"]
            } else {
                &["bad-checksum"]
            },
        },
    );

    // Two versions the classifier cannot tell apart: both names count.
    let c = conn();
    let mut segments = vec![decoy(&c, |_| {})];
    segments.extend(in_order(&c, &blocked_hello, &[]));
    row(
        c,
        Case {
            name: "a decoy no check catches, then the real hello: the stricter verdict",
            segments,
            expected: Outcome {
                second_name: Some(BLOCKED.into()),
                verdict: "block".into(),
                ..named(ALLOWED, "uncategorized", "block")
            },
            evasion: &["conflict"],
        },
    );
    let c = conn();
    let mut segments = in_order(&c, &blocked_hello, &[]);
    segments.push(decoy(&c, |_| {}));
    row(
        c,
        Case {
            name: "the real hello, then a decoy over it",
            segments,
            expected: Outcome {
                second_name: Some(ALLOWED.into()),
                ..blocked()
            },
            evasion: &["conflict"],
        },
    );
    let c = conn();
    let real = c.pieces(&blocked_hello, &[name_at]);
    let mut fake_tail = real[1].clone();
    fake_tail.payload.iter_mut().for_each(|b| *b = b'x');
    row(
        c,
        Case {
            name: "different bytes over a piece still being reassembled",
            segments: vec![
                real[1].clone().into(),
                fake_tail.into(),
                real[0].clone().into(),
            ],
            expected: Outcome {
                name: None,
                ..unreadable(None)
            },
            evasion: &["conflict", "reordered"],
        },
    );

    // What cannot be read is a class.
    let c = conn();
    let whole = c.data(0, &blocked_hello);
    row(
        c,
        Case {
            name: "the ClientHello in IP fragments",
            segments: segments::fragments(&whole, 64, 0x4242)
                .into_iter()
                .map(Frame::Raw)
                .collect(),
            expected: unreadable(None),
            evasion: &["ip-fragments"],
        },
    );
    let c = conn();
    let mut urgent = c.pieces(&blocked_hello, &[40]);
    urgent[1].urgent = true;
    row(
        c,
        Case {
            name: "urgent data inside the hello (byedpi --oob)",
            segments: urgent.into_iter().map(Frame::from).collect(),
            expected: unreadable(None),
            evasion: &["bad-options"],
        },
    );

    // HTTP, and a shaped name.
    let request = b"GET /watch HTTP/1.1\r\nUser-Agent: x\r\nHost: www.bet365.com\r\n\r\n";
    let host_at = name_offset(request, BLOCKED);
    let c = conn();
    row(
        c,
        Case {
            name: "an HTTP request cut after its first byte and inside the Host line",
            segments: in_order(&c, request, &[1, host_at + 3]),
            expected: blocked(),
            evasion: &[],
        },
    );
    let absolute = b"GET http://www.bet365.com/ HTTP/1.1\r\nHost: www.bbc.co.uk\r\n\r\n";
    let c = conn();
    row(
        c,
        Case {
            name: "an absolute-form request target: its host, not Host's",
            segments: in_order(&c, absolute, &[]),
            expected: blocked(),
            evasion: &[],
        },
    );
    let c = conn();
    let shaped = hello(SHAPED);
    row(
        c,
        Case {
            name: "a streaming name cut after one byte is shaped at work",
            segments: in_order(&c, &shaped, &[1]),
            expected: named(SHAPED, "streaming-video", "shape"),
            evasion: &[],
        },
    );
    rows
}

fn run_family(v6: bool) {
    let mut harness = Harness::council("working", MONDAY_AT_WORK);
    let mut failures = Vec::new();
    for (conn, case) in cases(v6) {
        let mut frames = conn.handshake();
        for frame in &case.segments {
            match frame {
                Frame::Segment(segment) => frames.push((segment.way, segment.frame())),
                Frame::Raw(bytes) => frames.push((Way::Up, bytes.clone())),
            }
        }
        let (actions, _) = harness.send(&frames);
        let record = harness.record(&key(v6, conn.client_port, conn.server_port));
        // The packet's own fate, not only the flow's record: the client's last packet of a
        // blocked flow is dropped (or answered with a reset), of any other flow passed.
        let last_upload = frames
            .iter()
            .zip(&actions)
            .filter(|((way, _), _)| *way == Way::Up)
            .map(|(_, action)| *action)
            .next_back();
        let passed = last_upload == Some(XDP_PASS);
        if passed == (case.expected.verdict == "block") {
            failures.push(format!(
                "{}, {}: the client's last packet got XDP action {last_upload:?} under verdict {}",
                if v6 { "IPv6" } else { "IPv4" },
                case.name,
                case.expected.verdict
            ));
        }
        let got = Outcome {
            name: record.name.clone(),
            category: record.category.clone(),
            verdict: record.verdict.clone(),
            second_name: record.second_name.clone(),
            unreadable: record.unreadable,
        };
        let family = if v6 { "IPv6" } else { "IPv4" };
        // A daemon started after this one died finds the same names in the kernel.
        let kept = harness.record_from_kernel(&key(v6, conn.client_port, conn.server_port));
        if (&kept.name, &kept.second_name) != (&record.name, &record.second_name) {
            failures.push(format!(
                "{family}, {}: names kept in the kernel {:?}, {:?}; the daemon heard {:?}, {:?}",
                case.name, kept.name, kept.second_name, record.name, record.second_name
            ));
        }
        if got != case.expected {
            failures.push(format!(
                "{family}, {}: got {got:?}, want {:?}",
                case.name, case.expected
            ));
        }
        for note in case.evasion {
            if !record.evasion.iter().any(|e| e == note) {
                failures.push(format!(
                    "{family}, {}: evasion {:?} lacks `{note}`",
                    case.name, record.evasion
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(harness.stat(Stat::DecoyChecksum) > 0);
    assert!(harness.stat(Stat::StreamConflicts) > 0);
}

#[test]
fn every_evasion_of_the_name_over_ipv4() {
    if !privileged("every_evasion_of_the_name_over_ipv4") {
        return;
    }
    run_family(false);
}

#[test]
fn every_evasion_of_the_name_over_ipv6() {
    if !privileged("every_evasion_of_the_name_over_ipv6") {
        return;
    }
    run_family(true);
}
