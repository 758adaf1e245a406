//! Property tests for the device-message codec and the pool-file codec.
//!
//! * Every request survives `encode_request` → `decode_request`, every reply survives
//!   `encode_reply` → `decode_reply` for the op it answers.
//! * `decode_request` and `decode_reply` are total: any bytes, any length, no panic, and
//!   the answer agrees with a small reference decoder written here from docs/protocol/kvp.md §1.3.
//! * Pool files: records survive `encode_pool` → `decode_pool`; any byte string decodes
//!   to `len / 2560` records and a `len % 2560` tail; feeding the decoder in arbitrary
//!   chunks gives the same result as decoding the whole file.

use hvguest_core::kvp::record::{decode_pool, encode_pool, PoolDecoder, PoolIssue, Record};
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{
    decode_reply, decode_request, encode_reply, encode_request, DecodeError, Field, IpFields, Op,
    PoolId, Reply, Request, Status,
};
use hvguest_core::limits::{KVP_MSG_SIZE, MAX_POOL_RECORDS, POOL_RECORD_SIZE, READ_CHUNK};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// NUL-free bytes of at most `max` bytes: mostly short, sometimes long, sometimes exactly
/// `max`, sometimes printable Unicode (multi-byte UTF-8).
fn nul_free(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(1u8..=255, 0..=max.min(16)),
        2 => vec(1u8..=255, 0..=max),
        1 => vec(1u8..=255, max..=max),
        2 => "\\PC{0,20}".prop_map(move |s: String| {
            let mut b = s.into_bytes();
            b.truncate(max);
            b
        }),
    ]
}

fn key() -> impl Strategy<Value = Key> {
    nul_free(Key::FIELD - 1).prop_map(|b| Key::new(&b).expect("bounded, NUL-free"))
}

fn value() -> impl Strategy<Value = Value> {
    nul_free(Value::FIELD - 1).prop_map(|b| Value::new(&b).expect("bounded, NUL-free"))
}

fn pool_id() -> impl Strategy<Value = PoolId> {
    select(PoolId::ALL.to_vec())
}

fn any_op() -> impl Strategy<Value = Op> {
    select(vec![
        Op::Get,
        Op::Set,
        Op::Delete,
        Op::Enumerate,
        Op::GetIpInfo,
        Op::SetIpInfo,
    ])
}

/// IP fields that fit their device fields: NUL-free, one byte short of each field.
fn ip_fields() -> impl Strategy<Value = IpFields> {
    (
        nul_free(255),
        any::<u8>(),
        any::<u8>(),
        nul_free(2047),
        nul_free(2047),
        nul_free(1023),
        nul_free(2047),
    )
        .prop_map(
            |(adapter_id, addr_family, dhcp_enabled, ip_addr, sub_net, gate_way, dns_addr)| {
                IpFields {
                    adapter_id,
                    addr_family,
                    dhcp_enabled,
                    ip_addr,
                    sub_net,
                    gate_way,
                    dns_addr,
                }
            },
        )
}

/// IP fields with anything in them: NULs, and text longer than the fields.
fn wild_ip_fields() -> impl Strategy<Value = IpFields> {
    let text = |max: usize| {
        prop_oneof![
            vec(any::<u8>(), 0..=16),
            vec(any::<u8>(), 0..=max + 16),
            vec(1u8..=255, 0..=max + 16),
        ]
    };
    (
        text(256),
        any::<u8>(),
        any::<u8>(),
        text(2048),
        text(2048),
        text(1024),
        text(2048),
    )
        .prop_map(
            |(adapter_id, addr_family, dhcp_enabled, ip_addr, sub_net, gate_way, dns_addr)| {
                IpFields {
                    adapter_id,
                    addr_family,
                    dhcp_enabled,
                    ip_addr,
                    sub_net,
                    gate_way,
                    dns_addr,
                }
            },
        )
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        select(vec![
            Status::OK,
            Status::E_FAIL,
            Status::S_CONT,
            Status::NOT_SUPPORTED,
            Status::INVALID_ARG,
            Status::GUID_NOT_FOUND,
        ]),
        any::<u32>().prop_map(Status),
    ]
}

