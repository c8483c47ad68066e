"""/metrics and /healthz of a real FastAGI server process (``python -m
agi.server``) on a real Redis of the test's own, so that it can be stopped:
counters move by exactly what went through the AGI protocol, the backlog
gauge is XLEN of the audit stream, and with Redis gone the health endpoint
says 503 while the server keeps answering AGI sessions with a fail-closed DENY.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest
import redis as syncredis
from prometheus_client.parser import text_string_to_metric_families

from agi.client import agi_call
from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.keys import Keys
from dialguard.rules import Policy

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
CID = "+862150000001"
# Mon 2026-09-28 10:00 Asia/Shanghai: a working day inside cn-default's hours
WORKDAY_10H = datetime(2026, 9, 28, 2, 0, tzinfo=timezone.utc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} within {timeout} s")


def stop(proc: subprocess.Popen) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@pytest.fixture
def own_redis():
    """A redis-server of this test's own (the stack's is shared and must stay up)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not installed: run `make setup`")
    port = free_port()
    d = tempfile.mkdtemp(prefix="dg-metrics-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
                             "--dir", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, "redis-server")
    yield proc, f"redis://{HOST}:{port}/0"
    stop(proc)
    shutil.rmtree(d, ignore_errors=True)


def start_server(redis_url: str, prefix: str, tmp_path: Path, workers: int = 1):
    agi_port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALGUARD_")
           or k in ("DIALGUARD_SECRETS_FILE", "DIALGUARD_HASH_SECRET", "DIALGUARD_DATA_KEY")}  # keys from outside
    env.update(DIALGUARD_REDIS_URL=redis_url, DIALGUARD_KEY_PREFIX=prefix, DIALGUARD_TEST_CLOCK="1",
               DIALGUARD_RULES="cn-default", DIALGUARD_CONFIG=str(tmp_path / "absent.yaml"),
               DIALGUARD_SPOOL_DIR=str(tmp_path / "spool"), PYTHONPATH=str(ROOT))
    # An absent DIALGUARD_CONFIG other than the default is an error: give it an empty file.
    (tmp_path / "absent.yaml").write_text("{}\n")
    log = open(tmp_path / f"agi-{agi_port}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agi.server", "--port", str(agi_port), "--metrics-port", str(metrics_port),
         "--metrics-interval", "0.2", "--session-timeout", "2", "--engine-timeout", "1",
         "--workers", str(workers)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:  # a start takes seconds (workers, warm-up), more on a loaded machine
        wait_port(agi_port, proc, "dialguard-agi-server", timeout=60)
        wait_port(metrics_port, proc, "metrics endpoint", timeout=60)
    except BaseException:
        stop(proc)  # not left running (with its workers) after a failed start
        raise
    return proc, agi_port, metrics_port


async def scrape(port: int) -> dict[tuple, float]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://{HOST}:{port}/metrics") as r:
            assert r.status == 200
            text = await r.text()
    out = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def val(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def healthz(port: int) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://{HOST}:{port}/healthz") as r:
            return r.status, await r.json()


async def wait_for(cond, timeout: float = 5.0, step: float = 0.1, args: tuple = ()):
    end = time.monotonic() + timeout
    while True:
        res = await cond(*args)
        if res or time.monotonic() > end:
            return res
        await asyncio.sleep(step)


async def check(port, number, campaign, uniqueid):
    res = await agi_call(HOST, port, "check", (number, campaign, "a1", "", CID), uniqueid=uniqueid)
    return res.variables


async def test_counters_backlog_live_calls_and_health_through_agi(own_redis, tmp_path):
    redis_proc, url = own_redis
    prefix = f"dgm:{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(Settings(), redis_url=url, test_clock=True)
    eng = await Engine.create(settings, Policy.load("cn-default"), prefix=prefix)
    try:
        await eng.set_campaign("c1")
        await eng.approve_caller_id(CID, pool=True)  # live calls are reported for pool caller IDs
        await eng.set_test_clock(WORKDAY_10H)
    finally:
        await eng.close()
    proc, agi_port, mport = start_server(url, prefix, tmp_path)
    try:
        status, body = await healthz(mport)
        assert status == 200 and body["ok"] is True, body
        before = await scrape(mport)
        audit = syncredis.Redis.from_url(url)
        stream = Keys(prefix, settings.hash_secret).audit
        xlen0 = audit.xlen(stream)  # admin events of the setup are audited too

        n_allow, n_deny = 4, 3
        for i in range(n_allow):
            v = await check(agi_port, f"1380013{i:04d}", "c1", f"u.a{i}")
            assert v["DIALGUARD_RESULT"] == "ALLOW", v
        for i in range(n_deny):
            v = await check(agi_port, f"1390013{i:04d}", "not-approved", f"u.d{i}")
            assert v["DIALGUARD_RESULT"] == "DENY" and v["DIALGUARD_REASONS"] == "campaign_not_approved", v
        # one malformed session (no environment block, garbage) and one that never sends anything
        r, w = await asyncio.open_connection(HOST, agi_port)
        w.write(b"this is not agi\n\n")
        await w.drain()
        await r.read()
        w.close()
        r2, w2 = await asyncio.open_connection(HOST, agi_port)
        await asyncio.wait_for(r2.read(), 5)  # closed by the server at the session deadline
        w2.close()

        xlen = audit.xlen(stream)
        assert xlen - xlen0 == n_allow + n_deny  # every decision is audited; nothing ships this stream

        async def settled():
            s = await scrape(mport)
            return s if (val(s, "dialguard_audit_backlog") == xlen
                         and val(s, "dialguard_live_calls", caller_id=CID) == n_allow) else None

        after = await wait_for(settled)
        assert after, "backlog / live-call gauges never matched Redis"

        def delta(name, **labels):
            return val(after, name, **labels) - val(before, name, **labels)

        assert delta("dialguard_decisions_total", result="allow") == n_allow
        assert delta("dialguard_decisions_total", result="deny") == n_deny
        assert delta("dialguard_deny_reasons_total", reason="campaign_not_approved") == n_deny
        assert delta("dialguard_deny_reasons_total", reason="guard_unavailable") == 0
        assert delta("dialguard_decision_latency_seconds_count") == n_allow + n_deny
        assert delta("dialguard_redis_errors_total") == 0
        assert delta("dialguard_agi_sessions_total", result="ok") == n_allow + n_deny
        assert delta("dialguard_agi_sessions_total", result="malformed") == 1
        assert delta("dialguard_agi_sessions_total", result="timeout") == 1
        assert val(after, "dialguard_healthy") == 1
        assert val(after, "dialguard_metrics_refresh_timestamp_seconds") > time.time() - 5

        # Redis goes away: health says so, the server still answers, fail closed.
        stop(redis_proc)
        status, body = await healthz(mport)
        assert status == 503 and body["ok"] is False and "Redis" in body["detail"], body

        async def unhealthy():
            s = await scrape(mport)
            return s if val(s, "dialguard_healthy") == 0 else None

        assert await wait_for(unhealthy), "dialguard_healthy stayed 1 with Redis stopped"
        v = await check(agi_port, "13800130099", "c1", "u.down")
        assert v["DIALGUARD_RESULT"] == "DENY" and v["DIALGUARD_REASONS"] == "guard_unavailable", v
        down = await scrape(mport)
        assert val(down, "dialguard_redis_errors_total") - val(after, "dialguard_redis_errors_total") == 1
        assert val(down, "dialguard_deny_reasons_total", reason="guard_unavailable") - \
            val(after, "dialguard_deny_reasons_total", reason="guard_unavailable") == 1
        assert proc.poll() is None, "the server died with Redis"
    finally:
        rc = stop(proc)
    assert rc == 0
    # stopped with the server
    with pytest.raises(OSError):
        socket.create_connection((HOST, mport), timeout=0.5).close()


async def test_server_pointed_at_a_dead_redis(tmp_path):
    dead = f"redis://{HOST}:{free_port()}/0"  # nothing listens there
    proc, agi_port, mport = start_server(dead, f"dgm:{uuid.uuid4().hex[:8]}", tmp_path)
    try:
        status, body = await healthz(mport)
        assert status == 503 and "Redis did not answer PING" in body["detail"], body

        async def unhealthy():
            s = await scrape(mport)
            return s if ("dialguard_healthy", ()) in s and val(s, "dialguard_healthy") == 0 else None

        assert await wait_for(unhealthy)
        v = await check(agi_port, "13800138000", "c1", "u.dead")
        assert v["DIALGUARD_RESULT"] == "DENY" and v["DIALGUARD_REASONS"] == "guard_unavailable", v
        s = await scrape(mport)
        assert val(s, "dialguard_decisions_total", result="deny") == 1
        assert val(s, "dialguard_redis_errors_total") == 1
        assert val(s, "dialguard_agi_sessions_total", result="ok") == 1
        # the deny the audit stream never saw went to the local spool, which audit-ship empties

        async def spooled():
            s = await scrape(mport)
            return s if val(s, "dialguard_audit_spool_files") == 1 else None

        assert await wait_for(spooled), "dialguard_audit_spool_files did not show the spooled deny"
        assert val(s, "dialguard_audit_spool_dropped") == 0
    finally:
        assert stop(proc) == 0


# -- several worker processes (--workers N) ------------------------------------------------
def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.append(int(entry))
    return out


async def _setup(url: str, prefix: str) -> None:
    settings = dataclasses.replace(Settings(), redis_url=url, test_clock=True)
    eng = await Engine.create(settings, Policy.load("cn-default"), prefix=prefix)
    try:
        await eng.set_campaign("c1")
        await eng.approve_caller_id(CID, pool=True)
        await eng.set_test_clock(WORKDAY_10H)
    finally:
        await eng.close()


async def test_workers_share_one_cap_and_their_metrics_add_up(own_redis, tmp_path):
    # 3 workers, 60 simultaneous checks of one number capped at 2 (cn-default):
    # exactly 2 allows whichever workers took them; /metrics (served by worker 0)
    # counts every session of every worker.
    _, url = own_redis
    prefix = f"dgm:{uuid.uuid4().hex[:8]}"
    await _setup(url, prefix)
    proc, agi_port, mport = start_server(url, prefix, tmp_path, workers=3)
    try:
        workers = children(proc.pid)
        assert len(workers) == 3
        before = await scrape(mport)
        n = 60
        results = await asyncio.gather(*(check(agi_port, "13800138000", "c1", f"w.{i}") for i in range(n)))
        allowed = [v for v in results if v["DIALGUARD_RESULT"] == "ALLOW"]
        assert len(allowed) == 2, [v.get("DIALGUARD_REASONS") for v in results]
        assert all(v["DIALGUARD_REASONS"] for v in results if v not in allowed)
        after = await scrape(mport)

        def delta(name, **labels):
            return val(after, name, **labels) - val(before, name, **labels)

        assert delta("dialguard_decisions_total", result="allow") == 2
        assert delta("dialguard_decisions_total", result="deny") == n - 2
        assert delta("dialguard_agi_sessions_total", result="ok") == n
        assert val(after, "dialguard_agi_sessions_active") == 0
        status, body = await healthz(mport)
        assert status == 200, body
    finally:
        rc = stop(proc)
    assert rc == 0
    assert not [p for p in workers if os.path.exists(f"/proc/{p}")], "a worker outlived the server"
    assert not list(Path(tempfile.gettempdir()).glob(f"dialguard-agi-metrics-*{proc.pid}*"))


async def test_workers_stop_gracefully_and_a_dead_worker_is_replaced(own_redis, tmp_path):
    _, url = own_redis
    prefix = f"dgm:{uuid.uuid4().hex[:8]}"
    await _setup(url, prefix)
    proc, agi_port, mport = start_server(url, prefix, tmp_path, workers=2)
    try:
        first = sorted(children(proc.pid))
        assert len(first) == 2
        os.kill(first[1], signal.SIGKILL)  # a crashed worker: started again, the port keeps answering
        end = time.monotonic() + 10
        while time.monotonic() < end and (first[1] in children(proc.pid) or len(children(proc.pid)) < 2):
            await asyncio.sleep(0.1)
        now = children(proc.pid)
        assert len(now) == 2 and first[1] not in now
        for i in range(6):
            v = await check(agi_port, f"1380014{i:04d}", "c1", f"g.{i}")
            assert v["DIALGUARD_RESULT"] == "ALLOW", v
        # SIGTERM to the parent: a session in flight still finishes with its answer
        pending = asyncio.create_task(check(agi_port, "13800150000", "c1", "g.last"))
        await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        v = await pending
        assert v["DIALGUARD_RESULT"] == "ALLOW", v
        assert proc.wait(15) == 0
    finally:
        stop(proc)
    assert not [p for p in now if os.path.exists(f"/proc/{p}")]


# -- calendars: known until when (dialguard/calendar_expiry.py) ---------------------------------
async def test_calendar_gauge_and_degraded_health_follow_the_rules_clock(own_redis, tmp_path):
    """cn-default's calendar (chinesecalendar) ends on 31 December of its last
    year: 46 days before, /healthz is ok; at 44 days it is degraded (still 200)
    and the gauge says 44 days, read from the server's test clock, not the wall
    clock; an imported next year (the calendar store) extends both by that year."""
    from zoneinfo import ZoneInfo

    from chinese_calendar import constants

    from dialguard.calendar_file import CalendarFile
    from dialguard.calendars import CalendarStore

    last = max(d.year for d in constants.holidays)
    end = datetime(last + 1, 1, 1, tzinfo=ZoneInfo("Asia/Shanghai"))
    _, url = own_redis
    prefix = f"dgm:{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(Settings(), redis_url=url, test_clock=True)
    eng = await Engine.create(settings, Policy.load("cn-default"), prefix=prefix)
    await eng.set_test_clock(end - timedelta(days=46))
    proc, _agi_port, mport = start_server(url, prefix, tmp_path)

    async def gauge_is(days):
        s = await scrape(mport)
        return s if val(s, "dialguard_calendar_known_seconds", calendar="CN") == days * 86400 else None

    try:
        status, body = await healthz(mport)
        assert status == 200 and body["status"] == "ok" and "degraded" not in body, body
        assert await wait_for(gauge_is, args=(46,)), "the gauge never showed 46 days"
        await eng.set_test_clock(end - timedelta(days=44))
        status, body = await healthz(mport)
        assert status == 200 and body["ok"] is True and body["status"] == "degraded", body
        assert f"calendar CN is known until {last}-12-31" in body["degraded"][0], body
        assert await wait_for(gauge_is, args=(44,)), "the gauge never showed 44 days"
        await eng.set_test_clock(end + timedelta(days=1))  # past the end: negative, still degraded
        status, body = await healthz(mport)
        assert status == 200 and body["status"] == "degraded" and "known only until" in body["degraded"][0]
        assert await wait_for(gauge_is, args=(-1,))
        # the operator imports the next year (dialguard calendar import): known one year longer
        await eng.set_test_clock(end - timedelta(days=44))
        nxt = CalendarFile("CN", last + 1, frozenset({date(last + 1, 1, 1)}), source="test")
        await CalendarStore(eng.redis, eng.keys).import_file(nxt, why="test")
        status, body = await healthz(mport)
        assert status == 200 and body["status"] == "ok", body
        year = (date(last + 2, 1, 1) - date(last + 1, 1, 1)).days
        assert await wait_for(gauge_is, args=(44 + year,)), "an imported year did not extend the gauge"
    finally:
        await eng.close()
        assert stop(proc) == 0
