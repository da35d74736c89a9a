//! `classifier exceptions list|add|expire`: the exceptions file, kept apart from the policy
//! so that granting or ending an exception never means editing the policy. Every change is
//! validated against the policy before the file is replaced, and the running daemon is
//! asked to reload.

use std::{
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use jiff::Timestamp;
use serde::Serialize;

use crate::{
    control::{self, Request},
    policy::{
        self, ExceptionsChoice, Policy, PolicyChoice, PolicySources,
        exceptions::{ExceptionSection, ExceptionsFile, Target},
    },
};

#[derive(Debug, Subcommand)]
pub enum ExceptionsCommand {
    /// Every exception (policy file and exceptions file), active or expired.
    List {
        #[command(flatten)]
        files: Files,
        /// One JSON object per exception and line, instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Grant an exception: a client (or a group) may use categories the rules block, until it
    /// expires. Needs who approved it, a reference and the reason.
    #[command(after_help = "\
Examples:
  classifier exceptions add --client 192.0.2.10 --category cloud-storage \\
      --approved-by 'J. Smith (line manager)' --reference RITM0012345 \\
      --reason 'Sharing plans with a contractor' --expires 2027-03-31")]
    Add(AddArgs),
    /// End an exception now (by its reference); it stays listed, as expired.
    Expire {
        /// The exception's reference, e.g. RITM0012345.
        reference: String,
        #[command(flatten)]
        files: Files,
    },
}

#[derive(Debug, Args)]
pub struct Files {
    /// The policy the exceptions are checked against (default: the site's
    /// /etc/classifier/policy.toml, or the built-in council policy when there is none).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The exceptions file (default: /etc/classifier/exceptions.toml). One named here must
    /// exist, except for `add`, which makes it.
    #[arg(long, value_name = "FILE")]
    exceptions: Option<PathBuf>,
    /// The running daemon's control socket (asked to reload after a change).
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    control_socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The user's device address.
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with = "group",
        required_unless_present = "group"
    )]
    client: Option<IpAddr>,
    /// A group instead of one client.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// A category the exception allows (repeat for several).
    #[arg(long = "category", value_name = "NAME", required = true)]
    categories: Vec<String>,
    /// Who approved it: a name and role (`J. Smith (line manager)`).
    #[arg(long, value_name = "WHO")]
    approved_by: String,
    /// A ticket or case number.
    #[arg(long, value_name = "REF")]
    reference: String,
    /// Why it is granted, as the approval says.
    #[arg(long)]
    reason: String,
    /// When it ends: a date (the end of that day, site time) or an RFC 3339 time; not in
    /// the past.
    #[arg(long, value_name = "WHEN")]
    expires: String,
    #[command(flatten)]
    files: Files,
}

/// One exception as `list` shows it.
#[derive(Debug, Serialize)]
struct Listed {
    reference: String,
    who: String,
    categories: Vec<String>,
    approved_by: String,
    reason: String,
    expires: Timestamp,
    active: bool,
    origin: String,
}

pub fn execute(command: &ExceptionsCommand) -> anyhow::Result<()> {
    match command {
        ExceptionsCommand::List { files, json } => list(files, *json),
        ExceptionsCommand::Add(args) => add(args),
        ExceptionsCommand::Expire { reference, files } => expire(reference, files),
    }
}

impl Files {
    /// The policy to check against, said on stderr (stdout may be JSON).
    fn policy(&self) -> PolicyChoice {
        let choice = PolicyChoice::resolve(self.policy.as_deref());
        eprintln!("policy: {}", choice.describe());
        choice
    }

    fn exceptions(&self) -> ExceptionsChoice {
        ExceptionsChoice::resolve(self.exceptions.as_deref())
    }
}

