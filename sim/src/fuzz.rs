//! Fuzz target bodies. `fuzz/` calls them under libFuzzer (nightly); the stable test
//! `tests/fuzz_corpus.rs` runs them over the committed corpus. The bodies for parsers
//! private to the FreeBSD drivers are in `hvguest_io::fuzzing`.

mod freezer;
mod text;
mod vss;

pub use freezer::freezer;
pub use text::{journal, recording, scenario};
pub use vss::{vss_app, vss_hooks, vss_machine, vss_message};

use arbitrary::{Arbitrary, Unstructured};
use hvguest_core::kvp::effect::{EffectResult, Input};
use hvguest_core::kvp::effect::{FileId, IoError};
use hvguest_core::kvp::machine::Event;
use hvguest_core::kvp::machine::{KvpConfig, KvpMachine, Output};
use hvguest_core::kvp::record::{decode_pool, encode_pool};
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{self, Op, PoolId, Reply, Request, Status};
use hvguest_core::limits::{KVP_MSG_SIZE, POOL_RECORD_SIZE};
use hvguest_core::Instant;
use std::time::Duration;

use crate::fs::{FsCall, Owner, SimFs};
use crate::harness::{test_info, KvpHarness};
use crate::prng::Prng;

/// Any bytes decode to a request or a typed error; a request re-encodes to itself.
pub fn kvp_message(data: &[u8]) {
    let mut msg = [0u8; KVP_MSG_SIZE];
    let n = data.len().min(KVP_MSG_SIZE);
    msg[..n].copy_from_slice(&data[..n]);
    let _ = wire::decode_request(data);
    if let Ok(req) = wire::decode_request(&msg) {
        let again = wire::decode_request(&wire::encode_request(&req)[..])
            .expect("re-encoded request decodes");
        assert_eq!(again, req);
    }
}

/// Any bytes decode as a pool file; records re-encode to a file that decodes the same.
pub fn pool_file(data: &[u8]) {
    let d = decode_pool(data);
    assert_eq!(d.partial_tail, data.len() % POOL_RECORD_SIZE);
    let again = decode_pool(&encode_pool(&d.records));
    assert_eq!(again.records, d.records);
    // Re-encoded records are clean: terminated and zero-padded (an empty key stays
    // empty, and is still reported as such).
    for i in &again.issues {
        if let hvguest_core::kvp::record::PoolIssue::Flawed { flaws, .. } = i {
            assert_eq!(
                flaws.key,
                hvguest_core::kvp::record::FieldFlaw::None,
                "{i:?}"
            );
            assert_eq!(
                flaws.value,
                hvguest_core::kvp::record::FieldFlaw::None,
                "{i:?}"
            );
        }
    }
}

/// Which file a fault hits or an outside program writes.
#[derive(Debug, Arbitrary)]
struct FileChoice {
    pool: PoolId,
    journal: bool,
}

impl FileChoice {
    fn name(&self) -> String {
        let id = if self.journal {
            FileId::journal(self.pool)
        } else {
            FileId::pool(self.pool)
        };
        id.file_name()
    }
}

#[derive(Debug, Arbitrary)]
enum Step {
    /// A request as hosts send them: a small key space, so that GET, DELETE and
    /// ENUMERATE find what SET stored, and arbitrary pools otherwise. First, so that
    /// inputs of small bytes (the cheapest choices for `arbitrary`) are mostly these.
    Typical {
        op: u8,
        pool: PoolId,
        key: u8,
        value: u16,
    },
    /// The host sends a well-formed request.
    Read(Request),
    /// The host (or a broken kernel) sends any bytes.
    RawRead(Vec<u8>),
    Advance(u16),
    /// The next call of this kind (on this file, or any) fails.
    Fault {
        call: u8,
        file: Option<FileChoice>,
        error: IoError,
    },
    /// The file system is suspended (a VSS freeze) until `Thaw`.
    Freeze,
    Thaw,
    /// Another program appends one record to a pool file, under its lock.
    OutsideAppend {
        pool: PoolId,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// kill -9 (`power` false) or power loss with this crash seed; then a restart
    /// through recovery.
    Crash {
        power: bool,
        seed: u64,
    },
}

/// Whether one input got the daemon past recovery, to answering requests and to
/// making changes durable (measured over the corpus by `tests/fuzz_corpus.rs`).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvpReach {
    /// A pool was recovered at start-up (or after a crash).
    pub recovered: bool,
    /// A request was answered OK.
    pub served: bool,
    /// A SET or DELETE was answered OK: the change reached the pool file durably.
    pub persisted: bool,
}

fn typical(op: u8, pool: PoolId, key: u8, value: u16) -> Request {
    let key = Key::truncated(format!("key{}", key % 16).as_bytes());
    match op % 4 {
        0 => Request::Get { pool, key },
        1 => Request::Set {
            pool,
            key,
            value: Value::truncated(format!("value{value}").as_bytes()),
        },
        2 => Request::Delete { pool, key },
        _ => Request::Enumerate {
            pool,
            index: u32::from(value % 32),
        },
    }
}

