"""Audit stream entries -> rows (pure functions; no I/O).

Stream entry fields (written by the Lua scripts in the same atomic step as the
counters, see docs/AUDIT.md):

- t=decision: id, allow (1|0), r (reasons, comma-separated), ch (caller-ID tag), j,
  and (versioned rules) rver (active rules version, '' = the node's config rules),
  sv / sa / sr (shadow version, verdict '1'|'0', reasons; '' = no shadow),
  ov / ovr (override id and the reasons it lifted), rp (a replay: the decision
  whose answer an identical request under the same call id got again); in j,
  cal (imported calendar version) and est (calendars whose day was estimated:
  unknown_year allow/weekdays)
- t=outcome:  id, did ('' when the call id was unknown), res, j
- t=event:    id, kind, j
- t=override: id, j {did?, n, ne, campaign, lifted[], by, why, at, expires?, node}
- t=admin:    id, j {action, actor, target, why, at, node, ...}; calendar versions
  (dialguard/calendars.py) are admin records: action calendar_publish|calendar_activate,
  version, hash, calendars[] (the full set of imported years)
- t=rules:    id, j {version, mode (active|shadow|shadow_off), hash, name, spec, files[], actor, why, at, node}

An entry that cannot be read as one of these becomes a reject row (kept raw).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from dialguard.timeutil import from_ms


RULES_MODES = frozenset({"active", "shadow", "shadow_off"})
EVENT_KINDS = frozenset({"opt_out", "complaint", "consent", "consent_revoke", "dnc_add", "dnc_remove"})


class BadRecord(ValueError):
    pass


def stream_ms(stream_id: str) -> int:
    return int(stream_id.split("-", 1)[0])


def stream_key(stream_id: str) -> tuple[int, int]:
    """Sort key of a stream id: (ms, sequence)."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _req(d: dict, k: str):
    v = d.get(k)
    if v is None or v == "":
        raise BadRecord(f"field {k!r} missing")
    return v


def _opt_int(v) -> int | None:
    if v is None or v == "":
        return None
    return int(v)


def _text(v) -> str | None:
    return None if v is None else str(v)


@dataclass
class Batch:
    """Rows for one PostgreSQL transaction, per table, in stream order."""

    decisions: list[tuple] = field(default_factory=list)
    outcomes: list[tuple] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)
    overrides: list[tuple] = field(default_factory=list)
    admin: list[tuple] = field(default_factory=list)
    rules: list[tuple] = field(default_factory=list)
    rejects: list[tuple] = field(default_factory=list)
    campaigns: dict[str, str] = field(default_factory=dict)        # name -> tag
    caller_ids: dict[str, str] = field(default_factory=dict)       # tag -> caller ID as requested
    ids: list[str] = field(default_factory=list)                   # every stream id, to ack

    def __len__(self) -> int:
        return len(self.ids)


DECISION_COLS = ("decision_id", "stream_id", "decided_at", "recorded_at", "allowed", "reasons", "pre_reasons",
                 "number_hash", "number_enc", "campaign", "agent", "subject", "call_id", "caller_id_requested",
                 "caller_id_hash", "rules", "rules_version", "node", "latency_ms", "counters", "override_id",
                 "request", "rules_seq", "shadow_version", "shadow_allowed", "shadow_reasons", "override_lifted",
                 "calendar_version", "calendar_estimated", "replay_of", "region", "postal_code", "party_hash")
OUTCOME_COLS = ("outcome_id", "stream_id", "decision_id", "call_id", "result", "talk_s", "hangup_cause",
                "subject", "reported_at", "recorded_at", "node", "payload")
EVENT_COLS = ("event_id", "stream_id", "kind", "number_hash", "number_enc", "campaign", "at", "recorded_at",
              "node", "payload")
OVERRIDE_COLS = ("override_id", "stream_id", "decision_id", "number_hash", "number_enc", "campaign", "lifted",
                 "granted_by", "why", "at", "expires_at", "recorded_at", "node", "payload")
