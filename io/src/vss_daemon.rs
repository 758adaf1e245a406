//! The VSS daemons' event loop: `hv_vss_daemon` (file systems) and `hv_vss_app`
//! (applications) share it. One mio `Poll` over the device, the signal pipe, the waker
//! of the program thread and, for the daemon, the freezer's replies; the machine's next
//! deadline is the timeout. The loop decides nothing: it executes effects literally.
//!
//! Programs (hooks, `zpool`, `zfs`) and directory listings run on one worker thread, one
//! at a time; the daemon process may have threads. The suspensions themselves live in
//! the freezer child ([`crate::freezer`]), which must be single-threaded; it is never
//! waited for on this loop (a reaper thread collects it). The prune after a THAW (`zfs
//! list`, `zfs destroy`) runs on that worker too: a request read meanwhile waits behind
//! the program at most its deadline and the output grace (`VSS_SNAPSHOT_DESTROY`,
//! `VSS_SNAPSHOT_LIST`, which `core/src/limits.rs` keeps inside the kernel's 15 s).
//!
//! After SIGTERM, a failed device, or even a failed poll, the loop keeps running the
//! machine without the device until it says `Exit` (it thaws what it froze, thaw hooks
//! included, within the core's `VSS_EXIT_LIMIT`): applications quiesced by freeze hooks
//! are thawed, and the lines held while frozen are written.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use hvguest_core::kvp::effect::{EffectId, IoError};
use hvguest_core::limits::VSS_ROLLBACK;
use hvguest_core::vss::app::AppMachine;
use hvguest_core::vss::effect::{ExitStatus, VssEffect, VssInput, VssResult};
use hvguest_core::vss::freezer::Command;
use hvguest_core::vss::machine::{VssEvent, VssMachine, VssOutput};
use hvguest_core::Instant;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::actions::ActionLog;
use crate::clock;
use crate::device::{DeviceError, Reopen};
use crate::freezer::{FreezerArgs, FreezerHandle, Reaped};
use crate::logging::{Level, Logger};
use crate::mounts;
use crate::programs;
use crate::signals::SignalPipe;
use crate::vss_device::{VssDevice, VssRead};

const DEVICE: Token = Token(0);
const SIGNAL: Token = Token(1);
const WAKE: Token = Token(2);
const FREEZER: Token = Token(3);
/// Without a working poll, how long the loop sleeps between looks at its sources.
const DEGRADED_SLICE: Duration = Duration::from_millis(10);

/// Where things are, and whether we emulate.
#[derive(Clone, Debug)]
pub struct VssPaths {
    pub device: PathBuf,
    pub hook_dir: Option<PathBuf>,
    pub zpool: PathBuf,
    pub zfs: PathBuf,
    /// PATH for programs we run.
    pub path: String,
    /// Emulation: the mount table comes from this file...
    pub emulate_mounts: Option<PathBuf>,
    /// ...and actions are written here instead of done.
    pub emulate_actions: Option<PathBuf>,
    /// Linux: the record of the file systems frozen now, on tmpfs
    /// (docs/protocol/linux.md §2.5); thawed by whoever finds it with the freezer gone.
    pub frozen_record: Option<PathBuf>,
    /// Test mode: the mount table is only what lies below this directory, and the
    /// freezer refuses anything else.
    pub only_under: Option<PathBuf>,
    /// Linux (`Layout::reopens_after_error`): a failed device is closed and opened
    /// again, and the machine registers anew; elsewhere a failed device ends the daemon.
    pub reopens: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VssDaemonError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("event loop: {0}")]
    Poll(std::io::Error),
    #[error("signals: {0}")]
    Signals(nix::Error),
    #[error("device read failed: {0}")]
    DeviceRead(std::io::Error),
    #[error("the device was closed by the other side")]
    DeviceClosed,
    #[error("action log {path}: {source}")]
    Actions {
        path: String,
        source: std::io::Error,
    },
}

