//! Write news for the pool files: the answer to the core's `Effect::TakeWrites`.
//!
//! The kernel tells us of every write, truncation, attribute change, removal or
//! replacement of a pool file, our own included: inotify on Linux (one descriptor,
//! watching the pool directory, events named by file), kqueue `EVFILT_VNODE` on FreeBSD
//! (one knote per held file descriptor, plus one on the directory for names that come
//! and go). Both queue the event inside the writer's own system call, before it
//! returns (docs/protocol/kvp.md §10), so draining the queue without waiting tells
//! whether any write that has finished by now touched a file. That lets a GET be
//! answered with no `stat` and a SET skip reloading the pool, with no trust in file
//! timestamps, which may be as coarse as a second.
//!
//! Nothing here blocks: the queue is read with `O_NONBLOCK` (inotify) or a zero timeout
//! (kqueue), so the daemon runs it on its event loop. When the kernel drops events (a
//! full inotify queue) every file counts as written; when the watch itself is lost, the
//! answer is `NotWatched` from then on and the core falls back on file stamps.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use hvguest_core::kvp::effect::{FileId, FileKind, WriteNews};
use hvguest_core::kvp::wire::PoolId;

/// Slots for every pool and journal file: pool index times two, plus one for a journal.
const FILES: usize = 2 * PoolId::ALL.len();

fn slot(id: FileId) -> usize {
    id.pool.index() * 2
        + match id.kind {
            FileKind::Pool => 0,
            FileKind::Journal => 1,
        }
}

/// Every file a name in the pool directory can be, for naming events.
fn every_file() -> impl Iterator<Item = FileId> {
    PoolId::ALL
        .into_iter()
        .flat_map(|p| [FileId::pool(p), FileId::journal(p)])
}

pub struct Watch {
    os: Os,
    /// A write was reported since the file's last take. Everything starts written: what
    /// happened before the watch existed is unknown.
    written: [bool; FILES],
    /// The kernel dropped the watch (the directory went away), or reading it failed:
    /// nothing more will be reported, so nothing can be said.
    lost: bool,
}

impl Watch {
    /// Sets up the watch on the pool directory `dir` (opened as `dir_fd`); the files'
    /// descriptors are added with [`Watch::held`] as they are opened.
    pub fn new(dir: &Path, dir_fd: &OwnedFd) -> io::Result<Watch> {
        Ok(Watch {
            os: Os::new(dir, dir_fd)?,
            written: [true; FILES],
            lost: false,
        })
    }

    /// A descriptor is now held for `id` (first open, or following a replacement): on
    /// FreeBSD its vnode is watched from now on. Whatever it held before we watched it
    /// is not known, so the file counts as written.
    pub fn held(&mut self, id: FileId, fd: &impl AsRawFd) {
        self.written[slot(id)] = true;
        if self.os.held(id, fd.as_raw_fd()).is_err() {
            self.lost = true;
        }
    }

    /// Whether anyone wrote `id` since its previous take, consuming that news.
    pub fn take(&mut self, id: FileId) -> WriteNews {
        if !self.lost {
            let written = &mut self.written;
            if self
                .os
                .drain(&mut |f| match f {
                    Some(f) => written[slot(f)] = true,
                    None => *written = [true; FILES],
                })
                .is_err()
            {
                self.lost = true;
            }
        }
        if self.lost {
            return WriteNews::NotWatched;
        }
        if std::mem::replace(&mut self.written[slot(id)], false) {
            WriteNews::Written
        } else {
            WriteNews::Quiet
        }
    }
}

// ---------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
struct Os {
    inotify: nix::sys::inotify::Inotify,
    /// Each file's name, to tell which one an event is for.
    names: Vec<(String, FileId)>,
}

