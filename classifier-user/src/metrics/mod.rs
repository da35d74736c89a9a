//! The datapath's global counters ([`Stat`]), summed over CPUs; and the Prometheus
//! exposition of everything the daemon counts ([`prometheus`]).

pub mod prometheus;

use std::{borrow::Borrow, path::Path};

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray};
use classifier_common::{maps, stats::Stat};
use serde::{Serialize, Serializer, ser::SerializeMap as _};

/// A snapshot of every global counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathStats {
    values: [u64; Stat::COUNT as usize],
}

impl Default for DatapathStats {
    fn default() -> Self {
        Self {
            values: [0; Stat::COUNT as usize],
        }
    }
}

impl DatapathStats {
    pub fn get(&self, stat: Stat) -> u64 {
        self.values[stat as usize]
    }
}

impl Serialize for DatapathStats {
    /// `{"packets": n, "not_ip": n, ...}`, named by [`Stat::name`].
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Stat::ALL.len()))?;
        for stat in Stat::ALL {
            map.serialize_entry(stat.name(), &self.get(stat))?;
        }
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for DatapathStats {
    /// What [`Serialize`] wrote; counters this version does not know are ignored.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let named = std::collections::BTreeMap::<String, u64>::deserialize(deserializer)?;
        let mut stats = Self::default();
        for stat in Stat::ALL {
            stats.values[stat as usize] = named.get(stat.name()).copied().unwrap_or(0);
        }
        Ok(stats)
    }
}

/// Sums each counter over all CPUs.
pub fn read_stats<T: Borrow<MapData>>(
    table: &PerCpuArray<T, u64>,
) -> anyhow::Result<DatapathStats> {
    let mut stats = DatapathStats::default();
    for stat in Stat::ALL {
        let per_cpu = table
            .get(&(stat as u32), 0)
            .with_context(|| format!("reading counter {}", stat.name()))?;
        stats.values[stat as usize] = per_cpu.iter().sum();
    }
    Ok(stats)
}

/// The counters of the datapath pinned under `pin_dir`.
pub fn read_pinned(pin_dir: &Path) -> anyhow::Result<DatapathStats> {
    let table: PerCpuArray<MapData, u64> = crate::bpf_maps::from_pin(pin_dir, maps::STATS)?;
    read_stats(&table)
}
