//! The product on the stock kernels of the distributions gateways run, booted under qemu
//! (tests/src/vm.rs): Debian 12's 6.1 and Ubuntu 22.04's 5.15, both older than TCX (6.6).
//! Every other lab test runs on this host's kernel, where the clsact path is only forced.
//!
//! On a kernel that should enforce, the suite's own lab tests (the binaries built on this host)
//! run inside the VM against a real lab there; on one that should be refused, `preflight`
//! and `run` must refuse and name each missing feature. What each kernel should do is one
//! table ([`STOCK_KERNELS`]): a kernel that gains support changes its row only.
//!
//! The kernels come from `cargo xtask setup` (xtask/src/test_kernels.rs). Under CI a missing
//! kernel or qemu fails the test; elsewhere it is skipped with the reason.

use std::time::Duration;

use classifier_tests::{
    classifier_bin, privileged, under_ci,
    vm::{self, Kernel, Outcome},
};

/// What a stock kernel should do with the product.
// No row is `Refused` since the legacy build runs on 5.15; the check is kept for a kernel
// older than it (docs/kernels.md).
#[allow(dead_code)]
enum Expect {
    /// `preflight` passes and says which `build` of the BPF programs the kernel's verifier
    /// takes and how TC goes on (`clsact` or `TCX`), and the enforcement lab tests pass
    /// inside the VM.
    Enforces {
        build: &'static str,
        tc_programs: &'static str,
    },
    /// `preflight` passes and says how TC goes on, `preflight` and the daemon
    /// (`--datapath auto`) find that the kernel's verifier refuses the modern build's
    /// `program` and take the legacy build, with which the enforcement lab tests pass inside
    /// the VM. The refusal is a defect of
    /// the modern build this test found; when it is fixed, this fails and the kernel's row
    /// becomes `Enforces`.
    FallsBackToLegacy {
        tc_programs: &'static str,
        program: &'static str,
    },
    /// `preflight` and `run` refuse, naming each of these missing features.
    Refused { missing: &'static [&'static str] },
}

struct StockKernel {
    /// The kernel's directory in the test-kernel cache.
    name: &'static str,
    release: &'static str,
    expect: Expect,
}

const TCX: &str = "TC programs: TCX links";
const MODERN: &str = "modern";
const LEGACY: &str = "legacy";
const CLSACT: &str = "TC programs: clsact filters over netlink (no TCX: it needs 6.6+)";

const STOCK_KERNELS: &[StockKernel] = &[
    StockKernel {
        name: "debian-12",
        release: "6.1.0-47-amd64",
        // 6.1's verifier does not carry a bound learned on a register to the stack slot it
        // was filled from (later kernels link the two), and refuses a packet read at an
        // offset reloaded from the stack (docs/kernels.md). To become `Enforces` once the
        // datapath bounds that offset again after reloading it. Until then the daemon runs
        // the legacy build there.
        expect: Expect::FallsBackToLegacy {
            tc_programs: CLSACT,
            program: "classify_upload",
        },
    },
    StockKernel {
        name: "debian-6.12",
        release: "6.12.118+deb12-amd64",
        // 6.12's verifier links `offset + N` to `offset` and, when a check pins the sum,
        // leaves `offset` with bounds that turn `map value + offset` into a scalar: the
        // HTTP scanner's stream read in `parse_http` was refused (docs/verifier-notes.md)
        // until the method check became a comparison of masked words (for 5.15).
        expect: Expect::Enforces {
            build: MODERN,
            tc_programs: TCX,
        },
    },
    StockKernel {
        name: "ubuntu-22.04",
        release: "5.15.0-204-generic",
        // The legacy build of the BPF programs (docs/kernels.md), which `auto` picks there:
        // 5.15 lacks `bpf_loop`, `bpf_xdp_load_bytes` and dynptrs.
        expect: Expect::Enforces {
            build: LEGACY,
            tc_programs: CLSACT,
        },
    },
];

/// The lab tests run inside the VM of a kernel that enforces, as (test binary, test): a
/// blocked TLS site reset and an allowed one passing, with the reset counted, on clsact
/// filters; a hand-over (SIGUSR1) that keeps enforcing on them and a clean stop; the flows
/// recorded in the store and counted exactly as they crossed the wire.
const LAB_TESTS: &[(&str, &str)] = &[
    (
        "fail_fast",
        "a_blocked_tls_site_fails_at_once_with_a_reset_by_tc_redirect_on_clsact_filters",
    ),
    (
        "restart_reload",
        "on_clsact_filters_a_hand_over_keeps_enforcing_and_a_stop_leaves_only_what_was_there",
    ),
    (
        "lab_flows",
        "ended_flows_are_recorded_in_the_store_as_they_crossed_the_wire",
    ),
    (
        "lab_flows",
        "daemon_counts_each_flow_exactly_as_it_crossed_the_wire",
    ),
];

/// Long enough for a boot and the lab tests in software emulation on a loaded machine; a
/// VM still running then is killed and the test fails.
const TIME_LIMIT: Duration = Duration::from_secs(20 * 60);

