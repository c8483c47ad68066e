"""The pacing benchmark (bench/pacing.py) is part of the suite: a short run of
progressive and predictive side by side on the real stack (SIPp agents and carrier,
Asterisk, the dialer), each mode's agent occupancy and abandon rate reported. Figures
for the docs come from longer runs (docs/BENCHMARKS.md); here what must hold whatever
the machine's load: every mode places and answers calls, the figures are the ones its
call rows give, and progressive (one line per free agent) abandons nobody."""

from __future__ import annotations

import json
import subprocess
import sys

from guard import REPO_ROOT


def test_pacing_benchmark_reports_occupancy_and_abandonment_per_mode(stack, tmp_path):
    out = tmp_path / "pacing.json"
    r = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "pacing.py"), "--modes", "progressive,predictive",
                        "--agents", "2", "--run-s", "15", "--leads", "80", "--talk-s", "4", "--json", str(out)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    results = {x["mode"]: x for x in json.loads(out.read_text())["results"]}
    assert set(results) == {"progressive", "predictive"}
    for mode, x in results.items():
        assert x["placed"] > 0 and x["answered"] > 0, x
        assert 0 < x["occupancy_pct"] <= 100, x
        assert x["answered"] >= x["conversations"] + x["abandoned"], x
        want = round(100.0 * x["abandoned"] / x["answered"], 2)
        assert x["abandon_rate_pct"] == want, x
    assert results["progressive"]["abandoned"] == 0, results["progressive"]
    # the table the docs quote: one line per mode with both figures
    for mode in results:
        assert any(line.startswith(f"{mode} | ") for line in r.stdout.splitlines()), r.stdout
