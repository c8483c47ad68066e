"""DNC lists at rest (dnc_entries) on a real PostgreSQL and Redis: import into
both, kill -9 mid-import and resume, export round trip, wrong data key, services
down, and `counters rebuild` after FLUSHALL bringing every entry back."""

from __future__ import annotations

import base64
import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
import redis as syncredis

import cli_inproc
from dialguard.audit import migrate as m
from dialguard.audit.db import sql_dirs
from fakes.pg import free_port
from dialguard.config import Settings
from dialguard.dnc import REC_BYTES, DncDb, DncStore, import_csv, list_name, split16
from dialguard.decision.keys import Keys
from dialguard.simulate import _drop_namespace

SERVICE = "dg_service"
NOW = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)  # Mon 10:00 Shanghai


@pytest.fixture(scope="module")
def dnc_db(cluster):
    """A migrated database of the module's own PostgreSQL cluster; the service login's DSN."""
    cluster.create_db("dgdnc")
    with psycopg.connect(cluster.dsn("dgdnc"), autocommit=True) as conn:
        m.migrate(conn, sql_dirs(), writers=[SERVICE])
    return cluster.dsn("dgdnc", SERVICE)


@pytest.fixture
def ns(settings, dnc_db):
    """A key prefix and a campaign list of the test's own; both dropped afterwards."""
    prefix = f"dgdncx:{uuid.uuid4().hex[:8]}"
    camp = f"camp-{uuid.uuid4().hex[:6]}"
    yield prefix, camp
    r = syncredis.Redis.from_url(settings.redis_url)
    for k in r.scan_iter(match=f"{prefix}:*", count=1000):
        r.delete(k)
    r.close()
    with psycopg.connect(dnc_db, autocommit=True) as conn:
        conn.execute("delete from dnc_entries where list = %s", (camp,))
        conn.execute("delete from dnc_blocks where list = %s", (camp,))


def cli_env(settings, prefix, dsn, **extra) -> dict:
    return {**os.environ, "DIALGUARD_KEY_PREFIX": prefix, "DIALGUARD_PG_DSN": dsn,
            "DIALGUARD_REDIS_URL": settings.redis_url, "DIALGUARD_RULES": "cn-default", **extra}


def cli(env, *args, timeout=300):
    """`dialguard ARGS`: `dnc import` in a process of its own (its workers are forked
    processes, not to be forked from the test process), the rest in this process
    (tests/cli_inproc.py)."""
    if args[:2] == ("dnc", "import"):
        return subprocess.run([sys.executable, "-m", "dialguard.cli", *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
    return cli_inproc.run(args, env=env, timeout=timeout)


def write_list(path: Path, n: int) -> tuple[set[str], dict[int, str]]:
    """n data rows after a header: national and international formats, duplicates,
    garbage. Returns the distinct E.164 expected and {line: value} of the rows to reject."""
    expected: set[str] = set()
    bad: dict[int, str] = {}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "phone"])
        for i in range(n):
            line = i + 2
            if i % 97 == 13:
                v = "garbage-" + "abcdefghij"[i % 10]
                bad[line] = v
            elif i % 211 == 17:
                v = "110"  # emergency short code: never a list entry
                bad[line] = v
            elif i % 101 == 5 and i > 200:
                j = i - 150
                v = f"+86 138{j:08d}"  # an earlier row again, written another way
                expected.add(f"+86138{j:08d}")
            else:
                v = f"138{i:08d}" if i % 2 else f"+86 138 {i // 10000:04d} {i % 10000:04d}"
                expected.add(f"+86138{i:08d}")
            w.writerow([f"n{i}", v])
    return expected, bad


def redis_list_state(settings, prefix, campaign) -> tuple[int, int, int]:
    """(count key, records in buckets, distinct records in buckets) of a list."""
    r = syncredis.Redis.from_url(settings.redis_url)
    ln = list_name(campaign)
    base = f"{prefix}:{{dnc}}:{ln}:"
    count = int(r.get(base + "count") or 0)
    recs = distinct = 0
    for k in r.scan_iter(match=base + "*", count=1000):
        if k.endswith(b":count"):
            continue
        v = r.get(k)
        assert len(v) % REC_BYTES == 0
        rs = [v[i:i + REC_BYTES] for i in range(0, len(v), REC_BYTES)]
        recs += len(rs)
        distinct += len(set(rs))
    r.close()
    return count, recs, distinct


AT_REST = ("select number_hash as h from dnc_entries where list = %(l)s union all "
           "select substring(hashes from 16 * i + 1 for 16) from dnc_blocks, generate_series(0, entries - 1) i "
           "where list = %(l)s")  # every keyed hash of a list at rest, one row each, single entries and blocks


