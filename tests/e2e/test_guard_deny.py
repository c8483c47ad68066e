"""Calls the guard stops: do-not-call, attempt cap, calling hours, and no guard at all.

Denied calls never reach the carrier, end with a proper hangup cause (Q.850
21 "call rejected" for a rule, 34 "congestion" (SIP 503) when the guard could not
decide) and leave DENY and the reasons in the CDR.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

from guard import WORKDAY_10H, Cdr, agi_server, dialguard, numbers, place_calls, render, scenario, tag


async def test_dnc_and_over_cap_never_reach_carrier(stack, guard, tmp_path: Path) -> None:
    campaign, _ = await guard.campaign("dnc-cap")
    dnc, capped, ok = numbers(3)
    dialguard("dnc", "add", dnc)
    injection = render(scenario("guard_dnc_cap", "calls.csv"), tmp_path / "calls.csv", campaign=campaign,
                       agent=f"e2e-agent-{tag()}", dnc=dnc, capped=capped, ok=ok)
    cdr = Cdr.mark(stack.dir)

    run = place_calls(stack, injection, tmp_path, rate=5)

    assert run.uac.failed == 0, run.uac.describe()
    assert Counter(i.number for i in run.invites) == {capped: 2, ok: 1}, run.carrier.describe()
    agents = Counter((c.number, c.outcome, c.code) for c in run.calls)
    assert agents == {(dnc, "rejected", 403): 1, (capped, "answered", None): 2,
                      (capped, "rejected", 403): 1, (ok, "answered", None): 1}, run.calls
    rows = cdr.for_numbers({dnc, capped, ok}, expect=5)
    (d,) = rows[dnc]
    assert (d["dialguard_result"], d["dialguard_reasons"], d["hangupcause"]) == ("DENY", "dnc", "21"), d
    verdicts = sorted((r["dialguard_result"], r["dialguard_reasons"]) for r in rows[capped])
    assert verdicts == [("ALLOW", ""), ("ALLOW", ""), ("DENY", "attempt_cap")], rows[capped]
    denied = next(r for r in rows[capped] if r["dialguard_result"] == "DENY")
    assert denied["hangupcause"] == "21" and denied["disposition"] != "ANSWERED", denied
    assert [r["dialguard_result"] for r in rows[ok]] == ["ALLOW"]


async def test_outside_hours_on_the_rules_clock(stack, guard, tmp_path: Path) -> None:
    campaign, _ = await guard.campaign("hours")
    (number,) = numbers(1)
    injection = render(scenario("guard_outside_hours", "calls.csv"), tmp_path / "calls.csv",
                       campaign=campaign, agent=f"e2e-agent-{tag()}", number=number)
    closing = WORKDAY_10H + timedelta(hours=8)  # 18:00:00 Shanghai: the end of 09:00-18:00, excluded
    await guard.set_clock(closing)
    cdr = Cdr.mark(stack.dir)

    late = place_calls(stack, injection, tmp_path / "late")

    assert late.uac.failed == 0, late.uac.describe()
    assert late.invites == [], late.carrier.describe()
    assert [(c.outcome, c.code) for c in late.calls] == [("rejected", 403)]
    (row,) = cdr.for_numbers({number}, expect=1)[number]
    assert (row["dialguard_result"], row["dialguard_reasons"], row["hangupcause"]) == ("DENY", "outside_hours", "21")

    await guard.set_clock(closing - timedelta(seconds=1))  # 17:59:59: still open
    ontime = place_calls(stack, injection, tmp_path / "ontime")
    assert [i.number for i in ontime.invites] == [number], ontime.carrier.describe()


async def test_no_call_reaches_carrier_without_the_guard(stack, guard, tmp_path: Path) -> None:
    campaign, _ = await guard.campaign("unavailable")
    nums = numbers(3)
    injection = render(scenario("guard_unavailable", "calls.csv"), tmp_path / "calls.csv", campaign=campaign,
                       agent=f"e2e-agent-{tag()}", **{f"n{i + 1}": n for i, n in enumerate(nums)})
    cdr = Cdr.mark(stack.dir)
    agi_server("stop")
    try:
        run = place_calls(stack, injection, tmp_path / "down")
    finally:
        agi_server("start")

    assert run.uac.failed == 0, run.uac.describe()
    assert run.invites == [], run.carrier.describe()
    assert Counter((c.outcome, c.code) for c in run.calls) == {("rejected", 503): 3}, run.calls
    rows = cdr.for_numbers(set(nums), expect=3)
    for number in nums:
        (row,) = rows[number]
        assert (row["dialguard_result"], row["dialguard_reasons"], row["hangupcause"]) == \
            ("DENY", "guard_unavailable", "34"), row

    # The guard is back: the same calls now go through.
    again = place_calls(stack, injection, tmp_path / "up")
    assert sorted(i.number for i in again.invites) == sorted(nums), again.carrier.describe()
