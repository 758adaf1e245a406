//! `/dev/vmbus/hv_kvp` (docs/protocol/linux.md §1.1): one read returns one whole
//! message (a buffer shorter than it fails `EINVAL` and leaves it queued), one write
//! hands one whole message to the kernel. The file offset means nothing here, so plain
//! read(2) and write(2).

use std::fs::File;
use std::io::{self, Read, Write};

use hvguest_core::kvp::wire::Layout;

/// Where Linux's KVP driver puts its device.
pub const PATH: &str = "/dev/vmbus/hv_kvp";

/// The message layout of this device.
pub const LAYOUT: Layout = Layout::Linux;

/// One read of one message into `buf` (at least a message long).
pub fn read(mut f: &File, buf: &mut [u8]) -> io::Result<usize> {
    f.read(&mut buf[..LAYOUT.message_size()])
}

/// One write of one message.
pub fn write(mut f: &File, msg: &[u8]) -> io::Result<usize> {
    f.write(msg)
}
