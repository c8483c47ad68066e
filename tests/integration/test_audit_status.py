"""`dialguard audit status`: the lag of the shipper's group is what is not yet
delivered, 0 when nothing is pending, also after a Redis restart (issue 13:
`lag: 22728` with backlog 0, Redis's own counter after a restart)."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import time

import pytest
import redis as syncredis

from dialguard.audit.shipper import GROUP, backlog_status
from dialguard.config import Settings
from dialguard.decision.keys import Keys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A redis-server of the test's own with an AOF, so that it can be restarted."""

    def __init__(self, workdir):
        self.exe = shutil.which("redis-server")
        assert self.exe, "redis-server is not installed (make setup installs it)"
        self.port, self.dir, self.proc = _free_port(), workdir, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "yes", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                syncredis.Redis(port=self.port, socket_timeout=0.5).ping()
                return
            except syncredis.RedisError:
                time.sleep(0.05)
        raise AssertionError("own redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path):
    r = OwnRedis(tmp_path)
    r.start()
    yield r
    r.stop()


def ship_all(r: syncredis.Redis, stream: str) -> None:
    """What the shipper does with every entry: read in the group, XACK + XDEL."""
    for _s, entries in r.xreadgroup(GROUP, "c1", {stream: ">"}, count=10_000) or []:
        ids = [i for i, _f in entries]
        r.xack(stream, GROUP, *ids)
        r.xdel(stream, *ids)


def test_lag_is_zero_when_nothing_is_pending_after_a_restart(own_redis):
    settings = dataclasses.replace(Settings(), redis_url=own_redis.url)
    stream = Keys(settings.key_prefix, settings.hash_secret).audit
    r = syncredis.Redis.from_url(own_redis.url, decode_responses=True)
    r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    for _ in range(50):
        r.xadd(stream, {"t": "decision"})
    ship_all(r, stream)
    # entries gone behind the group's back (trimmed; an AOF cut short at a crash
    # does the same): Redis's own `lag` counts them for ever
    for _ in range(30):
        r.xadd(stream, {"t": "decision"})
    delivered = [i for _s, es in r.xreadgroup(GROUP, "c1", {stream: ">"}, count=10) for i, _f in es]
    r.xtrim(stream, maxlen=0)
    r.xack(stream, GROUP, *delivered)
    st = backlog_status(settings)
    assert (st["backlog"], st["pending"], st["lag"]) == (0, 0, 0), st
    own_redis.stop()
    own_redis.start()
    r = syncredis.Redis.from_url(own_redis.url, decode_responses=True)
    for _ in range(7):  # new entries after the restart, shipped too
        r.xadd(stream, {"t": "decision"})
    ship_all(r, stream)
    st = backlog_status(settings)
    assert (st["backlog"], st["pending"], st["lag"]) == (0, 0, 0), st

    for _ in range(3):  # three waiting, one of them delivered (pending), two not delivered yet
        r.xadd(stream, {"t": "decision"})
    r.xreadgroup(GROUP, "c1", {stream: ">"}, count=1)
    st = backlog_status(settings)
    assert (st["backlog"], st["pending"], st["lag"]) == (3, 1, 2), st


def test_lag_without_a_group_is_the_whole_stream(own_redis):
    settings = dataclasses.replace(Settings(), redis_url=own_redis.url)
    stream = Keys(settings.key_prefix, settings.hash_secret).audit
    r = syncredis.Redis.from_url(own_redis.url, decode_responses=True)
    for _ in range(4):
        r.xadd(stream, {"t": "decision"})
    st = backlog_status(settings)
    assert (st["backlog"], st["pending"], st["lag"]) == (4, 0, 4), st
