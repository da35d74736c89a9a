//! A start that cannot work fails at once: exit status 1, one line on stderr naming the
//! cause and the fix, and nothing left behind.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use classifier_lab::{
    Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
    topology::GATEWAY_WAN_IFACE,
};
use classifier_tests::{
    classifier_bin, clients::gateway_has_xdp, flows_json, privileged, tc::gateway_tc_programs,
};

fn classifier(args: &[&str]) -> Command {
    let mut command = Command::new(classifier_bin());
    command.args(args).env("RUST_LOG", "info");
    command
}

/// Asserts the one-line failure: status 1 and a single stderr line `error: ...` that
/// contains every one of `expected`.
fn assert_fails_with(output: &Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "exit status; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for part in expected {
        assert!(lines[0].contains(part), "`{part}` missing from: {stderr}");
    }
}

fn unique_pin_dir(name: &str) -> PathBuf {
    PathBuf::from(format!(
        "/sys/fs/bpf/classifier-test-{name}-{}",
        std::process::id()
    ))
}

/// A lab with one client, whose gateway the daemons under test run on.
fn one_client_lab() -> Lab {
    Lab::up(&LabSpec {
        clients: 1,
        ..LabSpec::default()
    })
    .unwrap()
}

/// `classifier run` in `lab`'s gateway namespace on `iface`, its maps pinned in `pin_dir`.
fn run_on_gateway(lab: &Lab, iface: &str, pin_dir: &Path) -> Command {
    let mut command = classifier(&["run", "--netns", &lab.gateway.netns, "--iface", iface]);
    command.arg("--pin-dir").arg(pin_dir);
    command
}

#[test]
fn without_root_it_names_the_capabilities_and_says_to_use_sudo() {
    if !privileged("without_root_it_names_the_capabilities_and_says_to_use_sudo") {
        return;
    }
    // Drop to nobody for the child only; `setpriv` is in util-linux.
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(classifier_bin())
        .args(["run", "--iface", "lo"])
        .output()
        .unwrap();
    assert_fails_with(
        &output,
        &["lacks CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON", "sudo"],
    );
}

#[test]
fn root_without_a_capability_is_refused_by_name() {
    if !privileged("root_without_a_capability_is_refused_by_name") {
        return;
    }
    // Still uid 0, but CAP_NET_ADMIN is gone: a uid check would let this start and fail
    // later, in the middle of attaching.
    let output = Command::new("setpriv")
        .args([
            "--bounding-set=-all,+bpf,+perfmon,+sys_admin",
            "--inh-caps=-all",
        ])
        .arg(classifier_bin())
        .args(["run", "--iface", "lo", "--netns", "nosuch-ns"])
        .output()
        .unwrap();
    assert_fails_with(
        &output,
        &["lacks CAP_NET_ADMIN:", "--ambient-caps=+net_admin"],
    );
}

#[test]
fn without_kernel_btf_it_names_the_kernel_option() {
    if !privileged("without_kernel_btf_it_names_the_kernel_option") {
        return;
    }
    let output = classifier(&["run", "--iface", "lo"])
        .env("CLASSIFIER_KERNEL_BTF", "/nonexistent/vmlinux")
        .output()
        .unwrap();
    assert_fails_with(&output, &["kernel BTF not found", "CONFIG_DEBUG_INFO_BTF"]);
}

