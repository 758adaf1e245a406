//! `kvp-bench --daemon PATH`: benchmarks a real `hv_kvp_daemon` process against the
//! emulated device (`hvguest_sim::emulator`), as issues 4 and 13 ask. For guest pools of
//! 10, 1,000 and 10,000 records it prints: the no-op round trip (the floor), ENUMERATE of
//! the whole pool, random GETs (each with its p50's ratio to the floor of the same run),
//! durable SETs and DELETEs, each as ops/s, p50 and p99; the system calls per operation,
//! counted; the daemon's threads; its start-up time; its peak RSS, through a churn of
//! 10,000 SET/DELETE at 10,000 records; its CPU time while idle. Then it evaluates the
//! issues' targets.
//!
//! One daemon per pool size, each in its own temporary pool directory on its own emulated
//! device, all started before the first measurement. Every phase then runs interleaved:
//! rounds of `ROUND` requests to each daemon in turn, and the read phases are repeated
//! `READ_PASSES` times, their samples pooled. The targets compare pool sizes with each
//! other and reads with the floor, and on a shared machine the price of a wake-up or an
//! fsync can change tenfold within seconds; measured one after the other, that change
//! would be read as an effect of the pool size. Interleaved, it falls on every size alike.
//!
//! The host may not grow a pool past `HOST_POOL_RECORDS` (1,024) records, so at 10,000
//! records a host SET can only change a key in place. The SETs therefore change existing
//! keys at every size; each DELETE removes a random existing key and, where the host may
//! add one, the deleted key is SET back as a new key (its own row). Where it may not, the
//! DELETEs shrink the pool, and the report says to how many records.
//!
//! The churn runs on the 10,000-record daemon alone, untimed, before the timed writes. It
//! stops after `--churn-secs` (120 s by default) if the daemon is too slow to finish it;
//! the peak RSS target is then judged only when already missed, since the peak only grows.
//!
//! Start-up is timed on daemons of its own, started and stopped `STARTS` times per size.
//! System calls are counted last, with `strace` attached (see `syscalls`), so that its
//! overhead falls on no timed request.
//!
//! Every reply is checked (status, and the value or entry where there is one, against a
//! copy of the pool kept in file order), so a failing daemon aborts the run instead of
//! being measured. Exit status: 0 when the run completed (whether or not the targets were
//! met: this is a measurement), 1 on an error, 2 on bad usage. `cargo xtask bench` builds
//! both binaries in release and runs this.
//!
//! Linux only in practice: it reads `/proc` and pins with `sched_setaffinity`.

// Beside this file, not in src/bin/, where cargo would take it for a program of its own.
#[path = "kvp_bench/syscalls.rs"]
mod syscalls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use hvguest_core::kvp::record::{encode_pool, Record};
use hvguest_core::kvp::wire::{Layout, Op, PoolId, Reply, Request, Status};
use hvguest_core::kvp::{Key, Value};
use hvguest_core::limits::{HOST_POOL_RECORDS, POOL_RECORD_SIZE};
use hvguest_sim::emulator::{Answer, DaemonLink, EmulatedDevice};
use hvguest_sim::host_wire::Kernel;
use hvguest_sim::prng::Prng;

use syscalls::{Counts, Tracer};

const USAGE: &str = "usage: kvp-bench --daemon PATH [--layout freebsd|linux] [--sizes N,N,...]
                 [--seed S] [--idle-secs S] [--churn-ops N] [--churn-secs S] [--no-pin]
                 [--tmp DIR]

  --daemon PATH    the hv_kvp_daemon binary to measure (build it with --release)
  --layout L       whose kernel the emulated device plays, FreeBSD's (the default) or
                   Linux's; the daemon is told the same
  --sizes LIST     guest pool sizes in records (default 10,1000,10000)
  --seed S         seed of the key choices and the values (default 1)
  --idle-secs S    how long the idle CPU time is watched (default 5)
  --churn-ops N    SET/DELETE requests of the churn at 10000 records (default 10000, the
                   issue's; fewer leaves the peak RSS target unevaluated)
  --churn-secs S   stop the churn after S seconds even if not done (default 120; 0: never)
  --no-pin         do not pin the bench and the daemons to one CPU
  --tmp DIR        where the pool directories are made (default: the system temp dir;
                   a tmpfs such as /dev/shm takes the disk out of SET and DELETE)";

/// Times the read phases (floor, ENUMERATE, GET) are run, interleaved; samples pooled.
const READ_PASSES: usize = 3;
/// Round trips of each no-op request per pass.
const FLOOR_OPS: usize = 700;
/// Random GETs per pass.
const GET_OPS: usize = 400;
/// ENUMERATE passes over the pool are repeated until at least this many steps per pass.
const MIN_ENUM_STEPS: usize = 400;
/// Durable SETs, and DELETEs, per pool size.
const OPS: usize = 500;
/// SET/DELETE requests of the churn the peak RSS is measured through (issue 13): the
/// default of `--churn-ops`.
const CHURN_OPS: usize = 10_000;
/// The churn stops after this long even if not done (`--churn-secs`): the run should take
/// minutes, and a durable write at 10,000 records can cost tens of milliseconds.
const CHURN_TIME_LIMIT: Duration = Duration::from_secs(120);
/// One churn request in this many is a DELETE; the others are SETs in place.
const CHURN_DELETE_EVERY: usize = 10;
/// The pool size the churn runs at (the largest size when this one is not measured).
const CHURN_SIZE: usize = 10_000;
/// Start-ups timed per pool size; the median is reported.
const STARTS: usize = 7;
/// Requests per counted batch: reads, and SETs or DELETEs (fewer where the pool is smaller).
const COUNT_READS: usize = 200;
const COUNT_WRITES: usize = 100;
/// Quiet time after a counted batch before strace detaches, for work the daemon defers.
const COUNT_SETTLE: Duration = Duration::from_millis(50);
/// Requests to one daemon before the next daemon's turn.
const ROUND: usize = 25;
/// `pwrite` + `fsync` rounds of the disk probe before the SETs and after the DELETEs.
const FSYNC_PROBES: usize = 200;
/// Untimed requests before the floor, so that first-touch costs are not measured.
const WARMUP: usize = 200;
/// The operation byte no daemon knows: answered NOT_SUPPORTED with no file effect.
const UNKNOWN_OP: u8 = 7;
/// How long a daemon may take to connect and register (it recovers its pools first).
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);
/// The CPU both sides are pinned to (the first allowed one if this is not allowed).
const PIN_CPU: usize = 0;

// Targets from issue 13 (reads, fsyncs, RSS, start-up) and issue 4 (write growth, idle).
const READ_FLOOR_FACTOR: f64 = 1.2;
const FSYNCS_PER_WRITE: f64 = 2.0;
const RSS_LIMIT_BYTES: u64 = 8_000_000;
const STARTUP_LIMIT: Duration = Duration::from_millis(20);
const WRITE_GROWTH_FACTOR: f64 = 2.0;

struct Config {
    daemon: PathBuf,
    /// Whose kernel the emulated device plays (`--layout`), and the daemon is told.
    kernel: Kernel,
    sizes: Vec<usize>,
    seed: u64,
    idle: Duration,
    churn_ops: usize,
    churn_limit: Option<Duration>,
    pin: bool,
    tmp: PathBuf,
}

enum Parsed {
    Run(Config),
    Help,
}

fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let mut daemon = None;
    let mut kernel = Kernel::FreeBsd;
    let mut sizes = vec![10, 1000, 10_000];
    let mut seed = 1u64;
    let mut idle = Duration::from_secs(5);
    let mut churn_ops = CHURN_OPS;
    let mut churn_limit = Some(CHURN_TIME_LIMIT);
    let mut pin = true;
    let mut tmp = std::env::temp_dir();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--daemon" => daemon = Some(PathBuf::from(value("--daemon")?)),
            "--layout" => {
                kernel = match value("--layout")?.as_str() {
                    "freebsd" => Kernel::FreeBsd,
                    "linux" => Kernel::Linux,
                    other => {
                        return Err(format!("--layout: `{other}` is neither freebsd nor linux"))
                    }
                }
            }
            "--sizes" => sizes = parse_sizes(&value("--sizes")?)?,
            "--seed" => {
                seed = value("--seed")?
                    .parse()
                    .map_err(|_| "--seed needs a number".to_string())?
            }
            "--idle-secs" => {
                let s: u64 = value("--idle-secs")?
                    .parse()
                    .map_err(|_| "--idle-secs needs a number of seconds".to_string())?;
                idle = Duration::from_secs(s);
            }
            "--churn-ops" => {
                churn_ops = value("--churn-ops")?
                    .parse()
                    .map_err(|_| "--churn-ops needs a number".to_string())?
            }
            "--churn-secs" => {
                let s: u64 = value("--churn-secs")?
                    .parse()
                    .map_err(|_| "--churn-secs needs a number of seconds".to_string())?;
                churn_limit = (s > 0).then(|| Duration::from_secs(s));
            }
            "--no-pin" => pin = false,
            "--tmp" => tmp = PathBuf::from(value("--tmp")?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let daemon = daemon.ok_or("--daemon PATH is required")?;
    Ok(Parsed::Run(Config {
        daemon,
        kernel,
        sizes,
        seed,
        idle,
        churn_ops,
        churn_limit,
        pin,
        tmp,
    }))
}

