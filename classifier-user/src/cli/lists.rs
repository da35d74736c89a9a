//! `classifier lists import|rollback`: UT1 / Shallalist lists kept current.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::IsTerminal as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use crate::{
    control::{self, Request},
    daemon::Status,
    in_force::ReloadReport,
    list_import::{
        Limits,
        checks::{self, PolicyList},
        fetch,
        source::{self, Selection, Staged},
        store::{ListsDir, sync_dir},
    },
    policy::SITE_POLICY_FILE,
};

/// Where the default policy's comments put UT1's lists.
pub const DEFAULT_LISTS_DIR: &str = "/var/lib/classifier/ut1";

const UNCHANGED: &str = "refused; the installed lists are unchanged";

#[derive(Debug, Subcommand)]
pub enum ListsCommand {
    /// Install UT1 / Shallalist domain lists from a tarball or directory, local or at a URL.
    ///
    /// Every list is checked as `policy check` checks list files (and a tarball's entries as
    /// hostile input: absolute paths, `..`, links out, devices and sizes over the limits
    /// are refused), the policy is checked with the new lists, then they replace the
    /// installed ones in one atomic swap, the previous copy is kept, and the running daemon
    /// reloads. Anything refused leaves the installed lists as they were.
    ///
    /// Which lists are taken: those the policy reads from the lists directory (a category's
    /// `lists = ["/var/lib/classifier/ut1/agressif"]` takes UT1's `agressif`), plus any
    /// named with --category, or every list with --all.
    #[command(after_help = "\
Examples:
  # UT1's lists, the ones /etc/classifier/policy.toml names under /var/lib/classifier/ut1
  classifier lists import https://dsi.ut-capitole.fr/blacklists/download/blacklists.tar.gz

  # A copy already downloaded, with two more lists than the policy names
  classifier lists import blacklists.tar.gz --category gambling --category agressif

  # Back to the copy before the last import
  classifier lists rollback")]
    Import(ImportArgs),
    /// Put the lists installed before the last import back in force.
    ///
    /// The policy is checked with them first; the daemon reloads after the swap. The lists
    /// replaced become the previous copy, so a second rollback undoes the first.
    Rollback(CommonArgs),
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Where the policy reads the lists: a link to the version in force, managed by
    /// `lists import` (versions in DIR.versions/, the one before in DIR.previous).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_LISTS_DIR)]
    lists_dir: PathBuf,
    /// The policy to check the lists with (default: the running daemon's, else
    /// /etc/classifier/policy.toml when it exists).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The running daemon's control socket (it reloads after the swap).
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    control_socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A UT1 or Shallalist tarball (.tar.gz or .tar) or unpacked directory, or an http:// or
    /// https:// URL of a tarball.
    source: String,
    #[command(flatten)]
    common: CommonArgs,
    /// Take this list too (a UT1 category: gambling, agressif, ...); repeatable.
    #[arg(long = "category", value_name = "NAME")]
    categories: Vec<String>,
    /// Take every list in the source.
    #[arg(long)]
    all: bool,
    /// Refuse a download larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_download)]
    max_download: u64,
    /// Refuse a tarball holding a file larger than this many bytes (unpacked).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_file)]
    max_list_size: u64,
    /// Give up a download that has not finished in this time (e.g. 90s, 10m).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    timeout: humantime::Duration,
}

pub fn execute(command: &ListsCommand) -> anyhow::Result<()> {
    match command {
        ListsCommand::Import(args) => import(args),
        ListsCommand::Rollback(args) => rollback(args),
    }
}

fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let lists = ListsDir::new(&args.common.lists_dir)?;
    let policy = policy_file(&args.common)?;
    let policy_lists = match &policy {
        Some(policy) => checks::lists_the_policy_reads(policy, &lists.link)?,
        None => Vec::new(),
    };
    let selection = selection(args, &lists, &policy_lists)?;
    let limits = Limits {
        max_download: args.max_download,
        max_file: args.max_list_size,
        ..Limits::default()
    };
    let _lock = lists.lock()?;
    let staging = lists.staging()?;
    let staged = stage(args, &lists, &staging.path, &selection, &limits)
        .with_context(|| format!("{}: {UNCHANGED}", args.source))?;
    let after = check_staged(args, &policy, &policy_lists, &lists, &staging.path, &staged)
        .with_context(|| format!("{}: {UNCHANGED}", args.source))?;
    let before = lists
        .current()?
        .map(|current| checks::count_installed(&current))
        .unwrap_or_default();
    sync_dir(&staging.path)?;
    let version = staging.keep();
    sync_dir(&lists.versions())?;
    let previous = lists.previous()?;
    let replaced = lists.swap_to(&version)?;
    println!(
        "installed {} list{} from {} in {} ({} -> {})",
        after.len(),
        if after.len() == 1 { "" } else { "s" },
        args.source,
        lists.link.display(),
        lists.link.display(),
        version.display()
    );
    for note in &staged.notes {
        println!("note: {note}");
    }
    print_changes(
        &before,
        &after.into_iter().map(|(k, v)| (k, Some(v))).collect(),
    );
    reload_or_undo(
        &args.common,
        &lists,
        replaced.as_deref(),
        previous.as_deref(),
    )?;
    finish(&lists, replaced.as_deref())
}

