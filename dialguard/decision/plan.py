"""Turn a request plus rules into the decide.lua plan, and read its answer.

Pure functions: the *what* of every counter rule (which key, which window
bound, which limit) is decided here; decide.lua only counts and reserves.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from dialguard.decision.keys import Keys
from dialguard.numbers import NumberInfo, short_hash
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
        quiet_ttl = timedelta(days=1)
        for pack in policy.packs:
            q = pack.quiet_after_conversation
            if not q:
                continue
            label = f"{pack.pack}: quiet {q.window.describe()} after a conversation ({q.scope})"
            if q.window.rolling is not None:
                quiet_ttl = max(quiet_ttl, q.window.rolling)
            else:
                quiet_ttl = max(quiet_ttl, timedelta(days=q.window.days + 1))
            self.quiet.append((pack.pack, q.scope, label, q.window.rolling,
                               _td_ms(q.window.rolling) if q.window.rolling is not None else None, q.window.days))
        ab, amd = policy.abandon_quiet
        self.ab = (ab, _td_ms(ab), f"quiet {ab} after an abandoned call") if ab else None
        self.amd = (amd, _td_ms(amd), f"quiet {amd} after an answering-machine hang-up") if amd else None
        if ab:
            quiet_ttl = max(quiet_ttl, ab)
        if amd:
            quiet_ttl = max(quiet_ttl, amd)
        self.qttl = str(_td_ms(quiet_ttl))
        apd = policy.agent_per_day
        self.agent = (apd, f"agent at most {apd} per day") if apd is not None else None
        retention = _td_ms(policy.retention())
        self.ttl = str(retention)
        self.retention_ms = retention
        self.consent = 1 if policy.consent_required else 0
        lim = policy.caller_id_limits
        self.cid_rates = [(lim[fld], span, _td_ms(span), f"caller ID at most {lim[fld]} {fld}")
                          for fld, span in (("per_minute", timedelta(minutes=1)), ("per_hour", timedelta(hours=1)))
                          if lim[fld] is not None]
        self.cid_day = (lim["per_day"], f"caller ID at most {lim['per_day']} per day") \
            if lim["per_day"] is not None else None
        self.conc = lim["concurrency"] if lim["concurrency"] is not None else -1
        self.cid_req = 1 if policy.caller_id_required else 0
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
    party_tag: str | None = None,
) -> Plan:
    """`share`: another plan whose KEYS list this one extends (the shadow rules'
    plan rides inside the enforcing one's script call). `request_fp`: the
    request's keyed hash (dialguard.engine.request_fingerprint), with a call id:
    an identical request under that call id gets the earlier answer again."""
    st = _static(policy)
    plan = Plan(candidates=candidates)
    if share is not None:
        plan.keys, plan._index = share.keys, share._index
    k = plan.k
    pchecks = plan.checks
    now_ms = ms(now)
    b = plan.body
    b["now"] = str(now_ms)
    b["did"] = decision_id
    b["pre"] = pre_reasons
    b["pause"] = k(keys.pause)
    b["pf"] = ["all", "camp:" + campaign]
    b["camp"] = k(keys.campaign(campaign))
    b["flags"] = k(keys.flags(number_tag))
    b["dncc"] = k(keys.campaign_dnc(number_tag))
    if info.valid:
        # DNC lists at scale: the number's fingerprint in the global and the campaign's list
        from dialguard.dnc import fingerprint, list_name
        bucket, rec = fingerprint(number_tag)
        b["dnck"] = [k(keys.dnc_bucket(list_name(None), bucket)), k(keys.dnc_bucket(list_name(campaign), bucket))]
        b["dncr"] = rec.hex()
    b["ch"] = short_hash(campaign)
    b["consent"] = st.consent

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

    for pack_name, scope0, cmax, uncounted, label, rolling, rolling_ms, days in [
            (c[0], s, *c[2:]) for c in st.caps for s in scoped(c[1])]:
        scope = scope0[1]
        base = all_key if scope == "number" else keys.scoped_attempts(number_tag, party_tag, scope, campaign,
                                                                       subject)
        if base not in writes:
            writes.append(base)
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
        d = {"i": cid, "k": kk, "lo": lo, "m": cmax, "r": "attempt_cap", "x": x}
        if uncounted:
            d["ex"] = ",".join(uncounted)
        checks.append(d)

    if st.min_interval:
        mi, mi_ms, label = st.min_interval
        x = k(all_key + ":x")
        cid = f"k{len(pchecks)}"
        pchecks[cid] = CheckMeta("min_interval", rolling=mi, label=label)
        checks.append({"i": cid, "k": [k(all_key)], "lo": "(" + str(now_ms - mi_ms), "m": 1,
                       "r": "min_interval", "x": x})

    conv_keys: list[str] = []
    for pack_name, scope0, label, rolling, rolling_ms, days in [
            (q[0], s, *q[2:]) for q in st.quiet for s in scoped(q[1])]:
        ck = keys.scoped_conversations(number_tag, party_tag, scope0[1], subject)
        if ck not in conv_keys:
            conv_keys.append(ck)
        cid = f"k{len(pchecks)}"
        if rolling is not None:
            pchecks[cid] = CheckMeta("post_conversation_quiet", rolling=rolling, label=label)
            checks.append({"i": cid, "k": [k(ck)], "lo": "(" + str(now_ms - rolling_ms), "m": 1,
                           "r": "post_conversation_quiet"})
        else:
            zs = st.day_zones(pack_name, callee, site_timezone)
            lo = min(_midnight_ms(now, now_ms, z, days - 1) for z in zs)
            pchecks[cid] = CheckMeta("post_conversation_quiet", days=days, zones=zs, label=label)
            checks.append({"i": cid, "k": [k(ck)], "lo": str(lo), "m": 1, "r": "post_conversation_quiet"})

    for q, suffix in ((st.ab, "ab"), (st.amd, "am")):
        if q:
            span, span_ms, label = q
            cid = f"k{len(pchecks)}"
            pchecks[cid] = CheckMeta("post_abandon_quiet", rolling=span, label=label)
            checks.append({"i": cid, "k": [k(keys.num(number_tag, suffix))],
                           "lo": "(" + str(now_ms - span_ms), "m": 1, "r": "post_abandon_quiet"})

    if st.agent:
        apd, label = st.agent
        akey = keys.agent(agent)
        cid = f"k{len(pchecks)}"
        pchecks[cid] = CheckMeta("agent_cap", days=1, zones=(site_timezone,), label=label)
        checks.append({"i": cid, "k": [k(akey)], "lo": str(_midnight_ms(now, now_ms, site_timezone, 0)),
                       "m": apd, "r": "agent_cap"})
        writes.append(akey)

    b["checks"] = checks
    b["ttl"] = st.ttl
    b["old"] = "(" + str(now_ms - st.retention_ms)
    b["w"] = [k(w) for w in writes]

    # Caller ID: rates per minute/hour (rolling) and per call-centre day.
    if check_caller_id:
        cchk: list[dict] = []
        for limit, span, span_ms, label in st.cid_rates:
            cid = f"k{len(pchecks)}"
            pchecks[cid] = CheckMeta("caller_id_rate", rolling=span, label=label)
            cchk.append({"i": cid, "f": "a", "lo": "(" + str(now_ms - span_ms), "m": limit, "r": "caller_id_rate"})
        if st.cid_day:
            limit, label = st.cid_day
            cid = f"k{len(pchecks)}"
            pchecks[cid] = CheckMeta("caller_id_rate", days=1, zones=(site_timezone,), label=label)
            cchk.append({"i": cid, "f": "a", "lo": str(_midnight_ms(now, now_ms, site_timezone, 0)),
                         "m": limit, "r": "caller_id_rate"})
        cands = []
        for n, c in enumerate(candidates, start=1):
            cands.append({"n": n, "h": c.tag, "ok": 1 if c.statically_approved else 0,
                          "a": k(keys.cid_attempts(c.tag)), "l": k(keys.cid_live(c.tag)),
                          "hh": k(keys.cid_health(c.tag))})
        b["cid"] = {
            "c": cands, "chk": cchk, "conc": st.conc, "req": st.cid_req,
            "cids": k(keys.approved_cids), "cool": k(keys.cid_cooldown),
        }
        b["lease"] = str(now_ms + st.lease_ms)
        b["cttl"] = st.cttl
        b["cold"] = "(" + str(now_ms - st.cttl_ms)

    if call_id:
        b["call"] = k(keys.call(call_id))
        if request_fp:
            b["fp"] = request_fp
        nk = f"{keys.prefix}:{{n:{number_tag}}}"
        if party_tag and st.quiet and all(q[1].startswith("party") for q in st.quiet):
            # other subjects of a conversation (outcome.lua: nk + ":cv:s:<tag>") are the party's
            nk = keys.party_prefix(party_tag)
        b["rec"] = {
            "nk": nk,
            "ak": " ".join(writes[:-1] if st.agent else writes),
            "cv": " ".join(conv_keys),
            "ab": keys.num(number_tag, "ab") if st.ab else "",
            "am": keys.num(number_tag, "am") if st.amd else "",
            "ttl": st.call_ttl,
            "qttl": st.qttl,
            "hc": st.health_id,
            "cp": short_hash(campaign),
        }
    if audit_payload is not None:
        b["audit"] = k(keys.audit)
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


# -- compiled plans (the decision hot path) ------------------------------------------
#
# build_plan above is the reference: a dict, encoded to JSON per decision. The
# engine's hot path instead fills a PlanTemplate compiled once per plan *shape*
# (rules, campaign, callee time zones, caller-ID candidates, call id or not,
# audit, rules version): KEYS and the JSON text are format strings in which only
# the request's parts (number tag, agent, subject, candidates, call id, decision
# id, time bounds) are filled in. tests/unit/test_plan_template.py checks that
# the result equals build_plan's over many generated requests and every pack.

_esc = json.encoder.encode_basestring_ascii  # what _encode writes for a str


def _lit(text: str) -> str:
    """A literal for str.format."""
    return text.replace("{", "{{").replace("}", "}}")


@dataclass
class FilledPlan:
    """A plan from a PlanTemplate: what the engine reads of a Plan."""

    keys: list[str]
    argv: list[str]
    checks: dict[str, CheckMeta]
    candidates: list[CallerIdCandidate]

    def args(self) -> list[str]:
        return self.argv


class PlanTemplate:
    """KEYS and ARGV[1] of one plan shape; fill() gives a request's plan.

    The audit payload is not inside the JSON: it goes as ARGV[2] (decide.lua
    reads plan.a or ARGV[2]), so it is neither escaped again here nor decoded
    by the script.
    """

    __slots__ = ("key_fmts", "static_keys", "keys_fmt", "call_at", "call_fmt", "body_fmt", "checks", "lows",
                 "ncand", "tail")

    def fill(self, *, now: datetime, decision_id: str, pre_json: str, tag: str, agent_hash: str,
             sub_hash: str, cand_tags: list[str], call_id: str | None, payload: str | None,
             spre_json: str = "[]", request_fp: str = "") -> tuple[list[str], list[str]]:
        now_ms = int(now.timestamp() * 1000)
        v = {"tag": tag, "ag": agent_hash, "sub": sub_hash, "call": call_id, "now": now_ms, "fp": request_fp,
             "did": _esc(decision_id), "pre": pre_json, "dncr": tag[4:14], "bk": tag[:4], "spre": spre_json}
        for i, t in enumerate(cand_tags):
            v[f"c{i}"] = t
        for name, kind, a in self.lows:
            if kind == 0:  # now minus a span: rolling windows' (now - span, now], and the lease (span < 0)
                v[name] = now_ms - a
            else:  # calendar days: the earliest local day start over the zones
                v[name] = min(_midnight_ms(now, now_ms, z, back) for z, back in a)
        if self.keys_fmt is not None:
            # every key but the call's in one format, split on a byte none of them
            # holds (their fields are hex; compile_plan checked the literal text)
            keys = self.keys_fmt.format_map(v).split(_KEY_SEP)
            if self.call_at >= 0:
                keys.insert(self.call_at, self.call_fmt.format_map(v))
        else:
            keys = [f.format_map(v) if f is not None else s for f, s in zip(self.key_fmts, self.static_keys)]
        args = [self.body_fmt.format_map(v)]
        if payload is not None:
            args.append(payload)
        return keys, args


_KEY_SEP = "\x00"


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
) -> PlanTemplate:
    """The PlanTemplate of one shape, in build_plan's order of KEYS and fields.

    cand_shape: per caller-ID candidate, (index of the first candidate with the
    same tag, statically approved); versions: (rvs, rver) when the engine follows
    published rules versions; shadow: (shadow rules, their version) to evaluate
    beside (the `sh` plan of Engine._plan_built: build_plan of the shadow rules
    on the same KEYS, no call record, no audit). The request's parts are format
    fields: {tag} (number tag), {ag} (agent hash), {sub} (subject hash), {cN}
    (candidate N's tag), {call} (call id), {now}, {did}, {pre}, {spre} (the
    shadow plan's pre reasons), {dncr}, {bk}, {loN} (bounds from the time).
    """
    p = keys.prefix
    idx: dict[str, int] = {}
    fmts: list[str] = []

    def k(fmt: str) -> int:
        i = idx.get(fmt)
        if i is None:
            fmts.append(fmt)
            i = idx[fmt] = len(fmts)
        return i

    def num(suffix: str) -> str:  # Keys.num with the tag as a field
        return _lit(p + ":{n:") + "{tag}" + _lit("}:" + suffix)

    def attempts(scope: str) -> str:
        # party scopes without a party (a request with one is planned by build_plan)
        scope = {"party": "number", "party_subject": "number_subject"}.get(scope, scope)
        if scope == "number":
            return num("a:all")
        if scope == "number_subject":
            return num("a:s:") + "{sub}"
        if scope == "number_campaign":
            return num("a:c:" + short_hash(campaign))
        raise ValueError(scope)

    def conversations(scope: str) -> str:
        return num("cv:all") if scope in ("number", "party") else num("cv:s:") + "{sub}"

    lows: list[tuple[str, int, object]] = []

    def low(kind: int, a) -> str:
        name = f"lo{len(lows)}"
        lows.append((name, kind, a))
        return "{" + name + "}"

    def js(value) -> str:  # a constant, as JSON
        return _lit(_encode(value))

    def obj(*pairs) -> str:  # a JSON object of (name, value already as a format) pairs
        return "{{" + ",".join(_lit(_esc(n) + ":") + v for n, v in pairs) + "}}"

    from dialguard.dnc import GLOBAL, list_name

    def body(pol: Policy, pre_fmt: str, checks: dict[str, CheckMeta], main: bool) -> str:
        """One plan's JSON object as a format (main: the enforcing plan, with the
        call record, audit, override and rules-version fields)."""
        st = _static(pol)
        out: list[str] = []

        def field(name: str, value_fmt: str) -> None:
            out.append(("," if out else "") + _lit(_esc(name) + ":") + value_fmt)

        field("now", '"{now}"')
        field("did", "{did}")
        field("pre", pre_fmt)
        field("pause", str(k(_lit(keys.pause))))
        field("pf", js(["all", "camp:" + campaign]))
        field("camp", str(k(_lit(keys.campaign(campaign)))))
        field("flags", str(k(num("f"))))
        field("dncc", str(k(num("dncc"))))
        if valid:
            dk = [k(_lit(f"{p}:{{dnc}}:{GLOBAL}:") + "{bk}"),
                  k(_lit(f"{p}:{{dnc}}:{list_name(campaign)}:") + "{bk}")]
            field("dnck", js(dk))
            field("dncr", '"{dncr}"')
        field("ch", js(short_hash(campaign)))
        field("consent", js(st.consent))

        items: list[str] = []
        all_key = attempts("number")
        writes = [all_key]
        for pack_name, scope, cmax, uncounted, label, rolling, rolling_ms, days in st.caps:
            base = all_key if scope == "number" else attempts(scope)
            if base not in writes:
                writes.append(base)
            x = k(base + ":x")
            kk = [k(base)]
            cid = f"k{len(checks)}"
            if rolling is not None:
                checks[cid] = CheckMeta("attempt_cap", rolling=rolling, label=label)
                lo = '"(' + low(0, rolling_ms) + '"'
            elif days is not None:
                zs = st.day_zones(pack_name, callee, site_timezone)
                checks[cid] = CheckMeta("attempt_cap", days=days, zones=zs, label=label)
                lo = '"' + low(1, tuple((z, days - 1) for z in zs)) + '"'
            else:
                checks[cid] = CheckMeta("attempt_cap", label=label)
                lo = js("-inf")
            pairs = [("i", js(cid)), ("k", js(kk)), ("lo", lo), ("m", js(cmax)), ("r", js("attempt_cap")),
                     ("x", js(x))]
            if uncounted:
                pairs.append(("ex", js(",".join(uncounted))))
            items.append(obj(*pairs))

        if st.min_interval:
            mi, mi_ms, label = st.min_interval
            x = k(all_key + ":x")
            cid = f"k{len(checks)}"
            checks[cid] = CheckMeta("min_interval", rolling=mi, label=label)
            items.append(obj(("i", js(cid)), ("k", js([k(all_key)])), ("lo", '"(' + low(0, mi_ms) + '"'),
                             ("m", "1"), ("r", js("min_interval")), ("x", js(x))))

        conv_keys: list[str] = []
        for pack_name, scope, label, rolling, rolling_ms, days in st.quiet:
            ck = conversations(scope)
            if ck not in conv_keys:
                conv_keys.append(ck)
            cid = f"k{len(checks)}"
            if rolling is not None:
                checks[cid] = CheckMeta("post_conversation_quiet", rolling=rolling, label=label)
                lo = '"(' + low(0, rolling_ms) + '"'
            else:
                zs = st.day_zones(pack_name, callee, site_timezone)
                checks[cid] = CheckMeta("post_conversation_quiet", days=days, zones=zs, label=label)
                lo = '"' + low(1, tuple((z, days - 1) for z in zs)) + '"'
            items.append(obj(("i", js(cid)), ("k", js([k(ck)])), ("lo", lo), ("m", "1"),
                             ("r", js("post_conversation_quiet"))))

        for q, suffix in ((st.ab, "ab"), (st.amd, "am")):
            if q:
                span, span_ms, label = q
                cid = f"k{len(checks)}"
                checks[cid] = CheckMeta("post_abandon_quiet", rolling=span, label=label)
                items.append(obj(("i", js(cid)), ("k", js([k(num(suffix))])), ("lo", '"(' + low(0, span_ms) + '"'),
                                 ("m", "1"), ("r", js("post_abandon_quiet"))))

        if st.agent:
            apd, label = st.agent
            akey = _lit(p + ":{a:") + "{ag}" + _lit("}:a")
            cid = f"k{len(checks)}"
            checks[cid] = CheckMeta("agent_cap", days=1, zones=(site_timezone,), label=label)
            items.append(obj(("i", js(cid)), ("k", js([k(akey)])),
                             ("lo", '"' + low(1, ((site_timezone, 0),)) + '"'),
                             ("m", js(apd)), ("r", js("agent_cap"))))
            writes.append(akey)

        field("checks", "[" + ",".join(items) + "]")
        field("ttl", js(st.ttl))
        field("old", '"(' + low(0, st.retention_ms) + '"')
        field("w", js([k(w) for w in writes]))

        if check_caller_id:
            cchk = []
            for limit, span, span_ms, label in st.cid_rates:
                cid = f"k{len(checks)}"
                checks[cid] = CheckMeta("caller_id_rate", rolling=span, label=label)
                cchk.append(obj(("i", js(cid)), ("f", '"a"'), ("lo", '"(' + low(0, span_ms) + '"'),
                                ("m", js(limit)), ("r", js("caller_id_rate"))))
            if st.cid_day:
                limit, label = st.cid_day
                cid = f"k{len(checks)}"
                checks[cid] = CheckMeta("caller_id_rate", days=1, zones=(site_timezone,), label=label)
                cchk.append(obj(("i", js(cid)), ("f", '"a"'), ("lo", '"' + low(1, ((site_timezone, 0),)) + '"'),
                                ("m", js(limit)), ("r", js("caller_id_rate"))))
            cands = []
            for n, (first, ok) in enumerate(cand_shape, start=1):
                t = "{c%d}" % first
                a = k(_lit(p + ":{c:") + t + _lit("}:a"))
                lv = k(_lit(p + ":{c:") + t + _lit("}:live"))
                hh = k(_lit(p + ":{c:") + t + _lit("}:h"))
                cands.append(obj(("n", js(n)), ("h", '"' + t + '"'), ("ok", "1" if ok else "0"), ("a", js(a)),
                                 ("l", js(lv)), ("hh", js(hh))))
            cids, cool = k(_lit(keys.approved_cids)), k(_lit(keys.cid_cooldown))
            field("cid", obj(("c", "[" + ",".join(cands) + "]"), ("chk", "[" + ",".join(cchk) + "]"),
                             ("conc", js(st.conc)), ("req", js(st.cid_req)), ("cids", js(cids)), ("cool", js(cool))))
            # each plan its own lease and cold bound (a shadow's rules may differ)
            field("lease", '"' + low(0, -st.lease_ms) + '"')
            field("cttl", js(st.cttl))
            field("cold", '"(' + low(0, st.cttl_ms) + '"')

        if main and has_call:
            field("call", str(k(_lit(keys.g("call:")) + "{call}")))
            field("fp", '"{fp}"')  # hex

            def jkeys(fmts_: list[str]) -> str:  # keys joined by spaces, as one JSON string
                # the key formats hold literal text (escaped once for format) and fields
                # whose values are hex: escape the text for JSON, keep the fields
                return '"' + " ".join(_json_in_fmt(f) for f in fmts_) + '"'

            field("rec", obj(
                ("nk", '"' + _json_in_fmt(_lit(p + ":{n:") + "{tag}" + _lit("}")) + '"'),
                ("ak", jkeys(writes[:-1] if st.agent else writes)),
                ("cv", jkeys(conv_keys)),
                ("ab", '"' + _json_in_fmt(num("ab")) + '"' if st.ab else '""'),
                ("am", '"' + _json_in_fmt(num("am")) + '"' if st.amd else '""'),
                ("ttl", js(st.call_ttl)),
                ("qttl", js(st.qttl)),
                ("hc", js(st.health_id)),
                ("cp", js(short_hash(campaign)))))
        if main:
            if audit:
                field("audit", str(k(_lit(keys.audit))))
                if audit_max:
                    field("amax", js(audit_max))
            if valid:
                field("ov", str(k(num("ov"))))
            if versions is not None:
                field("rk", str(k(_lit(keys.rules))))
                field("rvs", js(versions[0]))
                field("rver", js(versions[1]))
            # the calendar version evaluated with (decide.lua: stale when another is active)
            field("ck", str(k(_lit(keys.calendars))))
            field("cv", js(calendars))
            if shadow is not None:
                field("sh", body(shadow[0], "{spre}", {}, False))  # its check metadata: unused
                field("sv", js(shadow[1]))
        return "{{" + "".join(out) + "}}"

    checks: dict[str, CheckMeta] = {}
    body_fmt = body(policy, "{pre}", checks, True)

    tpl = PlanTemplate()
    tpl.key_fmts = [f if "{" in f.replace("{{", "").replace("}}", "") else None for f in fmts]
    tpl.static_keys = [f.replace("{{", "{").replace("}}", "}") for f in fmts]
    call_fmt = _lit(keys.g("call:")) + "{call}"
    tpl.call_at = fmts.index(call_fmt) if call_fmt in fmts else -1
    tpl.call_fmt = call_fmt
    others = [f for f in fmts if f != call_fmt]
    # one format for the keys when no literal text holds the separator
    tpl.keys_fmt = _KEY_SEP.join(others) if others and not any(_KEY_SEP in f for f in others) else None
    tpl.body_fmt = body_fmt
    tpl.checks = checks
    tpl.lows = lows
    tpl.ncand = len(cand_shape)
    tpl.tail = None
    return tpl


def _json_in_fmt(fmt: str) -> str:
    """A key format placed inside a JSON string: JSON-escape its literal text."""
    import re

    parts = re.split(r"(\{\{|\}\}|\{[a-z0-9]+\})", fmt)
    out = []
    for part in parts:
        if part in ("{{", "}}"):
            out.append(part)  # a literal brace: nothing to escape in JSON
        elif part.startswith("{") and part.endswith("}"):
            out.append(part)  # a field: hex or a call id (never inside a JSON string here)
        else:
            out.append(_lit(_esc(part.replace("{{", "{").replace("}}", "}"))[1:-1]))
    return "".join(out)
