//! A real PostgreSQL server for the store tests: its own cluster in a temporary directory,
//! reached only over a Unix socket there (no TCP listener at all), removed when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::{Pid, User, chown},
};

/// A running PostgreSQL server.
pub struct Postgres {
    child: Child,
    dir: PathBuf,
}

impl Postgres {
    /// initdb and start a server as the `postgres` user (Debian's postgresql package).
    pub fn start() -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let bin = server_bin_dir()?;
        let user = User::from_name("postgres")?
            .context("no `postgres` user: apt install postgresql (`cargo xtask setup` does)")?;
        let dir = std::env::temp_dir().join(format!(
            "classifier-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        chown(&dir, Some(user.uid), Some(user.gid))?;
        let data = dir.join("data");
        let initdb = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .context("running initdb")?;
        if !initdb.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&initdb.stderr));
        }
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args(["-c", "listen_addresses=", "-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting postgres")?;
        let server = Self { child, dir };
        server.wait_for_socket(&bin)?;
        Ok(server)
    }

    /// Waits until the server accepts connections: its socket appears while it is still
    /// starting up ("the database system is starting up"), so ask pg_isready.
    fn wait_for_socket(&self, bin: &Path) -> anyhow::Result<()> {
        let socket = self.dir.join(".s.PGSQL.5432");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if socket.exists() {
                let ready = Command::new(bin.join("pg_isready"))
                    .arg("-q")
                    .arg("-h")
                    .arg(&self.dir)
                    .status()
                    .context("running pg_isready")?;
                if ready.success() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "postgres did not accept connections on {} within 30 s",
            socket.display()
        )
    }

    /// The libpq connection string the store takes (`--store`).
    pub fn connection(&self) -> String {
        format!("host={} user=postgres dbname=postgres", self.dir.display())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: fast shutdown. runuser passes it on.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's server binaries: /usr/lib/postgresql/<version>/bin.
fn server_bin_dir() -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("no {} (apt install postgresql)", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no PostgreSQL server under /usr/lib/postgresql")
}
