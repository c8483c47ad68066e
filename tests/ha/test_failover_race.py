"""No over-admission across a failover (DIALGUARD_REDIS_WAIT_REPLICAS=1).

500 decisions at a time race on numbers capped at 2 attempts; the primary is
SIGKILLed in the middle and Sentinel promotes a replica. Every ALLOW the
guard gave waited for a replica's acknowledgement, so the new primary has
every reservation: afterwards every number is tried again, and no number ever
has more than 2 ALLOWs, neither as the callers saw them nor in the audit
stream, and every ALLOW a caller saw is in the audit (none lost).

On loopback replication lags by microseconds, so this race also passes with
WAIT off; test_replica_wait.py shows that an ALLOW really waits (and is denied
when too few replicas acknowledge).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone

import redis as syncredis

from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy, load_pack_file
from dialguard.simulate import _drop_namespace
from tests.ha import ha

NOW = datetime(2026, 11, 23, 2, tzinfo=timezone.utc)  # Mon 10:00 Shanghai
RULES = ha.pack_capped_at_two("ha-race", approved_caller_ids=False)
RACE = 500        # decisions in flight at once
PER_NUMBER = 5    # of which this many on each number: 100 numbers a round, cap 2 each
KILL_ROUND = 3


def _number(round_no: int, i: int) -> str:
    return f"139{round_no:04d}{i:04d}"


async def _race(engine: Engine, round_no: int, seen: dict, log: list, on_decided=None) -> None:
    async def one(req: DecisionRequest) -> None:
        d = await engine.decide(req, now=NOW)
        seen[req.number].append(d)
        log.append((time.monotonic(), d.decision, tuple(d.reasons), round_no))
        if on_decided is not None:
            on_decided()

    await asyncio.gather(*(one(DecisionRequest(number=_number(round_no, i % (RACE // PER_NUMBER)),
                                               campaign="c1", agent=f"a{i}")) for i in range(RACE)))


async def test_failover_mid_race_never_over_admits(ha_settings, tmp_path):
    rules = tmp_path / "ha-race.yaml"
    rules.write_text(RULES)
    policy = Policy([load_pack_file(rules)])
    # Latency is not the point here: a generous deadline for 500 at once; an ALLOW
    # waits up to 200 ms for the replica.
    settings = replace(ha_settings, redis_timeout_ms=3000, redis_wait_replicas=1, redis_wait_ms=200)
    prefix = f"dgha:{uuid.uuid4().hex[:8]}"
    engine = await Engine.create(settings, policy, prefix=prefix, skip_caller_id_without_pool=True)
    await engine.set_campaign("c1", approved=True)
    seen: dict[str, list] = collections.defaultdict(list)
    log: list = []
    killed_port = killed_at = None
    try:
        round_no = 0
        start = time.monotonic()
        # Races back to back; the primary dies in the middle of the fourth one.
        while time.monotonic() - start < 60:
            on_decided = None
            if round_no == KILL_ROUND:
                # The primary dies once 100 of the race's answers are out.
                decided = 0

                def on_decided():
                    nonlocal decided, killed_port, killed_at
                    decided += 1
                    if decided == 100:
                        killed_port, killed_at = ha.kill_primary(settings)
            await _race(engine, round_no, seen, log, on_decided)
            round_no += 1
            if round_no > KILL_ROUND + 1 and any(v == "allow" for _, v, _, _ in log[-RACE:]):
                break  # the new primary allows again
            if killed_at is not None:
                await asyncio.sleep(0.05)
        assert killed_at is not None and round_no > KILL_ROUND + 1, "the guard never allowed again after the failover"
        new_port, _ = ha.wait_new_primary(settings, killed_port)
        # Every number once more, 3 times each: a reservation the new primary lost
        # would let one of these through.
        for r in range(round_no):
            reqs = [DecisionRequest(number=_number(r, i), campaign="c1", agent=f"z{k}")
                    for i in range(RACE // PER_NUMBER) for k in range(3)]
            for req, d in zip(reqs, await asyncio.gather(*(engine.decide(q, now=NOW) for q in reqs))):
                seen[req.number].append(d)
        host, port = ha.primary(settings)
        stream = ha.node(host, port, decode_responses=True).xrange(engine.keys.audit)
    finally:
        try:
            await _drop_namespace(engine.redis, prefix)
        finally:
            await engine.close()

    allowed = {n: [d for d in ds if d.decision == "allow"] for n, ds in seen.items()}
    over = {n: len(a) for n, a in allowed.items() if len(a) > 2}
    assert not over, f"over-admitted after the failover: {over}"
    unavailable = [d for ds in seen.values() for d in ds if d.reasons == ["guard_unavailable"]]
    assert unavailable, "the failover was never seen (no guard_unavailable): the test tested nothing"
    for r in range(KILL_ROUND):  # the races before the kill: exactly the cap on every number
        assert all(len(allowed[_number(r, i)]) == 2 for i in range(RACE // PER_NUMBER))
    # The audit on the new primary: every ALLOW a caller saw, and never more than 2 per number.
    audit_allows = collections.Counter()
    ids = set()
    for _, f in stream:
        if f.get("t") == "decision" and f.get("allow") == "1":
            ids.add(f["id"])
            audit_allows[json.loads(f["j"])["n"]] += 1
    assert max(audit_allows.values()) <= 2
    lost = [d.decision_id for a in allowed.values() for d in a if d.decision_id not in ids]
    assert not lost, f"{len(lost)} ALLOWs given to callers are not in the new primary's audit stream"
    first_deny = min(t for t, v, rs, _ in log if rs == ("guard_unavailable",))
    first_allow = min(t for t, v, _, n in log if n > KILL_ROUND and v == "allow")
    mid = collections.Counter((v, rs) for _, v, rs, n in log if n == KILL_ROUND)
    print(f"\nfailover race: primary :{killed_port} killed, new primary :{new_port}; "
          f"{len(unavailable)} guard_unavailable; first refusal {1000 * (first_deny - killed_at):.0f} ms, "
          f"first ALLOW on the new primary {first_allow - killed_at:.2f} s after the kill; "
          f"refused for {first_allow - first_deny:.2f} s; the race the kill hit: {dict(mid)}; "
          f"{sum(len(a) for a in allowed.values())} ALLOWs on {len(allowed)} numbers, none over 2")
