//! `hvkvp`, the real binary, on temporary pool directories: every command, its text and
//! JSON output, exit codes and refusals, the files it leaves, the repair of a crashed
//! writer's journal, and concurrency with an outside appender (cloud-init's way: append
//! under `flock`) and with the real `hv_kvp_daemon` serving the emulated host's SETs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use hvguest_core::kvp::effect::FileId;
use hvguest_core::kvp::jobs::journal_entry;
use hvguest_core::kvp::journal::{JournalEntry, JournalWrite};
use hvguest_core::kvp::pool::{Plan, Pool};
use hvguest_core::kvp::record::{encode_pool, Record};
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{decode_reply, encode_request, PoolId, Reply, Request, Status};
use hvguest_core::limits::{KVP_KEY_FIELD, POOL_RECORD_SIZE};
use hvguest_sim::emulator::{Answer, DaemonLink, EmulatedDevice};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, signal, SigHandler, Signal};
use nix::unistd::Pid;

// ---------------------------------------------------------------------------------------
// Scaffolding.

/// A fresh directory for one test, removed when dropped; `pool` is the pool directory.
struct TestDir {
    root: PathBuf,
    pool: PathBuf,
}

impl TestDir {
    fn new(name: &str) -> TestDir {
        let root =
            std::env::temp_dir().join(format!("hvguest-hvkvp-{}-{name}", std::process::id()));
        // Test scratch space: it may not exist, and a leftover is harmless.
        let _ = std::fs::remove_dir_all(&root);
        let pool = root.join("pool");
        std::fs::create_dir_all(&pool).unwrap();
        // Private, whatever the umask: hvkvp refuses a directory others can write.
        std::fs::set_permissions(&pool, std::fs::Permissions::from_mode(0o700)).unwrap();
        TestDir { root, pool }
    }

    fn file(&self, pool: PoolId) -> PathBuf {
        self.pool.join(FileId::pool(pool).file_name())
    }

    fn journal(&self, pool: PoolId) -> PathBuf {
        self.pool.join(FileId::journal(pool).file_name())
    }

    /// Writes a pool file as another program would (mode 0600).
    fn write_pool(&self, pool: PoolId, records: &[(&str, &str)]) {
        let recs: Vec<Record> = records.iter().map(|(k, v)| rec(k, v)).collect();
        write_file(&self.file(pool), &encode_pool(&recs));
    }

    /// Runs `hvkvp --pool-dir DIR ARGS...`.
    fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        let mut child = self
            .command(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hvkvp");
        if let Some(bytes) = stdin {
            child.stdin.take().unwrap().write_all(bytes).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).expect("UTF-8 output"),
            stderr: String::from_utf8(out.stderr).expect("UTF-8 errors"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hvkvp"));
        // The test's own kvp.conf (missing unless a test writes it), never the
        // machine's.
        c.arg("--pool-dir")
            .arg(&self.pool)
            .arg("--config")
            .arg(self.config())
            .args(args);
        c
    }

    fn config(&self) -> PathBuf {
        self.root.join("kvp.conf")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // Test scratch space: it may not exist, and a leftover is harmless.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// What one run of the tool did.
#[derive(Debug)]
struct Run {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts the exit code; returns standard output.
    fn code(&self, want: i32) -> &str {
        assert_eq!(self.code, Some(want), "hvkvp {:?}: {self:#?}", self.args);
        &self.stdout
    }

    fn ok(&self) -> &str {
        self.code(0)
    }

    /// Asserts a refusal (exit 2, nothing on standard output) whose message has `words`.
    fn refused(&self, words: &[&str]) {
        self.code(2);
        assert!(self.stdout.is_empty(), "{self:#?}");
        assert!(self.stderr.starts_with("hvkvp: ") || self.stderr.starts_with("error: "));
        for w in words {
            assert!(
                self.stderr.contains(w),
                "{:?} lacks {w:?}: {self:#?}",
                self.args
            );
        }
    }
}

fn rec(k: &str, v: &str) -> Record {
    Record::new(key(k), value(v))
}

fn key(s: &str) -> Key {
    Key::new(s.as_bytes()).unwrap()
}

fn value(s: &str) -> Value {
    Value::new(s.as_bytes()).unwrap()
}

fn write_file(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// A pool file read strictly: whole 2560-byte records, each field its text, a NUL, then
/// zeros only, no empty key. Panics otherwise.
fn strict_records(path: &Path) -> Vec<(String, String)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        bytes.len() % POOL_RECORD_SIZE,
        0,
        "{}: {} bytes is not whole records",
        path.display(),
        bytes.len()
    );
    let field = |f: &[u8], i: usize| -> String {
        let end = f.iter().position(|&b| b == 0).expect("terminated");
        assert!(
            f[end..].iter().all(|&b| b == 0),
            "{}: record {i} not zero-padded",
            path.display()
        );
        String::from_utf8_lossy(&f[..end]).into_owned()
    };
    bytes
        .chunks_exact(POOL_RECORD_SIZE)
        .enumerate()
        .map(|(i, r)| {
            let k = field(&r[..KVP_KEY_FIELD], i);
            assert!(!k.is_empty(), "{}: record {i}: empty key", path.display());
            (k, field(&r[KVP_KEY_FIELD..], i))
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn assert_mode_0600(path: &Path) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}: mode {mode:o}", path.display());
}

/// After a write: the pool file is whole zero-padded records with mode 0600, and the
/// journal is empty (every change finished) with mode 0600.
fn assert_clean(dir: &TestDir, pool: PoolId) -> Vec<(String, String)> {
    let recs = strict_records(&dir.file(pool));
    assert_mode_0600(&dir.file(pool));
    let journal = dir.journal(pool);
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0, "journal");
    assert_mode_0600(&journal);
    recs
}

// ---------------------------------------------------------------------------------------
// A small strict JSON reader, to parse the tool's output back.

#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parses exactly one JSON value (and surrounding white space); panics otherwise.
    fn parse(text: &str) -> Json {
        let mut p = JsonReader {
            s: text.as_bytes(),
            at: 0,
        };
        let v = p.value();
        p.ws();
        assert_eq!(p.at, p.s.len(), "text after the JSON value: {text:?}");
        v
    }

    fn get(&self, name: &str) -> &Json {
        match self {
            Json::Obj(fields) => {
                let found: Vec<&Json> = fields
                    .iter()
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| v)
                    .collect();
                assert_eq!(found.len(), 1, "field {name:?} once in {self:?}");
                found[0]
            }
            other => panic!("not an object: {other:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            other => panic!("not an array: {other:?}"),
        }
    }

    fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(fields) => fields.iter().map(|(k, _)| k.as_str()).collect(),
            other => panic!("not an object: {other:?}"),
        }
    }

    /// `[{"key":…,"value":…},…]` as pairs.
    fn records(&self) -> Vec<(String, String)> {
        self.arr()
            .iter()
            .map(|r| {
                assert_eq!(r.keys(), ["key", "value"]);
                (
                    r.get("key").str().to_string(),
                    r.get("value").str().to_string(),
                )
            })
            .collect()
    }
}

struct JsonReader<'a> {
    s: &'a [u8],
    at: usize,
}

