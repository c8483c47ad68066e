"""Retry rules by outcome (issue #18 item 7). Pure, unit-tested (tests/unit/test_retry_rules.py).

A campaign's `retry_rules` text: comma-separated `OUTCOME=DELAY/MAX`, e.g.
`busy=5m/3,no_answer=1h/4,abandoned=3d/1,amd=1d/2`. DELAY is seconds, or a number
with s, m, h or d; MAX is how many calls with that outcome the lead may have before
it is done. An outcome without a rule uses the campaign's `retry_after_s`; every
lead also stops at the campaign's `max_attempts`. A conversation ends the lead.
The guard still decides every call (a quiet period after an abandoned call or a
machine is the pack's, not this rule's): these rules only say when to ask again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

OUTCOMES = ("busy", "no_answer", "abandoned", "amd", "failed", "answered")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_RULE = re.compile(r"^\s*([a-z_]+)\s*=\s*(\d+)\s*([smhd]?)\s*/\s*(\d+)\s*$")
MAX_DELAY_S = 90 * 86400


@dataclass(frozen=True)
class Rule:
    delay_s: int
    max: int


def parse_rules(text: str | None) -> dict[str, Rule]:
    """`busy=5m/3,...` -> {outcome: Rule}; a clear ValueError naming the bad part."""
    out: dict[str, Rule] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        m = _RULE.match(part)
        if not m:
            raise ValueError(f"retry rule {part.strip()!r}: expected OUTCOME=DELAY/MAX, e.g. busy=5m/3")
        outcome, n, unit, mx = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        if outcome not in OUTCOMES:
            raise ValueError(f"retry rule {part.strip()!r}: outcome one of {', '.join(OUTCOMES)}")
        if outcome in out:
            raise ValueError(f"retry rule for {outcome} given twice")
        delay = n * _UNITS[unit]
        if delay > MAX_DELAY_S:
            raise ValueError(f"retry rule {part.strip()!r}: delay over 90 days")
        out[outcome] = Rule(delay, mx)
    return out


def format_rules(rules: dict[str, Rule]) -> str:
    return ",".join(f"{k}={r.delay_s}s/{r.max}" for k, r in sorted(rules.items()))


def next_try(rules: dict[str, Rule], result: str, *, with_result: int, attempts: int, max_attempts: int,
             retry_after_s: int, now: datetime) -> datetime | None:
    """When to try the lead again after a call ended with `result`, or None: the lead
    is done. `with_result`: the lead's calls that ended with this result, this one
    included; `attempts`: all its calls."""
    if result == "conversation" or attempts >= max_attempts:
        return None
    rule = rules.get(result)
    if rule is None:
        return now + timedelta(seconds=retry_after_s)
    if with_result >= rule.max:
        return None
    return now + timedelta(seconds=rule.delay_s)
