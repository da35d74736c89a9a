//! The lab's address plan and how it is wired. Only documentation ranges (RFC 5737,
//! RFC 3849), and no default routes: a packet for anywhere else has no way out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{Lab, shell::run};

/// Client addresses are 192.0.2.10 up to 192.0.2.99.
pub const MAX_CLIENTS: usize = 90;

/// What to build.
#[derive(Clone, Debug)]
pub struct LabSpec {
    /// Client hosts on the LAN switch (at least one).
    pub clients: usize,
    /// Names the clients resolve to the server host's service addresses (IPv4 and IPv6),
    /// through `/etc/netns/<client namespace>/hosts`: real names (www.youtube.com) reach lab
    /// servers, and nothing else resolves (the clients get no DNS server).
    pub server_names: Vec<String>,
    /// A pass-through XDP program on the switch port facing the gateway, so that frames the
    /// gateway sends back with XDP_TX arrive at once (a veth delivers them only to a peer
    /// that runs XDP). Off, the LAN is a plain veth and bridge, as a gateway in a container
    /// has it: fail-fast answers must then go out by TC (`--fail-fast-replies`).
    pub xdp_pass_through: bool,
    /// The gateway masquerades (nftables) what leaves its WAN interface, and the server host
    /// has no route back to the LAN: it sees only the gateway's WAN addresses
    /// ([`GATEWAY_WAN_V4`], [`GATEWAY_WAN_V6`]), as a server on the Internet sees a council's
    /// gateway. A lab daemon is then started with [`LAB_NAT_MARK_MASK`].
    pub nat: bool,
}

impl Default for LabSpec {
    fn default() -> Self {
        Self {
            clients: 2,
            server_names: Vec::new(),
            xdp_pass_through: true,
            nat: false,
        }
    }
}

/// The skb mark bits a lab daemon hands uploads over in when the lab does NAT.
pub const LAB_NAT_MARK_MASK: &str = "0x0fff0000";
/// The nftables table the NAT lab's gateway masquerades with.
pub const LAB_NAT_TABLE: &str = "clab_nat";

/// Where `ip netns exec NAME` finds files it bind-mounts over /etc.
pub fn netns_etc_dir(netns: &str) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns").join(netns)
}

/// One host of the lab: its namespace, its interface there and its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub netns: String,
    /// The interface that faces the rest of the lab (`lan0` on the gateway).
    pub iface: &'static str,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Host {
    pub fn addrs(&self) -> [IpAddr; 2] {
        [IpAddr::V4(self.ipv4), IpAddr::V6(self.ipv6)]
    }
}

/// The gateway's LAN interface, where XDP (ingress) and TC (egress) attach.
pub const GATEWAY_LAN_IFACE: &str = "lan0";
/// The gateway's WAN interface.
pub const GATEWAY_WAN_IFACE: &str = "wan0";

const PREFIX_LEN_V4: u8 = 24;
const PREFIX_LEN_V6: u8 = 64;
const GATEWAY_LAN_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GATEWAY_LAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// The gateway's WAN addresses: what a server sees behind NAT.
pub const GATEWAY_WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const GATEWAY_WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
const SERVER_WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const SERVER_WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);

/// The "Internet" service address the server host answers on.
pub const SERVICE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const SERVICE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 0x10);

/// Prefixes clients reach through the gateway; nothing else is routed.
const LAN_ROUTED_V4: [&str; 2] = ["198.51.100.0/24", "203.0.113.0/24"];
const LAN_ROUTED_V6: [&str; 2] = ["2001:db8:2::/64", "2001:db8:3::/64"];
const SERVICE_PREFIX_V4: &str = "203.0.113.0/24";
const SERVICE_PREFIX_V6: &str = "2001:db8:3::/64";
const LAN_PREFIX_V4: &str = "192.0.2.0/24";
const LAN_PREFIX_V6: &str = "2001:db8:1::/64";

pub(super) fn gateway(netns: String) -> Host {
    Host {
        netns,
        iface: GATEWAY_LAN_IFACE,
        ipv4: GATEWAY_LAN_V4,
        ipv6: GATEWAY_LAN_V6,
    }
}

