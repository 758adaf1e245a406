//! Effects: what the KVP machine asks its driver to do, and what the driver answers.
//!
//! Each effect is plain data executed literally (the production driver against real
//! files, the simulator against `SimFs`) and answered with exactly one
//! [`EffectResult`] carrying the same [`EffectId`]. Effects belong to a [`Lane`]; the
//! machine keeps at most one effect in flight per lane, so the driver can run each lane
//! on one thread, in order, and a stuck file system blocks only the file lane.

use std::time::Duration;

use crate::kvp::addresses::NamedAdapter;
use crate::kvp::auto::SystemInfo;
use crate::kvp::ip::{IpConfig, Mac};
use crate::kvp::wire::PoolId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct EffectId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum FileKind {
    /// `.kvp_pool_N`, shared with other programs.
    Pool,
    /// `.kvp_pool_N.journal`, ours alone.
    Journal,
}

/// A file the driver keeps open: created on first use with mode 0600.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct FileId {
    pub pool: PoolId,
    pub kind: FileKind,
}

impl FileId {
    pub fn pool(pool: PoolId) -> FileId {
        FileId {
            pool,
            kind: FileKind::Pool,
        }
    }
    pub fn journal(pool: PoolId) -> FileId {
        FileId {
            pool,
            kind: FileKind::Journal,
        }
    }
    /// The file's name in the pool directory.
    pub fn file_name(&self) -> String {
        self.to_string()
    }
}

/// The file's name, as [`FileId::file_name`] gives it, written where it is wanted: the
/// traces and debug lines that name a file per effect need not build a string for it.
impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FileKind::Pool => write!(f, ".kvp_pool_{}", self.pool.index()),
            FileKind::Journal => write!(f, ".kvp_pool_{}.journal", self.pool.index()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Pool and journal files, in order.
    File,
    /// Interface queries and IP configuration.
    System,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Whole-file exclusive `fcntl` write lock, waiting for it (the lock other pool
    /// writers take; on FreeBSD it also excludes `flock` users).
    Lock(FileId),
    Unlock(FileId),
    /// `fstat`: answered with [`EffectResult::Stamp`].
    Stat(FileId),
    /// `pread`: answered with [`EffectResult::Data`], short at end of file.
    Read {
        file: FileId,
        offset: u64,
        len: u32,
    },
    /// `pwrite` of all the bytes.
    Write {
        file: FileId,
        offset: u64,
        data: Vec<u8>,
    },
    /// `ftruncate`, growing with zeros or cutting.
    SetLen {
        file: FileId,
        len: u64,
    },
    Fsync(FileId),
    /// Whether anyone (this process included) wrote, truncated, replaced or removed the
    /// file since the previous `TakeWrites` of it, consuming that news: answered with
    /// [`EffectResult::Writes`]. Lets a read skip the `Stat` and a mutation the reload
    /// when nothing happened: the kernel queues the news inside the writer's own system
    /// call (inotify, kqueue `EVFILT_VNODE`; docs/protocol/kvp.md §10), so a write that
    /// finished before this effect ran is always in its answer, however coarse the
    /// file system's timestamps.
    TakeWrites(FileId),
    /// Addresses, gateways, DNS and DHCP state of every interface whose link-layer
    /// address is this MAC, in the kernel's order (at most `MAX_ADAPTER_CANDIDATES`;
    /// loopback has no MAC). Answered with [`EffectResult::Adapters`]; the machine
    /// chooses among them (`AddressSelection::choose`).
    QueryAdapter(Mac),
    /// Apply a validated configuration: the driver runs the configured script with the
    /// values as separate arguments (on Linux, where NetworkManager runs, writes its
    /// keyfile and runs `nmcli` instead) and kills what it runs at `deadline` (chosen by
    /// the machine to leave time to answer). Answered with `Done` or `Failed`, or for an
    /// [`Adapter::Guid`](crate::kvp::ip::Adapter::Guid) no interface has,
    /// `NoSuchAdapter`.
    ApplyIpConfig {
        config: IpConfig,
        deadline: Duration,
    },
}

impl Effect {
    pub fn lane(&self) -> Lane {
        match self {
            Effect::QueryAdapter(_) | Effect::ApplyIpConfig { .. } => Lane::System,
            _ => Lane::File,
        }
    }

    /// Whether the effect never waits on a suspended or frozen file system, so a driver
    /// may run it on its event loop instead of handing it to the file lane's thread
    /// (the thread hop is most of a GET's cost). A `Stat` is a name lookup and an
    /// attribute read: FreeBSD's write suspension stops only callers of
    /// `vn_start_write`, and Linux's freeze only callers of `sb_start_write`, neither of
    /// which a stat is (docs/protocol/vss.md §1.3 and §1.4). The lane
    /// is idle whenever the machine issues a file effect (one in flight per lane), so
    /// running it elsewhere races with nothing. Only the stat itself never waits: a
    /// driver that does more for it (opening a file that replaced the one it holds)
    /// does that part on the lane.
    ///
    /// `TakeWrites` only drains the driver's own event queue (a non-blocking `read` of
    /// an inotify descriptor, a `kevent` with a zero timeout): no file system is entered.
    pub fn never_waits(&self) -> bool {
        matches!(self, Effect::Stat(_) | Effect::TakeWrites(_))
    }
}

/// The answer to [`Effect::TakeWrites`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum WriteNews {
    /// Nobody wrote the file since the previous `TakeWrites` of it.
    Quiet,
    /// Someone (possibly we) wrote it since, or the driver cannot tell which file an
    /// event was for (an overflowed queue): reported for every file then.
    Written,
    /// The driver watches nothing (no watch could be set up, or a tool that lives for
    /// one command): the machine relies on file stamps alone, as without this effect.
    NotWatched,
}

