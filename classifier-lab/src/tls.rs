//! A real TLS server on the lab's server host: Debian's `openssl s_server`, with a
//! self-signed certificate for the lab's names, serving files of known sizes
//! (`/bytes-<N>`) over TLS 1.2 and 1.3, on IPv4 and IPv6.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{Host, Lab, shell::run};

pub const HTTPS_PORT: u16 = 443;
/// Files the server offers: `/bytes-<N>` holds N bytes.
pub const FILE_SIZES: [u64; 4] = [16 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024];
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's files and certificate; removed when dropped (the process is the lab's).
pub struct TlsServer {
    dir: PathBuf,
}

impl TlsServer {
    /// Starts `openssl s_server` in `lab`'s server namespace for `names`.
    pub fn start(lab: &Lab, names: &[String]) -> anyhow::Result<Self> {
        Self::start_on(lab, names, &[HTTPS_PORT])
    }

    /// [`TlsServer::start`] listening on each of `ports`. An `s_server` serves one
    /// connection at a time: a test that keeps a connection open long gives it a port of
    /// its own.
    pub fn start_on(lab: &Lab, names: &[String], ports: &[u16]) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("classifier-tls-{}", lab.id));
        std::fs::create_dir_all(&dir)?;
        let server = Self { dir };
        server.make_certificate(names)?;
        for size in FILE_SIZES {
            std::fs::write(
                server.dir.join(format!("bytes-{size}")),
                vec![b'x'; size as usize],
            )?;
        }
        for &port in ports {
            // One server per address family: s_server's IPv6 socket is IPv6-only.
            for (family, address) in [
                ("-4", format!("0.0.0.0:{port}")),
                ("-6", format!("[::]:{port}")),
            ] {
                let mut command = Lab::command(&lab.server, "openssl");
                command
                    .current_dir(&server.dir)
                    .args(["s_server", "-quiet", "-WWW", family, "-accept", &address])
                    .args(["-cert", "cert.pem", "-key", "key.pem"])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
                lab.spawn(command)?;
            }
        }
        for &port in ports {
            wait_listening(&lab.server, port, 2)?;
        }
        Ok(server)
    }

    /// A self-signed EC certificate whose subject alternative names are `names`.
    fn make_certificate(&self, names: &[String]) -> anyhow::Result<()> {
        let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        let key = self.dir.join("key.pem");
        let cert = self.dir.join("cert.pem");
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=classifier lab",
                "-addext",
                &format!("subjectAltName={}", san.join(",")),
                "-keyout",
                path_str(&key)?,
                "-out",
                path_str(&cert)?,
            ],
        )
        .context("making the lab's TLS certificate (is openssl installed?)")?;
        Ok(())
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("temporary path is not UTF-8")
}

/// Waits until `sockets` sockets listen on TCP `port` in `host`'s namespace.
fn wait_listening(host: &Host, port: u16, sockets: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        let listening = run(
            "ip",
            &[
                "netns",
                "exec",
                &host.netns,
                "ss",
                "-Hltn",
                &format!("sport = :{port}"),
            ],
        )?;
        if listening.lines().count() >= sockets {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "nothing listens on port {port} in {} after {START_TIMEOUT:?}",
        host.netns
    )
}
