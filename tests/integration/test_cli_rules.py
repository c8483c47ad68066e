"""`dialguard rules apply|activate|shadow-off|status|history|diff` and `override` through
the real CLI against the real Redis (own key prefix); success and failure paths."""

from __future__ import annotations

import json
import os
import pwd
import uuid
from datetime import datetime, timezone

import pytest
import redis as syncredis

import cli_inproc
from dialguard.config import Settings

# the CLI writes in break-glass (tests/conftest.py): audited with the OS user, never DIALGUARD_ACTOR
BREAK_GLASS = "break-glass:" + pwd.getpwuid(os.getuid()).pw_name

@pytest.fixture
def prefix(settings):
    p = f"dgrules:{uuid.uuid4().hex[:8]}"
    yield p
    r = syncredis.Redis.from_url(settings.redis_url)
    for k in r.scan_iter(f"{p}:*"):
        r.delete(k)


def cli(prefix, *args, env=None):
    """`dialguard ARGS` on key prefix `prefix`, in this process (tests/cli_inproc.py)."""
    env = {**os.environ, "DIALGUARD_KEY_PREFIX": prefix, "DIALGUARD_ACTOR": "ops-wang", **(env or {})}
    return cli_inproc.run(args, env=env)




def test_apply_status_history_diff_activate(prefix, open_pack):
    two, one = open_pack("two", 2), open_pack("one", 1)
    r = cli(prefix, "rules", "status", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["active"] is None
    r = cli(prefix, "rules", "apply", two, "--why", "first", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"version": 1, "role": "active", "changed": True, "previous": None}
    r = cli(prefix, "rules", "diff", one)
    assert r.returncode == 1 and "-  max: 2" in r.stdout and "+  max: 1" in r.stdout
    assert cli(prefix, "rules", "diff", two).returncode == 0
    r = cli(prefix, "rules", "apply", one, "--why", "stricter")
    assert r.returncode == 0 and "version 2" in r.stdout and "+  max: 1" in r.stdout
    r = cli(prefix, "rules", "apply", one)
    assert r.returncode == 0 and "unchanged" in r.stdout
    r = cli(prefix, "rules", "apply", two, "--shadow", "--json")
    assert json.loads(r.stdout)["role"] == "shadow"
    status = json.loads(cli(prefix, "rules", "status", "--json").stdout)
    assert (status["active"]["version"], status["active"]["actor"], status["shadow"]["version"]) == (2, BREAK_GLASS, 3)
    hist = json.loads(cli(prefix, "rules", "history", "--json").stdout)
    assert [(h["version"], h["role"], h["why"]) for h in hist] == [(1, None, "first"), (2, "active", "stricter"),
                                                                  (3, "shadow", "")]
    r = cli(prefix, "rules", "diff", "--from", "1", "--to", "2")
    assert r.returncode == 1 and "+  max: 1" in r.stdout
    assert cli(prefix, "rules", "activate", "1", "--why", "roll back").returncode == 0
    assert json.loads(cli(prefix, "rules", "status", "--json").stdout)["active"]["version"] == 1
    assert "shadow rules off" in cli(prefix, "rules", "shadow-off").stdout
    assert json.loads(cli(prefix, "rules", "status", "--json").stdout)["shadow"] is None


def test_rules_commands_refuse_bad_input(prefix, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pack: bad\nhours: {zone: Mars/Olympus, weekly: {all: ['09:00-18:00']}}\n")
    r = cli(prefix, "rules", "apply", str(bad))
    assert r.returncode == 2 and "bad.yaml" in r.stderr and "Mars/Olympus" in r.stderr
    r = cli(prefix, "rules", "activate", "7")
    assert r.returncode == 2 and "no rules version 7" in r.stderr and "rules history" in r.stderr
    assert cli(prefix, "rules", "diff").returncode == 2
    r = cli(prefix, "rules", "diff", "--from", "5", "--to", "6")
    assert r.returncode == 2 and "no rules version" in r.stderr
    assert json.loads(cli(prefix, "rules", "history", "--json").stdout) == []
    r = cli(prefix, "rules", "status", env={"DIALGUARD_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert r.returncode == 3 and "Redis unreachable" in r.stderr


async def test_override_commands(prefix, settings):
    from dialguard.engine import Engine
    from dialguard.decision.models import DecisionRequest
    from dialguard.rules import Policy

    n = "13800138000"
    now = datetime(2026, 11, 24, 2, tzinfo=timezone.utc)  # Tuesday 10:00 Shanghai
    # the grant's expiry is counted on the rules clock, as the decisions are
    syncredis.Redis.from_url(settings.redis_url).set(f"{prefix}:{{g}}:clock", str(int(now.timestamp() * 1000)))
    clock = {"DIALGUARD_TEST_CLOCK": "1"}
    r = cli(prefix, "override", "grant", n, "--reason", "call back requested", "--approver", "lead-zhao",
            "--expires", "2h", "--lift", "attempt_cap", "--json", env=clock)
    assert r.returncode == 0, r.stderr
    gid = json.loads(r.stdout)["id"]
    r = cli(prefix, "override", "show", n, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == gid and json.loads(r.stdout)["lifts"] == ["attempt_cap"]
    r = cli(prefix, "override", "grant", n, "--reason", "x", "--approver", "y", "--lift", "dnc")
    assert r.returncode == 2 and "never dnc" in r.stderr
    r = cli(prefix, "override", "grant", n, "--reason", "x", "--approver", "y", "--expires", "90d")
    assert r.returncode == 2 and "at most 30 days" in r.stderr
    r = cli(prefix, "override", "grant", "12", "--reason", "x", "--approver", "y")
    assert r.returncode == 2
    # the grant is used by the first decision it can lift, then gone
    e = await Engine.create(Settings(key_prefix=prefix), Policy.load("cn-default"), skip_caller_id_without_pool=True)
    try:
        await e.set_campaign("c1")
        got = [await e.decide(DecisionRequest(number=n, campaign="c1", agent="a"), now) for _ in range(4)]
    finally:
        await e.close()
    assert [(d.allowed, d.override) for d in got] == [(True, False), (True, False), (True, True), (False, False)]
    r = cli(prefix, "override", "show", n)
    assert r.returncode == 1 and "no unused override" in r.stdout
    assert cli(prefix, "override", "grant", n, "--reason", "x", "--approver", "y").returncode == 0
    assert cli(prefix, "override", "revoke", n, "--reason", "not needed").returncode == 0
    assert cli(prefix, "override", "revoke", n).returncode == 1
