//! `evasive-client`: a real TLS client that hides its ClientHello the way byedpi and zapret
//! do, for the lab tests (`tests/tests/lab_evasion.rs`).
//!
//! It connects a real TCP socket (TCP_NODELAY), has rustls make a real ClientHello for
//! `--sni`, and sends that first flight in one of these ways:
//!
//! - `--split CUT`: the bytes before CUT, a pause (`--pause`, 50 ms), then the rest: two
//!   segments (`--split 1`: a 1-byte first segment);
//! - `--disorder CUT`: byedpi's disorder: the bytes before CUT with IP TTL / IPv6 hop limit
//!   1 (the gateway drops them: the TTL expires there), the TTL back to what it was, then the
//!   rest. The kernel retransmits the first part later with the normal TTL, so the server
//!   (and the gateway) get the second part first;
//! - `--tlsrec CUT`: the handshake message re-framed into two TLS records cut CUT bytes into
//!   the message (same record type and version, lengths fixed), sent in one write;
//! - none of these: the first flight as rustls wrote it, in one write.
//!
//! CUT is a byte count (`1`), or `sni+K` / `sni-K`: K bytes after (before) the first byte of
//! the server name inside the ClientHello, e.g. `sni+2` cuts inside the name itself (byedpi's
//! `1+s`). For `--split` and `--disorder` it counts from the start of the TLS record, for
//! `--tlsrec` from the start of the handshake message.
//!
//! It then finishes the handshake with rustls over the same socket (certificates are not
//! checked: the lab's are throw-away), sends `GET PATH HTTP/1.1` with `Host: SNI`, reads the
//! answer, and prints one line of JSON: `{"outcome": "reset"|"ok"|"timeout"|"error",
//! "detail": {...}}`. It exits 0 in all these cases (the caller judges); everything it does
//! ends within `--timeout`. `--local-port` fixes the client's port (the flow's key), and
//! `--read-rate` reads the answer slowly, for a long-lived flow (`lab_restart_names.rs`).
//!
//! ```sh
//! ip netns exec <client ns> evasive-client 203.0.113.10:443 --sni www.bet365.com --disorder 1
//! ```

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs as _},
    os::fd::AsFd,
    str::FromStr,
    time::{Duration, Instant},
};

use clap::{ArgGroup, Parser};
use classifier_tests::rustls_client::{http_answer_complete, lab_client_config};
use rustls::{ClientConnection, pki_types::ServerName};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    about = "A real TLS client whose ClientHello is cut, reordered or re-framed as byedpi/zapret do",
    group(ArgGroup::new("technique").args(["split", "disorder", "tlsrec"]).multiple(false))
)]
struct Args {
    /// The server: ADDR:PORT (`203.0.113.10:443`, `[2001:db8:3::10]:443`), or NAME:PORT
    /// resolved through the hosts file.
    server: String,
    /// The server name the ClientHello carries (and the request's Host).
    #[arg(long)]
    sni: String,
    /// Two segments cut at CUT, `--pause` apart.
    #[arg(long, value_name = "CUT")]
    split: Option<Cut>,
    /// The bytes before CUT first with TTL (hop limit) 1, then the rest with the normal TTL.
    #[arg(long, value_name = "CUT")]
    disorder: Option<Cut>,
    /// Two TLS records cut CUT bytes into the handshake message, in one write.
    #[arg(long, value_name = "CUT")]
    tlsrec: Option<Cut>,
    /// The pause between the two writes of `--split`.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pause: Duration,
    /// The path requested once the handshake is done.
    #[arg(long, default_value = "/")]
    path: String,
    /// Everything (connect, handshake, request, answer) ends within this.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Only IPv4 addresses of a server name.
    #[arg(long, short = '4', conflicts_with = "ipv6")]
    ipv4: bool,
    /// Only IPv6 addresses of a server name.
    #[arg(long, short = '6')]
    ipv6: bool,
    /// Connect from this local port (the flow's key is then known in advance).
    #[arg(long, value_name = "PORT")]
    local_port: Option<u16>,
    /// Read the answer at most this many bytes a second (with a small receive buffer, the
    /// server then sends no faster: a long-lived flow).
    #[arg(long, value_name = "BYTES")]
    read_rate: Option<u64>,
}

