"""Callee-local time rules: allowed hours, holiday calendars, day boundaries.

Pure functions of (rules, zones, instant): no I/O, so they run before the one
Redis call and are easy to test at their edges.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as pyholidays

from dialguard.rules import Calendar, Hours, Policy

UTC = timezone.utc
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


def calling_day(d: date, cal: Calendar | None) -> bool:
    """True if d is a calling day; raises UnknownYear when the calendar cannot tell."""
    if cal is None:
        return True
    if cal.mode == "official_workdays":
        return _cn_workday(d)
    return d not in _holiday_set(cal.country.upper(), cal.subdivision, d.year)


def zones_for(hours: Hours | None, callee_zones: tuple[str, ...]) -> tuple[str, ...]:
    """The zones a pack's time rules are evaluated in; () means unknown."""
    if hours is not None and hours.zone != "callee":
        return (hours.zone,)
    if callee_zones:
        return callee_zones
    if hours is not None and hours.default_zone:
        return (hours.default_zone,)
    return ()


def _check_local(local: datetime, hours: Hours | None, cal: Calendar | None) -> set[str]:
    reasons = set()
    try:
        if not calling_day(local.date(), cal):
            reasons.add("holiday")
    except UnknownYear:
        if cal is not None and cal.unknown_year == "deny":
            reasons.add("holiday")
    if hours is not None:
        t = local.time()
        if not any(i.contains(t) for i in hours.intervals(local.weekday())):
            reasons.add("outside_hours")
    return reasons


def time_reasons(policy: Policy, callee_zones: tuple[str, ...], at: datetime) -> tuple[set[str], dict[str, str]]:
    """Reasons the time rules deny at `at`, with a human explanation for each."""
    reasons: set[str] = set()
    why: dict[str, str] = {}
    for pack, hours, cal in policy.time_rules:
        zs = zones_for(hours, callee_zones)
        if not zs:
            reasons.add("unknown_timezone")
            why["unknown_timezone"] = f"{pack}: the callee's time zone is unknown and no default_zone is set"
            continue
        for z in zs:
            local = at.astimezone(zone(z))
            got = _check_local(local, hours, cal)
            for r in got:
                if r not in why:
                    stamp = local.strftime("%a %Y-%m-%d %H:%M:%S")
                    if r == "holiday":
                        try:
                            calling_day(local.date(), cal)
                            why[r] = f"{pack}: {local.date()} is not a calling day in {cal.country} ({z})"
                        except UnknownYear as exc:
                            why[r] = f"{pack}: {exc}; denied until the calendar is updated"
                    else:
                        why[r] = f"{pack}: {stamp} {z} is outside the allowed hours"
            reasons |= got
    return reasons, why


def _next_single(at: datetime, z: str, hours: Hours | None, cal: Calendar | None) -> datetime | None:
    """Earliest instant >= at allowed by one pack in one zone, or None."""
    tz = zone(z)
    local = at.astimezone(tz)
    for k in range(HORIZON_DAYS):
        d = local.date() + timedelta(days=k)
        try:
            if not calling_day(d, cal):
                continue
        except UnknownYear:
            if cal is not None and cal.unknown_year == "deny":
                return None
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


def next_allowed(policy: Policy, callee_zones: tuple[str, ...], at: datetime) -> datetime | None:
    """Earliest instant >= at at which every time rule passes in every zone."""
    at = at.astimezone(UTC)
    for _ in range(200):
        latest = at
        for _pack, hours, cal in policy.time_rules:
            zs = zones_for(hours, callee_zones)
            if not zs:
                return None
            for z in zs:
                n = _next_single(at, z, hours, cal)
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
