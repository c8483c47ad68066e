"""Caller-ID health from reported outcomes (issue #20: see 封卡 coming).

Carriers block calling numbers that draw complaints or are rejected at their
switches; phone apps label them as harassment and almost nobody answers any
more. The signs are in the outcomes: a caller ID's answer rate falling against
the rest of its pool, many very short answered calls, the carrier rejecting its
calls (SIP 403/603, Q.850 21 from the trunk) where a busy callee (17 / SIP 486)
says nothing about the number.

Each reported outcome of a call that presented a caller ID is logged on that
caller ID (newest first, `{c:<K>}:o`, one entry "ms|answered|talk_s|sip|cause")
by outcome.lua, which in the same atomic step computes the figures below for
every pack's `caller_id.health`, evaluates its rules and, when one triggers,
cools the caller ID down (the next decision no longer picks it), records why
and appends the audit record. This module holds the same computation in Python
(the CLI, /metrics and the unit tests use it; tests/integration/test_callerid_health.py
checks that both agree) and the configuration the script reads. outcome.lua keeps the figures as
running state (docs/REDIS.md, `{c:<K>}:h`) and recomputes them from the log
whenever it cannot prove that state exact; tests/integration/test_callerid_health_running.py
checks it against `figures` below.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
import weakref
from dataclasses import asdict, dataclass
from datetime import timedelta

from dialguard.rules import CallerIdHealth, HealthRule, Policy

ANSWERED = frozenset({"conversation", "answered", "amd", "voicemail", "abandoned"})
DEFAULT = CallerIdHealth()  # figures are kept even when no pack has health rules


@dataclass(frozen=True)
class Entry:
    at_ms: int
    answered: bool
    talk_s: int = 0
    sip_code: int | None = None
    hangup_cause: int | None = None

    def encode(self) -> str:
        return (f"{self.at_ms}|{1 if self.answered else 0}|{self.talk_s}|"
                f"{self.sip_code if self.sip_code is not None else ''}|"
                f"{self.hangup_cause if self.hangup_cause is not None else ''}")

    @classmethod
    def decode(cls, raw: str | bytes) -> "Entry":
        if isinstance(raw, bytes):
            raw = raw.decode()
        ms, ans, talk, sip, cause = raw.split("|")
        return cls(int(ms), ans == "1", int(talk or 0), int(sip) if sip else None, int(cause) if cause else None)


def entry_of(result: str, talk_s: int, sip_code: int | None, hangup_cause: int | None, at_ms: int) -> Entry:
    return Entry(at_ms, result in ANSWERED, max(0, int(talk_s or 0)), sip_code, hangup_cause)


def is_rejection(e: Entry, cfg: CallerIdHealth) -> bool:
    """A carrier's rejection: not answered, and the SIP code says so (or, with no
    SIP code from the trunk, the Q.850 cause does)."""
    if e.answered:
        return False
    if e.sip_code is not None:
        return e.sip_code in cfg.rejection_sip_codes
    return e.hangup_cause is not None and e.hangup_cause in cfg.rejection_causes


@dataclass(frozen=True)
class Figures:
    calls: int = 0
    answered: int = 0
    short: int = 0
    rejected: int = 0
    run: int = 0  # consecutive carrier rejections, newest first
    complaints: int = 0  # complaints / opt-outs on numbers it last called, in the window
    optouts: int = 0

    @property
    def answer_rate(self) -> float:
        return self.answered / self.calls if self.calls else 0.0

    @property
    def short_answer_rate(self) -> float:
        """Share of answered calls with talk under short_answer_s."""
        return self.short / self.answered if self.answered else 0.0

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.calls if self.calls else 0.0

    @property
    def complaints_per_1000(self) -> float:
        return 1000 * self.complaints / self.calls if self.calls else 0.0

    @property
    def optouts_per_1000(self) -> float:
        return 1000 * self.optouts / self.calls if self.calls else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(answer_rate=round(self.answer_rate, 4), short_answer_rate=round(self.short_answer_rate, 4),
                 rejection_rate=round(self.rejection_rate, 4),
                 complaints_per_1000=round(self.complaints_per_1000, 2),
                 optouts_per_1000=round(self.optouts_per_1000, 2))
        return d


@dataclass(frozen=True)
class Event:
    """A complaint ("c") or opt-out ("o") on a number, attributed to the caller ID
    of the last allowed call to it (event.lua); `{c:<K>}:e` holds "ms|kind"."""
    at_ms: int
    kind: str

    def encode(self) -> str:
        return f"{self.at_ms}|{self.kind}"

    @classmethod
    def decode(cls, raw: str | bytes) -> "Event":
        if isinstance(raw, bytes):
            raw = raw.decode()
        ms, kind = raw.split("|")
        if kind not in ("c", "o"):
            raise ValueError(kind)
        return cls(int(ms), kind)


ADMIN_COOL = "set by an admin"  # the reason of a cool-down no health rule set
EVENTS_KEPT = 1000  # the most window_calls allows: more than one per call in the window never counts


def figures(entries: list[Entry], now_ms: int, cfg: CallerIdHealth, since_ms: int = 0,
            events: list[Event] = ()) -> Figures:
    """Figures over the newest `window_calls` entries (newest first) that lie in
    the last `window_hours` (now - hours, now] and after `since_ms` (the end of
    the caller ID's last health cool-down: it starts afresh). Complaints and
    opt-outs count over the same span: after that bound and not before the
    oldest call in the window (none when the window holds no call)."""
    lo = max(now_ms - cfg.window_hours * 3_600_000, since_ms)
    calls = answered = short = rejected = run = 0
    oldest = None
    in_run = True
    for e in entries[:cfg.window_calls]:
        if e.at_ms <= lo:
            break
        calls += 1
        oldest = e.at_ms
        rej = is_rejection(e, cfg)
        if e.answered:
            answered += 1
            if e.talk_s < cfg.short_answer_s:
                short += 1
        if rej:
            rejected += 1
            if in_run:
                run += 1
        else:
            in_run = False
    complaints = optouts = 0
    if oldest is not None:
        for ev in events:
            if ev.at_ms > lo and ev.at_ms >= oldest:
                if ev.kind == "c":
                    complaints += 1
                else:
                    optouts += 1
    return Figures(calls, answered, short, rejected, run, complaints, optouts)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def value_of(rule: HealthRule, f: Figures) -> float:
    return {
        "consecutive_rejections": f.run, "rejection_rate": f.rejection_rate,
        "short_answer_rate": f.short_answer_rate, "answer_rate_vs_pool": f.answer_rate,
        "complaints_per_1000": f.complaints_per_1000, "optouts_per_1000": f.optouts_per_1000,
    }[rule.metric]


def triggers(rule: HealthRule, f: Figures, pool_median: float | None = None) -> bool:
    """Whether `rule` cools the caller ID down. answer_rate_vs_pool: strictly
    under threshold x median (a pool of fewer than two judged caller IDs, or a
    median of 0, judges nobody); every other metric: at or over the threshold."""
    if f.calls < rule.min_calls or f.calls == 0:
        return False
    if rule.metric == "answer_rate_vs_pool":
        if pool_median is None or pool_median <= 0:
            return False
        return f.answer_rate < rule.threshold * pool_median
    return value_of(rule, f) >= rule.threshold


def penalty(f: Figures) -> float:
    """How unhealthy a caller ID looks, for the pool pick (0 = healthy): its
    carrier-rejection rate, half its short-answer rate, a tenth per rejection
    in its current run. decide.lua reads it as written by outcome.lua."""
    return round(min(3.0, f.rejection_rate + 0.5 * f.short_answer_rate + 0.1 * f.run), 3)


def penalty_value(raw: str | bytes | None, now_ms: int) -> float | None:
    """A penalty as the penalties hash holds it ("<pen>|<until ms>", keys.cid_penalties),
    as decide.lua reads it: None when absent, malformed or lapsed (until <= now)."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode()
    pen, _, until = raw.partition("|")
    try:
        return float(pen) if int(until) > now_ms else None
    except ValueError:
        return None


# -- configuration as outcome.lua reads it -------------------------------------------

def _cfg_json(pack: str, h: CallerIdHealth) -> dict:
    return {
        "p": pack, "wc": h.window_calls, "wh": h.window_hours * 3_600_000, "ss": h.short_answer_s,
        "sc": [str(c) for c in h.rejection_sip_codes], "qc": [str(c) for c in h.rejection_causes],
        "r": [{"id": r.id, "m": r.metric, "t": r.threshold, "n": r.min_calls,
               "cd": int(r.cool_down.total_seconds() * 1000)} for r in h.rules],
    }


def configs(policy: Policy) -> list[tuple[str, CallerIdHealth]]:
    """(pack, settings) per pack with health settings; the defaults (no rules) when none."""
    return policy.caller_id_health or [("", DEFAULT)]


def config_json(policy: Policy) -> str:
    return json.dumps([_cfg_json(p, h) for p, h in configs(policy)], separators=(",", ":"), sort_keys=True)


_LUA_SETTINGS: "weakref.WeakKeyDictionary[Policy, str]" = weakref.WeakKeyDictionary()
_LUA_NAME = re.compile(r"[a-z_]+")


def _lua(v) -> str:
    """v as a Lua constructor: the value cjson.decode gives for v's JSON (numbers written
    as JSON writes them: the same text, read by the same strtod)."""
    if isinstance(v, str):
        return "'" + "".join(chr(b) if b < 128 and (chr(b).isalnum() or chr(b) in "_-./: ") else "\\%03d" % b
                             for b in v.encode()) + "'"
    if isinstance(v, bool) or v is None:
        raise ValueError(f"no Lua constructor for {v!r}")
    if isinstance(v, (int, float)):
        assert math.isfinite(v), v
        return json.dumps(v)
    if isinstance(v, list):
        return "{" + ", ".join(_lua(x) for x in v) + "}"
    assert all(_LUA_NAME.fullmatch(k) and k not in ("and", "end", "for", "if", "in", "or", "not", "nil")
               for k in v), v
    return "{" + ", ".join(f"{k} = {_lua(x)}" for k, x in sorted(v.items())) + "}"


def lua_settings(policy: Policy) -> str:
    """What outcome.lua's reader_settings() returns: the policy's config_id and its settings as Lua
    constructors, what cjson.decode of config_json gives (stop 19: written into the script
    the outcome reader runs, so that an outcome need not GET and decode the settings record).
    Cached per policy (rules never change once loaded)."""
    out = _LUA_SETTINGS.get(policy)
    if out is None:
        out = _LUA_SETTINGS[policy] = (_lua(config_id(policy)) + ", "
                                       + _lua(json.loads(config_json(policy))))
    return out


def config_id(policy: Policy) -> str:
    """A short id of the policy's health configuration (the call record names it)."""
    return hashlib.sha256(config_json(policy).encode()).hexdigest()[:12]


def primary(policy: Policy) -> CallerIdHealth:
    return configs(policy)[0][1]


def longest_hours(policy: Policy) -> timedelta:
    return timedelta(hours=max(h.window_hours for _, h in configs(policy)))


# -- reading it back (CLI, /metrics) -------------------------------------------------------

async def read_health(engine, caller_ids: list[str], now_ms: int) -> list[dict]:
    """Each caller ID's figures by the engine's rules (their first health
    settings) over the whole window, its pool-pick penalty, and its cool-down
    with the reason. The figures include the outcomes before its last health
    cool-down (`rules_since`), which the rules no longer count: what the
    carrier saw, and why it was cooled down."""
    policy = engine.active_policy
    cfg = primary(policy)
    keys = engine.keys
    tags = [keys.cid_tag(c) for c in caller_ids]
    async with engine.redis.pipeline(transaction=False) as pipe:
        for t in tags:
            pipe.lrange(keys.cid_outcomes(t), 0, cfg.window_calls - 1)
            pipe.hmget(keys.cid_health(t), "since", "pen")
            pipe.lrange(keys.cid_events(t), 0, EVENTS_KEPT - 1)
        pipe.zmscore(keys.cid_cooldown, tags) if tags else pipe.ping()
        pipe.hmget(keys.cid_cool_why, tags) if tags else pipe.ping()
        pipe.hmget(keys.cid_penalties, tags) if tags else pipe.ping()
        res = await pipe.execute()
    cools, whys, pens = res[-3], res[-2], res[-1]
    out = []
    for i, (cid, tag) in enumerate(zip(caller_ids, tags)):
        raw, (since, legacy_pen), raw_ev = res[3 * i], res[3 * i + 1], res[3 * i + 2]
        # the penalty the pick uses (the penalties hash); a store not migrated yet: the health hash's
        pen = penalty_value(pens[i], now_ms) if pens and pens[i] else None
        if pen is None and not (pens and pens[i]) and legacy_pen:
            pen = float(legacy_pen)
        entries, events = [], []
        for r in raw:
            try:
                entries.append(Entry.decode(r))
            except ValueError:
                continue
        for r in raw_ev:
            try:
                events.append(Event.decode(r))
            except ValueError:
                continue
        f = figures(entries, now_ms, cfg, events=events)
        until = cools[i] if cools and cools[i] and cools[i] > now_ms else None
        why = None
        if until and whys and whys[i]:
            try:
                w = json.loads(whys[i])
                if int(w.get("until", 0)) == int(until):
                    why = ", ".join(f"{t.get('rule')} ({t.get('metric')})" for t in w.get("triggered", []))
            except ValueError:
                why = None
        out.append({"caller_id": cid, "tag": tag, "figures": f.as_dict(), "penalty": pen or 0.0,
                    "rules_since": int(float(since)) if since else None,
                    "cooldown_until": int(until) if until else None,
                    "cooldown_reason": why or (ADMIN_COOL if until else None)})
    return out


async def directory(e) -> tuple[dict[str, str], dict[str, list[str]]]:
    """What the store can say about caller IDs by their keyed hash: the E.164 (from the
    sealed pools) and the pools each is in ('global' or a campaign name)."""
    from dialguard.numbers import short_hash

    names = {}
    async for k in e.redis.scan_iter(match=e.keys.g("camp:*"), count=1000):
        n = await e.redis.hget(k, "name")
        if n:
            names[short_hash(n.decode())] = n.decode()
    numbers: dict[str, str] = {}
    pools: dict[str, list[str]] = {}
    pool_keys = [e.keys.pool(None)] + [k.decode() async for k in e.redis.scan_iter(match=e.keys.g("pool:*"), count=1000)]
    for k in pool_keys:
        sh = k.rsplit(":", 1)[1] if k != e.keys.pool(None) else None
        label = "global" if sh is None else names.get(sh, f"campaign#{sh}")
        for tag, sealed in (await e.redis.hgetall(k)).items():
            tag = tag.decode()
            pools.setdefault(tag, []).append(label)
            if tag not in numbers:
                try:
                    numbers[tag] = e.sealer.open(sealed.decode())
                except Exception:  # noqa: BLE001  another data key: show the hash
                    pass
    return numbers, pools


async def report(engine, now_ms: int) -> list[dict]:
    """`read_health` for every caller ID in a pool, sorted by number, each with
    its pools: what `dialguard callerid health` prints and the console shows."""
    numbers, pools = await directory(engine)
    cids = sorted({n for n in numbers.values() if n})
    rows = await read_health(engine, cids, now_ms)
    for r in rows:
        r["pools"] = sorted(pools.get(r["tag"], []))
    return rows
