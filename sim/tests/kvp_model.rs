//! Property tests: the KVP machine (through the simulated process) against a plain
//! reference model, a `Vec` of pairs per pool with the stock daemon's semantics
//! (first match, update in place, append, delete by shifting). Our DELETE moves records
//! instead of shifting, so enumerations are compared as multisets; GET must agree
//! exactly, duplicates included.

use proptest::prelude::*;

use hvguest_core::kvp::effect::{FileId, IoError};
use hvguest_core::kvp::record::{decode_pool, Record};
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{PoolId, Reply, Request, Status};
use hvguest_sim::fs::{FsCall, SimFs};
use hvguest_sim::harness::KvpHarness;
use hvguest_sim::prng::Prng;

#[derive(Clone, Debug)]
enum T {
    Set(PoolId, u8, String),
    Delete(PoolId, u8),
    Get(PoolId, u8),
    Enumerate(PoolId),
    /// Power loss between requests and a restart.
    Crash(u64),
    /// Another program appends to the guest pool (duplicates allowed).
    OutsideAppend(u8, String),
    /// The next call of this kind fails with EIO.
    Fault(FsCall),
}

fn pool() -> impl Strategy<Value = PoolId> {
    prop::sample::select(vec![PoolId::External, PoolId::Guest, PoolId::AutoExternal])
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,6}",
        "[\u{e9}\u{4e2d}\u{1f600}a-z]{1,4}",
        Just("x".repeat(2047)),
    ]
}

fn transition() -> impl Strategy<Value = T> {
    prop_oneof![
        4 => (pool(), 0u8..6, value()).prop_map(|(p, k, v)| T::Set(p, k, v)),
        2 => (pool(), 0u8..6).prop_map(|(p, k)| T::Delete(p, k)),
        3 => (pool(), 0u8..6).prop_map(|(p, k)| T::Get(p, k)),
        1 => pool().prop_map(T::Enumerate),
        1 => any::<u64>().prop_map(T::Crash),
        1 => (0u8..6, value()).prop_map(|(k, v)| T::OutsideAppend(k, v)),
        1 => prop::sample::select(vec![FsCall::Write, FsCall::Fsync, FsCall::SetLen, FsCall::Read, FsCall::Stat])
            .prop_map(T::Fault),
    ]
}

fn key(i: u8) -> Key {
    // Keys of different lengths and one at the maximum.
    match i {
        5 => Key::new(&[b'K'; 511]).unwrap(),
        _ => Key::new(format!("key{i}").as_bytes()).unwrap(),
    }
}

#[derive(Default, Debug)]
struct Model {
    pools: [Vec<Record>; 5],
}

impl Model {
    fn get(&self, p: PoolId, k: &Key) -> Option<&Value> {
        self.pools[p.index()]
            .iter()
            .find(|r| r.key == *k)
            .map(|r| &r.value)
    }
    fn set(&mut self, p: PoolId, k: Key, v: Value) {
        let pool = &mut self.pools[p.index()];
        match pool.iter_mut().find(|r| r.key == k) {
            Some(r) => r.value = v,
            None => pool.push(Record::new(k, v)),
        }
    }
    fn delete(&mut self, p: PoolId, k: &Key) -> bool {
        let pool = &mut self.pools[p.index()];
        match pool.iter().position(|r| r.key == *k) {
            Some(i) => {
                pool.remove(i);
                true
            }
            None => false,
        }
    }
}

fn sorted(mut v: Vec<Record>) -> Vec<Record> {
    v.sort_by(|a, b| (&a.key, &a.value).cmp(&(&b.key, &b.value)));
    v
}

fn disk(h: &KvpHarness, p: PoolId) -> Vec<Record> {
    decode_pool(h.fs.contents(&FileId::pool(p).file_name())).records
}

