"""Caller-ID health: the figures, the carrier-rejection test and the rules at their edges."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agi.handlers.report import classify, sip_code
from dialguard import callerid_health as ch
from dialguard.callerid_health import Entry, Event, Figures, figures, is_rejection, median, triggers
from dialguard.rules import CallerIdHealth, HealthRule, Policy, RulesError, load_pack_text

H = 3_600_000
NOW = 1_800_000_000_000
CFG = CallerIdHealth(window_calls=10, window_hours=2, short_answer_s=5)


def rej(at=NOW, sip=403, cause=21):
    return Entry(at, False, 0, sip, cause)


def ans(at=NOW, talk=60):
    return Entry(at, True, talk, None, 16)


def rule(metric, threshold, min_calls=0, cool="24h"):
    return HealthRule(id="r", metric=metric, threshold=threshold, min_calls=min_calls, cool_down=cool)


# -- what counts as a carrier's rejection -------------------------------------------------
@pytest.mark.parametrize("entry, expected", [
    (Entry(NOW, False, 0, 403, 21), True),     # SIP 403 Forbidden
    (Entry(NOW, False, 0, 603, 21), True),     # SIP 603 Decline
    (Entry(NOW, False, 0, 608, 21), True),     # SIP 608 Rejected (RFC 8688)
    (Entry(NOW, False, 0, 486, 17), False),    # a busy callee says nothing about the number
    (Entry(NOW, False, 0, 486, 21), False),    # the SIP code wins over the cause
    (Entry(NOW, False, 0, 480, 18), False),    # no answer
    (Entry(NOW, False, 0, None, 21), True),    # no SIP code from the trunk: Q.850 21 call rejected
    (Entry(NOW, False, 0, None, 17), False),   # Q.850 17 user busy
    (Entry(NOW, False, 0, None, None), False),
    (Entry(NOW, True, 30, 403, 21), False),    # an answered call is never a rejection
])
def test_rejection_is_told_apart_from_a_busy_callee(entry, expected):
    assert is_rejection(entry, CFG) is expected


def test_entry_round_trips_through_its_redis_form():
    for e in (rej(), ans(talk=3), Entry(NOW, False, 0, None, None)):
        assert Entry.decode(e.encode()) == e
        assert Entry.decode(e.encode().encode()) == e


def test_entry_of_counts_answered_results():
    assert ch.entry_of("conversation", 40, None, 16, NOW).answered
    assert ch.entry_of("amd", 2, None, 16, NOW).answered
    for res in ("busy", "failed", "no_answer"):
        assert not ch.entry_of(res, 0, 403, 21, NOW).answered


# -- the windows ----------------------------------------------------------------------------
def test_window_of_calls_keeps_exactly_the_newest_n():
    entries = [ans()] * 10 + [rej()] * 5  # newest first: the 5 rejections are older than the 10th call
    f = figures(entries, NOW, CFG)
    assert (f.calls, f.answered, f.rejected) == (10, 10, 0)
    f = figures([rej()] + entries, NOW, CFG)
    assert (f.calls, f.rejected, f.run) == (10, 1, 1)


def test_window_of_hours_is_half_open():
    lo = NOW - 2 * H
    assert figures([rej(at=lo + 1)], NOW, CFG).calls == 1  # (now - 2 h, now]
    assert figures([rej(at=lo)], NOW, CFG).calls == 0      # exactly 2 h old: out
    # entries are newest first: the first one out of the window ends the count
    assert figures([rej(at=NOW), rej(at=lo), rej(at=NOW)], NOW, CFG).calls == 1


def test_figures_start_afresh_after_a_cool_down():
    f = figures([rej(at=NOW), rej(at=NOW - 10), rej(at=NOW - 20)], NOW, CFG, since_ms=NOW - 10)
    assert (f.calls, f.run) == (1, 1)


def test_run_counts_consecutive_rejections_from_the_newest():
    f = figures([rej(), rej(), ans(), rej(), rej(), rej()], NOW, CFG)
    assert (f.run, f.rejected, f.calls) == (2, 5, 6)
    assert figures([ans(), rej(), rej()], NOW, CFG).run == 0


def test_short_answer_threshold_edge():
    f = figures([ans(talk=4), ans(talk=5), ans(talk=60), rej()], NOW, CFG)
    assert (f.answered, f.short) == (3, 1)  # talk 4 < 5 is short; exactly 5 is not
    assert f.short_answer_rate == pytest.approx(1 / 3)
    assert f.answer_rate == pytest.approx(3 / 4)
    assert f.rejection_rate == pytest.approx(1 / 4)


def test_empty_figures_are_zero_and_never_trigger():
    f = Figures()
    assert (f.answer_rate, f.short_answer_rate, f.rejection_rate) == (0.0, 0.0, 0.0)
    for metric, t in (("consecutive_rejections", 1), ("rejection_rate", 0.01), ("short_answer_rate", 0.01),
                      ("answer_rate_vs_pool", 1)):
        assert not triggers(rule(metric, t), f, 0.9)


# -- rules at their thresholds ------------------------------------------------------------------
def test_consecutive_rejections_trigger_at_the_threshold():
    r = rule("consecutive_rejections", 3)
    assert not triggers(r, figures([rej(), rej(), ans()], NOW, CFG))
    assert triggers(r, figures([rej(), rej(), rej()], NOW, CFG))


def test_rate_rules_trigger_at_or_over_the_threshold_with_enough_calls():
    r = rule("rejection_rate", 0.2, min_calls=5)
    five = [rej(), ans(), ans(), ans(), ans()]  # 1 in 5 = 0.2
    assert triggers(r, figures(five, NOW, CFG))
    assert not triggers(r, figures(five[:4] + [ans()] * 2, NOW, CFG))  # 1 in 6 < 0.2
    assert not triggers(r, figures(five[:4], NOW, CFG))  # 1 in 4, but only 4 calls < min_calls
    s = rule("short_answer_rate", 0.5, min_calls=2)
    assert triggers(s, figures([ans(talk=1), ans(talk=50)], NOW, CFG))
    assert not triggers(s, figures([ans(talk=1), ans(talk=50), ans(talk=50)], NOW, CFG))


def test_answer_rate_vs_pool_is_strictly_under_threshold_times_median():
    r = rule("answer_rate_vs_pool", 0.5, min_calls=4)
    quarter = figures([ans(), rej(), rej(), rej()], NOW, CFG)  # answer rate 0.25
    assert triggers(r, quarter, 0.6)        # 0.25 < 0.30
    assert not triggers(r, quarter, 0.5)    # 0.25 == 0.5 x 0.5: not under
    assert not triggers(r, quarter, None)   # no pool to compare with
    assert not triggers(r, quarter, 0.0)
    assert not triggers(r, figures([ans(), rej(), rej()], NOW, CFG), 0.9)  # 3 calls < min_calls 4


def test_median_of_pool():
    assert median([0.2, 0.9, 0.5]) == 0.5
    assert median([0.2, 0.4]) == pytest.approx(0.3)
    assert median([]) is None


def test_penalty_grows_with_rejections_and_short_answers():
    healthy = figures([ans()] * 5, NOW, CFG)
    assert ch.penalty(healthy) == 0
    shunned = figures([ans(talk=1)] * 4 + [ans()], NOW, CFG)
    rejected = figures([rej()] + [ans()] * 4, NOW, CFG)
    assert ch.penalty(shunned) == pytest.approx(0.4)
    assert ch.penalty(rejected) == pytest.approx(0.3)


# -- the pack schema --------------------------------------------------------------------------
BASE = "pack: t\ncaller_id:\n  health:\n"


@pytest.mark.parametrize("body, problem", [
    ("    rejection_sip_codes: [486]\n", "busy"),
    ("    rejection_sip_codes: [200]\n", "not a SIP failure code"),
    ("    rejection_causes: [17]\n", "busy callee"),
    ("    rules: [{id: a, metric: rejection_rate, threshold: 2, cool_down: 1h}]\n", "fraction"),
    ("    rules: [{id: a, metric: consecutive_rejections, threshold: 2.5, cool_down: 1h}]\n", "whole number"),
    ("    rules: [{id: a, metric: consecutive_rejections, threshold: 2, cool_down: 0s}]\n", "positive"),
    ("    rules: [{id: a, metric: complaints, threshold: 2, cool_down: 1h}]\n", "metric"),
    ("    rules: [{id: a, metric: consecutive_rejections, threshold: 2, cool_down: 1h},"
     " {id: a, metric: rejection_rate, threshold: 0.5, cool_down: 1h}]\n", "duplicate"),
    ("    window_calls: 0\n", "window_calls"),
    ("    rules: [{id: a, metric: complaints_per_1000, threshold: 1001, cool_down: 1h}]\n", "per 1,000"),
    ("    window_calls: 100\n    rules: [{id: a, metric: optouts_per_1000, threshold: 3, min_calls: 101,"
     " cool_down: 1h}]\n", "never trigger"),
])
def test_bad_health_settings_are_refused_with_the_reason(body, problem):
    with pytest.raises(RulesError, match=problem):
        load_pack_text(BASE + body, "t.yaml")


def test_cn_carrier_ships_health_rules_with_their_reasoning():
    (pack, h), = Policy.load("cn-carrier").caller_id_health
    assert pack == "cn-carrier"
    by_id = {r.id: r for r in h.rules}
    assert by_id["carrier-rejections"].metric == "consecutive_rejections"
    assert by_id["carrier-rejections"].cool_down == timedelta(hours=24)
    assert by_id["answer-rate-vs-pool"].min_calls == 100
    assert all(r.note for r in h.rules)
    assert 403 in h.rejection_sip_codes and 486 not in h.rejection_sip_codes
    # combined with cn-default, approval stays cn-default's rule
    assert Policy.load("cn-default,cn-carrier").caller_id_required
    assert not Policy.load("cn-carrier").caller_id_required


# -- complaints and opt-outs per 1,000 calls ---------------------------------------------------
CFG1000 = CallerIdHealth(window_calls=1000, window_hours=24)


def calls(n, last=NOW):
    """n answered calls, newest first, one a second up to `last`."""
    return [ans(at=last - i * 1000) for i in range(n)]


def test_complaints_and_optouts_count_in_the_window_of_calls():
    entries = calls(10)  # the oldest call in the window is at NOW - 9 s
    events = [Event(NOW, "c"), Event(NOW - 9000, "c"), Event(NOW - 9001, "c"),  # the last one: before the window
              Event(NOW - 1, "o")]
    f = figures(entries, NOW, CFG1000, events=events)
    assert (f.calls, f.complaints, f.optouts) == (10, 2, 1)
    assert f.complaints_per_1000 == 200 and f.optouts_per_1000 == 100
    # a window truncated by window_calls: events before its oldest call do not count
    f = figures(entries, NOW, CallerIdHealth(window_calls=5, window_hours=24), events=events)
    assert (f.calls, f.complaints, f.optouts) == (5, 1, 1)
    # the hours bound and the end of the last cool-down bound them too
    f = figures(entries, NOW, CFG1000, since_ms=NOW - 1, events=events)
    assert (f.calls, f.complaints, f.optouts) == (1, 1, 0)
    # no call in the window: nothing counts, nothing triggers
    f = figures([], NOW, CFG1000, events=events)
    assert (f.complaints, f.complaints_per_1000) == (0, 0.0)
    assert not triggers(rule("complaints_per_1000", 0.001), f)


@pytest.mark.parametrize("n_calls, n_complaints, min_calls, hit", [
    (1000, 3, 300, True),    # exactly 3 per 1,000
    (1000, 2, 300, False),   # 2 per 1,000
    (667, 2, 300, False),    # 2.9985 per 1,000: just under
    (666, 2, 300, True),     # 3.003 per 1,000: just over
    (300, 1, 300, True),     # 3.33 per 1,000 at exactly min_calls
    (299, 1, 300, False),    # one call short of min_calls
])
def test_complaint_rule_edges(n_calls, n_complaints, min_calls, hit):
    cfg = CallerIdHealth(window_calls=1000, window_hours=24)
    events = [Event(NOW - i, "c") for i in range(n_complaints)]
    f = figures(calls(n_calls), NOW, cfg, events=events)
    assert f.calls == min(n_calls, 1000)
    assert triggers(rule("complaints_per_1000", 3, min_calls), f) is hit
    # opt-outs are counted apart: the same events as opt-outs do not trip the complaint rule
    g = figures(calls(n_calls), NOW, cfg, events=[Event(e.at_ms, "o") for e in events])
    assert not triggers(rule("complaints_per_1000", 3, min_calls), g)
    assert triggers(rule("optouts_per_1000", 3, min_calls), g) is hit


def test_event_round_trips_and_refuses_unknown_kinds():
    for e in (Event(NOW, "c"), Event(NOW, "o")):
        assert Event.decode(e.encode()) == e and Event.decode(e.encode().encode()) == e
    with pytest.raises(ValueError):
        Event.decode(f"{NOW}|x")


def test_cn_carrier_cools_a_number_down_on_complaints():
    (_pack, h), = Policy.load("cn-carrier").caller_id_health
    r = {r.id: r for r in h.rules}["complaints"]
    assert (r.metric, r.threshold, r.min_calls, r.cool_down) == ("complaints_per_1000", 20, 100, timedelta(hours=24))
    assert r.min_calls <= h.window_calls
    one = figures(calls(100, NOW), NOW, h, events=[Event(NOW, "c")])
    two = figures(calls(100, NOW), NOW, h, events=[Event(NOW, "c"), Event(NOW - 1, "c")])
    early = figures(calls(99, NOW), NOW, h, events=[Event(NOW, "c"), Event(NOW - 1, "c")])
    assert not triggers(r, one) and triggers(r, two) and not triggers(r, early)


def test_config_id_changes_with_the_settings():
    a, b = Policy.load("cn-carrier"), Policy.load("cn-default")
    assert ch.config_id(a) != ch.config_id(b)
    assert ch.config_id(a) == ch.config_id(Policy.load("cn-carrier"))
    assert ch.configs(b) == [("", ch.DEFAULT)]


# -- what the dialplan reports -------------------------------------------------------------------
@pytest.mark.parametrize("raw, code", [("403", 403), ("SIP 403 Forbidden", 403), ("SIP 603 Decline", 603),
                                       ("", None), (None, None), ("SIP 200 OK", None), ("4031", None),
                                       ("Q.850 21", None)])
def test_sip_code_from_the_trunk(raw, code):
    assert sip_code(raw) == code


def test_classify_keeps_the_sip_code_of_an_unanswered_call():
    o = classify("CONGESTION", None, 0, 21, sip=403)
    assert (o.result, o.hangup_cause, o.sip_code) == ("failed", 21, 403)
    o = classify("BUSY", None, 0, 17, sip=486)
    assert (o.result, o.sip_code) == ("busy", 486)
    assert classify("CONGESTION", None, 0, 999).hangup_cause is None  # not a Q.850 cause


def test_dialer_reads_the_sip_code_from_ari_tech_cause():
    from ari_app.calls import cause_of, sip_of

    assert [sip_of(v) for v in (403, "603", 486, 0, 200, None, "x")] == [403, 603, 486, None, None, None, None]
    assert [cause_of(v) for v in (21, 0, 128, None, "17")] == [21, 0, None, None, 17]
