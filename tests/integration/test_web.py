"""`dialguard web` on the stack's real PostgreSQL and Redis: login, sessions, CSRF, rate limit,
the kill switch through the authorization layer, languages (dialguard/web/app.py)."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from dialguard import users as u
from dialguard.audit.db import admin_dsn
from dialguard.decision.models import DecisionRequest
from dialguard.simulate import _drop_namespace
from dialguard.web.app import make_app
from dialguard.web.security import WebSettings

pytestmark = pytest.mark.integration
PW = "a long enough passphrase"
AT_10 = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)  # Monday 10:00 in Shanghai


@pytest.fixture
def people():
    """A viewer and a supervisor, removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = {"viewer": f"v{tag}", "supervisor": f"s{tag}"}
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        for role, n in names.items():
            u.add_user(c, n, role, PW)
        yield names
        for n in names.values():
            c.execute("delete from web_users where name = %s", (n,))


@pytest.fixture
async def web_app(settings):
    """The console on a namespace of its own; yields (make_client, settings)."""
    # the rules clock of the namespace at a working day's 10:00 (Engine.now), whatever the date
    s = dataclasses.replace(settings, key_prefix=f"dgtest:{uuid.uuid4().hex[:10]}", test_clock=True)
    from dialguard.engine import Engine
    e = await Engine.create(s)
    await e.set_test_clock(AT_10)
    await e.close()
    clients = []

    async def client(tls: bool = False, rules: str | None = None) -> TestClient:
        ws = dataclasses.replace(WebSettings(), tls=tls)
        app_settings = dataclasses.replace(s, rules=rules) if rules else s
        c = TestClient(TestServer(make_app(app_settings, ws)), cookie_jar=aiohttp.CookieJar(unsafe=True))
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


async def _login(c: TestClient, user: str, password: str = PW):
    r = await c.get("/login")
    token = _csrf(await r.text())
    return await c.post("/login", data={"user": user, "password": password, "csrf": token},
                        allow_redirects=False)


async def test_login_sets_a_strict_httponly_session_and_logout_ends_it(web_app, people):
    client, _ = web_app
    c = await client()
    r = await _login(c, people["viewer"], PW + "x")
    assert r.status == 401 and "Wrong user name or password" in await r.text()
    r = await _login(c, people["viewer"])
    assert r.status == 303 and r.headers["Location"] == "/"
    cookie = r.headers.getall("Set-Cookie")
    session = next(h for h in cookie if h.startswith("dg_session="))
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Secure" not in session
    home = await c.get("/")
    text = await home.text()
    assert home.status == 200 and people["viewer"] in text
    assert home.headers["X-Frame-Options"] == "DENY" and "default-src 'none'" in home.headers[
        "Content-Security-Policy"]
    r = await c.post("/logout", data={"csrf": _csrf(text)}, allow_redirects=False)
    assert r.status == 303
    c.session.cookie_jar.update_cookies({"dg_session": session.split(";")[0].split("=", 1)[1]})
    r = await c.get("/", allow_redirects=False)  # the old session id is dead in the database
    assert r.status == 303 and r.headers["Location"] == "/login"


async def test_behind_tls_the_cookie_is_secure(web_app, people):
    client, _ = web_app
    c = await client(tls=True)
    r = await c.get("/login")
    pre = _csrf(await r.text())
    assert any(h.startswith("dg_pre=") and "Secure" in h for h in r.headers.getall("Set-Cookie"))
    # the test client speaks plain HTTP, so it would not send a Secure cookie back: send it by hand
    r = await c.post("/login", data={"user": people["viewer"], "password": PW, "csrf": pre},
                     cookies={"dg_pre": pre}, allow_redirects=False)
    assert r.status == 303
    assert any(h.startswith("dg_session=") and "Secure" in h for h in r.headers.getall("Set-Cookie"))


