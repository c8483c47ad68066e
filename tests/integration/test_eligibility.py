"""The eligibility question on the real Redis: the decision's rules and live state, nothing reserved
(dialguard/eligibility.py, decide.lua read-only mode), and the API around it (dialguard/web/app.py)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from dialguard import users as u
from dialguard.audit.db import admin_dsn
from dialguard.eligibility import Eligibility
from dialguard.decision.models import DecisionRequest
from dialguard.web.app import make_app

pytestmark = pytest.mark.integration
UTC = timezone.utc
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Tuesday 10:00 Shanghai
NIGHT = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # 22:00 Shanghai
N = "+8613800138000"


def req(number=N, campaign="c1", agent="a1"):
    return DecisionRequest(number=number, campaign=campaign, agent=agent)


async def pair(make_engine):
    """A deciding engine and an Eligibility on the same namespace."""
    e = await make_engine("cn-default", skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    ro = await make_engine("cn-default", prefix=e.keys.prefix, skip_caller_id_without_pool=True, audit=False)
    return e, Eligibility(ro)


async def test_same_answer_as_a_decision_and_nothing_reserved(make_engine):
    e, el = await pair(make_engine)
    stream_before = await e.redis.xlen(e.keys.audit)
    for _ in range(5):  # asked again and again: still allowed, nothing counted, nothing audited
        a = await el.check(req(), NOW)
        assert (a.decision, a.reasons, a.next_eligible_at) == ("allow", [], None)
    assert await e.redis.xlen(e.keys.audit) == stream_before
    # two real attempts reach cn-default's cap; the question then says so, and when
    for i in range(2):
        assert (await e.decide(req(), NOW + timedelta(minutes=i))).allowed
    d = await e.decide(req(), NOW + timedelta(minutes=5))
    a = await el.check(req(), NOW + timedelta(minutes=5))
    assert a.decision == "deny" and a.reasons == d.reasons == ["attempt_cap"]
    assert a.next_eligible_at is None  # the campaign's lifetime cap: never by waiting
    # another campaign: only the rolling 24 h cap, lifted 24 h after the first attempt
    await e.set_campaign("c2")
    a = await el.check(req(campaign="c2"), NOW + timedelta(minutes=5))
    d = await e.decide(req(campaign="c2"), NOW + timedelta(minutes=5))
    assert a.reasons == d.reasons == ["attempt_cap"]
    assert a.next_eligible_at == d.next_eligible_at == NOW + timedelta(hours=24)
    assert a.explanations == d.explanations


async def test_permanent_reasons_hours_kill_switch_and_approval(make_engine):
    e, el = await pair(make_engine)
    await e.dnc_add("+8613900139000")
    a = await el.check(req("+8613900139000"), NOW)
    assert a.reasons == ["dnc"] and a.next_eligible_at is None  # waiting does not help
    a = await el.check(req(), NIGHT)
    assert a.reasons == ["outside_hours"] and a.next_eligible_at > NIGHT
    await e.pause("campaign", "c1")
    assert "paused" in (await el.check(req(), NOW)).reasons
    await e.resume("campaign", "c1")
    assert (await el.check(req(campaign="not-approved"), NOW)).reasons == ["campaign_not_approved"]
    a = await el.check(req("12"), NOW)
    assert a.decision == "deny" and "invalid_number" in a.reasons


async def test_an_override_is_not_consumed_by_a_question(make_engine):
    e, el = await pair(make_engine)
    await e.override_grant(N, why="call back", approver="x", expires=NOW + timedelta(days=1), now=NOW)
    assert (await el.check(req(), NIGHT)).reasons == ["outside_hours"]
    assert await e.override_get(N) is not None
    assert (await e.decide(req(), NIGHT)).override  # the call itself still gets it


async def test_batch_answers_in_order_and_refuses_more_than_10000(make_engine):
    e, el = await pair(make_engine)
    numbers = [f"+86139001{i:05d}" for i in range(1200)]  # more than one pipeline chunk
    await e.dnc_add(numbers[1])
    answers = await el.check_many([req(n) for n in numbers], NOW)
    assert [a.e164 for a in answers] == numbers
    assert answers[1].reasons == ["dnc"] and all(a.decision == "allow" for i, a in enumerate(answers) if i != 1)
    with pytest.raises(ValueError, match="10,000"):
        await el.check_many([req()] * 10_001, NOW)


async def test_store_unreachable_answers_guard_unavailable(settings):
    bad = dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0", redis_timeout_ms=50)
    from dialguard.engine import Engine
    ro = await Engine.create(bad, audit=False)
    try:
        a = await Eligibility(ro).check(req(), NOW)
        assert (a.decision, a.reasons) == ("deny", ["guard_unavailable"])
        assert [x.decision for x in await Eligibility(ro).check_many([req()] * 3)] == ["deny"] * 3
    finally:
        await ro.close()


@pytest.fixture
def tokens():
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        u.add_user(c, f"crm{tag}", "viewer", None)
        u.add_user(c, f"sup{tag}", "supervisor", None)
        yield u.add_token(c, f"crm{tag}")[0], u.add_token(c, f"sup{tag}")[0]
        c.execute("delete from web_users where name in (%s, %s)", (f"crm{tag}", f"sup{tag}"))


async def test_api_needs_a_token_masks_for_viewers_and_validates(settings, make_engine, tokens):
    s = dataclasses.replace(settings, key_prefix=f"dgtest:{uuid.uuid4().hex[:10]}")
    e = await make_engine("cn-default", prefix=s.key_prefix)
    await e.set_campaign("c1")
    viewer, sup = tokens
    c = TestClient(TestServer(make_app(s)))
    await c.start_server()
    try:
        q = {"number": N, "campaign": "c1", "agent": "a1"}
        assert (await c.get("/api/v1/eligibility", params=q)).status == 401
        r = await c.get("/api/v1/eligibility", params=q, headers={"Authorization": "Bearer dgt_nope"})
        assert r.status == 401
        r = await c.get("/api/v1/eligibility", params=q, headers={"Authorization": f"Bearer {viewer}"})
        body = await r.json()
        assert r.status == 200 and body["decision"] in ("allow", "deny") and "reasons" in body
        assert body["number"] != N and body["number"].endswith(N[-2:])  # masked for a viewer
        r = await c.get("/api/v1/eligibility", params=q, headers={"Authorization": f"Bearer {sup}"})
        assert (await r.json())["number"] == N
        r = await c.get("/api/v1/eligibility", params={"number": N},
                        headers={"Authorization": f"Bearer {viewer}"})
        assert r.status == 400 and "campaign" in (await r.json())["error"]
        r = await c.post("/api/v1/eligibility", headers={"Authorization": f"Bearer {sup}"},
                         json={"campaign": "c1", "agent": "a1", "leads": [N, {"number": "+8613800138001"}]})
        res = (await r.json())["results"]
        assert r.status == 200 and [x["number"] for x in res] == [N, "+8613800138001"]
        r = await c.post("/api/v1/eligibility", headers={"Authorization": f"Bearer {sup}"},
                         json={"campaign": "c1", "leads": [N] * 10_001})
        assert r.status == 413
        r = await c.post("/api/v1/eligibility", headers={"Authorization": f"Bearer {sup}"}, data=b"{not json")
        assert r.status == 400
        spec = await (await c.get("/api/v1/openapi.json")).json()
        assert spec["openapi"].startswith("3.") and "/api/v1/eligibility" in spec["paths"]
    finally:
        await c.close()


async def test_api_kill_switch_through_the_same_authorization_and_audit(settings, make_engine, tokens):
    import json as _json
    s = dataclasses.replace(settings, key_prefix=f"dgtest:{uuid.uuid4().hex[:10]}")
    e = await make_engine("cn-default", prefix=s.key_prefix)
    viewer, sup = tokens
    c = TestClient(TestServer(make_app(s)))
    await c.start_server()
    try:
        body = {"action": "pause", "scope": "campaign", "name": "spring", "why": "complaints spike"}
        assert (await c.post("/api/v1/killswitch", json=body)).status == 401
        r = await c.post("/api/v1/killswitch", json=body, headers={"Authorization": f"Bearer {viewer}"})
        assert r.status == 403 and "supervisor" in (await r.json())["error"]
        assert await e.paused() == {}
        r = await c.post("/api/v1/killswitch", json={**body, "scope": "galaxy"},
                         headers={"Authorization": f"Bearer {sup}"})
        assert r.status == 400
        r = await c.post("/api/v1/killswitch", json={**body, "actor": "head-of-legal"},
                         headers={"Authorization": f"Bearer {sup}"})
        out = await r.json()
        assert r.status == 200 and [p["switch"] for p in out["paused"]] == ["camp:spring"]
        assert "camp:spring" in await e.paused()
        admin = [_json.loads(f[b"j"]) for _id, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"admin"]
        tid = sup.split("_")[1]
        assert admin[-1]["actor"] == out["by"] and out["by"].startswith(f"token:{tid}:sup")
        assert admin[-1]["why"] == "complaints spike"
        r = await c.get("/api/v1/killswitch", headers={"Authorization": f"Bearer {viewer}"})
        assert [p["switch"] for p in (await r.json())["paused"]] == ["camp:spring"]
        r = await c.post("/api/v1/killswitch", json={"action": "resume", "scope": "campaign", "name": "spring"},
                         headers={"Authorization": f"Bearer {sup}"})
        assert r.status == 200 and await e.paused() == {}
    finally:
        await c.close()


async def test_read_only_writes_nothing_even_an_expired_lease(make_engine, rules_file):
    policy = rules_file("pack: open\ndefault_region: CN\nmax_duration_s: 60\n"
                        "caller_id: {concurrency: 1, pool: ['+862150000001']}\n")
    e = await make_engine(policy)
    await e.set_campaign("c1")
    el = Eligibility(await make_engine(policy, prefix=e.keys.prefix, audit=False))
    assert (await e.decide(DecisionRequest(number="13800130001", campaign="c1", agent="a1", call_id="x1"),
                           NOW)).allowed
    a = await el.check(req("+8613800130002"), NOW + timedelta(seconds=5))
    assert a.reasons == ["caller_id_concurrency"] and a.next_eligible_at == NOW + timedelta(seconds=660)
    async def names():
        return sorted([k async for k in e.redis.scan_iter(match=f"{e.keys.prefix}:*")])

    keys = await names()
    dump = {k: await e.redis.dump(k) for k in keys}
    later = NOW + timedelta(seconds=700)  # the lease has expired: the answer says so ...
    a = await el.check(req("+8613800130002"), later)
    assert a.decision == "allow" and a.caller_id == "+862150000001"
    # ... yet nothing was written: not even the expired lease trimmed (a decision would)
    assert await names() == keys
    assert {k: await e.redis.dump(k) for k in keys} == dump
