//! The KVP daemon as a sans-IO state machine.
//!
//! # Contract with the driver
//!
//! The driver (the mio loop in `io`, or the simulator) owns every resource and
//! the clock; the machine owns every decision. After constructing it:
//!
//! 1. Drain [`KvpMachine::poll_output`] until `None`, and execute each output in order:
//!    write `DeviceWrite` bytes to the device (the first is the registration), start
//!    each `Effect`, log each `Event`, exit on `Exit`.
//! 2. Wait for the device to be readable, an effect to finish, or the instant from
//!    [`KvpMachine::poll_timeout`], whichever comes first.
//! 3. Call [`KvpMachine::handle`] once with what happened and the current time, then go
//!    back to 1. `handle` must not be called with outputs still queued, and time never
//!    goes backwards (both are asserted).
//!
//! Every device read is answered by exactly one `DeviceWrite`, before the kernel's
//! deadline (with `E_FAIL` if nothing better is possible in time). Every effect is
//! answered with exactly one `Input::EffectDone` with its id; results for unknown ids
//! are ignored. At most one effect per [`Lane`] is in flight.

use std::collections::VecDeque;
use std::time::Duration;

use crate::kvp::addresses::AddressSelection;
use crate::kvp::auto::{AutoOverrides, AutoPool, SystemInfo};
use crate::kvp::effect::{Effect, EffectId, EffectResult, FileStamp, Input, IoError, Lane};
use crate::kvp::ip::{IpConfig, IpConfigError, Mac};
use crate::kvp::jobs::{JobEvent, JobOutcome, MutOp, Mutate, MutateResult, Recover, Refresh, Step};
use crate::kvp::pool::{Outcome, Pool};
use crate::kvp::text::Key;
use crate::kvp::wire::{DecodeError, Layout, Message, Op, PoolId, Reply, Request, Status};
use crate::limits::{
    DEFAULT_MAX_RECORDS, HOST_POOL_RECORDS, KVP_EFFECT_MARGIN, KVP_REPLY_BUDGET, KVP_SET_IP_SCRIPT,
    LINUX_KVP_SET_IP_PROGRAMS, MAX_QUEUED_OUTPUTS, RECOVERY_RETRY,
};
use crate::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvpConfig {
    /// Which kernel's device: the message size, the registration and where a GET's
    /// value goes.
    pub layout: Layout,
    /// How long after reading a request we answer at the latest
    /// ([`Layout::reply_budget`] unless a test says otherwise).
    pub reply_budget: Duration,
    /// How long a failed pool waits before recovery is tried again.
    pub recovery_retry: Duration,
    /// The file system's timestamp granularity (FreeBSD's `vfs.timestamp_precision`):
    /// another program's same-size change within one tick of our last look leaves the
    /// stamp as it was, so a stamp is trusted only once the file has been read at least
    /// this long after the stamp was first seen. Zero: every change moves the stamp.
    pub stamp_granularity: Duration,
    /// kvp.conf's `max_records`: a SET (the host's, or a tool's) that would append to a
    /// pool file already holding this many records is refused. At most
    /// [`MAX_POOL_RECORDS`](crate::limits::MAX_POOL_RECORDS), the most we hold.
    pub max_records: usize,
    /// kvp.conf's `auto.<Key>` values, shown in the auto pool instead of the system's.
    pub auto: AutoOverrides,
    /// kvp.conf's `exclude_interfaces` and `address_order`: which interfaces and
    /// addresses the auto pool and GET_IP_INFO show, in which order.
    pub addresses: AddressSelection,
}

impl KvpConfig {
    /// How many records a host SET may grow a pool file to: the smaller of the
    /// administrator's `max_records` and the host's own budget ([`HOST_POOL_RECORDS`]).
    /// The administrator can lower what the host may store, never raise it past the
    /// budget that bounds the daemon's memory (`HOST_HELD_MAX_BYTES`).
    pub fn host_limit(&self) -> usize {
        self.max_records.min(HOST_POOL_RECORDS)
    }
}

