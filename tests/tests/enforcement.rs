//! Verdicts applied by the real programs (BPF_PROG_TEST_RUN): blocked flows are dropped at
//! XDP (uploads) and TC (downloads) from the packet that classifies them; groups, exceptions
//! and a generation swap change verdicts of flows already running.

use classifier_common::config::fail_fast_replies::{self, REPLY_MARK, REPLY_METADATA};
use classifier_common::programs;
use classifier_common::{
    flow::{FlowKey, ip_proto, ipv4_mapped},
    policy::{ActionEntry, verdict},
    stats::Stat,
    testing::Hello,
};
use classifier_tests::{
    frames::{self, CLIENT_V4, SERVER_V4, Way},
    privileged,
    run::{
        LOOPBACK_IFINDEX, TC_ACT_PIPE, XDP_PASS, XDP_TX, run_frame, run_tc_marked,
        run_upload_outcome,
    },
};
use classifier_user::{
    in_force::InForce,
    loader::Datapath,
    metrics,
    policy::{Policy, PolicySources},
    tables::DecisionTables,
};

const XDP_DROP: u32 = 1;
const TC_ACT_SHOT: u32 = 2;

fn datapath(policy: &Policy) -> Datapath {
    let mut datapath = Datapath::load().expect("the kernel loads the datapath");
    datapath
        .install_tables(&policy.classes, &policy.datapath)
        .unwrap();
    datapath
}

fn block(group: u16, category: u16) -> ((u16, u16), ActionEntry) {
    (
        (group, category),
        ActionEntry {
            verdict: verdict::BLOCK,
            ..ActionEntry::default()
        },
    )
}

fn key(client_port: u16) -> FlowKey {
    FlowKey {
        client_addr: ipv4_mapped(CLIENT_V4),
        server_addr: ipv4_mapped(SERVER_V4),
        client_port,
        server_port: 443,
        protocol: ip_proto::TCP,
        _pad: [0; 3],
    }
}

/// Handshake, then the ClientHello for `name`; returns the ClientHello's verdict.
fn open_tls(datapath: &mut Datapath, port: u16, name: &str) -> u32 {
    for (way, frame) in [
        (Way::Up, frames::tcp4_seq(Way::Up, port, 443, "S", 999, b"")),
        (Way::Down, frames::tcp4(Way::Down, port, 443, "SA", b"")),
        (
            Way::Up,
            frames::tcp4_seq(Way::Up, port, 443, "A", 1000, b""),
        ),
    ] {
        let expected = if way == Way::Up {
            XDP_PASS
        } else {
            TC_ACT_PIPE
        };
        assert_eq!(
            run_frame(datapath, way, &frame),
            expected,
            "handshake passes"
        );
    }
    let hello = frames::tcp4_seq(
        Way::Up,
        port,
        443,
        "PA",
        1000,
        &Hello::new().sni(name).bytes(),
    );
    run_frame(datapath, Way::Up, &hello)
}

#[test]
fn a_blocked_category_is_dropped_from_its_client_hello_on_both_ways() {
    if !privileged("a_blocked_category_is_dropped") {
        return;
    }
    let policy = Policy::default_council();
    let gambling = policy.classes.category_id("gambling").unwrap();
    let mut datapath = datapath(&policy);
    datapath
        .swap_policy(&DecisionTables {
            actions: vec![block(0, gambling)],
            ..DecisionTables::default()
        })
        .unwrap();

    assert_eq!(
        open_tls(&mut datapath, 46001, "www.bet365.com"),
        XDP_DROP,
        "the ClientHello itself"
    );
    let later_up = frames::tcp4_seq(Way::Up, 46001, 443, "A", 1000, b"");
    assert_eq!(run_frame(&mut datapath, Way::Up, &later_up), XDP_DROP);
    let later_down = frames::tcp4(Way::Down, 46001, 443, "PA", &[0x17; 200]);
    assert_eq!(
        run_frame(&mut datapath, Way::Down, &later_down),
        TC_ACT_SHOT
    );
    assert_eq!(
        open_tls(&mut datapath, 46002, "www.bbc.co.uk"),
        XDP_PASS,
        "other sites pass"
    );

    let entry = datapath.maps().flows.get(&key(46001), 0).unwrap();
    assert_eq!(entry.verdict, verdict::BLOCK);
    assert_eq!(entry.blocked.packets, 3);
    let stats = metrics::read_stats(&datapath.maps().stats).unwrap();
    assert_eq!(stats.get(Stat::Blocked), 3);
}

