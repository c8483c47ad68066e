"""tests/cli_inproc.py runs a `dialguard` command as a fresh process would see it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cli_inproc  # noqa: E402


def test_exit_codes_output_and_what_is_restored(monkeypatch) -> None:
    monkeypatch.setenv("DIALGUARD_CLI_INPROC_PROBE", "kept")
    before_env, before_umask = dict(os.environ), os.umask(0o022)
    os.umask(before_umask)
    ok = cli_inproc.run(["db", "--help"])
    assert ok.returncode == 0 and "Usage: dialguard db" in ok.stdout and ok.stderr == ""
    bad = cli_inproc.run(["no-such-command"])
    assert bad.returncode == 2 and "No such command" in bad.stderr
    # the command's environment is the one given, and only it; the test's comes back
    seen = cli_inproc.run(["db", "--help"], env={"PATH": os.environ.get("PATH", "")})
    assert seen.returncode == 0
    assert dict(os.environ) == before_env and os.environ["DIALGUARD_CLI_INPROC_PROBE"] == "kept"
    now = os.umask(0o022)
    os.umask(now)
    assert now == before_umask  # the CLI sets 077 for itself
