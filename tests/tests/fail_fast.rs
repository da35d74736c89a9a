//! Fail-fast in the lab: a real client (curl) visiting a blocked site over TLS is answered
//! with a TCP reset by the gateway and fails at once with "connection reset", not after a
//! timeout; an allowed site on the same server completes. A blocked UDP flow is answered
//! with ICMP "administratively prohibited", which the client's own socket reports.

use std::{
    io::ErrorKind,
    net::{SocketAddr, UdpSocket},
    process::Output,
    time::Duration,
};

use classifier_tests::{classifier_bin, privileged};
use classifier_user::{
    lab::{
        Host, Lab, LabSpec,
        daemon::{DaemonOptions, DaemonProcess},
        tls::TlsServer,
        topology::{SERVICE_V4, SERVICE_V6},
    },
    netns,
};

const BLOCKED: &str = "www.bet365.com";
const ALLOWED: &str = "intranet.example.test";
/// curl's exit code for a timeout: what a silent drop would end in.
const CURL_TIMEOUT: i32 = 28;

fn curl_https(client: &Host, name: &str, family: &str) -> Output {
    Lab::command(client, "curl")
        .args(["--silent", "--show-error", "--insecure", family])
        .args(["--max-time", "10", "--output", "/dev/null"])
        .arg(format!("https://{name}/bytes-16384"))
        .output()
        .expect("curl runs")
}

#[test]
fn a_blocked_tls_site_fails_at_once_with_a_reset() {
    if !privileged("a_blocked_tls_site_fails_at_once_with_a_reset") {
        return;
    }
    let lab = Lab::up(&LabSpec {
        server_names: vec![BLOCKED.into(), ALLOWED.into()],
        ..LabSpec::default()
    })
    .expect("lab comes up");
    let _tls = TlsServer::start(&lab, &[BLOCKED.into(), ALLOWED.into()]).unwrap();
    let daemon = DaemonProcess::start(&classifier_bin(), &lab, &DaemonOptions::default()).unwrap();
    let client = &lab.clients[0];

    for family in ["--ipv4", "--ipv6"] {
        let allowed = curl_https(client, ALLOWED, family);
        assert!(
            allowed.status.success(),
            "{family} allowed: {}",
            String::from_utf8_lossy(&allowed.stderr)
        );
        let blocked = curl_https(client, BLOCKED, family);
        let stderr = String::from_utf8_lossy(&blocked.stderr);
        assert!(!blocked.status.success(), "{family}: gambling is blocked");
        assert_ne!(
            blocked.status.code(),
            Some(CURL_TIMEOUT),
            "{family}: not a timeout: {stderr}"
        );
        assert!(
            stderr.to_ascii_lowercase().contains("reset"),
            "{family}: curl saw the reset: {stderr}"
        );
    }
    // One reset per blocked flow: the client took the first one, so it never had to
    // retransmit its ClientHello into the block.
    let status = daemon.status().unwrap();
    assert_eq!(
        status
            .datapath
            .get(classifier_common::stats::Stat::ResetsSent),
        2,
        "{status:?}"
    );
    let blocked: Vec<SocketAddr> = daemon
        .flows()
        .unwrap()
        .into_iter()
        .filter(|f| f.verdict == "block")
        .map(|f| f.server)
        .collect();
    assert_eq!(blocked.len(), 2, "one blocked flow per family: {blocked:?}");
    daemon.stop().unwrap();
}

/// File sharing blocked at every hour, so the verdict does not depend on the clock.
const FILE_SHARING_BLOCKED: &str = r#"
[site]
name = "Lab"

[schedule]
default = "working"

[categories.file-sharing]
protocols = ["bittorrent"]

[[rules]]
description = "No file sharing"
categories = "file-sharing"
action = "block"
"#;

/// Sends a DHT query from a connected UDP socket in `client`'s namespace and returns the
/// error the socket then reports (bounded wait: `None` means nothing came back).
fn dht_query_error(client: &Host, server: SocketAddr) -> Option<ErrorKind> {
    netns::run_in(&client.netns, move || {
        let any: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let socket = UdpSocket::bind(any)?;
        socket.connect(server)?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        socket.send(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe")?;
        let mut buffer = [0u8; 1500];
        Ok(match socket.recv(&mut buffer) {
            Ok(_) => Some(ErrorKind::Other), // an answer: the query was not blocked
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => Some(e.kind()),
        })
    })
    .expect("the client's socket works")
}

#[test]
fn a_blocked_udp_flow_is_told_with_icmp_administratively_prohibited() {
    if !privileged("a_blocked_udp_flow_is_told_with_icmp_administratively_prohibited") {
        return;
    }
    let lab = Lab::up(&LabSpec::default()).expect("lab comes up");
    let policy_file = std::env::temp_dir().join(format!("classifier-policy-{}.toml", lab.id));
    std::fs::write(&policy_file, FILE_SHARING_BLOCKED).unwrap();
    let options = DaemonOptions {
        extra_args: vec!["--policy".into(), policy_file.display().to_string()],
        ..DaemonOptions::default()
    };
    let daemon = DaemonProcess::start(&classifier_bin(), &lab, &options).unwrap();
    let _ = std::fs::remove_file(&policy_file);
    let client = &lab.clients[0];

    // Linux reports ICMP "administratively prohibited" on a connected socket as "host
    // unreachable" (IPv4) and "permission denied" (ICMPv6).
    let v4 = dht_query_error(client, SocketAddr::new(SERVICE_V4.into(), 6881));
    assert_eq!(v4, Some(ErrorKind::HostUnreachable), "IPv4");
    let v6 = dht_query_error(client, SocketAddr::new(SERVICE_V6.into(), 6881));
    assert_eq!(v6, Some(ErrorKind::PermissionDenied), "IPv6");

    let status = daemon.status().unwrap();
    assert_eq!(
        status
            .datapath
            .get(classifier_common::stats::Stat::UnreachablesSent),
        2,
        "{status:?}"
    );
    daemon.stop().unwrap();
}

#[test]
fn a_block_rule_with_fail_fast_off_drops_silently() {
    if !privileged("a_block_rule_with_fail_fast_off_drops_silently") {
        return;
    }
    let lab = Lab::up(&LabSpec::default()).expect("lab comes up");
    let policy_file = std::env::temp_dir().join(format!("classifier-policy-{}.toml", lab.id));
    let silent = FILE_SHARING_BLOCKED.replace(
        "action = \"block\"",
        "action = \"block\"\nfail_fast = false",
    );
    assert_ne!(silent, FILE_SHARING_BLOCKED);
    std::fs::write(&policy_file, silent).unwrap();
    let options = DaemonOptions {
        extra_args: vec!["--policy".into(), policy_file.display().to_string()],
        ..DaemonOptions::default()
    };
    let daemon = DaemonProcess::start(&classifier_bin(), &lab, &options).unwrap();
    let _ = std::fs::remove_file(&policy_file);

    // Nothing comes back: the socket's read times out.
    let v4 = dht_query_error(&lab.clients[0], SocketAddr::new(SERVICE_V4.into(), 6881));
    assert_eq!(v4, None, "a silent drop");
    let status = daemon.status().unwrap();
    let stat = |s| status.datapath.get(s);
    use classifier_common::stats::Stat;
    assert_eq!(stat(Stat::UnreachablesSent), 0, "{status:?}");
    assert!(stat(Stat::Blocked) >= 1, "{status:?}");
    daemon.stop().unwrap();
}
