//! Shaping in the lab, with real TCP flows (iperf3, curl) through the gateway and the real
//! daemon making its HTB classes: shaped downloads and uploads run near their rate while
//! an unshaped flow beside them is not slowed; a shared rate is shared between clients and
//! a per-client rate is each client's; the short-clip allowance lets the first bytes
//! through at full speed, and the time allowance the first minutes of use; the end of
//! working hours lifts the limit on a running flow.
//!
//! Rates are measured by iperf3 on the receiving side. Bounds are generous (these machines
//! are shared): HTB itself is accurate to a few percent.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use classifier_lab::{
    Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
    http::HttpServer,
    topology::SERVICE_V4,
};
use classifier_tests::{
    classifier_bin,
    iperf::{self, Measured, Way},
    privileged,
    tc::TcAttach,
};

/// iperf3 ports and the categories the policies below give them. An iperf3 server runs
/// one test at a time: a second client uses the port 10 up.
const SHARED_PORT: u16 = 5201;
const PER_CLIENT_PORT: u16 = 5202;
const UNSHAPED_PORT: u16 = 5209;
const SECOND_CLIENT: u16 = 10;

/// 4 Mbit/s, as the policies write it.
const RATE_BPS: f64 = 4_000_000.0;

fn always_working(rules: &str) -> String {
    format!(
        r#"
[site]
name = "Shaping lab"

[schedule]
default = "working"

[categories.bulk-shared]
ports = ["tcp/{SHARED_PORT}", "tcp/{shared_2}"]
[categories.bulk-per-client]
ports = ["tcp/{PER_CLIENT_PORT}", "tcp/{per_client_2}"]
[categories.clips]
domains = ["clips.example.test"]
{rules}"#,
        shared_2 = SHARED_PORT + SECOND_CLIENT,
        per_client_2 = PER_CLIENT_PORT + SECOND_CLIENT,
    )
}

const SHAPE_RULES: &str = r#"
[[rules]]
description = "Bulk: 4 Mbit/s for everyone together"
categories = "bulk-shared"
action = "shape"
rate = "4mbit"
[[rules]]
description = "Bulk: 4 Mbit/s each"
categories = "bulk-per-client"
action = "shape"
rate = "4mbit"
share = "per-client"
"#;

/// A lab, a policy file and the daemon running it.
struct Setup {
    lab: Lab,
    policy_file: PathBuf,
    daemon: Option<DaemonProcess>,
}

/// The gateway as the shaping tests run on it: routing the clients' addresses, or
/// masquerading them on the WAN (uploads then reach the WAN's TC translated, and are
/// shaped by the flow the NAT hand-over names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gateway {
    Routed,
    Nat,
}

impl Setup {
    fn new(policy: &str, clients: usize) -> Self {
        Self::on(Gateway::Routed, policy, clients, TcAttach::Tcx)
    }

    /// [`Setup::new`] on a `gateway` that routes or translates, with the TC programs
    /// attached the way `tc_attach` says.
    fn on(gateway: Gateway, policy: &str, clients: usize, tc_attach: TcAttach) -> Self {
        let lab = Lab::up(&LabSpec {
            clients,
            server_names: vec!["clips.example.test".into()],
            nat: gateway == Gateway::Nat,
            ..LabSpec::default()
        })
        .expect("lab comes up");
        let policy_file = std::env::temp_dir().join(format!("classifier-shaping-{}.toml", lab.id));
        std::fs::write(&policy_file, policy).unwrap();
        let mut extra_args = tc_attach.args();
        extra_args.extend(["--policy".into(), policy_file.display().to_string()]);
        let options = DaemonOptions {
            extra_args,
            ..DaemonOptions::default()
        };
        let daemon =
            DaemonProcess::start(&classifier_bin(), &lab, &options).expect("daemon starts");
        Self {
            lab,
            policy_file,
            daemon: Some(daemon),
        }
    }

    fn daemon(&self) -> &DaemonProcess {
        self.daemon.as_ref().expect("running")
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            let _ = daemon.stop();
        }
        let _ = std::fs::remove_file(&self.policy_file);
    }
}

