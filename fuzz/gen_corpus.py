#!/usr/bin/env python3
"""Writes the committed seed corpus under fuzz/corpus/<target>/.

Run once from anywhere (`python3 fuzz/gen_corpus.py`); it overwrites the files it
names and leaves any others alone. Output is deterministic. Byte layouts follow
docs/protocol/kvp.md: section 1.3 (the 7430-byte device message), 3.2 (pool records of
512 + 2048 bytes) and 8 (test vectors). Integers are little-endian.
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

for target, files in [("kvp_message", kvp_message), ("pool_file", pool_file), ("kvp_machine", kvp_machine)]:
    out = CORPUS / target
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
        print(f"{out / name}: {len(data)} bytes")
