//! Pool files for tools (`hvkvp`): the daemon's persistence protocol, run synchronously.
//!
//! Nothing here decides how a pool file changes. Each operation runs one of the core's
//! jobs ([`Recover`], [`Refresh`], [`Mutate`]) to completion, executing every effect
//! with [`PoolFiles::execute`], the daemon's own file executor (whole-file `fcntl` locks,
//! plus `flock` on Linux, one descriptor per file, files created with mode 0600). So a
//! tool, `hv_kvp_daemon` and outside appenders such as cloud-init exclude each other
//! exactly as the daemon and those appenders do, and a change made here is journaled and
//! crash-safe in the same way.
//!
//! * [`PoolAccess::inspect`] runs `Inspect`, for commands that only read: under the
//!   lock it loads the file as it is and reports, as events, what recovery would do (a
//!   change a crashed writer left in the journal, a torn trailing record), changing
//!   nothing. Reading never writes; opened with [`PoolAccess::open_existing`], it does
//!   not even create a missing file.
//! * [`PoolAccess::load`] runs `Recover`, the repair: it takes the lock, finishes or
//!   discards any change a crashed writer left in the journal, cuts a torn trailing
//!   record, and loads (`hvkvp repair`, and before a change).
//! * [`PoolAccess::refresh`] runs `Refresh`: a `Stat`, and a reload under the lock only
//!   when the file's stamp changed (for polling); read-only too: a journal entry left
//!   waiting is inspected, not recovered.
//! * [`PoolAccess::set`] and [`PoolAccess::delete`] (and [`PoolAccess::clear`], one
//!   DELETE per record) drive the core's [`ToolWrite`] job,
//!   the whole write path: `Recover` (so a change left by a crashed writer is settled
//!   before ours is journaled), then `Mutate`, which reloads the file under its own lock
//!   before planning and refuses to journal over an entry another writer left in the
//!   lock hand-over (then the job recovers and retries, a bounded number of times). A
//!   change that fails after it was journaled (in doubt) is settled at once by another
//!   `Recover`, as the daemon does, and reported as written, not applied, or still in
//!   doubt. This module only executes the job's effects and words its outcome.
//!
//! A pool file that does not exist (and has no journal) reads as empty and is not
//! created by reading or by a DELETE; a SET that creates it creates every missing pool
//! file (all five, mode 0600), as the daemon does when it starts. The pool directory
//! itself is never created here.
//! The directory and every file are opened and checked by [`PoolFiles`] as the daemon
//! opens them (the directory the effective user's and not writable by others, the
//! files regular, ours, one link, never through a symbolic link): a refusal is an
//! [`AccessError::Refused`] that says what was found.

use std::io;
use std::path::{Path, PathBuf};

use hvguest_core::kvp::effect::{Effect, EffectResult, FileId, FileStamp, IoError};
use hvguest_core::kvp::jobs::{
    Inspect, InspectStep, JobEvent, JobOutcome, MutOp, Recover, Refresh, Step,
};
use hvguest_core::kvp::pool::Pool;
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::tool_write::{call_of, Call, FailedCall, ToolOutcome, ToolStep, ToolWrite};
use hvguest_core::kvp::wire::PoolId;
use hvguest_core::limits::DEFAULT_MAX_RECORDS;

use crate::files::{PoolFileError, PoolFiles};