/// What the server host received came from the gateway's WAN address only: tcpdump on
/// the server, and the gateway's conntrack table, show the translation really happened.
fn assert_server_saw_only_the_gateway(lab: &Lab) {
    use classifier_lab::topology::GATEWAY_WAN_V4;
    let capture = classifier_tests::capture::Capture::start_on(
        &lab.server,
        "eth0",
        // Connections' first packets only: a full-speed upload's would overflow tcpdump.
        "tcp[tcpflags] & tcp-syn != 0",
    )
    .unwrap();
    let client = &lab.clients[0];
    let run = iperf::start(client, SERVICE_V4, UNSHAPED_PORT, Way::Upload, 1, 1000);
    run.finish();
    let packets = capture.finish().unwrap();
    assert!(!packets.is_empty(), "the server saw the connections open");
    let sources: std::collections::BTreeSet<std::net::IpAddr> = packets
        .iter()
        .filter(|p| p.dst.ip() == std::net::IpAddr::from(SERVICE_V4))
        .map(|p| p.src.ip())
        .collect();
    assert_eq!(
        sources.into_iter().collect::<Vec<_>>(),
        [std::net::IpAddr::from(GATEWAY_WAN_V4)],
        "the server saw uploads only from the gateway's WAN address"
    );
    let conntrack = Lab::command(&lab.gateway, "conntrack")
        .args(["-L", "-p", "tcp", "--src-nat"])
        .output()
        .expect("conntrack runs");
    let listed = String::from_utf8_lossy(&conntrack.stdout);
    assert!(
        listed.contains(&format!("src={}", client.ipv4))
            && listed.contains(&format!("dst={GATEWAY_WAN_V4}")),
        "conntrack shows the client's connections translated: {listed}{}",
        String::from_utf8_lossy(&conntrack.stderr)
    );
}

fn assert_near_rate(measured: &Measured, rate: f64, what: &str) {
    assert_ratio_within(measured, rate, 0.7..=1.15, what);
}

fn assert_ratio_within(
    measured: &Measured,
    rate: f64,
    bounds: std::ops::RangeInclusive<f64>,
    what: &str,
) {
    let ratio = measured.bits_per_second / rate;
    eprintln!(
        "{what}: {:.2} Mbit/s, {ratio:.3} of the rate",
        measured.bits_per_second / 1e6
    );
    assert!(
        bounds.contains(&ratio),
        "{what}: {:.2} Mbit/s for a {:.2} Mbit/s rate (ratio {ratio:.2})",
        measured.bits_per_second / 1e6,
        rate / 1e6
    );
}

#[test]
fn shaped_flows_run_near_their_rate_and_an_unshaped_one_beside_them_is_not_slowed() {
    if !privileged("shaped_flows_run_near_their_rate_and_an_unshaped_one_beside_them_is_not_slowed")
    {
        return;
    }
    shaped_flows_run_near_their_rate(Gateway::Routed, TcAttach::Tcx);
}

#[test]
fn behind_nat_shaped_flows_run_near_their_rate_uploads_too() {
    if !privileged("behind_nat_shaped_flows_run_near_their_rate_uploads_too") {
        return;
    }
    shaped_flows_run_near_their_rate(Gateway::Nat, TcAttach::Tcx);
}

/// The same with the TC programs as clsact filters (kernels before 6.6): the priority a
/// clsact egress filter sets is read by HTB as TCX's is.
#[test]
fn shaped_flows_run_near_their_rate_on_clsact_filters() {
    if !privileged("shaped_flows_run_near_their_rate_on_clsact_filters") {
        return;
    }
    shaped_flows_run_near_their_rate(Gateway::Routed, TcAttach::Netlink);
}

/// Behind NAT on clsact filters: the NAT hand-over's filter must run before the fail-fast
/// answers' filter on the LAN's ingress (whose verdict ends the hook's filters).
#[test]
fn behind_nat_on_clsact_filters_uploads_are_shaped_too() {
    if !privileged("behind_nat_on_clsact_filters_uploads_are_shaped_too") {
        return;
    }
    shaped_flows_run_near_their_rate(Gateway::Nat, TcAttach::Netlink);
}

