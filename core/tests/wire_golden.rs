//! Golden bytes for the device messages of docs/protocol/kvp.md §8 (test vectors 1–12).
//!
//! Requests are assembled here byte by byte from docs/protocol/kvp.md §1.3 (never through
//! `encode_request`), so a layout mistake shared by the encoder and the decoder cannot
//! hide. Replies come from `encode_reply` and are compared against the whole 7430-byte
//! message: the listed bytes at their offsets, and zero everywhere else.
//!
//! Vectors that are about the machine (refusals, timeouts, re-reads) are checked here
//! only as far as the codec, the pool and the auto pool can show them.

use core::net::IpAddr;

use hvguest_core::kvp::auto::{AutoPool, SystemInfo, AUTO_KEYS};
use hvguest_core::kvp::ip::{AdapterInfo, IfAddr, Mac};
use hvguest_core::kvp::pool::{Outcome, Plan, Pool};
use hvguest_core::kvp::record::{decode_pool, encode_pool, PoolDecoder, Record};
use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{
    decode_reply, decode_request, encode_reply, kernel_size_field, registration, DecodeError,
    Field, IpFields, Op, PoolId, Reply, Request, Status,
};
use hvguest_core::limits::{KVP_KERNEL_DEADLINE, KVP_MSG_SIZE, KVP_REPLY_BUDGET, POOL_RECORD_SIZE};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A 7430-byte message, zero except for the given spans.
fn message(spans: &[(usize, &[u8])]) -> Vec<u8> {
    sized(KVP_MSG_SIZE, spans)
}

/// A zeroed buffer of `len` bytes with the given spans written in.
fn sized(len: usize, spans: &[(usize, &[u8])]) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    for &(at, bytes) in spans {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
    }
    buf
}

/// Little-endian u32, as every integer in the message.
fn le(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// Asserts `actual` is exactly `expected`, naming the first differing offset.
fn assert_bytes(what: &str, actual: &[u8], expected: &[u8]) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    if let Some(at) = (0..actual.len()).find(|&i| actual[i] != expected[i]) {
        let nonzero: Vec<usize> = (0..actual.len()).filter(|&i| actual[i] != 0).collect();
        panic!(
            "{what}: first difference at offset {at}: got {:#04x}, expected {:#04x} \
             (non-zero offsets in the actual bytes: {nonzero:?})",
            actual[at], expected[at]
        );
    }
}

/// Asserts a message holds exactly these spans and zero everywhere else.
fn assert_message(what: &str, actual: &[u8], spans: &[(usize, &[u8])]) {
    assert_eq!(
        actual.len(),
        KVP_MSG_SIZE,
        "{what}: a message is 7430 bytes"
    );
    assert_bytes(what, actual, &message(spans));
}

fn key(s: &str) -> Key {
    Key::new(s.as_bytes()).expect("test key")
}

fn value(s: &str) -> Value {
    Value::new(s.as_bytes()).expect("test value")
}

fn rec(k: &str, v: &str) -> Record {
    Record::new(key(k), value(v))
}

/// `key_size`/`value_size` the kernel reports to the host for text we send back
/// (docs/protocol/kvp.md §2.4: `2 * (units + 1)`).
fn host_size(units: usize) -> usize {
    2 * (units + 1)
}

fn apply(pool: &mut Pool, plan: Plan) {
    match plan {
        Plan::Write(m) => pool.apply(&m),
        Plan::Done(o) => panic!("expected a write, got {o:?}"),
    }
}

fn sample_info() -> SystemInfo {
    SystemInfo {
        fqdn: "vm1.example.net".into(),
        os_name: "FreeBSD".into(),
        os_release: "14.1-RELEASE-p3".into(),
        machine: "amd64".into(),
        addrs: vec![hvguest_core::kvp::addresses::InterfaceAddr {
            interface: "hn0".into(),
            addr: "10.0.0.4".parse().unwrap(),
        }],
    }
}

const S_CONT_BYTES: [u8; 4] = [0x03, 0x01, 0x07, 0x80];
const E_FAIL_BYTES: [u8; 4] = [0x05, 0x40, 0x00, 0x80];
const NOT_SUPPORTED_BYTES: [u8; 4] = [0x32, 0x00, 0x07, 0x80];

// ---------------------------------------------------------------------------------------
// Constants and status encodings
// ---------------------------------------------------------------------------------------

