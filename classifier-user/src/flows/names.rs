//! The names flows were classified by: in the daemon's memory, as the datapath's events
//! deliver them, and in the kernel's pinned `NAMES` map, where they outlive the daemon.
//!
//! The datapath puts a name into `NAMES` as it reads it (TLS SNI, HTTP Host), the daemon the
//! QUIC names it decrypts (and any name an event carried that the datapath could not keep).
//! A daemon started on a pinned datapath adopts the kernel's names ([`adopt`]); one that
//! records a flow whose name it never heard of reads the flow's names there ([`read_kept`]);
//! once a flow is recorded its names are removed ([`forget`]). So a crash, a `kill -9`, a
//! SIGUSR1 hand-over or an upgrade loses no name, and neither does a full event ring.
//!
//! Every name is checked as it is captured, from an event or from the kernel ([`Name::captured`]):
//! bytes that are not a host name never reach the daemon's memory, logs or records, only
//! the fact that the flow sent such bytes does ([`NOT_A_HOST_NAME`]).

use std::{
    borrow::{Borrow, BorrowMut},
    collections::{HashMap as StdHashMap, HashSet},
};

use aya::maps::{HashMap, IterableMap as _, MapData};
use classifier_common::{
    classify::{Method, evasion},
    flow::{FlowEntry, FlowKey},
    host_name::is_host_name,
    names::{FlowName, NameKey, version},
};

/// The note a record carries (among its evasion notes) when a name the flow sent was not a
/// host name: the name itself is not recorded.
pub const NOT_A_HOST_NAME: &str = "not-a-host-name";

/// What the daemon keeps in `NAMES` for a name that was not a host name (when the datapath
/// could not keep the bytes itself): itself not a host name, so a later daemon reads it back
/// as [`Name::NotAHostName`] too.
const NOT_A_HOST_NAME_KEPT: &[u8] = b"\0";

/// A server name as the daemon captured it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    /// A host name or address literal, as sent (case kept).
    Host(String),
    /// Bytes that are not a host name ([`classifier_common::host_name`]): only that fact
    /// is kept, never the bytes.
    NotAHostName,
}

impl Name {
    /// The name in `bytes` as sent on the wire (none when there are no bytes).
    pub fn captured(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() {
            return None;
        }
        Some(match std::str::from_utf8(bytes) {
            Ok(text) if is_host_name(bytes) => Self::Host(text.to_owned()),
            _ => Self::NotAHostName,
        })
    }

    /// The host name, if it is one.
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Host(name) => Some(name),
            Self::NotAHostName => None,
        }
    }

    /// The bytes `NAMES` keeps for it.
    fn kept_bytes(&self) -> &[u8] {
        match self {
            Self::Host(name) => name.as_bytes(),
            Self::NotAHostName => NOT_A_HOST_NAME_KEPT,
        }
    }
}

/// For logs: the name, or that it was none.
impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host(name) => f.write_str(name),
            Self::NotAHostName => write!(f, "({NOT_A_HOST_NAME})"),
        }
    }
}

/// The names flows were classified by, as the datapath's events delivered them (once per
/// flow) or the kernel kept them. Bounded: names of flows that left the flow table are
/// dropped at each walk.
#[derive(Debug, Default)]
pub struct FlowNames {
    names: StdHashMap<FlowKey, Names>,
}

/// The names a flow was read by: the one that classified it, and a second one from a
/// second version of the same bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub first: Option<Name>,
    pub second: Option<Name>,
}

impl Names {
    pub fn is_empty(&self) -> bool {
        self.first.is_none() && self.second.is_none()
    }

    /// The first name, if it is a host name.
    pub fn first_host(&self) -> Option<&str> {
        self.first.as_ref().and_then(Name::host)
    }

    /// The second name, if it is a host name.
    pub fn second_host(&self) -> Option<&str> {
        self.second.as_ref().and_then(Name::host)
    }

    /// One of them was not a host name.
    pub fn has_non_host_name(&self) -> bool {
        [&self.first, &self.second]
            .iter()
            .any(|name| matches!(name, Some(Name::NotAHostName)))
    }
}

impl FlowNames {
    /// Beyond this many names (flows the table already evicted), new ones are not kept.
    const MAX: usize = 1 << 20;

