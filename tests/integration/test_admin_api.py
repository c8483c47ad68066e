"""The remaining admin writes through the one authorization layer (issue 15, point 3), on the stack's
real Redis and PostgreSQL, the console served as the other web tests serve it, connected to Redis as
the `web` ACL user (so the role's grants are what is tested): override and campaign revoke, a DNC
entry added or removed, opt-out / complaint / consent, caller-ID edits, the region kill switch.
Each route: refused for the role below, allowed for the least role, the authenticated identity in the
audit whatever the body says; bad input a clear 4xx and nothing written."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import aiohttp
import psycopg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from dialguard import users as u
from dialguard.audit.db import admin_dsn
from dialguard.config import parse_env_file
from dialguard.decision.models import DecisionRequest
from dialguard.engine import Engine
from dialguard.simulate import _drop_namespace
from dialguard.web.app import make_app
from dialguard.web.security import WebSettings

pytestmark = pytest.mark.integration
PW = "a long enough passphrase"
AT_10 = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)  # Monday 10:00 in Shanghai
CID = "+861058000000"


def web_role_url(redis_url: str) -> str:
    env = parse_env_file((Path(os.environ["DIALGUARD_SECRETS_DIR"]) / "redis-web.env").read_text())
    return (f"redis://{quote(env['DIALGUARD_REDIS_USER'], safe='')}:{quote(env['DIALGUARD_REDIS_PASSWORD'], safe='')}"
            f"@{redis_url.rsplit('@', 1)[-1].split('://', 1)[-1]}")


@pytest.fixture
def people():
    """A viewer, a supervisor and a compliance user, each with a token; removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = {"viewer": f"v{tag}", "supervisor": f"s{tag}", "compliance": f"c{tag}"}
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        out = {}
        for role, n in names.items():
            u.add_user(c, n, role, PW)
            tok, tid = u.add_token(c, n)
            out[role] = {"name": n, "token": tok, "actor": f"token:{tid}:{n}"}
        yield out
        for n in names.values():
            c.execute("delete from web_users where name = %s", (n,))


@pytest.fixture
async def stack_app(settings, monkeypatch):
    """(client factory, engine on the same namespace as the admin user, settings)."""
    monkeypatch.delenv("DIALGUARD_REDIS_USER", raising=False)  # the web role's credentials are in its URL
    monkeypatch.delenv("DIALGUARD_REDIS_PASSWORD", raising=False)
    s = dataclasses.replace(settings, key_prefix=f"dgtest:{uuid.uuid4().hex[:10]}", test_clock=True)
    web_s = dataclasses.replace(s, redis_url=web_role_url(settings.redis_url))
    e = await Engine.create(s)
    await e.set_test_clock(AT_10)
    clients = []

    async def client() -> TestClient:
        c = TestClient(TestServer(make_app(web_s, WebSettings())), cookie_jar=aiohttp.CookieJar(unsafe=True))
        await c.start_server()
        clients.append(c)
        return c

    yield client, e, s
    for c in clients:
        await c.close()
    await e.close()
    r = aioredis.from_url(s.redis_url)
    await _drop_namespace(r, s.key_prefix)
    await r.aclose()


