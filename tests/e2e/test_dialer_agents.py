"""One agent, several campaigns and dialers: an agent is never offered two calls at once.

Agents are leased in Redis when a customer answers (ari_app/leases.py), whatever
dialer or campaign asks; pacing counts only agents with no lease and no device in
use. Numbers ending in 00 answer and hang up 4 s later (scenarios/dialer_carrier);
agent phones answer at once (scenarios/dialer_agents).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from sipp import AGENTS_UAC, Sipp, parse_uac_log, write_injection
from test_dialer_calls import NOW, invites, number, open_rig, rig  # noqa: F401  (fixture)
from test_dialer_failure import wait_for
from test_dialer_restart import DialerProcess, wait_row

UTC = timezone.utc


def overlap(a: dict, b: dict) -> bool:
    """Whether two calls' agent time (bridged until ended) overlaps."""
    return a["bridged_at"] < b["ended_at"] and b["bridged_at"] < a["ended_at"]


async def agent_calls(rig, camps: list[str]) -> list[dict]:
    rows = []
    for c in camps:
        rows += await rig.calls(c)
    return sorted(rows, key=lambda r: r["answered_at"] or r["created_at"])


async def two_campaigns_one_agent(rig, bridge_timeout_s: float, suffix: str = "00", during=None, **settings):
    """Two campaigns, each run by a dialer of its own (two Stasis apps), one lead each,
    one shared agent. Pacing reads the agents' leases only at start (agent_view_s=60),
    as two dialers that each see the agent free do: both dial at once and both
    customers answer within the same moment; only the lease decides."""
    camps = [await rig.campaign([number(suffix)], **settings) for _ in range(2)]
    dialers = [rig.start(c, ["agent1"], app=f"{rig.app}-{i}", name=rig.app, bridge_timeout_s=bridge_timeout_s,
                         agent_view_s=60) for i, c in enumerate(camps)]
    if during:
        await during(camps, dialers)
    for c in camps:
        await rig.settle(c, timeout=40)
    calls = await agent_calls(rig, camps)
    assert len(calls) == 2 and all(c["answered_at"] for c in calls), calls
    # answered at the same time: the second while the first one's call (4 s) was up
    assert abs(calls[1]["answered_at"] - calls[0]["answered_at"]) < timedelta(seconds=1.5), calls
    return dialers, calls


async def test_two_campaigns_one_agent_answered_at_once_one_abandoned(rig):
    dialers, calls = await two_campaigns_one_agent(rig, bridge_timeout_s=2.0)
    first, second = sorted(calls, key=lambda c: c["bridged_at"] is None)
    assert first["result"] == "conversation" and first["agent"] == "agent1", calls
    # the other waited for the agent within its 2 s, then was abandoned (message, hangup)
    assert second["result"] == "abandoned" and second["bridged_at"] is None, calls
    assert second["ended_at"] - second["answered_at"] >= timedelta(seconds=2 - 0.6), second
    assert sum(d.stats["agent_waits"] for d in dialers) == 1
    assert [i.number for i in invites(rig.agents)] == ["agent1"]  # offered one call, not two
    assert await rig.engine.redis.exists(rig.engine.keys.agent_lease("agent1")) == 0  # released at hangup


async def test_two_campaigns_one_agent_the_second_call_waits_for_it(rig):
    """Callees that stay on the line (numbers ending in 77; the 9 they press is not the
    opt-out key here). The first call to reach the agent is hung up after 1.5 s; the
    other customer, waiting for the agent (bridge timeout 7 s), gets it then."""
    async def hang_up_in_turn(camps, dialers):
        done: set[str] = set()
        for _ in range(2):
            async def next_bridged():
                rows = [c for c in await agent_calls(rig, camps) if c["state"] == "bridged"
                        and c["channel_id"] not in done]
                return rows[0] if rows else None
            deadline = time.monotonic() + 15
            while (row := await next_bridged()) is None:
                assert time.monotonic() < deadline, await agent_calls(rig, camps)
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)
            done.add(row["channel_id"])
            await dialers[0].ari.delete(f"channels/{row['channel_id']}")

    _, calls = await two_campaigns_one_agent(rig, bridge_timeout_s=7.0, suffix="77", during=hang_up_in_turn,
                                             optout_key="#")
    assert [c["result"] for c in calls] == ["conversation", "conversation"], calls
    a, b = sorted(calls, key=lambda c: c["bridged_at"])
    assert not overlap(a, b), calls  # never two calls bridged to the agent
    assert b["bridged_at"] >= a["ended_at"] and b["bridged_at"] - b["answered_at"] < timedelta(seconds=7), calls
    assert [i.number for i in invites(rig.agents)] == ["agent1", "agent1"]


async def test_one_dialer_two_campaigns_share_agents(rig):
    """One dialer running two campaigns with two agents: each call has its own agent,
    never one agent on two calls, and pacing counts agents across both campaigns."""
    camps = [await rig.campaign([number("00"), number("00")], dial_ratio=1.0, max_concurrent=2)
             for _ in range(2)]
    d = rig.start(camps, ["agent1", "agent2"], bridge_timeout_s=6.0)
    for c in camps:
        await rig.settle(c, timeout=60)
    calls = await agent_calls(rig, camps)
    assert len(calls) == 4 and all(c["result"] == "conversation" for c in calls), calls
    for name in ("agent1", "agent2"):
        mine = [c for c in calls if c["agent"] == name]
        assert all(not overlap(x, y) for i, x in enumerate(mine) for y in mine[i + 1:]), mine
    assert d.stats["abandoned"] == 0


