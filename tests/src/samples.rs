//! Made-up records for the store tests: one ended flow and one degradation report, which
//! each test changes where it matters (`FlowRecord { vlan: Some(30), ..youtube_flow(..) }`),
//! so what a test sets is what it is about.

use std::net::SocketAddr;

use classifier_user::{
    flows::{Counters, FlowRecord},
    store::EndReason,
};
use jiff::{SignedDuration, Timestamp};

/// A 30-second HTTPS flow from `client` to YouTube at `server`, started at `first_seen` and
/// ended by FIN: 3 packets (300 bytes) up, 9 (9000 bytes) down, group staff, shaped.
pub fn youtube_flow(client: SocketAddr, server: SocketAddr, first_seen: Timestamp) -> FlowRecord {
    FlowRecord {
        client,
        client_mac: Some("02:00:00:00:00:0a".into()),
        server,
        protocol: "tcp".into(),
        upload: Counters {
            packets: 3,
            bytes: 300,
        },
        download: Counters {
            packets: 9,
            bytes: 9000,
        },
        first_seen,
        last_seen: first_seen + SignedDuration::from_secs(30),
        vlan: None,
        server_initiated: false,
        name: Some("www.youtube.com".into()),
        category: "streaming-video".into(),
        app: "youtube".into(),
        method: "sni".into(),
        ech: false,
        unreadable: false,
        evasion: Vec::new(),
        second_name: None,
        second_category: None,
        group: "staff".into(),
        verdict: "shape".into(),
        blocked: Counters::default(),
        shaped: Counters::default(),
        ended: Some(EndReason::Fin),
        public_source: None,
    }
}

/// A degradation report of `interval_seconds` that ended at `end` (the unit tests' own).
pub use classifier_user::degradation::testing::sample_report as degradation_report;
