//! Where the daemons' files live on Linux (docs/protocol/linux.md §1.5: the stock
//! daemon's pool directory; the FHS for the rest).

/// The pool files, where every Linux reader of them looks (`/var/lib/hyperv`).
pub const POOL_DIR: &str = "/var/lib/hyperv";
/// `kvp.conf`.
pub const KVP_CONFIG: &str = "/etc/hvguest/kvp.conf";
/// `hv_set_ifconfig`.
pub const SCRIPTS_DIR: &str = "/usr/libexec/hvguest";
/// The KVP daemon's pidfile.
pub const KVP_PIDFILE: &str = "/run/hv_kvp_daemon.pid";
/// `vss.conf`.
pub const VSS_CONFIG: &str = "/etc/hvguest/vss.conf";
/// The VSS daemon's pidfile.
pub const VSS_PIDFILE: &str = "/run/hv_vss_daemon.pid";
/// The record of the file systems frozen now (docs/protocol/linux.md §2.5): on `/run`,
/// a tmpfs, never on a file system we freeze.
pub const FROZEN_RECORD: Option<&str> = Some("/run/hvguest/vss-frozen");
