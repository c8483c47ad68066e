"""The guard over Redis's Unix socket (issue 21, stop 17): the dev stack's Redis
listens on .stack/redis/redis.sock (DIALGUARD_REDIS_SOCKET) as well as on TCP,
and a service on the same host may use unix://user:password@/path?db=0.

The socket changes the transport only: the ACL users, their passwords and their
grants apply on it as on TCP. The guard's role decides (the pipelined client,
dialguard/redisclient.py, and redis-py's pool both over the socket) and applies
outcomes (the outcome reader, agi/outcomes.py), and is refused what it is not
granted; a wrong password or no user at all is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pytest
import redis as syncredis
from redis.asyncio.connection import UnixDomainSocketConnection

from agi.client import agi_call
from agi.engines import EngineProvider
from agi.outcomes import OutcomeReader
from agi.server import FastAGIServer
from dialguard.config import parse_env_file
from dialguard.engine import Engine
from dialguard.redisclient import RedisClient, RedisConnectionError
from dialguard.rules import Policy

pytestmark = pytest.mark.integration
AT_10 = datetime(2026, 9, 28, 2, 0, tzinfo=timezone.utc)  # Monday 10:00 in Shanghai
NUM = "13800138000"
CID = "+862150000002"
HOST = "127.0.0.1"


def socket_path() -> str:
    p = os.environ.get("DIALGUARD_REDIS_SOCKET")
    assert p, "DIALGUARD_REDIS_SOCKET (from .stack/env): run `make up`"
    return p


def role_env(role: str) -> dict:
    d = os.environ.get("DIALGUARD_SECRETS_DIR")
    assert d, "DIALGUARD_SECRETS_DIR (from .stack/env): run `make up`"
    return parse_env_file((Path(d) / f"redis-{role}.env").read_text())


def unix_url(role: str, password: str | None = None) -> str:
    env = role_env(role)
    pw = env["DIALGUARD_REDIS_PASSWORD"] if password is None else password
    return (f"unix://{quote(env['DIALGUARD_REDIS_USER'], safe='')}:{quote(pw, safe='')}@"
            f"{socket_path()}?db=0")


def test_the_socket_is_for_its_owner_only():
    st = os.stat(socket_path())
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) & 0o007 == 0, oct(st.st_mode)  # unixsocketperm 700 (or 770)


def test_a_wrong_password_or_no_user_is_refused_over_the_socket():
    with pytest.raises(syncredis.AuthenticationError):
        syncredis.Redis.from_url(unix_url("guard", password="not-the-password"), socket_timeout=3).ping()
    with pytest.raises(syncredis.AuthenticationError):  # no password-less default user here either
        syncredis.Redis(unix_socket_path=socket_path(), socket_timeout=3).ping()


async def test_the_pipelined_client_refuses_a_wrong_password_over_the_socket():
    c = RedisClient(unix_url("guard", password="not-the-password"), timeout=2.0)
    try:
        with pytest.raises(RedisConnectionError, match="AUTH") as err:
            await c.execute("PING")
        assert f"Redis at {socket_path()} refused AUTH" in str(err.value)  # where, as an operator looks for it
    finally:
        await c.close()
    good = RedisClient(unix_url("guard"), timeout=2.0)
    try:
        assert good.path == socket_path()
        assert await good.execute("PING") == b"PONG"
    finally:
        await good.close()


def test_the_guard_role_is_refused_over_the_socket_what_it_is_not_granted():
    g = syncredis.Redis.from_url(unix_url("guard"), socket_timeout=3)
    assert g.ping()
    assert g.connection_pool.connection_class.__name__ == "UnixDomainSocketConnection"
    for cmd in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("SCAN", "0"), ("CLIENT", "LIST"),
                ("INFO",), ("ACL", "SETUSER", "x", "on"), ("GET", "other:secret"), ("SET", "other:secret", "x"),
                ("EVAL", "return redis.call('GET', KEYS[1])", 1, "other:secret")):
        with pytest.raises(syncredis.ResponseError, match="permission"):
            g.execute_command(*cmd)


def cel_line(extra: str) -> str:
    return f'"1796447036.327","dialguard_outcome","{json.dumps({"extra": extra}).replace(chr(34), chr(34) * 2)}"'


async def test_the_guard_decides_and_applies_outcomes_over_the_socket(make_engine, settings, monkeypatch,
                                                                      tmp_path):
    # The guard's credentials are in its URL (as a service gets them): none from the environment.
    monkeypatch.delenv("DIALGUARD_REDIS_USER", raising=False)
    monkeypatch.delenv("DIALGUARD_REDIS_PASSWORD", raising=False)
    admin = await make_engine("cn-default", settings=dataclasses.replace(settings, test_clock=True))
    await admin.set_campaign("c1")
    await admin.approve_caller_id(CID)
    await admin.set_test_clock(AT_10)
    guard_settings = dataclasses.replace(settings, redis_url=unix_url("guard"), test_clock=True)
    eng = await Engine.create(guard_settings, Policy.load("cn-default"), prefix=admin.keys.prefix)
    srv = FastAGIServer(EngineProvider(engine=eng), host=HOST, port=0)
    await srv.start()
    try:
        # both of the guard's clients reach Redis by its socket, nothing by TCP
        assert eng.fast.path == socket_path() and eng.fast.host == "127.0.0.1" and not eng.fast.sentinels
        assert issubclass(eng.redis.connection_pool.connection_class, UnixDomainSocketConnection)
        v = (await agi_call(HOST, srv.bound_port, "check", (NUM, "c1", "a1", "", CID), uniqueid="u.sock.1")).variables
        assert v["DIALGUARD_RESULT"] == "ALLOW" and v["DIALGUARD_CALLERID"] == CID, v
        # the outcome, as the outcome reader applies it from Asterisk's CEL file
        cel, state = tmp_path / "o.csv", tmp_path / "o.offset"
        cel.write_text(cel_line(f"v1|{v['DIALGUARD_DECISION_ID']}|u.sock.1|ANSWER|12|12|16|||") + "\n")
        reader = OutcomeReader(eng, cel, state, retry_s=0)
        reader.state.load()
        await reader.step()
        assert (reader.applied, reader.unmatched, reader.bad) == (1, 0, 0)
        # applied once: a replay of the same line matches nothing
        assert await eng.report_outcome("u.sock.1", reader_outcome(cel)) is False
        # the audit stream has the decision and its outcome (read as admin, over TCP)
        records = await admin.redis.xrange(admin.keys.audit)
        kinds = [(f[b"t"], f.get(b"res")) for _, f in records]
        assert (b"outcome", b"conversation") in kinds and any(k == b"decision" for k, _ in kinds), kinds
    finally:
        await srv.shutdown(grace_s=1)
        await eng.close()


def reader_outcome(cel: Path):
    from agi.outcomes import parse_line

    return parse_line(cel.read_text().splitlines()[0]).outcome