#[test]
fn groups_exceptions_and_a_new_generation_decide_again() {
    if !privileged("groups_exceptions_and_a_new_generation") {
        return;
    }
    let policy = Policy::default_council();
    let video = policy.classes.category_id("streaming-video").unwrap();
    let mut datapath = datapath(&policy);
    let staff = 1u16;
    let clients_in_staff = DecisionTables {
        prefixes: vec![("192.0.2.0/25".parse().unwrap(), staff)],
        actions: vec![block(staff, video)],
        ..DecisionTables::default()
    };
    let generation = datapath.swap_policy(&clients_in_staff).unwrap();
    assert_eq!(
        open_tls(&mut datapath, 47001, "www.youtube.com"),
        XDP_DROP,
        "staff: blocked"
    );

    // An exception for this client: the running flow is allowed from the next generation.
    let excepted = DecisionTables {
        client_exceptions: vec![(std::net::IpAddr::from(CLIENT_V4), video)],
        ..clients_in_staff.clone()
    };
    assert_eq!(datapath.swap_policy(&excepted).unwrap(), generation + 1);
    let next_packet = frames::tcp4_seq(Way::Up, 47001, 443, "A", 1500, b"");
    assert_eq!(run_frame(&mut datapath, Way::Up, &next_packet), XDP_PASS);

    // The client moves out of the staff prefix: the staff rule no longer concerns it.
    datapath
        .swap_policy(&DecisionTables {
            prefixes: vec![("192.0.2.128/25".parse().unwrap(), staff)],
            ..clients_in_staff.clone()
        })
        .unwrap();
    assert_eq!(
        open_tls(&mut datapath, 47002, "www.youtube.com"),
        XDP_PASS,
        "default group"
    );

    // And back, for a flow that is already running.
    datapath.swap_policy(&clients_in_staff).unwrap();
    assert_eq!(run_frame(&mut datapath, Way::Up, &next_packet), XDP_DROP);
    let entry = datapath.maps().flows.get(&key(47001), 0).unwrap();
    assert_eq!(entry.group, staff);
}

/// A schedule that changes at a known moment: from `working` (streaming blocked) to
/// `lunch` (allowed), and an exception that expires an hour later.
const TIMED_POLICY: &str = r#"
[schedule]
default = "outside"
[[schedule.period]]
name = "lunch"
days = "daily"
hours = "12:00-13:00"
[[schedule.period]]
name = "working"
days = "daily"
hours = "08:00-12:00"

[categories.streaming-video]
domains = ["youtube.com"]
[categories.gambling]
domains = ["bet365.com"]

[[rules]]
description = "No streaming at work"
categories = "streaming-video"
periods = "working"
action = "block"
[[rules]]
description = "No gambling"
categories = "gambling"
action = "block"

[[exceptions]]
client = "192.0.2.10"
categories = ["gambling"]
approved_by = "test"
reference = "T-1"
reason = "expires at 13:00 UTC"
expires = "2026-11-23T13:00:00Z"
"#;

