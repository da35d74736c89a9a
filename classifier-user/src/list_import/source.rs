//! Reading a UT1 or Shallalist source into a staging directory: `<category>/domains` for
//! each category taken.
//!
//! UT1's `blacklists.tar.gz` holds `blacklists/<category>/domains` (and `urls`, which the
//! policy does not read); Shallalist's holds `BL/<category>/domains`; an unpacked copy is a
//! directory with the same layout, or the category directories themselves.
//!
//! A tarball is hostile input until proven otherwise: every entry is checked before
//! anything is written, whether or not it is a list taken, and the archive is refused for
//! an absolute path, a `..`, a link leaving its directory, a device or FIFO, a name that is
//! not UTF-8, or a size over the limits. Nothing is ever written outside the staging
//! directory, and no link is ever created: category aliases (links to a sibling category)
//! are skipped with a note.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io::{BufReader, Read, Write as _},
    path::{Component, Path, PathBuf},
};

use anyhow::{Context as _, bail};

use super::{Limits, Progress};

/// Which categories to take.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    Only(BTreeSet<String>),
}

impl Selection {
    fn takes(&self, category: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.contains(category),
        }
    }
}

/// What was staged.
#[derive(Debug, Default)]
pub struct Staged {
    /// Category -> where its list came from in the source (for messages).
    pub lists: BTreeMap<String, String>,
    /// Categories the source has (taken or not).
    pub available: BTreeSet<String>,
    /// What was skipped and why (aliases, for instance).
    pub notes: Vec<String>,
}

/// The roots of a UT1 and a Shallalist tree.
const ROOTS: [&str; 2] = ["blacklists", "BL"];

/// Stages the categories `selection` takes from the tarball `archive` (gzip or plain tar)
/// into `staging`.
pub fn stage_tarball(
    archive: &Path,
    staging: &Path,
    selection: &Selection,
    limits: &Limits,
    progress: Progress<'_>,
) -> anyhow::Result<Staged> {
    let file = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let archive_len = file.metadata()?.len();
    let mut reader = BufReader::new(CountingReader {
        inner: file,
        read: 0,
        total: archive_len,
        progress,
    });
    let gzip = reader_starts_with(&mut reader, &[0x1f, 0x8b])?;
    let unpacked: Box<dyn Read + '_> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut tar = tar::Archive::new(unpacked.take(limits.max_total.saturating_add(1)));
    let mut staged = Staged::default();
    let mut total = 0u64;
    let entries = tar.entries().context("reading the tarball")?;
    for entry in entries {
        let mut entry = entry.context("reading the tarball (truncated or corrupt?)")?;
        let name = entry_name(&entry)?;
        let Some(category) = checked_entry(&entry, &name, limits, &mut staged)? else {
            continue;
        };
        staged.available.insert(category.clone());
        if !selection.takes(&category) {
            continue;
        }
        if staged.lists.contains_key(&category) {
            bail!("the tarball holds {name} twice: refused (which one would be meant?)");
        }
        total += entry.header().entry_size()?;
        if total > limits.max_total {
            bail!(
                "the tarball's lists unpack to more than {} bytes (the limit): refused",
                limits.max_total
            );
        }
        write_list(&mut entry, &staging.join(&category), limits.max_file)
            .with_context(|| format!("unpacking {name}"))?;
        staged.lists.insert(category, name);
    }
    // Read to the end: a gzip stream is only known whole (its length and CRC) there.
    let mut rest = tar.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink())
        .context("reading the tarball to its end (truncated or corrupt?)")?;
    if rest.limit() == 0 {
        bail!(
            "the tarball unpacks to more than {} bytes (the limit): refused",
            limits.max_total
        );
    }
    Ok(staged)
}

/// A tar entry's path as text, or why the archive is refused.
fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> anyhow::Result<String> {
    let bytes = entry.path_bytes();
    match std::str::from_utf8(&bytes) {
        Ok(name) => Ok(name.to_owned()),
        Err(_) => bail!(
            "the tarball has an entry whose name is not UTF-8 ({}): refused",
            String::from_utf8_lossy(&bytes)
        ),
    }
}

/// Checks one entry; the category when it is a category's `domains` list.
fn checked_entry<R: Read>(
    entry: &tar::Entry<'_, R>,
    name: &str,
    limits: &Limits,
    staged: &mut Staged,
) -> anyhow::Result<Option<String>> {
    let parts =
        safe_parts(name).map_err(|why| anyhow::anyhow!("tar entry {name}: {why}: refused"))?;
    let header = entry.header();
    let size = header.entry_size()?;
    if size > limits.max_file {
        bail!(
            "tar entry {name} is {size} bytes, over the limit of {} per file (--max-list-size): \
             refused",
            limits.max_file
        );
    }
    use tar::EntryType as T;
    match header.entry_type() {
        T::Regular | T::Continuous => {}
        T::Directory => return Ok(None),
        T::Symlink | T::Link => {
            let target = entry.link_name()?.unwrap_or_default();
            let target = target.to_string_lossy().into_owned();
            if !is_sibling_name(&target) {
                bail!(
                    "tar entry {name} is a link to {target}, outside its directory: refused \
                     (links are never unpacked)"
                );
            }
            staged
                .notes
                .push(format!("{name}: a link to {target} (an alias), skipped"));
            return Ok(None);
        }
        T::Char | T::Block | T::Fifo => {
            bail!("tar entry {name} is a device or FIFO: refused")
        }
        other => bail!("tar entry {name} is of a type lists never are ({other:?}): refused"),
    }
    Ok(list_category(&parts))
}

