"""Each shipped pack against its legal text: scenario replays with expected lines
written by hand from the regulation (tests/scenarios/packs/*.expected.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cli_inproc
from dialguard.rules import Policy, resolve_pack, shipped_packs

PACKS = Path(__file__).parent.parent / "scenarios" / "packs"
SCENARIOS = sorted(p for p in PACKS.glob("*.yaml"))


def test_every_pack_has_a_scenario():
    covered = {p.name.split("_")[0] for p in SCENARIOS}
    assert set(shipped_packs()) - {"cn-default"} <= covered


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_pack_scenario(settings, scenario):
    expected = [json.loads(x) for x in scenario.with_suffix("").with_suffix(".expected.jsonl").read_text().splitlines()
                if x.strip()] if False else [
        json.loads(x) for x in (scenario.parent / (scenario.stem + ".expected.jsonl")).read_text().splitlines()
        if x.strip()]
    p = cli_inproc.run(["simulate", str(scenario)])  # in this process (tests/cli_inproc.py)
    assert p.returncode == 0, p.stderr
    got = [json.loads(x) for x in p.stdout.splitlines()]
    for g, e in zip(got, expected):
        assert g == e, f"event {e['i']}"
    assert len(got) == len(expected)


@pytest.mark.parametrize("name", ["cn-carrier", "us-tcpa", "us-regf", "us-fl-ftsa", "uk-ofcom", "us-ok", "us-md",
                                  "us-wa", "us-la", "us-ms", "us-tx", "us-al", "us-states"])
def test_rules_show_cites_sources(name):
    p = cli_inproc.run(["rules", "show", name], env={"COLUMNS": "200", **__import__("os").environ})
    assert p.returncode == 0 and "Sources" in p.stdout
    for src in resolve_pack(name).sources:
        assert src.split(":")[0] in p.stdout


def test_packs_combine_strictest_wins():
    pol = Policy.load(["us-tcpa", "us-fl-ftsa", "us-regf"])
    assert len(pol.time_rules) == 3 and len(pol.caps) == 2
    pol = Policy.load(["cn-default", "cn-carrier"])
    assert {c.id for _, c in pol.caps} == {"per-number-per-campaign", "per-number-24h", "same-number-5min",
                                           "same-number-24h"}


def test_rules_show_lists_the_state_packs():
    p = cli_inproc.run(["rules", "show", "us-states"], env={"COLUMNS": "200", **__import__("os").environ})
    assert p.returncode == 0, p.stderr
    for code, pack in (("FL", "us-fl-ftsa"), ("LA", "us-la"), ("MS", "us-ms"), ("WA", "us-wa")):
        assert f"state US-{code}" in p.stdout and pack in p.stdout