fn failure_status() -> impl Strategy<Value = Status> {
    status().prop_filter("not OK", |s| *s != Status::OK)
}

/// A reply and the op of the request it answers, such that the reply is the only
/// reading of its bytes for that op. (An OK status-only reply to GET reads back as an
/// empty value, so it is left out.)
fn reply_for_op() -> impl Strategy<Value = (Op, Reply)> {
    prop_oneof![
        value().prop_map(|v| (Op::Get, Reply::Value(v))),
        (key(), value()).prop_map(|(key, value)| (Op::Enumerate, Reply::Entry { key, value })),
        ip_fields().prop_map(|f| (Op::GetIpInfo, Reply::IpInfo(f))),
        (select(vec![Op::Set, Op::Delete, Op::SetIpInfo]), status())
            .prop_map(|(op, s)| (op, Reply::Status(s))),
        (any_op(), failure_status()).prop_map(|(op, s)| (op, Reply::Status(s))),
    ]
}

/// A 7430-byte message shaped like a request: small op and pool numbers, runs of
/// non-zero bytes (unterminated fields) and scattered bytes over a zero background.
fn shaped_message() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..8,
        0u8..7,
        vec((0usize..KVP_MSG_SIZE, 1usize..2200, 1u8..=255), 0..3),
        vec((0usize..KVP_MSG_SIZE, any::<u8>()), 0..64),
    )
        .prop_map(|(op, pool, runs, pokes)| {
            let mut buf = vec![0u8; KVP_MSG_SIZE];
            for (at, len, b) in runs {
                let end = (at + len).min(KVP_MSG_SIZE);
                buf[at..end].fill(b);
            }
            for (at, b) in pokes {
                buf[at] = b;
            }
            buf[0] = op;
            buf[1] = pool;
            buf
        })
}

/// Bytes for a pool file: runs of one byte value (long runs of zero and of non-zero
/// make both terminated and unterminated fields), cut to a length that is often not a
/// multiple of the record size.
fn pool_bytes(max_records: usize) -> impl Strategy<Value = Vec<u8>> {
    let max = max_records * POOL_RECORD_SIZE + POOL_RECORD_SIZE - 1;
    (
        vec(
            (
                1usize..3000,
                prop_oneof![2 => Just(0u8), 1 => 1u8..=255, 1 => any::<u8>()],
            ),
            0..16,
        ),
        0usize..=max,
        vec((any::<Index>(), any::<u8>()), 0..32),
    )
        .prop_map(|(runs, len, pokes)| {
            let mut out = Vec::with_capacity(len);
            for (n, b) in runs {
                out.extend(std::iter::repeat_n(b, n));
            }
            out.resize(len, 0);
            if !out.is_empty() {
                for (at, b) in pokes {
                    let i = at.index(out.len());
                    out[i] = b;
                }
            }
            out
        })
}

fn records(max: usize) -> impl Strategy<Value = Vec<Record>> {
    vec(
        (key(), value()).prop_map(|(k, v)| Record::new(k, v)),
        0..=max,
    )
}

// ---------------------------------------------------------------------------------------
// Reference decoders (docs/protocol/kvp.md §1.3, §3.2), written independently of the crate
// ---------------------------------------------------------------------------------------

/// Bytes of a fixed field up to its first NUL; `None` when it has none.
fn upto_nul(field: &[u8]) -> Option<&[u8]> {
    field.iter().position(|&b| b == 0).map(|n| &field[..n])
}

