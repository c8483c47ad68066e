"""Guarded calls the rules allow reach the carrier with the caller ID the guard chose."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from guard import Cdr, caller_ids, dialguard, numbers, place_calls, render, scenario, tag


async def test_allowed_calls_reach_carrier_with_pool_caller_id(stack, guard, tmp_path: Path) -> None:
    # The admin's part, with the real CLI: approve the campaign, fill its pool.
    campaign = f"e2e-allowed-{tag()}"
    pool = caller_ids(2)
    guard.campaigns.append(campaign)
    dialguard("campaign", "approve", campaign)
    for cid in pool:
        dialguard("callerid", "add", cid, "--campaign", campaign)
    nums = numbers(6)
    injection = render(scenario("guard_allowed", "calls.csv"), tmp_path / "calls.csv", campaign=campaign,
                       agent=f"e2e-agent-{tag()}", **{f"n{i + 1}": n for i, n in enumerate(nums)})
    cdr = Cdr.mark(stack.dir)

    run = place_calls(stack, injection, tmp_path)

    assert run.uac.failed == 0, run.uac.describe()
    assert Counter(c.outcome for c in run.calls) == {"answered": 6}, run.calls
    assert sorted(i.number for i in run.invites) == sorted(nums), run.carrier.describe()
    for invite in run.invites:
        # The caller ID the guard picked from the campaign's pool, in From and PAI.
        assert invite.from_user in pool, invite
        assert invite.pai_user == invite.from_user, invite
    rows = cdr.for_numbers(set(nums), expect=6)
    for number in nums:
        (row,) = rows[number]
        assert row["dialguard_result"] == "ALLOW" and row["dialguard_reasons"] == "", row
        assert row["dialguard_decision_id"], row
        assert row["src"] in pool and row["disposition"] == "ANSWERED", row
