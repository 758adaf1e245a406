//! The `hv_kvp_msg` on the KVP device: 7430 bytes on FreeBSD's `/dev/hv_kvp_dev`
//! (docs/protocol/kvp.md §1.3, §2.4, §2.5), 7432 on Linux's `/dev/vmbus/hv_kvp`
//! (docs/protocol/linux.md §1.2–§1.4). One codec, parameterised by [`Layout`]: the field
//! offsets are the same on both; the size, the registration and where the kernel reads
//! a GET's value differ.
//!
//! Decoding is total: any byte string decodes to a [`Request`] or to a [`DecodeError`]
//! that carries the status to answer with. Strings are read up to their NUL and never
//! past their field; the kernel's `key_size`/`value_size` are not trusted (the kernel
//! computes them wrongly for non-ASCII text, docs/protocol/kvp.md §2.4). Replies are
//! built from a zeroed buffer, so everything after each terminator is zero.

use std::time::Duration;

use crate::kvp::text::{terminated, Key, Value};
use crate::limits::{
    KVP_KEY_FIELD, KVP_MSG_SIZE, KVP_REPLY_BUDGET, KVP_VALUE_FIELD, LINUX_KVP_MSG_SIZE,
    LINUX_KVP_REPLY_BUDGET,
};

pub use crate::layout::Layout;

/// Linux's registration op (`KVP_OP_REGISTER1`, docs/protocol/linux.md §1.3); FreeBSD's
/// is the legacy 4.
const LINUX_REGISTER: u8 = 100;
const FREEBSD_REGISTER: u8 = 4;
/// The version field of a registration message (`hv_kvp_register`).
const VERSION_FIELD: usize = 512;

impl Layout {
    /// Bytes per message, read and written whole.
    pub const fn message_size(self) -> usize {
        match self {
            Layout::FreeBsd => KVP_MSG_SIZE,
            Layout::Linux => LINUX_KVP_MSG_SIZE,
        }
    }

    /// How long after reading a request we answer at the latest: inside the kernel's
    /// own deadline (5 s on FreeBSD, 30 s on Linux) by half a second.
    pub const fn reply_budget(self) -> Duration {
        match self {
            Layout::FreeBsd => KVP_REPLY_BUDGET,
            Layout::Linux => LINUX_KVP_REPLY_BUDGET,
        }
    }

    /// Where the kernel reads a GET's value from the reply: FreeBSD's at the GET
    /// layout's value (528); Linux's kernel reads the ENUMERATE layout's (532,
    /// docs/protocol/linux.md §1.4). (The stock Linux daemon's GETs answer empty values
    /// for another reason: it copies `value_size` bytes, which the kernel set to 0.)
    const fn get_value(self) -> usize {
        match self {
            Layout::FreeBsd => offset::VALUE,
            Layout::Linux => offset::ENUM_VALUE,
        }
    }

    /// Whether the kernel answers the registration with a message of its own that the
    /// daemon must read before any request comes (Linux: op 100 and the driver's
    /// version, docs/protocol/linux.md §1.3). FreeBSD's kernel sends none.
    pub const fn registration_answered(self) -> bool {
        matches!(self, Layout::Linux)
    }

    /// The registration message: all zero but the op byte (FreeBSD: 4,
    /// docs/protocol/kvp.md §1.6; Linux: 100, docs/protocol/linux.md §1.3).
    pub fn registration(self) -> Vec<u8> {
        let mut buf = vec![0u8; self.message_size()];
        buf[offset::OPERATION] = match self {
            Layout::FreeBsd => FREEBSD_REGISTER,
            Layout::Linux => LINUX_REGISTER,
        };
        buf
    }

    /// The kernel's answer to a registration (Linux), as the emulated kernel sends it.
    pub fn registration_answer(self, version: &[u8]) -> Vec<u8> {
        let mut buf = self.registration();
        put_text(&mut buf, 4, VERSION_FIELD, version);
        buf
    }

    /// If `buf` is the kernel's answer to our registration, the driver version it names
    /// (`"3.1"` from every Linux kernel so far; it carries no meaning). Only op 100 is
    /// an answer: we register with 100, and the legacy op's answer would carry 4, the
    /// op of GET_IP_INFO, which a request must stay.
    pub fn registration_answer_version(self, buf: &[u8]) -> Option<Vec<u8>> {
        if !self.registration_answered()
            || buf.len() != self.message_size()
            || buf[offset::OPERATION] != LINUX_REGISTER
        {
            return None;
        }
        let field = &buf[4..4 + VERSION_FIELD];
        Some(
            terminated(field)
                .unwrap_or(&field[..VERSION_FIELD - 1])
                .to_vec(),
        )
    }
}

