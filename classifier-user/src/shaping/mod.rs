//! Shaping: the HTB qdiscs and classes that shape verdicts put packets into, kept in step
//! with the policy.
//!
//! With `[shaping] method = "htb"` (the default) the daemon makes an HTB qdisc `1:` the root
//! of the LAN interface's egress (downloads) and of the WAN interface's egress (uploads),
//! one class `1:c` per shape rule `c`, and for per-client rules one class per client as the
//! datapath asks for them ([`Shaper::add_client`]). Traffic no class claims takes HTB's
//! direct queue, unshaped. With `method = "policer"` no qdisc is touched: the datapath's
//! token buckets drop what exceeds the rate.
//!
//! EDT pacing (`skb->tstamp` honoured by `sch_fq`) would shape without queues, but needs
//! `sch_fq`; the daemon probes for it and says whether this kernel has it.

pub mod allowances;
// The rtnetlink client moved to `crate::netlink` (the neighbour table uses it too).
pub use crate::netlink;

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use classifier_common::shaping::{
    CLIENT_MINOR_BASE, ClientClassKey, HTB_MAJOR, ShapeRule, shape_flags,
};
use serde::Serialize;
use tracing::{info, warn};

use crate::netlink::{HtbClass, Netlink, QdiscInfo};
use crate::{loader::Datapath, policy::ShapingMethod};

/// The qdisc handle major the shaper owns.
const MAJOR: u16 = HTB_MAJOR as u16;
/// A class made for a moment to probe for `sch_fq`; above every client class.
const PROBE_MINOR: u16 = 0xffff;

/// An interface whose egress the shaper manages.
#[derive(Debug, Clone)]
pub struct Egress {
    pub name: String,
    pub ifindex: u32,
    /// What leaves through it: "downloads" (LAN) or "uploads" (WAN).
    pub carries: &'static str,
}

impl Egress {
    pub fn new(name: &str, carries: &'static str) -> anyhow::Result<Self> {
        let ifindex = nix::net::if_::if_nametoindex(name)
            .with_context(|| format!("no interface `{name}` to shape {carries} on"))?;
        Ok(Self {
            name: name.to_owned(),
            ifindex,
            carries,
        })
    }
}

/// Whether EDT pacing could be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EdtPacing {
    /// Not looked at yet (no HTB shaping has been set up).
    Unknown,
    /// `sch_fq` exists on this kernel.
    Available,
    /// This kernel has no `sch_fq`: shaping queues in HTB.
    NoSchFq,
}

/// What `status` says about shaping.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ShapingStatus {
    pub method: String,
    /// `name (downloads)`, `name (uploads)`.
    pub interfaces: Vec<String>,
    pub rules: usize,
    pub client_classes: usize,
    pub edt_pacing: String,
}

/// The daemon's shaping state.
pub struct Shaper {
    interfaces: Vec<Egress>,
    netlink: Option<Netlink>,
    method: ShapingMethod,
    /// Shape class → rule, as last applied.
    rules: BTreeMap<u16, ShapeRule>,
    /// Clients' own classes, by (client, rule class).
    clients: HashMap<ClientClassKey, u16>,
    next_minor: u16,
    /// Interfaces whose root qdisc is ours (made or taken over): removed at a clean stop.
    owned_roots: Vec<u32>,
    edt: EdtPacing,
    warned_full: bool,
}

impl Shaper {
    /// A shaper for these interfaces; nothing is touched until [`Shaper::apply`].
    pub fn new(interfaces: Vec<Egress>) -> Self {
        Self {
            interfaces,
            netlink: None,
            method: ShapingMethod::Htb,
            rules: BTreeMap::new(),
            clients: HashMap::new(),
            next_minor: CLIENT_MINOR_BASE,
            owned_roots: Vec::new(),
            edt: EdtPacing::Unknown,
            warned_full: false,
        }
    }

