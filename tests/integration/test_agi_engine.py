"""The FastAGI server and the classic script with the real engine on the
stack's Redis: what a dialplan sees for allow, deny (all reasons, next
eligible time), outcomes, opt-out, and a Redis that does not answer."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agi.engines import EngineProvider
from agi.server import FastAGIServer
from agi.client import AgiPeer, agi_call, env_block
from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.rules import Policy

ROOT = Path(__file__).resolve().parents[2]
UTC = timezone.utc
NUM = "13800138000"
CID = "+862150000001"
HOST = "127.0.0.1"


def sh(y, mo, d, h, mi=0):
    """Shanghai wall time -> UTC."""
    return datetime(y, mo, d, h, mi, tzinfo=UTC) - timedelta(hours=8)


@pytest.fixture
async def guard(make_engine, settings):
    """A cn-default engine on a test clock (Mon 2026-09-28 10:00 Shanghai) behind a FastAGI server."""
    eng = await make_engine("cn-default", settings=dataclasses.replace(settings, test_clock=True))
    for c in ("c1", "c2", "c3", "c4"):
        await eng.set_campaign(c)
    await eng.approve_caller_id(CID)
    await eng.set_test_clock(sh(2026, 9, 28, 10))
    # as the server's start-up does (agi/server.py _warm): not under the first check's deadline
    await eng.warm_up(now=sh(2026, 9, 28, 10), campaigns=("c1", "c2", "c3", "c4"))
    srv = FastAGIServer(EngineProvider(engine=eng), host=HOST, port=0)
    await srv.start()
    yield srv, eng
    await srv.shutdown(grace_s=1)


async def check(port, campaign, uniqueid, number=NUM, cid=CID):
    return (await agi_call(HOST, port, "check", (number, campaign, "a1", "", cid), uniqueid=uniqueid)).variables


async def test_allow_then_cap_with_next_eligible(guard):
    srv, eng = guard
    v1 = await check(srv.bound_port, "c1", "u.1")
    assert v1["DIALGUARD_RESULT"] == "ALLOW" and v1["DIALGUARD_REASONS"] == ""
    assert v1["DIALGUARD_CALLERID"] == CID and v1["DIALGUARD_MAXDURATION"] == "1800"
    assert v1["DIALGUARD_NEXT_ELIGIBLE"] == "" and v1["DIALGUARD_DECISION_ID"]
    assert (await check(srv.bound_port, "c2", "u.2"))["DIALGUARD_RESULT"] == "ALLOW"
    v3 = await check(srv.bound_port, "c3", "u.3")
    assert v3["DIALGUARD_RESULT"] == "DENY" and v3["DIALGUARD_REASONS"] == "attempt_cap"
    # two attempts in the rolling 24 h: eligible again when the first leaves the window
    assert v3["DIALGUARD_NEXT_ELIGIBLE"] == "2026-09-29T02:00:00Z"


async def test_retried_session_with_same_call_id_counts_once(guard):
    srv, eng = guard
    a = await check(srv.bound_port, "c1", "u.same")
    b = await check(srv.bound_port, "c1", "u.same")
    assert a["DIALGUARD_RESULT"] == b["DIALGUARD_RESULT"] == "ALLOW"
    assert a["DIALGUARD_DECISION_ID"] == b["DIALGUARD_DECISION_ID"]
    assert (await check(srv.bound_port, "c2", "u.other"))["DIALGUARD_RESULT"] == "ALLOW"


async def test_outside_hours_and_every_reason(guard):
    srv, eng = guard
    await eng.set_test_clock(sh(2026, 9, 28, 20))
    await eng.pause("campaign", "c1")
    v = await check(srv.bound_port, "c1", "u.late", cid="+862199999999")
    assert v["DIALGUARD_RESULT"] == "DENY"
    assert v["DIALGUARD_REASONS"] == "paused,caller_id_not_approved,outside_hours"
    assert v["DIALGUARD_NEXT_ELIGIBLE"] == ""  # paused: no time makes it pass


async def test_invalid_number(guard):
    srv, _ = guard
    v = await check(srv.bound_port, "c1", "u.bad", number="110")
    assert v["DIALGUARD_RESULT"] == "DENY" and v["DIALGUARD_REASONS"].startswith("invalid_number")


async def test_report_matches_the_allowed_call(guard, caplog):
    srv, eng = guard
    assert (await check(srv.bound_port, "c1", "u.r"))["DIALGUARD_RESULT"] == "ALLOW"
    with caplog.at_level(logging.DEBUG, "dialguard.agi"):
        await agi_call(HOST, srv.bound_port, "report", ("ANSWER", "95", "95", "16", "d"), uniqueid="u.r")
        await agi_call(HOST, srv.bound_port, "report", ("BUSY", "", "0", "17", "d"), uniqueid="u.unknown")
    logs = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("script") == "report"]
    assert logs[0]["result"] == "conversation" and logs[0]["matched"] is True
    assert logs[1]["matched"] is False


async def test_optout_and_complaint_block_the_number(guard):
    srv, eng = guard
    res = await agi_call(HOST, srv.bound_port, "optout", (NUM,))
    assert res.variables == {"DIALGUARD_EVENT_RESULT": "OK"}
    v = await check(srv.bound_port, "c1", "u.o")
    assert v["DIALGUARD_RESULT"] == "DENY" and v["DIALGUARD_REASONS"] == "opted_out"
    assert v["DIALGUARD_NEXT_ELIGIBLE"] == ""
    res = await agi_call(HOST, srv.bound_port, "complaint", ("+86 138 0013 8001",))
    assert res.variables == {"DIALGUARD_EVENT_RESULT": "OK"}
    v = await check(srv.bound_port, "c1", "u.c", number="13800138001")
    assert v["DIALGUARD_REASONS"] == "complained"
    res = await agi_call(HOST, srv.bound_port, "optout", ("not a number",))
    assert res.variables == {"DIALGUARD_EVENT_RESULT": "ERROR"}


async def test_redis_not_answering_denies_guard_unavailable(settings):
    dead = dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0", redis_timeout_ms=100)
    eng = await Engine.create(dead, Policy.load("cn-default"))
    srv = FastAGIServer(EngineProvider(engine=eng), host=HOST, port=0)
    await srv.start()
    try:
        res = await agi_call(HOST, srv.bound_port, "check", (NUM, "c1", "a1", "", CID))
        assert res.variables["DIALGUARD_RESULT"] == "DENY"
        assert res.variables["DIALGUARD_REASONS"] == "guard_unavailable"
        assert ("DIALGUARD_RESULT", "ALLOW") not in res.history
    finally:
        await srv.shutdown(grace_s=1)
        await eng.close()


async def test_classic_script_with_real_engine(guard, settings):
    srv, eng = guard
    env = dict(os.environ, PYTHONPATH=str(ROOT), DIALGUARD_KEY_PREFIX=eng.keys.prefix,
               DIALGUARD_TEST_CLOCK="1", DIALGUARD_REDIS_URL=settings.redis_url,
               DIALGUARD_HASH_SECRET=settings.hash_secret.decode(), DIALGUARD_RULES="cn-default")
    env.pop("DIALGUARD_AGI_ENGINE_FACTORY", None)

    async def run(args, uniqueid):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agi.dialguard_agi", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        peer = AgiPeer(proc.stdout, proc.stdin)
        await peer.send(env_block(None, args, network=False, uniqueid=uniqueid))
        res = await peer.serve()
        await proc.wait()
        return res

    r1 = await run(("check", NUM, "c1", "a1", "", CID), "k.1")
    assert r1.variables["DIALGUARD_RESULT"] == "ALLOW", r1.variables
    await run(("check", NUM, "c2", "a1", "", CID), "k.2")
    r3 = await run(("check", NUM, "c3", "a1", "", CID), "k.3")
    assert r3.variables["DIALGUARD_REASONS"] == "attempt_cap"
    # the classic script and the server share the same counters
    v = await check(srv.bound_port, "c4", "k.4")
    assert v["DIALGUARD_REASONS"] == "attempt_cap"
