//! The retention job: flow records older than the policy allows (14 months by default)
//! are deleted or anonymised, as `[records] after_retention` says.
//!
//! Deleting first adds the records to `daily_usage` (per day, category, application and
//! group: flows and bytes), so capacity figures outlive the records. Anonymising removes
//! the client's address, port and MAC from the record itself and keeps the rest; nothing
//! that could lead back to the client is replaced by something derived from it (a hash of
//! an address can be reversed by trying every address), it is removed.
//!
//! The clock is a parameter: the daemon passes the time now, tests a time of their own.

use anyhow::Context as _;
use jiff::{Span, Timestamp, tz::TimeZone};
use rusqlite::params;
use serde::Serialize;

use super::FlowStore;

/// What happens to records past the retention period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterRetention {
    /// Deleted, once their volume is added to the daily totals.
    #[default]
    Delete,
    /// Kept without the client's address, port and MAC.
    Anonymise,
}

/// The retention the policy sets.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Retention {
    /// How long a record keeps who made the flow (calendar units: `14 months`).
    #[serde(serialize_with = "span_text")]
    pub keep: Span,
    pub after: AfterRetention,
}

fn span_text<S: serde::Serializer>(span: &Span, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format!("{span:#}"))
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep: Span::new().months(14),
            after: AfterRetention::Delete,
        }
    }
}

impl Retention {
    /// Records that ended before this are past retention. Months are calendar months,
    /// counted back in UTC.
    pub fn cutoff(&self, now: Timestamp) -> anyhow::Result<Timestamp> {
        let cutoff = now
            .to_zoned(TimeZone::UTC)
            .checked_sub(self.keep)
            .with_context(|| {
                format!(
                    "retention `{:#}` reaches before the calendar's start",
                    self.keep
                )
            })?;
        Ok(cutoff.timestamp())
    }
}

/// What one run of the job did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub cutoff: Timestamp,
    pub deleted: u64,
    pub anonymised: u64,
}

/// Deletes or anonymises every record that ended before `retention`'s cutoff from `now`.
pub fn apply(
    store: &mut FlowStore,
    retention: &Retention,
    now: Timestamp,
) -> anyhow::Result<RetentionReport> {
    let cutoff = retention.cutoff(now)?;
    let cutoff_ms = cutoff.as_millisecond();
    let transaction = store.connection().transaction()?;
    let mut report = RetentionReport {
        cutoff,
        deleted: 0,
        anonymised: 0,
    };
    // Degradation reports name their top clients: those go, the aggregates stay.
    transaction
        .execute(
            "UPDATE degradation SET report = json_remove(report, '$.top_clients')
             WHERE end_ms < ?1 AND json_type(report, '$.top_clients') IS NOT NULL",
            params![cutoff_ms],
        )
        .context("removing clients from expired degradation reports")?;
    match retention.after {
        AfterRetention::Delete => {
            transaction
                .execute(ADD_TO_DAILY_USAGE, params![cutoff_ms])
                .context("adding expired records to the daily totals")?;
            report.deleted = transaction
                .execute("DELETE FROM flows WHERE end_ms < ?1", params![cutoff_ms])
                .context("deleting expired records")? as u64;
        }
        AfterRetention::Anonymise => {
            report.anonymised = transaction
                .execute(
                    "UPDATE flows SET client = '::', client_port = 0, client_mac = NULL,
                        anonymised = 1
                     WHERE end_ms < ?1 AND anonymised = 0",
                    params![cutoff_ms],
                )
                .context("anonymising expired records")? as u64;
        }
    }
    transaction
        .commit()
        .context("committing the retention job")?;
    // The old pages are still in the write-ahead log until it is checkpointed.
    store
        .connection()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .context("checkpointing the flow store after the retention job")?;
    Ok(report)
}

/// Adds the records that ended before ?1 to `daily_usage`.
const ADD_TO_DAILY_USAGE: &str = "
    INSERT INTO daily_usage (day, category, app, grp, flows, up_bytes, down_bytes,
        blocked_bytes, shaped_bytes)
    SELECT date(start_ms / 1000, 'unixepoch'), category, app, grp, COUNT(*), SUM(up_bytes),
        SUM(down_bytes), SUM(blocked_bytes), SUM(shaped_bytes)
    FROM flows WHERE end_ms < ?1
    GROUP BY 1, 2, 3, 4
    ON CONFLICT (day, category, app, grp) DO UPDATE SET
        flows = flows + excluded.flows,
        up_bytes = up_bytes + excluded.up_bytes,
        down_bytes = down_bytes + excluded.down_bytes,
        blocked_bytes = blocked_bytes + excluded.blocked_bytes,
        shaped_bytes = shaped_bytes + excluded.shaped_bytes";

/// One day's totals for a category, application and group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DailyUsage {
    pub day: String,
    pub category: String,
    pub app: String,
    pub group: String,
    pub flows: u64,
    pub up_bytes: u64,
    pub down_bytes: u64,
}

