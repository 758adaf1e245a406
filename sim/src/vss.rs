//! The VSS side of the simulated world: the kernel's two devices with their ordering and
//! 15 s timer (spec `vss.md` §2), the freezer process holding suspensions, hooks and ZFS
//! commands as programs that take time, and the two real machines (`VssMachine` for
//! `/dev/hv_fsvss_dev`, `AppMachine` for `/dev/hv_appvss_dev`) executing against them.

use std::collections::BTreeMap;
use std::time::Duration;

use hvguest_core::kvp::effect::{EffectId, IoError};
use hvguest_core::vss::app::{AppConfig, AppMachine};
use hvguest_core::vss::effect::{ExitStatus, VssEffect, VssInput, VssResult};
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
    /// How long one `zfs snapshot` takes.
    pub snapshot_takes: Duration,
    /// A program killed at its deadline takes this long to die (`zpool sync` sleeping
    /// in the kernel cannot die at once).
    pub kill_lag: Duration,
    /// How long one UFSSUSPEND takes (it waits for writers to drain).
    pub suspend_takes: Duration,
    /// How long the freezer takes to resume everything (a superblock reload each).
    pub resume_takes: Duration,
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
            app_auto_thaw: Duration::from_secs(45),
            policy_overrides: Vec::new(),
            snapshot_takes: Duration::from_millis(20),
            kill_lag: Duration::ZERO,
            suspend_takes: Duration::from_millis(1),
            resume_takes: Duration::from_millis(1),
        }
    }
}

impl VssSetup {
    /// Sets a per-type action, in the daemon's policy and in the model's overrides.
    pub fn set_policy(&mut self, fstype: &str, action: hvguest_core::vss::policy::FsAction) {
        self.config.policy.by_type.insert(fstype.into(), action);
        self.policy_overrides.push((fstype.into(), action));
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

/// Which party a request is with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    App,
    Daemon,
    AppAfterDaemon,
}

#[derive(Clone, Copy, Debug)]
struct KReq {
    host_id: u64,
    op: VssOp,
    msgid: u64,
    deadline: Instant,
    at: At,
}

/// What the kernel did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KOut {
    ToDaemon([u8; 64]),
    ToApp([u8; 64]),
    HostReply {
        host_id: u64,
        op: VssOp,
        ok: bool,
        timed_out: bool,
    },
    /// A host request dropped: another was pending (no reply at all).
    Dropped {
        host_id: u64,
    },
    /// A write that matched no pending request (late, after the timeout): ignored.
    Ignored {
        from_app: bool,
    },
}

#[derive(Debug, Default)]
pub struct SimVssKernel {
    pub daemon_registered: bool,
    daemon_ever: bool,
    pub app_registered: bool,
    current: Option<KReq>,
}

fn opt_msg(op: VssOp, msgid: u64) -> [u8; 64] {
    OptMsg {
        opt: op as u32,
        status: 0,
        msgid,
    }
    .encode()
}

impl SimVssKernel {
    pub fn pending(&self) -> bool {
        self.current.is_some()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.current.map(|c| c.deadline)
    }

    pub fn open_daemon(&mut self) {
        self.daemon_registered = true;
        self.daemon_ever = true;
    }

    pub fn close_daemon(&mut self) {
        self.daemon_registered = false;
        // A request the daemon had read cannot be answered any more: it times out.
    }