fn shaped_flows_run_near_their_rate(gateway: Gateway, tc_attach: TcAttach) {
    let setup = Setup::on(gateway, &always_working(SHAPE_RULES), 2, tc_attach);
    let lab = &setup.lab;
    for port in [SHARED_PORT, UNSHAPED_PORT] {
        iperf::serve(lab, port);
    }
    let status = setup.daemon().status().unwrap();
    assert_eq!(status.shaping.method, "htb");
    assert_eq!(status.shaping.rules, 2, "{:?}", status.shaping);
    assert!(
        status.shaping.edt_pacing.contains("sch_fq"),
        "the daemon says whether EDT pacing is possible: {:?}",
        status.shaping
    );

    // A shaped download for 12 s; an unshaped one for 4 s in the middle of it.
    let client = &lab.clients[0];
    let shaped = iperf::start(client, SERVICE_V4, SHARED_PORT, Way::Download, 12, 1000);
    std::thread::sleep(Duration::from_secs(4));
    let unshaped = iperf::start(client, SERVICE_V4, UNSHAPED_PORT, Way::Download, 4, 1000);
    let unshaped = unshaped.finish();
    let shaped = shaped.finish();
    assert_near_rate(&shaped, RATE_BPS, "shaped download");
    assert!(
        unshaped.bits_per_second > 10.0 * RATE_BPS,
        "the unshaped download beside it ran at full speed: {:.1} Mbit/s",
        unshaped.bits_per_second / 1e6
    );

    // Uploads are shaped on the WAN side the same way (behind NAT too: the server sees the
    // gateway's address, checked below, and the upload still goes into its class).
    let upload = iperf::start(client, SERVICE_V4, SHARED_PORT, Way::Upload, 10, 1000).finish();
    assert_near_rate(&upload, RATE_BPS, &format!("shaped upload ({gateway:?})"));
    if gateway == Gateway::Nat {
        assert_server_saw_only_the_gateway(lab);
    }
    let status = setup.daemon().status().unwrap();
    assert!(status.shaped_bytes > 0, "{status:?}");
    assert!(
        status.datapath.get(classifier_common::stats::Stat::Shaped) > 0,
        "{:?}",
        status.datapath
    );
}

#[test]
fn a_shared_rate_is_shared_between_clients_and_a_per_client_rate_is_each_clients() {
    if !privileged("a_shared_rate_is_shared_between_clients_and_a_per_client_rate_is_each_clients")
    {
        return;
    }
    shared_and_per_client_rates(Gateway::Routed, Way::Download);
}

/// Behind NAT both clients' uploads leave with the gateway's one address: only the NAT
/// hand-over tells them apart, for the per-client rate and the shared one.
#[test]
fn behind_nat_each_clients_uploads_get_their_own_per_client_rate() {
    if !privileged("behind_nat_each_clients_uploads_get_their_own_per_client_rate") {
        return;
    }
    shared_and_per_client_rates(Gateway::Nat, Way::Upload);
}

fn shared_and_per_client_rates(gateway: Gateway, way: Way) {
    let setup = Setup::on(gateway, &always_working(SHAPE_RULES), 2, TcAttach::Tcx);
    let lab = &setup.lab;
    for port in [SHARED_PORT, PER_CLIENT_PORT] {
        iperf::serve(lab, port);
        iperf::serve(lab, port + SECOND_CLIENT);
    }
    let both = |port: u16| {
        let runs: Vec<_> = lab
            .clients
            .iter()
            .zip([port, port + SECOND_CLIENT])
            .map(|(client, port)| iperf::start(client, SERVICE_V4, port, way, 10, 1000))
            .collect();
        runs.into_iter().map(iperf::Run::finish).collect::<Vec<_>>()
    };

    let shared = both(SHARED_PORT);
    let together = Measured {
        bits_per_second: shared.iter().map(|m| m.bits_per_second).sum(),
        intervals: Vec::new(),
    };
    assert_near_rate(
        &together,
        RATE_BPS,
        "two clients on a shared 4mbit rule, together",
    );

    let per_client = both(PER_CLIENT_PORT);
    for (i, measured) in per_client.iter().enumerate() {
        assert_near_rate(
            measured,
            RATE_BPS,
            &format!("client {} on a per-client 4mbit rule", i + 1),
        );
    }
    let status = setup.daemon().status().unwrap();
    assert_eq!(
        status.shaping.client_classes, 2,
        "each client got its own class: {:?}",
        status.shaping
    );
}

