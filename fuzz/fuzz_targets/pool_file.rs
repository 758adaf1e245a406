//! The bytes of a pool file (`.kvp_pool_N`) into the pool-file decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_sim::fuzz::pool_file(data);
});
