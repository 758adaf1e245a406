//! Linux `/proc/net/route` or `/proc/net/ipv6_route` text into both gateway parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_io::fuzzing::proc_route(data);
});
