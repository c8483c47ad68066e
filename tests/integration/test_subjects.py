"""Several subjects in one conversation on the live path (issue #19 item 5):
the AGI `report` with DIALGUARD_SUBJECTS and `dialguard outcome --subject` give
the same answers as `dialguard simulate` for the same events (Reg F comment
14(b)(4)-1.ii: the 7-day quiet period starts for every debt discussed)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from agi.engines import EngineProvider
from agi.server import FastAGIServer
from agi.client import agi_call
from dialguard.decision.models import DecisionRequest

UTC = timezone.utc
HOST = "127.0.0.1"
NUM = "+12125550177"
T0 = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)  # Monday 12:00 Eastern

SCENARIO = f"""
rules: us-regf
events:
  - {{at: "{T0.isoformat()}", attempt: {{number: "{NUM}", campaign: c1, agent: a1, subject: debt-1}}}}
  - {{at: "{(T0 + timedelta(minutes=1)).isoformat()}", outcome: {{number: "{NUM}", subject: debt-1, result: conversation, talk_s: 95}}}}
  - {{at: "{(T0 + timedelta(minutes=1)).isoformat()}", outcome: {{number: "{NUM}", subject: debt-2, result: conversation, talk_s: 95}}}}
  - {{at: "{(T0 + timedelta(hours=1)).isoformat()}", attempt: {{number: "{NUM}", campaign: c1, agent: a1, subject: debt-2}}}}
  - {{at: "{(T0 + timedelta(hours=1)).isoformat()}", attempt: {{number: "{NUM}", campaign: c1, agent: a1, subject: debt-3}}}}
"""


def _simulated(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(SCENARIO)
    p = subprocess.run([sys.executable, "-m", "dialguard.cli", "simulate", str(f)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    return [(x["decision"], x["reasons"], x["next_eligible_at"]) for x in lines[1:]]


def _z(d):
    return d.next_eligible_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if d.next_eligible_at else None


async def test_agi_report_with_subjects_equals_simulate(make_engine, settings, tmp_path):
    eng = await make_engine("us-regf", settings=dataclasses.replace(settings, test_clock=True),
                            skip_caller_id_without_pool=True)
    await eng.set_campaign("c1")
    srv = FastAGIServer(EngineProvider(engine=eng), host=HOST, port=0)
    await srv.start()
    try:
        await eng.set_test_clock(T0)
        v = (await agi_call(HOST, srv.bound_port, "check", (NUM, "c1", "a1", "debt-1", ""), uniqueid="u.s1")).variables
        assert v["DIALGUARD_RESULT"] == "ALLOW", v
        await eng.set_test_clock(T0 + timedelta(minutes=1))
        await agi_call(HOST, srv.bound_port, "report",
                       ("ANSWER", "95", "95", "16", v["DIALGUARD_DECISION_ID"], "", "", "", "debt-2"), uniqueid="u.s1")
        await eng.set_test_clock(T0 + timedelta(hours=1))
        got = []
        for i, sub in enumerate(("debt-2", "debt-3")):
            d = await eng.decide(DecisionRequest(number=NUM, campaign="c1", agent="a1", subject=sub, call_id=f"k{i}"))
            got.append((d.decision, d.reasons, _z(d)))
    finally:
        await srv.shutdown(grace_s=1)
    assert got[0][1] == ["post_conversation_quiet"] and got[1][0] == "allow"
    assert got == _simulated(tmp_path)


async def test_cli_outcome_with_subjects_equals_simulate(make_engine, tmp_path):
    eng = await make_engine("us-regf", skip_caller_id_without_pool=True)
    await eng.set_campaign("c1")
    d = await eng.decide(DecisionRequest(number=NUM, campaign="c1", agent="a1", subject="debt-1", call_id="cli-1"),
                         now=T0)
    assert d.allowed
    env = {**os.environ, "DIALGUARD_KEY_PREFIX": eng.keys.prefix, "DIALGUARD_RULES": "us-regf"}
    p = subprocess.run([sys.executable, "-m", "dialguard.cli", "outcome", "cli-1", "--result", "conversation",
                        "--talk-s", "95", "--subject", "debt-2", "--at", (T0 + timedelta(minutes=1)).isoformat(),
                        "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"call_id": "cli-1", "matched": True, "result": "conversation",
                                    "other_subjects": 1}
    got = []
    for i, sub in enumerate(("debt-2", "debt-3")):
        d = await eng.decide(DecisionRequest(number=NUM, campaign="c1", agent="a1", subject=sub, call_id=f"c{i}"),
                             now=T0 + timedelta(hours=1))
        got.append((d.decision, d.reasons, _z(d)))
    assert got == _simulated(tmp_path)
    bad = subprocess.run([sys.executable, "-m", "dialguard.cli", "outcome", "cli-1", "--result", "talked"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode != 0 and "result" in bad.stderr


def test_parse_subjects():
    from dialguard.subjects import parse_subjects

    assert parse_subjects("debt-2|debt-3 debt-2;x") == ["debt-2", "debt-3", "x"]
    assert parse_subjects("") == [] and parse_subjects(None) == []
    import pytest

    with pytest.raises(ValueError, match="at most"):
        parse_subjects("|".join(f"d{i}" for i in range(21)))
