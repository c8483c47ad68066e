"""One dialer per campaign: two dialers (two Stasis apps) serving the same campaign.

Only the one holding the campaign's lock dials it and handles its calls; the
other neither dials nor adopts them while the first lives, then takes the
campaign over when it stops, ends the calls it inherited (numbers ending in 99
ring and are never answered) and reports each outcome exactly once.
"""

from __future__ import annotations

import asyncio

from test_dialer_calls import die, invites, number, rig  # noqa: F401  (fixture)
from test_dialer_failure import originated, wait_for
from test_dialer_restart import outcome_records


async def test_two_dialers_on_one_campaign(rig):
    nums = [number("99") for _ in range(3)]
    camp = await rig.campaign(nums, ring_timeout_s=5, retry_after_s=3600, max_concurrent=3)
    agents = ["agent1", "agent2", "agent3"]
    a = rig.start(camp, agents, app=rig.app + "-a", name=rig.app)
    await wait_for(await originated(rig, camp, 3), 15, "3 calls ringing")
    b = rig.start(camp, agents, app=rig.app + "-b", name=rig.app)
    await wait_for(lambda: _is(b.ari.healthy), 15, "the second dialer connected")
    await asyncio.sleep(1.0)
    assert a.locks.campaigns == {camp} and b.locks.campaigns == set()
    assert b.stats["originated"] == 0 and not b.calls  # it did not adopt the first one's calls

    # the first dialer goes away with its calls still ringing: the second takes over
    d, task = rig.dialers.pop(0)
    assert d is a
    await die(task)
    leads = await rig.settle(camp, timeout=30)
    assert b.locks.campaigns == {camp}
    calls = await rig.calls(camp)
    assert len(calls) == 3 and all(c["outcome_reported"] for c in calls), calls
    for c in calls:
        assert len(await outcome_records(rig, c["channel_id"])) == 1
    for n in nums:
        assert sum(1 for i in invites(rig.carrier) if i.number == n) == 1  # never dialed twice
        assert leads[n]["attempts"] == 1 and leads[n]["state"] == "pending"


async def _is(v):
    return v
