//! `classifier policy check|reload|show|explain`.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::{
    control::{self, Request},
    in_force::ReloadReport,
    policy::{
        ExceptionsChoice, Policy, PolicyChoice, PolicySources,
        moment::{Moment, parse_moment},
        show::{Explanation, Summary, parse_target},
    },
};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file without touching the kernel: every error names file, line and
    /// field. What would silently change enforcement is refused (empty hours or days, a bare
    /// public suffix listed, a duration that could be read two ways, a list file that is
    /// not UTF-8); what is legal but probably wrong is warned about (a period never in
    /// force, a rule no traffic reaches, an expired exception, bank holidays running out,
    /// a strict default period, a category no rule names).
    #[command(after_help = "\
Examples:
  classifier policy check /etc/classifier/policy.toml && systemctl reload classifier
  classifier policy check --strict new.toml     # refuse warnings too (CI, change control)")]
    Check {
        /// The policy file (TOML).
        file: PathBuf,
        /// Refuse the file (exit status 1) when there is any warning, not only errors.
        #[arg(long)]
        strict: bool,
        /// Check as of this moment (RFC 3339; default: now): which exceptions have expired,
        /// whether the bank holidays reach into the next year.
        #[arg(long, value_name = "TIME")]
        at: Option<jiff::Timestamp>,
    },
    /// Make the running daemon read its policy file again (as SIGHUP does). A file that does
    /// not validate is refused and the policy in force stays.
    Reload(SocketArgs),
    /// The policy: categories, groups, periods, rules and exceptions. Without --policy, the
    /// running daemon's, with the period in force; with no daemon running, the site's
    /// /etc/classifier/policy.toml, or the built-in policy when there is none (it says which).
    Show {
        #[command(flatten)]
        socket: SocketArgs,
        /// Show this file instead of asking the daemon.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// The exceptions file to show with the policy when no daemon is asked (default:
        /// /etc/classifier/exceptions.toml, read when it exists). A file named here must exist.
        #[arg(long, value_name = "FILE")]
        exceptions: Option<PathBuf>,
        /// The policy as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Which group, category, period, rule and exception decide what a client may do with a
    /// site or port, and why: the running daemon's policy, or with --policy a candidate
    /// file (no daemon needed). With no daemon running, the site's
    /// /etc/classifier/policy.toml answers, or the built-in policy when there is none (it
    /// says which).
    #[command(after_help = "\
Examples:
  # Can this staff PC watch YouTube now?
  classifier policy explain 192.0.2.10 www.youtube.com

  # And at lunch on Monday (site time), under a policy not deployed yet?
  classifier policy explain 192.0.2.10 www.youtube.com --at '2026-11-23 12:30' --policy new.toml

  # A URL as pasted from a browser: its host is asked about
  classifier policy explain 192.0.2.10 'https://www.youtube.com/watch?v=x' --at 12:30

  # A port: BitTorrent's, as JSON
  classifier policy explain 192.0.2.140 tcp/6881 --json
  classifier policy explain 192.0.2.10 unreadable   # TLS/HTTP first bytes that cannot be read")]
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct SocketArgs {
    /// The running daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    control_socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The client's address.
    client: IpAddr,
    /// A domain as in an SNI or Host (www.example.com; an internationalised name is
    /// converted to punycode), an http(s) URL (its host), a port (tcp/6881, udp/443, 443),
    /// or a built-in detection (protocol/bittorrent, protocol/quic, unreadable: first bytes
    /// that look like TLS or HTTP but cannot be read).
    target: String,
    /// The moment to answer for (default: now): a local time in the site's time zone
    /// (`2026-12-07 12:30`, or `12:30` for today) or RFC 3339 (`2026-12-07T12:30:00Z`).
    /// The answer says which zone it used; a local time the clocks skip is refused.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// The VLAN the client is on (groups may claim VLANs).
    #[arg(long, value_name = "ID")]
    vlan: Option<u16>,
    /// The policy file to ask instead of the running daemon.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The exceptions file to add to the policy when no daemon is asked (default:
    /// /etc/classifier/exceptions.toml, read when it exists). A file named here must exist.
    /// The daemon uses its own.
    #[arg(long, value_name = "FILE")]
    exceptions: Option<PathBuf>,
    #[command(flatten)]
    socket: SocketArgs,
    /// One JSON object with every step as a field (action, rate, allowance, fail_fast,
    /// matched entry, list file and line, group reason, rule condition).
    #[arg(long)]
    json: bool,
}

pub fn execute(command: &PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { file, strict, at } => {
            check(file, *strict, at.unwrap_or_else(jiff::Timestamp::now))
        }
        PolicyCommand::Reload(socket) => reload(socket),
        PolicyCommand::Show {
            socket,
            policy,
            exceptions,
            json,
        } => show(socket, policy.as_deref(), exceptions.as_deref(), *json),
        PolicyCommand::Explain(args) => explain(args),
    }
}

