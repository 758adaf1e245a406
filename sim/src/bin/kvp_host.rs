//! `kvp-host`: the Hyper-V host's side of KVP for a real `hv_kvp_daemon`, over the
//! emulated device (`hvguest_sim::emulator`), and of VSS for a real `hv_vss_daemon`
//! (and `hv_vss_app`), over the emulated VSS devices (`hvguest_sim::vss_emulator`).
//!
//! ```text
//! kvp-host [--socket PATH] [--vss-socket PATH [--app-socket PATH]]
//!          [--scenario FILE] [--pool-dir DIR] [--timeout-secs N]
//! ```
//!
//! Listens on PATH, waits (up to N seconds, default 300) for a daemon started with
//! `--device PATH` to connect and register, then runs the host steps of a scenario file
//! (`scenarios/kvp/*.scn`) at their `at` times, counted from the registration, printing
//! one line per request and one per reply. Without `--scenario` it reads steps from
//! standard input, one per line, written as in a scenario without `at TIME`
//! (`set guest k v`, `enum guest`, `raw op=7`, `vss freeze`, ...), and runs each as it
//! comes.
//!
//! `--vss-socket PATH` stands in for `/dev/hv_fsvss_dev` (start `hv_vss_daemon --device
//! PATH`) and `--app-socket PATH` for `/dev/hv_appvss_dev` (`hv_vss_app --device PATH`).
//! `--socket` and `--vss-socket` may both be given: the two daemons are separate
//! processes on separate sockets, and `kvp-host` waits for both. The steps
//! `vss check|freeze|thaw` (and `vss-now ...`, the same here: requests go one at a time)
//! go to the VSS side through the kernel's rules (application helper first for CHECK and
//! FREEZE, daemon first for THAW, one 15 s timer) and print `vss FREEZE <- S_OK (12.3 ms)`.
//! The helper may open its device at any time, or never; a VSS daemon that died and was
//! started again is taken at the next request. The scenario's VSS setup lines (`mount`,
//! `hook`, ...) describe the simulated guest and do not apply: give the daemon
//! `--emulate-mounts`, `--emulate-actions` and a `vss.conf` with a hook directory.
//!
//! `append` and `truncate` play another program writing the pool file (under
//! `flock(LOCK_EX)`, as cloud-init does: on FreeBSD that excludes the daemon's `fcntl`
//! lock, on Linux the two kinds of lock are independent) and need `--pool-dir`, as do the
//! scenario's initial pool files (`pool`, `fill`, `tail`), which are then written before
//! the socket is opened: start the daemon after `kvp-host`. Steps that act on the
//! simulated machine (crash, kill, crash-after, fail, enospc, freeze, thaw, slow,
//! shutdown) do not apply to a real daemon and are printed as skipped.
//!
//! Exit status: 0 when every step ran; 1 if the daemon did not connect, went away, or
//! let a request time out (the kernel's 5 s; a VSS request that timed out or found no
//! daemon does not stop the run, but the status is 1 at the end); 2 on bad usage, an
//! unreadable scenario or an outside write that failed.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant as WallClock};

use hvguest_core::kvp::effect::FileId;
use hvguest_core::kvp::record::{encode_pool, Record};
use hvguest_core::kvp::recording::{describe_request, summarize};
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{PoolId, Request, Status};
use hvguest_core::vss::wire::VssOp;
use hvguest_sim::emulator::{Answer, DaemonLink, EmulatedDevice};
use hvguest_sim::host_wire::Kernel;
use hvguest_sim::scenario;
use hvguest_sim::vss_emulator::{EmulatedVss, Party, VssAnswer};
use hvguest_sim::world::Action;
use nix::fcntl::{Flock, FlockArg};

const USAGE: &str = "usage: kvp-host [--socket PATH] [--layout freebsd|linux] \
                     [--vss-socket PATH [--app-socket PATH]] \
                     [--scenario FILE] [--pool-dir DIR] [--timeout-secs N]";

/// Enumeration indexes tried in one walk before giving up on a daemon that never says
/// "no more items".
const WALK_LIMIT: u32 = 1 << 20;

