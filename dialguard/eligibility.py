"""May this number be called now, and if not, when? Read-only (issue 15).

The same plan as a decision (Engine._plan: the rules version and calendars in
effect, the campaign's own packs, the caller-ID pool) evaluated by the same
script, decide.lua, in its read-only mode (ARGV[3] = 'ro'): the live counters,
flags, DNC lists, kill switches and approvals are read, nothing is reserved,
no override is consumed and no audit record is written, as for shadow rules;
no command that writes runs at all (expired caller-ID leases are counted out,
not trimmed), so a Redis user without write rights on those keys may ask.
An override grant waiting for the number is not applied here (it is used up
by the call, not by the question).

Batch questions go to Redis in pipelines of CHUNK scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from redis.exceptions import NoScriptError, RedisError

from dialguard.decision import scripts
from dialguard.location import NOWHERE
from dialguard.decision.decider import PARTY_EXPLAIN
from dialguard.engine import EXPLAIN, CampaignRulesError, Engine
from dialguard.ids import new_id
from dialguard.decision.decider import callee_regions, note_next_unknown, region_pause_of
from dialguard.decision.models import DecisionRequest, sort_reasons
from dialguard.timeutil import to_ms
from dialguard.numbers import parse_number

CHUNK = 500
MAX_BATCH = 10_000
STALE_RETRIES = 2


@dataclass
class Answer:
    number: str           # as asked
    e164: str | None
    decision: str         # allow | deny
    reasons: list[str]
    explanations: dict[str, str]
    next_eligible_at: datetime | None
    caller_id: str | None
    # the region whose kill switch (`pause --region`) denies it (`paused`), if one does:
    # the dialer parks such a lead until that region is resumed (not in as_dict)
    paused_region: str | None = None
    # next_eligible_at null because a calendar year is not known yet (Decision.next_unknown)
    next_unknown: str | None = None

    def as_dict(self, show_number=lambda e164: e164) -> dict:
        return {"number": show_number(self.e164) if self.e164 else None, "decision": self.decision,
                "reasons": self.reasons, "explanations": self.explanations,
                "next_eligible_at": self.next_eligible_at.isoformat() if self.next_eligible_at else None,
                "caller_id": show_number(self.caller_id) if self.caller_id else None}


def _args(plan) -> list:
    a = list(plan.args())[:2]
    while len(a) < 2:
        a.append("")
    return a + ["ro"]


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


class Eligibility:
    def __init__(self, engine: Engine):
        if engine.audit:
            raise ValueError("eligibility needs an engine built with audit=False (no audit payload)")
        self.engine = engine

    def _answer(self, req, ctx, info, plan, why, res, now, place=NOWHERE) -> Answer:
        e = self.engine
        allowed, lua_reasons, details, chosen = res[0], res[1], res[2], _s(res[3])
        reasons = sort_reasons([_s(r) for r in lua_reasons]) if lua_reasons else []
        cid = next((c.e164 for c in plan.candidates if c.tag == chosen), None) if chosen else None
        nxt, unknown, expl = None, None, {}
        if int(allowed) != 1:
            nxt, unknown = e._next_eligible(ctx.policy, reasons, plan, details, info, now, ctx.cals)
            expl = {r: why.get(r) or EXPLAIN[r] for r in reasons}
            for item in details:
                if _s(item[0]).startswith("party:") and _s(item[0])[6:] in expl:  # the person's own flag
                    expl[_s(item[0])[6:]] = PARTY_EXPLAIN[_s(item[0])[6:]]
                    continue
                meta = plan.checks.get(_s(item[0]))
                if meta and meta.label and meta.reason in expl:
                    expl[meta.reason] = meta.label
            if unknown:
                note_next_unknown(expl, unknown)
        region = None
        if "paused" in reasons and ctx.region_pauses and info.valid:
            hit = region_pause_of(ctx.region_pauses, callee_regions(req, info, place), to_ms(now))
            region = hit[0] if hit else None
        return Answer(req.number, info.e164, "allow" if int(allowed) == 1 else "deny", reasons, expl, nxt, cid,
                      region, unknown)

    def _unavailable(self, req, why: str) -> Answer:
        return Answer(req.number, None, "deny", ["guard_unavailable"],
                      {"guard_unavailable": f"{EXPLAIN['guard_unavailable']} ({why})"}, None, None)

    async def check(self, req: DecisionRequest, now: datetime | None = None) -> Answer:
        return (await self.check_many([req], now))[0]

    async def check_many(self, reqs: list[DecisionRequest], now: datetime | None = None) -> list[Answer]:
        """One answer per request, in order; the store unreachable answers guard_unavailable (fail closed)."""
        if len(reqs) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH:,} numbers per question, got {len(reqs):,}")
        e = self.engine
        try:
            now = (now or await e.now()).astimezone(timezone.utc)
        except (RedisError, OSError) as exc:
            return [self._unavailable(r, f"store unavailable: {type(exc).__name__}") for r in reqs]
        out: list[Answer | None] = [None] * len(reqs)
        todo = list(range(len(reqs)))
        for _attempt in range(STALE_RETRIES + 1):
            stale: list[int] = []
            for start in range(0, len(todo), CHUNK):
                idx = todo[start:start + CHUNK]
                try:
                    stale += await self._chunk(reqs, idx, out, now)
                except CampaignRulesError as exc:
                    for i in idx:
                        out[i] = self._unavailable(reqs[i], f"rules unusable: {exc}")
                except (RedisError, OSError) as exc:
                    for i in idx:
                        out[i] = self._unavailable(reqs[i], f"store unavailable: {type(exc).__name__}")
            if not stale:
                break
            e._ctx_cache.clear()  # rules or calendars changed meanwhile: reload, ask again
            todo = stale
        for i in range(len(reqs)):
            if out[i] is None:
                out[i] = self._unavailable(reqs[i], "rules kept changing while checking")
        return out  # type: ignore[return-value]

    async def _chunk(self, reqs, idx, out, now) -> list[int]:
        e = self.engine
        built = []
        for i in idx:
            req = reqs[i]
            ctx = await e._context_shared(req.campaign)
            info = parse_number(req.number, e.default_region)
            place = NOWHERE
            if info.valid and (req.region is not None or req.postal_code is not None or ctx.policy.state_packs
                               or ctx.region_pauses):  # as a decision locates the callee
                ctx, info, place = e._locate(req, ctx, info)
            plan, why = e._plan(req, ctx, info, new_id(), now, place)
            built.append((i, req, ctx, info, plan, why, place))
        for attempt in range(2):
            try:
                async with e.redis.pipeline(transaction=False) as pipe:
                    for _i, _req, _ctx, _info, plan, _why, _place in built:
                        pipe.evalsha(scripts.DECIDE.sha, len(plan.keys), *plan.keys, *_args(plan))
                    results = await pipe.execute()
                break
            except NoScriptError:
                if attempt:
                    raise
                await scripts.DECIDE.load(e.redis)
        stale = []
        for (i, req, ctx, info, plan, why, place), res in zip(built, results):
            if int(res[4]) == 2:
                stale.append(i)
            else:
                out[i] = self._answer(req, ctx, info, plan, why, res, now, place)
        return stale


async def create(settings=None, policy=None) -> Eligibility:
    """An Eligibility on its own engine (audit off, following the rules versions in effect)."""
    return Eligibility(await Engine.create(settings, policy, audit=False))
