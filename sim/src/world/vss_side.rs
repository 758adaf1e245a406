//! The VSS half of the simulated world: the kernel's VSS devices, the file-system daemon
//! and the application helper, the freezer, hooks; and the VSS invariants.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use hvguest_core::kvp::effect::{EffectId, IoError};
use hvguest_core::vss::effect::ExitStatus;
use hvguest_core::vss::effect::{VssEffect, VssInput, VssResult};
use hvguest_core::vss::machine::{VssEvent, VssOutput};
use hvguest_core::vss::policy::PolicyError;
use hvguest_core::vss::wire::{OptMsg, VssOp};
use hvguest_core::Instant;

use hvguest_core::limits::{VSS_FREEZER_BACKSTOP, VSS_MAX_FROZEN};
use hvguest_core::vss::rules::freezer_backstop;

use super::World;

/// Past the freezer's backstop, what the simulated process latencies may add.
const SIM_SLACK: Duration = Duration::from_secs(1);
use crate::linux_vss::{LinuxFreeze, LINUX_POOL_DIR};
use crate::linux_vss_kernel::{SimLinuxVssKernel, VssKernel};
use crate::prng::Prng;
use crate::vss::{
    mount_of, program_argv, program_result, simple_result, KOut, Machine, Pending, SimFreezer,
    SimVssKernel, SimVssProc, SuspendOutcome, VssSetup, KVP_POOL_DIR,
};
use hvguest_core::vss::policy::Fsid;
use hvguest_core::vss::wire::Layout;

/// Linux: after the freezer dies with the daemon alive, every file system it left
/// frozen is thawed within this (the reaper's FITHAW, before `FreezerExited`).
const FREEZER_DEATH_BOUND: Duration = Duration::from_secs(2);
/// Linux: after the daemon dies, a file system frozen then is thawed by the restart
/// delay plus this at the latest (the guardians: the freezer seeing its stdin close,
/// `ExecStopPost=`, the restarted daemon's start-up thaw).
const GUARDIAN_BOUND: Duration = Duration::from_secs(1);
use crate::vss_model::{self, FreezeChecker};

/// The VSS state of the world.
pub struct VssPart {
    pub setup: VssSetup,
    pub kernel: VssKernel,
    pub daemon: Option<SimVssProc>,
    pub app: Option<SimVssProc>,
    pub freezer: SimFreezer,
    /// Per hook (and the app command): the argument of its last run.
    pub last_run: BTreeMap<String, String>,
    /// The host's request waiting for an answer.
    pub outstanding: Option<(u64, VssOp)>,
    next_host_id: u64,
    pub restart_at: Option<Instant>,
    /// FreezerExited to deliver to the daemon at this time.
    freezer_notice_at: Option<Instant>,
    /// Something made exact CHECK answers unpredictable (a crash).
    pub disturbed: bool,
    /// The host's plan of VSS requests still to send, with the delay before each.
    pub plan: VecDeque<(Duration, VssOp)>,
    /// When a FREEZE was last answered OK: the watchdog counts from there.
    pub last_freeze_ok: Option<Instant>,
    /// When the current freeze began to hold anything: the kernel's first suspension of
    /// it, or its first OK answer when it suspends nothing. `VSS_MAX_FROZEN` counts from
    /// here. Over once the daemon is thawed and the kernel holds nothing.
    pub frozen_from: Option<Instant>,
    /// The start of the last freeze that is over (the daemon's events, held while
    /// anything is suspended, may speak of it after it ended).
    pub ended_freeze_from: Option<Instant>,
    pub next_at: Instant,
    pub stats_ops: u64,
    /// The daemon's FREEZE steps held against the simulator's own policy model.
    pub checker: FreezeChecker,
    /// Random runs: jitter for the freezer's replies and death notices, so a pending
    /// ping reply and the freezer's death arrive in either order. `None` (scenarios):
    /// fixed delays.
    pub timing: Option<Prng>,
    /// Snapshots that exist: `zfs snapshot` of an existing name fails, as the command.
    pub snapshots: BTreeSet<String>,
    /// Per process (daemon, app): hooks run with `freeze` and not yet with `thaw`, in
    /// the order their freeze ran.
    pub open_hooks: [Vec<String>; 2],
    /// The freezer died with the daemon's hooks frozen: a thaw hook must start by then.
    pub thaw_due_by: Option<Instant>,
    /// The daemon's ping to the freezer still in flight.
    ping_in_flight: Option<EffectId>,
    /// A freezer crash scheduled a moment after a request (racing the daemon's ping).
    pub freezer_crash_at: Option<Instant>,
    /// Linux: the VSS device is reset then (the service switched off and on): the
    /// kernel fails the request held, the daemon reopens the device and registers
    /// again.
    pub device_reset_at: Option<Instant>,
    /// The host request the kernel failed at a device reset: its answer says nothing
    /// of the policy.
    reset_failed: Option<u64>,
    /// A device reset happened and the daemon has not been idle since.
    settling: bool,
    /// The daemon's prune under way: the pools it listed, and whether it has gone
    /// without a hitch so far (then at most `snapshot_keep` of ours may survive it).
    prune_watch: Option<(BTreeSet<String>, bool)>,
    /// Linux: the freezer died while the daemon lived, at `.1`: every file system frozen
    /// since before then must be thawed by `.0`.
    freezer_guard: Option<(Instant, Instant)>,
    /// Linux: the daemon died at `.1`: every file system frozen since before then must
    /// be thawed by `.0` (its restart delay plus `GUARDIAN_BOUND`).
    crash_guard: Option<(Instant, Instant)>,
    /// Linux: systemd's `ExecStopPost=` (`--thaw-recorded`) runs then.
    stop_post_at: Option<Instant>,
    /// Linux: since when the daemon has said it is registered while the kernel holds no
    /// registration from it.
    unregistered_since: Option<Instant>,
}

impl VssPart {
    pub fn new(setup: VssSetup) -> VssPart {
        let snapshots = setup.snapshots.iter().cloned().collect();
        let linux = setup.config.layout == Layout::Linux;
        let expected = if linux {
            vss_model::expect_linux(&setup.mounts)
        } else {
            vss_model::expect(
                &setup.mounts,
                &setup.policy_overrides,
                &setup.mount_overrides,
            )
        };
        VssPart {
            kernel: if linux {
                VssKernel::Linux(SimLinuxVssKernel::default())
            } else {
                VssKernel::FreeBsd(SimVssKernel::default())
            },
            daemon: None,
            app: None,
            freezer: SimFreezer::on_linux(linux),
            last_run: BTreeMap::new(),
            outstanding: None,
            next_host_id: 0,
            restart_at: None,
            freezer_notice_at: None,
            disturbed: false,
            plan: VecDeque::new(),
            last_freeze_ok: None,
            frozen_from: None,
            ended_freeze_from: None,
            next_at: Instant::ZERO,
            stats_ops: 0,
            checker: FreezeChecker::new(expected, setup.config.snapshot_prefix.clone())
                .tolerating_hook_failure(setup.model_tolerates_hook_failure),
            setup,
            timing: None,
            snapshots,
            open_hooks: [Vec::new(), Vec::new()],
            thaw_due_by: None,
            ping_in_flight: None,
            freezer_crash_at: None,
            device_reset_at: None,
            reset_failed: None,
            settling: false,
            prune_watch: None,
            freezer_guard: None,
            crash_guard: None,
            stop_post_at: None,
            unregistered_since: None,
        }
    }