#[test]
fn the_policer_fallback_holds_a_download_to_its_rate() {
    if !privileged("the_policer_fallback_holds_a_download_to_its_rate") {
        return;
    }
    let policy = format!(
        "{}\n[shaping]\nmethod = \"policer\"\n",
        always_working(SHAPE_RULES)
    );
    let setup = Setup::new(&policy, 1);
    iperf::serve(&setup.lab, SHARED_PORT);
    let status = setup.daemon().status().unwrap();
    assert_eq!(status.shaping.method, "policer");
    let measured = iperf::start(
        &setup.lab.clients[0],
        SERVICE_V4,
        SHARED_PORT,
        Way::Download,
        10,
        1000,
    )
    .finish();
    // A policer drops rather than queues, and TCP backs off below the rate: a wider band.
    assert_ratio_within(&measured, RATE_BPS, 0.4..=1.15, "policed download");
    let status = setup.daemon().status().unwrap();
    assert!(
        status
            .datapath
            .get(classifier_common::stats::Stat::PolicerDropped)
            > 0,
        "{:?}",
        status.datapath
    );
}

/// A clip server: plain HTTP on the lab's server, classified by Host.
fn clip_server(lab: &Lab) -> HttpServer {
    HttpServer::start(&lab.server.netns, &[SocketAddr::new(SERVICE_V4.into(), 80)]).unwrap()
}

/// Downloads `len` bytes of clips from `client`; returns the seconds it took.
fn fetch_clip(client: &classifier_lab::Host, len: u64) -> f64 {
    let started = Instant::now();
    let output = Lab::command(client, "curl")
        .args([
            "--silent",
            "--ipv4",
            "--max-time",
            "40",
            "--output",
            "/dev/null",
        ])
        .args(["--write-out", "%{size_download}"])
        .arg(format!("http://clips.example.test/bytes/{len}"))
        .stderr(Stdio::null())
        .output()
        .expect("curl runs");
    let size: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        output.status.success() && size == len,
        "clip download: {size} of {len}"
    );
    started.elapsed().as_secs_f64()
}

#[test]
fn the_short_clip_allowance_passes_the_first_bytes_at_full_speed_then_shapes() {
    if !privileged("the_short_clip_allowance_passes_the_first_bytes_at_full_speed_then_shapes") {
        return;
    }
    // 2 Mbit/s after 3 MB an hour per client.
    let rules = r#"
[[rules]]
description = "Clips: 3 MB an hour at full speed, then 2 Mbit/s"
categories = "clips"
action = "shape"
rate = "2mbit"
allowance = "3MB/hour"
"#;
    let setup = Setup::new(&always_working(rules), 2);
    let _http = clip_server(&setup.lab);
    let [first, second] = [&setup.lab.clients[0], &setup.lab.clients[1]];

    // Within the allowance: 2.5 MB at full speed (at 2 Mbit/s it would take 10 s).
    let fast = fetch_clip(first, 2_500_000);
    // The rest of the allowance (0.5 MB) and then 1.5 MB at 2 Mbit/s: about 6 s.
    let slowed = fetch_clip(first, 2_000_000);
    // Another client has its own allowance.
    let other = fetch_clip(second, 2_500_000);
    eprintln!("allowance: {fast:.2} s within, {slowed:.2} s beyond, {other:.2} s another client");
    assert!(fast < 2.0, "within the allowance: 2.5 MB took {fast:.2} s");
    assert!(
        slowed > 4.0,
        "beyond the allowance the clip is shaped: 2 MB took {slowed:.2} s"
    );
    assert!(
        other < 2.0,
        "another client's allowance is its own: {other:.2} s"
    );
    let status = setup.daemon().status().unwrap();
    assert!(
        status
            .datapath
            .get(classifier_common::stats::Stat::AllowancePassed)
            > 0,
        "{:?}",
        status.datapath
    );
}

