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
use hvguest_core::vss::policy::Mount;
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
}

impl Default for SimProgram {
    fn default() -> Self {
        SimProgram {
            exit_freeze: 0,
            exit_thaw: 0,
            takes: Duration::from_millis(50),
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
        }
    }
}

pub fn mount(fstype: &str, path: &str, source: &str, read_only: bool) -> Mount {
    Mount {
        fstype: fstype.into(),
        path: path.into(),
        source: source.into(),
        read_only,
    }
}

/// The mount holding `path`.
pub fn mount_of<'a>(mounts: &'a [Mount], path: &str) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| path == m.path || m.path == "/" || path.starts_with(&format!("{}/", m.path)))
        .max_by_key(|m| m.path.len())
}

// ------------------------------------------------------------------------------------

pub use crate::vss_kernel::{KOut, Party, SimVssKernel};

/// The freezer process, running the production freezer's decisions
/// ([`FreezerCore`]): lines in, lines out, one suspension per mount, all gone when it
/// exits. The simulation plays its kernel (UFSSUSPEND succeeds, fails or blocks).
#[derive(Debug, Default)]
pub struct SimFreezer {
    /// The freezer process, while it exists (spawned by a Suspend, as the daemon does).
    core: Option<FreezerCore>,
    /// The next Suspend never answers (the freezer is stuck).
    pub hang_next: bool,
    /// Blocked inside UFSSUSPEND: it reads no more lines.
    pub hung: bool,
}

/// How the simulated kernel takes one UFSSUSPEND.
pub enum SuspendOutcome {
    Done,
    Fails(IoError),
    /// Never returns (until the freezer is killed).
    Blocks,
}

impl SimFreezer {
    pub fn alive(&self) -> bool {
        self.core.is_some()
    }

    pub fn holds(&self, mount: &str) -> bool {
        self.core.as_ref().is_some_and(|c| c.holds(mount))
    }

    pub fn is_holding(&self) -> bool {
        self.core.as_ref().is_some_and(FreezerCore::is_holding)
    }

    /// Mounts held, in suspension order, with when each was suspended.
    pub fn held(&self) -> Vec<(String, Instant)> {
        self.core
            .as_ref()
            .map(|c| c.held().map(|(m, t)| (m.to_string(), t)).collect())
            .unwrap_or_default()
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
        suspend: impl FnOnce(&SimFreezer, &str) -> SuspendOutcome,
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
                    FreezerOutput::Suspend(mount) => match suspend
                        .take()
                        .map_or(SuspendOutcome::Blocks, |f| f(self, &mount))
                    {
                        SuspendOutcome::Done => input = Some(FreezerInput::Suspended(Ok(()))),
                        SuspendOutcome::Fails(e) => input = Some(FreezerInput::Suspended(Err(e))),
                        SuspendOutcome::Blocks => self.hung = true,
                    },
                    FreezerOutput::Reply(line) => reply = Some(Reply::result_of(line.as_bytes())),
                    FreezerOutput::Resume(_) => {}
                    FreezerOutput::Exit(_) => self.core = None,
                }
            }
        }
        reply
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
        self.core = None;
        self.hung = false;
    }

    /// Feeds one input; true if the freezer exited.
    fn feed(&mut self, now: Instant, input: FreezerInput) -> bool {
        let Some(core) = self.core.as_mut() else {
            return false;
        };
        core.handle(now, input);
        let mut exited = false;
        while let Some(o) = core.poll_output() {
            exited |= matches!(o, FreezerOutput::Exit(_));
        }
        if exited {
            self.core = None;
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
    let code = if arg == "thaw" {
        p.exit_thaw
    } else {
        p.exit_freeze
    };
    if p.takes > deadline {
        (deadline, ExitStatus::TimedOut, name, arg)
    } else {
        (p.takes, ExitStatus::Code(code), name, arg)
    }
}

/// Failure written by a machine, as the kernel reads it.
pub fn status_ok(bytes: &[u8; 64]) -> bool {
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
                (*deadline, VssResult::Exit(ExitStatus::TimedOut))
            } else {
                (setup.sync_takes, VssResult::Exit(ExitStatus::Code(0)))
            }
        }
        VssEffect::ZfsSnapshot { .. } => (
            Duration::from_millis(20),
            VssResult::Exit(ExitStatus::Code(0)),
        ),
        _ => return None,
    })
}