/// What a request message means. On failure, every error that applies (docs/protocol/kvp.md does
/// not say which of several problems to report first).
fn reference_request(buf: &[u8]) -> Result<Request, Vec<DecodeError>> {
    if buf.len() != KVP_MSG_SIZE {
        return Err(vec![DecodeError::WrongLength(buf.len())]);
    }
    let op = match buf[0] {
        0 => Op::Get,
        1 => Op::Set,
        2 => Op::Delete,
        3 => Op::Enumerate,
        4 => Op::GetIpInfo,
        5 => Op::SetIpInfo,
        other => return Err(vec![DecodeError::UnknownOp(other)]),
    };
    let mut errors = Vec::new();
    let mut text = |at: usize, len: usize, field: Field| match upto_nul(&buf[at..at + len]) {
        Some(t) => t.to_vec(),
        None => {
            errors.push(DecodeError::Unterminated { op, field });
            Vec::new()
        }
    };
    let pool_byte = buf[1];
    let u32_at = |at: usize| u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    let request = match op {
        Op::Get => Request::Get {
            pool: PoolId::External,
            key: Key::new(&text(16, 512, Field::Key)).unwrap(),
        },
        Op::Set => {
            let key = Key::new(&text(16, 512, Field::Key)).unwrap();
            let value = Value::new(&text(528, 2048, Field::Value)).unwrap();
            Request::Set {
                pool: PoolId::External,
                key,
                value,
            }
        }
        Op::Delete => Request::Delete {
            pool: PoolId::External,
            key: Key::new(&text(8, 512, Field::Key)).unwrap(),
        },
        Op::Enumerate => Request::Enumerate {
            pool: PoolId::External,
            index: u32_at(4),
        },
        Op::GetIpInfo | Op::SetIpInfo => {
            let f = IpFields {
                adapter_id: text(4, 256, Field::AdapterId),
                addr_family: buf[260],
                dhcp_enabled: buf[261],
                ip_addr: text(262, 2048, Field::IpAddr),
                sub_net: text(2310, 2048, Field::SubNet),
                gate_way: text(4358, 1024, Field::GateWay),
                dns_addr: text(5382, 2048, Field::DnsAddr),
            };
            if op == Op::GetIpInfo {
                Request::GetIpInfo {
                    adapter_id: f.adapter_id,
                    addr_family: f.addr_family,
                }
            } else {
                Request::SetIpInfo(f)
            }
        }
    };
    // The pool byte matters to the four pool operations only.
    let pool = match op {
        Op::Get | Op::Set | Op::Delete | Op::Enumerate => match pool_byte {
            0 => PoolId::External,
            1 => PoolId::Guest,
            2 => PoolId::Auto,
            3 => PoolId::AutoExternal,
            4 => PoolId::AutoInternal,
            p => {
                errors.push(DecodeError::BadPool { op, pool: p });
                PoolId::External
            }
        },
        Op::GetIpInfo | Op::SetIpInfo => PoolId::External,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(match request {
        Request::Get { key, .. } => Request::Get { pool, key },
        Request::Set { key, value, .. } => Request::Set { pool, key, value },
        Request::Delete { key, .. } => Request::Delete { pool, key },
        Request::Enumerate { index, .. } => Request::Enumerate { pool, index },
        other => other,
    })
}

/// One pool record as a reader bounded by its fields sees it: text up to the first
/// NUL, or the field minus one byte when there is none.
fn reference_record(bytes: &[u8]) -> Record {
    let (k, v) = bytes.split_at(512);
    let cut = |f: &[u8]| upto_nul(f).unwrap_or(&f[..f.len() - 1]).to_vec();
    Record::new(Key::new(&cut(k)).unwrap(), Value::new(&cut(v)).unwrap())
}

/// The bytes `encode_reply` must produce for IP fields: each field cut at its first NUL
/// and to one byte short of its size, zero everywhere else.
fn reference_ip_reply(f: &IpFields) -> Vec<u8> {
    let mut buf = vec![0u8; KVP_MSG_SIZE];
    let mut put = |at: usize, len: usize, text: &[u8]| {
        let text = &text[..text.len().min(len - 1)];
        let text = upto_nul(text).unwrap_or(text);
        buf[at..at + text.len()].copy_from_slice(text);
    };
    put(4, 256, &f.adapter_id);
    put(262, 2048, &f.ip_addr);
    put(2310, 2048, &f.sub_net);
    put(4358, 1024, &f.gate_way);
    put(5382, 2048, &f.dns_addr);
    buf[260] = f.addr_family;
    buf[261] = f.dhcp_enabled;
    buf
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i))
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// Encodes, checks the header bytes, decodes.
fn request_round_trip(req: &Request) -> Result<(), TestCaseError> {
    let buf = encode_request(req);
    prop_assert_eq!(buf.len(), KVP_MSG_SIZE);
    prop_assert_eq!(buf[0], req.op() as u8);
    match req {
        Request::Get { pool, .. }
        | Request::Set { pool, .. }
        | Request::Delete { pool, .. }
        | Request::Enumerate { pool, .. } => prop_assert_eq!(buf[1], *pool as u8),
        Request::GetIpInfo { .. } | Request::SetIpInfo(_) => {}
    }
    prop_assert_eq!(decode_request(&buf[..]), Ok(req.clone()));
    prop_assert_eq!(reference_request(&buf[..]), Ok(req.clone()));
    Ok(())
}

