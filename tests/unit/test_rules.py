import json
import os
from datetime import timedelta


from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from dialguard.rules import (PACKS_DIR, Policy, RulesError, load_pack_file, load_pack_text, parse_duration,
                             resolve_pack, shipped_packs)
from dialguard.timerules import time_check


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_durations():
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("5m") == timedelta(minutes=5)
    assert parse_duration("3d") == timedelta(days=3)
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_error_names_file_path_and_problem(tmp_path):
    p = write(tmp_path, "pack: x\ncaps:\n  - id: c1\n    max: -1\n    window: {rolling: 24h}\n")
    with pytest.raises(RulesError) as e:
        load_pack_file(p)
    msg = str(e.value)
    assert str(p) in msg and "caps.0.max" in msg and "greater than or equal to 0" in msg


def test_bad_yaml_names_the_line(tmp_path):
    p = write(tmp_path, "pack: x\nhours: [unclosed\n")
    with pytest.raises(RulesError, match=r"line \d+ column \d+: invalid YAML"):
        load_pack_file(p)


@pytest.mark.parametrize("body,problem", [
    ("caps:\n  - {id: a, max: 2, window: {rolling: 24h, days: 1}}", "exactly one of"),
    ("caps:\n  - {id: a, max: 2, window: lifetime}", "lifetime window needs scope number_campaign"),
    ("caps:\n  - {id: a, max: 2, window: {rolling: 1h}}\n  - {id: a, max: 3, window: {rolling: 1h}}", "duplicate cap"),
    ("hours: {weekly: {mon: ['18:00-09:00']}}", "ends before it starts"),
    ("hours: {weekly: {funday: ['09:00-18:00']}}", "unknown day"),
    ("hours: {zone: Mars/Olympus, weekly: {all: ['09:00-18:00']}}", "unknown time zone"),
    ("calendar: {country: US, mode: official_workdays}", "country CN only"),
    ("calendar: {country: US, subdivision: XX}", r"no holiday calendar for US-XX .*subdivisions: .*LA"),
    ("calendar: {country: ZZ}", "no holiday calendar for ZZ in the holidays package"),
    ("caps:\n  - {id: a, max: 2, window: {rolling: 1h}, uncounted_outcomes: [conversation]}", "uncounted_outcomes"),
    ("surprise: 1", "surprise: Extra inputs are not permitted"),
])
def test_invalid_rules_are_rejected_clearly(tmp_path, body, problem):
    p = write(tmp_path, "pack: x\n" + body + "\n")
    with pytest.raises(RulesError, match=problem):
        load_pack_file(p)


SUNDAY_9_CST = datetime(2026, 12, 6, 15, tzinfo=timezone.utc)  # Sunday 09:00 in Chicago
CHICAGO = ("America/Chicago",)


def sunday_reasons(text: str) -> list[str]:
    return sorted(time_check(Policy([load_pack_text(text, "t")]), CHICAGO, SUNDAY_9_CST)[0])


@pytest.mark.parametrize("text,line,key", [
    # a second `hours:` would replace the first (Sunday 12:00 -> 08:00)
    ("pack: x\nhours:\n  weekly:\n    mon-sat: ['09:00-21:00']\n    sun: ['12:00-21:00']\n"
     "hours:\n  weekly: {all: ['08:00-21:00']}\n", 6, "hours"),
    # `caps: []` after the caps would drop them all
    ("pack: x\ncaps:\n  - {id: a, max: 2, window: {rolling: 24h}}\nhours: {weekly: {all: ['09:00-18:00']}}\n"
     "caps: []\n", 5, "caps"),
    # nested: a day given twice in weekly
    ("pack: x\nhours:\n  weekly:\n    sun: ['12:00-21:00']\n    sun: ['08:00-21:00']\n", 5, "sun"),
])
def test_a_key_given_twice_is_refused_with_its_line(text, line, key):
    with pytest.raises(RulesError, match=rf"^t: line {line}: key '{key}' given twice"):
        load_pack_text(text, "t")