/// What a SET or DELETE did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Written and durable (journal, pool file and their fsyncs, journal cleared).
    Written,
    /// Nothing to write: the key already had that value.
    Unchanged,
    /// DELETE of a key the pool does not hold.
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{}: no such directory (hv_kvp_daemon creates the pool directory when it starts)", .0.display())]
    NoDirectory(PathBuf),
    #[error(
        "the auto pool (2) has no file: hv_kvp_daemon generates its values when the host asks"
    )]
    AutoPool,
    /// The pool directory or a file in it is not safe to use, or could not be opened.
    #[error(transparent)]
    Refused(PoolFileError),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: the pool file holds {limit} records or more, and a new key may not grow it past max_records = {limit} (kvp.conf); nothing was written",
        path.display()
    )]
    Full { path: PathBuf, limit: usize },
    /// Another writer keeps leaving journal entries between our recovery and our change.
    #[error("{}: another writer keeps leaving journal entries; try again", .path.display())]
    JournalBusy { path: PathBuf },
    /// The change was journaled, then an I/O error stopped it and recovery could not
    /// settle it either: the next recovery (ours or the daemon's) finishes or discards it.
    #[error("{source}; the change was journaled, and whether it takes effect is decided by the next recovery of the pool (the next hvkvp command or hv_kvp_daemon)")]
    InDoubt {
        #[source]
        source: Box<AccessError>,
    },
    /// The change was journaled, then failed; recovery found it had not taken effect.
    #[error("{source}; recovery found the change had not taken effect: nothing was changed")]
    NotApplied {
        #[source]
        source: Box<AccessError>,
    },
}

/// A job the driver can run: each is resumed with its last effect's result.
trait Job {
    fn resume_with(&mut self, result: Option<EffectResult>) -> Step;
    fn take_events(&mut self) -> Vec<JobEvent>;
}

impl Job for Recover {
    fn resume_with(&mut self, result: Option<EffectResult>) -> Step {
        self.resume(result)
    }
    fn take_events(&mut self) -> Vec<JobEvent> {
        std::mem::take(&mut self.events)
    }
}

impl Job for Refresh {
    fn resume_with(&mut self, result: Option<EffectResult>) -> Step {
        self.resume(result)
    }
    fn take_events(&mut self) -> Vec<JobEvent> {
        std::mem::take(&mut self.events)
    }
}

/// The first effect that failed in a job, kept to name the file and the operation.
struct Failure {
    effect: Effect,
    error: IoError,
}

fn file_of(effect: &Effect) -> Option<FileId> {
    call_of(effect).1
}

fn action_of(call: Call) -> &'static str {
    match call {
        Call::Lock => "locking",
        Call::Unlock => "unlocking",
        Call::Stat => "examining",
        Call::Read => "reading",
        Call::Write => "writing",
        Call::SetLen => "resizing",
        Call::Fsync => "syncing",
        Call::Other => "using",
    }
}

fn os_error(e: IoError) -> io::Error {
    if e.0 > 0 {
        io::Error::from_raw_os_error(e.0)
    } else {
        io::Error::other(format!("the file executor failed: {e}"))
    }
}

/// Executes file effects. [`PoolFiles`], the daemon's executor, is the one tools use;
/// tests wrap it to put faults in between.
pub trait Executor {
    fn execute(&mut self, effect: &Effect) -> EffectResult;
    /// Where a file lives.
    fn path(&self, id: FileId) -> PathBuf;
    /// Whether anything has that name (a link too); yes when unsure.
    fn exists(&self, id: FileId) -> bool;
    /// Why a file was refused, if an effect failed because of it since the last call.
    fn take_refusal(&mut self) -> Option<PoolFileError>;
    /// Creates (mode 0600, empty) the files named that do not exist yet.
    fn create_missing(&mut self, ids: &[FileId]) -> Result<(), PoolFileError>;
}

impl Executor for PoolFiles {
    fn execute(&mut self, effect: &Effect) -> EffectResult {
        PoolFiles::execute(self, effect)
    }
    fn path(&self, id: FileId) -> PathBuf {
        PoolFiles::path(self, id)
    }
    fn exists(&self, id: FileId) -> bool {
        PoolFiles::exists(self, id)
    }
    fn take_refusal(&mut self) -> Option<PoolFileError> {
        PoolFiles::take_refusal(self)
    }
    fn create_missing(&mut self, ids: &[FileId]) -> Result<(), PoolFileError> {
        PoolFiles::create_missing(self, ids)
    }
}

