//! The host's side of the device message, written from the spec's byte table
//! (docs/protocol/kvp.md §1.3, §2.4) and nothing else: every offset below is a literal number from
//! that table, not a constant of `hvguest_core::kvp::wire`.
//!
//! Why a second codec: the world used to encode requests with the core's own
//! `encode_request` and decode replies with the core's `decode_reply`, so an offset wrong
//! in the core was wrong on both sides and invisible. The core's types (`Request`,
//! `Reply`, `Key`, `Value`) are only containers here; no byte passes through core code.

use hvguest_core::kvp::text::{Key, Value};
use hvguest_core::kvp::wire::{IpFields, Op, Reply, Request, Status};

/// `sizeof(struct hv_kvp_msg)` on FreeBSD (docs/protocol/kvp.md §1.3).
pub const MSG_LEN: usize = 7430;

/// Whose kernel hands the host's requests to the daemon: the offsets are the same, the
/// rest of this table differs (docs/protocol/linux.md §1.2–§1.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernel {
    #[default]
    FreeBsd,
    Linux,
}

impl Kernel {
    /// Bytes per message: Linux's union is 4-aligned, 7432.
    pub fn msg_len(self) -> usize {
        match self {
            Kernel::FreeBsd => MSG_LEN,
            Kernel::Linux => 7432,
        }
    }

    /// Where the kernel reads a GET reply's value: Linux's at the ENUMERATE layout's 532.
    fn get_value_at(self) -> usize {
        match self {
            Kernel::FreeBsd => 528,
            Kernel::Linux => 532,
        }
    }

    /// The `key_size`/`value_size` this kernel stores: Linux's is the UTF-8 length + 1.
    fn size_field(self, text: &[u8]) -> u32 {
        match self {
            Kernel::FreeBsd => kernel_size(text),
            Kernel::Linux => u32::try_from(text.len() + 1).unwrap_or(u32::MAX),
        }
    }
}

/// A reply the host cannot accept (the kernel would send garbage or read past a field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadReply(pub String);