/// One device message, of its layout's size.
pub type Message = Vec<u8>;

/// Byte offsets inside a message (from the start of the message). Private to the core:
/// the simulator's host writes its messages from its own table (`sim/src/host_wire.rs`),
/// so a wrong offset here shows up as a wrong reply there.
pub(crate) mod offset {
    pub(crate) const OPERATION: usize = 0;
    pub(crate) const POOL: usize = 1;
    pub(crate) const STATUS: usize = 0;
    // GET / SET: hv_kvp_exchg_msg_value
    // The kernel fills this field itself (docs/protocol/kvp.md §2.4); stated so the
    // layout reads whole.
    #[allow(dead_code)]
    pub(crate) const VALUE_TYPE: usize = 4;
    pub(crate) const KEY_SIZE: usize = 8;
    pub(crate) const VALUE_SIZE: usize = 12;
    pub(crate) const KEY: usize = 16;
    pub(crate) const VALUE: usize = 528;
    // DELETE
    pub(crate) const DELETE_KEY_SIZE: usize = 4;
    pub(crate) const DELETE_KEY: usize = 8;
    // ENUMERATE
    pub(crate) const ENUM_INDEX: usize = 4;
    // The kernel fills this field itself (docs/protocol/kvp.md §2.4); stated so the
    // layout reads whole.
    #[allow(dead_code)]
    pub(crate) const ENUM_VALUE_TYPE: usize = 8;
    // The kernel fills this field itself (docs/protocol/kvp.md §2.4); stated so the
    // layout reads whole.
    #[allow(dead_code)]
    pub(crate) const ENUM_KEY_SIZE: usize = 12;
    // The kernel fills this field itself (docs/protocol/kvp.md §2.4); stated so the
    // layout reads whole.
    #[allow(dead_code)]
    pub(crate) const ENUM_VALUE_SIZE: usize = 16;
    pub(crate) const ENUM_KEY: usize = 20;
    pub(crate) const ENUM_VALUE: usize = 532;
    // GET_IP_INFO / SET_IP_INFO: hv_kvp_ipaddr_value (UTF-8 on the device side)
    pub(crate) const ADAPTER_ID: usize = 4;
    pub(crate) const ADDR_FAMILY: usize = 260;
    pub(crate) const DHCP_ENABLED: usize = 261;
    pub(crate) const IP_ADDR: usize = 262;
    pub(crate) const SUB_NET: usize = 2310;
    pub(crate) const GATE_WAY: usize = 4358;
    pub(crate) const DNS_ADDR: usize = 5382;
}

/// Sizes of the IP info fields on the device (bytes).
pub(crate) mod ip_field {
    pub(crate) const ADAPTER_ID: usize = 256;
    pub(crate) const IP_ADDR: usize = 2048;
    pub(crate) const SUB_NET: usize = 2048;
    pub(crate) const GATE_WAY: usize = 1024;
    pub(crate) const DNS_ADDR: usize = 2048;
}

// The layout adds up (docs/protocol/kvp.md §1.3): every field ends inside the message.
const _: () = assert!(offset::VALUE + KVP_VALUE_FIELD == 2576);
const _: () = assert!(offset::ENUM_VALUE + KVP_VALUE_FIELD == 2580);
const _: () = assert!(offset::DNS_ADDR + ip_field::DNS_ADDR == KVP_MSG_SIZE);
const _: () = assert!(offset::DELETE_KEY + KVP_KEY_FIELD <= KVP_MSG_SIZE);
// The memory bound of `limits::HOST_HELD_MAX_BYTES` counts these pools.
const _: () = assert!(PoolId::FILE_BACKED.len() == crate::limits::FILE_POOLS);

/// `enum hv_kvp_exchg_op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum Op {
    Get = 0,
    Set = 1,
    Delete = 2,
    Enumerate = 3,
    GetIpInfo = 4,
    SetIpInfo = 5,
}

impl Op {
    pub fn from_u8(b: u8) -> Option<Op> {
        Some(match b {
            0 => Op::Get,
            1 => Op::Set,
            2 => Op::Delete,
            3 => Op::Enumerate,
            4 => Op::GetIpInfo,
            5 => Op::SetIpInfo,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Set => "SET",
            Op::Delete => "DELETE",
            Op::Enumerate => "ENUMERATE",
            Op::GetIpInfo => "GET_IP_INFO",
            Op::SetIpInfo => "SET_IP_INFO",
        }
    }
}

/// `enum hv_kvp_exchg_pool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum PoolId {
    External = 0,
    Guest = 1,
    Auto = 2,
    AutoExternal = 3,
    AutoInternal = 4,
}

