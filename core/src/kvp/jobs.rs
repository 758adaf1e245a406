//! The persistence protocol: file jobs that run on the file lane, one effect at a time.
//!
//! * [`Recover`] (start-up, and after a failed mutation): lock, finish or discard every
//!   journal entry, clear the journal, load the pool.
//! * [`Refresh`] (before a GET/ENUMERATE): `Stat`; if the stamp changed, reload.
//! * [`Mutate`] (SET/DELETE): lock, reload if changed, plan, read the exact bytes of the
//!   slots it will touch, then: journal write + fsync, (extend + fsync), slot writes,
//!   (cut), fsync, journal clear + fsync, stat, unlock. The host is answered only after
//!   all of that: a SET or DELETE acknowledged with OK is durable.
//!
//! A job is resumed with the result of its last effect and returns the next one, or
//! its outcome. Any failure after the journal write began leaves the pool to
//! [`Recover`], which sorts out exactly what the disk holds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::kvp::effect::{Effect, EffectResult, FileId, FileStamp, IoError, WriteNews};
use crate::kvp::journal::{judge, parse_journal, EntryRole, JournalEntry, JournalWrite, Verdict};
use crate::kvp::pool::{Mutation, Outcome, Plan, Pool};
use crate::kvp::record::{DecodedPool, PoolDecoder, PoolIssue, Record, RecordBytes};
use crate::kvp::text::{Key, Value};
use crate::kvp::wire::PoolId;
use crate::limits::{
    MAX_JOURNAL_ENTRIES, MAX_POOL_BYTES, MAX_POOL_RECORDS, POOL_RECORD_SIZE, READ_CHUNK,
};

const REC: u64 = POOL_RECORD_SIZE as u64;
/// Largest journal we read: every entry at its largest.
const MAX_JOURNAL_BYTES: u64 =
    (MAX_JOURNAL_ENTRIES * (64 + 4 * (4 + 2 * POOL_RECORD_SIZE) + POOL_RECORD_SIZE)) as u64;

/// What a job wants next.
#[derive(Debug)]
pub enum Step {
    Effect(Effect),
    Finished(JobOutcome),
}

/// Things worth logging that happened inside a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEvent {
    PartialRecordCut {
        pool: PoolId,
        bytes: u64,
    },
    JournalFinished {
        pool: PoolId,
        entry: usize,
    },
    JournalDiscarded {
        pool: PoolId,
        entry: usize,
        reason: &'static str,
    },
    JournalFollowUp {
        pool: PoolId,
        slot: u32,
    },
    JournalTornTail {
        pool: PoolId,
        bytes: u64,
    },
    /// The journal is longer than any we write ([`MAX_JOURNAL_BYTES`]): only its start
    /// was read; the rest is dropped with the journal.
    JournalTooLong {
        pool: PoolId,
        bytes: u64,
    },
    /// A follow-up removal recovery would journal was not made (`reason`): the slot's
    /// record stays (a duplicate of a record moved by the interrupted DELETE).
    FollowUpSkipped {
        pool: PoolId,
        slot: u32,
        reason: &'static str,
    },
    Loaded {
        pool: PoolId,
        records: usize,
        issues: Vec<PoolIssue>,
    },
    /// A change planned from memory (the file's stamp unchanged) read, under the lock,
    /// slots that do not hold what memory says: another program rewrote them within
    /// one tick of a coarse clock. The file was read again and the change replanned.
    StaleMemory {
        pool: PoolId,
        slot: u32,
    },
    /// [`Inspect`] found this journal entry waiting, and what recovery would do with it
    /// were it run on the file as it is now (nothing was done).
    JournalPending {
        pool: PoolId,
        entry: usize,
        verdict: Pending,
    },
}

