"""The engine's warm-up (Decider.warm_up): what a first decision would load under
its 200 ms store deadline (state packs, holiday calendars of their subdivisions,
the ZIP data set, the rules in effect) is loaded before a service accepts calls,
so the first call after a start is decided, not denied guard_unavailable."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from agi.client import agi_call
from dialguard import timerules
from dialguard.config import Settings
from dialguard.decision.models import DecisionRequest
from dialguard.engine import Engine
from dialguard.rules import Policy
from dialguard.simulate import _drop_namespace

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
UTC = timezone.utc
MONDAY = datetime(2026, 3, 2, 17, tzinfo=UTC)  # 12:00 Eastern, 11:00 Central: open in every state pack
LA_NUMBER = "+15045550123"  # New Orleans
NY_NUMBER = "+12125550123"


async def test_warm_up_loads_what_the_first_decision_needs(settings):
    """After warm_up, deciding for callees of every state pack computes no holiday
    calendar and loads no state pack: nothing is left for the store deadline."""
    timerules._holiday_set.cache_clear()  # as in a fresh process
    policy = Policy.load("us-tcpa,us-states")
    e = await Engine.create(settings, policy, prefix=f"dgtest:{uuid.uuid4().hex[:10]}",
                            skip_caller_id_without_pool=True)
    try:
        await e.set_campaign("c1")
        await e.set_campaign("c2", rules="us-regf,us-states")  # a campaign with rules of its own
        done = await e.warm_up(now=MONDAY)
        assert "us-regf,us-states" in e._policies  # loaded and cached before any call of c2
        assert done["policies"] >= 1 and done["rule_sets_checked"] > len(policy.state_packs)
        misses = timerules._holiday_set.cache_info().misses
        for n, region, zip_code, camp in ((LA_NUMBER, None, None, "c1"), (NY_NUMBER, "US-AL", None, "c1"),
                                          (NY_NUMBER, None, "39201", "c1"), (NY_NUMBER, "US-WA", None, "c1"),
                                          (LA_NUMBER, None, None, "c2")):
            d = await e.decide(DecisionRequest(number=n, campaign=camp, agent="a1", region=region,
                                               postal_code=zip_code), now=MONDAY)
            assert d.allowed, d
        assert timerules._holiday_set.cache_info().misses == misses  # no calendar computed in a decision
    finally:
        await _drop_namespace(e.redis, e.keys.prefix)
        await e.close()


async def test_warm_up_builds_the_number_plans_of_the_rules_regions(settings):
    """The fast path's plans for the rules' region (national numbers and +cc) are
    built by warm_up, not by the first decision on the event loop (15-40 ms of
    regular expressions compiled while every check behind it waited)."""
    from dialguard import numbers

    for table, key in ((numbers._cc_plans, 86), (numbers._region_plans, "CN")):
        table.pop(key, None)  # as in a fresh process
    numbers._classified.cache_clear()
    e = await Engine.create(settings, Policy.load("cn-default"), prefix=f"dgtest:{uuid.uuid4().hex[:10]}",
                            skip_caller_id_without_pool=True)
    try:
        await e.set_campaign("c1")
        done = await e.warm_up(now=MONDAY)
        assert "CN" in done["number_plans"] and 86 in numbers._cc_plans and "CN" in numbers._region_plans
        built = (dict(numbers._cc_plans), dict(numbers._region_plans))
        for n in ("+8613800138000", "13800138001", "01062345678"):
            d = await e.decide(DecisionRequest(number=n, campaign="c1", agent="a1"), now=MONDAY)
            assert d.decision_id and d.reasons != ["invalid_number"], (n, d)
        assert (dict(numbers._cc_plans), dict(numbers._region_plans)) == built  # nothing built in a decision
    finally:
        await _drop_namespace(e.redis, e.keys.prefix)
        await e.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    raise AssertionError(f"no listener on {port} within {timeout} s")


async def test_first_check_after_start_is_decided(settings, tmp_path):
    """A real FastAGI server process, started with us-states: its very first
    check (a Louisianan, the state packs and US-LA holidays never loaded in
    that process) is decided on the rules, within the store deadline; the
    server listens, and /healthz answers, only once warm."""
    prefix = f"dgtest:{uuid.uuid4().hex[:10]}"
    eng = await Engine.create(dataclasses.replace(settings, test_clock=True), Policy.load("us-tcpa,us-states"),
                              prefix=prefix)
    await eng.set_campaign("c1")
    await eng.set_test_clock(MONDAY)
    agi_port, metrics_port = free_port(), free_port()
    env = {**os.environ, "DIALGUARD_KEY_PREFIX": prefix, "DIALGUARD_TEST_CLOCK": "1",
           "DIALGUARD_RULES": "us-tcpa,us-states", "DIALGUARD_SPOOL_DIR": str(tmp_path / "spool"),
           "DIALGUARD_LOG_LEVEL": "INFO", "PYTHONPATH": str(ROOT)}
    log_path = tmp_path / "agi.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agi.server", "--port", str(agi_port), "--metrics-port", str(metrics_port),
             "--workers", "1"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(agi_port, proc)
        res = await agi_call(HOST, agi_port, "check", (LA_NUMBER, "c1", "a1", "", "", "first-1", "US-LA", "70112"),
                             uniqueid="1700000000.1")
        v = res.variables
        assert v.get("DIALGUARD_RESULT") == "ALLOW", (v, log_path.read_text()[-3000:])
        # and on the rules: a Sunday is refused by us-la (no hours on Sundays), not for want of a guard
        await eng.set_test_clock(datetime(2026, 3, 8, 17, tzinfo=UTC))
        res = await agi_call(HOST, agi_port, "check", (LA_NUMBER, "c1", "a1", "", "", "first-2", "US-LA", "70112"),
                             uniqueid="1700000000.2")
        assert res.variables.get("DIALGUARD_REASONS") == "outside_hours", res.variables
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        await _drop_namespace(eng.redis, prefix)
        await eng.close()
    lines = log_path.read_text().splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    warm = first("engine warmed up")
    assert warm < first("agi_listening") < first("metrics_listening"), lines[:20]


async def test_warm_up_runs_as_the_guard_role(settings):
    """The FastAGI server and the dialer log in to Redis as the guard and dialer
    users, which may not SCAN (it lists key names beyond their grants): warm_up
    finds the campaigns with rules of their own by the index `campaign set`
    keeps, and warms them with everything else, instead of failing as a whole (every service start logged 'engine warm-up
    failed: NoPermissionError' and warmed nothing)."""
    from urllib.parse import quote

    from dialguard.config import parse_env_file

    env = parse_env_file((Path(os.environ["DIALGUARD_SECRETS_DIR"]) / "redis-guard.env").read_text())
    host_port = settings.redis_url.rsplit("@", 1)[-1]
    guard_url = (f"redis://{quote(env['DIALGUARD_REDIS_USER'])}:{quote(env['DIALGUARD_REDIS_PASSWORD'])}"
                 f"@{host_port}")
    prefix = f"dgtest:{uuid.uuid4().hex[:10]}"
    admin = await Engine.create(settings, Policy.load("us-tcpa,us-states"), prefix=prefix,
                                skip_caller_id_without_pool=True)
    guard = None
    try:
        await admin.set_campaign("c1")
        await admin.set_campaign("c2", rules="us-regf,us-states")
        await admin.set_campaign("c3", rules="us-tcpa,us-fl-ftsa")
        await admin.set_campaign("c4", rules="us-tcpa,us-ok")
        await admin.set_campaign("c4")  # its own rules taken back: out of the index
        assert await admin.redis.smembers(admin.keys.campaigns_with_rules) == {b"c2", b"c3"}
        guard = await Engine.create(dataclasses.replace(settings, redis_url=guard_url),
                                    Policy.load("us-tcpa,us-states"), prefix=prefix, skip_caller_id_without_pool=True)
        done = await guard.warm_up(now=MONDAY, campaigns=("c2",))
        assert done["number_plans"] and done["rule_sets_checked"] > 1
        assert "us-regf,us-states" in guard._policies  # the campaign it was given
        assert "us-tcpa,us-fl-ftsa" in guard._policies  # not given, found by the index without SCAN
        assert "us-tcpa,us-ok" not in guard._policies
        for camp in ("c1", "c2", "c3"):
            d = await guard.decide(DecisionRequest(number=LA_NUMBER, campaign=camp, agent="a1"), now=MONDAY)
            assert d.allowed, d
    finally:
        if guard is not None:
            await guard.close()
        await _drop_namespace(admin.redis, prefix)
        await admin.close()
