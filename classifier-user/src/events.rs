//! Events from the datapath's ring buffer: flows that got their class (with the name they
//! got it by), and QUIC Initials for the daemon to read; and [`Learned`], what the daemon
//! (or an offline replay) keeps of them.

use std::net::{IpAddr, Ipv6Addr};

use classifier_common::{
    classify::Method,
    config::PeerKey,
    event::{ClassifiedEvent, PayloadEvent, ShapeClientEvent, kind},
    flow::{FlowKey, ip_proto, ipv4_mapped},
};
use tracing::{debug, warn};

use crate::{
    bittorrent,
    flows::{self, FlowNames},
    loader::Datapath,
    policy::Policy,
    quic::{self, QuicNames, QuicVerdict},
};

/// One decoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Classified {
        key: FlowKey,
        category: u16,
        app: u16,
        method: u8,
        class_flags: u8,
        /// SNI or Host as sent (case kept); empty when the class came from elsewhere.
        name: String,
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
                name: String::from_utf8_lossy(&event.name[..name_len]).into_owned(),
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
    pub quic: QuicNames,
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
            } if class_flags & classifier_common::classify::class_flags::RECHECK != 0 => {
                tracing::warn!(
                    flow = %flows::describe_key(&key),
                    second_name = %name,
                    first_name = self.names.get(&key).and_then(|n| n.first.as_deref()).unwrap_or(""),
                    category = policy.classes.category_name(category),
                    method = Method::from_u8(method).name(),
                    "two versions of a flow's first bytes named different sites: the stricter verdict applies"
                );
                let _ = app;
                if !name.is_empty() {
                    self.names.insert_second(key, name);
                }
            }
            Event::Classified {
                key,
                category,
                app,
                method,
                name,
                ..
            } => {
                debug!(
                    flow = %flows::describe_key(&key),
                    name = %name,
                    category = policy.classes.category_name(category),
                    app = policy.classes.app_name(app),
                    method = Method::from_u8(method).name(),
                    "flow classified"
                );
                if !name.is_empty() {
                    self.names.insert(key, name);
                }
            }
            Event::QuicInitial { key, datagram, .. } => {
                if let Some(verdict) = self.quic.add(key, datagram) {
                    self.classify_quic(key, &verdict, datapath, policy);
                }
            }
            Event::TrackerReply { key, payload } => learn_peers(&key, &payload, datapath),
            Event::ShapeClient { class, client_addr } => {
                self.client_classes_wanted.push((class, client_addr));
            }
        }
    }

    /// Reads every event waiting in the datapath's ring buffer.
    pub fn drain(
        &mut self,
        ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
        datapath: &mut Datapath,
        policy: &Policy,
    ) {
        while let Some(record) = ring.next() {
            if let Some(event) = decode(&record) {
                drop(record);
                self.apply(event, datapath, policy);
            }
        }
    }

    /// Tells the datapath the class of a QUIC flow whose Initials have been read.
    fn classify_quic(
        &mut self,
        key: FlowKey,
        verdict: &QuicVerdict,
        datapath: &mut Datapath,
        policy: &Policy,
    ) {
        let class = quic::class_of(verdict, &policy.classes);
        match verdict {
            QuicVerdict::Named { name, .. } => {
                debug!(
                    flow = %flows::describe_key(&key),
                    name = %name,
                    category = policy.classes.category_name(class.category),
                    "QUIC flow classified"
                );
                self.names.insert(key, name.clone());
            }
            QuicVerdict::Unreadable(reason) => {
                debug!(flow = %flows::describe_key(&key), reason = %reason, "QUIC Initials unreadable");
            }
        }
        let written = datapath
            .class_results()
            .and_then(|mut results| Ok(results.insert(key, class, 0)?));
        if let Err(e) = written {
            warn!(error = %format!("{e:#}"), "could not hand a QUIC class to the datapath");
        }
    }
}

/// Puts the peers a tracker reply lists into the datapath's peer cache, as seen now.
fn learn_peers(key: &FlowKey, reply: &[u8], datapath: &mut Datapath) {
    let udp = key.protocol == ip_proto::UDP;
    let ipv6_tracker = Ipv6Addr::from(key.server_addr).to_ipv4_mapped().is_none();
    let peers = bittorrent::tracker_reply_peers(reply, udp, ipv6_tracker);
    if peers.is_empty() {
        return;
    }
    let learned = crate::flows::boot_time_ns().and_then(|now| {
        let mut cache = datapath.peer_cache()?;
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
            _pad: 0,
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
        assert_eq!((name.as_str(), category, app), ("www.youtube.com", 3, 256));
    }

    #[test]
    fn short_or_unknown_records_are_ignored() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[kind::FLOW_CLASSIFIED, 0, 0]), None);
        assert_eq!(decode(&[0xee; 400]), None);
    }
}
