//! Floods do not blind the gateway (issue 19, item 5), in the lab: while one LAN host floods
//! the gateway running the real daemon with the council's policy in force at work, another
//! host's connections are still named and get their verdicts, and the daemon's control
//! socket, records and signals stay responsive.
//!
//! The attacker (the lab's second client) sends, bounded in count and time and only inside
//! the lab's own namespaces and documentation ranges:
//!
//! - TCP SYNs from spoofed sources, written whole onto its link (AF_PACKET): from addresses
//!   of the lab's LAN outside the policy's `lan_prefixes` (dropped, no flow: the LAN filter),
//!   from one spoofed LAN address far beyond its quota of new flows, and from many others;
//! - half ClientHellos: real TCP connections (from its own IPv4 and IPv6 addresses) that send
//!   the first 100 bytes of a ClientHello and stall, more of them than the gateway has
//!   reassembly buffers (`REASSEMBLY_MAX_ENTRIES`), to a listener on the server host that
//!   never reads (the lab's `openssl s_server` serves one connection at a time, so a stalled
//!   hello there would starve the victim for a reason that is not the gateway's);
//! - fake QUIC v1 Initials to UDP port 443 with random connection ids, which the daemon tries
//!   to decrypt: forged ones that fail at the tag, and real ones carrying half a ClientHello
//!   that the daemon keeps waiting for the rest; one spoofed LAN address sends far beyond its
//!   quota, many others within theirs.
//!
//! Meanwhile the victim (the lab's first client) uses real clients (`evasive-client` with no
//! evasion, and a slow but honest one whose ClientHello needs a reassembly buffer for
//! seconds while the half-hello storm runs), and sends a real QUIC Initial pair: a gambling
//! name is reset at once, an allowed one completes a GET on the lab's TLS server, a streaming
//! one is shaped, and the QUIC one is named by the daemon. `classifier status` answers within
//! [`STATUS_BOUND`] throughout, a SIGHUP reloads during the flood, the datapath's counters show
//! each flood metered per source, and afterwards `classifier policy reload` works and the
//! flow store holds the victim's flows with their names.
//!
//! Without the reassembly quota (`reassemblies_burst = 0`) the storm evicts the slow client's
//! buffer: its allowed site comes out unreadable and reset, and this test fails. Without the
//! other quotas, or the LAN filter, the metering checks fail.

use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use classifier_common::{
    maps::REASSEMBLY_MAX_ENTRIES,
    stats::Stat,
    testing::{chrome_like, handshake_of},
};
use classifier_lab::{
    Host, Lab, LabSpec,
    daemon::{DaemonOptions, DaemonProcess},
    tls::{HTTPS_PORT, TlsServer},
    topology::{SERVICE_V4, SERVICE_V6},
};
use classifier_tests::{
    classifier_bin,
    clients::interface_mac,
    frames::Buildable as _,
    privileged,
    setup::council_policy_at_work,
    tls_clients::{
        ALLOWED, BLOCKED, ClientCase, ClientRun, Expect, PROMPT, SHAPED, finish, flow_of, judge,
        run_all, same, start,
    },
};
use classifier_user::{
    daemon::Status,
    flows::FlowRecord,
    netns,
    quic::initial::{QuicVersion, testing::client_initial},
    store::{Filter, FlowStore},
};
use etherparse::PacketBuilder;
use nix::libc;
use serde_json::Value;

/// The policy's LAN: the lab's clients (192.0.2.10 up, 2001:db8:1::10 up) and the spoofed
/// LAN sources below are inside; the foreign ones, still in the lab's own LAN ranges
/// (192.0.2.0/24, 2001:db8:1::/64), are outside.
const LAN_V4: &str = "192.0.2.0/25";
const LAN_V6: &str = "2001:db8:1::/120";
/// A spoofed LAN source that opens far more flows than its quota allows.
const SYN_FLOODER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// A spoofed LAN source that sends far more QUIC Initials than its quota allows.
const QUIC_FLOODER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);
/// Spoofed LAN sources that each stay within their quotas: 192.0.2.102 up.
const SPREAD_SOURCES: u8 = 20;
/// Spoofed IPv6 LAN sources: 2001:db8:1::a0 up (no lab host has them).
const SPREAD_SOURCES_V6: u16 = 16;

/// The server host's ports the flood uses: nothing listens on the first (the server answers
/// the SYNs of spoofed LAN sources with resets), the half hellos' listener on the second.
const CLOSED_PORT: u16 = 9443;
const SINK_PORT: u16 = 8443;
/// How much of a ClientHello each half hello sends: its start, no name.
const HALF_HELLO_LEN: usize = 100;

/// The raw flood's bounds: it runs at least `FLOOD_MIN` (so the quotas' refill is small
/// beside what it sends) and until the victim is done, never longer than `FLOOD_MAX` nor
/// beyond `MAX_FRAMES` frames.
const FLOOD_MIN: Duration = Duration::from_secs(3);
const FLOOD_MAX: Duration = Duration::from_secs(8);
const MAX_FRAMES: u64 = 20_000;
/// One round of the raw flood, and what each round sends.
const ROUND: Duration = Duration::from_millis(20);
const ROUND_SYNS_FLOODER: u64 = 15;
const ROUND_SYNS_FOREIGN: u64 = 5;
const ROUND_SYNS_SPREAD: u64 = 2;
const ROUND_INITIALS_FLOODER: u64 = 4;
const ROUND_INITIALS_SPREAD: u64 = 4;

