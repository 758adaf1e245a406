//! Linux's mount table, `/proc/self/mounts` (docs/protocol/linux.md).

use hvguest_core::vss::policy::Mount;

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
    let text = std::fs::read_to_string("/proc/self/mounts")?;
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
