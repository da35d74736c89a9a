//! The datapath's programs run by the kernel on crafted frames (BPF_PROG_TEST_RUN), as a
//! table: frames in, verdicts and counters out.

use classifier_common::{
    flow::{FlowEntry, FlowKey, flow_flags, ip_proto, ipv4_mapped, tcp_flags},
    stats::Stat,
};
use classifier_tests::{
    frames::{self, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6, Way},
    privileged,
    run::{TC_ACT_PIPE, XDP_PASS, run_frame, try_run_frame},
};
use classifier_user::{loader::Datapath, metrics};

/// One row: frames through the programs, then what the flow table and counters must hold.
struct Case {
    name: &'static str,
    frames: Vec<(Way, Vec<u8>)>,
    /// Every flow the table must hold afterwards, and nothing else.
    flows: Vec<ExpectedFlow>,
    /// Global counters that must have these values (the others: see `check_stats`).
    stats: Vec<(Stat, u64)>,
}

struct ExpectedFlow {
    key: FlowKey,
    /// (packets, bytes) client → server.
    upload: (u64, u64),
    /// (packets, bytes) server → client.
    download: (u64, u64),
    vlan_id: u16,
    tcp_flags_upload: u8,
    tcp_flags_download: u8,
    flags: u8,
}

fn key(
    client: [u8; 16],
    client_port: u16,
    server: [u8; 16],
    server_port: u16,
    protocol: u8,
) -> FlowKey {
    FlowKey {
        client_addr: client,
        server_addr: server,
        client_port,
        server_port,
        protocol,
        _pad: [0; 3],
    }
}

fn v4_key(client_port: u16, server_port: u16, protocol: u8) -> FlowKey {
    key(
        ipv4_mapped(CLIENT_V4),
        client_port,
        ipv4_mapped(SERVER_V4),
        server_port,
        protocol,
    )
}

fn v6_key(client_port: u16, server_port: u16, protocol: u8) -> FlowKey {
    key(CLIENT_V6, client_port, SERVER_V6, server_port, protocol)
}

fn flow(key: FlowKey, upload: (u64, u64), download: (u64, u64)) -> ExpectedFlow {
    ExpectedFlow {
        key,
        upload,
        download,
        vlan_id: 0,
        tcp_flags_upload: 0,
        tcp_flags_download: 0,
        flags: 0,
    }
}

