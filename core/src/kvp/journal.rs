//! The redo journal beside each pool file (`.kvp_pool_N.journal`).
//!
//! Why a journal and not write-new-then-rename: other programs append to the pool file
//! under a lock on *that* file, so it must stay the same inode, a bare record array.
//! Changes are therefore made in place, and a crash mid-way is repaired from the journal.
//!
//! An entry names the slots a mutation writes, with each slot's exact bytes before
//! (`pre`) and after (`post`), the file length before and after, and for a shrinking
//! mutation the bytes of the slot it cuts off. The pre-images let recovery tell our
//! half-done work from another program's records written after our crash: a slot is ours
//! to finish only if every sector of it holds either its pre or its post bytes (a crash
//! keeps or loses whole sectors). See [`judge`].
//!
//! Entries are appended; recovery reads them in order and stops at the first that does
//! not check out (a torn write of the journal itself: that mutation never touched the
//! pool, because the journal is made durable first).

use crate::kvp::record::RecordBytes;
use crate::kvp::wire::PoolId;
use crate::limits::{MAX_JOURNAL_ENTRIES, MAX_POOL_RECORDS, POOL_RECORD_SIZE, SECTOR_SIZE};

const MAGIC: &[u8; 8] = b"HVKVPJ1\0";
/// Slot writes in one entry: a delete writes at most two slots.
pub const MAX_ENTRY_WRITES: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalWrite {
    pub slot: u32,
    pub pre: Box<RecordBytes>,
    pub post: Box<RecordBytes>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub pool: PoolId,
    pub old_len: u64,
    pub new_len: u64,
    pub writes: Vec<JournalWrite>,
    /// For a shrinking entry: the slot cut off and its bytes.
    pub dropped: Option<(u32, Box<RecordBytes>)>,
}

const HEADER: usize = 8 + 4 + 4 + 8 + 8 + 4;
const WRITE: usize = 4 + 2 * POOL_RECORD_SIZE;

impl JournalEntry {
    pub fn encoded_len(&self) -> usize {
        HEADER
            + self.writes.len() * WRITE
            + self.dropped.as_ref().map_or(0, |_| POOL_RECORD_SIZE)
            + 4
    }

