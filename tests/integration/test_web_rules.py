"""The console's rules versions page (dialguard/web/rules_versions.py) on the stack's
real Redis and PostgreSQL: a viewer sees the versions and is refused publishing;
a compliance user applies a shipped pack and an uploaded file, the guard's next
decision enforces them, the audit names the user, the diff shows what changed,
a broken file is refused with its error and stores nothing."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from datetime import datetime, timezone

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from dialguard import users as u
from dialguard.audit.db import admin_dsn
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy
from dialguard.rules_store import RulesStore
from dialguard.simulate import _drop_namespace
from dialguard.web.app import make_app
from dialguard.web.security import WebSettings

pytestmark = pytest.mark.integration
PW = "a long enough passphrase"
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)
OPEN = """pack: {name}
version: "1"
default_region: CN
hours:
  zone: callee
  weekly: {{all: ["00:00-24:00"]}}
caps:
  - {{id: per-day, max: {cap}, window: {{rolling: 24h}}, scope: number}}
"""


@pytest.fixture
def people():
    tag = uuid.uuid4().hex[:8]
    names = {"viewer": f"v{tag}", "compliance": f"c{tag}", "supervisor": f"s{tag}"}
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        for role, n in names.items():
            u.add_user(c, n, role, PW)
        yield names
        for n in names.values():
            c.execute("delete from web_users where name = %s", (n,))


@pytest.fixture
async def site(settings, people):
    s = dataclasses.replace(settings, key_prefix=f"dgtest:{uuid.uuid4().hex[:10]}")
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
    return _csrf(await (await c.get("/rules")).text())


def upload(csrf: str, text: str | bytes, filename: str = "mine.yaml", mode: str = "active", why: str = "test",
           packs=()) -> aiohttp.FormData:
    f = aiohttp.FormData()
    f.add_field("csrf", csrf)
    for p in packs:
        f.add_field("pack", p)
    f.add_field("file", text.encode() if isinstance(text, str) else text, filename=filename,
                content_type="application/x-yaml")
    f.add_field("mode", mode)
    f.add_field("why", why)
    return f


async def rules_records(e: Engine) -> list[dict]:
    return [json.loads(f[b"j"]) for _, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"rules"]


async def test_viewer_sees_versions_and_is_refused_publishing(site):
    c, e, people = site
    csrf = await login(c, people["viewer"])
    text = await (await c.get("/rules")).text()
    assert 'id="versions"' in text and "No rules version published" in text
    for path, form in (("/rules/apply", {"pack": "cn-default", "mode": "active", "why": "x"}),
                       ("/rules/activate", {"version": "1", "mode": "active", "why": "x"}),
                       ("/rules/shadow-off", {"why": "x"})):
        r = await c.post(path, data={"csrf": csrf, **form})
        assert r.status == 403 and "rules_apply needs the role compliance" in await r.text()
    csrf = await login(c, people["supervisor"])
    r = await c.post("/rules/apply", data={"csrf": csrf, "pack": "cn-default", "mode": "active", "why": "x"})
    assert r.status == 403
    assert await RulesStore(e.redis, e.keys).history() == [] and await rules_records(e) == []


async def test_compliance_applies_a_pack_and_an_upload_the_guard_enforces_them(site):
    c, e, people = site
    await e.set_campaign("c1")
    store = RulesStore(e.redis, e.keys)
    csrf = await login(c, people["compliance"])
    r = await c.post("/rules/apply", data={"csrf": csrf, "pack": "cn-default", "mode": "active", "why": "baseline"})
    assert r.status == 200 and "Version 1 is now the active rules" in await r.text()
    r = await c.post("/rules/apply", data=upload(csrf, OPEN.format(name="tight", cap=1), why="one a day"))
    text = await r.text()
    assert r.status == 200 and "Version 2 is now the active rules" in text, text
    assert await store.in_effect() == (2, None)
    req = DecisionRequest(number="13800138011", campaign="c1", agent="a1")
    assert (await e.decide(req, NOW)).allowed
    d = await e.decide(req.model_copy(update={"call_id": None}), NOW)
    assert d.reasons == ["attempt_cap"] and "tight/per-day" in d.explanations["attempt_cap"]
    recs = await rules_records(e)
    assert [(x["version"], x["mode"], x["why"], x["actor"]) for x in recs] == [
        (1, "active", "baseline", f"web:{people['compliance']}"), (2, "active", "one a day", f"web:{people['compliance']}")]
    assert recs[1]["files"][0]["ref"] == "upload:mine.yaml"

    # the same again: no new version
    r = await c.post("/rules/apply", data=upload(csrf, OPEN.format(name="tight", cap=1)))
    assert "Unchanged" in await r.text() and len(await store.history()) == 2
    # a shadow version, the diff, the listing
    r = await c.post("/rules/apply", data=upload(csrf, OPEN.format(name="tight", cap=3), mode="shadow"))
    assert "Version 3 is now the shadow rules" in await r.text()
    text = await (await c.get("/rules", params={"diff_from": "2", "diff_to": "3"})).text()
    assert '<span class="del">-  max: 1\n</span>' in text and '<span class="add">+  max: 3\n</span>' in text
    assert re.search(r"<td>3</td><td>shadow</td><td>tight</td>", text)
    assert re.search(r"<td>2</td><td>active</td><td>tight</td>", text)
    text = await (await c.get("/rules", params={"diff_from": "2", "diff_to": "9"})).text()
    assert "no rules version 2 or 9" in text
    # roll back to version 1, end the shadow trial
    r = await c.post("/rules/activate", data={"csrf": csrf, "version": "1", "mode": "active", "why": "roll back"})
    assert "Version 1 is now the active rules" in await r.text()
    r = await c.post("/rules/shadow-off", data={"csrf": csrf, "why": "trial over"})
    assert "Shadow rules off" in await r.text()
    assert await store.in_effect() == (1, None)
    assert (await rules_records(e))[-1]["actor"] == f"web:{people['compliance']}"


@pytest.mark.parametrize("form, msg", [
    ({"text": "pack: broken\nhours: [\n"}, "mine.yaml"),
    ({"text": OPEN.format(name="x", cap="many")}, "mine.yaml"),
    ({"text": b"\xff\xfe not utf-8"}, "not UTF-8"),
    ({"text": "", "filename": "", "packs": ("no-such-pack",)}, "no shipped rule pack no-such-pack"),
    ({"text": "", "filename": ""}, "no rule pack given"),
    ({"text": OPEN.format(name="x", cap=1), "why": ""}, "a reason is needed"),
])
async def test_a_broken_file_is_refused_with_its_error_and_stores_nothing(site, form, msg):
    c, e, people = site
    csrf = await login(c, people["compliance"])
    r = await c.post("/rules/apply", data=upload(csrf, **form))
    text = await r.text()
    assert r.status == 400 and msg in text and 'id="error"' in text
    assert await RulesStore(e.redis, e.keys).history() == [] and await rules_records(e) == []
    r = await c.post("/rules/activate", data={"csrf": csrf, "version": "7", "mode": "active", "why": "x"})
    assert r.status == 400 and await rules_records(e) == []
