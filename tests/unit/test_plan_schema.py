"""The plan is written down once (dialguard/decision/schema.py): decide.lua reads
exactly those fields, and build_plan writes exactly those (compile_plan equals
build_plan: tests/unit/test_plan_template.py). A field added in one place only
fails here."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from importlib import resources

from dialguard.decision import schema, scripts
from dialguard.decision.keys import Keys
from dialguard.decision.models import LIFTABLE
from dialguard.decision.plan import CallerIdCandidate, build_plan
from dialguard.numbers import parse_number
from dialguard.rules import Policy

LUA = resources.files("dialguard.decision.lua").joinpath("decide.lua").read_text()
# decide.lua's variables holding each table of the schema
VARS = {"plan": ("plan", "p"), "check": ("c",), "caller_id": ("cid",),
        "call_record": ("rec", r"plan\.call_record")}
RUNTIME = {"check": {"uncounted_set", "cand_off"}}  # decide.lua's own caches on a check, not sent


def lua_reads(table: str) -> set[str]:
    code = "\n".join(line.split("--")[0] for line in LUA.splitlines())  # comments out
    found = set()
    for var in VARS[table]:
        found |= set(re.findall(r"(?<![\w.])" + var + r"\.([a-z_]+)", code))
    return found - RUNTIME.get(table, set())


def test_decide_lua_reads_exactly_the_schema():
    for table, fields in schema.TABLES.items():
        if table != "candidate":
            assert lua_reads(table) == schema.names(fields), table


def test_decide_lua_reads_a_candidate_at_the_schemas_offsets():
    """A candidate is schema.CANDIDATE's fields in order in one flat array (stop 18):
    decide.lua's CAND_FIELDS offsets and CAND_N are exactly the schema's."""
    m = re.search(r"local (C_[A-Z_, ]+) = ([\d, ]+)\n", LUA)
    offsets = dict(zip(m.group(1).split(", "), (int(v) for v in m.group(2).split(", "))))
    assert offsets == {"C_" + name.upper(): i for i, name in enumerate(schema.names_in_order(schema.CANDIDATE))}
    # every read of a candidate's field goes through those offsets (or cand_offset)
    assert "cand." not in LUA and re.findall(r"cands\[b \+ (\d)\]", LUA) == []
    assert re.search(r"local CAND_N = (\d+)", LUA).group(1) == str(len(schema.CANDIDATE))


EVERY_RULE = """
pack: every-rule
version: "1"
title: one pack with every kind of rule the plan carries
sources: ["test"]
default_region: CN
hours: {zone: Asia/Shanghai, weekly: {all: ["09:00-18:00"]}}
caps:
  - {id: c1, scope: number_subject, max: 7, window: {days: 7}, uncounted_outcomes: [busy, failed]}
  - {id: c2, scope: number, max: 2, window: {rolling: 24h}}
  - {id: c3, scope: number_campaign, max: 2, window: lifetime}
