//! The README's commands keep working: every cargo target that a script in `scripts/` or `.ci/`
//! names (`--bin X`, `--example X`, `--test X`, `--bench X`) exists in the workspace, so deleting
//! a file a script needs fails the test run instead of the first newcomer's tour.
//!
//! The targets are taken from `cargo metadata`, which knows every target cargo would build
//! (auto-discovered files and `[[bench]]`-style entries alike).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET_KINDS: [&str; 4] = ["bin", "example", "test", "bench"];

/// `(kind, name)` of every target in the workspace.
fn workspace_targets() -> BTreeSet<(String, String)> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut targets = BTreeSet::new();
    for package in metadata["packages"].as_array().unwrap() {
        for target in package["targets"].as_array().unwrap() {
            for kind in target["kind"].as_array().unwrap() {
                targets.insert((
                    kind.as_str().unwrap().to_string(),
                    target["name"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    targets
}

/// Every `--bin X` / `--example X` / `--test X` / `--bench X` (also `--bin=X`) in `text`, with
/// the line it is on. Shell variables (`$X`) are not targets and are skipped.
fn named_targets(text: &str) -> Vec<(String, String, usize)> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let code = line.split(" #").next().unwrap_or_default();
        if code.trim_start().starts_with('#') {
            continue;
        }
        let words: Vec<&str> = code.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            for kind in TARGET_KINDS {
                let flag = format!("--{kind}");
                let name = if *word == flag {
                    words.get(i + 1).copied()
                } else {
                    word.strip_prefix(&format!("{flag}="))
                };
                let Some(name) = name else { continue };
                let name = name.trim_matches(|c| c == '"' || c == '\'' || c == ';');
                if !name.is_empty() && !name.starts_with('-') && !name.contains('$') {
                    found.push((kind.to_string(), name.to_string(), index + 1));
                }
            }
        }
    }
    found
}

fn script_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["scripts", ".ci"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_cargo_target_a_script_names_exists() {
    let targets = workspace_targets();
    let mut named = 0;
    let mut missing = Vec::new();
    for file in script_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (kind, name, line) in named_targets(&text) {
            named += 1;
            if !targets.contains(&(kind.clone(), name.clone())) {
                missing.push(format!(
                    "{}:{line}: --{kind} {name} is not a target of this workspace",
                    file.display()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "scripts name cargo targets that do not exist (restore them or fix the script):\n{}",
        missing.join("\n")
    );
    // The quickstart alone names the sdl binary and its example: the scan must see them.
    assert!(named >= 2, "found only {named} target names in the scripts");
}

#[test]
fn target_names_are_found_in_every_spelling() {
    let text = "cargo build --release --quiet --bin sdl --example show_changes\n\
                # cargo bench --bench commented_out\n\
                cargo test --test=wal --bench \"e2e\" # --example trailing_comment\n\
                cargo bench --bench \"$BENCH\"\n";
    let found: Vec<(String, String)> = named_targets(text)
        .into_iter()
        .map(|(kind, name, _)| (kind, name))
        .collect();
    let expected = [
        ("bin", "sdl"),
        ("example", "show_changes"),
        ("test", "wal"),
        ("bench", "e2e"),
    ]
    .map(|(k, n)| (k.to_string(), n.to_string()));
    assert_eq!(found, expected);
}