/// `classifier status` must answer within this during the flood, and a SIGHUP be in force
/// within `RELOAD_BOUND`.
const STATUS_BOUND: Duration = Duration::from_secs(2);
const RELOAD_BOUND: Duration = Duration::from_secs(3);
/// How often the watcher asks, and when (after the flood starts) it sends SIGHUP.
const STATUS_EVERY: Duration = Duration::from_millis(200);
const SIGHUP_AFTER: Duration = Duration::from_millis(1500);
/// `classifier flows` lists every flow, the flood's thousands too: it must still answer.
const FLOWS_BOUND: Duration = Duration::from_secs(5);

/// The slow client's pause between the two parts of its ClientHello: its reassembly buffer
/// must live through the half-hello storm.
const SLOW_PAUSE: &str = "2500ms";

/// The council's default policy with its `working` period in force at every moment (as in
/// lab_evasion.rs), and `lan_prefixes` set to the lab's LAN: its own quotas untouched.
fn flood_policy() -> String {
    let policy = council_policy_at_work();
    let lan = format!("\nlan_prefixes = [\"{LAN_V4}\", \"{LAN_V6}\"]\n");
    let with_lan = policy.replacen("\nlan_prefixes = []\n", &lan, 1);
    assert_ne!(
        with_lan, policy,
        "the built-in policy's [datapath] has no `lan_prefixes = []`: update flood_policy"
    );
    with_lan
}

/// One per-source quota of the policy: a rate a second and a burst.
#[derive(Clone, Copy, Debug)]
struct Quota {
    rate: u64,
    burst: u64,
}

impl Quota {
    /// The most one source can have taken over `elapsed`.
    fn most(self, elapsed: Duration) -> u64 {
        self.burst + (self.rate as f64 * elapsed.as_secs_f64()).ceil() as u64
    }
}

#[derive(Clone, Copy, Debug)]
struct Quotas {
    flows: Quota,
    reassemblies: Quota,
    quic: Quota,
}

/// The quotas of `policy`'s `[datapath]`: the flood is sized from them.
fn quotas(policy: &str) -> Quotas {
    let table: toml::Table = toml::from_str(policy).expect("the policy is TOML");
    let datapath = table["datapath"].as_table().expect("a [datapath] section");
    let get = |key: &str| {
        datapath
            .get(key)
            .and_then(toml::Value::as_integer)
            .unwrap_or_else(|| panic!("[datapath] {key} is set")) as u64
    };
    let quota = |what: &str| Quota {
        rate: get(&format!("{what}_per_second")),
        burst: get(&format!("{what}_burst")),
    };
    let quotas = Quotas {
        flows: quota("new_flows"),
        reassemblies: quota("reassemblies"),
        quic: quota("quic_initials"),
    };
    for q in [quotas.flows, quotas.reassemblies, quotas.quic] {
        assert!(
            q.burst > 0 && q.rate > 0,
            "the built-in policy meters every client: {quotas:?}"
        );
    }
    quotas
}

/// A small xorshift generator: connection ids and payloads that differ, without a crate.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The fake Initials the attacker sends, each with a random destination connection id:
/// every other one a forged Initial (a v1 long header, then noise the daemon fails to open),
/// the rest real Initials with only the first 1,100 bytes of a ClientHello, which the
/// daemon opens and keeps, waiting for the rest.
fn fake_initials(random: &mut Random, count: usize) -> Vec<Vec<u8>> {
    let record = chrome_like("quic-flood.example");
    let half_hello = &handshake_of(&record)[..1100];
    (0..count)
        .map(|i| {
            let dcid = random.bytes(8);
            if i % 2 == 0 {
                let mut datagram = random.bytes(1200);
                datagram[0] = 0xc3;
                datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
                datagram[5] = 8;
                datagram[6..14].copy_from_slice(&dcid);
                datagram
            } else {
                client_initial(QuicVersion::V1, &dcid, 0, 0, half_hello)
            }
        })
        .collect()
}

