"""_ListIndex, the import's per-range index of a list's block hashes: what it says
is held is exactly what was added (full 16 bytes compared, hashes sharing their
first 8 bytes told apart), whether a batch is looked up by bisection (a batch
small against the list) or by a pass (a batch large against it), and the sorted
ranges stay sorted as batches are merged in."""

from __future__ import annotations

import os
import random

import pytest

from dialguard.dnc import RANGE_BITS, _ListIndex, _native, hash_range, split16


def _by_range(hashes):
    out: dict[int, list[bytes]] = {}
    for h in hashes:
        out.setdefault(hash_range(h), []).append(h)
    return out


@pytest.mark.parametrize("sizes", [[4000] * 6, [20000, 300, 50, 2000, 10, 300]])
def test_held_and_add_match_a_set_over_batches(sizes, monkeypatch):
    """Equal batches (a pass over the range while it is small against them, bisection
    after), then small batches into a large list (bisection, after a merge of what
    the batches before added). SCAN at 2 instead of 32: both ways with few hashes."""
    monkeypatch.setattr(_ListIndex, "SCAN", 2)
    calls = {"scan": 0, "bisect": 0}
    for name in calls:
        real = getattr(_ListIndex, f"_{name}")
        monkeypatch.setattr(_ListIndex, f"_{name}",
                            lambda self, *a, _n=name, _f=real: calls.__setitem__(_n, calls[_n] + 1) or _f(self, *a))
    rnd = random.Random(7)
    ix, stored = _ListIndex(), set()
    for size in sizes:
        old = rnd.sample(sorted(stored), min(size // 10, len(stored)))
        batch = [rnd.randbytes(16) for _ in range(size)] + old
        for r, hs in _by_range(batch).items():
            hs.sort()
            nat = _native(b"".join(hs))
            held = ix.held(r, nat)
            assert held == [i for i, h in enumerate(hs) if h in stored]
            ix.add(r, nat, set(held))
        stored.update(batch)
    assert calls["scan"] and calls["bisect"]
    want = _by_range(stored)
    for r in range(1 << RANGE_BITS):
        assert ix.hashes(r) == sorted(want.get(r, []))


def test_a_shared_prefix_is_confirmed_on_the_full_hash(monkeypatch):
    """Hashes equal in their first 8 bytes (the bisection's key) are told apart by
    the other 8: held only if the very hash was added, wherever it sits among them."""
    monkeypatch.setattr(_ListIndex, "SCAN", 2)
    p = bytes([0x12, 0x34]) + os.urandom(6)
    a, b, c, d = (p + bytes([x]) * 8 for x in (1, 5, 9, 7))
    r = hash_range(p)
    ix = _ListIndex()
    filler = sorted(p[:2] + os.urandom(14) for _ in range(100))  # the range large against the probes: bisection
    ix.load(r, [b"".join(sorted(filler + [a, c]))])
    for probe in ([a, b, c, d], [d, c, b, a]):
        nat = _native(b"".join(probe))
        assert sorted(probe[i] for i in ix.held(r, nat)) == sorted([a, c])
    nat = _native(b"".join([b, d]))
    ix.add(r, nat)
    ix._settle(r)
    probe = [d, c, b, a, p + b"\x08" * 8]  # unsorted, one not there
    assert ix.held(r, _native(b"".join(probe))) == [0, 1, 2, 3]
    assert sorted(ix.hashes(r)) == sorted(filler + [a, b, c, d])
    small = _ListIndex()  # the same by a pass
    small.add(r, _native(b"".join([a, c])))
    assert small.held(r, _native(b"".join(probe))) == [1, 3]


def test_add_leaves_out_what_the_batch_left_out():
    ix = _ListIndex()
    hs = sorted(bytes([3, 0]) + os.urandom(14) for _ in range(50))
    r = hash_range(hs[0])
    nat = _native(b"".join(hs))
    ix.add(r, nat, {0, 7, 49})
    kept = [h for i, h in enumerate(hs) if i not in {0, 7, 49}]
    assert ix.hashes(r) == kept
    assert ix.held(r, nat) == [i for i in range(50) if i not in {0, 7, 49}]
