//! Categories, applications, domains, ports and protocols → the tables the datapath looks
//! things up in.

use std::{
    collections::{HashMap, hash_map::Entry},
    path::Path,
};

use classifier_common::{
    classify::{Method, app, class_flags},
    config::{ClassResult, PortKey},
    domain::{self, DomainEntry, SuffixHash},
    flow::ip_proto,
};

pub use super::entries::{ListEntryError, list_entry, normalize_domain, refuse_public_suffix};
use super::{
    file::PolicyFile,
    ids::ClassIds,
    lists,
    source::{FieldPath, PolicyError, Source},
};

/// The datapath's lookup tables for one policy, and the names behind their ids.
#[derive(Debug, Default)]
pub struct ClassTables {
    /// Categories in file order (id 0 is "uncategorized").
    pub categories: Vec<Named>,
    /// Category name → id, and id → position in `categories`: a policy may have tens of
    /// thousands of categories (one per UT1 list), and every rule, app and exception looks
    /// names up.
    category_by_name: HashMap<String, u16>,
    category_by_id: HashMap<u16, usize>,
    /// Policy applications in file order (ids from `FIRST_POLICY_APP`).
    pub apps: Vec<Named>,
    /// Every name's id, this policy's and those of earlier policies whose flows may still
    /// be in the table ([`ClassIds`]).
    pub ids: ClassIds,
    /// Domain hash → entry, as the `DOMAINS` map holds it.
    pub domains: HashMap<u64, DomainEntry>,
    pub ports: Vec<(PortKey, ClassResult)>,
    /// Built-in protocol (app id) → category id.
    pub protocol_categories: [u16; app::BUILTIN_COUNT as usize],
    pub report: CompileReport,
    /// Where the domains came from, in the order they were read (the first listing of a
    /// domain wins): `explain` finds the file and line of the entry that matched here.
    pub domain_sources: Vec<DomainSource>,
}

/// One place domains are listed: a `domains = [...]` of the policy file, or a list file.
/// Only what is small is kept: list files are read again when an entry's line is asked
/// for (a UT1 list holds millions of lines the daemon need not keep as text).
#[derive(Debug, Clone)]
pub struct DomainSource {
    pub category: u16,
    /// The application, 0 for a category's own domains.
    pub app: u16,
    pub origin: DomainOrigin,
}

#[derive(Debug, Clone)]
pub enum DomainOrigin {
    /// `domains = [...]` in the policy file: each normalised domain and its line.
    Inline {
        file: String,
        field: String,
        entries: Vec<(String, usize)>,
    },
    /// A list file (a directory's `domains`).
    List(std::path::PathBuf),
}

impl MatchedEntry {
    /// Finds the entry's file and line in the first of `lists` (list paths, as the
    /// policy names them) that lists it, reading them; unchanged when none does (a list
    /// edited since the policy was read).
    pub fn find_in_lists(&mut self, lists: &[std::path::PathBuf]) {
        for path in lists {
            if let Some(line) = lists::line_of(path, &self.domain) {
                self.file = Some(lists::list_file(path).display().to_string());
                self.line = Some(line);
                return;
            }
        }
    }
}

/// The listed domain a name matched, and where it is listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedEntry {
    /// The listed domain (the longest listed suffix of the name).
    pub domain: String,
    pub category: u16,
    pub app: u16,
    /// The file it is listed in: the policy file, or a list file.
    pub file: Option<String>,
    /// Its 1-based line there.
    pub line: Option<usize>,
    /// For the policy file, the field: `categories.news.domains`.
    pub field: Option<String>,
}

/// What compiling noticed that is worth telling the operator.
#[derive(Debug, Default)]
pub struct CompileReport {
    /// Domains read (inline and from lists), before de-duplication.
    pub domains_read: usize,
    /// Domains listed more than once; the first listing (in file order) wins.
    pub duplicates: usize,
    /// Different domains whose 64-bit hashes collide (astronomically rare); the first kept.
    pub collisions: Vec<(String, String)>,
    /// List lines that are not domains.
    pub list_lines_skipped: usize,
    pub list_skipped_examples: Vec<String>,
    /// No category lists the `unreadable` detection: such flows pass uncategorized.
    pub no_unreadable_category: bool,
}

