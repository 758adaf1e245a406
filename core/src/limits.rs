//! Every bound the core enforces, in one place.
//!
//! Protocol sizes come from docs/protocol/kvp.md §1.2–1.3; the rest are our own limits, chosen
//! so that memory, work per event and on-disk growth stay bounded whatever the host or
//! another program does.

use std::time::Duration;

/// One `hv_kvp_msg` on `/dev/hv_kvp_dev` (docs/protocol/kvp.md §1.3).
pub const KVP_MSG_SIZE: usize = 7430;
/// One `hv_kvp_msg` on Linux's `/dev/vmbus/hv_kvp`: the same fields, but the body union
/// is 4-aligned there and rounded up (docs/protocol/linux.md §1.2).
pub const LINUX_KVP_MSG_SIZE: usize = 7432;
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
/// Linux's kernel waits 30 s for the daemon (`HV_UTIL_TIMEOUT`, docs/protocol/linux.md
/// §1.3).
pub const LINUX_KVP_KERNEL_DEADLINE: Duration = Duration::from_secs(30);
/// Our answer on Linux: the same half-second margin as on FreeBSD.
pub const LINUX_KVP_REPLY_BUDGET: Duration = Duration::from_millis(29_500);

/// Largest number of records the daemon holds for one pool (80 MiB of file). A file
/// larger than this is served up to the limit and never grown by us; nothing is cut, and
/// nothing past the limit is even read (a huge or sparse file costs no more than this).
pub const MAX_POOL_RECORDS: usize = 32 * 1024;
/// The most of a pool file we read: [`MAX_POOL_RECORDS`] whole records.
pub const MAX_POOL_BYTES: u64 = (MAX_POOL_RECORDS * POOL_RECORD_SIZE) as u64;
/// The host's budget per pool, in records: a host SET that would append a record to a
/// pool file already holding this many (whoever wrote them) is refused, as the stock
/// daemon refuses a SET it cannot store; changing a key in place and DELETE stay
/// allowed. Hosts publish about 16 keys in pool 3 and an administrator's handful in
/// pool 0; azure-init allows itself 1024 keys, and OpenBSD's in-kernel pools index at
/// most 1023. Without a budget the host could make each of four pools hold
/// [`MAX_POOL_RECORDS`] (421 MB resident measured with all four full).
pub const HOST_POOL_RECORDS: usize = 1024;
/// `max_records` when kvp.conf does not set it: the most records a SET through us (the
/// host's or `hvkvp set`'s) may grow one pool file to. The host's own limit is the
/// smaller of this and [`HOST_POOL_RECORDS`] ([`KvpConfig::host_limit`]), so by default
/// the host keeps its budget and only tools may go beyond it.
///
/// [`KvpConfig::host_limit`]: crate::kvp::machine::KvpConfig::host_limit
pub const DEFAULT_MAX_RECORDS: usize = 10_000;
/// The same budget in bytes of pool file (2.5 MiB): what the host can make each of the
/// four pool files it may write take on disk.
pub const HOST_POOL_BYTES: u64 = (HOST_POOL_RECORDS * POOL_RECORD_SIZE) as u64;
/// An upper bound on the memory one record the daemon holds takes: its key and value (at
/// most 511 + 2047 bytes), the index's copy of the key (at most 511), and their
/// bookkeeping (two boxed slices, the index entry and its slot list) with the
/// allocator's rounding. About 3.2 KiB in practice.
pub const HELD_RECORD_MAX_BYTES: usize = 4 * 1024;
/// What the host can make the daemon hold at most (20 MiB): the four file pools at their
/// budget, and a second copy of one of them while a job reloads it (the old stays in
/// use until the new is complete). Stated in hv_kvp_daemon(8).
pub const HOST_HELD_MAX_BYTES: usize = (FILE_POOLS + 1) * HOST_POOL_RECORDS * HELD_RECORD_MAX_BYTES;
/// Pools kept in files, all of which the host may write (`PoolId::FILE_BACKED`).
pub const FILE_POOLS: usize = 4;
/// Bytes per `Read` effect: pools are loaded in chunks so that memory stays small.
pub const READ_CHUNK: usize = 64 * POOL_RECORD_SIZE;
/// A journal holds one mutation (a few records) plus recovery's follow-up entries.
pub const MAX_JOURNAL_ENTRIES: usize = 8;
/// Slots one journal entry may touch: enough for an order-preserving delete in a full pool.
pub const MAX_JOURNAL_SLOTS: usize = MAX_POOL_RECORDS;
/// Per-record pool issues (flawed records, duplicate keys) listed per load, at most: a
/// file of a million flawed records must not make a million log lines. The rest are
/// counted in one `PoolIssue::NotReported`.
pub const MAX_REPORTED_POOL_ISSUES: usize = 32;
/// Recover-then-mutate rounds a tool's write makes before giving up on a journal that
/// other writers keep filling between its recovery and its change.
pub const TOOL_WRITE_ATTEMPTS: usize = 3;
/// A failed pool is retried after this long.
pub const RECOVERY_RETRY: Duration = Duration::from_secs(1);
/// The coarsest file timestamp tick we allow for (FreeBSD `vfs.timestamp_precision=0`
/// keeps seconds): the production daemon's `KvpConfig::stamp_granularity`.
pub const STAMP_GRANULARITY: Duration = Duration::from_secs(1);