/// Seconds the stream runs: past the one-minute allowance, with time to see it throttled.
const STREAM_SECONDS: u64 = 72;
/// The stream's rate from the server: 50 kB/s (400 kbit/s), 25 times the throttled rate.
const STREAM_BYTES_PER_SECOND: u64 = 50_000;

/// Streams clips to `client` at [`STREAM_BYTES_PER_SECOND`] for [`STREAM_SECONDS`] in the
/// background; returns curl and the file its body grows in.
fn start_stream(client: &classifier_lab::Host, file: &std::path::Path) -> std::process::Child {
    Lab::command(client, "curl")
        .args(["--silent", "--ipv4", "--max-time"])
        .arg(STREAM_SECONDS.to_string())
        .arg("--output")
        .arg(file)
        .arg(format!(
            "http://clips.example.test/bytes/{}?rate={STREAM_BYTES_PER_SECOND}",
            STREAM_BYTES_PER_SECOND * 2 * STREAM_SECONDS
        ))
        .stderr(Stdio::null())
        .spawn()
        .expect("curl starts")
}

/// Bytes per second the file grew between two of `sizes` (taken a second apart, from 0).
fn grew(sizes: &[u64], from: usize, to: usize) -> f64 {
    (sizes[to] - sizes[from]) as f64 / (to - from) as f64
}

#[test]
fn a_time_allowance_runs_out_after_a_minute_of_streaming_then_the_client_is_throttled() {
    if !privileged(
        "a_time_allowance_runs_out_after_a_minute_of_streaming_then_the_client_is_throttled",
    ) {
        return;
    }
    // The default policy's throttle (16 kbit/s: no continual audio) after one minute of use
    // an hour: the shortest allowance a policy can write.
    let rules = r#"
[[rules]]
description = "Clips: one minute of use an hour at full speed, then 16 kbit/s"
categories = "clips"
action = "shape"
rate = "16kbit"
share = "per-client"
time_allowance = "1 minute/hour"
"#;
    let mut setup = Setup::new(&always_working(rules), 2);
    let _http = clip_server(&setup.lab);
    let client = &setup.lab.clients[0];
    let body = std::env::temp_dir().join(format!("classifier-stream-{}.bin", setup.lab.id));
    let _ = std::fs::remove_file(&body);
    let mut curl = start_stream(client, &body);
    let started = Instant::now();
    let mut sizes = Vec::new();
    let mut halfway = None;
    for second in 0..=STREAM_SECONDS - 2 {
        let due = started + Duration::from_secs(second);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        sizes.push(std::fs::metadata(&body).map_or(0, |m| m.len()));
        if second == 30 {
            halfway = Some(explain_clips(&setup, client.ipv4));
        }
    }
    let _ = curl.kill();
    let _ = curl.wait();
    let _ = std::fs::remove_file(&body);
    let within = grew(&sizes, 5, 55);
    let beyond = grew(&sizes, 65, sizes.len() - 1);
    eprintln!(
        "time allowance: {within:.0} B/s in the first minute, {beyond:.0} B/s after it; sizes {sizes:?}"
    );
    assert!(
        within > 0.7 * STREAM_BYTES_PER_SECOND as f64,
        "the first minute streams at full speed: {within:.0} B/s"
    );
    // 16 kbit/s is 2,000 B/s; HTB's burst and the queue drained at the switch make it a
    // little more over a short window.
    assert!(
        beyond < 6_000.0,
        "after the minute of use the stream is throttled: {beyond:.0} B/s"
    );

    let halfway = halfway.expect("asked halfway");
    let left = halfway.allowance.expect("the rule's allowance");
    assert!(left.measured, "{left:?}");
    assert_eq!(
        (left.minutes_used, left.minutes_left, left.spent),
        (Some(1), Some(0), false),
        "halfway through its only minute: used, not yet spent"
    );
    assert!(left.window_ends.is_some());

    let spent = |status: &classifier_user::daemon::Status| {
        status
            .allowances
            .iter()
            .find(|a| a.client == Some(client.ipv4.into()))
            .cloned()
            .unwrap_or_else(|| panic!("{:?}", status.allowances))
    };
    let after = spent(&setup.daemon().status().unwrap());
    assert!(after.spent && after.minutes_used >= Some(2), "{after:?}");

    // A crashed daemon's successor reads the same pinned counts: still spent.
    setup.daemon.take().unwrap().kill_hard().unwrap();
    let options = DaemonOptions {
        extra_args: vec!["--policy".into(), setup.policy_file.display().to_string()],
        ..DaemonOptions::default()
    };
    setup.daemon = Some(
        DaemonProcess::start(&classifier_bin(), &setup.lab, &options).expect("daemon restarts"),
    );
    let restarted = spent(&setup.daemon().status().unwrap());
    assert!(restarted.spent, "{restarted:?}");
    let moved = restarted
        .window_ends
        .unwrap()
        .duration_since(after.window_ends.unwrap())
        .as_secs()
        .abs();
    assert!(moved <= 1, "the same window: {restarted:?} {after:?}");

    // Another client has its own minutes: 400 kB at full speed (200 s at 16 kbit/s).
    let other = fetch_clip(&setup.lab.clients[1], 400_000);
    assert!(
        other < 5.0,
        "another client's allowance is its own: {other:.2} s"
    );
}

