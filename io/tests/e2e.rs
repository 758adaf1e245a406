//! End-to-end tests: the real `hv_kvp_daemon` binary against the emulated device
//! (`hvguest_sim::emulator`), in a temporary pool directory per test.
//!
//! Each test binds an `EmulatedDevice` on a Unix socket in its own directory, starts the
//! daemon with `-n --device SOCKET --pool-dir DIR --pidfile DIR/pid`, and plays the
//! host. A guard kills the daemon if the test panics (printing its log) and the
//! directory is removed at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hvguest_core::kvp::describe;
use hvguest_core::kvp::effect::FileId;
use hvguest_core::kvp::journal::{JournalEntry, JournalWrite};
use hvguest_core::kvp::record::{encode_pool, Record};
use hvguest_core::kvp::recording::Recording;
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{PoolId, Reply, Request, Status};
use hvguest_core::limits::{KVP_MSG_SIZE, LINUX_KVP_MSG_SIZE, POOL_RECORD_SIZE};
use hvguest_sim::emulator::{Answer, DaemonLink, EmulatedDevice};
use hvguest_sim::host_wire::Kernel;
use hvguest_sim::recording::replay;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod log_lint;
use log_lint::rust_values;

/// How long a daemon may take to connect and register (a loaded 2-core machine).
const ACCEPT: Duration = Duration::from_secs(10);
const KEY_FIELD: usize = 512;

// ---------------------------------------------------------------------------------------
// Scaffolding: a directory, a daemon process, and the host's requests.

/// A fresh directory for one test, removed when dropped.
struct TestDir {
    path: PathBuf,
    /// Whose kernel the emulated device plays, and the daemon is told (`--layout`).
    kernel: Kernel,
}

impl TestDir {
    /// A test on FreeBSD's device.
    fn new(name: &str) -> TestDir {
        TestDir::on(Kernel::FreeBsd, name)
    }

    /// A test on `kernel`'s device.
    fn on(kernel: Kernel, name: &str) -> TestDir {
        let os = match kernel {
            Kernel::FreeBsd => "freebsd",
            Kernel::Linux => "linux",
        };
        let path =
            std::env::temp_dir().join(format!("hvguest-e2e-{}-{os}-{name}", std::process::id()));
        // Test scratch space: it may not exist, and a leftover is harmless.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TestDir { path, kernel }
    }

    /// The emulated device, playing this test's kernel.
    fn device(&self) -> EmulatedDevice {
        EmulatedDevice::bind_as(&self.socket(), self.kernel).unwrap()
    }

    fn layout_arg(&self) -> [&'static str; 2] {
        match self.kernel {
            Kernel::FreeBsd => ["--layout", "freebsd"],
            Kernel::Linux => ["--layout", "linux"],
        }
    }

    fn socket(&self) -> PathBuf {
        self.path.join("kvp.sock")
    }

    /// Nested, and missing until the daemon creates it (with its parents).
    fn pool_dir(&self) -> PathBuf {
        self.path.join("var/db/hyperv/pool")
    }

    fn pool_file(&self, pool: PoolId) -> PathBuf {
        self.pool_dir().join(FileId::pool(pool).file_name())
    }

    fn journal(&self, pool: PoolId) -> PathBuf {
        self.pool_dir().join(FileId::journal(pool).file_name())
    }

    fn pidfile(&self) -> PathBuf {
        self.path.join("pid")
    }

    /// The daemon's kvp.conf: missing (the defaults) unless a test writes it; never the
    /// machine's.
    fn config(&self) -> PathBuf {
        self.path.join("kvp.conf")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // Test scratch space: it may not exist, and a leftover is harmless.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running daemon; killed (and its log printed) if the test panics.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

static STARTS: AtomicUsize = AtomicUsize::new(0);

impl Daemon {
    /// Starts the real binary with the test's socket, pool directory and pidfile.
    fn spawn(dir: &TestDir, extra: &[&str]) -> Daemon {
        Daemon::spawn_with(dir, extra, |_| {})
    }

    /// `spawn`, with `adjust` applied to the command first.
    fn spawn_with(dir: &TestDir, extra: &[&str], adjust: impl FnOnce(&mut Command)) -> Daemon {
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let log = dir.path.join(format!("daemon-{n}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_hv_kvp_daemon"));
        adjust(&mut command);
        let child = command
            .arg("-n")
            // Debug lines too: they must be sentences as well.
            .arg("-d")
            .arg("--device")
            .arg(dir.socket())
            .arg("--pool-dir")
            .arg(dir.pool_dir())
            .arg("--pidfile")
            .arg(dir.pidfile())
            .arg("--config")
            .arg(dir.config())
            .args(dir.layout_arg())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start hv_kvp_daemon");
        Daemon {
            child: Some(child),
            log,
        }
    }

    /// Starts a daemon and waits for it to connect and register.
    fn start(dir: &TestDir, dev: &EmulatedDevice, extra: &[&str]) -> (Daemon, DaemonLink) {
        let d = Daemon::spawn(dir, extra);
        match dev.accept(ACCEPT) {
            Ok(link) => (d, link),
            Err(e) => panic!("daemon did not register: {e}\n{}", d.log_text()),
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap();
    }

    /// Waits for the process to end, at most `limit`.
    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut()?;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            if start.elapsed() > limit {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Cleaning up a child that may have exited already; wait reaps it either way.
            let _ = c.kill();
            // Reaping; there is nothing to do if it was reaped already.
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- daemon log {} ---\n{}",
                self.log.display(),
                self.log_text()
            );
            return;
        }
        // Every test, so every path the tests take (common or failing), is held to it.
        let log = self.log_text();
        let values = rust_values(&log);
        assert!(
            values.is_empty(),
            "the daemon logged Rust values, not sentences:\n{}",
            values.join("\n")
        );
    }
}

fn key(s: &str) -> Key {
    Key::new(s.as_bytes()).unwrap()
}

fn value(s: &str) -> Value {
    Value::new(s.as_bytes()).unwrap()
}

fn status_of(reply: &[u8]) -> Status {
    assert!(
        [KVP_MSG_SIZE, LINUX_KVP_MSG_SIZE].contains(&reply.len()),
        "a reply is one whole message"
    );
    Status(u32::from_le_bytes(reply[..4].try_into().unwrap()))
}

/// Sends raw bytes; the daemon must answer in time.
fn raw(link: &mut DaemonLink, bytes: &[u8]) -> Vec<u8> {
    match link.request(bytes).expect("device") {
        Answer::Reply { bytes, .. } => bytes,
        other => panic!("no reply to a {}-byte message: {other:?}", bytes.len()),
    }
}

/// One request, answered in time, decoded as the kernel reads it.
fn call(link: &mut DaemonLink, req: &Request) -> Reply {
    let layout = link.layout();
    let reply = match link
        .request(&layout.encode_request(req)[..])
        .expect("device")
    {
        Answer::Reply { bytes, .. } => bytes,
        other => panic!("{}: {other:?}", describe::request(req)),
    };
    assert_eq!(reply.len(), layout.message_size());
    layout.decode_reply(req.op(), &reply).unwrap()
}

fn set(link: &mut DaemonLink, pool: PoolId, k: &str, v: &str) -> Status {
    call(
        link,
        &Request::Set {
            pool,
            key: key(k),
            value: value(v),
        },
    )
    .status()
}

fn get(link: &mut DaemonLink, pool: PoolId, k: &str) -> Result<String, Status> {
    match call(link, &Request::Get { pool, key: key(k) }) {
        Reply::Value(v) => Ok(String::from_utf8(v.as_bytes().to_vec()).unwrap()),
        Reply::Status(s) => Err(s),
        other => panic!("GET answered {other:?}"),
    }
}

fn delete(link: &mut DaemonLink, pool: PoolId, k: &str) -> Status {
    call(link, &Request::Delete { pool, key: key(k) }).status()
}

/// A whole ENUMERATE walk: the entries up to the first reply that is not OK, and that
/// reply's status.
fn walk(link: &mut DaemonLink, pool: PoolId) -> (Vec<(String, String)>, Status) {
    let mut out = Vec::new();
    for index in 0..100_000 {
        match call(link, &Request::Enumerate { pool, index }) {
            Reply::Entry { key, value } => out.push((
                String::from_utf8(key.as_bytes().to_vec()).unwrap(),
                String::from_utf8(value.as_bytes().to_vec()).unwrap(),
            )),
            Reply::Status(s) => return (out, s),
            other => panic!("ENUMERATE answered {other:?}"),
        }
    }
    panic!("ENUMERATE of {pool:?} never ended");
}

/// Reads a pool file the strict way (azure-init's): whole 2560-byte records, each field a
/// non-empty-key string, its terminator, then zeros only. Panics otherwise.
fn strict_records(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        bytes.len() % POOL_RECORD_SIZE,
        0,
        "{}: {} bytes is not whole records",
        path.display(),
        bytes.len()
    );
    let field = |f: &[u8], what: &str, i: usize| -> Vec<u8> {
        let end = f
            .iter()
            .position(|&b| b == 0)
            .unwrap_or_else(|| panic!("{}: record {i}: {what} unterminated", path.display()));
        assert!(
            f[end..].iter().all(|&b| b == 0),
            "{}: record {i}: {what} not zero-padded",
            path.display()
        );
        f[..end].to_vec()
    };
    bytes
        .chunks_exact(POOL_RECORD_SIZE)
        .enumerate()
        .map(|(i, r)| {
            let k = field(&r[..KEY_FIELD], "key", i);
            assert!(!k.is_empty(), "{}: record {i}: empty key", path.display());
            (k, field(&r[KEY_FIELD..], "value", i))
        })
        .collect()
}

