//! `/dev/vmbus/hv_vss` (docs/protocol/linux.md §2.1–§2.3): the same transport as the KVP
//! device. One read returns one whole message (12 bytes, or the registration's 4-byte
//! answer), one write hands the kernel one 12-byte message; any other length is
//! refused with EINVAL.

use std::fs::File;
use std::io::{self, Read, Write};

use hvguest_core::vss::wire::{Layout, LINUX_VSS_MSG_SIZE};

/// Where Linux's VSS driver puts its device.
pub const PATH: &str = "/dev/vmbus/hv_vss";

/// The message layout of this device.
pub const LAYOUT: Layout = Layout::Linux;

/// One read of one message.
pub fn read(mut f: &File) -> io::Result<Vec<u8>> {
    let mut buf = [0u8; LINUX_VSS_MSG_SIZE];
    let n = f.read(&mut buf)?;
    Ok(buf[..n].to_vec())
}

/// One write of one message.
pub fn write(mut f: &File, msg: &[u8]) -> io::Result<()> {
    let n = f.write(msg)?;
    if n != msg.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("the VSS device took {n} of {} bytes", msg.len()),
        ));
    }
    Ok(())
}
