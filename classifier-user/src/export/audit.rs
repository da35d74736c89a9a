//! The export audit log: one JSON line per investigation export (who asked, under which
//! case, who ran it, what filter, how many rows, the file's SHA-256), each line chained to
//! the one before by a SHA-256 hash, so that a changed, removed or reordered entry is
//! found by `classifier audit verify`.
//!
//! The log is only ever appended to (opened `O_APPEND`, locked while an entry is added).
//! A chain cannot show that its newest entries were cut off: `verify` prints the head
//! hash, which whoever oversees investigations can note down and compare later.

use std::{
    fs::OpenOptions,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
};

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::store::Filter;

/// Where exports are audited unless told otherwise.
pub const DEFAULT_AUDIT_LOG: &str = "/var/lib/classifier/export-audit.jsonl";

/// The hash the first entry chains to.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an export was, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportFacts {
    /// The case reference the investigation is filed under.
    pub case: String,
    /// The senior manager who asked for it.
    pub requested_by: String,
    /// Who ran the export on the gateway (the login behind sudo, else the user).
    pub operator: String,
    pub filter: Filter,
    pub format: String,
    /// The file written.
    pub file: String,
    pub rows: u64,
    /// SHA-256 of the file written, hex.
    pub file_sha256: String,
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1, 2, 3, ... in the order written.
    pub seq: u64,
    pub at: Timestamp,
    #[serde(flatten)]
    pub facts: ExportFacts,
    /// The hash of the entry before (zeros for the first).
    pub prev: String,
    /// SHA-256 of `prev` and this entry without `hash`.
    pub hash: String,
}

/// The part of an entry its hash covers: everything but the hash.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    at: &'a Timestamp,
    #[serde(flatten)]
    facts: &'a ExportFacts,
    prev: &'a str,
}