/// What recovery would do with a journal entry, as [`Inspect`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Finish the change (its new records are partly written, or not yet).
    Finish,
    /// Drop it: it never took effect, or the file moved on without it.
    Discard(&'static str),
    /// Put back the old bytes of the records it half wrote (the file moved on).
    Undo(&'static str),
}

#[derive(Debug)]
pub enum JobOutcome {
    /// `Ok(None)`: unchanged. `Err`: the file could not be read; memory may be stale.
    /// `journal_pending`: under the lock the journal held another writer's entry, so
    /// the file may hold a half-made change: nothing was read (`Ok(None)`) and the
    /// pool needs recovery before anyone answers from it.
    ///
    /// `current` in every outcome: whether memory (after applying this outcome) equals
    /// the file as of the last `TakeWrites` the job consumed, so that until the next
    /// `TakeWrites` reports a write, memory can be trusted without a look at the file.
    Refreshed {
        pool: PoolId,
        result: Result<Option<(Pool, FileStamp)>, IoError>,
        journal_pending: bool,
        current: bool,
    },
    Mutated {
        pool: PoolId,
        reload: Option<(Pool, FileStamp)>,
        result: MutateResult,
        current: bool,
    },
    Recovered {
        pool: PoolId,
        result: Result<(Pool, FileStamp), IoError>,
        current: bool,
    },
}

#[derive(Debug)]
pub enum MutateResult {
    Applied {
        mutation: Mutation,
        stamp: FileStamp,
    },
    Nothing(Outcome),
    /// Nothing reached the pool file.
    Failed(IoError),
    /// The journal write began: what the disk holds is for recovery to find out.
    InDoubt(IoError),
    /// Under our lock the journal held another writer's entry (one that failed or died
    /// after journaling): nothing was written; the pool needs recovery first.
    JournalPending,
}

fn done(r: Option<EffectResult>) -> Result<(), IoError> {
    match r {
        Some(EffectResult::Done) => Ok(()),
        Some(EffectResult::Failed(e)) => Err(e),
        _ => Err(IoError::WRONG_RESULT),
    }
}

fn stamp(r: Option<EffectResult>) -> Result<FileStamp, IoError> {
    match r {
        Some(EffectResult::Stamp(s)) => Ok(s),
        Some(EffectResult::Failed(e)) => Err(e),
        _ => Err(IoError::WRONG_RESULT),
    }
}

/// A `TakeWrites` answer. A failure or a result of the wrong kind tells nothing, so it
/// counts as no watch at all: the job falls back on file stamps and leaves memory
/// marked not current.
fn news(r: Option<EffectResult>) -> WriteNews {
    match r {
        Some(EffectResult::Writes(n)) => n,
        _ => WriteNews::NotWatched,
    }
}

/// Whether a `TakeWrites` issued under the lock after a job's last write, by a job that
/// knows the whole file (it loaded it under this lock, or found it unchanged since memory
/// was last current), leaves memory current: any news it consumed is the job's own (other
/// writers wait for the lock, and their earlier writes are in what the job loaded), and
/// every later write is reported by the next `TakeWrites`.
fn current_after(knows: bool, n: WriteNews) -> bool {
    knows && matches!(n, WriteNews::Quiet | WriteNews::Written)
}

fn data(r: Option<EffectResult>) -> Result<Vec<u8>, IoError> {
    match r {
        Some(EffectResult::Data(d)) => Ok(d),
        Some(EffectResult::Failed(e)) => Err(e),
        _ => Err(IoError::WRONG_RESULT),
    }
}

/// Issues `e` from a job whose pool-file lock is `held`, asserting the lock discipline:
/// the lock is taken once and released once; only a `Stat` happens without it. Releasing
/// clears `held` (whatever the unlock's result, the job no longer relies on it).
fn issue(held: &mut bool, e: Effect) -> Step {
    match &e {
        Effect::Lock(_) => assert!(!*held, "the pool lock is taken twice"),
        Effect::Unlock(_) => {
            assert!(*held, "unlock without the pool lock");
            *held = false;
        }
        Effect::Stat(_) | Effect::TakeWrites(_) => {}
        other => assert!(*held, "{other:?} without the pool lock"),
    }
    Step::Effect(e)
}

/// Reads a file from offset 0 in chunks, up to [`MAX_POOL_BYTES`]: records past
/// [`MAX_POOL_RECORDS`](crate::limits::MAX_POOL_RECORDS) are never held, so they are not
/// read either (a 10 GB sparse file costs what a full pool does); they are counted from
/// the file's length and reported (`PoolIssue::TooManyRecords`).
#[derive(Debug)]
struct Loader {
    file: FileId,
    len: u64,
    decoder: PoolDecoder,
}

impl Loader {
    fn new(file: FileId, len: u64) -> Loader {
        Loader {
            file,
            len,
            decoder: PoolDecoder::new(),
        }
    }
    fn next(&self) -> Option<Effect> {
        let off = self.decoder.offset();
        let end = self.len.min(MAX_POOL_BYTES);
        (off < end).then(|| Effect::Read {
            file: self.file,
            offset: off,
            len: (end - off).min(READ_CHUNK as u64) as u32,
        })
    }
    fn feed(&mut self, d: &[u8]) {
        if d.is_empty() {
            // The file is shorter than its stat said: stop here.
            self.len = self.decoder.offset();
        }
        self.decoder.feed(d);
    }
    fn finish(self) -> DecodedPool {
        let unread = self.len.saturating_sub(self.decoder.offset());
        self.decoder.finish_unread(unread)
    }
}

fn load_events(pool: PoolId, decoded: DecodedPool, events: &mut Vec<JobEvent>) -> Pool {
    let mut issues = decoded.issues.clone();
    let (p, dups) = Pool::from_decoded(decoded);
    issues.extend(dups);
    events.push(JobEvent::Loaded {
        pool,
        records: p.len(),
        issues,
    });
    p
}

/// A mutation's touched slots are read one by one into a map: each exactly once.
fn assert_distinct(slots: &[u32]) {
    let unique: BTreeSet<u32> = slots.iter().copied().collect();
    assert_eq!(unique.len(), slots.len(), "slot touched twice: {slots:?}");
}

/// Slot bytes for pre-images, read exactly.
fn slot_read(pool: PoolId, slot: u32) -> Effect {
    Effect::Read {
        file: FileId::pool(pool),
        offset: u64::from(slot) * REC,
        len: POOL_RECORD_SIZE as u32,
    }
}

fn as_record(d: &[u8]) -> RecordBytes {
    // Beyond the end of file a slot reads as zeros.
    let mut out = [0u8; POOL_RECORD_SIZE];
    let n = d.len().min(POOL_RECORD_SIZE);
    out[..n].copy_from_slice(&d[..n]);
    out
}

/// Journal entry for a planned mutation, given the exact bytes of existing slots.
///
/// `pre` holds exactly the slots the mutation touches that exist now (what
/// [`Mutation::touched_existing_slots`] names): a missing one would journal zeros as the
/// slot's old bytes, an extra one would mean the plan and the reads disagree.
pub fn journal_entry(pool: PoolId, m: &Mutation, pre: &BTreeMap<u32, RecordBytes>) -> JournalEntry {
    assert!(
        pre.keys()
            .copied()
            .eq(m.touched_existing_slots().collect::<BTreeSet<u32>>()),
        "pre-images {:?} are not the touched slots {:?}",
        pre.keys().collect::<Vec<_>>(),
        m.touched_existing_slots().collect::<Vec<_>>()
    );
    let pre_of = |s: u32| Box::new(pre.get(&s).copied().unwrap_or([0u8; POOL_RECORD_SIZE]));
    JournalEntry {
        pool,
        old_len: m.old_len(),
        new_len: m.new_len(),
        writes: m
            .writes
            .iter()
            .map(|w| JournalWrite {
                slot: w.slot,
                pre: pre_of(w.slot),
                post: Box::new(w.post.encode()),
            })
            .collect(),
        dropped: m.dropped_slot().map(|s| (s, pre_of(s))),
    }
}

/// Effects that finish a journal entry on the pool file (after the journal is durable).
fn apply_script(
    pool: PoolId,
    e: &JournalEntry,
    extend_to: Option<u64>,
    truncate_to: Option<u64>,
) -> VecDeque<Effect> {
    let f = FileId::pool(pool);
    let mut s = VecDeque::new();
    if let Some(len) = extend_to {
        // Grow first, so the record write lands inside the file's length. No fsync of
        // its own: a growing entry writes only the appended slot, which lies wholly in
        // the extension, so whatever of the two survives a crash, recovery is right
        // (`journal::judge`): no extension (or a partial one, whose torn tail is cut)
        // means nothing of ours reached the disk; the extension with zeros or a torn
        // mix of our record is finished. Both are allowed for a change never
        // acknowledged; the one fsync below comes before the reply.
        s.push_back(Effect::SetLen { file: f, len });
    }
    for w in &e.writes {
        s.push_back(Effect::Write {
            file: f,
            offset: u64::from(w.slot) * REC,
            data: w.post.to_vec(),
        });
    }
    if let Some(len) = truncate_to {
        s.push_back(Effect::SetLen { file: f, len });
    }
    s.push_back(Effect::Fsync(f));
    s
}

/// Recovery's clear: durable, because its follow-up entries must never be judged again
/// as if they were a mutation's (`EntryRole`).
fn clear_journal_script(pool: PoolId) -> VecDeque<Effect> {
    let j = FileId::journal(pool);
    VecDeque::from([Effect::SetLen { file: j, len: 0 }, Effect::Fsync(j)])
}

/// Whether a shrinking entry's cut record has a twin (the same key and value) in a slot
/// below it that the entry does not write. Recovery of such an entry, finished but
/// stale after a power loss, would find the twin where another program's delete could
/// have moved the cut record and remove it (`journal::judge`): a record lost, and the
/// key's first match changed if the twin was one of duplicates. Such a mutation clears
/// its journal durably (one fsync more), so its entry is never judged stale.
fn cut_record_has_a_twin(entry: &JournalEntry, pool: &Pool) -> bool {
    let Some((cut, bytes)) = &entry.dropped else {
        return false;
    };
    let record = Record::decode(bytes).0;
    let ours = entry.slots();
    (0..*cut).any(|s| !ours.contains(&s) && pool.entry(s) == Some(&record))
}

/// A mutation's clear, once its change is durable: no fsync. A running process sees the
/// journal empty at once (the page cache); after a power loss the entry may be back,
/// stale, and recovery judges it against a file that already shows it (finishing it
/// again changes nothing) or that others changed since (`EntryRole::Mutation`). The
/// next mutation's journal fsync makes the clear durable before it touches the pool.
fn lazy_clear_journal(pool: PoolId) -> Effect {
    Effect::SetLen {
        file: FileId::journal(pool),
        len: 0,
    }
}

// ---------------------------------------------------------------------------------------

/// Take the file's write news; if nobody wrote it and memory was current, done.
/// Otherwise stat, and reload if another program changed the file.
#[derive(Debug)]
pub struct Refresh {
    pool: PoolId,
    known: Option<FileStamp>,
    /// Memory was current as of the previous `TakeWrites` (the machine's flag).
    was_current: bool,
    /// The first `TakeWrites` answered Quiet or Written: the driver watches the file.
    watched: bool,
    /// What the outcome reports as `current`.
    current: bool,
    state: RefreshState,
    error: Option<IoError>,
    journal_pending: bool,
    /// We hold the pool file's lock (set by a successful `Lock`, cleared as `Unlock` is
    /// issued); checked on every effect.
    locked: bool,
    pub events: Vec<JobEvent>,
}

#[derive(Debug)]
enum RefreshState {
    Start,
    News,
    Stat,
    Lock,
    /// Checking, under the lock, that no other writer left a journal entry.
    Journal,
    StatLocked,
    Read(Loader, FileStamp),
    /// The reload is done; its `TakeWrites` before unlocking is in flight.
    NewsLocked(Pool, FileStamp),
    Unlock(Option<(Pool, FileStamp)>),
}

impl Refresh {
    /// `current`: the machine's flag for the pool (memory equals the file as of the
    /// last consumed write news).
    pub fn new(pool: PoolId, known: Option<FileStamp>, current: bool) -> Refresh {
        Refresh {
            pool,
            known,
            was_current: current,
            watched: false,
            current: false,
            state: RefreshState::Start,
            error: None,
            journal_pending: false,
            locked: false,
            events: Vec::new(),
        }
    }

    pub fn resume(&mut self, r: Option<EffectResult>) -> Step {
        let f = FileId::pool(self.pool);
        match self.step(r) {
            Ok(s) => s,
            Err(e) => {
                // A failed refresh leaves memory as it was; unlock if we hold the lock.
                if self.locked {
                    self.error = Some(e);
                    self.state = RefreshState::Unlock(None);
                    issue(&mut self.locked, Effect::Unlock(f))
                } else {
                    Step::Finished(JobOutcome::Refreshed {
                        pool: self.pool,
                        result: Err(e),
                        journal_pending: false,
                        current: false,
                    })
                }
            }
        }
    }

    fn step(&mut self, r: Option<EffectResult>) -> Result<Step, IoError> {
        let f = FileId::pool(self.pool);
        let state = std::mem::replace(&mut self.state, RefreshState::Start);
        Ok(match state {
            RefreshState::Start => {
                self.state = RefreshState::News;
                issue(&mut self.locked, Effect::TakeWrites(f))
            }
            RefreshState::News => {
                let n = news(r);
                if n == WriteNews::Quiet && self.was_current {
                    // Nobody wrote since memory was last the file: no stat, no lock.
                    return Ok(Step::Finished(JobOutcome::Refreshed {
                        pool: self.pool,
                        result: Ok(None),
                        journal_pending: false,
                        current: true,
                    }));
                }
                self.watched = n != WriteNews::NotWatched;
                self.state = RefreshState::Stat;
                issue(&mut self.locked, Effect::Stat(f))
            }
            RefreshState::Stat => {
                let s = stamp(r)?;
                if Some(s) == self.known {
                    // A trusted stamp says memory is the file as of this stat, which
                    // came after the news was taken: a write after the take is either
                    // seen by the stat or reported by the next take.
                    return Ok(Step::Finished(JobOutcome::Refreshed {
                        pool: self.pool,
                        result: Ok(None),
                        journal_pending: false,
                        current: self.watched,
                    }));
                }
                self.state = RefreshState::Lock;
                issue(&mut self.locked, Effect::Lock(f))
            }
            RefreshState::Lock => {
                done(r)?;
                self.locked = true;
                self.state = RefreshState::Journal;
                issue(&mut self.locked, Effect::Stat(FileId::journal(self.pool)))
            }
            RefreshState::Journal => {
                // Set first: an error below must still unlock.
                self.state = RefreshState::Journal;
                // A tool that only reads creates no file: a missing journal is empty.
                let journal_len = match r {
                    Some(EffectResult::Failed(IoError::ENOENT)) => 0,
                    r => stamp(r)?.len,
                };
                if journal_len > 0 {
                    // Reading now could show a half-made change: recovery first.
                    self.journal_pending = true;
                    self.state = RefreshState::Unlock(None);
                    return Ok(issue(&mut self.locked, Effect::Unlock(f)));
                }
                self.state = RefreshState::StatLocked;
                issue(&mut self.locked, Effect::Stat(f))
            }
            RefreshState::StatLocked => {
                self.state = RefreshState::StatLocked;
                let s = stamp(r)?;
                self.read(Loader::new(f, s.len), s)?
            }
            RefreshState::Read(mut loader, s) => {
                self.state = RefreshState::StatLocked;
                loader.feed(&data(r)?);
                self.read(loader, s)?
            }
            RefreshState::Unlock(reload) => {
                assert!(!self.locked);
                // An unlock failure changes nothing we hold.
                let result = match self.error {
                    Some(e) => Err(e),
                    None => Ok(reload),
                };
                let current = self.current && result.is_ok();
                Step::Finished(JobOutcome::Refreshed {
                    pool: self.pool,
                    result,
                    journal_pending: self.journal_pending,
                    current,
                })
            }
            RefreshState::NewsLocked(pool, s) => {
                self.current = current_after(true, news(r));
                self.state = RefreshState::Unlock(Some((pool, s)));
                issue(&mut self.locked, Effect::Unlock(f))
            }
        })
    }

    fn read(&mut self, loader: Loader, s: FileStamp) -> Result<Step, IoError> {
        if let Some(e) = loader.next() {
            self.state = RefreshState::Read(loader, s);
            return Ok(issue(&mut self.locked, e));
        }
        let pool = load_events(self.pool, loader.finish(), &mut self.events);
        // Consume the news of every write up to this load while still holding the lock:
        // the load saw them all, so only later writes should count as news.
        self.state = RefreshState::NewsLocked(pool, s);
        Ok(issue(
            &mut self.locked,
            Effect::TakeWrites(FileId::pool(self.pool)),
        ))
    }
}

// ---------------------------------------------------------------------------------------

/// A host SET or DELETE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MutOp {
    Set(Key, Value),
    Delete(Key),
}

