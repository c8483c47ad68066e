"""Pacing: how many calls the dialer may start now (pure functions, unit-tested).

Three limits, the smallest wins:
- concurrency: the campaign's `max_concurrent` minus its calls in flight;
- rate: a token bucket of `calls_per_second` (bursts of at most 200 ms worth of
  calls, starting with one call);
- agents: calls not yet bridged may not exceed free agents × the effective dial
  ratio. The ratio is the campaign's `dial_ratio` while the day's abandon rate
  is far from the limit, falls linearly to 1.0 (one call per free agent) as the
  rate reaches 80 % of the limit, and to 0.5 at the limit and beyond (only one
  call for every two free agents, and never less than one call at a time while
  an agent is free: the rate falls as answered calls accrue).
"""

from __future__ import annotations

import math
import time

SLOW_FROM = 0.5  # fraction of the limit where slowing starts
SAFE_AT = 0.8  # fraction of the limit where the ratio reaches 1.0
FLOOR = 0.5


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic):
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate * 0.2)
        self.clock = clock
        self.tokens = 1.0
        self.t = clock()

    def available(self) -> int:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        return int(self.tokens)

    def take(self, n: int = 1) -> None:
        self.tokens -= n

    def set_rate(self, rate: float) -> None:
        self.available()
        self.rate = rate
        self.burst = max(1.0, rate * 0.2)


def abandon_rate(answered: int, abandoned: int) -> float:
    """Abandoned as a percentage of answered calls (0 when none answered)."""
    return 100.0 * abandoned / answered if answered else 0.0


def effective_ratio(dial_ratio: float, rate_pct: float, limit_pct: float) -> float:
    if limit_pct <= 0:
        return min(dial_ratio, FLOOR)
    frac = rate_pct / limit_pct
    if frac >= 1.0:
        return min(dial_ratio, FLOOR)
    top = dial_ratio
    if frac <= SLOW_FROM:
        return top
    if frac <= SAFE_AT:
        # from dial_ratio at SLOW_FROM down to min(1, dial_ratio) at SAFE_AT
        low = min(1.0, dial_ratio)
        return top - (top - low) * (frac - SLOW_FROM) / (SAFE_AT - SLOW_FROM)
    low = min(1.0, dial_ratio)
    return low - (low - min(FLOOR, low)) * (frac - SAFE_AT) / (1.0 - SAFE_AT)


def calls_to_start(*, max_concurrent: int, in_flight: int, tokens: int, free_agents: int,
                   unbridged: int, ratio: float) -> int:
    """How many calls to originate now for one campaign."""
    by_agents = math.floor(free_agents * ratio + 1e-9) - unbridged
    if free_agents > 0 and unbridged == 0:
        by_agents = max(by_agents, 1)  # the slowest pace: one call at a time for a free agent
    return max(0, min(max_concurrent - in_flight, tokens, by_agents))


class Pacer:
    """Per campaign: its token bucket and effective ratio, and how many calls to start now."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}
        self.ratios: dict[str, float] = {}

    def update(self, name: str, *, calls_per_second: float, dial_ratio: float, rate_pct: float,
               limit_pct: float, state: str = "open") -> None:
        """A campaign's settings and abandon rate, as last read; `state` is what its abandon
        limits allow (dialguard/campaigns/abandon.py): open, progressive (one call per free agent at
        most) or stopped (no call)."""
        ratio = effective_ratio(dial_ratio, rate_pct, limit_pct)
        if state == "progressive":
            ratio = min(ratio, 1.0)
        elif state == "stopped":
            ratio = 0.0
        self.ratios[name] = ratio
        b = self.buckets.get(name)
        if b is None:
            self.buckets[name] = TokenBucket(calls_per_second, clock=self.clock)
        elif b.rate != calls_per_second:
            b.set_rate(calls_per_second)

    def how_many(self, name: str, *, max_concurrent: int, in_flight: int, free_agents: int,
                 unbridged: int, ratio: float | None = None) -> int:
        """`ratio`: lines per free agent; default the campaign's effective ratio (the
        dialer passes the pacing mode's lines as `free_agents` with ratio 1)."""
        if self.ratios.get(name, 1.0) <= 0:  # stopped by an abandon limit
            return 0
        return calls_to_start(max_concurrent=max_concurrent, in_flight=in_flight,
                              tokens=self.buckets[name].available(), free_agents=free_agents,
                              unbridged=unbridged, ratio=self.ratios.get(name, 1.0) if ratio is None else ratio)

    def take(self, name: str) -> None:
        self.buckets[name].take()
