//! Removing labs: on drop, on SIGINT/SIGTERM, and leftovers of runs that were killed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Mutex, Once},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{NETNS_PREFIX, PIN_DIR_PREFIX, shell::run};

/// Labs of this process that are up: id → (namespaces, pin directory).
static LIVE: Mutex<BTreeMap<String, (Vec<String>, PathBuf)>> = Mutex::new(BTreeMap::new());

/// Records a lab so a signal can tear it down. Called before any of it is created.
pub(super) fn register(id: &str, namespaces: Vec<String>, pin_dir: PathBuf) {
    lock_live().insert(id.to_owned(), (namespaces, pin_dir));
}

fn lock_live() -> std::sync::MutexGuard<'static, BTreeMap<String, (Vec<String>, PathBuf)>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes a registered lab's namespaces (killing what still runs in them) and pins.
pub(super) fn remove_lab(id: &str) {
    let Some((namespaces, pin_dir)) = lock_live().remove(id) else {
        return;
    };
    for netns in &namespaces {
        remove_netns(netns);
    }
    remove_pin_dir(&pin_dir);
    let _ = std::fs::remove_dir_all(data_dir(id));
}

/// A lab's files (flow store, audit log, exports): under the temporary directory.
pub(super) fn data_dir(id: &str) -> PathBuf {
    std::env::temp_dir().join(format!("classifier-lab-{id}"))
}

/// On SIGINT or SIGTERM, tears down every live lab of this process, then exits with 130.
pub(super) fn install_signal_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            let ids: Vec<String> = lock_live().keys().cloned().collect();
            for id in ids {
                remove_lab(&id);
            }
            std::process::exit(130);
        });
        if let Err(e) = installed {
            tracing::warn!(error = %e, "no signal handler: an interrupted lab needs `classifier-lab down`");
        }
    });
}

fn remove_netns(netns: &str) {
    // A namespace lives on while a process is in it: kill those first.
    if let Ok(pids) = run("ip", &["netns", "pids", netns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let _ = run("ip", &["netns", "del", netns]);
    let _ = std::fs::remove_dir_all(crate::topology::netns_etc_dir(netns));
}

/// Removes a lab daemon's pins: maps, and the pinned attachments under `links/` that a
/// killed daemon leaves (the namespace going away has detached them already).
fn remove_pin_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// What [`remove_leftovers`] did.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub removed_namespaces: Vec<String>,
    pub removed_pin_dirs: Vec<PathBuf>,
    /// Labs left alone because the process that made them still runs.
    pub skipped_live: Vec<String>,
}

/// Removes lab namespaces and pin directories whose owning process is gone (all of them
/// with `all`), e.g. after a test run was killed with SIGKILL.
pub fn remove_leftovers(all: bool) -> anyhow::Result<Leftovers> {
    let mut report = Leftovers::default();
    let listing = run("ip", &["netns", "list"])?;
    for netns in listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(NETNS_PREFIX))
    {
        if !all && owner_alive(&netns[NETNS_PREFIX.len()..]) {
            report.skipped_live.push(netns.to_owned());
            continue;
        }
        remove_netns(netns);
        report.removed_namespaces.push(netns.to_owned());
    }
    let pin_parent = Path::new(PIN_DIR_PREFIX).parent().unwrap_or(Path::new("/"));
    let pin_stem = Path::new(PIN_DIR_PREFIX)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    for entry in std::fs::read_dir(pin_parent)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(lab_id) = name.strip_prefix(pin_stem) else {
            continue;
        };
        if !all && owner_alive(lab_id) {
            continue;
        }
        remove_pin_dir(&entry.path());
        report.removed_pin_dirs.push(entry.path());
    }
    Ok(report)
}

/// Whether the process named by a lab id (`<pid>-<seq>[-role]`) still runs.
fn owner_alive(lab_id: &str) -> bool {
    lab_id
        .split('-')
        .next()
        .and_then(|pid| pid.parse::<i32>().ok())
        .is_some_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_of_this_process_is_alive_and_pid_max_is_not() {
        assert!(owner_alive(&format!("{}-0-gw", std::process::id())));
        assert!(!owner_alive("4194304-0-gw"));
        assert!(!owner_alive("garbage"));
    }
}
