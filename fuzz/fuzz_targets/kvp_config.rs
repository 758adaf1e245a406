//! The bytes of `kvp.conf` into its parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_io::fuzzing::kvp_config(data);
});