/// The input's first byte picks the mode; this one answers effects arbitrarily.
const RAW_RESULTS_MODE: u8 = 0xA5;

/// The KVP daemon under arbitrary requests, faults, suspensions, outside writers and
/// crashes. By default the machine's effects run against the simulated file system
/// (`SimDaemon` in `KvpHarness`), so inputs get through recovery to serving and
/// persistence; inputs starting with [`RAW_RESULTS_MODE`] answer effects arbitrarily.
pub fn kvp_machine(data: &[u8]) {
    let _ = kvp_machine_reach(data);
}

/// [`kvp_machine`], reporting how far the input got.
#[doc(hidden)]
pub fn kvp_machine_reach(data: &[u8]) -> KvpReach {
    if let Some((&RAW_RESULTS_MODE, rest)) = data.split_first() {
        kvp_machine_raw_results(rest);
        return KvpReach::default();
    }
    let mut u = Unstructured::new(data);
    let mut fs = SimFs::new();
    // Up to two files the daemon starts with (a pool, or a journal to recover from).
    for _ in 0..2 {
        if let Ok(Some((file, bytes))) = u.arbitrary::<Option<(FileChoice, Vec<u8>)>>() {
            let name = file.name();
            if fs.write(&name, 0, &bytes).is_err() {
                break;
            }
        }
    }
    fs.sync_all();
    let mut h = KvpHarness::new(fs);
    let budget = h.config.reply_budget;
    let mut reach = KvpReach::default();
    // An exhausted `Unstructured` yields zeros forever: stop when the input ends.
    while !u.is_empty() {
        let Ok(step) = Step::arbitrary(&mut u) else {
            break;
        };
        match step {
            // The kernel talks to a daemon only once it has registered.
            Step::Read(_) | Step::Typical { .. } | Step::RawRead(_)
                if !h.daemon.machine.registered() => {}
            Step::Read(_) | Step::Typical { .. } => {
                let req = match step {
                    Step::Read(req) => req,
                    Step::Typical {
                        op,
                        pool,
                        key,
                        value,
                    } => typical(op, pool, key, value),
                    _ => unreachable!("matched above"),
                };
                let sent = h.now;
                let writes = h.send_raw(wire::encode_request(&req).to_vec());
                assert_eq!(writes.len(), 1, "one answer to {req:?}");
                assert!(
                    h.now <= sent.saturating_add(budget),
                    "answer after the deadline"
                );
                let reply = wire::decode_reply(req.op(), &writes[0][..]).expect("a reply");
                if reply.status() == Status::OK && !matches!(reply, Reply::Status(_)) {
                    reach.served = true;
                }
                if reply.status() == Status::OK && matches!(req.op(), Op::Set | Op::Delete) {
                    reach.served = true;
                    reach.persisted = true;
                }
            }
            Step::RawRead(bytes) => {
                let sent = h.now;
                let well_formed = wire::decode_request(&bytes).is_ok();
                let writes = h.send_raw(bytes);
                assert!(writes.len() <= 1, "{} answers to one read", writes.len());
                assert!(!well_formed || writes.len() == 1, "no answer to a request");
                assert!(
                    h.now <= sent.saturating_add(budget),
                    "answer after the deadline"
                );
            }
            Step::Advance(ms) => h.advance(Duration::from_millis(u64::from(ms))),
            Step::Fault { call, file, error } => {
                let call = match call % 6 {
                    0 => FsCall::Read,
                    1 => FsCall::Write,
                    2 => FsCall::SetLen,
                    3 => FsCall::Fsync,
                    4 => FsCall::Stat,
                    _ => FsCall::Lock,
                };
                let name = file.map(|f| f.name());
                h.fs.inject(call, name.as_deref(), error);
            }
            Step::Freeze => h.fs.frozen = true,
            Step::Thaw => h.thaw(),
            Step::OutsideAppend { pool, key, value } => {
                let name = FileId::pool(pool).file_name();
                let outside = Owner::Outside(1);
                if h.fs.lock(&name, outside).is_ok() {
                    let mut record = vec![0u8; POOL_RECORD_SIZE];
                    let k = key.len().min(511);
                    record[..k].copy_from_slice(&key[..k]);
                    let v = value.len().min(2047);
                    record[512..512 + v].copy_from_slice(&value[..v]);
                    let _ = h.fs.append(&name, &record);
                    h.fs.unlock(&name, outside);
                    h.daemon.unpark(h.now, &mut h.fs, &mut h.net);
                }
            }
            Step::Crash { power, seed } => h.crash_and_restart(&mut Prng::new(seed), power),
        }
    }
    reach.recovered = h.log.iter().any(|o| {
        matches!(
            o,
            crate::daemon::Observed::Event(Event::PoolRecovered { .. })
        )
    });
    reach
}

#[derive(Debug, Arbitrary)]
enum RawStep {
    Read(Request),
    RawRead(Vec<u8>),
    /// Answer the oldest outstanding effect with an arbitrary result.
    Answer(EffectResult),
    AnswerWrongId(u64),
    Advance(u16),
    Timer,
}

