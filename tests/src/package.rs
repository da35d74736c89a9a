//! The Debian package under test, and a root to install it into with dpkg.
//!
//! `cargo xtask test` builds the package (`cargo xtask deb`) and names it in
//! `CLASSIFIER_DEB`; elsewhere the newest `target/debian/classifier_*.deb` is used.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::under_ci;

/// Where `cargo xtask deb` leaves packages.
fn debian_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        )
        .join("debian")
}

/// The package to test: $CLASSIFIER_DEB, else the newest one `cargo xtask deb` built. None
/// (the test is skipped) when there is none, which fails the test under CI.
pub fn debian_package(test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CLASSIFIER_DEB") {
        let path = PathBuf::from(path);
        assert!(path.exists(), "CLASSIFIER_DEB={} not found", path.display());
        return Some(path);
    }
    let newest = std::fs::read_dir(debian_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("classifier_") && n.ends_with(".deb"))
        })
        .max_by_key(|path| path.metadata().and_then(|m| m.modified()).ok());
    if newest.is_none() {
        assert!(
            !under_ci(),
            "{test} needs the Debian package and CI=true: build it with `cargo xtask deb` \
             (cargo xtask test does)"
        );
        eprintln!("SKIPPED {test}: no package; build one with `cargo xtask deb`");
    }
    newest
}

/// True when `tool` runs; otherwise panics under CI, or says the test is skipped.
pub fn tool(test: &str, tool: &str, package: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            !under_ci(),
            "{test} needs `{tool}` and CI=true: install {package} (`cargo xtask setup` does)"
        );
        eprintln!("SKIPPED {test}: `{tool}` not found (Debian package {package})");
    }
    found
}

/// Runs `command`, panicking with its output unless it succeeds.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The package installed by dpkg into a directory of its own (`dpkg --root`), with its
/// maintainer scripts run against that root (`DPKG_ROOT`): nothing of the host changes.
/// Removed on drop.
pub struct InstalledRoot {
    pub root: PathBuf,
    /// What `dpkg -i` printed.
    pub dpkg_output: String,
}

impl InstalledRoot {
    pub fn install(package: &Path) -> Self {
        // One root per install: the tests of one binary install at the same time.
        static INSTALLS: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "classifier-deb-root-{}-{}",
            std::process::id(),
            INSTALLS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let admin = root.join("var/lib/dpkg");
        for dir in ["info", "updates", "triggers"] {
            std::fs::create_dir_all(admin.join(dir)).unwrap();
        }
        std::fs::write(admin.join("status"), "").unwrap();
        std::fs::write(admin.join("available"), "").unwrap();
        let output = run_ok(
            Command::new("dpkg")
                .arg(format!("--root={}", root.display()))
                // The scripts run here with DPKG_ROOT set (no shell inside the root), and
                // systemd is the host's, not a package in this root's database.
                .args(["--force-script-chrootless", "--force-depends"])
                .arg("--log=/dev/null")
                .arg("--install")
                .arg(package),
        );
        Self {
            root,
            dpkg_output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    /// `path` (absolute, as installed) inside the root.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

impl Drop for InstalledRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