/// One pool directory, its files opened on first use and kept open.
pub struct PoolAccess<E = PoolFiles> {
    files: E,
    events: Vec<JobEvent>,
    /// kvp.conf's `max_records`: a SET may not grow a pool file past it.
    max_records: usize,
}

impl PoolAccess<PoolFiles> {
    /// For commands that only read: nothing in `dir` is ever created or changed.
    pub fn open_existing(dir: &Path) -> Result<PoolAccess, AccessError> {
        checked(PoolFiles::existing(dir))
    }

    /// The directory must exist: a mistyped path is an error, not a new pool directory.
    pub fn open(dir: &Path) -> Result<PoolAccess, AccessError> {
        checked(PoolFiles::open(dir))
    }
}

/// The directory as `PoolFiles` found it, in the tool's words.
fn checked(files: Result<PoolFiles, PoolFileError>) -> Result<PoolAccess, AccessError> {
    match files {
        Ok(files) => Ok(PoolAccess::with_executor(files)),
        Err(PoolFileError::NoDirectory { path }) => Err(AccessError::NoDirectory(path)),
        Err(e) => Err(AccessError::Refused(e)),
    }
}

impl<E: Executor> PoolAccess<E> {
    /// Access through another executor (tests: `PoolFiles` with faults).
    pub fn with_executor(files: E) -> PoolAccess<E> {
        PoolAccess {
            files,
            events: Vec::new(),
            max_records: DEFAULT_MAX_RECORDS,
        }
    }

    /// A SET that would append to a pool file already holding `max_records` records is
    /// refused (`AccessError::Full`): kvp.conf binds `hvkvp` as it binds the host.
    pub fn within(mut self, max_records: usize) -> PoolAccess<E> {
        self.max_records = max_records;
        self
    }

    /// The pool file's path.
    pub fn path(&self, pool: PoolId) -> PathBuf {
        self.files.path(FileId::pool(pool))
    }

    /// Repairs, findings and loads noted by the jobs run so far (journal entries
    /// finished, discarded or found waiting, torn records cut, records loaded), oldest
    /// first.
    pub fn take_events(&mut self) -> Vec<JobEvent> {
        std::mem::take(&mut self.events)
    }

    /// Loads a pool as its file is now, changing nothing: what recovery would do is
    /// reported as events (`JobEvent::JournalPending`, and a torn tail as the load's
    /// `PoolIssue::PartialRecord`). `None` stamp: there is no file.
    pub fn inspect(&mut self, pool: PoolId) -> Result<(Pool, Option<FileStamp>), AccessError> {
        file_backed(pool)?;
        let mut job = Inspect::new(pool);
        let mut result = None;
        let mut failure: Option<Failure> = None;
        let outcome = loop {
            let step = job.resume(result.take());
            self.events.append(&mut job.events);
            match step {
                InspectStep::Finished(outcome) => break outcome,
                InspectStep::Effect(effect) => {
                    let r = self.files.execute(&effect);
                    if let EffectResult::Failed(error) = &r {
                        if failure.is_none() && *error != IoError::ENOENT {
                            failure = Some(Failure {
                                error: *error,
                                effect,
                            });
                        }
                    }
                    result = Some(r);
                }
            }
        };
        match outcome {
            Ok(Some((p, s))) => Ok((p, Some(s))),
            Ok(None) => Ok((Pool::new(), None)),
            Err(e) => Err(self.io_error(failure, e, pool)),
        }
    }

    /// Loads a pool after recovering it (the repair). `None` stamp: there is no file
    /// (nothing created).
    pub fn load(&mut self, pool: PoolId) -> Result<(Pool, Option<FileStamp>), AccessError> {
        file_backed(pool)?;
        if !self.exists(FileId::pool(pool)) && !self.exists(FileId::journal(pool)) {
            return Ok((Pool::new(), None));
        }
        let (p, s) = self.recover(pool)?;
        Ok((p, Some(s)))
    }