#[test]
fn status_codes_are_the_spec_hresults() {
    assert_eq!(Status::OK.0, 0x0000_0000);
    assert_eq!(Status::E_FAIL.0, 0x8000_4005);
    assert_eq!(Status::S_CONT.0, 0x8007_0103);
    assert_eq!(Status::NOT_SUPPORTED.0, 0x8007_0032);
    assert_eq!(Status::INVALID_ARG.0, 0x8007_0057);
    assert_eq!(Status::GUID_NOT_FOUND.0, 0x8004_1002);
    for (status, bytes) in [
        (Status::S_CONT, S_CONT_BYTES),
        (Status::E_FAIL, E_FAIL_BYTES),
        (Status::NOT_SUPPORTED, NOT_SUPPORTED_BYTES),
        (Status::INVALID_ARG, [0x57, 0x00, 0x07, 0x80]),
        (Status::GUID_NOT_FOUND, [0x02, 0x10, 0x04, 0x80]),
        (Status(0xdead_beef), [0xef, 0xbe, 0xad, 0xde]),
    ] {
        let buf = encode_reply(&Reply::Status(status));
        assert_message(&format!("{status:?}"), &buf[..], &[(0, &bytes)]);
        for op in [
            Op::Get,
            Op::Set,
            Op::Delete,
            Op::Enumerate,
            Op::GetIpInfo,
            Op::SetIpInfo,
        ] {
            assert_eq!(decode_reply(op, &buf[..]), Ok(Reply::Status(status)));
        }
    }
    // An OK status-only reply is all zero.
    assert_message("OK", &encode_reply(&Reply::Status(Status::OK))[..], &[]);
}

#[test]
fn op_and_pool_numbers() {
    let ops = [
        (0u8, Op::Get),
        (1, Op::Set),
        (2, Op::Delete),
        (3, Op::Enumerate),
        (4, Op::GetIpInfo),
        (5, Op::SetIpInfo),
    ];
    for (n, op) in ops {
        assert_eq!(Op::from_u8(n), Some(op));
        assert_eq!(op as u8, n);
    }
    for n in 6..=255u8 {
        assert_eq!(Op::from_u8(n), None, "op {n}");
    }
    for (n, pool) in PoolId::ALL.iter().enumerate() {
        assert_eq!(pool.index(), n);
        assert_eq!(PoolId::from_u8(n as u8), Some(*pool));
        assert_eq!(pool.file_name(), format!(".kvp_pool_{n}"));
    }
    for n in 5..=255u8 {
        assert_eq!(PoolId::from_u8(n), None, "pool {n}");
    }
    assert!(!PoolId::FILE_BACKED.contains(&PoolId::Auto));
}

// ---------------------------------------------------------------------------------------
// Vector 1: registration
// ---------------------------------------------------------------------------------------

#[test]
fn vector_01_registration() {
    let reg = registration();
    assert_eq!(reg.len(), 7430);
    assert_message("registration", &reg[..], &[(0, &[0x04])]);
}

// ---------------------------------------------------------------------------------------
// Vector 2: GET pool 0 "foo"
// ---------------------------------------------------------------------------------------

fn vector_02_request() -> Vec<u8> {
    message(&[
        (0, &[0x00]),
        (1, &[0x00]),
        (8, &[0x04, 0x00, 0x00, 0x00]),
        (16, &[0x66, 0x6f, 0x6f, 0x00]),
    ])
}

#[test]
fn vector_02_get_request_decodes() {
    let req = vector_02_request();
    assert_eq!(
        decode_request(&req),
        Ok(Request::Get {
            pool: PoolId::External,
            key: key("foo"),
        })
    );
    // The kernel's key_size for "foo" sent as 66 00 6f 00 6f 00 00 00 (host size 8).
    assert_eq!(kernel_size_field(b"foo"), 4);
}

#[test]
fn vector_02_get_found_reply() {
    let buf = encode_reply(&Reply::Value(value("bar")));
    assert_message(
        "GET found",
        &buf[..],
        &[
            (0, &[0x00, 0x00, 0x00, 0x00]),
            (528, &[0x62, 0x61, 0x72, 0x00]),
        ],
    );
    assert_eq!(
        decode_reply(Op::Get, &buf[..]),
        Ok(Reply::Value(value("bar")))
    );
    // The kernel then tells the host value_size 8 (3 UTF-16 units plus the NUL).
    assert_eq!(host_size(value("bar").utf16_units()), 8);
}

#[test]
fn vector_02_get_found_in_pool() {
    let pool = Pool::from_records(vec![rec("foo", "bar")]);
    let Ok(Request::Get { key: k, .. }) = decode_request(&vector_02_request()) else {
        panic!("vector 2 is a GET");
    };
    assert_eq!(pool.get(&k), Some(&value("bar")));
}

#[test]
fn vector_02_get_not_found_reply() {
    assert_eq!(Pool::new().get(&key("foo")), None);
    let buf = encode_reply(&Reply::Status(Status::S_CONT));
    assert_message("GET not found", &buf[..], &[(0, &S_CONT_BYTES)]);
    assert_eq!(
        decode_reply(Op::Get, &buf[..]),
        Ok(Reply::Status(Status::S_CONT))
    );
}

// ---------------------------------------------------------------------------------------
// Vector 3: SET pool 0 "foo" = "bar"
// ---------------------------------------------------------------------------------------

#[test]
fn vector_03_set_request_decodes() {
    let req = message(&[
        (0, &[0x01]),
        (1, &[0x00]),
        (8, &[0x04]),
        (12, &[0x04]),
        (16, &[0x66, 0x6f, 0x6f, 0x00]),
        (528, &[0x62, 0x61, 0x72, 0x00]),
    ]);
    assert_eq!(req[4..8], [0, 0, 0, 0], "value_type is 0");
    assert_eq!(
        decode_request(&req),
        Ok(Request::Set {
            pool: PoolId::External,
            key: key("foo"),
            value: value("bar"),
        })
    );
    assert_eq!(kernel_size_field(b"bar"), 4);
}

