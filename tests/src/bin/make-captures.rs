//! Records real clients in a network-namespace lab and writes the pcap files under
//! `tests/captures/`, with `manifest.toml` (what a correct classifier reports for each flow,
//! filled from the parsed pcaps) and `README.md`.
//!
//! Each capture gets a fresh lab: real servers (openssl s_server, the lab's HTTP server, a
//! BitTorrent tracker, aria2 and Transmission seeders) in the server namespace, a real client
//! (curl, openssl s_client, Chromium, Firefox, aria2, Transmission) in the client namespace,
//! and tcpdump on the client's `eth0` with a filter for the flows that matter. Nothing runs
//! in the root namespace; every client and wait is bounded in time; the lab, its processes
//! and the temporary directory are removed at the end, on failure and on Ctrl-C.
//!
//! Needs root: `tests/captures/regenerate.sh`.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use classifier_lab::{Host, Lab, LabSpec, http::HttpServer};
use classifier_tests::{
    capture::Capture,
    tracker::Tracker,
    wire::{self, Detection, FlowFacts, Protocol, tls},
};
use classifier_user::netns;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};

#[derive(Parser)]
#[command(about = "Record real clients in a lab and write tests/captures (needs root)")]
struct Args {
    /// Directory for the pcap files, manifest.toml and README.md.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/captures"))]
    out: PathBuf,
    /// Make only these captures (file names without .pcap), for development: needs an --out
    /// other than tests/captures, whose manifest must list every capture.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// Set by SIGINT/SIGTERM: every wait checks it and unwinds, so the labs and the temporary
/// directory are removed by their destructors. A second signal exits at once.
static STOP: AtomicBool = AtomicBool::new(false);

fn check_stop() -> anyhow::Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, waking early (with an error) on a stop request.
fn pause(duration: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        check_stop()?;
        std::thread::sleep((deadline - Instant::now()).min(Duration::from_millis(50)));
    }
    Ok(())
}

const SERVER_V4: &str = "203.0.113.10";
/// Only the lab server's traffic: no neighbour discovery, no gateway chatter.
const SERVER_HOSTS: &str = "(host 203.0.113.10 or host 2001:db8:3::10)";
const TRACKER_PORT: u16 = 6969;
const BT_PORT: u16 = 6881;
const UTP_PORT: u16 = 51413;
/// The shared file: two 16 KiB pieces.
const BT_FILE_LEN: usize = 32 * 1024;
const BT_FILE_NAME: &str = "lab-file.bin";
/// Larger captures are reported: the files are meant to stay small.
const MAX_CAPTURE_BYTES: u64 = 100 * 1024;

fn main() {
    let args = Args::parse();
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::Relaxed) {
            eprintln!(
                "make-captures: second signal, exiting without cleanup (`classifier-lab down` removes the lab)"
            );
            std::process::exit(130);
        }
        eprintln!("make-captures: stopping, cleaning up");
    });
    match run(&args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("make-captures: {e:#}");
            std::process::exit(if STOP.load(Ordering::Relaxed) { 130 } else { 1 });
        }
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("classifier-make-captures-{}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What every capture needs: the temporary directory, certificates, client versions.
struct Ctx {
    tmp: PathBuf,
    out: PathBuf,
    versions: Versions,
    /// CA-signed certificate and key for every lab name (s_server); the CA for Firefox.
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Ctx {
    /// A fresh directory under the temporary one.
    fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.tmp.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// The environment of every client: a home, caches and temporary files inside the
    /// temporary directory, so browsers leave nothing behind in /root or /tmp.
    fn client_env(&self) -> Vec<(&'static str, PathBuf)> {
        let home = self.tmp.join("home");
        vec![
            ("HOME", home.clone()),
            ("XDG_CONFIG_HOME", home.join(".config")),
            ("XDG_CACHE_HOME", home.join(".cache")),
            ("XDG_DATA_HOME", home.join(".local/share")),
            ("TMPDIR", self.tmp.join("client-tmp")),
        ]
    }

    /// `path` as shown in the README: the temporary directory as `$TMP`.
    fn show(&self, text: &str) -> String {
        text.replace(&*self.tmp.to_string_lossy(), "$TMP")
    }
}

/// The clients' versions, from the clients themselves and dpkg.
struct Versions {
    curl: String,
    openssl: String,
    chromium: String,
    firefox: String,
    aria2: String,
    transmission: String,
}

fn output_of(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("running {program} (is it installed? `cargo xtask setup --captures`)")
        })?;
    ensure!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn deb_version(package: &str) -> anyhow::Result<String> {
    output_of("dpkg-query", &["-W", "-f=${Version}", package])
}

/// The first `words` words of the first line of `program --version`-style output.
fn first_words(text: &str, words: usize) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .take(words)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Versions {
    fn probe() -> anyhow::Result<Self> {
        let curl = output_of("curl", &["--version"])?;
        let curl_tls = curl
            .split_whitespace()
            .find(|w| w.starts_with("OpenSSL/"))
            .unwrap_or("unknown TLS library")
            .replace('/', " ");
        Ok(Self {
            curl: format!(
                "{} with {curl_tls} (Debian 12 curl {})",
                first_words(&curl, 2),
                deb_version("curl")?
            ),
            openssl: format!(
                "{} (Debian 12 openssl {})",
                first_words(&output_of("openssl", &["version"])?, 2),
                deb_version("openssl")?
            ),
            chromium: format!(
                "{} (Debian 12 chromium {})",
                first_words(&output_of("chromium", &["--version"])?, 2),
                deb_version("chromium")?
            ),
            firefox: format!(
                "{} (Debian 12 firefox-esr {})",
                first_words(&output_of("firefox-esr", &["--version"])?, 3),
                deb_version("firefox-esr")?
            ),
            aria2: format!(
                "aria2 {} (Debian 12 aria2 {})",
                first_words(&output_of("aria2c", &["--version"])?, 3)
                    .rsplit(' ')
                    .next()
                    .unwrap_or_default(),
                deb_version("aria2")?
            ),
            transmission: format!(
                "{} (Debian 12 transmission-cli {})",
                first_words(&output_of("transmission-cli", &["--version"])?, 2),
                deb_version("transmission-cli")?
            ),
        })
    }
}

/// One capture as made: what the manifest and README say about it.
struct Made {
    file: String,
    client: String,
    commands: Vec<String>,
    purpose: String,
    flows: Vec<FlowFacts>,
    notes: Vec<String>,
    size: u64,
}

type Maker = fn(&Ctx) -> anyhow::Result<Made>;

const CAPTURES: &[(&str, Maker)] = &[
    ("curl-tls13", curl_tls13),
    ("curl-tls12", curl_tls12),
    ("openssl-tls12", openssl_tls12),
    ("openssl-tls13", openssl_tls13),
    ("openssl-uppercase-trailing-dot", openssl_odd_names),
    ("chromium-split-clienthello", chromium_split),
    ("firefox-split-clienthello", firefox_split),
    ("chromium-quic-initial", chromium_quic),
    ("curl-http-host", curl_http),
    ("http-split-request", http_split),
    ("bt-aria2-tcp", bt_aria2_tcp),
    ("bt-transmission-tcp", bt_transmission_tcp),
    ("bt-aria2-encrypted", bt_aria2_encrypted),
    ("bt-udp-tracker", bt_udp_tracker),
    ("bt-dht", bt_dht),
    ("bt-utp", bt_utp),
];

fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "needs root (network namespaces, tcpdump): run tests/captures/regenerate.sh as root"
    );
    let default_out = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/captures"));
    let out = std::path::absolute(&args.out)?;
    ensure!(
        args.only.is_empty() || out != default_out,
        "--only writes a partial manifest: give it an --out other than {}",
        default_out.display()
    );
    for name in &args.only {
        ensure!(
            CAPTURES.iter().any(|(n, _)| n == name),
            "no capture named {name}"
        );
    }
    std::fs::create_dir_all(&out)?;
    let tmp = TempDir::new()?;
    let versions = Versions::probe()?;
    let (cert, key, ca) = make_certificates(&tmp.0)?;
    let ctx = Ctx {
        tmp: tmp.0.clone(),
        out,
        versions,
        cert,
        key,
        ca,
    };
    let mut made = Vec::new();
    for (name, maker) in CAPTURES {
        if !args.only.is_empty() && !args.only.iter().any(|n| n == name) {
            continue;
        }
        check_stop()?;
        eprintln!("make-captures: {name}.pcap");
        let capture = maker(&ctx).with_context(|| format!("making {name}.pcap"))?;
        for flow in &capture.flows {
            eprintln!("    {}", flow_summary(flow));
        }
        if capture.size > MAX_CAPTURE_BYTES {
            eprintln!(
                "    note: {} bytes, over the {MAX_CAPTURE_BYTES} aimed for",
                capture.size
            );
        }
        made.push(capture);
    }
    std::fs::write(ctx.out.join("manifest.toml"), manifest(&made))?;
    std::fs::write(ctx.out.join("README.md"), readme(&ctx, &made))?;
    eprintln!(
        "make-captures: wrote {} captures, manifest.toml and README.md to {}",
        made.len(),
        ctx.out.display()
    );
    Ok(())
}

