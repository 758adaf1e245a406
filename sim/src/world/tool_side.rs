//! The tool (`hvkvp set/delete`) as a second journaling writer process in the world.
//!
//! It runs the core's [`ToolWrite`] job, the production tool's whole write path, one
//! operation at a time on the guest pool, its effects executed against the same
//! [`SimFs`] under its own lock owner, with latencies, parked while the daemon or an
//! appender holds the lock or the file system is suspended. It is killed (`kill -9`) or
//! loses power (the whole machine) after a random number of effects of some operations,
//! and dies with the machine whenever the world's own power losses strike.
//!
//! The host's model learns what each outcome means for the guest pool: an acknowledged
//! change settles its key; a change in progress, and one whose outcome is unknown (the
//! tool died, or ended in doubt), keeps both values possible until a recovery settles
//! it (the pool's journal is empty and the tool is idle). So every GET, ENUMERATE and
//! checkpoint of the world also checks the tool's writes:
//!
//! * an acknowledged tool change is on disk at every checkpoint, after any crash and
//!   recovery (catches a change acknowledged before it was durable, or undone by the
//!   daemon's recovery);
//! * no pool file is ever left with a torn or unpadded record (catches the tool growing
//!   the file after writing slots, or cutting a torn tail wrongly);
//! * every outside append and every change the daemon acknowledged survives (catches a
//!   tool that journals over the daemon's entry, or plans on a stale pool and so
//!   overwrites or cuts another writer's record);
//! * a read never shows a value no writer could have left (catches half-made changes).

use std::time::Duration;

use hvguest_core::kvp::effect::{Effect, EffectResult, FileId};
use hvguest_core::kvp::jobs::MutOp;
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::tool_write::{ToolOutcome, ToolStep, ToolWrite};
use hvguest_core::kvp::wire::{Reply, Request, Status};
use hvguest_core::Instant;

use super::World;
use crate::prng::Prng;
use crate::tool::{execute, files_exist, new_value, random_op, tool_key, tool_owner, TOOL_POOL};
use crate::trace;

/// The tool's state in the world.
pub struct ToolPart {
    prng: Prng,
    generation: u32,
    running: Option<Running>,
    next_at: Instant,
    /// No new operations (the world is draining).
    stopped: bool,
    /// Changes whose outcome is not known yet (the tool died, or ended in doubt), until a
    /// recovery settles them: each value stays possible for its key.
    unsettled: Vec<(Key, Option<Value>)>,
    /// Values tool keys had since the daemon last loaded the guest pool: the daemon
    /// answers from memory while its file lane is busy, and that memory may predate the
    /// tool's later writes.
    past: Vec<(Key, Option<Value>)>,
}

struct Running {
    job: ToolWrite,
    key: Key,
    value: Option<Value>,
    /// What the host's model held possible for the key when the change began.
    before: Vec<Option<Value>>,
    /// The result of the effect in flight, and when it arrives.
    pending: Option<(Instant, EffectResult)>,
    /// An effect that cannot run yet (a lock held by another, a suspended file system).
    parked: Option<Effect>,
    effects: u64,
    /// Dies after this many effects: `true` power loss, `false` kill -9.
    crash: Option<(u64, bool)>,
}

impl ToolPart {
    pub fn new(prng: Prng) -> ToolPart {
        ToolPart {
            prng,
            generation: 0,
            running: None,
            next_at: Instant::from_millis(50),
            stopped: false,
            unsettled: Vec::new(),
            past: Vec::new(),
        }
    }
}

fn latency(e: &Effect) -> Duration {
    match e {
        Effect::Fsync(_) => Duration::from_micros(500),
        _ => Duration::from_micros(20),
    }
}

impl World {
    /// When the tool next needs the clock.
    pub(super) fn tool_next_wakeup(&self) -> Option<Instant> {
        let t = self.tool.as_ref()?;
        match &t.running {
            Some(r) => r.pending.as_ref().map(|p| p.0),
            // Draining: one more command settles what is left, at once.
            None if t.stopped && !t.unsettled.is_empty() => Some(self.now),
            None if t.stopped => None,
            None => Some(t.next_at.max(self.now)),
        }
    }

