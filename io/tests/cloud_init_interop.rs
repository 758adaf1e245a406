//! Interoperability with a real pool writer: cloud-init's own `HyperVKvpReportingHandler`
//! (Debian's `cloud-init` package) appends its events to the guest pool, pointed at our
//! pool directory with `kvp_file_path`, while `hvkvp set` writes keys of its own and the
//! emulated host enumerates the guest pool through the real `hv_kvp_daemon`.
//!
//! Ignored by default because it needs cloud-init: `cargo xtask interop` installs the
//! package and runs it with `HVGUEST_CLOUDINIT_PYTHON` naming a Python that imports
//! `cloudinit` (Debian's `/usr/bin/python3`).
//!
//! What cloud-init wrote is known independently of the pool file: the Python script wraps
//! the handler's `_append_kvp_item` (the one place its background writer appends, under
//! `flock`) and logs every 2560-byte record it appended, byte for byte. It also prints
//! each event's description, so the host's view of a split event can be reassembled and
//! compared with what cloud-init was asked to report.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hvguest_core::kvp::effect::FileId;
use hvguest_core::kvp::wire::{decode_reply, encode_request, PoolId, Reply, Request, Status};
use hvguest_core::limits::{HOST_SAFE_VALUE_UNITS, KVP_MSG_SIZE, POOL_RECORD_SIZE};
use hvguest_sim::emulator::{Answer, DaemonLink, EmulatedDevice};

/// Names the Python that imports cloud-init; set by `cargo xtask interop`.
const PYTHON_VAR: &str = "HVGUEST_CLOUDINIT_PYTHON";
/// Events cloud-init publishes.
const EVENTS: usize = 60;
/// Keys `hvkvp set` writes while cloud-init publishes.
const TOOL_KEYS: usize = 30;
/// Keys written before cloud-init's handler starts, so its truncation has something to
/// empty.
const SEED_KEYS: usize = 3;
const KEY_FIELD: usize = 512;
/// The whole run (Python's start-up included) must end within this.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// cloud-init's side. Arguments: the pool file, the record log, the number of events.
///
/// Output lines: `cloud-init VERSION`, `truncation SIZE_BEFORE SIZE_AFTER MTIME BOOT`,
/// `ready`, then `event I TYPE HEX(DESCRIPTION)` per event, `edge LEN` for the event
/// sized to fill cloud-init's 1024-character value exactly, and `done`. The record log
/// holds `record HEX` per appended record and `failed ERROR` per failed append.
const SCRIPT: &str = r#"
import binascii, os, sys, time

pool_file, record_log, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

from cloudinit import util, version
from cloudinit.reporting import events, handlers