/// An AF_PACKET socket on an interface of the namespace the calling thread is in: it sends
/// whole Ethernet frames as built, whatever their source addresses.
struct RawLink {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawLink {
    fn open(iface: &str) -> anyhow::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the descriptor is owned at once below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            anyhow::bail!(
                "an AF_PACKET socket (needs CAP_NET_RAW): {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let ifindex = nix::net::if_::if_nametoindex(iface)? as i32;
        Ok(Self { fd, ifindex })
    }

    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: sockaddr_ll is plain data, valid all zeros.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        // The EtherType as it is on the wire (network order).
        to.sll_protocol = u16::from_ne_bytes([frame[12], frame[13]]);
        to.sll_ifindex = self.ifindex;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `to` are valid for the lengths given, for the call's duration.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Frames from the attacker's link to the gateway's LAN interface.
struct FrameMaker {
    source_mac: [u8; 6],
    gateway_mac: [u8; 6],
}

impl FrameMaker {
    fn syn(&self, source: IpAddr, destination: IpAddr, port: u16, seq: u32) -> Vec<u8> {
        let ethernet = PacketBuilder::ethernet2(self.source_mac, self.gateway_mac);
        match (source, destination) {
            (IpAddr::V4(s), IpAddr::V4(d)) => ethernet
                .ipv4(s.octets(), d.octets(), 64)
                .tcp(port, CLOSED_PORT, seq, 64240)
                .syn()
                .build(&[]),
            (IpAddr::V6(s), IpAddr::V6(d)) => ethernet
                .ipv6(s.octets(), d.octets(), 64)
                .tcp(port, CLOSED_PORT, seq, 64240)
                .syn()
                .build(&[]),
            _ => unreachable!("one family"),
        }
    }

    fn initial(&self, source: Ipv4Addr, port: u16, datagram: &[u8]) -> Vec<u8> {
        PacketBuilder::ethernet2(self.source_mac, self.gateway_mac)
            .ipv4(source.octets(), SERVICE_V4.octets(), 64)
            .udp(port, 443)
            .build(datagram)
    }
}

fn mac(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("a MAC address"))
        .collect();
    bytes.try_into().expect("six bytes")
}

/// What the raw flood sent (frames the link took).
#[derive(Debug, Default)]
struct Sent {
    syns_flooder: u64,
    syns_foreign: u64,
    syns_spread: u64,
    initials_flooder: u64,
    initials_spread: u64,
    refused: u64,
    elapsed: Duration,
}

impl Sent {
    fn total(&self) -> u64 {
        self.syns_flooder
            + self.syns_foreign
            + self.syns_spread
            + self.initials_flooder
            + self.initials_spread
    }
}

/// The raw flood, running on a thread in the attacker's namespace until stopped (and
/// [`FLOOD_MIN`] is over), [`FLOOD_MAX`] or [`MAX_FRAMES`].
struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<Sent>>>,
}

impl Flood {
    fn start(attacker: &Host, maker: FrameMaker, initials: Vec<Vec<u8>>, quotas: Quotas) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let netns_name = attacker.netns.clone();
        let iface = attacker.iface;
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                netns::enter(&netns_name)?;
                let link = RawLink::open(iface)?;
                flood(&link, &maker, &initials, quotas, &stop)
            })
        };
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Sent {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("finished once")
            .join()
            .expect("the flood thread does not panic")
            .expect("the flood runs")
    }
}

