//! IPFIX (RFC 7011) for flow records: the messages an investigation export writes to a
//! file (RFC 5655: messages one after another) and the live export sends to a collector
//! (nfdump's nfcapd, GoFlow2, ElastiFlow) over UDP ([`live`]).
//!
//! Each flow becomes two records, client → server (the upload) and server → client (the
//! download): the unidirectional form every collector counts right (RFC 5103 biflows
//! need reverse elements that nfdump and many others do not read). Everything that has an
//! element in IANA's registry goes there: addresses, ports, protocol, times, counts, end
//! reason, interfaces, MACs, VLAN, forwarding status, the application's name and category
//! and the host the client asked for. Only what IANA has no element for (how the class
//! was found, the exact policy verdict, the client's group, evasion) is enterprise-specific,
//! and only under a Private Enterprise Number the site sets: without one those fields are
//! not exported. docs/ipfix.md lists the templates. Every message carries its templates,
//! as RFC 7011 §8.4 asks of UDP exporters (a collector that restarts understands the next
//! message).
//!
//! Written here rather than taken from a crate: the Rust IPFIX crates parse (collectors);
//! none is an exporter.

pub mod live;

use bytes::{BufMut as _, BytesMut};
use jiff::Timestamp;

use crate::{flows::FlowRecord, store::EndReason};

/// IPFIX's version number.
const VERSION: u16 = 10;
const TEMPLATE_SET_ID: u16 = 2;
const TEMPLATE_V4: u16 = 256;
const TEMPLATE_V6: u16 = 257;
/// The upload record of a flow the gateway translated: [`TEMPLATE_V4`] or [`TEMPLATE_V6`]
/// with the post-NAT source address and port after the IANA fields.
const TEMPLATE_V4_NAT: u16 = 258;
const TEMPLATE_V6_NAT: u16 = 259;
/// The observation domain the gateway exports as.
pub const OBSERVATION_DOMAIN: u32 = 1;
/// The largest message the live export sends (an Ethernet MTU less IP and UDP headers).
const MAX_MESSAGE: usize = 1400;

/// The Private Enterprise Number IANA reserves for documentation and examples (RFC 5612).
/// Never a default: a lab may set it to see the enterprise fields, a site sets its own.
pub const DOCUMENTATION_ENTERPRISE: u32 = 32473;

/// Variable-length field, as a template says it (RFC 7011 §7).
const VARIABLE: u16 = 65535;

/// Standard information elements (IANA "IPFIX Information Elements").
pub mod ie {
    pub const OCTET_DELTA_COUNT: u16 = 1;
    pub const PACKET_DELTA_COUNT: u16 = 2;
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const INGRESS_INTERFACE: u16 = 10;
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    pub const EGRESS_INTERFACE: u16 = 14;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    pub const SOURCE_MAC_ADDRESS: u16 = 56;
    pub const VLAN_ID: u16 = 58;
    /// 0: ingress (client → server), 1: egress (server → client), seen from the LAN.
    pub const FLOW_DIRECTION: u16 = 61;
    pub const DESTINATION_MAC_ADDRESS: u16 = 80;
    /// RFC 7270: status in the top two bits, a reason code below.
    pub const FORWARDING_STATUS: u16 = 89;
    pub const APPLICATION_NAME: u16 = 96;
    pub const FLOW_END_REASON: u16 = 136;
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    /// The source as the gateway's NAT rewrote it, after the observation point (RFC 8158).
    pub const POST_NAT_SOURCE_IPV4_ADDRESS: u16 = 225;
    pub const POST_NAPT_SOURCE_TRANSPORT_PORT: u16 = 227;
    pub const POST_NAT_SOURCE_IPV6_ADDRESS: u16 = 281;
    pub const APPLICATION_CATEGORY_NAME: u16 = 372;
    pub const HTTP_REQUEST_HOST: u16 = 460;
}

