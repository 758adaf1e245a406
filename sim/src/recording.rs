//! Recording simulated sessions and replaying recordings through the core.
//!
//! The file format lives in `hvguest_core::kvp::recording` (the production daemon
//! writes it with `--record`); this module drives the real machine with it.

pub use hvguest_core::kvp::recording::*;

use std::fmt;
use std::time::Duration;

use hvguest_core::kvp::effect::{FileId, Input};
use hvguest_core::kvp::machine::KvpConfig;
use hvguest_core::kvp::wire::{Op, PoolId};
use hvguest_core::limits::KVP_REPLY_BUDGET;
use hvguest_core::Instant;

use crate::daemon::{DaemonSetup, Latency, Observed, SimDaemon, SimNet};
use crate::fs::SimFs;
// ---------------------------------------------------------------------------------------
// Driving the machine: shared by the recorder and replay.

/// Upper bound on daemon steps while waiting for one thing; a sane machine needs a few.
const STEP_LIMIT: usize = 1_000_000;

struct Driver {
    fs: SimFs,
    net: SimNet,
    daemon: SimDaemon,
    now: Instant,
    /// Everything that crossed the device, in order, with the time it happened.
    messages: Vec<DeviceMessage>,
}

impl Driver {
    fn start(world: &Recording, start: Instant, latency: Latency) -> Driver {
        let mut fs = SimFs::new();
        for (pool, bytes) in PoolId::ALL.iter().zip(&world.pools) {
            if !bytes.is_empty() {
                let name = FileId::pool(*pool).file_name();
                // SimFs writes never fail unless faults are injected or it is frozen.
                let _ = fs.write(&name, 0, bytes);
            }
        }
        fs.sync_all();
        let mut net = SimNet {
            adapters: world.adapters.clone(),
            ..SimNet::default()
        };
        let setup = DaemonSetup {
            config: KvpConfig::for_layout(world.layout),
            info: world.info.clone(),
            latency,
            watches: true,
        };
        let mut log = Vec::new();
        let daemon = SimDaemon::start(1, start, &setup, &mut fs, &mut net, &mut log);
        let mut d = Driver {
            fs,
            net,
            daemon,
            now: start,
            messages: Vec::new(),
        };
        d.collect(log);
        d
    }

    fn collect(&mut self, log: Vec<Observed>) {
        for o in &log {
            if let Observed::DeviceWrite(b) = o {
                self.messages.push(DeviceMessage {
                    at: self.now,
                    dir: Direction::Out,
                    bytes: b.to_vec(),
                });
            }
        }
    }

    /// Delivers the next wakeup if there is one at or before `until`.
    fn step(&mut self, until: Option<Instant>) -> bool {
        if self.daemon.exited {
            return false;
        }
        let Some(t) = self.daemon.next_wakeup() else {
            return false;
        };
        if until.is_some_and(|u| t > u) {
            return false;
        }
        self.now = self.now.max(t);
        let mut log = Vec::new();
        self.daemon
            .advance(self.now, &mut self.fs, &mut self.net, &mut log);
        self.collect(log);
        true
    }

    fn writes_since_last_read(&self) -> usize {
        self.messages
            .iter()
            .rev()
            .take_while(|m| m.dir == Direction::Out)
            .count()
    }

    /// The kernel delivers a request only once the previous one is answered (and only
    /// after registration): run the daemon until it has written, or cannot go on.
    fn await_write(&mut self) {
        for _ in 0..STEP_LIMIT {
            if self.writes_since_last_read() > 0 || !self.step(None) {
                return;
            }
        }
    }

    fn run_until(&mut self, until: Instant) {
        for _ in 0..STEP_LIMIT {
            if !self.step(Some(until)) {
                break;
            }
        }
        self.now = self.now.max(until);
    }

    /// System information changed at `at`.
    fn info(&mut self, at: Instant, info: &hvguest_core::kvp::auto::SystemInfo) {
        self.run_until(at);
        let mut log = Vec::new();
        self.daemon.handle(
            self.now,
            Input::SystemInfo(info.clone()),
            &mut self.fs,
            &mut self.net,
            &mut log,
        );
        self.collect(log);
    }

