//! Writing a policy into the datapath's maps: the lookup tables (domains, ports, protocol
//! categories) and settings, and the double-buffered decision tables (groups, verdicts,
//! exceptions) swapped in by one generation bump.

use std::collections::HashSet;

use anyhow::Context as _;
use aya::maps::{
    Array, HashMap, MapData,
    lpm_trie::{Key, LpmTrie},
};
use classifier_common::{
    config::{ClassResult, Config, PortKey},
    domain::DomainEntry,
    flow::ipv4_mapped,
    maps,
    policy::{
        ActionEntry, ActionKey, ClassNameKey, ExceptionKey, GroupPrefixData, VlanKey,
        group_prefix_data, group_prefix_len, mapped_prefix_len, table_of,
    },
    shaping::{MAX_SHAPE_CLASSES, ShapeRule, shaper_index},
};

use crate::{
    bpf_maps::Maps,
    policy::{ClassIds, ClassTables},
};

/// Room for `domains` entries with a quarter spare, as a power of two (hash maps work
/// best well below full), never less than the object's default.
pub fn domain_capacity(domains: usize) -> u32 {
    let wanted = (domains + domains / 4).max(maps::DOMAINS_DEFAULT_ENTRIES);
    wanted.next_power_of_two().min(u32::MAX as usize) as u32
}

/// Makes the maps hold exactly the tables: inserts or updates every entry, then removes
/// entries left from a previous policy.
pub fn install(maps: &mut Maps, tables: &ClassTables, config: &Config) -> anyhow::Result<()> {
    // The ids first: once a domain points at a new id, a restart must find that id's name.
    record_class_ids(&mut maps.class_ids, &tables.ids)?;
    install_domains(&mut maps.domains, tables)?;
    install_ports(&mut maps.ports, tables)?;
    for (app, category) in tables.protocol_categories.iter().enumerate() {
        maps.protocol_categories.set(app as u32, *category, 0)?;
    }
    maps.config
        .set(0, *config, 0)
        .context("writing the datapath settings")?;
    Ok(())
}

/// Adds the names `ids` has and the `CLASS_IDS` map lacks. Nothing is removed: a flow may
/// still carry the id of a name the policy dropped.
fn record_class_ids(
    map: &mut HashMap<MapData, ClassNameKey, u16>,
    ids: &ClassIds,
) -> anyhow::Result<()> {
    for (key, id) in ids.entries() {
        if map.get(&key, 0).ok() == Some(id) {
            continue;
        }
        map.insert(key, id, 0).with_context(|| {
            format!(
                "recording category and application ids ({} names since the flow table was \
                 made; room for {}): restart the daemon with a fresh pin directory",
                ids.len(),
                maps::CLASS_IDS_MAX_ENTRIES
            )
        })?;
    }
    Ok(())
}

/// The names and ids the `CLASS_IDS` map holds.
pub fn read_class_ids<T: std::borrow::Borrow<MapData>>(
    map: &HashMap<T, ClassNameKey, u16>,
) -> ClassIds {
    ClassIds::from_entries(map.iter().filter_map(Result::ok))
}

fn install_domains(
    map: &mut HashMap<MapData, u64, DomainEntry>,
    tables: &ClassTables,
) -> anyhow::Result<()> {
    for (key, entry) in &tables.domains {
        map.insert(key, entry, 0).with_context(|| {
            format!(
                "writing {} domains into the datapath (is the pinned domain table too small? \
                 restart the daemon with a fresh pin directory)",
                tables.domains.len()
            )
        })?;
    }
    let stale: Vec<u64> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|key| !tables.domains.contains_key(key))
        .collect();
    for key in stale {
        let _ = map.remove(&key);
    }
    Ok(())
}

fn install_ports(
    map: &mut HashMap<MapData, PortKey, ClassResult>,
    tables: &ClassTables,
) -> anyhow::Result<()> {
    let wanted: HashSet<PortKey> = tables.ports.iter().map(|(key, _)| *key).collect();
    for (key, rule) in &tables.ports {
        map.insert(key, rule, 0).context("writing port rules")?;
    }
    let stale: Vec<PortKey> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|key| !wanted.contains(key))
        .collect();
    for key in stale {
        let _ = map.remove(&key);
    }
    Ok(())
}

pub use crate::policy::decide::DecisionTables;

/// Writes `tables` into the idle half of every policy map, then makes it the one in force
/// by bumping the generation (one 4-byte write). Returns the new generation.
pub fn swap_policy(maps: &mut Maps, tables: &DecisionTables) -> anyhow::Result<u32> {
    let generation = current_generation(&maps.policy_generation)?;
    let next = generation.wrapping_add(1);
    let table = table_of(next);
    fill_prefixes(&mut maps.group_prefixes, table, &tables.prefixes)?;
    fill_vlans(&mut maps.group_vlans, table, &tables.vlans)?;
    fill_actions(&mut maps.actions, table, &tables.actions)?;
    fill_exceptions(
        &mut maps.client_exceptions,
        table,
        &tables.client_exceptions,
    )?;
    fill_shapers(&mut maps.shapers, table, &tables.shapers)?;
    maps.policy_generation
        .set(0, next, 0)
        .context("switching to the new policy tables")?;
    Ok(next)
}