fn entry_hash(seq: u64, at: &Timestamp, facts: &ExportFacts, prev: &str) -> anyhow::Result<String> {
    let body = serde_json::to_vec(&Hashed {
        seq,
        at,
        facts,
        prev,
    })?;
    Ok(hex(&Sha256::digest(&body)))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends an entry for `facts` at `now` and returns it. The log and its directory are
/// made when missing; the chain is checked before the entry is added, so an export is
/// never chained to a log that was tampered with.
pub fn append(log: &Path, facts: ExportFacts, now: Timestamp) -> anyhow::Result<AuditEntry> {
    if let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the audit log's directory {}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(log)
        .with_context(|| format!("opening the audit log {}", log.display()))?;
    crate::store::restrict(log)?;
    // Two exports at once must not chain to the same head.
    file.lock()
        .with_context(|| format!("locking the audit log {}", log.display()))?;
    let head = verify(log).with_context(|| {
        format!(
            "the audit log {} does not verify; no export is added to it",
            log.display()
        )
    })?;
    let (seq, prev) = match head.last {
        Some(last) => (last.seq + 1, last.hash),
        None => (1, GENESIS.to_owned()),
    };
    let hash = entry_hash(seq, &now, &facts, &prev)?;
    let entry = AuditEntry {
        seq,
        at: now,
        facts,
        prev,
        hash,
    };
    let mut line = serde_json::to_string(&entry)?;
    line.push('\n');
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing to the audit log {}", log.display()))?;
    Ok(entry)
}

/// What a verified log holds.
#[derive(Debug, Default)]
pub struct Verified {
    pub entries: u64,
    /// The newest entry (its hash is the head of the chain).
    pub last: Option<AuditEntry>,
}

/// Checks every entry of `log`: in sequence, chained to the one before, its hash its own.
/// A missing log is an empty one.
pub fn verify(log: &Path) -> anyhow::Result<Verified> {
    let file = match std::fs::File::open(log) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verified::default()),
        Err(e) => return Err(e).with_context(|| format!("opening {}", log.display())),
    };
    let mut verified = Verified::default();
    let mut prev = GENESIS.to_owned();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("reading line {number}"))?;
        let entry: AuditEntry = serde_json::from_str(&line)
            .with_context(|| format!("line {number} is not an audit entry"))?;
        let expected_seq = verified.entries + 1;
        if entry.seq != expected_seq {
            bail!(
                "line {number}: entry {} where entry {expected_seq} should be: an entry was \
                 removed or moved",
                entry.seq
            );
        }
        if entry.prev != prev {
            bail!(
                "line {number} (entry {}): it does not chain to the entry before: an entry \
                 before it was changed, removed or moved",
                entry.seq
            );
        }
        let recomputed = entry_hash(entry.seq, &entry.at, &entry.facts, &entry.prev)?;
        if recomputed != entry.hash {
            bail!(
                "line {number} (entry {}): its hash does not match what it says: the entry \
                 was changed after it was written",
                entry.seq
            );
        }
        prev = entry.hash.clone();
        verified.entries += 1;
        verified.last = Some(entry);
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(case: &str, rows: u64) -> ExportFacts {
        ExportFacts {
            case: case.into(),
            requested_by: "J. Smith, Head of HR".into(),
            operator: "netadmin".into(),
            filter: Filter {
                client: Some("192.0.2.10".parse().unwrap()),
                ..Filter::default()
            },
            format: "csv".into(),
            file: "/tmp/case.csv".into(),
            rows,
            file_sha256: hex(&Sha256::digest(b"rows")),
        }
    }

    fn log_with_three_entries(name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "classifier-audit-{}-{name}.jsonl",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let now: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        for (i, case) in ["HR-2026-001", "HR-2026-002", "HR-2026-003"]
            .iter()
            .enumerate()
        {
            let entry = append(&path, facts(case, 10 + i as u64), now).unwrap();
            assert_eq!(entry.seq, i as u64 + 1);
        }
        path
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let path = log_with_three_entries("intact");
        let verified = verify(&path).unwrap();
        assert_eq!(verified.entries, 3);
        assert_eq!(verified.last.unwrap().facts.case, "HR-2026-003");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_changed_entry_is_found() {
        let path = log_with_three_entries("changed");
        let mut log = lines(&path);
        log[1] = log[1].replace("\"rows\":11", "\"rows\":1");
        write_lines(&path, &log);
        let err = format!("{:#}", verify(&path).unwrap_err());
        assert!(
            err.contains("line 2") && err.contains("changed after it was written"),
            "{err}"
        );
        // And no export is chained to it.
        let now = Timestamp::now();
        let refused = format!(
            "{:#}",
            append(&path, facts("HR-2026-004", 1), now).unwrap_err()
        );
        assert!(refused.contains("does not verify"), "{refused}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_changed_entry_with_a_recomputed_hash_breaks_the_next_link() {
        let path = log_with_three_entries("rehashed");
        let mut log = lines(&path);
        let mut entry: AuditEntry = serde_json::from_str(&log[0]).unwrap();
        entry.facts.requested_by = "someone else".into();
        entry.hash = entry_hash(entry.seq, &entry.at, &entry.facts, &entry.prev).unwrap();
        log[0] = serde_json::to_string(&entry).unwrap();
        write_lines(&path, &log);
        let err = format!("{:#}", verify(&path).unwrap_err());
        assert!(
            err.contains("line 2") && err.contains("does not chain"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_removed_or_moved_entry_is_found() {
        let path = log_with_three_entries("removed");
        let mut log = lines(&path);
        log.remove(1);
        write_lines(&path, &log);
        let err = format!("{:#}", verify(&path).unwrap_err());
        assert!(
            err.contains("line 2") && err.contains("removed or moved"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();

        let path = log_with_three_entries("moved");
        let mut log = lines(&path);
        log.swap(0, 1);
        write_lines(&path, &log);
        let err = format!("{:#}", verify(&path).unwrap_err());
        assert!(err.contains("line 1"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
