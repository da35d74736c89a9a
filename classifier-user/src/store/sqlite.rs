//! The SQLite backend: the default store, one file with WAL, written in batches.

use std::path::Path;

use anyhow::Context as _;
use jiff::Timestamp;
use rusqlite::{Connection, params};

use super::{
    EndReason, Filter, StoredFlow, public_columns, public_source, schema, schema::Dialect,
    split_names,
};
use crate::flows::FlowRecord;

/// An open SQLite flow store.
pub struct FlowStore {
    connection: Connection,
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
            version <= schema::VERSION,
            "the store has schema version {version}, newer than this classifier knows ({}): \
             use the newer classifier",
            schema::VERSION
        );
        for (step, sql) in Dialect::Sqlite
            .migrations()
            .iter()
            .enumerate()
            .skip(version)
        {
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
fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))
        .with_context(|| format!("restricting {} to its owner and group", path.display()))
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