#[derive(Debug)]
pub struct Mutate {
    pool: PoolId,
    op: MutOp,
    known: Option<FileStamp>,
    /// Memory was current as of the previous `TakeWrites` (the machine's flag).
    was_current: bool,
    /// Under the lock, the news said nobody wrote since memory was current: memory is
    /// the file, so it is not read again.
    fresh: bool,
    /// What the outcome reports as `current`.
    current: bool,
    state: MutateState,
    reload: Option<(Pool, FileStamp)>,
    /// Set once the journal write was issued: from then on a failure is in doubt.
    journaled: bool,
    /// We hold the pool file's lock (set by a successful `Lock`, cleared as `Unlock` is
    /// issued); checked on every effect.
    locked: bool,
    /// A SET may append only while the file holds fewer records than this.
    max_records: usize,
    pub events: Vec<JobEvent>,
}

#[derive(Debug)]
enum MutateState {
    Start,
    Lock,
    /// The `TakeWrites` right after locking.
    News,
    /// Checking, under the lock, that no other writer left a journal entry.
    Journal,
    Stat,
    Read(Loader, FileStamp),
    CutTail,
    PreImages {
        m: Mutation,
        want: Vec<u32>,
        got: BTreeMap<u32, RecordBytes>,
    },
    Script {
        m: Mutation,
        script: VecDeque<Effect>,
    },
    StatAfter(Mutation),
    /// The `TakeWrites` after the last write, before unlocking.
    NewsAfter(MutateResult),
    Unlock(MutateResult),
}

impl Mutate {
    /// `current`: the machine's flag for the pool (memory equals the file as of the
    /// last consumed write news).
    pub fn new(pool: PoolId, op: MutOp, known: Option<FileStamp>, current: bool) -> Mutate {
        Mutate {
            pool,
            op,
            known,
            was_current: current,
            fresh: false,
            current: false,
            state: MutateState::Start,
            reload: None,
            journaled: false,
            locked: false,
            max_records: MAX_POOL_RECORDS,
            events: Vec::new(),
        }
    }

    /// A SET that would append to a file already holding `max_records` records is not
    /// made (`Outcome::Full`): the host's budget. Tools are bound only by
    /// [`MAX_POOL_RECORDS`].
    pub fn within(mut self, max_records: usize) -> Mutate {
        self.max_records = max_records;
        self
    }

    pub fn pool(&self) -> PoolId {
        self.pool
    }

    pub fn op(&self) -> &MutOp {
        &self.op
    }

    /// `current` is the pool as the machine holds it (used unless the job reloaded).
    pub fn resume(&mut self, r: Option<EffectResult>, current: &Pool) -> Step {
        match self.step(r, current) {
            Ok(s) => s,
            Err(e) if matches!(self.state, MutateState::Unlock(_)) => {
                // Only reached when the lock itself failed, or unlock failed after
                // finishing: nothing more to undo.
                let _ = e;
                self.finish()
            }
            Err(e) => {
                let result = if self.journaled {
                    MutateResult::InDoubt(e)
                } else {
                    MutateResult::Failed(e)
                };
                if self.locked {
                    self.state = MutateState::Unlock(result);
                    issue(&mut self.locked, Effect::Unlock(FileId::pool(self.pool)))
                } else {
                    self.state = MutateState::Unlock(result);
                    self.finish()
                }
            }
        }
    }

    fn finish(&mut self) -> Step {
        assert!(!self.locked, "a mutation ends without the pool lock");
        let result = match std::mem::replace(&mut self.state, MutateState::Start) {
            MutateState::Unlock(r) => r,
            _ => unreachable!("finish is only called from the unlock state"),
        };
        let current = self.current
            && matches!(
                result,
                MutateResult::Applied { .. } | MutateResult::Nothing(_)
            );
        Step::Finished(JobOutcome::Mutated {
            pool: self.pool,
            reload: self.reload.take(),
            result,
            current,
        })
    }

    /// Ends a job that holds the lock and wrote what it meant to (or nothing): the news
    /// of its own writes is consumed first, so they do not send the next read to the
    /// file, and so that memory may be marked current.
    fn close(&mut self, result: MutateResult) -> Step {
        self.state = MutateState::NewsAfter(result);
        issue(
            &mut self.locked,
            Effect::TakeWrites(FileId::pool(self.pool)),
        )
    }

    fn step(&mut self, r: Option<EffectResult>, current: &Pool) -> Result<Step, IoError> {
        let f = FileId::pool(self.pool);
        let state = std::mem::replace(&mut self.state, MutateState::Start);
        Ok(match state {
            MutateState::Start => {
                self.state = MutateState::Lock;
                issue(&mut self.locked, Effect::Lock(f))
            }
            MutateState::Lock => {
                done(r)?;
                self.locked = true;
                // Taken under the lock: from here on only we write the file, so what
                // this says covers everything up to the moment we read or plan.
                self.state = MutateState::News;
                issue(&mut self.locked, Effect::TakeWrites(f))
            }
            MutateState::News => {
                self.fresh = self.was_current && news(r) == WriteNews::Quiet;
                self.state = MutateState::Journal;
                issue(&mut self.locked, Effect::Stat(FileId::journal(self.pool)))
            }
            MutateState::Journal => {
                if stamp(r)?.len > 0 {
                    // Writing our entry over it would lose what it says: recovery first.
                    self.state = MutateState::Unlock(MutateResult::JournalPending);
                    return Ok(issue(&mut self.locked, Effect::Unlock(f)));
                }
                self.state = MutateState::Stat;
                issue(&mut self.locked, Effect::Stat(f))
            }
            MutateState::Stat => {
                self.state = MutateState::Stat;
                let s = stamp(r)?;
                // News can miss a write the kernel never reports (a write through a
                // shared mapping, another name): a length that is not memory's turns
                // "fresh" into a reload, never into a change planned on stale memory
                // (an append would overwrite the record someone added).
                let same_len = s.len == current.file_records() as u64 * REC;
                if (self.fresh && same_len || Some(s) == self.known) && s.len % REC == 0 {
                    return self.plan(current);
                }
                self.fresh = false;
                self.read(Loader::new(f, s.len), s, current)?
            }
            MutateState::Read(mut loader, s) => {
                self.state = MutateState::Stat;
                loader.feed(&data(r)?);
                self.read(loader, s, current)?
            }
            MutateState::CutTail => {
                self.state = MutateState::CutTail;
                done(r)?;
                return self.plan(current);
            }
            MutateState::PreImages { m, want, mut got } => {
                let slot = want[got.len()];
                let d = data(r)?;
                if d.len() != POOL_RECORD_SIZE {
                    return Err(IoError::WRONG_RESULT);
                }
                got.insert(slot, as_record(&d));
                self.pre_images(m, want, got, current)
            }
            MutateState::Script { m, mut script } => {
                done(r)?;
                script.pop_front();
                self.run_script(m, script)
            }
            MutateState::StatAfter(m) => {
                let s = stamp(r)?;
                self.close(MutateResult::Applied {
                    mutation: m,
                    stamp: s,
                })
            }
            MutateState::NewsAfter(result) => {
                // Memory after this job is the reload or memory, with the mutation
                // applied: the file, if the job knew the whole file under this lock.
                let knows = self.fresh || self.reload.is_some();
                self.current = current_after(knows, news(r));
                self.state = MutateState::Unlock(result);
                issue(&mut self.locked, Effect::Unlock(f))
            }
            MutateState::Unlock(result) => {
                self.state = MutateState::Unlock(result);
                return Ok(self.finish());
            }
        })
    }

