//! The emulation's action log: what would have touched the machine, one line each,
//! `<monotonic ms> <action> <target> <result>`, appended as soon as the action is done
//! and before any reply that depends on it. Shared by the daemon and its freezer (both
//! append with O_APPEND, one write per line, so lines never interleave).
//!
//! A field never holds a space or a line break: a backslash, space, tab, newline and
//! carriage return in it are written `\\`, `\s`, `\t`, `\n` and `\r` (a mount point
//! `/mnt/Backup Disk` is the target `/mnt/Backup\sDisk`), so every line splits into its
//! four fields.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::clock;

pub struct ActionLog {
    file: File,
}

impl ActionLog {
    pub fn open(path: &Path) -> io::Result<ActionLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(ActionLog { file })
    }

    /// A second appender on the same file (for another thread).
    pub fn try_clone(&self) -> io::Result<ActionLog> {
        Ok(ActionLog {
            file: self.file.try_clone()?,
        })
    }

    pub fn record(&mut self, action: &str, target: &str, result: &str) -> io::Result<()> {
        let ms = clock::now().as_nanos() / 1_000_000;
        let line = format!(
            "{ms} {} {} {}\n",
            escape(action),
            escape(target),
            escape(result)
        );
        self.file.write_all(line.as_bytes())
    }
}

/// One field of a line (module documentation).
pub fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ' ' => out.push_str("\\s"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// A field as it was before [`escape`]; `None` for an escape that `escape` never writes.
pub fn unescape(field: &str) -> Option<String> {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            's' => ' ',
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

/// The emulated snapshots of `pool` (`pool@name`): those an action log's `snapshot`
/// lines took and no later `snapshot-destroy` line destroyed, in the order taken. A test
/// seeds another program's snapshots by writing `snapshot` lines before the daemon runs.
/// Lines that do not split into four fields are not ours to judge and are skipped.
pub fn emulated_snapshots(log: &str, pool: &str) -> Vec<String> {
    let at = format!("{pool}@");
    let mut have: Vec<String> = Vec::new();
    for line in log.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [_, action, target, "ok"] = fields[..] else {
            continue;
        };
        let Some(target) = unescape(target) else {
            continue;
        };
        if !target.starts_with(&at) {
            continue;
        }
        match action {
            "snapshot" if !have.contains(&target) => have.push(target),
            "snapshot-destroy" => have.retain(|n| *n != target),
            _ => {}
        }
    }
    have
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_undoes_escape() {
        for f in ["/mnt/Backup Disk", "a\\b\nc\td\re", "/var", ""] {
            assert_eq!(unescape(&escape(f)).as_deref(), Some(f));
        }
        assert_eq!(unescape("a\\x"), None);
        assert_eq!(unescape("a\\"), None);
    }

    #[test]
    fn emulated_snapshots_follow_the_log() {
        let log = "0 snapshot zroot@zrepl_1 ok\n\
                   5 snapshot zroot@hvguest-1 ok\n\
                   6 snapshot tank@hvguest-1 ok\n\
                   7 snapshot zroot@hvguest-2 failed\n\
                   8 zpool-sync zroot ok\n\
                   9 snapshot zroot@hvguest-3 ok\n\
                   10 snapshot-destroy zroot@hvguest-1 ok\n\
                   garbage\n";
        assert_eq!(
            emulated_snapshots(log, "zroot"),
            vec!["zroot@zrepl_1".to_string(), "zroot@hvguest-3".into()]
        );
        assert_eq!(
            emulated_snapshots(log, "tank"),
            vec!["tank@hvguest-1".to_string()]
        );
    }

    #[test]
    fn fields_hold_no_separator() {
        assert_eq!(escape("/mnt/Backup Disk"), "/mnt/Backup\\sDisk");
        assert_eq!(escape("a\\b\nc\td\re"), "a\\\\b\\nc\\td\\re");
        assert_eq!(escape("/var"), "/var");
    }
}
