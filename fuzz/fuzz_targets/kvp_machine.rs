//! Any bytes: the body turns them into events for the KVP state machine
//! (see `hvguest_sim::fuzz::kvp_machine`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_sim::fuzz::kvp_machine(data);
});
