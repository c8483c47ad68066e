"""The pipelined hot-path client against a real Redis: order, NOSCRIPT, loss, deadlines."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from datetime import datetime, timezone

import pytest
import redis.asyncio as aioredis

from dialguard.decision import scripts
from dialguard.decision.models import DecisionRequest
from dialguard.redisclient import RedisClient, RedisConnectionError, RedisReplyError, RedisTimeout

NOW = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)


class _Script:
    """A throwaway script (so flushing it cannot disturb other tests' scripts)."""

    def __init__(self):
        self.source = f"-- {uuid.uuid4().hex}\nreturn {{KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}}"
        import hashlib
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


@pytest.fixture
async def client(settings):
    c = RedisClient(settings.redis_url, timeout=2.0)
    yield c
    await c.close()


@pytest.fixture
async def admin(settings):
    r = aioredis.Redis.from_url(settings.redis_url)
    yield r
    await r.aclose()


async def test_concurrent_requests_get_their_own_replies_in_order(client, admin):
    key = f"dgrc:{uuid.uuid4().hex}"
    try:
        replies = await asyncio.gather(*(client.execute("ECHO", f"m{i}") for i in range(500)))
        assert replies == [f"m{i}".encode() for i in range(500)]
        # INCRs sent concurrently are applied in the order they were written
        incs = await asyncio.gather(*(client.execute("INCR", key) for _ in range(300)))
        assert incs == list(range(1, 301))
        assert await client.execute("GET", key) == b"300"
        with pytest.raises(RedisReplyError):
            await client.execute("NOSUCHCOMMAND")
        assert await client.execute("PING") == b"PONG"  # an error reply does not desync the stream
    finally:
        await admin.delete(key)


async def test_noscript_after_script_flush_runs_the_source_and_caches_it(client, admin):
    s = _Script()
    key = f"dgrc:{uuid.uuid4().hex}"
    try:
        assert await client.evalsha(s, [key], ["x"]) == [key.encode(), b"x", 1]  # never loaded: NOSCRIPT path
        assert (await admin.script_exists(s.sha)) == [True]
        await admin.script_flush()
        out = await asyncio.gather(*(client.evalsha(s, [key], [str(i)]) for i in range(20)))
        assert sorted(r[2] for r in out) == list(range(2, 22))
        assert (await admin.script_exists(s.sha)) == [True]
        # the project's own scripts are loaded again for everyone else
        for sc in scripts.ALL:
            await sc.load(admin)
    finally:
        await admin.delete(key)


async def test_connection_killed_mid_flight_fails_pending_then_reconnects(client, admin):
    my_id = await client.execute("CLIENT", "ID")
    key = f"dgrc:{uuid.uuid4().hex}"
    # a request that waits inside Redis, and more queued behind it on the same socket
    blocked = asyncio.ensure_future(client.execute("BLPOP", key, "5"))
    behind = [asyncio.ensure_future(client.execute("ECHO", str(i))) for i in range(10)]
    await asyncio.sleep(0.1)
    assert client.pending() == 11
    await admin.execute_command("CLIENT", "KILL", "ID", str(my_id))
    t0 = time.perf_counter()
    results = await asyncio.gather(blocked, *behind, return_exceptions=True)
    assert time.perf_counter() - t0 < 1.0
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    assert isinstance(results[0], ConnectionError) and isinstance(results[0], OSError)  # fail closed upstream
    # the next call reconnects on its own
    assert await client.execute("PING") == b"PONG"
    assert await client.execute("CLIENT", "ID") != my_id


async def test_deadline_times_out_and_later_replies_stay_in_order(settings, admin):
    c = RedisClient(settings.redis_url, timeout=0.1, stale_s=5.0)
    key = f"dgrc:{uuid.uuid4().hex}"
    try:
        assert await c.execute("PING") == b"PONG"
        t0 = time.perf_counter()
        slow = asyncio.ensure_future(c.execute("BLPOP", key, "0.5"))
        await asyncio.sleep(0)  # the BLPOP is written first
        with pytest.raises(RedisTimeout):
            await c.execute("ECHO", "late")  # queued behind the BLPOP: past its deadline
        assert time.perf_counter() - t0 < 0.4
        with pytest.raises(TimeoutError):
            await slow
        # the late replies are read and dropped; new requests get their own
        assert await c.execute("ECHO", "next", deadline=asyncio.get_running_loop().time() + 2) == b"next"
        assert await c.execute("ECHO", "again") == b"again"
    finally:
        await c.close()


async def test_frozen_connection_is_dropped_after_stale_s(settings):
    c = RedisClient(settings.redis_url, timeout=0.05, stale_s=0.3)
    key = f"dgrc:{uuid.uuid4().hex}"
    try:
        first_id = await c.execute("CLIENT", "ID")
        pending = asyncio.ensure_future(c.execute("BLPOP", key, "2"))
        with pytest.raises(RedisTimeout):
            await pending
        await asyncio.sleep(0.5)  # nothing answered for stale_s: the connection is dropped
        assert c.pending() == 0
        assert await c.execute("CLIENT", "ID") != first_id
    finally:
        await c.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_fails_fast_and_backs_off():
    c = RedisClient(f"redis://127.0.0.1:{_free_port()}/0", timeout=0.2)
    try:
        t0 = time.perf_counter()
        with pytest.raises(RedisConnectionError):
            await c.execute("PING")
        with pytest.raises(RedisConnectionError, match="retrying shortly"):
            await c.execute("PING")  # within the back-off: no new connect attempt
        assert time.perf_counter() - t0 < 0.5
    finally:
        await c.close()


async def test_select_db_from_url(settings, admin):
    base = settings.redis_url.rsplit("/", 1)[0]
    c = RedisClient(base + "/3")
    key = f"dgrc:{uuid.uuid4().hex}"
    try:
        await c.execute("SET", key, "1", "EX", "30")
        assert await admin.exists(key) == 0
        db3 = aioredis.Redis.from_url(base + "/3")
        assert await db3.get(key) == b"1"
        await db3.delete(key)
        await db3.aclose()
    finally:
        await c.close()


async def test_engine_survives_its_connection_being_killed(make_engine, admin):
    e = await make_engine("cn-default", skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    assert e.fast is not None
    assert (await e.decide(DecisionRequest(number="13800138001", campaign="c1", agent="a1"), now=NOW)).allowed
    cid = await e.fast.execute("CLIENT", "ID")
    await admin.execute_command("CLIENT", "KILL", "ID", str(cid))
    await asyncio.sleep(0.05)
    d = await e.decide(DecisionRequest(number="13800138002", campaign="c1", agent="a1"), now=NOW)
    assert d.allowed, d
    # concurrent decisions share the pipeline and still never over-admit
    ds = await asyncio.gather(*(e.decide(DecisionRequest(number="13800138003", campaign="c1", agent=f"a{i}"),
                                         now=NOW) for i in range(50)))
    assert sum(x.allowed for x in ds) == 2
