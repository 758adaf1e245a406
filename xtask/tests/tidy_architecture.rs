//! ARCHITECTURE.md is the map of the code. A map that leaves out a file sends a newcomer
//! looking in the wrong place, so this test fails when a source file of a workspace crate
//! is not named on it, and when README.md or ARCHITECTURE.md still promise as "to come"
//! something the tree already has.
//!
//! A file counts as named when its path below the crate's `src/` appears in backticks
//! (`` `journal.rs` `` or `` `bin/hvkvp.rs` ``), or with its crate directory in front
//! (`` `core/src/kvp/journal.rs` ``). `lib.rs`, `main.rs` and `mod.rs` are the crates'
//! and modules' roots and need no row of their own.

use std::path::{Path, PathBuf};

/// The crates whose sources the map must cover.
const CRATES: &[&str] = &["core", "io", "io-freebsd", "io-linux", "sim", "xtask"];

/// Phrases that announce future work; the documents must describe what exists.
const PROMISES: &[&str] = &["to come", "come next", "comes next", "coming soon"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The ways the map may name `src_relative` (a path below `crate_dir/src/`).
fn spellings(crate_dir: &str, src_relative: &str) -> Vec<String> {
    let file_name = src_relative.rsplit('/').next().unwrap_or(src_relative);
    let mut names = vec![
        format!("`{src_relative}`"),
        format!("`{crate_dir}/src/{src_relative}`"),
    ];
    // A module directly in `src/` or one level down (`kvp/journal.rs`) is listed in its
    // module's table by file name alone; binaries keep their `bin/` prefix.
    if !src_relative.starts_with("bin/") {
        names.push(format!("`{file_name}`"));
    }
    names
}

#[test]
fn every_source_file_is_on_the_architecture_map() {
    let root = root();
    let map = read(&root.join("ARCHITECTURE.md"));
    let mut missing = Vec::new();
    for crate_dir in CRATES {
        let src = root.join(crate_dir).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        for file in files {
            let relative = file
                .strip_prefix(&src)
                .expect("found below src")
                .to_string_lossy()
                .replace('\\', "/");
            if ["lib.rs", "main.rs", "mod.rs"].contains(&relative.as_str())
                || relative.ends_with("/mod.rs")
            {
                continue;
            }
            if !spellings(crate_dir, &relative)
                .iter()
                .any(|s| map.contains(s.as_str()))
            {
                missing.push(format!("{crate_dir}/src/{relative}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name these source files; add a row saying what each one \
         holds to the table of its crate:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn readme_and_architecture_describe_what_exists() {
    let root = root();
    let mut found = Vec::new();
    for doc in ["README.md", "ARCHITECTURE.md"] {
        for (n, line) in read(&root.join(doc)).lines().enumerate() {
            let lower = line.to_lowercase();
            for phrase in PROMISES {
                if lower.contains(phrase) {
                    found.push(format!("{doc}:{}: \"{phrase}\": {line}", n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "say what exists today; move plans to the issue tracker:\n  {}",
        found.join("\n  ")
    );
}