    pub fn encode(&self) -> Vec<u8> {
        assert!(self.writes.len() <= MAX_ENTRY_WRITES);
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.encoded_len() as u32).to_le_bytes());
        out.extend_from_slice(&[
            self.pool as u8,
            self.writes.len() as u8,
            u8::from(self.dropped.is_some()),
            0,
        ]);
        out.extend_from_slice(&self.old_len.to_le_bytes());
        out.extend_from_slice(&self.new_len.to_le_bytes());
        out.extend_from_slice(&self.dropped.as_ref().map_or(0, |d| d.0).to_le_bytes());
        for w in &self.writes {
            out.extend_from_slice(&w.slot.to_le_bytes());
            out.extend_from_slice(&w.pre[..]);
            out.extend_from_slice(&w.post[..]);
        }
        if let Some((_, pre)) = &self.dropped {
            out.extend_from_slice(&pre[..]);
        }
        let crc = crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len(), self.encoded_len());
        out
    }

    fn decode(buf: &[u8]) -> Option<(JournalEntry, usize)> {
        if buf.len() < HEADER + 4 || &buf[..8] != MAGIC {
            return None;
        }
        let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        let len = u32_at(8) as usize;
        let (pool, nwrites, has_dropped) = (buf[12], usize::from(buf[13]), buf[14]);
        let expect =
            HEADER + nwrites * WRITE + usize::from(has_dropped == 1) * POOL_RECORD_SIZE + 4;
        if len != expect || len > buf.len() || nwrites > MAX_ENTRY_WRITES || has_dropped > 1 {
            return None;
        }
        let crc = u32_at(len - 4);
        if crc32c(&buf[..len - 4]) != crc {
            return None;
        }
        let pool = PoolId::from_u8(pool)?;
        let record = |at: usize| -> Box<RecordBytes> {
            Box::new(buf[at..at + POOL_RECORD_SIZE].try_into().expect("record"))
        };
        let mut at = HEADER;
        let mut writes = Vec::with_capacity(nwrites);
        for _ in 0..nwrites {
            writes.push(JournalWrite {
                slot: u32_at(at),
                pre: record(at + 4),
                post: record(at + 4 + POOL_RECORD_SIZE),
            });
            at += WRITE;
        }
        let dropped = (has_dropped == 1).then(|| (u32_at(32), record(at)));
        let entry = JournalEntry {
            pool,
            old_len: u64_at(16),
            new_len: u64_at(24),
            writes,
            dropped,
        };
        Some((entry, len))
    }

    /// Why this entry cannot be one of ours for `pool` (`None`: it can). Our entries
    /// name their pool, keep the file whole records within the pool limit, change its
    /// length by at most one record, write slots inside the file, and cut only its last
    /// slot. Anything else is a stranger's or a corrupt entry that happens to have a
    /// valid CRC; acting on it could grow the file without bound or write another
    /// pool's records here.
    pub fn out_of_bounds(&self, pool: PoolId) -> Option<&'static str> {
        let rec = POOL_RECORD_SIZE as u64;
        let limit = MAX_POOL_RECORDS as u64 * rec;
        let (old, new) = (self.old_len, self.new_len);
        if self.pool != pool {
            return Some("the entry names another pool");
        }
        if old % rec != 0 || new % rec != 0 {
            return Some("the entry's lengths are not whole records");
        }
        if old > limit || new > limit {
            return Some("the entry's lengths are beyond the pool limit");
        }
        if old.abs_diff(new) > rec {
            return Some("the entry changes the length by more than one record");
        }
        let records = old.max(new) / rec;
        if self.writes.iter().any(|w| u64::from(w.slot) >= records) {
            return Some("the entry writes a slot past the end of the file");
        }
        let cut = (new < old).then_some(new / rec);
        if self.dropped.as_ref().map(|d| u64::from(d.0)) != cut {
            return Some("the entry's cut does not match its lengths");
        }
        None
    }

    /// Every slot recovery must read to judge this entry.
    pub fn slots(&self) -> Vec<u32> {
        let mut s: Vec<u32> = self.writes.iter().map(|w| w.slot).collect();
        s.extend(self.dropped.as_ref().map(|d| d.0));
        s
    }

    /// The slots [`judge`] reads in a file of `len` bytes (whole records): the entry's
    /// own and, for an entry that cuts a record, every slot below that record (where
    /// another program's delete may have moved it), at most [`MAX_POOL_RECORDS`].
    pub fn slots_to_judge(&self, len: u64) -> Vec<u32> {
        let own = self.slots();
        let mut s = own.clone();
        if let Some((dropped, _)) = &self.dropped {
            let below = (len / POOL_RECORD_SIZE as u64)
                .min(u64::from(*dropped))
                .min(MAX_POOL_RECORDS as u64);
            let below = u32::try_from(below).unwrap_or(0);
            s.extend((0..below).filter(|slot| !own.contains(slot)));
        }
        s
    }
}

/// The journal file, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedJournal {
    pub entries: Vec<JournalEntry>,
    /// Byte offset just past the last valid entry: where a new one is appended.
    pub valid_len: u64,
    /// Bytes after the valid entries (a torn or foreign tail), ignored.
    pub ignored_bytes: u64,
}

pub fn parse_journal(buf: &[u8]) -> ParsedJournal {
    let mut at = 0;
    let mut entries = Vec::new();
    while entries.len() < MAX_JOURNAL_ENTRIES {
        match JournalEntry::decode(&buf[at..]) {
            Some((e, len)) => {
                entries.push(e);
                at += len;
            }
            None => break,
        }
    }
    ParsedJournal {
        entries,
        valid_len: at as u64,
        ignored_bytes: (buf.len() - at) as u64,
    }
}

