//! A minimal HTTP/1.1 server for the lab's server host: `GET /bytes/N` answers with exactly
//! N bytes of body, so tests know what must have crossed the wire; `GET /bytes/N?rate=R`
//! sends them at R bytes a second, so a download is still crossing the gateway seconds
//! later (a client-side limit does not do that: the server fills the client's socket
//! buffers at full speed and the client only reads them slowly).
//!
//! It runs on threads that entered the server's network namespace; the rest of the process
//! stays where it was.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use classifier_user::netns;

/// Largest body the server agrees to send: bounds what a test or demo can ask for.
pub const MAX_BODY: u64 = 1 << 30;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_POLL: Duration = Duration::from_millis(10);

/// The response head for an N-byte body.
pub fn response_head(body_len: u64) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: \
         {body_len}\r\nConnection: close\r\n\r\n"
    )
}

/// A running server; stops when dropped.
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    accept_loop: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `addrs` inside network namespace `netns_name`.
    pub fn start(netns_name: &str, addrs: &[SocketAddr]) -> anyhow::Result<Self> {
        let addrs = addrs.to_vec();
        let listeners = netns::run_in(netns_name, move || {
            addrs
                .iter()
                .map(|addr| {
                    let listener =
                        TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
                    listener.set_nonblocking(true)?;
                    Ok(listener)
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let accept_loop = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || accept_until_stopped(&listeners, &stop))
        };
        Ok(Self {
            stop,
            accept_loop: Some(accept_loop),
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.accept_loop.take() {
            let _ = handle.join();
        }
    }
}

fn accept_until_stopped(listeners: &[TcpListener], stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut accepted = false;
        for listener in listeners {
            if let Ok((stream, _)) = listener.accept() {
                accepted = true;
                std::thread::spawn(move || {
                    let _ = serve(stream);
                });
            }
        }
        if !accepted {
            std::thread::sleep(ACCEPT_POLL);
        }
    }
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the header lines up to the blank one.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut stream = stream;
    match parse_request(&request_line) {
        Some(request) => {
            stream.write_all(response_head(request.len).as_bytes())?;
            write_body(&mut stream, request.len, request.rate)?;
        }
        None => stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
    }
    stream.flush()
}

/// What a client asked for.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    /// Body bytes, at most [`MAX_BODY`].
    len: u64,
    /// Bytes a second, when paced.
    rate: Option<u64>,
}

/// `GET /bytes/N HTTP/1.1` or `GET /bytes/N?rate=R HTTP/1.1`, N within [`MAX_BODY`], R > 0.
fn parse_request(request_line: &str) -> Option<Request> {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next()?, parts.next()?);
    let path = path.strip_prefix("/bytes/")?;
    let (len, rate) = match path.split_once("?rate=") {
        Some((len, rate)) => (len, Some(rate.parse().ok().filter(|&r: &u64| r > 0)?)),
        None => (path, None),
    };
    let len: u64 = len.parse().ok()?;
    (method == "GET" && len <= MAX_BODY).then_some(Request { len, rate })
}

/// Sends `remaining` bytes, at `rate` bytes a second if given: each chunk leaves no earlier
/// than its share of the rate allows since the start.
fn write_body(
    stream: &mut TcpStream,
    mut remaining: u64,
    rate: Option<u64>,
) -> std::io::Result<()> {
    let chunk = [b'x'; 16 * 1024];
    let started = Instant::now();
    let mut sent = 0u64;
    while remaining > 0 {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let n = remaining.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n])?;
        remaining -= n as u64;
        sent += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bounded_byte_requests_are_served() {
        let len = |request_line| parse_request(request_line).map(|r| r.len);
        assert_eq!(len("GET /bytes/1000 HTTP/1.1\r\n"), Some(1000));
        assert_eq!(len("GET /bytes/0 HTTP/1.1\r\n"), Some(0));
        assert_eq!(len("POST /bytes/10 HTTP/1.1\r\n"), None);
        assert_eq!(len("GET /bytes/2000000000 HTTP/1.1\r\n"), None);
        assert_eq!(len("GET /other HTTP/1.1\r\n"), None);
        assert_eq!(len(""), None);
    }

    #[test]
    fn a_rate_paces_the_body() {
        assert_eq!(
            parse_request("GET /bytes/1000?rate=250000 HTTP/1.1\r\n"),
            Some(Request {
                len: 1000,
                rate: Some(250_000)
            })
        );
        assert_eq!(
            parse_request("GET /bytes/1000 HTTP/1.1\r\n").unwrap().rate,
            None
        );
        assert_eq!(parse_request("GET /bytes/1000?rate=0 HTTP/1.1\r\n"), None);
        assert_eq!(parse_request("GET /bytes/1000?rate=x HTTP/1.1\r\n"), None);
    }
}
