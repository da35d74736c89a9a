//! Helpers shared by the datapath and lab tests and the datapath benchmark.
//!
//! These tests load real BPF programs and build real network namespaces, so they need root.
//! Under CI (`CI=true`) a missing privilege fails the test with a message; elsewhere the
//! test says it is skipped and returns.

pub mod audit;
pub mod capture;
pub mod clients;
pub mod dashboard;
pub mod frames;
pub mod harness;
pub mod iperf;
pub mod lab_policy;
pub mod nfdump;
pub mod nspawn;
pub mod package;
pub mod postgres;
pub mod run;
pub mod rustls_client;
pub mod samples;
pub mod segments;
pub mod setup;
pub mod site_config;
pub mod tc;
pub mod tls_clients;
pub mod tracker;
pub mod tshark;
pub mod vm;
pub mod wire;

use std::path::{Path, PathBuf};

/// True when the test may proceed. Without root: panics under CI, otherwise prints why the
/// test is skipped and returns false.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        !under_ci(),
        "{test} needs root (BPF and network namespaces) and CI=true: run the tests as root \
         with `cargo xtask test`"
    );
    eprintln!("SKIPPED {test}: needs root; run `sudo -E cargo xtask test`");
    false
}

/// Whether this is CI (`CI=true`), where a test that cannot run fails instead of skipping.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The `classifier` binary under test: $CLASSIFIER_BIN (set by `cargo xtask test`), else the
/// workspace's debug build.
pub fn classifier_bin() -> PathBuf {
    let path = std::env::var_os("CLASSIFIER_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/classifier"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} not found: build it with `cargo build -p classifier-user` (cargo xtask test does)",
        path.display()
    );
    path
}

/// The lab's own binary (`classifier-lab demo|up|down`): $CLASSIFIER_LAB_BIN, else the
/// workspace's debug build (`cargo xtask test` builds every binary of the workspace).
pub fn classifier_lab_bin() -> PathBuf {
    let path = std::env::var_os("CLASSIFIER_LAB_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/classifier-lab"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} not found: build it with `cargo build -p classifier-lab` (cargo xtask test does)",
        path.display()
    );
    path
}

/// The output of `classifier flows --json` for the daemon on `control_socket`: one JSON
/// object per line.
pub fn flows_json(control_socket: &Path) -> String {
    let output = std::process::Command::new(classifier_bin())
        .args(["flows", "--json", "--control-socket"])
        .arg(control_socket)
        .output()
        .expect("classifier flows runs");
    assert!(
        output.status.success(),
        "classifier flows: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The built-in council policy with a 3 s idle timeout (so flows end within a test) and
/// `extra` TOML appended.
pub fn council_policy_with_short_idle(extra: &str) -> String {
    let default = classifier_user::policy::DEFAULT_POLICY;
    let policy = default.replacen("idle_timeout = \"5 minutes\"", "idle_timeout = \"3s\"", 1);
    assert_ne!(
        policy, default,
        "the built-in policy sets [records] idle_timeout = \"5 minutes\""
    );
    format!("{policy}\n{extra}")
}
