"""The import's worker writes what the rest of the code reads: Keys.number_tag's
hash, fingerprint()'s bucket and record, blocks of hashes and sealed numbers
the data key opens (dnc_blocks), and rejects with line, value and reason."""

from __future__ import annotations

import os

from dialguard.crypto import Sealer
import pytest

from dialguard.dnc import (_groups, _groups_raw, _normalize_chunk, _without, block_numbers, find16, hash_range,
                           list_lock_id, split16)
from dialguard.decision.keys import Keys


def test_worker_output_matches_keys_and_fingerprints():
    secret, key = os.urandom(32), os.urandom(32)
    raws = ["+8613800138000", "13800138001", "  +86 138 0013 8002 ", "junk", "110", "+8613800138000"]
    groups, valid, bad, blocks = _normalize_chunk((list(range(2, 8)), raws, "CN", secret, key))
    keys = Keys("x", secret)
    e164 = ["+8613800138000", "+8613800138001", "+8613800138002", "+8613800138000"]
    assert valid == 4
    assert groups == _groups(keys.number_tag(n) for n in e164)
    assert [(ln, why) for ln, _, why in bad] == [(5, bad[0][2]), (6, "emergency number")]
    assert bad[0][1] == "junk" and bad[0][2].startswith("unparseable")
    # blocks: each number once (the repeat dropped), its range, hashes sorted, numbers sealed as one
    opener = Sealer(key)
    got = {}
    for r, n, hashes, sealed in blocks:
        hs = split16(hashes)
        assert n == len(hs) and hs == sorted(hs) and all(hash_range(h) == r for h in hs)
        nums = block_numbers(opener.open_block(sealed, hashes))
        got.update((h.hex(), x.decode()) for h, x in zip(hs, nums))
        for x in e164:  # no plaintext in what goes to PostgreSQL, in any of the forms written
            assert x.encode() not in hashes + sealed and x[3:].encode() not in hashes + sealed
    assert got == {keys.number_tag(x): x for x in e164}
    assert [b[0] for b in blocks] == sorted({b[0] for b in blocks})  # one block per range, in order
    # Redis only: no blocks, the same fingerprints
    g2, v2, _, b2 = _normalize_chunk((list(range(2, 8)), raws, "CN", secret, None))
    assert (g2, v2, b2) == (groups, 4, [])


def test_blocks_are_bound_to_their_hashes_and_a_number_can_be_cut_out():
    """A block's sealed numbers open only with its own hashes (AES-GCM associated data)
    and the data key (or an old one); cutting a number out re-seals the rest."""
    from cryptography.exceptions import InvalidTag

    key, secret = os.urandom(32), os.urandom(32)
    raws = [f"+86138{i:08d}" for i in range(20_000)]
    _, _, _, blocks = _normalize_chunk((list(range(len(raws))), raws, "CN", secret, key))
    assert len(blocks) == 1024 and sum(b[1] for b in blocks) == 20_000  # every range of 10 bits
    s = Sealer(key)
    a, b = blocks[0], blocks[1]
    with pytest.raises(InvalidTag):
        s.open_block(a[3], b[2])  # a's numbers with b's hashes
    with pytest.raises(InvalidTag):
        Sealer(os.urandom(32)).open_block(a[3], a[2])
    assert Sealer(os.urandom(32), old_keys=[key]).open_block(a[3], a[2]) == s.open_block(a[3], a[2])
    hs = split16(a[2])
    nums = block_numbers(s.open_block(a[3], a[2]))
    cut = _without(a, {hs[1], hs[-1]}, s)
    assert cut[0] == a[0] and cut[1] == a[1] - 2 and split16(cut[2]) == hs[:1] + hs[2:-1]
    assert block_numbers(s.open_block(cut[3], cut[2])) == nums[:1] + nums[2:-1]
    assert cut[3][:12] != a[3][:12]  # a fresh nonce
    assert _without(a, set(), s) is a and _without(a, set(hs), s) is None
    assert find16(a[2], hs[2]) == 2 and find16(a[2], hs[2][1:] + b"\0") == -1
    # a match that straddles two hashes is not a hit
    assert find16(hs[0][8:] + hs[1][:8] + hs[0] + hs[1], hs[1]) == 2
    assert list_lock_id("global") != list_lock_id("global ") and -2**63 <= list_lock_id("x") < 2**63


def test_groups_of_hex_tags_and_of_bytea_hashes_agree():
    secret = os.urandom(32)
    tags = [Keys("x", secret).number_tag(f"+86138{i:08d}") for i in range(2000)]
    assert _groups_raw(bytes.fromhex(t) for t in tags) == _groups(tags)


def _via_source(path, skip=0, size=3, workers=2):
    from dialguard.dnc import _Source, _split_block

    src = _Source(path, "CN")
    try:
        skipped = src.skip(skip)
        out = []
        for n, parts in src.chunks(size, workers):
            got = []
            for part in parts:
                if part[0] == "block":
                    lines, raws = _split_block(*part[1:])
                elif part[0] == "rejected":  # rows read_numbers rejected as read (none in these files)
                    lines, raws = [ln for ln, _, _ in part[1]], [v for _, v, _ in part[1]]
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
    included; a file with quotes or carriage returns goes through csv.reader.
    Both refuse a file whose first row is neither a header nor a number."""
    from dialguard.dnc import DncFileError, read_numbers

    cases = {
        "plain": b"+8613800138000\n13800138001\n\n  138 0013 8002 \ngarbage\n",
        "header": b"number\n+8613800138000\n13800138001\n",
        "named column": b"name,Phone,x\na,13800138000,z\nb,13800138001\nc\n,\n\nd,+86 138,y,w\n",
        "first column of several": b"13800138000,alice\n13800138001,bob,\n,\n",
        "tel header": b"Tel\n13800138000\n",
        "no last newline": b"13800138000\n13800138001",
        "undecodable": b"number\n1380013\xff8000\n\xe4\xb8\xad\xe6\n13800138001\n",
        "bom": b"\xef\xbb\xbf13800138000\n13800138001\n",
        "one line": b"13800138000",
        "empty": b"",
        "quoted": b'number\n"13800138000"\n"138,0013,8001"\n',
        "crlf": b"number\r\n13800138000\r\n13800138001\r\n",
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.csv"
        path.write_bytes(data)
        want = list(read_numbers(path, "CN"))
        plain, _, got = _via_source(path)
        assert got == want, name
        assert plain == (name not in ("quoted", "crlf")), name
        for skip in (1, 2, 50):
            _, skipped, rest = _via_source(path, skip=skip, size=2, workers=3)
            assert (skipped, rest) == (min(skip, len(want)), want[skip:]), (name, skip)
    for name, data in {"no digit header": b"numbers here\n13800138000\n", "only newlines": b"\n\n\n",
                       "name first": b"Alice,13800138000\nBob,13800138001\n"}.items():
        path = tmp_path / f"{name}.csv"
        for body in (data, data + b'"x"\n'):  # the quick reader, and csv.reader
            path.write_bytes(body)
            with pytest.raises(DncFileError):
                list(read_numbers(path, "CN"))
            with pytest.raises(DncFileError):
                _via_source(path)
