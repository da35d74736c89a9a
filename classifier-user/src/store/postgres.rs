//! The flow store on PostgreSQL, for sites that centralise the records of many gateways:
//! the same tables, migrations, queries and retention job as the SQLite store, in
//! PostgreSQL's dialect. Chosen with `--store 'host=db.example user=classifier ...'` (a
//! libpq connection string) or a `postgres://` URL.

use anyhow::Context as _;
use jiff::Timestamp;
use postgres::{Client, types::ToSql};

use super::{
    EndReason, Filter, StoredFlow,
    retention::{AfterRetention, Retention, RetentionReport},
};
use crate::{
    degradation::IntervalReport,
    flows::{Counters, FlowRecord},
};

/// The schema, one step per version (kept in `schema_version`).
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE flows (
        id BIGSERIAL PRIMARY KEY,
        start_ms BIGINT NOT NULL,
        end_ms BIGINT NOT NULL,
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
        ech BOOLEAN NOT NULL,
        server_initiated BOOLEAN NOT NULL,
        up_packets BIGINT NOT NULL,
        up_bytes BIGINT NOT NULL,
        down_packets BIGINT NOT NULL,
        down_bytes BIGINT NOT NULL,
        blocked_packets BIGINT NOT NULL,
        blocked_bytes BIGINT NOT NULL,
        shaped_packets BIGINT NOT NULL,
        shaped_bytes BIGINT NOT NULL,
        end_reason TEXT NOT NULL,
        anonymised BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX flows_by_start ON flows (start_ms);
    CREATE INDEX flows_by_client ON flows (client, start_ms);",
    "CREATE TABLE daily_usage (
        day TEXT NOT NULL,
        category TEXT NOT NULL,
        app TEXT NOT NULL,
        grp TEXT NOT NULL,
        flows BIGINT NOT NULL,
        up_bytes BIGINT NOT NULL,
        down_bytes BIGINT NOT NULL,
        blocked_bytes BIGINT NOT NULL,
        shaped_bytes BIGINT NOT NULL,
        PRIMARY KEY (day, category, app, grp)
    );
    CREATE INDEX flows_by_end ON flows (end_ms);",
    "CREATE TABLE degradation (
        id BIGSERIAL PRIMARY KEY,
        interval_s BIGINT NOT NULL,
        start_ms BIGINT NOT NULL,
        end_ms BIGINT NOT NULL,
        report TEXT NOT NULL
    );
    CREATE INDEX degradation_by_end ON degradation (interval_s, end_ms);",
    // 4: what the client did to hide the name, and a second name from a second version.
    "ALTER TABLE flows ADD COLUMN unreadable BOOLEAN NOT NULL DEFAULT FALSE;
    ALTER TABLE flows ADD COLUMN evasion TEXT NOT NULL DEFAULT '';
    ALTER TABLE flows ADD COLUMN second_name TEXT;
    ALTER TABLE flows ADD COLUMN second_category TEXT;",
    // 5: the retention each gateway's job enforces, for readers without its policy.
    "CREATE TABLE retention_in_force (
        gateway TEXT PRIMARY KEY,
        keep TEXT NOT NULL,
        after TEXT NOT NULL,
        degradation_keep TEXT NOT NULL,
        recorded_ms BIGINT NOT NULL
    );",
    // 6: the translated (public) source of a NAT gateway's flows; NULL for every record
    // made before, or without NAT.
    "ALTER TABLE flows ADD COLUMN public_addr TEXT;
    ALTER TABLE flows ADD COLUMN public_port INTEGER;
    CREATE INDEX flows_by_public ON flows (public_addr, public_port, start_ms);",
];

/// A connection to the store on PostgreSQL.
pub struct PgStore {
    /// Always there until dropped.
    client: Option<Client>,
}

impl Drop for PgStore {
    /// The client's own runtime shuts its connection down on drop, which tokio refuses on
    /// a thread that drives the daemon's runtime: there, it is done off the runtime.
    fn drop(&mut self) {
        let on_async_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_async_worker {
            let client = self.client.take();
            tokio::task::block_in_place(|| drop(client));
        }
    }
}

/// Whether `location` names a PostgreSQL database rather than an SQLite file.
pub fn is_postgres(location: &str) -> bool {
    const KEYS: &[&str] = &["host", "hostaddr", "port", "dbname", "user", "password"];
    location.starts_with("postgres://")
        || location.starts_with("postgresql://")
        || location.split_whitespace().any(|part| {
            part.split_once('=')
                .is_some_and(|(key, _)| KEYS.contains(&key.trim()))
        })
}

