//! The Debian package and its systemd unit, checked without a running systemd: lintian
//! finds no error, the unit's exposure (`systemd-analyze security --offline`) is 3.0 or
//! lower, and the package holds what a gateway needs (binary, unit, group, conffiles, man
//! pages, completions). lab_systemd.rs verifies the installed unit under a real systemd.

use std::{path::Path, process::Command};

use classifier_tests::package::{InstalledRoot, debian_package, run_ok, tool};

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../classifier-user/systemd/classifier.service"
);

/// `systemd-analyze security --offline=true`'s overall exposure of `unit` (0.0 to 10.0).
fn exposure(unit: &Path) -> f64 {
    let output = run_ok(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit),
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    line.rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in `{line}`"))
}

#[test]
fn the_unit_is_exposed_3_or_less_and_drops_to_three_capabilities() {
    let test = "the_unit_is_exposed_3_or_less_and_drops_to_three_capabilities";
    if !tool(test, "systemd-analyze", "systemd") {
        return;
    }
    let unit = Path::new(UNIT);
    let measured = exposure(unit);
    eprintln!("systemd-analyze security --offline: exposure {measured}");
    assert!(measured <= 3.0, "exposure {measured} > 3.0");

    let text = std::fs::read_to_string(unit).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON"),
        "exactly the three capabilities the code checks for (preflight::RUN_CAPABILITIES)"
    );
    for (line, why) in [
        ("Type=notify", "readiness"),
        ("ExecReload=/usr/bin/classifier policy reload", "reload"),
        ("Group=classifier", "the control socket's group"),
    ] {
        assert!(text.lines().any(|l| l == line), "{why}: `{line}` missing");
    }

    // The measure can fail: the same unit without its sandbox is rated far worse.
    let weakened: String = text
        .lines()
        .filter(|l| {
            !l.starts_with("CapabilityBoundingSet=")
                && !l.starts_with("SystemCallFilter=")
                && !l.starts_with("Protect")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = std::env::temp_dir().join(format!("classifier-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let weak_unit = dir.join("classifier.service");
    std::fs::write(&weak_unit, weakened).unwrap();
    let weak = exposure(&weak_unit);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(weak > 3.0, "without its sandbox the unit rates {weak}");
}

#[test]
fn the_package_passes_lintian() {
    let test = "the_package_passes_lintian";
    let Some(deb) = debian_package(test) else {
        return;
    };
    if !tool(test, "lintian", "lintian") {
        return;
    }
    let output = Command::new("lintian")
        .args(["--no-tag-display-limit", "--info"])
        .arg(&deb)
        .output()
        .expect("lintian runs");
    let text = String::from_utf8_lossy(&output.stdout);
    eprintln!("lintian {}:\n{text}", deb.display());
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    assert!(
        output.status.success(),
        "lintian: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_package_holds_what_a_gateway_needs() {
    let test = "the_package_holds_what_a_gateway_needs";
    let Some(deb) = debian_package(test) else {
        return;
    };
    let contents =
        String::from_utf8(run_ok(Command::new("dpkg-deb").arg("--contents").arg(&deb)).stdout)
            .unwrap();
    let files: Vec<&str> = contents
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for wanted in [
        "./usr/bin/classifier",
        "./etc/classifier/policy.toml",
        "./etc/classifier/bank-holidays.json",
        "./etc/default/classifier",
        "./usr/lib/sysusers.d/classifier.conf",
        "./usr/share/man/man1/classifier.1.gz",
        "./usr/share/man/man1/classifier-run.1.gz",
        "./usr/share/man/man1/classifier-stop.1.gz",
        "./usr/share/man/man1/classifier-policy-reload.1.gz",
        "./usr/share/man/man1/classifier-export.1.gz",
        "./usr/share/bash-completion/completions/classifier",
        "./usr/share/zsh/vendor-completions/_classifier",
        "./usr/share/fish/vendor_completions.d/classifier.fish",
        "./usr/share/doc/classifier/README.md",
        "./usr/share/doc/classifier/copyright",
        "./usr/share/doc/classifier/changelog.Debian.gz",
    ] {
        assert!(
            files.contains(&wanted),
            "{wanted} not in the package:\n{contents}"
        );
    }
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("systemd/system/classifier.service")),
        "the unit:\n{contents}"
    );
    // The lab is its own crate and binary, never packaged: no page, binary or completion.
    assert!(
        !files.iter().any(|f| f.contains("classifier-lab")),
        "lab files in the package:\n{contents}"
    );

    let conffiles = String::from_utf8(
        run_ok(
            Command::new("dpkg-deb")
                .args(["--info"])
                .arg(&deb)
                .arg("conffiles"),
        )
        .stdout,
    )
    .unwrap();
    for conffile in [
        "/etc/classifier/policy.toml",
        "/etc/classifier/bank-holidays.json",
        "/etc/default/classifier",
    ] {
        assert!(
            conffiles.lines().any(|l| l == conffile),
            "{conffile} is a conffile: {conffiles}"
        );
    }
    let depends = String::from_utf8(
        run_ok(
            Command::new("dpkg-deb")
                .args(["--field"])
                .arg(&deb)
                .arg("Depends"),
        )
        .stdout,
    )
    .unwrap();
    assert!(
        depends.contains("libc6") && depends.contains("systemd"),
        "{depends}"
    );

    // Installed: the binary is stripped and runs with no toolchain, and the unit it
    // ships is the repository's.
    let installed = InstalledRoot::install(&deb);
    let binary = installed.path("/usr/bin/classifier");
    let sections = String::from_utf8(
        run_ok(
            Command::new("readelf")
                .arg("--section-headers")
                .arg(&binary),
        )
        .stdout,
    )
    .unwrap();
    assert!(!sections.contains(".debug_info"), "stripped");
    let version = run_ok(
        Command::new(&binary)
            .arg("--version")
            .env_clear()
            .env("PATH", "/nonexistent"),
    );
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("classifier "));
    let unit = ["/lib/systemd/system", "/usr/lib/systemd/system"]
        .iter()
        .map(|dir| installed.path(&format!("{dir}/classifier.service")))
        .find(|p| p.exists())
        .expect("the unit is installed");
    assert_eq!(
        std::fs::read_to_string(&unit).unwrap(),
        std::fs::read_to_string(UNIT).unwrap()
    );
}
