//! Offline classification of captures: every packet of a pcap or pcapng file runs through
//! the real datapath programs with `BPF_PROG_TEST_RUN` (the object that runs on the
//! gateway, with the same maps and tables), the events are handled as the daemon handles
//! them, and the flow table at the end says what each flow is and what the policy does
//! with it.
//!
//! A capture has no interfaces, so each packet's way is worked out from the flow it belongs
//! to, as the gateway would see it: the client is the LAN side. An address in one of the
//! policy's groups is on the LAN; when both or neither are, the side that sent a TCP SYN
//! (or received a SYN-ACK) is the client, else the side that sent the flow's first packet,
//! unless that packet came from a well-known port to an ephemeral one (a capture started
//! mid-flow). Client→server packets run through
//! the XDP program of LAN ingress, server→client ones through the TC program of LAN egress.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufReader, Read, Seek},
    net::IpAddr,
    path::Path,
};

use anyhow::{Context as _, bail};
use aya::{
    TestRunOptions,
    maps::{MapData, RingBuf},
    programs::TestRun as _,
};
use classifier_common::programs;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::{DataLink, pcap::PcapReader, pcapng::Block, pcapng::PcapNgReader};
use serde::Serialize;

use crate::{
    events::Learned,
    flows::{self, FlowRecord},
    loader::Datapath,
    policy::Policy,
    tables,
};

/// What the policy is asked about: the period its rules are read for.
#[derive(Clone, Debug)]
pub struct Moment {
    pub period: String,
    pub at: jiff::Timestamp,
}

/// Packet counts of a replay, for the summary line.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ReplayCounts {
    pub packets: u64,
    /// Run client→server through XDP.
    pub upload: u64,
    /// Run server→client through TC.
    pub download: u64,
    /// Not IP (ARP, LLDP, ...): the datapath passes these without looking.
    pub not_ip: u64,
    /// Refused by the kernel's test harness (e.g. an IP header cut short by the snap length).
    pub refused: u64,
}

/// The flows of a capture as the datapath classified them, and the counts.
pub struct Replayed {
    pub flows: Vec<FlowRecord>,
    pub counts: ReplayCounts,
}

/// The datapath loaded with a policy, ready to replay packets.
pub struct Replay {
    datapath: Datapath,
    events: RingBuf<MapData>,
    policy: Policy,
    learned: Learned,
    sides: HashMap<Endpoints, Side>,
    counts: ReplayCounts,
}

/// A flow's two ends, in a canonical order (lower end first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Endpoints {
    protocol: u8,
    low: (IpAddr, u16),
    high: (IpAddr, u16),
}

/// Which end of a flow is the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Low,
    High,
}

/// The parts of a packet that decide its way.
struct Tuple {
    protocol: u8,
    source: (IpAddr, u16),
    destination: (IpAddr, u16),
    syn: bool,
    ack: bool,
}

impl Replay {
    /// Loads the datapath with `policy`'s classes and its verdicts for `moment`.
    pub fn new(policy: Policy, moment: &Moment) -> anyhow::Result<Self> {
        let capacity = tables::domain_capacity(policy.classes.domains.len());
        let mut datapath = Datapath::load_sized(capacity)?;
        datapath.install_tables(&policy.classes, &policy.datapath)?;
        datapath.swap_policy(&policy.decision_tables(&moment.period, moment.at))?;
        let events = datapath.take_events()?;
        Ok(Self {
            datapath,
            events,
            policy,
            learned: Learned::default(),
            sides: HashMap::new(),
            counts: ReplayCounts::default(),
        })
    }