/// Keys the host can read back whole: 254 UTF-16 units (docs/protocol/kvp.md §2.4).
pub const HOST_SAFE_KEY_UNITS: usize = 254;
/// Values the host can read back whole: 1022 UTF-16 units (docs/protocol/kvp.md §2.4).
pub const HOST_SAFE_VALUE_UNITS: usize = 1022;

/// Longest list (addresses, gateways, DNS servers) accepted in SET_IP_INFO.
pub const MAX_IP_LIST: usize = 64;
/// Longest interface name: `IFNAMSIZ` less its terminator, 16 - 1 on FreeBSD and Linux.
pub const MAX_INTERFACE_NAME: usize = 15;
/// Most patterns in kvp.conf's `exclude_interfaces`.
pub const MAX_EXCLUDE_PATTERNS: usize = 64;
/// Most addresses a driver reports in `SystemInfo` (the auto pool shows at most 1022
/// UTF-16 units of them per family anyway).
pub const MAX_SYSTEM_ADDRS: usize = 1024;
/// Most interfaces a driver reports as holding one MAC for GET_IP_INFO.
pub const MAX_ADAPTER_CANDIDATES: usize = 16;
/// Most addresses a driver reports for one such interface, in the kernel's order; the
/// core orders them, then keeps the first `MAX_IP_LIST` (so `ipv6-first` still finds
/// the IPv6 addresses of an interface with many IPv4 aliases).
pub const MAX_ADAPTER_ADDRS: usize = 4 * MAX_IP_LIST;
/// Outputs that may queue between two drains; `handle` never produces more.
pub const MAX_QUEUED_OUTPUTS: usize = 16;

// ---- KVP timing rules ----------------------------------------------------------------

/// Longest the SET_IP_INFO script may run; the machine shortens it further to what is
/// left of the request's reply budget less [`KVP_EFFECT_MARGIN`].
pub const KVP_SET_IP_SCRIPT: Duration = Duration::from_millis(4000);
/// Longest SET_IP_INFO's programs may run together on Linux (`nmcli` loading and
/// activating the connection, or the script): NetworkManager waits for the interface to
/// come up, and the kernel waits 30 s for the reply (docs/protocol/linux.md §1.3), so
/// there is room FreeBSD's 5 s do not give. The machine shortens it as it does
/// [`KVP_SET_IP_SCRIPT`].
pub const LINUX_KVP_SET_IP_PROGRAMS: Duration = Duration::from_secs(20);
/// Left between a system effect's deadline and the request's reply deadline, to kill
/// the script, collect it and still answer in time.
pub const KVP_EFFECT_MARGIN: Duration = Duration::from_millis(500);

