//! The VSS side of the simulated world: the kernel's two devices (the model lives in
//! [`crate::vss_kernel`]), the freezer process holding suspensions, hooks and ZFS
//! commands as programs that take time, and the two real machines (`VssMachine` for
//! `/dev/hv_fsvss_dev`, `AppMachine` for `/dev/hv_appvss_dev`) executing against them.

use std::time::Duration;

use hvguest_core::kvp::effect::{EffectId, IoError};
use hvguest_core::vss::app::{AppConfig, AppMachine};
use hvguest_core::vss::effect::{ExitStatus, VssEffect, VssInput, VssResult};
use hvguest_core::vss::freezer::{Command, FreezerCore, FreezerInput, FreezerOutput, Reply};
use hvguest_core::vss::hooks::HookEntry;
use hvguest_core::vss::machine::{VssConfig, VssMachine, VssOutput};
use hvguest_core::vss::policy::{Fsid, Mount};
use hvguest_core::vss::wire::{OptMsg, VssOp, VSS_SUCCESS};
use hvguest_core::Instant;

/// The KVP pool directory: its file system's suspension blocks the KVP daemon's writes.
pub const KVP_POOL_DIR: &str = "/var/db/hyperv/pool";

/// A program the machines may run, and how it behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimProgram {
    pub exit_freeze: i32,
    pub exit_thaw: i32,
    pub takes: Duration,
    /// How long its `thaw` takes, when not `takes` (restarting a service can be slow).
    pub thaw_takes: Option<Duration>,
}

impl Default for SimProgram {
    fn default() -> Self {
        SimProgram {
            exit_freeze: 0,
            exit_thaw: 0,
            takes: Duration::from_millis(50),
            thaw_takes: None,
        }
    }
}

/// Everything about the guest's VSS side that a scenario or a seed chooses.
#[derive(Clone, Debug)]
pub struct VssSetup {
    pub mounts: Vec<Mount>,
    /// Hook directory entries and how each hook behaves.
    pub hooks: Vec<(HookEntry, SimProgram)>,
    /// The application helper, running this program, if present.
    pub app: Option<SimProgram>,
    pub sync_takes: Duration,
    /// Suspending this mount fails (EIO).
    pub suspend_fails: Option<String>,
    pub config: VssConfig,
    pub app_auto_thaw: Duration,
    /// The per-type actions `config.policy` was given on top of the defaults, as data
    /// for the simulator's own policy model (`vss_model`), which must not ask the core.
    pub policy_overrides: Vec<(String, hvguest_core::vss::policy::FsAction)>,
    /// The per-mount-point actions (`mount.<path>`) `config.policy` was given, as data
    /// for the model likewise.
    pub mount_overrides: Vec<(String, hvguest_core::vss::policy::FsAction)>,
    /// `config.hook_failure` is `filesystems`, as plain data for the model likewise.
    pub model_tolerates_hook_failure: bool,
    /// How long one `zfs snapshot` takes.
    pub snapshot_takes: Duration,
    /// A program killed at its deadline takes this long to die (`zpool sync` sleeping
    /// in the kernel cannot die at once).
    pub kill_lag: Duration,
    /// How long one UFSSUSPEND takes (it waits for writers to drain).
    pub suspend_takes: Duration,
    /// How long the freezer takes to resume everything (a superblock reload each).
    pub resume_takes: Duration,
    /// Snapshots in the pools before the daemon starts: other programs' (other
    /// prefixes, our prefix followed by more than digits, child datasets) and older ones
    /// of ours. The prune may destroy only the last kind.
    pub snapshots: Vec<String>,
    /// Linux: each loop device's image file (`/dev/loop0` → `/home/img/disk0.img`):
    /// freezing the file system on the loop device syncs through the image, so it
    /// waits while the file system holding the image is frozen.
    pub loop_images: Vec<(String, String)>,
    /// Linux: the service has an `ExecStopPost=hv_vss_daemon --thaw-recorded`, run
    /// after every death of the daemon, before its restart.
    pub exec_stop_post: bool,
}

pub const HOOK_DIR: &str = "/usr/local/etc/hvguest/hooks.d";
pub const APP_COMMAND: &str = "/usr/local/bin/app-quiesce";