fn put_u32(m: &mut [u8], at: usize, v: u32) {
    m[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(m: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([m[at], m[at + 1], m[at + 2], m[at + 3]])
}

/// Copies `text` into the field `[at, at + len)`; the rest of the field stays zero, so
/// the text is NUL-terminated whenever it is shorter than the field.
fn put_text(m: &mut [u8], at: usize, len: usize, text: &[u8]) {
    let n = text.len().min(len);
    m[at..at + n].copy_from_slice(&text[..n]);
}

/// The `key_size`/`value_size` the FreeBSD kernel stores (docs/protocol/kvp.md §2.4): it walks the host's
/// byte count (UTF-16 text plus its terminator) as if it were a count of units, emitting
/// the UTF-8 bytes and one zero byte per zero unit, and halves the total.
fn kernel_size(text: &[u8]) -> u32 {
    let units = String::from_utf8_lossy(text).encode_utf16().count();
    let host_bytes = 2 * (units + 1);
    // `host_bytes` units walked: `units` of text, the rest zero.
    let emitted = text.len() + (host_bytes - units);
    u32::try_from(emitted / 2).unwrap_or(u32::MAX)
}

/// Encodes a request as `kernel` hands it to the daemon.
pub fn encode(kernel: Kernel, req: &Request) -> Vec<u8> {
    let mut m = vec![0u8; kernel.msg_len()];
    match req {
        Request::Get { pool, key } => {
            m[0] = 0;
            m[1] = *pool as u8;
            // value_type @4 and value_size @12 stay 0 for GET (docs/protocol/kvp.md §2.4).
            put_u32(&mut m, 8, kernel.size_field(key.as_bytes()));
            put_text(&mut m, 16, 511, key.as_bytes());
        }
        Request::Set { pool, key, value } => {
            m[0] = 1;
            m[1] = *pool as u8;
            // value_type @4 is not copied by the kernel: 0.
            put_u32(&mut m, 8, kernel.size_field(key.as_bytes()));
            put_u32(&mut m, 12, kernel.size_field(value.as_bytes()));
            put_text(&mut m, 16, 511, key.as_bytes());
            put_text(&mut m, 528, 2047, value.as_bytes());
        }
        Request::Delete { pool, key } => {
            m[0] = 2;
            m[1] = *pool as u8;
            put_u32(&mut m, 4, kernel.size_field(key.as_bytes()));
            put_text(&mut m, 8, 511, key.as_bytes());
        }
        Request::Enumerate { pool, index } => {
            m[0] = 3;
            m[1] = *pool as u8;
            put_u32(&mut m, 4, *index);
        }
        Request::GetIpInfo {
            adapter_id,
            addr_family,
        } => {
            m[0] = 4;
            put_text(&mut m, 4, 255, adapter_id);
            m[260] = *addr_family;
        }
        Request::SetIpInfo(f) => {
            m[0] = 5;
            put_text(&mut m, 4, 255, &f.adapter_id);
            m[260] = f.addr_family;
            m[261] = f.dhcp_enabled;
            put_text(&mut m, 262, 2047, &f.ip_addr);
            put_text(&mut m, 2310, 2047, &f.sub_net);
            put_text(&mut m, 4358, 1023, &f.gate_way);
            put_text(&mut m, 5382, 2047, &f.dns_addr);
        }
    }
    m
}

/// The NUL-terminated text in `[at, at + len)`. The kernel runs `strlen` on it, so a
/// field without a terminator is a bad reply (it would read into the next field).
fn text(m: &[u8], at: usize, len: usize, what: &str) -> Result<Vec<u8>, BadReply> {
    let field = &m[at..at + len];
    match field.iter().position(|&b| b == 0) {
        Some(n) => Ok(field[..n].to_vec()),
        None => Err(BadReply(format!("{what} field at {at} is not terminated"))),
    }
}

/// Decodes the daemon's reply to a request of `op`, as the kernel reads it (docs/protocol/kvp.md §2.4).
pub fn decode(kernel: Kernel, op: Op, m: &[u8]) -> Result<Reply, BadReply> {
    if m.len() != kernel.msg_len() {
        return Err(BadReply(format!("reply of {} bytes", m.len())));
    }
    let status = Status(get_u32(m, 0));
    if status != Status::OK {
        return Ok(Reply::Status(status));
    }
    let value = |at: usize| -> Result<Value, BadReply> {
        let t = text(m, at, 2048, "value")?;
        Value::new(&t).map_err(|e| BadReply(format!("value at {at}: {e:?}")))
    };
    Ok(match op {
        Op::Get => Reply::Value(value(kernel.get_value_at())?),
        Op::Enumerate => {
            let k = text(m, 20, 512, "key")?;
            Reply::Entry {
                key: Key::new(&k).map_err(|e| BadReply(format!("key at 20: {e:?}")))?,
                value: value(532)?,
            }
        }
        Op::GetIpInfo => Reply::IpInfo(IpFields {
            adapter_id: text(m, 4, 256, "adapter_id")?,
            addr_family: m[260],
            dhcp_enabled: m[261],
            ip_addr: text(m, 262, 2048, "ip_addr")?,
            sub_net: text(m, 2310, 2048, "sub_net")?,
            gate_way: text(m, 4358, 1024, "gate_way")?,
            dns_addr: text(m, 5382, 2048, "dns_addr")?,
        }),
        Op::Set | Op::Delete | Op::SetIpInfo => Reply::Status(status),
    })
}

/// The status our daemon owes a request with exactly one defect, from the status table
/// of docs/protocol/kvp.md §1.2 and our decisions in ARCHITECTURE.md ("Decisions worth
/// knowing"): a message of the wrong size or naming a pool past 4 is `E_FAIL`, an
/// operation past 5 is `NOT_SUPPORTED`, a GET, SET or DELETE whose key or value field
/// has no NUL is `INVALID_ARG`; a message without any of those defects that is a SET
/// with an empty key (its key field starts with its terminator) is `INVALID_ARG` too,
/// in every pool. `None` when the message has no defect or more than one (then any
/// status but OK will do). Catches a decoder that answers a malformed message with the
/// wrong status, or with OK, and a daemon that stores an empty key.
pub fn malformed_status(kernel: Kernel, m: &[u8]) -> Option<Status> {
    const E_FAIL: Status = Status(0x8000_4005);
    const NOT_SUPPORTED: Status = Status(0x8007_0032);
    const INVALID_ARG: Status = Status(0x8007_0057);
    if m.len() != kernel.msg_len() {
        return Some(E_FAIL);
    }
    let unterminated = |at: usize, len: usize| !m[at..at + len].contains(&0);
    let (op, pool) = (m[0], m[1]);
    let mut defects = Vec::new();
    if op > 5 {
        defects.push(NOT_SUPPORTED);
    }
    if op <= 3 && pool > 4 {
        defects.push(E_FAIL);
    }
    // Key and value fields: GET key @16 (512), SET key @16 (512) and value @528 (2048),
    // DELETE key @8 (512).
    let fields: &[(usize, usize)] = match op {
        0 => &[(16, 512)],
        1 => &[(16, 512), (528, 2048)],
        2 => &[(8, 512)],
        _ => &[],
    };
    for &(at, len) in fields {
        if unterminated(at, len) {
            defects.push(INVALID_ARG);
        }
    }
    match defects.as_slice() {
        [one] => Some(*one),
        // SET key @16: empty when its first byte is the terminator.
        [] if op == 1 && m[16] == 0 => Some(INVALID_ARG),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    //! The spec's test vectors (docs/protocol/kvp.md §8), bytes written out by hand.
    use super::*;
    use hvguest_core::kvp::wire::PoolId;

    fn key(s: &str) -> Key {
        Key::new(s.as_bytes()).expect("short literal")
    }

    fn value(s: &str) -> Value {
        Value::new(s.as_bytes()).expect("short literal")
    }

    /// Every byte of `m` is zero except those listed.
    fn only(m: &[u8], set: &[(usize, &[u8])]) {
        let mut want = vec![0u8; MSG_LEN];
        for (at, b) in set {
            want[*at..*at + b.len()].copy_from_slice(b);
        }
        for (i, (a, b)) in m.iter().zip(&want).enumerate() {
            assert_eq!(a, b, "byte {i}");
        }
        assert_eq!(m.len(), MSG_LEN);
    }

    #[test]
    fn vector_2_get() {
        let m = encode(
            Kernel::FreeBsd,
            &Request::Get {
                pool: PoolId::External,
                key: key("foo"),
            },
        );
        only(&m, &[(8, &[4, 0, 0, 0]), (16, b"foo\0")]);
        let mut r = m.clone();
        r[528..532].copy_from_slice(b"bar\0");
        assert_eq!(
            decode(Kernel::FreeBsd, Op::Get, &r),
            Ok(Reply::Value(value("bar")))
        );
        let mut nf = vec![0u8; MSG_LEN];
        nf[..4].copy_from_slice(&[0x03, 0x01, 0x07, 0x80]);
        assert_eq!(
            decode(Kernel::FreeBsd, Op::Get, &nf),
            Ok(Reply::Status(Status::S_CONT))
        );
    }

    #[test]
    fn vector_3_set() {
        let m = encode(
            Kernel::FreeBsd,
            &Request::Set {
                pool: PoolId::External,
                key: key("foo"),
                value: value("bar"),
            },
        );
        only(
            &m,
            &[
                (0, &[1]),
                (8, &[4]),
                (12, &[4]),
                (16, b"foo"),
                (528, b"bar"),
            ],
        );
        assert_eq!(
            decode(Kernel::FreeBsd, Op::Set, &[0u8; MSG_LEN]),
            Ok(Reply::Status(Status::OK))
        );
    }

    #[test]
    fn vector_5_delete() {
        let m = encode(
            Kernel::FreeBsd,
            &Request::Delete {
                pool: PoolId::External,
                key: key("foo"),
            },
        );
        only(&m, &[(0, &[2]), (4, &[4]), (8, b"foo")]);
    }

    #[test]
    fn vectors_6_7_enumerate() {
        let m = encode(
            Kernel::FreeBsd,
            &Request::Enumerate {
                pool: PoolId::Auto,
                index: 0,
            },
        );
        only(&m, &[(0, &[3]), (1, &[2])]);
        let m = encode(
            Kernel::FreeBsd,
            &Request::Enumerate {
                pool: PoolId::Guest,
                index: 7,
            },
        );
        only(&m, &[(0, &[3]), (1, &[1]), (4, &[7])]);
        let mut r = vec![0u8; MSG_LEN];
        r[20..22].copy_from_slice(b"k\0");
        r[532..534].copy_from_slice(b"v\0");
        assert_eq!(
            decode(Kernel::FreeBsd, Op::Enumerate, &r),
            Ok(Reply::Entry {
                key: key("k"),
                value: value("v")
            })
        );
    }

    #[test]
    fn vector_8_get_ip_info() {
        let m = encode(
            Kernel::FreeBsd,
            &Request::GetIpInfo {
                adapter_id: b"00:15:5D:01:02:03".to_vec(),
                addr_family: 0,
            },
        );
        only(&m, &[(0, &[4]), (4, b"00:15:5D:01:02:03\0")]);
        let mut r = vec![0u8; MSG_LEN];
        r[260] = 1;
        r[261] = 1;
        r[262..270].copy_from_slice(b"10.0.0.4");
        r[2310..2323].copy_from_slice(b"255.255.255.0");
        r[4358..4366].copy_from_slice(b"10.0.0.1");
        r[5382..5395].copy_from_slice(b"168.63.129.16");
        let Ok(Reply::IpInfo(f)) = decode(Kernel::FreeBsd, Op::GetIpInfo, &r) else {
            panic!("not decoded")
        };
        assert_eq!(
            (f.ip_addr, f.sub_net, f.gate_way, f.dns_addr),
            (
                b"10.0.0.4".to_vec(),
                b"255.255.255.0".to_vec(),
                b"10.0.0.1".to_vec(),
                b"168.63.129.16".to_vec()
            )
        );
        let mut unknown = vec![0u8; MSG_LEN];
        unknown[..4].copy_from_slice(&[0x05, 0x40, 0x00, 0x80]);
        assert_eq!(
            decode(Kernel::FreeBsd, Op::GetIpInfo, &unknown),
            Ok(Reply::Status(Status::E_FAIL))
        );
    }

    #[test]
    fn vector_12_non_ascii_size() {
        // "é": host size 4, kernel key_size 2 (docs/protocol/kvp.md §2.4; §8, vector 12).
        let m = encode(
            Kernel::FreeBsd,
            &Request::Get {
                pool: PoolId::External,
                key: key("é"),
            },
        );
        only(&m, &[(8, &[2]), (16, &[0xc3, 0xa9, 0])]);
    }

    #[test]
    fn malformed_statuses() {
        let mut m = encode(
            Kernel::FreeBsd,
            &Request::Get {
                pool: PoolId::Guest,
                key: key("k"),
            },
        );
        assert_eq!(malformed_status(Kernel::FreeBsd, &m), None);
        m[16..528].fill(b'Z');
        assert_eq!(
            malformed_status(Kernel::FreeBsd, &m),
            Some(Status(0x8007_0057))
        );
        m[1] = 9;
        assert_eq!(malformed_status(Kernel::FreeBsd, &m), None, "two defects");
        let mut d = vec![0u8; MSG_LEN];
        d[0] = 2;
        d[8..520].fill(b'Z');
        assert_eq!(
            malformed_status(Kernel::FreeBsd, &d),
            Some(Status(0x8007_0057))
        );
        d[8] = 0;
        assert_eq!(malformed_status(Kernel::FreeBsd, &d), None);
        d[0] = 7;
        assert_eq!(
            malformed_status(Kernel::FreeBsd, &d),
            Some(Status(0x8007_0032))
        );
        assert_eq!(
            malformed_status(Kernel::FreeBsd, &d[..100]),
            Some(Status(0x8000_4005))
        );
        // A well-formed SET of an empty key, in any pool, even the auto pool.
        for pool in [PoolId::Guest, PoolId::Auto] {
            let mut e = encode(
                Kernel::FreeBsd,
                &Request::Set {
                    pool,
                    key: key(""),
                    value: value("v"),
                },
            );
            assert_eq!(
                malformed_status(Kernel::FreeBsd, &e),
                Some(Status(0x8007_0057))
            );
            e[16] = b'k';
            assert_eq!(malformed_status(Kernel::FreeBsd, &e), None);
        }
        // An empty key behind a decoding defect: the decoding defect's status.
        let mut e = encode(
            Kernel::FreeBsd,
            &Request::Set {
                pool: PoolId::Guest,
                key: key(""),
                value: value("v"),
            },
        );
        e[1] = 9;
        assert_eq!(
            malformed_status(Kernel::FreeBsd, &e),
            Some(Status(0x8000_4005))
        );
        // GET and DELETE of an empty key are ordinary requests.
        let g = encode(
            Kernel::FreeBsd,
            &Request::Get {
                pool: PoolId::Guest,
                key: key(""),
            },
        );
        assert_eq!(malformed_status(Kernel::FreeBsd, &g), None);
    }

    #[test]
    fn unterminated_value_is_refused() {
        let mut r = vec![0u8; MSG_LEN];
        r[528..528 + 2048].fill(b'x');
        assert!(decode(Kernel::FreeBsd, Op::Get, &r).is_err());
    }
}