fn check(file: &Path, strict: bool, at: jiff::Timestamp) -> anyhow::Result<()> {
    let checked = crate::policy::check::check_file(file, at)?;
    let policy = &checked.policy;
    let report = &policy.classes.report;
    println!(
        "{}: valid: {} categories, {} domains, {} groups, {} rules, {} exceptions; periods {}",
        file.display(),
        policy.classes.categories.len(),
        policy.classes.domains.len(),
        policy.groups.len(),
        policy.rules.len(),
        policy.exceptions.len(),
        policy.periods.join(", ")
    );
    for note in report.notes() {
        println!("note: {note}");
    }
    for warning in &checked.warnings {
        eprintln!("warning: {warning}");
    }
    match checked.warnings.len() {
        0 => Ok(()),
        n if strict => anyhow::bail!(
            "{}: refused (--strict): {n} warning{}",
            file.display(),
            if n == 1 { "" } else { "s" }
        ),
        n => {
            eprintln!(
                "{}: {n} warning{} (--strict refuses them)",
                file.display(),
                if n == 1 { "" } else { "s" }
            );
            Ok(())
        }
    }
}

fn reload(socket: &SocketArgs) -> anyhow::Result<()> {
    let lines = control::ask(&socket.control_socket, &Request::Reload)?;
    let report: ReloadReport =
        serde_json::from_str(lines.first().context("no answer")?).context("the daemon's answer")?;
    println!(
        "reloaded {}: {} categories, {} domains, {} rules; period {} in force (generation {})",
        report.policy,
        report.categories,
        report.domains,
        report.rules,
        report.period,
        report.generation
    );
    Ok(())
}

fn show(
    socket: &SocketArgs,
    file: Option<&Path>,
    exceptions: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let summary = if file.is_none() && control::daemon_listens(&socket.control_socket) {
        let lines = control::ask(&socket.control_socket, &Request::ShowPolicy)?;
        serde_json::from_str(lines.first().context("no answer")?).context("the daemon's answer")?
    } else {
        Summary::of(
            &offline_policy(file, exceptions, &socket.control_socket)?,
            None,
        )
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    Ok(())
}

/// The policy a command reads without a daemon (see [`PolicyChoice`]) with its exceptions,
/// saying on stderr which it is when the user did not name it.
fn offline_policy(
    file: Option<&Path>,
    exceptions: Option<&Path>,
    socket: &Path,
) -> anyhow::Result<Policy> {
    let choice = PolicyChoice::resolve(file);
    if file.is_none() {
        eprintln!(
            "note: no daemon answers on {}: this is {} (--policy FILE reads another)",
            socket.display(),
            choice.describe()
        );
    }
    Ok(PolicySources::of(&choice, ExceptionsChoice::resolve(exceptions)).load()?)
}

fn explain(args: &ExplainArgs) -> anyhow::Result<()> {
    let target = parse_target(&args.target).map_err(anyhow::Error::msg)?;
    let socket = &args.socket.control_socket;
    let mut explanation = if args.policy.is_none() && control::daemon_listens(socket) {
        let moment = match &args.at {
            Some(text) => Some(read_moment(text, &daemon_timezone(socket)?)?),
            None => None,
        };
        let request = Request::Explain {
            client: args.client,
            target: args.target.clone(),
            at: moment.as_ref().map_or_else(jiff::Timestamp::now, |m| m.at),
            vlan: args.vlan,
        };
        let lines = control::ask(socket, &request)?;
        let explanation: Explanation = serde_json::from_str(lines.first().context("no answer")?)
            .context("the daemon's answer")?;
        with_note(explanation, moment)
    } else {
        let policy = offline_policy(args.policy.as_deref(), args.exceptions.as_deref(), socket)?;
        let moment = match &args.at {
            Some(text) => Some(read_moment(text, &policy.timezone)?),
            None => None,
        };
        let at = moment.as_ref().map_or_else(jiff::Timestamp::now, |m| m.at);
        with_note(
            policy.explain_on(args.client, args.vlan, &target, at),
            moment,
        )
    };
    if explanation.timezone.is_empty() {
        explanation.timezone = "(not said by the daemon)".into();
    }
    if args.json {
        println!("{}", serde_json::to_string(&explanation)?);
    } else {
        print!("{}", explanation.render());
    }
    Ok(())
}

fn with_note(mut explanation: Explanation, moment: Option<Moment>) -> Explanation {
    explanation.at_note = moment.and_then(|m| m.note);
    explanation
}

/// `--at`, read in the site's zone `zone` (the policy's).
fn read_moment(text: &str, zone: &jiff::tz::TimeZone) -> anyhow::Result<Moment> {
    let name = zone.iana_name().unwrap_or("the policy's fixed offset");
    parse_moment(text, zone, name, jiff::Timestamp::now()).map_err(|e| anyhow::anyhow!("--at {e}"))
}

/// The running daemon's policy's time zone, to read a local `--at` in.
fn daemon_timezone(socket: &Path) -> anyhow::Result<jiff::tz::TimeZone> {
    let lines = control::ask(socket, &Request::ShowPolicy)?;
    let summary: Summary =
        serde_json::from_str(lines.first().context("no answer")?).context("the daemon's answer")?;
    jiff::tz::TimeZone::get(&summary.timezone)
        .with_context(|| format!("the daemon's time zone `{}`", summary.timezone))
}
