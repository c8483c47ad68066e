"""The compiled plan in MessagePack (issue 21: Redis decodes it in a fraction of
cjson's instructions), on the real Redis: it decides exactly as build_plan's
JSON plan does (same verdicts, reasons, caller IDs picked, next eligible
times); a plan that is not one well-formed MessagePack map (cut short, bytes
left over, another type) is refused by decide.lua with nothing written, and the
engine then denies (guard_unavailable); a request the compiled form has no room
for (a time before 2001) is decided through build_plan's JSON instead."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgpack
import pytest
from redis.exceptions import ResponseError

from dialguard.decision import scripts
from dialguard.decision.models import DecisionRequest
from dialguard.decision.plan import PlanTemplate

UTC = timezone.utc
AT = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, a Monday
POOL = ["+862150000001", "+862150000002", "+862150000003"]
RULES = ("pack: enc\ndefault_region: CN\nhours: {zone: callee, weekly: {all: ['00:00-24:00']}}\n"
         "caps:\n  - {id: twice, max: 2, window: {rolling: 24h}, scope: number}\n"
         "  - {id: camp, max: 3, window: lifetime, scope: number_campaign}\n"
         "min_interval: 10m\n"
         "caller_id: {per_minute: 2, concurrency: 2, pool: ['" + "', '".join(POOL) + "']}\n")


def requests() -> list[tuple[DecisionRequest, datetime]]:
    """Allowed, capped, too soon, a caller ID given, busy caller IDs: one sequence."""
    out = []
    for i in range(14):
        number = f"1380013{i % 5:04d}"  # five numbers, each asked about several times
        out.append((DecisionRequest(number=number, campaign="c1", agent=f"a{i % 2}", call_id=f"call-{i}"),
                    AT + timedelta(seconds=7 * i)))
    out.append((DecisionRequest(number="13800139999", campaign="c1", agent="a1", caller_id=POOL[1],
                                call_id="given"), AT + timedelta(seconds=120)))
    out.append((DecisionRequest(number="13800130000", campaign="c1", agent="a1"), AT + timedelta(hours=2)))
    return out


async def run(e) -> list[tuple]:
    await e.set_campaign("c1")
    got = []
    for r, at in requests():
        d = await e.decide(r, now=at)
        got.append((d.decision, d.reasons, d.caller_id, d.next_eligible_at, d.override))
    return got


async def test_compiled_msgpack_plans_decide_as_build_plan_json(make_engine, rules_file, monkeypatch):
    compiled = await make_engine(rules_file(RULES))
    built = await make_engine(rules_file(RULES))
    built.compiled_plans = False
    seen: list[bytes] = []
    real_fill = PlanTemplate.fill

    def spy(self, **kw):
        keys, argv = real_fill(self, **kw)
        seen.append(argv[0])
        return keys, argv

    with monkeypatch.context() as m:
        m.setattr(PlanTemplate, "fill", spy)
        a = await run(compiled)
    b = await run(built)
    assert a == b
    assert {v[0] for v in a} == {"allow", "deny"} and any(v[1] for v in a)
    assert len(seen) == len(a) and all(isinstance(p, bytes) and p[:1] != b"{" for p in seen)
    assert isinstance(msgpack.unpackb(seen[0]), dict)


async def test_a_malformed_plan_is_refused_and_writes_nothing(make_engine, rules_file, monkeypatch):
    e = await make_engine(rules_file(RULES))
    await e.set_campaign("c1")
    captured = {}
    real_fill = PlanTemplate.fill

    def spy(self, **kw):
        keys, argv = real_fill(self, **kw)
        captured["keys"], captured["argv"] = keys, argv
        return keys, argv

    with monkeypatch.context() as m:
        m.setattr(PlanTemplate, "fill", spy)
        ok = await e.decide(DecisionRequest(number="13800138000", campaign="c1", agent="a1", call_id="x"), now=AT)
    assert ok.decision == "allow"
    keys, (plan, record) = captured["keys"], captured["argv"]
    # a fresh request's keys: another call id, nothing of it in Redis yet
    keys = [k.replace(":call:x", ":call:y") for k in keys]
    before = await e.redis.xlen(e.keys.audit)
    bad = [plan[:-1], plan[: len(plan) // 2], plan + b"\xc0", msgpack.packb([1, 2]), msgpack.packb("plan"),
           b"", b"\xc1", b"not a plan", msgpack.packb({}), b"{}", b"[1]",
           msgpack.packb({**msgpack.unpackb(plan), "now": 1795399200000})]  # a map, but not a plan
    for b in bad:
        with pytest.raises(ResponseError):
            await scripts.DECIDE(e.redis, keys, [b, record])
    assert await e.redis.xlen(e.keys.audit) == before
    assert not await e.redis.exists(e.keys.call("y"))


async def test_the_engine_denies_when_redis_refuses_the_plan(make_engine, rules_file, monkeypatch):
    e = await make_engine(rules_file(RULES))
    await e.set_campaign("c1")
    real_fill = PlanTemplate.fill

    def cut(self, **kw):
        keys, argv = real_fill(self, **kw)
        return keys, [argv[0][:-3], *argv[1:]]

    monkeypatch.setattr(PlanTemplate, "fill", cut)
    d = await e.decide(DecisionRequest(number="13800138000", campaign="c1", agent="a1", call_id="z"), now=AT)
    assert d.decision == "deny" and d.reasons == ["guard_unavailable"]
    assert not await e.redis.exists(e.keys.call("z"))


async def test_a_time_before_2001_is_decided_through_the_json_plan(make_engine, rules_file):
    e = await make_engine(rules_file(RULES))
    await e.set_campaign("c1")
    old = datetime(2000, 6, 5, 2, 0, tzinfo=UTC)  # 12-digit ms: the compiled form has 13
    r = DecisionRequest(number="13800138000", campaign="c1", agent="a1", call_id="old")
    first = await e.decide(r, now=old)
    again = await e.decide(r.model_copy(update={"call_id": "old2"}), now=old + timedelta(minutes=1))
    later = await e.decide(r.model_copy(update={"call_id": "old3"}), now=old + timedelta(minutes=11))
    assert first.decision == "allow" and first.caller_id in POOL
    assert again.reasons == ["min_interval"]
    assert later.decision == "allow"
    assert (await e.decide(r.model_copy(update={"call_id": "old4"}), now=old + timedelta(minutes=30))).reasons \
        == ["attempt_cap"]
