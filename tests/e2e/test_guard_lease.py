"""The hangup report frees the caller ID's live-call lease, so the next call passes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from guard import Cdr, numbers, place_calls, render, scenario, tag


async def test_hangup_report_frees_caller_id_lease(stack, guard, tmp_path: Path) -> None:
    campaign, (cid,) = await guard.campaign("lease", rules=scenario("guard_lease_release", "pack.yaml"), pool=1)
    first, second, third = numbers(3)
    values = dict(campaign=campaign, agent=f"e2e-agent-{tag()}", first=first, second=second, third=third)
    cdr = Cdr.mark(stack.dir)

    # The first call is held 2 s; the second comes 0.5 s after it, while it is live.
    during = place_calls(stack, render(scenario("guard_lease_release", "calls_during.csv"), tmp_path / "during.csv",
                                       **values), tmp_path / "during", rate=2, hold_ms=2000)

    assert during.uac.failed == 0, during.uac.describe()
    assert [(i.number, i.from_user) for i in during.invites] == [(first, cid)], during.carrier.describe()
    assert {c.number: (c.outcome, c.code) for c in during.calls} == {first: ("answered", None),
                                                                     second: ("rejected", 403)}
    rows = cdr.for_numbers({first, second}, expect=2)
    assert rows[second][0]["dialguard_reasons"] == "caller_id_concurrency", rows[second]

    # The first call's report (hangup) gives the lease back.
    deadline = time.monotonic() + 3
    while await guard.live_leases(cid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await guard.live_leases(cid) == 0, "the hangup report did not release the caller ID's lease"

    after = place_calls(stack, render(scenario("guard_lease_release", "calls_after.csv"), tmp_path / "after.csv",
                                      **values), tmp_path / "after")
    assert [(i.number, i.from_user) for i in after.invites] == [(third, cid)], after.carrier.describe()
    (row,) = cdr.for_numbers({third}, expect=1)[third]
    assert row["dialguard_result"] == "ALLOW", row
