//! `classifier stop`: how the systemd unit stops the daemon (`ExecStop=`).
//!
//! A stop that is the first half of a restart (`systemctl restart`, what a package upgrade
//! does) hands the datapath over: SIGUSR1, the daemon exits leaving its programs attached
//! and its maps pinned, and the next daemon takes them over with their counters, enforcing
//! throughout. Any other stop detaches: SIGTERM, programs detached and pins removed.
//!
//! The daemon cannot tell the two apart from the signal systemd sends, so this asks systemd
//! which job is running on the unit: `systemctl restart` runs a job of type `restart` while
//! the unit stops (it becomes `start` only once the stop is done). When systemd cannot be
//! asked, the stop detaches: leaving a datapath behind is the surprise to avoid.

use std::{
    ffi::OsString,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use nix::{
    errno::Errno,
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tracing::{info, warn};

/// The `systemctl` to ask (tests point it at a stand-in).
pub const SYSTEMCTL_ENV: &str = "CLASSIFIER_SYSTEMCTL";

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  # What the unit runs: hand over when systemd is restarting the unit, else detach
  classifier stop --systemd-unit classifier.service $MAINPID

  # Exit leaving the datapath enforcing (the next `classifier run` takes it over)
  classifier stop --keep-datapath 4242")]
pub struct StopArgs {
    /// The daemon's process id (the unit passes $MAINPID). Without one there is nothing to
    /// stop: a daemon that died left its datapath attached for the next one.
    pid: Option<i32>,

    /// Hand the datapath over (SIGUSR1) whatever kind of stop this is.
    #[arg(long, conflicts_with = "systemd_unit")]
    keep_datapath: bool,

    /// Ask systemd whether UNIT is being restarted: then hand the datapath over, else
    /// detach it. Without this or --keep-datapath, the stop detaches (SIGTERM).
    #[arg(long, value_name = "UNIT")]
    systemd_unit: Option<String>,

    /// How long to wait for the daemon to exit.
    #[arg(long, value_name = "DURATION", default_value = "80s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub fn execute(args: &StopArgs) -> anyhow::Result<()> {
    let Some(pid) = args.pid else {
        info!("no daemon process: nothing to stop");
        return Ok(());
    };
    let hand_over = args.keep_datapath
        || args
            .systemd_unit
            .as_deref()
            .is_some_and(|unit| match restart_pending(unit) {
                Ok(pending) => pending,
                Err(e) => {
                    warn!(error = %format!("{e:#}"), unit, "could not ask systemd whether the unit is restarting: detaching the datapath");
                    false
                }
            });
    let (signal, what) = if hand_over {
        (
            Signal::SIGUSR1,
            "handing the datapath over to the next daemon",
        )
    } else {
        (Signal::SIGTERM, "detaching the datapath")
    };
    info!(pid, signal = %signal, "stopping the daemon, {what}");
    let pid = Pid::from_raw(pid);
    match kill(pid, signal) {
        Ok(()) => {}
        Err(Errno::ESRCH) => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("signalling process {pid}")),
    }
    let deadline = Instant::now() + args.timeout;
    while running(pid) {
        if Instant::now() >= deadline {
            bail!(
                "process {pid} did not exit within {} of {signal}",
                humantime::format_duration(args.timeout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Whether `pid` still runs; a zombie waiting for its parent (systemd) has exited.
fn running(pid: Pid) -> bool {
    if kill(pid, None) == Err(Errno::ESRCH) {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Whether systemd is running a restart job on `unit`.
fn restart_pending(unit: &str) -> anyhow::Result<bool> {
    let systemctl = std::env::var_os(SYSTEMCTL_ENV).unwrap_or_else(|| OsString::from("systemctl"));
    let output = Command::new(&systemctl)
        .args(["list-jobs", "--no-legend", "--no-pager", "--full"])
        .arg(unit)
        .output()
        .with_context(|| format!("running {}", systemctl.to_string_lossy()))?;
    if !output.status.success() {
        bail!(
            "systemctl list-jobs failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(restart_job_listed(
        &String::from_utf8_lossy(&output.stdout),
        unit,
    ))
}

/// Whether `systemctl list-jobs --no-legend` lists a restart job for `unit`: lines of
/// `JOB UNIT TYPE STATE`.
fn restart_job_listed(listing: &str, unit: &str) -> bool {
    listing.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        matches!(fields.as_slice(), [_, name, kind, ..] if *name == unit && kind.ends_with("restart"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_restart_job_of_this_unit_hands_over() {
        let unit = "classifier.service";
        assert!(restart_job_listed(
            "1234 classifier.service restart running\n",
            unit
        ));
        assert!(restart_job_listed(
            "88 classifier.service try-restart running\n",
            unit
        ));
        assert!(!restart_job_listed(
            "1234 classifier.service stop running\n",
            unit
        ));
        assert!(!restart_job_listed("", unit), "no job: a stop from outside");
        assert!(!restart_job_listed(
            "7 other.service restart running\n",
            unit
        ));
        assert!(!restart_job_listed("No jobs running.\n", unit));
    }

    #[test]
    fn an_exited_process_is_not_running() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        // Exited but not reaped: a zombie.
        std::thread::sleep(Duration::from_millis(200));
        assert!(!running(pid), "a zombie has exited");
        child.wait().unwrap();
        assert!(!running(pid));
        assert!(running(Pid::this()));
    }
}
