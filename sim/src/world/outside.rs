//! Other programs writing the pool files the way real ones do (docs/protocol/kvp.md §6): cloud-init and
//! azure-init append under the lock, and may die mid-append; `hv_kvp_cmd` rewrites a
//! record in place (same size: only bytes change) and deletes by copying the later
//! records down and truncating; cloud-init empties the file at boot. None of them knows
//! of our journal. Records are parsed and built here from the spec's format (docs/protocol/kvp.md §3.2: a
//! 512-byte key and a 2048-byte value, NUL-padded), not with the core's record code.

use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{PoolId, Reply, Request, Status};
use hvguest_core::limits::SECTOR_SIZE;

use super::{path, World};
use crate::fs::Owner;
use crate::host::OUTSIDE_PREFIX;
use crate::trace;

/// A pool record: 512 + 2048 bytes (docs/protocol/kvp.md §3.2).
pub const REC: usize = 2560;

/// What another program does to a pool file.
#[derive(Clone, Debug, PartialEq)]
pub enum OutsideOp {
    /// Appends a record (cloud-init, azure-init).
    Append { key: Key, value: Value },
    /// Dies after writing only the first `bytes` of an appended record.
    TornAppend { key: Key, value: Value, bytes: u64 },
    /// Overwrites the value of the first record with `key`, in place.
    Rewrite { key: Key, value: Value },
    /// Removes the first record with `key`: later records copied down, file truncated.
    Remove { key: Key },
    /// Empties the file (cloud-init at boot).
    Truncate,
    /// Leaves an entry with a valid CRC in the pool's empty journal that is not one of
    /// ours (a stranger, or a corrupt entry): `defect` 0 names another pool, 1 writes a
    /// slot far past the end, 2 grows the file by a thousand records, 3 has lengths
    /// that are not whole records. Its post image would set "hot0" to "STRANGER".
    StrangerJournal { defect: u8 },
}

/// A journal entry that is not one of ours for `pool` (see `OutsideOp::StrangerJournal`),
/// over a pool file of `whole` bytes. Encoded with the core's journal code: this is
/// input for the daemon, not an expectation; the checks that catch a recovery acting
/// on it are the host's model ("hot0" is never "STRANGER") and the record invariants.
fn stranger_entry(pool: PoolId, pool_bytes: &[u8], defect: u8) -> Vec<u8> {
    use hvguest_core::kvp::journal::{JournalEntry, JournalWrite};
    let whole = (pool_bytes.len() - pool_bytes.len() % REC) as u64;
    let records = whole / REC as u64;
    let record = |b: &[u8]| -> Box<[u8; REC]> {
        let mut r = Box::new([0u8; REC]);
        r.copy_from_slice(b);
        r
    };
    let post = record(&record_bytes(b"hot0", b"STRANGER"));
    // In place over slot 0 when there is one (its current bytes as the pre image, so
    // only the entry's own defect can stop recovery), else an append.
    let (slot, pre, old_len, new_len) = if records > 0 {
        (0, record(&pool_bytes[..REC]), whole, whole)
    } else {
        (0, Box::new([0u8; REC]), 0, REC as u64)
    };
    let mut e = JournalEntry {
        pool,
        old_len,
        new_len,
        writes: vec![JournalWrite { slot, pre, post }],
        dropped: None,
    };
    match defect {
        0 => {
            e.pool = if pool == PoolId::External {
                PoolId::Guest
            } else {
                PoolId::External
            }
        }
        1 => e.writes[0].slot = u32::try_from(records + 1000).unwrap_or(u32::MAX),
        2 => {
            e.old_len = whole;
            e.new_len = whole + 1000 * REC as u64;
            e.writes[0].slot = u32::try_from(records).unwrap_or(u32::MAX);
            *e.writes[0].pre = [0u8; REC];
        }
        _ => e.new_len = e.old_len + 1,
    }
    e.encode()
}

/// Builds a record as the spec lays it out.
pub fn record_bytes(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; REC];
    r[..key.len()].copy_from_slice(key);
    r[512..512 + value.len()].copy_from_slice(value);
    r
}

