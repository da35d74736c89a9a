//! Typed handles on the BPF object's maps, named and typed by the one list in
//! [`classifier_common::maps`]: a handle is taken by naming a map's entry there
//! (`maps::FLOWS`) and has the key and value types the list gives it, so neither a map's
//! name nor its types are written again here, and a handle of other types does not
//! compile.
//!
//! The loader takes every handle the daemon uses once, as the object is loaded, into one
//! [`Maps`]; the rest of the daemon reads and writes the maps through it. A map pinned by a
//! running daemon is opened by its entry as well ([`from_pin`]).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, ProgramArray, RingBuf},
};
use classifier_common::{
    config::{ClassResult, Config, PeerKey, PortKey, SourceQuota, StreamBuf},
    domain::DomainEntry,
    flow::{FlowEntry, FlowKey, FragmentKey},
    maps::{self, MapDef, MapSpec},
    names::{FlowName, NameKey},
    nat::{NatConfig, PublicSource},
    policy::{ActionEntry, ActionKey, ClassNameKey, ExceptionKey, GroupPrefixData, VlanKey},
    shaping::{BucketKey, ClientClassKey, ShapeRule, TokenBucket},
};

/// Declares [`Maps`] with one handle per listed field, taken from the object by the map's
/// entry in the list, and [`TAKEN`], the maps it holds.
macro_rules! handles {
    ($(
        $(#[$doc:meta])*
        $field:ident: $handle:ty = $map:ident;
    )*) => {
        /// The handles on the maps the daemon reads and writes, taken out of the object
        /// once, as it is loaded.
        pub struct Maps {
            $(
                $(#[$doc])*
                pub $field: $handle,
            )*
            /// The ring buffer of events, until the daemon takes it out to wait on it
            /// ([`Maps::take_events`]).
            events: Option<RingBuf<MapData>>,
        }

        impl Maps {
            /// Takes the handles out of `ebpf`: afterwards the object holds only the maps
            /// of [`KERNEL_ONLY`].
            pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
                Ok(Self {
                    $($field: take(ebpf, maps::$map)?,)*
                    events: Some(take(ebpf, maps::EVENTS)?),
                })
            }
        }

        /// The maps [`Maps`] holds handles on.
        pub const TAKEN: &[MapSpec] = &[$(maps::$map.spec,)* maps::EVENTS.spec];
    };
}

handles! {
    /// Per-flow counters and classification.
    flows: HashMap<MapData, FlowKey, FlowEntry> = FLOWS;
    /// Global per-CPU counters ([`classifier_common::stats::Stat`]).
    stats: PerCpuArray<MapData, u64> = STATS;
    /// Domain suffix hash → category and application.
    domains: HashMap<MapData, u64, DomainEntry> = DOMAINS;
    /// (protocol, port) → category and application.
    ports: HashMap<MapData, PortKey, ClassResult> = PORTS;
    /// Built-in protocol → the category the policy gives it.
    protocol_categories: Array<MapData, u16> = PROTO_CATS;
    /// BitTorrent peers seen recently: peer endpoint → CLOCK_MONOTONIC ns last seen.
    peers: HashMap<MapData, PeerKey, u64> = PEERS;
    /// Per-flow reassembly buffers (emptied by `Datapath::forget_traffic` only).
    reassembly: HashMap<MapData, FlowKey, StreamBuf> = REASM;
    /// Per-client quotas (emptied by `Datapath::forget_traffic` only).
    sources: HashMap<MapData, [u8; 16], SourceQuota> = SOURCES;
    /// The LAN's prefixes (`[datapath] lan_prefixes`).
    lan_prefixes: LpmTrie<MapData, [u8; 16], u8> = LAN_PREFIXES;
    /// Fragmented datagrams → their flow (emptied by `Datapath::forget_traffic` only).
    fragments: HashMap<MapData, FragmentKey, FlowKey> = FRAGMENTS;
    /// The names flows were classified by, kept in the kernel ([`crate::flows::names`]).
    names: HashMap<MapData, NameKey, FlowName> = NAMES;
    /// Classes the daemon works out for the datapath (QUIC server names).
    class_results: HashMap<MapData, FlowKey, ClassResult> = CLASS_RESULTS;
    /// The datapath settings in force.
    config: Array<MapData, Config> = CONFIG;
    /// The tail-call table.
    classifiers: ProgramArray<MapData> = CLASSIFIERS;
    /// Client prefix → group, both halves of the double-buffered policy.
    group_prefixes: LpmTrie<MapData, GroupPrefixData, u16> = GROUP_PREFIXES;
    /// VLAN → group.
    group_vlans: HashMap<MapData, VlanKey, u16> = GROUP_VLANS;
    /// (table, group, category) → verdict.
    actions: HashMap<MapData, ActionKey, ActionEntry> = ACTIONS;
    /// (client, category, table) → allowed by an exception.
    client_exceptions: HashMap<MapData, ExceptionKey, u8> = CLIENT_EXC;
    /// The policy generation (its low bit picks the table in force).
    policy_generation: Array<MapData, u32> = POLICY_GEN;
    /// (table, shape class) → shaping rule.
    shapers: Array<MapData, ShapeRule> = SHAPERS;
    /// Token buckets (allowances and policers) and minute counts.
    buckets: HashMap<MapData, BucketKey, TokenBucket> = BUCKETS;
    /// Clients' own HTB classes under per-client shaping rules.
    client_classes: HashMap<MapData, ClientClassKey, u16> = CLIENT_CLASSES;
    /// Category and application name → id, for as long as the flow table lives.
    class_ids: HashMap<MapData, ClassNameKey, u16> = CLASS_IDS;
    /// The NAT hand-over's settings.
    nat_config: Array<MapData, NatConfig> = NAT_CONFIG;
    /// Flow → the translated source its uploads left the WAN with.
    public_sources: HashMap<MapData, FlowKey, PublicSource> = NAT_PUBLIC;
}

/// The maps only the kernel side reads and writes, left in the loaded object: its per-CPU
/// scratch and stream buffers, the legacy build's loop elements, and the NAT hand-over's slots (the daemon learns a flow's
/// translated source from `NAT_PUBLIC`).
pub const KERNEL_ONLY: &[MapSpec] = &[
    maps::NEW_FLOW.spec,
    maps::SCRATCH.spec,
    maps::SEGMENT.spec,
    maps::DEFRAG.spec,
    maps::SCRATCH_KEYS.spec,
    maps::PACKET.spec,
    maps::LOOPS.spec,
    maps::LOOP_STEPS.spec,
    maps::NAME_SLOT.spec,
    maps::JOBS.spec,
    maps::NAT_SLOTS.spec,
];

impl Maps {
    /// The ring buffer of events, taken out so that the daemon can wait on it on its own;
    /// there is one, so a second call fails.
    pub fn take_events(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        self.events
            .take()
            .context("the event ring buffer was taken out already")
    }
}

/// An aya handle that reads and writes keys `K` and values `V`.
pub trait Typed<K, V> {}
impl<T, K: Pod, V: Pod> Typed<K, V> for HashMap<T, K, V> {}
impl<T, K: Pod, V: Pod> Typed<K, V> for LpmTrie<T, K, V> {}
impl<T, V: Pod> Typed<u32, V> for Array<T, V> {}
impl<T, V: Pod> Typed<u32, V> for PerCpuArray<T, V> {}
impl<T> Typed<u32, u32> for ProgramArray<T> {}
impl<T> Typed<(), ()> for RingBuf<T> {}

/// The map `def`, taken out of `ebpf` (to be waited on by another thread).
pub fn take<K, V, H>(ebpf: &mut Ebpf, def: MapDef<K, V>) -> anyhow::Result<H>
where
    H: Typed<K, V> + TryFrom<Map, Error = MapError>,
{
    let name = def.name();
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("{} (already taken?)", no_map(name)))?;
    H::try_from(map).with_context(|| not_as_listed(&def))
}

