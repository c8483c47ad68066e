"""Callee-local time rules: allowed hours, holiday calendars, day boundaries.

Pure functions of (rules, zones, instant): no I/O, so they run before the one
Redis call and are easy to test at their edges.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as pyholidays

from dialguard.calendars import NO_CALENDARS, Calendars, code_of
from dialguard.rules import Calendar, Hours, Policy
from dialguard.timeutil import UTC

HORIZON_DAYS = 400


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


class UnknownYear(Exception):
    pass


@lru_cache(maxsize=4096)
def _cn_workday(d: date) -> bool:
    import chinese_calendar  # official calendar with 调休 make-up working days

    try:
        return bool(chinese_calendar.is_workday(d))
    except NotImplementedError as exc:
        raise UnknownYear(f"the official Chinese calendar for {d.year} is not known ({exc})") from None


@lru_cache(maxsize=256)
def _holiday_set(country: str, subdivision: str | None, year: int):
    try:
        return pyholidays.country_holidays(country, subdiv=subdivision, years=year)
    except NotImplementedError:
        raise UnknownYear(f"no holiday calendar for {country}") from None


def calling_day(d: date, cal: Calendar | None, imported: Calendars = NO_CALENDARS) -> bool:
    """True if d is a calling day; raises UnknownYear when the calendar cannot tell.

    `imported`: the calendar version in effect (dialguard/calendars.py); a year
    imported for the pack's calendar wins over the packaged data.
    """
    if cal is None:
        return True
    f = imported.get(code_of(cal), d.year) if imported.files else None
    # An imported year's days override the packaged data one by one (SPEC section 9;
    # calendar_file refuses a day listed as both): a one-day correction never turns the
    # package's other holidays (the Spring Festival) into calling days.
    if f is not None:
        if d in f.holidays:
            return False
        if d in f.working_days:
            return True
    if cal.mode == "official_workdays":
        try:
            return _cn_workday(d)
        except UnknownYear:
            if f is None:
                raise
            return d.weekday() < 5  # a year only the file knows: the weekday rule for the rest
    return d not in _holiday_set(cal.country.upper(), cal.subdivision, d.year)


def day_status(d: date, cal: Calendar | None, imported: Calendars = NO_CALENDARS) -> tuple[bool, bool]:
    """(calling day, estimated): calling_day, with the pack's `unknown_year` applied
    to a year the calendar does not know (estimated=True); raises UnknownYear when
    the pack says deny."""
    try:
        return calling_day(d, cal, imported), False
    except UnknownYear:
        if cal is None or cal.unknown_year == "deny":
            raise
        if cal.unknown_year == "weekdays":
            return d.weekday() < 5, True
        return True, True  # allow


def zones_for(hours: Hours | None, callee_zones: tuple[str, ...]) -> tuple[str, ...]:
    """The zones a pack's time rules are evaluated in; () means unknown."""
    if hours is not None and hours.zone != "callee":
        return (hours.zone,)
    if callee_zones:
        return callee_zones
    if hours is not None and hours.default_zone:
        return (hours.default_zone,)
    return ()


def _check_local(local: datetime, hours: Hours | None, cal: Calendar | None,
                 imported: Calendars) -> tuple[set[str], bool]:
    reasons = set()
    estimated = False
    try:
        ok, estimated = day_status(local.date(), cal, imported)
        if not ok:
            reasons.add("holiday")
    except UnknownYear:
        reasons.add("holiday")
    if hours is not None:
        t = local.time()
        if not any(i.contains(t) for i in hours.intervals(local.weekday())):
            reasons.add("outside_hours")
    return reasons, estimated


def time_check(policy: Policy, callee_zones: tuple[str, ...], at: datetime,
               imported: Calendars = NO_CALENDARS) -> tuple[set[str], dict[str, str], frozenset[str]]:
    """Reasons the time rules deny at `at`, a human explanation for each, and the
    calendars (codes) whose day was estimated under `unknown_year` (allow or
    weekdays): the decision's audit record says so."""
    reasons: set[str] = set()
    why: dict[str, str] = {}
    estimated: set[str] = set()
    for pack, hours, cal in policy.time_rules:
        zs = zones_for(hours, callee_zones)
        if not zs:
            reasons.add("unknown_timezone")
            why["unknown_timezone"] = f"{pack}: the callee's time zone is unknown and no default_zone is set"
            continue
        for z in zs:
            local = at.astimezone(zone(z))
            got, est = _check_local(local, hours, cal, imported)
            if est:
                estimated.add(code_of(cal))
            for r in got:
                if r not in why:
                    stamp = local.strftime("%a %Y-%m-%d %H:%M:%S")
                    if r == "holiday":
                        try:
                            calling_day(local.date(), cal, imported)
                            why[r] = f"{pack}: {local.date()} is not a calling day in {code_of(cal)} ({z})"
                        except UnknownYear as exc:
                            if est:
                                why[r] = (f"{pack}: {local.date()} is a weekend day ({exc}; estimated Monday to "
                                          f"Friday: unknown_year weekdays)")
                            else:
                                why[r] = (f"{pack}: {exc}; denied until the calendar is updated "
                                          f"(`dialguard calendar import {code_of(cal).lower()} FILE`)")
                    else:
                        why[r] = f"{pack}: {stamp} {z} is outside the allowed hours"
            reasons |= got
    return reasons, why, frozenset(estimated)