fn assert_mode_0600(path: &Path) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}: mode {mode:o}", path.display());
}

fn as_strings(recs: &[(Vec<u8>, Vec<u8>)]) -> Vec<(String, String)> {
    recs.iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k.clone()).unwrap(),
                String::from_utf8(v.clone()).unwrap(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// a. Every op on every pool.

#[test]
fn every_op_on_every_pool() {
    every_op_on_every_pool_on(Kernel::FreeBsd);
}

#[test]
fn every_op_on_every_pool_on_linux() {
    every_op_on_every_pool_on(Kernel::Linux);
}

fn every_op_on_every_pool_on(kernel: Kernel) {
    let dir = TestDir::on(kernel, "every-op");
    let dev = dir.device();
    let (_daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    let long_key = "K".repeat(511);
    let long_value = "V".repeat(2047);
    for pool in PoolId::FILE_BACKED {
        let p = pool.name();
        let (entries, end) = walk(&mut link, pool);
        assert_eq!(
            (entries.len(), end),
            (0, Status::S_CONT),
            "{p} starts empty"
        );
        assert_eq!(get(&mut link, pool, "a"), Err(Status::S_CONT), "{p}");
        assert_eq!(delete(&mut link, pool, "a"), Status::S_CONT, "{p}");
        for k in ["a", "b", "c"] {
            assert_eq!(set(&mut link, pool, k, &format!("{k}-{p}")), Status::OK);
        }
        assert_eq!(get(&mut link, pool, "b"), Ok(format!("b-{p}")));
        // Update in place, and the longest key and value a field holds.
        assert_eq!(set(&mut link, pool, "b", "updated"), Status::OK);
        assert_eq!(get(&mut link, pool, "b"), Ok("updated".to_string()));
        assert_eq!(set(&mut link, pool, &long_key, &long_value), Status::OK);
        assert_eq!(get(&mut link, pool, &long_key), Ok(long_value.clone()));
        // An empty value is a value.
        assert_eq!(set(&mut link, pool, "empty", ""), Status::OK);
        assert_eq!(get(&mut link, pool, "empty"), Ok(String::new()));
        assert_eq!(delete(&mut link, pool, "a"), Status::OK);
        assert_eq!(get(&mut link, pool, "a"), Err(Status::S_CONT));
        assert_eq!(delete(&mut link, pool, "a"), Status::S_CONT);
    }
    // Each pool holds its own records, and its file holds exactly what it enumerates.
    for pool in PoolId::FILE_BACKED {
        let p = pool.name();
        let (entries, end) = walk(&mut link, pool);
        assert_eq!(end, Status::S_CONT);
        let got: BTreeMap<String, String> = entries.iter().cloned().collect();
        assert_eq!(got.len(), entries.len(), "{p}: no duplicates");
        let want: BTreeMap<String, String> = [
            ("b".to_string(), "updated".to_string()),
            ("c".to_string(), format!("c-{p}")),
            (long_key.clone(), long_value.clone()),
            ("empty".to_string(), String::new()),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want, "{p}");
        let path = dir.pool_file(pool);
        let on_disk = as_strings(&strict_records(&path));
        assert_eq!(on_disk, entries, "{p}: file = enumeration, in order");
        assert_mode_0600(&path);
        // Every change finished: its journal is empty again.
        let journal = dir.journal(pool);
        assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0, "{p} journal");
        assert_mode_0600(&journal);
    }
    // The auto pool: ten generated values, then "no more items"; read-only.
    let (auto, end) = walk(&mut link, PoolId::Auto);
    assert_eq!(auto.len(), 10, "{auto:?}");
    assert_eq!(end, Status::S_CONT);
    let names: BTreeSet<&str> = auto.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "FullyQualifiedDomainName",
        "IntegrationServicesVersion",
        "NetworkAddressIPv4",
        "NetworkAddressIPv6",
        "OSBuildNumber",
        "OSName",
        "OSMajorVersion",
        "OSMinorVersion",
        "OSVersion",
        "ProcessorArchitecture",
    ] {
        assert!(names.contains(k), "auto pool lacks {k}: {auto:?}");
    }
    let (os_name, _) = auto.iter().find(|(k, _)| k == "OSName").unwrap().clone();
    assert_eq!(
        get(&mut link, PoolId::Auto, &os_name).map(|v| !v.is_empty()),
        Ok(true)
    );
    assert_eq!(set(&mut link, PoolId::Auto, "OSName", "x"), Status::S_CONT);
    assert_eq!(delete(&mut link, PoolId::Auto, "OSName"), Status::S_CONT);
    assert_eq!(walk(&mut link, PoolId::Auto).0, auto, "unchanged");
    // The auto pool's file (kept for compatibility) is never written.
    let auto_file = dir.pool_file(PoolId::Auto);
    if auto_file.exists() {
        assert!(strict_records(&auto_file).is_empty());
        assert_mode_0600(&auto_file);
    }
}

// ---------------------------------------------------------------------------------------
// b. Another program appends under flock while the host enumerates.
//
// On FreeBSD the writer's flock and the daemon's fcntl lock exclude each other; on Linux
// they are independent, so here the daemon's reloads also race the appends themselves
// (a reload may see a record half-written): harder for the reader, and still no SET or
// DELETE runs meanwhile, which would need the two locks to meet.

#[test]
fn outside_appends_under_flock_while_enumerating() {
    outside_appends_under_flock_while_enumerating_on(Kernel::FreeBsd);
}

#[test]
fn outside_appends_under_flock_while_enumerating_on_linux() {
    outside_appends_under_flock_while_enumerating_on(Kernel::Linux);
}

