#!/usr/bin/env python3
"""Writes the committed seed corpus under fuzz/corpus/<target>/.

Run once from anywhere (`python3 fuzz/gen_corpus.py`); it overwrites the files it
names and leaves any others alone. Output is deterministic. Byte layouts follow
docs/protocol/kvp.md: section 1.3 (the 7430-byte device message), 3.2 (pool records of
512 + 2048 bytes) and 8 (test vectors). Integers are little-endian.

Text formats are seeded from the repository's real files (scenarios, recordings,
packaging/vss.conf.sample) plus hand-written examples and their edge cases; byte
formats are built the way the code writes them (the journal as core/src/kvp/journal.rs
encodes it, the route dump as FreeBSD amd64 lays it out); the machine targets, whose
input is a choice sequence for `arbitrary`, get seeded random bytes.
"""

import random
import struct
from pathlib import Path

MSG = 7430  # sizeof(struct hv_kvp_msg)
KEY, VALUE = 512, 2048  # field sizes, in messages and pool records
CORPUS = Path(__file__).resolve().parent / "corpus"


def msg(op, pool=0, fields=()):
    """A zeroed device message with op at @0, pool at @1, and (offset, bytes) fields."""
    buf = bytearray(MSG)
    buf[0], buf[1] = op, pool
    for off, data in fields:
        buf[off : off + len(data)] = data
    return bytes(buf)


def u32(n):
    return struct.pack("<I", n)


def record(key, value):
    """One zero-padded pool record."""
    return key.ljust(KEY, b"\0") + value.ljust(VALUE, b"\0")


kvp_message = {
    # Vector 2: GET pool 0 "foo", key_size 4 (UTF-8 bytes with the NUL).
    "get_pool0_foo": msg(0, 0, [(8, u32(4)), (16, b"foo\0")]),
    # Vector 3: SET pool 0 "foo" = "bar".
    "set_pool0_foo_bar": msg(1, 0, [(8, u32(4)), (12, u32(4)), (16, b"foo\0"), (528, b"bar\0")]),
    # Vector 5: DELETE pool 0 "foo"; the key sits at @8 in this variant.
    "delete_pool0_foo": msg(2, 0, [(4, u32(4)), (8, b"foo\0")]),
    # Vector 6: ENUMERATE pool 2 (auto) index 0.
    "enumerate_pool2_index0": msg(3, 2, [(4, u32(0))]),
    # Vector 8: GET_IP_INFO for a MAC, host family IPv4 at @260.
    "get_ip_info_mac": msg(4, 0, [(4, b"00:15:5D:01:02:03\0"), (260, b"\x01")]),
    # Vector 9: an op code past HV_KVP_OP_COUNT.
    "unknown_op7": msg(7, 0),
    # Far shorter than a device message: the start of a GET header.
    "short_10_bytes": bytes([0, 0, 0, 0, 0, 0, 0, 0, 4, 0]),
    # GET whose 512-byte key has no NUL terminator (key_size says 512).
    "get_unterminated_key": msg(0, 0, [(8, u32(KEY)), (16, b"k" * KEY)]),
}

pool_file = {
    "empty": b"",
    # Vector 3's pool file: one zero-padded record foo/bar.
    "one_record_foo_bar": record(b"foo", b"bar"),
    # Two whole records and a 100-byte partial third (the C daemon ignores the tail).
    "two_records_partial_tail": record(b"k1", b"v1")
    + record(b"k2", b"v2")
    + b"k3".ljust(100, b"\0"),
    # Stale bytes after the terminators, as the C daemon leaves them (problem K6).
    "garbage_after_terminator": (b"foo\0oldlongerkey".ljust(KEY, b"\0") + b"bar\0stale-value-bytes".ljust(VALUE, b"\xaa")),
    # Three records, the second repeating the first one's key.
    "duplicate_key": record(b"foo", b"1") + record(b"foo", b"2") + record(b"baz", b"3"),
}

rng = random.Random(0x4B5650)  # fixed seed: the corpus must not change between runs
kvp_machine = {
    "counting_64": bytes(range(64)),
    "random_256": rng.randbytes(256),
    "random_1024": rng.randbytes(1024),
    # Mostly small numbers (cheap enum choices for `arbitrary`) with some 0xff runs.
    "small_bytes_1024": bytes(rng.choice([0, 1, 2, 3, 4, 5, 0xFF]) for _ in range(1024)),
}