/// After a KVP or VSS device failed (Linux: the integration service switched off and
/// on, hibernation; `Layout::reopens_after_error`), the driver tries to open it again
/// after this pause; every failed attempt doubles the pause, up to [`DEVICE_REOPEN_MAX_PAUSE`]
/// ([`device_reopen_pause`]): never a busy loop, and back within 5 s of the device.
pub const DEVICE_REOPEN_FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two attempts to open a device again.
pub const DEVICE_REOPEN_MAX_PAUSE: Duration = Duration::from_secs(5);

/// The pause before the next attempt to open a device again, after `failures`
/// attempts that failed: [`DEVICE_REOPEN_FIRST_PAUSE`] doubled per failure, at most
/// [`DEVICE_REOPEN_MAX_PAUSE`].
pub const fn device_reopen_pause(failures: u32) -> Duration {
    // 2^6 times the first pause is past the longest already; no shift overflows.
    let shift = if failures > 6 { 6 } else { failures };
    let nanos = (DEVICE_REOPEN_FIRST_PAUSE.as_nanos() as u64) << shift;
    let max = DEVICE_REOPEN_MAX_PAUSE.as_nanos() as u64;
    Duration::from_nanos(if nanos < max { nanos } else { max })
}

/// How often the driver looks the host name up again (in the background; no request
/// waits for DNS).
pub const HOSTNAME_REFRESH: Duration = Duration::from_secs(300);
/// After a program (hook, script, `zpool`) exits or is killed at its deadline, the driver
/// waits at most this long for its output pipes to close. It must fit in the slack the
/// machines leave past a program's deadline.
pub const PROGRAM_OUTPUT_GRACE: Duration = Duration::from_millis(100);

// The host's budget lies within what we hold, so a pool the host fills to its budget is
// always wholly in memory and can be changed; and the bound hv_kvp_daemon(8) states holds.
const _: () = assert!(0 < HOST_POOL_RECORDS && HOST_POOL_RECORDS <= MAX_POOL_RECORDS);
// A default a configuration could not set would be refused by its own parser.
const _: () = assert!(0 < DEFAULT_MAX_RECORDS && DEFAULT_MAX_RECORDS <= MAX_POOL_RECORDS);
const _: () = assert!(HOST_POOL_BYTES <= MAX_POOL_BYTES);
const _: () =
    assert!(2 * (KVP_KEY_FIELD - 1) + (KVP_VALUE_FIELD - 1) + 512 <= HELD_RECORD_MAX_BYTES);
const _: () = assert!(HOST_HELD_MAX_BYTES <= 20 * 1024 * 1024);
// Reads of a pool stop at MAX_POOL_BYTES on a record boundary, in whole chunks.
const _: () = assert!(MAX_POOL_BYTES % (READ_CHUNK as u64) == 0);
const _: () = assert!(READ_CHUNK % POOL_RECORD_SIZE == 0);
const _: () = assert!(KVP_REPLY_BUDGET.as_nanos() < KVP_KERNEL_DEADLINE.as_nanos());
const _: () = assert!(LINUX_KVP_REPLY_BUDGET.as_nanos() < LINUX_KVP_KERNEL_DEADLINE.as_nanos());
const _: () = assert!(PROGRAM_OUTPUT_GRACE.as_nanos() < KVP_EFFECT_MARGIN.as_nanos());
const _: () = assert!(
    KVP_SET_IP_SCRIPT.as_nanos() + KVP_EFFECT_MARGIN.as_nanos() <= KVP_REPLY_BUDGET.as_nanos()
);
const _: () = assert!(
    LINUX_KVP_SET_IP_PROGRAMS.as_nanos() + KVP_EFFECT_MARGIN.as_nanos()
        <= LINUX_KVP_REPLY_BUDGET.as_nanos()
);
const _: () = assert!(DEVICE_REOPEN_FIRST_PAUSE.as_nanos() > 0);
const _: () = assert!(DEVICE_REOPEN_FIRST_PAUSE.as_nanos() < DEVICE_REOPEN_MAX_PAUSE.as_nanos());
// The cap is reached within the shifts `device_reopen_pause` allows, and held after.
const _: () = assert!(device_reopen_pause(6).as_nanos() == DEVICE_REOPEN_MAX_PAUSE.as_nanos());
const _: () =
    assert!(device_reopen_pause(u32::MAX).as_nanos() == DEVICE_REOPEN_MAX_PAUSE.as_nanos());
