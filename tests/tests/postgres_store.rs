//! The flow store on a real PostgreSQL server: the retention job with an injected clock,
//! the degradation log, and the daemon in the lab recording into it, read back with
//! `classifier export` and compared with tcpdump.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use classifier_tests::{
    audit::AuditSandbox,
    capture::{self, Capture},
    clients::curl_download,
    council_policy_with_short_idle,
    postgres::Postgres,
    privileged,
    setup::{daemon_with_policy, http_lab},
};
use classifier_user::{
    export::ExportRow,
    flows::{Counters, FlowRecord},
    lab::topology::SERVICE_V4,
    store::{
        EndReason, Filter, Store,
        retention::{AfterRetention, Retention},
    },
};

fn record(client: &str, started: &str, down: u64) -> FlowRecord {
    let first_seen: jiff::Timestamp = started.parse().unwrap();
    FlowRecord {
        client: client.parse().unwrap(),
        client_mac: Some("02:00:00:00:00:0a".into()),
        server: "203.0.113.10:443".parse().unwrap(),
        protocol: "tcp".into(),
        upload: Counters {
            packets: 3,
            bytes: 300,
        },
        download: Counters {
            packets: 9,
            bytes: down,
        },
        first_seen,
        last_seen: first_seen + jiff::SignedDuration::from_secs(30),
        vlan: Some(30),
        server_initiated: false,
        name: Some("www.youtube.com".into()),
        category: "streaming-video".into(),
        app: "youtube".into(),
        method: "sni".into(),
        ech: true,
        unreadable: false,
        evasion: Vec::new(),
        second_name: None,
        second_category: None,
        group: "staff".into(),
        verdict: "shape".into(),
        blocked: Counters::default(),
        shaped: Counters {
            packets: 2,
            bytes: 200,
        },
        ended: Some(EndReason::Rst),
    }
}

#[test]
fn records_and_retention_on_postgresql() {
    if !privileged("records_and_retention_on_postgresql") {
        return;
    }
    let server = Postgres::start().expect("a PostgreSQL server starts");
    let mut store = Store::open(&server.connection()).unwrap();
    let flows = [
        record("192.0.2.10:1000", "2025-09-01T09:00:00Z", 4000),
        record("192.0.2.11:1001", "2025-09-01T10:00:00Z", 6000),
        record("192.0.2.12:1002", "2026-11-30T09:00:00Z", 700),
    ];
    store.insert(&flows).unwrap();
    // Reopened: migrations are not applied twice; the records read back whole.
    let mut store = Store::open(&server.connection()).unwrap();
    let stored = store.query(&Filter::default()).unwrap();
    let read: Vec<FlowRecord> = stored.iter().map(|s| s.flow.clone()).collect();
    assert_eq!(read, flows);
    let client_12 = Filter {
        client: Some("192.0.2.12".parse().unwrap()),
        ..Filter::default()
    };
    assert_eq!(store.query(&client_12).unwrap().len(), 1);

    // Anonymise at an injected "now" 14 months after the old ones, then delete.
    let now: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
    let anonymise = Retention {
        after: AfterRetention::Anonymise,
        ..Retention::default()
    };
    assert_eq!(
        store.apply_retention(&anonymise, now).unwrap().anonymised,
        2
    );
    let after = store.query(&Filter::default()).unwrap();
    assert!(
        after[..2]
            .iter()
            .all(|s| s.anonymised && s.flow.client.port() == 0 && s.flow.client_mac.is_none())
    );
    assert!(!after[2].anonymised);
    assert_eq!(
        store
            .apply_retention(&Retention::default(), now)
            .unwrap()
            .deleted,
        2
    );
    assert_eq!(store.count().unwrap(), 1);
    if let Store::Postgres(pg) = &mut store {
        assert_eq!(
            pg.daily_flows().unwrap(),
            2,
            "deleted records live on in the daily totals"
        );
    }
}

#[test]
fn the_daemon_records_into_postgresql_and_export_reads_it_back() {
    if !privileged("the_daemon_records_into_postgresql_and_export_reads_it_back") {
        return;
    }
    const NAME: &str = "downloads.example.test";
    let server = Postgres::start().expect("a PostgreSQL server starts");
    let (lab, _http) = http_lab(NAME);
    let daemon = daemon_with_policy(
        &lab,
        &council_policy_with_short_idle(""),
        Some(server.connection()),
    );
    let client = &lab.clients[0];
    let capture = Capture::start(client, "tcp port 40041").unwrap();
    curl_download(client, NAME, SERVICE_V4.into(), 40041, 250_000);
    std::thread::sleep(Duration::from_millis(500));
    let captured = capture.finish().unwrap();
    let client_addr = SocketAddr::new(client.ipv4.into(), 40041);
    let (up, down) = capture::tally(
        &captured,
        client_addr,
        SocketAddr::new(SERVICE_V4.into(), 80),
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut store = Store::open(&server.connection()).unwrap();
    while Instant::now() < deadline
        && !store
            .query(&Filter::default())
            .unwrap()
            .iter()
            .any(|s| s.flow.client == client_addr)
    {
        std::thread::sleep(Duration::from_millis(250));
    }
    daemon.stop().unwrap();

    let out = lab.data_dir().join("case.jsonl");
    // The export's audit entry goes to the fixed log: here a private one (see
    // classifier_tests::audit).
    let sandbox = AuditSandbox::with_syslog("postgres_export");
    let output = sandbox
        .classifier()
        .args([
            "export",
            "--case",
            "PG-1",
            "--requested-by",
            "J. Smith",
            "--format",
            "jsonl",
        ])
        .args([
            "--client",
            &client.ipv4.to_string(),
            "--store",
            &server.connection(),
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<ExportRow> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = rows
        .iter()
        .find(|r| r.client_port == 40041)
        .unwrap_or_else(|| panic!("the download in {rows:#?}"));
    assert_eq!((row.up_packets, row.up_bytes), (up.packets, up.bytes));
    assert_eq!(
        (row.down_packets, row.down_bytes),
        (down.packets, down.bytes)
    );
    assert_eq!(row.name, NAME);
    assert_eq!(row.end_reason, "fin");
}