@pytest.mark.parametrize("key", ["hours", "calendar", "caps", "min_interval", "quiet_after_abandon"])
def test_an_explicit_null_section_is_refused_not_read_as_no_rule(key):
    text = f"pack: x\nhours: {{weekly: {{all: ['09:00-18:00']}}}}\n{key}:\n" if key != "hours" \
        else "pack: x\nhours:\ncaps:\n  - {id: a, max: 2, window: {rolling: 24h}}\n"
    line = 2 if key == "hours" else 3
    with pytest.raises(RulesError, match=rf"^t: line {line}: {key}: no value"):
        load_pack_text(text, "t")
    with pytest.raises(RulesError, match="line 2: hours: no value"):
        load_pack_text("pack: x\nhours: ~\n", "t")


def test_a_day_named_by_two_keys_gets_their_intersection():
    # `all` 09-21 and `sun` 12-21: Sunday is 12-21 (was the union: 09-21, Sunday 09:00 allowed)
    text = "pack: x\nhours:\n  zone: callee\n  weekly:\n    all: ['09:00-21:00']\n    sun: ['12:00-21:00']\n"
    p = load_pack_text(text, "t")
    assert [(str(i.start), str(i.end)) for i in p.hours.weekly["sun"]] == [("12:00:00", "21:00:00")]
    assert [(str(i.start), str(i.end)) for i in p.hours.weekly["mon"]] == [("09:00:00", "21:00:00")]
    assert sunday_reasons(text) == ["outside_hours"]
    # several windows each side, to midnight: only the times every key allows
    p = load_pack_text("pack: x\nhours:\n  weekly:\n    mon-fri: ['08:00-12:00', '13:00-24:00']\n"
                       "    fri: ['11:00-14:00', '20:00-24:00']\n", "t")
    assert [(str(i.start), str(i.end), i.end_of_day) for i in p.hours.weekly["fri"]] == [
        ("11:00:00", "12:00:00", False), ("13:00:00", "14:00:00", False), ("20:00:00", "00:00:00", True)]
    # no common time: the day has no calling hours (denied all day), not the union
    p = load_pack_text("pack: x\nhours:\n  weekly:\n    mon-wed: ['09:00-12:00']\n    wed-fri: ['14:00-17:00']\n",
                       "t")
    assert p.hours.weekly["wed"] == () and len(p.hours.weekly["tue"]) == 1


def test_the_shipped_texas_pack_keeps_its_sunday():
    assert sunday_reasons((PACKS_DIR / "us-tx.yaml").read_text()) == ["outside_hours"]


def test_unknown_pack_lists_shipped_ones():
    with pytest.raises(RulesError, match="no such rule pack.*cn-default"):
        resolve_pack("no-such-pack")


def test_every_shipped_pack_loads_and_cites_sources():
    assert "cn-default" in shipped_packs()
    for name in shipped_packs():
        p = resolve_pack(name)
        assert p.sources, f"{name} cites no source"


def test_cn_default_matches_spec():
    p = resolve_pack("cn-default")
    caps = {c.id: c for c in p.caps}
    assert caps["per-number-per-campaign"].max == 2 and caps["per-number-per-campaign"].window.lifetime
    assert caps["per-number-per-campaign"].scope == "number_campaign"
    assert caps["per-number-24h"].max == 2 and caps["per-number-24h"].window.rolling == timedelta(hours=24)
    assert p.agent.per_day == 200
    assert (p.caller_id.per_hour, p.caller_id.per_day, p.caller_id.require_approved) == (50, 500, True)
    assert p.calendar.mode == "official_workdays" and p.hours.zone == "Asia/Shanghai"
    assert p.max_duration_s > 0


def test_combination_strictest_wins(tmp_path):
    a = write(tmp_path, "pack: a\nagent: {per_day: 200}\nmax_duration_s: 600\n"
                        "caller_id: {per_hour: 50, pool: ['+12025550100', '+12025550101']}\n")
    b = tmp_path / "b.yaml"
    b.write_text("pack: b\nagent: {per_day: 150}\nmax_duration_s: 900\nconsent_required: true\n"
                 "caller_id: {per_hour: 80, concurrency: 3, pool: ['+12025550101']}\nmin_interval: 10m\n")
    pol = Policy.load([str(a), str(b)])
    assert pol.agent_per_day == 150
    assert pol.max_duration_s == 600
    assert pol.caller_id_limits == {"per_minute": None, "per_hour": 50, "per_day": None, "concurrency": 3}
    assert pol.caller_id_pool == ("+12025550101",)
    assert pol.consent_required and pol.min_interval == timedelta(minutes=10)
    assert pol.name == "a+b" and len(pol.version_hash) == 16