#[cfg(target_os = "linux")]
impl Os {
    fn new(dir: &Path, dir_fd: &OwnedFd) -> io::Result<Os> {
        use nix::sys::inotify::{AddWatchFlags as W, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // The directory as it was checked, through its descriptor: the path may have
        // been replaced since; the /proc name of our descriptor cannot be.
        let by_fd = format!("/proc/self/fd/{}", dir_fd.as_raw_fd());
        let target = if Path::new(&by_fd).exists() {
            Path::new(&by_fd).to_path_buf()
        } else {
            dir.to_path_buf()
        };
        inotify.add_watch(
            &target,
            W::IN_MODIFY
                | W::IN_ATTRIB
                | W::IN_CLOSE_WRITE
                | W::IN_CREATE
                | W::IN_DELETE
                | W::IN_MOVED_FROM
                | W::IN_MOVED_TO
                | W::IN_DELETE_SELF
                | W::IN_MOVE_SELF,
        )?;
        Ok(Os {
            inotify,
            names: every_file().map(|f| (f.file_name(), f)).collect(),
        })
    }

    /// Every inotify event names its file within the watched directory: nothing to add.
    fn held(&mut self, _id: FileId, _fd: RawFd) -> io::Result<()> {
        Ok(())
    }

    /// Reads every queued event without waiting; `note(Some(f))` for a write of `f`,
    /// `note(None)` when events were lost and any file may have been written. `Err`
    /// when the watch is gone.
    fn drain(&mut self, note: &mut dyn FnMut(Option<FileId>)) -> io::Result<()> {
        use nix::sys::inotify::AddWatchFlags as W;
        for _ in 0..MAX_DRAIN_READS {
            let events = match self.inotify.read_events() {
                Ok(ev) => ev,
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if events.is_empty() {
                return Ok(());
            }
            for ev in events {
                if ev.mask.contains(W::IN_Q_OVERFLOW) {
                    note(None);
                    continue;
                }
                if ev
                    .mask
                    .intersects(W::IN_IGNORED | W::IN_DELETE_SELF | W::IN_MOVE_SELF)
                {
                    // The directory itself went: no further event will come.
                    note(None);
                    return Err(io::Error::other("the pool directory's watch was removed"));
                }
                let Some(name) = ev.name.as_ref() else {
                    continue;
                };
                if let Some((_, f)) = self
                    .names
                    .iter()
                    .find(|(n, _)| name.as_os_str() == n.as_str())
                {
                    note(Some(*f));
                }
            }
        }
        // A writer that never pauses could keep this loop, and the event loop with it,
        // busy: past the bound every file counts as written (the machine then looks at
        // the files), and the rest is read at the next take.
        note(None);
        Ok(())
    }
}

/// Reads of the inotify descriptor per take (each up to a page of events, about 100
/// writes): far beyond what a quiet pool directory queues between two requests.
#[cfg(target_os = "linux")]
const MAX_DRAIN_READS: usize = 64;

// ---------------------------------------------------------------------------------------

/// The `udata` of the directory's knote (files use their slot).
#[cfg(target_os = "freebsd")]
const DIR_TAG: usize = usize::MAX;

#[cfg(target_os = "freebsd")]
struct Os {
    kq: OwnedFd,
}

#[cfg(target_os = "freebsd")]
fn knote(fd: RawFd, fflags: u32, tag: usize) -> nix::libc::kevent {
    // SAFETY: `kevent` is a plain C struct for which all-zero bytes are a valid value
    // (the fields not set here, such as `ext`, differ between FreeBSD versions).
    let mut k: nix::libc::kevent = unsafe { std::mem::zeroed() };
    k.ident = fd as nix::libc::uintptr_t;
    k.filter = nix::libc::EVFILT_VNODE;
    // EV_CLEAR: a knote reports each write once, then rearms.
    k.flags = nix::libc::EV_ADD | nix::libc::EV_CLEAR;
    k.fflags = fflags;
    k.udata = tag as *mut nix::libc::c_void;
    k
}

#[cfg(target_os = "freebsd")]
impl Os {
    fn new(_dir: &Path, dir_fd: &OwnedFd) -> io::Result<Os> {
        use std::os::fd::FromRawFd;
        // SAFETY: kqueue takes no arguments; a non-negative result is a new descriptor
        // that nobody else owns.
        let kq = unsafe { nix::libc::kqueue() };
        if kq < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `kq` was just returned by kqueue(2) and is owned by nothing else.
        let kq = unsafe { OwnedFd::from_raw_fd(kq) };
        // kqueue descriptors are not inherited by fork(2) on FreeBSD; hooks run by
        // fork and exec never see it.
        let os = Os { kq };
        // A name created, removed or renamed in the directory: a pool file may have
        // been replaced, so every file counts as written.
        os.register(knote(dir_fd.as_raw_fd(), nix::libc::NOTE_WRITE, DIR_TAG))?;
        Ok(os)
    }

    fn register(&self, k: nix::libc::kevent) -> io::Result<()> {
        let zero = nix::libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: one change record read from `k`, no event buffer; the descriptor is
        // ours.
        let r = unsafe {
            nix::libc::kevent(self.kq.as_raw_fd(), &k, 1, std::ptr::null_mut(), 0, &zero)
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches the vnode behind `fd` (the knote goes when the descriptor is closed).
    fn held(&mut self, id: FileId, fd: RawFd) -> io::Result<()> {
        let f = nix::libc::NOTE_WRITE
            | nix::libc::NOTE_EXTEND
            | nix::libc::NOTE_ATTRIB
            | nix::libc::NOTE_DELETE
            | nix::libc::NOTE_RENAME
            | nix::libc::NOTE_REVOKE;
        self.register(knote(fd, f, slot(id)))
    }

    /// Collects every pending knote without waiting; see the Linux `drain`.
    fn drain(&mut self, note: &mut dyn FnMut(Option<FileId>)) -> io::Result<()> {
        let zero = nix::libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as in `knote`.
        let mut buf: [nix::libc::kevent; 16] = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: the buffer holds `buf.len()` records; no changes are passed.
            let n = unsafe {
                nix::libc::kevent(
                    self.kq.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    buf.as_mut_ptr(),
                    buf.len() as nix::libc::c_int,
                    &zero,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for k in &buf[..n as usize] {
                let tag = k.udata as usize;
                match every_file().find(|f| slot(*f) == tag) {
                    Some(f) => note(Some(f)),
                    None => note(None),
                }
            }
            if (n as usize) < buf.len() {
                return Ok(());
            }
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
struct Os;

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
impl Os {
    fn new(_dir: &Path, _dir_fd: &OwnedFd) -> io::Result<Os> {
        Err(io::Error::other("no file watch on this system"))
    }
    fn held(&mut self, _id: FileId, _fd: RawFd) -> io::Result<()> {
        Ok(())
    }
    fn drain(&mut self, _note: &mut dyn FnMut(Option<FileId>)) -> io::Result<()> {
        Ok(())
    }
}
