//! IPFIX (RFC 7011) for flow records: the messages an investigation export writes to a
//! file (RFC 5655: messages one after another) and the live export sends to a collector
//! (nfdump's nfcapd, GoFlow2, ElastiFlow) over UDP.
//!
//! Each flow becomes two records, client → server (the upload) and server → client (the
//! download), the unidirectional form every collector counts right. Standard information
//! elements (IANA registry) carry addresses, ports, protocol, times, counts and the end
//! reason; the server name, category, application, classification method, verdict and
//! group are enterprise-specific elements under [`ENTERPRISE`], listed in
//! docs/ipfix.md. Every message carries its templates, as RFC 7011 §8.4 asks of UDP
//! exporters (a collector that restarts understands the next message).
//!
//! Written here rather than taken from a crate: the Rust IPFIX crates parse (collectors);
//! none is an exporter.

use bytes::{BufMut as _, BytesMut};
use jiff::Timestamp;

use crate::{flows::FlowRecord, store::EndReason};

/// IPFIX's version number.
const VERSION: u16 = 10;
const TEMPLATE_SET_ID: u16 = 2;
const TEMPLATE_V4: u16 = 256;
const TEMPLATE_V6: u16 = 257;
/// The observation domain the gateway exports as.
pub const OBSERVATION_DOMAIN: u32 = 1;
/// The largest message the live export sends (an Ethernet MTU less IP and UDP headers).
const MAX_MESSAGE: usize = 1400;

/// The Private Enterprise Number of the enterprise-specific elements. 32473 is the number
/// IANA reserves for documentation and examples (RFC 5612); a site whose collector needs a
/// registered number maps these fields there.
pub const ENTERPRISE: u32 = 32473;

/// Variable-length field, as a template says it (RFC 7011 §7).
const VARIABLE: u16 = 65535;

/// Standard information elements (IANA "IPFIX Information Elements").
mod ie {
    pub const OCTET_DELTA_COUNT: u16 = 1;
    pub const PACKET_DELTA_COUNT: u16 = 2;
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    pub const FLOW_END_REASON: u16 = 136;
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    /// 0: ingress (client → server), 1: egress (server → client), seen from the LAN.
    pub const FLOW_DIRECTION: u16 = 61;
}

/// Enterprise-specific elements under [`ENTERPRISE`] (all strings, variable length).
pub mod enterprise_ie {
    pub const SERVER_NAME: u16 = 1;
    pub const CATEGORY: u16 = 2;
    pub const APPLICATION: u16 = 3;
    pub const METHOD: u16 = 4;
    pub const VERDICT: u16 = 5;
    pub const GROUP: u16 = 6;
}

/// (element id, length, enterprise) of one template field.
type Field = (u16, u16, Option<u32>);

fn template_fields(v6: bool) -> Vec<Field> {
    let address = if v6 { 16 } else { 4 };
    let (source, destination) = if v6 {
        (ie::SOURCE_IPV6_ADDRESS, ie::DESTINATION_IPV6_ADDRESS)
    } else {
        (ie::SOURCE_IPV4_ADDRESS, ie::DESTINATION_IPV4_ADDRESS)
    };
    let mut fields = vec![
        (ie::FLOW_START_MILLISECONDS, 8, None),
        (ie::FLOW_END_MILLISECONDS, 8, None),
        (source, address, None),
        (destination, address, None),
        (ie::SOURCE_TRANSPORT_PORT, 2, None),
        (ie::DESTINATION_TRANSPORT_PORT, 2, None),
        (ie::PROTOCOL_IDENTIFIER, 1, None),
        (ie::FLOW_DIRECTION, 1, None),
        (ie::FLOW_END_REASON, 1, None),
        (ie::OCTET_DELTA_COUNT, 8, None),
        (ie::PACKET_DELTA_COUNT, 8, None),
    ];
    for element in [
        enterprise_ie::SERVER_NAME,
        enterprise_ie::CATEGORY,
        enterprise_ie::APPLICATION,
        enterprise_ie::METHOD,
        enterprise_ie::VERDICT,
        enterprise_ie::GROUP,
    ] {
        fields.push((element, VARIABLE, Some(ENTERPRISE)));
    }
    fields
}

