//! Every bound the core enforces, in one place.
//!
//! Protocol sizes come from `spec/kvp.md` §1.2–1.3; the rest are our own limits, chosen
//! so that memory, work per event and on-disk growth stay bounded whatever the host or
//! another program does.

use std::time::Duration;

/// One `hv_kvp_msg` on `/dev/hv_kvp_dev` (spec §1.3).
pub const KVP_MSG_SIZE: usize = 7430;
/// Key array in a message and in a pool record; a key holds at most 511 bytes plus NUL.
pub const KVP_KEY_FIELD: usize = 512;
/// Value array in a message and in a pool record.
pub const KVP_VALUE_FIELD: usize = 2048;
/// One pool-file record: key field then value field, no header.
pub const POOL_RECORD_SIZE: usize = KVP_KEY_FIELD + KVP_VALUE_FIELD;
/// Sector size assumed for torn writes: a crash keeps or loses whole sectors.
pub const SECTOR_SIZE: usize = 512;

/// The kernel answers the host with `E_FAIL` 5 s after handing a request to the daemon.
pub const KVP_KERNEL_DEADLINE: Duration = Duration::from_secs(5);
/// We answer by this long after reading a request, leaving margin for scheduling and
/// the write itself.
pub const KVP_REPLY_BUDGET: Duration = Duration::from_millis(4500);

/// Largest number of records the daemon holds for one pool (80 MiB of file). A file
/// larger than this is served up to the limit and never grown by us; nothing is cut.
pub const MAX_POOL_RECORDS: usize = 32 * 1024;
/// Bytes per `Read` effect: pools are loaded in chunks so that memory stays small.
pub const READ_CHUNK: usize = 64 * POOL_RECORD_SIZE;
/// A journal holds one mutation (a few records) plus recovery's follow-up entries.
pub const MAX_JOURNAL_ENTRIES: usize = 8;
/// Slots one journal entry may touch: enough for an order-preserving delete in a full pool.
pub const MAX_JOURNAL_SLOTS: usize = MAX_POOL_RECORDS;
/// A failed pool is retried after this long.
pub const RECOVERY_RETRY: Duration = Duration::from_secs(1);
/// The coarsest file timestamp tick we allow for (FreeBSD `vfs.timestamp_precision=0`
/// keeps seconds): the production daemon's `KvpConfig::stamp_granularity`.
pub const STAMP_GRANULARITY: Duration = Duration::from_secs(1);

/// Keys the host can read back whole: 254 UTF-16 units (spec §2.4).
pub const HOST_SAFE_KEY_UNITS: usize = 254;
/// Values the host can read back whole: 1022 UTF-16 units (spec §2.4).
pub const HOST_SAFE_VALUE_UNITS: usize = 1022;

/// Longest list (addresses, gateways, DNS servers) accepted in SET_IP_INFO.
pub const MAX_IP_LIST: usize = 64;
/// Outputs that may queue between two drains; `handle` never produces more.
pub const MAX_QUEUED_OUTPUTS: usize = 16;
