//! `--record FILE`: the session in the recording format `cargo xtask replay` reads
//! (`hvguest_core::kvp::recording`): system information and pool files at start, then
//! every device message with its monotonic time, flushed as it happens.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hvguest_core::kvp::auto::SystemInfo;
use hvguest_core::kvp::effect::FileId;
use hvguest_core::kvp::recording::{encode_bytes, sysinfo_line, Recording};
use hvguest_core::kvp::wire::PoolId;
use hvguest_core::Instant;

use crate::files::{PoolFileError, PoolFiles};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Never written over: the path may be another file, or a link to one.
    #[error(
        "record file {}: it already exists (or is a symbolic link); name a new file,          since a recording is never written over another",
        .0.display()
    )]
    Exists(PathBuf),
    #[error("record file {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("record file: reading the pools for its header: {0}")]
    Pools(#[from] PoolFileError),
}

pub struct Recorder {
    out: BufWriter<File>,
}

impl Recorder {
    /// Creates `path` (a new file, mode 0600: it holds the pools' contents, which may be
    /// private) and writes the header: `info` and the pool files as they are now.
    pub fn create(
        path: &Path,
        layout: hvguest_core::kvp::wire::Layout,
        info: &SystemInfo,
        files: &mut PoolFiles,
    ) -> Result<Recorder, RecordError> {
        let mut header = Recording {
            layout,
            info: info.clone(),
            ..Recording::default()
        };
        for p in PoolId::FILE_BACKED {
            header.pools[p.index()] = files.contents(FileId::pool(p))?;
        }
        // O_EXCL: never an existing file, nor through a link (O_EXCL does not follow
        // one; O_NOFOLLOW says so again for systems that might).
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => RecordError::Exists(path.to_path_buf()),
                _ => RecordError::Io {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        let io_err = |source| RecordError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut out = BufWriter::new(file);
        out.write_all(header.to_text().as_bytes()).map_err(io_err)?;
        out.flush().map_err(io_err)?;
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