fn outside_appends_under_flock_while_enumerating_on(kernel: Kernel) {
    const N: usize = 200;
    let dir = TestDir::on(kernel, "outside-appends");
    let dev = dir.device();
    let (_daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    for i in 0..5 {
        assert_eq!(
            set(&mut link, PoolId::Guest, &format!("ours{i}"), "x"),
            Status::OK
        );
    }
    let path = dir.pool_file(PoolId::Guest);
    let done = Arc::new(AtomicBool::new(false));
    let walks = Arc::new(AtomicUsize::new(0));
    let writer = {
        let done = done.clone();
        let walks = walks.clone();
        let path = path.clone();
        thread::spawn(move || {
            // cloud-init: open for append, flock(LOCK_EX), one record, unlock.
            let mut file = OpenOptions::new().append(true).open(&path).unwrap();
            for i in 0..N {
                let rec = Record::new(
                    key(&format!("CLOUD_INIT|{i:04}")),
                    value(&format!("event {i} {}", "e".repeat(i % 300))),
                );
                let mut locked = Flock::lock(file, FlockArg::LockExclusive)
                    .map_err(|(_, e)| e)
                    .unwrap();
                locked.write_all(&encode_pool(&[rec])).unwrap();
                file = locked.unlock().map_err(|(_, e)| e).unwrap();
                thread::sleep(Duration::from_micros(200 + (i as u64 % 7) * 100));
                // Every ten records, let the host finish a walk (however loaded the
                // machine), so walks and appends overlap all along.
                if i % 10 == 9 {
                    let seen = walks.load(Ordering::Acquire);
                    let start = Instant::now();
                    while walks.load(Ordering::Acquire) == seen
                        && start.elapsed() < Duration::from_secs(5)
                    {
                        thread::sleep(Duration::from_micros(200));
                    }
                }
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut sizes = BTreeSet::new();
    loop {
        let finished = done.load(Ordering::Acquire);
        let (entries, end) = walk(&mut link, PoolId::Guest);
        assert_eq!(end, Status::S_CONT);
        let n = walks.fetch_add(1, Ordering::AcqRel) + 1;
        // Mid-append walks may shift, but never show anything that was not written.
        for (k, v) in &entries {
            let ours = k.starts_with("ours") && v == "x";
            let theirs = k
                .strip_prefix("CLOUD_INIT|")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|i| *v == format!("event {i} {}", "e".repeat(i % 300)));
            assert!(ours || theirs, "walk {n}: unexpected entry {k:?} = {v:?}");
        }
        sizes.insert(entries.len());
        if finished {
            break;
        }
    }
    let walks = walks.load(Ordering::Acquire);
    writer.join().unwrap();
    // One more full walk after both finished: every record exactly once.
    let (entries, end) = walk(&mut link, PoolId::Guest);
    assert_eq!(end, Status::S_CONT);
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, _) in &entries {
        *count.entry(k.as_str()).or_default() += 1;
    }
    for i in 0..N {
        let k = format!("CLOUD_INIT|{i:04}");
        assert_eq!(count.get(k.as_str()), Some(&1), "{k} seen once");
    }
    for i in 0..5 {
        assert_eq!(count.get(format!("ours{i}").as_str()), Some(&1));
    }
    assert_eq!(entries.len(), N + 5);
    assert_eq!(strict_records(&path).len(), N + 5);
    assert!(
        sizes.len() >= 3,
        "the host walked while the writer appended: {walks} walks, sizes {sizes:?}"
    );
    eprintln!(
        "{walks} walks during the appends, {} distinct sizes",
        sizes.len()
    );
}

// ---------------------------------------------------------------------------------------
// c. kill -9 in the middle of a SET storm, then a restart.

/// Sends SETs of distinct keys over the four file pools until the daemon dies; a
/// thread kills it once `kill_after` have been acknowledged, `delay` later.
fn set_storm(
    daemon: &Daemon,
    link: &mut DaemonLink,
    round: usize,
    kill_after: usize,
    delay: Duration,
    acked: &mut Vec<(PoolId, String, String)>,
) {
    let acks = Arc::new(AtomicUsize::new(0));
    let pid = daemon.pid();
    let killer = {
        let acks = acks.clone();
        thread::spawn(move || {
            let start = Instant::now();
            while acks.load(Ordering::Acquire) < kill_after {
                assert!(start.elapsed() < Duration::from_secs(20), "storm too slow");
                thread::sleep(Duration::from_micros(100));
            }
            thread::sleep(delay);
            kill(pid, Signal::SIGKILL).unwrap();
        })
    };
    let mut sent = 0;
    let mut refused = 0;
    for i in 0..100_000 {
        let pool = PoolId::FILE_BACKED[i % 4];
        let k = format!("storm{round}-{i:05}");
        let v = format!("value {round}/{i} {}", "v".repeat(i % 700));
        let req = Request::Set {
            pool,
            key: key(&k),
            value: value(&v),
        };
        sent += 1;
        // A daemon killed with our request unread resets the connection: gone too.
        let answer = match link.request(&link.layout().encode_request(&req)[..]) {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Answer::Gone,
            Err(e) => panic!("SET {i}: {e}"),
        };
        match answer {
            Answer::Reply { bytes, .. } => {
                if status_of(&bytes) == Status::OK {
                    acked.push((pool, k, v));
                    acks.fetch_add(1, Ordering::Release);
                } else {
                    refused += 1;
                }
            }
            Answer::Gone => break,
            Answer::TimedOut { forwarded } => {
                panic!("SET {i} timed out (forwarded: {forwarded}) before the kill")
            }
        }
    }
    killer.join().unwrap();
    eprintln!(
        "round {round}: killed after {} acks (+{delay:?}), {sent} sent, {refused} refused",
        acks.load(Ordering::Acquire)
    );
}

fn assert_all_acked_readable(link: &mut DaemonLink, acked: &[(PoolId, String, String)]) {
    for (pool, k, v) in acked {
        assert_eq!(
            get(link, *pool, k).as_ref(),
            Ok(v),
            "acknowledged {k} in {pool:?}"
        );
    }
}

#[test]
fn kill_9_mid_set_storm_loses_no_acknowledged_change() {
    kill_9_mid_set_storm_loses_no_acknowledged_change_on(Kernel::FreeBsd);
}

#[test]
fn kill_9_mid_set_storm_loses_no_acknowledged_change_on_linux() {
    kill_9_mid_set_storm_loses_no_acknowledged_change_on(Kernel::Linux);
}

fn kill_9_mid_set_storm_loses_no_acknowledged_change_on(kernel: Kernel) {
    let dir = TestDir::on(kernel, "kill-9");
    let dev = dir.device();
    let mut acked = Vec::new();
    // Three kill points: right after an ack, and a little later, into the next SET's
    // persistence (journal, pool writes, fsyncs) at different depths.
    for (round, (kill_after, delay_us)) in
        [(100, 0), (81, 700), (122, 2500)].into_iter().enumerate()
    {
        let (mut daemon, mut link) = Daemon::start(&dir, &dev, &[]);
        assert_all_acked_readable(&mut link, &acked);
        set_storm(
            &daemon,
            &mut link,
            round,
            kill_after,
            Duration::from_micros(delay_us),
            &mut acked,
        );
        let st = daemon
            .wait(Duration::from_secs(10))
            .expect("killed daemon ends");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(9),
            "{st:?}"
        );
        let pending: Vec<u64> = PoolId::FILE_BACKED
            .iter()
            .map(|p| std::fs::metadata(dir.journal(*p)).map_or(0, |m| m.len()))
            .collect();
        eprintln!("round {round}: journal bytes left by the kill: {pending:?}");
        for pool in PoolId::FILE_BACKED {
            // Whole records even before recovery: growth is made durable before writes.
            let len = std::fs::metadata(dir.pool_file(pool)).unwrap().len();
            assert_eq!(
                len % POOL_RECORD_SIZE as u64,
                0,
                "{pool:?} after kill: {len}"
            );
        }
        // The pidfile of a killed daemon is stale; the next one must still start.
    }
    let (_daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    assert_all_acked_readable(&mut link, &acked);
    for pool in PoolId::FILE_BACKED {
        // Recovery finished or discarded every interrupted change before registering.
        let journal = std::fs::metadata(dir.journal(pool)).unwrap().len();
        assert_eq!(journal, 0, "{pool:?} journal after recovery");
        let recs = strict_records(&dir.pool_file(pool));
        let keys: BTreeSet<&Vec<u8>> = recs.iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), recs.len(), "{pool:?}: no duplicate keys");
        for (p, k, _) in &acked {
            if *p == pool {
                assert!(keys.contains(&k.as_bytes().to_vec()), "{k} on disk");
            }
        }
    }
    assert!(acked.len() >= 300, "{} acks", acked.len());
}

// ---------------------------------------------------------------------------------------
// d. Malformed requests are answered with a failure and the daemon keeps serving.

#[test]
fn malformed_requests_get_a_failure_status_and_the_daemon_keeps_serving() {
    malformed_requests_get_a_failure_status_and_the_daemon_keeps_serving_on(Kernel::FreeBsd);
}

#[test]
fn malformed_requests_get_a_failure_status_and_the_daemon_keeps_serving_on_linux() {
    malformed_requests_get_a_failure_status_and_the_daemon_keeps_serving_on(Kernel::Linux);
}

fn malformed_requests_get_a_failure_status_and_the_daemon_keeps_serving_on(kernel: Kernel) {
    let dir = TestDir::on(kernel, "malformed");
    let dev = dir.device();
    let (_daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    let good = |link: &mut DaemonLink, n: usize| {
        let k = format!("after{n}");
        assert_eq!(set(link, PoolId::Guest, &k, "fine"), Status::OK);
        assert_eq!(get(link, PoolId::Guest, &k), Ok("fine".to_string()));
    };
    let layout = link.layout();
    let mut unknown_op = vec![0u8; layout.message_size()];
    unknown_op[0] = 7;
    let mut bad_pool = layout
        .encode_request(&Request::Get {
            pool: PoolId::Guest,
            key: key("k"),
        })
        .to_vec();
    bad_pool[1] = 9;
    let short = {
        let mut m = layout
            .encode_request(&Request::Get {
                pool: PoolId::Guest,
                key: key("k"),
            })
            .to_vec();
        m.truncate(10);
        m
    };
    let mut unterminated = layout
        .encode_request(&Request::Set {
            pool: PoolId::Guest,
            key: key("k"),
            value: value("v"),
        })
        .to_vec();
    unterminated[16..16 + KEY_FIELD].fill(b'Z');
    let cases: [(&str, Vec<u8>, u32); 4] = [
        ("unknown op 7", unknown_op, 0x8007_0032),
        ("pool 9", bad_pool, 0x8000_4005),
        ("10-byte message", short, 0x8000_4005),
        ("unterminated key", unterminated, 0x8007_0057),
    ];
    for (n, (what, bytes, want)) in cases.iter().enumerate() {
        let reply = raw(&mut link, bytes);
        assert_eq!(status_of(&reply), Status(*want), "{what}");
        assert!(
            reply[4..].iter().all(|&b| b == 0),
            "{what}: status-only reply"
        );
        good(&mut link, n);
    }
    // Nothing malformed reached the pool.
    let (entries, _) = walk(&mut link, PoolId::Guest);
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["after0", "after1", "after2", "after3"]);
    assert_eq!(strict_records(&dir.pool_file(PoolId::Guest)).len(), 4);
}

// ---------------------------------------------------------------------------------------
// e. SIGTERM and the pidfile.

#[test]
fn sigterm_exits_0_and_a_second_instance_is_refused() {
    sigterm_exits_0_and_a_second_instance_is_refused_on(Kernel::FreeBsd);
}

#[test]
fn sigterm_exits_0_and_a_second_instance_is_refused_on_linux() {
    sigterm_exits_0_and_a_second_instance_is_refused_on(Kernel::Linux);
}

fn sigterm_exits_0_and_a_second_instance_is_refused_on(kernel: Kernel) {
    let dir = TestDir::on(kernel, "sigterm");
    let dev = dir.device();
    let (mut first, mut link) = Daemon::start(&dir, &dev, &[]);
    assert_eq!(set(&mut link, PoolId::Guest, "k", "v"), Status::OK);
    let pid = first.pid().as_raw().to_string();
    let in_file = std::fs::read_to_string(dir.pidfile()).unwrap();
    assert_eq!(in_file.trim(), pid, "the pidfile holds the daemon's pid");

    let mut second = Daemon::spawn(&dir, &[]);
    let st = second
        .wait(Duration::from_secs(10))
        .expect("the second instance exits by itself");
    assert!(!st.success(), "second instance: {st:?}");
    let msg = second.log_text();
    assert!(msg.contains(&pid), "the refusal names pid {pid}: {msg:?}");
    assert!(
        dir.pidfile().exists(),
        "the refused instance left the pidfile alone"
    );
    assert_eq!(get(&mut link, PoolId::Guest, "k"), Ok("v".to_string()));

    let start = Instant::now();
    first.signal(Signal::SIGTERM);
    let st = first
        .wait(Duration::from_secs(2))
        .unwrap_or_else(|| panic!("no exit within 2 s of SIGTERM\n{}", first.log_text()));
    assert_eq!(st.code(), Some(0), "{st:?}\n{}", first.log_text());
    eprintln!("SIGTERM to exit: {:?}", start.elapsed());
    assert!(!dir.pidfile().exists(), "pidfile removed");
    assert_eq!(strict_records(&dir.pool_file(PoolId::Guest)).len(), 1);
}

// ---------------------------------------------------------------------------------------
// f. A recorded session replays through the core with no difference.

#[test]
fn a_recorded_session_replays_with_no_difference() {
    a_recorded_session_replays_with_no_difference_on(Kernel::FreeBsd);
}

#[test]
fn a_recorded_session_replays_with_no_difference_on_linux() {
    a_recorded_session_replays_with_no_difference_on(Kernel::Linux);
}

fn a_recorded_session_replays_with_no_difference_on(kernel: Kernel) {
    let dir = TestDir::on(kernel, "record");
    let dev = dir.device();
    // A pool file from before, so the recording's initial pools matter.
    std::fs::create_dir_all(dir.pool_dir()).unwrap();
    let before = encode_pool(&[
        Record::new(key("from"), value("before")),
        Record::new(key("dup"), value("first")),
        Record::new(key("dup"), value("second")),
    ]);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.pool_file(PoolId::External))
        .unwrap();
    f.write_all(&before).unwrap();
    drop(f);
    let record = dir.path.join("session.kvprec");
    let record_arg = record.to_str().unwrap().to_string();
    let (mut daemon, mut link) = Daemon::start(&dir, &dev, &["--record", &record_arg]);
    for pool in [PoolId::Guest, PoolId::External] {
        assert_eq!(set(&mut link, pool, "color", "blue"), Status::OK);
        assert_eq!(set(&mut link, pool, "size", "10"), Status::OK);
        assert_eq!(get(&mut link, pool, "color"), Ok("blue".to_string()));
        assert_eq!(set(&mut link, pool, "color", "green"), Status::OK);
        walk(&mut link, pool);
        assert_eq!(delete(&mut link, pool, "size"), Status::OK);
        assert_eq!(get(&mut link, pool, "size"), Err(Status::S_CONT));
    }
    assert_eq!(
        get(&mut link, PoolId::External, "dup"),
        Ok("first".to_string())
    );
    assert_eq!(walk(&mut link, PoolId::Auto).0.len(), 10);
    assert_eq!(set(&mut link, PoolId::Auto, "x", "y"), Status::S_CONT);
    let mut bad = vec![0u8; link.layout().message_size()];
    bad[0] = 7;
    assert_eq!(status_of(&raw(&mut link, &bad)), Status::NOT_SUPPORTED);
    assert_eq!(status_of(&raw(&mut link, &bad[..10])), Status::E_FAIL);
    walk(&mut link, PoolId::Guest);
    daemon.signal(Signal::SIGTERM);
    let st = daemon
        .wait(Duration::from_secs(5))
        .expect("exit after SIGTERM");
    assert_eq!(st.code(), Some(0));

    let text = std::fs::read_to_string(&record).unwrap();
    let trace = Recording::parse(&text)
        .unwrap_or_else(|e| panic!("{}:{}: {}", record.display(), e.line, e.kind));
    assert_eq!(trace.pools[PoolId::External.index()], before);
    let ins = trace
        .messages
        .iter()
        .filter(|m| m.dir == hvguest_core::kvp::recording::Direction::In)
        .count();
    let outs = trace.messages.len() - ins;
    // Linux's first read is the kernel's answer to the registration, which gets none.
    let answers = usize::from(kernel == Kernel::Linux);
    assert_eq!(trace.layout, link.layout());
    assert_eq!(
        outs,
        ins - answers + 1,
        "one reply per request, plus the registration"
    );
    let report = replay(&trace);
    assert!(report.is_clean(), "{report:#}");
    assert!(report.registration_matched);
    // Every read replays to the same writes (the answer to the registration: none).
    assert_eq!(report.matched_requests(), ins);
}

