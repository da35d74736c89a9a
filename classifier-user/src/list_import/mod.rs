//! `classifier lists import`: UT1 / Shallalist domain lists, from a tarball or a directory,
//! local or downloaded, checked and swapped in where the policy reads them.
//!
//! - [`source`]: reading a tarball (hostile input: every entry's path, type and size is
//!   checked before a byte is written) or a directory into a staging directory;
//! - [`fetch`]: downloading a tarball over HTTP(S) with a size limit and a timeout;
//! - [`store`]: the installed versions, the atomic swap, the previous copy and rollback;
//! - [`checks`]: the lists and the policy checked against the staged copy before the swap.

pub mod checks;
pub mod fetch;
pub mod source;
pub mod store;

/// The limits hostile or broken input runs into.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes a download may have.
    pub max_download: u64,
    /// Bytes one file (a tar entry, a list file) may have.
    pub max_file: u64,
    /// Bytes all files of a tarball may have together, unpacked (a gzip bomb's limit).
    pub max_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_download: 1 << 30,
            max_file: 512 << 20,
            max_total: 4 << 30,
        }
    }
}

/// Progress of a long step: called with the bytes done and, when known, the total.
pub type Progress<'a> = &'a mut dyn FnMut(u64, Option<u64>);