    /// Reloads a pool if its file changed since `known` (as `inspect`, `load` or a
    /// previous `refresh` returned it): `None` when unchanged. A file that disappeared
    /// reads as empty. If a crashed writer left a journal entry, the pool is inspected:
    /// the file as it is, with what recovery would do reported (reading never writes).
    pub fn refresh(
        &mut self,
        pool: PoolId,
        known: Option<FileStamp>,
    ) -> Result<Option<(Pool, Option<FileStamp>)>, AccessError> {
        file_backed(pool)?;
        if !self.exists(FileId::pool(pool)) {
            return Ok(known.map(|_| (Pool::new(), None)));
        }
        let mut job = Refresh::new(pool, known, false);
        let (outcome, failure) = self.run(&mut job);
        let JobOutcome::Refreshed {
            result,
            journal_pending,
            ..
        } = outcome
        else {
            unreachable!("a Refresh job finishes with Refreshed")
        };
        if journal_pending {
            return self.inspect(pool).map(Some);
        }
        match result {
            Ok(reload) => Ok(reload.map(|(p, s)| (p, Some(s)))),
            Err(e) => Err(self.io_error(failure, e, pool)),
        }
    }

    /// SET: updates the key's first record in place, or appends one.
    pub fn set(&mut self, pool: PoolId, key: &Key, value: &Value) -> Result<Change, AccessError> {
        self.mutate(pool, MutOp::Set(key.clone(), value.clone()))
    }

    /// DELETE: removes the key's first record (a later duplicate, if any, then shows).
    pub fn delete(&mut self, pool: PoolId, key: &Key) -> Result<Change, AccessError> {
        self.mutate(pool, MutOp::Delete(key.clone()))
    }

    /// Empties a pool (`hvkvp clear`): every record it holds when it is read (after
    /// recovery) is removed by a DELETE of its key, each one the whole write path of
    /// [`PoolAccess::delete`]: under the lock, journaled, durable before the next. So
    /// the daemon and other writers may run meanwhile, and a crash or power loss at any
    /// point leaves whole records, the change in progress finished or discarded by the
    /// next recovery: the pool holds some of its old records, none torn, and running
    /// it again finishes the job. Records another program adds meanwhile are theirs
    /// and stay. Returns how many records were removed; a missing pool file is empty
    /// and nothing is created.
    pub fn clear(&mut self, pool: PoolId) -> Result<usize, AccessError> {
        let (loaded, _) = self.load(pool)?;
        // Each key once, in file order, with how many records hold it: a DELETE removes
        // the first, so duplicates take one each (bounded by what the pool held).
        let mut keys: Vec<(Key, usize)> = Vec::new();
        for r in loaded.records() {
            match keys.iter_mut().find(|(k, _)| *k == r.key) {
                Some((_, n)) => *n += 1,
                None => keys.push((r.key.clone(), 1)),
            }
        }
        let mut removed = 0;
        for (key, held) in keys {
            for _ in 0..held {
                match self.delete(pool, &key)? {
                    Change::Written => removed += 1,
                    // Someone else removed it meanwhile: nothing left to do for it.
                    Change::NotFound | Change::Unchanged => break,
                }
            }
        }
        Ok(removed)
    }

