//! What the VSS machines ask their drivers to do, and what comes back.

use std::time::Duration;

use crate::kvp::effect::{EffectId, IoError};
use crate::vss::hooks::HookEntry;
use crate::vss::policy::{Fsid, Mount};

/// The errno a driver answers a hook it refuses to run with (`EPERM`, the same on
/// FreeBSD and Linux).
pub const HOOK_REFUSED: IoError = IoError(1);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VssEffect {
    /// `getmntinfo`: answered with `Mounts`.
    ListMounts,
    /// The hook directory's entries with owner and mode: answered with `Hooks`.
    ListHooks,
    /// Run a configured command with this argv: stdin/stdout/stderr redirected, its own
    /// process group, killed at `deadline`. Answered with `Exit`.
    Run {
        argv: Vec<String>,
        deadline: Duration,
    },
    /// Run the hook `name` of the hook directory `dir` with one argument, as `Run` does.
    /// The driver checks again that the directory may hold hooks, opens the entry
    /// without following a link, judges what it opened by `hooks::judge` and runs that
    /// very file (`fexecve`), so that what was judged is what runs. One it refuses is
    /// answered `Exit(NotStarted(EPERM))`.
    RunHook {
        dir: String,
        name: String,
        arg: String,
        deadline: Duration,
    },
    /// `zpool sync POOL...`, killed at `deadline`. Answered with `Exit`.
    ZpoolSync {
        pools: Vec<String>,
        deadline: Duration,
    },
    /// `zfs snapshot -r SNAPSHOT` (`pool@name`), killed at `deadline`. Answered with `Exit`.
    ZfsSnapshot {
        snapshot: String,
        deadline: Duration,
    },
    /// `zfs list -H -o name -t snapshot -d 1 POOL`: the pool's own snapshots (not its
    /// children's), killed at `deadline`, at most `VSS_MAX_LISTED_SNAPSHOTS` names read.
    /// Answered with `Snapshots`, or `Exit` if it failed. Only ever asked for outside a
    /// freeze, to prune.
    ListSnapshots { pool: String, deadline: Duration },
    /// `zfs destroy -r SNAPSHOT` (`pool@name`, one of ours chosen by `prune::select`;
    /// `-r` because `zfs snapshot -r` made one of that name in every child dataset too),
    /// killed at `deadline`. Answered with `Exit`. Only ever asked for outside a freeze.
    ZfsDestroy {
        snapshot: String,
        deadline: Duration,
    },
    /// To the freezer: open `/dev/ufssuspend` for this mount and UFSSUSPEND it: the file
    /// system `fsid` when the mount table gave one (the one planned, even if the path
    /// now leads elsewhere), else the one at `mount`. The freezer resumes everything by
    /// itself after `auto_thaw_after` (and never later than `VSS_MAX_FROZEN` after its
    /// first suspension), even if we hang.
    Suspend {
        mount: String,
        fsid: Option<Fsid>,
        auto_thaw_after: Duration,
    },
    /// To the freezer: close every suspend descriptor (the kernel resumes each).
    ResumeAll,
    /// The freezer does not answer: kill it (its exit resumes everything) and report
    /// `FreezerExited`.
    KillFreezer,
    /// To the freezer: are you there? `Done` if it still holds its suspensions, `Failed`
    /// if it has gone (the pipe to it is closed). It also moves its own auto-thaw to
    /// `auto_thaw_after` from now (a FREEZE while frozen starts the watchdog again).
    PingFreezer { auto_thaw_after: Duration },
}

/// How a program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// Killed at its deadline.
    TimedOut,
    /// It could not be started.
    NotStarted(IoError),
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum VssResult {
    Mounts(Vec<Mount>),
    Hooks(Vec<HookEntry>),
    /// Full snapshot names (`pool@name`), as `zfs list` printed them.
    Snapshots(Vec<String>),
    Exit(ExitStatus),
    Done,
    Failed(IoError),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VssInput {
    /// One READ of the device: its bytes (FreeBSD: 64; Linux: 12, or the 4 of the
    /// registration's answer), and the real-time clock (ns since the
    /// epoch) when it was read, to tell how much of the kernel's 15 s is left (the
    /// kernel's msgid is the real-time clock when the host's message arrived).
    DeviceRead {
        bytes: Vec<u8>,
        realtime_ns: u64,
    },
    EffectDone {
        id: EffectId,
        result: VssResult,
    },
    Timer,
    /// The freezer process ended: the kernel resumed everything it held.
    FreezerExited,
    /// SIGTERM: thaw if frozen, then exit.
    Shutdown,
    /// Reading the device failed or its other side closed it: no request will come any
    /// more. The machine thaws if frozen (thaw hooks included), then exits.
    DeviceFailed(IoError),
    /// Writing this answer (the bytes of a `DeviceWrite`) failed: the kernel never saw
    /// it. A lost OK to FREEZE thaws at once: the host will time the FREEZE out and may
    /// never send its THAW.
    AnswerLost {
        bytes: Vec<u8>,
        error: IoError,
    },
    /// The device failed and was opened again (Linux: the integration service switched
    /// off and on, hibernation). The machine registers again; what it owed the closed
    /// device is never written.
    DeviceReopened,
}
