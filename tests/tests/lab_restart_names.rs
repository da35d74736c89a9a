//! A record is only as good as its name: in the lab, with the real daemon recording into
//! SQLite and real TLS clients (evasive-client, rustls, sending its hello as it is, against
//! `openssl s_server`; names by SNI), the daemon
//! is killed with SIGKILL while flows run, and a flow that ended just before (within the
//! close linger, not yet recorded) and a blocked one wait in the flow table; a flow starts
//! and ends while no daemon runs; the next daemon then hands the datapath over with
//! SIGUSR1 while another flow runs, and a third takes it over. Every flow is recorded once,
//! with the name, category, application, method, group, verdict and evasion notes the
//! first daemon knew (three of the flows send their ClientHello as a censorship-evasion
//! tool would: over two TLS records, or with a TTL-1 first part sent after the rest).

use std::{
    net::{IpAddr, SocketAddr},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use classifier_lab::{
    Host, Lab, LabSpec,
    tls::{HTTPS_PORT, TlsServer},
    topology::{SERVICE_V4, SERVICE_V6},
};
use classifier_tests::{
    privileged,
    setup::{council_policy_at_work, daemon_with_policy},
};
use classifier_user::{
    flows::FlowRecord,
    store::{EndReason, Filter, FlowStore, StoredFlow},
};

/// Streaming video (the youtube app): shaped at work, after a 20 MB allowance.
const STREAMING: &str = "www.youtube.com";
/// Listed nowhere: allowed.
const NEWS: &str = "www.bbc.co.uk";
/// Gambling: blocked at all times, with a reset.
const GAMBLING: &str = "www.bet365.com";

/// Files the lab's TLS server has.
const SMALL: u64 = 16 * 1024;
const LARGE: u64 = 1024 * 1024;

/// The whole test's bound.
const BOUND: Duration = Duration::from_secs(60);

/// One TLS flow of the test, known by its client port.
#[derive(Clone, Copy, Debug)]
struct Flow {
    what: &'static str,
    name: &'static str,
    v6: bool,
    port: u16,
    /// The TLS server's port: an `openssl s_server` serves one connection at a time, so a
    /// flow held open long has a server of its own.
    server_port: u16,
    /// (category, app, verdict) the council policy gives it at work.
    class: (&'static str, &'static str, &'static str),
    /// How the client sends its ClientHello (evasive-client's arguments; none: whole).
    technique: &'static [&'static str],
    /// The evasion notes the gateway puts on the flow for that.
    evasion: &'static [&'static str],
}

const STREAMING_CLASS: (&str, &str, &str) = ("streaming-video", "youtube", "shape");
const NEWS_CLASS: (&str, &str, &str) = ("uncategorized", "tls", "allow");
const GAMBLING_CLASS: (&str, &str, &str) = ("gambling", "tls", "block");

/// Live through the SIGKILL, the restart, the SIGUSR1 hand-over and the next start.
const LIVE_V4: Flow = Flow {
    what: "live through both restarts, IPv4",
    name: STREAMING,
    v6: false,
    port: 42001,
    server_port: 8443,
    class: STREAMING_CLASS,
    technique: &[],
    evasion: &[],
};
const LIVE_V6: Flow = Flow {
    what: "live through both restarts, IPv6",
    name: NEWS,
    v6: true,
    port: 42002,
    server_port: 8443,
    class: NEWS_CLASS,
    technique: &["--tlsrec", "sni+2"],
    evasion: &["tls-records"],
};
/// Ended (FIN) a moment before the SIGKILL: still in the table, waiting out its linger.
const ENDED: Flow = Flow {
    what: "ended just before the SIGKILL",
    name: NEWS,
    v6: false,
    port: 42003,
    server_port: HTTPS_PORT,
    class: NEWS_CLASS,
    technique: &["--disorder", "1"],
    evasion: &["bad-ttl", "reordered"],
};
/// Blocked (reset) a moment before the SIGKILL; the server never hears of it again, so it
/// ends by the idle timeout.
const BLOCKED: Flow = Flow {
    what: "blocked just before the SIGKILL",
    name: GAMBLING,
    v6: false,
    port: 42004,
    server_port: 8445,
    class: GAMBLING_CLASS,
    technique: &[],
    evasion: &[],
};
/// Begun and ended while no daemon ran.
const UNWATCHED: Flow = Flow {
    what: "while no daemon ran",
    name: STREAMING,
    v6: true,
    port: 42005,
    server_port: HTTPS_PORT,
    class: STREAMING_CLASS,
    technique: &["--disorder", "sni+2"],
    evasion: &["bad-ttl", "reordered"],
};
/// Begun under the second daemon, live through its SIGUSR1 hand-over.
const HANDED_OVER: Flow = Flow {
    what: "live through the SIGUSR1 hand-over",
    name: STREAMING,
    v6: true,
    port: 42006,
    server_port: 8444,
    class: STREAMING_CLASS,
    technique: &[],
    evasion: &[],
};

