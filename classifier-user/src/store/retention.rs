//! The retention job: flow records older than the policy allows (14 months by default)
//! are deleted or anonymised, as `[records] after_retention` says.
//!
//! Deleting first adds the records to `daily_usage` (per day, category, application and
//! group: flows and bytes), so capacity figures outlive the records. Anonymising removes
//! the client's address, port and MAC from the record itself and keeps the rest; nothing
//! that could lead back to the client is replaced by something derived from it (a hash of
//! an address can be reversed by trying every address), it is removed.
//!
//! Degradation reports lose their top clients at the same cutoff and are deleted at their
//! own (`degradation_retention`, 90 days by default).
//!
//! Each run records the retention in force in the store (`retention_in_force`, one row per
//! gateway), so that a reader without the daemon's policy, `classifier export`, can leave
//! out what the job should have removed even if it has not run yet ([`RetentionView`]).
//!
//! The clock is a parameter: the daemon passes the time now, tests a time of their own.

use anyhow::Context as _;
use jiff::{Span, Timestamp};
use rusqlite::params;
use serde::Serialize;

use super::{Filter, FlowStore, StoredFlow};

pub use crate::policy::retention::{AfterRetention, Retention};

/// `retention` as `retention_in_force` keeps it: (keep, after, degradation keep).
pub(crate) fn retention_row(retention: &Retention) -> (String, &'static str, String) {
    (
        format!("{:#}", retention.keep),
        retention.after.name(),
        format!("{:#}", retention.degradation_keep),
    )
}

/// A row of `retention_in_force`, read back.
pub(crate) fn retention_from_row(
    keep: &str,
    after: &str,
    degradation_keep: &str,
) -> anyhow::Result<Retention> {
    let span = |text: &str| -> anyhow::Result<Span> {
        text.parse()
            .with_context(|| format!("the store's recorded retention `{text}`"))
    };
    Ok(Retention {
        keep: span(keep)?,
        after: AfterRetention::parse(after)
            .with_context(|| format!("the store's recorded `after_retention` `{after}`"))?,
        degradation_keep: span(degradation_keep)?,
    })
}

/// What one run of the job did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub cutoff: Timestamp,
    pub deleted: u64,
    pub anonymised: u64,
    /// Degradation reports deleted (past `degradation_retention`).
    pub degradation_deleted: u64,
}

impl RetentionReport {
    /// Whether the job removed anything.
    pub fn changed(&self) -> bool {
        self.deleted + self.anonymised + self.degradation_deleted > 0
    }
}

/// The name this gateway records its retention under: its host name.
pub(crate) fn gateway_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "gateway".to_owned())
}

/// What a reader of the store may return, from every retention recorded in it (the
/// strictest wins: several gateways may share a PostgreSQL store), or the built-in 14
/// months when none is (a store no daemon of this version has run the job on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionView {
    /// Records that ended before this should have been deleted: left out.
    pub drop_before: Option<Timestamp>,
    /// Records that ended before this should have been anonymised: shown without client.
    /// Degradation reports that ended before it have no top clients.
    pub anonymise_before: Option<Timestamp>,
    /// Degradation reports that ended before this should have been deleted: left out.
    pub degradation_drop_before: Option<Timestamp>,
}

impl RetentionView {
    pub fn new(recorded: &[Retention], now: Timestamp) -> anyhow::Result<Self> {
        let fallback = [Retention::default()];
        let retentions = if recorded.is_empty() {
            &fallback[..]
        } else {
            recorded
        };
        let mut view = Self {
            drop_before: None,
            anonymise_before: None,
            degradation_drop_before: None,
        };
        for retention in retentions {
            let cutoff = Some(retention.cutoff(now)?);
            if retention.after == AfterRetention::Delete {
                view.drop_before = view.drop_before.max(cutoff);
            }
            view.anonymise_before = view.anonymise_before.max(cutoff);
            view.degradation_drop_before = view
                .degradation_drop_before
                .max(Some(retention.degradation_cutoff(now)?));
        }
        Ok(view)
    }

    /// Degradation reports as the job would have left them: none past
    /// `degradation_retention`, none naming a client past `retention`.
    pub fn apply_to_degradation(
        &self,
        reports: Vec<crate::degradation::IntervalReport>,
    ) -> Vec<crate::degradation::IntervalReport> {
        let before = |cutoff: Option<Timestamp>, end: Timestamp| cutoff.is_some_and(|c| end < c);
        reports
            .into_iter()
            .filter(|report| !before(self.degradation_drop_before, report.end))
            .map(|mut report| {
                if before(self.anonymise_before, report.end) {
                    report.top_clients.clear();
                }
                report
            })
            .collect()
    }