const _: () = assert!(device_reopen_pause(0).as_nanos() == DEVICE_REOPEN_FIRST_PAUSE.as_nanos());
const _: () =
    assert!(device_reopen_pause(1).as_nanos() == 2 * DEVICE_REOPEN_FIRST_PAUSE.as_nanos());

// ---- VSS timing rules (docs/protocol/vss.md §2) ----------------------------------------------

/// The VSS kernel's timer for one host request (`TIMEOUT_LIMIT`, docs/protocol/vss.md §2.2):
/// 15 s from the host's message to its reply, for the whole chain (application helper
/// and daemon); when it fires the host gets `E_FAIL`.
pub const VSS_KERNEL_DEADLINE: Duration = Duration::from_secs(15);
/// Linux's kernel waits this long for the daemon's answer to HOT_BACKUP and THAW
/// (`HV_UTIL_TIMEOUT`, docs/protocol/linux.md §2.4)...
pub const LINUX_VSS_DEADLINE: Duration = Duration::from_secs(30);
/// ...and this long for FREEZE (`VSS_FREEZE_TIMEOUT`). We answer within
/// [`VSS_KERNEL_DEADLINE`] on both systems, well inside either.
pub const LINUX_VSS_FREEZE_DEADLINE: Duration = Duration::from_secs(900);
/// We answer this long before the kernel's deadline.
pub const VSS_ANSWER_MARGIN: Duration = Duration::from_millis(1000);
/// Kept free for a rolled-back FREEZE's resume before the answer is due; also the
/// deadline of a freezer round trip (resume, ping, kill).
pub const VSS_ROLLBACK: Duration = Duration::from_millis(1000);
/// Default: longest single freeze hook.
pub const VSS_HOOK: Duration = Duration::from_secs(4);
/// Default: all freeze hooks together.
pub const VSS_HOOKS_TOTAL: Duration = Duration::from_secs(5);
/// Default: `zpool sync`.
pub const VSS_SYNC: Duration = Duration::from_secs(3);
/// Default: each `zfs snapshot`.
pub const VSS_SNAPSHOT: Duration = Duration::from_secs(2);
/// Default: all UFSSUSPENDs together.
pub const VSS_SUSPEND: Duration = Duration::from_millis(1000);
/// Default: longest thaw hook.
pub const VSS_THAW_HOOK: Duration = Duration::from_secs(4);
/// How long past its deadline an effect may be late before it is given up.
pub const VSS_GRACE: Duration = Duration::from_millis(500);
/// Listing the mounts or the hook directory.
pub const VSS_LISTING: Duration = Duration::from_secs(1);
/// A FREEZE step with less time than this left (before the rollback reserve) is not
/// started: the FREEZE is rolled back instead.
pub const VSS_MIN_STEP: Duration = Duration::from_millis(50);
/// Default: thaw by ourselves this long after a FREEZE with no THAW.
pub const VSS_WATCHDOG: Duration = Duration::from_secs(30);
/// The freezer's own auto-thaw comes this long after the daemon's watchdog, which
/// normally thaws first and says why.
pub const VSS_FREEZER_BACKSTOP: Duration = Duration::from_secs(1);
/// Default: `hv_vss_app` thaws the application by itself this long after its FREEZE.
pub const VSS_APP_AUTO_THAW: Duration = Duration::from_secs(45);
/// Default: all of `hv_vss_app`'s freeze work.
pub const VSS_APP_FREEZE_BUDGET: Duration = Duration::from_secs(10);
/// Default: what `hv_vss_app` leaves of the 15 s to the file-system daemon.
pub const VSS_APP_DAEMON_RESERVE: Duration = Duration::from_secs(3);
/// Default: our own snapshots kept per pool by the prune after a successful THAW
/// (`snapshot_keep`; 0 keeps all).
pub const VSS_SNAPSHOT_KEEP: u32 = 3;
/// The largest `snapshot_keep` allowed (more is as good as keeping all, and a bound on
/// what one prune considers).
pub const VSS_MAX_SNAPSHOT_KEEP: u32 = 1000;
/// Listing one pool's snapshots for a prune (`zfs list`).
pub const VSS_SNAPSHOT_LIST: Duration = Duration::from_millis(1000);
/// Each `zfs destroy` of a prune. Short on purpose: the core drops a prune the moment a
/// request comes, but the driver may still be running this program; the request's own
/// first step waits at most this long (plus the output grace) behind it.
pub const VSS_SNAPSHOT_DESTROY: Duration = Duration::from_millis(1000);
/// The most snapshot names the driver reads from one pool's listing; the rest are not
/// considered (a partial listing never makes a prune destroy one of the newest kept:
/// `vss::prune::select`).
pub const VSS_MAX_LISTED_SNAPSHOTS: usize = 4096;
/// Longest line between the daemon and its freezer (a mount point is at most 1024).
pub const FREEZER_MAX_LINE: usize = 2048;
/// However often the host repeats FREEZE (each one starts the watchdog again), file
/// systems stay frozen at most this long in all, counted from the first suspension of a
/// freeze: the daemon thaws [`VSS_FREEZER_BACKSTOP`] before it, and the freezer by
/// itself at it. Twice the default watchdog: a host that retries its FREEZE gets a
/// second full watchdog period, never an unbounded one (issue 11).
pub const VSS_MAX_FROZEN: Duration = Duration::from_secs(60);
/// After SIGTERM, or once the device has failed, a VSS daemon goes on without the device
/// for at most this long to thaw what it froze (resume, thaw hooks); what is left then
/// is given up, said so, and the daemon exits (its freezer's exit resumes any file
/// system still held).
pub const VSS_EXIT_LIMIT: Duration = Duration::from_secs(30);
/// The longest `thaw_hook_timeout` allowed: one thaw hook still fits in
/// [`VSS_EXIT_LIMIT`] after the resume and a kill of the freezer.
pub const VSS_MAX_THAW_HOOK: Duration = Duration::from_secs(25);
/// The longest `app_auto_thaw` allowed: applications stay quiesced at most this long
/// when no THAW comes.
pub const VSS_MAX_APP_AUTO_THAW: Duration = Duration::from_secs(120);

