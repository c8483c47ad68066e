"""Turn a request plus rules into the decide.lua plan, and read its answer.

Pure functions: the *what* of every counter rule (which key, which window
bound, which limit) is decided here; decide.lua only counts and reserves.
The plan's fields are written down in dialguard/decision/schema.py; every key
comes from keys.py.
"""

from __future__ import annotations

import json
import re
import string
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgpack

from dialguard.decision.keys import Keys
from dialguard.dnc import fingerprint, list_name
from dialguard.numbers import NumberInfo, short_hash
from dialguard.rules import Policy
from dialguard.timerules import day_start_after, local_midnight, zones_for
from dialguard.timeutil import from_ms, to_ms as ms

CALL_RECORD_TTL = timedelta(days=2)
DEFAULT_LEASE = timedelta(hours=2)


@dataclass
class CheckMeta:
    """How to turn a failing check's oldest blocking score into a time."""

    reason: str
    rolling: timedelta | None = None
    days: int | None = None
    zones: tuple[str, ...] = ()
    label: str = ""

    def eligible_at(self, score_ms: float) -> datetime | None:
        if score_ms < 0:
            return None  # the limit never lifts by waiting (lifetime or zero cap)
        t = from_ms(score_ms)
        if self.rolling is not None:
            return t + self.rolling
        if self.days is not None:
            return max(day_start_after(t, z, self.days) for z in self.zones)
        return None


@dataclass
class CallerIdCandidate:
    e164: str
    tag: str
    statically_approved: bool


@dataclass
class Plan:
    keys: list[str] = field(default_factory=list)
    body: dict = field(default_factory=dict)
    checks: dict[str, CheckMeta] = field(default_factory=dict)
    candidates: list[CallerIdCandidate] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)

    def k(self, key: str) -> int:
        """1-based KEYS index of key, adding it once."""
        idx = self._index.get(key)
        if idx is None:
            self.keys.append(key)
            idx = self._index[key] = len(self.keys)
        return idx

    def args(self) -> list[str]:
        return [_encode(self.body)]


def _counted(plan: Plan, base: str, uncounted: tuple[str, ...] = ()) -> tuple[list[int], dict]:
    """The attempt log, plus its log of attempts with a reported not-connected
    outcome (`<base>:x`), of which the rule counts those it does not exclude."""
    extra = {"x": plan.k(base + ":x")}
    if uncounted:
        extra["ex"] = ",".join(uncounted)
    return [plan.k(base)], extra


_encode = json.JSONEncoder(separators=(",", ":")).encode


def _td_ms(td: timedelta) -> int:
    return int(td.total_seconds() * 1000)


class _Static:
    """What build_plan needs from a policy that does not depend on the request:
    labels, window lengths in ms, retention, TTLs. Built once per Policy."""

    def __init__(self, policy: Policy):
        self.caps = []
        for pack_name, cap in policy.caps:
            w = cap.window
            label = f"{pack_name}/{cap.id}: at most {cap.max} per {w.describe()} ({cap.scope})"
            self.caps.append((pack_name, cap.scope, cap.max, cap.uncounted_outcomes, label, w.rolling,
                              _td_ms(w.rolling) if w.rolling is not None else None, w.days))
        mi = policy.min_interval
        self.min_interval = (mi, _td_ms(mi), f"at least {mi} between attempts") if mi else None
        self.quiet = []
        for pack in policy.packs:
            q = pack.quiet_after_conversation
            if not q:
                continue
            label = f"{pack.pack}: quiet {q.window.describe()} after a conversation ({q.scope})"
            self.quiet.append((pack.pack, q.scope, label, q.window.rolling,
                               _td_ms(q.window.rolling) if q.window.rolling is not None else None, q.window.days))
        ab, amd = policy.abandon_quiet
        self.ab = (ab, _td_ms(ab), f"quiet {ab} after an abandoned call") if ab else None
        self.amd = (amd, _td_ms(amd), f"quiet {amd} after an answering-machine hang-up") if amd else None
        apd = policy.agent_per_day
        self.agent = (apd, f"agent at most {apd} per day") if apd is not None else None
        self.retention_ms = policy.retention_ms
        self.lifetime_scopes = policy.lifetime_scopes
        self.consent = 1 if policy.consent_required else 0
        lim = policy.caller_id_limits
        self.cid_rates = [(lim[fld], span, _td_ms(span), f"caller ID at most {lim[fld]} {fld}")
                          for fld, span in (("per_minute", timedelta(minutes=1)), ("per_hour", timedelta(hours=1)))
                          if lim[fld] is not None]
        self.cid_day = (lim["per_day"], f"caller ID at most {lim['per_day']} per day") \
            if lim["per_day"] is not None else None
        self.conc = lim["concurrency"] if lim["concurrency"] is not None else -1
        # A caller ID presented or picked is always checked: approved and not cooling down
        # (SPEC, caller_id_not_approved), whatever the packs. Their `require_approved` says
        # only whether a call with none to present may go (Decider._candidates).
        self.cid_req = 1
        lease = timedelta(seconds=policy.max_duration_s + 600) if policy.max_duration_s else DEFAULT_LEASE
        self.lease_ms = _td_ms(lease)
        self.cttl_ms = _td_ms(timedelta(days=2))
        self.cttl = str(self.cttl_ms)
        self.call_ttl = str(_td_ms(CALL_RECORD_TTL))
        self.packs = [(p.pack, p.hours) for p in policy.packs]
        from dialguard.callerid_health import config_id
        self.health_id = config_id(policy)
        self._day_zones: dict[tuple, tuple[str, ...]] = {}

    def day_zones(self, pack_name: str, callee: tuple[str, ...], site_timezone: str) -> tuple[str, ...]:
        """Zones in which day windows are counted: the pack's time zones for the
        callee, else the call centre's own zone."""
        key = (pack_name, callee, site_timezone)
        zs = self._day_zones.get(key)
        if zs is None:
            zs = None
            for name, hours in self.packs:
                if name == pack_name:
                    zs = zones_for(hours, callee) or None
                    if zs:
                        break
            zs = zs or callee or (site_timezone,)
            if len(self._day_zones) < 4096:
                self._day_zones[key] = zs
        return zs


