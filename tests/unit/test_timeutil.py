"""parse_time (dialguard/timeutil.py) and the reports' bounds (audit/report.py parse_bound): every bad
input a person can type is a ValueError with a message, never another exception (a 500 in the console)."""

from datetime import datetime, timezone

import pytest

from dialguard.audit.report import parse_bound
from dialguard.timeutil import parse_time


def test_parse_time_reads_offsets_as_utc():
    assert parse_time("2026-03-02T10:00:00+08:00") == datetime(2026, 3, 2, 2, tzinfo=timezone.utc)
    assert parse_time("2026-03-02T02:00:00Z") == datetime(2026, 3, 2, 2, tzinfo=timezone.utc)
    assert parse_time("9999-12-31T23:59:59+00:00").year == 9999  # the last time there is, in UTC


@pytest.mark.parametrize("text, words", [
    ("9999-12-31T23:59:59-05:00", "out of range"),  # UTC would be year 10000
    ("0001-01-01T00:00:00+05:00", "out of range"),  # UTC would be year 0
    ("2026-03-02T10:00:00", "no UTC offset"),
    ("tomorrow", "Invalid isoformat"),
])
def test_parse_time_refuses_with_a_value_error(text, words):
    with pytest.raises(ValueError, match=words) as e:
        parse_time(text)
    assert type(e.value) is ValueError


@pytest.mark.parametrize("text, tz, end", [
    ("9999-12-31", "UTC", True),  # the day after the last day
    ("0001-01-01", "Asia/Shanghai", False),  # local midnight is still year 0 in UTC
    ("9999-12-31T23:59:59-05:00", "UTC", False),
])
def test_report_bounds_out_of_range_are_value_errors(text, tz, end):
    with pytest.raises(ValueError, match="out of range") as e:
        parse_bound(text, tz, end=end)
    assert type(e.value) is ValueError
