"""The FreePBX recipe (docs/FREEPBX.md) on a reproduction of FreePBX 17's
generated outbound dialplan: real SIPp calls from a FreePBX device through
outrt-1 -> macro-dialout-trunk -> macro-dialout-trunk-predial-hook (dialguard)
-> the trunk.

The guard gets the route's campaign (global DIALGUARD_CAMPAIGN_ROUTE_1), the
extension (AMPUSER, from AstDB DEVICE/<device>/user) and the caller ID the
route chose (the extension's outbound CID, AstDB AMPUSER/<ext>/outboundcid).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from audit import decisions, outcomes
from guard import agi_server, dialguard, numbers, render, scenario
from sipp import run_calls, write_injection

DEVICE = "7001"  # the endpoint (asterisk_conf/pjsip_recipes.conf)


@pytest.fixture
async def freepbx(stack, guard, asterisk):
    """A fresh campaign on route 1 and a fresh extension behind device 7001
    whose outbound caller ID is approved for the campaign."""
    campaign, (cid,) = await guard.campaign("fpbx")
    ext = str(random.SystemRandom().randrange(200000, 999999))
    asterisk.rx(f"database put DEVICE {DEVICE}/user {ext}")
    asterisk.rx(f"database put AMPUSER {ext}/outboundcid {cid}")
    asterisk.rx(f"dialplan set global DIALGUARD_CAMPAIGN_ROUTE_1 {campaign}")
    try:
        yield campaign, ext, cid
    finally:
        asterisk.rx("dialplan set global DIALGUARD_CAMPAIGN_ROUTE_1 \"\"")
        asterisk.rx(f"database deltree AMPUSER/{ext}")


def call(stack, injection: Path, workdir: Path):
    return run_calls(injection, workdir, sip_port=stack.sip_port, agents_port=stack.agents_port,
                     carrier_port=stack.carrier_port, caller=DEVICE, rate=5, limit=5, hold_ms=200,
                     timeout_s=60)


async def test_route_call_allowed_and_dnc_refused(stack, freepbx, tmp_path: Path) -> None:
    campaign, ext, cid = freepbx
    ok, dnc = numbers(2)
    dialguard("dnc", "add", dnc)
    injection = render(scenario("recipe_freepbx", "calls.csv"), tmp_path / "calls.csv", ok=ok, dnc=dnc)

    run = call(stack, injection, tmp_path)

    assert run.uac.failed == 0, run.uac.describe()
    # Allowed: the trunk gets the number as routed, with the approved caller ID.
    (invite,) = run.invites
    assert invite.number == ok, run.carrier.describe()
    assert invite.from_user == cid and invite.pai_user == cid, invite
    # Refused: no INVITE; the phone gets the guard's cause (21: SIP 403).
    assert Counter((c.number, c.outcome, c.code) for c in run.calls) == \
        {(ok, "answered", None): 1, (dnc, "rejected", 403): 1}, run.calls
    # One decision per call: the route's first trunk (2) fails, the call moves on
    # to trunk 1 with the same allowed attempt (no second check, no second count).
    rows = decisions(stack.pg_dsn, campaign, expect=2)
    assert [(r["allowed"], r["reasons"], r["agent"]) for r in rows] == [(True, [], ext), (False, ["dnc"], ext)], rows
    # The allowed call's outcome was reported when the channel hung up (hangup handler;
    # 200 ms of talk is under the 1 s a conversation needs).
    assert outcomes(stack.pg_dsn, rows[0]["decision_id"]) == ["answered"]


async def test_guard_down_refuses_the_route(stack, freepbx, tmp_path: Path) -> None:
    campaign, _, _ = freepbx
    (number,) = numbers(1)
    injection = tmp_path / "calls.csv"
    write_injection(injection, [[number, "-", "-"]])
    agi_server("stop")
    try:
        run = call(stack, injection, tmp_path / "down")
    finally:
        agi_server("start")

    assert run.uac.failed == 0, run.uac.describe()
    assert run.invites == [], run.carrier.describe()
    # No other trunk, no "all circuits busy": the route ends with cause 34 (SIP 503).
    assert [(c.outcome, c.code) for c in run.calls] == [("rejected", 503)], run.calls
    assert decisions(stack.pg_dsn, campaign, timeout=1.0) == []


async def test_emergency_route_is_never_guarded(stack, freepbx, tmp_path: Path) -> None:
    campaign, _, _ = freepbx
    injection = tmp_path / "calls.csv"
    write_injection(injection, [["110", "-", "-"]])
    agi_server("stop")  # even with the guard down
    try:
        run = call(stack, injection, tmp_path / "sos")
    finally:
        agi_server("start")

    assert [i.number for i in run.invites] == ["110"], run.carrier.describe()
    assert [(c.outcome, c.code) for c in run.calls] == [("answered", None)], run.calls


async def test_allowed_call_is_cut_at_the_rules_maximum(stack, guard, asterisk, tmp_path: Path) -> None:
    """The guard's maximum duration reaches FreePBX's trunk Dial (L() appended
    to DIAL_TRUNK_OPTIONS): neither side hangs up, the PBX does."""
    campaign, (cid,) = await guard.campaign("fpbx-max", rules=scenario("guard_max_duration", "pack.yaml"))
    ext = str(random.SystemRandom().randrange(200000, 999999))
    asterisk.rx(f"database put DEVICE {DEVICE}/user {ext}")
    asterisk.rx(f"database put AMPUSER {ext}/outboundcid {cid}")
    asterisk.rx(f"dialplan set global DIALGUARD_CAMPAIGN_ROUTE_1 {campaign}")
    (number,) = numbers(1)
    injection = tmp_path / "calls.csv"
    write_injection(injection, [[number, "-", "-"]])
    try:
        run = run_calls(injection, tmp_path, sip_port=stack.sip_port, agents_port=stack.agents_port,
                        carrier_port=stack.carrier_port, caller=DEVICE, rate=1, limit=1, timeout_s=20,
                        uac_scenario=scenario("guard_max_duration", "agents_uac.xml"))
    finally:
        asterisk.rx("dialplan set global DIALGUARD_CAMPAIGN_ROUTE_1 \"\"")
        asterisk.rx(f"database deltree AMPUSER/{ext}")

    assert run.uac.failed == 0 and run.carrier.failed == 0, run.uac.describe()
    (invite,) = run.invites
    held = run.byes[invite.call_id] - run.answers[invite.call_id]
    assert held >= 3 - 0.05, f"cut after {held:.3f}s, before the 3 s maximum"
