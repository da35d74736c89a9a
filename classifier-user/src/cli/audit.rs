//! `classifier audit verify`: checks the export audit log, alone and against the copies of
//! its entries in the journal (or syslog).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use crate::export::audit::{AuditLog, require_root, witness};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the export audit log: every entry in order, chained to the one before, sealed
    /// with this gateway's audit key, the last line whole; and every entry the journal
    /// holds present and identical in the log (nothing cut from its end).
    #[command(after_help = "\
Without --journal, the journal is read with
  journalctl -o cat SYSLOG_IDENTIFIER=classifier-audit _UID=0
A gateway that logs to syslog instead, or a journal kept elsewhere, is given as a file:
  sudo classifier audit verify --journal /var/log/auth.log
  journalctl -o export -t classifier-audit | sudo classifier audit verify --journal -
Entries missing from the journal (sent while it was down, or rotated out) are listed, not
failed. What this protects against, and what not (root can rewrite files and the local
journal): docs/records.md.")]
    Verify {
        /// Compare with this export of the journal or syslog (`journalctl -o
        /// export|json|cat|short`, or a syslog file; `-` for standard input) instead of
        /// asking journalctl.
        #[arg(long, value_name = "FILE", conflicts_with = "no_journal")]
        journal: Option<PathBuf>,

        /// Check the log alone: a cut tail then goes unnoticed.
        #[arg(long)]
        no_journal: bool,
    },
}

pub fn execute(command: &AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::Verify {
        journal,
        no_journal,
    } = command;
    require_root("audit verify")?;
    let log = AuditLog::system();
    let path = log.path();
    let verified = log
        .verify()
        .with_context(|| format!("the audit log {} does NOT verify", path.display()))?;
    match &verified.last {
        Some(last) => println!(
            "{}: {} entries, chain intact; head {} ({})",
            path.display(),
            verified.entries,
            last.mac,
            last.describe()
        ),
        None => println!("{}: no exports yet", path.display()),
    }
    for line in &verified.torn_lines {
        println!("  line {line}: a torn line, recorded by the entry after it");
    }
    if *no_journal {
        println!("journal: not compared (--no-journal): a cut tail would go unnoticed");
        return Ok(());
    }
    let (text, source) = match journal {
        Some(file) => (witness::read_export(file)?, file.display().to_string()),
        None => match witness::read_journal() {
            Ok(text) => (text, "the journal".to_owned()),
            Err(e) => {
                println!(
                    "journal: not compared ({e:#}); a cut tail would go unnoticed: give an \
                     export of the journal or syslog with --journal"
                );
                return Ok(());
            }
        },
    };
    let witnessed = witness::entries_in(&text);
    let check = verified.compare_with(&witnessed).with_context(|| {
        format!(
            "the audit log {} does NOT verify against {source}",
            path.display()
        )
    })?;
    println!(
        "journal ({source}): {} of the log's {} entries found, identical; none missing from \
         the log",
        check.found, verified.entries
    );
    if !check.not_in_journal.is_empty() {
        let list: Vec<String> = check.not_in_journal.iter().map(u64::to_string).collect();
        println!(
            "  not in the journal: entries {} (sent while it was down, or rotated out; a cut \
             of the log after them would not be seen)",
            list.join(", ")
        );
    }
    if check.foreign > 0 {
        println!(
            "  ignored: {} journal lines that look like audit entries but are not sealed with \
             this gateway's key",
            check.foreign
        );
    }
    Ok(())
}
