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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_hold_no_separator() {
        assert_eq!(escape("/mnt/Backup Disk"), "/mnt/Backup\\sDisk");
        assert_eq!(escape("a\\b\nc\td\re"), "a\\\\b\\nc\\td\\re");
        assert_eq!(escape("/var"), "/var");
    }
}
