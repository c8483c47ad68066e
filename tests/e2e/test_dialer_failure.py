"""Dialer failure handling on the real stack: Asterisk restarted mid-campaign, dialer restarted.

Numbers ending in 99 ring and are never answered (scenarios/dialer_carrier).
"""

from __future__ import annotations

import asyncio
import time

from test_dialer_calls import CALLER_ID, die, invites, number, rig  # noqa: F401  (fixture)


async def wait_for(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def originated(rig, camp, n):
    async def cond():
        return sum(1 for c in await rig.calls(camp) if c["state"] == "originated") >= n
    return cond


async def test_asterisk_restart_mid_campaign(rig, asterisk):
    nums = [number("99") for _ in range(3)]
    camp = await rig.campaign(nums, ring_timeout_s=6, retry_after_s=0, max_concurrent=3)
    d = rig.start(camp, ["agent1", "agent2", "agent3"])
    await wait_for(await originated(rig, camp, 3), 15, "3 calls ringing")
    asterisk.rx("core restart now")
    await wait_for(lambda: _false_when(d.ari.healthy), 15, "the events socket to drop")
    await wait_for(lambda: _true_when(d.ari.healthy), 60, "the dialer to reconnect")
    leads = await rig.settle(camp, timeout=60)
    calls = await rig.calls(camp)
    assert d.ari.connects >= 2
    # every call of the restart is ended with an outcome, reported to the engine
    assert all(c["state"] == "ended" and c["outcome_reported"] for c in calls)
    # the leads were dialed again after the restart, never beyond cn-default's 2 per campaign
    for n in nums:
        mine = [c["result"] for c in calls if c["number"] == n]
        assert mine.count("denied") == 1 and len(mine) == 3, mine
        assert leads[n]["attempts"] == 2 and leads[n]["state"] == "done"
        assert sum(1 for i in invites(rig.carrier) if i.number == n) == 2


async def _false_when(v):
    return not v


async def _true_when(v):
    return v


async def test_dialer_restart_resumes_from_postgres(rig):
    nums = [number("99") for _ in range(2)]
    camp = await rig.campaign(nums, ring_timeout_s=4, retry_after_s=3600, max_concurrent=2)
    d1 = rig.start(camp, ["agent1", "agent2"])  # the rig's Stasis app, the same after the restart
    await wait_for(await originated(rig, camp, 2), 15, "2 calls ringing")
    # the dialer dies while both calls ring (no outcome yet)
    _, task = rig.dialers.pop()
    await die(task)
    assert all(c["state"] == "originated" for c in await rig.calls(camp))
    d2 = rig.start(camp, ["agent1", "agent2"])
    leads = await rig.settle(camp, timeout=30)
    calls = await rig.calls(camp)
    assert len(calls) == 2 and all(c["result"] == "no_answer" and c["outcome_reported"] for c in calls)
    for n in nums:
        assert leads[n]["attempts"] == 1 and leads[n]["state"] == "pending"  # rescheduled, no double dial
        assert sum(1 for i in invites(rig.carrier) if i.number == n) == 1
    assert d1 is not d2
