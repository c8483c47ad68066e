"""`dialguard counters rebuild`: the Redis counters again, from the audit.

After Redis lost its data, the keys decide.lua, outcome.lua and event.lua had
written are recomputed from PostgreSQL by replaying, in stream order, exactly
the writes those scripts made:

- an allowed decision: the plan the engine would build (dialguard.decision.plan.build_plan,
  same Keys, same short hashes) gives the attempt logs it wrote (number,
  number+subject, number+campaign, agent), each ZADD + trim + PEXPIRE; the
  caller-ID attempt log and live-call lease of the chosen caller ID (`ch`); the
  call record (what an outcome releases);
- an outcome: the call record's attempt logs lose the attempt to `<log>:x` as
  "<outcome>|<did>" for not-connected outcomes, the lease is released, the
  conversation / abandoned / answering-machine logs get the call;
- an event: the number's flags hash (dnc, optout, complaint, consent) and its
  campaign DNC set; a party's event ("party": true in its record, number_hash
  the party's keyed hash): the party's flags hash (optout, complaint, consent);
- caller-ID health (outcome.lua's second half, dialguard/callerid_health.py):
  the caller ID's outcome log, its figures and pick penalty, the campaign's
  set of caller IDs and the policies' health settings. The cool-down a health
  rule triggered comes back with the configuration (its audit record is an
  admin record); that the figures start afresh after it, too.

Expiry is replayed too: a key expires at (Redis time of its last PEXPIRE + TTL),
Redis time being the stream id of the record. Keys that would have expired are
not written; the others get their remaining TTL. Leases whose time has passed
are dropped (a concurrency check would ignore them anyway), so calls that ended
keep no lease; so are pick penalties that have lapsed (`{g}:cidpen`: outcome.lua
prunes them too). DNC lists (the Redis fingerprint buckets) come back from their
copy at rest, the tables dnc_entries and dnc_blocks (dialguard/dnc.py), added to whatever Redis
still holds. Configuration (kill switches, campaign approvals, caller IDs and
pools, cool-downs, published rules versions, imported calendar versions, unused
override grants) comes back
from the admin, rules and override records (dialguard/audit/config_restore.py).
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterable, Iterator

import psycopg

from dialguard.audit.records import stream_key
from dialguard.config import Settings
from dialguard.decision import schema
from dialguard.decision.keys import Keys
from dialguard.numbers import NumberInfo, short_hash
from dialguard.decision.plan import CallerIdCandidate, build_plan, call_record_keys, ms
from dialguard.rules import MOVABLE_OUTCOMES, Policy, RulesError
from dialguard.timeutil import UTC

log = logging.getLogger("dialguard.audit.rebuild")

CONVERSATION = "conversation"
ABANDON = {"abandoned": "ab", "amd": "am"}  # as dialguard.engine.ABANDON
NO_INFO = NumberInfo(raw="", e164=None, region=None, timezones=(), problem=None)
EVENT_OPS = {  # kind -> (op, field) as dialguard.engine.Engine._event callers
    "opt_out": ("set", "optout"),
    "complaint": ("set", "complaint"),
    "consent": ("set", "consent"),
    "consent_revoke": ("clear", "consent"),
    "dnc_add": ("set", "dnc"),
    "dnc_remove": ("clear", "dnc"),
}


LAST_CALLER_TTL_MS = 30 * 86_400_000  # decide.lua's '{n:<H>}:lc'


class RebuildError(RuntimeError):
    pass


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def at_time(at_ms: int) -> datetime:
    """A time t with ms(t) == at_ms exactly (the plan derives every bound from ms(now))."""
    t = _EPOCH + timedelta(milliseconds=int(at_ms))
    while ms(t) < at_ms:
        t += timedelta(microseconds=1)
    while ms(t) > at_ms:
        t -= timedelta(microseconds=1)
    return t


def _bound(v: str) -> float:
    return float(v[1:]) if v.startswith("(") else float(v)


class Model:
    """The keys the scripts write, in memory, with Redis semantics that matter:
    an emptied key disappears with its TTL; PEXPIRE on a missing key is a no-op;
    a key past its expiry (Redis time t) is gone before any command sees it."""

    def __init__(self):
        self.z: dict[str, dict[str, float]] = {}
        self.h: dict[str, dict[str, str]] = {}
        self.s: dict[str, set[str]] = {}
        self.l: dict[str, list[str]] = {}
        self.str: dict[str, str] = {}
        self.exp: dict[str, int] = {}

    def _drop(self, key: str) -> None:
        self.z.pop(key, None)
        self.h.pop(key, None)
        self.s.pop(key, None)
        self.l.pop(key, None)
        self.str.pop(key, None)
        self.exp.pop(key, None)

    def live(self, key: str, t: int) -> None:
        e = self.exp.get(key)
        if e is not None and e <= t:
            self._drop(key)

    def exists(self, key: str) -> bool:
        return key in self.z or key in self.h or key in self.s or key in self.l or key in self.str

    # lists and strings
    def lpush(self, key: str, t: int, value: str) -> None:
        self.live(key, t)
        self.l.setdefault(key, []).insert(0, value)

    def ltrim(self, key: str, t: int, keep: int) -> None:
        """LTRIM key 0 keep-1"""
        self.live(key, t)
        if key in self.l:
            del self.l[key][keep:]
            if not self.l[key]:
                self._drop(key)

    def lrange(self, key: str, t: int) -> list[str]:
        self.live(key, t)
        return self.l.get(key, [])

    def set(self, key: str, t: int, value: str) -> None:
        self.live(key, t)
        self.str[key] = value
        self.exp.pop(key, None)

    # sorted sets
    def zadd(self, key: str, t: int, member: str, score: float) -> None:
        self.live(key, t)
        self.z.setdefault(key, {})[member] = score

    def zscore(self, key: str, t: int, member: str) -> float | None:
        self.live(key, t)
        return self.z.get(key, {}).get(member)

    def zrem(self, key: str, t: int, member: str) -> None:
        self.live(key, t)
        zs = self.z.get(key)
        if zs is not None and zs.pop(member, None) is not None and not zs:
            self._drop(key)

    def ztrim_below(self, key: str, t: int, bound: float) -> None:
        """ZREMRANGEBYSCORE key -inf (bound"""
        self.live(key, t)
        zs = self.z.get(key)
        if zs:
            for m in [m for m, s in zs.items() if s < bound]:
                del zs[m]
            if not zs:
                self._drop(key)

    # hashes and sets
    def hset(self, key: str, t: int, mapping: dict[str, str]) -> None:
        self.live(key, t)
        self.h.setdefault(key, {}).update(mapping)

    def hgetall(self, key: str, t: int) -> dict[str, str]:
        self.live(key, t)
        return self.h.get(key, {})

    def hdel(self, key: str, t: int, fld: str) -> None:
        self.live(key, t)
        h = self.h.get(key)
        if h is not None and h.pop(fld, None) is not None and not h:
            self._drop(key)

    def sadd(self, key: str, t: int, member: str) -> None:
        self.live(key, t)
        self.s.setdefault(key, set()).add(member)

    def srem(self, key: str, t: int, member: str) -> None:
        self.live(key, t)
        st = self.s.get(key)
        if st is not None and member in st:
            st.discard(member)
            if not st:
                self._drop(key)

    # expiry
    def pexpire(self, key: str, t: int, ttl_ms: int) -> None:
        self.live(key, t)
        if self.exists(key):
            self.exp[key] = t + int(ttl_ms)

    def persist(self, key: str, t: int) -> None:
        self.live(key, t)
        self.exp.pop(key, None)

    def keep_for(self, key: str, t: int, ttl_ms: int) -> None:
        """outcome.lua's PEXPIRE GT, else NX: an expiry never shortened."""
        self.live(key, t)
        if self.exists(key):
            e = self.exp.get(key)
            if e is None or t + int(ttl_ms) > e:
                self.exp[key] = t + int(ttl_ms)

    def pttl(self, key: str, t: int) -> int:
        self.live(key, t)
        if not self.exists(key):
            return -2
        e = self.exp.get(key)
        return -1 if e is None else e - t


@dataclass
class DecisionRec:
    decision_id: str
    stream_id: str
    at_ms: int          # the decision's clock in ms, exactly as the script got it
    number_hash: str
    campaign: str
    agent: str
    subject: str | None
    call_id: str | None
    caller_id_hash: str | None
    rules: str | None
    rules_version: str | None
    party_hash: str | None = None  # the request's party (its keyed hash = Keys.party_tag)


@dataclass
class OutcomeRec:
    outcome_id: str
    stream_id: str
    decision_id: str | None
    call_id: str | None
    result: str
    at_ms: int
    subject: str | None
    talk_s: int | None = None
    hangup_cause: int | None = None
    sip_code: int | None = None


@dataclass
class EventRec:
    event_id: str
    stream_id: str
    kind: str
    number_hash: str    # a party's keyed hash when `party`
    campaign: str | None
    at_ms: int
    party: bool = False  # an event of a person (`optout --party`...): the party's flags


@dataclass
class Summary:
    decisions: int = 0
    outcomes: int = 0
    events: int = 0
    keys: Counter = field(default_factory=Counter)
    members: int = 0
    expired_keys: int = 0
    dropped_leases: int = 0
    dropped_penalties: int = 0  # lapsed pick penalties ({g}:cidpen) not written back
    unknown_rules: Counter = field(default_factory=Counter)
    changed_rules: Counter = field(default_factory=Counter)
    dnc_lists: dict = field(default_factory=dict)   # list -> entries restored from dnc_entries + dnc_blocks


class Replayer:
    """Applies audit records, in stream order, to a Model exactly as the Lua scripts did."""

    def __init__(self, settings: Settings, keys: Keys, default_policy: Policy):
        self.settings = settings
        self.keys = keys
        self.default_policy = default_policy
        self.model = Model()
        self.summary = Summary()
        self._policies: dict[str, Policy] = {}
        # rules versions published with `dialguard rules apply`, by content hash
        self.published: dict[str, Policy] = {}
        self._qttl = int(default_policy.retention().total_seconds() * 1000)
        self._health: dict[str, list] = {}  # health settings id -> [(pack, CallerIdHealth)]
        self._cooled: dict[str, int] = {}  # caller-ID tag -> end of its last health cool-down

    def policy_for(self, rules: str | None, rv: str | None) -> Policy:
        if rv and rv in self.published:  # a published version: its own stored text
            return self.published[rv]
        name = rules or self.default_policy.name
        p = self._policies.get(name)
        if p is None and name == self.default_policy.name:
            p = self._policies[name] = self.default_policy
        if p is None:
            try:
                p = Policy.load(name.replace("+", ","))
            except RulesError as exc:
                log.warning("decisions under rules %r: cannot load them (%s); using %s", name, exc,
                            self.default_policy.name)
                self.summary.unknown_rules[name] += 1
                p = self.default_policy
            self._policies[name] = p
        if rv and p.version_hash != rv:
            self.summary.changed_rules[f"{name} {rv}->{p.version_hash}"] += 1
        return p

    # -- decide.lua, allowed branch ------------------------------------------------------
    def decision(self, d: DecisionRec) -> None:
        self.summary.decisions += 1
        m, t, did = self.model, stream_key(d.stream_id)[0], d.decision_id
        policy = self.policy_for(d.rules, d.rules_version)
        ch = d.caller_id_hash or ""
        plan = build_plan(
            policy=policy, keys=self.keys, info=NO_INFO, number_tag=d.number_hash, campaign=d.campaign,
            agent=d.agent, subject=d.subject, call_id=d.call_id, decision_id=did, now=at_time(d.at_ms),
            pre_reasons=[], candidates=[CallerIdCandidate("", ch, True)] if ch else [],
            check_caller_id=bool(ch), site_timezone=self.settings.site_timezone,
            audit_payload=None, audit_max=None, party_tag=d.party_hash or None)
        b, K = plan.body, plan.keys
        now = float(b["now"])
        old = _bound(b["trim_before"])
        for ki in b["write_keys"]:
            k = K[ki - 1]
            m.zadd(k, t, did, now)
            m.ztrim_below(k, t, old)
            m.pexpire(k, t, int(b["ttl_ms"]))
        for ki in b.get("keep_keys", ()):  # a lifetime cap's log: neither trimmed nor expired
            k = K[ki - 1]
            m.zadd(k, t, did, now)
            m.persist(k, t)
        lv = ca = ""
        if ch:
            cand = dict(zip(schema.names_in_order(schema.CANDIDATE), b["caller_id"]["candidates"]))
            ca, lv = K[cand["attempts_key"] - 1], K[cand["live_key"] - 1]
            m.zadd(ca, t, did, now)
            m.ztrim_below(ca, t, _bound(b["caller_id_trim_before"]))
            m.pexpire(ca, t, int(b["caller_id_ttl_ms"]))
            if b["caller_id"]["concurrency"] >= 0:  # decide.lua: ZREMRANGEBYSCORE -inf now (integer ms)
                m.ztrim_below(lv, t, now + 0.5)
            m.zadd(lv, t, did, float(b["lease_until"]))
            m.pexpire(lv, t, int(b["caller_id_ttl_ms"]))
            lc = self.keys.last_caller(d.number_hash)  # whom a complaint is about (decide.lua)
            m.set(lc, t, f"{ch}|{b['call_record']['health_config'] if d.call_id else ''}")
            m.pexpire(lc, t, LAST_CALLER_TTL_MS)
            if d.party_hash:  # and the party's (decide.lua: '{p:<Q>}:lc')
                plc = self.keys.party_last_caller(d.party_hash)
                m.set(plc, t, m.str[lc])
                m.pexpire(plc, t, LAST_CALLER_TTL_MS)
        if d.call_id:
            rec = b["call_record"]
            ck = K[b["call_key"] - 1]
            m.hdel(ck, t, "rep")  # as decide.lua: a new allowed attempt is the call's open one
            m.hdel(ck, t, "res")
            m.hset(ck, t, {"did": did, "ch": ch, "at": b["now"], **call_record_keys(K, rec),
                           "nk": rec["number_key"], "lv": lv, "ca": ca, "hc": rec["health_config"],
                           "cp": rec["campaign_tag"], "qt": b["ttl_ms"]})
            m.pexpire(ck, t, int(rec["ttl_ms"]))
            hc = rec["health_config"]
            if hc not in self._health:  # the engine publishes them when it loads the rules
                from dialguard import callerid_health

                self._health[hc] = callerid_health.configs(policy)
                m.set(self.keys.health_config(hc), t, callerid_health.config_json(policy))

    # -- outcome.lua ------------------------------------------------------------------------
    def outcome(self, o: OutcomeRec) -> None:
        self.summary.outcomes += 1
        if not o.call_id:
            return
        m, t = self.model, stream_key(o.stream_id)[0]
        ck = self.keys.call(o.call_id)
        rec = dict(m.hgetall(ck, t))
        did = rec.get("did")
        if not did:
            return  # the script found no call record: it only wrote the audit entry
        qttl = max(self._qttl, int(rec.get("qt") or 0))  # outcome.lua: the deciding rules' retention
        now = float(o.at_ms)
        conv = o.result == CONVERSATION
        extra = ("cv:s:" + short_hash(o.subject)) if o.subject and conv else ""

        def extra_conversation():
            if conv and extra and rec.get("nk"):
                k = rec["nk"] + ":" + extra
                m.zadd(k, t, did, now)
                m.keep_for(k, t, qttl)

        if rec.get("rep") == "1":
            extra_conversation()
            return
        extra_conversation()
        if o.result in MOVABLE_OUTCOMES:
            for k in (rec.get("ak") or "").split():
                score = m.zscore(k, t, did)
                if score is not None:
                    ttl = m.pttl(k, t)
                    m.zrem(k, t, did)
                    xk = k + ":x"
                    m.zadd(xk, t, f"{o.result}|{did}", score)
                    if ttl > 0:
                        m.pexpire(xk, t, ttl)
        if rec.get("lv"):
            m.zrem(rec["lv"], t, did)
        if conv:
            for k in (rec.get("cv") or "").split():
                m.zadd(k, t, did, now)
                m.keep_for(k, t, qttl)
        ab = ABANDON.get(o.result)
        if ab and rec.get(ab):
            m.zadd(rec[ab], t, did, now)
            m.keep_for(rec[ab], t, qttl)
        m.hset(ck, t, {"rep": "1", "res": o.result})
        if rec.get("ch"):
            self._caller_id_health(rec, o, t, did)

    def _caller_id_health(self, rec: dict, o: OutcomeRec, t: int, did: str) -> None:
        """outcome.lua's caller-ID health step, write for write."""
        from dialguard import callerid_health as chh

        m, ch, now = self.model, rec["ch"], int(o.at_ms)
        cfgs = self._health.get(rec.get("hc") or "") or [("", chh.DEFAULT)]
        ok, hk = self.keys.cid_outcomes(ch), self.keys.cid_health(ch)
        keep = max(1, max(c.window_calls for _, c in cfgs))
        longest = max(c.window_hours * 3_600_000 for _, c in cfgs)
        m.lpush(ok, t, chh.entry_of(o.result, o.talk_s or 0, o.sip_code, o.hangup_cause, now).encode())
        m.ltrim(ok, t, keep)
        m.pexpire(ok, t, longest + 86_400_000)
        pool_key = ""
        if rec.get("cp"):
            pool_key = self.keys.g("hp:" + rec["cp"])
            m.sadd(pool_key, t, ch)
            m.pexpire(pool_key, t, longest + 86_400_000)
        entries = [chh.Entry.decode(x) for x in m.lrange(ok, t)]
        events = [chh.Event.decode(x) for x in m.lrange(self.keys.cid_events(ch), t)]
        since = int(float(m.hgetall(hk, t).get("since") or 0))
        fields: dict[str, str] = {}
        first = None
        until = 0
        for i, (pack, cfg) in enumerate(cfgs):
            f = chh.figures(entries, now, cfg, since, events)
            first = first or f
            fields[f"calls:{pack}"], fields[f"ans:{pack}"] = str(f.calls), str(f.answered)
            for r in cfg.rules:
                median = None
                if r.metric == "answer_rate_vs_pool":
                    if not (f.calls > 0 and f.calls >= r.min_calls and f.answer_rate < r.threshold and pool_key):
                        continue
                    rates = []
                    for member in sorted(m.s.get(pool_key, ())):
                        if member == ch:
                            n, a = f.calls, f.answered
                        else:
                            h = m.hgetall(self.keys.cid_health(member), t)
                            n, a = int(h.get(f"calls:{pack}") or 0), int(h.get(f"ans:{pack}") or 0)
                        if n > 0 and n >= r.min_calls:
                            rates.append(a / n)
                    median = chh.median(rates) if len(rates) >= 2 else None
                if chh.triggers(r, f, median):
                    until = max(until, now + int(r.cool_down.total_seconds() * 1000))
        pen = 0.0
        if first is not None:
            pen = min(3.0, first.rejection_rate + 0.5 * first.short_answer_rate + 0.1 * first.run)
        fields["pen"], fields["at"] = "%.3f" % pen, str(now)
        m.hset(hk, t, fields)
        m.pexpire(hk, t, longest + 86_400_000)
        m.hset(self.keys.cid_penalties, t, {ch: "%.3f|%d" % (pen, now + longest + 86_400_000)})
        if until:
            # the cool-down itself comes back from its admin record (config_restore);
            # one longer in force at the time (an admin's) is not known here
            until = max(until, self._cooled.get(ch, 0))
            self._cooled[ch] = until
            m.hset(hk, t, {"since": str(until), "pen": "0"})
            m.hdel(self.keys.cid_penalties, t, ch)

    # -- event.lua ----------------------------------------------------------------------------
    def event(self, e: EventRec) -> None:
        self.summary.events += 1
        m, t = self.model, stream_key(e.stream_id)[0]
        op, fld = EVENT_OPS[e.kind]
        if e.kind in ("dnc_add", "dnc_remove") and e.campaign:
            k = self.keys.campaign_dnc(e.number_hash)
            (m.sadd if e.kind == "dnc_add" else m.srem)(k, t, short_hash(e.campaign))
            return
        k = self.keys.party_flags(e.number_hash) if e.party else self.keys.flags(e.number_hash)
        if op == "set":
            new = fld not in m.hgetall(k, t)
            m.hset(k, t, {fld: "1" if fld == "dnc" else str(e.at_ms)})
            if new and e.kind in ("complaint", "opt_out"):
                self._attribute(e, t)
        else:
            m.hdel(k, t, fld)

    def _attribute(self, e: EventRec, t: int) -> None:
        """event.lua's caller-ID health step, write for write."""
        from dialguard import callerid_health as chh

        m = self.model
        lc = self.keys.party_last_caller(e.number_hash) if e.party else self.keys.last_caller(e.number_hash)
        m.live(lc, t)
        if not m.exists(lc):
            return
        ch, _, hc = m.str[lc].partition("|")
        cfgs = self._health.get(hc) or [("", chh.DEFAULT)]
        keep = max(1, max(c.window_calls for _, c in cfgs))
        longest = max(c.window_hours * 3_600_000 for _, c in cfgs)
        ek, hk = self.keys.cid_events(ch), self.keys.cid_health(ch)
        now = int(e.at_ms)
        m.lpush(ek, t, chh.Event(now, "c" if e.kind == "complaint" else "o").encode())
        m.ltrim(ek, t, chh.EVENTS_KEPT)
        m.pexpire(ek, t, longest + 86_400_000)
        entries = [chh.Entry.decode(x) for x in m.lrange(self.keys.cid_outcomes(ch), t)][:keep]
        events = [chh.Event.decode(x) for x in m.lrange(ek, t)]
        since = int(float(m.hgetall(hk, t).get("since") or 0))
        until = 0
        for _pack, cfg in cfgs:
            f = chh.figures(entries, now, cfg, since, events)
            for r in cfg.rules:
                if r.metric in ("complaints_per_1000", "optouts_per_1000") and chh.triggers(r, f):
                    until = max(until, now + int(r.cool_down.total_seconds() * 1000))
        if until:
            until = max(until, self._cooled.get(ch, 0))
            self._cooled[ch] = until
            m.hset(hk, t, {"since": str(until), "pen": "0"})
            m.pexpire(hk, t, longest + 86_400_000)
            m.hdel(self.keys.cid_penalties, t, ch)

    def replay(self, records: Iterable[tuple[tuple[int, int], str, object]]) -> None:
        for _, kind, rec in records:
            getattr(self, kind)(rec)


# -- reading the audit ------------------------------------------------------------------------
def _stream(conn: psycopg.Connection, name: str, query: str, args: dict, make) -> Iterator:
    with conn.cursor(name=name) as cur:
        cur.itersize = 5000
        cur.execute(query, args)
        for row in cur:
            yield make(*row)


ORDER = "order by recorded_at, split_part(stream_id, '-', 2)::bigint"


def horizon(conn: psycopg.Connection, default_policy: Policy, redis_now: datetime) -> datetime:
    """Records older than twice the longest retention (plus a day) can no longer
    be in any live key: a member lives until a write trims it (retention after
    its time) or until its key expires (retention after the last write)."""
    longest = default_policy.retention()
    for (rules,) in conn.execute("select distinct rules from audit_decisions where allowed").fetchall():
        try:
            longest = max(longest, Policy.load((rules or default_policy.name).replace("+", ",")).retention())
        except RulesError:
            pass
    longest = max(longest, timedelta(days=2))  # call records and caller-ID logs: 2 days
    return redis_now - 2 * longest - timedelta(days=1)


def read_records(conn: psycopg.Connection, since: datetime) -> Iterator[tuple[tuple[int, int], str, object]]:
    """Allowed decisions, outcomes (since `since`) and every event, merged in stream order."""
    args = {"since": since}
    decisions = _stream(conn, "rb_decisions", f"""
        select decision_id, stream_id, (request->>'at')::bigint, number_hash, campaign, agent, subject, call_id,
               caller_id_hash, rules, rules_version, party_hash
        from audit_decisions where allowed and replay_of is null and recorded_at >= %(since)s {ORDER}""",
        args, DecisionRec)
    outcomes = _stream(conn, "rb_outcomes", f"""
        select outcome_id, stream_id, decision_id, call_id, result, (payload->>'at')::bigint, subject,
               talk_s, hangup_cause, (payload->>'sip')::int
        from audit_outcomes where decision_id is not null and recorded_at >= %(since)s {ORDER}""", args, OutcomeRec)
    events = _stream(conn, "rb_events", f"""
        select event_id, stream_id, kind, number_hash, campaign, (payload->>'at')::bigint,
               coalesce((payload->>'party')::boolean, false)
        from audit_events {ORDER}""", args, EventRec)

    def tagged(it, kind):
        for r in it:
            yield stream_key(r.stream_id), kind, r

    return heapq.merge(tagged(decisions, "decision"), tagged(outcomes, "outcome"), tagged(events, "event"),
                       key=lambda x: x[0])


# -- writing Redis -------------------------------------------------------------------------------
def key_kind(key: str) -> str:
    tail = key.split("}:", 1)[-1]
    if "{g}:call:" in key:
        return "call records"
    if key.endswith(":x"):
        return "not-connected logs (:x)"
    if "{a:" in key:
        return "agent logs"
    if "{c:" in key:
        return {"live": "caller-ID leases", "o": "caller-ID outcome logs", "h": "caller-ID health"}.get(
            tail, "caller-ID attempt logs")
    if "{g}:hp:" in key or "{g}:hcfg:" in key or key.endswith("{g}:cidpen"):
        return "caller-ID health"
    if tail.startswith("a:"):
        return "attempt logs"
    if tail.startswith("cv:"):
        return "conversation logs"
    if tail in ("ab", "am"):
        return "abandon / machine logs"
    if tail == "f":
        return "flags"
    if tail == "dncc":
        return "campaign DNC sets"
    return "other"


def write(redis, model: Model, redis_now_ms: int, rule_now_ms: int, summary: Summary,
          dry_run: bool = False, chunk: int = 500) -> None:
    """Replace every live key of the model in Redis, with its remaining TTL."""
    from dialguard import callerid_health as chh

    pipe = redis.pipeline(transaction=False)
    n = 0
    keys = list(model.z) + list(model.h) + list(model.s) + list(model.l) + list(model.str)
    for key in keys:
        e = model.exp.get(key)
        if e is not None and e <= redis_now_ms:
            summary.expired_keys += 1
            continue
        if key in model.z:
            members = model.z[key]
            if key.endswith(":live"):
                kept = {mb: s for mb, s in members.items() if s > rule_now_ms}
                summary.dropped_leases += len(members) - len(kept)
                members = kept
                if not members:
                    continue
            summary.members += len(members)
            if not dry_run:
                pipe.delete(key)
                pipe.zadd(key, members)
        elif key in model.h:
            fields = model.h[key]
            if key.endswith("{g}:cidpen"):
                # the pick penalties that have lapsed (decide.lua reads them as none) are not
                # written back: outcome.lua prunes them (prune_penalties), the rebuild too
                fields = {t: v for t, v in fields.items() if chh.penalty_value(v, rule_now_ms) is not None}
                summary.dropped_penalties += len(model.h[key]) - len(fields)
                if not fields:
                    continue
            summary.members += len(fields)
            if not dry_run:
                pipe.delete(key)
                pipe.hset(key, mapping=fields)
        elif key in model.l:
            summary.members += len(model.l[key])
            if not dry_run:
                pipe.delete(key)
                pipe.rpush(key, *model.l[key])
        elif key in model.str:
            summary.members += 1
            if not dry_run:
                pipe.set(key, model.str[key])
        else:
            summary.members += len(model.s[key])
            if not dry_run:
                pipe.delete(key)
                pipe.sadd(key, *model.s[key])
        if e is not None and not dry_run:
            pipe.pexpire(key, e - redis_now_ms)
        summary.keys[key_kind(key)] += 1
        n += 1
        if n % chunk == 0 and not dry_run:
            pipe.execute()
    if not dry_run:
        pipe.execute()


def published_versions(conn: psycopg.Connection) -> dict[str, Policy]:
    """Rules versions from audit_rules_versions (their stored YAML), by content hash."""
    out: dict[str, Policy] = {}
    for h, version, files in conn.execute(
            "select distinct on (hash) hash, version, files from audit_rules_versions where hash is not null"):
        try:
            out[h] = Policy.from_sources([(f"rules version {version} ({f['ref']})", f["text"]) for f in files])
        except (RulesError, KeyError, TypeError) as exc:
            log.warning("rules version %s in the audit cannot be loaded here: %s", version, exc)
    return out


def redis_time_ms(redis) -> int:
    s, us = redis.time()
    return int(s) * 1000 + int(us) // 1000


def rebuild(conn: psycopg.Connection, redis, settings: Settings, *, prefix: str | None = None,
            policy: Policy | None = None, now: datetime | None = None, dry_run: bool = False,
            force: bool = False) -> Summary:
    """Rebuild the counters of namespace `prefix` from the audit in `conn`.

    now: the rules clock (leases that ended before it are dropped); default the
    Redis clock. Refuses while the audit stream still holds unshipped records
    (they would be missing from the rebuild) unless force.
    """
    keys = Keys(prefix or settings.key_prefix, settings.hash_secret)
    backlog = int(redis.xlen(keys.audit))
    if backlog and not force:
        raise RebuildError(f"{backlog} audit records are not in PostgreSQL yet ({keys.audit}): let "
                           "`dialguard audit-ship` drain them first (dialguard audit status), or --force")
    default_policy = policy or Policy.load(settings.rules)
    rnow = redis_time_ms(redis)
    since = horizon(conn, default_policy, datetime.fromtimestamp(rnow / 1000, UTC))
    rep = Replayer(settings, keys, default_policy)
    rep.published = published_versions(conn)
    rep.replay(read_records(conn, since))
    rule_now = ms(now) if now else rnow
    write(redis, rep.model, redis_time_ms(redis), rule_now, rep.summary, dry_run=dry_run)
    from dialguard.audit.config_restore import read_config, write_config

    cfg = read_config(conn, rule_now)
    write_config(redis, keys, cfg, rule_now, dry_run=dry_run)
    for what, n in cfg.counts().items():
        if n:
            rep.summary.keys[f"configuration: {what}"] = n
    from dialguard.dnc import restore_lists

    rep.summary.dnc_lists = restore_lists(conn, redis, keys, dry_run=dry_run)
    if rep.summary.dnc_lists:
        # shown by `counters rebuild` with the key counts (entries, not keys)
        rep.summary.keys["DNC list entries (at rest)"] = sum(rep.summary.dnc_lists.values())
    return rep.summary
