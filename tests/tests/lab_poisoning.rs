//! Poisoning in the lab (the BPF_PROG_TEST_RUN version is `poisoning.rs`): one LAN host, the
//! attacker, tries to get a colleague's (the victim's) traffic to the site's server taken
//! for BitTorrent and blocked at work, through the gateway running the real daemon with the
//! council's default policy in force at work. The attacker sends a BitTorrent handshake to
//! the server's HTTPS port, announces to a "tracker" of its own on the server host whose
//! reply names the server (its HTTPS port and a high port) as peers, and sends a DHT query
//! to the server's port 53. Then the victim's TLS to the same server and port keeps its own
//! name (SNI) and verdict (allowed) and completes a GET on the lab's real TLS server; its
//! DNS-like datagram to port 53, and even bytes that name nothing sent to the high port the
//! tracker named, are not file sharing.
//!
//! Meanwhile the attacker's own BitTorrent is still caught: real aria2c with its default
//! settings (a message stream encryption (MSE) key exchange, then the handshake in the
//! clear), real aria2c with MSE required (RC4 throughout: nothing in the clear; caught by
//! the peers the poisoning tracker named) and real Transmission (a plaintext handshake),
//! leeching from aria2c seeders on the server host, are blocked and get nothing.
//!
//! The leechers learn their seeders from trackers on the attacker's own loopback (never
//! through the gateway): an announce through the gateway is itself BitTorrent, blocked at
//! work before the tracker has seen it. The poisoning tracker on the server host answers
//! without the request the gateway dropped (after half a second); the gateway hands its
//! reply to the daemon (the attacker's peer cache, and only the attacker's, learns the
//! peers) and drops it.
//!
//! Every process and socket is in the lab's namespaces; every client is bounded in time and
//! killed when dropped; the lab removes its namespaces, pins and files on drop.

use std::{
    collections::BTreeSet,
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use classifier_common::stats::Stat;
use classifier_lab::{
    Host, Lab, LabSpec,
    daemon::DaemonProcess,
    tls::{HTTPS_PORT, TlsServer},
    topology::SERVICE_V4,
};
use classifier_tests::{
    classifier_bin, flows_json, privileged,
    setup::{council_policy_at_work, daemon_with_policy},
};
use classifier_user::{flows::FlowRecord, netns};
use serde_json::Value;

/// What the test runs beyond the lab's own tools.
const TOOLS: [&str; 4] = [
    "aria2c",
    "transmission-cli",
    "transmission-create",
    "openssl",
];

/// Listed nowhere (news is work): allowed, named by its SNI.
const ALLOWED: &str = "www.bbc.co.uk";
/// A file the lab's TLS server has: the victim's GET.
const PATH: &str = "/bytes-16384";
const FILE_LEN: u64 = 16384;

/// The seeder the attacker's leechers find through its own tracker (Transmission's usual
/// port; in no port rule of the policy).
const SEED_PORT: u16 = 51413;
/// The seeder only the poisoning tracker's reply names to the gateway.
const NAMED_SEED_PORT: u16 = 51414;
/// The poisoning tracker on the server host.
const TRACKER_PORT: u16 = 80;
const DNS_PORT: u16 = 53;
/// The attacker's own trackers, on its loopback: one per seeder.
const LOCAL_TRACKER_PORTS: [u16; 2] = [7001, 7002];
/// Where the attacker's leechers listen (in its own namespace; nothing comes in).
const LEECH_PORTS: [u16; 3] = [40001, 40002, 40003];

/// The shared file: two 16 KiB pieces.
const BT_FILE_LEN: usize = 32 * 1024;
const PIECE_LEN: u64 = 16 * 1024;
const BT_FILE_NAME: &str = "lab-file.bin";

/// How soon a blocked connection must have seen the gateway's reset.
const PROMPT: Duration = Duration::from_secs(3);
/// The victim's TLS client's own time limit.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a leecher has to show up blocked in the flow table.
const CAUGHT_WITHIN: Duration = Duration::from_secs(15);
/// How long it then keeps trying: with file sharing allowed, aria2c has the 32 KiB file and
/// has exited within this (Transmission takes longer: its blocked flow is its evidence).
const KEEP_TRYING: Duration = Duration::from_secs(2);
/// How long a tracker waits for the request before it answers anyway.
const TRACKER_WAIT: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(20);

const DHT_QUERY: &[u8] = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
const DNS_QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x03bbc\x02co\x02uk\x00\x00\x01\x00\x01";

/// True when every tool is on the PATH. Otherwise: panics under CI, else says the test is
/// skipped and returns false.
fn tools_present(test: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = TOOLS
        .into_iter()
        .filter(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{test} needs {}: `apt-get install aria2 transmission-cli openssl` (`cargo xtask \
         setup --captures` installs aria2 and transmission-cli)",
        missing.join(", ")
    );
    let under_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!under_ci, "{message}");
    eprintln!("SKIPPED {message}");
    false
}

