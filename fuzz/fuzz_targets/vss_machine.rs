//! Any bytes: the body turns them into reads, effect results and time for the VSS
//! file-system daemon's machine (see `hvguest_sim::fuzz::vss_machine`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_sim::fuzz::vss_machine(data);
});
