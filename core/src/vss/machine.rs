//! The VSS file-system daemon as a sans-IO state machine (docs/protocol/vss.md §2–3, §7).
//!
//! Same contract as the KVP machine: `handle(now, input)`, drain `poll_output()`, wake at
//! `poll_timeout()`. The machine runs one chain of effects at a time, one effect in
//! flight:
//!
//! * CHECK: list mounts, apply the policy, answer.
//! * FREEZE: list mounts and hooks, run the freeze hooks in name order, `zpool sync` the
//!   pools, snapshot if asked, suspend the UFS file systems (`/` last), answer OK.
//!   Each step gets a deadline that leaves time to roll back before the kernel's 15 s
//!   (counted from the host message's arrival, which the kernel stamps into msgid). Any
//!   failure or overrun rolls back: resume what was suspended, answer failure, then run
//!   the thaw hooks of every hook that was started.
//! * THAW (and the watchdog, and shutdown): resume everything, run the thaw hooks in
//!   reverse order, answer OK unless resuming failed.
//! * PRUNE: after a THAW answered OK of a freeze that took snapshots, outside any freeze:
//!   per pool, list its snapshots and destroy our older ones (`prune::select`, keeping
//!   `snapshot_keep`). A request that comes meanwhile stops it at once.
//!
//! The suspend descriptors live in a separate single-threaded freezer process (UFSSUSPEND
//! refuses a multi-threaded caller). Its exit resumes everything; the machine is told
//! with `FreezerExited` and treats it so. Log events are held while anything is
//! suspended (a log write to a suspended file system would block) and released after.
//!
//! A FREEZE while frozen starts the watchdog again, but a freeze never lasts longer than
//! [`VSS_MAX_FROZEN`] from its first suspension: the machine thaws the freezer's backstop
//! before it (and refuses a FREEZE that comes later), and never asks the freezer to hold
//! past it. After `Shutdown` or `DeviceFailed` the machine runs on without the device to
//! thaw what it froze, for at most [`VSS_EXIT_LIMIT`]; then it says what it gave up and
//! exits.

use std::collections::VecDeque;
use std::time::Duration;

use crate::kvp::effect::{EffectId, IoError};
use crate::limits::{
    VSS_ANSWER_MARGIN, VSS_EXIT_LIMIT, VSS_FREEZER_BACKSTOP, VSS_GRACE, VSS_HOOK, VSS_HOOKS_TOTAL,
    VSS_KERNEL_DEADLINE, VSS_LISTING, VSS_MAX_FROZEN, VSS_MIN_STEP, VSS_ROLLBACK, VSS_SNAPSHOT,
    VSS_SNAPSHOT_DESTROY, VSS_SNAPSHOT_KEEP, VSS_SNAPSHOT_LIST, VSS_SUSPEND, VSS_SYNC,
    VSS_THAW_HOOK, VSS_WATCHDOG,
};
use crate::time::Instant;
use crate::vss::effect::{ExitStatus, VssEffect, VssInput, VssResult};
use crate::vss::hooks::{self, HookFailure, Skip};
use crate::vss::policy::{FreezePlan, Policy, PolicyError};
use crate::vss::prune;
use crate::vss::rules;
use crate::vss::wire::{Echo, Layout, VssOp, VssRead};

/// How the kernel's 15 s are spent (the defaults add up to 13 s for the daemon's
/// FREEZE, leaving the application helper, which runs first, about 2 s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The kernel fails a request this long after the host's message arrived.
    pub kernel: Duration,
    /// Answer this long before the kernel's deadline.
    pub margin: Duration,
    /// Longest single freeze hook.
    pub hook: Duration,
    /// All freeze hooks together.
    pub hooks_total: Duration,
    pub sync: Duration,
    pub snapshot: Duration,
    /// All UFSSUSPENDs together.
    pub suspend: Duration,
    /// Kept free for the rollback's resume before the answer is due.
    pub rollback: Duration,
    /// Longest thaw hook (thaw hooks run after the answer to a failed FREEZE).
    pub thaw_hook: Duration,
    /// How long past its deadline an effect may be late before it is given up.
    pub grace: Duration,
}

