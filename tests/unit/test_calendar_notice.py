"""The State Council's holiday notice read into a calendar year (calendar_notice.py).

The published notices (tests/data/calendars/cn/) must give exactly the days
chinesecalendar has for their year; anything a notice line says that the
reader cannot account for is refused with that line.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import chinese_calendar
import pytest
from chinese_calendar import constants as cc

from dialguard.calendar_file import CalendarFileError
from dialguard.calendar_notice import notice_year, parse_cn_notice, parse_cn_notice_years

DATA = Path(__file__).resolve().parents[1] / "data" / "calendars" / "cn"
YEARS = (2017, 2025, 2026)


def notice(year: int) -> str:
    return (DATA / f"notice-{year}.txt").read_text(encoding="utf-8")


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if needle in line)


def days_of(year: int):
    d = date(year, 1, 1)
    while d.year == year:
        yield d
        d += timedelta(days=1)


@pytest.mark.parametrize("year", YEARS)
def test_notice_gives_chinesecalendars_days(year):
    cal = parse_cn_notice(notice(year))
    assert (cal.calendar, cal.year) == ("CN", year)
    # chinesecalendar's holidays are every day of the notice's ranges (weekend days in them too)
    # plus the days off in lieu; its workdays are the weekend days worked (上班).
    assert cal.holidays == {d for d in cc.holidays if d.year == year}
    assert cal.working_days == {d for d in cc.workdays if d.year == year}
    assert str(year) in cal.source


@pytest.mark.parametrize("year", YEARS)
def test_notice_calls_on_the_same_days_all_year(year):
    """What matters for calling: SPEC §9's rule on the file's days gives
    chinesecalendar's working days for every day of the year."""
    cal = parse_cn_notice(notice(year))
    for d in days_of(year):
        working = d in cal.working_days or (d.weekday() < 5 and d not in cal.holidays)
        assert working == chinese_calendar.is_workday(d), d


def test_notice_2017_old_wording():
    """星期 instead of 周, 补休 (a day off in lieu), 与周末连休, ranges with no weekday."""
    cal = parse_cn_notice(notice(2017))
    assert {date(2017, 1, 1), date(2017, 1, 2), date(2017, 5, 1)} <= cal.holidays
    assert date(2017, 4, 30) not in cal.holidays  # the weekend 5月1日 joins is just a weekend


def test_notice_2025_range_across_months():
    cal = parse_cn_notice(notice(2025))
    assert {date(2025, 5, 31), date(2025, 6, 1), date(2025, 6, 2)} <= cal.holidays
    # (农历除夕、周二) and (农历正月初七、周二): lunar names accepted, the weekday checked
    assert {date(2025, 1, 28) + timedelta(days=i) for i in range(8)} <= cal.holidays


def test_full_width_punctuation():
    """The notice as printed (full-width ( ) , : and spaces) reads the same."""
    text = notice(2026)
    full = text.translate(str.maketrans({"(": "（", ")": "）", ",": "，", ":": "："}))
    full = full.replace("1月4日", "1月 4日")
    assert full != text
    assert parse_cn_notice(full) == parse_cn_notice(text)


def test_year_from_title_or_argument():
    assert notice_year(notice(2025)) == 2025
    items = "一、元旦:1月1日(周四)至3日(周六)放假调休,共3天。1月4日(周日)上班。\n"
    assert parse_cn_notice(items, year=2026).holidays == {date(2026, 1, d) for d in (1, 2, 3)}
    with pytest.raises(CalendarFileError, match="no year found"):
        parse_cn_notice(items)
    with pytest.raises(CalendarFileError, match="about 2025, not 2026"):
        parse_cn_notice(notice(2025), year=2026)


# The 2023 notice (国办发明电〔2022〕16号, 2022-12-08) starts its New Year holiday in 2022.
NOTICE_2023_HEAD = """国务院办公厅关于2023年部分节假日安排的通知

一、元旦：2022年12月31日至2023年1月2日放假调休，共3天。

二、春节：1月21日至27日放假调休，共7天。1月28日（星期六）、1月29日（星期日）上班。
"""