_STATIC: "weakref.WeakKeyDictionary[Policy, _Static]" = weakref.WeakKeyDictionary()


def _static(policy: Policy) -> _Static:
    st = _STATIC.get(policy)
    if st is None:
        st = _STATIC[policy] = _Static(policy)
    return st


# (zone, days back) -> (local day start ms, next local day start ms, answer ms)
_MIDNIGHT: dict[tuple[str, int], tuple[int, int, int]] = {}


def _midnight_ms(now: datetime, now_ms: int, z: str, back: int) -> int:
    """ms(local_midnight(now, z, back)), remembered for the rest of the local day."""
    hit = _MIDNIGHT.get((z, back))
    if hit is not None and hit[0] <= now_ms < hit[1]:
        return hit[2]
    val = ms(local_midnight(now, z, back))
    lo = ms(local_midnight(now, z, 0))
    hi = ms(day_start_after(now, z, 1))
    if lo <= now_ms < hi:
        _MIDNIGHT[(z, back)] = (lo, hi, val)
    return val


def build_plan(
    *,
    policy: Policy,
    keys: Keys,
    info: NumberInfo,
    number_tag: str,
    campaign: str,
    agent: str,
    subject: str | None,
    call_id: str | None,
    decision_id: str,
    now: datetime,
    pre_reasons: list[str],
    candidates: list[CallerIdCandidate],
    check_caller_id: bool,
    site_timezone: str,
    audit_payload: str | None,
    audit_max: int | None,
    share: Plan | None = None,
    request_fp: str | None = None,
    versions: tuple[str, str] | None = None,
    calendar_version: str | None = None,
    shadow: tuple[Policy, str, list[str]] | None = None,
    party_tag: str | None = None,
    retention_ms: int = 0,
) -> Plan:
    """The plan (dialguard/decision/schema.py) as a dict: the reference compile_plan
    must equal. `share`: another plan whose KEYS list this one extends (the shadow
    rules' plan rides inside the enforcing one's script call). `request_fp`: the
    request's keyed hash (dialguard.engine.request_fingerprint), with a call id:
    an identical request under that call id gets the earlier answer again.
    The enforcing plan's own fields: versions (rules_versions, rules_version) when
    following published rules; calendar_version; shadow (the shadow rules, their
    version, their pre reasons). retention_ms: the namespace's retention (the longest
    any rules that decide here need, Decider): the logs' expiry and trim are never
    shorter, so that rules needing less do not cut what others read."""
    st = _static(policy)
    plan = Plan(candidates=candidates)
    main = share is None
    if not main:
        plan.keys, plan._index = share.keys, share._index
    k = plan.k
    pchecks = plan.checks
    now_ms = ms(now)
    b = plan.body
    b["now"] = str(now_ms)
    b["decision_id"] = decision_id
    b["pre_reasons"] = pre_reasons
    b["pause_key"] = k(keys.pause)
    b["pause_fields"] = ["all", "camp:" + campaign]
    b["campaign_key"] = k(keys.campaign(campaign))
    b["flags_key"] = k(keys.flags(number_tag))
    if party_tag:
        b["party_flags_key"] = k(keys.party_flags(party_tag))
    b["campaign_dnc_key"] = k(keys.campaign_dnc(number_tag))
    if info.valid:
        # DNC lists at scale: the number's fingerprint in the global and the campaign's list
        bucket, rec = fingerprint(number_tag)
        b["dnc_bucket_keys"] = [k(keys.dnc_bucket(list_name(None), bucket)),
                                k(keys.dnc_bucket(list_name(campaign), bucket))]
        b["dnc_record"] = rec.hex()
    b["campaign_tag"] = short_hash(campaign)
    b["consent_required"] = st.consent

    checks: list[dict] = []
    all_key = keys.attempts(number_tag, "number")
    writes: list[str] = [all_key]
    callee = info.timezones

    def scoped(scope: str) -> list[tuple[str, str]]:
        """(scope, the scope it is evaluated as): a party scope with a party is
        evaluated on the party's log AND the number's (stricter; a later request
        without the party still sees these attempts)."""
        if party_tag and scope in ("party", "party_subject"):
            return [(scope, scope), (scope, "number" if scope == "party" else "number_subject")]
        return [(scope, scope)]

    kept: list[str] = []  # the logs of lifetime caps: never trimmed nor expired
    for pack_name, scope0, cmax, uncounted, label, rolling, rolling_ms, days in [
            (c[0], s, *c[2:]) for c in st.caps for s in scoped(c[1])]:
        scope = scope0[1]
        base = all_key if scope == "number" else keys.scoped_attempts(number_tag, party_tag, scope, campaign,
                                                                       subject)
        if base not in writes:
            writes.append(base)
        if scope in st.lifetime_scopes and base not in kept:
            kept.append(base)
        x = k(base + ":x")  # (index order as ever: the :x log, then the log)
        kk = [k(base)]
        cid = f"k{len(pchecks)}"
        if rolling is not None:
            pchecks[cid] = CheckMeta("attempt_cap", rolling=rolling, label=label)
            lo = "(" + str(now_ms - rolling_ms)
        elif days is not None:
            zs = st.day_zones(pack_name, callee, site_timezone)
            pchecks[cid] = CheckMeta("attempt_cap", days=days, zones=zs, label=label)
            lo = str(min(_midnight_ms(now, now_ms, z, days - 1) for z in zs))
        else:
            pchecks[cid] = CheckMeta("attempt_cap", label=label)
            lo = "-inf"
        d = {"id": cid, "keys": kk, "since": lo, "max": cmax, "reason": "attempt_cap", "outcome_log": x}
        if uncounted:
            d["uncounted"] = ",".join(uncounted)
        checks.append(d)

    if st.min_interval:
        mi, mi_ms, label = st.min_interval
        x = k(all_key + ":x")
        cid = f"k{len(pchecks)}"
        pchecks[cid] = CheckMeta("min_interval", rolling=mi, label=label)
        checks.append({"id": cid, "keys": [k(all_key)], "since": "(" + str(now_ms - mi_ms), "max": 1,
                       "reason": "min_interval", "outcome_log": x})

    conv_keys: list[str] = []
    for pack_name, scope0, label, rolling, rolling_ms, days in [
            (q[0], s, *q[2:]) for q in st.quiet for s in scoped(q[1])]:
        ck = keys.scoped_conversations(number_tag, party_tag, scope0[1], subject)
        if ck not in conv_keys:
            conv_keys.append(ck)
        cid = f"k{len(pchecks)}"
        if rolling is not None:
            pchecks[cid] = CheckMeta("post_conversation_quiet", rolling=rolling, label=label)
            lo = "(" + str(now_ms - rolling_ms)
        else:
            zs = st.day_zones(pack_name, callee, site_timezone)
            pchecks[cid] = CheckMeta("post_conversation_quiet", days=days, zones=zs, label=label)
            lo = str(min(_midnight_ms(now, now_ms, z, days - 1) for z in zs))
        checks.append({"id": cid, "keys": [k(ck)], "since": lo, "max": 1, "reason": "post_conversation_quiet"})

    for q, suffix in ((st.ab, "ab"), (st.amd, "am")):
        if q:
            span, span_ms, label = q
            cid = f"k{len(pchecks)}"
            pchecks[cid] = CheckMeta("post_abandon_quiet", rolling=span, label=label)
            checks.append({"id": cid, "keys": [k(keys.num(number_tag, suffix))],
                           "since": "(" + str(now_ms - span_ms), "max": 1, "reason": "post_abandon_quiet"})

    if st.agent:
        apd, label = st.agent
        akey = keys.agent(agent)
        cid = f"k{len(pchecks)}"
        pchecks[cid] = CheckMeta("agent_cap", days=1, zones=(site_timezone,), label=label)
        checks.append({"id": cid, "keys": [k(akey)], "since": str(_midnight_ms(now, now_ms, site_timezone, 0)),
                       "max": apd, "reason": "agent_cap"})
        writes.append(akey)

    b["checks"] = checks
    ret_ms = max(st.retention_ms, retention_ms)
    b["ttl_ms"] = str(ret_ms)
    b["trim_before"] = "(" + str(now_ms - ret_ms)
    b["write_keys"] = [k(w) for w in writes if w not in kept]
    if kept:
        b["keep_keys"] = [k(w) for w in kept]

    # Caller ID: rates per minute/hour (rolling) and per call-centre day.
    if check_caller_id:
        cchk: list[dict] = []
        for limit, span, span_ms, label in st.cid_rates:
            cid = f"k{len(pchecks)}"
            pchecks[cid] = CheckMeta("caller_id_rate", rolling=span, label=label)
            cchk.append({"id": cid, "candidate_key": "attempts_key", "since": "(" + str(now_ms - span_ms),
                         "max": limit, "reason": "caller_id_rate"})
        if st.cid_day:
            limit, label = st.cid_day
            cid = f"k{len(pchecks)}"
            pchecks[cid] = CheckMeta("caller_id_rate", days=1, zones=(site_timezone,), label=label)
            cchk.append({"id": cid, "candidate_key": "attempts_key",
                         "since": str(_midnight_ms(now, now_ms, site_timezone, 0)),
                         "max": limit, "reason": "caller_id_rate"})
        cands: list = []  # flat: schema.CANDIDATE's fields of each candidate, in order
        for c in candidates:
            cands += [c.tag, 1 if c.statically_approved else 0, k(keys.cid_attempts(c.tag)),
                      k(keys.cid_live(c.tag))]
        b["caller_id"] = {
            "candidates": cands, "checks": cchk, "concurrency": st.conc, "required": st.cid_req,
            "approved_key": k(keys.approved_cids), "cooldown_key": k(keys.cid_cooldown),
        }
        if len(candidates) > 1:  # a pick: every candidate's health penalty, one hash
            b["caller_id"]["penalty_key"] = k(keys.cid_penalties)
        b["lease_until"] = str(now_ms + st.lease_ms)
        b["caller_id_ttl_ms"] = st.cttl
        b["caller_id_trim_before"] = "(" + str(now_ms - st.cttl_ms)

    if not main:
        return plan
    if check_caller_id:
        # whom a later complaint or opt-out is about (decide.lua writes it on an allow)
        b["last_caller_key"] = k(keys.last_caller(number_tag))
        if party_tag:
            b["party_last_caller_key"] = k(keys.party_last_caller(party_tag))
    if call_id:
        b["call_key"] = k(keys.call(call_id))
        if request_fp:
            b["request_fp"] = request_fp
        number_key = keys.number_base(number_tag)
        if party_tag and st.quiet and all(q[1].startswith("party") for q in st.quiet):
            # other subjects of a conversation (outcome.lua: number_key + ":cv:s:<tag>") are the party's
            number_key = keys.party_prefix(party_tag)
        b["call_record"] = {
            "number_key": number_key,
            "attempt_keys": [k(w) for w in (writes[:-1] if st.agent else writes)],
            "conversation_keys": [k(c) for c in conv_keys],
            "abandon_key": k(keys.num(number_tag, "ab")) if st.ab else 0,
            "machine_key": k(keys.num(number_tag, "am")) if st.amd else 0,
            "ttl_ms": st.call_ttl,
            "health_config": st.health_id,
            "campaign_tag": short_hash(campaign),
        }
    if audit_payload is not None:
        b["audit_key"] = k(keys.audit)
        b["audit_record"] = audit_payload
        if audit_max:
            b["audit_max"] = audit_max
    if info.valid:
        b["override_key"] = k(keys.override(number_tag))
    if versions is not None:
        b["rules_key"] = k(keys.rules)
        b["rules_versions"], b["rules_version"] = versions
    if calendar_version is not None:
        # the calendar version evaluated with (decide.lua: stale when another is active)
        b["calendars_key"] = k(keys.calendars)
        b["calendar_version"] = calendar_version
    if shadow is not None:
        # The shadow rules see the same request and state; only their own time
        # rules and limits differ. Read-only: nothing is reserved for them.
        spolicy, sversion, spre = shadow
        sh = build_plan(policy=spolicy, keys=keys, info=info, number_tag=number_tag, campaign=campaign,
                        agent=agent, subject=subject, call_id=None, decision_id=decision_id, now=now,
                        pre_reasons=spre, candidates=candidates, check_caller_id=check_caller_id,
                        site_timezone=site_timezone, audit_payload=None, audit_max=None, share=plan,
                        party_tag=party_tag, retention_ms=retention_ms)
        b["shadow"] = sh.body
        b["shadow_version"] = sversion
    return plan


