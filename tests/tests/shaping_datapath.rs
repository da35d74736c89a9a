//! Shape verdicts in the real programs (BPF_PROG_TEST_RUN): the short-clip allowance passes
//! a client's first bytes untouched, then its packets get the HTB class of their rule as
//! `skb->priority`, downloads on the LAN egress and uploads on the WAN egress alike; a
//! per-client rule asks the daemon for the client's own class and uses it once it is
//! there; the policer passes a burst and then drops; the time allowance passes the packets
//! of its minutes, then shapes or (a block rule's) drops, and a new window starts afresh.

use classifier_common::{
    flow::{FlowKey, ip_proto, ipv4_mapped},
    programs,
    shaping::{BucketKey, ClientClassKey, MinuteCount, TokenBucket, bucket_kind, htb_priority},
    stats::Stat,
    testing::Hello,
};
use classifier_tests::{
    frames::{self, CLIENT_V4, SERVER_V4, Way},
    privileged,
    run::{TC_ACT_PIPE, XDP_PASS, run_frame, run_tc_priority},
};
use classifier_user::{
    events::{self, Event},
    loader::Datapath,
    metrics,
    policy::Policy,
};

const TC_ACT_SHOT: u32 = 2;
const PORT: u16 = 48001;
/// Download and upload frames carry this much payload (1040 bytes at layer 3).
const PAYLOAD: usize = 1000;

fn policy(rule: &str, method: &str) -> Policy {
    policy_of(
        &format!("action = \"shape\"\nrate = \"2mbit\"\n{rule}"),
        method,
    )
}

/// A policy whose one rule for the video category is `rule` (action included).
fn policy_of(rule: &str, method: &str) -> Policy {
    let text = format!(
        "[schedule]\ndefault = \"working\"\n[categories.video]\ndomains = [\"youtube.com\"]\n\
         [[rules]]\ncategories = \"video\"\n{rule}\n\
         [shaping]\nmethod = \"{method}\"\n"
    );
    Policy::parse(&text, "shaping.toml".as_ref(), ".".as_ref()).unwrap()
}

/// The datapath with `policy` in force and a video flow from PORT opened and classified.
fn datapath_with_video_flow(policy: &Policy) -> Datapath {
    let mut datapath = Datapath::load().expect("the kernel loads the datapath");
    datapath
        .install_tables(&policy.classes, &policy.datapath)
        .unwrap();
    datapath
        .swap_policy(&policy.decision_tables("working", jiff::Timestamp::now()))
        .unwrap();
    for (way, frame) in [
        (Way::Up, frames::tcp4(Way::Up, PORT, 443, "S", b"")),
        (Way::Down, frames::tcp4(Way::Down, PORT, 443, "SA", b"")),
        (Way::Up, frames::tcp4(Way::Up, PORT, 443, "A", b"")),
    ] {
        run_frame(&mut datapath, way, &frame);
    }
    let hello = Hello::new().sni("www.youtube.com").bytes();
    let hello = frames::tcp4(Way::Up, PORT, 443, "PA", &hello);
    assert_eq!(
        run_frame(&mut datapath, Way::Up, &hello),
        XDP_PASS,
        "a shaped flow passes XDP"
    );
    datapath
}

fn download(datapath: &mut Datapath) -> (u32, u32) {
    let frame = frames::tcp4(Way::Down, PORT, 443, "A", &[0; PAYLOAD]);
    run_tc_priority(datapath, programs::LAN_EGRESS, &frame)
}

fn upload_leaving_wan(datapath: &mut Datapath) -> (u32, u32) {
    let frame = frames::tcp4(Way::Up, PORT, 443, "A", &[0; PAYLOAD]);
    run_tc_priority(datapath, programs::WAN_EGRESS, &frame)
}

fn flow_key() -> FlowKey {
    FlowKey {
        client_addr: ipv4_mapped(CLIENT_V4),
        server_addr: ipv4_mapped(SERVER_V4),
        client_port: PORT,
        server_port: 443,
        protocol: ip_proto::TCP,
        _pad: [0; 3],
    }
}

