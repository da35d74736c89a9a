//! Floods do not blind the datapath: sources outside the LAN make no flows, and what one
//! client may take of the shared tables (new flows, reassembly buffers, QUIC Initials for
//! the daemon) is metered per client, so a flooding host spends its own quota and not its
//! colleagues'. Through the real programs (BPF_PROG_TEST_RUN).

use classifier_common::stats::Stat;
use classifier_tests::{
    frames::Way,
    harness::{Harness, MONDAY_AT_WORK},
    privileged,
    run::XDP_PASS,
    segments::{Conn, frames},
};
use classifier_user::{
    events::Event,
    policy::{DEFAULT_POLICY, Policy},
    quic::initial::{QuicVersion, testing::client_initial},
};

const XDP_DROP: u32 = 1;

/// The council policy with this `[datapath]` section instead of its own, in force at work.
fn council_with(datapath: &str) -> Harness {
    let (before, own) = DEFAULT_POLICY
        .split_once("\n[datapath]\n")
        .expect("the default policy has a [datapath] section");
    assert!(
        !own.contains("\n["),
        "[datapath] is the default policy's last section"
    );
    let text = format!("{before}\n[datapath]\n{datapath}\n");
    let policy = Policy::parse(
        &text,
        std::path::Path::new("floods.toml"),
        std::path::Path::new("."),
    )
    .expect("the policy parses");
    let mut harness = Harness::new(policy);
    harness.at("working", MONDAY_AT_WORK);
    harness
}

/// A SYN of `conn`.
fn syn(conn: &Conn) -> (Way, Vec<u8>) {
    conn.handshake().swap_remove(0)
}

fn flows(harness: &Harness) -> usize {
    harness.datapath.maps().flows.keys().count()
}

