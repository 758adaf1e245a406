//! Which kernel the daemons talk to. FreeBSD's and Linux's Hyper-V drivers carry the same
//! host protocol through different device messages: KVP's differ in size, registration
//! and one offset (`kvp::wire`), VSS's in everything (`vss::wire`). Each protocol adds
//! its own methods to this one type, so that a daemon, the simulator and a recording
//! name the kernel once.

/// Which kernel's devices the messages are for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Layout {
    /// FreeBSD's `/dev/hv_kvp_dev`, `/dev/hv_fsvss_dev` (docs/protocol/kvp.md,
    /// docs/protocol/vss.md).
    #[default]
    FreeBsd,
    /// Linux's `/dev/vmbus/hv_kvp`, `/dev/vmbus/hv_vss` (docs/protocol/linux.md §1, §2).
    Linux,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::FreeBsd => "freebsd",
            Layout::Linux => "linux",
        }
    }

    /// Whether, after a device read or write fails or the device is closed under it,
    /// a daemon closes it, opens it again and registers anew instead of exiting:
    /// Linux's kernel tears a device's channel down when the integration service is
    /// switched off and on or the guest hibernates, and forgets the daemon until it
    /// registers again (docs/protocol/linux.md §1.3, §2.4). The pause between attempts
    /// is `limits::device_reopen_pause`. FreeBSD's daemons exit as before, to be
    /// started again by rc(8) or devd(8).
    pub const fn reopens_after_error(self) -> bool {
        matches!(self, Layout::Linux)
    }

    pub fn from_name(name: &str) -> Option<Layout> {
        match name {
            "freebsd" => Some(Layout::FreeBsd),
            "linux" => Some(Layout::Linux),
            _ => None,
        }
    }
}
