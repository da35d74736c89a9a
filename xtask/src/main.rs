//! Project tasks. The README's two commands are `cargo xtask demo` and `cargo xtask test`;
//! both start with `setup`, which installs whatever this machine lacks.

mod deb;
mod modgraph;
mod report;
mod setup;
mod test_kernels;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Project tasks: set-up, demo, tests, benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (Debian packages, bpf-linker, bpffs mount, the
    /// stock distribution kernels the VM tests boot).
    /// Idempotent: a second run only checks.
    Setup {
        /// Also the browsers and BitTorrent clients that tests/captures/regenerate.sh
        /// records (the tests themselves only read the committed captures).
        #[arg(long)]
        captures: bool,
    },
    /// Set up, build, and run the demo: a lab of network namespaces with the daemon on its
    /// gateway and live per-flow counters.
    Demo {
        /// Arguments for `classifier-lab demo`, e.g. `-- --duration 60s`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, check formatting and lints, and run every test (unit, BPF datapath, lab).
    Test {
        /// Extra arguments for `cargo test`, e.g. `-- --nocapture`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Fuzz the packet parsers the datapath runs and the daemon's QUIC Initial reader
    /// (cargo-fuzz, libFuzzer): each target for `--seconds`, new inputs kept in
    /// target/fuzz-corpus, crashes in fuzz/artifacts.
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (tls_client_hello, http_request, packet_headers, udp_signatures,
        /// quic_initial).
        target: Option<String>,
    },
    /// Build the Debian package (target/debian/classifier_<version>-1_<arch>.deb): the
    /// optimised, stripped binary, the systemd unit, man pages, completions, the default
    /// policy (docs/packaging.md).
    Deb {
        /// Package target/dist/classifier as it is instead of building it first.
        #[arg(long)]
        no_build: bool,
    },
    /// Set up and run the benchmarks (ratios measured in one run; results in target/bench),
    /// then write docs/benchmarks.md and its plots from them.
    Bench {
        /// Fewer repetitions: a quick look rather than figures to publish.
        #[arg(long)]
        quick: bool,
    },
    /// Write docs/benchmarks.md again from the results in target/bench, without measuring.
    BenchReport,
    /// Draw the daemon's module graph (docs/module-graph.svg, by Graphviz) and list its import
    /// circles and the imports that run up the layers of docs/architecture.md.
    Modgraph {
        /// Fail when there is any circle, upward import or module in no layer.
        #[arg(long)]
        check: bool,
    },
}

/// The test binaries run a second time on the legacy build of the BPF programs: every
/// case table of the parser and the enforcement, in the kernel through `BPF_PROG_TEST_RUN`.
const LEGACY_DATAPATH_TESTS: &[&str] = &[
    "datapath",
    "classification",
    "evasion",
    "evasion_captures",
    "enforcement",
    "poisoning",
    "floods",
    "captures",
];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Setup { captures } => setup::run_with(setup::Extras { captures }),
        Task::Demo { args } => {
            setup::run()?;
            // The product's binary, and the lab's (which runs the one beside it).
            step(
                "build",
                cargo(&[
                    "build",
                    "--package",
                    "classifier-user",
                    "--package",
                    "classifier-lab",
                ]),
            )?;
            let mut command = Command::new(root.join("target/debug/classifier-lab"));
            command.arg("demo").args(args);
            step("demo", command)
        }
        Task::Test { args } => {
            setup::run()?;
            step("format", cargo(&["fmt", "--all", "--", "--check"]))?;
            step(
                "lints",
                cargo(&[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]),
            )?;
            // The daemon's layers (docs/architecture.md): no import circle, none upward.
            modgraph::run(&root, true)?;
            step("build", cargo(&["build", "--workspace", "--bins"]))?;
            // The package tests (lintian, the unit, the installed binary in the lab, the
            // unit under systemd) share this one package: an optimised build of the daemon.
            let package = deb::build(&root, false)?;
            let mut test = cargo(&["test", "--workspace", "--no-fail-fast"]);
            test.args(&args)
                .env("CLASSIFIER_BIN", root.join("target/debug/classifier"))
                .env(
                    "CLASSIFIER_LAB_BIN",
                    root.join("target/debug/classifier-lab"),
                )
                .env("CLASSIFIER_DEB", package);
            step("tests", test)?;
            // The parser's tests again on the legacy build of the BPF programs (kernels
            // 5.15 to 5.18, docs/kernels.md), which this kernel runs too: both builds must
            // read every case the same.
            let mut legacy = cargo(&["test", "-p", "classifier-tests", "--no-fail-fast"]);
            for test in LEGACY_DATAPATH_TESTS {
                legacy.args(["--test", test]);
            }
            legacy.args(args).env("CLASSIFIER_DATAPATH", "legacy");
            step("tests on the legacy BPF programs", legacy)
        }
        Task::Deb { no_build } => deb::build(&root, no_build).map(drop),
        Task::Fuzz { seconds, target } => fuzz(&root, seconds, target.as_deref()),
        Task::BenchReport => report::write(&report::Paths::of(&root), None),
        Task::Modgraph { check } => modgraph::run(&root, check),
        Task::Bench { quick } => {
            setup::run()?;
            // Results of an earlier round must not pass for this one's.
            let _ = std::fs::remove_dir_all(root.join("target/bench"));
            // One build of every binary with the workspace's features: building a package
            // alone resolves other features and rebuilds the daemon (over a minute).
            step(
                "build",
                cargo(&["build", "--release", "--workspace", "--bins"]),
            )?;
            let release = root.join("target/release");
            // The datapath is measured on each build of the BPF programs: the legacy one is
            // what Debian 12 and Ubuntu 22.04 gateways run; the report sets the two side by
            // side. (What, binary, its arguments, the build it loads if it loads the datapath.)
            let legacy_out = format!("target/bench/{}", bench_results::datapath::FILE_LEGACY);
            let benches: [(&str, &str, &[&str], Option<&str>); 7] = [
                ("datapath benchmark", "datapath-bench", &[], Some("modern")),
                (
                    "datapath benchmark, legacy build",
                    "datapath-bench",
                    &["--out", &legacy_out],
                    Some("legacy"),
                ),
                ("shaping benchmark", "shaping-bench", &[], None),
                ("flow store benchmark", "store-bench", &[], None),
                ("nDPI comparison", "ndpi-compare", &[], None),
                ("scale benchmark", "scale-bench", &[], None),
                ("throughput benchmark", "throughput-bench", &[], None),
            ];
            for (what, bin, args, datapath) in benches {
                let mut bench = Command::new(release.join(bin));
                bench.current_dir(&root).args(args);
                if quick {
                    bench.arg("--quick");
                }
                // The lab's daemon (shaping, throughput) and classify-pcap (nDPI comparison)
                // are the release build made above.
                bench.env("CLASSIFIER_BIN", release.join("classifier"));
                if let Some(build) = datapath {
                    bench.env("CLASSIFIER_DATAPATH", build);
                }
                step(what, bench)?;
            }
            report::write(&report::Paths::of(&root), Some(quick))
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // A run of ours builds once from a clean tree: incremental caches would only add gigabytes
    // to the disk of a CI machine.
    command.env("CARGO_INCREMENTAL", "0").args(args);
    command
}

/// Runs one step, printing its name and duration, failing with its name.
fn step(name: &str, mut command: Command) -> anyhow::Result<()> {
    eprintln!("==> {name}");
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    eprintln!("<== {name}: {status} in {:.1?}", started.elapsed());
    if !status.success() {
        bail!("step `{name}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` (a set-up tool: apt-get, mount, dpkg-deb, depmod); an error names it and
/// how it ended.
fn run_checked(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

/// The cargo-fuzz targets in fuzz/Cargo.toml.
const FUZZ_TARGETS: [&str; 5] = [
    "tls_client_hello",
    "http_request",
    "packet_headers",
    "udp_signatures",
    "quic_initial",
];

/// Runs the fuzz targets. cargo-fuzz needs nightly compiler flags (sanitizers): the stable
/// toolchain here accepts them with RUSTC_BOOTSTRAP=1.
fn fuzz(root: &Path, seconds: u64, only: Option<&str>) -> anyhow::Result<()> {
    let has_cargo_fuzz = cargo(&["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_fuzz {
        step(
            "install cargo-fuzz",
            cargo(&["install", "cargo-fuzz", "--locked", "--version", "0.13.2"]),
        )?;
    }
    let targets: Vec<&str> = match only {
        Some(target) if FUZZ_TARGETS.contains(&target) => vec![target],
        Some(target) => bail!(
            "no fuzz target `{target}`; there are {}",
            FUZZ_TARGETS.join(", ")
        ),
        None => FUZZ_TARGETS.to_vec(),
    };
    for target in targets {
        let work = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&work)?;
        let mut run = cargo(&["fuzz", "run", target]);
        run.current_dir(root.join("fuzz"))
            .env("RUSTC_BOOTSTRAP", "1")
            .arg(&work)
            .arg(root.join("fuzz/corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1");
        step(&format!("fuzz {target} for {seconds} s"), run)?;
    }
    Ok(())
}