fn cases() -> Vec<Case> {
    // A later fragment of a datagram whose first fragment never came (another id).
    let mut unmatched_fragment = frames::udp4_later_fragment(&[0xcd; 40]);
    unmatched_fragment[14 + 4] ^= 0xff;
    frames::fix_ipv4_header_checksum(&mut unmatched_fragment);
    use frames::*;
    let syn = tcp4(Way::Up, 40000, 443, "S", b"");
    let syn_ack = tcp4(Way::Down, 40000, 443, "SA", b"");
    let ack = tcp4(Way::Up, 40000, 443, "A", b"");
    let request = tcp4(Way::Up, 40000, 443, "PA", &[0x16; 300]);
    let response = tcp4(Way::Down, 40000, 443, "PA", &[0x17; 1400]);
    let quic6 = udp6(Way::Up, 50000, 443, &[0xc3; 1200]);
    let dns_v4 = udp4(Way::Up, 33333, 53, b"\x12\x34\x01\x00");
    let dns_v4_reply = udp4(Way::Down, 33333, 53, b"\x12\x34\x81\x80 answer");
    let tagged = udp4_vlan(20, 6000, 6001, b"tagged");
    let push_down = tcp6(Way::Down, 41000, 80, "PA", b"server speaks first");
    let ping = ping4(b"ping payload");
    let mut truncated_ip = tcp4(Way::Up, 1, 2, "S", b"");
    truncated_ip.truncate(14 + 10);
    let mut truncated_tcp = tcp4(Way::Down, 1, 2, "S", b"");
    truncated_tcp.truncate(14 + 20 + 8);
    let mut bad_ihl = tcp4(Way::Up, 1, 2, "S", b"");
    bad_ihl[14] = 0x43;
    let mut bad_data_offset = tcp6(Way::Down, 1, 2, "S", b"");
    bad_data_offset[14 + 40 + 12] = 0x30;

    vec![
        Case {
            name: "a TCP handshake and exchange count both ways on one flow",
            frames: vec![
                (Way::Up, syn.clone()),
                (Way::Down, syn_ack.clone()),
                (Way::Up, ack.clone()),
                (Way::Up, request.clone()),
                (Way::Down, response.clone()),
            ],
            flows: vec![ExpectedFlow {
                tcp_flags_upload: tcp_flags::SYN | tcp_flags::ACK | tcp_flags::PSH,
                tcp_flags_download: tcp_flags::SYN | tcp_flags::ACK | tcp_flags::PSH,
                ..flow(
                    v4_key(40000, 443, ip_proto::TCP),
                    (3, l3_len(&syn) + l3_len(&ack) + l3_len(&request)),
                    (2, l3_len(&syn_ack) + l3_len(&response)),
                )
            }],
            stats: vec![(Stat::Packets, 5), (Stat::FlowsCreated, 1)],
        },
        Case {
            name: "IPv6 UDP (a QUIC-sized datagram) is a flow",
            frames: vec![(Way::Up, quic6.clone())],
            flows: vec![flow(
                v6_key(50000, 443, ip_proto::UDP),
                (1, l3_len(&quic6)),
                (0, 0),
            )],
            stats: vec![(Stat::Packets, 1), (Stat::FlowsCreated, 1)],
        },
        Case {
            name: "UDP request and reply share the flow",
            frames: vec![(Way::Up, dns_v4.clone()), (Way::Down, dns_v4_reply.clone())],
            flows: vec![flow(
                v4_key(33333, 53, ip_proto::UDP),
                (1, l3_len(&dns_v4)),
                (1, l3_len(&dns_v4_reply)),
            )],
            stats: vec![(Stat::Packets, 2), (Stat::FlowsCreated, 1)],
        },
        Case {
            name: "a flow first seen downstream is keyed client first and marked",
            frames: vec![(Way::Down, push_down.clone())],
            flows: vec![ExpectedFlow {
                tcp_flags_download: tcp_flags::PSH | tcp_flags::ACK,
                flags: flow_flags::STARTED_DOWNSTREAM,
                ..flow(
                    v6_key(41000, 80, ip_proto::TCP),
                    (0, 0),
                    (1, l3_len(&push_down)),
                )
            }],
            stats: vec![(Stat::Packets, 1), (Stat::FlowsCreated, 1)],
        },
        Case {
            name: "802.1Q tag is recorded, bytes exclude it",
            frames: vec![(Way::Up, tagged.clone())],
            flows: vec![ExpectedFlow {
                vlan_id: 20,
                ..flow(
                    v4_key(6000, 6001, ip_proto::UDP),
                    (1, l3_len(&tagged)),
                    (0, 0),
                )
            }],
            stats: vec![(Stat::Packets, 1)],
        },
        Case {
            name: "ICMP is a flow without ports",
            frames: vec![(Way::Up, ping.clone())],
            flows: vec![flow(
                v4_key(0, 0, ip_proto::ICMP),
                (1, l3_len(&ping)),
                (0, 0),
            )],
            stats: vec![(Stat::Packets, 1)],
        },
        Case {
            name: "ARP passes, counted as not IP",
            frames: vec![(Way::Up, arp()), (Way::Down, arp())],
            flows: vec![],
            stats: vec![(Stat::Packets, 2), (Stat::NotIp, 2)],
        },
        Case {
            name: "a first fragment names its flow, later ones count with it, others apart",
            frames: vec![
                (Way::Up, udp4_first_fragment()),
                (Way::Up, frames::udp4_later_fragment(&[0xcd; 40])),
                (Way::Up, frames::udp4_later_fragment(&[0xce; 40])),
                (Way::Up, unmatched_fragment.clone()),
            ],
            flows: vec![flow(
                v4_key(5000, 5001, ip_proto::UDP),
                (3, 92 + 60 + 60),
                (0, 0),
            )],
            stats: vec![
                (Stat::Packets, 4),
                (Stat::FirstFragments, 1),
                (Stat::LaterFragments, 2),
                (Stat::Fragments, 1),
            ],
        },
        Case {
            // TC only gets frames whose IP header is whole (see run::try_run_frame).
            name: "truncated and inconsistent headers pass and are counted as malformed",
            frames: vec![
                (Way::Up, truncated_ip),
                (Way::Up, bad_ihl.clone()),
                (Way::Down, truncated_tcp),
                (Way::Down, bad_ihl),
                (Way::Down, bad_data_offset),
            ],
            flows: vec![],
            stats: vec![(Stat::Packets, 5), (Stat::Malformed, 5)],
        },
    ]
}

#[test]
fn datapath_table() {
    if !privileged("datapath_table") {
        return;
    }
    for case in cases() {
        // A fresh datapath per row: private maps, so rows cannot see each other's flows.
        let mut datapath = Datapath::load().expect("the kernel loads the datapath");
        for (index, (way, frame)) in case.frames.iter().enumerate() {
            let verdict = run_frame(&mut datapath, *way, frame);
            let expected = match way {
                Way::Up => XDP_PASS,
                Way::Down => TC_ACT_PIPE,
            };
            assert_eq!(
                verdict, expected,
                "{}: verdict for frame {index}",
                case.name
            );
        }
        check_flows(&datapath, &case);
        check_stats(&datapath, &case);
    }
}