/// A CA and a certificate it signed for every name the TLS captures use.
fn make_certificates(tmp: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let dir = tmp.join("pki");
    std::fs::create_dir(&dir)?;
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let output = Command::new("openssl")
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                &path("ca.key"),
                "-out",
                &path("ca.pem"),
                "-days",
                "2",
                "-subj",
                "/CN=classifier lab CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        ]
        .concat(),
    )?;
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                &path("server.key"),
                "-out",
                &path("server.csr"),
                "-subj",
                "/CN=classifier lab server",
            ],
        ]
        .concat(),
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:www.youtube.com,DNS:www.netflix.com,DNS:open.spotify.com,\
         DNS:www.twitch.tv,DNS:xn--bcher-kva.example,DNS:www.bbc.co.uk,IP:203.0.113.10\n\
         basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("server.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-out",
        &path("server.pem"),
        "-days",
        "2",
        "-extfile",
        &path("server.ext"),
    ])?;
    Ok((
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("ca.pem"),
    ))
}

/// One capture in progress: its lab, its capture, the commands run.
struct Session<'a> {
    ctx: &'a Ctx,
    file: String,
    commands: Vec<String>,
    capture: Option<Capture>,
    /// The process's own sockets in lab namespaces (UDP sinks), stopped on drop.
    sinks: Vec<Sink>,
    /// Declared last: dropped after the captures and sinks above.
    lab: Lab,
}

impl<'a> Session<'a> {
    /// A fresh lab whose client resolves `names` to the server.
    fn new(ctx: &'a Ctx, name: &str, names: &[&str]) -> anyhow::Result<Self> {
        let lab = Lab::up(&LabSpec {
            clients: 1,
            server_names: names.iter().map(|n| n.to_string()).collect(),
            ..LabSpec::default()
        })?;
        check_stop()?;
        reply_from_service_addresses(&lab.server)?;
        wait_for_paths(&lab.clients[0], &lab.server)?;
        Ok(Self {
            ctx,
            file: format!("{name}.pcap"),
            commands: Vec::new(),
            capture: None,
            sinks: Vec::new(),
            lab,
        })
    }

    fn client(&self) -> Host {
        self.lab.clients[0].clone()
    }

    fn server(&self) -> Host {
        self.lab.server.clone()
    }

    /// Starts tcpdump on the client's eth0.
    fn capture(&mut self, filter: &str) -> anyhow::Result<()> {
        self.capture = Some(Capture::start(&self.client(), filter)?);
        Ok(())
    }

    /// Starts a long-running server program in the server namespace; the lab stops it.
    fn serve(&self, name: &str, program: &str, args: &[String]) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.ctx.tmp.join(format!("{name}.log")))?;
        let mut command = Lab::command(&self.lab.server, program);
        command
            .args(args)
            .envs(self.ctx.client_env())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.lab.spawn(command)?;
        Ok(())
    }

    /// Runs a client in the client namespace (or another lab host) until it exits, `done`
    /// says it has done its part, or `limit` passes; then stops it and whatever it started.
    fn run(
        &mut self,
        host: &Host,
        program: &str,
        args: &[String],
        limit: Duration,
        done: &dyn Fn() -> bool,
    ) -> anyhow::Result<Ran> {
        let shown = std::iter::once(program.to_string())
            .chain(args.iter().map(|a| shell_word(&self.ctx.show(a))))
            .collect::<Vec<_>>()
            .join(" ");
        self.commands.push(shown);
        let n = self.commands.len();
        let stdout_path = self.ctx.tmp.join(format!("client-{n}.out"));
        let stderr_path = self.ctx.tmp.join(format!("client-{n}.err"));
        std::fs::create_dir_all(self.ctx.tmp.join("client-tmp"))?;
        let mut child = Lab::command(host, program)
            .args(args)
            .envs(self.ctx.client_env())
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path)?)
            .stderr(std::fs::File::create(&stderr_path)?)
            // Its own process group: browsers' helper processes are stopped with it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let group = Pid::from_raw(child.id() as i32);
        let started = Instant::now();
        let mut outcome = Outcome::Exited;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if STOP.load(Ordering::Relaxed) || started.elapsed() > limit || done() {
                outcome = if STOP.load(Ordering::Relaxed) {
                    Outcome::Interrupted
                } else if started.elapsed() > limit {
                    Outcome::TimedOut
                } else {
                    Outcome::Done
                };
                let _ = killpg(group, Signal::SIGTERM);
                let grace = Instant::now();
                while grace.elapsed() < Duration::from_secs(3) {
                    if child.try_wait()?.is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = killpg(group, Signal::SIGKILL);
                break child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Helpers the client left (browser zygotes, crash handlers) go with its group.
        let _ = killpg(group, Signal::SIGKILL);
        check_stop()?;
        Ok(Ran {
            status,
            outcome,
            elapsed: started.elapsed(),
            stdout: std::fs::read(&stdout_path).unwrap_or_default(),
            stderr: String::from_utf8_lossy(&std::fs::read(&stderr_path).unwrap_or_default())
                .into_owned(),
        })
    }

    /// Runs a client on the lab's client host that must exit successfully within `limit`.
    fn run_ok(&mut self, program: &str, args: &[String], limit: Duration) -> anyhow::Result<Ran> {
        let client = self.client();
        let ran = self.run(&client, program, args, limit, &|| false)?;
        ensure!(
            ran.outcome == Outcome::Exited && ran.status.is_some_and(|s| s.success()),
            "`{}` failed ({:?}, {:?}): {}",
            self.commands.last().unwrap(),
            ran.outcome,
            ran.status,
            tail(&ran.stderr)
        );
        Ok(ran)
    }

    /// Stops the capture, writes the pcap to the output directory and analyses it.
    fn finish(&mut self) -> anyhow::Result<(Vec<FlowFacts>, u64)> {
        // Let the last ACKs and FINs cross before tcpdump stops.
        pause(Duration::from_millis(500))?;
        let capture = self.capture.take().context("no capture started")?;
        let dest = self.ctx.out.join(&self.file);
        let partial = self.ctx.tmp.join(&self.file);
        capture.save(&partial)?;
        let packets = wire::read_pcap(&partial)?;
        ensure!(!packets.is_empty(), "the capture is empty");
        let flows = wire::analyze(&packets);
        let size = std::fs::metadata(&partial)?.len();
        std::fs::copy(&partial, &dest).with_context(|| format!("writing {}", dest.display()))?;
        Ok((flows, size))
    }

    /// Accepts and drops UDP datagrams on `port` of the server's service addresses, so a
    /// client gets no ICMP port unreachable (a QUIC client then retransmits its Initials).
    fn udp_sink(&mut self, port: u16) -> anyhow::Result<()> {
        let addrs: Vec<SocketAddr> = self
            .lab
            .server
            .addrs()
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect();
        let sockets = netns::run_in(&self.lab.server.netns, move || {
            addrs
                .iter()
                .map(|a| {
                    let s = UdpSocket::bind(a).with_context(|| format!("binding udp {a}"))?;
                    s.set_read_timeout(Some(Duration::from_millis(100)))?;
                    Ok(s)
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    for s in &sockets {
                        let _ = s.recv_from(&mut buf);
                    }
                }
            })
        };
        self.sinks.push(Sink {
            stop,
            thread: Some(thread),
        });
        Ok(())
    }

    fn made(
        self,
        client: String,
        purpose: &str,
        flows: Vec<FlowFacts>,
        size: u64,
        notes: Vec<String>,
    ) -> Made {
        Made {
            file: self.file.clone(),
            client,
            commands: self.commands.clone(),
            purpose: purpose.to_string(),
            flows,
            notes,
            size,
        }
    }
}