impl JsonReader<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn next(&mut self) -> u8 {
        let b = *self.s.get(self.at).expect("JSON ends too soon");
        self.at += 1;
        b
    }

    fn expect(&mut self, lit: &str) {
        for &b in lit.as_bytes() {
            assert_eq!(self.next(), b, "expected {lit:?} at {}", self.at);
        }
    }

    fn value(&mut self) -> Json {
        self.ws();
        match self.s.get(self.at).copied() {
            Some(b'{') => {
                self.at += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.s.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Json::Obj(fields);
                }
                loop {
                    self.ws();
                    let k = self.string();
                    self.ws();
                    self.expect(":");
                    let v = self.value();
                    fields.push((k, v));
                    self.ws();
                    match self.next() {
                        b',' => {}
                        b'}' => return Json::Obj(fields),
                        b => panic!("unexpected {:?} in an object", b as char),
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Json::Arr(items);
                }
                loop {
                    items.push(self.value());
                    self.ws();
                    match self.next() {
                        b',' => {}
                        b']' => return Json::Arr(items),
                        b => panic!("unexpected {:?} in an array", b as char),
                    }
                }
            }
            Some(b'"') => Json::Str(self.string()),
            Some(b't') => {
                self.expect("true");
                Json::Bool(true)
            }
            Some(b'f') => {
                self.expect("false");
                Json::Bool(false)
            }
            Some(b'n') => {
                self.expect("null");
                Json::Null
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while matches!(
                    self.s.get(self.at),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.at]).unwrap();
                Json::Num(text.parse().expect("a number"))
            }
            other => panic!("unexpected {other:?} at {}", self.at),
        }
    }

    fn hex4(&mut self) -> u32 {
        let mut n = 0;
        for _ in 0..4 {
            let d = (self.next() as char).to_digit(16).expect("hex digit");
            n = n * 16 + d;
        }
        n
    }

    fn string(&mut self) -> String {
        self.expect("\"");
        let mut out = String::new();
        loop {
            match self.next() {
                b'"' => return out,
                b'\\' => {
                    let c = match self.next() {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4();
                            if (0xd800..0xdc00).contains(&hi) {
                                self.expect("\\u");
                                let lo = self.hex4();
                                assert!((0xdc00..0xe000).contains(&lo), "lone surrogate");
                                char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
                                    .unwrap()
                            } else {
                                char::from_u32(hi).expect("a scalar value")
                            }
                        }
                        b => panic!("bad escape \\{}", b as char),
                    };
                    out.push(c);
                }
                b if b < 0x20 => panic!("raw control byte {b:#x} in a JSON string"),
                b => {
                    // Copy one whole UTF-8 character.
                    let start = self.at - 1;
                    let len = match b {
                        0x00..=0x7f => 1,
                        0xc0..=0xdf => 2,
                        0xe0..=0xef => 3,
                        _ => 4,
                    };
                    out.push_str(std::str::from_utf8(&self.s[start..start + len]).unwrap());
                    self.at = start + len;
                }
            }
        }
    }
}

#[test]
fn the_json_reader_reads_what_it_should() {
    let v = Json::parse(
        r#" {"a":[1,-2.5e1,true,false,null],"b":"x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00é"} "#,
    );
    assert_eq!(v.keys(), ["a", "b"]);
    assert_eq!(
        v.get("a").arr(),
        [
            Json::Num(1.0),
            Json::Num(-25.0),
            Json::Bool(true),
            Json::Bool(false),
            Json::Null
        ]
    );
    assert_eq!(v.get("b").str(), "x\"\\/\u{8}\u{c}\n\r\té😀é");
}

// ---------------------------------------------------------------------------------------
// Commands, output and exit codes.

#[test]
fn set_get_list_delete_and_the_files_they_leave() {
    let dir = TestDir::new("basics");
    assert_eq!(
        dir.run(&["list", "guest"]).ok(),
        "",
        "no file: an empty pool"
    );
    assert!(!dir.file(PoolId::Guest).exists(), "reading creates nothing");

    dir.run(&["delete", "guest", "color"]).code(1);
    assert!(
        !dir.file(PoolId::Guest).exists(),
        "a DELETE creates nothing"
    );
    let r = dir.run(&["set", "guest", "color", "blue"]);
    assert_eq!((r.ok(), r.stderr.as_str()), ("", ""), "silent on success");
    // The SET that created its pool file created all five, as the daemon does.
    for pool in PoolId::ALL {
        let meta = std::fs::metadata(dir.file(pool)).expect("every pool file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{pool:?}");
        assert_eq!(meta.len() == 0, pool != PoolId::Guest, "{pool:?}");
    }
    dir.run(&["set", "guest", "size", "10"]).ok();
    dir.run(&["set", "guest", "color", "green"]).ok();
    dir.run(&["set", "guest", "color", "green"]).ok(); // already so: still 0
    assert_eq!(
        assert_clean(&dir, PoolId::Guest),
        pairs(&[("color", "green"), ("size", "10")]),
        "updated in place, appended, never duplicated"
    );

    assert_eq!(dir.run(&["get", "guest", "color"]).ok(), "green\n");
    let r = dir.run(&["get", "guest", "missing"]);
    assert_eq!(r.code(1), "");
    assert_eq!(r.stderr, "hvkvp: missing: no such key in pool 1 (guest)\n");
    assert_eq!(
        dir.run(&["get", "guest", "size", "--json"]).ok(),
        "{\"pool\":\"guest\",\"key\":\"size\",\"value\":\"10\"}\n"
    );

    assert_eq!(
        dir.run(&["list", "guest"]).ok(),
        "color  green\nsize   10\n"
    );
    let json = Json::parse(dir.run(&["list", "guest", "--json"]).ok());
    assert_eq!(json.records(), pairs(&[("color", "green"), ("size", "10")]));

    dir.run(&["delete", "guest", "color"]).ok();
    let r = dir.run(&["delete", "guest", "color"]);
    r.code(1);
    assert!(r.stderr.contains("no such key"), "{r:?}");
    dir.run(&["get", "guest", "color"]).code(1);
    assert_eq!(assert_clean(&dir, PoolId::Guest), pairs(&[("size", "10")]));

    // Every pool kept in a file; the empty ones read as empty.
    assert_eq!(
        dir.run(&["list"]).ok(),
        "[external]\n\n[guest]\nsize  10\n\n[auto-external]\n\n[auto-internal]\n"
    );
    let all = Json::parse(dir.run(&["list", "--json"]).ok());
    assert_eq!(
        all.keys(),
        ["external", "guest", "auto-external", "auto-internal"]
    );
    assert_eq!(all.get("guest").records(), pairs(&[("size", "10")]));
    assert!(all.get("external").arr().is_empty());
}

#[test]
fn pools_by_name_alias_and_number() {
    let dir = TestDir::new("names");
    dir.write_pool(PoolId::External, &[("pushed", "by admin")]);
    dir.write_pool(PoolId::AutoExternal, &[("HostName", "HOST01")]);
    dir.write_pool(PoolId::AutoInternal, &[("internal", "x")]);
    for pool in ["external", "0"] {
        assert_eq!(dir.run(&["get", pool, "pushed"]).ok(), "by admin\n");
    }
    for pool in ["auto-external", "parameters", "3"] {
        assert_eq!(dir.run(&["get", pool, "HostName"]).ok(), "HOST01\n");
    }
    for pool in ["auto-internal", "4"] {
        assert_eq!(dir.run(&["get", pool, "internal"]).ok(), "x\n");
    }
    dir.run(&["set", "1", "by-number", "yes"]).ok();
    assert_eq!(dir.run(&["get", "guest", "by-number"]).ok(), "yes\n");

    // The auto pool has no file: list and get compute it with the daemon's code (the
    // values uname(1) prints here), watch explains why it cannot follow it.
    let uname = |flag: &str| {
        let out = Command::new("uname")
            .arg(flag)
            .output()
            .expect("uname runs");
        String::from_utf8(out.stdout).expect("UTF-8 uname")
    };
    assert_eq!(dir.run(&["get", "2", "OSName"]).ok(), uname("-s"));
    assert_eq!(
        dir.run(&["get", "auto", "ProcessorArchitecture"]).ok(),
        uname("-m")
    );
    let listed = Json::parse(dir.run(&["list", "auto", "--json"]).ok()).records();
    assert_eq!(
        listed.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        [
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
        ]
    );
    dir.run(&["get", "auto", "NoSuchKey"]).code(1);
    dir.run(&["watch", "auto"]).refused(&[
        "auto pool",
        "hv_kvp_daemon generates",
        "hvkvp list auto",
    ]);
    // Listing every pool still means the pools kept in files.
    assert!(!dir.run(&["list"]).ok().contains("[auto]"));
    // Not a pool: clap's usage error, exit 2.
    dir.run(&["get", "5", "k"]).refused(&["invalid value '5'"]);
    dir.run(&["list", "guests"]).refused(&["possible values"]);
}

