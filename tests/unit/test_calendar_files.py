"""Calendar files (SPEC §9) and until when a calendar is known (dialguard/calendars.py)."""

from __future__ import annotations

from datetime import date

import pytest

from dialguard.calendar_file import CalendarFile, CalendarFileError
from dialguard.calendars import NO_CALENDARS, Calendars, describe, horizons, known_until, load_yaml, read_file
from dialguard.rules import Policy

CN_2027 = """calendar: CN
year: 2027
holidays: [2027-01-01, 2027-02-06, 2027-02-07]
working_days:
  - 2027-02-20
source: "test notice"
"""


def test_a_year_is_read_with_every_field():
    cf = load_yaml(CN_2027)
    assert cf == CalendarFile("CN", 2027, frozenset({date(2027, 1, 1), date(2027, 2, 6), date(2027, 2, 7)}),
                              frozenset({date(2027, 2, 20)}), "test notice")
    lines = describe(cf)
    assert lines[0].startswith("CN 2027: 3 holiday(s), 1 working day(s)")
    assert "  2027-02-20 Sat  working day" in lines
    assert "  2027-01-01 Fri  holiday" in lines


def test_a_subdivision_calendar_is_read():
    cf = load_yaml("calendar: us-la\nyear: 2026\nholidays: [2026-12-24]\n")
    assert (cf.calendar, cf.year, cf.working_days) == ("US-LA", 2026, frozenset())


@pytest.mark.parametrize("text,line,message", [
    ("calendar: CN\nyear: 2027\nholidays: [2027-01-01\n", 4, "invalid YAML"),
    ("calendar: CN\nyear: 2027\nholiday: [2027-01-01]\n", 3, "unknown key 'holiday'"),
    ("calendar: CN\nyear: 2027\nyear: 2028\nholidays: [2027-01-01]\n", 3, "given twice"),
    ("calendar: CN\nyear: 2027\nholidays:\n  - 2027-01-01\n  - 2027-02-30\n", 5, "day is out of range"),
    ("calendar: CN\nyear: 2027\nholidays:\n  - 2027-01-01\n  - 1/2/2027\n", 5, "is not a date"),
    ("calendar: CN\nyear: 2027\nholidays:\n  - 2026-12-31\n", 4, "not in 2027"),
    ("calendar: CN\nyear: 2027\nholidays: [2027-01-01, 2027-01-01]\n", 3, "listed twice"),
    ("calendar: CN\nyear: 2027\nholidays: [2027-02-20]\nworking_days: [2027-02-20]\n", 4,
     "both in holidays and in working_days"),
    ("calendar: CN\nyear: 2027\nholidays: [2027-01-01]\nworking_days: [2027-02-22]\n", 4, "is a Mon"),
    ("calendar: XX\nyear: 2027\nholidays: [2027-01-01]\n", 1, "no country XX"),
    ("calendar: US-ZZ\nyear: 2027\nholidays: [2027-01-01]\n", 1, "no subdivision ZZ"),
    ("calendar: CN\nyear: 27\nholidays: [2027-01-01]\n", 2, "not a year"),
    ("year: 2027\nholidays: [2027-01-01]\n", 1, "missing 'calendar'"),
    ("calendar: CN\nyear: 2027\n", 1, "nothing to import"),
    ("calendar: CN\nyear: 2027\nworking_days: [2027-02-20]\n", 1, "without holidays"),
    ("- 2027-01-01\n", 1, "expected a mapping"),
])
def test_anything_unaccounted_for_is_refused_with_its_line(text, line, message):
    with pytest.raises(CalendarFileError) as exc:
        load_yaml(text)
    assert exc.value.line == line, str(exc.value)
    assert message in str(exc.value)


def test_the_file_must_be_for_the_calendar_named():
    with pytest.raises(CalendarFileError, match="for calendar CN, not US-LA"):
        read_file(CN_2027, "us-la")
    assert read_file(CN_2027, "cn").year == 2027


def test_known_until_extends_the_package_year_by_contiguous_imported_years():
    assert known_until("CN") == date(2026, 12, 31)  # chinesecalendar 1.11 covers 2026
    y27 = load_yaml(CN_2027)
    y29 = load_yaml(CN_2027.replace("2027", "2029").replace("2029-02-20", "2029-02-17"))
    assert known_until("CN", Calendars(1, (y27,))) == date(2027, 12, 31)
    assert known_until("CN", Calendars(2, (y29,))) == date(2026, 12, 31)  # 2028 still unknown
    assert known_until("CN", Calendars(3, (y27, y29))) == date(2026, 12, 31).replace(year=2027)
    assert known_until("US-LA", NO_CALENDARS) is None  # the holidays package computes every year


def test_horizons_name_every_calendar_the_rules_use():
    assert horizons(Policy.load("cn-default"), Calendars(1, (load_yaml(CN_2027),))) == {"CN": date(2027, 12, 31)}
    assert horizons(Policy.load("us-tcpa")) == {}


def test_a_version_round_trips_through_its_bundle():
    import json

    c = Calendars(0, (load_yaml(CN_2027),))
    b = c.bundle()
    back = Calendars.from_json(json.dumps({"version": 4, **b}), json.dumps({"actor": "ops", "at": 5}))
    assert (back.version, back.actor, back.hash, back.files) == (4, "ops", c.hash, c.files)
    replaced = back.with_file(load_yaml(CN_2027.replace("2027-02-07]", "2027-02-08]")))
    assert len(replaced.files) == 1 and date(2027, 2, 8) in replaced.get("CN", 2027).holidays


def test_a_notice_text_goes_to_the_notice_parser_and_yaml_does_not(monkeypatch):
    """read_file tells the two apart by content (dialguard.calendar_notice reads notices)."""
    import sys
    import types

    seen = []
    fake = types.ModuleType("dialguard.calendar_notice")

    def parse_cn_notice(text):
        seen.append(text)
        return load_yaml(CN_2027)

    fake.parse_cn_notice = parse_cn_notice
    monkeypatch.setitem(sys.modules, "dialguard.calendar_notice", fake)
    notice = "国务院办公厅关于2027年部分节假日安排的通知\n一、元旦：1月1日（周五）至3日（周日）放假调休，共3天。\n"
    assert read_file(notice, "CN").year == 2027 and seen == [notice]
    assert read_file(CN_2027, "CN").source == "test notice" and len(seen) == 1  # YAML, even with 月 in it
    assert read_file(CN_2027.replace("test notice", "1月1日"), "CN").year == 2027 and len(seen) == 1
    monkeypatch.setitem(sys.modules, "dialguard.calendar_notice", None)  # a build without the parser
    with pytest.raises(CalendarFileError, match="cannot read notices"):
        read_file(notice, "CN")