impl PoolId {
    pub const ALL: [PoolId; 5] = [
        PoolId::External,
        PoolId::Guest,
        PoolId::Auto,
        PoolId::AutoExternal,
        PoolId::AutoInternal,
    ];
    /// Pools kept in files; the auto pool is generated from system information.
    pub const FILE_BACKED: [PoolId; 4] = [
        PoolId::External,
        PoolId::Guest,
        PoolId::AutoExternal,
        PoolId::AutoInternal,
    ];

    pub fn from_u8(b: u8) -> Option<PoolId> {
        PoolId::ALL.get(usize::from(b)).copied()
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            PoolId::External => "external",
            PoolId::Guest => "guest",
            PoolId::Auto => "auto",
            PoolId::AutoExternal => "auto-external",
            PoolId::AutoInternal => "auto-internal",
        }
    }

    /// `.kvp_pool_N`, the stock daemon's file name.
    pub fn file_name(self) -> String {
        format!(".kvp_pool_{}", self.index())
    }
}

/// An HRESULT written into bytes 0..3 of a reply; the kernel forwards it verbatim.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Status(pub u32);

impl Status {
    pub const OK: Status = Status(0x0000_0000);
    pub const E_FAIL: Status = Status(0x8000_4005);
    /// "No more items": end of enumeration, key not found, operation refused.
    pub const S_CONT: Status = Status(0x8007_0103);
    pub const NOT_SUPPORTED: Status = Status(0x8007_0032);
    pub const INVALID_ARG: Status = Status(0x8007_0057);
    pub const GUID_NOT_FOUND: Status = Status(0x8004_1002);

    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Status::OK => "OK",
            Status::E_FAIL => "E_FAIL",
            Status::S_CONT => "S_CONT",
            Status::NOT_SUPPORTED => "NOT_SUPPORTED",
            Status::INVALID_ARG => "INVALID_ARG",
            Status::GUID_NOT_FOUND => "GUID_NOT_FOUND",
            _ => return None,
        })
    }
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{:#010x}", self.0),
        }
    }
}

/// Which string field of a message was malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Key,
    Value,
    AdapterId,
    IpAddr,
    SubNet,
    GateWay,
    DnsAddr,
}

/// Why a device message is not a request we can carry out. Each has the status that
/// answers it; the message is still answered exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("device message of {0} bytes, expected 7430")]
    WrongLength(usize),
    #[error("unknown operation {0}")]
    UnknownOp(u8),
    #[error("{op:?} names pool {pool}, pools are 0..=4")]
    BadPool { op: Op, pool: u8 },
    #[error("{op:?}: the {field:?} field has no terminator")]
    Unterminated { op: Op, field: Field },
}

impl DecodeError {
    pub fn status(&self) -> Status {
        match self {
            DecodeError::UnknownOp(_) => Status::NOT_SUPPORTED,
            DecodeError::WrongLength(_) | DecodeError::BadPool { .. } => Status::E_FAIL,
            DecodeError::Unterminated { .. } => Status::INVALID_ARG,
        }
    }

    /// The operation, when the message named a known one.
    pub fn op(&self) -> Option<Op> {
        match self {
            DecodeError::BadPool { op, .. } | DecodeError::Unterminated { op, .. } => Some(*op),
            _ => None,
        }
    }
}

/// The text fields of `hv_kvp_ipaddr_value`, as bytes up to each terminator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct IpFields {
    pub adapter_id: Vec<u8>,
    pub addr_family: u8,
    pub dhcp_enabled: u8,
    pub ip_addr: Vec<u8>,
    pub sub_net: Vec<u8>,
    pub gate_way: Vec<u8>,
    pub dns_addr: Vec<u8>,
}

/// A host request as the daemon sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Request {
    Get {
        pool: PoolId,
        key: Key,
    },
    Set {
        pool: PoolId,
        key: Key,
        value: Value,
    },
    Delete {
        pool: PoolId,
        key: Key,
    },
    Enumerate {
        pool: PoolId,
        index: u32,
    },
    GetIpInfo {
        adapter_id: Vec<u8>,
        addr_family: u8,
    },
    SetIpInfo(IpFields),
}