fn rollback(args: &CommonArgs) -> anyhow::Result<()> {
    let lists = ListsDir::new(&args.lists_dir)?;
    let policy = policy_file(args)?;
    let _lock = lists.lock()?;
    let Some(previous) = lists.previous()? else {
        bail!(
            "no previous lists to go back to ({} does not exist)",
            lists.previous_link().display()
        );
    };
    if let Some(policy) = &policy {
        checks::check_policy_with(policy, &lists.link, &previous).with_context(|| {
            format!(
                "with the previous lists ({}) {} fails `policy check`: {UNCHANGED}",
                previous.display(),
                policy.display()
            )
        })?;
    }
    let current = lists.current()?;
    let before = current
        .as_deref()
        .map(checks::count_installed)
        .unwrap_or_default();
    let after = checks::count_installed(&previous);
    lists.swap_to(&previous)?;
    println!(
        "rolled back {} to {}",
        lists.link.display(),
        previous.display()
    );
    print_changes(&before, &after);
    reload_or_undo(args, &lists, current.as_deref(), Some(&previous))
}

/// The policy to check with: --policy, else the running daemon's file, else the site's.
fn policy_file(args: &CommonArgs) -> anyhow::Result<Option<PathBuf>> {
    if let Some(policy) = &args.policy {
        return Ok(Some(policy.clone()));
    }
    if control::daemon_listens(&args.control_socket) {
        let lines = control::ask(&args.control_socket, &Request::Status)?;
        let status: Status = serde_json::from_str(lines.first().context("no answer")?)
            .context("the daemon's status")?;
        let file = PathBuf::from(&status.policy);
        if file.is_file() {
            return Ok(Some(file));
        }
    }
    let site = Path::new(SITE_POLICY_FILE);
    Ok(site.is_file().then(|| site.to_owned()))
}

/// Which lists to take: --all, or those the policy reads plus --category.
fn selection(
    args: &ImportArgs,
    lists: &ListsDir,
    policy_lists: &[PolicyList],
) -> anyhow::Result<Selection> {
    if args.all {
        return Ok(Selection::All);
    }
    let mut names: BTreeSet<String> = args.categories.iter().cloned().collect();
    if let Some(bad) = names.iter().find(|name| !source::is_category_name(name)) {
        bail!("--category {bad}: not a list name (letters, digits, `_`, `-`, `.`)");
    }
    names.extend(policy_lists.iter().map(|list| list.category.clone()));
    if names.is_empty() {
        bail!(
            "nothing to import: the policy names no list under {} (e.g. `lists = [\"{}/gambling\"]` \
             in a category); name lists with --category, or take them all with --all",
            lists.link.display(),
            lists.link.display()
        );
    }
    Ok(Selection::Only(names))
}

/// Downloads (for a URL) and stages the source.
fn stage(
    args: &ImportArgs,
    lists: &ListsDir,
    staging: &Path,
    selection: &Selection,
    limits: &Limits,
) -> anyhow::Result<Staged> {
    let source = args.source.as_str();
    if fetch::is_url(source) {
        let download = TemporaryFile(
            lists
                .versions()
                .join(format!(".download-{}", std::process::id())),
        );
        let _ = std::fs::remove_file(&download.0);
        let mut progress = ProgressLine::new("downloading");
        let bytes = fetch::download(
            source,
            &download.0,
            limits.max_download,
            *args.timeout,
            &mut |done, total| progress.show(done, total),
        )?;
        progress.done(bytes);
        return stage_tarball(&download.0, staging, selection, limits);
    }
    let path = Path::new(source);
    if path.is_dir() {
        eprintln!("reading {}", path.display());
        return source::stage_directory(path, staging, selection, limits);
    }
    stage_tarball(path, staging, selection, limits)
}

fn stage_tarball(
    archive: &Path,
    staging: &Path,
    selection: &Selection,
    limits: &Limits,
) -> anyhow::Result<Staged> {
    let mut progress = ProgressLine::new("unpacking");
    let staged = source::stage_tarball(archive, staging, selection, limits, &mut |done, total| {
        progress.show(done, total);
    })?;
    progress.done(std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0));
    Ok(staged)
}

