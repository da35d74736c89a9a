//! Investigation exports and live IPFIX, end to end in the lab: real downloads cross the
//! gateway, the daemon records them, nfdump's `nfcapd` collects the live IPFIX and
//! `nfdump` reads it back; `classifier export` writes CSV, JSON Lines and an IPFIX file
//! that are read back too (the file by replaying it to a second nfcapd), each compared with
//! what tcpdump saw; the audit log verifies, and a tampered one does not.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use classifier_tests::{
    audit::AuditSandbox,
    capture::{self, Capture},
    clients::curl_download,
    council_policy_with_short_idle,
    nfdump::{Collector, NfFlow},
    privileged,
    setup::{daemon_with_policy, http_lab},
};
use classifier_user::{
    export::ExportRow,
    flows::Counters,
    lab::{Lab, topology::SERVICE_V4},
    store::{Filter, FlowStore},
};

const HTTP_PORT: u16 = 80;
const SERVER_NAME: &str = "downloads.example.test";
/// Inside the gateway's namespace: the daemon's live export goes to loopback there.
const LIVE_COLLECTOR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4739);
const REPLAY_COLLECTOR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4740);
/// Two downloads: client port and body size.
const DOWNLOADS: [(u16, u64); 2] = [(40021, 300_000), (40022, 120_000)];

#[test]
fn exports_and_live_ipfix_read_back_with_the_bytes_that_crossed_the_wire() {
    if !privileged("exports_and_live_ipfix_read_back_with_the_bytes_that_crossed_the_wire") {
        return;
    }
    let (lab, _http) = http_lab(SERVER_NAME);
    let data = lab.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    let collector = Collector::start(&lab.gateway, LIVE_COLLECTOR, &data.join("live")).unwrap();
    let policy = council_policy_with_short_idle(&format!(
        "[export]\nipfix_collector = \"{LIVE_COLLECTOR}\"\n"
    ));
    let daemon = daemon_with_policy(&lab, &policy, None);

    let client = &lab.clients[0];
    let capture = Capture::start(client, "tcp port 40021 or tcp port 40022").unwrap();
    for (port, len) in DOWNLOADS {
        curl_download(client, SERVER_NAME, SERVICE_V4.into(), port, len);
    }
    std::thread::sleep(Duration::from_millis(500));
    let captured = capture.finish().unwrap();
    let server = SocketAddr::new(SERVICE_V4.into(), HTTP_PORT);
    let wire: Vec<(SocketAddr, Counters, Counters)> = DOWNLOADS
        .iter()
        .map(|(port, _)| {
            let client_addr = SocketAddr::new(client.ipv4.into(), *port);
            let (up, down) = capture::tally(&captured, client_addr, server);
            (client_addr, up, down)
        })
        .collect();

    wait_until_recorded(&lab.store_path(), &wire);
    let status = daemon.stop().unwrap();
    assert!(status.success(), "daemon exit: {status}");

    // Live IPFIX, as nfdump reads it: one record each way per flow, tcpdump's counts.
    let live = collector.finish().unwrap();
    check_ipfix(&live, &wire, server, "live IPFIX");

    // Investigation exports, audited in a log of the test's (and a syslog socket).
    let sandbox = AuditSandbox::with_syslog("lab-exports");
    let audit_log = sandbox.log();
    let store = lab.store_path();
    let export = |extra: &[&str]| {
        let mut command = sandbox.classifier();
        command.arg("export").arg("--store").arg(&store).args(extra);
        command.output().unwrap()
    };
    let client_ip = client.ipv4.to_string();
    let csv_out = data.join("case-1.csv");
    succeeded(&export(&[
        "--case",
        "HR-2026-001",
        "--requested-by",
        "J. Smith",
        "--client",
        &client_ip,
        "--format",
        "csv",
        "--out",
        csv_out.to_str().unwrap(),
    ]));
    let rows: Vec<ExportRow> = csv::Reader::from_path(&csv_out)
        .unwrap()
        .deserialize()
        .collect::<Result<_, _>>()
        .unwrap();
    check_rows(&rows, &wire, "CSV");

    let jsonl_out = data.join("case-2.jsonl");
    succeeded(&export(&[
        "--case",
        "HR-2026-002",
        "--requested-by",
        "J. Smith",
        "--category",
        "uncategorized",
        "--format",
        "jsonl",
        "--out",
        jsonl_out.to_str().unwrap(),
    ]));
    let rows: Vec<ExportRow> = std::fs::read_to_string(&jsonl_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    check_rows(&rows, &wire, "JSON Lines");
    // The store holds what the export says it does.
    let stored = FlowStore::open(&store)
        .unwrap()
        .query(&Filter::default())
        .unwrap();
    assert!(stored.len() >= rows.len());

    // The IPFIX file, replayed message by message to a second nfcapd.
    let ipfix_out = data.join("case-3.ipfix");
    succeeded(&export(&[
        "--case",
        "HR-2026-003",
        "--requested-by",
        "J. Smith",
        "--client",
        &client_ip,
        "--format",
        "ipfix",
        "--out",
        ipfix_out.to_str().unwrap(),
    ]));
    let replay = Collector::start(&lab.gateway, REPLAY_COLLECTOR, &data.join("replay")).unwrap();
    replay_messages(&lab, &std::fs::read(&ipfix_out).unwrap(), REPLAY_COLLECTOR);
    check_ipfix(&replay.finish().unwrap(), &wire, server, "IPFIX file");

    // Refusals: no case, no requester, an existing file. Nothing is written or audited.
    let no_case = export(&[
        "--requested-by",
        "J. Smith",
        "--format",
        "csv",
        "--out",
        "/tmp/x",
    ]);
    assert!(!no_case.status.success());
    assert!(String::from_utf8_lossy(&no_case.stderr).contains("--case"));
    let blank_case = export(&[
        "--case",
        " ",
        "--requested-by",
        "J. Smith",
        "--format",
        "csv",
        "--out",
        data.join("blank.csv").to_str().unwrap(),
    ]);
    assert!(!blank_case.status.success());
    assert!(String::from_utf8_lossy(&blank_case.stderr).contains("case reference"));
    let again = export(&[
        "--case",
        "HR-2026-004",
        "--requested-by",
        "J. Smith",
        "--format",
        "csv",
        "--out",
        csv_out.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));

    // The audit log: three exports, chained; a changed row count is found.
    let verify = || sandbox.verify(&["--no-journal"]);
    let verified = succeeded(&verify());
    assert!(verified.contains("3 entries, chain intact"), "{verified}");
    let text = std::fs::read_to_string(&audit_log).unwrap();
    assert!(
        text.contains("\"case\":\"HR-2026-002\"") && text.contains("\"requested_by\":\"J. Smith\"")
    );
    let tampered = text.replacen("\"rows\":2", "\"rows\":1", 1);
    assert_ne!(tampered, text, "the log has row counts to change: {text}");
    std::fs::write(&audit_log, tampered).unwrap();
    let refused = verify();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("does NOT verify") && message.contains("line 1"),
        "{message}"
    );
}

