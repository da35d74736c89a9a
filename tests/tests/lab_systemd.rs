//! The package's unit under a real systemd: this host's root booted by systemd-nspawn (in
//! a throw-away overlay) inside the lab's gateway namespace, the package installed there
//! with `dpkg -i`, the service started, reloaded, restarted and stopped with systemctl,
//! its warnings read back with `journalctl -p warning`, and its exposure rated by
//! `systemd-analyze security` against the running manager. Every sandbox setting of the
//! unit is in force here, which the offline checks cannot show.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::Command,
};

use classifier_tests::{
    clients::curl_download,
    nspawn::Container,
    package::{debian_package, tool},
    privileged,
};
use classifier_user::lab::{
    Host, Lab, LabSpec, http::HttpServer, tls::TlsServer, topology::SERVICE_V4,
};

/// Blocked at all times by the council's default policy (category gambling).
const GAMBLING: &str = "www.bet365.com";
/// In no category: allowed.
const DOWNLOADS: &str = "downloads.example.test";
/// The unit's pin directory (`classifier run`'s default), in the host's bpffs.
const PIN_DIR: &str = "/sys/fs/bpf/classifier";

fn tls_blocked(client: &Host, name: &str) -> bool {
    let output = Lab::command(client, "curl")
        .args(["--silent", "--ipv4", "--insecure", "--max-time", "3"])
        .args(["--output", "/dev/null"])
        .arg(format!("https://{name}/"))
        .output()
        .expect("curl runs");
    !output.status.success()
}

fn gateway_has_xdp(lab: &Lab) -> bool {
    let output = Command::new("ip")
        .args(["-n", &lab.gateway.netns, "link", "show", lab.gateway.iface])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&output.stdout).contains("xdp")
}

fn main_pid(container: &Container) -> String {
    container
        .run_ok(&[
            "systemctl",
            "show",
            "--property=MainPID",
            "--value",
            "classifier",
        ])
        .trim()
        .to_owned()
}

#[test]
fn the_unit_runs_under_systemd_reloads_restarts_with_a_hand_over_and_stops() {
    let test = "the_unit_runs_under_systemd_reloads_restarts_with_a_hand_over_and_stops";
    if !privileged(test) || !tool(test, "systemd-nspawn", "systemd-container") {
        return;
    }
    let Some(deb) = debian_package(test) else {
        return;
    };
    assert!(
        !Path::new(PIN_DIR).exists(),
        "{PIN_DIR} is in use on this host: a classifier service runs here?"
    );
    let lab = Lab::up(&LabSpec {
        server_names: vec![DOWNLOADS.into(), GAMBLING.into()],
        ..LabSpec::default()
    })
    .expect("lab comes up");
    let _http =
        HttpServer::start(&lab.server.netns, &[SocketAddr::new(SERVICE_V4.into(), 80)]).unwrap();
    let _tls = TlsServer::start(&lab, &[GAMBLING.into()]).unwrap();
    let client = &lab.clients[0];
    let container = Container::boot(&format!("cls-{}", lab.id), &lab.gateway.netns)
        .expect("the container boots");

    // Installed, but not enabled or started: the interfaces come first.
    let deb = deb.display().to_string();
    container.run_ok(&["dpkg", "--install", &deb]);
    container.run_ok(&["getent", "group", "classifier"]);
    let enabled = container
        .run(&["systemctl", "is-enabled", "classifier"])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled");
    container.run_ok(&[
        "sh",
        "-c",
        "printf 'CLASSIFIER_IFACE=lan0\\nCLASSIFIER_WAN=wan0\\n' > /etc/default/classifier \
         && cp /etc/classifier/policy.toml /root/policy.good",
    ]);

    // Type=notify: `systemctl start` returns once the daemon said READY=1.
    container.run_ok(&["systemctl", "start", "classifier"]);
    let status_text = container.run_ok(&[
        "systemctl",
        "show",
        "--property=StatusText",
        "--value",
        "classifier",
    ]);
    assert!(
        status_text.contains("enforcing") && status_text.contains("on lan0"),
        "{status_text}"
    );
    assert!(tls_blocked(client, GAMBLING), "gambling is blocked");
    curl_download(client, DOWNLOADS, IpAddr::V4(SERVICE_V4), 40400, 100_000);
    let status = container.run_ok(&["classifier", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["adopted"], false);

    // A bad policy: `systemctl reload` fails and the warning is in the journal.
    container.run_ok(&[
        "sh",
        "-c",
        "printf '\\n[[rules]]\\naction = \"explode\"\\n' >> /etc/classifier/policy.toml",
    ]);
    let reload = container
        .run(&["systemctl", "reload", "classifier"])
        .unwrap();
    assert!(
        !reload.status.success(),
        "a refused policy fails the reload"
    );
    let warnings = container.run_ok(&[
        "journalctl",
        "--unit=classifier",
        "--priority=warning",
        "--no-pager",
    ]);
    assert!(
        warnings.contains("policy reload refused") && !warnings.contains("datapath attached"),
        "journalctl -p warning has the warning and not the info lines:\n{warnings}"
    );
    container.run_ok(&["cp", "/root/policy.good", "/etc/classifier/policy.toml"]);
    container.run_ok(&["systemctl", "reload", "classifier"]);
    assert_eq!(
        container
            .run_ok(&["systemctl", "is-active", "classifier"])
            .trim(),
        "active"
    );

    // `systemctl restart`: a new daemon, which took the datapath over.
    let before = main_pid(&container);
    container.run_ok(&["systemctl", "restart", "classifier"]);
    let after = main_pid(&container);
    assert_ne!(before, after, "a new daemon");
    let status = container.run_ok(&["classifier", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["adopted"], true,
        "the restarted daemon took the datapath over: {status}"
    );
    assert!(tls_blocked(client, GAMBLING), "still blocked");

    // The running unit's exposure, every setting as the manager parsed it.
    let security = container.run_ok(&["systemd-analyze", "security", "--no-pager", "classifier"]);
    let exposure: f64 = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{security}"));
    eprintln!("systemd-analyze security classifier (running): {exposure}");
    assert!(exposure <= 3.0, "{security}");

    // `systemctl stop`: detached and unpinned.
    container.run_ok(&["systemctl", "stop", "classifier"]);
    assert!(!Path::new(PIN_DIR).exists(), "a stop removes the pins");
    assert!(!gateway_has_xdp(&lab), "a stop detaches XDP");
    let journal = container.run_ok(&["journalctl", "--unit=classifier", "--no-pager"]);
    assert!(
        journal.contains("handing the datapath over") && journal.contains("detaching the datapath"),
        "{journal}"
    );
}
