//! One pool in memory: records in file order, a first-match index, and the planning of
//! SET and DELETE as slot writes.
//!
//! Semantics kept from the stock daemon (docs/protocol/kvp.md §3.5): the first exact,
//! case-sensitive match wins; SET updates in place, else appends; DELETE removes the
//! first match; ENUMERATE walks file order. One deliberate change: DELETE fills the hole
//! by moving a later record into it instead of shifting the whole tail, so that its cost
//! does not grow with the pool. The move is chosen so that every key's first match still
//! has the same value (see [`Pool::plan_delete`]); only the enumeration order changes,
//! which no host or pool reader relies on.

use std::collections::BTreeMap;

use crate::kvp::record::{DecodedPool, PoolIssue, Record};
use crate::kvp::text::{Key, Value};
use crate::limits::{MAX_POOL_RECORDS, MAX_REPORTED_POOL_ISSUES, POOL_RECORD_SIZE};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    records: Vec<Record>,
    /// By key hash, the slots holding keys with that hash, ascending: a key's first
    /// slot among them is its match.
    index: BTreeMap<u64, Slots>,
    /// Whole records in the file, which may exceed what we hold (`records.len()`).
    file_records: usize,
}

/// A key's place in the index: its FNV-1a hash. A lookup compares integers held in
/// the tree's nodes and reads record keys only for the slots under one hash (almost
/// always the key's own), instead of following a pointer to the bytes of every key it
/// passes (about 40 at 10,000 records); and the index holds no copy of any key. The
/// order is deterministic, and nothing iterates the index but its own check.
fn key_hash(key: &Key) -> u64 {
    key.as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// The slots of the records whose keys have one hash, ascending: nearly always a
/// single slot, held without an allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Slots {
    One(u32),
    /// Two or more.
    Many(Vec<u32>),
}

impl Slots {
    fn as_slice(&self) -> &[u32] {
        match self {
            Slots::One(s) => std::slice::from_ref(s),
            Slots::Many(v) => v,
        }
    }

    fn insert(&mut self, slot: u32) {
        match self {
            Slots::One(s) => {
                let mut v = vec![*s, slot];
                v.sort_unstable();
                *self = Slots::Many(v);
            }
            Slots::Many(v) => {
                let at = v.partition_point(|&s| s < slot);
                v.insert(at, slot);
            }
        }
    }

    /// Removes `slot`; true when none is left.
    fn remove(&mut self, slot: u32) -> bool {
        match self {
            Slots::One(s) => {
                assert_eq!(*s, slot, "indexed slot");
                true
            }
            Slots::Many(v) => {
                let at = v.iter().position(|&s| s == slot).expect("indexed slot");
                v.remove(at);
                if let [only] = v[..] {
                    *self = Slots::One(only);
                }
                false
            }
        }
    }
}

/// One record written at one slot, with what the slot held before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotWrite {
    pub slot: u32,
    pub post: Record,
}

/// A change to a pool file: slot writes plus a change of length by at most one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    pub old_records: u32,
    pub new_records: u32,
    pub writes: Vec<SlotWrite>,
}

impl Mutation {
    pub fn old_len(&self) -> u64 {
        u64::from(self.old_records) * POOL_RECORD_SIZE as u64
    }
    pub fn new_len(&self) -> u64 {
        u64::from(self.new_records) * POOL_RECORD_SIZE as u64
    }
    /// The slot a shrinking mutation cuts off.
    pub fn dropped_slot(&self) -> Option<u32> {
        (self.new_records < self.old_records).then_some(self.new_records)
    }
    /// Slots whose current bytes the journal must hold as pre-images.
    pub fn touched_existing_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.writes
            .iter()
            .map(|w| w.slot)
            .filter(|&s| s < self.old_records)
            .chain(self.dropped_slot())
    }
}

