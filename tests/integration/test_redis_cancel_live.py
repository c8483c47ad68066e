"""dialguard/redis_cancel.py on the stack's real Redis: PING after PING through a
redis-py client like dialguard.redisconn's (a bounded pool, socket timeouts), each
cancelled after 0..39 event-loop iterations. redis-py's own connections lose some of
those cancels on Python 3.11 (their write under asyncio.wait_for, gh-86296): the
task goes on and gets its PONG. The client redisconn builds loses none."""

from __future__ import annotations

import asyncio
import sys

import pytest
import redis.asyncio as aioredis

from dialguard import redisconn

pytestmark = pytest.mark.integration


async def lost_of_landed(r, landings: int = 40, rounds: int = 3) -> tuple[int, int]:
    lost = landed = 0
    for k in range(landings):
        for _ in range(rounds):
            t = asyncio.create_task(r.ping())
            for _ in range(k):
                await asyncio.sleep(0)
            if t.cancel():  # pending: the cancel landed
                landed += 1
                await asyncio.wait([t])
                lost += not t.cancelled()
    return lost, landed


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps a cancel from 3.12 (gh-96764)")
async def test_redis_pys_own_connections_lose_cancels(settings):
    pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=4, timeout=2,
                                                    socket_timeout=2, socket_connect_timeout=2)
    r = aioredis.Redis(connection_pool=pool)
    try:
        lost, landed = await lost_of_landed(r)
    finally:
        await r.aclose()
    print(f"redis-py's connections: {lost} of {landed} cancels lost")
    assert lost > 0


async def test_redisconns_client_loses_none(settings):
    r = redisconn.async_redis(settings, max_connections=4, timeout=2)
    try:
        lost, landed = await lost_of_landed(r)
    finally:
        await r.aclose()
    print(f"dialguard.redisconn's client: {lost} of {landed} cancels lost")
    assert landed >= 20 and lost == 0