impl Request {
    pub fn op(&self) -> Op {
        match self {
            Request::Get { .. } => Op::Get,
            Request::Set { .. } => Op::Set,
            Request::Delete { .. } => Op::Delete,
            Request::Enumerate { .. } => Op::Enumerate,
            Request::GetIpInfo { .. } => Op::GetIpInfo,
            Request::SetIpInfo(_) => Op::SetIpInfo,
        }
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn field(buf: &[u8], at: usize, len: usize, op: Op, which: Field) -> Result<&[u8], DecodeError> {
    terminated(&buf[at..at + len]).ok_or(DecodeError::Unterminated { op, field: which })
}

fn key_at(buf: &[u8], at: usize, op: Op) -> Result<Key, DecodeError> {
    let bytes = field(buf, at, KVP_KEY_FIELD, op, Field::Key)?;
    // A terminated string from a 512-byte field is at most 511 bytes with no NUL.
    Ok(Key::new(bytes).expect("terminated field fits the key bounds"))
}

fn value_at(buf: &[u8], at: usize, op: Op) -> Result<Value, DecodeError> {
    let bytes = field(buf, at, KVP_VALUE_FIELD, op, Field::Value)?;
    Ok(Value::new(bytes).expect("terminated field fits the value bounds"))
}

fn ip_fields(buf: &[u8], op: Op) -> Result<IpFields, DecodeError> {
    use offset as o;
    Ok(IpFields {
        adapter_id: field(
            buf,
            o::ADAPTER_ID,
            ip_field::ADAPTER_ID,
            op,
            Field::AdapterId,
        )?
        .to_vec(),
        addr_family: buf[o::ADDR_FAMILY],
        dhcp_enabled: buf[o::DHCP_ENABLED],
        ip_addr: field(buf, o::IP_ADDR, ip_field::IP_ADDR, op, Field::IpAddr)?.to_vec(),
        sub_net: field(buf, o::SUB_NET, ip_field::SUB_NET, op, Field::SubNet)?.to_vec(),
        gate_way: field(buf, o::GATE_WAY, ip_field::GATE_WAY, op, Field::GateWay)?.to_vec(),
        dns_addr: field(buf, o::DNS_ADDR, ip_field::DNS_ADDR, op, Field::DnsAddr)?.to_vec(),
    })
}

/// Decodes one message read from the device. Total: never panics, never reads past a
/// field, whatever the bytes.
pub fn decode_request(buf: &[u8]) -> Result<Request, DecodeError> {
    Layout::FreeBsd.decode_request(buf)
}

impl Layout {
    /// Decodes one message read from the device. Total: never panics, never reads past
    /// a field, whatever the bytes.
    pub fn decode_request(self, buf: &[u8]) -> Result<Request, DecodeError> {
        if buf.len() != self.message_size() {
            return Err(DecodeError::WrongLength(buf.len()));
        }
        decode_fields(buf)
    }
}

/// The request in a message of the right length (every field offset is the same in
/// both layouts).
fn decode_fields(buf: &[u8]) -> Result<Request, DecodeError> {
    let op_byte = buf[offset::OPERATION];
    let op = Op::from_u8(op_byte).ok_or(DecodeError::UnknownOp(op_byte))?;
    let pool = || {
        let p = buf[offset::POOL];
        PoolId::from_u8(p).ok_or(DecodeError::BadPool { op, pool: p })
    };
    Ok(match op {
        Op::Get => Request::Get {
            pool: pool()?,
            key: key_at(buf, offset::KEY, op)?,
        },
        Op::Set => Request::Set {
            pool: pool()?,
            key: key_at(buf, offset::KEY, op)?,
            value: value_at(buf, offset::VALUE, op)?,
        },
        Op::Delete => Request::Delete {
            pool: pool()?,
            key: key_at(buf, offset::DELETE_KEY, op)?,
        },
        Op::Enumerate => Request::Enumerate {
            pool: pool()?,
            index: u32_at(buf, offset::ENUM_INDEX),
        },
        // The pool byte means nothing for the IP operations.
        Op::GetIpInfo => {
            let f = ip_fields(buf, op)?;
            Request::GetIpInfo {
                adapter_id: f.adapter_id,
                addr_family: f.addr_family,
            }
        }
        Op::SetIpInfo => Request::SetIpInfo(ip_fields(buf, op)?),
    })
}

/// What the daemon writes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Status only: SET, DELETE, SET_IP_INFO and every failure.
    Status(Status),
    /// GET found the key: OK and the value at offset 528 (the kernel reads it there).
    Value(Value),
    /// ENUMERATE found the index: OK, key at 20 and value at 532.
    Entry { key: Key, value: Value },
    /// GET_IP_INFO found the adapter.
    IpInfo(IpFields),
}

impl Reply {
    pub fn status(&self) -> Status {
        match self {
            Reply::Status(s) => *s,
            _ => Status::OK,
        }
    }
}

fn put_text(buf: &mut [u8], at: usize, len: usize, text: &[u8]) {
    // Cut to leave room for the terminator; the buffer is already zero.
    let n = text.len().min(len - 1);
    let n = text[..n].iter().position(|&b| b == 0).unwrap_or(n);
    buf[at..at + n].copy_from_slice(&text[..n]);
}

/// FreeBSD's registration message (`Layout::registration`).
pub fn registration() -> Message {
    Layout::FreeBsd.registration()
}

/// Encodes a reply in FreeBSD's layout (`Layout::encode_reply`).
pub fn encode_reply(reply: &Reply) -> Message {
    Layout::FreeBsd.encode_reply(reply)
}

impl Layout {
    /// Encodes a reply into a fresh zeroed message.
    pub fn encode_reply(self, reply: &Reply) -> Message {
        let mut buf = vec![0u8; self.message_size()];
        encode_reply_into(&mut buf, self.get_value(), reply);
        buf
    }
}

fn encode_reply_into(buf: &mut [u8], get_value: usize, reply: &Reply) {
    put_u32(&mut buf[..], offset::STATUS, reply.status().0);
    match reply {
        Reply::Status(_) => {}
        Reply::Value(v) => v.write_padded(&mut buf[get_value..get_value + KVP_VALUE_FIELD]),
        Reply::Entry { key, value } => {
            key.write_padded(&mut buf[offset::ENUM_KEY..offset::ENUM_KEY + KVP_KEY_FIELD]);
            value.write_padded(&mut buf[offset::ENUM_VALUE..offset::ENUM_VALUE + KVP_VALUE_FIELD]);
        }
        Reply::IpInfo(f) => {
            use offset as o;
            put_text(
                &mut buf[..],
                o::ADAPTER_ID,
                ip_field::ADAPTER_ID,
                &f.adapter_id,
            );
            buf[o::ADDR_FAMILY] = f.addr_family;
            buf[o::DHCP_ENABLED] = f.dhcp_enabled;
            put_text(&mut buf[..], o::IP_ADDR, ip_field::IP_ADDR, &f.ip_addr);
            put_text(&mut buf[..], o::SUB_NET, ip_field::SUB_NET, &f.sub_net);
            put_text(&mut buf[..], o::GATE_WAY, ip_field::GATE_WAY, &f.gate_way);
            put_text(&mut buf[..], o::DNS_ADDR, ip_field::DNS_ADDR, &f.dns_addr);
        }
    }
}

/// Reads a reply the way the kernel does for a request of `op` (the reply itself does not
/// say which op it answers: the status overwrote the header). Used by the simulator and
/// by trace replay. Unterminated text is cut at its field, as a reader must.
pub fn decode_reply(op: Op, buf: &[u8]) -> Result<Reply, DecodeError> {
    Layout::FreeBsd.decode_reply(op, buf)
}

impl Layout {
    /// [`decode_reply`] for this layout's messages.
    pub fn decode_reply(self, op: Op, buf: &[u8]) -> Result<Reply, DecodeError> {
        if buf.len() != self.message_size() {
            return Err(DecodeError::WrongLength(buf.len()));
        }
        decode_reply_fields(op, self.get_value(), buf)
    }
}

fn decode_reply_fields(op: Op, get_value: usize, buf: &[u8]) -> Result<Reply, DecodeError> {
    let status = Status(u32_at(buf, offset::STATUS));
    if status != Status::OK {
        return Ok(Reply::Status(status));
    }
    let text = |at: usize, len: usize| {
        let f = &buf[at..at + len];
        terminated(f).unwrap_or(&f[..len - 1]).to_vec()
    };
    Ok(match op {
        Op::Get => Reply::Value(Value::truncated(&text(get_value, KVP_VALUE_FIELD))),
        Op::Enumerate => Reply::Entry {
            key: Key::truncated(&text(offset::ENUM_KEY, KVP_KEY_FIELD)),
            value: Value::truncated(&text(offset::ENUM_VALUE, KVP_VALUE_FIELD)),
        },
        Op::GetIpInfo => {
            use offset as o;
            Reply::IpInfo(IpFields {
                adapter_id: text(o::ADAPTER_ID, ip_field::ADAPTER_ID),
                addr_family: buf[o::ADDR_FAMILY],
                dhcp_enabled: buf[o::DHCP_ENABLED],
                ip_addr: text(o::IP_ADDR, ip_field::IP_ADDR),
                sub_net: text(o::SUB_NET, ip_field::SUB_NET),
                gate_way: text(o::GATE_WAY, ip_field::GATE_WAY),
                dns_addr: text(o::DNS_ADDR, ip_field::DNS_ADDR),
            })
        }
        Op::Set | Op::Delete | Op::SetIpInfo => Reply::Status(status),
    })
}

/// The `key_size`/`value_size` the FreeBSD kernel computes for a string the host sent
/// with its UTF-16 terminator (docs/protocol/kvp.md §2.4): exact for ASCII
/// (`strlen + 1`), too small for anything else. We never trust it; the simulator sends
/// it to keep us honest.
pub fn kernel_size_field(text: &[u8]) -> u32 {
    let units = String::from_utf8_lossy(text).encode_utf16().count();
    u32::try_from((text.len() + units + 2) / 2).unwrap_or(u32::MAX)
}

/// Encodes a request in FreeBSD's layout (`Layout::encode_request`).
pub fn encode_request(req: &Request) -> Message {
    Layout::FreeBsd.encode_request(req)
}

impl Layout {
    /// Encodes a request as the kernel hands it to the daemon (host and simulator
    /// side).
    pub fn encode_request(self, req: &Request) -> Message {
        let mut buf = vec![0u8; self.message_size()];
        encode_request_into(&mut buf, self, req);
        buf
    }

