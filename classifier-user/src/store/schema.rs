//! The store's schema, written once for SQLite and PostgreSQL: one step per version (a
//! store made by an older daemon is brought up to date in order, each step in a
//! transaction), with the few words the two dialects spell differently as `{tokens}`.

/// How a backend spells what the schema leaves open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The dialect's word for each token: a row id that numbers itself, a 64-bit integer,
    /// a boolean and its false. (SQLite's INTEGER holds 64 bits; it has no BOOLEAN.)
    fn words(self) -> [(&'static str, &'static str); 4] {
        match self {
            Dialect::Sqlite => [
                ("{id}", "INTEGER PRIMARY KEY"),
                ("{i64}", "INTEGER"),
                ("{bool}", "INTEGER"),
                ("{false}", "0"),
            ],
            Dialect::Postgres => [
                ("{id}", "BIGSERIAL PRIMARY KEY"),
                ("{i64}", "BIGINT"),
                ("{bool}", "BOOLEAN"),
                ("{false}", "FALSE"),
            ],
        }
    }

    /// Every step of the schema in this dialect, in order.
    pub fn migrations(self) -> Vec<String> {
        MIGRATIONS
            .iter()
            .map(|step| {
                self.words()
                    .iter()
                    .fold((*step).to_owned(), |sql, (token, word)| {
                        sql.replace(token, word)
                    })
            })
            .collect()
    }
}

/// The newest schema version this classifier knows.
pub const VERSION: usize = MIGRATIONS.len();

const MIGRATIONS: &[&str] = &[
    // 1: ended flows.
    "CREATE TABLE flows (
        id {id},
        start_ms {i64} NOT NULL,
        end_ms {i64} NOT NULL,
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
        ech {bool} NOT NULL,
        server_initiated {bool} NOT NULL,
        up_packets {i64} NOT NULL,
        up_bytes {i64} NOT NULL,
        down_packets {i64} NOT NULL,
        down_bytes {i64} NOT NULL,
        blocked_packets {i64} NOT NULL,
        blocked_bytes {i64} NOT NULL,
        shaped_packets {i64} NOT NULL,
        shaped_bytes {i64} NOT NULL,
        end_reason TEXT NOT NULL,
        anonymised {bool} NOT NULL DEFAULT {false}
    );
    CREATE INDEX flows_by_start ON flows (start_ms);
    CREATE INDEX flows_by_client ON flows (client, start_ms);",
    // 2: totals that outlive deleted records (see `retention`).
    "CREATE TABLE daily_usage (
        day TEXT NOT NULL,
        category TEXT NOT NULL,
        app TEXT NOT NULL,
        grp TEXT NOT NULL,
        flows {i64} NOT NULL,
        up_bytes {i64} NOT NULL,
        down_bytes {i64} NOT NULL,
        blocked_bytes {i64} NOT NULL,
        shaped_bytes {i64} NOT NULL,
        PRIMARY KEY (day, category, app, grp)
    );
    CREATE INDEX flows_by_end ON flows (end_ms);",
    // 3: the bandwidth-degradation log, one JSON report per closed interval.
    "CREATE TABLE degradation (
        id {id},
        interval_s {i64} NOT NULL,
        start_ms {i64} NOT NULL,
        end_ms {i64} NOT NULL,
        report TEXT NOT NULL
    );
    CREATE INDEX degradation_by_end ON degradation (interval_s, end_ms);",
    // 4: what the client did to hide the name, and a second name from a second version.
    "ALTER TABLE flows ADD COLUMN unreadable {bool} NOT NULL DEFAULT {false};
    ALTER TABLE flows ADD COLUMN evasion TEXT NOT NULL DEFAULT '';
    ALTER TABLE flows ADD COLUMN second_name TEXT;
    ALTER TABLE flows ADD COLUMN second_category TEXT;",
    // 5: the retention each gateway's job enforces, for readers without its policy.
    "CREATE TABLE retention_in_force (
        gateway TEXT PRIMARY KEY,
        keep TEXT NOT NULL,
        after TEXT NOT NULL,
        degradation_keep TEXT NOT NULL,
        recorded_ms {i64} NOT NULL
    );",
    // 6: the translated (public) source of a NAT gateway's flows; NULL for every record
    // made before, or without NAT.
    "ALTER TABLE flows ADD COLUMN public_addr TEXT;
    ALTER TABLE flows ADD COLUMN public_port INTEGER;
    CREATE INDEX flows_by_public ON flows (public_addr, public_port, start_ms);",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_has_a_word_in_both_dialects() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            for (version, sql) in dialect.migrations().iter().enumerate() {
                assert!(
                    !sql.contains('{'),
                    "{dialect:?} step {}: {sql}",
                    version + 1
                );
            }
        }
    }

    #[test]
    fn the_sqlite_schema_builds_a_store() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        for sql in Dialect::Sqlite.migrations() {
            connection.execute_batch(&sql).unwrap();
        }
    }
}