/// The two machines behind one face.
pub trait VssLike {
    fn handle(&mut self, now: Instant, input: VssInput);
    fn poll_output(&mut self) -> Option<VssOutput>;
    fn poll_timeout(&self) -> Option<Instant>;
}

impl VssLike for VssMachine {
    fn handle(&mut self, now: Instant, input: VssInput) {
        VssMachine::handle(self, now, input)
    }
    fn poll_output(&mut self) -> Option<VssOutput> {
        VssMachine::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        VssMachine::poll_timeout(self)
    }
}

impl VssLike for AppMachine {
    fn handle(&mut self, now: Instant, input: VssInput) {
        AppMachine::handle(self, now, input)
    }
    fn poll_output(&mut self) -> Option<VssOutput> {
        AppMachine::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        AppMachine::poll_timeout(self)
    }
}

/// The real-time clock, for the kernel's msgid arithmetic.
fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An effect for the program thread.
type Job = (EffectId, VssEffect);

/// The program thread's result for one effect, with what is worth a log line.
struct Completion {
    id: EffectId,
    result: VssResult,
    warnings: Vec<String>,
}

/// Runs the effects that are programs or listings, in order, on one thread.
fn spawn_worker(
    paths: VssPaths,
    mut actions: Option<ActionLog>,
    waker: Arc<Waker>,
) -> std::io::Result<(Sender<Job>, Receiver<Completion>)> {
    let (tx, rx) = channel::<(EffectId, VssEffect)>();
    let (done_tx, done_rx) = channel();
    std::thread::Builder::new()
        .name("vss-programs".into())
        .spawn(move || {
            // In emulation the action line is the action: one that cannot be written did
            // not happen, and the effect fails with the log's error.
            let mut record = |action: &str, target: &str, result: &str| match actions.as_mut() {
                Some(a) => a.record(action, target, result).map_err(|e| io_error(&e)),
                None => Ok(()),
            };
            let emulating = paths.emulate_mounts.is_some();
            for (id, effect) in rx {
                let mut warnings = Vec::new();
                let result = match &effect {
                    VssEffect::ListMounts => match &paths.emulate_mounts {
                        Some(f) => mounts::emulated(f),
                        None => mounts::system(),
                    }
                    .map(|table| mounts::only_under(table, paths.only_under.as_deref()))
                    .map(VssResult::Mounts)
                    .unwrap_or(VssResult::Failed(IoError::EIO)),
                    VssEffect::ListHooks => match &paths.hook_dir {
                        Some(d) => match programs::list_dir_entries(d) {
                            Ok(listing) => {
                                warnings.extend(listing.notes);
                                VssResult::Hooks(listing.entries)
                            }
                            Err(e) => {
                                warnings.push(format!(
                                    "hook directory {}: {e}; no hook runs until every \
                                     directory from / down to it is owned by root and not \
                                     writable by group or others",
                                    d.display()
                                ));
                                VssResult::Failed(e.errno())
                            }
                        },
                        None => VssResult::Hooks(Vec::new()),
                    },
                    VssEffect::RunHook {
                        dir,
                        name,
                        arg,
                        deadline,
                    } => {
                        let dir = std::path::Path::new(dir);
                        match programs::run_hook(dir, name, arg, *deadline, &paths.path) {
                            Ok(ran) => {
                                let target = dir.join(name).display().to_string();
                                match record("hook", &target, arg) {
                                    Ok(()) => VssResult::Exit(ran.status),
                                    Err(e) => VssResult::Failed(e),
                                }
                            }
                            Err(e) => {
                                warnings.push(format!("{e}; it is not run"));
                                VssResult::Exit(ExitStatus::NotStarted(e.errno()))
                            }
                        }
                    }
                    VssEffect::Run { argv, deadline } => {
                        let ran = programs::run(argv, *deadline, &paths.path);
                        let target = argv.first().cloned().unwrap_or_default();
                        let arg = argv.last().cloned().unwrap_or_default();
                        match record("hook", &target, &arg) {
                            Ok(()) => VssResult::Exit(ran.status),
                            Err(e) => VssResult::Failed(e),
                        }
                    }
                    VssEffect::ZpoolSync { pools, deadline } => {
                        if emulating {
                            match pools.iter().try_for_each(|p| record("zpool-sync", p, "ok")) {
                                Ok(()) => VssResult::Exit(ExitStatus::Code(0)),
                                Err(e) => VssResult::Failed(e),
                            }
                        } else {
                            let mut argv = vec![paths.zpool.display().to_string(), "sync".into()];
                            argv.extend(pools.iter().cloned());
                            VssResult::Exit(programs::run(&argv, *deadline, &paths.path).status)
                        }
                    }
                    VssEffect::ZfsSnapshot { snapshot, deadline } => {
                        if emulating {
                            match record("snapshot", snapshot, "ok") {
                                Ok(()) => VssResult::Exit(ExitStatus::Code(0)),
                                Err(e) => VssResult::Failed(e),
                            }
                        } else {
                            let argv = vec![
                                paths.zfs.display().to_string(),
                                "snapshot".into(),
                                "-r".into(),
                                snapshot.clone(),
                            ];
                            VssResult::Exit(programs::run(&argv, *deadline, &paths.path).status)
                        }
                    }
                    VssEffect::ListSnapshots { pool, deadline } => {
                        if emulating {
                            // The emulated pool holds what the action log took and did
                            // not destroy.
                            match paths
                                .emulate_actions
                                .as_deref()
                                .map(std::fs::read_to_string)
                            {
                                Some(Ok(log)) => VssResult::Snapshots(
                                    crate::actions::emulated_snapshots(&log, pool),
                                ),
                                Some(Err(e)) => VssResult::Failed(io_error(&e)),
                                None => VssResult::Snapshots(Vec::new()),
                            }
                        } else {
                            let zfs = paths.zfs.display().to_string();
                            let ran = programs::list_snapshots(&zfs, pool, *deadline, &paths.path);
                            if ran.status.success() {
                                VssResult::Snapshots(programs::snapshot_names(&ran.stdout))
                            } else {
                                VssResult::Exit(ran.status)
                            }
                        }
                    }
                    VssEffect::ZfsDestroy { snapshot, deadline } => {
                        if emulating {
                            match record("snapshot-destroy", snapshot, "ok") {
                                Ok(()) => VssResult::Exit(ExitStatus::Code(0)),
                                Err(e) => VssResult::Failed(e),
                            }
                        } else {
                            let argv = vec![
                                paths.zfs.display().to_string(),
                                "destroy".into(),
                                "-r".into(),
                                snapshot.clone(),
                            ];
                            VssResult::Exit(programs::run(&argv, *deadline, &paths.path).status)
                        }
                    }
                    _ => VssResult::Failed(IoError::WRONG_RESULT),
                };
                let done = Completion {
                    id,
                    result,
                    warnings,
                };
                if done_tx.send(done).is_err() {
                    return;
                }
                // A failed wake means the poll is gone, and the loop with it.
                let _ = waker.wake();
            }
        })?;
    Ok((tx, done_rx))
}

