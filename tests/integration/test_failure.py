"""Fail closed: a stopped or frozen Redis gives guard_unavailable within the deadline."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from datetime import datetime, timezone

import pytest

from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy

NOW = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def own_redis(tmp_path):
    """A real redis-server of this test's own, so it can be frozen and killed."""
    exe = shutil.which("redis-server")
    assert exe, "redis-server is not installed (make setup installs it)"
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield proc, f"redis://127.0.0.1:{port}/0"
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
    proc.wait(10)


def req(i=0):
    return DecisionRequest(number=f"1380013{i:04d}", campaign="c1", agent="a1")


async def test_redis_frozen_or_gone_denies_within_deadline(own_redis):
    proc, url = own_redis
    settings = Settings(redis_url=url, redis_timeout_ms=200)
    e = await Engine.create(settings, Policy.load("cn-default"), prefix=f"dgf:{uuid.uuid4().hex[:6]}",
                            skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    assert (await e.decide(req(1), now=NOW)).allowed

    os.kill(proc.pid, signal.SIGSTOP)  # alive but not answering
    for i in range(5):
        t0 = time.perf_counter()
        d = await e.decide(req(10 + i), now=NOW)
        elapsed = time.perf_counter() - t0
        assert d.decision == "deny" and d.reasons == ["guard_unavailable"]
        assert d.next_eligible_at is None and "store unavailable" in d.explanations["guard_unavailable"]
        # deadline plus scheduling slack on a shared machine; never a hang
        assert elapsed < 1.5, elapsed

    os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait(10)
    for i in range(5):
        d = await e.decide(req(20 + i), now=NOW)
        assert d.reasons == ["guard_unavailable"]
    # the test clock path fails closed too
    e.settings = Settings(redis_url=url, test_clock=True)
    assert (await e.decide(req(30))).reasons == ["guard_unavailable"]
    await e.redis.connection_pool.disconnect()


async def test_unreachable_redis_at_start_still_answers_deny():
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    e = await Engine.create(Settings(redis_url=url, redis_timeout_ms=200), Policy.load("cn-default"))
    d = await e.decide(req(), now=NOW)
    assert d.reasons == ["guard_unavailable"]


async def test_slow_local_work_is_not_the_store_being_slow(own_redis, monkeypatch):
    """DIALGUARD_REDIS_TIMEOUT_MS bounds the store's time. The local steps before the
    round trip (the number's parse, which compiles a country's patterns the first
    time; the plan, the first of a rules version) may take longer on a loaded
    machine: the decision is still made, not denied guard_unavailable. Here each
    takes 3x the deadline (a blocking sleep, as CPU work blocks the loop)."""
    from dialguard.decision import decider

    proc, url = own_redis
    e = await Engine.create(Settings(redis_url=url, redis_timeout_ms=50), Policy.load("cn-default"),
                            prefix=f"dgf:{uuid.uuid4().hex[:6]}", skip_caller_id_without_pool=True)
    try:
        await e.set_campaign("c1")
        assert (await e.decide(req(1), now=NOW)).allowed
        real_parse, real_plan = decider.parse_number, type(e)._plan

        def slow_parse(*a, **k):
            time.sleep(0.15)
            return real_parse(*a, **k)

        def slow_plan(self, *a, **k):
            time.sleep(0.15)
            return real_plan(self, *a, **k)

        monkeypatch.setattr(decider, "parse_number", slow_parse)
        d = await e.decide(req(2), now=NOW)
        assert d.allowed, d.explanations
        monkeypatch.setattr(decider, "parse_number", real_parse)
        monkeypatch.setattr(type(e), "_plan", slow_plan)
        d = await e.decide(req(3), now=NOW)
        assert d.allowed, d.explanations
        # the store itself slower than the deadline is still a deny
        monkeypatch.setattr(type(e), "_plan", real_plan)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            d = await e.decide(req(4), now=NOW)
            assert d.reasons == ["guard_unavailable"] and "store unavailable" in d.explanations["guard_unavailable"]
        finally:
            os.kill(proc.pid, signal.SIGCONT)
    finally:
        await e.close()


async def test_a_cold_context_is_not_the_store_being_slow(own_redis, monkeypatch):
    """A campaign's first decision on a node loads its context (rules and calendars
    parsed, the health settings published): local work that may take longer than
    DIALGUARD_REDIS_TIMEOUT_MS on a loaded machine. It has a budget of its own, so the
    decision is made; a store frozen during a cold load is still a deny, within that
    budget (each round trip still has the store's timeout). Here the load blocks for 3x the deadline (as CPU work blocks the loop)."""
    from dialguard.decision import decider

    proc, url = own_redis
    e = await Engine.create(Settings(redis_url=url, redis_timeout_ms=50), Policy.load("cn-default"),
                            prefix=f"dgf:{uuid.uuid4().hex[:6]}", skip_caller_id_without_pool=True)
    try:
        await e.set_campaign("c1")
        assert e._ctx_cache.get("c1") is None  # cold
        real = type(e)._publish_health

        async def slow_publish(self, policy):
            time.sleep(0.15)
            return await real(self, policy)

        monkeypatch.setattr(type(e), "_publish_health", slow_publish)
        d = await e.decide(req(1), now=NOW)
        assert d.allowed, d.explanations
        monkeypatch.setattr(type(e), "_publish_health", real)
        # a cold context on a frozen store: denied, within the cold budget
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            t0 = time.perf_counter()
            d = await e.decide(DecisionRequest(**{**req(2).model_dump(), "campaign": "never-seen"}), now=NOW)
            elapsed = time.perf_counter() - t0
            assert d.reasons == ["guard_unavailable"] and "store unavailable" in d.explanations["guard_unavailable"]
            budget = max(decider.COLD_CONTEXT_MIN_S, decider.COLD_CONTEXT_ROUND_TRIPS * 0.05)
            assert elapsed < budget + 1.5, elapsed
        finally:
            os.kill(proc.pid, signal.SIGCONT)
    finally:
        await e.close()


async def test_admin_commands_wait_out_a_busy_redis(own_redis):
    """Redis frozen for 1 s (a large pipeline ahead, a slow fork): the hot path's
    200 ms bound fails the engine's read, as it must; the CLI's admin client waits
    it out (ADMIN_REDIS_TIMEOUT_S) instead of failing an operator's import midway."""
    import asyncio

    from dialguard.admin import ADMIN_REDIS_TIMEOUT_S, Admin

    proc, url = own_redis
    settings = Settings(redis_url=url, redis_timeout_ms=200)
    policy = Policy.load("cn-default")
    e = await Engine.create(settings, policy, prefix=f"dgf:{uuid.uuid4().hex[:6]}")
    admin = await Admin.create(settings, policy)
    try:
        await admin.redis.set("dgf:probe", "1")
        assert await e.redis.get("dgf:probe") == b"1"
        assert ADMIN_REDIS_TIMEOUT_S >= 5
        loop = asyncio.get_running_loop()
        for client, fails in ((e.redis, True), (admin.redis, False)):
            os.kill(proc.pid, signal.SIGSTOP)
            loop.call_later(1.0, os.kill, proc.pid, signal.SIGCONT)
            t0 = time.perf_counter()
            if fails:
                with pytest.raises(Exception) as exc:
                    await client.get("dgf:probe")
                assert "imeout" in type(exc.value).__name__ + str(exc.value), exc.value
            else:
                assert await client.get("dgf:probe") == b"1"
                assert time.perf_counter() - t0 >= 0.9
            await asyncio.sleep(max(0.0, 1.2 - (time.perf_counter() - t0)))  # thawed before the next
    finally:
        await admin.close()
        await e.redis.connection_pool.disconnect()