#[test]
fn on_stock_kernel_debian_12() {
    check_stock_kernel("debian-12");
}

#[test]
fn on_stock_kernel_debian_6_12() {
    check_stock_kernel("debian-6.12");
}

#[test]
fn on_stock_kernel_ubuntu_22_04() {
    check_stock_kernel("ubuntu-22.04");
}

fn check_stock_kernel(name: &str) {
    let stock = STOCK_KERNELS
        .iter()
        .find(|k| k.name == name)
        .expect("a kernel of the table");
    let Some(kernel) = kernel_or_skip(name) else {
        return;
    };
    assert_eq!(
        kernel.release, stock.release,
        "the cache holds another release of {name} than this table expects: run `cargo xtask \
         setup`"
    );
    match stock.expect {
        Expect::Enforces { build, tc_programs } => {
            let (preflight, _) = enforces(&kernel, tc_programs, LAB_TESTS);
            let takes = format!("verifier: takes every program of the {build} build");
            assert!(
                preflight.output.contains(&takes),
                "{takes}: {}",
                preflight.output
            );
        }
        Expect::FallsBackToLegacy {
            tc_programs,
            program,
        } => falls_back_to_legacy(&kernel, tc_programs, program),
        Expect::Refused { missing } => refused(&kernel, missing),
    }
}

/// The kernel, when this machine can boot it; None (the test skipped) when it cannot and
/// this is not CI.
fn kernel_or_skip(name: &str) -> Option<Kernel> {
    if !privileged(&format!("on_stock_kernel {name}")) {
        return None;
    }
    let missing =
        vm::missing_tools().map_or_else(|| Kernel::cached(name).err().map(|e| e.to_string()), Some);
    match missing {
        None => Some(Kernel::cached(name).expect("checked just above")),
        Some(why) => {
            assert!(
                !under_ci(),
                "the stock kernel {name} cannot be booted: {why}"
            );
            eprintln!("SKIPPED the stock kernel {name}: {why}");
            None
        }
    }
}

/// Boots `kernel` and runs `preflight`, then each of `lab_tests` inside; checks that
/// preflight passes and says `tc_programs`. Returns preflight's run, then the lab tests'.
fn preflight_and_lab_tests(
    kernel: &Kernel,
    tc_programs: &str,
    lab_tests: &[(&str, &str)],
) -> (Section, Vec<Section>) {
    let classifier = classifier_bin();
    let mut script = format!(
        "set -u\nexport CI=true RUST_BACKTRACE=1 CLASSIFIER_BIN={} {}=600\n",
        classifier.display(),
        classifier_lab::daemon::READY_TIMEOUT_ENV
    );
    if let Some(lab) = std::env::var_os("CLASSIFIER_LAB_BIN") {
        script.push_str(&format!("export CLASSIFIER_LAB_BIN={}\n", lab.display()));
    }
    script.push_str(&section(
        "preflight",
        &format!("{} preflight", classifier.display()),
    ));
    for (binary, test) in lab_tests {
        let binary = vm::sibling_test_binary(binary).unwrap();
        script.push_str(&section(
            test,
            &format!(
                "{} --exact {test} --test-threads 1 --nocapture",
                binary.display()
            ),
        ));
    }
    let outcome = boot(kernel, &script);

    let preflight = section_of(&outcome, "preflight");
    assert_eq!(
        preflight.exit_code,
        Some(0),
        "preflight passes: {}",
        preflight.output
    );
    assert!(
        preflight
            .output
            .contains(&format!("kernel {}", kernel.release)),
        "the stock kernel ran: {}",
        preflight.output
    );
    assert!(
        preflight.output.contains(tc_programs),
        "{tc_programs}: {}",
        preflight.output
    );
    let lab_tests = lab_tests
        .iter()
        .map(|(_, test)| section_of(&outcome, test))
        .collect();
    (preflight, lab_tests)
}

/// Preflight passes saying `tc_programs` and every one of `lab_tests` passes in a VM of
/// `kernel`; returns preflight's run and the lab tests'.
fn enforces(
    kernel: &Kernel,
    tc_programs: &str,
    lab_tests: &[(&str, &str)],
) -> (Section, Vec<Section>) {
    let (preflight, ran) = preflight_and_lab_tests(kernel, tc_programs, lab_tests);
    let failed: Vec<String> = ran
        .iter()
        .filter(|ran| ran.exit_code != Some(0) || !ran.output.contains("1 passed"))
        .map(|ran| format!("=== {} ({:?})\n{}", ran.name, ran.exit_code, ran.output))
        .collect();
    assert!(
        failed.is_empty(),
        "lab tests failed on {} ({}):\n{}",
        kernel.name,
        kernel.release,
        failed.join("\n")
    );
    (preflight, ran)
}