/// The freezer as seen from the loop: the child and the freezer effect awaiting a reply.
struct Freezer {
    handle: Option<FreezerHandle>,
    waiting: Option<EffectId>,
    exe: PathBuf,
    args: FreezerArgs,
    /// Freezers sent away (stdin closed, or killed), until their reaper reports.
    reaping: Vec<std::sync::mpsc::Receiver<Reaped>>,
    waker: Arc<Waker>,
}

struct Loop<'a, M: VssLike> {
    machine: M,
    /// `None` while a failed device waits to be opened again.
    device: Option<VssDevice>,
    /// Linux: an answer could not be written; the device is closed and opened again.
    write_failed: bool,
    reopens: bool,
    log: &'a Logger,
    worker: Sender<Job>,
    freezer: Freezer,
    registry: Registry,
    /// Emulation's action log (the daemon's own lines: a killed freezer).
    actions: Option<ActionLog>,
    exit: bool,
    /// Inputs produced while executing outputs (the freezer died on a send, a kill).
    later: Vec<VssInput>,
}

impl<M: VssLike> Loop<'_, M> {
    fn step(&mut self, input: VssInput) {
        self.machine.handle(clock::now(), input);
        self.drain();
        self.step_later();
    }

    fn drain(&mut self) {
        while let Some(out) = self.machine.poll_output() {
            match out {
                VssOutput::DeviceWrite(m) => {
                    let written = match &self.device {
                        Some(d) => d.write(&m),
                        None => Err(std::io::Error::from_raw_os_error(nix::libc::ENODEV)),
                    };
                    if let Err(e) = written {
                        // Linux's kernel refuses a write it no longer expects (hibernation
                        // answered its own THAW): the device must be opened again.
                        self.write_failed |= self.reopens && self.device.is_some();
                        self.log
                            .warn(&format!("writing an answer to the device failed: {e}"));
                        // The core decides what a lost answer means.
                        self.later.push(VssInput::AnswerLost {
                            bytes: m.to_vec(),
                            error: io_error(&e),
                        });
                    }
                }
                VssOutput::Event(e) => self.log.log(event_level(&e), &e.to_string()),
                VssOutput::Exit => self.exit = true,
                VssOutput::Effect { id, effect } => self.effect(id, effect),
            }
        }
    }

    /// The freezer child is gone (killed, or its stdout closed): stop listening to it,
    /// hand it to a reaper, and tell the machine (a killed one is resumed as soon as the
    /// kernel lets it go; nothing more can be done for it).
    fn freezer_gone(&mut self, h: FreezerHandle, killed: bool) {
        if let Err(e) = self.registry.deregister(&mut SourceFd(&h.stdout_fd())) {
            // Its descriptor is closed below either way, which removes it from the poll.
            self.log.warn(&format!(
                "removing the freezer from the event loop failed: {e}; its descriptor is \
                 closed all the same"
            ));
        }
        let waker = Some(self.freezer.waker.clone());
        let reaping = if killed {
            h.kill(waker)
        } else {
            h.close(waker)
        };
        self.freezer.reaping.push(reaping);
        if let Some(id) = self.freezer.waiting.take() {
            self.later.push(VssInput::EffectDone {
                id,
                result: VssResult::Failed(IoError(nix::libc::EPIPE)),
            });
        }
        if !self.freezes_outlive_freezer() {
            self.later.push(VssInput::FreezerExited);
        }
        // Otherwise the machine hears of it from `reaped`, once the reaper has thawed
        // what the freezer left frozen: only then is everything resumed.
    }

    /// Linux, for real: a dead freezer's freezes stay until the reaper thaws them.
    fn freezes_outlive_freezer(&self) -> bool {
        self.freezer.args.record.is_some() && self.freezer.args.actions.is_none()
    }

    fn effect(&mut self, id: EffectId, effect: VssEffect) {
        if let VssEffect::KillFreezer = effect {
            self.freezer.waiting = None;
            self.later.push(VssInput::EffectDone {
                id,
                result: VssResult::Done,
            });
            match self.freezer.handle.take() {
                Some(h) => self.freezer_gone(h, true),
                None => self.later.push(VssInput::FreezerExited),
            }
            return;
        }
        let Some(command) = Command::for_effect(&effect) else {
            if self.worker.send((id, effect)).is_err() {
                // The program thread is gone (it panicked): nothing will run.
                self.later.push(VssInput::EffectDone {
                    id,
                    result: VssResult::Failed(IoError::EIO),
                });
            }
            return;
        };
        // Linux: a freezer sent away may still hold freezes its reaper has not thawed
        // yet, in the one record of what is frozen; a second freezer beside it could
        // overwrite that record, and the first one's exit would be taken for its own.
        // The FREEZE fails (and rolls back); the host may try again.
        if self.freezer.handle.is_none()
            && matches!(command, Command::Suspend { .. })
            && self.freezes_outlive_freezer()
            && !self.freezer.reaping.is_empty()
        {
            self.log.warn(
                "a freezer that was sent away has not exited yet, and what it froze is \
                 thawed only once it has: this FREEZE fails",
            );
            self.later.push(VssInput::EffectDone {
                id,
                result: VssResult::Failed(IoError(nix::libc::EBUSY)),
            });
            return;
        }
        // Only a Suspend starts a freezer: a ping or resume to none finds it gone.
        if self.freezer.handle.is_none() && matches!(command, Command::Suspend { .. }) {
            match FreezerHandle::spawn(&self.freezer.exe, &self.freezer.args) {
                Ok(h) => {
                    if let Err(e) = self.registry.register(
                        &mut SourceFd(&h.stdout_fd()),
                        FREEZER,
                        Interest::READABLE,
                    ) {
                        // Unheard replies would look like a hung freezer: give up on it.
                        self.log.warn(&format!(
                            "the freezer's replies cannot be listened to: {e}; killing it, \
                             and the step fails"
                        ));
                        let waker = Some(self.freezer.waker.clone());
                        self.freezer.reaping.push(h.kill(waker));
                        self.later.push(VssInput::EffectDone {
                            id,
                            result: VssResult::Failed(io_error(&e)),
                        });
                        return;
                    }
                    self.freezer.handle = Some(h);
                }
                Err(e) => {
                    self.later.push(VssInput::EffectDone {
                        id,
                        result: VssResult::Failed(io_error(&e)),
                    });
                    return;
                }
            }
        }
        let sent = match self.freezer.handle.as_mut() {
            Some(h) => h.send(&command),
            None => Err(std::io::Error::from_raw_os_error(nix::libc::EPIPE)),
        };
        match sent {
            Ok(()) => self.freezer.waiting = Some(id),
            Err(e) => self.later.push(VssInput::EffectDone {
                id,
                result: VssResult::Failed(io_error(&e)),
            }),
        }
    }

    fn freezer_readable(&mut self) {
        let Some(h) = self.freezer.handle.as_mut() else {
            return;
        };
        match h.replies() {
            Ok(results) => {
                for (result, said) in results {
                    if let Some(said) = said {
                        self.log.warn(&format!("freezer: {said}"));
                    }
                    // One reply per command; a reply nobody waits for (to an effect the
                    // machine gave up on, answered late) means nothing any more.
                    if let Some(id) = self.freezer.waiting.take() {
                        self.step(VssInput::EffectDone { id, result });
                    }
                }
            }
            Err(_) => {
                // EOF (or a broken pipe): the freezer is gone; whatever it held is resumed.
                if let Some(h) = self.freezer.handle.take() {
                    self.freezer_gone(h, false);
                }
                self.step_later();
            }
        }
    }

    /// Logs the freezers whose reapers reported, and writes the emulation's line for
    /// one we killed (one that exits on its own writes its own).
    fn reaped(&mut self) {
        let mut still = Vec::new();
        for rx in std::mem::take(&mut self.freezer.reaping) {
            match rx.try_recv() {
                Ok(r) => {
                    self.report_reaped(&r);
                    if self.freezes_outlive_freezer() {
                        self.later.push(VssInput::FreezerExited);
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => still.push(rx),
                // The reaper always sends before it ends.
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {}
            }
        }
        self.freezer.reaping = still;
        self.step_later();
    }

    fn report_reaped(&mut self, r: &Reaped) {
        for line in &r.guardian {
            self.log.warn(&format!("{line}."));
        }
        match &r.status {
            Ok(status) if r.killed || status.success() => {}
            Ok(status) => self
                .log
                .warn(&format!("the freezer (pid {}) ended with {status}", r.pid)),
            Err(e) => self.log.warn(&format!(
                "waiting for the freezer (pid {}) failed: {e}",
                r.pid
            )),
        }
        if let (true, Some(a)) = (r.killed, self.actions.as_mut()) {
            if let Err(e) = a.record("freezer-exit", &r.pid.to_string(), "killed") {
                self.log
                    .warn(&format!("writing the emulated action log failed: {e}"));
            }
        }
    }

    /// At exit: sends the freezer away and waits a moment (not forever: one stuck in the
    /// kernel must not keep us) for it and any other to be reaped; says which are not.
    fn finish_freezers(&mut self) {
        if let Some(h) = self.freezer.handle.take() {
            let rx = h.close(None);
            self.freezer.reaping.push(rx);
        }
        let until = std::time::Instant::now() + VSS_ROLLBACK;
        for rx in std::mem::take(&mut self.freezer.reaping) {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(r) => self.report_reaped(&r),
                Err(_) => self.log.warn(
                    "a freezer has not exited yet (stuck in the kernel?); the file systems \
                     it holds are resumed as soon as it does",
                ),
            }
        }
    }

    /// Steps the machine with every result the program thread has finished, logging
    /// what it noted.
    fn completions(&mut self, done: &Receiver<Completion>) {
        while let Ok(c) = done.try_recv() {
            for w in &c.warnings {
                self.log.warn(w);
            }
            self.step(VssInput::EffectDone {
                id: c.id,
                result: c.result,
            });
        }
    }

    /// Delivers the inputs that executing outputs produced.
    fn step_later(&mut self) {
        while !self.later.is_empty() {
            let inputs = std::mem::take(&mut self.later);
            for i in inputs {
                self.machine.handle(clock::now(), i);
                self.drain();
            }
        }
    }
}

