"""Concurrency: 500 simultaneous decisions from 2 processes never over-admit."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy, load_pack_file
from dialguard.simulate import _drop_namespace

NOW = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)  # Mon 10:00 Shanghai

RACE_RULES = """pack: race
default_region: CN
caps:
  - {id: two, max: 2, window: {rolling: 24h}}
agent: {per_day: 7}
caller_id: {require_approved: false, per_hour: 5}
"""
# One person behind two numbers (issue #19): the cap is the party's.
PARTY_RULES = """pack: race-party
default_region: CN
caps:
  - {id: two-per-person, scope: party, max: 2, window: {rolling: 24h}}
caller_id: {require_approved: false}
"""


def _worker(rules_path, prefix, kind, n, start_evt, out_q):
    async def run():
        policy = Policy([load_pack_file(rules_path)])
        # The race is about atomicity, not latency: a generous deadline for the burst.
        e = await Engine.create(Settings(redis_timeout_ms=5000), policy, prefix=prefix,
                                skip_caller_id_without_pool=True)
        reqs = []
        for i in range(n):
            tag = uuid.uuid4().hex[:8]
            if kind == "number":
                r = DecisionRequest(number="13800138000", campaign="c1", agent=f"agent-{tag}")
            elif kind == "party":  # two numbers of one person, alternately
                r = DecisionRequest(number=("13800138000", "13900139000")[i % 2], campaign="c1",
                                    agent=f"agent-{tag}", party="debtor-1")
            elif kind == "agent":
                r = DecisionRequest(number=f"1380013{i % 10000:04d}", campaign="c1", agent="the-agent",
                                    subject=tag)
            else:
                r = DecisionRequest(number=f"1390013{i % 10000:04d}", campaign="c1", agent=f"agent-{tag}",
                                    caller_id="+862150000001")
            reqs.append(r)
        start_evt.wait()
        res = await asyncio.gather(*(e.decide(r, now=NOW) for r in reqs))
        await e.close()
        return [(d.decision, tuple(d.reasons)) for d in res]

    out_q.put(asyncio.run(run()))


async def _approve_caller_id(rules_path, prefix: str, caller_id: str) -> None:
    e = await Engine.create(Settings(redis_timeout_ms=5000), Policy([load_pack_file(rules_path)]), prefix=prefix)
    try:
        await e.approve_caller_id(caller_id)
    finally:
        await e.close()


@pytest.mark.parametrize("kind,cap,reason", [
    ("number", 2, "attempt_cap"), ("agent", 7, "agent_cap"), ("caller_id", 5, "caller_id_rate"),
    ("party", 2, "attempt_cap")])
def test_500_concurrent_from_two_processes(tmp_path, settings, kind, cap, reason):
    rules = tmp_path / "race.yaml"
    rules.write_text(PARTY_RULES if kind == "party" else RACE_RULES)
    prefix = f"dgrace:{uuid.uuid4().hex[:8]}"
    import redis as syncredis
    r = syncredis.Redis.from_url(settings.redis_url)
    r.hset(f"{prefix}:{{g}}:camp:{__import__('dialguard.numbers').numbers.short_hash('c1')}", "approved", "1")
    if kind == "caller_id":  # a presented caller ID is checked under every pack: approved first
        asyncio.run(_approve_caller_id(rules, prefix, "+862150000001"))
    ctx = mp.get_context("spawn")
    start, q = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(rules), prefix, kind, 250, start, q)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    results = [q.get(timeout=120) for _ in procs] 
    for p in procs:
        p.join(30)
    flat = [x for part in results for x in part]
    assert len(flat) == 500
    allows = [x for x in flat if x[0] == "allow"]
    assert len(allows) == cap, f"{kind}: {len(allows)} allows for a cap of {cap}"
    assert all(x[1] == (reason,) for x in flat if x[0] == "deny")
    asyncio.run(_cleanup(settings, prefix))


async def _cleanup(settings, prefix):
    import redis.asyncio as aioredis
    c = aioredis.from_url(settings.redis_url)
    await _drop_namespace(c, prefix)
    await c.aclose()
