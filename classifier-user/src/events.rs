//! Events from the datapath's ring buffer: flows that got their class (with the name they
//! got it by), and QUIC Initials for the daemon to read; and [`Learned`], what the daemon
//! (or an offline replay) keeps of them.

use std::net::{IpAddr, Ipv6Addr};

use classifier_common::{
    classify::Method,
    config::{ClassResult, PeerKey},
    event::{ClassifiedEvent, PayloadEvent, ShapeClientEvent, kind},
    flow::{FlowKey, ip_proto, ipv4_mapped},
    names::version,
};
use tracing::{debug, info, warn};

use crate::{
    bittorrent,
    flows::{self, FlowNames, Name},
    loader::Datapath,
    policy::Policy,
    quic::{
        self, QuicNames, QuicVerdict,
        worker::{QuicWorker, Verdicts},
    },
};

/// Most events read from the ring buffer in one turn of the daemon's loop. Reading one is a
/// copy and a few map writes (QUIC Initials only go into the worker's queue), so a turn
/// stays within a few milliseconds however fast a flood fills the ring, and the loop gets
/// back to the control socket, the recorder and signals between turns. It is still more than
/// the ring holds of the largest events (4 MiB of ~2 KiB QUIC Initials), so in ordinary
/// traffic one turn empties it.
pub const EVENTS_PER_TURN: usize = 4096;

/// How a bounded read of the ring buffer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Nothing more was waiting: wait until the ring buffer is readable again.
    Empty,
    /// The turn's bound was reached: more may be waiting, and the kernel will not say so
    /// again (it wakes the reader only once the reader has caught up), so read on next turn.
    Bounded,
}

/// One decoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Classified {
        key: FlowKey,
        category: u16,
        app: u16,
        method: u8,
        class_flags: u8,
        /// SNI or Host as sent (case kept), checked as a host name; none when the class
        /// came from elsewhere.
        name: Option<Name>,
        /// The datapath kept the name in `NAMES` too ([`crate::flows::names`]).
        name_kept: bool,
    },
    QuicInitial {
        key: FlowKey,
        /// The UDP payload.
        datagram: Vec<u8>,
        /// The datagram was longer than the event could carry.
        truncated: bool,
    },
    TrackerReply {
        key: FlowKey,
        /// The reply packet's TCP or UDP payload.
        payload: Vec<u8>,
    },
    /// A client of per-client shaping rule `class` needs its own HTB class.
    ShapeClient { class: u16, client_addr: [u8; 16] },
}

/// Decodes a ring buffer record, or `None` for one we do not know (a newer datapath).
pub fn decode(bytes: &[u8]) -> Option<Event> {
    match *bytes.first()? {
        kind::FLOW_CLASSIFIED => {
            let event: ClassifiedEvent = read(bytes)?;
            let name_len = (event.name_len as usize).min(event.name.len());
            Some(Event::Classified {
                key: event.key,
                category: event.category,
                app: event.app,
                method: event.method,
                class_flags: event.class_flags,
                name: Name::captured(&event.name[..name_len]),
                name_kept: event.name_kept != 0,
            })
        }
        kind::QUIC_INITIAL => {
            let event: PayloadEvent = read(bytes)?;
            let len = (event.len as usize).min(event.data.len());
            Some(Event::QuicInitial {
                key: event.key,
                datagram: event.data[..len].to_vec(),
                truncated: event.original_len as usize > len,
            })
        }
        kind::TRACKER_REPLY => {
            let event: PayloadEvent = read(bytes)?;
            let len = (event.len as usize).min(event.data.len());
            Some(Event::TrackerReply {
                key: event.key,
                payload: event.data[..len].to_vec(),
            })
        }
        kind::SHAPE_CLIENT => {
            let event: ShapeClientEvent = read(bytes)?;
            Some(Event::ShapeClient {
                class: event.class,
                client_addr: event.client_addr,
            })
        }
        _ => None,
    }
}

/// A `#[repr(C)]` plain-data record from the front of `bytes`.
fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: enough bytes (checked); T is plain data valid for any bit pattern (Pod), and
    // read_unaligned makes no alignment assumption.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// What the events taught: flow names, QUIC flows whose Initials are being read, and
