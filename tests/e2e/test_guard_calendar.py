"""A real call on 2027-01-04 (a working Monday in a year chinesecalendar does not
know): refused until the operator imports the year, then through to the carrier.

The stack's live guard decides on its test clock; the calendar is imported with
the real CLI, as docs/OPERATIONS.md ("A new calendar year") tells an operator.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from guard import REPO_ROOT, Cdr, dialguard, numbers, place_calls, render, scenario, tag

MON_2027 = datetime(2027, 1, 4, 2, tzinfo=timezone.utc)  # 10:00 Shanghai
YEAR_FILE = REPO_ROOT / "tests" / "scenarios" / "calendars" / "cn-2027-test.yaml"


async def test_a_2027_call_goes_through_once_the_year_is_imported(stack, guard, tmp_path: Path) -> None:
    redis, key = guard.engine.redis, guard.engine.keys.calendars
    saved = await redis.dump(key)  # the live store's calendars, put back afterwards
    await redis.delete(key)
    try:
        campaign, _ = await guard.campaign("cal2027")
        await guard.set_clock(MON_2027)
        before, after = numbers(2)
        calls = scenario("guard_outside_hours", "calls.csv")  # one call: {number};{campaign};{agent}
        cdr = Cdr.mark(stack.dir)

        unknown = place_calls(stack, render(calls, tmp_path / "a.csv", campaign=campaign,
                                            agent=f"e2e-agent-{tag()}", number=before), tmp_path / "a")
        assert unknown.uac.failed == 0, unknown.uac.describe()
        assert unknown.invites == [], unknown.carrier.describe()
        (row,) = cdr.for_numbers({before}, expect=1)[before]
        assert (row["dialguard_result"], row["dialguard_reasons"], row["hangupcause"]) == ("DENY", "holiday", "21")

        out = dialguard("calendar", "import", "cn", str(YEAR_FILE), "--why", "e2e")
        assert "2027-01-30 Sat  working day" in out.stdout and "calendar version" in out.stdout

        known = place_calls(stack, render(calls, tmp_path / "b.csv", campaign=campaign,
                                          agent=f"e2e-agent-{tag()}", number=after), tmp_path / "b")
        assert known.uac.failed == 0, known.uac.describe()
        assert [i.number for i in known.invites] == [after], known.carrier.describe()
        (row,) = cdr.for_numbers({after}, expect=1)[after]
        assert (row["dialguard_result"], row["dialguard_reasons"], row["disposition"]) == ("ALLOW", "", "ANSWERED")
    finally:
        await redis.delete(key)
        if saved is not None:
            await redis.restore(key, 0, saved)
