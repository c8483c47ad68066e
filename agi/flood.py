"""What the FastAGI server does when connections pile up (issue 13: 2,100 idle
connections from one local process made it refuse 253 of 260 real checks,
and log 143,364 refusals in 15 s).

Asterisk sends its environment block as soon as it has connected, so a
connection that has not sent one yet is either Asterisk's of the last
millisecond or somebody idling. Hence:

- until its environment block is complete, a connection is *pending*: a
  buffer and a slot in this table, no task, no timer of its own (a flood costs
  little), and not counted against the sessions (`max_sessions`);
- it must complete the block within a short deadline (`env_timeout`), else it
  is closed (one sweep for all of them);
- when the pending table is full, the oldest pending connection is closed to
  make room: the newest is always taken, never refused for that;
- per source address, at most `max_pending_per_source` pending connections:
  one more closes that source's oldest. Asterisk connects from one address,
  often the one everything else on the host uses (127.0.0.1): the limit counts
  only pending connections, so Asterisk's sessions, which send their block at
  once, never count against it; a flood from its address loses its own oldest
  idle connections first;
- a refusal then only happens when `max_sessions` real sessions run at once;
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

    __slots__ = ("source", "transport", "evicted", "held")

    def __init__(self, source: str, transport=None):
        self.source = source
        self.transport = transport
        self.evicted: str | None = None  # why the server closed it (to make room, deadline)
        self.held = False  # in the table of pending connections


class ConnTable:
    """The pending connections (no environment block yet); which one makes
    room for a new one."""

    def __init__(self, max_pending: int, max_pending_per_source: int):
        if max_pending < 1 or max_pending_per_source < 1:
            raise ValueError("max_pending and max_pending_per_source must be at least 1")
        self.max_pending = max_pending
        self.max_pending_per_source = max_pending_per_source
        self.pending: dict[Conn, float] = {}  # -> when it connected; oldest first
        self.by_source: dict[str, dict[Conn, None]] = {}

    def __len__(self) -> int:
        return len(self.pending)

    def admit(self, source: str) -> list[tuple[Conn, str]]:
        """The connections to close for a new one from `source` (already out of
        the table), with why: "source_limit" or "table_full"."""
        victims: list[tuple[Conn, str]] = []
        mine = self.by_source.get(source)
        if mine is not None and len(mine) >= self.max_pending_per_source:
            oldest = next(iter(mine))
            self.remove(oldest)
            victims.append((oldest, "source_limit"))
        if len(self.pending) >= self.max_pending:
            oldest = next(iter(self.pending))
            self.remove(oldest)
            victims.append((oldest, "table_full"))
        return victims

    def add(self, conn: Conn, now: float) -> None:
        conn.held = True
        self.pending[conn] = now
        self.by_source.setdefault(conn.source, {})[conn] = None

    def remove(self, conn: Conn) -> None:
        """Out of the table (its block arrived, it closed, or it was closed)."""
        if conn.held:
            conn.held = False
            del self.pending[conn]
            mine = self.by_source[conn.source]
            del mine[conn]
            if not mine:
                del self.by_source[conn.source]

    def oldest(self) -> float | None:
        """When the oldest pending connection connected (None: none pending)."""
        for since in self.pending.values():
            return since
        return None

    def expired(self, before: float) -> list[Conn]:
        """Out of the table: the connections that connected before `before`."""
        out = []
        for conn, since in self.pending.items():
            if since >= before:
                break
            out.append(conn)
        for conn in out:
            self.remove(conn)
        return out


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
