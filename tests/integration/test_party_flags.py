"""Opt-out, complaint and consent of a person (party) on the real Redis (SPEC §2):
read by decide.lua in the decision's one script call, audited with the
party's keyed hash, and a party's complaint counts against the caller ID
that last called that person, as a number's does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from dialguard.callerid_health import read_health
from dialguard.decision.models import DecisionRequest, Outcome
from dialguard.decision.plan import ms

UTC = timezone.utc
NOON = datetime(2026, 3, 2, 17, tzinfo=UTC)  # Monday 12:00 Eastern
HOME, MOBILE, OTHER = "+12025550123", "+12025550124", "+12025550125"
CONSENT_PACK = ("pack: consent-test\nversion: '1'\ndefault_region: US\nconsent_required: true\n"
                "hours: {zone: callee, weekly: {all: ['08:00-21:00']}}\n")


def req(number: str, party: str | None = None, **kw) -> DecisionRequest:
    return DecisionRequest(number=number, campaign="c1", agent="a1", party=party, **kw)


async def consent_engine(make_engine, rules_file):
    e = await make_engine(rules_file(CONSENT_PACK), skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    return e


async def test_party_consent_allows_every_number_of_that_party(make_engine, rules_file):
    e = await consent_engine(make_engine, rules_file)
    assert (await e.decide(req(HOME, "acct-1"), now=NOON)).reasons == ["no_consent"]
    assert await e.consent(None, party="acct-1", now=NOON)
    assert not await e.consent(None, party="acct-1", now=NOON)  # already recorded
    a = await e.decide(req(HOME, "acct-1"), now=NOON)
    b = await e.decide(req(MOBILE, "acct-1"), now=NOON)
    assert a.allowed and b.allowed
    # another person's number, the same number for another person, or without the party: no consent
    for d in (await e.decide(req(OTHER, "acct-2"), now=NOON), await e.decide(req(MOBILE, "acct-2"), now=NOON),
              await e.decide(req(MOBILE), now=NOON)):
        assert d.reasons == ["no_consent"] and d.next_eligible_at is None
    # revoked for the person: every number again needs its own consent
    assert await e.consent_revoke(None, party="acct-1", now=NOON)
    assert (await e.decide(req(HOME, "acct-1"), now=NOON)).reasons == ["no_consent"]
    await e.consent(HOME, now=NOON)  # the number's own consent still holds for it
    assert (await e.decide(req(HOME, "acct-1"), now=NOON)).allowed
    assert (await e.decide(req(MOBILE, "acct-1"), now=NOON)).reasons == ["no_consent"]
    # nothing in clear in Redis
    async for key in e.redis.scan_iter(match=f"{e.keys.prefix}:*"):
        assert b"acct-" not in key and b"2025550" not in key
    flags = await e.redis.hgetall(e.keys.party_flags(e.keys.party_tag("acct-1")))
    assert set(flags) == set()  # revoked


async def test_party_opt_out_and_complaint_beat_party_consent(make_engine, rules_file):
    e = await consent_engine(make_engine, rules_file)
    await e.consent(None, party="acct-1", now=NOON)
    await e.consent(None, party="acct-2", now=NOON)
    await e.consent(OTHER, now=NOON)
    assert await e.opt_out(None, party="acct-1", now=NOON)
    assert await e.complaint(None, party="acct-2", now=NOON)
    a = await e.decide(req(HOME, "acct-1"), now=NOON)
    b = await e.decide(req(MOBILE, "acct-2"), now=NOON)
    assert a.reasons == ["opted_out"] and b.reasons == ["complained"]
    assert a.next_eligible_at is None and b.next_eligible_at is None
    # the explanation says it is the person's, not the number's
    assert "party" in a.explanations["opted_out"] and "party" in b.explanations["complained"]
    # a number's own opt-out, with a party that consented: the number's explanation
    await e.opt_out(OTHER, now=NOON)
    c = await e.decide(req(OTHER, "acct-3"), now=NOON)
    assert c.reasons == ["opted_out"] and "party" not in c.explanations["opted_out"]
    # an opted-out party is not lifted by an override either (SPEC §2)
    await e.override_grant(HOME, why="test", approver="a", expires=NOON + timedelta(hours=1), now=NOON)
    assert (await e.decide(req(HOME, "acct-1"), now=NOON)).reasons == ["opted_out"]


async def test_party_flags_are_read_in_the_decisions_one_script_call(make_engine, rules_file):
    """No read before the script: the decision's only command is decide.lua's EVALSHA."""
    e = await consent_engine(make_engine, rules_file)
    await e.consent(None, party="acct-1", now=NOON)
    assert (await e.decide(req(HOME, "acct-1"), now=NOON)).allowed  # context now cached (2 s)
    assert e.fast is not None
    calls = []
    evalsha = e.fast.evalsha

    async def counted(*a, **kw):
        calls.append(a[0])
        return await evalsha(*a, **kw)

    class NoOtherCommand:
        def __getattr__(self, name):
            raise AssertionError(f"a second command in the decision: {name}")

    e.fast.evalsha, real, e.redis = counted, e.redis, NoOtherCommand()
    try:
        d1 = await e.decide(req(MOBILE, "acct-1"), now=NOON)
        await real.hset(e.keys.party_flags(e.keys.party_tag("acct-1")), "optout", "1")
        d2 = await e.decide(req(MOBILE, "acct-1"), now=NOON)
    finally:
        e.redis = real
        e.fast.evalsha = evalsha
    assert d1.allowed and d2.reasons == ["opted_out"] and len(calls) == 2


async def test_party_consent_event_is_audited_with_the_party_hash(make_engine, rules_file):
    e = await consent_engine(make_engine, rules_file)
    await e.consent(None, party="acct-1", now=NOON)
    await e.consent_revoke(None, party="acct-1", now=NOON + timedelta(minutes=1))
    await e.consent(HOME, party="acct-1", now=NOON + timedelta(minutes=2))  # both at once
    events = [json.loads(f[b"j"]) for _id, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == b"event"]
    ptag = e.keys.party_tag("acct-1")
    assert [(x["kind"], x["n"], x.get("party")) for x in events] == [
        ("consent", ptag, True), ("consent_revoke", ptag, True), ("consent", ptag, True),
        ("consent", e.keys.number_tag(HOME), None)]
    assert all("acct-1" not in json.dumps(x) for x in events)


async def test_cli_consent_by_party(make_engine, rules_file):
    e = await consent_engine(make_engine, rules_file)
    env = {**os.environ, "DIALGUARD_KEY_PREFIX": e.keys.prefix}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "dialguard.cli", *args], capture_output=True, text=True,
                              timeout=60, env=env)

    p = cli("consent")
    assert p.returncode != 0 and "--party" in (p.stdout + p.stderr)
    p = cli("consent", "--party", "acct-7")
    assert p.returncode == 0, p.stderr
    assert "the party" in p.stdout
    ptag = e.keys.party_tag("acct-7")
    assert await e.redis.hexists(e.keys.party_flags(ptag), "consent")
    assert cli("consent", "--party", "acct-7", "--revoke").returncode == 0
    assert not await e.redis.hexists(e.keys.party_flags(ptag), "consent")


# -- a party's complaint feeds the caller-ID health of whoever last called that person --------------
POOL = ["+12025550100", "+12025550101"]
HEALTH_PACK = (
    "pack: health-test\nversion: '1'\ndefault_region: US\n"
    "hours: {zone: callee, weekly: {all: ['00:00-24:00']}}\n"
    "caller_id:\n  require_approved: true\n"
    "  health:\n    window_calls: 20\n    window_hours: 24\n    short_answer_s: 5\n    rules:\n"
    "      - {id: complaints, metric: complaints_per_1000, threshold: 300, min_calls: 3, cool_down: 24h}\n")


@pytest.mark.parametrize("by", ["number", "party"])
async def test_a_party_complaint_cools_down_the_caller_id_like_a_number_complaint(make_engine, rules_file, by):
    e = await make_engine(rules_file(HEALTH_PACK))
    await e.set_campaign("c1")
    for c in POOL:
        await e.approve_caller_id(c)
    x, y = POOL
    tx = e.keys.cid_tag(x)
    numbers = [f"+1202555{i:04d}" for i in range(200, 205)]
    for i, n in enumerate(numbers[:3]):  # three answered calls from X, the first with a party
        d = await e.decide(req(n, "acct-9" if i == 0 else None, caller_id=x, call_id=f"c{i}"), now=NOON)
        assert d.allowed
        assert await e.report_outcome(f"c{i}", Outcome(result="conversation", talk_s=60), now=NOON)
    # Y calls someone else: the person's last caller stays X
    assert (await e.decide(req(numbers[4], caller_id=y, call_id="c4"), now=NOON)).allowed
    lc = await e.redis.get(e.keys.party_last_caller(e.keys.party_tag("acct-9")))
    assert lc.split(b"|")[0].decode() == tx
    t1 = NOON + timedelta(minutes=5)
    if by == "party":
        assert await e.complaint(None, party="acct-9", now=t1)
    else:
        assert await e.complaint(numbers[0], now=t1)
    # 1 complaint over 3 calls = 333 per 1,000 >= 300: X cools down for 24 h from the complaint
    cool = await e.redis.zmscore(e.keys.cid_cooldown, [tx, e.keys.cid_tag(y)])
    assert cool[0] is not None and int(cool[0]) == ms(t1 + timedelta(hours=24)) and cool[1] is None
    (row,) = await read_health(e, [x], ms(t1))
    assert row["figures"]["complaints"] == 1
    assert (await e.decide(req(numbers[3], caller_id=x), now=t1)).reasons == ["caller_id_not_approved"]


async def test_a_party_without_calls_complains_without_a_cool_down(make_engine, rules_file):
    e = await make_engine(rules_file(HEALTH_PACK))
    assert await e.complaint(None, party="never-called", now=NOON)
    assert await e.redis.zcard(e.keys.cid_cooldown) == 0
