"""Abandon limits as the packs state them (dialguard/campaigns/abandon.py): open, progressive, stopped."""

from datetime import timedelta

from dialguard.campaigns.abandon import OPEN, PROGRESSIVE, STOPPED, Limit, assess
from ari_app.pacing import Pacer
from dialguard.rules import Policy

D30 = timedelta(days=30)


def tcpa(answered, abandoned):
    return Limit("us-tcpa", 3, D30, answered, abandoned)


def test_headroom_is_what_may_still_be_abandoned():
    assert tcpa(100, 0).headroom == 3
    assert tcpa(100, 2).headroom == 1
    assert tcpa(100, 3).headroom == 0
    assert tcpa(33, 0).headroom == 0  # 1 of 33 would be 3.03 %
    assert tcpa(34, 0).headroom == 1


def test_open_while_one_more_abandon_stays_within():
    assert assess([tcpa(100, 2)]).state == OPEN


def test_progressive_when_one_more_would_cross_and_at_the_start():
    assert assess([tcpa(100, 3)]).state == PROGRESSIVE  # at 3 %: the next one would cross
    assert assess([tcpa(0, 0)]).state == PROGRESSIVE  # no answered call yet: no headroom


def test_stopped_once_crossed():
    v = assess([tcpa(100, 4)])
    assert v.state == STOPPED and v.tightest.source == "us-tcpa"
    assert "4.00% of 3% over 30 days (4 abandoned / 100 answered)" in v.why


def test_tightest_of_several_limits_wins():
    ofcom = Limit("uk-ofcom", 3, timedelta(hours=24), 10, 1)  # 10 % in the last 24 h: crossed
    own = Limit("campaign", 5, None, 200, 1)
    v = assess([tcpa(1000, 5), ofcom, own])
    assert v.state == STOPPED and v.tightest is ofcom
    assert assess([tcpa(1000, 5), own]).state == OPEN


def test_a_limit_of_100_pct_limits_nothing():
    assert assess([Limit("campaign", 100, None, 3, 3)]).state == OPEN
    assert assess([]).tightest is None


def test_packs_state_the_limits():
    p = Policy.load("us-tcpa")
    [(name, rp)] = p.abandon_limits
    assert (name, rp.max_pct, rp.period) == ("us-tcpa", 3, D30)
    [(name, rp)] = Policy.load("uk-ofcom").abandon_limits
    assert (name, rp.max_pct, rp.period) == ("uk-ofcom", 3, timedelta(hours=24))
    assert Policy.load("cn-default").abandon_limits == []


def test_pacer_obeys_the_verdict():
    t = [0.0]
    p = Pacer(clock=lambda: t[0])
    kw = dict(calls_per_second=100, dial_ratio=3.0, rate_pct=0.0, limit_pct=3.0)
    p.update("c", state=OPEN, **kw)
    t[0] = 1
    assert p.how_many("c", max_concurrent=50, in_flight=0, free_agents=4, unbridged=0) == 12
    p.update("c", state=PROGRESSIVE, **kw)
    assert p.how_many("c", max_concurrent=50, in_flight=0, free_agents=4, unbridged=0) == 4
    assert p.how_many("c", max_concurrent=50, in_flight=4, free_agents=4, unbridged=4) == 0
    p.update("c", state=STOPPED, **kw)
    assert p.how_many("c", max_concurrent=50, in_flight=0, free_agents=4, unbridged=0) == 0


def test_stopped_says_when_it_is_callable_again():
    from datetime import datetime, timezone

    at = datetime(2026, 12, 30, 10, tzinfo=timezone.utc)
    v = assess([Limit("us-tcpa", 3, D30, 118, 4, at), Limit("campaign", 100, None, 5, 4)])
    assert v.state == STOPPED and v.callable_at == at
    assert v.summary() == ("stopped: us-tcpa abandon limit 3% over 30 days, 3.39% now (4 abandoned / 118 "
                           "answered), callable again at 2026-12-30T10:00:00+00:00")
    # two limits crossed: callable once the later one clears
    later = datetime(2027, 1, 2, tzinfo=timezone.utc)
    v = assess([Limit("us-tcpa", 3, D30, 118, 4, at), Limit("uk-ofcom", 3, timedelta(hours=24), 10, 2, later)])
    assert v.callable_at == later and v.tightest.source == "uk-ofcom"
    assert assess([tcpa(100, 3)]).callable_at is None  # not stopped
    assert assess([tcpa(100, 3)]).summary().startswith("progressive: us-tcpa abandon limit 3% over 30 days, 3.00%")
    own = assess([Limit("campaign", 3, None, 10, 1, at)])
    assert own.summary().startswith("stopped: own abandon limit 3% today, 10.00% now")


def test_packs_that_require_a_lawful_abandon_message():
    assert Policy.load("us-tcpa").abandon_message_packs == ["us-tcpa"]
    assert Policy.load("cn-default,uk-ofcom").abandon_message_packs == ["uk-ofcom"]
    assert Policy.load("cn-default").abandon_message_packs == []
