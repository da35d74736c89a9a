//! The export audit log: one JSON line per investigation export (who asked, under which
//! case, who ran it, what filter, how many rows, the file's SHA-256).
//!
//! What each part of it stands against:
//! - the chain (each entry names the MAC of the one before, `prev`, and its own `seq`): an
//!   entry removed, moved or inserted;
//! - the MAC (HMAC-SHA256 under a key that only root can read, made on first use): an entry
//!   changed, or a whole chain recomputed, by anyone without the key (a plain hash can be
//!   recomputed by whoever can write the file);
//! - the copy of every entry in the journal (or syslog), sent as it is written: the tail
//!   cut off (last lines deleted, the file truncated or removed), which no chain can show;
//! - the fixed directory, opened without following links: an export audited into a file of
//!   the operator's choosing, or the log swapped for a link to another file.
//!
//! Root can read the key and rewrite the log and the local journal; what stands against
//! root is a journal forwarded off the gateway (docs/records.md).

pub mod witness;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use hmac::{Hmac, Mac as _};
use jiff::Timestamp;
use nix::{
    errno::Errno,
    fcntl::{OFlag, openat},
    sys::stat::{Mode, SFlag, fchmod, fstat},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use witness::Witness;

use crate::store::Filter;

/// Where the log and its key live. Fixed, root's, and not chosen on the command line: an
/// export audited into a file of the operator's choosing is not audited. (The tests give
/// the process a private mount of this directory instead.)
pub const AUDIT_DIR: &str = "/var/lib/classifier";
/// The log, in [`AUDIT_DIR`].
pub const LOG_FILE: &str = "export-audit.jsonl";
/// The MAC key, in [`AUDIT_DIR`]: 32 random bytes, root's only.
pub const KEY_FILE: &str = "export-audit.key";

/// Exports and their audit are root's: the log and its key are root's only.
pub fn require_root(command: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "`classifier {command}` needs root: the export audit log and its key ({}) are \
             root's (run it with sudo; the operator recorded is your login, not root)",
            AUDIT_DIR
        );
    }
    Ok(())
}

/// The format of the entries written (the first format, an unkeyed SHA-256 chain, had no
/// `v`).
const VERSION: u32 = 2;
/// What the first entry chains to.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const KEY_LEN: usize = 32;
/// How much of a torn line its record keeps as text (its hash covers all of it).
const TORN_TEXT_MAX: usize = 4096;
/// The login uid of a process that no login session started (`(uid_t)-1`).
const LOGINUID_UNSET: u32 = u32::MAX;

type HmacSha256 = Hmac<Sha256>;

/// Who ran an export: the login behind the process (its audit login uid, which `sudo` and
/// `su` keep), never its environment (`SUDO_USER` is whatever the caller says).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    /// The login's user name, `uid N` when it has none, `unset` when the process does not
    /// come from a login session (a service, a timer, boot), `unknown` on a kernel
    /// without audit support.
    pub name: String,
    pub login_uid: Option<u32>,
}

impl Operator {
    /// The login behind this process.
    pub fn current() -> Self {
        Self::from_loginuid(
            std::fs::read_to_string("/proc/self/loginuid")
                .ok()
                .as_deref(),
        )
    }

    /// From the text of `/proc/self/loginuid` (`None`: no such file).
    fn from_loginuid(text: Option<&str>) -> Self {
        let Some(uid) = text.and_then(|t| t.trim().parse::<u32>().ok()) else {
            return Self {
                name: "unknown".into(),
                login_uid: None,
            };
        };
        if uid == LOGINUID_UNSET {
            return Self {
                name: "unset".into(),
                login_uid: None,
            };
        }
        let name = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {uid}"), |user| user.name);
        Self {
            name,
            login_uid: Some(uid),
        }
    }
}

/// What an export was, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportFacts {
    /// The case reference the investigation is filed under.
    pub case: String,
    /// The senior manager who asked for it.
    pub requested_by: String,
    /// Who ran the export on the gateway: [`Operator::name`].
    pub operator: String,
    /// The operator's login uid; null when unset (or unknown).
    pub login_uid: Option<u32>,
    pub filter: Filter,
    pub format: String,
    /// The file written.
    pub file: String,
    pub rows: u64,
    /// SHA-256 of the file written, hex.
    pub file_sha256: String,
}

/// What an entry records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Event {
    /// Boxed: its filter makes it much larger than a torn line's record.
    Export(Box<ExportFacts>),
    /// The log ended in a torn line (an export killed while writing its entry, or the
    /// file cut in the middle of one). The line is kept, ended, and recorded here, so
    /// that later exports are not blocked and the tear stays visible.
    Torn(TornLine),
}

/// A torn line as its record describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TornLine {
    /// Its line number in the log.
    pub line: u64,
    pub bytes: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Its first bytes, as text.
    pub text: String,
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The format: 2.
    pub v: u32,
    /// 1, 2, 3, ... in the order written.
    pub seq: u64,
    pub at: Timestamp,
    #[serde(flatten)]
    pub event: Event,
    /// The MAC of the entry before (zeros for the first).
    pub prev: String,
    /// HMAC-SHA256, under the audit key, of this entry as written with `mac` empty.
    pub mac: String,
}

impl AuditEntry {
    /// The export this entry records, if it records one.
    pub fn export(&self) -> Option<&ExportFacts> {
        match &self.event {
            Event::Export(facts) => Some(&**facts),
            Event::Torn(_) => None,
        }
    }

