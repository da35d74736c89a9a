//! `classifier export` and `classifier audit verify`: investigation exports of the flow
//! store, and the check of their audit log.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use jiff::{Timestamp, tz::TimeZone};

use crate::{
    export::{self, ExportRequest, Format, audit},
    store::{self, Filter},
};

#[derive(Debug, Args)]
#[command(after_help = "\
History is opened only when a senior manager asks over misconduct concerns: every export
needs a case reference and the requester, and is written to a hash-chained audit log (who,
when, what filter, how many rows, the file's SHA-256) that `classifier audit verify` checks.

Examples:
  classifier export --case HR-2026-014 --requested-by 'J. Smith (Head of HR)' \\
      --client 192.0.2.10 --from 2026-11-01 --to 2026-12-01 --format csv --out case-014.csv
  classifier export --case HR-2026-015 --requested-by 'J. Smith' --category gambling \\
      --format ipfix --out case-015.ipfix")]
pub struct ExportArgs {
    /// The case reference the investigation is filed under (required).
    #[arg(long, value_name = "REF")]
    case: String,

    /// Who asked for the export: the senior manager's name (required).
    #[arg(long, value_name = "NAME")]
    requested_by: String,

    /// Only this client's flows (IPv4 or IPv6 address).
    #[arg(long, value_name = "ADDR")]
    client: Option<std::net::IpAddr>,

    /// Only flows that ended at or after this time: RFC 3339 (`2026-11-01T09:00:00Z`) or
    /// a local date or date-time (`2026-11-01`, `2026-11-01T09:00`, in this machine's
    /// time zone).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: Option<Timestamp>,

    /// Only flows that started before this time (same forms as --from).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    to: Option<Timestamp>,

    /// Only flows of this category (as the policy names it, e.g. `gambling`).
    #[arg(long, value_name = "NAME")]
    category: Option<String>,

    /// File format.
    #[arg(long, value_enum)]
    format: Format,

    /// The file to write; an existing file is never overwritten. CSV cells that a
    /// spreadsheet would run as formulas start with `'`; JSON Lines keep every value exact.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,

    /// The daemon's flow store (an SQLite file or a PostgreSQL connection string).
    #[arg(long, value_name = "FILE|POSTGRES", default_value = store::DEFAULT_STORE)]
    store: String,

    /// The export audit log.
    #[arg(long, value_name = "FILE", default_value = audit::DEFAULT_AUDIT_LOG)]
    audit_log: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every entry of the export audit log: in order, chained, unchanged.
    Verify {
        /// The export audit log.
        #[arg(long, value_name = "FILE", default_value = audit::DEFAULT_AUDIT_LOG)]
        audit_log: PathBuf,
    },
}

pub fn execute(args: &ExportArgs) -> anyhow::Result<()> {
    let request = ExportRequest {
        case: args.case.clone(),
        requested_by: args.requested_by.clone(),
        operator: operator(),
        filter: Filter {
            client: args.client.map(|ip| ip.to_canonical()),
            from: args.from,
            to: args.to,
            category: args.category.clone(),
        },
        format: args.format,
        out: args.out.clone(),
    };
    let done = export::export(&request, &args.store, &args.audit_log, Timestamp::now())?;
    println!(
        "exported {} flows to {} ({}, sha256 {})",
        done.rows,
        args.out.display(),
        args.format.name(),
        done.audit.facts.file_sha256
    );
    println!(
        "audit entry {} in {} (chain head {})",
        done.audit.seq,
        args.audit_log.display(),
        done.audit.hash
    );
    Ok(())
}

pub fn execute_audit(command: &AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { audit_log } => {
            let verified = audit::verify(audit_log).with_context(|| {
                format!("the audit log {} does NOT verify", audit_log.display())
            })?;
            match verified.last {
                Some(last) => println!(
                    "{}: {} entries, chain intact; head {} (entry {}, {} at {})",
                    audit_log.display(),
                    verified.entries,
                    last.hash,
                    last.seq,
                    last.facts.case,
                    last.at
                ),
                None => println!("{}: no exports yet", audit_log.display()),
            }
            Ok(())
        }
    }
}

/// Who runs the export: the login behind sudo, else the effective user.
fn operator() -> String {
    if let Ok(user) = std::env::var("SUDO_USER")
        && !user.is_empty()
    {
        return user;
    }
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"))
}

fn parse_time(text: &str) -> Result<Timestamp, String> {
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Ok(timestamp);
    }
    let local = |civil: jiff::civil::DateTime| {
        civil
            .to_zoned(TimeZone::system())
            .map(|z| z.timestamp())
            .map_err(|e| e.to_string())
    };
    if let Ok(civil) = text.parse::<jiff::civil::DateTime>() {
        return local(civil);
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>() {
        return local(date.to_datetime(jiff::civil::Time::midnight()));
    }
    Err(format!(
        "`{text}` is not a time: write `2026-11-01T09:00:00Z`, `2026-11-01T09:00` or `2026-11-01`"
    ))
}
