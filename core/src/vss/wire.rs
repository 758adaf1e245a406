//! The VSS device messages. FreeBSD: the 64-byte `hv_vss_opt_msg` exchanged by ioctl on
//! `/dev/hv_fsvss_dev` and `/dev/hv_appvss_dev`, and the ioctl request codes
//! (docs/protocol/vss.md §1.2, §1.3, §8). Linux: the 12-byte `hv_vss_msg` read and
//! written on `/dev/vmbus/hv_vss`, after a registration the kernel answers
//! (docs/protocol/linux.md §2). [`Layout::decode_vss_read`] turns either into one
//! [`VssRead`]; a request keeps what its answer must echo ([`Echo`]).

pub use crate::layout::Layout;

/// `struct hv_vss_opt_msg`: opt u32, status u32, msgid u64, reserved [u8; 48].
pub const VSS_MSG_SIZE: usize = 64;

/// FreeBSD's ioctl encoding: direction | (len & 0x1fff) << 16 | group << 8 | number.
const fn ioc(dir: u32, group: u8, num: u8, len: usize) -> u32 {
    dir | (((len as u32) & 0x1fff) << 16) | ((group as u32) << 8) | num as u32
}
const IOC_VOID: u32 = 0x2000_0000;
const IOC_OUT: u32 = 0x4000_0000;
const IOC_IN: u32 = 0x8000_0000;

/// `_IOR('v', 2, struct hv_vss_opt_msg)`: read the next request.
pub const IOCHVVSSREAD: u32 = ioc(IOC_OUT, b'v', 2, VSS_MSG_SIZE);
/// `_IOW('v', 3, struct hv_vss_opt_msg)`: answer a request.
pub const IOCHVVSSWRITE: u32 = ioc(IOC_IN, b'v', 3, VSS_MSG_SIZE);
/// `_IOW('U', 1, fsid_t)`: suspend writes to one UFS file system (per open file).
pub const UFSSUSPEND: u32 = ioc(IOC_IN, b'U', 1, 8);
/// `_IO('U', 2)`: resume it.
pub const UFSRESUME: u32 = ioc(IOC_VOID, b'U', 2, 0);

// The values FreeBSD's headers produce (docs/protocol/vss.md §8.1).
const _: () = assert!(IOCHVVSSREAD == 0x4040_7602);
const _: () = assert!(IOCHVVSSWRITE == 0x8040_7603);
const _: () = assert!(UFSSUSPEND == 0x8008_5501);
const _: () = assert!(UFSRESUME == 0x2000_5502);

/// `opt` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum VssOp {
    Check = 1,
    Freeze = 2,
    Thaw = 3,
}

impl VssOp {
    pub fn from_u32(v: u32) -> Option<VssOp> {
        Some(match v {
            1 => VssOp::Check,
            2 => VssOp::Freeze,
            3 => VssOp::Thaw,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            VssOp::Check => "CHECK",
            VssOp::Freeze => "FREEZE",
            VssOp::Thaw => "THAW",
        }
    }
}

pub const VSS_SUCCESS: u32 = 0;
pub const VSS_FAIL: u32 = 1;

/// The message's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct OptMsg {
    pub opt: u32,
    pub status: u32,
    pub msgid: u64,
}

impl OptMsg {
    /// Reads the fields of a READ result; `None` when it is not 64 bytes.
    pub fn decode(bytes: &[u8]) -> Option<OptMsg> {
        if bytes.len() != VSS_MSG_SIZE {
            return None;
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        Some(OptMsg {
            opt: u32_at(0),
            status: u32_at(4),
            msgid: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        })
    }

    /// 64 bytes, the reserved part zero.
    pub fn encode(&self) -> [u8; VSS_MSG_SIZE] {
        let mut b = [0u8; VSS_MSG_SIZE];
        b[0..4].copy_from_slice(&self.opt.to_le_bytes());
        b[4..8].copy_from_slice(&self.status.to_le_bytes());
        b[8..16].copy_from_slice(&self.msgid.to_le_bytes());
        b
    }

    /// A request of `op` as it was read (what its reply echoes).
    pub fn request(op: VssOp, msgid: u64) -> OptMsg {
        OptMsg {
            opt: op as u32,
            status: 0,
            msgid,
        }
    }

    /// The answer to this request: `opt` and `msgid` echoed exactly.
    pub fn reply(&self, ok: bool) -> OptMsg {
        OptMsg {
            opt: self.opt,
            status: if ok { VSS_SUCCESS } else { VSS_FAIL },
            msgid: self.msgid,
        }
    }
}

/// What one READ delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VssRead {
    /// `status != 0`: the kernel had nothing (the request timed out meanwhile); or not a
    /// message of the layout's size.
    Nothing,
    Request {
        op: VssOp,
        /// FreeBSD: the kernel's stamp of the host message's arrival (real-time ns).
        /// Linux stamps nothing: the time it was read, so that it names the request the
        /// same way (logs, snapshot names) and counts as no time used.
        msgid: u64,
        echo: Echo,
    },
    /// Something we cannot carry out; answered with a failure that echoes it.
    Invalid(Echo),
}

