"""The maximum call duration the guard returns cuts the answered call on time."""

from __future__ import annotations

from pathlib import Path

from guard import Cdr, numbers, place_calls, render, scenario, tag

LIMIT_S = 3  # tests/e2e/scenarios/guard_max_duration/pack.yaml


async def test_long_call_is_cut_at_the_limit(stack, guard, tmp_path: Path) -> None:
    campaign, _ = await guard.campaign("duration", rules=scenario("guard_max_duration", "pack.yaml"), pool=0)
    (number,) = numbers(1)
    injection = render(scenario("guard_max_duration", "calls.csv"), tmp_path / "calls.csv",
                       campaign=campaign, agent=f"e2e-agent-{tag()}", number=number)
    cdr = Cdr.mark(stack.dir)

    # Neither side hangs up: the agent waits for the PBX's BYE (agents_uac.xml here).
    run = place_calls(stack, injection, tmp_path, uac_scenario=scenario("guard_max_duration", "agents_uac.xml"))

    assert run.uac.failed == 0, run.uac.describe()
    assert run.carrier.failed == 0, run.carrier.describe()
    (invite,) = run.invites
    answered, bye = run.answers[invite.call_id], run.byes[invite.call_id]
    held = bye - answered
    assert LIMIT_S - 0.05 <= held <= LIMIT_S + 1.0, f"answer to BYE at the carrier: {held:.3f}s"
    (row,) = cdr.for_numbers({number}, expect=1)[number]
    assert row["dialguard_result"] == "ALLOW" and row["disposition"] == "ANSWERED", row
    assert int(row["billsec"]) in (LIMIT_S, LIMIT_S + 1), row
    print(f"\nmax duration {LIMIT_S}s: answer to BYE {held:.3f}s at the carrier")