#[test]
fn the_allowance_passes_the_first_bytes_then_packets_get_their_rule_s_class() {
    if !privileged("the_allowance_passes_the_first_bytes_then_packets_get_their_rule_s_class") {
        return;
    }
    // 3000 bytes: two 1040-byte packets fit, the third does not.
    let mut datapath = datapath_with_video_flow(&policy("allowance = \"3kB/hour\"", "htb"));
    assert_eq!(
        download(&mut datapath),
        (TC_ACT_PIPE, 0),
        "within the allowance"
    );
    assert_eq!(
        download(&mut datapath),
        (TC_ACT_PIPE, 0),
        "within the allowance"
    );
    let class_1 = htb_priority(1);
    assert_eq!(download(&mut datapath), (TC_ACT_PIPE, class_1), "shaped");
    assert_eq!(
        upload_leaving_wan(&mut datapath),
        (TC_ACT_PIPE, class_1),
        "the upload is shaped on the WAN egress: the allowance is the client's, both ways"
    );
    let entry = datapath.maps().flows.get(&flow_key(), 0).unwrap();
    assert_eq!(entry.shaped.packets, 2);
    assert_eq!(entry.shaped.bytes, 2 * 1040);
    let stats = metrics::read_stats(&datapath.maps().stats).unwrap();
    assert_eq!(stats.get(Stat::AllowancePassed), 2);
    assert_eq!(stats.get(Stat::Shaped), 2);

    // The WAN program counts nothing itself: the upload was counted at XDP.
    assert_eq!(
        entry.upload.packets, 3,
        "SYN, ACK and ClientHello at XDP only"
    );
}

#[test]
fn a_per_client_rule_asks_for_the_client_s_class_and_uses_it_once_there() {
    if !privileged("a_per_client_rule_asks_for_the_client_s_class_and_uses_it_once_there") {
        return;
    }
    let mut datapath = datapath_with_video_flow(&policy("share = \"per-client\"", "htb"));
    let mut ring = datapath.take_events().unwrap();
    assert_eq!(
        download(&mut datapath),
        (TC_ACT_PIPE, htb_priority(1)),
        "the rule's class until the client has its own"
    );
    download(&mut datapath);
    let mut asked = Vec::new();
    while let Some(record) = ring.next() {
        if let Some(Event::ShapeClient { class, client_addr }) = events::decode(&record) {
            asked.push((class, client_addr));
        }
    }
    assert_eq!(
        asked,
        vec![(1, ipv4_mapped(CLIENT_V4))],
        "asked once for the flow"
    );
    let client = ClientClassKey {
        client_addr: ipv4_mapped(CLIENT_V4),
        class: 1,
        _pad: [0; 2],
    };
    datapath
        .maps_mut()
        .client_classes
        .insert(client, 0x100, 0)
        .unwrap();
    assert_eq!(download(&mut datapath), (TC_ACT_PIPE, htb_priority(0x100)));
    assert_eq!(
        upload_leaving_wan(&mut datapath),
        (TC_ACT_PIPE, htb_priority(0x100))
    );
}

#[test]
fn the_policer_passes_its_burst_then_drops() {
    if !privileged("the_policer_passes_its_burst_then_drops") {
        return;
    }
    let mut datapath = datapath_with_video_flow(&policy("", "policer"));
    // The bucket is 128 KiB deep (two GSO packets) and refills at 250 kB/s: the first 100
    // packets (104 kB) pass, and 200 (208 kB) cannot all pass in the milliseconds this takes.
    let verdicts: Vec<(u32, u32)> = (0..200).map(|_| download(&mut datapath)).collect();
    assert!(
        verdicts[..100].iter().all(|v| *v == (TC_ACT_PIPE, 0)),
        "the burst passes, with no class: {verdicts:?}"
    );
    let dropped = verdicts.iter().filter(|(v, _)| *v == TC_ACT_SHOT).count();
    assert!(dropped > 0, "beyond the burst the policer drops");
    let stats = metrics::read_stats(&datapath.maps().stats).unwrap();
    assert_eq!(stats.get(Stat::PolicerDropped), dropped as u64);
}

/// The minutes rule 1 has counted for everyone (a shared rule).
const SHARED_MINUTES: BucketKey = BucketKey {
    client_addr: [0; 16],
    class: 1,
    kind: bucket_kind::MINUTES,
    _pad: 0,
};

fn minutes(datapath: &Datapath) -> MinuteCount {
    MinuteCount::from(datapath.maps().buckets.get(&SHARED_MINUTES, 0).unwrap())
}

/// Makes the count say what it would `ago` later: one minute used, in a window and a
/// minute that began `ago` before now.
fn one_minute_used_since(datapath: &mut Datapath, ago: std::time::Duration) {
    let now = classifier_user::flows::datapath_clock_ns().unwrap();
    let count = MinuteCount {
        window_start_ns: now - ago.as_nanos() as u64,
        minutes: 1,
        minute_start_ms: 0,
    };
    datapath
        .maps_mut()
        .buckets
        .insert(SHARED_MINUTES, TokenBucket::from(count), 0)
        .unwrap();
}