    /// One device read at `at` (or now, if the daemon is already past it).
    fn read(&mut self, at: Instant, bytes: &[u8]) {
        self.await_write();
        self.run_until(at);
        self.messages.push(DeviceMessage {
            at: self.now,
            dir: Direction::In,
            bytes: bytes.to_vec(),
        });
        let mut log = Vec::new();
        self.daemon.handle(
            self.now,
            Input::DeviceRead(bytes.to_vec()),
            &mut self.fs,
            &mut self.net,
            &mut log,
        );
        self.collect(log);
    }

    /// After the last read: its answer, and anything else written within a deadline.
    fn finish(mut self) -> Vec<DeviceMessage> {
        self.await_write();
        let horizon = self
            .now
            .saturating_add(KVP_REPLY_BUDGET)
            .saturating_add(Duration::from_secs(1));
        self.run_until(horizon);
        self.messages
    }
}

/// Runs the real machine from the world of `initial` (its messages are ignored),
/// handing it `requests` one at a time, each `gap` after the previous one was delivered
/// (later if the daemon has not answered yet), and returns the resulting recording: a
/// recording as the production daemon would make it, with the simulator's latencies.
pub fn record(
    initial: &Recording,
    requests: &[Vec<u8>],
    start: Instant,
    gap: Duration,
    latency: Latency,
) -> Recording {
    let mut d = Driver::start(initial, start, latency);
    for bytes in requests {
        d.await_write();
        let at = d.now.saturating_add(gap);
        d.read(at, bytes);
    }
    Recording {
        messages: d.finish(),
        ..initial.clone()
    }
}

// ---------------------------------------------------------------------------------------
// Replay.

/// What happened to one recorded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestOutcome {
    /// Index among the recording's `in` lines, from 0.
    pub index: usize,
    /// Recorded time of the request.
    pub at: Instant,
    pub op: Option<Op>,
    /// The request in words.
    pub request: String,
    /// Every recorded write answering it equals the replayed one, and as many came.
    pub matched: bool,
}

/// A recorded write and the replayed one in the same place, not byte-for-byte equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The request answered; `None` before the first request (the registration).
    pub request: Option<usize>,
    pub at: Instant,
    pub op: Option<Op>,
    pub request_text: String,
    pub recorded: String,
    pub replayed: String,
    /// First byte offset where they differ.
    pub offset: usize,
}

/// A write on one side with no counterpart on the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpaired {
    pub request: Option<usize>,
    /// When it was written (recorded or replayed time).
    pub at: Instant,
    pub request_text: String,
    pub summary: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// The writes before the first request (the registration) matched.
    pub registration_matched: bool,
    pub requests: Vec<RequestOutcome>,
    pub differences: Vec<Difference>,
    /// Recorded writes the replayed daemon did not make.
    pub missing: Vec<Unpaired>,
    /// Replayed writes the recording does not have.
    pub extra: Vec<Unpaired>,
}

impl ReplayReport {
    /// Every recorded write was replayed byte for byte, and nothing more was written.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }

    pub fn matched_requests(&self) -> usize {
        self.requests.iter().filter(|r| r.matched).count()
    }
}

fn slot_name(request: Option<usize>) -> String {
    match request {
        None => "before the first request".into(),
        Some(i) => format!("request #{i}"),
    }
}

