//! A short deterministic-simulation run inside `cargo test`: fixed seeds with faults,
//! and a determinism check (the same seed gives the same trace, byte for byte).
//! `cargo xtask sim` runs thousands of seeds; this keeps every `cargo test` honest.

use hvguest_sim::fs::SimFs;
use hvguest_sim::world::{SimOptions, World};

fn run(seed: u64, requests: u64) -> hvguest_sim::world::Stats {
    let opts = SimOptions {
        seed,
        requests,
        faults: true,
        keep_trace: false,
    };
    match World::new(opts, SimFs::new()).run_random() {
        Ok(stats) => stats,
        Err(f) => panic!(
            "seed {seed} failed: {}\nrerun: cargo xtask sim --seed {seed} --requests {requests}\n{}",
            f.violation,
            f.tail.join("\n")
        ),
    }
}

#[test]
fn fixed_seeds_with_faults_hold_every_invariant() {
    let mut crashes = 0;
    let mut faults = 0;
    for seed in 1..=40 {
        let s = run(seed, 400);
        assert_eq!(s.requests, 400);
        crashes += s.crashes;
        faults += s.faults;
    }
    // The fault schedule really injected faults.
    assert!(
        crashes > 20 && faults > 20,
        "crashes {crashes}, faults {faults}"
    );
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    for seed in [3, 17, 4242] {
        let a = run(seed, 300);
        let b = run(seed, 300);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert!(a.trace_lines > 1000);
    }
    assert_ne!(run(5, 300).trace_hash, run(6, 300).trace_hash);
}
