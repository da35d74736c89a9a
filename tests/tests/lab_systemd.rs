//! The package's unit under a real systemd: this host's root booted by systemd-nspawn (in
//! a throw-away overlay) inside the lab's gateway namespace, the package installed there
//! with `dpkg -i`, the service started, reloaded, restarted and stopped with systemctl,
//! upgraded and removed with dpkg, its warnings read back with `journalctl -p warning`, and
//! its exposure rated by `systemd-analyze security` against the running manager. Every
//! sandbox setting of the unit is in force here, which the offline checks cannot show.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Instant,
};

use classifier_lab::{
    Lab, LabSpec,
    http::HttpServer,
    tls::TlsServer,
    topology::{GATEWAY_WAN_IFACE, SERVICE_V4},
};
use classifier_tests::{
    clients::{curl_download, gateway_has_xdp, tls_blocked},
    nspawn::Container,
    package::{debian_package, tool},
    privileged,
};

/// Blocked at all times by the council's default policy (category gambling).
const GAMBLING: &str = "www.bet365.com";
/// In no category: allowed.
const DOWNLOADS: &str = "downloads.example.test";

/// The unit's pin directory in the host's bpffs (bound into the container): one of this
/// test's own (`--pin-dir` in /etc/default/classifier), never a real service's. Removed on
/// drop, also when the test fails with the daemon killed and its pins left.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Rust and LLVM tools of this build machine, each of which must not run in the container.
const TOOLCHAIN: [&str; 7] = [
    "cargo",
    "rustc",
    "clang-22",
    "llc",
    "llc-22",
    "bpf-linker",
    "/root/.cargo/bin/cargo",
];