    pub fn host(&mut self, now: Instant, host_id: u64, op: VssOp, out: &mut Vec<KOut>) {
        if self.current.is_some() {
            out.push(KOut::Dropped { host_id });
            return;
        }
        if !self.daemon_registered {
            // Never registered: the message stays in the ring, unanswered. Registered
            // once and gone (the KILLED state): failed at once.
            if self.daemon_ever {
                out.push(KOut::HostReply {
                    host_id,
                    op,
                    ok: false,
                    timed_out: false,
                });
            } else {
                out.push(KOut::Dropped { host_id });
            }
            return;
        }
        let msgid = now.as_nanos().max(1);
        let to_app = self.app_registered && op != VssOp::Thaw;
        let at = if to_app { At::App } else { At::Daemon };
        self.current = Some(KReq {
            host_id,
            op,
            msgid,
            deadline: now.saturating_add(Duration::from_secs(15)),
            at,
        });
        out.push(if to_app {
            KOut::ToApp(opt_msg(op, msgid))
        } else {
            KOut::ToDaemon(opt_msg(op, msgid))
        });
    }

    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<KOut>) {
        if let Some(c) = self.current.filter(|c| c.deadline <= now) {
            self.current = None;
            out.push(KOut::HostReply {
                host_id: c.host_id,
                op: c.op,
                ok: false,
                timed_out: true,
            });
        }
    }

    pub fn daemon_write(&mut self, bytes: &[u8; 64], out: &mut Vec<KOut>) {
        let Some(m) = OptMsg::decode(bytes) else {
            return;
        };
        match self.current {
            Some(c) if c.at == At::Daemon && c.msgid == m.msgid => {
                let ok = m.status == VSS_SUCCESS;
                if c.op == VssOp::Thaw && ok && self.app_registered {
                    self.current = Some(KReq {
                        at: At::AppAfterDaemon,
                        ..c
                    });
                    out.push(KOut::ToApp(opt_msg(c.op, c.msgid)));
                } else {
                    self.current = None;
                    out.push(KOut::HostReply {
                        host_id: c.host_id,
                        op: c.op,
                        ok,
                        timed_out: false,
                    });
                }
            }
            _ => out.push(KOut::Ignored { from_app: false }),
        }
    }

    pub fn app_write(&mut self, bytes: &[u8; 64], out: &mut Vec<KOut>) {
        let Some(m) = OptMsg::decode(bytes) else {
            return;
        };
        // The app device compares the status as a u8 (spec §1.2).
        let ok = (m.status & 0xff) as u8 == VSS_SUCCESS as u8;
        match self.current {
            Some(c) if c.at == At::App && c.msgid == m.msgid => {
                if ok && self.daemon_registered {
                    self.current = Some(KReq {
                        at: At::Daemon,
                        ..c
                    });
                    out.push(KOut::ToDaemon(opt_msg(c.op, c.msgid)));
                } else if ok {
                    // "vss daemon was killed": the host waits for the timer.
                    self.current = Some(KReq {
                        at: At::Daemon,
                        ..c
                    });
                } else {
                    self.current = None;
                    out.push(KOut::HostReply {
                        host_id: c.host_id,
                        op: c.op,
                        ok: false,
                        timed_out: false,
                    });
                }
            }
            Some(c) if c.at == At::AppAfterDaemon && c.msgid == m.msgid => {
                self.current = None;
                out.push(KOut::HostReply {
                    host_id: c.host_id,
                    op: c.op,
                    ok,
                    timed_out: false,
                });
            }
            _ => out.push(KOut::Ignored { from_app: true }),
        }
    }
}

// ------------------------------------------------------------------------------------

/// The freezer process: one suspension per mount, all gone when it exits.
#[derive(Debug, Default)]
pub struct SimFreezer {
    /// Mount → when it was suspended.
    pub held: BTreeMap<String, Instant>,
    pub auto_thaw_at: Option<Instant>,
    /// The freezer process exists (spawned by the first Suspend, gone when it exits).
    pub alive: bool,
    /// The next Suspend never answers (the freezer is stuck).
    pub hang_next: bool,
    pub hung: bool,
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
    // nullfs mount point, which holds nothing of its own).
    for n in 0..prng.below(3) {
        let from = prng.choose(&out).path.clone();
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
    out
}

pub fn policy_snapshot() -> hvguest_core::vss::policy::FsAction {
    hvguest_core::vss::policy::FsAction::Snapshot
}

/// The host's next backup, as a list of (delay, request): usually CHECK, FREEZE, THAW a
/// moment later; sometimes a THAW that never comes, a double FREEZE (with or without a
/// THAW), a lone THAW.
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
        _ => vec![
            (Duration::ZERO, VssOp::Check),
            (ms(0, 50, prng), VssOp::Freeze),
            (ms(200, 4000, prng), VssOp::Thaw),
        ],
    }
}
