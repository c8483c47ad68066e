"""Do-not-call lists at scale: 10 million numbers in under 8 bytes each.

Each number's keyed hash (the same HMAC tag that keys its counters) gives a
56-bit value: 16 bits pick one of 65,536 buckets, 40 bits are stored as a
5-byte record in that bucket (a Redis string). A listed number is always found
(no false negatives); an unlisted one matches only if another number in the same
bucket shares all 40 bits: at most (entries / 65,536) / 2^40 per lookup, about
1.4e-10 at 10 million entries (below 1e-7 up to 7 billion entries). No
plaintext number is stored. The lookup runs inside decide.lua, in the one
atomic decision.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from dialguard.scripts import DNC

BUCKET_BITS = 16
REC_BYTES = 5
BUCKETS = 1 << BUCKET_BITS
GLOBAL = "g"


def fingerprint(tag_hex: str) -> tuple[int, bytes]:
    """(bucket, 5-byte record) from a number's keyed-hash tag."""
    v = int(tag_hex[:14], 16)  # 56 bits
    return v >> 40, (v & ((1 << 40) - 1)).to_bytes(REC_BYTES, "big")


def list_name(campaign: str | None) -> str:
    """The global list, or a campaign's."""
    from dialguard.numbers import short_hash
    return GLOBAL if not campaign else "c" + short_hash(campaign)


def false_positive_bound(entries: int) -> float:
    return (entries / BUCKETS) / float(1 << 40)


class DncStore:
    def __init__(self, redis, keys):
        self.redis = redis
        self.keys = keys

    def list_name(self, campaign: str | None) -> str:
        return list_name(campaign)

    def bucket_key(self, list_name: str, bucket: int) -> str:
        return self.keys.dnc_bucket(list_name, bucket)

    def count_key(self, list_name: str) -> str:
        return self.keys.dnc_count(list_name)

    async def _apply(self, op: str, list_name: str, tags: Iterable[str], batch: int = 512) -> int:
        groups: dict[int, list[bytes]] = defaultdict(list)
        for t in tags:
            b, rec = fingerprint(t)
            groups[b].append(rec)
        changed = 0
        items = list(groups.items())
        for i in range(0, len(items), batch):
            async with self.redis.pipeline(transaction=False) as pipe:
                for b, recs in items[i:i + batch]:
                    pipe.evalsha(DNC.sha, 2, self.bucket_key(list_name, b), self.count_key(list_name),
                                 op, b"".join(recs))
                try:
                    res = await pipe.execute()
                except Exception as exc:  # NOSCRIPT after a restart: load and redo (idempotent)
                    if "NOSCRIPT" not in str(exc):
                        raise
                    await DNC.load(self.redis)
                    async with self.redis.pipeline(transaction=False) as p2:
                        for b, recs in items[i:i + batch]:
                            p2.evalsha(DNC.sha, 2, self.bucket_key(list_name, b), self.count_key(list_name),
                                       op, b"".join(recs))
                        res = await p2.execute()
            changed += sum(int(x) for x in res)
        return changed

    async def add(self, list_name: str, tags: Iterable[str]) -> int:
        return await self._apply("add", list_name, tags)

    async def remove(self, list_name: str, tags: Iterable[str]) -> int:
        return await self._apply("remove", list_name, tags)

    async def contains(self, list_name: str, tag: str) -> bool:
        b, rec = fingerprint(tag)
        s = await self.redis.get(self.bucket_key(list_name, b)) or b""
        return any(s[i:i + REC_BYTES] == rec for i in range(0, len(s), REC_BYTES))

    async def count(self, list_name: str) -> int:
        return int(await self.redis.get(self.count_key(list_name)) or 0)


# -- CSV import ---------------------------------------------------------------------

