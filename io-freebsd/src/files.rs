//! Executes the core's file effects on the pool directory, literally.
//!
//! Each pool file and journal is opened once (created with mode 0600, O_CLOEXEC) and
//! every operation, the whole-file `fcntl` lock included, goes through that one
//! descriptor: POSIX locks belong to the process and file, and closing any other
//! descriptor of the same file would drop them (docs/protocol/kvp.md §3.3).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hvguest_core::kvp::effect::{Effect, EffectResult, FileId, FileStamp, IoError};
use nix::fcntl::{fcntl, FcntlArg};

pub struct PoolFiles {
    dir: PathBuf,
    open: BTreeMap<FileId, File>,
    /// Whether a missing file is created on first use (mode 0600). A tool that only
    /// reads opens existing files only, and a missing one is `ENOENT`.
    create: bool,
}

fn io_error(e: &io::Error) -> IoError {
    IoError(e.raw_os_error().unwrap_or(IoError::EIO.0))
}

fn whole_file_lock(kind: i16) -> nix::libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut l: nix::libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind;
    l.l_whence = nix::libc::SEEK_SET as i16;
    l.l_start = 0;
    l.l_len = 0; // to the end of the file, however it grows
    l
}

impl PoolFiles {
    /// Creates the pool directory (with parents, mode 0700 for new ones).
    pub fn new(dir: &Path) -> io::Result<PoolFiles> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(PoolFiles {
            dir: dir.to_path_buf(),
            open: BTreeMap::new(),
            create: true,
        })
    }

    /// For reading only: neither the directory nor any file is ever created (effects on
    /// a missing file fail with `ENOENT`). The files are still opened read-write, since
    /// the whole-file write lock, the one other writers take, needs it.
    pub fn existing(dir: &Path) -> PoolFiles {
        PoolFiles {
            dir: dir.to_path_buf(),
            open: BTreeMap::new(),
            create: false,
        }
    }

    pub fn path(&self, id: FileId) -> PathBuf {
        self.dir.join(id.file_name())
    }

    fn open_file(&self, id: FileId) -> io::Result<File> {
        // Never truncate: the file holds records, ours and other programs'.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(self.create)
            .truncate(false)
            .mode(0o600)
            .open(self.path(id))
    }

    fn file(&mut self, id: FileId) -> io::Result<&File> {
        if !self.open.contains_key(&id) {
            let f = self.open_file(id)?;
            self.open.insert(id, f);
        }
        Ok(&self.open[&id])
    }

    /// Opens every file now, so that a missing directory or permission problem shows at
    /// start-up, and LISA-style checks find all five pool files.
    pub fn open_all(&mut self, ids: impl IntoIterator<Item = FileId>) -> io::Result<()> {
        for id in ids {
            self.file(id)?;
        }
        Ok(())
    }

    fn stat(&mut self, id: FileId) -> io::Result<FileStamp> {
        // If another program replaced the file (a new inode at the path), follow it.
        let at_path = std::fs::metadata(self.path(id)).ok();
        let held = self.file(id)?.metadata()?;
        let meta = match at_path {
            Some(p) if p.ino() != held.ino() || p.dev() != held.dev() => {
                let f = self.open_file(id)?;
                let m = f.metadata()?;
                self.open.insert(id, f);
                m
            }
            _ => held,
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            meta.dev(),
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        )
            .hash(&mut h);
        Ok(FileStamp {
            len: meta.len(),
            change: h.finish(),
        })
    }

    fn read(&mut self, id: FileId, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        let f = self.file(id)?;
        let mut buf = vec![0u8; len as usize];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    fn lock(&mut self, id: FileId, kind: i16, wait: bool) -> io::Result<()> {
        let fd = self.file(id)?.as_raw_fd();
        // On Linux, fcntl and flock locks ignore each other and cloud-init/azure-init
        // take flock: hold both there. On FreeBSD they are one lock
        // (docs/protocol/kvp.md §3.3): fcntl alone excludes everyone, and taking both
        // would conflict with ourselves.
        #[cfg(target_os = "linux")]
        {
            let op = match (kind == nix::libc::F_UNLCK as i16, wait) {
                (true, _) => nix::libc::LOCK_UN,
                (false, true) => nix::libc::LOCK_EX,
                (false, false) => nix::libc::LOCK_EX | nix::libc::LOCK_NB,
            };
            loop {
                // SAFETY: flock on a descriptor owned by self.open.
                if unsafe { nix::libc::flock(fd, op) } == 0 {
                    break;
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
        let l = whole_file_lock(kind);
        loop {
            let arg = if wait {
                FcntlArg::F_SETLKW(&l)
            } else {
                FcntlArg::F_SETLK(&l)
            };
            // SAFETY: fd is owned by self.open and outlives the call.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            match fcntl(borrowed, arg) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }

    /// Runs one file effect. Never panics: every failure is an `IoError` result.
    pub fn execute(&mut self, effect: &Effect) -> EffectResult {
        let r: io::Result<EffectResult> = match effect {
            Effect::Lock(f) => self
                .lock(*f, nix::libc::F_WRLCK as i16, true)
                .map(|_| EffectResult::Done),
            Effect::Unlock(f) => self
                .lock(*f, nix::libc::F_UNLCK as i16, false)
                .map(|_| EffectResult::Done),
            Effect::Stat(f) => self.stat(*f).map(EffectResult::Stamp),
            Effect::Read { file, offset, len } => {
                self.read(*file, *offset, *len).map(EffectResult::Data)
            }
            Effect::Write { file, offset, data } => self
                .file(*file)
                .and_then(|f| f.write_all_at(data, *offset))
                .map(|_| EffectResult::Done),
            Effect::SetLen { file, len } => self
                .file(*file)
                .and_then(|f| f.set_len(*len))
                .map(|_| EffectResult::Done),
            Effect::Fsync(f) => self
                .file(*f)
                .and_then(|f| f.sync_all())
                .map(|_| EffectResult::Done),
            Effect::QueryAdapter(_) | Effect::ApplyIpConfig { .. } => {
                Err(io::Error::other("system effect sent to the file lane"))
            }
        };
        r.unwrap_or_else(|e| EffectResult::Failed(io_error(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvguest_core::kvp::wire::PoolId;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hvguest-files-{name}-{}", std::process::id()));
        // Test scratch space: it may not exist, and a leftover is harmless.
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn effects_on_real_files() {
        let root = tmp("effects");
        let dir = root.join("nested/pool");
        let mut pf = PoolFiles::new(&dir).unwrap();
        let f = FileId::pool(PoolId::Guest);
        assert_eq!(pf.execute(&Effect::Lock(f)), EffectResult::Done);
        assert_eq!(
            pf.execute(&Effect::Write {
                file: f,
                offset: 2560,
                data: vec![7; 10]
            }),
            EffectResult::Done
        );
        assert_eq!(pf.execute(&Effect::Fsync(f)), EffectResult::Done);
        let EffectResult::Stamp(s1) = pf.execute(&Effect::Stat(f)) else {
            panic!()
        };
        assert_eq!(s1.len, 2570);
        assert_eq!(
            pf.execute(&Effect::Read {
                file: f,
                offset: 2560,
                len: 100
            }),
            EffectResult::Data(vec![7; 10])
        );
        assert_eq!(
            pf.execute(&Effect::SetLen { file: f, len: 2560 }),
            EffectResult::Done
        );
        let EffectResult::Stamp(s2) = pf.execute(&Effect::Stat(f)) else {
            panic!()
        };
        assert_ne!(s1, s2);
        assert_eq!(pf.execute(&Effect::Unlock(f)), EffectResult::Done);
        let mode = std::fs::metadata(pf.path(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_replaced_file_is_followed() {
        let dir = tmp("replaced");
        let mut pf = PoolFiles::new(&dir).unwrap();
        let f = FileId::pool(PoolId::External);
        pf.execute(&Effect::Write {
            file: f,
            offset: 0,
            data: vec![1; 5],
        });
        std::fs::remove_file(pf.path(f)).unwrap();
        std::fs::write(pf.path(f), [2u8; 9]).unwrap();
        let EffectResult::Stamp(s) = pf.execute(&Effect::Stat(f)) else {
            panic!()
        };
        assert_eq!(s.len, 9);
        assert_eq!(
            pf.execute(&Effect::Read {
                file: f,
                offset: 0,
                len: 9
            }),
            EffectResult::Data(vec![2; 9])
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reading_only_creates_nothing() {
        let dir = tmp("existing");
        std::fs::create_dir_all(&dir).unwrap();
        let mut pf = PoolFiles::existing(&dir);
        let f = FileId::pool(PoolId::Guest);
        assert_eq!(
            pf.execute(&Effect::Lock(f)),
            EffectResult::Failed(IoError::ENOENT)
        );
        assert_eq!(
            pf.execute(&Effect::Stat(FileId::journal(PoolId::Guest))),
            EffectResult::Failed(IoError::ENOENT)
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing created"
        );
        std::fs::write(pf.path(f), [1u8; 3]).unwrap();
        assert_eq!(pf.execute(&Effect::Lock(f)), EffectResult::Done);
        assert!(matches!(pf.execute(&Effect::Stat(f)), EffectResult::Stamp(s) if s.len == 3));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn failures_are_results() {
        let dir = tmp("fail");
        let mut pf = PoolFiles::new(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let r = pf.execute(&Effect::Stat(FileId::pool(PoolId::Guest)));
        assert!(matches!(r, EffectResult::Failed(IoError(2))), "{r:?}");
    }
}