    /// `flows` as the job would have left them: past retention, deleted or anonymised. A
    /// record the job would have anonymised no longer has the client `filter` names.
    pub fn apply(&self, flows: Vec<StoredFlow>, filter: &Filter) -> Vec<StoredFlow> {
        let before = |cutoff: Option<Timestamp>, flow: &StoredFlow| {
            cutoff.is_some_and(|cutoff| flow.flow.last_seen < cutoff)
        };
        flows
            .into_iter()
            .filter(|flow| !before(self.drop_before, flow))
            .filter_map(|mut flow| {
                if !flow.anonymised && before(self.anonymise_before, &flow) {
                    if filter.client.is_some() {
                        return None;
                    }
                    flow.flow.client = std::net::SocketAddr::new(
                        std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                        0,
                    );
                    flow.flow.client_mac = None;
                    flow.anonymised = true;
                }
                Some(flow)
            })
            .collect()
    }
}

/// Deletes or anonymises every record that ended before `retention`'s cutoff from `now`.
pub fn apply(
    store: &mut FlowStore,
    retention: &Retention,
    now: Timestamp,
) -> anyhow::Result<RetentionReport> {
    let cutoff = retention.cutoff(now)?;
    let cutoff_ms = cutoff.as_millisecond();
    let degradation_cutoff = retention.degradation_cutoff(now)?;
    let transaction = store.connection().transaction()?;
    let mut report = RetentionReport {
        cutoff,
        deleted: 0,
        anonymised: 0,
        degradation_deleted: 0,
    };
    let (keep, after, degradation_keep) = retention_row(retention);
    transaction
        .execute(
            "INSERT INTO retention_in_force (gateway, keep, after, degradation_keep, recorded_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (gateway) DO UPDATE SET keep = excluded.keep, after = excluded.after,
                degradation_keep = excluded.degradation_keep,
                recorded_ms = excluded.recorded_ms",
            params![
                gateway_name(),
                keep,
                after,
                degradation_keep,
                now.as_millisecond()
            ],
        )
        .context("recording the retention in force")?;
    report.degradation_deleted = transaction
        .execute(
            "DELETE FROM degradation WHERE end_ms < ?1",
            params![degradation_cutoff.as_millisecond()],
        )
        .context("deleting expired degradation reports")? as u64;
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
    /// Every retention recorded in the store (one per gateway that ran the job).
    pub fn recorded_retentions(&mut self) -> anyhow::Result<Vec<Retention>> {
        let mut statement = self
            .connection()
            .prepare("SELECT keep, after, degradation_keep FROM retention_in_force")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        let mut retentions = Vec::new();
        for row in rows {
            let (keep, after, degradation_keep) = row?;
            retentions.push(retention_from_row(&keep, &after, &degradation_keep)?);
        }
        Ok(retentions)
    }

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

    /// A 5-minute degradation report that ended at `end`, naming one top client.
    fn degradation_report(end: &str) -> crate::degradation::IntervalReport {
        crate::degradation::testing::sample_report(300, end.parse().unwrap())
    }

    #[test]
    fn degradation_reports_have_their_own_retention() {
        let temp = TempStore::new("retention-degradation");
        let mut store = FlowStore::open(&temp.path).unwrap();
        store
            .insert_degradation(&[
                // Past 90 days (and past 30 days).
                degradation_report("2026-08-01T10:00:00Z"),
                // Within 90 days, past 30.
                degradation_report("2026-10-20T10:00:00Z"),
                // Within both.
                degradation_report("2026-12-01T10:00:00Z"),
            ])
            .unwrap();
        let ends = |store: &FlowStore| -> Vec<String> {
            store
                .degradation(None, None, 100)
                .unwrap()
                .iter()
                .map(|r| r.end.to_string())
                .collect()
        };
        let retention = Retention {
            keep: Span::new().days(30),
            ..Retention::default()
        };
        let report = apply(&mut store, &retention, now()).unwrap();
        assert_eq!(report.degradation_deleted, 1);
        assert!(report.changed());
        assert_eq!(
            ends(&store),
            ["2026-10-20T10:00:00Z", "2026-12-01T10:00:00Z"]
        );
        // The one past the records' 30 days has lost its clients, the recent one has not.
        let reports = store.degradation(None, None, 100).unwrap();
        assert!(reports[0].top_clients.is_empty());
        assert_eq!(reports[1].top_clients.len(), 1);
        // Nor is the deleted report's client left in the file's bytes.
        drop(store);
        let bytes = std::fs::read(&temp.path).unwrap();
        let count = bytes
            .windows("192.0.2.77".len())
            .filter(|w| *w == b"192.0.2.77")
            .count();
        assert_eq!(count, 1, "only the recent report names the client");
    }

    #[test]
    fn a_reader_sees_degradation_reports_as_the_job_would_leave_them() {
        let reports = vec![
            degradation_report("2026-08-01T10:00:00Z"),
            degradation_report("2026-10-20T10:00:00Z"),
            degradation_report("2026-12-01T10:00:00Z"),
        ];
        let ends = |reports: &[crate::degradation::IntervalReport]| -> Vec<(String, usize)> {
            reports
                .iter()
                .map(|r| (r.end.to_string(), r.top_clients.len()))
                .collect()
        };
        // Nothing recorded: reports kept 90 days, clients 14 months.
        let view = RetentionView::new(&[], now()).unwrap();
        assert_eq!(
            ends(&view.apply_to_degradation(reports.clone())),
            [
                ("2026-10-20T10:00:00Z".into(), 1),
                ("2026-12-01T10:00:00Z".into(), 1)
            ]
        );
        // Clients 30 days, reports a year; with a second gateway's 90 days the strictest
        // wins for each.
        let short = Retention {
            keep: Span::new().days(30),
            degradation_keep: Span::new().days(365),
            ..Retention::default()
        };
        let view = RetentionView::new(&[short], now()).unwrap();
        assert_eq!(
            ends(&view.apply_to_degradation(reports.clone())),
            [
                ("2026-08-01T10:00:00Z".into(), 0),
                ("2026-10-20T10:00:00Z".into(), 0),
                ("2026-12-01T10:00:00Z".into(), 1)
            ]
        );
        let view = RetentionView::new(&[short, Retention::default()], now()).unwrap();
        assert_eq!(
            ends(&view.apply_to_degradation(reports)),
            [
                ("2026-10-20T10:00:00Z".into(), 0),
                ("2026-12-01T10:00:00Z".into(), 1)
            ]
        );
    }

    #[test]
    fn the_job_records_the_retention_it_enforces() {
        let temp = TempStore::new("retention-recorded");
        let mut store = FlowStore::open(&temp.path).unwrap();
        assert!(store.recorded_retentions().unwrap().is_empty());
        let retention = Retention {
            keep: Span::new().days(30),
            after: AfterRetention::Anonymise,
            degradation_keep: Span::new().days(7),
        };
        apply(&mut store, &retention, now()).unwrap();
        // A second run (a later policy) replaces this gateway's row.
        apply(&mut store, &retention, now()).unwrap();
        let recorded = store.recorded_retentions().unwrap();
        assert_eq!(recorded.len(), 1);
        assert_eq!(retention_row(&recorded[0]), retention_row(&retention));
    }

    #[test]
    fn a_reader_sees_records_as_the_job_would_leave_them() {
        let temp = TempStore::new("retention-view");
        let store = store_with_old_and_new_records(&temp);
        let flows = store.query(&Filter::default()).unwrap();
        let ports = |flows: &[StoredFlow]| -> Vec<u16> {
            flows.iter().map(|f| f.flow.client.port()).collect()
        };
        // Nothing recorded: the built-in 14 months, deleted.
        let view = RetentionView::new(&[], now()).unwrap();
        assert_eq!(
            ports(&view.apply(flows.clone(), &Filter::default())),
            [1002, 1003]
        );
        // Anonymise: the old ones without their client; filtered by a client, not at all.
        let anonymise = Retention {
            after: AfterRetention::Anonymise,
            ..Retention::default()
        };
        let view = RetentionView::new(&[anonymise], now()).unwrap();
        let seen = view.apply(flows.clone(), &Filter::default());
        assert_eq!(ports(&seen), [0, 0, 1002, 1003]);
        assert!(
            seen[..2]
                .iter()
                .all(|f| f.anonymised && f.flow.client_mac.is_none())
        );
        let client_10 = Filter {
            client: Some("192.0.2.10".parse().unwrap()),
            ..Filter::default()
        };
        assert_eq!(
            ports(&view.apply(flows.clone(), &client_10)),
            [1002, 1003],
            "an anonymised record no longer belongs to its client"
        );
        // Two gateways: the strictest wins.
        let short = Retention {
            keep: Span::new().days(30),
            ..Retention::default()
        };
        let view = RetentionView::new(&[anonymise, short], now()).unwrap();
        assert_eq!(ports(&view.apply(flows, &Filter::default())), [1003]);
    }
}
