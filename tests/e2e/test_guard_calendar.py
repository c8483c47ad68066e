"""A real call on 2027-01-04 (a working Monday in a year chinesecalendar does not
know): refused until the operator imports the year, then through to the carrier.

The stack's live guard decides on its test clock; the calendar is imported with
the real CLI, as docs/OPERATIONS.md ("A new calendar year") tells an operator.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from dialguard.calendars import CalendarStore, Calendars
from guard import REPO_ROOT, Cdr, dialguard, numbers, place_calls, render, scenario, tag

MON_2027 = datetime(2027, 1, 4, 2, tzinfo=timezone.utc)  # 10:00 Shanghai
YEAR_FILE = REPO_ROOT / "tests" / "scenarios" / "calendars" / "cn-2027-test.yaml"


async def test_a_2027_call_goes_through_once_the_year_is_imported(stack, guard, tmp_path: Path) -> None:
    # The live store's calendar versions are only added to (a stored version never
    # changes: the running FastAGI server keeps what it loaded), and the version
    # in effect before is put back afterwards.
    store = CalendarStore(guard.engine.redis, guard.engine.keys)
    before = await store.current()
    if before.get("CN", 2027) is not None:  # an earlier run left 2027 in effect
        await store.publish(Calendars(0, tuple(f for f in before.files if (f.calendar, f.year) != ("CN", 2027))),
                            why="e2e: 2027 unknown again")
    try:
        campaign, _ = await guard.campaign("cal2027")
        await guard.set_clock(MON_2027)
        first, second = numbers(2)
        calls = scenario("guard_outside_hours", "calls.csv")  # one call: {number};{campaign};{agent}
        cdr = Cdr.mark(stack.dir)

        unknown = place_calls(stack, render(calls, tmp_path / "a.csv", campaign=campaign,
                                            agent=f"e2e-agent-{tag()}", number=first), tmp_path / "a")
        assert unknown.uac.failed == 0, unknown.uac.describe()
        assert unknown.invites == [], unknown.carrier.describe()
        (row,) = cdr.for_numbers({first}, expect=1)[first]
        assert (row["dialguard_result"], row["dialguard_reasons"], row["hangupcause"]) == ("DENY", "holiday", "21")

        out = dialguard("calendar", "import", "cn", str(YEAR_FILE), "--why", "e2e")
        assert "2027-01-30 Sat  working day" in out.stdout and "calendar version" in out.stdout

        known = place_calls(stack, render(calls, tmp_path / "b.csv", campaign=campaign,
                                          agent=f"e2e-agent-{tag()}", number=second), tmp_path / "b")
        assert known.uac.failed == 0, known.uac.describe()
        assert [i.number for i in known.invites] == [second], known.carrier.describe()
        (row,) = cdr.for_numbers({second}, expect=1)[second]
        assert (row["dialguard_result"], row["dialguard_reasons"], row["disposition"]) == ("ALLOW", "", "ANSWERED")
    finally:
        if before.version:
            await store.activate(before.version, why="e2e: back as before")
        else:
            await store.publish(Calendars(0, ()), why="e2e: back to no imported year")
