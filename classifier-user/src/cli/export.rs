//! `classifier export`: investigation exports of the flow store, audited.

use std::path::PathBuf;

use clap::Args;
use jiff::{Timestamp, tz::TimeZone};

use crate::{
    export::{
        self, ExportRequest, Format,
        audit::{self, AuditLog, Operator, Witness},
    },
    store::{self, Filter},
};

#[derive(Debug, Args)]
#[command(after_help = "\
History is opened only when a senior manager asks over misconduct concerns: every export
needs a case reference and the requester, and root. Each is recorded in the audit log
/var/lib/classifier/export-audit.jsonl (who asked, the login that ran it, when, what filter,
how many rows, the file's SHA-256), chained and sealed with a key only root can read, and
sent to the journal (or syslog); the file appears only once its entry is on disk.
`classifier audit verify` checks the log against the journal.

Examples:
  sudo classifier export --case HR-2026-014 --requested-by 'J. Smith (Head of HR)' \\
      --client 192.0.2.10 --from 2026-11-01 --to 2026-12-01 --format csv --out case-014.csv
  sudo classifier export --case HR-2026-015 --requested-by 'J. Smith' --category gambling \\
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

    /// Only flows whose uploads left the gateway with this translated (public) source, as a
    /// complaint about the gateway's public address names it: `203.0.113.7:51234`,
    /// `[2001:db8::7]:51234`, or an address alone. Recorded by a daemon run with
    /// `--nat-mark-mask`.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_public)]
    public: Option<PublicSource>,

    /// Only flows running at this instant: started at or before it and ended at or after
    /// it (same forms as --from; `--at 2026-12-05T14:02:17`). With --public: "who was
    /// 203.0.113.7:51234 at 14:02:17".
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<Timestamp>,

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
}

pub fn execute(args: &ExportArgs) -> anyhow::Result<()> {
    audit::require_root("export")?;
    // Before any record is read: an export whose entry cannot leave the log is not made.
    let witness = Witness::system()?;
    let log = AuditLog::system();
    let request = ExportRequest {
        case: args.case.clone(),
        requested_by: args.requested_by.clone(),
        operator: Operator::current(),
        filter: Filter {
            client: args.client.map(|ip| ip.to_canonical()),
            from: args.from,
            to: args.to,
            category: args.category.clone(),
            public_addr: args.public.map(|p| p.addr.to_canonical()),
            public_port: args.public.and_then(|p| p.port),
            at: args.at,
        },
        format: args.format,
        out: args.out.clone(),
    };
    let done = export::export(&request, &args.store, &log, &witness, Timestamp::now())?;
    let entry = &done.audit.entry;
    if let Some(torn) = &done.audit.torn {
        println!(
            "the audit log ended in a torn line (an interrupted export, or a cut): {} records it",
            torn.describe()
        );
    }
    println!(
        "exported {} flows to {} ({}, sha256 {})",
        done.rows,
        args.out.display(),
        args.format.name(),
        entry
            .export()
            .map_or("", |facts| facts.file_sha256.as_str())
    );
    println!(
        "audit entry {} in {}, sent to {} (chain head {})",
        entry.seq,
        log.path().display(),
        witness.describe(),
        entry.mac
    );
    Ok(())
}

/// `--public`: an address and, optionally, a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicSource {
    addr: std::net::IpAddr,
    port: Option<u16>,
}

fn parse_public(text: &str) -> Result<PublicSource, String> {
    let form = "write 203.0.113.7:51234, [2001:db8::7]:51234 or an address alone";
    let trimmed = text.trim();
    let parsed = if let Ok(socket) = trimmed.parse::<std::net::SocketAddr>() {
        PublicSource {
            addr: socket.ip(),
            port: Some(socket.port()),
        }
    } else if let Ok(addr) = trimmed
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(trimmed)
        .parse::<std::net::IpAddr>()
    {
        PublicSource { addr, port: None }
    } else {
        return Err(format!(
            "`{text}` is not a public address and port: {form} (a port is 1 to 65535)"
        ));
    };
    if parsed.port == Some(0) {
        return Err(format!(
            "`{text}`: port 0 is never a connection's source port; {form}"
        ));
    }
    if parsed.addr.is_unspecified() {
        return Err(format!(
            "`{text}`: the unspecified address names no gateway; {form}"
        ));
    }
    Ok(parsed)
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