async def test_every_post_needs_the_forms_csrf_token(web_app, people):
    client, s = web_app
    c = await client()
    r = await c.post("/login", data={"user": people["supervisor"], "password": PW}, allow_redirects=False)
    assert r.status == 403  # no pre-session token: not even a login
    assert (await _login(c, people["supervisor"])).status == 303
    for data in ({"action": "pause", "scope": "all"}, {"action": "pause", "scope": "all", "csrf": "forged"}):
        r = await c.post("/killswitch", data=data)
        assert r.status == 403 and "did not come from this console" in await r.text()
    from dialguard.engine import Engine
    e = await Engine.create(s)
    try:
        assert await e.paused() == {}
    finally:
        await e.close()


async def test_login_is_rate_limited_per_user(web_app, people):
    client, _ = web_app
    c = await client()
    for _ in range(5):
        assert (await _login(c, people["supervisor"], "wrong password!!")).status == 401
    r = await _login(c, people["supervisor"])  # the right password, too late
    assert r.status == 429 and "Too many failed sign-ins" in await r.text()
    assert (await _login(c, people["viewer"])).status == 303  # another user from the same source still may


async def test_kill_switch_viewer_refused_supervisor_pauses_audited_as_web_user(web_app, people):
    client, s = web_app
    from dialguard.engine import Engine
    e = await Engine.create(s)
    req = DecisionRequest(number="+8613800138000", campaign="web-test", agent="a1", caller_id="+8610555")
    try:
        viewer = await client()
        await _login(viewer, people["viewer"])
        page = await (await viewer.get("/")).text()
        r = await viewer.post("/killswitch", data={"action": "pause", "scope": "all", "csrf": _csrf(page)})
        assert r.status == 403 and "pause needs the role supervisor" in await r.text()
        assert await e.paused() == {}

        sup = await client()
        await _login(sup, people["supervisor"])
        page = await (await sup.get("/")).text()
        r = await sup.post("/killswitch", data={"action": "pause", "scope": "all", "csrf": _csrf(page),
                                               "why": "incident 42", "actor": "chief-compliance-officer"})
        assert r.status == 200 and 'id="done"' in await r.text()
        assert "all" in await e.paused()
        d = await e.decide(req, now=AT_10)
        assert d.decision == "deny" and "paused" in d.reasons
        entries = await e.redis.xrange(e.keys.audit)
        admin = [json.loads(f[b"j"]) for _id, f in entries if f[b"t"] == b"admin"]
        assert admin[-1]["action"] == "pause" and admin[-1]["why"] == "incident 42"
        assert admin[-1]["actor"] == f"web:{people['supervisor']}"  # authenticated, not the typed name

        page = await (await sup.get("/")).text()
        assert 'class="paused"' in page
        r = await sup.post("/killswitch", data={"action": "resume", "scope": "all", "csrf": _csrf(page)})
        assert r.status == 200 and await e.paused() == {}
        d = await e.decide(req.model_copy(update={"number": "+8613800138001"}), now=AT_10)
        assert "paused" not in d.reasons
    finally:
        await e.close()


async def test_language_is_the_operators_choice_and_remembered(web_app, people):
    client, _ = web_app
    c = await client()
    r = await c.get("/lang/zh", allow_redirects=False)
    assert r.status == 303 and any("dg_lang=zh" in h for h in r.headers.getall("Set-Cookie"))
    assert "登录" in await (await c.get("/login")).text()
    await _login(c, people["viewer"])
    assert "紧急停止" in await (await c.get("/")).text()
    await c.get("/lang/en")
    assert "Kill switch" in await (await c.get("/")).text()
    assert (await c.get("/lang/fr", allow_redirects=False)).status == 404