    fn read(&mut self, loader: Loader, s: FileStamp, current: &Pool) -> Result<Step, IoError> {
        if let Some(e) = loader.next() {
            self.state = MutateState::Read(loader, s);
            return Ok(issue(&mut self.locked, e));
        }
        let partial = loader.decoder.offset() % REC;
        let pool = load_events(self.pool, loader.finish(), &mut self.events);
        let aligned = s.len - s.len % REC;
        self.reload = Some((pool, FileStamp { len: aligned, ..s }));
        if partial != 0 || s.len % REC != 0 {
            // A torn record at the end, left by a writer that crashed: not a record,
            // and in the way of our append.
            self.events.push(JobEvent::PartialRecordCut {
                pool: self.pool,
                bytes: s.len % REC,
            });
            self.state = MutateState::CutTail;
            return Ok(issue(
                &mut self.locked,
                Effect::SetLen {
                    file: FileId::pool(self.pool),
                    len: aligned,
                },
            ));
        }
        self.plan(current)
    }

    fn plan(&mut self, current: &Pool) -> Result<Step, IoError> {
        let pool = self.reload.as_ref().map_or(current, |(p, _)| p);
        let plan = match &self.op {
            MutOp::Set(k, v) => pool.plan_set_within(k, v, self.max_records),
            MutOp::Delete(k) => pool.plan_delete(k),
        };
        Ok(match plan {
            Plan::Done(o) => self.close(MutateResult::Nothing(o)),
            Plan::Write(m) => {
                let want: Vec<u32> = m.touched_existing_slots().collect();
                assert_distinct(&want);
                self.pre_images(m, want, BTreeMap::new(), current)
            }
        })
    }

    fn pre_images(
        &mut self,
        m: Mutation,
        want: Vec<u32>,
        got: BTreeMap<u32, RecordBytes>,
        current: &Pool,
    ) -> Step {
        if let Some(&slot) = want.get(got.len()) {
            self.state = MutateState::PreImages { m, want, got };
            return issue(&mut self.locked, slot_read(self.pool, slot));
        }
        assert_eq!(got.len(), want.len(), "one pre-image per touched slot");
        if self.reload.is_none() {
            // Planned from memory because the stamp looked unchanged: the slots the
            // plan rests on must hold what memory says, or a same-size rewrite within
            // one timestamp tick went unseen. Then read the file and plan again (the
            // reloaded view is read under this lock, so it is not checked again).
            // Compared as records, so padding that differs in bytes only does not count.
            if let Some(&slot) = got.iter().find_map(|(s, bytes)| {
                let on_disk = Record::decode(bytes).0;
                (current.entry(*s) != Some(&on_disk)).then_some(s)
            }) {
                self.events.push(JobEvent::StaleMemory {
                    pool: self.pool,
                    slot,
                });
                self.known = None;
                self.fresh = false;
                self.state = MutateState::Stat;
                return issue(&mut self.locked, Effect::Stat(FileId::pool(self.pool)));
            }
        }
        let entry = journal_entry(self.pool, &m, &got);
        let extend = (m.new_records > m.old_records).then(|| m.new_len());
        let cut = (m.new_records < m.old_records).then(|| m.new_len());
        let j = FileId::journal(self.pool);
        let mut script = VecDeque::from([
            Effect::Write {
                file: j,
                offset: 0,
                data: entry.encode(),
            },
            Effect::Fsync(j),
        ]);
        script.extend(apply_script(self.pool, &entry, extend, cut));
        let planned_on = self.reload.as_ref().map_or(current, |(p, _)| p);
        if cut_record_has_a_twin(&entry, planned_on) {
            script.extend(clear_journal_script(self.pool));
        } else {
            script.push_back(lazy_clear_journal(self.pool));
        }
        self.journaled = true;
        self.run_script(m, script)
    }

    fn run_script(&mut self, m: Mutation, script: VecDeque<Effect>) -> Step {
        match script.front().cloned() {
            Some(e) => {
                self.state = MutateState::Script { m, script };
                issue(&mut self.locked, e)
            }
            None => {
                self.state = MutateState::StatAfter(m);
                issue(&mut self.locked, Effect::Stat(FileId::pool(self.pool)))
            }
        }
    }
}

/// The journal's first entry is a mutation's; any later one is recovery's follow-up.
fn role_of(entry: usize) -> EntryRole {
    if entry == 0 {
        EntryRole::Mutation
    } else {
        EntryRole::FollowUp
    }
}

// ---------------------------------------------------------------------------------------

/// Brings a pool file to a state the journal vouches for, then loads it.
#[derive(Debug)]
pub struct Recover {
    pool: PoolId,
    state: RecoverState,
    journal: Vec<u8>,
    journal_len: u64,
    entries: Vec<JournalEntry>,
    /// Where the next journal entry would be appended.
    journal_end: u64,
    len: u64,
    next_entry: usize,
    /// The slot a finished entry still needs removed while its follow-up, already in the
    /// journal, is judged; planned again once every entry is handled if none of them
    /// rewrote it.
    follow_up_owed: Option<u32>,
    /// We hold the pool file's lock (set by a successful `Lock`, cleared as `Unlock` is
    /// issued); checked on every effect.
    locked: bool,
    /// What the outcome reports as `current`.
    current: bool,
    pub events: Vec<JobEvent>,
}

#[derive(Debug)]
enum RecoverState {
    Start,
    Lock,
    StatJournal,
    ReadJournal,
    StatPool,
    CutTail,
    EntrySlots {
        want: Vec<u32>,
        got: BTreeMap<u32, RecordBytes>,
    },
    Script(VecDeque<Effect>, After),
    FollowUpLoad(Loader, u32),
    FollowUpPre {
        m: Mutation,
        want: Vec<u32>,
        got: BTreeMap<u32, RecordBytes>,
    },
    FinalStat,
    FinalLoad(Loader, FileStamp),
    /// The final load is done; its `TakeWrites` before unlocking is in flight.
    FinalNews(Pool, FileStamp),
    Unlock(Result<(Pool, FileStamp), IoError>),
}

/// What follows a script in recovery.
#[derive(Debug, Clone, Copy)]
enum After {
    /// Go on to the pool file (after making the journal durable).
    StatPool,
    NextEntry,
    FollowUp(u32),
    FinalStat,
}

impl Recover {
    pub fn new(pool: PoolId) -> Recover {
        Recover {
            pool,
            state: RecoverState::Start,
            journal: Vec::new(),
            journal_len: 0,
            entries: Vec::new(),
            journal_end: 0,
            len: 0,
            next_entry: 0,
            follow_up_owed: None,
            locked: false,
            current: false,
            events: Vec::new(),
        }
    }

    pub fn resume(&mut self, r: Option<EffectResult>) -> Step {
        match self.step(r) {
            Ok(s) => s,
            Err(e) => {
                if self.locked {
                    self.state = RecoverState::Unlock(Err(e));
                    issue(&mut self.locked, Effect::Unlock(FileId::pool(self.pool)))
                } else {
                    let result = match std::mem::replace(&mut self.state, RecoverState::Start) {
                        RecoverState::Unlock(Ok(x)) => Ok(x),
                        _ => Err(e),
                    };
                    let current = self.current && result.is_ok();
                    Step::Finished(JobOutcome::Recovered {
                        pool: self.pool,
                        result,
                        current,
                    })
                }
            }
        }
    }

    fn step(&mut self, r: Option<EffectResult>) -> Result<Step, IoError> {
        let f = FileId::pool(self.pool);
        let j = FileId::journal(self.pool);
        let state = std::mem::replace(&mut self.state, RecoverState::Start);
        Ok(match state {
            RecoverState::Start => {
                self.state = RecoverState::Lock;
                issue(&mut self.locked, Effect::Lock(f))
            }
            RecoverState::Lock => {
                done(r)?;
                self.locked = true;
                self.state = RecoverState::StatJournal;
                issue(&mut self.locked, Effect::Stat(j))
            }
            RecoverState::StatJournal => {
                self.state = RecoverState::StatJournal;
                self.journal_len = stamp(r)?.len;
                self.read_journal()
            }
            RecoverState::ReadJournal => {
                self.state = RecoverState::ReadJournal;
                let d = data(r)?;
                if d.is_empty() {
                    self.journal_len = self.journal.len() as u64;
                }
                self.journal.extend_from_slice(&d);
                self.read_journal()
            }
            RecoverState::StatPool => {
                self.state = RecoverState::StatPool;
                let s = stamp(r)?;
                self.len = s.len - s.len % REC;
                if s.len % REC != 0 {
                    self.events.push(JobEvent::PartialRecordCut {
                        pool: self.pool,
                        bytes: s.len % REC,
                    });
                    self.state = RecoverState::CutTail;
                    return Ok(issue(
                        &mut self.locked,
                        Effect::SetLen {
                            file: f,
                            len: self.len,
                        },
                    ));
                }
                self.next_entry_step()
            }
            RecoverState::CutTail => {
                self.state = RecoverState::CutTail;
                done(r)?;
                self.next_entry_step()
            }
            RecoverState::EntrySlots { want, mut got } => {
                self.state = RecoverState::StatPool;
                got.insert(want[got.len()], as_record(&data(r)?));
                self.entry_slots(want, got)
            }
            RecoverState::Script(mut script, after) => {
                self.state = RecoverState::StatPool;
                done(r)?;
                script.pop_front();
                self.script(script, after)
            }
            RecoverState::FollowUpLoad(mut loader, slot) => {
                self.state = RecoverState::StatPool;
                loader.feed(&data(r)?);
                self.follow_up_load(loader, slot)
            }
            RecoverState::FollowUpPre { m, want, mut got } => {
                self.state = RecoverState::StatPool;
                got.insert(want[got.len()], as_record(&data(r)?));
                self.follow_up_pre(m, want, got)
            }
            RecoverState::FinalStat => {
                self.state = RecoverState::FinalStat;
                let s = stamp(r)?;
                self.final_load(Loader::new(f, s.len), s)?
            }
            RecoverState::FinalLoad(mut loader, s) => {
                self.state = RecoverState::FinalStat;
                loader.feed(&data(r)?);
                self.final_load(loader, s)?
            }
            RecoverState::FinalNews(pool, s) => {
                self.current = current_after(true, news(r));
                self.state = RecoverState::Unlock(Ok((pool, s)));
                issue(&mut self.locked, Effect::Unlock(f))
            }
            RecoverState::Unlock(result) => {
                assert!(!self.locked);
                // An unlock error does not change what we loaded.
                let current = self.current && result.is_ok();
                Step::Finished(JobOutcome::Recovered {
                    pool: self.pool,
                    result,
                    current,
                })
            }
        })
    }

