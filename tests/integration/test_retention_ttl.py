"""The logs' expiry on the real Redis (Redis expires on the real clock, so no
replay sees it): every quiet period and minimum interval outlives its key's TTL,
under the node's rules and under a campaign's own packs, and a lifetime cap's log
never expires."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from dialguard.decision.models import DecisionRequest, Outcome

UTC = timezone.utc
AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday: noon in London, 20:00 in Shanghai
UK = "+442079460123"
H = 3600 * 1000
CID = "+442079460999"


async def engine(make_engine, rules, **campaigns):
    """An engine whose calls present an approved caller ID, with campaigns (name -> own packs)."""
    e = await make_engine(rules)
    await e.approve_caller_id(CID, pool=True)
    for name, own in campaigns.items():
        await e.set_campaign(name, rules=own)
    return e


def uk_req(campaign: str = "c1", i: int = 1) -> DecisionRequest:
    return DecisionRequest(number=UK, campaign=campaign, agent="a1", call_id=f"call-{i}", caller_id=CID)


async def _abandoned_ttl(e, campaign: str) -> int:
    d = await e.decide(uk_req(campaign), now=AT)
    assert d.allowed, d.reasons
    assert await e.report_outcome("call-1", Outcome(result="abandoned"), now=AT + timedelta(seconds=30))
    tag = e.keys.number_tag(UK)
    return await e.redis.pttl(e.keys.num(tag, "ab"))


async def test_the_abandoned_call_log_outlives_uk_ofcoms_72_hours(make_engine):
    e = await engine(make_engine, "uk-ofcom", c1=None)
    assert await _abandoned_ttl(e, "c1") > 72 * H  # was 49 h: the caps' 2 days + 1 h


async def test_a_campaigns_own_packs_keep_their_quiet_period_under_a_shorter_default(make_engine):
    e = await engine(make_engine, "us-tcpa", c1="uk-ofcom")  # the node's rules: 2 days + 1 h
    assert await _abandoned_ttl(e, "c1") > 72 * H  # the call's own rules' retention (its record's qt)


async def test_the_attempt_log_outlives_a_min_interval_of_3_days(make_engine, rules_file):
    e = await engine(make_engine, rules_file("pack: mi\ndefault_region: CN\nmin_interval: 3d\n"), c1=None)
    d = await e.decide(DecisionRequest(number="13800138000", campaign="c1", agent="a1", caller_id=CID), now=AT)
    assert d.allowed, d.reasons
    key = e.keys.attempts(e.keys.number_tag("+8613800138000"), "number")
    assert await e.redis.pttl(key) > 72 * H


async def test_a_campaigns_longer_retention_is_not_cut_by_the_default_rules(make_engine):
    """Another campaign on the node's shorter rules writes the same number's log after:
    its expiry stays the longest any rules known here need."""
    e = await engine(make_engine, "us-tcpa", c1="uk-ofcom", c2=None)
    assert (await e.decide(uk_req("c1", 1), now=AT)).allowed
    d = await e.decide(uk_req("c2", 2), now=AT + timedelta(hours=1))
    assert d.allowed or "min_interval" not in d.reasons
    key = e.keys.attempts(e.keys.number_tag(UK), "number")
    assert await e.redis.pttl(key) > 72 * H


async def test_a_lifetime_caps_log_never_expires(make_engine):
    e = await engine(make_engine, "cn-default", c1=None)
    at = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
    d = await e.decide(DecisionRequest(number="13800138000", campaign="c1", agent="a1", caller_id=CID), now=at)
    assert d.allowed, d.reasons
    tag = e.keys.number_tag("+8613800138000")
    assert await e.redis.pttl(e.keys.attempts(tag, "number_campaign", campaign="c1")) == -1
    assert 0 < await e.redis.pttl(e.keys.attempts(tag, "number")) <= 49 * H  # its rolling windows' still expires