// ---------------------------------------------------------------------------------------
// Servers this process runs inside lab namespaces.

/// An HTTP BitTorrent tracker that answers every request with the same compact peer list,
/// after the request or after [`TRACKER_WAIT`] without it: the attacker's tracker on the
/// server host answers even though the gateway dropped the announce. Served from a thread
/// of this process, its socket inside the namespace; stops when dropped.
struct StaticTracker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StaticTracker {
    fn start(netns_name: &str, addr: SocketAddr, peers: &[SocketAddrV4]) -> Self {
        let listener = netns::run_in(netns_name, move || {
            let listener = TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .unwrap_or_else(|e| panic!("a tracker on {addr} in {netns_name}: {e:#}"));
        let reply = tracker_reply(peers);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = answer(stream, &reply);
                        }
                        Err(_) => std::thread::sleep(POLL),
                    }
                }
            })
        };
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StaticTracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(mut stream: TcpStream, reply: &[u8]) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(TRACKER_WAIT))?;
    stream.set_write_timeout(Some(TRACKER_WAIT))?;
    let deadline = Instant::now() + TRACKER_WAIT;
    let mut request = Vec::new();
    let mut buf = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    stream.write_all(reply)?;
    stream.flush()
}

/// An HTTP tracker's announce reply listing `peers` (compact IPv4 form, BEP 23).
fn tracker_reply(peers: &[SocketAddrV4]) -> Vec<u8> {
    let compact: Vec<u8> = peers
        .iter()
        .flat_map(|p| p.ip().octets().into_iter().chain(p.port().to_be_bytes()))
        .collect();
    // Keys in sorted order, as bencoding requires.
    let mut body = format!(
        "d8:completei1e10:incompletei0e8:intervali1800e5:peers{}:",
        compact.len()
    )
    .into_bytes();
    body.extend_from_slice(&compact);
    body.push(b'e');
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: \
         close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend(body);
    reply
}

/// A UDP service on the server host that sends every datagram back (the "resolver" on
/// port 53): a client that gets its bytes back went through the gateway both ways.
struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    fn start(netns_name: &str, addr: SocketAddr) -> Self {
        let socket = netns::run_in(netns_name, move || {
            let socket = UdpSocket::bind(addr)?;
            socket.set_read_timeout(Some(POLL * 5))?;
            Ok(socket)
        })
        .unwrap_or_else(|e| panic!("udp {addr} in {netns_name}: {e:#}"));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
            })
        };
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Real BitTorrent clients.

/// Deterministic contents, so the torrent is the same from run to run.
fn bt_file_contents() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..BT_FILE_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The file, one seed directory per seeder, and one .torrent per attacker's tracker
/// (made with transmission-create; the same info hash).
struct Swarm {
    dir: PathBuf,
    seeds: [PathBuf; 2],
    torrents: [PathBuf; 2],
}

