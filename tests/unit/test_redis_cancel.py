"""dialguard/redis_cancel.py: redis-py's asyncio connections lose a cancel on Python 3.11
(their write under asyncio.wait_for, CPython gh-86296); ours do not; every asyncio
client dialguard builds gets ours; an upgrade of redis-py that changes what we
override is noticed."""

from __future__ import annotations

import ast
import asyncio
import inspect
import pathlib
import re
import sys

import pytest
import redis.asyncio.connection as rconn
from redis.asyncio.connection import AbstractConnection, Connection

from dialguard import redisconn
from dialguard.config import Settings, _file_settings
from dialguard.redis_cancel import SAFE_CLASSES, CancelSafeConnection, CancelSafeWrites, cancel_safe

ROOT = pathlib.Path(__file__).resolve().parents[2]


# -- the swallow, reproduced with a real redis-py connection on a local socket ----------

async def pong_server():
    """A local socket answering +PONG to PING, +OK to anything else (redis-py's real
    Connection talks to it: its CLIENT SETINFO on connect, then our PINGs)."""
    import hiredis

    async def serve(reader, writer):
        commands = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                commands.feed(data)
                while (cmd := commands.gets()) is not False:
                    writer.write(b"+PONG\r\n" if cmd[0].upper() == b"PING" else b"+OK\r\n")
                await writer.drain()
        finally:
            writer.close()
    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def lost_cancels(cls, port: int, landings: int = 12, rounds: int = 5) -> tuple[int, int]:
    """(cancels lost, cancels landed): a task sends PING and reads its answer on a `cls`
    connection with a socket timeout; it is cancelled after 0..landings-1 event-loop
    iterations, `rounds` times each. A cancel landed on a pending task must end it
    cancelled; one that did not was lost."""
    conn = cls(host="127.0.0.1", port=port, socket_timeout=5, socket_connect_timeout=5)
    lost = landed = 0

    async def ping():
        await conn.send_packed_command(b"*1\r\n$4\r\nPING\r\n")
        return await conn.read_response()

    try:
        for k in range(landings):
            for _ in range(rounds):
                await conn.connect()  # (a cancelled command drops its connection)
                t = asyncio.create_task(ping())
                for _ in range(k):
                    await asyncio.sleep(0)
                if not t.cancel():
                    continue  # done before the cancel: nothing landed
                landed += 1
                await asyncio.wait([t])
                if not t.cancelled():
                    lost += 1
                    assert t.result() == b"PONG"  # it went on as if never cancelled
    finally:
        await conn.disconnect()
    return lost, landed


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps a cancel from 3.12 (gh-96764)")
async def test_redis_py_connection_loses_a_cancel_landing_as_its_write_completes():
    srv = await pong_server()
    async with srv:
        lost, landed = await lost_cancels(Connection, srv.sockets[0].getsockname()[1])
    print(f"redis-py's Connection: {lost} of {landed} cancels lost")
    # deterministic: landed one iteration after the task started, the cancel meets
    # wait_for's inner write task completing, every time
    assert lost >= 5


async def test_cancel_safe_connection_never_loses_a_cancel():
    srv = await pong_server()
    async with srv:
        lost, landed = await lost_cancels(CancelSafeConnection, srv.sockets[0].getsockname()[1])
    print(f"dialguard's CancelSafeConnection: {lost} of {landed} cancels lost")
    assert landed >= 20 and lost == 0