/// `classifier policy explain` of the clips for `client`, asked of the running daemon.
fn explain_clips(
    setup: &Setup,
    client: std::net::Ipv4Addr,
) -> classifier_user::policy::show::Explanation {
    let output = std::process::Command::new(classifier_bin())
        .args([
            "policy",
            "explain",
            &client.to_string(),
            "clips.example.test",
            "--json",
        ])
        .arg("--control-socket")
        .arg(&setup.daemon().control_socket)
        .output()
        .expect("classifier runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("an explanation")
}

/// A policy whose `lunch` starts at `lunch_starts` (UTC): working hours until then.
fn lunch_at(lunch_starts: jiff::civil::Time) -> String {
    let start = lunch_starts.strftime("%H:%M");
    // Past midnight, the period simply crosses it.
    let end = lunch_starts
        .wrapping_add(jiff::SignedDuration::from_mins(30))
        .strftime("%H:%M");
    let rules = r#"
[[rules]]
description = "Bulk: 4 Mbit/s in working hours"
categories = "bulk-shared"
periods = "working"
action = "shape"
rate = "4mbit"
"#;
    always_working(rules).replace(
        "[schedule]\ndefault = \"working\"",
        &format!(
            "[schedule]\ndefault = \"working\"\n[[schedule.period]]\nname = \"lunch\"\ndays = \"daily\"\nhours = \"{start}-{end}\""
        ),
    ).replace("name = \"Shaping lab\"", "name = \"Shaping lab\"\ntimezone = \"UTC\"")
}

#[test]
fn lunch_lifts_the_limit_on_a_running_flow_within_a_second() {
    if !privileged("lunch_lifts_the_limit_on_a_running_flow_within_a_second") {
        return;
    }
    // Lunch starts at the first whole minute more than 15 s away: time to bring the lab
    // up and measure the shaped rate first.
    let boundary = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(75))
        .unwrap()
        .round(
            jiff::TimestampRound::new()
                .smallest(jiff::Unit::Minute)
                .mode(jiff::RoundMode::Trunc),
        )
        .unwrap();
    let time_of_day = boundary.to_zoned(jiff::tz::TimeZone::UTC).time();
    let setup = Setup::new(&lunch_at(time_of_day), 1);
    iperf::serve(&setup.lab, SHARED_PORT);
    assert_eq!(setup.daemon().status().unwrap().period, "working");

    let until_boundary = boundary
        .duration_since(jiff::Timestamp::now())
        .as_secs_f64();
    let seconds = until_boundary.ceil() as u32 + 5;
    let measured = iperf::start(
        &setup.lab.clients[0],
        SERVICE_V4,
        SHARED_PORT,
        Way::Download,
        seconds,
        250,
    )
    .finish();
    assert_eq!(setup.daemon().status().unwrap().period, "lunch");
    let at = boundary.as_millisecond() as f64 / 1000.0;
    let before: Vec<f64> = measured
        .intervals
        .iter()
        .filter(|(start, end, _)| *start > at - 8.0 && *end < at - 0.5)
        .map(|(_, _, bps)| *bps)
        .collect();
    let after_a_second: Vec<f64> = measured
        .intervals
        .iter()
        .filter(|(start, _, _)| *start >= at + 1.0)
        .map(|(_, _, bps)| *bps)
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let timeline: Vec<String> = measured
        .intervals
        .iter()
        .map(|(start, _, bps)| format!("{:+.2}s {:.1}", start - at, bps / 1e6))
        .collect();
    eprintln!(
        "working: {:.2} Mbit/s, from a second into lunch: {:.2} Mbit/s; Mbit/s around the \
         boundary: {}",
        mean(&before) / 1e6,
        mean(&after_a_second) / 1e6,
        timeline.join(", ")
    );
    assert!(
        !before.is_empty() && !after_a_second.is_empty(),
        "{measured:?}"
    );
    let working = mean(&before);
    assert!(
        (0.6 * RATE_BPS..=1.3 * RATE_BPS).contains(&working),
        "shaped in working hours: {:.2} Mbit/s",
        working / 1e6
    );
    let first_after = after_a_second[0];
    assert!(
        first_after > 5.0 * RATE_BPS,
        "a second into lunch the flow runs unshaped: {:.2} Mbit/s",
        first_after / 1e6
    );
}