#[test]
fn the_clock_swaps_the_tables_at_period_boundaries_and_exception_expiry() {
    use classifier_user::{in_force::InForce, policy::PolicySources};
    if !privileged("the_clock_swaps_the_tables_at_period_boundaries_and_exception_expiry") {
        return;
    }
    let at = |text: &str| text.parse::<jiff::Timestamp>().unwrap();
    let policy = Policy::parse(
        TIMED_POLICY,
        std::path::Path::new("timed.toml"),
        std::path::Path::new("."),
    )
    .unwrap();
    let mut datapath = Datapath::load().unwrap();
    // Monday 23 November 2026 (GMT = UTC), 11:59:59: working.
    let mut in_force = InForce::install(
        policy,
        PolicySources::default(),
        &mut datapath,
        at("2026-11-23T11:59:59Z"),
    )
    .unwrap();
    assert_eq!(in_force.period, "working");
    assert_eq!(in_force.next_change, Some(at("2026-11-23T12:00:00Z")));
    assert_eq!(
        open_tls(&mut datapath, 46001, "www.youtube.com"),
        XDP_TX,
        "blocked: the ClientHello is answered with a reset"
    );
    assert_eq!(
        open_tls(&mut datapath, 46002, "www.bet365.com"),
        XDP_PASS,
        "excepted"
    );

    // Not yet: nothing changes.
    assert!(
        !in_force
            .on_clock(&mut datapath, at("2026-11-23T11:59:59Z"))
            .unwrap()
    );
    // The boundary: lunch, and the running blocked flow passes from its next packet.
    let generation = in_force.generation;
    assert!(
        in_force
            .on_clock(&mut datapath, at("2026-11-23T12:00:00Z"))
            .unwrap()
    );
    assert_eq!(in_force.period, "lunch");
    assert_eq!(in_force.generation, generation + 1);
    let next = frames::tcp4_seq(Way::Up, 46001, 443, "PA", 2000, b"more");
    assert_eq!(
        run_frame(&mut datapath, Way::Up, &next),
        XDP_PASS,
        "lunch: allowed"
    );
    assert_eq!(in_force.next_change, Some(at("2026-11-23T13:00:00Z")));

    // 13:00: outside hours, and the exception has expired: gambling is blocked again, on
    // the running flow too; streaming is allowed.
    assert!(
        in_force
            .on_clock(&mut datapath, at("2026-11-23T13:00:00Z"))
            .unwrap()
    );
    assert_eq!(in_force.period, "outside");
    let next = frames::tcp4_seq(Way::Up, 46002, 443, "PA", 2000, b"more");
    assert_eq!(
        run_frame(&mut datapath, Way::Up, &next),
        XDP_TX,
        "exception expired: the running flow is reset"
    );
    let next = frames::tcp4_seq(Way::Up, 46001, 443, "PA", 2004, b"more");
    assert_eq!(
        run_frame(&mut datapath, Way::Up, &next),
        XDP_PASS,
        "outside: streaming allowed"
    );
}

/// The datapath with the council's default policy and the decisions of a Monday morning
/// in working hours.
fn council_datapath_at_work() -> Datapath {
    let policy = Policy::default_council();
    let mut datapath = datapath(&policy);
    let monday = "2026-11-23T10:00:00Z".parse::<jiff::Timestamp>().unwrap();
    datapath
        .swap_policy(&policy.decision_tables("working", monday))
        .unwrap();
    datapath
}

/// The ways a fail-fast answer leaves ([`fail_fast_replies`]): the way, the XDP action that
/// sends it, and the metadata in front of it (the mark `lan_replies` looks for).
fn answer_ways() -> [(u8, u32, Vec<u8>); 2] {
    [
        (fail_fast_replies::XDP_TX, XDP_TX, Vec::new()),
        (
            fail_fast_replies::TC_REDIRECT,
            XDP_PASS,
            REPLY_METADATA.to_ne_bytes().to_vec(),
        ),
    ]
}

/// Fail-fast: the blocked ClientHello comes back as a reset from the server, valid to the
/// last checksum, for IPv4 and IPv6, sent by XDP_TX or passed up marked for TC; a blocked
/// client's own reset is only dropped.
#[test]
fn a_blocked_client_hello_comes_back_as_a_valid_reset() {
    if !privileged("a_blocked_client_hello_comes_back_as_a_valid_reset") {
        return;
    }
    for (way, action, metadata) in answer_ways() {
        let mut datapath = council_datapath_at_work();
        datapath.set_fail_fast_replies(way).unwrap();
        blocked_client_hellos_come_back_as_resets(&mut datapath, action, &metadata);
    }
}

