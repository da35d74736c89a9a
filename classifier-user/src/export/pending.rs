//! An export file that no one can see until its audit entry is on disk: written first as
//! an unnamed file (`O_TMPFILE`) in the directory it goes to, then given its name with
//! `linkat`, which never replaces an existing file. Killed before that (waiting for the
//! audit log's lock, say), the process leaves nothing behind: the kernel frees an unnamed
//! file with its last descriptor.
//!
//! File systems without unnamed files (NFS, CIFS) get the bytes written at publication
//! instead, to a new file (`O_CREAT|O_EXCL`, which follows no link): still after the
//! entry, but a crash while writing leaves a file shorter than the entry's SHA-256 says.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use nix::{
    errno::Errno,
    fcntl::{AT_FDCWD, AtFlags},
};

/// Exports are evidence about a person: their owner's only.
const MODE: u32 = 0o600;

/// An export written but not yet visible.
pub struct Pending {
    target: PathBuf,
    file: Unpublished,
}

enum Unpublished {
    /// An unnamed file in the target's directory, written and synced.
    Unnamed(File),
    /// The bytes, for a file system that cannot hold an unnamed file.
    Bytes(Vec<u8>),
}

impl Pending {
    /// Writes `bytes` where no one sees them, to appear at `target` on [`Pending::publish`].
    pub fn write(target: &Path, bytes: &[u8]) -> anyhow::Result<Self> {
        if target.symlink_metadata().is_ok() {
            bail!(never_overwrites(target));
        }
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let unnamed = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(MODE)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(dir);
        let file = match unnamed {
            Ok(mut file) => {
                file.write_all(bytes)
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("writing the export for {}", target.display()))?;
                Unpublished::Unnamed(file)
            }
            // The file system (or an old kernel, which takes O_TMPFILE for O_DIRECTORY)
            // has no unnamed files.
            Err(e)
                if matches!(
                    e.raw_os_error().map(Errno::from_raw),
                    Some(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL)
                ) =>
            {
                Unpublished::Bytes(bytes.to_vec())
            }
            Err(e) => {
                return Err(e).with_context(|| format!("writing the export in {}", dir.display()));
            }
        };
        Ok(Self {
            target: target.to_owned(),
            file,
        })
    }

    /// Gives the export its name (never over an existing file), durably.
    pub fn publish(self) -> anyhow::Result<()> {
        let target = &self.target;
        match self.file {
            Unpublished::Unnamed(file) => {
                // The /proc form, which needs no CAP_DAC_READ_SEARCH (open(2), O_TMPFILE).
                let source = format!("/proc/self/fd/{}", file.as_raw_fd());
                match nix::unistd::linkat(
                    AT_FDCWD,
                    source.as_str(),
                    AT_FDCWD,
                    target.as_path(),
                    AtFlags::AT_SYMLINK_FOLLOW,
                ) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => bail!(never_overwrites(target)),
                    Err(e) => {
                        return Err(e).with_context(|| format!("naming {}", target.display()));
                    }
                }
            }
            Unpublished::Bytes(bytes) => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(MODE)
                    .open(target)
                    .with_context(|| never_overwrites(target))?;
                file.write_all(&bytes)
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("writing {}", target.display()))?;
            }
        }
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))
    }
}

fn never_overwrites(target: &Path) -> String {
    format!(
        "{} exists (an export never overwrites a file: choose a new name)",
        target.display()
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("classifier-pending-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn nothing_is_visible_until_published_and_nothing_is_left_if_never() {
        let dir = temp_dir("visible");
        let target = dir.join("case.csv");
        let pending = Pending::write(&target, b"a,b\n").unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no name yet");
        pending.publish().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"a,b\n");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        drop(Pending::write(&dir.join("dropped.csv"), b"x").unwrap());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only case.csv");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_existing_name_or_link_is_never_replaced() {
        let dir = temp_dir("exists");
        let target = dir.join("case.csv");
        let pending = Pending::write(&target, b"new").unwrap();
        // Made between the check and the publication.
        std::fs::write(&target, b"old").unwrap();
        let err = format!("{:#}", pending.publish().unwrap_err());
        assert!(err.contains("never overwrites"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"old");

        let link = dir.join("link.csv");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = format!("{:#}", Pending::write(&link, b"new").err().unwrap());
        assert!(err.contains("never overwrites"), "{err}");
        let bytes = Pending {
            target: link.clone(),
            file: Unpublished::Bytes(b"new".to_vec()),
        };
        assert!(bytes.publish().is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