pub(super) fn server(netns: String) -> Host {
    Host {
        netns,
        iface: "eth0",
        ipv4: SERVICE_V4,
        ipv6: SERVICE_V6,
    }
}

/// Client `index` (0-based): 192.0.2.(10+index) and 2001:db8:1::(10+index), the IPv6
/// host part written with the same digits as the IPv4 one (::10, ::11, ...).
pub(super) fn client(netns: String, index: usize) -> Host {
    let host = 10 + index as u8;
    let v6_host =
        u16::from_str_radix(&host.to_string(), 16).expect("decimal digits are hex digits");
    Host {
        netns,
        iface: "eth0",
        ipv4: Ipv4Addr::new(192, 0, 2, host),
        ipv6: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, v6_host),
    }
}

/// Creates and wires every namespace of `lab`.
pub(super) fn build(lab: &Lab, spec: &LabSpec) -> anyhow::Result<()> {
    for netns in lab.namespaces() {
        run("ip", &["netns", "add", &netns])?;
        ip(&netns, &["link", "set", "lo", "up"])?;
    }
    build_switch(&lab.switch_netns)?;
    build_gateway(&lab.gateway, &lab.switch_netns)?;
    build_server(&lab.server, &lab.gateway.netns, spec.nat)?;
    if spec.nat {
        masquerade(&lab.gateway.netns)?;
    }
    for (index, client) in lab.clients.iter().enumerate() {
        build_client(client, index, &lab.switch_netns)?;
        write_name_files(&client.netns, &spec.server_names)?;
    }
    Ok(())
}

/// The client's /etc/hosts (lab names → service addresses) and an empty resolv.conf, so no
/// name lookup ever leaves the namespace.
fn write_name_files(netns: &str, server_names: &[String]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let dir = netns_etc_dir(netns);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for name in server_names {
        hosts += &format!("{SERVICE_V4} {name}\n{SERVICE_V6} {name}\n");
    }
    std::fs::write(dir.join("hosts"), hosts)?;
    std::fs::write(
        dir.join("resolv.conf"),
        "# classifier lab: no DNS server; names come from /etc/hosts\n",
    )?;
    Ok(())
}

/// The switch's port facing the gateway's LAN interface.
pub const SWITCH_GATEWAY_PORT: &str = "p-gw";

fn build_switch(sw: &str) -> anyhow::Result<()> {
    // A plain learning bridge; no IPv6 of its own, so it adds no traffic to the LAN.
    sysctl(sw, "net.ipv6.conf.all.disable_ipv6=1")?;
    sysctl(sw, "net.ipv6.conf.default.disable_ipv6=1")?;
    ip(sw, &["link", "add", "br0", "type", "bridge"])?;
    ip(sw, &["link", "set", "br0", "up"])
}

fn build_gateway(gw: &Host, sw: &str) -> anyhow::Result<()> {
    veth(&gw.netns, GATEWAY_LAN_IFACE, sw, SWITCH_GATEWAY_PORT)?;
    attach_to_switch(sw, SWITCH_GATEWAY_PORT)?;
    sysctl(&gw.netns, "net.ipv4.ip_forward=1")?;
    sysctl(&gw.netns, "net.ipv6.conf.all.forwarding=1")?;
    add_addrs(&gw.netns, GATEWAY_LAN_IFACE, GATEWAY_LAN_V4, GATEWAY_LAN_V6)?;
    link_up(&gw.netns, GATEWAY_LAN_IFACE)
}

/// Masquerade on the gateway's WAN interface, IPv4 and IPv6 (one `inet` table).
fn masquerade(gw: &str) -> anyhow::Result<()> {
    let nft = |args: &[&str]| -> anyhow::Result<()> {
        let mut full = vec!["netns", "exec", gw, "nft"];
        full.extend_from_slice(args);
        run("ip", &full).map(drop)
    };
    nft(&["add", "table", "inet", LAB_NAT_TABLE])?;
    nft(&[
        "add",
        "chain",
        "inet",
        LAB_NAT_TABLE,
        "postrouting",
        "{ type nat hook postrouting priority srcnat; policy accept; }",
    ])?;
    nft(&[
        "add",
        "rule",
        "inet",
        LAB_NAT_TABLE,
        "postrouting",
        "oifname",
        GATEWAY_WAN_IFACE,
        "masquerade",
    ])
}