fn parse_sizes(list: &str) -> Result<Vec<usize>, String> {
    let mut sizes = list
        .split(',')
        .map(|s| match s.trim().parse::<usize>() {
            Ok(n) if (1..=20_000).contains(&n) => Ok(n),
            _ => Err(format!("--sizes: `{s}` is not a size in 1..=20000")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    sizes.sort_unstable();
    sizes.dedup();
    Ok(sizes)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(Parsed::Run(cfg)) => cfg,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kvp-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Set once, here, before anything is planned; nothing set it before.
    let _ = LAYOUT.set(match cfg.kernel {
        Kernel::FreeBsd => Layout::FreeBsd,
        Kernel::Linux => Layout::Linux,
    });
    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvp-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Statistics

/// One measured operation: every latency and the wall time of the whole series.
struct Series {
    samples: Vec<Duration>,
    wall: Duration,
}

#[derive(Clone, Copy)]
struct Stats {
    count: usize,
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

impl Series {
    fn new() -> Series {
        Series {
            samples: Vec::new(),
            wall: Duration::ZERO,
        }
    }

    /// Adds a later pass of the same measurement.
    fn absorb(&mut self, other: Series) {
        self.samples.extend(other.samples);
        self.wall += other.wall;
    }

    /// The figures, or `None` for a row that was not run at this size.
    fn stats_if_any(self) -> Option<Stats> {
        (!self.samples.is_empty()).then(|| self.stats())
    }

    fn stats(mut self) -> Stats {
        self.samples.sort_unstable();
        // Nearest rank: the smallest sample with at least q of them at or below it.
        let rank = |q: f64| {
            let n = self.samples.len();
            let r = (q * n as f64).ceil() as usize;
            self.samples[r.clamp(1, n) - 1]
        };
        Stats {
            count: self.samples.len(),
            ops_per_sec: self.samples.len() as f64 / self.wall.as_secs_f64().max(1e-9),
            p50: rank(0.50),
            p99: rank(0.99),
        }
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

/// The middle sample (the upper one of an even count); zero for none.
fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The daemon process and its /proc figures

/// A running daemon; killed (SIGKILL) if dropped before `stop`.
struct DaemonProc {
    child: Option<Child>,
}

impl DaemonProc {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Has it exited? (The status, if so.)
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, then waits: the daemon must finish and exit 0 (a note otherwise).
    fn stop(mut self) -> Option<String> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
        if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
            let _ = child.kill();
            let _ = child.wait();
            return Some(format!("could not send SIGTERM: {e}"));
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return None,
                Ok(Some(status)) => return Some(format!("exited with {status} after SIGTERM")),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Some(format!("wait failed: {e}")),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Some("still running 10 s after SIGTERM; killed".into())
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Thread ids of a process.
fn tasks(pid: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut tids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// `VmHWM` (peak resident set) in kB.
fn peak_rss_kb(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{path}: no VmHWM line"))
}

/// A process's CPU usage at one moment.
#[derive(Clone, Copy)]
struct CpuSample {
    /// utime + stime from /proc/PID/stat, in clock ticks (all threads).
    ticks: u64,
    /// Nanoseconds on a CPU, summed over /proc/PID/task/*/schedstat (finer than ticks).
    run_ns: u64,
    /// Context switches (voluntary and not), summed over the threads: wake-ups.
    switches: u64,
}

fn cpu_sample(pid: u32) -> Result<CpuSample, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    // After ")" come field 3 (state) onwards; utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("{path}: unexpected format"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("{path}: no field {n}"))
    };
    let ticks = field(14)? + field(15)?;
    let mut run_ns = 0;
    let mut switches = 0;
    for tid in tasks(pid) {
        let base = format!("/proc/{pid}/task/{tid}");
        if let Ok(s) = std::fs::read_to_string(format!("{base}/schedstat")) {
            run_ns += s
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(s) = std::fs::read_to_string(format!("{base}/status")) {
            for line in s.lines() {
                if let Some(v) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    switches += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    Ok(CpuSample {
        ticks,
        run_ns,
        switches,
    })
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

// ---------------------------------------------------------------------------------------
// CPU pinning (Linux sched_setaffinity; the nix feature for it is not enabled in this
// workspace, so the libc that nix re-exports is called directly)

#[cfg(target_os = "linux")]
mod pin {
    use nix::libc;

    fn set_of(cpu: usize) -> libc::cpu_set_t {
        // SAFETY: cpu_set_t is plain bits; all-zero is the empty set. CPU_SET only
        // writes inside the set for cpu < CPU_SETSIZE, checked by the caller.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            set
        }
    }

    /// The CPUs `tid` (0: this thread) may run on.
    pub fn allowed(tid: i32) -> Result<Vec<usize>, String> {
        // SAFETY: as above; sched_getaffinity writes at most size_of::<cpu_set_t>().
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Err(std::io::Error::last_os_error().to_string());
            }
            let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024);
            Ok((0..max).filter(|&c| libc::CPU_ISSET(c, &set)).collect())
        }
    }

    /// Pins `tid` (0: this thread) to `cpu`.
    pub fn to(tid: i32, cpu: usize) -> Result<(), String> {
        if cpu >= usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024) {
            return Err(format!("CPU {cpu} is out of range"));
        }
        let set = set_of(cpu);
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let r =
            unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if r != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod pin {
    pub fn allowed(_tid: i32) -> Result<Vec<usize>, String> {
        Err("CPU pinning is implemented for Linux only".into())
    }

    pub fn to(_tid: i32, _cpu: usize) -> Result<(), String> {
        Err("CPU pinning is implemented for Linux only".into())
    }
}

/// Pins this (single-threaded) process before the daemons are started, so that they
/// inherit the mask; returns the CPU, or why not.
fn pin_self() -> Result<usize, String> {
    let allowed = pin::allowed(0)?;
    let cpu = if allowed.contains(&PIN_CPU) {
        PIN_CPU
    } else {
        *allowed.first().ok_or("no CPU is allowed")?
    };
    pin::to(0, cpu)?;
    Ok(cpu)
}

/// Pins every thread of the daemon to `cpu` and checks it took: "pinned" or why not.
fn pin_daemon(pid: u32, cpu: usize) -> Result<String, String> {
    let tids = tasks(pid);
    if tids.is_empty() {
        return Err(format!("no threads listed in /proc/{pid}/task"));
    }
    for &tid in &tids {
        pin::to(tid, cpu).map_err(|e| format!("thread {tid}: {e}"))?;
        let allowed = pin::allowed(tid).map_err(|e| format!("thread {tid}: {e}"))?;
        if allowed != [cpu] {
            return Err(format!("thread {tid} still allowed on CPUs {allowed:?}"));
        }
    }
    Ok(format!("{} threads on CPU {cpu}", tids.len()))
}

// ---------------------------------------------------------------------------------------
// Requests and the replies they must get

fn key(prefix: &str, i: usize) -> Key {
    Key::new(format!("{prefix}{i:06}").as_bytes()).expect("a short ASCII key")
}

/// About 20 bytes: `value-000042-` and 7 hex digits from the PRNG.
fn value(prng: &mut Prng, i: usize) -> Value {
    let noise = prng.next_u64() & 0x0fff_ffff;
    Value::new(format!("value-{i:06}-{noise:07x}").as_bytes()).expect("a short ASCII value")
}

fn text(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

fn describe(r: &Reply) -> String {
    match r {
        Reply::Status(s) => format!("status {s:?}"),
        Reply::Value(v) => format!("OK, value {}", text(v.as_bytes())),
        Reply::Entry { key, value } => format!(
            "OK, entry {} = {}",
            text(key.as_bytes()),
            text(value.as_bytes())
        ),
        Reply::IpInfo(_) => "OK, IP info".into(),
    }
}

/// What a reply must be.
enum Expect {
    Status(Status),
    /// Some entry (the auto pool's first value depends on this machine).
    AnyEntry,
    Entry(Record),
    Value(Value),
}

impl Expect {
    fn matches(&self, reply: &Reply) -> bool {
        match (self, reply) {
            (Expect::Status(want), Reply::Status(got)) => got == want,
            (Expect::AnyEntry, Reply::Entry { .. }) => true,
            (Expect::Entry(r), Reply::Entry { key, value }) => *key == r.key && *value == r.value,
            (Expect::Value(want), Reply::Value(got)) => got == want,
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Expect::Status(s) => format!("status {s:?}"),
            Expect::AnyEntry => "OK and an entry".into(),
            Expect::Entry(r) => format!(
                "OK, entry {} = {}",
                text(r.key.as_bytes()),
                text(r.value.as_bytes())
            ),
            Expect::Value(v) => format!("OK, value {}", text(v.as_bytes())),
        }
    }
}

/// One request, the reply it must get, and its name for an error message.
struct Planned {
    /// How the reply is read (the reply does not say which op it answers).
    op: Op,
    bytes: Box<[u8]>,
    expect: Expect,
    label: String,
}

/// The device's message layout for this run: set once from `--layout` before any
/// request is planned (requests are planned far from the device they go to).
static LAYOUT: std::sync::OnceLock<Layout> = std::sync::OnceLock::new();

fn layout() -> Layout {
    LAYOUT.get().copied().unwrap_or_default()
}

fn plan(req: &Request, expect: Expect, label: String) -> Planned {
    Planned {
        op: req.op(),
        bytes: layout().encode_request(req).into(),
        expect,
        label,
    }
}

fn unknown_op() -> Planned {
    let mut bytes = vec![0u8; layout().message_size()].into_boxed_slice();
    bytes[0] = UNKNOWN_OP;
    bytes[1] = PoolId::Guest as u8;
    Planned {
        // No op to read it as: a status-only reply reads the same for every op.
        op: Op::Get,
        bytes,
        expect: Expect::Status(Status::NOT_SUPPORTED),
        label: format!("unknown op {UNKNOWN_OP}"),
    }
}

fn auto_first() -> Planned {
    let req = Request::Enumerate {
        pool: PoolId::Auto,
        index: 0,
    };
    plan(&req, Expect::AnyEntry, "ENUMERATE auto[0]".into())
}

/// Sends one request as the kernel would and checks its reply; the latency, hand-off to
/// reply, as the emulated kernel saw it.
fn ask(link: &mut DaemonLink, size: usize, p: &Planned) -> Result<Duration, String> {
    let fail = |what: String| format!("[{size} records] {}: {what}", p.label);
    let answer = link
        .request(&p.bytes)
        .map_err(|e| fail(format!("device error: {e}")))?;
    match answer {
        Answer::Reply { bytes, took } => {
            let reply = layout()
                .decode_reply(p.op, &bytes)
                .map_err(|e| fail(format!("undecodable reply: {e}")))?;
            if p.expect.matches(&reply) {
                Ok(took)
            } else {
                Err(fail(format!(
                    "expected {}, got {}",
                    p.expect.describe(),
                    describe(&reply)
                )))
            }
        }
        Answer::TimedOut { forwarded } => Err(fail(format!(
            "no reply within the kernel's 5 s deadline (forwarded: {forwarded})"
        ))),
        Answer::Gone => Err(fail("the daemon closed the device".into())),
    }
}

// ---------------------------------------------------------------------------------------
// The daemons

fn progress(msg: &str) {
    eprintln!("kvp-bench: {msg}");
}

/// A temporary pool directory holding a guest pool of `records`, written and made durable.
struct PoolDir {
    dir: TempDir,
    pool_dir: PathBuf,
    pool_file: PathBuf,
    records: Vec<Record>,
}

fn write_pool(cfg: &Config, n: usize, tag: &str, prng: &mut Prng) -> Result<PoolDir, String> {
    let dir = TempDir(
        cfg.tmp
            .join(format!("hvguest-bench-{}-{tag}-{n}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir.0);
    let pool_dir = dir.0.join("pool");
    std::fs::create_dir_all(&pool_dir).map_err(|e| format!("{}: {e}", pool_dir.display()))?;
    let records: Vec<Record> = (0..n)
        .map(|i| Record::new(key("key", i), value(prng, i)))
        .collect();
    let pool_file = pool_dir.join(PoolId::Guest.file_name());
    // Made durable now, so that the daemon's first fsync does not pay for our write-back.
    std::fs::File::create(&pool_file)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, &encode_pool(&records))?;
            f.sync_all()
        })
        .map_err(|e| format!("{}: {e}", pool_file.display()))?;
    Ok(PoolDir {
        dir,
        pool_dir,
        pool_file,
        records,
    })
}

/// A daemon started on a pool directory and registered on its own emulated device.
struct Launched {
    process: DaemonProc,
    device: EmulatedDevice,
    link: DaemonLink,
    /// From just before the spawn to the registration's arrival at the device.
    startup: Duration,
}

fn launch(cfg: &Config, n: usize, pool: &PoolDir) -> Result<Launched, String> {
    let device = EmulatedDevice::bind_as(&pool.dir.0.join("kvp.sock"), cfg.kernel)
        .map_err(|e| format!("cannot listen on the emulated device: {e}"))?;
    let started = Instant::now();
    let child = Command::new(&cfg.daemon)
        .arg("-n")
        .arg("--layout")
        .arg(layout().name())
        .arg("--device")
        .arg(device.path())
        .arg("--pool-dir")
        .arg(&pool.pool_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cfg.daemon.display()))?;
    let mut process = DaemonProc { child: Some(child) };
    // Accept on a helper thread, which notes when the registration arrived (so that how
    // often this thread looks does not count), and so that a daemon that dies at start-up
    // is reported at once rather than after the accept timeout.
    let accepting = std::thread::spawn(move || {
        let accepted = device.accept(ACCEPT_TIMEOUT);
        (device, accepted, Instant::now())
    });
    while !accepting.is_finished() {
        if let Some(status) = process.exited() {
            return Err(format!(
                "[{n} records] the daemon exited before registering: {status}"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (device, accepted, registered) = accepting
        .join()
        .map_err(|_| "the thread accepting the daemon panicked".to_string())?;
    let link = match accepted {
        Ok(link) => link,
        Err(e) => {
            let how = match process.exited() {
                Some(status) => format!(" (the daemon exited: {status})"),
                None => String::new(),
            };
            return Err(format!(
                "[{n} records] the daemon did not register: {e}{how}"
            ));
        }
    };
    Ok(Launched {
        process,
        device,
        link,
        startup: registered.saturating_duration_since(started),
    })
}

/// SIGTERM with the device still open (closing it first would be a fatal device error for
/// the daemon, not the clean shutdown this checks), then the device goes: a note if the
/// daemon did not exit cleanly.
fn stop_launched(l: Launched) -> Option<String> {
    let Launched {
        process,
        device,
        link,
        ..
    } = l;
    let note = process.stop();
    drop(link);
    drop(device);
    note
}

/// Starts and stops a fresh daemon `STARTS` times per size, the sizes interleaved: each
/// start's time from spawn to registration, per size, and notes on unclean stops.
fn startup_trials(cfg: &Config) -> Result<(Vec<Vec<Duration>>, Vec<String>), String> {
    let pools = cfg
        .sizes
        .iter()
        .map(|&n| {
            let mut prng = Prng::new(cfg.seed).fork(&format!("startup-{n}"));
            write_pool(cfg, n, "startup", &mut prng)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut times = vec![Vec::new(); pools.len()];
    let mut notes = Vec::new();
    for trial in 1..=STARTS {
        progress(&format!("start-up trial {trial}/{STARTS} at every size"));
        for (i, pool) in pools.iter().enumerate() {
            let n = cfg.sizes[i];
            let launched = launch(cfg, n, pool)?;
            times[i].push(launched.startup);
            if let Some(note) = stop_launched(launched) {
                notes.push(format!("[{n} records] start-up trial {trial}: {note}"));
            }
        }
    }
    Ok((times, notes))
}

/// One pool size: its daemon, its device and what its guest pool holds.
struct Daemon {
    size: usize,
    /// The guest pool as the daemon must hold it, in file order: every reply is checked
    /// against it, and it follows each SET and DELETE as the daemon applies them.
    records: Vec<Record>,
    /// Records DELETEd and not yet SET back.
    deleted: Vec<Record>,
    /// Which keys are asked for, and the values SET.
    prng: Prng,
    pool_file: PathBuf,
    pinned: Result<String, String>,
    threads_at_start: usize,
    // Dropped in this order: the device link, the process, the socket, the directory.
    link: DaemonLink,
    process: DaemonProc,
    _device: EmulatedDevice,
    dir: TempDir,
}

/// Makes the pool directory, starts the daemon on its own device, pins it, warms it up.
fn start(cfg: &Config, n: usize, cpu: Option<usize>) -> Result<Daemon, String> {
    let mut prng = Prng::new(cfg.seed).fork(&format!("pool-{n}"));
    let pool = write_pool(cfg, n, "run", &mut prng)?;
    progress(&format!("[{n} records] starting the daemon"));
    let mut l = launch(cfg, n, &pool)?;
    let pinned = match cpu {
        Some(cpu) => pin_daemon(l.process.pid(), cpu),
        None => Err("not requested (--no-pin)".into()),
    };
    warm_up(&mut l.link, n, &pool.records)?;
    Ok(Daemon {
        size: n,
        records: pool.records,
        deleted: Vec::new(),
        prng,
        pool_file: pool.pool_file,
        pinned,
        threads_at_start: tasks(l.process.pid()).len(),
        link: l.link,
        process: l.process,
        _device: l.device,
        dir: pool.dir,
    })
}

/// Untimed requests, so that first-touch costs are not measured.
fn warm_up(link: &mut DaemonLink, n: usize, records: &[Record]) -> Result<(), String> {
    let auto = auto_first();
    for i in 0..WARMUP {
        ask(link, n, &auto)?;
        let r = &records[i % n];
        let get = Request::Get {
            pool: PoolId::Guest,
            key: r.key.clone(),
        };
        let label = format!("warm-up GET {}", text(r.key.as_bytes()));
        ask(link, n, &plan(&get, Expect::Value(r.value.clone()), label))?;
    }
    Ok(())
}

impl Daemon {
    /// Whether the host may add a key to this pool (it holds fewer records than the
    /// host's budget), so that a DELETEd key can be SET back.
    fn grows(&self) -> bool {
        self.size < HOST_POOL_RECORDS
    }

    fn enum_steps(&self) -> usize {
        let n = self.records.len();
        MIN_ENUM_STEPS.div_ceil(n + 1) * (n + 1)
    }

    /// Step `k` of the ENUMERATE passes: indexes 0..=N, the last one past the end.
    fn enumerate(&self, k: usize) -> Planned {
        let i = k % (self.records.len() + 1);
        let req = Request::Enumerate {
            pool: PoolId::Guest,
            index: u32::try_from(i).expect("pool sizes fit u32"),
        };
        let label = format!("ENUMERATE guest[{i}]");
        match self.records.get(i) {
            Some(r) => plan(&req, Expect::Entry(r.clone()), label),
            None => plan(
                &req,
                Expect::Status(Status::S_CONT),
                label + " (one past the end)",
            ),
        }
    }

    fn pick(&mut self) -> usize {
        usize::try_from(self.prng.below(self.records.len() as u64)).expect("below the length")
    }

    fn get(&mut self) -> Planned {
        let i = self.pick();
        let r = &self.records[i];
        let req = Request::Get {
            pool: PoolId::Guest,
            key: r.key.clone(),
        };
        let label = format!("GET {}", text(r.key.as_bytes()));
        plan(&req, Expect::Value(r.value.clone()), label)
    }

    /// A new value for a random existing key: possible at every size, whatever the
    /// host's budget.
    fn set_in_place(&mut self) -> Planned {
        let i = self.pick();
        let v = value(&mut self.prng, i);
        self.records[i].value = v;
        self.set(self.records[i].clone(), "SET in place")
    }

    fn set(&self, r: Record, what: &str) -> Planned {
        let label = format!("{what} {}", text(r.key.as_bytes()));
        let req = Request::Set {
            pool: PoolId::Guest,
            key: r.key,
            value: r.value,
        };
        plan(&req, Expect::Status(Status::OK), label)
    }

    /// DELETE of a random existing key; the daemon moves the last record into the hole.
    fn delete(&mut self) -> Planned {
        let i = self.pick();
        let r = self.records.swap_remove(i);
        let req = Request::Delete {
            pool: PoolId::Guest,
            key: r.key.clone(),
        };
        let label = format!("DELETE {}", text(r.key.as_bytes()));
        self.deleted.push(r);
        plan(&req, Expect::Status(Status::OK), label)
    }

    /// SET of the last deleted key as a new key: it is appended.
    fn set_back(&mut self) -> Planned {
        let r = self.deleted.pop().expect("a key was deleted");
        self.records.push(r.clone());
        self.set(r, "SET new key")
    }

    /// Step `k` of the DELETE phase: DELETE, then where the host may add a key, SET back.
    fn delete_step(&mut self, k: usize) -> Step {
        if self.grows() && k % 2 == 1 {
            Step::new(WRITE_SET_NEW, self.set_back())
        } else {
            Step::new(WRITE_DELETE, self.delete())
        }
    }

    /// Step `k` of the churn: SETs in place, one DELETE in `CHURN_DELETE_EVERY` and, where
    /// the host may add a key, the key SET back in the next step.
    fn churn_step(&mut self, k: usize) -> Planned {
        match k % CHURN_DELETE_EVERY {
            0 if self.grows() && !self.deleted.is_empty() => self.set_back(),
            r if r == CHURN_DELETE_EVERY - 1 && !self.records.is_empty() => self.delete(),
            _ => self.set_in_place(),
        }
    }

    /// The pool file must hold exactly the records we expect; and a deleted key is gone.
    fn check(&mut self, after: &str) -> Result<(), String> {
        let len = std::fs::metadata(&self.pool_file)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", self.pool_file.display()))?;
        let want = (self.records.len() * POOL_RECORD_SIZE) as u64;
        if len != want {
            return Err(format!(
                "[{} records] after {after} the pool file is {len} bytes, expected {want}",
                self.size
            ));
        }
        let Some(gone) = self.deleted.first() else {
            return Ok(());
        };
        let req = Request::Get {
            pool: PoolId::Guest,
            key: gone.key.clone(),
        };
        let label = format!("GET {} after its DELETE", text(gone.key.as_bytes()));
        let expect = plan(&req, Expect::Status(Status::S_CONT), label);
        ask(&mut self.link, self.size, &expect).map(|_| ())
    }
}

// ---------------------------------------------------------------------------------------
// Phases

/// One request of a phase and the row of the phase its latency goes to.
struct Step {
    row: usize,
    planned: Planned,
}

impl Step {
    fn new(row: usize, planned: Planned) -> Step {
        Step { row, planned }
    }
}

/// Runs one phase on every daemon, interleaved in rounds of `ROUND` requests: `count`
/// requests each (counted at the start), the k-th made by `make`, timed into `rows`
/// series per daemon. A series' wall time is the sum of its requests' round trips.
fn phase(
    daemons: &mut [Daemon],
    name: &str,
    rows: usize,
    count: impl Fn(&Daemon) -> usize,
    mut make: impl FnMut(&mut Daemon, usize) -> Step,
) -> Result<Vec<Vec<Series>>, String> {
    progress(name);
    let counts: Vec<usize> = daemons.iter().map(count).collect();
    let mut series: Vec<Vec<Series>> = daemons
        .iter()
        .map(|_| (0..rows).map(|_| Series::new()).collect())
        .collect();
    let mut done = vec![0usize; daemons.len()];
    while done.iter().zip(&counts).any(|(d, c)| d < c) {
        for (i, d) in daemons.iter_mut().enumerate() {
            let end = (done[i] + ROUND).min(counts[i]);
            for k in done[i]..end {
                let step = make(d, k);
                let turn = Instant::now();
                let took = ask(&mut d.link, d.size, &step.planned)?;
                let s = &mut series[i][step.row];
                s.wall += turn.elapsed();
                s.samples.push(took);
            }
            done[i] = end;
        }
    }
    Ok(series)
}

/// A phase of one kind of request: one series per daemon.
fn phase1(
    daemons: &mut [Daemon],
    name: &str,
    count: impl Fn(&Daemon) -> usize,
    mut make: impl FnMut(&mut Daemon, usize) -> Planned,
) -> Result<Vec<Series>, String> {
    let series = phase(daemons, name, 1, count, |d, k| Step::new(0, make(d, k)))?;
    Ok(series.into_iter().flatten().collect())
}

// The rows of the DELETE phase, as indexes into its series.
const WRITE_DELETE: usize = 0;
const WRITE_SET_NEW: usize = 1;

/// A kind of read request: its name, how many per pass, and the k-th request.
type ReadRow = (&'static str, fn(&Daemon) -> usize, MakeRequest);

/// The read rows, in the order `finish` takes them: the two no-ops, ENUMERATE, GET.
const READS: [ReadRow; 4] = [
    (
        "no-op floor: unknown op 7",
        |_| FLOOR_OPS,
        |_, _| unknown_op(),
    ),
    (
        "no-op floor: ENUMERATE auto[0]",
        |_| FLOOR_OPS,
        |_, _| auto_first(),
    ),
    ("ENUMERATE", Daemon::enum_steps, |d, k| d.enumerate(k)),
    ("GET", |_| GET_OPS, |d, _| d.get()),
];

/// `READ_PASSES` passes of the floor and the reads; per daemon, the rows of `READS` pooled.
fn read_passes(ds: &mut [Daemon]) -> Result<Vec<Vec<Series>>, String> {
    let mut pooled: Vec<Vec<Series>> = ds
        .iter()
        .map(|_| READS.iter().map(|_| Series::new()).collect())
        .collect();
    for pass in 1..=READ_PASSES {
        for (row, (name, count, make)) in READS.into_iter().enumerate() {
            let name = format!("{name} (pass {pass}/{READ_PASSES})");
            for (i, s) in phase1(ds, &name, count, make)?.into_iter().enumerate() {
                pooled[i][row].absorb(s);
            }
        }
    }
    Ok(pooled)
}

/// The timed writes: SETs in place, then DELETEs (each followed by its SET back where the
/// host may add a key). Per daemon: SET in place, DELETE, SET new key (None if not run).
fn write_phases(ds: &mut [Daemon]) -> Result<Vec<(Stats, Stats, Option<Stats>)>, String> {
    let set = phase1(
        ds,
        "SET in place (durable)",
        |_| OPS,
        |d, _| d.set_in_place(),
    )?;
    let delete = phase(
        ds,
        "DELETE (durable), each SET back as a new key where the host may add one",
        2,
        |d| if d.grows() { 2 * OPS } else { OPS },
        Daemon::delete_step,
    )?;
    Ok(set
        .into_iter()
        .zip(delete)
        .map(|(set, rows)| {
            let mut rows = rows.into_iter();
            let delete = rows.next().expect("the DELETE row").stats();
            let set_new = rows.next().and_then(Series::stats_if_any);
            (set.stats(), delete, set_new)
        })
        .collect())
}
// ---------------------------------------------------------------------------------------
// The machine

/// Rounds of `pwrite` of one record and `fsync` on a scratch file beside the pools: what
/// the disk charges for each of the daemon's durable steps at about that time.
fn fsync_probe(dir: &Path) -> Result<Stats, String> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync-probe");
    let f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let record = [0x5au8; POOL_RECORD_SIZE];
    let mut s = Series::new();
    let t = Instant::now();
    for _ in 0..FSYNC_PROBES {
        let one = Instant::now();
        f.write_all_at(&record, 0)
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        s.samples.push(one.elapsed());
    }
    s.wall = t.elapsed();
    let _ = std::fs::remove_file(&path);
    Ok(s.stats())
}

/// The load average and the I/O pressure: what else the machine was doing.
fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let io = std::fs::read_to_string("/proc/pressure/io")
        .ok()
        .and_then(|p| {
            p.lines()
                .find_map(|l| l.strip_prefix("some "))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        })
        .map(|some| format!(", I/O pressure (some) {some}"))
        .unwrap_or_default();
    format!("load average {avg}{io}")
}

// ---------------------------------------------------------------------------------------
// The churn and the counted batches

/// What the churn did on its daemon and the peak RSS read right after it.
struct Churn {
    /// Requests asked for, and made (fewer when the time limit cut the churn short).
    planned: usize,
    ops: usize,
    records_before: usize,
    records_after: usize,
    deletes: usize,
    took: Duration,
    /// VmHWM after the churn: the peak since start, which the churn is part of.
    rss_kb: u64,
}

/// The daemon the churn runs on: the one of `CHURN_SIZE` records, or the largest.
fn churn_index(ds: &[Daemon]) -> Option<usize> {
    ds.iter()
        .position(|d| d.size == CHURN_SIZE)
        .or_else(|| ds.len().checked_sub(1))
}

/// `planned` untimed SETs and DELETEs on one daemon, or as many as `limit` allows (so that
/// a slow daemon does not make the run endless), then its peak RSS.
fn churn(d: &mut Daemon, planned: usize, limit: Option<Duration>) -> Result<Churn, String> {
    progress(&format!(
        "[{} records] churn: {planned} SET/DELETE (a DELETE in {CHURN_DELETE_EVERY}){}",
        d.size,
        limit.map_or(String::new(), |l| format!(
            ", for at most {} s",
            l.as_secs()
        ))
    ));
    let records_before = d.records.len();
    let start = Instant::now();
    let (mut ops, mut deletes) = (0, 0);
    while ops < planned && limit.is_none_or(|l| start.elapsed() < l) {
        let p = d.churn_step(ops);
        deletes += usize::from(matches!(p.op, Op::Delete));
        ask(&mut d.link, d.size, &p)?;
        ops += 1;
    }
    let took = start.elapsed();
    d.check("the churn")?;
    Ok(Churn {
        planned,
        ops,
        records_before,
        records_after: d.records.len(),
        deletes,
        took,
        rss_kb: peak_rss_kb(d.process.pid())?,
    })
}

/// What strace counted for one kind of request on one daemon, less an attachment alone.
struct CountRow {
    name: &'static str,
    ops: usize,
    counts: Counts,
}

impl CountRow {
    fn per_op(&self, n: u64) -> f64 {
        n as f64 / self.ops.max(1) as f64
    }

    /// fsync and fdatasync per request: the durable steps.
    fn syncs(&self) -> f64 {
        self.per_op(self.counts.get("fsync") + self.counts.get("fdatasync"))
    }

    fn is_write(&self) -> bool {
        self.name.starts_with("SET") || self.name.starts_with("DELETE")
    }
}

/// The counted batches of one daemon: Err(why) when strace could not count, which the
/// report says and the run survives; the outer Err is a failed request, which ends it.
type Counted = Result<Vec<CountRow>, String>;

/// Makes the k-th request of a counted batch.
type MakeRequest = fn(&mut Daemon, usize) -> Planned;

/// One batch of `ops` requests with strace attached to the daemon, and its counts.
fn counted(
    d: &mut Daemon,
    ops: usize,
    make: MakeRequest,
) -> Result<Result<Counts, String>, String> {
    let out = d.dir.0.join("strace-summary.txt");
    let tracer = match Tracer::attach(d.process.pid(), &out) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    for k in 0..ops {
        let p = make(d, k);
        ask(&mut d.link, d.size, &p)?;
    }
    std::thread::sleep(COUNT_SETTLE);
    Ok(tracer.finish())
}

/// The batches counted on every daemon: each kind of request, in its own attachment.
fn count_batches(d: &Daemon) -> Vec<(&'static str, usize, MakeRequest)> {
    let deletes = COUNT_WRITES.min(d.records.len());
    let set_backs = if d.grows() { deletes } else { 0 };
    vec![
        ("no-op: unknown op 7", COUNT_READS, |_, _| unknown_op()),
        ("ENUMERATE (per step)", COUNT_READS, |d, k| d.enumerate(k)),
        ("GET (random)", COUNT_READS, |d, _| d.get()),
        ("SET in place (durable)", COUNT_WRITES, |d, _| {
            d.set_in_place()
        }),
        ("DELETE (durable)", deletes, |d, _| d.delete()),
        ("SET new key (durable)", set_backs, |d, _| d.set_back()),
    ]
}

/// Counts every batch on one daemon, less what an attachment with no request counts.
fn count_syscalls(d: &mut Daemon) -> Result<Counted, String> {
    progress(&format!(
        "[{} records] counting system calls with strace",
        d.size
    ));
    let base = match counted(d, 0, |_, _| unknown_op())? {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let mut rows = Vec::new();
    for (name, ops, make) in count_batches(d) {
        if ops == 0 {
            continue;
        }
        match counted(d, ops, make)? {
            Ok(c) => rows.push(CountRow {
                name,
                ops,
                counts: c.minus(&base),
            }),
            Err(e) => return Ok(Err(format!("{name}: {e}"))),
        }
    }
    d.check("the counted batches")?;
    Ok(Ok(rows))
}

// ---------------------------------------------------------------------------------------
// The run

struct SizeResult {
    size: usize,
    pinned: Result<String, String>,
    floor_unknown: Stats,
    floor_auto: Stats,
    enumerate: Stats,
    get: Stats,
    set: Stats,
    delete: Stats,
    /// None where the host may not add a key.
    set_new: Option<Stats>,
    startups: Vec<Duration>,
    threads_at_start: usize,
    threads_idle: usize,
    churn: Option<Churn>,
    /// VmHWM at the end of the timed phases.
    rss_kb: u64,
    records_end: usize,
    idle_before: CpuSample,
    idle_after: CpuSample,
    counts: Counted,
    stop_note: Option<String>,
}

impl SizeResult {
    /// The cheaper no-op (by p50) and its name.
    fn floor(&self) -> (Stats, &'static str) {
        if self.floor_auto.p50 <= self.floor_unknown.p50 {
            (self.floor_auto, "ENUMERATE auto[0]")
        } else {
            (self.floor_unknown, "unknown op 7")
        }
    }

    fn idle_ticks(&self) -> u64 {
        self.idle_after.ticks.saturating_sub(self.idle_before.ticks)
    }

    fn startup(&self) -> Duration {
        median(&self.startups)
    }
}

/// What the whole run saw besides the per-size figures.
struct RunInfo {
    cpu: Option<usize>,
    idle: Duration,
    disk_before: Stats,
    disk_after: Stats,
    load_before: String,
    load_after: String,
    notes: Vec<String>,
}

/// Pins this process (the daemons inherit it) unless told not to; the CPU, if pinned.
fn pin_if_asked(cfg: &Config) -> Option<usize> {
    if !cfg.pin {
        return None;
    }
    match pin_self() {
        Ok(cpu) => Some(cpu),
        Err(e) => {
            eprintln!("kvp-bench: could not pin to one CPU ({e}); measuring unpinned");
            None
        }
    }
}

/// The timed phases, in order: reads, the churn, writes. Their figures per daemon.
struct Timed {
    reads: Vec<Vec<Series>>,
    writes: Vec<(Stats, Stats, Option<Stats>)>,
    churn: Option<(usize, Churn)>,
    rss_kb: Vec<u64>,
    disk_before: Stats,
    disk_after: Stats,
    load_before: String,
    load_after: String,
}

fn timed(ds: &mut [Daemon], cfg: &Config) -> Result<Timed, String> {
    let reads = read_passes(ds)?;
    let disk_dir = ds[0].dir.0.clone();
    progress("disk probe (pwrite+fsync)");
    let disk_before = fsync_probe(&disk_dir)?;
    let load_before = load();
    // The churn comes before the timed DELETEs, so that where the host may not add a key
    // it runs on a pool as close to its full size as it can.
    let churn = match churn_index(ds) {
        Some(i) => Some((i, churn(&mut ds[i], cfg.churn_ops, cfg.churn_limit)?)),
        None => None,
    };
    let writes = write_phases(ds)?;
    let load_after = load();
    for d in ds.iter_mut() {
        d.check("the SETs and DELETEs")?;
    }
    progress("disk probe (pwrite+fsync)");
    let disk_after = fsync_probe(&disk_dir)?;
    let rss_kb = ds
        .iter()
        .map(|d| peak_rss_kb(d.process.pid()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Timed {
        reads,
        writes,
        churn,
        rss_kb,
        disk_before,
        disk_after,
        load_before,
        load_after,
    })
}

/// The daemons watched doing nothing: CPU samples before and after, and their threads.
struct Idle {
    before: Vec<CpuSample>,
    after: Vec<CpuSample>,
    took: Duration,
    threads: Vec<usize>,
}

fn watch_idle(ds: &[Daemon], idle: Duration) -> Result<Idle, String> {
    progress(&format!(
        "watching the idle daemons for {} s",
        idle.as_secs()
    ));
    let sample = || {
        ds.iter()
            .map(|d| cpu_sample(d.process.pid()))
            .collect::<Result<Vec<_>, _>>()
    };
    let before = sample()?;
    let t = Instant::now();
    std::thread::sleep(idle);
    let after = sample()?;
    Ok(Idle {
        before,
        after,
        took: t.elapsed(),
        threads: ds.iter().map(|d| tasks(d.process.pid()).len()).collect(),
    })
}

fn run(cfg: &Config) -> Result<(), String> {
    if !cfg.daemon.is_file() {
        return Err(format!(
            "{}: no such daemon binary (build it with `cargo build --release -p hvguest-io --bin hv_kvp_daemon`)",
            cfg.daemon.display()
        ));
    }
    let cpu = pin_if_asked(cfg);
    let (startups, notes) = startup_trials(cfg)?;
    let mut daemons = Vec::new();
    for &n in &cfg.sizes {
        daemons.push(start(cfg, n, cpu)?);
    }
    let mut t = timed(&mut daemons, cfg)?;
    let idle = watch_idle(&daemons, cfg.idle)?;
    let mut counts = Vec::new();
    for d in daemons.iter_mut() {
        counts.push(count_syscalls(d)?);
    }
    let mut results = Vec::new();
    for (i, ((d, counts), startups)) in daemons.into_iter().zip(counts).zip(startups).enumerate() {
        results.push(finish(d, i, &mut t, &idle, counts, startups)?);
    }
    let info = RunInfo {
        cpu,
        idle: idle.took,
        disk_before: t.disk_before,
        disk_after: t.disk_after,
        load_before: t.load_before,
        load_after: t.load_after,
        notes,
    };
    print!("{}", report(cfg, &info, &results));
    Ok(())
}

/// Stops daemon `i` (it must still be running) and gathers its figures.
fn finish(
    mut d: Daemon,
    i: usize,
    t: &mut Timed,
    idle: &Idle,
    counts: Counted,
    startups: Vec<Duration>,
) -> Result<SizeResult, String> {
    if let Some(status) = d.process.exited() {
        return Err(format!("[{} records] the daemon exited: {status}", d.size));
    }
    let mut reads = std::mem::take(&mut t.reads[i])
        .into_iter()
        .map(Series::stats);
    let mut next = || reads.next().expect("four read rows");
    let (set, delete, set_new) = t.writes[i];
    let churn = if t.churn.as_ref().is_some_and(|(c, _)| *c == i) {
        t.churn.take().map(|(_, c)| c)
    } else {
        None
    };
    Ok(SizeResult {
        size: d.size,
        floor_unknown: next(),
        floor_auto: next(),
        enumerate: next(),
        get: next(),
        set,
        delete,
        set_new,
        startups,
        threads_at_start: d.threads_at_start,
        threads_idle: idle.threads[i],
        churn,
        rss_kb: t.rss_kb[i],
        records_end: d.records.len(),
        idle_before: idle.before[i],
        idle_after: idle.after[i],
        counts,
        // SIGTERM with the device still open (the link is dropped with `d`, after this).
        stop_note: d.process.stop(),
        pinned: d.pinned,
    })
}

// ---------------------------------------------------------------------------------------
// The report

fn report(cfg: &Config, info: &RunInfo, results: &[SizeResult]) -> String {
    let mut o = String::new();
    report_setup(&mut o, cfg, info, results);
    report_table(&mut o, results);
    report_daemons(&mut o, info, results);
    report_syscalls(&mut o, results);
    o.push_str("\ntargets (issue 13; then issue 4's, kept):\n");
    for line in evaluate(results) {
        o.push_str(&format!("  {line}\n"));
    }
    o
}

fn report_setup(o: &mut String, cfg: &Config, info: &RunInfo, results: &[SizeResult]) {
    use std::fmt::Write as _;
    let _ = writeln!(o, "\nhv_kvp_daemon benchmark ({})", cfg.daemon.display());
    let _ = writeln!(
        o,
        "emulated device: Unix SOCK_SEQPACKET, 7430-byte messages; seed {}; pools in {}",
        cfg.seed,
        cfg.tmp.display()
    );
    let _ = writeln!(
        o,
        "one daemon per size, every phase interleaved across them in rounds of {ROUND} requests; \
         the reads in {READ_PASSES} passes, pooled"
    );
    match info.cpu {
        Some(cpu) => {
            let _ = writeln!(o, "pinning: bench on CPU {cpu}; daemons:");
            for r in results {
                let _ = match &r.pinned {
                    Ok(s) => writeln!(o, "  {:>6} records: {s}", r.size),
                    Err(e) => writeln!(
                        o,
                        "  {:>6} records: NOT pinned ({e}): figures are across CPUs",
                        r.size
                    ),
                };
            }
        }
        None => {
            let _ = writeln!(
                o,
                "pinning: none (failed or --no-pin): figures are across CPUs, the floor is higher"
            );
        }
    }
    let _ = writeln!(
        o,
        "latency: hand-off of the request to receipt of the reply (the emulated kernel's view)\n\
         SET in place: a new value for an existing key; DELETE: a random existing key, then (where \
         the pool holds\nfewer than the host's budget of {HOST_POOL_RECORDS} records) SET back as a \
         new key; past the budget the host may not add a key\n"
    );
}

fn report_table(o: &mut String, results: &[SizeResult]) {
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "{:>7}  {:<24} {:>6} {:>10} {:>10} {:>10} {:>9}",
        "records", "operation", "count", "ops/s", "p50 µs", "p99 µs", "p50/floor"
    );
    let _ = writeln!(o, "{}", "-".repeat(82));
    for r in results {
        let (floor, _) = r.floor();
        let rows = [
            ("no-op: unknown op 7", Some(r.floor_unknown)),
            ("no-op: ENUMERATE auto[0]", Some(r.floor_auto)),
            ("ENUMERATE (per step)", Some(r.enumerate)),
            ("GET (random)", Some(r.get)),
            ("SET in place (durable)", Some(r.set)),
            ("DELETE (durable)", Some(r.delete)),
            ("SET new key (durable)", r.set_new),
        ];
        for (name, s) in rows {
            let _ = match s {
                Some(s) => writeln!(
                    o,
                    "{:>7}  {:<24} {:>6} {:>10.0} {:>10.1} {:>10.1} {:>8.2}x",
                    r.size,
                    name,
                    s.count,
                    s.ops_per_sec,
                    us(s.p50),
                    us(s.p99),
                    ratio(s.p50, floor.p50)
                ),
                None => writeln!(
                    o,
                    "{:>7}  {:<24} not run: the host may not add a key past {HOST_POOL_RECORDS} records",
                    r.size, name
                ),
            };
        }
        let _ = writeln!(o);
    }
}

fn report_daemons(o: &mut String, info: &RunInfo, results: &[SizeResult]) {
    use std::fmt::Write as _;
    let ticks_per_sec = clock_ticks_per_sec();
    let _ = writeln!(o, "per daemon:");
    for r in results {
        let (floor, which) = r.floor();
        let (lo, hi) = (
            r.startups.iter().min().copied().unwrap_or_default(),
            r.startups.iter().max().copied().unwrap_or_default(),
        );
        let _ = writeln!(
            o,
            "  {:>6} records: floor {:.1} µs ({which}); threads {} after start-up, {} idle; \
             pool at the end {} records",
            r.size,
            us(floor.p50),
            r.threads_at_start,
            r.threads_idle,
            r.records_end,
        );
        let _ = writeln!(
            o,
            "                  start-up (spawn to registration): median {:.2} ms of {} starts \
             (min {:.2}, max {:.2})",
            ms(r.startup()),
            r.startups.len(),
            ms(lo),
            ms(hi),
        );
        if let Some(c) = &r.churn {
            let _ = writeln!(
                o,
                "                  churn: {} of {} SET/DELETE ({} DELETEs) in {:.1} s, pool {} -> {} \
                 records; peak RSS (VmHWM) after it {} kB = {:.2} MB",
                c.ops,
                c.planned,
                c.deletes,
                c.took.as_secs_f64(),
                c.records_before,
                c.records_after,
                c.rss_kb,
                mb(c.rss_kb),
            );
        }
        let _ = writeln!(
            o,
            "                  peak RSS (VmHWM) after the timed phases {} kB = {:.2} MB",
            r.rss_kb,
            mb(r.rss_kb),
        );
        let _ = writeln!(
            o,
            "                  idle {:.1} s: CPU {} ticks = {} ms (utime+stime), {} µs on a CPU \
             (schedstat), {} context switches",
            info.idle.as_secs_f64(),
            r.idle_ticks(),
            r.idle_ticks() * 1000 / ticks_per_sec,
            r.idle_after.run_ns.saturating_sub(r.idle_before.run_ns) / 1000,
            r.idle_after.switches.saturating_sub(r.idle_before.switches),
        );
        if let Some(note) = &r.stop_note {
            let _ = writeln!(o, "                  WARNING: at shutdown: {note}");
        }
    }
    for note in &info.notes {
        let _ = writeln!(o, "  WARNING: {note}");
    }
    let _ = writeln!(
        o,
        "disk, our own pwrite+fsync of one record: p50 {:.1} µs, p99 {:.1} µs before the SETs; \
         p50 {:.1} µs, p99 {:.1} µs after the DELETEs",
        us(info.disk_before.p50),
        us(info.disk_before.p99),
        us(info.disk_after.p50),
        us(info.disk_after.p99),
    );
    let _ = writeln!(
        o,
        "machine: {} before the SETs, {} after the DELETEs",
        info.load_before, info.load_after
    );
}

fn report_syscalls(o: &mut String, results: &[SizeResult]) {
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "\nsystem calls per request, counted by `{} -f -c` attached to the daemon, one batch per row,\n\
         after every timed phase; less what an attachment with no request counts\n",
        syscalls::STRACE
    );
    let _ = writeln!(
        o,
        "{:>7}  {:<24} {:>5} {:>6} {:>9} {:>9} {:>7}  most frequent",
        "records", "operation", "count", "fsync", "fdatasync", "ftruncate", "total"
    );
    let _ = writeln!(o, "{}", "-".repeat(110));
    for r in results {
        match &r.counts {
            Ok(rows) => {
                for row in rows {
                    let _ = writeln!(o, "{:>7}  {}", r.size, count_line(row));
                }
            }
            Err(why) => {
                let _ = writeln!(o, "{:>7}  counts unavailable: {why}", r.size);
            }
        }
        let _ = writeln!(o);
    }
}

fn count_line(row: &CountRow) -> String {
    let c = &row.counts;
    let top: Vec<String> = c
        .top(4)
        .into_iter()
        .map(|(name, n)| format!("{name} {:.2}", row.per_op(n)))
        .collect();
    format!(
        "{:<24} {:>5} {:>6.2} {:>9.2} {:>9.2} {:>7.2}  {}",
        row.name,
        row.ops,
        row.per_op(c.get("fsync")),
        row.per_op(c.get("fdatasync")),
        row.per_op(c.get("ftruncate")),
        row.per_op(c.total()),
        top.join(", ")
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

// ---------------------------------------------------------------------------------------
// The targets

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met    "
    } else {
        "NOT MET"
    }
}

const NOT_EVALUATED: &str = "n/a    ";

fn evaluate(results: &[SizeResult]) -> Vec<String> {
    let mut lines = vec![
        read_target(results, "GET", |r| r.get),
        read_target(results, "ENUMERATE", |r| r.enumerate),
        fsync_target(results),
        rss_target(results),
        startup_target(results),
        format!("{NOT_EVALUATED} simulator >= 200,000 simulated requests/s on one core: not measured here (cargo xtask sim)"),
        format!(
            "{NOT_EVALUATED} daemon threads (no target): {}",
            join(results, |r| format!("{} after start-up, {} idle", r.threads_at_start, r.threads_idle))
        ),
    ];
    lines.push(growth_target(results, "durable SET in place", |r| r.set));
    lines.push(growth_target(results, "durable DELETE", |r| r.delete));
    lines.push(idle_target(results));
    lines
}

/// "10: ...; 1000: ...": one figure per size.
fn join(results: &[SizeResult], each: impl Fn(&SizeResult) -> String) -> String {
    let parts: Vec<String> = results
        .iter()
        .map(|r| format!("{}: {}", r.size, each(r)))
        .collect();
    parts.join("; ")
}

fn read_target(results: &[SizeResult], name: &str, pick: fn(&SizeResult) -> Stats) -> String {
    let x = |r: &SizeResult| ratio(pick(r).p50, r.floor().0.p50);
    let ok = results.iter().all(|r| x(r) <= READ_FLOOR_FACTOR);
    let shown = join(results, |r| {
        format!(
            "{:.1} µs = {:.2}x of {:.1}",
            us(pick(r).p50),
            x(r),
            us(r.floor().0.p50)
        )
    });
    format!(
        "{} {name} p50 <= {READ_FLOOR_FACTOR}x the no-op floor of the same run, every size ({shown})",
        verdict(ok)
    )
}

fn fsync_target(results: &[SizeResult]) -> String {
    let what =
        format!("fsync+fdatasync per durable SET or DELETE <= {FSYNCS_PER_WRITE}, every size");
    let mut ok = true;
    let mut parts = Vec::new();
    for r in results {
        match &r.counts {
            Ok(rows) => {
                let shown: Vec<String> = rows
                    .iter()
                    .filter(|row| row.is_write())
                    .map(|row| {
                        ok &= row.syncs() <= FSYNCS_PER_WRITE;
                        format!(
                            "{} {:.2}",
                            row.name.trim_end_matches(" (durable)"),
                            row.syncs()
                        )
                    })
                    .collect();
                parts.push(format!("{}: {}", r.size, shown.join(", ")));
            }
            Err(why) => return format!("{NOT_EVALUATED} {what}: counts unavailable ({why})"),
        }
    }
    format!("{} {what} ({})", verdict(ok), parts.join("; "))
}

fn rss_target(results: &[SizeResult]) -> String {
    let what = format!(
        "peak RSS < 8 MB at {CHURN_SIZE} records through a churn of {CHURN_OPS} SET/DELETE"
    );
    let churned = results
        .iter()
        .find_map(|r| r.churn.as_ref().filter(|_| r.size == CHURN_SIZE));
    match churned {
        // The peak only grows: over the limit before the end is over it at the end.
        Some(c) if c.ops < CHURN_OPS && c.rss_kb * 1024 < RSS_LIMIT_BYTES => format!(
            "{NOT_EVALUATED} {what}: the churn was cut at {} requests (--churn-ops, --churn-secs); \
             {} kB = {:.2} MB so far",
            c.ops,
            c.rss_kb,
            mb(c.rss_kb)
        ),
        Some(c) => format!(
            "{} {what} ({} kB = {:.2} MB after {} requests, pool {} -> {} records)",
            verdict(c.rss_kb * 1024 < RSS_LIMIT_BYTES),
            c.rss_kb,
            mb(c.rss_kb),
            c.ops,
            c.records_before,
            c.records_after
        ),
        None => format!("{NOT_EVALUATED} {what}: needs size {CHURN_SIZE}"),
    }
}

fn startup_target(results: &[SizeResult]) -> String {
    let what = format!(
        "start-up (spawn to registration) <= {} ms at 10000 records, median of {STARTS}",
        STARTUP_LIMIT.as_millis()
    );
    let shown = join(results, |r| format!("{:.2} ms", ms(r.startup())));
    match results.iter().find(|r| r.size == 10_000) {
        Some(l) => format!("{} {what} ({shown})", verdict(l.startup() <= STARTUP_LIMIT)),
        None => format!("{NOT_EVALUATED} {what}: needs size 10000 ({shown})"),
    }
}

fn growth_target(results: &[SizeResult], name: &str, pick: fn(&SizeResult) -> Stats) -> String {
    let small = results.iter().find(|r| r.size == 10);
    let large = results.iter().find(|r| r.size == 10_000);
    let what = format!(
        "(issue 4) {name} p50 at 10,000 records <= {WRITE_GROWTH_FACTOR}x its 10-record figure"
    );
    match (small, large) {
        (Some(s), Some(l)) => {
            let x = ratio(pick(l).p50, pick(s).p50);
            format!(
                "{} {what} ({:.1} µs vs {:.1} µs = {x:.2}x)",
                verdict(x <= WRITE_GROWTH_FACTOR),
                us(pick(l).p50),
                us(pick(s).p50),
            )
        }
        _ => format!("{NOT_EVALUATED} {what}: needs sizes 10 and 10000"),
    }
}

fn idle_target(results: &[SizeResult]) -> String {
    let ticks_per_sec = clock_ticks_per_sec();
    let shown = join(results, |r| {
        format!(
            "{} ms, {} wake-ups",
            r.idle_ticks() * 1000 / ticks_per_sec,
            r.idle_after.switches.saturating_sub(r.idle_before.switches)
        )
    });
    format!(
        "{} (issue 4) no CPU while idle: utime+stime unchanged over the idle window, every size ({shown})",
        verdict(results.iter().all(|r| r.idle_ticks() == 0))
    )
}