ADMIN_COLS = ("action_id", "stream_id", "action", "actor", "target", "why", "at", "recorded_at", "node",
              "payload")
RULES_COLS = ("record_id", "stream_id", "version", "mode", "hash", "name", "spec", "files", "actor", "why", "at",
              "recorded_at", "node", "payload")
REJECT_COLS = ("stream_id", "fields", "error")


def _payload(fields: dict[str, str]) -> tuple[dict, str]:
    raw = _req(fields, "j")
    try:
        j = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRecord(f"payload is not JSON: {exc}") from None
    if not isinstance(j, dict):
        raise BadRecord("payload is not a JSON object")
    return j, raw


def _counters(fields: dict[str, str], j: dict) -> str | None:
    """Counters seen by decide.lua, when it sends them: field cs = "k0:3,k1:0"
    (count per check), labels in the payload's chk {"k0": [reason, limit, label]}."""
    cs = fields.get("cs")
    if not cs and "chk" not in j:
        return None
    counts = {}
    for part in (cs or "").split(","):
        if ":" in part:
            k, _, n = part.partition(":")
            counts[k] = int(n) if n.lstrip("-").isdigit() else n
    return json.dumps({"counts": counts, "checks": j.get("chk")}, separators=(",", ":"))


def decision_row(sid: str, f: dict[str, str]) -> tuple:
    j, raw = _payload(f)
    did = _req(f, "id")
    if j.get("did") not in (None, did):
        raise BadRecord(f"decision id {did} differs from the payload's {j.get('did')}")
    rec_ms = stream_ms(sid)
    latency = None
    if j.get("ts") is not None:  # wall clock at the request's start (ms), when the engine sends it
        latency = max(0.0, rec_ms - float(j["ts"]))
    reasons = _codes(f.get("r"))
    sa = f.get("sa") or ""
    if sa not in ("", "0", "1"):
        raise BadRecord(f"shadow verdict sa={sa!r}: expected '1', '0' or ''")
    shadow_version = _opt_int(f.get("sv"))
    shadowed = shadow_version is not None or sa != ""
    return (
        did, sid, from_ms(_req(j, "at")), from_ms(rec_ms), f.get("allow") == "1", reasons,
        list(j.get("pre") or []), str(_req(j, "n")), _text(j.get("ne")), str(_req(j, "campaign")),
        str(_req(j, "agent")), _text(j.get("subject")), _text(j.get("call_id")), _text(j.get("cid_req")),
        f.get("ch") or None, _text(j.get("rules")), _text(j.get("rv")), _text(j.get("node")), latency,
        _counters(f, j), f.get("ov") or _text(j.get("ov")), raw,
        _opt_int(f.get("rver")), shadow_version, (sa == "1") if sa else None,
        _codes(f.get("sr")) if shadowed else None, _codes(f.get("ovr")) if f.get("ovr") else None,
        _opt_int(j.get("cal")), _estimated(j.get("est")), f.get("rp") or None,
        _text(j.get("region")), _text(j.get("postal")), _text(j.get("party")),
    )


def _estimated(v) -> list[str] | None:
    if v is None or v == []:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise BadRecord(f"est {v!r} is not a list of calendar codes")
    return v


def _codes(v: str | None) -> list[str]:
    return [r for r in (v or "").split(",") if r]


def outcome_row(sid: str, f: dict[str, str]) -> tuple:
    j, raw = _payload(f)
    return (
        _req(f, "id"), sid, f.get("did") or None, _text(j.get("call_id")), _req(f, "res"),
        _opt_int(j.get("talk_s")), _opt_int(j.get("cause")), _text(j.get("subject")),
        from_ms(_req(j, "at")), from_ms(stream_ms(sid)), _text(j.get("node")), raw,
    )


def event_row(sid: str, f: dict[str, str]) -> tuple:
    j, raw = _payload(f)
    kind = f.get("kind") or j.get("kind")
    if kind not in EVENT_KINDS:
        raise BadRecord(f"unknown event kind {kind!r}")
    return (
        _req(f, "id"), sid, kind, str(_req(j, "n")), _text(j.get("ne")), _text(j.get("campaign")),
        from_ms(_req(j, "at")), from_ms(stream_ms(sid)), _text(j.get("node")), raw,
    )