impl Default for VssSetup {
    fn default() -> Self {
        VssSetup {
            mounts: Vec::new(),
            hooks: Vec::new(),
            app: None,
            sync_takes: Duration::from_millis(80),
            suspend_fails: None,
            config: VssConfig {
                hook_dir: Some(HOOK_DIR.into()),
                ..VssConfig::default()
            },
            app_auto_thaw: hvguest_core::limits::VSS_APP_AUTO_THAW,
            policy_overrides: Vec::new(),
            mount_overrides: Vec::new(),
            model_tolerates_hook_failure: false,
            snapshot_takes: Duration::from_millis(20),
            kill_lag: Duration::ZERO,
            suspend_takes: Duration::from_millis(1),
            resume_takes: Duration::from_millis(1),
            snapshots: Vec::new(),
            loop_images: Vec::new(),
            exec_stop_post: false,
        }
    }
}

impl VssSetup {
    /// Sets a per-type action, in the daemon's policy and in the model's overrides.
    pub fn set_policy(&mut self, fstype: &str, action: hvguest_core::vss::policy::FsAction) {
        self.config.policy.by_type.insert(fstype.into(), action);
        self.policy_overrides.push((fstype.into(), action));
    }

    /// `hook_failure = filesystems`, in the daemon's configuration and for the model.
    pub fn tolerate_hook_failure(&mut self) {
        self.config.hook_failure = hvguest_core::vss::hooks::HookFailure::Filesystems;
        self.model_tolerates_hook_failure = true;
    }

    /// Sets a per-mount-point action, in the daemon's policy and in the model's.
    pub fn set_mount_policy(&mut self, path: &str, action: hvguest_core::vss::policy::FsAction) {
        self.config.policy.by_mount.insert(path.into(), action);
        self.mount_overrides.push((path.into(), action));
    }
}

pub fn mount(fstype: &str, path: &str, source: &str, read_only: bool) -> Mount {
    Mount {
        fstype: fstype.into(),
        path: path.into(),
        source: source.into(),
        read_only,
        // The simulated mount table does not change under a FREEZE: the freezer finds
        // each mount by its path.
        fsid: None,
    }
}

/// The mount holding `path`.
pub fn mount_of<'a>(mounts: &'a [Mount], path: &str) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| {
            // `path` is under `m.path` when it goes on with a `/` (no string built: this
            // runs for every mount after every step).
            path == m.path
                || m.path == "/"
                || path
                    .strip_prefix(m.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|m| m.path.len())
}

// ------------------------------------------------------------------------------------

pub use crate::vss_kernel::{KOut, Party, SimVssKernel};

/// The freezer process, running the production freezer's decisions
/// ([`FreezerCore`]): lines in, lines out, one suspension per mount, all gone when it
/// exits. The simulation plays its kernel (UFSSUSPEND succeeds, fails or blocks) and
/// keeps the kernel's own record of what is suspended, from the descriptors the freezer
/// opens and closes, not from what the freezer believes.
#[derive(Debug, Default)]
pub struct SimFreezer {
    /// The freezer process, while it exists (spawned by a Suspend, as the daemon does).
    core: Option<FreezerCore>,
    /// The kernel's view: mounts suspended through a descriptor still open, in
    /// suspension order, with when each was suspended.
    kernel_held: Vec<(String, Instant)>,
    /// The next Suspend never answers (the freezer is stuck).
    pub hang_next: bool,
    /// Blocked inside UFSSUSPEND: it reads no more lines.
    pub hung: bool,
    /// Linux: FIFREEZE's superblocks and the freezer's record, which outlive it
    /// (`kernel_held` is then unused).
    pub linux: Option<crate::linux_vss::LinuxFreeze>,
}

/// How the simulated kernel takes one UFSSUSPEND.
pub enum SuspendOutcome {
    Done,
    Fails(IoError),
    /// Never returns (until the freezer is killed).
    Blocks,
}

impl SimFreezer {
    /// A freezer on Linux's kernel (`yes`: freezes outlive it) or FreeBSD's.
    pub fn on_linux(yes: bool) -> SimFreezer {
        SimFreezer {
            linux: yes.then(crate::linux_vss::LinuxFreeze::default),
            ..SimFreezer::default()
        }
    }

    /// What the living freezer believes it holds (its `FreezerCore`'s word, to hold
    /// against the kernel's superblocks).
    pub fn believed_held(&self) -> Vec<String> {
        self.core.as_ref().map_or(Vec::new(), |c| {
            c.held().map(|(m, _)| m.to_string()).collect()
        })
    }