    /// Quiet: no operation running and nothing left unsettled.
    pub(super) fn tool_quiet(&self) -> bool {
        self.tool
            .as_ref()
            .is_none_or(|t| t.running.is_none() && t.unsettled.is_empty())
    }

    /// The world drains: no new operations, but one to settle what is left.
    pub(super) fn tool_stop(&mut self) {
        if let Some(t) = self.tool.as_mut() {
            t.stopped = true;
        }
    }

    /// A host request for a tool key now and then, so GETs check the tool's writes.
    pub(super) fn tool_read(&mut self) -> Option<Request> {
        let t = self.tool.as_mut()?;
        t.prng.chance(1, 25).then(|| Request::Get {
            pool: TOOL_POOL,
            key: tool_key(&mut t.prng),
        })
    }

    /// Whether a reply shows a value a tool key had before the tool's later writes, and
    /// since the daemon last loaded the pool: accepted, but not taken as a fresh
    /// observation. Two honest ways to get one: a read that loaded the file before a
    /// tool write completed and answered after it (they were concurrent), and the
    /// daemon answering from memory while its file lane is busy (it cannot know of
    /// another writer's change without reading the file). The second is a finding of
    /// the second writer: with hvkvp, "memory holds what the disk durably holds" is only
    /// true while the file lane is idle.
    pub(super) fn tool_stale_read(&mut self, req: &Request, reply: &Reply) -> bool {
        let maybe_stale = self.tool.as_ref().is_some_and(|t| !t.past.is_empty());
        if maybe_stale && matches!(req, Request::Enumerate { pool, .. } if *pool == TOOL_POOL) {
            // A walk over memory that may predate tool writes may miss their keys.
            if let Some(w) = self.walk.as_mut() {
                w.disturbed = true;
            }
        }
        let (key, got) = match (req, reply) {
            (Request::Get { pool, key }, Reply::Value(v)) if *pool == TOOL_POOL => {
                (key, Some(v.clone()))
            }
            (Request::Get { pool, key }, Reply::Status(Status::S_CONT)) if *pool == TOOL_POOL => {
                (key, None)
            }
            (Request::Enumerate { pool, .. }, Reply::Entry { key, value })
                if *pool == TOOL_POOL =>
            {
                (key, Some(value.clone()))
            }
            _ => return false,
        };
        let Some(t) = self.tool.as_ref() else {
            return false;
        };
        let held = (key.clone(), got);
        // A value that may be stale is never an observation, even when the model also
        // allows it: the read may have loaded it before a later tool write.
        if !t.past.contains(&held) {
            return false;
        }
        self.log("world", "stale read of a tool key accepted");
        if let Some(w) = self.walk.as_mut() {
            w.disturbed = true;
        }
        true
    }

    fn tool_log(&mut self, text: &str) {
        let g = self.tool.as_ref().map_or(0, |t| t.generation);
        self.log(&format!("hvkvp#{g}"), text);
    }

    /// Runs the tool up to the current time.
    pub(super) fn tool_advance(&mut self) {
        for _ in 0..10_000 {
            if self.violation.is_some() || !self.tool_turn() {
                return;
            }
        }
    }

