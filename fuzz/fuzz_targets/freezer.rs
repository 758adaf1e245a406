//! The freezer's stdin (the daemon's command lines) with UFSSUSPEND results, timers and
//! closed pipes, into `FreezerCore` and its line codec.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hvguest_sim::fuzz::freezer(data);
});