/// Where to cut: a byte offset, or an offset from the server name's first byte.
#[derive(Clone, Copy, Debug)]
enum Cut {
    At(usize),
    Sni(isize),
}

impl FromStr for Cut {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}`: a byte count, `sni`, `sni+K` or `sni-K`");
        let Some(rest) = text.strip_prefix("sni") else {
            return text.parse().map(Cut::At).map_err(|_| bad());
        };
        let offset = if rest.is_empty() {
            0
        } else if let Some(k) = rest.strip_prefix('+') {
            k.parse::<isize>().map_err(|_| bad())?
        } else if let Some(k) = rest.strip_prefix('-') {
            -k.parse::<isize>().map_err(|_| bad())?
        } else {
            return Err(bad());
        };
        Ok(Cut::Sni(offset))
    }
}

impl Cut {
    /// The offset in `bytes` (which must hold `sni` for a `Sni` cut), strictly inside it.
    fn resolve(self, bytes: &[u8], sni: &str) -> Result<usize, String> {
        let at = match self {
            Cut::At(n) => n as isize,
            Cut::Sni(k) => {
                let start = bytes
                    .windows(sni.len())
                    .position(|w| w == sni.as_bytes())
                    .ok_or("the server name is not in the ClientHello")?;
                start as isize + k
            }
        };
        if at <= 0 || at as usize >= bytes.len() {
            return Err(format!(
                "cut {self:?} at {at} is not inside the {} bytes it cuts",
                bytes.len()
            ));
        }
        Ok(at as usize)
    }
}

/// The line printed.
#[derive(Debug, Serialize)]
struct Report {
    outcome: Outcome,
    detail: Detail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    /// The connection was reset (or aborted) by a TCP RST.
    Reset,
    /// Handshake done, request sent, an HTTP answer read to its end.
    Ok,
    /// `--timeout` passed first.
    Timeout,
    /// Anything else: refused, a TLS alert or error, the server closing, bad arguments.
    Error,
}

#[derive(Debug, Default, Serialize)]
struct Detail {
    /// What happened, in words.
    message: String,
    /// connect, send-hello, handshake, request, response or done.
    stage: &'static str,
    /// From before connecting to the outcome.
    elapsed_ms: u64,
    /// How the first flight was sent.
    technique: String,
    server: Option<SocketAddr>,
    /// The client's address and port: the flow the gateway sees.
    local: Option<SocketAddr>,
    /// The first flight as rustls wrote it (bytes), and the sizes of the writes it went in.
    hello_len: usize,
    writes: Vec<usize>,
    tls_version: Option<String>,
    status_line: Option<String>,
    /// Bytes of HTTP answer (headers and body) received.
    response_bytes: usize,
}

fn main() {
    let args = Args::parse();
    let started = Instant::now();
    let mut detail = Detail {
        technique: technique(&args),
        ..Detail::default()
    };
    let outcome = match run(&args, started, &mut detail) {
        Ok(()) => Outcome::Ok,
        Err(failure) => {
            detail.message = failure.message;
            failure.outcome
        }
    };
    detail.elapsed_ms = started.elapsed().as_millis() as u64;
    let report = Report { outcome, detail };
    println!(
        "{}",
        serde_json::to_string(&report).expect("the report serialises")
    );
}

fn technique(args: &Args) -> String {
    match (args.split, args.disorder, args.tlsrec) {
        (Some(cut), _, _) => format!("split {cut:?}"),
        (_, Some(cut), _) => format!("disorder {cut:?}"),
        (_, _, Some(cut)) => format!("tlsrec {cut:?}"),
        _ => "plain".into(),
    }
}

/// Why the run did not end with an answer.
struct Failure {
    outcome: Outcome,
    message: String,
}

fn fail(outcome: Outcome, message: impl Into<String>) -> Failure {
    Failure {
        outcome,
        message: message.into(),
    }
}

/// An I/O error at `stage`: a reset, the deadline, or another error.
fn io_failure(stage: &str, error: &io::Error) -> Failure {
    let outcome = match error.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Outcome::Reset,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Outcome::Timeout,
        _ => Outcome::Error,
    };
    fail(outcome, format!("{stage}: {error}"))
}

/// The time left before the deadline, or a timeout failure.
fn remaining(deadline: Instant, stage: &str) -> Result<Duration, Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < Duration::from_millis(1) {
        return Err(fail(Outcome::Timeout, format!("{stage}: timed out")));
    }
    Ok(left)
}

fn run(args: &Args, started: Instant, detail: &mut Detail) -> Result<(), Failure> {
    let deadline = started + args.timeout;

    detail.stage = "connect";
    let server = resolve(args)?;
    detail.server = Some(server);
    let mut socket = connect(server, args.local_port, remaining(deadline, "connect")?)
        .map_err(|e| io_failure("connect", &e))?;
    let setup = |e: io::Error| fail(Outcome::Error, format!("socket options: {e}"));
    socket.set_nodelay(true).map_err(setup)?;
    socket
        .set_write_timeout(Some(remaining(deadline, "connect")?))
        .map_err(setup)?;
    detail.local = socket.local_addr().ok();

    let mut tls = ClientConnection::new(lab_client_config(), server_name(&args.sni)?)
        .map_err(|e| fail(Outcome::Error, format!("rustls: {e}")))?;
    let mut hello = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut hello)
            .map_err(|e| fail(Outcome::Error, format!("rustls: {e}")))?;
    }
    detail.hello_len = hello.len();

    detail.stage = "send-hello";
    send_hello(args, &mut socket, &hello, detail)?;

    detail.stage = "handshake";
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: evasive-client\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n",
        args.path, args.sni
    );
    let mut request_sent = false;
    let mut response = Vec::new();
    let mut requested_at = Instant::now();
    loop {
        while tls.wants_write() {
            tls.write_tls(&mut socket)
                .map_err(|e| io_failure(detail.stage, &e))?;
        }
        if !tls.is_handshaking() && !request_sent {
            detail.tls_version = tls.protocol_version().map(|v| format!("{v:?}"));
            detail.stage = "request";
            tls.writer()
                .write_all(request.as_bytes())
                .map_err(|e| fail(Outcome::Error, format!("request: {e}")))?;
            request_sent = true;
            requested_at = Instant::now();
            detail.stage = "response";
            continue;
        }
        if request_sent && http_answer_complete(&response) {
            break;
        }
        socket
            .set_read_timeout(Some(remaining(deadline, detail.stage)?))
            .map_err(setup)?;
        let read = tls
            .read_tls(&mut socket)
            .map_err(|e| io_failure(detail.stage, &e))?;
        let state = tls.process_new_packets().map_err(|e| {
            // Tell the server why, as a client would (best effort).
            let _ = tls.write_tls(&mut socket);
            fail(Outcome::Error, format!("{}: TLS: {e}", detail.stage))
        })?;
        if state.plaintext_bytes_to_read() > 0 {
            let mut buffer = vec![0; state.plaintext_bytes_to_read()];
            let n = tls.reader().read(&mut buffer).unwrap_or(0);
            response.extend_from_slice(&buffer[..n]);
            detail.response_bytes = response.len();
            if let Some(rate) = args.read_rate {
                // Ahead of the rate: wait until the bytes read are due.
                let due = Duration::from_secs_f64(response.len() as f64 / rate.max(1) as f64);
                let ahead = due.saturating_sub(requested_at.elapsed());
                std::thread::sleep(ahead.min(remaining(deadline, detail.stage)?));
            }
        }
        if read == 0 || state.peer_has_closed() {
            if !request_sent {
                return Err(fail(
                    Outcome::Error,
                    "handshake: the server closed the connection",
                ));
            }
            break;
        }
    }
    detail.stage = "done";
    detail.status_line = response
        .split(|&b| b == b'\n')
        .next()
        .map(|line| String::from_utf8_lossy(line).trim_end().to_owned())
        .filter(|line| !line.is_empty());
    if !response.starts_with(b"HTTP/") {
        return Err(fail(
            Outcome::Error,
            format!(
                "response: not an HTTP answer ({} bytes before the close)",
                response.len()
            ),
        ));
    }
    detail.message = "handshake done, answer read".into();
    Ok(())
}

/// A TCP connection to `server`, from `local_port` when given (bound first).
fn connect(
    server: SocketAddr,
    local_port: Option<u16>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, setsockopt, socket,
        sockopt,
    };
    use std::os::fd::AsRawFd as _;
    let Some(port) = local_port else {
        return TcpStream::connect_timeout(&server, timeout);
    };
    let (family, any) = match server {
        SocketAddr::V4(_) => (AddressFamily::Inet, IpAddr::from(Ipv4Addr::UNSPECIFIED)),
        SocketAddr::V6(_) => (AddressFamily::Inet6, IpAddr::from(Ipv6Addr::UNSPECIFIED)),
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(any, port)),
    )?;
    // A lab server answers at once: the blocking connect needs no timeout of its own.
    connect(fd.as_raw_fd(), &SockaddrStorage::from(server))?;
    Ok(TcpStream::from(fd))
}

fn resolve(args: &Args) -> Result<SocketAddr, Failure> {
    let addresses = args
        .server
        .to_socket_addrs()
        .map_err(|e| fail(Outcome::Error, format!("resolving {}: {e}", args.server)))?;
    addresses
        .into_iter()
        .find(|a| (!args.ipv4 || a.is_ipv4()) && (!args.ipv6 || a.is_ipv6()))
        .ok_or_else(|| fail(Outcome::Error, format!("{}: no address", args.server)))
}

fn server_name(sni: &str) -> Result<ServerName<'static>, Failure> {
    ServerName::try_from(sni.to_owned())
        .map_err(|e| fail(Outcome::Error, format!("server name {sni}: {e}")))
}

/// Sends the first flight `hello` (one TLS record holding the ClientHello) the way `args`
/// says.
fn send_hello(
    args: &Args,
    socket: &mut TcpStream,
    hello: &[u8],
    detail: &mut Detail,
) -> Result<(), Failure> {
    let bad_cut = |e: String| fail(Outcome::Error, format!("send-hello: {e}"));
    let mut write = |socket: &mut TcpStream, bytes: &[u8]| {
        detail.writes.push(bytes.len());
        socket
            .write_all(bytes)
            .map_err(|e| io_failure("send-hello", &e))
    };
    if let Some(cut) = args.split {
        let at = cut.resolve(hello, &args.sni).map_err(bad_cut)?;
        write(socket, &hello[..at])?;
        std::thread::sleep(args.pause);
        write(socket, &hello[at..])
    } else if let Some(cut) = args.disorder {
        let at = cut.resolve(hello, &args.sni).map_err(bad_cut)?;
        let before = ttl(socket)?;
        set_ttl(socket, 1)?;
        write(socket, &hello[..at])?;
        set_ttl(socket, before)?;
        write(socket, &hello[at..])
    } else if let Some(cut) = args.tlsrec {
        let records = split_record(hello, cut, &args.sni).map_err(bad_cut)?;
        write(socket, &records)
    } else {
        write(socket, hello)
    }
}

/// `hello`'s first record re-framed into two records cut `cut` bytes into its payload (the
/// handshake message); anything after the first record follows unchanged.
fn split_record(hello: &[u8], cut: Cut, sni: &str) -> Result<Vec<u8>, String> {
    if hello.len() < 5 || hello[0] != 0x16 {
        return Err("the first flight is not a TLS handshake record".into());
    }
    let length = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
    let payload = hello
        .get(5..5 + length)
        .ok_or("the first record is longer than the first flight")?;
    let at = cut.resolve(payload, sni)?;
    let mut records = Vec::with_capacity(hello.len() + 5);
    for part in [&payload[..at], &payload[at..]] {
        records.extend_from_slice(&hello[..3]);
        records.extend_from_slice(&(part.len() as u16).to_be_bytes());
        records.extend_from_slice(part);
    }
    records.extend_from_slice(&hello[5 + length..]);
    Ok(records)
}

/// The socket's unicast TTL (IPv4) or hop limit (IPv6).
fn ttl(socket: &TcpStream) -> Result<i32, Failure> {
    let fd = socket.as_fd();
    let ipv6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
    let got = if ipv6 {
        nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::Ipv6Ttl)
    } else {
        nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::Ipv4Ttl)
    };
    got.map_err(|e| fail(Outcome::Error, format!("reading the TTL: {e}")))
}

fn set_ttl(socket: &TcpStream, value: i32) -> Result<(), Failure> {
    let fd = socket.as_fd();
    let ipv6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
    let set = if ipv6 {
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::Ipv6Ttl, &value)
    } else {
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::Ipv4Ttl, &value)
    };
    set.map_err(|e| fail(Outcome::Error, format!("setting the TTL to {value}: {e}")))
}
