//! The pool file: a bare array of 2560-byte records (docs/protocol/kvp.md §3.2).
//!
//! Other programs (cloud-init, azure-init, `hv_kvp_cmd`, scripts) read and append to the
//! same files, so the format is exactly the stock one: no header, no checksum. Decoding
//! accepts any bytes and reports what was odd; encoding always zero-pads (the stock
//! daemon left stale bytes after terminators, problem K6).

use crate::kvp::text::{Key, Value};
use crate::limits::{KVP_KEY_FIELD, MAX_POOL_RECORDS, MAX_REPORTED_POOL_ISSUES, POOL_RECORD_SIZE};

/// One record as stored.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Record {
    pub key: Key,
    pub value: Value,
}

/// Encoded record bytes.
pub type RecordBytes = [u8; POOL_RECORD_SIZE];

impl Record {
    pub fn new(key: Key, value: Value) -> Record {
        Record { key, value }
    }

    pub fn encode(&self) -> RecordBytes {
        let mut out = [0u8; POOL_RECORD_SIZE];
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut RecordBytes) {
        let (k, v) = out.split_at_mut(KVP_KEY_FIELD);
        self.key.write_padded(k);
        self.value.write_padded(v);
    }

    /// Decodes one full record, reporting anything a strict reader would trip on.
    pub fn decode(bytes: &RecordBytes) -> (Record, RecordFlaws) {
        let (k, v) = bytes.split_at(KVP_KEY_FIELD);
        let (key, key_flaw) = field(k);
        let (value, value_flaw) = field(v);
        let flaws = RecordFlaws {
            key: key_flaw,
            value: value_flaw,
            empty_key: key.is_empty(),
        };
        (
            Record {
                // `field` returns at most len-1 bytes with no NUL.
                key: Key::new(key).expect("bounded by field"),
                value: Value::new(value).expect("bounded by field"),
            },
            flaws,
        )
    }
}

/// What was wrong with one string field of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FieldFlaw {
    #[default]
    None,
    /// Non-zero bytes after the terminator (the stock daemon's stale bytes).
    GarbageAfterTerminator,
    /// No terminator: the string was cut one byte short of the field.
    Unterminated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RecordFlaws {
    pub key: FieldFlaw,
    pub value: FieldFlaw,
    pub empty_key: bool,
}

impl RecordFlaws {
    pub fn any(&self) -> bool {
        *self != RecordFlaws::default()
    }
}

fn field(f: &[u8]) -> (&[u8], FieldFlaw) {
    match nul_at(f) {
        Some(end) => {
            let flaw = if !all_zero(&f[end..]) {
                FieldFlaw::GarbageAfterTerminator
            } else {
                FieldFlaw::None
            };
            (&f[..end], flaw)
        }
        None => (&f[..f.len() - 1], FieldFlaw::Unterminated),
    }
}

/// Where the first NUL is. Values run up to 2 KB; each 64-byte block is first tested
/// with `contains`, which searches a word at a time, and only the block holding the NUL
/// a byte at a time. Same answer as `position`.
fn nul_at(bytes: &[u8]) -> Option<usize> {
    let block = bytes.chunks(64).position(|c| c.contains(&0))?;
    let start = block * 64;
    bytes[start..]
        .iter()
        .position(|&b| b == 0)
        .map(|i| start + i)
}

/// Whether every byte is zero. The padding after a terminator is most of a record (2.5 KB
/// of zeros for a short key and value) and is checked on every load, so this ORs the bytes
/// together, which the compiler turns into wide vector operations, instead of testing
/// them one at a time the way `any` must (it stops early). Same answer either way.
fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |acc, &b| acc | b) == 0
}

/// Something about a pool file worth telling the administrator. None of these stop the
/// daemon: the records are served as decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolIssue {
    /// The file ends with a partial record of this many bytes (ignored, like the stock
    /// daemon; usually a torn append by another program).
    PartialRecord {
        bytes: usize,
    },
    Flawed {
        index: usize,
        flaws: RecordFlaws,
    },
    /// A later record with the same key as an earlier one; lookups see the first.
    Duplicate {
        index: usize,
        first: usize,
    },
    /// More records than we hold; the rest are left in the file, unread and untouched.
    TooManyRecords {
        total: usize,
    },
    /// Per-record issues beyond [`MAX_REPORTED_POOL_ISSUES`]: counted, not listed.
    NotReported {
        count: usize,
    },
}

