//! docs/policy.md, the policy file's reference, checked against the parser.
//!
//! The keys the parser accepts are read from the serde structs themselves: a derived
//! `Deserialize` of a struct hands its deserializer the names of all its fields (aliases
//! included) in `deserialize_struct`, and [`fields_of`] is a deserializer that only
//! records them. So a field added to a section, a section added to the file, or a key
//! removed fails here until the reference says so, with no list of keys to keep by hand.
//! What is kept by hand is [`SECTIONS`]: which documented table is which struct.
//!
//! The reference has, per section, a heading naming the table (`` ## `[site]` ``), a table
//! `| key | type | default | example | meaning |`, and a ```` ```toml ```` example. A key
//! cell holds the key and its aliases in backticks; a default or an example that is one
//! backticked value is a TOML value (a default in words, such as "required", is not
//! checked).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::{
    Policy,
    exceptions::{ExceptionSection, ExceptionsFile},
    file::{
        AppSection, BittorrentSection, CategorySection, DatapathSection, DegradationSection,
        ExportSection, PolicyFile, QuicSection, RecordsSection, ShapingSection, SiteSection,
    },
    groups::GroupSection,
    rules::RuleSection,
    schedule::{PeriodSection, ScheduleSection},
};

const REFERENCE: &str = include_str!("../../../docs/policy.md");

/// The keys a section's struct accepts.
type Keys = fn() -> &'static [&'static str];

/// Each documented table and the keys its struct accepts.
const SECTIONS: &[(&str, Keys)] = &[
    ("[site]", fields_of::<SiteSection>),
    ("[schedule]", fields_of::<ScheduleSection>),
    ("[[schedule.period]]", fields_of::<PeriodSection>),
    ("[categories.NAME]", fields_of::<CategorySection>),
    ("[apps.NAME]", fields_of::<AppSection>),
    ("[groups.NAME]", fields_of::<GroupSection>),
    ("[[rules]]", fields_of::<RuleSection>),
    ("[[exceptions]]", fields_of::<ExceptionSection>),
    ("[quic]", fields_of::<QuicSection>),
    ("[bittorrent]", fields_of::<BittorrentSection>),
    ("[shaping]", fields_of::<ShapingSection>),
    ("[records]", fields_of::<RecordsSection>),
    ("[export]", fields_of::<ExportSection>),
    ("[degradation]", fields_of::<DegradationSection>),
    ("[datapath]", fields_of::<DatapathSection>),
];

/// Keys whose example is accepted only beside another key's value: (section, key, other
/// key, its value). Checking the key's example puts the other in too.
const COMPANIONS: &[(&str, &str, &str, &str)] = &[
    (
        "[records]",
        "retention_override_reason",
        "retention",
        "\"2 years\"",
    ),
    (
        "[schedule]",
        "bank-holidays-file",
        "bank-holidays-division",
        "\"scotland\"",
    ),
    (
        "[schedule]",
        "bank-holidays-division",
        "bank-holidays-file",
        "\"bank-holidays.json\"",
    ),
];

/// The field names (aliases included) a derived `Deserialize` of struct `T` accepts.
fn fields_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    struct Introspect<'a>(&'a mut Option<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for Introspect<'_> {
        type Error = de::value::Error;

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = Some(fields);
            Err(de::Error::custom("fields recorded"))
        }

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields = None;
    let _ = T::deserialize(Introspect(&mut fields));
    fields.unwrap_or_else(|| {
        panic!(
            "{} is not a plain struct: list its keys by hand",
            std::any::type_name::<T>()
        )
    })
}

/// One documented key.
#[derive(Debug)]
struct Row {
    /// The key, then its aliases.
    names: Vec<String>,
    /// The default, when written as a TOML value.
    default: Option<String>,
    /// The example, a TOML value.
    example: String,
}

/// One documented table: `[site]`, `[categories.NAME]`, `[[rules]]`.
#[derive(Debug)]
struct Section {
    header: String,
    rows: Vec<Row>,
}

impl Section {
    /// The path to the table(s) in a document: `["categories", "NAME"]`.
    fn path(&self) -> Vec<&str> {
        self.header.trim_matches(['[', ']']).split('.').collect()
    }
}