/// A request as it was read: what its answer is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    FreeBsd(OptMsg),
    Linux([u8; LINUX_VSS_MSG_SIZE]),
}

impl Echo {
    /// The answer's bytes. FreeBSD: `opt` and `msgid` echoed, `status` 0 or 1. Linux:
    /// the status over bytes 0–3 (0 or `HV_E_FAIL`), bytes 4–11 as they were read.
    pub fn reply(&self, ok: bool) -> Vec<u8> {
        match self {
            Echo::FreeBsd(m) => m.reply(ok).encode().to_vec(),
            Echo::Linux(b) => {
                let mut out = *b;
                let status = if ok { VSS_SUCCESS } else { LINUX_HV_E_FAIL };
                out[0..4].copy_from_slice(&status.to_le_bytes());
                out.to_vec()
            }
        }
    }

    /// The operation number as the kernel wrote it (for a log line).
    pub fn op_code(&self) -> u32 {
        match self {
            Echo::FreeBsd(m) => m.opt,
            Echo::Linux(b) => u32::from(b[0]),
        }
    }

    /// FreeBSD's msgid; 0 on Linux, whose messages carry none.
    pub fn msgid(&self) -> u64 {
        match self {
            Echo::FreeBsd(m) => m.msgid,
            Echo::Linux(_) => 0,
        }
    }
}

/// Decodes a FreeBSD READ result. Total: any bytes give one of the three.
pub fn decode_read(bytes: &[u8]) -> VssRead {
    let Some(m) = OptMsg::decode(bytes) else {
        // Not even a message: nothing to echo, nothing to answer.
        return VssRead::Nothing;
    };
    if m.status != 0 {
        return VssRead::Nothing;
    }
    match VssOp::from_u32(m.opt) {
        Some(op) if m.msgid != 0 => VssRead::Request {
            op,
            msgid: m.msgid,
            echo: Echo::FreeBsd(m),
        },
        _ => VssRead::Invalid(Echo::FreeBsd(m)),
    }
}

// ---------------------------------------------------------------------------------------
// Linux (docs/protocol/linux.md §2.2, §2.3, §2.4)

/// `sizeof(struct hv_vss_msg)`: every read and write on `/dev/vmbus/hv_vss` is this long.
pub const LINUX_VSS_MSG_SIZE: usize = 12;
/// `VSS_OP_REGISTER1`: the registration the kernel answers.
pub const LINUX_OP_REGISTER1: u8 = 129;
/// The host's operations the kernel hands the daemon; HOT_BACKUP is Linux's CHECK.
pub const LINUX_OP_HOT_BACKUP: u8 = 2;
pub const LINUX_OP_FREEZE: u8 = 5;
pub const LINUX_OP_THAW: u8 = 6;
/// `HV_E_FAIL`: the failure status, written over bytes 0–3 of the answer.
pub const LINUX_HV_E_FAIL: u32 = 0x8000_4005;
/// The kernel's answer to the registration: 4 bytes, the op as a little-endian `u32`.
pub const LINUX_REGISTRATION_ANSWER: [u8; 4] = [LINUX_OP_REGISTER1, 0, 0, 0];

impl Layout {
    /// The registration the machine writes before anything else, and again after the
    /// device is reopened; FreeBSD's VSS device has none.
    pub fn vss_registration(self) -> Option<Vec<u8>> {
        match self {
            Layout::FreeBsd => None,
            Layout::Linux => {
                let mut m = [0u8; LINUX_VSS_MSG_SIZE];
                m[0] = LINUX_OP_REGISTER1;
                Some(m.to_vec())
            }
        }
    }

    /// Whether a read is the kernel's answer to the registration.
    pub fn is_vss_registration_answer(self, bytes: &[u8]) -> bool {
        self == Layout::Linux && bytes == LINUX_REGISTRATION_ANSWER
    }

    /// Whether a written answer that was lost may have been an OK to FREEZE (which must
    /// not leave us frozen). FreeBSD's answers name their op; Linux's carry only the
    /// status, so any OK may have been one.
    pub fn may_be_freeze_ok(self, bytes: &[u8]) -> bool {
        match self {
            Layout::FreeBsd => OptMsg::decode(bytes)
                .is_some_and(|m| m.opt == VssOp::Freeze as u32 && m.status == VSS_SUCCESS),
            Layout::Linux => bytes.len() == LINUX_VSS_MSG_SIZE && bytes[0..4] == [0; 4],
        }
    }

    /// Decodes a READ of this layout's device; `realtime_ns` is when it was read.
    /// Total: any bytes give one of the three.
    pub fn decode_vss_read(self, bytes: &[u8], realtime_ns: u64) -> VssRead {
        match self {
            Layout::FreeBsd => decode_read(bytes),
            Layout::Linux => decode_linux(bytes, realtime_ns),
        }
    }
}