    fn linux(&self) -> bool {
        self.kernel.is_linux()
    }

    /// Linux: the `major:minor` the mount table shows at `path`'s mount.
    fn fsid_of_path(&self, path: &str) -> Option<Fsid> {
        mount_of(&self.setup.mounts, path).and_then(|m| m.fsid)
    }

    /// A short delay of the freezer's: `fixed_ms` in scenarios, 0–3 ms in random runs.
    fn jitter(&mut self, fixed_ms: u64) -> Duration {
        Duration::from_millis(self.timing.as_mut().map_or(fixed_ms, |p| p.below(4)))
    }

    pub fn next_wakeup(&self) -> Option<Instant> {
        // An array, not a vector: the world asks this every step.
        [
            self.daemon.as_ref().and_then(SimVssProc::next_wakeup),
            self.app.as_ref().and_then(SimVssProc::next_wakeup),
            self.kernel.next_deadline(),
            self.restart_at,
            self.freezer_notice_at,
            self.freezer_crash_at,
            self.device_reset_at,
            self.thaw_due_by,
            self.freezer.auto_thaw_at(),
            self.stop_post_at,
            // The guards' deadlines: checked when they pass.
            self.freezer_guard
                .map(|g| g.0.saturating_add(Duration::from_millis(1))),
            self.crash_guard
                .map(|g| g.0.saturating_add(Duration::from_millis(1))),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// After a device reset the daemon may still run the chain of a request the kernel
    /// failed (a FREEZE goes on, its answer is dropped, and it thaws): the host's next
    /// request waits until the daemon is idle, so the FREEZE checker follows one
    /// request at a time.
    pub fn settling_after_reset(&self) -> bool {
        self.settling
    }

    /// Idle: nothing in flight anywhere on the VSS side.
    pub fn quiet(&self) -> bool {
        self.outstanding.is_none()
            && !self.kernel.pending()
            && self.restart_at.is_none()
            && self
                .daemon
                .as_ref()
                .is_some_and(|d| d.machine.is_idle() && d.pending.is_empty())
            && self
                .app
                .as_ref()
                .is_none_or(|a| a.machine.is_idle() && a.pending.is_empty())
    }
}

impl World {
    pub(super) fn vss_log(&mut self, text: String) {
        self.log("vss", &text);
    }

    /// Starts (or restarts) the VSS daemon and, at first start, the application helper.
    pub(super) fn vss_start(&mut self) {
        let Some(v) = self.vss.as_mut() else { return };
        v.restart_at = None;
        // A prune of the daemon that went away ended with it.
        v.prune_watch = None;
        // Linux: before anything else the daemon thaws what a dead freezer's record
        // still lists (its predecessor and that freezer may have died together).
        let startup_thaw = match v.freezer.linux.as_mut() {
            Some(l) => Some(l.thaw_recorded(&v.setup.mounts)),
            None => None,
        };
        v.daemon = Some(SimVssProc::daemon(&v.setup, self.now));
        v.kernel.open_daemon();
        if v.app.is_none() && v.setup.app.is_some() {
            v.app = Some(SimVssProc::app(&v.setup, self.now));
            v.kernel.open_app();
        }
        self.vss_log("hv_vss_daemon starts".into());
        if let Some(said) = startup_thaw.filter(|s| !s.is_empty()) {
            self.stats.linux_vss.startup_thaws += thawed(&said);
            self.vss_log(format!("start-up thaw of the record: {}", said.join(", ")));
            self.vss_update_fs();
        }
        self.vss_drain(false);
        self.vss_drain(true);
    }

    /// Runs one process's outputs.
    fn vss_drain(&mut self, app: bool) {
        let mut kout = Vec::new();
        loop {
            let Some(v) = self.vss.as_mut() else { return };
            let proc = if app {
                v.app.as_mut()
            } else {
                v.daemon.as_mut()
            };
            let Some(p) = proc else { return };
            let Some(out) = p.machine.poll_output() else {
                break;
            };
            match out {
                VssOutput::DeviceWrite(bytes) => {
                    let who = if app { "app" } else { "daemon" };
                    let ok = crate::vss::status_ok(&bytes);
                    let linux_registration = bytes.len() == 12 && bytes[0] == 129;
                    self.vss_log(if linux_registration {
                        format!("{who} writes its registration (op 129)")
                    } else {
                        format!("{who} writes {}", if ok { "success" } else { "failure" })
                    });
                    // The answer must leave the kernel some of its 15 s: the design
                    // answers 1 s before the deadline, a rollback may eat half of
                    // that, and a real write can be delayed by the scheduler. Catches
                    // deadline arithmetic that answers at (or just before) the
                    // kernel's deadline, which the simulator's instant writes would
                    // otherwise get away with.
                    let slack = self
                        .vss
                        .as_ref()
                        .and_then(|v| v.kernel.next_deadline())
                        .map(|d| d.saturating_since(self.now));
                    if let Some(slack) = slack.filter(|s| *s < Duration::from_millis(250)) {
                        self.fail(format!(
                            "the {who} answered {slack:?} before the kernel's deadline (< 250 ms)"
                        ));
                    }
                    let v = self.vss.as_mut().expect("checked");
                    if app {
                        v.kernel.app_write(&bytes, &mut kout);
                    } else {
                        v.kernel.daemon_write(&bytes, &mut kout);
                    }
                }
                VssOutput::Effect { id, effect } => self.vss_execute(app, id, effect),
                VssOutput::Event(e) => {
                    let who = if app { "app" } else { "daemon" };
                    self.vss_log(format!("{who} event {e:?}"));
                    if let (VssEvent::WatchdogThaw { .. }, false) = (&e, app) {
                        self.vss_watchdog_fired("the daemon's watchdog", None);
                    }
                    if let (VssEvent::FreezeCapReached { .. }, false) = (&e, app) {
                        self.vss_cap_reached();
                    }
                    if let (VssEvent::Vetoed(why), false) = (&e, app) {
                        self.vss_check_veto(why);
                    }
                    if !app
                        && matches!(
                            e,
                            VssEvent::PruneInterrupted { .. }
                                | VssEvent::Abandoned { .. }
                                | VssEvent::StepFailed { .. }
                        )
                    {
                        if let Some(w) = self.vss.as_mut().and_then(|v| v.prune_watch.as_mut()) {
                            w.1 = false;
                        }
                    }
                }
                VssOutput::Exit => self.vss_log("exit".into()),
            }
        }
        if !app {
            self.vss_prune_ended();
        }
        for k in kout {
            self.vss_kernel_out(k);
        }
    }

    /// A prune that ran to its end without a hitch leaves at most `snapshot_keep` of
    /// our snapshots in each pool it listed. Catches a selection that keeps the wrong
    /// ones or too many, and a prune that stops early without saying so.
    fn vss_prune_ended(&mut self) {
        let Some(v) = self.vss.as_mut() else { return };
        if v.daemon.as_ref().is_some_and(|d| d.machine.pruning()) {
            return;
        }
        let Some((pools, clean)) = v.prune_watch.take() else {
            return;
        };
        let keep = usize::try_from(v.setup.config.snapshot_keep).unwrap_or(usize::MAX);
        if !clean || keep == 0 {
            return;
        }
        let prefix = &v.setup.config.snapshot_prefix;
        let mut broken = None;
        for pool in &pools {
            let ours: Vec<&String> = v
                .snapshots
                .iter()
                .filter(|n| {
                    n.starts_with(&format!("{pool}@")) && crate::vss::our_snapshot(n, prefix)
                })
                .collect();
            if ours.len() > keep {
                broken.get_or_insert(format!(
                    "after a complete prune {} of our snapshots of {pool} survive, \
                     snapshot_keep is {keep}: {ours:?}",
                    ours.len()
                ));
            }
        }
        if let Some(b) = broken {
            self.fail(b);
        }
    }

    /// A veto names the first mount in table order the model vetoes (what the
    /// administrator is told to fix). Catches a policy that vetoes for the wrong
    /// reason, e.g. a nullfs mount judged by its own path instead of its source's.
    fn vss_check_veto(&mut self, why: &PolicyError) {
        let named = match why {
            PolicyError::Veto { path, .. } | PolicyError::Misfit { path, .. } => path.clone(),
            PolicyError::NoMounts => String::new(),
        };
        let want = self
            .vss
            .as_ref()
            .and_then(|v| v.checker.expected.veto.clone());
        if want.as_ref() != Some(&named) {
            self.fail(format!(
                "the daemon's veto names {named:?}; the model vetoes at {want:?} first"
            ));
        }
    }

    fn vss_execute(&mut self, app: bool, id: EffectId, effect: VssEffect) {
        let now = self.now;
        let Some(v) = self.vss.as_mut() else { return };
        let mut line = format!(
            "{} effect #{} {}",
            if app { "app" } else { "daemon" },
            id.0,
            describe(&effect)
        );
        let done = |after: Duration, result: VssResult| {
            Some(Pending {
                at: now.saturating_add(after),
                id,
                result,
            })
        };
        // The daemon's FREEZE steps against the model; hooks' thaw order.
        let mut broken = if app {
            None
        } else {
            v.checker.effect(&effect).err()
        };
        // A FREEZE step must end early enough to roll back and still answer 1 s before
        // the kernel's deadline ("a step that would not leave time to roll back is not
        // started"). Catches a step deadline that ignores the rollback reserve, which
        // the simulator's quick rollbacks would hide.
        let step_deadline = match &effect {
            VssEffect::RunHook { arg, deadline, .. } if arg == "freeze" => Some(*deadline),
            VssEffect::Run { argv, deadline } if argv.last().is_some_and(|a| a == "freeze") => {
                Some(*deadline)
            }
            VssEffect::ZpoolSync { deadline, .. } | VssEffect::ZfsSnapshot { deadline, .. } => {
                Some(*deadline)
            }
            _ => None,
        };
        if let (Some(d), Some(kd), false) = (step_deadline, v.kernel.next_deadline(), app) {
            let b = &v.setup.config.budget;
            let limit = kd
                .saturating_since(now)
                .saturating_sub(b.margin)
                .saturating_sub(b.rollback);
            if d > limit + Duration::from_millis(1) {
                broken.get_or_insert(format!(
                    "a FREEZE step may run {d:?}, leaving no time to roll back (at most {limit:?})"
                ));
            }
        }
        // The prune: never anything but ours destroyed, and never a prune program while
        // frozen or while a request waits at the daemon.
        if !app
            && matches!(
                effect,
                VssEffect::ListSnapshots { .. } | VssEffect::ZfsDestroy { .. }
            )
        {
            // (`frozen_from` is brought up to date after this drain: not asked here.)
            let frozen = !v.freezer.held().is_empty()
                || v.daemon.as_ref().is_some_and(|d| d.machine.frozen());
            if frozen {
                broken.get_or_insert(format!("{} while frozen", describe(&effect)));
            }
            if v.kernel.holder() == Some(crate::vss::Party::Daemon) {
                broken.get_or_insert(format!(
                    "{} while a request waits for the daemon",
                    describe(&effect)
                ));
            }
            match &effect {
                VssEffect::ZfsDestroy { snapshot, .. }
                    if !crate::vss::our_snapshot(snapshot, &v.setup.config.snapshot_prefix) =>
                {
                    broken.get_or_insert(format!("destroyed {snapshot}, which is not ours"));
                }
                VssEffect::ListSnapshots { pool, .. } => {
                    v.prune_watch
                        .get_or_insert_with(|| (BTreeSet::new(), true))
                        .0
                        .insert(pool.clone());
                }
                _ => {}
            }
        }
        let pending = match &effect {
            VssEffect::Run { deadline, .. } | VssEffect::RunHook { deadline, .. } => {
                let argv = program_argv(&effect).unwrap_or_default();
                let (took, status, name, arg) = program_result(&v.setup, &argv, *deadline);
                if !app && arg == "freeze" {
                    v.checker.hook_ended(&name, status.success());
                }
                v.last_run.insert(name.clone(), arg.clone());
                let open = &mut v.open_hooks[usize::from(app)];
                if arg == "thaw" {
                    // Thaw hooks run in the reverse order of freeze hooks: the last
                    // one frozen is thawed first (it may depend on the earlier ones).
                    // Catches a thaw list built in freeze order.
                    if open.contains(&name) && open.last() != Some(&name) {
                        broken.get_or_insert(format!(
                            "thaw of {name} while {open:?} are frozen: not the reverse of the freeze order"
                        ));
                    }
                    open.retain(|n| *n != name);
                    if !app {
                        v.thaw_due_by = None;
                    }
                } else {
                    open.retain(|n| *n != name);
                    open.push(name);
                }
                done(took, VssResult::Exit(status))
            }
            VssEffect::ZfsSnapshot { snapshot, deadline } => {
                // `zfs snapshot` refuses a name that exists ("dataset already exists").
                if !v.snapshots.insert(snapshot.clone()) {
                    line.push_str(": already exists");
                    done(
                        Duration::from_millis(5),
                        VssResult::Exit(ExitStatus::Code(1)),
                    )
                } else if v.setup.snapshot_takes > *deadline {
                    let died = deadline.saturating_add(v.setup.kill_lag);
                    done(died, VssResult::Exit(ExitStatus::TimedOut))
                } else {
                    done(v.setup.snapshot_takes, VssResult::Exit(ExitStatus::Code(0)))
                }
            }
            VssEffect::ListSnapshots { pool, .. } => {
                let at = format!("{pool}@");
                let names = v
                    .snapshots
                    .iter()
                    .filter(|n| n.starts_with(&at))
                    .cloned()
                    .collect();
                done(Duration::from_millis(5), VssResult::Snapshots(names))
            }
            VssEffect::ZfsDestroy { snapshot, .. } => {
                // `zfs destroy` of a snapshot that is not there fails ("could not find").
                if v.snapshots.remove(snapshot) {
                    done(
                        Duration::from_millis(5),
                        VssResult::Exit(ExitStatus::Code(0)),
                    )
                } else {
                    line.push_str(": no such snapshot");
                    done(
                        Duration::from_millis(5),
                        VssResult::Exit(ExitStatus::Code(1)),
                    )
                }
            }
            VssEffect::KillFreezer => {
                v.freezer.die();
                if v.linux() && v.freezer.is_holding() {
                    self.stats.linux_vss.freezer_deaths += 1;
                    v.freezer_guard
                        .get_or_insert((now.saturating_add(FREEZER_DEATH_BOUND), now));
                }
                // Its exit closes every suspend descriptor: the kernel resumes each, as
                // slowly as a ResumeAll would.
                let exit = v.setup.resume_takes.max(Duration::from_millis(1));
                let notice = v.jitter(2) + exit - Duration::from_millis(1);
                v.freezer_notice_at = Some(now.saturating_add(notice));
                done(exit, VssResult::Done)
            }
            VssEffect::Suspend { .. } if v.freezer_notice_at.is_some() => {
                // The old freezer's death is not noticed yet: the daemon's driver still
                // writes to its closed pipe.
                line.push_str(": the freezer is dead");
                done(Duration::from_millis(1), VssResult::Failed(IoError(32)))
            }
            VssEffect::Suspend { .. } | VssEffect::ResumeAll | VssEffect::PingFreezer { .. } => {
                let setup = &v.setup;
                let mut note = None;
                let loop_images = &setup.loop_images;
                let result = v.freezer.command(now, &effect, |f, mount, _| {
                    // Linux: freezing a file system on a loop device syncs it through
                    // its image, which waits while the file system holding the image is
                    // frozen: that is why loop-backed ones go first.
                    let image_frozen = f.linux.as_ref().is_some_and(|l| {
                        setup
                            .mounts
                            .iter()
                            .find(|m| m.path == mount)
                            .and_then(|m| loop_images.iter().find(|(dev, _)| *dev == m.source))
                            .and_then(|(_, image)| mount_of(&setup.mounts, image))
                            .and_then(|h| h.fsid)
                            .is_some_and(|h| l.is_frozen(h))
                    });
                    // Once / is suspended, suspending another file system can need a write
                    // to the root's metadata and blocks in "suspfs": that is why / goes
                    // last.
                    if image_frozen {
                        note = Some(": waits on its image's frozen file system");
                        SuspendOutcome::Blocks
                    } else if f.linux.is_none() && f.holds("/") {
                        note = Some(": blocks behind the suspended /");
                        SuspendOutcome::Blocks
                    } else if f.hang_next {
                        note = Some(": freezer hangs");
                        SuspendOutcome::Blocks
                    } else if setup.suspend_fails.as_deref() == Some(mount) {
                        SuspendOutcome::Fails(IoError::EIO)
                    } else {
                        SuspendOutcome::Done
                    }
                });
                if note == Some(": freezer hangs") {
                    v.freezer.hang_next = false;
                }
                let took = match &effect {
                    VssEffect::Suspend { .. } => v.setup.suspend_takes,
                    VssEffect::ResumeAll => v.setup.resume_takes,
                    _ => v.jitter(1),
                };
                match result {
                    Some(r) => {
                        if matches!(effect, VssEffect::PingFreezer { .. }) && r == VssResult::Done {
                            // If the freezer dies before this reply, it becomes EPIPE.
                            v.ping_in_flight = Some(id);
                        }
                        done(took, r)
                    }
                    None => {
                        line.push_str(note.unwrap_or(": freezer hangs"));
                        None
                    }
                }
            }
            other => simple_result(&v.setup, other).and_then(|(d, r)| done(d, r)),
        };
        let proc = if app {
            v.app.as_mut()
        } else {
            v.daemon.as_mut()
        };
        if let (Some(p), Some(pd)) = (proc, pending) {
            p.pending.push(pd);
        }
        self.vss_log(line);
        if let Some(b) = broken {
            self.fail(b);
        }
        self.vss_update_fs();
    }

    /// A watchdog (the daemon's, or the freezer's backstop) thawed: never before the
    /// watchdog period after the last FREEZE answered OK. Catches a FREEZE while frozen
    /// that answers OK without restarting the watchdog (it would thaw early, during the
    /// host's backup). The freezer's backstop may come sooner only at the cap, counted
    /// from `first_held`, the first suspension it held.
    fn vss_watchdog_fired(&mut self, who: &str, first_held: Option<Instant>) {
        let Some(v) = self.vss.as_ref() else { return };
        let Some(ok_at) = v.last_freeze_ok else {
            return;
        };
        let mut due = ok_at.saturating_add(v.setup.config.watchdog);
        if let Some(first) = first_held {
            due = due.min(first.saturating_add(VSS_MAX_FROZEN));
        }
        if self.now < due {
            let msg = format!(
                "{who} thawed {:?} after the last FREEZE answered OK, before its {:?}",
                self.now.saturating_since(ok_at),
                v.setup.config.watchdog
            );
            self.fail(msg);
        }
    }

    /// The daemon thaws at the cap (or refuses a FREEZE past it): never before the cap,
    /// less the freezer's backstop, after the freeze began. Catches a cap counted from
    /// the wrong moment, which would thaw during the host's backup.
    fn vss_cap_reached(&mut self) {
        let Some(v) = self.vss.as_ref() else { return };
        let Some(from) = v.frozen_from.or(v.ended_freeze_from) else {
            self.fail("the daemon reports the freeze cap reached, but nothing is frozen".into());
            return;
        };
        let due = from.saturating_add(VSS_MAX_FROZEN.saturating_sub(VSS_FREEZER_BACKSTOP));
        if self.now < due {
            let msg = format!(
                "the daemon reports the freeze cap reached {:?} after the freeze began",
                self.now.saturating_since(from)
            );
            self.fail(msg);
        }
    }

    /// The KVP pool files block while the file system holding them is suspended.
    pub(super) fn vss_update_fs(&mut self) {
        let Some(v) = self.vss.as_ref() else { return };
        let frozen = match &v.freezer.linux {
            Some(l) => v
                .fsid_of_path(LINUX_POOL_DIR)
                .is_some_and(|f| l.is_frozen(f)),
            None => {
                mount_of(&v.setup.mounts, KVP_POOL_DIR).is_some_and(|m| v.freezer.holds(&m.path))
            }
        };
        if frozen != self.fs.frozen {
            self.fs.frozen = frozen;
            self.log(
                "fs",
                if frozen {
                    "pool file system suspended"
                } else {
                    "pool file system resumed"
                },
            );
            if !frozen {
                if let Some(d) = self.daemon.as_mut() {
                    d.unpark(self.now, &mut self.fs, &mut self.net);
                }
            }
        }
    }

    fn vss_kernel_out(&mut self, k: KOut) {
        let now = self.now;
        match k {
            KOut::ToLinuxDaemon(bytes) => {
                let Some(v) = self.vss.as_mut() else { return };
                if bytes.len() == 12 {
                    let was_frozen = v.daemon.as_ref().is_some_and(|d| d.machine.frozen());
                    // Linux names a request by the time it is read.
                    let freeze = (crate::linux_vss_kernel::op_of_byte(bytes[0])
                        == Some(VssOp::Freeze))
                    .then(|| (now.as_nanos().max(1), was_frozen));
                    v.checker.begin(freeze);
                    self.vss_log(format!("kernel hands daemon the request (op {})", bytes[0]));
                } else {
                    self.vss_log(format!(
                        "kernel hands daemon the registration's answer {bytes:02x?}"
                    ));
                }
                let Some(v) = self.vss.as_mut() else { return };
                if let Some(p) = v.daemon.as_mut() {
                    p.machine.handle(
                        now,
                        VssInput::DeviceRead {
                            bytes,
                            realtime_ns: now.as_nanos(),
                        },
                    );
                }
                self.vss_drain(false);
            }
            KOut::ToDaemon(bytes) | KOut::ToApp(bytes) => {
                let app = matches!(k, KOut::ToApp(_));
                self.vss_log(format!(
                    "kernel hands {} the request",
                    if app { "app" } else { "daemon" }
                ));
                let Some(v) = self.vss.as_mut() else { return };
                if !app {
                    let was_frozen = v
                        .daemon
                        .as_ref()
                        .is_some_and(|d| matches!(&d.machine, Machine::Daemon(m) if m.frozen()));
                    let freeze = OptMsg::decode(&bytes)
                        .filter(|m| VssOp::from_u32(m.opt) == Some(VssOp::Freeze))
                        .map(|m| (m.msgid, was_frozen));
                    v.checker.begin(freeze);
                }
                let proc = if app {
                    v.app.as_mut()
                } else {
                    v.daemon.as_mut()
                };
                if let Some(p) = proc {
                    p.machine.handle(
                        now,
                        VssInput::DeviceRead {
                            bytes: bytes.to_vec(),
                            realtime_ns: now.as_nanos(),
                        },
                    );
                }
                self.vss_drain(app);
            }
            KOut::Dropped { host_id } => {
                self.vss_log(format!("kernel drops host request v{host_id}"))
            }
            KOut::Ignored { from_app } => {
                let who = if from_app { "app" } else { "daemon" };
                self.vss_log(format!("kernel ignores a late write from the {who}"));
                // The host already has E_FAIL; our answer was lost. Catches any
                // deadline or budget arithmetic that lets a reply overrun 15 s.
                self.fail(format!(
                    "the {who} replied after the kernel's deadline (or to no request)"
                ));
            }
            KOut::HostReply {
                host_id,
                op,
                ok,
                timed_out,
            } => self.vss_host_reply(host_id, op, ok, timed_out),
        }
    }

    fn vss_host_reply(&mut self, host_id: u64, op: VssOp, ok: bool, timed_out: bool) {
        self.vss_log(format!(
            "host v{host_id} {} <- {}{}",
            op.name(),
            if ok { "S_OK" } else { "E_FAIL" },
            if timed_out { " (kernel timeout)" } else { "" }
        ));
        let Some(v) = self.vss.as_mut() else { return };
        if v.outstanding.map(|o| o.0) == Some(host_id) {
            v.outstanding = None;
        }
        // Expected answers come from the simulator's own model, not the core's policy.
        let veto = v.checker.expected.veto.clone();
        let disturbed = v.disturbed;
        let failed_by_reset = v.reset_failed == Some(host_id);
        let held: Vec<String> = v.freezer.held().into_iter().map(|(m, _)| m).collect();
        match op {
            VssOp::Freeze if ok => {
                v.last_freeze_ok = Some(self.now);
                v.frozen_from.get_or_insert(self.now);
                if v.linux() {
                    self.stats.linux_vss.freezes_ok += 1;
                }
                let want = v.checker.expected.suspend.clone();
                let linux = v.linux();
                // Linux: each planned file system frozen, by the superblocks' own state.
                let unfrozen = v.freezer.linux.as_ref().and_then(|l| {
                    v.checker
                        .expected
                        .linux
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .find(|f| !l.is_frozen(f.fsid))
                        .map(|f| format!("{} ({:?})", f.fsid, f.mounts))
                });
                if let Err(e) = v.checker.answered_ok() {
                    self.fail(e);
                } else if let Some(f) = unfrozen {
                    self.fail(format!("FREEZE answered OK but {f} is not frozen"));
                } else if let Some(m) = want.iter().find(|m| !held.contains(m)).filter(|_| !linux) {
                    self.fail(format!("FREEZE answered OK but {m} is not suspended"));
                }
            }
            VssOp::Check
                if !timed_out && !disturbed && ok != veto.is_none() && !failed_by_reset =>
            {
                self.fail(format!(
                    "CHECK answered {ok} but the model's veto is {veto:?}"
                ));
            }
            VssOp::Thaw if ok && !held.is_empty() => {
                self.fail(format!("THAW answered OK with {held:?} still suspended"));
            }
            _ => {}
        }
    }

    /// Sends a VSS request from the host.
    pub(super) fn vss_host(&mut self, op: VssOp) {
        let now = self.now;
        let Some(v) = self.vss.as_mut() else { return };
        v.next_host_id += 1;
        v.stats_ops += 1;
        let id = v.next_host_id;
        if v.outstanding.is_none() {
            v.outstanding = Some((id, op));
        }
        let mut out = Vec::new();
        v.kernel.host(now, id, op, &mut out);
        self.vss_log(format!("host v{id} {}", op.name()));
        for k in out {
            self.vss_kernel_out(k);
        }
    }

    /// The VSS daemon dies (its freezer, seeing the pipe close, exits: resumed).
    pub(super) fn vss_crash(&mut self) {
        self.vss_die(false, false);
    }

    /// Power loss: the daemon, its freezer and every freeze go; the reboot thaws all,
    /// and Linux's record on tmpfs is gone with it.
    pub(super) fn vss_power_loss(&mut self) {
        self.vss_die(false, true);
    }

    /// Linux: the daemon and its freezer die together (the service's processes killed
    /// at once): nothing sees a pipe close; what was frozen stays frozen until a
    /// guardian thaws the record (`ExecStopPost=`, the restarted daemon's start-up).
    pub(super) fn vss_crash_both(&mut self) {
        self.vss_die(true, false);
    }

    fn vss_die(&mut self, freezer_too: bool, reboot: bool) {
        let now = self.now;
        let Some(v) = self.vss.as_mut() else { return };
        if v.daemon.take().is_none() {
            return;
        }
        let mut out = Vec::new();
        v.kernel.close_daemon(&mut out);
        // Linux: a freezer that reads lines (not stuck in FIFREEZE) and sees its stdin
        // close must thaw what it froze itself, at once: the guardians are for a
        // freezer that died too.
        let eof_thaws: Vec<String> = match &v.freezer.linux {
            Some(l) if !freezer_too && !v.freezer.hung && !reboot => l.ours.clone(),
            _ => Vec::new(),
        };
        if freezer_too {
            v.freezer.die();
        } else {
            v.freezer.stdin_closed(now);
        }
        let left_frozen = v.freezer.linux.as_ref().and_then(|l| {
            eof_thaws.into_iter().find(|m| {
                v.setup
                    .mounts
                    .iter()
                    .find(|x| x.path == *m)
                    .and_then(|x| x.fsid)
                    .is_some_and(|f| l.is_frozen(f))
            })
        });
        v.freezer_notice_at = None;
        v.checker.begin(None);
        v.ping_in_flight = None;
        v.thaw_due_by = None;
        v.disturbed = true;
        let delay = match (v.linux(), v.timing.as_mut()) {
            // Linux: systemd's restart delay, 100 ms to 2 s.
            (true, Some(p)) => Duration::from_millis(p.range(100, 2000)),
            _ => Duration::from_millis(200),
        };
        v.restart_at = Some(now.saturating_add(delay));
        if let Some(l) = v.freezer.linux.as_mut() {
            if reboot {
                *l = LinuxFreeze::default();
            }
            v.freezer_guard = None;
            if !l.frozen.is_empty() {
                self.stats.linux_vss.daemon_deaths += 1;
                v.crash_guard = Some((now.saturating_add(delay + GUARDIAN_BOUND), now));
            }
            if v.setup.exec_stop_post {
                v.stop_post_at = Some(now.saturating_add(delay / 2));
            }
        }
        self.vss_log(if freezer_too {
            "hv_vss_daemon and its freezer killed together".into()
        } else {
            "hv_vss_daemon killed; its freezer exits".into()
        });
        if let Some(m) = left_frozen {
            self.fail(format!(
                "the freezer saw its stdin close and left {m}, which it froze, frozen"
            ));
        }
        for k in out {
            self.vss_kernel_out(k);
        }
        self.vss_update_fs();
    }

    /// Linux: the VSS device goes away and comes back (the Backup service switched off
    /// and on): the kernel fails the request the daemon holds and forgets the
    /// registration; the daemon is told it reopened the device and registers again. An
    /// answer it still owes the old opening must never reach the new one.
    pub(super) fn vss_device_reset(&mut self) {
        let now = self.now;
        let Some(v) = self.vss.as_mut() else { return };
        if !v.linux() || v.daemon.is_none() {
            return;
        }
        let mut out = Vec::new();
        self.stats.linux_vss.device_resets += 1;
        v.reset_failed = v.outstanding.map(|o| o.0);
        v.settling = true;
        v.kernel.close_daemon(&mut out);
        v.kernel.open_daemon();
        self.vss_log("the VSS device is reset: the daemon reopens it".into());
        for k in out {
            self.vss_kernel_out(k);
        }
        let Some(v) = self.vss.as_mut() else { return };
        if let Some(d) = v.daemon.as_mut() {
            d.machine.handle(now, VssInput::DeviceReopened);
        }
        self.vss_drain(false);
    }

    /// The freezer dies on its own (a crash): the kernel resumes what it held (Linux:
    /// nothing; the daemon's reaper must thaw its record).
    pub(super) fn vss_freezer_crash(&mut self) {
        let now = self.now;
        let Some(v) = self.vss.as_mut() else { return };
        v.freezer.die();
        if v.linux() && v.daemon.is_some() && v.freezer.is_holding() {
            self.stats.linux_vss.freezer_deaths += 1;
            v.freezer_guard
                .get_or_insert((now.saturating_add(FREEZER_DEATH_BOUND), now));
        }
        let notice = v.jitter(1);
        v.freezer_notice_at = Some(now.saturating_add(notice));
        // A ping it had not answered yet fails (the pipe closes).
        if let (Some(id), Some(d)) = (v.ping_in_flight.take(), v.daemon.as_mut()) {
            for p in d.pending.iter_mut().filter(|p| p.id == id) {
                p.result = VssResult::Failed(IoError(32));
            }
        }
        self.vss_log("freezer crashes".into());
        self.vss_update_fs();
    }

    /// Delivers everything due on the VSS side.
    pub(super) fn vss_advance(&mut self) {
        let now = self.now;
        if self
            .vss
            .as_ref()
            .and_then(|v| v.restart_at)
            .is_some_and(|t| t <= now)
        {
            self.vss_start();
        }
        let stop_post = self.vss.as_mut().and_then(|v| {
            v.stop_post_at.take_if(|t| *t <= now)?;
            let mounts = &v.setup.mounts;
            v.freezer.linux.as_mut().map(|l| l.thaw_recorded(mounts))
        });
        if let Some(said) = stop_post {
            self.stats.linux_vss.stop_post_thaws += thawed(&said);
            self.vss_log(format!(
                "systemd runs ExecStopPost=hv_vss_daemon --thaw-recorded: {}",
                if said.is_empty() {
                    "nothing recorded".into()
                } else {
                    said.join(", ")
                }
            ));
            self.vss_update_fs();
        }
        // The freezer's own watchdog: it exits, resuming everything.
        let first_held = self
            .vss
            .as_ref()
            .and_then(|v| v.freezer.held().first().map(|h| h.1));
        let auto = self.vss.as_mut().is_some_and(|v| v.freezer.on_timer(now));
        if auto {
            self.vss_log("freezer's own watchdog fires: it exits".into());
            self.vss_watchdog_fired("the freezer's backstop", first_held);
            self.vss_freezer_crash();
        }
        let crash = self
            .vss
            .as_mut()
            .is_some_and(|v| v.freezer_crash_at.take_if(|t| *t <= now).is_some());
        if crash {
            self.vss_freezer_crash();
        }
        let reset = self
            .vss
            .as_mut()
            .is_some_and(|v| v.device_reset_at.take_if(|t| *t <= now).is_some());
        if reset {
            self.vss_device_reset();
        }
        if let Some(v) = self.vss.as_mut() {
            if v.freezer_notice_at.is_some_and(|t| t <= now) {
                v.freezer_notice_at = None;
                // Linux: the reaper thaws what the dead freezer's record lists, then
                // the machine hears of the death (io/src/freezer.rs `reap`).
                let reaped = match v.freezer.linux.as_mut() {
                    Some(l) if v.daemon.is_some() => Some(l.thaw_recorded(&v.setup.mounts)),
                    _ => None,
                };
                if let Some(said) = reaped.filter(|s| !s.is_empty()) {
                    self.stats.linux_vss.reaper_thaws += thawed(&said);
                    self.vss_log(format!("the reaper thaws the record: {}", said.join(", ")));
                    self.vss_update_fs();
                }
                let Some(v) = self.vss.as_mut() else { return };
                if let Some(d) = v.daemon.as_mut() {
                    d.machine.handle(now, VssInput::FreezerExited);
                    // The daemon's hooks are frozen: their thaw must start within 1 s
                    // of whatever the daemon is running now (a CHECK, a hook already
                    // thawing). Catches a death noticed but left for the watchdog.
                    if !v.open_hooks[0].is_empty() {
                        let busy_until = d.pending.iter().map(|p| p.at).max().unwrap_or(now);
                        v.thaw_due_by =
                            Some(busy_until.max(now).saturating_add(Duration::from_secs(1)));
                    }
                }
                self.vss_drain(false);
            }
        }
        for app in [false, true] {
            loop {
                let Some(v) = self.vss.as_mut() else { return };
                let Some(p) = (if app {
                    v.app.as_mut()
                } else {
                    v.daemon.as_mut()
                }) else {
                    break;
                };
                let due = p
                    .pending
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| x.at <= now)
                    .min_by_key(|(_, x)| (x.at, x.id))
                    .map(|(i, _)| i);
                match due {
                    Some(i) => {
                        let pd = p.pending.remove(i);
                        p.machine.handle(
                            now,
                            VssInput::EffectDone {
                                id: pd.id,
                                result: pd.result,
                            },
                        );
                        self.vss_drain(app);
                    }
                    None => {
                        if p.machine.poll_timeout().is_some_and(|t| t <= now) {
                            p.machine.handle(now, VssInput::Timer);
                            self.vss_drain(app);
                        }
                        break;
                    }
                }
            }
        }
        let mut out = Vec::new();
        if let Some(v) = self.vss.as_mut() {
            v.kernel.on_timer(now, &mut out);
        }
        for k in out {
            self.vss_kernel_out(k);
        }
        self.vss_update_fs();
    }

    /// At the end of every run (after the drain): nothing frozen anywhere. Catches an
    /// application helper whose auto-thaw never fires when its THAW never comes, and any
    /// path that forgets a suspension or a hook's thaw.
    pub(super) fn vss_final_check(&mut self) {
        let Some(v) = self.vss.as_ref() else { return };
        let mut left = Vec::new();
        left.extend(
            v.freezer
                .held()
                .into_iter()
                .map(|(m, _)| format!("{m} suspended")),
        );
        if v.daemon
            .as_ref()
            .is_some_and(|d| matches!(&d.machine, Machine::Daemon(m) if m.frozen()))
        {
            left.push("the daemon frozen".into());
        }
        if v.app
            .as_ref()
            .is_some_and(|a| matches!(&a.machine, Machine::App(m) if m.frozen()))
        {
            left.push("the application helper frozen".into());
        }
        for (who, open) in ["hook", "app command"].iter().zip(&v.open_hooks) {
            left.extend(open.iter().map(|n| format!("{who} {n} never thawed")));
        }
        if !left.is_empty() {
            self.fail(format!("at the end of the run: {}", left.join(", ")));
        }
    }

    /// Linux's invariants, from the world's own state (the superblocks, the kernel's
    /// registration), never the core's: (b) after the daemon's death, nothing frozen
    /// then is still frozen past its restart delay plus `GUARDIAN_BOUND`; (c) after the
    /// freezer's death with the daemon alive, nothing frozen then is still frozen past
    /// `FREEZER_DEATH_BOUND`; a daemon that says it is registered is, within 1 s.
    /// False when one broke.
    fn vss_check_linux(&mut self) -> bool {
        let now = self.now;
        let Some(v) = self.vss.as_mut() else {
            return true;
        };
        let frozen = v
            .freezer
            .linux
            .as_ref()
            .map_or(Vec::new(), |l| l.frozen.clone());
        let mut broken = None;
        if let Some((due, died)) = v.crash_guard.filter(|g| now > g.0) {
            v.crash_guard = None;
            if let Some((fsid, m, _)) = frozen.iter().find(|(_, _, since)| *since <= died) {
                broken = Some(format!(
                    "{m} ({fsid}) still frozen {:?} after the daemon died, past the \
                     guardians' deadline ({:?} after)",
                    now.saturating_since(died),
                    due.saturating_since(died)
                ));
            }
        }
        if let Some((_, died)) = v.freezer_guard.filter(|g| now > g.0) {
            v.freezer_guard = None;
            if let Some((fsid, m, _)) = frozen.iter().find(|(_, _, since)| *since <= died) {
                broken.get_or_insert(format!(
                    "{m} ({fsid}) still frozen {:?} after its freezer died with the daemon \
                     alive (at most {FREEZER_DEATH_BOUND:?})",
                    now.saturating_since(died)
                ));
            }
        }
        // (d') What the living freezer holds is frozen: nobody (a guardian thawing a
        // record too early, say) thaws a freeze a freezer still answers for.
        if let Some(l) = v.freezer.linux.as_ref() {
            for m in v.freezer.believed_held() {
                let fsid = v
                    .setup
                    .mounts
                    .iter()
                    .find(|x| x.path == m)
                    .and_then(|x| x.fsid);
                if fsid.is_some_and(|f| !l.is_frozen(f)) {
                    broken.get_or_insert(format!(
                        "the freezer holds {m}, but its file system is not frozen"
                    ));
                }
            }
        }
        let says = v.daemon.as_ref().is_some_and(|d| match &d.machine {
            Machine::Daemon(m) => m.registered(),
            Machine::App(_) => false,
        });
        if !says || v.kernel.registered() {
            v.unregistered_since = None;
        } else {
            let since = *v.unregistered_since.get_or_insert(now);
            if now.saturating_since(since) > Duration::from_secs(1) {
                broken.get_or_insert(
                    "the VSS daemon says it is registered, but the kernel has had no \
                     registration from it for 1 s"
                        .into(),
                );
            }
        }
        match broken {
            Some(b) => {
                self.fail(b);
                false
            }
            None => true,
        }
    }

    /// VSS invariants after every step.
    pub(super) fn vss_check(&mut self) {
        let now = self.now;
        if let Some(v) = self.vss.as_mut().filter(|v| v.settling) {
            v.settling = v
                .daemon
                .as_ref()
                .is_some_and(|d| !d.machine.is_idle() || !d.pending.is_empty());
        }
        if let Some(v) = self.vss.as_mut() {
            // The freeze's start, as the world sees it: the kernel's first suspension
            // (an OK answer sets it when nothing is suspended); over when nothing is
            // held and the daemon is not frozen.
            let first = v.freezer.held().first().map(|h| h.1);
            let frozen = v
                .daemon
                .as_ref()
                .is_some_and(|d| matches!(&d.machine, Machine::Daemon(m) if m.frozen()));
            match first {
                Some(t) => {
                    v.frozen_from.get_or_insert(t);
                }
                None if !frozen => {
                    if let Some(from) = v.frozen_from.take() {
                        v.ended_freeze_from = Some(from);
                    }
                }
                None => {}
            }
        }
        if self.vss.as_ref().is_some_and(VssPart::linux) && !self.vss_check_linux() {
            return;
        }
        let Some(v) = self.vss.as_ref() else { return };
        if let Some(due) = v.thaw_due_by.filter(|t| now > *t) {
            let msg = format!(
                "the freezer died and no thaw hook started by {due:?} with {:?} frozen",
                v.open_hooks[0]
            );
            self.fail(msg);
            return;
        }
        // The freezer's own backstop, plus the simulated latencies of a kill and its
        // notice.
        let limit = freezer_backstop(v.setup.config.watchdog).saturating_add(SIM_SLACK);
        let mut held = v.freezer.held();
        // Linux: what was frozen when the daemon died is bounded by the guardians'
        // deadline instead (`vss_check_linux`), until it passes.
        if let Some((_, died)) = v.crash_guard {
            held.retain(|(_, since)| *since > died);
        }
        // However often the host repeats FREEZE: nothing stays suspended past the cap
        // after the first suspension the kernel still holds (issue 11). Catches a
        // watchdog or a freezer backstop that every FREEZE moves on without end.
        if let Some((m, first)) = held.first() {
            if now > first.saturating_add(VSS_MAX_FROZEN) {
                let msg = format!(
                    "{m} suspended for {:?} since the first suspension, past the {:?} cap",
                    now.saturating_since(*first),
                    VSS_MAX_FROZEN
                );
                self.fail(msg);
                return;
            }
        }
        if let Some((m, since)) = held
            .iter()
            // A FREEZE answered OK later (while frozen) starts the watchdog again.
            .find(|(_, s)| {
                now.saturating_since((*s).max(v.last_freeze_ok.unwrap_or(Instant::ZERO))) > limit
            })
        {
            let msg = format!(
                "{m} suspended for {:?}, beyond the watchdog",
                now.saturating_since(*since)
            );
            self.fail(msg);
            return;
        }
        let daemon_thawed = v.daemon.as_ref().is_some_and(
            |d| matches!(&d.machine, Machine::Daemon(m) if !m.frozen() && m.is_idle()),
        );
        let settled = v.daemon.as_ref().is_some_and(|d| d.pending.is_empty())
            && v.freezer_notice_at.is_none();
        if daemon_thawed && settled {
            if let Some((m, _)) = held.first() {
                let msg = format!("{m} is suspended while no FREEZE holds");
                self.fail(msg);
                return;
            }
        }
        let app_thawed = v
            .app
            .as_ref()
            .is_none_or(|a| matches!(&a.machine, Machine::App(m) if !m.frozen() && m.is_idle()));
        if v.quiet() && daemon_thawed && app_thawed {
            if let Some((name, _)) = v.last_run.iter().find(|(_, arg)| *arg == "freeze") {
                let msg = format!("hook {name} ran with freeze and never with thaw");
                self.fail(msg);
            }
        }
    }
}

/// How many file systems a guardian's words say it thawed.
fn thawed(said: &[String]) -> u64 {
    said.iter().filter(|s| s.ends_with(" thawed")).count() as u64
}

fn describe(e: &VssEffect) -> String {
    match e {
        VssEffect::ListMounts => "list mounts".into(),
        VssEffect::ListHooks => "list hooks".into(),
        VssEffect::Run { deadline, .. } | VssEffect::RunHook { deadline, .. } => format!(
            "run {} (deadline {} ms)",
            crate::vss::program_argv(e).unwrap_or_default().join(" "),
            deadline.as_millis()
        ),
        VssEffect::ZpoolSync { pools, deadline } => format!(
            "zpool sync {} (deadline {} ms)",
            pools.join(" "),
            deadline.as_millis()
        ),
        VssEffect::ZfsSnapshot { snapshot, .. } => format!("zfs snapshot -r {snapshot}"),
        VssEffect::ListSnapshots { pool, .. } => format!("zfs list snapshots of {pool}"),
        VssEffect::ZfsDestroy { snapshot, .. } => format!("zfs destroy -r {snapshot}"),
        VssEffect::Suspend { mount, .. } => format!("suspend {mount}"),
        VssEffect::ResumeAll => "resume all".into(),
        VssEffect::KillFreezer => "kill freezer".into(),
        VssEffect::PingFreezer { .. } => "ping freezer".into(),
    }
}
