//! The VSS side: the 64-byte message decoder, hook selection, and the two machines
//! (`VssMachine`, `AppMachine`) driven by arbitrary input sequences.

use std::collections::VecDeque;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use hvguest_core::kvp::effect::EffectId;
use hvguest_core::vss::app::{AppConfig, AppMachine, AppWork};
use hvguest_core::vss::effect::{ExitStatus, VssEffect, VssInput, VssResult};
use hvguest_core::vss::hooks::{self, HookEntry};
use hvguest_core::vss::machine::{VssConfig, VssMachine, VssOutput};
use hvguest_core::vss::wire::{decode_read, Echo, OptMsg, VssRead, VSS_MSG_SIZE};
use hvguest_core::Instant;

/// Any bytes decode to one of the three READ results; a message of the right size
/// re-encodes to the same fields, and a reply echoes what it answers.
pub fn vss_message(data: &[u8]) {
    let read = decode_read(data);
    let Some(m) = OptMsg::decode(data) else {
        assert_ne!(data.len(), VSS_MSG_SIZE);
        assert_eq!(read, VssRead::Nothing);
        return;
    };
    assert_eq!(OptMsg::decode(&m.encode()), Some(m));
    match read {
        VssRead::Nothing => assert_ne!(m.status, 0),
        VssRead::Request { op, msgid, echo } => {
            assert_eq!((op as u32, msgid, m.status), (m.opt, m.msgid, 0));
            assert_ne!(msgid, 0);
            assert_eq!(echo, Echo::FreeBsd(m));
        }
        VssRead::Invalid(inv) => {
            assert_eq!(inv, Echo::FreeBsd(m));
            let r = OptMsg::decode(&inv.reply(false)).expect("a FreeBSD answer is 64 bytes");
            assert_eq!((r.opt, r.msgid), (m.opt, m.msgid));
            assert_ne!(r.status, 0, "an invalid request is never answered OK");
        }
    }
}

/// Hook selection over arbitrary directory entries: every entry is either run or
/// skipped, the run list is sorted, and `select` agrees with `judge` entry by entry.
pub fn vss_hooks(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(entries) = Vec::<HookEntry>::arbitrary(&mut u) else {
        return;
    };
    let (run, skipped) = hooks::select(&entries);
    assert_eq!(run.len() + skipped.len(), entries.len());
    assert!(run.windows(2).all(|w| w[0] <= w[1]), "{run:?}");
    assert!(skipped.windows(2).all(|w| w[0].0 <= w[1].0), "{skipped:?}");
    let runnable = entries.iter().filter(|e| hooks::judge(e).is_ok()).count();
    assert_eq!(run.len(), runnable);
    for e in &entries {
        match hooks::judge(e) {
            Ok(()) => {
                assert!(run.contains(&e.name));
                // What is run is a root-owned regular executable nobody else may write.
                assert!(e.regular_file && e.uid == 0 && e.mode & 0o111 != 0);
                assert_eq!(e.mode & 0o022, 0);
                assert!(!e.name.starts_with('.'));
            }
            Err(why) => assert!(skipped.contains(&(e.name.clone(), why))),
        }
    }
}

