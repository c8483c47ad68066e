"""_ListIndex, the import's per-range sorted index of a list's block hashes: what
it says is held is exactly what was merged in (full 16 bytes compared, hashes
sharing their first 8 bytes told apart), and it stays sorted as batches merge."""

from __future__ import annotations

import os
import random

from dialguard.dnc import RANGE_BITS, _ListIndex, _native, hash_range, split16


def _by_range(hashes):
    out: dict[int, list[bytes]] = {}
    for h in hashes:
        out.setdefault(hash_range(h), []).append(h)
    return out


def test_held_and_merge_match_a_set_over_batches():
    rnd = random.Random(7)
    ix, stored = _ListIndex(), set()
    for _ in range(6):
        old = rnd.sample(sorted(stored), min(300, len(stored)))
        batch = [rnd.randbytes(16) for _ in range(4000)] + old
        for r, hs in _by_range(batch).items():
            hs.sort()
            nat = _native(b"".join(hs))
            pos = ix.positions(r, nat)
            held = ix.held(r, nat, pos)
            assert held == [i for i, h in enumerate(hs) if h in stored]
            ix.merge(r, nat, pos, set(held))
        stored.update(batch)
    want = _by_range(stored)
    for r in range(1 << RANGE_BITS):
        assert split16(_native(ix.ranges[r])) == sorted(want.get(r, []))


def test_a_shared_prefix_is_confirmed_on_the_full_hash():
    """Hashes equal in their first 8 bytes (the bisection's key) are told apart by
    the other 8: held only if the very hash was merged, wherever it sits among them."""
    p = bytes([0x12, 0x34]) + os.urandom(6)
    a, b, c, d = (p + bytes([x]) * 8 for x in (1, 5, 9, 7))
    r = hash_range(p)
    ix = _ListIndex()
    nat = _native(b"".join(sorted([a, c])))
    ix.merge(r, nat, ix.positions(r, nat))
    probe = sorted([a, b, c, d])
    nat = _native(b"".join(probe))
    pos = ix.positions(r, nat)
    assert [probe[i] for i in ix.held(r, nat, pos)] == [a, c]
    ix.merge(r, nat, pos, {probe.index(a), probe.index(c)})  # b and d in; a, c not twice
    assert sorted(split16(_native(ix.ranges[r]))) == sorted([a, b, c, d])  # (in any order among equal prefixes)
    nat = _native(b"".join([d, c, b, a, p + b"\x08" * 8]))  # an unsorted batch
    assert ix.held(r, nat, ix.positions(r, nat)) == [0, 1, 2, 3]


def test_merge_skips_what_the_batch_left_out():
    ix = _ListIndex()
    hs = sorted(bytes([3, 0]) + os.urandom(14) for _ in range(50))
    r = hash_range(hs[0])
    nat = _native(b"".join(hs))
    ix.merge(r, nat, ix.positions(r, nat), {0, 7, 49})
    kept = [h for i, h in enumerate(hs) if i not in {0, 7, 49}]
    assert split16(_native(ix.ranges[r])) == kept
    assert ix.held(r, nat, ix.positions(r, nat)) == [i for i in range(50) if i not in {0, 7, 49}]