impl PgStore {
    /// Connects as libpq would (`sslmode`, `sslrootcert`, PGPASSWORD, the password file:
    /// see [`super::pg_connect`]) and migrates.
    pub fn connect(location: &str) -> anyhow::Result<Self> {
        let client = super::pg_connect::Target::parse(location)?
            .connect()
            .context("connecting to the PostgreSQL flow store")?;
        let mut store = Self {
            client: Some(client),
        };
        store
            .migrate()
            .context("migrating the PostgreSQL flow store")?;
        Ok(store)
    }

    fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("connected until dropped")
    }

    fn migrate(&mut self) -> anyhow::Result<()> {
        self.client().batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM schema_version);",
        )?;
        let mut transaction = self.client().transaction()?;
        // One migrating gateway at a time.
        transaction.batch_execute("LOCK TABLE schema_version IN EXCLUSIVE MODE")?;
        let version: i32 = transaction
            .query_one("SELECT version FROM schema_version", &[])?
            .get(0);
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        anyhow::ensure!(
            version <= MIGRATIONS.len(),
            "the store has schema version {version}, newer than this classifier knows ({}): \
             use the newer classifier",
            MIGRATIONS.len()
        );
        for (step, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            transaction.batch_execute(sql)?;
            transaction.execute(
                "UPDATE schema_version SET version = $1",
                &[&((step + 1) as i32)],
            )?;
        }
        transaction.commit()?;
        Ok(())
    }

    pub fn insert(&mut self, flows: &[FlowRecord]) -> anyhow::Result<()> {
        let mut transaction = self.client().transaction()?;
        let statement = transaction.prepare(
            "INSERT INTO flows (start_ms, end_ms, client, client_port, client_mac, server,
                server_port, protocol, vlan, name, category, app, method, grp, verdict, ech,
                server_initiated, up_packets, up_bytes, down_packets, down_bytes,
                blocked_packets, blocked_bytes, shaped_packets, shaped_bytes, end_reason,
                unreadable, evasion, second_name, second_category, public_addr, public_port)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)",
        )?;
        for flow in flows {
            let n = |v: u64| v as i64;
            let reason = flow.ended.unwrap_or(EndReason::Idle).name();
            let evasion = flow.evasion.join(",");
            let (public_addr, public_port) = super::public_columns(flow);
            let public_port = public_port.map(i32::from);
            transaction.execute(
                &statement,
                &[
                    &flow.first_seen.as_millisecond(),
                    &flow.last_seen.as_millisecond(),
                    &flow.client.ip().to_string(),
                    &i32::from(flow.client.port()),
                    &flow.client_mac,
                    &flow.server.ip().to_string(),
                    &i32::from(flow.server.port()),
                    &flow.protocol,
                    &flow.vlan.map(i32::from),
                    &flow.name,
                    &flow.category,
                    &flow.app,
                    &flow.method,
                    &flow.group,
                    &flow.verdict,
                    &flow.ech,
                    &flow.server_initiated,
                    &n(flow.upload.packets),
                    &n(flow.upload.bytes),
                    &n(flow.download.packets),
                    &n(flow.download.bytes),
                    &n(flow.blocked.packets),
                    &n(flow.blocked.bytes),
                    &n(flow.shaped.packets),
                    &n(flow.shaped.bytes),
                    &reason,
                    &flow.unreadable,
                    &evasion,
                    &flow.second_name,
                    &flow.second_category,
                    &public_addr,
                    &public_port,
                ],
            )?;
        }
        transaction.commit().context("writing flow records")?;
        Ok(())
    }

    pub fn query(&mut self, filter: &Filter) -> anyhow::Result<Vec<StoredFlow>> {
        let client = filter.client.map(|c| c.to_canonical().to_string());
        let from = filter.from.map(|t| t.as_millisecond());
        let to = filter.to.map(|t| t.as_millisecond());
        let public_addr = filter.public_addr_text();
        let public_port = filter.public_port.map(i32::from);
        let at = filter.at.map(|t| t.as_millisecond());
        let rows = self.client().query(
            "SELECT * FROM flows
             WHERE ($1::TEXT IS NULL OR client = $1)
               AND ($2::BIGINT IS NULL OR end_ms >= $2)
               AND ($3::BIGINT IS NULL OR start_ms < $3)
               AND ($4::TEXT IS NULL OR category = $4)
               AND ($5::TEXT IS NULL OR public_addr = $5)
               AND ($6::INTEGER IS NULL OR public_port = $6)
               AND ($7::BIGINT IS NULL OR (start_ms <= $7 AND end_ms >= $7))
             ORDER BY start_ms, id",
            &[
                &client,
                &from,
                &to,
                &filter.category,
                &public_addr,
                &public_port,
                &at,
            ],
        )?;
        rows.iter().map(row_to_flow).collect()
    }

    pub fn count(&mut self) -> anyhow::Result<u64> {
        let count: i64 = self
            .client()
            .query_one("SELECT COUNT(*) FROM flows", &[])?
            .get(0);
        Ok(count as u64)
    }

    pub fn insert_degradation(&mut self, reports: &[IntervalReport]) -> anyhow::Result<()> {
        let mut transaction = self.client().transaction()?;
        for report in reports {
            transaction.execute(
                "INSERT INTO degradation (interval_s, start_ms, end_ms, report)
                 VALUES ($1, $2, $3, $4)",
                &[
                    &(report.interval_seconds as i64),
                    &report.start.as_millisecond(),
                    &report.end.as_millisecond(),
                    &serde_json::to_string(report)?,
                ],
            )?;
        }
        transaction
            .commit()
            .context("writing the degradation log")?;
        Ok(())
    }

    pub fn degradation(
        &mut self,
        interval_seconds: Option<u64>,
        since: Option<Timestamp>,
        limit: usize,
    ) -> anyhow::Result<Vec<IntervalReport>> {
        let rows = self.client().query(
            "SELECT report FROM (
                SELECT id, report FROM degradation
                WHERE ($1::BIGINT IS NULL OR interval_s = $1) AND end_ms >= $2
                ORDER BY end_ms DESC, id DESC LIMIT $3
             ) newest ORDER BY id",
            &[
                &interval_seconds.map(|s| s as i64),
                &since.map_or(i64::MIN, |t| t.as_millisecond()),
                &(limit.min(i64::MAX as usize) as i64),
            ],
        )?;
        rows.iter()
            .map(|row| serde_json::from_str(row.get(0)).context("a degradation report"))
            .collect()
    }

    /// The retention job (see [`super::retention`]), in PostgreSQL's dialect.
    pub fn apply_retention(
        &mut self,
        retention: &Retention,
        now: Timestamp,
    ) -> anyhow::Result<RetentionReport> {
        let cutoff = retention.cutoff(now)?;
        let cutoff_ms = cutoff.as_millisecond();
        let params: &[&(dyn ToSql + Sync)] = &[&cutoff_ms];
        let mut transaction = self.client().transaction()?;
        let (keep, after, degradation_keep) = crate::store::retention::retention_row(retention);
        transaction
            .execute(
                "INSERT INTO retention_in_force (gateway, keep, after, degradation_keep,
                    recorded_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (gateway) DO UPDATE SET keep = excluded.keep,
                    after = excluded.after, degradation_keep = excluded.degradation_keep,
                    recorded_ms = excluded.recorded_ms",
                &[
                    &super::retention::gateway_name(),
                    &keep,
                    &after,
                    &degradation_keep,
                    &now.as_millisecond(),
                ],
            )
            .context("recording the retention in force")?;
        let degradation_deleted = transaction
            .execute(
                "DELETE FROM degradation WHERE end_ms < $1",
                &[&retention.degradation_cutoff(now)?.as_millisecond()],
            )
            .context("deleting expired degradation reports")?;
        let stripped = transaction.execute(
            "UPDATE degradation SET report = (report::jsonb - 'top_clients')::text
             WHERE end_ms < $1 AND report::jsonb ? 'top_clients'",
            params,
        )?;
        let mut report = RetentionReport {
            cutoff,
            deleted: 0,
            anonymised: 0,
            degradation_deleted,
        };
        match retention.after {
            AfterRetention::Delete => {
                transaction.execute(
                    "INSERT INTO daily_usage (day, category, app, grp, flows, up_bytes,
                        down_bytes, blocked_bytes, shaped_bytes)
                     SELECT to_char(to_timestamp(start_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
                        category, app, grp, COUNT(*), SUM(up_bytes), SUM(down_bytes),
                        SUM(blocked_bytes), SUM(shaped_bytes)
                     FROM flows WHERE end_ms < $1
                     GROUP BY 1, 2, 3, 4
                     ON CONFLICT (day, category, app, grp) DO UPDATE SET
                        flows = daily_usage.flows + excluded.flows,
                        up_bytes = daily_usage.up_bytes + excluded.up_bytes,
                        down_bytes = daily_usage.down_bytes + excluded.down_bytes,
                        blocked_bytes = daily_usage.blocked_bytes + excluded.blocked_bytes,
                        shaped_bytes = daily_usage.shaped_bytes + excluded.shaped_bytes",
                    params,
                )?;
                report.deleted =
                    transaction.execute("DELETE FROM flows WHERE end_ms < $1", params)?;
            }
            AfterRetention::Anonymise => {
                report.anonymised = transaction.execute(
                    "UPDATE flows SET client = '::', client_port = 0, client_mac = NULL,
                        anonymised = TRUE
                     WHERE end_ms < $1 AND NOT anonymised",
                    params,
                )?;
            }
        }
        transaction
            .commit()
            .context("committing the retention job")?;
        if report.changed() || stripped > 0 {
            // Deleted and updated rows stay in the tables' pages, client addresses and all,
            // until vacuumed. Autovacuum would come to them in its own time; the job does
            // not wait. Plain VACUUM takes no lock that stops other gateways' inserts (FULL
            // would), and outside a transaction, as VACUUM must be.
            self.client()
                .batch_execute("VACUUM (ANALYZE) flows, degradation")
                .context(
                    "vacuuming the PostgreSQL flow store after the retention job (its deletes \
                     are committed; the store's role must own the tables)",
                )?;
        }
        Ok(report)
    }

    /// Every retention recorded in the store (one per gateway that ran the job).
    pub fn recorded_retentions(&mut self) -> anyhow::Result<Vec<Retention>> {
        self.client()
            .query(
                "SELECT keep, after, degradation_keep FROM retention_in_force",
                &[],
            )?
            .iter()
            .map(|row| {
                crate::store::retention::retention_from_row(row.get(0), row.get(1), row.get(2))
            })
            .collect()
    }

    /// Whether this connection is encrypted (TLS), as the server sees it.
    pub fn connection_encrypted(&mut self) -> anyhow::Result<bool> {
        let row = self.client().query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )?;
        Ok(row.get(0))
    }

    /// How often `table` was vacuumed by hand, as PostgreSQL's statistics count it.
    pub fn vacuum_count(&mut self, table: &str) -> anyhow::Result<i64> {
        let row = self.client().query_one(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = $1",
            &[&table],
        )?;
        Ok(row.get(0))
    }

    /// Flows counted in the daily totals (what deleting kept).
    pub fn daily_flows(&mut self) -> anyhow::Result<u64> {
        let total: Option<i64> = self
            .client()
            .query_one("SELECT SUM(flows)::BIGINT FROM daily_usage", &[])?
            .get(0);
        Ok(total.unwrap_or(0) as u64)
    }
}

