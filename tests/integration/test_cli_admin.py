"""Admin commands change the next decision (real Redis, own key prefix)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import cli_inproc
import psycopg
import pytest

from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy

NOW = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)  # Mon 10:00 Shanghai


def cli(prefix, *args, **env_extra):
    """`dialguard ARGS` on key prefix `prefix`, in this process (tests/cli_inproc.py);
    cli_process for a real one (a pause seen by another process's engine, Redis down at start)."""
    return cli_inproc.run(args, env={**os.environ, "DIALGUARD_KEY_PREFIX": prefix, **env_extra})


def cli_process(prefix, *args, **env_extra):
    env = {**os.environ, "DIALGUARD_KEY_PREFIX": prefix, **env_extra}
    return subprocess.run([sys.executable, "-m", "dialguard.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env)


@pytest.fixture(scope="module")
def admin_db(cluster):
    """A migrated database of the module's own cluster: `dnc add` keeps dnc_entries
    there, not in the stack's shared database."""
    from dialguard.audit import migrate as m
    from dialguard.audit.db import sql_dirs

    cluster.create_db("dgadmin")
    with psycopg.connect(cluster.dsn("dgadmin"), autocommit=True) as conn:
        m.migrate(conn, sql_dirs(), writers=["dg_service"])
    return cluster.dsn("dgadmin", "dg_service")


@pytest.fixture(autouse=True)
def _own_db(admin_db, monkeypatch):
    monkeypatch.setenv("DIALGUARD_PG_DSN", admin_db)


REDIS_DOWN = {"DIALGUARD_REDIS_URL": "redis://127.0.0.1:1/0"}


async def test_admin_commands_take_effect(settings, tmp_path):
    prefix = f"dgcli:{uuid.uuid4().hex[:8]}"
    rules = tmp_path / "r.yaml"
    rules.write_text("pack: r\ndefault_region: CN\ncaller_id: {require_approved: true}\n")
    e = await Engine.create(Settings(key_prefix=prefix), Policy.load(str(rules)))

    async def decide(number="13800138000", campaign="c1", cid="+862150000001"):
        return (await e.decide(DecisionRequest(number=number, campaign=campaign, agent="a", caller_id=cid),
                               now=NOW)).reasons

    try:
        assert await decide() == ["campaign_not_approved", "caller_id_not_approved"]
        assert cli(prefix, "campaign", "approve", "c1").returncode == 0
        assert cli(prefix, "callerid", "add", "021 5000 0001").returncode == 0
        assert await decide() == []
        assert cli(prefix, "pause").returncode == 0
        assert await decide("13800138001") == ["paused"]
        assert cli(prefix, "resume").returncode == 0
        assert cli(prefix, "pause", "--caller-id", "+862150000001").returncode == 0
        assert await decide("13800138001") == ["paused"]
        assert cli(prefix, "resume", "--caller-id", "+862150000001").returncode == 0
        assert cli(prefix, "pause", "--campaign", "c1").returncode == 0
        assert await decide("13800138001") == ["paused"]
        assert cli(prefix, "resume", "--campaign", "c1").returncode == 0
        assert cli(prefix, "dnc", "add", "13800138002").returncode == 0
        assert await decide("13800138002") == ["dnc"]
        assert cli(prefix, "dnc", "remove", "13800138002").returncode == 0
        assert cli(prefix, "dnc", "add", "13800138002", "--campaign", "c1").returncode == 0
        assert await decide("13800138002") == ["dnc"]
        assert await decide("13800138002", campaign="c2") == ["campaign_not_approved"]
        assert cli(prefix, "optout", "+86 138 0013 8003").returncode == 0
        assert await decide("13800138003") == ["opted_out"]
        assert cli(prefix, "complaint", "13800138004").returncode == 0
        assert await decide("13800138004") == ["complained"]
        assert cli(prefix, "callerid", "cooldown", "+862150000001", "--until", "2026-11-23T03:00:00Z").returncode == 0
        assert await decide("13800138005") == ["caller_id_not_approved"]
        assert cli(prefix, "campaign", "revoke", "c1").returncode == 0
        assert "campaign_not_approved" in await decide("13800138006")
        # failures: clear message and documented exit code
        p = cli(prefix, "optout", "not-a-number")
        assert p.returncode == 2 and "unparseable" in p.stderr
        p = cli(prefix, "pause", "--campaign", "c1", "--caller-id", "+862150000001")
        assert p.returncode == 2 and "not both" in p.stderr
        env_bad = {**os.environ, "DIALGUARD_REDIS_URL": "redis://127.0.0.1:1/0"}
        p = subprocess.run([sys.executable, "-m", "dialguard.cli", "optout", "13800138000"], capture_output=True,
                           text=True, timeout=60, env=env_bad)
        assert p.returncode == 3 and "Redis unreachable" in p.stderr
    finally:
        from dialguard.simulate import _drop_namespace
        await _drop_namespace(e.redis, prefix)
        await e.close()


async def test_pause_status_json_and_kill_switch_during_decisions(settings, tmp_path):
    """`pause` flipped while decisions run: every decision that starts after the command
    returned is denied `paused`, on another process's engine; `resume` lifts it."""
    prefix = f"dgcli:{uuid.uuid4().hex[:8]}"
    rules = tmp_path / "r.yaml"
    rules.write_text("pack: r\ndefault_region: CN\n")
    # The subject is the kill switch, not the store's deadline (test_failure.py has that):
    # 4 deciders and 2 CLI processes on a 2-core machine running both CI passes stalled
    # one EVALSHA past the 200 ms default once (denied guard_unavailable, stop 24's CI).
    e = await Engine.create(Settings(key_prefix=prefix, redis_timeout_ms=5000), Policy.load(str(rules)))
    try:
        await e.set_campaign("c1")
        await e.approve_caller_id("+862150000001", pool=True)
        await e.warm_up(now=NOW, campaigns=("c1",))
        assert json.loads(cli(prefix, "pause", "--status", "--json").stdout) == {"paused": []}
        assert "nothing is paused" in cli(prefix, "status").stdout.splitlines()

        log: list[tuple[float, float, list[str]]] = []
        stop = asyncio.Event()

        async def dialer(k):
            i = 0
            while not stop.is_set():
                t0 = time.monotonic()
                d = await e.decide(DecisionRequest(number=f"1380013{k}{i:03d}", campaign="c1", agent=f"a{k}"),
                                   now=NOW)
                log.append((t0, time.monotonic(), d.reasons))
                i = (i + 1) % 1000

        tasks = [asyncio.create_task(dialer(k)) for k in range(4)]
        await asyncio.sleep(0.3)
        t_pause = time.monotonic()
        p = await asyncio.to_thread(cli_process, prefix, "pause", "--json")
        t_paused = time.monotonic()
        assert p.returncode == 0 and json.loads(p.stdout) == {"action": "pause", "scope": "all", "name": None}
        await asyncio.sleep(0.3)
        t_resume = time.monotonic()
        assert (await asyncio.to_thread(cli_process, prefix, "resume")).returncode == 0
        t_resumed = time.monotonic()
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*tasks)
        before = [r for t0, t1, r in log if t1 < t_pause]
        during = [r for t0, t1, r in log if t_paused < t0 and t1 < t_resume]
        after = [r for t0, t1, r in log if t0 > t_resumed]
        assert before and during and after
        assert all(r == [] for r in before)
        assert all(r == ["paused"] for r in during), {tuple(r) for r in during}
        assert all(r == [] for r in after)

        # every scope shows in --status, caller IDs by number when a pool holds them
        assert cli(prefix, "pause").returncode == 0
        assert cli(prefix, "pause", "--campaign", "c1").returncode == 0
        assert cli(prefix, "pause", "--caller-id", "021 5000 0001").returncode == 0
        st = json.loads(cli(prefix, "pause", "--status", "--json").stdout)["paused"]
        assert [(x["scope"], x["name"]) for x in st] == [("all", None), ("campaign", "c1"),
                                                         ("caller_id", "+862150000001")]
        assert all(x["since"] for x in st)
        text = cli(prefix, "status").stdout
        assert "all outbound calls" in text and "campaign c1" in text and "caller ID +862150000001" in text
        for args in ([], ["--campaign", "c1"], ["--caller-id", "+862150000001"]):
            p = cli(prefix, "resume", *args, "--json")
            assert p.returncode == 0 and json.loads(p.stdout)["action"] == "resume"
        assert json.loads(cli(prefix, "status", "--json").stdout)["paused"] == []
        # failures
        p = cli(prefix, "pause", "--status", "--campaign", "c1")
        assert p.returncode == 2 and "alone" in p.stderr
        p = cli(prefix, "pause", "--status", **REDIS_DOWN)
        assert p.returncode == 3 and "Redis unreachable" in p.stderr and "DIALGUARD_REDIS_URL" in p.stderr
    finally:
        from dialguard.simulate import _drop_namespace
        await _drop_namespace(e.redis, prefix)
        await e.close()


def test_callerid_list_json(settings):
    prefix = f"dgcli:{uuid.uuid4().hex[:8]}"
    try:
        assert json.loads(cli(prefix, "callerid", "list", "--json").stdout) == {"caller_ids": []}
        assert cli(prefix, "campaign", "approve", "c7").returncode == 0
        assert cli(prefix, "callerid", "add", "+862150000001", "--pool").returncode == 0
        assert cli(prefix, "callerid", "add", "+862150000002", "--campaign", "c7").returncode == 0
        assert cli(prefix, "callerid", "add", "+862150000003").returncode == 0   # approved, not in a pool
        assert cli(prefix, "callerid", "cooldown", "+862150000001", "--until", "2099-01-01T00:00:00Z").returncode == 0
        assert cli(prefix, "pause", "--caller-id", "+862150000002").returncode == 0
        rows = json.loads(cli(prefix, "callerid", "list", "--json").stdout)["caller_ids"]
        by = {r["caller_id"]: r for r in rows}
        assert set(by) == {"+862150000001", "+862150000002", None}
        assert by["+862150000001"]["pools"] == ["global"] and by["+862150000001"]["cooldown_until"].startswith("2099")
        assert by["+862150000002"]["pools"] == ["c7"] and by["+862150000002"]["paused"]
        assert by[None]["approved"] and by[None]["pools"] == [] and len(by[None]["hash"]) == 32
        assert all(r["approved"] for r in rows)
        text = cli(prefix, "callerid", "list").stdout
        assert "+862150000001  pools: global  (cooling down until 2099" in text and "number not in a pool" in text
        p = cli(prefix, "callerid", "list", **REDIS_DOWN)
        assert p.returncode == 3 and "Redis unreachable" in p.stderr
    finally:
        import redis as r
        c = r.Redis.from_url(settings.redis_url)
        for k in c.scan_iter(match=f"{prefix}:*"):
            c.delete(k)


def test_dnc_add_remove_keep_the_list_at_rest(settings, admin_db):
    prefix = f"dgcli:{uuid.uuid4().hex[:8]}"
    camp = f"c-{uuid.uuid4().hex[:6]}"

    def rows():
        with psycopg.connect(admin_db) as conn:
            return conn.execute("select list, source from dnc_entries where list in ('global', %s) "
                                "order by list", (camp,)).fetchall()

    try:
        before = rows()
        p = cli(prefix, "dnc", "add", "13800138050", "--campaign", camp, "--json")
        assert p.returncode == 0 and json.loads(p.stdout) == {"number": "+8613800138050", "list": camp,
                                                               "added": True, "stored": True}
        p = cli(prefix, "dnc", "add", "+86 138 0013 8050", "--campaign", camp, "--json")
        assert json.loads(p.stdout)["added"] is False and json.loads(p.stdout)["stored"] is False  # already
        assert [r for r in rows() if r[0] == camp] == [(camp, "cli")]
        p = cli(prefix, "dnc", "count", "--campaign", camp, "--at-rest", "--json")
        assert json.loads(p.stdout) == {"list": camp, "entries": 1, "at_rest": 1}
        assert cli(prefix, "dnc", "count", "--campaign", camp).stdout.strip() == f"list={camp} entries=1"
        p = cli(prefix, "dnc", "export", "--list", camp)
        assert p.returncode == 0 and p.stdout.split() == ["number", "+8613800138050"]
        p = cli(prefix, "dnc", "remove", "13800138050", "--campaign", camp, "--json")
        assert p.returncode == 0 and json.loads(p.stdout) == {"number": "+8613800138050", "list": camp,
                                                               "removed": True, "unstored": True}
        assert [r for r in rows() if r[0] == camp] == []
        assert json.loads(cli(prefix, "dnc", "count", "--campaign", camp, "--at-rest", "--json").stdout)[
            "entries"] == 0
        # bad input: nothing written anywhere
        for args, why in ((["dnc", "add", "12"], "12"), (["dnc", "add", "13800138051", "--campaign", "global"],
                                                         "global list"),
                          (["dnc", "remove", "garbage"], "unparseable"),
                          (["dnc", "import", "/nonexistent.csv"], "no such file"),
                          (["dnc", "import", "/nonexistent.csv", "--chunk-rows", "0"], "chunk-rows")):
            p = cli(prefix, *args)
            assert p.returncode == 2 and why in p.stderr, (args, p.stderr)
        assert rows() == before
        p = cli(prefix, "dnc", "count", **REDIS_DOWN)
        assert p.returncode == 3 and "Redis unreachable" in p.stderr
    finally:
        import redis as r
        c = r.Redis.from_url(settings.redis_url)
        for k in c.scan_iter(match=f"{prefix}:*"):
            c.delete(k)


def test_campaign_list_json(admin_db):
    prefix = f"dgcli:{uuid.uuid4().hex[:8]}"
    name = f"list-{uuid.uuid4().hex[:6]}"
    assert cli(prefix, "campaign", "create", name, "--cps", "3").returncode == 0
    p = cli(prefix, "campaign", "list", "--json")
    assert p.returncode == 0, p.stderr
    mine = [c for c in json.loads(p.stdout)["campaigns"] if c["name"] == name]
    assert len(mine) == 1 and mine[0]["state"] == "draft" and mine[0]["calls_per_second"] == 3
    assert f"{name}: draft, not approved, 3.0 calls/s" in cli(prefix, "campaign", "list").stdout
    p = cli(prefix, "campaign", "status", "no-such-campaign", "--json")
    assert p.returncode == 2 and "does not exist" in p.stderr
    # refused: said at once with the driver's reason (not after the pool's 10 s of
    # retries), and the DSN's password never printed
    p = cli(prefix, "campaign", "list", "--json", DIALGUARD_PG_DSN="postgresql://x:pw-s3cret@127.0.0.1:1/x")
    assert p.returncode == 3 and "PostgreSQL unreachable at postgresql://x@127.0.0.1:1/x" in p.stderr, p.stderr
    assert "Connection refused" in p.stderr and "pw-s3cret" not in p.stderr + p.stdout
    assert "error connecting in 'pool" not in p.stderr  # the probe failed: no pool, no retries


async def test_status_and_rules_status_warn_before_a_calendar_ends(settings):
    """At the rules clock (the test clock), 46 days before the end of cn-default's
    calendar: no warning; 44 days before: both commands warn, with the date."""
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from chinese_calendar import constants

    last = max(d.year for d in constants.holidays)
    end = datetime(last + 1, 1, 1, tzinfo=ZoneInfo("Asia/Shanghai"))
    prefix = f"dgcli:{uuid.uuid4().hex[:8]}"
    env = {"DIALGUARD_TEST_CLOCK": "1", "DIALGUARD_RULES": "cn-default"}
    e = await Engine.create(Settings(key_prefix=prefix, test_clock=True), Policy.load("cn-default"))
    try:
        await e.set_test_clock(end - timedelta(days=46))
        for cmd in (["status"], ["rules", "status"]):
            p = cli(prefix, *cmd, **env)
            assert p.returncode == 0, p.stderr
            assert f"calendar CN: known until {last}-12-31" in p.stdout and "46.0 days left" in p.stdout
            assert "warning" not in p.stderr, p.stderr
        st = json.loads(cli(prefix, "status", "--json", **env).stdout)["calendars"]
        assert [(c["calendar"], c["known_until"], c["seconds_left"], c["warn"]) for c in st] == [
            ("CN", f"{last}-12-31", 46 * 86400, False)]
        await e.set_test_clock(end - timedelta(days=44))
        for cmd in (["status"], ["rules", "status"]):
            p = cli(prefix, *cmd, **env)
            assert p.returncode == 0, p.stderr
            assert "warning:" in p.stderr and f"known until {last}-12-31" in p.stderr, p.stderr
            assert "44.0 days left" in p.stderr
        rs = json.loads(cli(prefix, "rules", "status", "--json", **env).stdout)["calendars"]
        assert [(c["calendar"], c["seconds_left"], c["warn"]) for c in rs] == [("CN", 44 * 86400, True)]
    finally:
        from dialguard.simulate import _drop_namespace
        await _drop_namespace(e.redis, prefix)
        await e.close()
