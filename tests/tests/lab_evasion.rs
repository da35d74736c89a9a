//! Evasion in the lab: a real TLS client (`evasive-client`, rustls over a real socket) cuts,
//! reorders and re-frames its ClientHello the way byedpi and zapret do (a 1-byte first
//! segment, a cut inside the server name, byedpi's disorder with a TTL-1 first part the
//! gateway drops and the kernel retransmits later, two TLS records cut inside the name),
//! over IPv4 and IPv6, through the gateway running the real daemon with the council's
//! default policy in force at work. Whatever the cut, a blocked name (gambling) is reset at
//! once and named in the flow table; an allowed name completes the handshake and a GET on
//! the lab's real TLS server (`openssl s_server`), so the client demonstrably works through
//! the gateway; a streaming name is shaped.

use std::{
    net::{IpAddr, SocketAddr},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use classifier_tests::{
    classifier_bin, flows_json, privileged,
    setup::{council_policy_at_work, daemon_with_policy},
};
use classifier_user::{
    flows::FlowRecord,
    lab::{
        Host, Lab, LabSpec,
        tls::{HTTPS_PORT, TlsServer},
        topology::{SERVICE_V4, SERVICE_V6},
    },
};
use serde_json::Value;

/// Gambling: blocked at all times by the council policy, with a fail-fast reset.
const BLOCKED: &str = "www.bet365.com";
/// Listed nowhere (news is work): allowed.
const ALLOWED: &str = "www.bbc.co.uk";
/// Streaming video (the youtube app): shaped at work.
const SHAPED: &str = "www.youtube.com";

/// The client's own time limit, and how soon a blocked client must have seen its reset.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
const PROMPT: Duration = Duration::from_secs(3);
/// A file the lab's TLS server has: the allowed clients' GET.
const PATH: &str = "/bytes-16384";
const FILE_LEN: u64 = 16384;

/// The ways of sending the ClientHello (evasive-client's arguments).
const TECHNIQUES: [(&str, &[&str]); 5] = [
    ("split at 1 (1-byte first segment)", &["--split", "1"]),
    ("split inside the name", &["--split", "sni+2"]),
    ("disorder at 1 (TTL-1 first byte)", &["--disorder", "1"]),
    ("disorder inside the name", &["--disorder", "sni+2"]),
    ("TLS records cut inside the name", &["--tlsrec", "sni+2"]),
];

/// The evasion notes the gateway must put on the flow of a technique: it saw the TTL-1
/// first part and the rest before it (disorder), or two records (tlsrec). An in-order
/// split is not noted.
fn notes(args: &[&str]) -> &'static [&'static str] {
    match args[0] {
        "--disorder" => &["bad-ttl", "reordered"],
        "--tlsrec" => &["tls-records"],
        _ => &[],
    }
}

/// What the flow must come out as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Blocked,
    Allowed,
    Shaped,
}

impl Expect {
    fn name(self) -> &'static str {
        match self {
            Expect::Blocked => BLOCKED,
            Expect::Allowed => ALLOWED,
            Expect::Shaped => SHAPED,
        }
    }

    /// Category and verdict of the flow.
    fn class(self) -> (&'static str, &'static str) {
        match self {
            Expect::Blocked => ("gambling", "block"),
            Expect::Allowed => ("uncategorized", "allow"),
            Expect::Shaped => ("streaming-video", "shape"),
        }
    }
}

struct Case {
    technique: &'static str,
    args: &'static [&'static str],
    server: IpAddr,
    expect: Expect,
}

impl Case {
    fn label(&self) -> String {
        let family = if self.server.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        };
        format!(
            "{:?} {} over {family}, {}",
            self.expect,
            self.expect.name(),
            self.technique
        )
    }
}

/// What one run of the client reported.
struct Run {
    label: String,
    outcome: String,
    elapsed: Duration,
    local: Option<SocketAddr>,
    report: Value,
}