/// A category or application and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub id: u16,
    pub name: String,
}

impl CompileReport {
    /// What the operator should hear about, one line each: colliding domains (one of
    /// each pair is not classified), duplicates, list lines that were not domains.
    pub fn notes(&self) -> Vec<String> {
        let mut notes: Vec<String> = self
            .collisions
            .iter()
            .map(|(kept, lost)| {
                format!(
                    "`{lost}` has the same 64-bit hash as `{kept}`, listed before it: `{kept}` \
                     is kept and `{lost}` is not classified (rename or drop one of them)"
                )
            })
            .collect();
        if self.duplicates > 0 {
            notes.push(format!(
                "{} duplicate domain listings; the first listing (applications, then \
                 categories in file order) decides",
                self.duplicates
            ));
        }
        if self.list_lines_skipped > 0 {
            notes.push(format!(
                "{} list lines were not domains and were skipped (e.g. {})",
                self.list_lines_skipped,
                self.list_skipped_examples.join(", ")
            ));
        }
        if self.no_unreadable_category {
            notes.push(
                "no category lists protocols = [\"unreadable\"]: connections whose first bytes \
                 look like TLS or HTTP but cannot be read (what evasion tools make) pass as \
                 uncategorized; the council default blocks them at work"
                    .to_owned(),
            );
        }
        notes
    }
}

impl ClassTables {
    pub fn category_id(&self, name: &str) -> Option<u16> {
        self.category_by_name.get(name).copied()
    }

    /// Adds a category (in file order).
    fn push_category(&mut self, category: Named) {
        self.category_by_name
            .insert(category.name.clone(), category.id);
        self.category_by_id
            .insert(category.id, self.categories.len());
        self.categories.push(category);
    }