async def test_number_lookup_says_why_and_masks_numbers_for_viewers(web_app, people):
    client, s = web_app
    from dialguard.engine import Engine
    e = await Engine.create(s)
    try:
        await e.set_campaign("spring")
        await e.approve_caller_id("+861058000000", pool=True)
        await e.dnc_add("+8613800138000")
    finally:
        await e.close()
    viewer = await client()
    await _login(viewer, people["viewer"])
    text = await (await viewer.get("/number", params={"n": "+8613800138000", "campaign": "spring"})).text()
    assert 'id="decision" class="deny"' in text and "<code>dnc</code>" in text
    assert "+8613800138000" not in text and "+86138******00" in text  # masked, the form not refilled
    assert "not by waiting" in text
    sup = await client()
    await _login(sup, people["supervisor"])
    text = await (await sup.get("/number", params={"n": "+8613800138001", "campaign": "spring"})).text()
    assert 'id="decision" class="allow"' in text and "+8613800138001" in text
    text = await (await sup.get("/number", params={"n": "x" * 80, "campaign": "spring"})).text()
    assert "Bad input" in text
    r = await (await client()).get("/number", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"


async def test_postgresql_down_answers_503_and_healthz_says_so(settings):
    s = dataclasses.replace(settings, pg_dsn="postgresql://dialguard@127.0.0.1:1/dialguard")
    c = TestClient(TestServer(make_app(s)), cookie_jar=aiohttp.CookieJar(unsafe=True))
    await c.start_server()
    try:
        r = await c.get("/healthz")
        assert r.status == 503 and any("postgresql" in p for p in (await r.json())["problems"])
        r = await _login(c, "anyone")
        assert r.status == 503 and "postgresql unavailable" in await r.text()
        r = await c.get("/api/v1/eligibility", params={"number": "+8613800138000", "campaign": "c"},
                        headers={"Authorization": "Bearer dgt_AAAAAAAAAAAA_" + "A" * 43})
        assert r.status == 503 and (await r.json())["error"] == "postgresql unavailable"
    finally:
        await c.close()


async def test_number_history_and_live_view_come_from_the_shipped_audit(web_app, people):
    """Decisions on the stack's own namespace, shipped to PostgreSQL by its audit shipper."""
    import asyncio

    from dialguard.config import Settings
    from dialguard.engine import Engine
    client, _ = web_app
    camp, number = f"webtest-{uuid.uuid4().hex[:6]}", f"+86139{uuid.uuid4().int % 10**8:08d}"
    e = await Engine.create(Settings())
    try:
        await e.set_campaign(camp)
        await e.approve_caller_id("+861058000000")
        for i in range(3):  # cn-default: 2 attempts per number per campaign, the third denied
            await e.decide(DecisionRequest(number=number, campaign=camp, agent="a1", caller_id="+861058000000"),
                           AT_10 + timedelta(minutes=i))
    finally:
        await e.close()
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        for _ in range(100):
            n = c.execute("select count(*) from audit_decisions where campaign = %s", (camp,)).fetchone()[0]
            if n == 3:
                break
            await asyncio.sleep(0.2)
    assert n == 3, "the stack's audit shipper did not ship the decisions"
    viewer = await client()
    await _login(viewer, people["viewer"])
    text = await (await viewer.get("/number", params={"n": number, "campaign": camp})).text()
    history = text.split('id="history"')[1]
    assert history.count("<tr>") == 4 and "attempt_cap" in history and camp in history
    assert number not in text
    r = await viewer.get("/live")
    text = await r.text()
    assert r.status == 200 and r.headers["Refresh"] == "10"
    row = re.search(rf"<tr><td>{camp}</td><td>(\d+)</td><td>(\d+)</td></tr>", text)
    assert row and row.groups() == ("3", "1")
    assert "attempt_cap" in text.split('id="by-reason"')[1]


HEALTH_PACK = """pack: web-health
version: '1'
default_region: CN
caller_id:
  require_approved: true
  health:
    window_calls: 20
    window_hours: 24
    short_answer_s: 5
    rules:
      - {id: run, metric: consecutive_rejections, threshold: 3, cool_down: 24h}
"""


async def test_caller_id_page_shows_health_and_cool_down_masked_for_viewers(web_app, people, tmp_path):
    """/callerids: the figures of `dialguard callerid health` per pool caller ID with its pools; a
    caller ID cooled down by a health rule shows the rule and the end; numbers masked below supervisor."""
    client, s = web_app
    rules = tmp_path / "health.yaml"
    rules.write_text(HEALTH_PACK)
    from dialguard.engine import Engine
    from dialguard.decision.models import Outcome
    e = await Engine.create(dataclasses.replace(s, rules=str(rules)))
    bad, good, held = "+862150000001", "+862150000002", "+862150000003"
    try:
        await e.set_campaign("spring")
        await e.approve_caller_id(bad, pool=True)
        await e.approve_caller_id(good, pool=True, campaign="spring")
        await e.approve_caller_id(held, pool=True)
        await e.cooldown_caller_id(held, AT_10 + timedelta(hours=1))  # by hand: no rule to name
        for i in range(3):  # three carrier rejections in a row: the rule `run` cools `bad` down for 24 h
            d = await e.decide(DecisionRequest(number=f"1380013{i:04d}", campaign="spring", agent="a1",
                                               caller_id=bad, call_id=f"w{i}"), now=AT_10)
            assert d.allowed
            await e.report_outcome(f"w{i}", Outcome(result="failed", hangup_cause=21, sip_code=403),
                                   now=AT_10 + timedelta(seconds=i))
        d = await e.decide(DecisionRequest(number="13800139999", campaign="spring", agent="a1",
                                           caller_id=good, call_id="w9"), now=AT_10)
        assert d.allowed
        await e.report_outcome("w9", Outcome(result="conversation", talk_s=60, hangup_cause=16), now=AT_10)
    finally:
        await e.close()
    end = (AT_10 + timedelta(seconds=2, hours=24)).isoformat(timespec="seconds")

    viewer = await client(rules=str(rules))
    await _login(viewer, people["viewer"])
    home = await (await viewer.get("/")).text()
    assert 'href="/callerids"' in home  # in the navigation
    r = await viewer.get("/callerids")
    text = await r.text()
    assert r.status == 200 and 'id="callerids"' in text
    assert bad not in text and good not in text
    rows = {m.group(1): m.group(0) for m in re.finditer(r'<tr class="cid"><td>([^<]+)</td>.*?</tr>', text)}
    assert set(rows) == {"+86215*****01", "+86215*****02", "+86215*****03"}
    cooled, fine = rows["+86215*****01"], rows["+86215*****02"]
    # calls 3, answer 0 %, short 0 %, rejections 100 %, run 3, complaints and opt-outs 0 per 1,000
    assert "<td>global</td><td>3</td><td>0.0%</td><td>0.0%</td><td>100.0%</td><td>3</td><td>0.0</td><td>0.0</td>" in cooled
    assert f'class="cooling">until {end}: run (consecutive_rejections)</td>' in cooled
    assert "<td>spring</td><td>1</td><td>100.0%</td><td>0.0%</td><td>0.0%</td><td>0</td>" in fine
    assert 'class="ok">-</td>' in fine
    held_until = (AT_10 + timedelta(hours=1)).isoformat(timespec="seconds")
    assert f'class="cooling">until {held_until}: set by an admin</td>' in rows["+86215*****03"]

    sup = await client(rules=str(rules))
    await _login(sup, people["supervisor"])
    text = await (await sup.get("/callerids")).text()
    assert f"<td>{bad}</td>" in text and f"<td>{good}</td>" in text and "until " + end in text
    # in Chinese too
    await sup.get("/lang/zh")
    text = await (await sup.get("/callerids")).text()
    assert "主叫号码" in text and "接通率" in text and f"至 {end}：run (consecutive_rejections)" in text
    assert f"至 {held_until}：管理员设置" in text
    # read-only and signed-in only
    r = await (await client()).get("/callerids", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"
    assert re.findall(r'action="([^"]+)"', text) == ["/logout"]  # no form but signing out
