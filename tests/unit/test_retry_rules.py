"""Retry rules by outcome (dialguard/campaigns/retry.py)."""

from datetime import datetime, timedelta, timezone

import pytest

from dialguard.campaigns.retry import Rule, format_rules, next_try, parse_rules

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
RULES = parse_rules("busy=5m/3, no_answer=1h/4,abandoned=3d/1,amd=86400/2")


def nt(result, with_result=1, attempts=1, max_attempts=10, retry_after_s=600):
    return next_try(RULES, result, with_result=with_result, attempts=attempts, max_attempts=max_attempts,
                    retry_after_s=retry_after_s, now=NOW)


def test_parse():
    assert RULES == {"busy": Rule(300, 3), "no_answer": Rule(3600, 4), "abandoned": Rule(259200, 1),
                     "amd": Rule(86400, 2)}
    assert parse_rules("") == {} and parse_rules(None) == {}
    assert parse_rules(format_rules(RULES)) == RULES


@pytest.mark.parametrize("bad, why", [
    ("busy=5m", "OUTCOME=DELAY/MAX"), ("busy=5w/3", "OUTCOME=DELAY/MAX"), ("talked=1m/1", "outcome one of"),
    ("busy=1m/1,busy=2m/2", "twice"), ("busy=91d/1", "90 days"), ("busy=-1/2", "OUTCOME=DELAY/MAX"),
])
def test_parse_refuses(bad, why):
    with pytest.raises(ValueError, match=why):
        parse_rules(bad)


def test_each_outcome_its_own_delay():
    assert nt("busy") == NOW + timedelta(minutes=5)
    assert nt("no_answer") == NOW + timedelta(hours=1)
    assert nt("amd") == NOW + timedelta(days=1)
    assert nt("failed") == NOW + timedelta(seconds=600)  # no rule: the campaign's retry_after_s


def test_each_outcome_its_own_maximum():
    assert nt("busy", with_result=2) is not None
    assert nt("busy", with_result=3) is None  # third busy: done
    assert nt("abandoned", with_result=1) is None  # abandoned once: not called again by this campaign
    assert nt("no_answer", with_result=3) is not None
    assert nt("no_answer", with_result=4) is None
    assert nt("amd", with_result=2) is None


def test_campaign_limits_still_apply():
    assert nt("busy", attempts=10, max_attempts=10) is None
    assert nt("failed", attempts=3, max_attempts=3) is None
    assert nt("conversation") is None
