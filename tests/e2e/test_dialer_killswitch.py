"""The kill switch parks the dialer, it does not churn the lead list (issue #18 item 6).

While the campaign, all outbound, or every caller ID of the campaign is paused, the
dialer takes no lead (no decision, no `paused` denial, no lead pushed back); once
resumed it dials at its next tick.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from ari_app import metrics as m
from ari_app.dialer import REFRESH_S
from test_dialer_calls import CALLER_ID, die, number, observe, rig, ticks  # noqa: F401  (fixture)


async def held_still(rig, camp: str, d, seconds: float = 2.0) -> None:
    deadline = time.monotonic() + 5
    while m.HELD_BACK.labels(camp)._value.get() != 1:
        assert time.monotonic() < deadline, d.held
        await asyncio.sleep(0.05)
    await ticks(d, max(10, int(seconds * 20)))  # its chances to dial, not a wall-clock time
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
    deadline = time.monotonic() + 10
    while [m.CALLS_IN_FLIGHT.labels(c)._value.get() for c in camps] != [0, 0, 0]:
        assert time.monotonic() < deadline, [m.CALLS_IN_FLIGHT.labels(c)._value.get() for c in camps]
        await asyncio.sleep(0.05)


async def test_a_hold_goes_on_across_a_dialer_restart_counted_once(rig):
    """A dialer dies while a kill switch holds its campaign; the next one finds it still held:
    the same dialer_holds row goes on (leads counted once in `dialguard report`, not twice)."""
    camp = await rig.campaign([number("00"), number("00")])
    await rig.engine.pause("campaign", camp, why="test")
    d1 = rig.start(camp, ["agent1"])
    await held_still(rig, camp, d1, seconds=0.5)
    _, task = rig.dialers.pop()
    await die(task)
    m.HELD_BACK.labels(camp).set(0)  # the next dialer's own gauge, as in a new process
    d2 = rig.start(camp, ["agent1"])
    await held_still(rig, camp, d2, seconds=0.5)
    assert d1 is not d2 and d2.held[camp] == "campaign paused"
    holds = await rig.store._all("select reason, leads, ended_at from dialer_holds where campaign = %s", (camp,))
    assert [(h["reason"], h["leads"], h["ended_at"]) for h in holds] == [("paused", 2, None)], holds
    await rig.engine.resume("campaign", camp)
    await resumed_within(rig, camp)
    [h] = await rig.store._all("select reason, leads, ended_at from dialer_holds where campaign = %s", (camp,))
    assert h["leads"] == 2 and h["ended_at"] is not None


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


async def parked(rig, camp: str, numbers: dict[str, str], timeout: float = 15) -> dict[str, dict]:
    """Wait until each number's lead is parked for its region."""
    deadline = time.monotonic() + timeout
    while True:
        leads = await rig.leads(camp)
        if all(leads[n]["parked"] == r for n, r in numbers.items()):
            return leads
        assert time.monotonic() < deadline, {n: (leads[n]["state"], leads[n]["parked"]) for n in numbers}
        await asyncio.sleep(0.05)


