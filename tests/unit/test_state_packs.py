"""US state packs: the holiday lists they take from the pinned `holidays` package
(written out in each pack's notes) and the fixed Central Standard Time clock of
Mississippi. The replays in tests/scenarios/packs/ test every edge end to end."""

from datetime import date, datetime, timezone

import pytest

from dialguard.rules import Policy, resolve_pack
from dialguard.timerules import _holiday_set, time_reasons

UTC = timezone.utc

# 2026 non-calling days as each pack's notes list them (observed days included).
HOLIDAYS_2026 = {
    "us-la": ["01-01", "01-19", "02-16", "02-17", "04-03", "05-25", "06-19", "07-03", "07-04", "09-07",
              "11-03", "11-11", "11-26", "12-25"],
    "us-al": ["01-01", "01-19", "02-16", "04-27", "05-25", "06-01", "06-19", "07-03", "07-04", "09-07",
              "10-12", "11-11", "11-26", "12-25"],
}


@pytest.mark.parametrize("name", sorted(HOLIDAYS_2026))
def test_state_holidays_are_those_the_pack_notes_list(name):
    cal = resolve_pack(name).calendar
    got = sorted(d for d in _holiday_set(cal.country, cal.subdivision, 2026))
    assert got == [date.fromisoformat(f"2026-{md}") for md in HOLIDAYS_2026[name]]
    note = next(n for n in resolve_pack(name).notes if "2026:" in n)
    for md in HOLIDAYS_2026[name]:
        month, day = int(md[:2]), int(md[3:])
        assert date(2026, month, day).strftime("%b ") + str(day) in note


@pytest.mark.parametrize("name", ["us-ok", "us-md", "us-wa", "us-ms", "us-tx"])
def test_packs_without_a_holiday_rule_have_no_calendar(name):
    assert resolve_pack(name).calendar is None


def test_mississippi_keeps_central_standard_time_all_year():
    ms = Policy.load("us-ms")
    chicago = ("America/Chicago",)
    # Mon 2026-07-06: 08:30 CDT is 07:30 CST, still closed; 09:00 CDT opens.
    assert time_reasons(ms, chicago, datetime(2026, 7, 6, 13, 30, tzinfo=UTC))[0] == {"outside_hours"}
    assert time_reasons(ms, chicago, datetime(2026, 7, 6, 14, 0, tzinfo=UTC))[0] == set()
    # the callee's zone plays no part: a number in Los Angeles gets the same answer
    la = ("America/Los_Angeles",)
    assert time_reasons(ms, la, datetime(2026, 7, 7, 1, 59, 59, tzinfo=UTC))[0] == set()   # 19:59:59 CST
    assert time_reasons(ms, la, datetime(2026, 7, 7, 2, 0, 0, tzinfo=UTC))[0] == {"outside_hours"}
    # winter: CST is the local clock
    assert time_reasons(ms, chicago, datetime(2026, 1, 12, 14, 0, tzinfo=UTC))[0] == set()
    assert time_reasons(ms, chicago, datetime(2026, 1, 12, 13, 59, 59, tzinfo=UTC))[0] == {"outside_hours"}


def test_texas_sunday_opens_at_noon():
    tx = Policy.load("us-tx")
    dallas = ("America/Chicago",)
    assert time_reasons(tx, dallas, datetime(2026, 4, 12, 16, 59, 59, tzinfo=UTC))[0] == {"outside_hours"}
    assert time_reasons(tx, dallas, datetime(2026, 4, 12, 17, 0, tzinfo=UTC))[0] == set()
    assert time_reasons(tx, dallas, datetime(2026, 4, 11, 14, 0, tzinfo=UTC))[0] == set()   # Sat 09:00