#[test]
fn the_auto_pool_shows_the_auto_values_of_kvp_conf() {
    let dir = TestDir::new("auto-overrides");
    let plain = dir.run(&["get", "auto", "OSName"]).ok().to_string();
    let arch = dir
        .run(&["get", "auto", "ProcessorArchitecture"])
        .ok()
        .to_string();
    std::fs::write(
        dir.config(),
        "auto.OSName = FreeBSD (web tier)\nauto.FullyQualifiedDomainName = web1.contoso.com\n",
    )
    .unwrap();
    assert_eq!(
        dir.run(&["get", "auto", "OSName"]).ok(),
        "FreeBSD (web tier)\n"
    );
    let list = dir.run(&["list", "auto"]).ok().to_string();
    assert!(list.contains("web1.contoso.com"), "{list}");
    assert!(list.contains("FreeBSD (web tier)"), "{list}");
    // The others are the system's, as without the file.
    assert_ne!(plain, "FreeBSD (web tier)\n");
    assert_eq!(
        dir.run(&["get", "auto", "ProcessorArchitecture"]).ok(),
        arch
    );
    // Not one of the ten: refused naming the line.
    std::fs::write(dir.config(), "\nauto.OSname = x\n").unwrap();
    dir.run(&["get", "auto", "OSName"])
        .refused(&["kvp.conf:2:", "unknown key `auto.OSname`"]);
}

#[test]
fn set_keeps_to_max_records_of_kvp_conf() {
    let dir = TestDir::new("max-records");
    std::fs::write(dir.config(), "# three at most\nmax_records = 3\n").unwrap();
    dir.write_pool(PoolId::Guest, &[("a", "1"), ("b", "2")]);
    dir.run(&["set", "guest", "c", "3"]).ok();
    // A fourth record would grow the pool past max_records: refused, with the reason.
    dir.run(&["set", "guest", "d", "4"]).refused(&[
        "holds 3 records or more",
        "max_records = 3",
        "kvp.conf",
        "nothing was written",
    ]);
    assert_eq!(
        assert_clean(&dir, PoolId::Guest),
        pairs(&[("a", "1"), ("b", "2"), ("c", "3")])
    );
    // Changing a key in place grows nothing; after a DELETE there is room again.
    dir.run(&["set", "guest", "a", "changed"]).ok();
    dir.run(&["delete", "guest", "b"]).ok();
    dir.run(&["set", "guest", "d", "4"]).ok();
    // Without the file, the default (10000) applies: the same SET goes through.
    std::fs::remove_file(dir.config()).unwrap();
    dir.run(&["set", "guest", "e", "5"]).ok();
    assert_eq!(assert_clean(&dir, PoolId::Guest).len(), 4);
    // A bad file is refused naming its line, and nothing is written.
    std::fs::write(dir.config(), "\nmax_records = lots\n").unwrap();
    dir.run(&["set", "guest", "f", "6"]).refused(&[
        "kvp.conf:2:",
        "`max_records = lots`",
        "whole number",
    ]);
    assert_eq!(assert_clean(&dir, PoolId::Guest).len(), 4);
}

#[test]
fn writes_are_refused_with_an_explanation_unless_forced() {
    let dir = TestDir::new("refusals");
    // Pools other than guest belong to the host.
    for pool in ["external", "0", "parameters", "auto-internal"] {
        dir.run(&["set", pool, "k", "v"])
            .refused(&["belongs to the host", "--force"]);
        dir.run(&["delete", pool, "k"])
            .refused(&["belongs to the host", "--force"]);
    }
    assert!(!dir.file(PoolId::External).exists());
    dir.run(&["set", "external", "k", "v", "--force"]).ok();
    assert_eq!(dir.run(&["get", "external", "k"]).ok(), "v\n");
    dir.run(&["delete", "--force", "external", "k"]).ok();
    assert_eq!(assert_clean(&dir, PoolId::External), pairs(&[]));
    // The auto pool cannot be written at all.
    dir.run(&["set", "auto", "k", "v", "--force"])
        .refused(&["cannot be written"]);

    // Keys: host-safe length in UTF-16 units; the field's length always.
    let k254 = "k".repeat(254);
    let k255 = "k".repeat(255);
    dir.run(&["set", "guest", &k254, "ok"]).ok();
    dir.run(&["set", "guest", &k255, "v"])
        .refused(&["255 UTF-16 units", "254", "--force"]);
    dir.run(&["set", "guest", &k255, "forced", "--force"]).ok();
    let e254 = "é".repeat(254); // 508 bytes, but 254 units: fine
    dir.run(&["set", "guest", &e254, "ok"]).ok();
    dir.run(&["set", "guest", &"é".repeat(255), "v"])
        .refused(&["255 UTF-16 units"]);
    let smile127 = "😀".repeat(127); // 508 bytes, 254 units
    dir.run(&["set", "guest", &smile127, "ok"]).ok();
    for long in ["k".repeat(512), "😀".repeat(128)] {
        dir.run(&["set", "guest", &long, "v", "--force"])
            .refused(&["512 bytes", "at most 511"]);
    }
    dir.run(&["set", "guest", "", "v", "--force"])
        .refused(&["key is empty"]);

    // Values.
    let v1022 = "v".repeat(1022);
    let v1023 = "v".repeat(1023);
    let v2047 = "v".repeat(2047);
    dir.run(&["set", "guest", "v1022", &v1022]).ok();
    dir.run(&["set", "guest", "v1023", &v1023])
        .refused(&["1023 UTF-16 units", "1022", "--force"]);
    dir.run(&["set", "guest", "v1023", &v1023, "--force"]).ok();
    dir.run(&["set", "guest", "v2047", &v2047, "--force"]).ok();
    dir.run(&["set", "guest", "v2048", &"v".repeat(2048), "--force"])
        .refused(&["2048 bytes", "at most 2047"]);

    // NUL cannot come through argv; it can through a file or standard input.
    let nul = dir.root.join("nul");
    std::fs::write(&nul, b"before\0after").unwrap();
    dir.run(&[
        "set",
        "guest",
        "nul",
        "-f",
        nul.to_str().unwrap(),
        "--force",
    ])
    .refused(&["NUL byte (at byte 6)"]);
    dir.run_with_stdin(&["set", "guest", "nul", "-f", "-", "--force"], Some(b"a\0"))
        .refused(&["NUL"]);
    // Not UTF-8: refused unless forced.
    let latin1 = dir.root.join("latin1");
    std::fs::write(&latin1, b"caf\xe9").unwrap();
    dir.run(&["set", "guest", "latin1", "-f", latin1.to_str().unwrap()])
        .refused(&["not UTF-8", "--force"]);
    dir.run(&[
        "set",
        "guest",
        "latin1",
        "-f",
        latin1.to_str().unwrap(),
        "--force",
    ])
    .ok();

    // Only what was accepted is in the file, whole and zero-padded.
    let keys: Vec<String> = assert_clean(&dir, PoolId::Guest)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let want = [
        &k254, &k255, &e254, &smile127, "v1022", "v1023", "v2047", "latin1",
    ];
    assert_eq!(keys, want);
    let raw = std::fs::read(dir.file(PoolId::Guest)).unwrap();
    let last = &raw[raw.len() - POOL_RECORD_SIZE..];
    assert_eq!(
        &last[KVP_KEY_FIELD..KVP_KEY_FIELD + 5],
        b"caf\xe9\0",
        "stored as given"
    );
    assert_eq!(
        dir.run(&["get", "guest", "v2047"]).ok(),
        format!("{v2047}\n")
    );
}

