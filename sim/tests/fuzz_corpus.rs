//! Runs each fuzz target's body on stable, over its committed inputs: the seed corpus in
//! `fuzz/corpus/<target>/` and the minimized crash reproducers in
//! `fuzz/regressions/<target>/`. The nightly equivalent is
//! `cargo +nightly fuzz run <target> fuzz/corpus/<target> -- -runs=0`. Targets whose
//! body is in `hvguest_io::fuzzing` run in `io/tests/fuzz_corpus.rs`.

use hvguest_sim::fuzz::{self, run_committed};

/// Every target in `fuzz/fuzz_targets/` with its body in `hvguest_sim::fuzz`; each has
/// a test below.
const TARGETS: &[&str] = &[
    "freezer",
    "journal",
    "kvp_machine",
    "kvp_message",
    "pool_file",
    "recording",
    "scenario",
    "vss_app",
    "vss_hooks",
    "vss_machine",
    "vss_message",
];

#[test]
fn freezer() {
    run_committed("freezer", fuzz::freezer);
}

#[test]
fn kvp_message() {
    run_committed("kvp_message", fuzz::kvp_message);
}

#[test]
fn pool_file() {
    run_committed("pool_file", fuzz::pool_file);
}

#[test]
fn kvp_machine() {
    run_committed("kvp_machine", fuzz::kvp_machine);
}

#[test]
fn journal() {
    run_committed("journal", fuzz::journal);
}

#[test]
fn scenario() {
    run_committed("scenario", fuzz::scenario);
}

#[test]
fn recording() {
    run_committed("recording", fuzz::recording);
}

#[test]
fn vss_app() {
    run_committed("vss_app", fuzz::vss_app);
}

#[test]
fn vss_hooks() {
    run_committed("vss_hooks", fuzz::vss_hooks);
}

#[test]
fn vss_machine() {
    run_committed("vss_machine", fuzz::vss_machine);
}

#[test]
fn vss_message() {
    run_committed("vss_message", fuzz::vss_message);
}

/// The point of running the KVP machine against the simulated file system: most seeds
/// must get past recovery to answering requests and to durable changes, or the target
/// fuzzes start-up alone.
#[test]
fn kvp_machine_seeds_reach_serving_and_persistence() {
    let (corpus, _) = fuzz::committed_inputs("kvp_machine");
    let (mut recovered, mut served, mut persisted) = (0, 0, 0);
    for path in &corpus {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let reach = fuzz::kvp_machine_reach(&data);
        recovered += usize::from(reach.recovered);
        served += usize::from(reach.served);
        persisted += usize::from(reach.persisted);
    }
    let n = corpus.len();
    println!(
        "kvp_machine seeds: {n}; recovered {recovered}, served {served}, persisted {persisted}"
    );
    assert!(recovered * 10 >= n * 9, "{recovered} of {n} recovered");
    assert!(served * 2 >= n, "{served} of {n} served");
    assert!(persisted * 2 >= n, "{persisted} of {n} persisted");
}

/// The journal seeds are real entries (built by `fuzz/gen_corpus.py` as the code encodes
/// them): if the layout drifts, the fuzzer starts from nothing but checksum failures.
#[test]
fn journal_seeds_hold_valid_entries() {
    let (corpus, _) = fuzz::committed_inputs("journal");
    let with_entries = corpus
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            !hvguest_core::kvp::journal::parse_journal(&data)
                .entries
                .is_empty()
        })
        .count();
    assert!(
        with_entries >= 6,
        "{with_entries} journal seeds parse to entries"
    );
}

/// A new fuzz target must get a test here (or, with its body in `hvguest_io::fuzzing`,
/// in `io/tests/fuzz_corpus.rs`), or its corpus is never run on stable.
#[test]
fn every_fuzz_target_is_covered() {
    assert_eq!(
        fuzz::targets_calling("hvguest_sim::fuzz"),
        TARGETS,
        "fuzz/fuzz_targets/ and TARGETS disagree"
    );
    let in_io = fuzz::targets_calling("hvguest_io::fuzzing").len();
    let dir = fuzz::fuzz_dir().join("fuzz_targets");
    let count = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .count();
    assert_eq!(
        count,
        TARGETS.len() + in_io,
        "a target calls neither crate's body"
    );
}