    pub fn insert(&mut self, key: FlowKey, name: Name) {
        self.entry(key, |names| names.first = Some(name));
    }

    /// A second name for the flow (see [`Names::second`]).
    pub fn insert_second(&mut self, key: FlowKey, name: Name) {
        self.entry(key, |names| names.second = Some(name));
    }

    /// The flow's names as the kernel kept them, where the events told nothing.
    pub fn adopt(&mut self, key: FlowKey, kept: Names) {
        self.entry(key, |names| {
            if names.first.is_none() {
                names.first = kept.first;
            }
            if names.second.is_none() {
                names.second = kept.second;
            }
        });
    }

    fn entry(&mut self, key: FlowKey, set: impl FnOnce(&mut Names)) {
        if self.names.len() < Self::MAX || self.names.contains_key(&key) {
            set(self.names.entry(key).or_default());
        }
    }

    pub fn get(&self, key: &FlowKey) -> Option<&Names> {
        self.names.get(key)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Forgets names of flows for which `live` says false.
    pub fn retain(&mut self, live: impl Fn(&FlowKey) -> bool) {
        self.names.retain(|key, _| live(key));
    }
}

/// The kernel's `NAMES` map.
pub type NamesMap<T> = HashMap<T, NameKey, FlowName>;

/// Whether the datapath (or the daemon) may have kept a name for a flow of `entry`: it was
/// classified by a name, or a second version of its first bytes was read.
pub fn may_be_named(entry: &FlowEntry) -> bool {
    matches!(
        Method::from_u8(entry.method),
        Method::Sni | Method::Host | Method::Quic | Method::BtTracker
    ) || entry.evasion & evasion::CONFLICT != 0
}

/// The flow's names in `map` that belong to its entry first seen at `first_seen_ns` (a name
/// of an earlier flow on the same addresses and ports is not its name).
pub fn read_kept<T: Borrow<MapData>>(
    map: &NamesMap<T>,
    key: &FlowKey,
    first_seen_ns: u64,
) -> Names {
    let read = |which| {
        map.get(&NameKey::new(*key, which), 0)
            .ok()
            .filter(|kept| kept.first_seen_ns == first_seen_ns)
            .and_then(|kept| Name::captured(kept.bytes()))
    };
    Names {
        first: read(version::FIRST),
        second: read(version::SECOND),
    }
}

/// The flow's names: what the daemon heard, and, for a flow that may be named (and whose
/// names the daemon did not all hear: it started after the flow was named, or the event
/// was lost), what the kernel kept.
pub fn of_flow<T: Borrow<MapData>>(
    heard: &FlowNames,
    kept: Option<&NamesMap<T>>,
    key: &FlowKey,
    entry: &FlowEntry,
) -> Option<Names> {
    let mut names = heard.get(key).cloned().unwrap_or_default();
    let complete =
        names.first.is_some() && (names.second.is_some() || entry.evasion & evasion::CONFLICT == 0);
    if let Some(kept) = kept
        && !complete
        && may_be_named(entry)
    {
        let found = read_kept(kept, key, entry.first_seen_ns);
        names.first = names.first.or(found.first);
        names.second = names.second.or(found.second);
    }
    (!names.is_empty()).then_some(names)
}

/// Puts a name of the flow whose entry was first seen at `first_seen_ns` into `map`.
pub fn keep<T: BorrowMut<MapData>>(
    map: &mut NamesMap<T>,
    key: &FlowKey,
    which: u8,
    first_seen_ns: u64,
    name: &Name,
) -> anyhow::Result<()> {
    let value = FlowName::new(first_seen_ns, name.kept_bytes());
    map.insert(NameKey::new(*key, which), value, 0)?;
    Ok(())
}

/// Removes the flow's names from `map` (gone already is as good as removed).
pub fn forget<T: BorrowMut<MapData>>(map: &mut NamesMap<T>, key: &FlowKey) {
    for which in [version::FIRST, version::SECOND] {
        let _ = map.remove(&NameKey::new(*key, which));
    }
}

/// What a starting daemon found in `NAMES`.
#[derive(Debug, Default)]
pub struct Adopted {
    /// The names of flows in the table, for the daemon's memory.
    pub names: Vec<(FlowKey, Names)>,
    /// Names of flows no longer in the table (or of an earlier flow on the same addresses
    /// and ports), removed.
    pub stale: usize,
}

/// Every name in `map` whose flow is among `flows` (the flow table) with the same first
/// packet; the others are removed. What a daemon started on a pinned datapath does first:
/// the names its predecessor knew are its own again.
pub fn adopt<T: BorrowMut<MapData>>(
    map: &mut NamesMap<T>,
    flows: &[(FlowKey, FlowEntry)],
) -> Adopted {
    let first_seen: StdHashMap<FlowKey, u64> = flows
        .iter()
        .map(|(key, entry)| (*key, entry.first_seen_ns))
        .collect();
    let kept: Vec<(NameKey, FlowName)> =
        match super::batch::lookup_all::<NameKey, FlowName>(map.map()) {
            Ok(kept) => kept,
            Err(_) => map.iter().filter_map(Result::ok).collect(),
        };
    let mut names: StdHashMap<FlowKey, Names> = StdHashMap::new();
    let mut stale = Vec::new();
    for (key, value) in kept {
        if first_seen.get(&key.flow) != Some(&value.first_seen_ns) {
            stale.push(key);
            continue;
        }
        let slot = names.entry(key.flow).or_default();
        match key.version {
            version::FIRST => slot.first = Name::captured(value.bytes()),
            version::SECOND => slot.second = Name::captured(value.bytes()),
            _ => stale.push(key),
        }
    }
    let stale_count = stale.iter().map(|k| k.flow).collect::<HashSet<_>>().len();
    for key in stale {
        let _ = map.remove(&key);
    }
    Adopted {
        names: names.into_iter().collect(),
        stale: stale_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use classifier_common::flow::ipv4_mapped;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            client_addr: ipv4_mapped([192, 0, 2, 10]),
            server_addr: ipv4_mapped([203, 0, 113, 10]),
            client_port: port,
            server_port: 443,
            protocol: 6,
            _pad: [0; 3],
        }
    }

