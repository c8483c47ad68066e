"""Decisions the audit stream never saw (Redis unreachable, backlog ceiling) go
to the local spool and reach PostgreSQL through audit-ship exactly once: real
Redis, real PostgreSQL (a cluster of this module's own), real shipper processes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import redis as syncredis

from dialguard.audit import spool as S
from dialguard.audit.shipper import Shipper, backlog_status
from fakes.pg import ShipperProcess, free_port
from dialguard.crypto import Sealer
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 2, tzinfo=UTC)  # Mon 10:00 in Shanghai, a working day
SERVICE = "dg_service"
N = 40

# `cluster`: a PostgreSQL cluster of the module's own (tests/integration/conftest.py)


@pytest.fixture
def spool_settings(settings, tmp_path):
    """The stack's settings with a spool of this test's own and a key prefix of its own."""
    s = dataclasses.replace(settings, spool_dir=str(tmp_path / "spool"), key_prefix=f"dgtest:{uuid.uuid4().hex[:10]}")
    yield s
    drop_namespace(s)  # the shippers' stream and group


def rows(dsn: str, where: str = "true") -> list[dict]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(f"select * from audit_decisions where {where}")
        return [dict(zip([c.name for c in cur.description], r)) for r in cur.fetchall()]


def spool_files(s) -> list:
    return sorted(p.name for p in S.Path(s.spool_dir).glob("decisions.*"))


def shipper_proc(s, dsn, tmp_path, *args) -> ShipperProcess:
    env = {"DIALGUARD_REDIS_URL": s.redis_url, "DIALGUARD_PG_DSN": dsn, "DIALGUARD_KEY_PREFIX": s.key_prefix,
           "DIALGUARD_HASH_SECRET": s.hash_secret.decode(), "DIALGUARD_NODE": "test-spool",
           "DIALGUARD_SPOOL_DIR": s.spool_dir}
    return ShipperProcess(env, "--block-ms", "100", *args, log=tmp_path / "shipper.log")


def drop_namespace(s) -> None:
    r = syncredis.Redis.from_url(s.redis_url)
    try:
        keys = list(r.scan_iter(match=f"{s.key_prefix}:*", count=1000))
        if keys:
            r.delete(*keys)
    finally:
        r.close()


async def unreachable_decisions(s, n: int) -> list:
    """n decisions by an engine whose Redis does not answer (nothing listens on its port)."""
    down = dataclasses.replace(s, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_ms=100)
    e = await Engine.create(down, Policy.load("cn-default"), prefix=s.key_prefix)
    try:
        ds = [await e.decide(DecisionRequest(number=f"1380000{i:04d}", campaign="c1", agent=f"a{i % 3}",
                                             caller_id="+862150000001", call_id=f"k{i}"),
                             now=NOW + timedelta(seconds=i)) for i in range(n)]
    finally:
        await e.close()
    assert all(d.decision == "deny" and d.reasons == ["guard_unavailable"] for d in ds)
    return ds


def e_spooled(s) -> int:
    return sum(len(p.read_text().splitlines()) for p in S.Path(s.spool_dir).glob("decisions.*"))


async def test_redis_unreachable_denials_reach_postgres_exactly_once(spool_settings, audit_db, tmp_path):
    s = spool_settings
    ds = await unreachable_decisions(s, N)
    assert e_spooled(s) == N
    assert backlog_status(s)["spool"]["files"] == 1  # `dialguard audit status` shows it
    kept = tmp_path / "copy.jsonl"
    shutil.copy(next(S.Path(s.spool_dir).glob("decisions.*.jsonl")), kept)

    # 1. shipper killed after COMMIT, before it deleted the file: the rows are in, the file stays
    sh = shipper_proc(s, audit_db, tmp_path).start({"DIALGUARD_AUDIT_SHIP_CRASH": "spool_before_delete:1"})
    assert await asyncio.to_thread(sh.wait, 60) == -9, sh.log_tail()
    assert len(rows(audit_db)) == N
    left = spool_files(s)
    assert len(left) == 1 and left[0].endswith(".shipping")

    # 2. the next run ships it again (nothing added) and deletes it
    sh = shipper_proc(s, audit_db, tmp_path, "--drain").start()
    assert await asyncio.to_thread(sh.wait, 60) == 0, sh.log_tail()
    assert spool_files(s) == []
    got = rows(audit_db)
    assert sorted(r["decision_id"] for r in got) == sorted(d.decision_id for d in ds)
    assert {tuple(r["reasons"]) for r in got} == {("guard_unavailable",)} and not any(r["allowed"] for r in got)
    sealer = Sealer()
    for r in got:
        assert re.fullmatch(r"\d{13}-\d{15}", r["stream_id"])  # synthetic: the request's wall-clock ms
        assert r["request"]["unrecorded"].startswith("store unavailable")
        assert r["campaign"] == "c1" and r["call_id"] and r["rules"] == "cn-default"
        assert sealer.open(r["number_enc"]).startswith("+86138")
        assert sealer.open(r["caller_id_requested"]) == "+862150000001"  # sealed at rest
    by_call = {r["call_id"]: r for r in got}
    assert by_call["k3"]["decided_at"] == NOW + timedelta(seconds=3)

    # 3. the same file shipped a third time (restored by hand): still exactly N rows
    shutil.copy(kept, S.Path(s.spool_dir) / f"decisions.{S.file_prefix(s.key_prefix)}.1.1.shipping")
    sh = Shipper(s, dsn=audit_db, block_ms=50)
    sh.open()
    try:
        assert sh.ship_spool() == N
    finally:
        sh.close()
    assert len(rows(audit_db)) == N and spool_files(s) == []


async def test_backlog_ceiling_denials_are_recorded_too(spool_settings, audit_db, make_engine):
    s = spool_settings
    e = await make_engine("cn-default", settings=s, prefix=s.key_prefix)
    await e.set_campaign("c1")
    await e.approve_caller_id("+862150000001", pool=True)
    r = syncredis.Redis.from_url(s.redis_url)
    try:
        base = r.xlen(e.keys.audit)  # admin records of the set-up
    finally:
        r.close()
    e.settings = dataclasses.replace(e.settings, audit_backlog_max=base + 3)
    ds = [await e.decide(DecisionRequest(number=f"1380000{i:04d}", campaign="c1", agent="a1", call_id=f"k{i}"),
                         now=NOW + timedelta(seconds=i)) for i in range(10)]
    assert [d.decision for d in ds[:3]] == ["allow"] * 3
    assert all(d.reasons == ["guard_unavailable"] for d in ds[3:])
    assert e_spooled(s) == 7
    sh = Shipper(s, dsn=audit_db, block_ms=50)
    try:
        await asyncio.to_thread(sh.run, True)
    finally:
        sh.close()
    got = {x["decision_id"]: x for x in rows(audit_db)}
    assert set(got) == {d.decision_id for d in ds}
    for d in ds[3:]:
        row = got[d.decision_id]
        assert row["reasons"] == ["guard_unavailable"] and row["request"]["unrecorded"] == "audit backlog ceiling"
    assert all(got[d.decision_id]["allowed"] for d in ds[:3]) and spool_files(s) == []


async def test_garbage_lines_become_rejects_once(spool_settings, audit_db, tmp_path):
    s = spool_settings
    ds = await unreachable_decisions(s, 2)
    active = next(S.Path(s.spool_dir).glob("decisions.*.jsonl"))
    with open(active, "a") as fh:
        fh.write('not json at all\n{"t": "decision", "id": "x", "j": "{}"}\n{"t":"decis')  # the last one torn
    taken = S.rotate(S.Path(s.spool_dir), s.key_prefix)  # as the shipper does; keep a copy of what it took
    kept = tmp_path / "copy"
    shutil.copy(taken[0], kept)
    sh = Shipper(s, dsn=audit_db, block_ms=50)
    sh.open()
    try:
        assert sh.ship_spool() == 2
        shutil.copy(kept, taken[0])  # as if killed before the delete: the same file again
        sh.ship_spool()  # shipped twice: neither rows nor rejects twice
    finally:
        sh.close()
    assert {r["decision_id"] for r in rows(audit_db)} == {d.decision_id for d in ds}
    with psycopg.connect(audit_db) as conn:
        rej = conn.execute("select stream_id, fields, error from audit_rejects order by id").fetchall()
    assert len(rej) == 3
    assert [x[0] for x in rej] == [f"spool:{taken[0].name}:{i}" for i in (3, 4, 5)]
    assert rej[0][0].startswith("spool:decisions.") and rej[0][1] == {"raw": "not json at all"}
    assert "no time" in rej[1][2] and "torn" in rej[2][2] and rej[2][1] == {"raw": '{"t":"decis'}

