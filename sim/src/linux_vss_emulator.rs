//! The emulated Linux VSS device, host side: one Unix `SOCK_SEQPACKET` socket standing
//! for `/dev/vmbus/hv_vss` (a real `hv_vss_daemon --layout linux --device SOCKET`
//! connects). It plays Linux's kernel as docs/protocol/linux.md §2 states it, written
//! from that text with literal bytes, never with the core's codec: the daemon registers
//! with a 12-byte message whose byte 0 is 129 and reads the 4-byte answer; then each
//! host request is 12 bytes with the op in byte 0 (HOT_BACKUP 2, FREEZE 5, THAW 6),
//! answered by 12 bytes whose first 4 are the status; the kernel waits 30 s (900 s for
//! FREEZE) and then fails the request; no daemon registered fails it at once.
//!
//! Requests are synchronous, one at a time. Used by the end-to-end tests.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags};

pub use hvguest_core::limits::{LINUX_VSS_DEADLINE, LINUX_VSS_FREEZE_DEADLINE};

use crate::realtime::{to_io, wait_readable, Listener};

/// The host's operations, as byte 0 of the kernel's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostOp {
    HotBackup = 2,
    Freeze = 5,
    Thaw = 6,
}

impl HostOp {
    /// How long the kernel waits for the daemon's answer.
    pub fn deadline(self) -> Duration {
        match self {
            HostOp::Freeze => LINUX_VSS_FREEZE_DEADLINE,
            HostOp::HotBackup | HostOp::Thaw => LINUX_VSS_DEADLINE,
        }
    }
}

/// What became of one host request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinuxVssAnswer {
    /// The daemon answered: `status` as it wrote it (0 is OK), after `took`.
    Reply { status: u32, took: Duration },
    /// The kernel's deadline passed: the host got `HV_E_FAIL`.
    TimedOut,
    /// No daemon registered (never, or it closed the device): `HV_E_FAIL` at once.
    NoDaemon,
    /// The daemon wrote something that is not a 12-byte answer.
    Malformed(Vec<u8>),
}

impl LinuxVssAnswer {
    pub fn ok(&self) -> bool {
        matches!(self, LinuxVssAnswer::Reply { status: 0, .. })
    }
}

pub struct EmulatedLinuxVss {
    listener: Listener,
    daemon: Option<OwnedFd>,
    /// Registrations completed, counting re-registrations after a reopen.
    pub registrations: u32,
}

fn recv(fd: &OwnedFd) -> io::Result<Option<Vec<u8>>> {
    let mut buf = [0u8; 65];
    loop {
        return match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(buf[..n].to_vec())),
            Err(Errno::EAGAIN) => Ok(Some(Vec::new())),
            Err(Errno::EINTR) => continue,
            Err(Errno::ECONNRESET | Errno::ENOTCONN | Errno::EPIPE) => Ok(None),
            Err(e) => Err(to_io(e)),
        };
    }
}

fn send(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    socket::send(fd.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL)
        .map(|_| ())
        .map_err(to_io)
}

impl EmulatedLinuxVss {
    /// Listens on `socket` (a stale socket file there is replaced).
    pub fn bind(socket: &Path) -> io::Result<EmulatedLinuxVss> {
        Ok(EmulatedLinuxVss {
            listener: Listener::bind(socket)?,
            daemon: None,
            registrations: 0,
        })
    }

    /// Waits up to `limit` for a daemon to open the device and register (its 12-byte
    /// op-129 message), and queues the kernel's 4-byte answer.
    pub fn accept_daemon(&mut self, limit: Duration) -> io::Result<()> {
        let until = Instant::now() + limit;
        let left = || until.saturating_duration_since(Instant::now());
        let fd = loop {
            if let Some(fd) = self.listener.take()? {
                break fd;
            }
            if !self.listener.wait(left())? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no daemon opened the device",
                ));
            }
        };
        if !wait_readable(&fd, left())? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no registration came",
            ));
        }
        match recv(&fd)? {
            Some(m) if m.len() == 12 && m[0] == 129 => {}
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a registration is 12 bytes starting with 129, not {other:?}"),
                ))
            }
        }
        send(&fd, &[129, 0, 0, 0])?;
        self.registrations += 1;
        self.daemon = Some(fd);
        Ok(())
    }

    /// The host asks `op`; waits for the daemon's answer up to `limit` (at most the
    /// kernel's deadline for that op).
    pub fn ask_within(&mut self, op: HostOp, limit: Duration) -> io::Result<LinuxVssAnswer> {
        let Some(fd) = self.daemon.as_ref() else {
            return Ok(LinuxVssAnswer::NoDaemon);
        };
        let mut msg = [0u8; 12];
        msg[0] = op as u8;
        let start = Instant::now();
        if send(fd, &msg).is_err() {
            self.daemon = None;
            return Ok(LinuxVssAnswer::NoDaemon);
        }
        let until = start + limit.min(op.deadline());
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if !wait_readable(fd, left)? {
                return Ok(LinuxVssAnswer::TimedOut);
            }
            match recv(fd)? {
                None => {
                    self.daemon = None;
                    return Ok(LinuxVssAnswer::NoDaemon);
                }
                Some(m) if m.is_empty() => continue,
                Some(m) if m.len() == 12 => {
                    let status = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
                    return Ok(LinuxVssAnswer::Reply {
                        status,
                        took: start.elapsed(),
                    });
                }
                Some(m) => return Ok(LinuxVssAnswer::Malformed(m)),
            }
        }
    }

    /// [`EmulatedLinuxVss::ask_within`] the kernel's own deadline.
    pub fn ask(&mut self, op: HostOp) -> io::Result<LinuxVssAnswer> {
        self.ask_within(op, op.deadline())
    }

    /// The kernel tears the device's channel down (the Backup integration service
    /// switched off, hibernation): the daemon's connection is closed, and it must open
    /// the device again and register anew ([`EmulatedLinuxVss::accept_daemon`]).
    pub fn drop_daemon(&mut self) {
        self.daemon = None;
    }

    /// Whether the daemon still holds the device open (a read finds it closed).
    pub fn daemon_open(&mut self) -> bool {
        match self.daemon.as_ref().map(recv) {
            Some(Ok(Some(_))) => true,
            _ => {
                self.daemon = None;
                false
            }
        }
    }
}
