//! One LAN host must never get its colleagues' traffic classified as BitTorrent (and
//! blocked at work): the peer cache is per client, asked only of flows whose own bytes name
//! nothing, never for well-known service ports; while the host's own BitTorrent flows are
//! still caught. Through the real programs (BPF_PROG_TEST_RUN) and the daemon's handling of
//! tracker replies, with the council policy in force at work.

use classifier_common::stats::Stat;
use classifier_tests::{
    frames::Way,
    harness::{Harness, MONDAY_AT_WORK},
    privileged,
    segments::{Conn, frames},
};

/// Hosts, by the last byte of their address: the attacker, a colleague, the site's web
/// server, the attacker's "tracker", the site's DNS resolver.
const ATTACKER: u8 = 10;
const COLLEAGUE: u8 = 11;
const WEB_SERVER: u8 = 20;
const TRACKER: u8 = 30;
const RESOLVER: u8 = 53;

/// Random-looking bytes, as a BitTorrent encryption (MSE) exchange starts.
fn mse_bytes() -> Vec<u8> {
    (0..96u32)
        .map(|i| (i.wrapping_mul(73).wrapping_add(19)) as u8)
        .collect()
}

fn bittorrent_handshake() -> Vec<u8> {
    let mut handshake = b"\x13BitTorrent protocol".to_vec();
    handshake.extend_from_slice(&[0u8; 48]);
    handshake
}

fn tls_hello(name: &str) -> Vec<u8> {
    classifier_common::testing::Hello::new().sni(name).bytes()
}

/// An HTTP tracker's reply listing `peers` (compact IPv4 form, BEP 23).
fn tracker_reply(peers: &[([u8; 4], u16)]) -> Vec<u8> {
    let mut compact = Vec::new();
    for (addr, port) in peers {
        compact.extend_from_slice(addr);
        compact.extend_from_slice(&port.to_be_bytes());
    }
    let mut body = format!("d8:intervali1800e5:peers{}:", compact.len()).into_bytes();
    body.extend_from_slice(&compact);
    body.push(b'e');
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(&body);
    reply
}

/// A TCP connection's handshake and the client's first bytes.
fn connection(conn: &Conn, payload: &[u8]) -> Vec<(Way, Vec<u8>)> {
    let mut all = conn.handshake();
    all.extend(frames(&[conn.data(0, payload)]));
    all
}

/// (category, method, verdict) of a flow.
fn class_of(harness: &Harness, key: &classifier_common::flow::FlowKey) -> (String, String, String) {
    let record = harness.record(key);
    (record.category, record.method, record.verdict)
}

fn expect(
    harness: &Harness,
    what: &str,
    key: &classifier_common::flow::FlowKey,
    want: (&str, &str, &str),
) {
    let got = class_of(harness, key);
    assert_eq!(
        (got.0.as_str(), got.1.as_str(), got.2.as_str()),
        want,
        "{what}: (category, method, verdict)"
    );
}