/// What recovery does with one journal entry, given the pool file as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Finish the mutation: write every post image, make the length right.
    Finish {
        /// Cut the file to this length after writing.
        truncate_to: Option<u64>,
        /// Other programs appended after the crash, before the cut slot was removed: it
        /// must still be removed, keeping their records (a follow-up delete of this slot).
        remove_slot: Option<u32>,
    },
    /// The file moved on without us (someone truncated or rewrote it after the crash);
    /// finishing would overwrite their data. The mutation was never acknowledged.
    Discard(&'static str),
    /// Like `Discard`, but these slots hold only our sectors (pre or post, perhaps torn)
    /// while the rest of the file moved on without us: write their pre images back,
    /// so no half-written or duplicated record stays behind.
    Undo {
        reason: &'static str,
        slots: Vec<u32>,
    },
}

/// The file is exactly as it was before a non-growing `entry`: same length, every slot
/// it writes and the slot it cuts holding their old bytes. A growing entry is left to
/// `judge`'s own rules, which say more precisely why: at the old length its extension
/// is gone (discarded); at the new length an extension holding zeros is finished, or an
/// empty record would stay.
fn shows_none_of(entry: &JournalEntry, len: u64, slot: &dyn Fn(u32) -> RecordBytes) -> bool {
    entry.new_len <= entry.old_len
        && len == entry.old_len
        && entry.writes.iter().all(|w| slot(w.slot) == *w.pre)
        && entry
            .dropped
            .as_ref()
            .is_none_or(|(s, pre)| slot(*s) == **pre)
}

fn sectors_match(actual: &RecordBytes, a: &RecordBytes, b: &RecordBytes) -> bool {
    actual
        .chunks(SECTOR_SIZE)
        .zip(a.chunks(SECTOR_SIZE).zip(b.chunks(SECTOR_SIZE)))
        .all(|(x, (p, q))| x == p || x == q)
}

/// Which writer put an entry in the journal: it decides what an untouched file means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryRole {
    /// The journal's first entry: a mutation's (the daemon's or `hvkvp`'s). A mutation
    /// clears the journal without an fsync once its change is durable, so after a power
    /// loss the entry may be a finished one, stale (ARCHITECTURE.md, "The persistence
    /// protocol").
    Mutation,
    /// A later entry: recovery's follow-up removal, which completes a change whose post
    /// images are already in the file, so it is always finished when it can be.
    FollowUp,
}

