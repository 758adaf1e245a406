//! `SimDaemon`: the real `KvpMachine` in a simulated process. It executes the machine's
//! effects against `SimFs` exactly as the production driver does against real files,
//! delivers each result after a latency, and parks calls that cannot complete (a
//! suspended file system, a lock held by another program) until they can.
//!
//! Crash is dropping this value and crashing the `SimFs`; restart is `SimDaemon::start`
//! again, which goes through the machine's real recovery.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use hvguest_core::kvp::addresses::NamedAdapter;
use hvguest_core::kvp::auto::SystemInfo;
use hvguest_core::kvp::effect::{Effect, EffectId, EffectResult, FileId, Input, Lane, WriteNews};
use hvguest_core::kvp::ip::{Adapter, IpConfig, Mac, NicGuid};
use hvguest_core::kvp::machine::{Event, KvpConfig, KvpMachine, Output};
use hvguest_core::kvp::wire::Message;
use hvguest_core::Instant;

use crate::fs::{FsError, Owner, SimFs};

/// Everything the daemon did that crosses a boundary, in order, for traces and checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    DeviceWrite(Message),
    Event(Event),
    Effect(EffectId, Effect),
    Result(EffectId, ResultSeen),
    Parked(EffectId),
    Exit,
}

/// An effect's result as observed: the result itself, but data read only by its length.
/// The machine takes the bytes (often a whole pool file), and a copy made only so the
/// trace can say how many there were was a visible part of a random run's time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResultSeen {
    /// `EffectResult::Data` of this many bytes.
    Data(usize),
    /// Any other result.
    Other(EffectResult),
}

impl ResultSeen {
    fn of(result: &EffectResult) -> ResultSeen {
        match result {
            EffectResult::Data(d) => ResultSeen::Data(d.len()),
            other => ResultSeen::Other(other.clone()),
        }
    }
}

/// How long effects take, in simulated time.
#[derive(Clone, Debug)]
pub struct Latency {
    pub io: Duration,
    pub fsync: Duration,
    pub system: Duration,
    /// The next effects take this long instead (a slow disk, a hung script).
    pub scripted: VecDeque<Duration>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            io: Duration::from_micros(20),
            fsync: Duration::from_micros(500),
            system: Duration::from_millis(2),
            scripted: VecDeque::new(),
        }
    }
}

impl Latency {
    pub fn zero() -> Latency {
        Latency {
            io: Duration::ZERO,
            fsync: Duration::ZERO,
            system: Duration::ZERO,
            scripted: VecDeque::new(),
        }
    }

    fn of(&mut self, e: &Effect) -> Duration {
        if let Some(d) = self.scripted.pop_front() {
            return d;
        }
        match e {
            Effect::Fsync(_) => self.fsync,
            Effect::QueryAdapter(_) | Effect::ApplyIpConfig { .. } => self.system,
            _ => self.io,
        }
    }
}

/// The guest's network as `QueryAdapter` and `ApplyIpConfig` see it.
#[derive(Clone, Debug, Default)]
pub struct SimNet {
    /// Every interface holding each MAC, in the kernel's order.
    pub adapters: BTreeMap<Mac, Vec<NamedAdapter>>,
    pub applied: Vec<IpConfig>,
    /// `ApplyIpConfig` fails (the script exits non-zero).
    pub apply_fails: bool,
    /// Linux: the synthetic NICs' GUIDs, as sysfs's `device_id` shows them, with their
    /// interfaces; an `ApplyIpConfig` for any other GUID finds no interface.
    pub nic_guids: BTreeMap<NicGuid, String>,
}

/// What a daemon process starts with.
#[derive(Clone, Debug)]
pub struct DaemonSetup {
    pub config: KvpConfig,
    pub info: SystemInfo,
    pub latency: Latency,
    /// The driver watches the pool files (inotify, kqueue) and answers `TakeWrites`;
    /// otherwise `NotWatched`, as when no watch could be set up.
    pub watches: bool,
}