/// The gateway's root qdisc kinds on its LAN and WAN interfaces.
fn root_qdiscs(lab: &Lab) -> Vec<String> {
    [
        lab.gateway.iface,
        classifier_lab::topology::GATEWAY_WAN_IFACE,
    ]
    .iter()
    .map(|iface| {
        let output = std::process::Command::new("tc")
            .args([
                "-n",
                &lab.gateway.netns,
                "qdisc",
                "show",
                "dev",
                iface,
                "root",
            ])
            .output()
            .expect("tc runs");
        assert!(output.status.success(), "tc qdisc show dev {iface} failed");
        let shown = String::from_utf8_lossy(&output.stdout);
        format!(
            "{iface}: {}",
            shown.split_whitespace().nth(1).unwrap_or("(none)")
        )
    })
    .collect()
}

fn reload(setup: &Setup, policy: &str) {
    std::fs::write(&setup.policy_file, policy).unwrap();
    let output = std::process::Command::new(classifier_bin())
        .args(["policy", "reload", "--control-socket"])
        .arg(setup.lab.control_socket())
        .output()
        .expect("classifier policy reload runs");
    assert!(
        output.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_policy_without_shape_rules_puts_no_qdisc_on_the_gateway() {
    if !privileged("a_policy_without_shape_rules_puts_no_qdisc_on_the_gateway") {
        return;
    }
    let setup = Setup::new(&always_working(""), 1);
    let lab = &setup.lab;
    let before = root_qdiscs(lab);
    assert!(
        before.iter().all(|q| !q.ends_with("htb")),
        "no shape rules, no HTB: {before:?}"
    );
    assert_eq!(setup.daemon().status().unwrap().shaping.rules, 0);

    reload(&setup, &always_working(SHAPE_RULES));
    let shaping = root_qdiscs(lab);
    assert!(
        shaping.iter().all(|q| q.ends_with("htb")),
        "a reload that adds shape rules puts HTB on both egresses: {shaping:?}"
    );

    reload(&setup, &always_working(""));
    assert_eq!(
        root_qdiscs(lab),
        before,
        "a reload that removes them gives the egresses back as they were"
    );
}
