"""The decision's audit record: the JSON the audit stream carries in `j` (and
the spool, for a decision the stream never saw), written in one place.

JSON text written directly (the hot path builds one per decision), exactly as
json.dumps(dict, separators=(",", ":")) of the same fields in this order would:
tests/unit/test_plan_template.py compares it with that encoding byte for byte.
"""

from __future__ import annotations

import json

_encode = json.JSONEncoder(separators=(",", ":")).encode
_esc = json.encoder.encode_basestring_ascii  # what _encode writes for a str


def _opt(v) -> str:
    return "null" if v is None else _encode(v)


def tail(rules: str | None, rules_version: str | None, node: str | None, *, calendar: str | None = None,
         unrecorded: str | None = None) -> str:
    """The record's end, the same for every decision of a rules set on a node:
    the rules and node, then the calendar version (or, for a decision the stream
    never saw, why)."""
    end = f'"rules":{_opt(rules)},"rv":{_opt(rules_version)},"node":{_opt(node)}'
    if unrecorded is not None:
        return end + f',"unrecorded":{_esc(unrecorded)}}}'
    return end + f',"cal":{int(calendar) if calendar else "null"}}}'


def decision_record(*, decision_id: str, at_ms: int, ts_ms: int, number_tag: str, sealed_number: str | None,
                    campaign: str, agent: str, subject: str | None, call_id: str | None, pre_json: str,
                    sealed_caller_id: str | None, estimated=(), end: str, region: str | None = None,
                    postal: str | None = None, party: str | None = None) -> str:
    """at_ms: the decision time; ts_ms: the wall clock; sealed_*: the number and the
    caller ID asked for, sealed (no plaintext number in Redis, SPEC §7); pre_json:
    the reasons found before Redis, as JSON; estimated: the calendars whose day
    was estimated (unknown year); end: tail(); region, postal: the stated
    location as given; party: the party's keyed hash (dialguard.decision.decider.party_hash)."""
    est = f'"est":{_encode(sorted(estimated))},' if estimated else ""
    if region is not None:
        est += f'"region":{_esc(region)},'
    if postal is not None:
        est += f'"postal":{_esc(postal)},'
    if party is not None:
        est += f'"party":{_esc(party)},'

    return (f'{{"did":{_esc(decision_id)},"at":{at_ms},"ts":{ts_ms},"n":{_esc(number_tag)},'
            f'"ne":{_esc(sealed_number) if sealed_number else "null"},"campaign":{_esc(campaign)},'
            f'"agent":{_esc(agent)},"subject":{_esc(subject) if subject is not None else "null"},'
            f'"call_id":{_esc(call_id) if call_id is not None else "null"},"pre":{pre_json},'
            f'"cid_req":{_esc(sealed_caller_id) if sealed_caller_id else "null"},{est}{end}')