// The defaults keep the rules `vss::rules::check` enforces on any configuration.
const _: () = assert!(
    VSS_HOOKS_TOTAL.as_nanos()
        + VSS_SYNC.as_nanos()
        + VSS_SNAPSHOT.as_nanos()
        + VSS_SUSPEND.as_nanos()
        + VSS_ANSWER_MARGIN.as_nanos()
        + VSS_ROLLBACK.as_nanos()
        < VSS_KERNEL_DEADLINE.as_nanos()
);
const _: () = assert!(VSS_HOOK.as_nanos() <= VSS_HOOKS_TOTAL.as_nanos());
const _: () = assert!(VSS_KERNEL_DEADLINE.as_nanos() < LINUX_VSS_DEADLINE.as_nanos());
const _: () = assert!(LINUX_VSS_DEADLINE.as_nanos() < LINUX_VSS_FREEZE_DEADLINE.as_nanos());
const _: () = assert!(VSS_WATCHDOG.as_nanos() > VSS_KERNEL_DEADLINE.as_nanos());
const _: () = assert!(
    VSS_APP_AUTO_THAW.as_nanos() > VSS_WATCHDOG.as_nanos() + VSS_FREEZER_BACKSTOP.as_nanos()
);
const _: () = assert!(VSS_APP_FREEZE_BUDGET.as_nanos() < VSS_KERNEL_DEADLINE.as_nanos());
const _: () = assert!(VSS_APP_DAEMON_RESERVE.as_nanos() < VSS_KERNEL_DEADLINE.as_nanos());
const _: () = assert!(VSS_MIN_STEP.as_nanos() < VSS_SUSPEND.as_nanos());
const _: () = assert!(PROGRAM_OUTPUT_GRACE.as_nanos() < VSS_GRACE.as_nanos());
const _: () = assert!(
    VSS_LISTING.as_nanos() + VSS_ROLLBACK.as_nanos() + VSS_ANSWER_MARGIN.as_nanos()
        < VSS_KERNEL_DEADLINE.as_nanos()
);
// The cap on the time frozen leaves room for the default watchdog and its backstop, and
// for the shortest watchdog allowed (just over the kernel's deadline).
const _: () =
    assert!(VSS_WATCHDOG.as_nanos() + VSS_FREEZER_BACKSTOP.as_nanos() <= VSS_MAX_FROZEN.as_nanos());
