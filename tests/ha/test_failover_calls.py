"""Calls through Asterisk while the Redis primary dies (the HA stack: two
replicas, three Sentinels, DIALGUARD_REDIS_WAIT_REPLICAS=1).

SIPp places calls at 30 calls/s through the guarded dialplan; 4 s in, the
primary is SIGKILLed. Measured and printed: how long calls were refused
(guard_unavailable) and when the first ALLOW came from the new primary, with no
guard process restarted. Checked: no call reached the carrier without an ALLOW
in the CDR; refusals are guard_unavailable only (SIP 503); every decision in
the CDR is in PostgreSQL exactly once with the same verdict, including those
made on the new primary (the shipper's consumer group goes on there).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import psycopg
from redis.exceptions import RedisError

from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.rules import Policy
from guard import WORKDAY_10H, Cdr, caller_ids, numbers, place_calls
from sipp import write_injection
from tests.ha import ha

RATE = 30
CALLS = 420          # 14 s at 30 calls/s
KILL_AFTER_S = 4.0
PACK = ha.pack_capped_at_two("ha-calls")


async def _cleanup(engine: Engine, campaign: str) -> None:
    """Clock and campaign back, on whichever node is primary now (the first try may
    meet a pooled connection to the dead one)."""
    try:
        for _ in range(50):
            try:
                await engine.set_test_clock(None)
                await engine.redis.delete(engine.keys.campaign(campaign), engine.keys.pool(campaign))
                return
            except RedisError:
                await asyncio.sleep(0.2)
    finally:
        await engine.close()


async def test_calls_across_a_primary_failure(ha_settings, stack, tmp_path: Path) -> None:
    assert ha_settings.redis_wait_replicas >= 1, "the HA stack runs the guard with DIALGUARD_REDIS_WAIT_REPLICAS=1"
    engine = await Engine.create(Settings(), Policy.load("cn-default"))
    pack = tmp_path / "ha-calls.yaml"
    pack.write_text(PACK)
    campaign = f"e2e-ha-{uuid.uuid4().hex[:8]}"
    await engine.set_campaign(campaign, True, rules=str(pack))
    for cid in caller_ids(4):
        await engine.approve_caller_id(cid, campaign=campaign)
    await engine.set_test_clock(WORKDAY_10H)
    nums = numbers(CALLS)
    injection = tmp_path / "calls.csv"
    write_injection(injection, [(n, campaign, f"e2e-ha-agent-{i % 20}") for i, n in enumerate(nums)])
    cdr = Cdr.mark(stack.dir)
    killed: dict = {}

    def kill_later():
        time.sleep(KILL_AFTER_S)
        port, _ = ha.kill_primary(ha_settings)
        killed.update(port=port, at=time.time())

    killer = threading.Thread(target=kill_later)
    try:
        killer.start()
        run = place_calls(stack, injection, tmp_path, rate=RATE, limit=200, hold_ms=200, timeout_s=120)
        killer.join()
        new_port, _ = ha.wait_new_primary(ha_settings, killed["port"])
        rows = cdr.for_numbers(set(nums), expect=CALLS)
    finally:
        killer.join()
        await _cleanup(engine, campaign)

    # Every call has its CDR line with a decision; nothing reached the carrier without an ALLOW.
    assert sorted(rows) == sorted(nums) and all(len(r) == 1 for r in rows.values()), \
        f"{sum(map(len, rows.values()))} CDR lines for {CALLS} calls"
    row = {n: r[0] for n, r in rows.items()}
    assert all(r["dialguard_result"] in ("ALLOW", "DENY") and r["dialguard_decision_id"] for r in row.values())
    allowed = {n for n, r in row.items() if r["dialguard_result"] == "ALLOW"}
    assert Counter(i.number for i in run.invites) == Counter(allowed), "a call reached the carrier without an ALLOW"
    refused = {n for n, r in row.items() if r["dialguard_result"] == "DENY"}
    assert {row[n]["dialguard_reasons"] for n in refused} <= {"guard_unavailable"}, \
        Counter(row[n]["dialguard_reasons"] for n in refused)
    assert {(c.outcome, c.code) for c in run.calls if c.number in refused} <= {("rejected", 503)}

    # The timeline, by the time each INVITE left the agents' side.
    sent = {i.number: i.at for i in run.sent}
    refused_at = sorted(sent[n] for n in refused)
    assert refused_at, "the primary's death was never noticed: the test tested nothing"
    after = sorted(sent[n] for n in allowed if sent[n] > refused_at[0])
    assert after, "no ALLOW after the failover: the guard did not recover by itself"
    window = after[0] - refused_at[0]
    last_before = max((sent[n] for n in allowed if sent[n] < refused_at[0]), default=float("nan"))

    # PostgreSQL has every decision of the CDR exactly once, with the same verdict.
    ids = {row[n]["dialguard_decision_id"]: row[n]["dialguard_result"] == "ALLOW" for n in nums}
    deadline = time.monotonic() + 90
    with psycopg.connect(Settings().pg_dsn, autocommit=True) as conn:
        while True:
            got = conn.execute("select decision_id, allowed from audit_decisions where campaign = %s",
                               (campaign,)).fetchall()
            if set(ids) <= {d for d, _ in got} or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    counts = Counter(d for d, _ in got)
    missing = set(ids) - set(counts)
    assert not missing, f"{len(missing)} decisions of the CDR are not in PostgreSQL"
    assert max(counts.values()) == 1
    assert all(dict(got)[d] == a for d, a in ids.items()), "a verdict differs between the CDR and the audit"
    # Reservations whose answer was lost when the primary died (the caller got
    # guard_unavailable): in the audit as ALLOWs, never dialed; they only over-count.
    unanswered = [d for d, a in got if a and d not in ids]
    print(f"\nfailover under calls: {CALLS} calls at {RATE}/s, primary :{killed['port']} SIGKILLed "
          f"{KILL_AFTER_S:.0f} s in, new primary :{new_port}; {len(allowed)} allowed, {len(refused)} refused "
          f"(guard_unavailable); first refusal {1000 * (refused_at[0] - killed['at']):.0f} ms after the kill, "
          f"last refusal {refused_at[-1] - killed['at']:.2f} s, first ALLOW on the new primary "
          f"{after[0] - killed['at']:.2f} s after the kill (refusal window {window:.2f} s; last ALLOW before it "
          f"{1000 * (last_before - killed['at']):.0f} ms); CDR == audit for {len(ids)} decisions, "
          f"{len(unanswered)} unanswered reservations")