impl Budget {
    /// How much of the kernel's time had passed when a request was read: its msgid is
    /// the kernel's real-time clock when the host message arrived. A clock that went
    /// backwards counts as no time used; never more than the whole.
    pub fn used(&self, msgid: u64, realtime_ns: u64) -> Duration {
        Duration::from_nanos(realtime_ns.saturating_sub(msgid)).min(self.kernel)
    }
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            kernel: VSS_KERNEL_DEADLINE,
            margin: VSS_ANSWER_MARGIN,
            hook: VSS_HOOK,
            hooks_total: VSS_HOOKS_TOTAL,
            sync: VSS_SYNC,
            snapshot: VSS_SNAPSHOT,
            suspend: VSS_SUSPEND,
            rollback: VSS_ROLLBACK,
            thaw_hook: VSS_THAW_HOOK,
            grace: VSS_GRACE,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VssConfig {
    /// Which kernel's device: its messages, and whether it wants a registration.
    pub layout: Layout,
    pub policy: Policy,
    /// The hook directory; `None` runs no hooks.
    pub hook_dir: Option<String>,
    pub budget: Budget,
    /// Thaw by ourselves this long after a successful FREEZE with no THAW. Always more
    /// than the kernel's 15 s: a THAW can come no earlier.
    pub watchdog: Duration,
    /// Snapshot names: `POOL@<prefix><msgid>`.
    pub snapshot_prefix: String,
    /// Whether a failing freeze hook fails the FREEZE.
    pub hook_failure: HookFailure,
    /// After a successful THAW of a freeze that took snapshots, keep this many of our
    /// own (`POOL@<prefix><digits>`) per pool and destroy the older; 0 keeps all. Without
    /// it every backup leaves a snapshot behind and the pool fills up.
    pub snapshot_keep: u32,
}

impl Default for VssConfig {
    fn default() -> VssConfig {
        VssConfig {
            layout: Layout::FreeBsd,
            policy: Policy::default(),
            hook_dir: None,
            budget: Budget::default(),
            watchdog: VSS_WATCHDOG,
            snapshot_prefix: "hvguest-".into(),
            hook_failure: HookFailure::Veto,
            snapshot_keep: VSS_SNAPSHOT_KEEP,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VssEvent {
    Request {
        op: VssOp,
        msgid: u64,
    },
    Answered {
        op: VssOp,
        msgid: u64,
        ok: bool,
    },
    /// A READ we cannot carry out, answered with failure.
    Invalid(Echo),
    /// The kernel answered our registration: requests can come.
    Registered,
    /// The device was closed and opened again (after it failed): registering again. An
    /// answer still owed to a request read before is never written; the kernel has
    /// failed that request already.
    DeviceReopened,
    Vetoed(PolicyError),
    HookSkipped {
        name: String,
        why: Skip,
    },
    HookFailed {
        name: String,
        arg: &'static str,
        status: ExitStatus,
    },
    /// A freeze hook failed and `hook_failure = filesystems`: the FREEZE goes on, and
    /// the backup is only crash-consistent for what this hook quiesces.
    HookFailureTolerated {
        name: String,
        status: ExitStatus,
    },
    StepFailed {
        step: &'static str,
        detail: String,
    },
    /// An effect overran its deadline and was given up.
    Abandoned {
        step: &'static str,
    },
    Suspended {
        mount: String,
    },
    Resumed {
        mounts: Vec<String>,
    },
    ResumeFailed(IoError),
    SnapshotTaken {
        snapshot: String,
    },
    /// One of our older snapshots destroyed by the prune after a THAW.
    SnapshotDestroyed {
        snapshot: String,
    },
    /// The prune stopped before its end: a host request came (it must not wait), or
    /// the daemon is stopping. The rest waits for the next successful THAW.
    PruneInterrupted {
        by_request: bool,
    },
    WatchdogThaw {
        frozen_for: Duration,
    },
    /// Frozen for `VSS_MAX_FROZEN` less the freezer's backstop since the first
    /// suspension, however often FREEZE came: thawing (or, for a FREEZE that came then,
    /// refusing it and thawing).
    FreezeCapReached {
        frozen_for: Duration,
    },
    /// `VSS_EXIT_LIMIT` after the shutdown began, the thaw is given up: these hooks never
    /// got their `thaw`, these mounts are left to the freezer's exit.
    ExitLimit {
        unthawed: Vec<String>,
        suspended: Vec<String>,
    },
    FreezerExited {
        held: Vec<String>,
    },
    /// Answered without suspending again: already frozen.
    AlreadyFrozen,
    /// The device failed: thawing if frozen, then exiting.
    DeviceFailed(IoError),
    /// An answer could not be written.
    AnswerLost {
        msgid: u64,
        error: IoError,
    },
    /// An answer owed to a request read before the device was reopened: not written.
    AnswerDropped {
        op: VssOp,
        msgid: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VssOutput {
    /// One whole message for the device: its layout's size.
    DeviceWrite(Vec<u8>),
    Effect {
        id: EffectId,
        effect: VssEffect,
    },
    Event(VssEvent),
    Exit,
}

#[derive(Clone, Copy, Debug)]
struct Req {
    op: VssOp,
    /// FreeBSD's msgid, or the time a Linux request was read (`VssRead::Request`).
    msgid: u64,
    echo: Echo,
    reply_by: Instant,
    /// The device opening it was read from ([`VssMachine::opening`]).
    opening: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FreezeStage {
    Mounts,
    Hooks,
    FreezeHook,
    Sync,
    Snapshot,
    Suspend,
}

#[derive(Debug)]
struct Freeze {
    req: Req,
    stage: FreezeStage,
    plan: FreezePlan,
    hooks: Vec<String>,
    next: usize,
    /// When the freeze hooks' whole budget runs out (set as the first hook starts).
    hooks_until: Option<Instant>,
    suspend_until: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThawWhy {
    /// A predecessor may have died with applications frozen: thaw every hook.
    Startup,
    Requested,
    Watchdog,
    FreezeFailed,
    FreezerExited,
    Shutdown,
    /// Our OK to FREEZE never reached the kernel.
    AnswerLost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThawStage {
    /// Listing the hook directory (start-up: every hook gets `thaw`).
    ListHooks,
    Resume,
    KillFreezer,
    Hooks,
}

#[derive(Debug)]
struct Thaw {
    why: ThawWhy,
    /// Answered after the hooks (THAW), or right after resuming (a failed FREEZE).
    req: Option<Req>,
    stage: ThawStage,
    hooks: Vec<String>,
    next: usize,
    resume_failed: bool,
    /// Pools the freeze took snapshots of: pruned once a requested THAW ends well.
    prune: Vec<String>,
}

#[derive(Debug)]
enum Chain {
    Check(Req),
    /// FREEZE while frozen: confirm the freezer still holds everything.
    Refreeze(Req),
    Freeze(Freeze),
    Thaw(Thaw),
    /// After a successful THAW, outside any freeze: destroy our older snapshots.
    Prune(Prune),
}

/// The prune after a successful THAW: per pool, list its snapshots, then destroy the
/// ones `prune::select` chooses. Dropped the moment a request comes.
#[derive(Debug)]
struct Prune {
    /// Pools the thawed freeze took a snapshot of.
    pools: Vec<String>,
    /// The next pool to list.
    next_pool: usize,
    /// Whether the effect in flight is a listing (else a destroy).
    listing: bool,
    /// The current pool's snapshots to destroy, oldest first.
    destroy: Vec<String>,
    next: usize,
}

pub struct VssMachine {
    cfg: VssConfig,
    now: Instant,
    chain: Option<Chain>,
    /// The effect in flight and when we stop waiting for it.
    in_flight: Option<(EffectId, Instant, &'static str)>,
    /// A request that came while a chain was still finishing.
    queued: Option<Req>,
    /// Mounts suspended right now (as far as we know), in suspension order.
    suspended: Vec<String>,
    /// Freeze hooks started since the last thaw: each gets its `thaw`.
    hooks_started: Vec<String>,
    /// Pools snapshotted since the last thaw (what a successful THAW prunes).
    snapshotted: Vec<String>,
    frozen_since: Option<Instant>,
    /// When this freeze began to hold anything: its first suspension (or, with nothing
    /// to suspend, its OK answer). The cap counts from here.
    frozen_from: Option<Instant>,
    watchdog_at: Option<Instant>,
    shutting_down: bool,
    /// When a shutdown stops waiting for the thaw and exits anyway.
    exit_by: Option<Instant>,
    /// The freezer died while a chain that cannot absorb it (a CHECK) was running: the
    /// thaw that follows its death waits for that chain.
    thaw_after_chain: bool,
    exited: bool,
    held: Vec<VssEvent>,
    outputs: VecDeque<VssOutput>,
    next_effect: u64,
    /// Counts the device's openings: an answer goes only to the opening its request
    /// came from.
    opening: u32,
    /// Our registration is written and the kernel's answer not read yet.
    awaiting_registration: bool,
    /// The msgid of the last answer written (what a lost Linux answer names).
    last_answered: u64,
}

fn step_name(s: FreezeStage) -> &'static str {
    match s {
        FreezeStage::Mounts => "list mounts",
        FreezeStage::Hooks => "list hooks",
        FreezeStage::FreezeHook => "freeze hook",
        FreezeStage::Sync => "zpool sync",
        FreezeStage::Snapshot => "zfs snapshot",
        FreezeStage::Suspend => "suspend",
    }
}

impl VssMachine {
    /// Starts the machine. With a hook directory, it first runs every hook with `thaw`:
    /// a predecessor that died while frozen cannot tell us which applications it froze
    /// (its file systems were resumed by the kernel when its freezer died), and thaw
    /// hooks are idempotent by convention.
    pub fn new(cfg: VssConfig, now: Instant) -> VssMachine {
        if let Err(e) = rules::check_daemon(&cfg) {
            panic!("VssMachine configuration breaks a rule: {e}");
        }
        let mut m = VssMachine::bare(cfg, now);
        m.register();
        if m.cfg.hook_dir.is_some() {
            m.thaw_chain(ThawWhy::Startup, None, ThawStage::ListHooks);
            m.effect(
                VssEffect::ListHooks,
                now.saturating_add(VSS_LISTING),
                "list hooks",
            );
        }
        m
    }

    fn bare(cfg: VssConfig, now: Instant) -> VssMachine {
        VssMachine {
            cfg,
            now,
            chain: None,
            in_flight: None,
            queued: None,
            suspended: Vec::new(),
            hooks_started: Vec::new(),
            snapshotted: Vec::new(),
            frozen_since: None,
            frozen_from: None,
            watchdog_at: None,
            shutting_down: false,
            exit_by: None,
            thaw_after_chain: false,
            exited: false,
            held: Vec::new(),
            outputs: VecDeque::new(),
            next_effect: 0,
            opening: 0,
            awaiting_registration: false,
            last_answered: 0,
        }
    }

    /// Writes the layout's registration, if it has one, and waits for its answer.
    fn register(&mut self) {
        if let Some(m) = self.cfg.layout.vss_registration() {
            self.outputs.push_back(VssOutput::DeviceWrite(m));
            self.awaiting_registration = true;
        }
    }

    /// Whether the kernel has answered our registration (always, on FreeBSD).
    pub fn registered(&self) -> bool {
        !self.awaiting_registration
    }

    pub fn poll_output(&mut self) -> Option<VssOutput> {
        self.outputs.pop_front()
    }

    /// Mounts we believe suspended now.
    pub fn suspended(&self) -> &[String] {
        &self.suspended
    }

    /// Whether a FREEZE holds (answered OK, not yet thawed).
    pub fn frozen(&self) -> bool {
        self.frozen_since.is_some()
    }

    /// Whether a prune (after a THAW) is running.
    pub fn pruning(&self) -> bool {
        matches!(self.chain, Some(Chain::Prune(_)))
    }

    pub fn is_idle(&self) -> bool {
        self.chain.is_none() && self.queued.is_none()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Vec<Instant> = Vec::new();
        t.extend(self.in_flight.map(|f| f.1));
        if let Some(Chain::Thaw(th)) = &self.chain {
            t.extend(th.req.map(|r| r.reply_by));
        }
        t.extend(self.queued.map(|q| q.reply_by));
        if self.chain.is_none() {
            t.extend(self.watchdog_at);
        }
        t.extend(self.exit_by.filter(|_| !self.exited));
        t.into_iter().min()
    }

    /// When the cap makes us thaw: the freezer's backstop before [`VSS_MAX_FROZEN`] is
    /// up, so that we thaw first and say why.
    fn cap_thaw_at(&self) -> Option<Instant> {
        self.frozen_from
            .map(|f| f.saturating_add(VSS_MAX_FROZEN.saturating_sub(VSS_FREEZER_BACKSTOP)))
    }

    /// The watchdog for an OK answered now: `watchdog` from now, or the cap if sooner.
    fn watchdog_from_now(&self) -> Instant {
        let w = self.now.saturating_add(self.cfg.watchdog);
        self.cap_thaw_at().map_or(w, |c| w.min(c))
    }

    /// The freezer's own auto-thaw, asked for now: its backstop after our watchdog, but
    /// never past the cap.
    fn freezer_auto_thaw(&self) -> Duration {
        let backstop = rules::freezer_backstop(self.cfg.watchdog);
        match self.frozen_from {
            Some(f) => backstop.min(f.saturating_add(VSS_MAX_FROZEN).saturating_since(self.now)),
            None => backstop.min(VSS_MAX_FROZEN),
        }
    }

    fn event(&mut self, e: VssEvent) {
        if self.suspended.is_empty() {
            self.outputs.push_back(VssOutput::Event(e));
        } else {
            self.held.push(e);
        }
    }

    fn release_held(&mut self) {
        if self.suspended.is_empty() {
            for e in std::mem::take(&mut self.held) {
                self.outputs.push_back(VssOutput::Event(e));
            }
        }
    }

    fn answer(&mut self, req: Req, ok: bool) {
        if req.opening != self.opening {
            // Read from a device since closed: this opening has no such request. An OK
            // to FREEZE the host never saw must not leave us frozen.
            self.event(VssEvent::AnswerDropped {
                op: req.op,
                msgid: req.msgid,
            });
            if ok && req.op == VssOp::Freeze {
                self.undo_unseen_freeze();
            }
            return;
        }
        self.outputs
            .push_back(VssOutput::DeviceWrite(req.echo.reply(ok)));
        self.last_answered = req.msgid;
        self.event(VssEvent::Answered {
            op: req.op,
            msgid: req.msgid,
            ok,
        });
    }

    fn effect(&mut self, effect: VssEffect, give_up_at: Instant, step: &'static str) {
        self.next_effect += 1;
        let id = EffectId(self.next_effect);
        debug_assert!(self.in_flight.is_none(), "one VSS effect at a time");
        self.in_flight = Some((id, give_up_at, step));
        self.outputs.push_back(VssOutput::Effect { id, effect });
    }

    pub fn handle(&mut self, now: Instant, input: VssInput) {
        assert!(
            self.outputs.is_empty(),
            "handle() called with undrained outputs"
        );
        assert!(now >= self.now, "time went backwards");
        self.now = now;
        if self.exited {
            return;
        }
        match input {
            VssInput::DeviceRead { bytes, realtime_ns } => self.on_read(&bytes, realtime_ns),
            VssInput::EffectDone { id, result } => {
                if self.in_flight.map(|f| f.0) == Some(id) {
                    self.in_flight = None;
                    self.advance(Some(result));
                }
                // A late result of an effect we gave up on: ignored.
            }
            VssInput::Timer => self.on_timer(),
            VssInput::FreezerExited => self.on_freezer_exit(),
            VssInput::AnswerLost { bytes, error } => self.on_answer_lost(&bytes, error),
            VssInput::DeviceReopened => {
                self.opening = self.opening.wrapping_add(1);
                self.event(VssEvent::DeviceReopened);
                self.register();
            }
            VssInput::Shutdown | VssInput::DeviceFailed(_) => {
                if let VssInput::DeviceFailed(e) = input {
                    self.event(VssEvent::DeviceFailed(e));
                }
                self.shutting_down = true;
                self.exit_by
                    .get_or_insert(now.saturating_add(VSS_EXIT_LIMIT));
                if self.stop_prune() {
                    self.event(VssEvent::PruneInterrupted { by_request: false });
                }
                if let Some(Chain::Freeze(f)) = &self.chain {
                    // Never answer OK to a FREEZE we are about to undo: roll it back now
                    // (the effect in flight is abandoned; its result will be ignored).
                    // An abandoned suspension may still happen after we stop listening:
                    // count its mount as suspended, so the rollback resumes it too (the
                    // freezer takes the resume after it).
                    if f.stage == FreezeStage::Suspend && self.in_flight.is_some() {
                        let mount = f.plan.suspend[f.next - 1].clone();
                        if !self.suspended.contains(&mount) {
                            self.suspended.push(mount);
                        }
                    }
                    self.in_flight = None;
                    self.fail_freeze();
                }
            }
        }
        self.settle();
    }

    /// Starts queued work once the current chain is done.
    fn settle(&mut self) {
        if self.chain.is_some() || self.exited {
            return;
        }
        if std::mem::take(&mut self.thaw_after_chain) {
            self.begin_thaw(ThawWhy::FreezerExited, None);
            return;
        }
        if let Some(q) = self.queued.take() {
            if self.shutting_down && q.op == VssOp::Freeze {
                // Going away: no new freeze.
                self.answer(q, false);
            } else {
                self.start(q);
                return;
            }
        }
        if self.shutting_down {
            if !self.suspended.is_empty()
                || !self.hooks_started.is_empty()
                || self.frozen_since.is_some()
            {
                self.begin_thaw(ThawWhy::Shutdown, None);
                return;
            }
            self.release_held();
            self.exited = true;
            self.outputs.push_back(VssOutput::Exit);
        }
    }

    fn on_read(&mut self, bytes: &[u8], realtime_ns: u64) {
        if self.awaiting_registration && self.cfg.layout.is_vss_registration_answer(bytes) {
            self.awaiting_registration = false;
            self.event(VssEvent::Registered);
            return;
        }
        let (op, msgid, echo) = match self.cfg.layout.decode_vss_read(bytes, realtime_ns) {
            VssRead::Nothing => return,
            VssRead::Invalid(m) => {
                self.outputs
                    .push_back(VssOutput::DeviceWrite(m.reply(false)));
                self.event(VssEvent::Invalid(m));
                return;
            }
            VssRead::Request { op, msgid, echo } => (op, msgid, echo),
        };
        let b = &self.cfg.budget;
        let used = b.used(msgid, realtime_ns);
        let left = b.kernel.saturating_sub(used).saturating_sub(b.margin);
        let req = Req {
            op,
            msgid,
            echo,
            reply_by: self.now.saturating_add(left),
            opening: self.opening,
        };
        self.event(VssEvent::Request { op, msgid });
        // The request gets its whole time: the rest of the prune waits for the next
        // successful THAW.
        if self.stop_prune() {
            self.event(VssEvent::PruneInterrupted { by_request: true });
        }
        if self.chain.is_some() {
            // The kernel sends one at a time; this can only follow our answer while we
            // still run thaw hooks. It waits for them, up to its deadline.
            if let Some(old) = self.queued.replace(req) {
                self.answer(old, false);
            }
            return;
        }
        self.start(req);
    }

    fn start(&mut self, req: Req) {
        match req.op {
            VssOp::Check => {
                self.chain = Some(Chain::Check(req));
                self.effect(VssEffect::ListMounts, req.reply_by, "list mounts");
            }
            VssOp::Freeze
                if self.frozen_since.is_some()
                    && self.cap_thaw_at().is_some_and(|c| self.now >= c) =>
            {
                // Frozen as long as a freeze may last: no more OKs. Thaw and fail it;
                // the host may start a new backup.
                let frozen_for = self
                    .frozen_from
                    .map_or(Duration::ZERO, |f| self.now.saturating_since(f));
                self.event(VssEvent::FreezeCapReached { frozen_for });
                self.begin_thaw(ThawWhy::FreezeFailed, Some(req));
            }
            VssOp::Freeze if self.frozen_since.is_some() => {
                // Already frozen: nothing to suspend twice, but the freezer may have died
                // a moment ago without us knowing yet. A round trip to it tells.
                self.chain = Some(Chain::Refreeze(req));
                self.effect(
                    VssEffect::PingFreezer {
                        auto_thaw_after: self.freezer_auto_thaw(),
                    },
                    self.now.saturating_add(self.cfg.budget.rollback),
                    "ping freezer",
                );
            }
            VssOp::Freeze => {
                self.chain = Some(Chain::Freeze(Freeze {
                    req,
                    stage: FreezeStage::Mounts,
                    plan: FreezePlan::default(),
                    hooks: Vec::new(),
                    next: 0,
                    hooks_until: None,
                    suspend_until: None,
                }));
                self.freeze_effect(VssEffect::ListMounts, VSS_LISTING);
            }
            VssOp::Thaw => self.begin_thaw(ThawWhy::Requested, Some(req)),
        }
    }

    /// Deadline for a freeze step of at most `want`, leaving time to roll back.
    fn step_deadline(&self, reply_by: Instant, want: Duration) -> Duration {
        let until_rollback = reply_by
            .saturating_since(self.now)
            .saturating_sub(self.cfg.budget.rollback);
        want.min(until_rollback)
    }

    /// Issues a FREEZE step with a deadline of at most `want`; false (and the FREEZE
    /// rolled back) if there is no time left for it.
    fn freeze_effect(&mut self, effect: VssEffect, want: Duration) -> bool {
        let Some(Chain::Freeze(f)) = &self.chain else {
            return false;
        };
        let (reply_by, stage) = (f.req.reply_by, f.stage);
        let d = self.step_deadline(reply_by, want);
        if d < VSS_MIN_STEP {
            // No time left to do this step and still roll back in time.
            self.event(VssEvent::Abandoned {
                step: step_name(stage),
            });
            self.fail_freeze();
            return false;
        }
        let effect = match effect {
            VssEffect::Run { argv, .. } => VssEffect::Run { argv, deadline: d },
            VssEffect::RunHook { dir, name, arg, .. } => VssEffect::RunHook {
                dir,
                name,
                arg,
                deadline: d,
            },
            VssEffect::ZpoolSync { pools, .. } => VssEffect::ZpoolSync { pools, deadline: d },
            VssEffect::ZfsSnapshot { snapshot, .. } => VssEffect::ZfsSnapshot {
                snapshot,
                deadline: d,
            },
            other => other,
        };
        self.effect(
            effect,
            self.now
                .saturating_add(d)
                .saturating_add(self.cfg.budget.grace),
            step_name(stage),
        );
        true
    }

    fn hook_effect(&self, name: &str, arg: &str, deadline: Duration) -> VssEffect {
        VssEffect::RunHook {
            dir: self.cfg.hook_dir.clone().unwrap_or_default(),
            name: name.to_string(),
            arg: arg.to_string(),
            deadline,
        }
    }

    /// Moves the running chain on with the result of its effect (`None`: given up).
    fn advance(&mut self, result: Option<VssResult>) {
        match self.chain.take() {
            None => {}
            Some(Chain::Check(req)) => {
                let ok = match result {
                    Some(VssResult::Mounts(m)) => match self.cfg.policy.plan(&m) {
                        Ok(_) => true,
                        Err(e) => {
                            self.event(VssEvent::Vetoed(e));
                            false
                        }
                    },
                    other => {
                        self.event(VssEvent::StepFailed {
                            step: "list mounts",
                            detail: crate::vss::describe::result_text(other.as_ref()),
                        });
                        false
                    }
                };
                self.answer(req, ok);
            }
            Some(Chain::Refreeze(req)) if result.is_none() => {
                // No answer: the freezer is stuck. Only its death resumes for certain.
                self.thaw_chain(ThawWhy::FreezeFailed, Some(req), ThawStage::KillFreezer);
                self.effect(
                    VssEffect::KillFreezer,
                    self.now.saturating_add(self.cfg.budget.rollback),
                    "kill freezer",
                );
            }
            Some(Chain::Refreeze(req)) => {
                if result == Some(VssResult::Done) || self.suspended.is_empty() {
                    self.event(VssEvent::AlreadyFrozen);
                    self.watchdog_at = Some(self.watchdog_from_now());
                    self.answer(req, true);
                } else {
                    // The freezer is gone: what it held is resumed. Fail this FREEZE
                    // (the host may try again) and thaw the hooks.
                    self.on_freezer_gone();
                    self.begin_thaw(ThawWhy::FreezeFailed, Some(req));
                }
            }
            Some(Chain::Freeze(f)) => {
                self.chain = Some(Chain::Freeze(f));
                self.advance_freeze(result);
            }
            Some(Chain::Thaw(t)) => {
                self.chain = Some(Chain::Thaw(t));
                self.advance_thaw(result);
            }
            Some(Chain::Prune(p)) => {
                self.chain = Some(Chain::Prune(p));
                self.advance_prune(result);
            }
        }
    }

    fn advance_freeze(&mut self, result: Option<VssResult>) {
        let Some(Chain::Freeze(f)) = self.chain.as_mut() else {
            return;
        };
        let stage = f.stage;
        let step = step_name(stage);
        match (stage, result) {
            (FreezeStage::Mounts, Some(VssResult::Mounts(m))) => match self.cfg.policy.plan(&m) {
                Ok(plan) => {
                    f.plan = plan;
                    if self.cfg.hook_dir.is_some() {
                        f.stage = FreezeStage::Hooks;
                        self.freeze_effect(VssEffect::ListHooks, VSS_LISTING);
                    } else {
                        self.next_freeze_step();
                    }
                }
                Err(e) => {
                    self.event(VssEvent::Vetoed(e));
                    self.fail_freeze();
                }
            },
            (FreezeStage::Hooks, Some(VssResult::Hooks(entries))) => {
                let (run, skipped) = hooks::select(&entries);
                f.hooks = run;
                f.next = 0;
                f.stage = FreezeStage::FreezeHook;
                for (name, why) in skipped {
                    self.event(VssEvent::HookSkipped { name, why });
                }
                self.next_freeze_step();
            }
            (FreezeStage::FreezeHook, Some(VssResult::Exit(status))) if status.success() => {
                self.next_freeze_step();
            }
            (FreezeStage::FreezeHook, Some(VssResult::Exit(status))) => {
                let name = f.hooks[f.next - 1].clone();
                if self.cfg.hook_failure == HookFailure::Filesystems {
                    // Its thaw still runs: it is in `hooks_started`.
                    self.event(VssEvent::HookFailureTolerated { name, status });
                    self.next_freeze_step();
                    return;
                }
                self.event(VssEvent::HookFailed {
                    name,
                    arg: "freeze",
                    status,
                });
                self.fail_freeze();
            }
            (FreezeStage::Sync | FreezeStage::Snapshot, Some(VssResult::Exit(status)))
                if status.success() =>
            {
                if stage == FreezeStage::Snapshot {
                    let pool = f.plan.snapshot_pools[f.next - 1].clone();
                    let snapshot = format!("{pool}@{}{}", self.cfg.snapshot_prefix, f.req.msgid);
                    if !self.snapshotted.contains(&pool) {
                        self.snapshotted.push(pool);
                    }
                    self.event(VssEvent::SnapshotTaken { snapshot });
                }
                self.next_freeze_step();
            }
            (FreezeStage::Suspend, Some(VssResult::Done)) => {
                let mount = f.plan.suspend[f.next - 1].clone();
                self.suspended.push(mount.clone());
                self.event(VssEvent::Suspended { mount });
                self.next_freeze_step();
            }
            (_, None) => {
                self.event(VssEvent::Abandoned { step });
                if stage == FreezeStage::Suspend {
                    // The freezer is stuck in UFSSUSPEND: only its death resumes it.
                    let Some(Chain::Freeze(f)) = self.chain.take() else {
                        return;
                    };
                    self.thaw_chain(ThawWhy::FreezeFailed, Some(f.req), ThawStage::KillFreezer);
                    self.effect(
                        VssEffect::KillFreezer,
                        self.now.saturating_add(self.cfg.budget.rollback),
                        "kill freezer",
                    );
                    return;
                }
                self.fail_freeze();
            }
            (_, Some(other)) => {
                self.event(VssEvent::StepFailed {
                    step,
                    detail: crate::vss::describe::result_text(Some(&other)),
                });
                self.fail_freeze();
            }
        }
    }

    /// Issues the next effect of the FREEZE, or answers OK when all are done.
    fn next_freeze_step(&mut self) {
        let Some(Chain::Freeze(f)) = self.chain.as_mut() else {
            return;
        };
        let b = self.cfg.budget.clone();
        loop {
            match f.stage {
                FreezeStage::Mounts | FreezeStage::Hooks => {
                    f.stage = FreezeStage::FreezeHook;
                    f.next = 0;
                }
                FreezeStage::FreezeHook => {
                    if let Some(name) = f.hooks.get(f.next).cloned() {
                        f.next += 1;
                        // The hooks share one budget, charged by the time they take.
                        let until = *f
                            .hooks_until
                            .get_or_insert(self.now.saturating_add(b.hooks_total));
                        let want = b.hook.min(until.saturating_since(self.now));
                        let effect = self.hook_effect(&name, "freeze", want);
                        if self.freeze_effect(effect, want) {
                            // Only a hook that started gets its thaw.
                            self.hooks_started.push(name);
                        }
                        return;
                    }
                    f.stage = FreezeStage::Sync;
                    f.next = 0;
                    if !f.plan.sync_pools.is_empty() {
                        let pools = f.plan.sync_pools.clone();
                        self.freeze_effect(
                            VssEffect::ZpoolSync {
                                pools,
                                deadline: b.sync,
                            },
                            b.sync,
                        );
                        return;
                    }
                }
                FreezeStage::Sync => {
                    f.stage = FreezeStage::Snapshot;
                    f.next = 0;
                }
                FreezeStage::Snapshot => {
                    if let Some(pool) = f.plan.snapshot_pools.get(f.next).cloned() {
                        f.next += 1;
                        let snapshot =
                            format!("{pool}@{}{}", self.cfg.snapshot_prefix, f.req.msgid);
                        self.freeze_effect(
                            VssEffect::ZfsSnapshot {
                                snapshot,
                                deadline: b.snapshot,
                            },
                            b.snapshot,
                        );
                        return;
                    }
                    f.stage = FreezeStage::Suspend;
                    f.next = 0;
                    f.suspend_until = Some(self.now.saturating_add(b.suspend));
                }
                FreezeStage::Suspend => {
                    if let Some(mount) = f.plan.suspend.get(f.next).cloned() {
                        f.next += 1;
                        let left = f
                            .suspend_until
                            .map_or(b.suspend, |u| u.saturating_since(self.now));
                        let fsid = f.plan.fsids.get(&mount).copied();
                        // The cap counts from the first suspension asked for (the
                        // freezer's own count starts no earlier).
                        self.frozen_from.get_or_insert(self.now);
                        // The freezer thaws by itself at the watchdog even if we hang.
                        let effect = VssEffect::Suspend {
                            mount,
                            fsid,
                            // A backstop just after our own watchdog, which
                            // normally thaws first (and says why).
                            auto_thaw_after: self.freezer_auto_thaw(),
                        };
                        self.freeze_effect(effect, left);
                        return;
                    }
                    // Everything the policy wants suspended is suspended: answer.
                    let req = f.req;
                    self.chain = None;
                    self.frozen_since = Some(self.now);
                    self.frozen_from.get_or_insert(self.now);
                    self.watchdog_at = Some(self.watchdog_from_now());
                    self.answer(req, true);
                    return;
                }
            }
        }
    }

    /// Rolls a failed FREEZE back: resume, answer failure, thaw hooks.
    fn fail_freeze(&mut self) {
        let Some(Chain::Freeze(f)) = self.chain.take() else {
            return;
        };
        self.begin_thaw(ThawWhy::FreezeFailed, Some(f.req));
    }

    /// Makes the running chain a thaw: every started freeze hook will get its `thaw`.
    fn thaw_chain(&mut self, why: ThawWhy, req: Option<Req>, stage: ThawStage) {
        let mut hooks = std::mem::take(&mut self.hooks_started);
        hooks.reverse();
        // Only a requested THAW prunes: after a failed FREEZE, a watchdog or a shutdown
        // the backup did not complete, and its predecessors are the ones to keep.
        let prune = std::mem::take(&mut self.snapshotted);
        let prune = if why == ThawWhy::Requested {
            prune
        } else {
            Vec::new()
        };
        self.frozen_since = None;
        self.frozen_from = None;
        self.watchdog_at = None;
        self.chain = Some(Chain::Thaw(Thaw {
            why,
            req,
            stage,
            hooks,
            next: 0,
            resume_failed: false,
            prune,
        }));
    }

    fn begin_thaw(&mut self, why: ThawWhy, req: Option<Req>) {
        self.thaw_chain(why, req, ThawStage::Resume);
        if self.suspended.is_empty() {
            self.after_resume();
        } else {
            let give_up = self.now.saturating_add(self.cfg.budget.rollback);
            self.effect(VssEffect::ResumeAll, give_up, "resume");
        }
    }

    /// Everything is resumed (or the attempt failed): answer a failed FREEZE now, then
    /// the thaw hooks.
    fn after_resume(&mut self) {
        self.release_held();
        let Some(Chain::Thaw(t)) = self.chain.as_mut() else {
            return;
        };
        t.stage = ThawStage::Hooks;
        if t.why == ThawWhy::FreezeFailed {
            if let Some(req) = t.req.take() {
                self.answer(req, false);
            }
        }
        self.next_thaw_hook();
    }

    fn next_thaw_hook(&mut self) {
        let Some(Chain::Thaw(t)) = self.chain.as_mut() else {
            return;
        };
        if let Some(name) = t.hooks.get(t.next).cloned() {
            t.next += 1;
            let d = self.cfg.budget.thaw_hook;
            let effect = self.hook_effect(&name, "thaw", d);
            self.effect(
                effect,
                self.now
                    .saturating_add(d)
                    .saturating_add(self.cfg.budget.grace),
                "thaw hook",
            );
            return;
        }
        let Some(Chain::Thaw(t)) = self.chain.take() else {
            return;
        };
        if let Some(req) = t.req {
            self.answer(req, !t.resume_failed);
        }
        let ended_well = t.why == ThawWhy::Requested && !t.resume_failed;
        if ended_well
            && self.cfg.snapshot_keep > 0
            && !t.prune.is_empty()
            && !self.shutting_down
            && self.queued.is_none()
            && self.frozen_since.is_none()
        {
            self.chain = Some(Chain::Prune(Prune {
                pools: t.prune,
                next_pool: 0,
                listing: false,
                destroy: Vec::new(),
                next: 0,
            }));
            self.next_prune_step();
        }
    }

    /// Issues the prune's next effect: a destroy of the current pool's list, else the
    /// next pool's listing; ends the prune when both are done.
    fn next_prune_step(&mut self) {
        let Some(Chain::Prune(p)) = self.chain.as_mut() else {
            return;
        };
        let grace = self.cfg.budget.grace;
        if let Some(snapshot) = p.destroy.get(p.next).cloned() {
            p.next += 1;
            p.listing = false;
            self.effect(
                VssEffect::ZfsDestroy {
                    snapshot,
                    deadline: VSS_SNAPSHOT_DESTROY,
                },
                self.now
                    .saturating_add(VSS_SNAPSHOT_DESTROY)
                    .saturating_add(grace),
                "zfs destroy",
            );
            return;
        }
        if let Some(pool) = p.pools.get(p.next_pool).cloned() {
            p.next_pool += 1;
            p.listing = true;
            p.destroy.clear();
            p.next = 0;
            self.effect(
                VssEffect::ListSnapshots {
                    pool,
                    deadline: VSS_SNAPSHOT_LIST,
                },
                self.now
                    .saturating_add(VSS_SNAPSHOT_LIST)
                    .saturating_add(grace),
                "list snapshots",
            );
            return;
        }
        self.chain = None;
    }

    fn advance_prune(&mut self, result: Option<VssResult>) {
        let Some(Chain::Prune(p)) = self.chain.as_mut() else {
            return;
        };
        let step = if p.listing {
            "list snapshots"
        } else {
            "zfs destroy"
        };
        match (p.listing, result) {
            (true, Some(VssResult::Snapshots(names))) => {
                let pool = &p.pools[p.next_pool - 1];
                p.destroy = prune::select(
                    pool,
                    &self.cfg.snapshot_prefix,
                    &names,
                    self.cfg.snapshot_keep,
                );
            }
            (false, Some(VssResult::Exit(status))) if status.success() => {
                let snapshot = p.destroy[p.next - 1].clone();
                self.event(VssEvent::SnapshotDestroyed { snapshot });
            }
            (_, None) => {
                // Something is slow: pile nothing more on it now; the next THAW retries.
                self.event(VssEvent::Abandoned { step });
                self.chain = None;
                return;
            }
            (listing, Some(other)) => {
                if listing {
                    // Nothing known of this pool: go on with the next.
                    p.destroy.clear();
                }
                self.event(VssEvent::StepFailed {
                    step,
                    detail: crate::vss::describe::result_text(Some(&other)),
                });
            }
        }
        self.next_prune_step();
    }

    /// Drops a running prune at once (a result still to come for it is ignored); true
    /// if there was one.
    fn stop_prune(&mut self) -> bool {
        if !self.pruning() {
            return false;
        }
        self.chain = None;
        self.in_flight = None;
        true
    }

    fn advance_thaw(&mut self, result: Option<VssResult>) {
        let Some(Chain::Thaw(t)) = self.chain.as_mut() else {
            return;
        };
        match (t.stage, result) {
            (ThawStage::ListHooks, result) => {
                if let Some(VssResult::Hooks(entries)) = result {
                    let (mut run, _) = hooks::select(&entries);
                    run.reverse();
                    t.hooks = run;
                }
                t.stage = ThawStage::Hooks;
                self.next_thaw_hook();
            }
            (ThawStage::Resume, Some(VssResult::Done)) => {
                let mounts = std::mem::take(&mut self.suspended);
                self.release_held();
                self.event(VssEvent::Resumed { mounts });
                self.after_resume();
            }
            (ThawStage::Resume, other) => {
                // The freezer could not close a descriptor, or does not answer: kill it;
                // its exit resumes everything.
                if let Some(VssResult::Failed(e)) = other {
                    self.held.push(VssEvent::ResumeFailed(e));
                }
                t.stage = ThawStage::KillFreezer;
                self.effect(
                    VssEffect::KillFreezer,
                    self.now.saturating_add(self.cfg.budget.rollback),
                    "kill freezer",
                );
            }
            (ThawStage::KillFreezer, _) => {
                // Whatever it says, the freezer is going; `FreezerExited` confirms. Until
                // then we cannot claim the file systems are resumed.
                t.resume_failed = true;
                self.on_freezer_gone();
            }
            (ThawStage::Hooks, Some(VssResult::Exit(status))) => {
                if !status.success() {
                    let name = t.hooks[t.next - 1].clone();
                    self.event(VssEvent::HookFailed {
                        name,
                        arg: "thaw",
                        status,
                    });
                }
                self.next_thaw_hook();
            }
            (ThawStage::Hooks, other) => {
                let name = t.hooks[t.next - 1].clone();
                let status = match other {
                    Some(VssResult::Failed(e)) => ExitStatus::NotStarted(e),
                    _ => ExitStatus::TimedOut,
                };
                self.event(VssEvent::HookFailed {
                    name,
                    arg: "thaw",
                    status,
                });
                self.next_thaw_hook();
            }
        }
    }

    /// The freezer is dead: the kernel resumed what it held.
    fn on_freezer_gone(&mut self) {
        let held = std::mem::take(&mut self.suspended);
        self.release_held();
        if !held.is_empty() {
            self.event(VssEvent::FreezerExited { held });
        }
        if let Some(Chain::Thaw(t)) = self.chain.as_mut() {
            if matches!(t.stage, ThawStage::Resume | ThawStage::KillFreezer) {
                self.in_flight = None;
                self.after_resume();
            }
        }
    }

    fn on_answer_lost(&mut self, bytes: &[u8], error: IoError) {
        let msgid = match self.cfg.layout {
            Layout::FreeBsd => crate::vss::wire::OptMsg::decode(bytes).map_or(0, |m| m.msgid),
            // Linux's answers carry no name: the driver reports a failed write before
            // the machine runs again, so it is the last one written.
            Layout::Linux => self.last_answered,
        };
        self.event(VssEvent::AnswerLost { msgid, error });
        if self.cfg.layout.may_be_freeze_ok(bytes) {
            self.undo_unseen_freeze();
        }
    }

    /// An OK to FREEZE never reached the kernel: the host will fail the FREEZE and may
    /// never send its THAW, so thaw now (or as soon as the running chain ends).
    fn undo_unseen_freeze(&mut self) {
        if self.frozen_since.is_none() {
            return;
        }
        if self.chain.is_none() {
            self.begin_thaw(ThawWhy::AnswerLost, None);
        } else {
            // Thaw as soon as the running chain ends.
            self.watchdog_at = Some(self.now);
        }
    }

    fn on_freezer_exit(&mut self) {
        let had = !self.suspended.is_empty();
        match self.chain.as_ref() {
            Some(Chain::Thaw(_)) => self.on_freezer_gone(),
            Some(Chain::Freeze(_)) => {
                // Mid-FREEZE: whatever it suspended is resumed; the FREEZE fails.
                self.on_freezer_gone();
                self.in_flight = None;
                self.fail_freeze();
            }
            Some(Chain::Refreeze(_)) => {
                let Some(Chain::Refreeze(req)) = self.chain.take() else {
                    return;
                };
                self.on_freezer_gone();
                self.in_flight = None;
                self.begin_thaw(ThawWhy::FreezeFailed, Some(req));
            }
            Some(Chain::Check(_)) => {
                // A CHECK is running: let it finish, then thaw.
                self.on_freezer_gone();
                self.thaw_after_chain = had || self.frozen_since.is_some();
            }
            // Nothing is frozen during a prune (it starts after a complete thaw): a new
            // freezer comes with the next FREEZE, and the prune goes on.
            Some(Chain::Prune(_)) => self.on_freezer_gone(),
            None => {
                self.on_freezer_gone();
                if had || self.frozen_since.is_some() {
                    // Frozen, and the freezer died: the freeze is over; thaw hooks run.
                    self.begin_thaw(ThawWhy::FreezerExited, None);
                }
            }
        }
    }

    fn on_timer(&mut self) {
        // A THAW whose thaw hooks run long is answered by its deadline; the hooks go on.
        let now = self.now;
        if let Some(Chain::Thaw(th)) = self.chain.as_mut() {
            if th.stage == ThawStage::Hooks
                && th.why == ThawWhy::Requested
                && th.req.is_some_and(|r| now >= r.reply_by)
            {
                let ok = !th.resume_failed;
                if let Some(req) = th.req.take() {
                    self.answer(req, ok);
                }
            }
        }
        if let Some((_, give_up, _)) = self.in_flight {
            if self.now >= give_up {
                self.in_flight = None;
                self.advance(None);
            }
        }
        if let Some(q) = self.queued {
            if self.now >= q.reply_by {
                self.queued = None;
                self.answer(q, false);
            }
        }
        if self.chain.is_none() {
            if let (Some(at), Some(since)) = (self.watchdog_at, self.frozen_since) {
                if self.now >= at {
                    let capped = self.cap_thaw_at().is_some_and(|c| self.now >= c);
                    self.event(match (capped, self.frozen_from) {
                        (true, Some(from)) => VssEvent::FreezeCapReached {
                            frozen_for: self.now.saturating_since(from),
                        },
                        _ => VssEvent::WatchdogThaw {
                            frozen_for: self.now.saturating_since(since),
                        },
                    });
                    self.begin_thaw(ThawWhy::Watchdog, None);
                }
            }
        }
        if self.exit_by.is_some_and(|t| self.now >= t) {
            self.give_up();
        }
    }

    /// The exit limit passed during a shutdown: say what is left undone and exit. The
    /// driver's closing of the freezer resumes whatever is still suspended.
    fn give_up(&mut self) {
        let mut unthawed = Vec::new();
        if let Some(Chain::Thaw(t)) = self.chain.take() {
            // The hook running now never finished its thaw either.
            let from = if t.stage == ThawStage::Hooks {
                t.next.saturating_sub(1)
            } else {
                t.next
            };
            unthawed.extend(t.hooks.into_iter().skip(from));
        }
        unthawed.extend(self.hooks_started.drain(..).rev());
        let suspended = std::mem::take(&mut self.suspended);
        self.in_flight = None;
        self.queued = None;
        self.frozen_since = None;
        self.frozen_from = None;
        self.watchdog_at = None;
        for e in std::mem::take(&mut self.held) {
            self.outputs.push_back(VssOutput::Event(e));
        }
        self.outputs
            .push_back(VssOutput::Event(VssEvent::ExitLimit {
                unthawed,
                suspended,
            }));
        self.exited = true;
        self.outputs.push_back(VssOutput::Exit);
    }
}
