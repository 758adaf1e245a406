//! The tool (`hvkvp set/delete`) as a second journaling writer: its effects executed
//! against [`SimFs`] as a separate process (its own lock owner), the operations it is
//! asked for, and the crash sweep.
//!
//! The sweep is the systematic half (the world, `world/tool_side.rs`, is the random
//! half): for each generated tool operation it replays the operation from the same
//! starting files, with the same other writers acting at the same points (a
//! cloud-init-like appender, and a rival journaling writer, the daemon's own `Mutate`,
//! that may die after any of its effects), and stops it after effect `k` for every `k`
//! from 0 to the end, once by `kill -9` and once by power loss. Each time it recovers
//! the pool as a restarting daemon does and checks the invariants. Every stop is one
//! crash point.

use std::collections::BTreeMap;

use hvguest_core::kvp::effect::{Effect, EffectResult, FileId, IoError, WriteNews};
use hvguest_core::kvp::jobs::{JobOutcome, MutOp, Mutate, MutateResult, Recover, Step};
use hvguest_core::kvp::pool::Pool;
use hvguest_core::kvp::record::{decode_pool, encode_pool, PoolIssue, Record};
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::tool_write::{ToolOutcome, ToolStep, ToolWrite};
use hvguest_core::kvp::wire::PoolId;

use crate::fs::{FsBlock, FsError, Owner, SimFs};
use crate::host::OUTSIDE_PREFIX;
use crate::prng::Prng;

/// Keys the tool writes start with this; neither the host nor outside writers use it.
pub const TOOL_PREFIX: &str = "hvkvp|";
/// The pool the tool writes in the simulator: the guest pool, which the host reads and
/// outside programs append to.
pub const TOOL_POOL: PoolId = PoolId::Guest;

/// The lock owner of the tool process of this generation (a process apart from the
/// daemon and from the appenders).
pub fn tool_owner(generation: u32) -> Owner {
    Owner::Outside(1000 + generation)
}

/// Runs one file effect for `who`, literally; `Err` when it cannot complete now (a
/// suspended file system, a lock someone else holds).
pub fn execute(fs: &mut SimFs, who: Owner, effect: &Effect) -> Result<EffectResult, FsBlock> {
    let name = |f: &FileId| f.file_name();
    let r = match effect {
        Effect::Lock(f) => fs.lock(&name(f), who).map(|_| EffectResult::Done),
        Effect::Unlock(f) => {
            fs.unlock(&name(f), who);
            Ok(EffectResult::Done)
        }
        Effect::Stat(f) => fs.stat(&name(f)).map(EffectResult::Stamp),
        Effect::Read { file, offset, len } => {
            fs.read(&name(file), *offset, *len).map(EffectResult::Data)
        }
        Effect::Write { file, offset, data } => fs
            .write(&name(file), *offset, data)
            .map(|_| EffectResult::Done),
        Effect::SetLen { file, len } => fs.set_len(&name(file), *len).map(|_| EffectResult::Done),
        Effect::Fsync(f) => fs.fsync(&name(f)).map(|_| EffectResult::Done),
        // A tool lives for one command and watches nothing (as `hvkvp` does).
        Effect::TakeWrites(_) => Ok(EffectResult::Writes(WriteNews::NotWatched)),
        Effect::QueryAdapter(_) | Effect::ApplyIpConfig { .. } => {
            Ok(EffectResult::Failed(IoError::WRONG_RESULT))
        }
    };
    match r {
        Ok(x) => Ok(x),
        Err(FsError::Io(e)) => Ok(EffectResult::Failed(e)),
        Err(FsError::Blocked(b)) => Err(b),
    }
}

/// Whether the tool would find the pool's files (it creates nothing for a DELETE).
pub fn files_exist(fs: &SimFs, pool: PoolId) -> bool {
    fs.exists(&FileId::pool(pool).file_name()) || fs.exists(&FileId::journal(pool).file_name())
}

