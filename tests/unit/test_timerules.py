"""Callee-local time: half-open hours, holidays with 调休, unknown years, DST, several zones."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dialguard.decision.plan import CheckMeta
from dialguard.rules import Policy, load_pack_file
from dialguard.timerules import local_midnight, next_allowed, next_window, time_reasons

UTC = timezone.utc
SH = ("Asia/Shanghai",)


def utc(*a):
    return datetime(*a, tzinfo=UTC)


def pack(tmp_path: Path, text: str) -> Policy:
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return Policy([load_pack_file(p)])


CN = Policy.load("cn-default")


def reasons(policy, zones, at):
    return time_reasons(policy, zones, at)[0]


def test_hours_are_half_open():
    # Mon 2026-11-23, Shanghai = UTC+8
    assert reasons(CN, SH, utc(2026, 11, 23, 0, 59, 59)) == {"outside_hours"}
    assert reasons(CN, SH, utc(2026, 11, 23, 1, 0, 0)) == set()       # 09:00:00
    assert reasons(CN, SH, utc(2026, 11, 23, 9, 59, 59)) == set()      # 17:59:59
    assert reasons(CN, SH, utc(2026, 11, 23, 10, 0, 0)) == {"outside_hours"}  # 18:00:00


def test_cn_holidays_and_makeup_working_days():
    assert reasons(CN, SH, utc(2026, 10, 1, 2)) == {"holiday"}          # National Day, a Thursday
    assert reasons(CN, SH, utc(2026, 11, 22, 2)) == {"holiday"}         # plain Sunday
    assert reasons(CN, SH, utc(2026, 10, 10, 2)) == set()               # Saturday made a working day
    assert reasons(CN, SH, utc(2026, 1, 4, 2)) == set()                 # Sunday made a working day


def test_year_outside_the_official_calendar_is_denied_with_a_message():
    r, why = time_reasons(CN, SH, utc(2027, 3, 2, 2))
    assert r == {"holiday"} and "2027" in why["holiday"] and "not known" in why["holiday"]
    assert next_allowed(CN, SH, utc(2026, 12, 31, 10)) is None  # nothing knowable after 2026-12-31 18:00


def test_next_time_past_an_unknown_year_is_unknown_not_never():
    # 2026-12-31 18:30 Beijing: today's hours are over, 2027 is not known (no file imported)
    nxt, why = next_window(CN, SH, utc(2026, 12, 31, 10, 30))
    assert nxt is None and why.startswith("the official Chinese calendar for 2027 is not known")
    nxt, why = next_window(CN, SH, utc(2027, 1, 4, 2))  # inside the unknown year
    assert nxt is None and "2027 is not known" in why
    # within the known year: a time, nothing unknown
    assert next_window(CN, SH, utc(2026, 12, 30, 11)) == (utc(2026, 12, 31, 1), None)


def test_unknown_year_can_be_allowed_by_rules(tmp_path):
    pol = pack(tmp_path, "pack: x\nhours: {zone: Asia/Shanghai, weekly: {all: ['09:00-18:00']}}\n"
                         "calendar: {country: CN, mode: official_workdays, unknown_year: allow}\n")
    assert reasons(pol, SH, utc(2027, 3, 2, 2)) == set()


def test_cn_chinese_calendar_agrees_with_holidays_library():
    import chinese_calendar
    import holidays

    for year in (2024, 2025, 2026):
        for day in holidays.China(years=year):
            assert not chinese_calendar.is_workday(day), day


def test_next_allowed_skips_holidays_and_nights():
    # Wed 2026-09-30 19:00 Shanghai -> holidays Oct 1-7 -> Thu Oct 8? (2026: Oct 1-7 off, Oct 10 make-up)
    got = next_allowed(CN, SH, utc(2026, 9, 30, 11))
    assert got == utc(2026, 10, 8, 1)
    assert next_allowed(CN, SH, utc(2026, 11, 23, 2)) == utc(2026, 11, 23, 2)   # already allowed


US = """pack: us
hours: {zone: callee, weekly: {all: ['08:00-21:00']}}
"""


@pytest.mark.parametrize("at,ok", [
    (utc(2026, 3, 8, 11, 59, 59), False),   # 07:59:59 EDT on the spring-forward day
    (utc(2026, 3, 8, 12, 0, 0), True),      # 08:00 EDT
    (utc(2026, 3, 7, 12, 30), False),       # 07:30 EST the day before
    (utc(2026, 3, 7, 13, 0), True),         # 08:00 EST
    (utc(2026, 11, 1, 12, 59, 59), False),  # 07:59:59 EST after fall-back
    (utc(2026, 11, 1, 13, 0), True),        # 08:00 EST
    (utc(2026, 11, 2, 1, 59, 59), True),    # 20:59:59 EST
    (utc(2026, 11, 2, 2, 0), False),        # 21:00:00 EST
])
def test_us_dst_transitions(tmp_path, at, ok):
    pol = pack(tmp_path, US)
    assert (reasons(pol, ("America/New_York",), at) == set()) is ok


def test_next_allowed_across_dst(tmp_path):
    pol = pack(tmp_path, US)
    ny = ("America/New_York",)
    assert next_allowed(pol, ny, utc(2026, 3, 8, 2)) == utc(2026, 3, 8, 12)   # Sat 21:00 EST -> Sun 08:00 EDT
    assert next_allowed(pol, ny, utc(2026, 11, 1, 1)) == utc(2026, 11, 1, 13)  # Sat 21:00 EDT -> Sun 08:00 EST


def test_several_zones_must_all_pass(tmp_path):
    pol = pack(tmp_path, US)
    idaho = ("America/Boise", "America/Los_Angeles")  # +1 208: Mountain and Pacific
    # 08:30 Mountain = 07:30 Pacific: denied until Pacific reaches 08:00
    at = utc(2026, 6, 1, 14, 30)
    assert reasons(pol, idaho, at) == {"outside_hours"}
    assert next_allowed(pol, idaho, at) == utc(2026, 6, 1, 15, 0)
    # 20:30 Pacific = 21:30 Mountain: denied until Mountain's next morning
    at = utc(2026, 6, 2, 3, 30)
    assert reasons(pol, idaho, at) == {"outside_hours"}
    assert next_allowed(pol, idaho, at) == utc(2026, 6, 2, 15, 0)


def test_phoenix_has_no_dst(tmp_path):
    pol = pack(tmp_path, US)
    az = ("America/Phoenix",)
    assert reasons(pol, az, utc(2026, 1, 5, 15)) == set()          # 08:00 MST
    assert reasons(pol, az, utc(2026, 7, 5, 15)) == set()          # still 08:00 MST in July
    assert reasons(pol, az, utc(2026, 7, 5, 14, 59, 59)) == {"outside_hours"}


def test_unknown_zone_without_default_is_unknown_timezone(tmp_path):
    pol = pack(tmp_path, US)
    assert reasons(pol, (), utc(2026, 6, 1, 15)) == {"unknown_timezone"}
    pol2 = pack(tmp_path, "pack: x\nhours: {zone: callee, default_zone: America/Chicago, weekly: {all: ['08:00-21:00']}}\n")
    assert reasons(pol2, (), utc(2026, 6, 1, 15)) == set()


def test_us_public_holiday_calendar(tmp_path):
    pol = pack(tmp_path, US + "calendar: {country: US}\n")
    ny = ("America/New_York",)
    assert reasons(pol, ny, utc(2026, 7, 4, 16)) == {"holiday"}
    assert reasons(pol, ny, utc(2026, 7, 6, 16)) == set()


def test_day_window_eligibility_uses_local_days():
    meta = CheckMeta("post_conversation_quiet", days=7, zones=("America/New_York",))
    # conversation Mon 2026-03-02 20:00 EST (already Tuesday in UTC): day 1 is Monday,
    # so calls are allowed again from Mon 2026-03-09 00:00 local (EDT from Mar 8).
    conv = utc(2026, 3, 3, 1)
    assert meta.eligible_at(conv.timestamp() * 1000) == utc(2026, 3, 9, 4)
    assert local_midnight(conv, "America/New_York", 6) == utc(2026, 2, 24, 5)


def test_rolling_eligibility_is_oldest_plus_window():
    meta = CheckMeta("attempt_cap", rolling=timedelta(hours=24))
    assert meta.eligible_at(utc(2026, 3, 2, 14).timestamp() * 1000) == utc(2026, 3, 3, 14)
    assert CheckMeta("attempt_cap").eligible_at(-1) is None


# -- imported calendars (issue 12) ---------------------------------------------------
def _cn_year(year, holidays=(), working_days=()):
    from datetime import date

    from dialguard.calendar_file import CalendarFile
    from dialguard.calendars import Calendars

    return Calendars(1, (CalendarFile("CN", year, frozenset(date.fromisoformat(d) for d in holidays),
                                      frozenset(date.fromisoformat(d) for d in working_days)),))


def test_an_imported_cn_year_is_known_as_the_file_states_it():
    from dialguard.timerules import time_check

    y = _cn_year(2027, ["2027-01-01", "2027-02-09"], ["2027-01-30"])
    assert time_check(CN, SH, utc(2027, 1, 4, 2), y) == (set(), {}, frozenset())   # Monday
    assert reasons_with(y, utc(2027, 1, 1, 2)) == {"holiday"}     # listed holiday (Fri)
    assert reasons_with(y, utc(2027, 1, 9, 2)) == {"holiday"}     # a plain Saturday
    assert reasons_with(y, utc(2027, 1, 30, 2)) == set()          # listed working Saturday
    assert reasons_with(y, utc(2027, 2, 9, 2)) == {"holiday"}
    # next_allowed runs through the imported year, and stops where it ends
    assert next_allowed(CN, SH, utc(2027, 2, 9, 2), y) == utc(2027, 2, 10, 1)
    assert next_allowed(CN, SH, utc(2027, 12, 31, 10), y) is None


def reasons_with(imported, at, policy=CN):
    return time_reasons(policy, SH, at, imported)[0]


def test_an_imported_file_overrides_a_known_year_day_by_day():
    """SPEC section 9: for a year the packaged data knows, the file's days override it;
    the days it does not list keep the package's word. Before, the file replaced the
    whole year: a one-day correction turned the Spring Festival and National Day into
    calling days."""
    y = _cn_year(2026, ["2026-10-09"], ["2026-10-10"])
    assert reasons(CN, SH, utc(2026, 10, 9, 2)) == set()  # a Friday, working for the package
    assert reasons_with(y, utc(2026, 10, 9, 2)) == {"holiday"}  # the file's holiday
    assert reasons_with(y, utc(2026, 10, 10, 2)) == set()  # the file's working Saturday
    # not listed: chinesecalendar's National Day (10-07) and Spring Festival (02-17) stand
    assert reasons_with(y, utc(2026, 10, 7, 2)) == {"holiday"}
    assert reasons_with(y, utc(2026, 2, 17, 2)) == {"holiday"}
    # a package holiday taken out: listed as a working day
    out = _cn_year(2026, [], ["2026-10-07"])
    assert reasons_with(out, utc(2026, 10, 7, 2)) == set()
    # another calendar's years change nothing for CN
    other = _cn_year(2025, ["2025-03-03"])
    assert reasons_with(other, utc(2026, 10, 7, 2)) == {"holiday"}


def test_a_subdivision_file_adds_days_on_top_of_the_holidays_package(tmp_path):
    from datetime import date

    from dialguard.calendar_file import CalendarFile
    from dialguard.calendars import Calendars

    la = pack(tmp_path, "pack: la\nhours: {zone: America/Chicago, weekly: {all: ['08:00-20:00']}}\n"
                        "calendar: {country: US, subdivision: LA}\n")
    chi = ("America/Chicago",)
    gov = Calendars(1, (CalendarFile("US-LA", 2026, frozenset({date(2026, 12, 24)}),
                                     frozenset({date(2026, 12, 25)})),))
    noon = lambda d: utc(2026, 12, d, 18)  # noqa: E731 - 12:00 CST
    assert time_reasons(la, chi, noon(24))[0] == set() and time_reasons(la, chi, noon(25))[0] == {"holiday"}
    assert time_reasons(la, chi, noon(24), gov)[0] == {"holiday"}   # a governor's day off
    assert time_reasons(la, chi, noon(25), gov)[0] == set()          # a package holiday taken out
    assert time_reasons(la, chi, noon(28), gov)[0] == set()


def test_unknown_year_weekdays_estimates_monday_to_friday_and_says_so(tmp_path):
    from dialguard.timerules import time_check

    pol = pack(tmp_path, "pack: x\nhours: {zone: Asia/Shanghai, weekly: {all: ['09:00-18:00']}}\n"
                         "calendar: {country: CN, mode: official_workdays, unknown_year: weekdays}\n")
    r, why, est = time_check(pol, SH, utc(2027, 1, 4, 2))
    assert (r, est) == (set(), frozenset({"CN"}))
    r, why, est = time_check(pol, SH, utc(2027, 1, 9, 2))  # Saturday
    assert r == {"holiday"} and est == {"CN"} and "estimated Monday to Friday" in why["holiday"]
    assert time_check(pol, SH, utc(2027, 1, 9, 12))[0] == {"holiday", "outside_hours"}
    assert next_allowed(pol, SH, utc(2027, 1, 9, 2)) == utc(2027, 1, 11, 1)
    # the pack's hours still apply; a known year is no estimate
    assert time_check(pol, SH, utc(2026, 11, 23, 2))[2] == frozenset()
    # an imported year ends the estimate
    assert time_check(pol, SH, utc(2027, 1, 4, 2), _cn_year(2027, ["2027-01-04"]))[:3:2] == (
        {"holiday"}, frozenset())


def test_engine_time_cache_is_per_calendar_version():
    from dialguard.config import Settings
    from dialguard.engine import Engine

    eng = Engine(None, Settings(), CN, prefix="dg")
    at = utc(2027, 1, 4, 2)
    assert eng._time_check(CN, SH, at)[0] == {"holiday"}
    assert eng._time_check(CN, SH, at, _cn_year(2027, ["2027-01-01"]))[0] == set()
    assert eng._time_check(CN, SH, at, _cn_year(2027, ["2027-01-04"]))[0] == {"holiday"}


def test_the_shipped_us_la_pack_takes_a_governors_day_off():
    from datetime import date

    from dialguard.calendar_file import CalendarFile
    from dialguard.calendars import Calendars, horizons

    la = Policy.load("us-la")
    chi = ("America/Chicago",)
    gov = Calendars(1, (CalendarFile("US-LA", 2026, frozenset({date(2026, 12, 24)})),))
    at = utc(2026, 12, 24, 18)  # Thursday 12:00 CST
    assert "holiday" not in time_reasons(la, chi, at)[0]
    r, why = time_reasons(la, chi, at, gov)
    assert "holiday" in r and "not a calling day in US-LA" in why["holiday"]
    assert horizons(la, gov) == {"US-LA": None}  # the holidays package computes every year