/// What the fuzz driver needs of either machine.
trait Machine {
    fn handle(&mut self, now: Instant, input: VssInput);
    fn poll_output(&mut self) -> Option<VssOutput>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn is_idle(&self) -> bool;
    fn frozen(&self) -> bool;
    /// Mounts still suspended (the application has none).
    fn suspended(&self) -> usize;
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
    fn frozen(&self) -> bool {
        VssMachine::frozen(self)
    }
    fn suspended(&self) -> usize {
        VssMachine::suspended(self).len()
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
    fn frozen(&self) -> bool {
        AppMachine::frozen(self)
    }
    fn suspended(&self) -> usize {
        0
    }
}

#[derive(Debug, Arbitrary)]
enum Step {
    /// A READ of a well-formed message: op 1..=3 are CHECK, FREEZE, THAW (others are
    /// invalid); it was read `used_ms` after the host's message arrived.
    Read {
        op: u8,
        msgid: u64,
        used_ms: u16,
    },
    RawRead(Vec<u8>),
    /// Answer the oldest effect in flight with an arbitrary result.
    Answer(VssResult),
    /// Answer the oldest effect in flight as a healthy system would.
    AnswerOk,
    /// Time passes; timers due meanwhile fire at their instant.
    Advance(u16),
    /// An early or spurious timer (harmless by contract).
    Timer,
    FreezerExited,
    Shutdown,
}

/// The result a healthy system gives for `effect`.
fn healthy(effect: &VssEffect) -> VssResult {
    match effect {
        VssEffect::ListMounts => VssResult::Mounts(Vec::new()),
        VssEffect::ListHooks => VssResult::Hooks(Vec::new()),
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

/// Runs one machine like its driver would, and checks the kernel's view of it.
struct Driver<M> {
    m: M,
    now: Instant,
    /// The epoch of the real-time clock, so that msgids look like the kernel's.
    epoch_ns: u64,
    effects: VecDeque<(EffectId, VssEffect)>,
    /// Requests read and not answered yet, as (opt, msgid).
    unanswered: Vec<(u32, u64)>,
    /// A kill was asked for: the driver reports the freezer's exit.
    killing: bool,
    exited: bool,
}

impl<M: Machine> Driver<M> {
    fn input(&mut self, input: VssInput) {
        self.m.handle(self.now, input);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(o) = self.m.poll_output() {
            match o {
                VssOutput::DeviceWrite(b) => {
                    let reply = OptMsg::decode(&b).expect("a reply is 64 bytes");
                    let at = self
                        .unanswered
                        .iter()
                        .position(|&(opt, id)| (opt, id) == (reply.opt, reply.msgid));
                    match at {
                        Some(i) => {
                            self.unanswered.remove(i);
                        }
                        None => panic!("an answer to no request: {reply:?}"),
                    }
                }
                VssOutput::Effect { id, effect } => {
                    self.killing |= effect == VssEffect::KillFreezer;
                    self.effects.push_back((id, effect));
                }
                VssOutput::Event(_) => {}
                VssOutput::Exit => self.exited = true,
            }
        }
    }

    fn read(&mut self, bytes: Vec<u8>, realtime_ns: u64) {
        match decode_read(&bytes) {
            VssRead::Nothing => {}
            VssRead::Request { op, msgid, .. } => self.unanswered.push((op as u32, msgid)),
            VssRead::Invalid(m) => self.unanswered.push((m.op_code(), m.msgid())),
        }
        self.input(VssInput::DeviceRead { bytes, realtime_ns });
    }

    fn realtime(&self) -> u64 {
        self.epoch_ns.saturating_add(self.now.as_nanos())
    }

    /// Moves time to `until`, firing every timer due on the way at its instant.
    fn advance_to(&mut self, until: Instant) {
        for _ in 0..64 {
            let Some(t) = self.m.poll_timeout().filter(|&t| t <= until) else {
                break;
            };
            self.now = self.now.max(t);
            self.input(VssInput::Timer);
        }
        self.now = self.now.max(until);
    }

    fn answer(&mut self, result: Option<VssResult>) {
        let Some((id, effect)) = self.effects.pop_front() else {
            return;
        };
        let result = result.unwrap_or_else(|| healthy(&effect));
        self.input(VssInput::EffectDone { id, result });
        if effect == VssEffect::KillFreezer && self.killing {
            self.killing = false;
            self.input(VssInput::FreezerExited);
        }
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Read { op, msgid, used_ms } => {
                let msg = OptMsg {
                    opt: u32::from(op),
                    status: 0,
                    msgid,
                };
                let used = u64::from(used_ms) * 1_000_000;
                // The kernel stamps msgid with its clock when the host's message came.
                let realtime = msgid.saturating_add(used);
                self.read(msg.encode().to_vec(), realtime);
            }
            Step::RawRead(bytes) => {
                let realtime = self.realtime();
                self.read(bytes, realtime);
            }
            Step::Answer(result) => self.answer(Some(result)),
            Step::AnswerOk => self.answer(None),
            Step::Advance(ms) => {
                let until = self
                    .now
                    .saturating_add(Duration::from_millis(u64::from(ms)));
                self.advance_to(until);
            }
            Step::Timer => self.input(VssInput::Timer),
            Step::FreezerExited => {
                self.killing = false;
                self.input(VssInput::FreezerExited);
            }
            Step::Shutdown => self.input(VssInput::Shutdown),
        }
    }

    /// A healthy system from here on: effects succeed, time runs past every watchdog.
    /// Then every request has its answer and nothing is left frozen or suspended.
    fn finish(&mut self) {
        for _ in 0..1000 {
            if !self.effects.is_empty() {
                self.answer(None);
                continue;
            }
            match self.m.poll_timeout() {
                Some(t) => self.advance_to(t),
                None => break,
            }
        }
        // Past the application's auto-thaw (45 s) and the daemon's watchdog (30 s).
        let end = self.now.saturating_add(Duration::from_secs(120));
        self.advance_to(end);
        while !self.effects.is_empty() {
            self.answer(None);
        }
        assert!(
            self.unanswered.is_empty(),
            "requests never answered: {:?}",
            self.unanswered
        );
        if !self.exited {
            assert!(self.m.is_idle(), "work left at the end");
        }
        assert!(!self.m.frozen(), "still frozen at the end");
        assert_eq!(self.m.suspended(), 0, "mounts still suspended at the end");
    }
}

fn drive<M: Machine>(m: M, now: Instant, u: &mut Unstructured) {
    let epoch_ns = u.arbitrary::<u32>().map_or(0, u64::from) << 20;
    let mut d = Driver {
        m,
        now,
        epoch_ns,
        effects: VecDeque::new(),
        unanswered: Vec::new(),
        killing: false,
        exited: false,
    };
    // A machine may start with work (the daemon's start-up thaw hooks).
    d.drain();
    // An exhausted `Unstructured` yields zeros forever: stop when the input ends.
    while !u.is_empty() {
        let Ok(step) = Step::arbitrary(u) else {
            break;
        };
        d.step(step);
        if d.exited {
            break;
        }
    }
    d.finish();
}

/// The file-system daemon's machine under arbitrary reads, results and timing: it never
/// panics, answers every request exactly once, and ends neither frozen nor suspended.
pub fn vss_machine(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let cfg = VssConfig {
        hook_dir: u
            .arbitrary::<bool>()
            .unwrap_or(false)
            .then(|| "/hooks".into()),
        ..VssConfig::default()
    };
    let now = Instant::from_millis(1);
    drive(VssMachine::new(cfg, now), now, &mut u);
}

/// The application helper's machine, with the same properties.
pub fn vss_app(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let work = match u.arbitrary::<u8>().unwrap_or(0) % 3 {
        0 => AppWork::Command(Vec::new()),
        1 => AppWork::Command(vec!["/usr/local/bin/app-freeze".into()]),
        _ => AppWork::HookDir("/app-hooks".into()),
    };
    let cfg = AppConfig {
        work,
        ..AppConfig::default()
    };
    let now = Instant::from_millis(1);
    drive(AppMachine::new(cfg, now), now, &mut u);
}
