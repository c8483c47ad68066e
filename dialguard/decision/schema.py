"""The plan decide.lua executes (ARGV[1]: MessagePack from the engine's compiled
plans, JSON from build_plan; the same map), written down once.

dialguard/decision/plan.py writes it two ways from the same rules: build_plan
(a dict, the readable reference; also what `counters rebuild` replays) and
compile_plan (a template filled per request, the hot path); decide.lua reads
it under the same names. tests/unit/test_plan_schema.py checks that the three
use exactly the fields below, and tests/unit/test_plan_template.py that the two
writers agree field for field.

A key field holds a 1-based index into KEYS (every key is built by keys.py).
Times are milliseconds since the epoch, as strings (Lua 5.1 would write a large
number as 1.7e+12); a bound starting with "(" is exclusive, as in ZCOUNT.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    meaning: str


PLAN = (
    Field("now", "ms str", "the decision time"),
    Field("decision_id", "str", "this decision's id"),
    Field("pre_reasons", "[reason]", "reasons found before Redis (number, hours, caller ID given)"),
    Field("pause_key", "key", "kill switches hash"),
    Field("pause_fields", "[str]", "the switches that stop this call: all, camp:<campaign>"),
    Field("campaign_key", "key", "campaign approval hash (approved, start, end)"),
    Field("flags_key", "key", "the number's flags (dnc, optout, complaint, consent)"),
    Field("party_flags_key", "key", "the party's flags (optout, complaint, consent), when the request names one"),
    Field("campaign_dnc_key", "key", "the campaigns whose DNC list holds the number (set)"),
    Field("dnc_bucket_keys", "[key]", "DNC lists at scale: the global and the campaign's bucket (valid numbers)"),
    Field("dnc_record", "hex str", "the number's 5-byte fingerprint in those buckets (dnc.fingerprint)"),
    Field("campaign_tag", "str", "short hash of the campaign (campaign DNC, override grants)"),
    Field("consent_required", "0|1", "deny without recorded consent"),
    Field("checks", "[check]", "the number's and agent's counter rules (CHECK)"),
    Field("ttl_ms", "ms str", "expiry of the attempt logs written (the namespace's retention at least)"),
    Field("trim_before", "bound", "attempts older than the longest window: trimmed on write"),
    Field("write_keys", "[key]", "the attempt logs an allowed attempt is recorded in (trimmed, expiring)"),
    Field("keep_keys", "[key]", "the logs of lifetime caps, also recorded in: never trimmed nor expired"),
    Field("caller_id", "object", "caller-ID rules and candidates (CALLER_ID), when checked"),
    Field("lease_until", "ms str", "a picked caller ID's live-call lease ends (concurrency)"),
    Field("caller_id_ttl_ms", "ms str", "expiry of the caller ID's attempt log and leases"),
    Field("caller_id_trim_before", "bound", "caller-ID attempts older than this are trimmed"),
    Field("last_caller_key", "key", "the number's last caller ID ({n:<H>}:lc), when a caller ID is checked"),
    Field("party_last_caller_key", "key", "the party's last caller ID ({p:<Q>}:lc), with a party"),
    Field("call_key", "key", "the call record (with a call id)"),
    Field("request_fp", "hex str", "the request's keyed hash: an identical request gets the same answer"),
    Field("call_record", "object", "what the call record keeps for outcome.lua (CALL_RECORD)"),
    Field("audit_key", "key", "the audit stream (audit on)"),
    Field("audit_record", "JSON str", "the decision's audit record (else ARGV[2])"),
    Field("audit_max", "int", "refuse at this audit backlog (0/absent: no ceiling)"),
    Field("override_key", "key", "the number's override grant (valid numbers)"),
    Field("rules_key", "key", "rules versions hash, when following published versions"),
    Field("rules_versions", "str", "'active|shadow' the node evaluated with: else status 2 (stale)"),
    Field("rules_version", "str", "the active rules version, for the audit"),
    Field("calendars_key", "key", "calendar versions hash"),
    Field("calendar_version", "str", "the calendar version evaluated with: else status 2 (stale)"),
    Field("shadow", "plan", "the shadow rules' plan on the same KEYS: no call, audit, override fields"),
    Field("shadow_version", "str", "the shadow rules version, for the audit"),
)

CHECK = (
    Field("id", "str", "k<N>: names the rule in details and in the audit's counts"),
    Field("keys", "[key]", "the attempt logs counted (number and agent checks)"),
    Field("candidate_key", "str", "caller-ID checks: the candidate's field naming the log (attempts_key)"),
    Field("since", "bound", "the window's start: counted from here to now"),
    Field("max", "int", "the limit: deny when the count reaches it"),
    Field("reason", "reason", "the reason given when it is reached"),
    Field("outcome_log", "key", "<log>:x, attempts with a reported not-connected outcome"),
    Field("uncounted", "str", "outcomes (comma-separated) in outcome_log this rule does not count"),
)

CALLER_ID = (
    Field("candidates", "[candidate fields]", "the caller IDs to check or pick from, in order: CANDIDATE's "
          "fields of each, one flat array"),
    Field("checks", "[check]", "caller-ID rate rules, counted on each candidate's attempts_key"),
    Field("concurrency", "int", "live calls per caller ID at most (-1: no limit)"),
    Field("required", "0|1", "only approved (and not cooling down) caller IDs"),
    Field("approved_key", "key", "approved caller IDs (set of tags)"),
    Field("cooldown_key", "key", "caller IDs cooling down (zset tag -> until)"),
    Field("penalty_key", "key", "every caller ID's health penalty (hash tag -> '<pen>|<until ms>'), to pick"),
)

# A candidate is not a map: caller_id.candidates is one flat array holding each
# candidate's fields in this order (decide.lua: CAND_FIELDS), candidate i (1-based,
# what details name it by) from position len(CANDIDATE) * (i - 1). Eight maps of
# five fields were a quarter of decide.lua's plan decode (docs/BENCHMARKS.md, stop 18).
CANDIDATE = (
    Field("tag", "str", "the caller ID's keyed hash"),
    Field("approved", "0|1", "approved by configuration (else by approved_key)"),
    Field("attempts_key", "key", "its attempt log"),
    Field("live_key", "key", "its live-call leases"),
)

CALL_RECORD = (
    Field("number_key", "str", "the number's key prefix ({P}:{n:<H>})"),
    Field("attempt_keys", "[key]", "attempt logs an outcome moves to <log>:x (the record: space-separated)"),
    Field("conversation_keys", "[key]", "conversation logs a conversation is added to (the record: space-separated)"),
    Field("abandon_key", "key", "abandoned-call log (0: no such rule; the record: '')"),
    Field("machine_key", "key", "answering-machine hang-up log (0: no such rule; the record: '')"),
    Field("ttl_ms", "ms str", "the call record's expiry"),
    Field("health_config", "str", "the caller-ID health settings id"),
    Field("campaign_tag", "str", "short hash of the campaign"),
)

TABLES = {"plan": PLAN, "check": CHECK, "caller_id": CALLER_ID, "candidate": CANDIDATE, "call_record": CALL_RECORD}


def names(table: tuple[Field, ...]) -> frozenset[str]:
    return frozenset(f.name for f in table)


def names_in_order(table: tuple[Field, ...]) -> tuple[str, ...]:
    return tuple(f.name for f in table)
