//! The VSS devices: `/dev/hv_fsvss_dev` and `/dev/hv_appvss_dev` (ioctl READ/WRITE of a
//! 64-byte message, docs/protocol/vss.md §1.2), or a Unix `SOCK_SEQPACKET` socket emulating
//! one: a datagram received is what READ returns, a datagram sent is what WRITE passes.

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
    Message([u8; VSS_MSG_SIZE]),
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
                let mut buf = [0u8; VSS_MSG_SIZE + 1];
                loop {
                    return match socket::recv(s.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                        Ok(0) => Ok(VssRead::Closed),
                        Ok(n) => {
                            // A datagram of another size is not a message: the core
                            // treats it as nothing to do, as a failed READ.
                            let mut m = [0u8; VSS_MSG_SIZE];
                            let k = n.min(VSS_MSG_SIZE);
                            m[..k].copy_from_slice(&buf[..k]);
                            if n != VSS_MSG_SIZE {
                                m[4..8].copy_from_slice(&1u32.to_le_bytes());
                            }
                            Ok(VssRead::Message(m))
                        }
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(nix::errno::Errno::EAGAIN) => Ok(VssRead::NotReady),
                        Err(e) => Err(io::Error::from(e)),
                    };
                }
            }
            VssDevice::Char(f) => hvguest_io_freebsd::vss_device::read(f).map(VssRead::Message),
        }
    }

    pub fn write(&self, m: &[u8; VSS_MSG_SIZE]) -> io::Result<()> {
        match self {
            VssDevice::Socket(s) => loop {
                match socket::send(s.as_raw_fd(), m, MsgFlags::MSG_NOSIGNAL) {
                    Ok(_) => return Ok(()),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(io::Error::from(e)),
                }
            },
            VssDevice::Char(f) => hvguest_io_freebsd::vss_device::write(f, m),
        }
    }
}
