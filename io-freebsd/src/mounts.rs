//! The mount table from getmntinfo(3), each mount with its `statfs.f_fsid`.

use hvguest_core::vss::policy::{Fsid, Mount};

/// The system's mount table.
#[cfg(target_os = "freebsd")]
pub fn system() -> std::io::Result<Vec<Mount>> {
    use std::ffi::CStr;
    let mut buf: *mut nix::libc::statfs = std::ptr::null_mut();
    // SAFETY: getmntinfo points `buf` at a static array of `n` statfs it owns.
    let n = unsafe { nix::libc::getmntinfo(&mut buf, nix::libc::MNT_NOWAIT) };
    if n <= 0 || buf.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above; copied out before any other getmntinfo call.
    let all = unsafe { std::slice::from_raw_parts(buf, n as usize) };
    let text = |a: &[nix::libc::c_char]| {
        // SAFETY: the kernel NUL-terminates these fixed arrays.
        unsafe { CStr::from_ptr(a.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Ok(all
        .iter()
        .map(|s| Mount {
            fstype: text(&s.f_fstypename),
            path: text(&s.f_mntonname),
            read_only: s.f_flags & (nix::libc::MNT_RDONLY as u64) != 0,
            source: text(&s.f_mntfromname),
            fsid: Some(fsid_of(s)),
        })
        .collect())
}

/// `statfs.f_fsid` as the core's [`Fsid`].
#[cfg(target_os = "freebsd")]
pub fn fsid_of(s: &nix::libc::statfs) -> Fsid {
    // SAFETY: FreeBSD's fsid_t is `struct { int32_t val[2]; }` (docs/protocol/vss.md
    // §1.3); libc keeps its field private, so it is read as the two words it is.
    Fsid(unsafe { std::mem::transmute::<nix::libc::fsid_t, [i32; 2]>(s.f_fsid) })
}

/// Off FreeBSD there is no getmntinfo.
#[cfg(not(target_os = "freebsd"))]
pub fn system() -> std::io::Result<Vec<Mount>> {
    let _: Option<Fsid> = None;
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "getmntinfo exists only on FreeBSD",
    ))
}
