"""Configuration back from the audit, for `dialguard counters rebuild`.

Every admin change is written with its audit record in one atomic step
(dialguard/engine.py `_admin`, rules.lua, override grants), so the audit holds
the whole history of the configuration. Replayed in stream order it gives the
state Redis held: kill switches, campaign approvals (dates, own packs), approved
caller IDs and pools, cool-downs, published rules versions (active and shadow),
imported calendar versions (the active one and every stored one) and override grants not yet used, revoked or expired.

Records written before this existed (or by admin commands run with the audit
off) are not there: what they changed must be restored by hand, as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import psycopg

from dialguard.audit.records import stream_key
from dialguard.decision.keys import Keys
from dialguard.numbers import short_hash


@dataclass
class ConfigState:
    pause: dict[str, str] = field(default_factory=dict)             # field -> since (ms)
    campaigns: dict[str, dict[str, str]] = field(default_factory=dict)
    approved: set[str] = field(default_factory=set)                 # caller-ID tags
    pools: dict[str | None, dict[str, str]] = field(default_factory=dict)  # campaign -> tag -> sealed
    cooldowns: dict[str, int] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)             # the rules hash, field -> value
    calendars: dict[str, str] = field(default_factory=dict)         # the calendars hash, field -> value
    overrides: dict[str, tuple[dict[str, str], int]] = field(default_factory=dict)  # number tag -> (grant, exp ms)
    actions: int = 0
    skipped: int = 0

    def counts(self) -> dict[str, int]:
        return {"kill switches": len(self.pause), "campaigns": len(self.campaigns),
                "approved caller IDs": len(self.approved),
                "pool entries": sum(len(p) for p in self.pools.values()),
                "cool-downs": len(self.cooldowns),
                "rules versions": sum(1 for k in self.rules if k.startswith("v:")),
                "calendar versions": sum(1 for k in self.calendars if k.startswith("v:")),
                "override grants": len(self.overrides)}


def _admin(state: ConfigState, j: dict) -> None:
    a, target = j.get("action"), j.get("target")
    at = str(j.get("at") or "")
    if a == "pause" and target:
        state.pause[target] = at
    elif a == "resume" and target:
        state.pause.pop(target, None)
    elif a in ("campaign_approve", "campaign_revoke") and target:
        state.campaigns[target] = {
            "name": target, "approved": "1" if a == "campaign_approve" else "0",
            "start": str(j["start"]) if j.get("start") else "", "end": str(j["end"]) if j.get("end") else "",
            "rules": j.get("rules") or ""}
    elif a == "callerid_add" and target:
        state.approved.add(target)
        if j.get("pool") and j.get("ne"):
            state.pools.setdefault(j.get("campaign"), {})[target] = j["ne"]
    elif a == "callerid_remove" and target:
        if j.get("campaign"):
            state.pools.get(j["campaign"], {}).pop(target, None)
        else:
            state.approved.discard(target)
            state.pools.get(None, {}).pop(target, None)
    elif a == "callerid_cooldown" and target and j.get("until"):
        state.cooldowns[target] = int(j["until"])
    elif a == "override_revoke" and target:
        state.overrides.pop(target, None)
    elif a in ("calendar_publish", "calendar_activate") and isinstance(j.get("version"), int):
        _calendars(state, j)
    else:
        state.skipped += 1
        return
    state.actions += 1


def _rules(state: ConfigState, version: int | None, mode: str, payload: dict) -> None:
    if mode == "shadow_off":
        state.rules.pop("shadow", None)
    elif version is not None:
        v = str(version)
        if f"v:{v}" not in state.rules:
            bundle = {"version": version, "hash": payload.get("hash"), "name": payload.get("name"),
                      "spec": payload.get("spec"), "files": payload.get("files") or []}
            state.rules[f"v:{v}"] = json.dumps(bundle, separators=(",", ":"), ensure_ascii=False)
            state.rules[f"m:{v}"] = json.dumps({k: payload.get(k) for k in ("actor", "why", "at", "node")},
                                               separators=(",", ":"), ensure_ascii=False)
        state.rules[mode] = v
        state.rules["seq"] = str(max(int(state.rules.get("seq", 0)), version))
    state.actions += 1


def _calendars(state: ConfigState, j: dict) -> None:
    """A calendar version published or activated (calendars.lua): every record
    carries the whole set of years, so either one restores the version."""
    v = str(j["version"])
    if f"v:{v}" not in state.calendars:
        bundle = {"version": j["version"], "hash": j.get("hash"), "calendars": j.get("calendars") or []}
        state.calendars[f"v:{v}"] = json.dumps(bundle, separators=(",", ":"), ensure_ascii=False)
        state.calendars[f"m:{v}"] = json.dumps({k: j.get(k) for k in ("actor", "why", "at", "node")},
                                               separators=(",", ":"), ensure_ascii=False)
    state.calendars["active"] = v
    state.calendars["seq"] = str(max(int(state.calendars.get("seq", 0)), j["version"]))


def read_config(conn: psycopg.Connection, rule_now_ms: int) -> ConfigState:
    """Replay admin, rules and override records in stream order."""
    rows: list[tuple[tuple[int, int], str, tuple]] = []
    for sid, payload in conn.execute("select stream_id, payload from audit_admin_actions"):
        rows.append((stream_key(sid), "admin", (payload,)))
    for sid, version, mode, payload in conn.execute(
            "select stream_id, version, mode, payload from audit_rules_versions"):
        rows.append((stream_key(sid), "rules", (version, mode, payload)))
    used = {r[0] for r in conn.execute("select override_id from audit_decisions where override_id is not null")}
    for sid, oid, payload in conn.execute("select stream_id, override_id, payload from audit_overrides"):
        rows.append((stream_key(sid), "override", (oid, payload)))
    rows.sort(key=lambda r: r[0])
    state = ConfigState()
    for _, kind, args in rows:
        if kind == "admin":
            _admin(state, args[0])
        elif kind == "rules":
            _rules(state, *args)
        else:
            oid, j = args
            if j.get("op", "grant") != "grant" or not j.get("n"):
                continue
            exp = int(j.get("expires") or 0)
            if oid in used or (exp and exp <= rule_now_ms):
                state.overrides.pop(j["n"], None)  # a later grant replaced it; this one is gone too
                continue
            camp = j.get("campaign")
            state.overrides[j["n"]] = ({"id": oid, "camp": short_hash(camp) if camp else "", "exp": str(exp),
                                        "lifts": ",".join(j.get("lifted") or [])}, exp)
            state.actions += 1
    return state


def write_config(redis, keys: Keys, state: ConfigState, rule_now_ms: int, dry_run: bool = False) -> None:
    """Set the configuration keys to the replayed state (each replaced whole)."""
    if dry_run:
        return
    pipe = redis.pipeline(transaction=True)
    pipe.delete(keys.pause)
    if state.pause:
        pipe.hset(keys.pause, mapping=state.pause)
    pipe.delete(keys.campaigns_with_rules)
    for name, rec in state.campaigns.items():
        pipe.delete(keys.campaign(name))
        pipe.hset(keys.campaign(name), mapping=rec)
        if rec.get("rules"):
            pipe.sadd(keys.campaigns_with_rules, name)
    pipe.delete(keys.approved_cids)
    if state.approved:
        pipe.sadd(keys.approved_cids, *sorted(state.approved))
    for campaign, pool in state.pools.items():
        pipe.delete(keys.pool(campaign))
        if pool:
            pipe.hset(keys.pool(campaign), mapping=pool)
    pipe.delete(keys.cid_cooldown)
    if state.cooldowns:
        pipe.zadd(keys.cid_cooldown, state.cooldowns)
    if state.rules:
        pipe.delete(keys.rules)
        pipe.hset(keys.rules, mapping=state.rules)
    if state.calendars:
        pipe.delete(keys.calendars)
        pipe.hset(keys.calendars, mapping=state.calendars)
    for tag, (grant, exp) in state.overrides.items():
        key = keys.override(tag)
        pipe.delete(key)
        pipe.hset(key, mapping=grant)
        if exp:
            pipe.pexpire(key, max(1, exp - rule_now_ms))
    pipe.execute()
