//! The bytes of `/etc/resolv.conf` into the name-server parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_io::fuzzing::resolv_conf(data);
});