def seeded_random(seed, sizes):
    """Random inputs for a machine target; each seed its own generator, so adding a
    target never changes another's files."""
    r = random.Random(seed)
    out = {}
    for i, n in enumerate(sizes):
        out[f"random_{i:02}_{n}"] = r.randbytes(n)
        # The same length of small numbers: cheap enum choices for `arbitrary`.
        out[f"small_{i:02}_{n}"] = bytes(r.choice([0, 1, 2, 3, 4, 5, 7, 0xFF]) for _ in range(n))
    return out


MACHINE_SIZES = [32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
kvp_machine.update(seeded_random(0x4B56504D, MACHINE_SIZES[:6]))


def variant(i, n):
    """The 4 bytes `arbitrary` reads to pick variant i of an n-variant enum: it takes
    a little-endian u32 x and picks (x * n) >> 32."""
    return struct.pack("<I", -(-i * 2**32 // n))


# hvguest_sim::fuzz::kvp_machine: two `Option` bytes for the starting files (0 = none),
# then `Step`s. Variants in declaration order; PoolId: External, Guest, Auto,
# AutoExternal, AutoInternal.
STEPS = 9
TYPICAL, ADVANCE, FREEZE, THAW, CRASH = 0, 3, 5, 6, 8


def typical(op, pool, key, value):
    return variant(TYPICAL, STEPS) + bytes([op]) + variant(pool, 5) + bytes([key]) + struct.pack("<H", value)


def kvp_session(seed, steps):
    """Requests as a host sends them, with some time passing, suspensions and crashes."""
    r = random.Random(seed)
    out = bytearray(b"\0\0")
    for _ in range(steps):
        roll = r.random()
        if roll < 0.80:
            out += typical(r.choice([0, 1, 1, 2, 3]), r.choice([0, 0, 1, 3, 4]), r.randrange(16), r.randrange(1000))
        elif roll < 0.88:
            out += variant(ADVANCE, STEPS) + struct.pack("<H", r.randrange(20000))
        elif roll < 0.92:
            out += variant(FREEZE, STEPS) + typical(0, 0, 1, 0) + variant(THAW, STEPS)
        else:
            out += variant(CRASH, STEPS) + bytes([r.randrange(2)]) + r.randbytes(8)
    return bytes(out)


kvp_machine.update({f"session_{i:02}": kvp_session(0x4B565300 + i, 8 + 6 * i) for i in range(16)})
vss_machine = seeded_random(0x5653534D, MACHINE_SIZES)
vss_app = seeded_random(0x56535341, MACHINE_SIZES)
vss_hooks = seeded_random(0x5653484B, MACHINE_SIZES[:8])

# --- VSS device messages: struct hv_vss_opt_msg, 64 bytes (opt u32, status u32,
# msgid u64, reserved). Ops: 0 CREATE (unused), 1 CHECK, 2 FREEZE, 3 THAW.
def vss(opt, status=0, msgid=0x1234_5678_9ABC, size=64):
    b = bytearray(size)
    b[0:16][:] = b""
    head = struct.pack("<IIQ", opt, status, msgid)
    b[: min(16, size)] = head[: min(16, size)]
    return bytes(b)


vss_message = {
    "check": vss(1),
    "freeze": vss(2),
    "thaw": vss(3),
    "create_unused_op": vss(0),
    "unknown_op_9": vss(9),
    "msgid_zero": vss(2, msgid=0),
    "status_nonzero_timed_out": vss(2, status=1),
    "max_msgid": vss(3, msgid=2**64 - 1),
    "reserved_bytes_set": vss(1)[:16] + b"\xff" * 48,
    "short_16": vss(1, size=16),
    "long_65": vss(1, size=65),
    "empty": b"",
}

# --- The redo journal (core/src/kvp/journal.rs): MAGIC, len u32, pool u8, nwrites u8,
# has_dropped u8, 0, old_len u64, new_len u64, dropped slot u32; per write slot u32,
# pre record, post record; the dropped record; crc32c of everything before it.
def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


REC = KEY + VALUE


def entry(pool, old_len, new_len, writes, dropped=None):
    length = 36 + len(writes) * (4 + 2 * REC) + (REC if dropped else 0) + 4
    body = b"HVKVPJ1\0" + struct.pack("<IBBBB", length, pool, len(writes), int(dropped is not None), 0)
    body += struct.pack("<QQI", old_len, new_len, dropped[0] if dropped else 0)
    for slot, pre, post in writes:
        body += struct.pack("<I", slot) + pre + post
    if dropped:
        body += dropped[1]
    return body + struct.pack("<I", crc32c(body))


EMPTY = bytes(REC)
append_foo = entry(0, 0, REC, [(0, EMPTY, record(b"foo", b"bar"))])
update_foo = entry(0, REC, REC, [(0, record(b"foo", b"bar"), record(b"foo", b"baz"))])
delete_last = entry(1, 2 * REC, REC, [], (1, record(b"k2", b"v2")))
delete_middle = entry(
    3, 3 * REC, 2 * REC, [(1, record(b"k2", b"v2"), record(b"k3", b"v3"))], (2, record(b"k3", b"v3"))
)
journal = {
    "empty": b"",
    "append_foo": append_foo,
    "update_foo": update_foo,
    "delete_last_slot": delete_last,
    "delete_moves_last_into_hole": delete_middle,
    "two_entries": append_foo + update_foo,
    "torn_second_entry": append_foo + update_foo[:3000],
    "bad_crc": update_foo[:-1] + bytes([update_foo[-1] ^ 1]),
    "foreign_tail": append_foo + b"not a journal entry",
    "magic_only": b"HVKVPJ1\0",
    "bad_pool_9": entry(9, 0, REC, [(0, EMPTY, record(b"a", b"b"))]),
    "four_writes": entry(4, 4 * REC, 4 * REC, [(i, record(b"k", b"old"), record(b"k", b"new")) for i in range(4)]),
}

# --- Text formats from the repository's own files.
REPO = CORPUS.parent.parent


def files_under(pattern, every=1):
    return {p.stem: p.read_bytes() for p in sorted(REPO.glob(pattern))[::every]}


# Every other scenario keeps the corpus to a few dozen files; the rest add little.
scenario = files_under("scenarios/kvp/*.scn", every=2)
scenario.update({f"vss_{k}": v for k, v in files_under("scenarios/vss/*.scn", every=2).items()})
scenario.update({
    "empty": b"",
    "unknown_line": b"frobnicate 1\n",
    "steps_out_of_order": b"at 2s get 0 a\nat 1s get 0 b\n",
})

recording = files_under("scenarios/recorded/*.kvprec")
# The 84 KB enumeration trace slows every execution a hundredfold; its first 40 lines
# have the same kinds of lines.
recording["enumerate_200_first_40_lines"] = b"\n".join(recording.pop("enumerate_200").split(b"\n")[:40]) + b"\n"
first_lines = recording["basic_ops"].split(b"\n")
recording.update({
    "empty": b"",
    "header_only": first_lines[0] + b"\n",
    "first_20_lines": b"\n".join(first_lines[:20]) + b"\n",
    "not_utf8_line_3": b"\n".join(first_lines[:2]) + b"\n\xff\xfe\n",
    "time_goes_back": first_lines[0] + b"\n2000 in 00~7429\n1000 in 00~7429\n",
})

sample = (REPO / "packaging/vss.conf.sample").read_bytes()
vss_config = {
    "sample": sample,
    "empty": b"",
    "comments_only": b"# nothing\n\n   # still nothing\n",
    "hook_dir_none": b"hook_dir = none\n",
    "durations": b"hook_timeout = 500ms\nhooks_total = 1s\nwatchdog = 2m\n",
    "budget_too_long": b"hooks_total = 10s\nzpool_sync_timeout = 5s\n",
    "auto_thaw_too_early": b"watchdog = 40s\napp_auto_thaw = 30s\n",
    "duplicate_key": b"watchdog = 30s\nwatchdog = 31s\n",
    "unknown_key": b"frobnicate = yes\n",
    "no_equals": b"hook_dir /x\n",
    "empty_value": b"zfs =\n",
    "hash_in_value": b"zfs = /sbin/zfs # comment\n",
    "crlf": b"policy.nfs = ignore\r\npolicy.default = veto\r\n",
    "not_utf8": b"snapshot_prefix = \xff\n",
    "relative_path": b"zpool = sbin/zpool\n",
    "bad_policy": b"policy.ufs = freeze\n",
    "bad_snapshot_prefix": b"snapshot_prefix = a b@c\n",
}

mounts = {
    "proc_self_mounts": b"""sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
/dev/sda1 / ext4 rw,relatime,errors=remount-ro 0 0
tmpfs /run tmpfs rw,nosuid,nodev,size=815552k,mode=755 0 0
server:/export /mnt/nfs nfs4 ro,relatime,vers=4.2 0 0
/dev/sdb1 /mnt/with\\040space ext4 rw 0 0
""",
    "emulated": b"""# fstype mountpoint rw|ro [source]
ufs / rw /dev/gpt/rootfs
zfs /zroot rw zroot
devfs /dev rw
nfs /mnt/nfs ro server:/export
nullfs /jail/usr rw /usr
""",
    "emulated_escaped": b"ufs /mnt/Backup\\040Disk rw /dev/ada1p1\nufs /mnt/a\\012b\\134c rw\nufs /bad\\09 rw\n",
    "emulated_bad_mode": b"ufs / rx\n",
    "emulated_five_fields": b"ufs / rw /dev/ada0p2 extra\n",
    "short_lines": b"a b\nc\n\n",
    "empty": b"",
    "comment_after_fields": b"ufs /var rw # the var partition\n",
}

resolv_conf = {
    "typical": b"# Generated by resolvconf\nsearch example.net\nnameserver 10.0.0.2\nnameserver 2001:db8::53\noptions edns0\n",
    "scoped_v6": b"nameserver fe80::1%hn0\nnameserver fe80::1%hn1\n",
    "duplicates": b"nameserver 1.1.1.1\nnameserver 1.1.1.1\n",
    "junk": b"nameserver\nnameserver not-an-address\nnameserverx 1.2.3.4\n  nameserver 9.9.9.9 extra\n",
    "empty": b"",
}

proc_route = {
    "ipv4": b"""Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
eth1\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0
""",
    "ipv6": b"""00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
""",
    "no_gateway_flag": b"Iface Destination Gateway Flags RefCnt Use Metric Mask\neth0 00000000 0100000A 0001 0 0 0 00000000\n",
    "bad_hex": b"Iface Destination Gateway Flags RefCnt Use Metric Mask\neth0 0000000G 0100000A 0003 0 0 0 00000000\n",
    "empty": b"",
}

# --- FreeBSD NET_RT_DUMP records, amd64: rt_msghdr is 152 bytes (msglen u16,
# version u8 = 5, type u8 = RTM_GET 4, index u16, flags i32 at 8, addrs i32 at 12),
# then one sockaddr per bit of addrs, each padded to 8 bytes. AF_INET 2, AF_INET6 28.
RTF_UG = 0x3


def route_record(index, flags, sockaddrs, version=5):
    addrs, body = 0, b""
    for bit, sa in enumerate(sockaddrs):
        if sa is None:
            continue
        addrs |= 1 << bit
        body += sa + bytes(-len(sa) % 8)
    head = struct.pack("<HBBHHii", 152 + len(body), version, 4, index, 0, flags, addrs)
    return head + bytes(152 - len(head)) + body


def sin(a, b, c, d):
    return bytes([16, 2, 0, 0, a, b, c, d]) + bytes(8)


def sin6(addr16):
    return bytes([28, 28]) + bytes(6) + addr16 + bytes(4)


ZERO4, ZERO6 = sin(0, 0, 0, 0), sin6(bytes(16))
LINK_LOCAL_EMBEDDED = bytes([0xFE, 0x80, 0, 2]) + bytes(11) + b"\x01"
route_dump = {
    "default_v4": route_record(2, RTF_UG, [ZERO4, sin(10, 0, 0, 1), ZERO4]),
    "default_v6_embedded_scope": route_record(2, RTF_UG, [ZERO6, sin6(LINK_LOCAL_EMBEDDED), ZERO6]),
    "mixed_table": route_record(2, RTF_UG, [ZERO4, sin(10, 0, 0, 1)])
    + route_record(2, RTF_UG, [ZERO4, sin(10, 0, 0, 1)])
    + route_record(3, RTF_UG, [ZERO4, sin(10, 9, 0, 1)])
    + route_record(2, 0x1, [ZERO4, sin(10, 0, 0, 7)])
    + route_record(2, RTF_UG, [ZERO4, bytes([11, 18, 2, 0, 6, 3, 0, 0]) + b"hn0"])
    + route_record(2, RTF_UG, [ZERO4, sin(10, 0, 0, 8)], version=4),
    "short_netmask": route_record(2, RTF_UG | 0x800, [ZERO4, sin(10, 0, 0, 1), b"\0"]),
    "truncated": route_record(2, RTF_UG, [ZERO4, sin(10, 0, 0, 6)])[:100],
    "zero_length_record": bytes(8),
    "empty": b"",
}

# The freezer's stdin as the daemon writes it (core/src/vss/freezer.rs), with 0xff
# separating happenings: 0xfe N waits N x 100 ms, 0xfd closes stdin, 0xfc fails stdout,
# 0xfb fails the next UFSSUSPEND.
FF = b"\xff"
freezer = {
    "suspend_resume": b"suspend 31000 - /var\nsuspend 31000 - /\nresume\n",
    "suspend_ping_wait": b"suspend 31000 - /\nping 45000\n" + FF + b"\xfe\xff" + FF + b"ping\n",
    "auto_thaw": b"suspend 300 - /data\n" + FF + b"\xfe\x05",
    "eof_while_held": b"suspend 31000 - /a b\\n\n" + FF + b"\xfd",
    "stdout_fails": b"suspend 31000 - /\n" + FF + b"\xfc",
    "failed_suspend": b"\xfb" + FF + b"suspend 31000 - /\nsuspend 31000 - /\n",
    "garbage": b"\x00\x01 frobnicate\n\n\r\nsuspend x - /\nsuspend 10\nping 1 2\n" + b"y" * 5000 + b"\n",
    # A planned fsid, a bad one, and one that fails (no longer mounted).
    "fsid": b"suspend 31000 1694829551:53 /mnt/Backup Disk\nsuspend 1 1;2 /x\n" + FF + b"\xfb" + FF
    + b"suspend 31000 -7:2147483647 /var\n",
    # Pings every 25.5 s past the 60 s cap: the auto-thaw never moves beyond it.
    "cap": b"suspend 31000 - /\n" + (FF + b"\xfe\xff" + FF + b"ping 31000\n") * 3 + FF + b"\xfe\xff",
}

kvp_config = {
    "sample": (REPO / "packaging/kvp.conf.sample").read_bytes(),
    "empty": b"",
    "max_records": b"max_records = 100\n",
    "max_records_zero": b"max_records = 0\n",
    "max_records_too_many": b"max_records = 32769\n",
    "auto": b"auto.OSName = FreeBSD (web tier)\nauto.FullyQualifiedDomainName = web1.contoso.com\n",
    "auto_unknown": b"auto.OSname = x\n",
    "auto_too_long": b"auto.OSName = " + b"x" * 1023 + b"\n",
    "auto_duplicate": b"auto.OSName = a\nauto.OSName = b\n",
    "crlf": b"max_records = 5\r\nauto.OSVersion = 14\r\n",
    "not_utf8": b"auto.OSName = \xff\n",
}

TARGETS = {
    "kvp_message": kvp_message,
    "pool_file": pool_file,
    "kvp_machine": kvp_machine,
    "vss_message": vss_message,
    "freezer": freezer,
    "vss_machine": vss_machine,
    "vss_app": vss_app,
    "vss_hooks": vss_hooks,
    "journal": journal,
    "scenario": scenario,
    "recording": recording,
    "kvp_config": kvp_config,
    "vss_config": vss_config,
    "mounts": mounts,
    "resolv_conf": resolv_conf,
    "proc_route": proc_route,
    "route_dump": route_dump,
}
for target, files in TARGETS.items():
    out = CORPUS / target
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
        print(f"{out / name}: {len(data)} bytes")