def call_record_keys(plan_keys: list[str], rec: dict) -> dict[str, str]:
    """The call record's key fields as decide.lua writes them from the plan's call_record
    (KEYS indexes since stop 19): ak and cv the keys joined by spaces, ab and am a key or ''."""
    return {"ak": " ".join(plan_keys[i - 1] for i in rec["attempt_keys"]),
            "cv": " ".join(plan_keys[i - 1] for i in rec["conversation_keys"]),
            "ab": plan_keys[rec["abandon_key"] - 1] if rec["abandon_key"] else "",
            "am": plan_keys[rec["machine_key"] - 1] if rec["machine_key"] else ""}


def eligible_from_details(plan: Plan, details) -> tuple[datetime | None, bool]:
    """Latest lift time over failing number/agent rules, min over caller-ID candidates.

    Returns (time or None, never) where never means a rule will not lift by waiting.
    """
    latest: datetime | None = None
    per_cand: dict[int, datetime | None] = {}
    never = False
    for item in details:
        check_id, score, cand = item[0], item[1], int(item[2])
        check_id = check_id.decode() if isinstance(check_id, bytes) else check_id
        score = float(score)
        if check_id.startswith("party:"):
            continue  # a party's flag (decide.lua): permanent, explained by the decider
        if check_id == "conc":
            t = from_ms(score) if score >= 0 else None
        else:
            t = plan.checks[check_id].eligible_at(score)
        if cand:
            if t is None:
                per_cand.setdefault(cand, None)
                per_cand[cand] = None
            elif cand not in per_cand or per_cand[cand] is not None:
                per_cand[cand] = max(t, per_cand.get(cand) or t)
            continue
        if t is None:
            never = True
        else:
            latest = t if latest is None else max(latest, t)
    if per_cand:
        opts = [t for t in per_cand.values() if t is not None]
        if not opts:
            never = True
        else:
            best = min(opts)
            latest = best if latest is None else max(latest, best)
    return latest, never