async def test_cancel_safe_write_errors_are_redis_pys():
    """A write that fails or times out: redis-py's exceptions, the connection dropped."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    srv = await pong_server()
    async with srv:
        conn = CancelSafeConnection(host="127.0.0.1", port=srv.sockets[0].getsockname()[1], socket_timeout=0.05)
        await conn.connect()

        async def never_drains(command):
            await asyncio.sleep(10)
        conn._send_packed_command = never_drains
        with pytest.raises(RedisTimeoutError, match="Timeout writing to socket"):
            await conn.send_packed_command(b"PING\r\n")
        assert not conn.is_connected
        del conn._send_packed_command
        await conn.connect()

        async def reset(command):
            raise ConnectionResetError(104, "Connection reset by peer")
        conn._send_packed_command = reset
        with pytest.raises(RedisConnectionError, match="Error 104 while writing to socket"):
            await conn.send_packed_command(b"PING\r\n")
        assert not conn.is_connected


# -- pin safety: what we override is what redis-py does -----------------------------------

def wait_for_callers(module) -> set[str]:
    """Names of the functions of `module` that call asyncio.wait_for."""
    tree = ast.parse(inspect.getsource(module))
    found = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "wait_for" and isinstance(node.func.value, ast.Name)
                        and node.func.value.id == "asyncio"):
                    found.add(fn.name)
    return found


def test_redis_py_writes_under_wait_for_where_we_replace_it_and_nowhere_else():
    """If this fails after an upgrade of redis-py: it changed send_packed_command (fixed
    upstream? then drop dialguard/redis_cancel.py) or waits with wait_for elsewhere
    (override that too)."""
    import redis.asyncio.client as rclient
    import redis.asyncio.sentinel as rsentinel

    assert wait_for_callers(rconn) == {"send_packed_command"}
    assert wait_for_callers(rclient) == set() and wait_for_callers(rsentinel) == set()
    src = inspect.getsource(AbstractConnection.send_packed_command)
    assert re.search(r"asyncio\.wait_for\(\s*self\._send_packed_command\(command\), self\.socket_timeout", src)
    # reads and connects: asyncio.timeout (>= 3.11.3), which cannot lose a cancel
    assert rconn.async_timeout is asyncio.timeout
    assert "async_timeout(read_timeout)" in inspect.getsource(AbstractConnection.read_response)


def test_what_the_override_calls_is_still_there():
    ours, stock = CancelSafeWrites.send_packed_command, AbstractConnection.send_packed_command
    def params(f):
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]
    assert params(ours) == params(stock)
    for name in ("is_connected", "connect_check_health", "check_health", "_send_packed_command",
                 "disconnect", "socket_timeout"):
        assert hasattr(Connection(), name), name
    for name in ("connect_check_health", "check_health", "_send_packed_command", "disconnect"):
        assert inspect.iscoroutinefunction(getattr(AbstractConnection, name)), name
    # no class between redis-py's and AbstractConnection writes its own way
    for stock_cls, safe_cls in SAFE_CLASSES.items():
        assert safe_cls.__mro__[1:3] == (CancelSafeWrites, stock_cls)
        for base in stock_cls.__mro__[:stock_cls.__mro__.index(AbstractConnection)]:
            assert "send_packed_command" not in vars(base), base


# -- every asyncio client dialguard builds gets our class ---------------------------------

def settings_for(monkeypatch, url: str, sentinels: str = "") -> Settings:
    _file_settings.cache_clear()
    monkeypatch.setenv("DIALGUARD_CONFIG", "/etc/dialguard/dialguard.yaml")
    monkeypatch.setenv("DIALGUARD_REDIS_URL", url)
    if sentinels:
        monkeypatch.setenv("DIALGUARD_REDIS_SENTINELS", sentinels)
        monkeypatch.setenv("DIALGUARD_REDIS_MASTER", "dg")
    else:
        monkeypatch.delenv("DIALGUARD_REDIS_SENTINELS", raising=False)
    return Settings()


@pytest.mark.parametrize("url,sentinels,expect", [
    ("redis://127.0.0.1:6379/0", "", "CancelSafeConnection"),
    ("rediss://127.0.0.1:6379/0", "", "CancelSafeSSLConnection"),
    ("unix:///run/redis/redis-server.sock?db=2", "", "CancelSafeUnixDomainSocketConnection"),
    ("redis://127.0.0.1:6379/0", "127.0.0.1:26379,127.0.0.1:26380", "CancelSafeSentinelManagedConnection"),
    ("rediss://127.0.0.1:6379/0", "127.0.0.1:26379", "CancelSafeSentinelManagedSSLConnection"),
])
def test_every_async_client_gets_the_cancel_safe_class(monkeypatch, url, sentinels, expect):
    s = settings_for(monkeypatch, url, sentinels)
    r = redisconn.async_redis(s, max_connections=2, timeout=1)
    assert r.connection_pool.connection_class.__name__ == expect
    assert r.connection_pool.make_connection().__class__.__name__ == expect
    if sentinels:  # and the clients that ask the Sentinels for the primary
        from redis.asyncio.sentinel import SentinelConnectionPool

        assert isinstance(r.connection_pool, SentinelConnectionPool)
        ask = r.connection_pool.sentinel_manager.sentinels
        assert len(ask) == len(sentinels.split(","))
        assert all(c.connection_pool.connection_class is CancelSafeConnection for c in ask)


def test_an_unknown_connection_class_is_refused():
    class Mine(Connection):
        pass

    pool = rconn.ConnectionPool(connection_class=Mine)
    with pytest.raises(TypeError, match="no cancel-safe variant"):
        cancel_safe(pool)
    assert cancel_safe(rconn.ConnectionPool()).connection_class is CancelSafeConnection
    assert cancel_safe(cancel_safe(rconn.ConnectionPool())).connection_class is CancelSafeConnection


def test_no_asyncio_client_is_built_outside_redisconn():
    """Product code builds redis-py asyncio clients only through dialguard.redisconn
    (which gives them our class): no other module imports redis.asyncio."""
    allowed = {"dialguard/redisconn.py", "dialguard/redis_cancel.py"}
    offenders = []
    for top in ("dialguard", "ari_app", "agi"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in allowed and re.search(r"\bredis\.asyncio\b|from redis import asyncio", path.read_text()):
                offenders.append(rel)
    assert offenders == []