/// `GET /bytes-{size}` over TLS with `flow.name` as SNI, from `flow.port`, read at most
/// `rate` bytes a second so that it lasts: evasive-client (rustls) with neither cut nor
/// reordering, in the background.
fn download(client: &Host, flow: &Flow, size: u64, rate: Option<u64>) -> Child {
    let mut command = Lab::command(client, env!("CARGO_BIN_EXE_evasive-client"));
    command
        .arg(server_addr(flow).to_string())
        .args(["--sni", flow.name, "--path", &format!("/bytes-{size}")])
        .args(["--local-port", &flow.port.to_string(), "--timeout", "30s"])
        .args(flow.technique);
    if let Some(rate) = rate {
        command.args(["--read-rate", &rate.to_string()]);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("evasive-client starts")
}

/// Waits (bounded) for a [`download`]; its outcome (`ok`, `reset`, ...) and the bytes of
/// answer it read.
fn finish(mut child: Child, flow: &Flow) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{}: evasive-client did not end by itself", flow.what);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("its output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{}: not one JSON line ({e}): {stdout} {}",
            flow.what,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (
        report["outcome"].as_str().unwrap_or_default().to_owned(),
        report["detail"]["response_bytes"].as_u64().unwrap_or(0),
    )
}

fn client_addr(client: &Host, flow: &Flow) -> SocketAddr {
    let ip = if flow.v6 {
        IpAddr::from(client.ipv6)
    } else {
        IpAddr::from(client.ipv4)
    };
    SocketAddr::new(ip, flow.port)
}

fn server_addr(flow: &Flow) -> SocketAddr {
    let ip = if flow.v6 {
        IpAddr::from(SERVICE_V6)
    } else {
        IpAddr::from(SERVICE_V4)
    };
    SocketAddr::new(ip, flow.server_port)
}

/// The council's default policy, at work at every moment, with a 4 s idle timeout (so a
/// blocked flow ends within the test; a closed one ends after min(linger, idle) = 4 s).
fn policy() -> String {
    let at_work = council_policy_at_work();
    let policy = at_work.replacen("idle_timeout = \"5 minutes\"", "idle_timeout = \"4s\"", 1);
    assert_ne!(
        policy, at_work,
        "the council policy sets idle_timeout = \"5 minutes\""
    );
    policy
}

/// Client ports of the flows whose names the kernel keeps in the lab daemon's `NAMES`.
fn kept_name_ports(lab: &Lab) -> Vec<u16> {
    use aya::maps::{HashMap, MapData};
    use classifier_common::names::{FlowName, NameKey};
    let names: HashMap<MapData, NameKey, FlowName> =
        classifier_user::bpf_maps::from_pin(&lab.pin_dir(), classifier_common::maps::NAMES)
            .expect("NAMES is pinned");
    names
        .keys()
        .filter_map(Result::ok)
        .map(|key| key.flow.client_port)
        .collect()
}

/// What a record must say of a flow, beyond its counters: (name, category, app, method,
/// group, verdict, evasion notes).
type Class<'a> = (
    Option<&'a str>,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Vec<&'a str>,
);

fn class_of(record: &FlowRecord) -> Class<'_> {
    (
        record.name.as_deref(),
        record.category.as_str(),
        record.app.as_str(),
        record.method.as_str(),
        record.group.as_str(),
        record.verdict.as_str(),
        record.evasion.iter().map(String::as_str).collect(),
    )
}

/// What the council policy at work must make of `flow`.
fn expected(flow: &Flow) -> Class<'static> {
    let (category, app, verdict) = flow.class;
    let evasion = flow.evasion.to_vec();
    (
        Some(flow.name),
        category,
        app,
        "sni",
        "staff",
        verdict,
        evasion,
    )
}

