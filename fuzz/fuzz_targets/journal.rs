//! The bytes of a redo journal (`.kvp_pool_N.journal`) into the journal parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_sim::fuzz::journal(data);
});