    /// The category ids of this policy, and 0 (uncategorized).
    pub fn category_ids(&self) -> impl Iterator<Item = u16> + '_ {
        std::iter::once(0).chain(self.categories.iter().map(|c| c.id))
    }

    /// Ids of categories an earlier policy had and this one has not: flows classified
    /// before a reload may still carry them.
    pub fn removed_category_ids(&self) -> Vec<u16> {
        self.ids
            .category_ids_except(|name| self.category_id(name).is_some())
            .collect()
    }

    /// The category's name, `uncategorized` for 0. A category an earlier policy had (a
    /// flow classified before a reload) keeps its old name.
    pub fn category_name(&self, id: u16) -> &str {
        match id {
            0 => "uncategorized",
            id => self
                .category_by_id
                .get(&id)
                .map(|index| self.categories[*index].name.as_str())
                .or_else(|| self.ids.category_name(id))
                .unwrap_or("unknown-category"),
        }
    }

    /// The application's name: a policy app (also one an earlier policy had), a built-in
    /// protocol, or `unknown`.
    pub fn app_name(&self, id: u16) -> &str {
        if id >= app::FIRST_POLICY_APP {
            self.apps
                .iter()
                .find(|a| a.id == id)
                .map(|a| a.name.as_str())
                .or_else(|| self.ids.app_name(id))
                .unwrap_or("unknown-app")
        } else {
            app::builtin_name(id).unwrap_or("unknown")
        }
    }

    /// The longest listed suffix of `name`, as the datapath finds it (used for names the
    /// daemon reads itself, such as QUIC's).
    /// The category a port rule gives (protocol, port), if any.
    pub fn port_category(&self, protocol: u8, port: u16) -> Option<u16> {
        self.ports
            .iter()
            .find(|(key, _)| key.protocol == protocol && key.port == port)
            .map(|(_, class)| class.category)
    }

    /// The listed domain `name` matches (its longest listed suffix, as the datapath finds
    /// it) and where the policy file lists it; or, when a list file does, the list files
    /// to read for its line ([`MatchedEntry::find_in_lists`]), in the order they were read
    /// (the first listing wins, and a category's own `domains` come before its lists).
    pub fn matched_entry_in_memory(
        &self,
        name: &str,
    ) -> Option<(MatchedEntry, Vec<std::path::PathBuf>)> {
        let name = domain::trim_root(name.as_bytes());
        let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
        let suffixes = std::iter::once(0)
            .chain(name.match_indices('.').map(|(i, _)| i + 1))
            .map(|start| &name[start..]);
        let (domain, entry) = suffixes
            .filter_map(|suffix| {
                Some((suffix, self.find(&domain::domain_hash(suffix.as_bytes()))?))
            })
            .next()?;
        let mut matched = MatchedEntry {
            domain: domain.to_owned(),
            category: entry.category,
            app: entry.app,
            file: None,
            line: None,
            field: None,
        };
        let mut lists = Vec::new();
        let sources = self
            .domain_sources
            .iter()
            .filter(|s| s.category == entry.category && s.app == entry.app);
        for source in sources {
            match &source.origin {
                DomainOrigin::Inline {
                    file,
                    field,
                    entries,
                } => {
                    if let Some(index) = entries.iter().position(|(d, _)| d == domain) {
                        matched.file = Some(file.clone());
                        matched.line = Some(entries[index].1);
                        matched.field = Some(format!("{field}[{index}]"));
                        return Some((matched, Vec::new()));
                    }
                }
                DomainOrigin::List(path) => lists.push(path.clone()),
            }
        }
        Some((matched, lists))
    }

    pub fn lookup(&self, name: &str) -> Option<DomainEntry> {
        let mut best = None;
        domain::for_each_suffix(name.as_bytes(), |hash| {
            if let Some(entry) = self.find(&hash) {
                best = Some(entry);
            }
        });
        best
    }

    fn find(&self, hash: &SuffixHash) -> Option<DomainEntry> {
        self.domains
            .get(&hash.key)
            .filter(|entry| entry.check == hash.check)
            .copied()
    }
}

/// Builds the tables from the parsed file. Lists are read relative to `base_dir`. Names
/// keep the ids `ids` gives them; new names get new ones.
pub fn compile(
    file: &PolicyFile,
    source: &Source<'_>,
    base_dir: &Path,
    ids: &ClassIds,
) -> Result<ClassTables, PolicyError> {
    let mut tables = ClassTables {
        ids: ids.clone(),
        ..ClassTables::default()
    };
    give_ids(&mut tables, file, source)?;
    let mut builder = DomainBuilder::default();
    // Applications first: an app's domains are more specific than a category's plain list.
    for (index, (name, section)) in file.apps.iter().enumerate() {
        let path = FieldPath::root().key("apps").key(name);
        let category = tables.category_id(&section.category).ok_or_else(|| {
            let names: Vec<&str> = tables.categories.iter().map(|c| c.name.as_str()).collect();
            source.error_at(
                &path.key("category"),
                format!(
                    "no category `{}` (categories: {})",
                    section.category,
                    names.join(", ")
                ),
            )
        })?;
        let app = tables.apps[index].id;
        let class = ClassResult {
            category,
            app,
            ..ClassResult::default()
        };
        builder.add_inline(&section.domains, class, source, &path.key("domains"))?;
        add_ports(
            &mut tables.ports,
            &section.ports,
            class,
            source,
            &path.key("ports"),
        )?;
    }
    for (index, (name, section)) in file.categories.iter().enumerate() {
        let path = FieldPath::root().key("categories").key(name);
        let class = ClassResult {
            category: tables.categories[index].id,
            ..ClassResult::default()
        };
        builder.add_inline(&section.domains, class, source, &path.key("domains"))?;
        for (i, list) in section.lists.iter().enumerate() {
            let list_path = base_dir.join(list);
            builder.sources.push(DomainSource {
                category: class.category,
                app: class.app,
                origin: DomainOrigin::List(list_path.clone()),
            });
            let contents = lists::read_list(&list_path)
                .map_err(|e| e.located(source, &path.key("lists").index(i)))?;
            builder.report.list_lines_skipped += contents.skipped;
            let room = 5usize.saturating_sub(builder.report.list_skipped_examples.len());
            builder
                .report
                .list_skipped_examples
                .extend(contents.skipped_examples.into_iter().take(room));
            for domain in contents.domains {
                builder.add(domain, class);
            }
        }
        add_ports(
            &mut tables.ports,
            &section.ports,
            class,
            source,
            &path.key("ports"),
        )?;
        for (i, protocol) in section.protocols.iter().enumerate() {
            let id = builtin_protocol(protocol).ok_or_else(|| {
                source.error_at(
                    &path.key("protocols").index(i),
                    format!(
                        "unknown protocol `{protocol}` (known: bittorrent, quic, tls, http, and \
                         unreadable: first bytes that look like TLS or HTTP but cannot be read)"
                    ),
                )
            })?;
            tables.protocol_categories[id as usize] = class.category;
        }
    }
    tables.domains = builder.table;
    tables.report = builder.report;
    tables.domain_sources = builder.sources;
    tables.report.no_unreadable_category =
        tables.protocol_categories[app::UNREADABLE as usize] == 0;
    Ok(tables)
}