/// Waits (bounded by `deadline`) until the store holds a record of each of `flows`.
fn wait_recorded(store: &FlowStore, flows: &[Flow], deadline: Instant) -> Vec<StoredFlow> {
    loop {
        let stored = store.query(&Filter::default()).expect("the store reads");
        let missing: Vec<&Flow> = flows
            .iter()
            .filter(|f| !stored.iter().any(|s| s.flow.client.port() == f.port))
            .collect();
        if missing.is_empty() {
            return stored;
        }
        assert!(
            Instant::now() < deadline,
            "not recorded in time: {missing:?}\nthe store holds: {stored:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn every_record_keeps_its_name_through_a_kill_9_and_a_hand_over() {
    if !privileged("every_record_keeps_its_name_through_a_kill_9_and_a_hand_over") {
        return;
    }
    let started = Instant::now();
    let deadline = started + BOUND;
    let lab = Lab::up(&LabSpec {
        clients: 1,
        server_names: vec![STREAMING.into(), NEWS.into(), GAMBLING.into()],
        ..LabSpec::default()
    })
    .expect("lab comes up");
    let names = [STREAMING.into(), NEWS.into(), GAMBLING.into()];
    let _tls = TlsServer::start_on(&lab, &names, &[HTTPS_PORT, 8443, 8444, 8445])
        .expect("the lab's TLS servers start");
    let client = &lab.clients[0];
    // A small receive buffer, so that an answer read slowly crosses the wire slowly
    // too (with the default, the server's whole file sits in the client's socket at once).
    let sysctl = Lab::command(client, "sysctl")
        .args(["-qw", "net.ipv4.tcp_rmem=4096 32768 32768"])
        .status()
        .expect("sysctl runs");
    assert!(sysctl.success(), "the client's receive buffer: {sysctl}");
    let policy = policy();
    let first = daemon_with_policy(&lab, &policy, None);

    // Under the first daemon: two long downloads (1 MiB at 80 kB/s, ~13 s), a short one
    // that ends at once (FIN) and a blocked one (reset).
    let live_v4 = download(client, &LIVE_V4, LARGE, Some(80_000));
    let live_v6 = download(client, &LIVE_V6, LARGE, Some(80_000));
    let (outcome, size) = finish(download(client, &ENDED, SMALL, None), &ENDED);
    assert!(
        outcome == "ok" && size > SMALL,
        "{}: {outcome}, {size} bytes",
        ENDED.what
    );
    let (outcome, _) = finish(download(client, &BLOCKED, SMALL, None), &BLOCKED);
    assert_eq!(outcome, "reset", "{} was not blocked", BLOCKED.what);
    // The daemon has had the events; the ended flows' 4 s linger is far from over.
    std::thread::sleep(Duration::from_millis(500));

    // What the first daemon knows of each flow: the oracle for the records.
    let known = first.flows().expect("the first daemon lists its flows");
    let oracle = |flow: &Flow| {
        known
            .iter()
            .find(|r| r.client == client_addr(client, flow))
            .cloned()
            .unwrap_or_else(|| panic!("the first daemon does not list {flow:?}: {known:#?}"))
    };
    let before: Vec<(Flow, FlowRecord)> = [LIVE_V4, LIVE_V6, ENDED, BLOCKED]
        .into_iter()
        .map(|flow| (flow, oracle(&flow)))
        .collect();
    for (flow, record) in &before {
        assert_eq!(
            class_of(record),
            expected(flow),
            "{}: as the first daemon classified it: {record:?}",
            flow.what
        );
        assert_eq!(record.ended, None, "{}: not recorded yet", flow.what);
    }

    // A crash: SIGKILL, no chance to record anything.
    let killed_at = jiff::Timestamp::now();
    first.kill_hard().expect("SIGKILL");
    let (outcome, size) = finish(download(client, &UNWATCHED, SMALL, None), &UNWATCHED);
    assert!(
        outcome == "ok" && size > SMALL,
        "{}: {outcome}, {size} bytes",
        UNWATCHED.what
    );

    // The next daemon takes the pinned datapath over and records the flows that ended.
    let second = daemon_with_policy(&lab, &policy, None);
    assert!(second.status().expect("status").adopted);
    let handed_over = download(client, &HANDED_OVER, LARGE, Some(100_000));
    // Under way, and named, before the hand-over.
    loop {
        let flows = second.flows().expect("the second daemon lists its flows");
        let named = flows.iter().any(|r| {
            r.client == client_addr(client, &HANDED_OVER) && r.name.as_deref() == Some(STREAMING)
        });
        if named {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} never named: {flows:#?}",
            HANDED_OVER.what
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let store = FlowStore::open(&lab.store_path()).expect("the daemon made the store");
    wait_recorded(&store, &[ENDED, BLOCKED, UNWATCHED], deadline);

    // A hand-over (an upgrade): SIGUSR1, the datapath left attached, a third daemon.
    let handed_over_at = jiff::Timestamp::now();
    let exit = second.hand_over().expect("SIGUSR1");
    assert!(exit.success(), "the hand-over exits cleanly: {exit}");
    let third = daemon_with_policy(&lab, &policy, None);
    assert!(third.status().expect("status").adopted);

    for (client_process, flow) in [
        (live_v4, LIVE_V4),
        (live_v6, LIVE_V6),
        (handed_over, HANDED_OVER),
    ] {
        let (outcome, size) = finish(client_process, &flow);
        assert!(
            outcome == "ok" && size > LARGE,
            "{}: the download went on through the restarts: {outcome}, {size} bytes",
            flow.what
        );
    }
    let all = [LIVE_V4, LIVE_V6, ENDED, BLOCKED, UNWATCHED, HANDED_OVER];
    let stored = wait_recorded(&store, &all, deadline);

    let mut failures = Vec::new();
    for flow in all {
        let records: Vec<&FlowRecord> = stored
            .iter()
            .map(|s| &s.flow)
            .filter(|r| r.client.port() == flow.port)
            .collect();
        let [record] = records[..] else {
            failures.push(format!("{}: {} records, not one", flow.what, records.len()));
            continue;
        };
        let want = expected(&flow);
        if class_of(record) != want {
            failures.push(format!(
                "{}: recorded as {:?}, want {want:?}",
                flow.what,
                class_of(record)
            ));
        }
        if let Some((_, known)) = before.iter().find(|(f, _)| f.port == flow.port)
            && class_of(record) != class_of(known)
        {
            failures.push(format!(
                "{}: recorded as {:?}, the first daemon knew it as {:?}",
                flow.what,
                class_of(record),
                class_of(known)
            ));
        }
        if (record.client, record.server) != (client_addr(client, &flow), server_addr(&flow)) {
            failures.push(format!("{}: addresses {record:?}", flow.what));
        }
        // The long ones really crossed the wire before and after.
        let live_from = match flow.port {
            p if p == LIVE_V4.port || p == LIVE_V6.port => Some(killed_at),
            p if p == HANDED_OVER.port => Some(handed_over_at),
            _ => None,
        };
        if let Some(at) = live_from
            && !(record.first_seen < at && record.last_seen > handed_over_at)
        {
            failures.push(format!(
                "{}: from {} to {}, not live across {at} and {handed_over_at}",
                flow.what, record.first_seen, record.last_seen
            ));
        }
        let reasons: &[EndReason] = if flow.port == BLOCKED.port {
            &[EndReason::Idle, EndReason::Rst]
        } else {
            &[EndReason::Fin]
        };
        if !record.ended.is_some_and(|r| reasons.contains(&r)) {
            failures.push(format!(
                "{}: ended {:?}, want one of {reasons:?}",
                flow.what, record.ended
            ));
        }
    }
    let wrong = all
        .iter()
        .filter(|f| failures.iter().any(|m| m.starts_with(f.what)))
        .count();
    assert!(
        failures.is_empty(),
        "{wrong} of {} flows are not recorded as the first daemon knew them:\n{}",
        all.len(),
        failures.join("\n")
    );

    // Recorded flows' names leave the kernel with them (bounded: the walk that wrote the
    // records removes them just after).
    let ports: Vec<u16> = all.iter().map(|f| f.port).collect();
    loop {
        let left = kept_name_ports(&lab);
        if !left.iter().any(|p| ports.contains(p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "names of recorded flows still kept: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let exit = third.stop().expect("SIGTERM");
    assert!(exit.success(), "{exit}");
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
}