min_interval: 1h
quiet_after_conversation: {scope: number_subject, window: {rolling: 48h}}
quiet_after_abandon: {abandoned: 72h, amd: 24h}
agent: {per_day: 200}
caller_id: {require_approved: true, per_minute: 5, per_hour: 50, per_day: 500, concurrency: 2}
consent_required: true
"""


def full_plan(tmp_path):
    """A plan with every field: every rule kind, caller ID candidates, call id,
    audit, rules and calendar versions, shadow rules, a valid number, a party."""
    f = tmp_path / "every-rule.yaml"
    f.write_text(EVERY_RULE)
    policy = Policy.load(str(f))
    keys = Keys("dg", b"k" * 32)
    info = parse_number("+8613812345678", "CN")
    tag = keys.number_tag(info.e164)
    cands = [CallerIdCandidate(c, keys.cid_tag(c), True) for c in ("+8613800138000", "+8613800138001")]
    return build_plan(
        policy=policy, keys=keys, info=info, number_tag=tag, campaign="c1", agent="a1", subject="debt-1",
        call_id="1712.1", decision_id="d1", now=datetime(2026, 3, 2, 3, tzinfo=timezone.utc), pre_reasons=[],
        candidates=cands, check_caller_id=True, site_timezone="Asia/Shanghai", audit_payload="{}",
        audit_max=1000, request_fp="ab", versions=("3|", "3"), calendar_version="2",
        shadow=(Policy.load("us-tcpa"), "4", []), party_tag=keys.party_tag("acct-1"))


def test_build_plan_writes_exactly_the_schema(tmp_path):
    b = full_plan(tmp_path).body
    assert set(b) == schema.names(schema.PLAN)
    assert set(b["shadow"]) <= schema.names(schema.PLAN)
    assert set(b["caller_id"]) == schema.names(schema.CALLER_ID)
    assert set(b["call_record"]) == schema.names(schema.CALL_RECORD)
    cands, n = b["caller_id"]["candidates"], len(schema.CANDIDATE)
    assert len(cands) == 2 * n and cands[::n] == [c.tag for c in full_plan(tmp_path).candidates]
    written = set()
    for c in b["checks"] + b["caller_id"]["checks"]:
        written |= set(c)
        assert set(c) <= schema.names(schema.CHECK)
    assert written == schema.names(schema.CHECK)


def test_decide_lua_touches_only_keys_of_the_plan():
    """Every command decide.lua sends names its key from KEYS, never a key built
    from another one (string.sub of the flags key was): Redis Cluster and the ACL
    key patterns check the keys a script declares."""
    code = "\n".join(line.split("--")[0] for line in LUA.splitlines())
    calls = re.findall(r"redis\.call\('([A-Z]+)',\s*([^,)]+)", code)
    assert len(calls) > 30 and len(calls) == code.count("redis.call(")
    for cmd, first in calls:
        if cmd == "MGET":  # the DNC buckets: a list filled from KEYS only
            assert first == "unpack(bks" and re.search(r"bks\[i\] = KEYS\[ki\]", code)
            continue
        assert first.startswith("KEYS["), (cmd, first)


def test_the_last_caller_keys_are_the_plans(tmp_path):
    """decide.lua's '{n:<H>}:lc' / '{p:<Q>}:lc' (whom a complaint is about) come from keys.py."""
    p = full_plan(tmp_path)
    keys = Keys("dg", b"k" * 32)
    b = p.body
    assert p.keys[b["last_caller_key"] - 1] == keys.last_caller(keys.number_tag("+8613812345678"))
    assert p.keys[b["party_last_caller_key"] - 1] == keys.party_last_caller(keys.party_tag("acct-1"))
    assert p.keys[b["caller_id"]["penalty_key"] - 1] == keys.cid_penalties


def test_liftable_reasons_come_from_python(tmp_path):
    """decide.lua has no list of its own: scripts.py writes models.LIFTABLE into the
    source it loads (since stop 19; the plan carried it, decoded at every call)."""
    assert "liftable" not in full_plan(tmp_path).body
    assert "attempt_cap" not in LUA and "LIFTABLE = {}" in LUA
    assert LUA.count("{--[[models.LIFTABLE]]}") == 1
    m = re.search(r"\nlocal LIFTABLE_REASONS = \{([^}]*)\}\n", scripts.DECIDE.source)
    assert m and set(re.findall(r"'([a-z_]+)'", m.group(1))) == LIFTABLE
    assert len(re.findall(r"'", m.group(1))) == 2 * len(LIFTABLE)


def test_every_field_is_documented():
    for fields in schema.TABLES.values():
        for f in fields:
            assert f.name.islower() and (len(f.name) > 2 or f.name == "id") and f.type and f.meaning, f


def test_per_call_work_done_once_not_per_candidate():
    """Stop 19: a caller-ID check's candidate offset is looked up once a check (kept as
    c.cand_off), not once a check and candidate; the leases' bound '(' .. now is built once."""
    body = LUA[LUA.index("local function run_checks"):LUA.index("local function evaluate")]
    assert body.count("cand_offset(c.candidate_key)") == 1 and "if not off then" in body
    assert "c.cand_off = off" in body
    assert LUA.count("'(' .. now") == 1 and LUA.count("after_now") >= 3


def test_the_call_records_keys_are_sent_as_keys_indexes(tmp_path):
    """Stop 19: the call record's logs are KEYS indexes in the plan (their text was sent
    again in every plan); decide.lua joins them (keys_text) as outcome.lua splits them."""
    p = full_plan(tmp_path)
    rec = p.body["call_record"]
    for name in ("attempt_keys", "conversation_keys"):
        assert rec[name] and all(isinstance(i, int) and 1 <= i <= len(p.keys) for i in rec[name]), name
    for name in ("abandon_key", "machine_key"):
        assert isinstance(rec[name], int) and 0 <= rec[name] <= len(p.keys), name
    assert "keys_text(rec.attempt_keys)" in LUA and "keys_text(rec.conversation_keys)" in LUA
