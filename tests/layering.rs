//! The module layers of `docs/architecture.md`, checked on the source: every
//! top-level module of `src/` (and `smtp::proto`, the sans-IO core) may
//! import only modules of a lower layer, so the modules form no cycle.
//!
//! A failure names the file and the module it may not import: move the
//! code down, or let the lower module declare a small trait that the
//! composition root (`daemon`) supplies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each module's layer: a module may import modules of lower layers only.
const LAYERS: &[(&str, u8)] = &[
    // Leaves: plain values, no I/O of their own beyond what they own.
    ("time", 0),
    ("text", 0),
    ("stdout", 0),
    ("accept", 0),
    ("service", 0),
    ("config", 1),
    ("shutdown", 1),
    ("logging", 2),
    ("tls", 2),
    ("descriptors", 2),
    ("metrics", 3),
    ("workers", 3),
    // Pure logic.
    ("smtp::proto", 4),
    ("routing", 5),
    // I/O.
    ("dns", 6),
    ("health", 7),
    ("smtp", 8),
    ("http", 8),
    // Subsystems.
    ("cluster", 9),
    ("lft", 10),
    // Composition root, then what runs it.
    ("daemon", 11),
    ("admin", 12),
    ("demo", 13),
    ("cli", 14),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The module a file belongs to: `smtp::proto` for `src/smtp/proto/...`,
/// else the top-level module (`src/lib.rs` and `src/main.rs`: none).
fn owner(path: &Path, src: &Path) -> Option<String> {
    let relative = path.strip_prefix(src).ok()?;
    let parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    match parts.as_slice() {
        [root] if root == "lib" || root == "main" => None,
        [smtp, proto, ..] if smtp == "smtp" && proto == "proto" => Some("smtp::proto".into()),
        [first, ..] => Some(first.clone()),
        [] => None,
    }
}

/// The modules `text` names through `crate::`: `crate::a::b` and the
/// members of `crate::{a, b::c}`; `smtp::proto` when named as such.
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        // `mxgate::crate::` cannot occur; skip `$crate::` in macros.
        if text[..at].ends_with('$') {
            continue;
        }
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                found.extend(path_module(item.trim()));
            }
        } else {
            found.extend(path_module(rest));
        }
    }
    found
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn split_top_level(text: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// `a::b::...` -> `a`, or `smtp::proto` for `smtp::proto::...`.
fn path_module(path: &str) -> Option<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let first = ident(path);
    if first.is_empty() {
        return None;
    }
    let after = &path[first.len()..];
    if first == "smtp"
        && let Some(rest) = after.strip_prefix("::")
        && (ident(rest) == "proto" || rest.trim_start().starts_with("{proto"))
    {
        return Some("smtp::proto".into());
    }
    Some(first)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every (file, importing module, imported module) across modules.
fn edges(src: &Path) -> Vec<(String, String, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut edges = Vec::new();
    for file in files {
        let Some(from) = owner(&file, src) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read file");
        // Comments (doc links included) are no imports.
        let text: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let name = file
            .strip_prefix(src.parent().expect("root"))
            .expect("path");
        for to in imports(&text) {
            if to != from && !(from == "smtp::proto" && to == "smtp") {
                edges.push((name.display().to_string(), from.clone(), to));
            }
        }
    }
    edges
}

#[test]
fn every_module_imports_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut forbidden = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for (file, from, to) in edges(&src) {
        // `smtp` owns `smtp::proto`: the parent may use its child.
        if from == "smtp" && to == "smtp::proto" {
            continue;
        }
        match (layer(&from), layer(&to)) {
            (Some(a), Some(b)) if b < a => {}
            (Some(_), Some(_)) => {
                forbidden.insert((file, to));
            }
            _ => {
                unknown.insert(format!("{file}: {from} -> {to}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules without a layer (add them to LAYERS and docs/architecture.md): {unknown:#?}"
    );
    assert!(
        forbidden.is_empty(),
        "imports against the layers of docs/architecture.md (file, module it may not import): {forbidden:#?}"
    );
}

#[test]
fn the_top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, from, to) in edges(&src) {
        graph.entry(from).or_default().insert(to);
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        let cycle = visit(node, &graph, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap_or_default().join(" -> ")
        );
    }
}

#[test]
fn imports_are_read_from_paths_and_groups() {
    let text = "use crate::config::{self, Config};\nuse crate::{health, smtp::proto::Reply, smtp::server};\nlet x = crate::time::now(); $crate::metrics";
    let got: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(got, ["config", "health", "smtp", "smtp::proto", "time"]);
}

/// `cluster/api.rs` holds the control plane's wire types and imports no
/// handler code: of the cluster, only the plain data types (`types`, and
/// the replicated state of `engine::state`).
#[test]
fn the_cluster_wire_types_import_no_handler_code() {
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cluster/api.rs");
    let text = std::fs::read_to_string(&api).expect("read src/cluster/api.rs");
    let handlers: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .flat_map(|l| l.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')))
        .filter_map(|path| {
            let rest =
                (path.strip_prefix("super::")).or_else(|| path.strip_prefix("crate::cluster::"))?;
            let module = rest.split("::").next()?;
            let is_module = rest.contains("::") && module.starts_with(char::is_lowercase);
            let data = module == "types" || rest.starts_with("engine::state::");
            (is_module && !data).then_some(module)
        })
        .collect();
    assert!(
        handlers.is_empty(),
        "src/cluster/api.rs imports cluster modules {handlers:?}; it may use only the data types"
    );
}
