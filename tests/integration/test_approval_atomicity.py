"""Four-eyes approval across two stores (issue 15, item 6), on the stack's real PostgreSQL and Redis:
PostgreSQL's commit fails right after the Redis write of an approved override (a deferred trigger that
raises at COMMIT), and the stores still end consistent: the request is completed as approved from the
note the Redis write left (approvals.reconcile), with one grant only, never a second."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime, timezone

import psycopg
import pytest
import redis.asyncio as aioredis

from dialguard import approvals
from dialguard.audit.db import admin_dsn
from dialguard.engine import Engine
from dialguard.simulate import _drop_namespace
from dialguard.users import Identity

pytestmark = pytest.mark.integration
AT_10 = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
async def engine(settings):
    s = dataclasses.replace(settings, key_prefix=f"dgtest:{uuid.uuid4().hex[:10]}", test_clock=True)
    e = await Engine.create(s)
    await e.set_test_clock(AT_10)
    yield e
    await e.close()
    r = aioredis.from_url(s.redis_url)
    await _drop_namespace(r, s.key_prefix)
    await r.aclose()


@pytest.fixture
def fail_commit():
    """fail_commit(rid): the next COMMIT that updates request rid raises (a deferred constraint trigger);
    fail_commit(None): the fault is cleared. Created as the table's owner, dropped afterwards."""
    name = f"dg_test_fail_{uuid.uuid4().hex[:8]}"
    c = psycopg.connect(admin_dsn(), autocommit=True)
    c.execute(f"create function {name}() returns trigger language plpgsql as "
              "$$ begin raise exception 'injected: the commit fails'; end $$")

    def arm(rid):
        c.execute(f"drop trigger if exists {name} on approval_requests")
        if rid is not None:
            c.execute(f"create constraint trigger {name} after update on approval_requests deferrable initially "
                      f"deferred for each row when (new.id = {int(rid)}) execute function {name}()")
    yield arm
    arm(None)
    c.execute(f"drop function {name}()")
    c.close()


async def _status(rid: int):
    async with await psycopg.AsyncConnection.connect(admin_dsn(), autocommit=True) as c:
        cur = await c.execute("select status, decided_user, decided_by, result from approval_requests where id = %s",
                              (rid,))
        return await cur.fetchone()


def _overrides(records, rid):
    return [j for t, j in records if t == "override" and j.get("request") == rid]


async def test_a_failed_commit_after_the_redis_write_ends_consistent(engine, settings, fail_commit):
    e = engine
    sup, c1, c2 = (Identity(f"s{uuid.uuid4().hex[:6]}", "supervisor", "web"),
                   Identity(f"c{uuid.uuid4().hex[:6]}", "compliance", "web"),
                   Identity(f"d{uuid.uuid4().hex[:6]}", "compliance", "web"))
    number = "+86138" + str(uuid.uuid4().int % 10**8).zfill(8)
    async with await psycopg.AsyncConnection.connect(settings.pg_dsn, autocommit=True) as conn:
        rid = await approvals.request_override(conn, e, sup, number, "callback asked", hours=2)
        other = await approvals.request_override(conn, e, sup, number[:-1] + "0", "another", hours=2)
        try:
            fail_commit(rid)
            with pytest.raises(psycopg.Error, match="injected"):
                await approvals.approve(conn, e, c1, rid, "ok")
            # the moment of the fault: the grant is in Redis (with the note), PostgreSQL still says pending
            grant = await e.override_get(number)
            assert grant is not None
            assert (await _status(rid))[0] == "pending"
            assert await e.redis.hexists(e.keys.approvals, str(rid))

            # while the fault lasts: reading the list tries, fails, keeps the note; other requests go on
            rows = await approvals.listing(conn, "override", engine=e)
            assert {r["id"]: r["status"] for r in rows}[rid] == "pending"
            assert await e.redis.hexists(e.keys.approvals, str(rid))
            assert (await approvals.approve(conn, e, c2, other))["status"] == "approved"
            # nobody may decide it again meanwhile: not a second grant, not a rejection
            with pytest.raises(approvals.ApprovalError, match="already approved|approved meanwhile"):
                await approvals.approve(conn, e, c2, rid)
            with pytest.raises(approvals.ApprovalError, match="approved meanwhile"):
                await approvals.reject(conn, c2, rid, engine=e)

            fail_commit(None)  # the fault is over: the next listing completes the approval
            rows = await approvals.listing(conn, "override", engine=e)
            assert {r["id"]: r["status"] for r in rows}[rid] == "approved"
            status, user, by, result = await _status(rid)
            assert (status, user, by) == ("approved", c1.user, f"web:{c1.user}")
            assert result["grant"] == grant["id"]  # the grant in Redis is the one PostgreSQL records
            assert not await e.redis.hexists(e.keys.approvals, str(rid))
            records = [(f[b"t"].decode(), json.loads(f[b"j"])) for _i, f in await e.redis.xrange(e.keys.audit)]
            assert len(_overrides(records, rid)) == 1  # one grant, never a second
            rec = _overrides(records, rid)[0]
            assert rec["approver"] == f"web:{c1.user}" and rec["requested_by"] == f"web:{sup.user}"
            with pytest.raises(approvals.ApprovalError, match="already approved"):
                await approvals.approve(conn, e, c2, rid)
            assert len(_overrides([(f[b"t"].decode(), json.loads(f[b"j"])) for _i, f in
                                   await e.redis.xrange(e.keys.audit)], rid)) == 1
        finally:
            fail_commit(None)
            async with await psycopg.AsyncConnection.connect(admin_dsn(), autocommit=True) as a:
                await a.execute("delete from approval_requests where id in (%s, %s)", (rid, other))


async def test_redis_unreachable_leaves_the_request_pending_and_nothing_granted(engine, settings):
    e = engine
    sup, c1 = Identity(f"s{uuid.uuid4().hex[:6]}", "supervisor", "web"), Identity(f"c{uuid.uuid4().hex[:6]}",
                                                                               "compliance", "web")
    number = "+86138" + str(uuid.uuid4().int % 10**8).zfill(8)
    async with await psycopg.AsyncConnection.connect(settings.pg_dsn, autocommit=True) as conn:
        rid = await approvals.request_override(conn, e, sup, number, "callback asked", hours=2)
        try:
            from dialguard.admin import Admin
            broken = await Admin.create(dataclasses.replace(e.settings, redis_url="redis://127.0.0.1:1/0"))
            with pytest.raises(Exception):  # noqa: B017 - whichever connection error the client raises
                await approvals.approve(conn, broken, c1, rid)
            await broken.close()
            assert (await _status(rid))[0] == "pending" and await e.override_get(number) is None
            assert (await approvals.approve(conn, e, c1, rid))["status"] == "approved"  # it can still be approved
        finally:
            async with await psycopg.AsyncConnection.connect(admin_dsn(), autocommit=True) as a:
                await a.execute("delete from approval_requests where id = %s", (rid,))
