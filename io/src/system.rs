//! The running system's own defaults, from its crate (`hvguest-io-freebsd` on FreeBSD,
//! `hvguest-io-linux` elsewhere): the KVP and VSS devices and their message layouts,
//! and where the daemons' files live. Written once here so the daemon, `hvkvp` and their flags'
//! defaults agree.

#[cfg(target_os = "freebsd")]
use hvguest_io_freebsd::{kvp_device, paths, vss_device};
#[cfg(not(target_os = "freebsd"))]
use hvguest_io_linux::{kvp_device, paths, vss_device};

use hvguest_core::layout::Layout;

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
/// The VSS character device.
pub const VSS_DEVICE: &str = vss_device::PATH;
/// Its message layout.
pub const VSS_LAYOUT: Layout = vss_device::LAYOUT;
/// `vss.conf`.
pub const VSS_CONFIG: &str = paths::VSS_CONFIG;
/// The VSS daemon's pidfile.
pub const VSS_PIDFILE: &str = paths::VSS_PIDFILE;
/// Where a Linux freezer records what it holds frozen (none on FreeBSD).
pub const FROZEN_RECORD: Option<&str> = paths::FROZEN_RECORD;
