//! The Debian package, installed by dpkg into a root of its own (maintainer scripts
//! included), runs the lab's gateway as its systemd unit would run it: the installed
//! binary, no Rust or LLVM on its PATH, only CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, group
//! `classifier`, no new privileges, the installed default policy. Readiness comes over
//! NOTIFY_SOCKET, logs carry journal priorities, the control socket's group lets a member
//! in, a reload is refused or taken, and the unit's stop hands the datapath over when
//! systemd is restarting the unit and detaches it otherwise.

use std::{
    net::IpAddr,
    os::{
        fd::AsFd as _,
        unix::{fs::MetadataExt as _, fs::PermissionsExt as _, net::UnixDatagram},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use classifier_lab::{
    Lab, LabSpec,
    http::HttpServer,
    tls::TlsServer,
    topology::{GATEWAY_WAN_IFACE, SERVICE_V4},
};
use classifier_tests::{
    clients::{curl_download, gateway_has_xdp, tls_blocked},
    package::{InstalledRoot, debian_package, run_ok},
    privileged,
};

/// Blocked at all times by the council's default policy (category gambling).
const GAMBLING: &str = "www.bet365.com";
/// In no category: allowed.
const DOWNLOADS: &str = "downloads.example.test";
/// The capabilities the unit grants (CapabilityBoundingSet=).
const UNIT_CAPS: &str = "+bpf,+net_admin,+perfmon";

/// What the unit's environment would hold: the package's files, a PATH with nothing on it
/// but the test's stand-in for systemctl, the runtime and state directories.
struct Service<'a> {
    installed: &'a InstalledRoot,
    lab: &'a Lab,
    /// The PATH of the daemon and its CLI: only `systemctl` (a stand-in) is there.
    bin_dir: PathBuf,
    /// RuntimeDirectory= (root:classifier 0750).
    run_dir: PathBuf,
    pin_dir: PathBuf,
    log_file: PathBuf,
    notify: UnixDatagram,
    notify_path: PathBuf,
    group: GroupGuard,
}

impl<'a> Service<'a> {
    fn new(installed: &'a InstalledRoot, lab: &'a Lab) -> Self {
        let base = std::env::temp_dir().join(format!("classifier-pkg-{}", lab.id));
        let _ = std::fs::remove_dir_all(&base);
        let bin_dir = base.join("bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        let group = GroupGuard::ensure("classifier");
        let run_dir = PathBuf::from(format!("/run/classifier-pkg-{}", lab.id));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir).unwrap();
        nix::unistd::chown(&run_dir, None, Some(nix::unistd::Gid::from_raw(group.gid))).unwrap();
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        let notify_path = base.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        Self {
            installed,
            lab,
            bin_dir,
            run_dir,
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/classifier-pkg-{}", lab.id)),
            log_file: base.join("journal.log"),
            notify,
            notify_path,
            group,
        }
    }

    fn binary(&self) -> PathBuf {
        self.installed.path("/usr/bin/classifier")
    }

    fn policy(&self) -> PathBuf {
        self.installed.path("/etc/classifier/policy.toml")
    }

    fn control_socket(&self) -> PathBuf {
        self.run_dir.join("control.sock")
    }

    /// The installed binary with the unit's environment: nothing inherited but a PATH
    /// without Rust or LLVM.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.env_clear().env("PATH", &self.bin_dir);
        command
    }

    /// `classifier ARGS` as root, with the unit's PATH.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        self.command(&self.binary())
            .args(args)
            .output()
            .expect("the installed classifier runs")
    }

    /// `classifier run` as ExecStart= runs it: in the gateway's network namespace, with
    /// only `caps`, group classifier, no new privileges; interfaces from the environment
    /// (/etc/default/classifier); stderr a journal stream.
    fn start(&self, caps: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .unwrap();
        let stat = nix::sys::stat::fstat(log.as_fd()).unwrap();
        let mut command = self.command(Path::new("/usr/bin/nsenter"));
        command
            .arg(format!("--net=/run/netns/{}", self.lab.gateway.netns))
            .arg("/usr/bin/setpriv")
            .arg(format!("--bounding-set=-all,{caps}"))
            .args(["--inh-caps=-all", "--no-new-privs", "--clear-groups"])
            .arg(format!("--regid={}", self.group.gid))
            .arg(self.binary())
            .arg("run")
            .arg("--policy")
            .arg(self.policy())
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--control-socket")
            .arg(self.control_socket())
            .arg("--store")
            .arg(self.run_dir.join("flows.sqlite"))
            .env("CLASSIFIER_IFACE", self.lab.gateway.iface)
            .env("CLASSIFIER_WAN", GATEWAY_WAN_IFACE)
            .env("NOTIFY_SOCKET", &self.notify_path)
            .env("JOURNAL_STREAM", format!("{}:{}", stat.st_dev, stat.st_ino))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        command.spawn().expect("nsenter and setpriv run")
    }

    /// Waits for a notification containing `wanted`, failing if `daemon` exits first.
    fn wait_notified(&self, wanted: &str, daemon: &mut Child) -> Vec<String> {
        self.notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(len) = self.notify.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..len]).into_owned();
                let done = message.lines().any(|l| l == wanted);
                seen.push(message);
                if done {
                    return seen;
                }
            }
            if let Some(status) = daemon.try_wait().unwrap() {
                panic!(
                    "the daemon exited ({status}) before {wanted}; notified {seen:?}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {wanted} within 60 s; notified {seen:?}; log:\n{}",
                self.log()
            );
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// `classifier stop --systemd-unit classifier.service PID` as ExecStop= runs it, with
    /// systemctl answering that `job` (restart, stop) runs on the unit.
    fn unit_stop(&self, daemon: &mut Child, job: &str) -> std::process::ExitStatus {
        std::fs::write(
            self.bin_dir.join("systemctl"),
            format!("#!/bin/sh\necho '4242 classifier.service {job} running'\n"),
        )
        .unwrap();
        std::fs::set_permissions(
            self.bin_dir.join("systemctl"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let pid = daemon.id().to_string();
        let output = self.cli(&["stop", "--systemd-unit", "classifier.service", &pid]);
        assert!(
            output.status.success(),
            "classifier stop: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        daemon.wait().unwrap()
    }
}

impl Drop for Service<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run_dir);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        if let Some(base) = self.bin_dir.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// The `classifier` group on this host, as the package's sysusers.d file makes it; removed
/// again if this test made it.
struct GroupGuard {
    gid: u32,
    created: bool,
}

impl GroupGuard {
    fn ensure(name: &str) -> Self {
        if let Some(group) = nix::unistd::Group::from_name(name).unwrap() {
            return Self {
                gid: group.gid.as_raw(),
                created: false,
            };
        }
        run_ok(Command::new("groupadd").args(["--system", name]));
        let group = nix::unistd::Group::from_name(name).unwrap().unwrap();
        Self {
            gid: group.gid.as_raw(),
            created: true,
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.created {
            let _ = Command::new("groupdel").arg("classifier").status();
        }
    }
}

#[test]
fn the_installed_package_runs_the_gateway_as_its_unit_would() {
    let test = "the_installed_package_runs_the_gateway_as_its_unit_would";
    if !privileged(test) {
        return;
    }
    let Some(deb) = debian_package(test) else {
        return;
    };
    let started = Instant::now();
    let installed = InstalledRoot::install(&deb);
    // The maintainer script made the group (systemd-sysusers, in the root).
    let group_file = std::fs::read_to_string(installed.path("/etc/group")).unwrap_or_default();
    assert!(
        group_file.lines().any(|l| l.starts_with("classifier:")),
        "postinst made the classifier group: /etc/group is {group_file:?}; dpkg said {}",
        installed.dpkg_output
    );
    assert_eq!(
        std::fs::read_to_string(installed.path("/etc/classifier/policy.toml")).unwrap(),
        classifier_user::policy::DEFAULT_POLICY,
        "the conffile is the council's default policy"
    );

    let lab = Lab::up(&LabSpec {
        server_names: vec![DOWNLOADS.into(), GAMBLING.into()],
        ..LabSpec::default()
    })
    .expect("lab comes up");
    let _http = HttpServer::start(
        &lab.server.netns,
        &[std::net::SocketAddr::new(SERVICE_V4.into(), 80)],
    )
    .unwrap();
    let _tls = TlsServer::start(&lab, &[GAMBLING.into()]).unwrap();
    let client = &lab.clients[0];
    let service = Service::new(&installed, &lab);
    for tool in ["cargo", "rustc", "clang", "llc", "bpf-linker"] {
        assert!(
            !service.bin_dir.join(tool).exists(),
            "{tool} on the service's PATH"
        );
    }

    // ExecStartPre=: the installed policy checks.
    let policy = service.policy().display().to_string();
    let check = service.cli(&["policy", "check", &policy]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Without CAP_PERFMON the start fails at once, naming it (and nothing is left behind).
    let mut short = service.start("+bpf,+net_admin");
    let status = short.wait().unwrap();
    assert_eq!(status.code(), Some(1), "log:\n{}", service.log());
    let log = service.log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("<3>error: `classifier run` lacks CAP_PERFMON")),
        "one error line with its journal priority, naming the capability:\n{log}"
    );
    assert!(!service.pin_dir.exists());

    // ExecStart=, with exactly the unit's capabilities: READY=1 once it enforces.
    let mut daemon = service.start(UNIT_CAPS);
    let notified = service.wait_notified("READY=1", &mut daemon);
    let ready = notified.last().unwrap();
    assert!(
        ready.contains("STATUS=enforcing") && ready.contains("on lan0"),
        "readiness comes with a status line: {ready:?}"
    );
    // Ready means answering: asked at once, the daemon has its status.
    let status = service.cli(&[
        "status",
        "--json",
        "--control-socket",
        &service.control_socket().display().to_string(),
    ]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(tls_blocked(client, GAMBLING), "gambling is blocked");
    curl_download(client, DOWNLOADS, IpAddr::V4(SERVICE_V4), 40300, 100_000);
    let log = service.log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6> INFO") && l.contains("datapath attached")),
        "info lines carry priority 6:\n{log}"
    );

    // The control socket belongs to group classifier (no CAP_CHOWN needed): a member may
    // ask, anyone else is turned away.
    let socket = std::fs::metadata(service.control_socket()).unwrap();
    assert_eq!(
        (socket.gid(), socket.mode() & 0o777),
        (service.group.gid, 0o660)
    );
    let as_user = |gid: u32| {
        service
            .command(Path::new("/usr/bin/setpriv"))
            .args(["--reuid=65534", "--clear-groups"])
            .arg(format!("--regid={gid}"))
            .arg(service.binary())
            .args(["status", "--control-socket"])
            .arg(service.control_socket())
            .output()
            .unwrap()
    };
    let member = as_user(service.group.gid);
    assert!(
        member.status.success(),
        "a member of classifier asks: {}",
        String::from_utf8_lossy(&member.stderr)
    );
    let stranger = as_user(65534);
    assert!(!stranger.status.success(), "nobody is turned away");

    // ExecReload=: a bad file is refused (the reload fails, naming file and field), logged
    // as a warning; a good one is taken. systemd hears RELOADING=1, then READY=1.
    let socket_arg = service.control_socket().display().to_string();
    let good = std::fs::read_to_string(service.policy()).unwrap();
    std::fs::write(
        service.policy(),
        format!("{good}\n[[rules]]\naction = \"explode\"\n"),
    )
    .unwrap();
    let refused = service.cli(&["policy", "reload", "--control-socket", &socket_arg]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("action"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let notified = service.wait_notified("READY=1", &mut daemon);
    assert!(
        notified.iter().any(|m| m.contains("RELOADING=1")),
        "{notified:?}"
    );
    let log = service.log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("<4> WARN") && l.contains("policy reload refused")),
        "`journalctl -p warning` finds the refused reload:\n{log}"
    );
    std::fs::write(service.policy(), &good).unwrap();
    let taken = service.cli(&["policy", "reload", "--control-socket", &socket_arg]);
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    service.wait_notified("READY=1", &mut daemon);

    // `systemctl restart`: ExecStop= hands the datapath over; it goes on blocking with no
    // daemon, and the next one takes it over.
    let exit = service.unit_stop(&mut daemon, "restart");
    assert!(exit.success(), "{exit}; log:\n{}", service.log());
    assert!(
        service.pin_dir.exists() && gateway_has_xdp(&lab),
        "the datapath stays attached"
    );
    assert!(
        tls_blocked(client, GAMBLING),
        "blocked while no daemon runs"
    );
    let mut daemon = service.start(UNIT_CAPS);
    service.wait_notified("READY=1", &mut daemon);
    let status = service.cli(&["status", "--json", "--control-socket", &socket_arg]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["adopted"], true, "the new daemon took it over");
    assert!(
        tls_blocked(client, GAMBLING),
        "blocked under the new daemon"
    );

    // `systemctl stop`: ExecStop= detaches it.
    let exit = service.unit_stop(&mut daemon, "stop");
    assert!(exit.success(), "{exit}; log:\n{}", service.log());
    assert!(!service.pin_dir.exists(), "a stop removes the pins");
    assert!(!gateway_has_xdp(&lab), "a stop detaches XDP");
    eprintln!(
        "installed package ran the lab gateway in {:.1?}",
        started.elapsed()
    );
}