/// An I/O error as the core sees it.
/// The level of a machine's event (its words are the core's, `core::vss::describe`):
/// what failed or was given up as a warning, a thaw forced by a limit too, the rest
/// (requests, answers, each step done) as information.
fn event_level(e: &VssEvent) -> Level {
    match e {
        VssEvent::ExitLimit { .. } | VssEvent::DeviceFailed(_) => Level::Error,
        VssEvent::Invalid(_)
        | VssEvent::Vetoed(_)
        | VssEvent::HookFailed { .. }
        | VssEvent::HookFailureTolerated { .. }
        | VssEvent::StepFailed { .. }
        | VssEvent::Abandoned { .. }
        | VssEvent::ResumeFailed(_)
        | VssEvent::WatchdogThaw { .. }
        | VssEvent::FreezeCapReached { .. }
        | VssEvent::FreezerExited { .. }
        | VssEvent::AnswerLost { .. }
        | VssEvent::DeviceReopened
        | VssEvent::AnswerDropped { .. } => Level::Warn,
        VssEvent::Request { .. }
        | VssEvent::Registered
        | VssEvent::Answered { .. }
        | VssEvent::HookSkipped { .. }
        | VssEvent::Suspended { .. }
        | VssEvent::Resumed { .. }
        | VssEvent::SnapshotTaken { .. }
        | VssEvent::SnapshotDestroyed { .. }
        | VssEvent::PruneInterrupted { .. }
        | VssEvent::AlreadyFrozen => Level::Info,
    }
}

