//! The mount table: `getmntinfo` on FreeBSD, `/proc/self/mounts` on Linux, or, for
//! emulation, a file with one mount per line: `<fstype> <mountpoint> <rw|ro> [<source>]`.

use std::io;
use std::path::Path;

use hvguest_core::vss::policy::Mount;

#[derive(Debug, thiserror::Error)]
pub enum MountsError {
    #[error("{path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} line {line}: expected `<fstype> <mountpoint> <rw|ro> [<source>]`")]
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
        out.push(Mount {
            fstype: fstype.into(),
            path: mountpoint.into(),
            read_only,
            source: w
                .get(3)
                .map_or_else(|| fstype.to_string(), |s| s.to_string()),
        });
    }
    Ok(out)
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
        })
        .collect())
}

/// The system's mount table (Linux: for running outside emulation at all).
#[cfg(not(target_os = "freebsd"))]
pub fn system() -> Result<Vec<Mount>, MountsError> {
    let text = std::fs::read_to_string("/proc/self/mounts").map_err(MountsError::System)?;
    Ok(parse_proc_mounts(&text))
}

/// Parses Linux's `/proc/self/mounts` (`source path fstype options dump pass`). Lines
/// with fewer than four fields are skipped: the kernel never writes them, and a mount we
/// cannot read is one we do not freeze. Compiled everywhere so that it is fuzzed and
/// tested on any host.
pub fn parse_proc_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (source, path, fstype, opts) = (w.first()?, w.get(1)?, w.get(2)?, w.get(3)?);
            Some(Mount {
                fstype: fstype.to_string(),
                path: path.to_string(),
                read_only: opts.split(',').any(|o| o == "ro"),
                source: source.to_string(),
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
    fn system_table_is_readable_here() {
        assert!(!system().unwrap().is_empty());
    }
}
