"""The result of bench/cps.py's ramps: each configuration's highest passed rate in a
round, a round's guarded/plain ratio, and the round whose ratio is the median (its
figures are the ones printed). No I/O: tests/unit/test_bench_ramp.py."""

from __future__ import annotations

from typing import Protocol, Sequence


class StepLike(Protocol):
    config: str
    rate: int
    ok: bool
    round: int


def highest_passed(steps: Sequence[StepLike], names: Sequence[str], rnd: int) -> dict[str, StepLike | None]:
    """Each configuration's passed step of the highest rate in round `rnd` (None: none passed).
    With --keep-going a configuration may pass a rate above one it failed: the highest counts."""
    best: dict[str, StepLike | None] = {}
    for name in names:
        passed = [s for s in steps if s.config == name and s.ok and s.round == rnd]
        best[name] = max(passed, key=lambda s: s.rate) if passed else None
    return best


def round_ratio(best: dict[str, StepLike | None]) -> float:
    """dialguard's highest passed rate over plain Dial's; 0 when either passed none."""
    g, p = best.get("dialguard"), best.get("plain")
    return g.rate / p.rate if g and p else 0.0


def median_round(ratios: Sequence[float]) -> int:
    """The round whose ratio is the median: the lower middle one of an even count, so
    that the ratio printed is one a round measured, never an average of two."""
    if not ratios:
        raise ValueError("no round")
    return sorted(range(len(ratios)), key=lambda r: ratios[r])[(len(ratios) - 1) // 2]
