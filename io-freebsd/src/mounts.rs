//! The mount table: `getmntinfo` on FreeBSD, `/proc/self/mounts` on Linux, or, for
//! emulation, a file with one mount per line: `<fstype> <mountpoint> <rw|ro> [<source>]`.
//!
//! In the emulated table, as in fstab(5) and `/proc/self/mounts`, a space, tab, newline
//! or backslash in a field is written as a backslash and three octal digits (`\040`,
//! `\011`, `\012`, `\134`): `/mnt/Backup\040Disk` is the mount point `/mnt/Backup Disk`.
//! An emulated mount's fsid is derived from its source ([`emulated_fsid`]), so another
//! source at the same mount point is another file system, as after a remount.

use std::io;
use std::path::Path;

use hvguest_core::vss::policy::{Fsid, Mount};

#[derive(Debug, thiserror::Error)]
pub enum MountsError {
    #[error("{path}: {source}")]
    Read { path: String, source: io::Error },
    #[error(
        "{path} line {line}: expected `<fstype> <mountpoint> <rw|ro> [<source>]` \
         (a space in a field written `\\040`)"
    )]
    Syntax { path: String, line: usize },
    #[error("getmntinfo: {0}")]
    System(io::Error),
}

/// Parses an emulated mount table.
pub fn parse_emulated(path: &Path, text: &str) -> Result<Vec<Mount>, MountsError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        let syntax = || MountsError::Syntax {
            path: path.display().to_string(),
            line: i + 1,
        };
        let (fstype, mountpoint, mode) = match w.as_slice() {
            [t, m, r, ..] if w.len() <= 4 => (*t, *m, *r),
            _ => return Err(syntax()),
        };
        let read_only = match mode {
            "rw" => false,
            "ro" => true,
            _ => return Err(syntax()),
        };
        let field = |f: &str| unescape_octal(f).ok_or_else(syntax);
        let source = match w.get(3) {
            Some(s) => field(s)?,
            None => fstype.to_string(),
        };
        out.push(Mount {
            fstype: field(fstype)?,
            path: field(mountpoint)?,
            read_only,
            fsid: Some(emulated_fsid(&source)),
            source,
        });
    }
    Ok(out)
}

/// A field of a mount table: `\ooo` (three octal digits) is that byte, as fstab(5) and
/// Linux write a space (`\040`), tab, newline and backslash. `None`: a backslash not
/// followed by three octal digits, or bytes that are not UTF-8.
pub fn unescape_octal(field: &str) -> Option<String> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let digits = b.get(i + 1..i + 4)?;
        if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
            return None;
        }
        let v = digits
            .iter()
            .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
        out.push(u8::try_from(v).ok()?);
        i += 4;
    }
    String::from_utf8(out).ok()
}

/// An emulated mount's fsid: FNV-1a of its source, in two words. A given source always
/// gives the same fsid; another source at the same path gives another.
pub fn emulated_fsid(source: &str) -> Fsid {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in source.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Two 32-bit halves, reinterpreted as the signed words of an fsid_t.
    Fsid([(h & 0xffff_ffff) as u32 as i32, (h >> 32) as u32 as i32])
}

pub fn emulated(path: &Path) -> Result<Vec<Mount>, MountsError> {
    let text = std::fs::read_to_string(path).map_err(|source| MountsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_emulated(path, &text)
}

/// The system's mount table.
#[cfg(target_os = "freebsd")]
pub fn system() -> Result<Vec<Mount>, MountsError> {
    use std::ffi::CStr;
    let mut buf: *mut nix::libc::statfs = std::ptr::null_mut();
    // SAFETY: getmntinfo points `buf` at a static array of `n` statfs it owns.
    let n = unsafe { nix::libc::getmntinfo(&mut buf, nix::libc::MNT_NOWAIT) };
    if n <= 0 || buf.is_null() {
        return Err(MountsError::System(io::Error::last_os_error()));
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

/// The system's mount table (Linux: for running outside emulation at all).
#[cfg(not(target_os = "freebsd"))]
pub fn system() -> Result<Vec<Mount>, MountsError> {
    let text = std::fs::read_to_string("/proc/self/mounts").map_err(MountsError::System)?;
    Ok(parse_proc_mounts(&text))
}

/// Parses Linux's `/proc/self/mounts` (`source path fstype options dump pass`), its
/// octal escapes (`\040` for a space) decoded. Lines with fewer than four fields are
/// skipped: the kernel never writes them, and a mount we cannot read is one we do not
/// freeze. It gives no fsid: the freezer looks such a mount up by its path. Compiled
/// everywhere so that it is fuzzed and tested on any host.
pub fn parse_proc_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (source, path, fstype, opts) = (w.first()?, w.get(1)?, w.get(2)?, w.get(3)?);
            let field = |f: &str| unescape_octal(f).unwrap_or_else(|| f.to_string());
            Some(Mount {
                fstype: field(fstype),
                path: field(path),
                read_only: opts.split(',').any(|o| o == "ro"),
                source: field(source),
                fsid: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulated_format() {
        let p = Path::new("m");
        let m = parse_emulated(
            p,
            "# mixed\nufs / rw /dev/da0p2\nzfs /home rw zroot/home\nnfs /mnt ro\n\n",
        )
        .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].source, "zroot/home");
        assert!(m[2].read_only);
        assert_eq!(m[2].source, "nfs");
        assert!(matches!(
            parse_emulated(p, "ufs /\n"),
            Err(MountsError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            parse_emulated(p, "ufs / maybe\n"),
            Err(MountsError::Syntax { .. })
        ));
    }

    #[test]
    fn escaped_fields_and_fsids() {
        let p = Path::new("m");
        let m = parse_emulated(
            p,
            "ufs /mnt/Backup\\040Disk rw /dev/ada1p1\nufs /mnt/a\\012b\\134c rw /dev/x\\011y\n",
        )
        .unwrap();
        assert_eq!(m[0].path, "/mnt/Backup Disk");
        assert_eq!(m[1].path, "/mnt/a\nb\\c");
        assert_eq!(m[1].source, "/dev/x\ty");
        assert_eq!(m[0].fsid, Some(emulated_fsid("/dev/ada1p1")));
        assert_ne!(emulated_fsid("/dev/ada1p1"), emulated_fsid("/dev/ada9p9"));
        for bad in [
            "ufs /a\\04 rw",
            "ufs /a\\x40 rw",
            "ufs /a\\777 rw",
            "ufs /a\\377 rw",
        ] {
            assert!(
                matches!(
                    parse_emulated(p, bad),
                    Err(MountsError::Syntax { line: 1, .. })
                ),
                "{bad}"
            );
        }
        let linux = parse_proc_mounts("/dev/sdb1 /mnt/with\\040space ext4 rw 0 0\n");
        assert_eq!(linux[0].path, "/mnt/with space");
        assert_eq!(linux[0].fsid, None);
    }

    #[test]
    fn system_table_is_readable_here() {
        assert!(!system().unwrap().is_empty());
    }
}
