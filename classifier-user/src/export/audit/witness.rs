//! The copy of every audit entry outside the log: sent to the journal (its native
//! protocol, through `tracing-journald`) or, where there is no journal, to syslog
//! (`/dev/log`), as the entry is written. The log's tail can be cut; these copies, above
//! all once forwarded off the gateway, cannot be cut with it. `audit verify` reads them
//! back from any export of the journal or syslog ([`entries_in`]).

use std::{
    io::Read as _,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::layer::SubscriberExt as _;

use super::AuditEntry;

/// The journal's `SYSLOG_IDENTIFIER` and syslog's tag: `journalctl -t classifier-audit`.
pub const IDENTIFIER: &str = "classifier-audit";
/// The journal's socket for its native protocol (where `tracing-journald` sends).
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// The syslog socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";
/// How each copy starts its message, before `N: {the entry's line}`.
const MARKER: &str = "audit entry ";
/// authpriv (RFC 5424 facility 10): security and authorisation messages, kept apart from
/// the rest (`/var/log/auth.log`) by syslog daemons.
const FACILITY: u8 = 10;
/// notice (RFC 5424 severity 5): normal but significant.
const SEVERITY: u8 = 5;

/// Where the copies of audit entries go.
pub enum Witness {
    /// The journal; its events go only to this dispatcher (not to the CLI's log).
    Journal(tracing::Dispatch),
    /// A syslog socket (datagrams, RFC 3164 as glibc's `syslog(3)` writes them).
    Syslog { socket: UnixDatagram, path: PathBuf },
}

impl Witness {
    /// The journal if it answers, else syslog; neither is an error, for an export whose
    /// entry cannot be copied off the log is not made.
    pub fn system() -> anyhow::Result<Self> {
        // `Layer::new` sends an empty datagram: it fails when no journald listens.
        let journal = match tracing_journald::Layer::new() {
            Ok(layer) => return Ok(Self::journal(layer)),
            Err(e) => e,
        };
        Self::syslog(Path::new(SYSLOG_SOCKET)).map_err(|syslog| {
            anyhow::anyhow!(
                "no journal ({JOURNAL_SOCKET}: {journal}) and no syslog ({SYSLOG_SOCKET}: \
                 {syslog:#}) to send the audit entry to: an export is audited in the log and \
                 in the journal or syslog, so none is made"
            )
        })
    }

    fn journal(layer: tracing_journald::Layer) -> Self {
        let layer = layer
            .with_syslog_identifier(IDENTIFIER.to_owned())
            .with_field_prefix(Some("CLASSIFIER_AUDIT".to_owned()))
            .with_priority_mappings(PriorityMappings {
                info: Priority::Notice,
                ..PriorityMappings::new()
            })
            .with_custom_fields([("SYSLOG_FACILITY", FACILITY.to_string())]);
        Self::Journal(tracing::Dispatch::new(
            tracing_subscriber::registry().with(layer),
        ))
    }

    /// The syslog socket at `path`.
    pub fn syslog(path: &Path) -> anyhow::Result<Self> {
        let socket = UnixDatagram::unbound()
            .and_then(|socket| socket.connect(path).map(|()| socket))
            .with_context(|| format!("connecting to {}", path.display()))?;
        Ok(Self::Syslog {
            socket,
            path: path.to_owned(),
        })
    }

    /// `the journal` or `syslog (/dev/log)`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Journal(_) => "the journal".into(),
            Self::Syslog { path, .. } => format!("syslog ({})", path.display()),
        }
    }

    /// Sends `entry`, whose line in the log is `line`. The journal's fields: `MESSAGE`
    /// (`audit entry N: LINE`), `CLASSIFIER_AUDIT_SEQ`, `CLASSIFIER_AUDIT_MAC`,
    /// `SYSLOG_IDENTIFIER=classifier-audit`, `SYSLOG_FACILITY=10`, `PRIORITY=5`.
    pub fn send(&self, entry: &AuditEntry, line: &str) -> anyhow::Result<()> {
        let message = format!("{MARKER}{}: {line}", entry.seq);
        match self {
            Self::Journal(dispatch) => {
                // tracing-journald cannot report a failed send from inside an event; the
                // journal answered when the layer was made, moments ago.
                tracing::dispatcher::with_default(dispatch, || {
                    tracing::info!(
                        target: "classifier::audit",
                        seq = entry.seq,
                        mac = entry.mac.as_str(),
                        "{message}"
                    );
                });
                Ok(())
            }
            Self::Syslog { socket, path } => {
                // RFC 3164 by hand: one line of text, where the syslog crate would bring
                // its own time and host-name crates for it.
                let stamp = jiff::Zoned::now().strftime("%b %e %H:%M:%S");
                let datagram = format!(
                    "<{}>{stamp} {IDENTIFIER}[{}]: {message}",
                    FACILITY * 8 + SEVERITY,
                    std::process::id()
                );
                socket
                    .send(datagram.as_bytes())
                    .with_context(|| format!("sending to {}", path.display()))?;
                Ok(())
            }
        }
    }
}

