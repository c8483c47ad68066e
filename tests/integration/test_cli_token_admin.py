"""The CLI's admin writes with DIALGUARD_TOKEN go through the stack's `dialguard web` (which runs as the
`web` Redis user) as the token's user (issue 15, point 3): DNC, events, caller IDs, override and campaign
revoke, the region kill switch. Without a token they are refused unless break-glass."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime, timezone

import cli_inproc
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
    out = {}
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        for role in ("viewer", "supervisor", "compliance"):
            name = f"{role[:3]}{tag}"
            u.add_user(c, name, role, None)
            tok, tid = u.add_token(c, name)
            out[role] = (tok, f"token:{tid}:{name}")
        yield out
        c.execute("delete from web_users where name like %s", (f"%{tag}",))


def cli(token: str | None, *args: str, break_glass: bool = False):
    env = {**os.environ, "DIALGUARD_ACTOR": "chief-compliance-officer"}
    for k in ("DIALGUARD_TOKEN", "DIALGUARD_BREAK_GLASS"):
        env.pop(k, None)
    if token:
        env["DIALGUARD_TOKEN"] = token
    if break_glass:
        env["DIALGUARD_BREAK_GLASS"] = "1"
    # in-process (tests/cli_inproc.py): ~25 commands, each a second of imports as a process
    return cli_inproc.run(args, env=env, timeout=60)


async def _shipped(sql: str, args: tuple, n: int) -> list:
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        for _ in range(150):
            rows = c.execute(sql, args).fetchall()
            if len(rows) >= n:
                return rows
            await asyncio.sleep(0.2)
    return rows


async def test_cli_admin_writes_with_a_token_are_the_token_users(tokens):
    assert os.environ.get("DIALGUARD_WEB_PORT"), "the stack's console: `make up` writes DIALGUARD_WEB_PORT"
    (viewer, _), (sup, sup_actor), (comp, comp_actor) = tokens["viewer"], tokens["supervisor"], tokens["compliance"]
    number = "+86139" + str(uuid.uuid4().int % 10**8).zfill(8)
    cid = "+86105" + str(uuid.uuid4().int % 10**7).zfill(7)
    camp = f"cli-adm-{uuid.uuid4().hex[:6]}"
    e = await Engine.create(Settings())
    tag = e.keys.number_tag(number)
    try:
        # without a token and without break-glass: refused, nothing written
        r = cli(None, "dnc", "add", number)
        assert r.returncode == 1 and "off by default" in r.stderr
        r = cli(viewer, "dnc", "add", number)
        assert r.returncode == 1 and "dnc_edit needs the role supervisor" in r.stderr
        assert not await e.redis.hexists(e.keys.flags(tag), "dnc")
        r = cli(sup, "dnc", "add", number)
        assert r.returncode == 0 and sup_actor in r.stdout, r.stderr
        assert await e.redis.hexists(e.keys.flags(tag), "dnc")
        r = cli(sup, "dnc", "remove", number)
        assert r.returncode == 1 and "dnc_remove needs the role compliance" in r.stderr
        r = cli(comp, "dnc", "remove", number)
        assert r.returncode == 0 and not await e.redis.hexists(e.keys.flags(tag), "dnc"), r.stderr
        r = cli(sup, "dnc", "add", "not-a-number")
        assert r.returncode == 2

        r = cli(viewer, "optout", number)
        assert r.returncode == 1 and "supervisor" in r.stderr
        assert cli(sup, "complaint", number).returncode == 0
        assert cli(sup, "consent", number).returncode == 0
        assert await e.redis.hexists(e.keys.flags(tag), "consent")
        assert cli(sup, "consent", number, "--revoke").returncode == 0
        assert not await e.redis.hexists(e.keys.flags(tag), "consent")

        r = cli(sup, "callerid", "add", cid, "--campaign", camp)
        assert r.returncode == 1 and "callerid_edit needs the role compliance" in r.stderr
        assert cli(comp, "callerid", "add", cid, "--campaign", camp).returncode == 0
        assert await e.redis.hexists(e.keys.pool(camp), e.keys.cid_tag(cid))
        # dates a few years ahead of the (possibly shifted) clock: a fixed year would be in the past one day
        far = datetime.now(timezone.utc).year + 5
        assert cli(comp, "callerid", "cooldown", cid, "--until", f"{far}-01-01T00:00:00Z").returncode == 0
        assert cli(comp, "callerid", "remove", cid).returncode == 0
        r = cli(comp, "callerid", "remove", cid)
        assert r.returncode == 1 and "unknown caller ID" in r.stderr

        r = cli(sup, "override", "revoke", number)
        assert r.returncode == 1 and "no unused override" in r.stderr
        r = cli(comp, "campaign", "revoke", camp)
        assert r.returncode == 1 and "never approved" in r.stderr

        # the region kill switch (#19), far in the future: nothing else on the stack is affected
        win = ("--from", f"{far}-01-01T00:00:00-06:00", "--until", f"{far}-01-02T00:00:00-06:00")
        r = cli(viewer, "pause", "--region", "US-WY", *win)
        assert r.returncode == 1 and "pause needs the role supervisor" in r.stderr
        r = cli(sup, "pause", "--region", "US-WY", *win, "--why", "blizzard")
        assert r.returncode == 0 and sup_actor in r.stdout, r.stderr
        assert "US-WY" in [p["region"] for p in await e.paused_regions()]
        r = cli(sup, "pause", "--region", "US-WY", "--from", f"{far}-01-02T00:00:00Z", "--until", f"{far}-01-01T00:00:00Z")
        assert r.returncode == 2 and "before it starts" in r.stderr
        assert cli(sup, "resume", "--region", "US-WY").returncode == 0
        assert "US-WY" not in [p["region"] for p in await e.paused_regions()]
        r = cli(sup, "resume", "--region", "US-WY")
        assert r.returncode == 1 and "not paused" in r.stderr
    finally:
        await e.resume_region("US-WY")
        await e.close()

    events = await _shipped("select kind, payload->>'actor' from audit_events where number_hash = %s "
                            "order by stream_id", (tag,), 5)
    assert events == [("dnc_add", sup_actor), ("dnc_remove", comp_actor), ("complaint", sup_actor),
                      ("consent", sup_actor), ("consent_revoke", sup_actor)], events
    admin = await _shipped("select action, actor from audit_admin_actions where target = 'US-WY' "
                           "and actor = %s order by stream_id", (sup_actor,), 2)
    assert admin == [("pause_region", sup_actor), ("resume_region", sup_actor)]