/// Every category and application gets its id, in file order.
fn give_ids(
    tables: &mut ClassTables,
    file: &PolicyFile,
    source: &Source<'_>,
) -> Result<(), PolicyError> {
    for name in file.categories.keys() {
        let id = tables.ids.category(name).map_err(|e| {
            source.error_at(
                &FieldPath::root().key("categories").key(name),
                e.to_string(),
            )
        })?;
        tables.push_category(Named {
            id,
            name: name.clone(),
        });
    }
    for name in file.apps.keys() {
        let id = tables.ids.app(name).map_err(|e| {
            source.error_at(&FieldPath::root().key("apps").key(name), e.to_string())
        })?;
        tables.apps.push(Named {
            id,
            name: name.clone(),
        });
    }
    Ok(())
}

fn builtin_protocol(name: &str) -> Option<u16> {
    (1..app::BUILTIN_COUNT).find(|id| app::builtin_name(*id) == Some(name))
}

#[derive(Default)]
struct DomainBuilder {
    table: HashMap<u64, DomainEntry>,
    /// The domain behind each key, to tell duplicates from collisions.
    names: HashMap<u64, String>,
    report: CompileReport,
    sources: Vec<DomainSource>,
}

impl DomainBuilder {
    fn add_inline(
        &mut self,
        domains: &[String],
        class: ClassResult,
        source: &Source<'_>,
        path: &FieldPath,
    ) -> Result<(), PolicyError> {
        let mut entries = Vec::with_capacity(domains.len());
        for (i, raw) in domains.iter().enumerate() {
            let domain =
                list_entry(raw).map_err(|e| source.error_at(&path.index(i), e.message()))?;
            entries.push((domain.clone(), source.line_of(&path.index(i))));
            self.add(domain, class);
        }
        if !entries.is_empty() {
            self.sources.push(DomainSource {
                category: class.category,
                app: class.app,
                origin: DomainOrigin::Inline {
                    file: source.file().to_owned(),
                    field: path.to_string(),
                    entries,
                },
            });
        }
        Ok(())
    }

    fn add(&mut self, domain: String, class: ClassResult) {
        let hash = domain::domain_hash(domain.as_bytes());
        self.add_hashed(domain, hash, class);
    }

