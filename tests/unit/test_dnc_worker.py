"""The import's worker writes what the rest of the code reads: Keys.number_tag's
hash, fingerprint()'s bucket and record, sealed numbers the data key opens (rows
of COPY's binary format, read back here by the format's own rules), and rejects
with line, value and reason."""

from __future__ import annotations

import os
import struct

from dialguard.crypto import Sealer
from dialguard.dnc import (PGCOPY_HEADER, PGCOPY_TRAILER, _groups, _groups_raw, _normalize_chunk,
                           copy_rows_frame)
from dialguard.decision.keys import Keys


def parse_binary_copy(data: bytes) -> list[tuple[bytes, ...]]:
    """Rows of a COPY binary stream (PostgreSQL docs, "Binary Format")."""
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00"
    flags, ext = struct.unpack(">ii", data[11:19])
    assert flags == 0 and ext == 0
    pos, rows = 19, []
    while True:
        (n,) = struct.unpack(">h", data[pos:pos + 2])
        pos += 2
        if n == -1:
            assert pos == len(data)
            return rows
        row = []
        for _ in range(n):
            (size,) = struct.unpack(">i", data[pos:pos + 4])
            pos += 4
            row.append(data[pos:pos + size])
            pos += size
        rows.append(tuple(row))


def test_worker_output_matches_keys_and_fingerprints():
    secret, key = os.urandom(32), os.urandom(32)
    raws = ["+8613800138000", "13800138001", "  +86 138 0013 8002 ", "junk", "110", "+8613800138000"]
    pre, post = copy_rows_frame("l\\\tx", "src\n\u00e9")  # COPY's text-format specials, non-ASCII
    groups, valid, bad, block = _normalize_chunk((list(range(2, 8)), raws, "CN", secret, key, pre, post))
    keys = Keys("x", secret)
    e164 = ["+8613800138000", "+8613800138001", "+8613800138002", "+8613800138000"]
    assert valid == 4
    assert groups == _groups(keys.number_tag(n) for n in e164)
    assert [(ln, why) for ln, _, why in bad] == [(5, bad[0][2]), (6, "emergency number")]
    assert bad[0][1] == "junk" and bad[0][2].startswith("unparseable")
    rows = parse_binary_copy(PGCOPY_HEADER + block + PGCOPY_TRAILER)
    assert len(rows) == 4 and [r[1] for r in rows] == sorted(r[1] for r in rows)  # in hash order
    assert sorted(r[1].hex() for r in rows) == sorted(keys.number_tag(n) for n in e164)
    opener = Sealer(key)
    by_tag = {keys.number_tag(n): n for n in e164}
    for lst, tag, sealed, src in rows:
        n = by_tag[tag.hex()]
        assert (lst.decode(), src.decode()) == ("l\\\tx", "src\n\u00e9") and len(tag) == 16
        assert opener.open(sealed) == n
    for n in e164:  # no plaintext in the COPY block, in any of the forms written
        assert n.encode() not in block and n[3:].encode() not in block
    # Redis only: no block, the same fingerprints
    g2, v2, _, b2 = _normalize_chunk((list(range(2, 8)), raws, "CN", secret, None, b"", b""))
    assert (g2, v2, b2) == (groups, 4, b"")


def test_groups_of_hex_tags_and_of_bytea_hashes_agree():
    secret = os.urandom(32)
    tags = [Keys("x", secret).number_tag(f"+86138{i:08d}") for i in range(2000)]
    assert _groups_raw(bytes.fromhex(t) for t in tags) == _groups(tags)


def _via_source(path, skip=0, size=3, workers=2):
    from dialguard.dnc import _Source, _split_block

    src = _Source(path)
    try:
        skipped = src.skip(skip)
        out = []
        for n, parts in src.chunks(size, workers):
            got = []
            for part in parts:
                if part[0] == "block":
                    lines, raws = _split_block(*part[1:])
                else:
                    lines, raws = part[1], part[2]
                got += list(zip(lines, raws))
            assert len(got) == n
            out += got
        return src.f is not None, skipped, out
    finally:
        src.close()


def test_plain_files_are_read_exactly_as_the_csv_reader_reads_them(tmp_path):
    """The quick reader (whole lines as bytes, split in the workers) gives the same
    (line, value) rows as read_numbers' csv.reader, header and column choice,
    empty lines, undecodable bytes, a missing last newline and resumed runs
    included; a file with quotes or carriage returns goes through csv.reader."""
    from dialguard.dnc import read_numbers

    cases = {
        "plain": b"+8613800138000\n13800138001\n\n  138 0013 8002 \ngarbage\n",
        "header": b"number\n+8613800138000\n13800138001\n",
        "named column": b"name,Phone,x\na,13800138000,z\nb,13800138001\nc\n,\n\nd,+86 138,y,w\n",
        "first column of several": b"13800138000,alice\n13800138001,bob,\n,\n",
        "no digit header": b"numbers here\n13800138000\n",
        "no last newline": b"13800138000\n13800138001",
        "undecodable": b"1380013\xff8000\n\xe4\xb8\xad\xe6\n13800138001\n",
        "bom": b"\xef\xbb\xbf13800138000\n13800138001\n",
        "one line": b"13800138000",
        "empty": b"",
        "only newlines": b"\n\n\n",
        "quoted": b'number\n"13800138000"\n"138,0013,8001"\n',
        "crlf": b"number\r\n13800138000\r\n13800138001\r\n",
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.csv"
        path.write_bytes(data)
        want = list(read_numbers(path))
        plain, _, got = _via_source(path)
        assert got == want, name
        assert plain == (name not in ("quoted", "crlf")), name
        for skip in (1, 2, 50):
            _, skipped, rest = _via_source(path, skip=skip, size=2, workers=3)
            assert (skipped, rest) == (min(skip, len(want)), want[skip:]), (name, skip)