/// A tool key (a few, so operations meet each other's records).
pub fn tool_key(prng: &mut Prng) -> Key {
    Key::new(format!("{TOOL_PREFIX}{}", prng.below(6)).as_bytes()).expect("short")
}

/// A tool operation: mostly SETs, of short, empty and near-maximal values.
pub fn random_op(prng: &mut Prng) -> MutOp {
    let key = tool_key(prng);
    if prng.chance(3, 10) {
        return MutOp::Delete(key);
    }
    let text = match prng.below(10) {
        0 => String::new(),
        1 => "t".repeat(2047),
        _ => format!("t{}", prng.below(1000)),
    };
    MutOp::Set(key, Value::new(text.as_bytes()).expect("fits"))
}

/// What the pool shows for `op`'s key once it took effect.
pub fn new_value(op: &MutOp) -> (Key, Option<Value>) {
    match op {
        MutOp::Set(k, v) => (k.clone(), Some(v.clone())),
        MutOp::Delete(k) => (k.clone(), None),
    }
}

/// Crash points the sweep injected, and operations it swept.
#[derive(Clone, Copy, Debug, Default)]
pub struct SweepStats {
    pub ops: u64,
    pub crash_points: u64,
}

/// Per key, the values the pool may show (`None`: absent), like the host's model.
type Possible = BTreeMap<Key, Vec<Option<Value>>>;

fn allow(p: &mut Possible, k: &Key, v: Option<Value>) {
    let cell = p.entry(k.clone()).or_insert_with(|| vec![None]);
    if !cell.contains(&v) {
        cell.push(v);
    }
}

/// One swept operation and what the other writers do around it.
#[derive(Clone, Debug)]
struct OpPlan {
    op: MutOp,
    /// The tool's effect (0-based) that fails with EIO instead of running.
    fail_at: Option<usize>,
    /// At this free boundary (0: before the tool starts, 1: mostly the hand-over between
    /// its `Recover` and its `Mutate`, 2: mostly after it finished), counting only the
    /// points between the tool's effects where it does not hold the lock, an appender
    /// appends a record (under the lock, fsynced).
    append_at: Option<usize>,
    /// At this free boundary the rival changes a key: it runs its `Mutate` to the end,
    /// or dies after this many of its effects (then, from the seventh on, leaving its
    /// journal entry for the tool to find).
    rival_at: Option<usize>,
    rival_op: MutOp,
    rival_dies_after: Option<usize>,
}

/// What happened in one play of an operation.
struct Played {
    fs: SimFs,
    /// The tool's outcome, if it finished before the stop.
    outcome: Option<ToolOutcome>,
    effects: usize,
    /// The index of the tool's first journal write.
    journal_write: Option<usize>,
    possible: Possible,
    appended: Vec<Record>,
}

const TOOL: Owner = Owner::Outside(1000);
const RIVAL: Owner = Owner::Daemon(1);
const APPENDER: Owner = Owner::Outside(1);
const RECOVERER: Owner = Owner::Daemon(2);

fn pool_name() -> String {
    FileId::pool(TOOL_POOL).file_name()
}

fn journal_name() -> String {
    FileId::journal(TOOL_POOL).file_name()
}

/// Runs the rival's `Mutate` (the daemon's write path) synchronously; `dies_after`
/// effects and it is killed. Updates what the pool may show.
fn rival(
    fs: &mut SimFs,
    op: &MutOp,
    dies_after: Option<usize>,
    possible: &mut Possible,
) -> Result<(), String> {
    let mut job = Mutate::new(TOOL_POOL, op.clone(), None, false);
    let (k, v) = new_value(op);
    let mut r = None;
    let mut n = 0;
    loop {
        match job.resume(r.take(), &Pool::new()) {
            Step::Effect(e) => {
                if dies_after == Some(n) {
                    fs.release_locks_of(RIVAL);
                    allow(possible, &k, v);
                    return Ok(());
                }
                n += 1;
                r = Some(execute(fs, RIVAL, &e).map_err(|b| format!("rival blocked: {b:?}"))?);
            }
            Step::Finished(JobOutcome::Mutated { result, .. }) => {
                match result {
                    MutateResult::Applied { .. } => {
                        possible.insert(k, vec![v]);
                    }
                    MutateResult::Nothing(_)
                    | MutateResult::Failed(_)
                    | MutateResult::JournalPending => {}
                    MutateResult::InDoubt(_) => allow(possible, &k, v),
                }
                return Ok(());
            }
            Step::Finished(o) => return Err(format!("rival finished with {o:?}")),
        }
    }
}