struct Sink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The client exited by itself.
    Exited,
    /// `done` said it had done its part; it was stopped.
    Done,
    TimedOut,
    Interrupted,
}

struct Ran {
    status: Option<ExitStatus>,
    outcome: Outcome,
    elapsed: Duration,
    stdout: Vec<u8>,
    stderr: String,
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

fn shell_word(word: &str) -> String {
    if word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+$".contains(c))
        && !word.is_empty()
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Servers bound to the wildcard address (UDP in particular: DHT, uTP) answer the LAN from
/// the address of the route's interface, 198.51.100.2, not the service address the client
/// talked to. Route the LAN from the service addresses, as a host on the Internet would.
fn reply_from_service_addresses(server: &Host) -> anyhow::Result<()> {
    for (family, prefix, src) in [
        ("-4", "192.0.2.0/24", server.ipv4.to_string()),
        ("-6", "2001:db8:1::/64", server.ipv6.to_string()),
    ] {
        let route = output_of(
            "ip",
            &[family, "-n", &server.netns, "route", "show", prefix],
        )?;
        let route = route
            .lines()
            .next()
            .with_context(|| format!("no route to {prefix} on the server"))?;
        let mut words: Vec<&str> = route
            .split_whitespace()
            .take_while(|w| *w != "metric" && *w != "proto")
            .collect();
        words.extend(["src", &src]);
        let mut args = vec![family, "-n", &server.netns, "route", "replace"];
        args.extend(words);
        output_of("ip", &args)?;
    }
    Ok(())
}

/// Waits until `client` reaches `server` over IPv4 and IPv6. For a second or two after the
/// links come up, IPv6 link-local addresses are still tentative (duplicate address
/// detection), neighbour discovery cannot run and the first IPv6 packets are lost: a client
/// preferring IPv6 would fall back to IPv4 and leave a lone SYN in the capture.
fn wait_for_paths(client: &Host, server: &Host) -> anyhow::Result<()> {
    for addr in server.addrs() {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ok = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &client.netns,
                    "ping",
                    "-c",
                    "1",
                    "-W",
                    "1",
                    &addr.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ok {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the client does not reach {addr}"
            );
            pause(Duration::from_millis(100))?;
        }
    }
    Ok(())
}

/// Waits until something listens on `port` (TCP or UDP) in `netns`.
fn wait_listening(netns_name: &str, udp: bool, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let filter = format!("sport = :{port}");
    loop {
        let listing = output_of(
            "ip",
            &[
                "netns",
                "exec",
                netns_name,
                "ss",
                "-Hn",
                if udp { "-lu" } else { "-lt" },
                &filter,
            ],
        )?;
        if !listing.trim().is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "nothing listens on {} port {port} after {timeout:?}",
            if udp { "udp" } else { "tcp" }
        );
        pause(Duration::from_millis(50))?;
    }
}

// ---------------------------------------------------------------------------------------
// Checks on what a capture shows.

/// At least `min` flows satisfy `what`.
fn expect_flows(
    flows: &[FlowFacts],
    min: usize,
    what: &str,
    ok: impl Fn(&FlowFacts) -> bool,
) -> anyhow::Result<()> {
    let n = flows.iter().filter(|f| ok(f)).count();
    ensure!(
        n >= min,
        "expected at least {min} flow(s) {what}, found {n}; flows: {:#?}",
        flows.iter().map(flow_summary).collect::<Vec<_>>()
    );
    Ok(())
}

/// Every flow that carried payload is detected as one of `allowed`.
fn expect_only(flows: &[FlowFacts], allowed: &[Detection]) -> anyhow::Result<()> {
    for f in flows {
        ensure!(
            f.payload_up + f.payload_down == 0 || allowed.contains(&f.detection),
            "unexpected flow: {}",
            flow_summary(f)
        );
    }
    Ok(())
}

fn flow_summary(f: &FlowFacts) -> String {
    format!(
        "{} {} -> {} {} name={:?} ech={} hello_segments={} sni_segment={} packets={}",
        f.protocol.as_str(),
        f.client,
        f.server,
        f.detection.as_str(),
        f.name,
        f.ech,
        f.client_hello_segments,
        f.sni_in_segment,
        f.packets
    )
}

/// A TLS capture from one lab: an openssl s_server on 443 and the given clients.
fn tls_session<'a>(ctx: &'a Ctx, name: &str, names: &[&str]) -> anyhow::Result<Session<'a>> {
    let session = Session::new(ctx, name, names)?;
    session.serve(
        "s_server",
        "openssl",
        &[
            "s_server".into(),
            "-accept".into(),
            "443".into(),
            "-cert".into(),
            ctx.cert.to_string_lossy().into_owned(),
            "-key".into(),
            ctx.key.to_string_lossy().into_owned(),
            "-www".into(),
            "-quiet".into(),
        ],
    )?;
    wait_listening(
        &session.lab.server.netns,
        false,
        443,
        Duration::from_secs(10),
    )?;
    Ok(session)
}

fn tls_filter() -> String {
    format!("tcp port 443 and {SERVER_HOSTS}")
}

fn expect_server_version(flows: &[FlowFacts], version: u16) -> anyhow::Result<()> {
    expect_flows(
        flows,
        1,
        &format!("where the server chose {}", tls::version_name(version)),
        |f| f.tls.as_ref().and_then(|t| t.server_version) == Some(version),
    )
}

// ---------------------------------------------------------------------------------------
// The captures.

fn curl_tls13(ctx: &Ctx) -> anyhow::Result<Made> {
    let mut s = tls_session(ctx, "curl-tls13", &["www.youtube.com"])?;
    s.capture(&tls_filter())?;
    s.run_ok(
        "curl",
        &strings(&[
            "-sS",
            "-k",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "https://www.youtube.com/",
        ]),
        Duration::from_secs(15),
    )?;
    let (flows, size) = s.finish()?;
    expect_only(&flows, &[Detection::Sni])?;
    expect_flows(&flows, 1, "with SNI www.youtube.com in one segment", |f| {
        f.name == "www.youtube.com" && f.client_hello_segments == 1
    })?;
    expect_server_version(&flows, 0x0304)?;
    let client = format!("{}, TLS 1.3", ctx.versions.curl);
    Ok(s.made(client, "curl's TLS 1.3 ClientHello (one segment) for www.youtube.com, resolved through the lab's hosts file, and the full handshake and HTTP/1.1 exchange with openssl s_server.", flows, size, vec![]))
}