    /// The `key_size`/`value_size` this kernel stores for a string: FreeBSD's is wrong
    /// for non-ASCII text ([`kernel_size_field`]); Linux's is the UTF-8 length plus its
    /// terminator (docs/protocol/linux.md §1.4).
    pub fn size_field(self, text: &[u8]) -> u32 {
        match self {
            Layout::FreeBsd => kernel_size_field(text),
            Layout::Linux => u32::try_from(text.len() + 1).unwrap_or(u32::MAX),
        }
    }
}

fn encode_request_into(buf: &mut [u8], layout: Layout, req: &Request) {
    buf[offset::OPERATION] = req.op() as u8;
    match req {
        Request::Get { pool, key } => {
            buf[offset::POOL] = *pool as u8;
            put_u32(
                &mut buf[..],
                offset::KEY_SIZE,
                layout.size_field(key.as_bytes()),
            );
            key.write_padded(&mut buf[offset::KEY..offset::KEY + KVP_KEY_FIELD]);
        }
        Request::Set { pool, key, value } => {
            buf[offset::POOL] = *pool as u8;
            put_u32(
                &mut buf[..],
                offset::KEY_SIZE,
                layout.size_field(key.as_bytes()),
            );
            put_u32(
                &mut buf[..],
                offset::VALUE_SIZE,
                layout.size_field(value.as_bytes()),
            );
            key.write_padded(&mut buf[offset::KEY..offset::KEY + KVP_KEY_FIELD]);
            value.write_padded(&mut buf[offset::VALUE..offset::VALUE + KVP_VALUE_FIELD]);
        }
        Request::Delete { pool, key } => {
            buf[offset::POOL] = *pool as u8;
            put_u32(
                &mut buf[..],
                offset::DELETE_KEY_SIZE,
                layout.size_field(key.as_bytes()),
            );
            key.write_padded(&mut buf[offset::DELETE_KEY..offset::DELETE_KEY + KVP_KEY_FIELD]);
        }
        Request::Enumerate { pool, index } => {
            buf[offset::POOL] = *pool as u8;
            put_u32(&mut buf[..], offset::ENUM_INDEX, *index);
        }
        Request::GetIpInfo {
            adapter_id,
            addr_family,
        } => {
            put_text(
                &mut buf[..],
                offset::ADAPTER_ID,
                ip_field::ADAPTER_ID,
                adapter_id,
            );
            buf[offset::ADDR_FAMILY] = *addr_family;
        }
        Request::SetIpInfo(f) => {
            // The same fields as a GET_IP_INFO reply's, under the op instead of a status.
            encode_reply_into(buf, offset::VALUE, &Reply::IpInfo(f.clone()));
            buf[..4].fill(0);
            buf[offset::OPERATION] = Op::SetIpInfo as u8;
        }
    }
}