proptest! {
    #[test]
    fn get_round_trips(pool in pool_id(), key in key()) {
        request_round_trip(&Request::Get { pool, key })?;
    }

    #[test]
    fn set_round_trips(pool in pool_id(), key in key(), value in value()) {
        request_round_trip(&Request::Set { pool, key, value })?;
    }

    #[test]
    fn delete_round_trips(pool in pool_id(), key in key()) {
        request_round_trip(&Request::Delete { pool, key })?;
    }

    #[test]
    fn enumerate_round_trips(pool in pool_id(), index in any::<u32>()) {
        request_round_trip(&Request::Enumerate { pool, index })?;
    }

    #[test]
    fn get_ip_info_round_trips(adapter_id in nul_free(255), addr_family in any::<u8>()) {
        request_round_trip(&Request::GetIpInfo { adapter_id, addr_family })?;
    }

    #[test]
    fn set_ip_info_round_trips(fields in ip_fields()) {
        request_round_trip(&Request::SetIpInfo(fields))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Arbitrary bytes in a request-shaped message: no panic, and the same meaning as
    /// the reference decoder. A decoded request re-encodes to something that decodes
    /// to the same request.
    #[test]
    fn decode_request_agrees_with_reference(buf in shaped_message()) {
        check_decode(&buf)?;
    }

    /// Fully random 7430-byte messages.
    #[test]
    fn decode_request_total_on_random_messages(
        buf in vec(any::<u8>(), KVP_MSG_SIZE..=KVP_MSG_SIZE)
    ) {
        check_decode(&buf)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any length: anything but 7430 bytes is `WrongLength`.
    #[test]
    fn decode_request_total_on_any_length(buf in vec(any::<u8>(), 0..9000)) {
        let got = decode_request(&buf);
        if buf.len() != KVP_MSG_SIZE {
            prop_assert_eq!(got, Err(DecodeError::WrongLength(buf.len())));
        } else {
            check_decode(&buf)?;
        }
        for op in [Op::Get, Op::Set, Op::Delete, Op::Enumerate, Op::GetIpInfo, Op::SetIpInfo] {
            let reply = decode_reply(op, &buf);
            if buf.len() != KVP_MSG_SIZE {
                prop_assert_eq!(reply, Err(DecodeError::WrongLength(buf.len())));
            }
        }
    }
}

fn check_decode(buf: &[u8]) -> Result<(), TestCaseError> {
    let got = decode_request(buf);
    match (&got, reference_request(buf)) {
        (Ok(r), Ok(want)) => {
            prop_assert_eq!(r, &want);
            prop_assert_eq!(decode_request(&encode_request(r)[..]), Ok(r.clone()));
        }
        (Err(e), Err(allowed)) => {
            prop_assert!(
                allowed.contains(e),
                "decoded error {:?}, the reference allows {:?}",
                e,
                allowed
            );
            prop_assert_ne!(e.status(), Status::OK);
            prop_assert_eq!(
                e.op(),
                Op::from_u8(buf[0]).filter(|_| buf.len() == KVP_MSG_SIZE)
            );
        }
        (got, want) => prop_assert!(false, "decoded {:?}, reference {:?}", got, want),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn reply_round_trips((op, reply) in reply_for_op()) {
        let buf = encode_reply(&reply);
        prop_assert_eq!(buf.len(), KVP_MSG_SIZE);
        prop_assert_eq!(&buf[0..4], &reply.status().0.to_le_bytes()[..]);
        prop_assert_eq!(decode_reply(op, &buf[..]), Ok(reply));
    }

    /// Everything outside the reply's text, and after each terminator, is zero.
    #[test]
    fn text_replies_are_zero_padded(key in key(), value in value()) {
        let mut want = vec![0u8; KVP_MSG_SIZE];
        want[528..528 + value.len()].copy_from_slice(value.as_bytes());
        let got = encode_reply(&Reply::Value(value.clone()));
        prop_assert_eq!(first_difference(&got[..], &want), None);

        let mut want = vec![0u8; KVP_MSG_SIZE];
        want[20..20 + key.len()].copy_from_slice(key.as_bytes());
        want[532..532 + value.len()].copy_from_slice(value.as_bytes());
        let got = encode_reply(&Reply::Entry { key, value });
        prop_assert_eq!(first_difference(&got[..], &want), None);
    }

    /// IP fields with NULs or overlong text are cut inside their fields and terminated.
    #[test]
    fn ip_info_replies_are_cut_and_zero_padded(fields in wild_ip_fields()) {
        let got = encode_reply(&Reply::IpInfo(fields.clone()));
        let want = reference_ip_reply(&fields);
        prop_assert_eq!(first_difference(&got[..], &want), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `decode_reply` is total and reads text bounded by each field.
    #[test]
    fn decode_reply_total(buf in shaped_message(), op in any_op(), status_zero in any::<bool>()) {
        let mut buf = buf;
        if status_zero {
            buf[0..4].fill(0);
        }
        let got = decode_reply(op, &buf).expect("right length");
        let status = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let cut = |at: usize, len: usize| {
            let f = &buf[at..at + len];
            upto_nul(f).unwrap_or(&f[..len - 1]).to_vec()
        };
        let want = if status != 0 {
            Reply::Status(Status(status))
        } else {
            match op {
                Op::Get => Reply::Value(Value::new(&cut(528, 2048)).unwrap()),
                Op::Enumerate => Reply::Entry {
                    key: Key::new(&cut(20, 512)).unwrap(),
                    value: Value::new(&cut(532, 2048)).unwrap(),
                },
                Op::GetIpInfo => Reply::IpInfo(IpFields {
                    adapter_id: cut(4, 256),
                    addr_family: buf[260],
                    dhcp_enabled: buf[261],
                    ip_addr: cut(262, 2048),
                    sub_net: cut(2310, 2048),
                    gate_way: cut(4358, 1024),
                    dns_addr: cut(5382, 2048),
                }),
                Op::Set | Op::Delete | Op::SetIpInfo => Reply::Status(Status::OK),
            }
        };
        prop_assert_eq!(got, want);
    }
}

// ---------------------------------------------------------------------------------------
// Pool files
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn pool_round_trips(records in records(6)) {
        let file = encode_pool(&records);
        prop_assert_eq!(file.len(), records.len() * POOL_RECORD_SIZE);
        let decoded = decode_pool(&file);
        prop_assert_eq!(decoded.partial_tail, 0);
        prop_assert_eq!(decoded.total_records, records.len());
        // Only empty keys are worth reporting in a file we wrote ourselves.
        for issue in &decoded.issues {
            match issue {
                PoolIssue::Flawed { index, flaws } => {
                    prop_assert!(records[*index].key.is_empty(), "{:?}", issue);
                    prop_assert!(flaws.empty_key, "{:?}", issue);
                }
                other => prop_assert!(false, "unexpected issue {:?}", other),
            }
        }
        prop_assert_eq!(decoded.records, records);
    }

    #[test]
    fn pool_decode_total(bytes in pool_bytes(6)) {
        let decoded = decode_pool(&bytes);
        let whole = bytes.len() / POOL_RECORD_SIZE;
        let tail = bytes.len() % POOL_RECORD_SIZE;
        prop_assert!(whole <= MAX_POOL_RECORDS);
        prop_assert_eq!(decoded.records.len(), whole);
        prop_assert_eq!(decoded.total_records, whole);
        prop_assert_eq!(decoded.partial_tail, tail);
        prop_assert_eq!(
            decoded.issues.contains(&PoolIssue::PartialRecord { bytes: tail }),
            tail > 0
        );
        for (i, chunk) in bytes.chunks_exact(POOL_RECORD_SIZE).enumerate() {
            prop_assert_eq!(&decoded.records[i], &reference_record(chunk), "record {}", i);
        }
        // What we decoded, written back, reads the same.
        prop_assert_eq!(decode_pool(&encode_pool(&decoded.records)).records, decoded.records);
    }

    #[test]
    fn chunked_decode_equals_whole(
        bytes in pool_bytes(5),
        cuts in vec(any::<Index>(), 0..10),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut d = PoolDecoder::new();
        let mut fed = 0;
        for cut in cuts {
            d.feed(&bytes[fed..cut]);
            fed = cut;
            prop_assert_eq!(d.offset(), fed as u64);
        }
        prop_assert_eq!(d.finish(), decode_pool(&bytes));
    }
}

/// One byte at a time is the most extreme chunking.
#[test]
fn byte_at_a_time_equals_whole() {
    let records: Vec<Record> = (0..3)
        .map(|i| {
            Record::new(
                Key::new(format!("key{i}").as_bytes()).unwrap(),
                Value::new(&vec![b'a' + i as u8; 100 * i + 1]).unwrap(),
            )
        })
        .collect();
    let mut file = encode_pool(&records);
    file.extend_from_slice(&[7u8; 1234]);
    let mut d = PoolDecoder::new();
    for b in &file {
        d.feed(std::slice::from_ref(b));
    }
    let got = d.finish();
    assert_eq!(got, decode_pool(&file));
    assert_eq!(got.records, records);
    assert_eq!(got.partial_tail, 1234);
}

/// Beyond the limit: records are held up to it, the rest counted and reported.
#[test]
fn pool_over_the_limit_is_counted_not_held() {
    let one = Record::new(Key::new(b"k").unwrap(), Value::new(b"v").unwrap());
    let per_chunk = READ_CHUNK / POOL_RECORD_SIZE;
    let chunk = encode_pool(&vec![one.clone(); per_chunk]);
    let total = MAX_POOL_RECORDS + 1;
    let mut d = PoolDecoder::new();
    let mut fed = 0;
    while fed < total {
        let n = per_chunk.min(total - fed);
        d.feed(&chunk[..n * POOL_RECORD_SIZE]);
        fed += n;
    }
    let decoded = d.finish();
    assert_eq!(decoded.records.len(), MAX_POOL_RECORDS);
    assert!(decoded.records.iter().all(|r| *r == one));
    assert_eq!(decoded.total_records, total);
    assert_eq!(decoded.partial_tail, 0);
    assert_eq!(decoded.issues, vec![PoolIssue::TooManyRecords { total }]);
}

/// The whole-file issues (`PartialRecord`, `TooManyRecords`) must not be crowded out by
/// per-record issues: 32 records with empty keys fill the issue list first.
#[test]
fn file_issues_survive_many_flawed_records() {
    // 32 all-zero records (each flagged for its empty key) and a 1-byte tail.
    let file = vec![0u8; 32 * POOL_RECORD_SIZE + 1];
    let decoded = decode_pool(&file);
    assert_eq!(decoded.partial_tail, 1);
    assert!(
        decoded
            .issues
            .contains(&PoolIssue::PartialRecord { bytes: 1 }),
        "issues: {:?}",
        decoded.issues
    );

    // Past the limit with flawed records: the overflow must still be reported.
    let chunk = vec![0u8; READ_CHUNK];
    let per_chunk = READ_CHUNK / POOL_RECORD_SIZE;
    let total = MAX_POOL_RECORDS + 1;
    let mut d = PoolDecoder::new();
    let mut fed = 0;
    while fed < total {
        let n = per_chunk.min(total - fed);
        d.feed(&chunk[..n * POOL_RECORD_SIZE]);
        fed += n;
    }
    let decoded = d.finish();
    assert_eq!(decoded.total_records, total);
    assert!(decoded
        .issues
        .contains(&PoolIssue::TooManyRecords { total }));
}

// ---------------------------------------------------------------------------------------
// The freezer's line protocol (core::vss::freezer)
// ---------------------------------------------------------------------------------------

mod freezer_lines {
    use std::time::Duration;

    use hvguest_core::time::Instant;
    use hvguest_core::vss::effect::VssResult;
    use hvguest_core::vss::freezer::{
        Command, FreezerCore, FreezerInput, FreezerOutput, LineBuffer, Reply,
    };
    use hvguest_core::vss::policy::Fsid;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (
                any::<String>(),
                proptest::option::of(any::<[i32; 2]>()),
                any::<u32>()
            )
                .prop_filter_map("a mount", |(m, fsid, ms)| {
                    (!m.is_empty()).then(|| Command::Suspend {
                        mount: m,
                        fsid: fsid.map(Fsid),
                        auto_thaw_after: Duration::from_millis(u64::from(ms)),
                    })
                }),
            Just(Command::Resume),
            proptest::option::of(any::<u32>()).prop_map(|ms| Command::Ping {
                auto_thaw_after: ms.map(|m| Duration::from_millis(u64::from(m))),
            }),
        ]
    }

    proptest! {
        /// Every command survives encode → decode (mount points with spaces, newlines and
        /// backslashes included), as one line.
        #[test]
        fn commands_round_trip(c in command()) {
            let line = c.encode();
            prop_assert_eq!(line.matches('\n').count(), 1);
            if line.len() <= hvguest_core::limits::FREEZER_MAX_LINE {
                prop_assert_eq!(Command::decode(line.as_bytes()), Ok(c));
            }
        }

        /// Any bytes: a value or an error, never a panic; a reply line always means
        /// something to the machine.
        #[test]
        fn decoding_is_total(bytes in vec(any::<u8>(), 0..64)) {
            // Only that they return: every outcome is a value.
            let _ = Command::decode(&bytes);
            let _ = Reply::decode(&bytes);
            let r = Reply::result_of(&bytes);
            prop_assert!(matches!(r, VssResult::Done | VssResult::Failed(_)));
        }

        /// Whatever arrives on its stdin, in whatever pieces, the freezer answers each
        /// line once and never panics; UFSSUSPENDs it asks for all succeed here.
        #[test]
        fn the_freezer_answers_every_line(chunks in vec(vec(any::<u8>(), 0..40), 0..20)) {
            let mut f = FreezerCore::new(Instant(0));
            let mut lines = LineBuffer::default();
            let (mut fed, mut replies) = (0usize, 0usize);
            for (i, chunk) in chunks.iter().enumerate() {
                for line in lines.push(chunk) {
                    fed += 1;
                    let mut input = Some(FreezerInput::Line(line));
                    while let Some(inp) = input.take() {
                        f.handle(Instant(i as u64), inp);
                        while let Some(o) = f.poll_output() {
                            match o {
                                FreezerOutput::Suspend { .. } => {
                                    input = Some(FreezerInput::Suspended(Ok(())));
                                }
                                FreezerOutput::Reply(r) => {
                                    prop_assert!(r.ends_with('\n'));
                                    prop_assert_eq!(r.matches('\n').count(), 1);
                                    replies += 1;
                                }
                                FreezerOutput::Resume(_) => {}
                                FreezerOutput::Exit(_) => prop_assert!(false, "exit on a line"),
                            }
                        }
                    }
                }
            }
            prop_assert_eq!(fed, replies);
            f.handle(Instant(1_000), FreezerInput::InputClosed);
            let mut out = Vec::new();
            while let Some(o) = f.poll_output() {
                out.push(o);
            }
            prop_assert_eq!(out.last(), Some(&FreezerOutput::Exit(0)));
            prop_assert!(!f.is_holding());
        }
    }
}