def say(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()

say("cloud-init", version.version_string())
Handler = handlers.HyperVKvpReportingHandler

# The constructor truncates the pool file once per process if its mtime predates boot.
boot = time.time() - float(util.uptime())
before = os.stat(pool_file)
handler = Handler(kvp_file_path=pool_file)
after = os.stat(pool_file)
say("truncation", before.st_size, after.st_size, "%.3f" % before.st_mtime, "%.3f" % boot)

# Log every record the background writer appends, as it appended it.
if not hasattr(handler, "_append_kvp_item"):
    sys.exit("HyperVKvpReportingHandler has no _append_kvp_item: update the interop script")
append = handler._append_kvp_item
log = open(record_log, "w")

def appending(records):
    try:
        append(records)
    except Exception as e:
        log.write("failed %r\n" % (e,))
        log.flush()
        raise
    for r in records:
        log.write("record %s\n" % binascii.hexlify(r).decode())
    log.flush()

handler._append_kvp_item = appending

def flush():
    if hasattr(handler, "flush"):
        handler.flush()
    else:
        handler.q.join()

def description(i):
    if i % 4 != 2:
        return "short event %d" % i
    # 2 to 6 kB once JSON-escaped: split into sub-keys, with quotes, backslashes,
    # newlines and a non-ASCII letter, so that cuts fall inside escapes too.
    unit = 'step %d said "ok" in C:\\temp\\log, caf\u00e9\n' % i
    return unit * (40 + 30 * (i % 3))

# The last event is sized so that its value is exactly 1024 characters, the most
# cloud-init keeps in one record (when it can measure it: the timestamp is fixed).
edge_ts = 1700000000.25
edge_desc = None
if hasattr(handler, "_encode_event"):
    probe = handler._encode_event(
        events.ReportingEvent(events.START_EVENT_TYPE, "interop-%02d" % (count - 1), "", timestamp=edge_ts))
    used = len(probe[0][512:].rstrip(b"\0"))
    edge_desc = "x" * (1024 - used)
    say("edge", used + len(edge_desc))

say("ready")
for i in range(count):
    name = "interop-%02d" % i
    desc = description(i)
    if i == count - 1 and edge_desc is not None:
        desc = edge_desc
        event = events.ReportingEvent(events.START_EVENT_TYPE, name, desc, timestamp=edge_ts)
    elif i % 2:
        result = events.status.WARN if i % 3 == 0 else events.status.SUCCESS
        event = events.FinishReportingEvent(name, desc, result=result)
    else:
        event = events.ReportingEvent(events.START_EVENT_TYPE, name, desc)
    say("event", i, event.event_type, binascii.hexlify(desc.encode("utf-8")).decode())
    handler.publish_event(event)
    if i % 5 == 4:
        # The background writer appends what is queued as one batch; pace the batches.
        flush()
        time.sleep(0.04)
flush()
log.close()
say("done")
"#;

// ---------------------------------------------------------------------------------------
// Scaffolding.

/// A fresh directory, removed when dropped.
struct TestDir {
    path: PathBuf,
}

impl TestDir {
    fn new() -> TestDir {
        let path = std::env::temp_dir().join(format!("hvguest-interop-{}", std::process::id()));
        // Test scratch space: it may not exist, and a leftover is harmless.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TestDir { path }
    }

    fn pool_dir(&self) -> PathBuf {
        self.path.join("pool")
    }

    fn guest_pool(&self) -> PathBuf {
        self.pool_dir()
            .join(FileId::pool(PoolId::Guest).file_name())
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("(keeping {} for a look)", self.path.display());
        } else {
            // Test scratch space: it may not exist, and a leftover is harmless.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process killed when dropped; its log (standard error) printed on a panic.
struct Running {
    what: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Running {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Cleaning up a child that may have exited already; wait reaps it either way.
            let _ = c.kill();
            // Reaping; there is nothing to do if it was reaped already.
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.what, self.log_text());
        }
    }
}

/// The real daemon on the emulated device, registered.
fn start_daemon(dir: &TestDir, dev: &EmulatedDevice) -> (Running, DaemonLink) {
    let log = dir.path.join("daemon.log");
    let child = Command::new(env!("CARGO_BIN_EXE_hv_kvp_daemon"))
        .arg("-n")
        .args(["--layout", "freebsd"])
        .arg("--device")
        .arg(dev.path())
        .arg("--pool-dir")
        .arg(dir.pool_dir())
        .arg("--pidfile")
        .arg(dir.path.join("pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("start hv_kvp_daemon");
    let daemon = Running {
        what: "hv_kvp_daemon",
        child: Some(child),
        log,
    };
    match dev.accept(Duration::from_secs(10)) {
        Ok(link) => (daemon, link),
        Err(e) => panic!("the daemon did not register: {e}\n{}", daemon.log_text()),
    }
}

/// `hvkvp --pool-dir DIR ARGS...`, run to completion.
fn hvkvp(dir: &TestDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hvkvp"))
        .arg("--pool-dir")
        .arg(dir.pool_dir())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("start hvkvp")
}

fn hvkvp_ok(dir: &TestDir, args: &[&str]) -> String {
    let out = hvkvp(dir, args);
    assert!(
        out.status.success(),
        "hvkvp {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("hvkvp prints UTF-8")
}

/// The host's ENUMERATE walk of the guest pool: every entry until "no more items".
fn walk(link: &mut DaemonLink) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for index in 0..100_000 {
        let req = Request::Enumerate {
            pool: PoolId::Guest,
            index,
        };
        let bytes = match link.request(&encode_request(&req)[..]).expect("device") {
            Answer::Reply { bytes, .. } => bytes,
            other => panic!("ENUMERATE {index}: {other:?}"),
        };
        assert_eq!(bytes.len(), KVP_MSG_SIZE);
        match decode_reply(req.op(), &bytes).unwrap() {
            Reply::Entry { key, value } => out.push((
                String::from_utf8(key.as_bytes().to_vec()).unwrap(),
                String::from_utf8(value.as_bytes().to_vec()).unwrap(),
            )),
            Reply::Status(Status::S_CONT) => return out,
            other => panic!("ENUMERATE {index} answered {other:?}"),
        }
    }
    panic!("the walk never ended");
}

/// One 2560-byte record read strictly: key and value each a string, its terminator, then
/// zeros only; the key not empty.
fn strict_record(r: &[u8], what: &str) -> (String, String) {
    assert_eq!(r.len(), POOL_RECORD_SIZE, "{what}: {} bytes", r.len());
    let field = |f: &[u8], name: &str| -> String {
        let end = f
            .iter()
            .position(|&b| b == 0)
            .unwrap_or_else(|| panic!("{what}: {name} unterminated"));
        assert!(
            f[end..].iter().all(|&b| b == 0),
            "{what}: {name} not zero-padded"
        );
        String::from_utf8(f[..end].to_vec()).unwrap_or_else(|_| panic!("{what}: {name} not UTF-8"))
    };
    let key = field(&r[..KEY_FIELD], "key");
    assert!(!key.is_empty(), "{what}: empty key");
    (key, field(&r[KEY_FIELD..], "value"))
}

fn file_records(path: &Path) -> Vec<(String, String)> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        bytes.len() % POOL_RECORD_SIZE,
        0,
        "{}: {} bytes is not whole records",
        path.display(),
        bytes.len()
    );
    bytes
        .chunks_exact(POOL_RECORD_SIZE)
        .enumerate()
        .map(|(i, r)| strict_record(r, &format!("{} record {i}", path.display())))
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A string as Python's `json.dumps` writes it (ensure_ascii), without the quotes.
fn python_json_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || !c.is_ascii() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether escaped JSON text stops between two escapes (false: cut inside one).
fn ends_on_escape_boundary(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            match b.get(i + 1) {
                None => return false,
                Some(b'u') if i + 6 > b.len() => return false,
                Some(b'u') => i += 6,
                Some(_) => i += 2,
            }
        } else {
            i += 1;
        }
    }
    true
}

