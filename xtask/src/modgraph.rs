//! `cargo xtask modgraph`: the daemon's module graph, drawn (docs/module-graph.svg) and
//! checked: import circles between modules and imports that run up the layers of
//! docs/architecture.md.
//!
//! Why not `cargo-modules`: it is built on rust-analyzer's crates (hundreds of them, minutes of
//! compiling on every fresh CI machine) to resolve names we do not need resolved. Imports
//! between our own modules are spelled `crate::…`, `super::…` or `self::…` (the lints keep
//! glob imports out), so reading them with `syn` finds every edge; Graphviz draws the result.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use syn::visit::Visit;

/// The library crate whose modules are drawn and checked.
const CRATE_SRC: &str = "classifier-user/src";

/// The daemon's layers, top first (docs/architecture.md): a module may import from its own
/// layer's neighbours only where no circle results, and from any layer below; never from
/// one above.
const LAYERS: &[(&str, &[&str])] = &[
    ("command line", &["cli"]),
    ("daemon", &["daemon", "service", "control"]),
    (
        "daemon parts",
        &[
            "in_force",
            "events",
            "recorder",
            "metrics",
            "shaping",
            "loader",
            "export",
            "replay",
            "list_import",
        ],
    ),
    (
        "flows and records",
        &[
            "flows",
            "store",
            "degradation",
            "tables",
            "bpf_maps",
            "quic",
            "bittorrent",
            "netns",
            "netlink",
            "preflight",
            "kernel_features",
        ],
    ),
    ("policy", &["policy"]),
];

/// A module's path below the crate root: `["policy", "lists"]`.
type ModPath = Vec<String>;

/// One `use` or path from module `from` into module `to` (both top-level or one level down).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: ModPath,
    to: ModPath,
    /// Where the import is written: file and line.
    site: String,
}

/// What the graph shows: its edges, the circles among them and the upward imports.
pub struct Findings {
    edges: Vec<Edge>,
    circles: Vec<Vec<String>>,
    upward: Vec<Edge>,
    unlayered: BTreeSet<String>,
}

impl Findings {
    pub fn is_clean(&self) -> bool {
        self.circles.is_empty() && self.upward.is_empty() && self.unlayered.is_empty()
    }

    /// The findings as text, one line each, with where the import is written.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let modules: BTreeSet<_> = self
            .edges
            .iter()
            .flat_map(|e| [&e.from[0], &e.to[0]])
            .collect();
        let _ = writeln!(
            out,
            "{} modules, {} imports between top-level modules",
            modules.len(),
            self.top_level_edges().len()
        );
        for module in &self.unlayered {
            let _ = writeln!(
                out,
                "module `{module}` is in no layer (xtask/src/modgraph.rs)"
            );
        }
        for circle in &self.circles {
            let _ = writeln!(out, "import circle: {}", circle.join(" -> "));
            for edge in self.edges_within(circle) {
                let _ = writeln!(
                    out,
                    "    {} -> {} at {}",
                    edge.from.join("::"),
                    edge.to.join("::"),
                    edge.site
                );
            }
        }
        for edge in &self.upward {
            let _ = writeln!(
                out,
                "upward import: {} (layer {}) uses {} (layer {}) at {}",
                edge.from[0],
                layer_name(&edge.from[0]).unwrap_or("?"),
                edge.to[0],
                layer_name(&edge.to[0]).unwrap_or("?"),
                edge.site
            );
        }
        out
    }

    /// Distinct (from, to) pairs of top-level modules.
    fn top_level_edges(&self) -> BTreeSet<(&str, &str)> {
        self.edges
            .iter()
            .filter(|e| e.from[0] != e.to[0])
            .map(|e| (e.from[0].as_str(), e.to[0].as_str()))
            .collect()
    }

    /// The imports between members of one circle (named by their `::` paths).
    fn edges_within<'a>(&'a self, circle: &'a [String]) -> impl Iterator<Item = &'a Edge> + 'a {
        let members: BTreeSet<&str> = circle.iter().map(String::as_str).collect();
        let mut seen = BTreeSet::new();
        self.edges.iter().filter(move |e| {
            let (from, to) = node_names(e);
            from != to
                && members.contains(from.as_str())
                && members.contains(to.as_str())
                && seen.insert((from, to))
        })
    }

    /// The graph in Graphviz's language: one row per layer, circles and upward imports red.
    pub fn dot(&self) -> String {
        let bad: BTreeSet<(String, String)> = self
            .circles
            .iter()
            .flat_map(|c| self.edges_within(c).map(node_names))
            .chain(self.upward.iter().map(node_names))
            .collect();
        let mut out = String::from(
            "digraph modules {\n  rankdir=TB;\n  node [shape=box, fontname=\"sans-serif\"];\n",
        );
        let modules: BTreeSet<&str> = self
            .edges
            .iter()
            .flat_map(|e| [e.from[0].as_str(), e.to[0].as_str()])
            .collect();
        for (index, (name, members)) in LAYERS.iter().enumerate() {
            let _ = writeln!(
                out,
                "  subgraph layer{index} {{ rank=same; label=\"{name}\";"
            );
            for member in members.iter().filter(|m| modules.contains(**m)) {
                let _ = writeln!(out, "    \"{member}\";");
            }
            out.push_str("  }\n");
        }
        for (from, to) in self.top_level_edges() {
            let colour = if bad.contains(&(from.to_owned(), to.to_owned())) {
                "red"
            } else {
                "gray40"
            };
            let _ = writeln!(out, "  \"{from}\" -> \"{to}\" [color={colour}];");
        }
        out.push_str("}\n");
        out
    }
}