fn row_to_flow(row: &postgres::Row) -> anyhow::Result<StoredFlow> {
    let millis = |name: &str| Timestamp::from_millisecond(row.get::<_, i64>(name));
    let counters = |packets: &str, bytes: &str| Counters {
        packets: row.get::<_, i64>(packets) as u64,
        bytes: row.get::<_, i64>(bytes) as u64,
    };
    let address = |ip: &str, port: &str| {
        let ip = row
            .get::<_, String>(ip)
            .parse()
            .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        std::net::SocketAddr::new(ip, row.get::<_, i32>(port) as u16)
    };
    let end_reason: String = row.get("end_reason");
    Ok(StoredFlow {
        flow: FlowRecord {
            client: address("client", "client_port"),
            client_mac: row.get("client_mac"),
            server: address("server", "server_port"),
            protocol: row.get("protocol"),
            upload: counters("up_packets", "up_bytes"),
            download: counters("down_packets", "down_bytes"),
            first_seen: millis("start_ms")?,
            last_seen: millis("end_ms")?,
            vlan: row.get::<_, Option<i32>>("vlan").map(|v| v as u16),
            server_initiated: row.get("server_initiated"),
            name: row.get("name"),
            category: row.get("category"),
            app: row.get("app"),
            method: row.get("method"),
            ech: row.get("ech"),
            unreadable: row.get("unreadable"),
            evasion: super::split_names(&row.get::<_, String>("evasion")),
            second_name: row.get("second_name"),
            second_category: row.get("second_category"),
            group: row.get("grp"),
            verdict: row.get("verdict"),
            blocked: counters("blocked_packets", "blocked_bytes"),
            shaped: counters("shaped_packets", "shaped_bytes"),
            ended: Some(EndReason::parse(&end_reason)),
            public_source: super::public_source(
                row.get::<_, Option<String>>("public_addr"),
                row.get::<_, Option<i32>>("public_port").map(i64::from),
            ),
        },
        anonymised: row.get("anonymised"),
    })
}
