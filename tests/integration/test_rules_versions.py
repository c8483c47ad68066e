"""Versioned rules and shadow rules on the real Redis (issue 8).

A version applied with `rules apply` takes effect on the very next decision of
every node (no cache delay), and the audit stream's order proves it: every
decision recorded after the rules record was taken under the new version.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from dialguard.decision.models import DecisionRequest
from dialguard.rules import RulesError
from dialguard.rules_store import RulesStore, canonical, diff

UTC = timezone.utc
# Tuesday 2026-11-24 10:00 Shanghai: inside cn hours, a working day
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)



@pytest.fixture
def packs(open_pack):
    return open_pack


def req(number, campaign="c1", agent="a1", **kw):
    return DecisionRequest(number=number, campaign=campaign, agent=agent, **kw)


async def stream(engine):
    return [(sid.decode(), {k.decode(): v.decode() for k, v in f.items()})
            for sid, f in await engine.redis.xrange(engine.keys.audit)]


async def test_apply_takes_effect_on_every_node_at_once(make_engine, packs):
    a = await make_engine("cn-default", skip_caller_id_without_pool=True)
    b = await make_engine("cn-default", skip_caller_id_without_pool=True, prefix=a.keys.prefix)
    await a.set_campaign("c1")
    store = RulesStore(a.redis, a.keys)
    v1, new = await store.apply(packs("two", 2), why="start")
    assert (v1, new) == (1, True)
    # both nodes warm their caches under version 1
    assert (await a.decide(req("13800138001"), NOW)).allowed
    assert (await b.decide(req("13800138002"), NOW)).allowed
    v2, _ = await store.apply(packs("one", 1), why="stricter")
    assert v2 == 2
    # the next decision on either node, well within the cache TTL, uses version 2
    d = await a.decide(req("13800138001"), NOW + timedelta(minutes=1))
    assert d.reasons == ["attempt_cap"]
    assert "one/per-day" in d.explanations["attempt_cap"]
    d = await b.decide(req("13800138002"), NOW + timedelta(minutes=1))
    assert d.reasons == ["attempt_cap"]
    entries = [f for _, f in await stream(a) if f["t"] == "decision"]
    assert [e["rver"] for e in entries] == ["1", "1", "2", "2"]
    rules_records = [json.loads(f["j"]) for _, f in await stream(a) if f["t"] == "rules"]
    assert [(r["version"], r["mode"], r["why"]) for r in rules_records] == [(1, "active", "start"),
                                                                           (2, "active", "stricter")]
    assert rules_records[1]["files"][0]["text"].startswith("pack: one")


async def test_identical_apply_is_a_no_op_and_activate_rolls_back(make_engine, packs):
    e = await make_engine("cn-default", skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    store = RulesStore(e.redis, e.keys)
    await store.apply(packs("two", 2))
    await store.apply(packs("one", 1))
    assert await store.apply(packs("one", 1)) == (2, False)
    assert [v.version for v in await store.history()] == [1, 2]
    assert await store.activate(1, why="roll back") == 1
    assert await store.in_effect() == (1, None)
    assert (await e.decide(req("13800138003"), NOW)).allowed
    assert (await e.decide(req("13800138003"), NOW + timedelta(minutes=1))).allowed  # cap 2 again
    with pytest.raises(Exception, match="no rules version 9"):
        await store.activate(9)


async def test_invalid_rules_never_become_a_version(make_engine, tmp_path):
    e = await make_engine("cn-default")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pack: bad\ncaps:\n  - {id: x, max: -1, window: {rolling: 1d}, scope: number}\n")
    store = RulesStore(e.redis, e.keys)
    with pytest.raises(RulesError, match="bad.yaml"):
        await store.apply(str(bad))
    with pytest.raises(RulesError, match="no such rule pack"):
        await store.apply("no-such-pack")
    assert await store.history() == []
    assert await store.in_effect() == (None, None)


async def test_a_stored_version_this_node_cannot_load_denies(make_engine, packs):
    e = await make_engine("cn-default", skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    store = RulesStore(e.redis, e.keys)
    await store.apply(packs("two", 2))
    await e.redis.hset(e.keys.rules, mapping={"v:7": '{"version":7,"hash":"x","name":"x","spec":"x",'
                                                     '"files":[{"ref":"x","text":"caps: [1"}]}', "active": "7"})
    d = await e.decide(req("13800138004"), NOW)
    assert d.reasons == ["guard_unavailable"]
    assert "rules version 7" in d.explanations["guard_unavailable"]


async def test_shadow_is_evaluated_audited_and_never_enforced(make_engine, packs):
    e = await make_engine("cn-default", skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    store = RulesStore(e.redis, e.keys)
    await store.apply(packs("two", 2))
    sv, _ = await store.apply(packs("one", 1), shadow=True, why="trial")
    assert await store.in_effect() == (1, sv)
    n = "13800138005"
    assert (await e.decide(req(n), NOW)).allowed
    second = await e.decide(req(n), NOW + timedelta(minutes=1))
    assert second.allowed  # the shadow's cap of 1 is not enforced
    third = await e.decide(req(n), NOW + timedelta(minutes=2))
    assert third.reasons == ["attempt_cap"]  # the active cap of 2, counted once per attempt
    ds = [f for _, f in await stream(e) if f["t"] == "decision"]
    assert [(d["allow"], d["sv"], d["sa"], d["sr"]) for d in ds] == [
        ("1", str(sv), "1", ""), ("1", str(sv), "0", "attempt_cap"), ("0", str(sv), "0", "attempt_cap")]
    assert await store.shadow_off(why="done")
    await e.decide(req("13800138006"), NOW)
    last = [f for _, f in await stream(e) if f["t"] == "decision"][-1]
    assert (last["sv"], last["sa"], last["sr"]) == ("", "", "")


async def test_shadow_time_rules_differ_from_the_active_ones(make_engine, packs, tmp_path):
    e = await make_engine("cn-default", skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    store = RulesStore(e.redis, e.keys)
    await store.apply(packs("two", 2))
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(open(packs("narrow", 5)).read().replace('["00:00-24:00"]', '["12:00-13:00"]'))
    await store.apply(str(narrow), shadow=True)
    assert (await e.decide(req("13800138007"), NOW)).allowed
    last = [f for _, f in await stream(e) if f["t"] == "decision"][-1]
    assert (last["allow"], last["sa"], last["sr"]) == ("1", "0", "outside_hours")


async def test_switch_under_load_is_atomic(make_engine, packs):
    """200 decisions from two nodes while a version is applied: each decision's
    version follows its position in the audit stream exactly."""
    a = await make_engine("cn-default", skip_caller_id_without_pool=True)
    b = await make_engine("cn-default", skip_caller_id_without_pool=True, prefix=a.keys.prefix)
    await a.set_campaign("c1")
    store = RulesStore(a.redis, a.keys)
    await store.apply(packs("two", 2))

    started = asyncio.Event()

    async def burst(engine, base):
        for i in range(100):
            if i == 30:
                started.set()  # the switch lands while both nodes are deciding
            await engine.decide(req(f"138{base + i:08d}"), NOW)

    async def switch():
        await started.wait()
        await store.apply(packs("one", 1))

    await asyncio.gather(burst(a, 10_000), burst(b, 20_000), switch())
    seen_switch = False
    versions = []
    for _, f in await stream(a):
        if f["t"] == "rules" and json.loads(f["j"])["version"] == 2:
            seen_switch = True
        elif f["t"] == "decision":
            versions.append(f["rver"])
            assert f["rver"] == ("2" if seen_switch else "1")
    assert seen_switch and len(versions) == 200
    assert "1" in versions and "2" in versions, "the switch landed outside the burst; widen it"


async def test_campaign_with_its_own_packs_keeps_them(make_engine, packs):
    e = await make_engine("cn-default", skip_caller_id_without_pool=True)
    await e.set_campaign("own", rules=packs("one", 1))
    store = RulesStore(e.redis, e.keys)
    await store.apply(packs("two", 2))
    n = "13800138008"
    assert (await e.decide(req(n, campaign="own"), NOW)).allowed
    assert (await e.decide(req(n, campaign="own"), NOW + timedelta(minutes=1))).reasons == ["attempt_cap"]


def test_diff_names_what_changed(packs):
    from dialguard.rules_store import bundle

    old, _ = bundle(packs("x", 2))
    new, _ = bundle(packs("x", 3))
    d = diff(old, new, "version 1", "x.yaml")
    assert "-  max: 2" in d and "+  max: 3" in d
    assert diff(old, old, "a", "b") == ""
    assert "max: 2" in canonical(old)