fn curl_tls12(ctx: &Ctx) -> anyhow::Result<Made> {
    let mut s = tls_session(ctx, "curl-tls12", &["www.netflix.com"])?;
    s.capture(&tls_filter())?;
    s.run_ok(
        "curl",
        &strings(&[
            "-sS",
            "-k",
            "--tls-max",
            "1.2",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "https://www.netflix.com/",
        ]),
        Duration::from_secs(15),
    )?;
    let (flows, size) = s.finish()?;
    expect_only(&flows, &[Detection::Sni])?;
    expect_flows(&flows, 1, "with SNI www.netflix.com", |f| {
        f.name == "www.netflix.com" && f.client_hello_segments == 1
    })?;
    expect_server_version(&flows, 0x0303)?;
    let client = format!("{}, TLS 1.2 at most", ctx.versions.curl);
    Ok(s.made(client, "A TLS 1.2 handshake (curl --tls-max 1.2: no supported_versions, no key_share): the SNI is in the ClientHello as in TLS 1.3, the server's certificate crosses in clear.", flows, size, vec![]))
}

fn openssl_client(s: &mut Session, name: &str, version_flag: &str) -> anyhow::Result<()> {
    s.run_ok(
        "openssl",
        &strings(&[
            "s_client",
            "-connect",
            "203.0.113.10:443",
            "-servername",
            name,
            version_flag,
        ]),
        Duration::from_secs(10),
    )?;
    Ok(())
}

fn openssl_tls12(ctx: &Ctx) -> anyhow::Result<Made> {
    let mut s = tls_session(ctx, "openssl-tls12", &[])?;
    s.capture(&tls_filter())?;
    openssl_client(&mut s, "open.spotify.com", "-tls1_2")?;
    let (flows, size) = s.finish()?;
    expect_only(&flows, &[Detection::Sni])?;
    expect_flows(&flows, 1, "with SNI open.spotify.com", |f| {
        f.name == "open.spotify.com"
    })?;
    expect_server_version(&flows, 0x0303)?;
    let client = format!("{} s_client, TLS 1.2", ctx.versions.openssl);
    Ok(s.made(client, "openssl s_client to an IP address with an explicit -servername, TLS 1.2 only; standard input is empty, so it closes right after the handshake.", flows, size, vec![]))
}

fn openssl_tls13(ctx: &Ctx) -> anyhow::Result<Made> {
    let mut s = tls_session(ctx, "openssl-tls13", &[])?;
    s.capture(&tls_filter())?;
    openssl_client(&mut s, "open.spotify.com", "-tls1_3")?;
    let (flows, size) = s.finish()?;
    expect_only(&flows, &[Detection::Sni])?;
    expect_flows(&flows, 1, "with SNI open.spotify.com", |f| {
        f.name == "open.spotify.com"
    })?;
    expect_server_version(&flows, 0x0304)?;
    let client = format!("{} s_client, TLS 1.3", ctx.versions.openssl);
    Ok(s.made(
        client,
        "The same as openssl-tls12.pcap with TLS 1.3 only.",
        flows,
        size,
        vec![],
    ))
}

fn openssl_odd_names(ctx: &Ctx) -> anyhow::Result<Made> {
    let mut s = tls_session(ctx, "openssl-uppercase-trailing-dot", &[])?;
    s.capture(&tls_filter())?;
    openssl_client(&mut s, "WWW.Twitch.TV.", "-tls1_3")?;
    openssl_client(&mut s, "xn--bcher-kva.example", "-tls1_3")?;
    let (flows, size) = s.finish()?;
    expect_only(&flows, &[Detection::Sni])?;
    expect_flows(&flows, 1, "with SNI WWW.Twitch.TV. as typed", |f| {
        f.name == "WWW.Twitch.TV."
    })?;
    expect_flows(&flows, 1, "with SNI xn--bcher-kva.example", |f| {
        f.name == "xn--bcher-kva.example"
    })?;
    let client = format!("{} s_client, TLS 1.3", ctx.versions.openssl);
    Ok(s.made(client, "Two connections: SNI `WWW.Twitch.TV.` sent exactly as given (upper case, trailing dot: a classifier must fold case and drop the dot before matching www.twitch.tv), and an IDN in its punycode A-label form `xn--bcher-kva.example` (bücher.example).", flows, size, vec![]))
}

fn chromium_flags(ctx: &Ctx, profile: &Path, quic: bool) -> Vec<String> {
    let mut flags = strings(&[
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]);
    if quic {
        flags.extend(strings(&[
            "--enable-quic",
            "--origin-to-force-quic-on=www.youtube.com:443",
        ]));
    } else {
        flags.push("--disable-quic".into());
    }
    flags.push("--ignore-certificate-errors".into());
    flags.push(format!("--user-data-dir={}", profile.display()));
    let _ = ctx;
    flags
}

/// The checks of a browser capture whose ClientHello must be split: the first client segment
/// starts a TLS record (0x16 0x03) whose length exceeds that segment's payload.
fn expect_split_hello(flows: &[FlowFacts], name: &str) -> anyhow::Result<Vec<String>> {
    expect_only(flows, &[Detection::Sni])?;
    expect_flows(flows, 1, &format!("with SNI {name}"), |f| f.name == name)?;
    let mut notes = Vec::new();
    for f in flows.iter().filter(|f| f.detection == Detection::Sni) {
        let t = f.tls.as_ref().unwrap();
        let first = t.hello_segment_sizes[0];
        ensure!(
            f.client_hello_segments == 2 && t.first_record_len > first,
            "{}: the ClientHello ({} bytes in a {}-byte record) is not split in two segments: {:?}",
            f.client,
            t.hello.len,
            t.first_record_len,
            t.hello_segment_sizes
        );
        notes.push(format!(
            "{}: ClientHello record of {} bytes, first segment {} bytes: the record starts (0x16 0x03) in segment 1 and ends in segment 2; the SNI bytes are in segment {}{}.",
            f.client,
            t.first_record_len + 5,
            first,
            f.sni_in_segment,
            if t.sni_last_segment != f.sni_in_segment { format!(" (and straddle into segment {})", t.sni_last_segment) } else { String::new() }
        ));
    }
    Ok(notes)
}

fn chromium_split(ctx: &Ctx) -> anyhow::Result<Made> {
    let mut s = tls_session(ctx, "chromium-split-clienthello", &["www.youtube.com"])?;
    let profile = ctx.dir("chromium-tcp-profile")?;
    s.capture(&tls_filter())?;
    let mut args = chromium_flags(ctx, &profile, false);
    args.extend(strings(&["--dump-dom", "https://www.youtube.com/"]));
    let ran = s.run_ok("chromium", &args, Duration::from_secs(60))?;
    ensure!(
        String::from_utf8_lossy(&ran.stdout).contains("s_server"),
        "chromium did not load the page: {}",
        tail(&ran.stderr)
    );
    let (flows, size) = s.finish()?;
    let notes = expect_split_hello(&flows, "www.youtube.com")?;
    let client = format!("{}, headless, TCP", ctx.versions.chromium);
    Ok(s.made(client, "Chromium's ClientHello with a post-quantum key share (X25519MLKEM768, 1216 bytes) is larger than one segment: it crosses as two TCP segments (MTU 1500, offloads off). Chromium randomises the order of its extensions per connection, so the SNI lands in the first or the second segment from one connection to the next; it sends a GREASE ECH extension (0xfe0d). Chromium opens a second connection (a preconnect) next to the page's.", flows, size, notes))
}

fn firefox_profile(ctx: &Ctx) -> anyhow::Result<PathBuf> {
    let profile = ctx.dir("firefox-profile")?;
    // Trust the lab CA in the profile's own NSS database, so the page loads and Firefox exits
    // after its screenshot (with an untrusted certificate it sits on the error page).
    let db = format!("sql:{}", profile.display());
    output_of("certutil", &["-N", "-d", &db, "--empty-password"])?;
    output_of(
        "certutil",
        &[
            "-A",
            "-d",
            &db,
            "-n",
            "classifier lab CA",
            "-t",
            "C,,",
            "-i",
            &ctx.ca.to_string_lossy(),
        ],
    )?;
    std::fs::write(profile.join("user.js"), FIREFOX_PREFS)?;
    Ok(profile)
}

