//! `SimFs`: files whose bytes are durable or volatile, and a crash that keeps what
//! `fsync` made durable plus, per the seed, some of what was not, possibly torn at
//! sector granularity. Also whole-file locks, injected I/O errors, and a frozen flag
//! (a suspended file system) under which writes cannot complete.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use hvguest_core::kvp::effect::{FileId, FileKind, FileStamp, IoError, WriteNews};
use hvguest_core::kvp::wire::PoolId;
use hvguest_core::limits::SECTOR_SIZE;

use crate::prng::Prng;

/// A file's name, as core's [`FileId::file_name`] gives it, made once per file: building
/// the name allocates, and the simulator needs one for every effect it executes and
/// every check it makes.
pub fn name_of(f: FileId) -> &'static str {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        PoolId::ALL
            .iter()
            .flat_map(|&p| [FileId::pool(p).file_name(), FileId::journal(p).file_name()])
            .collect()
    });
    let kind = match f.kind {
        FileKind::Pool => 0,
        FileKind::Journal => 1,
    };
    &names[f.pool.index() * 2 + kind]
}

/// One change not yet made durable.
#[derive(Clone, Debug)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct SimFile {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Pending>,
    /// Bumped on every change: the `change` part of a stamp.
    version: u64,
    /// The daemon process (by generation) whose latest `TakeWrites` of this file came
    /// after every change to it, as inotify or kqueue would tell it: cleared by every
    /// change, whoever makes it (the daemon itself, other programs, the tool, a crash).
    /// One watcher at a time is enough: only the daemon watches, and a restarted one
    /// (a new generation) finds every file written.
    quiet_for: Option<u32>,
}

/// The files by name, in name order (a crash visits them in that order, drawing from the
/// seed's stream per file, so the order is part of the run). A sorted list rather than a
/// map: there are a handful of files, looked up several times per simulated step, and
/// names of one length differ near their end (`.kvp_pool_0`, `.kvp_pool_1`), so
/// comparing the last byte before the rest rules out all but the one file.
#[derive(Clone, Debug, Default)]
struct Files(Vec<(String, SimFile)>);

impl Files {
    fn find(&self, name: &str) -> Option<usize> {
        let last = name.as_bytes().last();
        self.0.iter().position(|(n, _)| {
            n.len() == name.len() && n.as_bytes().last() == last && n.as_str() == name
        })
    }

    fn get(&self, name: &str) -> Option<&SimFile> {
        self.find(name).map(|i| &self.0[i].1)
    }

    /// Adds an empty file (not there yet) at its place in name order.
    fn insert(&mut self, name: &str) -> usize {
        let at = self.0.partition_point(|(n, _)| n.as_str() < name);
        self.0.insert(at, (name.to_string(), SimFile::default()));
        at
    }
}

/// Who holds a lock: the daemon (by its process generation) or an outside writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    Daemon(u32),
    Outside(u32),
}

/// Which call an injected fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsCall {
    Read,
    Write,
    SetLen,
    Fsync,
    Stat,
    Lock,
}

#[derive(Clone, Debug, Default)]
pub struct SimFs {
    files: Files,
    locks: BTreeMap<String, Owner>,
    /// Faults to inject: the next call of this kind on this file (or any file) fails.
    faults: Vec<(FsCall, Option<String>, IoError)>,
    pub frozen: bool,
    clock: u64,
    /// Linux after a write-back error: a failed `fsync` drops the unsynced pages (they
    /// stay visible in the page cache but will never reach the disk, and a later `fsync`
    /// that succeeds does not bring them back). Off: a failed `fsync` keeps them pending.
    pub fsync_error_drops: bool,
    /// Coarse timestamps (FreeBSD with a low `vfs.timestamp_precision`): the `change`
    /// part of a stamp is the virtual time divided by this tick, so a same-size change
    /// within one tick leaves the stamp as it was. `None`: every change is seen.
    pub stamp_tick_ms: Option<u64>,
    /// Virtual time, milliseconds (the world sets it as its clock moves).
    pub now_ms: u64,
}

/// Why a call could not complete now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsBlock {
    /// The file system is suspended: retry after thaw.
    Frozen,
    /// Someone else holds the lock: retry when it is released.
    Locked(Owner),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsError {
    Io(IoError),
    Blocked(FsBlock),
}

impl From<IoError> for FsError {
    fn from(e: IoError) -> Self {
        FsError::Io(e)
    }
}

