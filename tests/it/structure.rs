//! The tree shows the design (issue 14): data moves one way, so no module imports one that imports
//! it back; no function takes a parameter list long enough to need clippy's
//! `too_many_arguments` allowance; and no source file grows past 600 lines without saying at its
//! top why it is long. These read the source files (`src/`, `wal/src/`), not the binary: they fail
//! the moment a change reintroduces an upward import, wherever it is.
//!
//! Imports are read from the code outside comments and outside `#[cfg(test)]` modules (a test may
//! use anything). Two graphs are checked: between the crate's top-level modules (`crate::x`), and
//! between sibling modules inside each directory (`super::x`, `crate::parent::x`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longer files must say why at their top, in a line containing this.
const LONG_FILE_REASON: &str = "This file is long because";
const MAX_LINES: usize = 600;

struct SourceFile {
    path: PathBuf,
    /// The module path inside its crate: `source/decode/mod.rs` is `["source", "decode"]`.
    module: Vec<String>,
    /// The code outside comments and `#[cfg(test)]` modules.
    code: String,
    lines: usize,
    header: String,
}

fn source_files(root: &Path) -> Vec<SourceFile> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(root, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().with_extension("");
            let mut module: Vec<String> = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|last| last == "mod") {
                module.pop();
            }
            SourceFile {
                lines: text.lines().count(),
                header: text
                    .lines()
                    .take_while(|line| line.starts_with("//!") || line.trim().is_empty())
                    .collect::<Vec<_>>()
                    .join("\n"),
                code: code_outside_comments_and_tests(&text),
                module,
                path,
            }
        })
        .collect()
}

/// The text up to the first `#[cfg(test)]` at the start of a line (test modules sit at the end
/// of a file by convention here), without `//` comments.
fn code_outside_comments_and_tests(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let without_comment = match line.find("//") {
            // Not inside a string literal on that line: an odd number of quotes before it.
            Some(at) if line[..at].matches('"').count() % 2 == 0 => &line[..at],
            _ => line,
        };
        code.push_str(without_comment);
        code.push('\n');
    }
    code
}

/// The first path segment after each `prefix` in `code`, including each member of a
/// `prefix{a, b::c}` group.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        // `prefix` must start a path, not end another identifier (`my_super::`).
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        rest = &rest[at + prefix.len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        start = false;
                        let name = ident(&group[i..]);
                        if !name.is_empty() {
                            names.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// Every cycle found by a depth-first search, as the list of nodes around it.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, bool>,
        stack: &mut Vec<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        state.insert(node.to_string(), true);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(true) => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    found.push(cycle);
                }
                Some(false) => {}
                None => visit(next, graph, state, stack, found),
            }
        }
        stack.pop();
        state.insert(node.to_string(), false);
    }
    let mut state = BTreeMap::new();
    let mut found = Vec::new();
    for node in graph.keys() {
        if !state.contains_key(node.as_str()) {
            visit(node, graph, &mut state, &mut Vec::new(), &mut found);
        }
    }
    found
}

fn import_cycles(files: &[SourceFile]) -> Vec<String> {
    let is_module = |path: &[String]| files.iter().any(|f| f.module == path);
    let mut problems = Vec::new();

    // Between top-level modules.
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files.iter().filter(|f| !f.module.is_empty()) {
        let own = &file.module[0];
        let targets = names_after(&file.code, "crate::")
            .into_iter()
            .filter(|name| name != own && is_module(std::slice::from_ref(name)));
        top.entry(own.clone()).or_default().extend(targets);
    }
    for cycle in cycles(&top) {
        problems.push(format!(
            "top-level modules import each other: {}",
            cycle.join(" → ")
        ));
    }

    // Between siblings inside each directory.
    let parents: BTreeSet<Vec<String>> = files
        .iter()
        .filter(|f| f.module.len() >= 2)
        .map(|f| f.module[..f.module.len() - 1].to_vec())
        .collect();
    for parent in parents {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in files
            .iter()
            .filter(|f| f.module.len() == parent.len() + 1 && f.module.starts_with(&parent))
        {
            let own = file.module.last().unwrap();
            let absolute = format!("crate::{}::", parent.join("::"));
            let mut names = names_after(&file.code, &absolute);
            names.extend(names_after(&file.code, "super::"));
            let siblings = names.into_iter().filter(|name| {
                name != own && {
                    let mut path = parent.clone();
                    path.push(name.clone());
                    is_module(&path)
                }
            });
            graph.entry(own.clone()).or_default().extend(siblings);
        }
        for cycle in cycles(&graph) {
            problems.push(format!(
                "modules inside {} import each other: {}",
                parent.join("::"),
                cycle.join(" → ")
            ));
        }
    }
    problems
}