/// The lists the import needs are there, every staged list reads, and the policy passes
/// `policy check` with them; the domains each list holds.
fn check_staged(
    args: &ImportArgs,
    policy: &Option<PathBuf>,
    policy_lists: &[PolicyList],
    lists: &ListsDir,
    staging: &Path,
    staged: &Staged,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let has = || {
        staged
            .available
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    for list in policy_lists {
        if !staged.lists.contains_key(&list.category) {
            bail!(
                "the policy's {} reads {}/{}, which the source does not have (it has: {})",
                list.field,
                lists.link.display(),
                list.category,
                has()
            );
        }
    }
    for name in &args.categories {
        if !staged.lists.contains_key(name) {
            bail!(
                "--category {name}: the source has no such list (it has: {})",
                has()
            );
        }
    }
    if staged.lists.is_empty() {
        bail!("the source holds no lists (`blacklists/<name>/domains` or `BL/<name>/domains`)");
    }
    eprintln!("checking {} lists", staged.lists.len());
    let counts = checks::read_staged_lists(staging, &staged.lists)?;
    if let Some(policy) = policy {
        eprintln!("checking {} with the new lists", policy.display());
        checks::check_policy_with(policy, &lists.link, staging).with_context(|| {
            format!("with these lists {} fails `policy check`", policy.display())
        })?;
    }
    Ok(counts)
}

/// Entries per list, before and after.
fn print_changes(
    before: &BTreeMap<String, Option<usize>>,
    after: &BTreeMap<String, Option<usize>>,
) {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(4).max(4);
    println!(
        "  {:width$}  {:>10}  {:>10}  change",
        "list", "before", "after"
    );
    let shown = |count: Option<&Option<usize>>| match count {
        None => "-".to_owned(),
        Some(None) => "unreadable".to_owned(),
        Some(Some(n)) => n.to_string(),
    };
    for name in names {
        let (was, now) = (before.get(name), after.get(name));
        let change = match (was, now) {
            (None, Some(_)) => "new".to_owned(),
            (Some(_), None) => "removed".to_owned(),
            (Some(Some(a)), Some(Some(b))) => format!("{:+}", *b as i64 - *a as i64),
            _ => String::new(),
        };
        println!(
            "  {name:width$}  {:>10}  {:>10}  {change}",
            shown(was),
            shown(now)
        );
    }
}

/// Makes the running daemon read the new lists; when it refuses them, puts the lists it
/// had back (and the previous link as it was).
fn reload_or_undo(
    args: &CommonArgs,
    lists: &ListsDir,
    replaced: Option<&Path>,
    previous: Option<&Path>,
) -> anyhow::Result<()> {
    if !control::daemon_listens(&args.control_socket) {
        println!(
            "no daemon answers on {}: it reads these lists when it starts (or on `classifier \
             policy reload`)",
            args.control_socket.display()
        );
        return Ok(());
    }
    let reloaded = control::ask(&args.control_socket, &Request::Reload).and_then(|lines| {
        serde_json::from_str::<ReloadReport>(lines.first().context("no answer")?)
            .context("the daemon's answer")
    });
    match reloaded {
        Ok(report) => {
            println!(
                "the daemon reloaded {}: {} categories, {} domains (generation {})",
                report.policy, report.categories, report.domains, report.generation
            );
            Ok(())
        }
        Err(refused) => {
            if let Some(replaced) = replaced {
                lists.swap_to(replaced)?;
                if let Some(previous) = previous {
                    lists.restore_previous(previous)?;
                }
            }
            bail!(
                "the daemon refused the lists ({refused:#}); the lists before are back in {}",
                lists.link.display()
            )
        }
    }
}

/// Old versions removed; the previous copy named.
fn finish(lists: &ListsDir, replaced: Option<&Path>) -> anyhow::Result<()> {
    for removed in lists.prune()? {
        println!("removed the older copy {}", removed.display());
    }
    match replaced {
        Some(previous) => println!(
            "the previous copy is kept in {} (`classifier lists rollback` puts it back)",
            previous.display()
        ),
        None => println!("(no lists were installed before)"),
    }
    Ok(())
}

/// A file removed when dropped.
struct TemporaryFile(PathBuf);

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Progress on stderr, at most once a second: on one line rewritten on a terminal, a line
/// each otherwise (the journal, a log).
struct ProgressLine {
    phase: &'static str,
    last: Option<Instant>,
    terminal: bool,
}

impl ProgressLine {
    fn new(phase: &'static str) -> Self {
        Self {
            phase,
            last: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn show(&mut self, done: u64, total: Option<u64>) {
        if self
            .last
            .is_some_and(|last| last.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last = Some(Instant::now());
        let line = match total.filter(|total| *total > 0) {
            Some(total) => format!(
                "{}: {} of {} ({}%)",
                self.phase,
                mebibytes(done),
                mebibytes(total),
                done * 100 / total
            ),
            None => format!("{}: {}", self.phase, mebibytes(done)),
        };
        if self.terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }

    fn done(&mut self, bytes: u64) {
        if self.terminal && self.last.is_some() {
            eprintln!();
        }
        eprintln!("{}: {} done", self.phase, mebibytes(bytes));
    }
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}