fn apply(buf: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write { offset, data } => {
            let off = *offset as usize;
            if buf.len() < off + data.len() {
                buf.resize(off + data.len(), 0);
            }
            buf[off..off + data.len()].copy_from_slice(data);
        }
        Pending::SetLen(len) => buf.resize(*len as usize, 0),
    }
}

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }

    /// Queues a fault: the next `call` (on `file`, or on any file) fails with `err`.
    pub fn inject(&mut self, call: FsCall, file: Option<&str>, err: IoError) {
        self.faults.push((call, file.map(str::to_string), err));
    }

    fn fault(&mut self, call: FsCall, file: &str) -> Result<(), IoError> {
        let hit = self
            .faults
            .iter()
            .position(|(c, f, _)| *c == call && f.as_deref().is_none_or(|f| f == file));
        match hit {
            Some(i) => Err(self.faults.remove(i).2),
            None => Ok(()),
        }
    }

    fn file(&mut self, name: &str) -> &mut SimFile {
        let i = match self.files.find(name) {
            Some(i) => i,
            None => self.files.insert(name),
        };
        &mut self.files.0[i].1
    }

    pub fn exists(&self, name: &str) -> bool {
        self.files.find(name).is_some()
    }

    /// The bytes a reader sees now.
    pub fn contents(&self, name: &str) -> &[u8] {
        self.files.get(name).map_or(&[], |f| &f.current)
    }

    /// The bytes that would survive a crash that keeps nothing volatile.
    pub fn durable(&self, name: &str) -> &[u8] {
        self.files.get(name).map_or(&[], |f| &f.durable)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.0.iter().map(|(n, _)| n.as_str())
    }

    /// The stamp `stat` would return, without fault injection (for checks).
    pub fn peek_stamp(&self, name: &str) -> FileStamp {
        self.files
            .get(name)
            .map_or(FileStamp::default(), |f| FileStamp {
                len: f.current.len() as u64,
                change: f.version,
            })
    }

    /// Takes the queued faults away (another program's calls must not hit them).
    pub fn take_faults(&mut self) -> Vec<(FsCall, Option<String>, IoError)> {
        std::mem::take(&mut self.faults)
    }

    /// Puts faults taken with [`SimFs::take_faults`] back, first in line.
    pub fn restore_faults(&mut self, mut faults: Vec<(FsCall, Option<String>, IoError)>) {
        faults.append(&mut self.faults);
        self.faults = faults;
    }

    /// Faults queued and not yet hit.
    pub fn pending_faults(&self) -> usize {
        self.faults.len()
    }

    /// `TakeWrites` by the daemon of generation `watcher`: whether anyone changed the
    /// file since that daemon's previous take of it, consuming the news.
    pub fn take_writes(&mut self, name: &str, watcher: u32) -> WriteNews {
        let f = self.file(name);
        let quiet = f.quiet_for == Some(watcher);
        f.quiet_for = Some(watcher);
        if quiet {
            WriteNews::Quiet
        } else {
            WriteNews::Written
        }
    }

    /// Whether the daemon of generation `watcher` has news of the file waiting (a
    /// change since its latest take), without consuming it: for the checks.
    pub fn has_news(&self, name: &str, watcher: u32) -> bool {
        self.files
            .get(name)
            .is_none_or(|f| f.quiet_for != Some(watcher))
    }

    pub fn stat(&mut self, name: &str) -> Result<FileStamp, FsError> {
        self.fault(FsCall::Stat, name)?;
        let f = self.file(name);
        Ok(FileStamp {
            len: f.current.len() as u64,
            change: f.version,
        })
    }

    pub fn read(&mut self, name: &str, offset: u64, len: u32) -> Result<Vec<u8>, FsError> {
        self.fault(FsCall::Read, name)?;
        let f = self.file(name);
        let start = (offset as usize).min(f.current.len());
        let end = (start + len as usize).min(f.current.len());
        Ok(f.current[start..end].to_vec())
    }

    fn change(&mut self, name: &str, call: FsCall, p: Pending) -> Result<(), FsError> {
        if self.frozen {
            return Err(FsError::Blocked(FsBlock::Frozen));
        }
        self.fault(call, name)?;
        self.clock += 1;
        let stamp = self.next_stamp();
        let f = self.file(name);
        apply(&mut f.current, &p);
        f.pending.push(p);
        f.version = stamp;
        f.quiet_for = None;
        Ok(())
    }

    /// The `change` value a change made now gets: a counter, or the coarse tick.
    fn next_stamp(&self) -> u64 {
        match self.stamp_tick_ms {
            Some(t) => self.now_ms / t.max(1),
            None => self.clock,
        }
    }

    pub fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<(), FsError> {
        self.change(
            name,
            FsCall::Write,
            Pending::Write {
                offset,
                data: data.to_vec(),
            },
        )
    }

    /// An append as another program does it (`O_APPEND`): at the end, whatever it is.
    pub fn append(&mut self, name: &str, data: &[u8]) -> Result<(), FsError> {
        let end = self.contents(name).len() as u64;
        self.write(name, end, data)
    }

    pub fn set_len(&mut self, name: &str, len: u64) -> Result<(), FsError> {
        self.change(name, FsCall::SetLen, Pending::SetLen(len))
    }

    pub fn fsync(&mut self, name: &str) -> Result<(), FsError> {
        if self.frozen {
            return Err(FsError::Blocked(FsBlock::Frozen));
        }
        let drops = self.fsync_error_drops;
        if let Err(e) = self.fault(FsCall::Fsync, name) {
            if drops {
                // The pages were marked clean without reaching the disk.
                self.file(name).pending.clear();
            }
            return Err(e.into());
        }
        self.flush(name);
        Ok(())
    }

    /// Makes a file's pending changes durable, as a successful `fsync` does, without
    /// fault injection (other programs' writes: their failures are not ours to test).
    pub fn flush(&mut self, name: &str) {
        let f = self.file(name);
        let pending = std::mem::take(&mut f.pending);
        for p in &pending {
            apply(&mut f.durable, p);
        }
    }

    /// Makes every file durable (a clean shutdown or a scenario's starting state).
    pub fn sync_all(&mut self) {
        for (_, f) in self.files.0.iter_mut() {
            for p in std::mem::take(&mut f.pending) {
                apply(&mut f.durable, &p);
            }
        }
    }

    pub fn lock(&mut self, name: &str, who: Owner) -> Result<(), FsError> {
        match self.locks.get(name) {
            Some(&o) if o != who => return Err(FsError::Blocked(FsBlock::Locked(o))),
            _ => {}
        }
        self.fault(FsCall::Lock, name)?;
        self.locks.insert(name.to_string(), who);
        Ok(())
    }

    pub fn unlock(&mut self, name: &str, who: Owner) {
        if self.locks.get(name) == Some(&who) {
            self.locks.remove(name);
        }
    }

    pub fn lock_holder(&self, name: &str) -> Option<Owner> {
        self.locks.get(name).copied()
    }

    /// A process died: the kernel drops its locks.
    pub fn release_locks_of(&mut self, who: Owner) {
        self.locks.retain(|_, o| *o != who);
    }

    /// Power loss: each file keeps its durable bytes plus a prefix of its pending
    /// changes; the last change kept may be torn (a random subset of its sectors, and
    /// for a write past the end, perhaps the new length with zeros where sectors are
    /// missing).
    /// Returns a line per file that kept anything volatile, for the trace.
    pub fn crash(&mut self, prng: &mut Prng) -> Vec<String> {
        let mut notes = Vec::new();
        self.locks.clear();
        self.frozen = false;
        for (name, f) in self.files.0.iter_mut() {
            let n = f.pending.len() as u64;
            let keep = if n == 0 {
                0
            } else {
                prng.below(n + 1) as usize
            };
            let mut bytes = f.durable.clone();
            for p in &f.pending[..keep] {
                apply(&mut bytes, p);
            }
            let mut torn = false;
            if keep < f.pending.len() && prng.chance(1, 2) {
                if let Pending::Write { offset, data } = &f.pending[keep] {
                    // A torn write: some whole sectors of it reached the disk.
                    let mut partial = bytes.clone();
                    let off = *offset as usize;
                    for (i, sector) in data.chunks(SECTOR_SIZE).enumerate() {
                        if prng.chance(1, 2) {
                            let at = off + i * SECTOR_SIZE;
                            if partial.len() < at + sector.len() {
                                partial.resize(at + sector.len(), 0);
                            }
                            partial[at..at + sector.len()].copy_from_slice(sector);
                            torn = true;
                        }
                    }
                    // A write that grew the file: its new length may have reached the
                    // disk before its data (ext4 with data=writeback, XFS), so sectors
                    // that did not read as zeros up to its end.
                    if partial.len() < off + data.len() && prng.chance(1, 2) {
                        partial.resize(off + data.len(), 0);
                        torn = true;
                    }
                    bytes = partial;
                }
            }
            if keep > 0 || torn {
                notes.push(format!(
                    "{name}: kept {keep}/{n} pending changes{}",
                    if torn { ", next one torn" } else { "" }
                ));
            }
            f.durable = bytes.clone();
            f.current = bytes;
            f.pending.clear();
            f.quiet_for = None;
            // A crash changes the bytes, so the stamp moves as a change would: with coarse
            // stamps to the current tick (possibly the same one: that is what coarse
            // stamps do); otherwise to a fresh number from the shared clock, since
            // `version + 1` could equal the version a later change of this file is given,
            // and a stat would then miss that change.
            f.version = match self.stamp_tick_ms {
                Some(t) => f.version.max(self.now_ms / t.max(1)),
                None => {
                    self.clock += 1;
                    self.clock
                }
            };
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_kept_in_name_order_and_found_by_name() {
        let mut fs = SimFs::new();
        for name in [
            ".kvp_pool_1",
            ".kvp_pool_0.journal",
            "b",
            ".kvp_pool_0",
            "a",
        ] {
            fs.write(name, 0, name.as_bytes()).unwrap();
        }
        let names: Vec<&str> = fs.names().collect();
        assert_eq!(
            names,
            [
                ".kvp_pool_0",
                ".kvp_pool_0.journal",
                ".kvp_pool_1",
                "a",
                "b"
            ]
        );
        for name in names {
            assert_eq!(fs.contents(name), name.as_bytes());
        }
        assert!(!fs.exists(".kvp_pool_2") && fs.contents("c").is_empty());
    }

    #[test]
    fn fsync_makes_durable_and_crash_keeps_it() {
        let mut fs = SimFs::new();
        fs.write("a", 0, b"hello").unwrap();
        fs.fsync("a").unwrap();
        fs.write("a", 5, b" world").unwrap();
        assert_eq!(fs.contents("a"), b"hello world");
        assert_eq!(fs.durable("a"), b"hello");
        let mut seen_lost = false;
        let mut seen_kept = false;
        for seed in 0..64 {
            let mut f2 = fs.clone();
            f2.crash(&mut Prng::new(seed));
            let c = f2.contents("a").to_vec();
            assert!(c.starts_with(b"hello"));
            seen_lost |= c == b"hello";
            seen_kept |= c == b"hello world";
        }
        assert!(seen_lost && seen_kept);
    }

    #[test]
    fn frozen_blocks_writes_not_reads_and_locks_exclude() {
        let mut fs = SimFs::new();
        fs.write("a", 0, b"x").unwrap();
        fs.frozen = true;
        assert_eq!(
            fs.write("a", 0, b"y"),
            Err(FsError::Blocked(FsBlock::Frozen))
        );
        assert_eq!(fs.read("a", 0, 1).unwrap(), b"x");
        fs.frozen = false;
        fs.lock("a", Owner::Outside(1)).unwrap();
        assert_eq!(
            fs.lock("a", Owner::Daemon(0)),
            Err(FsError::Blocked(FsBlock::Locked(Owner::Outside(1))))
        );
        fs.unlock("a", Owner::Outside(1));
        fs.lock("a", Owner::Daemon(0)).unwrap();
    }

    #[test]
    fn failed_fsync_may_drop_unsynced_pages_for_good() {
        let mut fs = SimFs::new();
        fs.fsync_error_drops = true;
        fs.write("a", 0, b"old").unwrap();
        fs.fsync("a").unwrap();
        fs.write("a", 0, b"new").unwrap();
        fs.inject(FsCall::Fsync, Some("a"), IoError::EIO);
        assert_eq!(fs.fsync("a"), Err(FsError::Io(IoError::EIO)));
        // Still visible, and the retry "succeeds", but the disk keeps the old bytes.
        assert_eq!(fs.contents("a"), b"new");
        assert_eq!(fs.fsync("a"), Ok(()));
        assert_eq!(fs.durable("a"), b"old");
        fs.crash(&mut Prng::new(1));
        assert_eq!(fs.contents("a"), b"old");
    }

    #[test]
    fn coarse_stamps_miss_a_same_size_change_within_a_tick() {
        let mut fs = SimFs::new();
        fs.stamp_tick_ms = Some(1000);
        fs.now_ms = 1500;
        fs.write("a", 0, b"x").unwrap();
        let s = fs.peek_stamp("a");
        fs.now_ms = 1900;
        fs.write("a", 0, b"y").unwrap();
        assert_eq!(fs.peek_stamp("a"), s);
        fs.now_ms = 2000;
        fs.write("a", 0, b"z").unwrap();
        assert_ne!(fs.peek_stamp("a"), s);
    }

    #[test]
    fn injected_fault_hits_once() {
        let mut fs = SimFs::new();
        fs.inject(FsCall::Fsync, Some("a"), IoError::EIO);
        fs.write("a", 0, b"x").unwrap();
        assert_eq!(fs.fsync("b"), Ok(()));
        assert_eq!(fs.fsync("a"), Err(FsError::Io(IoError::EIO)));
        assert_eq!(fs.fsync("a"), Ok(()));
    }
}