#[test]
fn values_from_a_file_or_standard_input_and_values_that_look_like_options() {
    let dir = TestDir::new("value-sources");
    let file = dir.root.join("value");
    std::fs::write(&file, "line one\nline two\n").unwrap();
    dir.run(&[
        "set",
        "guest",
        "file",
        "--value-file",
        file.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        dir.run(&["get", "guest", "file"]).ok(),
        "line one\nline two\n\n",
        "byte for byte, then get's newline"
    );
    dir.run_with_stdin(&["set", "guest", "stdin", "-f", "-"], Some(b"from stdin"))
        .ok();
    assert_eq!(dir.run(&["get", "guest", "stdin"]).ok(), "from stdin\n");
    dir.run(&["set", "guest", "negative", "-1"]).ok();
    dir.run(&["set", "guest", "--", "-dash", "--value"]).ok();
    assert_eq!(dir.run(&["get", "guest", "negative"]).ok(), "-1\n");
    assert_eq!(dir.run(&["get", "guest", "--", "-dash"]).ok(), "--value\n");
    // Usage errors: clap's, exit 2.
    dir.run(&[]).refused(&["Usage"]);
    dir.run(&["set", "guest", "k"]).refused(&["VALUE"]);
    dir.run(&["set", "guest", "k", "v", "-f", file.to_str().unwrap()])
        .refused(&["cannot be used with"]);
    dir.run(&["get", "guest"]).refused(&["KEY"]);
    dir.run(&["frobnicate"])
        .refused(&["unrecognized subcommand"]);
    assert!(dir.run(&["--help"]).ok().contains("Exit status"));
}

#[test]
fn json_output_escapes_what_it_must_and_reads_back_exactly() {
    let dir = TestDir::new("json");
    let tricky_key = "q\"uote\\key";
    let tricky = "a\"b\\c\nd\re\tf\u{1}g\u{1f}h\u{7f}é😀\u{2028}/";
    dir.run(&["set", "guest", tricky_key, tricky]).ok();
    dir.run(&["set", "guest", "empty", ""]).ok();
    let got = dir.run(&["get", "guest", tricky_key, "--json"]);
    // serde_json's escaping: quote, backslash and the C0 controls; DEL, U+2028 and
    // everything else as UTF-8.
    assert_eq!(
        got.ok(),
        "{\"pool\":\"guest\",\"key\":\"q\\\"uote\\\\key\",\"value\":\
         \"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u001fh\u{7f}é😀\u{2028}/\"}\n"
    );
    let v = Json::parse(got.ok());
    assert_eq!(v.get("key").str(), tricky_key);
    assert_eq!(v.get("value").str(), tricky);
    let list = Json::parse(dir.run(&["list", "guest", "--json"]).ok());
    assert_eq!(
        list.records(),
        pairs(&[(tricky_key, tricky), ("empty", "")])
    );
    // Text: get prints the value exactly; list escapes control characters.
    assert_eq!(
        dir.run(&["get", "guest", tricky_key]).ok(),
        format!("{tricky}\n")
    );
    assert_eq!(
        dir.run(&["list", "guest"]).ok(),
        "q\"uote\\key  a\"b\\c\\nd\\re\\tf\\u{1}g\\u{1f}h\\u{7f}é😀\u{2028}/\nempty\n"
    );
    // Bytes that are not UTF-8 (another program's) read as U+FFFD.
    write_file(&dir.file(PoolId::External), &{
        let mut r = [0u8; POOL_RECORD_SIZE];
        r[..3].copy_from_slice(b"bin");
        r[KVP_KEY_FIELD..KVP_KEY_FIELD + 2].copy_from_slice(b"\xff\xfe");
        r
    });
    let ext = Json::parse(dir.run(&["list", "external", "--json"]).ok());
    assert_eq!(ext.records(), pairs(&[("bin", "\u{fffd}\u{fffd}")]));
}

/// Runs `hvkvp --pool-dir DIR ARGS...` with standard output on a new terminal; returns
/// the exit code and what the terminal received (the line discipline turns `\n` into
/// `\r\n`).
fn on_terminal(dir: &TestDir, args: &[&str]) -> (Option<i32>, String) {
    use std::io::Read;
    let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
    let child = dir
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(pty.slave))
        .stderr(Stdio::null())
        .spawn()
        .expect("start hvkvp");
    // The Command held the only other copy of the slave side: once the child exits,
    // reading the master side ends (EIO on Linux, end of file elsewhere).
    let out = child.wait_with_output().unwrap();
    let mut master = File::from(pty.master);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => break,
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }
    (
        out.status.code(),
        String::from_utf8_lossy(&seen).into_owned(),
    )
}