/// `classifier preflight` on this kernel: every feature the BPF object uses, with the
/// kernel that brought it, present; the minimum kernel; TCX links for TC.
#[test]
fn preflight_lists_what_the_datapath_needs_and_this_kernel_has_it() {
    if !privileged("preflight_lists_what_the_datapath_needs_and_this_kernel_has_it") {
        return;
    }
    let output = classifier(&["preflight"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (feature, since) in [
        ("kernel BTF", "5.4"),
        ("bpf_loop", "5.17"),
        ("bpf_xdp_load_bytes", "5.18"),
        ("bpf_dynptr_read", "5.19"),
        ("bpf_ringbuf_reserve", "5.8"),
        ("ring buffer", "5.8"),
        ("LRU hash map", "4.10"),
        ("TCX", "6.6"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(feature))
            .unwrap_or_else(|| panic!("{feature} not listed:\n{stdout}"));
        assert!(
            line.contains(&format!("since {since} ")) && line.ends_with("yes"),
            "{line}"
        );
    }
    assert!(
        stdout.contains("minimum kernel for the datapath: 5.19"),
        "{stdout}"
    );
    assert!(stdout.contains("TC programs: TCX links"), "{stdout}");
    assert!(
        stdout.contains("verifier: takes every program of the modern build"),
        "preflight loads the programs it reports on: {stdout}"
    );

    let without_tcx = classifier(&["preflight"])
        .env("CLASSIFIER_PRETEND_KERNEL_LACKS", "tcx")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&without_tcx.stdout);
    assert!(
        without_tcx.status.success(),
        "TCX is not required: {stdout}"
    );
    assert!(
        stdout.contains("TC programs: clsact filters over netlink (no TCX: it needs 6.6+)"),
        "{stdout}"
    );
}

/// A kernel without a helper the datapath calls (as 5.15 lacks bpf_loop): the start fails
/// at once naming each missing feature and the kernel that has it, before anything is
/// created; so does `classifier preflight`.
#[test]
fn a_kernel_lacking_helpers_is_told_which_and_since_when_before_anything_is_made() {
    if !privileged("a_kernel_lacking_helpers_is_told_which_and_since_when") {
        return;
    }
    let pin_dir = unique_pin_dir("lacks");
    // The modern build, asked for by name: `auto` would take the legacy one (below).
    let output = classifier(&["run", "--datapath", "modern", "--iface", "lo", "--pin-dir"])
        .arg(&pin_dir)
        .env(
            "CLASSIFIER_PRETEND_KERNEL_LACKS",
            "bpf_loop,bpf_dynptr_read",
        )
        .output()
        .unwrap();
    assert_fails_with(
        &output,
        &[
            "lacks bpf_loop (needs 5.17+), bpf_dynptr_read (needs 5.19+)",
            "it needs kernel 5.19 or later",
        ],
    );
    assert!(!pin_dir.exists(), "nothing is created");

    // Without them, `auto` picks the legacy build, which needs none of them.
    let legacy = classifier(&["preflight"])
        .env(
            "CLASSIFIER_PRETEND_KERNEL_LACKS",
            "bpf_loop,bpf_xdp_load_bytes,bpf_dynptr_read",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&legacy.stdout);
    assert!(legacy.status.success(), "{stdout}");
    assert!(
        stdout.contains("BPF programs: the legacy build")
            && stdout.contains("verifier: takes every program of the legacy build"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("bpf_loop") && stdout.contains("bpf_for_each_map_elem"),
        "the legacy build's own needs are reported: {stdout}"
    );

    let preflight = classifier(&["preflight"])
        .env("CLASSIFIER_PRETEND_KERNEL_LACKS", "ring buffer")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&preflight.stdout);
    assert_eq!(preflight.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("ring buffer") && l.ends_with("MISSING")),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&preflight.stderr).contains("lacks ring buffer (needs 5.8+)"),
        "{}",
        String::from_utf8_lossy(&preflight.stderr)
    );
}

/// `--tc-attach tcx` on a kernel without TCX is refused with the way out.
#[test]
fn tcx_asked_for_on_a_kernel_without_it_is_refused_with_the_alternative() {
    if !privileged("tcx_asked_for_on_a_kernel_without_it_is_refused") {
        return;
    }
    let pin_dir = unique_pin_dir("no-tcx");
    let output = classifier(&["run", "--iface", "lo", "--tc-attach", "tcx", "--pin-dir"])
        .arg(&pin_dir)
        .env("CLASSIFIER_PRETEND_KERNEL_LACKS", "tcx")
        .output()
        .unwrap();
    assert_fails_with(
        &output,
        &["lacks TCX (needs 6.6+)", "--tc-attach auto or netlink"],
    );
    assert!(!pin_dir.exists(), "nothing is created");
}

#[test]
fn pin_dir_off_bpffs_is_refused_and_not_created() {
    if !privileged("pin_dir_off_bpffs_is_refused_and_not_created") {
        return;
    }
    let pin_dir = std::env::temp_dir().join(format!("classifier-pins-{}", std::process::id()));
    let output = classifier(&["run", "--iface", "lo", "--pin-dir"])
        .arg(&pin_dir)
        .output()
        .unwrap();
    assert_fails_with(
        &output,
        &["not on a BPF filesystem", "mount -t bpf bpf /sys/fs/bpf"],
    );
    assert!(!pin_dir.exists());
}

