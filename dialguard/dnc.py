"""Do-not-call lists at scale: 10 million numbers in under 8 bytes each.

Each number's keyed hash (the same HMAC tag that keys its counters) gives a
56-bit value: 16 bits pick one of 65,536 buckets, 40 bits are stored as a
5-byte record in that bucket (a Redis string). A listed number is always found
(no false negatives); an unlisted one matches only if another number in the same
bucket shares all 40 bits: at most (entries / 65,536) / 2^40 per lookup, about
1.4e-10 at 10 million entries (below 1e-7 up to 7 billion entries). No
plaintext number is stored. The lookup runs inside decide.lua, in the one
atomic decision.

At rest, each list is in PostgreSQL: single entries (`dnc add`, and every row
written before sql/226) in dnc_entries (sql/040, bytea since sql/225), one row
per number with its keyed hash and AES-GCM sealed E.164; imported numbers in
dnc_blocks (sql/226), a few hundred numbers of one hash range per row, their
hashes side by side and their E.164s sealed as one. Redis fingerprints cannot
be turned back into numbers, so `dnc export` and `counters rebuild` read both.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import itertools
import json
import os
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from redis.exceptions import NoScriptError

from dialguard.csvrows import HeaderError, number_column, spanned, unclosed
from dialguard.decision.scripts import DNC

BUCKET_BITS = 16
REC_BYTES = 5
BUCKETS = 1 << BUCKET_BITS
GLOBAL = "g"
GLOBAL_LIST = "global"  # the global list's name in dnc_entries and on the command line


def fingerprint(tag_hex: str) -> tuple[int, bytes]:
    """(bucket, 5-byte record) from a number's keyed-hash tag."""
    v = int(tag_hex[:14], 16)  # 56 bits
    return v >> 40, (v & ((1 << 40) - 1)).to_bytes(REC_BYTES, "big")


def list_name(campaign: str | None) -> str:
    """The global list, or a campaign's."""
    from dialguard.numbers import short_hash
    return GLOBAL if not campaign else "c" + short_hash(campaign)


def db_list(campaign: str | None) -> str:
    """The list's name in dnc_entries: 'global' or the campaign name."""
    return campaign or GLOBAL_LIST


def redis_list(db_name: str) -> str:
    """The Redis list of a dnc_entries list name."""
    return list_name(None if db_name == GLOBAL_LIST else db_name)


def false_positive_bound(entries: int) -> float:
    return (entries / BUCKETS) / float(1 << 40)


def _groups(tags: Iterable[str]) -> dict[int, bytes]:
    groups: dict[int, list[bytes]] = defaultdict(list)
    for t in tags:
        b, rec = fingerprint(t)
        groups[b].append(rec)
    return {b: b"".join(recs) for b, recs in groups.items()}


def _groups_raw(hashes: Iterable[bytes]) -> dict[int, bytes]:
    """_groups of keyed hashes as bytes (dnc_entries.number_hash): the same 56 bits."""
    groups: dict[int, list[bytes]] = defaultdict(list)
    for h in hashes:
        groups[(h[0] << 8) | h[1]].append(h[2:7])
    return {b: b"".join(recs) for b, recs in groups.items()}


def merge_groups(into: dict[int, bytes], more: dict[int, bytes]) -> dict[int, bytes]:
    """Bucket -> records of two batches in one (a bucket's records concatenated)."""
    for b, recs in more.items():
        have = into.get(b)
        into[b] = recs if have is None else have + recs
    return into


# Buckets per EVALSHA: one call holds Redis for about 5 us per bucket, so a
# decision waits at most ~1 ms behind an import's call.
BUCKETS_PER_CALL = 128
CALLS_PER_PIPELINE = 16


def _calls(keyof, count_key: str, op: str, groups: dict[int, bytes]) -> list[tuple]:
    """EVALSHA argument lists of dnc.lua, BUCKETS_PER_CALL buckets each."""
    items = sorted(groups.items())
    out = []
    for i in range(0, len(items), BUCKETS_PER_CALL):
        part = items[i:i + BUCKETS_PER_CALL]
        out.append((DNC.sha, len(part) + 1, *[keyof(b) for b, _ in part], count_key, op, *[r for _, r in part]))
    return out


class DncStore:
    def __init__(self, redis, keys):
        self.redis = redis
        self.keys = keys
        self._bucket_keys: dict[str, list[str]] = {}

    def list_name(self, campaign: str | None) -> str:
        return list_name(campaign)

    def bucket_key(self, list_name: str, bucket: int) -> str:
        return self.keys.dnc_bucket(list_name, bucket)

    def count_key(self, list_name: str) -> str:
        return self.keys.dnc_count(list_name)

    def _keyof(self, list_name: str):
        keys = self._bucket_keys.get(list_name)
        if keys is None:
            keys = self._bucket_keys[list_name] = [self.bucket_key(list_name, b) for b in range(BUCKETS)]
        return keys.__getitem__

    async def apply_groups(self, op: str, list_name: str, groups: dict[int, bytes]) -> int:
        """Add or remove records grouped by bucket (merge_groups' shape); entries changed."""
        calls = _calls(self._keyof(list_name), self.count_key(list_name), op, groups)
        changed = 0
        for i in range(0, len(calls), CALLS_PER_PIPELINE):
            part = calls[i:i + CALLS_PER_PIPELINE]
            for attempt in (1, 2):
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for args in part:
                            pipe.evalsha(*args)
                        res = await pipe.execute()
                    break
                except Exception as exc:  # NOSCRIPT after a restart: load and redo (idempotent)
                    # redis-py raises NoScriptError with the pipeline's own message (no "NOSCRIPT")
                    if not (isinstance(exc, NoScriptError) or "NOSCRIPT" in str(exc)) or attempt == 2:
                        raise
                    await DNC.load(self.redis)
            changed += sum(int(x) for x in res)
        return changed

    async def add(self, list_name: str, tags: Iterable[str]) -> int:
        return await self.apply_groups("add", list_name, _groups(tags))

    async def remove(self, list_name: str, tags: Iterable[str]) -> int:
        return await self.apply_groups("remove", list_name, _groups(tags))

    async def contains(self, list_name: str, tag: str) -> bool:
        b, rec = fingerprint(tag)
        s = await self.redis.get(self.bucket_key(list_name, b)) or b""
        return any(s[i:i + REC_BYTES] == rec for i in range(0, len(s), REC_BYTES))

    async def count(self, list_name: str) -> int:
        return int(await self.redis.get(self.count_key(list_name)) or 0)


