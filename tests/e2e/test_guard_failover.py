"""A failover dialplan (issue 13): one channel runs GoSub(dialguard-dial) twice,
a busy first number then a second one, under the same call id (its uniqueid).
The second check is decided afresh: a DNC-listed second number never reaches
the carrier (today's main replayed the first ALLOW and dialed it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from guard import Cdr, dialguard, numbers, place_calls, render, scenario, tag


async def test_failover_to_a_dnc_number_is_refused(stack, guard, tmp_path: Path) -> None:
    campaign, _ = await guard.campaign("failover")
    busy1, busy2 = numbers(2, prefix="13600")
    dnc, ok = numbers(2)
    dialguard("dnc", "add", dnc)
    injection = render(scenario("guard_failover", "calls.csv"), tmp_path / "calls.csv", campaign=campaign,
                       agent=f"e2e-agent-{tag()}", busy1=busy1, busy2=busy2, dnc=dnc, ok=ok)
    cdr = Cdr.mark(stack.dir)

    run = place_calls(stack, injection, tmp_path, rate=5, limit=1,
                      uac_scenario=scenario("guard_failover", "agents_uac.xml"),
                      uas_scenario=scenario("guard_failover", "carrier_uas.xml"))

    assert run.uac.failed == 0, run.uac.describe()
    # the carrier saw both busy numbers and the control's failover, never the DNC one
    assert Counter(i.number for i in run.invites) == {busy1: 1, busy2: 1, ok: 1}, run.carrier.describe()
    assert Counter((c.number, c.outcome, c.code) for c in run.calls) == \
        {(busy1, "rejected", 403): 1, (busy2, "answered", None): 1}, run.calls
    # the channel's CDR (dst: the first number) ends with the second check's verdict
    rows = cdr.for_numbers({busy1, busy2}, expect=2)
    last = {n: [(r["dialguard_result"], r["dialguard_reasons"], r["hangupcause"]) for r in rs if r["dialguard_result"]]
            for n, rs in rows.items()}
    assert last[busy1] == [("DENY", "dnc", "21")], rows
    assert [v[0] for v in last[busy2]] == ["ALLOW"], rows