    /// The line as written (without its newline).
    pub fn line(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string(self)?)
    }

    /// A short description for messages: `entry 3 (case HR-1 at 2026-12-01T10:00:00Z)`.
    pub fn describe(&self) -> String {
        match &self.event {
            Event::Export(facts) => {
                format!("entry {} (case {} at {})", self.seq, facts.case, self.at)
            }
            Event::Torn(torn) => format!(
                "entry {} (the record of torn line {} at {})",
                self.seq, torn.line, self.at
            ),
        }
    }
}

/// The audit key.
#[derive(Clone)]
struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// The MAC of `entry` as written with `mac` empty.
    fn mac(&self, entry: &AuditEntry) -> anyhow::Result<HmacSha256> {
        let unsealed = AuditEntry {
            mac: String::new(),
            ..entry.clone()
        };
        let mut mac = HmacSha256::new_from_slice(&self.0).context("the audit key")?;
        mac.update(&serde_json::to_vec(&unsealed)?);
        Ok(mac)
    }

    fn seal(
        &self,
        seq: u64,
        at: Timestamp,
        event: Event,
        prev: String,
    ) -> anyhow::Result<AuditEntry> {
        let mut entry = AuditEntry {
            v: VERSION,
            seq,
            at,
            event,
            prev,
            mac: String::new(),
        };
        entry.mac = hex(&self.mac(&entry)?.finalize().into_bytes());
        Ok(entry)
    }

    /// Whether `entry`'s MAC is its own (compared in constant time).
    fn verifies(&self, entry: &AuditEntry) -> anyhow::Result<bool> {
        let Some(claimed) = unhex(&entry.mac) else {
            return Ok(false);
        };
        Ok(self.mac(entry)?.verify_slice(&claimed).is_ok())
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The audit log and its key, in one directory.
#[derive(Clone, Debug)]
pub struct AuditLog {
    dir: PathBuf,
}

/// What [`AuditLog::record`] wrote.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The export's entry.
    pub entry: AuditEntry,
    /// The entry that records a torn last line found before it, if there was one.
    pub torn: Option<AuditEntry>,
}

impl AuditLog {
    /// The gateway's log, in [`AUDIT_DIR`].
    pub fn system() -> Self {
        Self::in_dir(AUDIT_DIR)
    }

