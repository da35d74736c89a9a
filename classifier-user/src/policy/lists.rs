//! UT1 / Shallalist-style domain lists: a category directory with a `domains` file (or a
//! plain file), one domain per line, `#` comments, blank lines ignored.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
};

use super::classes::normalize_domain;

/// What a list held.
#[derive(Debug, Default)]
pub struct ListContents {
    pub domains: Vec<String>,
    /// Lines that are not domains (IP addresses, URLs, garbage), with the first few kept
    /// for the report.
    pub skipped: usize,
    pub skipped_examples: Vec<String>,
}

/// The file a list path names: `DIR/domains` for a directory, else the path itself.
pub fn list_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("domains")
    } else {
        path.to_owned()
    }
}

/// Reads a list. Lines that are not domains are counted, not fatal: public lists carry
/// addresses and the odd typo, and one bad line must not lose a million good ones.
pub fn read_list(path: &Path) -> std::io::Result<ListContents> {
    let file = std::fs::File::open(list_file(path))?;
    let mut contents = ListContents::default();
    for line in BufReader::new(file).lines() {
        let line = line?;
        let entry = line.split('#').next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        match normalize_domain(entry) {
            Ok(domain) => contents.domains.push(domain),
            Err(_) => {
                contents.skipped += 1;
                if contents.skipped_examples.len() < 5 {
                    contents.skipped_examples.push(entry.to_owned());
                }
            }
        }
    }
    Ok(contents)
}