    /// One thing the tool does now; `false` when it has nothing to do.
    fn tool_turn(&mut self) -> bool {
        let now = self.now;
        let Some(t) = self.tool.as_mut() else {
            return false;
        };
        let who = tool_owner(t.generation);
        let Some(mut r) = t.running.take() else {
            let journal = crate::fs::name_of(FileId::journal(TOOL_POOL));
            if self.fs.contents(journal).is_empty() {
                // Recovered (by us or the daemon): what is left is settled.
                t.unsettled.clear();
            }
            if t.stopped && !t.unsettled.is_empty() {
                // The next hvkvp command recovers the pool first; this one finds nothing.
                let key = Key::new(b"hvkvp|settle").expect("short");
                self.tool_start(MutOp::Delete(key), None);
                return true;
            }
            if t.stopped || now < t.next_at {
                return false;
            }
            let op = random_op(&mut t.prng);
            let crash = t.prng.chance(2, 3).then(|| {
                let power = t.prng.chance(1, 6);
                (t.prng.below(25), power)
            });
            self.tool_start(op, crash);
            return true;
        };
        if let Some(e) = r.parked.take() {
            match execute(&mut self.fs, who, &e) {
                Ok(res) => r.pending = Some((now.saturating_add(latency(&e)), res)),
                Err(_) => r.parked = Some(e),
            }
        }
        let result = match r.pending.take() {
            Some((at, res)) if at <= now => Some(res),
            Some(p) => {
                r.pending = Some(p);
                None
            }
            None => None,
        };
        if result.is_none() && (r.effects > 0 || r.parked.is_some()) {
            // Waiting for the effect in flight, or for the lock or the thaw.
            self.tool.as_mut().expect("checked").running = Some(r);
            return false;
        }
        let step = r.job.resume(result);
        r.job.events.clear();
        match step {
            ToolStep::Finished(o) => {
                self.tool.as_mut().expect("checked").running = Some(r);
                self.tool_finish(o);
            }
            ToolStep::Effect(e) => {
                if let Some((n, power)) = r.crash.filter(|c| r.effects >= c.0) {
                    let _ = n;
                    self.tool.as_mut().expect("checked").running = Some(r);
                    self.tool_die(power);
                    return true;
                }
                r.effects += 1;
                match execute(&mut self.fs, who, &e) {
                    Ok(res) => r.pending = Some((now.saturating_add(latency(&e)), res)),
                    Err(_) => r.parked = Some(e),
                }
                self.tool.as_mut().expect("checked").running = Some(r);
                if let Some(d) = self.daemon.as_mut() {
                    // The tool may have released the lock the daemon waits for.
                    d.unpark(now, &mut self.fs, &mut self.net);
                }
            }
        }
        true
    }

    fn tool_start(&mut self, op: MutOp, crash: Option<(u64, bool)>) {
        let exist = files_exist(&self.fs, TOOL_POOL);
        let (key, value) = new_value(&op);
        let text = match &op {
            MutOp::Set(k, v) => format!(
                "set {} = {}",
                trace::text(k.as_bytes()),
                trace::text(v.as_bytes())
            ),
            MutOp::Delete(k) => format!("delete {}", trace::text(k.as_bytes())),
        };
        let before = self.model.possible(TOOL_POOL, &key).to_vec();
        let Some(t) = self.tool.as_mut() else { return };
        for b in &before {
            let held = (key.clone(), b.clone());
            if !t.past.contains(&held) {
                t.past.push(held);
            }
        }
        t.running = Some(Running {
            job: ToolWrite::new(TOOL_POOL, op, exist),
            key,
            value,
            before,
            pending: None,
            parked: None,
            effects: 0,
            crash,
        });
        let dies = crash.map_or(String::new(), |(n, p)| {
            format!(
                " (dies by {} after {n} effects)",
                if p { "power loss" } else { "kill -9" }
            )
        });
        self.tool_log(&format!("{text}{dies}"));
        self.tool_hold();
        if let Some(w) = self.walk.as_mut() {
            // The tool's change may move records under the walk.
            w.disturbed = true;
        }
    }

