"""Campaign lifecycle: PostgreSQL record and the engine's approval agree."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone

import psycopg
import pytest

import cli_inproc
from fakes.dialer_db import ensure_schema
from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest

NOW = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)  # Mon 10:00 Shanghai


@pytest.fixture(scope="module")
def schema(pg_dsn):
    ensure_schema(pg_dsn)
    return pg_dsn


def cli(prefix, *args):
    """`dialguard ARGS` on key prefix `prefix`, in this process (tests/cli_inproc.py: these
    tests check what the commands do; test_dialer_run_refuses_bad_settings_before_starting
    starts real processes)."""
    return cli_inproc.run(args, env={**os.environ, "DIALGUARD_KEY_PREFIX": prefix})


async def test_lifecycle_and_approval_agree(schema):
    prefix = f"dgcamp:{uuid.uuid4().hex[:8]}"
    name = f"life-{uuid.uuid4().hex[:8]}"
    e = await Engine.create(Settings(key_prefix=prefix))

    async def reasons():
        return (await e.decide(DecisionRequest(number="13800138000", campaign=name, agent="a"), now=NOW)).reasons

    def status():
        out = cli(prefix, "campaign", "status", name, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    try:
        out = cli(prefix, "campaign", "create", name, "--max-concurrent", "4", "--cps", "5", "--abandon-limit", "3",
                  "--dialer", "dialer-test-only", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["state"] == "draft"
        assert status()["dialer"] == "dialer-test-only"  # the stack's own dialer leaves it alone
        assert cli(prefix, "campaign", "create", name).returncode == 2  # exists
        # only approved campaigns dial
        out = cli(prefix, "campaign", "start", name)
        assert out.returncode == 2 and "not approved" in out.stderr
        assert "campaign_not_approved" in await reasons()

        assert cli(prefix, "campaign", "approve", name).returncode == 0
        s = status()
        assert (s["state"], s["approved"]) == ("approved", True)
        assert "campaign_not_approved" not in await reasons()

        for verb, state in (("start", "running"), ("pause", "paused"), ("start", "running"), ("stop", "stopped")):
            assert cli(prefix, "campaign", verb, name).returncode == 0
            assert status()["state"] == state
        assert cli(prefix, "campaign", "start", name).returncode == 0

        assert cli(prefix, "campaign", "revoke", name).returncode == 0
        s = status()
        assert (s["state"], s["approved"]) == ("stopped", False)
        await e.set_campaign(name, False)  # cache of the engine: same as a new decision after 2 s
        e._ctx_cache.clear()
        assert "campaign_not_approved" in await reasons()
        assert s["leads"] == {} and s["abandon_rate_pct"] == 0
    finally:
        await e.close()


def test_engine_only_campaign_still_approvable(schema):
    prefix = f"dgcamp:{uuid.uuid4().hex[:8]}"
    out = cli(prefix, "campaign", "approve", f"dialplan-only-{uuid.uuid4().hex[:6]}")
    assert out.returncode == 0 and "engine only" in out.stdout


def test_disposition(schema, tmp_path):
    prefix = f"dgcamp:{uuid.uuid4().hex[:8]}"
    name = f"disp-{uuid.uuid4().hex[:8]}"
    assert cli(prefix, "campaign", "create", name).returncode == 0
    f = tmp_path / "l.csv"
    f.write_text("number\n13800138000\n13800138001\n")
    assert cli(prefix, "campaign", "import", name, str(f)).returncode == 0
    with psycopg.connect(schema) as c:
        ids = [r[0] for r in c.execute("select id from dialer_leads where campaign = %s order by id", (name,))]
    assert cli(prefix, "campaign", "disposition", str(ids[0]), "success").returncode == 0
    out = cli(prefix, "campaign", "disposition", str(ids[1]), "follow-up", "--at", "2026-11-24T10:00:00+08:00")
    assert out.returncode == 0, out.stderr
    assert cli(prefix, "campaign", "disposition", str(ids[1]), "follow-up").returncode == 2
    assert cli(prefix, "campaign", "disposition", str(ids[1]), "maybe").returncode == 2
    with psycopg.connect(schema) as c:
        rows = c.execute("select disposition, state, next_eligible_at from dialer_leads where campaign = %s"
                         " order by id", (name,)).fetchall()
    assert rows[0][:2] == ("success", "done")
    assert rows[1][:2] == ("follow-up", "pending")
    assert rows[1][2] == datetime(2026, 11, 24, 2, tzinfo=timezone.utc)


def test_dialer_run_refuses_bad_settings_before_starting():
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "dialguard.cli", "dialer", "run", *args],
                              capture_output=True, text=True, timeout=60)

    r = run("--agents", "a1=PJSIP/a1", "--agent-lease", "-3")
    assert r.returncode == 2 and "between 1 and 3600" in r.stderr and "Traceback" not in r.stderr
    r = run("--agents", "a1=PJSIP/a1", "--agent-devices", "zz")
    assert r.returncode == 2 and "NAME=TECH/RESOURCE" in r.stderr
    r = run("--agents", "nonsense")
    assert r.returncode == 2 and "expected NAME=TECH/RESOURCE" in r.stderr


def test_campaign_edit_settings_and_abandon_message(schema):
    prefix = f"dgcamp:{uuid.uuid4().hex[:8]}"
    name = f"edit-{uuid.uuid4().hex[:8]}"

    def status():
        out = cli(prefix, "campaign", "status", name, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    out = cli(prefix, "campaign", "edit", name, "--cps", "3")
    assert out.returncode == 2 and "does not exist" in out.stderr
    assert cli(prefix, "campaign", "create", name, "--dialer", "dialer-test-only").returncode == 0
    out = cli(prefix, "campaign", "edit", name, "--cps", "7.5", "--dial-ratio", "1.5", "--ring-timeout", "20",
              "--abandon-message", "sound:/var/lib/dialguard/sounds/spring-abandon", "--json")
    assert out.returncode == 0, out.stderr
    s = status()
    assert (s["calls_per_second"], s["dial_ratio"], s["ring_timeout_s"]) == (7.5, 1.5, 20)
    assert s["abandon_media"] == "sound:/var/lib/dialguard/sounds/spring-abandon"
    assert s["max_concurrent"] == 10 and s["dialer"] == "dialer-test-only"  # untouched
    assert s["abandon_pacing"] == "progressive" and s["abandon_limits"]  # no answered call yet
    # a name that would reach the dialplan's Playback() with a comma, a parenthesis or ..
    for bad in ("sound:x,skip", "sound:x)", "/no/scheme", "sound:../../etc/passwd", "sound:"):
        out = cli(prefix, "campaign", "edit", name, "--abandon-message", bad)
        assert out.returncode == 2 and "abandon message" in out.stderr, (bad, out.stderr)
    out = cli(prefix, "campaign", "edit", name, "--cps", "-1")
    assert out.returncode == 2 and "bad setting" in out.stderr
    out = cli(prefix, "campaign", "edit", name)
    assert out.returncode == 2 and "nothing to change" in out.stderr
    assert cli(prefix, "campaign", "edit", name, "--abandon-message", "").returncode == 0
    assert status()["abandon_media"] is None and status()["calls_per_second"] == 7.5


def test_start_refused_without_a_lawful_abandon_message(schema):
    """us-tcpa and uk-ofcom require an abandon message naming the seller: a campaign
    under them without a message of its own does not start (the default names no one);
    with one it does. cn-default requires none."""
    prefix = f"dgcamp:{uuid.uuid4().hex[:8]}"
    name = f"msg-{uuid.uuid4().hex[:8]}"
    try:
        assert cli(prefix, "campaign", "create", name, "--dialer", "dialer-test-only").returncode == 0
        assert cli(prefix, "campaign", "approve", name, "--rules", "cn-default,us-tcpa").returncode == 0
        out = cli(prefix, "campaign", "start", name)
        assert out.returncode == 2, out.stdout
        assert "us-tcpa" in out.stderr and "--abandon-message" in out.stderr, out.stderr
        s = json.loads(cli(prefix, "campaign", "status", name, "--json").stdout)
        assert s["state"] == "approved" and s["message_required_by"] == ["us-tcpa"]
        assert cli(prefix, "campaign", "edit", name, "--abandon-message",
                   "sound:/var/lib/dialguard/sounds/acme-abandon").returncode == 0
        out = cli(prefix, "campaign", "start", name)
        assert out.returncode == 0, out.stderr
        s = json.loads(cli(prefix, "campaign", "status", name, "--json").stdout)
        assert s["state"] == "running" and s["message_required_by"] == []
        assert cli(prefix, "campaign", "stop", name).returncode == 0
    finally:
        with psycopg.connect(Settings().pg_dsn, autocommit=True) as conn:
            conn.execute("delete from dialer_campaigns where name = %s", (name,))


def test_status_counts_what_abandoned_calls_did_with_their_message(schema, tmp_path):
    """Today's abandoned calls by their message (dialguard/campaigns/sql/240): begun
    (played, cut, or its end unseen), begun later than 2 s after the answer, failed, the
    callee gone before it, and played by the dialplan with no dialer (no state); calls
    that were not abandoned and other days' do not count."""
    import time as _time
    from datetime import timedelta

    from dialguard.campaigns.store import local_day

    prefix = f"dgcamp:{uuid.uuid4().hex[:8]}"
    name = f"msgs-{uuid.uuid4().hex[:8]}"
    tz = Settings().site_timezone
    now = datetime.now(timezone.utc)
    if local_day(now, tz)[1] - now < timedelta(seconds=10):  # status counts the site's day as it runs
        _time.sleep((local_day(now, tz)[1] - now).total_seconds() + 1)
        now = datetime.now(timezone.utc)
    try:
        assert cli(prefix, "campaign", "create", name).returncode == 0
        rows = [  # result, message_state, message_delay_ms, answered, played by the dialplan
            ("abandoned", "played", 1710, now, False), ("abandoned", "cut", 2300, now, False),
            ("abandoned", "started", 900, now, False), ("abandoned", "failed", 1705, now, False),
            ("abandoned", "none", None, now, False), ("abandoned", None, None, now, False),
            ("abandoned", "played", 150, now, True), ("abandoned", "cut", 2100, now, True),
            ("conversation", None, None, now, False), ("amd", "played", 4000, now, False),
            ("abandoned", "played", 2500, local_day(now, tz)[0] - timedelta(minutes=1), False),  # yesterday
        ]
        f = tmp_path / "l.csv"
        f.write_text("number\n13800138000\n")
        assert cli(prefix, "campaign", "import", name, str(f)).returncode == 0
        with psycopg.connect(schema) as c:
            [(lead,)] = c.execute("select id from dialer_leads where campaign = %s", (name,)).fetchall()
            for i, (result, state, delay, at, by_dialplan) in enumerate(rows):
                c.execute("insert into dialer_calls (channel_id, lead_id, campaign, state, result, answered_at,"
                          " message_state, message_delay_ms, message_by_dialplan)"
                          " values (%s, %s, %s, 'ended', %s, %s, %s, %s, %s)",
                          (f"dgc-{name}-{i}", lead, name, result, at, state, delay, by_dialplan))
        s = json.loads(cli(prefix, "campaign", "status", name, "--json").stdout)
        assert s["abandoned_today"] == 8, s
        # the dialplan's two count where their states say (begun, late), and by_dialplan;
        # the one with no state at all, recorded by nothing, is unknown
        assert s["abandon_messages_today"] == {"abandoned": 8, "begun": 5, "late": 2, "failed": 1,
                                               "callee_gone": 1, "by_dialplan": 2, "unknown": 1}, s
    finally:
        with psycopg.connect(Settings().pg_dsn, autocommit=True) as conn:
            conn.execute("delete from dialer_leads where campaign = %s", (name,))
            conn.execute("delete from dialer_campaigns where name = %s", (name,))
