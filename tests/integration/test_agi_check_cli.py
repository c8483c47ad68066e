"""`dialguard agi check`: a check session against the stack's real FastAGI server,
as Asterisk opens it (agi/client.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid


def cli(*args):
    env = {k: v for k, v in os.environ.items() if k not in ("DIALGUARD_HASH_SECRET", "DIALGUARD_DATA_KEY")}
    return subprocess.run([sys.executable, "-m", "dialguard.cli", "agi", "check", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_agi_check_asks_the_server_and_prints_its_variables(stack):
    campaign = f"never-approved-{uuid.uuid4().hex[:8]}"  # denied: nothing is counted
    p = cli("+8613800138000", "--campaign", campaign, "--agent", "a1", "--server", f"127.0.0.1:{stack.agi_port}",
            "--json")
    assert p.returncode == 1, p.stderr  # DENY
    v = json.loads(p.stdout)
    assert v["DIALGUARD_RESULT"] == "DENY" and "campaign_not_approved" in v["DIALGUARD_REASONS"]
    assert len(v["DIALGUARD_DECISION_ID"]) >= 16
    text = cli("+8613800138000", "--campaign", campaign, "--agent", "a1", "--server",
               f"127.0.0.1:{stack.agi_port}").stdout
    assert "DIALGUARD_RESULT=DENY" in text.splitlines()


def test_agi_check_unreachable_and_bad_server():
    p = cli("+8613800138000", "--campaign", "c", "--agent", "a", "--server", "127.0.0.1:1")
    assert p.returncode == 3 and "unreachable" in p.stderr
    p = cli("+8613800138000", "--campaign", "c", "--agent", "a", "--server", "no-port")
    assert p.returncode == 2 and "HOST:PORT" in p.stderr
