"""Turn a request plus rules into the decide.lua plan, and read its answer.

Pure functions: the *what* of every counter rule (which key, which window
bound, which limit) is decided here; decide.lua only counts and reserves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from dialguard.keys import Keys
from dialguard.numbers import NumberInfo
from dialguard.rules import Policy
from dialguard.timerules import day_start_after, local_midnight, zones_for

UTC = timezone.utc
CALL_RECORD_TTL = timedelta(days=2)
DEFAULT_LEASE = timedelta(hours=2)


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def from_ms(v: float) -> datetime:
    return datetime.fromtimestamp(v / 1000, UTC)


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
        return [json.dumps(self.body, separators=(",", ":"))]


def _counted(plan: Plan, base: str, uncounted: tuple[str, ...] = ()) -> tuple[list[int], dict]:
    """The attempt log, plus its log of attempts with a reported not-connected
    outcome (`<base>:x`), of which the rule counts those it does not exclude."""
    extra = {"x": plan.k(base + ":x")}
    if uncounted:
        extra["ex"] = ",".join(uncounted)
    return [plan.k(base)], extra


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
) -> Plan:
    plan = Plan(candidates=candidates)
    now_ms = ms(now)
    b = plan.body
    b["now"] = str(now_ms)
    b["did"] = decision_id
    b["pre"] = pre_reasons
    b["pause"] = plan.k(keys.pause)
    pf = ["all", "camp:" + campaign]
    b["pf"] = pf
    b["camp"] = plan.k(keys.campaign(campaign))
    b["flags"] = plan.k(keys.flags(number_tag))
    b["dncc"] = plan.k(keys.campaign_dnc(number_tag))
    from dialguard.numbers import short_hash

    b["ch"] = short_hash(campaign)
    b["consent"] = 1 if policy.consent_required else 0

    checks: list[dict] = []
    writes: list[str] = [keys.attempts(number_tag, "number")]

    def add(meta: CheckMeta, key_idx: list[int], lo: str, limit: int, extra: dict | None = None):
        cid = f"k{len(plan.checks)}"
        plan.checks[cid] = meta
        d = {"i": cid, "k": key_idx, "lo": lo, "m": limit, "r": meta.reason}
        if extra:
            d.update(extra)
        checks.append(d)

    # Zones in which day windows are counted: the pack's time zones for the
    # callee, else the call centre's own zone.
    def day_zones(pack_name: str) -> tuple[str, ...]:
        for p in policy.packs:
            if p.pack == pack_name:
                zs = zones_for(p.hours, info.timezones)
                if zs:
                    return zs
        return info.timezones or (site_timezone,)

    for pack_name, cap in policy.caps:
        base = keys.attempts(number_tag, cap.scope, campaign, subject)
        if base not in writes:
            writes.append(base)
        key_idx, xinfo = _counted(plan, base, cap.uncounted_outcomes)
        label = f"{pack_name}/{cap.id}: at most {cap.max} per {cap.window.describe()} ({cap.scope})"
        w = cap.window
        if w.rolling is not None:
            add(CheckMeta("attempt_cap", rolling=w.rolling, label=label), key_idx,
                "(" + str(now_ms - int(w.rolling.total_seconds() * 1000)), cap.max, xinfo)
        elif w.days is not None:
            zs = day_zones(pack_name)
            lo = min(ms(local_midnight(now, z, w.days - 1)) for z in zs)
            add(CheckMeta("attempt_cap", days=w.days, zones=zs, label=label), key_idx, str(lo), cap.max, xinfo)
        else:
            add(CheckMeta("attempt_cap", label=label), key_idx, "-inf", cap.max, xinfo)

    if policy.min_interval:
        key_idx, xinfo = _counted(plan, keys.attempts(number_tag, "number"))
        add(CheckMeta("min_interval", rolling=policy.min_interval,
                      label=f"at least {policy.min_interval} between attempts"),
            key_idx, "(" + str(now_ms - int(policy.min_interval.total_seconds() * 1000)), 1, xinfo)

    conv_keys: list[str] = []
    quiet_ttl = timedelta(days=1)
    for pack in policy.packs:
        q = pack.quiet_after_conversation
        if not q:
            continue
        ck = keys.conversations(number_tag, q.scope, subject)
        if ck not in conv_keys:
            conv_keys.append(ck)
        label = f"{pack.pack}: quiet {q.window.describe()} after a conversation ({q.scope})"
        if q.window.rolling is not None:
            quiet_ttl = max(quiet_ttl, q.window.rolling)
            add(CheckMeta("post_conversation_quiet", rolling=q.window.rolling, label=label), [plan.k(ck)],
                "(" + str(now_ms - int(q.window.rolling.total_seconds() * 1000)), 1)
        else:
            quiet_ttl = max(quiet_ttl, timedelta(days=q.window.days + 1))
            zs = day_zones(pack.pack)
            lo = min(ms(local_midnight(now, z, q.window.days - 1)) for z in zs)
            add(CheckMeta("post_conversation_quiet", days=q.window.days, zones=zs, label=label),
                [plan.k(ck)], str(lo), 1)

    ab, amd = policy.abandon_quiet
    if ab:
        quiet_ttl = max(quiet_ttl, ab)
        add(CheckMeta("post_abandon_quiet", rolling=ab, label=f"quiet {ab} after an abandoned call"),
            [plan.k(keys.num(number_tag, "ab"))], "(" + str(now_ms - int(ab.total_seconds() * 1000)), 1)
    if amd:
        quiet_ttl = max(quiet_ttl, amd)
        add(CheckMeta("post_abandon_quiet", rolling=amd, label=f"quiet {amd} after an answering-machine hang-up"),
            [plan.k(keys.num(number_tag, "am"))], "(" + str(now_ms - int(amd.total_seconds() * 1000)), 1)

    if policy.agent_per_day is not None:
        lo = ms(local_midnight(now, site_timezone))
        add(CheckMeta("agent_cap", days=1, zones=(site_timezone,),
                      label=f"agent at most {policy.agent_per_day} per day"),
            [plan.k(keys.agent(agent))], str(lo), policy.agent_per_day)
        writes.append(keys.agent(agent))

    b["checks"] = checks
    retention = policy.retention()
    b["ttl"] = str(int(retention.total_seconds() * 1000))
    b["old"] = "(" + str(now_ms - int(retention.total_seconds() * 1000))
    b["w"] = [plan.k(w) for w in writes]

    # Caller ID: rates per minute/hour (rolling) and per call-centre day.
    if check_caller_id:
        lim = policy.caller_id_limits
        cchk: list[dict] = []

        def cadd(meta: CheckMeta, lo: str, limit: int):
            cid = f"k{len(plan.checks)}"
            plan.checks[cid] = meta
            cchk.append({"i": cid, "f": "a", "lo": lo, "m": limit, "r": meta.reason})

        for fld, span in (("per_minute", timedelta(minutes=1)), ("per_hour", timedelta(hours=1))):
            if lim[fld] is not None:
                cadd(CheckMeta("caller_id_rate", rolling=span, label=f"caller ID at most {lim[fld]} {fld}"),
                     "(" + str(now_ms - int(span.total_seconds() * 1000)), lim[fld])
        if lim["per_day"] is not None:
            cadd(CheckMeta("caller_id_rate", days=1, zones=(site_timezone,),
                           label=f"caller ID at most {lim['per_day']} per day"),
                 str(ms(local_midnight(now, site_timezone))), lim["per_day"])
        cands = []
        for n, c in enumerate(candidates, start=1):
            cands.append({"n": n, "h": c.tag, "ok": 1 if c.statically_approved else 0,
                          "a": plan.k(keys.cid_attempts(c.tag)), "l": plan.k(keys.cid_live(c.tag))})
        b["cid"] = {
            "c": cands, "chk": cchk,
            "conc": lim["concurrency"] if lim["concurrency"] is not None else -1,
            "req": 1 if policy.caller_id_required else 0,
            "cids": plan.k(keys.approved_cids), "cool": plan.k(keys.cid_cooldown),
        }
        lease = timedelta(seconds=policy.max_duration_s + 600) if policy.max_duration_s else DEFAULT_LEASE
        b["lease"] = str(now_ms + int(lease.total_seconds() * 1000))
        b["cttl"] = str(int(timedelta(days=2).total_seconds() * 1000))
        b["cold"] = "(" + str(now_ms - int(timedelta(days=2).total_seconds() * 1000))

    if call_id:
        b["call"] = plan.k(keys.call(call_id))
        b["rec"] = {
            "nk": f"{keys.prefix}:{{n:{number_tag}}}",
            "ak": " ".join(writes[:-1] if policy.agent_per_day is not None else writes),
            "cv": " ".join(conv_keys),
            "ab": keys.num(number_tag, "ab") if ab else "",
            "am": keys.num(number_tag, "am") if amd else "",
            "ttl": str(int(CALL_RECORD_TTL.total_seconds() * 1000)),
            "qttl": str(int(quiet_ttl.total_seconds() * 1000)),
        }
    if audit_payload is not None:
        b["audit"] = plan.k(keys.audit)
        b["a"] = audit_payload
        if audit_max:
            b["amax"] = audit_max
    return plan


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