async def _api(c: TestClient, token: str, path: str, body) -> tuple[int, dict]:
    r = await c.post(path, data=json.dumps(body) if not isinstance(body, str) else body,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    return r.status, await r.json()


async def _audit(e) -> list[tuple[str, dict]]:
    return [(f[b"t"].decode(), json.loads(f[b"j"])) for _i, f in await e.redis.xrange(e.keys.audit)]


def _n() -> str:
    return "+86138" + str(uuid.uuid4().int % 10**8).zfill(8)


# route, body builder, least role, the role below, the audit record type and action/kind it writes
CASES = {
    "override_revoke": ("/api/v1/overrides/revoke", "supervisor", "viewer", "admin", "override_revoke"),
    "campaign_revoke": ("/api/v1/campaigns/revoke", "compliance", "supervisor", "admin", "campaign_revoke"),
    "dnc_add": ("/api/v1/dnc", "supervisor", "viewer", "event", "dnc_add"),
    "dnc_add_campaign": ("/api/v1/dnc", "supervisor", "viewer", "event", "dnc_add"),
    "dnc_remove": ("/api/v1/dnc", "compliance", "supervisor", "event", "dnc_remove"),
    "opt_out": ("/api/v1/events", "supervisor", "viewer", "event", "opt_out"),
    "complaint": ("/api/v1/events", "supervisor", "viewer", "event", "complaint"),
    "consent": ("/api/v1/events", "supervisor", "viewer", "event", "consent"),
    "callerid_add": ("/api/v1/callerids", "compliance", "supervisor", "admin", "callerid_add"),
    "callerid_remove": ("/api/v1/callerids", "compliance", "supervisor", "admin", "callerid_remove"),
    "callerid_cooldown": ("/api/v1/callerids", "compliance", "supervisor", "admin", "callerid_cooldown"),
    "pause_region": ("/api/v1/killswitch", "supervisor", "viewer", "admin", "pause_region"),
    "resume_region": ("/api/v1/killswitch", "supervisor", "viewer", "admin", "resume_region"),
}


async def _prepare(e, case: str, number: str, camp: str) -> dict:
    """The state the action needs, and its body (with a typed identity, which must be ignored)."""
    typed = {"actor": "chief-compliance-officer", "by": "someone-else", "why": f"ticket {case}"}
    if case == "override_revoke":
        await e.override_grant(number, why="t", approver="x", expires=datetime(2026, 3, 3, tzinfo=timezone.utc),
                               now=AT_10)
        return {"number": number, **typed}
    if case == "campaign_revoke":
        await e.set_campaign(camp)
        return {"name": camp, **typed}
    if case in ("dnc_add", "dnc_add_campaign"):
        return {"action": "add", "number": number, **({"campaign": camp} if case == "dnc_add_campaign" else {}),
                **typed}
    if case == "dnc_remove":
        await e.dnc_add(number)
        return {"action": "remove", "number": number, **typed}
    if case in ("opt_out", "complaint", "consent"):
        return {"kind": case, "number": number, **typed}
    if case == "callerid_add":
        return {"action": "add", "caller_id": number, "pool": True, "campaign": camp, **typed}
    if case in ("callerid_remove", "callerid_cooldown"):
        await e.approve_caller_id(number, pool=True)
        if case == "callerid_remove":
            return {"action": "remove", "caller_id": number, **typed}
        return {"action": "cooldown", "caller_id": number, "until": "2026-03-02T12:00:00+08:00", **typed}
    if case == "pause_region":
        return {"action": "pause", "scope": "region", "name": "US-LA", "from": "2026-03-02T00:00:00-06:00",
                "until": "2026-03-09T00:00:00-06:00", **typed}
    if case == "resume_region":
        await e.pause_region("US-LA")
        return {"action": "resume", "scope": "region", "name": "us-la", **typed}
    raise AssertionError(case)


async def _effect(e, case: str, number: str, camp: str) -> bool:
    """Whether the action is in effect in the store."""
    from dialguard.numbers import short_hash

    tag = e.keys.number_tag(number)
    flags = {k.decode(): v for k, v in (await e.redis.hgetall(e.keys.flags(tag))).items()}
    if case == "override_revoke":
        return await e.override_get(number) is None
    if case == "campaign_revoke":
        return (await e.redis.hget(e.keys.campaign(camp), "approved")) == b"0"
    if case == "dnc_add":
        return "dnc" in flags
    if case == "dnc_add_campaign":
        return await e.redis.sismember(e.keys.campaign_dnc(tag), short_hash(camp))
    if case == "dnc_remove":
        return "dnc" not in flags
    if case in ("opt_out", "complaint", "consent"):
        return {"opt_out": "optout"}.get(case, case) in flags
    ctag = e.keys.cid_tag(number)
    if case == "callerid_add":
        return (await e.redis.sismember(e.keys.approved_cids, ctag)
                and await e.redis.hexists(e.keys.pool(camp), ctag))
    if case == "callerid_remove":
        return not await e.redis.sismember(e.keys.approved_cids, ctag)
    if case == "callerid_cooldown":
        return (await e.redis.zscore(e.keys.cid_cooldown, ctag) or 0) > 0
    regions = [r["region"] for r in await e.paused_regions()]
    return ("US-LA" in regions) == (case == "pause_region")


@pytest.mark.parametrize("case", list(CASES))
async def test_each_route_refused_below_its_role_allowed_at_it_audited_as_the_token(stack_app, people, case):
    client, e, s = stack_app
    path, least, below, rtype, action = CASES[case]
    number, camp = _n(), f"adm-{uuid.uuid4().hex[:6]}"
    body = await _prepare(e, case, number, camp)
    c = await client()
    before = len(await _audit(e))
    st, ans = await _api(c, people[below]["token"], path, body)
    assert st == 403 and f"needs the role {least}" in ans["error"], (st, ans)
    assert len(await _audit(e)) == before and not await _effect(e, case, number, camp)  # nothing written

    st, ans = await _api(c, people[least]["token"], path, body)
    assert st == 200, (st, ans)
    assert ans["by"] == people[least]["actor"]
    assert await _effect(e, case, number, camp)
    recs = [(t, j) for t, j in (await _audit(e))[before:] if t == rtype]
    assert recs, await _audit(e)
    t, j = recs[-1]
    assert (j["action"] if t == "admin" else j["kind"]) == action
    assert j["actor"] == people[least]["actor"]  # authenticated, never the typed "actor"/"by"
    assert number not in json.dumps(j)  # the number is hashed and sealed in the audit, never plain
    if case != "dnc_add_campaign":
        assert j.get("why") == f"ticket {case}"
    # a higher role may too (compliance above supervisor), and no route takes the console's cookie
    r = await c.post(path, data=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status == 401


async def test_dnc_entry_is_kept_at_rest_and_enforced_then_removed(stack_app, people):
    client, e, s = stack_app
    c = await client()
    number = _n()
    await e.set_campaign("adm-dnc")
    await e.approve_caller_id(CID)
    req = DecisionRequest(number=number, campaign="adm-dnc", agent="a1", caller_id=CID)
    st, ans = await _api(c, people["supervisor"]["token"], "/api/v1/dnc", {"action": "add", "number": number})
    assert st == 200 and ans["added"] and ans["stored"] and ans["list"] == "global"
    assert "dnc" in (await e.decide(req, now=AT_10)).reasons
    tag = e.keys.number_tag(number)
    with psycopg.connect(admin_dsn(), autocommit=True) as pg:
        row = pg.execute("select source, number_enc from dnc_entries where list = 'global' and number_hash = %s",
                         (bytes.fromhex(tag),)).fetchone()
        assert row[0] == people["supervisor"]["actor"] and number[3:].encode() not in row[1]
        assert e.sealer.open(row[1]) == number
    st, ans = await _api(c, people["compliance"]["token"], "/api/v1/dnc", {"action": "remove", "number": number})
    assert st == 200 and ans["removed"] and ans["unstored"]
    assert "dnc" not in (await e.decide(req, now=AT_10)).reasons
    with psycopg.connect(admin_dsn(), autocommit=True) as pg:
        assert pg.execute("select count(*) from dnc_entries where number_hash = %s",
                          (bytes.fromhex(tag),)).fetchone()[0] == 0


async def test_party_opt_out_blocks_the_person_and_names_the_user(stack_app, people):
    client, e, s = stack_app
    c = await client()
    party = f"crm-{uuid.uuid4().hex[:8]}"
    st, ans = await _api(c, people["supervisor"]["token"], "/api/v1/events", {"kind": "opt_out", "party": party})
    assert st == 200 and ans["changed"], ans
    ev = [j for t, j in await _audit(e) if t == "event"][-1]
    assert ev["party"] is True and ev["actor"] == people["supervisor"]["actor"] and party not in json.dumps(ev)
    await e.set_campaign("adm-party")
    await e.approve_caller_id(CID)
    d = await e.decide(DecisionRequest(number=_n(), campaign="adm-party", agent="a1", caller_id=CID, party=party),
                       now=AT_10)
    assert "opted_out" in d.reasons
    # consent of a person, at all their numbers (the events store's party consent, #19)
    other = f"crm-{uuid.uuid4().hex[:8]}"
    st, ans = await _api(c, people["viewer"]["token"], "/api/v1/events", {"kind": "consent", "party": other})
    assert st == 403
    st, ans = await _api(c, people["supervisor"]["token"], "/api/v1/events", {"kind": "consent", "party": other})
    assert st == 200 and ans["changed"], ans
    assert await e.redis.hexists(e.keys.party_flags(e.keys.party_tag(other)), "consent")
    ev = [j for t, j in await _audit(e) if t == "event"][-1]
    assert ev["kind"] == "consent" and ev["party"] is True and ev["actor"] == people["supervisor"]["actor"]
    st, ans = await _api(c, people["supervisor"]["token"], "/api/v1/events", {"kind": "consent_revoke", "party": other})
    assert st == 200 and not await e.redis.hexists(e.keys.party_flags(e.keys.party_tag(other)), "consent")


BAD = [
    ("/api/v1/dnc", {"action": "add", "number": "not a number"}, 400, "number"),
    ("/api/v1/dnc", {"action": "add", "number": "+86"}, 400, "number"),
    ("/api/v1/dnc", {"action": "drop", "number": "+8613800138000"}, 400, "action"),
    ("/api/v1/dnc", {"action": "add", "number": "+8613800138000", "campaign": "global"}, 400, "global"),
    ("/api/v1/events", {"kind": "opt_out"}, 400, "give a number"),
    ("/api/v1/events", {"kind": "unsubscribe", "number": "+8613800138000"}, 400, "kind"),
    ("/api/v1/events", {"kind": "complaint", "number": "12"}, 400, "number"),
    ("/api/v1/overrides/revoke", {"number": "+8613800138999"}, 404, "no unused override"),
    ("/api/v1/overrides/revoke", {"number": "abc"}, 400, "number"),
    ("/api/v1/campaigns/revoke", {"name": "never-approved"}, 404, "never approved"),
    ("/api/v1/campaigns/revoke", {"name": ""}, 400, "name"),
    ("/api/v1/callerids", {"action": "remove", "caller_id": "+861058999999"}, 404, "unknown caller ID"),
    ("/api/v1/callerids", {"action": "cooldown", "caller_id": "+861058999999",
                           "until": "2026-03-02T12:00:00+08:00"}, 404, "unknown caller ID"),
    ("/api/v1/callerids", {"action": "cooldown", "caller_id": CID, "until": "tomorrow"}, 400, "until"),
    ("/api/v1/callerids", {"action": "cooldown", "caller_id": CID, "until": "2026-03-02T12:00:00"}, 400, "offset"),
    ("/api/v1/callerids", {"action": "cooldown", "caller_id": CID, "until": "2026-03-01T12:00:00+08:00"}, 400,
     "past"),
    ("/api/v1/callerids", {"action": "cooldown", "caller_id": CID, "until": "9999-12-31T23:59:59-05:00"}, 400,
     "out of range"),
    ("/api/v1/callerids", {"action": "add", "caller_id": "0000"}, 400, "caller_id"),
    ("/api/v1/callerids", {"action": "add", "caller_id": CID, "pool": "yes"}, 400, "pool"),
    ("/api/v1/killswitch", {"action": "pause", "scope": "region", "name": "Louisiana"}, 400, "ISO 3166-2"),
    ("/api/v1/killswitch", {"action": "pause", "scope": "region", "name": "US-LA", "from": "yesterday"}, 400,
     "from"),
    ("/api/v1/killswitch", {"action": "pause", "scope": "region", "name": "US-LA",
                            "until": "0001-01-01T00:00:00+05:00"}, 400,
     "until: time '0001-01-01T00:00:00+05:00' is out of range"),
    ("/api/v1/killswitch", {"action": "pause", "scope": "region", "name": "US-LA",
                            "from": "2026-03-09T00:00:00-06:00", "until": "2026-03-02T00:00:00-06:00"}, 400,
     "before it starts"),
    ("/api/v1/killswitch", {"action": "pause", "scope": "region"}, 400, "region"),
    ("/api/v1/killswitch", {"action": "resume", "scope": "region", "name": "US-WY"}, 404, "not paused"),
    ("/api/v1/events", "{not json", 400, "not JSON"),
]


async def test_bad_input_is_a_clear_4xx_and_writes_nothing(stack_app, people):
    client, e, s = stack_app
    c = await client()
    await e.approve_caller_id(CID)
    before = len(await _audit(e))
    keys_before = sorted([k async for k in e.redis.scan_iter(f"{s.key_prefix}:*")])
    for path, body, status, words in BAD:
        st, ans = await _api(c, people["compliance"]["token"], path, body)
        assert st == status and words in ans["error"], (path, body, st, ans)
    assert len(await _audit(e)) == before  # not one record
    assert sorted([k async for k in e.redis.scan_iter(f"{s.key_prefix}:*")]) == keys_before  # not one key
    assert await e.paused_regions() == []


def _csrf(text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', text).group(1)


async def _signed_in(client, user: str) -> TestClient:
    c = await client()
    r = await c.get("/login")
    r = await c.post("/login", data={"user": user, "password": PW, "csrf": _csrf(await r.text())},
                     allow_redirects=False)
    assert r.status == 303
    return c


async def test_console_region_kill_switch_and_actions_page(stack_app, people):
    client, e, s = stack_app
    viewer = await _signed_in(client, people["viewer"]["name"])
    page = await (await viewer.get("/")).text()
    assert 'id="region-form"' not in page
    r = await viewer.post("/killswitch", data={"action": "pause", "scope": "region", "name": "US-LA",
                                               "csrf": _csrf(page)})
    assert r.status == 403 and "pause needs the role supervisor" in await r.text()
    assert "do-dnc" not in await (await viewer.get("/actions")).text()
    r = await viewer.post("/actions/dnc", data={"action": "add", "number": _n(), "csrf": _csrf(page)})
    assert r.status == 403 and await e.paused_regions() == []

    sup = await _signed_in(client, people["supervisor"]["name"])
    page = await (await sup.get("/")).text()
    assert 'id="region-form"' in page
    r = await sup.post("/killswitch", data={"action": "pause", "scope": "region", "name": "US-LA",
                                            "from": "2026-03-02T00:00:00-06:00", "until": "bad", "csrf": _csrf(page)})
    assert r.status == 400 and "until" in await r.text() and await e.paused_regions() == []
    r = await sup.post("/killswitch", data={"action": "pause", "scope": "region", "name": "US-LA", "why": "storm"})
    assert r.status == 403 and await e.paused_regions() == []  # no CSRF token: refused
    r = await sup.post("/killswitch", data={"action": "pause", "scope": "region", "name": "US-LA", "why": "storm",
                                            "from": "2026-03-01T00:00:00-06:00", "csrf": _csrf(page)})
    text = await r.text()
    assert r.status == 200 and 'id="done"' in text and "US-LA" in text
    assert [p["region"] for p in await e.paused_regions()] == ["US-LA"]
    rec = [j for t, j in await _audit(e) if t == "admin"][-1]
    assert rec["action"] == "pause_region" and rec["actor"] == f"web:{people['supervisor']['name']}"
    await e.set_campaign("adm-region")
    await e.approve_caller_id(CID)
    d = await e.decide(DecisionRequest(number="+15045550123", campaign="adm-region", agent="a1",
                                       caller_id=CID, region="US-LA"), now=AT_10)
    assert "paused" in d.reasons  # a callee in Louisiana: calls into it are paused
    r = await sup.post("/killswitch", data={"action": "resume", "scope": "region", "name": "US-LA",
                                            "csrf": _csrf(page)})
    assert r.status == 200 and await e.paused_regions() == []

    # /actions: the supervisor may record an opt-out but not remove a DNC entry nor edit caller IDs
    number = _n()
    page = await (await sup.get("/actions")).text()
    assert 'id="form-events"' in page and 'id="form-callerids"' not in page
    r = await sup.post("/actions/events", data={"kind": "opt_out", "number": number, "party": "",
                                                "why": "asked on the phone", "csrf": _csrf(page)})
    assert r.status == 200 and 'id="done"' in await r.text()
    ev = [j for t, j in await _audit(e) if t == "event"][-1]
    assert ev["kind"] == "opt_out" and ev["actor"] == f"web:{people['supervisor']['name']}"
    r = await sup.post("/actions/dnc", data={"action": "remove", "number": number, "csrf": _csrf(page)})
    assert r.status == 403 and "dnc_remove needs the role compliance" in await r.text()

    comp = await _signed_in(client, people["compliance"]["name"])
    page = await (await comp.get("/actions")).text()
    r = await comp.post("/actions/callerids", data={"action": "cooldown", "caller_id": CID,
                                                    "until": "2026-03-02T12:00:00+08:00", "csrf": _csrf(page)})
    assert r.status == 200 and 'id="done"' in await r.text()
    assert await e.redis.zscore(e.keys.cid_cooldown, e.keys.cid_tag(CID))
    rec = [j for t, j in await _audit(e) if t == "admin"][-1]
    assert rec["action"] == "callerid_cooldown" and rec["actor"] == f"web:{people['compliance']['name']}"


async def test_openapi_describes_every_admin_route(stack_app, people):
    client, e, s = stack_app
    c = await client()
    spec = await (await c.get("/api/v1/openapi.json")).json()
    for path in ("/api/v1/overrides/revoke", "/api/v1/campaigns/revoke", "/api/v1/dnc", "/api/v1/events",
                 "/api/v1/callerids"):
        assert "post" in spec["paths"][path], path
    ks = spec["paths"]["/api/v1/killswitch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "region" in ks["properties"]["scope"]["enum"] and "until" in ks["properties"]
    assert "party" in spec["paths"]["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]["properties"]
    # the service under test is the web Redis user indeed (what the tests above show is its grants' doing)
    from redis.exceptions import NoPermissionError
    from dialguard.web.ui import ENGINE
    with pytest.raises(NoPermissionError):
        await c.server.app[ENGINE].redis.scan(0)
    with pytest.raises(NoPermissionError):  # SADD, but not on the approved caller IDs
        await c.server.app[ENGINE].redis.sadd(f"{s.key_prefix}:{{g}}:other", "x")
