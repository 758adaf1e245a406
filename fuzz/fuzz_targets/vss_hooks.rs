//! Any bytes, read as hook-directory entries, into hook selection.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_sim::fuzz::vss_hooks(data);
});