def test_states_names_shipped_packs_never_a_path(tmp_path):
    """A `states` pack lists shipped pack names: a path (relative, through `..`, or absolute) to
    a valid pack file elsewhere is refused, and never read (the packs of a state load by name)."""
    from dialguard.rules import PACKS_DIR, load_pack_text

    evil = tmp_path / "evil.yaml"
    evil.write_text("pack: evil\nmin_interval: 1s\n")  # a valid pack, outside the package
    up = os.path.relpath(evil.with_suffix(""), PACKS_DIR)  # ../../../tmp/.../evil: PACKS_DIR/<it>.yaml exists
    assert (PACKS_DIR / f"{up}.yaml").exists()
    for name in (up, str(evil.with_suffix("")), "../cn-default", "US-TCPA", "us-tcpa ", "", "nope"):
        with pytest.raises(RulesError, match=r"states: FL: .* is not a shipped rule pack \(shipped: .*us-fl-ftsa"):
            load_pack_text(f"pack: x\nstates: {{FL: [{json.dumps(name)}]}}\n", "upload:x")
    with pytest.raises(RulesError, match="not a shipped rule pack"):
        load_pack_text("pack: x\nstates: {FL: [[1]]}\n", "upload:x")
    p = load_pack_text("pack: x\nstates: {FL: [us-fl-ftsa], OK: us-ok}\n", "upload:x")
    assert p.states == {"FL": ("us-fl-ftsa",), "OK": ("us-ok",)}
    assert [q.pack for q in Policy([p]).for_states(frozenset({"FL"})).packs] == ["x", "us-fl-ftsa"]


def test_campaign_packs_from_the_console_are_shipped_names_only(tmp_path):
    from dialguard.rules import shipped_spec

    assert shipped_spec(" cn-default , us-tcpa,") == "cn-default,us-tcpa"
    f = tmp_path / "r.yaml"
    f.write_text("pack: mine\n")
    for spec in (str(f), "/etc/passwd", "/dev/zero", "../../tmp/x", "cn-default,/etc/shadow", "CN-DEFAULT",
                 "cn_default", "r.yaml", "", " , "):
        with pytest.raises(RulesError, match="shipped pack names, comma-separated, never a file: cn-carrier, "
                                             "cn-default"):
            shipped_spec(spec)
    with pytest.raises(RulesError, match=r"^'/etc/shadow', 'x': not shipped rule packs\."):
        shipped_spec("cn-default,/etc/shadow,x")


# -- retention: how long the logs live (rules.Policy.retention) ----------------------------------

def test_retention_covers_the_abandon_quiet_period():
    from datetime import timedelta as td
    assert Policy.load("uk-ofcom").retention() == td(days=3, hours=1)  # 72 h after an abandoned call


def test_retention_covers_min_interval_and_every_quiet_period():
    from datetime import timedelta as td
    from dialguard.rules import load_pack_text
    mi = Policy([load_pack_text("pack: x\nmin_interval: 5d\n", "x")])
    assert mi.retention() == td(days=5, hours=1)
    amd = Policy([load_pack_text("pack: y\nquiet_after_abandon: {amd: 96h}\n", "y")])
    assert amd.retention() == td(days=4, hours=1)
    conv = Policy([load_pack_text("pack: z\nquiet_after_conversation: {window: {days: 6}}\n", "z")])
    assert conv.retention() == td(days=7, hours=1)  # a day window: one day more


def test_lifetime_caps_are_kept_apart_from_the_retention():
    from datetime import timedelta as td
    cn = Policy.load("cn-default")
    assert cn.lifetime_scopes == frozenset({"number_campaign"})
    assert cn.retention() < td(days=30)  # no 400 days: the lifetime log has no expiry at all
    assert Policy.load("us-tcpa").lifetime_scopes == frozenset()
