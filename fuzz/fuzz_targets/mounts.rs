//! A mount table, as `/proc/self/mounts` and as the emulated format, into both parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_io::fuzzing::mounts(data);
});
