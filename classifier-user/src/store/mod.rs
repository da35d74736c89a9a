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

use std::path::Path;

use anyhow::Context as _;
use jiff::Timestamp;
use rusqlite::{Connection, params};
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

/// The schema, one step per version: a store made by an older daemon is brought up to
/// date in order, each step in a transaction.
const MIGRATIONS: &[&str] = &[
    // 1: ended flows.
    "CREATE TABLE flows (
        id INTEGER PRIMARY KEY,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        client TEXT NOT NULL,
        client_port INTEGER NOT NULL,
        client_mac TEXT,
        server TEXT NOT NULL,
        server_port INTEGER NOT NULL,
        protocol TEXT NOT NULL,
        vlan INTEGER,
        name TEXT,
        category TEXT NOT NULL,
        app TEXT NOT NULL,
        method TEXT NOT NULL,
        grp TEXT NOT NULL,
        verdict TEXT NOT NULL,
        ech INTEGER NOT NULL,
        server_initiated INTEGER NOT NULL,
        up_packets INTEGER NOT NULL,
        up_bytes INTEGER NOT NULL,
        down_packets INTEGER NOT NULL,
        down_bytes INTEGER NOT NULL,
        blocked_packets INTEGER NOT NULL,
        blocked_bytes INTEGER NOT NULL,
        shaped_packets INTEGER NOT NULL,
        shaped_bytes INTEGER NOT NULL,
        end_reason TEXT NOT NULL,
        anonymised INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX flows_by_start ON flows (start_ms);
    CREATE INDEX flows_by_client ON flows (client, start_ms);",
    // 2: totals that outlive deleted records (see `retention`).
    "CREATE TABLE daily_usage (
        day TEXT NOT NULL,
        category TEXT NOT NULL,
        app TEXT NOT NULL,
        grp TEXT NOT NULL,
        flows INTEGER NOT NULL,
        up_bytes INTEGER NOT NULL,
        down_bytes INTEGER NOT NULL,
        blocked_bytes INTEGER NOT NULL,
        shaped_bytes INTEGER NOT NULL,
        PRIMARY KEY (day, category, app, grp)
    );
    CREATE INDEX flows_by_end ON flows (end_ms);",
    // 3: the bandwidth-degradation log, one JSON report per closed interval.
    "CREATE TABLE degradation (
        id INTEGER PRIMARY KEY,
        interval_s INTEGER NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        report TEXT NOT NULL
    );
    CREATE INDEX degradation_by_end ON degradation (interval_s, end_ms);",
    // 4: what the client did to hide the name, and a second name from a second version.
    "ALTER TABLE flows ADD COLUMN unreadable INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE flows ADD COLUMN evasion TEXT NOT NULL DEFAULT '';
    ALTER TABLE flows ADD COLUMN second_name TEXT;
    ALTER TABLE flows ADD COLUMN second_category TEXT;",
    // 5: the retention each gateway's job enforces, for readers without its policy.
    "CREATE TABLE retention_in_force (
        gateway TEXT PRIMARY KEY,
        keep TEXT NOT NULL,
        after TEXT NOT NULL,
        degradation_keep TEXT NOT NULL,
        recorded_ms INTEGER NOT NULL
    );",
    // 6: the translated (public) source of a NAT gateway's flows; NULL for every record
    // made before, or without NAT.
    "ALTER TABLE flows ADD COLUMN public_addr TEXT;
    ALTER TABLE flows ADD COLUMN public_port INTEGER;
    CREATE INDEX flows_by_public ON flows (public_addr, public_port, start_ms);",
];

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