/// The reference's tables, and its TOML examples joined into one document.
fn reference() -> (Vec<Section>, String) {
    let mut sections: Vec<Section> = Vec::new();
    // Whether the last heading named a table (rows under other headings are not keys).
    let mut in_section = false;
    let mut examples = String::new();
    let mut in_toml = false;
    let mut in_other_block = false;
    for (number, line) in REFERENCE.lines().enumerate() {
        let at = || format!("docs/policy.md:{}", number + 1);
        if in_toml || in_other_block {
            if line.starts_with("```") {
                (in_toml, in_other_block) = (false, false);
            } else if in_toml {
                examples += line;
                examples.push('\n');
            }
            continue;
        }
        if line.starts_with("```toml") {
            in_toml = true;
        } else if line.starts_with("```") {
            in_other_block = true;
        } else if line.starts_with('#') {
            let header = code_spans(line).into_iter().find(|c| c.starts_with('['));
            in_section = header.is_some();
            if let Some(header) = header {
                sections.push(Section {
                    header,
                    rows: Vec::new(),
                });
            }
        } else if in_section && line.starts_with("| `") {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(
                cells.len(),
                5,
                "{}: key | type | default | example | meaning",
                at()
            );
            let section = sections.last_mut().expect("in a section");
            let example = single_value(cells[3])
                .unwrap_or_else(|| panic!("{}: the example is not one `value`", at()));
            section.rows.push(Row {
                names: code_spans(cells[0]),
                default: single_value(cells[2]),
                example,
            });
        }
    }
    (sections, examples)
}

/// The `code` spans of a line of Markdown.
fn code_spans(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The value of a cell that is exactly one code span.
fn single_value(cell: &str) -> Option<String> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then(|| inner.to_owned())
}

/// A TOML value as written in a cell.
fn value(text: &str) -> toml::Value {
    let table: toml::Table = toml::from_str(&format!("value = {text}"))
        .unwrap_or_else(|e| panic!("`{text}` is not a TOML value: {e}"));
    table["value"].clone()
}

/// The tables at `path` in `document`: one for `[site]`, every category for
/// `[categories.NAME]`, every rule for `[[rules]]`.
fn instances<'a>(value: &'a mut toml::Value, path: &[&str]) -> Vec<&'a mut toml::Table> {
    match (path.split_first(), value) {
        (None, toml::Value::Table(table)) => vec![table],
        (None, toml::Value::Array(items)) => items
            .iter_mut()
            .filter_map(toml::Value::as_table_mut)
            .collect(),
        (Some((&"NAME", rest)), toml::Value::Table(table)) => table
            .iter_mut()
            .flat_map(|(_, child)| instances(child, rest))
            .collect(),
        (Some((key, rest)), toml::Value::Table(table)) => table
            .get_mut(*key)
            .map(|child| instances(child, rest))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The documented examples as one document, and each variant of it `change` makes of one
/// instance of `section` (one variant per instance).
fn variants(
    document: &toml::Value,
    section: &Section,
    change: impl Fn(&mut toml::Table),
) -> Vec<toml::Value> {
    let path = section.path();
    let count = instances(&mut document.clone(), &path).len();
    assert!(
        count > 0,
        "docs/policy.md: the examples have no `{}` table to try keys in",
        section.header
    );
    (0..count)
        .map(|i| {
            let mut variant = document.clone();
            let instance = instances(&mut variant, &path)
                .into_iter()
                .nth(i)
                .expect("counted");
            change(instance);
            variant
        })
        .collect()
}

/// A directory with what the examples' relative paths name (`lists = ["ut1/gambling"]`,
/// `bank-holidays-file = "bank-holidays.json"`).
struct ExampleDir(PathBuf);

impl ExampleDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "classifier-policy-reference-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let list = dir.join("ut1/gambling");
        std::fs::create_dir_all(&list).unwrap();
        std::fs::write(list.join("domains"), "casino.example\n# a comment\n").unwrap();
        std::fs::write(
            dir.join("bank-holidays.json"),
            super::bank_holidays::SHIPPED,
        )
        .unwrap();
        Self(dir)
    }
}

impl Drop for ExampleDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn parse(document: &toml::Value, dir: &Path) -> Result<Policy, super::PolicyError> {
    let text = toml::to_string(document).expect("a document serialises");
    Policy::parse(&text, Path::new("docs/policy.md (examples)"), dir)
}

fn examples_document() -> toml::Value {
    let (_, examples) = reference();
    toml::Value::Table(
        toml::from_str(&examples)
            .unwrap_or_else(|e| panic!("docs/policy.md: the examples are not TOML: {e}")),
    )
}

#[test]
fn every_key_the_parser_accepts_is_documented_and_no_other() {
    let (sections, _) = reference();
    let documented_tables: BTreeSet<&str> = sections
        .iter()
        .map(|s| s.path()[0])
        .collect::<BTreeSet<_>>();
    let file_tables: BTreeSet<&str> = fields_of::<PolicyFile>().iter().copied().collect();
    assert_eq!(
        documented_tables, file_tables,
        "docs/policy.md documents these top-level tables; the parser (PolicyFile) has those"
    );
    assert_eq!(
        fields_of::<ExceptionsFile>(),
        ["exceptions"],
        "the exceptions file holds [[exceptions]] only, as docs/policy.md says"
    );
    for section in &sections {
        let (_, fields) = SECTIONS
            .iter()
            .find(|(header, _)| *header == section.header)
            .unwrap_or_else(|| {
                panic!(
                    "docs/policy.md documents `{}`, which no parser struct is listed for in \
                     SECTIONS",
                    section.header
                )
            });
        let documented: BTreeSet<&str> = section
            .rows
            .iter()
            .flat_map(|row| row.names.iter().map(String::as_str))
            .collect();
        let accepted: BTreeSet<&str> = fields().iter().copied().collect();
        assert_eq!(
            documented, accepted,
            "`{}`: the keys docs/policy.md lists (left) and those the parser accepts (right)",
            section.header
        );
    }
    for (header, _) in SECTIONS {
        assert!(
            sections.iter().any(|s| s.header == *header),
            "docs/policy.md has no table for `{header}`"
        );
    }
}

