//! Executes the core's file effects on the pool directory, literally.
//!
//! Each pool file and journal is opened once (created with mode 0600, or the pool files
//! with kvp.conf's `pool_mode`, O_CLOEXEC) and
//! every operation, the whole-file `fcntl` lock included, goes through that one
//! descriptor: POSIX locks belong to the process and file, and closing any other
//! descriptor of the same file would drop them (docs/protocol/kvp.md §3.3).
//!
//! What is trusted is written here once, for the daemon and for `hvkvp` alike: whoever
//! can write the pool directory decides what a name in it is, so a directory another
//! user owns or can write would let that user point a pool file at any file and have
//! root truncate it, or write a journal's bytes into it. So the directory is opened
//! once (`O_DIRECTORY|O_NOFOLLOW`) and must belong to the effective user and not be
//! writable by group or others; every file is opened relative to that descriptor
//! (`openat`, `O_NOFOLLOW|O_CLOEXEC`, never by path), and must be a regular file of the
//! effective user with one link (another name elsewhere would be written through too).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use hvguest_core::kvp::effect::{Effect, EffectResult, FileId, FileStamp, IoError, WriteNews};
use nix::errno::Errno;
use nix::fcntl::{fcntl, openat, AtFlags, FcntlArg, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};

use crate::watch::Watch;

/// A pool directory or file that is not safe to use, or could not be opened. Each names
/// the path, what was found and what is required.
#[derive(Debug, thiserror::Error)]
pub enum PoolFileError {
    #[error("pool directory {}: no such directory", .path.display())]
    NoDirectory { path: PathBuf },
    #[error(
        "pool directory {} is a symbolic link; give the directory it points to, which must \
         itself be owned by uid {euid} and not writable by group or others",
        .path.display()
    )]
    DirectorySymlink { path: PathBuf, euid: u32 },
    #[error("pool directory {} is not a directory", .path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "pool directory {} is owned by uid {owner} with mode {mode:04o}; it must be owned by \
         uid {euid} (the user running this program) and not writable by group or others, \
         since whoever can write it can make this program write any file: fix it with \
         `chown {euid} {path}` and `chmod go-w {path}`, or use a new directory",
        .path.display(),
        path = .path.display()
    )]
    UnsafeDirectory {
        path: PathBuf,
        owner: u32,
        mode: u32,
        euid: u32,
    },
    #[error(
        "{} is a symbolic link; a pool file must be a regular file in the pool directory \
         (remove the link: its target is left alone)",
        .path.display()
    )]
    Symlink { path: PathBuf },
    #[error(
        "{} is a {kind}; a pool file must be a regular file (remove it)",
        .path.display()
    )]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "{} is owned by uid {owner}; a pool file must be owned by uid {euid}, the user \
         running this program (`chown {euid}` it if its contents are trusted, else remove it)",
        .path.display()
    )]
    NotOwned {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error(
        "{} has {links} links; a pool file must have exactly one, or writing the pool would \
         write the file's other names too (remove the other names, or copy the file)",
        .path.display()
    )]
    Links { path: PathBuf, links: u64 },
    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl PoolFileError {
    /// The errno the core sees for it (an effect's result is an errno).
    fn errno(&self) -> i32 {
        match self {
            PoolFileError::NoDirectory { .. } => nix::libc::ENOENT,
            PoolFileError::DirectorySymlink { .. } | PoolFileError::Symlink { .. } => {
                nix::libc::ELOOP
            }
            PoolFileError::NotADirectory { .. } => nix::libc::ENOTDIR,
            PoolFileError::Io { source, .. } => source.raw_os_error().unwrap_or(nix::libc::EIO),
            PoolFileError::UnsafeDirectory { .. }
            | PoolFileError::NotRegular { .. }
            | PoolFileError::NotOwned { .. }
            | PoolFileError::Links { .. } => nix::libc::EPERM,
        }
    }

    /// A refusal (the checks said no), as opposed to a failed system call.
    fn is_refusal(&self) -> bool {
        !matches!(self, PoolFileError::Io { .. })
    }
}

