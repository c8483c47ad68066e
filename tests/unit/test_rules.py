import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from dialguard.rules import Policy, RulesError, load_pack_file, parse_duration, resolve_pack, shipped_packs


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
