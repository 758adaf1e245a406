//! UFS suspension through `/dev/ufssuspend` (docs/protocol/vss.md §1.3): one open
//! file per suspended file system; the kernel resumes it when the file is closed, even
//! when the process that holds it dies.

use std::io;
#[cfg(target_os = "freebsd")]
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;

use hvguest_core::vss::policy::Fsid;

#[cfg(target_os = "freebsd")]
mod ufs {
    use hvguest_core::vss::wire::UFSSUSPEND;

    /// `fsid_t`: two 32-bit words (docs/protocol/vss.md §8.3).
    #[repr(C)]
    pub struct RawFsid(pub [i32; 2]);

    nix::ioctl_write_ptr_bad!(suspend, UFSSUSPEND, RawFsid);
}

/// Suspends the file system `fsid` (or, without one, the one mounted at `mount`
/// now); it stays suspended while the returned descriptor is open.
#[cfg(target_os = "freebsd")]
pub fn suspend(mount: &str, fsid: Option<Fsid>) -> io::Result<OwnedFd> {
    use std::ffi::CString;
    use std::os::fd::FromRawFd;
    let fsid = match fsid {
        Some(f) => f,
        None => {
            // No fsid planned: the file system at the path now.
            let path =
                CString::new(mount).map_err(|_| io::Error::from_raw_os_error(nix::libc::EINVAL))?;
            // SAFETY: statfs fills the zeroed struct for a NUL-terminated path.
            let mut st: nix::libc::statfs = unsafe { std::mem::zeroed() };
            if unsafe { nix::libc::statfs(path.as_ptr(), &mut st) } != 0 {
                return Err(io::Error::last_os_error());
            }
            crate::mounts::fsid_of(&st)
        }
    };
    // One open file per suspension: an open file carries only one (docs/protocol/vss.md §1.3).
    let dev = c"/dev/ufssuspend";
    // SAFETY: open(2) on a constant path; the result is checked.
    let raw = unsafe { nix::libc::open(dev.as_ptr(), nix::libc::O_RDWR | nix::libc::O_CLOEXEC) };
    if raw < 0 {
        let e = io::Error::last_os_error();
        // A missing device is not a missing file system: the core reads ENOENT as "no
        // longer mounted".
        return Err(match e.raw_os_error() {
            Some(nix::libc::ENOENT) => io::Error::from_raw_os_error(nix::libc::ENODEV),
            _ => e,
        });
    }
    // SAFETY: `raw` is a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: UFSSUSPEND reads one fsid_t.
    unsafe { ufs::suspend(fd.as_raw_fd(), &ufs::RawFsid(fsid.0)) }.map_err(io::Error::from)?;
    Ok(fd)
}

#[cfg(not(target_os = "freebsd"))]
pub fn suspend(_mount: &str, _fsid: Option<Fsid>) -> io::Result<OwnedFd> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "UFSSUSPEND exists only on FreeBSD",
    ))
}