#[test]
fn missing_interface_is_named_with_its_namespace() {
    if !privileged("missing_interface_is_named_with_its_namespace") {
        return;
    }
    let lab = one_client_lab();
    let pin_dir = unique_pin_dir("noiface");
    let output = run_on_gateway(&lab, "nosuch0", &pin_dir).output().unwrap();
    assert_fails_with(
        &output,
        &[
            "interface `nosuch0` not found",
            &lab.gateway.netns,
            "ip link show",
        ],
    );
    assert!(!pin_dir.exists());
}

#[test]
fn interface_with_an_xdp_program_is_refused_and_the_first_keeps_working() {
    if !privileged("interface_with_an_xdp_program_is_refused") {
        return;
    }
    let lab = one_client_lab();
    let first = DaemonProcess::start(&classifier_bin(), &lab, &DaemonOptions::default()).unwrap();
    let pin_dir = unique_pin_dir("busy");
    let output = run_on_gateway(&lab, "lan0", &pin_dir).output().unwrap();
    assert_fails_with(
        &output,
        &[
            "interface `lan0` already has an XDP program",
            "bpftool net show dev lan0",
        ],
    );
    assert!(!pin_dir.exists(), "the refused daemon removed its pins");

    // The first daemon still counts: a ping crosses the gateway and shows up as a flow.
    let ping = Lab::command(&lab.clients[0], "ping")
        .args([
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            &lab.server.ipv4.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    let flows = flows_json(&first.control_socket);
    assert!(
        flows.contains(&format!("\"server\":\"{}:0\"", lab.server.ipv4)),
        "ping flow missing from {flows}"
    );
    assert!(first.stop().unwrap().success());
}

#[test]
fn interface_without_native_xdp_falls_back_to_generic_with_a_reason() {
    if !privileged("interface_without_native_xdp_falls_back_to_generic") {
        return;
    }
    let lab = one_client_lab();
    let pin_dir = unique_pin_dir("generic");
    let pid_file =
        std::env::temp_dir().join(format!("classifier-generic-{}.pid", std::process::id()));
    // The loopback device has no native XDP support.
    let mut daemon = run_on_gateway(&lab, "lo", &pin_dir)
        .arg("--pid-file")
        .arg(&pid_file)
        // Its own socket: the test beside it expects the default one to be free.
        .arg("--control-socket")
        .arg(lab.control_socket())
        // Nothing written outside the lab.
        .arg("--store")
        .arg(lab.store_path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !pid_file.exists() && std::time::Instant::now() < deadline {
        assert!(daemon.try_wait().unwrap().is_none(), "daemon exited early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let output = daemon.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("falling back to generic XDP"), "{stderr}");
    assert!(stderr.contains("xdp_mode=generic"), "{stderr}");
    assert!(!pin_dir.exists());
}

/// `classifier run` on `lab`'s gateway (both interfaces) with its own pins, pid file and
/// control socket and `extra` arguments, run to its end; the pin directory is taken away
/// before the caller asserts anything, so a failing test leaves no pins on the host either.
struct LateStart {
    output: Output,
    pins_left: bool,
    pin_dir: PathBuf,
}

impl LateStart {
    fn run(lab: &Lab, name: &str, pid_file: &Path, extra: &[&str]) -> Self {
        let pin_dir = unique_pin_dir(name);
        let output = run_on_gateway(lab, lab.gateway.iface, &pin_dir)
            .args(["--wan", GATEWAY_WAN_IFACE])
            .arg("--pid-file")
            .arg(pid_file)
            .arg("--control-socket")
            .arg(lab.control_socket())
            .arg("--store")
            .arg(lab.store_path())
            .args(extra)
            .output()
            .unwrap();
        let pins_left = pin_dir.exists();
        if pins_left {
            let _ = std::fs::remove_dir_all(&pin_dir);
        }
        Self {
            output,
            pins_left,
            pin_dir,
        }
    }

    /// Asserts the start failed after attaching, naming `cause` on its last line, and left
    /// nothing behind: no XDP or TC program on either interface, no pins, no control
    /// socket, no pid file.
    #[track_caller]
    fn assert_failed_leaving_nothing(&self, lab: &Lab, pid_file: &Path, cause: &[&str]) {
        let stderr = String::from_utf8_lossy(&self.output.stderr);
        assert_eq!(
            self.output.status.code(),
            Some(1),
            "exit status; stderr: {stderr}"
        );
        assert!(
            stderr.contains("datapath attached"),
            "the start failed after attaching: {stderr}"
        );
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && cause.iter().all(|c| last.contains(c)),
            "the cause ({cause:?}) is the last line: {stderr}"
        );
        assert!(
            !self.pins_left,
            "pins left in {}: {stderr}",
            self.pin_dir.display()
        );
        assert!(!gateway_has_xdp(lab), "XDP left on the LAN interface");
        for iface in [lab.gateway.iface, GATEWAY_WAN_IFACE] {
            let programs = gateway_tc_programs(lab, iface);
            assert!(programs.is_empty(), "TC left on {iface}: {programs}");
        }
        let control_socket = lab.control_socket();
        assert!(
            !control_socket.exists(),
            "control socket {} left",
            control_socket.display()
        );
        assert!(!pid_file.exists(), "pid file {} left", pid_file.display());
    }
}

/// The last step of a start fails (the pid file, in a directory that does not exist),
/// after the programs were attached to both interfaces, the control socket bound, /metrics
/// bound and the signals installed: the start fails naming the cause, and leaves nothing
/// behind: no XDP or TC program on either interface, no pins, no control socket.
#[test]
fn a_start_failing_after_attaching_leaves_nothing_attached_or_pinned() {
    if !privileged("a_start_failing_after_attaching_leaves_nothing_attached_or_pinned") {
        return;
    }
    let lab = one_client_lab();
    let pid_file = std::env::temp_dir()
        .join(format!("classifier-no-such-dir-{}", std::process::id()))
        .join("classifier.pid");
    let start = LateStart::run(&lab, "late", &pid_file, &[]);
    start.assert_failed_leaving_nothing(&lab, &pid_file, &["writing pid file"]);
}

/// The adversary's case for the start's guard: another process holds the port `/metrics`
/// is to be served on, so the start fails between binding the control socket and writing
/// the pid file. It names the port and the way out, and takes off what it had put on the
/// host: the control socket it had bound, the programs, the pins; no pid file is left.
#[test]
fn a_metrics_port_another_process_holds_stops_the_start_and_leaves_nothing() {
    if !privileged("a_metrics_port_another_process_holds_stops_the_start") {
        return;
    }
    let lab = one_client_lab();
    // Held in the gateway's namespace, where the daemon binds /metrics.
    let squatter = classifier_user::netns::run_in(&lab.gateway.netns, || {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?)
    })
    .unwrap();
    let port = squatter.local_addr().unwrap().to_string();
    let pid_file =
        std::env::temp_dir().join(format!("classifier-metrics-{}.pid", std::process::id()));
    let start = LateStart::run(&lab, "metrics", &pid_file, &["--metrics", &port]);
    start.assert_failed_leaving_nothing(
        &lab,
        &pid_file,
        &[
            &format!("listening for Prometheus on {port}"),
            "--no-metrics",
        ],
    );
}

#[test]
fn a_named_exceptions_file_that_does_not_exist_stops_the_start() {
    if !privileged("a_named_exceptions_file_that_does_not_exist_stops_the_start") {
        return;
    }
    let missing =
        std::env::temp_dir().join(format!("classifier-exeptions-{}.toml", std::process::id()));
    let pin_dir = unique_pin_dir("noexceptions");
    let output = classifier(&["run", "--iface", "lo", "--exceptions"])
        .arg(&missing)
        .arg("--pin-dir")
        .arg(&pin_dir)
        .output()
        .unwrap();
    assert_fails_with(
        &output,
        &[
            &missing.display().to_string(),
            "does not exist",
            "--exceptions",
        ],
    );
    assert!(!pin_dir.exists(), "refused before the kernel was touched");
}

/// The probe can say no: a helper asked for in a program type that cannot call it
/// (`bpf_xdp_load_bytes` from TC) is reported missing, as a kernel without it would be.
#[test]
fn the_helper_probe_reports_a_helper_the_program_type_lacks() {
    use aya::programs::ProgramType;
    use classifier_user::kernel_features::{self, Needs};
    if !privileged("the_helper_probe_reports_a_helper_the_program_type_lacks") {
        return;
    }
    let xdp_load_bytes = aya::sys::BpfHelper::BPF_FUNC_xdp_load_bytes as u32;
    let needs = |kind| Needs {
        helpers: vec![(xdp_load_bytes, vec![kind])],
        ..Needs::default()
    };
    let present = |kind| {
        kernel_features::probe(&needs(kind), true)
            .unwrap()
            .into_iter()
            .find(|p| p.name == "bpf_xdp_load_bytes")
            .unwrap()
            .present
    };
    assert!(present(ProgramType::Xdp));
    assert!(!present(ProgramType::SchedClassifier));
}