    fn read_journal(&mut self) -> Step {
        if self.journal_len > MAX_JOURNAL_BYTES && self.journal.is_empty() {
            self.events.push(JobEvent::JournalTooLong {
                pool: self.pool,
                bytes: self.journal_len,
            });
        }
        let want = self.journal_len.min(MAX_JOURNAL_BYTES);
        let have = self.journal.len() as u64;
        if have < want {
            self.state = RecoverState::ReadJournal;
            return issue(
                &mut self.locked,
                Effect::Read {
                    file: FileId::journal(self.pool),
                    offset: have,
                    len: (want - have).min(READ_CHUNK as u64) as u32,
                },
            );
        }
        let parsed = parse_journal(&self.journal);
        if parsed.ignored_bytes > 0 {
            self.events.push(JobEvent::JournalTornTail {
                pool: self.pool,
                bytes: parsed.ignored_bytes,
            });
        }
        self.entries = parsed.entries;
        self.journal_end = parsed.valid_len;
        let valid = std::mem::take(&mut self.journal);
        if self.entries.is_empty() {
            self.state = RecoverState::StatPool;
            return issue(&mut self.locked, Effect::Stat(FileId::pool(self.pool)));
        }
        // What we read may never have reached the disk (the fsync that failed and sent
        // us here). Acting on it would make its effects durable before it is: write it
        // again and fsync before touching the pool (a second fsync alone can report
        // success for pages a failed one dropped).
        let j = FileId::journal(self.pool);
        let rewrite = Effect::Write {
            file: j,
            offset: 0,
            data: valid[..self.journal_end as usize].to_vec(),
        };
        self.script(VecDeque::from([rewrite, Effect::Fsync(j)]), After::StatPool)
    }

    fn next_entry_step(&mut self) -> Step {
        match self.entries.get(self.next_entry) {
            Some(e) => {
                if let Some(reason) = e.out_of_bounds(self.pool) {
                    // Not ours: judge nothing, touch nothing (the journal is cleared
                    // with the rest once every entry is handled).
                    self.events.push(JobEvent::JournalDiscarded {
                        pool: self.pool,
                        entry: self.next_entry,
                        reason,
                    });
                    self.next_entry += 1;
                    return self.next_entry_step();
                }
                let want = e.slots_to_judge(self.len);
                self.entry_slots(want, BTreeMap::new())
            }
            None => {
                // A removal still owed (its follow-up in the journal could not be
                // finished, or finished without touching that slot: another program
                // changed the file since it was planned) is planned again against the
                // file as it is now. Leaving it would leave the cut record twice.
                if let Some(slot) = self.follow_up_owed.take() {
                    return self.script(VecDeque::new(), After::FollowUp(slot));
                }
                // Every entry is handled: clear the journal (if there was one), then load.
                if self.journal_len > 0 {
                    self.script(clear_journal_script(self.pool), After::FinalStat)
                } else {
                    self.state = RecoverState::FinalStat;
                    issue(&mut self.locked, Effect::Stat(FileId::pool(self.pool)))
                }
            }
        }
    }

    fn entry_slots(&mut self, want: Vec<u32>, got: BTreeMap<u32, RecordBytes>) -> Step {
        if let Some(&slot) = want.get(got.len()) {
            self.state = RecoverState::EntrySlots { want, got };
            return issue(&mut self.locked, slot_read(self.pool, slot));
        }
        let idx = self.next_entry;
        self.next_entry += 1;
        let e = &self.entries[idx];
        let zero = [0u8; POOL_RECORD_SIZE];
        let verdict = judge(e, role_of(idx), self.len, &|s| {
            got.get(&s).copied().unwrap_or(zero)
        });
        match verdict {
            Verdict::Discard(reason) => {
                self.events.push(JobEvent::JournalDiscarded {
                    pool: self.pool,
                    entry: idx,
                    reason,
                });
                self.state = RecoverState::StatPool;
                // Later entries are judged on their own; the script is empty.
                self.script(VecDeque::new(), After::NextEntry)
            }
            Verdict::Undo { reason, slots } => {
                self.events.push(JobEvent::JournalDiscarded {
                    pool: self.pool,
                    entry: idx,
                    reason,
                });
                let f = FileId::pool(self.pool);
                let mut script: VecDeque<Effect> = e
                    .writes
                    .iter()
                    .filter(|w| slots.contains(&w.slot))
                    .map(|w| Effect::Write {
                        file: f,
                        offset: u64::from(w.slot) * REC,
                        data: w.pre.to_vec(),
                    })
                    .collect();
                script.push_back(Effect::Fsync(f));
                self.state = RecoverState::StatPool;
                self.script(script, After::NextEntry)
            }
            Verdict::Finish {
                truncate_to,
                remove_slot,
            } => {
                self.events.push(JobEvent::JournalFinished {
                    pool: self.pool,
                    entry: idx,
                });
                // A growing entry is finished only once its extension is there.
                let script = apply_script(self.pool, e, None, truncate_to);
                if let Some(len) = truncate_to {
                    self.len = len;
                }
                // A follow-up entry may already be in the journal (a crash during an
                // earlier recovery): it is judged next, and the removal stays owed until
                // an entry that rewrites that slot finishes; otherwise plan one now.
                if self
                    .follow_up_owed
                    .is_some_and(|owed| e.writes.iter().any(|w| w.slot == owed))
                {
                    self.follow_up_owed = None;
                }
                let after = match remove_slot {
                    Some(slot) if self.next_entry >= self.entries.len() => After::FollowUp(slot),
                    Some(slot) => {
                        self.follow_up_owed = Some(slot);
                        After::NextEntry
                    }
                    None => After::NextEntry,
                };
                self.script(script, after)
            }
        }
    }

    fn script(&mut self, script: VecDeque<Effect>, after: After) -> Step {
        if let Some(e) = script.front().cloned() {
            self.state = RecoverState::Script(script, after);
            return issue(&mut self.locked, e);
        }
        match after {
            After::StatPool => {
                self.state = RecoverState::StatPool;
                issue(&mut self.locked, Effect::Stat(FileId::pool(self.pool)))
            }
            After::NextEntry => self.next_entry_step(),
            After::FollowUp(slot) if self.entries.len() >= MAX_JOURNAL_ENTRIES => {
                // A journal holds at most MAX_JOURNAL_ENTRIES that a later recovery
                // would read: one more could be lost after a crash.
                self.events.push(JobEvent::FollowUpSkipped {
                    pool: self.pool,
                    slot,
                    reason: "journal full",
                });
                self.next_entry_step()
            }
            After::FollowUp(slot) => {
                self.events.push(JobEvent::JournalFollowUp {
                    pool: self.pool,
                    slot,
                });
                self.state = RecoverState::StatPool;
                // Load the file to plan the removal with first-match semantics.
                let loader = Loader::new(FileId::pool(self.pool), self.len);
                self.follow_up_load(loader, slot)
            }
            After::FinalStat => {
                self.state = RecoverState::FinalStat;
                issue(&mut self.locked, Effect::Stat(FileId::pool(self.pool)))
            }
        }
    }

    fn follow_up_load(&mut self, loader: Loader, slot: u32) -> Step {
        if let Some(e) = loader.next() {
            self.state = RecoverState::FollowUpLoad(loader, slot);
            return issue(&mut self.locked, e);
        }
        let (pool, _) = Pool::from_decoded(loader.finish());
        if slot as usize >= pool.len() || !pool.complete() {
            // Nothing sensible to remove (the pool is beyond our limits): leave it.
            self.events.push(JobEvent::FollowUpSkipped {
                pool: self.pool,
                slot,
                reason: if pool.complete() {
                    "slot beyond the pool"
                } else {
                    "pool beyond MAX_POOL_RECORDS"
                },
            });
            return self.script(VecDeque::new(), After::NextEntry);
        }
        let m = pool.plan_remove_slot(slot);
        let want: Vec<u32> = m.touched_existing_slots().collect();
        assert_distinct(&want);
        self.follow_up_pre(m, want, BTreeMap::new())
    }

    fn follow_up_pre(
        &mut self,
        m: Mutation,
        want: Vec<u32>,
        got: BTreeMap<u32, RecordBytes>,
    ) -> Step {
        if let Some(&slot) = want.get(got.len()) {
            self.state = RecoverState::FollowUpPre { m, want, got };
            return issue(&mut self.locked, slot_read(self.pool, slot));
        }
        assert_eq!(got.len(), want.len(), "one pre-image per touched slot");
        let entry = journal_entry(self.pool, &m, &got);
        let j = FileId::journal(self.pool);
        let write = Effect::Write {
            file: j,
            offset: self.journal_end,
            data: entry.encode(),
        };
        self.journal_end += entry.encoded_len() as u64;
        self.journal_len = self.journal_len.max(self.journal_end);
        assert!(
            self.entries.len() < MAX_JOURNAL_ENTRIES,
            "a follow-up is planned only while the journal has room"
        );
        self.entries.push(entry);
        // Journal it durably, then judge and finish it like any other entry.
        self.script(VecDeque::from([write, Effect::Fsync(j)]), After::NextEntry)
    }