fn crate_roots() -> Vec<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![workspace.join("src"), workspace.join("wal/src")]
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut problems = Vec::new();
    for root in crate_roots() {
        let files = source_files(&root);
        assert!(files.len() > 5, "no source files under {}", root.display());
        problems.extend(
            import_cycles(&files)
                .into_iter()
                .map(|p| format!("{}: {p}", root.display())),
        );
    }
    assert!(
        problems.is_empty(),
        "import cycles:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_parameter_list_needs_a_clippy_allowance_and_long_files_say_why() {
    let mut problems = Vec::new();
    for root in crate_roots() {
        for file in source_files(&root) {
            if file.code.contains("too_many_arguments") {
                problems.push(format!(
                    "{}: allows clippy::too_many_arguments (pass a context struct)",
                    file.path.display()
                ));
            }
            if file.lines > MAX_LINES && !file.header.contains(LONG_FILE_REASON) {
                problems.push(format!(
                    "{}: {} lines, and its header does not say why (\"{LONG_FILE_REASON} ...\")",
                    file.path.display(),
                    file.lines
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checks themselves: a cycle planted in a small tree is found, and so is one hidden in a
/// `use crate::{a, b}` group; comments and test modules are not imports.
#[test]
fn the_import_check_finds_a_planted_cycle_and_ignores_comments() {
    let file = |module: &[&str], text: &str| SourceFile {
        path: PathBuf::from(module.join("/")),
        module: module.iter().map(|s| s.to_string()).collect(),
        code: code_outside_comments_and_tests(text),
        lines: text.lines().count(),
        header: String::new(),
    };
    let acyclic = vec![
        file(&["event"], "pub struct Event;"),
        file(&["source"], "use crate::event::Event; // see crate::sink\n"),
        file(
            &["sink"],
            "use crate::{event::Event, source};\n#[cfg(test)]\nmod tests { use crate::service; }",
        ),
        file(&["service"], "use crate::sink;"),
    ];
    assert_eq!(import_cycles(&acyclic), Vec::<String>::new());

    let mut cyclic = acyclic;
    cyclic.push(file(
        &["source", "ingest"],
        "use crate::{config, service::run};",
    ));
    let problems = import_cycles(&cyclic);
    assert_eq!(
        problems,
        vec!["top-level modules import each other: service → sink → source → service".to_string()]
    );

    let siblings = vec![
        file(&["source"], ""),
        file(&["source", "decode"], "use super::gtid::Position;"),
        file(&["source", "gtid"], "use crate::source::decode::feed;"),
    ];
    assert_eq!(
        import_cycles(&siblings),
        vec!["modules inside source import each other: decode → gtid → decode".to_string()]
    );
}

/// Log targets are a stable interface (docs/operations.md, "Logs"): every log line in `src/`
/// names one of the documented targets, whichever file it moved to.
#[test]
fn every_log_line_uses_a_documented_target() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let operations = std::fs::read_to_string(workspace.join("docs/operations.md")).unwrap();
    let logs_section = &operations[operations.find("## Logs").unwrap()..];
    let logs_section = &logs_section[..logs_section[3..].find("\n## ").unwrap()];
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for file in source_files(&workspace.join("src")) {
        // The binary's root (main.rs) logs under the crate's name.
        let module = match file.module.as_slice() {
            [root] if root == "main" || root == "lib" => "sdl".to_string(),
            path => format!("sdl::{}", path.join("::")),
        };
        let code = &file.code;
        for mac in ["trace!(", "debug!(", "info!(", "warn!(", "error!("] {
            let mut rest = code.as_str();
            while let Some(at) = rest.find(mac) {
                let word_start = rest[..at]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
                rest = &rest[at + mac.len()..];
                if !word_start {
                    continue;
                }
                let target = match rest.trim_start().strip_prefix("target: \"") {
                    Some(t) => t[..t.find('"').unwrap()].to_string(),
                    None => module.clone(),
                };
                if !logs_section.contains(&format!("`{target}`")) {
                    problems.push(format!(
                        "{}: a log line with target {target}, which docs/operations.md (\"Logs\") does not name; give it its stage's target (`target: \"sdl::...\"`)",
                        file.path.display()
                    ));
                }
                seen.insert(target);
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        seen.contains("sdl::source") && seen.contains("sdl::forward"),
        "{seen:?}"
    );
}