/// Enterprise-specific elements, exported under the site's Private Enterprise Number only
/// (all strings, variable length): what IANA has no element for.
pub mod enterprise_ie {
    /// How the class was found: sni, host, quic, bt-handshake, ..., port, none.
    pub const CLASSIFICATION_METHOD: u16 = 1;
    /// The policy's verdict exactly: allow, block, shape, undecided (forwardingStatus
    /// cannot tell allow from shape).
    pub const POLICY_VERDICT: u16 = 2;
    /// The client's group under the policy.
    pub const CLIENT_GROUP: u16 = 3;
    /// What the client did to hide the name, comma-separated (empty: nothing seen).
    pub const EVASION: u16 = 4;
}

/// forwardingStatus values (IANA "Forwarding Status (Value 89)", RFC 7270).
mod forwarding {
    pub const UNKNOWN: u8 = 0;
    pub const FORWARDED: u8 = 64;
    /// Dropped, reason "ACL deny": the policy said no.
    pub const DROPPED_ACL_DENY: u8 = 129;
}

/// Where the gateway observes the flows it exports: the LAN and WAN interfaces (ifIndex
/// in the daemon's namespace; 0 when not known, as in a file exported from the store) and
/// the LAN interface's MAC (zeros when not known).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObservationPoint {
    pub lan_ifindex: u32,
    pub wan_ifindex: u32,
    pub lan_mac: [u8; 6],
}

/// What goes into the templates besides the IANA elements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The site's Private Enterprise Number: with one, the enterprise-specific fields are
    /// exported under it; without, they are not exported at all.
    pub enterprise: Option<u32>,
    pub observation: ObservationPoint,
}

/// (element id, length, enterprise) of one template field.
type Field = (u16, u16, Option<u32>);

fn template_fields(v6: bool, nat: bool, enterprise: Option<u32>) -> Vec<Field> {
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
        (ie::INGRESS_INTERFACE, 4, None),
        (ie::EGRESS_INTERFACE, 4, None),
        (ie::SOURCE_MAC_ADDRESS, 6, None),
        (ie::DESTINATION_MAC_ADDRESS, 6, None),
        (ie::VLAN_ID, 2, None),
        // An unsigned32 in the registry, sent in one byte (reduced-size encoding, RFC 7011
        // §6.2), as RFC 7270 lays the status and reason out.
        (ie::FORWARDING_STATUS, 1, None),
        (ie::APPLICATION_NAME, VARIABLE, None),
        (ie::APPLICATION_CATEGORY_NAME, VARIABLE, None),
        (ie::HTTP_REQUEST_HOST, VARIABLE, None),
    ];
    if nat {
        let post_nat = if v6 {
            ie::POST_NAT_SOURCE_IPV6_ADDRESS
        } else {
            ie::POST_NAT_SOURCE_IPV4_ADDRESS
        };
        fields.push((post_nat, address, None));
        fields.push((ie::POST_NAPT_SOURCE_TRANSPORT_PORT, 2, None));
    }
    if let Some(number) = enterprise {
        for element in [
            enterprise_ie::CLASSIFICATION_METHOD,
            enterprise_ie::POLICY_VERDICT,
            enterprise_ie::CLIENT_GROUP,
            enterprise_ie::EVASION,
        ] {
            fields.push((element, VARIABLE, Some(number)));
        }
    }
    fields
}

/// IPFIX's flowEndReason for why a flow ended; a live flow's report is an active timeout.
fn end_reason_code(reason: Option<EndReason>) -> u8 {
    match reason {
        Some(EndReason::Idle) => 1,
        None => 2,
        Some(EndReason::Fin | EndReason::Rst) => 3,
        Some(EndReason::Stopped) => 4,
        Some(EndReason::Evicted) => 5,
    }
}