def time_reasons(policy: Policy, callee_zones: tuple[str, ...], at: datetime,
                 imported: Calendars = NO_CALENDARS) -> tuple[set[str], dict[str, str]]:
    """Reasons the time rules deny at `at`, with a human explanation for each."""
    reasons, why, _ = time_check(policy, callee_zones, at, imported)
    return reasons, why


def _next_single(at: datetime, z: str, hours: Hours | None, cal: Calendar | None,
                 imported: Calendars = NO_CALENDARS) -> datetime | None:
    """Earliest instant >= at allowed by one pack in one zone, or None (none within
    HORIZON_DAYS). Raises UnknownYear when it reaches a day the calendar cannot tell
    (and the pack says deny): "not known yet", which is not "never"."""
    tz = zone(z)
    local = at.astimezone(tz)
    for k in range(HORIZON_DAYS):
        d = local.date() + timedelta(days=k)
        if not day_status(d, cal, imported)[0]:
            continue
        if hours is None:
            if k == 0:
                return at
            return datetime.combine(d, time(0), tz).astimezone(UTC)
        for iv in hours.intervals(d.weekday()):
            start = datetime.combine(d, iv.start, tz)
            if k == 0:
                if iv.contains(local.time()):
                    return at
                if start.astimezone(UTC) > at:
                    return start.astimezone(UTC)
            else:
                return start.astimezone(UTC)
    return None


def next_allowed(policy: Policy, callee_zones: tuple[str, ...], at: datetime,
                 imported: Calendars = NO_CALENDARS) -> datetime | None:
    """Earliest instant >= at at which every time rule passes in every zone; None
    when there is none or it is not known (next_window tells the two apart)."""
    return next_window(policy, callee_zones, at, imported)[0]


def next_window(policy: Policy, callee_zones: tuple[str, ...], at: datetime,
                imported: Calendars = NO_CALENDARS) -> tuple[datetime | None, str | None]:
    """(earliest instant >= at at which every time rule passes in every zone, None),
    or (None, why) when that instant lies past a year a calendar does not know yet
    (e.g. 1 January before the State Council's notice for the year is imported): the
    time is unknown, not "never", and a caller must not treat it as a permanent block."""
    try:
        return _next_all(policy, callee_zones, at, imported), None
    except UnknownYear as exc:
        return None, str(exc)


def _next_all(policy: Policy, callee_zones: tuple[str, ...], at: datetime,
              imported: Calendars) -> datetime | None:
    at = at.astimezone(UTC)
    for _ in range(200):
        latest = at
        for _pack, hours, cal in policy.time_rules:
            zs = zones_for(hours, callee_zones)
            if not zs:
                return None
            for z in zs:
                n = _next_single(at, z, hours, cal, imported)
                if n is None:
                    return None
                latest = max(latest, n)
        if latest == at:
            return at
        at = latest
    return None


def local_midnight(at: datetime, z: str, days_back: int = 0) -> datetime:
    """Start (UTC) of the local calendar day `days_back` days before at's local day."""
    tz = zone(z)
    d = at.astimezone(tz).date() - timedelta(days=days_back)
    return datetime.combine(d, time(0), tz).astimezone(UTC)


def day_start_after(at: datetime, z: str, days: int) -> datetime:
    """Start (UTC) of the local day `days` days after at's local day."""
    tz = zone(z)
    d = at.astimezone(tz).date() + timedelta(days=days)
    return datetime.combine(d, time(0), tz).astimezone(UTC)


def package_changes(cf) -> tuple[bool, list[tuple[date, bool, bool]]]:
    """What an imported calendar file changes against the packaged data: (the package
    knows the year, [(day, calling day per the package, per the file)] for every day
    they differ). The CLI's `calendar import` and the console's preview show it."""
    country, _, subdiv = cf.calendar.partition("-")
    cal = (Calendar(country="CN", mode="official_workdays") if cf.calendar == "CN"
           else Calendar(country=country, subdivision=subdiv or None, mode="holidays"))
    imported = Calendars(0, (cf,))
    out, d = [], date(cf.year, 1, 1)
    while d.year == cf.year:
        try:
            before = calling_day(d, cal)
        except UnknownYear:
            return False, []
        after = calling_day(d, cal, imported)
        if before != after:
            out.append((d, before, after))
        d += timedelta(days=1)
    return True, out
