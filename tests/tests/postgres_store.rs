//! The flow store on a real PostgreSQL server: the retention job with an injected clock
//! (degradation reports pruned, the tables vacuumed), the degradation log, and the daemon
//! in the lab recording into it, read back with `classifier export` and compared with
//! tcpdump. Over TLS, a server of its own in a network namespace with `ssl=on`, a test CA
//! and `hostssl` lines only: each `sslmode` does what libpq's does, and a password in the
//! store's URL is never shown by the export, `degradation` or the daemon.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use classifier_lab::topology::SERVICE_V4;
use classifier_tests::{
    audit::AuditSandbox,
    capture::{self, Capture},
    classifier_bin,
    clients::curl_download,
    council_policy_with_short_idle,
    postgres::{Postgres, SERVER_NAME, TLS_DATABASE, TLS_PASSWORD, TestCa},
    privileged,
    samples::{degradation_report, youtube_flow},
    setup::{daemon_with_policy, http_lab},
};
use classifier_user::{
    degradation::IntervalReport,
    export::ExportRow,
    flows::{Counters, FlowRecord},
    netns,
    store::{
        EndReason, Filter, Store,
        retention::{AfterRetention, Retention},
    },
};

/// A flow from `client` that started at `started` with `down` bytes downloaded, on VLAN
/// 30, with ECH, some of it shaped, ended by a reset.
fn record(client: &str, started: &str, down: u64) -> FlowRecord {
    FlowRecord {
        download: Counters {
            packets: 9,
            bytes: down,
        },
        vlan: Some(30),
        ech: true,
        shaped: Counters {
            packets: 2,
            bytes: 200,
        },
        ended: Some(EndReason::Rst),
        ..youtube_flow(
            client.parse().unwrap(),
            "203.0.113.10:443".parse().unwrap(),
            started.parse().unwrap(),
        )
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
        // Behind NAT: the translated source, stored and selected by (schema 6).
        FlowRecord {
            public_source: Some("198.51.100.1:51234".parse().unwrap()),
            ..record("192.0.2.11:1001", "2025-09-01T10:00:00Z", 6000)
        },
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
    let who_was = |store: &mut Store, port: u16, at: &str| -> Vec<SocketAddr> {
        store
            .query(&Filter {
                public_addr: Some("198.51.100.1".parse().unwrap()),
                public_port: Some(port),
                at: Some(at.parse().unwrap()),
                ..Filter::default()
            })
            .unwrap()
            .iter()
            .map(|s| s.flow.client)
            .collect()
    };
    assert_eq!(
        who_was(&mut store, 51234, "2025-09-01T10:00:10Z"),
        ["192.0.2.11:1001".parse::<SocketAddr>().unwrap()]
    );
    assert!(who_was(&mut store, 51234, "2025-09-01T11:00:00Z").is_empty());
    assert!(who_was(&mut store, 51235, "2025-09-01T10:00:10Z").is_empty());

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

/// A 5-minute degradation report that ended at `end`, naming a top client.
fn report_ended(end: &str) -> IntervalReport {
    degradation_report(300, end.parse().unwrap())
}

#[test]
fn retention_prunes_degradation_and_vacuums_on_postgresql() {
    if !privileged("retention_prunes_degradation_and_vacuums_on_postgresql") {
        return;
    }
    let server = Postgres::start().expect("a PostgreSQL server starts");
    let mut store = Store::open(&server.connection()).unwrap();
    store
        .insert(&[
            record("192.0.2.10:1000", "2025-09-01T09:00:00Z", 4000),
            record("192.0.2.12:1002", "2026-11-30T09:00:00Z", 700),
        ])
        .unwrap();
    store
        .insert_degradation(&[
            report_ended("2026-08-01T10:00:00Z"),
            report_ended("2026-12-01T10:00:00Z"),
        ])
        .unwrap();
    let vacuums = |store: &mut Store, table: &str| match store {
        Store::Postgres(pg) => pg.vacuum_count(table).unwrap(),
        Store::Sqlite(_) => unreachable!("a PostgreSQL store"),
    };
    let before = (
        vacuums(&mut store, "flows"),
        vacuums(&mut store, "degradation"),
    );

    let now: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
    let report = store.apply_retention(&Retention::default(), now).unwrap();
    assert_eq!((report.deleted, report.degradation_deleted), (1, 1));
    let left = store.degradation(None, None, 100).unwrap();
    assert_eq!(left.len(), 1, "the report past 90 days is deleted");
    assert_eq!(left[0].end, "2026-12-01T10:00:00Z".parse().unwrap());

    // The deleted rows' pages were vacuumed by the job, not left to autovacuum.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = (
            vacuums(&mut store, "flows"),
            vacuums(&mut store, "degradation"),
        );
        if after.0 > before.0 && after.1 > before.1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no VACUUM after the retention job: {before:?} → {after:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The job recorded what it enforces: a reader leaves out what it would delete.
    let later: jiff::Timestamp = "2028-03-01T00:00:00Z".parse().unwrap();
    assert_eq!(store.query(&Filter::default()).unwrap().len(), 1);
    assert!(
        store
            .query_retained(&Filter::default(), later)
            .unwrap()
            .is_empty()
    );
}

/// `location` opened from inside `server`'s network namespace: whether the connection is
/// encrypted, or the error.
fn open_in(server: &Postgres, location: String) -> Result<bool, String> {
    let namespace = server.netns().expect("a TLS server").to_owned();
    netns::run_in(&namespace, move || {
        let mut store = Store::open(&location)?;
        let Store::Postgres(pg) = &mut store else {
            unreachable!("a PostgreSQL store")
        };
        let encrypted = pg.connection_encrypted()?;
        // The store works over it: migrated, written, read back.
        store.insert(&[record("192.0.2.10:1000", "2026-11-30T09:00:00Z", 4000)])?;
        anyhow::ensure!(!store.query(&Filter::default())?.is_empty());
        Ok(encrypted)
    })
    .map_err(|e| format!("{e:#}"))
}

#[test]
fn postgresql_over_tls_as_sslmode_says() {
    if !privileged("postgresql_over_tls_as_sslmode_says") {
        return;
    }
    let ca = TestCa::make().expect("a test CA (the openssl command)");
    let server = Postgres::start_tls(&ca).expect("a PostgreSQL server with TLS starts");
    let to = |host: &str, tls: &str| {
        format!(
            "host={host} hostaddr=127.0.0.1 port=5432 user=classifier dbname={TLS_DATABASE} \
             password={TLS_PASSWORD} {tls}"
        )
    };
    let ca_file = ca.ca.display().to_string();
    let other_ca = ca.other_ca.display().to_string();

    // verify-full with the CA that signed the server's certificate, for its name.
    assert_eq!(
        open_in(
            &server,
            to(
                SERVER_NAME,
                &format!("sslmode=verify-full sslrootcert={ca_file}")
            )
        ),
        Ok(true)
    );
    // Another name: verify-full refuses, verify-ca (the chain only) accepts.
    let wrong_name = open_in(
        &server,
        to(
            "other.example.test",
            &format!("sslmode=verify-full sslrootcert={ca_file}"),
        ),
    )
    .expect_err("verify-full to a name the certificate does not have");
    assert!(wrong_name.contains("not valid for name"), "{wrong_name}");
    assert_eq!(
        open_in(
            &server,
            to(
                "other.example.test",
                &format!("sslmode=verify-ca sslrootcert={ca_file}")
            )
        ),
        Ok(true)
    );
    // Another CA: refused, by verify-ca too, and by require given that CA.
    for mode in ["verify-full", "verify-ca", "require"] {
        let wrong_ca = open_in(
            &server,
            to(
                SERVER_NAME,
                &format!("sslmode={mode} sslrootcert={other_ca}"),
            ),
        )
        .expect_err("a server certificate of another CA");
        assert!(wrong_ca.contains("UnknownIssuer"), "{mode}: {wrong_ca}");
    }
    // require without a CA file: encrypted, the server unchecked (as libpq).
    assert_eq!(
        open_in(
            &server,
            to(
                SERVER_NAME,
                "sslmode=require sslrootcert=/nonexistent/root.crt"
            )
        ),
        Ok(true)
    );
    // disable: the server takes TCP only over TLS (hostssl), so it refuses.
    let plaintext = open_in(&server, to(SERVER_NAME, "sslmode=disable"))
        .expect_err("plaintext to a hostssl-only server");
    assert!(plaintext.contains("no encryption"), "{plaintext}");
    // The same as a URL, with prefer (the default) given the CA: encrypted and checked.
    let url = format!(
        "postgresql://classifier:{TLS_PASSWORD}@{SERVER_NAME}:5432/{TLS_DATABASE}\
         ?hostaddr=127.0.0.1&sslrootcert={ca_file}"
    );
    assert_eq!(open_in(&server, url), Ok(true));
}

#[test]
fn a_password_in_the_store_url_is_never_shown() {
    if !privileged("a_password_in_the_store_url_is_never_shown") {
        return;
    }
    let ca = TestCa::make().expect("a test CA (the openssl command)");
    let server = Postgres::start_tls(&ca).expect("a PostgreSQL server with TLS starts");
    let namespace = server.netns().unwrap().to_owned();
    let sandbox = AuditSandbox::with_syslog("postgres-password");
    let dir = sandbox.work_dir();
    let url = |query: &str| {
        format!(
            "postgresql://classifier:{TLS_PASSWORD}@{SERVER_NAME}:5432/{TLS_DATABASE}\
             ?hostaddr=127.0.0.1&{query}"
        )
    };
    // The real binary in the server's network namespace and the audit's sandbox, logging
    // everything it can.
    let classifier = |args: &[&str]| {
        let mut command = sandbox.classifier();
        in_network_namespace(&mut command, &namespace);
        let output = command
            .args(["--log", "trace"])
            .args(args)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !shown.contains(TLS_PASSWORD),
            "the password was shown by `classifier {}`:\n{shown}",
            args.join(" ")
        );
        (output.status.success(), shown)
    };
    let export = |store: &str, out: &str| {
        classifier(&[
            "export",
            "--case",
            "PG-TLS-1",
            "--requested-by",
            "J. Smith",
            "--format",
            "jsonl",
            "--store",
            store,
            "--out",
            dir.join(out).to_str().unwrap(),
        ])
    };
    let ca_file = ca.ca.display().to_string();
    let other_ca = ca.other_ca.display().to_string();
    for (query, says) in [
        ("sslmode=disable".to_owned(), "no encryption"),
        (
            format!("sslmode=verify-full&sslrootcert={other_ca}"),
            "UnknownIssuer",
        ),
        (
            "sslmode=verify-full&sslrootcert=/nonexistent/root.crt".to_owned(),
            "needs the CA certificate file",
        ),
        ("sslmode=bogus".to_owned(), "choose disable"),
    ] {
        let (ok, shown) = export(&url(&query), "refused.jsonl");
        assert!(!ok, "{query}: {shown}");
        assert!(shown.contains(says), "{query}: {shown}");
        assert!(
            shown.contains("classifier:…@"),
            "{query}: the store is named, without its password: {shown}"
        );
    }
    let good = url(&format!("sslmode=verify-full&sslrootcert={ca_file}"));
    let (ok, shown) = export(&good, "case.jsonl");
    assert!(ok, "{shown}");
    let (ok, shown) = classifier(&["degradation", "--store", &good]);
    assert!(ok, "{shown}");
    for file in [dir.join("case.jsonl"), sandbox.log()] {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains(TLS_PASSWORD), "{}: {text}", file.display());
    }
    let witnessed = sandbox.witnessed(1);
    assert!(!witnessed.contains(TLS_PASSWORD), "{witnessed}");

    // The daemon, on the namespace's loopback, logging at trace into a file: it names the
    // store it records into, without the password, and stops cleanly.
    let log_file = dir.join("daemon.log");
    let pid_file = dir.join("daemon.pid");
    let pin_dir = format!("/sys/fs/bpf/classifier-pgpw-{}", std::process::id());
    let child = Command::new(classifier_bin())
        .args([
            "--log", "trace", "run", "--netns", &namespace, "--iface", "lo",
        ])
        .args(["--pin-dir", &pin_dir])
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--control-socket")
        .arg(dir.join("control.sock"))
        .args(["--no-metrics", "--store", &good])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_file).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = Stopped::on_drop(child, pin_dir);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pid_file.exists() {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!(
                "classifier run exited ({status}): {}",
                std::fs::read_to_string(&log_file).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "classifier run did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = daemon.stop();
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(status.success(), "{log}");
    assert!(
        !log.contains(TLS_PASSWORD),
        "the daemon logged the password:\n{log}"
    );
    assert!(
        log.contains("recording ended flows") && log.contains("classifier:…@"),
        "{log}"
    );
}

/// A daemon started outside a lab: stopped (SIGTERM, then SIGKILL) and its pins removed
/// when dropped, also when the test fails first.
struct Stopped {
    child: std::process::Child,
    pin_dir: String,
}

impl Stopped {
    fn on_drop(child: std::process::Child, pin_dir: String) -> Self {
        Self { child, pin_dir }
    }

    /// SIGTERM, and how it exited (SIGKILL after 30 s).
    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().expect("the killed daemon reaped")
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// `command` runs in the network namespace `name`. Opened here, before the audit sandbox
/// hides /run/netns behind its own /run.
fn in_network_namespace(command: &mut Command, name: &str) {
    use std::os::unix::process::CommandExt as _;
    let namespace = std::fs::File::open(netns::path(name)).expect("the server's namespace");
    // SAFETY: between fork and exec the closure makes one system call on a descriptor
    // opened before the fork.
    unsafe {
        command.pre_exec(move || {
            nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
        });
    }
}