/// The parts of a relative path with no `..`, or why it is not one.
fn safe_parts(name: &str) -> Result<Vec<&str>, &'static str> {
    let mut parts = Vec::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().unwrap_or_default()),
            Component::CurDir => {}
            Component::ParentDir => return Err("a path with `..` (it could write anywhere)"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("an absolute path (it could write anywhere)");
            }
        }
    }
    Ok(parts)
}

/// A link target that names a sibling: one plain name, no `/`.
fn is_sibling_name(target: &str) -> bool {
    !target.is_empty() && !target.contains('/') && target != "." && target != ".."
}

/// `<root>/<category>/domains` or `<category>/domains`: the category.
fn list_category(parts: &[&str]) -> Option<String> {
    let parts = match parts {
        [root, rest @ ..] if ROOTS.contains(root) => rest,
        _ => parts,
    };
    match parts {
        [category, "domains"] if is_category_name(category) => Some((*category).to_owned()),
        _ => None,
    }
}

/// A name safe as a directory name and in a policy path: letters, digits, `_`, `-`, `.`
/// (not first), at most 64.
pub fn is_category_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Copies at most `max` bytes of `from` into `dir/domains` (refused beyond), and syncs it.
fn write_list(from: &mut dyn Read, dir: &Path, max: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("domains");
    let mut file =
        File::create_new(&path).with_context(|| format!("creating {}", path.display()))?;
    let copied = std::io::copy(&mut from.take(max.saturating_add(1)), &mut file)
        .map_err(|e| anyhow::anyhow!("{e} (truncated or corrupt?)"))?;
    if copied > max {
        bail!("over the limit of {max} bytes per file (--max-list-size): refused");
    }
    file.flush()?;
    file.sync_all()?;
    Ok(())
}

/// Stages the categories `selection` takes from the directory `dir`: a UT1 or Shallalist
/// tree (`blacklists/` or `BL/` inside), or the category directories themselves.
pub fn stage_directory(
    dir: &Path,
    staging: &Path,
    selection: &Selection,
    limits: &Limits,
) -> anyhow::Result<Staged> {
    let root = ROOTS
        .iter()
        .map(|root| dir.join(root))
        .find(|root| root.is_dir())
        .unwrap_or_else(|| dir.to_owned());
    let mut staged = Staged::default();
    for entry in std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let entry = entry?;
        let Some(category) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let list = entry.path().join("domains");
        if !is_category_name(&category) || !list.is_file() {
            continue;
        }
        staged.available.insert(category.clone());
        if !selection.takes(&category) {
            continue;
        }
        let mut file = File::open(&list).with_context(|| format!("opening {}", list.display()))?;
        write_list(&mut file, &staging.join(&category), limits.max_file)
            .with_context(|| format!("copying {}", list.display()))?;
        staged.lists.insert(category, list.display().to_string());
    }
    Ok(staged)
}

/// Whether the next bytes of `reader` are `magic` (without consuming them).
fn reader_starts_with(reader: &mut impl std::io::BufRead, magic: &[u8]) -> anyhow::Result<bool> {
    let buffer = reader.fill_buf().context("reading the tarball")?;
    Ok(buffer.starts_with(magic))
}

/// Counts the bytes read from the archive file, for progress.
struct CountingReader<'a> {
    inner: File,
    read: u64,
    total: u64,
    progress: Progress<'a>,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        (self.progress)(self.read, Some(self.total));
        Ok(n)
    }
}

/// Where the list of `category` is in a staged or installed tree.
pub fn list_path(tree: &Path, category: &str) -> PathBuf {
    tree.join(category).join("domains")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_the_staging_directory_are_refused() {
        assert!(safe_parts("../etc/passwd").is_err());
        assert!(safe_parts("blacklists/../../x").is_err());
        assert!(safe_parts("/etc/passwd").is_err());
        assert_eq!(
            safe_parts("./blacklists/adult/domains").unwrap(),
            ["blacklists", "adult", "domains"]
        );
    }

    #[test]
    fn lists_are_found_in_ut1_shallalist_and_bare_layouts() {
        for name in [
            "blacklists/gambling/domains",
            "BL/gambling/domains",
            "gambling/domains",
        ] {
            let parts = safe_parts(name).unwrap();
            assert_eq!(list_category(&parts).as_deref(), Some("gambling"), "{name}");
        }
        for name in [
            "blacklists/gambling/urls",
            "blacklists/README",
            "other/gambling/domains",
            "blacklists/.hidden/domains",
        ] {
            assert_eq!(list_category(&safe_parts(name).unwrap()), None, "{name}");
        }
    }

    #[test]
    fn only_plain_sibling_names_are_aliases() {
        assert!(is_sibling_name("adult"));
        assert!(!is_sibling_name("../adult"));
        assert!(!is_sibling_name("/etc"));
        assert!(!is_sibling_name(".."));
        assert!(!is_sibling_name(""));
    }
}