    /// [`DomainBuilder::add`] with the hash given (tests force collisions with it).
    fn add_hashed(&mut self, domain: String, hash: SuffixHash, class: ClassResult) {
        self.report.domains_read += 1;
        match self.names.entry(hash.key) {
            Entry::Occupied(existing) => {
                if *existing.get() == domain {
                    self.report.duplicates += 1;
                } else {
                    self.report
                        .collisions
                        .push((existing.get().clone(), domain));
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(domain);
                self.table.insert(
                    hash.key,
                    DomainEntry {
                        check: hash.check,
                        category: class.category,
                        app: class.app,
                    },
                );
            }
        }
    }
}

/// Port rules: `tcp/443`, `udp/6881-6889`, `tcp+udp/6969`, expanded to one entry per port.
fn add_ports(
    ports: &mut Vec<(PortKey, ClassResult)>,
    specs: &[String],
    class: ClassResult,
    source: &Source<'_>,
    path: &FieldPath,
) -> Result<(), PolicyError> {
    for (i, spec) in specs.iter().enumerate() {
        let (protocols, range) =
            parse_port_spec(spec).map_err(|e| source.error_at(&path.index(i), e))?;
        for protocol in protocols {
            for port in range.clone() {
                let rule = ClassResult {
                    method: Method::Port as u8,
                    class_flags: class_flags::PORT_PROVISIONAL,
                    ..class
                };
                ports.push((
                    PortKey {
                        protocol,
                        _pad: 0,
                        port,
                    },
                    rule,
                ));
            }
        }
    }
    Ok(())
}

fn parse_port_spec(spec: &str) -> Result<(Vec<u8>, std::ops::RangeInclusive<u16>), String> {
    let usage = || format!("`{spec}`: write a port as tcp/PORT, udp/FIRST-LAST or tcp+udp/PORT");
    let (protocols, ports) = spec.split_once('/').ok_or_else(usage)?;
    let protocols = match protocols.trim() {
        "tcp" => vec![ip_proto::TCP],
        "udp" => vec![ip_proto::UDP],
        "tcp+udp" | "udp+tcp" | "any" => vec![ip_proto::TCP, ip_proto::UDP],
        _ => return Err(usage()),
    };
    let parse = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p > 0);
    let range = match ports.split_once('-') {
        Some((first, last)) => parse(first).zip(parse(last)).ok_or_else(usage)?,
        None => {
            let port = parse(ports).ok_or_else(usage)?;
            (port, port)
        }
    };
    if range.0 > range.1 {
        return Err(format!("`{spec}`: the range runs backwards"));
    }
    Ok((protocols, range.0..=range.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_collision_keeps_the_first_domain_and_is_reported() {
        let mut builder = DomainBuilder::default();
        let class = |category| ClassResult {
            category,
            ..ClassResult::default()
        };
        let forced = domain::domain_hash(b"first.example");
        builder.add_hashed("first.example".into(), forced, class(1));
        builder.add_hashed("second.example".into(), forced, class(2));
        builder.add("first.example".into(), class(3));
        assert_eq!(builder.table.len(), 1);
        assert_eq!(
            builder.table[&forced.key].category, 1,
            "the first listed is kept"
        );
        assert_eq!(
            builder.report.collisions,
            [("first.example".to_owned(), "second.example".to_owned())]
        );
        assert_eq!(builder.report.duplicates, 1);
        let notes = builder.report.notes();
        assert!(
            notes[0].contains("`second.example`") && notes[0].contains("not classified"),
            "{notes:?}"
        );
        assert!(
            notes[1].starts_with("1 duplicate domain listings"),
            "{notes:?}"
        );
    }

    #[test]
    fn port_specs() {
        assert_eq!(parse_port_spec("tcp/443").unwrap(), (vec![6], 443..=443));
        assert_eq!(
            parse_port_spec("udp/6881-6889").unwrap(),
            (vec![17], 6881..=6889)
        );
        assert_eq!(parse_port_spec("tcp+udp/6969").unwrap().0, vec![6, 17]);
        for bad in ["443", "sctp/1", "tcp/0", "tcp/70000", "tcp/9-1", "tcp/x"] {
            assert!(parse_port_spec(bad).is_err(), "{bad}");
        }
    }
}