impl Drop for Flood {
    /// On a failure elsewhere: the flood stops before the lab goes.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn flood(
    link: &RawLink,
    maker: &FrameMaker,
    initials: &[Vec<u8>],
    quotas: Quotas,
    stop: &AtomicBool,
) -> anyhow::Result<Sent> {
    let started = Instant::now();
    let mut sent = Sent::default();
    let mut port: u16 = 10_000;
    let mut next_port = || {
        port = if port >= 65_000 { 10_000 } else { port + 1 };
        port
    };
    let send = |frame: &[u8], counter: &mut u64, refused: &mut u64| {
        match link.send(frame) {
            Ok(()) => *counter += 1,
            Err(_) => *refused += 1,
        };
    };
    let service_v4 = IpAddr::from(SERVICE_V4);
    let service_v6 = IpAddr::from(SERVICE_V6);
    // The opening bursts: past the flooders' quotas at once, in small chunks so the veths'
    // queues do not overflow.
    let opening_syns = quotas.flows.burst + 500;
    let opening_initials = quotas.quic.burst + 100;
    for i in 0..opening_syns {
        let frame = maker.syn(SYN_FLOODER.into(), service_v4, next_port(), i as u32);
        send(&frame, &mut sent.syns_flooder, &mut sent.refused);
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for i in 0..opening_initials {
        let datagram = &initials[i as usize % initials.len()];
        let frame = maker.initial(QUIC_FLOODER, next_port(), datagram);
        send(&frame, &mut sent.initials_flooder, &mut sent.refused);
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut round: u64 = 0;
    loop {
        let elapsed = started.elapsed();
        let stopped = stop.load(Ordering::Relaxed) && elapsed >= FLOOD_MIN;
        if stopped || elapsed >= FLOOD_MAX || sent.total() + sent.refused >= MAX_FRAMES {
            break;
        }
        for _ in 0..ROUND_SYNS_FLOODER {
            let frame = maker.syn(SYN_FLOODER.into(), service_v4, next_port(), 1);
            send(&frame, &mut sent.syns_flooder, &mut sent.refused);
        }
        for i in 0..ROUND_SYNS_FOREIGN {
            let n = round * ROUND_SYNS_FOREIGN + i;
            // Foreign: 192.0.2.128-254 and 2001:db8:1::1:0 up, outside the LAN prefixes.
            let frame = if n % 3 == 2 {
                let source = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, (n % 4096) as u16);
                maker.syn(source.into(), service_v6, next_port(), 1)
            } else {
                let source = Ipv4Addr::new(192, 0, 2, 128 + (n % 127) as u8);
                maker.syn(source.into(), service_v4, next_port(), 1)
            };
            send(&frame, &mut sent.syns_foreign, &mut sent.refused);
        }
        for i in 0..ROUND_SYNS_SPREAD {
            let n = round * ROUND_SYNS_SPREAD + i;
            let frame = if n.is_multiple_of(2) {
                let host = 102 + (n / 2 % SPREAD_SOURCES as u64) as u8;
                maker.syn(
                    Ipv4Addr::new(192, 0, 2, host).into(),
                    service_v4,
                    next_port(),
                    1,
                )
            } else {
                let host = 0xa0 + (n / 2 % SPREAD_SOURCES_V6 as u64) as u16;
                let source = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, host);
                maker.syn(source.into(), service_v6, next_port(), 1)
            };
            send(&frame, &mut sent.syns_spread, &mut sent.refused);
        }
        for i in 0..ROUND_INITIALS_FLOODER {
            let datagram = &initials[((round + i) as usize) % initials.len()];
            let frame = maker.initial(QUIC_FLOODER, next_port(), datagram);
            send(&frame, &mut sent.initials_flooder, &mut sent.refused);
        }
        for i in 0..ROUND_INITIALS_SPREAD {
            let n = round * ROUND_INITIALS_SPREAD + i;
            let source = Ipv4Addr::new(192, 0, 2, 102 + (n % SPREAD_SOURCES as u64) as u8);
            let datagram = &initials[n as usize % initials.len()];
            let frame = maker.initial(source, next_port(), datagram);
            send(&frame, &mut sent.initials_spread, &mut sent.refused);
        }
        round += 1;
        let due = started + ROUND * round as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    sent.elapsed = started.elapsed();
    Ok(sent)
}

/// The server host's listener for the half hellos: it never accepts, so the kernel holds
/// each connection (and its 100 bytes) in a backlog deep enough for all of them.
fn half_hello_sink(lab: &Lab) -> Vec<OwnedFd> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt,
        socket, sockopt,
    };
    netns::run_in(&lab.server.netns, || {
        [
            SocketAddr::new(SERVICE_V4.into(), SINK_PORT),
            SocketAddr::new(SERVICE_V6.into(), SINK_PORT),
        ]
        .into_iter()
        .map(|addr| {
            let family = if addr.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
            setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
            listen(&fd, Backlog::MAXCONN)?;
            Ok(fd)
        })
        .collect()
    })
    .expect("the half hellos' listener starts")
}

/// The half-hello storm: its connections, held open until dropped.
struct Storm {
    streams: Vec<TcpStream>,
    refused: usize,
    elapsed: Duration,
}

/// Opens `per_family` connections over each family from `attacker` to the sink and sends
/// each the first [`HALF_HELLO_LEN`] bytes of a ClientHello, on a thread in its namespace.
fn half_hello_storm(attacker: &Host, per_family: usize) -> JoinHandle<anyhow::Result<Storm>> {
    let netns_name = attacker.netns.clone();
    std::thread::spawn(move || {
        netns::enter(&netns_name)?;
        let hello = chrome_like(BLOCKED);
        let half = &hello[..HALF_HELLO_LEN];
        let started = Instant::now();
        let mut storm = Storm {
            streams: Vec::with_capacity(2 * per_family),
            refused: 0,
            elapsed: Duration::ZERO,
        };
        for _ in 0..per_family {
            for server in [IpAddr::from(SERVICE_V4), IpAddr::from(SERVICE_V6)] {
                let opened =
                    TcpStream::connect_timeout(&SocketAddr::new(server, SINK_PORT), PROMPT)
                        .and_then(|mut stream| {
                            stream.set_nodelay(true)?;
                            stream.write_all(half)?;
                            Ok(stream)
                        });
                match opened {
                    Ok(stream) => storm.streams.push(stream),
                    Err(_) => storm.refused += 1,
                }
            }
        }
        storm.elapsed = started.elapsed();
        Ok(storm)
    })
}

/// Enough descriptors for the storm's sockets.
fn raise_open_files(needed: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("RLIMIT_NOFILE");
    if soft < needed {
        assert!(
            hard >= needed,
            "the half-hello storm needs {needed} open files; the hard limit is {hard}"
        );
        setrlimit(Resource::RLIMIT_NOFILE, needed, hard).expect("raising RLIMIT_NOFILE");
    }
}

