//! The VSS devices: FreeBSD's `/dev/hv_fsvss_dev` and `/dev/hv_appvss_dev` (ioctl
//! READ/WRITE of a 64-byte message, docs/protocol/vss.md §1.2), Linux's
//! `/dev/vmbus/hv_vss` (read/write of 12 bytes, docs/protocol/linux.md §2), or a Unix
//! `SOCK_SEQPACKET` socket emulating either: a datagram received is what one read
//! returns, a datagram sent is what one write passes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use hvguest_core::vss::wire::VSS_MSG_SIZE;
use nix::sys::socket::{self, MsgFlags};

use crate::device::{connect_emulated, DeviceError};

pub enum VssDevice {
    /// The character device (only on FreeBSD).
    Char(File),
    Socket(OwnedFd),
}

pub enum VssRead {
    /// One message as the device gave it (its length is the core's to judge).
    Message(Vec<u8>),
    NotReady,
    Closed,
}

impl VssDevice {
    pub fn open(path: &Path) -> Result<VssDevice, DeviceError> {
        if let Some(fd) = connect_emulated(path)? {
            return Ok(VssDevice::Socket(fd));
        }
        // O_CLOEXEC (std's default): hooks must not keep the device registered.
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(VssDevice::Char)
            .map_err(|source| DeviceError::Open {
                path: path.display().to_string(),
                source,
            })
    }

    pub fn raw_fd(&self) -> RawFd {
        match self {
            VssDevice::Char(f) => f.as_raw_fd(),
            VssDevice::Socket(s) => s.as_raw_fd(),
        }
    }

    pub fn read(&self) -> io::Result<VssRead> {
        match self {
            VssDevice::Socket(s) => {
                // One more byte than the largest message: a longer datagram is seen
                // as one of the wrong length, not cut to the right one.
                let mut buf = [0u8; VSS_MSG_SIZE + 1];
                loop {
                    return match socket::recv(s.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                        Ok(0) => Ok(VssRead::Closed),
                        Ok(n) => Ok(VssRead::Message(buf[..n].to_vec())),
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(nix::errno::Errno::EAGAIN) => Ok(VssRead::NotReady),
                        Err(e) => Err(io::Error::from(e)),
                    };
                }
            }
            VssDevice::Char(f) => system_read(f).map(VssRead::Message),
        }
    }

    pub fn write(&self, m: &[u8]) -> io::Result<()> {
        match self {
            VssDevice::Socket(s) => loop {
                match socket::send(s.as_raw_fd(), m, MsgFlags::MSG_NOSIGNAL) {
                    Ok(_) => return Ok(()),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(io::Error::from(e)),
                }
            },
            VssDevice::Char(f) => system_write(f, m),
        }
    }
}

#[cfg(target_os = "freebsd")]
fn system_read(f: &File) -> io::Result<Vec<u8>> {
    hvguest_io_freebsd::vss_device::read(f).map(|m| m.to_vec())
}

#[cfg(target_os = "freebsd")]
fn system_write(f: &File, m: &[u8]) -> io::Result<()> {
    let m: &[u8; VSS_MSG_SIZE] = m
        .try_into()
        .map_err(|_| io::Error::from_raw_os_error(nix::libc::EINVAL))?;
    hvguest_io_freebsd::vss_device::write(f, m)
}

#[cfg(not(target_os = "freebsd"))]
fn system_read(f: &File) -> io::Result<Vec<u8>> {
    hvguest_io_linux::vss_device::read(f)
}

#[cfg(not(target_os = "freebsd"))]
fn system_write(f: &File, m: &[u8]) -> io::Result<()> {
    hvguest_io_linux::vss_device::write(f, m)
}