/// Judges `entry` against the file: `len` is its length now (whole records: recovery
/// cuts a partial tail first) and `slot(s)` returns the current bytes of slot `s`,
/// zeros beyond the end; it is asked only for [`JournalEntry::slots_to_judge`].
pub fn judge(
    entry: &JournalEntry,
    role: EntryRole,
    len: u64,
    slot: &dyn Fn(u32) -> RecordBytes,
) -> Verdict {
    let rec = POOL_RECORD_SIZE as u64;
    if role == EntryRole::Mutation && shows_none_of(entry, len, slot) {
        // Either nothing of ours reached the file, or the change finished, its journal
        // clear was lost with the power, and another program has since put the old
        // bytes back. Finishing is allowed only in the first case and would overwrite
        // their write in the second; leaving the file alone is right in both.
        return Verdict::Discard("the file shows none of the change");
    }
    let undo = |reason| {
        let slots: Vec<u32> = entry
            .writes
            .iter()
            .filter(|w| (u64::from(w.slot) + 1) * rec <= len && slot(w.slot) != *w.pre)
            .map(|w| w.slot)
            .collect();
        if slots.is_empty() {
            Verdict::Discard(reason)
        } else {
            Verdict::Undo { reason, slots }
        }
    };
    if len < entry.old_len.min(entry.new_len) {
        // Someone truncated the file, or deleted records by copying the later ones
        // down. A slot still in the file holding a torn mix of our pre and post
        // sectors is a write of ours that never finished (so nothing was cut): put
        // its pre image back. A slot holding exactly its post image may be a finished
        // change whose records others have since moved or deleted: leave it.
        let torn: Vec<u32> = entry
            .writes
            .iter()
            .filter(|w| {
                let now = slot(w.slot);
                (u64::from(w.slot) + 1) * rec <= len
                    && now != *w.pre
                    && now != *w.post
                    && sectors_match(&now, &w.pre, &w.post)
            })
            .map(|w| w.slot)
            .collect();
        let reason = "the file is shorter than before the change";
        return if torn.is_empty() {
            Verdict::Discard(reason)
        } else {
            Verdict::Undo {
                reason,
                slots: torn,
            }
        };
    }
    // We extend before writing anything else, and an append writes only inside the
    // extension: a growing entry whose extension is gone either never reached the
    // disk, or someone has since shortened
    // the file (a delete that copies records down and truncates). Finishing would
    // resurrect what they deleted, or duplicate our record they moved down.
    if entry.new_len > entry.old_len && len < entry.new_len {
        return Verdict::Discard("our extension of the file is gone");
    }
    for w in &entry.writes {
        if !sectors_match(&slot(w.slot), &w.pre, &w.post) {
            return Verdict::Discard("a slot holds bytes that are neither ours nor the old ones");
        }
    }
    // We cut only after every post image is written and synced: while a slot does not
    // hold its post image yet, the cut has not happened.
    let posts_done = entry.writes.iter().all(|w| slot(w.slot) == *w.post);
    if entry.new_len < entry.old_len && len < entry.old_len && !posts_done {
        return undo("the file was shortened, but not by us");
    }
    let mut truncate_to = None;
    let mut remove_slot = None;
    if let Some((dropped, pre)) = &entry.dropped {
        let present = len >= (u64::from(*dropped) + 1) * rec;
        let still_there = present && slot(*dropped) == **pre;
        if present && !still_there && !posts_done {
            // Not cut yet, yet changed: someone rewrote the record we were to cut (or
            // moved others into it). Once every post is there, a different record in
            // that slot is one appended after our cut.
            return undo("the slot to cut holds someone else's bytes");
        }
        if still_there && len == entry.old_len {
            truncate_to = Some(entry.new_len);
        } else if still_there {
            // Others appended after the crash; cutting would lose their records.
            remove_slot = Some(*dropped);
        } else if posts_done {
            // Every post is there and the record to cut is not in its slot: we cut it,
            // or another program's delete (copying the later records down) moved it
            // down, beside the copy our post image made of it. Then a slot below, not
            // one of ours, holds exactly its bytes: remove the highest such slot, as
            // our cut would have. (Had we cut, such a slot means the pool held that
            // very record twice before; one copy stays, so no GET changes.)
            let below = u32::try_from((len / rec).min(u64::from(*dropped))).unwrap_or(0);
            remove_slot = (0..below)
                .rev()
                .find(|&s| !entry.writes.iter().any(|w| w.slot == s) && slot(s) == **pre);
        }
    }
    Verdict::Finish {
        truncate_to,
        remove_slot,
    }
}

/// CRC-32C (Castagnoli) lookup tables for "slicing by 8": `CRC_TABLES[0]` is the classic
/// one-byte table; `CRC_TABLES[k][b]` is the CRC of byte `b` followed by `k` zero bytes.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
};

