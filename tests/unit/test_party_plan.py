"""Caps and quiet periods scoped by party (issue #19): which logs a plan
checks and writes, with and without a party in the request."""

from datetime import datetime, timezone

from dialguard.config import Settings
from dialguard.decision.keys import Keys
from dialguard.numbers import parse_number
from dialguard.decision.plan import build_plan, call_record_keys
from dialguard.rules import Policy

NOW = datetime(2026, 3, 2, 17, tzinfo=timezone.utc)


def plan(party_tag, subject="debt-5"):
    keys = Keys("dg", Settings().hash_secret)
    info = parse_number("+12025550123", "US")
    tag = keys.number_tag(info.e164)
    p = build_plan(policy=Policy.load("us-regf"), keys=keys, info=info, number_tag=tag, campaign="c1", agent="a1",
                   subject=subject, call_id="k1", decision_id="d1", now=NOW, pre_reasons=[], candidates=[],
                   check_caller_id=False, site_timezone="UTC", audit_payload=None, audit_max=None,
                   party_tag=party_tag)
    return keys, tag, p


def test_party_scope_checks_and_writes_the_party_and_the_number():
    keys, tag, p = plan("P1")
    written = {p.keys[i - 1] for i in p.body["write_keys"]}
    party_log = keys.party_prefix("P1") + ":a:s:" + __import__("dialguard.numbers").numbers.short_hash("debt-5")
    assert party_log in written and keys.attempts(tag, "number_subject", subject="debt-5") in written
    checked = [p.keys[c["keys"][0] - 1] for c in p.body["checks"]]
    assert party_log in checked and keys.attempts(tag, "number_subject", subject="debt-5") in checked
    # the conversation starts the quiet on both; other subjects go to the party's
    cv = call_record_keys(p.keys, p.body["call_record"])["cv"]
    assert keys.party_prefix("P1") + ":cv:s:" in cv and keys.num(tag, "cv:s:") in cv
    assert p.body["call_record"]["number_key"] == keys.party_prefix("P1")


def test_without_party_the_number_and_subject():
    keys, tag, p = plan(None)
    allkeys = " ".join(p.keys)
    assert "{p:" not in allkeys
    assert keys.attempts(tag, "number_subject", subject="debt-5") in p.keys
    assert p.body["call_record"]["number_key"] == f"dg:{{n:{tag}}}"


def test_a_party_names_its_flags_for_decide_lua():
    """opt-out, complaint and consent of the person: read in the decision's script call."""
    keys, tag, p = plan("P1")
    assert p.keys[p.body["party_flags_key"] - 1] == keys.party_flags("P1") == "dg:{p:P1}:f"
    _keys, _tag, p = plan(None)
    assert "party_flags_key" not in p.body