/// A seeded VSS setup: one of the mount layouts that matter, some hooks (now and then
/// failing or slow), sometimes an application helper, sometimes a failing suspend.
pub fn random_setup(prng: &mut crate::prng::Prng) -> VssSetup {
    let layouts: [&[(&str, &str, &str, bool)]; 6] = [
        &[
            ("ufs", "/", "/dev/da0p2", false),
            ("devfs", "/dev", "devfs", false),
        ],
        &[
            ("ufs", "/", "/dev/da0p2", false),
            ("ufs", "/var", "/dev/da0p3", false),
            ("ufs", "/home", "/dev/da1p1", false),
            ("devfs", "/dev", "devfs", false),
        ],
        &[
            ("zfs", "/", "zroot/ROOT/default", false),
            ("zfs", "/var", "zroot/var", false),
            ("devfs", "/dev", "devfs", false),
            ("tmpfs", "/tmp", "tmpfs", false),
        ],
        &[
            ("ufs", "/", "/dev/da0p2", false),
            ("zfs", "/data", "tank/data", false),
            ("nullfs", "/jail/data", "/data", false),
            ("devfs", "/dev", "devfs", false),
        ],
        &[
            ("ufs", "/", "/dev/da0p2", false),
            ("nfs", "/mnt", "srv:/export", false),
        ],
        &[
            ("zfs", "/", "zroot/ROOT/default", false),
            ("ufs", "/var/db", "/dev/da1p1", false),
            ("nfs", "/backup", "srv:/b", true),
        ],
    ];
    let layout = *prng.choose(&layouts);
    let mut s = VssSetup {
        mounts: layout
            .iter()
            .map(|&(t, p, src, ro)| mount(t, p, src, ro))
            .collect(),
        ..VssSetup::default()
    };
    for i in 0..prng.below(4) {
        let p = SimProgram {
            exit_freeze: if prng.chance(1, 12) { 1 } else { 0 },
            exit_thaw: if prng.chance(1, 12) { 1 } else { 0 },
            takes: Duration::from_millis(if prng.chance(1, 10) {
                prng.range(3000, 8000)
            } else {
                prng.range(5, 300)
            }),
        };
        let entry = HookEntry {
            name: format!("{}0-hook", i + 1),
            regular_file: true,
            uid: 0,
            mode: 0o755,
        };
        s.hooks.push((entry, p));
    }
    if prng.chance(1, 3) {
        s.app = Some(SimProgram {
            exit_freeze: if prng.chance(1, 10) { 1 } else { 0 },
            exit_thaw: 0,
            takes: Duration::from_millis(if prng.chance(1, 8) {
                prng.range(2000, 16000)
            } else {
                prng.range(5, 500)
            }),
        });
    }
    if prng.chance(1, 12) {
        let ufs: Vec<String> = s
            .mounts
            .iter()
            .filter(|m| m.fstype == "ufs")
            .map(|m| m.path.clone())
            .collect();
        if !ufs.is_empty() {
            s.suspend_fails = Some(prng.choose(&ufs).clone());
        }
    }
    s.sync_takes = Duration::from_millis(if prng.chance(1, 10) {
        prng.range(2000, 9000)
    } else {
        prng.range(10, 400)
    });
    if prng.chance(1, 4) {
        s.config
            .policy
            .by_type
            .insert("zfs".into(), crate::vss::policy_snapshot());
    }
    s
}

pub fn policy_snapshot() -> hvguest_core::vss::policy::FsAction {
    hvguest_core::vss::policy::FsAction::Snapshot
}

/// The host's next backup, as a list of (delay, request): usually CHECK, FREEZE, THAW a
/// moment later; sometimes a THAW that never comes, a double FREEZE, a lone THAW.
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
        _ => vec![
            (Duration::ZERO, VssOp::Check),
            (ms(0, 50, prng), VssOp::Freeze),
            (ms(200, 4000, prng), VssOp::Thaw),
        ],
    }
}