    /// A log in `dir` (the unit tests'; the command line has no way to choose one).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// Appends an entry for `facts` at `now`, sends it to `witness`, then runs `publish`
    /// (which makes the export visible), all under the log's lock. The directory, the log
    /// and the key are made when missing (and only then given their modes); none is
    /// opened through a symbolic link. The log is checked first, so an export is never
    /// chained to a log that does not verify; a torn last line is recorded first, by an
    /// entry of its own.
    pub fn record(
        &self,
        facts: ExportFacts,
        now: Timestamp,
        witness: &Witness,
        publish: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<Recorded> {
        let log = self.path();
        let dir = AuditDir::open(&self.dir, true)?
            .with_context(|| format!("no audit directory {}", self.dir.display()))?;
        let (mut file, created) = dir
            .open_log(true)?
            .with_context(|| format!("no audit log {}", log.display()))?;
        lock(&file, &log)?;
        let content = read_all(&mut file, &log)?;
        let (key, new_key) = match dir.read_key()? {
            Some(key) => (key, false),
            None if content.is_empty() => (dir.create_key()?, true),
            None if first_format(&content) => return Err(first_format_error(&log)),
            None => bail!(
                "the audit key {} is missing, but the log {} has entries: it was deleted, and \
                 no export is chained to a log that cannot be checked",
                self.key_path().display(),
                log.display()
            ),
        };
        let written = self.append(&dir, &mut file, created, &content, &key, facts, now);
        let written = match written {
            Ok(written) => written,
            Err(e) => {
                if new_key {
                    // Nothing was chained to it: the next export makes another.
                    let _ = nix::unistd::unlinkat(
                        &dir.fd,
                        KEY_FILE,
                        nix::unistd::UnlinkatFlags::NoRemoveDir,
                    );
                }
                return Err(e);
            }
        };
        for (entry, line) in &written {
            witness.send(entry, line).with_context(|| {
                format!(
                    "{} is in the audit log but could not be sent to {}; the export was not \
                     made",
                    entry.describe(),
                    witness.describe()
                )
            })?;
        }
        // The export's entry last, the record of a torn line before it.
        let mut entries: Vec<AuditEntry> = written.into_iter().map(|(entry, _)| entry).collect();
        let entry = entries.pop().context("no entry was written")?;
        let torn = entries.pop();
        publish().with_context(|| {
            format!(
                "the export is audited ({} of {}) but could not be made",
                entry.describe(),
                log.display()
            )
        })?;
        Ok(Recorded { entry, torn })
    }

    /// Checks `content`, then appends (one write, then fsync) the record of a torn last
    /// line if there is one and the export's entry. Returns them with their lines.
    #[allow(clippy::too_many_arguments)]
    fn append(
        &self,
        dir: &AuditDir,
        file: &mut File,
        created: bool,
        content: &[u8],
        key: &Key,
        facts: ExportFacts,
        now: Timestamp,
    ) -> anyhow::Result<Vec<(AuditEntry, String)>> {
        let log = self.path();
        let chain = check(content, key).with_context(|| {
            format!(
                "the audit log {} does not verify; no export is added to it",
                log.display()
            )
        })?;
        let (mut seq, mut prev) = match chain.entries.last() {
            Some(last) => (last.entry.seq, last.entry.mac.clone()),
            None => (0, GENESIS.to_owned()),
        };
        let mut events = Vec::new();
        if let Some(torn) = &chain.torn_tail {
            events.push(Event::Torn(TornLine {
                line: torn.line as u64,
                bytes: torn.bytes.len() as u64,
                sha256: hex(&Sha256::digest(&torn.bytes)),
                text: String::from_utf8_lossy(&torn.bytes[..torn.bytes.len().min(TORN_TEXT_MAX)])
                    .into_owned(),
            }));
        }
        events.push(Event::Export(Box::new(facts)));
        // A torn line is ended where it stopped, and stays.
        let mut text = if chain.torn_tail.is_some() {
            String::from("\n")
        } else {
            String::new()
        };
        let mut written = Vec::new();
        for event in events {
            seq += 1;
            let entry = key.seal(seq, now, event, prev)?;
            let line = entry.line()?;
            text += &line;
            text.push('\n');
            prev = entry.mac.clone();
            written.push((entry, line));
        }
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing to the audit log {}", log.display()))?;
        if created {
            dir.sync()?;
        }
        Ok(written)
    }

    /// Checks every line of the log: each an entry as this classifier writes them, in
    /// sequence, chained to the one before, its MAC its own under the key; a torn line
    /// only where the entry after it records it; the last line whole. No directory, log
    /// and key is an empty log; a log without its key, or a key without its log, is not.
    pub fn verify(&self) -> anyhow::Result<Verified> {
        let log = self.path();
        let Some(dir) = AuditDir::open(&self.dir, false)? else {
            return Ok(Verified::default());
        };
        let key = dir.read_key()?;
        let Some((mut file, _)) = dir.open_log(false)? else {
            if key.is_some() {
                bail!(
                    "{} is missing, but its key {} exists: the log was deleted",
                    log.display(),
                    self.key_path().display()
                );
            }
            return Ok(Verified::default());
        };
        // Not half of an entry that an export is writing.
        file.lock_shared()
            .with_context(|| format!("locking {}", log.display()))?;
        let content = read_all(&mut file, &log)?;
        let Some(key) = key else {
            if content.is_empty() {
                return Ok(Verified::default());
            }
            if first_format(&content) {
                return Err(first_format_error(&log));
            }
            bail!(
                "the audit key {} is missing, so the entries of {} cannot be checked: the key \
                 was deleted",
                self.key_path().display(),
                log.display()
            );
        };
        if content.is_empty() {
            bail!(
                "{} is empty, but its key exists: the log was truncated (an export writes its \
                 entry right after making the key)",
                log.display()
            );
        }
        let chain = check(&content, &key)?;
        if let Some(torn) = &chain.torn_tail {
            bail!(
                "line {} is cut short ({} bytes and no end of line): the log was truncated in \
                 the middle of an entry, or an export was killed while writing it (the next \
                 export records it)",
                torn.line,
                torn.bytes.len()
            );
        }
        Ok(Verified {
            entries: chain.entries.len() as u64,
            last: chain.entries.last().map(|c| c.entry.clone()),
            torn_lines: chain.torn_lines,
            lines: chain
                .entries
                .into_iter()
                .map(|c| (c.entry.seq, c.line))
                .collect(),
            key: Some(key),
        })
    }
}

/// What a verified log holds.
#[derive(Debug, Default)]
pub struct Verified {
    pub entries: u64,
    /// The newest entry (its MAC is the head of the chain).
    pub last: Option<AuditEntry>,
    /// Line numbers of torn lines, each recorded by the entry after it.
    pub torn_lines: Vec<usize>,
    /// Each entry's line, by sequence number.
    lines: BTreeMap<u64, String>,
    key: Option<Key>,
}

/// How the log compares with the copies of its entries in the journal.
#[derive(Debug, Default)]
pub struct JournalCheck {
    /// Entries of the log found, identical, in the journal.
    pub found: u64,
    /// Entries of the log that the journal does not have (sent while it was down, or
    /// rotated out of it).
    pub not_in_journal: Vec<u64>,
    /// Lines that looked like audit entries but are not this gateway's (no valid MAC).
    pub foreign: u64,
}

impl Verified {
    /// Compares the log with `witnessed`, the entries found in an export of the journal or
    /// syslog ([`witness::entries_in`]): an entry there must be in the log, identical. One
    /// that is not, but carries a valid MAC, was cut from the log (or the log rewritten).
    pub fn compare_with(&self, witnessed: &[String]) -> anyhow::Result<JournalCheck> {
        let mut check = JournalCheck::default();
        let mut found = BTreeSet::new();
        let last = self.last.as_ref().map_or(0, |e| e.seq);
        let mut parsed: Vec<AuditEntry> = witnessed
            .iter()
            .filter_map(|line| parse_line(line.as_bytes()).ok())
            .collect();
        check.foreign = (witnessed.len() - parsed.len()) as u64;
        parsed.sort_by_key(|e| e.seq);
        for entry in parsed {
            let line = entry.line()?;
            if self.lines.get(&entry.seq) == Some(&line) {
                found.insert(entry.seq);
                continue;
            }
            let Some(key) = &self.key else {
                bail!(
                    "the journal holds audit entries ({} among them), but there is no audit log \
                     or key: both were deleted",
                    entry.describe()
                );
            };
            if !key.verifies(&entry)? {
                check.foreign += 1;
                continue;
            }
            if self.lines.contains_key(&entry.seq) {
                bail!(
                    "{} differs from its copy in the journal: the log was rewritten",
                    entry.describe()
                );
            }
            bail!(
                "{} is in the journal but not in the log, which ends at entry {last}: the log's \
                 tail was cut (lines deleted, or the file truncated or replaced)",
                entry.describe()
            );
        }
        check.found = found.len() as u64;
        check.not_in_journal = self
            .lines
            .keys()
            .filter(|seq| !found.contains(seq))
            .copied()
            .collect();
        Ok(check)
    }
}

/// One entry of a checked log.
struct Checked {
    entry: AuditEntry,
    line: String,
}

/// A checked log.
#[derive(Default)]
struct Chain {
    entries: Vec<Checked>,
    /// Torn lines that an entry records.
    torn_lines: Vec<usize>,
    /// Bytes after the last newline: a torn last line.
    torn_tail: Option<TornTail>,
}

struct TornTail {
    line: usize,
    bytes: Vec<u8>,
}

/// Checks the lines of a log (see [`AuditLog::verify`]); the first problem is the error,
/// naming its line.
fn check(content: &[u8], key: &Key) -> anyhow::Result<Chain> {
    let mut lines: Vec<&[u8]> = content.split(|&b| b == b'\n').collect();
    let tail = lines.pop().unwrap_or_default();
    let mut chain = Chain::default();
    let mut prev = GENESIS.to_owned();
    // A line that is not an entry, which only a record of it may follow.
    let mut unrecorded: Option<(usize, &[u8], String)> = None;
    for (index, raw) in lines.iter().enumerate() {
        let number = index + 1;
        let entry = match parse_line(raw) {
            Ok(entry) => entry,
            Err(why) => {
                if let Some((line, _, why)) = unrecorded {
                    bail!("line {line} is not an audit entry: {why}");
                }
                unrecorded = Some((number, raw, why));
                continue;
            }
        };
        let expected = chain.entries.len() as u64 + 1;
        if entry.seq != expected {
            bail!(
                "line {number}: entry {} where entry {expected} should be: an entry was removed, \
                 moved or inserted",
                entry.seq
            );
        }
        if entry.prev != prev {
            bail!(
                "line {number} (entry {}): it does not chain to the entry before it: an entry \
                 before it was changed, removed or moved",
                entry.seq
            );
        }
        if !key.verifies(&entry)? {
            bail!(
                "line {number} (entry {}): its MAC does not match: the entry was changed after \
                 it was written (or written without this gateway's audit key)",
                entry.seq
            );
        }
        match (&entry.event, unrecorded.take()) {
            (Event::Torn(torn), Some((line, raw, _)))
                if torn.line == line as u64
                    && torn.bytes == raw.len() as u64
                    && torn.sha256 == hex(&Sha256::digest(raw)) =>
            {
                chain.torn_lines.push(line);
            }
            (Event::Torn(torn), _) => bail!(
                "line {number} (entry {}) records a torn line {} that is not the line before it: \
                 a line was removed or changed",
                entry.seq,
                torn.line
            ),
            (Event::Export(_), Some((line, _, why))) => {
                bail!("line {line} is not an audit entry: {why}")
            }
            (Event::Export(_), None) => {}
        }
        prev = entry.mac.clone();
        chain.entries.push(Checked {
            entry,
            line: String::from_utf8_lossy(raw).into_owned(),
        });
    }
    if let Some((line, _, why)) = unrecorded {
        bail!("line {line} is not an audit entry: {why}");
    }
    if !tail.is_empty() {
        chain.torn_tail = Some(TornTail {
            line: lines.len() + 1,
            bytes: tail.to_vec(),
        });
    }
    Ok(chain)
}

/// An entry, if `raw` is one exactly as this classifier writes them; else why not.
fn parse_line(raw: &[u8]) -> Result<AuditEntry, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "it is not UTF-8 text".to_owned())?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("it is not JSON ({e})"))?;
    if is_first_format(&value) {
        return Err("it is an entry of the first, unkeyed format".into());
    }
    let entry: AuditEntry =
        serde_json::from_value(value).map_err(|e| format!("it is not an entry ({e})"))?;
    if entry.v != VERSION {
        return Err(format!(
            "it is of format {} (this classifier writes {VERSION})",
            entry.v
        ));
    }
    if entry.line().ok().as_deref() != Some(text) {
        return Err("it is not written as the classifier writes entries: it was edited".into());
    }
    Ok(entry)
}

