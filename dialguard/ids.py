"""Record ids and who runs an admin command: shared by the engine and the stores
(rules, calendars) without importing one another."""

from __future__ import annotations

import os
import time


def new_id() -> str:
    """Time-ordered unique id: 12 hex of ms + 16 hex random."""
    return f"{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def actor() -> str:
    """Who runs an admin command: the sudo user when there is one."""
    for var in ("DIALGUARD_ACTOR", "SUDO_USER", "USER", "LOGNAME"):
        if os.environ.get(var):
            return os.environ[var]
    return f"uid:{os.getuid()}"
