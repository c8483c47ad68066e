"""bench/ramp.py: how bench/cps.py turns its ramps into issue 21's ratio (item 1)."""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

# loaded by path: bench/ on sys.path would shadow top-level names (engine, dnc, audit)
_spec = importlib.util.spec_from_file_location(
    "bench_ramp", Path(__file__).resolve().parents[2] / "bench" / "ramp.py")
ramp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ramp)
highest_passed, median_round, round_ratio = ramp.highest_passed, ramp.median_round, ramp.round_ratio


@dataclass
class S:
    config: str
    rate: int
    ok: bool
    round: int = 0


def test_highest_passed_is_per_round_and_per_configuration():
    steps = [S("plain", 200, True), S("dialguard", 200, True), S("plain", 300, True), S("dialguard", 300, False),
             S("plain", 200, True, 1), S("dialguard", 200, False, 1), S("plain", 300, False, 1)]
    r0 = highest_passed(steps, ["plain", "dialguard"], 0)
    assert (r0["plain"].rate, r0["dialguard"].rate) == (300, 200)
    r1 = highest_passed(steps, ["plain", "dialguard"], 1)
    assert r1["plain"].rate == 200 and r1["dialguard"] is None  # round 0's pass does not count in round 1


def test_a_pass_above_a_failure_counts_with_keep_going():
    steps = [S("dialguard", 300, False), S("dialguard", 350, True), S("dialguard", 400, False)]
    assert highest_passed(steps, ["dialguard"], 0)["dialguard"].rate == 350


def test_round_ratio():
    assert round_ratio({"plain": S("plain", 500, True), "dialguard": S("dialguard", 400, True)}) == 0.8
    assert round_ratio({"plain": S("plain", 500, True), "dialguard": None}) == 0.0
    assert round_ratio({"plain": None, "dialguard": S("dialguard", 400, True)}) == 0.0


@pytest.mark.parametrize("ratios, mid", [
    ([0.5], 0),
    ([0.75, 0.444, 0.6], 2),      # stop 21's r3e: the median 0.600 is round 3's
    ([0.875, 0.667, 0.0], 1),
    ([0.9, 0.1, 0.5, 0.7], 2),    # even count: the lower middle (0.5), a ratio a round measured
])
def test_median_round(ratios, mid):
    assert median_round(ratios) == mid


def test_median_round_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        median_round([])