/// Incremental decoder: pools are read in chunks so a large file never sits in memory
/// twice. Feed it the file from offset 0 in order.
#[derive(Debug, Default)]
pub struct PoolDecoder {
    records: Vec<Record>,
    issues: Vec<PoolIssue>,
    carry: Vec<u8>,
    total: usize,
    /// Per-record issues past the cap.
    unreported: usize,
}

impl PoolDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes consumed so far; the next chunk must start here.
    pub fn offset(&self) -> u64 {
        (self.total * POOL_RECORD_SIZE + self.carry.len()) as u64
    }

    pub fn feed(&mut self, mut chunk: &[u8]) {
        if !self.carry.is_empty() {
            let need = POOL_RECORD_SIZE - self.carry.len();
            let take = need.min(chunk.len());
            self.carry.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.carry.len() == POOL_RECORD_SIZE {
                let mut rec = [0u8; POOL_RECORD_SIZE];
                rec.copy_from_slice(&self.carry);
                self.carry.clear();
                self.push(&rec);
            }
        }
        let mut it = chunk.chunks_exact(POOL_RECORD_SIZE);
        for rec in &mut it {
            // chunks_exact yields exactly POOL_RECORD_SIZE bytes.
            self.push(rec.try_into().expect("exact chunk"));
        }
        self.carry.extend_from_slice(it.remainder());
    }

    fn report(&mut self, issue: PoolIssue) {
        if self.issues.len() < MAX_REPORTED_POOL_ISSUES {
            self.issues.push(issue);
        } else {
            self.unreported += 1;
        }
    }

    fn push(&mut self, rec: &RecordBytes) {
        let index = self.total;
        self.total += 1;
        if index >= MAX_POOL_RECORDS {
            return;
        }
        let (record, flaws) = Record::decode(rec);
        if flaws.any() {
            self.report(PoolIssue::Flawed { index, flaws });
        }
        self.records.push(record);
    }

    pub fn finish(self) -> DecodedPool {
        self.finish_unread(0)
    }

    /// Ends a file whose last `unread` bytes were deliberately not fed: past
    /// [`MAX_POOL_RECORDS`] nothing is held, so nothing there is read. They count as
    /// records (and a partial tail) exactly as if they had been fed.
    pub fn finish_unread(mut self, unread: u64) -> DecodedPool {
        if unread > 0 {
            let rest = self.carry.len() as u64 + unread;
            let whole = usize::try_from(rest / POOL_RECORD_SIZE as u64).unwrap_or(usize::MAX);
            self.total = self.total.saturating_add(whole);
            // The tail is shorter than a record: it fits.
            let tail = (rest % POOL_RECORD_SIZE as u64) as usize;
            self.carry.clear();
            self.carry.resize(tail, 0);
        }
        if self.unreported > 0 {
            let count = self.unreported;
            self.issues.push(PoolIssue::NotReported { count });
        }
        if !self.carry.is_empty() {
            let bytes = self.carry.len();
            self.issues.push(PoolIssue::PartialRecord { bytes });
        }
        if self.total > MAX_POOL_RECORDS {
            let total = self.total;
            self.issues.push(PoolIssue::TooManyRecords { total });
        }
        DecodedPool {
            records: self.records,
            issues: self.issues,
            partial_tail: self.carry.len(),
            total_records: self.total,
        }
    }
}

/// A decoded pool file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodedPool {
    /// Records in file order, at most `MAX_POOL_RECORDS`.
    pub records: Vec<Record>,
    pub issues: Vec<PoolIssue>,
    /// Bytes of a trailing partial record.
    pub partial_tail: usize,
    /// Whole records in the file, including any beyond the limit.
    pub total_records: usize,
}

/// Decodes a whole pool file held in memory.
pub fn decode_pool(bytes: &[u8]) -> DecodedPool {
    let mut d = PoolDecoder::new();
    d.feed(bytes);
    d.finish()
}

