//! A tool's SET or DELETE (`hvkvp set/delete`) as one job: the whole write path of a
//! second journaling writer, from the first lock to a typed outcome.
//!
//! 1. [`Recover`] the pool: a change a crashed writer (the daemon, or an earlier
//!    `hvkvp`) left in the journal is finished or discarded before ours is journaled.
//! 2. [`Mutate`] with no known stamp, so it reloads the file under its own lock (the
//!    stamp cannot reveal a change made by someone else in the same clock tick).
//! 3. If `Mutate` finds, under its own lock, that the journal holds another writer's
//!    entry ([`MutateResult::JournalPending`]: that writer's change failed or died after
//!    journaling in the hand-over between our `Recover` and our `Mutate`), it writes
//!    nothing and we go back to 1, at most [`TOOL_WRITE_ATTEMPTS`] times in all. This is
//!    what closes the lock hand-over between the two jobs: nothing is ever journaled
//!    over another writer's entry, because the check is made under the lock the write
//!    is made under.
//! 4. A change that failed after its journal write began is in doubt: another
//!    `Recover` settles it at once (as the daemon does), and the outcome says which way
//!    it went, or that it is still in doubt when that recovery failed too.
//!
//! The driver executes each effect literally and feeds the result back; it keeps no
//! state of its own beyond the files.

use crate::kvp::effect::{Effect, EffectResult, FileId, IoError};
use crate::kvp::jobs::{JobEvent, JobOutcome, MutOp, Mutate, MutateResult, Recover, Step};
use crate::kvp::pool::{Outcome, Pool};
use crate::kvp::wire::PoolId;
use crate::limits::{MAX_POOL_RECORDS, TOOL_WRITE_ATTEMPTS};

/// The kind of call that failed, for messages ("locking", "writing" ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Lock,
    Unlock,
    Stat,
    Read,
    Write,
    SetLen,
    Fsync,
    /// Not a file call (never issued by this job).
    Other,
}

/// The first call that failed in a step of the job: what, on which file, which errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedCall {
    pub call: Call,
    pub file: Option<FileId>,
    pub error: IoError,
}

/// How a tool's SET or DELETE ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolOutcome {
    /// Written and durable: journal, pool file and their fsyncs, journal cleared.
    Written,
    /// Nothing to write: the key already had that value.
    Unchanged,
    /// DELETE of a key the pool does not hold.
    NotFound,
    /// The pool holds as many records as we allow; nothing was written.
    Full,
    /// Another writer kept leaving journal entries between our recovery and our change.
    JournalBusy,
    /// Failed before anything reached the journal: nothing was changed.
    Failed(FailedCall),
    /// Journaled, then failed; recovery found it had not taken effect.
    NotApplied(FailedCall),
    /// Journaled, then failed, and recovery failed too: the next recovery decides.
    InDoubt(FailedCall),
}

impl ToolOutcome {
    /// Whether the change is known to hold now (written, or already true).
    pub fn acknowledged(&self) -> bool {
        matches!(
            self,
            ToolOutcome::Written | ToolOutcome::Unchanged | ToolOutcome::NotFound
        )
    }
}

/// What the job wants next.
#[derive(Debug)]
pub enum ToolStep {
    Effect(Effect),
    Finished(ToolOutcome),
}

#[derive(Debug)]
enum Phase {
    /// Nothing issued yet.
    Start,
    Recover(Recover),
    Mutate(Mutate, Pool),
    /// Settling a change in doubt; the cause is the mutation's failure.
    Settle(Recover, Pool, FailedCall),
    Done,
}

/// hvkvp's SET or DELETE on one file-backed pool.
#[derive(Debug)]
pub struct ToolWrite {
    pool: PoolId,
    op: MutOp,
    files_exist: bool,
    /// Recover-then-mutate rounds begun.
    rounds: usize,
    phase: Phase,
    /// The call the last effect made, to name it if it failed.
    last: Option<(Call, Option<FileId>)>,
    /// The first failure in the current sub-job.
    failure: Option<FailedCall>,
    /// Repairs and loads noted by the sub-jobs, oldest first (drain them freely).
    pub events: Vec<JobEvent>,
    /// The most records a SET may grow the pool file to ([`ToolWrite::within`]).
    max_records: usize,
}