/// forwardingStatus for the policy's verdict: a block drops (by the policy, "ACL deny"),
/// allow and shape forward (shaped packets are queued, not dropped), and a flow the
/// datapath has not decided yet is unknown.
fn forwarding_status(verdict: &str) -> u8 {
    match verdict {
        "allow" | "shape" => forwarding::FORWARDED,
        "block" => forwarding::DROPPED_ACL_DENY,
        _ => forwarding::UNKNOWN,
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

/// `aa:bb:cc:dd:ee:ff` as six bytes; zeros for none or anything else.
fn mac_bytes(text: Option<&str>) -> [u8; 6] {
    let mut mac = [0u8; 6];
    let Some(text) = text else { return mac };
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return mac;
    }
    for (byte, part) in mac.iter_mut().zip(parts) {
        match u8::from_str_radix(part, 16) {
            Ok(value) => *byte = value,
            Err(_) => return [0; 6],
        }
    }
    mac
}

/// Keeps the sequence number across messages (RFC 7011 §3.1: data records sent before).
pub struct Encoder {
    domain: u32,
    sequence: u32,
    layout: Layout,
}

impl Encoder {
    pub fn new(domain: u32, layout: Layout) -> Self {
        Self {
            domain,
            sequence: 0,
            layout,
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
            layout: self.layout,
        }
        .message(flows, Timestamp::UNIX_EPOCH)
        .len()
    }

    /// One message: the templates (the NAT ones when a flow needs them), then the flows'
    /// records in a data set per template: a translated flow's upload record goes under a
    /// NAT template, its download record under the family's plain one.
    pub fn message(&mut self, flows: &[FlowRecord], export_time: Timestamp) -> Vec<u8> {
        let mut body = BytesMut::new();
        let with_nat = flows.iter().any(|f| post_nat_source(f).is_some());
        put_template_set(&mut body, self.layout.enterprise, with_nat);
        let mut records = 0u32;
        for (template, v6, nat) in TEMPLATES {
            let mut set = BytesMut::new();
            for flow in flows.iter().filter(|f| is_v6(f) == v6) {
                let translated = post_nat_source(flow).is_some();
                if translated == nat {
                    put_record(&mut set, flow, Direction::Upload, &self.layout);
                    records += 1;
                }
                if !nat {
                    put_record(&mut set, flow, Direction::Download, &self.layout);
                    records += 1;
                }
            }
            if set.is_empty() {
                continue;
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

/// Every template: (id, IPv6, with the post-NAT source).
const TEMPLATES: [(u16, bool, bool); 4] = [
    (TEMPLATE_V4, false, false),
    (TEMPLATE_V6, true, false),
    (TEMPLATE_V4_NAT, false, true),
    (TEMPLATE_V6_NAT, true, true),
];

/// The flow's translated source, when it has one of the flow's own family (a record must
/// never misalign its template; NAT64 is not something a council gateway does).
fn post_nat_source(flow: &FlowRecord) -> Option<std::net::SocketAddr> {
    flow.public_source
        .filter(|source| source.ip().to_canonical().is_ipv6() == is_v6(flow))
}

fn put_template_set(out: &mut BytesMut, enterprise: Option<u32>, with_nat: bool) {
    let mut set = BytesMut::new();
    for (id, v6, nat) in TEMPLATES {
        if nat && !with_nat {
            continue;
        }
        let fields = template_fields(v6, nat, enterprise);
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

/// One record, fields in [`template_fields`]' order.
fn put_record(out: &mut BytesMut, flow: &FlowRecord, direction: Direction, layout: &Layout) {
    let point = &layout.observation;
    let client_mac = mac_bytes(flow.client_mac.as_deref());
    // Uploads are counted entering the LAN interface, downloads leaving it: the frames
    // there run between the client and the gateway's LAN interface.
    let (source, destination, counters, ingress, egress, source_mac, destination_mac) =
        match direction {
            Direction::Upload => (
                flow.client,
                flow.server,
                flow.upload,
                point.lan_ifindex,
                point.wan_ifindex,
                client_mac,
                point.lan_mac,
            ),
            Direction::Download => (
                flow.server,
                flow.client,
                flow.download,
                point.wan_ifindex,
                point.lan_ifindex,
                point.lan_mac,
                client_mac,
            ),
        };
    out.put_u64(flow.first_seen.as_millisecond().max(0) as u64);
    out.put_u64(flow.last_seen.as_millisecond().max(0) as u64);
    let v6 = is_v6(flow);
    put_address(out, source.ip(), v6);
    put_address(out, destination.ip(), v6);
    out.put_u16(source.port());
    out.put_u16(destination.port());
    out.put_u8(protocol_number(&flow.protocol));
    out.put_u8(u8::from(direction == Direction::Download));
    out.put_u8(end_reason_code(flow.ended));
    out.put_u64(counters.bytes);
    out.put_u64(counters.packets);
    out.put_u32(ingress);
    out.put_u32(egress);
    out.extend_from_slice(&source_mac);
    out.extend_from_slice(&destination_mac);
    out.put_u16(flow.vlan.unwrap_or(0));
    out.put_u8(forwarding_status(&flow.verdict));
    put_variable(out, flow.app.as_bytes());
    put_variable(out, flow.category.as_bytes());
    put_variable(out, flow.name.as_deref().unwrap_or("").as_bytes());
    if direction == Direction::Upload
        && let Some(public) = post_nat_source(flow)
    {
        put_address(out, public.ip().to_canonical(), v6);
        out.put_u16(public.port());
    }
    if layout.enterprise.is_some() {
        for text in [
            flow.method.as_str(),
            flow.verdict.as_str(),
            flow.group.as_str(),
            &flow.evasion.join(","),
        ] {
            put_variable(out, text.as_bytes());
        }
    }
}

/// Whether `flow` goes under the IPv6 template: either end IPv6 (the kernel's keys never
/// mix families, but a record must never misalign a message).
fn is_v6(flow: &FlowRecord) -> bool {
    flow.client.is_ipv6() || flow.server.is_ipv6()
}

/// `ip` in the template's family: an IPv4 address in an IPv6 template is IPv4-mapped.
fn put_address(out: &mut BytesMut, ip: std::net::IpAddr, v6: bool) {
    match (ip, v6) {
        (std::net::IpAddr::V4(v4), false) => out.extend_from_slice(&v4.octets()),
        (std::net::IpAddr::V4(v4), true) => out.extend_from_slice(&v4.to_ipv6_mapped().octets()),
        (std::net::IpAddr::V6(v6), _) => out.extend_from_slice(&v6.octets()),
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::tests::flow;

    /// One decoded field: (element, enterprise, bytes).
    type Decoded = (u16, Option<u32>, Vec<u8>);

    /// A minimal reader of what [`Encoder`] writes: each data record's fields, following
    /// the message's own templates.
    pub(crate) fn decode(message: &[u8]) -> Vec<Vec<Decoded>> {
        let u16_at = |at: usize| u16::from_be_bytes([message[at], message[at + 1]]);
        let u32_at = |at: usize| u32::from_be_bytes(message[at..at + 4].try_into().unwrap());
        let mut templates: std::collections::HashMap<u16, Vec<Field>> = Default::default();
        let mut records = Vec::new();
        let mut at = 16;
        while at < message.len() {
            let (set_id, set_end) = (u16_at(at), at + u16_at(at + 2) as usize);
            let mut cursor = at + 4;
            if set_id == TEMPLATE_SET_ID {
                while cursor < set_end {
                    let (id, count) = (u16_at(cursor), u16_at(cursor + 2));
                    cursor += 4;
                    let mut fields = Vec::new();
                    for _ in 0..count {
                        let (element, length) = (u16_at(cursor), u16_at(cursor + 2));
                        cursor += 4;
                        let enterprise = (element & 0x8000 != 0).then(|| {
                            cursor += 4;
                            u32_at(cursor - 4)
                        });
                        fields.push((element & 0x7fff, length, enterprise));
                    }
                    templates.insert(id, fields);
                }
            } else {
                let fields = &templates[&set_id];
                while cursor < set_end {
                    let mut record = Vec::new();
                    for &(element, length, enterprise) in fields {
                        let length = if length == VARIABLE {
                            let short = message[cursor] as usize;
                            cursor += 1;
                            if short == 255 {
                                cursor += 2;
                                u16_at(cursor - 2) as usize
                            } else {
                                short
                            }
                        } else {
                            length as usize
                        };
                        record.push((element, enterprise, message[cursor..cursor + length].into()));
                        cursor += length;
                    }
                    records.push(record);
                }
            }
            at = set_end;
        }
        records
    }

    fn field(record: &[Decoded], element: u16) -> &[u8] {
        &record
            .iter()
            .find(|(e, enterprise, _)| *e == element && enterprise.is_none())
            .unwrap_or_else(|| panic!("element {element} in {record:?}"))
            .2
    }

    #[test]
    fn a_message_has_the_layout_rfc_7011_gives_it() {
        let mut encoder = Encoder::new(7, Layout::default());
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
    fn iana_elements_carry_the_name_app_category_verdict_interfaces_and_macs() {
        let layout = Layout {
            enterprise: None,
            observation: ObservationPoint {
                lan_ifindex: 3,
                wan_ifindex: 4,
                lan_mac: [2, 0, 0, 0, 0, 1],
            },
        };
        let mut record = flow("192.0.2.10:40000", "2026-11-23T10:00:00Z", "gambling", 9);
        record.verdict = "block".into();
        record.vlan = Some(20);
        let message = Encoder::new(1, layout).message(&[record], Timestamp::UNIX_EPOCH);
        let records = decode(&message);
        assert_eq!(records.len(), 2);
        let (upload, download) = (&records[0], &records[1]);
        assert!(
            upload.iter().all(|(_, enterprise, _)| enterprise.is_none()),
            "no enterprise field without a configured number: {upload:?}"
        );
        assert_eq!(field(upload, ie::APPLICATION_NAME), b"youtube");
        assert_eq!(field(upload, ie::APPLICATION_CATEGORY_NAME), b"gambling");
        assert_eq!(field(upload, ie::HTTP_REQUEST_HOST), b"www.youtube.com");
        assert_eq!(field(upload, ie::FORWARDING_STATUS), [129]);
        assert_eq!(field(upload, ie::VLAN_ID), 20u16.to_be_bytes());
        assert_eq!(field(upload, ie::INGRESS_INTERFACE), 3u32.to_be_bytes());
        assert_eq!(field(upload, ie::EGRESS_INTERFACE), 4u32.to_be_bytes());
        assert_eq!(field(download, ie::INGRESS_INTERFACE), 4u32.to_be_bytes());
        assert_eq!(field(download, ie::EGRESS_INTERFACE), 3u32.to_be_bytes());
        let client_mac = [2, 0, 0, 0, 0, 0x0a];
        assert_eq!(field(upload, ie::SOURCE_MAC_ADDRESS), client_mac);
        assert_eq!(
            field(upload, ie::DESTINATION_MAC_ADDRESS),
            [2, 0, 0, 0, 0, 1]
        );
        assert_eq!(field(download, ie::DESTINATION_MAC_ADDRESS), client_mac);
        assert_eq!(field(upload, ie::OCTET_DELTA_COUNT), 1000u64.to_be_bytes());
        assert_eq!(field(download, ie::OCTET_DELTA_COUNT), 9u64.to_be_bytes());
        assert_eq!(field(download, ie::FLOW_DIRECTION), [1]);
        assert_eq!(field(download, ie::FLOW_END_REASON), [1], "idle");
    }

    #[test]
    fn enterprise_fields_go_out_only_under_the_configured_number() {
        let layout = Layout {
            enterprise: Some(64_000),
            ..Layout::default()
        };
        let record = flow("192.0.2.10:40000", "2026-11-23T10:00:00Z", "gambling", 9);
        let message = Encoder::new(1, layout).message(&[record], Timestamp::UNIX_EPOCH);
        let upload = &decode(&message)[0];
        let enterprise: Vec<(u16, Vec<u8>)> = upload
            .iter()
            .filter_map(|(e, number, bytes)| {
                number.map(|n| {
                    assert_eq!(n, 64_000);
                    (*e, bytes.clone())
                })
            })
            .collect();
        assert_eq!(
            enterprise,
            [
                (enterprise_ie::CLASSIFICATION_METHOD, b"sni".to_vec()),
                (enterprise_ie::POLICY_VERDICT, b"shape".to_vec()),
                (enterprise_ie::CLIENT_GROUP, b"staff".to_vec()),
                (enterprise_ie::EVASION, b"conflict".to_vec()),
            ]
        );
        assert!(
            !message
                .windows(4)
                .any(|w| w == DOCUMENTATION_ENTERPRISE.to_be_bytes())
        );
    }

    #[test]
    fn a_translated_flows_upload_carries_the_post_nat_source_and_its_download_does_not() {
        let mut v4 = flow("192.0.2.10:40000", "2026-11-23T10:00:00Z", "gambling", 9);
        v4.public_source = Some("198.51.100.1:51234".parse().unwrap());
        let plain = flow("192.0.2.11:40001", "2026-11-23T10:00:00Z", "gambling", 9);
        let mut v6 = flow("[2001:db8:1::10]:40002", "2026-11-23T10:00:00Z", "news", 9);
        v6.server = "[2001:db8:3::10]:443".parse().unwrap();
        v6.public_source = Some("[2001:db8:2::1]:60000".parse().unwrap());
        // A public source of the other family is never written into a template's slot.
        let mut mixed = flow("192.0.2.12:40003", "2026-11-23T10:00:00Z", "news", 9);
        mixed.public_source = Some("[2001:db8:2::1]:60001".parse().unwrap());
        let message = Encoder::new(1, Layout::default())
            .message(&[v4, plain, v6, mixed], Timestamp::UNIX_EPOCH);
        let records = decode(&message);
        assert_eq!(records.len(), 8, "two records a flow");
        let with = |element: u16| {
            records
                .iter()
                .filter(|r| r.iter().any(|(e, _, _)| *e == element))
                .collect::<Vec<_>>()
        };
        let v4_nat = with(ie::POST_NAT_SOURCE_IPV4_ADDRESS);
        assert_eq!(v4_nat.len(), 1, "{records:?}");
        assert_eq!(
            field(v4_nat[0], ie::POST_NAT_SOURCE_IPV4_ADDRESS),
            [198, 51, 100, 1]
        );
        assert_eq!(
            field(v4_nat[0], ie::POST_NAPT_SOURCE_TRANSPORT_PORT),
            51234u16.to_be_bytes()
        );
        assert_eq!(
            field(v4_nat[0], ie::SOURCE_TRANSPORT_PORT),
            40000u16.to_be_bytes()
        );
        assert_eq!(field(v4_nat[0], ie::FLOW_DIRECTION), [0], "the upload");
        let v6_nat = with(ie::POST_NAT_SOURCE_IPV6_ADDRESS);
        assert_eq!(v6_nat.len(), 1, "{records:?}");
        assert_eq!(
            field(v6_nat[0], ie::POST_NAT_SOURCE_IPV6_ADDRESS),
            "2001:db8:2::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(with(ie::POST_NAPT_SOURCE_TRANSPORT_PORT).len(), 2);
    }

    #[test]
    fn verdicts_map_to_forwarding_status_and_odd_macs_to_zeros() {
        assert_eq!(forwarding_status("allow"), 64);
        assert_eq!(forwarding_status("shape"), 64);
        assert_eq!(forwarding_status("block"), 129);
        assert_eq!(forwarding_status("undecided"), 0);
        assert_eq!(mac_bytes(Some("02:00:00:00:00:0A")), [2, 0, 0, 0, 0, 10]);
        assert_eq!(mac_bytes(Some("02:00:00:00:00")), [0; 6]);
        assert_eq!(mac_bytes(Some("zz:00:00:00:00:00")), [0; 6]);
        assert_eq!(mac_bytes(None), [0; 6]);
    }

    #[test]
    fn many_flows_are_cut_into_messages_that_fit_a_datagram() {
        let layout = Layout {
            enterprise: Some(64_000),
            ..Layout::default()
        };
        let mut encoder = Encoder::new(1, layout);
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
        let decoded: usize = messages.iter().map(|m| decode(m).len()).sum();
        assert_eq!(decoded, 40);
    }
}
