//! The flow store: ended flows as records in an embedded SQLite file (WAL, batched inserts,
//! schema migrations by `PRAGMA user_version`), the retention job that deletes or
//! anonymises records past the retention period, and the queries investigations export.
//!
//! A record holds what the policies allow to be monitored: who (client address, MAC when
//! seen), where (server, name, category, application), how much and how long. Never
//! payload.

pub mod pg_connect;
pub mod postgres;
pub mod retention;
pub mod schema;
mod sqlite;

pub use self::sqlite::FlowStore;

use std::path::Path;

use anyhow::Context as _;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::flows::FlowRecord;

/// Where the daemon keeps its flow records unless told otherwise.
pub const DEFAULT_STORE: &str = "/var/lib/classifier/flows.sqlite";

pub use crate::flows::ending::EndReason;

/// A flow that ended, as stored (`flow.ended` says why).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFlow {
    #[serde(flatten)]
    pub flow: FlowRecord,
    /// The client's address and MAC were removed by the retention job (the client then
    /// reads as the unspecified address, port 0).
    pub anonymised: bool,
}

/// The flow store the daemon and the CLI use: an SQLite file (the default) or a site's
/// PostgreSQL (a `postgres://` URL or a `host=...` connection string).
pub enum Store {
    Sqlite(FlowStore),
    Postgres(postgres::PgStore),
}

impl Store {
    /// Opens `location`: a PostgreSQL connection string or URL, else an SQLite file path.
    pub fn open(location: &str) -> anyhow::Result<Self> {
        if postgres::is_postgres(location) {
            Ok(Self::Postgres(
                postgres::PgStore::connect(location).with_context(|| {
                    format!("the PostgreSQL flow store {}", pg_connect::redact(location))
                })?,
            ))
        } else {
            Ok(Self::Sqlite(FlowStore::open(Path::new(location))?))
        }
    }

    /// Whether `location` can be opened without creating anything: a PostgreSQL database,
    /// or an SQLite file that exists.
    pub fn exists(location: &str) -> bool {
        postgres::is_postgres(location) || Path::new(location).exists()
    }

    pub fn insert(&mut self, flows: &[FlowRecord]) -> anyhow::Result<()> {
        match self {
            Self::Sqlite(s) => s.insert(flows),
            Self::Postgres(p) => p.insert(flows),
        }
    }

    pub fn query(&mut self, filter: &Filter) -> anyhow::Result<Vec<StoredFlow>> {
        match self {
            Self::Sqlite(s) => s.query(filter),
            Self::Postgres(p) => p.query(filter),
        }
    }

    /// The records `filter` selects as the retention in force leaves them: none that it
    /// deletes, none with a client that it anonymises, whether or not the daemon's job has
    /// run yet. What investigation exports read.
    pub fn query_retained(
        &mut self,
        filter: &Filter,
        now: Timestamp,
    ) -> anyhow::Result<Vec<StoredFlow>> {
        let view = self.retention_view(now)?;
        Ok(view.apply(self.query(filter)?, filter))
    }

    /// What a reader may see, from the retentions the gateways' jobs recorded in the store.
    fn retention_view(&mut self, now: Timestamp) -> anyhow::Result<retention::RetentionView> {
        let recorded = match self {
            Self::Sqlite(s) => s.recorded_retentions(),
            Self::Postgres(p) => p.recorded_retentions(),
        }
        .context("reading the retention in force")?;
        retention::RetentionView::new(&recorded, now)
    }

    pub fn count(&mut self) -> anyhow::Result<u64> {
        match self {
            Self::Sqlite(s) => s.count(),
            Self::Postgres(p) => p.count(),
        }
    }

    pub fn insert_degradation(
        &mut self,
        reports: &[crate::degradation::IntervalReport],
    ) -> anyhow::Result<()> {
        match self {
            Self::Sqlite(s) => s.insert_degradation(reports),
            Self::Postgres(p) => p.insert_degradation(reports),
        }
    }