fn falls_back_to_legacy(kernel: &Kernel, tc_programs: &str, program: &str) {
    let (preflight, ran) = enforces(kernel, tc_programs, LAB_TESTS);
    let refusal = format!("the kernel refused XDP program `{program}`");
    let preflight_says = format!("verifier: refuses the modern build ({refusal}");
    assert!(
        preflight.output.contains(&preflight_says)
            && preflight.output.contains("BPF programs: the legacy build")
            && preflight
                .output
                .contains("takes every program of the legacy build"),
        "preflight on {} says the modern build is refused and the legacy one taken: {}",
        kernel.name,
        preflight.output
    );
    for test in &ran {
        assert!(
            test.output.contains(FALLBACK)
                && test.output.contains(&refusal)
                && test.output.contains("datapath=legacy"),
            "{} passed on {} without the modern build's refusal of {program} and the fall-back \
             to the legacy build: if the modern build loads there now, make its row \
             `Enforces`:\n{}",
            test.name,
            kernel.name,
            test.output
        );
    }
}

/// What the daemon logs when the kernel's verifier refuses the modern build
/// (`daemon::start::load_or_fall_back`).
const FALLBACK: &str = "this kernel's verifier refuses the modern build of the BPF programs: \
                        loaded the legacy build instead";

fn refused(kernel: &Kernel, missing: &[&str]) {
    let classifier = classifier_bin();
    let classifier = classifier.display();
    let script = [
        section("preflight", &format!("{classifier} preflight")),
        // Refused before anything is attached, so the interface matters not.
        section(
            "run",
            &format!("{classifier} run --iface lo --no-store --no-metrics"),
        ),
    ]
    .concat();
    let outcome = boot(kernel, &script);
    for command in ["preflight", "run"] {
        let ran = section_of(&outcome, command);
        assert!(
            matches!(ran.exit_code, Some(code) if code != 0),
            "{command} refuses the kernel: {ran:?}"
        );
        assert!(
            ran.output.contains(&kernel.release) || command == "run",
            "the stock kernel ran: {}",
            ran.output
        );
        for feature in missing {
            assert!(
                ran.output.contains(feature),
                "{command} names the missing {feature}: {}",
                ran.output
            );
        }
    }
}

fn boot(kernel: &Kernel, script: &str) -> Outcome {
    let outcome = vm::run(kernel, script, TIME_LIMIT).unwrap();
    eprintln!(
        "{} ({}) booted and ran in {:.1?}:\n{}",
        kernel.name, kernel.release, outcome.took, outcome.output
    );
    assert_eq!(
        outcome.exit_code, 0,
        "the script ran to its end: {}",
        outcome.output
    );
    outcome
}

/// One command of a script, its output and exit code between markers.
fn section(name: &str, command: &str) -> String {
    format!("echo '=== begin {name}'\n{command}\necho \"=== end {name} rc=$?\"\n")
}

#[derive(Debug)]
struct Section {
    name: String,
    output: String,
    exit_code: Option<i32>,
}

fn section_of(outcome: &Outcome, name: &str) -> Section {
    let begin = format!("=== begin {name}\n");
    let end = format!("=== end {name} rc=");
    let output = &outcome.output;
    let Some(start) = output.find(&begin).map(|at| at + begin.len()) else {
        return Section {
            name: name.into(),
            output: "(never started)".into(),
            exit_code: None,
        };
    };
    let (body, exit_code) = match output[start..].find(&end) {
        Some(stop) => {
            let code = output[start + stop + end.len()..]
                .lines()
                .next()
                .and_then(|code| code.trim().parse().ok());
            (&output[start..start + stop], code)
        }
        None => (&output[start..], None),
    };
    Section {
        name: name.into(),
        output: body.into(),
        exit_code,
    }
}

/// The runner itself: the script's exit code and output come back, the VM has only a
/// loopback interface, what it writes does not reach the host, and a VM past its time limit
/// is killed and reported.
#[test]
fn on_stock_kernel_the_vm_is_walled_off_and_its_end_reported() {
    let Some(kernel) = kernel_or_skip("debian-12") else {
        return;
    };
    // On the shared root, not the VM's own /tmp: the overlay must keep it from the host.
    let marker = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vm-was-here-{}", std::process::id()));
    let script = format!(
        "uname -r\nls /sys/class/net\necho written > {}\ncat {}\nexit 7\n",
        marker.display(),
        marker.display()
    );
    let outcome = vm::run(&kernel, &script, TIME_LIMIT).unwrap();
    assert_eq!(outcome.exit_code, 7, "{outcome:?}");
    let lines: Vec<&str> = outcome.output.lines().collect();
    assert_eq!(
        lines,
        [kernel.release.as_str(), "lo", "written"],
        "{outcome:?}"
    );
    assert!(
        !marker.exists(),
        "a file written in the VM appeared on the host"
    );

    let stuck = vm::run(&kernel, "sleep 3600\n", Duration::from_secs(3));
    let error = stuck
        .expect_err("a VM past its limit is an error")
        .to_string();
    assert!(
        error.contains("did not finish within 3s: killed"),
        "{error}"
    );
}