#[test]
fn vector_03_set_reply_is_ok() {
    let buf = encode_reply(&Reply::Status(Status::OK));
    assert_message("SET ok", &buf[..], &[(0, &[0x00, 0x00, 0x00, 0x00])]);
    assert_eq!(
        decode_reply(Op::Set, &buf[..]),
        Ok(Reply::Status(Status::OK))
    );
}

#[test]
fn vector_03_pool_file_after_set() {
    let mut pool = Pool::new();
    let plan = pool.plan_set(&key("foo"), &value("bar"));
    match &plan {
        Plan::Write(m) => {
            assert_eq!((m.old_records, m.new_records), (0, 1));
            assert_eq!(m.writes.len(), 1);
            assert_eq!(m.writes[0].slot, 0);
            assert_eq!(m.new_len(), POOL_RECORD_SIZE as u64);
        }
        Plan::Done(o) => panic!("SET into an empty pool must write, got {o:?}"),
    }
    apply(&mut pool, plan);
    let file = encode_pool(pool.records());
    let expected = sized(
        POOL_RECORD_SIZE,
        &[(0, &[0x66, 0x6f, 0x6f]), (512, &[0x62, 0x61, 0x72])],
    );
    assert_bytes("pool file", &file, &expected);
    assert_bytes("record", &rec("foo", "bar").encode(), &expected);
    assert_eq!(decode_pool(&file).records, vec![rec("foo", "bar")]);
}

#[test]
fn vector_03_set_reg_u32_as_text() {
    // REG_U32 42: the kernel converts it to decimal text, size = text length + 1.
    let req = message(&[
        (0, &[0x01]),
        (8, &[0x04]),
        (12, &[0x03]),
        (16, b"foo\0"),
        (528, &[0x34, 0x32, 0x00]),
    ]);
    assert_eq!(
        decode_request(&req),
        Ok(Request::Set {
            pool: PoolId::External,
            key: key("foo"),
            value: value("42"),
        })
    );
    // REG_U32 0xFFFFFFFF: FreeBSD formats it signed, "-1".
    let req = message(&[
        (0, &[0x01]),
        (8, &[0x04]),
        (12, &[0x03]),
        (16, b"foo\0"),
        (528, b"-1\0"),
    ]);
    assert_eq!(
        decode_request(&req),
        Ok(Request::Set {
            pool: PoolId::External,
            key: key("foo"),
            value: value("-1"),
        })
    );
}

// ---------------------------------------------------------------------------------------
// Vector 4: SET on pool 2
// ---------------------------------------------------------------------------------------

#[test]
fn vector_04_set_on_auto_pool() {
    let req = message(&[
        (0, &[0x01]),
        (1, &[0x02]),
        (8, &[0x04]),
        (12, &[0x04]),
        (16, b"foo\0"),
        (528, b"bar\0"),
    ]);
    assert_eq!(
        decode_request(&req),
        Ok(Request::Set {
            pool: PoolId::Auto,
            key: key("foo"),
            value: value("bar"),
        })
    );
    // Pool 2 has no file to write.
    assert!(!PoolId::FILE_BACKED.contains(&PoolId::Auto));
    // The refusal.
    let buf = encode_reply(&Reply::Status(Status::S_CONT));
    assert_message("SET pool 2", &buf[..], &[(0, &S_CONT_BYTES)]);
}

// ---------------------------------------------------------------------------------------
// Vector 5: DELETE pool 0 "foo"
// ---------------------------------------------------------------------------------------

#[test]
fn vector_05_delete_request_decodes() {
    let req = message(&[
        (0, &[0x02]),
        (1, &[0x00]),
        (4, &[0x04]),
        (8, &[0x66, 0x6f, 0x6f, 0x00]),
    ]);
    assert_eq!(
        decode_request(&req),
        Ok(Request::Delete {
            pool: PoolId::External,
            key: key("foo"),
        })
    );
}

#[test]
fn vector_05_delete_present_and_absent() {
    let mut pool = Pool::from_records(vec![rec("a", "1"), rec("foo", "bar"), rec("b", "2")]);
    let plan = pool.plan_delete(&key("foo"));
    apply(&mut pool, plan);
    assert_eq!(pool.len(), 2);
    assert_eq!(pool.get(&key("foo")), None);
    assert_eq!(pool.get(&key("a")), Some(&value("1")));
    assert_eq!(pool.get(&key("b")), Some(&value("2")));
    // The file shrinks by exactly one record and holds no trace of the key.
    let file = encode_pool(pool.records());
    assert_eq!(file.len(), 2 * POOL_RECORD_SIZE);
    assert!(!file.windows(3).any(|w| w == b"foo"));
    // OK when present, S_CONT when absent.
    assert_message(
        "DELETE ok",
        &encode_reply(&Reply::Status(Status::OK))[..],
        &[(0, &[0, 0, 0, 0])],
    );
    assert_eq!(pool.plan_delete(&key("foo")), Plan::Done(Outcome::NotFound));
    assert_message(
        "DELETE absent",
        &encode_reply(&Reply::Status(Status::S_CONT))[..],
        &[(0, &S_CONT_BYTES)],
    );
}