#[test]
fn get_escapes_control_characters_on_a_terminal_unless_raw() {
    let dir = TestDir::new("tty");
    // A value another program (or the host) stored that would retitle the terminal,
    // clear the screen and move the cursor if printed as is.
    let nasty = "title\u{1b}]0;owned\u{7}\u{1b}[2J\rback\ttab\u{9b}31m";
    dir.write_pool(PoolId::External, &[("k", nasty)]);
    let (code, seen) = on_terminal(&dir, &["get", "external", "k"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        seen,
        "title\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\rback\\ttab\\u{9b}31m\r\n"
    );
    // --raw: the bytes as stored, on a terminal too.
    let (code, seen) = on_terminal(&dir, &["get", "external", "k", "--raw"]);
    assert_eq!(code, Some(0));
    assert_eq!(seen, format!("{nasty}\r\n"));
    // Not a terminal: the bytes as stored, for scripts, with or without --raw.
    assert_eq!(
        dir.run(&["get", "external", "k"]).ok(),
        format!("{nasty}\n")
    );
    assert_eq!(
        dir.run(&["get", "external", "k", "--raw"]).ok(),
        format!("{nasty}\n")
    );
    dir.run(&["get", "external", "k", "--raw", "--json"])
        .refused(&["--raw", "--json"]);
}

#[test]
fn host_summarizes_what_the_host_publishes() {
    let dir = TestDir::new("host");
    let r = dir.run(&["host"]);
    r.code(1);
    assert!(r.stderr.contains("published nothing in pool 3"), "{r:?}");
    dir.run(&["host", "--json"]).code(1);
    dir.write_pool(
        PoolId::AutoExternal,
        &[
            ("HostName", "HOST01"),
            ("HostingSystemEditionId", "8"),
            ("HostingSystemNestedLevel", "0"),
            ("HostingSystemOsMajor", "10"),
            ("HostingSystemOsMinor", "0"),
            ("HostingSystemProcessorArchitecture", "9"),
            ("HostingSystemProcessorIdleStateMax", "0"),
            ("HostingSystemProcessorThrottleMax", "100"),
            ("HostingSystemProcessorThrottleMin", "5"),
            ("HostingSystemSpMajor", "0"),
            ("HostingSystemSpMinor", "0"),
            ("PhysicalHostName", "HOST01"),
            ("PhysicalHostNameFullyQualified", "host01.contoso.com"),
            ("VirtualMachineDynamicMemoryBalancingEnabled", "1"),
            ("VirtualMachineId", "4E6E7C2D-0C52-4B71-9A52-1F2C3D4E5F60"),
            ("VirtualMachineName", "web01"),
        ],
    );
    assert_eq!(
        dir.run(&["host"]).ok(),
        "VM name                   web01\n\
         VM id                     4E6E7C2D-0C52-4B71-9A52-1F2C3D4E5F60\n\
         Host name                 HOST01\n\
         Physical host             HOST01\n\
         Physical host FQDN        host01.contoso.com\n\
         Host OS version           10.0\n\
         Host processor            x64 (9)\n\
         Host edition id           8\n\
         Nesting level             0\n\
         Dynamic memory balancing  enabled\n"
    );
    let j = Json::parse(dir.run(&["host", "--json"]).ok());
    assert_eq!(j.get("vm_name").str(), "web01");
    assert_eq!(j.get("vm_id").str(), "4E6E7C2D-0C52-4B71-9A52-1F2C3D4E5F60");
    assert_eq!(j.get("host_name").str(), "HOST01");
    assert_eq!(j.get("physical_host_fqdn").str(), "host01.contoso.com");
    assert_eq!(j.get("host_os_version").str(), "10.0");
    assert_eq!(j.get("host_service_pack"), &Json::Null);
    assert_eq!(j.get("host_processor_architecture").str(), "9");
    assert_eq!(j.get("records").keys().len(), 16);
    // The summary in a fixed order, then the records in file order.
    assert_eq!(&j.keys()[..2], ["vm_name", "vm_id"]);
    assert_eq!(j.keys().last(), Some(&"records"));
    assert_eq!(
        &j.get("records").keys()[..2],
        ["HostName", "HostingSystemEditionId"]
    );
    assert_eq!(
        j.get("records")
            .get("HostingSystemProcessorThrottleMin")
            .str(),
        "5"
    );

    // A partial pool shows what it has; a service pack shows when there is one.
    dir.write_pool(
        PoolId::AutoExternal,
        &[
            ("VirtualMachineName", "db02"),
            ("HostingSystemOsMajor", "6"),
            ("HostingSystemOsMinor", "3"),
            ("HostingSystemSpMajor", "1"),
            ("HostingSystemSpMinor", "0"),
            ("HostingSystemProcessorArchitecture", "77"),
        ],
    );
    assert_eq!(
        dir.run(&["host"]).ok(),
        "VM name          db02\n\
         Host OS version  6.3 (service pack 1.0)\n\
         Host processor   77\n"
    );
    let j = Json::parse(dir.run(&["host", "--json"]).ok());
    assert_eq!(j.get("host_name"), &Json::Null);
    assert_eq!(j.get("host_service_pack").str(), "1.0");
}

#[test]
fn delete_removes_every_record_of_the_key() {
    let dir = TestDir::new("duplicates");
    dir.write_pool(
        PoolId::Guest,
        &[("k", "1"), ("x", "0"), ("k", "2"), ("y", "0"), ("k", "3")],
    );
    assert_eq!(
        dir.run(&["get", "guest", "k"]).ok(),
        "1\n",
        "the first record"
    );
    dir.run(&["delete", "guest", "k"]).ok();
    dir.run(&["get", "guest", "k"]).code(1);
    let left: BTreeSet<(String, String)> = assert_clean(&dir, PoolId::Guest).into_iter().collect();
    assert_eq!(left, pairs(&[("x", "0"), ("y", "0")]).into_iter().collect());
}

#[test]
fn completions_for_every_shell() {
    let dir = TestDir::new("completions");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = dir.run(&["completions", shell]).ok().to_string();
        for word in ["hvkvp", "watch", "pool-dir"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
        // Pool names where the shell's generator completes positional values.
        if matches!(shell, "bash" | "zsh") {
            assert!(script.contains("auto-external"), "{shell}: pool names");
        }
    }
    dir.run(&["completions", "tcsh"])
        .refused(&["possible values"]);
}

#[test]
fn a_missing_pool_directory_or_an_unusable_pool_file_is_a_clear_error() {
    let dir = TestDir::new("errors");
    let missing = dir.root.join("not/there");
    let out = Command::new(env!("CARGO_BIN_EXE_hvkvp"))
        .arg("--pool-dir")
        .arg(&missing)
        .args(["set", "guest", "k", "v"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let msg = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        msg,
        format!(
            "hvkvp: {}: no such directory (hv_kvp_daemon creates the pool directory when it \
             starts)\n",
            missing.display()
        )
    );
    assert!(!missing.exists(), "not created");
    // A directory where the pool file should be.
    std::fs::create_dir(dir.file(PoolId::Guest)).unwrap();
    for args in [&["list", "guest"][..], &["set", "guest", "k", "v"]] {
        dir.run(args)
            .refused(&[dir.file(PoolId::Guest).to_str().unwrap(), "directory"]);
    }
}

// ---------------------------------------------------------------------------------------
// Repairs. Reading never writes: list, get, host and watch show a pool file as it is and
// say what recovery would do; `repair` (or the daemon) recovers it, as the daemon does.

/// Every file in the pool directory, name and bytes: to show that a command wrote
/// nothing (nothing changed, nothing created).
fn snapshot(dir: &TestDir) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(&dir.pool)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn reading_changes_no_file_and_says_what_recovery_would_do() {
    let dir = TestDir::new("read-only");
    let before = [rec("a", "1"), rec("b", "2")];
    let pool = Pool::from_records(before.to_vec());
    // A SET that appends c=3 crashed after journaling and growing the file, before
    // writing the record: the file ends with a zero record.
    let Plan::Write(m) = pool.plan_set(&key("c"), &value("3")) else {
        panic!("an append")
    };
    let entry = journal_entry(PoolId::Guest, &m, &BTreeMap::new());
    write_file(&dir.journal(PoolId::Guest), &entry.encode());
    let mut grown = encode_pool(&before);
    grown.resize(3 * POOL_RECORD_SIZE, 0);
    write_file(&dir.file(PoolId::Guest), &grown);
    // And a torn append at the end of another pool.
    let mut torn = encode_pool(&[rec("x", "1")]);
    torn.extend_from_slice(&rec("torn", "append").encode()[..700]);
    write_file(&dir.file(PoolId::External), &torn);
    let files = snapshot(&dir);

    // The file as it is: c is not there yet, and the note says why and what to do.
    let r = dir.run(&["get", "guest", "c"]);
    r.code(1);
    assert!(
        r.stderr.contains(
            "note: pool 1 (guest): an interrupted writer left a change in the journal that \
             is not finished"
        ) && r.stderr.contains("recovery would finish it")
            && r.stderr.contains("hvkvp repair"),
        "{r:?}"
    );
    assert_eq!(dir.run(&["get", "guest", "b"]).ok(), "2\n");
    let r = dir.run(&["list", "external"]);
    assert_eq!(r.ok(), "x  1\n");
    assert!(
        r.stderr.contains(
            "note: pool 0 (external) ends with a torn record (700 bytes): a writer stopped in \
             the middle of an append; it is not shown, and recovery would cut it"
        ),
        "{r:?}"
    );
    // Every pool, and the JSON forms: still nothing written, nothing created.
    let all = Json::parse(dir.run(&["list", "--json"]).ok());
    assert_eq!(
        all.get("guest").records(),
        pairs(&[("a", "1"), ("b", "2"), ("", "")])
    );
    dir.run(&["get", "guest", "a", "--json"]).ok();
    dir.run(&["host"]).code(1);
    assert_eq!(
        snapshot(&dir),
        files,
        "a reading command changed the pool directory"
    );

    // Repair settles both, as the daemon would.
    let r = dir.run(&["repair"]);
    let out = r.ok();
    assert!(
        out.contains("finished a change to pool 1 (guest)")
            && out.contains("cut a torn record (700 bytes) from the end of pool 0 (external)")
            && out.contains("pool 3 (auto-external): nothing to repair"),
        "{r:?}"
    );
    assert_eq!(
        assert_clean(&dir, PoolId::Guest),
        pairs(&[("a", "1"), ("b", "2"), ("c", "3")])
    );
    assert_eq!(
        strict_records(&dir.file(PoolId::External)),
        pairs(&[("x", "1")])
    );
    assert!(
        !dir.file(PoolId::AutoExternal).exists(),
        "repair creates no pool file"
    );
    assert_eq!(dir.run(&["get", "guest", "c"]).ok(), "3\n");
    assert_eq!(
        dir.run(&["repair", "guest"]).ok(),
        "pool 1 (guest): nothing to repair\n"
    );

    // An in-place SET journaled before any pool write: reading shows the old value and
    // says the change would be discarded (the file shows none of it: it never started,
    // or it finished and another program put the old value back); repair discards it.
    let pool = Pool::from_records(vec![rec("a", "1"), rec("b", "2")]);
    let Plan::Write(m) = pool.plan_set(&key("a"), &value("7")) else {
        panic!("an update")
    };
    let pre = BTreeMap::from([(0, rec("a", "1").encode())]);
    let entry = journal_entry(PoolId::External, &m, &pre);
    write_file(&dir.journal(PoolId::External), &entry.encode());
    dir.write_pool(PoolId::External, &[("a", "1"), ("b", "2")]);
    let files = snapshot(&dir);
    let r = dir.run(&["list", "external", "--json"]);
    assert!(
        r.stderr
            .contains("the file shows none of the change): recovery would discard it"),
        "{r:?}"
    );
    assert_eq!(
        Json::parse(r.ok()).records(),
        pairs(&[("a", "1"), ("b", "2")])
    );
    assert_eq!(snapshot(&dir), files);
    dir.run(&["repair", "external"]).ok();
    assert_eq!(
        assert_clean(&dir, PoolId::External),
        pairs(&[("a", "1"), ("b", "2")])
    );

    // The same entry with its pool write made but not known durable (a crash before
    // its fsync): reading shows the new value and says recovery would finish it;
    // repair finishes it.
    write_file(&dir.journal(PoolId::External), &entry.encode());
    dir.write_pool(PoolId::External, &[("a", "7"), ("b", "2")]);
    let r = dir.run(&["list", "external", "--json"]);
    assert!(r.stderr.contains("recovery would finish it"), "{r:?}");
    assert_eq!(
        Json::parse(r.ok()).records(),
        pairs(&[("a", "7"), ("b", "2")])
    );
    dir.run(&["repair", "external"]).ok();
    assert_eq!(
        assert_clean(&dir, PoolId::External),
        pairs(&[("a", "7"), ("b", "2")])
    );
}

#[test]
fn a_journal_entry_that_does_not_match_the_file_is_discarded() {
    let dir = TestDir::new("journal-discard");
    let pool = Pool::from_records(vec![rec("a", "1"), rec("b", "2")]);
    let Plan::Write(m) = pool.plan_set(&key("a"), &value("7")) else {
        panic!("an update")
    };
    let pre = BTreeMap::from([(0, rec("a", "1").encode())]);
    write_file(
        &dir.journal(PoolId::Guest),
        &journal_entry(PoolId::Guest, &m, &pre).encode(),
    );
    // Since then, another program rewrote slot 0 with something else entirely.
    dir.write_pool(PoolId::Guest, &[("someone", "else"), ("b", "2")]);
    let r = dir.run(&["set", "guest", "c", "3"]);
    r.ok();
    assert!(
        r.stderr
            .contains("note: left pool 1 (guest) as it is instead of finishing a change"),
        "{r:?}"
    );
    assert_eq!(
        assert_clean(&dir, PoolId::Guest),
        pairs(&[("someone", "else"), ("b", "2"), ("c", "3")])
    );
}

// ---------------------------------------------------------------------------------------
// What the tool trusts: a pool directory of its own user that no one else can write, and
// regular files in it (not links) that it owns.

/// `nobody` on Linux and FreeBSD (a uid need not be in the password file to own a file).
const NOBODY: u32 = 65534;

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

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

#[test]
fn a_pool_file_that_is_a_symlink_is_refused_and_its_target_left_alone() {
    let dir = TestDir::new("symlink");
    // Another file, 3300 bytes: not whole records, so a recovery through the link would
    // "cut a torn record" from it.
    let target = dir.root.join("precious");
    let bytes: Vec<u8> = (0..3300u32).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::write(&target, &bytes).unwrap();
    let link = dir.file(PoolId::Guest);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let commands: [&[&str]; 5] = [
        &["list"],
        &["list", "guest"],
        &["get", "guest", "k"],
        &["set", "guest", "k", "v"],
        &["delete", "guest", "k"],
    ];
    for args in commands {
        let r = dir.run(args);
        assert_eq!(
            std::fs::read(&target).unwrap(),
            bytes,
            "hvkvp {args:?} changed the link's target: {r:#?}"
        );
        r.refused(&[link.to_str().unwrap(), "symbolic link"]);
    }
}

#[test]
fn a_dangling_symlink_and_a_strangers_journal_create_nothing() {
    let dir = TestDir::new("dangling");
    let target = dir.root.join("crontab");
    let link = dir.file(PoolId::Guest);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    write_file(
        &dir.journal(PoolId::Guest),
        &strangers_journal(PoolId::Guest, b"* * * * * root /tmp/x"),
    );
    let commands: [&[&str]; 4] = [
        &["list", "guest"],
        &["get", "guest", "k"],
        &["set", "guest", "k", "v"],
        &["delete", "guest", "k"],
    ];
    for args in commands {
        let r = dir.run(args);
        assert!(
            std::fs::symlink_metadata(&target).is_err(),
            "hvkvp {args:?} created the link's target ({:?}): {r:#?}",
            std::fs::read(&target).map(|b| String::from_utf8_lossy(&b[..64]).into_owned())
        );
        r.refused(&[link.to_str().unwrap(), "symbolic link"]);
    }
}

#[test]
fn a_pool_directory_others_can_write_or_another_user_owns_is_refused() {
    let dir = TestDir::new("dir-trust");
    dir.write_pool(PoolId::Guest, &[("a", "1")]);
    let before = std::fs::read(dir.file(PoolId::Guest)).unwrap();
    let shown = dir.pool.to_str().unwrap().to_string();
    let owner = format!("owned by uid {}", euid());
    let cases: [(u32, u32, &str); 4] = [
        (euid(), 0o770, "mode 0770"),
        (euid(), 0o757, "mode 0757"),
        (euid(), 0o1777, "mode 1777"),
        (NOBODY, 0o700, "uid 65534"),
    ];
    for (uid, mode, found) in cases {
        chown(&dir.pool, uid);
        chmod(&dir.pool, mode);
        for args in [&["list", "guest"][..], &["set", "guest", "b", "2"]] {
            let r = dir.run(args);
            r.refused(&[&shown, found, &owner, "not writable by group or others"]);
        }
    }
    chown(&dir.pool, euid());
    chmod(&dir.pool, 0o700);
    // The pool directory given as a symbolic link to a good one.
    let alias = dir.root.join("alias");
    std::os::unix::fs::symlink(&dir.pool, &alias).unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_hvkvp"))
        .arg("--pool-dir")
        .arg(&alias)
        .args(["set", "guest", "b", "2"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2), "{r:?}");
    let msg = String::from_utf8(r.stderr).unwrap();
    assert!(
        msg.contains(alias.to_str().unwrap()) && msg.contains("symbolic link"),
        "{msg}"
    );
    assert_eq!(std::fs::read(dir.file(PoolId::Guest)).unwrap(), before);
    // And back as it should be: served.
    assert_eq!(dir.run(&["list", "guest"]).ok(), "a  1\n");
}

#[test]
fn a_pool_file_of_another_user_or_with_other_names_is_refused() {
    let dir = TestDir::new("file-trust");
    dir.write_pool(PoolId::Guest, &[("a", "1")]);
    let file = dir.file(PoolId::Guest);
    let shown = file.to_str().unwrap().to_string();
    // A second name for it, elsewhere: writing the pool would write that file too.
    let other = dir.root.join("other-name");
    std::fs::hard_link(&file, &other).unwrap();
    dir.run(&["list", "guest"])
        .refused(&[&shown, "2 links", "exactly one"]);
    std::fs::remove_file(&other).unwrap();
    assert_eq!(dir.run(&["list", "guest"]).ok(), "a  1\n");
    chown(&file, NOBODY);
    dir.run(&["set", "guest", "b", "2"]).refused(&[
        &shown,
        "uid 65534",
        &format!("uid {}", euid()),
    ]);
    chown(&file, euid());
    // A FIFO where a journal should be (remove one a refused `set` may have made first;
    // reading makes none).
    match std::fs::remove_file(dir.journal(PoolId::Guest)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
        _ => {}
    }
    nix::unistd::mkfifo(&dir.journal(PoolId::Guest), nix::sys::stat::Mode::S_IRWXU).unwrap();
    dir.run(&["set", "guest", "b", "2"]).refused(&[
        dir.journal(PoolId::Guest).to_str().unwrap(),
        "FIFO",
        "regular file",
    ]);
    std::fs::remove_file(dir.journal(PoolId::Guest)).unwrap();
    dir.run(&["set", "guest", "b", "2"]).ok();
    assert_eq!(
        assert_clean(&dir, PoolId::Guest),
        pairs(&[("a", "1"), ("b", "2")])
    );
}

// ---------------------------------------------------------------------------------------
// watch

/// Standard output of a running child, line by line.
fn lines_of(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn expect_line(rx: &Receiver<String>, want: &str) {
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) => assert_eq!(line, want),
        Err(e) => panic!("no line {want:?}: {e}"),
    }
}

/// Starts `hvkvp watch ARGS` with its output piped and SIGINT in its default state
/// (a test run in the background by a script inherits SIGINT ignored; a terminal's ^C
/// reaches a watch that never changed it).
fn start_watch(dir: &TestDir, args: &[&str]) -> (Child, Receiver<String>) {
    let mut cmd = dir.command(&["watch"]);
    cmd.args(args).stdout(Stdio::piped());
    // SAFETY: only sigaction(2), async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            signal(Signal::SIGINT, SigHandler::SigDfl)
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().unwrap();
    let rx = lines_of(&mut child);
    (child, rx)
}

/// Interrupts a watch and returns what it printed that was not read yet.
fn interrupt(mut child: Child, rx: Receiver<String>) -> Vec<String> {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(Signal::SIGINT as i32), "{st:?}");
    rx.iter().collect()
}