fn field(b: &[u8]) -> &[u8] {
    let n = b.iter().position(|&x| x == 0).unwrap_or(b.len());
    &b[..n]
}

/// The whole records of a pool file as (key, value) text, in file order.
pub fn parse(bytes: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    bytes
        .chunks_exact(REC)
        .map(|r| (field(&r[..512]).to_vec(), field(&r[512..]).to_vec()))
        .collect()
}

/// Whether `rec` is a torn write of `post` over `pre`: every 512-byte sector is one of
/// theirs (a power loss keeps or loses whole sectors), and it is neither whole.
fn is_mix(rec: &[u8], pre: &[u8], post: &[u8]) -> bool {
    rec != pre
        && rec != post
        && rec
            .chunks(SECTOR_SIZE)
            .zip(pre.chunks(SECTOR_SIZE).zip(post.chunks(SECTOR_SIZE)))
            .all(|(r, (a, b))| r == a || r == b)
}

/// The first match of `key` in a pool file: what a GET must answer (docs/protocol/kvp.md §3.5).
/// The records are read in place, as [`parse`] reads them, and only the value found is
/// copied: every GET of another program's key and every checkpoint asks this.
pub fn first_match(bytes: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    bytes
        .chunks_exact(REC)
        .find(|r| field(&r[..512]) == key)
        .map(|r| field(&r[512..]).to_vec())
}