impl fmt::Display for ReplayReport {
    /// A summary and every problem; `{:#}` also lists each request.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} of {} requests answered as recorded; registration {}; {}",
            self.matched_requests(),
            self.requests.len(),
            if self.registration_matched {
                "matched"
            } else {
                "DIFFERS"
            },
            if self.is_clean() {
                "no differences".to_string()
            } else {
                format!(
                    "{} differing, {} missing, {} extra writes",
                    self.differences.len(),
                    self.missing.len(),
                    self.extra.len()
                )
            }
        )?;
        if f.alternate() {
            for r in &self.requests {
                writeln!(
                    f,
                    "  #{} {} {}: {}",
                    r.index,
                    r.at,
                    r.request,
                    if r.matched { "ok" } else { "DIFFERS" }
                )?;
            }
        }
        for d in &self.differences {
            writeln!(
                f,
                "  {} at {} ({}): reply differs from byte {}\n    recorded: {}\n    replayed: {}",
                slot_name(d.request),
                d.at,
                d.request_text,
                d.offset,
                d.recorded,
                d.replayed
            )?;
        }
        for u in &self.missing {
            writeln!(
                f,
                "  {} ({}): recorded write at {} not replayed: {}",
                slot_name(u.request),
                u.request_text,
                u.at,
                u.summary
            )?;
        }
        for u in &self.extra {
            writeln!(
                f,
                "  {} ({}): replayed write at {} not in the recording: {}",
                slot_name(u.request),
                u.request_text,
                u.at,
                u.summary
            )?;
        }
        Ok(())
    }
}

/// Writes grouped by the request they follow: slot 0 is before the first request.
fn slots(messages: &[DeviceMessage]) -> Vec<Vec<&DeviceMessage>> {
    let mut out = vec![Vec::new()];
    for m in messages {
        match m.dir {
            Direction::In => out.push(Vec::new()),
            Direction::Out => {
                if let Some(last) = out.last_mut() {
                    last.push(m);
                }
            }
        }
    }
    out
}

/// Replays `recording` through the real machine and compares every write.
pub fn replay(recording: &Recording) -> ReplayReport {
    let start = recording.messages.first().map_or(Instant::ZERO, |m| m.at);
    let mut d = Driver::start(recording, start, Latency::zero());
    let mut changes = recording.info_changes.iter().peekable();
    for m in recording.messages.iter().filter(|m| m.dir == Direction::In) {
        while let Some((at, info)) = changes.next_if(|c| c.0 <= m.at) {
            d.info(*at, info);
        }
        d.read(m.at, &m.bytes);
    }
    let replayed = d.finish();

    let reads: Vec<&DeviceMessage> = recording
        .messages
        .iter()
        .filter(|m| m.dir == Direction::In)
        .collect();
    let recorded_slots = slots(&recording.messages);
    let replayed_slots = slots(&replayed);
    let mut report = ReplayReport::default();
    for (slot, (rec, rep)) in recorded_slots.iter().zip(&replayed_slots).enumerate() {
        let request = slot.checked_sub(1);
        let read = request.and_then(|i| reads.get(i));
        let (op, request_text) = match read {
            Some(r) => describe_request(&r.bytes),
            None => (None, "registration".into()),
        };
        let at = read.map_or(start, |r| r.at);
        let mut matched = rec.len() == rep.len();
        for (a, b) in rec.iter().zip(rep.iter()) {
            if a.bytes != b.bytes {
                matched = false;
                let offset = a
                    .bytes
                    .iter()
                    .zip(&b.bytes)
                    .position(|(x, y)| x != y)
                    .unwrap_or(a.bytes.len().min(b.bytes.len()));
                report.differences.push(Difference {
                    request,
                    at,
                    op,
                    request_text: request_text.clone(),
                    recorded: summarize(op, request.is_none(), &a.bytes),
                    replayed: summarize(op, request.is_none(), &b.bytes),
                    offset,
                });
            }
        }
        let unpaired = |m: &&DeviceMessage| Unpaired {
            request,
            at: m.at,
            request_text: request_text.clone(),
            summary: summarize(op, request.is_none(), &m.bytes),
        };
        report
            .missing
            .extend(rec.iter().skip(rep.len()).map(unpaired));
        report
            .extra
            .extend(rep.iter().skip(rec.len()).map(unpaired));
        match (request, read) {
            (None, _) => report.registration_matched = matched,
            (Some(index), Some(r)) => report.requests.push(RequestOutcome {
                index,
                at: r.at,
                op,
                request: request_text.clone(),
                matched,
            }),
            (Some(_), None) => {}
        }
    }
    report
}
