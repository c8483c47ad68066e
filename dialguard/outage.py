"""How a long-running loop logs a dependency that is down (issue 13).

A loop that retries every second would otherwise write a traceback a second
for as long as Redis or PostgreSQL is away (2,548 lines in two outages). An
outage is logged once when it starts (with the error, no traceback), then one
line per `every_s` with the number of failures meanwhile, and once when it
ends, with its length and total count.
"""

from __future__ import annotations

import logging
import time


class OutageLog:
    def __init__(self, log: logging.Logger, what: str, every_s: float = 60.0, clock=time.monotonic):
        self.log = log
        self.what = what
        self.every_s = every_s
        self.clock = clock
        self.since: float | None = None  # None: up
        self.total = 0  # failures in this outage
        self.window = 0  # failures since the last line
        self._last_line = 0.0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException | str) -> None:
        now = self.clock()
        self.total += 1
        self.window += 1
        why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}".strip()
        if self.since is None:
            self.since = self._last_line = now
            self.window = 0
            self.log.error("%s unavailable (%s); retrying, a line every %.0fs until it is back",
                           self.what, why, self.every_s)
        elif now - self._last_line >= self.every_s:
            self.log.warning("%s still unavailable after %.0fs: %d failures in the last %.0fs (last: %s)",
                             self.what, now - self.since, self.window, now - self._last_line, why)
            self._last_line = now
            self.window = 0

    def ok(self) -> None:
        if self.since is None:
            return
        self.log.warning("%s back after %.0fs (%d failures)", self.what, self.clock() - self.since, self.total)
        self.since = None
        self.total = self.window = 0