/// No background traffic: updates, telemetry, captive portal and connectivity checks, safe
/// browsing lists, remote settings, DNS over HTTPS, prefetching, HTTP/3.
const FIREFOX_PREFS: &str = r#"user_pref("app.update.enabled", false);
user_pref("app.normandy.enabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("toolkit.telemetry.unified", false);
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("browser.safebrowsing.downloads.enabled", false);
user_pref("browser.safebrowsing.update.enabled", false);
user_pref("extensions.update.enabled", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("browser.search.update", false);
user_pref("services.settings.server", "http://127.0.0.1:9/");
user_pref("network.trr.mode", 5);
user_pref("network.prefetch-next", false);
user_pref("network.dns.disablePrefetch", true);
user_pref("network.http.speculative-parallel-limit", 0);
user_pref("network.http.http3.enable", false);
user_pref("browser.aboutwelcome.enabled", false);
"#;

fn firefox_split(ctx: &Ctx) -> anyhow::Result<Made> {
    let mut s = tls_session(ctx, "firefox-split-clienthello", &["www.netflix.com"])?;
    let profile = firefox_profile(ctx)?;
    let shot = ctx.tmp.join("firefox.png");
    s.capture(&tls_filter())?;
    let args = vec![
        "--headless".to_string(),
        "--no-remote".into(),
        "--profile".into(),
        profile.to_string_lossy().into_owned(),
        "--screenshot".into(),
        shot.to_string_lossy().into_owned(),
        "https://www.netflix.com/".into(),
    ];
    s.run_ok("firefox-esr", &args, Duration::from_secs(60))?;
    ensure!(shot.exists(), "firefox wrote no screenshot");
    let (flows, size) = s.finish()?;
    let notes = expect_split_hello(&flows, "www.netflix.com")?;
    let client = format!("{}, headless, TCP", ctx.versions.firefox);
    Ok(s.made(client, "Firefox's ClientHello with its ML-KEM key share crosses as two TCP segments. The profile trusts the lab CA (certutil) and user.js turns background traffic off; Firefox loads the page, takes its screenshot and exits.", flows, size, notes))
}

fn chromium_quic(ctx: &Ctx) -> anyhow::Result<Made> {
    let mut s = Session::new(ctx, "chromium-quic-initial", &["www.youtube.com"])?;
    s.udp_sink(443)?;
    let profile = ctx.dir("chromium-quic-profile")?;
    s.capture(&format!("udp port 443 and {SERVER_HOSTS}"))?;
    let mut args = chromium_flags(ctx, &profile, true);
    args.extend(strings(&["--dump-dom", "https://www.youtube.com/"]));
    let client_host = s.client();
    // No QUIC server answers (Debian 12 packages none): Chromium retransmits its Initials,
    // gives up after its handshake timeout and exits with an empty page.
    let ran = s.run(
        &client_host,
        "chromium",
        &args,
        Duration::from_secs(40),
        &|| false,
    )?;
    let (flows, size) = s.finish()?;
    expect_only(&flows, &[Detection::Quic])?;
    expect_flows(
        &flows,
        1,
        "of QUIC Initials with SNI www.youtube.com",
        |f| f.name == "www.youtube.com",
    )?;
    let mut notes = vec![format!(
        "Chromium ran {:.1} s ({:?}, {}).",
        ran.elapsed.as_secs_f64(),
        ran.outcome,
        ran.status.map_or("killed".into(), |s| s.to_string())
    )];
    for f in &flows {
        let q = f.quic.as_ref().unwrap();
        notes.push(format!(
            "{}: QUIC version 0x{:08x}; {} client datagrams with Initial packets, UDP payload sizes {:?}; the ClientHello ({} bytes) needs the first {} Initial packet(s); its SNI is in Initial {}; CRYPTO frames per Initial: {:?}.",
            f.client,
            q.version,
            q.initial_datagrams.len(),
            q.initial_datagrams,
            q.hello.as_ref().map_or(0, |h| h.len),
            q.hello_initials,
            q.sni_in_initial,
            q.crypto_frames_per_initial
        ));
    }
    let client = format!("{}, headless, QUIC forced", ctx.versions.chromium);
    Ok(s.made(client, "Chromium's QUIC Initial packets for www.youtube.com (--origin-to-force-quic-on, no TCP fallback). Nothing answers (a UDP socket on the server swallows the datagrams, so no ICMP unreachable ends the attempt): the capture is the client's first flight and its retransmissions. make-captures decrypts the Initials with the keys derived from the Destination Connection ID (RFC 9001 §5.2) to find the ClientHello and its SNI; a classifier can do the same.", flows, size, notes))
}

fn http_session<'a>(ctx: &'a Ctx, name: &str) -> anyhow::Result<(Session<'a>, HttpServer)> {
    let s = Session::new(ctx, name, &["www.bbc.co.uk"])?;
    let server = s.server();
    let http = HttpServer::start(
        &server.netns,
        &[
            SocketAddr::new(IpAddr::V4(server.ipv4), 80),
            SocketAddr::new(IpAddr::V6(server.ipv6), 80),
        ],
    )?;
    Ok((s, http))
}

fn curl_http(ctx: &Ctx) -> anyhow::Result<Made> {
    let (mut s, _http) = http_session(ctx, "curl-http-host")?;
    s.capture(&format!("tcp port 80 and {SERVER_HOSTS}"))?;
    s.run_ok(
        "curl",
        &strings(&[
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "http://www.bbc.co.uk/bytes/2048",
        ]),
        Duration::from_secs(15),
    )?;
    let (flows, size) = s.finish()?;
    expect_only(&flows, &[Detection::Host])?;
    expect_flows(&flows, 1, "with Host www.bbc.co.uk", |f| {
        f.name == "www.bbc.co.uk"
    })?;
    Ok(s.made(ctx.versions.curl.clone(), "Plain HTTP/1.1: the Host header names www.bbc.co.uk. The lab's HTTP server answers `GET /bytes/N` with N bytes, hence the path.", flows, size, vec![]))
}

/// The request of http-split-request.pcap, in the two writes that make its two segments.
const SPLIT_REQUEST: [&str; 2] = [
    "GET /bytes/512 HTT",
    "P/1.1\r\nHost: www.bbc.co.uk\r\nUser-Agent: make-captures-split/1\r\nAccept: */*\r\nConnection: close\r\n\r\n",
];

fn http_split(ctx: &Ctx) -> anyhow::Result<Made> {
    let (mut s, _http) = http_session(ctx, "http-split-request")?;
    s.capture(&format!("tcp port 80 and {SERVER_HOSTS}"))?;
    s.commands.push(format!(
        "(make-captures itself, in the client namespace) connect 203.0.113.10:80 with TCP_NODELAY; write {:?}; sleep 50 ms; write {:?}; read the response",
        SPLIT_REQUEST[0], SPLIT_REQUEST[1]
    ));
    let received = netns::run_in(&s.client().netns, || {
        let mut stream =
            TcpStream::connect_timeout(&"203.0.113.10:80".parse()?, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(SPLIT_REQUEST[0].as_bytes())?;
        std::thread::sleep(Duration::from_millis(50));
        stream.write_all(SPLIT_REQUEST[1].as_bytes())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        Ok(response.len())
    })?;
    ensure!(received > 512, "short response: {received} bytes");
    let (flows, size) = s.finish()?;
    expect_only(&flows, &[Detection::Host])?;
    expect_flows(
        &flows,
        1,
        "with Host www.bbc.co.uk in the second of two segments",
        |f| {
            f.name == "www.bbc.co.uk"
                && f.http
                    .as_ref()
                    .is_some_and(|h| h.head_segments == 2 && h.host_in_segment == 2)
        },
    )?;
    let client =
        "make-captures' own HTTP/1.1 client (Rust std TcpStream), two writes with TCP_NODELAY"
            .to_string();
    Ok(s.made(client, "An HTTP request whose request line is cut in the middle (`GET /bytes/512 HTT` | `P/1.1\\r\\nHost: ...`): a classifier must reassemble two segments to find the Host header, which is entirely in the second.", flows, size, vec![]))
}

// ---------------------------------------------------------------------------------------
// BitTorrent.

/// Deterministic contents, so the torrents' info hashes stay the same from run to run.
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

/// A seed directory holding the file, an empty leech directory and a .torrent for
/// `announce` (none: trackerless) made with transmission-create.
struct Swarm {
    seed: PathBuf,
    leech: PathBuf,
    torrent: PathBuf,
    dir: PathBuf,
}

fn swarm(ctx: &Ctx, name: &str, announce: Option<&str>) -> anyhow::Result<Swarm> {
    let dir = ctx.dir(name)?;
    let seed = dir.join("seed");
    let leech = dir.join("leech");
    std::fs::create_dir_all(&seed)?;
    std::fs::create_dir_all(&leech)?;
    std::fs::write(seed.join(BT_FILE_NAME), bt_file_contents())?;
    let torrent = dir.join("lab.torrent");
    let mut args = vec![
        "-o".to_string(),
        torrent.to_string_lossy().into_owned(),
        "-s".into(),
        "16".into(),
    ];
    if let Some(url) = announce {
        args.extend(["-t".into(), url.into()]);
    }
    args.push(seed.join(BT_FILE_NAME).to_string_lossy().into_owned());
    let output = Command::new("transmission-create")
        .args(&args)
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        output.status.success() && torrent.exists(),
        "transmission-create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Swarm {
        seed,
        leech,
        torrent,
        dir,
    })
}

