//! `kvp-bench --daemon PATH`: benchmarks a real `hv_kvp_daemon` process against the
//! emulated device (`hvguest_sim::emulator`), as issue 4 asks: for guest pools of 10,
//! 1,000 and 10,000 records, the no-op round trip (the floor), ENUMERATE of the whole
//! pool, random GETs, durable SETs then DELETEs, each as ops/s, p50 and p99; the daemon's
//! peak RSS; its CPU time while idle. Then it evaluates the targets.
//!
//! One daemon per pool size, each in its own temporary pool directory on its own emulated
//! device, all started before the first measurement. Every phase then runs interleaved:
//! rounds of `ROUND` requests to each daemon in turn. The targets compare pool sizes with
//! each other, and on a shared machine the price of an fsync can change tenfold within
//! seconds; measured one size after the other, that change would be read as an effect of
//! the pool size. Interleaved, it falls on every size alike.
//!
//! Every reply is checked (status, and the value or entry where there is one), so a
//! failing daemon aborts the run instead of being measured. Exit status: 0 when the run
//! completed (whether or not the targets were met: this is a measurement), 1 on an error,
//! 2 on bad usage. `cargo xtask bench` builds both binaries in release and runs this.
//!
//! Linux only in practice: it reads `/proc` and pins with `sched_setaffinity`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use hvguest_core::kvp::record::{encode_pool, Record};
use hvguest_core::kvp::wire::{decode_reply, encode_request, Op, PoolId, Reply, Request, Status};
use hvguest_core::kvp::{Key, Value};
use hvguest_core::limits::{KVP_MSG_SIZE, POOL_RECORD_SIZE};
use hvguest_sim::emulator::{Answer, DaemonLink, EmulatedDevice};
use hvguest_sim::prng::Prng;

const USAGE: &str = "usage: kvp-bench --daemon PATH [--sizes N,N,...] [--seed S] [--idle-secs S]
                 [--no-pin] [--tmp DIR]

  --daemon PATH    the hv_kvp_daemon binary to measure (build it with --release)
  --sizes LIST     guest pool sizes in records (default 10,1000,10000)
  --seed S         seed of the GET key order and the values (default 1)
  --idle-secs S    how long the idle CPU time is watched (default 5)
  --no-pin         do not pin the bench and the daemons to one CPU
  --tmp DIR        where the pool directories are made (default: the system temp dir;
                   a tmpfs such as /dev/shm takes the disk out of SET and DELETE)";

/// Round trips of each no-op request.
const FLOOR_OPS: usize = 2000;
/// Random GETs, SETs and DELETEs per pool size.
const OPS: usize = 1000;
/// ENUMERATE passes are repeated until at least this many steps were timed.
const MIN_ENUM_STEPS: usize = 1000;
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

// Targets from issue 4.
const READ_FLOOR_FACTOR: f64 = 3.0;
const WRITE_GROWTH_FACTOR: f64 = 2.0;
const RSS_LIMIT_BYTES: u64 = 8_000_000;

struct Config {
    daemon: PathBuf,
    sizes: Vec<usize>,
    seed: u64,
    idle: Duration,
    pin: bool,
    tmp: PathBuf,
}

enum Parsed {
    Run(Config),
    Help,
}

fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let mut daemon = None;
    let mut sizes = vec![10, 1000, 10_000];
    let mut seed = 1u64;
    let mut idle = Duration::from_secs(5);
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
            "--sizes" => {
                let mut list = value("--sizes")?
                    .split(',')
                    .map(|s| match s.trim().parse::<usize>() {
                        Ok(n) if (1..=20_000).contains(&n) => Ok(n),
                        _ => Err(format!("--sizes: `{s}` is not a size in 1..=20000")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                list.sort_unstable();
                list.dedup();
                sizes = list;
            }
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
            "--no-pin" => pin = false,
            "--tmp" => tmp = PathBuf::from(value("--tmp")?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let daemon = daemon.ok_or("--daemon PATH is required")?;
    Ok(Parsed::Run(Config {
        daemon,
        sizes,
        seed,
        idle,
        pin,
        tmp,
    }))
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

fn plan(req: &Request, expect: Expect, label: String) -> Planned {
    Planned {
        op: req.op(),
        bytes: encode_request(req),
        expect,
        label,
    }
}

fn unknown_op() -> Planned {
    let mut bytes = vec![0u8; KVP_MSG_SIZE].into_boxed_slice();
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
            let reply =
                decode_reply(p.op, &bytes).map_err(|e| fail(format!("undecodable reply: {e}")))?;
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

/// One pool size: its daemon, its device and what its guest pool holds.
struct Daemon {
    size: usize,
    records: Vec<Record>,
    /// Keys the SETs add and the DELETEs remove.
    added: Vec<Record>,
    /// Which record each GET asks for.
    picks: Vec<usize>,
    pool_file: PathBuf,
    startup: Duration,
    pinned: Result<String, String>,
    // Dropped in this order: the device link, the process, the socket, the directory.
    link: DaemonLink,
    process: DaemonProc,
    _device: EmulatedDevice,
    dir: TempDir,
}

fn progress(msg: &str) {
    eprintln!("kvp-bench: {msg}");
}

/// Makes the pool directory, starts the daemon on its own device, pins it, warms it up.
fn start(cfg: &Config, n: usize, cpu: Option<usize>) -> Result<Daemon, String> {
    let mut prng = Prng::new(cfg.seed).fork(&format!("pool-{n}"));
    let dir = TempDir(
        cfg.tmp
            .join(format!("hvguest-bench-{}-{n}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir.0);
    let pool_dir = dir.0.join("pool");
    std::fs::create_dir_all(&pool_dir).map_err(|e| format!("{}: {e}", pool_dir.display()))?;
    let records: Vec<Record> = (0..n)
        .map(|i| Record::new(key("key", i), value(&mut prng, i)))
        .collect();
    let added: Vec<Record> = (0..OPS)
        .map(|i| Record::new(key("new", i), value(&mut prng, i)))
        .collect();
    let picks: Vec<usize> = (0..OPS)
        .map(|_| usize::try_from(prng.below(n as u64)).expect("below n"))
        .collect();
    let pool_file = pool_dir.join(PoolId::Guest.file_name());
    // Made durable now, so that the daemon's first fsync does not pay for our write-back.
    std::fs::File::create(&pool_file)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, &encode_pool(&records))?;
            f.sync_all()
        })
        .map_err(|e| format!("{}: {e}", pool_file.display()))?;
    let device = EmulatedDevice::bind(&dir.0.join("kvp.sock"))
        .map_err(|e| format!("cannot listen on the emulated device: {e}"))?;

    progress(&format!("[{n} records] starting the daemon"));
    let started = Instant::now();
    let child = Command::new(&cfg.daemon)
        .arg("-n")
        .arg("--device")
        .arg(device.path())
        .arg("--pool-dir")
        .arg(&pool_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cfg.daemon.display()))?;
    let mut process = DaemonProc { child: Some(child) };
    // Accept on a helper thread, so that a daemon that dies at start-up is reported at
    // once rather than after the accept timeout.
    let accepting = std::thread::spawn(move || {
        let accepted = device.accept(ACCEPT_TIMEOUT);
        (device, accepted)
    });
    while !accepting.is_finished() {
        if let Some(status) = process.exited() {
            return Err(format!(
                "[{n} records] the daemon exited before registering: {status}"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (device, accepted) = accepting
        .join()
        .map_err(|_| "the thread accepting the daemon panicked".to_string())?;
    let mut link = match accepted {
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
    let startup = started.elapsed();
    let pinned = match cpu {
        Some(cpu) => pin_daemon(process.pid(), cpu),
        None => Err("not requested (--no-pin)".into()),
    };
    let auto = auto_first();
    for i in 0..WARMUP {
        ask(&mut link, n, &auto)?;
        let r = &records[i % n];
        let get = Request::Get {
            pool: PoolId::Guest,
            key: r.key.clone(),
        };
        let label = format!("warm-up GET {}", text(r.key.as_bytes()));
        ask(
            &mut link,
            n,
            &plan(&get, Expect::Value(r.value.clone()), label),
        )?;
    }
    Ok(Daemon {
        size: n,
        records,
        added,
        picks,
        pool_file,
        startup,
        pinned,
        link,
        process,
        _device: device,
        dir,
    })
}

impl Daemon {
    fn enum_steps(&self) -> usize {
        MIN_ENUM_STEPS.div_ceil(self.size + 1) * (self.size + 1)
    }

    /// Step `k` of the ENUMERATE passes: indexes 0..=N, the last one past the end.
    fn enumerate(&self, k: usize) -> Planned {
        let i = k % (self.size + 1);
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

    fn get(&self, k: usize) -> Planned {
        let r = &self.records[self.picks[k]];
        let req = Request::Get {
            pool: PoolId::Guest,
            key: r.key.clone(),
        };
        let label = format!("GET {}", text(r.key.as_bytes()));
        plan(&req, Expect::Value(r.value.clone()), label)
    }

    fn set(&self, k: usize) -> Planned {
        let r = &self.added[k];
        let req = Request::Set {
            pool: PoolId::Guest,
            key: r.key.clone(),
            value: r.value.clone(),
        };
        let label = format!("SET {}", text(r.key.as_bytes()));
        plan(&req, Expect::Status(Status::OK), label)
    }

    fn delete(&self, k: usize) -> Planned {
        let r = &self.added[k];
        let req = Request::Delete {
            pool: PoolId::Guest,
            key: r.key.clone(),
        };
        let label = format!("DELETE {}", text(r.key.as_bytes()));
        plan(&req, Expect::Status(Status::OK), label)
    }

    /// The pool file must hold exactly `records` whole records.
    fn check_len(&self, records: usize, after: &str) -> Result<(), String> {
        let len = std::fs::metadata(&self.pool_file)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", self.pool_file.display()))?;
        let want = (records * POOL_RECORD_SIZE) as u64;
        if len == want {
            Ok(())
        } else {
            Err(format!(
                "[{} records] after {after} the pool file is {len} bytes, expected {want}",
                self.size
            ))
        }
    }
}

/// Runs one phase on every daemon, interleaved in rounds of `ROUND` requests: `count`
/// requests each, the k-th made by `make`. Each daemon's wall time is the sum of its turns.
fn phase(
    daemons: &mut [Daemon],
    name: &str,
    count: impl Fn(&Daemon) -> usize,
    make: impl Fn(&Daemon, usize) -> Planned,
) -> Result<Vec<Stats>, String> {
    progress(name);
    let mut series: Vec<Series> = daemons.iter().map(|_| Series::new()).collect();
    let mut done = vec![0usize; daemons.len()];
    loop {
        let mut any = false;
        for (i, d) in daemons.iter_mut().enumerate() {
            let end = (done[i] + ROUND).min(count(d));
            if done[i] == end {
                continue;
            }
            any = true;
            let turn = Instant::now();
            for k in done[i]..end {
                let p = make(d, k);
                let took = ask(&mut d.link, d.size, &p)?;
                series[i].samples.push(took);
            }
            series[i].wall += turn.elapsed();
            done[i] = end;
        }
        if !any {
            break;
        }
    }
    Ok(series.into_iter().map(Series::stats).collect())
}

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
// The run

struct SizeResult {
    size: usize,
    startup: Duration,
    pinned: Result<String, String>,
    floor_unknown: Stats,
    floor_auto: Stats,
    enumerate: Stats,
    get: Stats,
    set: Stats,
    delete: Stats,
    rss_kb: u64,
    idle_before: CpuSample,
    idle_after: CpuSample,
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
}

/// What the whole run saw besides the per-size figures.
struct RunInfo {
    cpu: Option<usize>,
    idle: Duration,
    disk_before: Stats,
    disk_after: Stats,
    load_before: String,
    load_after: String,
}

fn run(cfg: &Config) -> Result<(), String> {
    if !cfg.daemon.is_file() {
        return Err(format!(
            "{}: no such daemon binary (build it with `cargo build --release -p hvguest-io --bin hv_kvp_daemon`)",
            cfg.daemon.display()
        ));
    }
    let cpu = if cfg.pin {
        match pin_self() {
            Ok(cpu) => Some(cpu),
            Err(e) => {
                eprintln!("kvp-bench: could not pin to one CPU ({e}); measuring unpinned");
                None
            }
        }
    } else {
        None
    };
    let mut daemons = Vec::new();
    for &n in &cfg.sizes {
        daemons.push(start(cfg, n, cpu)?);
    }
    let ds = &mut daemons[..];
    let floor_unknown = phase(
        ds,
        "no-op floor: unknown op 7",
        |_| FLOOR_OPS,
        |_, _| unknown_op(),
    )?;
    let floor_auto = phase(
        ds,
        "no-op floor: ENUMERATE auto[0]",
        |_| FLOOR_OPS,
        |_, _| auto_first(),
    )?;
    let enumerate = phase(ds, "ENUMERATE", Daemon::enum_steps, Daemon::enumerate)?;
    let get = phase(ds, "GET", |_| OPS, Daemon::get)?;
    let disk_dir = ds[0].dir.0.clone();
    progress("disk probe (pwrite+fsync)");
    let disk_before = fsync_probe(&disk_dir)?;
    let load_before = load();
    let set = phase(ds, "SET (durable)", |_| OPS, Daemon::set)?;
    for d in ds.iter() {
        d.check_len(d.size + OPS, &format!("{OPS} SETs"))?;
    }
    let delete = phase(ds, "DELETE (durable)", |_| OPS, Daemon::delete)?;
    let load_after = load();
    for d in ds.iter_mut() {
        d.check_len(d.size, &format!("{OPS} DELETEs"))?;
        let gone = &d.added[0];
        let req = Request::Get {
            pool: PoolId::Guest,
            key: gone.key.clone(),
        };
        let label = format!("GET {} after its DELETE", text(gone.key.as_bytes()));
        ask(
            &mut d.link,
            d.size,
            &plan(&req, Expect::Status(Status::S_CONT), label),
        )?;
    }
    progress("disk probe (pwrite+fsync)");
    let disk_after = fsync_probe(&disk_dir)?;
    let mut rss = Vec::new();
    for d in ds.iter() {
        rss.push(peak_rss_kb(d.process.pid())?);
    }
    progress(&format!(
        "watching the idle daemons for {} s",
        cfg.idle.as_secs()
    ));
    let before = ds
        .iter()
        .map(|d| cpu_sample(d.process.pid()))
        .collect::<Result<Vec<_>, _>>()?;
    let t = Instant::now();
    std::thread::sleep(cfg.idle);
    let after = ds
        .iter()
        .map(|d| cpu_sample(d.process.pid()))
        .collect::<Result<Vec<_>, _>>()?;
    let idle = t.elapsed();
    let mut results = Vec::new();
    for (i, mut d) in daemons.into_iter().enumerate() {
        if let Some(status) = d.process.exited() {
            return Err(format!(
                "[{} records] the daemon exited while idle: {status}",
                d.size
            ));
        }
        // SIGTERM with the device still open: closing it first would be a fatal device
        // error for the daemon, not the clean shutdown this checks.
        let stop_note = d.process.stop();
        results.push(SizeResult {
            size: d.size,
            startup: d.startup,
            pinned: d.pinned,
            floor_unknown: floor_unknown[i],
            floor_auto: floor_auto[i],
            enumerate: enumerate[i],
            get: get[i],
            set: set[i],
            delete: delete[i],
            rss_kb: rss[i],
            idle_before: before[i],
            idle_after: after[i],
            stop_note,
        });
    }
    let info = RunInfo {
        cpu,
        idle,
        disk_before,
        disk_after,
        load_before,
        load_after,
    };
    print!("{}", report(cfg, &info, &results));
    Ok(())
}

fn report(cfg: &Config, info: &RunInfo, results: &[SizeResult]) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "\nhv_kvp_daemon benchmark ({})", cfg.daemon.display());
    let _ = writeln!(
        o,
        "emulated device: Unix SOCK_SEQPACKET, 7430-byte messages; seed {}; pools in {}",
        cfg.seed,
        cfg.tmp.display()
    );
    let _ = writeln!(
        o,
        "one daemon per size, every phase interleaved across them in rounds of {ROUND} requests"
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
        "latency: hand-off of the request to receipt of the reply (the emulated kernel's view)\n"
    );
    let _ = writeln!(
        o,
        "{:>7}  {:<24} {:>6} {:>10} {:>10} {:>10} {:>9}",
        "records", "operation", "count", "ops/s", "p50 µs", "p99 µs", "p50/floor"
    );
    let _ = writeln!(o, "{}", "-".repeat(82));
    for r in results {
        let (floor, _) = r.floor();
        let rows = [
            ("no-op: unknown op 7", &r.floor_unknown),
            ("no-op: ENUMERATE auto[0]", &r.floor_auto),
            ("ENUMERATE (per step)", &r.enumerate),
            ("GET (random)", &r.get),
            ("SET new key (durable)", &r.set),
            ("DELETE (durable)", &r.delete),
        ];
        for (name, s) in rows {
            let _ = writeln!(
                o,
                "{:>7}  {:<24} {:>6} {:>10.0} {:>10.1} {:>10.1} {:>8.2}x",
                r.size,
                name,
                s.count,
                s.ops_per_sec,
                us(s.p50),
                us(s.p99),
                ratio(s.p50, floor.p50)
            );
        }
        let _ = writeln!(o);
    }
    let ticks_per_sec = clock_ticks_per_sec();
    let _ = writeln!(o, "per daemon:");
    for r in results {
        let (floor, which) = r.floor();
        let ticks = r.idle_ticks();
        let _ = writeln!(
            o,
            "  {:>6} records: floor {:.1} µs ({which}); start-up to registration {:.1} ms; \
             peak RSS (VmHWM) {} kB = {:.2} MB",
            r.size,
            us(floor.p50),
            r.startup.as_secs_f64() * 1e3,
            r.rss_kb,
            r.rss_kb as f64 * 1024.0 / 1e6,
        );
        let _ = writeln!(
            o,
            "                  idle {:.1} s: CPU {} ticks = {} ms (utime+stime), {} µs on a CPU \
             (schedstat), {} context switches",
            info.idle.as_secs_f64(),
            ticks,
            ticks * 1000 / ticks_per_sec,
            r.idle_after.run_ns.saturating_sub(r.idle_before.run_ns) / 1000,
            r.idle_after.switches.saturating_sub(r.idle_before.switches),
        );
        if let Some(note) = &r.stop_note {
            let _ = writeln!(o, "                  WARNING: at shutdown: {note}");
        }
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
    let _ = writeln!(o, "\ntargets (issue 4):");
    for line in evaluate(results) {
        let _ = writeln!(o, "  {line}");
    }
    o
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn evaluate(results: &[SizeResult]) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, pick) in [
        ("GET", (|r: &SizeResult| r.get) as fn(&SizeResult) -> Stats),
        ("ENUMERATE", |r: &SizeResult| r.enumerate),
    ] {
        let parts: Vec<(bool, String)> = results
            .iter()
            .map(|r| {
                let (floor, _) = r.floor();
                let x = ratio(pick(r).p50, floor.p50);
                (
                    x <= READ_FLOOR_FACTOR,
                    format!(
                        "{}: {:.1} µs = {x:.2}x of {:.1}",
                        r.size,
                        us(pick(r).p50),
                        us(floor.p50)
                    ),
                )
            })
            .collect();
        let ok = parts.iter().all(|(ok, _)| *ok);
        let shown: Vec<&str> = parts.iter().map(|(_, s)| s.as_str()).collect();
        lines.push(format!(
            "{} {name} p50 within {READ_FLOOR_FACTOR}x of the no-op floor at every size ({})",
            verdict(ok),
            shown.join("; ")
        ));
    }
    let small = results.iter().find(|r| r.size == 10);
    let large = results.iter().find(|r| r.size == 10_000);
    for (name, pick) in [
        (
            "durable SET",
            (|r: &SizeResult| r.set) as fn(&SizeResult) -> Stats,
        ),
        ("durable DELETE", |r: &SizeResult| r.delete),
    ] {
        match (small, large) {
            (Some(s), Some(l)) => {
                let x = ratio(pick(l).p50, pick(s).p50);
                lines.push(format!(
                    "{} {name} p50 at 10,000 records no more than {WRITE_GROWTH_FACTOR}x \
                     its 10-record figure ({:.1} µs vs {:.1} µs = {x:.2}x)",
                    verdict(x <= WRITE_GROWTH_FACTOR),
                    us(pick(l).p50),
                    us(pick(s).p50),
                ));
            }
            _ => lines.push(format!(
                "---- {name} growth: not evaluated (needs sizes 10 and 10000)"
            )),
        }
    }
    match large {
        Some(l) => {
            let bytes = l.rss_kb * 1024;
            lines.push(format!(
                "{} peak RSS under 8 MB at 10,000 records ({} kB = {:.2} MB)",
                verdict(bytes < RSS_LIMIT_BYTES),
                l.rss_kb,
                bytes as f64 / 1e6
            ));
        }
        None => lines.push("---- peak RSS: not evaluated (needs size 10000)".into()),
    }
    let ticks_per_sec = clock_ticks_per_sec();
    let idle: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{}: {} ms, {} wake-ups",
                r.size,
                r.idle_ticks() * 1000 / ticks_per_sec,
                r.idle_after.switches.saturating_sub(r.idle_before.switches)
            )
        })
        .collect();
    lines.push(format!(
        "{} no CPU while idle: utime+stime unchanged over the idle window at every size ({})",
        verdict(results.iter().all(|r| r.idle_ticks() == 0)),
        idle.join("; ")
    ));
    lines
}
