//! One 64-byte VSS device message, or any other length, into the VSS READ decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_sim::fuzz::vss_message(data);
});
