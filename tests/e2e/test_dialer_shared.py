"""The dialer and the dialplan share one engine and one set of counters (SPEC §1).

The dialer (ARI) and agents dialing through the dialplan (FastAGI) call the same
number for the same campaign at the same time; cn-default allows 2 attempts per
number per campaign, so exactly 2 of the 3 attempts reach the carrier, whoever
places them. The number ends in 86: the carrier answers busy.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from sipp import AGENTS_UAC, Sipp, parse_uac_log, write_injection
from test_dialer_calls import NOW, invites, number, open_rig


async def test_caps_shared_with_dialplan_calls(stack, pg_dsn, guard, tmp_path):
    await guard.set_clock(NOW)  # the live guard's clock (FastAGI server and our engine)
    async with open_rig(stack, pg_dsn, tmp_path, live=True) as rig:
        n = number("86")
        national = n[3:]
        camp = await rig.campaign([n])
        injection = tmp_path / "calls.csv"
        write_injection(injection, [(national, camp, "agent-x"), (national, camp, "agent-y")])
        uac = Sipp("agents", AGENTS_UAC, tmp_path, stack.agents_port, remote=f"127.0.0.1:{stack.sip_port}",
                   injection=injection, calls=2, rate=100, limit=10, hold_ms=100, timeout_s=60,
                   keys={"caller": "agents"})
        uac.start()
        rig.start(camp, ["agent1"])  # both sides at the same time
        uac_result = await asyncio.to_thread(uac.wait)
        await rig.settle(camp)
        calls = await rig.calls(camp)
        placed_by_dialer = sum(1 for c in calls if c["result"] != "denied")
        dialplan = Counter((c.outcome, c.code) for c in parse_uac_log(uac_result.log))
        denied_by_dialplan = dialplan[("rejected", 403)]
        assert sum(dialplan.values()) == 2, uac_result.describe()
        # exactly two attempts in all reached the carrier
        reached = [i for i in invites(rig.carrier) if i.number[-11:] == national]
        assert len(reached) == 2, (reached, calls, dialplan)
        assert placed_by_dialer + (2 - denied_by_dialplan) == 2, (calls, dialplan)
        assert [c["result"] for c in calls] in (["busy"], ["denied"])
