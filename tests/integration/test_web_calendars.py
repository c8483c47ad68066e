"""The console's calendars page (dialguard/web/calendars_page.py) on the stack's real
Redis and PostgreSQL: calendars in force and until when they are known, a file
previewed by a viewer and refused publishing, published by compliance (the guard's
next decision knows the year, the audit names the user), broken files refused with
the line where reading stopped and nothing published."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from dialguard import users as u
from dialguard.audit.db import admin_dsn
from dialguard.calendars import CalendarStore
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy
from dialguard.simulate import _drop_namespace
from dialguard.web.app import make_app
from dialguard.web.security import WebSettings

pytestmark = pytest.mark.integration
PW = "a long enough passphrase"
CN_2027 = (Path(__file__).parent.parent / "scenarios" / "calendars" / "cn-2027-test.yaml").read_text()
MON_2027 = datetime(2027, 1, 4, 2, tzinfo=timezone.utc)  # Monday 2027-01-04 10:00 Shanghai


@pytest.fixture
def people():
    tag = uuid.uuid4().hex[:8]
    names = {"viewer": f"v{tag}", "compliance": f"c{tag}"}
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        for role, n in names.items():
            u.add_user(c, n, role, PW)
        yield names
        for n in names.values():
            c.execute("delete from web_users where name = %s", (n,))


@pytest.fixture
async def site(settings, people):
    s = dataclasses.replace(settings, key_prefix=f"dgtest:{uuid.uuid4().hex[:10]}", rules="cn-default")
    c = TestClient(TestServer(make_app(s, WebSettings())), cookie_jar=aiohttp.CookieJar(unsafe=True))
    await c.start_server()
    e = await Engine.create(s, Policy.load("cn-default"), skip_caller_id_without_pool=True)
    yield c, e, people
    await c.close()
    await _drop_namespace(e.redis, s.key_prefix)
    await e.close()


def _csrf(text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', text).group(1)


async def login(c: TestClient, user: str) -> str:
    c.session.cookie_jar.clear()
    r = await c.get("/login")
    r = await c.post("/login", data={"user": user, "password": PW, "csrf": _csrf(await r.text())})
    assert r.status == 200
    return _csrf(await (await c.get("/calendars")).text())


def form(csrf: str, text: str | bytes | None, action: str, code: str = "CN", why: str = "notice 2027",
         filename: str = "cn-2027.yaml") -> aiohttp.FormData:
    f = aiohttp.FormData()
    f.add_field("csrf", csrf)
    f.add_field("code", code)
    if text is not None:
        f.add_field("file", text.encode() if isinstance(text, str) else text, filename=filename,
                    content_type="application/octet-stream")
    f.add_field("why", why)
    f.add_field("action", action)
    return f


async def admin_records(e: Engine) -> list[dict]:
    return [json.loads(f[b"j"]) for _, f in await e.redis.xrange(e.keys.audit)
            if f[b"t"] == b"admin" and b"calendar" in f[b"j"]]


async def test_viewer_previews_compliance_publishes_and_the_guard_knows_the_year(site):
    c, e, people = site
    await e.set_campaign("c1")
    req = DecisionRequest(number="13800138021", campaign="c1", agent="a1")
    assert (await e.decide(req, MON_2027)).reasons == ["holiday"]  # 2027 not known yet

    csrf = await login(c, people["viewer"])
    text = await (await c.get("/calendars")).text()
    assert re.search(r'<tr class="\w+"><td>CN</td><td>2026-12-31</td>', text)
    assert "No calendar imported" in text
    r = await c.post("/calendars/import", data=form(csrf, CN_2027, "preview"))
    text = await r.text()
    assert r.status == 200 and 'id="preview-result"' in text and "2027-02-06 Sat: holiday" in text
    assert "does not know 2027" in text
    r = await c.post("/calendars/import", data=form(csrf, CN_2027, "publish"))
    assert r.status == 403 and "calendar_publish needs the role compliance" in await r.text()
    r = await c.post("/calendars/activate", data={"csrf": csrf, "version": "1", "why": "x"})
    assert r.status == 403
    assert await CalendarStore(e.redis, e.keys).history() == [] and await admin_records(e) == []

    csrf = await login(c, people["compliance"])
    r = await c.post("/calendars/import", data=form(csrf, CN_2027, "publish"))
    text = await r.text()
    assert r.status == 200 and "Calendar version 1 is now in effect (CN 2027 imported)" in text
    assert re.search(r"<td>CN</td><td>2027-12-31</td>", text)  # known one year further
    assert (await e.decide(req.model_copy(update={"number": "13800138022"}), MON_2027)).allowed
    recs = await admin_records(e)
    assert [(x["action"], x["target"], x["why"], x["actor"]) for x in recs] == [
        ("calendar_publish", "CN 2027", "notice 2027", f"web:{people['compliance']}")]
    r = await c.post("/calendars/import", data=form(csrf, CN_2027, "publish"))
    assert "Unchanged: calendar version 1" in await r.text()
    r = await c.post("/calendars/activate", data={"csrf": csrf, "version": "9", "why": "x"})
    assert r.status == 400 and len(await admin_records(e)) == 1


@pytest.mark.parametrize("text, code, msg", [
    ("calendar: CN\nyear: 2027\nholidays: [2027-02-30]\n", "CN",
     "line 3: &#x27;holidays: [2027-02-30]&#x27;: holidays: 2027-02-30: day is out of range for month"),
    ("calendar: CN\nyear: 2027\nholidays: [2027-01-01\n", "CN", "invalid YAML"),
    ("calendar: CN\nyear: 2027\nholidays: [2026-01-01]\n", "CN", "2026-01-01 is not in 2027"),
    (CN_2027, "US-LA", "the file is for calendar CN, not US-LA"),
    (b"\xff\xfe\x00garbage", "CN", "not UTF-8 text"),
    (None, "CN", "choose a calendar file"),
])
async def test_broken_files_are_refused_with_the_line_and_nothing_is_published(site, text, code, msg):
    c, e, people = site
    csrf = await login(c, people["compliance"])
    for action in ("preview", "publish"):
        r = await c.post("/calendars/import", data=form(csrf, text, action, code=code))
        body = await r.text()
        assert r.status == 400 and msg in body and 'id="error"' in body, body[-600:]
    assert await CalendarStore(e.redis, e.keys).history() == [] and await admin_records(e) == []