/// IPFIX's flowEndReason for why a flow ended.
fn end_reason_code(reason: Option<EndReason>) -> u8 {
    match reason {
        Some(EndReason::Idle) => 1,
        None => 2,
        Some(EndReason::Fin | EndReason::Rst) => 3,
        Some(EndReason::Stopped) => 4,
        Some(EndReason::Evicted) => 5,
    }
}

fn protocol_number(name: &str) -> u8 {
    match name {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "ipv6-icmp" => 58,
        other => other.parse().unwrap_or(0),
    }
}

/// Keeps the sequence number across messages (RFC 7011 §3.1: data records sent before).
pub struct Encoder {
    domain: u32,
    sequence: u32,
}

impl Encoder {
    pub fn new(domain: u32) -> Self {
        Self {
            domain,
            sequence: 0,
        }
    }

    /// The messages for `flows`, each at most [`MAX_MESSAGE`] bytes (unless one flow alone
    /// is larger).
    pub fn messages(&mut self, flows: &[FlowRecord], export_time: Timestamp) -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        let mut batch: Vec<FlowRecord> = Vec::new();
        for flow in flows {
            batch.push(flow.clone());
            let candidate = self.peek_len(&batch);
            if candidate > MAX_MESSAGE && batch.len() > 1 {
                let last = batch.pop().expect("more than one");
                messages.push(self.message(&batch, export_time));
                batch = vec![last];
            }
        }
        if !batch.is_empty() {
            messages.push(self.message(&batch, export_time));
        }
        messages
    }

    fn peek_len(&self, flows: &[FlowRecord]) -> usize {
        Encoder {
            domain: self.domain,
            sequence: self.sequence,
        }
        .message(flows, Timestamp::UNIX_EPOCH)
        .len()
    }

    /// One message: both templates, then the flows' records in a data set per family.
    pub fn message(&mut self, flows: &[FlowRecord], export_time: Timestamp) -> Vec<u8> {
        let mut body = BytesMut::new();
        put_template_set(&mut body);
        let mut records = 0u32;
        for (template, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
            let family: Vec<&FlowRecord> =
                flows.iter().filter(|f| f.client.is_ipv6() == v6).collect();
            if family.is_empty() {
                continue;
            }
            let mut set = BytesMut::new();
            for flow in family {
                put_record(&mut set, flow, Direction::Upload);
                put_record(&mut set, flow, Direction::Download);
                records += 2;
            }
            body.put_u16(template);
            body.put_u16(4 + set.len() as u16);
            body.extend_from_slice(&set);
        }
        let mut message = BytesMut::with_capacity(16 + body.len());
        message.put_u16(VERSION);
        message.put_u16((16 + body.len()) as u16);
        message.put_u32(export_time.as_second().clamp(0, u32::MAX as i64) as u32);
        message.put_u32(self.sequence);
        message.put_u32(self.domain);
        message.extend_from_slice(&body);
        self.sequence = self.sequence.wrapping_add(records);
        message.to_vec()
    }
}

fn put_template_set(out: &mut BytesMut) {
    let mut set = BytesMut::new();
    for (id, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
        let fields = template_fields(v6);
        set.put_u16(id);
        set.put_u16(fields.len() as u16);
        for (element, length, enterprise) in fields {
            match enterprise {
                Some(number) => {
                    // The enterprise bit, then the enterprise number after the length.
                    set.put_u16(element | 0x8000);
                    set.put_u16(length);
                    set.put_u32(number);
                }
                None => {
                    set.put_u16(element);
                    set.put_u16(length);
                }
            }
        }
    }
    out.put_u16(TEMPLATE_SET_ID);
    out.put_u16(4 + set.len() as u16);
    out.extend_from_slice(&set);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Upload,
    Download,
}

fn put_record(out: &mut BytesMut, flow: &FlowRecord, direction: Direction) {
    let (source, destination, counters) = match direction {
        Direction::Upload => (flow.client, flow.server, flow.upload),
        Direction::Download => (flow.server, flow.client, flow.download),
    };
    out.put_u64(flow.first_seen.as_millisecond().max(0) as u64);
    out.put_u64(flow.last_seen.as_millisecond().max(0) as u64);
    put_address(out, source.ip());
    put_address(out, destination.ip());
    out.put_u16(source.port());
    out.put_u16(destination.port());
    out.put_u8(protocol_number(&flow.protocol));
    out.put_u8(u8::from(direction == Direction::Download));
    out.put_u8(end_reason_code(flow.ended));
    out.put_u64(counters.bytes);
    out.put_u64(counters.packets);
    for text in [
        flow.name.as_deref().unwrap_or(""),
        &flow.category,
        &flow.app,
        &flow.method,
        &flow.verdict,
        &flow.group,
    ] {
        put_variable(out, text.as_bytes());
    }
}

