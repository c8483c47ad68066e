"""Pacing modes and agent states (ari_app/pacing_modes.py): pure, `now` is an input."""

import pytest

from ari_app.pacing_modes import (
    WARMUP, AgentNow, Measured, agent_state, expected_free, lines_wanted, max_lines, ramp,
)

READY = AgentNow("ready")
STEADY = Measured(placed=400, answered=100, ring_s=6.0, talk_s=60.0)  # 25 % answer


def lines(mode, agents, measured=STEADY, unbridged=0, **kw):
    kw.setdefault("max_ratio", 3.0)
    return lines_wanted(mode, now=1000.0, agents=agents, measured=measured, unbridged=unbridged, **kw)


def test_progressive_one_line_per_ready_agent():
    assert lines("progressive", [READY] * 4) == 4
    assert lines("progressive", [READY] * 4, unbridged=3) == 1
    assert lines("progressive", [READY] * 4, unbridged=4) == 0
    assert lines("progressive", [READY] * 4, unbridged=9) == 0  # never negative
    assert lines("progressive", []) == 0
    # busy agents are never dialed for, however soon they end
    assert lines("progressive", [AgentNow("on_call", since=0.0)] * 4) == 0
    assert lines("progressive", [AgentNow("wrap_up", until=1000.5)] * 4) == 0


def test_break_and_logged_out_agents_get_no_line():
    for st in ("break", "logged_out"):
        for mode in ("progressive", "predictive"):
            assert lines(mode, [AgentNow(st)] * 5) == 0


def test_predictive_gentle_start_is_progressive_with_nothing_measured():
    agents = [READY] * 4 + [AgentNow("on_call", since=995.0)] * 4
    assert lines("predictive", agents, measured=Measured()) == 4  # not 4 x 3
    assert lines("predictive", agents, measured=Measured(placed=10, answered=0)) == 4


def test_predictive_ramps_up_over_warmup_answers():
    agents = [READY] * 8
    got = [lines("predictive", agents, measured=Measured(placed=4 * a, answered=a, ring_s=6, talk_s=60))
           for a in range(0, WARMUP + 5)]
    assert got[0] == 8
    assert got[WARMUP] == max_lines(8, 0.25, 0.015, 24) == 20  # full: as far as the abandon target allows
    assert all(x <= y for x, y in zip(got, got[1:]))  # never jumps back
    assert 8 < got[WARMUP // 2] < 20  # half way: half the dial-ahead


def test_predictive_lines_keep_the_expected_abandon_share_under_the_target():
    agents = [READY] * 8
    for p in (0.25, 0.5, 0.9):
        n = lines("predictive", agents, measured=Measured(1000, int(1000 * p), 6.0, 60.0), max_ratio=10)
        assert n == max_lines(8, p, 0.015, 80)
        assert share(n, 8, p) <= 0.015 < share(n + 1, 8, p)  # the most lines within the target
    m = Measured(1000, 250, 6.0, 60.0)
    assert lines("predictive", agents, measured=m, abandon_target=0.0) == 8  # no overflow allowed: no dial-ahead
    assert lines("predictive", agents, measured=m, abandon_target=0.05) > lines("predictive", agents, measured=m)
    assert lines("predictive", agents, measured=Measured(1000, 1000, 6.0, 60.0)) == 8  # all answer: 1 per agent
    assert lines("predictive", agents, measured=m, max_ratio=1.5) == 12  # the campaign's cap
    assert lines("predictive", [READY] * 4, max_ratio=0.5) == 4  # a cap below 1 still one line per ready agent
    # one or two agents: any second line overflows too often, the pace stays at one per agent
    assert lines("predictive", [READY] * 2, measured=m) == 2


def share(n, k, p):
    """E[max(0, X - k)] / E[X] for X ~ Binomial(n, p), by the definition."""
    from math import comb
    over = sum((x - k) * comb(n, x) * p ** x * (1 - p) ** (n - x) for x in range(k + 1, n + 1))
    return over / (n * p)


def test_max_lines_edges():
    assert max_lines(0, 0.3, 0.015, 10) == 0
    assert max_lines(4, 0.0, 0.015, 40) == 4
    assert max_lines(4, 1.0, 0.015, 40) == 4
    assert max_lines(4, 0.3, 0.015, 4) == 4  # the cap
    assert max_lines(50, 0.3, 0.015, 10**4) / 50 > max_lines(8, 0.3, 0.015, 10**4) / 8  # bigger pools dial further


def test_predictive_dials_ahead_for_agents_about_to_be_free():
    m = Measured(1000, 250, ring_s=6.0, talk_s=60.0)
    ending = AgentNow("on_call", since=1000.0 - 57.0)  # 3 s of mean talk left
    fresh = AgentNow("on_call", since=1000.0 - 5.0)  # 55 s left
    wrapping = AgentNow("wrap_up", until=1004.0)
    full, four = max_lines(8, 0.25, 0.015, 24), max_lines(4, 0.25, 0.015, 12)
    assert full > four
    assert lines("predictive", [READY] * 4 + [ending] * 4, measured=m) == full
    assert lines("predictive", [READY] * 4 + [fresh] * 4, measured=m) == four
    assert lines("predictive", [READY] * 4 + [wrapping] * 4, measured=m) == full
    assert lines("predictive", [READY] * 4 + [AgentNow("wrap_up", until=1020.0)] * 4, measured=m) == four
    # a call long past its mean is not counted as ending (a quarter of the mean is still ahead)
    assert lines("predictive", [READY] * 4 + [AgentNow("on_call", since=0.0)] * 4, measured=m) == four
    assert lines("predictive", [fresh, fresh], measured=m) == 0  # nobody free soon: no line
    # ringing calls already count against them
    assert lines("predictive", [READY] * 4 + [ending] * 4, measured=m, unbridged=5) == full - 5


def test_wrap_up_time_counts_in_the_expected_end_of_a_call():
    m = Measured(1000, 250, ring_s=6.0, talk_s=60.0)
    ending = AgentNow("on_call", since=1000.0 - 57.0)
    assert lines("predictive", [READY] * 4 + [ending] * 4, measured=m, wrap_s=0) == max_lines(8, 0.25, 0.015, 24)
    assert lines("predictive", [READY] * 4 + [ending] * 4, measured=m, wrap_s=10) == max_lines(4, 0.25, 0.015, 12)


def test_abandon_guard_stops_dial_ahead():
    m = Measured(1000, 250, ring_s=6.0, talk_s=60.0)
    agents = [READY] * 4 + [AgentNow("on_call", since=1000.0 - 58.0)] * 4
    assert lines("predictive", agents, measured=m) == max_lines(8, 0.25, 0.015, 24) == 20
    assert lines("predictive", agents, measured=m, limit_ratio=2.0) == 16
    assert lines("predictive", agents, measured=m, limit_ratio=1.0) == 8
    assert lines("predictive", agents, measured=m, limit_ratio=0.5) == 2  # ready agents only, halved
    assert lines("progressive", agents, measured=m, limit_ratio=0.5) == 2
    assert lines("progressive", [READY], measured=m, limit_ratio=0.5) == 1  # never stalls
    assert lines("progressive", [READY], measured=m, limit_ratio=0.5, unbridged=1) == 0
    for mode in ("progressive", "predictive", "ratio"):  # stopped by an abandon limit: nothing at all
        assert lines(mode, [READY] * 4, measured=m, limit_ratio=0.0) == 0
    assert lines("preview", [READY] * 4, limit_ratio=0.0, accepted_previews=2) == 0


def test_preview_dials_only_accepted_previews():
    assert lines("preview", [READY] * 4) == 0
    assert lines("preview", [READY] * 4, accepted_previews=2) == 2
    assert lines("preview", [READY] * 4, accepted_previews=2, unbridged=2) == 0


def test_ratio_mode_is_the_fixed_ratio_from_the_first_call():
    assert lines("ratio", [READY] * 2, measured=Measured(), max_ratio=3.0) == 6
    assert lines("ratio", [READY] * 2, max_ratio=3.0, limit_ratio=0.5) == 1
    assert lines("ratio", [READY] * 2, max_ratio=1.5, unbridged=2) == 1
    assert lines("ratio", [AgentNow("on_call", since=999.0)] * 2, max_ratio=3.0) == 0


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="pacing mode"):
        lines("turbo", [READY])


