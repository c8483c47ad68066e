"""Imported calendars on the real Redis and PostgreSQL (issue 12).

A calendar version published (`calendar import`) or put back (`calendar
activate`) takes effect on the very next decision of every node; a file that
cannot be accounted for publishes nothing; a decision taken on an estimate
(unknown_year: weekdays) says so in its audit record down to PostgreSQL; the
versions come back with `counters rebuild`.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import chinese_calendar
import psycopg
import redis as syncredis

import cli_inproc
from dialguard.audit.rebuild import rebuild
from dialguard.audit.shipper import Shipper
from dialguard.calendar_file import CalendarFile
from dialguard.calendars import CalendarStore, Calendars, load_yaml
from dialguard.decision.models import DecisionRequest
from dialguard.simulate import _drop_namespace

# the CLI writes in break-glass (tests/conftest.py): audited with the OS user, never DIALGUARD_ACTOR
BREAK_GLASS = "break-glass:" + pwd.getpwuid(os.getuid()).pw_name

UTC = timezone.utc
SCEN = Path(__file__).parent.parent / "scenarios"
CN_2027 = SCEN / "calendars" / "cn-2027-test.yaml"
MON_2027 = datetime(2027, 1, 4, 2, tzinfo=UTC)  # Monday 2027-01-04 10:00 Shanghai


def sh(y, mo, d, h=10):
    return datetime(y, mo, d, h, tzinfo=UTC) - timedelta(hours=8)


def req(number, campaign="c1"):
    return DecisionRequest(number=number, campaign=campaign, agent="a1")


async def stream(engine):
    return [(sid.decode(), {k.decode(): v.decode() for k, v in f.items()})
            for sid, f in await engine.redis.xrange(engine.keys.audit)]


def cli(*args, prefix: str):  # in this process (tests/cli_inproc.py)
    env = {**os.environ, "DIALGUARD_KEY_PREFIX": prefix, "DIALGUARD_ACTOR": "ops-test"}
    return cli_inproc.run([*args], env=env, timeout=120)


async def test_import_and_rollback_take_effect_on_every_node_at_once(make_engine):
    a = await make_engine("cn-default", skip_caller_id_without_pool=True)
    b = await make_engine("cn-default", skip_caller_id_without_pool=True, prefix=a.keys.prefix)
    await a.set_campaign("c1")
    # both nodes warm their caches: 2027 is unknown, denied with the message
    d = await a.decide(req("13800138001"), MON_2027)
    assert d.reasons == ["holiday"] and "2027 is not known" in d.explanations["holiday"]
    assert (await b.decide(req("13800138002"), MON_2027)).reasons == ["holiday"]

    store = CalendarStore(a.redis, a.keys)
    y2027 = load_yaml(CN_2027.read_text())
    assert await a.calendar_horizons() == {"CN": date(2026, 12, 31)}  # chinesecalendar's last year
    assert await store.import_file(y2027, why="2027 notice") == (1, True)
    assert await b.calendar_horizons() == {"CN": date(2027, 12, 31)}
    # the next decision on either node, well within the context cache's TTL, knows 2027
    assert (await a.decide(req("13800138003"), MON_2027)).allowed
    assert (await b.decide(req("13800138004"), MON_2027)).allowed

    moved = CalendarFile("CN", 2027, y2027.holidays | {date(2027, 1, 4)}, y2027.working_days, "correction")
    assert await store.import_file(moved, why="4 Jan off") == (2, True)
    assert (await a.decide(req("13800138005"), MON_2027)).reasons == ["holiday"]
    assert (await b.decide(req("13800138006"), MON_2027)).reasons == ["holiday"]

    assert await store.activate(1, why="roll back") == 1
    assert (await a.decide(req("13800138007"), MON_2027)).allowed
    assert (await b.decide(req("13800138008"), MON_2027)).allowed

    entries = await stream(a)
    decisions = [json.loads(f["j"]).get("cal") for _, f in entries if f["t"] == "decision"]
    assert decisions == [None, None, 1, 1, 2, 2, 1, 1]
    admin = [json.loads(f["j"]) for _, f in entries if f["t"] == "admin" and "calendar" in f["j"]]
    assert [(r["action"], r["version"], r["target"], r["why"]) for r in admin] == [
        ("calendar_publish", 1, "CN 2027", "2027 notice"), ("calendar_publish", 2, "CN 2027", "4 Jan off"),
        ("calendar_activate", 1, "version 1", "roll back")]
    # every record carries the whole set of years (self-contained)
    assert "2027-01-04" in admin[1]["calendars"][0]["holidays"]
    assert "2027-01-04" not in admin[2]["calendars"][0]["holidays"]
    assert [v.version for v in await store.history()] == [1, 2]


async def test_a_switch_during_a_decision_is_seen_by_the_script(make_engine):
    """decide.lua refuses a plan made with another calendar version (status 2):
    a node whose cache still holds the old version reloads and decides again."""
    e = await make_engine("cn-default", skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    assert (await e.decide(req("13800138011"), MON_2027)).reasons == ["holiday"]  # cached: none imported
    # published behind the engine's back (raw script call, no cache invalidation on this node)
    await CalendarStore(e.redis, e.keys).import_file(load_yaml(CN_2027.read_text()))
    assert e._ctx_cache["c1"].cver == ""
    assert (await e.decide(req("13800138012"), MON_2027)).allowed
    assert e._ctx_cache["c1"].cver == "1"


async def test_imported_year_overrides_the_package_year(make_engine):
    """A 2026 file moving a day: its days win over chinesecalendar's 2026 (SPEC section 9,
    day by day: a package holiday becomes a calling day only when the file lists it as a
    working day; a day the file leaves out keeps the package's word)."""
    e = await make_engine("cn-default", skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    hol = {d for d in chinese_calendar.holidays if d.year == 2026}
    work = {d for d in chinese_calendar.workdays if d.year == 2026}
    off, on = date(2026, 10, 7), date(2026, 10, 9)  # Wed in the National Day week; Fri after it
    assert off in hol and chinese_calendar.is_workday(on)
    assert (await e.decide(req("13800138021"), sh(2026, 10, 7))).reasons == ["holiday"]
    assert (await e.decide(req("13800138022"), sh(2026, 10, 9))).allowed
    await CalendarStore(e.redis, e.keys).import_file(
        CalendarFile("CN", 2026, frozenset(hol - {off} | {on}), frozenset(work | {off}), "moved"))
    assert (await e.decide(req("13800138023"), sh(2026, 10, 7))).allowed
    d = await e.decide(req("13800138024"), sh(2026, 10, 9))
    assert d.reasons == ["holiday"] and "2026-10-09 is not a calling day in CN" in d.explanations["holiday"]
    assert d.next_eligible_at == sh(2026, 10, 10, 9)  # the make-up working Saturday, as in the file
    p = cli("calendar", "status", "--json", prefix=e.keys.prefix)
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["version"] == 1 and st["years"][0]["overrides_package"] is True
    assert st["calendars"]["CN"]["known_until"] == "2026-12-31"


async def test_cli_import_shows_the_days_and_refuses_a_malformed_file(make_engine, tmp_path):
    e = await make_engine("cn-default")
    bad = tmp_path / "bad.yaml"
    bad.write_text("calendar: CN\nyear: 2027\nholidays:\n  - 2027-01-01\n  - 2027-02-30\n")
    p = cli("calendar", "import", "cn", str(bad), prefix=e.keys.prefix)
    assert p.returncode == 2
    assert "line 5" in p.stderr and "2027-02-30" in p.stderr and "nothing published" in p.stderr
    assert await e.redis.exists(e.keys.calendars) == 0
    assert await e.redis.exists(e.keys.audit) == 0  # no record either

    p = cli("calendar", "import", "cn", str(CN_2027), "--dry-run", prefix=e.keys.prefix)
    assert p.returncode == 0, p.stderr
    assert "2027-01-30 Sat  working day" in p.stdout and "2027-01-01 Fri  holiday" in p.stdout
    assert "dry run: nothing published" in p.stdout
    assert await e.redis.exists(e.keys.calendars) == 0

    p = cli("calendar", "import", "cn", str(CN_2027), "--why", "notice of 2026-11", prefix=e.keys.prefix)
    assert p.returncode == 0, p.stderr
    assert "2027-02-20 Sat  working day" in p.stdout and "calendar version 1" in p.stdout
    p = cli("calendar", "history", "--json", prefix=e.keys.prefix)
    h = json.loads(p.stdout)
    assert [(v["version"], v["active"], v["years"], v["actor"], v["why"]) for v in h] == [
        (1, True, ["CN 2027"], BREAK_GLASS, "notice of 2026-11")]
    p = cli("calendar", "activate", "9", prefix=e.keys.prefix)
    assert p.returncode == 2 and "no calendar version 9" in p.stderr
    p = cli("rules", "show", "cn-default", prefix=e.keys.prefix)
    assert "known until 2027-12-31" in " ".join(p.stdout.split()) and "imported 2027" in p.stdout


ESTIMATE_PACK = """pack: cn-estimate
default_region: CN
hours:
  zone: Asia/Shanghai
  weekly: {mon-sun: ["09:00-18:00"]}
calendar: {country: CN, mode: official_workdays, unknown_year: weekdays}
"""


async def test_unknown_year_weekdays_is_marked_in_the_audit_down_to_postgresql(make_engine, rules_file, audit_db):
    policy = rules_file(ESTIMATE_PACK)
    e = await make_engine(policy, skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    assert (await e.decide(req("13800138031"), MON_2027)).allowed  # Monday: estimated a working day
    sat = await e.decide(req("13800138032"), sh(2027, 1, 9))
    assert sat.reasons == ["holiday"] and "estimated Monday to Friday" in sat.explanations["holiday"]
    assert sat.next_eligible_at == sh(2027, 1, 11, 9)
    assert (await e.decide(req("13800138033"), sh(2026, 11, 24))).allowed  # a known year: no estimate
    # once 2027 is imported, the days are known, not estimated
    await CalendarStore(e.redis, e.keys).import_file(load_yaml(CN_2027.read_text()))
    assert (await e.decide(req("13800138034"), sh(2027, 1, 30))).allowed  # make-up working Saturday
    est = [json.loads(f["j"]).get("est") for _, f in await stream(e) if f["t"] == "decision"]
    assert est == [["CN"], ["CN"], None, None]

    sh_ = Shipper(e.settings, prefix=e.keys.prefix, dsn=audit_db, block_ms=50)
    try:
        await asyncio.to_thread(sh_.run, True)
    finally:
        sh_.close()
    with psycopg.connect(audit_db) as conn:
        rows = conn.execute("select allowed, calendar_estimated, calendar_version from audit_decisions "
                            "order by stream_id").fetchall()
        admin = conn.execute("select action, target, payload->'calendars'->0->>'year' from audit_admin_actions "
                             "where action like 'calendar_%'").fetchall()
    assert rows == [(True, ["CN"], None), (False, ["CN"], None), (True, None, None), (True, None, 1)]
    assert admin == [("calendar_publish", "CN 2027", "2027")]


def test_rules_validate_warns_that_weekdays_is_an_estimate(tmp_path):
    f = tmp_path / "est.yaml"
    f.write_text(ESTIMATE_PACK)
    p = cli_inproc.run(["rules", "validate", str(f)])
    assert p.returncode == 0, p.stderr
    assert "warning" in p.stderr and "estimate" in p.stderr and "Monday to Friday" in p.stderr
    p = cli_inproc.run(["rules", "validate", "cn-default"])
    assert p.returncode == 0 and "warning" not in p.stderr


async def test_counters_rebuild_restores_calendar_versions(make_engine, audit_db):
    e = await make_engine("cn-default", skip_caller_id_without_pool=True)
    await e.set_campaign("c1")
    store = CalendarStore(e.redis, e.keys)
    y2027 = load_yaml(CN_2027.read_text())
    await store.import_file(y2027)
    await store.import_file(CalendarFile("CN", 2027, y2027.holidays | {date(2027, 1, 4)}, y2027.working_days))
    await store.activate(1)
    r = syncredis.Redis.from_url(e.settings.redis_url, decode_responses=True)
    before = r.hgetall(e.keys.calendars)
    sh_ = Shipper(e.settings, prefix=e.keys.prefix, dsn=audit_db, block_ms=50)
    try:
        await asyncio.to_thread(sh_.run, True)
    finally:
        sh_.close()
    await _drop_namespace(e.redis, e.keys.prefix)
    assert r.hgetall(e.keys.calendars) == {}
    with psycopg.connect(audit_db) as conn:
        summary = await asyncio.to_thread(rebuild, conn, r, e.settings, prefix=e.keys.prefix, policy=e.policy,
                                          now=MON_2027)
    after = r.hgetall(e.keys.calendars)
    # the same fields and values (PostgreSQL's jsonb keeps the JSON, not its key order)
    assert {k: json.loads(v) for k, v in after.items()} == {k: json.loads(v) for k, v in before.items()}
    assert summary.keys["configuration: calendar versions"] == 2
    e._ctx_cache.clear()
    assert (await e.decide(req("13800138041"), MON_2027)).allowed  # version 1 (4 Jan a working day)
    assert (await CalendarStore(e.redis, e.keys).current()).version == 1


def test_simulate_loads_the_scenario_calendars_in_its_namespace_only(settings, tmp_path):
    r = syncredis.Redis.from_url(settings.redis_url)
    from dialguard.decision.keys import Keys

    live = Keys(settings.key_prefix, settings.hash_secret)
    before = r.dump(live.calendars)
    p = cli_inproc.run(["simulate", str(SCEN / "cn_default_2027.yaml")], timeout=120)
    assert p.returncode == 0, p.stderr
    got = [(x["i"], x["decision"], x["reasons"], x["next_eligible_at"])
           for x in map(json.loads, p.stdout.splitlines())]
    assert got == [
        (0, "deny", ["holiday"], "2027-01-04T01:00:00Z"),   # Saturday 2 January, a holiday
        (1, "allow", [], None),                              # Monday 2027-01-04 10:00
        (2, "allow", [], None),                              # make-up working Saturday
        (3, "deny", ["holiday"], "2027-02-15T01:00:00Z"),   # Spring Festival
    ]
    assert r.dump(live.calendars) == before  # the live calendars untouched
    assert not list(r.scan_iter(match="dgsim:*"))
    # without the calendars, 2027 is unknown: denied
    plain = tmp_path / "plain.yaml"
    plain.write_text((SCEN / "cn_default_2027.yaml").read_text().replace(
        "calendars: [calendars/cn-2027-test.yaml]\n", ""))
    p = cli_inproc.run(["simulate", str(plain)], timeout=120)
    assert [x["reasons"] for x in map(json.loads, p.stdout.splitlines())] == [["holiday"]] * 4
    # a bad calendar file: a clear message with its line, nothing replayed
    bad = tmp_path / "bad-cal.yaml"
    bad.write_text("calendar: CN\nyear: 2027\nholidays: [2027-01-01]\nworking_days: [2027-01-05]\n")
    sc = tmp_path / "sc.yaml"
    sc.write_text(f"rules: cn-default\ncalendars: [{bad}]\nevents: []\n")
    p = cli_inproc.run(["simulate", str(sc)], timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert "bad-cal.yaml" in p.stderr and "line 4" in p.stderr and "is a Tue" in p.stderr



async def test_fastagi_server_allows_2027_once_the_year_is_imported(make_engine, settings):
    """The real FastAGI server in front of the engine: what the dialplan sees."""
    import dataclasses

    from agi.engines import EngineProvider
    from agi.server import FastAGIServer
    from agi.client import agi_call

    cid = "+862150000001"
    eng = await make_engine("cn-default", settings=dataclasses.replace(settings, test_clock=True))
    await eng.set_campaign("c1")
    await eng.approve_caller_id(cid)
    await eng.set_test_clock(MON_2027)
    srv = FastAGIServer(EngineProvider(engine=eng), host="127.0.0.1", port=0)
    await srv.start()
    try:
        async def check(uniqueid, number):
            return (await agi_call("127.0.0.1", srv.bound_port, "check", (number, "c1", "a1", "", cid),
                                   uniqueid=uniqueid)).variables

        v = await check("u.1", "13800138051")
        assert (v["DIALGUARD_RESULT"], v["DIALGUARD_REASONS"], v["DIALGUARD_NEXT_ELIGIBLE"]) == ("DENY", "holiday", "")
        await CalendarStore(eng.redis, eng.keys).import_file(load_yaml(CN_2027.read_text()))
        v = await check("u.2", "13800138052")
        assert (v["DIALGUARD_RESULT"], v["DIALGUARD_REASONS"], v["DIALGUARD_CALLERID"]) == ("ALLOW", "", cid)
        await eng.set_test_clock(sh(2027, 2, 9))  # Spring Festival: a holiday, eligible after it
        v = await check("u.3", "13800138053")
        assert (v["DIALGUARD_RESULT"], v["DIALGUARD_REASONS"]) == ("DENY", "holiday")
        assert v["DIALGUARD_NEXT_ELIGIBLE"] == "2027-02-15T01:00:00Z"
    finally:
        await srv.shutdown(grace_s=1)