#[test]
fn watch_prints_the_pool_then_each_change() {
    let dir = TestDir::new("watch");
    dir.write_pool(PoolId::Guest, &[("a", "1")]);
    let (child, rx) = start_watch(&dir, &["guest", "--interval-ms", "50"]);
    expect_line(&rx, "+ a = 1");
    dir.run(&["set", "guest", "b", "2"]).ok();
    expect_line(&rx, "+ b = 2");
    dir.run(&["set", "guest", "a", "9"]).ok();
    expect_line(&rx, "~ a = 9");
    dir.run(&["delete", "guest", "a"]).ok();
    expect_line(&rx, "- a");
    // Another program's append, and a value that needs escaping.
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.file(PoolId::Guest))
        .unwrap();
    f.write_all(&rec("c", "x\ny").encode()).unwrap();
    expect_line(&rx, "+ c = x\\ny");
    // A later duplicate changes nothing a GET sees: no line.
    f.write_all(&rec("c", "shadowed").encode()).unwrap();
    dir.run(&["set", "guest", "d", "4"]).ok();
    expect_line(&rx, "+ d = 4");
    assert_eq!(interrupt(child, rx), Vec::<String>::new());
}

#[test]
fn watch_every_pool_as_json_and_stop_after_count() {
    let dir = TestDir::new("watch-json");
    dir.write_pool(PoolId::External, &[("e", "1")]);
    let (child, rx) = start_watch(&dir, &["--json", "--interval-ms", "50"]);
    expect_line(
        &rx,
        "{\"pool\":\"external\",\"change\":\"added\",\"key\":\"e\",\"value\":\"1\"}",
    );
    // A pool file that did not exist appears.
    dir.run(&["set", "guest", "g", "\"q\""]).ok();
    let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let j = Json::parse(&line);
    assert_eq!(j.keys(), ["pool", "change", "key", "value"]);
    assert_eq!(
        (
            j.get("pool").str(),
            j.get("change").str(),
            j.get("key").str(),
            j.get("value").str()
        ),
        ("guest", "added", "g", "\"q\"")
    );
    dir.run(&["delete", "guest", "g"]).ok();
    expect_line(
        &rx,
        "{\"pool\":\"guest\",\"change\":\"removed\",\"key\":\"g\"}",
    );
    dir.run(&["set", "external", "e", "2", "--force"]).ok();
    expect_line(
        &rx,
        "{\"pool\":\"external\",\"change\":\"changed\",\"key\":\"e\",\"value\":\"2\"}",
    );
    assert_eq!(interrupt(child, rx), Vec::<String>::new());

    // Text with every pool: prefixed. --count ends the watch by itself.
    let start = Instant::now();
    let r = dir.run(&["watch", "--interval-ms", "50", "--count", "3"]);
    assert_eq!(r.ok(), "[external] + e = 2\n");
    assert!(start.elapsed() >= Duration::from_millis(150));
}