impl Swarm {
    fn leeched(&self) -> bool {
        std::fs::read(self.leech.join(BT_FILE_NAME)).is_ok_and(|d| d == bt_file_contents())
    }
}

/// aria2c options shared by seeders and leechers: no DHT, local peer discovery or peer
/// exchange unless a capture asks for DHT; files under the swarm's directory.
fn aria2_args(swarm: &Swarm, role: &str, dht: bool) -> Vec<String> {
    let mut args = vec![
        format!(
            "--dir={}",
            if role == "seed" {
                swarm.seed.display()
            } else {
                swarm.leech.display()
            }
        ),
        format!("--enable-dht={dht}"),
        "--enable-dht6=false".into(),
        "--bt-enable-lpd=false".into(),
        "--enable-peer-exchange=false".into(),
        format!("--listen-port={BT_PORT}"),
        format!("--dht-listen-port={BT_PORT}"),
        format!(
            "--dht-file-path={}",
            swarm.dir.join(format!("{role}-dht.dat")).display()
        ),
        "--summary-interval=0".into(),
        "--console-log-level=warn".into(),
    ];
    if role == "seed" {
        args.extend(strings(&[
            "--check-integrity=true",
            "--bt-seed-unverified=true",
            "--seed-ratio=0.0",
        ]));
        // Ends with this program even if it is killed outright.
        args.push(format!("--stop-with-process={}", std::process::id()));
    } else {
        args.push("--seed-time=0".into());
    }
    args
}

fn tracker_session<'a>(ctx: &'a Ctx, name: &str) -> anyhow::Result<(Session<'a>, Tracker)> {
    let s = Session::new(ctx, name, &[])?;
    let tracker = Tracker::start(
        &s.server().netns,
        SocketAddrV4::new(SERVER_V4.parse()?, TRACKER_PORT),
    )?;
    Ok((s, tracker))
}

/// aria2 seeds in the server namespace and leeches in the client's; the tracker introduces
/// them. Returns the session and the leecher's extra flags, for the caller's checks.
fn aria2_download(
    ctx: &Ctx,
    name: &str,
    announce: &str,
    leech_flags: &[&str],
) -> anyhow::Result<(Made, Vec<FlowFacts>)> {
    let (mut s, tracker) = tracker_session(ctx, name)?;
    let swarm = swarm(ctx, name, Some(announce))?;
    // aria2 speaks to UDP trackers through its DHT socket: no DHT, no UDP tracker.
    let dht = announce.starts_with("udp:");
    let mut seed_args = aria2_args(&swarm, "seed", dht);
    seed_args.push(swarm.torrent.to_string_lossy().into_owned());
    s.serve("aria2-seed", "aria2c", &seed_args)?;
    ensure!(
        tracker.wait_for_seeder(Duration::from_secs(15)),
        "the aria2 seeder did not announce itself"
    );
    s.capture(SERVER_HOSTS)?;
    let mut args = aria2_args(&swarm, "leech", dht);
    args.extend(strings(leech_flags));
    args.push(swarm.torrent.to_string_lossy().into_owned());
    s.run_ok("aria2c", &args, Duration::from_secs(40))?;
    ensure!(swarm.leeched(), "aria2 did not download the file");
    let (flows, size) = s.finish()?;
    let made = s.made(
        format!(
            "{} (leecher; seeder: the same aria2 in the server namespace)",
            ctx.versions.aria2
        ),
        "",
        flows.clone(),
        size,
        vec![],
    );
    drop(tracker);
    Ok((made, flows))
}

fn bt_aria2_tcp(ctx: &Ctx) -> anyhow::Result<Made> {
    let announce = format!("http://{SERVER_V4}:{TRACKER_PORT}/announce");
    let (mut made, flows) = aria2_download(ctx, "bt-aria2-tcp", &announce, &[])?;
    expect_only(&flows, &[Detection::BtTracker, Detection::BtHandshake])?;
    expect_flows(&flows, 1, "announcing to the HTTP tracker", |f| {
        f.detection == Detection::BtTracker && f.protocol == Protocol::Tcp
    })?;
    expect_flows(&flows, 1, "with a plaintext peer handshake", |f| {
        f.detection == Detection::BtHandshake
    })?;
    expect_flows(&flows, 1, "with the handshake after a key exchange", |f| {
        f.bt_handshake.is_some_and(|h| h.offset > 0)
    })?;
    made.purpose = "aria2 downloads a 32 KiB torrent from an aria2 seeder: HTTP tracker announces (`GET /announce?info_hash=...`, started and stopped) and the TCP peer connection. aria2 always opens a connection with a message stream encryption (MSE/PE) key exchange (random-looking bytes with random padding) offering plaintext and RC4; the seeder picks plaintext, so the `\\x13BitTorrent protocol` handshake follows in the clear, at the start of a later segment rather than at the start of the stream (bt-transmission-tcp.pcap has the classic case).".into();
    Ok(made)
}

fn bt_aria2_encrypted(ctx: &Ctx) -> anyhow::Result<Made> {
    let announce = format!("http://{SERVER_V4}:{TRACKER_PORT}/announce");
    let (mut made, flows) = aria2_download(
        ctx,
        "bt-aria2-encrypted",
        &announce,
        &["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"],
    )?;
    expect_only(&flows, &[Detection::BtTracker, Detection::PeerCache])?;
    expect_flows(&flows, 1, "announcing to the HTTP tracker", |f| {
        f.detection == Detection::BtTracker
    })?;
    expect_flows(
        &flows,
        1,
        "to a peer the tracker named, without plaintext handshake",
        |f| f.detection == Detection::PeerCache && f.protocol == Protocol::Tcp,
    )?;
    made.purpose = "The same download with message stream encryption required (`--bt-require-crypto=true --bt-min-crypto-level=arc4`): the peer connection starts with a Diffie-Hellman exchange and carries no plaintext handshake. The tracker's response in the same capture names the seeder (203.0.113.10:6881), which is how a classifier can still tell this flow (peer-cache).".into();
    Ok(made)
}

