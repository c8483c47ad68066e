"""Four eyes on the stack's real PostgreSQL and Redis (dialguard/approvals.py, dialguard/web/foureyes.py):
an override or a campaign is requested by one user and takes effect only when a different compliance
user approves it; both identities in the audit; the same user, a lower role, a second decision refused."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import datetime, timezone

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from dialguard import users as u
from dialguard.audit.db import admin_dsn
from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.simulate import _drop_namespace
from dialguard.web.app import make_app
from dialguard.web.security import WebSettings

pytestmark = pytest.mark.integration
PW = "a long enough passphrase"
AT_10 = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)  # Monday 10:00 in Shanghai
AT_22 = datetime(2026, 3, 2, 14, 0, tzinfo=timezone.utc)  # Monday 22:00: outside calling hours


@pytest.fixture
def people():
    """A viewer, a supervisor and two compliance users, removed afterwards (with their requests)."""
    tag = uuid.uuid4().hex[:8]
    names = {"viewer": f"v{tag}", "supervisor": f"s{tag}", "c1": f"c{tag}", "c2": f"d{tag}"}
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        for key, n in names.items():
            u.add_user(c, n, key if key in ("viewer", "supervisor") else "compliance", PW)
        yield names
        for n in names.values():
            c.execute("delete from web_users where name = %s", (n,))


@pytest.fixture
async def web_app(settings):
    s = dataclasses.replace(settings, key_prefix=f"dgtest:{uuid.uuid4().hex[:10]}", test_clock=True)
    e = await Engine.create(s)
    await e.set_test_clock(AT_10)
    await e.close()
    clients = []

    async def client() -> TestClient:
        c = TestClient(TestServer(make_app(s, WebSettings())), cookie_jar=aiohttp.CookieJar(unsafe=True))
        await c.start_server()
        clients.append(c)
        return c

    yield client, s
    for c in clients:
        await c.close()
    import redis.asyncio as aioredis
    r = aioredis.from_url(s.redis_url)
    await _drop_namespace(r, s.key_prefix)
    await r.aclose()


def _csrf(text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', text).group(1)


async def _as(client, user: str) -> TestClient:
    c = await client()
    r = await c.get("/login")
    r = await c.post("/login", data={"user": user, "password": PW, "csrf": _csrf(await r.text())},
                     allow_redirects=False)
    assert r.status == 303
    return c


async def _post(c: TestClient, page: str, action: str, **data):
    text = await (await c.get(page)).text()
    r = await c.post(action, data={**data, "csrf": _csrf(text)})
    return r.status, await r.text()


async def test_override_takes_effect_only_when_another_compliance_user_approves(web_app, people):
    client, s = web_app
    e = await Engine.create(s)
    number = "+8613800138123"
    req = DecisionRequest(number=number, campaign="fe", agent="a1", caller_id="+861058000000")
    try:
        await e.set_campaign("fe")
        await e.approve_caller_id("+861058000000")
        denied = await e.decide(req, now=AT_22)
        assert not denied.allowed and "outside_hours" in denied.reasons

        viewer = await _as(client, people["viewer"])
        st, text = await _post(viewer, "/overrides", "/overrides/request", number=number, why="callback", hours="2")
        assert st == 403 and "override_request needs the role supervisor" in text

        sup = await _as(client, people["supervisor"])
        st, text = await _post(sup, "/overrides", "/overrides/request", number=number, campaign="fe",
                               why="customer asked for a callback", hours="24", lifts="",
                               requested_by="someone-else")  # a typed identity is ignored
        assert st == 200 and 'id="done"' in text, text
        rid = int(re.search(r"Request (\d+) sent", text).group(1))
        assert await e.override_get(number) is None  # nothing in effect before the approval
        assert number not in (await (await viewer.get("/overrides")).text())  # masked for a viewer

        # the requester may not approve (a supervisor, and it is their own request)
        st, text = await _post(sup, "/overrides", f"/requests/{rid}/decide", decision="approve")
        assert st == 403 and "override_approve needs the role compliance" in text
        # a compliance user may not approve their own request either (four eyes)
        c1 = await _as(client, people["c1"])
        st, text = await _post(c1, "/overrides", "/overrides/request", number="+8613800138124", why="own", hours="1")
        own = int(re.search(r"Request (\d+) sent", text).group(1))
        st, text = await _post(c1, "/overrides", f"/requests/{own}/decide", decision="approve")
        assert st == 403 and "four eyes" in text
        assert await e.override_get("+8613800138124") is None
        assert f'id="approve-{own}"' not in text and f'id="approve-{rid}"' in text  # no button for one's own

        c2 = await _as(client, people["c2"])
        st, text = await _post(c2, "/overrides", f"/requests/{rid}/decide", decision="approve", note="ok")
        assert st == 200 and f"Request {rid} approved" in text
        grant = await e.override_get(number)
        assert grant is not None and grant["campaign_tag"]
        st, text = await _post(c1, "/overrides", f"/requests/{rid}/decide", decision="reject")
        assert st == 409 and "already approved" in text  # decided once

        rec = [json.loads(f[b"j"]) for _i, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"override"][-1]
        assert rec["requested_by"] == f"web:{people['supervisor']}" and rec["approver"] == f"web:{people['c2']}"
        assert rec["request"] == rid and rec["why"] == "customer asked for a callback"

        used = await e.decide(req, now=AT_22)
        assert used.allowed and used.override  # the grant turned the deny into an allow, once
        assert not (await e.decide(req, now=AT_22)).allowed
    finally:
        await e.close()
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        row = c.execute("select status, requested_user, decided_user, decided_by, number_enc <> '' "
                        "from approval_requests where id = %s", (rid,)).fetchone()
        assert row == ("approved", people["supervisor"], people["c2"], f"web:{people['c2']}", True)
        # no plaintext number at rest
        assert number not in json.dumps(c.execute("select row_to_json(a) from approval_requests a "
                                                  "where id = %s", (rid,)).fetchone()[0])
        # the database checks the four eyes too, and a decision is final
        with pytest.raises(psycopg.errors.CheckViolation):
            c.execute("update approval_requests set status = 'approved', decided_user = requested_user, "
                      "decided_by = 'x', decided_at = now() where id = %s", (own,))
        with pytest.raises(psycopg.errors.RaiseException):
            c.execute("update approval_requests set status = 'rejected' where id = %s", (rid,))
        c.execute("delete from approval_requests where id in (%s, %s)", (rid, own))


async def test_campaign_places_no_call_until_approved_by_another_compliance_user(web_app, people):
    client, s = web_app
    e = await Engine.create(s)
    camp = f"spring-{uuid.uuid4().hex[:6]}"
    req = DecisionRequest(number="+8613800138200", campaign=camp, agent="a1", caller_id="+861058000000")
    try:
        await e.approve_caller_id("+861058000000")
        assert "campaign_not_approved" in (await e.decide(req, now=AT_10)).reasons
        from dialguard.campaigns.store import CampaignError, Store
        store = await Store.open(s.pg_dsn)
        await store.create_campaign(camp)
        with pytest.raises(CampaignError, match="not approved"):
            await store.set_state(camp, "running")  # the dialer cannot start it
        sup = await _as(client, people["supervisor"])
        st, text = await _post(sup, "/campaigns", "/campaigns/request", name=camp, purpose="renewals",
                               scope="2026 customers", caps="2 a day", hours="09:00-20:00", why="Q2",
                               start="2026-03-01T00:00:00+08:00", end="2026-04-01T00:00:00+08:00")
        assert st == 200 and 'id="done"' in text, text
        rid = int(re.search(r"Request (\d+) sent", text).group(1))
        assert "campaign_not_approved" in (await e.decide(req, now=AT_10)).reasons
        st, text = await _post(sup, "/campaigns", "/campaigns/request", name="x", purpose="p", scope="s",
                               caps="c", hours="h", why="w", start="2026-04-01T00:00:00+08:00",
                               end="2026-03-01T00:00:00+08:00")
        assert st == 400 and "end must be after start" in text

        c1 = await _as(client, people["c1"])
        st, text = await _post(c1, "/campaigns", f"/requests/{rid}/decide", decision="approve")
        assert st == 200 and f"Request {rid} approved" in text
        d = await e.decide(req, now=AT_10)
        assert "campaign_not_approved" not in d.reasons and d.allowed
        assert (await store.set_state(camp, "running")).state == "running"  # now the dialer may
        admin = [json.loads(f[b"j"]) for _i, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"admin"][-1]
        assert admin["action"] == "campaign_approve" and admin["actor"] == f"web:{people['c1']}"
        assert admin["requested_by"] == f"web:{people['supervisor']}" and admin["purpose"] == "renewals"
    finally:
        await e.close()
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            c.execute("delete from approval_requests where requested_user = %s", (people["supervisor"],))
            c.execute("delete from dialer_campaigns where name = %s", (camp,))
        await store.close()


def _cli(token: str, *args: str):
    env = {**os.environ, "DIALGUARD_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "dialguard.cli", "request", *args], env=env,
                          capture_output=True, text=True, timeout=60)


async def test_cli_requests_and_approves_through_the_api_as_two_users():
    """The stack's `dialguard web` (make up) and its namespace: the CLI with each user's token."""
    assert os.environ.get("DIALGUARD_WEB_PORT"), "the stack's console: `make up` writes DIALGUARD_WEB_PORT"
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        u.add_user(c, f"s{tag}", "supervisor", None)
        u.add_user(c, f"c{tag}", "compliance", None)
        sup, comp = u.add_token(c, f"s{tag}")[0], u.add_token(c, f"c{tag}")[0]
    number = f"+86138{int(tag, 16) % 10**8:08d}"
    e = await Engine.create(Settings())
    try:
        r = _cli(sup, "override", number, "--reason", "callback", "--expires", "1h", "--json")
        assert r.returncode == 0, r.stderr
        rid = json.loads(r.stdout)["id"]
        r = _cli(sup, "approve", str(rid))
        assert r.returncode == 1 and "compliance" in r.stderr
        r = _cli(comp, "override", number, "--reason", "self", "--json")
        own = json.loads(r.stdout)["id"]
        r = _cli(comp, "approve", str(own))
        assert r.returncode == 1 and "four eyes" in r.stderr
        assert await e.override_get(number) is None  # neither request is in effect yet
        r = _cli(comp, "list", "--pending", "--json")
        assert {x["id"] for x in json.loads(r.stdout)["requests"]} >= {rid, own}
        r = _cli(comp, "approve", str(rid), "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        tid_s, tid_c = sup.split("_")[1], comp.split("_")[1]
        assert out["requested_by"] == f"token:{tid_s}:s{tag}" and out["approved_by"] == f"token:{tid_c}:c{tag}"
        assert (await e.override_get(number))["id"] == out["grant"]
        r = _cli(comp, "reject", str(own))
        assert r.returncode == 1  # own request: neither approve nor reject
        env = {k: v for k, v in os.environ.items() if k != "DIALGUARD_TOKEN"}
        r = subprocess.run([sys.executable, "-m", "dialguard.cli", "request", "list"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "DIALGUARD_TOKEN" in r.stderr
    finally:
        await e.override_revoke(number)
        await e.close()
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            c.execute("delete from approval_requests where requested_user in (%s, %s)", (f"s{tag}", f"c{tag}"))
            c.execute("delete from web_users where name in (%s, %s)", (f"s{tag}", f"c{tag}"))
        await asyncio.sleep(0)


async def _api(c: TestClient, token: str, path: str, body: dict) -> tuple[int, dict]:
    r = await c.post(path, data=json.dumps(body),
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    return r.status, await r.json()


async def test_campaign_rules_are_shipped_pack_names_never_a_file_on_the_server(web_app, people, tmp_path):
    """A campaign's own packs, from the console or the API, are shipped pack names: a path is a 400
    that names the packs allowed, reads nothing (no line of the file in the answer, /dev/zero answered
    at once) and stores nothing; an approval refuses a request stored with a path before that rule."""
    client, s = web_app
    e = await Engine.create(s)
    secret = tmp_path / "fakeshadow"
    secret.write_text("alice:$6$abc$secrethash:19000:\n")
    evil = tmp_path / "evil.yaml"
    evil.write_text("pack: evil\n")  # a valid pack: its content could change after an approval
    camp, camp2 = f"rules-{uuid.uuid4().hex[:6]}", f"rules-{uuid.uuid4().hex[:6]}"
    fields = dict(purpose="renewals", scope="2026 customers", caps="2 a day", hours="09:00-20:00", why="Q2")
    shipped = "cn-carrier, cn-default, uk-ofcom, us-al"  # the start of the list the refusal gives
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        token = u.add_token(c, people["supervisor"])[0]
    try:
        sup = await _as(client, people["supervisor"])
        for rules in (str(secret), str(evil), "/dev/zero", "../../tmp/x", "cn-default,/etc/passwd", "CN-DEFAULT"):
            st, text = await asyncio.wait_for(_post(sup, "/campaigns", "/campaigns/request", name=camp,
                                                    rules=rules, **fields), 10)
            assert st == 400 and "not a shipped rule pack" in text and shipped in text, (rules, text[-600:])
            assert "never a file" in text and "secrethash" not in text and "alice" not in text
            st, ans = await asyncio.wait_for(_api(sup, token, "/api/v1/campaigns",
                                                  {"name": camp, "rules": rules, **fields}), 10)
            assert st == 400 and "not a shipped rule pack" in ans["error"] and shipped in ans["error"], ans
            assert "secrethash" not in ans["error"]
        st, ans = await _api(sup, token, "/api/v1/campaigns", {"name": camp, "rules": ["cn-default"], **fields})
        assert st == 400 and "rules: text expected" in ans["error"]
        with psycopg.connect(admin_dsn(), autocommit=True) as c:  # nothing stored
            assert c.execute("select count(*) from approval_requests where requested_user = %s",
                             (people["supervisor"],)).fetchone()[0] == 0
        assert not await e.redis.exists(e.keys.campaign(camp))

        # shipped names: requested, approved, enforced as named
        st, text = await _post(sup, "/campaigns", "/campaigns/request", name=camp, rules=" cn-default , us-tcpa",
                               **fields)
        assert st == 200 and 'id="done"' in text, text[-600:]
        rid = int(re.search(r"Request (\d+) sent", text).group(1))
        st, ans = await _api(sup, token, "/api/v1/campaigns", {"name": camp2, "rules": "cn-default", **fields})
        assert st == 201, ans
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            assert c.execute("select subject->>'rules' from approval_requests where id = %s",
                             (rid,)).fetchone()[0] == "cn-default,us-tcpa"
        c1 = await _as(client, people["c1"])
        st, text = await _post(c1, "/campaigns", f"/requests/{rid}/decide", decision="approve")
        assert st == 200 and f"Request {rid} approved" in text
        assert await e.redis.hget(e.keys.campaign(camp), "rules") == b"cn-default,us-tcpa"

        # a request stored with a file before the console took names only: not approvable, rejectable
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            old = c.execute("insert into approval_requests (kind, subject, why, requested_user, requested_by) "
                            "values ('campaign', %s, 'old', %s, %s) returning id",
                            (json.dumps({"name": camp2, "rules": str(evil), "start": None, "end": None, **fields}),
                             people["supervisor"], f"web:{people['supervisor']}")).fetchone()[0]
        st, text = await _post(c1, "/campaigns", f"/requests/{old}/decide", decision="approve")
        assert st == 400 and f"request {old} cannot be approved" in text and "not a shipped rule pack" in text
        assert not await e.redis.exists(e.keys.campaign(camp2))
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            assert c.execute("select status from approval_requests where id = %s", (old,)).fetchone()[0] == "pending"
        st, text = await _post(c1, "/campaigns", f"/requests/{old}/decide", decision="reject")
        assert st == 200 and f"Request {old} rejected" in text
    finally:
        await e.close()
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            c.execute("delete from approval_requests where requested_user = %s", (people["supervisor"],))


async def test_out_of_range_times_and_bad_lifts_are_400(web_app, people):
    """Inputs that raised OverflowError or TypeError (a 500) are a 400 that says what is wrong, and store nothing."""
    client, s = web_app
    fields = dict(name=f"far-{uuid.uuid4().hex[:6]}", purpose="p", scope="s", caps="c", hours="h", why="w")
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        token = u.add_token(c, people["supervisor"])[0]
    try:
        sup = await _as(client, people["supervisor"])
        st, text = await _post(sup, "/campaigns", "/campaigns/request", end="9999-12-31T23:59:59-05:00", **fields)
        assert st == 400 and "end: time" in text and "out of range" in text, text[-600:]
        for when in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"):
            st, ans = await _api(sup, token, "/api/v1/campaigns", {**fields, "start": when})
            assert st == 400 and ans["error"].startswith("start: time") and "out of range" in ans["error"], ans
        for lifts in ([[1]], [1, "attempt_cap"], [None], {"attempt_cap": 1}):
            st, ans = await _api(sup, token, "/api/v1/overrides",
                                 {"number": "+8613800138000", "why": "callback", "lifts": lifts})
            assert st == 400 and ans["error"].startswith("lifts: a list of reason codes"), (lifts, ans)
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            assert c.execute("select count(*) from approval_requests where requested_user = %s",
                             (people["supervisor"],)).fetchone()[0] == 0
    finally:
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            c.execute("delete from approval_requests where requested_user = %s", (people["supervisor"],))
