//! Where things are in a policy file: every error names the file, the line and the field
//! (e.g. `apps.youtube.category`), whether the TOML parser or our validation found it.

use std::{ops::Range, path::Path};

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

/// A key path into the document: `categories.streaming-video.domains[3]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    pub fn root() -> Self {
        Self::default()
    }

    /// This path with `.key` appended.
    pub fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    /// This path with `[index]` appended.
    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A problem in a policy file, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {field}: {message}")]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The field's key path, or `(file)` for the file as a whole.
    pub field: String,
    pub message: String,
}

/// The text of a policy file and its spanned syntax tree.
pub struct Source<'a> {
    file: String,
    text: &'a str,
    tree: Option<Spanned<DeValue<'a>>>,
    /// Where each line starts: `policy check` locates a warning for each of tens of
    /// thousands of categories, and counting lines from the top for each would take time
    /// in proportion to their square.
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub fn new(file: &Path, text: &'a str) -> Self {
        Self {
            file: file.display().to_string(),
            text,
            tree: Some(document_tree(text)),
            line_starts: line_starts(text),
        }
    }

    /// The file's name, as messages give it.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// An error at `path` (its value's position, or the file's start when it has none).
    pub fn error_at(&self, path: &FieldPath, message: impl Into<String>) -> PolicyError {
        let offset = self.span_of(path).map_or(0, |span| span.start);
        self.error_at_offset(offset, path.to_string(), message.into())
    }

    /// The 1-based line of the value at `path` (1 when it has none).
    pub fn line_of(&self, path: &FieldPath) -> usize {
        let offset = self.span_of(path).map_or(0, |span| span.start);
        line_and_column(&self.line_starts, offset.min(self.text.len())).0
    }

    /// A TOML syntax or type error, with the field it is in.
    pub fn toml_error(&self, error: &toml::de::Error) -> PolicyError {
        let offset = error.span().map_or(0, |span| span.start);
        let field = self
            .path_at(offset)
            .filter(|path| !path.0.is_empty())
            .map_or_else(|| "(file)".to_owned(), |path| path.to_string());
        self.error_at_offset(offset, field, error.message().trim().to_owned())
    }

    fn error_at_offset(&self, offset: usize, field: String, message: String) -> PolicyError {
        let (line, column) = line_and_column(&self.line_starts, offset.min(self.text.len()));
        PolicyError {
            file: self.file.clone(),
            line,
            column,
            field,
            message,
        }
    }

    /// The span of the value at `path`.
    fn span_of(&self, path: &FieldPath) -> Option<Range<usize>> {
        let mut value = self.tree.as_ref()?;
        for segment in &path.0 {
            value = match (segment, value.get_ref()) {
                (Segment::Key(key), DeValue::Table(table)) => table.get(key.as_str())?,
                (Segment::Index(index), DeValue::Array(array)) => array.get(*index)?,
                // One name written for a list of names: item 0 is the value itself.
                (Segment::Index(0), _) => value,
                _ => return None,
            };
        }
        Some(value.span())
    }

    /// The deepest key path whose key or value contains `offset`. Searched over the whole
    /// tree: a table made by a `[header]` has a span that does not contain its children.
    fn path_at(&self, offset: usize) -> Option<FieldPath> {
        let mut best: Option<(FieldPath, usize)> = None;
        deepest_at(
            self.tree.as_ref()?,
            offset,
            &FieldPath::root(),
            0,
            &mut best,
        );
        best.map(|(path, _)| path)
    }
}

fn deepest_at(
    value: &Spanned<DeValue<'_>>,
    offset: usize,
    path: &FieldPath,
    depth: usize,
    best: &mut Option<(FieldPath, usize)>,
) {
    match value.get_ref() {
        DeValue::Table(table) => {
            for (key, child) in table.iter() {
                let child_path = path.key(key.get_ref());
                let hit = key.span().contains(&offset) || child.span().contains(&offset);
                keep_if_deeper(best, &child_path, depth + 1, hit);
                deepest_at(child, offset, &child_path, depth + 1, best);
            }
        }
        DeValue::Array(array) => {
            for (index, child) in array.iter().enumerate() {
                let child_path = path.index(index);
                keep_if_deeper(best, &child_path, depth + 1, child.span().contains(&offset));
                deepest_at(child, offset, &child_path, depth + 1, best);
            }
        }
        _ => {}
    }
}

fn keep_if_deeper(
    best: &mut Option<(FieldPath, usize)>,
    path: &FieldPath,
    depth: usize,
    hit: bool,
) {
    if hit && best.as_ref().is_none_or(|(_, d)| depth > *d) {
        *best = Some((path.clone(), depth));
    }
}

/// The document as one spanned table value; what parses, even around a syntax error.
fn document_tree(text: &str) -> Spanned<DeValue<'_>> {
    let (table, _errors) = DeTable::parse_recoverable(text);
    let span = table.span();
    Spanned::new(span, DeValue::Table(table.into_inner()))
}

/// The byte offset where each line of `text` starts.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(nl, _)| nl + 1))
        .collect()
}

/// 1-based line and column (in bytes) of a byte offset, given where lines start.
fn line_and_column(line_starts: &[usize], offset: usize) -> (usize, usize) {
    let line = line_starts.partition_point(|start| *start <= offset).max(1);
    (line, offset - line_starts[line - 1] + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "[site]\nname = \"x\"\n\n[categories.video]\ndomains = [\"a.example\", 42]\n";

    #[test]
    fn paths_find_their_lines() {
        let source = Source::new(Path::new("p.toml"), TEXT);
        let path = FieldPath::root()
            .key("categories")
            .key("video")
            .key("domains")
            .index(1);
        let err = source.error_at(&path, "not a domain");
        assert_eq!(
            err.to_string(),
            "p.toml:5:25: categories.video.domains[1]: not a domain"
        );
    }

    #[test]
    fn toml_errors_name_their_field() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Doc {
            categories: std::collections::BTreeMap<String, Cat>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Cat {
            domains: Vec<String>,
        }
        let text = "[categories.video]\ndomains = [\"a.example\", 42]\n";
        let err = toml::from_str::<Doc>(text).unwrap_err();
        let located = Source::new(Path::new("p.toml"), text).toml_error(&err);
        assert_eq!(located.line, 2);
        assert_eq!(located.field, "categories.video.domains[1]");
        assert!(located.message.contains("expected a string"), "{located}");
    }
}
