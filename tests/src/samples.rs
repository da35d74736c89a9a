//! Made-up records for the store tests: one ended flow and one degradation report, which
//! each test changes where it matters (`FlowRecord { vlan: Some(30), ..youtube_flow(..) }`),
//! so what a test sets is what it is about.

use std::net::SocketAddr;

use classifier_user::{
    degradation::{ClientVolume, IntervalReport},
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

/// A degradation report of `interval_seconds` that ended at `end`: 8000 bit/s down, 800 up,
/// one top client (192.0.2.77, streaming video, 1000 bytes).
pub fn degradation_report(interval_seconds: u64, end: Timestamp) -> IntervalReport {
    IntervalReport {
        interval_seconds,
        start: end - SignedDuration::from_secs(interval_seconds as i64),
        end,
        download_bps: 8000,
        upload_bps: 800,
        download_utilisation: None,
        upload_utilisation: None,
        by_category: Vec::new(),
        by_group: Vec::new(),
        withheld: Vec::new(),
        top_clients: vec![ClientVolume {
            client: "192.0.2.77".parse().unwrap(),
            category: "streaming-video".into(),
            bytes: 1000,
        }],
        events: Vec::new(),
    }
}
