//! The installed lists: the lists directory the policy names (`/var/lib/classifier/ut1`)
//! is a symbolic link to one version, a directory under `ut1.versions/`; `ut1.previous`
//! links to the version before it. An import writes a new version beside them, then
//! replaces the link with rename(2), which is atomic: a reader sees the old lists or the
//! new ones, never half of either. Rollback swaps the two links back. Older versions are
//! removed; a lock file keeps two imports from running at once.

use std::{
    fs::File,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use nix::fcntl::{Flock, FlockArg};

/// A lists directory and the versions beside it.
#[derive(Debug, Clone)]
pub struct ListsDir {
    /// The link the policy's list paths go through.
    pub link: PathBuf,
}

/// The lock held while an import or rollback runs.
pub struct Lock(#[allow(dead_code)] Flock<File>);

impl ListsDir {
    /// The lists directory `path` (made absolute: policies name lists by absolute path).
    pub fn new(path: &Path) -> anyhow::Result<Self> {
        let link = std::path::absolute(path)
            .map(|path| super::checks::lexical(&path))
            .with_context(|| format!("the lists directory {}", path.display()))?;
        if link.file_name().is_none() {
            bail!("the lists directory {} has no name", path.display());
        }
        Ok(Self { link })
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.link.file_name().unwrap_or_default().to_owned();
        name.push(suffix);
        self.link.with_file_name(name)
    }

    /// Where the versions are: `<lists dir>.versions`.
    pub fn versions(&self) -> PathBuf {
        self.sibling(".versions")
    }

    /// The link to the version before the current one: `<lists dir>.previous`.
    pub fn previous_link(&self) -> PathBuf {
        self.sibling(".previous")
    }

    /// Takes the lock (`<lists dir>.lock`), or says who holds it.
    pub fn lock(&self) -> anyhow::Result<Lock> {
        std::fs::create_dir_all(self.versions())
            .with_context(|| format!("creating {}", self.versions().display()))?;
        let path = self.sibling(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            anyhow::anyhow!(
                "another `classifier lists` holds {} ({e}): wait for it to finish",
                path.display()
            )
        })?;
        Ok(Lock(lock))
    }

    /// The version in force, if any. A real directory here (lists unpacked by hand) is
    /// refused with what to do: it cannot be swapped atomically.
    pub fn current(&self) -> anyhow::Result<Option<PathBuf>> {
        version_behind(&self.link).with_context(|| {
            format!(
                "{} is a directory, not a link `classifier lists import` made: move it away \
                 (e.g. to {}/manual) and import again, or name another --lists-dir",
                self.link.display(),
                self.versions().display()
            )
        })
    }

    /// The version before the current one, if it is still there.
    pub fn previous(&self) -> anyhow::Result<Option<PathBuf>> {
        Ok(version_behind(&self.previous_link())?.filter(|version| version.is_dir()))
    }

    /// A new, empty directory to stage a version in; removed when dropped unless kept.
    pub fn staging(&self) -> anyhow::Result<Staging> {
        let stamp = jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%SZ")
            .to_string();
        for attempt in 0u32.. {
            let name = match attempt {
                0 => stamp.clone(),
                n => format!("{stamp}-{n}"),
            };
            let path = self.versions().join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Staging { path, keep: false }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        unreachable!("a free version name is found")
    }

    /// Puts `version` in force: the lists link now points at it, the previous link at the
    /// version it replaced. Returns that version.
    pub fn swap_to(&self, version: &Path) -> anyhow::Result<Option<PathBuf>> {
        let replaced = self.current()?;
        replace_link(&self.link, version)?;
        if let Some(replaced) = &replaced {
            replace_link(&self.previous_link(), replaced)?;
        }
        sync_dir(self.link.parent().unwrap_or(Path::new("/")))?;
        Ok(replaced)
    }

    /// Points the previous link at `version` again (undoing a swap's change to it).
    pub fn restore_previous(&self, version: &Path) -> anyhow::Result<()> {
        replace_link(&self.previous_link(), version)
    }

    /// Removes versions that are neither current nor previous.
    pub fn prune(&self) -> anyhow::Result<Vec<PathBuf>> {
        let keep: Vec<PathBuf> = [self.current()?, self.previous()?]
            .into_iter()
            .flatten()
            .collect();
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(self.versions())? {
            let path = entry?.path();
            if path.is_dir() && !keep.contains(&path) {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("removing the old version {}", path.display()))?;
                removed.push(path);
            }
        }
        Ok(removed)
    }
}

/// The directory the link at `link` points to (absolute), None when there is no link; an
/// error when something other than a link is there.
fn version_behind(link: &Path) -> anyhow::Result<Option<PathBuf>> {
    match std::fs::symlink_metadata(link) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", link.display())),
        Ok(meta) if !meta.file_type().is_symlink() => {
            bail!("{} is not a symbolic link", link.display())
        }
        Ok(_) => {
            let target = std::fs::read_link(link)?;
            Ok(Some(link.parent().unwrap_or(Path::new("/")).join(target)))
        }
    }
}

