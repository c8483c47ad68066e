"""DNC at scale: Redis bytes per entry at 10M entries, CSV import rate with and
without the PostgreSQL sink, and redis-benchmark's pipelined SADD rate as the
ceiling, in one run.

    .venv/bin/python bench/dnc.py [--entries 10000000] [--csv-rows 500000] [--no-pg]

Memory is INFO used_memory before and after loading `--entries` fingerprints
(synthetic keyed hashes: the store never sees a number, only its HMAC). The
import rate is the full path of `dialguard dnc import`: CSV parse,
phonenumbers normalization, HMAC, bucket merge, and with PostgreSQL also
AES-GCM sealing and COPY into dnc_entries (DIALGUARD_PG_DSN, a list of the
bench's own, deleted afterwards). Both imports go into the list that already
holds `--entries` fingerprints (Redis buckets at 10M scale), each with its own
CSV of `--csv-rows` distinct numbers; a 10M-row import takes `--csv-rows
10000000` (about 10M / the rate printed). Target: <= 8 bytes per entry.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
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


async def used_memory(r) -> int:
    await asyncio.sleep(0.2)
    return int((await r.info("memory"))["used_memory"])


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=10_000_000)
    ap.add_argument("--csv-rows", "--size", type=int, default=500_000, help="rows of each import CSV")
    ap.add_argument("--no-pg", action="store_true", help="skip the import with the PostgreSQL sink")
    args = ap.parse_args()
    s = Settings()
    r = aioredis.from_url(s.redis_url)
    prefix = f"dgbench-dnc:{uuid.uuid4().hex[:6]}"
    keys = Keys(prefix, s.hash_secret)
    store = DncStore(r, keys)
    print(f"dialguard DNC benchmark: Redis {redacted_url(s.redis_url)}, {os.cpu_count()} cores")
    try:
        # 1. memory at scale
        before = await used_memory(r)
        t0 = time.perf_counter()
        chunk = 1_000_000
        loaded = 0
        while loaded < args.entries:
            n = min(chunk, args.entries - loaded)
            tags = [os.urandom(7).hex() for _ in range(n)]
            await store.add("g", tags)
            loaded += n
            print(f"  loaded {loaded:,}", file=sys.stderr, flush=True)
        load_s = time.perf_counter() - t0
        after = await used_memory(r)
        count = await store.count("g")
        per_entry = (after - before) / count
        print(f"entries stored:                {count:,} (bulk load {count / load_s:,.0f}/s)")
        print(f"Redis memory per entry:        {per_entry:.2f} bytes (INFO used_memory {before:,} -> {after:,})")
        print(f"false-positive bound:          {false_positive_bound(count):.2e} per lookup")

        # 2. the full import path on CSVs with some garbage rows, into the list at 10M scale
        tmp = Path(tempfile.mkdtemp(prefix="dgdnc-"))

        def make_csv(name: str, seed: int, prefix_digits: str) -> Path:
            p = tmp / name
            rnd = random.Random(seed)
            with open(p, "w") as f:
                f.write("number\n")
                for i in range(args.csv_rows):
                    f.write("garbage\n" if i % 1000 == 0 else f"+86{prefix_digits}{rnd.randrange(10**8):08d}\n")
            return p

        rates = {}
        db, db_list, db_rows = None, f"bench-{uuid.uuid4().hex[:8]}", None
        if not args.no_pg:
            try:
                db = await DncDb.open(s.pg_dsn)
                db_rows = (await (await db.conn.execute("select count(*) from dnc_entries")).fetchone())[0]
            except DncDbUnavailable as exc:
                print(f"PostgreSQL sink: skipped ({exc})")
        try:
            for label, sink, digits in (("Redis only (--no-db)", None, "139"), ("Redis + PostgreSQL", db, "137")):
                if label != "Redis only (--no-db)" and sink is None:
                    continue
                path = make_csv(f"{digits}.csv", int(digits), digits)
                t0 = time.perf_counter()
                rep = await import_csv(store, "g", path, "CN", s.hash_secret, rejects_path=tmp / "rejects.csv",
                                       db=sink, db_name=db_list, source="bench")
                imp_s = time.perf_counter() - t0
                rates[label] = rep.rows / imp_s
                print(f"CSV import, {label + ':':22s} {rates[label]:,.0f} rows/s ({rep.rows:,} rows, "
                      f"{rep.rejected:,} rejected, {rep.stored:,} rows to PostgreSQL, {imp_s:.1f}s)", flush=True)
                path.unlink()
        finally:
            if db is not None:
                await db.conn.execute("delete from dnc_entries where list = %s", (db_list,))
                await db.close()
        if db_rows is not None:
            print(f"  (dnc_entries held {db_rows:,} rows before; the Redis list held {count:,} entries)")
        shutil.rmtree(tmp, ignore_errors=True)

        # 3. ceiling: redis-benchmark pipelined SADD
        u = urlparse(s.redis_url)
        from dialguard.config import redis_auth

        user, password = redis_auth(s.redis_url)  # the dev stack has no password-less user
        auth = (["--user", user] if user else []) + (["-a", password] if password else [])
        out = subprocess.run(["redis-benchmark", "-h", u.hostname, "-p", str(u.port), *auth, "-n", "1000000", "-P", "64",
                              "-r", "100000000", "-q", "--csv", "SADD", f"{prefix}:sadd", "__rand_int__"],
                             capture_output=True, text=True, timeout=300).stdout
        row = [x for x in out.splitlines() if x.startswith('"SADD')][-1]
        sadd = float(row.rsplit(",", 7)[1].strip('"'))
        print(f"redis-benchmark SADD -P 64:    {sadd:,.0f} ops/s")
        print(f"bytes/entry {per_entry:.2f} (target <= 8); import rows/s vs SADD ceiling: "
              + ", ".join(f"{k} {v:,.0f} ({v / sadd:.3f})" for k, v in rates.items()))
    finally:
        await _drop_namespace(r, prefix)
        await r.aclose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