pub struct SimDaemon {
    pub machine: KvpMachine,
    pub generation: u32,
    /// As [`DaemonSetup::watches`].
    pub watches: bool,
    pub latency: Latency,
    /// Results on their way back, by completion time then issue order.
    completions: Vec<(Instant, EffectId, EffectResult)>,
    parked: Vec<(EffectId, Effect)>,
    /// The system-lane effect (an adapter query, an IP script) not yet completed: the
    /// host's next GET/SET_IP_INFO is refused while it runs.
    system_in_flight: Option<EffectId>,
    pub exited: bool,
    /// Effects still allowed to execute; `None` = unlimited. At zero, further effects
    /// park forever: the crash-at-every-step tests stop the world there.
    pub effect_budget: Option<u64>,
}

pub fn file_name(f: &FileId) -> &'static str {
    crate::fs::name_of(*f)
}

impl SimDaemon {
    /// Starts the process: the machine begins recovery at once.
    pub fn start(
        generation: u32,
        now: Instant,
        setup: &DaemonSetup,
        fs: &mut SimFs,
        net: &mut SimNet,
        out: &mut Vec<Observed>,
    ) -> SimDaemon {
        let mut d = SimDaemon {
            machine: KvpMachine::new(setup.config.clone(), now, &setup.info),
            generation,
            watches: setup.watches,
            latency: setup.latency.clone(),
            completions: Vec::new(),
            parked: Vec::new(),
            system_in_flight: None,
            exited: false,
            effect_budget: None,
        };
        d.drain(now, fs, net, out);
        d
    }

    fn owner(&self) -> Owner {
        Owner::Daemon(self.generation)
    }

    /// Feeds one input and runs the machine's immediate reaction.
    pub fn handle(
        &mut self,
        now: Instant,
        input: Input,
        fs: &mut SimFs,
        net: &mut SimNet,
        out: &mut Vec<Observed>,
    ) {
        if self.exited {
            return;
        }
        self.machine.handle(now, input);
        self.drain(now, fs, net, out);
    }

    fn drain(&mut self, now: Instant, fs: &mut SimFs, net: &mut SimNet, out: &mut Vec<Observed>) {
        while let Some(o) = self.machine.poll_output() {
            match o {
                Output::DeviceWrite(b) => out.push(Observed::DeviceWrite(b)),
                Output::Event(e) => out.push(Observed::Event(e)),
                Output::Exit => {
                    self.exited = true;
                    out.push(Observed::Exit);
                }
                Output::Effect { id, effect } => self.start_effect(now, id, effect, fs, net, out),
            }
        }
    }

    fn start_effect(
        &mut self,
        now: Instant,
        id: EffectId,
        effect: Effect,
        fs: &mut SimFs,
        net: &mut SimNet,
        out: &mut Vec<Observed>,
    ) {
        if effect.lane() == Lane::System {
            self.system_in_flight = Some(id);
        }
        // The effect is observed before anything it leads to (its `Parked`); it is moved
        // into the observation once executed, not copied (a write carries its data).
        if let Some(b) = self.effect_budget.as_mut() {
            if *b == 0 {
                out.push(Observed::Effect(id, effect));
                out.push(Observed::Parked(id));
                return; // never executed: the world stops here
            }
            *b -= 1;
        }
        match self.execute(&effect, fs, net) {
            Some(result) => {
                let at = now.saturating_add(self.latency.of(&effect));
                self.completions.push((at, id, result));
                out.push(Observed::Effect(id, effect));
            }
            None => {
                out.push(Observed::Effect(id, effect.clone()));
                out.push(Observed::Parked(id));
                self.parked.push((id, effect));
            }
        }
    }

    /// Whether a system-lane effect (an adapter query, an IP script) is still running.
    pub fn system_busy(&self) -> bool {
        self.system_in_flight.is_some()
    }

