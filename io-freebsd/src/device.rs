//! The KVP device: `/dev/hv_kvp_dev`, or a Unix `SOCK_SEQPACKET` socket that emulates it.
//!
//! The real device is read with `pread(7430 @ 0)` only after poll(2) said readable (its
//! read blocks even with O_NONBLOCK, and devfs would advance a plain read's offset), and
//! written with one `pwrite(7430 @ 0)` per reply (docs/protocol/kvp.md §1.7). The emulation
//! carries the same bytes: one datagram received is one device read, one datagram sent
//! is one device write. Which one is used follows from the path: a socket is emulation.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use hvguest_core::limits::KVP_MSG_SIZE;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("cannot connect to the emulated device {path}: {source}")]
    Connect { path: String, source: nix::Error },
}

pub enum KvpDevice {
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

    /// Reads one message into `buf` (one byte larger than a message, so an oversized
    /// datagram is seen as such). Call only when poll(2) said readable.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<ReadOutcome> {
        debug_assert!(buf.len() > KVP_MSG_SIZE);
        loop {
            let r = match self {
                KvpDevice::Char(f) => f.read_at(&mut buf[..KVP_MSG_SIZE], 0),
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
                KvpDevice::Char(f) => f.write_at(msg, 0),
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