fn decode_linux(bytes: &[u8], realtime_ns: u64) -> VssRead {
    let Ok(raw) = <[u8; LINUX_VSS_MSG_SIZE]>::try_from(bytes) else {
        // Another length is no request (the stock daemon reopens the device on one);
        // nothing to echo, nothing to answer.
        return VssRead::Nothing;
    };
    let op = match raw[0] {
        LINUX_OP_HOT_BACKUP => VssOp::Check,
        LINUX_OP_FREEZE => VssOp::Freeze,
        LINUX_OP_THAW => VssOp::Thaw,
        _ => return VssRead::Invalid(Echo::Linux(raw)),
    };
    VssRead::Request {
        op,
        // 0 is no name: a clock at the epoch still gives 1.
        msgid: realtime_ns.max(1),
        echo: Echo::Linux(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vector_8_2() {
        let mut bytes = [0u8; 64];
        bytes[0] = 2;
        bytes[8..16].copy_from_slice(&[0x15, 0xcd, 0x85, 0x3d, 0xfe, 0x9c, 0x97, 0x17]);
        let msgid = 1_700_000_000_123_456_789u64;
        assert_eq!(msgid, 0x1797_9CFE_3D85_CD15);
        let m = OptMsg::decode(&bytes).unwrap();
        assert_eq!(
            decode_read(&bytes),
            VssRead::Request {
                op: VssOp::Freeze,
                msgid,
                echo: Echo::FreeBsd(m),
            }
        );
        assert_eq!(Echo::FreeBsd(m).reply(true), bytes.to_vec());
        assert_eq!(m.reply(true).encode(), bytes);
        let mut fail = bytes;
        fail[4] = 1;
        assert_eq!(m.reply(false).encode(), fail);
        // Nothing queued: opt 0, status 1, msgid 0.
        let mut none = [0u8; 64];
        none[4] = 1;
        assert_eq!(decode_read(&none), VssRead::Nothing);
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        let mut b = [0u8; 64];
        b[0] = 9;
        b[8] = 1;
        assert!(matches!(decode_read(&b), VssRead::Invalid(m) if m.op_code() == 9));
        b[0] = 1;
        b[8..16].fill(0);
        assert!(matches!(decode_read(&b), VssRead::Invalid(_)), "zero msgid");
        assert_eq!(decode_read(&[1, 2, 3]), VssRead::Nothing);
    }

    /// docs/protocol/linux.md §2.6: the registration and its answer, the three requests
    /// and both answer forms, and what is not a request.
    #[test]
    fn linux_vectors() {
        let l = Layout::Linux;
        let reg = l.vss_registration().unwrap();
        assert_eq!(reg.len(), 12);
        assert_eq!(reg[0], 0x81);
        assert!(reg[1..].iter().all(|&b| b == 0));
        assert!(l.is_vss_registration_answer(&[0x81, 0, 0, 0]));
        assert!(!l.is_vss_registration_answer(&[0x81, 0, 0, 0, 0]));
        assert!(!Layout::FreeBsd.is_vss_registration_answer(&[0x81, 0, 0, 0]));
        assert_eq!(Layout::FreeBsd.vss_registration(), None);
        for (code, op) in [(2u8, VssOp::Check), (5, VssOp::Freeze), (6, VssOp::Thaw)] {
            let mut req = [0u8; 12];
            req[0] = code;
            let VssRead::Request {
                op: got,
                msgid,
                echo,
            } = l.decode_vss_read(&req, 77)
            else {
                panic!("op {code} is a request");
            };
            assert_eq!((got, msgid), (op, 77));
            assert_eq!(echo.reply(true), vec![0u8; 12], "OK: 12 zero bytes");
            let mut fail = vec![0u8; 12];
            fail[..4].copy_from_slice(&[0x05, 0x40, 0x00, 0x80]);
            assert_eq!(echo.reply(false), fail);
        }
        // Bytes 4-11 are echoed as read.
        let mut req = [0u8; 12];
        req[0] = 5;
        req[8] = 0x11;
        let VssRead::Request { echo, .. } = l.decode_vss_read(&req, 0) else {
            panic!("FREEZE");
        };
        assert_eq!(echo.reply(false)[8], 0x11);
        assert_eq!(echo.reply(true)[0..4], [0, 0, 0, 0]);
        // A clock at the epoch still names the request.
        assert!(matches!(
            l.decode_vss_read(&req, 0),
            VssRead::Request { msgid: 1, .. }
        ));
        // GET_DM_INFO, AUTO_RECOVER and the registration are not ours to carry out.
        for code in [0u8, 1, 3, 4, 7, 128, 129, 255] {
            let mut m = [0u8; 12];
            m[0] = code;
            assert!(
                matches!(l.decode_vss_read(&m, 5), VssRead::Invalid(e) if e.op_code() == u32::from(code)),
                "op {code}"
            );
        }
        for len in [0usize, 4, 11, 13, 64] {
            assert_eq!(
                l.decode_vss_read(&vec![5u8; len], 5),
                VssRead::Nothing,
                "{len} bytes"
            );
        }
    }
}
