//! Running the real `classifier run` binary on the lab's gateway, as the demo and the
//! end-to-end tests do.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{Lab, shell};
use classifier_user::{
    control::{self, Request},
    flows::FlowRecord,
};

/// How long a daemon may take to load, verify and attach before we give up on it.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Overrides [`READY_TIMEOUT`], in seconds: the lab tests run inside a software-emulated VM
/// (tests/tests/distro_kernels.rs), where the verifier alone takes minutes.
pub const READY_TIMEOUT_ENV: &str = "CLASSIFIER_LAB_READY_TIMEOUT";

/// How long a daemon may take to attach, or to stop once told.
fn ready_timeout() -> Duration {
    std::env::var(READY_TIMEOUT_ENV)
        .ok()
        .and_then(|secs| secs.trim().parse().ok())
        .map_or(READY_TIMEOUT, Duration::from_secs)
}

/// A `classifier run` process attached to a lab's gateway. Killed if dropped while running.
pub struct DaemonProcess {
    child: Child,
    pid_file: PathBuf,
    pub pin_dir: PathBuf,
    pub control_socket: PathBuf,
    log_file: Option<PathBuf>,
}

/// Options beyond the ones every lab daemon gets.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    /// Extra arguments for `classifier run`.
    pub extra_args: Vec<String>,
    /// Whether the daemon's stdout goes to ours (the demo) or nowhere (tests).
    pub show_output: bool,
    /// The flow store, when not the lab's SQLite file (a PostgreSQL connection string).
    pub store: Option<String>,
    /// Where the daemon's log (its stderr) goes, appended, instead of to ours: tests read
    /// it back with [`DaemonProcess::log`].
    pub log_file: Option<PathBuf>,
    /// The control socket, when not the lab's own under /run/classifier.
    pub control_socket: Option<PathBuf>,
}

impl DaemonProcess {
    /// Starts `binary run` on the lab gateway's LAN interface (and its WAN interface, where
    /// uploads are shaped) and waits until it has attached.
    pub fn start(binary: &Path, lab: &Lab, options: &DaemonOptions) -> anyhow::Result<Self> {
        let pin_dir = lab.pin_dir();
        let pid_file = std::env::temp_dir().join(format!("classifier-lab-{}.pid", lab.id));
        let _ = std::fs::remove_file(&pid_file);
        let control_socket = options
            .control_socket
            .clone()
            .unwrap_or_else(|| lab.control_socket());
        let mut command = Command::new(binary);
        command
            .arg("run")
            .args(["--netns", &lab.gateway.netns])
            .args(["--iface", lab.gateway.iface])
            .args(["--wan", crate::topology::GATEWAY_WAN_IFACE])
            .args(if lab.nat {
                &["--nat-mark-mask", crate::topology::LAB_NAT_MARK_MASK][..]
            } else {
                &[]
            })
            .arg("--pin-dir")
            .arg(&pin_dir)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--control-socket")
            .arg(&control_socket)
            .arg("--store")
            .arg(
                options
                    .store
                    .clone()
                    .unwrap_or_else(|| lab.store_path().display().to_string()),
            )
            .args(&options.extra_args)
            .stdin(Stdio::null());
        if !options.show_output {
            command.stdout(Stdio::null());
        }
        if let Some(log_file) = &options.log_file {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_file)
                .with_context(|| format!("opening {}", log_file.display()))?;
            command.stderr(log);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut daemon = Self {
            child,
            pid_file,
            pin_dir,
            control_socket,
            log_file: options.log_file.clone(),
        };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + ready_timeout();
        while Instant::now() < deadline {
            if self.pid_file.exists() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                let errors = match &self.log_file {
                    Some(_) => format!("its log:\n{}", self.log()),
                    None => "its errors are above".to_owned(),
                };
                bail!("classifier run exited before attaching ({status}); {errors}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("classifier run did not attach within {:?}", ready_timeout())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon has logged so far, when it was started with
    /// [`DaemonOptions::log_file`] (empty otherwise).
    pub fn log(&self) -> String {
        self.log_file
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    /// The daemon's flows, asked through its control socket (as `classifier flows`).
    pub fn flows(&self) -> anyhow::Result<Vec<FlowRecord>> {
        control::ask(&self.control_socket, &Request::Flows)?
            .iter()
            .map(|line| serde_json::from_str(line).context("reading a flow record"))
            .collect()
    }

    /// The daemon's status, asked through its control socket (as `classifier status`).
    pub fn status(&self) -> anyhow::Result<classifier_user::daemon::Status> {
        let lines = control::ask(&self.control_socket, &Request::Status)?;
        serde_json::from_str(lines.first().context("no status")?).context("reading the status")
    }

    /// Kills the daemon with SIGKILL, as a crash would end it, and waits for it to be gone.
    /// Its pinned datapath stays attached.
    pub fn kill_hard(mut self) -> anyhow::Result<()> {
        self.child.kill().context("killing the daemon")?;
        self.child.wait().context("waiting for the killed daemon")?;
        Ok(())
    }

    /// Asks the daemon to exit leaving its datapath attached for the next one (SIGUSR1, a
    /// hand-over or upgrade) and returns how it exited.
    pub fn hand_over(self) -> anyhow::Result<ExitStatus> {
        self.signal_and_wait(Signal::SIGUSR1)
    }

    /// Asks the daemon to shut down cleanly (SIGTERM) and returns how it exited.
    pub fn stop(self) -> anyhow::Result<ExitStatus> {
        self.signal_and_wait(Signal::SIGTERM)
    }

    fn signal_and_wait(mut self, signal: Signal) -> anyhow::Result<ExitStatus> {
        kill(Pid::from_raw(self.child.id() as i32), signal).context("signalling the daemon")?;
        let deadline = Instant::now() + ready_timeout();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "classifier run did not stop within {:?} of {signal}",
            ready_timeout()
        )
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        shell::stop_child(&mut self.child);
        let _ = std::fs::remove_file(&self.pid_file);
    }
}
