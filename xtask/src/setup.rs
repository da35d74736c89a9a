//! Installs what this project needs on a fresh Debian 12 machine, and does nothing (fast)
//! where it is already present.

use std::{process::Command, time::Instant};

use anyhow::{Context as _, bail};

/// Debian packages, and why each is here.
const PACKAGES: &[&str] = &[
    // Debian's rustc 1.96 with a prebuilt `core` for the BPF targets (docs/toolchain.md),
    // and its cargo: only a recommendation of rustc-web, which `--no-install-recommends`
    // leaves out, so it is named here.
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    // bpf-linker links against LLVM 22.
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "clang-22",
    "lld-22",
    // Inspecting loaded programs and maps.
    "bpftool",
    // The lab: namespaces, veths, offload settings.
    "iproute2",
    "ethtool",
    "procps",
    // The NAT lab: masquerade on the gateway's WAN (nft), and its translations listed and
    // flushed (conntrack).
    "nftables",
    "conntrack",
    // Real clients and capture in the lab tests.
    "curl",
    "iputils-ping",
    "tcpdump",
    // `setpriv`, to run a start-up test as an unprivileged user.
    "util-linux",
    // Graphviz's `dot`, which draws docs/module-graph.svg (`cargo xtask modgraph`).
    "graphviz",
    // Throughput through the lab gateway (shaping tests, benchmarks).
    "iperf3",
    // The lab's TLS server (openssl s_server) and its certificates.
    "openssl",
    // A real IPFIX collector (nfcapd) and reader (nfdump) for the export tests, and a
    // second, independent one: Wireshark's IPFIX dissector, on a capture of the export.
    "nfdump",
    "tshark",
    // promtool (`promtool check metrics`), which checks the daemon's live /metrics.
    "prometheus",
    // A real PostgreSQL for the store's PostgreSQL backend tests.
    "postgresql",
    // A real systemd-journald (and journalctl) for the export audit tests, run in the
    // test's own mount namespace: every audit entry is also sent to the journal. Also
    // `systemd-analyze security` and `verify` on the package's unit.
    "systemd",
    // nDPI's ndpiReader, the peer the nDPI comparison benchmark (ndpi-compare) runs.
    "libndpi-bin",
    // iptables' string match (xt_string), the peer the throughput benchmark
    // (throughput-bench) compares with, run only inside the lab's gateway namespace.
    "iptables",
    // Real BitTorrent clients: an attacker's own plain and MSE transfers in the lab
    // (lab_poisoning), and the captures. Transmission with transmission-create.
    "aria2",
    "transmission-cli",
    // The Debian package's check: lintian on the .deb.
    "lintian",
    // systemd-nspawn: a real systemd (this host's root, booted in a throw-away overlay) for
    // the unit's lab test, on machines whose PID 1 is not systemd.
    "systemd-container",
    // The stock distribution kernels' tests (tests/tests/distro_kernels.rs): qemu boots each
    // kernel (software emulation), busybox is the VM's first userland, and kmod's depmod
    // makes the modules.dep that modprobe inside the VM reads (xtask/src/test_kernels.rs).
    "qemu-system-x86",
    "busybox-static",
    "kmod",
];

/// Only for re-recording tests/captures (`cargo xtask setup --captures`, which
/// tests/captures/regenerate.sh runs): the real clients and servers it records. The tests
/// read the committed captures and need none of these.
const CAPTURE_PACKAGES: &[&str] = &[
    "chromium",
    "firefox-esr",
    // certutil, to make Firefox trust the lab CA.
    "libnss3-tools",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPFFS: &str = "/sys/fs/bpf";

/// What to install beyond the build and test tools.
#[derive(Clone, Copy, Debug, Default)]
pub struct Extras {
    /// The clients tests/captures/regenerate.sh records.
    pub captures: bool,
}

pub fn run() -> anyhow::Result<()> {
    run_with(Extras::default())
}

pub fn run_with(extras: Extras) -> anyhow::Result<()> {
    let started = Instant::now();
    install_packages(PACKAGES)?;
    if extras.captures {
        install_packages(CAPTURE_PACKAGES)?;
    }
    install_bpf_linker()?;
    crate::deb::install_cargo_deb()?;
    mount_bpffs()?;
    crate::test_kernels::ensure_all()?;
    eprintln!("setup: everything present ({:.1?})", started.elapsed());
    Ok(())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn install_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing = missing_packages(packages)?;
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}; run `cargo xtask setup` as root to install them",
            missing.join(" ")
        );
    }
    eprintln!("setup: installing {}", missing.join(" "));
    crate::run_checked(Command::new("apt-get").arg("update").arg("-q"))?;
    crate::run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn missing_packages(packages: &[&str]) -> anyhow::Result<Vec<String>> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
        .args(packages)
        .output()
        .context("running dpkg-query (is this Debian?)")?;
    // Unknown packages go to stderr and are missing too.
    let listing = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(name, _)| name)
        .collect();
    Ok(packages
        .iter()
        .filter(|p| !installed.contains(p))
        .map(|p| p.to_string())
        .collect())
}

fn install_bpf_linker() -> anyhow::Result<()> {
    let current = Command::new("bpf-linker").arg("--version").output();
    if let Ok(output) = current
        && String::from_utf8_lossy(&output.stdout).contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    crate::run_checked(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22", "--locked"])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
}

fn mount_bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let mounted = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        fields.nth(1) == Some(BPFFS) && fields.next() == Some("bpf")
    });
    if mounted {
        return Ok(());
    }
    if !is_root() {
        bail!("{BPFFS} is not mounted; run `cargo xtask setup` as root to mount it");
    }
    eprintln!("setup: mounting bpffs on {BPFFS}");
    crate::run_checked(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
}