# -- compiled plans (the decision hot path) ------------------------------------------
#
# build_plan above is the reference: a dict, encoded to JSON per decision. The
# engine's hot path instead fills a PlanTemplate compiled once per plan *shape*
# (rules, campaign, callee time zones, caller-ID candidates, call id or not,
# audit, rules version): KEYS and the plan are format strings in which only
# the request's parts (number tag, agent, subject, candidates, call id, decision
# id, time bounds) are filled in. tests/unit/test_plan_template.py checks that
# the result equals build_plan's over many generated requests and every pack.
#
# The compiled plan is MessagePack, not JSON: 18 % smaller, and Redis' Lua
# decodes it in a quarter fewer instructions than cjson the same plan (most of
# either is making the Lua tables and strings; docs/BENCHMARKS.md, "Stop 15,
# Redis a call"); decide.lua reads either (JSON starts with "{").


def _lit(text: str) -> str:
    """A literal for str.format."""
    return text.replace("{", "{{").replace("}", "}}")


class Fld(str):
    """The name of a field filled in per request, inside a string of the plan."""


# The length of every string field filled in (hex of fixed-size hashes, the
# decision id's 12 + 16 hex); times are 13-digit ms (2001-09-09 to 2286-11-20).
# fill() checks each one and refuses a request whose values differ (PlanFieldError:
# the engine then writes that plan with build_plan): a header written here can
# never disagree with the bytes that follow it.
FIELD_LEN = {"now": 13, "did": 28, "dncr": 10, "bk": 4, "tag": 32, "ag": 16, "sub": 16, "pt": 32, "fp": 32}
_MS_LO, _MS_HI = 10 ** 12, 10 ** 13