@dataclass
class ImportReport:
    rows: int = 0
    valid: int = 0
    added: int = 0
    duplicates: int = 0
    rejected: int = 0
    resumed_from: int = 0
    rejects_path: str | None = None
    samples: list[tuple[int, str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "samples"} | {
            "rejected_samples": [{"line": ln, "value": v, "why": w} for ln, v, w in self.samples]}


def read_numbers(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, raw value) per data row: the `number`/`phone` column, or the first.

    A first row with no digit in it is a header. Undecodable bytes become U+FFFD,
    so such a row is rejected as unparseable rather than stopping the import.
    """
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        col = 0
        for row in reader:
            line = reader.line_num
            if line == 1 and row:
                lowered = [c.strip().lower() for c in row]
                named = [n for n in ("number", "phone", "msisdn", "e164", "tel") if n in lowered]
                if named:
                    col = lowered.index(named[0])
                    continue
                if not any(ch.isdigit() for ch in row[0]):
                    continue
            yield line, (row[col] if len(row) > col else "")


def _normalize_chunk(args) -> tuple[list[str], list[tuple[int, str, str]]]:
    """Worker: normalize a chunk of rows, hash the valid ones (no plaintext leaves)."""
    rows, region, secret = args
    from dialguard.keys import Keys
    from dialguard.numbers import parse_number

    keys = Keys("x", secret)
    tags, bad = [], []
    for line, raw in rows:
        info = parse_number(raw, region)
        if info.problem:
            bad.append((line, raw[:64], info.problem))
        else:
            tags.append(keys.number_tag(info.e164))
    return tags, bad


def _chunks(it: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for x in it:
        chunk.append(x)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def import_csv(store: DncStore, list_name: str, path: Path, region: str, secret: bytes, *,
                     rejects_path: Path | None = None, checkpoint: Path | None = None,
                     chunk_rows: int = 200_000, workers: int | None = None,
                     progress: Callable[[int], None] | None = None) -> ImportReport:
    """Import a CSV: normalized, invalid rows reported (line, value, why), resumable.

    The checkpoint file records how many data rows are fully stored; a rerun
    skips them. Adds are idempotent, so a chunk cut short is simply redone.
    """
    import asyncio
    from concurrent.futures import ProcessPoolExecutor

    report = ImportReport(rejects_path=str(rejects_path) if rejects_path else None)
    done = 0
    if checkpoint and checkpoint.exists():
        state = json.loads(checkpoint.read_text() or "{}")
        if state.get("file") == str(path) and state.get("list") == list_name:
            done = int(state.get("rows", 0))
            report.resumed_from = done
    rej = open(rejects_path, "a" if done else "w", newline="") if rejects_path else None
    rej_writer = csv.writer(rej) if rej else None
    if rej_writer and not done:
        rej_writer.writerow(["line", "value", "why"])
    loop = asyncio.get_running_loop()
    workers = workers or max(1, (os.cpu_count() or 2))
    try:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows_iter = read_numbers(path)
            skipped = 0
            for _ in range(done):
                if next(rows_iter, None) is None:
                    break
                skipped += 1
            report.rows = skipped
            pending = []
            for chunk in _chunks(rows_iter, chunk_rows):
                sub = [chunk[i::workers] for i in range(workers)]
                pending = [loop.run_in_executor(pool, _normalize_chunk, (s, region, secret)) for s in sub if s]
                results = await asyncio.gather(*pending)
                tags = [t for r in results for t in r[0]]
                bad = sorted(b for r in results for b in r[1])
                added = await store.add(list_name, tags)
                report.rows += len(chunk)
                report.valid += len(tags)
                report.added += added
                report.duplicates += len(tags) - added
                report.rejected += len(bad)
                if rej_writer:
                    rej_writer.writerows(bad)
                    rej.flush()
                for b in bad:
                    if len(report.samples) < 20:
                        report.samples.append(b)
                if checkpoint:
                    checkpoint.write_text(json.dumps({"file": str(path), "list": list_name, "rows": report.rows}))
                if progress:
                    progress(report.rows)
    finally:
        if rej:
            rej.close()
    if checkpoint and checkpoint.exists():
        checkpoint.unlink()
    return report


def count_rows(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b""))

