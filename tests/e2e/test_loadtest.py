"""`dialguard loadtest` against the dev stack as a user's PBX: 10 calls/s for
3 s through the guarded route (endpoint "agents"), then the plain route
("direct"), the carrier being the command's own SIPp UAS on the stack's trunk
port. The printed counts must match what the guard audited and what reached
the carrier (timings are printed, never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from audit import decisions
from guard import REPO_ROOT, dialguard, numbers, tag


async def test_loadtest_counts_match_the_audit(stack, guard, tmp_path: Path) -> None:
    campaign, _ = await guard.campaign("load")
    nums = numbers(30)
    dnc = nums[:3]
    for n in dnc:
        dialguard("dnc", "add", n)
    (tmp_path / "numbers.txt").write_text("# test numbers\n" + "\n".join(nums) + "\n")

    out = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "dialguard"), "loadtest", "--pbx", f"127.0.0.1:{stack.sip_port}",
         "--caller", "agents", "--plain", "direct", "--numbers", str(tmp_path / "numbers.txt"),
         "--rate", "10", "--duration", "3", "--campaign", campaign, "--agent", f"e2e-agent-{tag()}",
         "--carrier-port", str(stack.carrier_port), "--workdir", str(tmp_path / "run"), "--json"],
        capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert out.returncode == 0, out.stderr or out.stdout
    report = json.loads(out.stdout)

    g, p = report["guarded"], report["plain"]
    assert (g["placed"], g["answered"], g["denied"], g["unavailable"], g["unanswered"], g["carrier_invites"]) == \
        (30, 27, 3, 0, 0, 27), report
    assert (p["placed"], p["answered"], p["denied"], p["carrier_invites"]) == (30, 30, 0, 30), report
    assert set(report["pdd_added_ms"]) == {"p50", "p95"} and g["calls_per_s"] > 0, report
    rows = decisions(stack.pg_dsn, campaign, expect=30)
    assert len(rows) == 30
    assert sum(r["allowed"] for r in rows) == g["answered"]
    assert sorted(r["reasons"] for r in rows if not r["allowed"]) == [["dnc"]] * g["denied"]