impl KvpConfig {
    /// The defaults for a device of this layout.
    pub fn for_layout(layout: Layout) -> KvpConfig {
        KvpConfig {
            layout,
            reply_budget: layout.reply_budget(),
            ..KvpConfig::default()
        }
    }
}

impl Default for KvpConfig {
    fn default() -> Self {
        KvpConfig {
            layout: Layout::FreeBsd,
            reply_budget: KVP_REPLY_BUDGET,
            recovery_retry: RECOVERY_RETRY,
            stamp_granularity: Duration::ZERO,
            max_records: DEFAULT_MAX_RECORDS,
            auto: AutoOverrides::default(),
            addresses: AddressSelection::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Exactly these bytes (one message of the layout's size), in one write.
    DeviceWrite(Message),
    Effect {
        id: EffectId,
        effect: Effect,
    },
    Event(Event),
    /// Shutdown finished: close the device and exit 0.
    Exit,
}

/// Things worth a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Job(JobEvent),
    /// Registration sent: every pool is recovered (or failed and will be retried).
    Registered,
    /// The kernel answered the registration (Linux) and names its driver's version;
    /// requests follow.
    RegistrationAnswered {
        version: Vec<u8>,
    },
    /// The first message after the registration was not the kernel's answer to it
    /// (Linux): it is served as a request.
    RegistrationUnanswered,
    /// The device was reopened after an error; a request read before was lost (the
    /// kernel answered it `E_FAIL` when the device closed).
    RequestLostToReopen {
        op: Op,
    },
    Malformed(DecodeError),
    IpConfigRefused(IpConfigError),
    /// A SET with an empty key, refused with `INVALID_ARG`.
    EmptyKeyRefused {
        pool: PoolId,
    },
    /// A SET of a new key refused with `S_CONT`: the pool file holds `records` records,
    /// as many as the host may fill (`limit`, [`KvpConfig::host_limit`]) or more than
    /// we hold.
    PoolFull {
        pool: PoolId,
        key: Key,
        records: usize,
        limit: usize,
    },
    /// The request could not be finished in time; answered with this status.
    DeadlineReply {
        op: Op,
        status: Status,
    },
    /// A pool's file could not be brought to a known state; requests on it fail until
    /// recovery succeeds.
    PoolFailed {
        pool: PoolId,
        error: IoError,
    },
    PoolRecovered {
        pool: PoolId,
        records: usize,
    },
    /// A mutation failed part-way; the pool is being recovered.
    MutationInDoubt {
        pool: PoolId,
        error: IoError,
    },
    /// A reply came for an effect we did not start (a driver bug, ignored).
    UnknownEffect(EffectId),
    /// SET_IP_INFO answered `GUID_NOT_FOUND`: the driver found no interface whose
    /// device has the host's adapter GUID (Linux).
    AdapterNotFound {
        adapter: String,
    },
    /// GET_IP_INFO answered `E_FAIL` because every interface holding the MAC is
    /// excluded by kvp.conf's `exclude_interfaces` (named here, kernel order).
    AdapterExcluded {
        mac: Mac,
        interfaces: Vec<String>,
    },
}

#[derive(Debug)]
enum Health {
    /// Not loaded yet, or being recovered.
    Unknown,
    Ready,
    Failed {
        retry_at: Instant,
    },
}

#[derive(Debug)]
struct PoolSlot {
    pool: Pool,
    stamp: Option<FileStamp>,
    /// When we first saw `stamp` (its tick ended by `stamp_since + granularity`).
    stamp_since: Instant,
    /// When the last job that read the file with this stamp started.
    read_at: Instant,
    /// Memory equals the file as of the last write news we consumed (`TakeWrites`):
    /// while the next take says `Quiet`, a read is answered from memory with no look
    /// at the file. Set only by a job that knew the whole file when it took the news;
    /// cleared by anything uncertain (a failed job, news from an unwatched file, a
    /// journal left by another writer); a new process starts without it.
    current: bool,
    health: Health,
}

impl PoolSlot {
    /// Records the stamp a job that started at `started` left us with, at `now`.
    fn set_stamp(&mut self, s: FileStamp, started: Instant, now: Instant) {
        if self.stamp != Some(s) {
            self.stamp = Some(s);
            self.stamp_since = now;
            self.read_at = started;
        } else {
            self.read_at = self.read_at.max(started);
        }
    }

    /// The stamp to compare with, or `None` (reload) while a change within the same
    /// timestamp tick could still hide behind it.
    fn known(&self, granularity: Duration) -> Option<FileStamp> {
        let settled =
            granularity.is_zero() || self.read_at >= self.stamp_since.saturating_add(granularity);
        self.stamp.filter(|_| settled)
    }
}

#[derive(Debug)]
enum Job {
    Recover(Recover),
    Refresh(Refresh),
    Mutate(Mutate),
}

#[derive(Debug)]
struct FileLane {
    job: Job,
    in_flight: Option<EffectId>,
    /// The request this job serves, if that request is still unanswered.
    serves: Option<u64>,
    /// When the job started (its reads happened after this).
    started: Instant,
}

/// The outstanding host request.
#[derive(Debug)]
struct Current {
    seq: u64,
    request: Request,
    deadline: Instant,
    /// Waiting for the file lane to free up (a mutation behind a stuck job).
    waiting: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Recovering,
    Serving,
    ShuttingDown,
    Exited,
}

pub struct KvpMachine {
    config: KvpConfig,
    now: Instant,
    phase: Phase,
    pools: [PoolSlot; 5],
    auto: AutoPool,
    current: Option<Current>,
    /// Registration written, the kernel's answer to it not read yet (Linux).
    awaiting_answer: bool,
    next_seq: u64,
    file: Option<FileLane>,
    /// Pools waiting for the file lane to run recovery, in order.
    recover_queue: VecDeque<PoolId>,
    /// The in-flight system effect and the request it serves.
    system: Option<(EffectId, Option<u64>)>,
    next_effect: u64,
    outputs: VecDeque<Output>,
}

impl KvpMachine {
    /// Starts recovering every file-backed pool; registration follows when done.
    pub fn new(config: KvpConfig, now: Instant, info: &SystemInfo) -> KvpMachine {
        let slot = || PoolSlot {
            pool: Pool::new(),
            stamp: None,
            stamp_since: now,
            read_at: now,
            current: false,
            health: Health::Unknown,
        };
        let auto = AutoPool::new(info, &config.addresses, &config.auto);
        let mut m = KvpMachine {
            config,
            now,
            phase: Phase::Recovering,
            awaiting_answer: false,
            pools: [slot(), slot(), slot(), slot(), slot()],
            auto,
            current: None,
            next_seq: 0,
            file: None,
            recover_queue: PoolId::FILE_BACKED.into_iter().collect(),
            system: None,
            next_effect: 0,
            outputs: VecDeque::new(),
        };
        m.pools[PoolId::Auto.index()].health = Health::Ready;
        m.start_file_work();
        m
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next instant at which `handle(.., Input::Timer)` has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.current.as_ref().map(|c| c.deadline);
        let retry = if self.file.is_none() {
            self.pools
                .iter()
                .filter_map(|p| match p.health {
                    Health::Failed { retry_at } => Some(retry_at),
                    _ => None,
                })
                .min()
        } else {
            None
        };
        deadline.into_iter().chain(retry).min()
    }

    /// Whether the machine has nothing in flight (no request, no effect).
    pub fn is_idle(&self) -> bool {
        self.current.is_none()
            && self.file.is_none()
            && self.system.is_none()
            && self.recover_queue.is_empty()
    }

    /// The pool as held in memory (for the simulator's checks and the tool).
    pub fn pool(&self, id: PoolId) -> &Pool {
        &self.pools[id.index()].pool
    }

    /// The stamp of the pool file as of our last look, once trusted (not while a change
    /// within the same timestamp tick could hide behind it): when the file still has it,
    /// our memory must equal the file (the simulator checks exactly that).
    pub fn pool_stamp(&self, id: PoolId) -> Option<FileStamp> {
        self.pools[id.index()].known(self.config.stamp_granularity)
    }

    /// Whether memory is marked current for a pool: then, while the driver has reported
    /// no write of the pool file since, memory must equal the file (the simulator checks
    /// exactly that).
    pub fn pool_current(&self, id: PoolId) -> bool {
        self.pools[id.index()].current
    }

    /// Whether a pool is loaded and usable.
    pub fn pool_ready(&self, id: PoolId) -> bool {
        matches!(self.pools[id.index()].health, Health::Ready)
    }

    pub fn registered(&self) -> bool {
        matches!(self.phase, Phase::Serving | Phase::ShuttingDown)
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        assert!(
            self.outputs.is_empty(),
            "handle() called with undrained outputs"
        );
        assert!(now >= self.now, "time went backwards: {now} < {}", self.now);
        self.now = now;
        match input {
            Input::DeviceRead(bytes) => self.on_device_read(&bytes),
            Input::DeviceReopened => self.on_reopened(),
            Input::EffectDone { id, result } => self.on_effect(id, result),
            Input::SystemInfo(info) => {
                self.auto = AutoPool::new(&info, &self.config.addresses, &self.config.auto)
            }
            Input::Timer => self.on_timer(),
            Input::Shutdown => {
                if self.phase != Phase::Exited {
                    self.phase = Phase::ShuttingDown;
                }
            }
        }
        if self.phase == Phase::ShuttingDown && self.current.is_none() && self.file.is_none() {
            self.phase = Phase::Exited;
            self.outputs.push_back(Output::Exit);
        }
        assert!(
            self.outputs.len() <= MAX_QUEUED_OUTPUTS,
            "{} outputs queued",
            self.outputs.len()
        );
    }

    fn effect_id(&mut self) -> EffectId {
        self.next_effect += 1;
        EffectId(self.next_effect)
    }

    fn reply(&mut self, reply: Reply) {
        self.current = None;
        self.outputs
            .push_back(Output::DeviceWrite(self.config.layout.encode_reply(&reply)));
    }

    /// Writes the registration; on Linux the kernel's answer is the next read.
    fn register(&mut self) {
        let layout = self.config.layout;
        self.outputs
            .push_back(Output::DeviceWrite(layout.registration()));
        self.awaiting_answer = layout.registration_answered();
    }

    /// Consumes the kernel's answer to our registration (Linux), the first read after
    /// it. False: `bytes` is not the answer, and is served as a request. Only the awaited
    /// read can be the answer: the kernel answers nothing else, and a later message
    /// starting with op 100 is a request we answer (NOT_SUPPORTED), as every read is.
    fn take_registration_answer(&mut self, bytes: &[u8]) -> bool {
        if !std::mem::take(&mut self.awaiting_answer) {
            return false;
        }
        match self.config.layout.registration_answer_version(bytes) {
            Some(version) => {
                self.outputs
                    .push_back(Output::Event(Event::RegistrationAnswered { version }));
                true
            }
            None => {
                self.outputs
                    .push_back(Output::Event(Event::RegistrationUnanswered));
                false
            }
        }
    }

    /// The driver closed and reopened the device after an error (Linux: the service
    /// switched off and on, hibernation): the kernel has answered any request we held
    /// `E_FAIL`, and a reply now would be taken for something else. Register again.
    fn on_reopened(&mut self) {
        if let Some(c) = self.current.take() {
            self.outputs
                .push_back(Output::Event(Event::RequestLostToReopen {
                    op: c.request.op(),
                }));
        }
        if self.registered() {
            self.register();
        }
    }

    fn on_device_read(&mut self, bytes: &[u8]) {
        if self.take_registration_answer(bytes) {
            return;
        }
        if let Some(c) = self.current.take() {
            // The driver read again before we answered: the kernel handed us a new
            // request, so the old one is lost to the host. Answer it so that every read
            // still gets exactly one write.
            self.current = Some(c);
            self.reply(Reply::Status(Status::E_FAIL));
        }
        let layout = self.config.layout;
        let request = match layout.decode_request(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.outputs.push_back(Output::Event(Event::Malformed(e)));
                self.outputs.push_back(Output::DeviceWrite(
                    layout.encode_reply(&Reply::Status(e.status())),
                ));
                return;
            }
        };
        self.next_seq += 1;
        let seq = self.next_seq;
        let deadline = self.now.saturating_add(self.config.reply_budget);
        self.current = Some(Current {
            seq,
            request,
            deadline,
            waiting: false,
        });
        self.serve();
    }

    /// Moves the current request forward as far as it can go now.
    fn serve(&mut self) {
        let Some(c) = self.current.as_ref() else {
            return;
        };
        let seq = c.seq;
        let request = c.request.clone();
        match request {
            // Refused in every pool, before the auto pool's S_CONT: the host cannot look
            // such a key up, and pool readers that split a file at NUL bytes lose their
            // place on it. `hvkvp` refuses it too.
            Request::Set { pool, key, .. } if key.is_empty() => {
                self.outputs
                    .push_back(Output::Event(Event::EmptyKeyRefused { pool }));
                self.reply(Reply::Status(Status::INVALID_ARG));
            }
            Request::Get {
                pool: PoolId::Auto,
                key,
            } => {
                let r = match self.auto.get(&key) {
                    Some(v) => Reply::Value(v.clone()),
                    None => Reply::Status(Status::S_CONT),
                };
                self.reply(r);
            }
            Request::Enumerate {
                pool: PoolId::Auto,
                index,
            } => {
                let r = match self.auto.entry(index) {
                    Some((k, v)) => Reply::Entry {
                        key: k.clone(),
                        value: v.clone(),
                    },
                    None => Reply::Status(Status::S_CONT),
                };
                self.reply(r);
            }
            // The auto pool is generated; the host may not change it (stock behaviour).
            Request::Set {
                pool: PoolId::Auto, ..
            }
            | Request::Delete {
                pool: PoolId::Auto, ..
            } => {
                self.reply(Reply::Status(Status::S_CONT));
            }
            Request::Get { pool, .. } | Request::Enumerate { pool, .. } => {
                if !matches!(self.pools[pool.index()].health, Health::Ready) {
                    self.reply(Reply::Status(Status::E_FAIL));
                } else if self.file.is_some() {
                    // Never wait behind a file job (a write stuck on a suspended file
                    // system): memory holds what the disk durably holds.
                    let _ = self.answer_read();
                } else {
                    let known = self.pools[pool.index()].known(self.config.stamp_granularity);
                    self.start_job(
                        Job::Refresh(Refresh::new(pool, known, self.pools[pool.index()].current)),
                        Some(seq),
                    );
                }
            }
            Request::Set { pool, key, value } => {
                self.serve_mutation(seq, pool, MutOp::Set(key, value))
            }
            Request::Delete { pool, key } => self.serve_mutation(seq, pool, MutOp::Delete(key)),
            Request::GetIpInfo { adapter_id, .. } => match Mac::parse(&adapter_id) {
                None => self.reply(Reply::Status(Status::E_FAIL)),
                Some(mac) => self.start_system(seq, Effect::QueryAdapter(mac)),
            },
            Request::SetIpInfo(fields) => match IpConfig::parse(&fields, self.config.layout) {
                Err(e) => {
                    let status = e.status();
                    self.outputs
                        .push_back(Output::Event(Event::IpConfigRefused(e)));
                    self.reply(Reply::Status(status));
                }
                Ok(config) => {
                    let deadline = self.system_deadline(match self.config.layout {
                        Layout::FreeBsd => KVP_SET_IP_SCRIPT,
                        Layout::Linux => LINUX_KVP_SET_IP_PROGRAMS,
                    });
                    self.start_system(seq, Effect::ApplyIpConfig { config, deadline })
                }
            },
        }
    }

    fn serve_mutation(&mut self, seq: u64, pool: PoolId, op: MutOp) {
        if !matches!(self.pools[pool.index()].health, Health::Ready) {
            self.reply(Reply::Status(Status::E_FAIL));
        } else if self.file.is_some() {
            if let Some(c) = self.current.as_mut() {
                c.waiting = true;
            }
        } else {
            let slot = &self.pools[pool.index()];
            let known = slot.known(self.config.stamp_granularity);
            let job = Mutate::new(pool, op, known, slot.current).within(self.config.host_limit());
            self.start_job(Job::Mutate(job), Some(seq));
        }
    }

    /// Answers the current GET/ENUMERATE from memory.
    fn answer_read(&mut self) -> Status {
        let Some(c) = self.current.as_ref() else {
            return Status::E_FAIL;
        };
        let reply = match &c.request {
            Request::Get { pool, key } => match self.pools[pool.index()].pool.get(key) {
                Some(v) => Reply::Value(v.clone()),
                None => Reply::Status(Status::S_CONT),
            },
            Request::Enumerate { pool, index } => match self.pools[pool.index()].pool.entry(*index)
            {
                Some(r) => Reply::Entry {
                    key: r.key.clone(),
                    value: r.value.clone(),
                },
                None => Reply::Status(Status::S_CONT),
            },
            other => unreachable!("answer_read for {:?}", other.op()),
        };
        let status = reply.status();
        self.reply(reply);
        status
    }

    /// The deadline of a system effect serving the current request: at most `want`, and
    /// ending [`KVP_EFFECT_MARGIN`] before the request's reply is due.
    fn system_deadline(&self, want: Duration) -> Duration {
        let reply_by = self.current.as_ref().map_or(self.now, |c| c.deadline);
        let d = want.min(
            reply_by
                .saturating_since(self.now)
                .saturating_sub(KVP_EFFECT_MARGIN),
        );
        assert!(
            self.now.saturating_add(d).saturating_add(KVP_EFFECT_MARGIN) <= reply_by || d.is_zero(),
            "a system effect must end before its request's reply is due"
        );
        d
    }

    fn start_system(&mut self, seq: u64, effect: Effect) {
        if self.system.is_some() {
            // The previous query is stuck; do not pile up behind it.
            self.reply(Reply::Status(Status::E_FAIL));
            return;
        }
        let id = self.effect_id();
        self.system = Some((id, Some(seq)));
        self.outputs.push_back(Output::Effect { id, effect });
    }

    fn start_job(&mut self, job: Job, serves: Option<u64>) {
        assert!(self.file.is_none(), "one file job at a time");
        self.file = Some(FileLane {
            job,
            in_flight: None,
            serves,
            started: self.now,
        });
        self.resume_job(None);
    }

    fn resume_job(&mut self, result: Option<EffectResult>) {
        let Some(lane) = self.file.as_mut() else {
            return;
        };
        let (step, events) = match &mut lane.job {
            Job::Recover(j) => (j.resume(result), std::mem::take(&mut j.events)),
            Job::Refresh(j) => (j.resume(result), std::mem::take(&mut j.events)),
            Job::Mutate(j) => {
                let pool = j.pool();
                let current = &self.pools[pool.index()].pool;
                (j.resume(result, current), std::mem::take(&mut j.events))
            }
        };
        for e in events {
            self.outputs.push_back(Output::Event(Event::Job(e)));
        }
        match step {
            Step::Effect(effect) => {
                debug_assert_eq!(effect.lane(), Lane::File);
                let id = self.effect_id();
                if let Some(lane) = self.file.as_mut() {
                    lane.in_flight = Some(id);
                }
                self.outputs.push_back(Output::Effect { id, effect });
            }
            Step::Finished(outcome) => {
                let (serves, started, op) = self.file.take().map_or((None, self.now, None), |l| {
                    let op = match l.job {
                        Job::Mutate(m) => Some(m.op().clone()),
                        _ => None,
                    };
                    (l.serves, l.started, op)
                });
                self.job_finished(outcome, serves, started, op);
                self.start_file_work();
            }
        }
    }

    fn serves_current(&self, serves: Option<u64>) -> bool {
        serves.is_some() && self.current.as_ref().map(|c| c.seq) == serves
    }

    /// `op`: what a finished `Mutate` was asked to do.
    fn job_finished(
        &mut self,
        outcome: JobOutcome,
        serves: Option<u64>,
        started: Instant,
        op: Option<MutOp>,
    ) {
        let answer = self.serves_current(serves);
        let now = self.now;
        match outcome {
            JobOutcome::Refreshed {
                pool,
                journal_pending: true,
                ..
            } => {
                self.pools[pool.index()].current = false;
                // Another writer's entry waits in the journal: recover before answering
                // from this pool, and let the host ask again.
                self.pools[pool.index()].health = Health::Unknown;
                self.recover_queue.push_front(pool);
                if answer {
                    self.reply(Reply::Status(Status::E_FAIL));
                }
            }
            JobOutcome::Refreshed {
                pool,
                result,
                current,
                ..
            } => match result {
                Ok(reload) => {
                    self.pools[pool.index()].current = current;
                    if let Some((p, s)) = reload {
                        let slot = &mut self.pools[pool.index()];
                        slot.pool = p;
                        slot.set_stamp(s, started, now);
                    }
                    if answer {
                        let _ = self.answer_read();
                    }
                }
                // The file could not be read: memory may miss what others wrote, so say
                // so rather than answer from it.
                Err(_) => {
                    self.pools[pool.index()].current = false;
                    if answer {
                        self.reply(Reply::Status(Status::E_FAIL));
                    }
                }
            },
            JobOutcome::Mutated {
                pool,
                reload,
                result,
                current,
            } => {
                let slot = &mut self.pools[pool.index()];
                slot.current = current;
                if let Some((p, s)) = reload {
                    slot.pool = p;
                    slot.set_stamp(s, started, now);
                }
                let status = match result {
                    MutateResult::Applied { mutation, stamp } => {
                        slot.pool.apply(&mutation);
                        slot.set_stamp(stamp, started, now);
                        Status::OK
                    }
                    MutateResult::Nothing(Outcome::Ok) => Status::OK,
                    MutateResult::Nothing(Outcome::NotFound) => Status::S_CONT,
                    MutateResult::Nothing(Outcome::Full) => match op {
                        // A new key the pool has no room for (the host's budget, or a
                        // file past what we hold): refused as the stock daemon refuses
                        // a SET it cannot store, a definite "not stored".
                        Some(MutOp::Set(key, _)) => {
                            self.outputs.push_back(Output::Event(Event::PoolFull {
                                pool,
                                key,
                                records: slot.pool.file_records(),
                                limit: self.config.host_limit(),
                            }));
                            Status::S_CONT
                        }
                        // A DELETE in a file past what we hold: not carried out.
                        _ => Status::E_FAIL,
                    },
                    MutateResult::Failed(_) => Status::E_FAIL,
                    MutateResult::JournalPending => {
                        // Another writer's entry waits in the journal: recover, and let
                        // the host try again.
                        slot.health = Health::Unknown;
                        self.recover_queue.push_front(pool);
                        Status::E_FAIL
                    }
                    MutateResult::InDoubt(error) => {
                        slot.health = Health::Unknown;
                        self.outputs
                            .push_back(Output::Event(Event::MutationInDoubt { pool, error }));
                        self.recover_queue.push_front(pool);
                        Status::E_FAIL
                    }
                };
                if answer {
                    self.reply(Reply::Status(status));
                }
            }
            JobOutcome::Recovered {
                pool,
                result,
                current,
            } => {
                let slot = &mut self.pools[pool.index()];
                slot.current = current;
                match result {
                    Ok((p, s)) => {
                        let records = p.len();
                        slot.pool = p;
                        slot.set_stamp(s, started, now);
                        slot.health = Health::Ready;
                        self.outputs
                            .push_back(Output::Event(Event::PoolRecovered { pool, records }));
                    }
                    Err(error) => {
                        slot.health = Health::Failed {
                            retry_at: self.now.saturating_add(self.config.recovery_retry),
                        };
                        self.outputs
                            .push_back(Output::Event(Event::PoolFailed { pool, error }));
                    }
                }
            }
        }
    }

    /// Starts whatever file work is due: queued recovery first, then a waiting
    /// mutation; registers once start-up recovery is done.
    fn start_file_work(&mut self) {
        if self.file.is_some() {
            return;
        }
        if let Some(pool) = self.recover_queue.pop_front() {
            self.start_job(Job::Recover(Recover::new(pool)), None);
            return;
        }
        if self.phase == Phase::Recovering {
            self.phase = Phase::Serving;
            self.register();
            self.outputs.push_back(Output::Event(Event::Registered));
        }
        if self.current.as_ref().is_some_and(|c| c.waiting) {
            if let Some(c) = self.current.as_mut() {
                c.waiting = false;
            }
            self.serve();
        }
    }

    fn on_effect(&mut self, id: EffectId, result: EffectResult) {
        if self.file.as_ref().and_then(|l| l.in_flight) == Some(id) {
            if let Some(l) = self.file.as_mut() {
                l.in_flight = None;
            }
            self.resume_job(Some(result));
            return;
        }
        match self.system {
            Some((sid, serves)) if sid == id => {
                self.system = None;
                if !self.serves_current(serves) {
                    return;
                }
                let Some(Current { request, .. }) = self.current.as_ref() else {
                    return;
                };
                let reply = match (request, result) {
                    (Request::GetIpInfo { adapter_id, .. }, EffectResult::Adapters(found)) => {
                        let chosen = self.config.addresses.choose(&found);
                        match (Mac::parse(adapter_id), chosen) {
                            (Some(mac), Some(info)) => Reply::IpInfo(info.to_fields(mac)),
                            (Some(mac), None) if !found.is_empty() => {
                                // Said, or the administrator sees only a VM without
                                // addresses in Hyper-V Manager.
                                let interfaces = found.into_iter().map(|a| a.interface).collect();
                                self.outputs
                                    .push_back(Output::Event(Event::AdapterExcluded {
                                        mac,
                                        interfaces,
                                    }));
                                Reply::Status(Status::E_FAIL)
                            }
                            _ => Reply::Status(Status::E_FAIL),
                        }
                    }
                    (Request::SetIpInfo(_), EffectResult::Done) => Reply::Status(Status::OK),
                    // Linux: no interface's vmbus device has the host's GUID, the
                    // stock daemon's GUID_NOT_FOUND (docs/protocol/linux.md §1.7).
                    (Request::SetIpInfo(fields), EffectResult::NoSuchAdapter) => {
                        let adapter = String::from_utf8_lossy(&fields.adapter_id).into_owned();
                        self.outputs
                            .push_back(Output::Event(Event::AdapterNotFound { adapter }));
                        Reply::Status(Status::GUID_NOT_FOUND)
                    }
                    _ => Reply::Status(Status::E_FAIL),
                };
                self.reply(reply);
            }
            _ => self
                .outputs
                .push_back(Output::Event(Event::UnknownEffect(id))),
        }
    }

    fn on_timer(&mut self) {
        if let Some(c) = self.current.as_ref() {
            if self.now >= c.deadline {
                let op = c.request.op();
                let reads = matches!(c.request, Request::Get { .. } | Request::Enumerate { .. });
                if reads {
                    // The refresh did not finish: answer from what we hold.
                    let status = self.answer_read();
                    self.outputs
                        .push_back(Output::Event(Event::DeadlineReply { op, status }));
                } else {
                    // A mutation still running continues; its outcome reaches memory
                    // when it finishes. One that never started is dropped.
                    self.reply(Reply::Status(Status::E_FAIL));
                    self.outputs.push_back(Output::Event(Event::DeadlineReply {
                        op,
                        status: Status::E_FAIL,
                    }));
                }
            }
        }
        if self.file.is_none() {
            let due = PoolId::FILE_BACKED.into_iter().find(|p| {
                matches!(self.pools[p.index()].health, Health::Failed { retry_at } if retry_at <= self.now)
            });
            if let Some(pool) = due {
                self.pools[pool.index()].health = Health::Unknown;
                self.recover_queue.push_back(pool);
                self.start_file_work();
            }
        }
    }
}