def add_sync(redis, keys, list_name: str, hashes: Iterable[bytes]) -> int:
    """DncStore.add for a synchronous redis-py client (counters rebuild), of keyed
    hashes as bytes (dnc_entries.number_hash)."""
    redis.script_load(DNC.source)
    calls = _calls(lambda b: keys.dnc_bucket(list_name, b), keys.dnc_count(list_name), "add", _groups_raw(hashes))
    changed = 0
    for i in range(0, len(calls), CALLS_PER_PIPELINE):
        pipe = redis.pipeline(transaction=False)
        for args in calls[i:i + CALLS_PER_PIPELINE]:
            pipe.evalsha(*args)
        changed += sum(int(x) for x in pipe.execute())
    return changed


# -- the lists at rest (PostgreSQL) ----------------------------------------------------

class DncDbUnavailable(RuntimeError):
    """PostgreSQL unreachable, or dnc_entries missing: the CLI exits 3 with this message."""


class DncDb:
    """The lists at rest (dnc_entries and dnc_blocks) through one autocommit psycopg
    async connection."""

    def __init__(self, conn):
        self.conn = conn
        self._index: dict[str, _ListIndex] = {}  # _listed_index's, by list

    @classmethod
    async def open(cls, dsn: str, connect_timeout: int = 5) -> "DncDb":
        import psycopg

        from dialguard.audit.db import first_line, redact

        hint = "start it, fix DIALGUARD_PG_DSN, or pass --no-db to work on Redis alone"
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=connect_timeout,
                                                         application_name="dialguard-dnc")
        except (psycopg.Error, OSError) as exc:
            raise DncDbUnavailable(f"PostgreSQL unreachable at {redact(dsn)} ({first_line(exc)}): {hint}") from None
        try:
            found = (await (await conn.execute("select to_regclass('dnc_entries')")).fetchone())[0]
        except psycopg.Error as exc:
            await conn.close()
            raise DncDbUnavailable(f"PostgreSQL at {redact(dsn)}: {first_line(exc)}") from None
        if found is None:
            await conn.close()
            raise DncDbUnavailable(f"table dnc_entries is missing in {redact(dsn)}: run `dialguard db migrate` "
                                   "(with DIALGUARD_PG_ADMIN_DSN set to an admin DSN), or pass --no-db")
        return cls(conn)

    async def close(self) -> None:
        await self.conn.close()

    async def _lock(self, list_: str) -> None:
        """The list's writers one at a time (until the transaction ends): an import's
        batch, `dnc add`, `dnc remove`. What each checks (is the number listed
        already, which block holds it) stays true until it has written."""
        await self.conn.execute("select pg_advisory_xact_lock(%s)", (list_lock_id(list_),))

    async def _listed_index(self, list_: str) -> "_ListIndex":
        """The hashes of the list's blocks by range (_ListIndex), as they are at rest;
        under the list's lock.

        Kept between the batches of an import (self._index): a batch costs one
        aggregate query here (the list's block count, entry sum and largest id;
        PostgreSQL reads them from the blocks' rows, a few hundred numbers a row)
        and, once written, the merge of its own new hashes (add_blocks). Blocks
        another writer added since (larger ids: identity values only grow, and
        every writer holds the list's lock) are merged in the same way. Any other
        change (`dnc remove` rewrote or deleted a block: fewer entries than
        expected) reloads the whole index (read a range at a time)."""
        async with self.conn.cursor(binary=True) as cur:
            await cur.execute("select count(*), coalesce(sum(entries), 0), coalesce(max(id), 0) from dnc_blocks "
                              "where list = %s", (list_,))
            now = tuple(int(x) for x in await cur.fetchone())
            ix = self._index.get(list_)
            if ix is not None and now == ix.seen():
                return ix
            if ix is not None and now[2] > ix.max_id:  # blocks another writer added: merged in if nothing else changed
                await cur.execute("select hash_range, entries, hashes from dnc_blocks where id > %s and list = %s",
                                  (ix.max_id, list_))
                rows = await cur.fetchall()
                if (ix.blocks + len(rows), ix.entries + sum(r[1] for r in rows)) == now[:2]:
                    by_range: dict[int, list[bytes]] = defaultdict(list)
                    for r, _, hashes in rows:
                        by_range[r].append(bytes(hashes))
                    for r, hs in by_range.items():
                        native = _native(b"".join(hs))
                        ix.add(r, native)
                    ix.blocks, ix.entries, ix.max_id = now
                    return ix
        self._index.pop(list_, None)
        ix = _ListIndex()
        async with self.conn.cursor(name="dnc_listed_index", binary=True) as cur:
            cur.itersize = 200
            await cur.execute("select hash_range, hashes from dnc_blocks where list = %s order by hash_range",
                              (list_,))
            current, part = -1, []
            async for r, hashes in cur:
                if r != current:
                    ix.load(current, part)
                    current, part = r, []
                part.append(hashes)
            ix.load(current, part)
        ix.blocks, ix.entries, ix.max_id = now
        self._index[list_] = ix
        return ix

    async def _singles(self, list_: str, blocks: list[tuple], total: int) -> set[bytes]:
        """Which hashes of the blocks the list holds as single entries (dnc_entries): few
        single entries are read whole; more than an eighth of the batch (a list
        imported before sql/226, one row a number) are looked up by the batch's hashes
        through their primary key."""
        limit = max(1000, total // 8)
        async with self.conn.cursor(binary=True) as cur:
            await cur.execute("select number_hash from dnc_entries where list = %s limit %s", (list_, limit + 1))
            rows = await cur.fetchall()
            if not rows:
                return set()
            hashes = [x for b in blocks for x in split16(b[2])]
            if len(rows) > limit:
                await cur.execute("select number_hash from dnc_entries where list = %s and number_hash = any(%s)",
                                  (list_, hashes))
                return {bytes(r[0]) for r in await cur.fetchall()}
        return set(hashes).intersection(bytes(r[0]) for r in rows)

    async def _holding(self, list_: str, h: bytes) -> list[tuple[int, bytes, bytes, int]]:
        """(block id, hashes, sealed, position) of each block of the list holding hash h."""
        async with self.conn.cursor(binary=True) as cur:
            await cur.execute("select id, hashes, sealed from dnc_blocks where list = %s and hash_range = %s "
                              "order by id", (list_, hash_range(h)))
            rows = await cur.fetchall()
        return [(bid, bytes(hs), bytes(sealed), i) for bid, hs, sealed in rows if (i := find16(hs, h)) >= 0]

    async def add_blocks(self, list_: str, parts: list[list[tuple]], source: str, sealer) -> int:
        """Store the import workers' blocks (seal_blocks' tuples) of one batch; the new
        numbers only, so a batch cut short is simply redone and a file imported twice
        adds nothing. A number already at rest (in a block or a single entry), or in
        an earlier block of the same batch, is cut out of its block (opened and
        re-sealed with `sealer`; a block left empty is not written). Returns the
        numbers stored."""
        blocks = [b for part in parts for b in part]
        if not blocks:
            return 0
        try:
            async with self.conn.transaction():
                await self._lock(list_)
                ix = await self._listed_index(list_)
                blocks, merges = await self._only_new(list_, ix, blocks, sealer)
                last = 0
                if blocks:
                    lb, sb = list_.encode(), source.encode()
                    head = struct.pack(">hi", 6, len(lb)) + lb
                    tail = struct.pack(">i", len(sb)) + sb
                    async with self.conn.cursor() as cur:
                        async with cur.copy("copy dnc_blocks (list, hash_range, entries, hashes, sealed, source) "
                                            "from stdin (format binary)") as cp:
                            await cp.write(PGCOPY_HEADER)
                            for i in range(0, len(blocks), 512):
                                await cp.write(b"".join(
                                    head + struct.pack(">iiiii", 4, r, 4, n, len(h)) + h
                                    + struct.pack(">i", len(sd)) + sd + tail
                                    for r, n, h, sd in blocks[i:i + 512]))
                            await cp.write(PGCOPY_TRAILER)
                        # the largest id of the rows just written (this session's last value of the sequence)
                        await cur.execute("select currval(pg_get_serial_sequence('dnc_blocks', 'id'))")
                        last = (await cur.fetchone())[0]
        except BaseException:
            self._index.pop(list_, None)  # written or not, unknown: read again next time
            raise
        # committed: the index holds what is at rest now
        for j, (r, native, skip) in enumerate(merges):
            ix.add(r, native, skip)
            if j % 64 == 63:
                await asyncio.sleep(0)  # the Redis sink's replies meanwhile (its read times out)
        stored = sum(b[1] for b in blocks)
        ix.blocks, ix.entries, ix.max_id = ix.blocks + len(blocks), ix.entries + stored, max(ix.max_id, last)
        return stored

    async def _only_new(self, list_: str, ix: "_ListIndex", blocks: list[tuple], sealer) -> tuple[list[tuple], list]:
        """The blocks without the numbers the list holds already (in a block: looked up
        in `ix` by bisection, a prefix match confirmed on the full hash; a single
        entry: _singles), nor those an earlier block of the batch holds. Also the
        plan of `ix`'s update once these blocks are written: (range, its batch hashes
        in _native form, the indexes of those left out)."""
        total = sum(b[1] for b in blocks)
        drop: dict[int, set[bytes]] = {}
        if len(set(itertools.chain.from_iterable(_hi(b[2]) for b in blocks))) < total:
            # an 8-byte prefix twice in the batch: the same number in two workers' parts, maybe
            seen: set[bytes] = set()
            for k, b in enumerate(blocks):
                for x in split16(b[2]):
                    if x in seen:
                        drop.setdefault(k, set()).add(x)
                    else:
                        seen.add(x)
        by_range: dict[int, list[int]] = defaultdict(list)
        for k, b in enumerate(blocks):
            by_range[b[0]].append(k)
        plan = []
        for r, ks in by_range.items():
            if len(plan) % 64 == 63:
                await asyncio.sleep(0)  # the Redis sink's replies meanwhile (its read times out)
            native = _native(b"".join(blocks[k][2] for k in ks)) if len(ks) > 1 else _native(blocks[ks[0]][2])
            held = ix.held(r, native)
            if held:
                starts = list(itertools.accumulate((blocks[k][1] for k in ks), initial=0))
                for i in held:
                    j = bisect_right(starts, i) - 1
                    at = i - starts[j]
                    drop.setdefault(ks[j], set()).add(blocks[ks[j]][2][16 * at:16 * at + 16])
            plan.append((r, ks, native))
        single = await self._singles(list_, blocks, total)
        if single:
            for k, b in enumerate(blocks):
                hit = single.intersection(split16(b[2]))
                if hit:
                    drop.setdefault(k, set()).update(hit)
        merges = []
        for r, ks, native in plan:
            skip: set[int] = set()
            at = 0
            for k in ks:
                for h in drop.get(k, ()):
                    skip.add(at + find16(blocks[k][2], h))
                at += blocks[k][1]
            merges.append((r, native, skip))
        if not drop:
            return blocks, merges
        out = []
        for k, b in enumerate(blocks):
            if k in drop:
                b = _without(b, drop[k], sealer)
            if b is not None:
                out.append(b)
        return out, merges

    async def add(self, list_: str, tag: str, sealed: bytes, source: str = "cli") -> bool:
        """One entry: `tag` the keyed hash in hex (Keys.number_tag), `sealed` Sealer.seal_raw's
        bytes. False if the list holds it already (a single entry or in a block)."""
        h = bytes.fromhex(tag)
        async with self.conn.transaction():
            await self._lock(list_)
            if await self._holding(list_, h):
                return False
            cur = await self.conn.execute(
                "insert into dnc_entries (list, number_hash, number_enc, source) values (%s, %s, %s, %s) "
                "on conflict do nothing", (list_, h, bytes(sealed), source))
            return cur.rowcount == 1

    async def remove(self, list_: str, tag: str, sealer=None) -> bool:
        """Take a number off the list at rest: its single entry, or out of its block (the
        block re-sealed without it with `sealer`, which must open it; deleted if left
        empty). DncDbUnavailable if a block holds it and cannot be opened."""
        from cryptography.exceptions import InvalidTag

        h = bytes.fromhex(tag)
        async with self.conn.transaction():
            await self._lock(list_)
            cur = await self.conn.execute("delete from dnc_entries where list = %s and number_hash = %s",
                                          (list_, h))
            removed = cur.rowcount
            for bid, hashes, sealed, i in await self._holding(list_, h):
                if sealer is None:
                    raise DncDbUnavailable("an imported block holds the number: the data key (DIALGUARD_DATA_KEY) "
                                           "is needed to re-seal it without the number")
                try:
                    b = _without((hash_range(h), len(hashes) // 16, hashes, sealed), {h}, sealer)
                except InvalidTag:
                    raise DncDbUnavailable("the block holding the number cannot be opened with DIALGUARD_DATA_KEY "
                                           "(nor an old key): set the key it was imported with") from None
                if b is None:
                    await self.conn.execute("delete from dnc_blocks where id = %s", (bid,))
                else:
                    await self.conn.execute("update dnc_blocks set entries = %s, hashes = %s, sealed = %s "
                                            "where id = %s", (b[1], b[2], b[3], bid))
                removed += 1
        return removed > 0

    async def count(self, list_: str) -> int:
        cur = await self.conn.execute(
            "select (select count(*) from dnc_entries where list = %s) "
            "+ coalesce((select sum(entries) from dnc_blocks where list = %s), 0)", (list_, list_))
        return int((await cur.fetchone())[0])

    async def entries(self, list_: str, sealer=None, batch: int = 10_000):
        """(keyed hash in hex, E.164) of every entry of the list, streamed: the single
        entries in hash order, then the blocks by hash range. The E.164 is None without
        a sealer (hashes only), False when the sealer cannot open it."""
        async with self.conn.transaction():
            async with self.conn.cursor(name="dnc_export") as cur:
                cur.itersize = batch
                await cur.execute("select number_hash, number_enc from dnc_entries where list = %s "
                                  "order by number_hash", (list_,))
                async for tag, enc in cur:
                    yield tag.hex(), None if sealer is None else _open_one(sealer, enc)
            async with self.conn.cursor(name="dnc_export_blocks", binary=True) as cur:
                cur.itersize = 100
                await cur.execute("select hashes, sealed from dnc_blocks where list = %s order by hash_range, id",
                                  (list_,))
                async for hashes, sealed in cur:
                    hs = split16(hashes)
                    nums: list = [None] * len(hs)
                    if sealer is not None:
                        try:
                            nums = [n.decode() for n in block_numbers(sealer.open_block(sealed, bytes(hashes)))]
                        except Exception:  # noqa: BLE001  wrong key, damaged block: its entries unreadable
                            nums = [False] * len(hs)
                    for h, n in zip(hs, nums):
                        yield h.hex(), n


def _open_one(sealer, enc) -> str | bool:
    try:
        return sealer.open(enc)
    except Exception:  # noqa: BLE001  wrong key, damaged row
        return False


def list_lock_id(list_: str) -> int:
    """The advisory lock key of a list's writers (a signed 64-bit integer)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(b"dialguard-dnc-list:" + list_.encode()).digest()[:8], "big", signed=True)


# -- blocks (dnc_blocks, sql/226) ----------------------------------------------------

RANGE_BITS = 10  # dnc_blocks.hash_range: the first 10 bits of the hash
_LEN1 = [bytes([n]) for n in range(256)]


def hash_range(h: bytes) -> int:
    return (h[0] << 2) | (h[1] >> 6)


def _range_start(r: int) -> bytes:
    """The smallest hash of range r (a bound for bisect over sorted hashes)."""
    return bytes([r >> 2, (r & 3) << 6])


def split16(blob: bytes) -> list[bytes]:
    return [blob[i:i + 16] for i in range(0, len(blob), 16)]


def _hi(blob: bytes):
    """The first 8 bytes of each 16-byte hash of a blob, as integers (a C loop)."""
    return memoryview(blob).cast("Q")[::2]


def _native(hashes: bytes) -> bytes:
    """16-byte hashes with each 8-byte half in the machine's byte order, so that as
    unsigned integers (memoryview cast "Q") they compare as the bytes do: hashes
    sorted as bytes are sorted as integers. Its own inverse."""
    if sys.byteorder == "big":
        return hashes
    a = array("Q")
    a.frombytes(hashes)
    a.byteswap()
    return a.tobytes()


_mul16 = (16).__mul__
_add16 = (16).__add__


class _ListIndex:
    """The hashes of a list's blocks, by hash range, for an import's check of each
    batch (DncDb._only_new): per range one bytes object of its 16-byte hashes,
    sorted, in _native form, so that their first halves read as integers (every
    other "Q") are a sorted sequence, and the blobs of the batches added since
    (`pending`, each in _native form).

    A batch's hashes of a range are looked up by bisection over the sorted
    prefixes (log2 of the range's size steps, in C), after the pending blobs
    are merged in (slices joined in C loops: a step per new hash and a copy of
    the range), a prefix match confirmed on the full 16 bytes: the cost of a
    batch grows with the batch, not with the list. While the range holds at
    most SCAN times the batch's hashes of it, a pass over them (C loops against
    a set of the batch's prefixes of that range, small enough to stay in the
    CPU's cache: about 0.05 us a stored hash, against 1.7 us a batch hash for
    the bisection and the merge, at load 6) is cheaper: so it is done, and the
    batch's new hashes only appended. 16 bytes a number, the hashes themselves."""

    SCAN = 32

    __slots__ = ("ranges", "pending", "blocks", "entries", "max_id")

    def __init__(self):
        self.ranges: list[bytes] = [b""] * (1 << RANGE_BITS)
        self.pending: list[list[bytes]] = [[] for _ in range(1 << RANGE_BITS)]
        self.blocks = self.entries = self.max_id = 0  # the list's blocks when last seen: count, entries, largest id

    def seen(self) -> tuple[int, int, int]:
        return self.blocks, self.entries, self.max_id

    def load(self, r: int, blobs: list) -> None:
        """Range r from its blocks' hashes (as stored)."""
        if r >= 0 and blobs:
            self.ranges[r] = _native(b"".join(sorted(split16(b"".join(blobs)))))
            self.pending[r] = []

    def add(self, r: int, native: bytes, skip: set[int] | tuple = ()) -> None:
        """The hashes of `native` (_native form) but those whose index is in `skip`, into range r."""
        if skip:
            native = b"".join(native[16 * i:16 * i + 16] for i in range(len(native) // 16) if i not in skip)
        if native:
            self.pending[r].append(native)

    def held(self, r: int, native: bytes) -> list[int]:
        """The indexes of the hashes of `native` (_native form) range r holds."""
        size = (len(self.ranges[r]) + sum(map(len, self.pending[r]))) // 16
        if size <= self.SCAN * (len(native) // 16):
            return self._scan(r, native)
        self._settle(r)
        return self._bisect(r, native)

    def _scan(self, r: int, native: bytes) -> list[int]:
        keys = set(memoryview(native).cast("Q")[::2].tolist())
        full, hit = None, set()
        for blob in (self.ranges[r], *self.pending[r]):
            if blob and not keys.isdisjoint(memoryview(blob).cast("Q")[::2]):
                if full is None:
                    full = set(split16(native))
                hit.update(full.intersection(split16(blob)))
        return [i for i, h in enumerate(split16(native)) if h in hit] if hit else []

    def _settle(self, r: int) -> None:
        """The pending blobs of range r into its sorted one."""
        pend = self.pending[r]
        if not pend:
            return
        self.pending[r] = []
        new = b"".join(pend)
        if len(self.ranges[r]) < 3 * len(new):  # a sort of it all (C) is cheaper than a step per new hash
            self.ranges[r] = _native(b"".join(sorted(split16(_native(self.ranges[r] + new)))))
        else:
            self.merge(r, new, self.positions(r, new))

    def positions(self, r: int, native: bytes) -> list[int]:
        """Where each hash of `native` goes in range r's sorted blob (bisect_left of its prefix)."""
        q = memoryview(self.ranges[r]).cast("Q")[::2]
        return list(map(bisect_left, itertools.repeat(q), memoryview(native).cast("Q")[::2].tolist()))

    def _bisect(self, r: int, native: bytes) -> list[int]:
        """held() by bisection: the prefix at its position equal, then the full 16 bytes
        (of every hash sharing that prefix)."""
        blob = self.ranges[r]
        q = memoryview(blob).cast("Q")[::2]
        n = len(q)
        if not n:
            return []
        pos = self.positions(r, native)
        keys = memoryview(native).cast("Q")[::2].tolist()
        at = map(q.__getitem__, map(min, pos, itertools.repeat(n - 1)))
        out = []
        for i in itertools.compress(itertools.count(), map(int.__eq__, at, keys)):
            p, k, h = pos[i], keys[i], native[16 * i:16 * i + 16]
            while p < n and q[p] == k:
                if blob[16 * p:16 * p + 16] == h:
                    out.append(i)
                    break
                p += 1
        return out

    def merge(self, r: int, native: bytes, pos: list[int]) -> None:
        """Range r's sorted blob with the hashes of `native` in; `pos` from positions().
        Joined from slices in C loops (map, chain): the old blob's runs between the
        new hashes' positions, each new hash after its run; the range copied twice
        (memcpy)."""
        keys = memoryview(native).cast("Q")[::2].tolist()
        # by prefix, which orders the positions too (bisect_left is monotonic); the
        # pending hashes are sorted runs (a worker's block each): Timsort merges them
        order = sorted(range(len(keys)), key=keys.__getitem__)
        if not order:
            return
        cut = list(map(_mul16, map(pos.__getitem__, order)))
        at = list(map(_mul16, order))
        blob = self.ranges[r]  # (slices of bytes: 5 times quicker to make than of a memoryview)
        old = map(blob.__getitem__, map(slice, itertools.chain((0,), cut), cut))
        new = map(native.__getitem__, map(slice, at, map(_add16, at)))
        self.ranges[r] = b"".join(itertools.chain(itertools.chain.from_iterable(zip(old, new)), (blob[cut[-1]:],)))

    def hashes(self, r: int) -> list[bytes]:
        """Range r's hashes (as stored), sorted: for tests."""
        self._settle(r)
        return split16(_native(self.ranges[r]))


def find16(blob: bytes, h: bytes) -> int:
    """Position of hash h among the 16-byte hashes of blob, or -1."""
    at = blob.find(h)
    while at >= 0 and at % 16:
        at = blob.find(h, at + 1)
    return -1 if at < 0 else at // 16


def block_numbers(plain: bytes) -> list[bytes]:
    """The E.164s of a block's plaintext (a length byte and the ASCII each)."""
    out, i, n = [], 0, len(plain)
    while i < n:
        ln = plain[i]
        out.append(plain[i + 1:i + 1 + ln])
        i += 1 + ln
    return out


def seal_blocks(sealer, recs: dict[bytes, bytes]) -> list[tuple[int, int, bytes, bytes]]:
    """Blocks of numbers keyed by hash: {16-byte hash: length byte + E.164} ->
    (hash range, entries, sorted hashes, sealed E.164s in the same order) per range."""
    from bisect import bisect_left

    hs = sorted(recs)
    get = recs.__getitem__
    out = []
    i, n = 0, len(hs)
    while i < n:
        r = hash_range(hs[i])
        j = bisect_left(hs, _range_start(r + 1), i) if r < (1 << RANGE_BITS) - 1 else n
        part = hs[i:j]
        hashes = b"".join(part)
        out.append((r, j - i, hashes, sealer.seal_block(b"".join(map(get, part)), hashes)))
        i = j
    return out


def _without(block: tuple, drop: set[bytes], sealer) -> tuple | None:
    """A block without the given hashes, re-sealed (a fresh nonce); None if nothing is left."""
    r, n, hashes, sealed = block
    hs = split16(hashes)
    keep = [i for i, h in enumerate(hs) if h not in drop]
    if len(keep) == n:
        return block
    if not keep:
        return None
    nums = block_numbers(sealer.open_block(sealed, hashes))
    kept = b"".join(hs[i] for i in keep)
    return r, len(keep), kept, sealer.seal_block(b"".join(_LEN1[len(nums[i])] + nums[i] for i in keep), kept)


def restore_lists(conn, redis, keys, dry_run: bool = False) -> dict[str, int]:
    """Counters rebuild: every list at rest (dnc_entries and dnc_blocks) back into its
    Redis buckets (additive: entries Redis still has stay). Returns {list: entries
    written or found}."""
    if conn.execute("select to_regclass('dnc_entries')").fetchone()[0] is None:
        return {}
    done: dict[str, int] = {}

    def flush(lst, tags):
        if lst is not None and tags:
            if not dry_run:
                add_sync(redis, keys, redis_list(lst), tags)
            done[lst] = done.get(lst, 0) + len(tags)

    with conn.cursor(name="dnc_restore") as cur:
        cur.itersize = 50_000
        cur.execute("select list, number_hash from dnc_entries order by list")
        current, tags = None, []
        for lst, tag in cur:  # tag: bytea, 16 bytes
            if lst != current or len(tags) >= 200_000:
                flush(current, tags)
                current, tags = lst, []
            tags.append(tag)
        flush(current, tags)
    if conn.execute("select to_regclass('dnc_blocks')").fetchone()[0] is None:
        return done
    with conn.cursor(name="dnc_restore_blocks") as cur:
        cur.itersize = 200
        cur.execute("select list, hashes from dnc_blocks order by list")
        current, tags = None, []
        for lst, hashes in cur:
            if lst != current or len(tags) >= 200_000:
                flush(current, tags)
                current, tags = lst, []
            tags.extend(split16(bytes(hashes)))
        flush(current, tags)
    return done


# -- CSV import ---------------------------------------------------------------------

@dataclass
class ImportReport:
    rows: int = 0
    valid: int = 0
    added: int = 0
    duplicates: int = 0
    rejected: int = 0
    resumed_from: int = 0
    stored: int = 0          # new rows in dnc_entries (0 with --no-db)
    resume_note: str | None = None
    rejects_path: str | None = None
    samples: list[tuple[int, str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "samples"} | {
            "rejected_samples": [{"line": ln, "value": v, "why": w} for ln, v, w in self.samples]}


class DncFileError(ValueError):
    """A file the import refuses whole, before anything is written: its first row
    is neither a header naming the number column nor a number."""


class RowProblem(str):
    """A record rejected as it is read, before normalization (`why`): a quote not
    closed on its line made the csv reader take the lines after it into it. The
    str is the value reported: the number field up to its first line break."""

    def __new__(cls, fields: list[str], col: int, why: str):
        self = super().__new__(cls, (fields[col] if len(fields) > col else "").split("\n", 1)[0][:64])
        self.why = why
        return self


def read_numbers(path: Path | IO[str], region: str, problems: list | None = None) -> Iterator[tuple[int, str]]:
    """(line number, raw value) per data row: the column a header names (csvrows.NUMBER_COLS), or the first.

    The first row is a header naming the number column or a row whose first
    column is a valid number in `region`; any other first row is a DncFileError
    (csvrows.number_column, as for lead files). A record the csv reader took from
    several lines comes as (its first line, RowProblem), so the import rejects it
    naming the lines rather than reading the lines after an open quote as one
    value (and is appended to `problems`). Undecodable bytes become U+FFFD, so such a row is rejected as
    unparseable rather than stopping the import. A UTF-8 BOM is not data.
    `path` may be an open text stream instead (the console's upload, kept in memory).
    """
    if not isinstance(path, (str, Path)):
        yield from _rows(path, region, problems)
        return
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        yield from _rows(f, region, problems)


def check_file(path: Path | IO[str], region: str) -> None:
    """DncFileError now if the import would refuse the file (its first row): before
    a rejects file, a checkpoint or an import job exists. A stream is left where it was."""
    if isinstance(path, (str, Path)):
        rows = read_numbers(path, region)
        try:
            next(rows, None)
        finally:
            rows.close()
        return
    pos = path.tell()
    try:
        next(_rows(path, region), None)
    finally:
        path.seek(pos)


def _number_column(row: list[str], region: str) -> int | None:
    """The first row's column of numbers; None if the row is data, not a header."""
    try:
        return number_column(row, 1, region)
    except HeaderError as exc:
        raise DncFileError(f"{exc} Nothing was imported.") from None


def _rows(f: IO[str], region: str, problems: list | None = None) -> Iterator[tuple[int, str]]:
    reader = csv.reader(f)
    first = next(reader, None)
    if first is None:
        return
    if reader.line_num > 1:
        raise DncFileError(f"{spanned(1, reader.line_num)}. Nothing was imported.")
    if first and first[0][:1] == "\ufeff":  # a stream's BOM (a file's is gone with utf-8-sig)
        first[0] = first[0][1:]
    col = _number_column(first, region)
    # each row is yielded one record late (held): only the file's last record can hold a line
    # break on one line. A rejected row is appended to `problems` in the same next() that
    # returns it, so _Source.chunks finds it in the chunk it belongs to.
    held = None
    if col is None:
        col = 0
        held = 1, (first[0] if first else "")
    last, row = reader.line_num, first
    for row in reader:
        line = reader.line_num
        if held is not None:
            yield held
        if line == last + 1:
            held = line, (row[col] if len(row) > col else "")
        else:  # a quote left open took the lines after it into this record
            held = last + 1, RowProblem(row, col, spanned(last + 1, line))
            if problems is not None:
                problems.append(held)
        last = line
    if held is not None:
        if type(held[1]) is str and any("\n" in c or "\r" in c for c in row):
            held = held[0], RowProblem(row, col, unclosed(held[0]))  # its quote still open at the end
            if problems is not None:
                problems.append(held)
        yield held


# A file with no quote, carriage return or NUL in it is read the quick way: the
# main process hands the workers whole lines as bytes (no CSV parse, no str per
# row in the main process) and each worker splits them, which for such a file is
# exactly what csv.reader does (a row per line, fields split at commas). Any
# other file, and the console's upload, go through csv.reader.
_NOT_PLAIN = (b'"', b"\r", b"\0")


def _plain(path: Path) -> bool:
    with open(path, "rb") as f:
        for buf in iter(lambda: f.read(1 << 20), b""):
            if any(c in buf for c in _NOT_PLAIN):
                return False
    return True


def _split_block(first_line: int, data: bytes, col: int) -> tuple[range, list[str]]:
    """(line numbers, raw values) of a block of whole lines of a plain file, as
    read_numbers would give them for those lines."""
    text = data.decode("utf-8", "replace")  # as read_numbers opens the file
    if any(c in data for c in _NOT_PLAIN):
        raise ValueError("the file changed during the import (it has quotes or carriage returns now): "
                         "run the same command again")
    rows = text.split("\n")
    if text.endswith("\n"):
        rows.pop()
    if col == 0:
        raws = rows if "," not in text else [r.split(",", 1)[0] for r in rows]
    else:
        raws = [p[col] if len(p) > col else "" for p in (r.split(",") for r in rows)]
    return range(first_line, first_line + len(rows)), raws


class _Source:
    """The data rows of a file (or of the console's upload) as chunks of work: for
    each chunk, its row count and one part per worker."""

    def __init__(self, path: Path | IO[str], region: str):
        self.f = None
        self.rows: Iterator[tuple[int, str]] | None = None
        self.problems: list = []  # rows read_numbers rejected as it read them, since the last chunk
        if isinstance(path, (str, Path)) and _plain(Path(path)):
            self.f = open(path, "rb")
            first = self.f.readline()
            start = 3 if first.startswith(b"\xef\xbb\xbf") else 0  # a UTF-8 BOM, as utf-8-sig reads it
            col = _number_column(next(csv.reader([first[start:].decode("utf-8", "replace")]), []),
                                 region) if first else None
            if col is not None:
                self.col, self.line = col, 2
            else:
                self.f.seek(start)
                self.col, self.line = 0, 1
        else:
            self.rows = read_numbers(path, region, self.problems)

    def skip(self, n: int) -> int:
        """Pass over n data rows (a resumed import); the rows passed."""
        done = 0
        if self.f is not None:
            for _ in itertools.islice(self.f, n):
                done += 1
            self.line += done
            return done
        for _ in range(n):
            if next(self.rows, None) is None:
                break
            done += 1
        self.problems.clear()
        return done

    def chunks(self, size: int, workers: int) -> Iterator[tuple[int, list[tuple]]]:
        if self.f is None:
            for chunk in _chunks(self.rows, size):
                n, bad = len(chunk), []
                if self.problems:  # checked per chunk, not per row: rejected as read, not normalized
                    self.problems.clear()
                    bad = [(ln, str(raw), raw.why) for ln, raw in chunk if type(raw) is RowProblem]
                    chunk = [r for r in chunk if type(r[1]) is not RowProblem]
                step = max(1, -(-len(chunk) // workers))
                yield n, [("rows", [ln for ln, _ in sub], [raw for _, raw in sub])
                          for sub in (chunk[i:i + step] for i in range(0, len(chunk), step))] + (
                    [("rejected", bad)] if bad else [])
            return
        while True:
            lines = list(itertools.islice(self.f, size))
            if not lines:
                return
            n, step = len(lines), -(-len(lines) // workers)
            yield n, [("block", self.line + i, b"".join(lines[i:i + step]), self.col) for i in range(0, n, step)]
            self.line += n

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
        elif self.rows is not None:
            self.rows.close()


def _work(args):
    """Worker entry: a part of a chunk (_Source.chunks) through _normalize_chunk."""
    part, rest = args[0], args[1:]
    if part[0] == "rejected":  # (line, value, why) as read_numbers rejected them
        return {}, 0, part[1], []
    if part[0] == "block":
        lines, raws = _split_block(*part[1:])
    else:
        lines, raws = part[1], part[2]
    return _normalize_chunk((lines, raws, *rest))


# COPY's binary format (PostgreSQL docs, "COPY", "Binary Format"): a signature,
# flags and header-extension length, then per row a field count and each field
# as a 4-byte length and its bytes, then -1 as the trailer. Bytes go as they
# are: no hex, base64 or escaping to write, nor for PostgreSQL to parse.
PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
PGCOPY_TRAILER = struct.pack(">h", -1)


def _normalize_chunk(args) -> tuple[dict[int, bytes], int, list[tuple[int, str, str]], list[tuple]]:
    """Worker: normalize a chunk of rows, hash the valid ones and, for PostgreSQL, seal
    them in blocks by hash range (seal_blocks; the part's repeats once). Returns
    (bucket -> fingerprint records, valid rows, rejected rows, blocks). No plaintext
    number leaves the worker."""
    lines, raws, region, secret, data_key = args
    import hmac

    from dialguard.numbers import _fast, parse_with_phonenumbers

    # Keys.number_tag is HMAC-SHA256(secret, "n:" + E.164): the key and the "n:"
    # absorbed once, a copy of that state per number (0.8 us, against 1.4 for
    # the one-shot hmac.digest, which sets the key up again each time)
    keyed = hmac.new(secret, b"n:", "sha256").copy
    buckets: list[list[bytes]] = [[] for _ in range(BUCKETS)]
    bad = []
    recs: dict[bytes, bytes] = {}  # 16-byte hash -> length byte + E.164 (the block's plaintext)
    valid = 0
    seal = data_key is not None
    L1 = _LEN1
    for line, raw in zip(lines, raws):
        # numbers.normalize_bulk, inlined: the exact fast path, else phonenumbers
        hit = _fast(raw, region)
        if hit is not None:
            e164, problem = hit[0], hit[1]
        else:
            info = parse_with_phonenumbers(raw, region)
            e164, problem = info.e164, info.problem
        if problem:
            bad.append((line, raw[:64], problem))
            continue
        valid += 1
        eb = e164.encode()
        h = keyed()
        h.update(eb)
        d = h.digest()  # fingerprint(): its first 56 bits
        buckets[(d[0] << 8) | d[1]].append(d[2:7])
        if seal:
            recs[d[:16]] = L1[len(eb)] + eb
    blocks = []
    if seal:
        from dialguard.crypto import Sealer

        blocks = seal_blocks(Sealer(data_key), recs)
    return {b: b"".join(r) for b, r in enumerate(buckets) if r}, valid, bad, blocks


def _chunks(it: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for x in it:
        chunk.append(x)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_atomic(path: Path, text: str) -> None:
    """A checkpoint is never seen half-written, even after kill -9."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


TOTALS = ("rows", "valid", "added", "duplicates", "rejected", "stored")


async def import_csv(store: DncStore, list_name: str, path: Path | IO[str], region: str, secret: bytes, *,
                     rejects_path: Path | None = None, checkpoint: Path | None = None,
                     chunk_rows: int = 1_000_000, workers: int | None = None,
                     progress: Callable[[int], None] | None = None,
                     db: DncDb | None = None, db_name: str | None = None, data_key: bytes | None = None,
                     source: str | None = None, rejects_sink: list | None = None, ahead: int = 2,
                     report: ImportReport | None = None) -> ImportReport:
    """Import a CSV: normalized, invalid rows reported (line, value, why), resumable.

    Every chunk goes to the Redis buckets and, with `db`, to dnc_blocks (list
    `db_name`, sealed with `data_key`; numbers the list holds already are not
    stored again), both idempotent; only then does the
    checkpoint move past it (with the rejects file's length at that point). A
    rerun skips the rows the checkpoint covers and cuts the rejects file back to
    that length, so a chunk cut short by a crash is redone in both sinks and its
    rejected rows are written once. A checkpoint from a Redis-only run does not
    let a run with PostgreSQL skip rows (PostgreSQL never got them): it starts over.

    While a chunk is stored, the workers normalize the next `ahead` chunks: the
    slower of the sinks (PostgreSQL's one backend, usually) bounds the rate, not
    the sinks and the workers taking turns (each chunk ahead holds its rows and
    results in memory, about 150 MB at 1,000,000 rows).

    `report`: the caller's, filled chunk by chunk as both sinks have stored it, so
    that what an import that fails midway did is known (the console's job page and
    audit record); a chunk one sink refused is not counted (its other sink's part
    is, idempotently, written again by the next run).
    """
    from concurrent.futures import ProcessPoolExecutor

    if db is not None and data_key is None:
        from dialguard.crypto import data_key as default_key
        data_key = default_key()
    db_name = db_name or GLOBAL_LIST
    stream = not isinstance(path, (str, Path))  # an upload in memory: nothing to resume from
    if stream and (checkpoint or not source):
        raise ValueError("a stream is imported without a checkpoint, and needs a source name")
    source = source or path.name
    check_file(path, region)  # a refused file leaves no rejects file or checkpoint behind
    if report is None:
        report = ImportReport()
    report.rejects_path = str(rejects_path) if rejects_path else None
    ident = {}
    if checkpoint:
        st = path.stat()
        ident = {"file": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "list": list_name}
    done, rej_offset = 0, 0
    if checkpoint and checkpoint.exists():
        try:
            state = json.loads(checkpoint.read_text() or "{}")
        except ValueError:
            state = {}
        if {k: state.get(k) for k in ident} != ident:
            report.resume_note = "the checkpoint is for another file, list or version of the file: started over"
        elif db is not None and not state.get("db"):
            report.resume_note = "the interrupted run was Redis-only (--no-db): started over to fill PostgreSQL"
        elif rejects_path and state.get("rejects") != str(rejects_path):
            report.resume_note = "the interrupted run wrote its rejects elsewhere: started over"
        elif rejects_path and not rejects_path.exists():
            report.resume_note = f"{rejects_path} (rejects so far) is gone: started over"
        else:
            done = int(state.get("rows", 0))
            rej_offset = int(state.get("rejects_offset", 0))
            for k in TOTALS:
                setattr(report, k, int(state.get("totals", {}).get(k, 0)))
            report.resumed_from = done
    if rejects_path and done:
        os.truncate(rejects_path, rej_offset)  # rows of the chunk the crash cut short come again
    rej = open(rejects_path, "a" if done else "w", newline="") if rejects_path else None
    rej_writer = csv.writer(rej) if rej else None
    if rej_writer and not done:
        rej_writer.writerow(["line", "value", "why"])
    loop = asyncio.get_running_loop()
    workers = workers or max(1, (os.cpu_count() or 2))
    key = data_key if db is not None else None
    sealer = None
    if key is not None:
        from dialguard.crypto import Sealer

        sealer = Sealer(key)  # re-seals a block the batch's repeats are cut out of

    def submit(pool, chunk):
        n, parts = chunk
        return n, asyncio.gather(*[loop.run_in_executor(pool, _work, (part, region, secret, key))
                                   for part in parts])

    source_rows = None
    try:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            source_rows = _Source(path, region)
            skipped = source_rows.skip(done)
            report.rows = skipped
            if progress and skipped:
                progress(skipped)
            chunks = source_rows.chunks(chunk_rows, workers)
            pending = collections.deque()
            for chunk in itertools.islice(chunks, max(1, ahead)):
                pending.append(submit(pool, chunk))
            while pending:
                chunk_len, fut = pending.popleft()
                following = next(chunks, None)  # read the next chunk while the workers normalize
                results = await fut
                if following:
                    pending.append(submit(pool, following))  # normalized while this one is stored
                groups: dict[int, bytes] = {}
                for r in results:
                    merge_groups(groups, r[0])
                valid = sum(r[1] for r in results)
                bad = sorted(b for r in results for b in r[2])
                if db is not None:
                    # both sinks finish before a failure of either is raised: none left writing behind it
                    sunk = await asyncio.gather(store.apply_groups("add", list_name, groups),
                                                db.add_blocks(db_name, [r[3] for r in results], source, sealer),
                                                return_exceptions=True)
                    for x in sunk:
                        if isinstance(x, BaseException):
                            raise x
                    added, stored = sunk
                else:
                    added, stored = await store.apply_groups("add", list_name, groups), 0
                report.rows += chunk_len
                report.valid += valid
                report.added += added
                report.stored += stored
                report.duplicates += valid - added
                report.rejected += len(bad)
                if rejects_sink is not None:  # the console: every rejected row, in memory
                    rejects_sink.extend(bad)
                if rej_writer:
                    rej_writer.writerows(bad)
                    rej.flush()
                    os.fsync(rej.fileno())
                for b in bad:
                    if len(report.samples) < 20:
                        report.samples.append(b)
                if checkpoint:
                    _write_atomic(checkpoint, json.dumps(ident | {
                        "db": db is not None, "rows": report.rows, "rejects": str(rejects_path) if rejects_path else None,
                        "rejects_offset": rej.tell() if rej else 0,
                        "totals": {k: getattr(report, k) for k in TOTALS}}))
                if progress:
                    progress(report.rows)
    finally:
        if source_rows is not None:
            source_rows.close()
        if rej:
            rej.close()
    if checkpoint and checkpoint.exists():
        checkpoint.unlink()
    return report


def count_rows(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b""))

