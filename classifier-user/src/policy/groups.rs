//! Groups of clients (staff, guest Wi-Fi, ICT, members) by VLAN, prefix or address.
//!
//! A client's group: the group of its VLAN if one claims it, else the group with the
//! longest prefix containing its address (an address is a /32 or /128 prefix), else the
//! implicit `default` group (id 0).

use std::{collections::HashMap, net::IpAddr};

use indexmap::IndexMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::source::{FieldPath, PolicyError, Source};

/// The group of clients no group claims.
pub const DEFAULT_GROUP: &str = "default";
/// Groups the datapath can tell apart (its group field is a u16; tables stay small).
pub const MAX_GROUPS: usize = 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSection {
    #[serde(default)]
    pub description: String,
    /// Networks: `192.0.2.0/25`, `2001:db8:1::/64`.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Single hosts: `192.0.2.77`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// 802.1Q VLAN ids whose clients all belong here.
    #[serde(default)]
    pub vlans: Vec<u16>,
}

/// Validated groups; ids are 1.. in file order, 0 is [`DEFAULT_GROUP`].
#[derive(Debug, Default, Clone)]
pub struct Groups {
    names: Vec<String>,
    /// Every prefix (addresses as host prefixes) and its group, longest first.
    pub prefixes: Vec<(IpNet, u16)>,
    /// Which of `prefixes` were written as `addresses` (for explanations).
    addresses: std::collections::HashSet<IpNet>,
    pub vlans: HashMap<u16, u16>,
}

/// Why a client is in its group, as `policy explain` tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum GroupReason {
    /// Its VLAN is the group's.
    Vlan { vlan: u16 },
    /// The longest of the group's `prefixes` containing it.
    Prefix { prefix: String },
    /// Listed in the group's `addresses`.
    Address { address: String },
    /// No group claims it: `default`.
    #[default]
    Unclaimed,
}

impl std::fmt::Display for GroupReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupReason::Vlan { vlan } => write!(f, "its VLAN {vlan} is the group's (vlans)"),
            GroupReason::Prefix { prefix } => {
                write!(
                    f,
                    "in prefix {prefix} (the longest listed prefix containing it)"
                )
            }
            GroupReason::Address { address } => {
                write!(f, "address {address} is listed (addresses)")
            }
            GroupReason::Unclaimed => {
                f.write_str("no group lists its address, a prefix containing it or its VLAN")
            }
        }
    }
}

impl Groups {
    pub fn compile(
        sections: &IndexMap<String, GroupSection>,
        source: &Source<'_>,
    ) -> Result<Self, PolicyError> {
        let root = FieldPath::root().key("groups");
        if sections.len() >= MAX_GROUPS {
            return Err(source.error_at(&root, format!("at most {} groups", MAX_GROUPS - 1)));
        }
        let mut groups = Groups::default();
        let mut owners: HashMap<IpNet, &str> = HashMap::new();
        for (index, (name, section)) in sections.iter().enumerate() {
            let path = root.key(name);
            if name == DEFAULT_GROUP {
                return Err(source.error_at(
                    &path,
                    "`default` is the group of unmatched clients; give this group another name",
                ));
            }
            let id = index as u16 + 1;
            groups.names.push(name.clone());
            let nets = section
                .prefixes
                .iter()
                .enumerate()
                .map(|(i, p)| (path.key("prefixes").index(i), parse_prefix(p), false))
                .chain(
                    section
                        .addresses
                        .iter()
                        .enumerate()
                        .map(|(i, a)| (path.key("addresses").index(i), parse_address(a), true)),
                );
            for (field, net, is_address) in nets {
                let net = net.map_err(|e| source.error_at(&field, e))?;
                if let Some(other) = owners.insert(net, name) {
                    return Err(source.error_at(
                        &field,
                        format!(
                            "{net} is already in group `{other}`: a network belongs to one group"
                        ),
                    ));
                }
                if is_address {
                    groups.addresses.insert(net);
                }
                groups.prefixes.push((net, id));
            }
            for (i, vlan) in section.vlans.iter().enumerate() {
                if !(1..=4094).contains(vlan) {
                    return Err(source.error_at(
                        &path.key("vlans").index(i),
                        format!("VLAN {vlan}: ids run from 1 to 4094"),
                    ));
                }
                if groups.vlans.insert(*vlan, id).is_some() {
                    return Err(source.error_at(
                        &path.key("vlans").index(i),
                        format!("VLAN {vlan} is already in another group"),
                    ));
                }
            }
        }
        groups
            .prefixes
            .sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Ok(groups)
    }

    /// The id of the group named `name` (0 for `default`).
    pub fn id(&self, name: &str) -> Option<u16> {
        if name == DEFAULT_GROUP {
            return Some(0);
        }
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| i as u16 + 1)
    }

    pub fn name(&self, id: u16) -> &str {
        match id {
            0 => DEFAULT_GROUP,
            id => self
                .names
                .get(id as usize - 1)
                .map_or("unknown-group", String::as_str),
        }
    }

    /// Every group name, `default` first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(DEFAULT_GROUP).chain(self.names.iter().map(String::as_str))
    }

    /// Number of groups including `default`.
    pub fn len(&self) -> usize {
        self.names.len() + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The client's group: VLAN first, then the longest prefix, else `default`.
    pub fn group_of(&self, client: IpAddr, vlan: Option<u16>) -> u16 {
        self.membership(client, vlan).0
    }

    /// The client's group ([`Groups::group_of`]) and why.
    pub fn membership(&self, client: IpAddr, vlan: Option<u16>) -> (u16, GroupReason) {
        if let Some((vlan, group)) = vlan.and_then(|v| Some((v, *self.vlans.get(&v)?))) {
            return (group, GroupReason::Vlan { vlan });
        }
        let client = client.to_canonical();
        match self.prefixes.iter().find(|(net, _)| net.contains(&client)) {
            Some((net, group)) if self.addresses.contains(net) => (
                *group,
                GroupReason::Address {
                    address: net.addr().to_string(),
                },
            ),
            Some((net, group)) => (
                *group,
                GroupReason::Prefix {
                    prefix: net.to_string(),
                },
            ),
            None => (0, GroupReason::Unclaimed),
        }
    }
}

pub(crate) fn parse_prefix(text: &str) -> Result<IpNet, String> {
    let net: IpNet = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a network (write 192.0.2.0/24 or 2001:db8::/48)"))?;
    if net.trunc() != net {
        return Err(format!(
            "`{text}` has host bits set: did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

fn parse_address(text: &str) -> Result<IpNet, String> {
    let addr: IpAddr = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not an address (write 192.0.2.10 or 2001:db8::10)"))?;
    Ok(IpNet::from(addr))
}