    fn final_load(&mut self, loader: Loader, s: FileStamp) -> Result<Step, IoError> {
        if let Some(e) = loader.next() {
            self.state = RecoverState::FinalLoad(loader, s);
            return Ok(issue(&mut self.locked, e));
        }
        let pool = load_events(self.pool, loader.finish(), &mut self.events);
        // After recovery's last write and its load, still under the lock: the news it
        // consumes is of writes the load saw (ours, or others' before we locked).
        self.state = RecoverState::FinalNews(pool, s);
        Ok(issue(
            &mut self.locked,
            Effect::TakeWrites(FileId::pool(self.pool)),
        ))
    }
}

// ---------------------------------------------------------------------------------------

/// Reads a pool as it is, changing nothing: what a tool's read-only command shows
/// (`hvkvp list`, `get`, `host`, `watch`). Reading must not write, so nothing here is
/// repaired: under the lock (so no writer is half-way through a change while we read),
/// it reads the journal and judges each entry on the file as it is now, reporting what
/// recovery would do ([`JobEvent::JournalPending`]; the entries are judged each on the
/// file as it is, while recovery judges each after the earlier ones are settled), then
/// loads the file, a torn trailing record included in the load's issues
/// (`PoolIssue::PartialRecord`), not cut. Repair is [`Recover`]'s, run by the daemon or
/// by an explicit command.
///
/// Files are never created: the driver opens them without `O_CREAT`, and answers
/// [`IoError::ENOENT`] for a missing one. A missing pool file reads as no file
/// (`Ok(None)`), a missing journal as an empty one.
#[derive(Debug)]
pub struct Inspect {
    pool: PoolId,
    state: InspectState,
    journal: Vec<u8>,
    journal_len: u64,
    entries: Vec<JournalEntry>,
    next_entry: usize,
    stamp: FileStamp,
    /// We hold the pool file's lock (set by a successful `Lock`, cleared as `Unlock` is
    /// issued); checked on every effect.
    locked: bool,
    pub events: Vec<JobEvent>,
}

#[derive(Debug)]
enum InspectState {
    Start,
    Lock,
    StatJournal,
    ReadJournal,
    StatPool,
    EntrySlots {
        want: Vec<u32>,
        got: BTreeMap<u32, RecordBytes>,
    },
    Load(Loader),
    Unlock(Inspected),
}

/// What an [`Inspect`] found: the pool as its file holds it and the file's stamp;
/// `None`: there is no pool file.
pub type Inspected = Result<Option<(Pool, FileStamp)>, IoError>;

/// What an [`Inspect`] wants next.
#[derive(Debug)]
pub enum InspectStep {
    /// Only `Lock`, `Unlock`, `Stat` and `Read`.
    Effect(Effect),
    Finished(Inspected),
}

/// Issues a read-only effect under the lock discipline of [`issue`].
fn ask(locked: &mut bool, e: Effect) -> InspectStep {
    assert!(
        matches!(
            e,
            Effect::Lock(_) | Effect::Unlock(_) | Effect::Stat(_) | Effect::Read { .. }
        ),
        "an inspection only reads: {e:?}"
    );
    match issue(locked, e) {
        Step::Effect(e) => InspectStep::Effect(e),
        Step::Finished(o) => unreachable!("issue always returns the effect: {o:?}"),
    }
}

impl Inspect {
    pub fn new(pool: PoolId) -> Inspect {
        Inspect {
            pool,
            state: InspectState::Start,
            journal: Vec::new(),
            journal_len: 0,
            entries: Vec::new(),
            next_entry: 0,
            stamp: FileStamp::default(),
            locked: false,
            events: Vec::new(),
        }
    }

    pub fn resume(&mut self, r: Option<EffectResult>) -> InspectStep {
        match self.step(r) {
            Ok(s) => s,
            Err(e) if self.locked => {
                self.state = InspectState::Unlock(Err(e));
                ask(&mut self.locked, Effect::Unlock(FileId::pool(self.pool)))
            }
            Err(e) => InspectStep::Finished(Err(e)),
        }
    }

    fn step(&mut self, r: Option<EffectResult>) -> Result<InspectStep, IoError> {
        let f = FileId::pool(self.pool);
        let j = FileId::journal(self.pool);
        let state = std::mem::replace(&mut self.state, InspectState::Start);
        Ok(match state {
            InspectState::Start => {
                self.state = InspectState::Lock;
                ask(&mut self.locked, Effect::Lock(f))
            }
            InspectState::Lock => {
                if r == Some(EffectResult::Failed(IoError::ENOENT)) {
                    // No pool file: nothing to show (and nothing is created).
                    return Ok(InspectStep::Finished(Ok(None)));
                }
                done(r)?;
                self.locked = true;
                self.state = InspectState::StatJournal;
                ask(&mut self.locked, Effect::Stat(j))
            }
            InspectState::StatJournal => {
                self.journal_len = match r {
                    Some(EffectResult::Failed(IoError::ENOENT)) => 0,
                    r => stamp(r)?.len,
                };
                self.read_journal()
            }
            InspectState::ReadJournal => {
                let d = data(r)?;
                if d.is_empty() {
                    self.journal_len = self.journal.len() as u64;
                }
                self.journal.extend_from_slice(&d);
                self.read_journal()
            }
            InspectState::StatPool => {
                self.stamp = stamp(r)?;
                self.next_entry_step()
            }
            InspectState::EntrySlots { want, mut got } => {
                got.insert(want[got.len()], as_record(&data(r)?));
                self.entry_slots(want, got)
            }
            InspectState::Load(mut loader) => {
                loader.feed(&data(r)?);
                self.load(loader)
            }
            InspectState::Unlock(result) => {
                assert!(!self.locked);
                // An unlock error does not change what we read.
                InspectStep::Finished(result)
            }
        })
    }

    fn read_journal(&mut self) -> InspectStep {
        if self.journal_len > MAX_JOURNAL_BYTES && self.journal.is_empty() {
            self.events.push(JobEvent::JournalTooLong {
                pool: self.pool,
                bytes: self.journal_len,
            });
        }
        let want = self.journal_len.min(MAX_JOURNAL_BYTES);
        let have = self.journal.len() as u64;
        if have < want {
            self.state = InspectState::ReadJournal;
            return ask(
                &mut self.locked,
                Effect::Read {
                    file: FileId::journal(self.pool),
                    offset: have,
                    len: (want - have).min(READ_CHUNK as u64) as u32,
                },
            );
        }
        let parsed = parse_journal(&std::mem::take(&mut self.journal));
        if parsed.ignored_bytes > 0 {
            self.events.push(JobEvent::JournalTornTail {
                pool: self.pool,
                bytes: parsed.ignored_bytes,
            });
        }
        self.entries = parsed.entries;
        self.state = InspectState::StatPool;
        ask(&mut self.locked, Effect::Stat(FileId::pool(self.pool)))
    }

    /// The file's whole records, as recovery sees it (a torn tail is not a record).
    fn whole_len(&self) -> u64 {
        self.stamp.len - self.stamp.len % REC
    }

    fn next_entry_step(&mut self) -> InspectStep {
        match self.entries.get(self.next_entry) {
            Some(e) => {
                if let Some(reason) = e.out_of_bounds(self.pool) {
                    // Recovery would drop it untouched (see `Recover::next_entry_step`).
                    self.events.push(JobEvent::JournalPending {
                        pool: self.pool,
                        entry: self.next_entry,
                        verdict: Pending::Discard(reason),
                    });
                    self.next_entry += 1;
                    return self.next_entry_step();
                }
                let want = e.slots_to_judge(self.whole_len());
                self.entry_slots(want, BTreeMap::new())
            }
            None => self.load(Loader::new(FileId::pool(self.pool), self.stamp.len)),
        }
    }

    fn entry_slots(&mut self, want: Vec<u32>, got: BTreeMap<u32, RecordBytes>) -> InspectStep {
        if let Some(&slot) = want.get(got.len()) {
            self.state = InspectState::EntrySlots { want, got };
            return ask(&mut self.locked, slot_read(self.pool, slot));
        }
        let idx = self.next_entry;
        self.next_entry += 1;
        let zero = [0u8; POOL_RECORD_SIZE];
        let verdict = match judge(&self.entries[idx], role_of(idx), self.whole_len(), &|s| {
            got.get(&s).copied().unwrap_or(zero)
        }) {
            Verdict::Finish { .. } => Pending::Finish,
            Verdict::Discard(reason) => Pending::Discard(reason),
            Verdict::Undo { reason, .. } => Pending::Undo(reason),
        };
        self.events.push(JobEvent::JournalPending {
            pool: self.pool,
            entry: idx,
            verdict,
        });
        self.next_entry_step()
    }

