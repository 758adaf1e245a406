//! Linux's mount table: `/proc/self/mountinfo`, which names each mount's file system by
//! its device number, and the older `/proc/self/mounts` (docs/protocol/linux.md §2.5).

use hvguest_core::vss::policy::{Fsid, Mount};

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

/// The system's mount table (Linux: for running outside emulation at all).
pub fn system() -> std::io::Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// Parses Linux's `/proc/self/mountinfo` (proc(5)): `id parent major:minor root
/// mountpoint options [optional fields...] - fstype source super-options`, octal
/// escapes decoded. The device number is the mount's [`Fsid`] (`[major, minor]`): the
/// superblock every mount point of one file system shares, which the freezer checks
/// against the path before it freezes, and which the plan freezes once. Read-only if
/// the mount or its superblock is. Lines that do not have this shape are skipped: the
/// kernel never writes them, and a mount we cannot read is one we do not freeze.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(mountinfo_line).collect()
}

fn mountinfo_line(line: &str) -> Option<Mount> {
    let w: Vec<&str> = line.split(' ').collect();
    let (dev, path, opts) = (w.get(2)?, w.get(4)?, w.get(5)?);
    let dash = w.iter().skip(6).position(|f| *f == "-")? + 6;
    let (fstype, source, super_opts) = (w.get(dash + 1)?, w.get(dash + 2)?, w.get(dash + 3)?);
    let (major, minor) = dev.split_once(':')?;
    let number = |t: &str| t.parse::<u32>().ok().and_then(|n| i32::try_from(n).ok());
    let fsid = Fsid([number(major)?, number(minor)?]);
    let field = |f: &str| unescape_octal(f).unwrap_or_else(|| f.to_string());
    let ro = |o: &str| o.split(',').any(|x| x == "ro");
    Some(Mount {
        fstype: field(fstype),
        path: field(path),
        read_only: ro(opts) || ro(super_opts),
        source: field(source),
        fsid: Some(fsid),
    })
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
    fn mountinfo_lines() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
25 22 0:23 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
40 22 8:17 /data /mnt/with\\040space rw,relatime - xfs /dev/sdb1 rw,attr2
41 22 8:17 /sub /srv ro,relatime shared:7 master:2 - btrfs /dev/sdb1 rw,subvol=/sub
42 22 7:0 / /mnt/img rw - ext4 /dev/loop0 ro
garbage line
43 22 x:1 / /bad rw - ext4 /dev/sdc rw
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 5, "{m:#?}");
        assert_eq!(m[0].fstype, "ext4");
        assert_eq!(m[0].path, "/");
        assert_eq!(m[0].source, "/dev/sda1");
        assert_eq!(m[0].fsid, Some(Fsid([8, 1])));
        assert!(!m[0].read_only);
        assert_eq!(m[1].fsid, Some(Fsid([0, 23])));
        assert_eq!(m[2].path, "/mnt/with space");
        // Optional fields before the separator; a read-only mount of a writable fs.
        assert_eq!(m[3].fstype, "btrfs");
        assert!(m[3].read_only);
        assert_eq!(m[3].fsid, m[2].fsid);
        // A writable mount of a read-only superblock.
        assert!(m[4].read_only);
    }

    #[test]
    fn this_systems_mountinfo_parses() {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let m = parse_mountinfo(&text);
        assert_eq!(m.len(), text.lines().count());
        assert!(m.iter().any(|m| m.path == "/"));
    }
}
