//! The daemon's life under live traffic, in a lab of network namespaces with real clients
//! and servers: killed with SIGKILL, the datapath it left goes on counting and blocking and
//! the next daemon takes it over with its counters; a policy reload changes the verdict of
//! new and running flows; a bad policy file changes nothing.

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use classifier_lab::{
    Host, Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
    http::HttpServer,
    topology::{GATEWAY_WAN_IFACE, SERVICE_V4, SERVICE_V6},
};
use classifier_tests::{
    capture::{self, Capture},
    classifier_bin,
    clients::{finish_download, gateway_has_xdp, slow_download},
    lab_policy::LabPolicy,
    privileged,
    tc::{TcAttach, clsact_filters, gateway_tc_programs, has_clsact},
};
use classifier_user::flows::FlowRecord;

/// Served over plain HTTP (classified by Host) by the lab's HTTP server.
const DOWNLOADS: &str = "downloads.example.test";
/// A gambling site the policies below always block.
const GAMBLING: &str = "www.bet365.com";
const HTTP_PORT: u16 = 80;

/// A policy whose period is always `working`, so the verdicts do not depend on the clock.
fn policy(downloads_blocked: bool) -> String {
    let mut text = String::from(
        r#"
[site]
name = "Lab"

[schedule]
default = "working"

[categories.lab-downloads]
domains = ["example.test"]

[categories.gambling]
domains = ["bet365.com"]

[[rules]]
description = "Gambling: blocked"
categories = "gambling"
action = "block"
"#,
    );
    if downloads_blocked {
        text.push_str(
            r#"
[[rules]]
description = "Lab downloads: blocked since this reload"
categories = "lab-downloads"
action = "block"
"#,
        );
    }
    text
}

/// [`policy`]`(false)` with gambling first, then a new category, then lab-downloads: the
/// names keep their meaning, their positions do not.
fn policy_reordered() -> String {
    policy(false)
        .replace(
            "[categories.lab-downloads]\ndomains = [\"example.test\"]\n\n",
            "",
        )
        .replace(
            "[[rules]]",
            "[categories.news]\ndomains = [\"bbc.co.uk\"]\n\n\
             [categories.lab-downloads]\ndomains = [\"example.test\"]\n\n[[rules]]",
        )
}

/// The lab, its HTTP server, and a policy file the daemon runs with.
struct Setup {
    lab: Lab,
    _http: HttpServer,
    policy: LabPolicy,
}

impl Setup {
    fn new(policy_text: &str) -> Self {
        let lab = Lab::up(&LabSpec {
            server_names: vec![DOWNLOADS.into(), GAMBLING.into()],
            ..LabSpec::default()
        })
        .expect("lab comes up");
        let http = HttpServer::start(
            &lab.server.netns,
            &[
                SocketAddr::new(SERVICE_V4.into(), HTTP_PORT),
                SocketAddr::new(SERVICE_V6.into(), HTTP_PORT),
            ],
        )
        .unwrap();
        let policy = LabPolicy::write(&lab, policy_text);
        Self {
            lab,
            _http: http,
            policy,
        }
    }

    fn start_daemon(&self) -> DaemonProcess {
        self.start_daemon_with(Vec::new())
    }

    fn start_daemon_with(&self, mut extra_args: Vec<String>) -> DaemonProcess {
        extra_args.extend(self.policy.args());
        let options = DaemonOptions {
            extra_args,
            ..DaemonOptions::default()
        };
        DaemonProcess::start(&classifier_bin(), &self.lab, &options).expect("daemon starts")
    }

    fn client(&self) -> &Host {
        &self.lab.clients[0]
    }
}

/// Whether a new HTTPS connection to `name` fails within a few seconds (blocked) rather
/// than being answered.
fn tls_blocked(client: &Host, name: &str) -> bool {
    let output = Lab::command(client, "curl")
        .args([
            "--silent",
            "--ipv4",
            "--insecure",
            "--max-time",
            "3",
            "--output",
            "/dev/null",
        ])
        .args(["--write-out", "%{http_code}"])
        .arg(format!("https://{name}/"))
        .output()
        .expect("curl runs");
    !output.status.success()
}

fn flow_from_port(flows: &[FlowRecord], port: u16) -> FlowRecord {
    flows
        .iter()
        .find(|f| f.client.port() == port)
        .cloned()
        .unwrap_or_else(|| panic!("no flow from port {port} in {flows:#?}"))
}

#[test]
fn after_kill_9_the_datapath_keeps_enforcing_and_the_next_daemon_takes_it_over() {
    if !privileged("after_kill_9_the_datapath_keeps_enforcing_and_the_next_daemon_takes_it_over") {
        return;
    }
    after_kill_9_the_datapath_keeps_enforcing(TcAttach::Tcx);
}