fn run(ts: Vec<T>) -> Result<(), TestCaseError> {
    let mut h = KvpHarness::new(SimFs::new());
    let mut m = Model::default();
    // Reads may fail (E_FAIL) once an I/O error was injected, never otherwise.
    let mut faulted = false;
    for t in ts {
        match t {
            T::Set(p, k, v) => {
                let val = Value::new(v.as_bytes()).unwrap();
                let r = h.request(&Request::Set {
                    pool: p,
                    key: key(k),
                    value: val.clone(),
                });
                h.settle();
                match r {
                    Some(Reply::Status(Status::OK)) => m.set(p, key(k), val),
                    Some(Reply::Status(Status::E_FAIL)) => {
                        // In doubt: the change is all there or not at all.
                        if sorted(disk(&h, p)) != sorted(m.pools[p.index()].clone()) {
                            m.set(p, key(k), val);
                        }
                    }
                    other => prop_assert!(false, "SET: {other:?}"),
                }
            }
            T::Delete(p, k) => {
                let r = h.request(&Request::Delete {
                    pool: p,
                    key: key(k),
                });
                h.settle();
                match r {
                    Some(Reply::Status(Status::OK)) => {
                        prop_assert!(m.delete(p, &key(k)), "deleted a missing key")
                    }
                    Some(Reply::Status(Status::S_CONT)) => {
                        prop_assert!(m.get(p, &key(k)).is_none())
                    }
                    Some(Reply::Status(Status::E_FAIL)) => {
                        if sorted(disk(&h, p)) != sorted(m.pools[p.index()].clone()) {
                            m.delete(p, &key(k));
                        }
                    }
                    other => prop_assert!(false, "DELETE: {other:?}"),
                }
            }
            T::Get(p, k) => {
                let want = m.get(p, &key(k)).cloned();
                match h.request(&Request::Get {
                    pool: p,
                    key: key(k),
                }) {
                    Some(Reply::Value(v)) => prop_assert_eq!(Some(v), want),
                    Some(Reply::Status(Status::S_CONT)) => prop_assert_eq!(None, want),
                    Some(Reply::Status(Status::E_FAIL)) if faulted => {}
                    other => prop_assert!(false, "GET: {other:?}"),
                }
            }
            T::Enumerate(p) => {
                let mut got = Vec::new();
                for index in 0.. {
                    match h.request(&Request::Enumerate { pool: p, index }) {
                        Some(Reply::Entry { key, value }) => got.push(Record::new(key, value)),
                        Some(Reply::Status(Status::S_CONT)) => break,
                        Some(Reply::Status(Status::E_FAIL)) if faulted => {
                            got.clear();
                            break;
                        }
                        other => prop_assert!(false, "ENUMERATE: {other:?}"),
                    }
                }
                if !got.is_empty() || !faulted {
                    prop_assert_eq!(sorted(got), sorted(m.pools[p.index()].clone()));
                }
            }
            T::Crash(seed) => {
                h.crash_and_restart(&mut Prng::new(seed), true);
            }
            T::OutsideAppend(k, v) => {
                let r = Record::new(key(k), Value::new(v.as_bytes()).unwrap());
                let name = FileId::pool(PoolId::Guest).file_name();
                // An injected fault may hit the other program instead of us.
                if h.fs.append(&name, &r.encode()).is_ok() {
                    m.pools[PoolId::Guest.index()].push(r);
                }
                // ...which retries its fsync, as a careful writer does (faults are one-shot).
                while h.fs.fsync(&name).is_err() {}
            }
            T::Fault(call) => {
                faulted = true;
                h.fs.inject(call, None, IoError::EIO);
            }
        }
        for p in [PoolId::External, PoolId::Guest, PoolId::AutoExternal] {
            if h.daemon.machine.is_idle() && h.daemon.machine.pool_ready(p) {
                // Memory and disk agree once idle (unless an outside append is pending a
                // refresh, which only the guest pool gets).
                if p != PoolId::Guest {
                    prop_assert_eq!(h.daemon.machine.pool(p).records(), &disk(&h, p)[..]);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    // 96 cases by default (seconds in debug builds); PROPTEST_CASES=N searches deeper.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    #[test]
    fn machine_matches_reference_model(ts in prop::collection::vec(transition(), 1..40)) {
        run(ts)?;
    }

    #[test]
    fn random_input_sequences_never_panic_and_answer_each_read_once(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        hvguest_sim::fuzz::kvp_machine(&data);
    }

    #[test]
    fn random_device_messages_never_panic(data in prop::collection::vec(any::<u8>(), 0..8000)) {
        hvguest_sim::fuzz::kvp_message(&data);
    }
}