impl World {
    /// Carries out one outside program's change under the pool file's lock; skipped
    /// when the lock is held or the file system is suspended (the program would wait;
    /// here it gives up, which keeps the world's clock moving).
    pub(super) fn outside(&mut self, pool: PoolId, op: OutsideOp) {
        let name = path(pool);
        let waits = matches!(op, OutsideOp::Append { .. } | OutsideOp::Rewrite { .. });
        if self.fs.lock_holder(name).is_some() && !self.fs.frozen && waits {
            if self.outside_waiting.is_none() {
                self.log("outside", &format!("{op:?} waits for the lock"));
                self.outside_waiting = Some((pool, op));
            } else {
                self.log("outside", &format!("{op:?} skipped: another one waits"));
            }
            return;
        }
        if self.fs.lock_holder(name).is_some() || self.fs.frozen {
            self.log("outside", &format!("{op:?} skipped: locked or frozen"));
            return;
        }
        let me = Owner::Outside(2);
        if self.fs.lock(name, me).is_err() {
            return;
        }
        // Faults injected for the daemon are not for other programs to hit.
        let faults = self.fs.take_faults();
        let bytes = self.fs.contents(name).to_vec();
        if pool == PoolId::Guest {
            // A GET with the daemon now may have read the file as it is before this.
            if let Some(o) = self
                .outstanding
                .as_mut()
                .filter(|o| o.delivered_at.is_some())
            {
                if o.guest_pool_before_outside.len() < super::EARLIER_GUEST_POOLS {
                    o.guest_pool_before_outside.push(bytes.clone());
                }
            }
        }
        let whole = bytes.len() - bytes.len() % REC;
        let text = |k: &Key| trace::text(k.as_bytes());
        let done = match &op {
            // azure-init refuses a file that is not whole records; so do we, which
            // keeps a torn tail at the end where the daemon must cut it.
            OutsideOp::Append { .. } | OutsideOp::TornAppend { .. } if bytes.len() % REC != 0 => {
                None
            }
            OutsideOp::Append { key, value } => {
                let r = record_bytes(key.as_bytes(), value.as_bytes());
                self.fs.write(name, bytes.len() as u64, &r).ok().map(|_| {
                    self.stats.appends += 1;
                    if pool == PoolId::Guest
                        && key.as_bytes().starts_with(OUTSIDE_PREFIX.as_bytes())
                    {
                        self.outside_records.push((key.clone(), value.clone()));
                    }
                    format!("append {} = {}", text(key), trace::text(value.as_bytes()))
                })
            }
            OutsideOp::TornAppend {
                key,
                value,
                bytes: n,
            } => {
                let r = record_bytes(key.as_bytes(), value.as_bytes());
                let n = (*n as usize).clamp(1, REC - 1);
                self.fs
                    .write(name, bytes.len() as u64, &r[..n])
                    .ok()
                    .map(|_| {
                        self.outside_torn = true;
                        format!("dies mid-append of {}: {n} bytes written", text(key))
                    })
            }
            OutsideOp::Rewrite { key, value } => {
                let slot = parse(&bytes[..whole])
                    .iter()
                    .position(|(k, _)| k == key.as_bytes());
                slot.and_then(|s| {
                    let r = record_bytes(key.as_bytes(), value.as_bytes());
                    self.fs.write(name, (s * REC) as u64, &r).ok()?;
                    for o in self.outside_records.iter_mut().filter(|o| o.0 == *key) {
                        o.1 = value.clone();
                    }
                    self.model.rewritten(pool, key, value.clone());
                    Some(format!(
                        "rewrite slot {s}: {} = {}",
                        text(key),
                        trace::text(value.as_bytes())
                    ))
                })
            }
            OutsideOp::Remove { key } => {
                if let Some(r) = self.pending_growth_post() {
                    self.residue.push(r);
                }
                let pairs = self.pending_in_place_writes();
                let slot = parse(&bytes[..whole])
                    .iter()
                    .position(|(k, _)| k == key.as_bytes());
                slot.and_then(|s| {
                    // A torn in-place write of ours among the records this copies down:
                    // recovery will not find it where it moves (see `torn_residue`).
                    let removed = &bytes[s * REC..(s + 1) * REC];
                    self.torn_residue.retain(|r| r != removed);
                    for r in bytes[(s + 1) * REC..whole].chunks_exact(REC) {
                        if pairs.iter().any(|(pre, post)| is_mix(r, pre, post))
                            && !self.torn_residue.iter().any(|t| t == r)
                        {
                            self.torn_residue.push(r.to_vec());
                        }
                    }
                    // Copy every later record down by one, then cut the last.
                    let later = bytes[(s + 1) * REC..whole].to_vec();
                    if !later.is_empty() {
                        self.fs.write(name, (s * REC) as u64, &later).ok()?;
                    }
                    self.fs.set_len(name, (whole - REC) as u64).ok()?;
                    self.outside_records.retain(|o| o.0 != *key);
                    // A crashed daemon's half-made DELETE may have copied the record
                    // (two copies): removing the first leaves the other, which is no
                    // recovery's doing. Only a single copy must stay gone.
                    let copies = parse(&bytes[..whole])
                        .iter()
                        .filter(|(k, _)| k == key.as_bytes())
                        .count();
                    if copies == 1 {
                        self.outside_removed.push(key.clone());
                    }
                    Some(format!("remove slot {s}: {}", text(key)))
                })
            }
            OutsideOp::StrangerJournal { defect } => {
                let journal = crate::fs::name_of(hvguest_core::kvp::effect::FileId::journal(pool));
                let entry = stranger_entry(pool, &bytes, *defect);
                let empty = self.fs.contents(journal).is_empty();
                empty
                    .then(|| self.fs.write(journal, 0, &entry).ok())
                    .flatten()
                    .map(|_| {
                        self.fs.flush(journal);
                        // Reads fail until a recovery clears it.
                        self.errors_possible = true;
                        format!("leaves a stranger's journal entry (defect {defect})")
                    })
            }
            OutsideOp::Truncate => self.fs.set_len(name, 0).ok().map(|_| {
                self.emptied(pool);
                self.residue.clear();
                self.torn_residue.clear();
                if pool == PoolId::Guest {
                    self.outside_records.clear();
                }
                "truncate".to_string()
            }),
        };
        if let Some(what) = &done {
            self.fs.flush(name);
            // Records moved under an ENUMERATE walk: its completeness is not checked.
            if matches!(op, OutsideOp::Remove { .. } | OutsideOp::Truncate) {
                if let Some(w) = self.walk.as_mut() {
                    w.disturbed = true;
                }
            }
            self.log("outside", &format!("{what} in {name}"));
        } else {
            self.log("outside", &format!("{op:?} on {name}: nothing done"));
        }
        self.fs.unlock(name, me);
        self.fs.restore_faults(faults);
    }

