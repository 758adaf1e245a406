//! The VSS machines (`vss::machine::VssMachine`, `vss::app::AppMachine`) driven through
//! whole CHECK / FREEZE / THAW exchanges by a small scripted driver.
//!
//! The driver plays the world around a machine: the mount table, the hook directory,
//! programs with scripted exit statuses and run times (killed at their deadline, as the
//! real driver does), and a freezer (Suspend → Done unless a mount is scripted to fail
//! or hang, ResumeAll → Done, KillFreezer → Done followed by `FreezerExited`,
//! PingFreezer → Done while the freezer lives). It keeps its own model of which file
//! systems the freezer holds suspended, answers each effect at its scripted time, fires
//! the machine's timer at `poll_timeout()`, and records every output with the time it
//! came out and whether anything was suspended at that moment.
//!
//! Tests marked `#[ignore = "core bug: ..."]` show behaviour of `core/src/vss` that is
//! wrong today; they pass once it is fixed.
//!
//! docs/protocol/vss.md §1.2 (the 64-byte message), §2 (the kernel's 15 s), §3.7 (what the
//! rewrite must do), §5.3 (hooks), §7 (ZFS), §8 (test vectors).

use std::collections::BTreeMap;
use std::time::Duration;

use hvguest_core::kvp::effect::{EffectId, IoError};
use hvguest_core::time::Instant;
use hvguest_core::vss::app::{AppConfig, AppMachine, AppWork};
use hvguest_core::vss::effect::{ExitStatus, VssEffect, VssInput, VssResult};
use hvguest_core::vss::hooks::{HookEntry, HookFailure, Skip};
use hvguest_core::vss::machine::{Budget, VssConfig, VssEvent, VssMachine, VssOutput};
use hvguest_core::vss::policy::{FsAction, Mount, PolicyError};
use hvguest_core::vss::wire::{
    decode_read, Echo, OptMsg, VssOp, VssRead, IOCHVVSSREAD, IOCHVVSSWRITE, UFSRESUME, UFSSUSPEND,
    VSS_FAIL, VSS_MSG_SIZE, VSS_SUCCESS,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------------------

/// The docs/protocol/vss.md §8.2 msgid: the host's FREEZE arrived at 1700000000.123456789 s.
const MSGID: u64 = 1_700_000_000_123_456_789;
const HOOK_DIR: &str = "/usr/local/etc/hvguest/vss.d";
const APP_CMD: &str = "/usr/local/bin/db-quiesce";
const START: Instant = Instant(1_000_000_000_000);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn mnt(fstype: &str, path: &str, read_only: bool, source: &str) -> Mount {
    Mount {
        fstype: fstype.into(),
        path: path.into(),
        read_only,
        source: source.into(),
        fsid: None,
    }
}

fn hook(name: &str) -> HookEntry {
    HookEntry {
        name: name.into(),
        regular_file: true,
        uid: 0,
        mode: 0o755,
    }
}

/// ZFS root with the usual pseudo file systems.
fn zfs_root_guest() -> Vec<Mount> {
    vec![
        mnt("zfs", "/", false, "zroot/ROOT/default"),
        mnt("devfs", "/dev", false, "devfs"),
        mnt("tmpfs", "/tmp", false, "tmpfs"),
    ]
}

/// UFS root, a deeper UFS mount, a ZFS pool and pseudo file systems.
fn mixed_guest() -> Vec<Mount> {
    vec![
        mnt("ufs", "/", false, "/dev/da0p2"),
        mnt("devfs", "/dev", false, "devfs"),
        mnt("zfs", "/home", false, "zroot/home"),
        mnt("ufs", "/usr/local", false, "/dev/da1p1"),
        mnt("tmpfs", "/tmp", false, "tmpfs"),
    ]
}

/// Listed out of order, with a leftover that is skipped.
fn two_hooks() -> Vec<HookEntry> {
    vec![hook("20-b"), hook("05-old.sample"), hook("10-a")]
}

fn hook_path(name: &str) -> String {
    format!("{HOOK_DIR}/{name}")
}

/// How a program behaves when run.
#[derive(Clone, Debug)]
enum Prog {
    /// Ends with this status after this long (killed at its deadline if that is sooner).
    Exit(ExitStatus, Duration),
    /// Runs until the driver kills it at its deadline.
    UntilKilled,
    /// The driver never reports it (stuck in the kernel, say).
    Hang,
}

/// How the freezer answers one request.
#[derive(Clone, Debug)]
enum FreezerOp {
    Done(Duration),
    Fail(IoError, Duration),
    Hang,
}

/// What an answer does to the driver's model of the freezer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Touch {
    Nothing,
    Suspend(String),
    Resume,
    Kill,
}

#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    id: EffectId,
    result: VssResult,
    touch: Touch,
    /// The freezer incarnation the effect was addressed to.
    gen: u64,
}

#[derive(Clone, Debug)]
struct Rec {
    at: Instant,
    /// The driver's model had a file system suspended when this came out.
    fs_suspended: bool,
    out: VssOutput,
}

trait Machine {
    fn handle(&mut self, now: Instant, input: VssInput);
    fn poll_output(&mut self) -> Option<VssOutput>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn is_idle(&self) -> bool;
}

impl Machine for VssMachine {
    fn handle(&mut self, now: Instant, input: VssInput) {
        VssMachine::handle(self, now, input)
    }
    fn poll_output(&mut self) -> Option<VssOutput> {
        VssMachine::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        VssMachine::poll_timeout(self)
    }
    fn is_idle(&self) -> bool {
        VssMachine::is_idle(self)
    }
}

impl Machine for AppMachine {
    fn handle(&mut self, now: Instant, input: VssInput) {
        AppMachine::handle(self, now, input)
    }
    fn poll_output(&mut self) -> Option<VssOutput> {
        AppMachine::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        AppMachine::poll_timeout(self)
    }
    fn is_idle(&self) -> bool {
        AppMachine::is_idle(self)
    }
}

struct Driver<M: Machine> {
    m: M,
    now: Instant,
    mounts: Vec<Mount>,
    hooks: Vec<HookEntry>,
    /// By full command line (`/path arg`) first, then by program path. `zpool sync` and
    /// `zfs snapshot` are keyed so.
    programs: BTreeMap<String, Prog>,
    /// Per mount; the rest are suspended after 5 ms.
    suspend: BTreeMap<String, FreezerOp>,
    resume: FreezerOp,
    scheduled: Vec<Scheduled>,
    seq: u64,
    /// Bumped whenever the freezer dies: answers addressed to a dead one change nothing.
    gen: u64,
    /// What the freezer holds suspended, in suspension order.
    fs: Vec<String>,
    /// The freezer process exists (answers a ping).
    freezer_alive: bool,
    log: Vec<Rec>,
    /// What the machine did on its own when started.
    startup: Vec<Rec>,
    next_msgid: u64,
    /// The pools' snapshots (`pool@name`): `zfs snapshot` adds, `zfs destroy` removes.
    snapshots: Vec<String>,
}

impl<M: Machine> Driver<M> {
    /// Starts the world around `m` and lets its start-up work run; what that did is
    /// kept in `startup`, and the log starts empty.
    fn with(m: M, mounts: Vec<Mount>, hooks: Vec<HookEntry>) -> Driver<M> {
        let mut d = Driver {
            m,
            now: START,
            mounts,
            hooks,
            programs: BTreeMap::new(),
            suspend: BTreeMap::new(),
            resume: FreezerOp::Done(ms(5)),
            scheduled: Vec::new(),
            seq: 0,
            gen: 0,
            fs: Vec::new(),
            freezer_alive: true,
            log: Vec::new(),
            startup: Vec::new(),
            next_msgid: MSGID,
            snapshots: Vec::new(),
        };
        d.drain();
        d.settle();
        d.startup = std::mem::take(&mut d.log);
        d
    }

    fn program(&mut self, key: &str, p: Prog) {
        self.programs.insert(key.to_string(), p);
    }

    fn run_answer(
        &self,
        full: &str,
        path: &str,
        deadline: Duration,
    ) -> Option<(Duration, VssResult)> {
        let p = self.programs.get(full).or_else(|| self.programs.get(path));
        match p
            .cloned()
            .unwrap_or(Prog::Exit(ExitStatus::Code(0), ms(50)))
        {
            Prog::Exit(_, took) if took > deadline => {
                Some((deadline, VssResult::Exit(ExitStatus::TimedOut)))
            }
            Prog::Exit(status, took) => Some((took, VssResult::Exit(status))),
            Prog::UntilKilled => Some((deadline, VssResult::Exit(ExitStatus::TimedOut))),
            Prog::Hang => None,
        }
    }

    fn freezer_answer(op: &FreezerOp) -> Option<(Duration, VssResult)> {
        match op {
            FreezerOp::Done(d) => Some((*d, VssResult::Done)),
            FreezerOp::Fail(e, d) => Some((*d, VssResult::Failed(*e))),
            FreezerOp::Hang => None,
        }
    }

    fn on_effect(&mut self, id: EffectId, effect: &VssEffect) {
        let (answer, touch) = match effect {
            VssEffect::ListMounts => (
                Some((ms(1), VssResult::Mounts(self.mounts.clone()))),
                Touch::Nothing,
            ),
            VssEffect::ListHooks => (
                Some((ms(1), VssResult::Hooks(self.hooks.clone()))),
                Touch::Nothing,
            ),
            VssEffect::Run { argv, deadline } => (
                self.run_answer(&argv.join(" "), &argv[0], *deadline),
                Touch::Nothing,
            ),
            VssEffect::RunHook {
                dir,
                name,
                arg,
                deadline,
            } => {
                let path = format!("{}/{name}", dir.trim_end_matches('/'));
                (
                    self.run_answer(&format!("{path} {arg}"), &path, *deadline),
                    Touch::Nothing,
                )
            }
            VssEffect::ZpoolSync { deadline, .. } => (
                self.run_answer("zpool sync", "zpool", *deadline),
                Touch::Nothing,
            ),
            VssEffect::ZfsSnapshot { snapshot, deadline } => {
                let answer = self.run_answer("zfs snapshot", "zfs", *deadline);
                if answer
                    .as_ref()
                    .is_some_and(|a| a.1 == VssResult::Exit(ExitStatus::Code(0)))
                {
                    self.snapshots.push(snapshot.clone());
                }
                (answer, Touch::Nothing)
            }
            VssEffect::ListSnapshots { pool, deadline } => {
                let at = format!("{pool}@");
                let names = self
                    .snapshots
                    .iter()
                    .filter(|n| n.starts_with(&at))
                    .cloned()
                    .collect();
                let answer = match self.run_answer("zfs list", "zfs list", *deadline) {
                    Some((took, VssResult::Exit(ExitStatus::Code(0)))) => {
                        Some((took, VssResult::Snapshots(names)))
                    }
                    other => other,
                };
                (answer, Touch::Nothing)
            }
            VssEffect::ZfsDestroy { snapshot, deadline } => {
                let answer = self.run_answer("zfs destroy", "zfs destroy", *deadline);
                if answer
                    .as_ref()
                    .is_some_and(|a| a.1 == VssResult::Exit(ExitStatus::Code(0)))
                {
                    self.snapshots.retain(|n| n != snapshot);
                }
                (answer, Touch::Nothing)
            }
            VssEffect::Suspend { mount, .. } => {
                let op = self
                    .suspend
                    .get(mount)
                    .cloned()
                    .unwrap_or(FreezerOp::Done(ms(5)));
                (Self::freezer_answer(&op), Touch::Suspend(mount.clone()))
            }
            VssEffect::ResumeAll => (Self::freezer_answer(&self.resume), Touch::Resume),
            VssEffect::KillFreezer => (Some((ms(1), VssResult::Done)), Touch::Kill),
            VssEffect::PingFreezer { .. } => {
                let r = if self.freezer_alive {
                    VssResult::Done
                } else {
                    VssResult::Failed(IoError(32))
                };
                (Some((ms(1), r)), Touch::Nothing)
            }
        };
        if let Some((after, result)) = answer {
            self.seq += 1;
            self.scheduled.push(Scheduled {
                at: self.now.saturating_add(after),
                seq: self.seq,
                id,
                result,
                touch,
                gen: self.gen,
            });
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.m.poll_output() {
            if let VssOutput::Effect { id, effect } = &out {
                let (id, effect) = (*id, effect.clone());
                self.on_effect(id, &effect);
            }
            self.log.push(Rec {
                at: self.now,
                fs_suspended: !self.fs.is_empty(),
                out,
            });
        }
    }

    fn input(&mut self, input: VssInput) {
        self.m.handle(self.now, input);
        self.drain();
    }

    fn deliver(&mut self, s: Scheduled) {
        let current = s.gen == self.gen;
        match &s.touch {
            Touch::Suspend(mount) if current && s.result == VssResult::Done => {
                self.fs.push(mount.clone());
                self.freezer_alive = true;
            }
            Touch::Resume if current && s.result == VssResult::Done => self.fs.clear(),
            Touch::Kill if current => {
                self.fs.clear();
                self.gen += 1;
                self.freezer_alive = false;
            }
            _ => {}
        }
        self.input(VssInput::EffectDone {
            id: s.id,
            result: s.result,
        });
        if s.touch == Touch::Kill && current {
            self.input(VssInput::FreezerExited);
        }
    }

    /// Delivers the next scheduled answer or fires the timer, whichever is first (an
    /// answer wins a tie), unless it is later than `limit`.
    fn step(&mut self, limit: Option<Instant>) -> bool {
        let answer = self
            .scheduled
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| (s.at, s.seq))
            .map(|(i, s)| (i, s.at));
        let timer = self.m.poll_timeout();
        let (at, which) = match (answer, timer) {
            (Some((i, a)), Some(t)) if a <= t => (a, Some(i)),
            (Some((i, a)), None) => (a, Some(i)),
            (_, Some(t)) => (t, None),
            (None, None) => return false,
        };
        if limit.is_some_and(|l| at > l) {
            return false;
        }
        self.now = self.now.max(at);
        match which {
            Some(i) => {
                let s = self.scheduled.remove(i);
                self.deliver(s);
            }
            None => self.input(VssInput::Timer),
        }
        true
    }