impl Swarm {
    fn make(dir: &Path) -> Self {
        let seeds = [0, 1].map(|i| dir.join(format!("seed-{i}")));
        for seed in &seeds {
            std::fs::create_dir_all(seed).unwrap();
            std::fs::write(seed.join(BT_FILE_NAME), bt_file_contents()).unwrap();
        }
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let torrents = LOCAL_TRACKER_PORTS.map(|port| {
            let torrent = dir.join(format!("lab-{port}.torrent"));
            let output = Command::new("transmission-create")
                .arg("-o")
                .arg(&torrent)
                .args(["-s", "16", "-t"])
                .arg(format!("http://127.0.0.1:{port}/announce"))
                .arg(seeds[0].join(BT_FILE_NAME))
                .stdin(Stdio::null())
                .output()
                .expect("transmission-create runs");
            assert!(
                output.status.success() && torrent.exists(),
                "transmission-create failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            torrent
        });
        Self {
            dir: dir.to_owned(),
            seeds,
            torrents,
        }
    }

    /// A fresh, empty download directory.
    fn leech_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

/// Whether `dir` holds the whole file.
fn downloaded(dir: &Path) -> bool {
    std::fs::read(dir.join(BT_FILE_NAME)).is_ok_and(|data| data == bt_file_contents())
}

/// aria2c options of every seeder and leecher: no DHT, local peer discovery or peer
/// exchange; ends with this process even if it is killed outright.
fn aria2_args(swarm: &Swarm, data: &Path, port: u16) -> Vec<String> {
    vec![
        format!("--dir={}", data.display()),
        "--enable-dht=false".into(),
        "--enable-dht6=false".into(),
        "--bt-enable-lpd=false".into(),
        "--enable-peer-exchange=false".into(),
        format!("--listen-port={port}"),
        format!("--dht-listen-port={port}"),
        format!(
            "--dht-file-path={}",
            swarm.dir.join(format!("dht-{port}.dat")).display()
        ),
        "--summary-interval=0".into(),
        "--console-log-level=warn".into(),
        format!("--stop-with-process={}", std::process::id()),
    ]
}

/// Transmission settings: no DHT, LPD, PEX, port mapping or uTP (the handshake over TCP).
fn transmission_settings(port: u16) -> String {
    format!(
        r#"{{
    "dht-enabled": false,
    "lpd-enabled": false,
    "pex-enabled": false,
    "utp-enabled": false,
    "port-forwarding-enabled": false,
    "blocklist-enabled": false,
    "peer-port": {port},
    "message-level": 2
}}
"#
    )
}