    fn tool_finish(&mut self, o: ToolOutcome) {
        let Some(t) = self.tool.as_mut() else { return };
        let Some(r) = t.running.take() else { return };
        t.next_at = self
            .now
            .saturating_add(Duration::from_millis(t.prng.range(200, 2000)));
        self.stats.tool_ops += 1;
        match o {
            ToolOutcome::Written | ToolOutcome::Unchanged | ToolOutcome::NotFound => {
                // Our Recover settled every earlier entry before ours was written.
                t.unsettled.retain(|(k, _)| *k != r.key);
                self.model.acknowledged(TOOL_POOL, &r.key, r.value.clone());
            }
            ToolOutcome::InDoubt(_) => {
                t.unsettled.push((r.key.clone(), r.value.clone()));
                self.errors_possible = true;
            }
            // Nothing changed, and nothing will: the value it would have written is no
            // longer possible (catches an outcome that says so while the journal still
            // holds the change, for a later recovery to finish).
            ToolOutcome::Full
            | ToolOutcome::JournalBusy
            | ToolOutcome::Failed(_)
            | ToolOutcome::NotApplied(_) => {
                self.model.release(TOOL_POOL, &r.key, &r.value, &r.before);
            }
        }
        self.tool_log(&format!("-> {o:?}"));
        if let Some(d) = self.daemon.as_mut() {
            d.unpark(self.now, &mut self.fs, &mut self.net);
        }
    }

    /// The tool dies at its crash point: `kill -9`, or power loss of the whole machine.
    fn tool_die(&mut self, power: bool) {
        if power {
            self.tool_log("power loss");
            if self.daemon.is_some() {
                self.crash(true); // calls tool_power_lost
            } else {
                self.tool_power_lost();
                for note in self.fs.crash(&mut self.crash_prng) {
                    self.log("fs", &note);
                }
            }
        } else {
            self.tool_log("kill -9");
            self.tool_lost();
        }
        self.route();
    }

    /// The machine lost power: the tool dies with it (its locks go with the file system).
    pub(super) fn tool_power_lost(&mut self) {
        self.tool_lost();
    }

    fn tool_lost(&mut self) {
        let now = self.now;
        let Some(t) = self.tool.as_mut() else { return };
        let Some(r) = t.running.take() else { return };
        self.fs.release_locks_of(tool_owner(t.generation));
        t.generation += 1;
        t.unsettled.push((r.key, r.value));
        t.next_at = now.saturating_add(Duration::from_millis(t.prng.range(200, 2000)));
        self.stats.tool_crash_points += 1;
        // Reads may find its journal entry and fail until it is recovered. (A power
        // loss restarts the daemon, whose recovery is followed by a checkpoint; the
        // sweep checks every kill -9 point after recovery.)
        self.errors_possible = true;
        if let Some(w) = self.walk.as_mut() {
            w.disturbed = true;
        }
        if let Some(d) = self.daemon.as_mut() {
            d.unpark(now, &mut self.fs, &mut self.net);
        }
    }

    /// Keeps the values of running and unsettled changes possible for the host's model.
    fn tool_hold(&mut self) {
        let Some(t) = self.tool.as_ref() else { return };
        let running = t.running.as_ref().map(|r| (r.key.clone(), r.value.clone()));
        for (k, v) in t.unsettled.iter().cloned().chain(running) {
            self.model.hold(TOOL_POOL, &k, v);
        }
    }

    /// After every step: settles what a recovery settled, holds the rest.
    pub(super) fn tool_check(&mut self) {
        let journal = crate::fs::name_of(FileId::journal(TOOL_POOL));
        let settled = self.fs.contents(journal).is_empty();
        let pool = crate::fs::name_of(FileId::pool(TOOL_POOL));
        let fresh = self
            .daemon
            .as_ref()
            .is_some_and(|d| d.machine.pool_stamp(TOOL_POOL) == Some(self.fs.peek_stamp(pool)));
        if let Some(t) = self.tool.as_mut() {
            if settled && t.running.is_none() {
                t.unsettled.clear();
            }
            if fresh && t.running.is_none() && self.outstanding.is_none() {
                // The daemon's memory is the file as it is now, no change of the tool's
                // is about to make it old, and no read is under way.
                t.past.clear();
            }
        }
        self.tool_hold();
    }
}
