//! Fail-fast in the lab: a real client (curl) visiting a blocked site over TLS is answered
//! with a TCP reset by the gateway and fails at once with "connection reset", not after a
//! timeout; an allowed site on the same server completes.

use std::{net::SocketAddr, process::Output};

use classifier_tests::{classifier_bin, privileged};
use classifier_user::lab::{
    Host, Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
    tls::TlsServer,
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