/// clients waiting for their own shaping class.
#[derive(Default)]
pub struct Learned {
    pub names: FlowNames,
    /// QUIC flows whose Initials are read here, at once: offline replays and tests, which
    /// need the answer before the next packet. The daemon uses its worker instead.
    pub quic: QuicNames,
    /// The daemon's QUIC worker ([`Learned::start_quic_worker`]): Initials go to it.
    quic_worker: Option<QuicWorker>,
    /// Initials the worker had no room for; their flows got the class of unnamed QUIC.
    pub quic_initials_shed: u64,
    /// (rule class, client) pairs the datapath asked a class for, for the shaper.
    pub client_classes_wanted: Vec<(u16, [u8; 16])>,
}

impl Learned {
    /// Acts on one datapath event: keeps the name, or reads QUIC Initials and hands the
    /// class they give back to the datapath.
    pub fn apply(&mut self, event: Event, datapath: &mut Datapath, policy: &Policy) {
        match event {
            Event::Classified {
                key,
                category,
                app,
                method,
                class_flags,
                name,
                name_kept,
            } if class_flags & classifier_common::classify::class_flags::RECHECK != 0 => {
                tracing::warn!(
                    flow = %flows::describe_key(&key),
                    second_name = %name.as_ref().map(Name::to_string).unwrap_or_default(),
                    first_name = %self.names.get(&key).and_then(|n| n.first.as_ref()).map(Name::to_string).unwrap_or_default(),
                    category = policy.classes.category_name(category),
                    method = Method::from_u8(method).name(),
                    "two versions of a flow's first bytes named different sites: the stricter verdict applies"
                );
                let _ = app;
                if let Some(name) = name {
                    if !name_kept {
                        keep_name(datapath, &key, version::SECOND, &name);
                    }
                    self.names.insert_second(key, name);
                }
            }
            Event::Classified {
                key,
                category,
                app,
                method,
                name,
                name_kept,
                ..
            } => {
                debug!(
                    flow = %flows::describe_key(&key),
                    name = %name.as_ref().map(Name::to_string).unwrap_or_default(),
                    category = policy.classes.category_name(category),
                    app = policy.classes.app_name(app),
                    method = Method::from_u8(method).name(),
                    "flow classified"
                );
                if let Some(name) = name {
                    if !name_kept {
                        keep_name(datapath, &key, version::FIRST, &name);
                    }
                    self.names.insert(key, name);
                }
            }
            Event::QuicInitial { key, datagram, .. } => {
                if let Some(verdict) = self.read_quic(key, datagram) {
                    self.classify_quic(key, &verdict, datapath, policy);
                }
            }
            Event::TrackerReply { key, payload } => learn_peers(&key, &payload, datapath),
            Event::ShapeClient { class, client_addr } => {
                self.client_classes_wanted.push((class, client_addr));
            }
        }
    }

    /// Takes the names the kernel kept for the flows in the table (a previous daemon's, or
    /// read while none ran) into memory, and removes those of flows no longer there: what a
    /// daemon started on a pinned datapath does before it records anything.
    pub fn adopt_kept_names(&mut self, datapath: &mut Datapath) -> anyhow::Result<()> {
        let maps = datapath.maps_mut();
        let flows = flows::read_entries(&maps.flows).entries;
        let adopted = flows::names::adopt(&mut maps.names, &flows);
        let count = adopted.names.len();
        for (key, names) in adopted.names {
            self.names.adopt(key, names);
        }
        if count + adopted.stale > 0 {
            info!(
                names = count,
                stale_removed = adopted.stale,
                "took over the flow names kept in the kernel"
            );
        }
        Ok(())
    }

    /// Reads every event waiting in the datapath's ring buffer (an offline replay, where
    /// nothing else waits on the reader).
    pub fn drain(
        &mut self,
        ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
        datapath: &mut Datapath,
        policy: &Policy,
    ) {
        while self.drain_turn(ring, datapath, policy) == Drained::Bounded {}
    }

    /// Reads at most [`EVENTS_PER_TURN`] events from the ring buffer: one turn of the
    /// daemon's loop.
    pub fn drain_turn(
        &mut self,
        ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
        datapath: &mut Datapath,
        policy: &Policy,
    ) -> Drained {
        // Each record is decoded and let go of (the kernel may reuse its room) before the
        // event is acted on.
        let next = || ring.next().map(|record| decode(&record));
        take_bounded(EVENTS_PER_TURN, next, |event| {
            if let Some(event) = event {
                self.apply(event, datapath, policy);
            }
        })
    }