/// Where the daemon pins the map `def` under `pin_dir`.
pub fn pin_path<K, V>(pin_dir: &Path, def: MapDef<K, V>) -> PathBuf {
    pin_dir.join(def.name())
}

/// The map `def` a daemon pinned under `pin_dir`, opened without loading the object.
pub fn from_pin<K, V, H>(pin_dir: &Path, def: MapDef<K, V>) -> anyhow::Result<H>
where
    H: Typed<K, V> + TryFrom<Map, Error = MapError>,
{
    let path = pin_path(pin_dir, def);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("no {} map pinned at {}", def.name(), path.display()))?;
    let map = Map::from_map_data(data)?;
    H::try_from(map).with_context(|| format!("{}: has an unexpected layout", path.display()))
}

fn no_map(name: &str) -> String {
    format!("the BPF object has no {name} map")
}

fn not_as_listed<K, V>(def: &MapDef<K, V>) -> String {
    let spec = &def.spec;
    format!(
        "{} is not the {:?} map of {}-byte keys and {:?}-byte values that \
         classifier_common::maps lists",
        spec.name, spec.kind, spec.key_size, spec.value_size
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each map of the list is either one the daemon holds a handle on or the kernel
    /// side's alone, never both and never neither: a map added to the list is given a
    /// place here.
    #[test]
    fn every_map_is_taken_or_left_to_the_kernel() {
        for map in maps::ALL {
            let taken = TAKEN.contains(map);
            let kernel_only = KERNEL_ONLY.contains(map);
            assert!(
                taken != kernel_only,
                "{}: taken {taken}, kernel only {kernel_only}",
                map.name
            );
        }
        assert_eq!(TAKEN.len() + KERNEL_ONLY.len(), maps::ALL.len());
    }

    /// Private maps carry what one program hands the next within a packet: the daemon
    /// has nothing to read there.
    #[test]
    fn the_daemon_takes_no_private_map() {
        for map in TAKEN {
            assert_eq!(map.pinning, maps::Pinning::Pinned, "{}", map.name);
        }
    }
}
