//! Real TLS clients in the lab (`evasive-client`, rustls over a real socket) and what the
//! gateway must make of them: a blocked name reset at once, an allowed one served, a
//! streaming one shaped, each named in the daemon's flow table. Shared by the lab tests of
//! the adversary (evasion, floods).

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use classifier_lab::{Host, Lab, tls::HTTPS_PORT};
use classifier_user::flows::FlowRecord;
use serde_json::Value;

/// Gambling: blocked at all times by the council policy, with a fail-fast reset.
pub const BLOCKED: &str = "www.bet365.com";
/// Listed nowhere (news is work): allowed.
pub const ALLOWED: &str = "www.bbc.co.uk";
/// Streaming video (the youtube app): shaped at work.
pub const SHAPED: &str = "www.youtube.com";

/// A file the lab's TLS server has: the allowed clients' GET.
pub const PATH: &str = "/bytes-16384";
pub const FILE_LEN: u64 = 16384;
/// The client's own time limit.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon a blocked client must have seen its reset.
pub const PROMPT: Duration = Duration::from_secs(3);

/// What the flow must come out as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Blocked,
    Allowed,
    Shaped,
}

impl Expect {
    /// The server name the client sends.
    pub fn name(self) -> &'static str {
        match self {
            Expect::Blocked => BLOCKED,
            Expect::Allowed => ALLOWED,
            Expect::Shaped => SHAPED,
        }
    }

    /// Category and verdict of the flow at work under the council policy.
    pub fn class(self) -> (&'static str, &'static str) {
        match self {
            Expect::Blocked => ("gambling", "block"),
            Expect::Allowed => ("uncategorized", "allow"),
            Expect::Shaped => ("streaming-video", "shape"),
        }
    }
}

/// One client run: to `server` (port 443) for `expect`'s name, with evasive-client's `args`.
pub struct ClientCase {
    /// How the client sends its hello, for messages.
    pub what: &'static str,
    pub server: IpAddr,
    pub expect: Expect,
    pub args: &'static [&'static str],
}

impl ClientCase {
    pub fn label(&self) -> String {
        let family = if self.server.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        };
        format!(
            "{:?} {} over {family}, {}",
            self.expect,
            self.expect.name(),
            self.what
        )
    }
}

/// What one run of the client reported.
pub struct ClientRun {
    pub label: String,
    /// `ok`, `reset`, `timeout`, ... (evasive-client's `outcome`).
    pub outcome: String,
    pub elapsed: Duration,
    /// The client socket's address, to find its flow.
    pub local: Option<SocketAddr>,
    /// The whole JSON report.
    pub report: Value,
}

/// The evasive-client binary cargo built beside the running test (target/<profile>/, the
/// test being in its deps/): `CARGO_BIN_EXE_*` is given to tests, not to this library.
pub fn evasive_client() -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    let path = test
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("evasive-client"))
        .expect("the test runs from target/<profile>/deps");
    assert!(
        path.exists(),
        "{} not found: cargo builds it for the tests of classifier-tests",
        path.display()
    );
    path
}

/// Starts evasive-client in `client`'s namespace for `case`.
pub fn start(client: &Host, case: &ClientCase) -> Child {
    let server = SocketAddr::new(case.server, HTTPS_PORT);
    Lab::command(client, &evasive_client().to_string_lossy())
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

/// Waits for the client of `case` (bounded: it ends within its timeout, or is killed and
/// fails the test) and reads its report.
pub fn finish(case: &ClientCase, mut child: Child) -> ClientRun {
    let deadline = Instant::now() + CLIENT_TIMEOUT + Duration::from_secs(10);
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
    ClientRun {
        label: case.label(),
        outcome: report["outcome"].as_str().unwrap_or_default().to_owned(),
        elapsed: Duration::from_millis(detail["elapsed_ms"].as_u64().unwrap_or(u64::MAX)),
        local: detail["local"].as_str().and_then(|a| a.parse().ok()),
        report,
    }
}

/// Runs `cases` at once from `client`.
pub fn run_all(client: &Host, cases: &[&ClientCase]) -> Vec<ClientRun> {
    let children: Vec<Child> = cases.iter().map(|case| start(client, case)).collect();
    cases
        .iter()
        .zip(children)
        .map(|(case, child)| finish(case, child))
        .collect()
}

/// The same socket address, an IPv4-mapped IPv6 one and its IPv4 alike.
pub fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
}

/// The latest flow of `protocol` from the client socket `local` to `server`.
pub fn flow_of<'a>(
    flows: &'a [FlowRecord],
    protocol: &str,
    local: SocketAddr,
    server: SocketAddr,
) -> Option<&'a FlowRecord> {
    flows
        .iter()
        .rev()
        .find(|f| f.protocol == protocol && same(f.client, local) && same(f.server, server))
}

/// What is wrong with `run` of `case` (its outcome, and its flow's name, category, verdict
/// and app), if anything; the flow, when there is one, for further checks.
pub fn judge<'a>(
    case: &ClientCase,
    run: &ClientRun,
    flows: &'a [FlowRecord],
) -> (Vec<String>, Option<&'a FlowRecord>) {
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
    let Some(local) = run.local else {
        wrong.push(format!("the client did not say its address: {report}"));
        return (wrong, None);
    };
    let server = SocketAddr::new(case.server, HTTPS_PORT);
    let Some(flow) = flow_of(flows, "tcp", local, server) else {
        wrong.push(format!("no flow from {local} in the daemon's table"));
        return (wrong, None);
    };
    let (category, verdict) = case.expect.class();
    let got = (
        flow.name.as_deref(),
        flow.category.as_str(),
        flow.verdict.as_str(),
    );
    if got != (Some(case.expect.name()), category, verdict) {
        wrong.push(format!(
            "flow {local}: name {:?}, category {}, verdict {} (unreadable {}, evasion {:?}); \
             expected {}, {category}, {verdict}",
            flow.name,
            flow.category,
            flow.verdict,
            flow.unreadable,
            flow.evasion,
            case.expect.name()
        ));
    }
    if case.expect == Expect::Shaped && flow.app != "youtube" {
        wrong.push(format!("flow {local}: app {}, expected youtube", flow.app));
    }
    (wrong, Some(flow))
}