    pub fn alive(&self) -> bool {
        self.core.is_some()
    }

    pub fn holds(&self, mount: &str) -> bool {
        match &self.linux {
            Some(l) => l.frozen.iter().any(|(_, m, _)| m == mount),
            None => self.kernel_held.iter().any(|(m, _)| m == mount),
        }
    }

    pub fn is_holding(&self) -> bool {
        match &self.linux {
            Some(l) => !l.frozen.is_empty(),
            None => !self.kernel_held.is_empty(),
        }
    }

    /// Mounts the kernel holds suspended, in suspension order, with when each was
    /// suspended (Linux: the mount point each frozen file system was frozen through).
    pub fn held(&self) -> Vec<(String, Instant)> {
        match &self.linux {
            Some(l) => l.frozen.iter().map(|(_, m, t)| (m.clone(), *t)).collect(),
            None => self.kernel_held.clone(),
        }
    }

    /// When its own auto-thaw fires (never while blocked in UFSSUSPEND).
    pub fn auto_thaw_at(&self) -> Option<Instant> {
        self.core
            .as_ref()
            .filter(|c| !c.busy())
            .and_then(FreezerCore::poll_timeout)
    }

    /// The daemon's freezer effect, sent as its line; the reply's meaning, or `None` if
    /// none comes (blocked, or no freezer to answer a non-Suspend: EPIPE).
    pub fn command(
        &mut self,
        now: Instant,
        effect: &VssEffect,
        suspend: impl FnOnce(&SimFreezer, &str, Option<Fsid>) -> SuspendOutcome,
    ) -> Option<VssResult> {
        let command = Command::for_effect(effect)?;
        if self.hung {
            return None;
        }
        if self.core.is_none() {
            if !matches!(command, Command::Suspend { .. }) {
                return Some(VssResult::Failed(IoError(32)));
            }
            self.core = Some(FreezerCore::new(now));
        }
        let mut input = Some(FreezerInput::Line(Ok(command.encode().into_bytes())));
        let mut reply = None;
        let mut suspend = Some(suspend);
        while let Some(i) = input.take() {
            let core = self.core.as_mut()?;
            core.handle(now, i);
            let outputs: Vec<FreezerOutput> = std::iter::from_fn(|| core.poll_output()).collect();
            for o in outputs {
                match o {
                    FreezerOutput::Suspend { mount, fsid } if self.linux.is_some() => {
                        input = self.linux_freeze(now, mount, fsid, suspend.take());
                    }
                    FreezerOutput::Suspend { mount, fsid } => match suspend
                        .take()
                        .map_or(SuspendOutcome::Blocks, |f| f(self, &mount, fsid))
                    {
                        SuspendOutcome::Done => {
                            self.kernel_held.push((mount, now));
                            input = Some(FreezerInput::Suspended(Ok(())));
                        }
                        SuspendOutcome::Fails(e) => input = Some(FreezerInput::Suspended(Err(e))),
                        SuspendOutcome::Blocks => self.hung = true,
                    },
                    FreezerOutput::Reply(line) => reply = Some(Reply::result_of(line.as_bytes())),
                    FreezerOutput::Resume(mount) => self.kernel_close(&mount),
                    FreezerOutput::Exit(_) => self.exited(),
                }
            }
        }
        reply
    }

    /// Linux's FIFREEZE as the production freezer does it (io-linux `freeze`): the
    /// record written first; `EBUSY` on a file system frozen already (frozen, but not
    /// ours: the record taken back); a failure takes the record back too; a FIFREEZE
    /// that never returns leaves it.
    fn linux_freeze(
        &mut self,
        now: Instant,
        mount: String,
        fsid: Option<Fsid>,
        suspend: Option<impl FnOnce(&SimFreezer, &str, Option<Fsid>) -> SuspendOutcome>,
    ) -> Option<FreezerInput> {
        let Some(fsid) = fsid else {
            return Some(FreezerInput::Suspended(Err(IoError(22))));
        };
        let l = self.linux.as_mut()?;
        l.record.push((fsid, mount.clone()));
        if l.is_frozen(fsid) {
            l.record.pop();
            return Some(FreezerInput::Suspended(Ok(())));
        }
        match suspend.map_or(SuspendOutcome::Blocks, |f| f(self, &mount, Some(fsid))) {
            SuspendOutcome::Done => {
                let l = self.linux.as_mut()?;
                l.frozen.push((fsid, mount.clone(), now));
                l.ours.push(mount);
                Some(FreezerInput::Suspended(Ok(())))
            }
            SuspendOutcome::Fails(e) => {
                self.linux.as_mut()?.record.pop();
                Some(FreezerInput::Suspended(Err(e)))
            }
            SuspendOutcome::Blocks => {
                self.hung = true;
                None
            }
        }
    }

