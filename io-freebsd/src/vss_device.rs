//! `/dev/hv_fsvss_dev` and `/dev/hv_appvss_dev`: the 64-byte message is read and
//! written with the IOCHVVSSREAD and IOCHVVSSWRITE ioctls (docs/protocol/vss.md §1.2).

use std::fs::File;
use std::io;

use hvguest_core::vss::wire::{Layout, VSS_MSG_SIZE};

/// Where FreeBSD's VSS driver puts the file-system daemon's device.
pub const PATH: &str = "/dev/hv_fsvss_dev";

/// The message layout of this device.
pub const LAYOUT: Layout = Layout::FreeBsd;

#[cfg(target_os = "freebsd")]
mod ioctls {
    use hvguest_core::vss::wire::{IOCHVVSSREAD, IOCHVVSSWRITE, VSS_MSG_SIZE};
    nix::ioctl_read_bad!(vss_read, IOCHVVSSREAD, [u8; VSS_MSG_SIZE]);
    nix::ioctl_write_ptr_bad!(vss_write, IOCHVVSSWRITE, [u8; VSS_MSG_SIZE]);
}

/// One READ: the kernel's 64 bytes.
#[cfg(target_os = "freebsd")]
pub fn read(f: &File) -> io::Result<[u8; VSS_MSG_SIZE]> {
    use std::os::fd::AsRawFd;
    let mut m = [0u8; VSS_MSG_SIZE];
    // SAFETY: IOCHVVSSREAD fills exactly 64 bytes of `m`.
    unsafe { ioctls::vss_read(f.as_raw_fd(), &mut m) }.map_err(io::Error::from)?;
    Ok(m)
}

/// One WRITE of 64 bytes.
#[cfg(target_os = "freebsd")]
pub fn write(f: &File, m: &[u8; VSS_MSG_SIZE]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: IOCHVVSSWRITE reads exactly 64 bytes from `m`.
    unsafe { ioctls::vss_write(f.as_raw_fd(), m) }
        .map(|_| ())
        .map_err(io::Error::from)
}

#[cfg(not(target_os = "freebsd"))]
pub fn read(_: &File) -> io::Result<[u8; VSS_MSG_SIZE]> {
    Err(unsupported())
}

#[cfg(not(target_os = "freebsd"))]
pub fn write(_: &File, _: &[u8; VSS_MSG_SIZE]) -> io::Result<()> {
    Err(unsupported())
}

#[cfg(not(target_os = "freebsd"))]
fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the VSS character device exists only on FreeBSD",
    )
}