def test_year_crossing_notice():
    years = parse_cn_notice_years(NOTICE_2023_HEAD)
    assert sorted(years) == [2022, 2023]
    assert years[2022].holidays == {date(2022, 12, 31)}
    assert years[2023].holidays == {date(2023, 1, 1), date(2023, 1, 2)} | {
        date(2023, 1, d) for d in range(21, 28)}
    assert years[2023].working_days == {date(2023, 1, 28), date(2023, 1, 29)}
    for cal in years.values():  # chinesecalendar agrees day by day
        assert all(chinese_calendar.is_holiday(d) for d in cal.holidays)
        assert all(chinese_calendar.is_workday(d) for d in cal.working_days)
    # parse_cn_notice gives one year only: it refuses rather than drop 2022-12-31
    with pytest.raises(CalendarFileError, match="also changes 2022") as exc:
        parse_cn_notice(NOTICE_2023_HEAD)
    assert exc.value.line == 3 and "元旦" in exc.value.text


# -- refused, with the line -------------------------------------------------------------
def refused(text: str, needle: str, match: str) -> CalendarFileError:
    with pytest.raises(CalendarFileError, match=match) as exc:
        parse_cn_notice(text)
    assert exc.value.line == line_of(text, needle), str(exc.value)
    assert needle in exc.value.text
    assert f"line {exc.value.line}" in str(exc.value)
    return exc.value


def test_weekday_mismatch_refused():
    text = notice(2026).replace("10月1日(周四)", "10月1日(周五)")
    err = refused(text, "七、国庆节", r"2026-10-01 is a Thursday, not 周五")
    assert err.line == 19


def test_weekday_mismatch_old_wording_refused():
    text = notice(2017).replace("9月30日(星期六)", "9月30日(星期日)")
    refused(text, "9月30日(星期日)", "2017-09-30 is a Saturday, not 星期日")


def test_unaccounted_clause_refused():
    text = notice(2025).replace("放假1天,不调休", "放假1天,视情况调休")
    refused(text, "视情况调休", "cannot account for '视情况调休'")


def test_unreadable_item_refused():
    text = notice(2026).replace("6月19日(周五)至21日(周日)放假", "6月19日(周五)起放假")
    refused(text, "五、端午节", "cannot account for")


def test_unknown_text_in_parentheses_refused():
    text = notice(2025).replace("(农历除夕、周二)", "(除夕、周二)")
    refused(text, "二、春节", r"cannot read \(除夕、周二\)")


def test_impossible_date_refused():
    text = notice(2026).replace("2月28日(周六)上班", "2月30日(周六)上班")
    refused(text, "2月30日", "2026年2月30日 is not a date")


def test_one_day_count_mismatch_refused():
    text = notice(2025).replace("1月1日(周三)放假1天", "1月1日(周三)放假2天")
    refused(text, "放假2天", "2天 but 1 day")


def test_count_mismatch_refused():
    text = notice(2026).replace("共9天", "共8天")
    refused(text, "共8天", "共8天 but 9 day")


def test_working_day_on_a_weekday_refused():
    text = notice(2026).replace("5月9日(周六)上班", "5月8日(周五)上班")
    refused(text, "5月8日", "2026-05-08 .Friday. is a working day already")


def test_day_listed_twice_refused():
    text = notice(2026).replace("9月25日(周五)至27日(周日)放假,共3天", "9月25日(周五)至10月1日(周四)放假,共7天")
    refused(text, "七、国庆节", "2026-10-01 is listed twice")


def test_range_backwards_refused():
    text = notice(2026).replace("4月4日(周六)至6日(周一)", "4月6日(周一)至4日(周六)")
    refused(text, "三、清明节", "range ends before it starts")


def test_unnumbered_holiday_line_refused():
    text = notice(2026).replace("四、劳动节:", "劳动节:")
    refused(text, "劳动节:5月1日", "looks like a holiday item")


def test_far_year_refused():
    text = notice(2026).replace("1月4日(周日)上班", "2024年1月6日(周六)上班")
    with pytest.raises(CalendarFileError, match="not next to the notice's year 2026") as exc:
        parse_cn_notice(text)
    assert exc.value.line == 7


def test_text_without_items_refused():
    with pytest.raises(CalendarFileError, match="no holiday items"):
        parse_cn_notice("国务院办公厅关于2027年部分节假日安排的通知\n\n国务院办公厅\n")