/// Makes `link` point at `target` atomically: a new link beside it, renamed over it. The
/// target is written relative to the link's directory, so the tree can be moved whole.
fn replace_link(link: &Path, target: &Path) -> anyhow::Result<()> {
    let dir = link.parent().unwrap_or(Path::new("/"));
    let relative = target.strip_prefix(dir).unwrap_or(target);
    let mut temporary_name = link.file_name().unwrap_or_default().to_owned();
    temporary_name.push(format!(".new-{}", std::process::id()));
    let temporary = link.with_file_name(temporary_name);
    let _ = std::fs::remove_file(&temporary);
    symlink(relative, &temporary)
        .with_context(|| format!("creating the link {}", temporary.display()))?;
    std::fs::rename(&temporary, link).with_context(|| {
        let _ = std::fs::remove_file(&temporary);
        format!("swapping {} to {}", link.display(), target.display())
    })
}

/// Makes the directory's entries (a rename, a new link) durable.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// A version being staged: removed when dropped, unless [`Staging::keep`] was called.
pub struct Staging {
    pub path: PathBuf,
    keep: bool,
}

impl Staging {
    /// The version is in force (or kept as previous): it stays.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("classifier-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn swaps_keep_the_previous_version_and_prune_older_ones() {
        let dir = scratch("swap");
        let lists = ListsDir::new(&dir.join("ut1")).unwrap();
        let _lock = lists.lock().unwrap();
        assert!(
            lists.lock().is_err(),
            "a second import is refused while one runs"
        );
        let mut versions = Vec::new();
        for n in 0..3 {
            let staging = lists.staging().unwrap();
            std::fs::write(staging.path.join("mark"), n.to_string()).unwrap();
            let version = staging.keep();
            lists.swap_to(&version).unwrap();
            versions.push(version);
        }
        assert_eq!(lists.current().unwrap().as_ref(), Some(&versions[2]));
        assert_eq!(lists.previous().unwrap().as_ref(), Some(&versions[1]));
        assert_eq!(std::fs::read_to_string(dir.join("ut1/mark")).unwrap(), "2");
        assert_eq!(lists.prune().unwrap(), [versions[0].clone()]);
        // Rollback: the previous version back in force, the current kept as previous.
        let previous = lists.previous().unwrap().unwrap();
        lists.swap_to(&previous).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("ut1/mark")).unwrap(), "1");
        assert_eq!(lists.previous().unwrap().as_ref(), Some(&versions[2]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_unpacked_by_hand_is_not_replaced() {
        let dir = scratch("manual");
        std::fs::create_dir_all(dir.join("ut1/adult")).unwrap();
        let lists = ListsDir::new(&dir.join("ut1")).unwrap();
        let err = lists.current().unwrap_err();
        assert!(format!("{err:#}").contains("move it away"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