#[test]
fn one_host_cannot_make_its_colleagues_flows_bittorrent() {
    if !privileged("one_host_cannot_make_its_colleagues_flows_bittorrent") {
        return;
    }
    let mut harness = Harness::council("working", MONDAY_AT_WORK);
    let web = |client: u8, port: u16, server_port: u16| {
        Conn::new(false, port, server_port).between(client, WEB_SERVER)
    };

    // The attacker's BitTorrent handshake to the web server's HTTPS port: its own flow is
    // BitTorrent, blocked at work.
    let poison = web(ATTACKER, 50001, 443);
    harness.send(&connection(&poison, &bittorrent_handshake()));
    expect(
        &harness,
        "the attacker's handshake",
        &poison.key(),
        ("file-sharing", "bt-handshake", "block"),
    );

    // A colleague's TLS to the same server and port is named by its SNI...
    let victim = web(COLLEAGUE, 50002, 443);
    harness.send(&connection(&victim, &tls_hello("www.bbc.co.uk")));
    let record = harness.record(&victim.key());
    assert_eq!(record.name.as_deref(), Some("www.bbc.co.uk"));
    expect(
        &harness,
        "the colleague's TLS",
        &victim.key(),
        ("uncategorized", "sni", "allow"),
    );
    // ...and even bytes that name nothing stay unclassified: the port is a service's and
    // the evidence was another host's.
    let opaque = web(COLLEAGUE, 50003, 443);
    harness.send(&connection(&opaque, &mse_bytes()));
    expect(
        &harness,
        "the colleague's unnamed bytes",
        &opaque.key(),
        ("uncategorized", "none", "allow"),
    );

    // A "tracker" the attacker runs on port 80 names the web server as a peer, on its HTTPS
    // port and on a BitTorrent-like one.
    let announce = Conn::new(false, 50004, 80).between(ATTACKER, TRACKER);
    let mut tracker = connection(
        &announce,
        b"GET /announce?info_hash=%12%34&peer_id=x&port=6881 HTTP/1.1\r\nHost: tracker.example\r\n\r\n",
    );
    let server = [203, 0, 113, WEB_SERVER];
    tracker.extend(frames(&[announce.reply(
        0,
        &tracker_reply(&[(server, 443), (server, 51413), (server, 8080)]),
    )]));
    harness.send(&tracker);
    expect(
        &harness,
        "the announce",
        &announce.key(),
        ("file-sharing", "bt-tracker", "block"),
    );
    assert_eq!(harness.stat(Stat::TrackerRepliesToDaemon), 1);

    // The colleague's flows to the listed peers: not BitTorrent, whatever the port.
    for (port, server_port) in [(50005, 51413), (50006, 443), (50007, 8080)] {
        let flow = web(COLLEAGUE, port, server_port);
        harness.send(&connection(&flow, &mse_bytes()));
        expect(
            &harness,
            &format!("the colleague's unnamed flow to the listed peer's port {server_port}"),
            &flow.key(),
            ("uncategorized", "none", "allow"),
        );
    }

    // The attacker's own encrypted flow to a peer its tracker listed is still caught...
    let own = web(ATTACKER, 50008, 51413);
    harness.send(&connection(&own, &mse_bytes()));
    expect(
        &harness,
        "the attacker's own MSE flow",
        &own.key(),
        ("file-sharing", "peer-cache", "block"),
    );
    // ...but not on a well-known service port (8080 is an HTTP alternate), and a name wins.
    let alternate = web(ATTACKER, 50009, 8080);
    harness.send(&connection(&alternate, &mse_bytes()));
    expect(
        &harness,
        "the attacker's unnamed flow to 8080",
        &alternate.key(),
        ("uncategorized", "none", "allow"),
    );
    let named = web(ATTACKER, 50010, 51413);
    harness.send(&connection(&named, &tls_hello("www.bbc.co.uk")));
    expect(
        &harness,
        "a named flow to a cached peer",
        &named.key(),
        ("uncategorized", "sni", "allow"),
    );
    assert!(harness.stat(Stat::PeerCacheDeclined) > 0);
}

#[test]
fn a_dht_datagram_to_the_resolver_blocks_no_one_s_dns() {
    if !privileged("a_dht_datagram_to_the_resolver_blocks_no_one_s_dns") {
        return;
    }
    let mut harness = Harness::council("working", MONDAY_AT_WORK);
    let resolver = |client: u8, port: u16| Conn::new(false, port, 53).between(client, RESOLVER);
    // The attacker's DHT query to the resolver's port 53: its own flow is DHT, blocked.
    let dht = resolver(ATTACKER, 51001);
    harness.send(&[(
        Way::Up,
        dht.datagram(
            Way::Up,
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        ),
    )]);
    expect(
        &harness,
        "the attacker's DHT datagram",
        &dht.udp_key(),
        ("file-sharing", "bt-dht", "block"),
    );
    // DNS to the same resolver, from a colleague and from the attacker itself: DNS.
    let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x03bbc\x02co\x02uk\x00\x00\x01\x00\x01";
    for (client, port) in [(COLLEAGUE, 51002), (ATTACKER, 51003)] {
        let dns = resolver(client, port);
        harness.send(&[(Way::Up, dns.datagram(Way::Up, query))]);
        expect(
            &harness,
            "a DNS query to the resolver",
            &dns.udp_key(),
            ("uncategorized", "none", "allow"),
        );
    }
}