// ---------------------------------------------------------------------------------------
// Concurrency: the tool, an outside appender and the real daemon on one pool.

/// The real daemon on an emulated device; killed (its log printed) on panic.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &TestDir, dev: &EmulatedDevice) -> (Daemon, DaemonLink) {
        let log = dir.root.join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_hv_kvp_daemon"))
            .arg("-n")
            .args(["--layout", "freebsd"])
            .arg("--device")
            .arg(dev.path())
            .arg("--pool-dir")
            .arg(&dir.pool)
            .arg("--pidfile")
            .arg(dir.root.join("pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start hv_kvp_daemon");
        let d = Daemon {
            child: Some(child),
            log,
        };
        match dev.accept(Duration::from_secs(10)) {
            Ok(link) => (d, link),
            Err(e) => panic!("the daemon did not register: {e}"),
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
                "--- daemon log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn call(link: &mut DaemonLink, req: &Request) -> Reply {
    match link.request(&encode_request(req)[..]).expect("device") {
        Answer::Reply { bytes, .. } => decode_reply(req.op(), &bytes).unwrap(),
        other => panic!("{req:?}: {other:?}"),
    }
}

#[test]
fn concurrent_set_with_flock_appends_and_the_daemon_serving_host_sets() {
    const APPENDS: usize = 200;
    const HOST_SETS: usize = 150;
    const TOOL_SETS: usize = 40;
    let dir = TestDir::new("concurrent");
    std::fs::remove_dir(&dir.pool).unwrap(); // the daemon creates it
    let socket = dir.root.join("kvp.sock");
    let dev = EmulatedDevice::bind(&socket).unwrap();
    let (_daemon, mut link) = Daemon::start(&dir, &dev);
    let path = dir.file(PoolId::Guest);
    let start = Arc::new(Barrier::new(3));
    let running = Arc::new(AtomicUsize::new(2));

    // cloud-init: open for append, flock(LOCK_EX), one whole record, unlock.
    let appender = {
        let (start, running, path) = (start.clone(), running.clone(), path.clone());
        thread::spawn(move || {
            let mut file = OpenOptions::new().append(true).open(&path).unwrap();
            start.wait();
            for i in 0..APPENDS {
                let r = rec(&format!("CLOUD_INIT|{i:04}"), &format!("event {i}"));
                let mut locked = Flock::lock(file, FlockArg::LockExclusive)
                    .map_err(|(_, e)| e)
                    .unwrap();
                locked.write_all(&r.encode()).unwrap();
                file = locked.unlock().map_err(|(_, e)| e).unwrap();
                thread::sleep(Duration::from_millis(1));
            }
            running.fetch_sub(1, Ordering::AcqRel);
        })
    };
    // The host: SETs into the guest pool through the daemon.
    let host = {
        let (start, running) = (start.clone(), running.clone());
        thread::spawn(move || {
            let mut acked = Vec::new();
            start.wait();
            for i in 0..HOST_SETS {
                let (k, v) = (format!("host-{i:03}"), format!("from the host {i}"));
                let req = Request::Set {
                    pool: PoolId::Guest,
                    key: key(&k),
                    value: value(&v),
                };
                // Only an OK counts; a late answer (E_FAIL) leaves the outcome open.
                let answer = link.request(&encode_request(&req)[..]).expect("device");
                if let Answer::Reply { bytes, .. } = answer {
                    if decode_reply(req.op(), &bytes).unwrap() == Reply::Status(Status::OK) {
                        acked.push((k, v));
                    }
                }
            }
            running.fetch_sub(1, Ordering::AcqRel);
            (link, acked)
        })
    };
    // The tool, meanwhile: new keys, updates, a delete, and reads.
    start.wait();
    let mut tool: BTreeMap<String, String> = BTreeMap::new();
    let mut overlapped = 0;
    for i in 0..TOOL_SETS {
        if running.load(Ordering::Acquire) == 2 {
            overlapped += 1;
        }
        let (k, v) = (format!("tool-{i:02}"), format!("from hvkvp {i}"));
        dir.run(&["set", "guest", &k, &v]).ok();
        tool.insert(k, v);
        if i % 5 == 4 {
            let k = format!("tool-{:02}", i - 2);
            let v = format!("updated {i}");
            dir.run(&["set", "1", &k, &v]).ok();
            tool.insert(k, v);
        }
        if i == 20 {
            dir.run(&["delete", "guest", "tool-03"]).ok();
            tool.remove("tool-03");
        }
        if i % 10 == 0 {
            // A read in the middle of it all shows only records someone wrote.
            let list = Json::parse(dir.run(&["list", "guest", "--json"]).ok());
            for (k, _) in list.records() {
                assert!(
                    k.starts_with("CLOUD_INIT|")
                        || k.starts_with("host-")
                        || k.starts_with("tool-"),
                    "{k}"
                );
            }
        }
    }
    appender.join().unwrap();
    let (mut link, acked) = host.join().unwrap();
    eprintln!(
        "{overlapped} of {TOOL_SETS} tool SETs started while both others ran; {} host SETs acknowledged",
        acked.len()
    );
    assert!(overlapped >= 5, "the writers overlapped: {overlapped}");
    assert!(
        acked.len() >= HOST_SETS * 9 / 10,
        "the daemon kept serving: {} of {HOST_SETS} acknowledged",
        acked.len()
    );

    // Nothing lost, nothing doubled, the file whole and clean.
    let on_disk = assert_clean(&dir, PoolId::Guest);
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, _) in &on_disk {
        *count.entry(k.as_str()).or_default() += 1;
    }
    assert!(count.values().all(|&n| n == 1), "no duplicate keys");
    let disk: BTreeMap<String, String> = on_disk.iter().cloned().collect();
    for i in 0..APPENDS {
        let k = format!("CLOUD_INIT|{i:04}");
        assert_eq!(disk.get(&k), Some(&format!("event {i}")), "appended {k}");
    }
    for (k, v) in &acked {
        assert_eq!(disk.get(k), Some(v), "host SET {k}");
    }
    for (k, v) in &tool {
        assert_eq!(disk.get(k), Some(v), "tool SET {k}");
    }
    assert!(!disk.contains_key("tool-03"), "deleted");
    let others = disk.keys().filter(|k| k.starts_with("host-")).count() - acked.len();
    assert_eq!(disk.len(), APPENDS + acked.len() + others + tool.len());

    // The daemon sees the tool's values, and the tool sees everything.
    for (k, v) in &tool {
        let got = call(
            &mut link,
            &Request::Get {
                pool: PoolId::Guest,
                key: key(k),
            },
        );
        assert_eq!(got, Reply::Value(value(v)), "daemon GET {k}");
    }
    let got = call(
        &mut link,
        &Request::Get {
            pool: PoolId::Guest,
            key: key("tool-03"),
        },
    );
    assert_eq!(
        got,
        Reply::Status(Status::S_CONT),
        "daemon GET of the deleted key"
    );
    let list = Json::parse(dir.run(&["list", "guest", "--json"]).ok());
    assert_eq!(list.records(), on_disk);

    // `hvkvp clear` while the host goes on setting keys through the daemon: every
    // record that was there is gone, what is left is whole and the host's, and the
    // daemon answers from the cleared file.
    let late = thread::spawn(move || {
        let mut acked = BTreeMap::new();
        for i in 0..40 {
            let (k, v) = (format!("late-{i:02}"), format!("late {i}"));
            let req = Request::Set {
                pool: PoolId::Guest,
                key: key(&k),
                value: value(&v),
            };
            if call(&mut link, &req) == Reply::Status(Status::OK) {
                acked.insert(k, v);
            }
        }
        (link, acked)
    });
    let r = dir.run(&["clear"]);
    assert!(r.ok().starts_with("pool 1 (guest): "), "{r:?}");
    let (mut link, late_acked) = late.join().unwrap();
    let left = assert_clean(&dir, PoolId::Guest);
    for (k, v) in &left {
        assert_eq!(late_acked.get(k), Some(v), "left after clear: {k}");
    }
    for (k, v) in on_disk.iter().take(20).chain(&left) {
        let want = if left.iter().any(|(l, _)| l == k) {
            Reply::Value(value(v))
        } else {
            Reply::Status(Status::S_CONT)
        };
        let got = call(
            &mut link,
            &Request::Get {
                pool: PoolId::Guest,
                key: key(k),
            },
        );
        assert_eq!(got, want, "daemon GET {k} after clear");
    }
}