fn bt_udp_tracker(ctx: &Ctx) -> anyhow::Result<Made> {
    let announce = format!("udp://{SERVER_V4}:{TRACKER_PORT}/announce");
    let (mut made, flows) = aria2_download(ctx, "bt-udp-tracker", &announce, &[])?;
    expect_only(
        &flows,
        &[
            Detection::BtTracker,
            Detection::BtHandshake,
            Detection::BtDht,
        ],
    )?;
    expect_flows(&flows, 1, "with the UDP tracker (BEP 15)", |f| {
        f.detection == Detection::BtTracker && f.protocol == Protocol::Udp
    })?;
    expect_flows(&flows, 1, "with a plaintext peer handshake", |f| {
        f.detection == Detection::BtHandshake
    })?;
    made.purpose = "aria2 announces to a UDP tracker (BEP 15): a connect request with the protocol id 0x41727101980, then an announce whose response lists the seeder; then the peer connection. aria2 sends UDP tracker requests from its DHT socket, so DHT is on (no entry point): once connected, the peers exchange DHT ports and ping each other's DHT node.".into();
    Ok(made)
}

fn bt_dht(ctx: &Ctx) -> anyhow::Result<Made> {
    let mut s = Session::new(ctx, "bt-dht", &[])?;
    let swarm = swarm(ctx, "bt-dht", None)?;
    let mut seed_args = aria2_args(&swarm, "seed", true);
    seed_args.push(swarm.torrent.to_string_lossy().into_owned());
    s.serve("aria2-dht-seed", "aria2c", &seed_args)?;
    wait_listening(&s.server().netns, true, BT_PORT, Duration::from_secs(15))?;
    s.capture(SERVER_HOSTS)?;
    let mut args = aria2_args(&swarm, "leech", true);
    args.push(format!("--dht-entry-point={SERVER_V4}:{BT_PORT}"));
    args.push(swarm.torrent.to_string_lossy().into_owned());
    let client = s.client();
    // A trackerless torrent: the two aria2 nodes only have each other, so neither learns the
    // other as a peer of the torrent (each answers get_peers with what others announced to
    // it). The capture is the DHT conversation, for a bounded 12 s.
    let ran = s.run(&client, "aria2c", &args, Duration::from_secs(12), &|| false)?;
    ensure!(
        ran.outcome == Outcome::TimedOut,
        "aria2 ended early: {}",
        tail(&ran.stderr)
    );
    let (flows, size) = s.finish()?;
    expect_only(&flows, &[Detection::BtDht])?;
    expect_flows(&flows, 1, "of DHT messages", |f| {
        f.detection == Detection::BtDht
    })?;
    let client = format!(
        "{} (DHT node of a leecher; the other node: aria2 seeding in the server namespace)",
        ctx.versions.aria2
    );
    Ok(s.made(client, "BitTorrent DHT (BEP 5) between two aria2 nodes on UDP 6881: ping, find_node, get_peers and announce_peer queries (`d1:ad2:id20:...`) and their responses (`d1:rd2:id20:...`), both ways. The leecher is started with --dht-entry-point=203.0.113.10:6881 and a trackerless torrent; it runs 12 s and is stopped.", flows, size, vec![]))
}

/// Transmission settings: no DHT, LPD, PEX or port mapping; uTP as asked.
fn transmission_settings(utp: bool) -> String {
    format!(
        r#"{{
    "dht-enabled": false,
    "lpd-enabled": false,
    "pex-enabled": false,
    "utp-enabled": {utp},
    "port-forwarding-enabled": false,
    "blocklist-enabled": false,
    "peer-port": {UTP_PORT},
    "message-level": 2
}}
"#
    )
}

/// Transmission seeds in the server namespace and leeches in the client's, over uTP or TCP,
/// encryption only tolerated (-et: plaintext handshakes); the HTTP tracker introduces them.
fn transmission_download<'a>(
    ctx: &'a Ctx,
    name: &str,
    utp: bool,
) -> anyhow::Result<(Session<'a>, Vec<FlowFacts>, u64, Vec<String>)> {
    let (mut s, tracker) = tracker_session(ctx, name)?;
    let swarm = swarm(
        ctx,
        name,
        Some(&format!("http://{SERVER_V4}:{TRACKER_PORT}/announce")),
    )?;
    let args = |role: &str, data: &Path| -> anyhow::Result<Vec<String>> {
        let config = swarm.dir.join(format!("transmission-{role}"));
        std::fs::create_dir_all(&config)?;
        std::fs::write(config.join("settings.json"), transmission_settings(utp))?;
        Ok(vec![
            "-g".into(),
            config.to_string_lossy().into_owned(),
            "-w".into(),
            data.to_string_lossy().into_owned(),
            "-M".into(),
            "-et".into(),
            "-p".into(),
            UTP_PORT.to_string(),
            swarm.torrent.to_string_lossy().into_owned(),
        ])
    };
    s.serve(
        "transmission-seed",
        "transmission-cli",
        &args("seed", &swarm.seed)?,
    )?;
    ensure!(
        tracker.wait_for_seeder(Duration::from_secs(20)),
        "the Transmission seeder did not announce itself"
    );
    s.capture(SERVER_HOSTS)?;
    let client = s.client();
    let leech_args = args("leech", &swarm.leech)?;
    // transmission-cli seeds on after downloading: stop it once the file is complete.
    let ran = s.run(
        &client,
        "transmission-cli",
        &leech_args,
        Duration::from_secs(60),
        &|| swarm.leeched(),
    )?;
    ensure!(
        ran.outcome == Outcome::Done,
        "Transmission did not download the file ({:?}): {}",
        ran.outcome,
        tail(&ran.stderr)
    );
    let (flows, size) = s.finish()?;
    drop(tracker);
    let notes = vec![format!(
        "Transmission had the file after {:.1} s (its seeder unchokes on a timer) and was then stopped (SIGTERM: it announces `event=stopped`).",
        ran.elapsed.as_secs_f64()
    )];
    Ok((s, flows, size, notes))
}

fn bt_utp(ctx: &Ctx) -> anyhow::Result<Made> {
    let (s, flows, size, notes) = transmission_download(ctx, "bt-utp", true)?;
    expect_only(&flows, &[Detection::BtTracker, Detection::BtUtp])?;
    expect_flows(&flows, 1, "over uTP", |f| {
        f.detection == Detection::BtUtp && f.payload_down >= BT_FILE_LEN
    })?;
    let client = format!(
        "{} (leecher; seeder: the same in the server namespace)",
        ctx.versions.transmission
    );
    Ok(s.made(client, "Transmission downloads the torrent over uTP (BEP 29, UDP 51413 at both ends): an ST_SYN (first byte 0x41), then the BitTorrent handshake and the pieces inside uTP data packets. Encryption is only tolerated (-et), so the handshake inside uTP is plaintext. The HTTP tracker announces (and a scrape) go over TCP.", flows, size, notes))
}

fn bt_transmission_tcp(ctx: &Ctx) -> anyhow::Result<Made> {
    let (s, flows, size, notes) = transmission_download(ctx, "bt-transmission-tcp", false)?;
    expect_only(&flows, &[Detection::BtTracker, Detection::BtHandshake])?;
    expect_flows(&flows, 1, "opening with a plaintext peer handshake", |f| {
        f.detection == Detection::BtHandshake
            && f.bt_handshake
                .is_some_and(|h| h.offset == 0 && h.from_client)
    })?;
    let client = format!(
        "{} (leecher; seeder: the same in the server namespace), uTP off",
        ctx.versions.transmission
    );
    Ok(s.made(client, "The classic case: a TCP peer connection whose first payload is the client's `\\x13BitTorrent protocol` handshake (Transmission with uTP off, encryption only tolerated), plus HTTP tracker announces.", flows, size, notes))
}