def pg_state(dsn, campaign) -> tuple[int, int]:
    """(hashes at rest, distinct hashes at rest) of a list."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"select count(*), count(distinct h) from ({AT_REST}) x", {"l": campaign}).fetchone()


def exported(env, campaign, *extra) -> list[str]:
    p = cli(env, "dnc", "export", "--list", campaign, *extra)
    assert p.returncode == 0, p.stderr
    rows = list(csv.reader(p.stdout.splitlines()))
    return [r[0] for r in rows[1:]]


def test_import_killed_midway_then_resumed(settings, dnc_db, ns, tmp_path):
    prefix, camp = ns
    env = cli_env(settings, prefix, dnc_db)
    path = tmp_path / "big.csv"
    expected, bad = write_list(path, 60_000)
    rejects = tmp_path / "rejects.csv"
    args = [sys.executable, "-m", "dialguard.cli", "dnc", "import", str(path), "--campaign", camp,
            "--rejects", str(rejects), "--chunk-rows", "3000", "--json"]
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    r = syncredis.Redis.from_url(settings.redis_url)
    count_key = f"{prefix}:{{dnc}}:{list_name(camp)}:count"
    deadline = time.monotonic() + 120
    try:
        while int(r.get(count_key) or 0) < 15_000:  # about 5 of 20 chunks stored
            assert p.poll() is None, f"import ended before it could be killed: {p.communicate()}"
            assert time.monotonic() < deadline, "import never reached 15,000 entries"
            time.sleep(0.005)
        os.killpg(p.pid, signal.SIGKILL)  # the CLI and its normalizing workers
    finally:
        p.wait(timeout=30)
    seen = int(r.get(count_key))
    r.close()
    ckpt = path.with_suffix(".csv.dnc-import")
    assert ckpt.exists(), "a killed import leaves its checkpoint"
    done = json.loads(ckpt.read_text())["rows"]
    assert 0 < done < 60_000 and seen < len(expected)

    p2 = cli(env, "dnc", "import", str(path), "--campaign", camp, "--rejects", str(rejects),
             "--chunk-rows", "3000", "--json")
    assert p2.returncode == 0, p2.stderr
    rep = json.loads(p2.stdout)
    assert rep["resumed_from"] == done and rep["rows"] == 60_000 and rep["rejected"] == len(bad)
    assert not ckpt.exists()
    # exact count, no duplicate fingerprint in Redis, no duplicate row in PostgreSQL
    count, recs, distinct = redis_list_state(settings, prefix, camp)
    assert count == recs == distinct == len(expected)
    assert pg_state(dnc_db, camp) == (len(expected), len(expected))
    # the rejects report: every bad row once, with its line, value and why
    with open(rejects, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["line", "value", "why"]
    got = {int(ln): (v, why) for ln, v, why in rows[1:]}
    assert len(rows) - 1 == len(got) == len(bad)
    assert {ln: v for ln, (v, _) in got.items()} == bad
    assert all(why for _, why in got.values())
    assert "unparseable" in got[15][1]                     # row 13, on line 15
    assert any("emergency" in why or "short" in why or "invalid" in why for v, why in got.values() if v == "110")
    # round trip: the list at rest is the set of numbers imported
    assert set(exported(env, camp)) == expected


def test_export_round_trip_hashed_and_out_file(settings, dnc_db, ns, tmp_path):
    prefix, camp = ns
    env = cli_env(settings, prefix, dnc_db)
    path = tmp_path / "l.csv"
    path.write_text("number\n13800138000\n+86 138 0013 8001\n008613800138002\ngarbage\n13800138000\n")
    p = cli(env, "dnc", "import", str(path), "--campaign", camp, "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert (rep["added"], rep["stored"], rep["rejected"], rep["duplicates"]) == (3, 3, 1, 1)
    assert rep["rejected_samples"] == [{"line": 5, "value": "garbage", "why": rep["rejected_samples"][0]["why"]}]
    nums = {"+8613800138000", "+8613800138001", "+8613800138002"}
    assert set(exported(env, camp)) == nums
    keys = Keys(prefix, settings.hash_secret)
    assert set(exported(env, camp, "--hashed")) == {keys.number_tag(n) for n in nums}
    out = tmp_path / "out.csv"
    p = cli(env, "dnc", "export", "--list", camp, "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"list": camp, "entries": 3, "written": 3, "unreadable": 0, "hashed": False,
                                    "out": str(out)}
    assert out.read_text().splitlines()[0] == "number" and set(out.read_text().split()[1:]) == nums
    assert not out.with_name("out.csv.part").exists()
    # the columns hold no plaintext: 16-byte keyed hashes, the sealed numbers
    with psycopg.connect(dnc_db) as conn:
        rows = conn.execute("select hashes, sealed, entries, source from dnc_blocks where list = %s", (camp,)).fetchall()
        assert sum(r[2] for r in rows) == 3 and {r[3] for r in rows} == {"l.csv"}
        assert {h.hex() for r in rows for h in split16(r[0])} == {keys.number_tag(n) for n in nums}
        for hashes, sealed, _, _ in rows:
            assert not any(n.encode() in hashes + sealed or n[3:].encode() in hashes + sealed for n in nums)
        assert conn.execute("select count(*) from dnc_entries where list = %s", (camp,)).fetchone()[0] == 0
    # an empty list exports a header and exits 0
    assert exported(env, camp + "-none") == []


def test_export_with_the_wrong_key_counts_unreadable_rows(settings, dnc_db, ns, tmp_path):
    prefix, camp = ns
    env = cli_env(settings, prefix, dnc_db)
    path = tmp_path / "l.csv"
    path.write_text("13800138000\n13800138001\n")
    assert cli(env, "dnc", "import", str(path), "--campaign", camp).returncode == 0
    other = base64.b64encode(os.urandom(32)).decode()
    out = tmp_path / "x.csv"
    p = cli({**env, "DIALGUARD_DATA_KEY": other}, "dnc", "export", "--list", camp, "--out", str(out), "--json")
    assert p.returncode == 2
    assert "2 of 2 entries could not be opened with this data key" in p.stderr and "--hashed" in p.stderr
    assert json.loads(p.stdout)["unreadable"] == 2 and out.read_text().splitlines() == ["number"]
    # --hashed needs no key
    assert len(exported({**env, "DIALGUARD_DATA_KEY": other}, camp, "--hashed")) == 2
    p = cli({**env, "DIALGUARD_DATA_KEY": "not base64 of 32 bytes"}, "dnc", "export", "--list", camp)
    assert p.returncode == 2 and "DIALGUARD_DATA_KEY" in p.stderr
    p = cli(env, "dnc", "export", "--list", camp, "--json")
    assert p.returncode == 2 and "--out" in p.stderr


def test_postgresql_unreachable_or_not_migrated(settings, cluster, dnc_db, ns, tmp_path):
    prefix, camp = ns
    path = tmp_path / "l.csv"
    path.write_text("13800138000\n13800138001\n")
    down = cli_env(settings, prefix, f"postgresql://{SERVICE}@127.0.0.1:{free_port()}/dgdnc")
    p = cli(down, "dnc", "import", str(path), "--campaign", camp)
    assert p.returncode == 3 and "PostgreSQL unreachable" in p.stderr and "--no-db" in p.stderr
    assert redis_list_state(settings, prefix, camp)[0] == 0  # refused before writing anything
    for args in (["dnc", "export", "--list", camp], ["dnc", "count", "--campaign", camp, "--at-rest"]):
        p = cli(down, *args)
        assert p.returncode == 3 and "PostgreSQL unreachable" in p.stderr, args
    p = cli(down, "dnc", "add", "13800138005", "--campaign", camp)
    assert p.returncode == 3 and "listed in Redis" in p.stderr and "run the same command again" in p.stderr
    p = cli(down, "dnc", "remove", "13800138005", "--campaign", camp)
    assert p.returncode == 3 and "still stored at rest" in p.stderr
    # Redis alone on request
    p = cli(down, "dnc", "import", str(path), "--campaign", camp, "--no-db", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["added"] == 2 and json.loads(p.stdout)["stored"] == 0
    p = cli(down, "dnc", "add", "13800138006", "--campaign", camp, "--no-db", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["added"] is True
    # reachable but never migrated
    cluster.create_db("dgdnc_empty")
    bare = cli_env(settings, prefix, cluster.dsn("dgdnc_empty"))
    p = cli(bare, "dnc", "import", str(path), "--campaign", camp)
    assert p.returncode == 3 and "dnc_entries is missing" in p.stderr and "db migrate" in p.stderr


async def test_resume_of_a_redis_only_run_refills_postgresql(settings, dnc_db, ns, tmp_path):
    """A checkpoint left by a --no-db run must not let a run with PostgreSQL skip rows."""
    prefix, camp = ns
    keys = Keys(prefix, settings.hash_secret)
    import redis.asyncio as aioredis

    r = aioredis.from_url(settings.redis_url)
    store = DncStore(r, keys)
    path = tmp_path / "l.csv"
    path.write_text("".join(f"138{i:08d}\n" for i in range(2500)))
    ckpt = tmp_path / "ckpt"

    class Interrupted(Exception):
        pass

    def stop_after_first(n):
        raise Interrupted

    with pytest.raises(Interrupted):
        await import_csv(store, list_name(camp), path, "CN", settings.hash_secret, checkpoint=ckpt,
                         chunk_rows=1000, workers=1, progress=stop_after_first)
    assert json.loads(ckpt.read_text())["rows"] == 1000
    db = await DncDb.open(dnc_db)
    try:
        rep = await import_csv(store, list_name(camp), path, "CN", settings.hash_secret, checkpoint=ckpt,
                               chunk_rows=1000, workers=1, db=db, db_name=camp)
        assert rep.resumed_from == 0 and "Redis-only" in rep.resume_note
        assert rep.stored == 2500 and await db.count(camp) == 2500 and await store.count(list_name(camp)) == 2500
    finally:
        await db.close()
        await r.aclose()


async def test_import_stores_each_number_once_however_often_it_comes(settings, dnc_db, ns, tmp_path):
    """Blocks hold the new numbers only: a file imported twice adds nothing, an
    overlapping file adds its new numbers, a number twice in one batch (in two
    workers' parts) or already a single entry (`dnc add`) is stored once; counts at
    rest and in Redis stay exact. List and source names with COPY's special
    characters arrive intact."""
    from dialguard.crypto import Sealer

    prefix, _ = ns
    camp = f"camp\\{uuid.uuid4().hex[:6]}\tx"  # a backslash and a tab
    keys = Keys(prefix, settings.hash_secret)
    import redis.asyncio as aioredis

    r = aioredis.from_url(settings.redis_url)
    store = DncStore(r, keys)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("".join(f"+86138{i:08d}\n" for i in range(3000)))
    # b: 1000 of a's numbers (national form), 2000 new ones, one of them again at the end (row 1,200 of
    # 3,001: the first worker's part; the last row: the second's)
    # and two numbers listed by hand before (single entries)
    b.write_text("".join(f"138{i:08d}\n" for i in range(2000, 3000))
                 + "".join(f"138{i:08d}\n" for i in range(3000, 5000)) + "13800003200\n")
    sealer = Sealer()
    db = await DncDb.open(dnc_db)
    try:
        ra = await import_csv(store, list_name(camp), a, "CN", settings.hash_secret, chunk_rows=1000, workers=2,
                              db=db, db_name=camp, source="a\tfile\\1")
        assert ra.stored == 3000 and ra.added == 3000
        again = await import_csv(store, list_name(camp), a, "CN", settings.hash_secret, chunk_rows=700, workers=2,
                                 db=db, db_name=camp, source="a again")
        assert (again.valid, again.stored, again.added, again.duplicates) == (3000, 0, 0, 3000)
        # removed by another writer between two imports: the next import stores it again
        # (the hashes the first connection keeps of the list's blocks are not trusted blindly)
        other = await DncDb.open(dnc_db)
        try:
            assert await other.remove(camp, keys.number_tag("+8613800000042"), sealer) is True
        finally:
            await other.close()
        assert await db.count(camp) == 2999
        back = await import_csv(store, list_name(camp), a, "CN", settings.hash_secret, chunk_rows=3000, workers=2,
                                db=db, db_name=camp, source="a\tfile\\1")
        assert back.stored == 1 and await db.count(camp) == 3000
        for n in ("+8613800003500", "+8613800004999"):  # by hand first: single entries
            assert await db.add(camp, keys.number_tag(n), sealer.seal_raw(n), "cli") is True
        rb = await import_csv(store, list_name(camp), b, "CN", settings.hash_secret, chunk_rows=4000, workers=2,
                              db=db, db_name=camp, source="b")
        assert (rb.rows, rb.valid, rb.stored) == (3001, 3001, 1998)
        assert await db.count(camp) == 5000 and await store.count(list_name(camp)) == 5000
        assert pg_state(dnc_db, camp) == (5000, 5000)
        # `dnc add` of an imported number: listed already, not stored twice
        assert await db.add(camp, keys.number_tag("+8613800001234"), sealer.seal_raw("+8613800001234")) is False
        got = [(t, n) async for t, n in db.entries(camp, sealer)]
        assert sorted(got) == sorted((keys.number_tag(f"+86138{i:08d}"), f"+86138{i:08d}") for i in range(5000))
        assert {t for t, n in [x async for x in db.entries(camp)] if n is None} == {t for t, _ in got}
    finally:
        await db.close()
        await r.aclose()
    with psycopg.connect(dnc_db) as conn:
        rows = conn.execute("select source, sum(entries) from dnc_blocks where list = %s group by source "
                            "order by source", (camp,)).fetchall()
        conn.execute("delete from dnc_entries where list = %s", (camp,))
        conn.execute("delete from dnc_blocks where list = %s", (camp,))
        conn.commit()
    assert rows == [("a\tfile\\1", 3000), ("b", 1998)]


async def test_two_imports_of_overlapping_files_at_once_store_each_number_once(settings, dnc_db, ns, tmp_path):
    """Two imports into one list at the same time, over two connections, their files
    sharing half their numbers: the per-list lock makes each batch's check and write
    one step, so every number is at rest once and the count is exact."""
    import asyncio

    import redis.asyncio as aioredis

    prefix, camp = ns
    keys = Keys(prefix, settings.hash_secret)
    r = aioredis.from_url(settings.redis_url)
    store = DncStore(r, keys)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("".join(f"+86137{i:08d}\n" for i in range(0, 6000)))
    b.write_text("".join(f"137{i:08d}\n" for i in range(3000, 9000)))
    d1, d2 = await DncDb.open(dnc_db), await DncDb.open(dnc_db)
    try:
        ra, rb = await asyncio.gather(
            import_csv(store, list_name(camp), a, "CN", settings.hash_secret, chunk_rows=500, workers=1,
                       db=d1, db_name=camp, source="a"),
            import_csv(store, list_name(camp), b, "CN", settings.hash_secret, chunk_rows=500, workers=1,
                       db=d2, db_name=camp, source="b"))
        assert ra.stored + rb.stored == 9000 and ra.added + rb.added == 9000
        assert await d1.count(camp) == 9000 and pg_state(dnc_db, camp) == (9000, 9000)
        # every writer waits for the list's lock: held elsewhere, an import's batch, an add
        # and a remove wait; released, they go on
        from dialguard.crypto import Sealer
        from dialguard.dnc import list_lock_id

        sealer = Sealer()
        c = tmp_path / "c.csv"
        c.write_text("+8613799999999\n")
        with psycopg.connect(dnc_db, autocommit=True) as holder:
            holder.execute("select pg_advisory_lock(%s)", (list_lock_id(camp),))
            tasks = [asyncio.create_task(x) for x in (
                import_csv(store, list_name(camp), c, "CN", settings.hash_secret, workers=1, db=d1, db_name=camp,
                           source="c"),
                d2.remove(camp, keys.number_tag("+8613700000001"), sealer))]
            await asyncio.sleep(1.5)
            assert not any(t.done() for t in tasks) and pg_state(dnc_db, camp) == (9000, 9000)
            holder.execute("select pg_advisory_unlock(%s)", (list_lock_id(camp),))
            rc, removed = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert rc.stored == 1 and removed is True and pg_state(dnc_db, camp) == (9000, 9000)
    finally:
        await d1.close()
        await d2.close()
        await r.aclose()


async def test_a_batch_is_checked_without_a_pass_over_the_list(settings, dnc_db, ns, tmp_path, monkeypatch):
    """A small batch into a list already holding 40,000 numbers: its check reads the
    8-byte prefixes of its own hashes (dnc._hi, counted) and passes over no more
    stored hashes than SCAN times its own (_ListIndex._scan, counted; bisection
    for the rest), not over every hash the list holds (the check before stop 17:
    all 40,000 at every batch, so a 250-million-number import cost hours). What it
    cuts out stays exact: the numbers listed already, in a block or as a single
    entry, and a repeat."""
    import redis.asyncio as aioredis

    from dialguard import dnc
    from dialguard.crypto import Sealer

    prefix, camp = ns
    keys = Keys(prefix, settings.hash_secret)
    r = aioredis.from_url(settings.redis_url)
    store = DncStore(r, keys)
    big, small = tmp_path / "big.csv", tmp_path / "small.csv"
    big.write_text("".join(f"+86135{i:08d}\n" for i in range(40_000)))
    # 40 new numbers, 5 listed in blocks, 1 listed by hand, one of the new ones twice
    small.write_text("".join(f"+86136{i:08d}\n" for i in range(40)) + "".join(f"+86135{i:08d}\n" for i in range(5))
                     + "+8613499999999\n+8613600000007\n")
    db = await DncDb.open(dnc_db)
    try:
        rb = await import_csv(store, list_name(camp), big, "CN", settings.hash_secret, chunk_rows=20_000, workers=1,
                              db=db, db_name=camp, source="big")
        assert rb.stored == 40_000
        assert await db.add(camp, keys.number_tag("+8613499999999"), Sealer().seal_raw("+8613499999999")) is True
        read, passed = [], []
        real_hi = dnc._hi
        monkeypatch.setattr(dnc, "_hi", lambda blob: read.append(len(blob) // 16) or real_hi(blob))
        index = getattr(dnc, "_ListIndex", None)  # (none before stop 17)
        if index is not None:
            real_scan = index._scan
            monkeypatch.setattr(index, "_scan", lambda self, r, native: passed.append(
                (len(self.ranges[r]) + sum(map(len, self.pending[r]))) // 16) or real_scan(self, r, native))
        for run in (1, 2):  # the index kept from the import before, then a fresh connection's (loaded once)
            other = db if run == 1 else await DncDb.open(dnc_db)
            read.clear()
            passed.clear()
            rs = await import_csv(store, list_name(camp), small, "CN", settings.hash_secret, workers=1,
                                  db=other, db_name=camp, source=f"small{run}")
            assert rs.valid == 47 and rs.stored == (40 if run == 1 else 0)
            assert sum(read) <= 47, read
            assert sum(passed) <= 47 * 32, passed
            if run == 2:
                await other.close()
        assert await db.count(camp) == 40_041 and pg_state(dnc_db, camp) == (40_041, 40_041)
    finally:
        await db.close()
        await r.aclose()


async def test_many_single_entries_are_looked_up_by_the_batch(settings, dnc_db, ns, tmp_path):
    """A list with more single entries than the check reads whole (1,000 or an eighth
    of the batch; a list imported before sql/226 has one a number): the batch's
    hashes are looked up through dnc_entries' primary key, and a number listed by
    hand is still not stored again."""
    import redis.asyncio as aioredis

    from dialguard.crypto import Sealer

    prefix, camp = ns
    keys = Keys(prefix, settings.hash_secret)
    sealer = Sealer()
    r = aioredis.from_url(settings.redis_url)
    store = DncStore(r, keys)
    with psycopg.connect(dnc_db, autocommit=True) as conn:
        with conn.cursor().copy("copy dnc_entries (list, number_hash, number_enc, source) from stdin") as cp:
            for i in range(1200):
                n = f"+86133{i:08d}"
                cp.write_row((camp, bytes.fromhex(keys.number_tag(n)), sealer.seal_raw(n), "cli"))
    f = tmp_path / "f.csv"
    f.write_text("".join(f"+86133{i:08d}\n" for i in range(1195, 1205)))  # 5 listed by hand, 5 new
    db = await DncDb.open(dnc_db)
    try:
        rep = await import_csv(store, list_name(camp), f, "CN", settings.hash_secret, workers=1, db=db,
                               db_name=camp, source="f")
        assert (rep.valid, rep.stored) == (10, 5) and await db.count(camp) == 1205
        assert pg_state(dnc_db, camp) == (1205, 1205)
    finally:
        await db.close()
        await r.aclose()


def test_remove_of_an_imported_number_takes_it_out_of_its_block(settings, dnc_db, own_redis, tmp_path):
    """`dnc remove` of an imported number: off Redis, out of its block at rest (the rest
    of the block still exported and listed), not brought back by a counters rebuild;
    the last number of a block takes the block with it; without the data key that
    sealed the block it says so (exit 3) and leaves the block as it was."""
    url, r = own_redis
    prefix = "dgrm"
    camp = f"camp-{uuid.uuid4().hex[:6]}"
    env = cli_env(settings, prefix, dnc_db, DIALGUARD_REDIS_URL=url)
    path = tmp_path / "l.csv"
    nums = [f"+86139{i:08d}" for i in range(4000)]
    path.write_text("".join(n + "\n" for n in nums))
    keys = Keys(prefix, settings.hash_secret)
    try:
        assert json.loads(cli(env, "dnc", "import", str(path), "--campaign", camp, "--json").stdout)["stored"] == 4000
        # a number sharing its block: a block of that number alone is deleted without being
        # opened, so only a shared block shows the wrong key refused (4,000 numbers over
        # 1,024 hash ranges leave about 2 % of them alone in theirs)
        by_tag = {keys.number_tag(n): n for n in nums}
        with psycopg.connect(dnc_db) as conn:
            bid, n_before, hashes = conn.execute(
                "select id, entries, hashes from dnc_blocks where list = %s and entries > 1 order by id limit 1",
                (camp,)).fetchone()
        gone = by_tag[split16(hashes)[0].hex()]
        # the wrong data key: refused, nothing changed at rest
        other = base64.b64encode(os.urandom(32)).decode()
        p = cli({**env, "DIALGUARD_DATA_KEY": other}, "dnc", "remove", gone, "--campaign", camp)
        assert p.returncode == 3 and "still stored at rest" in p.stderr and "DIALGUARD_DATA_KEY" in p.stderr, p.stderr
        assert pg_state(dnc_db, camp) == (4000, 4000)
        p = cli(env, "dnc", "remove", gone, "--campaign", camp, "--json")
        assert p.returncode == 0 and json.loads(p.stdout)["unstored"] is True, p.stderr
        assert pg_state(dnc_db, camp) == (3999, 3999)
        with psycopg.connect(dnc_db) as conn:
            assert conn.execute("select entries from dnc_blocks where id = %s", (bid,)).fetchone()[0] == n_before - 1
            # a block of one number: removing it deletes the block
            one = conn.execute("select id, hashes from dnc_blocks where list = %s order by entries, id limit 1",
                               (camp,)).fetchone()
        last = [by_tag[h.hex()] for h in split16(one[1])]
        for n in last:
            assert cli(env, "dnc", "remove", n, "--campaign", camp).returncode == 0
        with psycopg.connect(dnc_db) as conn:
            assert conn.execute("select count(*) from dnc_blocks where id = %s", (one[0],)).fetchone()[0] == 0
        left = set(nums) - {gone} - set(last)
        assert set(exported(env, camp)) == left
        p = cli(env, "dnc", "count", "--campaign", camp, "--at-rest", "--json")
        assert json.loads(p.stdout) == {"list": camp, "entries": len(left), "at_rest": len(left)}
        # Redis lost: the rebuild lists the rest again, not the removed ones
        r.flushall()
        p = cli(env, "counters", "rebuild", "--json", "--force")
        assert p.returncode == 0, p.stderr
        assert json.loads(cli(env, "dnc", "count", "--campaign", camp, "--json").stdout)["entries"] == len(left)
        rows = r.mget([keys.dnc_bucket(list_name(camp), b) for b in range(1 << 16)])
        recs = {bytes([b >> 8, b & 255]) + v[i:i + REC_BYTES]
                for b, v in enumerate(rows) if v for i in range(0, len(v), REC_BYTES)}
        assert recs == {bytes.fromhex(keys.number_tag(n))[:7] for n in left}  # the removed ones not among them
    finally:
        with psycopg.connect(dnc_db, autocommit=True) as conn:
            conn.execute("delete from dnc_blocks where list = %s", (camp,))


# -- counters rebuild after FLUSHALL, on a Redis of the test's own ------------------------------------------
@pytest.fixture
def own_redis(tmp_path):
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    c = syncredis.Redis.from_url(url)
    for _ in range(200):
        try:
            c.ping()
            break
        except syncredis.ConnectionError:
            time.sleep(0.02)
    yield url, c
    c.close()
    proc.terminate()
    proc.wait(timeout=10)


async def test_rebuild_after_flushall_denies_every_imported_number(settings, dnc_db, own_redis, tmp_path):
    from dialguard.engine import Engine
    from dialguard.decision.models import DecisionRequest
    from dialguard.rules import Policy

    url, r = own_redis
    prefix = "dgrb"
    camp = f"camp-{uuid.uuid4().hex[:6]}"
    env = cli_env(settings, prefix, dnc_db, DIALGUARD_REDIS_URL=url)
    gpath, cpath = tmp_path / "g.csv", tmp_path / "c.csv"
    gnums = [f"+86138{i:08d}" for i in range(0, 6000, 3)]
    cnums = [f"+86139{i:08d}" for i in range(0, 3000, 7)]
    gpath.write_text("number\n" + "".join(n + "\n" for n in gnums) + "nonsense\n")
    cpath.write_text("".join(n[3:] + "\n" for n in cnums))
    try:
        p = cli(env, "dnc", "import", str(gpath), "--json")
        assert p.returncode == 0 and json.loads(p.stdout)["added"] == len(gnums), p.stderr
        p = cli(env, "dnc", "import", str(cpath), "--campaign", camp, "--json")
        assert p.returncode == 0 and json.loads(p.stdout)["added"] == len(cnums), p.stderr
        assert cli(env, "dnc", "add", "+8613700000001", "--json").returncode == 0  # by hand, source 'cli'
        counts = {"g": json.loads(cli(env, "dnc", "count", "--json").stdout)["entries"],
                  "c": json.loads(cli(env, "dnc", "count", "--campaign", camp, "--json").stdout)["entries"]}
        assert counts == {"g": len(gnums) + 1, "c": len(cnums)}

        r.flushall()  # Redis lost everything
        assert json.loads(cli(env, "dnc", "count", "--json").stdout)["entries"] == 0

        p = cli(env, "counters", "rebuild", "--json", "--force")
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert out["keys"]["DNC list entries (at rest)"] >= len(gnums) + 1 + len(cnums)
        assert json.loads(cli(env, "dnc", "count", "--json").stdout)["entries"] == counts["g"]
        assert json.loads(cli(env, "dnc", "count", "--campaign", camp, "--json").stdout)["entries"] == counts["c"]

        rules = tmp_path / "r.yaml"
        rules.write_text("pack: r\ndefault_region: CN\n")
        e = await Engine.create(Settings(redis_url=url, key_prefix=prefix), Policy.load(str(rules)))
        try:
            await e.set_campaign("c1")
            await e.set_campaign(camp)
            for n in gnums + ["+8613700000001"]:
                d = await e.decide(DecisionRequest(number=n, campaign="c1", agent="a"), now=NOW)
                assert d.reasons == ["dnc"], (n, d.reasons)
            for n in cnums:
                d = await e.decide(DecisionRequest(number=n, campaign=camp, agent="a"), now=NOW)
                assert d.reasons == ["dnc"], (n, d.reasons)
            assert (await e.decide(DecisionRequest(number=cnums[0], campaign="c1", agent="a"), now=NOW)).allowed
            assert (await e.decide(DecisionRequest(number="+8613800000001", campaign="c1", agent="a"),
                                   now=NOW)).allowed
        finally:
            await _drop_namespace(e.redis, prefix)
            await e.close()
    finally:
        with psycopg.connect(dnc_db, autocommit=True) as conn:
            conn.execute("delete from dnc_entries where list in (%s, 'global')", (camp,))
            conn.execute("delete from dnc_blocks where list in (%s, 'global')", (camp,))


# -- 225: number_hash and number_enc from text to bytea ------------------------------------------------------
async def test_225_migrates_text_rows_to_bytea_every_reader_still_works(settings, cluster, ns, tmp_path):
    """Rows written before 225 (hex keyed hash, base64 sealed number) become bytes
    with the same values: export opens them, remove finds them, an add of the same
    number is a duplicate, counters rebuild puts their fingerprints back, and a hash
    written as hex text by mistake is refused."""
    import shutil

    from dialguard.crypto import Sealer
    from dialguard.dnc import restore_lists

    prefix, camp = ns
    old = tmp_path / "sql"
    old.mkdir()
    for f in (f for d in sql_dirs() for f in d.glob("*.sql")):
        if int(f.name.split("_")[0]) < 225:
            shutil.copy(f, old / f.name)
    db = f"dg225_{uuid.uuid4().hex[:8]}"
    cluster.create_db(db)
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        m.migrate(conn, old, writers=[SERVICE])
    key = os.urandom(32)
    keys, sealer = Keys(prefix, settings.hash_secret), Sealer(key)
    nums = {camp: [f"+86138{i:08d}" for i in range(50)], "global": ["+8613900000001", "+14155550100"]}
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:  # as the code before 225 wrote them
        for lst, ns_ in nums.items():
            for n in ns_:
                conn.execute("insert into dnc_entries (list, number_hash, number_enc, source) values (%s, %s, %s, 'old')",
                             (lst, keys.number_tag(n), sealer.seal(n)))
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        applied = [x.version for x in m.migrate(conn, sql_dirs(), writers=[SERVICE])]
        assert applied[0] == 225 and all(v > 225 for v in applied[1:])
        types = dict(conn.execute("select column_name, data_type from information_schema.columns "
                                  "where table_name = 'dnc_entries'").fetchall())
        assert types["number_hash"] == types["number_enc"] == "bytea"
        with pytest.raises(psycopg.errors.CheckViolation):  # hex text where bytes belong
            conn.execute("insert into dnc_entries (list, number_hash, number_enc, source) values ('x', %s, %s, 'y')",
                         (keys.number_tag("+8613900000009").encode(), sealer.seal_raw("+8613900000009")))
    dsn = cluster.dsn(db, SERVICE)
    d = await DncDb.open(dsn)
    try:
        got = [(tag, n) async for tag, n in d.entries(camp, sealer)]
        assert sorted(got) == sorted((keys.number_tag(n), n) for n in nums[camp])
        assert await d.add(camp, keys.number_tag(nums[camp][0]), sealer.seal_raw(nums[camp][0])) is False
        assert await d.remove(camp, keys.number_tag(nums[camp][1])) is True
        assert await d.add(camp, keys.number_tag(nums[camp][1]), sealer.seal_raw(nums[camp][1]), "cli") is True
        assert await d.count(camp) == 50 and await d.count("global") == 2
    finally:
        await d.close()
    r = syncredis.Redis.from_url(settings.redis_url)
    try:
        with psycopg.connect(dsn) as conn:
            assert restore_lists(conn, r, keys) == {camp: 50, "global": 2}
    finally:
        r.close()
    import redis.asyncio as aioredis

    ar = aioredis.from_url(settings.redis_url)
    try:
        store = DncStore(ar, keys)
        for lst, ns_ in nums.items():
            for n in ns_:
                assert await store.contains(list_name(None if lst == "global" else lst), keys.number_tag(n))
        assert not await store.contains(list_name(camp), keys.number_tag("+8613800199999"))
        # 226 keeps these rows as single entries: an import over them stores only what is new
        over = tmp_path / "over.csv"
        over.write_text("".join(n + "\n" for n in nums[camp][:10]) + "+8613800199990\n")
        d = await DncDb.open(dsn)
        try:
            rep = await import_csv(store, list_name(camp), over, "CN", settings.hash_secret, workers=1, db=d,
                                   db_name=camp, source="over", data_key=key)
            assert (rep.valid, rep.stored) == (11, 1) and await d.count(camp) == 51
            got = sorted([n async for _, n in d.entries(camp, sealer)])
            assert got == sorted(nums[camp] + ["+8613800199990"])
        finally:
            await d.close()
    finally:
        await ar.aclose()