/// What identifies a file's contents cheaply: the length and a token the driver derives
/// from the inode, modification and change times. Equal stamps mean "nobody changed it".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct FileStamp {
    pub len: u64,
    pub change: u64,
}

/// An errno, kept as a number (the core does not interpret it beyond logging).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct IoError(pub i32);

impl IoError {
    /// No such file (2 on FreeBSD and Linux alike): a tool that only reads opens files
    /// without creating them, and a missing one is an answer, not a failure.
    pub const ENOENT: IoError = IoError(2);
    pub const EIO: IoError = IoError(5);
    pub const ENOSPC: IoError = IoError(28);
    pub const ETIMEDOUT: IoError = IoError(60);
    /// The driver answered with a result of the wrong kind: a driver bug, kept as a value.
    pub const WRONG_RESULT: IoError = IoError(-1);
}

impl IoError {
    /// The errno's symbolic name, for the numbers FreeBSD and Linux share (1 to 34 but
    /// 11, the historical Unix table both kept) and the ones the core itself reports;
    /// `None` for the others, whose names differ between systems.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            4 => "EINTR",
            5 => "EIO",
            6 => "ENXIO",
            7 => "E2BIG",
            8 => "ENOEXEC",
            9 => "EBADF",
            10 => "ECHILD",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            15 => "ENOTBLK",
            16 => "EBUSY",
            17 => "EEXIST",
            18 => "EXDEV",
            19 => "ENODEV",
            20 => "ENOTDIR",
            21 => "EISDIR",
            22 => "EINVAL",
            23 => "ENFILE",
            24 => "EMFILE",
            25 => "ENOTTY",
            26 => "ETXTBSY",
            27 => "EFBIG",
            28 => "ENOSPC",
            29 => "ESPIPE",
            30 => "EROFS",
            31 => "EMLINK",
            32 => "EPIPE",
            33 => "EDOM",
            34 => "ERANGE",
            // The core's own deadline error (FreeBSD's number).
            60 => "ETIMEDOUT",
            _ => return None,
        })
    }
}

/// The errno by name (`EIO`, `ENOSPC`), as administrators look them up; a number the
/// core cannot name portably as `errno N`.
impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (*self, self.name()) {
            (IoError::WRONG_RESULT, _) => f.write_str("a result of the wrong kind"),
            (_, Some(name)) => f.write_str(name),
            (IoError(n), None) => write!(f, "errno {n}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum EffectResult {
    Done,
    Stamp(FileStamp),
    Data(Vec<u8>),
    /// The answer to `TakeWrites`.
    Writes(WriteNews),
    /// Every interface holding the MAC asked for, possibly none.
    Adapters(Vec<NamedAdapter>),
    /// The answer to `ApplyIpConfig` for a GUID no interface's device has (Linux):
    /// nothing was changed.
    NoSuchAdapter,
    Failed(IoError),
}

/// Everything that can happen to the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// One read from the device (a message of the layout's size when the kernel
    /// behaves).
    DeviceRead(Vec<u8>),
    /// The driver closed the device after a read or write error and opened it again
    /// (docs/protocol/linux.md §1.3): register again.
    DeviceReopened,
    EffectDone {
        id: EffectId,
        result: EffectResult,
    },
    SystemInfo(SystemInfo),
    /// The deadline from `poll_timeout` passed (an early one is harmless).
    Timer,
    /// SIGTERM/SIGINT: finish what was started, then exit.
    Shutdown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_the_pools_names() {
        for p in PoolId::ALL {
            assert_eq!(FileId::pool(p).to_string(), p.file_name());
            assert_eq!(
                FileId::journal(p).to_string(),
                format!("{}.journal", p.file_name())
            );
        }
    }
}
