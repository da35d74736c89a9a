//! What is checked before a staged version goes in force: every list it holds, read with
//! the checks `policy check` applies to list files (not UTF-8, a byte order mark, a bare
//! public suffix: refused with file and line; names converted to punycode), and the whole
//! policy, checked as `policy check` does with its lists read from the staged version.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use super::source::{is_category_name, list_path};
use crate::policy::{check, file::PolicyFile, lists};

/// Reads every staged list; the domains each holds, or the first error, named by where the
/// list came from in the source (`blacklists/adult/domains`) and its line.
pub fn read_staged_lists(
    staging: &Path,
    origins: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for (category, origin) in origins {
        let contents = lists::read_list(&list_path(staging, category)).map_err(|e| {
            if e.line == 0 {
                anyhow::anyhow!("{origin}: {}", e.message)
            } else {
                anyhow::anyhow!("{origin}, line {}: {}: refused", e.line, e.message)
            }
        })?;
        counts.insert(category.clone(), contents.domains.len());
    }
    Ok(counts)
}

/// The domains each list of an installed version holds (None: the list does not read).
pub fn count_installed(version: &Path) -> BTreeMap<String, Option<usize>> {
    let Ok(entries) = std::fs::read_dir(version) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|category| is_category_name(category))
        .map(|category| {
            let count = lists::read_list(&list_path(version, &category))
                .ok()
                .map(|contents| contents.domains.len());
            (category, count)
        })
        .collect()
}

/// A list the policy reads from the lists directory: the source category it names, and
/// the policy field that names it (`categories.extremist.lists[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyList {
    pub category: String,
    pub field: String,
}

/// The lists of `lists_dir` the policy file at `policy` names.
pub fn lists_the_policy_reads(policy: &Path, lists_dir: &Path) -> anyhow::Result<Vec<PolicyList>> {
    let text = std::fs::read_to_string(policy)
        .with_context(|| format!("reading the policy {}", policy.display()))?;
    let file: PolicyFile = toml::from_str(&text).with_context(|| {
        format!(
            "{}: not a valid policy (see `classifier policy check`)",
            policy.display()
        )
    })?;
    let base_dir = policy_dir(policy)?;
    let mut found = Vec::new();
    for (name, section) in &file.categories {
        for (index, list) in section.lists.iter().enumerate() {
            let resolved = lexical(&base_dir.join(list));
            let Ok(rest) = resolved.strip_prefix(lists_dir) else {
                continue;
            };
            let field = format!("categories.{name}.lists[{index}]");
            let Some(category) = rest.iter().next().and_then(|c| c.to_str()) else {
                bail!(
                    "{}: {field} names the lists directory {} itself, not a list in it",
                    policy.display(),
                    lists_dir.display()
                );
            };
            found.push(PolicyList {
                category: category.to_owned(),
                field,
            });
        }
    }
    Ok(found)
}

/// Checks the policy at `policy` as `policy check` does, its lists under `lists_dir` read
/// from `version` instead. Warnings are the policy's business, not the lists': only
/// errors refuse.
pub fn check_policy_with(policy: &Path, lists_dir: &Path, version: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(policy)
        .with_context(|| format!("reading the policy {}", policy.display()))?;
    let base_dir = policy_dir(policy)?;
    let redirect = |list: &Path| {
        lexical(list)
            .strip_prefix(lists_dir)
            .ok()
            .map(|rest| version.join(rest))
    };
    check::check_text_with_lists(&text, policy, &base_dir, jiff::Timestamp::now(), &redirect)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The directory a policy's relative list paths are read from, absolute.
fn policy_dir(policy: &Path) -> anyhow::Result<PathBuf> {
    let dir = policy.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::path::absolute(dir).with_context(|| format!("the directory of {}", policy.display()))
}

/// `path` with `.` and `a/..` taken out, without asking the file system (the lists
/// directory is a link: following it would leave it).
pub fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_paths_are_compared_without_following_links() {
        assert_eq!(
            lexical(Path::new("/etc/classifier/../../var/lib/./ut1/adult")),
            Path::new("/var/lib/ut1/adult")
        );
    }

    #[test]
    fn the_policy_names_lists_by_absolute_and_relative_paths() {
        let dir = std::env::temp_dir().join(format!("classifier-checks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("policy.toml");
        std::fs::write(
            &policy,
            "[site]\nname = \"t\"\n[categories.extremist]\nlists = [\"/var/lib/classifier/ut1/agressif\"]\n\
             [categories.gambling]\nlists = [\"ut1/gambling\", \"other/x\"]\n",
        )
        .unwrap();
        let found = lists_the_policy_reads(&policy, Path::new("/var/lib/classifier/ut1")).unwrap();
        assert_eq!(
            found,
            [PolicyList {
                category: "agressif".into(),
                field: "categories.extremist.lists[0]".into()
            }]
        );
        let found = lists_the_policy_reads(&policy, &dir.join("ut1")).unwrap();
        assert_eq!(found[0].category, "gambling");
        assert_eq!(found[0].field, "categories.gambling.lists[0]");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