/// A client program run in a lab namespace, its output in a log file; killed when dropped
/// (the lab's teardown would kill it too).
struct Client {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Client {
    fn start(name: &'static str, host: &Host, program: &str, args: &[String], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Lab::command(host, program)
            .args(args)
            .env("HOME", dir.join("home"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: starting {program}: {e}"));
        Self { name, child, log }
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Kills the client and returns how it ended and the end of its log.
    fn stop(mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("it had exited by itself ({status})"),
            _ => "stopped".to_owned(),
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        format!(
            "{}: {status}; log: {}",
            self.name,
            lines[lines.len().saturating_sub(5)..].join(" | ")
        )
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something listens on TCP `port` in `host`'s namespace.
fn wait_listening(host: &Host, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let output = Command::new("ip")
            .args(["netns", "exec", &host.netns, "ss", "-Hltn"])
            .arg(format!("sport = :{port}"))
            .output()
            .expect("ss runs");
        if !output.stdout.trim_ascii().is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on tcp port {port} in {}",
            host.netns
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// Connections this process makes from the clients' namespaces.

/// A TCP connection that sent some bytes, and what came back.
struct Poke {
    local: SocketAddr,
    outcome: String,
    elapsed: Duration,
}

/// Connects from `host` to `server`, sends `bytes` and reads what comes back within `wait`.
fn poke(host: &Host, server: SocketAddr, bytes: Vec<u8>, wait: Duration) -> Poke {
    netns::run_in(&host.netns, move || {
        let stream = TcpStream::connect_timeout(&server, PROMPT)?;
        let local = stream.local_addr()?;
        stream.set_read_timeout(Some(wait))?;
        let started = Instant::now();
        (&stream).write_all(&bytes)?;
        let mut buf = [0u8; 4096];
        let outcome = match (&stream).read(&mut buf) {
            Ok(0) => "closed".to_owned(),
            Ok(n) => format!("answered ({n} bytes)"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => "reset".to_owned(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                "no answer".to_owned()
            }
            Err(e) => format!("error: {e}"),
        };
        Ok(Poke {
            local,
            outcome,
            elapsed: started.elapsed(),
        })
    })
    .unwrap_or_else(|e| panic!("connecting to {server} from {}: {e:#}", host.netns))
}

/// A datagram sent from a connected UDP socket, and whether it came back.
struct Datagram {
    local: SocketAddr,
    answered: bool,
    error: Option<ErrorKind>,
}

fn datagram(host: &Host, server: SocketAddr, bytes: &'static [u8]) -> Datagram {
    netns::run_in(&host.netns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.connect(server)?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket.send(bytes)?;
        let mut buf = [0u8; 2048];
        let (answered, error) = match socket.recv(&mut buf) {
            Ok(n) => (&buf[..n] == bytes, None),
            Err(e) => (false, Some(e.kind())),
        };
        Ok(Datagram {
            local: socket.local_addr()?,
            answered,
            error,
        })
    })
    .unwrap_or_else(|e| panic!("udp to {server} from {}: {e:#}", host.netns))
}

fn bittorrent_handshake() -> Vec<u8> {
    let mut handshake = b"\x13BitTorrent protocol".to_vec();
    handshake.extend_from_slice(&[0u8; 8]); // reserved
    handshake.extend_from_slice(&[0x12; 20]); // info hash
    handshake.extend_from_slice(b"-XX0001-attacker0000"); // peer id
    handshake
}

fn announce_request() -> Vec<u8> {
    format!(
        "GET /announce?info_hash=%12%34%56&peer_id=-XX0001-attacker0000&port=6881&left=0 \
         HTTP/1.1\r\nHost: {SERVICE_V4}\r\nUser-Agent: attacker\r\n\r\n"
    )
    .into_bytes()
}

/// Random-looking bytes, as an MSE exchange starts: they name nothing.
fn mse_bytes() -> Vec<u8> {
    (0..96u32)
        .map(|i| (i.wrapping_mul(73).wrapping_add(19)) as u8)
        .collect()
}

/// The victim's TLS: the real rustls client of lab_evasion.rs, no evasion, a GET.
fn victim_tls(victim: &Host) -> Value {
    let server = SocketAddr::new(SERVICE_V4.into(), HTTPS_PORT);
    let mut child = Lab::command(victim, env!("CARGO_BIN_EXE_evasive-client"))
        .arg(server.to_string())
        .args(["--sni", ALLOWED, "--path", PATH])
        .args(["--timeout", &format!("{}s", CLIENT_TIMEOUT.as_secs())])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("evasive-client starts");
    let deadline = Instant::now() + CLIENT_TIMEOUT + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the victim's TLS client did not end by itself");
        }
        std::thread::sleep(POLL);
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "evasive-client failed ({}): {stdout} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON line ({e}): {stdout}"))
}

// ---------------------------------------------------------------------------------------
// The daemon's flow table.

fn flows(daemon: &DaemonProcess) -> Vec<FlowRecord> {
    flows_json(&daemon.control_socket)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a flow record"))
        .collect()
}

fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
}

fn service(port: u16) -> SocketAddr {
    SocketAddr::new(SERVICE_V4.into(), port)
}

/// The flow of the socket `local` to `server` over `protocol`.
fn flow_of<'a>(
    flows: &'a [FlowRecord],
    local: SocketAddr,
    server: SocketAddr,
    protocol: &str,
) -> Option<&'a FlowRecord> {
    flows
        .iter()
        .rev()
        .find(|f| f.protocol == protocol && same(f.client, local) && same(f.server, server))
}

/// `client`'s TCP flows to the server host's `port`.
fn tcp_to<'a>(flows: &'a [FlowRecord], client: &Host, port: u16) -> Vec<&'a FlowRecord> {
    flows
        .iter()
        .filter(|f| {
            f.protocol == "tcp"
                && f.client.ip().to_canonical() == IpAddr::V4(client.ipv4)
                && same(f.server, service(port))
        })
        .collect()
}

