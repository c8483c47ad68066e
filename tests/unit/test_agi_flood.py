"""A flood of idle connections cannot starve Asterisk (issue 13; agi/flood.py):
the eviction policy (pure), the once-a-second count log (pure), and the
FastAGI server over real loopback sockets with a fake engine. Behaviour, not
timing: bench/flood.py measures latencies."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agi.engines import EngineProvider
from agi.flood import Conn, ConnTable, CountLog
from agi.server import FastAGIServer
from agi.client import agi_call, env_block
from fakes.engine import FakeEngine
from dialguard import metrics

HOST = "127.0.0.1"
CHECK_ARGS = ("+8613800138000", "c1", "a1")


# -- the policy ---------------------------------------------------------------------------
def test_full_table_closes_the_oldest_pending_connection():
    t = ConnTable(max_pending=3, max_pending_per_source=10)
    a, b, c = Conn("10.0.0.1"), Conn("10.0.0.2"), Conn("10.0.0.1")
    for i, x in enumerate((a, b, c)):
        assert t.admit(x.source) == []
        t.add(x, float(i))
    t.remove(a)  # its environment block arrived: a session now, out of the table
    assert t.admit("10.0.0.9") == []
    d = Conn("10.0.0.9")
    t.add(d, 3.0)
    assert t.admit("10.0.0.7") == [(b, "table_full")]  # the oldest still pending
    assert len(t) == 2 and not b.held
    t.remove(b)  # its connection_lost comes later: nothing counted twice
    assert list(t.pending) == [c, d]


def test_per_source_limit_counts_only_pending_connections():
    t = ConnTable(max_pending=100, max_pending_per_source=2)
    for i in range(5):  # Asterisk's sessions send their block at once: out of the table at once
        x = Conn("127.0.0.1")
        assert t.admit(x.source) == []
        t.add(x, float(i))
        t.remove(x)
    idle1, idle2 = Conn("127.0.0.1"), Conn("127.0.0.1")
    for i, x in enumerate((idle1, idle2)):
        assert t.admit(x.source) == []
        t.add(x, 10.0 + i)
    assert t.admit("127.0.0.1") == [(idle1, "source_limit")]  # that address's oldest
    assert t.admit("10.1.1.1") == []  # other addresses are not affected
    assert list(t.by_source) == ["127.0.0.1"] and list(t.by_source["127.0.0.1"]) == [idle2]


def test_expired_takes_the_connections_past_the_deadline_oldest_first():
    t = ConnTable(max_pending=10, max_pending_per_source=10)
    conns = [Conn("a") for _ in range(4)]
    for i, x in enumerate(conns):
        t.add(x, float(i))
    assert t.expired(2.0) == conns[:2]
    assert list(t.pending) == conns[2:] and t.expired(2.0) == []
    assert t.oldest() == 2.0
    t.expired(9.0)
    assert t.oldest() is None


def test_count_log_one_line_per_interval_with_the_counts(caplog):
    now = [100.0]
    timers = []

    class Timer:
        def __init__(self, delay, fn):
            self.delay, self.fn, self.cancelled = delay, fn, False

        def cancel(self):
            self.cancelled = True

    def call_later(delay, fn):
        timers.append(Timer(delay, fn))
        return timers[-1]

    cl = CountLog(logging.getLogger("t.flood"), "not served", 1.0, clock=lambda: now[0], call_later=call_later)
    with caplog.at_level(logging.INFO, "t.flood"):
        for i in range(10_000):  # a burst within one second
            cl.add("evicted" if i % 2 else "refused")
            now[0] += 0.00005
        assert len(caplog.records) == 1  # the first one at once
        assert len(timers) == 1 and timers[0].delay == pytest.approx(1.0, abs=0.01)
        now[0] = 101.0
        timers[0].fn()  # the timer fires: the rest, in one line
        now[0] = 105.0
        cl.add("refused")  # quiet since: logged at once again
    lines = [r.fields["counts"] for r in caplog.records]
    assert lines == [{"refused": 1}, {"evicted": 5000, "refused": 4999}, {"refused": 1}]
    assert caplog.records[1].getMessage() == "not served: 5000 evicted, 4999 refused"


# -- the server ---------------------------------------------------------------------------
@pytest.fixture
async def make_server():
    servers = []

    async def make(engine=None, **kw):
        engine = engine if engine is not None else FakeEngine()
        kw.setdefault("session_timeout", 3.0)
        srv = FastAGIServer(EngineProvider(engine=engine), host=HOST, port=0, **kw)
        await srv.start()
        servers.append(srv)
        return srv, engine

    yield make
    for s in servers:
        await s.shutdown(grace_s=1)


async def idle(port: int, n: int) -> list:
    conns = []
    for _ in range(n):
        conns.append(await asyncio.open_connection(HOST, port))
        await asyncio.sleep(0)  # let the server take it (in order)
    return conns


async def closed_by_server(reader, wait: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(wait):
            return await reader.read(1) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def sample(name, **labels) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_idle_connections_make_room_for_real_checks(make_server):
    srv, eng = await make_server(max_pending=20)
    ev0 = sample("dialguard_agi_evicted_total", reason="table_full")
    conns = await idle(srv.bound_port, 20)
    await asyncio.sleep(0.1)
    for i in range(5):  # each real check gets a slot: the oldest idle connection goes
        res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)
        assert res.variables["DIALGUARD_RESULT"] == "ALLOW", i
        conns += await idle(srv.bound_port, 1)  # the flood takes the slot again
        await asyncio.sleep(0.05)
    assert [await closed_by_server(r, 0.5) for r, _w in conns[:5]] == [True] * 5
    assert not await closed_by_server(conns[5][0], 0.2)  # the younger ones are still open
    assert srv.stats["evicted"] == 5 and srv.stats["refused"] == 0
    assert sample("dialguard_agi_evicted_total", reason="table_full") - ev0 == 5
    for _r, w in conns:
        w.close()


async def test_full_of_real_sessions_refuses_the_newest(make_server):
    srv, eng = await make_server(FakeEngine(delay_s=0.5), max_sessions=2)
    ref0 = sample("dialguard_agi_refused_total", reason="max_sessions")
    busy = [asyncio.create_task(agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)) for _ in range(2)]
    await asyncio.sleep(0.2)
    r, w = await asyncio.open_connection(HOST, srv.bound_port)
    w.write(env_block("check", CHECK_ARGS))
    assert await closed_by_server(r)
    assert [(await b).variables["DIALGUARD_RESULT"] for b in busy] == ["ALLOW", "ALLOW"]
    assert sample("dialguard_agi_refused_total", reason="max_sessions") - ref0 == 1
    w.close()


async def test_per_source_limit_closes_that_sources_oldest_idle(make_server):
    srv, eng = await make_server(max_pending_per_source=5)
    ev0 = sample("dialguard_agi_evicted_total", reason="source_limit")
    conns = await idle(srv.bound_port, 8)
    await asyncio.sleep(0.1)
    assert [await closed_by_server(r, 0.3) for r, _w in conns[:3]] == [True] * 3
    assert not await closed_by_server(conns[3][0], 0.2)
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)  # same address: still served
    assert res.variables["DIALGUARD_RESULT"] == "ALLOW"
    assert sample("dialguard_agi_evicted_total", reason="source_limit") - ev0 == 4  # 3 + one for the check
    for _r, w in conns:
        w.close()


async def test_environment_block_deadline_closes_an_idle_connection_early(make_server):
    srv, _ = await make_server(session_timeout=5.0, env_timeout=0.3)
    r, w = await asyncio.open_connection(HOST, srv.bound_port)
    w.write(b"agi_network: yes\n")  # a slow peer: part of a block, then nothing
    assert await closed_by_server(r, 2.0)  # well before the 5 s session deadline
    w.close()
    assert srv.table.pending == {}
    # a real session gets the whole session timeout after its block
    eng_slow, _ = await make_server(FakeEngine(delay_s=0.6), session_timeout=3.0, env_timeout=0.3)
    res = await agi_call(HOST, eng_slow.bound_port, "check", CHECK_ARGS)
    assert res.variables["DIALGUARD_RESULT"] == "ALLOW"


async def test_the_deadline_sweep_runs_only_while_connections_are_pending(make_server):
    # no timer ticking on an idle server (it woke the loop 100 times a second)
    srv, _ = await make_server(session_timeout=5.0, env_timeout=0.3)
    assert srv._sweeper is None
    res = await agi_call(HOST, srv.bound_port, "check", CHECK_ARGS)  # its block at once
    assert res.variables["DIALGUARD_RESULT"] == "ALLOW"
    r, w = await asyncio.open_connection(HOST, srv.bound_port)  # an idle one
    await asyncio.sleep(0.1)
    assert srv._sweeper is not None and len(srv.table) == 1
    assert await closed_by_server(r, 2.0)  # closed at its deadline
    await asyncio.sleep(0.05)
    assert srv.table.pending == {} and srv._sweeper is None
    # two idle connections 0.2 s apart: the sweep that closes the first is armed again for the second
    r1, w1 = await asyncio.open_connection(HOST, srv.bound_port)
    await asyncio.sleep(0.2)
    r2, w2 = await asyncio.open_connection(HOST, srv.bound_port)
    assert await closed_by_server(r1, 2.0)
    assert await closed_by_server(r2, 2.0)
    await asyncio.sleep(0.05)
    assert srv._sweeper is None
    for x in (w, w1, w2):
        x.close()


async def test_a_flood_is_logged_in_one_line_a_second_with_counts(make_server, caplog):
    srv, _ = await make_server(max_pending=10)
    with caplog.at_level(logging.INFO, "dialguard.agi"):
        conns = await idle(srv.bound_port, 210)  # 200 evicted to make room
        await asyncio.sleep(0.2)
        srv.flood_log.flush()
    records = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "agi_flood"]
    assert 1 <= len(records) <= 3, [r.getMessage() for r in records]
    total = sum(r.fields["counts"].get("closed to make room (table_full)", 0) for r in records)
    assert total == 200 == srv.stats["evicted"]
    # and not a line per session either
    assert not [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "agi_session"]
    for _r, w in conns:
        w.close()


def test_open_files_soft_limit_raised_to_the_hard_one(caplog):
    import resource

    from agi.server import raise_fd_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 512) if hard == resource.RLIM_INFINITY else min(hard, 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        got = raise_fd_limit(100)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard == got
        with caplog.at_level(logging.WARNING, "dialguard.agi"):
            if hard != resource.RLIM_INFINITY:
                raise_fd_limit(hard)  # more connections than descriptors: said at start
                assert "open files limit" in caplog.text
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