/// The victim's QUIC connection attempt: a real client Initial pair for `SHAPED` (a
/// Chrome-like ClientHello over two Initials), then a few short-header packets, so the class
/// the daemon hands back is picked up. Returns the socket's address.
fn victim_quic(victim: &Host, random: &mut Random) -> JoinHandle<anyhow::Result<SocketAddr>> {
    let record = chrome_like(SHAPED);
    let (first, second) = handshake_of(&record).split_at(1100);
    let dcid = random.bytes(8);
    let initials = [
        client_initial(QuicVersion::V1, &dcid, 0, 0, first),
        client_initial(QuicVersion::V1, &dcid, 1, 1100, second),
    ];
    let netns_name = victim.netns.clone();
    let local = SocketAddr::new(victim.ipv4.into(), 0);
    std::thread::spawn(move || {
        netns::enter(&netns_name)?;
        let socket = UdpSocket::bind(local)?;
        let server = SocketAddr::new(SERVICE_V4.into(), 443);
        for initial in &initials {
            socket.send_to(initial, server)?;
        }
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(250));
            // The server sends nothing (no QUIC server in the lab): an ICMP error may come
            // back and fail a send; the packets are only for the gateway to see.
            let _ = socket.send_to(b"short header packet", server);
        }
        Ok(socket.local_addr()?)
    })
}

/// `classifier status --json`, given up after 10 s: the answer and how long it took.
fn status_cli(control_socket: &Path) -> (Result<Value, String>, Duration) {
    let started = Instant::now();
    let mut child = Command::new(classifier_bin())
        .args(["status", "--json", "--control-socket"])
        .arg(control_socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("classifier status starts");
    let deadline = started + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (Err("no answer within 10 s".into()), started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = child.wait_with_output().unwrap();
    let took = started.elapsed();
    if !output.status.success() {
        let error = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return (Err(error), took);
    }
    let answer = serde_json::from_slice(&output.stdout).map_err(|e| format!("{e}"));
    (answer, took)
}

/// What the watcher saw while the flood ran.
#[derive(Debug, Default)]
struct Watched {
    polls: usize,
    slowest: Duration,
    failures: Vec<String>,
    /// From SIGHUP to the reloaded policy's generation showing in `status`.
    sighup_reload: Option<Duration>,
}

/// Asks `classifier status` every [`STATUS_EVERY`] until stopped, and sends the daemon a
/// SIGHUP [`SIGHUP_AFTER`] in, watching for the reload.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Watched>>,
}

impl Watcher {
    fn start(control_socket: PathBuf, daemon_pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || watch(&control_socket, daemon_pid, &stop))
        };
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Watched {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("finished once")
            .join()
            .expect("the watcher does not panic")
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch(control_socket: &Path, daemon_pid: u32, stop: &AtomicBool) -> Watched {
    let started = Instant::now();
    let mut watched = Watched::default();
    let mut sighup: Option<(Instant, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        let (answer, took) = status_cli(control_socket);
        watched.polls += 1;
        watched.slowest = watched.slowest.max(took);
        let generation = match answer {
            Ok(status) => status["policy_generation"].as_u64(),
            Err(error) => {
                watched
                    .failures
                    .push(format!("status at {:?}: {error}", started.elapsed()));
                None
            }
        };
        match (sighup, generation) {
            (None, Some(generation)) if started.elapsed() >= SIGHUP_AFTER => {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(daemon_pid as i32),
                    nix::sys::signal::Signal::SIGHUP,
                )
                .expect("signalling the daemon");
                sighup = Some((Instant::now(), generation));
            }
            (Some((sent, before)), Some(generation))
                if watched.sighup_reload.is_none() && generation > before =>
            {
                watched.sighup_reload = Some(sent.elapsed());
            }
            _ => {}
        }
        std::thread::sleep(STATUS_EVERY);
    }
    watched
}

/// `classifier flows --json`, timed.
fn flows_cli(control_socket: &Path) -> (Vec<FlowRecord>, Duration) {
    let started = Instant::now();
    let output = Command::new(classifier_bin())
        .args(["flows", "--json", "--control-socket"])
        .arg(control_socket)
        .output()
        .expect("classifier flows runs");
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "classifier flows: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let flows = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a flow record"))
        .collect();
    (flows, took)
}

/// `classifier policy reload`: whether it worked, and what it said.
fn reload_cli(control_socket: &Path) -> (bool, String) {
    let output = Command::new(classifier_bin())
        .args(["policy", "reload", "--control-socket"])
        .arg(control_socket)
        .output()
        .expect("classifier policy reload runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said.trim().to_owned())
}

fn in_foreign_range(addr: IpAddr) -> bool {
    match addr.to_canonical() {
        IpAddr::V4(v4) => v4.octets()[..3] == [192, 0, 2] && v4.octets()[3] >= 128,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[..4] == [0x2001, 0xdb8, 1, 0] && (s[4..7] != [0, 0, 0] || s[7] > 0xff)
        }
    }
}