def _field_len(name: str) -> int:
    if name.startswith("lo"):
        return 13
    if name[0] == "c" and name[1:].isdigit():
        return 32  # a caller-ID candidate's tag (Keys.cid_tag)
    return FIELD_LEN[name]


class PlanFieldError(ValueError):
    """A request value that does not have the length its compiled plan was written for."""


def _mp_const(value) -> str:
    """A constant as MessagePack, its bytes as latin-1 characters."""
    return msgpack.packb(value).decode("latin-1")


def _mp_str_header(n: int) -> str:
    if n < 32:
        return chr(0xA0 | n)
    if n < 0x100:
        return "\xd9" + chr(n)
    if n < 0x10000:
        return "\xda" + n.to_bytes(2, "big").decode("latin-1")
    return "\xdb" + n.to_bytes(4, "big").decode("latin-1")


def _mp_map_header(n: int) -> str:
    return chr(0x80 | n) if n < 16 else "\xde" + n.to_bytes(2, "big").decode("latin-1")


def _mp_array_header(n: int) -> str:
    return chr(0x90 | n) if n < 16 else "\xdc" + n.to_bytes(2, "big").decode("latin-1")


_NO_REASONS = _mp_const([])


def _mp_reasons(reasons) -> str:
    return _mp_const(list(reasons)) if reasons else _NO_REASONS


@dataclass
class FilledPlan:
    """A plan from a PlanTemplate: what the engine reads of a Plan."""

    keys: list[str]
    argv: list  # [the plan (MessagePack bytes), the audit record]
    checks: dict[str, CheckMeta]
    candidates: list[CallerIdCandidate]

    def args(self) -> list:
        return self.argv


class PlanTemplate:
    """KEYS and ARGV[1] of one plan shape; fill() gives a request's plan.

    The audit payload is not inside the plan: it goes as ARGV[2] (decide.lua
    reads plan.audit_record or ARGV[2]), so it is neither escaped again here nor decoded
    by the script.
    """

    __slots__ = ("key_fmts", "static_keys", "keys_fmt", "call_at", "call_fmt", "body_fmt", "checks", "lows",
                 "lens", "spans", "ncand", "tail", "keys_parts", "call_parts", "body_parts")

    def fill(self, *, now: datetime, decision_id: str, pre: list[str], tag: str, agent_hash: str,
             sub_hash: str, cand_tags: list[str], call_id: str | None, payload: str | None,
             spre: list[str] = (), request_fp: str = "", party_tag: str = "") -> tuple[list[str], list]:
        now_ms = int(now.timestamp() * 1000)
        bucket, rec = fingerprint(tag)
        # every value a str (the times written here as format_map writes an int): _fill_parts joins them
        v = {"tag": tag, "ag": agent_hash, "sub": sub_hash, "call": call_id, "now": str(now_ms), "fp": request_fp,
             "did": decision_id, "pre": _mp_reasons(pre), "dncr": rec.hex(), "bk": f"{bucket:04x}",
             "spre": _mp_reasons(spre), "pt": party_tag}
        for i, t in enumerate(cand_tags):
            v[f"c{i}"] = t
        for name, kind, a in self.lows:
            if kind == 0:  # now minus a span: rolling windows' (now - span, now], and the lease (span < 0)
                v[name] = str(now_ms - a)
            else:  # calendar days: the earliest local day start over the zones (before now)
                x = min(_midnight_ms(now, now_ms, z, back) for z, back in a)
                if x < _MS_LO:
                    raise PlanFieldError("a day start before 2001-09-09")
                v[name] = str(x)
        lo, hi = self.spans
        if now_ms - hi < _MS_LO or now_ms - lo >= _MS_HI or len(decision_id) != 28 or not decision_id.isascii():
            raise PlanFieldError("a time or the decision id out of the compiled plan's form")
        for name, n in self.lens:
            if len(v[name]) != n:
                raise PlanFieldError(f"{name}: {len(v[name])} characters, the compiled plan has {n}")
        if self.keys_fmt is not None:
            # every key but the call's in one format, split on a byte none of them
            # holds (their fields are hex; compile_plan checked the literal text)
            keys = _fill_parts(self.keys_parts, self.keys_fmt, v).split(_KEY_SEP)
            if self.call_at >= 0:
                keys.insert(self.call_at, _fill_parts(self.call_parts, self.call_fmt, v))
        else:
            keys = [f.format_map(v) if f is not None else s for f, s in zip(self.key_fmts, self.static_keys)]
        # the fields are ASCII (checked above): one latin-1 character, one byte
        args = [_fill_parts(self.body_parts, self.body_fmt, v).encode("latin-1")]
        if payload is not None:
            args.append(payload)
        return keys, args


_KEY_SEP = "\x00"


def _split_format(fmt: str | None):
    """A format as (its pieces: literal text, "" where a field goes; (index, name) of each
    field), for _fill_parts; None when a field has a conversion or a spec (format_map then)."""
    if fmt is None:
        return None
    pieces: list[str] = []
    fields: list[tuple[int, str]] = []
    for text, name, spec, conv in string.Formatter().parse(fmt):
        if text:
            pieces.append(text)
        if name is not None:
            if spec or conv or not name.isidentifier():
                return None
            fields.append((len(pieces), name))
            pieces.append("")
    return pieces, tuple(fields)