    /// Picks a random outside change of the guest pool: mostly appends, sometimes a
    /// torn append, an in-place rewrite, a delete, a boot-time truncation or a
    /// stranger's journal entry.
    /// An append of a fresh outside key, or a same-size rewrite of a known one, drawn
    /// from the waiting writers' own stream.
    pub(super) fn waiting_outside(&mut self) -> OutsideOp {
        self.outside_seq += 1;
        let seq = self.outside_seq;
        let value =
            Value::new(format!("{{\"result\":\"waited\",\"n\":{seq}}}").as_bytes()).expect("short");
        let w = &mut self.waiting_prng;
        if !self.outside_records.is_empty() && w.chance(1, 3) {
            let key = w.choose(&self.outside_records).0.clone();
            return OutsideOp::Rewrite { key, value };
        }
        let key = Key::new(format!("{OUTSIDE_PREFIX}{}|wait|{seq}", self.generation).as_bytes())
            .expect("short");
        OutsideOp::Append { key, value }
    }

    pub(super) fn random_outside(&mut self) -> OutsideOp {
        self.outside_seq += 1;
        let seq = self.outside_seq;
        let f = &mut self.faults_prng;
        let fresh = Key::new(format!("{OUTSIDE_PREFIX}{}|event|{seq}", self.generation).as_bytes())
            .expect("short");
        let value = Value::new(format!("{{\"result\":\"success\",\"n\":{seq}}}").as_bytes())
            .expect("short");
        let known: Vec<Key> = self.outside_records.iter().map(|o| o.0.clone()).collect();
        let roll = f.below(100);
        let defect = f.below(4) as u8;
        match roll {
            0..=4 => OutsideOp::TornAppend {
                key: fresh,
                value,
                bytes: f.range(1, 2559) / SECTOR_SIZE as u64 * SECTOR_SIZE as u64 + 1,
            },
            5..=19 if !known.is_empty() => OutsideOp::Rewrite {
                key: f.choose(&known).clone(),
                value,
            },
            20..=34 if !known.is_empty() => OutsideOp::Remove {
                key: f.choose(&known).clone(),
            },
            // Emptying the file under a failed mutation still in flight would leave the
            // model unable to say what lands; cloud-init does it at boot anyway.
            35 if !self.model.has_in_flight() && self.daemon_quiet() => OutsideOp::Truncate,
            36 => OutsideOp::StrangerJournal { defect },
            _ => OutsideOp::Append { key: fresh, value },
        }
    }

    /// Another program appends a record whose key the host also uses: a later
    /// duplicate (or the first match, if the key is absent). Only when the model knows
    /// the key's one value and no change of ours is half made (journal empty, lock
    /// free, nothing in flight), so the model can say which record is the first match.
    pub(super) fn host_key_duplicate(&mut self) -> Option<super::Action> {
        let pool = PoolId::Guest;
        let f = &mut self.faults_prng;
        let key = Key::new(format!("hot{}", f.below(4)).as_bytes()).expect("short");
        self.outside_seq += 1;
        let value = Value::new(format!("dup{}", self.outside_seq).as_bytes()).expect("short");
        let journal = crate::fs::name_of(hvguest_core::kvp::effect::FileId::journal(pool));
        let cell = self.model.possible(pool, &key).to_vec();
        // One duplicate per key at most: our DELETE keeps every key's first match but
        // may reorder later duplicates, so with two the model could not say which
        // one a DELETE of the first reveals.
        // Only behind a present key: a new first match could be missed by a read the
        // daemon answers from memory while a file job runs (by design).
        if cell.len() != 1
            || cell[0].is_none()
            || !self.model.dup_values(pool, &key).is_empty()
            || self.model.dups_unsure(pool, &key)
            || self.model.has_in_flight()
            || !self.daemon_quiet()
            || !self.fs.contents(journal).is_empty()
            || self.fs.lock_holder(path(pool)).is_some()
            || self.fs.frozen
            || self.fs.contents(path(pool)).len() % REC != 0
        {
            return None;
        }
        let before = self.fs.contents(path(pool)).len();
        self.outside(
            pool,
            OutsideOp::Append {
                key: key.clone(),
                value: value.clone(),
            },
        );
        if self.fs.contents(path(pool)).len() > before {
            // (`appended` ignores keys whose duplicates are unsure; none are chosen.)
            self.model.appended(pool, &key, value);
        }
        None
    }

