"""Until when every calendar the rules use is known (issue 12: nobody is surprised).

A pure function of (calendars, imported years, now): no I/O. The FastAGI
server and the dialer export it as ``dialguard_calendar_known_seconds`` and
report ``degraded`` on ``/healthz`` from WARN_DAYS before the end;
``dialguard status`` and ``rules status`` warn; ``make demo`` shows it.

What "known" means, per source:

- ``official_workdays`` (CN, chinesecalendar): the official calendar with its
  make-up working days exists only once the State Council has published the
  year's notice, so the package knows up to the last year of its data
  (2026 for chinesecalendar 1.11.0). After that every decision is denied with
  ``holiday`` (SPEC §3) until a year is imported (``dialguard calendar import``).
- ``holidays`` (every other calendar): the package computes its rule-based
  public holidays for any year up to the country's ``end_year`` (2100 in
  holidays 0.109) and returns no holiday at all after it, so it is known until
  31 December of that year. Days declared at short notice (a governor's
  holiday) are not foreseeable by any package: the operator files of SPEC §9
  add them, they do not change how long the calendar is known.

Imported years extend the range only when they follow it without a gap: with
chinesecalendar up to 2026, an imported 2027 makes CN known until 2027-12-31;
an imported 2028 alone changes nothing (2027 is still unknown).

A day ends at midnight in the calendar's zone: Asia/Shanghai for CN; for the
other calendars, whose countries may span many zones, UTC+14, where a day
ends first (the earliest, so the warning is never late).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Iterable, Mapping
from zoneinfo import ZoneInfo

from dialguard.rules import Calendar, Policy

WARN_DAYS = 45
CN_ZONE = "Asia/Shanghai"
EARLIEST_ZONE = "Etc/GMT-14"  # UTC+14 (POSIX sign): the first zone where a day ends


@dataclass(frozen=True)
class CalendarKnown:
    calendar: str  # CN, US-LA: the code SPEC §9 files name
    source: str  # what knows it: "chinesecalendar 1.11.0", "holidays 0.109", "+ imported 2027"
    last_day: date | None  # None: not known at all (a country no package has)
    zone: str
    seconds_left: float  # until the end of last_day in zone; negative once past

    @property
    def days_left(self) -> int:
        """Whole days until the end of the last known day (0 on that day, negative after)."""
        return int(self.seconds_left // 86400)

    @property
    def warn(self) -> bool:
        """Within WARN_DAYS of the end, or past it."""
        return self.seconds_left <= WARN_DAYS * 86400

    def message(self) -> str:
        if self.last_day is None:
            return f"calendar {self.calendar} is not known at all: every decision under it is denied"
        if self.seconds_left <= 0:
            return (f"calendar {self.calendar} is known only until {self.last_day.isoformat()} "
                    f"({self.source}): days after it are unknown and denied (holiday); "
                    f"import the next year (dialguard calendar import)")
        return (f"calendar {self.calendar} is known until {self.last_day.isoformat()} ({self.source}), "
                f"{self.seconds_left / 86400:.1f} days left: import the next year "
                f"(dialguard calendar import) before then")


def calendar_code(cal: Calendar) -> str:
    code = cal.country.upper()
    if cal.subdivision:
        code += "-" + cal.subdivision.upper()
    return code


def calendars_of(policies: Iterable[Policy]) -> list[Calendar]:
    """Every distinct calendar the policies' packs use, in first-seen order."""
    out: list[Calendar] = []
    for policy in policies:
        for _pack, _hours, cal in policy.time_rules:
            if cal is not None and cal not in out:
                out.append(cal)
    return out


@lru_cache(maxsize=1)
def _cn_package() -> tuple[int, str]:
    """The last year chinesecalendar has data for, and its version."""
    import chinese_calendar
    from chinese_calendar import constants

    return max(d.year for d in constants.holidays), f"chinesecalendar {chinese_calendar.__version__}"


@lru_cache(maxsize=256)
def _holidays_package(country: str, subdivision: str | None) -> tuple[int | None, str]:
    import holidays

    label = f"holidays {holidays.__version__}"
    try:
        return holidays.country_holidays(country, subdiv=subdivision).end_year, label
    except NotImplementedError:
        return None, label


def _known(cal: Calendar, imported: Iterable[int]) -> tuple[int | None, str]:
    if cal.mode == "official_workdays":
        last, source = _cn_package()
    else:
        last, source = _holidays_package(cal.country.upper(), cal.subdivision)
    if last is None:
        return None, source
    years = set(imported)
    added = []
    while last + 1 in years:
        last += 1
        added.append(last)
    if added:
        source += " + imported " + ", ".join(str(y) for y in added)
    return last, source


def zone_of(cal: Calendar) -> str:
    return CN_ZONE if cal.country.upper() == "CN" else EARLIEST_ZONE


def known_until(cal: Calendar, now: datetime, imported_years: Iterable[int] = ()) -> CalendarKnown:
    """How long one calendar is known, seen at `now` (timezone-aware)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    last, source = _known(cal, imported_years)
    zone = zone_of(cal)
    if last is None:
        return CalendarKnown(calendar_code(cal), source, None, zone, 0.0)
    last_day = date(last, 12, 31)
    end = datetime.combine(last_day + timedelta(days=1), time(0), ZoneInfo(zone))
    return CalendarKnown(calendar_code(cal), source, last_day, zone, (end - now).total_seconds())


def calendars_known(policies: Iterable[Policy], now: datetime,
                    imported: Mapping[str, Iterable[int]] | None = None) -> list[CalendarKnown]:
    """One entry per calendar code the policies use (the earliest end when a
    code is used in two modes), sorted by code. `imported`: calendar code ->
    the years imported for it (dialguard calendar import)."""
    imported = imported or {}
    by_code: dict[str, CalendarKnown] = {}
    for cal in calendars_of(policies):
        k = known_until(cal, now, imported.get(calendar_code(cal), ()))
        seen = by_code.get(k.calendar)
        if seen is None or k.seconds_left < seen.seconds_left:
            by_code[k.calendar] = k
    return [by_code[c] for c in sorted(by_code)]


def warnings(known: Iterable[CalendarKnown]) -> list[str]:
    """A message for every calendar within WARN_DAYS of its end or past it."""
    return [k.message() for k in known if k.warn]