    pub fn degradation(
        &mut self,
        interval_seconds: Option<u64>,
        since: Option<Timestamp>,
        limit: usize,
    ) -> anyhow::Result<Vec<crate::degradation::IntervalReport>> {
        match self {
            Self::Sqlite(s) => s.degradation(interval_seconds, since, limit),
            Self::Postgres(p) => p.degradation(interval_seconds, since, limit),
        }
    }

    /// The degradation reports [`Store::degradation`] selects as the retention in force
    /// leaves them: none past `degradation_retention`, no top clients past `retention`,
    /// whether or not the daemon's job has run yet. What `classifier degradation` reads.
    pub fn degradation_retained(
        &mut self,
        interval_seconds: Option<u64>,
        since: Option<Timestamp>,
        limit: usize,
        now: Timestamp,
    ) -> anyhow::Result<Vec<crate::degradation::IntervalReport>> {
        let view = self.retention_view(now)?;
        let since = since.max(view.degradation_drop_before);
        let reports = self.degradation(interval_seconds, since, limit)?;
        Ok(view.apply_to_degradation(reports))
    }

    pub fn apply_retention(
        &mut self,
        policy: &retention::Retention,
        now: Timestamp,
    ) -> anyhow::Result<retention::RetentionReport> {
        match self {
            Self::Sqlite(s) => retention::apply(s, policy, now),
            Self::Postgres(p) => p.apply_retention(policy, now),
        }
    }
}

/// Which records an export or query wants.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Filter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The translated (public) source address the flow's uploads left the gateway with.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub public_addr: Option<std::net::IpAddr>,
    /// ... and port.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub public_port: Option<u16>,
    /// Flows running at this instant (started at or before it, ended at or after it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub at: Option<Timestamp>,
}

impl Filter {
    /// The public address as stored: IPv4 as IPv4 (never IPv4-mapped).
    fn public_addr_text(&self) -> Option<String> {
        self.public_addr.map(|a| a.to_canonical().to_string())
    }
}

/// How a record's public source is stored: address text and port, both or neither.
pub(crate) fn public_columns(flow: &FlowRecord) -> (Option<String>, Option<u16>) {
    match flow.public_source {
        Some(source) => (
            Some(source.ip().to_canonical().to_string()),
            Some(source.port()),
        ),
        None => (None, None),
    }
}