fn blocked_client_hellos_come_back_as_resets(
    datapath: &mut Datapath,
    expected_action: u32,
    expected_metadata: &[u8],
) {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let hello = Hello::new().sni("www.bet365.com").bytes();
    for (port, v6) in [(47001u16, false), (47002, true)] {
        let (syn, ack, client_hello) = if v6 {
            (
                frames::tcp6(Way::Up, port, 443, "S", b""),
                frames::tcp6(Way::Up, port, 443, "A", b""),
                frames::tcp6(Way::Up, port, 443, "PA", &hello),
            )
        } else {
            (
                frames::tcp4(Way::Up, port, 443, "S", b""),
                frames::tcp4(Way::Up, port, 443, "A", b""),
                frames::tcp4(Way::Up, port, 443, "PA", &hello),
            )
        };
        assert_eq!(run_frame(datapath, Way::Up, &syn), XDP_PASS);
        assert_eq!(run_frame(datapath, Way::Up, &ack), XDP_PASS);
        let outcome = run_upload_outcome(datapath, &client_hello);
        assert_eq!(
            outcome.action, expected_action,
            "v6={v6}: the blocked ClientHello is answered"
        );
        assert_eq!(outcome.metadata, expected_metadata, "v6={v6}");
        let reply = outcome.frame;

        let sent = SlicedPacket::from_ethernet(&client_hello).unwrap();
        let back = SlicedPacket::from_ethernet(&reply).unwrap();
        let (Some(TransportSlice::Tcp(sent_tcp)), Some(TransportSlice::Tcp(rst))) =
            (&sent.transport, &back.transport)
        else {
            panic!("not TCP: {reply:02x?}");
        };
        assert!(
            rst.rst() && rst.ack() && !rst.syn() && !rst.fin(),
            "RST+ACK"
        );
        assert_eq!((rst.source_port(), rst.destination_port()), (443, port));
        assert_eq!(rst.sequence_number(), sent_tcp.acknowledgment_number());
        assert_eq!(
            rst.acknowledgment_number(),
            sent_tcp.sequence_number() + hello.len() as u32
        );
        assert!(rst.payload().is_empty());
        let Some(ethernet) = back.link.as_ref().and_then(|l| l.to_header()) else {
            panic!("no Ethernet header");
        };
        let ethernet = match ethernet {
            etherparse::LinkHeader::Ethernet2(e) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            ethernet.destination,
            frames::CLIENT_MAC,
            "back to the client"
        );
        match back.net.as_ref().unwrap() {
            NetSlice::Ipv4(ip) => {
                let header = ip.header().to_header();
                assert_eq!(header.source, SERVER_V4);
                assert_eq!(header.destination, CLIENT_V4);
                assert_eq!(header.header_checksum, header.calc_header_checksum());
                let checksum = rst.to_header().calc_checksum_ipv4(&header, &[]).unwrap();
                assert_eq!(rst.checksum(), checksum, "TCP checksum");
            }
            NetSlice::Ipv6(ip) => {
                let header = ip.header().to_header();
                assert_eq!(header.source, frames::SERVER_V6);
                assert_eq!(header.destination, frames::CLIENT_V6);
                let checksum = rst.to_header().calc_checksum_ipv6(&header, &[]).unwrap();
                assert_eq!(rst.checksum(), checksum, "TCP checksum");
            }
            NetSlice::Arp(_) => unreachable!(),
        }
    }
    let stats = metrics::read_stats(&datapath.maps().stats).unwrap();
    assert_eq!(stats.get(Stat::ResetsSent), 2);
    // A reset from the client itself is dropped, never answered.
    let reset = frames::tcp4(Way::Up, 47001, 443, "R", b"");
    assert_eq!(run_frame(datapath, Way::Up, &reset), XDP_DROP);
}

/// The one's-complement sum of `bytes` as 16-bit big-endian words, folded: a message whose
/// checksum is right sums to 0xffff.
fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Fail-fast for UDP: a blocked DHT query (file sharing at work) comes back as ICMP
/// "administratively prohibited" (code 13, etherparse's `FilterProhibited`) from the
/// server, quoting the query's IP and UDP headers, with valid checksums, for IPv4 and IPv6,
/// sent by XDP_TX or passed up marked for TC.
#[test]
fn a_blocked_udp_datagram_comes_back_as_icmp_administratively_prohibited() {
    if !privileged("a_blocked_udp_datagram_comes_back_as_icmp_administratively_prohibited") {
        return;
    }
    for (way, action, metadata) in answer_ways() {
        let mut datapath = council_datapath_at_work();
        datapath.set_fail_fast_replies(way).unwrap();
        blocked_datagrams_come_back_as_icmp(&mut datapath, action, &metadata);
    }
}

