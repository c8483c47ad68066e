"""See 封卡 coming (issue #20), through real calls: a SIPp carrier starts
rejecting one calling number with 403; the outcomes Asterisk reports carry the
trunk's SIP code; the guard cools the number down after the configured run of
rejections and later calls go out on the other numbers, none on the blocked
one; an agent presenting the blocked number explicitly is denied, not given
another; a `simulate` replay of the same calls decides the same; the cool-down
reaches PostgreSQL with its figures.

Measured and printed (run with -s): the time from the carrier's first 403 to
the cool-down, and the calls still placed on the blocked number in that time.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import psycopg

from dialguard.rules import Policy
from dialguard.simulate import Scenario, run_scenario
from guard import WORKDAY_10H, Cdr, dialguard, numbers, place_calls, scenario, tag
from sipp import REPO_ROOT, _log_lines, log_time, write_injection

AFTER = 2  # calls the carrier carries from the number before it starts rejecting it
RUN = 2  # the pack's consecutive_rejections threshold (scenarios/callerid_health/pack.yaml)
CALLS = 40
DEMO_UAC = REPO_ROOT / "scripts" / "demo" / "agents_uac.xml"  # sends X-Caller-ID (field 3)


def carrier_blocking(dest: Path, blocked: str) -> Path:
    text = scenario("callerid_health", "carrier_uas.xml").read_text()
    dest.write_text(text.replace("@BLOCKED@", blocked).replace("@AFTER@", str(AFTER)))
    return dest


async def test_carrier_blocking_a_number_cools_it_down_and_calls_move_on(stack, guard, pg_dsn, tmp_path: Path,
                                                                         monkeypatch):
    rules = scenario("callerid_health", "pack.yaml")
    campaign, pool = await guard.campaign("health", rules=rules, pool=3)
    blocked = pool[0]
    agent = f"e2e-agent-{tag()}"
    nums = numbers(CALLS)
    injection = tmp_path / "calls.csv"
    write_injection(injection, [(n, campaign, agent) for n in nums])
    cdr = Cdr.mark(stack.dir)

    run = place_calls(stack, injection, tmp_path / "run", rate=5, limit=3,
                      uas_scenario=carrier_blocking(tmp_path / "carrier.xml", blocked))

    assert run.uac.failed == 0, run.uac.describe()
    invites = sorted(run.invites, key=lambda i: i.at or 0)
    assert len(invites) == CALLS, run.carrier.describe()  # every call allowed, on some caller ID
    rejects = {p[1]: log_time(p[2]) for p in _log_lines(run.carrier.log) if len(p) >= 3 and p[0] == "REJECT"}
    on_blocked = [i for i in invites if i.from_user == blocked]
    assert len(rejects) >= RUN and set(rejects) <= {i.call_id for i in on_blocked}, rejects
    assert [i.call_id in rejects for i in on_blocked][:AFTER] == [False] * AFTER

    # The cool-down, with why and until when (outcome.lua, atomically with the outcome)
    keys = guard.engine.keys
    btag = keys.cid_tag(blocked)
    until = await guard.engine.redis.zscore(keys.cid_cooldown, btag)
    assert until is not None and int(until) == int(WORKDAY_10H.timestamp() * 1000) + 24 * 3600 * 1000
    why = json.loads(await guard.engine.redis.hget(keys.cid_cool_why, btag))
    (trig,) = why["triggered"]
    assert (trig["rule"], trig["metric"], trig["run"]) == ("carrier-rejections", "consecutive_rejections", RUN)
    cooled_at = why["ts"] / 1000

    # Nothing on the blocked number after the cool-down; the calls went on, on the others
    after = [i for i in invites if (i.at or 0) > cooled_at]
    assert after, "no call after the cool-down: the test proves nothing"
    assert blocked not in {i.from_user for i in after}, after
    assert {i.from_user for i in after} == set(pool[1:])
    assert len(rejects) <= RUN + 2, "more rejections than the run plus the calls in flight"  # limit=3

    first_reject = min(rejects.values())
    placed = [i for i in on_blocked if first_reject <= (i.at or 0) <= cooled_at]
    rows = cdr.for_numbers(set(nums), expect=CALLS)
    assert Counter(r["dialguard_result"] for rs in rows.values() for r in rs) == {"ALLOW": CALLS}
    # the call whose outcome cooled the number down (its decision id is in the record)
    number_of = {r["dialguard_decision_id"]: r["dst"] for rs in rows.values() for r in rs}
    (why_call,) = [i.call_id for i in on_blocked if i.number == number_of[why["did"]]]
    assert why_call in rejects
    print(f"\ncaller-ID health: cool-down {1000 * (cooled_at - first_reject):.0f} ms after the first 403 "
          f"({1000 * (cooled_at - rejects[why_call]):.0f} ms after the 403 that completed the run); "
          f"calls placed on the blocked caller ID from the first 403 to the cool-down: {len(placed)} "
          f"(rejected {len(rejects)} of {len(on_blocked)} on it; {CALLS} calls, rate 5/s, 3 at a time)")

    # The admin's view: callerid list / health, on the stack's rules clock
    monkeypatch.setenv("DIALGUARD_TEST_CLOCK", "1")
    listed = json.loads(dialguard("callerid", "list", "--json").stdout)["caller_ids"]
    (row,) = [r for r in listed if r["caller_id"] == blocked]
    assert row["cooldown_until"] and "carrier-rejections" in row["cooldown_reason"], row
    health = json.loads(dialguard("callerid", "health", "--json", "--full").stdout)["caller_ids"]
    (h,) = [r for r in health if r["caller_id"] == blocked]
    assert h["figures"]["run"] >= RUN and h["figures"]["rejected"] == len(rejects), h
    masked = json.loads(dialguard("callerid", "health", "--json").stdout)["caller_ids"]
    assert blocked not in {r["caller_id"] for r in masked}

    # An agent presenting the blocked number explicitly: checked and denied, not swapped
    probe = tmp_path / "probe.csv"
    (probe_number,) = numbers(1)
    write_injection(probe, [(probe_number, campaign, agent, blocked, "")])
    cdr2 = Cdr.mark(stack.dir)
    again = place_calls(stack, probe, tmp_path / "probe", uac_scenario=DEMO_UAC)
    assert again.invites == [], again.carrier.describe()
    (prow,) = cdr2.for_numbers({probe_number}, expect=1)[probe_number]
    assert (prow["dialguard_result"], prow["dialguard_reasons"]) == ("DENY", "caller_id_not_approved"), prow

    # The replay: the same calls on the same caller IDs with the outcomes the
    # carrier gave (SPEC §5 hangup_cause / sip_code), then the probe
    # carrier in the order things happened: attempts when the guard decided them
    # (a decision id starts with its time in ms), a rejection when its report
    # was applied: the one that cooled the number down at the cool-down, the
    # rejections counted in its figures before it, those still in flight then
    # (reported later; the figures start afresh after a cool-down) after it; an
    # answered call when it ended (an answer reported after a 403 breaks the run).
    at = WORKDAY_10H.isoformat()
    decided = {r["dst"]: int(r["dialguard_decision_id"][:12], 16) / 1000 for rs in rows.values() for r in rs}
    others = sorted((c for c in rejects if c != why_call), key=rejects.get)
    before_trigger = set(others[:trig["rejected"] - 1])
    timeline = []
    for i in invites:
        timeline.append((decided[i.number], 0, {"at": at, "attempt": {"number": i.number, "campaign": campaign,
                                                                      "agent": agent, "caller_id": i.from_user}}))
        if i.call_id in rejects:
            t = cooled_at if i.call_id == why_call else \
                min(rejects[i.call_id], cooled_at) if i.call_id in before_trigger else cooled_at + 0.001
            outcome = {"result": "failed", "hangup_cause": 21, "sip_code": 403}
        else:  # reported when the call ended (the carrier got its BYE): after a later 403, maybe
            t, outcome = run.byes.get(i.call_id, i.at or 0), {"result": "answered"}
        timeline.append((t, 1, {"at": at, "outcome": {"number": i.number, **outcome}}))
    events = [e for _, _, e in sorted(timeline, key=lambda x: (x[0], x[1]))]
    events.append({"at": at, "attempt": {"number": probe_number, "campaign": campaign, "agent": agent,
                                         "caller_id": blocked}})
    sc = Scenario.model_validate({"rules": str(rules), "default_region": "CN", "events": events})
    replay = await run_scenario(sc, Policy.load(str(rules)), emit=lambda _line: None)
    if [r["decision"] for r in replay].count("deny") != 1:
        for t, k, e in sorted(timeline, key=lambda x: (x[0], x[1])):
            print(round(t - first_reject, 3), k, e.get("attempt", e.get("outcome")))
        print(trig, cooled_at - first_reject, [(r["i"], r["decision"]) for r in replay if r["decision"] == "deny"])
    assert [(r["decision"], r["reasons"]) for r in replay] == [("allow", [])] * CALLS + \
        [("deny", ["caller_id_not_approved"])]

    # Audited: the cool-down reaches PostgreSQL with the figures that triggered it
    deadline = time.monotonic() + 20
    found = None
    while time.monotonic() < deadline and not found:
        with psycopg.connect(pg_dsn) as conn:
            found = conn.execute("select actor, why, payload from audit_admin_actions "
                                 "where action = 'callerid_cooldown' and target = %s", (btag,)).fetchone()
        if not found:
            time.sleep(0.5)
    assert found, "the cool-down's audit record never reached PostgreSQL"
    actor, text, payload = found
    assert actor == "dialguard-health" and "carrier-rejections" in text
    assert payload["triggered"][0]["run"] == RUN and payload["until"] == int(until)