    fn host(name: &str) -> Name {
        Name::Host(name.to_owned())
    }

    #[test]
    fn names_are_captured_as_host_names_or_as_not_being_one() {
        assert_eq!(Name::captured(b""), None);
        assert_eq!(
            Name::captured(b"www.BBC.co.uk"),
            Some(host("www.BBC.co.uk"))
        );
        for hostile in [
            &b"www.example.com\0"[..],
            b"=HYPERLINK(\"http://evil.example\")",
            b"www.example.com\r\nforged: line",
            b"www example.com",
            b"\xff\xfe.example",
        ] {
            let name = Name::captured(hostile).expect("bytes were sent");
            assert_eq!(name, Name::NotAHostName, "{hostile:?}");
            assert_eq!(
                name.to_string(),
                "(not-a-host-name)",
                "logs never see the bytes"
            );
            // What the daemon keeps for it in the kernel reads back the same.
            assert_eq!(Name::captured(name.kept_bytes()), Some(Name::NotAHostName));
        }
        let names = Names {
            first: Some(host("www.example.com")),
            second: Some(Name::NotAHostName),
        };
        assert_eq!(
            (names.first_host(), names.second_host()),
            (Some("www.example.com"), None)
        );
        assert!(names.has_non_host_name());
    }

    #[test]
    fn kept_names_fill_only_what_the_events_did_not_tell() {
        let mut names = FlowNames::default();
        names.insert(key(1), host("from.event"));
        names.adopt(
            key(1),
            Names {
                first: Some(host("from.kernel")),
                second: Some(host("second.kernel")),
            },
        );
        names.adopt(
            key(2),
            Names {
                first: Some(host("only.kernel")),
                second: None,
            },
        );
        assert_eq!(
            names.get(&key(1)),
            Some(&Names {
                first: Some(host("from.event")),
                second: Some(host("second.kernel")),
            })
        );
        assert_eq!(
            names.get(&key(2)).and_then(Names::first_host),
            Some("only.kernel")
        );
    }

    #[test]
    fn only_named_flows_are_looked_up() {
        let mut entry = FlowEntry {
            method: Method::Sni as u8,
            ..FlowEntry::default()
        };
        assert!(may_be_named(&entry));
        entry.method = Method::Port as u8;
        assert!(!may_be_named(&entry));
        entry.evasion = evasion::CONFLICT;
        assert!(
            may_be_named(&entry),
            "a second version may have named something"
        );
    }
}
