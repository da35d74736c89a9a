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
    time::Instant,
};

use classifier_lab::{
    Lab, LabSpec,
    tls::{HTTPS_PORT, TlsServer},
    topology::{SERVICE_V4, SERVICE_V6},
};
use classifier_tests::{
    classifier_bin, flows_json, privileged,
    setup::{council_policy_at_work, daemon_with_policy},
    tls_clients::{ALLOWED, BLOCKED, ClientCase, ClientRun, Expect, SHAPED, run_all},
};
use classifier_user::flows::FlowRecord;
use serde_json::Value;

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

/// Whether the client sent its ClientHello as `case` asked: two writes cut where asked
/// (split, disorder), or one write of two records, 5 bytes longer (tlsrec).
fn check_writes(case: &ClientCase, report: &Value) -> Option<String> {
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

/// What is wrong with `run` of `case`, if anything: the shared checks, then how the client
/// cut its hello and the evasion notes the gateway put on the flow.
fn judge(case: &ClientCase, run: &ClientRun, flows: &[FlowRecord]) -> Vec<String> {
    let (mut wrong, flow) = classifier_tests::tls_clients::judge(case, run, flows);
    wrong.extend(check_writes(case, &run.report));
    if let Some(flow) = flow {
        for note in notes(case.args) {
            if !flow.evasion.iter().any(|n| n == note) {
                wrong.push(format!(
                    "flow {}: evasion notes {:?} lack {note}: the gateway did not see the \
                     technique",
                    flow.client, flow.evasion
                ));
            }
        }
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
                cases.push(ClientCase {
                    what: technique,
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
        cases.push(ClientCase {
            what: technique,
            args,
            server,
            expect: Expect::Shaped,
        });
    }

    // s_server answers one connection at a time, and a blocked client leaves it waiting
    // for the rest of a ClientHello that never comes: the clients that need its answers
    // go first (at once), then the blocked ones (at once), which need nothing from it.
    let (served, blocked): (Vec<&ClientCase>, Vec<&ClientCase>) =
        cases.iter().partition(|c| c.expect != Expect::Blocked);
    let mut runs = run_all(client, &served);
    let served_in = started.elapsed() - up;
    runs.extend(run_all(client, &blocked));
    let ordered: Vec<&ClientCase> = served.into_iter().chain(blocked).collect();
    let clients_in = started.elapsed() - up;

    let flows: Vec<FlowRecord> = flows_json(&daemon.control_socket)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a flow record"))
        .collect();
    let mut failures = Vec::new();
    for (case, run) in ordered.iter().zip(&runs) {
        let flow = run.local.and_then(|local| {
            let server = SocketAddr::new(case.server, HTTPS_PORT);
            classifier_tests::tls_clients::flow_of(&flows, "tcp", local, server)
        });
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

fn blocked_count(cases: &[ClientCase]) -> u64 {
    cases.iter().filter(|c| c.expect == Expect::Blocked).count() as u64
}