def override_row(sid: str, f: dict[str, str]) -> tuple:
    j, raw = _payload(f)
    return (
        _req(f, "id"), sid, _text(j.get("did")), _text(j.get("n")), _text(j.get("ne")), _text(j.get("campaign")),
        list(j.get("lifted") or []), str(_req(j, "by")), str(_req(j, "why")), from_ms(_req(j, "at")),
        from_ms(j["expires"]) if j.get("expires") else None, from_ms(stream_ms(sid)), _text(j.get("node")), raw,
    )


def admin_row(sid: str, f: dict[str, str]) -> tuple:
    j, raw = _payload(f)
    return (
        _req(f, "id"), sid, str(_req(j, "action")), _text(j.get("actor")), _text(j.get("target")),
        _text(j.get("why")), from_ms(_req(j, "at")), from_ms(stream_ms(sid)), _text(j.get("node")), raw,
    )


def rules_row(sid: str, f: dict[str, str]) -> tuple:
    j, raw = _payload(f)
    mode = j.get("mode")
    if mode not in RULES_MODES:
        raise BadRecord(f"unknown rules mode {mode!r}")
    version = j.get("version")
    if version is None and mode == "shadow_off":
        pass
    elif isinstance(version, bool) or not isinstance(version, int):
        raise BadRecord(f"rules version {version!r} is not an integer")
    files = j.get("files") or []
    if not isinstance(files, list):
        raise BadRecord("rules files is not a list")
    return (
        _req(f, "id"), sid, version, mode, _text(j.get("hash")), _text(j.get("name")), _text(j.get("spec")),
        json.dumps(files, ensure_ascii=False), _text(j.get("actor")), _text(j.get("why")), from_ms(_req(j, "at")),
        from_ms(stream_ms(sid)), _text(j.get("node")), raw,
    )


def to_batch(entries: list[tuple[str, dict[str, str] | None]], short_hash=None) -> Batch:
    """Sort stream entries into rows. Entries whose fields vanished (None: deleted
    while pending) are only acknowledged."""
    b = Batch()
    for sid, f in entries:
        b.ids.append(sid)
        if f is None:
            continue
        t = f.get("t")
        try:
            if t == "decision":
                row = decision_row(sid, f)
                b.decisions.append(row)
                if short_hash is not None and row[9] not in b.campaigns:
                    b.campaigns[row[9]] = short_hash(row[9])
                if row[14] and row[13]:
                    b.caller_ids.setdefault(row[14], row[13])
            elif t == "outcome":
                b.outcomes.append(outcome_row(sid, f))
            elif t == "event":
                b.events.append(event_row(sid, f))
            elif t == "override":
                b.overrides.append(override_row(sid, f))
            elif t == "admin":
                b.admin.append(admin_row(sid, f))
            elif t == "rules":
                b.rules.append(rules_row(sid, f))
            else:
                raise BadRecord(f"unknown record type {t!r}")
        except (BadRecord, ValueError, TypeError, KeyError, OverflowError) as exc:
            b.rejects.append(reject_of(sid, f, f"{type(exc).__name__}: {exc}"))
    return b


def _no_nul(v: Any) -> Any:
    """PostgreSQL text and jsonb refuse NUL characters: keep them as the text \\x00."""
    if isinstance(v, str):
        return v.replace("\x00", "\\x00")
    if isinstance(v, dict):
        return {_no_nul(str(k)): _no_nul(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_no_nul(x) for x in v]
    if v is None or isinstance(v, (bool, int, float)):
        return v
    return _no_nul(str(v))


def reject_of(sid: str, f: Any, error: str) -> tuple:
    """A reject row: the entry's fields as they were (NUL characters made visible)."""
    return (sid, json.dumps(_no_nul(f), ensure_ascii=False), _no_nul(error))
