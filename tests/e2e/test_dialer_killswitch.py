"""The kill switch parks the dialer, it does not churn the lead list (issue #18 item 6).

While the campaign, all outbound, or every caller ID of the campaign is paused, the
dialer takes no lead (no decision, no `paused` denial, no lead pushed back); once
resumed it dials at its next tick.
"""

from __future__ import annotations

import asyncio
import time

from ari_app import metrics as m
from test_dialer_calls import CALLER_ID, number, rig  # noqa: F401  (fixture)


async def held_still(rig, camp: str, d, seconds: float = 2.0) -> None:
    deadline = time.monotonic() + 5
    while m.HELD_BACK.labels(camp)._value.get() != 1:
        assert time.monotonic() < deadline, d.held
        await asyncio.sleep(0.05)
    await asyncio.sleep(seconds)
    assert await rig.calls(camp) == []  # no decision asked: nothing denied, nothing placed
    leads = await rig.leads(camp)
    assert all(r["state"] == "pending" and r["attempts"] == 0 and r["last_result"] is None
               for r in leads.values()), leads


async def resumed_within(rig, camp: str) -> float:
    t0 = time.monotonic()
    while not await rig.calls(camp):
        assert time.monotonic() - t0 < 10, "nothing dialed after resume"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def test_paused_campaign_all_and_caller_ids_hold_leads_back(rig):
    camps = [await rig.campaign([number("00")]) for _ in range(3)]
    e = rig.engine
    await e.pause("campaign", camps[0], why="test")
    await e.pause("all", why="test")
    d = rig.start(camps, ["agent1", "agent2", "agent3"])
    for c in camps:
        await held_still(rig, c, d, seconds=0.5)
    assert d.held[camps[0]] == "all outbound paused"
    await e.resume("all")
    waited = await resumed_within(rig, camps[1])
    print(f"dialing again {waited:.2f}s after resume (all)")
    assert waited < 5  # at the next tick (50 ms) in practice, not after a 60 s push-back
    await held_still(rig, camps[0], d, seconds=1.0)  # its own switch still holds it
    assert d.held[camps[0]] == "campaign paused"
    await e.resume("campaign", camps[0])
    await resumed_within(rig, camps[0])
    await rig.settle(camps[0])
    await rig.settle(camps[1])
    await rig.settle(camps[2])
    for c in camps:
        [call] = await rig.calls(c)
        assert call["result"] == "conversation", call  # one attempt each, no denial recorded
    assert m.HELD_BACK.labels(camps[0])._value.get() == 0
    # stopped campaigns: their calls-in-flight gauge goes back to 0 (it stayed at its last value)
    for c in camps:
        await rig.store.set_state(c, "stopped")
    await asyncio.sleep(1.5)
    assert [m.CALLS_IN_FLIGHT.labels(c)._value.get() for c in camps] == [0, 0, 0]


async def test_every_caller_id_paused_holds_the_campaign_back(rig):
    camp = await rig.campaign([number("00")])
    pool = await rig.engine.campaign_caller_ids(camp)
    assert CALLER_ID in pool
    for cid in pool:
        await rig.engine.pause("caller_id", cid, why="test")
    d = rig.start(camp, ["agent1"])
    await held_still(rig, camp, d, seconds=1.0)
    assert d.held[camp] == "every caller ID of the campaign paused"
    await rig.engine.resume("caller_id", CALLER_ID)
    await resumed_within(rig, camp)
    await rig.settle(camp)
    [call] = await rig.calls(camp)
    assert call["result"] == "conversation"