    /// Its auto-thaw is due: it resumes everything and exits. True if it did.
    pub fn on_timer(&mut self, now: Instant) -> bool {
        if self.auto_thaw_at().is_none_or(|t| t > now) {
            return false;
        }
        self.feed(now, FreezerInput::Timer)
    }

    /// The daemon closed the pipe (it died): it resumes everything and exits.
    pub fn stdin_closed(&mut self, now: Instant) {
        if !self.hung {
            self.feed(now, FreezerInput::InputClosed);
        }
        self.die();
    }

    /// Killed, or crashed: the kernel closes its descriptors, resuming everything.
    pub fn die(&mut self) {
        self.exited();
        self.hung = false;
    }

    /// The process is gone: the kernel closes every descriptor it still had. On Linux
    /// that thaws nothing: what it froze stays frozen, and its record stays.
    fn exited(&mut self) {
        self.core = None;
        self.kernel_held.clear();
        if let Some(l) = self.linux.as_mut() {
            l.ours.clear();
        }
    }

    /// One suspend descriptor closed: the kernel resumes that mount (Linux: FITHAW
    /// and the record updated).
    fn kernel_close(&mut self, mount: &str) {
        if let Some(l) = self.linux.as_mut() {
            l.resume(mount);
            return;
        }
        if let Some(i) = self.kernel_held.iter().rposition(|(m, _)| m == mount) {
            self.kernel_held.remove(i);
        }
    }

    /// Feeds one input; true if the freezer exited.
    fn feed(&mut self, now: Instant, input: FreezerInput) -> bool {
        let Some(core) = self.core.as_mut() else {
            return false;
        };
        core.handle(now, input);
        let outputs: Vec<FreezerOutput> = std::iter::from_fn(|| core.poll_output()).collect();
        let mut exited = false;
        for o in outputs {
            match o {
                FreezerOutput::Resume(mount) => self.kernel_close(&mount),
                FreezerOutput::Exit(_) => exited = true,
                _ => {}
            }
        }
        if exited {
            self.exited();
        }
        exited
    }
}

/// What one simulated VSS process (daemon or app) is waiting for.
#[derive(Debug)]
pub struct Pending {
    pub at: Instant,
    pub id: EffectId,
    pub result: VssResult,
}

pub enum Machine {
    Daemon(Box<VssMachine>),
    App(Box<AppMachine>),
}

impl Machine {
    pub fn handle(&mut self, now: Instant, input: VssInput) {
        match self {
            Machine::Daemon(m) => m.handle(now, input),
            Machine::App(m) => m.handle(now, input),
        }
    }
    pub fn poll_output(&mut self) -> Option<VssOutput> {
        match self {
            Machine::Daemon(m) => m.poll_output(),
            Machine::App(m) => m.poll_output(),
        }
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Machine::Daemon(m) => m.poll_timeout(),
            Machine::App(m) => m.poll_timeout(),
        }
    }
    pub fn is_idle(&self) -> bool {
        match self {
            Machine::Daemon(m) => m.is_idle(),
            Machine::App(m) => m.is_idle(),
        }
    }
    /// Whether the daemon prunes old snapshots now (the helper never does).
    pub fn pruning(&self) -> bool {
        matches!(self, Machine::Daemon(m) if m.pruning())
    }
    /// Whether the daemon holds a FREEZE (the helper's freezes are not ours to judge).
    pub fn frozen(&self) -> bool {
        matches!(self, Machine::Daemon(m) if m.frozen())
    }
}

/// Whether `name` is one of our snapshots under `prefix` (`POOL@<prefix><digits>`, a
/// pool, not a child dataset): the only kind a prune may destroy. Written apart from
/// `core::vss::prune` on purpose.
pub fn our_snapshot(name: &str, prefix: &str) -> bool {
    let Some((dataset, snap)) = name.split_once('@') else {
        return false;
    };
    let Some(digits) = snap.strip_prefix(prefix) else {
        return false;
    };
    !dataset.is_empty()
        && !dataset.contains('/')
        && !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
}

