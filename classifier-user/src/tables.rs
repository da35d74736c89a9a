//! Writing a policy's lookup tables (domains, ports, protocol categories) and settings
//! into the datapath's maps.

use std::collections::HashSet;

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};
use classifier_common::{
    config::{ClassResult, Config, PortKey},
    domain::DomainEntry,
    maps,
};

use crate::policy::ClassTables;

/// Room for `domains` entries with a quarter spare, as a power of two (hash maps work
/// best well below full), never less than the object's default.
pub fn domain_capacity(domains: usize) -> u32 {
    let wanted = (domains + domains / 4).max(maps::DOMAINS_DEFAULT_ENTRIES);
    wanted.next_power_of_two().min(u32::MAX as usize) as u32
}

/// Makes the maps hold exactly the tables: inserts or updates every entry, then removes
/// entries left from a previous policy.
pub fn install(ebpf: &mut Ebpf, tables: &ClassTables, config: &Config) -> anyhow::Result<()> {
    install_domains(ebpf, tables)?;
    install_ports(ebpf, tables)?;
    let mut categories: Array<&mut MapData, u16> = Array::try_from(
        ebpf.map_mut(maps::PROTOCOL_CATEGORIES)
            .context("no protocol category map")?,
    )?;
    for (app, category) in tables.protocol_categories.iter().enumerate() {
        categories.set(app as u32, *category, 0)?;
    }
    let mut settings: Array<&mut MapData, Config> =
        Array::try_from(ebpf.map_mut(maps::CONFIG).context("no CONFIG map")?)?;
    settings
        .set(0, *config, 0)
        .context("writing the datapath settings")?;
    Ok(())
}

fn install_domains(ebpf: &mut Ebpf, tables: &ClassTables) -> anyhow::Result<()> {
    let mut map: HashMap<&mut MapData, u64, DomainEntry> =
        HashMap::try_from(ebpf.map_mut(maps::DOMAINS).context("no DOMAINS map")?)?;
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

fn install_ports(ebpf: &mut Ebpf, tables: &ClassTables) -> anyhow::Result<()> {
    let mut map: HashMap<&mut MapData, PortKey, ClassResult> =
        HashMap::try_from(ebpf.map_mut(maps::PORTS).context("no PORTS map")?)?;
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
