//! Typed handles on the BPF object's maps, named and typed by the one list in
//! [`classifier_common::maps`]: a caller names a map by its entry there (`maps::FLOWS`)
//! and gets a handle whose key and value types are the list's, so neither a map's name nor
//! its types are written again here, and a handle of other types does not compile.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, ProgramArray, RingBuf},
};
use classifier_common::maps::MapDef;

/// An aya handle that reads and writes keys `K` and values `V`.
pub trait Typed<K, V> {}
impl<T, K: Pod, V: Pod> Typed<K, V> for HashMap<T, K, V> {}
impl<T, K: Pod, V: Pod> Typed<K, V> for LpmTrie<T, K, V> {}
impl<T, V: Pod> Typed<u32, V> for Array<T, V> {}
impl<T, V: Pod> Typed<u32, V> for PerCpuArray<T, V> {}
impl<T> Typed<u32, u32> for ProgramArray<T> {}
impl<T> Typed<(), ()> for RingBuf<T> {}

/// The map `def` of `ebpf`, to read.
pub fn get<'a, K, V, H>(ebpf: &'a Ebpf, def: MapDef<K, V>) -> anyhow::Result<H>
where
    H: Typed<K, V> + TryFrom<&'a Map, Error = MapError>,
{
    let name = def.name();
    let map = ebpf.map(name).with_context(|| no_map(name))?;
    H::try_from(map).with_context(|| not_as_listed(&def))
}

/// The map `def` of `ebpf`, to change.
pub fn get_mut<'a, K, V, H>(ebpf: &'a mut Ebpf, def: MapDef<K, V>) -> anyhow::Result<H>
where
    H: Typed<K, V> + TryFrom<&'a mut Map, Error = MapError>,
{
    let name = def.name();
    let map = ebpf.map_mut(name).with_context(|| no_map(name))?;
    H::try_from(map).with_context(|| not_as_listed(&def))
}

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