    /// Replays every packet of the pcap or pcapng file at `path`.
    pub fn file(&mut self, path: &Path) -> anyhow::Result<()> {
        let mut file = BufReader::new(
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        );
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic)
            .with_context(|| format!("{}: too short for a capture file", path.display()))?;
        file.rewind()?;
        let result = if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
            self.pcapng(file)
        } else {
            self.pcap(file)
        };
        result.with_context(|| format!("reading {}", path.display()))
    }

    fn pcap(&mut self, file: impl Read) -> anyhow::Result<()> {
        let mut reader = PcapReader::new(file).context("not a pcap or pcapng file")?;
        let link = reader.header().datalink;
        while let Some(packet) = reader.next_packet() {
            let packet = packet.context("a damaged packet record")?;
            self.packet(link, &packet.data)?;
        }
        Ok(())
    }

    fn pcapng(&mut self, file: impl Read) -> anyhow::Result<()> {
        let mut reader = PcapNgReader::new(file).context("not a pcapng file")?;
        while let Some(block) = reader.next_block() {
            let (interface, data) = match block.context("a damaged pcapng block")? {
                Block::EnhancedPacket(packet) => (packet.interface_id, packet.data.into_owned()),
                Block::SimplePacket(packet) => (0, packet.data.into_owned()),
                _ => continue,
            };
            let link = reader
                .interfaces()
                .get(interface as usize)
                .map(|i| i.linktype)
                .with_context(|| format!("a packet on undescribed interface {interface}"))?;
            self.packet(link, &data)?;
        }
        Ok(())
    }

    /// Runs one captured packet through the program for its way, then reads the events.
    pub fn packet(&mut self, link: DataLink, data: &[u8]) -> anyhow::Result<()> {
        self.counts.packets += 1;
        let mut frame = ethernet_frame(link, data)?;
        finish_offloaded_checksum(&mut frame);
        let Some(tuple) = tuple_of(&frame) else {
            self.counts.not_ip += 1;
            return Ok(());
        };
        let upload = self.is_upload(&tuple);
        let options = TestRunOptions {
            data_in: Some(&frame),
            repeat: 1,
            ..Default::default()
        };
        let run = if upload {
            self.counts.upload += 1;
            self.datapath
                .program(programs::LAN_INGRESS)?
                .test_run(options)
                .map(drop)
        } else {
            self.counts.download += 1;
            self.datapath
                .program(programs::LAN_EGRESS)?
                .test_run(options)
                .map(drop)
        };
        if run.is_err() {
            self.counts.refused += 1;
        }
        self.learned
            .drain(&mut self.events, &mut self.datapath, &self.policy);
        Ok(())
    }

    /// True when `tuple` goes client→server; the first packet of a flow decides.
    fn is_upload(&mut self, tuple: &Tuple) -> bool {
        let (endpoints, source_side) = Endpoints::of(tuple);
        let groups = &self.policy.groups;
        let on_lan = |addr: IpAddr| groups.group_of(addr, None) != 0;
        let client = *self.sides.entry(endpoints).or_insert_with(|| {
            match (on_lan(tuple.source.0), on_lan(tuple.destination.0)) {
                (true, false) => source_side,
                (false, true) => source_side.other(),
                _ => client_side_from_first_packet(tuple, source_side),
            }
        });
        client == source_side
    }

    /// The flows classified so far, largest first, and the counts.
    pub fn finish(mut self) -> anyhow::Result<Replayed> {
        self.take_capture()
    }

    /// The flows classified so far and the counts; then the datapath forgets them, so the
    /// next capture replays as if on its own (the programs stay loaded: loading them is
    /// most of a short capture's time).
    pub fn take_capture(&mut self) -> anyhow::Result<Replayed> {
        let flows = {
            let maps = self.datapath.maps();
            flows::read_table(
                &maps.flows,
                &self.policy,
                &self.learned.names,
                Some(&maps.names),
            )?
            .into_iter()
            .map(|(_, record)| record)
            .collect()
        };
        self.datapath.forget_traffic();
        self.sides.clear();
        self.learned = Learned::default();
        Ok(Replayed {
            flows,
            counts: std::mem::take(&mut self.counts),
        })
    }
}

impl Endpoints {
    /// The canonical endpoints of `tuple`, and which of them sent it.
    fn of(tuple: &Tuple) -> (Self, Side) {
        let (low, high, source_side) = if tuple.source <= tuple.destination {
            (tuple.source, tuple.destination, Side::Low)
        } else {
            (tuple.destination, tuple.source, Side::High)
        };
        let endpoints = Self {
            protocol: tuple.protocol,
            low,
            high,
        };
        (endpoints, source_side)
    }
}

impl Side {
    fn other(self) -> Self {
        match self {
            Self::Low => Self::High,
            Self::High => Self::Low,
        }
    }
}