struct Args {
    socket: Option<PathBuf>,
    /// Whose kernel the KVP device plays (`--layout`, FreeBSD's unless told).
    kernel: Kernel,
    vss_socket: Option<PathBuf>,
    app_socket: Option<PathBuf>,
    scenario: Option<PathBuf>,
    pool_dir: Option<PathBuf>,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut socket = None;
    let mut kernel = Kernel::FreeBsd;
    let mut vss_socket = None;
    let mut app_socket = None;
    let mut scenario = None;
    let mut pool_dir = None;
    let mut timeout = Duration::from_secs(300);
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        if arg == "-h" || arg == "--help" {
            return Err(String::new());
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = || match &inline {
            Some(v) => Ok(v.clone()),
            None => args
                .next()
                .and_then(|v| v.into_string().ok())
                .ok_or_else(|| format!("{name} needs a value")),
        };
        match name.as_str() {
            "--socket" => socket = Some(PathBuf::from(value()?)),
            "--layout" => {
                kernel = match value()?.as_str() {
                    "freebsd" => Kernel::FreeBsd,
                    "linux" => Kernel::Linux,
                    other => {
                        return Err(format!("--layout: {other:?} is neither freebsd nor linux"))
                    }
                }
            }
            "--vss-socket" => vss_socket = Some(PathBuf::from(value()?)),
            "--app-socket" => app_socket = Some(PathBuf::from(value()?)),
            "--scenario" => scenario = Some(PathBuf::from(value()?)),
            "--pool-dir" => pool_dir = Some(PathBuf::from(value()?)),
            "--timeout-secs" => {
                let v = value()?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("--timeout-secs: bad number {v:?}"))?;
                timeout = Duration::from_secs(secs);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if socket.is_none() && vss_socket.is_none() {
        return Err("--socket PATH or --vss-socket PATH is required".into());
    }
    if app_socket.is_some() && vss_socket.is_none() {
        return Err("--app-socket needs --vss-socket".into());
    }
    Ok(Args {
        socket,
        kernel,
        vss_socket,
        app_socket,
        scenario,
        pool_dir,
        timeout,
    })
}

/// Why the run stopped early.
enum Stop {
    /// The daemon closed the device, or the socket failed.
    Gone,
    /// The kernel's deadline passed: the host got E_FAIL.
    TimedOut,
    /// An outside write to a pool file failed.
    Outside,
}

struct Host {
    /// The KVP daemon, with `--socket`.
    link: Option<DaemonLink>,
    /// The VSS devices, with `--vss-socket`.
    vss: Option<EmulatedVss>,
    /// A VSS request timed out or found no daemon (the exit status becomes 1).
    vss_trouble: bool,
    start: WallClock,
    pool_dir: Option<PathBuf>,
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn status_of(layout: hvguest_core::kvp::wire::Layout, reply: &[u8]) -> Option<Status> {
    let head: [u8; 4] = reply.get(..4)?.try_into().ok()?;
    (reply.len() == layout.message_size()).then_some(Status(u32::from_le_bytes(head)))
}

impl Host {
    /// The KVP device's message layout (FreeBSD's when there is no KVP device).
    fn layout(&self) -> hvguest_core::kvp::wire::Layout {
        self.link
            .as_ref()
            .map_or(hvguest_core::kvp::wire::Layout::FreeBsd, DaemonLink::layout)
    }

    fn say(&self, what: &str) {
        println!("{:>10.1}ms {what}", millis(self.start.elapsed()));
    }

    /// One request through the emulated kernel, and its reply.
    fn exchange(&mut self, bytes: &[u8]) -> Result<Vec<u8>, Stop> {
        let (op, text) = describe_request(bytes);
        self.say(&format!("→ {text}"));
        let Some(link) = self.link.as_mut() else {
            return Err(Stop::Gone);
        };
        let deadline = link.deadline();
        match link.request(bytes) {
            Ok(Answer::Reply { bytes: reply, took }) => {
                self.say(&format!(
                    "← {} ({:.2}ms)",
                    summarize(op, false, &reply),
                    millis(took)
                ));
                Ok(reply)
            }
            Ok(Answer::TimedOut { forwarded }) => {
                self.say(&format!(
                    "← E_FAIL: no reply within {:?} ({})",
                    deadline,
                    if forwarded {
                        "the daemon did not answer"
                    } else {
                        "not forwarded: the daemon was still busy with an earlier request"
                    }
                ));
                Err(Stop::TimedOut)
            }
            Ok(Answer::Gone) => {
                self.say("← the daemon closed the device");
                Err(Stop::Gone)
            }
            Err(e) => {
                self.say(&format!("← device error: {e}"));
                Err(Stop::Gone)
            }
        }
    }

    /// A whole ENUMERATE walk: index 0, 1, ... until a reply that is not OK.
    fn walk(&mut self, pool: PoolId) -> Result<(), Stop> {
        for index in 0..WALK_LIMIT {
            let req = Request::Enumerate { pool, index };
            let bytes = self.layout().encode_request(&req);
            let reply = self.exchange(&bytes)?;
            if status_of(self.layout(), &reply) != Some(Status::OK) {
                return Ok(());
            }
        }
        self.say(&format!("walk stopped after {WALK_LIMIT} entries"));
        Ok(())
    }

    /// Another program writing the pool file, under `flock(LOCK_EX)` as cloud-init does.
    fn outside(
        &self,
        pool: PoolId,
        what: &str,
        write: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<(), Stop> {
        let Some(dir) = &self.pool_dir else {
            self.say(&format!("{what}: skipped (needs --pool-dir)"));
            return Ok(());
        };
        let path = dir.join(FileId::pool(pool).file_name());
        let run = || -> io::Result<()> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)?;
            let mut locked =
                Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
            write(&mut locked)?;
            locked.sync_data()?;
            locked.unlock().map_err(|(_, e)| io::Error::from(e))?;
            Ok(())
        };
        match run() {
            Ok(()) => {
                self.say(&format!("{what}: done (outside writer, under flock)"));
                Ok(())
            }
            Err(e) => {
                self.say(&format!("{what}: failed: {}: {e}", path.display()));
                Err(Stop::Outside)
            }
        }
    }

    fn append(&self, pool: PoolId, key: &Key, value: &Value) -> Result<(), Stop> {
        let what = format!(
            "append {} {} = {}",
            pool.name(),
            hvguest_core::kvp::describe::text(key.as_bytes()),
            hvguest_core::kvp::describe::text(value.as_bytes())
        );
        let bytes = encode_pool(&[Record::new(key.clone(), value.clone())]);
        self.outside(pool, &what, |f| {
            f.seek(SeekFrom::End(0))?;
            f.write_all(&bytes)
        })
    }

    /// One VSS request through the emulated kernel. A failure is the host's answer, not
    /// a reason to stop; a timeout or a missing daemon marks the run as failed.
    fn vss_request(&mut self, op: VssOp) {
        let name = op.name();
        let Some(vss) = self.vss.as_mut() else {
            self.say(&format!(
                "vss {name}: skipped (no VSS device: give --vss-socket)"
            ));
            return;
        };
        let timer = vss.timeout();
        let answer = vss.request(op);
        let line = match answer {
            Ok(VssAnswer::Reply {
                ok,
                took,
                decided_by,
            }) => format!(
                "vss {name} <- {} ({:.1} ms{})",
                if ok { "S_OK" } else { "E_FAIL" },
                millis(took),
                match decided_by {
                    Party::App => ", answered by the application helper",
                    Party::Daemon => "",
                }
            ),
            Ok(VssAnswer::TimedOut { waiting_for }) => {
                self.vss_trouble = true;
                format!(
                    "vss {name} <- E_FAIL ({:.1} ms: the kernel's timer; {})",
                    millis(timer),
                    match waiting_for {
                        Some(p) => format!("{} did not answer", p.name()),
                        None => "the daemon was gone when the helper answered".to_string(),
                    }
                )
            }
            Ok(VssAnswer::NoDaemon { killed: true }) => {
                self.vss_trouble = true;
                format!("vss {name} <- E_FAIL (at once: the daemon closed the device)")
            }
            Ok(VssAnswer::NoDaemon { killed: false }) => {
                self.vss_trouble = true;
                format!("vss {name}: no daemon has opened the device (the kernel would not answer)")
            }
            Err(e) => {
                self.vss_trouble = true;
                format!("vss {name}: device error: {e}")
            }
        };
        self.say(&line);
    }

    fn step(&mut self, action: Action) -> Result<(), Stop> {
        let kvp_step = match &action {
            Action::Host(req) => Some(hvguest_core::kvp::describe::request(req)),
            Action::HostRaw(bytes) => Some(describe_request(bytes).1),
            Action::Walk(pool) => Some(format!("enum {}", pool.name())),
            _ => None,
        };
        if let (Some(what), None) = (kvp_step, &self.link) {
            self.say(&format!("{what}: skipped (no KVP daemon: give --socket)"));
            return Ok(());
        }
        match action {
            Action::Vss(op) | Action::VssNow(op) => {
                self.vss_request(op);
                Ok(())
            }
            Action::Host(req) => {
                let bytes = self.layout().encode_request(&req);
                self.exchange(&bytes).map(drop)
            }
            Action::HostRaw(bytes) => self.exchange(&bytes).map(drop),
            Action::Walk(pool) => self.walk(pool),
            Action::Append { pool, key, value } => self.append(pool, &key, &value),
            Action::Truncate(pool) => {
                self.outside(pool, &format!("truncate {}", pool.name()), |f| f.set_len(0))
            }
            other => {
                let what = match other {
                    Action::Crash => "crash".to_string(),
                    Action::Kill => "kill".to_string(),
                    Action::CrashAfter(n) => format!("crash-after {n}"),
                    Action::Fault { call, error, .. } => format!("fault {call:?} {error:?}"),
                    Action::Freeze => "freeze".to_string(),
                    Action::Thaw => "thaw".to_string(),
                    Action::Slow(d) => format!("slow {d:?}"),
                    Action::Shutdown => "shutdown".to_string(),
                    _ => format!("{other:?}"),
                };
                self.say(&format!(
                    "{what}: skipped (not applicable to a real daemon)"
                ));
                Ok(())
            }
        }
    }
}

/// Writes the scenario's initial pool files into `dir` (only those it defines).
fn write_initial_pools(sc: &scenario::Scenario, dir: &Path) -> io::Result<()> {
    let names: Vec<String> = PoolId::FILE_BACKED
        .iter()
        .map(|p| FileId::pool(*p).file_name())
        .filter(|n| sc.fs.names().any(|m| m == n))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    // Private, as hv_kvp_daemon requires of a pool directory, whatever the umask.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    for name in names {
        let path = dir.join(&name);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(sc.fs.contents(&name))?;
        f.sync_all()?;
        println!(
            "initial pool file {}: {} bytes",
            path.display(),
            sc.fs.contents(&name).len()
        );
    }
    Ok(())
}

/// One step typed on standard input: a scenario step without `at TIME`.
fn one_step(line: &str) -> Result<Action, String> {
    let sc = scenario::parse(&format!("at 0ms {line}")).map_err(|e| e.what)?;
    sc.steps
        .into_iter()
        .next()
        .map(|(_, a)| a)
        .ok_or_else(|| "not a step".to_string())
}

fn run_scenario(host: &mut Host, steps: Vec<(hvguest_core::Instant, Action)>) -> Result<(), Stop> {
    for (at, action) in steps {
        let due = host.start + Duration::from_nanos(at.as_nanos());
        let now = WallClock::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        host.step(action)?;
    }
    Ok(())
}

/// Steps from standard input; a line that does not parse is reported and skipped.
fn run_stdin(host: &mut Host) -> Result<bool, Stop> {
    let mut all_parsed = true;
    for line in io::stdin().lock().lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("kvp-host: standard input: {e}");
                return Ok(false);
            }
        };
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        match one_step(text) {
            Ok(action) => host.step(action)?,
            Err(e) => {
                eprintln!("kvp-host: {text:?}: {e}");
                all_parsed = false;
            }
        }
    }
    Ok(all_parsed)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kvp-host: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let sc = match &args.scenario {
        None => None,
        Some(path) => {
            let parsed = std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| scenario::parse(&text).map_err(|e| e.to_string()));
            match parsed {
                Ok(sc) => Some(sc),
                Err(e) => {
                    eprintln!("kvp-host: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
    };
    if let Some(sc) = &sc {
        match &args.pool_dir {
            Some(dir) => {
                if let Err(e) = write_initial_pools(sc, dir) {
                    eprintln!("kvp-host: initial pool files in {}: {e}", dir.display());
                    return ExitCode::from(2);
                }
            }
            None if sc.fs.names().next().is_some() => {
                println!("the scenario's initial pool files are not written (needs --pool-dir)")
            }
            None => {}
        }
    }
    if sc.as_ref().is_some_and(|sc| sc.vss.is_some()) {
        println!(
            "the scenario's VSS setup (mounts, hooks, app...) is not applied: give \
             hv_vss_daemon --emulate-mounts and a vss.conf with a hook directory"
        );
    }
    let device = match args
        .socket
        .as_deref()
        .map(|p| EmulatedDevice::bind_as(p, args.kernel))
        .transpose()
    {
        Ok(d) => d,
        Err(e) => {
            let path = args.socket.as_deref().unwrap_or(Path::new("")).display();
            eprintln!("kvp-host: cannot listen on {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let vss = match args.vss_socket.as_deref() {
        None => None,
        Some(fs) => match EmulatedVss::bind(fs, args.app_socket.as_deref()) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!(
                    "kvp-host: cannot listen on {} or {}: {e}",
                    fs.display(),
                    args.app_socket
                        .as_deref()
                        .unwrap_or(Path::new("-"))
                        .display()
                );
                return ExitCode::from(2);
            }
        },
    };
    let mut waiting_for = Vec::new();
    if let Some(s) = &args.socket {
        waiting_for.push(format!("hv_kvp_daemon --device {}", s.display()));
    }
    if let Some(s) = &args.vss_socket {
        waiting_for.push(format!("hv_vss_daemon --device {}", s.display()));
    }
    println!(
        "listening; waiting up to {}s for {}",
        args.timeout.as_secs(),
        waiting_for.join(" and ")
    );
    if let Some(a) = &args.app_socket {
        println!(
            "the application helper may open {} at any time (hv_vss_app --device {} -- COMMAND)",
            a.display(),
            a.display()
        );
    }
    let until = WallClock::now() + args.timeout;
    let link = match device.as_ref().map(|d| d.accept(args.timeout)).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kvp-host: hv_kvp_daemon: {e}");
            return ExitCode::from(1);
        }
    };
    let mut vss = vss;
    if let Some(vss) = vss.as_mut() {
        let left = until.saturating_duration_since(WallClock::now());
        if let Err(e) = vss.accept_daemon(left) {
            eprintln!("kvp-host: hv_vss_daemon: {e}");
            return ExitCode::from(1);
        }
    }
    let mut host = Host {
        link,
        vss,
        vss_trouble: false,
        start: WallClock::now(),
        pool_dir: args.pool_dir,
    };
    if host.link.is_some() {
        host.say("daemon registered");
    }
    if host.vss.is_some() {
        host.say("VSS daemon opened the device");
    }
    let result = match sc {
        Some(sc) => run_scenario(&mut host, sc.steps).map(|()| true),
        None => run_stdin(&mut host),
    };
    match result {
        Ok(true) if host.vss_trouble => {
            host.say("done (a VSS request timed out or found no daemon)");
            ExitCode::from(1)
        }
        Ok(true) => {
            host.say("done");
            ExitCode::SUCCESS
        }
        Ok(false) => ExitCode::from(2),
        Err(Stop::Outside) => ExitCode::from(2),
        Err(Stop::Gone | Stop::TimedOut) => ExitCode::from(1),
    }
}
