//! A real systemd to run the package's unit under, on a machine whose PID 1 is not
//! systemd: this host's own root, booted by `systemd-nspawn` in a throw-away overlay
//! (`--volatile=overlay`: every write is lost at exit), inside a lab namespace
//! (`--network-namespace-path`), with the host's bpffs bound in, booted to `basic.target`
//! only.

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A booted container. Powered off and its mount removed on drop.
pub struct Container {
    nspawn: Child,
    /// The container's PID 1 (systemd), as this host sees it.
    pub leader: u32,
    root: PathBuf,
    log: PathBuf,
}

impl Container {
    /// Boots this host's root with systemd as PID 1 in network namespace `netns`.
    pub fn boot(name: &str, netns: &str) -> anyhow::Result<Self> {
        // nspawn refuses "/" itself; a bind mount of it is another path to the same tree,
        // read-only so that nothing (a careless `rm -r` of the temporary directory, say)
        // can change the host through it. The container writes to its overlay only.
        let root = std::env::temp_dir().join(format!("classifier-nspawn-{name}"));
        std::fs::create_dir_all(&root)?;
        crate::package::run_ok(
            Command::new("mount")
                .args(["--bind", "-o", "ro", "/"])
                .arg(&root),
        );
        let log = std::env::temp_dir().join(format!("classifier-nspawn-{name}.log"));
        let nspawn = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(&root)
            .args([
                "--volatile=overlay",
                "--boot",
                "--register=no",
                "--keep-unit",
            ])
            .args(["--link-journal=no", "--capability=all", "--console=pipe"])
            // nspawn's own seccomp filter refuses bpf(2) to everything in the container
            // (EPERM), whatever its capabilities: the service needs it.
            .arg("--system-call-filter=bpf")
            .arg(format!("--machine={name}"))
            .arg(format!("--network-namespace-path=/run/netns/{netns}"))
            .arg("--bind=/sys/fs/bpf")
            // Only what a service needs (journald, sysusers, tmpfiles, sockets): the host's
            // own enabled services (a database, say) and timers (apt's daily run, which
            // fires at boot when it missed its hour) stay down in the container.
            .args(["systemd.unit=basic.target", "systemd.mask=timers.target"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting systemd-nspawn")?;
        let mut container = Self {
            nspawn,
            leader: 0,
            root,
            log,
        };
        container.leader = container.wait_for_leader()?;
        container.wait_booted()?;
        Ok(container)
    }

    /// The container's systemd: the child of nspawn's child, or of nspawn itself.
    fn wait_for_leader(&mut self) -> anyhow::Result<u32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(pid) = find_systemd_below(self.nspawn.id()) {
                return Ok(pid);
            }
            if let Some(status) = self.nspawn.try_wait()? {
                bail!(
                    "systemd-nspawn exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("no systemd started in the container within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_booted(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let state = self.run(&["systemctl", "is-system-running"])?;
            let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the container's systemd is `{state}` after 90 s");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Runs `args` inside the container (all its namespaces).
    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("nsenter")
            .arg("--target")
            .arg(self.leader.to_string())
            .args(["--all", "--"])
            .args(args)
            .output()
            .with_context(|| format!("running {args:?} in the container"))
    }

    /// [`Container::run`], failing unless it succeeds; its stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let output = self.run(args).unwrap();
        assert!(
            output.status.success(),
            "{args:?} in the container: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM asks nspawn to shut the container down cleanly.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.nspawn.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        let _ = Command::new("umount").arg(&self.root).status();
        let _ = std::fs::remove_dir(&self.root);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The first process named `systemd` among the descendants of `pid`.
fn find_systemd_below(pid: u32) -> Option<u32> {
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{parent}/task")).ok()?;
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                let comm =
                    std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    return Some(child);
                }
                queue.push(child);
            }
        }
    }
    None
}
