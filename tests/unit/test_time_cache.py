"""Engine._time_reasons (time_reasons remembered per UTC second) answers what
time_reasons answers, reasons and explanations, for every instant of a second:
instants around every allowed-hours boundary of every pack, in the callee zones
of several countries, across DST changes, asked in an order that fills the
cache with one end of the second and reads it with the other."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta, timezone

import pytest

from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.rules import Interval, Policy
from dialguard.timerules import time_reasons, zone

PACKS = ["cn-default", "cn-carrier", "us-tcpa", "us-regf", "us-fl-ftsa", "uk-ofcom", "us-ok", "us-md", "us-wa", "us-la",
         "us-ms", "us-tx", "us-al"]
ZONES = [("Asia/Shanghai",), ("America/New_York",), ("America/Los_Angeles", "America/New_York"),
         ("Europe/London",), ()]
US = timedelta(microseconds=1)


def instants(policy: Policy, zs: tuple[str, ...], rnd: random.Random):
    """UTC instants at each interval boundary (and a second before) of a few days, plus random ones."""
    days = [date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 29), date(2026, 10, 1), date(2026, 11, 1),
            date(2026, 12, 25)]
    for _pack, hours, _cal in policy.time_rules:
        if hours is None:
            continue
        for z in (zs or ("Asia/Shanghai",)) + ((hours.zone,) if hours.zone != "callee" else ()):
            for d in days:
                for spans in hours.weekly.values():
                    for i in spans:
                        for t in (i.start, i.end):
                            local = datetime.combine(d, t, tzinfo=zone(z))
                            for b in (local, local - timedelta(seconds=1)):
                                yield b.astimezone(timezone.utc)
    for _ in range(200):
        yield datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rnd.randrange(366 * 86400))


@pytest.mark.parametrize("pack", PACKS + ["cn-default,cn-carrier", "us-tcpa,us-regf,us-fl-ftsa", "us-tcpa,us-ms,us-la,us-tx"])
def test_cached_time_reasons_equal_direct(pack):
    policy = Policy.load(pack)
    eng = Engine(None, Settings(), policy, prefix="dg")
    rnd = random.Random(pack)
    n = 0
    for zs in ZONES:
        for t in instants(policy, zs, rnd):
            start = t.replace(microsecond=0)
            order = [start, start + 999_999 * US, start + rnd.randrange(1, 999_999) * US]
            rnd.shuffle(order)
            for at in order:
                assert eng._time_reasons(policy, zs, at) == time_reasons(policy, zs, at), (pack, zs, at)
                n += 1
    assert eng._whole_seconds[policy] is True
    assert n > 1000


def test_boundaries_not_whole_seconds_are_not_cached():
    policy = Policy.load("us-tcpa")
    odd = Interval(start=time(8, 0, 0, 500_000), end=time(21, 0))
    # a copy of the pack whose hours start half a second past 08:00
    packs = [p.model_copy(update={"hours": p.hours.model_copy(update={"weekly": {d: (odd,) for d in p.hours.weekly}})})
             if p.hours is not None else p for p in policy.packs]
    odd_policy = Policy(packs)
    eng = Engine(None, Settings(), odd_policy, prefix="dg")
    ny = ("America/New_York",)
    base = datetime.combine(date(2026, 6, 2), time(8, 0), tzinfo=zone("America/New_York")).astimezone(timezone.utc)
    early, late = base + 200_000 * US, base + 800_000 * US  # one second, either side of 08:00:00.5
    assert eng._time_reasons(odd_policy, ny, early) == time_reasons(odd_policy, ny, early)
    assert eng._time_reasons(odd_policy, ny, late) == time_reasons(odd_policy, ny, late)
    assert time_reasons(odd_policy, ny, early)[0] != time_reasons(odd_policy, ny, late)[0]
    assert eng._whole_seconds[odd_policy] is False and not eng._time_cache