/// The machine alone, its effects answered with arbitrary results (even impossible ones:
/// data for a write, a stamp for a read): it never panics and never answers after its
/// deadline. Few inputs get through start-up recovery this way, so this is the minor
/// mode of the `kvp_machine` target.
fn kvp_machine_raw_results(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut now = Instant::from_millis(1);
    let mut m = KvpMachine::new(KvpConfig::default(), now, &test_info());
    let mut effects = std::collections::VecDeque::new();
    let mut unanswered: Option<Instant> = None;
    let budget = KvpConfig::default().reply_budget;
    let drain = |m: &mut KvpMachine,
                 effects: &mut std::collections::VecDeque<_>,
                 unanswered: &mut Option<Instant>,
                 now: Instant| {
        while let Some(o) = m.poll_output() {
            match o {
                Output::Effect { id, .. } => effects.push_back(id),
                Output::DeviceWrite(b) => {
                    assert_eq!(b.len(), KVP_MSG_SIZE);
                    if b[0] == 4 && b[1..].iter().all(|&x| x == 0) && !m.registered() {
                        continue;
                    }
                    if let Some(read_at) = unanswered.take() {
                        assert!(
                            now <= read_at.saturating_add(budget),
                            "reply after the deadline"
                        );
                    }
                }
                _ => {}
            }
        }
    };
    drain(&mut m, &mut effects, &mut unanswered, now);
    for _ in 0..256 {
        let Ok(step) = RawStep::arbitrary(&mut u) else {
            break;
        };
        match step {
            // The kernel hands over one request at a time.
            RawStep::Read(_) | RawStep::RawRead(_) if unanswered.is_some() => continue,
            RawStep::Read(req) => {
                unanswered = Some(now);
                m.handle(now, Input::DeviceRead(wire::encode_request(&req).to_vec()));
            }
            RawStep::RawRead(bytes) => {
                unanswered = Some(now);
                m.handle(now, Input::DeviceRead(bytes));
            }
            RawStep::Answer(result) => {
                let Some(id) = effects.pop_front() else {
                    continue;
                };
                m.handle(now, Input::EffectDone { id, result });
            }
            RawStep::AnswerWrongId(id) => {
                m.handle(
                    now,
                    Input::EffectDone {
                        id: hvguest_core::kvp::effect::EffectId(id | 1 << 63),
                        result: EffectResult::Done,
                    },
                );
            }
            RawStep::Advance(ms) => {
                let next = now.saturating_add(std::time::Duration::from_millis(u64::from(ms)));
                // Deliver every timer due before `next` at its instant, as a driver would.
                for _ in 0..8 {
                    let Some(t) = m.poll_timeout().filter(|&t| t <= next) else {
                        break;
                    };
                    now = now.max(t);
                    m.handle(now, Input::Timer);
                    drain(&mut m, &mut effects, &mut unanswered, now);
                }
                now = next;
            }
            RawStep::Timer => m.handle(now, Input::Timer),
        }
        drain(&mut m, &mut effects, &mut unanswered, now);
    }
}

/// The committed inputs of one target: its seed corpus (`fuzz/corpus/<target>/`) and
/// its crash reproducers (`fuzz/regressions/<target>/`); regular, non-hidden files
/// (so `.gitkeep` and libFuzzer's leftovers are skipped), sorted by name. The stable
/// corpus tests of this crate and of `hvguest-io` share it.
#[doc(hidden)]
pub fn committed_inputs(target: &str) -> (Vec<std::path::PathBuf>, Vec<std::path::PathBuf>) {
    let dir = fuzz_dir();
    (
        files_in(&dir.join("corpus").join(target)),
        files_in(&dir.join("regressions").join(target)),
    )
}

/// `fuzz/` in this source tree.
#[doc(hidden)]
pub fn fuzz_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs `body` over every committed input of `target`; panics naming the input that
/// made it panic, or if the seed corpus is empty (the test would check nothing).
#[doc(hidden)]
pub fn run_committed(target: &str, body: fn(&[u8])) {
    let (corpus, regressions) = committed_inputs(target);
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ has no inputs, so this test would check nothing"
    );
    for path in corpus.iter().chain(&regressions) {
        let data =
            std::fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            panic!(
                "fuzz target {target} panicked on {} ({} bytes)",
                path.display(),
                data.len()
            );
        }
    }
}

/// The names of the targets in `fuzz/fuzz_targets/` whose body is `<module>::<name>`
/// (`hvguest_sim::fuzz` or `hvguest_io::fuzzing`), sorted.
#[doc(hidden)]
pub fn targets_calling(module: &str) -> Vec<String> {
    let mut found: Vec<String> = files_in(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.strip_suffix(".rs")?;
            let text = std::fs::read_to_string(path).ok()?;
            text.contains(&format!("{module}::{name}(data)"))
                .then(|| name.to_owned())
        })
        .collect();
    found.sort();
    found
}

fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(err) => panic!("list {}: {err}", dir.display()),
    };
    let mut files: Vec<std::path::PathBuf> = entries
        .map(|entry| entry.unwrap_or_else(|err| panic!("list {}: {err}", dir.display())))
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .map(|entry| entry.path())
        .collect();
    files.sort();
    files
}