pub struct PoolFiles {
    dir: PathBuf,
    /// The pool directory as checked: every file is opened relative to it.
    dir_fd: OwnedFd,
    euid: u32,
    open: BTreeMap<FileId, File>,
    /// (device, inode) of each held file, once a stat has looked: while the name still
    /// shows this identity, one `fstatat` of the name is the whole stat.
    held_identity: BTreeMap<FileId, (u64, u64)>,
    /// The latest refusal not yet taken by `take_refusal`: the core only sees its errno.
    refusal: Option<PoolFileError>,
    /// Whether a missing file is created on first use (mode 0600). A tool that only
    /// reads opens existing files only, and a missing one is `ENOENT`.
    create: bool,
    /// The daemon's `pool_mode` (kvp.conf): the pool files' permission bits, given to
    /// new ones and set on existing ones when opened. `None` (tools): created 0600,
    /// never changed, so a tool never undoes what the administrator chose.
    pool_bits: Option<u32>,
    /// The pool files' write news (`TakeWrites`), once [`PoolFiles::watch_writes`]
    /// set it up; without it every take answers `NotWatched` (tools).
    watch: Option<Watch>,
    /// Files whose name did not show the descriptor we hold at a stat (another program
    /// replaced or removed it): a lock taken before held the old inode, and writes
    /// through another name reach no watch we have, so `TakeWrites` answers
    /// `NotWatched` (the machine falls back to stamps) until a lock is taken on the
    /// held descriptor while the name shows it.
    unsettled: BTreeSet<FileId>,
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

fn is_symlink(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

/// (device, inode): which file a name or descriptor is.
// The field types differ by system (`dev_t` is u32 on some): the conversions are no-ops
// on Linux and FreeBSD, not everywhere.
#[allow(clippy::useless_conversion)]
fn identity(st: &FileStat) -> (u64, u64) {
    (u64::from(st.st_dev), u64::from(st.st_ino))
}

/// A file's stamp: its length, and a hash of what changes when anyone writes it (the
/// identity, the modification and status-change times).
// The time fields are i64 on 64-bit targets and narrower elsewhere.
#[allow(clippy::useless_conversion)]
fn stamp(
    identity: (u64, u64),
    len: u64,
    mtime: (impl Into<i64>, impl Into<i64>),
    ctime: (impl Into<i64>, impl Into<i64>),
) -> FileStamp {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        identity,
        mtime.0.into(),
        mtime.1.into(),
        ctime.0.into(),
        ctime.1.into(),
    )
        .hash(&mut h);
    FileStamp {
        len,
        change: h.finish(),
    }
}

/// The permission bits (set-id and sticky included).
// `mode_t` is u16 on FreeBSD, u32 on Linux: a no-op conversion here, not there.
#[allow(clippy::useless_conversion)]
fn permissions(st: &FileStat) -> u32 {
    u32::from(st.st_mode) & 0o7777
}

fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

impl PoolFiles {
    /// The daemon's start: creates the pool directory if missing (with parents, mode
    /// 0700 for new ones), then opens it as [`PoolFiles::open`] does.
    pub fn create(dir: &Path) -> Result<PoolFiles, PoolFileError> {
        PoolFiles::create_with_modes(dir, 0o700, None)
    }

    /// [`PoolFiles::create`] with kvp.conf's `pool_mode`: new directories get
    /// `dir_bits`, pool files `pool_bits` (journals stay 0600).
    pub fn create_with_modes(
        dir: &Path,
        dir_bits: u32,
        pool_bits: Option<u32>,
    ) -> Result<PoolFiles, PoolFileError> {
        assert!(
            pool_bits.is_none_or(|b| b & 0o022 == 0),
            "pool files writable by others"
        );
        assert!(dir_bits & 0o022 == 0, "a pool directory writable by others");
        let new = std::fs::symlink_metadata(dir).is_err();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(dir_bits)
            .create(dir)
            .map_err(|source| PoolFileError::Io {
                action: "creating",
                path: dir.to_path_buf(),
                source,
            })?;
        let mut files = PoolFiles::open(dir)?;
        // A directory we made gets its mode whatever the umask took from it; the checks
        // above (ours, not writable by others) have passed on the descriptor.
        if new && pool_bits.is_some() {
            nix::sys::stat::fchmod(
                &files.dir_fd,
                Mode::from_bits_truncate(dir_bits as nix::libc::mode_t),
            )
            .map_err(|e| PoolFileError::Io {
                action: "setting the mode of",
                path: dir.to_path_buf(),
                source: e.into(),
            })?;
        }
        files.pool_bits = pool_bits;
        Ok(files)
    }

