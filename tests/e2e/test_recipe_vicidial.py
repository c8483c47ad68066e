"""The VICIdial recipe (docs/VICIDIAL.md) on a reproduction of VICIdial's
generated dialplan: a carrier entry (call_log AGI, dialguard's line, Dial) run
by the second leg of an Originate-shaped Local channel, as AST_VDauto_dial.pl
places its calls.

The guard gets the carrier entry's campaign, the number with its country code,
the campaign CID VICIdial put on the channel, and VICIdial's call identifier
(the caller ID name V<date><lead id>) as the call id, so the audit joins the
lead.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from audit import decisions, outcomes
from guard import agi_server, dialguard, numbers, render, scenario
from sipp import run_calls, write_injection

_rng = random.SystemRandom()


def vicidial_code(lead_id: int, kind: str = "V") -> str:
    """VICIdial's caller ID name of an auto-dialed (V) or manual (M) call: 9
    digits of month/day/hour/minute/second (trimmed to 9), the lead id on 10 digits."""
    return kind + "".join(_rng.choice("0123456789") for _ in range(9)) + f"{lead_id:010d}"


@pytest.fixture
async def vicidial(guard, asterisk):
    campaign, (cid,) = await guard.campaign("vd")
    asterisk.rx(f"dialplan set global VD_E2E_CAMPAIGN {campaign}")
    try:
        yield campaign, cid
    finally:
        asterisk.rx("dialplan set global VD_E2E_CAMPAIGN \"\"")


def call(stack, injection: Path, workdir: Path):
    return run_calls(injection, workdir, sip_port=stack.sip_port, agents_port=stack.agents_port,
                     carrier_port=stack.carrier_port, caller="vicidial", rate=5, limit=5, hold_ms=200,
                     timeout_s=60)


def write_calls(path: Path, ok: str, dnc: str, manual: str, other: str, cid: str) -> tuple[str, str, str]:
    codes = vicidial_code(_rng.randrange(1, 10**8)), vicidial_code(_rng.randrange(1, 10**8)), \
        vicidial_code(_rng.randrange(1, 10**8), "M")
    render(scenario("recipe_vicidial", "calls.csv"), path, ok=ok, dnc=dnc, manual=manual, other=other,
           code_ok=codes[0], code_dnc=codes[1], code_manual=codes[2], cid=cid.lstrip("+"))
    return codes


async def test_carrier_entry_allowed_and_dnc_refused(stack, vicidial, tmp_path: Path) -> None:
    campaign, cid = vicidial
    ok, dnc, manual, other = numbers(4)
    dialguard("dnc", "add", dnc)
    code_ok, code_dnc, code_manual = write_calls(tmp_path / "calls.csv", ok, dnc, manual, other, cid)
    log = stack.log("asterisk")
    logged = log.stat().st_size

    run = call(stack, tmp_path / "calls.csv", tmp_path)

    assert run.uac.failed == 0, run.uac.describe()
    # Allowed: the carrier gets ${EXTEN:1} (country code + number) with the approved CID.
    assert sorted(i.number for i in run.invites) == sorted("86" + n for n in (ok, manual, other)), \
        run.carrier.describe()
    assert all(i.from_user == cid and i.pai_user == cid for i in run.invites), run.invites
    # Refused: no INVITE; the carrier entry ended with cause 21 (SIP 403 on the first leg).
    assert Counter((c.number, c.outcome, c.code) for c in run.calls) == \
        {("986" + ok, "answered", None): 1, ("986" + dnc, "rejected", 403): 1,
         ("986" + manual, "answered", None): 1, ("986" + other, "answered", None): 1}, run.calls
    rows = decisions(stack.pg_dsn, campaign, expect=4)
    assert [(r["allowed"], r["reasons"], r["call_id"], r["agent"]) for r in rows[:3]] == \
        [(True, [], code_ok, "vicidial-auto"), (False, ["dnc"], code_dnc, "vicidial-auto"),
         (True, [], code_manual, "vicidial-auto")], rows
    # A caller ID name that is not VICIdial's V/M code is not taken as the call
    # id: the channel's uniqueid is.
    assert rows[3]["allowed"] and re.fullmatch(r"\d+\.\d+", rows[3]["call_id"]), rows[3]
    # ... and the entry's dialplan logged no expression error for it (the lead id's
    # arithmetic, expanded by IF() even without a code, once logged "syntax error")
    with open(log, "rb") as f:
        f.seek(logged)
        assert b"syntax error" not in f.read(), f"see {log} after byte {logged}"


async def test_guard_down_no_call_reaches_the_carrier(stack, vicidial, tmp_path: Path) -> None:
    campaign, cid = vicidial
    write_calls(tmp_path / "calls.csv", *numbers(4), cid)
    agi_server("stop")
    try:
        run = call(stack, tmp_path / "calls.csv", tmp_path / "down")
    finally:
        agi_server("start")

    assert run.uac.failed == 0, run.uac.describe()
    assert run.invites == [], run.carrier.describe()
    assert [(c.outcome, c.code) for c in run.calls] == [("rejected", 503)] * 4, run.calls


async def test_originate_as_vicidial_places_it(stack, vicidial, asterisk, tmp_path: Path) -> None:
    """The call placed the way AST_VDauto_dial.pl places it: an Originate (here
    through ARI, the same core originate as AMI's) of Local/9<86><number>@default
    to Exten 8368 with Callerid "V<date><lead>" <campaign CID>: the carrier entry
    runs on the Local channel's second leg with that caller ID, the carrier answers,
    and the call ends cleanly.

    `formats=slin` is what an AMI Originate without Codecs asks for (manager.c
    appends slin). ARI's default without `formats` is every audio format, and the
    bridge then found "No path to translate" from the carrier's ulaw: the call was
    cancelled after the carrier's 200 OK, and Asterisk's retransmitted BYE reached
    the next test's carrier (stop 22's flake)."""
    import base64
    import json
    import urllib.parse
    import urllib.request

    from sipp import CARRIER_UAS, Sipp, parse_uas_log, parse_uas_times

    campaign, cid = vicidial
    (number,) = numbers(1)
    code = vicidial_code(_rng.randrange(1, 10**8))
    params = urllib.parse.urlencode({
        "endpoint": f"Local/986{number}@default", "context": "default", "extension": "8368", "priority": "1",
        "callerId": f'"{code}" <{cid.lstrip("+")}>', "timeout": "30", "formats": "slin"})
    auth = base64.b64encode(f"{stack.ari_user}:{stack.ari_password}".encode()).decode()
    carrier = Sipp("carrier", CARRIER_UAS, tmp_path, stack.carrier_port, timeout_s=60)
    with carrier:
        carrier.wait_ready()
        req = urllib.request.Request(f"{stack.ari_url}/ari/channels?{params}", method="POST",
                                     headers={"Authorization": f"Basic {auth}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200, resp.read()
            json.loads(resp.read())
        rows = decisions(stack.pg_dsn, campaign, expect=1)
        # 8368 hangs up 1 s after the answer; wait until no channel carries the call.
        deadline = time.monotonic() + 15
        while any(ch.get("caller", {}).get("name") == code for ch in json.loads(asterisk.ari_get("/ari/channels"))):
            assert time.monotonic() < deadline, "the originated call never ended"
            time.sleep(0.1)
    result = carrier.stop(grace=5.0)

    assert result is not None
    (invite,) = parse_uas_log(result.log)
    # the call was answered and hung up by the PBX, not cancelled after the answer
    assert result.failed == 0 and result.successful == 1, result.describe()
    assert invite.call_id in parse_uas_times(result.log, "ANSWER"), result.describe()
    assert invite.number == "86" + number, invite
    assert invite.from_user == cid and invite.pai_user == cid, invite
    assert [(r["allowed"], r["call_id"]) for r in rows] == [(True, code)], rows


async def test_allowed_call_is_cut_at_the_rules_maximum(stack, guard, asterisk, tmp_path: Path) -> None:
    """${DIALGUARD_DIAL_OPTS} at the end of the entry's Dial options carries the
    guard's maximum duration: neither side hangs up, the PBX does."""
    campaign, (cid,) = await guard.campaign("vd-max", rules=scenario("guard_max_duration", "pack.yaml"))
    asterisk.rx(f"dialplan set global VD_E2E_CAMPAIGN {campaign}")
    (number,) = numbers(1)
    injection = tmp_path / "calls.csv"
    write_injection(injection, [["986" + number, vicidial_code(_rng.randrange(1, 10**8)), cid.lstrip("+")]])
    try:
        run = run_calls(injection, tmp_path, sip_port=stack.sip_port, agents_port=stack.agents_port,
                        carrier_port=stack.carrier_port, caller="vicidial", rate=1, limit=1, timeout_s=20,
                        uac_scenario=scenario("guard_max_duration", "agents_uac.xml"))
    finally:
        asterisk.rx("dialplan set global VD_E2E_CAMPAIGN \"\"")

    assert run.uac.failed == 0 and run.carrier.failed == 0, run.uac.describe()
    (invite,) = run.invites
    held = run.byes[invite.call_id] - run.answers[invite.call_id]
    assert held >= 3 - 0.05, f"cut after {held:.3f}s, before the 3 s maximum"


