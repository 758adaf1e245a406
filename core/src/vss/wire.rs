//! The 64-byte `hv_vss_opt_msg` exchanged by ioctl on `/dev/hv_fsvss_dev` and
//! `/dev/hv_appvss_dev`, and the ioctl request codes (docs/protocol/vss.md §1.2, §1.3, §8).

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
    /// `status != 0`: the kernel had nothing (the request timed out meanwhile).
    Nothing,
    Request {
        op: VssOp,
        msgid: u64,
    },
    /// Something we cannot carry out; answered with a failure that echoes it.
    Invalid(OptMsg),
}

/// Decodes a READ result. Total: any bytes give one of the three.
pub fn decode_read(bytes: &[u8]) -> VssRead {
    let Some(m) = OptMsg::decode(bytes) else {
        // Not even a message: nothing to echo, nothing to answer.
        return VssRead::Nothing;
    };
    if m.status != 0 {
        return VssRead::Nothing;
    }
    match VssOp::from_u32(m.opt) {
        Some(op) if m.msgid != 0 => VssRead::Request { op, msgid: m.msgid },
        _ => VssRead::Invalid(m),
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
        assert_eq!(
            decode_read(&bytes),
            VssRead::Request {
                op: VssOp::Freeze,
                msgid
            }
        );
        let m = OptMsg::decode(&bytes).unwrap();
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
        assert!(matches!(decode_read(&b), VssRead::Invalid(m) if m.opt == 9));
        b[0] = 1;
        b[8..16].fill(0);
        assert!(matches!(decode_read(&b), VssRead::Invalid(_)), "zero msgid");
        assert_eq!(decode_read(&[1, 2, 3]), VssRead::Nothing);
    }
}
