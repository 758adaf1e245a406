//! hvguest-io-linux: what only Linux provides to the daemons, and nothing else.
//!
//! The shared driver (`hvguest-io`) calls these for the real system; each is the
//! thinnest wrapper of one Linux interface. Every parser of a Linux format compiles
//! everywhere, so tests and fuzzing run it on any host (docs/protocol/linux.md).

pub mod freeze;
pub mod kvp_device;
pub mod mounts;
pub mod net;
pub mod nic;
pub mod paths;
pub mod vss_device;
