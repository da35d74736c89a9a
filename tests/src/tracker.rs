//! A BitTorrent tracker for the lab's server host: HTTP announces and scrapes (BEP 3, 23:
//! compact peer lists) and the UDP tracker protocol (BEP 15) on the same port. It remembers
//! who announced each info hash and hands out the others.
//!
//! Like the lab's HTTP server, its sockets are opened inside the server's namespace and
//! served from threads of this process; it stops when dropped.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use classifier_user::netns;

use crate::wire::{UDP_TRACKER_MAGIC, bencode};

const POLL: Duration = Duration::from_millis(20);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Seconds clients are told to wait before announcing again: longer than any capture.
const INTERVAL: i64 = 1800;
const MAX_REQUEST: usize = 8 * 1024;

/// One announcing peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Peer {
    addr: SocketAddrV4,
    seeder: bool,
}

type Swarms = Arc<Mutex<BTreeMap<[u8; 20], Vec<Peer>>>>;

/// A running tracker.
pub struct Tracker {
    swarms: Swarms,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Tracker {
    /// Serves HTTP (TCP) and BEP 15 (UDP) on `addr` inside namespace `netns_name`.
    pub fn start(netns_name: &str, addr: SocketAddrV4) -> anyhow::Result<Self> {
        let (tcp, udp) = netns::run_in(netns_name, move || {
            let tcp = TcpListener::bind(addr).with_context(|| format!("tracker on tcp {addr}"))?;
            tcp.set_nonblocking(true)?;
            let udp = UdpSocket::bind(addr).with_context(|| format!("tracker on udp {addr}"))?;
            udp.set_read_timeout(Some(POLL * 5))?;
            Ok((tcp, udp))
        })?;
        let swarms: Swarms = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = vec![
            {
                let (swarms, stop) = (Arc::clone(&swarms), Arc::clone(&stop));
                std::thread::spawn(move || serve_http(&tcp, &swarms, &stop))
            },
            {
                let (swarms, stop) = (Arc::clone(&swarms), Arc::clone(&stop));
                std::thread::spawn(move || serve_udp(&udp, &swarms, &stop))
            },
        ];
        Ok(Self {
            swarms,
            stop,
            threads,
        })
    }

    /// Waits until some swarm has a seeder; false after `timeout`.
    pub fn wait_for_seeder(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let seeded = self
                .swarms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .any(|peers| peers.iter().any(|p| p.seeder));
            if seeded {
                return true;
            }
            std::thread::sleep(POLL);
        }
        false
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Records an announce and returns the other peers of the swarm (at most `want`) with the
/// swarm's seeder and leecher counts.
fn announce(
    swarms: &Swarms,
    info_hash: [u8; 20],
    peer: Peer,
    stopped: bool,
    want: usize,
) -> (Vec<SocketAddrV4>, usize, usize) {
    let mut swarms = swarms.lock().unwrap_or_else(|e| e.into_inner());
    let swarm = swarms.entry(info_hash).or_default();
    swarm.retain(|p| p.addr != peer.addr);
    let others: Vec<SocketAddrV4> = swarm.iter().map(|p| p.addr).take(want).collect();
    if !stopped {
        swarm.push(peer);
    }
    let seeders = swarm.iter().filter(|p| p.seeder).count();
    (others, seeders, swarm.len() - seeders)
}

fn scrape(swarms: &Swarms, info_hash: &[u8; 20]) -> (usize, usize) {
    let swarms = swarms.lock().unwrap_or_else(|e| e.into_inner());
    let swarm = swarms.get(info_hash).map(Vec::as_slice).unwrap_or_default();
    let seeders = swarm.iter().filter(|p| p.seeder).count();
    (seeders, swarm.len() - seeders)
}

fn serve_http(listener: &TcpListener, swarms: &Swarms, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let _ = answer_http(stream, peer, swarms);
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn answer_http(mut stream: TcpStream, peer: SocketAddr, swarms: &Swarms) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let body = http_response_body(&request, peer, swarms);
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: \
         close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend(body);
    stream.write_all(&response)?;
    stream.flush()
}

/// The bencoded answer to an HTTP announce or scrape.
fn http_response_body(request: &[u8], peer: SocketAddr, swarms: &Swarms) -> Vec<u8> {
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &b""[..]),
    };
    let params: Vec<(&[u8], Vec<u8>)> = query
        .split(|&b| b == b'&')
        .filter_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            Some((&pair[..eq], percent_decode(&pair[eq + 1..])))
        })
        .collect();
    let param = |name: &[u8]| {
        params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_slice())
    };
    let number =
        |name: &[u8]| -> Option<u64> { std::str::from_utf8(param(name)?).ok()?.parse().ok() };
    let info_hash: Option<[u8; 20]> = param(b"info_hash").and_then(|h| h.try_into().ok());
    let mut out = Vec::new();
    let (Some(info_hash), IpAddr::V4(ip)) = (info_hash, peer.ip()) else {
        out.extend(b"d14:failure reason");
        bencode::bytes(&mut out, b"need an info_hash, over IPv4");
        out.push(b'e');
        return out;
    };
    if path == b"/scrape" {
        let (seeders, leechers) = scrape(swarms, &info_hash);
        out.extend(b"d5:filesd");
        bencode::bytes(&mut out, &info_hash);
        out.extend(b"d8:complete");
        bencode::int(&mut out, seeders as i64);
        out.extend(b"10:downloaded");
        bencode::int(&mut out, 0);
        out.extend(b"10:incomplete");
        bencode::int(&mut out, leechers as i64);
        out.extend(b"eee");
        return out;
    }
    let port = number(b"port").unwrap_or(0) as u16;
    let want = number(b"numwant").unwrap_or(50) as usize;
    let me = Peer {
        addr: SocketAddrV4::new(ip, port),
        seeder: number(b"left") == Some(0),
    };
    let stopped = param(b"event") == Some(b"stopped");
    let (others, seeders, leechers) = announce(swarms, info_hash, me, stopped, want);
    let compact: Vec<u8> = others
        .iter()
        .flat_map(|a| a.ip().octets().into_iter().chain(a.port().to_be_bytes()))
        .collect();
    // Keys in sorted order, as bencoding requires.
    out.extend(b"d8:complete");
    bencode::int(&mut out, seeders as i64);
    out.extend(b"10:incomplete");
    bencode::int(&mut out, leechers as i64);
    out.extend(b"8:interval");
    bencode::int(&mut out, INTERVAL);
    out.extend(b"5:peers");
    bencode::bytes(&mut out, &compact);
    out.push(b'e');
    out
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        match input[i] {
            b'%' if i + 2 < input.len() => {
                if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_SCRAPE: u32 = 2;
const ACTION_ERROR: u32 = 3;

fn serve_udp(socket: &UdpSocket, swarms: &Swarms, stop: &AtomicBool) {
    // Connection ids handed out; a real tracker expires them after two minutes.
    let mut connections: Vec<u64> = Vec::new();
    let mut next_id: u64 = 0x5ca1_ab1e_0000_0001;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Some(reply) = udp_reply(&buf[..n], from, swarms, &mut connections, &mut next_id) {
            let _ = socket.send_to(&reply, from);
        }
    }
}

fn udp_reply(
    request: &[u8],
    from: SocketAddr,
    swarms: &Swarms,
    connections: &mut Vec<u64>,
    next_id: &mut u64,
) -> Option<Vec<u8>> {
    let u32_at = |i: usize| -> Option<u32> {
        Some(u32::from_be_bytes(request.get(i..i + 4)?.try_into().ok()?))
    };
    let u64_at = |i: usize| -> Option<u64> {
        Some(u64::from_be_bytes(request.get(i..i + 8)?.try_into().ok()?))
    };
    let connection_id = u64_at(0)?;
    let action = u32_at(8)?;
    let transaction = u32_at(12)?;
    let mut reply = Vec::new();
    let error = |message: &str| {
        let mut reply = ACTION_ERROR.to_be_bytes().to_vec();
        reply.extend(transaction.to_be_bytes());
        reply.extend(message.as_bytes());
        Some(reply)
    };
    if action == ACTION_CONNECT {
        if connection_id != UDP_TRACKER_MAGIC {
            return None;
        }
        let id = *next_id;
        *next_id += 1;
        connections.push(id);
        reply.extend(ACTION_CONNECT.to_be_bytes());
        reply.extend(transaction.to_be_bytes());
        reply.extend(id.to_be_bytes());
        return Some(reply);
    }
    if !connections.contains(&connection_id) {
        return error("unknown connection id");
    }
    let IpAddr::V4(ip) = from.ip() else {
        return error("IPv4 only");
    };
    match action {
        ACTION_ANNOUNCE if request.len() >= 98 => {
            let info_hash: [u8; 20] = request[16..36].try_into().ok()?;
            let left = u64_at(64)?;
            let event = u32_at(80)?;
            let want = u32_at(92)? as i32;
            let port = u16::from_be_bytes([request[96], request[97]]);
            let me = Peer {
                addr: SocketAddrV4::new(ip, port),
                seeder: left == 0,
            };
            let want = if want < 0 { 50 } else { want as usize };
            let (others, seeders, leechers) = announce(swarms, info_hash, me, event == 3, want);
            reply.extend(ACTION_ANNOUNCE.to_be_bytes());
            reply.extend(transaction.to_be_bytes());
            reply.extend((INTERVAL as u32).to_be_bytes());
            reply.extend((leechers as u32).to_be_bytes());
            reply.extend((seeders as u32).to_be_bytes());
            for peer in others {
                reply.extend(peer.ip().octets());
                reply.extend(peer.port().to_be_bytes());
            }
            Some(reply)
        }
        ACTION_SCRAPE => {
            reply.extend(ACTION_SCRAPE.to_be_bytes());
            reply.extend(transaction.to_be_bytes());
            for hash in request[16..].chunks_exact(20) {
                let (seeders, leechers) = scrape(swarms, hash.try_into().ok()?);
                reply.extend((seeders as u32).to_be_bytes());
                reply.extend(0u32.to_be_bytes());
                reply.extend((leechers as u32).to_be_bytes());
            }
            Some(reply)
        }
        _ => error("unsupported request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], port))
    }

    #[test]
    fn http_announce_returns_the_other_peers_compact() {
        let swarms = Swarms::default();
        let hash = "%a1mD%0B%2B%1B%CDK%CD%9B%ED%A6B%BDN%DFP%F7%F3%23";
        let seed =
            format!("GET /announce?info_hash={hash}&port=6881&left=0&compact=1 HTTP/1.1\r\n\r\n");
        let body = http_response_body(seed.as_bytes(), peer(20, 1), &swarms);
        assert_eq!(
            body,
            b"d8:completei1e10:incompletei0e8:intervali1800e5:peers0:e"
        );
        let leech = format!(
            "GET /announce?info_hash={hash}&port=6882&left=5&event=started HTTP/1.1\r\n\r\n"
        );
        let body = http_response_body(leech.as_bytes(), peer(10, 1), &swarms);
        assert_eq!(
            body,
            b"d8:completei1e10:incompletei1e8:intervali1800e5:peers6:\xc0\x00\x02\x14\x1a\xe1e"
        );
        let scrape = format!("GET /scrape?info_hash={hash} HTTP/1.1\r\n\r\n");
        let body = http_response_body(scrape.as_bytes(), peer(10, 1), &swarms);
        assert!(body.starts_with(b"d5:filesd20:"), "{body:?}");
        assert!(
            http_response_body(b"GET /announce HTTP/1.1\r\n\r\n", peer(10, 1), &swarms)
                .starts_with(b"d14:failure reason")
        );
    }

    #[test]
    fn udp_connect_then_announce() {
        let swarms = Swarms::default();
        let (mut connections, mut next) = (Vec::new(), 7u64);
        let mut connect = UDP_TRACKER_MAGIC.to_be_bytes().to_vec();
        connect.extend(0u32.to_be_bytes());
        connect.extend(99u32.to_be_bytes());
        let reply = udp_reply(&connect, peer(10, 1), &swarms, &mut connections, &mut next).unwrap();
        assert_eq!(reply[..8], [0, 0, 0, 0, 0, 0, 0, 99]);
        let id = u64::from_be_bytes(reply[8..16].try_into().unwrap());
        let mut announce = id.to_be_bytes().to_vec();
        announce.extend(1u32.to_be_bytes());
        announce.extend(5u32.to_be_bytes());
        announce.extend([7u8; 40]); // info hash, peer id
        announce.extend([0u8; 24]); // downloaded, left, uploaded
        announce.extend([0u8; 16]); // event, ip, key, num_want
        announce.extend(6881u16.to_be_bytes());
        let reply =
            udp_reply(&announce, peer(10, 1), &swarms, &mut connections, &mut next).unwrap();
        assert_eq!(reply[..8], [0, 0, 0, 1, 0, 0, 0, 5]);
        assert_eq!(reply.len(), 20, "alone in the swarm");
        let mut stranger = announce.clone();
        stranger[..8].copy_from_slice(&1u64.to_be_bytes());
        let reply =
            udp_reply(&stranger, peer(11, 1), &swarms, &mut connections, &mut next).unwrap();
        assert_eq!(reply[..4], [0, 0, 0, 3]);
    }

    #[test]
    fn percent_decoding_keeps_raw_bytes() {
        assert_eq!(
            percent_decode(b"%A1m%2b+x%"),
            vec![0xa1, b'm', 0x2b, b' ', b'x', b'%']
        );
    }
}
