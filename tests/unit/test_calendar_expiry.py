"""Until when each calendar the rules use is known (dialguard/calendar_expiry.py),
and /healthz "degraded" from 45 days before the end. Time is an input: every
`now` here is fixed; none is compared with the wall clock."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import aiohttp
import chinese_calendar
import holidays
import pytest
from chinese_calendar import constants
from prometheus_client.parser import text_string_to_metric_families

from dialguard import metrics
from dialguard.calendar_expiry import (WARN_DAYS, calendar_code, calendars_known, known_until, warnings)
from dialguard.rules import Policy, load_pack_text

CN_LAST = max(d.year for d in constants.holidays)  # chinesecalendar's last year (2026 in 1.11.0)
CN_END = datetime(CN_LAST + 1, 1, 1, tzinfo=ZoneInfo("Asia/Shanghai"))  # end of its last known day
DAY = 86400


def policy(*packs: str) -> Policy:
    return Policy([load_pack_text(t, f"test{i}") for i, t in enumerate(packs)])


US_LA = "pack: la-test\ncalendar: {country: US, subdivision: LA}\n"
CN_HOLIDAYS = "pack: cn-estimate\ncalendar: {country: CN, mode: holidays}\n"


def cn():
    return Policy.load("cn-default").time_rules[0][2]


def test_chinesecalendar_is_known_until_its_last_year():
    k = known_until(cn(), CN_END - timedelta(days=100))
    assert k.calendar == "CN" and k.last_day == date(CN_LAST, 12, 31)
    assert chinese_calendar.is_workday(k.last_day) in (True, False)  # known
    with pytest.raises(NotImplementedError):  # the next day is not: decisions deny it
        chinese_calendar.is_workday(k.last_day + timedelta(days=1))
    assert k.source == f"chinesecalendar {chinese_calendar.__version__}"
    assert k.seconds_left == 100 * DAY and k.days_left == 100 and not k.warn


def test_the_end_is_midnight_in_shanghai():
    # 16:00 UTC on the last day is midnight in Asia/Shanghai: nothing left
    at = datetime(CN_LAST, 12, 31, 16, 0, tzinfo=timezone.utc)
    assert known_until(cn(), at).seconds_left == 0
    assert known_until(cn(), at - timedelta(seconds=1)).seconds_left == 1


def test_warns_from_45_days_before_the_end():
    assert WARN_DAYS == 45
    at46, at45, at44 = (CN_END - timedelta(days=n) for n in (46, 45, 44))
    assert not known_until(cn(), at46).warn
    assert known_until(cn(), at45).warn
    k44 = known_until(cn(), at44)
    assert k44.warn and k44.seconds_left == 44 * DAY
    [msg] = warnings([k44])
    assert f"known until {CN_LAST}-12-31" in msg and "44.0 days left" in msg
    assert warnings([known_until(cn(), at46)]) == []


def test_past_the_end_says_so():
    k = known_until(cn(), CN_END + timedelta(days=3))
    assert k.seconds_left == -3 * DAY and k.warn
    assert "known only until" in k.message() and "denied" in k.message()


def test_imported_years_extend_only_without_a_gap():
    at = CN_END - timedelta(days=10)
    k = known_until(cn(), at, {CN_LAST + 1})
    assert k.last_day == date(CN_LAST + 1, 12, 31)
    assert k.seconds_left == (10 + (date(CN_LAST + 2, 1, 1) - date(CN_LAST + 1, 1, 1)).days) * DAY
    assert k.source.endswith(f"+ imported {CN_LAST + 1}") and not k.warn
    assert known_until(cn(), at, {CN_LAST + 1, CN_LAST + 2}).last_day == date(CN_LAST + 2, 12, 31)
    gap = known_until(cn(), at, {CN_LAST + 2, CN_LAST - 1})  # the year after the package's is missing
    assert gap.last_day == date(CN_LAST, 12, 31) and gap.warn


def test_holidays_package_calendars_are_known_until_its_end_year():
    la = policy(US_LA).time_rules[0][2]
    end_year = holidays.country_holidays("US", subdiv="LA").end_year
    at = datetime(2026, 12, 5, tzinfo=timezone.utc)
    k = known_until(la, at)
    assert k.calendar == "US-LA" and k.last_day == date(end_year, 12, 31)
    # after end_year the package has no holiday at all: that is where "known" stops
    assert len(holidays.country_holidays("US", subdiv="LA", years=end_year)) > 0
    assert len(holidays.country_holidays("US", subdiv="LA", years=end_year + 1)) == 0
    # a day ends first at UTC+14 (the warning is never late)
    assert k.seconds_left == (datetime(end_year + 1, 1, 1, tzinfo=timezone(timedelta(hours=14))) - at).total_seconds()
    assert not k.warn


def test_every_calendar_of_the_policies_once_earliest_end_per_code():
    at = CN_END - timedelta(days=20)
    known = calendars_known([Policy.load("cn-default"), policy(US_LA), Policy.load("cn-default")], at)
    assert [k.calendar for k in known] == ["CN", "US-LA"]
    assert [k.warn for k in known] == [True, False]
    assert len(warnings(known)) == 1
    # CN used both by the official calendar and the holidays package: the earlier end is reported
    both = calendars_known([policy(CN_HOLIDAYS), Policy.load("cn-default")], at)
    assert [(k.calendar, k.last_day) for k in both] == [("CN", date(CN_LAST, 12, 31))]
    assert calendars_known([Policy.load("us-tcpa")], at) == []  # no calendar, nothing to know
    assert calendars_known([Policy.load("cn-default")], at, {"CN": [CN_LAST + 1]})[0].warn is False


def test_code_and_naive_now():
    assert calendar_code(policy(US_LA).time_rules[0][2]) == "US-LA"
    with pytest.raises(ValueError, match="timezone-aware"):
        known_until(cn(), datetime(2026, 12, 1))


# -- the gauge and /healthz ------------------------------------------------------------------
class _Engine:
    """What metrics.calendar_status reads: the rules and the (test) clock."""

    versioned = False

    def __init__(self, at: datetime):
        self.policy = Policy.load("cn-default")
        self.at = at

    async def now(self):
        return self.at


async def test_gauge_and_healthz_change_at_44_days_before_the_end():
    eng = _Engine(CN_END - timedelta(days=46))

    async def health():
        return True, "store answers"

    srv = metrics.MetricsServer("127.0.0.1", 0, health, degraded=lambda: metrics.calendar_degraded(eng))
    await srv.start()
    url = f"http://127.0.0.1:{srv.bound_port}"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(url + "/healthz") as r:
                body = await r.json()
                assert r.status == 200 and body["status"] == "ok" and "degraded" not in body, body
            assert metrics.REGISTRY.get_sample_value("dialguard_calendar_known_seconds",
                                                     {"calendar": "CN"}) == 46 * DAY
            eng.at = CN_END - timedelta(days=44)
            async with s.get(url + "/healthz") as r:
                body = await r.json()
            assert r.status == 200 and body["ok"] is True and body["status"] == "degraded", body
            assert f"calendar CN is known until {CN_LAST}-12-31" in body["degraded"][0]
            async with s.get(url + "/metrics") as r:
                text = await r.text()
            scraped = {(x.name, x.labels.get("calendar")): x.value
                       for fam in text_string_to_metric_families(text) for x in fam.samples}
            assert scraped[("dialguard_calendar_known_seconds", "CN")] == 44 * DAY
    finally:
        await srv.stop()


async def test_refresh_drops_calendars_no_longer_used():
    metrics.set_calendar_known(calendars_known([Policy.load("cn-default"), policy(US_LA)], CN_END))
    assert metrics.REGISTRY.get_sample_value("dialguard_calendar_known_seconds", {"calendar": "CN"}) == 0
    assert metrics.REGISTRY.get_sample_value("dialguard_calendar_known_seconds", {"calendar": "US-LA"}) > 0
    metrics.set_calendar_known(calendars_known([Policy.load("cn-default")], CN_END))
    assert metrics.REGISTRY.get_sample_value("dialguard_calendar_known_seconds", {"calendar": "US-LA"}) is None


async def test_down_is_not_degraded():
    async def health():
        return False, "Redis unreachable"

    async def degraded():
        raise AssertionError("not asked when the node is down")

    srv = metrics.MetricsServer("127.0.0.1", 0, health, degraded=degraded)
    await srv.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{srv.bound_port}/healthz") as r:
                body = await r.json()
        assert r.status == 503 and body["status"] == "down" and "degraded" not in body
    finally:
        await srv.stop()


async def test_imported_years_of_the_calendar_version_in_effect_extend_the_gauge():
    """metrics.calendar_status reads the active calendar version (engine.calendars():
    codes, years(code)); an imported next year moves the end by that year."""

    class _Imported:
        codes = ["CN", "US-LA"]

        def years(self, code):
            return {"CN": [CN_LAST + 1], "US-LA": [2026]}[code]

    eng = _Engine(CN_END - timedelta(days=44))

    async def calendars():
        return _Imported()

    assert await metrics.imported_calendar_years(eng) == {}  # no calendar store: the packages alone
    [before] = await metrics.calendar_status(eng)
    eng.calendars = calendars
    assert await metrics.imported_calendar_years(eng) == {"CN": {CN_LAST + 1}, "US-LA": {2026}}
    [after] = await metrics.calendar_status(eng)
    assert before.warn and not after.warn and after.last_day == date(CN_LAST + 1, 12, 31)
    assert after.seconds_left - before.seconds_left == (date(CN_LAST + 2, 1, 1) - date(CN_LAST + 1, 1, 1)).days * DAY
    assert await metrics.calendar_degraded(eng) == []


async def test_unreadable_rules_do_not_make_the_store_unhealthy_and_healthz_says_degraded():
    """An active rules version this node cannot read: the store still answers
    (dialguard_healthy 1), the calendar gauge is not refreshed, and /healthz
    (still 200: the node decides, denying under those rules) is degraded with the reason."""

    class _Pipe:
        def __init__(self):
            self.n = 0

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return False

        def hvals(self, key):
            self.n += 1

        async def execute(self):
            return [[] for _ in range(self.n)]

    class _Redis:
        async def ping(self):
            return True

        async def xlen(self, key):
            return 0

        def pipeline(self, transaction=False):
            return _Pipe()

        async def hget(self, key, field):
            return b"7"  # rules version 7 is in effect

    class _Keys:
        audit, rules = "a", "r"

        def pool(self, campaign):
            return f"p:{campaign}"

    eng = _Engine(CN_END - timedelta(days=100))
    eng.versioned, eng.redis, eng.keys, eng.timeout = True, _Redis(), _Keys(), 0.2
    eng.spool = None

    async def unreadable(version):
        raise RuntimeError(f"rules version {version} unusable")

    eng._version = unreadable
    metrics.CALENDAR_KNOWN.labels("CN").set(123.0)
    assert await metrics.refresh_from_engine(eng) is True
    assert metrics.REGISTRY.get_sample_value("dialguard_healthy") == 1
    assert metrics.REGISTRY.get_sample_value("dialguard_calendar_known_seconds", {"calendar": "CN"}) == 123.0

    async def health():
        return True, "store answers"

    srv = metrics.MetricsServer("127.0.0.1", 0, health, degraded=lambda: metrics.calendar_degraded(eng))
    await srv.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{srv.bound_port}/healthz") as r:
                body = await r.json()
        assert r.status == 200 and body["status"] == "degraded", body
        assert "rules version 7 unusable" in body["degraded"][0]
    finally:
        await srv.stop()


async def test_dialer_healthz_is_degraded_too():
    """The dialer's /healthz (ari_app/main.py): 200 "degraded" at 44 days before the end."""
    from types import SimpleNamespace

    from ari_app.main import metrics_server

    async def select_one(sql):
        return {"ok": 1}

    dialer = SimpleNamespace(ari=SimpleNamespace(healthy=True), store=SimpleNamespace(_one=select_one),
                             campaigns={})
    eng = _Engine(CN_END - timedelta(days=46))
    srv = metrics_server(dialer, eng, 0)
    srv.refresh = None  # the store-backed gauges are not what this test is about
    await srv.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{srv.bound_port}/healthz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            eng.at = CN_END - timedelta(days=44)
            async with s.get(f"http://127.0.0.1:{srv.bound_port}/healthz") as r:
                body = await r.json()
        assert r.status == 200 and body["status"] == "degraded" and "calendar CN" in body["degraded"][0]
    finally:
        await srv.stop()