/// The call an effect makes and the file it makes it on.
pub fn call_of(effect: &Effect) -> (Call, Option<FileId>) {
    match effect {
        Effect::Lock(f) => (Call::Lock, Some(*f)),
        Effect::Unlock(f) => (Call::Unlock, Some(*f)),
        Effect::Stat(f) => (Call::Stat, Some(*f)),
        Effect::Fsync(f) => (Call::Fsync, Some(*f)),
        // Never a failure to a job (no answer counts as no watch).
        Effect::TakeWrites(f) => (Call::Other, Some(*f)),
        Effect::Read { file, .. } => (Call::Read, Some(*file)),
        Effect::Write { file, .. } => (Call::Write, Some(*file)),
        Effect::SetLen { file, .. } => (Call::SetLen, Some(*file)),
        Effect::QueryAdapter(_) | Effect::ApplyIpConfig { .. } => (Call::Other, None),
    }
}

/// Whether `after` shows `op` done, compared with `before`, the pool it was planned on.
/// Sound as long as no other writer changed the same key in between (a tool is run by
/// an administrator on keys the host does not change at the same moment).
fn shows(op: &MutOp, before: &Pool, after: &Pool) -> bool {
    match op {
        MutOp::Set(k, v) => after.get(k) == Some(v),
        MutOp::Delete(k) => {
            let count = |p: &Pool| p.records().iter().filter(|r| r.key == *k).count();
            count(after) < count(before)
        }
    }
}

impl ToolWrite {
    /// `files_exist`: the pool file or its journal exists. A DELETE with neither finds
    /// nothing and creates nothing; a SET creates the pool file.
    pub fn new(pool: PoolId, op: MutOp, files_exist: bool) -> ToolWrite {
        ToolWrite {
            pool,
            op,
            files_exist,
            rounds: 0,
            phase: Phase::Start,
            last: None,
            failure: None,
            events: Vec::new(),
            max_records: MAX_POOL_RECORDS,
        }
    }

    /// A SET that would append to a pool file already holding `max_records` records is
    /// not made (`ToolOutcome::Full`): kvp.conf's `max_records` binds tools as it binds
    /// the host.
    pub fn within(mut self, max_records: usize) -> ToolWrite {
        self.max_records = max_records;
        self
    }

    pub fn pool(&self) -> PoolId {
        self.pool
    }

    pub fn op(&self) -> &MutOp {
        &self.op
    }

    /// Resumes with the result of the last effect (`None` on the first call) and returns
    /// the next effect or the outcome.
    pub fn resume(&mut self, r: Option<EffectResult>) -> ToolStep {
        if let (Some(EffectResult::Failed(error)), Some((call, file))) = (&r, self.last) {
            self.failure.get_or_insert(FailedCall {
                call,
                file,
                error: *error,
            });
        }
        let step = self.step(r);
        if let ToolStep::Effect(e) = &step {
            self.last = Some(call_of(e));
        }
        step
    }

