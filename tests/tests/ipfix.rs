//! The live IPFIX export, read by two independent collectors: nfdump's `nfcapd` and
//! Wireshark's dissector (`tshark` on tcpdump's capture of the export). A long download
//! crosses the lab gateway beside a short one; with a short active timeout the long flow
//! is reported while it lasts, and each collector's sum of its reports is exactly what
//! tcpdump counted on the client, each way. The enterprise-specific fields go out under
//! the number the policy sets, the standard elements name the host, category,
//! interfaces and MACs.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use classifier_lab::{
    Host, Lab,
    topology::{GATEWAY_LAN_IFACE, GATEWAY_WAN_IFACE, SERVICE_V4},
};
use classifier_tests::{
    capture::{self, Capture},
    clients::curl_download,
    council_policy_with_short_idle,
    nfdump::{Collector, NfFlow},
    privileged,
    setup::{daemon_with_policy, http_lab},
    tshark::{IpfixRecord, read_ipfix},
};
use classifier_user::{
    flows::Counters,
    store::{Filter, FlowStore},
};

const SERVER_NAME: &str = "downloads.example.test";
const COLLECTOR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4739);
const HTTP_PORT: u16 = 80;
/// The long download: 1.6 MB at 200 kB/s, about 8 s, against a 2 s active timeout.
const LONG_PORT: u16 = 40051;
const LONG_BODY: u64 = 1_600_000;
const LONG_RATE: u64 = 200_000;
const SHORT_PORT: u16 = 40052;
const SHORT_BODY: u64 = 50_000;
/// A number under which the lab exports the enterprise fields (IANA's documentation
/// number, RFC 5612: a lab's, never a default).
const LAB_ENTERPRISE: u32 = 32473;

#[test]
fn a_long_flow_is_reported_while_it_lasts_and_both_collectors_add_it_up_exactly() {
    if !privileged("a_long_flow_is_reported_while_it_lasts_and_both_collectors_add_it_up_exactly") {
        return;
    }
    let (lab, _http) = http_lab(SERVER_NAME);
    let data = lab.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    let nfcapd = Collector::start(&lab.gateway, COLLECTOR, &data.join("nfcapd")).unwrap();
    let export_capture = Capture::start_on(&lab.gateway, "lo", "udp port 4739").unwrap();
    let policy = council_policy_with_short_idle(&format!(
        "[export]\nipfix_collector = \"{COLLECTOR}\"\nipfix_active_timeout = \"2s\"\n\
         ipfix_enterprise_number = {LAB_ENTERPRISE}\n"
    ));
    let daemon = daemon_with_policy(&lab, &policy, None);

    let client = &lab.clients[0];
    let wire_capture = Capture::start(
        client,
        &format!("tcp port {LONG_PORT} or tcp port {SHORT_PORT}"),
    )
    .unwrap();
    slow_download(client, LONG_PORT, LONG_BODY, LONG_RATE);
    curl_download(
        client,
        SERVER_NAME,
        SERVICE_V4.into(),
        SHORT_PORT,
        SHORT_BODY,
    );
    std::thread::sleep(Duration::from_millis(500));
    let captured = wire_capture.finish().unwrap();
    let server = SocketAddr::new(SERVICE_V4.into(), HTTP_PORT);
    let long = SocketAddr::new(client.ipv4.into(), LONG_PORT);
    let short = SocketAddr::new(client.ipv4.into(), SHORT_PORT);
    wait_until_recorded(&lab.store_path(), &[long, short]);
    let status = daemon.stop().unwrap();
    assert!(status.success(), "daemon exit: {status}");

    let pcap = data.join("export.pcap");
    export_capture.save(&pcap).unwrap();
    let by_tshark = read_ipfix(&pcap, COLLECTOR.port()).unwrap();
    let by_nfdump = nfcapd.finish().unwrap();

    for (flow, lasting) in [(long, true), (short, false)] {
        let (up, down) = capture::tally(&captured, flow, server);
        for (from, to, wire) in [(flow, server, up), (server, flow, down)] {
            let seen_by_nfdump: Vec<&NfFlow> = by_nfdump
                .iter()
                .filter(|f| (f.src, f.dst) == (from, to))
                .collect();
            let seen_by_tshark: Vec<&IpfixRecord> = by_tshark
                .iter()
                .filter(|r| (r.src, r.dst) == (from, to))
                .collect();
            let what = format!("{from} → {to}");
            check_reports(&seen_by_tshark, lasting, &what);
            assert_eq!(
                seen_by_nfdump.len(),
                seen_by_tshark.len(),
                "{what}: both collectors got every report: {seen_by_nfdump:#?} {seen_by_tshark:#?}"
            );
            let nfdump_sum = Counters {
                packets: seen_by_nfdump.iter().map(|f| f.packets).sum(),
                bytes: seen_by_nfdump.iter().map(|f| f.bytes).sum(),
            };
            let tshark_sum = Counters {
                packets: seen_by_tshark.iter().map(|r| r.packets).sum(),
                bytes: seen_by_tshark.iter().map(|r| r.bytes).sum(),
            };
            assert_eq!(nfdump_sum, wire, "{what}: nfdump's sum against tcpdump");
            assert_eq!(tshark_sum, wire, "{what}: tshark's sum against tcpdump");
        }
    }
    check_standard_elements(&lab, client, &by_tshark);
}

