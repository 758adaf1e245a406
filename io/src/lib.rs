//! hvguest-io: the production drivers. They own the devices, files, clock, threads and
//! signals, feed the core's machines and execute their effects literally; no protocol
//! decision is made here. FreeBSD-only code sits behind `cfg(target_os = "freebsd")`;
//! everything else also runs on Linux against emulated devices, for tests.

pub mod actions;
pub mod clock;
pub mod conf;
pub mod device;
pub mod files;
pub mod freezer;
#[doc(hidden)]
pub mod fuzzing;
pub mod kvp_config;
pub mod kvp_daemon;
pub mod lanes;
pub mod logging;
pub mod mounts;
pub mod pool_access;
pub mod process;
pub mod programs;
pub mod recorder;
pub mod self_test;
pub mod set_ip;
pub mod signals;
pub mod sysinfo;
pub mod system;
pub mod vss_config;
pub mod vss_daemon;
pub mod vss_device;
pub mod watch;
