//! Any bytes: the body turns them into reads, effect results and time for the VSS
//! application helper's machine (see `hvguest_sim::fuzz::vss_app`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_sim::fuzz::vss_app(data);
});