    fn step(&mut self, mut r: Option<EffectResult>) -> ToolStep {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Start => {
                    if !self.files_exist && matches!(self.op, MutOp::Delete(_)) {
                        // Nothing to delete, and no reason to create the files.
                        return ToolStep::Finished(ToolOutcome::NotFound);
                    }
                    self.begin_round();
                    r = None;
                }
                Phase::Recover(mut job) => {
                    let s = job.resume(r.take());
                    self.events.append(&mut job.events);
                    match s {
                        Step::Effect(e) => {
                            self.phase = Phase::Recover(job);
                            return ToolStep::Effect(e);
                        }
                        Step::Finished(JobOutcome::Recovered {
                            result: Ok((pool, _)),
                            ..
                        }) => {
                            self.failure = None;
                            // No known stamp: the job reloads under its lock whatever
                            // the stamp says.
                            let job = Mutate::new(self.pool, self.op.clone(), None, false)
                                .within(self.max_records);
                            self.phase = Phase::Mutate(job, pool);
                        }
                        Step::Finished(JobOutcome::Recovered { result: Err(e), .. }) => {
                            return self.finish(ToolOutcome::Failed(self.cause(e)));
                        }
                        Step::Finished(_) => {
                            return self
                                .finish(ToolOutcome::Failed(self.cause(IoError::WRONG_RESULT)))
                        }
                    }
                }
                Phase::Mutate(mut job, before) => {
                    let s = job.resume(r.take(), &before);
                    self.events.append(&mut job.events);
                    let (reload, result) = match s {
                        Step::Effect(e) => {
                            self.phase = Phase::Mutate(job, before);
                            return ToolStep::Effect(e);
                        }
                        Step::Finished(JobOutcome::Mutated { reload, result, .. }) => {
                            (reload, result)
                        }
                        Step::Finished(_) => {
                            return self
                                .finish(ToolOutcome::Failed(self.cause(IoError::WRONG_RESULT)))
                        }
                    };
                    match result {
                        MutateResult::Applied { .. } => return self.finish(ToolOutcome::Written),
                        MutateResult::Nothing(Outcome::Ok) => {
                            return self.finish(ToolOutcome::Unchanged)
                        }
                        MutateResult::Nothing(Outcome::NotFound) => {
                            return self.finish(ToolOutcome::NotFound)
                        }
                        MutateResult::Nothing(Outcome::Full) => {
                            return self.finish(ToolOutcome::Full)
                        }
                        MutateResult::Failed(e) => {
                            return self.finish(ToolOutcome::Failed(self.cause(e)))
                        }
                        MutateResult::JournalPending => {
                            if self.rounds >= TOOL_WRITE_ATTEMPTS {
                                return self.finish(ToolOutcome::JournalBusy);
                            }
                            self.begin_round();
                        }
                        MutateResult::InDoubt(e) => {
                            let cause = self.cause(e);
                            // The pool the change was planned on (read under the lock it
                            // was made under); the recovered one if the job never read.
                            let planned_on = reload.map_or(before, |(p, _)| p);
                            self.failure = None;
                            self.phase = Phase::Settle(Recover::new(self.pool), planned_on, cause);
                        }
                    }
                    r = None;
                }
                Phase::Settle(mut job, before, cause) => {
                    let s = job.resume(r.take());
                    self.events.append(&mut job.events);
                    match s {
                        Step::Effect(e) => {
                            self.phase = Phase::Settle(job, before, cause);
                            return ToolStep::Effect(e);
                        }
                        Step::Finished(JobOutcome::Recovered {
                            result: Ok((after, _)),
                            ..
                        }) => {
                            let outcome = if shows(&self.op, &before, &after) {
                                ToolOutcome::Written
                            } else {
                                ToolOutcome::NotApplied(cause)
                            };
                            return self.finish(outcome);
                        }
                        Step::Finished(_) => return self.finish(ToolOutcome::InDoubt(cause)),
                    }
                }
                Phase::Done => {
                    // Resumed after finishing: a driver bug; say so without panicking.
                    return ToolStep::Finished(ToolOutcome::Failed(FailedCall {
                        call: Call::Other,
                        file: None,
                        error: IoError::WRONG_RESULT,
                    }));
                }
            }
        }
    }

    fn begin_round(&mut self) {
        self.rounds += 1;
        self.failure = None;
        self.phase = Phase::Recover(Recover::new(self.pool));
    }

    /// The failure to report: the first failed call of the sub-job that stopped, else
    /// the error the sub-job gave.
    fn cause(&self, error: IoError) -> FailedCall {
        self.failure.unwrap_or(FailedCall {
            call: Call::Other,
            file: Some(FileId::pool(self.pool)),
            error,
        })
    }

    fn finish(&mut self, outcome: ToolOutcome) -> ToolStep {
        self.phase = Phase::Done;
        ToolStep::Finished(outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kvp::effect::{FileKind, FileStamp, WriteNews};
    use crate::kvp::jobs::journal_entry;
    use crate::kvp::pool::Plan;
    use crate::kvp::record::{decode_pool, encode_pool, Record};
    use crate::kvp::text::{Key, Value};

    fn k(s: &str) -> Key {
        Key::new(s.as_bytes()).expect("short")
    }
    fn v(s: &str) -> Value {
        Value::new(s.as_bytes()).expect("short")
    }

    /// Files in memory; `hook` sees every effect before it runs and may fail it or
    /// change the files (another writer acting in between).
    struct Mem {
        files: BTreeMap<FileId, Vec<u8>>,
        version: u64,
        effects: usize,
    }

    impl Mem {
        fn new(pool: &[Record]) -> Mem {
            let mut files = BTreeMap::new();
            files.insert(FileId::pool(PoolId::Guest), encode_pool(pool));
            Mem {
                files,
                version: 0,
                effects: 0,
            }
        }
        fn exec(&mut self, e: &Effect) -> EffectResult {
            self.effects += 1;
            self.version += 1;
            match e {
                Effect::Lock(_) | Effect::Unlock(_) | Effect::Fsync(_) => EffectResult::Done,
                Effect::TakeWrites(_) => EffectResult::Writes(WriteNews::NotWatched),
                Effect::Stat(f) => EffectResult::Stamp(FileStamp {
                    len: self.files.get(f).map_or(0, |b| b.len() as u64),
                    change: self.version,
                }),
                Effect::Read { file, offset, len } => {
                    let b = self.files.entry(*file).or_default();
                    let s = (*offset as usize).min(b.len());
                    let t = (s + *len as usize).min(b.len());
                    EffectResult::Data(b[s..t].to_vec())
                }
                Effect::Write { file, offset, data } => {
                    let b = self.files.entry(*file).or_default();
                    let end = *offset as usize + data.len();
                    if b.len() < end {
                        b.resize(end, 0);
                    }
                    b[*offset as usize..end].copy_from_slice(data);
                    EffectResult::Done
                }
                Effect::SetLen { file, len } => {
                    self.files
                        .entry(*file)
                        .or_default()
                        .resize(*len as usize, 0);
                    EffectResult::Done
                }
                Effect::QueryAdapter(_) | Effect::ApplyIpConfig { .. } => {
                    EffectResult::Failed(IoError::WRONG_RESULT)
                }
            }
        }
        fn pool(&self) -> Vec<Record> {
            decode_pool(&self.files[&FileId::pool(PoolId::Guest)]).records
        }
        fn journal_len(&self) -> usize {
            self.files
                .get(&FileId::journal(PoolId::Guest))
                .map_or(0, Vec::len)
        }
    }

    fn run(
        mem: &mut Mem,
        op: MutOp,
        hook: impl FnMut(usize, &Effect, &mut Mem) -> Option<EffectResult>,
    ) -> ToolOutcome {
        run_within(mem, op, MAX_POOL_RECORDS, hook)
    }

    fn run_within(
        mem: &mut Mem,
        op: MutOp,
        max_records: usize,
        mut hook: impl FnMut(usize, &Effect, &mut Mem) -> Option<EffectResult>,
    ) -> ToolOutcome {
        let mut job = ToolWrite::new(PoolId::Guest, op, true).within(max_records);
        let mut r = None;
        let mut n = 0;
        loop {
            match job.resume(r.take()) {
                ToolStep::Finished(o) => return o,
                ToolStep::Effect(e) => {
                    n += 1;
                    assert!(n < 10_000, "the job ends");
                    r = Some(hook(n, &e, mem).unwrap_or_else(|| mem.exec(&e)));
                }
            }
        }
    }

    /// kvp.conf's `max_records`: a new key that would grow the file past it is not
    /// written; an update in place is.
    #[test]
    fn a_set_past_max_records_is_full_and_writes_nothing() {
        let start = [Record::new(k("a"), v("1")), Record::new(k("b"), v("2"))];
        let mut m = Mem::new(&start);
        let o = run_within(&mut m, MutOp::Set(k("c"), v("3")), 2, |_, _, _| None);
        assert_eq!(o, ToolOutcome::Full);
        assert_eq!(m.pool(), start.to_vec());
        assert_eq!(m.journal_len(), 0);
        let o = run_within(&mut m, MutOp::Set(k("a"), v("x")), 2, |_, _, _| None);
        assert_eq!(o, ToolOutcome::Written);
        let o = run_within(&mut m, MutOp::Set(k("c"), v("3")), 3, |_, _, _| None);
        assert_eq!(o, ToolOutcome::Written);
        assert_eq!(m.pool().len(), 3);
    }

    #[test]
    fn set_then_delete_write_and_report() {
        let mut m = Mem::new(&[Record::new(k("a"), v("1"))]);
        let set = MutOp::Set(k("b"), v("2"));
        assert_eq!(
            run(&mut m, set.clone(), |_, _, _| None),
            ToolOutcome::Written
        );
        assert_eq!(run(&mut m, set, |_, _, _| None), ToolOutcome::Unchanged);
        let del = MutOp::Delete(k("a"));
        assert_eq!(
            run(&mut m, del.clone(), |_, _, _| None),
            ToolOutcome::Written
        );
        assert_eq!(run(&mut m, del, |_, _, _| None), ToolOutcome::NotFound);
        assert_eq!(m.pool(), vec![Record::new(k("b"), v("2"))]);
        assert_eq!(m.journal_len(), 0);
    }

    #[test]
    fn a_delete_with_no_files_finds_nothing_and_issues_nothing() {
        let mut job = ToolWrite::new(PoolId::Guest, MutOp::Delete(k("a")), false);
        assert!(matches!(
            job.resume(None),
            ToolStep::Finished(ToolOutcome::NotFound)
        ));
    }

    /// A journal entry for `op` on `pool`, as another writer that died after journaling
    /// would leave it.
    fn foreign_entry(pool: &[Record], op: MutOp) -> Vec<u8> {
        let p = Pool::from_records(pool.to_vec());
        let plan = match op {
            MutOp::Set(k, v) => p.plan_set(&k, &v),
            MutOp::Delete(k) => p.plan_delete(&k),
        };
        let Plan::Write(m) = plan else {
            panic!("the test plans a write")
        };
        let bytes = encode_pool(pool);
        let pre = m
            .touched_existing_slots()
            .map(|s| {
                let at = s as usize * crate::limits::POOL_RECORD_SIZE;
                let mut r = [0u8; crate::limits::POOL_RECORD_SIZE];
                r.copy_from_slice(&bytes[at..at + crate::limits::POOL_RECORD_SIZE]);
                (s, r)
            })
            .collect();
        journal_entry(PoolId::Guest, &m, &pre).encode()
    }

    #[test]
    fn an_entry_left_in_the_lock_hand_over_is_recovered_not_overwritten() {
        // Between our Recover's unlock and our Mutate's lock, another writer journals
        // `c=3`, extends the file and dies. Our Mutate sees the entry under its own lock, writes nothing,
        // and the next round's Recover finishes the other change before ours is made.
        let start = [Record::new(k("a"), v("1"))];
        let mut m = Mem::new(&start);
        let entry = foreign_entry(&start, MutOp::Set(k("c"), v("3")));
        let mut locks = 0;
        let o = run(&mut m, MutOp::Set(k("b"), v("2")), |_, e, mem| {
            if matches!(e, Effect::Lock(_)) {
                locks += 1;
                if locks == 2 {
                    mem.files
                        .insert(FileId::journal(PoolId::Guest), entry.clone());
                    // It died after extending the file for its append, as the protocol
                    // does before writing the record; an entry whose extension is gone
                    // would be discarded, not finished.
                    let file = mem.files.entry(FileId::pool(PoolId::Guest)).or_default();
                    file.resize(file.len() + crate::limits::POOL_RECORD_SIZE, 0);
                }
            }
            None
        });
        assert_eq!(o, ToolOutcome::Written);
        let want = vec![
            Record::new(k("a"), v("1")),
            Record::new(k("c"), v("3")),
            Record::new(k("b"), v("2")),
        ];
        assert_eq!(m.pool(), want);
        assert_eq!(m.journal_len(), 0);
    }

    #[test]
    fn a_journal_refilled_every_round_gives_up_after_the_limit() {
        let start = [Record::new(k("a"), v("1"))];
        let mut m = Mem::new(&start);
        let mut locks = 0;
        let o = run(&mut m, MutOp::Set(k("b"), v("2")), |_, e, mem| {
            if matches!(e, Effect::Lock(_)) {
                locks += 1;
                // Every Mutate's lock (the even ones) finds a fresh foreign entry.
                if locks % 2 == 0 {
                    let now: Vec<Record> = mem.pool();
                    let entry = foreign_entry(&now, MutOp::Set(k(&format!("x{locks}")), v("y")));
                    mem.files.insert(FileId::journal(PoolId::Guest), entry);
                }
            }
            None
        });
        assert_eq!(o, ToolOutcome::JournalBusy);
        assert_eq!(locks, 2 * TOOL_WRITE_ATTEMPTS);
        assert!(!m.pool().iter().any(|r| r.key == k("b")), "never written");
    }

    fn is_pool(e: &Effect) -> bool {
        matches!(call_of(e).1, Some(f) if f.kind == FileKind::Pool)
    }

    #[test]
    fn a_failure_after_journaling_is_settled_by_recovery() {
        // The pool fsync after the slot write fails: recovery finishes the change.
        let mut m = Mem::new(&[Record::new(k("a"), v("1"))]);
        let mut fsyncs = 0;
        let o = run(&mut m, MutOp::Set(k("a"), v("9")), |_, e, _| {
            if matches!(e, Effect::Fsync(_)) && is_pool(e) {
                fsyncs += 1;
                if fsyncs == 1 {
                    return Some(EffectResult::Failed(IoError::EIO));
                }
            }
            None
        });
        assert_eq!(o, ToolOutcome::Written);
        assert_eq!(m.pool(), vec![Record::new(k("a"), v("9"))]);
        assert_eq!(m.journal_len(), 0);
    }

    #[test]
    fn a_journal_write_that_failed_is_not_applied_and_names_the_call() {
        let mut m = Mem::new(&[Record::new(k("a"), v("1"))]);
        let o = run(&mut m, MutOp::Delete(k("a")), |_, e, _| {
            (matches!(e, Effect::Write { .. }) && !is_pool(e))
                .then_some(EffectResult::Failed(IoError::ENOSPC))
        });
        let ToolOutcome::NotApplied(c) = o else {
            panic!("{o:?}")
        };
        assert_eq!(c.call, Call::Write);
        assert_eq!(c.file, Some(FileId::journal(PoolId::Guest)));
        assert_eq!(c.error, IoError::ENOSPC);
        assert_eq!(m.pool(), vec![Record::new(k("a"), v("1"))]);
    }

    #[test]
    fn in_doubt_when_recovery_fails_too_and_failed_before_the_journal() {
        let mut m = Mem::new(&[Record::new(k("a"), v("1"))]);
        let mut failing = false;
        let o = run(&mut m, MutOp::Set(k("b"), v("2")), |_, e, _| {
            if matches!(e, Effect::Write { .. }) && !is_pool(e) {
                failing = true;
                return Some(EffectResult::Failed(IoError::EIO));
            }
            (failing && matches!(e, Effect::Lock(_))).then_some(EffectResult::Failed(IoError::EIO))
        });
        assert!(
            matches!(o, ToolOutcome::InDoubt(c) if c.call == Call::Write),
            "{o:?}"
        );
        // The second lock is the Mutate's: nothing reached the journal.
        let mut locks = 0;
        let o = run(&mut m, MutOp::Set(k("b"), v("2")), |_, e, _| {
            locks += usize::from(matches!(e, Effect::Lock(_)));
            (locks == 2 && matches!(e, Effect::Lock(_)))
                .then_some(EffectResult::Failed(IoError::EIO))
        });
        assert!(
            matches!(o, ToolOutcome::Failed(c) if c.call == Call::Lock),
            "{o:?}"
        );
        assert!(!o.acknowledged());
    }
}
