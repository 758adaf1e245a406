//! hvguest-sim: the deterministic simulator and test harness for `hvguest-core`.
//!
//! One seed decides everything: the PRNG ([`prng`]) is our own and forked per
//! component; time is virtual; the file system ([`fs`]) keeps durable and volatile bytes
//! apart and crashes on command; the daemon ([`daemon`]) is the real core executing its
//! effects against it.

pub mod daemon;
pub mod emulator;
pub mod fs;
pub mod fuzz;
pub mod harness;
pub mod host;
pub mod host_wire;
pub mod kernel;
pub mod linux_vss;
pub mod linux_vss_emulator;
pub mod linux_vss_kernel;
pub mod network;
pub mod prng;
pub mod realtime;
pub mod recording;
pub mod scenario;
pub mod tool;
pub mod trace;
pub mod vss;
pub mod vss_emulator;
pub mod vss_kernel;
pub mod vss_model;
pub mod world;