async def device_state(d, device: str) -> str:
    return (await d.ari.get("deviceStates/" + quote(device, safe="")))["state"]


async def test_agent_busy_on_a_dialplan_call_is_not_offered_one(stack, pg_dsn, guard, tmp_path):
    """The agent's own endpoint (device PJSIP/agents here: the endpoint the agent phones
    place dialplan calls through) is on a guarded dialplan call: the dialer dials
    nothing for that agent until the call ends, then bridges its customer to it."""
    await guard.set_clock(NOW)
    async with open_rig(stack, pg_dsn, tmp_path, live=True) as rig:
        agent = f"dp{rig.app[-6:]}"  # the live namespace: an agent name of this run only
        camp = await rig.campaign([number("00")])
        await rig.store.set_state(camp, "paused")  # nothing dialed before the agent is on its call
        n = number("77")  # the dialplan call's callee answers and stays until the agent hangs up
        injection = tmp_path / "calls.csv"
        write_injection(injection, [(n[3:], camp, agent)])
        uac = Sipp("agents", AGENTS_UAC, tmp_path, stack.agents_port, remote=f"127.0.0.1:{stack.sip_port}",
                   injection=injection, calls=1, rate=10, limit=1, hold_ms=5000, timeout_s=60,
                   keys={"caller": "agents"})
        d = rig.start(camp, [agent], agent_devices={agent: "PJSIP/agents"})
        await d.ari.wait_healthy(10)
        uac.start()
        await wait_for(lambda: _eq(d.pool.device_states.get("PJSIP/agents"), "INUSE"), 10, "the agent's device in use")
        assert await device_state(d, "PJSIP/agents") == "INUSE"
        await rig.store.set_state(camp, "running")
        busy_seen = time.monotonic()
        await asyncio.sleep(2.0)
        assert d.stats["originated"] == 0 and not await rig.calls(camp)  # pacing: no free agent
        result = await asyncio.to_thread(uac.wait)
        ended = datetime.now(UTC)
        assert [c.outcome for c in parse_uac_log(result.log)] == ["answered"], result.describe()
        assert time.monotonic() - busy_seen > 2.0
        await rig.settle(camp, timeout=40)
        [c] = await rig.calls(camp)
        assert c["result"] == "conversation" and c["agent"] == agent, c
        assert c["created_at"] >= ended - timedelta(seconds=1.0), (c, ended)  # dialed once the agent was free
        assert [i.number for i in invites(rig.agents)] == [agent]


async def _eq(a, b):
    return a == b


async def test_sigkilled_dialer_agent_free_again_within_its_lease(rig):
    """Dialer A (its own process, lease 4 s) is SIGKILLed with agent1 bridged; the
    customer hangs up 4 s after answering, leaving the agent leg alone in the bridge.
    Dialer B (another campaign, the same agent) dials nothing while A's lease is
    alive, then finds it stale, checks Asterisk (customer gone), hangs up the
    leftover agent leg, recovers the lease and bridges its own call to agent1.
    A restarted later ends its call and does not release B's lease."""
    lease = 4.0
    camp_a = await rig.campaign([number("00")])
    camp_b = await rig.campaign([number("00")])
    await rig.store.set_state(camp_b, "paused")
    a = DialerProcess(rig, camp_a, ["agent1"], app=rig.app + "-a", name=rig.app,
                      env={"DIALGUARD_DIALER_AGENT_LEASE_S": str(lease)}).start()
    try:
        row = await wait_row(rig, camp_a, "bridged")
        a.kill()
        killed = datetime.now(UTC)
        leased = await rig.engine.redis.hget(rig.engine.keys.agent_lease("agent1"), "c")
        assert leased and leased.decode() == row["channel_id"]
        b = rig.start(camp_b, ["agent1"], app=rig.app + "-b", name=rig.app, agent_lease_s=lease)
        await rig.store.set_state(camp_b, "running")
        brow = await wait_row(rig, camp_b, "bridged", timeout=20)
        # not before A's lease went stale (its last heartbeat at most lease/3 before the kill)
        assert brow["created_at"] - killed >= timedelta(seconds=lease * 2 / 3 - 0.2), (brow, killed)
        # free again within the lease time (the customer hung up at answer + 4 s, before it)
        assert brow["bridged_at"] - killed <= timedelta(seconds=lease + 1.5), (brow, killed, a.output())
        assert b.stats["leases_recovered"] == 1
        chans = {c["id"] for c in await b.ari.get("channels")}
        assert "dga-" + row["channel_id"][4:] not in chans  # A's leftover agent leg was hung up
        # A comes back: its call vanished, it is ended once; B's lease is not touched
        a.start()
        await wait_for(lambda: _ended(rig, row["channel_id"]), 30, "A's call ended by the restarted A")
        cur = await rig.engine.redis.hget(rig.engine.keys.agent_lease("agent1"), "c")
        if (await rig.store.call(brow["channel_id"]))["state"] != "ended":
            assert cur and cur.decode() == brow["channel_id"]
        await rig.settle(camp_b, timeout=30)
    finally:
        a.stop()
    calls = await agent_calls(rig, [camp_a, camp_b])
    assert [c["result"] for c in calls] == ["conversation", "conversation"], calls


async def _ended(rig, cid: str) -> bool:
    return (await rig.store.call(cid))["state"] == "ended"
