//! rtnetlink, as the daemon speaks it: traffic control (shaping) and the neighbour table.
//!
//! Traffic control over rtnetlink: the HTB root qdisc, its classes and their leaf queues,
//! built with the rust-netlink crates (`netlink-packet-route` has no HTB options of its
//! own, so they are written here as the kernel's `linux/pkt_sched.h` lays them out).

use std::io;

use anyhow::Context as _;
use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{TcAttribute, TcHandle, TcMessage, TcOption},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// `TCA_OPTIONS`.
const TCA_OPTIONS: u16 = 2;
/// Attributes inside an HTB qdisc's or class's `TCA_OPTIONS` (`linux/pkt_sched.h`).
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_DIRECT_QLEN: u16 = 5;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
/// `TC_HTB_PROTOVER`.
const HTB_PROTOCOL_VERSION: u32 = 3;
/// `TC_LINKLAYER_ETHERNET`: with it the kernel computes packet times itself and needs no
/// rate tables (the tables old `tc` sends).
const LINKLAYER_ETHERNET: u8 = 1;
/// Packets the HTB qdisc's direct queue (unshaped traffic) holds, as a default pfifo would.
const DIRECT_QUEUE_PACKETS: u32 = 1000;

/// One HTB class's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HtbClass {
    pub minor: u16,
    /// Rate and ceiling alike (a class never borrows), bytes per second.
    pub rate_bytes: u64,
}

impl HtbClass {
    /// How far the class may run ahead of its rate: 20 ms of it, at least four packets.
    fn burst_bytes(&self) -> u64 {
        (self.rate_bytes / 50).max(4 * 1514)
    }

    /// Bytes a class sends per round when classes share a parent (they do not here;
    /// set so the kernel has no quantum to warn about).
    fn quantum(&self) -> u32 {
        (self.rate_bytes / 10).clamp(1514, 200_000) as u32
    }

    /// Packets the leaf queue holds: 100 ms at the rate, so a shaped TCP flow sees drops
    /// (and backs off) before it fills seconds of queue, and a lifted limit is felt at once.
    pub fn queue_packets(&self) -> u32 {
        (self.rate_bytes / 10 / 1514).clamp(16, 1000) as u32
    }
}

/// A qdisc as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QdiscInfo {
    pub kind: String,
    pub handle: TcHandle,
    pub parent: TcHandle,
}

/// An interface, as far as the daemon asks about one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// `veth`, `bridge`, ...; none for a physical device (the kernel gives no kind for
    /// those).
    pub kind: Option<String>,
    /// The Ethernet address, if it has one (IPFIX records the gateway's side of each frame
    /// with it).
    pub address: Option<[u8; 6]>,
}

/// An rtnetlink socket for traffic control requests.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

