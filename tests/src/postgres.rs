//! A real PostgreSQL server for the store tests: its own cluster in a temporary directory,
//! reached only over a Unix socket there (no TCP listener at all), removed when dropped.
//! [`Postgres::start_tls`] adds TLS on TCP, inside a network namespace of its own (its
//! 127.0.0.1 is no one else's), with certificates of a test CA ([`TestCa`]).

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
    /// The network namespace a TLS server listens in, removed with it.
    netns: Option<OwnedNetns>,
}

/// A network namespace of the test's, deleted when dropped: also when the server fails to
/// start after it was made.
struct OwnedNetns(String);

impl Drop for OwnedNetns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// The password of the `classifier` role a TLS server has (over TCP, only with it).
pub const TLS_PASSWORD: &str = "Pw-9f3c1d7e-never-logged";
/// The database the `classifier` role owns on a TLS server.
pub const TLS_DATABASE: &str = "flows";

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Postgres {
    /// initdb and start a server as the `postgres` user (Debian's postgresql package).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// A server listening on 127.0.0.1:5432 inside a network namespace of its own (see
    /// [`Postgres::netns`]), with `ssl=on` and `ca`'s server certificate, and only
    /// `hostssl` lines for TCP: a role `classifier` ([`TLS_PASSWORD`], SCRAM) owning the
    /// database [`TLS_DATABASE`]. The Unix socket stays, trusted, for setting up.
    pub fn start_tls(ca: &TestCa) -> anyhow::Result<Self> {
        let server = Self::start_with(Some(ca))?;
        let psql = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                "psql",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
            ])
            .arg(&server.dir)
            .args(["-d", "postgres", "-c"])
            .arg(format!(
                "CREATE ROLE classifier LOGIN PASSWORD '{TLS_PASSWORD}'"
            ))
            .arg("-c")
            .arg(format!("CREATE DATABASE {TLS_DATABASE} OWNER classifier"))
            .output()
            .context("running psql (apt install postgresql-client)")?;
        if !psql.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&psql.stderr));
        }
        Ok(server)
    }

    fn start_with(tls: Option<&TestCa>) -> anyhow::Result<Self> {
        let bin = server_bin_dir()?;
        let user = User::from_name("postgres")?
            .context("no `postgres` user: apt install postgresql (`cargo xtask setup` does)")?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("classifier-pg-{}-{n}", std::process::id()));
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
        let mut command = Command::new("runuser");
        let mut netns = None;
        let mut settings = vec!["listen_addresses=".to_owned(), "fsync=off".to_owned()];
        if let Some(ca) = tls {
            let name = format!("clpg-{}-{n}", std::process::id());
            ip(&["netns", "add", &name])?;
            netns = Some(OwnedNetns(name.clone()));
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            command = Command::new("ip");
            command.args(["netns", "exec", &name, "runuser"]);
            let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
            std::fs::copy(&ca.server_cert, &cert)?;
            std::fs::copy(&ca.server_key, &key)?;
            for file in [&cert, &key] {
                chown(file, Some(user.uid), Some(user.gid))?;
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
            }
            settings = vec![
                "listen_addresses=127.0.0.1".to_owned(),
                "fsync=off".to_owned(),
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", cert.display()),
                format!("ssl_key_file={}", key.display()),
                "password_encryption=scram-sha-256".to_owned(),
            ];
            // TCP only over TLS: no `host` or `hostnossl` line.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
            )?;
        }
        command
            .args(["-u", "postgres", "--"])
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir);
        for setting in &settings {
            command.arg("-c").arg(setting);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting postgres")?;
        let server = Self { child, dir, netns };
        server.wait_for_socket(&bin)?;
        Ok(server)
    }

    /// The network namespace a TLS server listens in (clients must run there).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_ref().map(|netns| netns.0.as_str())
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

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (apt install iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A test CA made with the `openssl` command, a server certificate it signs for
/// `db.example.test` and 127.0.0.1, and a second CA that signed nothing of the server's.
pub struct TestCa {
    dir: PathBuf,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// The name on the server certificate.
pub const SERVER_NAME: &str = "db.example.test";

impl TestCa {
    pub fn make() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "classifier-pgca-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let openssl = |args: &[&str]| -> anyhow::Result<()> {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .context("running openssl (apt install openssl)")?;
            if !output.status.success() {
                bail!(
                    "openssl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            Ok(())
        };
        for (name, subject) in [
            ("ca", "/CN=Classifier Test CA"),
            ("other-ca", "/CN=Some Other CA"),
        ] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-subj",
                subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ])?;
        }
        std::fs::write(
            dir.join("server.ext"),
            format!(
                "subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )?;
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &format!("/CN={SERVER_NAME}"),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ])?;
        Ok(Self {
            ca: dir.join("ca.crt"),
            other_ca: dir.join("other-ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            dir,
        })
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
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