/// Why a log of the first format is refused.
fn first_format_error(log: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is a log of the first, unkeyed format (a plain SHA-256 chain, which anyone who can \
         write it could recompute): move it aside and keep it (the classifier that wrote it \
         checks it); the next export starts a keyed log",
        log.display()
    )
}

fn is_first_format(value: &serde_json::Value) -> bool {
    value.get("v").is_none() && value.get("hash").is_some()
}

/// Whether the log's first line is an entry of the first format.
fn first_format(content: &[u8]) -> bool {
    let first = content.split(|&b| b == b'\n').next().unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(first).is_ok_and(|v| is_first_format(&v))
}

/// Waits for the log's lock, saying so when another export holds it. Killed while it
/// waits, an export leaves nothing: its file has no name yet.
fn lock(file: &File, log: &Path) -> anyhow::Result<()> {
    match file.try_lock() {
        Ok(()) => return Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking the audit log {}", log.display()));
        }
    }
    tracing::warn!(
        "waiting for another export to finish with the audit log {}",
        log.display()
    );
    file.lock()
        .with_context(|| format!("locking the audit log {}", log.display()))
}

fn read_all(file: &mut File, log: &Path) -> anyhow::Result<Vec<u8>> {
    let mut content = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut content))
        .with_context(|| format!("reading the audit log {}", log.display()))?;
    Ok(content)
}

