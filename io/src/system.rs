//! The running system's own defaults, from its crate (`hvguest-io-freebsd` on FreeBSD,
//! `hvguest-io-linux` elsewhere): the KVP device and its message layout, and where the
//! KVP daemon's files live. Written once here so the daemon, `hvkvp` and their flags'
//! defaults agree.

#[cfg(target_os = "freebsd")]
use hvguest_io_freebsd::{kvp_device, paths};
#[cfg(not(target_os = "freebsd"))]
use hvguest_io_linux::{kvp_device, paths};

use hvguest_core::kvp::wire::Layout;

/// The KVP character device.
pub const KVP_DEVICE: &str = kvp_device::PATH;
/// Its message layout.
pub const KVP_LAYOUT: Layout = kvp_device::LAYOUT;
/// The pool directory.
pub const POOL_DIR: &str = paths::POOL_DIR;
/// `kvp.conf`.
pub const KVP_CONFIG: &str = paths::KVP_CONFIG;
/// Where `hv_set_ifconfig` lives.
pub const SCRIPTS_DIR: &str = paths::SCRIPTS_DIR;
/// The KVP daemon's pidfile.
pub const KVP_PIDFILE: &str = paths::KVP_PIDFILE;
