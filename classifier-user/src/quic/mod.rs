//! QUIC server names: the datapath hands the daemon a QUIC flow's client Initials; the
//! daemon opens them (RFC 9001 / RFC 9369 Initial keys, derived from the connection id the
//! client sent in the clear), reads the ClientHello's server name, and tells the datapath
//! the flow's class. A post-quantum ClientHello spans two Initials, so datagrams are kept
//! per flow until the ClientHello is whole.

pub mod initial;
pub mod names;
pub mod worker;

use classifier_common::{
    classify::{Method, app, class_flags},
    config::ClassResult,
};

pub use self::names::{QuicNames, QuicVerdict};
use crate::policy::ClassTables;

/// The class a QUIC flow gets from its verdict: a listed name's category and application,
/// otherwise the category the policy gives QUIC itself.
pub fn class_of(verdict: &QuicVerdict, classes: &ClassTables) -> ClassResult {
    let quic_category = classes.protocol_categories[app::QUIC as usize];
    let (listed, ech) = match verdict {
        QuicVerdict::Named { name, ech } => (classes.lookup(name), *ech),
        QuicVerdict::Unreadable(_) => (None, false),
    };
    ClassResult {
        category: listed.map_or(quic_category, |d| d.category),
        app: listed
            .map(|d| d.app)
            .filter(|a| *a != app::UNKNOWN)
            .unwrap_or(app::QUIC),
        method: Method::Quic as u8,
        class_flags: if ech { class_flags::ECH } else { 0 },
        ..ClassResult::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use classifier_common::{
        flow::FlowKey,
        testing::{chrome_like, handshake_of},
    };

    use super::{initial::QuicVersion, names::MAX_PENDING_FLOWS, *};
    use crate::policy::Policy;

    /// A post-quantum-sized ClientHello for `name`, over two Initials as Chrome sends it.
    pub(crate) fn two_initials(name: &str) -> [Vec<u8>; 2] {
        let record = chrome_like(name);
        let hello = handshake_of(&record);
        let (first, second) = hello.split_at(1000);
        let dcid = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
        [
            initial::testing::client_initial(QuicVersion::V1, &dcid, 0, 0, first),
            initial::testing::client_initial(QuicVersion::V1, &dcid, 1, 1000, second),
        ]
    }

    #[test]
    fn a_split_client_hello_is_named_once_both_initials_are_in() {
        let [first, second] = two_initials("rr1---sn-abc.googlevideo.com");
        let key = FlowKey::default();
        let mut names = QuicNames::default();
        assert_eq!(names.add(key, first), None, "half a ClientHello: wait");
        let verdict = names.add(key, second).expect("whole now");
        assert_eq!(
            verdict,
            QuicVerdict::Named {
                name: "rr1---sn-abc.googlevideo.com".into(),
                // Like Chrome, the test ClientHello carries a GREASE ECH extension.
                ech: true,
            }
        );
        let policy = Policy::default_council();
        let class = class_of(&verdict, &policy.classes);
        assert_eq!(
            policy.classes.category_name(class.category),
            "streaming-video"
        );
        assert_eq!(policy.classes.app_name(class.app), "youtube");
        assert_eq!(class.method, Method::Quic as u8);
        assert_eq!(class.class_flags, class_flags::ECH);
    }

    #[test]
    fn unreadable_initials_get_the_quic_category() {
        let mut names = QuicNames::default();
        let verdict = names.add(FlowKey::default(), vec![0xc3; 1200]).unwrap();
        assert!(matches!(verdict, QuicVerdict::Unreadable(_)), "{verdict:?}");
        let policy = Policy::default_council();
        let class = class_of(&verdict, &policy.classes);
        assert_eq!(policy.classes.category_name(class.category), "quic");
        assert_eq!(class.app, app::QUIC);
    }

    #[test]
    fn pending_flows_are_bounded() {
        let [first, _] = two_initials("www.youtube.com");
        let mut names = QuicNames::default();
        for port in 0..(MAX_PENDING_FLOWS as u16 + 10) {
            let key = FlowKey {
                client_port: port,
                ..FlowKey::default()
            };
            assert_eq!(names.add(key, first.clone()), None);
        }
        assert_eq!(names.pending_flows(), MAX_PENDING_FLOWS);
    }
}