    /// Opens an existing pool directory, refused unless it is a directory (not a link
    /// to one) owned by the effective user and not writable by group or others.
    pub fn open(dir: &Path) -> Result<PoolFiles, PoolFileError> {
        let euid = nix::unistd::geteuid().as_raw();
        let path = dir.to_path_buf();
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let dir_fd = match nix::fcntl::open(dir, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(PoolFileError::NoDirectory { path }),
            Err(e) => {
                // Which refusal: FreeBSD says EMLINK for a link under O_NOFOLLOW, Linux
                // ELOOP, and either may say ENOTDIR; the name itself tells.
                return Err(match std::fs::symlink_metadata(dir) {
                    Ok(m) if m.file_type().is_symlink() => {
                        PoolFileError::DirectorySymlink { path, euid }
                    }
                    Ok(m) if !m.is_dir() => PoolFileError::NotADirectory { path },
                    _ => PoolFileError::Io {
                        action: "opening",
                        path,
                        source: e.into(),
                    },
                });
            }
        };
        let st = nix::sys::stat::fstat(&dir_fd).map_err(|e| PoolFileError::Io {
            action: "examining",
            path: path.clone(),
            source: e.into(),
        })?;
        let mode = permissions(&st);
        if st.st_uid != euid || mode & 0o022 != 0 {
            return Err(PoolFileError::UnsafeDirectory {
                path,
                owner: st.st_uid,
                mode,
                euid,
            });
        }
        Ok(PoolFiles {
            dir: path,
            dir_fd,
            euid,
            open: BTreeMap::new(),
            held_identity: BTreeMap::new(),
            refusal: None,
            create: true,
            pool_bits: None,
            watch: None,
            unsettled: BTreeSet::new(),
        })
    }

    /// For reading only: neither the directory nor any file is ever created (effects on
    /// a missing file fail with `ENOENT`). The files are still opened read-write, since
    /// the whole-file write lock, the one other writers take, needs it.
    /// The directory is checked as by [`PoolFiles::open`].
    pub fn existing(dir: &Path) -> Result<PoolFiles, PoolFileError> {
        let mut files = PoolFiles::open(dir)?;
        files.create = false;
        Ok(files)
    }

    pub fn path(&self, id: FileId) -> PathBuf {
        self.dir.join(id.file_name())
    }

    /// Whether the pool directory holds anything by that name (a link counts, dangling
    /// or not: opening it will say why it is refused). If we cannot tell, yes.
    pub fn exists(&self, id: FileId) -> bool {
        !matches!(
            fstatat(
                &self.dir_fd,
                id.file_name().as_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW
            ),
            Err(Errno::ENOENT)
        )
    }

