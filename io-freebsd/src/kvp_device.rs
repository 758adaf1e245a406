//! `/dev/hv_kvp_dev` (docs/protocol/kvp.md §1.7): read with `pread(7430 @ 0)` only
//! after poll(2) said readable (its read blocks even with O_NONBLOCK, and devfs would
//! advance a plain read's offset); written with one `pwrite(7430 @ 0)` per reply.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use hvguest_core::kvp::wire::Layout;

/// Where FreeBSD's KVP driver puts its device.
pub const PATH: &str = "/dev/hv_kvp_dev";

/// The message layout of this device.
pub const LAYOUT: Layout = Layout::FreeBsd;

/// One read of one message into `buf` (at least a message long).
pub fn read(f: &File, buf: &mut [u8]) -> io::Result<usize> {
    f.read_at(&mut buf[..LAYOUT.message_size()], 0)
}

/// One write of one message.
pub fn write(f: &File, msg: &[u8]) -> io::Result<usize> {
    f.write_at(msg, 0)
}