/// Other programs' snapshots and older ones of ours in `pools`, for a world that
/// snapshots: what the prune must tell apart.
fn seed_snapshots(prng: &mut crate::prng::Prng, pools: &[String], prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for pool in pools {
        for other in [
            format!("{pool}@zrepl_20260101_000000_000"),
            format!("{pool}@{prefix}manual"),
            format!("{pool}@{prefix}12.old"),
            format!("{pool}@{prefix}"),
            format!("{pool}@x{prefix}7"),
            format!("{pool}/home@{prefix}5"),
        ] {
            if prng.chance(1, 2) {
                out.push(other);
            }
        }
        for _ in 0..prng.below(6) {
            // Older than any msgid the simulated host sends.
            out.push(format!("{pool}@{prefix}{}", prng.range(1, 1_000_000)));
        }
    }
    out
}

/// A VSS machine in a simulated process, with its effects in flight.
pub struct SimVssProc {
    pub machine: Machine,
    pub pending: Vec<Pending>,
    pub is_app: bool,
}

impl SimVssProc {
    pub fn daemon(setup: &VssSetup, now: Instant) -> SimVssProc {
        SimVssProc {
            machine: Machine::Daemon(Box::new(VssMachine::new(setup.config.clone(), now))),
            pending: Vec::new(),
            is_app: false,
        }
    }

    pub fn app(setup: &VssSetup, now: Instant) -> SimVssProc {
        let cfg = AppConfig {
            work: hvguest_core::vss::app::AppWork::Command(vec![APP_COMMAND.into()]),
            budget: setup.config.budget.clone(),
            auto_thaw: setup.app_auto_thaw,
            ..AppConfig::default()
        };
        SimVssProc {
            machine: Machine::App(Box::new(AppMachine::new(cfg, now))),
            pending: Vec::new(),
            is_app: true,
        }
    }

    pub fn next_wakeup(&self) -> Option<Instant> {
        self.pending
            .iter()
            .map(|p| p.at)
            .chain(self.machine.poll_timeout())
            .min()
    }
}

/// The program and argument a `Run` or `RunHook` effect runs, as one argv (a hook as
/// `<dir>/<name> <arg>`); `None` for other effects.
pub fn program_argv(effect: &VssEffect) -> Option<Vec<String>> {
    match effect {
        VssEffect::Run { argv, .. } => Some(argv.clone()),
        VssEffect::RunHook { dir, name, arg, .. } => Some(vec![
            format!("{}/{name}", dir.trim_end_matches('/')),
            arg.clone(),
        ]),
        _ => None,
    }
}

/// How a program run by a machine ends, from the setup.
pub fn program_result(
    setup: &VssSetup,
    argv: &[String],
    deadline: Duration,
) -> (Duration, ExitStatus, String, String) {
    let arg = argv.last().cloned().unwrap_or_default();
    let prog = argv.first().cloned().unwrap_or_default();
    let name = prog.rsplit('/').next().unwrap_or("").to_string();
    let behaviour = if prog == APP_COMMAND {
        setup.app.clone()
    } else {
        setup
            .hooks
            .iter()
            .find(|(e, _)| e.name == name)
            .map(|(_, p)| p.clone())
    };
    let Some(p) = behaviour else {
        return (
            Duration::from_millis(1),
            ExitStatus::NotStarted(IoError(2)),
            name,
            arg,
        );
    };
    let (code, takes) = if arg == "thaw" {
        (p.exit_thaw, p.thaw_takes.unwrap_or(p.takes))
    } else {
        (p.exit_freeze, p.takes)
    };
    if takes > deadline {
        (
            deadline.saturating_add(setup.kill_lag),
            ExitStatus::TimedOut,
            name,
            arg,
        )
    } else {
        (takes, ExitStatus::Code(code), name, arg)
    }
}

/// Failure written by a machine, as the kernel reads it (Linux's 12-byte answer: its
/// first four bytes, by `linux_vss_kernel`'s own reading).
pub fn status_ok(bytes: &[u8]) -> bool {
    if bytes.len() == 12 {
        return crate::linux_vss_kernel::answer_ok(bytes);
    }
    OptMsg::decode(bytes).is_some_and(|m| m.status == VSS_SUCCESS)
}