/// Waits (bounded) until the store has a record for each flow of `wire`.
fn wait_until_recorded(store: &Path, wire: &[(SocketAddr, Counters, Counters)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(store) = FlowStore::open(store) {
            let stored = store.query(&Filter::default()).unwrap();
            if wire
                .iter()
                .all(|(c, _, _)| stored.iter().any(|s| s.flow.client == *c))
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the flows were not recorded within 30 s");
}

/// Each flow of `wire` is in `flows` as two records, upload and download, with tcpdump's
/// packets and bytes.
fn check_ipfix(
    flows: &[NfFlow],
    wire: &[(SocketAddr, Counters, Counters)],
    server: SocketAddr,
    what: &str,
) {
    for (client, up, down) in wire {
        let upload: Vec<_> = flows
            .iter()
            .filter(|f| f.src == *client && f.dst == server)
            .collect();
        let download: Vec<_> = flows
            .iter()
            .filter(|f| f.src == server && f.dst == *client)
            .collect();
        assert_eq!(
            upload.len(),
            1,
            "{what}: one upload record for {client} in {flows:#?}"
        );
        assert_eq!(
            download.len(),
            1,
            "{what}: one download record for {client} in {flows:#?}"
        );
        assert_eq!(
            (upload[0].packets, upload[0].bytes),
            (up.packets, up.bytes),
            "{what}: {client} upload"
        );
        assert_eq!(
            (download[0].packets, download[0].bytes),
            (down.packets, down.bytes),
            "{what}: {client} download"
        );
        assert_eq!(upload[0].protocol, 6);
    }
}

/// Each flow of `wire` is one row with tcpdump's counts, its name and why it ended.
fn check_rows(rows: &[ExportRow], wire: &[(SocketAddr, Counters, Counters)], what: &str) {
    for (client, up, down) in wire {
        let row: Vec<_> = rows
            .iter()
            .filter(|r| r.client == client.ip().to_string() && r.client_port == client.port())
            .collect();
        assert_eq!(row.len(), 1, "{what}: one row for {client} in {rows:#?}");
        let row = row[0];
        assert_eq!(
            (row.up_packets, row.up_bytes),
            (up.packets, up.bytes),
            "{what}: {client}"
        );
        assert_eq!(
            (row.down_packets, row.down_bytes),
            (down.packets, down.bytes),
            "{what}: {client}"
        );
        assert_eq!(row.name, SERVER_NAME);
        assert_eq!(row.end_reason, "fin");
        assert_eq!(row.category, "uncategorized");
    }
}

/// Sends the IPFIX messages in `file` (each says its length) to `collector` from inside
/// the gateway's namespace.
fn replay_messages(lab: &Lab, file: &[u8], collector: SocketAddr) {
    let mut messages = Vec::new();
    let mut at = 0;
    while at + 4 <= file.len() {
        let length = u16::from_be_bytes([file[at + 2], file[at + 3]]) as usize;
        assert!(
            length >= 16 && at + length <= file.len(),
            "a message of {length} bytes at {at}"
        );
        messages.push(file[at..at + length].to_vec());
        at += length;
    }
    assert_eq!(at, file.len(), "the file is whole messages");
    classifier_user::netns::run_in(&lab.gateway.netns, move || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        for message in &messages {
            socket.send_to(message, collector)?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
}

/// The command's stdout, after checking it succeeded.
fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
