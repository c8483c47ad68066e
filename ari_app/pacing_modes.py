"""Pacing modes and agent states (issue #18 item 4). Pure: `now` and measured figures in,
a number of lines out; unit-tested in tests/unit/test_pacing_modes.py.

A campaign's `pacing_mode`:

- progressive: one line per ready agent, never ahead. Calls not yet bridged count
  against ready agents, so an answered call always finds its agent (abandons only
  when an agent leaves meanwhile).
- predictive: dials for the agents expected to be free when the calls answer, as
  many lines as keep the expected abandon share under `abandon_target` (half the
  campaign's limit): with answer rate p, n lines out (those ringing included) and k
  agents expected free, answers X ~ Binomial(n, p), abandoned E[max(0, X - k)],
  share E[max(0, X - k)] / E[X] (`max_lines`); never more than `dial_ratio` lines
  per agent. "Expected free" counts ready agents, agents in wrap-up that ends
  within the mean ring time, and agents on a call whose mean talk time runs out
  within it. Figures are measured from the campaign's recent calls (`Measured`).
  Gentle start: with no answered call measured it paces like progressive; the
  ratio and the dial-ahead for busy agents grow linearly to their full value over
  the first `warmup` answered calls, so the first calls never go out at the full
  ratio (issue #18: 6 calls for 4 agents, 2 abandoned in 5 s).
- preview: no line until an agent accepted a previewed lead (CLI `dialguard agent
  accept`); then exactly one line per accepted preview, for that agent.
- ratio: the dialer's pacing before issue #18, kept for operators and tests that want
  it: `dial_ratio` lines per ready agent from the first call, no measurement.

The abandon guard (ari_app/pacing.effective_ratio, and the pack's limit) is applied
on top: `limit_ratio` below 1 stops all dial-ahead and shrinks the lines to that
fraction of ready agents, as before.

Agent states (`agent_state`): logged_out, ready, on_call, wrap_up (a configurable
time after each call), break. The admin part (logged in or out, ready, on break)
comes from the CLI; on_call from the dialer's lease and from Asterisk's device
state (a call outside the dialer). UNAVAILABLE is not read as logged out: an
endpoint used without a registration (no AOR contact) always reads UNAVAILABLE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

MODES = ("progressive", "predictive", "preview", "ratio")
AGENT_STATES = ("logged_out", "ready", "on_call", "wrap_up", "break")
ADMIN_STATES = ("logged_out", "ready", "break")  # what `dialguard agent` sets
WARMUP = 10  # answered calls before predictive reaches its full ratio
DEFAULT_RING_S = 8.0  # mean time to answer before any is measured
# A call past its mean talk time is not about to end: it is expected to need this
# fraction of the mean again (talk times have a long tail).
OVERRUN_LEFT = 0.25
DEVICE_ON_CALL = frozenset({"INUSE", "BUSY", "RINGING", "RINGINUSE", "ONHOLD"})


@dataclass(frozen=True)
class Measured:
    """A campaign's recent calls (a sliding window of dialer_calls)."""

    placed: int = 0  # originated calls that ended in the window
    answered: int = 0  # of which answered (live or machine)
    ring_s: float = 0.0  # mean seconds from originate to answer of the answered ones
    talk_s: float = 0.0  # mean bridged talk seconds

    @property
    def answer_rate(self) -> float | None:
        return self.answered / self.placed if self.placed else None


@dataclass(frozen=True)
class AgentNow:
    """One agent as pacing sees it: its state and when it entered it (the `now` clock)."""

    state: str
    since: float = 0.0
    until: float | None = None  # wrap_up: when it ends


def agent_state(admin: str, *, on_call: bool, device: str | None, last_end: float | None,
                wrap_s: float, now: float) -> str:
    """The agent's state from the CLI's word (`admin`), the dialer's lease (`on_call`),
    Asterisk's device state and the end of its last call (`last_end`, `now`'s clock)."""
    if admin not in ADMIN_STATES:
        raise ValueError(f"agent state {admin!r}: one of {', '.join(ADMIN_STATES)}")
    if on_call or device in DEVICE_ON_CALL:
        return "on_call"
    if admin != "ready":
        return admin
    if last_end is not None and now < last_end + wrap_s:
        return "wrap_up"
    return "ready"