async def dialed_within(rig, camp: str, n: str, timeout: float = 10) -> float:
    t0 = time.monotonic()
    while not [c for c in await rig.calls(camp) if c["number"] == n]:
        assert time.monotonic() - t0 < timeout, f"{n[-4:]} not dialed"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def test_region_pause_parks_its_leads_until_resumed_or_its_window_ends(rig):
    """`pause --region` (issue #19) as the guard sees the callee: a lead whose postal code
    is in Louisiana (a window of the pause) and one stated to live in Shanghai (no end) are
    parked, no decision asked; the lead elsewhere is dialed. The window's end (the guard's
    clock moved past it) and `resume_region` each restart dialing at the pacing loop's next
    tick (50 ms idle): counted in ticks, not wall-clock seconds, so a loaded machine's slow
    ticks cannot fail it and a dialer that waited for its 1 s unpark round would."""
    from dialguard.campaigns.leads import Lead
    from test_dialer_calls import NOW

    free, la, sh = number("00"), number("00"), number("00")
    camp = await rig.campaign([free])
    await rig.store.add_leads(camp, [Lead(3, la, "", None, None, "70112"), Lead(4, sh, "", None, "CN-SH", None)],
                              now=NOW)
    e = rig.engine
    await e.pause_region("US-LA", start=NOW - timedelta(minutes=1), until=NOW + timedelta(minutes=1),
                         why="hurricane")
    await e.pause_region("CN-SH", why="test")
    d = rig.start(camp, ["agent1", "agent2", "agent3"])
    claims = observe(d.store, "claim_due", lambda: d.stats["ticks"])  # (tick, leads taken)

    def claimed_at() -> dict[str, int]:
        """number -> the dialer's tick count when it last took the lead (a parked one was taken before)"""
        return {lead["number"]: tick for tick, leads in claims for lead in leads}

    await parked(rig, camp, {la: "US-LA", sh: "CN-SH"})
    await dialed_within(rig, camp, free)
    await ticks(d)  # looked at again and again: still parked, never decided
    calls = await rig.calls(camp)
    assert [c["number"] for c in calls] == [free], calls  # a call row precedes every decision
    leads = await rig.leads(camp)
    for n in (la, sh):
        assert (leads[n]["state"], leads[n]["attempts"], leads[n]["last_result"]) == ("pending", 0, None)
        assert leads[n]["next_eligible_at"] == NOW  # not pushed back
    assert (await rig.store.lead_counts(camp)).get("parked") == 2
    assert m.LEADS_PARKED.labels(camp)._value.get() == 2
    assert d.stats["parked"] == 2 and d.held.get(camp) is None  # the campaign itself is not held

    # a tick running as the change lands may still see the state before it (the counter
    # moves at a tick's end): the lead is taken by that tick or the next, t or t + 1
    t = d.stats["ticks"]
    await e.set_test_clock(NOW + timedelta(minutes=1, seconds=1))  # the Louisiana window is over
    waited = await dialed_within(rig, camp, la, timeout=30)
    print(f"dialed {waited:.2f}s, {claimed_at()[la] - t} tick(s), after the region pause's window ended")
    assert claimed_at()[la] <= t + 1, (claimed_at(), t)
    assert (await rig.leads(camp))[sh]["parked"] == "CN-SH"
    t = d.stats["ticks"]
    await e.resume_region("CN-SH")
    waited = await dialed_within(rig, camp, sh, timeout=30)
    print(f"dialed {waited:.2f}s, {claimed_at()[sh] - t} tick(s), after resume_region")
    assert claimed_at()[sh] <= t + 1, (claimed_at(), t)
    leads = await rig.settle(camp)
    calls = {c["number"]: c for c in await rig.calls(camp)}
    assert all(calls[n]["result"] == "conversation" for n in (free, la, sh)), calls
    assert all(leads[n]["attempts"] == 1 and leads[n]["parked"] is None for n in (free, la, sh))
    assert m.LEADS_PARKED.labels(camp)._value.get() == 0
    holds = await rig.store._all("select reason, detail, leads, started_at, ended_at from dialer_holds"
                                 " where campaign = %s order by detail", (camp,))
    assert [(h["reason"], h["detail"], h["leads"]) for h in holds] == [
        ("region_paused", "CN-SH", 1), ("region_paused", "US-LA", 1)], holds
    assert all(h["ended_at"] is not None and h["ended_at"] >= h["started_at"] for h in holds)


async def test_campaign_without_a_required_message_is_held_until_it_has_one(rig):
    """us-tcpa requires an abandon message naming the seller: a campaign under it with
    none of its own is held (nothing taken, the reason logged and recorded); given one, it
    dials at once."""
    n = number("00")
    camp = await rig.campaign([n])
    await rig.engine.set_campaign(camp, True, rules="cn-default,us-tcpa")
    d = rig.start(camp, ["agent1"])
    await held_still(rig, camp, d, seconds=1.0)
    assert d.held[camp].startswith("no abandon message of its own, and us-tcpa requires one"), d.held
    await rig.store.update_campaign(camp, abandon_media="sound:/var/lib/dialguard/sounds/acme-abandon")
    await resumed_within(rig, camp)
    await rig.settle(camp)
    [call] = await rig.calls(camp)
    assert call["result"] == "conversation"
    [h] = await rig.store._all("select reason, leads, ended_at from dialer_holds where campaign = %s", (camp,))
    assert (h["reason"], h["leads"]) == ("no_message", 1) and h["ended_at"] is not None


async def test_idle_dialer_reads_no_kill_switch_until_a_campaign_may_dial(rig):
    """Nothing may dial (its one campaign stopped): the pacing loop reads neither the kill
    switches nor the region pauses (before: both from Redis at every tick, 20 a second,
    the idle dialer's largest cost), and it wakes only for the campaigns' refresh, twice
    a second, not at every 50 ms tick. Started, the campaign is read and its kill switch
    honoured at once."""
    camp = await rig.campaign([number("00")])
    await rig.store.set_state(camp, "stopped")
    await rig.engine.pause("all", why="test")
    d = rig.start(camp, ["agent1"])
    paused, regions = observe(d.engine, "paused"), observe(d, "_regions")
    await ticks(d, 2)
    t0, tick0 = time.monotonic(), d.stats["ticks"]
    await asyncio.sleep(3)
    idle_ticks = d.stats["ticks"] - tick0
    # 2 a second (REFRESH_S), +1 for the edges; a load can only make it fewer. Before: 60.
    assert idle_ticks <= (time.monotonic() - t0) / REFRESH_S + 1, idle_ticks
    assert (len(paused), len(regions)) == (0, 0), (paused, regions)
    assert camp not in d.campaigns and camp not in d.held  # a stopped campaign is not even loaded
    await rig.store.set_state(camp, "running")
    deadline = time.monotonic() + 10
    while d.held.get(camp) != "all outbound paused":  # read again: held back, not dialed
        assert time.monotonic() < deadline, (len(paused), len(regions), d.held)
        await asyncio.sleep(0.02)
    assert len(paused) >= 1 and len(regions) >= 1, (paused, regions)
    assert await rig.calls(camp) == []
    await rig.engine.resume("all")
    await resumed_within(rig, camp)
    await rig.settle(camp)