impl FlowStore {
    /// The daily totals kept for deleted records, oldest first.
    pub fn daily_usage(&mut self) -> anyhow::Result<Vec<DailyUsage>> {
        let mut statement = self.connection().prepare(
            "SELECT day, category, app, grp, flows, up_bytes, down_bytes FROM daily_usage
             ORDER BY day, category, app, grp",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(DailyUsage {
                day: row.get(0)?,
                category: row.get(1)?,
                app: row.get(2)?,
                group: row.get(3)?,
                flows: row.get::<_, i64>(4)? as u64,
                up_bytes: row.get::<_, i64>(5)? as u64,
                down_bytes: row.get::<_, i64>(6)? as u64,
            })
        })?;
        rows.collect::<Result<_, _>>()
            .context("reading daily totals")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        Filter,
        tests::{TempStore, flow},
    };

    /// Three records: two from 2025 (one of them past 14 months on 2026-12-03), one recent.
    fn store_with_old_and_new_records(temp: &TempStore) -> FlowStore {
        let mut store = FlowStore::open(&temp.path).unwrap();
        store
            .insert(&[
                flow(
                    "192.0.2.10:1000",
                    "2025-09-01T09:00:00Z",
                    "streaming-video",
                    4000,
                ),
                flow(
                    "192.0.2.11:1001",
                    "2025-09-01T10:00:00Z",
                    "streaming-video",
                    6000,
                ),
                flow(
                    "192.0.2.10:1002",
                    "2025-10-10T09:00:00Z",
                    "streaming-video",
                    1000,
                ),
                flow("192.0.2.12:1003", "2026-11-30T09:00:00Z", "gambling", 700),
            ])
            .unwrap();
        store
    }

    fn now() -> Timestamp {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn fourteen_calendar_months_back() {
        let retention = Retention::default();
        assert_eq!(
            retention.cutoff(now()).unwrap(),
            "2025-10-03T12:00:00Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn deleting_keeps_daily_totals_of_what_it_deleted() {
        let temp = TempStore::new("retention-delete");
        let mut store = store_with_old_and_new_records(&temp);
        let report = apply(&mut store, &Retention::default(), now()).unwrap();
        assert_eq!(report.deleted, 2);
        let left: Vec<u16> = store
            .query(&Filter::default())
            .unwrap()
            .iter()
            .map(|f| f.flow.client.port())
            .collect();
        assert_eq!(left, [1002, 1003]);
        assert_eq!(
            store.daily_usage().unwrap(),
            [DailyUsage {
                day: "2025-09-01".into(),
                category: "streaming-video".into(),
                app: "youtube".into(),
                group: "staff".into(),
                flows: 2,
                up_bytes: 2000,
                down_bytes: 10_000,
            }]
        );
        // A second run a month later deletes the next one and adds to the totals.
        let later: Timestamp = "2027-01-03T12:00:00Z".parse().unwrap();
        assert_eq!(
            apply(&mut store, &Retention::default(), later)
                .unwrap()
                .deleted,
            1
        );
        assert_eq!(store.daily_usage().unwrap().len(), 2);
        assert_eq!(store.count().unwrap(), 1);
    }

    #[test]
    fn anonymising_removes_who_and_keeps_what() {
        let temp = TempStore::new("retention-anonymise");
        let mut store = store_with_old_and_new_records(&temp);
        let retention = Retention {
            after: AfterRetention::Anonymise,
            ..Retention::default()
        };
        let report = apply(&mut store, &retention, now()).unwrap();
        assert_eq!(report.anonymised, 2);
        let flows = store.query(&Filter::default()).unwrap();
        assert_eq!(flows.len(), 4);
        for old in &flows[..2] {
            assert!(old.anonymised);
            assert_eq!(old.flow.client, "[::]:0".parse().unwrap());
            assert_eq!(old.flow.client_mac, None);
            // What was visited and how much is still there.
            assert_eq!(old.flow.name.as_deref(), Some("www.youtube.com"));
            assert!(old.flow.download.bytes >= 4000);
        }
        for recent in &flows[2..] {
            assert!(!recent.anonymised);
            assert_ne!(recent.flow.client.port(), 0);
            assert!(recent.flow.client_mac.is_some());
        }
        // Nothing in the file still names the anonymised clients' addresses or MACs.
        let client_10 = Filter {
            client: Some("192.0.2.10".parse().unwrap()),
            ..Filter::default()
        };
        assert_eq!(store.query(&client_10).unwrap().len(), 1);
        let mac_rows: i64 = store
            .connection()
            .query_row(
                "SELECT COUNT(*) FROM flows WHERE client_mac IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(mac_rows, 2);
        // Nor do the file's bytes: secure_delete and the checkpoint overwrote them.
        drop(store);
        let bytes = std::fs::read(&temp.path).unwrap();
        let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(
            !contains("192.0.2.11"),
            "the anonymised address is still in the file"
        );
        assert!(contains("192.0.2.12"));
        let mut store = FlowStore::open(&temp.path).unwrap();
        // Run again: nothing more to do.
        assert_eq!(apply(&mut store, &retention, now()).unwrap().anonymised, 0);
    }
}