    /// Puts the policy's shape rules in place: HTB roots and one class per rule (HTB), or
    /// no qdisc at all (policer, or no shape rules). Clients' classes start again when the rules change.
    pub fn apply(
        &mut self,
        method: ShapingMethod,
        shapers: &[(u16, ShapeRule)],
        datapath: &mut Datapath,
    ) -> anyhow::Result<()> {
        // A block rule with an allowance drops once it is spent: it has no class to queue in.
        let rules: BTreeMap<u16, ShapeRule> = shapers
            .iter()
            .copied()
            .filter(|(_, rule)| rule.flags & shape_flags::BLOCK_WHEN_SPENT == 0)
            .collect();
        let changed = rules != self.rules || method != self.method || self.owned_roots.is_empty();
        self.method = method;
        self.rules = rules;
        // Without HTB rules no packet is given a class: no qdisc of ours, so a policy
        // that shapes nothing costs the egress path nothing (an HTB root on an otherwise
        // idle link cost uploads ~40% of their throughput in the lab benchmark).
        if method == ShapingMethod::Policer || self.rules.is_empty() {
            self.adopt_roots_left_behind()?;
            if self.rules.is_empty() && !self.owned_roots.is_empty() {
                info!("no shape rules: the HTB qdiscs are removed");
            }
            self.remove_roots();
            forget_clients(&mut self.clients, datapath)?;
            return Ok(());
        }
        for egress in self.interfaces.clone() {
            self.put_root(&egress)?;
            self.put_rule_classes(&egress, changed)?;
        }
        if changed {
            forget_clients(&mut self.clients, datapath)?;
            self.next_minor = CLIENT_MINOR_BASE;
        }
        if self.edt == EdtPacing::Unknown {
            self.edt = self.probe_sch_fq();
            if self.edt == EdtPacing::NoSchFq {
                info!(
                    "EDT pacing is not available (this kernel has no sch_fq): shaping queues in HTB classes"
                );
            }
        }
        info!(
            rules = self.rules.len(),
            interfaces = %self.describe_interfaces().join(", "),
            "HTB shaping classes in place"
        );
        Ok(())
    }

    /// Gives a client of per-client rule `class` its own class on every shaped interface,
    /// and tells the datapath. Unknown classes (a stale request) are ignored.
    pub fn add_client(
        &mut self,
        class: u16,
        client_addr: [u8; 16],
        datapath: &mut Datapath,
    ) -> anyhow::Result<()> {
        let Some(rule) = self.rules.get(&class).copied() else {
            return Ok(());
        };
        if self.method != ShapingMethod::Htb || rule.flags & shape_flags::PER_CLIENT == 0 {
            return Ok(());
        }
        let key = ClientClassKey {
            client_addr,
            class,
            _pad: [0; 2],
        };
        let minor = match self.clients.get(&key) {
            Some(minor) => *minor,
            None => {
                let Some(minor) = self.allocate_minor() else {
                    return Ok(());
                };
                let htb = HtbClass {
                    minor,
                    rate_bytes: rule.rate_bytes,
                };
                for egress in self.interfaces.clone() {
                    self.netlink()?
                        .put_class(egress.ifindex, MAJOR, &htb)
                        .with_context(|| {
                            format!("adding client class 1:{minor:x} on {}", egress.name)
                        })?;
                }
                self.clients.insert(key, minor);
                minor
            }
        };
        datapath
            .maps_mut()
            .client_classes
            .insert(key, minor, 0)
            .context("writing a client's shaping class")?;
        Ok(())
    }

    /// Removes the root qdiscs the shaper put in place (a clean stop).
    pub fn stop(&mut self) {
        self.remove_roots();
    }

    pub fn status(&self) -> ShapingStatus {
        ShapingStatus {
            method: self.method.to_string(),
            interfaces: self.describe_interfaces(),
            rules: self.rules.len(),
            client_classes: self.clients.len(),
            edt_pacing: match self.edt {
                EdtPacing::Unknown => "not probed (no HTB shaping set up)",
                EdtPacing::Available => "sch_fq available",
                EdtPacing::NoSchFq => "not available: this kernel has no sch_fq",
            }
            .into(),
        }
    }

    fn describe_interfaces(&self) -> Vec<String> {
        self.interfaces
            .iter()
            .map(|e| format!("{} ({})", e.name, e.carries))
            .collect()
    }

    fn netlink(&mut self) -> anyhow::Result<&mut Netlink> {
        if self.netlink.is_none() {
            self.netlink = Some(Netlink::open()?);
        }
        Ok(self.netlink.as_mut().expect("opened above"))
    }

    /// Makes HTB `1:` the interface's root: takes over one already there (a restart),
    /// replaces the kernel's default, and refuses to replace a qdisc someone configured.
    fn put_root(&mut self, egress: &Egress) -> anyhow::Result<()> {
        if self.owned_roots.contains(&egress.ifindex) {
            return Ok(());
        }
        let qdiscs = self.netlink()?.qdiscs(egress.ifindex)?;
        let root = qdiscs
            .iter()
            .find(|q| q.parent == netlink_packet_route::tc::TcHandle::ROOT);
        match root {
            Some(q) if is_our_root(q) => {
                info!(interface = %egress.name, "took over the HTB qdisc a previous daemon left");
            }
            Some(q) if q.handle.major != 0 => anyhow::bail!(
                "interface `{}` already has a `{}` qdisc {:x}: at its root, set up by someone \
                 else; remove it (`tc qdisc del dev {} root`) or shape with \
                 `[shaping] method = \"policer\"` in the policy",
                egress.name,
                q.kind,
                q.handle.major,
                egress.name
            ),
            _ => self
                .netlink()?
                .replace_root_htb(egress.ifindex, MAJOR)
                .with_context(|| format!("putting an HTB qdisc on {} egress", egress.name))?,
        }
        self.owned_roots.push(egress.ifindex);
        Ok(())
    }