/// A circle is drawn between top-level modules, or between submodules of one module.
fn node_names(edge: &Edge) -> (String, String) {
    if edge.from[0] == edge.to[0] {
        (edge.from.join("::"), edge.to.join("::"))
    } else {
        (edge.from[0].clone(), edge.to[0].clone())
    }
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, members)| members.contains(&module))
}

fn layer_name(module: &str) -> Option<&'static str> {
    layer_of(module).map(|index| LAYERS[index].0)
}

/// Reads the crate under `root` and finds its circles and upward imports.
pub fn analyse(root: &Path) -> anyhow::Result<Findings> {
    let src = root.join(CRATE_SRC);
    let files = module_files(&src)?;
    let modules: BTreeSet<ModPath> = files.iter().map(|(path, _)| path.clone()).collect();
    let mut edges = BTreeSet::new();
    for (module, file) in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let syntax =
            syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        let mut collector = PathCollector {
            module: module.clone(),
            inline: Vec::new(),
            found: Vec::new(),
        };
        collector.visit_file(&syntax);
        let site_file = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (target, line) in collector.found {
            let Some(to) = owning_module(&target, &modules) else {
                continue;
            };
            let (from, to) = comparable(module, &to);
            if from != to && !from.is_empty() && !to.is_empty() {
                edges.insert(Edge {
                    from,
                    to,
                    site: format!("{site_file}:{line}"),
                });
            }
        }
    }
    let edges: Vec<Edge> = edges.into_iter().collect();
    let unlayered = edges
        .iter()
        .flat_map(|e| [&e.from[0], &e.to[0]])
        .filter(|m| layer_of(m).is_none())
        .cloned()
        .collect();
    let upward = edges
        .iter()
        .filter(
            |e| matches!((layer_of(&e.from[0]), layer_of(&e.to[0])), (Some(f), Some(t)) if t < f),
        )
        .cloned()
        .collect();
    Ok(Findings {
        circles: circles(&edges),
        upward,
        unlayered,
        edges,
    })
}

/// Two modules as the graph compares them: their top-level modules when those differ,
/// else their submodules one level down (`policy::lists` against `policy::classes`); a
/// module and its own parent or child are one node.
fn comparable(from: &ModPath, to: &ModPath) -> (ModPath, ModPath) {
    if from.first() != to.first() {
        return (
            from[..1.min(from.len())].to_vec(),
            to[..1.min(to.len())].to_vec(),
        );
    }
    if from.len() < 2 || to.len() < 2 {
        return (Vec::new(), Vec::new());
    }
    (from[..2].to_vec(), to[..2].to_vec())
}

