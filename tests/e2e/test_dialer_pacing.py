"""Pacing modes, agent states and lead order on the real stack (issue #18 items 4 and 7):
Asterisk 22, SIPp carrier and agent phones, PostgreSQL, Redis (the rig of
test_dialer_calls.py: carrier behaviour by number suffix, 00 answers and hangs up after
4 s, 86 busy, 99 never answers)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

from test_dialer_calls import NOW, invites, number, observe, open_rig, rig, ticks  # noqa: F401  (fixture)
from test_dialer_failure import wait_for


def agent_name(tag: str) -> str:
    """Agent names are global (dialer_agents): one of this run only."""
    return f"{tag}{uuid.uuid4().hex[:6]}"


async def _true(v):
    return bool(v)


async def _ended(rig, camp: str) -> bool:
    return all(c["state"] == "ended" for c in await rig.calls(camp))


async def test_predictive_gentle_start_not_the_full_ratio(rig):
    """Nothing measured yet: predictive dials one line per ready agent, however high its
    dial ratio; the fixed `ratio` mode (the former pacing) dials the full ratio at once."""
    agents = [agent_name("gs"), agent_name("gs")]
    pred = await rig.campaign([number("99") for _ in range(8)], pacing_mode="predictive", dial_ratio=3.0,
                              max_concurrent=8, calls_per_second=100)
    d = rig.start(pred, agents)
    await wait_for(lambda: _true(d.stats["originated"]), 15, "the first calls")
    await ticks(d)  # ringing (never answered): nothing more may go out meanwhile
    assert d.stats["originated"] == 2, d.stats
    await rig.stop_all()
    fixed = await rig.campaign([number("99") for _ in range(8)], pacing_mode="ratio", dial_ratio=3.0,
                               max_concurrent=8, calls_per_second=100)
    d = rig.start(fixed, [agent_name("gs"), agent_name("gs")])
    await wait_for(lambda: _true(d.stats["originated"] >= 6), 15, "the full ratio")
    await ticks(d)
    assert d.stats["originated"] == 6, d.stats


async def test_agent_on_break_gets_no_call_until_ready(rig):
    a = agent_name("brk")
    await rig.store.set_agent_state(a, "break")
    camp = await rig.campaign([number("00")])
    d = rig.start(camp, [a])
    await d.ari.wait_healthy(10)
    await ticks(d)
    assert d.stats["originated"] == 0 and not await rig.calls(camp)
    await rig.store.set_agent_state(a, "ready")
    await rig.settle(camp)
    [c] = await rig.calls(camp)
    assert c["result"] == "conversation" and c["agent"] == a, c


async def test_wrap_up_time_between_calls(rig):
    a = agent_name("wrp")
    camp = await rig.campaign([number("00"), number("00")], wrap_up_s=4)
    rig.start(camp, [a])
    await rig.settle(camp, timeout=60)
    first, second = await rig.calls(camp)
    assert first["result"] == second["result"] == "conversation", (first, second)
    gap = second["created_at"] - first["ended_at"]
    assert gap >= timedelta(seconds=4), gap  # the agent's wrap-up, then the next call
    assert gap < timedelta(seconds=8), gap


async def test_retry_rules_by_outcome(rig):
    busy, silent = number("86"), number("99")
    camp = await rig.campaign([busy, silent], retry_after_s=0, max_attempts=5,
                              retry_rules="busy=0s/1,no_answer=3600s/3")
    rig.start(camp, [agent_name("rr")])
    leads = await rig.settle(camp)
    assert leads[busy]["state"] == "done" and leads[busy]["attempts"] == 1  # one busy: done
    assert leads[silent]["state"] == "pending" and leads[silent]["attempts"] == 1
    assert leads[silent]["next_eligible_at"] - NOW >= timedelta(seconds=3600 - 5)


async def test_owned_callback_waits_for_its_agent(rig):
    mine, other = agent_name("own"), agent_name("oth")
    n = number("00")
    camp = await rig.campaign([n])
    [lead] = (await rig.leads(camp)).values()
    await rig.store.set_lead(lead["id"], owner_agent=mine, callback_at=NOW)
    d = rig.start(camp, [other])
    await d.ari.wait_healthy(10)
    await ticks(d)
    assert d.stats["originated"] == 0  # only its owner may take it
    await rig.stop_all()
    rig.start(camp, [other, mine])
    await rig.settle(camp)
    [c] = await rig.calls(camp)
    assert c["result"] == "conversation" and c["agent"] == mine, c


async def test_preview_dials_only_what_the_agent_accepted(rig):
    a = agent_name("pv")
    n1, n2 = number("00"), number("00")
    camp = await rig.campaign([n1, n2], pacing_mode="preview")
    d = rig.start(camp, [a])
    await d.ari.wait_healthy(10)
    await ticks(d)
    assert d.stats["originated"] == 0  # nothing accepted: nothing dialed
    held = await rig.store.preview_next(camp, a, NOW)
    assert (await rig.store.answer_preview(held["id"], a, True)) is not None
    await wait_for(lambda: _true(d.stats["bridged"]), 20, "the accepted lead bridged")
    calls = await rig.calls(camp)
    assert len(calls) == 1 and calls[0]["lead_id"] == held["id"] and calls[0]["agent"] == a
    await wait_for(lambda: _ended(rig, camp), 20, "the accepted call ended (4 s)")
    await ticks(d)  # the other lead is still not dialed
    assert len(await rig.calls(camp)) == 1
    assert [i.number for i in invites(rig.agents)] == [a]


async def test_closed_zone_lead_waits_without_a_decision(rig):
    """20:00 in Shanghai (cn-default: 09:00-18:00): the lead is put back to the next
    opening without a call row, a decision or an attempt."""
    night = NOW + timedelta(hours=10)
    await rig.engine.set_test_clock(night)
    n = number("00")
    camp = await rig.campaign([n])
    d = rig.start(camp, [agent_name("zn")])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lead = (await rig.leads(camp))[n]
        if lead["state"] == "pending" and lead["next_eligible_at"] > night:
            break
        await asyncio.sleep(0.2)
    assert lead["next_eligible_at"] == NOW + timedelta(hours=23), lead  # 09:00 the next (working) day
    assert lead["attempts"] == 0 and lead["last_reasons"] == "outside_hours"
    await ticks(d)
    assert d.stats["skipped_closed"] == 1 and d.stats["denied"] == 0, d.stats
    assert not await rig.calls(camp)  # no call row: nothing decided, nothing audited


async def test_nothing_due_is_asked_for_twice_a_second_not_at_every_tick(rig):
    """A running campaign with a ready agent and no lead due (its one lead a callback in an
    hour): the dialer asks PostgreSQL for due leads every DRAINED_RECHECK_S, not at each of
    its 20 ticks a second (each ask is an UPDATE ... FOR UPDATE SKIP LOCKED). A clock
    moved past the callback asks at once: the lead is taken by the tick running as the
    clock moves or the next."""
    from ari_app.dialer import DRAINED_RECHECK_S

    camp = await rig.campaign([number("00")])
    [lead] = (await rig.leads(camp)).values()
    await rig.store.set_lead(lead["id"], callback_at=NOW + timedelta(hours=1))
    d = rig.start(camp, [agent_name("dr")])
    asks = observe(d.store, "claim_due", lambda: (time.monotonic(), d.stats["ticks"]))  # ((at, tick), leads)
    await wait_for(lambda: _true(asks), 15, "the first ask")
    t0, tick0 = time.monotonic(), d.stats["ticks"]
    await ticks(d, 60)
    took, ticked = time.monotonic() - t0, d.stats["ticks"] - tick0
    n = sum(1 for (at, _), _ in asks if at >= t0)
    print(f"{n} asks in {ticked} ticks, {took:.2f}s")
    assert n <= took / DRAINED_RECHECK_S + 2, (n, ticked, took)  # not one a tick
    assert n >= 1 and all(not leads for _, leads in asks), asks  # still asked, nothing taken
    assert d.stats["originated"] == 0
    t = d.stats["ticks"]
    await rig.engine.set_test_clock(NOW + timedelta(hours=1, seconds=1))  # the callback is due
    await wait_for(lambda: _true(any(leads for _, leads in asks)), 15, "the callback taken")
    [((_, tick), _)] = [a for a in asks if a[1]]
    assert tick <= t + 1, (tick, t)
    [c] = (await rig.settle(camp)).values()
    assert c["attempts"] == 1, c