/// The client of a flow first seen with `tuple`, sent by `source_side`.
fn client_side_from_first_packet(tuple: &Tuple, source_side: Side) -> Side {
    const TCP: u8 = 6;
    if tuple.protocol == TCP && tuple.syn {
        // SYN from the client; SYN-ACK from the server.
        return if tuple.ack {
            source_side.other()
        } else {
            source_side
        };
    }
    let (source_port, destination_port) = (tuple.source.1, tuple.destination.1);
    if is_service_port(source_port) && !is_service_port(destination_port) {
        source_side.other()
    } else {
        source_side
    }
}

/// Ports servers listen on (IANA system ports), as opposed to clients' ephemeral ones.
fn is_service_port(port: u16) -> bool {
    (1..1024).contains(&port)
}

/// The frame as the datapath sees it on an Ethernet interface.
/// A capture taken on the sending host holds the checksum its NIC was still to finish
/// (checksum offload: the pseudo-header's sum alone). The NIC puts the real one on the wire,
/// so the replay does too. Any other wrong checksum is kept as it is: that is what a decoy
/// made to be dropped by the server looks like, and the datapath must see it.
fn finish_offloaded_checksum(frame: &mut [u8]) {
    use classifier_common::{
        flow::ip_proto,
        parse::{
            PacketMeta, Parsed,
            headers::fragment,
            parse_headers,
            tcp::{ChecksumStatus, checksum, frame_checksum_status},
        },
    };
    let mut meta = PacketMeta::default();
    if parse_headers(&frame[..], &mut meta) != Ok(Parsed::Ip)
        || meta.fragment != fragment::NONE
        || frame_checksum_status(frame, &meta) != Some(ChecksumStatus::Offloaded)
    {
        return;
    }
    let l4 = meta.l4_offset as usize;
    let end = meta.l3_offset as usize + meta.l3_len as usize;
    let field = l4
        + if meta.protocol == ip_proto::TCP {
            16
        } else {
            6
        };
    frame[field..field + 2].copy_from_slice(&[0, 0]);
    let segment = &frame[l4..end];
    let sum =
        checksum::pseudo_header_sum(&meta, segment.len() as u16) + checksum::sum_bytes(segment);
    let mut value = !checksum::fold(sum);
    if value == 0 && meta.protocol == ip_proto::UDP {
        value = 0xffff; // UDP sends a computed zero as all ones (RFC 768)
    }
    // Memory-order sums give the field as its bytes in memory (see `checksum`).
    frame[field..field + 2].copy_from_slice(&value.to_le_bytes());
}

