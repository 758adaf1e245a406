//! The bytes of a FreeBSD `NET_RT_DUMP` sysctl into the default-gateway parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_io::fuzzing::route_dump(data);
});