// ---------------------------------------------------------------------------------------
// g. A torn trailing record from a previous run is cut at start.

#[test]
fn a_torn_trailing_record_is_repaired_at_start() {
    let dir = TestDir::new("torn-tail");
    std::fs::create_dir_all(dir.pool_dir()).unwrap();
    let records: Vec<Record> = (0..3)
        .map(|i| Record::new(key(&format!("k{i}")), value(&format!("v{i}"))))
        .collect();
    let whole = encode_pool(&records);
    for pool in [PoolId::Guest, PoolId::AutoInternal] {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.pool_file(pool))
            .unwrap();
        f.write_all(&whole).unwrap();
        // Half of a fourth record: a writer that died mid-append.
        let torn = Record::new(key("torn"), value("half")).encode();
        f.write_all(&torn[..100]).unwrap();
    }
    let dev = EmulatedDevice::bind(&dir.socket()).unwrap();
    let (_daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    for pool in [PoolId::Guest, PoolId::AutoInternal] {
        // Repaired before the registration, without waiting for a request.
        let bytes = std::fs::read(dir.pool_file(pool)).unwrap();
        assert_eq!(
            bytes, whole,
            "{pool:?}: the three records, intact, and no more"
        );
        let (entries, _) = walk(&mut link, pool);
        assert_eq!(
            entries,
            [("k0", "v0"), ("k1", "v1"), ("k2", "v2")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(set(&mut link, pool, "k3", "v3"), Status::OK);
        assert_eq!(strict_records(&dir.pool_file(pool)).len(), 4);
        assert_eq!(get(&mut link, pool, "k1"), Ok("v1".to_string()));
    }
}

// ---------------------------------------------------------------------------------------
// h. What the daemon trusts, and what it leaves behind for others.

/// `nobody` on Linux and FreeBSD (a uid need not be in the password file to own a file).
const NOBODY: u32 = 65534;

/// A journal entry no writer of ours could have made (no length, yet a slot written),
/// carrying `line` as the record: what a stranger leaves to have recovery write it.
fn strangers_journal(pool: PoolId, line: &[u8]) -> Vec<u8> {
    let mut post = [0u8; POOL_RECORD_SIZE];
    post[..line.len()].copy_from_slice(line);
    JournalEntry {
        pool,
        old_len: 0,
        new_len: 0,
        writes: vec![JournalWrite {
            slot: 0,
            pre: Box::new([0; POOL_RECORD_SIZE]),
            post: Box::new(post),
        }],
        dropped: None,
    }
    .encode()
}

/// How a daemon that must refuse to start ended (`st`, from `wait`); returns its log.
fn refused_start(d: &Daemon, st: Option<ExitStatus>) -> String {
    let st = st.unwrap_or_else(|| panic!("the daemon did not refuse to start\n{}", d.log_text()));
    assert_eq!(st.code(), Some(1), "{st:?}\n{}", d.log_text());
    d.log_text()
}

#[test]
fn a_pool_directory_another_user_owns_or_others_can_write_is_refused_at_start() {
    let euid = nix::unistd::geteuid().as_raw();
    // A directory `nobody` made (say, /tmp/kvp-pool before root's daemon came), and one
    // of ours that anyone can write.
    for (uid, mode, found) in [(NOBODY, 0o755, "uid 65534"), (euid, 0o777, "mode 0777")] {
        let dir = TestDir::new(&format!("foreign-dir-{uid}"));
        let pool = dir.pool_dir();
        std::fs::create_dir_all(&pool).unwrap();
        std::os::unix::fs::lchown(&pool, Some(uid), None).unwrap();
        std::fs::set_permissions(&pool, std::fs::Permissions::from_mode(mode)).unwrap();
        // Its owner's plant: the guest pool a link to where root's cron would look, and a
        // journal holding the line to write there.
        let target = dir.path.join("crontab");
        std::os::unix::fs::symlink(&target, dir.pool_file(PoolId::Guest)).unwrap();
        std::fs::write(
            dir.journal(PoolId::Guest),
            strangers_journal(PoolId::Guest, b"* * * * * root /tmp/x"),
        )
        .unwrap();
        let _dev = EmulatedDevice::bind(&dir.socket()).unwrap();
        let mut d = Daemon::spawn(&dir, &[]);
        let st = d.wait(Duration::from_secs(10));
        assert!(
            std::fs::symlink_metadata(&target).is_err(),
            "the daemon created the link's target ({:?}); exit {st:?}\n{}",
            std::fs::read(&target).map(|b| String::from_utf8_lossy(&b[..64]).into_owned()),
            d.log_text()
        );
        let log = refused_start(&d, st);
        for want in [
            pool.to_str().unwrap(),
            found,
            &format!("owned by uid {euid}"),
            "not writable by group or others",
        ] {
            assert!(log.contains(want), "{want:?} not in the log: {log}");
        }
    }
}

#[test]
fn the_record_file_is_private_and_never_written_over() {
    let dir = TestDir::new("record-private");
    let dev = EmulatedDevice::bind(&dir.socket()).unwrap();
    let record = dir.path.join("session.kvprec");
    let arg = record.to_str().unwrap().to_string();
    let (mut d, mut link) = Daemon::start(&dir, &dev, &["--record", &arg]);
    assert_eq!(
        set(&mut link, PoolId::Guest, "secret", "s3cr3t"),
        Status::OK
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(
        d.wait(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
    drop(link);
    assert_mode_0600(&record);

    // An existing file, and a link to one: left as they are, and the daemon says why.
    let precious = dir.path.join("precious");
    std::fs::write(&precious, b"keep me\n").unwrap();
    let link_path = dir.path.join("link.kvprec");
    std::os::unix::fs::symlink(&precious, &link_path).unwrap();
    for path in [&precious, &record, &link_path] {
        let before = std::fs::read(path).unwrap();
        let arg = path.to_str().unwrap().to_string();
        let mut d = Daemon::spawn(&dir, &["--record", &arg]);
        let st = d.wait(Duration::from_secs(10));
        assert_eq!(
            std::fs::read(path).unwrap(),
            before,
            "{} was written over; exit {st:?}",
            path.display()
        );
        let log = refused_start(&d, st);
        assert!(
            log.contains(&arg) && log.contains("exists"),
            "the refusal names {arg} and says it exists: {log}"
        );
    }
}

#[test]
fn a_daemon_going_to_the_background_holds_its_pidfile_throughout() {
    let dir = TestDir::new("pidfile-hold");
    let dev = EmulatedDevice::bind(&dir.socket()).unwrap();
    let pidfile = dir.pidfile();
    // A pidfile left by an earlier run, and a second instance that opened it while the
    // first was starting: it must never get the lock while the first runs.
    std::fs::write(&pidfile, b"").unwrap();
    let early = File::open(&pidfile).unwrap();
    let background = |log: &str| {
        Command::new(env!("CARGO_BIN_EXE_hv_kvp_daemon"))
            .args(dir.layout_arg())
            .arg("--device")
            .arg(dir.socket())
            .arg("--pool-dir")
            .arg(dir.pool_dir())
            .arg("--pidfile")
            .arg(&pidfile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.path.join(log)).unwrap())
            .status()
            .unwrap()
    };
    let st = background("first.log");
    assert!(st.success(), "{st:?}");
    let _link = dev.accept(ACCEPT).expect("the daemon registers");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .expect("the pidfile holds a pid");
    let guard = Detached(Pid::from_raw(pid));
    if let Ok(lock) = Flock::lock(early, FlockArg::LockExclusiveNonblock) {
        drop(lock);
        panic!("a second instance that opened the pidfile early got its lock while pid {pid} runs");
    }
    // A real second instance is refused before it detaches, where its caller sees why.
    let st = background("second.log");
    assert_eq!(st.code(), Some(1), "{st:?}");
    let msg = std::fs::read_to_string(dir.path.join("second.log")).unwrap();
    assert!(
        msg.contains("another instance is running") && msg.contains(&pid.to_string()),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        pid.to_string()
    );
    kill(guard.0, Signal::SIGTERM).unwrap();
    let start = Instant::now();
    while pidfile.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "pidfile not removed"
        );
        thread::sleep(Duration::from_millis(5));
    }
    std::mem::forget(guard);
}

/// A daemon that detached (not our child): killed if the test fails.
struct Detached(Pid);

impl Drop for Detached {
    fn drop(&mut self) {
        // Cleaning up after a failed test; the process may be gone already.
        let _ = kill(self.0, Signal::SIGKILL);
    }
}

/// The targets of a process's open descriptors.
fn open_files(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .collect()
}

#[test]
fn a_descriptor_inherited_from_the_parent_is_closed_at_start() {
    let dir = TestDir::new("inherited-fd");
    let dev = EmulatedDevice::bind(&dir.socket()).unwrap();
    let marker = dir.path.join("parent-secret");
    let f = File::create(&marker).unwrap();
    let fd = f.as_raw_fd();
    let mut d = Daemon::spawn_with(&dir, &[], |c| {
        // SAFETY: only dup2(2), async-signal-safe, runs between fork and exec; the copy
        // has no close-on-exec flag, as a careless parent's descriptor would.
        unsafe {
            c.pre_exec(move || {
                if nix::libc::dup2(fd, 42) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let _link = dev.accept(ACCEPT).expect("the daemon registers");
    let open = open_files(d.pid().as_raw() as u32);
    assert!(
        !open.contains(&marker),
        "still open in the daemon: {open:?}"
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(
        d.wait(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
}

// ---------------------------------------------------------------------------------------
// i. SET_IP_INFO reconfigures only Hyper-V's synthetic NICs.

/// A stand-in for `hv_set_ifconfig` that only records its arguments, one line per run.
fn recording_script(dir: &TestDir) -> (PathBuf, PathBuf) {
    let scripts = dir.path.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let runs = dir.path.join("script-runs");
    let script = scripts.join("hv_set_ifconfig");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$*\" >> '{}'\nexit 0\n", runs.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (scripts, runs)
}

fn set_ip(adapter: &str) -> Request {
    Request::SetIpInfo(hvguest_core::kvp::wire::IpFields {
        adapter_id: adapter.as_bytes().to_vec(),
        addr_family: 1,
        dhcp_enabled: 0,
        ip_addr: b"127.0.0.2".to_vec(),
        sub_net: b"255.0.0.0".to_vec(),
        gate_way: b"10.0.0.1".to_vec(),
        dns_addr: b"10.0.0.2".to_vec(),
    })
}

#[test]
fn set_ip_info_for_an_adapter_that_is_not_a_synthetic_nic_runs_nothing() {
    let dir = TestDir::new("setip-adapter");
    let (scripts, runs) = recording_script(&dir);
    let dev = EmulatedDevice::bind(&dir.socket()).unwrap();
    let scripts_arg = scripts.to_str().unwrap().to_string();
    let (daemon, mut link) = Daemon::start(&dir, &dev, &["--scripts-dir", &scripts_arg]);
    // The review's reproduction was `lo0`; an option-like name, a name that only starts
    // like one of ours, and the GUID text the kernel leaves when no hn(4) matched.
    let refused = [
        ("lo0", Status::INVALID_ARG),
        ("-hn0", Status::INVALID_ARG),
        ("hn0x", Status::INVALID_ARG),
        ("hn", Status::INVALID_ARG),
        ("em0", Status::INVALID_ARG),
        (
            "{f6e5d4c3-b2a1-4f0e-9d8c-7b6a59483726}",
            Status::GUID_NOT_FOUND,
        ),
    ];
    for (adapter, want) in refused {
        assert_eq!(
            call(&mut link, &set_ip(adapter)).status(),
            want,
            "adapter {adapter:?}"
        );
    }
    assert!(
        !runs.exists(),
        "the script ran for a refused adapter: {:?}",
        std::fs::read_to_string(&runs)
    );
    let log = daemon.log_text();
    assert!(
        log.contains("refused the host's SET_IP_INFO") && log.contains("\"lo0\""),
        "no log line says why: {log}"
    );
    // The synthetic NICs themselves are still configured.
    assert_eq!(call(&mut link, &set_ip("hn0")).status(), Status::OK);
    assert_eq!(call(&mut link, &set_ip("hn12")).status(), Status::OK);
    let ran = std::fs::read_to_string(&runs).unwrap();
    let adapters: Vec<&str> = ran
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(adapters, ["hn0", "hn12"], "{ran}");
}

/// The host's GUID for the NIC the Linux tests give the guest (`eth1`).
const NIC_GUID: &str = "{f8615163-df3e-46c5-913f-f2d2f965ed0e}";

/// A fake `/sys/class/net` for the Linux tests: `lo` (no device), `eth0` (another
/// vmbus NIC), `eth1` (the host's `NIC_GUID`), with their MACs; and the daemon's
/// options pointing at it, at `nmcli` and at a keyfile directory inside `dir`.
fn linux_network(dir: &TestDir, scripts: &Path) -> Vec<String> {
    let net = dir.path.join("sys-class-net");
    for (name, guid, mac) in [
        ("lo", None, "00:00:00:00:00:00"),
        (
            "eth0",
            Some("{0a1b2c3d-0000-4000-8000-000000000001}"),
            "00:15:5d:01:02:04",
        ),
        ("eth1", Some(NIC_GUID), "00:15:5d:01:02:03"),
    ] {
        let itf = net.join(name);
        std::fs::create_dir_all(itf.join("device")).unwrap();
        std::fs::write(itf.join("address"), format!("{mac}\n")).unwrap();
        if let Some(g) = guid {
            std::fs::write(itf.join("device/device_id"), format!("{g}\n")).unwrap();
        }
    }
    let nm = dir.path.join("system-connections");
    std::fs::create_dir_all(&nm).unwrap();
    [
        "--scripts-dir".to_string(),
        scripts.display().to_string(),
        "--sys-class-net".to_string(),
        net.display().to_string(),
        "--nmcli".to_string(),
        dir.path.join("nmcli").display().to_string(),
        "--nm-connections".to_string(),
        nm.display().to_string(),
    ]
    .to_vec()
}

/// A stand-in for `nmcli` with NetworkManager running: records each call's arguments
/// on one line in `nmcli-runs`, says `running` when asked.
fn fake_nmcli(dir: &TestDir) -> PathBuf {
    let runs = dir.path.join("nmcli-runs");
    let nmcli = dir.path.join("nmcli");
    std::fs::write(
        &nmcli,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\n\
             if [ \"$*\" = '-t -f RUNNING general' ]; then echo running; fi\nexit 0\n",
            runs.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&nmcli, std::fs::Permissions::from_mode(0o755)).unwrap();
    runs
}

/// On Linux the kernel passes the host's adapter GUID on (docs/protocol/linux.md
/// §1.7): the daemon finds the interface whose device has it (`eth1`), writes a
/// private NetworkManager keyfile and has `nmcli` load and activate it; a GUID no
/// interface has is `GUID_NOT_FOUND`, an interface name `INVALID_ARG`, and neither
/// runs anything.
#[test]
fn set_ip_info_on_linux_configures_the_nic_with_the_hosts_guid_through_network_manager() {
    let dir = TestDir::on(Kernel::Linux, "setip-linux-nm");
    let (scripts, script_runs) = recording_script(&dir);
    let nmcli_runs = fake_nmcli(&dir);
    let args = linux_network(&dir, &scripts);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dev = dir.device();
    let (daemon, mut link) = Daemon::start(&dir, &dev, &args);
    let refused = [
        (
            "{00000000-0000-4000-8000-00000000beef}",
            Status::GUID_NOT_FOUND,
        ),
        ("eth1", Status::INVALID_ARG),
        ("hn0", Status::INVALID_ARG),
        (
            "{f8615163-df3e-46c5-913f-f2d2f965ed0e};",
            Status::INVALID_ARG,
        ),
    ];
    for (adapter, want) in refused {
        assert_eq!(
            call(&mut link, &set_ip(adapter)).status(),
            want,
            "adapter {adapter:?}"
        );
    }
    assert!(!nmcli_runs.exists(), "nmcli ran for a refused adapter");
    assert!(
        daemon.log_text().contains("with GUID_NOT_FOUND"),
        "no log line says why: {}",
        daemon.log_text()
    );
    // The host's GUID, in upper case as a host may write it.
    let upper = NIC_GUID.to_uppercase();
    assert_eq!(call(&mut link, &set_ip(&upper)).status(), Status::OK);
    let keyfile = dir
        .path
        .join("system-connections/hyperv-f8615163-df3e-46c5-913f-f2d2f965ed0e.nmconnection");
    assert_mode_0600(&keyfile);
    let text = std::fs::read_to_string(&keyfile).unwrap();
    for line in [
        "uuid=f8615163-df3e-46c5-913f-f2d2f965ed0e\n",
        "interface-name=eth1\n",
        "mac-address=00:15:5D:01:02:03\n",
        "[ipv4]\nmethod=manual\naddress1=127.0.0.2/8\ngateway=10.0.0.1\ndns=10.0.0.2;\n",
        "[ipv6]\nmethod=auto\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert_eq!(
        std::fs::read_to_string(&nmcli_runs).unwrap(),
        format!(
            "-t -f RUNNING general\nconnection load {}\n\
             connection up uuid f8615163-df3e-46c5-913f-f2d2f965ed0e\n",
            keyfile.display()
        )
    );
    assert!(
        !script_runs.exists(),
        "the script ran beside NetworkManager"
    );
    assert!(
        daemon.log_text().contains("through NetworkManager"),
        "{}",
        daemon.log_text()
    );
}

/// Without NetworkManager the script runs, given the interface the GUID names.
#[test]
fn set_ip_info_on_linux_without_network_manager_runs_the_script_for_the_interface() {
    let dir = TestDir::on(Kernel::Linux, "setip-linux-script");
    let (scripts, runs) = recording_script(&dir);
    // No nmcli at the configured path.
    let args = linux_network(&dir, &scripts);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dev = dir.device();
    let (_daemon, mut link) = Daemon::start(&dir, &dev, &args);
    assert_eq!(call(&mut link, &set_ip(NIC_GUID)).status(), Status::OK);
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        "--adapter eth1 --static --addr 127.0.0.2/8 --gateway 10.0.0.1 --dns 10.0.0.2\n"
    );
    assert_eq!(
        std::fs::read_dir(dir.path.join("system-connections"))
            .unwrap()
            .count(),
        0,
        "a keyfile was written without NetworkManager"
    );
    // Neither NetworkManager nor the script: a failure, said in the log.
    std::fs::remove_file(scripts.join("hv_set_ifconfig")).unwrap();
    assert_eq!(call(&mut link, &set_ip(NIC_GUID)).status(), Status::E_FAIL);
}

/// CPU time the process has used, in clock ticks (user and system, `/proc/PID/stat`).
fn cpu_ticks(pid: Pid) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// On Linux a device read error or close (the Data Exchange service switched off and
/// on, hibernation; here the emulated host drops the connection) makes the daemon
/// close the device, open it again and register anew (docs/protocol/linux.md §1.3),
/// then serve as before. While the device cannot be opened it tries again with pauses
/// growing to 5 s, not in a busy loop, logging one warning per failure, and SIGTERM
/// still ends it at once.
#[test]
fn on_linux_a_failed_device_is_opened_again_and_the_daemon_registers_anew() {
    let dir = TestDir::on(Kernel::Linux, "reopen");
    let dev = dir.device();
    let (mut daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    assert_eq!(set(&mut link, PoolId::Guest, "before", "1"), Status::OK);
    drop(link);
    // `accept` waits for the registration: the daemon came back and registered.
    let mut link = match dev.accept(ACCEPT) {
        Ok(l) => l,
        Err(e) => panic!(
            "the daemon did not register again: {e}\n{}",
            daemon.log_text()
        ),
    };
    assert_eq!(get(&mut link, PoolId::Guest, "before"), Ok("1".to_string()));
    assert_eq!(set(&mut link, PoolId::Guest, "after", "2"), Status::OK);
    assert_eq!(get(&mut link, PoolId::Guest, "after"), Ok("2".to_string()));
    // Now the device is gone for good (the socket file removed): attempts with
    // pauses of 0.1, 0.2, 0.4, 0.8 s... take next to no CPU.
    drop(link);
    drop(dev);
    let before = cpu_ticks(daemon.pid());
    thread::sleep(Duration::from_millis(2000));
    let used = cpu_ticks(daemon.pid()) - before;
    assert!(used < 30, "{used} ticks of CPU in 2 s of reopening");
    let log = daemon.log_text();
    assert_eq!(
        log.matches("it is closed and opened again").count(),
        2,
        "one warning per failure:\n{log}"
    );
    assert_eq!(
        log.matches("the KVP device is open again").count(),
        1,
        "{log}"
    );
    let attempts = log.matches("opening the KVP device again failed").count();
    assert!(
        (2..=8).contains(&attempts),
        "{attempts} failed attempts in 2 s, want a few growing pauses:\n{log}"
    );
    // SIGTERM during a pause: the daemon exits at once, with 0.
    let asked = Instant::now();
    daemon.signal(Signal::SIGTERM);
    assert_eq!(
        daemon.wait(Duration::from_secs(2)).and_then(|s| s.code()),
        Some(0),
        "{}",
        daemon.log_text()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// j. A host SET with an empty key is refused, as hvkvp refuses it.

#[test]
fn a_host_set_with_an_empty_key_is_refused_with_invalid_arg() {
    let dir = TestDir::new("empty-key");
    let dev = EmulatedDevice::bind(&dir.socket()).unwrap();
    let (daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    for pool in [PoolId::External, PoolId::Guest, PoolId::Auto] {
        assert_eq!(
            call(
                &mut link,
                &Request::Set {
                    pool,
                    key: key(""),
                    value: value("v"),
                },
            )
            .status(),
            Status::INVALID_ARG,
            "{pool:?}"
        );
    }
    assert_eq!(set(&mut link, PoolId::Guest, "k", "v"), Status::OK);
    // Nothing but the one good record reached a file.
    assert_eq!(
        as_strings(&strict_records(&dir.pool_file(PoolId::Guest))),
        [("k".to_string(), "v".to_string())]
    );
    assert_eq!(
        std::fs::metadata(dir.pool_file(PoolId::External))
            .unwrap()
            .len(),
        0
    );
    let log = daemon.log_text();
    assert!(log.contains("empty key"), "no log line says why: {log}");
}

// ---------------------------------------------------------------------------------------
// k. The host fills a pool only up to its budget.

#[test]
fn a_host_set_that_would_grow_a_pool_past_its_budget_is_refused() {
    let budget = hvguest_core::limits::HOST_POOL_RECORDS;
    let dir = TestDir::new("budget");
    std::fs::create_dir_all(dir.pool_dir()).unwrap();
    // Another program left the pool one record short of the budget.
    let records: Vec<Record> = (0..budget - 1)
        .map(|i| Record::new(key(&format!("k{i}")), value("v")))
        .collect();
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.pool_file(PoolId::External))
        .unwrap();
    f.write_all(&encode_pool(&records)).unwrap();
    drop(f);
    let dev = EmulatedDevice::bind(&dir.socket()).unwrap();
    let (daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    let len = || {
        std::fs::metadata(dir.pool_file(PoolId::External))
            .unwrap()
            .len()
    };
    // The last record the budget allows.
    assert_eq!(set(&mut link, PoolId::External, "last", "in"), Status::OK);
    assert_eq!(len(), (budget * POOL_RECORD_SIZE) as u64);
    // One more would grow the file past it: refused as the stock daemon refuses a SET
    // it cannot store, and nothing written.
    assert_eq!(
        set(&mut link, PoolId::External, "over", "x"),
        Status::S_CONT
    );
    assert_eq!(len(), (budget * POOL_RECORD_SIZE) as u64);
    assert_eq!(
        get(&mut link, PoolId::External, "over"),
        Err(Status::S_CONT)
    );
    // Changing a key in place grows nothing: allowed; so is a DELETE, after which there
    // is room for one new key again.
    assert_eq!(
        set(&mut link, PoolId::External, "k7", "changed"),
        Status::OK
    );
    assert_eq!(delete(&mut link, PoolId::External, "k3"), Status::OK);
    assert_eq!(set(&mut link, PoolId::External, "over", "x"), Status::OK);
    assert_eq!(len(), (budget * POOL_RECORD_SIZE) as u64);
    assert_eq!(
        get(&mut link, PoolId::External, "k7"),
        Ok("changed".to_string())
    );
    // Each pool has its own budget.
    assert_eq!(
        set(&mut link, PoolId::AutoExternal, "over", "x"),
        Status::OK
    );
    let log = daemon.log_text();
    assert!(
        log.contains("refused the host's SET of a new key \"over\" in pool 0 (external)"),
        "no log line says why: {log}"
    );
}

#[test]
fn pool_mode_of_kvp_conf_sets_who_may_read_the_pool_files() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    // 0644 for programs that read the pools without root: a new directory they can
    // enter, pool files they can read, the journal still private.
    let dir = TestDir::on(Kernel::Linux, "pool-mode");
    std::fs::write(dir.config(), "pool_mode = 0644\n").unwrap();
    let dev = dir.device();
    let (mut daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    assert_eq!(set(&mut link, PoolId::Guest, "a", "1"), Status::OK);
    assert_eq!(mode(&dir.pool_dir()), 0o755);
    for pool in PoolId::FILE_BACKED {
        assert_eq!(mode(&dir.pool_file(pool)), 0o644, "{pool:?}");
    }
    assert_eq!(mode(&dir.journal(PoolId::Guest)), 0o600);
    daemon.signal(Signal::SIGTERM);
    assert_eq!(
        daemon.wait(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
    drop(link);
    // Unset, existing files keep their mode (an upgrade from a stock daemon changes
    // nothing about who may read).
    std::fs::remove_file(dir.config()).unwrap();
    let (mut daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    assert_eq!(get(&mut link, PoolId::Guest, "a"), Ok("1".to_string()));
    for pool in PoolId::FILE_BACKED {
        assert_eq!(mode(&dir.pool_file(pool)), 0o644, "{pool:?}");
    }
    daemon.signal(Signal::SIGTERM);
    assert_eq!(
        daemon.wait(Duration::from_secs(5)).and_then(|s| s.code()),
        Some(0)
    );
    drop(link);
    // 0600 set: files a daemon finds more open are narrowed; the existing directory
    // is left as it is.
    std::fs::write(dir.config(), "pool_mode = 0600\n").unwrap();
    let (_daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    assert_eq!(get(&mut link, PoolId::Guest, "a"), Ok("1".to_string()));
    for pool in PoolId::FILE_BACKED {
        assert_eq!(mode(&dir.pool_file(pool)), 0o600, "{pool:?}");
    }
    assert_eq!(mode(&dir.pool_dir()), 0o755);
}

/// `--layout` names the other system's layout only for an emulated device: on a real
/// character device (here /dev/null, opened and never written) the daemon refuses to
/// start, saying why.
#[test]
fn the_other_systems_layout_is_refused_on_a_character_device() {
    let other = if cfg!(target_os = "freebsd") {
        "linux"
    } else {
        "freebsd"
    };
    let dir = TestDir::new("wrong-layout");
    let out = Command::new(env!("CARGO_BIN_EXE_hv_kvp_daemon"))
        .args([
            "-n",
            "--layout",
            other,
            "--device",
            "/dev/null",
            "--pool-dir",
        ])
        .arg(dir.pool_dir())
        .arg("--pidfile")
        .arg(dir.pidfile())
        .arg("--config")
        .arg(dir.config())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("--layout {other} is for an emulated device")),
        "{stderr}"
    );
}

#[test]
fn max_records_of_kvp_conf_lowers_the_hosts_limit() {
    let dir = TestDir::new("max-records");
    std::fs::write(dir.config(), "max_records = 2\n").unwrap();
    let dev = EmulatedDevice::bind(&dir.socket()).unwrap();
    let (daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    let len = || {
        std::fs::metadata(dir.pool_file(PoolId::External))
            .unwrap()
            .len()
    };
    assert_eq!(set(&mut link, PoolId::External, "a", "1"), Status::OK);
    assert_eq!(set(&mut link, PoolId::External, "b", "2"), Status::OK);
    // A third record would grow the pool past max_records: refused, nothing stored.
    assert_eq!(set(&mut link, PoolId::External, "c", "3"), Status::S_CONT);
    assert_eq!(len(), (2 * POOL_RECORD_SIZE) as u64);
    assert_eq!(get(&mut link, PoolId::External, "c"), Err(Status::S_CONT));
    // In place and DELETE stay allowed; then there is room again.
    assert_eq!(set(&mut link, PoolId::External, "a", "x"), Status::OK);
    assert_eq!(delete(&mut link, PoolId::External, "b"), Status::OK);
    assert_eq!(set(&mut link, PoolId::External, "c", "3"), Status::OK);
    // Each pool has its own limit.
    assert_eq!(set(&mut link, PoolId::Guest, "a", "1"), Status::OK);
    let log = daemon.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused the host's SET"))
        .collect();
    assert_eq!(lines.len(), 1, "one line per refusal: {log}");
    assert!(
        lines[0].contains("new key \"c\" in pool 0 (external)")
            && lines[0].contains("holds 2 records")
            && lines[0].contains("only up to 2 (max_records in kvp.conf)"),
        "{log}"
    );
}

#[test]
fn a_bad_kvp_conf_stops_the_daemon_naming_the_line() {
    let dir = TestDir::new("bad-conf");
    std::fs::write(dir.config(), "# limits\nmax_records = 0\n").unwrap();
    let mut daemon = Daemon::spawn(&dir, &[]);
    let status = daemon.wait(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(2));
    let log = daemon.log_text();
    assert!(
        log.contains("kvp.conf:2: `max_records = 0`: must be a whole number from 1 to 32768"),
        "{log}"
    );
    assert!(!dir.pool_dir().exists(), "nothing done before the check");
}

#[test]
fn auto_values_of_kvp_conf_are_what_the_host_reads() {
    let dir = TestDir::new("auto-overrides");
    std::fs::write(
        dir.config(),
        "auto.OSName = FreeBSD (web tier)\nauto.FullyQualifiedDomainName = web1.contoso.com\n",
    )
    .unwrap();
    let dev = EmulatedDevice::bind(&dir.socket()).unwrap();
    let (_daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    assert_eq!(
        get(&mut link, PoolId::Auto, "OSName"),
        Ok("FreeBSD (web tier)".to_string())
    );
    let (auto, _) = walk(&mut link, PoolId::Auto);
    assert_eq!(auto.len(), 10, "{auto:?}");
    let value = |k: &str| {
        auto.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(value("FullyQualifiedDomainName"), "web1.contoso.com");
    assert_eq!(value("OSName"), "FreeBSD (web tier)");
    // The rest is the system's: FreeBSD, or whatever runs the test.
    assert!(!value("ProcessorArchitecture").is_empty());
}

/// A non-loopback interface of this machine with a MAC and an IPv4 address: its name,
/// its MAC in the host's form, and its addresses (IPv4 and IPv6) as text.
fn an_interface_with_ipv4() -> Option<(String, String, Vec<String>)> {
    let list: Vec<_> = nix::ifaddrs::getifaddrs().ok()?.collect();
    for ifa in &list {
        let name = &ifa.interface_name;
        let Ok(mac) = std::fs::read_to_string(format!("/sys/class/net/{name}/address")) else {
            continue;
        };
        let mac = mac.trim().to_ascii_uppercase();
        if name.starts_with("lo") || mac.len() != 17 || mac == "00:00:00:00:00:00" {
            continue;
        }
        let addrs: Vec<String> = list
            .iter()
            .filter(|o| &o.interface_name == name)
            .filter_map(|o| o.address.as_ref())
            .filter_map(|a| match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                (Some(v4), _) => Some(v4.ip().to_string()),
                (_, Some(v6)) => Some(v6.ip().to_string()),
                _ => None,
            })
            .collect();
        if addrs.iter().any(|a| !a.contains(':')) {
            return Some((name.clone(), mac, addrs));
        }
    }
    None
}

fn get_ip_info(link: &mut DaemonLink, mac: &str) -> Result<(String, String), Status> {
    let ask = Request::GetIpInfo {
        adapter_id: mac.as_bytes().to_vec(),
        addr_family: 0,
    };
    match call(link, &ask) {
        Reply::IpInfo(f) => Ok((
            String::from_utf8(f.ip_addr).unwrap(),
            String::from_utf8(f.sub_net).unwrap(),
        )),
        Reply::Status(s) => Err(s),
        other => panic!("GET_IP_INFO answered {other:?}"),
    }
}

/// kvp.conf's `exclude_interfaces` and `address_order`, through the real daemon and
/// this machine's real interfaces: an excluded interface's addresses leave the auto
/// pool and GET_IP_INFO no longer answers for its MAC; the order puts a family first.
#[test]
fn interfaces_of_kvp_conf_shape_what_the_host_reads() {
    let Some((name, mac, addrs)) = an_interface_with_ipv4() else {
        eprintln!("no interface with a MAC and an IPv4 address here; skipped");
        return;
    };
    let v4: Vec<&String> = addrs.iter().filter(|a| !a.contains(':')).collect();
    let dir = TestDir::new("interfaces");
    let dev = EmulatedDevice::bind(&dir.socket()).unwrap();
    {
        std::fs::write(dir.config(), "address_order = ipv6-first\n").unwrap();
        let (_daemon, mut link) = Daemon::start(&dir, &dev, &[]);
        let shown = get(&mut link, PoolId::Auto, "NetworkAddressIPv4").unwrap();
        assert!(
            shown.contains(v4[0].as_str()),
            "{shown} lacks {name}'s {}",
            v4[0]
        );
        let (listed, masks) = get_ip_info(&mut link, &mac).unwrap();
        let listed: Vec<&str> = listed.split(';').collect();
        assert_eq!(listed.len(), masks.split(';').count(), "a mask per address");
        let first_v4 = listed.iter().position(|a| !a.contains(':')).unwrap();
        assert!(
            listed[..first_v4].len() == addrs.len() - v4.len(),
            "IPv6 first: {listed:?}"
        );
    }
    std::fs::write(dir.config(), format!("exclude_interfaces = lo* {name}\n")).unwrap();
    let (daemon, mut link) = Daemon::start(&dir, &dev, &[]);
    let shown = get(&mut link, PoolId::Auto, "NetworkAddressIPv4").unwrap();
    for a in &v4 {
        assert!(
            !shown.split(';').any(|s| s == a.as_str()),
            "{shown} shows {a} of {name}"
        );
    }
    assert_eq!(get_ip_info(&mut link, &mac), Err(Status::E_FAIL));
    // The administrator is told why the host shows no address for the adapter.
    let log = daemon.log_text();
    assert!(
        log.contains(&format!("every interface holding it ({name}) is excluded")),
        "{log}"
    );
}