/// CRC-32C (Castagnoli), eight bytes per step ("slicing by 8"). Every durable SET or
/// DELETE checksums a journal entry of two or more 2.5 KB records, and recovery and the
/// simulator's checks re-read them; one table lookup per byte made this a tenth of the
/// simulator's time. The result is the same as the one-byte-at-a-time form (a test
/// compares them).
pub fn crc32c(data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rb(fill: u8) -> Box<RecordBytes> {
        Box::new([fill; POOL_RECORD_SIZE])
    }

    fn entry() -> JournalEntry {
        JournalEntry {
            pool: PoolId::Guest,
            old_len: 3 * POOL_RECORD_SIZE as u64,
            new_len: 2 * POOL_RECORD_SIZE as u64,
            writes: vec![JournalWrite {
                slot: 0,
                pre: rb(1),
                post: rb(3),
            }],
            dropped: Some((2, rb(3))),
        }
    }

    #[test]
    fn entries_out_of_bounds_are_not_ours() {
        let rec = POOL_RECORD_SIZE as u64;
        let ok = entry();
        assert_eq!(ok.out_of_bounds(PoolId::Guest), None);
        assert!(ok.out_of_bounds(PoolId::External).is_some());
        let mut far = entry();
        far.writes[0].slot = 4_000_000;
        assert!(far.out_of_bounds(PoolId::Guest).is_some());
        let mut huge = entry();
        huge.old_len = 4_000_001 * rec;
        huge.new_len = 4_000_000 * rec;
        huge.dropped = Some((4_000_000, rb(3)));
        assert!(huge.out_of_bounds(PoolId::Guest).is_some());
        let mut jump = entry();
        jump.new_len = 10 * rec;
        jump.dropped = None;
        assert!(jump.out_of_bounds(PoolId::Guest).is_some());
        let mut ragged = entry();
        ragged.new_len = 2 * rec + 1;
        assert!(ragged.out_of_bounds(PoolId::Guest).is_some());
        let mut wrong_cut = entry();
        wrong_cut.dropped = Some((1, rb(3)));
        assert!(wrong_cut.out_of_bounds(PoolId::Guest).is_some());
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn crc32c_by_eight_equals_one_byte_at_a_time() {
        fn bytewise(data: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &b in data {
                crc = CRC_TABLES[0][((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
            }
            !crc
        }
        let data: Vec<u8> = (0..3016u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in (0..40).chain([2559, 2560, 2561, 2999]) {
            for start in 0..9 {
                let s = &data[start..start + len];
                assert_eq!(crc32c(s), bytewise(s), "len {len} start {start}");
            }
        }
    }

    #[test]
    fn entries_round_trip_and_torn_tail_is_ignored() {
        let e = entry();
        let mut buf = e.encode();
        buf.extend_from_slice(&e.encode()[..100]);
        let p = parse_journal(&buf);
        assert_eq!(p.entries, vec![e.clone()]);
        assert_eq!(p.valid_len, e.encoded_len() as u64);
        assert_eq!(p.ignored_bytes, 100);
        let mut flipped = e.encode();
        flipped[50] ^= 1;
        assert!(parse_journal(&flipped).entries.is_empty());
    }

    #[test]
    fn judge_removes_our_cut_record_another_delete_moved_down() {
        // Our delete of slot 0 wrote its post (slot 2's record) and crashed before the
        // cut; another program then deleted slot 1 by copying slot 2 down and cutting.
        let e = entry();
        let rec = POOL_RECORD_SIZE as u64;
        let file = [rb(3), rb(3)];
        let slot = |s: u32| {
            file.get(s as usize)
                .map_or([0u8; POOL_RECORD_SIZE], |b| **b)
        };
        assert_eq!(e.slots_to_judge(2 * rec), vec![0, 2, 1]);
        assert_eq!(e.slots_to_judge(5 * rec), vec![0, 2, 1]);
        assert_eq!(
            judge(&e, EntryRole::Mutation, 2 * rec, &slot),
            Verdict::Finish {
                truncate_to: None,
                remove_slot: Some(1)
            }
        );
        // The same, and then the other program appended a record after the cut.
        let file = [rb(3), rb(3), rb(9)];
        let slot = |s: u32| {
            file.get(s as usize)
                .map_or([0u8; POOL_RECORD_SIZE], |b| **b)
        };
        assert_eq!(
            judge(&e, EntryRole::Mutation, 3 * rec, &slot),
            Verdict::Finish {
                truncate_to: None,
                remove_slot: Some(1)
            }
        );
        // Our own cut, with a different record last: nothing more to do.
        let file = [rb(3), rb(7)];
        let slot = |s: u32| {
            file.get(s as usize)
                .map_or([0u8; POOL_RECORD_SIZE], |b| **b)
        };
        assert_eq!(
            judge(&e, EntryRole::Mutation, 2 * rec, &slot),
            Verdict::Finish {
                truncate_to: None,
                remove_slot: None
            }
        );
    }

    #[test]
    fn judge_finishes_half_written_delete() {
        let e = entry();
        let rec = POOL_RECORD_SIZE as u64;
        // Slot 0 torn: first sector new, the rest old. Nothing cut yet.
        let torn = {
            let mut b = [1u8; POOL_RECORD_SIZE];
            b[..SECTOR_SIZE].fill(3);
            b
        };
        let slots = |s: u32| {
            if s == 0 {
                torn
            } else {
                [3u8; POOL_RECORD_SIZE]
            }
        };
        assert_eq!(
            judge(&e, EntryRole::Mutation, 3 * rec, &slots),
            Verdict::Finish {
                truncate_to: Some(2 * rec),
                remove_slot: None
            }
        );
        // Someone appended after the crash: remove the slot, keep their record.
        assert_eq!(
            judge(&e, EntryRole::Mutation, 4 * rec, &slots),
            Verdict::Finish {
                truncate_to: None,
                remove_slot: Some(2)
            }
        );
        // Someone else's bytes in slot 0: leave the file alone.
        assert!(matches!(
            judge(&e, EntryRole::Mutation, 3 * rec, &|_| [9u8;
                POOL_RECORD_SIZE]),
            Verdict::Discard(_)
        ));
        // Truncated by another program: gone with the file, or its torn slot put back.
        assert!(matches!(
            judge(&e, EntryRole::Mutation, 0, &slots),
            Verdict::Discard(_)
        ));
        assert!(matches!(
            judge(&e, EntryRole::Mutation, rec, &slots),
            Verdict::Undo { slots, .. } if slots == vec![0]
        ));
        // Our change finished (slot 0 holds its post), then another program deleted
        // the record after it: nothing of ours is half made, so nothing is undone.
        assert!(matches!(
            judge(&e, EntryRole::Mutation, rec, &|_| [3u8; POOL_RECORD_SIZE]),
            Verdict::Discard(_)
        ));
    }

    #[test]
    fn judge_discards_what_another_program_undid() {
        let rec = POOL_RECORD_SIZE as u64;
        // Our append of 7s at slot 3 (file of 3 records), written and synced; then a
        // shift-down delete moved it to slot 2 and cut the file back to 3 records.
        let e = JournalEntry {
            pool: PoolId::Guest,
            old_len: 3 * rec,
            new_len: 4 * rec,
            writes: vec![JournalWrite {
                slot: 3,
                pre: rb(0),
                post: rb(7),
            }],
            dropped: None,
        };
        let moved = |s: u32| {
            if s == 2 {
                [7u8; POOL_RECORD_SIZE]
            } else {
                [0u8; POOL_RECORD_SIZE]
            }
        };
        assert!(matches!(
            judge(&e, EntryRole::Mutation, 3 * rec, &moved),
            Verdict::Discard(_)
        ));
        // Our DELETE (3 -> 2 records) half-written at slot 0, then the record we were to
        // cut rewritten by another program: put our slot's old bytes back.
        let d = entry();
        let torn = {
            let mut b = [1u8; POOL_RECORD_SIZE];
            b[..SECTOR_SIZE].fill(3);
            b
        };
        let rewritten = |s: u32| {
            if s == 0 {
                torn
            } else {
                [9u8; POOL_RECORD_SIZE]
            }
        };
        assert_eq!(
            judge(&d, EntryRole::Mutation, 3 * rec, &rewritten),
            Verdict::Undo {
                reason: "the slot to cut holds someone else's bytes",
                slots: vec![0]
            }
        );
        // Every post there and others' record where we cut: our cut, then their append.
        let appended = |s: u32| {
            if s == 0 {
                [3u8; POOL_RECORD_SIZE]
            } else {
                [9u8; POOL_RECORD_SIZE]
            }
        };
        assert!(matches!(
            judge(&d, EntryRole::Mutation, 3 * rec, &appended),
            Verdict::Finish { .. }
        ));
    }

    #[test]
    fn a_mutation_entry_over_its_old_bytes_is_left_alone() {
        let rec = POOL_RECORD_SIZE as u64;
        // An in-place SET of slot 1 (5s -> 7s): finished, its lazy journal clear lost
        // with the power, then another program wrote the old value back. Or it never
        // started. Either way the file is left as it is.
        let e = JournalEntry {
            pool: PoolId::Guest,
            old_len: 2 * rec,
            new_len: 2 * rec,
            writes: vec![JournalWrite {
                slot: 1,
                pre: rb(5),
                post: rb(7),
            }],
            dropped: None,
        };
        let old = |_| [5u8; POOL_RECORD_SIZE];
        assert_eq!(
            judge(&e, EntryRole::Mutation, 2 * rec, &old),
            Verdict::Discard("the file shows none of the change")
        );
        // A follow-up removal in the same state is recovery's own unfinished work.
        assert!(matches!(
            judge(&e, EntryRole::FollowUp, 2 * rec, &old),
            Verdict::Finish { .. }
        ));
        // Our finished change: finishing again writes the same bytes.
        let new = |_| [7u8; POOL_RECORD_SIZE];
        assert!(matches!(
            judge(&e, EntryRole::Mutation, 2 * rec, &new),
            Verdict::Finish { .. }
        ));
        // A DELETE (3 -> 2 records) with nothing written and nothing cut.
        let d = entry();
        let untouched = |s: u32| {
            if s == 0 {
                *d.writes[0].pre
            } else {
                *d.dropped.as_ref().unwrap().1
            }
        };
        assert!(matches!(
            judge(&d, EntryRole::Mutation, 3 * rec, &untouched),
            Verdict::Discard(_)
        ));
        // An append whose extension is there holding zeros is finished: leaving it
        // would leave an empty record.
        let a = JournalEntry {
            pool: PoolId::Guest,
            old_len: rec,
            new_len: 2 * rec,
            writes: vec![JournalWrite {
                slot: 1,
                pre: rb(0),
                post: rb(7),
            }],
            dropped: None,
        };
        assert!(matches!(
            judge(&a, EntryRole::Mutation, 2 * rec, &|s| if s == 1 {
                [0u8; POOL_RECORD_SIZE]
            } else {
                [5u8; POOL_RECORD_SIZE]
            }),
            Verdict::Finish { .. }
        ));
    }

    #[test]
    fn judge_tells_our_append_from_theirs() {
        let rec = POOL_RECORD_SIZE as u64;
        let e = JournalEntry {
            pool: PoolId::Guest,
            old_len: rec,
            new_len: 2 * rec,
            writes: vec![JournalWrite {
                slot: 1,
                pre: rb(0),
                post: rb(7),
            }],
            dropped: None,
        };
        let ours = |s: u32| {
            if s == 1 {
                [0u8; POOL_RECORD_SIZE]
            } else {
                [5u8; POOL_RECORD_SIZE]
            }
        };
        // The extension never happened (or was undone): nothing of ours to finish.
        assert!(matches!(
            judge(&e, EntryRole::Mutation, rec, &ours),
            Verdict::Discard(_)
        ));
        assert_eq!(
            judge(&e, EntryRole::Mutation, 2 * rec, &ours),
            Verdict::Finish {
                truncate_to: None,
                remove_slot: None
            }
        );
        let theirs = |_| [8u8; POOL_RECORD_SIZE];
        assert!(matches!(
            judge(&e, EntryRole::Mutation, 2 * rec, &theirs),
            Verdict::Discard(_)
        ));
    }
}
