//! The one list of the datapath's BPF programs: each program's name and kind, and which
//! of them the tail-call table (`CLASSIFIERS`) holds at which index.
//!
//! The kernel side defines each program as a function of the same name in
//! `classifier-ebpf/src/main.rs` (`#[xdp]` or `#[classifier]`: the function's name is the
//! program's name in the object); the daemon loads, attaches and pins them by naming an
//! entry here. A test of the daemon checks this list against the built object: every
//! program in it is here, of the same kind, and nothing listed is missing.

use core::marker::PhantomData;

use crate::config::tail;

/// The kind of a program: the hook it runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// XDP (`#[xdp]`): a frame as the driver received it.
    Xdp,
    /// TC (`#[classifier]`): an skb at a clsact hook.
    Tc,
}

impl core::fmt::Display for ProgramKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ProgramKind::Xdp => "XDP",
            ProgramKind::Tc => "TC",
        })
    }
}

/// Marker of an XDP program's entry ([`ProgramDef<Xdp>`]).
pub enum Xdp {}
/// Marker of a TC program's entry ([`ProgramDef<Tc>`]).
pub enum Tc {}

/// The [`ProgramKind`] a marker stands for.
pub trait Kind {
    const KIND: ProgramKind;
}
impl Kind for Xdp {
    const KIND: ProgramKind = ProgramKind::Xdp;
}
impl Kind for Tc {
    const KIND: ProgramKind = ProgramKind::Tc;
}

/// A program's entry in the list, without its kind's type: what the test against the
/// object and the loading read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramSpec {
    pub name: &'static str,
    pub kind: ProgramKind,
}

/// A program's entry in the list, with its kind `K` ([`Xdp`] or [`Tc`]) as a type: the
/// user side gets the program as aya's type for that kind, so an XDP program is never
/// attached at a TC hook.
pub struct ProgramDef<K> {
    pub spec: ProgramSpec,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for ProgramDef<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K> Copy for ProgramDef<K> {}

impl<K: Kind> ProgramDef<K> {
    const fn new(name: &'static str) -> Self {
        Self {
            spec: ProgramSpec {
                name,
                kind: K::KIND,
            },
            _kind: PhantomData,
        }
    }
}

impl<K> ProgramDef<K> {
    /// The program's name in the object.
    pub const fn name(&self) -> &'static str {
        self.spec.name
    }
}

/// Declares each program as a [`ProgramDef`] constant (named as the program, in capitals),
/// and [`ALL`] listing them.
macro_rules! programs {
    ($(
        $(#[$doc:meta])*
        $constant:ident: $kind:ident = $name:ident;
    )*) => {
        $(
            $(#[$doc])*
            pub const $constant: ProgramDef<$kind> = ProgramDef::new(stringify!($name));
        )*

        /// Every program of the BPF object.
        pub const ALL: &[ProgramSpec] = &[$($constant.spec),*];
    };
}

programs! {
    /// LAN ingress: client → server; counts, then classifies while a flow's class is open.
    LAN_INGRESS: Xdp = lan_ingress;
    /// LAN egress: server → client.
    LAN_EGRESS: Tc = lan_egress;
    /// WAN egress: client → server, for shaping uploads.
    WAN_EGRESS: Tc = wan_egress;
    /// LAN ingress (only where fail-fast answers go out by TC): sends them back.
    LAN_REPLIES: Tc = lan_replies;
    /// LAN ingress (only on a gateway that translates addresses): the NAT hand-over.
    LAN_NAT_MARK: Tc = lan_nat_mark;
    /// Tail-called by `lan_ingress` while a flow's class is open.
    CLASSIFY_UPLOAD: Xdp = classify_upload;
    /// Tail-called: a flow's first bytes as an HTTP request.
    PARSE_HTTP: Xdp = parse_http;
    /// Tail-called: a found name to the flow's class.
    NAME_LOOKUP: Xdp = name_lookup;
    /// Tail-called: a TCP segment into the flow's stream buffer.
    STREAM_SEGMENT: Xdp = stream_segment;
    /// Tail-called: a ClientHello spread over TLS records, joined and parsed.
    PARSE_TLS_RECORDS: Xdp = parse_tls_records;
    /// Tail-called: the packet's verdict after classification.
    ENFORCE_UPLOAD: Xdp = enforce_upload;
    /// Only passes: the benchmarks' baseline.
    EMPTY_XDP: Xdp = empty_xdp;
}

/// The tail-call table: (index in `CLASSIFIERS`, program).
pub const TAIL_CALLS: [(u32, ProgramDef<Xdp>); tail::COUNT as usize] = [
    (tail::CLASSIFY_UPLOAD, CLASSIFY_UPLOAD),
    (tail::PARSE_HTTP, PARSE_HTTP),
    (tail::NAME_LOOKUP, NAME_LOOKUP),
    (tail::STREAM_SEGMENT, STREAM_SEGMENT),
    (tail::PARSE_TLS_RECORDS, PARSE_TLS_RECORDS),
    (tail::ENFORCE, ENFORCE_UPLOAD),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        for (i, program) in ALL.iter().enumerate() {
            assert!(
                ALL[..i].iter().all(|other| other.name != program.name),
                "{} listed twice",
                program.name
            );
        }
    }

    #[test]
    fn each_tail_call_index_is_filled_once() {
        for index in 0..tail::COUNT {
            let at: std::vec::Vec<&str> = TAIL_CALLS
                .iter()
                .filter(|(i, _)| *i == index)
                .map(|(_, program)| program.name())
                .collect();
            assert_eq!(at.len(), 1, "tail call {index}: {at:?}");
        }
    }
}
