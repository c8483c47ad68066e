"""A guarded call refused for where its callee lives (issue #19): the number
alone would be allowed, the stated region or ZIP code brings its state's law.

The location travels as the dialplan's channel variables DIALGUARD_REGION and
DIALGUARD_POSTAL_CODE (set here by the test PBX from SIP headers), through
dialguard-dial's AGI arguments, to the engine.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

from guard import Cdr, place_calls, render, scenario, tag

from dialguard.numbers import parse_number

# Monday 2026-03-02 20:30 Eastern (EST, UTC-5)
EVENING_EASTERN = datetime(2026, 3, 3, 1, 30, tzinfo=timezone.utc)


def _new_york_number() -> str:
    rng = random.SystemRandom()
    while True:
        n = "+1212" + "".join(rng.choice("0123456789") for _ in range(7))
        if parse_number(n, "US").valid and n[5] not in "01":
            return n


async def test_florida_resident_on_a_new_york_number(stack, guard, tmp_path: Path) -> None:
    campaign, _ = await guard.campaign("region", rules="us-tcpa,us-states")
    number = _new_york_number()
    injection = render(scenario("guard_region", "calls.csv"), tmp_path / "calls.csv", campaign=campaign,
                       agent=f"e2e-agent-{tag()}", number=number)
    await guard.set_clock(EVENING_EASTERN)
    # The AGI server loads a campaign's rules (here nine packs and their holiday
    # calendars) on its first call, which can take longer than the store's
    # deadline on a busy machine (a fail-closed deny): one call of another
    # number first, its answer not looked at.
    warm = render(scenario("guard_region", "calls.csv"), tmp_path / "warm.csv", campaign=campaign,
                  agent=f"e2e-agent-{tag()}", number=_new_york_number())
    place_calls(stack, warm, tmp_path / "warm", rate=1, uac_scenario=scenario("guard_region", "agents_uac.xml"))
    cdr = Cdr.mark(stack.dir)

    run = place_calls(stack, injection, tmp_path, rate=1, uac_scenario=scenario("guard_region", "agents_uac.xml"))

    assert run.uac.failed == 0, run.uac.describe()
    # only the call without a stated location reached the carrier
    assert [i.number for i in run.invites] == [number], run.carrier.describe()
    assert [(c.outcome, c.code) for c in run.calls] == [("rejected", 403), ("answered", None), ("rejected", 403)]
    rows = cdr.for_numbers({number}, expect=3)[number]
    assert [(r["dialguard_result"], r["dialguard_reasons"]) for r in rows] == [
        ("DENY", "outside_hours"), ("ALLOW", ""), ("DENY", "outside_hours")], rows
    assert [r["hangupcause"] for r in rows if r["dialguard_result"] == "DENY"] == ["21", "21"]


async def test_other_subjects_named_in_the_dialplan(stack, guard, tmp_path: Path) -> None:
    """DIALGUARD_SUBJECTS set on the channel: the conversation starts the quiet
    period of every debt named (Reg F comment 14(b)(4)-1.ii), through the CEL
    outcome event and the outcome reader."""
    import asyncio

    from dialguard.decision.models import DecisionRequest

    campaign, _ = await guard.campaign("subjects", rules="us-regf")
    number = _new_york_number()
    injection = render(scenario("guard_subjects", "calls.csv"), tmp_path / "calls.csv", campaign=campaign,
                       agent=f"e2e-agent-{tag()}", number=number)
    noon = datetime(2026, 3, 2, 17, 0, tzinfo=timezone.utc)  # Monday 12:00 Eastern
    await guard.set_clock(noon)
    run = place_calls(stack, injection, tmp_path, rate=1, hold_ms=2500,
                      uac_scenario=scenario("guard_subjects", "agents_uac.xml"))
    assert [i.number for i in run.invites] == [number], run.carrier.describe()

    async def quiet(subject):
        d = await guard.engine.decide(DecisionRequest(number=number, campaign=campaign, agent="x", subject=subject),
                                      now=noon + timedelta(hours=1))
        return "post_conversation_quiet" in d.reasons

    deadline = asyncio.get_running_loop().time() + 20
    while not await quiet("debt-1"):  # the outcome reader applies the CEL line within ~0.1 s
        assert asyncio.get_running_loop().time() < deadline, "the conversation never reached the guard"
        await asyncio.sleep(0.2)
    assert [await quiet(s) for s in ("debt-2", "debt-3", "debt-4")] == [True, True, False]