def _fill_parts(parts, fmt: str, v: dict) -> str:
    """fmt.format_map(v), the format parsed once (_split_format): str.format_map scans
    the whole text each call (a plan's body is ~1.7 k characters: 4.6 us against 1.4).
    A value that is not a str (join refuses it): format_map, which writes it."""
    if parts is None:
        return fmt.format_map(v)
    pieces, fields = parts
    out = pieces.copy()
    for i, name in fields:
        out[i] = v[name]
    try:
        return "".join(out)
    except TypeError:
        return fmt.format_map(v)


# a party scope evaluated without a party: the number's own scope
_PARTY_AS_NUMBER = {"party": "number", "party_subject": "number_subject"}


def compile_plan(
    *,
    policy: Policy,
    keys: Keys,
    valid: bool,
    callee: tuple[str, ...],
    campaign: str,
    cand_shape: tuple[tuple[int, bool], ...],
    check_caller_id: bool,
    has_call: bool,
    site_timezone: str,
    audit: bool,
    audit_max: int | None,
    versions: tuple[str, str] | None,
    shadow: tuple[Policy, str] | None = None,
    calendars: str = "",
    party: bool = False,
    retention_ms: int = 0,
) -> PlanTemplate:
    """The PlanTemplate of one shape, in build_plan's order of KEYS and fields.

    cand_shape: per caller-ID candidate, (index of the first candidate with the
    same tag, statically approved); versions: (rvs, rver) when the engine follows
    published rules versions; shadow: (shadow rules, their version) to evaluate
    beside (the `shadow` plan of build_plan: the shadow rules' plan
    on the same KEYS, no call record, no audit). The request's parts are format
    fields: {tag} (number tag), {ag} (agent hash), {sub} (subject hash), {cN}
    (candidate N's tag), {call} (call id), {now}, {did}, {pre}, {spre} (the
    shadow plan's pre reasons), {dncr}, {bk}, {loN} (bounds from the time);
    with `party` (the request names a party: build_plan's party_tag), {pt}, the party's tag;
    retention_ms: build_plan's (the namespace's retention).
    """
    idx: dict[str, int] = {}
    fmts: list[str] = []

    def k(fmt: str) -> int:
        i = idx.get(fmt)
        if i is None:
            fmts.append(fmt)
            i = idx[fmt] = len(fmts)
        return i

    # Keys come from keys.py, called with a marker in place of each request
    # part; the markers then become format fields ({tag}, {sub}, ...).
    mark = next(c for c in "\x01\x02\x03\x04\x05\x06" if c not in keys.prefix)

    def f(name: str) -> str:  # the marker of one format field
        return f"{mark}{name}{mark}"

    def fmt(key: str) -> str:  # a key holding markers, as a format
        parts = key.split(mark)
        return "".join(_lit(part) if i % 2 == 0 else "{" + part + "}" for i, part in enumerate(parts))

    tag, sub, pt = f("tag"), f("sub"), f("pt")
    campaign_hash = short_hash(campaign)

    def num(suffix: str) -> str:
        return fmt(keys.num(tag, suffix))

    def attempts(scope: str) -> str:
        if party and scope in _PARTY_AS_NUMBER:
            return fmt(keys.party_attempts_hashed(pt, scope, sub))
        scope = _PARTY_AS_NUMBER.get(scope, scope)  # a party scope without a party: the number's
        return fmt(keys.attempts_hashed(tag, scope, campaign_hash, sub))

    def conversations(scope: str) -> str:
        if party and scope in _PARTY_AS_NUMBER:
            return fmt(keys.party_conversations_hashed(pt, scope, sub))
        scope = _PARTY_AS_NUMBER.get(scope, scope)
        return fmt(keys.conversations_hashed(tag, scope, sub))

    def scoped(scope: str) -> list[str]:
        """build_plan's scoped(): a party scope with a party is evaluated on the
        party's log and the number's."""
        if party and scope in _PARTY_AS_NUMBER:
            return [scope, _PARTY_AS_NUMBER[scope]]
        return [scope]

    lows: list[tuple[str, int, object]] = []
    used: set[str] = set()  # the fields inside strings of the body (fill() checks their length)

    def low(kind: int, a) -> str:  # a time bound filled per request: the name of its field
        name = f"lo{len(lows)}"
        lows.append((name, kind, a))
        return name

    # The plan is MessagePack (decide.lua: cmsgpack.unpack): the format's text is
    # its bytes as latin-1 characters, and each field filled in has a length known
    # here (FIELD_LEN; fill() checks it), so every string's header is written now.
    def js(value) -> str:  # a constant
        return _lit(_mp_const(value))

    def s(*parts: str) -> str:  # a string of literal text and fields (Fld: a field's name)
        n, out = 0, []
        for p in parts:
            if isinstance(p, Fld):
                n += _field_len(p)
                used.add(str(p))
                out.append("{" + p + "}")
            else:
                b = p.encode()
                n += len(b)
                out.append(_lit(b.decode("latin-1")))
        return _lit(_mp_str_header(n)) + "".join(out)

    def s_fmt(key_fmt: str) -> str:  # a key format (fmt()) as a string value
        parts: list[str] = []
        for part in re.split(r"(\{\{|\}\}|\{[a-z0-9]+\})", key_fmt):
            if part in ("{{", "}}"):
                parts.append(part[0])
            elif part.startswith("{") and part.endswith("}"):
                parts.append(Fld(part[1:-1]))
            elif part:
                parts.append(part)
        return s(*parts)

    def obj(*pairs) -> str:  # a map of (name, value already as a format) pairs
        return _lit(_mp_map_header(len(pairs))) + "".join(js(n) + v for n, v in pairs)

    def arr(items: list[str]) -> str:
        return _lit(_mp_array_header(len(items))) + "".join(items)

    def body(pol: Policy, pre_field: str, checks: dict[str, CheckMeta], main: bool) -> str:
        """One plan's map as a format (main: the enforcing plan, with the
        call record, audit, override and rules-version fields)."""
        st = _static(pol)
        out: list[tuple[str, str]] = []

        def field(name: str, value_fmt: str) -> None:
            out.append((name, value_fmt))

        field("now", s(Fld("now")))
        field("decision_id", s(Fld("did")))
        field("pre_reasons", "{" + pre_field + "}")
        field("pause_key", js(k(_lit(keys.pause))))
        field("pause_fields", js(["all", "camp:" + campaign]))
        field("campaign_key", js(k(_lit(keys.campaign(campaign)))))
        field("flags_key", js(k(fmt(keys.flags(tag)))))
        if party:
            field("party_flags_key", js(k(fmt(keys.party_flags(pt)))))
        field("campaign_dnc_key", js(k(fmt(keys.campaign_dnc(tag)))))
        if valid:
            dk = [k(fmt(keys.dnc_bucket_hex(list_name(None), f("bk")))),
                  k(fmt(keys.dnc_bucket_hex(list_name(campaign), f("bk"))))]
            field("dnc_bucket_keys", js(dk))
            field("dnc_record", s(Fld("dncr")))
        field("campaign_tag", js(campaign_hash))
        field("consent_required", js(st.consent))

        items: list[str] = []
        all_key = attempts("number")
        writes = [all_key]
        kept: list[str] = []  # build_plan's: the logs of lifetime caps
        for pack_name, scope, cmax, uncounted, label, rolling, rolling_ms, days in [
                (c[0], s_, *c[2:]) for c in st.caps for s_ in scoped(c[1])]:
            base = all_key if scope == "number" else attempts(scope)
            if base not in writes:
                writes.append(base)
            if scope in st.lifetime_scopes and base not in kept:
                kept.append(base)
            x = k(base + ":x")
            kk = [k(base)]
            cid = f"k{len(checks)}"
            if rolling is not None:
                checks[cid] = CheckMeta("attempt_cap", rolling=rolling, label=label)
                lo = s("(", Fld(low(0, rolling_ms)))
            elif days is not None:
                zs = st.day_zones(pack_name, callee, site_timezone)
                checks[cid] = CheckMeta("attempt_cap", days=days, zones=zs, label=label)
                lo = s(Fld(low(1, tuple((z, days - 1) for z in zs))))
            else:
                checks[cid] = CheckMeta("attempt_cap", label=label)
                lo = js("-inf")
            pairs = [("id", js(cid)), ("keys", js(kk)), ("since", lo), ("max", js(cmax)),
                     ("reason", js("attempt_cap")), ("outcome_log", js(x))]
            if uncounted:
                pairs.append(("uncounted", js(",".join(uncounted))))
            items.append(obj(*pairs))

        if st.min_interval:
            mi, mi_ms, label = st.min_interval
            x = k(all_key + ":x")
            cid = f"k{len(checks)}"
            checks[cid] = CheckMeta("min_interval", rolling=mi, label=label)
            items.append(obj(("id", js(cid)), ("keys", js([k(all_key)])), ("since", s("(", Fld(low(0, mi_ms)))),
                             ("max", js(1)), ("reason", js("min_interval")), ("outcome_log", js(x))))

        conv_keys: list[str] = []
        for pack_name, scope, label, rolling, rolling_ms, days in [
                (q[0], s_, *q[2:]) for q in st.quiet for s_ in scoped(q[1])]:
            ck = conversations(scope)
            if ck not in conv_keys:
                conv_keys.append(ck)
            cid = f"k{len(checks)}"
            if rolling is not None:
                checks[cid] = CheckMeta("post_conversation_quiet", rolling=rolling, label=label)
                lo = s("(", Fld(low(0, rolling_ms)))
            else:
                zs = st.day_zones(pack_name, callee, site_timezone)
                checks[cid] = CheckMeta("post_conversation_quiet", days=days, zones=zs, label=label)
                lo = s(Fld(low(1, tuple((z, days - 1) for z in zs))))
            items.append(obj(("id", js(cid)), ("keys", js([k(ck)])), ("since", lo), ("max", js(1)),
                             ("reason", js("post_conversation_quiet"))))

        for q, suffix in ((st.ab, "ab"), (st.amd, "am")):
            if q:
                span, span_ms, label = q
                cid = f"k{len(checks)}"
                checks[cid] = CheckMeta("post_abandon_quiet", rolling=span, label=label)
                items.append(obj(("id", js(cid)), ("keys", js([k(num(suffix))])),
                                 ("since", s("(", Fld(low(0, span_ms)))), ("max", js(1)),
                                 ("reason", js("post_abandon_quiet"))))

        if st.agent:
            apd, label = st.agent
            akey = fmt(keys.agent_hashed(f("ag")))
            cid = f"k{len(checks)}"
            checks[cid] = CheckMeta("agent_cap", days=1, zones=(site_timezone,), label=label)
            items.append(obj(("id", js(cid)), ("keys", js([k(akey)])),
                             ("since", s(Fld(low(1, ((site_timezone, 0),))))),
                             ("max", js(apd)), ("reason", js("agent_cap"))))
            writes.append(akey)

        field("checks", arr(items))
        ret_ms = max(st.retention_ms, retention_ms)
        field("ttl_ms", js(str(ret_ms)))
        field("trim_before", s("(", Fld(low(0, ret_ms))))
        field("write_keys", js([k(w) for w in writes if w not in kept]))
        if kept:
            field("keep_keys", js([k(w) for w in kept]))

        if check_caller_id:
            cchk = []
            for limit, span, span_ms, label in st.cid_rates:
                cid = f"k{len(checks)}"
                checks[cid] = CheckMeta("caller_id_rate", rolling=span, label=label)
                cchk.append(obj(("id", js(cid)), ("candidate_key", js("attempts_key")),
                                ("since", s("(", Fld(low(0, span_ms)))), ("max", js(limit)),
                                ("reason", js("caller_id_rate"))))
            if st.cid_day:
                limit, label = st.cid_day
                cid = f"k{len(checks)}"
                checks[cid] = CheckMeta("caller_id_rate", days=1, zones=(site_timezone,), label=label)
                cchk.append(obj(("id", js(cid)), ("candidate_key", js("attempts_key")),
                                ("since", s(Fld(low(1, ((site_timezone, 0),))))), ("max", js(limit)),
                                ("reason", js("caller_id_rate"))))
            cands = []  # flat, as build_plan's: schema.CANDIDATE's fields of each candidate
            for first, ok in cand_shape:
                ct = f("c%d" % first)
                a = k(fmt(keys.cid_attempts(ct)))
                lv = k(fmt(keys.cid_live(ct)))
                cands += [s(Fld("c%d" % first)), js(1 if ok else 0), js(a), js(lv)]
            cids, cool = k(_lit(keys.approved_cids)), k(_lit(keys.cid_cooldown))
            cpairs = [("candidates", arr(cands)), ("checks", arr(cchk)),
                      ("concurrency", js(st.conc)), ("required", js(st.cid_req)),
                      ("approved_key", js(cids)), ("cooldown_key", js(cool))]
            if len(cand_shape) > 1:  # a pick: every candidate's health penalty, one hash
                cpairs.append(("penalty_key", js(k(_lit(keys.cid_penalties)))))
            field("caller_id", obj(*cpairs))
            # each plan its own lease and cold bound (a shadow's rules may differ)
            field("lease_until", s(Fld(low(0, -st.lease_ms))))
            field("caller_id_ttl_ms", js(st.cttl))
            field("caller_id_trim_before", s("(", Fld(low(0, st.cttl_ms))))

        if main and check_caller_id:
            # whom a later complaint or opt-out is about (decide.lua writes it on an allow)
            field("last_caller_key", js(k(fmt(keys.last_caller(tag)))))
            if party:
                field("party_last_caller_key", js(k(fmt(keys.party_last_caller(pt)))))
        if main and has_call:
            field("call_key", js(k(call_fmt)))
            field("request_fp", s(Fld("fp")))
            number_key = keys.number_base(tag)
            if party and st.quiet and all(q[1].startswith("party") for q in st.quiet):
                # other subjects of a conversation (outcome.lua: number_key + ":cv:s:<tag>") are the party's
                number_key = keys.party_prefix(pt)
            field("call_record", obj(
                ("number_key", s_fmt(fmt(number_key))),
                ("attempt_keys", js([k(w) for w in (writes[:-1] if st.agent else writes)])),
                ("conversation_keys", js([k(c) for c in conv_keys])),
                ("abandon_key", js(k(num("ab")) if st.ab else 0)),
                ("machine_key", js(k(num("am")) if st.amd else 0)),
                ("ttl_ms", js(st.call_ttl)),
                ("health_config", js(st.health_id)),
                ("campaign_tag", js(campaign_hash))))
        if main:
            if audit:
                field("audit_key", js(k(_lit(keys.audit))))
                if audit_max:
                    field("audit_max", js(audit_max))
            if valid:
                field("override_key", js(k(fmt(keys.override(tag)))))
            if versions is not None:
                field("rules_key", js(k(_lit(keys.rules))))
                field("rules_versions", js(versions[0]))
                field("rules_version", js(versions[1]))
            # the calendar version evaluated with (decide.lua: stale when another is active)
            field("calendars_key", js(k(_lit(keys.calendars))))
            field("calendar_version", js(calendars))
            if shadow is not None:
                field("shadow", body(shadow[0], "spre", {}, False))  # its check metadata: unused
                field("shadow_version", js(shadow[1]))
        return obj(*out)

    call_fmt = fmt(keys.call(f("call")))
    checks: dict[str, CheckMeta] = {}
    body_fmt = body(policy, "pre", checks, True)

    tpl = PlanTemplate()
    tpl.key_fmts = [f if "{" in f.replace("{{", "").replace("}}", "") else None for f in fmts]
    tpl.static_keys = [f.replace("{{", "{").replace("}}", "}") for f in fmts]
    tpl.call_at = fmts.index(call_fmt) if call_fmt in fmts else -1
    tpl.call_fmt = call_fmt
    others = [f for f in fmts if f != call_fmt]
    # one format for the keys when no literal text holds the separator
    tpl.keys_fmt = _KEY_SEP.join(others) if others and not any(_KEY_SEP in f for f in others) else None
    tpl.body_fmt = body_fmt
    tpl.keys_parts, tpl.call_parts, tpl.body_parts = (_split_format(tpl.keys_fmt), _split_format(call_fmt),
                                                      _split_format(body_fmt))
    tpl.checks = checks
    tpl.lows = lows
    # checked by fill: the strings but the decision id (checked apart) and the times (by their spans)
    tpl.lens = tuple((name, _field_len(Fld(name))) for name in sorted(used) if name not in ("now", "did")
                     and name[:2] != "lo")
    spans = [a for _, kind, a in lows if kind == 0] + [0]
    tpl.spans = (min(spans), max(spans))
    tpl.ncand = len(cand_shape)
    tpl.tail = None
    return tpl