const _: () = assert!(
    VSS_KERNEL_DEADLINE.as_nanos() + VSS_FREEZER_BACKSTOP.as_nanos() < VSS_MAX_FROZEN.as_nanos()
);
// A request that arrives while a prune program still runs in the driver waits at most
// one prune step (the listing is no longer than a destroy) and its output grace: with
// the default FREEZE budgets that still fits in the kernel's 15 s.
const _: () = assert!(
    VSS_HOOKS_TOTAL.as_nanos()
        + VSS_SYNC.as_nanos()
        + VSS_SNAPSHOT.as_nanos()
        + VSS_SUSPEND.as_nanos()
        + VSS_ANSWER_MARGIN.as_nanos()
        + VSS_ROLLBACK.as_nanos()
        + VSS_SNAPSHOT_DESTROY.as_nanos()
        + PROGRAM_OUTPUT_GRACE.as_nanos()
        <= VSS_KERNEL_DEADLINE.as_nanos()
);
const _: () = assert!(VSS_SNAPSHOT_LIST.as_nanos() <= VSS_SNAPSHOT_DESTROY.as_nanos());
const _: () = assert!(0 < VSS_SNAPSHOT_KEEP && VSS_SNAPSHOT_KEEP <= VSS_MAX_SNAPSHOT_KEEP);
const _: () = assert!(VSS_MAX_SNAPSHOT_KEEP as usize <= VSS_MAX_LISTED_SNAPSHOTS);
// Applications are thawed after the file systems whatever watchdog is configured.
const _: () = assert!(VSS_MAX_APP_AUTO_THAW.as_nanos() > VSS_MAX_FROZEN.as_nanos());
const _: () = assert!(VSS_APP_AUTO_THAW.as_nanos() <= VSS_MAX_APP_AUTO_THAW.as_nanos());
// After a shutdown: the resume, a kill of the freezer, and one thaw hook of the longest
// allowed fit in the exit limit.
const _: () = assert!(VSS_THAW_HOOK.as_nanos() <= VSS_MAX_THAW_HOOK.as_nanos());
const _: () = assert!(
    2 * VSS_ROLLBACK.as_nanos() + VSS_MAX_THAW_HOOK.as_nanos() + VSS_GRACE.as_nanos()
        <= VSS_EXIT_LIMIT.as_nanos()
);