// ---------------------------------------------------------------------------------------
// Vector 6: ENUMERATE pool 2
// ---------------------------------------------------------------------------------------

#[test]
fn vector_06_enumerate_auto_request_decodes() {
    let req = message(&[(0, &[0x03]), (1, &[0x02]), (4, &[0x00, 0x00, 0x00, 0x00])]);
    assert_eq!(
        decode_request(&req),
        Ok(Request::Enumerate {
            pool: PoolId::Auto,
            index: 0,
        })
    );
    let req = message(&[(0, &[0x03]), (1, &[0x02]), (4, &le(9))]);
    assert_eq!(
        decode_request(&req),
        Ok(Request::Enumerate {
            pool: PoolId::Auto,
            index: 9,
        })
    );
    let req = message(&[(0, &[0x03]), (1, &[0x02]), (4, &le(0x0403_0201))]);
    assert_eq!(
        decode_request(&req),
        Ok(Request::Enumerate {
            pool: PoolId::Auto,
            index: 0x0403_0201,
        })
    );
}

#[test]
fn vector_06_enumerate_auto_index_0() {
    let auto = AutoPool::new(&sample_info(), &Default::default(), &Default::default());
    let (k, v) = auto.entry(0).expect("index 0");
    assert_eq!(k.as_bytes(), b"FullyQualifiedDomainName");
    assert_eq!(v.as_bytes(), b"vm1.example.net");
    let buf = encode_reply(&Reply::Entry {
        key: k.clone(),
        value: v.clone(),
    });
    assert_message(
        "ENUMERATE 2/0",
        &buf[..],
        &[
            (0, &[0x00, 0x00, 0x00, 0x00]),
            (20, b"FullyQualifiedDomainName\0"),
            (532, b"vm1.example.net\0"),
        ],
    );
    // The kernel reports key_size 50 = 2 * (24 + 1).
    assert_eq!(k.utf16_units(), 24);
    assert_eq!(host_size(k.utf16_units()), 50);
    assert_eq!(
        decode_reply(Op::Enumerate, &buf[..]),
        Ok(Reply::Entry {
            key: k.clone(),
            value: v.clone(),
        })
    );
}

#[test]
fn vector_06_enumerate_auto_index_9_and_10() {
    let auto = AutoPool::new(&sample_info(), &Default::default(), &Default::default());
    for (i, name) in AUTO_KEYS.iter().enumerate() {
        let (k, _) = auto.entry(i as u32).expect("ten entries");
        assert_eq!(k.as_bytes(), name.as_bytes(), "index {i}");
    }
    let (k, v) = auto.entry(9).expect("index 9");
    assert_eq!(k.as_bytes(), b"ProcessorArchitecture");
    assert_eq!(v.as_bytes(), b"amd64");
    let buf = encode_reply(&Reply::Entry {
        key: k.clone(),
        value: v.clone(),
    });
    assert_message(
        "ENUMERATE 2/9",
        &buf[..],
        &[(20, b"ProcessorArchitecture\0"), (532, b"amd64\0")],
    );
    assert!(auto.entry(10).is_none());
    assert!(auto.entry(u32::MAX).is_none());
    assert_message(
        "ENUMERATE 2/10",
        &encode_reply(&Reply::Status(Status::S_CONT))[..],
        &[(0, &S_CONT_BYTES)],
    );
}

// ---------------------------------------------------------------------------------------
// Vector 7: ENUMERATE pool 1
// ---------------------------------------------------------------------------------------

#[test]
fn vector_07_enumerate_past_the_end() {
    for n in [0usize, 1, 3] {
        let records: Vec<Record> = (0..n).map(|i| rec(&format!("k{i}"), "v")).collect();
        let pool = Pool::from_records(records);
        let req = message(&[(0, &[0x03]), (1, &[0x01]), (4, &le(n as u32))]);
        let Ok(Request::Enumerate {
            pool: PoolId::Guest,
            index,
        }) = decode_request(&req)
        else {
            panic!("ENUMERATE pool 1 index {n}");
        };
        assert_eq!(index as usize, n);
        assert!(pool.entry(index).is_none(), "index {n} of {n} records");
    }
    assert_message(
        "ENUMERATE end",
        &encode_reply(&Reply::Status(Status::S_CONT))[..],
        &[(0, &S_CONT_BYTES)],
    );
}

