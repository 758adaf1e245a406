//! The KVP device: the system's character device (FreeBSD's `/dev/hv_kvp_dev`, Linux's
//! `/dev/vmbus/hv_kvp`, each read and written the way its kernel wants, in
//! `hvguest_io_freebsd::kvp_device` and `hvguest_io_linux::kvp_device`), or a Unix
//! `SOCK_SEQPACKET` socket that emulates either. The emulation carries the same bytes:
//! one datagram received is one device read, one datagram sent is one device write.
//! Which one is used follows from the path: a socket is emulation.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use hvguest_core::limits::device_reopen_pause;
#[cfg(target_os = "freebsd")]
use hvguest_io_freebsd::kvp_device as system;
#[cfg(not(target_os = "freebsd"))]
use hvguest_io_linux::kvp_device as system;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("cannot connect to the emulated device {path}: {source}")]
    Connect { path: String, source: nix::Error },
}

pub enum KvpDevice {
    /// This system's character device.
    Char(File),
    Socket(OwnedFd),
}

/// One read: a message, or nothing after all (a spurious wakeup), or the other end gone.
pub enum ReadOutcome {
    Message(usize),
    NotReady,
    Closed,
}

/// When `path` is a Unix socket (an emulated device, as the simulator's host programs
/// serve), a non-blocking, close-on-exec `SOCK_SEQPACKET` connection to it: one message
/// per datagram, like the real devices. `None` when `path` is not a socket.
pub(crate) fn connect_emulated(path: &Path) -> Result<Option<OwnedFd>, DeviceError> {
    let is_socket = std::fs::metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false);
    if !is_socket {
        return Ok(None);
    }
    let failed = |source| DeviceError::Connect {
        path: path.display().to_string(),
        source,
    };
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(failed)?;
    let addr = UnixAddr::new(path).map_err(failed)?;
    socket::connect(fd.as_raw_fd(), &addr).map_err(failed)?;
    Ok(Some(fd))
}

impl KvpDevice {
    pub fn open(path: &Path) -> Result<KvpDevice, DeviceError> {
        if let Some(fd) = connect_emulated(path)? {
            return Ok(KvpDevice::Socket(fd));
        }
        // std opens with O_CLOEXEC; the device is opened read-write, never O_NONBLOCK
        // (it would not help: its read blocks regardless).
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(0)
            .open(path)
            .map(KvpDevice::Char)
            .map_err(|source| DeviceError::Open {
                path: path.display().to_string(),
                source,
            })
    }

    pub fn raw_fd(&self) -> RawFd {
        match self {
            KvpDevice::Char(f) => f.as_raw_fd(),
            KvpDevice::Socket(s) => s.as_raw_fd(),
        }
    }

    /// Reads one message into `buf` (one byte larger than the largest message, so an
    /// oversized datagram is seen as such). Call only when poll(2) said readable.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<ReadOutcome> {
        loop {
            let r = match self {
                KvpDevice::Char(f) => system::read(f, buf),
                KvpDevice::Socket(s) => {
                    socket::recv(s.as_raw_fd(), buf, MsgFlags::empty()).map_err(io::Error::from)
                }
            };
            return match r {
                Ok(0) if matches!(self, KvpDevice::Socket(_)) => Ok(ReadOutcome::Closed),
                Ok(n) => Ok(ReadOutcome::Message(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::NotReady),
                Err(e) => Err(e),
            };
        }
    }

    /// Writes one message. Retries only an interrupted call: the kernel answers an
    /// unknown op's write with EINVAL after it already replied to the host, and the
    /// stock daemon's endless retry of that is problem K3.
    pub fn write(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            let r = match self {
                KvpDevice::Char(f) => system::write(f, msg),
                KvpDevice::Socket(s) => {
                    socket::send(s.as_fd().as_raw_fd(), msg, MsgFlags::MSG_NOSIGNAL)
                        .map_err(io::Error::from)
                }
            };
            match r {
                Ok(n) if n == msg.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "short device write: {n} of {} bytes",
                        msg.len()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Linux: when a failed device is next tried, and how many tries have failed since a
/// message was last read from it. The pause is `limits::device_reopen_pause` of that
/// count, so a device that opens and fails at once keeps the pause growing. Both
/// daemons keep one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reopen {
    pub(crate) at: std::time::Instant,
    pub(crate) failures: u32,
}

impl Reopen {
    pub(crate) fn after(failures: u32) -> Reopen {
        Reopen {
            at: std::time::Instant::now() + device_reopen_pause(failures),
            failures,
        }
    }

    /// This try failed too.
    pub(crate) fn again(self) -> Reopen {
        Reopen::after(self.failures.saturating_add(1))
    }

    /// The pause before the next try.
    pub(crate) fn pause(self) -> std::time::Duration {
        device_reopen_pause(self.failures)
    }
}