fn blocked_datagrams_come_back_as_icmp(
    datapath: &mut Datapath,
    expected_action: u32,
    expected_metadata: &[u8],
) {
    use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};
    let dht = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    for (port, v6) in [(48001u16, false), (48002, true)] {
        let query = if v6 {
            frames::udp6(Way::Up, port, 6881, dht)
        } else {
            frames::udp4(Way::Up, port, 6881, dht)
        };
        let outcome = run_upload_outcome(datapath, &query);
        assert_eq!(
            outcome.action, expected_action,
            "v6={v6}: the blocked query is answered"
        );
        assert_eq!(outcome.metadata, expected_metadata, "v6={v6}");
        let reply = outcome.frame;

        let back = SlicedPacket::from_ethernet(&reply)
            .unwrap_or_else(|e| panic!("v6={v6}: {e:?} in {reply:02x?}"));
        let Some(etherparse::LinkSlice::Ethernet2(ethernet)) = &back.link else {
            panic!("no Ethernet header");
        };
        assert_eq!(ethernet.destination(), frames::CLIENT_MAC, "to the client");
        assert_eq!(ethernet.source(), frames::GATEWAY_MAC);
        // What the ICMP message quotes: the query's IP header and its UDP header, as sent.
        let ip_len = if v6 { 40 } else { 20 };
        let quoted = &query[14..14 + ip_len + 8];
        match (back.net.as_ref().unwrap(), back.transport.as_ref()) {
            (NetSlice::Ipv4(ip), Some(TransportSlice::Icmpv4(icmp))) => {
                let header = ip.header().to_header();
                assert_eq!((header.source, header.destination), (SERVER_V4, CLIENT_V4));
                assert_eq!(header.header_checksum, header.calc_header_checksum());
                assert_eq!(header.total_len as usize, 20 + 8 + quoted.len());
                assert!(matches!(
                    icmp.icmp_type(),
                    Icmpv4Type::DestinationUnreachable(
                        etherparse::icmpv4::DestUnreachableHeader::FilterProhibited
                    )
                ));
                assert_eq!(icmp.payload(), quoted);
                assert_eq!(ones_complement_sum(icmp.slice()), 0xffff, "ICMP checksum");
            }
            (NetSlice::Ipv6(ip), Some(TransportSlice::Icmpv6(icmp))) => {
                let header = ip.header().to_header();
                assert_eq!(
                    (header.source, header.destination),
                    (frames::SERVER_V6, frames::CLIENT_V6)
                );
                assert!(matches!(
                    icmp.icmp_type(),
                    Icmpv6Type::DestinationUnreachable(
                        etherparse::icmpv6::DestUnreachableCode::Prohibited
                    )
                ));
                assert_eq!(icmp.payload(), quoted);
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&header.source);
                pseudo.extend_from_slice(&header.destination);
                pseudo.extend_from_slice(&(icmp.slice().len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, ip_proto::ICMPV6]);
                pseudo.extend_from_slice(icmp.slice());
                assert_eq!(ones_complement_sum(&pseudo), 0xffff, "ICMPv6 checksum");
            }
            other => panic!("v6={v6}: not ICMP: {other:?}"),
        }
        assert_eq!(reply.len(), 14 + ip_len + 8 + quoted.len(), "nothing more");
    }
    let stats = metrics::read_stats(&datapath.maps().stats).unwrap();
    assert_eq!(stats.get(Stat::UnreachablesSent), 2);
}