fn describe(f: &FlowRecord) -> String {
    format!(
        "{} {} -> {}: name {:?}, {} by {}, {}; up {} B / down {} B, blocked {} packets",
        f.protocol,
        f.client,
        f.server,
        f.name,
        f.category,
        f.method,
        f.verdict,
        f.upload.bytes,
        f.download.bytes,
        f.blocked.packets
    )
}

fn is_caught(f: &FlowRecord, method: &str) -> bool {
    (f.category.as_str(), f.method.as_str(), f.verdict.as_str())
        == ("file-sharing", method, "block")
}

/// Checks `flow` is (category, method, verdict) `want`.
fn check(
    failures: &mut Vec<String>,
    what: &str,
    flow: Option<&FlowRecord>,
    want: (&str, &str, &str),
) {
    match flow {
        None => failures.push(format!("{what}: no flow in the daemon's table")),
        Some(f) if (f.category.as_str(), f.method.as_str(), f.verdict.as_str()) != want => {
            failures.push(format!("{what}: expected {want:?}, got {}", describe(f)));
        }
        Some(_) => {}
    }
}

/// Runs until `caught` holds for the flow table, a client exits or [`CAUGHT_WITHIN`]
/// passes; then lets the clients try for [`KEEP_TRYING`] more.
fn wait_caught(
    daemon: &DaemonProcess,
    clients: &mut [&mut Client],
    caught: impl Fn(&[FlowRecord]) -> bool,
) {
    let deadline = Instant::now() + CAUGHT_WITHIN;
    while Instant::now() < deadline
        && !caught(&flows(daemon))
        && !clients.iter_mut().any(|c| c.exited())
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(KEEP_TRYING);
}

/// What is wrong with a leecher's flows to its seeder: one must be caught by `method`;
/// every flow the datapath classified must be file sharing, blocked, by its handshake or
/// the peer cache (a connection cut before its first bytes names nothing); none may have
/// brought a piece; the file must not be complete.
fn judge_leecher(
    failures: &mut Vec<String>,
    what: &str,
    flows: &[&FlowRecord],
    method: &str,
    complete: bool,
    log: &str,
) {
    let before = failures.len();
    if !flows.iter().any(|f| is_caught(f, method)) {
        failures.push(format!(
            "{what}: no flow to the seeder is file-sharing by {method}, blocked"
        ));
    }
    for f in flows {
        let classified = f.method != "none";
        if classified && !is_caught(f, "bt-handshake") && !is_caught(f, "peer-cache") {
            failures.push(format!("{what}: not caught: {}", describe(f)));
        }
        if f.download.bytes >= PIECE_LEN {
            failures.push(format!("{what}: a piece came through: {}", describe(f)));
        }
    }
    if complete {
        failures.push(format!(
            "{what}: the download completed through the gateway"
        ));
    }
    if failures.len() > before {
        failures.push(format!("{what}: {log}"));
    }
}