    /// One class per rule; classes of rules gone are removed, and when the rules changed,
    /// clients' classes too.
    fn put_rule_classes(&mut self, egress: &Egress, changed: bool) -> anyhow::Result<()> {
        let existing = self.netlink()?.class_minors(egress.ifindex, MAJOR)?;
        for minor in existing {
            let client_class = minor >= CLIENT_MINOR_BASE;
            let stale = if client_class {
                changed
            } else {
                !self.rules.contains_key(&minor)
            };
            if stale {
                self.netlink()?
                    .delete_class(egress.ifindex, MAJOR, minor)
                    .with_context(|| format!("removing class 1:{minor:x} from {}", egress.name))?;
            }
        }
        for (class, rule) in self.rules.clone() {
            let htb = HtbClass {
                minor: class,
                rate_bytes: rule.rate_bytes,
            };
            self.netlink()?
                .put_class(egress.ifindex, MAJOR, &htb)
                .with_context(|| format!("putting class 1:{class:x} on {}", egress.name))?;
        }
        Ok(())
    }

    /// Whether the kernel has `sch_fq`: tries to put one under a class made for the
    /// purpose, then removes the class.
    fn probe_sch_fq(&mut self) -> EdtPacing {
        let Some(egress) = self.interfaces.first().cloned() else {
            return EdtPacing::Unknown;
        };
        let probe = HtbClass {
            minor: PROBE_MINOR,
            rate_bytes: 125_000,
        };
        let Ok(netlink) = self.netlink() else {
            return EdtPacing::Unknown;
        };
        if netlink.put_class(egress.ifindex, MAJOR, &probe).is_err() {
            return EdtPacing::Unknown;
        }
        let fq = netlink.put_leaf(egress.ifindex, MAJOR, PROBE_MINOR, "fq", None);
        let _ = netlink.delete_class(egress.ifindex, MAJOR, PROBE_MINOR);
        match fq {
            Ok(()) => EdtPacing::Available,
            Err(_) => EdtPacing::NoSchFq,
        }
    }

    fn allocate_minor(&mut self) -> Option<u16> {
        if self.next_minor == PROBE_MINOR {
            if !self.warned_full {
                warn!(
                    "every per-client shaping class is in use: further clients share their rule's class"
                );
                self.warned_full = true;
            }
            return None;
        }
        let minor = self.next_minor;
        self.next_minor += 1;
        Some(minor)
    }

    /// Counts the HTB roots a previous daemon left (a hand-over) as ours, so that a policy
    /// without HTB rules removes them too.
    fn adopt_roots_left_behind(&mut self) -> anyhow::Result<()> {
        for egress in self.interfaces.clone() {
            if self.owned_roots.contains(&egress.ifindex) {
                continue;
            }
            let qdiscs = self.netlink()?.qdiscs(egress.ifindex)?;
            if qdiscs.iter().any(is_our_root) {
                self.owned_roots.push(egress.ifindex);
            }
        }
        Ok(())
    }

    fn remove_roots(&mut self) {
        let owned = std::mem::take(&mut self.owned_roots);
        for ifindex in owned {
            let removed = self.netlink().and_then(|n| n.delete_root(ifindex));
            if let Err(e) = removed {
                warn!(ifindex, error = %format!("{e:#}"), "could not remove the HTB qdisc");
            }
        }
    }
}

/// The HTB root this daemon (or a previous one) puts on an egress.
fn is_our_root(qdisc: &QdiscInfo) -> bool {
    qdisc.parent == netlink_packet_route::tc::TcHandle::ROOT
        && qdisc.kind == "htb"
        && qdisc.handle.major == MAJOR
}

/// Forgets every client class (the datapath's map and ours).
fn forget_clients(
    clients: &mut HashMap<ClientClassKey, u16>,
    datapath: &mut Datapath,
) -> anyhow::Result<()> {
    clients.clear();
    let map = &mut datapath.maps_mut().client_classes;
    let keys: Vec<ClientClassKey> = map.keys().filter_map(Result::ok).collect();
    for key in keys {
        let _ = map.remove(&key);
    }
    Ok(())
}