/// What is wrong with the metering of the flood, by the datapath's counters and the flow
/// table.
fn judge_metering(
    status: &Status,
    flows: &[FlowRecord],
    sent: &Sent,
    storm: &Storm,
    attacker: &Host,
    quotas: Quotas,
) -> Vec<String> {
    let mut wrong = Vec::new();
    let stat = |s: Stat| status.datapath.get(s);
    // Frames sent are not all frames seen (a veth may drop a few under a burst): the
    // lower bounds below take half of what must have been over quota.
    let slack = Duration::from_millis(500);
    let flood_window = sent.elapsed + slack;
    let syn_over = sent
        .syns_flooder
        .saturating_sub(quotas.flows.most(flood_window));
    if stat(Stat::SourceOverQuota) < syn_over / 2 || stat(Stat::SourceOverQuota) == 0 {
        wrong.push(format!(
            "source_over_quota {}: the SYN flooder sent {} SYNs, at least {syn_over} over its \
             quota of new flows",
            stat(Stat::SourceOverQuota),
            sent.syns_flooder
        ));
    }
    if stat(Stat::ForeignSource) < sent.syns_foreign / 2 {
        wrong.push(format!(
            "foreign_source {}: {} SYNs came from outside the LAN prefixes",
            stat(Stat::ForeignSource),
            sent.syns_foreign
        ));
    }
    let quic_over = sent
        .initials_flooder
        .saturating_sub(quotas.quic.most(flood_window));
    if stat(Stat::QuicOverQuota) < quic_over / 2 || stat(Stat::QuicOverQuota) == 0 {
        wrong.push(format!(
            "quic_over_quota {}: the QUIC flooder sent {} Initials, at least {quic_over} over \
             its quota",
            stat(Stat::QuicOverQuota),
            sent.initials_flooder
        ));
    }
    // The half hellos: each of the attacker's two addresses gets its quota of reassembly
    // buffers; the rest are unreadable (and blocked at work).
    let opened = storm.streams.len() as u64;
    let kept_most = 2 * quotas.reassemblies.most(storm.elapsed + slack);
    let over = opened.saturating_sub(kept_most);
    if stat(Stat::ReassemblyOverQuota) < over / 2 || stat(Stat::ReassemblyOverQuota) == 0 {
        wrong.push(format!(
            "reassembly_over_quota {}: {opened} half hellos, at least {over} over the \
             attacker's quotas",
            stat(Stat::ReassemblyOverQuota)
        ));
    }
    let attacker_addrs = attacker.addrs();
    let half_hellos: Vec<&FlowRecord> = flows
        .iter()
        .filter(|f| {
            f.protocol == "tcp"
                && f.server.port() == SINK_PORT
                && attacker_addrs.contains(&f.client.ip().to_canonical())
        })
        .collect();
    let kept = half_hellos.iter().filter(|f| !f.unreadable).count() as u64;
    if kept > kept_most {
        wrong.push(format!(
            "{kept} of the attacker's {} half hellos are still being read: more than its \
             two addresses' quotas ({kept_most})",
            half_hellos.len()
        ));
    }
    // The flow table: nothing from outside the LAN, and no more from the SYN flooder than
    // its quota.
    let foreign: Vec<&FlowRecord> = flows
        .iter()
        .filter(|f| in_foreign_range(f.client.ip()))
        .collect();
    if let Some(first) = foreign.first() {
        wrong.push(format!(
            "{} flows from outside the LAN prefixes, e.g. from {}",
            foreign.len(),
            first.client
        ));
    }
    let flooder_flows = flows
        .iter()
        .filter(|f| f.client.ip().to_canonical() == IpAddr::from(SYN_FLOODER))
        .count() as u64;
    let flooder_most = quotas.flows.most(flood_window);
    if flooder_flows > flooder_most {
        wrong.push(format!(
            "{flooder_flows} flows from the SYN flooder in the table, beyond its quota \
             ({flooder_most} over {flood_window:?})"
        ));
    }
    eprintln!(
        "metering: source_over_quota {} (>= {syn_over} expected), foreign_source {}, \
         quic_over_quota {} (>= {quic_over}), reassembly_over_quota {} (>= {over}), \
         reassembly_lost {}; half hellos kept {kept} (at most {kept_most}) of {}; SYN flooder \
         flows {flooder_flows} (at most {flooder_most}); quic_to_daemon {}, shed by the \
         daemon {}; events_dropped {}; flows in the table {}",
        stat(Stat::SourceOverQuota),
        stat(Stat::ForeignSource),
        stat(Stat::QuicOverQuota),
        stat(Stat::ReassemblyOverQuota),
        stat(Stat::ReassemblyLost),
        half_hellos.len(),
        stat(Stat::QuicToDaemon),
        status.quic_initials_shed,
        stat(Stat::EventsDropped),
        status.flows
    );
    wrong
}

