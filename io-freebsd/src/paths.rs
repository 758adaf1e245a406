//! Where the daemons' files live on FreeBSD (hier(7), the ports tree's prefix).

/// The pool files (the stock daemon's `/var/db/hyperv/pool`).
pub const POOL_DIR: &str = "/var/db/hyperv/pool";
/// `kvp.conf`.
pub const KVP_CONFIG: &str = "/usr/local/etc/hvguest/kvp.conf";
/// `hv_set_ifconfig`.
pub const SCRIPTS_DIR: &str = "/usr/local/libexec/hvguest";
/// The KVP daemon's pidfile.
pub const KVP_PIDFILE: &str = "/var/run/hv_kvp_daemon.pid";
/// `vss.conf`.
pub const VSS_CONFIG: &str = "/usr/local/etc/hvguest/vss.conf";
/// The VSS daemon's pidfile.
pub const VSS_PIDFILE: &str = "/var/run/hv_vss_daemon.pid";
/// No record of frozen file systems: a suspension ends with its descriptor.
pub const FROZEN_RECORD: Option<&str> = None;
