//! The application side of VSS: `/dev/hv_appvss_dev` (docs/protocol/vss.md §3.8).
//!
//! The kernel gives the application CHECK and FREEZE before the file-system daemon and
//! THAW after it; it never tells the application that the daemon's FREEZE failed or that
//! the chain timed out, and a failed daemon THAW never reaches it. So this machine thaws
//! by itself `auto_thaw` after its FREEZE if no THAW came. The work is a hook directory
//! (freeze in name order, thaw in reverse) or one command run with `freeze`/`thaw`.
//! After `Shutdown` or `DeviceFailed` it thaws what it froze, for at most
//! [`VSS_EXIT_LIMIT`], then exits.

use std::collections::VecDeque;
use std::time::Duration;

use crate::kvp::effect::EffectId;
use crate::limits::{
    VSS_APP_AUTO_THAW, VSS_APP_DAEMON_RESERVE, VSS_APP_FREEZE_BUDGET, VSS_EXIT_LIMIT, VSS_LISTING,
    VSS_MIN_STEP,
};
use crate::time::Instant;
use crate::vss::effect::{ExitStatus, VssEffect, VssInput, VssResult};
use crate::vss::hooks;
use crate::vss::machine::{Budget, VssEvent, VssOutput};
use crate::vss::rules;
use crate::vss::wire::{decode_read, Layout, OptMsg, VssOp, VssRead};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppWork {
    /// Executables in this directory (same rules as the daemon's hooks).
    HookDir(String),
    /// This command, with `freeze`, `thaw` (or `check`) appended.
    Command(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppConfig {
    pub work: AppWork,
    pub budget: Budget,
    /// Thaw by ourselves this long after a FREEZE with no THAW: later than the daemon's
    /// watchdog (30 s) and its freezer's backstop, so the file systems are resumed
    /// before the application, as the kernel orders a THAW.
    pub auto_thaw: Duration,
    /// All of the application's freeze work together.
    pub freeze_budget: Duration,
    /// Left to the file-system daemon, which gets the FREEZE after us within the same
    /// 15 s: our freeze work stops this long before the answer is due.
    pub daemon_reserve: Duration,
}

impl Default for AppConfig {
    fn default() -> AppConfig {
        AppConfig {
            work: AppWork::Command(Vec::new()),
            budget: Budget::default(),
            auto_thaw: VSS_APP_AUTO_THAW,
            freeze_budget: VSS_APP_FREEZE_BUDGET,
            daemon_reserve: VSS_APP_DAEMON_RESERVE,
        }
    }
}

/// One program of a batch, without its argument.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Program {
    /// The configured command's argv.
    Command(Vec<String>),
    /// A hook of the hook directory, by name.
    Hook(String),
}

#[derive(Clone, Copy, Debug)]
struct Req {
    op: VssOp,
    msg: OptMsg,
    reply_by: Instant,
}

/// One FREEZE or THAW's programs (the command, or the hooks in order), run one at a
/// time until done, failed, or out of time.
#[derive(Debug)]
struct Batch {
    /// Answered at the end (`None`: an auto-thaw or shutdown).
    req: Option<Req>,
    arg: &'static str,
    /// Programs still to run.
    todo: VecDeque<Program>,
    /// Waiting for the hook list first.
    listing: bool,
    failed: bool,
    /// The freeze work must end by then.
    until: Option<Instant>,
    /// The program running now (for its failure event).
    running: Option<Program>,
}

pub struct AppMachine {
    cfg: AppConfig,
    now: Instant,
    batch: Option<Batch>,
    in_flight: Option<(EffectId, Instant)>,
    /// Programs whose `freeze` was started: each gets `thaw`, in reverse.
    started: Vec<Program>,
    auto_thaw_at: Option<Instant>,
    /// A FREEZE or THAW that came while a batch (an auto-thaw, or the thaw after a failed
    /// FREEZE) was still running: it starts when the batch ends, or fails at its deadline.
    queued: Option<Req>,
    shutting_down: bool,
    /// When a shutdown stops waiting for the thaw and exits anyway.
    exit_by: Option<Instant>,
    exited: bool,
    outputs: VecDeque<VssOutput>,
    next_effect: u64,
}

impl AppMachine {
    pub fn new(cfg: AppConfig, now: Instant) -> AppMachine {
        if let Err(e) = rules::check_app(&cfg) {
            panic!("AppMachine configuration breaks a rule: {e}");
        }
        AppMachine {
            cfg,
            now,
            batch: None,
            in_flight: None,
            started: Vec::new(),
            auto_thaw_at: None,
            queued: None,
            shutting_down: false,
            exit_by: None,
            exited: false,
            outputs: VecDeque::new(),
            next_effect: 0,
        }
    }

    /// A program as the events name it: the command, or the hook's path.
    fn shown(&self, p: &Program) -> String {
        match (p, &self.cfg.work) {
            (Program::Command(argv), _) => argv.first().cloned().unwrap_or_default(),
            (Program::Hook(name), AppWork::HookDir(dir)) => {
                format!("{}/{name}", dir.trim_end_matches('/'))
            }
            (Program::Hook(name), AppWork::Command(_)) => name.clone(),
        }
    }

    pub fn poll_output(&mut self) -> Option<VssOutput> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let work = match (self.in_flight, self.batch.is_none()) {
            (Some((_, t)), _) => Some(t),
            (None, true) => self.auto_thaw_at,
            (None, false) => None,
        };
        work.into_iter()
            .chain(self.queued.map(|q| q.reply_by))
            .chain(self.thaw_reply_by())
            .chain(self.exit_by.filter(|_| !self.exited))
            .min()
    }

    /// When a THAW still being worked on must be answered.
    fn thaw_reply_by(&self) -> Option<Instant> {
        self.batch
            .as_ref()
            .filter(|j| j.arg == "thaw")
            .and_then(|j| j.req)
            .map(|r| r.reply_by)
    }

    /// Whether the application is frozen (its FREEZE succeeded, no thaw yet).
    pub fn frozen(&self) -> bool {
        self.auto_thaw_at.is_some()
    }

    pub fn is_idle(&self) -> bool {
        self.batch.is_none() && self.queued.is_none()
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
            VssInput::EffectDone { id, result } if self.in_flight.map(|f| f.0) == Some(id) => {
                self.in_flight = None;
                self.advance(Some(result));
            }
            // The application device exists only on FreeBSD, whose devices are never
            // reopened.
            VssInput::EffectDone { .. } | VssInput::FreezerExited | VssInput::DeviceReopened => {}
            VssInput::Timer => {
                // A THAW whose thaw work runs long (the daemon may have used most of the
                // 15 s before the kernel passed it on) is answered by its deadline; the
                // work goes on.
                if self.thaw_reply_by().is_some_and(|t| now >= t) {
                    if let Some(r) = self.batch.as_mut().and_then(|j| j.req.take()) {
                        self.answer(r, true);
                    }
                }
                if self.in_flight.is_some_and(|f| now >= f.1) {
                    self.in_flight = None;
                    self.advance(None);
                }
                if let Some(q) = self.queued.filter(|q| now >= q.reply_by) {
                    self.queued = None;
                    self.answer(q, false);
                }
                if self.batch.is_none() && self.auto_thaw_at.is_some_and(|t| now >= t) {
                    self.outputs
                        .push_back(VssOutput::Event(VssEvent::WatchdogThaw {
                            frozen_for: self.cfg.auto_thaw,
                        }));
                    self.start_thaw(None);
                }
                if self.exit_by.is_some_and(|t| now >= t) {
                    self.give_up();
                    return;
                }
            }
            VssInput::Shutdown => self.begin_shutdown(),
            VssInput::DeviceFailed(e) => {
                self.outputs
                    .push_back(VssOutput::Event(VssEvent::DeviceFailed(e)));
                self.begin_shutdown();
            }
            VssInput::AnswerLost { bytes, error } => {
                let msgid = OptMsg::decode(&bytes).map_or(0, |m| m.msgid);
                self.outputs
                    .push_back(VssOutput::Event(VssEvent::AnswerLost { msgid, error }));
                // Our OK to FREEZE never reached the kernel, which will never send the
                // THAW for it: thaw now rather than at the auto-thaw.
                if Layout::FreeBsd.may_be_freeze_ok(&bytes) && self.frozen() && self.batch.is_none()
                {
                    self.start_thaw(None);
                }
            }
        }
        self.start_queued();
        if self.batch.is_none() && self.shutting_down {
            if !self.started.is_empty() {
                self.start_thaw(None);
            } else {
                // Nothing of ours is frozen (no freeze program ran, or all were thawed):
                // a FREEZE without work must not leave `frozen()` claiming otherwise.
                self.auto_thaw_at = None;
                self.exited = true;
                self.outputs.push_back(VssOutput::Exit);
            }
        }
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        self.exit_by
            .get_or_insert(self.now.saturating_add(VSS_EXIT_LIMIT));
    }

    /// The exit limit passed during a shutdown: say which programs never got their
    /// `thaw`, and exit.
    fn give_up(&mut self) {
        let mut left: Vec<Program> = Vec::new();
        if let Some(b) = self.batch.take() {
            if b.arg == "thaw" {
                // The one running now has not finished its thaw either.
                left.extend(b.running);
                left.extend(b.todo);
            }
        }
        left.extend(self.started.drain(..).rev());
        let unthawed = left.iter().map(|p| self.shown(p)).collect();
        self.in_flight = None;
        self.queued = None;
        self.auto_thaw_at = None;
        self.outputs
            .push_back(VssOutput::Event(VssEvent::ExitLimit {
                unthawed,
                suspended: Vec::new(),
            }));
        self.exited = true;
        self.outputs.push_back(VssOutput::Exit);
    }

    fn answer(&mut self, req: Req, ok: bool) {
        self.outputs
            .push_back(VssOutput::DeviceWrite(req.msg.reply(ok).encode().to_vec()));
        self.outputs.push_back(VssOutput::Event(VssEvent::Answered {
            op: req.op,
            msgid: req.msg.msgid,
            ok,
        }));
    }

    fn on_read(&mut self, bytes: &[u8], realtime_ns: u64) {
        let (op, msg) = match decode_read(bytes) {
            VssRead::Nothing => return,
            VssRead::Invalid(m) => {
                self.outputs
                    .push_back(VssOutput::DeviceWrite(m.reply(false)));
                self.outputs
                    .push_back(VssOutput::Event(VssEvent::Invalid(m)));
                return;
            }
            VssRead::Request { op, msgid, .. } => (op, OptMsg::request(op, msgid)),
        };
        let b = &self.cfg.budget;
        let used = b.used(msg.msgid, realtime_ns);
        let req = Req {
            op,
            msg,
            reply_by: self
                .now
                .saturating_add(b.kernel.saturating_sub(used).saturating_sub(b.margin)),
        };
        self.outputs.push_back(VssOutput::Event(VssEvent::Request {
            op,
            msgid: msg.msgid,
        }));
        if op == VssOp::Check {
            // Nothing to do for CHECK: the application is ready whenever we run.
            self.answer(req, true);
            return;
        }
        if self.batch.is_some() {
            if let Some(old) = self.queued.replace(req) {
                self.answer(old, false);
            }
            return;
        }
        self.start(req);
    }

    fn start(&mut self, req: Req) {
        match req.op {
            VssOp::Check => self.answer(req, true),
            VssOp::Freeze if self.frozen() => {
                self.auto_thaw_at = Some(self.now.saturating_add(self.cfg.auto_thaw));
                self.answer(req, true);
            }
            VssOp::Freeze => {
                let (todo, listing) = match &self.cfg.work {
                    AppWork::Command(c) if c.is_empty() => (VecDeque::new(), false),
                    AppWork::Command(c) => (VecDeque::from([Program::Command(c.clone())]), false),
                    AppWork::HookDir(_) => (VecDeque::new(), true),
                };
                self.batch = Some(Batch {
                    req: Some(req),
                    arg: "freeze",
                    todo,
                    listing,
                    failed: false,
                    until: None,
                    running: None,
                });
                self.next();
            }
            VssOp::Thaw => self.start_thaw(Some(req)),
        }
    }

    /// Runs a request that waited for the previous batch.
    fn start_queued(&mut self) {
        if self.batch.is_none() {
            if let Some(q) = self.queued.take() {
                self.start(q);
            }
        }
    }

    fn start_thaw(&mut self, req: Option<Req>) {
        self.auto_thaw_at = None;
        let todo: VecDeque<Program> = std::mem::take(&mut self.started)
            .into_iter()
            .rev()
            .collect();
        self.batch = Some(Batch {
            req,
            arg: "thaw",
            todo,
            listing: false,
            failed: false,
            until: None,
            running: None,
        });
        self.next();
    }

    fn next(&mut self) {
        let Some(batch) = self.batch.as_mut() else {
            return;
        };
        let b = &self.cfg.budget;
        if batch.listing {
            self.next_effect += 1;
            self.in_flight = Some((
                EffectId(self.next_effect),
                self.now.saturating_add(VSS_LISTING),
            ));
            self.outputs.push_back(VssOutput::Effect {
                id: EffectId(self.next_effect),
                effect: VssEffect::ListHooks,
            });
            return;
        }
        if batch.arg == "freeze" && batch.until.is_none() {
            let by_budget = self.now.saturating_add(self.cfg.freeze_budget);
            let by_reply = batch.req.map_or(by_budget, |r| {
                Instant(
                    r.reply_by
                        .as_nanos()
                        .saturating_sub(self.cfg.daemon_reserve.as_nanos() as u64),
                )
            });
            batch.until = Some(by_budget.min(by_reply));
        }
        let left = batch
            .until
            .map_or(b.thaw_hook, |u| u.saturating_since(self.now));
        if batch.failed || (batch.arg == "freeze" && left < VSS_MIN_STEP) {
            // Failed, or out of time: thaw what was started, answer failure.
            let req = batch.req.take();
            self.batch = None;
            if let Some(r) = req {
                self.answer(r, false);
            }
            self.start_thaw(None);
            return;
        }
        match batch.todo.pop_front() {
            Some(program) => {
                if batch.arg == "freeze" {
                    self.started.push(program.clone());
                }
                let d = if batch.arg == "freeze" {
                    left
                } else {
                    b.thaw_hook
                };
                let arg = batch.arg.to_string();
                let effect = match (&program, &self.cfg.work) {
                    (Program::Command(argv), _) => {
                        let mut argv = argv.clone();
                        argv.push(arg);
                        VssEffect::Run { argv, deadline: d }
                    }
                    (Program::Hook(name), work) => VssEffect::RunHook {
                        dir: match work {
                            AppWork::HookDir(dir) => dir.clone(),
                            AppWork::Command(_) => String::new(),
                        },
                        name: name.clone(),
                        arg,
                        deadline: d,
                    },
                };
                batch.running = Some(program);
                self.next_effect += 1;
                let id = EffectId(self.next_effect);
                self.in_flight = Some((id, self.now.saturating_add(d).saturating_add(b.grace)));
                self.outputs.push_back(VssOutput::Effect { id, effect });
            }
            None => {
                let batch = self.batch.take().expect("checked above");
                if batch.arg == "freeze" {
                    self.auto_thaw_at = Some(self.now.saturating_add(self.cfg.auto_thaw));
                }
                if let Some(r) = batch.req {
                    self.answer(r, true);
                }
            }
        }
    }

    fn advance(&mut self, result: Option<VssResult>) {
        let Some(batch) = self.batch.as_mut() else {
            return;
        };
        if batch.listing {
            batch.listing = false;
            match result {
                Some(VssResult::Hooks(entries)) => {
                    let (run, skipped) = hooks::select(&entries);
                    batch.todo = run.into_iter().map(Program::Hook).collect();
                    for (name, why) in skipped {
                        self.outputs
                            .push_back(VssOutput::Event(VssEvent::HookSkipped { name, why }));
                    }
                }
                other => {
                    batch.failed = true;
                    self.outputs
                        .push_back(VssOutput::Event(VssEvent::StepFailed {
                            step: "list hooks",
                            detail: crate::vss::describe::result_text(other.as_ref()),
                        }));
                }
            }
            self.next();
            return;
        }
        let status = match result {
            Some(VssResult::Exit(s)) => s,
            Some(VssResult::Failed(e)) => ExitStatus::NotStarted(e),
            _ => ExitStatus::TimedOut,
        };
        if !status.success() {
            let running = batch.running.clone();
            let arg = batch.arg;
            if arg == "freeze" {
                batch.failed = true;
            }
            let name = running.map(|p| self.shown(&p)).unwrap_or_default();
            self.outputs
                .push_back(VssOutput::Event(VssEvent::HookFailed { name, arg, status }));
        }
        self.next();
    }
}
