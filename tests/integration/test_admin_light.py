"""An admin command loads nothing of the hot path: no Lua preload, no pipelined
client, no spool, not even the decider's module (real Redis, own key prefix)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy

# Runs the CLI in a fresh interpreter with the hot path's three loaders recording
# any call, then reports them and which modules the command imported.
PROBE = r"""
import json, sys
from dialguard import redisconn
from dialguard.audit import spool
from dialguard.decision import scripts

calls = []
real_fast, real_load, real_spool = redisconn.fast_client, scripts.Script.load, spool.Spool.from_settings.__func__


def fast_client(*a, **k):
    calls.append("fast_client")
    return real_fast(*a, **k)


async def load(self, redis):
    calls.append("script_load:" + self.name)
    return await real_load(self, redis)


def from_settings(cls, *a, **k):
    calls.append("spool")
    return real_spool(cls, *a, **k)


redisconn.fast_client, scripts.Script.load = fast_client, load
spool.Spool.from_settings = classmethod(from_settings)
from typer.testing import CliRunner  # noqa: E402
from dialguard.cli import app  # noqa: E402

r = CliRunner().invoke(app, sys.argv[1:])
print(json.dumps({"exit": r.exit_code, "output": r.output, "calls": calls,
                  "hot": sorted(m for m in ("dialguard.engine", "dialguard.decision.decider",
                                            "dialguard.decision.plan", "dialguard.redisclient")
                                if m in sys.modules)}))
"""


def probe(prefix: str, *args: str) -> dict:
    env = {**os.environ, "DIALGUARD_KEY_PREFIX": prefix}
    p = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


async def test_pause_loads_no_hot_path_and_takes_effect():
    prefix = f"dglight:{uuid.uuid4().hex[:8]}"
    res = probe(prefix, "pause", "--campaign", "c1")
    assert res["exit"] == 0, res
    assert res["calls"] == [] and res["hot"] == [], res
    # ... and the pause is real: the next decision for the campaign is denied `paused`
    e = await Engine.create(Settings(key_prefix=prefix), Policy.load("cn-default"))
    try:
        assert list(await e.paused()) == ["camp:c1"]
        d = await e.decide(DecisionRequest(number="13800138000", campaign="c1", agent="a"))
        assert "paused" in d.reasons
        d = await e.decide(DecisionRequest(number="13800138000", campaign="c2", agent="a"))
        assert "paused" not in d.reasons
    finally:
        await e.redis.delete(e.keys.pause)
        await e.close()


async def test_an_event_command_loads_its_script_on_demand_only():
    """optout runs event.lua: loaded when Redis asks for it (NOSCRIPT), never
    preloaded with the others, and still no pipelined client nor spool."""
    prefix = f"dglight:{uuid.uuid4().hex[:8]}"
    res = probe(prefix, "optout", "13800138000")
    assert res["exit"] == 0, res
    assert "fast_client" not in res["calls"] and "spool" not in res["calls"] and res["hot"] == [], res
    assert [c for c in res["calls"] if c.startswith("script_load:")] in ([], ["script_load:event"]), res