/// The `"msg"` text of a cloud-init value: its last member, a JSON string (or a slice of
/// one, in a sub-key's value).
fn msg_of(value: &str) -> &str {
    let start = value
        .find("\"msg\":\"")
        .unwrap_or_else(|| panic!("no msg in {value:?}"))
        + "\"msg\":\"".len();
    let end = value
        .strip_suffix("\"}")
        .unwrap_or_else(|| panic!("msg is not last in {value:?}"))
        .len();
    &value[start..end]
}

// ---------------------------------------------------------------------------------------
// A JSON reader for `hvkvp list guest --json`: an array of {"key": …, "value": …}.

struct JsonIn<'a> {
    s: &'a str,
    at: usize,
}

impl JsonIn<'_> {
    fn ws(&mut self) {
        while matches!(
            self.s.as_bytes().get(self.at),
            Some(b' ' | b'\n' | b'\r' | b'\t')
        ) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) {
        self.ws();
        assert_eq!(
            self.s.as_bytes().get(self.at),
            Some(&b),
            "expected {:?} at byte {}",
            b as char,
            self.at
        );
        self.at += 1;
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.as_bytes().get(self.at).copied()
    }

    fn hex4(&mut self) -> u32 {
        let h = &self.s[self.at..self.at + 4];
        self.at += 4;
        u32::from_str_radix(h, 16).expect("\\u escape")
    }

    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out = String::new();
        loop {
            let c = self.s[self.at..]
                .chars()
                .next()
                .expect("unterminated string");
            self.at += c.len_utf8();
            match c {
                '"' => return out,
                '\\' => {
                    let e = self.s.as_bytes()[self.at];
                    self.at += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let mut u = self.hex4();
                            if (0xd800..0xdc00).contains(&u) {
                                assert_eq!(&self.s[self.at..self.at + 2], "\\u");
                                self.at += 2;
                                let low = self.hex4();
                                u = 0x10000 + ((u - 0xd800) << 10) + (low - 0xdc00);
                            }
                            out.push(char::from_u32(u).expect("a character"));
                        }
                        other => panic!("bad escape \\{}", other as char),
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn records(text: &str) -> Vec<(String, String)> {
        let mut j = JsonIn { s: text, at: 0 };
        let mut out = Vec::new();
        j.eat(b'[');
        if j.peek() == Some(b']') {
            j.at += 1;
        } else {
            loop {
                j.eat(b'{');
                let mut fields = BTreeMap::new();
                loop {
                    let name = j.string();
                    j.eat(b':');
                    fields.insert(name, j.string());
                    if j.peek() == Some(b',') {
                        j.at += 1;
                        continue;
                    }
                    j.eat(b'}');
                    break;
                }
                assert_eq!(fields.len(), 2, "{fields:?}");
                out.push((fields["key"].clone(), fields["value"].clone()));
                if j.peek() == Some(b',') {
                    j.at += 1;
                    continue;
                }
                j.eat(b']');
                break;
            }
        }
        j.ws();
        assert_eq!(j.at, j.s.len(), "trailing text after the array");
        out
    }
}

// ---------------------------------------------------------------------------------------

/// What the Python script printed.
#[derive(Default)]
struct ScriptOutput {
    version: String,
    /// Size before and after the handler's constructor, the file's mtime, boot time.
    truncation: Option<(u64, u64, f64, f64)>,
    /// Index → (event type, description).
    events: BTreeMap<usize, (String, String)>,
    edge_len: Option<usize>,
    done: bool,
}

impl ScriptOutput {
    fn take(&mut self, line: &str) {
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["cloud-init", v] => self.version = v.to_string(),
            ["truncation", before, after, mtime, boot] => {
                self.truncation = Some((
                    before.parse().unwrap(),
                    after.parse().unwrap(),
                    mtime.parse().unwrap(),
                    boot.parse().unwrap(),
                ))
            }
            ["edge", len] => self.edge_len = Some(len.parse().unwrap()),
            ["ready"] => {}
            ["event", i, ty, hex] => {
                let desc = String::from_utf8(unhex(hex)).unwrap();
                self.events
                    .insert(i.parse().unwrap(), (ty.to_string(), desc));
            }
            ["done"] => self.done = true,
            _ => panic!("unexpected line from the script: {line:?}"),
        }
    }
}