    /// The daemon is down or idle: no file job of ours is half way through the pool, so
    /// the model can say what the file holds after another program's change. (A read
    /// may still come from memory if a later file job gets stuck before the daemon next
    /// loads the pool: see `emptied`.)
    fn daemon_quiet(&self) -> bool {
        self.daemon.as_ref().is_none_or(|d| d.machine.is_idle())
    }

    /// Another program emptied `pool`: every host key is absent from the file now. A
    /// running daemon's memory still holds the old records until it next loads the pool
    /// (a refresh or a mutation sees the new stamp), and a read it answers from memory
    /// meanwhile (a file job stuck on another pool, or its deadline) may show them, by
    /// design: reads go on while the file lane is busy.
    pub(super) fn emptied(&mut self, pool: PoolId) {
        if self.daemon.is_some() {
            let mut held = Vec::new();
            for (k, cell) in self.model.keys(pool) {
                let dups = self.model.dup_values(pool, k).iter().cloned();
                for v in cell.iter().flatten().cloned().chain(dups) {
                    held.push((pool, k.clone(), v));
                }
            }
            for h in held {
                if !self.emptied_in_memory.contains(&h) {
                    self.emptied_in_memory.push(h);
                }
            }
        }
        self.model.truncated(pool);
    }

    /// Forgets the emptied pools' old records once the daemon's memory is the file again
    /// (its stamp is the file's, and no read is under way), or the daemon is gone.
    pub(super) fn emptied_check(&mut self) {
        if self.emptied_in_memory.is_empty() || self.outstanding.is_some() {
            return;
        }
        let (daemon, fs) = (self.daemon.as_ref(), &self.fs);
        self.emptied_in_memory.retain(|(p, _, _)| {
            daemon.is_some_and(|d| d.machine.pool_stamp(*p) != Some(fs.peek_stamp(path(*p))))
        });
    }

    /// Whether a reply answered from memory shows a host key's record from before
    /// another program emptied the pool, the daemon not having loaded it since: accepted,
    /// but not an observation (the model says the key is absent, and it is, on disk). A
    /// read not answered from memory must show the file: the daemon's refresh sees the
    /// emptied file's new length, so an old record there is still a violation.
    pub(super) fn emptied_stale_read(
        &mut self,
        req: &Request,
        reply: &Reply,
        from_memory: bool,
    ) -> bool {
        let (pool, shown) = match (req, reply) {
            (Request::Get { pool, key }, Reply::Value(v)) => (*pool, Some((key, v))),
            (Request::Enumerate { pool, .. }, Reply::Entry { key, value }) => {
                (*pool, Some((key, value)))
            }
            (Request::Enumerate { pool, .. }, _) => (*pool, None),
            _ => return false,
        };
        if !from_memory || !self.emptied_in_memory.iter().any(|(p, _, _)| *p == pool) {
            return false;
        }
        if matches!(req, Request::Enumerate { .. }) {
            // A walk over memory that predates the emptying.
            if let Some(w) = self.walk.as_mut() {
                w.disturbed = true;
            }
        }
        let Some((key, value)) = shown else {
            return false;
        };
        let held = (pool, key.clone(), value.clone());
        if !self.emptied_in_memory.contains(&held) {
            return false;
        }
        self.log(
            "world",
            "read from memory of an emptied pool's old record accepted",
        );
        true
    }

