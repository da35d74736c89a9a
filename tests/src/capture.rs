//! An independent witness of what crossed the wire: tcpdump in a lab namespace, its pcap
//! read back and tallied per direction, to compare with the daemon's counters.

use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use classifier_lab::{Host, Lab};
use classifier_user::flows::Counters;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use pcap_file::pcap::PcapReader;

const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the pcap file must stay the same size before tcpdump is stopped.
const SETTLED_FOR: Duration = Duration::from_millis(300);
/// The longest to wait for that.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest [`Capture::finish_when`] waits for the packets it is told to expect.
const EXPECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `tcpdump -w` on a lab host's interface.
pub struct Capture {
    child: Child,
    path: PathBuf,
    /// tcpdump's stderr lines, collected by a reader thread until it exits.
    stderr_lines: mpsc::Receiver<String>,
}

impl Capture {
    /// Starts capturing on `host`'s interface with a BPF `filter`; returns once tcpdump
    /// reports that it listens.
    pub fn start(host: &Host, filter: &str) -> anyhow::Result<Self> {
        Self::start_on(host, host.iface, filter)
    }

    /// Starts capturing on `host`'s interface `iface` (its loopback, say) with a BPF
    /// `filter`; returns once tcpdump reports that it listens.
    pub fn start_on(host: &Host, iface: &str, filter: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "classifier-capture-{}-{iface}-{}.pcap",
            host.netns,
            std::process::id()
        ));
        let mut child = Lab::command(host, "tcpdump")
            // --immediate-mode: without it tcpdump takes packets from the kernel in blocks
            // handed over on a timeout, and exits on SIGTERM without reading the last block,
            // silently (those are not counted as dropped).
            .args(["-i", iface, "-n", "--immediate-mode", "-U", "-w"])
            .arg(&path)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (is it installed? `cargo xtask setup`)")?;
        let stderr = child.stderr.take().expect("piped");
        let (lines_tx, stderr_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut capture = Self {
            child,
            path,
            stderr_lines,
        };
        loop {
            match capture.stderr_lines.recv_timeout(START_TIMEOUT) {
                Ok(line) if line.contains("listening on") => return Ok(capture),
                Ok(_) => continue,
                Err(_) => {
                    capture.stop();
                    bail!("tcpdump did not start listening within {START_TIMEOUT:?}");
                }
            }
        }
    }

    /// Stops tcpdump and returns the packets it wrote. Fails if tcpdump reports that the
    /// kernel dropped packets: a witness that missed some is no witness.
    pub fn finish(mut self) -> anyhow::Result<Vec<CapturedPacket>> {
        self.stop_complete()?;
        let file = std::fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        let mut reader = PcapReader::new(file).context("reading tcpdump's pcap")?;
        let mut packets = Vec::new();
        while let Some(packet) = reader.next_packet() {
            let packet = packet?;
            if let Some(parsed) = CapturedPacket::parse(&packet.data, packet.timestamp) {
                packets.push(parsed);
            }
        }
        Ok(packets)
    }

    /// Like [`Capture::finish`], but first waits (up to [`EXPECT_TIMEOUT`]) until the
    /// packets written so far satisfy `expected`. On a loaded machine tcpdump may not be
    /// scheduled for longer than [`SETTLED_FOR`], so a file that stopped growing is not yet
    /// proof that it holds everything; the caller knows what it is looking for. If the
    /// packets never come, this returns what there is and the caller's check fails on it.
    pub fn finish_when(
        self,
        expected: impl Fn(&[CapturedPacket]) -> bool,
    ) -> anyhow::Result<Vec<CapturedPacket>> {
        let deadline = Instant::now() + EXPECT_TIMEOUT;
        while Instant::now() < deadline && !expected(&self.written_so_far()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.finish()
    }

    /// The whole packets in the pcap file as tcpdump has written it so far (a packet it is
    /// still writing, or a header not yet written, ends the list).
    fn written_so_far(&self) -> Vec<CapturedPacket> {
        let Ok(file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let Ok(mut reader) = PcapReader::new(file) else {
            return Vec::new();
        };
        let mut packets = Vec::new();
        while let Some(Ok(packet)) = reader.next_packet() {
            if let Some(parsed) = CapturedPacket::parse(&packet.data, packet.timestamp) {
                packets.push(parsed);
            }
        }
        packets
    }

    /// Stops tcpdump and copies its pcap file to `dest`; fails like [`Capture::finish`].
    pub fn save(mut self, dest: &Path) -> anyhow::Result<()> {
        self.stop_complete()?;
        std::fs::copy(&self.path, dest)
            .with_context(|| format!("copying {} to {}", self.path.display(), dest.display()))?;
        Ok(())
    }

    /// Stops tcpdump; fails unless it reports that the kernel dropped nothing.
    fn stop_complete(&mut self) -> anyhow::Result<()> {
        self.settle();
        self.stop();
        let summary: Vec<String> = self.stderr_lines.try_iter().collect();
        let dropped = summary
            .iter()
            .find(|line| line.contains("dropped by kernel"))
            .and_then(|line| line.split_whitespace().next()?.parse::<u64>().ok());
        if dropped != Some(0) {
            bail!("tcpdump's capture is incomplete or unreadable: {summary:?}");
        }
        Ok(())
    }

    /// Waits until tcpdump has written what the kernel handed it: stopped by SIGTERM, it
    /// leaves packets still queued on its socket unwritten without counting them as
    /// dropped, which on a loaded machine (tcpdump not yet scheduled) loses the last ones.
    fn settle(&self) {
        let size = || std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut last = (size(), Instant::now());
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now = size();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= SETTLED_FOR {
                return;
            }
        }
    }

    fn stop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A captured TCP or UDP packet: when, its endpoints, layer-3 length, and for TCP its flags
/// and payload length.
#[derive(Clone, Copy, Debug)]
pub struct CapturedPacket {
    /// The capture's timestamp (since the epoch, microseconds).
    pub at: Duration,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub l3_len: u64,
    /// TCP only: a reset.
    pub rst: bool,
    /// TCP only: payload bytes.
    pub tcp_payload_len: usize,
}

impl CapturedPacket {
    fn parse(frame: &[u8], at: Duration) -> Option<Self> {
        let sliced = SlicedPacket::from_ethernet(frame).ok()?;
        let (src_ip, dst_ip, l3_len): (IpAddr, IpAddr, u64) = match sliced.net? {
            NetSlice::Ipv4(ip) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
                ip.header().total_len().into(),
            ),
            NetSlice::Ipv6(ip) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
                40 + u64::from(ip.header().payload_length()),
            ),
            _ => return None,
        };
        let (sport, dport, rst, tcp_payload_len) = match sliced.transport? {
            TransportSlice::Tcp(tcp) => (
                tcp.source_port(),
                tcp.destination_port(),
                tcp.rst(),
                tcp.payload().len(),
            ),
            TransportSlice::Udp(udp) => (udp.source_port(), udp.destination_port(), false, 0),
            _ => return None,
        };
        Some(Self {
            at,
            src: SocketAddr::new(src_ip, sport),
            dst: SocketAddr::new(dst_ip, dport),
            l3_len,
            rst,
            tcp_payload_len,
        })
    }
}

/// Packets and bytes of the flow between `client` and `server`: (upload, download).
pub fn tally(
    packets: &[CapturedPacket],
    client: SocketAddr,
    server: SocketAddr,
) -> (Counters, Counters) {
    let mut upload = Counters::default();
    let mut download = Counters::default();
    for packet in packets {
        let direction = if (packet.src, packet.dst) == (client, server) {
            &mut upload
        } else if (packet.src, packet.dst) == (server, client) {
            &mut download
        } else {
            continue;
        };
        direction.packets += 1;
        direction.bytes += packet.l3_len;
    }
    (upload, download)
}
