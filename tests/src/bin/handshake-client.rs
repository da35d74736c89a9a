//! `handshake-client`: new TLS connections one after another from one process, for the
//! throughput benchmark's connections-per-second figure. Each connection is a new TCP
//! connection and a full handshake (no session resumption) with the given SNI, then one
//! small HTTP fetch; the rate runs from the end of the first connection to the end of the
//! last, so process start-up is not in it (curl started once per fetch, or once for all with
//! its own per-URL overhead, measured the client more than the gateway).
//!
//! Prints one JSON line: `{"connections": N, "seconds": S, "per_second": R}`, or
//! `{"error": "..."}` with exit status 1 when a connection fails.
//!
//! ```sh
//! ip netns exec <client ns> handshake-client 203.0.113.10:443 --sni www.youtube.com --count 200
//! ```

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use classifier_tests::rustls_client::{http_answer_complete, lab_client_config};
use rustls::{ClientConfig, ClientConnection, client::Resumption, pki_types::ServerName};

#[derive(Debug, Parser)]
#[command(about = "New TLS connections one after another, full handshakes, from one process")]
struct Args {
    /// The server's address and port.
    server: SocketAddr,
    /// The server name the ClientHello carries (and the request's Host).
    #[arg(long)]
    sni: String,
    /// The path fetched on each connection.
    #[arg(long, default_value = "/bytes-16384")]
    path: String,
    /// Connections to make, at most.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Stop after this many seconds even if fewer connections were made.
    #[arg(long, default_value_t = 4.0)]
    budget: f64,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok((connections, seconds)) => println!(
            "{}",
            serde_json::json!({
                "connections": connections,
                "seconds": seconds,
                "per_second": (connections - 1) as f64 / seconds,
            })
        ),
        Err(error) => {
            println!("{}", serde_json::json!({ "error": format!("{error:#}") }));
            std::process::exit(1);
        }
    }
}

/// Connections made and the seconds from the end of the first to the end of the last.
fn run(args: &Args) -> anyhow::Result<(usize, f64)> {
    let config = full_handshakes();
    let name = ServerName::try_from(args.sni.clone()).context("--sni is not a server name")?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.budget);
    let (mut done, mut first, mut last) = (0, Instant::now(), Instant::now());
    while done < args.count && Instant::now() < deadline {
        fetch(args, &config, name.clone())
            .with_context(|| format!("connection {} to {}", done + 1, args.server))?;
        last = Instant::now();
        if done == 0 {
            first = last;
        }
        done += 1;
    }
    if done < 2 {
        bail!("only {done} connection(s) within {} s", args.budget);
    }
    Ok((done, (last - first).as_secs_f64()))
}

/// The lab's client configuration with resumption off: every connection a full handshake.
fn full_handshakes() -> Arc<ClientConfig> {
    let mut config = (*lab_client_config()).clone();
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

/// One connection: handshake, request, the whole answer.
fn fetch(args: &Args, config: &Arc<ClientConfig>, name: ServerName<'static>) -> anyhow::Result<()> {
    let mut socket = TcpStream::connect_timeout(&args.server, Duration::from_secs(5))?;
    socket.set_nodelay(true)?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = ClientConnection::new(config.clone(), name)?;
    let mut stream = rustls::Stream::new(&mut tls, &mut socket);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: handshake-client\r\nConnection: close\r\n\r\n",
        args.path, args.sni
    );
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    let mut buffer = [0; 16 * 1024];
    // An answer without Content-Length (openssl s_server -WWW) ends when the server closes.
    let mut closed = false;
    while !closed && !http_answer_complete(&answer) {
        match stream.read(&mut buffer) {
            Ok(0) => closed = true,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            // A server that closes without close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => closed = true,
            Err(e) => return Err(e.into()),
        }
    }
    if !answer.starts_with(b"HTTP/1.") || !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        bail!(
            "incomplete answer ({} bytes): {:?}",
            answer.len(),
            String::from_utf8_lossy(&answer[..answer.len().min(80)])
        );
    }
    Ok(())
}