// ---------------------------------------------------------------------------------------
// clear: a pool emptied through the journaled write path.

#[test]
fn clear_empties_the_guest_pool_and_others_only_with_force() {
    let dir = TestDir::new("clear");
    let r = dir.run(&["clear"]);
    assert_eq!(r.ok(), "pool 1 (guest): 0 records removed\n");
    assert!(!dir.file(PoolId::Guest).exists(), "nothing created");
    // Duplicates too (appenders do not de-duplicate).
    dir.write_pool(
        PoolId::Guest,
        &[("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("a", "5")],
    );
    dir.write_pool(PoolId::External, &[("pushed", "by admin")]);
    let r = dir.run(&["clear"]);
    assert_eq!(
        (r.ok(), r.stderr.as_str()),
        ("pool 1 (guest): 5 records removed\n", "")
    );
    assert_eq!(assert_clean(&dir, PoolId::Guest), pairs(&[]));
    assert_eq!(
        dir.run(&["clear", "guest"]).ok(),
        "pool 1 (guest): 0 records removed\n"
    );
    // The host's pools: only with --force; the auto pool never.
    for pool in ["external", "0", "parameters", "auto-internal"] {
        dir.run(&["clear", pool])
            .refused(&["belongs to the host", "--force"]);
    }
    assert_eq!(
        strict_records(&dir.file(PoolId::External)),
        pairs(&[("pushed", "by admin")])
    );
    assert_eq!(
        dir.run(&["clear", "--force", "external"]).ok(),
        "pool 0 (external): 1 record removed\n"
    );
    assert_eq!(assert_clean(&dir, PoolId::External), pairs(&[]));
    dir.run(&["clear", "auto", "--force"])
        .refused(&["cannot be written"]);
}

/// `hvkvp clear` killed at random points while cloud-init's kind of appender writes:
/// every stop leaves whole records, never a torn one, and only records of the pool as
/// it was or appended; a repair and a last clear, once the appender is done, leave the
/// pool empty and clean.
#[test]
fn clear_killed_midway_and_beside_an_appender_leaves_whole_records() {
    const RECORDS: usize = 120;
    const APPENDS: usize = 60;
    let dir = TestDir::new("clear-kill");
    let old: Vec<(String, String)> = (0..RECORDS)
        .map(|i| (format!("old-{i:03}"), format!("value {i}")))
        .collect();
    let old_refs: Vec<(&str, &str)> = old.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    dir.write_pool(PoolId::Guest, &old_refs);
    let path = dir.file(PoolId::Guest);
    // cloud-init: open for append, flock(LOCK_EX), one whole record, unlock.
    let appender = {
        let path = path.clone();
        thread::spawn(move || {
            let mut file = OpenOptions::new().append(true).open(&path).unwrap();
            for i in 0..APPENDS {
                let r = rec(&format!("CLOUD_INIT|{i:04}"), &format!("event {i}"));
                let mut locked = Flock::lock(file, FlockArg::LockExclusive)
                    .map_err(|(_, e)| e)
                    .unwrap();
                locked.write_all(&r.encode()).unwrap();
                file = locked.unlock().map_err(|(_, e)| e).unwrap();
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // Kill clears after growing delays, until one finishes by itself.
    let mut delay = Duration::from_millis(5);
    let mut kills = 0;
    loop {
        let mut child = dir
            .command(&["clear"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hvkvp");
        thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        // Whatever the point: whole records, each an old one or an appended one. Read
        // under the appender's lock: a read beside its write may see half a record
        // (Linux does not order a read after a concurrent write).
        let now = {
            let f = std::fs::File::open(&path).unwrap();
            let locked = Flock::lock(f, FlockArg::LockShared)
                .map_err(|(_, e)| e)
                .unwrap();
            let bytes = std::fs::read(&path).unwrap();
            drop(locked);
            bytes
        };
        assert_eq!(now.len() % POOL_RECORD_SIZE, 0, "a torn pool after a kill");
        delay += Duration::from_millis(5);
    }
    appender.join().unwrap();
    assert!(
        kills > 0,
        "no clear was stopped midway: the test tests nothing"
    );
    // A repair settles what the last kill left; a last clear empties what was old.
    dir.run(&["repair", "guest"]).ok();
    let left = assert_clean(&dir, PoolId::Guest);
    assert!(
        left.iter()
            .all(|(k, _)| k.starts_with("old-") || k.starts_with("CLOUD_INIT|")),
        "{left:?}"
    );
    let plural = if left.len() == 1 { "" } else { "s" };
    assert_eq!(
        dir.run(&["clear"]).ok(),
        format!("pool 1 (guest): {} record{plural} removed\n", left.len())
    );
    assert_eq!(assert_clean(&dir, PoolId::Guest), pairs(&[]));
}
