"""Rules and calendar publication by compliance (dialguard/publishing.py, dialguard/web/publish.py):
the CLI with a token sends `rules apply|activate|shadow-off` and `calendar import|activate` to the
console's API (here an in-process `dialguard web` on a namespace of its own, reached over TCP);
a supervisor is refused and nothing is published; the audit names the compliance user's token."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestServer

from dialguard import users as u
from dialguard.audit.db import admin_dsn
from dialguard.engine import Engine
from dialguard.rules_store import RulesStore
from dialguard.simulate import _drop_namespace
from dialguard.web.app import make_app
from dialguard.web.security import WebSettings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CN_2027 = ROOT / "tests" / "scenarios" / "calendars" / "cn-2027-test.yaml"


@pytest.fixture
def tokens():
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        u.add_user(c, f"ps{tag}", "supervisor", None)
        u.add_user(c, f"pc{tag}", "compliance", None)
        yield u.add_token(c, f"ps{tag}")[0], u.add_token(c, f"pc{tag}")[0], f"pc{tag}"
        c.execute("delete from web_users where name in (%s, %s)", (f"ps{tag}", f"pc{tag}"))


@pytest.fixture
async def server(settings):
    s = dataclasses.replace(settings, key_prefix=f"dgtest:{uuid.uuid4().hex[:10]}")
    srv = TestServer(make_app(s, WebSettings()), host="127.0.0.1")
    await srv.start_server()
    yield srv, s
    await srv.close()
    import redis.asyncio as aioredis
    r = aioredis.from_url(s.redis_url)
    await _drop_namespace(r, s.key_prefix)
    await r.aclose()


async def cli(srv, token: str, *args: str) -> tuple[int, str, str]:
    env = {**{k: v for k, v in os.environ.items() if k != "DIALGUARD_BREAK_GLASS"},
           "DIALGUARD_TOKEN": token, "DIALGUARD_WEB_URL": str(srv.make_url("/")).rstrip("/")}
    p = await asyncio.create_subprocess_exec(sys.executable, "-m", "dialguard.cli", *args, env=env,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 60)
    return p.returncode, out.decode(), err.decode()


async def test_rules_and_calendars_are_published_by_compliance_through_the_api(server, tokens):
    srv, s = server
    sup, comp, comp_name = tokens
    e = await Engine.create(s)
    store = RulesStore(e.redis, e.keys)
    try:
        code, _out, err = await cli(srv, sup, "rules", "apply", "cn-default", "--why", "try")
        assert code == 1 and "rules_apply needs the role compliance" in err
        assert await store.current("active") is None

        code, out, err = await cli(srv, comp, "rules", "apply", "cn-default", "--why", "baseline", "--json")
        assert code == 0, err
        r = json.loads(out)
        tid = comp.split("_")[1]
        assert (r["version"], r["changed"], r["by"]) == (1, True, f"token:{tid}:{comp_name}")
        v = await store.current("active")
        assert v.version == 1 and v.actor == f"token:{tid}:{comp_name}" and v.why == "baseline"

        code, out, err = await cli(srv, comp, "rules", "apply", "cn-default,cn-carrier", "--shadow")
        assert code == 0 and "version 2 is the shadow rules" in out, err
        code, out, err = await cli(srv, comp, "rules", "shadow-off")
        assert code == 0 and "shadow rules off" in out, err
        code, out, err = await cli(srv, comp, "rules", "activate", "9")
        assert code == 1, (out, err)  # no such version: refused, nothing changed
        assert (await store.current("active")).version == 1

        code, _out, err = await cli(srv, sup, "calendar", "import", "cn", str(CN_2027))
        assert code == 1 and "calendar_publish needs the role compliance" in err
        code, out, err = await cli(srv, comp, "calendar", "import", "cn", str(CN_2027), "--why", "notice")
        assert code == 0 and "calendar version 1 is now in effect" in out, err
        code, out, err = await cli(srv, comp, "calendar", "activate", "1")
        assert code == 0, err
        admin = [(j.get("actor"), t) for t, j in
                 ((f[b"t"].decode(), json.loads(f[b"j"])) for _i, f in await e.redis.xrange(e.keys.audit))]
        assert admin and all(a == f"token:{tid}:{comp_name}" for a, _t in admin), admin
    finally:
        await e.close()


async def test_the_api_refuses_an_invalid_rules_file_and_publishes_nothing(server, tokens):
    import aiohttp

    srv, s = server
    _sup, comp, _ = tokens
    async with aiohttp.ClientSession() as http:
        r = await http.post(srv.make_url("/api/v1/rules"), headers={"Authorization": f"Bearer {comp}"},
                            json={"action": "apply", "files": [{"ref": "bad.yaml", "text": "pack: x\ncaps: 3\n"}]})
        assert r.status == 400 and "nothing published" in (await r.json())["error"]
        r = await http.post(srv.make_url("/api/v1/rules"), json={"action": "shadow_off"})
        assert r.status == 401
    e = await Engine.create(s)
    try:
        assert await RulesStore(e.redis, e.keys).current("active") is None
    finally:
        await e.close()
