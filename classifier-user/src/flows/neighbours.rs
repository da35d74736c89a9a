//! Clients' MAC addresses, from the gateway's neighbour table (ARP for IPv4, NDP for
//! IPv6) on the LAN interface.
//!
//! The kernel's flow entry has no room for a MAC (the BPF programs' stack is at its
//! limit), and the neighbour table already knows it for every client on the LAN segment.
//! Entries expire a while after a client goes quiet, so the daemon remembers what it saw
//! at each walk: a flow that ends by idle timeout still gets its client's MAC.
//! A client beyond a router has the router's MAC, or none: "where seen on the LAN".

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use tracing::debug;

use crate::netlink::Netlink;

/// Remembered MACs, refreshed from the neighbour table.
pub struct Neighbours {
    ifindex: u32,
    netlink: Option<Netlink>,
    known: HashMap<IpAddr, ([u8; 6], Instant)>,
}

impl Neighbours {
    /// A MAC not seen in the neighbour table for this long is forgotten.
    const FORGET_AFTER: Duration = Duration::from_secs(3600);
    /// At most this many clients are remembered (a /16 of Wi-Fi clients, and then some).
    const MAX: usize = 1 << 17;

    /// Follows the neighbour table of `interface`; without one (a test, or a bad name),
    /// records carry no MAC.
    pub fn of(interface: &str) -> Self {
        let ifindex = nix::net::if_::if_nametoindex(interface).unwrap_or(0);
        Self {
            ifindex,
            netlink: None,
            known: HashMap::new(),
        }
    }

    /// Reads the neighbour table again. A failure is logged once in a while, not fatal:
    /// records then carry the MACs already known.
    pub fn refresh(&mut self) {
        if self.ifindex == 0 {
            return;
        }
        let now = Instant::now();
        match self.read() {
            Ok(entries) => {
                for (ip, mac) in entries {
                    if self.known.len() < Self::MAX || self.known.contains_key(&ip) {
                        self.known.insert(ip, (mac, now));
                    }
                }
            }
            Err(e) => {
                debug!(error = %format!("{e:#}"), "could not read the neighbour table");
                self.netlink = None;
            }
        }
        self.known
            .retain(|_, (_, seen)| now.duration_since(*seen) < Self::FORGET_AFTER);
    }

    fn read(&mut self) -> anyhow::Result<Vec<(IpAddr, [u8; 6])>> {
        if self.netlink.is_none() {
            self.netlink = Some(Netlink::open()?);
        }
        self.netlink
            .as_mut()
            .expect("opened above")
            .neighbours(self.ifindex)
    }

    /// The MAC of `client`, as text, when known.
    pub fn mac_of(&self, client: IpAddr) -> Option<String> {
        self.known
            .get(&client.to_canonical())
            .map(|(mac, _)| super::mac_text(*mac))
    }
}
