//! Events from the datapath's ring buffer: flows that got their class (with the name they
//! got it by), and QUIC Initials for the daemon to read.

use classifier_common::{
    event::{ClassifiedEvent, PayloadEvent, kind},
    flow::FlowKey,
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