def ramp(answered: int, warmup: int = WARMUP) -> float:
    """0 with nothing measured, 1 from `warmup` answered calls on."""
    if warmup <= 0:
        return 1.0
    return max(0.0, min(1.0, answered / warmup))


def expected_free(agents: list[AgentNow], now: float, horizon: float, talk_s: float) -> float:
    """Agents ready now plus those expected to be free within `horizon` seconds: wrap-up
    ending by then, calls whose remaining mean talk time plus wrap-up ends by then."""
    n = 0.0
    for a in agents:
        if a.state == "ready":
            n += 1
        elif a.state == "wrap_up":
            if a.until is not None and a.until - now <= horizon:
                n += 1
        elif a.state == "on_call" and talk_s > 0:
            elapsed = now - a.since
            left = talk_s - elapsed if elapsed <= talk_s else OVERRUN_LEFT * talk_s
            if left <= horizon:
                n += 1
    return n


@lru_cache(maxsize=4096)
def max_lines(agents: int, p: float, target: float, cap: int) -> int:
    """The most lines (at least `agents`, at most `cap`) whose answers X ~ Binomial(n, p)
    overflow `agents` by a share E[max(0, X - agents)] / E[X] of at most `target`."""
    if agents <= 0 or p <= 0:
        return max(0, agents)
    best = agents  # as many lines as agents never overflows
    for n in range(agents + 1, max(cap, agents) + 1):
        pmf = (1 - p) ** n  # P(X = 0)
        over = 0.0
        for x in range(1, n + 1):
            pmf *= (n - x + 1) / x * p / (1 - p) if p < 1 else 0.0
            if x > agents:
                over += (x - agents) * pmf
        if p >= 1:
            over = n - agents
        if over / (n * p) > target:
            break
        best = n
    return best


def lines_wanted(mode: str, *, now: float, agents: list[AgentNow], measured: Measured, unbridged: int,
                 max_ratio: float, limit_ratio: float = math.inf, wrap_s: float = 0.0,
                 accepted_previews: int = 0, warmup: int = WARMUP, abandon_target: float = 0.015) -> int:
    """Calls to start now for one campaign, before the concurrency and rate limits.

    `unbridged`: this campaign's calls placed and not yet bridged (ringing or waiting for
    an agent). `limit_ratio`: the abandon guard's ratio (ari_app.pacing.effective_ratio).
    """
    if mode not in MODES:
        raise ValueError(f"pacing mode {mode!r}: one of {', '.join(MODES)}")
    if limit_ratio <= 0:  # stopped by an abandon limit (dialguard/campaigns/abandon.py)
        return 0
    ready = sum(1 for a in agents if a.state == "ready")
    if mode == "preview":
        return max(0, accepted_previews - unbridged)
    if mode == "ratio":
        n = math.floor(ready * min(max_ratio, limit_ratio) + 1e-9) - unbridged
        return max(0, max(n, 1) if ready > 0 and unbridged == 0 else n)
    if mode == "progressive" or limit_ratio < 1.0:
        ratio = min(1.0, limit_ratio)
        n = math.floor(ready * ratio + 1e-9) - unbridged
        if ready > 0 and unbridged == 0:
            n = max(n, 1)  # the slowest pace: one call at a time for a ready agent
        return max(0, n)
    # predictive
    g = ramp(measured.answered, warmup)
    rate = measured.answer_rate
    horizon = (measured.ring_s if measured.answered else DEFAULT_RING_S) * g
    talk = measured.talk_s + wrap_s if measured.talk_s > 0 else 0.0
    soon = ready + (expected_free(agents, now, horizon, talk) - ready) * g if g > 0 else ready
    k = math.floor(soon + 1e-9)
    cap = math.floor(k * max(1.0, min(max_ratio, limit_ratio)) + 1e-9)
    full = max_lines(k, round(rate, 2), abandon_target, cap) if rate else k
    n = math.floor(k + (full - k) * g + 1e-9) - unbridged  # gentle start: from k lines to full
    if ready > 0 and unbridged == 0:
        n = max(n, 1)
    return max(0, n)
