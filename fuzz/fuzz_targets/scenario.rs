//! The text of a simulator scenario (`scenarios/**/*.scn`) into the scenario parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_sim::fuzz::scenario(data);
});
