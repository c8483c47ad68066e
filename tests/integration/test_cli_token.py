"""`dialguard pause|resume` with DIALGUARD_TOKEN: through the stack's `dialguard web`, as the token's user
(dialguard/remote.py), audited with that identity whatever DIALGUARD_ACTOR says."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import psycopg
import pytest

from dialguard import users as u
from dialguard.audit.db import admin_dsn
from dialguard.config import Settings
from dialguard.engine import Engine

pytestmark = pytest.mark.integration


@pytest.fixture
def tokens():
    tag = uuid.uuid4().hex[:8]
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        u.add_user(c, f"ops{tag}", "viewer", None)
        u.add_user(c, f"sup{tag}", "supervisor", None)
        yield u.add_token(c, f"ops{tag}")[0], u.add_token(c, f"sup{tag}")[0], f"sup{tag}"
        c.execute("delete from web_users where name in (%s, %s)", (f"ops{tag}", f"sup{tag}"))


def cli(token: str | None, *args: str, url: str | None = None):
    env = {**os.environ, "DIALGUARD_ACTOR": "chief-compliance-officer"}
    env.pop("DIALGUARD_TOKEN", None)
    if token:
        env["DIALGUARD_TOKEN"] = token
    if url:
        env["DIALGUARD_WEB_URL"] = url
    return subprocess.run([sys.executable, "-m", "dialguard.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


async def test_pause_with_a_token_goes_through_the_console_as_its_user(tokens):
    assert os.environ.get("DIALGUARD_WEB_PORT"), "the stack's console: `make up` writes DIALGUARD_WEB_PORT"
    viewer, sup, sup_name = tokens
    camp = f"cli-token-{uuid.uuid4().hex[:6]}"
    e = await Engine.create(Settings())
    try:
        r = cli(viewer, "pause", "--campaign", camp)
        assert r.returncode == 1 and "supervisor" in r.stderr
        assert f"camp:{camp}" not in await e.paused()
        r = cli(sup, "pause", "--campaign", camp)
        assert r.returncode == 0, r.stderr
        assert f"camp:{camp}" in await e.paused()
        r = cli(sup, "resume", "--campaign", camp)
        assert r.returncode == 0 and f"camp:{camp}" not in await e.paused()
        r = cli(sup, "pause", "--campaign", camp, url="http://127.0.0.1:1")
        assert r.returncode == 3 and "unreachable" in r.stderr  # no silent fallback to the store
        assert f"camp:{camp}" not in await e.paused()
        r = cli("dgt_AAAAAAAAAAAA_" + "A" * 43, "pause", "--campaign", camp)
        assert r.returncode == 2 and "401" in r.stderr
    finally:
        await e.resume("campaign", camp)
        await e.close()
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        for _ in range(100):
            rows = c.execute("select action, actor from audit_admin_actions where target = %s "
                             "and action in ('pause', 'resume') order by recorded_at", (f"camp:{camp}",)).fetchall()
            if len(rows) >= 3:
                break
            await asyncio.sleep(0.2)
    tid = sup.split("_")[1]
    assert rows[:2] == [("pause", f"token:{tid}:{sup_name}"), ("resume", f"token:{tid}:{sup_name}")]