impl Netlink {
    pub fn open() -> anyhow::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).context("opening an rtnetlink socket")?;
        socket.bind_auto().context("binding the rtnetlink socket")?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .context("connecting the rtnetlink socket")?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// The qdiscs on interface `ifindex`.
    pub fn qdiscs(&mut self, ifindex: u32) -> anyhow::Result<Vec<QdiscInfo>> {
        let request = RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default());
        let replies = self.exchange(request, NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|message| match message {
                RouteNetlinkMessage::NewQueueDiscipline(tc)
                    if tc.header.index == ifindex as i32 =>
                {
                    Some(QdiscInfo {
                        kind: kind_of(&tc),
                        handle: tc.header.handle,
                        parent: tc.header.parent,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// The minor ids of the classes of qdisc `major:` on `ifindex`.
    pub fn class_minors(&mut self, ifindex: u32, major: u16) -> anyhow::Result<Vec<u16>> {
        let request = RouteNetlinkMessage::GetTrafficClass(TcMessage::with_index(ifindex as i32));
        let replies = self.exchange(request, NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|message| match message {
                RouteNetlinkMessage::NewTrafficClass(tc)
                    if tc.header.index == ifindex as i32 && tc.header.handle.major == major =>
                {
                    Some(tc.header.handle.minor)
                }
                _ => None,
            })
            .collect())
    }

    /// Makes an HTB qdisc `major:` the interface's root, replacing the one there.
    /// Traffic no class claims goes to its direct queue: not shaped at all.
    pub fn replace_root_htb(&mut self, ifindex: u32, major: u16) -> anyhow::Result<()> {
        let glob = [HTB_PROTOCOL_VERSION, 10, 0, 0, 0];
        let options = vec![
            option(TCA_HTB_INIT, words(&glob)),
            option(
                TCA_HTB_DIRECT_QLEN,
                DIRECT_QUEUE_PACKETS.to_ne_bytes().to_vec(),
            ),
        ];
        let message = tc_message(
            ifindex,
            TcHandle { major, minor: 0 },
            TcHandle::ROOT,
            vec![
                TcAttribute::Kind("htb".into()),
                TcAttribute::Options(options),
            ],
        );
        self.exchange(
            RouteNetlinkMessage::NewQueueDiscipline(message),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Removes the interface's root qdisc (the kernel puts its default back).
    pub fn delete_root(&mut self, ifindex: u32) -> anyhow::Result<()> {
        let message = tc_message(ifindex, TcHandle::UNSPEC, TcHandle::ROOT, Vec::new());
        self.exchange(RouteNetlinkMessage::DelQueueDiscipline(message), 0)
            .map(drop)
    }

    /// The filters on `ifindex` under `parent` (a clsact hook: `ffff:fff2` ingress,
    /// `ffff:fff3` egress), as (priority, handle, kind). The kernel lists a filter once per
    /// priority as a chain head (handle 0) and once per filter; heads are left out.
    pub fn filters(
        &mut self,
        ifindex: u32,
        parent: TcHandle,
    ) -> anyhow::Result<Vec<(u16, u32, String)>> {
        let message = tc_message(ifindex, TcHandle::UNSPEC, parent, Vec::new());
        let replies = self.exchange(RouteNetlinkMessage::GetTrafficFilter(message), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|message| match message {
                RouteNetlinkMessage::NewTrafficFilter(tc)
                    if tc.header.index == ifindex as i32
                        && tc.header.handle != TcHandle::UNSPEC =>
                {
                    let handle = (u32::from(tc.header.handle.major) << 16)
                        | u32::from(tc.header.handle.minor);
                    Some(((tc.header.info >> 16) as u16, handle, kind_of(&tc)))
                }
                _ => None,
            })
            .collect())
    }

    /// Removes the interface's clsact qdisc, and with it every filter on it: only for one
    /// this process knows it created and found empty.
    pub fn delete_clsact(&mut self, ifindex: u32) -> anyhow::Result<()> {
        let message = tc_message(ifindex, TcHandle::UNSPEC, TcHandle::CLSACT, Vec::new());
        self.exchange(RouteNetlinkMessage::DelQueueDiscipline(message), 0)
            .map(drop)
    }

    /// Creates class `major:minor`, or changes its rate, and gives it a short leaf queue.
    pub fn put_class(&mut self, ifindex: u32, major: u16, class: &HtbClass) -> anyhow::Result<()> {
        let message = tc_message(
            ifindex,
            TcHandle {
                major,
                minor: class.minor,
            },
            TcHandle { major, minor: 0 },
            vec![
                TcAttribute::Kind("htb".into()),
                TcAttribute::Options(class_options(class)),
            ],
        );
        self.exchange(
            RouteNetlinkMessage::NewTrafficClass(message),
            NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        self.put_leaf(
            ifindex,
            major,
            class.minor,
            "pfifo",
            Some(class.queue_packets()),
        )
    }

    /// Puts a qdisc of `kind` under class `major:minor`; `limit` is a fifo's length.
    pub fn put_leaf(
        &mut self,
        ifindex: u32,
        major: u16,
        minor: u16,
        kind: &str,
        limit: Option<u32>,
    ) -> anyhow::Result<()> {
        let mut attributes = vec![TcAttribute::Kind(kind.into())];
        if let Some(limit) = limit {
            // A fifo's options are a bare `struct tc_fifo_qopt`, not nested attributes.
            attributes.push(TcAttribute::Other(DefaultNla::new(
                TCA_OPTIONS,
                limit.to_ne_bytes().to_vec(),
            )));
        }
        let message = tc_message(
            ifindex,
            TcHandle::UNSPEC,
            TcHandle { major, minor },
            attributes,
        );
        self.exchange(
            RouteNetlinkMessage::NewQueueDiscipline(message),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Removes class `major:minor`.
    pub fn delete_class(&mut self, ifindex: u32, major: u16, minor: u16) -> anyhow::Result<()> {
        let message = tc_message(
            ifindex,
            TcHandle { major, minor },
            TcHandle { major, minor: 0 },
            Vec::new(),
        );
        self.exchange(RouteNetlinkMessage::DelTrafficClass(message), 0)
            .map(drop)
    }

    /// The neighbour table (ARP and NDP) entries of interface `ifindex` that have a
    /// link-layer address: (IP address, MAC). The flow records take clients' MACs from it.
    pub fn neighbours(&mut self, ifindex: u32) -> anyhow::Result<Vec<(std::net::IpAddr, [u8; 6])>> {
        use netlink_packet_route::neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourMessage,
        };
        let request = RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default());
        let replies = self.exchange(request, NLM_F_DUMP)?;
        let mut found = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewNeighbour(neighbour) = reply else {
                continue;
            };
            if neighbour.header.ifindex != ifindex {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for attribute in &neighbour.attributes {
                match attribute {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        ip = Some(std::net::IpAddr::V4(*v4));
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        ip = Some(std::net::IpAddr::V6(*v6));
                    }
                    NeighbourAttribute::LinkLayerAddress(bytes) => {
                        mac = <[u8; 6]>::try_from(bytes.as_slice()).ok();
                    }
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac)
                && mac != [0; 6]
            {
                found.push((ip, mac));
            }
        }
        Ok(found)
    }

    /// What the kernel says of interface `ifindex` (one `RTM_GETLINK`).
    pub fn link(&mut self, ifindex: u32) -> anyhow::Result<Link> {
        use netlink_packet_route::link::{LinkAttribute, LinkInfo, LinkMessage};
        let mut message = LinkMessage::default();
        message.header.index = ifindex;
        let replies = self.exchange(RouteNetlinkMessage::GetLink(message), 0)?;
        let mut found = Link::default();
        let attributes = replies.iter().flat_map(|reply| match reply {
            RouteNetlinkMessage::NewLink(link) => link.attributes.as_slice(),
            _ => &[],
        });
        for attribute in attributes {
            match attribute {
                LinkAttribute::LinkInfo(infos) if found.kind.is_none() => {
                    found.kind = infos.iter().find_map(|info| match info {
                        LinkInfo::Kind(kind) => Some(kind.to_string()),
                        _ => None,
                    });
                }
                LinkAttribute::Address(bytes) if found.address.is_none() => {
                    found.address = <[u8; 6]>::try_from(bytes.as_slice()).ok();
                }
                _ => {}
            }
        }
        Ok(found)
    }

    /// Sends one request and collects the replies up to its acknowledgement (or the end
    /// of a dump); a refusal is the kernel's errno.
    fn exchange(
        &mut self,
        request: RouteNetlinkMessage,
        flags: u16,
    ) -> anyhow::Result<Vec<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::from(request));
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        self.socket
            .send(&bytes, 0)
            .context("sending an rtnetlink request")?;
        self.collect_replies()
    }

    fn collect_replies(&mut self) -> anyhow::Result<Vec<RouteNetlinkMessage>> {
        let mut replies = Vec::new();
        loop {
            let (buffer, _) = self
                .socket
                .recv_from_full()
                .context("reading an rtnetlink reply")?;
            let mut offset = 0;
            while offset < buffer.len() {
                let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buffer[offset..])
                    .context("decoding an rtnetlink reply")?;
                let length = message.header.length as usize;
                if message.header.sequence_number == self.sequence {
                    match message.payload {
                        NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                        NetlinkPayload::Done(_) => return Ok(replies),
                        NetlinkPayload::Error(error) => {
                            return match error.code {
                                None => Ok(replies),
                                Some(code) => Err(io::Error::from_raw_os_error(-code.get()).into()),
                            };
                        }
                        _ => {}
                    }
                }
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }
}

fn tc_message(
    ifindex: u32,
    handle: TcHandle,
    parent: TcHandle,
    attributes: Vec<TcAttribute>,
) -> TcMessage {
    let mut message = TcMessage::with_index(ifindex as i32);
    message.header.handle = handle;
    message.header.parent = parent;
    message.attributes = attributes;
    message
}

fn kind_of(message: &TcMessage) -> String {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            TcAttribute::Kind(kind) => Some(kind.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn option(kind: u16, value: Vec<u8>) -> TcOption {
    TcOption::Other(DefaultNla::new(kind, value))
}

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// `struct tc_htb_opt` (and the 64-bit rates beyond 4 GB/s) for a class.
fn class_options(class: &HtbClass) -> Vec<TcOption> {
    let rate32 = class.rate_bytes.min(u32::MAX as u64) as u32;
    let burst_ticks = ticks(class.burst_bytes(), class.rate_bytes);
    let mut parms = Vec::with_capacity(44);
    for _ in 0..2 {
        // struct tc_ratespec: cell_log, linklayer, overhead, cell_align, mpu, rate.
        parms.extend_from_slice(&[0, LINKLAYER_ETHERNET]);
        parms.extend_from_slice(&0u16.to_ne_bytes());
        parms.extend_from_slice(&0i16.to_ne_bytes());
        parms.extend_from_slice(&0u16.to_ne_bytes());
        parms.extend_from_slice(&rate32.to_ne_bytes());
    }
    // buffer, cbuffer, quantum, level, prio.
    parms.extend_from_slice(&words(&[burst_ticks, burst_ticks, class.quantum(), 0, 0]));
    let mut options = vec![option(TCA_HTB_PARMS, parms)];
    if class.rate_bytes > u32::MAX as u64 {
        options.push(option(
            TCA_HTB_RATE64,
            class.rate_bytes.to_ne_bytes().to_vec(),
        ));
        options.push(option(
            TCA_HTB_CEIL64,
            class.rate_bytes.to_ne_bytes().to_vec(),
        ));
    }
    options
}

/// The time `bytes` take at `rate_bytes` per second, in the scheduler's ticks of 64 ns
/// (the kernel's `PSCHED_NS2TICKS`).
fn ticks(bytes: u64, rate_bytes: u64) -> u32 {
    let ns = bytes as u128 * 1_000_000_000 / rate_bytes.max(1) as u128;
    (ns >> 6).min(u32::MAX as u128) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_parameters_follow_the_rate() {
        let class = HtbClass {
            minor: 1,
            rate_bytes: 250_000, // 2mbit
        };
        assert_eq!(class.burst_bytes(), 6056, "four packets beat 20 ms (5 kB)");
        assert_eq!(class.queue_packets(), 16);
        assert_eq!(class.quantum(), 25_000);
        // 6056 bytes at 250 kB/s: 24.2 ms, in 64 ns ticks.
        assert_eq!(ticks(6056, 250_000), 378_500);
        let fast = HtbClass {
            minor: 2,
            rate_bytes: 6_250_000, // 50mbit
        };
        assert_eq!(fast.queue_packets(), 412);
        assert_eq!(fast.quantum(), 200_000);
    }

    #[test]
    fn htb_parameters_are_the_kernel_struct() {
        let options = class_options(&HtbClass {
            minor: 1,
            rate_bytes: 64_000,
        });
        assert_eq!(options.len(), 1);
        let TcOption::Other(parms) = &options[0] else {
            panic!("raw attribute");
        };
        use netlink_packet_core::Nla as _;
        assert_eq!(parms.kind(), TCA_HTB_PARMS);
        // sizeof(struct tc_htb_opt): two 12-byte rate specs and five u32.
        assert_eq!(parms.value_len(), 44);
        let mut value = vec![0; 44];
        parms.emit_value(&mut value);
        assert_eq!(value[1], LINKLAYER_ETHERNET);
        assert_eq!(u32::from_ne_bytes(value[8..12].try_into().unwrap()), 64_000);
        assert_eq!(
            u32::from_ne_bytes(value[20..24].try_into().unwrap()),
            64_000
        );
    }

    /// The loopback interface of the test's namespace: no kind (not a virtual device of a
    /// kind), and the all-zero Ethernet address the kernel gives it. Reading only.
    #[test]
    fn the_loopback_interface_has_no_kind_and_a_zero_address() {
        let lo = nix::net::if_::if_nametoindex("lo").expect("every namespace has lo");
        let link = Netlink::open().unwrap().link(lo).unwrap();
        assert_eq!(
            link,
            Link {
                kind: None,
                address: Some([0; 6])
            }
        );
        let missing = Netlink::open().unwrap().link(u32::MAX - 1);
        assert!(missing.is_err(), "no such interface: {missing:?}");
    }

    #[test]
    fn rates_beyond_32_bits_go_in_64_bit_attributes() {
        let options = class_options(&HtbClass {
            minor: 1,
            rate_bytes: 5_000_000_000,
        });
        assert_eq!(options.len(), 3);
    }
}