    fn mutate(&mut self, pool: PoolId, op: MutOp) -> Result<Change, AccessError> {
        file_backed(pool)?;
        if matches!(op, MutOp::Set(..)) && !self.exists(FileId::pool(pool)) {
            self.create_pool_files()?;
        }
        let files_exist = self.exists(FileId::pool(pool)) || self.exists(FileId::journal(pool));
        let mut job = ToolWrite::new(pool, op, files_exist).within(self.max_records);
        let mut result = None;
        let outcome = loop {
            let step = job.resume(result.take());
            self.events.append(&mut job.events);
            match step {
                ToolStep::Finished(outcome) => break outcome,
                ToolStep::Effect(effect) => result = Some(self.files.execute(&effect)),
            }
        };
        match outcome {
            ToolOutcome::Written => Ok(Change::Written),
            ToolOutcome::Unchanged => Ok(Change::Unchanged),
            ToolOutcome::NotFound => Ok(Change::NotFound),
            ToolOutcome::Full => Err(AccessError::Full {
                path: self.path(pool),
                limit: self.max_records,
            }),
            ToolOutcome::JournalBusy => Err(AccessError::JournalBusy {
                path: self.path(pool),
            }),
            ToolOutcome::Failed(c) => Err(self.call_error(c, pool)),
            ToolOutcome::NotApplied(c) => Err(AccessError::NotApplied {
                source: Box::new(self.call_error(c, pool)),
            }),
            ToolOutcome::InDoubt(c) => Err(AccessError::InDoubt {
                source: Box::new(self.call_error(c, pool)),
            }),
        }
    }

    /// A SET that creates its pool file creates every missing pool file (all five,
    /// mode 0600, empty), as `hv_kvp_daemon` does when it starts: other tools
    /// (`hv_kvp_cmd`'s kind, test suites) refuse to list a pool directory with a file
    /// missing. Files that exist are left alone, so a refused file of another pool
    /// does not stop a write to this one.
    fn create_pool_files(&mut self) -> Result<(), AccessError> {
        let ids = PoolId::ALL.map(FileId::pool);
        self.files.create_missing(&ids).map_err(|e| match e {
            PoolFileError::NoDirectory { path } => AccessError::NoDirectory(path),
            e => AccessError::Refused(e),
        })
    }

    /// Words a failed call the job reported: the operation, the file, the errno; or,
    /// if a file was refused, why.
    fn call_error(&mut self, c: FailedCall, pool: PoolId) -> AccessError {
        if let Some(r) = self.files.take_refusal() {
            return AccessError::Refused(r);
        }
        AccessError::Io {
            action: action_of(c.call),
            path: c
                .file
                .map_or_else(|| self.path(pool), |id| self.files.path(id)),
            source: os_error(c.error),
        }
    }

    fn recover(&mut self, pool: PoolId) -> Result<(Pool, FileStamp), AccessError> {
        let mut job = Recover::new(pool);
        let (outcome, failure) = self.run(&mut job);
        let JobOutcome::Recovered { result, .. } = outcome else {
            unreachable!("a Recover job finishes with Recovered")
        };
        result.map_err(|e| self.io_error(failure, e, pool))
    }

    /// Runs a job to its outcome, one effect at a time, in order.
    fn run(&mut self, job: &mut impl Job) -> (JobOutcome, Option<Failure>) {
        let mut result = None;
        let mut failure: Option<Failure> = None;
        loop {
            let step = job.resume_with(result.take());
            self.events.extend(job.take_events());
            match step {
                Step::Finished(outcome) => return (outcome, failure),
                Step::Effect(effect) => {
                    let r = self.files.execute(&effect);
                    if let EffectResult::Failed(error) = &r {
                        if failure.is_none() {
                            failure = Some(Failure {
                                error: *error,
                                effect,
                            });
                        }
                    }
                    result = Some(r);
                }
            }
        }
    }

    fn io_error(&mut self, failure: Option<Failure>, error: IoError, pool: PoolId) -> AccessError {
        if let Some(r) = self.files.take_refusal() {
            return AccessError::Refused(r);
        }
        // The job reports the error of the effect that stopped it: the first failure.
        match failure {
            Some(f) => AccessError::Io {
                action: action_of(call_of(&f.effect).0),
                path: file_of(&f.effect).map_or_else(|| self.path(pool), |id| self.files.path(id)),
                source: os_error(f.error),
            },
            None => AccessError::Io {
                action: "using",
                path: self.path(pool),
                source: os_error(error),
            },
        }
    }

