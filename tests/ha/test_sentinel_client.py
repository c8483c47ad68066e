"""The clients follow a failover through Sentinel: the hot path's pipelined
client (dialguard.redisclient) and redis-py's (dialguard.redisconn), without
being recreated; a demoted primary's READONLY drops the connection; scripts
are loaded again on the new primary."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis as syncredis

from dialguard import redisconn
from dialguard.redisclient import RedisClient, RedisConnectionError
from tests.ha import ha


class _Script:
    """What RedisClient.evalsha needs of dialguard.decision.scripts.Script."""

    def __init__(self, source: str):
        import hashlib

        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


async def _until_written(client: RedisClient, key: str, timeout: float = 30) -> list[str]:
    """SET until it works; the errors seen on the way."""
    errors = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            await client.execute("SET", key, "1", "PX", "60000")
            return errors
        except (RedisConnectionError, TimeoutError) as exc:
            errors.append(str(exc))
            await asyncio.sleep(0.05)
    raise AssertionError(f"never written again: {errors[-3:]}")


async def test_clients_follow_a_failover(ha_settings):
    s = ha_settings
    fast = redisconn.fast_client(s, timeout=0.5, connect_timeout=0.5)
    slow = redisconn.sync_redis(s, socket_timeout=1, socket_connect_timeout=1)
    key = f"dgha:{uuid.uuid4().hex[:8]}"
    try:
        old = ha.primary(s)
        assert (await fast.execute("ROLE"))[0] == b"master"
        assert (fast.host, fast.port) == old
        slow.set(key + ":slow", "1", px=60000)
        # A planned failover: the old primary stays up and is demoted to a replica.
        syncredis.Redis(host=s.sentinel_addrs()[0][0], port=s.sentinel_addrs()[0][1]).execute_command(
            "SENTINEL", "FAILOVER", s.redis_master)
        new_port, _ = ha.wait_new_primary(s, old[1])
        # The old primary takes writes until the Sentinels demote it (why planned
        # switch-overs pause calling first, docs/OPERATIONS.md); then it answers
        # READONLY and the client asks the Sentinels again.
        end = time.monotonic() + 30
        while fast.port != new_port and time.monotonic() < end:
            await _until_written(fast, key)
            await asyncio.sleep(0.02)
        assert fast.port == new_port, "the client writes to the new primary"
        assert (await fast.execute("ROLE"))[0] == b"master"
        # Scripts: the new primary may not have them (a restarted node has none).
        ha.node("127.0.0.1", new_port).script_flush()
        assert await fast.evalsha(_Script("return 7"), [], []) == 7
        assert ha.node("127.0.0.1", new_port).script_exists(_Script("return 7").sha) == [True]
        # redis-py through Sentinel: a READONLY (or a closed connection) makes it ask again.
        for _ in range(100):
            try:
                slow.set(key + ":slow", "2", px=60000)
                break
            except syncredis.ConnectionError:
                time.sleep(0.05)
        assert ha.node("127.0.0.1", new_port).get(key + ":slow") == b"2"
    finally:
        await fast.close()
        slow.close()


async def test_readonly_answer_drops_the_connection(ha_settings):
    """A node that answers READONLY (a replica, a demoted primary) is never used again
    through that connection: the request fails (the decision is a guard_unavailable deny)."""
    host, port = ha.primary(ha_settings)
    info = ha.node(host, port, decode_responses=True).info("replication")
    replica = int(info["slave0"]["port"])
    c = RedisClient(ha.node_url(replica), timeout=0.5)
    try:
        assert await c.execute("PING") == b"PONG"
        conn = c._conns[0]
        with pytest.raises(RedisConnectionError, match="READONLY"):
            await c.execute("SET", "dgha:ro", "1")
        assert conn.closed and c._conns[0] is None
    finally:
        await c.close()


async def test_unknown_master_name_fails_closed(ha_settings):
    c = RedisClient(ha.node_url(1), timeout=0.5, sentinels=ha_settings.sentinel_addrs(),
                    master="no-such-master")
    try:
        with pytest.raises(RedisConnectionError, match="no Sentinel named the primary 'no-such-master'"):
            await c.execute("PING")
    finally:
        await c.close()


async def test_a_silent_sentinel_does_not_block_discovery(ha_settings):
    """The first Sentinel listed accepts nothing (its host gone: a listening socket
    that never answers): the others are asked within the same connect budget, and
    the silent one is asked last from then on."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)  # connects may complete in the backlog; nothing is ever read
    addr = silent.getsockname()
    c = RedisClient(ha.node_url(1), timeout=0.5, connect_timeout=0.5,
                    sentinels=[addr, *ha_settings.sentinel_addrs()], master=ha_settings.redis_master)
    try:
        assert (await c.execute("ROLE"))[0] == b"master"
        assert c.sentinels[-1] == addr and c.sentinels[0] != addr
    finally:
        await c.close()
        silent.close()
