//! What the real-time emulators ([`crate::emulator`], [`crate::vss_emulator`]) share: a
//! real clock in the kernel models' time, and listening `SOCK_SEQPACKET` sockets. No
//! kernel rule lives here; the models decide.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hvguest_core::Instant;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};

pub(crate) fn to_io(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

/// `std::time::Instant` as the models' `Instant`: nanoseconds since the clock was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            origin: std::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        Instant(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// `poll`'s timeout, rounded up to whole milliseconds (so that a deadline has passed when
/// it returns empty-handed) and capped to what it can express.
pub(crate) fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d
        .as_nanos()
        .div_ceil(1_000_000)
        .min(u128::from(u16::MAX - 1));
    PollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX - 1))
}

/// Sleeps until one of `fds` is readable, at most `timeout` (once: a signal or the
/// rounding may end it early; callers look at their clock again).
pub(crate) fn wait_any(fds: &[&OwnedFd], timeout: Duration) -> io::Result<()> {
    let mut polled: Vec<PollFd> = fds
        .iter()
        .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
        .collect();
    match poll(&mut polled, poll_timeout(timeout)) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(to_io(e)),
    }
}

/// Waits until `fd` is readable, or `timeout` passes (false then).
pub(crate) fn wait_readable(fd: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    let until = std::time::Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, poll_timeout(left)) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(to_io(e)),
        }
    }
}

/// A listening socket standing for a device node; its file goes when it is dropped.
pub(crate) struct Listener {
    pub(crate) fd: OwnedFd,
    pub(crate) path: PathBuf,
}

impl Listener {
    /// Listens on `path` (a stale socket file there is replaced).
    pub(crate) fn bind(path: &Path) -> io::Result<Listener> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(to_io)?;
        let addr = UnixAddr::new(path).map_err(to_io)?;
        socket::bind(fd.as_raw_fd(), &addr).map_err(to_io)?;
        socket::listen(&fd, Backlog::new(4).map_err(to_io)?).map_err(to_io)?;
        Ok(Listener {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Waits up to `timeout` for a connection to be pending.
    pub(crate) fn wait(&self, timeout: Duration) -> io::Result<bool> {
        wait_readable(&self.fd, timeout)
    }

    /// A pending connection, if any, without waiting.
    pub(crate) fn take(&self) -> io::Result<Option<OwnedFd>> {
        if !self.wait(Duration::ZERO)? {
            return Ok(None);
        }
        match socket::accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 returned a new descriptor that we now own.
            Ok(raw) => Ok(Some(unsafe { OwnedFd::from_raw_fd(raw) })),
            Err(Errno::EAGAIN | Errno::ECONNABORTED | Errno::EINTR) => Ok(None),
            Err(e) => Err(to_io(e)),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Nothing to report to from a drop: a socket file left behind is replaced by the
        // next bind.
        let _ = std::fs::remove_file(&self.path);
    }
}