/// Encodes records as a pool file.
pub fn encode_pool(records: &[Record]) -> Vec<u8> {
    let mut out = vec![0u8; records.len() * POOL_RECORD_SIZE];
    for (r, slot) in records.iter().zip(out.chunks_exact_mut(POOL_RECORD_SIZE)) {
        r.encode_into(slot.try_into().expect("exact chunk"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, v: &str) -> Record {
        Record::new(
            Key::new(k.as_bytes()).unwrap(),
            Value::new(v.as_bytes()).unwrap(),
        )
    }

    #[test]
    fn issues_past_the_cap_are_counted_not_dropped() {
        // Empty keys are flawed records.
        let file = encode_pool(&vec![rec("", "x"); MAX_REPORTED_POOL_ISSUES + 8]);
        let d = decode_pool(&file);
        assert_eq!(d.records.len(), MAX_REPORTED_POOL_ISSUES + 8);
        assert_eq!(d.issues.len(), MAX_REPORTED_POOL_ISSUES + 1);
        assert_eq!(d.issues.last(), Some(&PoolIssue::NotReported { count: 8 }));
    }

    #[test]
    fn nul_at_and_all_zero_answer_as_the_plain_scans() {
        let mut f = vec![b'x'; 700];
        for at in [0, 1, 63, 64, 65, 127, 128, 500, 699] {
            f[at] = 0;
            assert_eq!(nul_at(&f), f.iter().position(|&b| b == 0), "{at}");
            f[at] = b'x';
        }
        assert_eq!(nul_at(&f), None);
        assert_eq!(nul_at(&[]), None);
        let mut z = vec![0u8; 2048];
        assert!(all_zero(&z));
        z[2047] = 1;
        assert!(!all_zero(&z));
    }

    #[test]
    fn record_layout_matches_spec_vector_3() {
        let bytes = rec("foo", "bar").encode();
        assert_eq!(&bytes[0..3], b"foo");
        assert_eq!(&bytes[512..515], b"bar");
        let nonzero: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != 0).collect();
        assert_eq!(nonzero, vec![0, 1, 2, 512, 513, 514]);
    }

    #[test]
    fn odd_files_decode_and_report() {
        let mut file = encode_pool(&[rec("a", "1"), rec("", "2")]);
        file[KVP_KEY_FIELD + 5] = b'x'; // garbage after the value's terminator
        file.extend_from_slice(&[0xff; 100]); // partial trailing record
        let d = decode_pool(&file);
        assert_eq!(d.records, vec![rec("a", "1"), rec("", "2")]);
        assert_eq!(d.partial_tail, 100);
        assert!(d.issues.contains(&PoolIssue::PartialRecord { bytes: 100 }));
        assert!(d
            .issues
            .iter()
            .any(|i| matches!(i, PoolIssue::Flawed { index: 0, flaws }
            if flaws.value == FieldFlaw::GarbageAfterTerminator)));
        assert!(d
            .issues
            .iter()
            .any(|i| matches!(i, PoolIssue::Flawed { index: 1, flaws }
            if flaws.empty_key)));
    }

    #[test]
    fn unterminated_fields_are_cut_inside_the_field() {
        let bytes = [b'k'; POOL_RECORD_SIZE];
        let (r, flaws) = Record::decode(&bytes);
        assert_eq!(r.key.len(), 511);
        assert_eq!(r.value.len(), 2047);
        assert_eq!(flaws.key, FieldFlaw::Unterminated);
        assert_eq!(flaws.value, FieldFlaw::Unterminated);
    }

    #[test]
    fn unread_bytes_count_as_records_and_a_tail() {
        let file = encode_pool(&[rec("a", "1"), rec("b", "2"), rec("c", "3")]);
        let mut with_tail = file.clone();
        with_tail.extend_from_slice(&[9; 10]);
        let mut d = PoolDecoder::new();
        d.feed(&file[..POOL_RECORD_SIZE]);
        let got = d.finish_unread((with_tail.len() - POOL_RECORD_SIZE) as u64);
        assert_eq!(got.records, vec![rec("a", "1")]);
        assert_eq!(got.total_records, 3);
        assert_eq!(got.partial_tail, 10);
        assert!(got.issues.contains(&PoolIssue::PartialRecord { bytes: 10 }));
    }

    #[test]
    fn chunked_feeding_equals_whole() {
        let file = encode_pool(
            &(0..10)
                .map(|i| rec(&format!("k{i}"), "v"))
                .collect::<Vec<_>>(),
        );
        let mut d = PoolDecoder::new();
        for c in file.chunks(777) {
            d.feed(c);
        }
        assert_eq!(d.finish(), decode_pool(&file));
    }
}