#[test]
fn vector_07_enumerate_one_record_file() {
    // A pool file written by someone else, byte by byte: key "k", value "v".
    let file = sized(POOL_RECORD_SIZE, &[(0, b"k"), (512, b"v")]);
    let decoded = decode_pool(&file);
    assert_eq!(decoded.records, vec![rec("k", "v")]);
    assert!(decoded.issues.is_empty(), "{:?}", decoded.issues);
    let (pool, issues) = Pool::from_decoded(decoded);
    assert!(issues.is_empty());
    let r = pool.entry(0).expect("one record");
    let buf = encode_reply(&Reply::Entry {
        key: r.key.clone(),
        value: r.value.clone(),
    });
    assert_message(
        "ENUMERATE 1/0",
        &buf[..],
        &[(20, &[0x6b, 0x00]), (532, &[0x76, 0x00])],
    );
    assert!(pool.entry(1).is_none());
}

// ---------------------------------------------------------------------------------------
// Vector 8: GET_IP_INFO
// ---------------------------------------------------------------------------------------

#[test]
fn vector_08_get_ip_info_request_decodes() {
    let req = message(&[(0, &[0x04]), (4, b"00:15:5D:01:02:03\0"), (260, &[0x01])]);
    let decoded = decode_request(&req);
    assert_eq!(
        decoded,
        Ok(Request::GetIpInfo {
            adapter_id: b"00:15:5D:01:02:03".to_vec(),
            addr_family: 1,
        })
    );
    let Ok(Request::GetIpInfo { adapter_id, .. }) = decoded else {
        unreachable!()
    };
    assert_eq!(Mac::parse(&adapter_id), Some(Mac([0, 0x15, 0x5d, 1, 2, 3])));
    // The pool byte means nothing for the IP operations: even an invalid one.
    let req = message(&[(0, &[0x04]), (1, &[0x07]), (4, b"00:15:5D:01:02:03\0")]);
    assert!(matches!(
        decode_request(&req),
        Ok(Request::GetIpInfo { addr_family: 0, .. })
    ));
}

#[test]
fn vector_08_get_ip_info_reply() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let info = AdapterInfo {
        addrs: vec![IfAddr {
            addr: ip("10.0.0.4"),
            prefix: 24,
        }],
        gateways: vec![ip("10.0.0.1")],
        dns: vec![ip("168.63.129.16")],
        dhcp: true,
    };
    let fields = info.to_fields(Mac([0, 0x15, 0x5d, 1, 2, 3]));
    let buf = encode_reply(&Reply::IpInfo(fields.clone()));
    assert_message(
        "GET_IP_INFO",
        &buf[..],
        &[
            (0, &[0x00, 0x00, 0x00, 0x00]),
            (4, b"00:15:5D:01:02:03\0"),
            (260, &[0x01]),
            (261, &[0x01]),
            (262, b"10.0.0.4\0"),
            (2310, b"255.255.255.0\0"),
            (4358, b"10.0.0.1\0"),
            (5382, b"168.63.129.16\0"),
        ],
    );
    assert_eq!(
        decode_reply(Op::GetIpInfo, &buf[..]),
        Ok(Reply::IpInfo(fields))
    );
}

#[test]
fn vector_08_unknown_mac() {
    let buf = encode_reply(&Reply::Status(Status::E_FAIL));
    assert_message("GET_IP_INFO unknown MAC", &buf[..], &[(0, &E_FAIL_BYTES)]);
    assert_eq!(
        decode_reply(Op::GetIpInfo, &buf[..]),
        Ok(Reply::Status(Status::E_FAIL))
    );
}

// ---------------------------------------------------------------------------------------
// Vector 9: unknown op 7
// ---------------------------------------------------------------------------------------

#[test]
fn vector_09_unknown_op() {
    let req = message(&[(0, &[0x07])]);
    let err = decode_request(&req).expect_err("op 7 is unknown");
    assert_eq!(err, DecodeError::UnknownOp(7));
    assert_eq!(err.status(), Status(0x8007_0032));
    assert_eq!(err.status(), Status::NOT_SUPPORTED);
    assert_eq!(err.op(), None);
    let buf = encode_reply(&Reply::Status(err.status()));
    assert_message("unknown op", &buf[..], &[(0, &NOT_SUPPORTED_BYTES)]);
    // The COUNT sentinel and every higher op are unknown too, whatever the body.
    for op in [6u8, 100, 0xff] {
        let req = message(&[(0, &[op]), (1, &[0x09]), (4, &[0xff; 64])]);
        assert_eq!(decode_request(&req), Err(DecodeError::UnknownOp(op)));
    }
}

// ---------------------------------------------------------------------------------------
// Vector 10: timeout
// ---------------------------------------------------------------------------------------

#[test]
fn vector_10_timeout() {
    // What the host receives when the daemon is late, and the deadline we answer by.
    assert_message(
        "timeout",
        &encode_reply(&Reply::Status(Status::E_FAIL))[..],
        &[(0, &E_FAIL_BYTES)],
    );
    assert_eq!(KVP_KERNEL_DEADLINE.as_secs(), 5);
    assert!(KVP_REPLY_BUDGET < KVP_KERNEL_DEADLINE);
}

// ---------------------------------------------------------------------------------------
// Vector 11: 120 records appended externally
// ---------------------------------------------------------------------------------------