    fn load(&mut self, loader: Loader) -> InspectStep {
        if let Some(e) = loader.next() {
            self.state = InspectState::Load(loader);
            return ask(&mut self.locked, e);
        }
        let pool = load_events(self.pool, loader.finish(), &mut self.events);
        self.state = InspectState::Unlock(Ok(Some((pool, self.stamp))));
        ask(&mut self.locked, Effect::Unlock(FileId::pool(self.pool)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvp::record::{encode_pool, Record};

    fn key(s: &str) -> Key {
        Key::new(s.as_bytes()).expect("a valid key")
    }

    fn value(s: &str) -> Value {
        Value::new(s.as_bytes()).expect("a valid value")
    }

    fn stamp_of(len: u64) -> Option<EffectResult> {
        Some(EffectResult::Stamp(FileStamp { len, change: 1 }))
    }

    fn effect(s: Step) -> Effect {
        match s {
            Step::Effect(e) => e,
            Step::Finished(o) => panic!("finished early: {o:?}"),
        }
    }

    #[test]
    fn a_plan_from_memory_is_checked_against_the_slots_it_rests_on() {
        // Memory and the stamp say slot 1 holds b=2; another program rewrote it to b=9
        // within one tick, so the stamp did not move.
        let rec = REC;
        let known = FileStamp {
            len: 2 * rec,
            change: 1,
        };
        let memory = Pool::from_records(vec![
            Record::new(key("a"), value("1")),
            Record::new(key("b"), value("2")),
        ]);
        let b9 = Record::new(key("b"), value("9")).encode().to_vec();
        let mut file = Record::new(key("a"), value("1")).encode().to_vec();
        file.extend_from_slice(&b9);
        let mut m = Mutate::new(
            PoolId::Guest,
            MutOp::Set(key("b"), value("3")),
            Some(known),
            false,
        );
        effect(m.resume(None, &memory)); // lock
        effect(m.resume(Some(EffectResult::Done), &memory)); // take writes
        let news = Some(EffectResult::Writes(WriteNews::NotWatched));
        effect(m.resume(news, &memory)); // stat journal
        effect(m.resume(stamp_of(0), &memory)); // stat pool
        let read = effect(m.resume(Some(EffectResult::Stamp(known)), &memory));
        assert!(
            matches!(read, Effect::Read { offset, .. } if offset == rec),
            "{read:?}"
        );
        // The pre image differs from memory: stat and read the whole file again.
        let again = effect(m.resume(Some(EffectResult::Data(b9.clone())), &memory));
        assert!(matches!(again, Effect::Stat(_)), "{again:?}");
        assert!(m.events.contains(&JobEvent::StaleMemory {
            pool: PoolId::Guest,
            slot: 1
        }));
        let whole = effect(m.resume(Some(EffectResult::Stamp(known)), &memory));
        assert!(matches!(whole, Effect::Read { offset: 0, len, .. } if u64::from(len) == 2 * rec));
        let pre = effect(m.resume(Some(EffectResult::Data(file)), &memory));
        assert!(matches!(pre, Effect::Read { offset, .. } if offset == rec));
        // Planned on the file as read under the lock: journaled with b=9 as the pre image.
        match effect(m.resume(Some(EffectResult::Data(b9.clone())), &memory)) {
            Effect::Write { data, .. } => {
                let entry = parse_journal(&data).entries.remove(0);
                assert_eq!(entry.writes[0].pre.to_vec(), b9);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_lock_is_never_unlocked() {
        let mut m = Mutate::new(PoolId::Guest, MutOp::Delete(key("a")), None, false);
        let pool = Pool::new();
        assert!(matches!(effect(m.resume(None, &pool)), Effect::Lock(_)));
        match m.resume(Some(EffectResult::Failed(IoError::EIO)), &pool) {
            Step::Finished(JobOutcome::Mutated {
                result: MutateResult::Failed(IoError::EIO),
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(!m.locked);
    }

    #[test]
    fn a_failure_under_the_lock_unlocks_once() {
        let mut m = Mutate::new(PoolId::Guest, MutOp::Set(key("a"), value("1")), None, false);
        let pool = Pool::new();
        effect(m.resume(None, &pool));
        assert!(matches!(
            effect(m.resume(Some(EffectResult::Done), &pool)),
            Effect::TakeWrites(_)
        ));
        assert!(matches!(
            effect(m.resume(Some(EffectResult::Writes(WriteNews::Written)), &pool)),
            Effect::Stat(_)
        ));
        assert!(m.locked);
        assert!(matches!(
            effect(m.resume(Some(EffectResult::Failed(IoError::EIO)), &pool)),
            Effect::Unlock(_)
        ));
        assert!(!m.locked);
        match m.resume(Some(EffectResult::Done), &pool) {
            Step::Finished(JobOutcome::Mutated {
                result: MutateResult::Failed(IoError::EIO),
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refresh_stats_without_the_lock_and_unlocks_after_a_failed_read() {
        let mut r = Refresh::new(PoolId::Guest, None, false);
        assert!(matches!(effect(r.resume(None)), Effect::TakeWrites(_)));
        let news = Some(EffectResult::Writes(WriteNews::Written));
        assert!(matches!(effect(r.resume(news)), Effect::Stat(_)));
        assert!(!r.locked);
        assert!(matches!(effect(r.resume(stamp_of(REC))), Effect::Lock(_)));
        effect(r.resume(Some(EffectResult::Done)));
        assert!(r.locked);
        // Journal empty, pool stat, then the read fails: unlock, then report.
        effect(r.resume(stamp_of(0)));
        assert!(matches!(
            effect(r.resume(stamp_of(REC))),
            Effect::Read { .. }
        ));
        assert!(matches!(
            effect(r.resume(Some(EffectResult::Failed(IoError::EIO)))),
            Effect::Unlock(_)
        ));
        match r.resume(Some(EffectResult::Done)) {
            Step::Finished(JobOutcome::Refreshed { result: Err(_), .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    /// A pool file far past the record limit: reading stops at the limit, and the rest
    /// is reported (counted from the file's length), never read and never silent.
    #[test]
    fn a_refresh_reads_no_further_than_the_record_limit() {
        let total = MAX_POOL_RECORDS + 1000;
        let len = total as u64 * REC + 7;
        let mut r = Refresh::new(PoolId::External, None, false);
        effect(r.resume(None));
        effect(r.resume(Some(EffectResult::Writes(WriteNews::NotWatched))));
        effect(r.resume(stamp_of(len)));
        effect(r.resume(Some(EffectResult::Done)));
        effect(r.resume(stamp_of(0)));
        let mut step = r.resume(stamp_of(len));
        let mut read_to = 0;
        loop {
            match step {
                Step::Effect(Effect::Read { offset, len, .. }) => {
                    assert_eq!(offset, read_to, "reads in order");
                    read_to = offset + u64::from(len);
                    step = r.resume(Some(EffectResult::Data(vec![0; len as usize])));
                }
                Step::Effect(Effect::TakeWrites(_)) => {
                    step = r.resume(Some(EffectResult::Writes(WriteNews::NotWatched)));
                }
                Step::Effect(Effect::Unlock(_)) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(read_to, MAX_POOL_BYTES, "read up to the limit, not past it");
        let Some(JobEvent::Loaded {
            records, issues, ..
        }) = r.events.last()
        else {
            panic!("{:?}", r.events)
        };
        assert_eq!(*records, MAX_POOL_RECORDS);
        assert!(
            issues.contains(&PoolIssue::TooManyRecords { total }),
            "{issues:?}"
        );
        assert!(
            issues.contains(&PoolIssue::PartialRecord { bytes: 7 }),
            "{issues:?}"
        );
        match r.resume(Some(EffectResult::Done)) {
            Step::Finished(JobOutcome::Refreshed {
                result: Ok(Some((p, _))),
                ..
            }) => {
                assert_eq!((p.len(), p.file_records()), (MAX_POOL_RECORDS, total));
                assert!(!p.complete());
            }
            other => panic!("{other:?}"),
        }
    }

    /// Runs an inspection over files held in memory (`None`: the file does not exist);
    /// any effect but a read-only one would panic in `ask`.
    fn inspect(pool: Option<Vec<u8>>, journal: Option<Vec<u8>>) -> (Inspected, Vec<JobEvent>) {
        let mut job = Inspect::new(PoolId::Guest);
        let file = |id: FileId| match id.kind {
            crate::kvp::effect::FileKind::Pool => pool.as_ref(),
            crate::kvp::effect::FileKind::Journal => journal.as_ref(),
        };
        let missing = Some(EffectResult::Failed(IoError::ENOENT));
        let mut result = None;
        loop {
            match job.resume(result.take()) {
                InspectStep::Finished(r) => return (r, job.events),
                InspectStep::Effect(e) => {
                    result = match e {
                        Effect::Lock(f) if file(f).is_none() => missing.clone(),
                        Effect::Lock(_) | Effect::Unlock(_) => Some(EffectResult::Done),
                        Effect::Stat(f) => {
                            file(f).map_or(missing.clone(), |b| stamp_of(b.len() as u64))
                        }
                        Effect::Read {
                            file: f,
                            offset,
                            len,
                        } => {
                            let b = file(f).expect("read of a file that was there");
                            let from = (offset as usize).min(b.len());
                            let to = (from + len as usize).min(b.len());
                            Some(EffectResult::Data(b[from..to].to_vec()))
                        }
                        other => panic!("{other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn an_inspection_shows_the_file_as_it_is_and_what_recovery_would_do() {
        let records = vec![Record::new(key("a"), value("1"))];
        let file = crate::kvp::record::encode_pool(&records);
        // No pool file: nothing, whatever the journal holds.
        assert!(matches!(inspect(None, None), (Ok(None), _)));
        // No journal, a torn tail: the records, and the tail in the load's issues.
        let mut torn = file.clone();
        torn.extend_from_slice(&[7; 100]);
        let (r, events) = inspect(Some(torn.clone()), None);
        let (p, s) = r.unwrap().unwrap();
        assert_eq!((p.records(), s.len), (&records[..], torn.len() as u64));
        assert!(matches!(
            &events[..],
            [JobEvent::Loaded { issues, .. }]
                if issues == &[PoolIssue::PartialRecord { bytes: 100 }]
        ));
        // An append journaled, its extension made, its record not yet written.
        let pool = Pool::from_records(records.clone());
        let Plan::Write(m) = pool.plan_set(&key("b"), &value("2")) else {
            panic!("an append")
        };
        let entry = journal_entry(PoolId::Guest, &m, &BTreeMap::new()).encode();
        let mut grown = file.clone();
        grown.resize(2 * POOL_RECORD_SIZE, 0);
        let (r, events) = inspect(Some(grown), Some(entry.clone()));
        assert_eq!(
            r.unwrap().unwrap().0.len(),
            2,
            "the zero record, as the file holds it"
        );
        assert_eq!(
            events[0],
            JobEvent::JournalPending {
                pool: PoolId::Guest,
                entry: 0,
                verdict: Pending::Finish
            }
        );
        // The same entry, with the file back at its old length: recovery would drop it.
        let (_, events) = inspect(Some(file.clone()), Some(entry));
        assert!(matches!(
            events[0],
            JobEvent::JournalPending {
                verdict: Pending::Discard(_),
                ..
            }
        ));
    }

    /// Runs a recovery over files held in memory and returns them as it leaves them.
    fn recover(pool: Vec<u8>, journal: Vec<u8>) -> (Vec<u8>, Vec<u8>, Vec<JobEvent>) {
        use crate::kvp::effect::FileKind;
        let mut files = [pool, journal];
        let at = |f: FileId| match f.kind {
            FileKind::Pool => 0,
            FileKind::Journal => 1,
        };
        let mut job = Recover::new(PoolId::Guest);
        let mut result = None;
        loop {
            let e = match job.resume(result.take()) {
                Step::Finished(JobOutcome::Recovered { result, .. }) => {
                    assert!(result.is_ok(), "{result:?}");
                    let [pool, journal] = files;
                    return (pool, journal, job.events);
                }
                Step::Finished(other) => panic!("{other:?}"),
                Step::Effect(e) => e,
            };
            result = Some(match e {
                Effect::Lock(_) | Effect::Unlock(_) | Effect::Fsync(_) => EffectResult::Done,
                Effect::TakeWrites(_) => EffectResult::Writes(WriteNews::NotWatched),
                Effect::Stat(f) => stamp_of(files[at(f)].len() as u64).expect("a stamp"),
                Effect::Read { file, offset, len } => {
                    let b = &files[at(file)];
                    let from = (offset as usize).min(b.len());
                    let to = (from + len as usize).min(b.len());
                    EffectResult::Data(b[from..to].to_vec())
                }
                Effect::Write { file, offset, data } => {
                    let b = &mut files[at(file)];
                    let end = offset as usize + data.len();
                    if b.len() < end {
                        b.resize(end, 0);
                    }
                    b[offset as usize..end].copy_from_slice(&data);
                    EffectResult::Done
                }
                Effect::SetLen { file, len } => {
                    files[at(file)].resize(len as usize, 0);
                    EffectResult::Done
                }
                other => panic!("{other:?}"),
            });
        }
    }

    /// A record whose value is its key.
    fn rec_of(k: &str) -> Record {
        Record::new(key(k), value(k))
    }

    /// The pre images a mutation reads: the slots it touches, as `records` hold them.
    fn pre_of(m: &Mutation, records: &[Record]) -> BTreeMap<u32, RecordBytes> {
        m.touched_existing_slots()
            .map(|s| (s, records[s as usize].encode()))
            .collect()
    }

    /// A DELETE of "b" from [a b c L] ("L" moves into the hole, slot 3 is cut) crashed
    /// with its post written and the cut not made; another program appended "x"; a
    /// recovery journaled the follow-up removal of slot 3 (moving "x" down) and lost the
    /// power before writing it. The journal it left: both entries.
    fn crashed_delete_with_follow_up() -> Vec<u8> {
        let before = vec![rec_of("a"), rec_of("b"), rec_of("c"), rec_of("L")];
        let Plan::Write(delete) = Pool::from_records(before.clone()).plan_delete(&key("b")) else {
            panic!("a delete")
        };
        let crashed = vec![
            rec_of("a"),
            rec_of("L"),
            rec_of("c"),
            rec_of("L"),
            rec_of("x"),
        ];
        let follow_up = Pool::from_records(crashed.clone()).plan_remove_slot(3);
        let mut journal = journal_entry(PoolId::Guest, &delete, &pre_of(&delete, &before)).encode();
        journal.extend(
            journal_entry(PoolId::Guest, &follow_up, &pre_of(&follow_up, &crashed)).encode(),
        );
        journal
    }

    /// Recovers `now` with [`crashed_delete_with_follow_up`]'s journal: the follow-up
    /// removal recovery planned (none: `None`) and the file it left.
    fn recover_crashed_delete(now: &[Record]) -> (Option<u32>, Vec<u8>) {
        let (pool, journal, events) = recover(encode_pool(now), crashed_delete_with_follow_up());
        assert!(journal.is_empty());
        let planned = events.iter().find_map(|e| match e {
            JobEvent::JournalFollowUp { slot, .. } => Some(*slot),
            _ => None,
        });
        (planned, pool)
    }

    #[test]
    fn a_follow_up_that_cannot_be_finished_is_planned_again() {
        // After the power loss the other program rewrote "x" in place: the follow-up's
        // record to cut is no longer there, so that entry cannot be finished.
        let x2 = Record::new(key("x"), value("x2"));
        let now = [
            rec_of("a"),
            rec_of("L"),
            rec_of("c"),
            rec_of("L"),
            x2.clone(),
        ];
        let (planned, pool) = recover_crashed_delete(&now);
        assert_eq!(planned, Some(3));
        // "L" once, "x" with its new value, nothing lost.
        assert_eq!(
            pool,
            encode_pool(&[rec_of("a"), rec_of("L"), rec_of("c"), x2])
        );
    }

    #[test]
    fn a_follow_up_that_finishes_elsewhere_leaves_the_removal_owed() {
        // After the power loss the other program deleted "c" by copying the later
        // records down: slot 3 holds "x" (the follow-up's post image) and the copy of
        // "L" sits in slot 2.
        let now = [rec_of("a"), rec_of("L"), rec_of("L"), rec_of("x")];
        let (planned, pool) = recover_crashed_delete(&now);
        assert_eq!(planned, Some(2));
        assert_eq!(pool, encode_pool(&[rec_of("a"), rec_of("L"), rec_of("x")]));
    }

    #[test]
    fn a_delete_whose_cut_record_has_a_twin_clears_its_journal_durably() {
        let rec = |k: &str, v: &str| Record::new(key(k), value(v));
        let entry_of = |records: &[Record], k: &str| {
            let pool = Pool::from_records(records.to_vec());
            let Plan::Write(m) = pool.plan_delete(&key(k)) else {
                panic!("a delete")
            };
            (journal_entry(PoolId::Guest, &m, &pre_of(&m, records)), pool)
        };
        // [A X A]: deleting X moves the last A into the hole; the A in slot 0 is its
        // twin, which a stale entry's recovery would take for a moved-down copy.
        let twins = [rec("a", "1"), rec("x", "9"), rec("a", "1")];
        let (e, pool) = entry_of(&twins, "x");
        assert!(cut_record_has_a_twin(&e, &pool));
        // Same key, another value: not a twin; and an in-place SET cuts nothing.
        let dups = [rec("a", "1"), rec("x", "9"), rec("a", "2")];
        let (e, pool) = entry_of(&dups, "x");
        assert!(!cut_record_has_a_twin(&e, &pool));
        let pool = Pool::from_records(twins.to_vec());
        let Plan::Write(m) = pool.plan_set(&key("x"), &value("8")) else {
            panic!("an update")
        };
        let pre = BTreeMap::from([(1, twins[1].encode())]);
        assert!(!cut_record_has_a_twin(
            &journal_entry(PoolId::Guest, &m, &pre),
            &pool
        ));
    }

    #[test]
    fn a_journal_longer_than_any_we_write_is_reported() {
        let mut r = Recover::new(PoolId::Guest);
        effect(r.resume(None));
        effect(r.resume(Some(EffectResult::Done)));
        let read = effect(r.resume(stamp_of(MAX_JOURNAL_BYTES + 1)));
        assert!(matches!(read, Effect::Read { offset: 0, .. }));
        assert_eq!(
            r.events,
            vec![JobEvent::JournalTooLong {
                pool: PoolId::Guest,
                bytes: MAX_JOURNAL_BYTES + 1
            }]
        );
    }

    #[test]
    #[should_panic(expected = "are not the touched slots")]
    fn a_journal_entry_needs_every_pre_image() {
        let pool = Pool::from_records(vec![Record::new(key("a"), value("1"))]);
        let Plan::Write(m) = pool.plan_set(&key("a"), &value("2")) else {
            panic!("a write")
        };
        journal_entry(PoolId::Guest, &m, &BTreeMap::new());
    }

    #[test]
    #[should_panic(expected = "without the pool lock")]
    fn writing_without_the_lock_is_refused() {
        let mut held = false;
        issue(&mut held, Effect::Fsync(FileId::pool(PoolId::Guest)));
    }
}
