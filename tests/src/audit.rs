//! A private audit directory for the export tests. The classifier keeps its audit log at a
//! fixed path (/var/lib/classifier) with no flag to move it, so each command under test
//! runs in a mount namespace of its own in which /var/lib, /run and /var/log/journal are
//! directories of the test's: nothing of the machine's is read or written, and the product
//! carries no test hook. The copies of the entries go to a real systemd-journald started
//! in such a namespace, or to a syslog socket that the test binds at /dev/log there.

use std::{
    ffi::OsStr,
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, unshare},
};

use crate::classifier_bin;

/// Where Debian (and most distributions) install journald.
const JOURNALD: [&str; 2] = [
    "/lib/systemd/systemd-journald",
    "/usr/lib/systemd/systemd-journald",
];

/// The test's journald: only its own directories, no kernel messages, and the machine's
/// kernel audit setting left as it is (an empty `Audit=` is "unset").
const JOURNALD_CONF: &str = "[Journal]\nStorage=volatile\nReadKMsg=no\nAudit=\n\
                             ForwardToSyslog=no\nForwardToWall=no\n";

/// What receives the copies of the audit entries.
enum Witness {
    Journald(Child),
    /// A socket bound at the sandbox's /dev/log, and what it has received so far.
    Syslog {
        socket: UnixDatagram,
        received: std::cell::RefCell<Vec<String>>,
    },
}

/// A private /var/lib/classifier and journal (or syslog) for the commands of one test.
pub struct AuditSandbox {
    root: PathBuf,
    witness: Witness,
}

impl AuditSandbox {
    /// With a real systemd-journald. `None` (the test is skipped) where there is none;
    /// under CI that is a failure.
    pub fn with_journald(test: &str) -> Option<Self> {
        let Some(journald) = JOURNALD.iter().map(Path::new).find(|p| p.exists()) else {
            let under_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !under_ci,
                "{test} needs systemd-journald (Debian package systemd; `cargo xtask setup` \
                 installs it) and CI=true"
            );
            eprintln!("SKIPPED {test}: needs systemd-journald (package systemd)");
            return None;
        };
        let root = Self::make_root(test);
        let conf = root.join("run/systemd/journald.conf.d");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(root.join("run/systemd/journal")).unwrap();
        std::fs::write(conf.join("classifier-test.conf"), JOURNALD_CONF).unwrap();
        let mut command = Command::new(journald);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        enter_on_exec(&mut command, &root, None);
        let child = command.spawn().expect("systemd-journald starts");
        let sandbox = Self {
            root,
            witness: Witness::Journald(child),
        };
        let socket = sandbox.root.join("run/systemd/journal/socket");
        wait_for(Duration::from_secs(10), "journald's socket", || {
            socket.exists()
        });
        Some(sandbox)
    }

    /// With a syslog socket of the test's own at /dev/log, and no journal.
    pub fn with_syslog(test: &str) -> Self {
        let root = Self::make_root(test);
        let path = root.join("dev-log.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        Self {
            root,
            witness: Witness::Syslog {
                socket,
                received: Default::default(),
            },
        }
    }

    fn make_root(test: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("classifier-audit-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["var-lib", "run", "journal"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        // Root's and no one else's, as /var/lib is.
        std::fs::set_permissions(root.join("var-lib"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        root
    }

    /// A directory of the test's, outside the private mounts (for stores and exports).
    pub fn work_dir(&self) -> PathBuf {
        let dir = self.root.join("work");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// What the commands see as /var/lib/classifier.
    pub fn audit_dir(&self) -> PathBuf {
        self.root.join("var-lib/classifier")
    }

    /// What the commands see as /var/lib/classifier/export-audit.jsonl.
    pub fn log(&self) -> PathBuf {
        self.audit_dir().join("export-audit.jsonl")
    }

    /// The log's lines.
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `program` to run inside the sandbox.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        let devlog = match &self.witness {
            Witness::Syslog { .. } => Some(self.root.join("dev-log.sock")),
            Witness::Journald(_) => None,
        };
        enter_on_exec(&mut command, &self.root, devlog);
        command
    }

    /// The classifier under test, inside the sandbox.
    pub fn classifier(&self) -> Command {
        self.command(classifier_bin())
    }

    /// `classifier audit verify` with `args`, inside the sandbox.
    pub fn verify(&self, args: &[&str]) -> std::process::Output {
        self.classifier()
            .args(["audit", "verify"])
            .args(args)
            .output()
            .unwrap()
    }

    /// What the journal (as `journalctl -o export`) or the syslog socket (one message a
    /// line) holds, once it holds at least `entries` audit entries (waits 10 s at most).
    pub fn witnessed(&self, entries: usize) -> String {
        let mut text = String::new();
        wait_for(Duration::from_secs(10), "the audit entries' copies", || {
            text = self.read_witness();
            classifier_user::export::audit::witness::entries_in(&text).len() >= entries
        });
        text
    }

    /// Writes what [`Self::witnessed`] returns to a file, for `audit verify --journal`.
    pub fn witnessed_file(&self, entries: usize) -> PathBuf {
        let path = self.root.join("witnessed.txt");
        std::fs::write(&path, self.witnessed(entries)).unwrap();
        path
    }

    fn read_witness(&self) -> String {
        match &self.witness {
            Witness::Journald(_) => {
                let output = self
                    .command("journalctl")
                    .args([
                        "--no-pager",
                        "--quiet",
                        "--output=export",
                        "SYSLOG_IDENTIFIER=classifier-audit",
                    ])
                    .output()
                    .unwrap();
                assert!(
                    output.status.success(),
                    "journalctl: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                String::from_utf8_lossy(&output.stdout).into_owned()
            }
            Witness::Syslog { socket, received } => {
                let mut buffer = vec![0; 65536];
                while let Ok(n) = socket.recv(&mut buffer) {
                    received
                        .borrow_mut()
                        .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
                }
                received.borrow().join("\n")
            }
        }
    }
}

impl Drop for AuditSandbox {
    fn drop(&mut self) {
        if let Witness::Journald(child) = &mut self.witness {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Makes `command` run in a mount namespace of its own where /var/lib, /run and
/// /var/log/journal are the sandbox's, and /dev/log is `devlog` if given (on a /dev of
/// its own).
fn enter_on_exec(command: &mut Command, root: &Path, devlog: Option<PathBuf>) {
    let var_lib = root.join("var-lib");
    let run = root.join("run");
    let journal = root.join("journal");
    let has_journal_dir = Path::new("/var/log/journal").is_dir();
    // SAFETY: between fork and exec the closure makes system calls only, on paths made
    // before the fork (nix passes short paths through a buffer on the stack).
    unsafe {
        command.pre_exec(move || {
            unshare(CloneFlags::CLONE_NEWNS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            let bind = |from: &Path, to: &str| {
                mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            };
            bind(&var_lib, "/var/lib")?;
            bind(&run, "/run")?;
            if has_journal_dir {
                bind(&journal, "/var/log/journal")?;
            }
            if let Some(devlog) = &devlog {
                mount(
                    Some("tmpfs"),
                    "/dev",
                    Some("tmpfs"),
                    MsFlags::empty(),
                    Some("mode=0755"),
                )?;
                drop(nix::fcntl::open(
                    "/dev/log",
                    nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY,
                    nix::sys::stat::Mode::from_bits_truncate(0o666),
                )?);
                bind(devlog, "/dev/log")?;
            }
            Ok(())
        });
    }
}

/// Polls `done` every 50 ms until it holds; panics after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not there within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
