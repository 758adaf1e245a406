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
pub use hvguest_io_linux::mounts::{parse_proc_mounts, unescape_octal};

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

/// The system's mount table: getmntinfo(3) on FreeBSD, `/proc/self/mounts` elsewhere
/// (Linux; also for running outside emulation at all).
pub fn system() -> Result<Vec<Mount>, MountsError> {
    #[cfg(target_os = "freebsd")]
    let table = hvguest_io_freebsd::mounts::system();
    #[cfg(not(target_os = "freebsd"))]
    let table = hvguest_io_linux::mounts::system();
    table.map_err(MountsError::System)
}

/// Test mode (`--only-under DIR`): only the mounts strictly below `dir`, the ones a
/// test made itself; everything when there is no limit.
pub fn only_under(table: Vec<Mount>, dir: Option<&Path>) -> Vec<Mount> {
    match dir {
        None => table,
        Some(d) => table
            .into_iter()
            .filter(|m| Path::new(&m.path).starts_with(d) && Path::new(&m.path) != d)
            .collect(),
    }
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
    fn only_under_keeps_what_lies_below() {
        let p = Path::new("m");
        let t =
            parse_emulated(p, "ufs / rw a\nufs /t rw b\nufs /t/x rw c\nufs /tx rw d\n").unwrap();
        let paths = |v: Vec<Mount>| v.into_iter().map(|m| m.path).collect::<Vec<_>>();
        assert_eq!(
            paths(only_under(t.clone(), Some(Path::new("/t")))),
            ["/t/x"]
        );
        assert_eq!(paths(only_under(t, None)).len(), 4);
    }

    #[test]
    fn system_table_is_readable_here() {
        assert!(!system().unwrap().is_empty());
    }
}
