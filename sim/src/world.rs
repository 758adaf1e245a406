//! The simulated world: one seed, a virtual clock, the kernel, the host, the daemon
//! process, outside writers and faults, with invariants checked after every step.

use std::collections::VecDeque;
use std::time::Duration;

use crate::network::Network;
use hvguest_core::kvp::effect::{EffectResult, FileId, Input, IoError};
use hvguest_core::kvp::machine::{Event, KvpConfig};
use hvguest_core::kvp::record::{decode_pool, PoolIssue, Record};
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{self, Op, PoolId, Reply, Request, Status};
use hvguest_core::limits::{HOST_POOL_RECORDS, POOL_RECORD_SIZE};
use hvguest_core::Instant;

use crate::daemon::{DaemonSetup, Latency, Observed, ResultSeen, SimDaemon, SimNet};
use crate::fs::{FsCall, Owner, SimFs};
use crate::harness::test_info;
use crate::host::{
    check_reply, check_walk, expected_auto, model_pools, random_auto_override, ExpectedAuto,
    Mismatch, Model, Next, Walk, Workload, OUTSIDE_PREFIX,
};
use crate::host_wire;
use crate::kernel::{HostRequest, KernelOut, SimKernel};
use crate::prng::Prng;
use crate::trace::{self, Trace};
use crate::vss::VssSetup;
use hvguest_core::vss::wire::VssOp;

/// `logf!(world, who, "format", args…)`: a trace line formatted straight into the trace
/// (see [`Trace::line_args`]), for the lines every request writes; `log` with a
/// `format!` would make and drop a string per line.
macro_rules! logf {
    ($w:expr, $who:expr, $($arg:tt)*) => {
        $w.trace.line_args($w.now, $who, format_args!($($arg)*))
    };
}

mod outside;
mod tool_side;
mod vss_side;
pub use outside::OutsideOp;
pub use tool_side::ToolPart;
pub use vss_side::VssPart;

/// Something a scenario (or the random fault schedule) makes happen.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Host(Request),
    HostRaw(Vec<u8>),
    Walk(PoolId),
    /// Another program appends a record under the lock (cloud-init style).
    Append {
        pool: PoolId,
        key: Key,
        value: Value,
    },
    /// Another program empties a pool file (cloud-init at boot).
    Truncate(PoolId),
    /// Another program's torn append, in-place rewrite or shift-down delete.
    Outside(PoolId, OutsideOp),
    /// Power loss, then a restart.
    Crash,
    /// `kill -9`, then a restart: volatile bytes stay.
    Kill,
    /// Power loss after this many more effects of the daemon, then a restart.
    CrashAfter(u64),
    Fault {
        call: FsCall,
        file: Option<String>,
        error: IoError,
    },
    Freeze,
    Thaw,
    /// The next effect takes this long.
    Slow(Duration),
    /// Stop the host; let the daemon finish (SIGTERM).
    Shutdown,
    /// The host sends a VSS request once the previous one is answered.
    Vss(VssOp),
    /// The host sends a VSS request now, even while one is pending.
    VssNow(VssOp),
    /// The VSS daemon is killed (and restarted).
    VssCrash,
    /// The freezer process crashes.
    FreezerCrash,
    /// Linux: the VSS daemon and its freezer are killed together (and the daemon
    /// restarted).
    VssCrashBoth,
    /// The freezer's next UFSSUSPEND never returns.
    FreezerHang,
    /// Linux: the KVP device goes away and comes back (the Data Exchange service
    /// switched off and on, hibernation): the kernel fails the request it held, the
    /// daemon reopens the device and registers again (docs/protocol/linux.md §1.3).
    DeviceReset,
}

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    /// Host requests to complete (random mode).
    pub requests: u64,
    pub faults: bool,
    pub keep_trace: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub requests: u64,
    pub replies_ok: u64,
    pub timeouts: u64,
    pub crashes: u64,
    pub faults: u64,
    pub freezes: u64,
    pub appends: u64,
    /// Operations the tool (`hvkvp`) carried out, and crashes injected into them.
    pub tool_ops: u64,
    pub tool_crash_points: u64,
    /// Linux VSS worlds, and in them: FREEZEs answered OK; freezer deaths with
    /// something frozen and the daemon alive; daemon deaths leaving something frozen;
    /// file systems thawed by each guardian (the reaper, `ExecStopPost=`, start-up).
    pub linux_vss: LinuxVssStats,
    pub trace_hash: u64,
    pub trace_lines: u64,
    pub virtual_ms: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LinuxVssStats {
    pub worlds: u64,
    pub freezes_ok: u64,
    pub freezer_deaths: u64,
    pub daemon_deaths: u64,
    pub reaper_thaws: u64,
    pub stop_post_thaws: u64,
    pub startup_thaws: u64,
    pub device_resets: u64,
}

impl LinuxVssStats {
    pub fn add(&mut self, o: &LinuxVssStats) {
        self.worlds += o.worlds;
        self.freezes_ok += o.freezes_ok;
        self.freezer_deaths += o.freezer_deaths;
        self.daemon_deaths += o.daemon_deaths;
        self.reaper_thaws += o.reaper_thaws;
        self.stop_post_thaws += o.stop_post_thaws;
        self.startup_thaws += o.startup_thaws;
        self.device_resets += o.device_resets;
    }
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub violation: String,
    pub at: Instant,
    pub tail: Vec<String>,
}

struct Outstanding {
    id: u64,
    request: Option<Request>,
    /// The daemon generation it was handed to; `None` until delivered.
    delivered_to: Option<u32>,
    /// Handed again to a restarted daemon (a stale request, docs/protocol/kvp.md §2.3).
    redelivered: bool,
    walk_step: bool,
    /// The daemon was busy with a file job when the request arrived: a read is then
    /// answered from memory (by design: reads go on while a write is stuck), which may
    /// miss what other programs wrote since the last look.
    busy_at_delivery: bool,
    /// A system-lane effect of an earlier request was still running when this one
    /// arrived: a GET/SET_IP_INFO is then refused (E_FAIL) rather than queued.
    system_busy_at_delivery: bool,
    /// When the request was first handed to a daemon.
    delivered_at: Option<Instant>,
    /// A malformed message with one defect, or a SET the daemon must refuse (an empty
    /// key): the status it must get.
    malformed_status: Option<Status>,
    /// The device was reset while the daemon held it: the kernel failed it, so no
    /// answer from the daemon is owed.
    lost_to_reset: bool,
    /// The guest pool as it was before each outside change made while this request
    /// was with the daemon (at most [`EARLIER_GUEST_POOLS`]): the daemon may have read
    /// the file before such a change and answered after it, which is no stale read.
    guest_pool_before_outside: Vec<Vec<u8>>,
}

/// How many earlier guest pools a request keeps for the freshness check.
pub(crate) const EARLIER_GUEST_POOLS: usize = 8;