fn io_error(e: &std::io::Error) -> IoError {
    IoError(e.raw_os_error().unwrap_or(IoError::EIO.0))
}

/// Takes the device out of the loop and closes it (Linux, before opening it again).
fn close_device<M: VssLike>(
    lp: &mut Loop<'_, M>,
    poll: &Poll,
    fd: std::os::fd::RawFd,
    log: &Logger,
) {
    if let Err(d) = poll.registry().deregister(&mut SourceFd(&fd)) {
        // It is closed just below, which removes it from the poll all the same.
        log.debug(&format!(
            "removing the device from the event loop failed: {d}"
        ));
    }
    lp.device = None;
}

/// Runs a VSS machine until SIGTERM (Ok) or a fatal device error.
pub fn run<M: VssLike>(machine: M, paths: &VssPaths, log: &Logger) -> Result<(), VssDaemonError> {
    let signals = SignalPipe::install().map_err(VssDaemonError::Signals)?;
    // Two appenders on one log: the loop's (a killed freezer) and the program thread's.
    let (actions, worker_actions) = match &paths.emulate_actions {
        Some(a) => {
            let failed = |source| VssDaemonError::Actions {
                path: a.display().to_string(),
                source,
            };
            let log = ActionLog::open(a).map_err(failed)?;
            let other = log.try_clone().map_err(failed)?;
            (Some(log), Some(other))
        }
        None => (None, None),
    };
    let device = VssDevice::open(&paths.device)?;
    // Only now, holding the device (one opener on Linux), thaw what a predecessor's
    // freezer left frozen: a second instance started by hand fails above and never
    // thaws the live daemon's freeze.
    if let Some(record) = paths.frozen_record.as_deref() {
        for line in crate::freezer::thaw_recorded(record) {
            log.warn(&format!("{line}."));
        }
    }
    let mut reopen: Option<Reopen> = None;
    // Failed reopens since a message was last read from the device.
    let mut failures_since_read: u32 = 0;
    let mut poll = Poll::new().map_err(VssDaemonError::Poll)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE).map_err(VssDaemonError::Poll)?);
    let (worker, done) =
        spawn_worker(paths.clone(), worker_actions, waker.clone()).map_err(VssDaemonError::Poll)?;
    let mut device_fd = device.raw_fd();
    poll.registry()
        .register(&mut SourceFd(&device_fd), DEVICE, Interest::READABLE)
        .map_err(VssDaemonError::Poll)?;
    poll.registry()
        .register(&mut SourceFd(&signals.raw_fd()), SIGNAL, Interest::READABLE)
        .map_err(VssDaemonError::Poll)?;
    let exe =
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/sbin/hv_vss_daemon"));
    log.info(&format!("starting; pid is {}", std::process::id()));
    let mut lp = Loop {
        machine,
        device: Some(device),
        write_failed: false,
        reopens: paths.reopens,
        log,
        worker,
        freezer: Freezer {
            handle: None,
            waiting: None,
            exe,
            args: FreezerArgs {
                actions: paths.emulate_actions.clone(),
                mounts: paths.emulate_mounts.clone(),
                record: paths.frozen_record.clone(),
                only_under: paths.only_under.clone(),
            },
            reaping: Vec::new(),
            waker,
        },
        registry: poll.registry().try_clone().map_err(VssDaemonError::Poll)?,
        actions,
        exit: false,
        later: Vec::new(),
    };
    lp.drain(); // the machine may start with work (start-up thaw hooks)
    let mut events = Events::with_capacity(16);
    let mut result = Ok(());
    let mut device_live = true;
    // The poll failed: we go on without it (and without the device), sleeping in short
    // slices and looking at the program thread and the freezer each time.
    let mut poll_broken = false;
    while !lp.exit {
        // A write that failed since the last look (an answer given on a timer, the
        // registration after a reopen): close the device before sleeping.
        if std::mem::take(&mut lp.write_failed) && device_live {
            log.warn(&format!(
                "the kernel refused an answer; closing the device and opening it again in \
                 {} ms",
                Reopen::after(failures_since_read).pause().as_millis()
            ));
            close_device(&mut lp, &poll, device_fd, log);
            device_live = false;
            reopen = Some(Reopen::after(failures_since_read));
        }
        let timeout = lp
            .machine
            .poll_timeout()
            .map(|t| t.saturating_since(clock::now()))
            .into_iter()
            .chain(
                reopen
                    .as_ref()
                    .map(|r| r.at.saturating_duration_since(std::time::Instant::now())),
            )
            .min();
        // Drain the worker before sleeping: a result may have arrived meanwhile.
        lp.completions(&done);
        lp.reaped();
        if lp.exit {
            break;
        }
        if lp.write_failed {
            continue;
        }
        if poll_broken {
            std::thread::sleep(timeout.map_or(DEGRADED_SLICE, |t| t.min(DEGRADED_SLICE)));
            lp.freezer_readable();
        } else if let Err(e) =
            poll.poll(&mut events, timeout.map(|t| t.min(Duration::from_secs(60))))
        {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // We can no longer wait for anything: the machine thaws (hooks included)
            // and exits; we run it on without the poll until it does.
            log.warn(&format!(
                "event loop: {e}; thawing what is frozen without the device, then exiting"
            ));
            poll_broken = true;
            device_live = false;
            result = Err(VssDaemonError::Poll(e));
            lp.step(VssInput::Shutdown);
            continue;
        }
        for ev in events.iter().filter(|_| !poll_broken) {
            match ev.token() {
                DEVICE if device_live => {
                    let Some(device) = lp.device.as_ref() else {
                        continue;
                    };
                    let failed = match device.read() {
                        Ok(VssRead::Message(m)) => {
                            failures_since_read = 0;
                            lp.step(VssInput::DeviceRead {
                                bytes: m.to_vec(),
                                realtime_ns: realtime_ns(),
                            });
                            None
                        }
                        Ok(VssRead::NotReady) => None,
                        Ok(VssRead::Closed) => Some(VssDaemonError::DeviceClosed),
                        Err(e) => Some(VssDaemonError::DeviceRead(e)),
                    };
                    let failed = failed.or_else(|| {
                        poll.registry()
                            .reregister(&mut SourceFd(&device_fd), DEVICE, Interest::READABLE)
                            .err()
                            .map(VssDaemonError::Poll)
                    });
                    let (reopen_after, failed) = match failed {
                        Some(e) if lp.reopens => (Some(e), None),
                        other => (None, other),
                    };
                    if let Some(e) = reopen_after {
                        // Linux: closed, and opened again after a pause.
                        log.warn(&format!(
                            "device: {e}; closing it and opening it again in {} ms (the \
                             Backup integration service was switched off, or the guest \
                             hibernated)",
                            Reopen::after(failures_since_read).pause().as_millis()
                        ));
                        close_device(&mut lp, &poll, device_fd, log);
                        device_live = false;
                        reopen = Some(Reopen::after(failures_since_read));
                    } else if let Some(e) = failed {
                        // No request can come any more; the machine thaws (hooks included)
                        // and exits, and we report the error then.
                        log.warn(&format!(
                            "device: {e}; thawing what is frozen without it, then exiting"
                        ));
                        device_live = false;
                        if let Err(d) = poll.registry().deregister(&mut SourceFd(&device_fd)) {
                            // Events from it are ignored from now on anyway.
                            log.warn(&format!(
                                "removing the device from the event loop failed: {d}; \
                                 going on without it"
                            ));
                        }
                        let errno = match &e {
                            VssDaemonError::DeviceRead(io) | VssDaemonError::Poll(io) => {
                                io_error(io)
                            }
                            _ => IoError(nix::libc::EPIPE),
                        };
                        result = Err(e);
                        lp.step(VssInput::DeviceFailed(errno));
                    }
                }
                DEVICE => {}
                SIGNAL => {
                    if signals.take() {
                        log.info("asked to stop: thawing if frozen, then exiting");
                        lp.step(VssInput::Shutdown);
                    }
                }
                FREEZER => lp.freezer_readable(),
                _ => {
                    lp.completions(&done);
                    lp.reaped();
                }
            }
        }
        if let Some(r) = reopen.filter(|r| r.at <= std::time::Instant::now()) {
            match VssDevice::open(&paths.device) {
                Ok(d) => {
                    device_fd = d.raw_fd();
                    match poll.registry().register(
                        &mut SourceFd(&device_fd),
                        DEVICE,
                        Interest::READABLE,
                    ) {
                        Ok(()) => {
                            log.info("opened the VSS device again; registering anew");
                            lp.device = Some(d);
                            device_live = true;
                            // The next failure before anything is read pauses longer.
                            failures_since_read = r.failures.saturating_add(1);
                            reopen = None;
                            lp.step(VssInput::DeviceReopened);
                        }
                        Err(e) => {
                            log.debug(&format!("listening to the reopened device failed: {e}"));
                            reopen = Some(r.again());
                        }
                    }
                }
                Err(e) => {
                    log.debug(&format!("opening the device again failed: {e}"));
                    reopen = Some(r.again());
                }
            }
        }
        if lp.machine.poll_timeout().is_some_and(|t| t <= clock::now()) {
            lp.step(VssInput::Timer);
        }
    }
    lp.finish_freezers();
    result
}