/// Result of planning a host mutation against the current pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to write; the reply is already known.
    Done(Outcome),
    Write(Mutation),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied, or already true.
    Ok,
    /// DELETE of a key that is not there.
    NotFound,
    /// The pool holds as many records as we allow (or as the host may fill).
    Full,
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    /// Builds the pool from a decoded file; returns duplicate keys as issues.
    pub fn from_decoded(decoded: DecodedPool) -> (Pool, Vec<PoolIssue>) {
        let mut pool = Pool {
            records: decoded.records,
            index: BTreeMap::new(),
            file_records: decoded.total_records,
        };
        let mut issues = Vec::new();
        let mut unreported = 0;
        for i in 0..pool.records.len() {
            let key = &pool.records[i].key;
            if let Some(first) = pool.first_slot(key) {
                if issues.len() < MAX_REPORTED_POOL_ISSUES {
                    issues.push(PoolIssue::Duplicate {
                        index: i,
                        first: first as usize,
                    });
                } else {
                    unreported += 1;
                }
            }
            pool.index_slot(i as u32);
        }
        if unreported > 0 {
            issues.push(PoolIssue::NotReported { count: unreported });
        }
        pool.check();
        (pool, issues)
    }

    pub fn from_records(records: Vec<Record>) -> Pool {
        let total_records = records.len();
        Pool::from_decoded(DecodedPool {
            records,
            total_records,
            ..Default::default()
        })
        .0
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whole records in the file, including any beyond what we hold.
    pub fn file_records(&self) -> usize {
        self.file_records
    }

    fn first_slot(&self, key: &Key) -> Option<u32> {
        let slots = self.index.get(&key_hash(key))?;
        slots
            .as_slice()
            .iter()
            .copied()
            .find(|&s| self.records[s as usize].key == *key)
    }

    /// Indexes the record now at `slot` under its key's hash.
    fn index_slot(&mut self, slot: u32) {
        let hash = key_hash(&self.records[slot as usize].key);
        match self.index.get_mut(&hash) {
            Some(slots) => slots.insert(slot),
            None => {
                self.index.insert(hash, Slots::One(slot));
            }
        }
    }

    /// First match.
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.first_slot(key)
            .map(|s| &self.records[s as usize].value)
    }

    /// Record at an enumeration index (file order).
    pub fn entry(&self, index: u32) -> Option<&Record> {
        self.records.get(index as usize)
    }

    /// Whether we hold every record of the file; if not we never grow or shrink it.
    pub fn complete(&self) -> bool {
        self.file_records == self.records.len()
    }

    /// SET as a tool does it: a pool may grow to [`MAX_POOL_RECORDS`].
    pub fn plan_set(&self, key: &Key, value: &Value) -> Plan {
        self.plan_set_within(key, value, MAX_POOL_RECORDS)
    }

    /// SET that may append only while the file holds fewer than `max_records` records
    /// (the host's budget, `limits::HOST_POOL_RECORDS`); an update in place is always
    /// planned, since it grows nothing.
    pub fn plan_set_within(&self, key: &Key, value: &Value, max_records: usize) -> Plan {
        let n = self.records.len() as u32;
        let post = Record::new(key.clone(), value.clone());
        match self.first_slot(key) {
            Some(s) if self.records[s as usize].value == *value => Plan::Done(Outcome::Ok),
            Some(slot) => Plan::Write(Mutation {
                old_records: n,
                new_records: n,
                writes: vec![SlotWrite { slot, post }],
            }),
            None if !self.complete() || self.records.len() >= max_records.min(MAX_POOL_RECORDS) => {
                Plan::Done(Outcome::Full)
            }
            None => Plan::Write(Mutation {
                old_records: n,
                new_records: n + 1,
                writes: vec![SlotWrite { slot: n, post }],
            }),
        }
    }

    pub fn plan_delete(&self, key: &Key) -> Plan {
        match self.first_slot(key) {
            None => Plan::Done(Outcome::NotFound),
            Some(_) if !self.complete() => Plan::Done(Outcome::Full),
            Some(slot) => Plan::Write(self.plan_remove_slot(slot)),
        }
    }

    /// Removes one slot by moving the last record into it (or, when the last record's
    /// key has an earlier duplicate after the hole, by moving that duplicate into the
    /// hole and the last record into the duplicate's place), so that the first match of
    /// every key keeps its value.
    pub fn plan_remove_slot(&self, hole: u32) -> Mutation {
        let n = self.records.len() as u32;
        assert!(hole < n, "slot {hole} outside a pool of {n}");
        let last = n - 1;
        let mut writes = Vec::new();
        if hole != last {
            let moving = &self.records[last as usize];
            // The first slot of the moving key other than the hole and the last slot.
            let earliest = self.index[&key_hash(&moving.key)]
                .as_slice()
                .iter()
                .copied()
                .find(|&s| s != hole && s != last && self.records[s as usize].key == moving.key);
            match earliest {
                Some(f) if f > hole => {
                    writes.push(SlotWrite {
                        slot: hole,
                        post: self.records[f as usize].clone(),
                    });
                    writes.push(SlotWrite {
                        slot: f,
                        post: moving.clone(),
                    });
                }
                _ => writes.push(SlotWrite {
                    slot: hole,
                    post: moving.clone(),
                }),
            }
        }
        Mutation {
            old_records: n,
            new_records: last,
            writes,
        }
    }

    /// Applies a mutation the disk now holds.
    pub fn apply(&mut self, m: &Mutation) {
        assert_eq!(
            m.old_records as usize,
            self.records.len(),
            "mutation planned on another pool"
        );
        for w in &m.writes {
            let slot = w.slot as usize;
            if slot == self.records.len() {
                self.records.push(w.post.clone());
            } else {
                let old = std::mem::replace(&mut self.records[slot], w.post.clone());
                self.unindex(&old.key, w.slot);
            }
            self.index_slot(w.slot);
        }
        if let Some(dropped) = m.dropped_slot() {
            let old = self
                .records
                .pop()
                .expect("a shrinking mutation has a last record");
            self.unindex(&old.key, dropped);
        }
        self.file_records = self.records.len();
        debug_assert_eq!(self.records.len(), m.new_records as usize);
        self.check();
    }

    fn unindex(&mut self, key: &Key, slot: u32) {
        let hash = key_hash(key);
        let slots = self.index.get_mut(&hash).expect("indexed key");
        if slots.remove(slot) {
            self.index.remove(&hash);
        }
    }

    /// The index agrees with the records (debug builds; the sim runs them).
    fn check(&self) {
        if cfg!(debug_assertions) && self.records.len() <= 4096 {
            let mut count = 0;
            for (&hash, slots) in &self.index {
                let slots = slots.as_slice();
                assert!(!slots.is_empty() && slots.windows(2).all(|w| w[0] < w[1]));
                for &s in slots {
                    assert_eq!(key_hash(&self.records[s as usize].key), hash);
                    count += 1;
                }
            }
            assert_eq!(count, self.records.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_under_one_hash_stay_ascending_and_collapse_to_one() {
        let mut s = Slots::One(7);
        s.insert(3);
        s.insert(9);
        s.insert(5);
        assert_eq!(s.as_slice(), [3, 5, 7, 9]);
        assert!(!s.remove(7));
        assert!(!s.remove(3));
        assert!(!s.remove(9));
        assert_eq!(s, Slots::One(5));
        assert!(s.remove(5), "the last one");
    }

    fn k(s: &str) -> Key {
        Key::new(s.as_bytes()).unwrap()
    }
    fn v(s: &str) -> Value {
        Value::new(s.as_bytes()).unwrap()
    }
    fn pool(pairs: &[(&str, &str)]) -> Pool {
        Pool::from_records(pairs.iter().map(|(a, b)| Record::new(k(a), v(b))).collect())
    }

    #[test]
    fn duplicates_past_the_cap_are_counted_not_dropped() {
        let n = MAX_REPORTED_POOL_ISSUES + 5;
        let records = vec![Record::new(k("a"), v("1")); n + 1];
        let decoded = crate::kvp::record::decode_pool(&crate::kvp::record::encode_pool(&records));
        let (p, issues) = Pool::from_decoded(decoded);
        assert_eq!(p.len(), n + 1);
        assert_eq!(issues.len(), MAX_REPORTED_POOL_ISSUES + 1);
        assert_eq!(issues.last(), Some(&PoolIssue::NotReported { count: 5 }));
    }
    fn run(p: &mut Pool, plan: Plan) {
        if let Plan::Write(m) = plan {
            p.apply(&m);
        }
    }

    #[test]
    fn set_updates_first_match_else_appends() {
        let mut p = pool(&[("a", "1"), ("b", "2"), ("a", "3")]);
        assert_eq!(p.get(&k("a")), Some(&v("1")));
        let plan = p.plan_set(&k("a"), &v("9"));
        assert!(matches!(&plan, Plan::Write(m) if m.writes[0].slot == 0 && m.new_records == 3));
        run(&mut p, plan);
        assert_eq!(p.get(&k("a")), Some(&v("9")));
        assert_eq!(p.entry(2).unwrap().value, v("3"));
        let plan = p.plan_set(&k("c"), &v("4"));
        run(&mut p, plan);
        assert_eq!(p.len(), 4);
        assert_eq!(p.plan_set(&k("c"), &v("4")), Plan::Done(Outcome::Ok));
    }

    #[test]
    fn a_budget_stops_appends_not_updates() {
        let p = pool(&[("a", "1"), ("b", "2")]);
        assert_eq!(
            p.plan_set_within(&k("c"), &v("3"), 2),
            Plan::Done(Outcome::Full)
        );
        assert!(matches!(
            p.plan_set_within(&k("a"), &v("9"), 2),
            Plan::Write(m) if m.new_records == 2
        ));
        assert!(matches!(
            p.plan_set_within(&k("c"), &v("3"), 3),
            Plan::Write(m) if m.new_records == 3
        ));
        // Never past what we hold, whatever the budget.
        assert!(matches!(
            p.plan_set_within(&k("c"), &v("3"), usize::MAX),
            Plan::Write(_)
        ));
    }

    #[test]
    fn delete_keeps_every_first_match() {
        // Deleting "a"@0 must not let the last record "b"=late become b's first match.
        let mut p = pool(&[("a", "1"), ("b", "early"), ("c", "x"), ("b", "late")]);
        let plan = p.plan_delete(&k("a"));
        run(&mut p, plan);
        assert_eq!(p.get(&k("a")), None);
        assert_eq!(p.get(&k("b")), Some(&v("early")));
        assert_eq!(p.get(&k("c")), Some(&v("x")));
        assert_eq!(p.len(), 3);
        // Deleting a key whose later duplicate is the last record.
        let mut p = pool(&[("a", "1"), ("a", "2"), ("z", "0"), ("a", "3")]);
        let plan = p.plan_delete(&k("a"));
        run(&mut p, plan);
        assert_eq!(p.get(&k("a")), Some(&v("2")));
        assert_eq!(p.plan_delete(&k("q")), Plan::Done(Outcome::NotFound));
    }

    #[test]
    fn delete_last_only_truncates() {
        let p = pool(&[("a", "1"), ("b", "2")]);
        let Plan::Write(m) = p.plan_delete(&k("b")) else {
            panic!("expected a write")
        };
        assert!(m.writes.is_empty());
        assert_eq!(m.dropped_slot(), Some(1));
    }
}