#[test]
fn an_attacker_cannot_make_its_colleagues_flows_bittorrent_and_its_own_are_still_caught() {
    const TEST: &str =
        "an_attacker_cannot_make_its_colleagues_flows_bittorrent_and_its_own_are_still_caught";
    if !privileged(TEST) || !tools_present(TEST) {
        return;
    }
    let started = Instant::now();
    let lab = Lab::up(&LabSpec {
        clients: 2,
        server_names: vec![ALLOWED.into()],
        ..LabSpec::default()
    })
    .expect("lab comes up");
    let (attacker, victim) = (&lab.clients[0], &lab.clients[1]);
    let daemon = daemon_with_policy(&lab, &council_policy_at_work(), None);

    // The server host: two aria2 seeders, the poisoning tracker, the "resolver". The
    // attacker's host: a tracker for each seeder, on its loopback.
    let swarm = Swarm::make(&lab.data_dir().join("bittorrent"));
    for (seed, port) in swarm.seeds.iter().zip([SEED_PORT, NAMED_SEED_PORT]) {
        let mut seed_args = aria2_args(&swarm, seed, port);
        seed_args.extend(
            [
                "--check-integrity=true",
                "--bt-seed-unverified=true",
                "--seed-ratio=0.0",
            ]
            .map(String::from),
        );
        seed_args.push(swarm.torrents[0].display().to_string());
        let log = std::fs::File::create(swarm.dir.join(format!("seed-{port}.log"))).unwrap();
        let mut command = Lab::command(&lab.server, "aria2c");
        command
            .args(&seed_args)
            .env("HOME", swarm.dir.join("home"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        lab.spawn(command).expect("an aria2 seeder starts");
    }
    wait_listening(&lab.server, SEED_PORT);
    wait_listening(&lab.server, NAMED_SEED_PORT);
    let seeder = |port| SocketAddrV4::new(SERVICE_V4, port);
    let loopback = |port| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
    let _own_trackers = [
        StaticTracker::start(
            &attacker.netns,
            loopback(LOCAL_TRACKER_PORTS[0]),
            &[seeder(SEED_PORT)],
        ),
        StaticTracker::start(
            &attacker.netns,
            loopback(LOCAL_TRACKER_PORTS[1]),
            &[seeder(NAMED_SEED_PORT)],
        ),
    ];
    let _poisoning_tracker = StaticTracker::start(
        &lab.server.netns,
        service(TRACKER_PORT),
        &[seeder(HTTPS_PORT), seeder(NAMED_SEED_PORT)],
    );
    let _resolver = UdpEcho::start(&lab.server.netns, service(DNS_PORT));
    let up = started.elapsed();

    // 1. The attacker's aria2c, default settings: an MSE key exchange offering plaintext,
    //    the seeder picks it, the handshake follows in the clear.
    let mse_dir = swarm.leech_dir("leech-aria2-mse");
    let mut args = aria2_args(&swarm, &mse_dir, LEECH_PORTS[0]);
    args.push("--seed-time=0".into());
    args.push(swarm.torrents[0].display().to_string());
    let mut mse = Client::start("aria2c-mse", attacker, "aria2c", &args, &swarm.dir);
    wait_caught(&daemon, &mut [&mut mse], |flows| {
        tcp_to(flows, attacker, SEED_PORT)
            .iter()
            .any(|f| f.category == "file-sharing")
    });
    let mse_log = mse.stop();
    let mse_complete = downloaded(&mse_dir);
    std::thread::sleep(Duration::from_millis(300));
    let aria2_flows: BTreeSet<SocketAddr> = tcp_to(&flows(&daemon), attacker, SEED_PORT)
        .iter()
        .map(|f| f.client)
        .collect();
    let leechers_in = started.elapsed() - up;

    // 2. Poisoning. A BitTorrent handshake to the server's HTTPS port (to a listener of its
    //    own: the lab's TLS server answers one connection at a time, and the gateway drops
    //    the handshake, which would leave it waiting), an announce to the poisoning tracker,
    //    a DHT query to port 53; and the attacker's own DNS there.
    let handshake = {
        let addr = service(HTTPS_PORT);
        let _listener = netns::run_in(&lab.server.netns, move || Ok(TcpListener::bind(addr)?))
            .expect("a listener on the server's HTTPS port");
        poke(attacker, addr, bittorrent_handshake(), PROMPT)
    };
    let announce = poke(attacker, service(TRACKER_PORT), announce_request(), PROMPT);
    let deadline = Instant::now() + PROMPT;
    let tracker_replies = loop {
        let replies = daemon
            .status()
            .unwrap()
            .datapath
            .get(Stat::TrackerRepliesToDaemon);
        if replies > 0 || Instant::now() >= deadline {
            break replies;
        }
        std::thread::sleep(POLL);
    };
    // The daemon puts the peers into the cache as it reads the reply: a moment.
    std::thread::sleep(Duration::from_millis(300));
    let dht = datagram(attacker, service(DNS_PORT), DHT_QUERY);
    let attacker_dns = datagram(attacker, service(DNS_PORT), DNS_QUERY);
    let _tls = TlsServer::start(&lab, &[ALLOWED.into()]).expect("the lab's TLS server starts");

    // 3. The attacker's Transmission (plaintext handshake) to the same seeder and aria2c with
    //    MSE required (RC4 throughout) to the seeder the poisoning tracker named; meanwhile
    //    the victim's TLS, DNS and bytes that name nothing to the port the tracker named.
    let plain_dir = swarm.leech_dir("leech-transmission");
    let config = swarm.dir.join("transmission");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("settings.json"),
        transmission_settings(LEECH_PORTS[1]),
    )
    .unwrap();
    let args: Vec<String> = vec![
        "-g".into(),
        config.display().to_string(),
        "-w".into(),
        plain_dir.display().to_string(),
        "-M".into(),
        // Encryption tolerated: a plaintext handshake.
        "-et".into(),
        "-p".into(),
        LEECH_PORTS[1].to_string(),
        swarm.torrents[0].display().to_string(),
    ];
    let mut plain = Client::start(
        "transmission",
        attacker,
        "transmission-cli",
        &args,
        &swarm.dir,
    );
    let encrypted_dir = swarm.leech_dir("leech-aria2-encrypted");
    let mut args = aria2_args(&swarm, &encrypted_dir, LEECH_PORTS[2]);
    args.extend(
        [
            "--seed-time=0",
            "--bt-require-crypto=true",
            "--bt-min-crypto-level=arc4",
        ]
        .map(String::from),
    );
    args.push(swarm.torrents[1].display().to_string());
    let mut encrypted = Client::start("aria2c-encrypted", attacker, "aria2c", &args, &swarm.dir);

    let tls = victim_tls(victim);
    let victim_dns = datagram(victim, service(DNS_PORT), DNS_QUERY);
    let victim_opaque = poke(
        victim,
        service(NAMED_SEED_PORT),
        mse_bytes(),
        Duration::from_millis(300),
    );

    wait_caught(&daemon, &mut [&mut plain, &mut encrypted], |flows| {
        let transmission = tcp_to(flows, attacker, SEED_PORT)
            .into_iter()
            .any(|f| !aria2_flows.contains(&f.client) && f.category == "file-sharing");
        let named = tcp_to(flows, attacker, NAMED_SEED_PORT)
            .into_iter()
            .any(|f| f.category == "file-sharing");
        transmission && named
    });
    let plain_log = plain.stop();
    let plain_complete = downloaded(&plain_dir);
    let encrypted_log = encrypted.stop();
    let encrypted_complete = downloaded(&encrypted_dir);
    let clients_in = started.elapsed() - up;

    // The flow table, as `classifier flows --json` shows it.
    let table = flows(&daemon);
    for f in table.iter().filter(|f| {
        [attacker.ipv4, victim.ipv4]
            .map(IpAddr::V4)
            .contains(&f.client.ip().to_canonical())
    }) {
        eprintln!("{}", describe(f));
    }
    let mut failures = Vec::new();

    // The victim: its own name and verdict.
    let status = tls["detail"]["status_line"].as_str().unwrap_or_default();
    let received = tls["detail"]["response_bytes"].as_u64().unwrap_or(0);
    if tls["outcome"] != "ok" || !status.contains(" 200 ") || received <= FILE_LEN {
        failures.push(format!(
            "the victim's TLS: expected the handshake and a 200 answer with the \
             {FILE_LEN}-byte file, got {tls}"
        ));
    }
    let tls_flow = tls["detail"]["local"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .and_then(|local| flow_of(&table, local, service(HTTPS_PORT), "tcp"));
    check(
        &mut failures,
        "the victim's TLS",
        tls_flow,
        ("uncategorized", "sni", "allow"),
    );
    if let Some(f) = tls_flow.filter(|f| f.name.as_deref() != Some(ALLOWED)) {
        failures.push(format!(
            "the victim's TLS is not named {ALLOWED}: {}",
            describe(f)
        ));
    }
    check(
        &mut failures,
        "the victim's DNS",
        flow_of(&table, victim_dns.local, service(DNS_PORT), "udp"),
        ("uncategorized", "none", "allow"),
    );
    if !victim_dns.answered {
        failures.push(format!(
            "the victim's DNS got no answer ({:?})",
            victim_dns.error
        ));
    }
    check(
        &mut failures,
        "the victim's unnamed bytes to the port the tracker named",
        flow_of(&table, victim_opaque.local, service(NAMED_SEED_PORT), "tcp"),
        ("uncategorized", "none", "allow"),
    );
    if victim_opaque.outcome == "reset" {
        failures.push("the victim's unnamed bytes were reset".into());
    }

    // The attacker's poisoning attempts: its own flows, caught at once.
    check(
        &mut failures,
        "the attacker's handshake to the HTTPS port",
        flow_of(&table, handshake.local, service(HTTPS_PORT), "tcp"),
        ("file-sharing", "bt-handshake", "block"),
    );
    check(
        &mut failures,
        "the attacker's announce",
        flow_of(&table, announce.local, service(TRACKER_PORT), "tcp"),
        ("file-sharing", "bt-tracker", "block"),
    );
    for (what, poked) in [("handshake", &handshake), ("announce", &announce)] {
        if poked.outcome != "reset" || poked.elapsed > PROMPT {
            failures.push(format!(
                "the attacker's {what}: expected the gateway's reset, got {} after {:?}",
                poked.outcome, poked.elapsed
            ));
        }
    }
    if tracker_replies == 0 {
        failures.push("the poisoning tracker's reply never reached the daemon".into());
    }
    check(
        &mut failures,
        "the attacker's DHT query to port 53",
        flow_of(&table, dht.local, service(DNS_PORT), "udp"),
        ("file-sharing", "bt-dht", "block"),
    );
    if dht.answered {
        failures.push("the attacker's DHT query went through".into());
    }
    check(
        &mut failures,
        "the attacker's own DNS",
        flow_of(&table, attacker_dns.local, service(DNS_PORT), "udp"),
        ("uncategorized", "none", "allow"),
    );
    if !attacker_dns.answered {
        failures.push(format!(
            "the attacker's DNS got no answer ({:?})",
            attacker_dns.error
        ));
    }

    // The attacker's own BitTorrent: caught, and nothing came down.
    let to_seed = tcp_to(&table, attacker, SEED_PORT);
    let (first, later): (Vec<&FlowRecord>, Vec<&FlowRecord>) = to_seed
        .into_iter()
        .partition(|f| aria2_flows.contains(&f.client));
    judge_leecher(
        &mut failures,
        "aria2c (default: MSE, then the handshake in the clear)",
        &first,
        "bt-handshake",
        mse_complete,
        &mse_log,
    );
    // (Transmission would not have the file within the window even if allowed: the aria2
    // seeder unchokes it on a timer. Its evidence is its blocked flow.)
    judge_leecher(
        &mut failures,
        "Transmission (plaintext handshake)",
        &later,
        "bt-handshake",
        plain_complete,
        &plain_log,
    );
    judge_leecher(
        &mut failures,
        "aria2c (MSE required) to the peer the poisoning tracker named",
        &tcp_to(&table, attacker, NAMED_SEED_PORT),
        "peer-cache",
        encrypted_complete,
        &encrypted_log,
    );

    let stat = |s| daemon.status().unwrap().datapath.get(s);
    // The attacker's DHT query made the server's port 53 one of its peers; its own DNS
    // there was looked up in its cache, and the service port was declined.
    let declined = stat(Stat::PeerCacheDeclined);
    if declined == 0 {
        failures.push("the peer cache never declined a service port".into());
    }
    eprintln!(
        "lab, daemon, seeders and trackers up in {up:?}; first leecher done in \
         {leechers_in:?}, everything in {clients_in:?}; tracker replies to the daemon: \
         {tracker_replies}, resets sent: {}, peer cache declined: {declined}",
        stat(Stat::ResetsSent),
    );
    assert!(
        failures.is_empty(),
        "{} things came out wrong:\n{}\n(binary {})",
        failures.len(),
        failures.join("\n"),
        classifier_bin().display()
    );
    daemon.stop().unwrap();
}