/// The mark that lets a fail-fast answer out of `lan_egress` uncounted opens nothing else:
/// a blocked flow's download that carries it but was received on another interface (a
/// forwarded packet, whatever set its mark) is still dropped, as is one that comes back
/// out of the interface it came in on without it (a client's packet sent back, hairpin).
/// Only the two together (what `lan_replies` sends) pass, uncounted, their mark cleared.
#[test]
fn only_an_answer_sent_back_by_lan_replies_passes_a_blocked_flow_s_egress() {
    if !privileged("only_an_answer_sent_back_by_lan_replies_passes") {
        return;
    }
    let mut datapath = council_datapath_at_work();
    datapath
        .set_fail_fast_replies(fail_fast_replies::TC_REDIRECT)
        .unwrap();
    assert_eq!(
        open_tls(&mut datapath, 49001, "www.bet365.com"),
        XDP_PASS,
        "answered: passed up marked for lan_replies"
    );
    let download = frames::tcp4(Way::Down, 49001, 443, "R", b"");
    let downloaded =
        |datapath: &Datapath| datapath.maps().flows.get(&key(49001), 0).unwrap().download;
    let before = downloaded(&datapath);
    const ANOTHER_IFINDEX: u32 = 7;
    for (mark, ingress_ifindex, what) in [
        (
            REPLY_MARK,
            ANOTHER_IFINDEX,
            "marked, from another interface",
        ),
        (
            0,
            LOOPBACK_IFINDEX,
            "unmarked, back out of the same interface",
        ),
        (REPLY_MARK ^ 1, LOOPBACK_IFINDEX, "another mark"),
    ] {
        let (verdict, _) = run_tc_marked(
            &mut datapath,
            programs::LAN_EGRESS,
            &download,
            mark,
            ingress_ifindex,
        );
        assert_eq!(
            verdict, TC_ACT_SHOT,
            "{what}: the blocked flow's download is dropped"
        );
    }
    let counted = downloaded(&datapath);
    assert_eq!(counted.packets, before.packets + 3, "each was counted");

    let (verdict, mark) = run_tc_marked(
        &mut datapath,
        programs::LAN_EGRESS,
        &download,
        REPLY_MARK,
        LOOPBACK_IFINDEX,
    );
    assert_eq!(verdict, TC_ACT_PIPE, "the answer goes out");
    assert_eq!(mark, 0, "its mark is cleared");
    assert_eq!(
        downloaded(&datapath),
        counted,
        "and not counted as a download"
    );
}

/// `lan_replies` sends back only what XDP marked: a frame with no metadata (anything a
/// client can send: a reset, an ICMP unreachable, a truncated frame) passes on untouched.
#[test]
fn lan_replies_passes_every_frame_xdp_did_not_mark() {
    if !privileged("lan_replies_passes_every_frame_xdp_did_not_mark") {
        return;
    }
    let mut datapath = council_datapath_at_work();
    let reset = frames::tcp4(Way::Down, 49002, 443, "RA", b"");
    let icmp_like = frames::udp4(Way::Down, 6881, 49003, &[0xfa, 0x11, 0xfa, 0x57]);
    for frame in [reset, icmp_like] {
        for mark in [0, REPLY_MARK] {
            let (verdict, mark_out) =
                run_tc_marked(&mut datapath, programs::LAN_REPLIES, &frame, mark, 2);
            assert_eq!(verdict, TC_ACT_PIPE, "{frame:02x?}");
            assert_eq!(mark_out, mark, "left untouched");
        }
    }
}

/// A policy of three categories, `order` giving their order in the file; gaming is blocked.
fn categories_in_order(order: &[&str]) -> String {
    let mut text = String::new();
    for name in order {
        let domain = match *name {
            "video" => "youtube.com",
            "gaming" => "steampowered.com",
            _ => "bbc.co.uk",
        };
        text += &format!("[categories.{name}]\ndomains = [\"{domain}\"]\n");
    }
    text + "[[rules]]\ncategories = \"gaming\"\naction = \"block\"\nfail_fast = false\n"
}

