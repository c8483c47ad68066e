"""When make test starts its shifted pass (scripts/run-tests.sh).

The shifted pass (unit + integration on a clock at 2028-02-29, on a stack of
its own) runs alongside the main pass's e2e tests: those mostly wait on calls,
SIPp and timers, and leave the cores to it. The main integration tests would
compete with it, so run-tests.sh waits for the file DIALGUARD_E2E_STARTED_FILE,
which the first e2e test's setup creates (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path


def e2e_started(is_e2e: bool, marker: str | None = None) -> bool:
    """At a test's setup: the file created when this is the session's first e2e
    test and run-tests.sh asked for it. True when it was created now."""
    marker = marker or os.environ.get("DIALGUARD_E2E_STARTED_FILE")
    if not (marker and is_e2e) or os.path.exists(marker):
        return False
    Path(marker).touch()
    return True