def test_ramp_edges():
    assert ramp(0) == 0 and ramp(WARMUP) == 1 and ramp(10 * WARMUP) == 1 and ramp(-3) == 0
    assert ramp(5, warmup=0) == 1


def test_expected_free_horizon_edges():
    a = AgentNow("on_call", since=40.0)
    assert expected_free([a], now=100.0, horizon=0.0, talk_s=60.0) == 1  # exactly at its mean end
    assert expected_free([a], now=99.0, horizon=0.0, talk_s=60.0) == 0
    assert expected_free([a], now=99.0, horizon=1.0, talk_s=60.0) == 1
    assert expected_free([a], now=100.0, horizon=100.0, talk_s=0.0) == 0  # no talk measured: not counted


def test_agent_state():
    kw = dict(on_call=False, device=None, last_end=None, wrap_s=10.0, now=100.0)
    assert agent_state("ready", **kw) == "ready"
    assert agent_state("break", **kw) == "break"
    assert agent_state("logged_out", **kw) == "logged_out"
    assert agent_state("ready", **{**kw, "on_call": True}) == "on_call"
    assert agent_state("break", **{**kw, "device": "INUSE"}) == "on_call"  # a call outside the dialer
    assert agent_state("ready", **{**kw, "device": "UNAVAILABLE"}) == "ready"  # an endpoint without contact
    assert agent_state("ready", **{**kw, "device": "NOT_INUSE"}) == "ready"
    assert agent_state("ready", **{**kw, "last_end": 95.0}) == "wrap_up"
    assert agent_state("ready", **{**kw, "last_end": 90.0}) == "ready"  # wrap-up over exactly at 100
    assert agent_state("ready", **{**kw, "last_end": 95.0, "wrap_s": 0.0}) == "ready"
    with pytest.raises(ValueError):
        agent_state("on_call", **kw)  # the CLI cannot set a derived state