fn put_address(out: &mut BytesMut, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        std::net::IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
}

/// A variable-length field: one length byte below 255, else 255 and a two-byte length
/// (RFC 7011 §7). Names are at most 255 bytes anyway; longer text is cut.
fn put_variable(out: &mut BytesMut, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(1024)];
    if bytes.len() < 255 {
        out.put_u8(bytes.len() as u8);
    } else {
        out.put_u8(255);
        out.put_u16(bytes.len() as u16);
    }
    out.extend_from_slice(bytes);
}

/// The live export: ended flows sent to a collector over UDP as they are recorded.
pub struct LiveExport {
    socket: std::net::UdpSocket,
    collector: std::net::SocketAddr,
    encoder: Encoder,
}

impl LiveExport {
    pub fn connect(collector: std::net::SocketAddr) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let bind: std::net::SocketAddr = if collector.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let socket = std::net::UdpSocket::bind(bind).context("opening the IPFIX socket")?;
        Ok(Self {
            socket,
            collector,
            encoder: Encoder::new(OBSERVATION_DOMAIN),
        })
    }

    pub fn collector(&self) -> std::net::SocketAddr {
        self.collector
    }

    /// Sends `flows`; returns how many messages went out.
    pub fn send(&mut self, flows: &[FlowRecord]) -> std::io::Result<usize> {
        let messages = self.encoder.messages(flows, Timestamp::now());
        for message in &messages {
            self.socket.send_to(message, self.collector)?;
        }
        Ok(messages.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::flow;

    #[test]
    fn a_message_has_the_layout_rfc_7011_gives_it() {
        let mut encoder = Encoder::new(7);
        let flows = [
            flow(
                "192.0.2.10:40000",
                "2026-11-23T10:00:00Z",
                "streaming-video",
                9000,
            ),
            flow(
                "[2001:db8:1::10]:40001",
                "2026-11-23T10:01:00Z",
                "gambling",
                7,
            ),
        ];
        let message = encoder.message(&flows, "2026-11-23T10:05:00Z".parse().unwrap());
        let u16_at = |at: usize| u16::from_be_bytes([message[at], message[at + 1]]);
        let u32_at = |at: usize| u32::from_be_bytes(message[at..at + 4].try_into().unwrap());
        assert_eq!(u16_at(0), 10);
        assert_eq!(u16_at(2) as usize, message.len());
        assert_eq!(u32_at(8), 0, "no records before the first message");
        assert_eq!(u32_at(12), 7);
        // Sets: the templates, then one data set per family, lengths adding up.
        let mut at = 16;
        let mut sets = Vec::new();
        while at < message.len() {
            sets.push(u16_at(at));
            at += u16_at(at + 2) as usize;
        }
        assert_eq!(at, message.len());
        assert_eq!(sets, [TEMPLATE_SET_ID, TEMPLATE_V4, TEMPLATE_V6]);
        // The next message counts the four records of this one.
        let next = encoder.message(&flows[..1], Timestamp::UNIX_EPOCH);
        assert_eq!(u32::from_be_bytes(next[8..12].try_into().unwrap()), 4);
    }

    #[test]
    fn many_flows_are_cut_into_messages_that_fit_a_datagram() {
        let mut encoder = Encoder::new(1);
        let flows: Vec<FlowRecord> = (0..20)
            .map(|i| {
                flow(
                    &format!("192.0.2.10:{}", 40000 + i),
                    "2026-11-23T10:00:00Z",
                    "gambling",
                    1,
                )
            })
            .collect();
        let messages = encoder.messages(&flows, Timestamp::UNIX_EPOCH);
        assert!(messages.len() > 1);
        assert!(messages.iter().all(|m| m.len() <= MAX_MESSAGE));
    }
}