/// Plays `plan` from `fs`, stopping before the tool's effect `stop` (after `stop`
/// effects; at the end, after the outcome) when given.
fn play(
    mut fs: SimFs,
    plan: &OpPlan,
    possible: &Possible,
    stop: Option<usize>,
) -> Result<Played, String> {
    let mut possible = possible.clone();
    let mut appended = Vec::new();
    let mut job = ToolWrite::new(TOOL_POOL, plan.op.clone(), files_exist(&fs, TOOL_POOL));
    let (k, v) = new_value(&plan.op);
    let old = possible.get(&k).cloned().unwrap_or_else(|| vec![None]);
    let mut r = None;
    let mut i = 0;
    let mut outcome = None;
    let mut free_seen = 0;
    let mut journal_write = None;
    loop {
        let step = job.resume(r.take());
        if let ToolStep::Finished(o) = step {
            // The outcome is what the tool reports; from here on it must hold.
            outcome = Some(o);
            match o {
                // Acknowledged: exactly the new value.
                ToolOutcome::Written | ToolOutcome::Unchanged | ToolOutcome::NotFound => {
                    possible.insert(k.clone(), vec![v.clone()]);
                }
                // Nothing changed.
                ToolOutcome::Full
                | ToolOutcome::JournalBusy
                | ToolOutcome::Failed(_)
                | ToolOutcome::NotApplied(_) => {
                    possible.insert(k.clone(), old.clone());
                }
                ToolOutcome::InDoubt(_) => allow(&mut possible, &k, v.clone()),
            }
        }
        // Between the tool's effects, the other writers, when the lock is free.
        let free = fs.lock_holder(&pool_name()).is_none();
        let ordinal = free.then_some(free_seen);
        free_seen += usize::from(free);
        if ordinal.is_some() && plan.append_at == ordinal {
            let rec = Record::new(
                Key::new(
                    format!("{OUTSIDE_PREFIX}sweep|{}", fs.contents(&pool_name()).len()).as_bytes(),
                )
                .expect("short"),
                Value::new(b"{\"result\":\"success\"}").expect("short"),
            );
            let name = pool_name();
            let _ = fs.lock(&name, APPENDER);
            let ok = fs.append(&name, &rec.encode()).is_ok() && fs.fsync(&name).is_ok();
            fs.unlock(&name, APPENDER);
            if ok {
                appended.push(rec);
            }
        }
        if ordinal.is_some() && plan.rival_at == ordinal {
            rival(
                &mut fs,
                &plan.rival_op,
                plan.rival_dies_after,
                &mut possible,
            )?;
        }
        if stop == Some(i) {
            // Stopped: unless it reported an outcome, the tool's change may or may not
            // have happened.
            if outcome.is_none() {
                allow(&mut possible, &k, v.clone());
            }
            break;
        }
        match step {
            ToolStep::Finished(_) => break,
            ToolStep::Effect(e) => {
                if journal_write.is_none()
                    && matches!(&e, Effect::Write { file, .. } if *file == FileId::journal(TOOL_POOL))
                {
                    journal_write = Some(i);
                }
                let res = if plan.fail_at == Some(i) {
                    EffectResult::Failed(IoError::EIO)
                } else {
                    execute(&mut fs, TOOL, &e).map_err(|b| format!("tool blocked: {b:?}"))?
                };
                r = Some(res);
                i += 1;
            }
        }
    }
    Ok(Played {
        fs,
        outcome,
        effects: i,
        journal_write,
        possible,
        appended,
    })
}