#[test]
fn the_documented_examples_make_a_policy() {
    let dir = ExampleDir::new();
    let policy = parse(&examples_document(), &dir.0)
        .unwrap_or_else(|e| panic!("docs/policy.md's examples, as one policy: {e}"));
    // Every section's example is in it.
    assert!(!policy.rules.is_empty() && !policy.exceptions.is_empty());
}

#[test]
fn every_documented_example_is_accepted_in_its_section() {
    let dir = ExampleDir::new();
    let document = examples_document();
    let (sections, _) = reference();
    for section in &sections {
        for row in &section.rows {
            let key = &row.names[0];
            let example = value(&row.example);
            let companions: Vec<(&str, toml::Value)> = COMPANIONS
                .iter()
                .filter(|(header, of, ..)| *header == section.header && of == key)
                .map(|(_, _, other, text)| (*other, value(text)))
                .collect();
            let results: Vec<_> = variants(&document, section, |table| {
                table.insert(key.clone(), example.clone());
                for (other, value) in &companions {
                    table.insert((*other).to_owned(), value.clone());
                }
            })
            .iter()
            .map(|variant| parse(variant, &dir.0))
            .collect();
            assert!(
                results.iter().any(Result::is_ok),
                "`{}` {key} = {}: refused in every example of the section: {:?}",
                section.header,
                row.example,
                results
                    .iter()
                    .filter_map(|r| r.as_ref().err())
                    .collect::<Vec<_>>()
            );
        }
    }
}

/// Whether two variants of the examples are the same policy: the same file as parsed, or
/// (for a key whose default is applied in validation, such as `share`) the same validated
/// policy but for its hash tables, whose order differs from one build to the next. None
/// when that cannot be told (one of them does not validate).
fn same_policy(a: &toml::Value, b: &toml::Value, dir: &Path) -> Option<bool> {
    let file = |doc: &toml::Value| -> Option<String> {
        let text = toml::to_string(doc).ok()?;
        Some(format!("{:?}", toml::from_str::<PolicyFile>(&text).ok()?))
    };
    if let (Some(file_a), Some(file_b)) = (file(a), file(b))
        && file_a == file_b
    {
        return Some(true);
    }
    let validated = |doc: &toml::Value| -> Option<String> {
        let p = parse(doc, dir).ok()?;
        Some(format!(
            "{:?}",
            (
                &p.site_name,
                &p.timezone,
                &p.rules,
                &p.exceptions,
                &p.schedule,
                &p.periods,
                &p.datapath.config,
                &p.datapath.lan_prefixes,
                p.shaping,
                &p.records,
                &p.degradation,
            )
        ))
    };
    Some(validated(a)? == validated(b)?)
}

#[test]
fn every_documented_default_is_the_parsers() {
    let dir = ExampleDir::new();
    let document = examples_document();
    let (sections, _) = reference();
    let mut checked = 0;
    for section in &sections {
        for row in &section.rows {
            let Some(default) = &row.default else {
                continue;
            };
            let default_value = value(default);
            let without = variants(&document, section, |table| {
                for name in &row.names {
                    table.remove(name);
                }
            });
            let with = variants(&document, section, |table| {
                for name in &row.names {
                    table.remove(name);
                }
                table.insert(row.names[0].clone(), default_value.clone());
            });
            let compared: Vec<bool> = without
                .iter()
                .zip(&with)
                .filter_map(|(a, b)| same_policy(a, b, &dir.0))
                .collect();
            assert!(
                !compared.is_empty(),
                "`{}` {} = {default}: no example of the section parses both with and without it",
                section.header,
                row.names[0]
            );
            assert!(
                compared.iter().all(|same| *same),
                "`{}` {}: docs/policy.md says the default is {default}, the parser's differs",
                section.header,
                row.names[0]
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} defaults were checked");
}

#[test]
fn the_introspection_sees_aliases_and_renames() {
    let rule = fields_of::<RuleSection>();
    assert!(rule.contains(&"categories") && rule.contains(&"category"));
    assert!(fields_of::<ScheduleSection>().contains(&"bank-holidays"));
}