    /// Carries out the waiting outside change once the lock is free (and the file
    /// system not suspended): right after whoever held it unlocked.
    pub(super) fn outside_unblocked(&mut self) {
        let Some((pool, _)) = self.outside_waiting.as_ref() else {
            return;
        };
        if self.fs.lock_holder(path(*pool)).is_some() || self.fs.frozen {
            return;
        }
        if let Some((pool, op)) = self.outside_waiting.take() {
            self.outside(pool, op);
        }
    }

    /// An outside key for the host to GET: one present, or one removed.
    pub(super) fn outside_key_to_read(&mut self) -> Option<Key> {
        let f = &mut self.faults_prng;
        if !self.outside_removed.is_empty() && f.chance(1, 4) {
            return Some(f.choose(&self.outside_removed).clone());
        }
        if self.outside_records.is_empty() {
            return None;
        }
        Some(f.choose(&self.outside_records).0.clone())
    }

    /// Freshness: a GET of a key only other programs write must answer what the file
    /// holds at the moment of the reply, first match, or what it held at some moment
    /// since the request reached the daemon (`earlier`: the file before each outside
    /// change made meanwhile; the daemon reads under the lock and answers after it lets
    /// go, and a change made in between is concurrent) (catches serving a stale memory
    /// copy after another program's append, rewrite or delete, e.g. a refresh that
    /// trusts an unchanged stamp or a wrong first-match lookup). While a journaling
    /// writer holds the lock its change may be half made: then the check is skipped
    /// (the reply may legitimately show either side). An entry left in the journal
    /// with nobody holding the lock (a writer died, or failed to clear it) must be
    /// recovered before the pool is served: the reply is then `E_FAIL` or what the file
    /// holds, never an older memory copy (catches a read that answers from memory past
    /// another writer's pending entry, and so misses appends made since).
    pub(super) fn check_fresh(
        &mut self,
        key: &Key,
        reply: &Reply,
        failed_ok: bool,
        earlier: &[Vec<u8>],
    ) {
        if !key.as_bytes().starts_with(OUTSIDE_PREFIX.as_bytes()) {
            return;
        }
        let name = path(PoolId::Guest);
        let journal = crate::fs::name_of(hvguest_core::kvp::effect::FileId::journal(PoolId::Guest));
        if self.fs.lock_holder(name).is_some() {
            return;
        }
        let pending = !self.fs.contents(journal).is_empty();
        let want = first_match(self.fs.contents(name), key.as_bytes());
        let want_durable = first_match(self.fs.durable(name), key.as_bytes());
        let got = match reply {
            Reply::Value(v) => Some(v.as_bytes().to_vec()),
            Reply::Status(Status::S_CONT) => None,
            Reply::Status(Status::E_FAIL) if failed_ok || pending => return,
            other => {
                return self.fail(format!(
                    "GET guest {}: {other:?}",
                    trace::text(key.as_bytes())
                ))
            }
        };
        let held_meanwhile = earlier
            .iter()
            .any(|pool| first_match(pool, key.as_bytes()) == got);
        if got != want && got != want_durable && !held_meanwhile {
            self.fail(format!(
                "stale read: GET guest {} answered {:?}, the file holds {:?}",
                trace::text(key.as_bytes()),
                got.map(|g| trace::text(&g)),
                want.map(|g| trace::text(&g)),
            ));
        }
    }