/// Recovers the pool as a restarting daemon does, then checks what the disk holds.
fn recover_and_check(
    fs: &mut SimFs,
    possible: &Possible,
    outside: &[Record],
) -> Result<Vec<Record>, String> {
    let mut job = Recover::new(TOOL_POOL);
    let mut r = None;
    loop {
        match job.resume(r.take()) {
            Step::Effect(e) => {
                r = Some(
                    execute(fs, RECOVERER, &e).map_err(|b| format!("recovery blocked: {b:?}"))?,
                )
            }
            Step::Finished(JobOutcome::Recovered { result: Ok(_), .. }) => break,
            Step::Finished(o) => return Err(format!("recovery failed: {o:?}")),
        }
    }
    check_disk(fs, possible, outside)
}

/// The invariants, on what the pool file holds now.
fn check_disk(fs: &SimFs, possible: &Possible, outside: &[Record]) -> Result<Vec<Record>, String> {
    let bytes = fs.contents(&pool_name());
    let d = decode_pool(bytes);
    // Catches a torn slot write or append left in place, a length that is not whole
    // records (a growth not made durable before the slot writes), zeroed holes.
    if let Some(i) = d.issues.iter().find(|i| {
        matches!(
            i,
            PoolIssue::Flawed { .. } | PoolIssue::PartialRecord { .. }
        )
    }) {
        return Err(format!("torn or unpadded record: {i:?}"));
    }
    // Catches a recovery that leaves an entry behind (to be applied again later, over
    // newer changes).
    if !fs.contents(&journal_name()).is_empty() {
        return Err("journal not empty after recovery".into());
    }
    // Catches a lost acknowledged change (of the tool or of the rival), a change that
    // was reported not applied but took effect, and a change that was half made.
    for (k, cell) in possible {
        let got = d
            .records
            .iter()
            .find(|r| r.key == *k)
            .map(|r| r.value.clone());
        if !cell.contains(&got) {
            return Err(format!(
                "{}: disk has {got:?}, may only have {cell:?}",
                String::from_utf8_lossy(k.as_bytes())
            ));
        }
    }
    // Catches a recovery or a DELETE that cuts or overwrites another program's append.
    for r in outside {
        if !d.records.contains(r) {
            return Err(format!(
                "outside record {} lost",
                String::from_utf8_lossy(r.key.as_bytes())
            ));
        }
    }
    Ok(d.records)
}

fn describe(op: &MutOp) -> String {
    let (k, v) = new_value(op);
    let k = String::from_utf8_lossy(k.as_bytes()).into_owned();
    match v {
        Some(v) if v.as_bytes().len() > 20 => format!("set {k} = <{} bytes>", v.as_bytes().len()),
        Some(v) => format!("set {k} = {:?}", String::from_utf8_lossy(v.as_bytes())),
        None => format!("delete {k}"),
    }
}