fn check_flows(datapath: &Datapath, case: &Case) {
    let table = &datapath.maps().flows;
    let mut actual: Vec<(FlowKey, FlowEntry)> = table.iter().map(Result::unwrap).collect();
    assert_eq!(
        actual.len(),
        case.flows.len(),
        "{}: flows in the table: {actual:?}",
        case.name
    );
    for expected in &case.flows {
        let position = actual
            .iter()
            .position(|(key, _)| *key == expected.key)
            .unwrap_or_else(|| panic!("{}: no flow {:?} in {actual:?}", case.name, expected.key));
        let (_, entry) = actual.swap_remove(position);
        let got = |c: classifier_common::flow::DirectionCounters| (c.packets, c.bytes);
        assert_eq!(got(entry.upload), expected.upload, "{}: upload", case.name);
        assert_eq!(
            got(entry.download),
            expected.download,
            "{}: download",
            case.name
        );
        assert_eq!(entry.vlan_id, expected.vlan_id, "{}: VLAN", case.name);
        assert_eq!(
            entry.tcp_flags_upload, expected.tcp_flags_upload,
            "{}: TCP flags up",
            case.name
        );
        assert_eq!(
            entry.tcp_flags_download, expected.tcp_flags_download,
            "{}: TCP flags down",
            case.name
        );
        assert_eq!(entry.flags, expected.flags, "{}: flow flags", case.name);
        assert!(entry.first_seen_ns > 0 && entry.first_seen_ns <= entry.last_seen_ns);
    }
}

/// Listed counters must match exactly; unlisted ones must be zero, except flows_created,
/// which must equal the number of flows when not listed.
fn check_stats(datapath: &Datapath, case: &Case) {
    let stats = metrics::read_stats(&datapath.maps().stats).unwrap();
    for stat in Stat::ALL {
        let expected = case
            .stats
            .iter()
            .find(|(s, _)| *s == stat)
            .map(|(_, v)| *v)
            .unwrap_or(if stat == Stat::FlowsCreated {
                case.flows.len() as u64
            } else {
                0
            });
        assert_eq!(
            stats.get(stat),
            expected,
            "{}: counter {}",
            case.name,
            stat.name()
        );
    }
}

#[test]
fn random_frames_never_abort_and_never_make_flows_from_garbage_headers() {
    if !privileged("random_frames_never_abort") {
        return;
    }
    let mut datapath = Datapath::load().unwrap();
    let mut refused_by_harness = 0u64;
    // A fixed xorshift sequence: reproducible, no dependency.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..2_000u32 {
        let len = 14 + (next() % 200) as usize;
        let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half the frames claim to be IPv4 or IPv6 so the IP parsers see garbage too.
        match round % 4 {
            0 => frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes()),
            1 => frame[12..14].copy_from_slice(&0x86ddu16.to_be_bytes()),
            _ => {}
        }
        let way = if round % 2 == 0 { Way::Up } else { Way::Down };
        let verdict = match (way, try_run_frame(&mut datapath, way, &frame)) {
            (_, Ok(verdict)) => verdict,
            (Way::Down, Err(_)) => {
                refused_by_harness += 1;
                continue;
            }
            (Way::Up, Err(e)) => panic!("XDP test run failed on frame {round}: {e:?}"),
        };
        let expected = if way == Way::Up {
            XDP_PASS
        } else {
            TC_ACT_PIPE
        };
        assert_eq!(verdict, expected, "frame {round}: {frame:02x?}");
    }
    let run = 2_000 - refused_by_harness;
    assert!(
        run >= 1_500,
        "the harness refused {refused_by_harness} of 1000 TC frames"
    );
    let stats = metrics::read_stats(&datapath.maps().stats).unwrap();
    assert_eq!(stats.get(Stat::Packets), run);
    let accounted = stats.get(Stat::NotIp)
        + stats.get(Stat::Malformed)
        + stats.get(Stat::Fragments)
        + datapath
            .maps()
            .flows
            .iter()
            .map(Result::unwrap)
            .map(|(_, e)| e.upload.packets + e.download.packets)
            .sum::<u64>();
    assert_eq!(
        accounted, run,
        "every frame is either a flow's or a counter's"
    );
}

#[test]
fn the_batched_table_walk_reads_what_the_key_by_key_walk_reads() {
    if !privileged("the_batched_table_walk_reads_what_the_key_by_key_walk_reads") {
        return;
    }
    let mut datapath = Datapath::load().unwrap();
    // One client opening 5000 flows at once is a flood the default quota of new flows
    // refuses; the quota is not what this test is about.
    datapath
        .update_config(|config| config.flow_burst = 0)
        .unwrap();
    // Real flows made by the programs, both families, more than one batch's worth.
    for port in 0..5000u16 {
        let frame = if port % 2 == 0 {
            frames::tcp4(Way::Up, 20000 + port, 443, "S", b"")
        } else {
            frames::udp6(Way::Up, 20000 + port, 443, &[0x42; 40])
        };
        run_frame(&mut datapath, Way::Up, &frame);
    }
    let table = &datapath.maps().flows;
    let sorted = |walk: classifier_user::flows::TableWalk| {
        assert!(walk.complete);
        let mut entries = walk.entries;
        entries.sort_by_key(|(key, _)| (key.client_port, key.protocol));
        entries
    };
    let batched = sorted(classifier_user::flows::read_entries(table));
    let by_key = sorted(classifier_user::flows::read_entries_by_key(table));
    assert_eq!(batched.len(), 5000);
    assert_eq!(batched, by_key);
}