/// The daemon on `lab`'s gateway running `policy`, its log kept in the lab's data directory.
fn start_daemon(lab: &Lab, policy: &str) -> (DaemonProcess, PathBuf) {
    std::fs::create_dir_all(lab.data_dir()).unwrap();
    let path = lab.data_dir().join("policy.toml");
    std::fs::write(&path, policy).unwrap();
    let log = lab.data_dir().join("daemon.log");
    let options = DaemonOptions {
        extra_args: vec!["--policy".into(), path.display().to_string()],
        log_file: Some(log.clone()),
        ..DaemonOptions::default()
    };
    let daemon = DaemonProcess::start(&classifier_bin(), lab, &options).expect("the daemon starts");
    (daemon, log)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn floods_do_not_blind_the_gateway_to_other_clients() {
    if !privileged("floods_do_not_blind_the_gateway_to_other_clients") {
        return;
    }
    let started = Instant::now();
    let policy = flood_policy();
    let quotas = quotas(&policy);
    // More half hellos than the gateway has reassembly buffers, from two addresses that
    // each stay within their quota of new flows.
    let per_family = (REASSEMBLY_MAX_ENTRIES + 512) / 2;
    assert!(
        (per_family as u64) < quotas.flows.burst,
        "the half hellos of one address fit its quota of new flows"
    );
    raise_open_files(2 * per_family as u64 + 1024);

    let names = [BLOCKED, ALLOWED, SHAPED].map(String::from);
    let lab = Lab::up(&LabSpec {
        clients: 2,
        server_names: names.to_vec(),
        ..LabSpec::default()
    })
    .expect("lab comes up");
    let _tls = TlsServer::start(&lab, &names).expect("the lab's TLS server starts");
    let _sink = half_hello_sink(&lab);
    let (daemon, log) = start_daemon(&lab, &policy);
    let (victim, attacker) = (&lab.clients[0], &lab.clients[1]);
    let up = started.elapsed();

    let seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut random = Random(seed | 1);
    let maker = FrameMaker {
        source_mac: mac(&interface_mac(attacker)),
        gateway_mac: mac(&interface_mac(&lab.gateway)),
    };
    let generation_before = daemon.status().unwrap().policy_generation;

    // The flood starts; the watcher asks for the status throughout and sends a SIGHUP.
    let flood = Flood::start(attacker, maker, fake_initials(&mut random, 64), quotas);
    let watcher = Watcher::start(daemon.control_socket.clone(), daemon.pid());
    let flood_started = Instant::now();

    // A slow but honest client: its ClientHello in two parts 2.5 s apart, so the gateway
    // holds a reassembly buffer for it while the half-hello storm runs. Over IPv6: should
    // the gateway lose its buffer and reset it, the IPv6 s_server is left waiting for the
    // rest of its hello, and the IPv4 clients below are still served.
    std::thread::sleep(Duration::from_millis(200));
    let (v4, v6) = (IpAddr::from(SERVICE_V4), IpAddr::from(SERVICE_V6));
    let slow = ClientCase {
        what: "slow: hello in two parts 2.5 s apart",
        server: v6,
        expect: Expect::Allowed,
        args: &["--split", "sni+2", "--pause", SLOW_PAUSE],
    };
    let slow_started = Instant::now();
    let slow_client = start(victim, &slow);
    std::thread::sleep(Duration::from_millis(300));
    let storm_started = Instant::now();
    let storm = half_hello_storm(attacker, per_family);
    let slow_run = finish(&slow, slow_client);
    let storm = storm
        .join()
        .expect("the storm does not panic")
        .expect("the storm runs");
    let storm_done = flood_started.elapsed();
    let pause = humantime::parse_duration(SLOW_PAUSE).unwrap();
    assert!(
        storm_started + storm.elapsed < slow_started + pause,
        "the half-hello storm took {:?}: it did not end while the slow client's buffer was \
         held, so this run shows nothing about evictions (a machine too slow for the test?)",
        storm.elapsed
    );

    // Then the victim's everyday connections, still under the flood: those that need the
    // server's answers at once, then the blocked ones (lab_evasion.rs says why).
    let quic = victim_quic(victim, &mut random);
    let plain = |server, expect| ClientCase {
        what: "plain",
        server,
        expect,
        args: &[],
    };
    let served = [plain(v4, Expect::Allowed), plain(v4, Expect::Shaped)];
    let blocked = [plain(v4, Expect::Blocked), plain(v6, Expect::Blocked)];
    let served_runs = run_all(victim, &served.iter().collect::<Vec<_>>());
    let blocked_runs = run_all(victim, &blocked.iter().collect::<Vec<_>>());
    let quic_local = quic
        .join()
        .expect("the QUIC client does not panic")
        .expect("the QUIC client sends");
    let victim_done = flood_started.elapsed();

    // The records, asked while the flood still runs.
    let (_, flows_took) = flows_cli(&daemon.control_socket);
    let sent = flood.finish();
    let watched = watcher.finish();
    let (flows, _) = flows_cli(&daemon.control_socket);
    let status = daemon.status().expect("the daemon answers after the flood");

    let mut failures = Vec::new();
    let cases: Vec<&ClientCase> = [&slow].into_iter().chain(&served).chain(&blocked).collect();
    let runs: Vec<&ClientRun> = [&slow_run]
        .into_iter()
        .chain(&served_runs)
        .chain(&blocked_runs)
        .collect();
    for (case, run) in cases.iter().zip(&runs) {
        let flow = run.local.and_then(|local| {
            flow_of(
                &flows,
                "tcp",
                local,
                SocketAddr::new(case.server, HTTPS_PORT),
            )
        });
        eprintln!(
            "{:<66} {:<6} {:>5} ms  flow: {}",
            case.label(),
            run.outcome,
            run.elapsed.as_millis(),
            flow.map_or("none".into(), |f| format!(
                "{:?} {} {} {} unreadable {}",
                f.name, f.category, f.app, f.verdict, f.unreadable
            ))
        );
        failures.extend(
            judge(case, run, &flows)
                .0
                .into_iter()
                .map(|w| format!("{}: {w}", case.label())),
        );
    }
    let quic_server = SocketAddr::new(v4, 443);
    match flow_of(&flows, "udp", quic_local, quic_server) {
        Some(flow) => {
            eprintln!(
                "QUIC {SHAPED} from {quic_local}: {:?} {} {} {} {}",
                flow.name, flow.category, flow.app, flow.method, flow.verdict
            );
            let got = (
                flow.name.as_deref(),
                flow.category.as_str(),
                flow.method.as_str(),
                flow.verdict.as_str(),
            );
            if got != (Some(SHAPED), "streaming-video", "quic", "shape") {
                failures.push(format!(
                    "the victim's QUIC flow {quic_local}: {got:?}, expected it named \
                     {SHAPED} by the daemon (streaming-video, quic, shape)"
                ));
            }
        }
        None => failures.push(format!(
            "no flow of the victim's QUIC Initials from {quic_local}"
        )),
    }

    // Responsiveness during the flood.
    eprintln!(
        "watcher: {} status answers, slowest {:?}; SIGHUP reloaded in {:?}; flows listed in \
         {flows_took:?}",
        watched.polls, watched.slowest, watched.sighup_reload
    );
    failures.extend(watched.failures.iter().cloned());
    if watched.slowest > STATUS_BOUND {
        failures.push(format!(
            "`classifier status` took {:?} during the flood, more than {STATUS_BOUND:?}",
            watched.slowest
        ));
    }
    match watched.sighup_reload {
        Some(took) if took <= RELOAD_BOUND => {}
        other => failures.push(format!(
            "a SIGHUP during the flood did not reload within {RELOAD_BOUND:?}: {other:?}"
        )),
    }
    if flows_took > FLOWS_BOUND {
        failures.push(format!(
            "`classifier flows` took {flows_took:?} during the flood, more than {FLOWS_BOUND:?}"
        ));
    }

    // The flood was metered per source.
    failures.extend(judge_metering(
        &status, &flows, &sent, &storm, attacker, quotas,
    ));
    eprintln!(
        "flood: {} frames ({sent:?}), {} refused by the link, in {:?}; half hellos: {} open, \
         {} refused, in {:?} (done {storm_done:?} in); victim done {victim_done:?} in",
        sent.total(),
        sent.refused,
        sent.elapsed,
        storm.streams.len(),
        storm.refused,
        storm.elapsed
    );
    assert!(
        sent.total() + sent.refused <= MAX_FRAMES && sent.elapsed <= FLOOD_MAX + ROUND * 5,
        "the flood kept to its bounds: {sent:?}"
    );
    drop(storm);

    // Afterwards: alive, and a reload over the control socket works.
    let (reloaded, said) = reload_cli(&daemon.control_socket);
    let after = daemon
        .status()
        .expect("the daemon answers after the reload");
    if !reloaded || after.policy_generation < generation_before + 2 {
        failures.push(format!(
            "`classifier policy reload` after the flood: ok {reloaded}, generation {} -> {} \
             (SIGHUP and reload: +2 expected): {said}",
            generation_before, after.policy_generation
        ));
    }
    if after.records.records_failed > 0 {
        failures.push(format!(
            "{} records could not be written",
            after.records.records_failed
        ));
    }

    // The records: once the daemon has stopped, the store holds the victim's flows, named.
    let stop_started = Instant::now();
    let exit = daemon.stop().expect("the daemon stops");
    let stop_took = stop_started.elapsed();
    if !exit.success() {
        failures.push(format!("the daemon exited with {exit}"));
    }
    let store = FlowStore::open(&lab.store_path()).expect("the daemon made the store");
    let stored = store.query(&Filter::default()).expect("the store answers");
    for (case, run) in cases.iter().zip(&runs) {
        let Some(local) = run.local else { continue };
        let server = SocketAddr::new(case.server, HTTPS_PORT);
        let record = stored.iter().find(|s| {
            s.flow.protocol == "tcp" && same(s.flow.client, local) && same(s.flow.server, server)
        });
        match record {
            Some(s) if s.flow.name.as_deref() == Some(case.expect.name()) => {}
            other => failures.push(format!(
                "{}: the store's record of {local}: {:?}",
                case.label(),
                other.map(|s| (&s.flow.name, &s.flow.verdict))
            )),
        }
    }
    let quic_record = stored.iter().find(|s| {
        s.flow.protocol == "udp"
            && same(s.flow.client, quic_local)
            && same(s.flow.server, quic_server)
    });
    if quic_record.and_then(|s| s.flow.name.as_deref()) != Some(SHAPED) {
        failures.push(format!(
            "the store's record of the victim's QUIC flow {quic_local}: {:?}",
            quic_record.map(|s| (&s.flow.name, &s.flow.verdict))
        ));
    }
    eprintln!(
        "lab and daemon up in {up:?}; daemon stopped in {stop_took:?} with {} records stored; \
         {:?} in all",
        stored.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "the flood blinded the gateway:\n{}\n(binary {}; the daemon's log ends:\n{})",
        failures.join("\n"),
        classifier_bin().display(),
        log_tail(&log)
    );
}
