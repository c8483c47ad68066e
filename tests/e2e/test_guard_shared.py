"""The dialplan (FastAGI) and the engine used directly share one set of counters."""

from __future__ import annotations

import uuid
from pathlib import Path

from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.decision.models import DecisionRequest
from dialguard.rules import Policy
from guard import WORKDAY_10H, Cdr, numbers, place_calls, render, scenario, tag


async def test_dialplan_and_engine_share_one_cap(stack, guard, tmp_path: Path) -> None:
    campaign, pool = await guard.campaign("shared", pool=1)
    (number,) = numbers(1)
    agent = f"e2e-agent-{tag()}"
    injection = render(scenario("guard_shared_cap", "calls.csv"), tmp_path / "calls.csv",
                       campaign=campaign, agent=agent, number=number)
    # As the campaign dialer and the CLI do: an engine of their own on the same store.
    engine = await Engine.create(Settings(), Policy.load("cn-default"))
    try:
        def request() -> DecisionRequest:
            return DecisionRequest(number=number, campaign=campaign, agent=agent, call_id=f"e2e-{uuid.uuid4().hex}")

        direct = await engine.decide(request(), now=WORKDAY_10H)
        assert direct.allowed and direct.caller_id in pool, direct
        cdr = Cdr.mark(stack.dir)

        second = place_calls(stack, injection, tmp_path / "second")  # 2nd attempt: cn-default allows 2
        assert [i.number for i in second.invites] == [number], second.carrier.describe()

        third = place_calls(stack, injection, tmp_path / "third")  # 3rd: over the cap
        assert third.invites == [] and [(c.outcome, c.code) for c in third.calls] == [("rejected", 403)]
        rows = [r for r in cdr.rows(expect=2) if r["dst"] == number]
        assert [(r["dialguard_result"], r["dialguard_reasons"]) for r in rows] == \
            [("ALLOW", ""), ("DENY", "attempt_cap")], rows

        after = await engine.decide(request(), now=WORKDAY_10H)
        assert not after.allowed and after.reasons == ["attempt_cap"], after
    finally:
        await engine.close()