#[test]
fn a_time_allowance_passes_its_minutes_then_shapes_and_a_new_window_starts_afresh() {
    if !privileged("a_time_allowance_passes_its_minutes_then_shapes_and_a_new_window_starts_afresh")
    {
        return;
    }
    let mut datapath =
        datapath_with_video_flow(&policy("time_allowance = \"1 minute/hour\"", "htb"));
    assert_eq!(
        download(&mut datapath),
        (TC_ACT_PIPE, 0),
        "the first minute"
    );
    assert_eq!(
        upload_leaving_wan(&mut datapath),
        (TC_ACT_PIPE, 0),
        "the same minute, the other way"
    );
    assert_eq!(minutes(&datapath).minutes, 1);

    // 61 s later the next packet starts a second minute: beyond the allowance.
    one_minute_used_since(&mut datapath, std::time::Duration::from_secs(61));
    assert_eq!(download(&mut datapath), (TC_ACT_PIPE, htb_priority(1)));
    assert_eq!(minutes(&datapath).minutes, 2);
    assert_eq!(download(&mut datapath), (TC_ACT_PIPE, htb_priority(1)));
    assert_eq!(minutes(&datapath).minutes, 2, "still the second minute");

    // An hour after the window began, the next packet starts a new one at full speed.
    one_minute_used_since(&mut datapath, std::time::Duration::from_secs(3601));
    assert_eq!(download(&mut datapath), (TC_ACT_PIPE, 0), "a new window");
    assert_eq!(minutes(&datapath).minutes, 1);

    let stats = metrics::read_stats(&datapath.maps().stats).unwrap();
    assert_eq!(stats.get(Stat::AllowancePassed), 3);
    assert_eq!(stats.get(Stat::Shaped), 2);
}

#[test]
fn a_block_rule_with_a_time_allowance_drops_once_its_minutes_are_spent() {
    if !privileged("a_block_rule_with_a_time_allowance_drops_once_its_minutes_are_spent") {
        return;
    }
    let mut datapath = datapath_with_video_flow(&policy_of(
        "action = \"block\"\ntime_allowance = \"1 minute/hour\"\nallowance = \"1MB/hour\"",
        "htb",
    ));
    assert_eq!(
        download(&mut datapath),
        (TC_ACT_PIPE, 0),
        "within the minute"
    );
    one_minute_used_since(&mut datapath, std::time::Duration::from_secs(90));
    assert_eq!(download(&mut datapath), (TC_ACT_SHOT, 0), "spent: dropped");
    assert_eq!(upload_leaving_wan(&mut datapath), (TC_ACT_SHOT, 0));
    let entry = datapath.maps().flows.get(&flow_key(), 0).unwrap();
    assert_eq!(entry.blocked.packets, 2);
    assert_eq!(entry.blocked.bytes, 2 * 1040);
    assert_eq!(entry.shaped.packets, 0);
    let stats = metrics::read_stats(&datapath.maps().stats).unwrap();
    assert_eq!(stats.get(Stat::Blocked), 2);
    assert_eq!(stats.get(Stat::AllowancePassed), 1);
}

#[test]
fn with_both_allowances_full_speed_lasts_while_both_do() {
    if !privileged("with_both_allowances_full_speed_lasts_while_both_do") {
        return;
    }
    // Minutes to spare, but 3000 bytes: two 1040-byte packets fit, the third does not.
    let mut datapath = datapath_with_video_flow(&policy(
        "time_allowance = \"10 minutes/hour\"\nallowance = \"3kB/hour\"",
        "htb",
    ));
    assert_eq!(download(&mut datapath), (TC_ACT_PIPE, 0));
    assert_eq!(download(&mut datapath), (TC_ACT_PIPE, 0));
    assert_eq!(
        download(&mut datapath),
        (TC_ACT_PIPE, htb_priority(1)),
        "the volume is spent"
    );
    assert_eq!(minutes(&datapath).minutes, 1);
    // And the other way: volume to spare, the minutes spent.
    let mut datapath = datapath_with_video_flow(&policy(
        "time_allowance = \"1 minute/hour\"\nallowance = \"1GB/hour\"",
        "htb",
    ));
    assert_eq!(download(&mut datapath), (TC_ACT_PIPE, 0));
    one_minute_used_since(&mut datapath, std::time::Duration::from_secs(60));
    assert_eq!(download(&mut datapath), (TC_ACT_PIPE, htb_priority(1)));
}