/// The generation in force.
fn current_generation(word: &Array<MapData, u32>) -> anyhow::Result<u32> {
    Ok(word.get(&0, 0)?)
}

fn fill_prefixes(
    trie: &mut LpmTrie<MapData, GroupPrefixData, u16>,
    table: u8,
    prefixes: &[(ipnet::IpNet, u16)],
) -> anyhow::Result<()> {
    let stale: Vec<Key<GroupPrefixData>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|key| key.data()[0] == table)
        .collect();
    for key in stale {
        let _ = trie.remove(&key);
    }
    for (net, group) in prefixes {
        let (addr, len) = mapped(net);
        let key = Key::new(group_prefix_len(len), group_prefix_data(table, addr));
        trie.insert(&key, group, 0)
            .with_context(|| format!("writing group prefix {net}"))?;
    }
    Ok(())
}

/// `[datapath] lan_prefixes` into `LAN_PREFIXES`, replacing what was there.
pub fn install_lan_prefixes(
    trie: &mut LpmTrie<MapData, [u8; 16], u8>,
    prefixes: &[ipnet::IpNet],
) -> anyhow::Result<()> {
    let stale: Vec<Key<[u8; 16]>> = trie.keys().filter_map(Result::ok).collect();
    for key in stale {
        let _ = trie.remove(&key);
    }
    for net in prefixes {
        let (addr, len) = mapped(net);
        trie.insert(&Key::new(len, addr), 1, 0)
            .with_context(|| format!("writing LAN prefix {net}"))?;
    }
    Ok(())
}

/// A prefix in the IPv4-mapped address space the datapath keys clients by.
fn mapped(net: &ipnet::IpNet) -> ([u8; 16], u32) {
    match net {
        ipnet::IpNet::V4(v4) => (
            ipv4_mapped(v4.network().octets()),
            mapped_prefix_len(v4.prefix_len()),
        ),
        ipnet::IpNet::V6(v6) => (v6.network().octets(), v6.prefix_len() as u32),
    }
}

fn mapped_addr(addr: std::net::IpAddr) -> [u8; 16] {
    match addr.to_canonical() {
        std::net::IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

fn fill_vlans(
    map: &mut HashMap<MapData, VlanKey, u16>,
    table: u8,
    vlans: &[(u16, u16)],
) -> anyhow::Result<()> {
    replace_table(map, |key: &VlanKey| key.table == table)?;
    for (vlan, group) in vlans {
        let key = VlanKey {
            table,
            _pad: 0,
            vlan: *vlan,
        };
        map.insert(key, group, 0).context("writing VLAN groups")?;
    }
    Ok(())
}

fn fill_actions(
    map: &mut HashMap<MapData, ActionKey, ActionEntry>,
    table: u8,
    actions: &[((u16, u16), ActionEntry)],
) -> anyhow::Result<()> {
    replace_table(map, |key: &ActionKey| key.table == table)?;
    for ((group, category), entry) in actions {
        let key = ActionKey {
            table,
            _pad: 0,
            group: *group,
            category: *category,
            _pad2: 0,
        };
        map.insert(key, entry, 0)
            .context("writing the action table")?;
    }
    Ok(())
}

fn fill_exceptions(
    map: &mut HashMap<MapData, ExceptionKey, u8>,
    table: u8,
    exceptions: &[(std::net::IpAddr, u16)],
) -> anyhow::Result<()> {
    replace_table(map, |key: &ExceptionKey| key.table == table)?;
    for (client, category) in exceptions {
        let key = ExceptionKey {
            client_addr: mapped_addr(*client),
            category: *category,
            table,
            _pad: 0,
        };
        map.insert(key, 1, 0).context("writing client exceptions")?;
    }
    Ok(())
}

/// Writes every class of the idle table: the policy's rules, and empty ones (rate 0:
/// pass) for classes it does not use.
fn fill_shapers(
    array: &mut Array<MapData, ShapeRule>,
    table: u8,
    shapers: &[(u16, ShapeRule)],
) -> anyhow::Result<()> {
    for class in 0..MAX_SHAPE_CLASSES as u16 {
        let rule = shapers
            .iter()
            .find(|(c, _)| *c == class)
            .map_or_else(ShapeRule::default, |(_, rule)| *rule);
        array
            .set(shaper_index(table, class), rule, 0)
            .context("writing the shaping rules")?;
    }
    Ok(())
}

/// Removes the keys of one table (the idle one) before it is filled again.
fn replace_table<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    in_table: impl Fn(&K) -> bool,
) -> anyhow::Result<()> {
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| in_table(k))
        .collect();
    for key in stale {
        let _ = map.remove(&key);
    }
    Ok(())
}
