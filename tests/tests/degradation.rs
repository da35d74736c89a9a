//! The bandwidth-degradation log and `/metrics`, end to end: a shaped streaming download
//! crosses the lab gateway; the degradation log (read with `classifier degradation`) shows
//! the shape rule saturated, streaming above its share, the client on top and the bytes
//! withheld; Prometheus' `/metrics` (fetched with curl) counts exactly the bytes the flow's
//! record has, passes `promtool check metrics`, and reports a refused policy reload; the
//! Grafana dashboard's queries name only what it exports, per gateway. `classifier
//! degradation` on a store no daemon touched shows nothing the retention should have
//! removed.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use classifier_lab::{Lab, topology::SERVICE_V4};
use classifier_tests::{
    classifier_bin,
    clients::curl_download,
    privileged,
    samples::degradation_report,
    setup::{daemon_with_policy, http_lab},
};
use classifier_user::{
    degradation::{Event, IntervalReport},
    store::{
        Filter, FlowStore, Store, StoredFlow,
        retention::{AfterRetention, Retention},
    },
};

const NAME: &str = "video.example.test";
const CLIENT_PORT: u16 = 40031;
/// 6 MB at 8 Mbit/s: six seconds, so whole 2 s intervals run at the rule's rate.
const BODY: u64 = 6_000_000;

const POLICY: &str = r#"
[site]
name = "Degradation lab"

[schedule]
default = "working"

[categories.streaming-video]
domains = ["video.example.test"]

[[rules]]
description = "Video: 8 Mbit/s for everyone together"
categories = "streaming-video"
action = "shape"
rate = "8mbit"

[records]
idle_timeout = "3s"

[degradation]
intervals = ["2s", "10s"]
alert_share = 0.5
"#;

