"""The e2e harness itself: SIPp agents -> Asterisk -> SIPp carrier on the real stack."""

from __future__ import annotations

import csv
import uuid
from collections import Counter
from pathlib import Path

from sipp import SCENARIOS, read_injection, run_calls, write_injection


def test_direct_calls_reach_carrier(stack, tmp_path: Path) -> None:
    """Every call of the injection file reaches the carrier with its number; none fails."""
    injection = SCENARIOS / "direct_passthrough" / "calls.csv"
    expected = Counter(row[0] for row in read_injection(injection))

    run = run_calls(injection, tmp_path, sip_port=stack.sip_port, agents_port=stack.agents_port,
                    carrier_port=stack.carrier_port, caller="direct", rate=20, limit=20)

    assert run.uac.failed == 0, run.uac.describe()
    assert run.uac.successful == sum(expected.values()), run.uac.describe()
    assert Counter(c.number for c in run.calls if c.outcome == "answered") == expected
    assert Counter(i.number for i in run.invites) == expected, run.carrier.describe()
    assert run.carrier.failed == 0, run.carrier.describe()
    assert run.carrier.successful == sum(expected.values()), run.carrier.describe()
    # The caller ID Asterisk presents is the caller's From user.
    assert {i.from_user for i in run.invites} == {"direct"}
    assert len({i.call_id for i in run.invites}) == len(run.invites)


def _cdr_rows(stack, numbers: set[str]) -> dict[str, dict[str, str]]:
    path = stack.dir / "asterisk" / "log" / "cdr-custom" / "dialguard.csv"
    cols = ["start", "src", "dst", "disposition", "billsec", "campaign", "agent",
            "dialguard_result", "dialguard_reasons", "dialguard_decision_id", "uniqueid"]
    with open(path, newline="") as f:
        rows = [dict(zip(cols, row)) for row in csv.reader(f)]
    return {r["dst"]: r for r in rows if r["dst"] in numbers}


def test_agent_headers_reach_dialplan_and_cdr(stack, tmp_path: Path) -> None:
    """Calls from the agents' endpoint carry X-Campaign / X-Agent into the dialplan (CDR).

    Whatever the guard decides for these made-up numbers, the agents' side sees
    no failed call (a rejection is an answer) and every call leaves its CDR.
    """
    tag = uuid.uuid4().int % 10**6
    rows = [(f"1990000{tag:06d}{i}", f"camp-{i % 2}", f"agent-{i}") for i in range(4)]
    injection = tmp_path / "calls.csv"
    write_injection(injection, rows)

    run = run_calls(injection, tmp_path, sip_port=stack.sip_port, agents_port=stack.agents_port,
                    carrier_port=stack.carrier_port, caller="agents", rate=10, limit=10)

    assert run.uac.failed == 0, run.uac.describe()
    assert sorted(c.number for c in run.calls) == sorted(r[0] for r in rows)
    cdr = _cdr_rows(stack, {r[0] for r in rows})
    for number, campaign, agent in rows:
        assert number in cdr, f"no CDR for {number}"
        assert (cdr[number]["campaign"], cdr[number]["agent"]) == (campaign, agent)