    /// Runs one effect against the world; `None` if it cannot complete now.
    fn execute(
        &mut self,
        effect: &Effect,
        fs: &mut SimFs,
        net: &mut SimNet,
    ) -> Option<EffectResult> {
        let who = self.owner();
        let r = match effect {
            Effect::Lock(f) => fs.lock(file_name(f), who).map(|_| EffectResult::Done),
            Effect::Unlock(f) => {
                fs.unlock(file_name(f), who);
                Ok(EffectResult::Done)
            }
            Effect::Stat(f) => fs.stat(file_name(f)).map(EffectResult::Stamp),
            Effect::Read { file, offset, len } => fs
                .read(file_name(file), *offset, *len)
                .map(EffectResult::Data),
            Effect::Write { file, offset, data } => fs
                .write(file_name(file), *offset, data)
                .map(|_| EffectResult::Done),
            Effect::SetLen { file, len } => fs
                .set_len(file_name(file), *len)
                .map(|_| EffectResult::Done),
            Effect::Fsync(f) => fs.fsync(file_name(f)).map(|_| EffectResult::Done),
            // Answered at once, frozen or not: it reads the driver's own queue.
            Effect::TakeWrites(f) if self.watches => Ok(EffectResult::Writes(
                fs.take_writes(file_name(f), self.generation),
            )),
            Effect::TakeWrites(_) => Ok(EffectResult::Writes(WriteNews::NotWatched)),
            Effect::QueryAdapter(mac) => Ok(EffectResult::Adapters(
                net.adapters.get(mac).cloned().unwrap_or_default(),
            )),
            Effect::ApplyIpConfig { config: cfg, .. } => {
                let unknown = match &cfg.adapter {
                    Adapter::Guid(g) => !net.nic_guids.contains_key(g),
                    Adapter::Interface(_) => false,
                };
                if unknown {
                    Ok(EffectResult::NoSuchAdapter)
                } else if net.apply_fails {
                    Ok(EffectResult::Failed(hvguest_core::kvp::effect::IoError(1)))
                } else {
                    net.applied.push(cfg.clone());
                    Ok(EffectResult::Done)
                }
            }
        };
        match r {
            Ok(res) => Some(res),
            Err(FsError::Io(e)) => Some(EffectResult::Failed(e)),
            Err(FsError::Blocked(_)) => None,
        }
    }

    /// Retries parked effects (after a thaw or an unlock).
    pub fn unpark(&mut self, now: Instant, fs: &mut SimFs, net: &mut SimNet) {
        let parked = std::mem::take(&mut self.parked);
        for (id, effect) in parked {
            match self.execute(&effect, fs, net) {
                Some(result) => {
                    let at = now.saturating_add(self.latency.of(&effect));
                    self.completions.push((at, id, result));
                }
                None => self.parked.push((id, effect)),
            }
        }
    }

    pub fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// The next instant something happens inside this process.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let completion = self.completions.iter().map(|c| c.0).min();
        completion
            .into_iter()
            .chain(self.machine.poll_timeout())
            .min()
    }

    /// Delivers everything due at `now` (completions first, then the timer).
    pub fn advance(
        &mut self,
        now: Instant,
        fs: &mut SimFs,
        net: &mut SimNet,
        out: &mut Vec<Observed>,
    ) {
        loop {
            if self.exited {
                return;
            }
            let due = self
                .completions
                .iter()
                .enumerate()
                .filter(|(_, c)| c.0 <= now)
                .min_by_key(|(_, c)| (c.0, c.1))
                .map(|(i, _)| i);
            match due {
                Some(i) => {
                    let (_, id, result) = self.completions.remove(i);
                    if self.system_in_flight == Some(id) {
                        self.system_in_flight = None;
                    }
                    out.push(Observed::Result(id, ResultSeen::of(&result)));
                    self.handle(now, Input::EffectDone { id, result }, fs, net, out);
                }
                None => break,
            }
        }
        if self.machine.poll_timeout().is_some_and(|t| t <= now) {
            self.handle(now, Input::Timer, fs, net, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_seen_by_length_reads_as_the_core_describes_it() {
        // The world writes `ResultSeen::Data(n)` as `{n}B`: what `describe::result` says.
        let data = EffectResult::Data(vec![7; 2560]);
        assert_eq!(ResultSeen::of(&data), ResultSeen::Data(2560));
        assert_eq!(hvguest_core::kvp::describe::result(&data), "2560B");
    }
}