/// Strongly connected components of more than one node (Tarjan), each as its node names.
fn circles(edges: &[Edge]) -> Vec<Vec<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for edge in edges {
        let (from, to) = node_names(edge);
        graph.entry(to.clone()).or_default();
        graph.entry(from).or_default().insert(to);
    }
    let mut tarjan = Tarjan {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !tarjan.index.contains_key(node.as_str()) {
            tarjan.visit(node);
        }
    }
    tarjan.found
}

struct Tarjan<'a> {
    graph: &'a BTreeMap<String, BTreeSet<String>>,
    index: BTreeMap<&'a str, usize>,
    low: BTreeMap<&'a str, usize>,
    stack: Vec<&'a str>,
    on_stack: BTreeSet<&'a str>,
    next: usize,
    found: Vec<Vec<String>>,
}

impl<'a> Tarjan<'a> {
    fn visit(&mut self, node: &'a str) {
        self.index.insert(node, self.next);
        self.low.insert(node, self.next);
        self.next += 1;
        self.stack.push(node);
        self.on_stack.insert(node);
        for next in &self.graph[node] {
            let next = next.as_str();
            if !self.index.contains_key(next) {
                self.visit(next);
                let low = self.low[node].min(self.low[next]);
                self.low.insert(node, low);
            } else if self.on_stack.contains(next) {
                let low = self.low[node].min(self.index[next]);
                self.low.insert(node, low);
            }
        }
        if self.low[node] == self.index[node] {
            let mut component = Vec::new();
            while let Some(member) = self.stack.pop() {
                self.on_stack.remove(member);
                component.push(member.to_owned());
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                self.found.push(component);
            }
        }
    }
}

/// The longest module path that `target` (a path below the crate root) starts with.
fn owning_module(target: &[String], modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    (1..=target.len())
        .rev()
        .map(|len| target[..len].to_vec())
        .find(|prefix| modules.contains(prefix))
}

