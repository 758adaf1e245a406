//! Runs each fuzz target's body on stable, over its committed inputs: the seed corpus in
//! `fuzz/corpus/<target>/` and the minimized crash reproducers in
//! `fuzz/regressions/<target>/`. The nightly equivalent is
//! `cargo +nightly fuzz run <target> fuzz/corpus/<target> -- -runs=0`.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use hvguest_sim::fuzz;

/// Every target in `fuzz/fuzz_targets/`; each has a test below.
const TARGETS: &[&str] = &["kvp_machine", "kvp_message", "pool_file"];

#[test]
fn kvp_message() {
    run_target("kvp_message", fuzz::kvp_message);
}

#[test]
fn pool_file() {
    run_target("pool_file", fuzz::pool_file);
}

#[test]
fn kvp_machine() {
    run_target("kvp_machine", fuzz::kvp_machine);
}

/// A new fuzz target must get a test here too, or its corpus is never run on stable.
#[test]
fn every_fuzz_target_is_covered() {
    let mut found: Vec<String> = inputs(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    found.sort();
    assert_eq!(found, TARGETS, "fuzz/fuzz_targets/ and TARGETS disagree");
}

fn run_target(target: &str, body: fn(&[u8])) {
    let corpus = inputs(&fuzz_dir().join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ has no inputs, so this test would check nothing"
    );
    let regressions = inputs(&fuzz_dir().join("regressions").join(target));
    for path in corpus.iter().chain(&regressions) {
        let data = fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        if panic::catch_unwind(|| body(&data)).is_err() {
            panic!(
                "fuzz target {target} panicked on {} ({} bytes)",
                path.display(),
                data.len()
            );
        }
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The regular, non-hidden files in `dir` (so `.gitkeep` is skipped), sorted by name;
/// none if `dir` does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(err) => panic!("list {}: {err}", dir.display()),
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap_or_else(|err| panic!("list {}: {err}", dir.display())))
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .map(|entry| entry.path())
        .collect();
    files.sort();
    files
}
