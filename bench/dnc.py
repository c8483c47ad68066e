"""DNC import at scale: `dialguard dnc import`'s full path on a CSV of 10 million
numbers, Redis only and with the PostgreSQL sink, side by side with
redis-benchmark's pipelined SADD rate (the ceiling) in one run, and the Redis
memory each imported number takes.

    .venv/bin/python bench/dnc.py [--rows 10000000] [--no-pg | --pg-only] [--workers N] [--chunk-rows N] [--ahead N]
                                  [--existing N]

Each import goes into a fresh list with its own CSV of `--rows` distinct
numbers of the region CN (70 % E.164, 30 % national digits, one row in 1,000
garbage that must be rejected). The path measured is import_csv's: CSV parse,
normalization (the exact fast path, phonenumbers for the rest), HMAC, bucket
merge into Redis and, with PostgreSQL, AES-GCM sealing and COPY into
dnc_blocks (dnc_entries before sql/226; DIALGUARD_PG_DSN; the bench's lists are
deleted afterwards), with the WAL bytes PostgreSQL wrote per number (pg_stat_wal).
Memory is INFO used_memory before and after, per entry stored. Next to the
wall-clock rate it prints the CPU each process spent per number (import main
process, its workers, redis-server, the PostgreSQL backend): on a shared
machine the rate moves with the load, the CPU per number much less, and
cores / CPU per number is what an idle machine could reach.
With --existing N the PostgreSQL list holds N numbers before the import (random
hashes in blocks of a few hundred a hash range, as 1,000,000-row batches of two
workers leave them, written straight by COPY; their sealed parts are never
opened): what each batch's check against the list at rest costs at that size.
The time of each batch is printed (the first loads what the import keeps of the
list), and the import process's peak memory.
Targets (issue 21): >= 250,000 numbers/s with both sinks, <= 6.5 bytes per number.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import redis.asyncio as aioredis

from dialguard.config import Settings, redacted_url
from dialguard.dnc import DncDb, DncDbUnavailable, DncStore, false_positive_bound, import_csv
from dialguard.decision.keys import Keys
from dialguard.simulate import _drop_namespace

TARGET_RATE = 250_000
TARGET_BYTES = 6.5
TICK = os.sysconf("SC_CLK_TCK")


async def used_memory(r) -> int:
    await asyncio.sleep(0.2)
    return int((await r.info("memory"))["used_memory"])


async def redis_cpu(r) -> float:
    info = await r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def proc_cpu(pid: int) -> float:
    """utime + stime of a local process, seconds (0 when it is not on this machine)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def own_cpu() -> tuple[float, float]:
    """(this process, its reaped children) CPU seconds."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, ch.ru_utime + ch.ru_stime


async def wal(db) -> tuple[int, int, int] | None:
    """(WAL bytes, full-page images, records) the server wrote so far (pg_stat_wal), or None."""
    try:
        row = await (await db.conn.execute("select wal_bytes, wal_fpi, wal_records from pg_stat_wal")).fetchone()
        return int(row[0]), int(row[1]), int(row[2])
    except Exception:  # noqa: BLE001  an older server, no privilege: the bench goes on without it
        return None


async def populate(db, list_: str, n: int) -> None:
    """n synthetic numbers at rest in list_ (--existing): random 16-byte hashes, by
    pseudo-batches of 1,000,000 in two blocks a hash range each, COPY as add_blocks
    writes them; a dummy sealed part (never opened: the bench's numbers hash elsewhere)."""
    import struct

    from dnc_check import blocks_of  # (bench/, this script's directory)

    from dialguard.dnc import PGCOPY_HEADER, PGCOPY_TRAILER

    lb, sb, sealed = list_.encode(), b"bench-existing", bytes(28)
    head = struct.pack(">hi", 6, len(lb)) + lb
    tail = struct.pack(">i", len(sealed)) + sealed + struct.pack(">i", len(sb)) + sb
    done = 0
    while done < n:
        batch = min(1_000_000, n - done)
        rows = [head + struct.pack(">iiiii", 4, r, 4, len(h) // 16, len(h)) + h + tail for r, h in blocks_of(batch)]
        async with db.conn.transaction():
            async with db.conn.cursor() as cur:
                async with cur.copy("copy dnc_blocks (list, hash_range, entries, hashes, sealed, source) "
                                    "from stdin (format binary)") as cp:
                    await cp.write(PGCOPY_HEADER)
                    for i in range(0, len(rows), 512):
                        await cp.write(b"".join(rows[i:i + 512]))
                    await cp.write(PGCOPY_TRAILER)
        done += batch


def make_csv(path: Path, rows: int, prefix: str, seed: int) -> None:
    """`rows` distinct numbers +86<prefix><8 digits> (an affine permutation of 0..10^8-1)."""
    mult, add = 7_654_321, seed * 1_000_003  # mult is coprime with 10^8
    with open(path, "w") as f:
        f.write("number\n")
        buf = []
        for i in range(rows):
            if i % 1000 == 999:
                buf.append("garbage\n")
                continue
            d = f"{prefix}{(i * mult + add) % 100_000_000:08d}"
            buf.append(f"+86{d}\n" if i % 10 < 7 else f"{d}\n")
            if len(buf) >= 100_000:
                f.write("".join(buf))
                buf = []
        f.write("".join(buf))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", "--csv-rows", "--size", type=int, default=10_000_000, help="rows of each import CSV")
    ap.add_argument("--no-pg", action="store_true", help="skip the import with the PostgreSQL sink")
    ap.add_argument("--pg-only", action="store_true", help="only the import with both sinks")
    ap.add_argument("--workers", type=int, default=None, help="normalizing processes (default: the CPUs)")
    ap.add_argument("--chunk-rows", type=int, default=None, help="rows per batch (default: import_csv's)")
    ap.add_argument("--ahead", type=int, default=None,
                    help="chunks normalized ahead of the one being stored (default: import_csv's)")
    ap.add_argument("--existing", type=int, default=0,
                    help="numbers the PostgreSQL list holds before the import (synthetic blocks)")
    args = ap.parse_args()
    s = Settings()
    r = aioredis.from_url(s.redis_url, socket_timeout=60)  # (a loaded machine: the old check held the loop > 5 s)
    prefix = f"dgbench-dnc:{uuid.uuid4().hex[:6]}"
    keys = Keys(prefix, s.hash_secret)
    store = DncStore(r, keys)
    load = os.getloadavg()[0]
    print(f"dialguard DNC import benchmark: Redis {redacted_url(s.redis_url)}, {os.cpu_count()} cores, "
          f"load average {load:.2f} before the run, {args.rows:,} rows per import")
    tmp = Path(tempfile.mkdtemp(prefix="dgdnc-"))
    results = []
    try:
        db, db_list = None, f"bench-{uuid.uuid4().hex[:8]}"
        if not args.no_pg:
            try:
                db = await DncDb.open(s.pg_dsn)
            except DncDbUnavailable as exc:
                print(f"PostgreSQL sink: skipped ({exc})")
        try:
            runs = [] if args.pg_only else [("Redis only (--no-db)", None, "139", "r1")]
            if db is not None:
                runs.append(("Redis + PostgreSQL", db, "137", "r2"))
            for label, sink, digits, lst in runs:
                path = tmp / f"{digits}.csv"
                make_csv(path, args.rows, digits, int(digits))
                if sink is not None and args.existing:
                    t0 = time.perf_counter()
                    await populate(sink, db_list, args.existing)
                    await sink.conn.execute("vacuum analyze dnc_blocks")
                    print(f"  the list holds {args.existing:,} numbers before the import ({await sink.count(db_list):,} "
                          f"at rest; written in {time.perf_counter() - t0:.0f}s, not counted)", flush=True)
                    label += f" into {args.existing:,}"
                marks = []
                before = await used_memory(r)
                pg_pid = (await (await sink.conn.execute("select pg_backend_pid()")).fetchone())[0] if sink else 0
                w0 = await wal(sink) if sink else None
                c0 = (*own_cpu(), await redis_cpu(r), proc_cpu(pg_pid))
                t0 = time.perf_counter()
                kw = {"chunk_rows": args.chunk_rows} if args.chunk_rows else {}
                if args.ahead:  # (an older tree's import_csv, run through PYTHONPATH, has no such argument)
                    kw["ahead"] = args.ahead
                rep = await import_csv(store, lst, path, "CN", s.hash_secret, rejects_path=tmp / f"{lst}.rejects.csv",
                                       db=sink, db_name=db_list, source="bench", workers=args.workers,
                                       progress=lambda n: marks.append(time.perf_counter()), **kw)
                wall = time.perf_counter() - t0
                c1 = (*own_cpu(), await redis_cpu(r), proc_cpu(pg_pid))
                w1 = await wal(sink) if sink else None
                after = await used_memory(r)
                count = await store.count(lst)
                cpu = [(b - a) / rep.rows * 1e6 for a, b in zip(c0, c1)]
                per_entry = (after - before) / max(count, 1)
                rate = rep.rows / wall
                results.append((label, rate, per_entry, sum(cpu)))
                print(f"{label}: {rate:,.0f} numbers/s ({rep.rows:,} rows in {wall:.1f}s: {rep.added:,} added, "
                      f"{rep.rejected:,} rejected, {rep.stored:,} rows to PostgreSQL)", flush=True)
                print(f"  Redis memory: {per_entry:.2f} bytes per entry ({count:,} entries, INFO used_memory "
                      f"{before:,} -> {after:,}); false-positive bound {false_positive_bound(count):.2e} per lookup")
                print(f"  CPU per number: import {cpu[0]:.2f} + workers {cpu[1]:.2f} + redis-server {cpu[2]:.2f}"
                      + (f" + PostgreSQL backend {cpu[3]:.2f}" if sink else "") + f" = {sum(cpu):.2f} us "
                      f"(on {os.cpu_count()} idle cores: at most {os.cpu_count() / sum(cpu) * 1e6:,.0f} numbers/s)",
                      flush=True)
                steps = [b - a for a, b in zip([t0] + marks, marks)]
                if len(steps) > 1:
                    print(f"  batches: first {steps[0]:.2f}s, then {sum(steps[1:]) / len(steps[1:]):.2f}s on average "
                          f"(min {min(steps[1:]):.2f}, max {max(steps[1:]):.2f}, last {steps[-1]:.2f})", flush=True)
                elif steps:
                    print(f"  batch: {steps[0]:.2f}s", flush=True)
                if w0 and w1:
                    print(f"  PostgreSQL WAL (pg_stat_wal, the whole server): {(w1[0] - w0[0]) / rep.rows:,.1f} bytes "
                          f"per number ({(w1[0] - w0[0]) / 1e6:,.0f} MB, {w1[1] - w0[1]:,} full-page images, "
                          f"{w1[2] - w0[2]:,} records)", flush=True)
                print(f"  peak memory so far: import process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f}"
                      f" MB, largest worker {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:,.0f} MB",
                      flush=True)
                path.unlink()
                await _drop_namespace(r, f"{prefix}:{{dnc}}:{lst}")
        finally:
            if db is not None:
                await db.conn.execute("delete from dnc_entries where list = %s", (db_list,))
                if (await (await db.conn.execute("select to_regclass('dnc_blocks')")).fetchone())[0]:
                    await db.conn.execute("delete from dnc_blocks where list = %s", (db_list,))
                await db.close()

        # the ceiling: redis-benchmark pipelined SADD, same run
        u = urlparse(s.redis_url)
        from dialguard.config import redis_auth

        user, password = redis_auth(s.redis_url)  # the dev stack has no password-less user
        auth = (["--user", user] if user else []) + (["-a", password] if password else [])
        out = subprocess.run(["redis-benchmark", "-h", u.hostname, "-p", str(u.port), *auth, "-n", "2000000",
                              "-P", "64", "-r", "100000000", "-q", "--csv", "SADD", f"{prefix}:sadd", "__rand_int__"],
                             capture_output=True, text=True, timeout=300).stdout
        row = [x for x in out.splitlines() if x.startswith('"SADD')][-1]
        sadd = float(row.rsplit(",", 7)[1].strip('"'))
        print(f"redis-benchmark SADD -P 64 (ceiling): {sadd:,.0f} ops/s")
        print("side by side: " + "; ".join(
            f"{label} {rate:,.0f}/s = {rate / sadd:.3f} of SADD, {rate / TARGET_RATE:.2f} of the "
            f"{TARGET_RATE:,}/s target, {pe:.2f} bytes/entry (target <= {TARGET_BYTES})"
            for label, rate, pe, _ in results))
        print(f"load average after the run: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        await _drop_namespace(r, prefix)
        await r.aclose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
