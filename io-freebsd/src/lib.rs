//! hvguest-io-freebsd: what only FreeBSD provides to the daemons, and nothing else.
//!
//! The shared driver (`hvguest-io`: the mio loops, lanes, pool files, programs,
//! logging, the emulated devices, `hvkvp`) calls these for the real system. Each
//! function is the thinnest wrapper of one FreeBSD interface; the system calls sit
//! behind `cfg(target_os = "freebsd")` (type-checked by `cargo xtask check-freebsd`),
//! and every parser of a FreeBSD format compiles everywhere, so tests and fuzzing run
//! it on any host.

pub mod kvp_device;
pub mod mounts;
pub mod net;
pub mod paths;
pub mod ufs;
pub mod vss_device;