/// A lasting flow's reports: two or more, each but the last an active timeout (2), the
/// last its end (3, FIN), each starting where the one before ended. A short flow: one.
fn check_reports(reports: &[&IpfixRecord], lasting: bool, what: &str) {
    if !lasting {
        assert_eq!(reports.len(), 1, "{what}: one report: {reports:#?}");
        assert_eq!(reports[0].end_reason, 3, "{what}");
        return;
    }
    assert!(
        reports.len() >= 2,
        "{what}: reported while it lasted: {reports:#?}"
    );
    let (last, interim) = reports.split_last().unwrap();
    assert!(
        interim.iter().all(|r| r.end_reason == 2),
        "{what}: active timeouts: {reports:#?}"
    );
    assert_eq!(last.end_reason, 3, "{what}: ended by FIN");
    for pair in reports.windows(2) {
        assert_eq!(
            pair[1].start, pair[0].end,
            "{what}: a report starts where the previous one ended"
        );
    }
}

/// The IANA elements as Wireshark names them: the host the client asked for, category,
/// forwarding status, the gateway's interfaces and the MACs at the LAN interface; and the
/// four enterprise fields under the lab's number.
fn check_standard_elements(lab: &Lab, client: &Host, records: &[IpfixRecord]) {
    let lan = ifindex(lab, GATEWAY_LAN_IFACE);
    let wan = ifindex(lab, GATEWAY_WAN_IFACE);
    let client_mac = mac_of(client, client.iface);
    let gateway_mac = mac_of(&lab.gateway, GATEWAY_LAN_IFACE);
    let ours: Vec<&IpfixRecord> = records
        .iter()
        .filter(|r| [r.src.port(), r.dst.port()].contains(&LONG_PORT))
        .collect();
    assert!(!ours.is_empty());
    for record in ours {
        assert_eq!(record.http_request_host.as_deref(), Some(SERVER_NAME));
        assert_eq!(record.application_category, "uncategorized");
        assert!(!record.application_name.is_empty());
        assert_eq!(record.forwarding_status, 1, "forwarded: {record:?}");
        // Four under the lab's number; tshark shows no empty one (evasion, here).
        assert_eq!(record.enterprise_fields, 3, "{record:?}");
        let upload = record.direction == 0;
        let expected = if upload {
            (lan, wan, &client_mac, &gateway_mac)
        } else {
            (wan, lan, &gateway_mac, &client_mac)
        };
        assert_eq!(
            (
                record.ingress_interface,
                record.egress_interface,
                &record.source_mac,
                &record.destination_mac
            ),
            expected,
            "{record:?}"
        );
    }
}

fn ifindex(lab: &Lab, name: &'static str) -> u32 {
    classifier_user::netns::run_in(&lab.gateway.netns, move || {
        Ok(nix::net::if_::if_nametoindex(name)?)
    })
    .unwrap()
}

/// `iface`'s MAC in `host`'s namespace (`ip netns exec` mounts the namespace's /sys).
fn mac_of(host: &Host, iface: &str) -> String {
    let output = Lab::command(host, "cat")
        .arg(format!("/sys/class/net/{iface}/address"))
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A download the server sends at `rate` bytes a second, so it lasts several active
/// timeouts (a client-side limit would not: the server fills the client's buffers at
/// once).
fn slow_download(client: &Host, port: u16, len: u64, rate: u64) {
    let url = format!("http://{SERVER_NAME}/bytes/{len}?rate={rate}");
    let output = Lab::command(client, "curl")
        .args(["--silent", "--show-error", "--max-time", "60", "--ipv4"])
        .args(["--output", "/dev/null"])
        .args(["--local-port", &port.to_string()])
        .args(["--write-out", "%{size_download}"])
        .arg(&url)
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), len.to_string());
}

/// Waits (bounded) until the store has a record of each flow.
fn wait_until_recorded(store: &Path, clients: &[SocketAddr]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(store) = FlowStore::open(store) {
            let stored = store.query(&Filter::default()).unwrap();
            if clients
                .iter()
                .all(|c| stored.iter().any(|s| s.flow.client == *c))
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the flows were not recorded within 30 s");
}