pub struct World {
    pub now: Instant,
    opts: SimOptions,
    fs: SimFs,
    net: SimNet,
    kernel: SimKernel,
    daemon: Option<SimDaemon>,
    setup: DaemonSetup,
    generation: u32,
    restart_at: Option<Instant>,
    thaw_at: Option<Instant>,
    /// Since when the daemon has said it serves while the kernel holds no registration
    /// from it (`check_registered`).
    unregistered_since: Option<Instant>,
    /// Linux: reset the device the next time the daemon holds a request
    /// (`reset_while_held`).
    reset_armed: bool,
    crash_pending: bool,
    model: Model,
    auto: ExpectedAuto,
    /// The guest's interfaces and kvp.conf's choice among them; `net` is what the
    /// daemon's queries see of it.
    network: Network,
    workload: Workload,
    faults_prng: Prng,
    crash_prng: Prng,
    outstanding: Option<Outstanding>,
    walk: Option<Walk>,
    next_host_at: Instant,
    next_id: u64,
    /// I/O errors were injected or the file system froze since the last check: reads
    /// may fail.
    errors_possible: bool,
    /// Records other programs wrote to the guest pool and have not removed: each must
    /// stay the first match of its (unique) key with this value.
    outside_records: Vec<(Key, Value)>,
    /// Outside keys another program removed (while the file held them once): they
    /// must never come back.
    outside_removed: Vec<Key>,
    /// Guest pool files another program left with a torn tail the daemon has not cut yet.
    outside_torn: bool,
    /// Another program's append or same-size rewrite that found the pool locked and
    /// waits for the lock (cloud-init blocks in `flock`): carried out the moment the
    /// lock is free, between two of the daemon's effects, as a blocked writer would be.
    /// Catches a daemon that relies on nobody writing right after it unlocks (write
    /// news consumed after the unlock, say).
    outside_waiting: Option<(PoolId, OutsideOp)>,
    /// Draws for those waiting writers, a stream of its own so that every other draw
    /// of a seed stays as it was.
    waiting_prng: Prng,
    /// Post images of crashed appends another program may have moved before recovery.
    residue: Vec<(Vec<u8>, bool)>,
    /// Torn in-place writes of ours (a SET of a present key, a DELETE's fill of the
    /// hole: some sectors the slot's pre image, some its post image, as a power loss
    /// leaves them) that another program copied down while the journal held their
    /// entry, where recovery cannot find them: the exact bytes moved.
    torn_residue: Vec<Vec<u8>>,
    /// Host-key values a pool held when another program emptied it under a running
    /// daemon: until the daemon next loads that pool, a read it answers from memory (its
    /// file lane busy, or at its deadline) may still show them.
    emptied_in_memory: Vec<(PoolId, Key, Value)>,
    /// Outside keys a GET asked for, with where the reply must come from.
    outside_seq: u64,
    checkpoint_due: bool,
    /// The VSS side, when the world has one.
    vss: Option<VssPart>,
    /// Chooses the host's backups and the VSS faults in random runs.
    vss_prng: Option<Prng>,
    /// The tool (`hvkvp`), a second journaling writer, in random runs with faults.
    tool: Option<ToolPart>,
    pub trace: Trace,
    pub stats: Stats,
    obs: Vec<Observed>,
    /// The daemon's last reply with the trace's words for it: the host's line for the
    /// same bytes says the same, and decoding and describing every reply twice was a
    /// visible part of a random run's time.
    last_reply: Option<(Option<Op>, wire::Message, String)>,
    /// Whose kernel the device belongs to (one world in four is Linux's).
    host_kernel: host_wire::Kernel,
    violation: Option<String>,
}

fn path(p: PoolId) -> &'static str {
    crate::fs::name_of(FileId::pool(p))
}

impl World {
    pub fn new(opts: SimOptions, fs: SimFs) -> World {
        let waiting_prng = Prng::new(opts.seed).fork("waiting");
        let master = Prng::new(opts.seed);
        let info = test_info();
        let network = Network::fixed();
        let net = SimNet {
            adapters: network.adapters(),
            nic_guids: network.nic_guids(),
            ..SimNet::default()
        };
        let setup = DaemonSetup {
            config: KvpConfig::default(),
            info: info.clone(),
            latency: Latency::default(),
            watches: true,
        };
        World {
            now: Instant::from_millis(0),
            auto: expected_auto(&info, &network, &[]),
            network,
            workload: Workload::new(master.fork("host")),
            faults_prng: master.fork("faults"),
            crash_prng: master.fork("crash"),
            trace: Trace::new(opts.keep_trace),
            opts,
            fs,
            net,
            kernel: SimKernel::new(),
            daemon: None,
            setup,
            generation: 0,
            restart_at: None,
            thaw_at: None,
            crash_pending: false,
            model: Model::default(),
            outstanding: None,
            walk: None,
            next_host_at: Instant::from_millis(0),
            next_id: 0,
            errors_possible: false,
            outside_records: Vec::new(),
            outside_removed: Vec::new(),
            outside_torn: false,
            outside_waiting: None,
            waiting_prng,
            residue: Vec::new(),
            torn_residue: Vec::new(),
            emptied_in_memory: Vec::new(),
            outside_seq: 0,
            checkpoint_due: false,
            vss: None,
            vss_prng: None,
            tool: None,
            stats: Stats::default(),
            obs: Vec::new(),
            last_reply: None,
            host_kernel: host_wire::Kernel::FreeBsd,
            unregistered_since: None,
            reset_armed: false,
            violation: None,
        }
    }

    fn log(&mut self, who: &str, text: &str) {
        self.trace.line(self.now, who, text);
    }

    fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.log("VIOLATE", &what);
            self.violation = Some(what);
        }
    }

    /// Seeds the model with what the initial files hold (scenarios start from them).
    fn adopt_initial_files(&mut self) {
        for p in model_pools() {
            let d = decode_pool(self.fs.contents(path(p)));
            for r in &d.records {
                if !r.key.as_bytes().starts_with(OUTSIDE_PREFIX.as_bytes()) {
                    self.model.adopt(p, &r.key, r.value.clone());
                }
            }
        }
    }

    /// Gives the world a VSS side: the kernel's VSS devices, the VSS daemon, the
    /// application helper if the setup has one, the freezer and the hooks.
    pub fn with_vss(mut self, setup: VssSetup) -> World {
        self.vss = Some(VssPart::new(setup));
        self
    }

    fn start_daemon(&mut self) {
        self.generation += 1;
        logf!(self, "world", "daemon #{} starts", self.generation);
        let mut obs = std::mem::take(&mut self.obs);
        self.daemon = Some(SimDaemon::start(
            self.generation,
            self.now,
            &self.setup,
            &mut self.fs,
            &mut self.net,
            &mut obs,
        ));
        self.obs = obs;
        self.checkpoint_due = true;
        self.route();
    }

    /// Moves observations from the daemon to the kernel and back until quiet.
    fn route(&mut self) {
        let mut kernel_out = Vec::new();
        // Observations are swapped out in batches; the emptied batch goes back to the
        // daemon's side, so the two buffers are reused instead of allocated per round.
        let mut obs = Vec::new();
        loop {
            std::mem::swap(&mut obs, &mut self.obs);
            if obs.is_empty() && kernel_out.is_empty() {
                break;
            }
            for o in obs.drain(..) {
                self.observe(o, &mut kernel_out);
            }
            let outs = std::mem::take(&mut kernel_out);
            for k in outs {
                self.kernel_event(k);
            }
        }
    }

    fn observe(&mut self, o: Observed, kernel_out: &mut Vec<KernelOut>) {
        match o {
            Observed::DeviceWrite(bytes) => {
                let op = self
                    .outstanding
                    .as_ref()
                    .and_then(|o| o.request.as_ref().map(Request::op));
                let text = if matches!(bytes[0], 4 | 100)
                    && bytes[1..].iter().all(|&b| b == 0)
                    && !self.kernel.registered()
                {
                    self.log("daemon", "write registration");
                    None
                } else {
                    let text = trace::reply(op, &bytes[..]);
                    logf!(self, "daemon", "reply {text}");
                    Some(text)
                };
                if let Err(v) = self
                    .kernel
                    .on_daemon_write(self.now, &bytes[..], kernel_out)
                {
                    // Catches a second write per request, a write after the deadline,
                    // or a reply the kernel would not accept.
                    self.fail(format!("device contract: {v:?}"));
                }
                self.last_reply = text.map(|t| (op, bytes, t));
            }
            Observed::Event(e) => {
                if let Event::Job(j) = &e {
                    if matches!(j, hvguest_core::kvp::jobs::JobEvent::Loaded { .. }) {
                        return; // noisy and implied by the effects
                    }
                }
                logf!(self, "event", "{e:?}");
            }
            Observed::Effect(id, e) => {
                logf!(self, "effect", "#{} {}", id.0, trace::EffectText(&e));
            }
            // `done` is implied by the next line; other results carry information.
            Observed::Result(_, ResultSeen::Other(EffectResult::Done)) => {}
            // As `trace::result` tells `EffectResult::Data`.
            Observed::Result(id, ResultSeen::Data(len)) => {
                logf!(self, "result", "#{} {len}B", id.0)
            }
            Observed::Result(id, ResultSeen::Other(r)) => {
                logf!(self, "result", "#{} {}", id.0, trace::ResultText(&r))
            }
            Observed::Parked(id) => {
                logf!(self, "effect", "#{} blocked", id.0);
                if self
                    .daemon
                    .as_ref()
                    .is_some_and(|d| d.effect_budget == Some(0))
                {
                    self.crash_pending = true;
                }
            }
            Observed::Exit => self.log("daemon", "exit"),
        }
    }

    fn kernel_event(&mut self, k: KernelOut) {
        match k {
            KernelOut::Registered => self.log("kernel", "registered"),
            KernelOut::NotForwarded { id } => {
                logf!(self, "kernel", "#{id} not forwarded: daemon busy")
            }
            KernelOut::LateReplyDropped { id, stale } => {
                self.log("kernel", &format!("late reply dropped (request {id:?})"));
                // A re-delivered request's deadline ran from its first hand-off, to a
                // daemon that died; only a live request answered late is our fault.
                if id.is_some() && !stale {
                    self.fail("a reply came after the kernel's deadline".into());
                }
            }
            KernelOut::Deliver { id, bytes } => {
                match id {
                    Some(i) => logf!(self, "kernel", "deliver #{i}"),
                    // Linux's kernel re-delivers nothing: its only message for no
                    // request is the answer to the registration.
                    None if self.host_kernel == host_wire::Kernel::Linux => {
                        self.log("kernel", "deliver the answer to the registration")
                    }
                    None => self.log("kernel", "deliver stale request"),
                }
                let busy = self.daemon.as_ref().is_some_and(|d| !d.machine.is_idle());
                let system_busy = self.daemon.as_ref().is_some_and(SimDaemon::system_busy);
                if let Some(o) = self.outstanding.as_mut().filter(|o| Some(o.id) == id) {
                    o.busy_at_delivery |= busy;
                    o.system_busy_at_delivery |= system_busy;
                    o.delivered_at.get_or_insert(self.now);
                    // A re-delivery after a restart keeps its first hand-off: the kernel's 5 s
                    // run from there, not from the new daemon's read.
                    o.redelivered |= o.delivered_to.is_some();
                    o.delivered_to.get_or_insert(self.generation);
                }
                if let Some(d) = self.daemon.as_mut() {
                    let mut obs = std::mem::take(&mut self.obs);
                    d.handle(
                        self.now,
                        Input::DeviceRead(bytes),
                        &mut self.fs,
                        &mut self.net,
                        &mut obs,
                    );
                    self.obs = obs;
                }
            }
            KernelOut::HostReply {
                id,
                bytes,
                timed_out,
            } => self.host_reply(id, &bytes, timed_out),
        }
    }

    fn host_reply(&mut self, id: u64, bytes: &[u8], timed_out: bool) {
        let Some(o) = self.outstanding.take().filter(|o| o.id == id) else {
            self.fail(format!(
                "reply to request #{id} that the host is not waiting for"
            ));
            return;
        };
        self.stats.requests += 1;
        if timed_out {
            self.stats.timeouts += 1;
            // Our daemon answers every request it was handed, in time, unless it died.
            if !o.lost_to_reset
                && o.delivered_to
                    .is_some_and(|g| g == self.generation && self.daemon.is_some())
            {
                self.fail(format!(
                    "request #{id} was handed to the daemon and not answered by the kernel's deadline"
                ));
            }
        }
        let Some(req) = o.request else {
            let text = self.reply_text(None, bytes);
            logf!(self, "host", "#{id} <- {text}");
            // Malformed: the status our decisions give its one defect, else any status
            // but OK; never a crash. (A timed-out request got the kernel's E_FAIL.)
            let got = Status(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
            match o.malformed_status {
                Some(want) if got != want && !timed_out => self.fail(format!(
                    "malformed request #{id} answered {got:?}, expected {want:?}"
                )),
                _ if got == Status::OK => self.fail(format!("malformed request #{id} answered OK")),
                _ => {}
            }
            return;
        };
        if let Some(want) = o.malformed_status {
            // A request the daemon must refuse (a SET of an empty key): exactly its
            // status, and nothing stored (the model is left as it was).
            let got = Status(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
            let text = self.reply_text(Some(req.op()), bytes);
            logf!(self, "host", "#{id} <- {text}");
            if got != want && !timed_out {
                self.fail(format!(
                    "{} answered {got:?}, expected {want:?}",
                    trace::request(&req)
                ));
            }
            return;
        }
        // Decoded by the host's own codec, from the spec's offsets: catches a reply
        // field written at the wrong offset or left unterminated by the core.
        let reply = match host_wire::decode(self.host_kernel, req.op(), bytes) {
            Ok(r) => r,
            Err(e) => return self.fail(format!("undecodable reply: {}", e.0)),
        };
        let text = self.reply_text(Some(req.op()), bytes);
        logf!(self, "host", "#{id} <- {text}");
        if reply.status() == Status::OK {
            self.stats.replies_ok += 1;
        }
        // A guest-pool read that finds an entry left in the journal by a writer that
        // died (the tool killed mid-change) answers E_FAIL while it recovers the pool
        // first, by design (see `check_fresh`).
        let guest_journal_pending = matches!(
            &req,
            Request::Get {
                pool: PoolId::Guest,
                ..
            }
        ) && !self
            .fs
            .contents(crate::fs::name_of(
                hvguest_core::kvp::effect::FileId::journal(PoolId::Guest),
            ))
            .is_empty();
        let failed_ok = timed_out || self.errors_possible || guest_journal_pending;
        // Answered at its deadline: a system query that took too long (a slow effect)
        // is answered E_FAIL, as the kernel's own timeout would be.
        let late = o
            .delivered_at
            .is_some_and(|t| self.now >= t.saturating_add(self.setup.config.reply_budget));
        let residue = match (&req, &reply) {
            (Request::Get { pool, key }, r) => {
                let v = match r {
                    Reply::Value(v) => Some(v.as_bytes()),
                    _ => None,
                };
                *pool == PoolId::Guest && self.residue_key(key.as_bytes(), v)
            }
            (Request::Enumerate { pool, .. }, Reply::Entry { key, value }) => {
                *pool == PoolId::Guest && self.residue_key(key.as_bytes(), Some(value.as_bytes()))
            }
            _ => false,
        };
        if residue {
            // A residue record may show under this key: not checked (see is_residue).
            if let Some(w) = self.walk.as_mut() {
                w.disturbed = true;
            }
        }
        // A read answered at its deadline, its refresh unfinished, comes from memory by
        // design (as does one that arrived while a file job ran).
        let at_deadline = o
            .delivered_at
            .is_some_and(|d| self.now.saturating_since(d) >= self.setup.config.reply_budget);
        let from_memory = o.busy_at_delivery || at_deadline;
        if let Request::Get {
            pool: PoolId::Guest,
            key,
        } = &req
        {
            if !from_memory {
                self.check_fresh(key, &reply, failed_ok, &o.guest_pool_before_outside);
            }
        }
        // A SET refused for want of room (S_CONT): only a new key, only when the file
        // already holds the host's budget (HOST_POOL_RECORDS) or more; nothing stored.
        let refused_full = match (&req, &reply) {
            (Request::Set { pool, key, .. }, Reply::Status(Status::S_CONT))
                if *pool != PoolId::Auto =>
            {
                let records = self.fs.contents(path(*pool)).len() / POOL_RECORD_SIZE;
                if records < HOST_POOL_RECORDS {
                    self.fail(format!(
                        "SET {pool:?} {key:?} refused as full while the file holds {records} \
                         records, fewer than the host's budget of {HOST_POOL_RECORDS}"
                    ));
                } else if !self.model.possible(*pool, key).contains(&None) {
                    self.fail(format!(
                        "SET {pool:?} {key:?} refused as full, but the key is there: an \
                         update in place grows nothing"
                    ));
                }
                true
            }
            _ => false,
        };
        if residue
            || refused_full
            || self.tool_stale_read(&req, &reply)
            || self.emptied_stale_read(&req, &reply, from_memory)
        {
            // A residue record, a tool key's stale read (accepted, see `tool_side`), or
            // memory from before another program emptied the pool (see `emptied`):
            // not an observation.
        } else if let Err(m) =
            self.network
                .check_ip_info(&req, &reply, timed_out || late || o.system_busy_at_delivery)
        {
            self.fail(m);
        } else if let Err(m) = self.network.check_set_ip(
            &req,
            &reply,
            self.host_kernel == host_wire::Kernel::Linux,
            timed_out || late || o.system_busy_at_delivery,
        ) {
            self.fail(m);
        } else if let Err(Mismatch(m)) = check_reply(
            &mut self.model,
            &self.auto,
            &req,
            &reply,
            failed_ok,
            o.redelivered,
        ) {
            self.fail(m);
        }
        if o.walk_step {
            self.walk_step(&req, &reply);
        } else if matches!(req, Request::Set { .. } | Request::Delete { .. }) {
            if let Some(w) = self.walk.as_mut() {
                w.disturbed = true;
            }
        }
    }

    /// `trace::reply(op, bytes)`, taken from the daemon's last reply when these are its
    /// bytes (the kernel forwards them unchanged unless it answered by itself).
    fn reply_text(&mut self, op: Option<Op>, bytes: &[u8]) -> String {
        match self.last_reply.take() {
            Some((o, b, text)) if o == op && b[..] == *bytes => text,
            _ => trace::reply(op, bytes),
        }
    }

    fn walk_step(&mut self, req: &Request, reply: &Reply) {
        let Some(mut w) = self.walk.take() else {
            return;
        };
        match reply {
            Reply::Entry { key, value } => {
                w.seen.push((key.clone(), value.clone()));
                w.next += 1;
                self.walk = Some(w);
            }
            Reply::Status(Status::S_CONT) if !w.disturbed && w.pool != Some(PoolId::Auto) => {
                if let Err(Mismatch(m)) = check_walk(&mut self.model, &w) {
                    self.fail(m);
                }
            }
            _ => {
                let _ = req;
            }
        }
    }

    fn submit(&mut self, request: Option<Request>, raw: Option<Vec<u8>>, walk_step: bool) {
        self.next_id += 1;
        let id = self.next_id;
        let bytes = match (&request, raw) {
            // Encoded by the host's own codec: catches a request field the core
            // decodes from the wrong offset.
            (Some(r), _) => {
                let bytes = host_wire::encode(self.host_kernel, r);
                // The real-time emulators (`kvp-host`, the end-to-end tests, the
                // benchmark) hand the real daemon what the core's `encode_request`
                // makes: it must be what the kernel hands over. Catches a wrong offset
                // or size field in it, which the daemon itself never reads.
                if self.setup.config.layout.encode_request(r)[..] != bytes[..] {
                    self.fail(format!(
                        "the emulators' encoding of {} differs from the kernel's",
                        trace::request(r)
                    ));
                }
                bytes
            }
            (None, Some(b)) => b,
            (None, None) => return,
        };
        // Raw bytes with one defect, and a well-formed SET of an empty key.
        let malformed_status = host_wire::malformed_status(self.host_kernel, &bytes);
        match &request {
            Some(r) => logf!(self, "host", "#{id} {}", trace::RequestText(r)),
            None => logf!(
                self,
                "host",
                "#{id} raw {} bytes op={}",
                bytes.len(),
                bytes.first().copied().unwrap_or(0)
            ),
        }
        if let (Some(r), Some(w)) = (&request, self.walk.as_mut()) {
            if !walk_step && matches!(r, Request::Set { .. } | Request::Delete { .. }) {
                w.disturbed = true;
            }
        }
        self.outstanding = Some(Outstanding {
            id,
            request,
            delivered_to: None,
            redelivered: false,
            lost_to_reset: false,
            walk_step,
            busy_at_delivery: false,
            system_busy_at_delivery: false,
            delivered_at: None,
            malformed_status,
            guest_pool_before_outside: Vec::new(),
        });
        self.kernel.submit(HostRequest { id, bytes });
        let mut out = Vec::new();
        self.kernel.pump(self.now, &mut out);
        for k in out {
            self.kernel_event(k);
        }
        self.route();
    }

    /// Carries out one action now.
    pub fn act(&mut self, a: Action) {
        match a {
            Action::Host(r) => self.submit(Some(r), None, false),
            Action::HostRaw(b) => self.submit(None, Some(b), false),
            Action::Walk(p) => {
                // A failed mutation still in flight may move records under the walk.
                let disturbed = self.model.has_in_flight();
                self.walk = Some(Walk {
                    pool: Some(p),
                    disturbed,
                    ..Walk::default()
                });
                self.submit(Some(Request::Enumerate { pool: p, index: 0 }), None, true);
            }
            Action::Append { pool, key, value } => self.outside_append(pool, key, value),
            Action::Outside(pool, op) => self.outside(pool, op),
            Action::Truncate(p) => {
                self.log("outside", &format!("truncate {}", path(p)));
                if self.fs.set_len(path(p), 0).is_ok() {
                    while self.fs.fsync(path(p)).is_err() {}
                    self.emptied(p);
                    self.outside_records.clear();
                }
            }
            Action::Crash => self.crash(true),
            Action::Kill => self.crash(false),
            Action::DeviceReset => self.device_reset(),
            Action::CrashAfter(n) => {
                self.log("world", &format!("power loss after {n} more effects"));
                if let Some(d) = self.daemon.as_mut() {
                    d.effect_budget = Some(n);
                }
                if n == 0 {
                    self.crash_pending = true;
                }
            }
            Action::Fault { call, file, error } => {
                self.stats.faults += 1;
                self.errors_possible = true;
                self.log(
                    "world",
                    &format!(
                        "next {call:?} on {} fails with {error}",
                        file.as_deref().unwrap_or("any file")
                    ),
                );
                self.fs.inject(call, file.as_deref(), error);
            }
            Action::Freeze => {
                self.stats.freezes += 1;
                self.errors_possible = true;
                self.log("world", "file system suspended");
                self.fs.frozen = true;
            }
            Action::Thaw => {
                self.log("world", "file system resumed");
                self.fs.frozen = false;
                self.thaw_at = None;
                if let Some(d) = self.daemon.as_mut() {
                    d.unpark(self.now, &mut self.fs, &mut self.net);
                }
            }
            Action::Slow(d) => {
                self.log("world", &format!("next effect takes {} ms", d.as_millis()));
                if let Some(dm) = self.daemon.as_mut() {
                    dm.latency.scripted.push_back(d);
                }
            }
            Action::Vss(op) | Action::VssNow(op) => self.vss_host(op),
            Action::VssCrash => self.vss_crash(),
            Action::FreezerCrash => self.vss_freezer_crash(),
            Action::VssCrashBoth => self.vss_crash_both(),
            Action::FreezerHang => {
                self.log("world", "the freezer's next suspend never returns");
                if let Some(v) = self.vss.as_mut() {
                    v.freezer.hang_next = true;
                }
            }
            Action::Shutdown => {
                self.log("world", "SIGTERM");
                if let Some(d) = self.daemon.as_mut() {
                    let mut obs = std::mem::take(&mut self.obs);
                    d.handle(
                        self.now,
                        Input::Shutdown,
                        &mut self.fs,
                        &mut self.net,
                        &mut obs,
                    );
                    self.obs = obs;
                }
                self.route();
            }
        }
        self.route();
    }

    fn outside_append(&mut self, pool: PoolId, key: Key, value: Value) {
        let name = path(pool);
        if self.fs.lock_holder(name).is_some() || self.fs.frozen {
            self.log(
                "outside",
                &format!("append to {name} skipped: locked or frozen"),
            );
            return;
        }
        let r = Record::new(key, value);
        let _ = self.fs.lock(name, Owner::Outside(1));
        let ok = self.fs.append(name, &r.encode()).is_ok();
        if ok {
            while self.fs.fsync(name).is_err() {}
        }
        self.fs.unlock(name, Owner::Outside(1));
        self.log(
            "outside",
            &format!(
                "append {} = {} to {name}{}",
                trace::text(r.key.as_bytes()),
                trace::text(r.value.as_bytes()),
                if ok { "" } else { " failed" }
            ),
        );
        if ok {
            self.stats.appends += 1;
            if pool == PoolId::Guest {
                self.outside_records.push((r.key, r.value));
            }
        }
    }

    fn crash(&mut self, power: bool) {
        self.crash_pending = false;
        let Some(d) = self.daemon.take() else { return };
        self.stats.crashes += 1;
        let keep_stale = self.crash_prng.chance(1, 2);
        self.log(
            "world",
            &format!(
                "{} daemon #{}",
                if power { "power loss:" } else { "kill -9" },
                d.generation
            ),
        );
        drop(d);
        self.kernel.on_daemon_death(keep_stale);
        self.fs.release_locks_of(Owner::Daemon(self.generation));
        if power {
            // Power loss takes the VSS daemon and its freezer down too, and the tool.
            self.vss_power_loss();
            self.tool_power_lost();
            for note in self.fs.crash(&mut self.crash_prng) {
                self.log("fs", &note);
            }
        }
        self.errors_possible = true;
        if self.opts.faults {
            self.while_down(power);
        }
        // Recovery may finish a journaled change under a walk in progress.
        if let Some(w) = self.walk.as_mut() {
            w.disturbed = true;
        }
        self.restart_at = Some(
            self.now
                .saturating_add(Duration::from_millis(100 + self.crash_prng.below(400))),
        );
    }

    /// Between a crash and the restart, other programs go on: they append, die
    /// mid-append, rewrite and delete records, knowing nothing of our journal; after a
    /// power loss, cloud-init may empty the guest pool at boot.
    fn while_down(&mut self, power: bool) {
        let n = self.crash_prng.below(4);
        for _ in 0..n {
            let op = self.random_outside();
            self.outside(PoolId::Guest, op);
        }
        if power && self.crash_prng.chance(1, 12) && !self.model.has_in_flight() {
            self.outside(PoolId::Guest, OutsideOp::Truncate);
        }
    }

    fn next_event(&self, host_active: bool) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut take = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        let host_can = self.daemon.is_some() && self.kernel.registered();
        if host_active && host_can && self.outstanding.is_none() {
            take(Some(self.next_host_at.max(self.now)));
        }
        take(self.kernel.next_deadline());
        take(self.daemon.as_ref().and_then(|d| d.next_wakeup()));
        take(self.restart_at);
        take(self.thaw_at);
        take(self.tool_next_wakeup());
        if let Some(v) = self.vss.as_ref() {
            take(v.next_wakeup());
            if host_active
                && v.outstanding.is_none()
                && !v.plan.is_empty()
                && v.daemon.is_some()
                && !v.settling_after_reset()
            {
                take(Some(v.next_at.max(self.now)));
            }
        }
        t
    }

    /// Advances the clock to `t` and delivers everything due.
    fn advance_to(&mut self, t: Instant) {
        let t = t.max(self.now);
        self.now = t;
        self.fs.now_ms = t.as_nanos() / 1_000_000;
        if self.restart_at.is_some_and(|r| r <= t) {
            self.restart_at = None;
            self.fs.frozen = false; // a reboot resumes everything
            self.start_daemon();
        }
        if self.thaw_at.is_some_and(|r| r <= t) {
            self.act(Action::Thaw);
        }
        let mut out = Vec::new();
        self.kernel.on_timer(t, &mut out);
        for k in out {
            self.kernel_event(k);
        }
        if let Some(d) = self.daemon.as_mut() {
            let mut obs = std::mem::take(&mut self.obs);
            d.advance(t, &mut self.fs, &mut self.net, &mut obs);
            self.obs = obs;
        }
        self.route();
        self.outside_unblocked();
        self.vss_advance();
        self.tool_advance();
        if self.crash_pending {
            self.crash(true);
        }
    }

    /// Cheap invariants, after every step.
    fn check_step(&mut self) {
        self.vss_check();
        // Files may start with another writer's torn tail; recovery cuts it before the
        // daemon registers, and from then on files are whole records.
        let registered = self.daemon.as_ref().is_some_and(|d| d.machine.registered());
        for p in model_pools().into_iter().filter(|_| registered) {
            let len = self.fs.contents(path(p)).len();
            if p == PoolId::Guest && self.outside_torn {
                // Another program's torn tail stays until the daemon next writes.
                self.outside_torn = len % POOL_RECORD_SIZE != 0;
                continue;
            }
            // A pool whose recovery failed (it is retried) has not cut a torn tail yet.
            if !self
                .daemon
                .as_ref()
                .is_some_and(|d| d.machine.pool_ready(p))
            {
                continue;
            }
            // Catches a grow that writes before extending, a cut to the wrong length, or
            // a torn tail recovery forgot to cut (other programs then misalign).
            if len % POOL_RECORD_SIZE != 0 {
                self.fail(format!("{} is {len} bytes: not whole records", path(p)));
            }
        }
        match self.daemon.as_ref() {
            Some(d) if !d.machine.is_idle() => {}
            _ => self.model.quiesce(),
        }
        self.tool_check();
        self.emptied_check();
        let idle = self.daemon.as_ref().is_some_and(|d| {
            d.machine.registered()
                && d.machine.is_idle()
                && model_pools().iter().all(|&p| d.machine.pool_ready(p))
        }) && self.kernel.pending() == 0
            && !self.fs.frozen
            && self.tool_quiet();
        if self.checkpoint_due && idle {
            self.checkpoint_due = false;
            self.checkpoint();
        }
    }

    /// Full invariants, when the daemon is idle: files clean, acknowledged changes and
    /// outside records present, memory equal to disk.
    pub fn checkpoint(&mut self) {
        let Some(d) = self.daemon.as_ref() else {
            return;
        };
        let mut problems = Vec::new();
        for p in model_pools() {
            let dec = decode_pool(self.fs.contents(path(p)));
            // Another program's torn tail stays until the daemon next writes the pool.
            let torn_ok = p == PoolId::Guest && self.outside_torn;
            let bytes = self.fs.contents(path(p));
            let residue_at = |i: usize| {
                p == PoolId::Guest
                    && bytes
                        .get(i * POOL_RECORD_SIZE..(i + 1) * POOL_RECORD_SIZE)
                        .is_some_and(|r| self.is_residue(r))
            };
            // Catches a torn slot left behind by recovery, or records built without
            // zero padding (stale bytes after the terminator, spec K6).
            if let Some(i) = dec.issues.iter().find(|i| match i {
                PoolIssue::Flawed { index, .. } => !residue_at(*index),
                PoolIssue::PartialRecord { .. } => !torn_ok,
                _ => false,
            }) {
                problems.push(format!("{}: torn or unpadded record: {i:?}", path(p)));
            }
            // Records are checked as if the torn residue were not there (it may hide
            // any key's first match; nothing else may).
            let clean = if p == PoolId::Guest && !self.torn_residue.is_empty() {
                decode_pool(&self.without_torn_residue(bytes)).records
            } else {
                dec.records.clone()
            };
            // Catches an acknowledged SET/DELETE that is not durable (a missing fsync,
            // a journal cleared too early), recovery that drops or resurrects a change,
            // and DELETE planning that changes which duplicate is a key's first match.
            for (k, cell) in self.model.keys(p) {
                let got = clean.iter().find(|r| r.key == *k).map(|r| r.value.clone());
                if p == PoolId::Guest
                    && self.residue_key(k.as_bytes(), got.as_ref().map(Value::as_bytes))
                {
                    continue;
                }
                if !cell.contains(&got) {
                    problems.push(format!(
                        "{} {}: disk has {got:?}, acknowledged {cell:?}",
                        path(p),
                        trace::text(k.as_bytes())
                    ));
                }
            }
            if p == PoolId::Guest {
                // Catches recovery or a DELETE that loses, or un-does, another
                // program's append or in-place rewrite (parsed here, not by the core).
                let bytes = &self.without_torn_residue(self.fs.contents(path(p)));
                for (k, v) in &self.outside_records {
                    let got = outside::first_match(bytes, k.as_bytes());
                    if got.as_deref() != Some(v.as_bytes()) {
                        problems.push(format!(
                            "outside record {} lost or stale: first match {:?}",
                            trace::text(k.as_bytes()),
                            got.map(|g| trace::text(&g))
                        ));
                    }
                }
                // Catches recovery finishing a change another program has since
                // undone (a removed record resurrected by a redo).
                for k in &self.outside_removed {
                    if outside::first_match(bytes, k.as_bytes()).is_some() {
                        problems.push(format!(
                            "outside record {} came back after another program removed it",
                            trace::text(k.as_bytes())
                        ));
                    }
                }
            }
            // When the file is as the daemon last saw it, memory must equal it: catches
            // a Mutation applied to memory differently from the disk (pool.apply vs the
            // script), and stamps trusted while a same-tick change hides behind them.
            let unchanged = d.machine.pool_stamp(p) == Some(self.fs.peek_stamp(path(p)));
            if d.machine.pool_ready(p)
                && unchanged
                && d.machine.pool(p).records() != &dec.records[..]
            {
                problems.push(format!("{}: memory and disk differ while idle", path(p)));
            }
            // When memory is marked current and no write of the file has been reported
            // to the daemon since it last took the news, memory must equal the file:
            // catches memory marked current by a job that did not know the whole file,
            // news taken before the job's own last write, or a write the news missed.
            let quiet = !self.fs.has_news(path(p), d.generation);
            if d.machine.pool_ready(p)
                && d.machine.pool_current(p)
                && quiet
                && d.machine.pool(p).records() != &dec.records[..]
            {
                problems.push(format!(
                    "{}: memory marked current differs from the disk, no write reported",
                    path(p)
                ));
            }
        }
        if let Some(first) = problems.into_iter().next() {
            self.fail(first);
        }
        // Reads may fail again only after a new fault (one still queued counts).
        self.errors_possible = self.fs.pending_faults() > 0;
    }

    /// Rolls the random fault schedule before a host request.
    fn random_faults(&mut self) {
        let f = &mut self.faults_prng;
        let roll = f.below(10_000);
        let action = match roll {
            0..=19 => Some(Action::Crash),
            20..=34 => Some(Action::Kill),
            35..=64 => Some(Action::CrashAfter(f.range(0, 14))),
            65..=114 => {
                let call = *f.choose(&[
                    FsCall::Write,
                    FsCall::Fsync,
                    FsCall::SetLen,
                    FsCall::Read,
                    FsCall::Stat,
                    FsCall::Lock,
                ]);
                let error = if f.chance(1, 3) {
                    IoError::ENOSPC
                } else {
                    IoError::EIO
                };
                // Faults cluster: now and then a second one on the same request, and
                // a crash a few effects later (a dying disk), so recovery itself runs
                // on a file system that fails.
                if f.chance(1, 3) {
                    let call2 = *f.choose(&[FsCall::Write, FsCall::Fsync, FsCall::Read]);
                    self.fs.inject(call2, None, IoError::EIO);
                    self.log("world", &format!("and the next {call2:?} fails with EIO"));
                }
                if self.faults_prng.chance(1, 4) {
                    let n = self.faults_prng.range(1, 6);
                    self.act(Action::CrashAfter(n));
                }
                Some(Action::Fault {
                    call,
                    file: None,
                    error,
                })
            }
            115..=139 if self.vss.is_some() => None,
            115..=139 => {
                let ms = f.range(500, 9000);
                self.thaw_at = Some(self.now.saturating_add(Duration::from_millis(ms)));
                Some(Action::Freeze)
            }
            140..=164 => Some(Action::Slow(Duration::from_millis(f.range(100, 7000)))),
            165..=464 => Some(Action::Outside(PoolId::Guest, self.random_outside())),
            465..=489 => self.host_key_duplicate(),
            // Half of them now, while the host is idle; half armed for the next request
            // the daemon holds (`reset_while_held`).
            490..=499 if self.host_kernel == host_wire::Kernel::Linux => {
                if f.chance(1, 2) {
                    Some(Action::DeviceReset)
                } else {
                    self.reset_armed = true;
                    None
                }
            }
            _ => None,
        };
        if let Some(a) = action {
            if self.fs.frozen && matches!(a, Action::Freeze) {
                return;
            }
            self.act(a);
        }
    }

    /// The host's VSS side in random runs: sends the next planned request when due, and
    /// now and then plans a new backup or a VSS fault.
    fn vss_host_turn(&mut self) {
        let now = self.now;
        let (Some(v), Some(p)) = (self.vss.as_mut(), self.vss_prng.as_mut()) else {
            return;
        };
        if v.outstanding.is_some() || v.daemon.is_none() || v.settling_after_reset() {
            return;
        }
        if v.plan.is_empty() {
            if p.chance(1, 40) {
                v.plan.extend(crate::vss::random_backup(p));
                v.next_at = now.saturating_add(v.plan.front().map_or(Duration::ZERO, |x| x.0));
            }
            return;
        }
        if now < v.next_at {
            return;
        }
        let (_, op) = v.plan.pop_front().expect("not empty");
        if let Some(next) = v.plan.front() {
            v.next_at = now.saturating_add(next.0);
        }
        // Now and then a VSS fault right before the request.
        let fault = if v.kernel.is_linux() {
            // Linux: more of them, most while frozen (the request is then a THAW or a
            // repeated FREEZE), where a freeze that outlives its freezer matters.
            let frozen = v.daemon.as_ref().is_some_and(|d| d.machine.frozen());
            match p.below(if frozen { 10 } else { 40 }) {
                0 => Some(Action::VssCrash),
                1 => Some(Action::FreezerCrash),
                2 => Some(Action::VssCrashBoth),
                3 => Some(Action::FreezerHang),
                4 => {
                    v.freezer_crash_at =
                        Some(now.saturating_add(Duration::from_millis(p.below(30))));
                    None
                }
                // The device reset a moment after the request: mostly while the
                // daemon holds it.
                5 => {
                    v.device_reset_at =
                        Some(now.saturating_add(Duration::from_millis(p.below(300))));
                    None
                }
                _ => None,
            }
        } else {
            match p.below(60) {
                0 => Some(Action::VssCrash),
                1 => Some(Action::FreezerCrash),
                2 => Some(Action::FreezerHang),
                3 => {
                    // The freezer dies a moment after the request: racing the daemon's
                    // ping.
                    v.freezer_crash_at =
                        Some(now.saturating_add(Duration::from_millis(p.below(30))));
                    None
                }
                _ => None,
            }
        };
        if let Some(f) = fault {
            self.act(f);
        }
        self.act(Action::Vss(op));
    }

    fn host_turn(&mut self) {
        self.vss_host_turn();
        self.check_registered();
        self.reset_while_held();
        if self.outstanding.is_some()
            || self.now < self.next_host_at
            || self.daemon.is_none()
            || !self.kernel.registered()
        {
            return;
        }
        if self.opts.faults {
            self.random_faults();
            if self.daemon.is_none() || self.outstanding.is_some() {
                return;
            }
        }
        if let Some(w) = self.walk.as_ref() {
            let (pool, index) = (w.pool.unwrap_or(PoolId::Guest), w.next);
            if index < 200 {
                self.submit(Some(Request::Enumerate { pool, index }), None, true);
                return;
            }
            self.walk = None;
        }
        if self.opts.faults && self.faults_prng.chance(1, 10) {
            if let Some(key) = self.outside_key_to_read() {
                self.act(Action::Host(Request::Get {
                    pool: PoolId::Guest,
                    key,
                }));
                let think = self.workload.think_ms();
                self.next_host_at = self.now.saturating_add(Duration::from_millis(think));
                return;
            }
        }
        let next = match self.tool_read() {
            Some(r) => Next::Request(r),
            None => self.workload.next_action(),
        };
        let mutates = matches!(
            &next,
            Next::Request(Request::Set { .. } | Request::Delete { .. })
        );
        match next {
            Next::Request(r) => self.act(Action::Host(r)),
            Next::Raw(b) => self.act(Action::HostRaw(b)),
            Next::Walk(p) => self.act(Action::Walk(p)),
        }
        // Sometimes another program wants to append (or rewrite in place) while the
        // daemon's SET or DELETE holds the lock: it waits, and writes the moment the
        // daemon unlocks, before the daemon's next effect.
        if mutates && self.opts.faults && self.waiting_prng.chance(1, 8) {
            let op = self.waiting_outside();
            self.outside(PoolId::Guest, op);
        }
        let think = self.workload.think_ms();
        self.next_host_at = self.now.saturating_add(Duration::from_millis(think));
    }

    fn outcome(&mut self) -> Result<Stats, Failure> {
        self.stats.trace_hash = self.trace.hash();
        self.stats.trace_lines = self.trace.lines();
        self.stats.virtual_ms = self.now.as_nanos() / 1_000_000;
        match self.violation.clone() {
            None => Ok(self.stats.clone()),
            Some(violation) => Err(Failure {
                seed: self.opts.seed,
                violation,
                at: self.now,
                tail: self.trace.tail(),
            }),
        }
    }

    /// Lets everything finish: restarts, thaws, outstanding requests, then the final
    /// checkpoint.
    fn drain(&mut self) {
        self.tool_stop();
        for _ in 0..100_000 {
            if self.violation.is_some() {
                return;
            }
            let vss_busy = self.vss.as_ref().is_some_and(|v| {
                !v.quiet()
                    || v.freezer.is_holding()
                    || v.daemon.as_ref().is_some_and(
                        |d| matches!(&d.machine, crate::vss::Machine::Daemon(m) if m.frozen()),
                    )
                    || v.app.as_ref().is_some_and(
                        |a| matches!(&a.machine, crate::vss::Machine::App(m) if m.frozen()),
                    )
            });
            let busy = vss_busy
                || !self.tool_quiet()
                || self.outstanding.is_some()
                || self.restart_at.is_some()
                || self
                    .daemon
                    .as_ref()
                    .is_some_and(|d| !d.machine.is_idle() || !d.machine.registered());
            if !busy {
                break;
            }
            match self.next_event(false) {
                Some(t) => self.advance_to(t),
                None => {
                    if self.fs.frozen && self.vss.is_none() {
                        self.act(Action::Thaw);
                        continue;
                    }
                    break;
                }
            }
            self.check_step();
        }
        if self.fs.frozen && self.vss.is_none() {
            self.act(Action::Thaw);
        }
        if self.violation.is_none() {
            self.vss_final_check();
        }
        if self.violation.is_none() {
            self.checkpoint();
        }
    }

    /// A random run, also returning the full trace when it was kept.
    pub fn run_random_keep(self, keep: bool) -> (Result<Stats, Failure>, Option<Vec<String>>) {
        let _ = keep;
        let mut w = self;
        let r = w.random();
        (r, w.trace.full().map(<[String]>::to_vec))
    }

    /// A random run: the seeded workload and fault schedule for `opts.requests` requests.
    pub fn run_random(mut self) -> Result<Stats, Failure> {
        self.random()
    }

    /// The guest's interfaces and kvp.conf's `exclude_interfaces` and `address_order`,
    /// from their own stream: what the daemon is told and queries, and what the host
    /// must be shown.
    fn random_network(&mut self) {
        let network = Network::random(&mut Prng::new(self.opts.seed).fork("network"));
        let names: Vec<&str> = network.interfaces.iter().map(|i| i.name.as_str()).collect();
        self.log(
            "world",
            &format!(
                "interfaces {}; kvp.conf: {}",
                names.join(" "),
                network.conf_lines().join("; ")
            ),
        );
        match network.selection() {
            Ok(s) => self.setup.config.addresses = s,
            Err(e) => self.fail(format!("the core refused kvp.conf's interface lines: {e}")),
        }
        self.setup.info.addrs = network.system_addrs();
        self.net.adapters = network.adapters();
        self.net.nic_guids = network.nic_guids();
        self.network = network;
    }

    /// A daemon that says it serves must be registered with the kernel: after a device
    /// reset it registers again at once (a request written meanwhile would be lost).
    /// Catches a daemon that serves nobody after a reset while the host waits forever.
    fn check_registered(&mut self) {
        let serving = self.daemon.as_ref().is_some_and(|d| d.machine.registered());
        if !serving || self.kernel.registered() {
            self.unregistered_since = None;
            return;
        }
        let since = *self.unregistered_since.get_or_insert(self.now);
        if self.now.saturating_since(since) > Duration::from_secs(1) {
            self.fail(
                "the daemon serves, but the kernel has had no registration from it for 1 s".into(),
            );
        }
    }

    /// An armed reset, done while the daemon holds a request it has not answered (a
    /// slow effect, a file job): the kernel fails that request for the host, the daemon
    /// drops it (`RequestLostToReopen`) and registers again; a change it had begun goes
    /// on and lands, as after any failed reply.
    fn reset_while_held(&mut self) {
        let held = self
            .outstanding
            .as_ref()
            .is_some_and(|o| o.delivered_to == Some(self.generation));
        let busy = self.daemon.as_ref().is_some_and(|d| !d.machine.is_idle());
        if self.reset_armed && held && busy {
            self.reset_armed = false;
            self.device_reset();
        }
    }

    /// Linux's device reset (`Action::DeviceReset`): the kernel fails what the daemon
    /// held and forgets it; the daemon is told it reopened the device, and registers
    /// again (the kernel's answer follows).
    fn device_reset(&mut self) {
        if self.host_kernel != host_wire::Kernel::Linux || self.daemon.is_none() {
            return;
        }
        self.log("world", "the KVP device is reset: the daemon reopens it");
        if let Some(o) = self
            .outstanding
            .as_mut()
            .filter(|o| o.delivered_to.is_some())
        {
            o.lost_to_reset = true;
        }
        self.kernel.on_daemon_death(false);
        if let Some(d) = self.daemon.as_mut() {
            let mut obs = std::mem::take(&mut self.obs);
            d.handle(
                self.now,
                Input::DeviceReopened,
                &mut self.fs,
                &mut self.net,
                &mut obs,
            );
            self.obs = obs;
        }
    }

    /// Puts the world on Linux's kernel: the daemon's layout and reply budget, the
    /// kernel's rules and the host's codec.
    fn use_linux_kernel(&mut self) {
        let layout = wire::Layout::Linux;
        self.setup.config.layout = layout;
        self.setup.config.reply_budget = layout.reply_budget();
        self.host_kernel = host_wire::Kernel::Linux;
        self.kernel = SimKernel::of(host_wire::Kernel::Linux);
        self.workload.msg_len = host_wire::Kernel::Linux.msg_len();
        self.workload.linux = true;
        self.log("world", "kernel: Linux (/dev/vmbus/hv_kvp)");
    }

    fn random(&mut self) -> Result<Stats, Failure> {
        // Two seeds in three also have the VSS side, with its own stream; on the worlds
        // that run Linux's kernel (below), Linux's VSS device and file systems.
        let mut vss_prng = Prng::new(self.opts.seed).fork("vss");
        let linux = self.daemon.is_none() && Prng::new(self.opts.seed).fork("os").chance(1, 4);
        if self.opts.faults && vss_prng.chance(2, 3) {
            let setup = if linux {
                crate::linux_vss::random_setup(&mut vss_prng)
            } else {
                crate::vss::random_setup(&mut vss_prng)
            };
            self.log(
                "world",
                &format!(
                    "vss: mounts {:?}, {} hooks, app {}",
                    setup
                        .mounts
                        .iter()
                        .map(|m| format!("{}:{}", m.fstype, m.path))
                        .collect::<Vec<_>>(),
                    setup.hooks.len(),
                    setup.app.is_some()
                ),
            );
            if linux {
                self.stats.linux_vss.worlds += 1;
                let table: Vec<String> = setup
                    .mounts
                    .iter()
                    .map(|m| {
                        let dev = m.fsid.map_or(String::new(), |f| f.to_string());
                        let ro = if m.read_only { ",ro" } else { "" };
                        format!("{} {} {}{ro} {dev}", m.source, m.path, m.fstype)
                    })
                    .collect();
                self.log(
                    "world",
                    &format!(
                        "vss: Linux (/dev/vmbus/hv_vss): {}; loop images {:?}; ExecStopPost {}",
                        table.join("; "),
                        setup.loop_images,
                        setup.exec_stop_post
                    ),
                );
            }
            let mut part = VssPart::new(setup);
            part.timing = Some(vss_prng.fork("timing"));
            self.vss = Some(part);
            self.vss_prng = Some(vss_prng);
        }
        self.log(
            "world",
            &format!(
                "seed {} requests {} faults {}",
                self.opts.seed, self.opts.requests, self.opts.faults
            ),
        );
        // One world in four has a kvp.conf `auto.<Key>` value (its own stream); the
        // host expects it where the model puts it, by name.
        let mut conf_prng = Prng::new(self.opts.seed).fork("kvp-config");
        let mut overrides = Vec::new();
        if self.daemon.is_none() && conf_prng.chance(1, 4) {
            let (key, value) = random_auto_override(&mut conf_prng);
            self.log(
                "world",
                &format!("kvp.conf: auto.{key} = {value:?} ({} bytes)", value.len()),
            );
            if let Err(e) = self.setup.config.auto.set(&key, &value) {
                self.fail(format!(
                    "the core refused kvp.conf's auto.{key} ({} bytes): {e}",
                    value.len()
                ));
            }
            overrides.push((key, value));
        }
        if self.daemon.is_none() {
            self.random_network();
        }
        self.auto = expected_auto(&self.setup.info, &self.network, &overrides);
        if self.opts.faults {
            self.tool = Some(ToolPart::new(Prng::new(self.opts.seed).fork("tool")));
            // Per seed: Linux's page dropping after a failed fsync, and coarse stamps.
            let mut fsp = Prng::new(self.opts.seed).fork("fs");
            self.fs.fsync_error_drops = fsp.chance(1, 2);
            self.fs.stamp_tick_ms = match fsp.below(4) {
                0 => Some(1000),
                1 => Some(10),
                _ => None,
            };
            // The daemon is told the granularity, as production is (1 s).
            self.setup.config.stamp_granularity =
                Duration::from_millis(self.fs.stamp_tick_ms.unwrap_or(0));
            self.log(
                "world",
                &format!(
                    "fs: failed fsync drops pages {}, stamp tick {:?} ms",
                    self.fs.fsync_error_drops, self.fs.stamp_tick_ms
                ),
            );
        }
        // One world in four runs on Linux's kernel (its own stream: the other draws
        // stay as they were): 7432-byte messages, the registration answered before any
        // request, a 30 s deadline, a close that fails the request held.
        if linux {
            self.use_linux_kernel();
        }
        // Per seed, from a stream of its own (the other draws stay as they were): a
        // driver without a watch (none could be set up), so the stamp-only path that
        // `NotWatched` falls back on stays covered.
        self.setup.watches = !Prng::new(self.opts.seed).fork("watch").chance(1, 4);
        if !self.setup.watches {
            self.log("world", "fs: the daemon's driver watches no file");
        }
        self.adopt_initial_files();
        self.start_daemon();
        if self.vss.is_some() {
            self.vss_start();
        }
        let mut steps = 0u64;
        while self.stats.requests < self.opts.requests && self.violation.is_none() {
            self.host_turn();
            let Some(t) = self.next_event(true) else {
                if self.fs.frozen {
                    self.act(Action::Thaw);
                    continue;
                }
                self.fail("nothing can happen: the world is stuck".into());
                break;
            };
            self.advance_to(t);
            self.check_step();
            steps += 1;
            if steps > self.opts.requests * 1000 + 100_000 {
                self.fail("too many steps: livelock".into());
            }
        }
        self.drain();
        self.outcome()
    }

    /// A scenario run: actions at their times, then drain. Returns the full trace too.
    pub fn run_scenario(
        mut self,
        steps: Vec<(Instant, Action)>,
    ) -> (Result<Stats, Failure>, Vec<String>) {
        let r = self.scenario(steps);
        (
            r,
            self.trace
                .full()
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
        )
    }

    /// Ends a scenario's trace with what each pool file holds.
    fn final_summary(&mut self) {
        for p in model_pools() {
            let bytes = self.fs.contents(path(p)).to_vec();
            if bytes.is_empty() {
                continue;
            }
            let d = decode_pool(&bytes);
            let shown: Vec<String> = d
                .records
                .iter()
                .take(12)
                .map(|r| {
                    format!(
                        "{}={}",
                        trace::text(r.key.as_bytes()),
                        trace::text(r.value.as_bytes())
                    )
                })
                .collect();
            let more = d.records.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" …and {more} more")
            } else {
                String::new()
            };
            self.log(
                "final",
                &format!(
                    "{}: {} records: {}{more}",
                    path(p),
                    d.records.len(),
                    shown.join(" ")
                ),
            );
        }
        let journals: Vec<String> = model_pools()
            .iter()
            .map(|&p| FileId::journal(p).file_name())
            .filter(|j| !self.fs.contents(j).is_empty())
            .collect();
        if !journals.is_empty() {
            self.log("final", &format!("journals not empty: {journals:?}"));
        }
        let verdict = match &self.violation {
            None => "all invariants held".to_string(),
            Some(v) => format!("VIOLATION: {v}"),
        };
        self.log("final", &verdict);
    }

    fn scenario(&mut self, steps: Vec<(Instant, Action)>) -> Result<Stats, Failure> {
        let r = self.scenario_steps(steps);
        self.final_summary();
        r
    }

    fn scenario_steps(&mut self, steps: Vec<(Instant, Action)>) -> Result<Stats, Failure> {
        self.adopt_initial_files();
        self.start_daemon();
        if self.vss.is_some() {
            self.vss_start();
        }
        let mut steps: VecDeque<_> = steps.into();
        while let Some((at, _)) = steps.front() {
            if self.violation.is_some() {
                break;
            }
            let at = *at;
            // Everything due before the step happens first.
            while let Some(t) = self.next_event(false).filter(|&t| t <= at) {
                self.advance_to(t);
                self.check_step();
            }
            if at > self.now {
                self.advance_to(at);
            }
            let (_, action) = steps.pop_front().expect("peeked");
            if matches!(action, Action::Vss(_)) {
                // One VSS request at a time: wait for the previous answer.
                while self.vss.as_ref().is_some_and(|v| v.outstanding.is_some())
                    && self.violation.is_none()
                {
                    let Some(t) = self.next_event(false) else {
                        break;
                    };
                    self.advance_to(t);
                    self.check_step();
                }
            }
            if self.outstanding.is_some()
                && matches!(
                    action,
                    Action::Host(_) | Action::HostRaw(_) | Action::Walk(_)
                )
            {
                // One host request at a time: finish the previous one first.
                while self.outstanding.is_some() && self.violation.is_none() {
                    let Some(t) = self.next_event(false) else {
                        break;
                    };
                    self.advance_to(t);
                    self.check_step();
                }
            }
            self.act(action);
            // Walks run to the end before the next step.
            while self.walk.is_some() && self.violation.is_none() {
                while self.outstanding.is_some() && self.violation.is_none() {
                    let Some(t) = self.next_event(false) else {
                        break;
                    };
                    self.advance_to(t);
                    self.check_step();
                }
                match self.walk.as_ref().map(|w| (w.pool, w.next)) {
                    Some((Some(pool), index)) if index < 10_000 => {
                        self.submit(Some(Request::Enumerate { pool, index }), None, true);
                    }
                    _ => self.walk = None,
                }
            }
            self.check_step();
        }
        self.drain();
        self.outcome()
    }
}

/// Which op a reply answers, for traces of raw requests.
pub fn op_of(bytes: &[u8]) -> Option<Op> {
    bytes.first().and_then(|&b| Op::from_u8(b))
}