#[test]
fn vector_11_pool_of_120_records() {
    let records: Vec<Record> = (0..120)
        .map(|i| rec(&format!("key{i}"), &format!("value{i}")))
        .collect();
    let file = encode_pool(&records);
    assert_eq!(file.len(), 120 * POOL_RECORD_SIZE);

    let whole = decode_pool(&file);
    assert_eq!(whole.records.len(), 120);
    assert_eq!(whole.total_records, 120);
    assert_eq!(whole.partial_tail, 0);
    assert_eq!(whole.records[119], rec("key119", "value119"));

    // Read the way a daemon holding one block would: one record, then the rest in
    // pieces that do not line up with records.
    let mut d = PoolDecoder::new();
    d.feed(&file[..POOL_RECORD_SIZE]);
    assert_eq!(d.offset(), POOL_RECORD_SIZE as u64);
    for piece in file[POOL_RECORD_SIZE..].chunks(7001) {
        d.feed(piece);
    }
    assert_eq!(d.offset(), file.len() as u64);
    let chunked = d.finish();
    assert_eq!(chunked, whole);

    let (pool, issues) = Pool::from_decoded(chunked);
    assert!(issues.is_empty());
    let req = message(&[(0, &[0x03]), (1, &[0x01]), (4, &[0x77, 0x00, 0x00, 0x00])]);
    let Ok(Request::Enumerate { index, .. }) = decode_request(&req) else {
        panic!("ENUMERATE index 119");
    };
    assert_eq!(index, 119);
    let r = pool.entry(index).expect("record 119");
    assert_eq!(*r, rec("key119", "value119"));
    let buf = encode_reply(&Reply::Entry {
        key: r.key.clone(),
        value: r.value.clone(),
    });
    assert_message(
        "ENUMERATE 119",
        &buf[..],
        &[(20, b"key119\0"), (532, b"value119\0")],
    );
    assert!(pool.entry(120).is_none());
}

// ---------------------------------------------------------------------------------------
// Vector 12: non-ASCII key
// ---------------------------------------------------------------------------------------

#[test]
fn vector_12_non_ascii_key() {
    // Host key "é" (UTF-16 e9 00 00 00, host size 4): the kernel hands over the UTF-8
    // bytes c3 a9 00 with key_size 2, which counts no terminator.
    assert_eq!(kernel_size_field("é".as_bytes()), 2);
    let req = message(&[(0, &[0x00]), (8, &le(2)), (16, &[0xc3, 0xa9, 0x00])]);
    let Ok(Request::Get { pool, key: k }) = decode_request(&req) else {
        panic!("GET é");
    };
    assert_eq!(pool, PoolId::External);
    assert_eq!(k.as_bytes(), "é".as_bytes());
    assert_eq!(k.as_bytes(), &[0xc3, 0xa9]);
    assert_eq!(k.utf16_units(), 1);

    // Lookups use the whole terminated string, not a key_size-long prefix: "éx" comes
    // first in the file and shares the 2-byte prefix, but is not "é".
    let pool = Pool::from_records(vec![rec("éx", "prefix"), rec("é", "exact")]);
    assert_eq!(pool.get(&k), Some(&value("exact")));

    // Same for DELETE and SET.
    let req = message(&[(0, &[0x02]), (4, &le(2)), (8, &[0xc3, 0xa9, 0x00])]);
    assert_eq!(
        decode_request(&req),
        Ok(Request::Delete {
            pool: PoolId::External,
            key: key("é"),
        })
    );
    let req = message(&[
        (0, &[0x01]),
        (8, &le(2)),
        (12, &le(2)),
        (16, "é\0".as_bytes()),
        (528, "ü\0".as_bytes()),
    ]);
    assert_eq!(
        decode_request(&req),
        Ok(Request::Set {
            pool: PoolId::External,
            key: key("é"),
            value: value("ü"),
        })
    );
}