/// The audit directory, open: its log and key are opened relative to it.
struct AuditDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl AuditDir {
    /// Opens `path` (making it, mode 0750, when `create` and missing), never through a
    /// symbolic link, and checks it is this user's (root's) and writable by no one else.
    fn open(path: &Path, create: bool) -> anyhow::Result<Option<Self>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let open = || nix::fcntl::open(path, flags, Mode::empty());
        let fd = match open() {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                let made = nix::unistd::mkdir(path, Mode::from_bits_truncate(0o750));
                let fd = open().with_context(|| format!("opening {}", path.display()))?;
                match made {
                    // Ours: its mode is ours to set (the umask may have taken bits off).
                    Ok(()) => fchmod(&fd, Mode::from_bits_truncate(0o750))
                        .with_context(|| format!("setting the mode of {}", path.display()))?,
                    Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("making {}", path.display()));
                    }
                }
                fd
            }
            Err(Errno::ENOENT) => return Ok(None),
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                return Err(e).with_context(|| {
                    format!(
                        "{} is a symbolic link or not a directory: the audit log is kept only \
                         in a real directory",
                        path.display()
                    )
                });
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        owned(&fd, path, SFlag::S_IFDIR, 0o022)?;
        Ok(Some(Self {
            path: path.to_owned(),
            fd,
        }))
    }

    /// Opens the log for appending (`append`: made, mode 0640, when missing) or for
    /// reading; never through a symbolic link. Also says whether it was made now.
    fn open_log(&self, append: bool) -> anyhow::Result<Option<(File, bool)>> {
        let path = self.path.join(LOG_FILE);
        let flags = if append {
            OFlag::O_RDWR | OFlag::O_APPEND
        } else {
            OFlag::O_RDONLY
        } | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC;
        let (fd, created) = match openat(&self.fd, LOG_FILE, flags, Mode::empty()) {
            Ok(fd) => (fd, false),
            Err(Errno::ENOENT) if append => {
                let fd = openat(
                    &self.fd,
                    LOG_FILE,
                    flags | OFlag::O_CREAT | OFlag::O_EXCL,
                    Mode::from_bits_truncate(0o640),
                )
                .with_context(|| format!("making the audit log {}", path.display()))?;
                fchmod(&fd, Mode::from_bits_truncate(0o640))
                    .with_context(|| format!("setting the mode of {}", path.display()))?;
                (fd, true)
            }
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(not_a_link(e, &path, "audit log")),
        };
        owned(&fd, &path, SFlag::S_IFREG, 0o022)?;
        Ok(Some((File::from(fd), created)))
    }

    /// The key, if there is one (a regular file of 32 bytes, root's only).
    fn read_key(&self) -> anyhow::Result<Option<Key>> {
        let path = self.path.join(KEY_FILE);
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, KEY_FILE, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(not_a_link(e, &path, "audit key")),
        };
        owned(&fd, &path, SFlag::S_IFREG, 0o077)?;
        let mut bytes = Vec::new();
        File::from(fd)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        let key = bytes.try_into().map_err(|bytes: Vec<u8>| {
            anyhow::anyhow!(
                "{} holds {} bytes, not a key of {KEY_LEN}",
                path.display(),
                bytes.len()
            )
        })?;
        Ok(Some(Key(key)))
    }

    /// Makes the key (mode 0600, 32 bytes from the kernel's random source).
    fn create_key(&self) -> anyhow::Result<Key> {
        let path = self.path.join(KEY_FILE);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, KEY_FILE, flags, Mode::from_bits_truncate(0o600))
            .map_err(|e| not_a_link(e, &path, "audit key"))?;
        fchmod(&fd, Mode::from_bits_truncate(0o600))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        let mut key = [0; KEY_LEN];
        getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no random bytes: {e}"))?;
        let mut file = File::from(fd);
        file.write_all(&key)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        self.sync()?;
        Ok(Key(key))
    }

    /// Makes the directory's new names durable.
    fn sync(&self) -> anyhow::Result<()> {
        nix::unistd::fsync(&self.fd).with_context(|| format!("syncing {}", self.path.display()))
    }
}

fn not_a_link(e: Errno, path: &Path, what: &str) -> anyhow::Error {
    if e == Errno::ELOOP {
        anyhow::anyhow!(
            "the {what} {} is a symbolic link: refused (it is opened only as a file of its own, \
             never through a link)",
            path.display()
        )
    } else {
        anyhow::Error::new(e).context(format!("opening the {what} {}", path.display()))
    }
}

