//! Where the KVP daemon's files live on Linux (docs/protocol/linux.md §1.5: the stock
//! daemon's pool directory; the FHS for the rest).

/// The pool files, where every Linux reader of them looks (`/var/lib/hyperv`).
pub const POOL_DIR: &str = "/var/lib/hyperv";
/// `kvp.conf`.
pub const KVP_CONFIG: &str = "/etc/hvguest/kvp.conf";
/// `hv_set_ifconfig`.
pub const SCRIPTS_DIR: &str = "/usr/libexec/hvguest";
/// The KVP daemon's pidfile.
pub const KVP_PIDFILE: &str = "/run/hv_kvp_daemon.pid";
