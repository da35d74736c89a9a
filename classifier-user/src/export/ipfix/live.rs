//! The live export: flows sent to the policy's collector over UDP, when they end and,
//! while they last, every active timeout.
//!
//! Every report counts what crossed since the flow's previous report (octetDeltaCount and
//! packetDeltaCount are deltas by definition), so a collector that adds a flow's reports
//! up has the flow's total; an interim report ends with flowEndReason 2 (active timeout)
//! and the next report starts where it ended. [`Reports`] remembers what each lasting
//! flow has been reported with.

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::Context as _;
use jiff::Timestamp;

use super::{Encoder, Layout, OBSERVATION_DOMAIN, protocol_number};
use crate::flows::{Counters, FlowRecord};

/// A connected exporter: a socket, its collector, and the encoder that numbers its
/// messages.
pub struct LiveExport {
    socket: UdpSocket,
    collector: SocketAddr,
    layout: Layout,
    encoder: Encoder,
}

impl LiveExport {
    pub fn connect(collector: SocketAddr, layout: Layout) -> anyhow::Result<Self> {
        let bind: SocketAddr = if collector.is_ipv4() {
            "0.0.0.0:0".parse()?
        } else {
            "[::]:0".parse()?
        };
        let socket = UdpSocket::bind(bind).context("opening the IPFIX socket")?;
        Ok(Self {
            socket,
            collector,
            layout,
            encoder: Encoder::new(OBSERVATION_DOMAIN, layout),
        })
    }

    /// Whether this exporter is the one `collector` and `layout` ask for (a reloaded
    /// policy may change either).
    pub fn serves(&self, collector: SocketAddr, layout: Layout) -> bool {
        self.collector == collector && self.layout == layout
    }

    /// Sends `records` (already deltas); returns how many messages went out.
    pub fn send(&mut self, records: &[FlowRecord]) -> std::io::Result<usize> {
        let messages = self.encoder.messages(records, Timestamp::now());
        for message in &messages {
            self.socket.send_to(message, self.collector)?;
        }
        Ok(messages.len())
    }
}

/// A flow as the collector knows it: client, server, IP protocol.
pub type FlowId = (SocketAddr, SocketAddr, u8);

pub fn flow_id(record: &FlowRecord) -> FlowId {
    (
        record.client,
        record.server,
        protocol_number(&record.protocol),
    )
}

/// What one lasting flow has been reported with so far.
#[derive(Clone, Copy, Debug)]
struct Reported {
    upload: Counters,
    download: Counters,
    /// The last packet the previous report covered: where the next report starts.
    until: Timestamp,
    /// When that report went out (CLOCK_BOOTTIME, ns).
    at_ns: u64,
}

/// The flows reported while they last, and with what: every report is then a delta.
/// Only flows older than the active timeout are here, and only until they end.
#[derive(Debug, Default)]
pub struct Reports {
    reported: HashMap<FlowId, Reported>,
}

impl Reports {
    /// Whether a live flow that started at `first_seen_ns` and last moved a packet at
    /// `last_seen_ns` is due a report (all on the datapath's clock): when it has been
    /// active for `every` since it started, or since its last report. Activity, not the
    /// walk's clock: a flow that went quiet before the timeout (one ended by FIN and
    /// waiting out its linger, or idle) is reported once, when it ends.
    pub fn due(&self, id: &FlowId, first_seen_ns: u64, last_seen_ns: u64, every: Duration) -> bool {
        let since = self
            .reported
            .get(id)
            .map_or(first_seen_ns, |reported| reported.at_ns);
        last_seen_ns.saturating_sub(since) >= every.as_nanos() as u64
    }

    /// The report of a live flow (`record` holds its totals so far), remembered as the
    /// base of the next one.
    pub fn interim(&mut self, record: &FlowRecord, now_ns: u64) -> FlowRecord {
        let id = flow_id(record);
        let report = self.delta(&id, record);
        self.reported.insert(
            id,
            Reported {
                upload: record.upload,
                download: record.download,
                until: record.last_seen,
                at_ns: now_ns,
            },
        );
        report
    }

    /// The last report of a flow that ended; it is forgotten.
    pub fn last(&mut self, record: &FlowRecord) -> FlowRecord {
        let id = flow_id(record);
        let report = self.delta(&id, record);
        self.reported.remove(&id);
        report
    }