fn is_tool(k: &str, v: &str) -> bool {
    k.strip_prefix("tool-k")
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| i < TOOL_KEYS && v == format!("v{i}"))
}

fn is_seed(k: &str, v: &str) -> bool {
    k.strip_prefix("seed-k")
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| i < SEED_KEYS && v == format!("s{i}"))
}

#[test]
#[ignore = "needs Debian's cloud-init package: run it with `cargo xtask interop`"]
fn cloud_init_hvkvp_and_the_host_share_the_guest_pool() {
    let python = std::env::var_os(PYTHON_VAR).unwrap_or_else(|| {
        panic!("{PYTHON_VAR} is not set: run this test with `cargo xtask interop`")
    });
    let started = Instant::now();
    let dir = TestDir::new();
    let dev = EmulatedDevice::bind(&dir.path.join("kvp.sock")).unwrap();
    let (_daemon, mut link) = start_daemon(&dir, &dev);
    let pool_file = dir.guest_pool();
    assert!(pool_file.exists(), "the daemon creates the guest pool file");
    for i in 0..SEED_KEYS {
        hvkvp_ok(
            &dir,
            &["set", "guest", &format!("seed-k{i}"), &format!("s{i}")],
        );
    }

    // cloud-init, publishing in the background.
    let record_log = dir.path.join("records.log");
    let script_log = dir.path.join("cloud-init.log");
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(&pool_file)
        .arg(&record_log)
        .arg(EVENTS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&script_log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", Path::new(&python).display()));
    let stdout = child.stdout.take().unwrap();
    let mut script = Running {
        what: "cloud-init script (stderr)",
        child: Some(child),
        log: script_log,
    };
    let ready = Arc::new(AtomicBool::new(false));
    let reader = {
        let ready = ready.clone();
        thread::spawn(move || {
            let mut out = ScriptOutput::default();
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("the script's output");
                if line == "ready" {
                    ready.store(true, Ordering::Release);
                }
                out.take(&line);
            }
            // Gone before "ready" (a failure, reported below): let hvkvp go on anyway.
            ready.store(true, Ordering::Release);
            out
        })
    };

    // hvkvp, setting keys while cloud-init publishes.
    let tool = {
        let ready = ready.clone();
        let pool_dir = dir.pool_dir();
        thread::spawn(move || {
            let start = Instant::now();
            while !ready.load(Ordering::Acquire) {
                assert!(start.elapsed() < RUN_LIMIT, "the script never got ready");
                thread::sleep(Duration::from_millis(2));
            }
            for i in 0..TOOL_KEYS {
                let out = Command::new(env!("CARGO_BIN_EXE_hvkvp"))
                    .arg("--pool-dir")
                    .arg(&pool_dir)
                    .args(["set", "guest", &format!("tool-k{i}"), &format!("v{i}")])
                    .stdin(Stdio::null())
                    .output()
                    .expect("start hvkvp");
                assert!(
                    out.status.success(),
                    "hvkvp set guest tool-k{i}: {}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                thread::sleep(Duration::from_millis(15));
            }
        })
    };

    // The host, enumerating meanwhile. Every entry any walk shows must have been written
    // by someone (checked once cloud-init's records are known).
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut sizes = BTreeSet::new();
    let mut walks = 0;
    loop {
        let finished = reader.is_finished() && tool.is_finished();
        let entries = walk(&mut link);
        walks += 1;
        sizes.insert(entries.len());
        seen.extend(entries);
        if finished {
            break;
        }
        assert!(started.elapsed() < RUN_LIMIT, "the run took too long");
    }
    if let Err(e) = tool.join() {
        std::panic::resume_unwind(e);
    }
    let out = reader.join().expect("reading the script's output");
    let status = script.child.take().unwrap().wait().unwrap();
    assert!(
        status.success() && out.done,
        "the cloud-init script failed ({status})\n{}",
        script.log_text()
    );
    eprintln!(
        "cloud-init {} (HyperVKvpReportingHandler via {})",
        out.version,
        Path::new(&python).display()
    );

    // What cloud-init appended, record by record.
    let log = std::fs::read_to_string(&record_log).unwrap();
    let mut written = Vec::new();
    for line in log.lines() {
        match line.split_once(' ') {
            Some(("record", hex)) => {
                let what = format!("cloud-init record {}", written.len());
                written.push(strict_record(&unhex(hex), &what));
            }
            Some(("failed", e)) => panic!("cloud-init failed to append: {e}"),
            _ => panic!("unexpected record log line {line:?}"),
        }
    }
    assert!(
        written.len() > EVENTS,
        "some events were split: {}",
        written.len()
    );
    let written_set: BTreeSet<&(String, String)> = written.iter().collect();
    let ci_keys: BTreeSet<&str> = written.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(ci_keys.len(), written.len(), "cloud-init's keys are unique");

    // The host's final walk: the file, in order, whole records; every record of everyone.
    let fin = walk(&mut link);
    let on_disk = file_records(&pool_file);
    assert_eq!(fin, on_disk, "the host's walk = the pool file, in order");
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, _) in &fin {
        *count.entry(k.as_str()).or_default() += 1;
    }
    assert!(count.values().all(|&n| n == 1), "every key once");
    let by_key: BTreeMap<&str, &str> = fin.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut lost = Vec::new();
    for (k, v) in &written {
        match by_key.get(k.as_str()) {
            Some(got) => assert_eq!(got, v, "{k}: the host's value = cloud-init's"),
            None => lost.push(k.as_str()),
        }
    }
    assert!(lost.is_empty(), "cloud-init records lost: {lost:?}");
    for i in 0..TOOL_KEYS {
        let k = format!("tool-k{i}");
        assert_eq!(by_key.get(k.as_str()), Some(&&*format!("v{i}")), "{k}");
    }
    for i in 0..SEED_KEYS {
        let k = format!("seed-k{i}");
        assert_eq!(by_key.get(k.as_str()), Some(&&*format!("s{i}")), "{k}");
    }
    assert_eq!(
        fin.len(),
        SEED_KEYS + TOOL_KEYS + written.len(),
        "nothing else in the pool"
    );
    let file_len = std::fs::metadata(&pool_file).unwrap().len();
    assert_eq!(file_len, (fin.len() * POOL_RECORD_SIZE) as u64);

    // hvkvp reads the same records, in the same order.
    let json = JsonIn::records(&hvkvp_ok(&dir, &["list", "guest", "--json"]));
    assert_eq!(json, fin, "hvkvp list guest --json = the host's walk");

    // Nothing any walk showed on the way was made up.
    for (k, v) in &seen {
        assert!(
            is_seed(k, v) || is_tool(k, v) || written_set.contains(&(k.clone(), v.clone())),
            "a walk showed {k:?} = {v:?}, which nobody wrote"
        );
    }
    assert!(
        walks >= 3 && sizes.len() >= 3,
        "the host walked while the pool grew: {walks} walks, sizes {sizes:?}"
    );
    // hvkvp's keys landed between cloud-init's batches: the writers really overlapped.
    let is_ci = |k: &str| ci_keys.contains(k);
    let first_ci = fin.iter().position(|(k, _)| is_ci(k)).unwrap();
    let last_ci = fin.iter().rposition(|(k, _)| is_ci(k)).unwrap();
    let tool_between = fin[first_ci..last_ci]
        .iter()
        .filter(|(k, v)| is_tool(k, v))
        .count();
    assert!(
        tool_between > 0,
        "no hvkvp set ran while cloud-init was appending"
    );

    // The once-per-boot truncation left a file written after boot alone.
    let (size_before, size_after, mtime, boot) = out.truncation.expect("truncation line");
    assert_eq!(
        size_before,
        (SEED_KEYS * POOL_RECORD_SIZE) as u64,
        "the seeds were there"
    );
    assert_eq!(
        size_after, size_before,
        "cloud-init's handler truncated a pool file written after boot"
    );
    eprintln!(
        "truncation: the pool file's mtime is {:.0} s after boot (uptime-based boot time \
         {boot:.0}), so the handler kept its {size_before} bytes",
        mtime - boot
    );

    // Each event as the host sees it: one record, or sub-keys |0..|n-1 whose "msg" slices
    // join into the description cloud-init was given.
    assert_eq!(out.events.len(), EVENTS);
    let mut per_event: BTreeMap<&str, Vec<(Vec<&str>, &str)>> = BTreeMap::new();
    for (k, v) in &fin {
        if is_ci(k) {
            let parts: Vec<&str> = k.split('|').collect();
            assert!(parts.len() == 5 || parts.len() == 6, "cloud-init key {k:?}");
            assert_eq!(parts[0], "CLOUD_INIT");
            per_event
                .entry(parts[3])
                .or_default()
                .push((parts, v.as_str()));
        }
    }
    let (mut split_events, mut sub_keys, mut cut_escapes, mut over_safe) = (0, 0, 0, 0);
    for (i, (ty, desc)) in &out.events {
        let name = format!("interop-{i:02}");
        let mut recs = per_event.remove(name.as_str()).unwrap_or_default();
        assert!(!recs.is_empty(), "{name}: nothing reached the host");
        let want = python_json_escape(desc);
        // The script's long descriptions (every fourth event, from 2) do not fit 1024
        // characters; the others do (the edge event exactly).
        let long = i % 4 == 2;
        for (parts, v) in &recs {
            assert_eq!(parts[2], ty, "{name}: event type");
            if v.encode_utf16().count() > HOST_SAFE_VALUE_UNITS {
                over_safe += 1;
            }
        }
        if recs.len() == 1 && recs[0].0.len() == 5 {
            assert!(!long, "{name}: a long event in one record");
            assert_eq!(msg_of(recs[0].1), want, "{name}: the description");
            continue;
        }
        recs.sort_by_key(|(parts, _)| parts.get(5).map(|n| n.parse::<usize>().unwrap()));
        let uuid = recs[0].0[4];
        let mut joined = String::new();
        for (n, (parts, v)) in recs.iter().enumerate() {
            assert_eq!(parts.len(), 6, "{name}: a split event has only sub-keys");
            assert_eq!(parts[4], uuid, "{name}: one event id");
            assert_eq!(parts[5], n.to_string(), "{name}: sub-keys numbered from 0");
            assert!(v.len() <= 1024, "{name}|{n}: {} bytes", v.len());
            let m = msg_of(v);
            if !ends_on_escape_boundary(m) {
                cut_escapes += 1;
            }
            joined.push_str(m);
        }
        assert!(long, "{name}: a short event split into {}", recs.len());
        assert_eq!(joined, want, "{name}: the joined description");
        split_events += 1;
        sub_keys += recs.len();
    }
    assert!(
        per_event.is_empty(),
        "events nobody published: {per_event:?}"
    );
    assert_eq!(split_events, EVENTS / 4, "every long event was split");

    eprintln!(
        "{} cloud-init records ({split_events} events split into {sub_keys} sub-keys, \
         {cut_escapes} sub-values cut inside a JSON escape), {TOOL_KEYS} hvkvp keys \
         ({tool_between} between cloud-init's records), {SEED_KEYS} seeds: all in the host's \
         final walk and in hvkvp list --json; {walks} walks during the run, {} sizes; {:.1} s",
        written.len(),
        sizes.len(),
        started.elapsed().as_secs_f64()
    );
    match out.edge_len {
        Some(len) => eprintln!(
            "note: the edge event's value is {len} characters, and {over_safe} cloud-init \
             value(s) exceed the {HOST_SAFE_VALUE_UNITS} UTF-16 units the FreeBSD kernel hands \
             the host whole (docs/protocol/kvp.md §2.4): the host would see them cut"
        ),
        None => eprintln!("note: no edge event (this cloud-init has no _encode_event)"),
    }
}
