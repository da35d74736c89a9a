//! nfdump's IPFIX collector, `nfcapd`, run in a lab namespace, and `nfdump` reading back
//! what it collected: the independent witness of the classifier's IPFIX.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use classifier_lab::{Host, Lab};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// A running `nfcapd`; killed if dropped before [`Collector::finish`].
pub struct Collector {
    child: Child,
    dir: PathBuf,
    pub addr: SocketAddr,
}

/// One flow record as `nfdump` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfFlow {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub protocol: u8,
    pub packets: u64,
    pub bytes: u64,
}

impl Collector {
    /// Starts `nfcapd` in `host`'s namespace, listening on `addr` (UDP), writing to `dir`.
    pub fn start(host: &Host, addr: SocketAddr, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let child = Lab::command(host, "nfcapd")
            .args(["-b", &addr.ip().to_string(), "-p", &addr.port().to_string()])
            .arg("-w")
            .arg(dir)
            .args(["-t", "3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nfcapd (apt install nfdump; `cargo xtask setup` does)")?;
        // It binds at once; give it a moment before anything is sent.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self {
            child,
            dir: dir.to_owned(),
            addr,
        })
    }

    /// Stops the collector (it writes out its file on SIGTERM) and reads every flow back
    /// with `nfdump`.
    pub fn finish(mut self) -> anyhow::Result<Vec<NfFlow>> {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("nfcapd did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut flows = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let is_capture = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("nfcapd.2"));
            if is_capture {
                flows.extend(read_file(&path)?);
            }
        }
        Ok(flows)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flows of one nfcapd file, as `nfdump -r` prints them.
pub fn read_file(path: &Path) -> anyhow::Result<Vec<NfFlow>> {
    let output = Command::new("nfdump")
        .arg("-r")
        .arg(path)
        // -6: whole IPv6 addresses (not `fe80::a..e5:4f7a`).
        .args(["-q", "-N", "-6", "-o", "fmt:%sa,%sp,%da,%dp,%pr,%pkt,%byt"])
        .output()
        .context("running nfdump")?;
    if !output.status.success() {
        bail!(
            "nfdump -r {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> anyhow::Result<NfFlow> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [sa, sp, da, dp, pr, pkt, byt] = fields[..] else {
        bail!("unexpected nfdump line: {line}");
    };
    let ip = |text: &str| -> anyhow::Result<IpAddr> {
        text.parse()
            .with_context(|| format!("address `{text}` in {line}"))
    };
    // ICMP shows type.code where ports would be.
    let port = |text: &str| text.parse::<u16>().unwrap_or(0);
    Ok(NfFlow {
        src: SocketAddr::new(ip(sa)?, port(sp)),
        dst: SocketAddr::new(ip(da)?, port(dp)),
        protocol: match pr {
            "TCP" => 6,
            "UDP" => 17,
            other => other.parse().unwrap_or(0),
        },
        packets: pkt.parse()?,
        bytes: byt.parse()?,
    })
}