/// Sweeps `ops` tool operations seeded by `seed`: every crash point of each, both kinds.
pub fn sweep(seed: u64, ops: u64) -> Result<SweepStats, String> {
    let mut prng = Prng::new(seed).fork("tool-sweep");
    let mut crash_prng = Prng::new(seed).fork("tool-sweep-crash");
    let mut stats = SweepStats::default();
    // Start from a pool that already holds a few records of each kind.
    let mut outside = Vec::new();
    let mut records = Vec::new();
    let mut possible = Possible::new();
    for i in 0..prng.below(4) {
        let r = Record::new(
            Key::new(format!("{OUTSIDE_PREFIX}boot|{i}").as_bytes()).expect("short"),
            Value::new(b"{}").expect("short"),
        );
        outside.push(r.clone());
        records.push(r);
    }
    for _ in 0..prng.range(1, 6) {
        if let MutOp::Set(k, v) = random_op(&mut prng) {
            if !possible.contains_key(&k) {
                possible.insert(k.clone(), vec![Some(v.clone())]);
                records.push(Record::new(k, v));
            }
        }
    }
    let mut fs = SimFs::new();
    if !records.is_empty() || prng.chance(1, 2) {
        fs.write(&pool_name(), 0, &encode_pool(&records))
            .map_err(|e| format!("{e:?}"))?;
        fs.sync_all();
    }
    for n in 0..ops {
        let small = fs.contents(&pool_name()).len() < 30 * hvguest_core::limits::POOL_RECORD_SIZE;
        let mut plan = OpPlan {
            op: random_op(&mut prng),
            fail_at: None,
            append_at: (small && prng.chance(1, 2)).then(|| prng.below(3) as usize),
            rival_at: prng.chance(1, 2).then(|| prng.below(3) as usize),
            rival_op: {
                let key = Key::new(format!("rival|{}", prng.below(3)).as_bytes()).expect("short");
                if small && prng.chance(2, 3) {
                    MutOp::Set(
                        key,
                        Value::new(format!("r{}", prng.below(100)).as_bytes()).expect("short"),
                    )
                } else {
                    MutOp::Delete(key)
                }
            },
            rival_dies_after: prng.chance(1, 3).then(|| prng.below(16) as usize),
        };
        if prng.chance(1, 2) {
            // An I/O error in one of the tool's effects: half the time in its journaled
            // part (from its journal write on), where the outcome must be settled.
            let dry = play(fs.clone(), &plan, &possible, None)?;
            let from = if prng.chance(1, 2) {
                dry.journal_write.unwrap_or(0)
            } else {
                0
            };
            plan.fail_at = Some(prng.range(from as u64, dry.effects.max(from + 1) as u64) as usize);
        }
        let base = play(fs.clone(), &plan, &possible, None)?;
        let what = |k: usize, kind: &str| {
            format!(
                "tool sweep seed {seed} op #{n} ({}; {plan:?}), {kind} after {k} of {} effects",
                describe(&plan.op),
                base.effects
            )
        };
        let mut all_outside = outside.clone();
        all_outside.extend(base.appended.iter().cloned());
        for k in 0..=base.effects {
            for power in [false, true] {
                let kind = if power { "power loss" } else { "kill -9" };
                let mut p = play(fs.clone(), &plan, &possible, Some(k))
                    .map_err(|e| format!("{}: {e}", what(k, kind)))?;
                stats.crash_points += 1;
                if power {
                    p.fs.crash(&mut crash_prng);
                } else {
                    p.fs.release_locks_of(TOOL);
                }
                let mut survive = outside.clone();
                survive.extend(p.appended.iter().cloned());
                recover_and_check(&mut p.fs, &p.possible, &survive)
                    .map_err(|e| format!("{}: {e}", what(k, kind)))?;
            }
        }
        stats.ops += 1;
        // Go on from the uncrashed play.
        let Played {
            fs: next,
            possible: next_possible,
            outcome,
            ..
        } = base;
        if outcome.is_none() {
            return Err(format!(
                "{}: the tool never finished",
                what(base.effects, "no crash")
            ));
        }
        fs = next;
        possible = next_possible;
        outside = all_outside;
        if fs.contents(&journal_name()).is_empty() {
            // Settled: what the disk shows is now the one value.
            let recs = check_disk(&fs, &possible, &outside)
                .map_err(|e| format!("{}: {e}", what(0, "no crash")))?;
            for cell in possible.iter_mut() {
                let got = recs
                    .iter()
                    .find(|r| r.key == *cell.0)
                    .map(|r| r.value.clone());
                *cell.1 = vec![got];
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_passes_and_counts_two_crash_points_per_boundary() {
        for seed in 1..10 {
            let s = sweep(seed, 3).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.ops, 3);
            assert!(s.crash_points >= 3 * 2 * 10, "{s:?}");
        }
    }
}