/// `a,b` → `["a", "b"]`; empty → none.
pub(crate) fn split_names(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A stored public source back as an address and port (both columns set and readable).
pub(crate) fn public_source(
    addr: Option<String>,
    port: Option<i64>,
) -> Option<std::net::SocketAddr> {
    let ip = addr?.parse().ok()?;
    let port = u16::try_from(port?).ok()?;
    Some(std::net::SocketAddr::new(ip, port))
}

#[cfg(test)]
pub(crate) mod tests {
    use rusqlite::Connection;

    use super::{schema::Dialect, *};
    use crate::flows::Counters;

    /// A fresh store file under the temporary directory, removed when dropped.
    pub struct TempStore {
        pub path: std::path::PathBuf,
    }

    impl TempStore {
        pub fn new(name: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "classifier-store-{}-{name}-{n}.sqlite",
                std::process::id()
            ));
            Self { path }
        }
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
            }
        }
    }

    pub fn flow(client: &str, started: &str, category: &str, down_bytes: u64) -> FlowRecord {
        let first_seen: Timestamp = started.parse().unwrap();
        FlowRecord {
            client: client.parse().unwrap(),
            client_mac: Some("02:00:00:00:00:0a".into()),
            server: "203.0.113.10:443".parse().unwrap(),
            protocol: "tcp".into(),
            upload: Counters {
                packets: 10,
                bytes: 1000,
            },
            download: Counters {
                packets: 20,
                bytes: down_bytes,
            },
            first_seen,
            last_seen: first_seen
                .checked_add(jiff::SignedDuration::from_secs(30))
                .unwrap(),
            vlan: None,
            server_initiated: false,
            name: Some("www.youtube.com".into()),
            category: category.into(),
            app: "youtube".into(),
            method: "sni".into(),
            ech: false,
            unreadable: false,
            evasion: vec!["conflict".into()],
            second_name: Some("www.bbc.co.uk".into()),
            second_category: Some("uncategorized".into()),
            group: "staff".into(),
            verdict: "shape".into(),
            blocked: Counters::default(),
            shaped: Counters {
                packets: 5,
                bytes: 5000,
            },
            ended: Some(EndReason::Idle),
            public_source: None,
        }
    }

    fn ended(mut flow: FlowRecord, reason: EndReason) -> FlowRecord {
        flow.ended = Some(reason);
        flow
    }

    #[test]
    fn records_round_trip_through_a_real_sqlite_file() {
        let temp = TempStore::new("round-trip");
        let flows = vec![
            ended(
                flow(
                    "192.0.2.10:50000",
                    "2026-11-23T10:00:00Z",
                    "streaming-video",
                    5_000_000,
                ),
                EndReason::Fin,
            ),
            ended(
                flow(
                    "[2001:db8:1::10]:50001",
                    "2026-11-23T10:05:00Z",
                    "gambling",
                    700,
                ),
                EndReason::Rst,
            ),
        ];
        {
            let mut store = FlowStore::open(&temp.path).unwrap();
            store.insert(&flows).unwrap();
        }
        // Reopened: the schema is not applied twice, the records are there.
        let mut store = FlowStore::open(&temp.path).unwrap();
        let stored = store.query(&Filter::default()).unwrap();
        assert_eq!(stored.len(), 2);
        for (stored, flow) in stored.iter().zip(&flows) {
            assert_eq!(&stored.flow, flow);
            assert!(!stored.anonymised);
        }
        let journal: String = store
            .connection()
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&temp.path).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o640,
            "records are for root and the admin group"
        );
    }

    #[test]
    fn filters_select_by_client_time_and_category() {
        let temp = TempStore::new("filters");
        let mut store = FlowStore::open(&temp.path).unwrap();
        store
            .insert(&[
                flow("192.0.2.10:1", "2026-11-23T10:00:00Z", "streaming-video", 1),
                flow("192.0.2.11:2", "2026-11-23T11:00:00Z", "streaming-video", 2),
                flow("192.0.2.10:3", "2026-11-23T12:00:00Z", "gambling", 3),
            ])
            .unwrap();
        let ports = |filter: Filter| -> Vec<u16> {
            store
                .query(&filter)
                .unwrap()
                .iter()
                .map(|f| f.flow.client.port())
                .collect()
        };
        assert_eq!(
            ports(Filter {
                client: Some("192.0.2.10".parse().unwrap()),
                ..Filter::default()
            }),
            [1, 3]
        );
        assert_eq!(
            ports(Filter {
                from: Some("2026-11-23T10:45:00Z".parse().unwrap()),
                to: Some("2026-11-23T11:30:00Z".parse().unwrap()),
                ..Filter::default()
            }),
            [2]
        );
        assert_eq!(
            ports(Filter {
                category: Some("gambling".into()),
                ..Filter::default()
            }),
            [3]
        );
    }

    /// A record of a translated flow: its public source too.
    fn translated(client: &str, started: &str, public: &str) -> FlowRecord {
        FlowRecord {
            public_source: Some(public.parse().unwrap()),
            ..flow(client, started, "news", 1)
        }
    }

    #[test]
    fn filters_select_by_public_source_and_instant() {
        let temp = TempStore::new("public");
        let mut store = FlowStore::open(&temp.path).unwrap();
        store
            .insert(&[
                translated("192.0.2.10:1", "2026-11-23T10:00:00Z", "198.51.100.1:51234"),
                translated("192.0.2.11:2", "2026-11-23T10:00:00Z", "198.51.100.1:51235"),
                // The same public port, an hour later, another client.
                translated("192.0.2.12:3", "2026-11-23T11:00:00Z", "198.51.100.1:51234"),
                translated(
                    "[2001:db8:1::10]:4",
                    "2026-11-23T10:00:00Z",
                    "[2001:db8:2::1]:51234",
                ),
                flow("192.0.2.13:5", "2026-11-23T10:00:00Z", "news", 1),
            ])
            .unwrap();
        let ports = |public: &str, port: Option<u16>, at: Option<&str>| -> Vec<u16> {
            store
                .query(&Filter {
                    public_addr: Some(public.parse().unwrap()),
                    public_port: port,
                    at: at.map(|t| t.parse().unwrap()),
                    ..Filter::default()
                })
                .unwrap()
                .iter()
                .map(|f| f.flow.client.port())
                .collect()
        };
        let at_10 = Some("2026-11-23T10:00:10Z");
        let at_11 = Some("2026-11-23T11:00:10Z");
        assert_eq!(ports("198.51.100.1", Some(51234), at_10), [1]);
        assert_eq!(ports("198.51.100.1", Some(51234), at_11), [3]);
        assert_eq!(ports("198.51.100.1", Some(51234), None), [1, 3]);
        assert_eq!(ports("198.51.100.1", None, at_10), [1, 2]);
        assert_eq!(
            ports("198.51.100.1", Some(51234), Some("2026-11-23T09:59:59Z")),
            [] as [u16; 0]
        );
        // IPv4-mapped input finds IPv4 records; IPv6 its own.
        assert_eq!(ports("::ffff:198.51.100.1", Some(51235), None), [2]);
        assert_eq!(ports("2001:db8:2::1", Some(51234), at_10), [4]);
        let stored = store.query(&Filter::default()).unwrap();
        assert_eq!(
            stored[0].flow.public_source,
            Some("198.51.100.1:51234".parse().unwrap())
        );
        let plain = stored.iter().find(|s| s.flow.client.port() == 5).unwrap();
        assert_eq!(plain.flow.public_source, None);
    }

    /// A store written before the public source existed (schema 5) is migrated in place:
    /// every record is still there, with no public source, and new ones get theirs.
    #[test]
    fn a_store_of_schema_5_gains_the_public_source_and_loses_nothing() {
        let temp = TempStore::new("schema5");
        {
            let mut connection = Connection::open(&temp.path).unwrap();
            let transaction = connection.transaction().unwrap();
            for sql in &Dialect::Sqlite.migrations()[..5] {
                transaction.execute_batch(sql).unwrap();
            }
            transaction.pragma_update(None, "user_version", 5).unwrap();
            transaction.commit().unwrap();
            connection
                .execute(
                    "INSERT INTO flows (start_ms, end_ms, client, client_port, server, server_port,
                        protocol, category, app, method, grp, verdict, ech, server_initiated,
                        up_packets, up_bytes, down_packets, down_bytes, blocked_packets,
                        blocked_bytes, shaped_packets, shaped_bytes, end_reason)
                     VALUES (1000, 2000, '192.0.2.10', 40000, '203.0.113.10', 443, 'tcp', 'news',
                        'tls', 'sni', 'staff', 'allow', 0, 0, 1, 100, 2, 200, 0, 0, 0, 0, 'fin')",
                    [],
                )
                .unwrap();
        }
        let mut store = FlowStore::open(&temp.path).unwrap();
        let version: i64 = store
            .connection()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, schema::VERSION as i64);
        let old = store.query(&Filter::default()).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].flow.client, "192.0.2.10:40000".parse().unwrap());
        assert_eq!(old[0].flow.download.bytes, 200);
        assert_eq!(old[0].flow.public_source, None);
        store
            .insert(&[translated(
                "192.0.2.11:1",
                "2026-11-23T10:00:00Z",
                "198.51.100.1:51234",
            )])
            .unwrap();
        assert_eq!(store.count().unwrap(), 2);
    }

    #[test]
    fn a_store_from_a_newer_classifier_is_refused() {
        let temp = TempStore::new("newer");
        {
            let mut store = FlowStore::open(&temp.path).unwrap();
            store
                .connection()
                .pragma_update(None, "user_version", 99)
                .unwrap();
        }
        let err = FlowStore::open(&temp.path).err().unwrap();
        assert!(format!("{err:#}").contains("schema version 99"), "{err:#}");
    }
}