    fn exists(&self, id: FileId) -> bool {
        self.files.exists(id)
    }
}

fn file_backed(pool: PoolId) -> Result<(), AccessError> {
    match pool {
        PoolId::Auto => Err(AccessError::AutoPool),
        _ => Ok(()),
    }
}

/// Loads a pool (recovering it first, as the daemon does at start).
pub fn load(dir: &Path, pool: PoolId) -> Result<Pool, AccessError> {
    PoolAccess::open(dir)?.load(pool).map(|(p, _)| p)
}

/// SET a key in a pool file, durably.
pub fn set(dir: &Path, pool: PoolId, key: &Key, value: &Value) -> Result<Change, AccessError> {
    PoolAccess::open(dir)?.set(pool, key, value)
}

/// DELETE a key's first record from a pool file, durably.
pub fn delete(dir: &Path, pool: PoolId, key: &Key) -> Result<Change, AccessError> {
    PoolAccess::open(dir)?.delete(pool, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvguest_core::kvp::effect::FileKind;
    use hvguest_core::kvp::record::{decode_pool, encode_pool, Record};
    use std::os::unix::fs::DirBuilderExt;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hvguest-access-{name}-{}", std::process::id()));
        // Test scratch space: it may not exist, and a leftover is harmless.
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn k(s: &str) -> Key {
        Key::new(s.as_bytes()).unwrap()
    }

    fn v(s: &str) -> Value {
        Value::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn set_get_delete_through_the_jobs() {
        let dir = tmp("roundtrip");
        assert!(matches!(
            load(&dir, PoolId::Guest),
            Err(AccessError::NoDirectory(_))
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let mut a = PoolAccess::open(&dir).unwrap();
        let (p, s) = a.load(PoolId::Guest).unwrap();
        assert!(p.is_empty() && s.is_none(), "a missing file reads as empty");
        assert!(
            !a.path(PoolId::Guest).exists(),
            "and is not created by reading"
        );
        assert_eq!(
            a.set(PoolId::Guest, &k("a"), &v("1")).unwrap(),
            Change::Written
        );
        assert_eq!(
            a.set(PoolId::Guest, &k("a"), &v("1")).unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            a.set(PoolId::Guest, &k("b"), &v("2")).unwrap(),
            Change::Written
        );
        assert_eq!(a.delete(PoolId::Guest, &k("a")).unwrap(), Change::Written);
        assert_eq!(a.delete(PoolId::Guest, &k("a")).unwrap(), Change::NotFound);
        let bytes = std::fs::read(a.path(PoolId::Guest)).unwrap();
        assert_eq!(bytes, encode_pool(&[Record::new(k("b"), v("2"))]));
        let (p, s) = a.load(PoolId::Guest).unwrap();
        assert_eq!(p.get(&k("b")), Some(&v("2")));
        assert!(a.refresh(PoolId::Guest, s).unwrap().is_none(), "unchanged");
        assert_eq!(
            set(&dir, PoolId::Guest, &k("c"), &v("3")).unwrap(),
            Change::Written
        );
        let (p, _) = a.refresh(PoolId::Guest, s).unwrap().expect("changed");
        assert_eq!(
            decode_pool(&std::fs::read(a.path(PoolId::Guest)).unwrap()).records,
            p.records()
        );
        assert!(matches!(a.load(PoolId::Auto), Err(AccessError::AutoPool)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_set_that_creates_its_pool_file_creates_all_five() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmp("five");
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let mut a = PoolAccess::open(&dir).unwrap();
        let names = |dir: &Path| {
            let mut n: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(a.delete(PoolId::Guest, &k("a")).unwrap(), Change::NotFound);
        assert!(names(&dir).is_empty(), "a DELETE creates nothing");
        assert_eq!(
            a.set(PoolId::External, &k("a"), &v("1")).unwrap(),
            Change::Written
        );
        let pools: Vec<String> = PoolId::ALL
            .iter()
            .map(|&p| FileId::pool(p).file_name())
            .collect();
        for (i, name) in pools.iter().enumerate() {
            let meta = std::fs::metadata(dir.join(name)).expect("every pool file");
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
            assert_eq!(meta.len() == 0, i != 0, "{name}: only pool 0 was written");
        }
        // Another pool's missing file is created by the next SET that creates its own.
        std::fs::remove_file(dir.join(&pools[4])).unwrap();
        a.set(PoolId::External, &k("b"), &v("2")).unwrap();
        assert!(
            !dir.join(&pools[4]).exists(),
            "pool 0 exists: nothing created"
        );
        std::fs::remove_file(dir.join(&pools[1])).unwrap();
        a.set(PoolId::Guest, &k("b"), &v("2")).unwrap();
        assert!(dir.join(&pools[4]).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn clear_removes_every_record_duplicates_too_and_creates_nothing() {
        let dir = tmp("clear");
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let mut a = PoolAccess::open(&dir).unwrap();
        assert_eq!(a.clear(PoolId::Guest).unwrap(), 0);
        assert!(!a.path(PoolId::Guest).exists(), "nothing created");
        let recs = [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("a", "5")];
        let recs: Vec<Record> = recs.iter().map(|(x, y)| Record::new(k(x), v(y))).collect();
        std::fs::write(a.path(PoolId::Guest), encode_pool(&recs)).unwrap();
        assert_eq!(a.clear(PoolId::Guest).unwrap(), 5);
        assert_eq!(std::fs::metadata(a.path(PoolId::Guest)).unwrap().len(), 0);
        let journal = dir.join(FileId::journal(PoolId::Guest).file_name());
        assert_eq!(std::fs::metadata(journal).unwrap().len(), 0);
        assert_eq!(a.clear(PoolId::Guest).unwrap(), 0, "already empty");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_clear_stopped_by_a_failure_leaves_whole_records_and_a_second_one_finishes() {
        // The third journal write fails: two records are gone, the rest whole.
        let (dir, mut a) = faulty(
            "clear-fails",
            nth(3, |e| matches!(e, Effect::Write { .. }) && journal_file(e)),
        );
        for x in ["b", "c", "d"] {
            set(&dir, PoolId::Guest, &k(x), &v(x)).unwrap();
        }
        let e = a.clear(PoolId::Guest).unwrap_err();
        assert!(matches!(e, AccessError::NotApplied { .. }), "{e:?}");
        let left = on_disk(&dir);
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(a.clear(PoolId::Guest).unwrap(), 2);
        assert!(on_disk(&dir).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// `PoolFiles` with a fault: `fail` sees every effect and says which to fail (EIO)
    /// instead of executing it.
    struct Faulty {
        inner: PoolFiles,
        fail: Box<dyn FnMut(&Effect) -> bool>,
    }

    impl Executor for Faulty {
        fn execute(&mut self, effect: &Effect) -> EffectResult {
            if (self.fail)(effect) {
                EffectResult::Failed(IoError::EIO)
            } else {
                self.inner.execute(effect)
            }
        }
        fn path(&self, id: FileId) -> PathBuf {
            self.inner.path(id)
        }
        fn exists(&self, id: FileId) -> bool {
            self.inner.exists(id)
        }
        fn take_refusal(&mut self) -> Option<PoolFileError> {
            self.inner.take_refusal()
        }
        fn create_missing(&mut self, ids: &[FileId]) -> Result<(), PoolFileError> {
            self.inner.create_missing(ids)
        }
    }

    /// A guest pool holding `a=1`, and access to it through a fault.
    fn faulty(
        name: &str,
        fail: impl FnMut(&Effect) -> bool + 'static,
    ) -> (PathBuf, PoolAccess<Faulty>) {
        let dir = tmp(name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        set(&dir, PoolId::Guest, &k("a"), &v("1")).unwrap();
        let inner = PoolFiles::open(&dir).unwrap();
        let access = PoolAccess::with_executor(Faulty {
            inner,
            fail: Box::new(fail),
        });
        (dir, access)
    }

    /// Fails the `n`th effect (from 1) that `pick` selects, once.
    fn nth(n: usize, pick: impl Fn(&Effect) -> bool + 'static) -> impl FnMut(&Effect) -> bool {
        let mut seen = 0;
        move |e| {
            if pick(e) {
                seen += 1;
                seen == n
            } else {
                false
            }
        }
    }

    fn pool_file(e: &Effect) -> bool {
        matches!(file_of(e), Some(f) if f.kind == FileKind::Pool)
    }

    fn journal_file(e: &Effect) -> bool {
        matches!(file_of(e), Some(f) if f.kind == FileKind::Journal)
    }

    fn on_disk(dir: &Path) -> Vec<Record> {
        let bytes = std::fs::read(dir.join(FileId::pool(PoolId::Guest).file_name())).unwrap();
        decode_pool(&bytes).records
    }

    #[test]
    fn a_failure_before_the_journal_changes_nothing_and_names_the_step() {
        // The second lock is the Mutate's (the first is its Recover's).
        let (dir, mut a) = faulty("before-journal", nth(2, |e| matches!(e, Effect::Lock(_))));
        let e = a.set(PoolId::Guest, &k("b"), &v("2")).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                AccessError::Io {
                    action: "locking",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(msg.contains(".kvp_pool_1: Input/output error"), "{msg}");
        assert_eq!(on_disk(&dir), vec![Record::new(k("a"), v("1"))]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_change_in_doubt_that_reached_the_journal_is_finished_at_once() {
        // The slot is written, then its fsync (the append's only one) fails: the
        // journal holds the change.
        let (dir, mut a) = faulty(
            "in-doubt-finished",
            nth(1, |e| matches!(e, Effect::Fsync(_)) && pool_file(e)),
        );
        assert_eq!(
            a.set(PoolId::Guest, &k("b"), &v("2")).unwrap(),
            Change::Written
        );
        assert!(a
            .take_events()
            .iter()
            .any(|e| matches!(e, JobEvent::JournalFinished { .. })));
        let want = vec![Record::new(k("a"), v("1")), Record::new(k("b"), v("2"))];
        assert_eq!(on_disk(&dir), want);
        let journal = dir.join(FileId::journal(PoolId::Guest).file_name());
        assert_eq!(std::fs::metadata(journal).unwrap().len(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_change_in_doubt_that_never_reached_the_journal_is_not_applied() {
        let (dir, mut a) = faulty(
            "in-doubt-absent",
            nth(1, |e| matches!(e, Effect::Write { .. }) && journal_file(e)),
        );
        let e = a.delete(PoolId::Guest, &k("a")).unwrap_err();
        assert!(matches!(e, AccessError::NotApplied { .. }), "{e:?}");
        assert!(e.to_string().contains("nothing was changed"), "{e}");
        assert_eq!(on_disk(&dir), vec![Record::new(k("a"), v("1"))]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_change_in_doubt_that_recovery_cannot_settle_is_reported_so() {
        // The journal write fails, and so does every lock after it.
        let mut failed = false;
        let (dir, mut a) = faulty("in-doubt-stuck", move |e| {
            if matches!(e, Effect::Write { .. }) && journal_file(e) {
                failed = true;
                return true;
            }
            failed && matches!(e, Effect::Lock(_))
        });
        let e = a.set(PoolId::Guest, &k("b"), &v("2")).unwrap_err();
        assert!(matches!(e, AccessError::InDoubt { .. }), "{e:?}");
        assert!(e.to_string().contains("next recovery"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
