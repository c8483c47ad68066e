"""What the FastAGI server does when connections pile up (issue 13: 2,100 idle
connections from one local process made it refuse 253 of 260 real checks,
and log 143,364 refusals in 15 s).

Asterisk sends its environment block as soon as it has connected, so a
connection that has not sent one yet is either Asterisk's of the last
millisecond or somebody idling. Hence:

- a connection must complete its environment block within a short deadline
  (the server's `env_timeout_s`), else it is closed;
- when the table is full, the oldest connection still without environment
  block is closed to make room: the newest is served, never refused for that
  (a refusal then only happens when every slot runs a real session);
- per source address, at most `max_pending_per_source` connections without
  environment block: one more closes that source's oldest. Asterisk connects
  from one address, often the same as everything else on the host (127.0.0.1):
  the limit counts only connections that have not sent their environment
  block, so Asterisk's sessions, which send it at once, never count against
  it, and whatever floods from its address loses its own oldest idle
  connections first;
- refusals and closings are counted (metrics) and logged in one line a second
  with their counts (CountLog), not a line each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter


class Conn:
    """One connection of the table (the server keeps its transport here)."""

    __slots__ = ("source", "transport", "evicted", "env", "held")

    def __init__(self, source: str, transport=None):
        self.source = source
        self.transport = transport
        self.evicted: str | None = None  # why the server closed it to make room
        self.env = False  # its environment block is complete
        self.held = False  # counted in the table


class ConnTable:
    """Every connection the server holds; which one makes room for a new one."""

    def __init__(self, max_sessions: int, max_pending_per_source: int):
        if max_sessions < 1 or max_pending_per_source < 1:
            raise ValueError("max_sessions and max_pending_per_source must be at least 1")
        self.max_sessions = max_sessions
        self.max_pending_per_source = max_pending_per_source
        self.size = 0
        self.pending: dict[Conn, None] = {}  # without environment block, oldest first
        self.by_source: dict[str, dict[Conn, None]] = {}

    def admit(self, source: str) -> tuple[bool, list[tuple[Conn, str]]]:
        """Whether a new connection from `source` gets a slot, and the
        connections to close for it (already out of the table), with why:
        "source_limit" or "table_full"."""
        victims: list[tuple[Conn, str]] = []
        mine = self.by_source.get(source)
        if mine is not None and len(mine) >= self.max_pending_per_source:
            oldest = next(iter(mine))
            self.remove(oldest)
            victims.append((oldest, "source_limit"))
        if self.size >= self.max_sessions:
            if not self.pending:
                return False, victims  # every slot runs a real session
            oldest = next(iter(self.pending))
            self.remove(oldest)
            victims.append((oldest, "table_full"))
        return True, victims

    def add(self, conn: Conn) -> None:
        conn.held = True
        self.size += 1
        self.pending[conn] = None
        self.by_source.setdefault(conn.source, {})[conn] = None

    def env_done(self, conn: Conn) -> None:
        """Its environment block is complete: no longer evictable."""
        conn.env = True
        self._unpend(conn)

    def remove(self, conn: Conn) -> None:
        if conn.held:
            conn.held = False
            self.size -= 1
            self._unpend(conn)

    def _unpend(self, conn: Conn) -> None:
        if conn in self.pending:
            del self.pending[conn]
            mine = self.by_source[conn.source]
            del mine[conn]
            if not mine:
                del self.by_source[conn.source]


class CountLog:
    """Events counted by kind and logged at most once per `interval_s`, with
    their counts; what is left is written `interval_s` after the last line."""

    def __init__(self, log: logging.Logger, message: str, interval_s: float = 1.0, clock=time.monotonic,
                 call_later=None):
        self.log = log
        self.message = message
        self.interval_s = interval_s
        self.clock = clock
        self._call_later = call_later
        self.counts: Counter[str] = Counter()
        self._last = float("-inf")
        self._timer = None

    def add(self, kind: str, n: int = 1) -> None:
        self.counts[kind] += n
        now = self.clock()
        if now - self._last >= self.interval_s:
            self.flush()
        elif self._timer is None:
            later = self._call_later or asyncio.get_running_loop().call_later
            self._timer = later(self._last + self.interval_s - now, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.counts:
            return
        now = self.clock()
        counts = dict(sorted(self.counts.items()))
        self.counts.clear()
        self._last = now
        self.log.warning("%s: %s", self.message, ", ".join(f"{n} {k}" for k, n in counts.items()),
                         extra={"fields": {"event": "agi_flood", "counts": counts}})