/// Starts evasive-client in `client`'s namespace for `case`.
fn start(client: &Host, case: &Case) -> Child {
    let server = SocketAddr::new(case.server, HTTPS_PORT);
    Lab::command(client, env!("CARGO_BIN_EXE_evasive-client"))
        .arg(server.to_string())
        .args(["--sni", case.expect.name(), "--path", PATH])
        .args(["--timeout", &format!("{}s", CLIENT_TIMEOUT.as_secs())])
        .args(case.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("evasive-client starts")
}

/// Runs `cases` at once from `client` and reads each report (bounded: the clients end
/// within their timeout; one that does not is killed and fails the test).
fn run_all(client: &Host, cases: &[&Case]) -> Vec<Run> {
    let children: Vec<Child> = cases.iter().map(|case| start(client, case)).collect();
    let deadline = Instant::now() + CLIENT_TIMEOUT + Duration::from_secs(10);
    cases
        .iter()
        .zip(children)
        .map(|(case, mut child)| {
            while child.try_wait().unwrap().is_none() {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{}: evasive-client did not end by itself", case.label());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let output = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{}: evasive-client failed ({}): {stdout} {}",
                case.label(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            let report: Value = serde_json::from_str(stdout.trim())
                .unwrap_or_else(|e| panic!("{}: not one JSON line ({e}): {stdout}", case.label()));
            let detail = &report["detail"];
            Run {
                label: case.label(),
                outcome: report["outcome"].as_str().unwrap_or_default().to_owned(),
                elapsed: Duration::from_millis(detail["elapsed_ms"].as_u64().unwrap_or(u64::MAX)),
                local: detail["local"].as_str().and_then(|a| a.parse().ok()),
                report,
            }
        })
        .collect()
}

/// The flow of the client socket `local` in the daemon's table.
fn flow_of(flows: &[FlowRecord], local: SocketAddr, server: IpAddr) -> Option<&FlowRecord> {
    let same = |a: SocketAddr, b: SocketAddr| {
        a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
    };
    flows
        .iter()
        .rev()
        .find(|f| same(f.client, local) && same(f.server, SocketAddr::new(server, HTTPS_PORT)))
}

/// Whether the client sent its ClientHello as `case` asked: two writes cut where asked
/// (split, disorder), or one write of two records, 5 bytes longer (tlsrec).
fn check_writes(case: &Case, report: &Value) -> Option<String> {
    let detail = &report["detail"];
    let hello = detail["hello_len"].as_u64().unwrap_or(0);
    let writes: Vec<u64> = detail["writes"]
        .as_array()
        .map(|w| w.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let cut_at: Option<u64> = case.args[1].parse().ok();
    let right = match case.args[0] {
        "--tlsrec" => writes == [hello + 5],
        _ => {
            writes.len() == 2
                && writes.iter().sum::<u64>() == hello
                && cut_at.is_none_or(|at| writes[0] == at)
        }
    };
    (!right).then(|| format!("the ClientHello ({hello} bytes) went in writes {writes:?}"))
}

/// What is wrong with `run` of `case` (its outcome and its flow), if anything.
fn judge(case: &Case, run: &Run, flows: &[FlowRecord]) -> Vec<String> {
    let mut wrong = Vec::new();
    let report = &run.report;
    match case.expect {
        Expect::Blocked => {
            if run.outcome != "reset" {
                wrong.push(format!("expected a reset, got {report}"));
            } else if run.elapsed > PROMPT {
                wrong.push(format!(
                    "the reset came after {:?}, not within {PROMPT:?}: {report}",
                    run.elapsed
                ));
            }
        }
        Expect::Allowed | Expect::Shaped => {
            let status = report["detail"]["status_line"].as_str().unwrap_or_default();
            let received = report["detail"]["response_bytes"].as_u64().unwrap_or(0);
            if run.outcome != "ok" || !status.contains(" 200 ") || received <= FILE_LEN {
                wrong.push(format!(
                    "expected the handshake and a 200 answer with the {FILE_LEN}-byte file, \
                     got {report}"
                ));
            }
        }
    }
    wrong.extend(check_writes(case, report));
    let Some(local) = run.local else {
        wrong.push(format!("the client did not say its address: {report}"));
        return wrong;
    };
    let Some(flow) = flow_of(flows, local, case.server) else {
        wrong.push(format!("no flow from {local} in the daemon's table"));
        return wrong;
    };
    let (category, verdict) = case.expect.class();
    let got = (
        flow.name.as_deref(),
        flow.category.as_str(),
        flow.verdict.as_str(),
    );
    if got != (Some(case.expect.name()), category, verdict) {
        wrong.push(format!(
            "flow {local}: name {:?}, category {}, verdict {} (evasion {:?}, unreadable {}); \
             expected {}, {category}, {verdict}",
            flow.name,
            flow.category,
            flow.verdict,
            flow.evasion,
            flow.unreadable,
            case.expect.name()
        ));
    }
    for note in notes(case.args) {
        if !flow.evasion.iter().any(|n| n == note) {
            wrong.push(format!(
                "flow {local}: evasion notes {:?} lack {note}: the gateway did not see the \
                 technique",
                flow.evasion
            ));
        }
    }
    if case.expect == Expect::Shaped && flow.app != "youtube" {
        wrong.push(format!("flow {local}: app {}, expected youtube", flow.app));
    }
    wrong
}

#[test]
fn evasive_tls_clients_are_blocked_allowed_or_shaped_as_their_names_demand() {
    if !privileged("evasive_tls_clients_are_blocked_allowed_or_shaped_as_their_names_demand") {
        return;
    }
    let started = Instant::now();
    let names = [BLOCKED, ALLOWED, SHAPED].map(String::from);
    let lab = Lab::up(&LabSpec {
        server_names: names.to_vec(),
        ..LabSpec::default()
    })
    .expect("lab comes up");
    let _tls = TlsServer::start(&lab, &names).expect("the lab's TLS server starts");
    let daemon = daemon_with_policy(&lab, &council_policy_at_work(), None);
    let client = &lab.clients[0];
    let up = started.elapsed();

    let (v4, v6) = (IpAddr::from(SERVICE_V4), IpAddr::from(SERVICE_V6));
    let mut cases = Vec::new();
    for server in [v4, v6] {
        for (technique, args) in TECHNIQUES {
            for expect in [Expect::Allowed, Expect::Blocked] {
                cases.push(Case {
                    technique,
                    args,
                    server,
                    expect,
                });
            }
        }
    }
    // Shaping: a few of the techniques are enough.
    for (technique, server) in [(0, v4), (2, v6), (4, v4)] {
        let (technique, args) = TECHNIQUES[technique];
        cases.push(Case {
            technique,
            args,
            server,
            expect: Expect::Shaped,
        });
    }

    // s_server answers one connection at a time, and a blocked client leaves it waiting
    // for the rest of a ClientHello that never comes: the clients that need its answers
    // go first (at once), then the blocked ones (at once), which need nothing from it.
    let (served, blocked): (Vec<&Case>, Vec<&Case>) =
        cases.iter().partition(|c| c.expect != Expect::Blocked);
    let mut runs = run_all(client, &served);
    let served_in = started.elapsed() - up;
    runs.extend(run_all(client, &blocked));
    let ordered: Vec<&Case> = served.into_iter().chain(blocked).collect();
    let clients_in = started.elapsed() - up;

    let flows: Vec<FlowRecord> = flows_json(&daemon.control_socket)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a flow record"))
        .collect();
    let mut failures = Vec::new();
    for (case, run) in ordered.iter().zip(&runs) {
        let flow = run
            .local
            .and_then(|local| flow_of(&flows, local, case.server));
        eprintln!(
            "{:<75} {:<6} {:>5} ms  flow: {}",
            run.label,
            run.outcome,
            run.elapsed.as_millis(),
            flow.map_or("none".into(), |f| format!(
                "{:?} {} {} {} evasion {:?}",
                f.name, f.category, f.app, f.verdict, f.evasion
            ))
        );
        failures.extend(
            judge(case, run, &flows)
                .into_iter()
                .map(|w| format!("{}: {w}", run.label)),
        );
    }
    let status = daemon.status().unwrap();
    let resets = status
        .datapath
        .get(classifier_common::stats::Stat::ResetsSent);
    eprintln!(
        "lab and daemon up in {up:?}; served clients in {served_in:?}, all clients in \
         {clients_in:?}; resets sent: {resets}"
    );
    if resets < blocked_count(&cases) {
        failures.push(format!(
            "the gateway sent {resets} resets for {} blocked flows",
            blocked_count(&cases)
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} evasive clients came out wrong:\n{}\n(binary {})",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        classifier_bin().display()
    );
    daemon.stop().unwrap();
}

fn blocked_count(cases: &[Case]) -> u64 {
    cases.iter().filter(|c| c.expect == Expect::Blocked).count() as u64
}
