"""The import's worker writes what the rest of the code reads: Keys.number_tag's
hash, fingerprint()'s bucket and record, sealed numbers the data key opens, and
rejects with line, value and reason."""

from __future__ import annotations

import os

from dialguard.crypto import Sealer
from dialguard.dnc import _groups, _normalize_chunk, copy_field
from dialguard.decision.keys import Keys


def test_worker_output_matches_keys_and_fingerprints():
    secret, key = os.urandom(32), os.urandom(32)
    raws = ["+8613800138000", "13800138001", "  +86 138 0013 8002 ", "junk", "110", "+8613800138000"]
    groups, valid, bad, block = _normalize_chunk((list(range(2, 8)), raws, "CN", secret, key, "l\\tx\t", "\tsrc\n"))
    keys = Keys("x", secret)
    e164 = ["+8613800138000", "+8613800138001", "+8613800138002", "+8613800138000"]
    assert valid == 4
    assert groups == _groups(keys.number_tag(n) for n in e164)
    assert [(ln, why) for ln, _, why in bad] == [(5, bad[0][2]), (6, "emergency number")]
    assert bad[0][1] == "junk" and bad[0][2].startswith("unparseable")
    lines = block.decode().splitlines()
    assert len(lines) == 4 and lines == sorted(lines)  # in hash order
    opener = Sealer(key)
    by_tag = {keys.number_tag(n): n for n in e164}
    assert sorted(line.split("\t")[1] for line in lines) == sorted(keys.number_tag(n) for n in e164)
    for line in lines:
        lst, tag, sealed, src = line.split("\t")
        n = by_tag[tag]
        assert (lst, src) == ("l\\tx", "src")
        assert opener.open(sealed) == n and n not in line  # no plaintext in the COPY block
    # Redis only: no block, the same fingerprints
    g2, v2, _, b2 = _normalize_chunk((list(range(2, 8)), raws, "CN", secret, None, "", "\n"))
    assert (g2, v2, b2) == (groups, 4, b"")


def test_copy_field_escapes_copy_text_format():
    assert copy_field("a\\b\tc\nd\re") == "a\\\\b\\tc\\nd\\re"
    assert copy_field("plain.csv") == "plain.csv"