/// An open SQLite flow store.
pub struct FlowStore {
    connection: Connection,
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

impl FlowStore {
    /// Opens (creating it and its directory if need be) and migrates the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("creating the flow store's directory {}", dir.display())
            })?;
        }
        let connection = Connection::open(path)
            .with_context(|| format!("opening the flow store {}", path.display()))?;
        // Who visited what is for root and the admin group only (SQLite gives its WAL and
        // shared-memory files the database file's mode).
        restrict(path)?;
        // WAL: readers (exports) never block the daemon's writes, and a crash loses at
        // most the transaction in flight.
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .context("switching the flow store to WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        // Deleted and anonymised records are overwritten in the file, not left in free
        // pages for someone with a hex editor.
        connection.pragma_update(None, "secure_delete", "ON")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Self { connection };
        store
            .migrate()
            .with_context(|| format!("migrating the flow store {}", path.display()))?;
        Ok(store)
    }

    fn migrate(&mut self) -> anyhow::Result<()> {
        let version: i64 = self
            .connection
            .pragma_query_value(None, "user_version", |row| row.get(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        anyhow::ensure!(
            version <= MIGRATIONS.len(),
            "the store has schema version {version}, newer than this classifier knows ({}): \
             use the newer classifier",
            MIGRATIONS.len()
        );
        for (step, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let transaction = self.connection.transaction()?;
            transaction.execute_batch(sql)?;
            transaction.pragma_update(None, "user_version", (step + 1) as i64)?;
            transaction.commit()?;
        }
        Ok(())
    }

    /// Writes `flows` (ended ones: `ended` set) in one transaction, one sync for the batch.
    pub fn insert(&mut self, flows: &[FlowRecord]) -> anyhow::Result<()> {
        let transaction = self.connection.transaction()?;
        {
            let mut statement = transaction.prepare_cached(
                "INSERT INTO flows (start_ms, end_ms, client, client_port, client_mac, server,
                    server_port, protocol, vlan, name, category, app, method, grp, verdict, ech,
                    server_initiated, up_packets, up_bytes, down_packets, down_bytes,
                    blocked_packets, blocked_bytes, shaped_packets, shaped_bytes, end_reason,
                    unreadable, evasion, second_name, second_category, public_addr, public_port)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                    ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30,
                    ?31, ?32)",
            )?;
            for flow in flows {
                let reason = flow.ended.unwrap_or(EndReason::Idle);
                let (public_addr, public_port) = public_columns(flow);
                statement.execute(params![
                    flow.first_seen.as_millisecond(),
                    flow.last_seen.as_millisecond(),
                    flow.client.ip().to_string(),
                    flow.client.port(),
                    flow.client_mac,
                    flow.server.ip().to_string(),
                    flow.server.port(),
                    flow.protocol,
                    flow.vlan,
                    flow.name,
                    flow.category,
                    flow.app,
                    flow.method,
                    flow.group,
                    flow.verdict,
                    flow.ech,
                    flow.server_initiated,
                    flow.upload.packets as i64,
                    flow.upload.bytes as i64,
                    flow.download.packets as i64,
                    flow.download.bytes as i64,
                    flow.blocked.packets as i64,
                    flow.blocked.bytes as i64,
                    flow.shaped.packets as i64,
                    flow.shaped.bytes as i64,
                    reason.name(),
                    flow.unreadable,
                    flow.evasion.join(","),
                    flow.second_name,
                    flow.second_category,
                    public_addr,
                    public_port,
                ])?;
            }
        }
        transaction.commit().context("writing flow records")?;
        Ok(())
    }

    /// The records `filter` selects, oldest first.
    pub fn query(&self, filter: &Filter) -> anyhow::Result<Vec<StoredFlow>> {
        let mut sql = String::from("SELECT * FROM flows WHERE 1 = 1");
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(client) = filter.client {
            sql += " AND client = ?";
            values.push(client.to_canonical().to_string().into());
        }
        if let Some(from) = filter.from {
            sql += " AND end_ms >= ?";
            values.push(from.as_millisecond().into());
        }
        if let Some(to) = filter.to {
            sql += " AND start_ms < ?";
            values.push(to.as_millisecond().into());
        }
        if let Some(category) = &filter.category {
            sql += " AND category = ?";
            values.push(category.clone().into());
        }
        if let Some(public) = filter.public_addr_text() {
            sql += " AND public_addr = ?";
            values.push(public.into());
        }
        if let Some(port) = filter.public_port {
            sql += " AND public_port = ?";
            values.push(i64::from(port).into());
        }
        if let Some(at) = filter.at {
            sql += " AND start_ms <= ? AND end_ms >= ?";
            values.push(at.as_millisecond().into());
            values.push(at.as_millisecond().into());
        }
        sql += " ORDER BY start_ms, id";
        let mut statement = self.connection.prepare(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(values), row_to_flow)?;
        rows.collect::<Result<Vec<_>, _>>()
            .context("reading flow records")
    }

    /// Writes closed degradation intervals.
    pub fn insert_degradation(
        &mut self,
        reports: &[crate::degradation::IntervalReport],
    ) -> anyhow::Result<()> {
        let transaction = self.connection.transaction()?;
        for report in reports {
            transaction.execute(
                "INSERT INTO degradation (interval_s, start_ms, end_ms, report)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    report.interval_seconds as i64,
                    report.start.as_millisecond(),
                    report.end.as_millisecond(),
                    serde_json::to_string(report)?,
                ],
            )?;
        }
        transaction
            .commit()
            .context("writing the degradation log")?;
        Ok(())
    }

    /// Degradation intervals of `interval_seconds` (any, with `None`) that ended at or
    /// after `since`, oldest first, at most the `limit` newest.
    pub fn degradation(
        &self,
        interval_seconds: Option<u64>,
        since: Option<Timestamp>,
        limit: usize,
    ) -> anyhow::Result<Vec<crate::degradation::IntervalReport>> {
        let mut statement = self.connection.prepare(
            "SELECT report FROM (
                SELECT id, report FROM degradation
                WHERE (?1 IS NULL OR interval_s = ?1) AND end_ms >= ?2
                ORDER BY end_ms DESC, id DESC LIMIT ?3
             ) ORDER BY id",
        )?;
        let rows = statement.query_map(
            params![
                interval_seconds.map(|s| s as i64),
                since.map_or(i64::MIN, |t| t.as_millisecond()),
                limit as i64
            ],
            |row| row.get::<_, String>(0),
        )?;
        let mut reports = Vec::new();
        for row in rows {
            reports.push(serde_json::from_str(&row?).context("a degradation report")?);
        }
        Ok(reports)
    }

    /// Number of records.
    pub fn count(&self) -> anyhow::Result<u64> {
        Ok(self
            .connection
            .query_row("SELECT COUNT(*) FROM flows", [], |row| row.get::<_, i64>(0))?
            as u64)
    }

    pub(crate) fn connection(&mut self) -> &mut Connection {
        &mut self.connection
    }
}

