"""Idempotency never widens a decision (SPEC §2, issue 13): a call id used by
an earlier allowed call returns that answer only for the identical request.

Through the real FastAGI server and the engine on the stack's Redis, shipped
to a PostgreSQL of the module's own: every answer, a replay included, is
audited; a replay is marked (replay_of)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from agi.engines import EngineProvider
from agi.server import FastAGIServer
from agi.client import agi_call
from dialguard.audit.shipper import Shipper
from dialguard.decision.models import Outcome

UTC = timezone.utc
NUM = "13800138000"
CID = "+862150000001"
HOST = "127.0.0.1"
CALL = "1764900000.42"  # one Asterisk channel's uniqueid, reused for every check below


def sh(y, mo, d, h, mi=0):
    """Shanghai wall time -> UTC."""
    return datetime(y, mo, d, h, mi, tzinfo=UTC) - timedelta(hours=8)


@pytest.fixture
async def guard(make_engine, settings):
    eng = await make_engine("cn-default", settings=dataclasses.replace(settings, test_clock=True))
    for c in ("c1", "c2"):
        await eng.set_campaign(c)
    await eng.approve_caller_id(CID)
    await eng.set_test_clock(sh(2026, 9, 28, 10))  # Monday 10:00 in Shanghai, a working day
    # what the server's start-up does (agi/server.py _warm): loaded now, not under the first
    # check's store deadline (a cold first check was denied guard_unavailable on a slow machine)
    await eng.warm_up(now=sh(2026, 9, 28, 10), campaigns=("c1", "c2"))
    await eng.redis.delete(eng.keys.audit)  # the set-up's admin records are not counted here
    srv = FastAGIServer(EngineProvider(engine=eng), host=HOST, port=0)
    await srv.start()
    yield srv, eng
    await srv.shutdown(grace_s=1)


async def check(srv, number=NUM, campaign="c1", uniqueid=CALL, cid=CID, agent="a1"):
    res = await agi_call(HOST, srv.bound_port, "check", (number, campaign, agent, "", cid), uniqueid=uniqueid)
    return res.variables


async def report(srv, uniqueid=CALL, dialstatus="BUSY"):
    await agi_call(HOST, srv.bound_port, "report", (dialstatus, "", "0", "17", "d"), uniqueid=uniqueid)


async def audit(eng) -> list[dict]:
    raw = await eng.redis.xrange(eng.keys.audit)
    out = []
    for _sid, f in raw:
        f = {k.decode(): v.decode() for k, v in f.items()}
        if f.get("t") == "decision":
            out.append(f)
    return out


async def test_reused_call_id_decides_every_other_request_afresh(guard):
    """The issue's cases: after an allow under call id CALL, every different
    request under CALL is decided under every rule, denied, audited, with
    its own decision id (today's main answered ALLOW with the first id)."""
    srv, eng = guard
    first = await check(srv)
    assert first["DIALGUARD_RESULT"] == "ALLOW"
    await eng.dnc_add("13800138002")
    for other in ("c3", "c4"):  # a number already at its cap (2 in 24 h, cn-default)
        await eng.set_campaign(other)
        v = await check(srv, number="13800138003", campaign=other, uniqueid=f"u.cap.{other}")
        assert v["DIALGUARD_RESULT"] == "ALLOW"
    await eng.set_campaign("c5")
    await eng.pause("campaign", "c2")

    cases = [
        (dict(number="110"), "invalid_number"),                      # emergency number
        (dict(campaign="never-approved"), "campaign_not_approved"),
        (dict(number="13800138002"), "dnc"),                         # DNC-listed
        (dict(campaign="c2"), "paused"),                             # paused campaign
        (dict(number="13800138003", campaign="c5"), "attempt_cap"),  # at its cap
    ]
    ids = {first["DIALGUARD_DECISION_ID"]}
    for kw, reason in cases:
        v = await check(srv, **kw)
        assert v["DIALGUARD_RESULT"] == "DENY", (kw, v)
        assert reason in v["DIALGUARD_REASONS"].split(","), (kw, v)
        assert v["DIALGUARD_DECISION_ID"] not in ids, (kw, v)
        ids.add(v["DIALGUARD_DECISION_ID"])

    # outside hours (a Saturday): even the identical request is not replayed,
    # the pre-checks before Redis are never skipped
    await eng.set_test_clock(sh(2026, 10, 3, 10))
    v = await check(srv)
    assert v["DIALGUARD_RESULT"] == "DENY" and "holiday" in v["DIALGUARD_REASONS"]
    assert v["DIALGUARD_DECISION_ID"] not in ids
    ids.add(v["DIALGUARD_DECISION_ID"])
    await eng.set_test_clock(sh(2026, 9, 28, 20))  # Monday 20:00
    v = await check(srv)
    assert v["DIALGUARD_RESULT"] == "DENY" and v["DIALGUARD_REASONS"] == "outside_hours"
    ids.add(v["DIALGUARD_DECISION_ID"])

    recorded = {f["id"] for f in await audit(eng)}
    assert ids <= recorded  # every answer audited
    assert len(ids) == 8


async def test_identical_request_gets_the_same_answer_audited_as_replay(guard):
    srv, eng = guard
    a = await check(srv)
    b = await check(srv)
    assert a == b and a["DIALGUARD_RESULT"] == "ALLOW"
    # one attempt counted: a second call on the number (other call id) is still allowed
    assert (await check(srv, campaign="c2", uniqueid="u.other"))["DIALGUARD_RESULT"] == "ALLOW"
    # the same number formatted otherwise is the same request
    c = await check(srv, number="+86 138 0013 8000")
    assert c["DIALGUARD_DECISION_ID"] == a["DIALGUARD_DECISION_ID"]
    # another agent is another request (and now the number is at its cap)
    d = await check(srv, agent="a2")
    assert d["DIALGUARD_RESULT"] == "DENY" and d["DIALGUARD_REASONS"] == "attempt_cap"
    # a replayed deny is the same deny
    e = await check(srv, agent="a2")
    assert e == d

    recs = await audit(eng)
    replays = [f for f in recs if f.get("rp")]
    assert [f["rp"] for f in replays] == [a["DIALGUARD_DECISION_ID"]] * 2 + [d["DIALGUARD_DECISION_ID"]]
    assert [f["allow"] for f in replays] == ["1", "1", "0"]
    assert replays[2]["r"] == "attempt_cap"
    assert len({f["id"] for f in recs}) == len(recs) == 6  # each answer its own record


async def test_kill_switch_stops_a_replayed_allow(guard):
    srv, eng = guard
    assert (await check(srv))["DIALGUARD_RESULT"] == "ALLOW"
    await eng.pause("all")
    v = await check(srv)
    assert v["DIALGUARD_RESULT"] == "DENY" and "paused" in v["DIALGUARD_REASONS"].split(",")


async def test_after_the_outcome_the_same_request_is_a_new_attempt(guard):
    """A replay of an allow whose attempt was reported (lease released) would
    dial again without counting: it is decided afresh and counts."""
    srv, eng = guard
    a = await check(srv)
    await report(srv, dialstatus="ANSWER")
    b = await check(srv)
    assert b["DIALGUARD_RESULT"] == "ALLOW" and b["DIALGUARD_DECISION_ID"] != a["DIALGUARD_DECISION_ID"]
    await report(srv, dialstatus="ANSWER")
    c = await check(srv)  # third attempt in 24 h on the number: the cap
    assert c["DIALGUARD_RESULT"] == "DENY" and c["DIALGUARD_REASONS"] == "attempt_cap"


async def test_failover_second_allow_is_reported_on_its_own_attempt(guard):
    """One channel, two numbers (failover): the second allowed attempt is the
    call's open one, and its report applies to it (not "already reported")."""
    srv, eng = guard
    a = await check(srv)
    await report(srv, dialstatus="BUSY")
    b = await check(srv, number="13800138009")
    assert b["DIALGUARD_RESULT"] == "ALLOW" and b["DIALGUARD_DECISION_ID"] != a["DIALGUARD_DECISION_ID"]
    rec = await eng.redis.hgetall(eng.keys.call(CALL))
    assert rec[b"did"].decode() == b["DIALGUARD_DECISION_ID"] and b"rep" not in rec
    assert await eng.report_outcome(CALL, Outcome(result="busy"))
    assert (await eng.redis.hget(eng.keys.call(CALL), "rep")) == b"1"


async def test_replays_reach_postgresql_marked(guard, audit_db):
    srv, eng = guard
    a = await check(srv)
    await check(srv)  # replay
    d = await check(srv, number="110")
    shipper = Shipper(eng.settings, prefix=eng.keys.prefix, dsn=audit_db, block_ms=50)
    try:
        await asyncio.to_thread(shipper.run, True)
    finally:
        shipper.close()
    with psycopg.connect(audit_db) as conn:
        rows = conn.execute("select decision_id, allowed, reasons, replay_of from audit_decisions "
                            "order by stream_id").fetchall()
    assert len(rows) == 3
    assert rows[0][0] == a["DIALGUARD_DECISION_ID"] and rows[0][3] is None
    assert rows[1][1] is True and rows[1][3] == a["DIALGUARD_DECISION_ID"] and rows[1][0] != rows[0][0]
    assert rows[2][0] == d["DIALGUARD_DECISION_ID"] and rows[2][1] is False and rows[2][3] is None
    assert "invalid_number" in rows[2][2]


async def test_a_denied_request_is_replayed_only_briefly(make_engine):
    """A deny is repeated for a retry (within 10 s on the decision clock); later
    the same request under the same call id is a new attempt, decided afresh."""
    from dialguard.decision.models import DecisionRequest

    eng = await make_engine("cn-default", skip_caller_id_without_pool=True)
    await eng.set_campaign("c1")
    at = sh(2026, 9, 28, 10)
    req = DecisionRequest(number=NUM, campaign="c1", agent="a1", call_id="k1")
    await eng.pause("campaign", "c1")
    d1 = await eng.decide(req, at)
    d2 = await eng.decide(req, at + timedelta(seconds=9))
    assert d1.reasons == d2.reasons == ["paused"]
    assert d2.decision_id == d1.decision_id and d2.replay and not d1.replay
    await eng.resume("campaign", "c1")
    d3 = await eng.decide(req, at + timedelta(seconds=9, milliseconds=500))
    assert d3.decision == "deny" and d3.decision_id == d1.decision_id  # same request, same answer
    d4 = await eng.decide(req, at + timedelta(seconds=10))
    assert d4.allowed and d4.decision_id != d1.decision_id and not d4.replay
