//! `--record FILE`: the session in the recording format `cargo xtask replay` reads
//! (`hvguest_core::kvp::recording`): system information and pool files at start, then
//! every device message with its monotonic time, flushed as it happens.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use hvguest_core::kvp::auto::SystemInfo;
use hvguest_core::kvp::effect::FileId;
use hvguest_core::kvp::recording::{encode_bytes, sysinfo_line, Recording};
use hvguest_core::kvp::wire::PoolId;
use hvguest_core::Instant;

pub struct Recorder {
    out: BufWriter<File>,
}

impl Recorder {
    /// Writes the header: `info` and the pool files as they are in `pool_dir` now.
    pub fn create(path: &Path, info: &SystemInfo, pool_dir: &Path) -> io::Result<Recorder> {
        let mut header = Recording {
            info: info.clone(),
            ..Recording::default()
        };
        for p in PoolId::FILE_BACKED {
            header.pools[p.index()] =
                std::fs::read(pool_dir.join(FileId::pool(p).file_name())).unwrap_or_default();
        }
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(header.to_text().as_bytes())?;
        out.flush()?;
        Ok(Recorder { out })
    }

    /// New system information handed to the machine (replay hands it in at `at` too).
    pub fn info(&mut self, at: Instant, info: &SystemInfo) -> io::Result<()> {
        writeln!(self.out, "{} {}", at.as_nanos(), sysinfo_line(info))?;
        self.out.flush()
    }

    pub fn message(&mut self, at: Instant, inbound: bool, bytes: &[u8]) -> io::Result<()> {
        let dir = if inbound { "in" } else { "out" };
        writeln!(self.out, "{} {dir} {}", at.as_nanos(), encode_bytes(bytes))?;
        self.out.flush()
    }
}