#[test]
fn a_saturated_shape_rule_and_streaming_share_are_logged_and_metrics_count_the_bytes() {
    if !privileged(
        "a_saturated_shape_rule_and_streaming_share_are_logged_and_metrics_count_the_bytes",
    ) {
        return;
    }
    let (lab, _http) = http_lab(NAME);
    let daemon = daemon_with_policy(&lab, POLICY, None);
    let client = &lab.clients[0];
    curl_download(client, NAME, SERVICE_V4.into(), CLIENT_PORT, BODY);

    let record = wait_for_record(&lab);
    assert_eq!(record.flow.verdict, "shape");
    assert!(record.flow.shaped.bytes > BODY, "{record:?}");
    // Two more walks, so the intervals holding the flow's end have closed.
    std::thread::sleep(Duration::from_secs(5));

    // /metrics: the flow's bytes, exactly, under its category; the shaped bytes withheld.
    let metrics = fetch_metrics(&lab);
    let download = metric(
        &metrics,
        r#"classifier_traffic_bytes_total{category="streaming-video",direction="download",group="default"}"#,
    );
    assert_eq!(download, record.flow.download.bytes, "{metrics}");
    let upload = metric(
        &metrics,
        r#"classifier_traffic_bytes_total{category="streaming-video",direction="upload",group="default"}"#,
    );
    assert_eq!(upload, record.flow.upload.bytes);
    let throttled = metric(
        &metrics,
        r#"classifier_withheld_bytes_total{category="streaming-video",group="default",how="throttled"}"#,
    );
    assert_eq!(throttled, record.flow.shaped.bytes);
    assert!(
        metric(&metrics, "classifier_datapath_packets_total") > 0,
        "{metrics}"
    );
    assert!(
        metrics.contains("classifier_interval_throughput_bytes_per_second{"),
        "{metrics}"
    );
    assert!(metric(&metrics, "classifier_flows_ended_total") >= 1);
    assert_eq!(
        metric(&metrics, "classifier_policy_last_reload_successful"),
        1
    );
    assert!(metrics.contains(&format!(
        "classifier_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(metrics.contains("classifier_xdp_mode{interface=\"lan0\",mode="));
    promtool_check(&metrics);
    // Grafana's dashboard asks only for what this daemon exports, per gateway.
    let dashboard = std::fs::read_to_string(classifier_tests::dashboard::DASHBOARD).unwrap();
    assert_eq!(
        classifier_tests::dashboard::problems(&dashboard, &metrics),
        Vec::<String>::new(),
        "docs/grafana-dashboard.json against\n{metrics}"
    );

    // A policy file that does not load: refused, the old one stays, and /metrics says so.
    let started = metric(
        &metrics,
        "classifier_policy_last_reload_success_timestamp_seconds",
    );
    std::fs::write(lab.data_dir().join("policy.toml"), "[site\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let refused = wait_for_metric(&lab, "classifier_policy_last_reload_successful", 0);
    assert!(
        metric(&refused, "classifier_policy_last_reload_timestamp_seconds") >= started,
        "{refused}"
    );
    assert_eq!(
        metric(
            &refused,
            "classifier_policy_last_reload_success_timestamp_seconds"
        ),
        started
    );
    promtool_check(&refused);
    daemon.stop().unwrap();

    // The log, as `classifier degradation --json` prints it.
    let output = Command::new(classifier_bin())
        .args([
            "degradation",
            "--json",
            "--interval",
            "2s",
            "--last",
            "100",
            "--store",
        ])
        .arg(lab.store_path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports: Vec<IntervalReport> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(reports.len() >= 3, "{reports:#?}");
    let logged_download: u64 = reports
        .iter()
        .flat_map(|r| &r.by_category)
        .filter(|s| s.name == "streaming-video")
        .map(|s| s.bytes)
        .sum();
    assert_eq!(
        logged_download,
        record.flow.download.bytes + record.flow.upload.bytes
    );
    let saturated = reports.iter().filter(|r| {
        r.events.iter().any(|e| {
            matches!(e, Event::RuleSaturated { rule, rate_bps: 8_000_000, .. } if rule.starts_with("rule 1:"))
        })
    });
    assert!(
        saturated.count() >= 1,
        "a 2 s interval at the rule's rate: {reports:#?}"
    );
    let busy = reports
        .iter()
        .find(|r| r.events.iter().any(|e| matches!(e, Event::ShareExceeded { category, .. } if category == "streaming-video")))
        .unwrap_or_else(|| panic!("streaming took the link: {reports:#?}"));
    assert_eq!(
        busy.top_clients[0].client,
        std::net::IpAddr::from(client.ipv4)
    );
    assert!(
        busy.withheld
            .iter()
            .any(|w| w.rule.starts_with("rule 1:") && w.throttled_bytes > 0)
    );
    // The human form names the same.
    let text = Command::new(classifier_bin())
        .args(["degradation", "--events", "--store"])
        .arg(lab.store_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("EVENT") && text.contains("rule-saturated"),
        "{text}"
    );
}

/// Waits (bounded) for the download's record in the store.
fn wait_for_record(lab: &Lab) -> StoredFlow {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(store) = FlowStore::open(&lab.store_path())
            && let Some(found) = store
                .query(&Filter::default())
                .unwrap()
                .into_iter()
                .find(|s| s.flow.client.port() == CLIENT_PORT)
        {
            return found;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the download was not recorded within 30 s");
}

/// `/metrics` of the daemon in the gateway's namespace, fetched with curl.
fn fetch_metrics(lab: &Lab) -> String {
    let output = Lab::command(&lab.gateway, "curl")
        .args(["--silent", "--show-error", "--max-time", "5"])
        .arg(format!(
            "http://{}/metrics",
            classifier_user::metrics::prometheus::DEFAULT_LISTEN
        ))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Fetches `/metrics` until `series` has `value` (bounded), and returns that text.
fn wait_for_metric(lab: &Lab, series: &str, value: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fetch_metrics(lab);
        if metric(&text, series) == value {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} not {value} within 10 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `promtool check metrics` (Prometheus' own linter) on `text`: it must find nothing.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (apt install prometheus; `cargo xtask setup` does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n{text}",
        output.status
    );
}

/// The value of the sample named exactly `series` (name and labels).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .map(|v| v.trim().parse::<f64>().unwrap() as u64)
        })
        .unwrap_or_else(|| panic!("no `{series}` in\n{text}"))
}

/// A 10 s report that ended `days` ago, naming one top client.
fn aged_report(days: i64) -> IntervalReport {
    degradation_report(
        10,
        jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days),
    )
}

/// `classifier degradation` never shows what the retention should have removed, whether
/// or not the daemon's job has run: the real binary on a real SQLite file no daemon
/// touched. No privilege needed.
#[test]
fn degradation_reports_past_their_retention_are_never_shown() {
    let dir = Scratch::new("degradation-retention");
    let store = dir.0.join("flows.sqlite");
    // 500 days old (past 14 months), 100 days old (past the reports' 90 days), 40 days
    // old, 1 day old.
    FlowStore::open(&store)
        .unwrap()
        .insert_degradation(&[
            aged_report(500),
            aged_report(100),
            aged_report(40),
            aged_report(1),
        ])
        .unwrap();
    let shown = |last: &str| -> Vec<IntervalReport> {
        let output = Command::new(classifier_bin())
            .args(["degradation", "--json", "--last", last, "--store"])
            .arg(&store)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let age_in_days = |reports: &[IntervalReport]| -> Vec<i64> {
        let now = jiff::Timestamp::now();
        reports
            .iter()
            .map(|r| now.duration_since(r.end).as_secs() / 86_400)
            .collect()
    };

    // No retention recorded: the built-in 90 days for reports, 14 months for clients.
    let reports = shown("100");
    assert_eq!(age_in_days(&reports), [40, 1], "{reports:#?}");
    assert!(reports.iter().all(|r| r.top_clients.len() == 1));

    // A daemon whose records keep clients 30 days, reports 365 days, recorded that (its
    // job ran long ago, removing nothing from these): the 100-day-old report is shown
    // again, and the reports past 30 days without their client.
    let long_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 1000);
    let retention = Retention {
        keep: jiff::Span::new().days(30),
        after: AfterRetention::Delete,
        degradation_keep: jiff::Span::new().days(365),
    };
    Store::open(store.to_str().unwrap())
        .unwrap()
        .apply_retention(&retention, long_ago)
        .unwrap();
    let reports = shown("100");
    assert_eq!(age_in_days(&reports), [100, 40, 1], "{reports:#?}");
    let clients: Vec<usize> = reports.iter().map(|r| r.top_clients.len()).collect();
    assert_eq!(clients, [0, 0, 1]);
    // Nothing was removed from the store by reading it.
    assert_eq!(
        FlowStore::open(&store)
            .unwrap()
            .degradation(None, None, 100)
            .unwrap()
            .len(),
        4
    );
}

/// A scratch directory removed at the end, also on failure.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("classifier-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
