//! UT1 / Shallalist-style domain lists: a category directory with a `domains` file (or a
//! plain file), one domain per line, `#` comments, blank lines ignored.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
};

use super::{
    entries::{ListEntryError, list_entry},
    source::{FieldPath, PolicyError, Source},
};

/// What a list held.
#[derive(Debug, Default)]
pub struct ListContents {
    pub domains: Vec<String>,
    /// Lines that are not domains (IP addresses, URLs, garbage), with the first few kept
    /// for the report.
    pub skipped: usize,
    pub skipped_examples: Vec<String>,
}

/// Why a list was refused: where, and what.
#[derive(Debug)]
pub struct ListError {
    /// The file read (a directory's `domains`).
    pub file: PathBuf,
    /// 1-based; 0 when the file as a whole could not be read.
    pub line: usize,
    pub message: String,
}

impl ListError {
    /// As a policy error: the list file and its line, and the policy field that names it.
    pub fn located(self, source: &Source<'_>, field: &FieldPath) -> PolicyError {
        if self.line == 0 {
            return source.error_at(
                field,
                format!("cannot read {}: {}", self.file.display(), self.message),
            );
        }
        PolicyError {
            file: self.file.display().to_string(),
            line: self.line,
            column: 1,
            field: field.to_string(),
            message: self.message,
        }
    }
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
/// addresses and the odd typo, and one bad line must not lose a million good ones. What
/// would silently change what is classified is refused with its line: bytes that are not
/// UTF-8 (a list saved in Latin-1 or UTF-16), a byte order mark (which would hide the
/// first domain), a bare public suffix (`com`, which would take every site under it).
pub fn read_list(path: &Path) -> Result<ListContents, ListError> {
    let file = list_file(path);
    let at = |line: usize, message: String| ListError {
        file: file.clone(),
        line,
        message,
    };
    let mut reader = BufReader::new(std::fs::File::open(&file).map_err(|e| at(0, e.to_string()))?);
    let mut contents = ListContents::default();
    let mut bytes = Vec::new();
    for number in 1.. {
        bytes.clear();
        if reader
            .read_until(b'\n', &mut bytes)
            .map_err(|e| at(0, e.to_string()))?
            == 0
        {
            break;
        }
        let line = list_line(&bytes).map_err(|message| at(number, message))?;
        let entry = line.split('#').next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        match list_entry(entry) {
            Ok(domain) => contents.domains.push(domain),
            Err(ListEntryError::PublicSuffix(message)) => return Err(at(number, message)),
            Err(ListEntryError::NotADomain(_)) => {
                contents.skipped += 1;
                if contents.skipped_examples.len() < 5 {
                    contents.skipped_examples.push(entry.to_owned());
                }
            }
        }
    }
    Ok(contents)
}

/// The 1-based line of the list at `path` that lists `domain` (normalised, as the tables
/// hold it), read again from the file; none when it is not there (any more).
pub fn line_of(path: &Path, domain: &str) -> Option<usize> {
    let reader = BufReader::new(std::fs::File::open(list_file(path)).ok()?);
    reader
        .split(b'\n')
        .map_while(Result::ok)
        .position(|bytes| {
            list_line(&bytes)
                .ok()
                .and_then(|line| list_entry(line.split('#').next()?.trim()).ok())
                .is_some_and(|entry| entry == domain)
        })
        .map(|index| index + 1)
}

/// One line of a list as text, or why it cannot be read as written.
fn list_line(bytes: &[u8]) -> Result<&str, String> {
    let line = std::str::from_utf8(bytes).map_err(|e| {
        let bad = bytes[e.valid_up_to()];
        format!(
            "not UTF-8 (byte 0x{bad:02x} at column {}): save the list as UTF-8, one domain \
             per line",
            e.valid_up_to() + 1
        )
    })?;
    if let Some(column) = line.find('\u{feff}') {
        return Err(format!(
            "a byte order mark (U+FEFF) at column {}: it would hide the domain it is \
             stuck to; save the list as UTF-8 without a BOM",
            column + 1
        ));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch list file, removed when dropped.
    struct ListFile(PathBuf);

    impl ListFile {
        fn new(name: &str, bytes: &[u8]) -> Self {
            let path =
                std::env::temp_dir().join(format!("classifier-list-{name}-{}", std::process::id()));
            std::fs::write(&path, bytes).unwrap();
            Self(path)
        }
    }

    impl Drop for ListFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn refused(name: &str, bytes: &[u8]) -> ListError {
        let list = ListFile::new(name, bytes);
        let err = read_list(&list.0).expect_err(name);
        assert_eq!(err.file, list.0);
        err
    }

    #[test]
    fn domains_comments_and_skipped_lines() {
        let list = ListFile::new(
            "ok",
            "# UT1 gambling\nbet365.com\r\n\n192.0.2.1\nBücher.example # shop\n".as_bytes(),
        );
        let contents = read_list(&list.0).unwrap();
        assert_eq!(contents.domains, ["bet365.com", "xn--bcher-kva.example"]);
        assert_eq!(contents.skipped, 1);
        assert_eq!(contents.skipped_examples, ["192.0.2.1"]);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_refused_with_its_line() {
        let err = refused("latin1", b"one.example\ntwo.example\ncaf\xe9.example\n");
        assert_eq!(err.line, 3);
        assert!(err.message.contains("not UTF-8"), "{}", err.message);
        assert!(err.message.contains("0xe9"), "{}", err.message);
    }

    #[test]
    fn a_byte_order_mark_is_refused_with_its_line() {
        let err = refused("bom", "\u{feff}first.example\nsecond.example\n".as_bytes());
        assert_eq!(err.line, 1);
        assert!(err.message.contains("byte order mark"), "{}", err.message);
        // Two lists joined: the second one's BOM is in the middle.
        let err = refused("bom-joined", "a.example\n\u{feff}b.example\n".as_bytes());
        assert_eq!(err.line, 2);
        // UTF-16 (what some editors save as "Unicode"): not UTF-8 at all.
        let err = refused("utf16", b"\xff\xfea\x00.\x00e\x00x\x00\n\x00");
        assert_eq!(err.line, 1);
    }

    #[test]
    fn a_bare_public_suffix_is_refused_with_its_line() {
        let err = refused(
            "suffix",
            b"good.example\n# next is a typo for co.uk sites\nco.uk\n",
        );
        assert_eq!(err.line, 3);
        assert!(err.message.contains("public suffix"), "{}", err.message);
    }
}