    /// Forgets every flow (the export stopped: the next collector starts afresh).
    pub fn clear(&mut self) {
        self.reported.clear();
    }

    pub fn len(&self) -> usize {
        self.reported.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reported.is_empty()
    }

    /// `record` less what was reported of it before: the counters since, from where the
    /// previous report ended.
    fn delta(&self, id: &FlowId, record: &FlowRecord) -> FlowRecord {
        let mut report = record.clone();
        if let Some(before) = self.reported.get(id) {
            report.upload = since(record.upload, before.upload);
            report.download = since(record.download, before.download);
            report.first_seen = before.until.min(record.last_seen);
        }
        report
    }
}

fn since(now: Counters, before: Counters) -> Counters {
    Counters {
        packets: now.packets.saturating_sub(before.packets),
        bytes: now.bytes.saturating_sub(before.bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EndReason, tests::flow};

    const SECOND: u64 = 1_000_000_000;

    fn at(record: &FlowRecord, seconds: i64, up: u64, down: u64) -> FlowRecord {
        let mut record = record.clone();
        record.last_seen = record
            .first_seen
            .checked_add(jiff::SignedDuration::from_secs(seconds))
            .unwrap();
        record.upload = Counters {
            packets: up,
            bytes: up * 100,
        };
        record.download = Counters {
            packets: down,
            bytes: down * 1000,
        };
        record.ended = None;
        record
    }

    #[test]
    fn a_lasting_flow_is_due_every_active_timeout_and_its_reports_add_up() {
        let every = Duration::from_secs(60);
        let start = flow("192.0.2.10:40000", "2026-11-23T10:00:00Z", "gambling", 0);
        let id = flow_id(&start);
        let started_ns = 1000 * SECOND;
        let mut reports = Reports::default();
        assert!(!reports.due(&id, started_ns, started_ns + 59 * SECOND, every));
        assert!(reports.due(&id, started_ns, started_ns + 60 * SECOND, every));

        // Quiet since its 10th second: never due, however late the walk comes.
        let quiet = (crate::flows::socket_addr([0; 16], 1), id.1, id.2);
        assert!(!reports.due(&quiet, started_ns, started_ns + 10 * SECOND, every));

        let first = reports.interim(&at(&start, 60, 10, 50), started_ns + 60 * SECOND);
        assert_eq!((first.upload.packets, first.download.packets), (10, 50));
        assert_eq!(first.first_seen, start.first_seen);
        assert!(!reports.due(&id, started_ns, started_ns + 100 * SECOND, every));
        assert!(reports.due(&id, started_ns, started_ns + 120 * SECOND, every));

        let second = reports.interim(&at(&start, 119, 25, 80), started_ns + 120 * SECOND);
        assert_eq!((second.upload.packets, second.download.packets), (15, 30));
        assert_eq!(second.download.bytes, 30_000);
        assert_eq!(
            second.first_seen, first.last_seen,
            "it starts where the last ended"
        );

        let mut end = at(&start, 150, 26, 81);
        end.ended = Some(EndReason::Fin);
        let last = reports.last(&end);
        assert_eq!((last.upload.packets, last.download.packets), (1, 1));
        assert_eq!(last.ended, Some(EndReason::Fin));
        assert!(reports.is_empty(), "an ended flow is forgotten");
        let sum: u64 = [&first, &second, &last]
            .iter()
            .map(|r| r.download.bytes)
            .sum();
        assert_eq!(sum, end.download.bytes);
    }

    #[test]
    fn a_flow_never_reported_before_its_end_is_reported_whole() {
        let mut reports = Reports::default();
        let record = flow("192.0.2.10:40000", "2026-11-23T10:00:00Z", "gambling", 9000);
        assert_eq!(reports.last(&record), record);
    }

    #[test]
    fn counters_that_go_backwards_give_zero_not_a_wrap() {
        // A flow taken out and started again under the same five-tuple between walks.
        let mut reports = Reports::default();
        let start = flow("192.0.2.10:40000", "2026-11-23T10:00:00Z", "gambling", 0);
        reports.interim(&at(&start, 60, 10, 50), 60 * SECOND);
        let again = reports.last(&at(&start, 61, 2, 3));
        assert_eq!((again.upload.packets, again.download.bytes), (0, 0));
    }
}