/// Effect results that do not need the world: listing mounts and hooks, ZFS commands.
pub fn simple_result(setup: &VssSetup, effect: &VssEffect) -> Option<(Duration, VssResult)> {
    Some(match effect {
        VssEffect::ListMounts => (
            Duration::from_millis(1),
            VssResult::Mounts(setup.mounts.clone()),
        ),
        VssEffect::ListHooks => (
            Duration::from_millis(1),
            VssResult::Hooks(setup.hooks.iter().map(|(e, _)| e.clone()).collect()),
        ),
        VssEffect::ZpoolSync { deadline, .. } => {
            if setup.sync_takes > *deadline {
                (
                    deadline.saturating_add(setup.kill_lag),
                    VssResult::Exit(ExitStatus::TimedOut),
                )
            } else {
                (setup.sync_takes, VssResult::Exit(ExitStatus::Code(0)))
            }
        }
        VssEffect::ZfsSnapshot { deadline, .. } => {
            if setup.snapshot_takes > *deadline {
                (
                    deadline.saturating_add(setup.kill_lag),
                    VssResult::Exit(ExitStatus::TimedOut),
                )
            } else {
                (setup.snapshot_takes, VssResult::Exit(ExitStatus::Code(0)))
            }
        }
        _ => return None,
    })
}