    /// Starts the daemon's QUIC worker: from now on Initials are read off the caller's
    /// loop, and their verdicts come out of the returned receiver, for
    /// [`Learned::classify_quic`].
    pub fn start_quic_worker(&mut self) -> anyhow::Result<Verdicts> {
        let (worker, verdicts) = QuicWorker::spawn()?;
        self.quic_worker = Some(worker);
        Ok(verdicts)
    }

    /// Reads one Initial at once, or hands it to the worker (no verdict yet). An Initial
    /// the worker has no room for is shed: its flow is judged as QUIC without a readable
    /// name now, rather than left waiting.
    fn read_quic(&mut self, key: FlowKey, datagram: Vec<u8>) -> Option<QuicVerdict> {
        let Some(worker) = &self.quic_worker else {
            return self.quic.add(key, datagram);
        };
        let shed = worker.offer(key, datagram).err()?;
        self.quic_initials_shed += 1;
        // Every shed Initial would flood the log under the very flood that sheds them:
        // say so at the 1st, 2nd, 4th, 8th, ... only.
        if self.quic_initials_shed.is_power_of_two() {
            warn!(
                flow = %flows::describe_key(&key),
                shed_so_far = self.quic_initials_shed,
                reason = %shed,
                "QUIC Initial not read: the flow is judged as QUIC without a name"
            );
        }
        Some(QuicVerdict::Unreadable(format!("not read: {shed}")))
    }

    /// Tells the datapath the class of a QUIC flow whose Initials have been read.
    pub fn classify_quic(
        &mut self,
        key: FlowKey,
        verdict: &QuicVerdict,
        datapath: &mut Datapath,
        policy: &Policy,
    ) {
        let class = quic::class_of(verdict, &policy.classes);
        match verdict {
            QuicVerdict::Named { name, .. } => {
                // Checked here, as the datapath's names are when their events are read.
                let Some(name) = Name::captured(name.as_bytes()) else {
                    return self.hand_over_quic_class(key, class, datapath);
                };
                debug!(
                    flow = %flows::describe_key(&key),
                    name = %name,
                    category = policy.classes.category_name(class.category),
                    "QUIC flow classified"
                );
                // Kept before the class is handed over: the name outlives this daemon.
                keep_name(datapath, &key, version::FIRST, &name);
                self.names.insert(key, name);
            }
            QuicVerdict::Unreadable(reason) => {
                debug!(flow = %flows::describe_key(&key), reason = %reason, "QUIC Initials unreadable");
            }
        }
        self.hand_over_quic_class(key, class, datapath);
    }

    /// Tells the datapath a QUIC flow's class ([`Learned::classify_quic`]).
    fn hand_over_quic_class(&self, key: FlowKey, class: ClassResult, datapath: &mut Datapath) {
        let written = datapath.maps_mut().class_results.insert(key, class, 0);
        if let Err(e) = written {
            warn!(error = %format!("{e:#}"), "could not hand a QUIC class to the datapath");
        }
    }
}

/// Puts a name the daemon learnt into the kernel's `NAMES`, where it outlives the daemon:
/// QUIC names (decrypted here), and names whose event says the datapath could not keep
/// them. Tagged with the flow entry's first packet time; a flow no longer in the table has
/// nothing to tag.
fn keep_name(datapath: &mut Datapath, key: &FlowKey, which: u8, name: &Name) {
    let maps = datapath.maps_mut();
    let kept = maps
        .flows
        .get(key, 0)
        .map_err(anyhow::Error::from)
        .and_then(|entry| {
            flows::names::keep(&mut maps.names, key, which, entry.first_seen_ns, name)
        });
    if let Err(e) = kept {
        debug!(flow = %flows::describe_key(key), error = %format!("{e:#}"), "flow name not kept in the kernel");
    }
}

/// Hands `handle` what `next` gives until it gives nothing or `limit` items were taken.
fn take_bounded<T>(
    limit: usize,
    mut next: impl FnMut() -> Option<T>,
    mut handle: impl FnMut(T),
) -> Drained {
    for _ in 0..limit {
        match next() {
            Some(item) => handle(item),
            None => return Drained::Empty,
        }
    }
    Drained::Bounded
}

