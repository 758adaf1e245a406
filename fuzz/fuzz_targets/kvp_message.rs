//! One 7430-byte device message, or any other length, into the KVP wire decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_sim::fuzz::kvp_message(data);
});