#[test]
fn sources_outside_the_lan_make_no_flows() {
    if !privileged("sources_outside_the_lan_make_no_flows") {
        return;
    }
    let mut harness = council_with(r#"lan_prefixes = ["192.0.2.0/25", "2001:db8:1::/64"]"#);
    let inside = Conn::new(false, 40001, 443);
    let spoofed = Conn::new(false, 40002, 443).between(200, 10);
    let spoofed_v6 = Conn::new(true, 40003, 443).between(0x99, 0x10);
    let mut outside_v6 = spoofed_v6;
    outside_v6.client_host = 0x10;
    let (verdicts, _) = harness.send(&[syn(&inside), syn(&spoofed)]);
    assert_eq!(
        verdicts,
        [XDP_PASS, XDP_DROP],
        "inside passes, spoofed is dropped"
    );
    // A host before it has an address (DHCP from 0.0.0.0 to the broadcast address) passes,
    // flowless.
    let mut dhcp = Conn::new(false, 68, 67).between(0, 255);
    dhcp.client_host = 0;
    let mut discover = dhcp.datagram(Way::Up, &[1, 1, 6, 0]);
    discover[14 + 12..14 + 16].copy_from_slice(&[0, 0, 0, 0]);
    discover[14 + 16..14 + 20].copy_from_slice(&[255, 255, 255, 255]);
    classifier_tests::frames::fix_ipv4_header_checksum(&mut discover);
    let (verdicts, _) = harness.send(&[(Way::Up, discover)]);
    assert_eq!(verdicts, [XDP_PASS]);
    let (verdicts, _) = harness.send(&[syn(&outside_v6)]);
    assert_eq!(verdicts, [XDP_PASS], "2001:db8:1::99 is inside its /64");
    assert_eq!(flows(&harness), 2, "the inside flows only");
    assert_eq!(harness.stat(Stat::ForeignSource), 1);
}

#[test]
fn a_client_over_its_new_flow_quota_spends_only_its_own() {
    if !privileged("a_client_over_its_new_flow_quota_spends_only_its_own") {
        return;
    }
    let mut harness = council_with("new_flows_per_second = 1\nnew_flows_burst = 20");
    let flood: Vec<(Way, Vec<u8>)> = (0..30)
        .map(|i| syn(&Conn::new(false, 41000 + i, 443)))
        .collect();
    let (verdicts, _) = harness.send(&flood);
    let dropped = verdicts.iter().filter(|v| **v == XDP_DROP).count();
    assert!(
        (9..=10).contains(&dropped),
        "the 10 beyond the burst (the bucket may refill one): {verdicts:?}"
    );
    assert_eq!(harness.stat(Stat::SourceOverQuota) as usize, dropped);
    // Another client, meanwhile, opens flows and gets its name read.
    let colleague = Conn::new(false, 42000, 443).between(11, 10);
    let mut frames_b = colleague.handshake();
    frames_b.extend(frames(&[colleague.data(
        0,
        &classifier_common::testing::Hello::new()
            .sni("www.bet365.com")
            .bytes(),
    )]));
    harness.send(&frames_b);
    let record = harness.record(&colleague.key());
    assert_eq!(
        (record.name.as_deref(), record.verdict.as_str()),
        (Some("www.bet365.com"), "block")
    );
}

#[test]
fn half_client_hellos_spend_their_sender_s_reassembly_quota() {
    if !privileged("half_client_hellos_spend_their_sender_s_reassembly_quota") {
        return;
    }
    let mut harness = council_with("reassemblies_per_second = 1\nreassemblies_burst = 3");
    let hello = classifier_common::testing::chrome_like("www.bet365.com");
    // The attacker opens five connections and sends the first segment of each hello only.
    for i in 0..5 {
        let conn = Conn::new(false, 43000 + i, 443);
        let mut all = conn.handshake();
        all.extend(frames(&[conn.data(0, &hello[..1000])]));
        harness.send(&all);
    }
    let unreadable = (0..5)
        .filter(|i| {
            harness
                .record(&Conn::new(false, 43000 + i, 443).key())
                .unreadable
        })
        .count();
    assert!(
        (1..=2).contains(&unreadable),
        "beyond its quota the attacker's own half hellos are unreadable: {unreadable}"
    );
    assert!(harness.stat(Stat::ReassemblyOverQuota) >= 1);
    // A colleague's hello over two segments is still read.
    let colleague = Conn::new(false, 44000, 443).between(11, 10);
    let mut all = colleague.handshake();
    all.extend(frames(&colleague.mss(&hello, 1448)));
    harness.send(&all);
    let record = harness.record(&colleague.key());
    assert_eq!(
        (record.name.as_deref(), record.verdict.as_str()),
        (Some("www.bet365.com"), "block")
    );
}

#[test]
fn fake_quic_initials_beyond_a_client_s_quota_are_not_read() {
    if !privileged("fake_quic_initials_beyond_a_client_s_quota_are_not_read") {
        return;
    }
    let mut harness = council_with("quic_initials_per_second = 1\nquic_initials_burst = 2");
    let record = classifier_common::testing::chrome_like("www.bbc.co.uk");
    let hello = classifier_common::testing::handshake_of(&record);
    let initial = client_initial(QuicVersion::V1, &[5u8; 8], 0, 0, &hello[..1100]);
    let mut handed = 0;
    for i in 0..6u16 {
        let conn = Conn::new(false, 45000 + i, 443);
        let (_, events) = harness.send(&[(Way::Up, conn.datagram(Way::Up, &initial))]);
        handed += events
            .iter()
            .filter(|e| matches!(e, Event::QuicInitial { .. }))
            .count();
    }
    assert!(
        (2..=3).contains(&handed),
        "the daemon reads the client's quota of Initials: {handed}"
    );
    assert!(harness.stat(Stat::QuicOverQuota) >= 3);
    // Beyond the quota a flow is QUIC of no known name: the policy blocks it at work.
    let last = harness.record(&Conn::new(false, 45005, 443).udp_key());
    assert_eq!(
        (
            last.category.as_str(),
            last.method.as_str(),
            last.verdict.as_str()
        ),
        ("quic", "quic", "block")
    );
    // A colleague's Initial still goes to the daemon.
    let colleague = Conn::new(false, 46000, 443).between(11, 10);
    let (_, events) = harness.send(&[(Way::Up, colleague.datagram(Way::Up, &initial))]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::QuicInitial { .. })),
        "{events:?}"
    );
}