// ---------------------------------------------------------------------------------------
// manifest.toml and README.md.

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn manifest(made: &[Made]) -> String {
    let mut out = String::from(
        "# What a correct classifier reports for each flow of each capture in this directory.\n\
         # Generated by make-captures (tests/captures/regenerate.sh) from the parsed pcaps: do not\n\
         # edit by hand. `client`/`server` are as in the pcap (client = the LAN side); `name` is the\n\
         # SNI or Host exactly as sent (case and trailing dot kept), \"\" if none; QUIC names come\n\
         # from the decrypted Initial. `client_hello_segments`/`sni_in_segment` count TCP segments\n\
         # (TLS over TCP only, else 0).\n",
    );
    for m in made {
        let _ = write!(
            out,
            "\n[[capture]]\nfile = {}\nclient = {}\n",
            toml_string(&m.file),
            toml_string(&m.client)
        );
        for f in &m.flows {
            let _ = write!(
                out,
                "\n[[capture.flow]]\nclient = {}\nserver = {}\nprotocol = {}\nname = {}\ndetection = {}\nech = {}\nclient_hello_segments = {}\nsni_in_segment = {}\n",
                toml_string(&f.client.to_string()),
                toml_string(&f.server.to_string()),
                toml_string(f.protocol.as_str()),
                toml_string(&f.name),
                toml_string(f.detection.as_str()),
                f.ech,
                f.client_hello_segments,
                f.sni_in_segment
            );
        }
    }
    out
}

fn flow_details(f: &FlowFacts) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(t) = &f.tls {
        let h = &t.hello;
        lines.push(format!(
            "ClientHello {} bytes in a {}-byte record, over {} segment(s) of {:?} payload bytes; SNI `{}` in segment {}; ECH extension: {}",
            h.len,
            t.first_record_len + 5,
            f.client_hello_segments,
            t.hello_segment_sizes,
            h.sni.as_deref().unwrap_or(""),
            f.sni_in_segment,
            if h.ech { "yes" } else { "no" }
        ));
        lines.push(format!(
            "offers {}; key shares {}; ALPN {}; server chose {}",
            if h.supported_versions.is_empty() {
                "TLS 1.2 (no supported_versions)".to_string()
            } else {
                h.supported_versions
                    .iter()
                    .map(|v| tls::version_name(*v))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            if h.key_shares.is_empty() {
                "none".to_string()
            } else {
                h.key_shares
                    .iter()
                    .map(|(g, n)| format!("{} ({n} B)", tls::group_name(*g)))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            if h.alpn.is_empty() {
                "none".to_string()
            } else {
                h.alpn.join(", ")
            },
            t.server_version
                .map_or("(no ServerHello)".to_string(), tls::version_name)
        ));
    }
    if let Some(q) = &f.quic {
        lines.push(format!(
            "QUIC version 0x{:08x}; {} client datagram(s) with Initials, UDP payload sizes {:?}; decrypted: {}; ClientHello {} bytes over the first {} Initial packet(s), SNI `{}` in Initial {}; ECH extension: {}",
            q.version,
            q.initial_datagrams.len(),
            q.initial_datagrams,
            q.decrypted,
            q.hello.as_ref().map_or(0, |h| h.len),
            q.hello_initials,
            f.name,
            q.sni_in_initial,
            if f.ech { "yes" } else { "no" }
        ));
        if let Some(h) = &q.hello {
            lines.push(format!(
                "key shares {}; ALPN {}",
                h.key_shares
                    .iter()
                    .map(|(g, n)| format!("{} ({n} B)", tls::group_name(*g)))
                    .collect::<Vec<_>>()
                    .join(", "),
                h.alpn.join(", ")
            ));
        }
    }
    if let Some(h) = &f.http {
        lines.push(format!(
            "`{}`, Host `{}`: the request head spans {} segment(s), the Host line is in segment {}",
            h.request_line,
            h.host.as_deref().unwrap_or(""),
            h.head_segments,
            h.host_in_segment
        ));
    }
    if let Some(h) = &f.bt_handshake {
        lines.push(format!(
            "plaintext `\\x13BitTorrent protocol` handshake from the {} at stream offset {} (its payload segment {}){}",
            if h.from_client { "client" } else { "server" },
            h.offset,
            h.segment,
            if h.offset > 0 { ", after a message stream encryption key exchange that settled on plaintext" } else { "" }
        ));
    }
    if !f.tracker_peers.is_empty() {
        lines.push(format!(
            "tracker response names peer(s) {}",
            f.tracker_peers
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    lines
}

const README_HEAD: &str = "# Captures of real clients

Small pcap files of real clients, made in the project's network-namespace lab, for testing
the classifier's parsers and its flow verdicts against what real software puts on the wire.
`manifest.toml` lists, per capture, every flow and what a correct classifier reports for it
(name as sent, detection method, ECH, how many TCP segments the ClientHello spans and which
one holds the SNI). This file and the manifest are generated together with the captures.

## How they are made

`./regenerate.sh` (as root; it runs `cargo xtask setup --captures` for the packages, then
`tests/src/bin/make-captures.rs`) brings up a fresh lab per capture: the client
`192.0.2.10` / `2001:db8:1::10` behind the gateway, the server host answering on
`203.0.113.10` / `2001:db8:3::10`, real site names resolved to it through the client's
`/etc/netns/<ns>/hosts` (so clients that prefer IPv6 use it). Servers run in the server
namespace (openssl s_server with a certificate from a throw-away lab CA, the lab's HTTP
server, a BitTorrent tracker built into make-captures answering HTTP and UDP (BEP 15)
announces, aria2 and Transmission seeders); the client runs in the client namespace; tcpdump
(`--immediate-mode -U`) captures on the client's `eth0`, filtered to the server's addresses.
Offloads are off on every veth and the MTU is 1500, so packets are captured at wire size.
make-captures then reads each pcap back, checks that it shows what it is for (for example
that a browser's ClientHello really crosses as two segments) and writes the manifest.

Nothing leaves the lab: documentation addresses only, no default route, no DNS server;
browsers run with their background networking off. Regenerating changes ports, random values
and timestamps, not what the manifest says a classifier must find (bar the segment holding a
Chromium SNI, which follows Chromium's random extension order).

Commands below show the temporary directory as `$TMP`; each runs inside the client's
namespace (`ip netns exec <client> ...`) with `HOME` and `TMPDIR` inside `$TMP`.

## Client versions

";

fn readme(ctx: &Ctx, made: &[Made]) -> String {
    let mut out = README_HEAD.to_string();
    let v = &ctx.versions;
    for line in [
        &v.curl,
        &v.openssl,
        &v.chromium,
        &v.firefox,
        &v.aria2,
        &v.transmission,
    ] {
        let _ = writeln!(out, "- {line}");
    }
    out.push_str(
        "\n## The captures\n\n| file | client | flows | bytes |\n| --- | --- | --- | --- |\n",
    );
    for m in made {
        let _ = writeln!(
            out,
            "| [`{}`](#{}) | {} | {} | {} |",
            m.file,
            m.file.replace('.', ""),
            m.client,
            m.flows.len(),
            m.size
        );
    }
    for m in made {
        let _ = write!(
            out,
            "\n### {}\n\n{}\n\nClient: {}.\n\n```sh\n",
            m.file, m.purpose, m.client
        );
        for c in &m.commands {
            let _ = writeln!(out, "{c}");
        }
        out.push_str("```\n\n");
        for f in &m.flows {
            let _ = writeln!(
                out,
                "- {} {} → {}: **{}**{}, {} packets, {} payload bytes up, {} down",
                f.protocol.as_str(),
                f.client,
                f.server,
                f.detection.as_str(),
                if f.name.is_empty() {
                    String::new()
                } else {
                    format!(" `{}`", f.name)
                },
                f.packets,
                f.payload_up,
                f.payload_down
            );
            for d in flow_details(f) {
                let _ = writeln!(out, "  - {d}");
            }
        }
        for n in &m.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}
