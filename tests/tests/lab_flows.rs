//! End to end in a lab of network namespaces: the real daemon on the gateway, a real client
//! (curl) and server, and tcpdump as an independent witness of what crossed the wire.

use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
    time::Duration,
};

use classifier_lab::{
    Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
    http::{HttpServer, response_head},
    topology::{SERVICE_V4, SERVICE_V6},
};
use classifier_tests::{
    capture::{self, Capture},
    classifier_bin,
    clients::{curl_download, interface_mac, send_udp},
    council_policy_with_short_idle, flows_json, privileged,
};
use classifier_user::flows::Counters;
use serde::Deserialize;

/// The fields of `classifier flows --json` this test reads.
#[derive(Debug, Deserialize)]
struct JsonFlow {
    client: SocketAddr,
    server: SocketAddr,
    protocol: String,
    upload: JsonCounters,
    download: JsonCounters,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
struct JsonCounters {
    packets: u64,
    bytes: u64,
}

impl From<Counters> for JsonCounters {
    fn from(c: Counters) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

const HTTP_PORT: u16 = 80;
/// Resolved by the clients' lab /etc/hosts to the server's service addresses.
const SERVER_NAME: &str = "downloads.example.test";

#[test]
fn daemon_counts_each_flow_exactly_as_it_crossed_the_wire() {
    if !privileged("daemon_counts_each_flow_exactly_as_it_crossed_the_wire") {
        return;
    }
    let lab = Lab::up(&LabSpec {
        server_names: vec![SERVER_NAME.into()],
        ..LabSpec::default()
    })
    .expect("lab comes up");
    let _server = HttpServer::start(
        &lab.server.netns,
        &[
            SocketAddr::new(SERVICE_V4.into(), HTTP_PORT),
            SocketAddr::new(SERVICE_V6.into(), HTTP_PORT),
        ],
    )
    .unwrap();
    let daemon = DaemonProcess::start(&classifier_bin(), &lab, &DaemonOptions::default()).unwrap();

    // Two downloads with known client ports, so we know each flow's key in advance.
    let downloads = [
        (IpAddr::from(SERVICE_V4), 40001u16, 1_000_000u64),
        (IpAddr::from(SERVICE_V6), 40002u16, 300_000u64),
    ];
    let client = &lab.clients[0];
    let capture = Capture::start(client, "tcp port 40001 or tcp port 40002").unwrap();
    for (server_ip, client_port, body_len) in downloads {
        curl_download(client, SERVER_NAME, server_ip, client_port, body_len);
    }
    // The last ACK and FIN of a closing connection may still be in flight.
    std::thread::sleep(Duration::from_millis(500));
    let captured = capture.finish().unwrap();

    let flows = flows_of(&daemon.control_socket);
    for (server_ip, client_port, body_len) in downloads {
        let client_ip = match server_ip {
            IpAddr::V4(_) => IpAddr::from(client.ipv4),
            IpAddr::V6(_) => IpAddr::from(client.ipv6),
        };
        let client_addr = SocketAddr::new(client_ip, client_port);
        let server_addr = SocketAddr::new(server_ip, HTTP_PORT);
        let flow = flows
            .iter()
            .find(|f| f.client == client_addr && f.server == server_addr)
            .unwrap_or_else(|| panic!("no flow {client_addr} -> {server_addr} in {flows:#?}"));
        assert_eq!(flow.protocol, "tcp");

        let (wire_up, wire_down) = capture::tally(&captured, client_addr, server_addr);
        assert_eq!(
            flow.upload,
            wire_up.into(),
            "{client_addr}: upload vs tcpdump"
        );
        assert_eq!(
            flow.download,
            wire_down.into(),
            "{client_addr}: download vs tcpdump"
        );

        // And against what the application sent: at least the body and the response head
        // plus an IP and TCP header (40 bytes or more) per packet. No upper bound: TCP
        // retransmissions (the veth's XDP ring overflows in bursts) really cross the wire.
        let payload = body_len + response_head(body_len).len() as u64;
        assert!(
            flow.download.bytes >= payload + 40 * flow.download.packets,
            "{client_addr}: {} bytes in {} packets for a {payload}-byte response",
            flow.download.bytes,
            flow.download.packets
        );
    }

    let status = daemon.stop().unwrap();
    assert!(status.success(), "daemon exit: {status}");
    assert!(!lab.pin_dir().exists(), "clean shutdown unpins the maps");
    let namespaces = lab.namespaces();
    drop(lab);
    let listing = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for netns in namespaces {
        assert!(!listing.contains(&netns), "{netns} left behind");
    }
}

/// Behind NAT: the record's public source is the gateway's WAN address of the flow's family
/// and the port under which the server's capture shows the same packets, and the server saw
/// no LAN address; without NAT, no public source.
fn check_public_source(
    flow: &classifier_user::flows::FlowRecord,
    nat: bool,
    at_server: &[capture::CapturedPacket],
    wire: (Counters, Counters),
) {
    use classifier_lab::topology::{GATEWAY_WAN_V4, GATEWAY_WAN_V6};
    if !nat {
        assert_eq!(flow.public_source, None, "{}", flow.client);
        return;
    }
    let gateway = if flow.server.is_ipv4() {
        IpAddr::from(GATEWAY_WAN_V4)
    } else {
        IpAddr::from(GATEWAY_WAN_V6)
    };
    let public = flow
        .public_source
        .unwrap_or_else(|| panic!("{}: a public source", flow.client));
    assert_eq!(public.ip(), gateway, "{}", flow.client);
    assert!(
        at_server
            .iter()
            .all(|p| p.src.ip() != flow.client.ip() && p.dst.ip() != flow.client.ip()),
        "the server never saw the client's own address"
    );
    let (up, down) = capture::tally(at_server, public, flow.server);
    assert_eq!(
        (JsonCounters::from(up), JsonCounters::from(down)),
        (JsonCounters::from(wire.0), JsonCounters::from(wire.1)),
        "{}: the server saw its packets from {public}",
        flow.client
    );
}

/// `classifier flows --json` against the daemon's pin directory, parsed.
fn flows_of(control_socket: &std::path::Path) -> Vec<JsonFlow> {
    flows_json(control_socket)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The flow store, end to end: flows that closed (FIN), went idle, or were live when the
/// daemon stopped are all in the SQLite file, each with the counters tcpdump saw, the name
/// and class the datapath gave it, the reason it ended and the client's MAC.
#[test]
fn ended_flows_are_recorded_in_the_store_as_they_crossed_the_wire() {
    if !privileged("ended_flows_are_recorded_in_the_store_as_they_crossed_the_wire") {
        return;
    }
    ended_flows_are_recorded(false);
}

/// The same behind a gateway that masquerades on its WAN: the records are the client's
/// (tcpdump on the client), and carry the translated source under which tcpdump on the
/// server host saw the very same packets, IPv4 and IPv6.
#[test]
fn behind_nat_records_carry_the_public_source_the_server_saw() {
    if !privileged("behind_nat_records_carry_the_public_source_the_server_saw") {
        return;
    }
    ended_flows_are_recorded(true);
}

fn ended_flows_are_recorded(nat: bool) {
    use classifier_user::store::{EndReason, Filter, FlowStore};
    let (lab, _http) = classifier_tests::setup::http_lab_with(&LabSpec {
        clients: 1,
        server_names: vec![SERVER_NAME.into()],
        nat,
        ..LabSpec::default()
    });
    // A short idle timeout, so the UDP flow ends within the test.
    let daemon = classifier_tests::setup::daemon_with_policy(
        &lab,
        &council_policy_with_short_idle(""),
        None,
    );

    let client = &lab.clients[0];
    let client_mac = interface_mac(client);
    let capture = Capture::start(client, "tcp port 40011 or tcp port 40012").unwrap();
    let at_server = Capture::start_on(&lab.server, "eth0", "tcp port 80").unwrap();
    curl_download(client, SERVER_NAME, SERVICE_V4.into(), 40011, 400_000);
    curl_download(client, SERVER_NAME, SERVICE_V6.into(), 40012, 200_000);
    let idle_udp = SocketAddr::new(IpAddr::from(client.ipv4), 40013);
    send_udp(
        client,
        idle_udp,
        SocketAddr::new(SERVICE_V4.into(), 5001),
        3,
    );
    std::thread::sleep(Duration::from_millis(500));
    let captured = capture.finish().unwrap();
    let at_server = at_server.finish().unwrap();

    // Closed flows are recorded once the close linger (5 s) is over, the UDP one after its
    // 3 s of idleness; the daemon walks the table every 2 s.
    let store = FlowStore::open(&lab.store_path()).expect("the daemon made the store");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut stored = Vec::new();
    while std::time::Instant::now() < deadline {
        stored = store.query(&Filter::default()).unwrap();
        let ports: Vec<u16> = stored.iter().map(|s| s.flow.client.port()).collect();
        if [40011, 40012, 40013].iter().all(|p| ports.contains(p)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let by_port = |port: u16| {
        let found: Vec<_> = stored
            .iter()
            .filter(|s| s.flow.client.port() == port)
            .collect();
        assert_eq!(found.len(), 1, "one record for port {port} in {stored:#?}");
        found[0].clone()
    };
    for (port, server_ip) in [
        (40011, IpAddr::from(SERVICE_V4)),
        (40012, IpAddr::from(SERVICE_V6)),
    ] {
        let record = by_port(port);
        let flow = &record.flow;
        let client_addr = SocketAddr::new(
            if server_ip.is_ipv4() {
                client.ipv4.into()
            } else {
                client.ipv6.into()
            },
            port,
        );
        assert_eq!(flow.client, client_addr);
        assert_eq!(flow.server, SocketAddr::new(server_ip, HTTP_PORT));
        let (wire_up, wire_down) = capture::tally(&captured, client_addr, flow.server);
        assert_eq!(
            JsonCounters::from(flow.upload),
            wire_up.into(),
            "{port}: upload vs tcpdump"
        );
        assert_eq!(
            JsonCounters::from(flow.download),
            wire_down.into(),
            "{port}: download vs tcpdump"
        );
        assert_eq!(flow.ended, Some(EndReason::Fin), "{port}");
        assert_eq!(flow.name.as_deref(), Some(SERVER_NAME), "{port}");
        assert_eq!(flow.method, "host", "{port}");
        assert_eq!(flow.verdict, "allow", "{port}");
        assert_eq!(
            flow.client_mac.as_deref(),
            Some(client_mac.as_str()),
            "{port}"
        );
        check_public_source(flow, nat, &at_server, (wire_up, wire_down));
        // Stamped at the timer tick's resolution: a quick exchange may start and end in
        // one tick, never end before it started.
        assert!(
            flow.last_seen >= flow.first_seen,
            "{port}: ended before it started"
        );
    }
    let udp = by_port(40013);
    assert_eq!(udp.flow.ended, Some(EndReason::Idle));
    assert_eq!(udp.flow.protocol, "udp");
    assert_eq!(udp.flow.upload.packets, 3);
    // Taken out of the table: the daemon lists it a minute longer, marked ended.
    let live = flows_json(&daemon.control_socket);
    let udp_line = live
        .lines()
        .find(|l| l.contains("\"client\":\"192.0.2.") && l.contains(":40013\""))
        .unwrap_or_else(|| panic!("the ended UDP flow is still listed: {live}"));
    assert!(udp_line.contains("\"ended\":\"idle\""), "{udp_line}");

    // A flow still live when the daemon stops is recorded too.
    let at_stop = SocketAddr::new(IpAddr::from(client.ipv4), 40014);
    send_udp(client, at_stop, SocketAddr::new(SERVICE_V4.into(), 5001), 1);
    std::thread::sleep(Duration::from_millis(200));
    let status = daemon.stop().unwrap();
    assert!(status.success(), "daemon exit: {status}");
    let stored = store.query(&Filter::default()).unwrap();
    let stopped: Vec<_> = stored.iter().filter(|s| s.flow.client == at_stop).collect();
    assert_eq!(stopped.len(), 1, "{stored:#?}");
    assert_eq!(stopped[0].flow.ended, Some(EndReason::Stopped));
    assert_eq!(store.count().unwrap(), stored.len() as u64);
}