/// An export of the journal or syslog from `file` (`-`: standard input), as text.
pub fn read_export(file: &Path) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
    } else {
        bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The entries root sent under our identifier (`_UID` is set by journald: no one else can
/// claim to be root there).
pub fn read_journal() -> anyhow::Result<String> {
    let output = std::process::Command::new("journalctl")
        .args(["--no-pager", "--quiet", "--output=cat"])
        .arg(format!("SYSLOG_IDENTIFIER={IDENTIFIER}"))
        .arg("_UID=0")
        .output()
        .context("running journalctl")?;
    if !output.status.success() {
        anyhow::bail!(
            "journalctl: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The audit entries (each its line, as in the log) that an export of the journal or
/// syslog holds: `journalctl -o export`, `-o json`, `-o cat` or `-o short`, or a syslog
/// file. Each entry once, in the order found; nothing is checked here.
pub fn entries_in(text: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut found = Vec::new();
    for line in text.lines() {
        // `-o json`: the message is a JSON string inside a JSON object.
        let message = line
            .starts_with('{')
            .then(|| serde_json::from_str::<serde_json::Value>(line).ok())
            .flatten()
            .and_then(|record| record.get("MESSAGE")?.as_str().map(str::to_owned));
        if let Some(entry) = entry_in(message.as_deref().unwrap_or(line))
            && seen.insert(entry.clone())
        {
            found.push(entry);
        }
    }
    found
}

/// The entry's line in `text` (`... audit entry N: {...}...`), if there is one.
fn entry_in(text: &str) -> Option<String> {
    let at = text.find(MARKER)?;
    let rest = &text[at + MARKER.len()..];
    let colon = rest.find(": ")?;
    if colon == 0 || !rest[..colon].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let json = &rest[colon + 2..];
    let mut values = serde_json::Deserializer::from_str(json).into_iter::<serde::de::IgnoredAny>();
    values.next()?.ok()?;
    Some(json[..values.byte_offset()].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_in_every_export_form() {
        let line = r#"{"v":2,"seq":3,"kind":"export","case":"a: b","mac":"ff"}"#;
        let message = format!("audit entry 3: {line}");
        let json_form = serde_json::json!({"MESSAGE": message, "_UID": "0"}).to_string();
        let forms = [
            // journalctl -o export
            format!("__CURSOR=s=1\nMESSAGE={message}\nCLASSIFIER_AUDIT_SEQ=3\n\n"),
            // journalctl -o json
            json_form,
            // journalctl -o cat
            message.clone(),
            // journalctl -o short, or /var/log/auth.log
            format!("Dec 05 14:02:10 gw classifier-audit[4242]: {message}"),
        ];
        for form in &forms {
            assert_eq!(entries_in(form), vec![line.to_owned()], "{form}");
        }
        // Once each, whatever the number of copies.
        assert_eq!(entries_in(&forms.join("\n")).len(), 1);
        assert!(entries_in("audit entry x: {}\naudit entry 4: not json").is_empty());
    }
}