/// Makes `path` readable by its owner and group only (0640).
pub(crate) fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))
        .with_context(|| format!("restricting {} to its owner and group", path.display()))
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

fn row_to_flow(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredFlow> {
    use crate::flows::Counters;
    let millis = |name: &str| -> rusqlite::Result<Timestamp> {
        let ms: i64 = row.get(name)?;
        Timestamp::from_millisecond(ms).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, e.into())
        })
    };
    let counters = |packets: &str, bytes: &str| -> rusqlite::Result<Counters> {
        Ok(Counters {
            packets: row.get::<_, i64>(packets)? as u64,
            bytes: row.get::<_, i64>(bytes)? as u64,
        })
    };
    let address = |ip: &str, port: &str| -> rusqlite::Result<std::net::SocketAddr> {
        let text: String = row.get(ip)?;
        let ip = text
            .parse()
            .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        Ok(std::net::SocketAddr::new(ip, row.get(port)?))
    };
    let end_reason: String = row.get("end_reason")?;
    Ok(StoredFlow {
        flow: FlowRecord {
            client: address("client", "client_port")?,
            client_mac: row.get("client_mac")?,
            server: address("server", "server_port")?,
            protocol: row.get("protocol")?,
            upload: counters("up_packets", "up_bytes")?,
            download: counters("down_packets", "down_bytes")?,
            first_seen: millis("start_ms")?,
            last_seen: millis("end_ms")?,
            vlan: row.get("vlan")?,
            server_initiated: row.get("server_initiated")?,
            name: row.get("name")?,
            category: row.get("category")?,
            app: row.get("app")?,
            method: row.get("method")?,
            ech: row.get("ech")?,
            unreadable: row.get("unreadable")?,
            evasion: split_names(&row.get::<_, String>("evasion")?),
            second_name: row.get("second_name")?,
            second_category: row.get("second_category")?,
            group: row.get("grp")?,
            verdict: row.get("verdict")?,
            blocked: counters("blocked_packets", "blocked_bytes")?,
            shaped: counters("shaped_packets", "shaped_bytes")?,
            ended: Some(EndReason::parse(&end_reason)),
            public_source: public_source(
                row.get::<_, Option<String>>("public_addr")?,
                row.get::<_, Option<i64>>("public_port")?,
            ),
        },
        anonymised: row.get("anonymised")?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
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
        let store = FlowStore::open(&temp.path).unwrap();
        let stored = store.query(&Filter::default()).unwrap();
        assert_eq!(stored.len(), 2);
        for (stored, flow) in stored.iter().zip(&flows) {
            assert_eq!(&stored.flow, flow);
            assert!(!stored.anonymised);
        }
        let journal: String = store
            .connection
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
            for sql in &MIGRATIONS[..5] {
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
            .connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
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
            let store = FlowStore::open(&temp.path).unwrap();
            store
                .connection
                .pragma_update(None, "user_version", 99)
                .unwrap();
        }
        let err = FlowStore::open(&temp.path).err().unwrap();
        assert!(format!("{err:#}").contains("schema version 99"), "{err:#}");
    }
}
