//! Runs the fuzz targets whose body is in `hvguest_io::fuzzing` on stable, over their
//! committed inputs (the other targets run in `sim/tests/fuzz_corpus.rs`, which also
//! checks that every target is covered by one of the two).

use hvguest_io::fuzzing;
use hvguest_sim::fuzz::{run_committed, targets_calling};

#[test]
fn vss_config() {
    run_committed("vss_config", fuzzing::vss_config);
}

#[test]
fn kvp_config() {
    run_committed("kvp_config", fuzzing::kvp_config);
}

#[test]
fn mounts() {
    run_committed("mounts", fuzzing::mounts);
}

#[test]
fn resolv_conf() {
    run_committed("resolv_conf", fuzzing::resolv_conf);
}

#[test]
fn proc_route() {
    run_committed("proc_route", fuzzing::proc_route);
}

#[test]
fn route_dump() {
    run_committed("route_dump", fuzzing::route_dump);
}

/// A target whose body is in `hvguest_io::fuzzing` must get a test here.
#[test]
fn every_io_target_has_a_test() {
    assert_eq!(
        targets_calling("hvguest_io::fuzzing"),
        [
            "kvp_config",
            "mounts",
            "proc_route",
            "resolv_conf",
            "route_dump",
            "vss_config"
        ]
    );
}