    /// The post image of the first slot write of an entry waiting in the guest pool's
    /// journal (an append's record, or the record a DELETE moves into the hole), read
    /// from the journal's layout: magic, write count at 13, then after the 36-byte
    /// header the first write's slot, pre and post images.
    /// Also whether the entry shrinks the file (old length at 16, new at 24).
    fn pending_growth_post(&self) -> Option<(Vec<u8>, bool)> {
        let j = self.fs.contents(crate::fs::name_of(
            hvguest_core::kvp::effect::FileId::journal(PoolId::Guest),
        ));
        let ok = j.len() >= 40 + 2 * REC && &j[..8] == b"HVKVPJ1\0" && j[13] >= 1;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&j[at..at + 8]);
            u64::from_le_bytes(b)
        };
        ok.then(|| (j[40 + REC..40 + 2 * REC].to_vec(), u64_at(24) < u64_at(16)))
    }

    /// The pre and post images of every in-place slot write (its pre image not all
    /// zeros: not an append's extension) of the entry waiting in the guest pool's
    /// journal, read from the journal's layout: write count at 13, writes from byte 36,
    /// each a 4-byte slot, then the pre and post images.
    fn pending_in_place_writes(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let j = self.fs.contents(crate::fs::name_of(
            hvguest_core::kvp::effect::FileId::journal(PoolId::Guest),
        ));
        if j.len() < 36 || &j[..8] != b"HVKVPJ1\0" {
            return Vec::new();
        }
        (0..usize::from(j[13]))
            .map(|i| 36 + i * (4 + 2 * REC) + 4)
            .take_while(|&at| at + 2 * REC <= j.len())
            .map(|at| (j[at..at + REC].to_vec(), j[at + REC..at + 2 * REC].to_vec()))
            .filter(|(pre, _)| pre.iter().any(|&b| b != 0))
            .collect()
    }

    /// A torn in-place write of ours that another program then moved: exactly the bytes
    /// recorded when it moved them (see `torn_residue`).
    pub(super) fn is_torn_residue(&self, rec: &[u8]) -> bool {
        self.torn_residue.iter().any(|t| t == rec)
    }

    /// The guest pool's bytes without the torn residue records (one copy of each):
    /// what the record invariants are checked against. The residue stays where the
    /// other program moved it; everything else must be as if it were not there.
    pub(super) fn without_torn_residue(&self, bytes: &[u8]) -> Vec<u8> {
        let whole = bytes.len() - bytes.len() % REC;
        let mut left: Vec<&Vec<u8>> = self.torn_residue.iter().collect();
        let mut out = Vec::with_capacity(bytes.len());
        for r in bytes[..whole].chunks_exact(REC) {
            match left.iter().position(|t| t[..] == *r) {
                Some(i) => {
                    left.swap_remove(i);
                }
                None => out.extend_from_slice(r),
            }
        }
        out.extend_from_slice(&bytes[whole..]);
        out
    }

    /// Whether a read of `key` showing `value` may come from a torn residue record.
    fn torn_residue_shows(&self, key: &[u8], value: Option<&[u8]>) -> bool {
        value.is_some_and(|v| {
            self.torn_residue
                .iter()
                .any(|t| field(&t[..512]) == key && field(&t[512..]) == v)
        })
    }

    /// A record left by a crashed append that another program then moved (a shift-down
    /// delete while we were down): our extension's zeros, or a torn copy of our record,
    /// somewhere recovery can no longer find. (A crashed DELETE's moved record may
    /// likewise stay twice: its key is a `residue_key`.) A known limit of recovery (see
    /// ARCHITECTURE.md); tolerated, and only these exact byte patterns are.
    pub(super) fn is_residue(&self, rec: &[u8]) -> bool {
        self.is_torn_residue(rec)
            || self.residue.iter().any(|(post, _)| {
                rec != &post[..]
                    && rec
                        .chunks(SECTOR_SIZE)
                        .zip(post.chunks(SECTOR_SIZE))
                        .all(|(r, p)| r == p || r.iter().all(|&b| b == 0))
            })
    }

    /// Whether a reply or record showing `key` (= `value`, when known) may come from a
    /// residue: the empty key of zeros; a torn copy of a crashed append (never its
    /// whole record: a second whole copy is exactly the bug the judge must prevent);
    /// any copy of the record a crashed DELETE moved (recovery removes the second copy
    /// only while our hole still holds it where the journal says; once another
    /// program's delete moved the hole too, it cannot tell ours from theirs).
    pub(super) fn residue_key(&self, key: &[u8], value: Option<&[u8]>) -> bool {
        self.torn_residue_shows(key, value)
            || self.residue.iter().any(|(p, shrinks)| {
                key.is_empty()
                    || (field(&p[..512]) == key && (*shrinks || value != Some(field(&p[512..]))))
            })
    }
}