/// A seeded VSS setup: a random mount table (UFS, read-only UFS, several ZFS pools
/// interleaved with UFS, NFS, nullfs over vetoed and over allowed sources, pseudo file
/// systems, mount points nested and listed in any order), some hooks (now and then
/// failing or slow), sometimes an application helper, sometimes a failing suspend, and
/// now and then everything slow at once (application helper, hooks, ZFS commands).
pub fn random_setup(prng: &mut crate::prng::Prng) -> VssSetup {
    let mut mounts = random_mounts(prng);
    // getmntinfo's order is the order of mounting; nothing may depend on it.
    for i in (1..mounts.len()).rev() {
        let j = prng.below(i as u64 + 1) as usize;
        mounts.swap(i, j);
    }
    let mut s = VssSetup {
        mounts,
        ..VssSetup::default()
    };
    let slow = prng.chance(1, 6);
    let ms = |p: &mut crate::prng::Prng, fast: (u64, u64), slow_r: (u64, u64), rare: u64| {
        Duration::from_millis(if slow || p.chance(1, rare) {
            p.range(slow_r.0, slow_r.1)
        } else {
            p.range(fast.0, fast.1)
        })
    };
    for i in 0..prng.below(4) {
        let p = SimProgram {
            exit_freeze: if prng.chance(1, 12) { 1 } else { 0 },
            exit_thaw: if prng.chance(1, 12) { 1 } else { 0 },
            takes: ms(prng, (5, 300), (1000, 8000), 10),
            thaw_takes: (slow || prng.chance(1, 10)).then(|| ms(prng, (5, 300), (500, 5000), 1)),
        };
        let entry = HookEntry {
            name: format!("{}0-hook", i + 1),
            regular_file: true,
            uid: 0,
            mode: 0o755,
        };
        s.hooks.push((entry, p));
    }
    if slow || prng.chance(1, 3) {
        s.app = Some(SimProgram {
            exit_freeze: if prng.chance(1, 10) { 1 } else { 0 },
            exit_thaw: 0,
            takes: ms(prng, (5, 500), (1000, 16000), 8),
            thaw_takes: (slow || prng.chance(1, 10)).then(|| ms(prng, (5, 300), (500, 5000), 1)),
        });
    }
    if prng.chance(1, 12) {
        let ufs: Vec<String> = s
            .mounts
            .iter()
            .filter(|m| m.fstype == "ufs" && !m.read_only)
            .map(|m| m.path.clone())
            .collect();
        if !ufs.is_empty() {
            s.suspend_fails = Some(prng.choose(&ufs).clone());
        }
    }
    s.sync_takes = ms(prng, (10, 400), (2000, 9000), 10);
    s.snapshot_takes = ms(prng, (5, 100), (500, 3000), 10);
    // Killed programs that linger, slow suspensions and resumes: what the margin of
    // the kernel's 15 s and the rollback reserve are for.
    if slow || prng.chance(1, 5) {
        s.kill_lag = Duration::from_millis(prng.range(0, 450));
        s.suspend_takes = Duration::from_millis(prng.range(1, 300));
        s.resume_takes = Duration::from_millis(prng.range(1, 950));
    }
    if prng.chance(1, 4) {
        s.set_policy("zfs", crate::vss::policy_snapshot());
        // Any number kept, 0 (keep all) included; mostly the default.
        if prng.chance(1, 2) {
            s.config.snapshot_keep = u32::try_from(prng.below(5)).unwrap_or(0);
        }
        let mut pools: Vec<String> = s
            .mounts
            .iter()
            .filter(|m| m.fstype == "zfs")
            .map(|m| m.source.split('/').next().unwrap_or_default().to_string())
            .collect();
        pools.sort();
        pools.dedup();
        s.snapshots = seed_snapshots(prng, &pools, &s.config.snapshot_prefix);
    }
    // One world in four sets one mount point's action (`mount.<path>`): mostly one
    // that fits its type (ignoring an NFS mount, vetoing a data mount, snapshotting one
    // dataset), now and then one that does not (which must veto), now and then a path
    // mounted nowhere, or a prefix of a mount point (exact match only).
    if prng.chance(1, 4) {
        use hvguest_core::vss::policy::FsAction;
        let actions = [
            FsAction::Suspend,
            FsAction::Sync,
            FsAction::Snapshot,
            FsAction::Ignore,
            FsAction::Veto,
        ];
        let path = match prng.below(8) {
            0 => "/nowhere".to_string(),
            1 => "/va".to_string(),
            _ => prng.choose(&s.mounts).path.clone(),
        };
        let fstype = s
            .mounts
            .iter()
            .find(|m| m.path == path)
            .map(|m| m.fstype.clone())
            .unwrap_or_default();
        let fitting = match fstype.as_str() {
            "ufs" => vec![FsAction::Suspend, FsAction::Ignore, FsAction::Veto],
            "zfs" => vec![
                FsAction::Sync,
                FsAction::Snapshot,
                FsAction::Ignore,
                FsAction::Veto,
            ],
            _ => vec![FsAction::Ignore, FsAction::Ignore, FsAction::Veto],
        };
        let action = if prng.chance(1, 6) {
            *prng.choose(&actions)
        } else {
            *prng.choose(&fitting)
        };
        s.set_mount_policy(&path, action);
    }
    // One world in four goes on freezing when a freeze hook fails.
    if prng.chance(1, 4) {
        s.tolerate_hook_failure();
    }
    // Now and then another watchdog, up to the longest allowed (its backstop then ends
    // right at the freeze cap); the helper's auto-thaw stays after the backstop.
    if prng.chance(1, 4) {
        let max =
            u64::try_from(hvguest_core::vss::rules::max_watchdog().as_millis()).unwrap_or(u64::MAX);
        s.config.watchdog = Duration::from_millis(prng.range(15_001, max));
        let backstop = hvguest_core::vss::rules::freezer_backstop(s.config.watchdog);
        s.app_auto_thaw = s
            .app_auto_thaw
            .max(backstop + Duration::from_millis(prng.range(1, 5000)));
    }
    s
}