fn ethernet_frame(link: DataLink, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    const ETH_P_IP: u16 = 0x0800;
    const ETH_P_IPV6: u16 = 0x86dd;
    let (ethertype, payload) = match link {
        DataLink::ETHERNET => return Ok(data.to_vec()),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => {
            let ethertype = match data.first().map(|b| b >> 4) {
                Some(4) => ETH_P_IP,
                Some(6) => ETH_P_IPV6,
                _ => 0,
            };
            (ethertype, data)
        }
        // Linux cooked capture (`tcpdump -i any`): 16-byte header, protocol at 14..16.
        DataLink::LINUX_SLL if data.len() >= 16 => {
            (u16::from_be_bytes([data[14], data[15]]), &data[16..])
        }
        // Its second version: 20-byte header, protocol first.
        DataLink::LINUX_SLL2 if data.len() >= 20 => {
            (u16::from_be_bytes([data[0], data[1]]), &data[20..])
        }
        DataLink::LINUX_SLL | DataLink::LINUX_SLL2 => (0, &[][..]),
        other => bail!(
            "link type {other:?} is not supported: capture on an Ethernet interface, or with \
             `tcpdump -i any` (Linux cooked), or as raw IP"
        ),
    };
    let mut frame = Vec::with_capacity(14 + payload.len());
    // Locally administered MACs: the datapath does not look at them.
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// The addresses, ports and TCP flags of an Ethernet frame (VLAN tags allowed), or `None`
/// when it is not IP. IP fragments after the first have no ports: they are keyed by
/// addresses alone, as the datapath passes them without a flow.
fn tuple_of(frame: &[u8]) -> Option<Tuple> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let (source, destination, protocol) = match packet.net? {
        NetSlice::Ipv4(ip) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
            ip.header().protocol().0,
        ),
        NetSlice::Ipv6(ip) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
            ip.payload().ip_number.0,
        ),
        NetSlice::Arp(_) => return None,
    };
    let (ports, syn, ack) = match packet.transport {
        Some(TransportSlice::Tcp(tcp)) => (
            (tcp.source_port(), tcp.destination_port()),
            tcp.syn(),
            tcp.ack(),
        ),
        Some(TransportSlice::Udp(udp)) => {
            ((udp.source_port(), udp.destination_port()), false, false)
        }
        _ => ((0, 0), false, false),
    };
    Some(Tuple {
        protocol,
        source: (source, ports.0),
        destination: (destination, ports.1),
        syn,
        ack,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn tuple(source_port: u16, destination_port: u16, syn: bool, ack: bool) -> Tuple {
        Tuple {
            protocol: 6,
            source: (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), source_port),
            destination: (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)), destination_port),
            syn,
            ack,
        }
    }

    #[test]
    fn the_client_is_who_sent_the_syn_or_received_the_syn_ack() {
        let syn = tuple(50000, 443, true, false);
        let (_, side) = Endpoints::of(&syn);
        assert_eq!(client_side_from_first_packet(&syn, side), side);
        let syn_ack = tuple(443, 50000, true, true);
        let (_, side) = Endpoints::of(&syn_ack);
        assert_eq!(client_side_from_first_packet(&syn_ack, side), side.other());
    }

    #[test]
    fn mid_flow_captures_put_the_service_port_on_the_server() {
        let from_server = tuple(443, 50000, false, true);
        let (_, side) = Endpoints::of(&from_server);
        assert_eq!(
            client_side_from_first_packet(&from_server, side),
            side.other()
        );
        let from_client = tuple(50000, 443, false, true);
        let (_, side) = Endpoints::of(&from_client);
        assert_eq!(client_side_from_first_packet(&from_client, side), side);
    }

    #[test]
    fn both_ways_of_a_flow_share_endpoints() {
        let (up, up_side) = Endpoints::of(&tuple(50000, 443, false, true));
        let mut reply = tuple(443, 50000, false, true);
        std::mem::swap(&mut reply.source.0, &mut reply.destination.0);
        let (down, down_side) = Endpoints::of(&reply);
        assert_eq!(up, down);
        assert_eq!(up_side, down_side.other());
    }

    #[test]
    fn offloaded_checksums_are_finished_and_wrong_ones_kept() {
        use classifier_common::parse::{
            PacketMeta, parse_headers,
            tcp::{ChecksumStatus, checksum, frame_checksum_status},
        };
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([192, 0, 2, 10], [203, 0, 113, 10], 64)
            .tcp(40000, 443, 1000, 64240)
            .write(&mut frame, b"hello, world")
            .unwrap();
        let mut meta = PacketMeta::default();
        parse_headers(&frame[..], &mut meta).unwrap();
        let good = frame.clone();
        let field = meta.l4_offset as usize + 16;
        let l4_len = frame.len() as u16 - meta.l4_offset;
        let placeholder = checksum::offload_placeholder(&meta, l4_len);
        frame[field..field + 2].copy_from_slice(&placeholder.to_le_bytes());
        finish_offloaded_checksum(&mut frame);
        assert_eq!(frame, good, "the NIC's checksum, as it would have sent it");
        let mut decoy = good.clone();
        decoy[field] ^= 0x5a;
        let before = decoy.clone();
        finish_offloaded_checksum(&mut decoy);
        assert_eq!(decoy, before, "a wrong checksum stays wrong");
        assert_eq!(
            frame_checksum_status(&decoy, &meta),
            Some(ChecksumStatus::Invalid)
        );
    }

    #[test]
    fn raw_ip_and_cooked_captures_become_ethernet_frames() {
        let ip = [0x45u8, 0, 0, 20];
        let frame = ethernet_frame(DataLink::RAW, &ip).unwrap();
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        assert_eq!(&frame[14..], &ip);
        let mut cooked = vec![0u8; 16];
        cooked[14..16].copy_from_slice(&[0x86, 0xdd]);
        cooked.extend_from_slice(&[0x60, 0, 0, 0]);
        let frame = ethernet_frame(DataLink::LINUX_SLL, &cooked).unwrap();
        assert_eq!(&frame[12..], &[0x86, 0xdd, 0x60, 0, 0, 0]);
        let err = ethernet_frame(DataLink::IEEE802_11, &ip).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
    }
}
