"""The DNC import's check of a batch against the list at rest, alone (no
PostgreSQL, no Redis): the pass over every stored hash that the import did
until stop 16 against _ListIndex (stop 17), side by side in one run, for lists
of the given sizes.

    .venv/bin/python bench/dnc_check.py [--sizes 1000000,10000000,100000000] [--batch 1000000] [--batches 8]

Each list is random 16-byte hashes in blocks as an import of 1,000,000-row
batches by two workers leaves them (two blocks a hash range a batch). The old
check: a set of the batch's 8-byte prefixes, then for every stored block
`set.isdisjoint` over its prefixes (C loops; what DncDb._only_new did with the
hashes it kept in memory). The new: _ListIndex loaded from the blocks once
(timed apart: an import pays it once), then --batches batches, each looked up
(held) and added: the first, then the mean and the largest of the others
(those include the merges of the batches before into the sorted ranges, every
few batches), what every later batch of a large list costs.
CPU seconds of this process (time.process_time), and the load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from dialguard.dnc import RANGE_BITS, _hi, split16


def blocks_of(n: int, seed_batches: int | None = None) -> list[tuple[int, bytes]]:
    """(range, sorted hashes) blocks of n random hashes: per 1,000,000, two blocks a range."""
    out = []
    ranges = 1 << RANGE_BITS
    done = 0
    while done < n:
        batch = min(1_000_000, n - done)
        for part in (batch // 2, batch - batch // 2):
            for r in range(ranges):
                m = part // ranges + (1 if r < part % ranges else 0)
                if not m:
                    continue
                raw = bytearray(os.urandom(16 * m))
                raw[0::16] = bytes([r >> 2]) * m
                raw[1::16] = bytes(raw[1::16]).translate(bytes(((r & 3) << 6) | (x & 0x3F) for x in range(256)))
                out.append((r, b"".join(sorted(split16(bytes(raw))))))
        done += batch
    return out


def old_check(stored: list[bytes], batch: list[tuple[int, bytes]]) -> int:
    his: set[int] = set()
    for _, b in batch:
        his.update(_hi(b))
    met = 0
    for blob in stored:
        if not his.isdisjoint(_hi(blob)):
            met += 1
    return met


def new_check(ix, batch: list[tuple[int, bytes]]) -> int:
    from dialguard.dnc import _native  # (not in the tree before stop 17: bench/dnc.py imports blocks_of on it)

    by_range: dict[int, list[bytes]] = {}
    for r, b in batch:
        by_range.setdefault(r, []).append(b)
    held = 0
    for r, bs in by_range.items():
        native = _native(b"".join(bs))
        h = ix.held(r, native)
        held += len(h)
        ix.add(r, native, set(h))
    return held


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000,100000000")
    ap.add_argument("--batch", type=int, default=1_000_000)
    ap.add_argument("--batches", type=int, default=8)
    args = ap.parse_args()
    from dialguard.dnc import _ListIndex

    cpu = time.process_time
    print(f"DNC batch check, {args.batch:,} hashes a batch; {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    for n in (int(x) for x in args.sizes.split(",")):
        stored = blocks_of(n)
        b1 = blocks_of(args.batch)
        t = cpu()
        assert old_check([b for _, b in stored], b1) == 0
        old = cpu() - t
        ix = _ListIndex()
        t = cpu()
        by_range: dict[int, list[bytes]] = {}
        for r, b in stored:
            by_range.setdefault(r, []).append(b)
        for r, bs in by_range.items():
            ix.load(r, bs)
        load = cpu() - t
        del by_range
        t = cpu()
        assert new_check(ix, b1) == 0
        first = cpu() - t
        later = []
        for _ in range(args.batches - 1):
            b = blocks_of(args.batch)
            t = cpu()
            assert new_check(ix, b) == 0
            later.append(cpu() - t)
        mean = sum(later) / max(len(later), 1)
        print(f"list of {n:,}: old pass {old:.2f} s a batch ({old / n * 1e9:.0f} ns a stored hash); new: "
              f"{first:.2f} s, then {mean:.2f} s a batch on average (largest {max(later, default=0):.2f}, with "
              f"the merges) = {old / mean:.1f} x less; index load {load:.2f} s once; load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        del stored, ix
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
