"""Override grants (SPEC §2) and kill switches flipped under load, on the real Redis."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from dialguard.decision.models import DecisionRequest, Outcome
from dialguard.numbers import NumberError

UTC = timezone.utc
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Tuesday 10:00 Shanghai
NIGHT = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # 22:00 Shanghai
N = "13800138000"


def req(number=N, campaign="c1", agent="a1", **kw):
    return DecisionRequest(number=number, campaign=campaign, agent=agent, **kw)


async def engine(make_engine, *campaigns):
    e = await make_engine("cn-default", skip_caller_id_without_pool=True)
    for c in campaigns or ("c1",):
        await e.set_campaign(c)
    return e


async def entries(e, t):
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _, f in await e.redis.xrange(e.keys.audit) if f[b"t"] == t.encode()]


async def over_cap(e, number=N, campaign="c1"):
    for i in range(2):
        assert (await e.decide(req(number, campaign), NOW + timedelta(minutes=i))).allowed


async def test_override_lifts_a_cap_once_and_is_audited(make_engine):
    e = await engine(make_engine)
    await over_cap(e)
    assert (await e.decide(req(), NOW + timedelta(minutes=5))).reasons == ["attempt_cap"]
    gid = await e.override_grant(N, why="customer asked for a call back", approver="supervisor-li",
                                 expires=NOW + timedelta(hours=1), now=NOW)
    d = await e.decide(req(), NOW + timedelta(minutes=6))
    assert d.allowed and d.override and d.reasons == []
    assert d.overridden == ["attempt_cap"]
    assert "lifted by an override" in d.explanations["attempt_cap"]
    # used once: the next attempt is denied again, and it was counted
    d2 = await e.decide(req(), NOW + timedelta(minutes=7))
    assert d2.reasons == ["attempt_cap"] and not d2.override
    assert await e.override_get(N) is None
    decisions = await entries(e, "decision")
    assert [(x["allow"], x["ov"], x["ovr"]) for x in decisions[-2:]] == [("1", gid, "attempt_cap"), ("0", "", "")]
    grant = json.loads((await entries(e, "override"))[0]["j"])
    assert (grant["by"], grant["why"], grant["lifted"][:1]) == ("supervisor-li", "customer asked for a call back",
                                                                 ["agent_cap"])
    assert N not in json.dumps(grant)  # sealed, never plain


async def test_override_lifts_hours_but_never_dnc_opt_out_or_complaint(make_engine):
    e = await engine(make_engine)
    exp = NOW + timedelta(days=1)
    await e.override_grant(N, why="w", approver="a", expires=exp, now=NOW)
    d = await e.decide(req(), NIGHT)
    assert d.allowed and d.overridden == ["outside_hours"]
    for i, (kind, reason) in enumerate((("dnc_add", "dnc"), ("opt_out", "opted_out"), ("complaint", "complained"))):
        n = f"1390013900{i}"
        await getattr(e, kind)(n)
        await e.override_grant(n, why="w", approver="a", expires=exp, now=NOW)
        d = await e.decide(req(n), NIGHT)
        assert not d.allowed and d.reasons == [reason, "outside_hours"]
        assert await e.override_get(n) is not None, "a grant that did not apply stays unused"


async def test_override_does_not_lift_kill_switch_or_approval(make_engine):
    e = await engine(make_engine)
    exp = NOW + timedelta(days=1)
    await e.override_grant(N, why="w", approver="a", expires=exp, now=NOW)
    await e.pause("campaign", "c1")
    assert (await e.decide(req(), NOW)).reasons == ["paused"]
    assert (await e.decide(req(campaign="unknown"), NOW)).reasons == ["campaign_not_approved"]
    assert await e.override_get(N) is not None


async def test_override_scope_expiry_and_lifts(make_engine):
    e = await engine(make_engine, "c1", "c2")
    await over_cap(e)
    exp = NOW + timedelta(days=1)
    await e.override_grant(N, why="w", approver="a", expires=exp, campaign="c2", now=NOW)
    assert (await e.decide(req(campaign="c1"), NOW + timedelta(minutes=5))).reasons == ["attempt_cap"]
    assert (await e.decide(req(campaign="c2"), NOW + timedelta(minutes=5))).override
    # lifts named: only those
    await e.override_grant(N, why="w", approver="a", expires=exp, lifts=["outside_hours"], now=NOW)
    assert (await e.decide(req(), NOW + timedelta(minutes=6))).reasons == ["attempt_cap"]
    # expired (the grant's clock is the decision's clock)
    await e.override_grant(N, why="w", approver="a", expires=NOW + timedelta(minutes=10), now=NOW)
    assert not (await e.decide(req(), NOW + timedelta(minutes=10))).override
    assert (await e.decide(req(), NOW + timedelta(minutes=9))).override


async def test_override_picks_a_caller_id_over_its_concurrency(make_engine, rules_file):
    policy = rules_file("pack: p\ndefault_region: CN\ncaller_id: {require_approved: true, concurrency: 1, "
                        "pool: ['+862150000001']}\n")
    e = await make_engine(policy)
    await e.set_campaign("c1")
    assert (await e.decide(req("13800138001", call_id="k1"), NOW)).caller_id == "+862150000001"
    d = await e.decide(req("13800138002", call_id="k2"), NOW)
    assert d.reasons == ["caller_id_concurrency"]
    await e.override_grant("13800138002", why="w", approver="a", expires=NOW + timedelta(hours=1), now=NOW)
    d = await e.decide(req("13800138002", call_id="k3"), NOW)
    assert d.allowed and d.caller_id == "+862150000001" and d.overridden == ["caller_id_concurrency"]
    assert await e.live_calls("+862150000001", NOW) == 2
    assert await e.report_outcome("k3", Outcome(result="no_answer"), NOW)


async def test_override_grant_refuses_bad_input(make_engine):
    e = await engine(make_engine)
    exp = NOW + timedelta(days=1)
    with pytest.raises(ValueError, match="never dnc"):
        await e.override_grant(N, why="w", approver="a", expires=exp, lifts=["dnc"], now=NOW)
    with pytest.raises(ValueError, match="reason and an approver"):
        await e.override_grant(N, why=" ", approver="a", expires=exp, now=NOW)
    with pytest.raises(ValueError, match="in the past"):
        await e.override_grant(N, why="w", approver="a", expires=NOW - timedelta(seconds=1), now=NOW)
    with pytest.raises(NumberError):
        await e.override_grant("12", why="w", approver="a", expires=exp, now=NOW)
    assert await e.override_get(N) is None
    await e.override_grant(N, why="w", approver="a", expires=exp, now=NOW)
    assert await e.override_revoke(N, why="granted by mistake")
    assert await e.override_get(N) is None and not await e.override_revoke(N)
    admin = [json.loads(x["j"]) for x in await entries(e, "admin")]
    assert [(x["action"], x["why"]) for x in admin[-2:]] == [("override_revoke", "granted by mistake"),
                                                             ("override_revoke", "")]


@pytest.mark.parametrize("scope,name", [("all", None), ("campaign", "c1"), ("caller_id", "+862150000001")])
async def test_kill_switch_flipped_while_deciding(make_engine, rules_file, scope, name):
    """Two nodes decide 300 calls while the switch is flipped on, then off: the
    audit stream orders every decision against the flips, and each one is denied
    `paused` exactly when it came after the pause and before the resume."""
    policy = rules_file("pack: p\ndefault_region: CN\ncaller_id: {require_approved: true, "
                        "pool: ['+862150000001']}\n")
    a = await make_engine(policy)
    b = await make_engine(policy, prefix=a.keys.prefix)
    await a.set_campaign("c1")

    progress = {"a": 0, "b": 0}

    async def burst(engine, base, who):
        out = []
        for i in range(150):
            out.append(await engine.decide(req(f"138{base + i:08d}"), NOW))
            progress[who] = i + 1
        return out

    async def until(n):
        while min(progress.values()) < n:
            await asyncio.sleep(0.001)

    async def flip():  # both flips land while both nodes are deciding, whatever the machine's speed
        await until(30)
        await a.pause(scope, name, why="carrier complaint")
        await until(80)
        await a.resume(scope, name, why="resolved")

    ra, rb, _ = await asyncio.gather(burst(a, 10_000, "a"), burst(b, 20_000, "b"), flip())
    by_id = {d.decision_id: d for d in ra + rb}
    paused = False
    states = []
    for _, f in await a.redis.xrange(a.keys.audit):
        f = {k.decode(): v.decode() for k, v in f.items()}
        if f["t"] == "admin":
            paused = json.loads(f["j"])["action"] == "pause"
        elif f["t"] == "decision":
            d = by_id[f["id"]]
            assert d.reasons == (["paused"] if paused else []), (paused, d.reasons)
            states.append(paused)
    assert len(states) == 300 and True in states and False in states
    assert states[-1] is False or states.count(True) < 300