fn build_server(srv: &Host, gw: &str, nat: bool) -> anyhow::Result<()> {
    veth(gw, GATEWAY_WAN_IFACE, &srv.netns, srv.iface)?;
    add_addrs(gw, GATEWAY_WAN_IFACE, GATEWAY_WAN_V4, GATEWAY_WAN_V6)?;
    link_up(gw, GATEWAY_WAN_IFACE)?;
    add_addrs(&srv.netns, srv.iface, SERVER_WAN_V4, SERVER_WAN_V6)?;
    // The service addresses stand for hosts on the Internet behind the WAN link.
    ip(
        &srv.netns,
        &["addr", "add", &format!("{SERVICE_V4}/32"), "dev", srv.iface],
    )?;
    ip(
        &srv.netns,
        &[
            "-6",
            "addr",
            "add",
            &format!("{SERVICE_V6}/128"),
            "dev",
            srv.iface,
            "nodad",
        ],
    )?;
    link_up(&srv.netns, srv.iface)?;
    route(gw, SERVICE_PREFIX_V4, &SERVER_WAN_V4.to_string())?;
    route(gw, SERVICE_PREFIX_V6, &SERVER_WAN_V6.to_string())?;
    if nat {
        // Behind NAT the LAN is not reachable from the server at all.
        return Ok(());
    }
    route(&srv.netns, LAN_PREFIX_V4, &GATEWAY_WAN_V4.to_string())?;
    route(&srv.netns, LAN_PREFIX_V6, &GATEWAY_WAN_V6.to_string())
}

fn build_client(client: &Host, index: usize, sw: &str) -> anyhow::Result<()> {
    let port = format!("p-c{}", index + 1);
    veth(&client.netns, client.iface, sw, &port)?;
    attach_to_switch(sw, &port)?;
    add_addrs(&client.netns, client.iface, client.ipv4, client.ipv6)?;
    link_up(&client.netns, client.iface)?;
    for prefix in LAN_ROUTED_V4 {
        route(&client.netns, prefix, &GATEWAY_LAN_V4.to_string())?;
    }
    for prefix in LAN_ROUTED_V6 {
        route(&client.netns, prefix, &GATEWAY_LAN_V6.to_string())?;
    }
    Ok(())
}

/// A veth pair with one end in each namespace, offloads off on both ends so packets cross
/// at wire size (a 1.8 KB ClientHello must arrive as two segments, not one super-packet).
fn veth(ns_a: &str, name_a: &str, ns_b: &str, name_b: &str) -> anyhow::Result<()> {
    ip(
        ns_a,
        &[
            "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b,
        ],
    )?;
    for (ns, name) in [(ns_a, name_a), (ns_b, name_b)] {
        run(
            "ip",
            &[
                "netns", "exec", ns, "ethtool", "-K", name, "tso", "off", "gso", "off", "gro",
                "off",
            ],
        )?;
    }
    Ok(())
}

fn attach_to_switch(sw: &str, port: &str) -> anyhow::Result<()> {
    ip(sw, &["link", "set", port, "master", "br0"])?;
    link_up(sw, port)
}

fn add_addrs(ns: &str, iface: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> anyhow::Result<()> {
    ip(
        ns,
        &[
            "addr",
            "add",
            &format!("{v4}/{PREFIX_LEN_V4}"),
            "dev",
            iface,
        ],
    )?;
    // nodad: the address is usable at once instead of after duplicate detection.
    ip(
        ns,
        &[
            "-6",
            "addr",
            "add",
            &format!("{v6}/{PREFIX_LEN_V6}"),
            "dev",
            iface,
            "nodad",
        ],
    )?;
    Ok(())
}

fn link_up(ns: &str, iface: &str) -> anyhow::Result<()> {
    ip(ns, &["link", "set", iface, "up"])
}

fn route(ns: &str, prefix: &str, via: &str) -> anyhow::Result<()> {
    ip(ns, &["route", "add", prefix, "via", via])
}

fn sysctl(ns: &str, setting: &str) -> anyhow::Result<()> {
    run("ip", &["netns", "exec", ns, "sysctl", "-qw", setting]).map(drop)
}

fn ip(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    run("ip", &full).map(drop)
}