#[test]
fn a_reload_that_adds_and_reorders_categories_leaves_running_flows_in_theirs() {
    if !privileged("a_reload_that_adds_and_reorders_categories") {
        return;
    }
    let file = std::env::temp_dir().join(format!("classifier-reorder-{}.toml", std::process::id()));
    std::fs::write(&file, categories_in_order(&["video", "gaming"])).unwrap();
    let sources = PolicySources {
        policy: Some(file.clone()),
        exceptions: None,
    };
    let now = jiff::Timestamp::now();
    let mut datapath = Datapath::load().expect("the kernel loads the datapath");
    let mut in_force =
        InForce::install(sources.load().unwrap(), sources, &mut datapath, now).unwrap();
    assert_eq!(open_tls(&mut datapath, 48001, "www.youtube.com"), XDP_PASS);
    let video_before = in_force.policy.classes.category_id("video").unwrap();

    // A new category first, and video after gaming: by position, the running flow's id
    // would now be gaming's, and blocked.
    std::fs::write(&file, categories_in_order(&["news", "gaming", "video"])).unwrap();
    let reloaded = in_force.reload(&mut datapath, now);
    let _ = std::fs::remove_file(&file);
    reloaded.expect("the new policy loads");
    let classes = &in_force.policy.classes;
    assert_eq!(classes.category_id("video"), Some(video_before));

    let later = frames::tcp4_seq(Way::Up, 48001, 443, "A", 1400, &[0x17; 100]);
    assert_eq!(
        run_frame(&mut datapath, Way::Up, &later),
        XDP_PASS,
        "the running video flow still passes"
    );
    let entry = datapath.maps().flows.get(&key(48001), 0).unwrap();
    assert_eq!(classes.category_name(entry.category), "video");
    assert_eq!(entry.verdict, verdict::ALLOW);

    assert_eq!(
        open_tls(&mut datapath, 48002, "store.steampowered.com"),
        XDP_DROP,
        "new gaming flows are blocked"
    );
    assert_eq!(
        open_tls(&mut datapath, 48003, "www.bbc.co.uk"),
        XDP_PASS,
        "the new category passes"
    );
    let news = datapath.maps().flows.get(&key(48003), 0).unwrap();
    assert_eq!(classes.category_name(news.category), "news");
    assert_eq!(
        datapath.class_ids(),
        classes.ids,
        "the ids are recorded beside the flows, for a restarted daemon"
    );
}

#[test]
fn groups_by_ipv6_prefix_and_by_vlan_decide_in_the_datapath() {
    if !privileged("groups_by_ipv6_prefix_and_by_vlan_decide_in_the_datapath") {
        return;
    }
    let policy = Policy::default_council();
    let video = policy.classes.category_id("streaming-video").unwrap();
    let gambling = policy.classes.category_id("gambling").unwrap();
    let mut datapath = datapath(&policy);
    let (staff, guest) = (1u16, 2u16);
    datapath
        .swap_policy(&DecisionTables {
            // Staff by the IPv6 prefix the test client is in; guests by VLAN 30, whatever
            // their address (the test client's IPv4 address is in no prefix).
            prefixes: vec![("2001:db8:1::/64".parse().unwrap(), staff)],
            vlans: vec![(30, guest)],
            actions: vec![block(staff, gambling), block(guest, video)],
            ..DecisionTables::default()
        })
        .unwrap();

    let mut v6_hello = |port: u16, name: &str| {
        let hello = Hello::new().sni(name).bytes();
        for flags in ["S", "A"] {
            run_frame(
                &mut datapath,
                Way::Up,
                &frames::tcp6(Way::Up, port, 443, flags, b""),
            );
        }
        run_frame(
            &mut datapath,
            Way::Up,
            &frames::tcp6(Way::Up, port, 443, "PA", &hello),
        )
    };
    assert_eq!(
        v6_hello(49001, "www.bet365.com"),
        XDP_DROP,
        "staff over IPv6: gambling blocked"
    );
    assert_eq!(
        v6_hello(49002, "www.youtube.com"),
        XDP_PASS,
        "staff may stream"
    );

    let mut tagged_hello = |port: u16, vlan: Option<u16>, name: &str| {
        let hello = Hello::new().sni(name).bytes();
        let frame = |flags: &str, seq: u32, payload: &[u8]| match vlan {
            Some(vlan) => frames::tcp4_vlan_with_options(vlan, port, 443, flags, seq, payload),
            None => frames::tcp4_seq(Way::Up, port, 443, flags, seq, payload),
        };
        run_frame(&mut datapath, Way::Up, &frame("S", 999, b""));
        run_frame(&mut datapath, Way::Up, &frame("A", 1000, b""));
        run_frame(&mut datapath, Way::Up, &frame("PA", 1000, &hello))
    };
    assert_eq!(
        tagged_hello(49003, Some(30), "www.youtube.com"),
        XDP_DROP,
        "VLAN 30 is the guest group: streaming blocked"
    );
    assert_eq!(
        tagged_hello(49004, Some(40), "www.youtube.com"),
        XDP_PASS,
        "another VLAN: the default group"
    );
    assert_eq!(
        tagged_hello(49005, None, "www.youtube.com"),
        XDP_PASS,
        "untagged: the default group"
    );
    let guest_flow = datapath.maps().flows.get(&key(49003), 0).unwrap();
    assert_eq!((guest_flow.group, guest_flow.vlan_id), (guest, 30));
}