/// Checks that `fd` is a `kind` (directory, regular file) of this user (root) with none of
/// the mode bits `forbidden`.
fn owned(fd: &OwnedFd, path: &Path, kind: SFlag, forbidden: u32) -> anyhow::Result<()> {
    let stat = fstat(fd).with_context(|| format!("checking {}", path.display()))?;
    if stat.st_mode & SFlag::S_IFMT.bits() != kind.bits() {
        bail!(
            "{} is not a {}",
            path.display(),
            if kind == SFlag::S_IFDIR {
                "directory"
            } else {
                "regular file"
            }
        );
    }
    let me = nix::unistd::geteuid().as_raw();
    if stat.st_uid != me {
        bail!(
            "{} belongs to uid {}, not to uid {me}: the audit log's files are root's",
            path.display(),
            stat.st_uid
        );
    }
    let mode = stat.st_mode & 0o7777;
    if mode & forbidden != 0 {
        bail!(
            "{} has mode {mode:04o}: {} by others than its owner; refused until `chmod {:o}`",
            path.display(),
            if forbidden & 0o044 != 0 {
                "it may be read"
            } else {
                "it may be written"
            },
            mode & !forbidden
        );
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::{fs::PermissionsExt as _, net::UnixDatagram};

    use super::*;

    /// A temporary audit directory and a syslog socket of the test's own as the witness.
    pub(crate) struct TempAudit {
        pub dir: PathBuf,
        pub log: AuditLog,
        socket: UnixDatagram,
        pub witness: Witness,
    }

    impl TempAudit {
        pub(crate) fn new(name: &str) -> Self {
            let root = std::env::temp_dir()
                .join(format!("classifier-audit-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
            let socket_path = root.join("log.sock");
            let socket = UnixDatagram::bind(&socket_path).unwrap();
            socket.set_nonblocking(true).unwrap();
            let witness = Witness::syslog(&socket_path).unwrap();
            let dir = root.join("state");
            Self {
                log: AuditLog::in_dir(&dir),
                dir,
                socket,
                witness,
            }
        }

        /// The datagrams the witness has received so far.
        pub(crate) fn witnessed(&self) -> Vec<String> {
            let mut received = Vec::new();
            let mut buffer = vec![0; 65536];
            while let Ok(n) = self.socket.recv(&mut buffer) {
                received.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
            }
            received
        }

        pub(crate) fn record(&self, case: &str, rows: u64) -> anyhow::Result<Recorded> {
            self.log
                .record(facts(case, rows), now(), &self.witness, || Ok(()))
        }

        fn lines(&self) -> Vec<String> {
            std::fs::read_to_string(self.log.path())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }

        fn write_lines(&self, lines: &[String]) {
            std::fs::write(self.log.path(), lines.join("\n") + "\n").unwrap();
        }

        fn with_three_entries(name: &str) -> Self {
            let temp = Self::new(name);
            for (i, case) in ["HR-2026-001", "HR-2026-002", "HR-2026-003"]
                .iter()
                .enumerate()
            {
                let recorded = temp.record(case, 10 + i as u64).unwrap();
                assert_eq!(recorded.entry.seq, i as u64 + 1);
            }
            temp
        }

        fn verify_err(&self) -> String {
            format!("{:#}", self.log.verify().unwrap_err())
        }
    }

    impl Drop for TempAudit {
        fn drop(&mut self) {
            if let Some(root) = self.dir.parent() {
                let _ = std::fs::remove_dir_all(root);
            }
        }
    }

    fn now() -> Timestamp {
        "2026-12-03T10:00:00Z".parse().unwrap()
    }

    pub(crate) fn facts(case: &str, rows: u64) -> ExportFacts {
        ExportFacts {
            case: case.into(),
            requested_by: "J. Smith, Head of HR".into(),
            operator: "netadmin".into(),
            login_uid: Some(1000),
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

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn an_untouched_chain_verifies_and_every_entry_is_witnessed() {
        let temp = TempAudit::with_three_entries("intact");
        let verified = temp.log.verify().unwrap();
        assert_eq!(verified.entries, 3);
        assert_eq!(
            verified.last.as_ref().unwrap().export().unwrap().case,
            "HR-2026-003"
        );
        // The directory, log and key were made by the export, with their modes.
        assert_eq!(mode(&temp.dir), 0o750);
        assert_eq!(mode(&temp.log.path()), 0o640);
        assert_eq!(mode(&temp.log.key_path()), 0o600);
        assert_eq!(std::fs::read(temp.log.key_path()).unwrap().len(), KEY_LEN);

        // Each entry went to syslog, as it is in the log, under its facility and name.
        let datagrams = temp.witnessed();
        assert_eq!(datagrams.len(), 3, "{datagrams:#?}");
        assert!(
            datagrams[0].starts_with("<85>") && datagrams[0].contains(" classifier-audit["),
            "{}",
            datagrams[0]
        );
        let witnessed = witness::entries_in(&datagrams.join("\n"));
        assert_eq!(witnessed, temp.lines());
        let check = verified.compare_with(&witnessed).unwrap();
        assert_eq!((check.found, check.foreign), (3, 0));
        assert!(check.not_in_journal.is_empty());
    }

    #[test]
    fn a_changed_entry_is_found_and_nothing_is_chained_to_it() {
        let temp = TempAudit::with_three_entries("changed");
        let mut log = temp.lines();
        log[1] = log[1].replace("\"rows\":11", "\"rows\":1");
        temp.write_lines(&log);
        let err = temp.verify_err();
        assert!(
            err.contains("line 2") && err.contains("changed after it was written"),
            "{err}"
        );
        let refused = format!("{:#}", temp.record("HR-2026-004", 1).unwrap_err());
        assert!(refused.contains("does not verify"), "{refused}");
        assert_eq!(temp.lines(), log, "nothing was added");
    }

    #[test]
    fn a_chain_recomputed_without_the_key_does_not_verify() {
        // What the first format allowed: change an entry and recompute every hash after it.
        let temp = TempAudit::with_three_entries("recomputed");
        let other = Key([7; KEY_LEN]);
        let mut prev = GENESIS.to_owned();
        let mut log = Vec::new();
        for line in temp.lines() {
            let mut entry: AuditEntry = serde_json::from_str(&line).unwrap();
            if let Event::Export(facts) = &mut entry.event {
                facts.requested_by = "someone else".into();
            }
            let entry = other
                .seal(entry.seq, entry.at, entry.event, prev.clone())
                .unwrap();
            prev = entry.mac.clone();
            log.push(entry.line().unwrap());
        }
        temp.write_lines(&log);
        let err = temp.verify_err();
        assert!(
            err.contains("line 1") && err.contains("MAC does not match"),
            "{err}"
        );
    }

    #[test]
    fn an_edited_line_that_keeps_its_values_is_found() {
        let temp = TempAudit::with_three_entries("reformatted");
        let mut log = temp.lines();
        log[2] = log[2].replacen(",", ", ", 1);
        temp.write_lines(&log);
        let err = temp.verify_err();
        assert!(err.contains("line 3") && err.contains("edited"), "{err}");
    }

    #[test]
    fn a_removed_or_moved_entry_is_found() {
        let temp = TempAudit::with_three_entries("removed");
        let mut log = temp.lines();
        log.remove(1);
        temp.write_lines(&log);
        let err = temp.verify_err();
        assert!(
            err.contains("line 2") && err.contains("removed, moved or inserted"),
            "{err}"
        );

        let temp = TempAudit::with_three_entries("moved");
        let mut log = temp.lines();
        log.swap(1, 2);
        temp.write_lines(&log);
        let err = temp.verify_err();
        assert!(
            err.contains("line 2: entry 3 where entry 2 should be"),
            "{err}"
        );
    }

    #[test]
    fn a_cut_tail_is_found_by_the_journal_copy_only() {
        let temp = TempAudit::with_three_entries("tail");
        let witnessed = witness::entries_in(&temp.witnessed().join("\n"));
        let mut log = temp.lines();
        log.pop();
        temp.write_lines(&log);
        // The chain alone cannot tell...
        let verified = temp.log.verify().unwrap();
        assert_eq!(verified.entries, 2);
        // ...the journal's copy can.
        let err = format!("{:#}", verified.compare_with(&witnessed).unwrap_err());
        assert!(
            err.contains("entry 3 (case HR-2026-003")
                && err.contains("in the journal but not in the log, which ends at entry 2"),
            "{err}"
        );
        // So can it when the whole log is gone, and the key too.
        std::fs::remove_file(temp.log.path()).unwrap();
        let err = temp.verify_err();
        assert!(err.contains("the log was deleted"), "{err}");
        std::fs::write(temp.log.path(), "").unwrap();
        let err = temp.verify_err();
        assert!(err.contains("the log was truncated"), "{err}");
        std::fs::remove_file(temp.log.path()).unwrap();
        std::fs::remove_file(temp.log.key_path()).unwrap();
        let verified = temp.log.verify().unwrap();
        assert_eq!(verified.entries, 0);
        let err = format!("{:#}", verified.compare_with(&witnessed).unwrap_err());
        assert!(err.contains("both were deleted"), "{err}");
    }

    #[test]
    fn a_rewritten_entry_differs_from_the_journal_and_forgeries_there_are_ignored() {
        let temp = TempAudit::with_three_entries("journal");
        let mut witnessed = witness::entries_in(&temp.witnessed().join("\n"));
        // A line someone sent to syslog themselves, without the key.
        let mut forged: AuditEntry = serde_json::from_str(&witnessed[2]).unwrap();
        forged.seq = 9;
        witnessed.push(forged.line().unwrap());
        let check = temp.log.verify().unwrap().compare_with(&witnessed).unwrap();
        assert_eq!((check.found, check.foreign), (3, 1));

        // Root, with the key, rewrites entry 3: the chain verifies, the journal does not agree.
        let key = Key(std::fs::read(temp.log.key_path())
            .unwrap()
            .try_into()
            .unwrap());
        let mut log = temp.lines();
        let mut entry: AuditEntry = serde_json::from_str(&log[2]).unwrap();
        if let Event::Export(facts) = &mut entry.event {
            facts.rows = 0;
        }
        log[2] = key
            .seal(entry.seq, entry.at, entry.event, entry.prev)
            .unwrap()
            .line()
            .unwrap();
        temp.write_lines(&log);
        let err = format!(
            "{:#}",
            temp.log
                .verify()
                .unwrap()
                .compare_with(&witnessed)
                .unwrap_err()
        );
        assert!(
            err.contains("entry 3 (case HR-2026-003") && err.contains("differs from its copy"),
            "{err}"
        );
    }

    #[test]
    fn a_torn_last_line_fails_verify_then_is_recovered_and_recorded() {
        let temp = TempAudit::with_three_entries("torn");
        let mut log = temp.lines();
        let last = log.pop().unwrap();
        let torn = &last[..last.len() / 2];
        std::fs::write(
            temp.log.path(),
            log.join("\n") + "\n" + torn, // no newline: cut short
        )
        .unwrap();
        let err = temp.verify_err();
        assert!(err.contains("line 3 is cut short"), "{err}");
        let _ = temp.witnessed();

        let recorded = temp.record("HR-2026-004", 4).unwrap();
        let record = recorded.torn.expect("the torn line is recorded");
        assert_eq!((record.seq, recorded.entry.seq), (3, 4));
        let Event::Torn(line) = &record.event else {
            panic!("{record:?}")
        };
        assert_eq!(line.line, 3);
        assert_eq!(line.bytes, torn.len() as u64);
        assert_eq!(line.text, torn);
        // The torn line stays where it was, ended; both entries follow it.
        let lines = temp.lines();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[2], torn);
        let verified = temp.log.verify().unwrap();
        assert_eq!(
            (verified.entries, verified.torn_lines.clone()),
            (4, vec![3])
        );
        assert_eq!(temp.witnessed().len(), 2, "both entries went to syslog");

        // The record stands only for the line it records.
        let mut changed = temp.lines();
        changed[2].push('x');
        temp.write_lines(&changed);
        let err = temp.verify_err();
        assert!(
            err.contains("line 4 (entry 3) records a torn line 3 that is not the line before it"),
            "{err}"
        );
    }

    #[test]
    fn a_stray_line_in_the_middle_is_not_an_entry() {
        let temp = TempAudit::with_three_entries("stray");
        let mut log = temp.lines();
        log.insert(1, "{\"note\":\"nothing to see\"}".into());
        temp.write_lines(&log);
        let err = temp.verify_err();
        assert!(err.contains("line 2 is not an audit entry"), "{err}");
    }

    #[test]
    fn a_log_of_the_first_unkeyed_format_is_named_as_such() {
        let temp = TempAudit::new("legacy");
        std::fs::create_dir_all(&temp.dir).unwrap();
        std::fs::write(
            temp.log.path(),
            "{\"seq\":1,\"at\":\"2026-12-03T10:00:00Z\",\"case\":\"HR-1\",\"prev\":\"00\",\"hash\":\"ab\"}\n",
        )
        .unwrap();
        let err = format!("{:#}", temp.record("HR-2", 1).unwrap_err());
        assert!(err.contains("a log of the first, unkeyed format"), "{err}");
        let err = temp.verify_err();
        assert!(err.contains("a log of the first, unkeyed format"), "{err}");
        assert!(
            !temp.log.key_path().exists(),
            "no key is made for a log that has entries"
        );
    }

    #[test]
    fn links_are_refused_and_their_targets_untouched() {
        use std::os::unix::fs::symlink;
        let temp = TempAudit::new("links");
        let target = temp.dir.with_file_name("precious.txt");
        std::fs::write(&target, "precious\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();

        // The log a link.
        std::fs::create_dir_all(&temp.dir).unwrap();
        symlink(&target, temp.log.path()).unwrap();
        let err = format!("{:#}", temp.record("HR-1", 1).unwrap_err());
        assert!(err.contains("is a symbolic link"), "{err}");
        let err = temp.verify_err();
        assert!(err.contains("is a symbolic link"), "{err}");
        std::fs::remove_file(temp.log.path()).unwrap();

        // The key a link.
        symlink(&target, temp.log.key_path()).unwrap();
        let err = format!("{:#}", temp.record("HR-1", 1).unwrap_err());
        assert!(err.contains("is a symbolic link"), "{err}");
        std::fs::remove_file(temp.log.key_path()).unwrap();
        std::fs::remove_file(temp.log.path()).unwrap();

        // The directory a link.
        std::fs::remove_dir(&temp.dir).unwrap();
        let elsewhere = temp.dir.with_file_name("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        symlink(&elsewhere, &temp.dir).unwrap();
        let err = format!("{:#}", temp.record("HR-1", 1).unwrap_err());
        assert!(
            err.contains("is a symbolic link or not a directory"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert_eq!(mode(&target), 0o644);
    }

    #[test]
    fn files_that_others_may_write_or_read_are_refused_and_not_chmodded() {
        let temp = TempAudit::with_three_entries("modes");
        std::fs::set_permissions(temp.log.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = temp.verify_err();
        assert!(
            err.contains("mode 0666") && err.contains("written"),
            "{err}"
        );
        assert_eq!(mode(&temp.log.path()), 0o666, "not chmodded");
        std::fs::set_permissions(temp.log.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::set_permissions(temp.log.key_path(), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let err = format!("{:#}", temp.record("HR-4", 1).unwrap_err());
        assert!(err.contains("mode 0644") && err.contains("read"), "{err}");
        assert_eq!(mode(&temp.log.key_path()), 0o644, "not chmodded");
    }

    #[test]
    fn a_deleted_key_is_never_replaced_while_the_log_has_entries() {
        let temp = TempAudit::with_three_entries("key");
        std::fs::remove_file(temp.log.key_path()).unwrap();
        let err = format!("{:#}", temp.record("HR-4", 1).unwrap_err());
        assert!(err.contains("key") && err.contains("was deleted"), "{err}");
        assert!(!temp.log.key_path().exists());
        let err = temp.verify_err();
        assert!(err.contains("key") && err.contains("was deleted"), "{err}");
    }

    #[test]
    fn the_operator_is_the_login_uid_not_the_environment() {
        assert_eq!(
            Operator::from_loginuid(Some("4294967295\n")),
            Operator {
                name: "unset".into(),
                login_uid: None
            }
        );
        assert_eq!(Operator::from_loginuid(Some("0")).name, "root");
        assert_eq!(
            Operator::from_loginuid(Some("3999999")),
            Operator {
                name: "uid 3999999".into(),
                login_uid: Some(3_999_999)
            }
        );
        assert_eq!(Operator::from_loginuid(None).name, "unknown");
    }

    #[test]
    fn a_failed_publication_leaves_the_entry_and_says_so() {
        let temp = TempAudit::new("publish");
        let err = temp
            .log
            .record(facts("HR-1", 1), now(), &temp.witness, || {
                bail!("disk full")
            })
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("the export is audited (entry 1") && err.contains("disk full"),
            "{err}"
        );
        assert_eq!(temp.log.verify().unwrap().entries, 1);
    }
}
