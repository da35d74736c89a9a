//! A start that cannot work fails at once: exit status 1, one line on stderr naming the
//! cause and the fix, and nothing left behind.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use classifier_tests::{classifier_bin, flows_json, privileged};
use classifier_user::lab::{
    Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
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
    let lab = Lab::up(&LabSpec {
        clients: 1,
        ..LabSpec::default()
    })
    .unwrap();
    let pin_dir = unique_pin_dir("noiface");
    let output = classifier(&[
        "run",
        "--netns",
        &lab.gateway.netns,
        "--iface",
        "nosuch0",
        "--pin-dir",
    ])
    .arg(&pin_dir)
    .output()
    .unwrap();
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
    let lab = Lab::up(&LabSpec {
        clients: 1,
        ..LabSpec::default()
    })
    .unwrap();
    let first = DaemonProcess::start(&classifier_bin(), &lab, &DaemonOptions::default()).unwrap();
    let pin_dir = unique_pin_dir("busy");
    let output = classifier(&[
        "run",
        "--netns",
        &lab.gateway.netns,
        "--iface",
        "lan0",
        "--pin-dir",
    ])
    .arg(&pin_dir)
    .output()
    .unwrap();
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
    let lab = Lab::up(&LabSpec {
        clients: 1,
        ..LabSpec::default()
    })
    .unwrap();
    let pin_dir = unique_pin_dir("generic");
    let pid_file =
        std::env::temp_dir().join(format!("classifier-generic-{}.pid", std::process::id()));
    // The loopback device has no native XDP support.
    let mut daemon = classifier(&[
        "run",
        "--netns",
        &lab.gateway.netns,
        "--iface",
        "lo",
        "--pin-dir",
    ])
    .arg(&pin_dir)
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