/// A random mount table: `/` (UFS or ZFS), `/dev`, some pseudo file systems, then data
/// file systems on mount points that nest (`/var`, `/var/db`, `/var/db/hyperv`...), and
/// nullfs mounts under `/jail` whose sources lie on any of them.
fn random_mounts(prng: &mut crate::prng::Prng) -> Vec<Mount> {
    let pools = ["zroot", "tank", "backup"];
    let mut disk = 2;
    let mut next_dev = |prng: &mut crate::prng::Prng| {
        disk += 1;
        format!("/dev/da{}p{disk}", prng.below(3))
    };
    let mut out = Vec::new();
    if prng.chance(1, 2) {
        out.push(mount("ufs", "/", &next_dev(prng), prng.chance(1, 12)));
    } else {
        out.push(mount("zfs", "/", "zroot/ROOT/default", false));
    }
    out.push(mount("devfs", "/dev", "devfs", false));
    for (t, p) in [
        ("tmpfs", "/tmp"),
        ("procfs", "/proc"),
        ("fdescfs", "/dev/fd"),
        ("linprocfs", "/compat/linux/proc"),
    ] {
        if prng.chance(1, 3) {
            out.push(mount(t, p, t, false));
        }
    }
    let points = [
        "/var",
        "/var/db",
        "/var/db/hyperv",
        "/var/log",
        "/usr",
        "/usr/local",
        "/home",
        "/data",
        "/data/db",
        "/srv",
    ];
    for p in points {
        if !prng.chance(2, 5) {
            continue;
        }
        let ro = prng.chance(1, 8);
        let m = match prng.below(20) {
            0..=7 => mount("ufs", p, &next_dev(prng), ro),
            8..=15 => {
                let pool = *prng.choose(&pools);
                mount("zfs", p, &format!("{pool}{p}"), ro)
            }
            16..=18 => mount("nfs", p, &format!("srv:{p}"), prng.chance(3, 4) || ro),
            _ => mount("msdosfs", p, &next_dev(prng), prng.chance(3, 4) || ro),
        };
        out.push(m);
    }
    // nullfs under /jail/N, from somewhere on any of the file systems above (or from a
    // nullfs mount point, which holds nothing of its own); half the time from one that
    // cannot be frozen (writable NFS or msdosfs), when the table has one.
    let unfreezable: Vec<String> = out
        .iter()
        .filter(|m| !m.read_only && (m.fstype == "nfs" || m.fstype == "msdosfs"))
        .map(|m| m.path.clone())
        .collect();
    for n in 0..prng.below(3) {
        let from = if !unfreezable.is_empty() && prng.chance(1, 2) {
            prng.choose(&unfreezable).clone()
        } else {
            prng.choose(&out).path.clone()
        };
        let source = if from == "/" {
            "/usr/src".to_string()
        } else {
            format!("{from}/shared")
        };
        out.push(mount(
            "nullfs",
            &format!("/jail/{n}"),
            &source,
            prng.chance(1, 5),
        ));
    }
    // The mount table lists file systems in the order they were mounted: `/` first,
    // the rest in any order (a file system mounted late, by autofs or by hand, comes
    // after the nullfs mounts that reach into it).
    if prng.chance(1, 3) {
        for i in (2..out.len()).rev() {
            let j = 1 + prng.below(i as u64) as usize;
            out.swap(i, j);
        }
    }
    out
}

pub fn policy_snapshot() -> hvguest_core::vss::policy::FsAction {
    hvguest_core::vss::policy::FsAction::Snapshot
}

/// The host's next backup, as a list of (delay, request): usually CHECK, FREEZE, THAW a
/// moment later; sometimes a THAW that never comes, a double FREEZE (with or without a
/// THAW), FREEZE repeated for longer than the freeze cap, a lone THAW.
pub fn random_backup(prng: &mut crate::prng::Prng) -> Vec<(Duration, VssOp)> {
    let ms = |a: u64, b: u64, p: &mut crate::prng::Prng| Duration::from_millis(p.range(a, b));
    match prng.below(10) {
        0 => vec![(Duration::ZERO, VssOp::Thaw)],
        1 => vec![
            (Duration::ZERO, VssOp::Check),
            (ms(0, 50, prng), VssOp::Freeze),
        ],
        2 => vec![
            (Duration::ZERO, VssOp::Freeze),
            (ms(0, 500, prng), VssOp::Freeze),
            (ms(100, 2000, prng), VssOp::Thaw),
        ],
        // The host retries FREEZE well into the first one's watchdog period and never
        // thaws: the watchdog must count from the second answer.
        3 => vec![
            (Duration::ZERO, VssOp::Check),
            (ms(0, 50, prng), VssOp::Freeze),
            (ms(1000, 25000, prng), VssOp::Freeze),
        ],
        // The host keeps repeating FREEZE before each watchdog runs out, for longer
        // than a freeze may last (issue 11): the cap must thaw, and a FREEZE after it
        // starts a new freeze. Sometimes a THAW ends it.
        4 => {
            let mut plan = vec![
                (Duration::ZERO, VssOp::Check),
                (ms(0, 50, prng), VssOp::Freeze),
            ];
            for _ in 0..prng.range(3, 7) {
                plan.push((ms(8000, 15000, prng), VssOp::Freeze));
            }
            if prng.chance(1, 2) {
                plan.push((ms(100, 3000, prng), VssOp::Thaw));
            }
            plan
        }
        _ => vec![
            (Duration::ZERO, VssOp::Check),
            (ms(0, 50, prng), VssOp::Freeze),
            (ms(200, 4000, prng), VssOp::Thaw),
        ],
    }
}
