//! End to end in a lab of network namespaces: the real daemon on the gateway, a real client
//! (curl) and server, and tcpdump as an independent witness of what crossed the wire.

use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
    time::Duration,
};

use classifier_tests::{
    capture::{self, Capture},
    classifier_bin, flows_json, privileged,
};
use classifier_user::{
    flows::Counters,
    lab::{
        Lab, LabSpec,
        daemon::{DaemonOptions, DaemonProcess},
        http::{HttpServer, response_head},
        topology::{SERVICE_V4, SERVICE_V6},
    },
};
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
        curl_download(client, server_ip, client_port, body_len);
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

/// Downloads `len` bytes by name, over the address family of `server`, from `local_port`.
fn curl_download(client: &classifier_user::lab::Host, server: IpAddr, local_port: u16, len: u64) {
    let family = if server.is_ipv4() { "--ipv4" } else { "--ipv6" };
    let url = format!("http://{SERVER_NAME}/bytes/{len}");
    let output = Lab::command(client, "curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--output",
            "/dev/null",
        ])
        .args(["--local-port", &local_port.to_string(), family])
        .args(["--write-out", "%{size_download} %{remote_ip}"])
        .arg(&url)
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{len} {server}"),
        "body size and address of {url} {family}"
    );
}

/// `classifier flows --json` against the daemon's pin directory, parsed.
fn flows_of(control_socket: &std::path::Path) -> Vec<JsonFlow> {
    flows_json(control_socket)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}
