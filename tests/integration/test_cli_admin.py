"""Admin commands change the next decision (real Redis, own key prefix)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone

from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.models import DecisionRequest
from dialguard.rules import Policy

NOW = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)  # Mon 10:00 Shanghai


def cli(prefix, *args):
    env = {**os.environ, "DIALGUARD_KEY_PREFIX": prefix}
    return subprocess.run([sys.executable, "-m", "dialguard.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env)


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