/// Puts the peers a tracker reply lists into the datapath's peer cache, as seen now.
fn learn_peers(key: &FlowKey, reply: &[u8], datapath: &mut Datapath) {
    let udp = key.protocol == ip_proto::UDP;
    let ipv6_tracker = Ipv6Addr::from(key.server_addr).to_ipv4_mapped().is_none();
    let peers = bittorrent::tracker_reply_peers(reply, udp, ipv6_tracker);
    if peers.is_empty() {
        return;
    }
    let learned = crate::flows::datapath_clock_ns().and_then(|now| {
        let cache = &mut datapath.maps_mut().peers;
        for peer in &peers {
            let addr = match peer.ip() {
                IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
                IpAddr::V6(v6) => v6.octets(),
            };
            // Learnt for the client that asked the tracker, and for no other client.
            let key = PeerKey {
                client_addr: key.client_addr,
                addr,
                port: peer.port(),
                _pad: [0; 2],
            };
            cache.insert(key, now, 0)?;
        }
        Ok(())
    });
    match learned {
        Ok(()) => debug!(
            tracker = %flows::describe_key(key),
            peers = peers.len(),
            "peers learnt from a tracker reply"
        ),
        Err(e) => warn!(error = %format!("{e:#}"), "could not fill the peer cache"),
    }
}

#[cfg(test)]
mod tests {
    use classifier_common::event::NAME_CAP;

    use super::*;

    fn as_bytes<T>(value: &T) -> &[u8] {
        // SAFETY: viewing a plain #[repr(C)] value's bytes.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
    }

    #[test]
    fn classified_event_round_trip() {
        let mut name = [0u8; NAME_CAP];
        name[..15].copy_from_slice(b"www.youtube.com");
        let event = ClassifiedEvent {
            kind: kind::FLOW_CLASSIFIED,
            method: 1,
            class_flags: 1,
            name_len: 15,
            category: 3,
            app: 256,
            evasion: 0,
            name_kept: 1,
            alt_category: 0,
            key: FlowKey::default(),
            name,
        };
        let Some(Event::Classified {
            name,
            category,
            app,
            ..
        }) = decode(as_bytes(&event))
        else {
            panic!("not decoded");
        };
        assert_eq!(
            (name, category, app),
            (Some(Name::Host("www.youtube.com".into())), 3, 256)
        );
    }

    #[test]
    fn a_drain_stops_at_its_bound_and_takes_the_rest_next_turn() {
        let mut waiting = 2 * EVENTS_PER_TURN + 10;
        let mut handled = 0;
        let mut turn = || {
            take_bounded(
                EVENTS_PER_TURN,
                || waiting.checked_sub(1).map(|left| waiting = left),
                |()| handled += 1,
            )
        };
        assert_eq!(turn(), Drained::Bounded);
        assert_eq!(turn(), Drained::Bounded);
        assert_eq!(turn(), Drained::Empty);
        assert_eq!(turn(), Drained::Empty, "nothing left");
        assert_eq!(handled, 2 * EVENTS_PER_TURN + 10);
    }

    #[test]
    fn an_initial_the_worker_has_no_room_for_is_shed_and_counted() {
        let (worker, queued) = QuicWorker::unserved(1);
        let mut learned = Learned {
            quic_worker: Some(worker),
            ..Learned::default()
        };
        let key = FlowKey::default();
        assert_eq!(learned.read_quic(key, vec![0xc3; 1200]), None, "queued");
        for shed in 1..=3 {
            let verdict = learned.read_quic(key, vec![0xc3; 1200]);
            assert!(
                matches!(&verdict, Some(QuicVerdict::Unreadable(why)) if why.contains("full")),
                "{verdict:?}"
            );
            assert_eq!(learned.quic_initials_shed, shed);
        }
        // The class it gets is the one QUIC without a readable name gets.
        let policy = Policy::default_council();
        let shed = learned.read_quic(key, vec![0xc3; 1200]).unwrap();
        let unnamed = quic::class_of(&QuicVerdict::Unreadable(String::new()), &policy.classes);
        assert_eq!(quic::class_of(&shed, &policy.classes), unnamed);
        // Once the worker takes one, there is room again.
        queued.recv().unwrap();
        assert_eq!(learned.read_quic(key, vec![0xc3; 1200]), None);
        assert_eq!(learned.quic_initials_shed, 4);
    }

    #[test]
    fn without_a_worker_initials_are_read_at_once() {
        let mut learned = Learned::default();
        let verdict = learned.read_quic(FlowKey::default(), vec![0xc3; 1200]);
        assert!(
            matches!(verdict, Some(QuicVerdict::Unreadable(_))),
            "{verdict:?}"
        );
        assert_eq!(learned.quic_initials_shed, 0);
    }

    #[test]
    fn short_or_unknown_records_are_ignored() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[kind::FLOW_CLASSIFIED, 0, 0]), None);
        assert_eq!(decode(&[0xee; 400]), None);
    }
}