/// As above with the TC programs as clsact filters (kernels before 6.6): the download's
/// counts come from `lan_egress`, which must keep counting with no daemon and be taken
/// over in place.
#[test]
fn after_kill_9_the_datapath_on_clsact_filters_keeps_enforcing_and_is_taken_over() {
    if !privileged("after_kill_9_the_datapath_on_clsact_filters_keeps_enforcing") {
        return;
    }
    after_kill_9_the_datapath_keeps_enforcing(TcAttach::Netlink);
}

fn after_kill_9_the_datapath_keeps_enforcing(tc_attach: TcAttach) {
    let setup = Setup::new(&policy(false));
    let _tls = classifier_lab::tls::TlsServer::start(&setup.lab, &[GAMBLING.into()]).unwrap();
    let client = setup.client();
    let daemon = setup.start_daemon_with(tc_attach.args());
    let status = daemon.status().unwrap();
    assert!(!status.adopted);
    assert_eq!(status.tc_attach, tc_attach.name(), "{status:?}");
    assert!(tls_blocked(client, GAMBLING), "the policy blocks gambling");

    // 2 MB at 400 kB/s: about five seconds, through the kill and the restart.
    const PORT: u16 = 40100;
    const LEN: u64 = 2_000_000;
    let capture = Capture::start(client, &format!("tcp port {PORT}")).unwrap();
    let curl = slow_download(client, DOWNLOADS, PORT, LEN, 400_000, 30);
    std::thread::sleep(Duration::from_millis(1000));
    daemon.kill_hard().unwrap();

    // No daemon: the pinned programs still classify and block new flows.
    assert!(
        tls_blocked(client, GAMBLING),
        "still blocked while no daemon runs"
    );
    std::thread::sleep(Duration::from_millis(500));

    // The next daemon runs a policy whose categories are in another order: the running
    // download must stay in its category (by position it would now be gambling, blocked).
    setup.policy.rewrite(&policy_reordered());
    let daemon = setup.start_daemon();
    let status = daemon.status().unwrap();
    assert_eq!(status.categories, 3, "the reordered policy is in force");
    assert!(
        status.adopted,
        "the new daemon took the attachments over: {status:?}"
    );
    assert!(
        tls_blocked(client, GAMBLING),
        "blocked under the new daemon"
    );

    let (ok, size) = finish_download(curl);
    assert!(
        ok && size == LEN,
        "the download went on through the restart: {size} of {LEN}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let captured = capture.finish().unwrap();

    // Counters kept counting: the flow, begun under the first daemon, has every byte that
    // crossed the wire, as tcpdump saw them.
    let flow = flow_from_port(&daemon.flows().unwrap(), PORT);
    assert_eq!(
        (flow.category.as_str(), flow.verdict.as_str()),
        ("lab-downloads", "allow")
    );
    let (up, down) = capture::tally(&captured, flow.client, flow.server);
    assert_eq!(
        (flow.upload.packets, flow.upload.bytes),
        (up.packets, up.bytes),
        "upload"
    );
    assert_eq!(
        (flow.download.packets, flow.download.bytes),
        (down.packets, down.bytes),
        "download"
    );

    let pin_dir = daemon.pin_dir.clone();
    let exit = daemon.stop().unwrap();
    assert!(exit.success(), "{exit}");
    assert!(
        !pin_dir.exists(),
        "a clean stop removes the pinned maps and attachments"
    );
    assert!(!gateway_has_xdp(&setup.lab), "a clean stop detaches XDP");
    assert_tc_detached(&setup.lab);
}

/// Neither TCX programs nor clsact filters of ours, nor a clsact qdisc, on the gateway.
fn assert_tc_detached(lab: &Lab) {
    for iface in [lab.gateway.iface, GATEWAY_WAN_IFACE] {
        let left = gateway_tc_programs(lab, iface);
        assert!(left.is_empty(), "{iface}: {left}");
        assert!(!has_clsact(lab, iface), "{iface} keeps a clsact qdisc");
    }
}

/// Somebody else's filter on `hook` of the gateway's `iface` (and their clsact qdisc
/// first, when `with_qdisc`). u32: matchall and the gact action are not in every kernel
/// build.
fn add_foreign_filter(lab: &Lab, iface: &str, hook: &str, with_qdisc: bool) {
    let filter = [
        "filter", "add", "dev", iface, hook, "pref", "100", "protocol", "all", "u32", "match",
        "u32", "0", "0", "classid", "1:1",
    ];
    let qdisc = ["qdisc", "add", "dev", iface, "clsact"];
    let steps: Vec<&[&str]> = if with_qdisc {
        vec![&qdisc, &filter]
    } else {
        vec![&filter]
    };
    for args in steps {
        tc_ok(lab, args);
    }
}

fn tc_ok(lab: &Lab, args: &[&str]) {
    let status = Command::new("tc")
        .args(["-n", &lab.gateway.netns])
        .args(args)
        .status()
        .expect("tc runs");
    assert!(status.success(), "tc {args:?}");
}

/// The id of the program in our clsact filter on `hook` of `iface` ("... id 42 name ...").
fn filter_program_id(lab: &Lab, iface: &str, hook: &str) -> Option<u32> {
    let filters = clsact_filters(lab, iface, hook);
    let line = filters.lines().find(|l| l.contains("handle 0xc1a5"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "id")?;
    words.next()?.parse().ok()
}

/// On clsact filters (kernels before 6.6), a hand-over (SIGUSR1, as `systemctl restart`
/// does) leaves the filters enforcing while no daemon runs, the next daemon puts its
/// programs into the same filters (and puts back one removed by hand meanwhile), and a
/// clean stop takes off ours but never somebody else's qdisc or filter, even on a qdisc
/// a daemon of ours added. (That a qdisc we added and nobody else uses goes at a stop:
/// the kill -9 test on clsact filters.)
#[test]
fn on_clsact_filters_a_hand_over_keeps_enforcing_and_a_stop_leaves_only_what_was_there() {
    if !privileged("on_clsact_filters_a_hand_over_keeps_enforcing") {
        return;
    }
    let setup = Setup::new(&policy(false));
    let _tls = classifier_lab::tls::TlsServer::start(&setup.lab, &[GAMBLING.into()]).unwrap();
    let lab = &setup.lab;
    let lan = lab.gateway.iface;
    add_foreign_filter(lab, GATEWAY_WAN_IFACE, "egress", true);
    let mut args = TcAttach::Netlink.args();
    args.extend(["--fail-fast-replies".into(), "tc-redirect".into()]);
    let first = setup.start_daemon_with(args);
    assert_eq!(first.status().unwrap().tc_attach, "netlink");
    let first_egress = filter_program_id(lab, lan, "egress").expect("lan_egress is a filter");
    assert!(
        filter_program_id(lab, lan, "ingress").is_some(),
        "lan_replies"
    );
    assert!(
        filter_program_id(lab, GATEWAY_WAN_IFACE, "egress").is_some(),
        "wan_egress"
    );
    assert!(
        tls_reset(setup.client(), GAMBLING),
        "blocked and answered from the clsact filter"
    );

    assert!(first.hand_over().unwrap().success(), "SIGUSR1: a hand-over");
    assert_eq!(
        filter_program_id(lab, lan, "egress"),
        Some(first_egress),
        "the filter stays with no daemon"
    );
    assert!(
        tls_reset(setup.client(), GAMBLING),
        "no daemon: the filters still answer"
    );

    // Meanwhile someone removes our WAN filter by hand: the next daemon puts it back.
    let priority = classifier_user::loader::NETLINK_PRIORITY.to_string();
    let handle = format!("{:#x}", classifier_user::loader::NETLINK_HANDLE);
    tc_ok(
        lab,
        &[
            "filter",
            "del",
            "dev",
            GATEWAY_WAN_IFACE,
            "egress",
            "pref",
            &priority,
            "handle",
            &handle,
            "bpf",
        ],
    );
    let second = setup.start_daemon();
    let status = second.status().unwrap();
    assert!(status.adopted);
    assert_eq!(
        status.tc_attach, "netlink",
        "the filters taken over: {status:?}"
    );
    assert!(
        filter_program_id(lab, GATEWAY_WAN_IFACE, "egress").is_some(),
        "wan_egress is attached again: {}",
        clsact_filters(lab, GATEWAY_WAN_IFACE, "egress")
    );
    let second_egress = filter_program_id(lab, lan, "egress").expect("still a filter");
    assert_ne!(
        second_egress, first_egress,
        "the new daemon's program is in the filter"
    );
    assert_eq!(
        clsact_filters(lab, lan, "egress")
            .matches("handle 0xc1a5")
            .count(),
        1,
        "replaced in place, not added: {}",
        clsact_filters(lab, lan, "egress")
    );
    assert!(tls_reset(setup.client(), GAMBLING), "under the new daemon");
    // Someone puts a filter of theirs on the qdisc a daemon of ours added to the LAN.
    add_foreign_filter(lab, lan, "ingress", false);

    let pin_dir = second.pin_dir.clone();
    assert!(second.stop().unwrap().success());
    assert!(!pin_dir.exists(), "a clean stop removes every pin");
    let lan_ingress = clsact_filters(lab, lan, "ingress");
    assert!(
        has_clsact(lab, lan) && lan_ingress.contains("u32") && !lan_ingress.contains("0xc1a5"),
        "the qdisc we added stays for the filter put on it since; ours goes: {lan_ingress}"
    );
    assert!(
        clsact_filters(lab, lan, "egress").is_empty(),
        "{}",
        clsact_filters(lab, lan, "egress")
    );
    assert!(
        has_clsact(lab, GATEWAY_WAN_IFACE),
        "somebody else's qdisc stays"
    );
    let theirs = clsact_filters(lab, GATEWAY_WAN_IFACE, "egress");
    assert!(
        theirs.contains("u32") && !theirs.contains("0xc1a5"),
        "their filter stays, ours goes: {theirs}"
    );
}

/// Whether an HTTPS connection to `name` is refused at once with a reset (the fail-fast
/// answer), not left to time out.
fn tls_reset(client: &Host, name: &str) -> bool {
    let output = Lab::command(client, "curl")
        .args(["--silent", "--show-error", "--ipv4", "--insecure"])
        .args(["--max-time", "5", "--output", "/dev/null"])
        .arg(format!("https://{name}/"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&output.stderr)
        .to_ascii_lowercase()
        .contains("reset")
}

#[test]
fn a_reload_blocks_running_and_new_flows_and_a_bad_file_changes_nothing() {
    if !privileged("a_reload_blocks_running_and_new_flows_and_a_bad_file_changes_nothing") {
        return;
    }
    let setup = Setup::new(&policy(false));
    let _tls = classifier_lab::tls::TlsServer::start(&setup.lab, &[GAMBLING.into()]).unwrap();
    let client = setup.client();
    let daemon = setup.start_daemon();
    let before = daemon.status().unwrap();
    assert_eq!(before.period, "working");

    // A bad file: refused with file, line and field; nothing changes.
    setup
        .policy
        .rewrite(&(policy(false) + "\n[[rules]]\naction = \"explode\"\n"));
    let refused = reload(&daemon.control_socket);
    assert!(!refused.status.success(), "a bad policy is refused");
    let message = String::from_utf8_lossy(&refused.stderr);
    let file = setup.policy.path().display().to_string();
    assert!(
        message.contains(&file)
            && message.contains("rules[1].action")
            && message.contains("unchanged"),
        "the refusal names file, line and field: {message}"
    );
    let after_bad = daemon.status().unwrap();
    assert_eq!(
        after_bad.policy_generation, before.policy_generation,
        "no swap"
    );
    assert_eq!(after_bad.rules, before.rules);
    assert!(
        tls_blocked(client, GAMBLING),
        "gambling is still blocked after the refused reload"
    );

    // A running download, allowed so far.
    const PORT: u16 = 40200;
    let curl = slow_download(client, DOWNLOADS, PORT, 3_000_000, 300_000, 15);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        flow_from_port(&daemon.flows().unwrap(), PORT).verdict,
        "allow"
    );

    // The reload blocks it where it runs.
    setup.policy.rewrite(&policy(true));
    let reloaded = reload(&daemon.control_socket);
    assert!(
        reloaded.status.success(),
        "{}",
        String::from_utf8_lossy(&reloaded.stderr)
    );
    let (ok, size) = finish_download(curl);
    assert!(
        !ok && size < 3_000_000,
        "the running download was cut: {size} bytes, ok={ok}"
    );
    let flow = flow_from_port(&daemon.flows().unwrap(), PORT);
    assert_eq!(flow.verdict, "block");
    assert!(flow.blocked.packets > 0, "{flow:?}");
    assert!(daemon.status().unwrap().policy_generation > before.policy_generation);

    // And new flows are blocked from their first request.
    let (ok, size) = finish_download(slow_download(
        client, DOWNLOADS, 40201, 10_000, 1_000_000, 4,
    ));
    assert!(!ok && size == 0, "a new download is blocked: {size} bytes");

    // SIGHUP reloads too: back to the first policy, downloads allowed again.
    setup.policy.rewrite(&policy(false));
    let generation = daemon.status().unwrap().policy_generation;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.status().unwrap().policy_generation == generation {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, size) = finish_download(slow_download(
        client, DOWNLOADS, 40202, 10_000, 1_000_000, 10,
    ));
    assert!(
        ok && size == 10_000,
        "allowed again after SIGHUP: {size} bytes"
    );
    daemon.stop().unwrap();
}

fn reload(control_socket: &Path) -> std::process::Output {
    Command::new(classifier_bin())
        .args(["policy", "reload", "--control-socket"])
        .arg(control_socket)
        .output()
        .expect("classifier policy reload runs")
}