#[test]
fn size_fields_are_never_trusted() {
    // key_size / value_size / value_type lie in every direction; the decoded strings
    // are exactly the bytes before each NUL.
    for size in [0u32, 1, 2, 3, 511, 512, 513, 2048, u32::MAX] {
        let req = message(&[
            (0, &[0x01]),
            (4, &le(size)),
            (8, &le(size)),
            (12, &le(size)),
            (16, b"foo\0stale-bytes"),
            (528, b"bar\0more-stale"),
        ]);
        assert_eq!(
            decode_request(&req),
            Ok(Request::Set {
                pool: PoolId::External,
                key: key("foo"),
                value: value("bar"),
            }),
            "size {size}"
        );
        let req = message(&[(0, &[0x02]), (4, &le(size)), (8, b"foo\0x")]);
        assert_eq!(
            decode_request(&req),
            Ok(Request::Delete {
                pool: PoolId::External,
                key: key("foo"),
            }),
            "size {size}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Malformed requests
// ---------------------------------------------------------------------------------------

#[test]
fn unterminated_key_is_refused_without_reading_past_the_field() {
    // 512 non-NUL bytes fill the key field; the byte right after it is a NUL, which a
    // decoder that ran past the field would take as the terminator.
    let full = [b'k'; 512];
    let get = message(&[(0, &[0x00]), (16, &full)]);
    assert_eq!(get[528], 0);
    let set = message(&[(0, &[0x01]), (16, &full), (528, b"v\0")]);
    let delete = message(&[(0, &[0x02]), (8, &full)]);
    assert_eq!(delete[520], 0);
    for (op, req) in [(Op::Get, get), (Op::Set, set), (Op::Delete, delete)] {
        let err = decode_request(&req).expect_err("unterminated key");
        assert_eq!(
            err,
            DecodeError::Unterminated {
                op,
                field: Field::Key,
            }
        );
        assert_eq!(err.status(), Status::INVALID_ARG);
        assert_eq!(err.op(), Some(op));
    }
}

#[test]
fn longest_key_and_value_decode() {
    // 511 bytes and a NUL in the last byte of the key field.
    let k = [b'k'; 511];
    let v = [b'v'; 2047];
    let req = message(&[(0, &[0x01]), (16, &k), (528, &v)]);
    assert_eq!(req[527], 0);
    assert_eq!(req[2575], 0);
    assert_eq!(
        decode_request(&req),
        Ok(Request::Set {
            pool: PoolId::External,
            key: Key::new(&k).unwrap(),
            value: Value::new(&v).unwrap(),
        })
    );
    let req = message(&[(0, &[0x02]), (8, &k)]);
    assert_eq!(
        decode_request(&req),
        Ok(Request::Delete {
            pool: PoolId::External,
            key: Key::new(&k).unwrap(),
        })
    );
}

#[test]
fn unterminated_value_is_refused() {
    let req = message(&[(0, &[0x01]), (16, b"foo\0"), (528, &[b'v'; 2048])]);
    assert_eq!(req[2576], 0, "a NUL right after the value field");
    let err = decode_request(&req).expect_err("unterminated value");
    assert_eq!(
        err,
        DecodeError::Unterminated {
            op: Op::Set,
            field: Field::Value,
        }
    );
    assert_eq!(err.status(), Status::INVALID_ARG);
    // GET ignores the value field entirely.
    let req = message(&[(0, &[0x00]), (16, b"foo\0"), (528, &[b'v'; 2048])]);
    assert_eq!(
        decode_request(&req),
        Ok(Request::Get {
            pool: PoolId::External,
            key: key("foo"),
        })
    );
}

#[test]
fn unterminated_ip_fields_are_refused() {
    let ok = |f: &[(usize, &[u8])]| {
        let mut spans: Vec<(usize, &[u8])> = vec![(0, &[0x05])];
        spans.extend_from_slice(f);
        message(&spans)
    };
    let cases: [(usize, usize, Field); 5] = [
        (4, 256, Field::AdapterId),
        (262, 2048, Field::IpAddr),
        (2310, 2048, Field::SubNet),
        (4358, 1024, Field::GateWay),
        (5382, 2048, Field::DnsAddr),
    ];
    for (at, len, field) in cases {
        let fill = vec![b'9'; len];
        let req = ok(&[(at, &fill)]);
        assert_eq!(
            decode_request(&req),
            Err(DecodeError::Unterminated {
                op: Op::SetIpInfo,
                field,
            }),
            "SET_IP_INFO {field:?}"
        );
        // One byte shorter fits.
        let req = ok(&[(at, &fill[..len - 1])]);
        assert!(
            decode_request(&req).is_ok(),
            "{field:?} of {} bytes",
            len - 1
        );
    }
    let req = message(&[(0, &[0x04]), (4, &[b'A'; 256])]);
    assert_eq!(
        decode_request(&req),
        Err(DecodeError::Unterminated {
            op: Op::GetIpInfo,
            field: Field::AdapterId,
        })
    );
}

#[test]
fn set_ip_info_request_decodes() {
    let req = message(&[
        (0, &[0x05]),
        (4, b"hn0\0"),
        (260, &[0x01]),
        (261, &[0x00]),
        (262, b"10.0.0.4\0"),
        (2310, b"255.255.255.0\0"),
        (4358, b"10.0.0.1\0"),
        (5382, b"168.63.129.16\0"),
    ]);
    assert_eq!(
        decode_request(&req),
        Ok(Request::SetIpInfo(IpFields {
            adapter_id: b"hn0".to_vec(),
            addr_family: 1,
            dhcp_enabled: 0,
            ip_addr: b"10.0.0.4".to_vec(),
            sub_net: b"255.255.255.0".to_vec(),
            gate_way: b"10.0.0.1".to_vec(),
            dns_addr: b"168.63.129.16".to_vec(),
        }))
    );
}

#[test]
fn bad_pool_is_refused_with_e_fail() {
    for (op_byte, op) in [
        (0u8, Op::Get),
        (1, Op::Set),
        (2, Op::Delete),
        (3, Op::Enumerate),
    ] {
        for pool in [5u8, 6, 0x80, 0xff] {
            let req = message(&[(0, &[op_byte]), (1, &[pool]), (16, b"foo\0"), (528, b"x\0")]);
            let err = decode_request(&req).expect_err("bad pool");
            assert_eq!(err, DecodeError::BadPool { op, pool });
            assert_eq!(err.status(), Status::E_FAIL);
            assert_eq!(err.op(), Some(op));
            assert_message(
                "bad pool reply",
                &encode_reply(&Reply::Status(err.status()))[..],
                &[(0, &E_FAIL_BYTES)],
            );
        }
    }
    // Pool 4 is the last valid one.
    let req = message(&[(0, &[0x03]), (1, &[0x04])]);
    assert_eq!(
        decode_request(&req),
        Ok(Request::Enumerate {
            pool: PoolId::AutoInternal,
            index: 0,
        })
    );
}

#[test]
fn wrong_length_is_refused() {
    for len in [0usize, 1, 4, 7429, 7431, 7432, 2 * 7430] {
        let buf = vec![0u8; len];
        let err = decode_request(&buf).expect_err("wrong length");
        assert_eq!(err, DecodeError::WrongLength(len));
        assert_eq!(err.status(), Status::E_FAIL);
        assert_eq!(err.op(), None);
        assert_eq!(
            decode_reply(Op::Get, &buf),
            Err(DecodeError::WrongLength(len))
        );
    }
    assert!(decode_request(&[0u8; 7430]).is_ok());
}

// ---------------------------------------------------------------------------------------
// Replies are zero after every terminator
// ---------------------------------------------------------------------------------------

#[test]
fn value_reply_is_zero_after_the_terminator() {
    for len in [0usize, 1, 3, 100, 2047] {
        let text = vec![b'x'; len];
        let buf = encode_reply(&Reply::Value(Value::new(&text).unwrap()));
        assert_message(
            &format!("value of {len}"),
            &buf[..],
            &[(528, &text), (528 + len, &[0])],
        );
    }
}

#[test]
fn entry_reply_is_zero_after_the_terminators() {
    let k = [b'K'; 511];
    let v = [b'V'; 2047];
    let buf = encode_reply(&Reply::Entry {
        key: Key::new(&k).unwrap(),
        value: Value::new(&v).unwrap(),
    });
    assert_eq!(buf[531], 0);
    assert_eq!(buf[2579], 0);
    assert_message("longest entry", &buf[..], &[(20, &k), (532, &v)]);
    let buf = encode_reply(&Reply::Entry {
        key: Key::default(),
        value: Value::default(),
    });
    assert_message("empty entry", &buf[..], &[]);
}

#[test]
fn ip_info_reply_cuts_and_terminates_every_field() {
    // Embedded NULs end a field; overlong text is cut to leave room for the NUL.
    let fields = IpFields {
        adapter_id: [b'A'; 300].to_vec(),
        addr_family: 3,
        dhcp_enabled: 1,
        ip_addr: b"10.0.0.4\0; reboot".to_vec(),
        sub_net: [b'S'; 2048].to_vec(),
        gate_way: [b'G'; 5000].to_vec(),
        dns_addr: b"\0anything".to_vec(),
    };
    let buf = encode_reply(&Reply::IpInfo(fields));
    assert_message(
        "IP info",
        &buf[..],
        &[
            (4, &[b'A'; 255]),
            (260, &[3]),
            (261, &[1]),
            (262, b"10.0.0.4"),
            (2310, &[b'S'; 2047]),
            (4358, &[b'G'; 1023]),
        ],
    );
    assert_eq!(
        decode_reply(Op::GetIpInfo, &buf[..]),
        Ok(Reply::IpInfo(IpFields {
            adapter_id: [b'A'; 255].to_vec(),
            addr_family: 3,
            dhcp_enabled: 1,
            ip_addr: b"10.0.0.4".to_vec(),
            sub_net: [b'S'; 2047].to_vec(),
            gate_way: [b'G'; 1023].to_vec(),
            dns_addr: Vec::new(),
        }))
    );
}

#[test]
fn reply_decoding_cuts_unterminated_text_at_the_field() {
    // A reply whose value field has no NUL is read as the first 2047 bytes; the bytes
    // after the field are never part of it.
    let buf = message(&[(528, &[b'x'; 2048]), (2576, b"after")]);
    assert_eq!(
        decode_reply(Op::Get, &buf),
        Ok(Reply::Value(Value::new(&[b'x'; 2047]).unwrap()))
    );
    let buf = message(&[(20, &[b'k'; 512]), (532, &[b'v'; 2048]), (2580, b"z")]);
    assert_eq!(
        decode_reply(Op::Enumerate, &buf),
        Ok(Reply::Entry {
            key: Key::new(&[b'k'; 511]).unwrap(),
            value: Value::new(&[b'v'; 2047]).unwrap(),
        })
    );
}

// ---------------------------------------------------------------------------------------
// The checker itself
// ---------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "first difference at offset 7429")]
fn checker_sees_a_stray_byte_anywhere() {
    let mut buf = message(&[(0, &[0x04])]);
    buf[7429] = 1;
    assert_message("stray", &buf, &[(0, &[0x04])]);
}