fn list(files: &Files, json: bool) -> anyhow::Result<()> {
    let policy = PolicySources::of(&files.policy(), files.exceptions()).load()?;
    let now = Timestamp::now();
    let listed: Vec<Listed> = policy
        .exceptions
        .iter()
        .map(|e| Listed {
            reference: e.reference.clone(),
            who: match e.target {
                Target::Client(addr) => addr.to_string(),
                Target::Group(group) => format!("group {}", policy.groups.name(group)),
            },
            categories: e
                .categories
                .iter()
                .map(|c| policy.classes.category_name(*c).to_owned())
                .collect(),
            approved_by: e.approved_by.clone(),
            reason: e.reason.clone(),
            expires: e.expires,
            active: e.is_active(now),
            origin: e.origin.clone(),
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if json {
        for item in &listed {
            serde_json::to_writer(&mut out, item)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    if listed.is_empty() {
        writeln!(out, "no exceptions")?;
    }
    for item in &listed {
        writeln!(
            out,
            "{:<8} {:<16} {:<22} for {} ({}), approved by {}, until {}: {}",
            if item.active { "active" } else { "expired" },
            item.reference,
            item.categories.join(","),
            item.who,
            item.reason,
            item.approved_by,
            item.expires,
            item.origin
        )?;
    }
    Ok(())
}

fn add(args: &AddArgs) -> anyhow::Result<()> {
    let target = args.files.exceptions();
    let mut file = read_file(&target.path)?;
    file.exceptions.push(ExceptionSection {
        client: args.client.map(|c| c.to_string()),
        group: args.group.clone(),
        categories: args.categories.clone(),
        approved_by: args.approved_by.clone(),
        reference: args.reference.clone(),
        reason: args.reason.clone(),
        expires: args.expires.clone(),
    });
    let created = !target.path.exists();
    let now = Timestamp::now();
    replace_checked(&args.files, &target.path, &file, |policy| {
        // The one just added is the file's last.
        match policy.exceptions.last() {
            Some(added) if added.expires <= now => anyhow::bail!(
                "{}: exception {}: --expires {} ends at {}, which has passed (now {now}): \
                 an exception must end in the future; nothing was written",
                target.path.display(),
                args.reference,
                args.expires,
                added.expires
            ),
            _ => Ok(()),
        }
    })?;
    println!(
        "added exception {} to {}{}",
        args.reference,
        target.path.display(),
        if created { " (a new file)" } else { "" }
    );
    if created && target.named {
        println!(
            "note: the daemon reads the exceptions file given to `classifier run --exceptions` \
             (default {})",
            policy::DEFAULT_EXCEPTIONS_FILE
        );
    }
    reload_daemon(&args.files.control_socket);
    Ok(())
}

fn expire(reference: &str, files: &Files) -> anyhow::Result<()> {
    let target = files.exceptions();
    anyhow::ensure!(
        target.path.exists(),
        "{} does not exist: no exception to expire",
        target.path.display()
    );
    let mut file = read_file(&target.path)?;
    let now = Timestamp::now().to_string();
    let mut found = 0;
    for exception in file
        .exceptions
        .iter_mut()
        .filter(|e| e.reference == reference)
    {
        exception.expires = now.clone();
        found += 1;
    }
    anyhow::ensure!(
        found > 0,
        "no exception with reference `{reference}` in {} (exceptions written in the policy file \
         itself are ended there)",
        target.path.display()
    );
    replace_checked(files, &target.path, &file, |_| Ok(()))?;
    println!("exception {reference} expired at {now}");
    reload_daemon(&files.control_socket);
    Ok(())
}

fn read_file(path: &Path) -> anyhow::Result<ExceptionsFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ExceptionsFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Validates `file` with the policy (errors name `target`, the file it is meant for) and
/// `accept`, then writes it beside `target` and moves it into place: a change that does not
/// validate leaves the file as it was.
fn replace_checked(
    files: &Files,
    target: &Path,
    file: &ExceptionsFile,
    accept: impl FnOnce(&Policy) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let text = format!(
        "# Exceptions granted with `classifier exceptions add`; ended with `classifier \
         exceptions expire`.\n# Rewritten by those commands: comments here are not kept.\n\n{}",
        toml::to_string(file).context("writing the exceptions")?
    );
    let mut policy = match files.policy().file() {
        Some(path) => Policy::load(path)?,
        None => Policy::default_council(),
    };
    policy
        .add_exceptions_text(&text, target)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("the change was not written to {}", target.display()))?;
    accept(&policy)?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let candidate = target.with_extension("toml.new");
    std::fs::write(&candidate, text).with_context(|| format!("writing {}", candidate.display()))?;
    std::fs::rename(&candidate, target).with_context(|| format!("replacing {}", target.display()))
}

/// Asks the running daemon, if any, to reload; says what happened either way.
fn reload_daemon(control_socket: &Path) {
    if !control_socket.exists() {
        println!(
            "no daemon runs on {}: the change applies when it starts",
            control_socket.display()
        );
        return;
    }
    match control::ask(control_socket, &Request::Reload) {
        Ok(_) => println!("the daemon reloaded: the change is in force"),
        Err(e) => println!("the daemon did not reload ({e:#}): run `classifier policy reload`"),
    }
}
