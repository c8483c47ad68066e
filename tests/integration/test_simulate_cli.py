"""`dialguard simulate` end to end: output format, isolation, bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis as syncredis

SCEN = Path(__file__).parent.parent / "scenarios"


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "dialguard.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_replay_prints_one_json_line_per_attempt(settings):
    r = syncredis.Redis.from_url(settings.redis_url)
    from dialguard.decision.keys import Keys
    live = Keys(settings.key_prefix, settings.hash_secret)

    def live_state():  # the live keys of this scenario's numbers, with their content
        out = {}
        for n in ("+8613800138000", "+8613800138001"):
            for k in r.scan_iter(match=f"{settings.key_prefix}:{{n:{live.number_tag(n)}}}:*"):
                out[k] = r.dump(k)
        return out

    before = live_state()
    p = run("simulate", str(SCEN / "cn_default_basic.yaml"))
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    got = [(x["i"], x["at"], x["decision"], x["reasons"], x["next_eligible_at"]) for x in lines]
    assert got == [
        (0, "2026-10-09T01:00:00Z", "allow", [], None),
        (2, "2026-10-09T03:00:00Z", "allow", [], None),
        (3, "2026-10-09T04:00:00Z", "deny", ["attempt_cap"], "2026-10-10T01:00:00Z"),
        (4, "2026-10-10T01:00:00Z", "allow", [], None),            # make-up working Saturday
        (5, "2026-10-10T10:00:00Z", "deny", ["outside_hours"], "2026-10-12T01:00:00Z"),  # 18:00:00, Sun off
        (6, "2026-10-11T02:00:00Z", "deny", ["holiday"], "2026-10-12T01:00:00Z"),
        (7, "2026-10-12T02:00:00Z", "deny", ["campaign_not_approved"], None),
        (9, "2026-10-12T02:00:01Z", "deny", ["complained"], None),
        (10, "2026-10-12T02:00:01Z", "deny", ["invalid_number"], None),
    ]
    assert lines[0]["number"] == "+8613800138000" and set(lines[0]) == {
        "i", "at", "number", "decision", "reasons", "next_eligible_at"}
    # isolated: nothing left behind, the live keys of these numbers untouched
    assert not list(r.scan_iter(match="dgsim:*"))
    assert live_state() == before


def test_bad_scenarios_fail_with_a_clear_message(tmp_path):
    cases = {
        "notyaml.yaml": ("rules: [unclosed\n", "invalid YAML"),
        "noevent.yaml": ("rules: cn-default\nevents:\n  - at: '2026-10-09T09:00:00+08:00'\n", "exactly one of"),
        "naive.yaml": ("rules: cn-default\nevents:\n  - at: '2026-10-09T09:00:00'\n    attempt: {number: '1'}\n",
                       "UTC offset"),
        "order.yaml": ("rules: cn-default\nevents:\n  - at: '2026-10-09T09:00:00Z'\n    opt_out: {number: '1'}\n"
                       "  - at: '2026-10-08T09:00:00Z'\n    opt_out: {number: '1'}\n", "time order"),
        "pack.yaml": ("rules: nope\nevents: []\n", "no such rule pack"),
        "result.yaml": ("rules: cn-default\nevents:\n  - at: '2026-10-09T09:00:00Z'\n"
                        "    outcome: {number: '1', result: great}\n", "outcome.result"),
    }
    for name, (text, msg) in cases.items():
        f = tmp_path / name
        f.write_text(text)
        p = run("simulate", str(f))
        assert p.returncode == 2 and msg in p.stderr and str(f) in p.stderr.replace("\n", ""), (name, p.stderr)
    p = run("simulate", str(tmp_path / "missing.yaml"))
    assert p.returncode == 2 and "cannot read" in p.stderr


def test_rules_file_relative_to_scenario_and_list_of_packs(tmp_path):
    (tmp_path / "mine.yaml").write_text("pack: mine\nhours: {zone: Asia/Shanghai, weekly: {all: ['10:00-11:00']}}\n")
    (tmp_path / "s.yaml").write_text(
        "rules: [cn-default, mine.yaml]\nevents:\n"
        "  - at: '2026-10-09T09:30:00+08:00'\n    attempt: {number: '13800138000', campaign: c1, agent: a}\n")
    p = run("simulate", str(tmp_path / "s.yaml"))
    line = json.loads(p.stdout)
    assert line["reasons"] == ["outside_hours"] and line["next_eligible_at"] == "2026-10-09T02:00:00Z"


def test_check_command_explains_and_exits_by_decision(settings, tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text("pack: r\ndefault_region: US\nhours: {weekly: {all: ['08:00-21:00']}}\n")
    p = run("check", "(202) 555-0199", "--campaign", "nope", "--agent", "a", "--rules", str(rules),
            "--at", "2026-03-03T02:30:00Z")
    assert p.returncode == 1
    assert "DENY" in p.stdout and "outside_hours" in p.stdout and "campaign_not_approved" in p.stdout
    assert "next eligible" in p.stdout
    p = run("check", "(202) 555-0199", "--campaign", "nope", "--agent", "a", "--rules", str(rules),
            "--at", "2026-03-03T02:30:00Z", "--json")
    d = json.loads(p.stdout)
    assert d["decision"] == "deny" and d["number"] == "+12025550199"
    p = run("check", "x", "--campaign", "c", "--agent", "a", "--at", "yesterday")
    assert p.returncode == 2 and "--at" in p.stderr
