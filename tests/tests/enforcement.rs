//! Verdicts applied by the real programs (BPF_PROG_TEST_RUN): blocked flows are dropped at
//! XDP (uploads) and TC (downloads) from the packet that classifies them; groups, exceptions
//! and a generation swap change verdicts of flows already running.

use classifier_common::{
    flow::{FlowKey, ip_proto, ipv4_mapped},
    policy::{ActionEntry, verdict},
    stats::Stat,
    testing::Hello,
};
use classifier_tests::{
    frames::{self, CLIENT_V4, SERVER_V4, Way},
    privileged,
    run::{TC_ACT_PIPE, XDP_PASS, run_frame},
};
use classifier_user::{loader::Datapath, metrics, policy::Policy, tables::DecisionTables};

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

    let entry = datapath.flow_table().unwrap().get(&key(46001), 0).unwrap();
    assert_eq!(entry.verdict, verdict::BLOCK);
    assert_eq!(entry.blocked.packets, 3);
    let stats = metrics::read_stats(&datapath.stats_table().unwrap()).unwrap();
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
    let entry = datapath.flow_table().unwrap().get(&key(47001), 0).unwrap();
    assert_eq!(entry.group, staff);
}