    /// Runs until the machine is idle (its watchdog does not fire here).
    fn settle(&mut self) {
        for _ in 0..10_000 {
            if self.m.is_idle() {
                return;
            }
            assert!(
                self.step(None),
                "machine busy with nothing scheduled and no timeout at {}",
                self.now
            );
        }
        panic!("no progress after 10000 steps");
    }

    /// Lets time pass up to `t`: answers and timers due by then happen, in order.
    fn advance_to(&mut self, t: Instant) {
        for _ in 0..10_000 {
            if !self.step(Some(t)) {
                self.now = self.now.max(t);
                return;
            }
        }
        panic!("no progress after 10000 steps");
    }

    /// Sends a request read `late` after the host's message arrived; returns its msgid.
    fn send_late(&mut self, opt: u32, late: Duration) -> u64 {
        let msgid = self.next_msgid;
        self.next_msgid += 60_000_000_000;
        let bytes = OptMsg {
            opt,
            status: 0,
            msgid,
        }
        .encode()
        .to_vec();
        let realtime_ns = msgid + u64::try_from(late.as_nanos()).unwrap();
        self.input(VssInput::DeviceRead { bytes, realtime_ns });
        msgid
    }

    /// A fresh request, run to the end.
    fn request(&mut self, op: VssOp) -> u64 {
        let msgid = self.send_late(op as u32, Duration::ZERO);
        self.settle();
        msgid
    }

    /// The freezer process dies (the kernel resumes what it held).
    fn freezer_crash(&mut self) {
        self.freezer_dies_unnoticed();
        self.input(VssInput::FreezerExited);
    }

    /// The freezer process dies; its exit is not reported (yet).
    fn freezer_dies_unnoticed(&mut self) {
        self.fs.clear();
        self.gen += 1;
        self.freezer_alive = false;
    }

    fn mark(&self) -> usize {
        self.log.len()
    }

    /// Effects, device writes and exit since `mark`, one line each.
    fn trace_since(&self, mark: usize) -> Vec<String> {
        self.log[mark..]
            .iter()
            .filter_map(|r| line(&r.out))
            .collect()
    }

    fn trace(&self) -> Vec<String> {
        self.trace_since(0)
    }