@pytest.mark.parametrize("report", ["cel", "agi"])
async def test_outcome_applied_to_the_caller_code(stack, guard, asterisk, tmp_path: Path, report: str) -> None:
    """The check stores the call under VICIdial's caller code; the outcome (the
    hangup handler's CEL event, or its `report` AGI with DIALGUARD_REPORT=agi)
    must name the same call, or the guard finds no call: no outcome audited, the
    lease held until it expires, no quiet period.
    Rules: one live call per caller ID, a quiet hour after a conversation."""
    campaign, (cid,) = await guard.campaign("vd-out", rules=scenario("guard_outcome_reader", "pack.yaml"))
    asterisk.rx(f"dialplan set global VD_E2E_CAMPAIGN {campaign}")
    if report == "agi":
        asterisk.rx("dialplan set global DIALGUARD_REPORT agi")
    (number,) = numbers(1)
    first, again = vicidial_code(_rng.randrange(1, 10**8)), vicidial_code(_rng.randrange(1, 10**8))
    try:
        write_injection(tmp_path / "first.csv", [["986" + number, first, cid.lstrip("+")]])
        # held 1.5 s after the answer: a conversation (1 s of talk or more)
        run = run_calls(tmp_path / "first.csv", tmp_path / "first", sip_port=stack.sip_port,
                        agents_port=stack.agents_port, carrier_port=stack.carrier_port, caller="vicidial",
                        rate=1, limit=1, hold_ms=1500, timeout_s=30)
        hung_up = time.monotonic()
        assert run.uac.failed == 0 and len(run.invites) == 1, run.uac.describe()
        while await guard.live_leases(cid) != 0:
            assert time.monotonic() - hung_up <= 1.0, "caller-ID lease not released within 1 s of the hangup"
            await asyncio.sleep(0.02)
        (row,) = decisions(stack.pg_dsn, campaign, expect=1)
        assert (row["allowed"], row["call_id"]) == (True, first), row
        assert outcomes(stack.pg_dsn, row["decision_id"]) == ["conversation"]

        # The quiet period started: the next attempt on the number is refused.
        write_injection(tmp_path / "again.csv", [["986" + number, again, cid.lstrip("+")]])
        run = call(stack, tmp_path / "again.csv", tmp_path / "again")
        assert run.invites == [], run.carrier.describe()
        rows = decisions(stack.pg_dsn, campaign, expect=2)
        assert [(r["allowed"], r["call_id"], r["reasons"]) for r in rows] == \
            [(True, first, []), (False, again, ["post_conversation_quiet"])], rows
    finally:
        asterisk.rx("dialplan set global VD_E2E_CAMPAIGN \"\"")
        asterisk.rx("dialplan set global DIALGUARD_REPORT \"\"")