    /// Opens (creating if missing, never truncating: the file holds records, ours and
    /// other programs') the file by its name in the pool directory, and checks what
    /// was opened.
    fn open_file(&self, id: FileId) -> Result<File, PoolFileError> {
        let path = self.path(id);
        let mut flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if self.create {
            flags |= OFlag::O_CREAT;
        }
        let bits = match id.kind {
            hvguest_core::kvp::effect::FileKind::Pool => self.pool_bits,
            hvguest_core::kvp::effect::FileKind::Journal => None,
        };
        let fd = match openat(
            &self.dir_fd,
            id.file_name().as_str(),
            flags,
            Mode::from_bits_truncate(bits.unwrap_or(0o600) as nix::libc::mode_t),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                // Which refusal: the name itself tells (see `open`).
                let found = fstatat(
                    &self.dir_fd,
                    id.file_name().as_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                );
                return Err(match found {
                    Ok(st) if is_symlink(&st) => PoolFileError::Symlink { path },
                    _ => PoolFileError::Io {
                        action: "opening",
                        path,
                        source: e.into(),
                    },
                });
            }
        };
        let file = File::from(fd);
        let meta = file.metadata().map_err(|source| PoolFileError::Io {
            action: "examining",
            path: path.clone(),
            source,
        })?;
        if !meta.file_type().is_file() {
            return Err(PoolFileError::NotRegular {
                path,
                kind: kind_of(meta.file_type()),
            });
        }
        if meta.uid() != self.euid {
            return Err(PoolFileError::NotOwned {
                path,
                owner: meta.uid(),
                euid: self.euid,
            });
        }
        if meta.nlink() != 1 {
            return Err(PoolFileError::Links {
                path,
                links: meta.nlink(),
            });
        }
        // The configured mode on the checked file (the umask may have narrowed a new
        // one; an existing one may predate the setting).
        if let Some(bits) = bits.filter(|&b| meta.mode() & 0o7777 != b) {
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(bits))
                .map_err(|source| PoolFileError::Io {
                    action: "setting the mode of",
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(file)
    }

    /// `open_file` for an effect: the core sees an errno; a refusal is kept for
    /// `take_refusal`, so the caller can say what was found.
    fn checked(&mut self, id: FileId) -> io::Result<File> {
        self.open_file(id).map_err(|e| {
            let errno = e.errno();
            if e.is_refusal() {
                self.refusal = Some(e);
            }
            io::Error::from_raw_os_error(errno)
        })
    }

    fn file(&mut self, id: FileId) -> io::Result<&File> {
        if !self.open.contains_key(&id) {
            let f = self.checked(id)?;
            self.hold(id, f);
        }
        Ok(&self.open[&id])
    }

    /// Keeps `f` as the descriptor of `id`; what is known of the one it replaces goes.
    fn hold(&mut self, id: FileId, f: File) {
        self.held_identity.remove(&id);
        if let Some(w) = self.watch.as_mut() {
            w.held(id, &f);
        }
        self.open.insert(id, f);
    }

    /// Starts watching the pool files for writes (the daemon, before its first load),
    /// so that `TakeWrites` answers from the kernel's news rather than `NotWatched`.
    /// Files already held are watched from now on. On failure nothing changes: every
    /// take answers `NotWatched` and the core relies on file stamps.
    pub fn watch_writes(&mut self) -> io::Result<()> {
        let mut w = Watch::new(&self.dir, &self.dir_fd)?;
        for (id, f) in &self.open {
            w.held(*id, f);
        }
        self.watch = Some(w);
        Ok(())
    }

    /// The latest refusal since the previous call (an effect on that file failed with
    /// `ELOOP` or `EPERM`), so that it can be told in words.
    pub fn take_refusal(&mut self) -> Option<PoolFileError> {
        self.refusal.take()
    }

    /// Opens every file now, so that a permission problem or a refused file shows at
    /// start-up, and LISA-style checks find all five pool files.
    pub fn open_all(&mut self, ids: impl IntoIterator<Item = FileId>) -> Result<(), PoolFileError> {
        for id in ids {
            if !self.open.contains_key(&id) {
                let f = self.open_file(id)?;
                self.hold(id, f);
            }
        }
        Ok(())
    }

    /// Creates (empty, mode 0600, through the same checks) each file named that has no
    /// name in the directory now, even one opened before and since removed: a tool's
    /// SET leaves all five pool files, as the daemon's start does. Nothing is created
    /// when this was opened for reading only.
    pub fn create_missing(&mut self, ids: &[FileId]) -> Result<(), PoolFileError> {
        if !self.create {
            return Ok(());
        }
        for &id in ids {
            if !self.exists(id) {
                let f = self.open_file(id)?;
                self.hold(id, f);
            }
        }
        Ok(())
    }

    /// A whole file's bytes, read through its checked descriptor (for `--record`).
    pub fn contents(&mut self, id: FileId) -> Result<Vec<u8>, PoolFileError> {
        let path = self.path(id);
        let len = self
            .file(id)
            .and_then(|f| f.metadata())
            .map_err(|source| PoolFileError::Io {
                action: "examining",
                path: path.clone(),
                source,
            })?
            .len();
        let len = u32::try_from(len).map_err(|_| PoolFileError::Io {
            action: "reading",
            path: path.clone(),
            source: io::Error::other("the file is larger than 4 GiB"),
        })?;
        self.read(id, 0, len).map_err(|source| PoolFileError::Io {
            action: "reading",
            path,
            source,
        })
    }

    /// The stamp from one `fstatat` of the name, when the name still shows the file we
    /// hold; `None` when anything more is needed (the first look, a replaced or
    /// missing file), which may open or close a file and so must run on the file
    /// lane. This part never waits on a suspended or frozen file system: a lookup and
    /// an attribute read (`Effect::never_waits`).
    pub fn stat_if_held(&mut self, id: FileId) -> Option<FileStamp> {
        let p = fstatat(
            &self.dir_fd,
            id.file_name().as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()?;
        let held =
            self.open.contains_key(&id) && self.held_identity.get(&id) == Some(&identity(&p));
        held.then(|| {
            stamp(
                identity(&p),
                p.st_size as u64,
                (p.st_mtime, p.st_mtime_nsec),
                (p.st_ctime, p.st_ctime_nsec),
            )
        })
    }

    /// [`PoolFiles::stat_if_held`], else the held descriptor too, following a
    /// replacement.
    fn stat(&mut self, id: FileId) -> io::Result<FileStamp> {
        if let Some(s) = self.stat_if_held(id) {
            return Ok(s);
        }
        let at_name = fstatat(
            &self.dir_fd,
            id.file_name().as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok();
        // If another program replaced the file (a new inode at its name), follow it,
        // through the same checks. If the name cannot be examined (gone, say), the
        // descriptor we hold is all there is.
        let held = self.file(id)?.metadata()?;
        let meta = match at_name {
            Some(p) if identity(&p) != (held.dev(), held.ino()) => {
                self.unsettled.insert(id);
                let f = self.checked(id)?;
                let m = f.metadata()?;
                self.hold(id, f);
                m
            }
            Some(_) => held,
            None => {
                self.unsettled.insert(id);
                held
            }
        };
        self.held_identity.insert(id, (meta.dev(), meta.ino()));
        Ok(stamp(
            (meta.dev(), meta.ino()),
            meta.len(),
            (meta.mtime(), meta.mtime_nsec()),
            (meta.ctime(), meta.ctime_nsec()),
        ))
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
                Ok(_) => {
                    // Locked on the descriptor the name shows: writers that honour the
                    // lock are ours to see again.
                    if kind != nix::libc::F_UNLCK as i16 && self.stat_if_held(id).is_some() {
                        self.unsettled.remove(&id);
                    }
                    return Ok(());
                }
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
            Effect::TakeWrites(f) => Ok(EffectResult::Writes(match self.watch.as_mut() {
                Some(w) if !self.unsettled.contains(f) => w.take(*f),
                _ => WriteNews::NotWatched,
            })),
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

    /// The write news on real files: every write counts, ours and another program's
    /// (through its own descriptor), a truncation too, and each is told once; without
    /// a watch (a tool) the answer is `NotWatched`.
    #[cfg(target_os = "linux")]
    #[test]
    fn write_news_on_real_files() {
        use std::io::Write;
        let dir = tmp("news");
        let mut pf = PoolFiles::create(&dir).unwrap();
        let f = FileId::pool(PoolId::Guest);
        let other = FileId::pool(PoolId::External);
        let take = |pf: &mut PoolFiles, id| match pf.execute(&Effect::TakeWrites(id)) {
            EffectResult::Writes(n) => n,
            r => panic!("{r:?}"),
        };
        assert_eq!(take(&mut pf, f), WriteNews::NotWatched, "no watch yet");
        pf.open_all([f, other]).unwrap();
        pf.watch_writes().unwrap();
        assert_eq!(
            take(&mut pf, f),
            WriteNews::Written,
            "unknown before the watch"
        );
        assert_eq!(take(&mut pf, f), WriteNews::Quiet);
        let write = Effect::Write {
            file: f,
            offset: 0,
            data: vec![1; 10],
        };
        assert_eq!(pf.execute(&write), EffectResult::Done);
        assert_eq!(take(&mut pf, f), WriteNews::Written, "our own write");
        assert_eq!(take(&mut pf, f), WriteNews::Quiet, "told once");
        // Another program appends through its own descriptor: told as soon as its
        // write returned, with no wait.
        let mut appender = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(f.file_name()))
            .unwrap();
        appender.write_all(&[2; 5]).unwrap();
        assert_eq!(
            take(&mut pf, other),
            WriteNews::Written,
            "unknown before the watch"
        );
        assert_eq!(
            take(&mut pf, other),
            WriteNews::Quiet,
            "not the file written"
        );
        assert_eq!(
            take(&mut pf, f),
            WriteNews::Written,
            "another program's append"
        );
        appender.set_len(3).unwrap();
        assert_eq!(take(&mut pf, f), WriteNews::Written, "a truncation");
        assert_eq!(take(&mut pf, f), WriteNews::Quiet);
        // Another program renames a new file over the name: once a stat has followed
        // it, our earlier lock (and a watch by name) cannot be trusted for it, so the
        // news is NotWatched until a lock is taken on the file the name shows.
        let stat = |pf: &mut PoolFiles| {
            assert!(matches!(
                pf.execute(&Effect::Stat(f)),
                EffectResult::Stamp(_)
            ))
        };
        stat(&mut pf);
        let fresh = dir.join("replacement");
        std::fs::write(&fresh, [9; 2560]).unwrap();
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&fresh, dir.join(f.file_name())).unwrap();
        stat(&mut pf);
        assert_eq!(take(&mut pf, f), WriteNews::NotWatched, "replaced");
        assert_eq!(pf.execute(&Effect::Lock(f)), EffectResult::Done);
        assert_ne!(
            take(&mut pf, f),
            WriteNews::NotWatched,
            "locked where the name shows"
        );
        assert_eq!(pf.execute(&Effect::Unlock(f)), EffectResult::Done);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn effects_on_real_files() {
        let root = tmp("effects");
        let dir = root.join("nested/pool");
        let mut pf = PoolFiles::create(&dir).unwrap();
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
        let mut pf = PoolFiles::create(&dir).unwrap();
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
        let mut pf = PoolFiles::existing(&dir).expect("a directory of ours");
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
        let mut pf = PoolFiles::create(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let r = pf.execute(&Effect::Stat(FileId::pool(PoolId::Guest)));
        assert!(matches!(r, EffectResult::Failed(IoError(2))), "{r:?}");
    }

    /// `nobody` on Linux and FreeBSD; a uid need not be in the password file.
    const NOBODY: u32 = 65534;

    fn can_chown() -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            eprintln!("skipping the parts that give files to another user: not root");
        }
        root
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_or_another_user_owns_is_refused() {
        let root = tmp("dir-checks");
        let dir = root.join("pool");
        assert!(matches!(
            PoolFiles::open(&dir),
            Err(PoolFileError::NoDirectory { .. })
        ));
        PoolFiles::create(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        for mode in [0o720, 0o702, 0o1777] {
            chmod(&dir, mode);
            for r in [PoolFiles::open(&dir), PoolFiles::create(&dir)] {
                let Err(e @ PoolFileError::UnsafeDirectory { .. }) = r else {
                    panic!("mode {mode:o} accepted")
                };
                let msg = e.to_string();
                let found = format!("mode {mode:04o}");
                assert!(msg.contains(&found), "{msg}");
                assert!(msg.contains(dir.to_str().unwrap()), "{msg}");
                assert!(msg.contains("not writable by group or others"), "{msg}");
            }
        }
        chmod(&dir, 0o755);
        PoolFiles::open(&dir).unwrap();
        if can_chown() {
            std::os::unix::fs::lchown(&dir, Some(NOBODY), None).unwrap();
            let e = PoolFiles::open(&dir)
                .err()
                .expect("nobody's directory refused");
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
        let alias = root.join("alias");
        std::os::unix::fs::symlink(&dir, &alias).unwrap();
        assert!(matches!(
            PoolFiles::open(&alias),
            Err(PoolFileError::DirectorySymlink { .. })
        ));
        let plain = root.join("plain");
        std::fs::write(&plain, b"").unwrap();
        assert!(matches!(
            PoolFiles::create(&plain),
            Err(PoolFileError::Io { .. } | PoolFileError::NotADirectory { .. })
        ));
        std::fs::remove_dir_all(root).unwrap();
    }

    /// A file the checks refuse: the effect fails, the refusal says why, the file is
    /// left alone.
    fn refused(pf: &mut PoolFiles, id: FileId) -> PoolFileError {
        let r = pf.execute(&Effect::Stat(id));
        assert!(matches!(r, EffectResult::Failed(_)), "{r:?}");
        pf.take_refusal().expect("a refusal")
    }

    #[test]
    fn links_and_files_of_others_are_refused() {
        let dir = tmp("file-checks");
        let mut pf = PoolFiles::create(&dir).unwrap();
        let guest = FileId::pool(PoolId::Guest);
        let target =
            std::env::temp_dir().join(format!("hvguest-files-target-{}", std::process::id()));
        std::fs::write(&target, b"precious").unwrap();
        std::os::unix::fs::symlink(&target, pf.path(guest)).unwrap();
        assert!(pf.exists(guest));
        let r = pf.execute(&Effect::Stat(guest));
        assert_eq!(r, EffectResult::Failed(IoError(nix::libc::ELOOP)));
        assert!(matches!(
            pf.take_refusal(),
            Some(PoolFileError::Symlink { .. })
        ));
        assert!(pf.take_refusal().is_none(), "taken once");
        // Dangling: nothing is created.
        std::fs::remove_file(&target).unwrap();
        assert!(matches!(
            refused(&mut pf, guest),
            PoolFileError::Symlink { .. }
        ));
        assert!(std::fs::symlink_metadata(&target).is_err());
        std::fs::remove_file(pf.path(guest)).unwrap();
        assert!(!pf.exists(guest));

        // Two names.
        std::fs::write(pf.path(guest), b"").unwrap();
        let other = dir.join("other-name");
        std::fs::hard_link(pf.path(guest), &other).unwrap();
        assert!(matches!(
            refused(&mut pf, guest),
            PoolFileError::Links { links: 2, .. }
        ));
        std::fs::remove_file(&other).unwrap();
        // A FIFO.
        let journal = FileId::journal(PoolId::Guest);
        nix::unistd::mkfifo(&pf.path(journal), Mode::S_IRWXU).unwrap();
        let e = refused(&mut pf, journal);
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        // Another user's.
        if can_chown() {
            let ext = FileId::pool(PoolId::External);
            std::fs::write(pf.path(ext), b"").unwrap();
            std::os::unix::fs::lchown(pf.path(ext), Some(NOBODY), None).unwrap();
            let e = refused(&mut pf, ext);
            assert!(
                matches!(e, PoolFileError::NotOwned { owner: NOBODY, .. }),
                "{e}"
            );
        }
        // All well: served.
        assert!(matches!(
            pf.execute(&Effect::Stat(guest)),
            EffectResult::Stamp(_)
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_replaced_by_a_link_is_not_followed() {
        let dir = tmp("replaced-by-link");
        let mut pf = PoolFiles::create(&dir).unwrap();
        let f = FileId::pool(PoolId::Guest);
        assert!(matches!(
            pf.execute(&Effect::Stat(f)),
            EffectResult::Stamp(_)
        ));
        let target = dir.join("elsewhere");
        std::fs::write(&target, [9u8; 3300]).unwrap();
        std::fs::remove_file(pf.path(f)).unwrap();
        std::os::unix::fs::symlink(&target, pf.path(f)).unwrap();
        assert!(matches!(refused(&mut pf, f), PoolFileError::Symlink { .. }));
        assert_eq!(std::fs::read(&target).unwrap(), [9u8; 3300]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
