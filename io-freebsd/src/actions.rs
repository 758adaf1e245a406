//! The emulation's action log: what would have touched the machine, one line each,
//! `<monotonic ms> <action> <target> <result>`, appended as soon as the action is done
//! and before any reply that depends on it. Shared by the daemon and its freezer (both
//! append with O_APPEND, one write per line, so lines never interleave).

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
        let line = format!("{ms} {action} {target} {result}\n");
        self.file.write_all(line.as_bytes())
    }
}
