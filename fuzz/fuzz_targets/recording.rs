//! The bytes of a recorded KVP trace into the trace-file parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_sim::fuzz::recording(data);
});