/// Hides the build machine's Rust and LLVM inside the container (its own mount namespace:
/// the host keeps them): empty directories over theirs, /dev/null over the binaries.
const HIDE_TOOLCHAINS: &str = "set -e
for dir in /usr/lib/llvm-* /usr/lib/rustlib /root/.cargo /root/.rustup; do
    [ -d \"$dir\" ] && mount -t tmpfs -o ro,size=4k none \"$dir\"
done
for bin in /usr/bin/cargo /usr/bin/rustc /usr/bin/rustdoc /usr/bin/rustc-web \
           /usr/bin/cargo-web; do
    [ -e \"$bin\" ] && mount --bind /dev/null \"$bin\"
done
true";

/// The generation of the policy the running daemon enforces (one more at each reload).
fn policy_generation(container: &Container) -> u64 {
    let status = container.run_ok(&["classifier", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    status["policy_generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("no policy_generation in {status}"))
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
    let lab = Lab::up(&LabSpec {
        server_names: vec![DOWNLOADS.into(), GAMBLING.into()],
        ..LabSpec::default()
    })
    .expect("lab comes up");
    let _http =
        HttpServer::start(&lab.server.netns, &[SocketAddr::new(SERVICE_V4.into(), 80)]).unwrap();
    let _tls = TlsServer::start(&lab, &[GAMBLING.into()]).unwrap();
    let client = &lab.clients[0];
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/classifier-unit-{}",
        lab.id
    )));
    let started = Instant::now();
    let container = Container::boot(&format!("cls-{}", lab.id), &lab.gateway.netns, &deb)
        .expect("the container boots");

    eprintln!("container booted in {:.1?}", started.elapsed());
    // A gateway has no Rust or LLVM: hide this host's, and show they are gone.
    container.run_ok(&["sh", "-c", HIDE_TOOLCHAINS]);
    for tool in TOOLCHAIN {
        let found = container.run(&[tool, "--version"]).unwrap();
        assert!(
            !found.status.success(),
            "{tool} still runs in the container"
        );
    }

    // Nor is it a Docker image: this host's /usr/sbin/policy-rc.d forbids maintainer
    // scripts to restart or stop services (exit 101). Removed in the overlay only.
    container.run_ok(&["rm", "-f", "/usr/sbin/policy-rc.d"]);
    // Indexing every man page of this host (man-db's dpkg trigger) at each dpkg run would
    // be most of this test's time; the package's pages are checked in package.rs.
    container.run_ok(&["rm", "-f", "/var/lib/man-db/auto-update"]);

    // Installed, but not enabled or started: the interfaces come first.
    let deb = Container::BOUND_FILE.to_owned();
    container.run_ok(&["dpkg", "--install", &deb]);
    container.run_ok(&["getent", "group", "classifier"]);
    // Every line of the unit as this systemd reads it: no unknown key, no missing path.
    let verify = container
        .run(&[
            "systemd-analyze",
            "verify",
            "--man=no",
            "classifier.service",
        ])
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && !said.contains("classifier.service"),
        "systemd-analyze verify: {}\n{said}",
        verify.status
    );
    let enabled = container
        .run(&["systemctl", "is-enabled", "classifier"])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled");
    container.run_ok(&[
        "sh",
        "-c",
        &format!(
            "printf 'CLASSIFIER_IFACE={}\\nCLASSIFIER_WAN={}\\n\
             CLASSIFIER_RUN_ARGS=--pin-dir {}\\n' > /etc/default/classifier \
             && cp /etc/classifier/policy.toml /root/policy.good",
            lab.gateway.iface,
            GATEWAY_WAN_IFACE,
            pins.0.display()
        ),
    ]);

    // Type=notify: `systemctl start` returns once the daemon said READY=1.
    let start = container
        .run(&["systemctl", "start", "classifier"])
        .unwrap();
    assert!(
        start.status.success(),
        "systemctl start: {}\n{}",
        String::from_utf8_lossy(&start.stderr),
        container.run_ok(&["journalctl", "--unit=classifier", "--no-pager"])
    );
    let status_text = container.run_ok(&[
        "systemctl",
        "show",
        "--property=StatusText",
        "--value",
        "classifier",
    ]);
    assert!(
        status_text.contains("enforcing")
            && status_text.contains(&format!("on {}", lab.gateway.iface)),
        "{status_text}"
    );
    assert!(tls_blocked(client, GAMBLING), "gambling is blocked");
    curl_download(client, DOWNLOADS, IpAddr::V4(SERVICE_V4), 40400, 100_000);
    let status = container.run_ok(&["classifier", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["adopted"], false);
    assert!(pins.0.exists(), "the unit pins into {}", pins.0.display());

    // The control socket's group, under the unit: a member asks, anyone else is refused.
    container.run_ok(&[
        "useradd",
        "--system",
        "--groups",
        "classifier",
        "cls-member",
    ]);
    container.run_ok(&["useradd", "--system", "cls-stranger"]);
    let as_user = |user: &str| {
        container
            .run(&[
                "setpriv",
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--init-groups",
                "classifier",
                "status",
            ])
            .unwrap()
    };
    let member = as_user("cls-member");
    assert!(
        member.status.success(),
        "a member of classifier asks: {}",
        String::from_utf8_lossy(&member.stderr)
    );
    let stranger = as_user("cls-stranger");
    assert!(
        !stranger.status.success(),
        "anyone else is refused: {}",
        String::from_utf8_lossy(&stranger.stdout)
    );

    // A bad policy: `systemctl reload` fails, the warning is in the journal, and the policy
    // in force stays; a good one is taken (a new generation).
    let generation = || policy_generation(&container);
    let first = generation();
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
    assert_eq!(generation(), first, "the refused policy changed nothing");
    container.run_ok(&["cp", "/root/policy.good", "/etc/classifier/policy.toml"]);
    container.run_ok(&["systemctl", "reload", "classifier"]);
    assert!(generation() > first, "ExecReload= reloaded the policy");
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
    assert!(!pins.0.exists(), "a stop removes the pins");
    assert!(!gateway_has_xdp(&lab), "a stop detaches XDP");
    let journal = container.run_ok(&["journalctl", "--unit=classifier", "--no-pager"]);
    assert!(
        journal.contains("handing the datapath over") && journal.contains("detaching the datapath"),
        "{journal}"
    );

    // A package upgrade (`dpkg -i` again; the same version is an upgrade to dpkg too)
    // restarts a running service with a hand-over; removing the package stops it, detaching.
    container.run_ok(&["systemctl", "start", "classifier"]);
    let before = main_pid(&container);
    container.run_ok(&["dpkg", "--install", &deb]);
    assert_ne!(
        main_pid(&container),
        before,
        "the upgrade restarted the daemon"
    );
    let status = container.run_ok(&["classifier", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["adopted"], true, "handed over on upgrade: {status}");
    container.run_ok(&["dpkg", "--remove", "classifier"]);
    assert!(!pins.0.exists(), "removing the package removes the pins");
    assert!(!gateway_has_xdp(&lab), "removing the package detaches XDP");
    eprintln!(
        "the unit's life under systemd took {:.1?}",
        started.elapsed()
    );
}