/// Every module file below `src` with its module path (`lib.rs` is the root; `main.rs` and
/// `bin/` are binaries, which use the library by its crate name).
fn module_files(src: &Path) -> anyhow::Result<Vec<(ModPath, PathBuf)>> {
    let mut files = Vec::new();
    let mut pending = vec![src.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let relative = path.strip_prefix(src).expect("below src");
            if path.is_dir() {
                if relative != Path::new("bin") {
                    pending.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || relative == Path::new("main.rs") {
                continue;
            }
            let mut module: ModPath = relative
                .with_extension("")
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            files.push((module, path));
        }
    }
    files.sort();
    Ok(files)
}

/// Collects every path that names something in this crate (`use crate::…`, `super::…`,
/// `self::…`, and such paths written in code), resolved to a path below the crate root.
struct PathCollector {
    /// The file's module.
    module: ModPath,
    /// Inline modules (`mod tests { … }`) entered within the file.
    inline: Vec<String>,
    /// Resolved targets with the line they are written on.
    found: Vec<(Vec<String>, usize)>,
}

impl PathCollector {
    fn here(&self) -> ModPath {
        self.module.iter().chain(&self.inline).cloned().collect()
    }

    /// Resolves `segments` (as written) to a path below the crate root, if it starts at
    /// `crate`, `super` or `self`.
    fn resolve(&self, segments: &[String]) -> Option<Vec<String>> {
        let mut base = match segments.first()?.as_str() {
            "crate" => Vec::new(),
            "self" | "super" => self.here(),
            _ => return None,
        };
        let mut rest = if segments[0] == "crate" {
            &segments[1..]
        } else {
            segments
        };
        while let Some(first) = rest.first() {
            match first.as_str() {
                "super" => {
                    base.pop()?;
                }
                "self" => {}
                _ => break,
            }
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn record(&mut self, segments: &[String], line: usize) {
        if let Some(target) = self.resolve(segments) {
            self.found.push((target, line));
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, line: usize) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree, line);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                prefix.push(name.ident.to_string());
                self.record(prefix, line);
                prefix.pop();
            }
            syn::UseTree::Rename(rename) => {
                prefix.push(rename.ident.to_string());
                self.record(prefix, line);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.record(prefix, line),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree, line);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for PathCollector {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if item.content.is_some() {
            self.inline.push(item.ident.to_string());
            syn::visit::visit_item_mod(self, item);
            self.inline.pop();
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let line = item.use_token.span.start().line;
        self.use_tree(&mut Vec::new(), &item.tree, line);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let line = path
            .segments
            .first()
            .map_or(0, |s| s.ident.span().start().line);
        self.record(&segments, line);
        syn::visit::visit_path(self, path);
    }
}

/// `cargo xtask modgraph`: prints the findings, writes docs/module-graph.dot and .svg;
/// with `check`, fails on any circle or upward import.
pub fn run(root: &Path, check: bool) -> anyhow::Result<()> {
    let findings = analyse(root)?;
    print!("{}", findings.report());
    let dot_path = root.join("docs/module-graph.dot");
    std::fs::write(&dot_path, findings.dot())
        .with_context(|| format!("writing {}", dot_path.display()))?;
    let svg_path = root.join("docs/module-graph.svg");
    let status = Command::new("dot")
        .arg("-Tsvg")
        .arg(&dot_path)
        .arg("-o")
        .arg(&svg_path)
        .status()
        .context("running Graphviz's `dot` (installed by `cargo xtask setup`)")?;
    if !status.success() {
        bail!("`dot` failed to draw {}: {status}", dot_path.display());
    }
    eprintln!("drew {} from {}", svg_path.display(), dot_path.display());
    if check && !findings.is_clean() {
        bail!("the module graph has circles or upward imports (listed above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: &str, to: &str) -> Edge {
        Edge {
            from: from.split("::").map(String::from).collect(),
            to: to.split("::").map(String::from).collect(),
            site: String::new(),
        }
    }

    #[test]
    fn a_circle_of_three_is_found_and_a_chain_is_not() {
        let chain = [edge("cli", "daemon"), edge("daemon", "flows")];
        assert!(circles(&chain).is_empty());
        let circle = [
            edge("daemon", "recorder"),
            edge("recorder", "metrics"),
            edge("metrics", "daemon"),
            edge("daemon", "flows"),
        ];
        assert_eq!(
            circles(&circle),
            vec![vec!["daemon", "metrics", "recorder"]]
        );
    }

    #[test]
    fn submodules_of_one_module_form_their_own_circles() {
        let edges = [
            edge("policy::lists", "policy::classes"),
            edge("policy::classes", "policy::lists"),
        ];
        assert_eq!(
            circles(&edges),
            vec![vec!["policy::classes", "policy::lists"]]
        );
    }

    #[test]
    fn super_and_crate_paths_resolve_from_the_module_they_are_written_in() {
        let collector = PathCollector {
            module: vec!["policy".into(), "lists".into()],
            inline: vec!["tests".into()],
            found: Vec::new(),
        };
        let path = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
        assert_eq!(
            collector.resolve(&path("super::super::classes::Class")),
            Some(path("policy::classes::Class"))
        );
        assert_eq!(
            collector.resolve(&path("crate::flows::Key")),
            Some(path("flows::Key"))
        );
        assert_eq!(collector.resolve(&path("std::fs")), None);
    }

    #[test]
    fn a_module_and_its_own_child_are_one_node() {
        let (from, to) = comparable(
            &vec!["policy".into()],
            &vec!["policy".into(), "lists".into()],
        );
        assert!(from.is_empty() && to.is_empty());
    }

    #[test]
    fn an_import_from_a_lower_layer_upward_is_reported() {
        assert!(layer_of("flows") > layer_of("daemon"));
        assert!(layer_of("policy") > layer_of("flows"));
    }
}