    fn events_since(&self, mark: usize) -> Vec<VssEvent> {
        self.log[mark..]
            .iter()
            .filter_map(|r| match &r.out {
                VssOutput::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn events(&self) -> Vec<VssEvent> {
        self.events_since(0)
    }

    /// Index in the log and record of the first output since `mark` matching `f`.
    fn find(&self, mark: usize, f: impl Fn(&VssOutput) -> bool) -> (usize, &Rec) {
        self.log[mark..]
            .iter()
            .enumerate()
            .find(|(_, r)| f(&r.out))
            .map(|(i, r)| (mark + i, r))
            .unwrap_or_else(|| panic!("not found in {:#?}", &self.log[mark..]))
    }

    fn writes_since(&self, mark: usize) -> Vec<(Instant, [u8; VSS_MSG_SIZE])> {
        self.log[mark..]
            .iter()
            .filter_map(|r| match &r.out {
                VssOutput::DeviceWrite(b) => Some((
                    r.at,
                    b.as_slice()
                        .try_into()
                        .expect("FreeBSD answers are 64 bytes"),
                )),
                _ => None,
            })
            .collect()
    }

    /// No event came out while the driver's model had a file system suspended.
    fn assert_no_event_while_suspended(&self) {
        for r in &self.log {
            if let VssOutput::Event(e) = &r.out {
                assert!(
                    !r.fs_suspended,
                    "event {e:?} logged at {} while a file system was suspended",
                    r.at
                );
            }
        }
    }
}

fn line(out: &VssOutput) -> Option<String> {
    match out {
        VssOutput::Effect { effect, .. } => Some(match effect {
            VssEffect::ListMounts => "ListMounts".to_string(),
            VssEffect::ListHooks => "ListHooks".to_string(),
            VssEffect::Run { argv, .. } => format!("Run {}", argv.join(" ")),
            VssEffect::RunHook { dir, name, arg, .. } => {
                format!("Run {}/{name} {arg}", dir.trim_end_matches('/'))
            }
            VssEffect::ZpoolSync { pools, .. } => format!("ZpoolSync {}", pools.join(" ")),
            VssEffect::ZfsSnapshot { snapshot, .. } => format!("ZfsSnapshot {snapshot}"),
            VssEffect::ListSnapshots { pool, .. } => format!("ListSnapshots {pool}"),
            VssEffect::ZfsDestroy { snapshot, .. } => format!("ZfsDestroy {snapshot}"),
            VssEffect::Suspend { mount, .. } => format!("Suspend {mount}"),
            VssEffect::ResumeAll => "ResumeAll".to_string(),
            VssEffect::KillFreezer => "KillFreezer".to_string(),
            VssEffect::PingFreezer { .. } => "PingFreezer".to_string(),
        }),
        VssOutput::DeviceWrite(b) => {
            let m = OptMsg::decode(b).expect("64 bytes");
            let op = VssOp::from_u32(m.opt)
                .map_or_else(|| format!("opt{}", m.opt), |o| o.name().to_string());
            let status = match m.status {
                VSS_SUCCESS => "ok".to_string(),
                VSS_FAIL => "FAIL".to_string(),
                s => format!("status{s}"),
            };
            Some(format!("Write {op} {status}"))
        }
        VssOutput::Exit => Some("Exit".to_string()),
        VssOutput::Event(_) => None,
    }
}

fn daemon_with(mounts: Vec<Mount>, hooks: Option<Vec<HookEntry>>) -> Driver<VssMachine> {
    let cfg = VssConfig {
        hook_dir: hooks.as_ref().map(|_| HOOK_DIR.to_string()),
        ..VssConfig::default()
    };
    Driver::with(
        VssMachine::new(cfg, START),
        mounts,
        hooks.unwrap_or_default(),
    )
}

/// The mixed guest with hooks 10-a and 20-b.
fn mixed_daemon() -> Driver<VssMachine> {
    daemon_with(mixed_guest(), Some(two_hooks()))
}

fn app_with(work: AppWork, hooks: Vec<HookEntry>) -> Driver<AppMachine> {
    let cfg = AppConfig {
        work,
        ..AppConfig::default()
    };
    Driver::with(AppMachine::new(cfg, START), Vec::new(), hooks)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn run_line(name: &str, arg: &str) -> String {
    format!("Run {} {arg}", hook_path(name))
}

/// The successful mixed-guest FREEZE, effect by effect.
fn mixed_freeze_ok() -> Vec<String> {
    vec![
        "ListMounts".into(),
        "ListHooks".into(),
        run_line("10-a", "freeze"),
        run_line("20-b", "freeze"),
        "ZpoolSync zroot".into(),
        "Suspend /usr/local".into(),
        "Suspend /".into(),
        "Write FREEZE ok".into(),
    ]
}

fn msg_bytes(opt: u32, status: u32, msgid: u64) -> [u8; VSS_MSG_SIZE] {
    let mut b = [0u8; VSS_MSG_SIZE];
    b[0..4].copy_from_slice(&opt.to_le_bytes());
    b[4..8].copy_from_slice(&status.to_le_bytes());
    b[8..16].copy_from_slice(&msgid.to_le_bytes());
    b
}

// ---------------------------------------------------------------------------------------
// 1. Wire
// ---------------------------------------------------------------------------------------

/// The docs/protocol/vss.md §8.2 FREEZE READ, byte by byte.
fn spec_freeze_read() -> [u8; VSS_MSG_SIZE] {
    let mut b = [0u8; VSS_MSG_SIZE];
    b[0..4].copy_from_slice(&[0x02, 0x00, 0x00, 0x00]);
    b[4..8].copy_from_slice(&[0x00, 0x00, 0x00, 0x00]);
    b[8..16].copy_from_slice(&[0x15, 0xcd, 0x85, 0x3d, 0xfe, 0x9c, 0x97, 0x17]);
    b
}

#[test]
fn wire_spec_8_1_request_codes() {
    assert_eq!(IOCHVVSSREAD, 0x4040_7602);
    assert_eq!(IOCHVVSSWRITE, 0x8040_7603);
    assert_eq!(UFSSUSPEND, 0x8008_5501);
    assert_eq!(UFSRESUME, 0x2000_5502);
    assert_eq!(VSS_MSG_SIZE, 64);
    assert_eq!((VSS_SUCCESS, VSS_FAIL), (0, 1));
}

#[test]
fn wire_spec_8_2_vectors() {
    assert_eq!(MSGID, 0x1797_9CFE_3D85_CD15);
    let read = spec_freeze_read();
    assert_eq!(
        decode_read(&read),
        VssRead::Request {
            op: VssOp::Freeze,
            msgid: MSGID,
            echo: Echo::FreeBsd(OptMsg::decode(&read).unwrap()),
        }
    );
    let msg = OptMsg::decode(&read).unwrap();
    assert_eq!(
        msg,
        OptMsg {
            opt: 2,
            status: 0,
            msgid: MSGID
        }
    );
    assert_eq!(msg.encode(), read);

    // WRITE success: identical bytes. WRITE failure: bytes 4..8 = 01 00 00 00.
    assert_eq!(msg.reply(true).encode(), read);
    let mut fail = read;
    fail[4..8].copy_from_slice(&[0x01, 0x00, 0x00, 0x00]);
    assert_eq!(msg.reply(false).encode(), fail);

    // Nothing queued: 00 00 00 00 | 01 00 00 00 | 00 x 8 | 00 x 48.
    let mut none = [0u8; VSS_MSG_SIZE];
    none[4] = 0x01;
    assert_eq!(decode_read(&none), VssRead::Nothing);

    // CHECK and THAW use opt 01 and 03.
    let mut check = read;
    check[0] = 0x01;
    assert_eq!(
        decode_read(&check),
        VssRead::Request {
            op: VssOp::Check,
            msgid: MSGID,
            echo: Echo::FreeBsd(OptMsg::decode(&check).unwrap()),
        }
    );
    let mut thaw = read;
    thaw[0] = 0x03;
    assert_eq!(
        decode_read(&thaw),
        VssRead::Request {
            op: VssOp::Thaw,
            msgid: MSGID,
            echo: Echo::FreeBsd(OptMsg::decode(&thaw).unwrap()),
        }
    );
    assert_eq!(msg_bytes(1, 0, MSGID), check);
    assert_eq!(msg_bytes(3, 0, MSGID), thaw);
}

#[test]
fn wire_machine_replies_are_the_spec_bytes() {
    // A single-UFS guest: the whole exchange through the machine, compared byte for byte.
    let mut d = daemon_with(vec![mnt("ufs", "/", false, "/dev/da0p2")], None);
    let read = spec_freeze_read();
    d.input(VssInput::DeviceRead {
        bytes: read.to_vec(),
        realtime_ns: MSGID + 2_000_000,
    });
    d.settle();
    assert_eq!(
        d.trace(),
        s(&["ListMounts", "Suspend /", "Write FREEZE ok"])
    );
    let w = d.writes_since(0);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].1, read, "FREEZE success echoes the READ exactly");

    let mark = d.mark();
    let mut thaw = read;
    thaw[0] = 3;
    d.input(VssInput::DeviceRead {
        bytes: thaw.to_vec(),
        realtime_ns: MSGID + 5_000_000_000,
    });
    d.settle();
    assert_eq!(d.writes_since(mark)[0].1, thaw);

    // A vetoed CHECK: the failure bytes.
    d.mounts.push(mnt("nfs", "/mnt", false, "srv:/export"));
    let mark = d.mark();
    let mut check = read;
    check[0] = 1;
    d.input(VssInput::DeviceRead {
        bytes: check.to_vec(),
        realtime_ns: MSGID,
    });
    d.settle();
    let mut fail = check;
    fail[4] = 1;
    let writes: Vec<[u8; VSS_MSG_SIZE]> = d.writes_since(mark).into_iter().map(|w| w.1).collect();
    assert_eq!(writes, vec![fail]);
}

#[test]
fn wire_invalid_reads_get_a_failure_echo() {
    let cases: [(u32, u64); 8] = [
        (0, 5),
        (4, MSGID),
        (7, 1),
        (0xdead_beef, MSGID),
        (u32::MAX, u64::MAX),
        (1, 0),
        (2, 0),
        (3, 0),
    ];
    for (opt, msgid) in cases {
        let mut d = daemon_with(mixed_guest(), Some(two_hooks()));
        let mut bytes = msg_bytes(opt, 0, msgid).to_vec();
        // Garbage in the reserved part must not matter, nor come back.
        bytes[40] = 0xaa;
        d.input(VssInput::DeviceRead {
            bytes,
            realtime_ns: MSGID,
        });
        d.settle();
        let writes = d.writes_since(0);
        assert_eq!(writes.len(), 1, "opt {opt} msgid {msgid}");
        assert_eq!(
            writes[0].1,
            msg_bytes(opt, VSS_FAIL, msgid),
            "opt {opt} msgid {msgid}"
        );
        assert!(
            !d.log
                .iter()
                .any(|r| matches!(r.out, VssOutput::Effect { .. })),
            "nothing is done"
        );
        assert_eq!(
            d.events(),
            vec![VssEvent::Invalid(Echo::FreeBsd(OptMsg {
                opt,
                status: 0,
                msgid
            }))]
        );
        assert!(d.m.is_idle());

        // The application machine answers the same way.
        let mut a = app_with(AppWork::Command(vec![APP_CMD.into()]), Vec::new());
        a.input(VssInput::DeviceRead {
            bytes: msg_bytes(opt, 0, msgid).to_vec(),
            realtime_ns: MSGID,
        });
        assert_eq!(a.writes_since(0).len(), 1);
        assert_eq!(a.writes_since(0)[0].1, msg_bytes(opt, VSS_FAIL, msgid));
    }
}

#[test]
fn wire_read_with_nonzero_status_or_bad_length_produces_nothing() {
    let mut d = mixed_daemon();
    for status in [1u32, 2, 0x100, u32::MAX] {
        d.input(VssInput::DeviceRead {
            bytes: msg_bytes(2, status, MSGID).to_vec(),
            realtime_ns: MSGID,
        });
    }
    // The "nothing queued" READ of docs/protocol/vss.md §8.2.
    d.input(VssInput::DeviceRead {
        bytes: msg_bytes(0, 1, 0).to_vec(),
        realtime_ns: MSGID,
    });
    for len in [0usize, 16, 63, 65, 128] {
        let mut bytes = vec![0u8; len];
        if len >= 16 {
            bytes[..16].copy_from_slice(&msg_bytes(2, 0, MSGID)[..16]);
        }
        d.input(VssInput::DeviceRead {
            bytes,
            realtime_ns: MSGID,
        });
    }
    assert!(d.log.is_empty(), "{:?}", d.log);
    assert!(d.m.is_idle());
    assert_eq!(d.m.poll_timeout(), None);

    let mut a = app_with(AppWork::Command(vec![APP_CMD.into()]), Vec::new());
    a.input(VssInput::DeviceRead {
        bytes: msg_bytes(2, 1, MSGID).to_vec(),
        realtime_ns: MSGID,
    });
    assert!(a.log.is_empty());
}

#[test]
fn startup_thaws_every_hook_in_reverse() {
    // A predecessor may have died with applications frozen.
    let d = mixed_daemon();
    let trace: Vec<String> = d.startup.iter().filter_map(|r| line(&r.out)).collect();
    assert_eq!(
        trace,
        vec![
            "ListHooks".to_string(),
            run_line("20-b", "thaw"),
            run_line("10-a", "thaw")
        ]
    );
    assert!(d.m.is_idle());
    assert!(!d.m.frozen());
    assert_eq!(d.m.poll_timeout(), None);

    let d = daemon_with(mixed_guest(), None);
    assert!(
        d.startup.is_empty(),
        "no hook directory, nothing to do: {:?}",
        d.startup
    );
}

// ---------------------------------------------------------------------------------------
// 2. CHECK
// ---------------------------------------------------------------------------------------

fn check_with(mounts: Vec<Mount>) -> Driver<VssMachine> {
    let mut d = daemon_with(mounts, Some(two_hooks()));
    d.request(VssOp::Check);
    d
}

#[test]
fn check_zfs_root_guest_passes() {
    let d = check_with(zfs_root_guest());
    assert_eq!(d.trace(), s(&["ListMounts", "Write CHECK ok"]));
    assert!(!d.events().iter().any(|e| matches!(e, VssEvent::Vetoed(_))));
}

#[test]
fn check_two_ufs_passes() {
    let d = check_with(vec![
        mnt("ufs", "/", false, "/dev/da0p2"),
        mnt("ufs", "/var", false, "/dev/da0p3"),
        mnt("devfs", "/dev", false, "devfs"),
    ]);
    assert_eq!(d.trace(), s(&["ListMounts", "Write CHECK ok"]));
}

#[test]
fn check_writable_nfs_fails_with_a_veto() {
    let d = check_with(vec![
        mnt("ufs", "/", false, "/dev/da0p2"),
        mnt("nfs", "/mnt", false, "srv:/export"),
    ]);
    assert_eq!(d.trace(), s(&["ListMounts", "Write CHECK FAIL"]));
    assert!(d.events().contains(&VssEvent::Vetoed(PolicyError::Veto {
        fstype: "nfs".into(),
        path: "/mnt".into()
    })));
}

#[test]
fn check_read_only_nfs_passes() {
    let d = check_with(vec![
        mnt("ufs", "/", false, "/dev/da0p2"),
        mnt("nfs", "/mnt", true, "srv:/export"),
    ]);
    assert_eq!(d.trace(), s(&["ListMounts", "Write CHECK ok"]));
}

#[test]
fn check_empty_mount_table_fails() {
    let d = check_with(Vec::new());
    assert_eq!(d.trace(), s(&["ListMounts", "Write CHECK FAIL"]));
    assert!(d
        .events()
        .contains(&VssEvent::Vetoed(PolicyError::NoMounts)));
}

#[test]
fn check_does_not_suspend_or_run_hooks_and_leaves_nothing_pending() {
    let d = check_with(mixed_guest());
    assert_eq!(d.trace(), s(&["ListMounts", "Write CHECK ok"]));
    assert!(!d.m.frozen());
    assert_eq!(d.m.poll_timeout(), None);
}

// ---------------------------------------------------------------------------------------
// 3. FREEZE
// ---------------------------------------------------------------------------------------

#[test]
fn freeze_runs_hooks_syncs_and_suspends_root_last() {
    let mut d = mixed_daemon();
    let t0 = d.now;
    let msgid = d.request(VssOp::Freeze);
    assert_eq!(d.trace(), mixed_freeze_ok());
    assert!(d.m.frozen());
    assert_eq!(d.m.suspended(), &s(&["/usr/local", "/"])[..]);
    assert_eq!(d.fs, s(&["/usr/local", "/"]));

    // Deadlines within the budget: each hook at most `hook`, all hooks over by
    // `hooks_total` after the first started, sync at most `sync`, and every step over
    // early enough to roll back before the answer is due.
    let b = Budget::default();
    let last_step_end = t0.saturating_add(b.kernel - b.margin - b.rollback);
    let mut first_hook: Option<Instant> = None;
    for r in &d.log {
        if let VssOutput::Effect { effect, .. } = &r.out {
            match effect {
                VssEffect::RunHook { deadline, .. } => {
                    assert!(*deadline <= b.hook, "hook deadline {deadline:?}");
                    let first = *first_hook.get_or_insert(r.at);
                    let ends = r.at.saturating_add(*deadline);
                    assert!(
                        ends <= first.saturating_add(b.hooks_total),
                        "hooks run past their shared budget: {ends}"
                    );
                    assert!(ends <= last_step_end);
                }
                VssEffect::ZpoolSync { pools, deadline } => {
                    assert_eq!(pools, &s(&["zroot"]));
                    assert!(*deadline <= b.sync, "sync deadline {deadline:?}");
                    assert!(r.at.saturating_add(*deadline) <= last_step_end);
                }
                VssEffect::Suspend {
                    auto_thaw_after, ..
                } => {
                    // The freezer's own backstop: not before our watchdog, soon after it.
                    let watchdog = VssConfig::default().watchdog;
                    assert!(
                        *auto_thaw_after >= watchdog && *auto_thaw_after <= watchdog + secs(5),
                        "freezer backstop {auto_thaw_after:?}"
                    );
                }
                _ => {}
            }
        }
    }
    let (_, answer) = d.find(0, |o| matches!(o, VssOutput::DeviceWrite(_)));
    assert!(answer.at <= t0.saturating_add(b.kernel - b.margin));
    assert_eq!(d.writes_since(0)[0].1, msg_bytes(2, 0, msgid));

    // The answer came while both were suspended; every event since the first suspension
    // is held.
    assert!(answer.fs_suspended);
    let (first_suspend, _) = d.find(0, |o| {
        matches!(
            o,
            VssOutput::Effect {
                effect: VssEffect::Suspend { .. },
                ..
            }
        )
    });
    assert!(
        !d.log[first_suspend + 1..]
            .iter()
            .any(|r| matches!(r.out, VssOutput::Event(_))),
        "{:#?}",
        d.log
    );
    assert!(d.events().contains(&VssEvent::HookSkipped {
        name: "05-old.sample".into(),
        why: Skip::Leftover
    }));
    assert!(d.events().contains(&VssEvent::Request {
        op: VssOp::Freeze,
        msgid
    }));

    // THAW: the held events come out after the resume, in order.
    let mark = d.mark();
    d.request(VssOp::Thaw);
    d.assert_no_event_while_suspended();
    let (resume_at, _) = d.find(mark, |o| {
        matches!(
            o,
            VssOutput::Effect {
                effect: VssEffect::ResumeAll,
                ..
            }
        )
    });
    let released = d.events_since(resume_at);
    let want = [
        VssEvent::Suspended {
            mount: "/usr/local".into(),
        },
        VssEvent::Suspended { mount: "/".into() },
        VssEvent::Answered {
            op: VssOp::Freeze,
            msgid,
            ok: true,
        },
    ];
    let pos: Vec<usize> = want
        .iter()
        .map(|w| {
            released
                .iter()
                .position(|e| e == w)
                .unwrap_or_else(|| panic!("{w:?} not in {released:#?}"))
        })
        .collect();
    assert!(
        pos.windows(2).all(|p| p[0] < p[1]),
        "out of order: {released:#?}"
    );
    assert!(released.iter().any(|e| matches!(
        e,
        VssEvent::Request {
            op: VssOp::Thaw,
            ..
        }
    )));
}

#[test]
fn freeze_zfs_only_guest_syncs_and_suspends_nothing() {
    let mut d = daemon_with(zfs_root_guest(), None);
    d.request(VssOp::Freeze);
    assert_eq!(
        d.trace(),
        s(&["ListMounts", "ZpoolSync zroot", "Write FREEZE ok"])
    );
    assert!(d.m.frozen());
    assert!(d.m.suspended().is_empty());
    let mark = d.mark();
    d.request(VssOp::Thaw);
    assert_eq!(d.trace_since(mark), s(&["Write THAW ok"]));
    assert!(!d.m.frozen());
}

#[test]
fn freeze_with_snapshot_policy_snapshots_each_pool() {
    let mut cfg = VssConfig::default();
    cfg.policy.by_type.insert("zfs".into(), FsAction::Snapshot);
    let mounts = vec![
        mnt("zfs", "/", false, "zroot/ROOT/default"),
        mnt("zfs", "/data", false, "tank/data"),
        mnt("ufs", "/boot", false, "/dev/da0p1"),
        mnt("devfs", "/dev", false, "devfs"),
    ];
    let mut d = Driver::with(VssMachine::new(cfg, START), mounts, Vec::new());
    let msgid = d.request(VssOp::Freeze);
    assert_eq!(
        d.trace(),
        vec![
            "ListMounts".to_string(),
            "ZpoolSync tank zroot".into(),
            format!("ZfsSnapshot tank@hvguest-{msgid}"),
            format!("ZfsSnapshot zroot@hvguest-{msgid}"),
            "Suspend /boot".into(),
            "Write FREEZE ok".into(),
        ]
    );
    let taken: Vec<VssEvent> = d
        .events()
        .into_iter()
        .filter(|e| matches!(e, VssEvent::SnapshotTaken { .. }))
        .collect();
    assert_eq!(
        taken,
        vec![
            VssEvent::SnapshotTaken {
                snapshot: format!("tank@hvguest-{msgid}")
            },
            VssEvent::SnapshotTaken {
                snapshot: format!("zroot@hvguest-{msgid}")
            },
        ],
    );
    d.request(VssOp::Thaw);
    d.assert_no_event_while_suspended();
}

#[test]
fn freeze_snapshot_failure_rolls_back() {
    let mut cfg = VssConfig::default();
    cfg.policy.by_type.insert("zfs".into(), FsAction::Snapshot);
    let mounts = vec![
        mnt("zfs", "/", false, "zroot/ROOT/default"),
        mnt("ufs", "/boot", false, "/dev/da0p1"),
    ];
    let mut d = Driver::with(VssMachine::new(cfg, START), mounts, Vec::new());
    d.program("zfs snapshot", Prog::Exit(ExitStatus::Code(1), ms(100)));
    d.request(VssOp::Freeze);
    let trace = d.trace();
    assert_eq!(
        trace.last().map(String::as_str),
        Some("Write FREEZE FAIL"),
        "{trace:?}"
    );
    assert!(!trace.iter().any(|l| l.starts_with("Suspend")), "{trace:?}");
    assert!(!d.m.frozen());
}

#[test]
fn freeze_with_three_quick_hooks_succeeds() {
    let mut hooks = two_hooks();
    hooks.push(hook("30-c"));
    let mut d = daemon_with(mixed_guest(), Some(hooks));
    for h in ["10-a", "20-b", "30-c"] {
        d.program(&hook_path(h), Prog::Exit(ExitStatus::Code(0), ms(10)));
    }
    d.request(VssOp::Freeze);
    assert_eq!(
        d.trace(),
        vec![
            "ListMounts".to_string(),
            "ListHooks".into(),
            run_line("10-a", "freeze"),
            run_line("20-b", "freeze"),
            run_line("30-c", "freeze"),
            "ZpoolSync zroot".into(),
            "Suspend /usr/local".into(),
            "Suspend /".into(),
            "Write FREEZE ok".into(),
        ],
        "three hooks of 10 ms each use 30 ms of the 5 s hook budget"
    );
}

// ---------------------------------------------------------------------------------------
// 4. THAW
// ---------------------------------------------------------------------------------------

#[test]
fn thaw_resumes_then_runs_thaw_hooks_in_reverse() {
    let mut d = mixed_daemon();
    let freeze_id = d.request(VssOp::Freeze);
    let mark = d.mark();
    let msgid = d.request(VssOp::Thaw);
    assert_eq!(
        d.trace_since(mark),
        vec![
            "ResumeAll".to_string(),
            run_line("20-b", "thaw"),
            run_line("10-a", "thaw"),
            "Write THAW ok".into()
        ]
    );
    assert_eq!(d.writes_since(mark)[0].1, msg_bytes(3, 0, msgid));
    assert!(d.events_since(mark).contains(&VssEvent::Resumed {
        mounts: s(&["/usr/local", "/"])
    }));
    assert!(!d.m.frozen());
    assert!(d.m.suspended().is_empty());
    assert!(d.fs.is_empty());
    assert_eq!(d.m.poll_timeout(), None, "no watchdog after THAW");
    assert!(d.events().contains(&VssEvent::Answered {
        op: VssOp::Freeze,
        msgid: freeze_id,
        ok: true
    }));
    d.assert_no_event_while_suspended();
}

#[test]
fn thaw_with_nothing_frozen_is_ok() {
    let mut d = mixed_daemon();
    d.request(VssOp::Thaw);
    assert_eq!(d.trace(), s(&["Write THAW ok"]));

    // And again after a full FREEZE / THAW round.
    d.request(VssOp::Freeze);
    d.request(VssOp::Thaw);
    let mark = d.mark();
    d.request(VssOp::Thaw);
    assert_eq!(d.trace_since(mark), s(&["Write THAW ok"]));
}

#[test]
fn double_freeze_does_not_suspend_twice() {
    let mut d = mixed_daemon();
    d.request(VssOp::Freeze);
    d.advance_to(d.now.saturating_add(secs(5)));
    let mark = d.mark();
    d.request(VssOp::Freeze);
    let trace = d.trace_since(mark);
    assert_eq!(
        trace.last().map(String::as_str),
        Some("Write FREEZE ok"),
        "{trace:?}"
    );
    assert!(
        trace
            .iter()
            .all(|l| !l.starts_with("Suspend") && l != "ResumeAll" && !l.starts_with("Run")),
        "nothing suspended twice, no hook run again: {trace:?}"
    );
    assert_eq!(d.writes_since(mark).len(), 1);
    assert_eq!(d.m.suspended(), &s(&["/usr/local", "/"])[..]);
    assert!(d.m.frozen());
    // The watchdog counts from the second answer.
    let (_, second) = d.find(mark, |o| matches!(o, VssOutput::DeviceWrite(_)));
    assert_eq!(d.m.poll_timeout(), Some(second.at.saturating_add(secs(30))));

    let mark = d.mark();
    d.request(VssOp::Thaw);
    assert_eq!(
        d.trace_since(mark),
        vec![
            "ResumeAll".to_string(),
            run_line("20-b", "thaw"),
            run_line("10-a", "thaw"),
            "Write THAW ok".into()
        ]
    );
    assert!(d.events().contains(&VssEvent::AlreadyFrozen));
    d.assert_no_event_while_suspended();
}

// ---------------------------------------------------------------------------------------
// 5. Hook veto
// ---------------------------------------------------------------------------------------

fn vetoed_trace() -> Vec<String> {
    vec![
        "ListMounts".into(),
        "ListHooks".into(),
        run_line("10-a", "freeze"),
        run_line("20-b", "freeze"),
        "Write FREEZE FAIL".into(),
        run_line("20-b", "thaw"),
        run_line("10-a", "thaw"),
    ]
}

#[test]
fn freeze_hook_exit_1_vetoes_and_thaws_both_hooks() {
    let mut d = mixed_daemon();
    d.program(
        &format!("{} freeze", hook_path("20-b")),
        Prog::Exit(ExitStatus::Code(1), ms(20)),
    );
    d.request(VssOp::Freeze);
    assert_eq!(d.trace(), vetoed_trace());
    assert!(d.events().contains(&VssEvent::HookFailed {
        name: "20-b".into(),
        arg: "freeze",
        status: ExitStatus::Code(1)
    }));
    assert!(!d.m.frozen());
    assert!(d.fs.is_empty());
    assert_eq!(d.m.poll_timeout(), None);
}

#[test]
fn freeze_hook_timeout_vetoes_and_thaws_both_hooks() {
    let mut d = mixed_daemon();
    d.program(
        &format!("{} freeze", hook_path("20-b")),
        Prog::Exit(ExitStatus::TimedOut, ms(900)),
    );
    d.request(VssOp::Freeze);
    assert_eq!(d.trace(), vetoed_trace());
    assert!(d.events().contains(&VssEvent::HookFailed {
        name: "20-b".into(),
        arg: "freeze",
        status: ExitStatus::TimedOut
    }));
    assert!(!d.m.frozen());

    // Same when the driver has to kill it at its deadline.
    let mut d = mixed_daemon();
    d.program(&format!("{} freeze", hook_path("20-b")), Prog::UntilKilled);
    d.request(VssOp::Freeze);
    assert_eq!(d.trace(), vetoed_trace());
    assert!(!d.m.frozen());
}

/// Issue 12: `hook_failure = filesystems`: a freeze hook that exits non-zero or is
/// killed at its deadline does not fail the FREEZE: the later hooks, the sync and the
/// suspensions still run, the answer is OK, the event says which hook, and at THAW
/// every hook, the failed one too, gets its `thaw`.
#[test]
fn hook_failure_filesystems_freezes_anyway_and_still_thaws_the_hook() {
    for (status, prog) in [
        (ExitStatus::Code(3), Prog::Exit(ExitStatus::Code(3), ms(20))),
        (
            ExitStatus::TimedOut,
            Prog::Exit(ExitStatus::TimedOut, ms(900)),
        ),
        (ExitStatus::TimedOut, Prog::UntilKilled),
    ] {
        let cfg = VssConfig {
            hook_dir: Some(HOOK_DIR.to_string()),
            hook_failure: HookFailure::Filesystems,
            ..VssConfig::default()
        };
        let mut d = Driver::with(VssMachine::new(cfg, START), mixed_guest(), two_hooks());
        d.program(&format!("{} freeze", hook_path("10-a")), prog);
        d.request(VssOp::Freeze);
        assert_eq!(d.trace(), mixed_freeze_ok(), "{status:?}");
        assert!(
            d.events().contains(&VssEvent::HookFailureTolerated {
                name: "10-a".into(),
                status
            }),
            "{:?}",
            d.events()
        );
        assert!(!d
            .events()
            .iter()
            .any(|e| matches!(e, VssEvent::HookFailed { .. })));
        assert!(d.m.frozen());
        let mark = d.mark();
        d.request(VssOp::Thaw);
        let thawed = d.trace_since(mark);
        assert_eq!(
            thawed
                .iter()
                .filter(|l| l.starts_with("Run "))
                .collect::<Vec<_>>(),
            [&run_line("20-b", "thaw"), &run_line("10-a", "thaw")],
            "{thawed:?}"
        );
        assert!(!d.m.frozen());
    }
}

// ---------------------------------------------------------------------------------------
// 6. Suspend failure half-way
// ---------------------------------------------------------------------------------------

#[test]
fn suspend_failure_half_way_rolls_back() {
    let mut d = mixed_daemon();
    d.suspend
        .insert("/".into(), FreezerOp::Fail(IoError::EIO, ms(5)));
    d.request(VssOp::Freeze);
    assert_eq!(
        d.trace(),
        vec![
            "ListMounts".to_string(),
            "ListHooks".into(),
            run_line("10-a", "freeze"),
            run_line("20-b", "freeze"),
            "ZpoolSync zroot".into(),
            "Suspend /usr/local".into(),
            "Suspend /".into(),
            "ResumeAll".into(),
            "Write FREEZE FAIL".into(),
            run_line("20-b", "thaw"),
            run_line("10-a", "thaw"),
        ]
    );
    // The failure is answered only once the resume is done.
    let (resume, _) = d.find(0, |o| {
        matches!(
            o,
            VssOutput::Effect {
                effect: VssEffect::ResumeAll,
                ..
            }
        )
    });
    let (_, answer) = d.find(resume, |o| matches!(o, VssOutput::DeviceWrite(_)));
    assert!(!answer.fs_suspended);
    assert!(!d.m.frozen());
    assert!(d.m.suspended().is_empty());
    assert!(d.fs.is_empty());
    assert_eq!(d.m.poll_timeout(), None);
    assert!(d.events().contains(&VssEvent::Resumed {
        mounts: s(&["/usr/local"])
    }));
    d.assert_no_event_while_suspended();

    // A THAW afterwards has nothing to do.
    let mark = d.mark();
    d.request(VssOp::Thaw);
    assert_eq!(d.trace_since(mark), s(&["Write THAW ok"]));
}

// ---------------------------------------------------------------------------------------
// 7. Watchdog
// ---------------------------------------------------------------------------------------

#[test]
fn watchdog_thaws_30_s_after_the_answer() {
    let mut d = mixed_daemon();
    d.request(VssOp::Freeze);
    let (_, answer) = d.find(0, |o| matches!(o, VssOutput::DeviceWrite(_)));
    let due = answer.at.saturating_add(secs(30));
    assert_eq!(d.m.poll_timeout(), Some(due));

    // Nothing happens before.
    let mark = d.mark();
    d.advance_to(Instant(due.0 - 1));
    assert_eq!(d.trace_since(mark), Vec::<String>::new());
    assert!(d.m.frozen());

    d.advance_to(due);
    d.settle();
    assert_eq!(
        d.trace_since(mark),
        vec![
            "ResumeAll".to_string(),
            run_line("20-b", "thaw"),
            run_line("10-a", "thaw")
        ]
    );
    assert!(!d.m.frozen());
    assert!(d.fs.is_empty());
    assert_eq!(d.m.poll_timeout(), None);

    // The event comes out after the resume.
    let (resume, _) = d.find(mark, |o| {
        matches!(
            o,
            VssOutput::Effect {
                effect: VssEffect::ResumeAll,
                ..
            }
        )
    });
    let (wd, rec) = d.find(mark, |o| {
        matches!(o, VssOutput::Event(VssEvent::WatchdogThaw { .. }))
    });
    assert!(wd > resume);
    assert!(!rec.fs_suspended);
    assert!(rec.at > due, "released when the resume was answered");
    assert_eq!(
        rec.out,
        VssOutput::Event(VssEvent::WatchdogThaw {
            frozen_for: secs(30)
        })
    );
    d.assert_no_event_while_suspended();
}

/// Issue 11, Low 6: a host that repeats FREEZE before each watchdog runs out used to
/// keep the file systems suspended for as long as it liked. However often it repeats,
/// the daemon thaws once `VSS_MAX_FROZEN` less the freezer's backstop has passed since
/// its first suspension, and never asks the freezer to hold on past the cap.
#[test]
fn repeated_freeze_cannot_keep_file_systems_suspended_past_the_cap() {
    let cap = hvguest_core::limits::VSS_MAX_FROZEN;
    let backstop = hvguest_core::limits::VSS_FREEZER_BACKSTOP;
    let mut d = mixed_daemon();
    d.request(VssOp::Freeze);
    let (_, first) = d.find(0, |o| {
        matches!(
            o,
            VssOutput::Effect {
                effect: VssEffect::Suspend { .. },
                ..
            }
        )
    });
    let first = first.at;
    // Each repeat comes well inside the watchdog (30 s) of the one before.
    for at in [20, 40, 55] {
        d.advance_to(first.saturating_add(secs(at)));
        let mark = d.mark();
        d.request(VssOp::Freeze);
        assert_eq!(
            d.trace_since(mark).last().map(String::as_str),
            Some("Write FREEZE ok")
        );
    }
    let mark = d.mark();
    d.advance_to(first.saturating_add(secs(200)));
    d.settle();
    let (_, resume) = d.find(mark, |o| {
        matches!(
            o,
            VssOutput::Effect {
                effect: VssEffect::ResumeAll,
                ..
            }
        )
    });
    assert_eq!(
        resume.at,
        first.saturating_add(cap - backstop),
        "resumed {:?} after the first suspension",
        resume.at.saturating_since(first)
    );
    assert!(!d.m.frozen());
    // Every request to the freezer stays inside the cap.
    for r in &d.log {
        match &r.out {
            VssOutput::Effect {
                effect: VssEffect::PingFreezer { auto_thaw_after },
                ..
            }
            | VssOutput::Effect {
                effect:
                    VssEffect::Suspend {
                        auto_thaw_after, ..
                    },
                ..
            } => assert!(
                r.at.saturating_add(*auto_thaw_after) <= first.saturating_add(cap),
                "the freezer told to hold until {:?} after the first suspension",
                r.at.saturating_add(*auto_thaw_after)
                    .saturating_since(first)
            ),
            _ => {}
        }
    }
    assert!(d
        .events()
        .iter()
        .any(|e| matches!(e, VssEvent::FreezeCapReached { .. })));
    d.assert_no_event_while_suspended();
}

// ---------------------------------------------------------------------------------------
// 8. The kernel's deadline
// ---------------------------------------------------------------------------------------

#[test]
fn late_freeze_with_slow_hooks_is_abandoned_in_time() {
    for prog in [Prog::UntilKilled, Prog::Hang] {
        let mut d = mixed_daemon();
        d.program(&hook_path("10-a"), prog.clone());
        d.program(&hook_path("20-b"), prog.clone());
        let t0 = d.now;
        // Read 12 s after the host's message: 3 s of the 15 s left, minus the 1 s margin.
        d.send_late(VssOp::Freeze as u32, secs(12));
        d.settle();
        let trace = d.trace();
        assert_eq!(
            trace[..5],
            vec![
                "ListMounts".to_string(),
                "ListHooks".into(),
                run_line("10-a", "freeze"),
                "Write FREEZE FAIL".into(),
                run_line("10-a", "thaw"),
            ][..],
            "{prog:?}"
        );
        let (_, answer) = d.find(0, |o| matches!(o, VssOutput::DeviceWrite(_)));
        assert!(
            answer.at <= t0.saturating_add(secs(2)),
            "{prog:?}: answered at +{:?}",
            answer.at.saturating_since(t0)
        );
        for r in &d.log {
            if let VssOutput::Effect {
                effect: VssEffect::RunHook { arg, deadline, .. },
                ..
            } = &r.out
            {
                if arg == "freeze" {
                    assert!(
                        *deadline <= secs(1),
                        "{prog:?}: freeze hook deadline {deadline:?}"
                    );
                }
            }
        }
        assert!(!d.m.frozen());
        assert!(d.fs.is_empty());
    }
}

#[test]
fn suspend_that_never_returns_kills_the_freezer_then_fails() {
    let mut d = mixed_daemon();
    d.suspend.insert("/".into(), FreezerOp::Hang);
    d.request(VssOp::Freeze);
    assert_eq!(
        d.trace(),
        vec![
            "ListMounts".to_string(),
            "ListHooks".into(),
            run_line("10-a", "freeze"),
            run_line("20-b", "freeze"),
            "ZpoolSync zroot".into(),
            "Suspend /usr/local".into(),
            "Suspend /".into(),
            "KillFreezer".into(),
            "Write FREEZE FAIL".into(),
            run_line("20-b", "thaw"),
            run_line("10-a", "thaw"),
        ]
    );
    let b = Budget::default();
    let (_, first) = d.find(0, |o| {
        matches!(
            o,
            VssOutput::Effect {
                effect: VssEffect::Suspend { .. },
                ..
            }
        )
    });
    let (kill_i, kill) = d.find(0, |o| {
        matches!(
            o,
            VssOutput::Effect {
                effect: VssEffect::KillFreezer,
                ..
            }
        )
    });
    // Given up when the suspend budget (counted from the first UFSSUSPEND) plus grace ran out.
    assert_eq!(kill.at, first.at.saturating_add(b.suspend + b.grace));
    let (_, answer) = d.find(kill_i, |o| matches!(o, VssOutput::DeviceWrite(_)));
    assert!(answer.at > kill.at, "answered after the freezer was killed");
    assert!(!answer.fs_suspended);
    assert!(answer.at <= START.saturating_add(b.kernel - b.margin));
    assert!(d
        .events()
        .contains(&VssEvent::Abandoned { step: "suspend" }));
    assert!(d.events().contains(&VssEvent::FreezerExited {
        held: s(&["/usr/local"])
    }));
    assert!(!d.m.frozen());
    assert!(d.m.suspended().is_empty());
    assert_eq!(d.m.poll_timeout(), None);
    d.assert_no_event_while_suspended();
}

// ---------------------------------------------------------------------------------------
// 9. The freezer dies while frozen
// ---------------------------------------------------------------------------------------

#[test]
fn freezer_exit_while_frozen_ends_the_freeze() {
    let mut d = mixed_daemon();
    d.request(VssOp::Freeze);
    d.advance_to(d.now.saturating_add(secs(3)));
    let mark = d.mark();
    d.freezer_crash();
    d.settle();
    assert_eq!(
        d.trace_since(mark),
        vec![run_line("20-b", "thaw"), run_line("10-a", "thaw")]
    );
    assert!(!d.m.frozen());
    assert!(d.m.suspended().is_empty());
    assert!(d.events_since(mark).contains(&VssEvent::FreezerExited {
        held: s(&["/usr/local", "/"])
    }));
    assert_eq!(d.m.poll_timeout(), None, "no watchdog left");

    let mark = d.mark();
    d.request(VssOp::Thaw);
    assert_eq!(d.trace_since(mark), s(&["Write THAW ok"]));
    d.assert_no_event_while_suspended();
}

/// FREEZE OK, then a CHECK while frozen; the freezer dies while the CHECK's mount
/// listing runs.
fn check_while_frozen_then_freezer_dies(
    hooks: Option<Vec<HookEntry>>,
) -> (Driver<VssMachine>, usize, u64) {
    let mut d = daemon_with(mixed_guest(), hooks);
    d.request(VssOp::Freeze);
    let mark = d.mark();
    let msgid = d.send_late(VssOp::Check as u32, Duration::ZERO);
    assert_eq!(d.trace_since(mark), s(&["ListMounts"]));
    d.freezer_crash();
    d.settle();
    // Let the mount listing's answer and any timer come in.
    d.advance_to(d.now.saturating_add(secs(20)));
    d.settle();
    (d, mark, msgid)
}

#[test]
fn check_while_frozen_is_answered_even_if_the_freezer_dies_meanwhile() {
    let (d, mark, msgid) = check_while_frozen_then_freezer_dies(None);
    let writes = d.writes_since(mark);
    assert_eq!(writes.len(), 1, "{:?}", d.trace_since(mark));
    assert_eq!(&writes[0].1[0..4], &1u32.to_le_bytes());
    assert_eq!(&writes[0].1[8..16], &msgid.to_le_bytes());
    assert!(!d.m.frozen());
}

#[test]
fn check_while_frozen_with_hooks_survives_the_freezer_dying() {
    let (d, mark, msgid) = check_while_frozen_then_freezer_dies(Some(two_hooks()));
    let writes = d.writes_since(mark);
    assert_eq!(writes.len(), 1, "{:?}", d.trace_since(mark));
    assert_eq!(&writes[0].1[8..16], &msgid.to_le_bytes());
    let trace = d.trace_since(mark);
    assert!(trace.contains(&run_line("20-b", "thaw")) && trace.contains(&run_line("10-a", "thaw")));
    assert!(!d.m.frozen());
}

#[test]
fn freeze_while_frozen_with_a_dead_freezer_is_not_answered_ok() {
    // The freezer died a moment ago and its exit is not reported yet; the host sends
    // FREEZE again. Nothing is suspended, so an OK would be a lie.
    let mut d = mixed_daemon();
    d.request(VssOp::Freeze);
    d.freezer_dies_unnoticed();
    let mark = d.mark();
    d.request(VssOp::Freeze);
    let trace = d.trace_since(mark);
    let writes = d.writes_since(mark);
    assert_eq!(writes.len(), 1, "{trace:?}");
    let ok = writes[0].1[4..8] == [0, 0, 0, 0];
    if ok {
        assert_eq!(
            d.fs,
            s(&["/usr/local", "/"]),
            "FREEZE OK must mean suspended: {trace:?}"
        );
    } else {
        assert!(!d.m.frozen());
        assert!(d.m.suspended().is_empty());
        let tail = &trace[trace.len() - 2..];
        assert_eq!(
            tail,
            &[run_line("20-b", "thaw"), run_line("10-a", "thaw")][..],
            "{trace:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 10. Shutdown
// ---------------------------------------------------------------------------------------

#[test]
fn shutdown_while_frozen_thaws_then_exits() {
    let mut d = mixed_daemon();
    d.request(VssOp::Freeze);
    let mark = d.mark();
    d.input(VssInput::Shutdown);
    for _ in 0..100 {
        if d.log.last().is_some_and(|r| r.out == VssOutput::Exit) {
            break;
        }
        assert!(d.step(None));
    }
    assert_eq!(
        d.trace_since(mark),
        vec![
            "ResumeAll".to_string(),
            run_line("20-b", "thaw"),
            run_line("10-a", "thaw"),
            "Exit".into()
        ]
    );
    assert!(d.fs.is_empty());
    d.assert_no_event_while_suspended();

    // After exiting, nothing more.
    let mark = d.mark();
    d.send_late(VssOp::Freeze as u32, Duration::ZERO);
    assert!(d.log[mark..].is_empty());
}

#[test]
fn shutdown_while_idle_exits_at_once() {
    let mut d = mixed_daemon();
    d.input(VssInput::Shutdown);
    assert_eq!(d.trace(), s(&["Exit"]));
}

#[test]
fn shutdown_during_freeze_does_not_answer_ok() {
    // SIGTERM while the freeze hooks run: the host must not be told "frozen" by a daemon
    // that resumes everything a moment later.
    let mut d = mixed_daemon();
    d.program(&hook_path("10-a"), Prog::Exit(ExitStatus::Code(0), secs(2)));
    d.send_late(VssOp::Freeze as u32, Duration::ZERO);
    d.advance_to(d.now.saturating_add(secs(1)));
    d.input(VssInput::Shutdown);
    for _ in 0..100 {
        if d.log.last().is_some_and(|r| r.out == VssOutput::Exit) {
            break;
        }
        assert!(d.step(None));
    }
    let trace = d.trace();
    assert_eq!(trace.last().map(String::as_str), Some("Exit"), "{trace:?}");
    assert!(d.fs.is_empty());
    assert!(
        trace.contains(&"Write FREEZE FAIL".to_string()),
        "FREEZE answered OK and thawed at once: {trace:?}"
    );
}

#[test]
fn app_shutdown_while_frozen_thaws_then_exits() {
    let mut d = app_cmd();
    d.request(VssOp::Freeze);
    let mark = d.mark();
    d.input(VssInput::Shutdown);
    for _ in 0..100 {
        if d.log.last().is_some_and(|r| r.out == VssOutput::Exit) {
            break;
        }
        assert!(d.step(None));
    }
    assert_eq!(
        d.trace_since(mark),
        vec![format!("Run {APP_CMD} thaw"), "Exit".into()]
    );
}

// ---------------------------------------------------------------------------------------
// 11. The application device
// ---------------------------------------------------------------------------------------

fn app_cmd() -> Driver<AppMachine> {
    app_with(AppWork::Command(vec![APP_CMD.into()]), Vec::new())
}

#[test]
fn app_command_check_freeze_thaw() {
    let mut d = app_cmd();
    d.request(VssOp::Check);
    assert_eq!(d.trace(), s(&["Write CHECK ok"]));

    let mark = d.mark();
    let msgid = d.request(VssOp::Freeze);
    assert_eq!(
        d.trace_since(mark),
        vec![format!("Run {APP_CMD} freeze"), "Write FREEZE ok".into()]
    );
    assert_eq!(d.writes_since(mark)[0].1, msg_bytes(2, 0, msgid));
    assert!(d.m.frozen());

    let mark = d.mark();
    d.request(VssOp::Thaw);
    assert_eq!(
        d.trace_since(mark),
        vec![format!("Run {APP_CMD} thaw"), "Write THAW ok".into()]
    );
    assert!(!d.m.frozen());
    assert_eq!(d.m.poll_timeout(), None);
    // The freeze work leaves the daemon its share of the kernel's 15 s; thaw is bounded.
    let (cfg, b) = (AppConfig::default(), Budget::default());
    for r in &d.log {
        if let VssOutput::Effect {
            effect: VssEffect::Run { argv, deadline },
            ..
        } = &r.out
        {
            if argv[1] == "freeze" {
                assert!(*deadline <= cfg.freeze_budget, "{deadline:?}");
                assert!(
                    *deadline + b.grace <= b.kernel - b.margin - cfg.daemon_reserve,
                    "{deadline:?}"
                );
            } else {
                assert!(*deadline <= b.thaw_hook, "{deadline:?}");
            }
        }
    }
}

#[test]
fn app_auto_thaws_30_s_after_freeze() {
    // Configured as in the brief: auto-thaw 30 s after the FREEZE answer.
    let cfg = AppConfig {
        work: AppWork::Command(vec![APP_CMD.into()]),
        auto_thaw: secs(30),
        ..AppConfig::default()
    };
    let mut d = Driver::with(AppMachine::new(cfg, START), Vec::new(), Vec::new());
    app_auto_thaw_after(&mut d, secs(30));
}

#[test]
fn app_default_auto_thaw_comes_after_the_daemon_resumed() {
    // The kernel thaws the file systems before the application: so does the default
    // auto-thaw, after the daemon's watchdog and its freezer's backstop.
    let daemon = VssConfig::default().watchdog;
    let auto = AppConfig::default().auto_thaw;
    assert!(
        auto > daemon + secs(1),
        "app auto-thaw {auto:?}, daemon watchdog {daemon:?}"
    );
    assert!(auto <= secs(60), "well below a minute or so: {auto:?}");
    let mut d = app_cmd();
    app_auto_thaw_after(&mut d, auto);
}

fn app_auto_thaw_after(d: &mut Driver<AppMachine>, after: Duration) {
    d.request(VssOp::Freeze);
    let (_, answer) = d.find(0, |o| matches!(o, VssOutput::DeviceWrite(_)));
    let due = answer.at.saturating_add(after);
    assert_eq!(d.m.poll_timeout(), Some(due));
    let mark = d.mark();
    d.advance_to(Instant(due.0 - 1));
    assert!(d.trace_since(mark).is_empty());
    assert!(d.m.frozen());
    d.advance_to(due);
    d.settle();
    assert_eq!(d.trace_since(mark), vec![format!("Run {APP_CMD} thaw")]);
    assert!(d
        .events_since(mark)
        .iter()
        .any(|e| matches!(e, VssEvent::WatchdogThaw { .. })));
    assert!(!d.m.frozen());
    assert_eq!(d.m.poll_timeout(), None);

    // A late THAW after the auto-thaw: nothing to run, OK.
    let mark = d.mark();
    d.request(VssOp::Thaw);
    assert_eq!(d.trace_since(mark), s(&["Write THAW ok"]));
}

#[test]
fn app_command_failure_on_freeze_fails_and_thaws() {
    let mut d = app_cmd();
    d.program(
        &format!("{APP_CMD} freeze"),
        Prog::Exit(ExitStatus::Code(1), ms(30)),
    );
    d.request(VssOp::Freeze);
    assert_eq!(
        d.trace(),
        vec![
            format!("Run {APP_CMD} freeze"),
            "Write FREEZE FAIL".into(),
            format!("Run {APP_CMD} thaw")
        ]
    );
    assert!(d.events().iter().any(|e| matches!(
        e,
        VssEvent::HookFailed {
            arg: "freeze",
            status: ExitStatus::Code(1),
            ..
        }
    )));
    assert!(!d.m.frozen());
    assert_eq!(d.m.poll_timeout(), None);
}

#[test]
fn app_hook_dir_runs_in_order_and_thaws_in_reverse() {
    let mut d = app_with(AppWork::HookDir(format!("{HOOK_DIR}/")), two_hooks());
    d.request(VssOp::Freeze);
    assert_eq!(
        d.trace(),
        vec![
            "ListHooks".to_string(),
            run_line("10-a", "freeze"),
            run_line("20-b", "freeze"),
            "Write FREEZE ok".into()
        ]
    );
    assert!(d.events().contains(&VssEvent::HookSkipped {
        name: "05-old.sample".into(),
        why: Skip::Leftover
    }));
    let mark = d.mark();
    d.request(VssOp::Thaw);
    assert_eq!(
        d.trace_since(mark),
        vec![
            run_line("20-b", "thaw"),
            run_line("10-a", "thaw"),
            "Write THAW ok".into()
        ]
    );
    assert!(!d.m.frozen());
}

#[test]
fn app_hook_dir_failure_thaws_only_the_started_hooks() {
    let mut d = app_with(AppWork::HookDir(HOOK_DIR.into()), two_hooks());
    d.program(&format!("{} freeze", hook_path("10-a")), Prog::UntilKilled);
    d.request(VssOp::Freeze);
    assert_eq!(
        d.trace(),
        vec![
            "ListHooks".to_string(),
            run_line("10-a", "freeze"),
            "Write FREEZE FAIL".into(),
            run_line("10-a", "thaw")
        ]
    );
    assert!(!d.m.frozen());
}

#[test]
fn app_thaw_hook_failure_names_the_hook() {
    let mut d = app_with(AppWork::HookDir(HOOK_DIR.into()), two_hooks());
    d.program(
        &format!("{} thaw", hook_path("20-b")),
        Prog::Exit(ExitStatus::Code(3), ms(10)),
    );
    d.request(VssOp::Freeze);
    let mark = d.mark();
    d.request(VssOp::Thaw);
    assert_eq!(
        d.trace_since(mark),
        vec![
            run_line("20-b", "thaw"),
            run_line("10-a", "thaw"),
            "Write THAW ok".into()
        ]
    );
    let failed: Vec<VssEvent> = d
        .events_since(mark)
        .into_iter()
        .filter(|e| matches!(e, VssEvent::HookFailed { .. }))
        .collect();
    assert_eq!(failed.len(), 1);
    let VssEvent::HookFailed { name, arg, status } = &failed[0] else {
        unreachable!()
    };
    assert_eq!((*arg, *status), ("thaw", ExitStatus::Code(3)));
    assert!(
        name.ends_with("20-b"),
        "HookFailed names {name:?}, not the thaw hook that failed"
    );
}

// ---------------------------------------------------------------------------------------
// 12. Random inputs
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Act {
    Read {
        opt: u32,
        status: u32,
        msgid: u64,
        late_ms: u64,
        backwards: bool,
        short: bool,
    },
    /// Answers the latest effect: `None` with its success, or with this result.
    Answer(Option<VssResult>),
    /// An answer to an effect that is not in flight.
    Stale(u64),
    Wait(u64),
    /// Jump to `poll_timeout()`.
    Due,
    FreezerCrash,
    /// Answers effects with success until none is left (reaches deep states quickly).
    Settle,
    Shutdown,
}

fn fuzz_mounts() -> Vec<Mount> {
    vec![
        mnt("ufs", "/", false, "/dev/da0p2"),
        mnt("ufs", "/var", false, "/dev/da0p3"),
        mnt("zfs", "/home", false, "zroot/home"),
        mnt("devfs", "/dev", false, "devfs"),
    ]
}

fn act() -> impl Strategy<Value = Act> {
    let opt = prop_oneof![6 => 1u32..=3, 1 => Just(0u32), 1 => 4u32..=8, 1 => any::<u32>()];
    let status = prop_oneof![6 => Just(0u32), 1 => Just(1u32), 1 => any::<u32>()];
    let msgid = prop_oneof![
        1 => Just(0u64),
        6 => (1u64..=6).prop_map(|k| MSGID + k * 1_000_000_000),
        1 => any::<u64>(),
    ];
    let read = (
        opt,
        status,
        msgid,
        0u64..20_000,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(opt, status, msgid, late_ms, backwards, short)| Act::Read {
                opt,
                status,
                msgid,
                late_ms,
                backwards,
                short,
            },
        );
    let raw = prop_oneof![
        Just(VssResult::Done),
        Just(VssResult::Failed(IoError::EIO)),
        Just(VssResult::Exit(ExitStatus::Code(0))),
        Just(VssResult::Exit(ExitStatus::Code(1))),
        Just(VssResult::Exit(ExitStatus::Signal(9))),
        Just(VssResult::Exit(ExitStatus::TimedOut)),
        Just(VssResult::Exit(ExitStatus::NotStarted(IoError::EIO))),
        Just(VssResult::Mounts(Vec::new())),
        Just(VssResult::Mounts(vec![mnt("nfs", "/mnt", false, "srv:/x")])),
        Just(VssResult::Hooks(Vec::new())),
    ];
    prop_oneof![
        4 => read,
        8 => Just(Act::Answer(None)),
        2 => raw.prop_map(|r| Act::Answer(Some(r))),
        1 => (0u64..3).prop_map(Act::Stale),
        2 => (0u64..40_000).prop_map(Act::Wait),
        2 => Just(Act::Due),
        1 => Just(Act::FreezerCrash),
        2 => Just(Act::Settle),
        1 => Just(Act::Shutdown),
    ]
}

struct Fuzz {
    m: VssMachine,
    now: Instant,
    /// The latest effect, not yet answered, with the freezer incarnation it went to.
    latest: Option<(EffectId, VssEffect, u64)>,
    last_id: u64,
    gen: u64,
    fs: Vec<String>,
    /// KillFreezer was issued; its `FreezerExited` is still to be reported.
    exit_pending: bool,
    /// The machine said `Exit`: it ignores everything from then on.
    exited: bool,
    /// The machine exited at its exit limit (`ExitLimit`), leaving work undone.
    gave_up: bool,
    asked: BTreeMap<(u32, u64), usize>,
    answered: BTreeMap<(u32, u64), usize>,
    /// Skip `FreezerCrash` while a CHECK runs over a frozen state (a known core bug).
    avoid_check_crash: bool,
}

impl Fuzz {
    fn new(avoid_check_crash: bool) -> Fuzz {
        let cfg = VssConfig {
            hook_dir: Some(HOOK_DIR.into()),
            ..VssConfig::default()
        };
        let mut f = Fuzz {
            m: VssMachine::new(cfg, START),
            now: START,
            latest: None,
            last_id: 0,
            gen: 0,
            fs: Vec::new(),
            exit_pending: false,
            exited: false,
            gave_up: false,
            asked: BTreeMap::new(),
            answered: BTreeMap::new(),
            avoid_check_crash,
        };
        // Start-up work (thaw hooks a predecessor may have left) comes out of `new`.
        f.drain();
        f
    }

    fn input(&mut self, i: VssInput) {
        self.m.handle(self.now, i);
        self.drain();
    }

    fn drain(&mut self) {
        let outs: Vec<VssOutput> = std::iter::from_fn(|| self.m.poll_output()).collect();
        // The exit limit passed during a shutdown: the machine says what it leaves
        // undone (its held log lines too) and exits; closing the freezer resumes what is
        // still suspended, and the kernel answers what is unanswered at its deadline
        // (`VssMachine::give_up`, by design).
        if outs
            .iter()
            .any(|o| matches!(o, VssOutput::Event(VssEvent::ExitLimit { .. })))
        {
            self.fs.clear();
            self.gave_up = true;
        }
        for out in outs {
            match out {
                VssOutput::Effect { id, effect } => {
                    if effect == VssEffect::KillFreezer {
                        // The driver kills it at once; its exit is reported later.
                        self.fs.clear();
                        self.gen += 1;
                        self.exit_pending = true;
                    }
                    self.last_id = self.last_id.max(id.0);
                    self.latest = Some((id, effect, self.gen));
                }
                VssOutput::DeviceWrite(b) => {
                    assert!(
                        b[16..].iter().all(|&x| x == 0),
                        "reserved bytes not zero: {b:?}"
                    );
                    let msg = OptMsg::decode(&b).unwrap();
                    assert!(
                        msg.status == VSS_SUCCESS || msg.status == VSS_FAIL,
                        "status {}",
                        msg.status
                    );
                    *self.answered.entry((msg.opt, msg.msgid)).or_default() += 1;
                    if msg.status == VSS_SUCCESS && msg.opt == VssOp::Freeze as u32 {
                        let mut held = self.fs.clone();
                        held.sort();
                        assert_eq!(
                            held,
                            s(&["/", "/var"]),
                            "FREEZE answered OK without every UFS suspended"
                        );
                    }
                    if msg.status == VSS_SUCCESS && msg.opt == VssOp::Thaw as u32 {
                        assert!(
                            self.fs.is_empty(),
                            "THAW answered OK with {:?} still suspended",
                            self.fs
                        );
                    }
                }
                VssOutput::Event(e) => {
                    assert!(
                        self.fs.is_empty(),
                        "event {e:?} while {:?} suspended",
                        self.fs
                    );
                }
                VssOutput::Exit => {
                    assert!(!self.exited, "second Exit");
                    self.exited = true;
                    assert!(self.fs.is_empty(), "exit with {:?} suspended", self.fs);
                    assert!(!self.m.frozen() && self.m.suspended().is_empty());
                    if !self.gave_up {
                        assert_eq!(self.asked, self.answered, "exit with a request unanswered");
                    }
                }
            }
        }
    }

    fn success(effect: &VssEffect) -> VssResult {
        match effect {
            VssEffect::ListMounts => VssResult::Mounts(fuzz_mounts()),
            VssEffect::ListHooks => VssResult::Hooks(two_hooks()),
            VssEffect::ListSnapshots { .. } => VssResult::Snapshots(Vec::new()),
            VssEffect::Run { .. }
            | VssEffect::ZfsDestroy { .. }
            | VssEffect::RunHook { .. }
            | VssEffect::ZpoolSync { .. }
            | VssEffect::ZfsSnapshot { .. } => VssResult::Exit(ExitStatus::Code(0)),
            VssEffect::Suspend { .. }
            | VssEffect::ResumeAll
            | VssEffect::KillFreezer
            | VssEffect::PingFreezer { .. } => VssResult::Done,
        }
    }

    fn answer(&mut self, with: Option<VssResult>) {
        let Some((id, effect, gen)) = self.latest.take() else {
            return;
        };
        let result = with.unwrap_or_else(|| Fuzz::success(&effect));
        let current = gen == self.gen;
        match &effect {
            VssEffect::Suspend { mount, .. } if current && result == VssResult::Done => {
                self.fs.push(mount.clone())
            }
            VssEffect::ResumeAll if current && result == VssResult::Done => self.fs.clear(),
            // A ping answers anything but `Done` only when the freezer has gone: make the
            // world agree (the kernel resumed what it held; its exit is reported later).
            VssEffect::PingFreezer { .. } if current && result != VssResult::Done => {
                self.fs.clear();
                self.gen += 1;
                self.exit_pending = true;
            }
            _ => {}
        }
        self.input(VssInput::EffectDone { id, result });
        if effect == VssEffect::KillFreezer {
            self.report_exit();
        }
    }

    fn report_exit(&mut self) {
        if self.exit_pending {
            self.exit_pending = false;
            self.input(VssInput::FreezerExited);
        }
    }

    fn apply(&mut self, a: &Act) {
        if !matches!(a, Act::Answer(_)) {
            self.report_exit();
        }
        match a {
            Act::Read {
                opt,
                status,
                msgid,
                late_ms,
                backwards,
                short,
            } => {
                let mut bytes = OptMsg {
                    opt: *opt,
                    status: *status,
                    msgid: *msgid,
                }
                .encode()
                .to_vec();
                if *short {
                    bytes.pop();
                } else if *status == 0 && !self.exited {
                    *self.asked.entry((*opt, *msgid)).or_default() += 1;
                }
                let realtime_ns = if *backwards {
                    msgid.saturating_sub(late_ms * 1_000_000)
                } else {
                    msgid.saturating_add(late_ms * 1_000_000)
                };
                self.input(VssInput::DeviceRead { bytes, realtime_ns });
            }
            Act::Answer(r) => self.answer(r.clone()),
            Act::Stale(k) => {
                let id = EffectId(self.last_id + 1 + k);
                self.input(VssInput::EffectDone {
                    id,
                    result: VssResult::Done,
                });
            }
            Act::Wait(ms) => {
                self.now = self.now.saturating_add(Duration::from_millis(*ms));
                self.input(VssInput::Timer);
            }
            Act::Due => {
                if let Some(t) = self.m.poll_timeout() {
                    self.now = self.now.max(t);
                    self.input(VssInput::Timer);
                }
            }
            Act::FreezerCrash => {
                if self.avoid_check_crash && self.m.frozen() && !self.m.is_idle() {
                    return;
                }
                self.fs.clear();
                self.gen += 1;
                self.exit_pending = false;
                self.input(VssInput::FreezerExited);
            }
            Act::Shutdown => self.input(VssInput::Shutdown),
            Act::Settle => {
                for _ in 0..100 {
                    if self.latest.is_none() {
                        break;
                    }
                    self.answer(None);
                }
            }
        }
    }

    /// Answers everything with success and lets every timer fire, watchdog included.
    fn finish(&mut self) {
        self.report_exit();
        for _ in 0..10_000 {
            if self.exited {
                break;
            }
            if self.latest.is_some() {
                self.answer(None);
                continue;
            }
            match self.m.poll_timeout() {
                Some(t) => {
                    self.now = self.now.max(t);
                    self.input(VssInput::Timer);
                }
                None => break,
            }
        }
        if self.exited {
            return;
        }
        assert!(
            self.latest.is_none() && self.m.poll_timeout().is_none(),
            "did not come to rest"
        );
        assert!(self.m.is_idle());
        assert!(!self.m.frozen());
        assert!(
            self.m.suspended().is_empty(),
            "machine thinks {:?} suspended",
            self.m.suspended()
        );
        assert!(self.fs.is_empty(), "{:?} left suspended", self.fs);
        assert_eq!(
            self.asked, self.answered,
            "every request answered exactly once, opt and msgid echoed"
        );
    }
}

fn fuzz_run(acts: &[Act], avoid_check_crash: bool) {
    let mut f = Fuzz::new(avoid_check_crash);
    for a in acts {
        f.apply(a);
    }
    f.finish();
}

proptest! {
    // 1000 cases by default (a few seconds in debug builds); PROPTEST_CASES=N for more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random reads, results, timers and freezer deaths (any time, a CHECK running on a
    /// frozen guest included) keep every invariant.
    #[test]
    fn random_inputs_keep_the_invariants_with_any_freezer_death(acts in prop::collection::vec(act(), 0..60)) {
        fuzz_run(&acts, false);
    }
}

// ---------------------------------------------------------------------------------------
// Driver failures handed to the machine: the device fails, an answer is lost
// ---------------------------------------------------------------------------------------

/// The first run of `hook 10-a freeze` has started: the FREEZE is half way.
fn half_way_through_freeze(d: &mut Driver<VssMachine>) {
    d.program(
        &format!("{} freeze", hook_path("20-b")),
        Prog::Exit(ExitStatus::Code(0), ms(500)),
    );
    d.send_late(VssOp::Freeze as u32, Duration::ZERO);
    // List mounts, list hooks, 10-a (50 ms): 20-b is running now.
    d.advance_to(d.now.saturating_add(ms(200)));
    assert!(
        d.trace().contains(&run_line("20-b", "freeze")),
        "{:?}",
        d.trace()
    );
}

#[test]
fn device_failure_during_freeze_rolls_back_runs_thaw_hooks_and_exits() {
    let mut d = mixed_daemon();
    half_way_through_freeze(&mut d);
    let mark = d.mark();
    d.input(VssInput::DeviceFailed(IoError::EIO));
    d.settle();
    assert_eq!(
        d.trace_since(mark),
        vec![
            "Write FREEZE FAIL".to_string(),
            run_line("20-b", "thaw"),
            run_line("10-a", "thaw"),
            "Exit".into()
        ]
    );
    assert!(d.events().contains(&VssEvent::DeviceFailed(IoError::EIO)));
    assert!(d.fs.is_empty());
    assert!(!d.trace().contains(&"Write FREEZE ok".to_string()));
}

#[test]
fn device_failure_while_frozen_thaws_then_exits() {
    let mut d = mixed_daemon();
    d.request(VssOp::Freeze);
    assert!(d.m.frozen());
    let mark = d.mark();
    d.input(VssInput::DeviceFailed(IoError(6)));
    d.settle();
    assert_eq!(
        d.trace_since(mark),
        vec![
            "ResumeAll".to_string(),
            run_line("20-b", "thaw"),
            run_line("10-a", "thaw"),
            "Exit".into()
        ]
    );
    assert!(d.fs.is_empty());
    assert!(!d.m.frozen());
    // Gone: nothing more is read or done.
    let mark = d.mark();
    d.send_late(VssOp::Freeze as u32, Duration::ZERO);
    assert!(d.trace_since(mark).is_empty());
}

/// Issue 11, Low 7: after the device fails (or SIGTERM) the machine runs on without
/// the device to thaw what it froze, but within `VSS_EXIT_LIMIT`: thaw hooks that
/// would take longer are given up, said so, and the machine exits.
#[test]
fn after_a_device_failure_the_thaw_is_given_up_at_the_exit_limit() {
    let limit = hvguest_core::limits::VSS_EXIT_LIMIT;
    let hooks: Vec<HookEntry> = (0..12).map(|i| hook(&format!("{i:02}-slow"))).collect();
    let mut d = daemon_with(mixed_guest(), Some(hooks.clone()));
    for h in &hooks {
        d.program(&format!("{} thaw", hook_path(&h.name)), Prog::UntilKilled);
    }
    d.request(VssOp::Freeze);
    assert!(d.m.frozen());
    let failed_at = d.now;
    let mark = d.mark();
    d.input(VssInput::DeviceFailed(IoError::EIO));
    d.settle();
    let (_, exit) = d.find(mark, |o| *o == VssOutput::Exit);
    assert!(
        exit.at <= failed_at.saturating_add(limit),
        "exited {:?} after the device failed",
        exit.at.saturating_since(failed_at)
    );
    assert!(d.fs.is_empty(), "resumed first");
    let gave_up = d.events_since(mark).into_iter().find_map(|e| match e {
        VssEvent::ExitLimit { unthawed, .. } => Some(unthawed),
        _ => None,
    });
    let unthawed = gave_up.expect("an event names what was given up");
    assert!(
        !unthawed.is_empty() && unthawed.len() < hooks.len(),
        "{unthawed:?}"
    );
}

#[test]
fn app_after_a_device_failure_the_thaw_is_given_up_at_the_exit_limit() {
    let limit = hvguest_core::limits::VSS_EXIT_LIMIT;
    let hooks: Vec<HookEntry> = (0..12).map(|i| hook(&format!("{i:02}-slow"))).collect();
    let mut a = app_with(AppWork::HookDir(HOOK_DIR.into()), hooks.clone());
    for h in &hooks {
        a.program(&format!("{} thaw", hook_path(&h.name)), Prog::UntilKilled);
    }
    a.request(VssOp::Freeze);
    assert!(a.m.frozen());
    let failed_at = a.now;
    let mark = a.mark();
    a.input(VssInput::DeviceFailed(IoError::EIO));
    a.settle();
    let (_, exit) = a.find(mark, |o| *o == VssOutput::Exit);
    assert!(
        exit.at <= failed_at.saturating_add(limit),
        "exited {:?} after the device failed",
        exit.at.saturating_since(failed_at)
    );
    assert!(a
        .events_since(mark)
        .iter()
        .any(|e| matches!(e, VssEvent::ExitLimit { .. })));
}

#[test]
fn device_failure_while_idle_exits_at_once() {
    let mut d = mixed_daemon();
    d.input(VssInput::DeviceFailed(IoError::EIO));
    assert_eq!(d.trace(), s(&["Exit"]));
}

#[test]
fn a_lost_ok_to_freeze_thaws_at_once() {
    let mut d = mixed_daemon();
    let msgid = d.request(VssOp::Freeze);
    let (_, ok) = d.writes_since(0)[0];
    assert_eq!(ok, msg_bytes(VssOp::Freeze as u32, VSS_SUCCESS, msgid));
    let mark = d.mark();
    d.input(VssInput::AnswerLost {
        bytes: ok.to_vec(),
        error: IoError::EIO,
    });
    d.settle();
    assert_eq!(
        d.trace_since(mark),
        vec![
            "ResumeAll".to_string(),
            run_line("20-b", "thaw"),
            run_line("10-a", "thaw"),
        ]
    );
    assert!(d.events_since(mark).contains(&VssEvent::AnswerLost {
        msgid,
        error: IoError::EIO
    }));
    assert!(!d.m.frozen());
    assert!(d.fs.is_empty());
    assert_eq!(d.m.poll_timeout(), None, "no watchdog left");
    // The host's THAW, when it comes, finds nothing frozen.
    let mark = d.mark();
    d.request(VssOp::Thaw);
    assert_eq!(d.trace_since(mark), s(&["Write THAW ok"]));
}

#[test]
fn other_lost_answers_change_nothing() {
    let mut d = mixed_daemon();
    let check = d.request(VssOp::Check);
    let mark = d.mark();
    d.input(VssInput::AnswerLost {
        bytes: msg_bytes(VssOp::Check as u32, VSS_SUCCESS, check).to_vec(),
        error: IoError::EIO,
    });
    // A failed FREEZE answer, and garbage, while frozen: the freeze stands.
    d.request(VssOp::Freeze);
    let mark2 = d.mark();
    for bytes in [
        msg_bytes(VssOp::Freeze as u32, VSS_FAIL, 1).to_vec(),
        vec![1, 2, 3],
    ] {
        d.input(VssInput::AnswerLost {
            bytes,
            error: IoError::EIO,
        });
    }
    d.settle();
    assert!(
        d.trace_since(mark2).is_empty(),
        "{:?}",
        d.trace_since(mark2)
    );
    assert!(d.m.frozen());
    assert!(d
        .trace_since(mark)
        .ends_with(&["Write FREEZE ok".to_string()]));
}

#[test]
fn app_device_failure_while_frozen_thaws_then_exits() {
    let mut a = app_cmd();
    a.request(VssOp::Freeze);
    assert!(a.m.frozen());
    let mark = a.mark();
    a.input(VssInput::DeviceFailed(IoError::EIO));
    a.settle();
    assert_eq!(
        a.trace_since(mark),
        vec![format!("Run {APP_CMD} thaw"), "Exit".to_string()]
    );
    assert!(!a.m.frozen());
}

#[test]
fn app_lost_ok_to_freeze_thaws_at_once() {
    let mut a = app_cmd();
    let msgid = a.request(VssOp::Freeze);
    let mark = a.mark();
    a.input(VssInput::AnswerLost {
        bytes: msg_bytes(VssOp::Freeze as u32, VSS_SUCCESS, msgid).to_vec(),
        error: IoError::EIO,
    });
    a.settle();
    assert_eq!(a.trace_since(mark), vec![format!("Run {APP_CMD} thaw")]);
    assert!(!a.m.frozen());
    assert_eq!(a.m.poll_timeout(), None, "no auto-thaw left");
}

// ---------------------------------------------------------------------------------------
// The configuration rules are asserted by the constructors
// ---------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "breaks a rule")]
fn daemon_refuses_a_budget_over_the_kernel_deadline() {
    let cfg = VssConfig {
        budget: Budget {
            hooks_total: secs(12),
            ..Budget::default()
        },
        ..VssConfig::default()
    };
    VssMachine::new(cfg, START);
}

#[test]
#[should_panic(expected = "breaks a rule")]
fn daemon_refuses_a_watchdog_before_the_kernel_deadline() {
    let cfg = VssConfig {
        watchdog: secs(15),
        ..VssConfig::default()
    };
    VssMachine::new(cfg, START);
}

#[test]
#[should_panic(expected = "breaks a rule")]
fn app_refuses_a_freeze_budget_over_the_kernel_deadline() {
    let cfg = AppConfig {
        freeze_budget: secs(15),
        ..AppConfig::default()
    };
    AppMachine::new(cfg, START);
}

#[test]
fn the_freezer_backstop_follows_the_watchdog() {
    let mut d = mixed_daemon();
    let mark = d.mark();
    d.request(VssOp::Freeze);
    let backstops: Vec<Duration> = d.log[mark..]
        .iter()
        .filter_map(|r| match &r.out {
            VssOutput::Effect {
                effect:
                    VssEffect::Suspend {
                        auto_thaw_after, ..
                    },
                ..
            } => Some(*auto_thaw_after),
            _ => None,
        })
        .collect();
    assert_eq!(backstops.len(), 2);
    let want = hvguest_core::vss::rules::freezer_backstop(VssConfig::default().watchdog);
    assert!(backstops.iter().all(|b| *b == want), "{backstops:?}");
    assert!(want > VssConfig::default().watchdog);
}

// ---- Pruning our old snapshots after a successful THAW (issue 12) -------------------

fn snapshot_guest(keep: u32) -> Driver<VssMachine> {
    let mut cfg = VssConfig::default();
    cfg.policy.by_type.insert("zfs".into(), FsAction::Snapshot);
    cfg.snapshot_keep = keep;
    let mut d = Driver::with(VssMachine::new(cfg, START), zfs_root_guest(), Vec::new());
    d.snapshots = s(&[
        "zroot@hvguest-100",
        "zroot@hvguest-300",
        "zroot@hvguest-200",
        "zroot@hvguest-400",
        "zroot@zrepl_20260101_000000_000",
        "zroot@hvguest-manual",
        "zroot@hvguest-1.bak",
        "zroot@beadm-hvguest-5",
    ]);
    d
}

fn others() -> Vec<String> {
    s(&[
        "zroot@zrepl_20260101_000000_000",
        "zroot@hvguest-manual",
        "zroot@hvguest-1.bak",
        "zroot@beadm-hvguest-5",
    ])
}

#[test]
fn a_successful_thaw_destroys_our_oldest_snapshots_and_nothing_else() {
    let mut d = snapshot_guest(3);
    let msgid = d.request(VssOp::Freeze);
    let mark = d.mark();
    d.request(VssOp::Thaw);
    assert_eq!(
        d.trace_since(mark),
        s(&[
            "Write THAW ok",
            "ListSnapshots zroot",
            "ZfsDestroy zroot@hvguest-100",
            "ZfsDestroy zroot@hvguest-200",
        ])
    );
    let mut left = others();
    left.extend(s(&["zroot@hvguest-300", "zroot@hvguest-400"]));
    left.push(format!("zroot@hvguest-{msgid}"));
    let mut have = d.snapshots.clone();
    have.sort();
    left.sort();
    assert_eq!(have, left);
    let destroyed: Vec<VssEvent> = d
        .events_since(mark)
        .into_iter()
        .filter(|e| matches!(e, VssEvent::SnapshotDestroyed { .. }))
        .collect();
    assert_eq!(destroyed.len(), 2);
    assert!(d.m.is_idle() && !d.m.pruning());
}

#[test]
fn keep_zero_keeps_every_snapshot() {
    let mut d = snapshot_guest(0);
    d.request(VssOp::Freeze);
    let mark = d.mark();
    d.request(VssOp::Thaw);
    assert_eq!(d.trace_since(mark), s(&["Write THAW ok"]));
    assert_eq!(d.snapshots.len(), 9);
}

#[test]
fn no_prune_after_a_freeze_that_failed_or_a_watchdog_thaw() {
    // The FREEZE took its snapshot, then a suspend failed: rolled back, nothing pruned.
    let mut d = snapshot_guest(1);
    d.mounts.push(mnt("ufs", "/var", false, "/dev/da0p3"));
    d.suspend
        .insert("/var".into(), FreezerOp::Fail(IoError::EIO, ms(5)));
    let mark = d.mark();
    d.request(VssOp::Freeze);
    assert!(!d
        .trace_since(mark)
        .iter()
        .any(|l| l.starts_with("ListSnapshots")));
    // A freeze that the watchdog ends is no finished backup either.
    let mut d = snapshot_guest(1);
    d.request(VssOp::Freeze);
    let mark = d.mark();
    d.advance_to(START.saturating_add(Duration::from_secs(40)));
    let trace = d.trace_since(mark);
    assert!(!d.m.frozen());
    assert!(
        !trace.iter().any(|l| l.starts_with("ListSnapshots")),
        "{trace:?}"
    );
    // The next successful backup prunes, its own snapshot counting as the newest.
    let msgid = d.request(VssOp::Freeze);
    d.request(VssOp::Thaw);
    let ours: Vec<&String> = d
        .snapshots
        .iter()
        .filter(|n| n.starts_with("zroot@hvguest-") && !others().contains(n))
        .collect();
    assert_eq!(ours, vec![&format!("zroot@hvguest-{msgid}")]);
}

#[test]
fn a_request_during_a_prune_stops_it_and_gets_its_whole_time() {
    let mut d = snapshot_guest(1);
    d.program("zfs destroy", Prog::UntilKilled);
    d.request(VssOp::Freeze);
    d.send_late(VssOp::Thaw as u32, Duration::ZERO);
    // Until the first destroy is running.
    for _ in 0..100 {
        if d.trace()
            .last()
            .is_some_and(|l| l.starts_with("ZfsDestroy"))
        {
            break;
        }
        assert!(d.step(None));
    }
    assert!(d.m.pruning());
    let mark = d.mark();
    d.send_late(VssOp::Check as u32, Duration::ZERO);
    assert!(!d.m.pruning());
    assert_eq!(
        d.events_since(mark)[1],
        VssEvent::PruneInterrupted { by_request: true }
    );
    d.settle();
    // The CHECK is answered; no destroy follows, and the killed one's late result is
    // ignored.
    assert_eq!(d.trace_since(mark), s(&["ListMounts", "Write CHECK ok"]));
    d.advance_to(d.now.saturating_add(Duration::from_secs(5)));
    assert_eq!(d.trace_since(mark), s(&["ListMounts", "Write CHECK ok"]));
}

#[test]
fn a_freezer_death_during_a_prune_does_not_stop_it_and_a_shutdown_says_it_does() {
    let mut d = snapshot_guest(1);
    d.program("zfs destroy", Prog::Exit(ExitStatus::Code(0), ms(300)));
    d.request(VssOp::Freeze);
    d.send_late(VssOp::Thaw as u32, Duration::ZERO);
    for _ in 0..100 {
        if d.trace()
            .last()
            .is_some_and(|l| l.starts_with("ZfsDestroy"))
        {
            break;
        }
        assert!(d.step(None));
    }
    d.freezer_crash();
    assert!(d.m.pruning());
    d.settle();
    // All four older ones of ours went; the newest (this backup's) stays.
    let ours = d
        .snapshots
        .iter()
        .filter(|n| n.starts_with("zroot@hvguest-") && !others().contains(n))
        .count();
    assert_eq!(ours, 1);

    let mut d = snapshot_guest(1);
    d.program("zfs destroy", Prog::UntilKilled);
    d.request(VssOp::Freeze);
    d.send_late(VssOp::Thaw as u32, Duration::ZERO);
    for _ in 0..100 {
        if d.trace()
            .last()
            .is_some_and(|l| l.starts_with("ZfsDestroy"))
        {
            break;
        }
        assert!(d.step(None));
    }
    let mark = d.mark();
    d.input(VssInput::Shutdown);
    assert!(d
        .events_since(mark)
        .contains(&VssEvent::PruneInterrupted { by_request: false }));
    assert!(d.m.is_idle() && !d.m.pruning());
}

#[test]
fn a_failing_destroy_or_listing_is_said_and_the_prune_goes_on_or_ends() {
    let mut d = snapshot_guest(3);
    d.program("zfs destroy", Prog::Exit(ExitStatus::Code(1), ms(10)));
    d.request(VssOp::Freeze);
    let mark = d.mark();
    d.request(VssOp::Thaw);
    let failed = d
        .events_since(mark)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                VssEvent::StepFailed {
                    step: "zfs destroy",
                    ..
                }
            )
        })
        .count();
    assert_eq!(failed, 2);
    assert!(d.m.is_idle());

    let mut d = snapshot_guest(3);
    d.program("zfs list", Prog::Hang);
    d.request(VssOp::Freeze);
    let mark = d.mark();
    d.request(VssOp::Thaw);
    assert!(d.events_since(mark).contains(&VssEvent::Abandoned {
        step: "list snapshots"
    }));
    assert!(d.m.is_idle());
    assert_eq!(d.snapshots.len(), 9);
}

/// Found by the random-input property: a shutdown while a suspension is in flight
/// abandoned it, the suspension then happened, and the machine (knowing nothing of it)
/// exited with the mount suspended. The rollback now counts the abandoned suspension's
/// mount and resumes it with the rest.
#[test]
fn a_shutdown_during_a_suspension_resumes_its_mount_too() {
    let read = |opt| Act::Read {
        opt,
        status: 0,
        msgid: MSGID + 1_000_000_000,
        late_ms: 0,
        backwards: false,
        short: false,
    };
    // Start, FREEZE: mounts, no hooks, zpool sync; then `suspend /var` is in flight
    // when a THAW arrives and the daemon is asked to stop.
    let acts = [
        Act::Settle,
        read(2),
        Act::Answer(None),
        Act::Answer(Some(VssResult::Hooks(vec![]))),
        Act::Answer(None),
        read(3),
        Act::Shutdown,
        Act::Answer(None),
    ];
    fuzz_run(&acts, false);
}
