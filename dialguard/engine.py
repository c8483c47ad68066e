"""The decision engine: one atomic check-and-reserve per outbound attempt.

Order of work for `decide` (SPEC §2):
1. rules that need no counters, in-process: number validity, hours, holidays;
2. one decide.lua call: kill switches, campaign approval, DNC/opt-out/complaint/
   consent, every counter rule, caller-ID choice; reserve only if all pass,
   and append the audit record in the same atomic step;
3. next_eligible_at from the failing rules.
Redis trouble or a slow answer is a deny with `guard_unavailable` (fail closed).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from datetime import datetime, timezone

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dialguard import metrics, scripts
from dialguard.config import Settings
from dialguard.crypto import Sealer
from dialguard.keys import Keys
from dialguard.models import (
    PERMANENT, Decision, DecisionRequest, Outcome, sort_reasons, utcnow,
)
from dialguard.numbers import NumberInfo, keyed_hash, parse_number, short_hash
from dialguard.redisclient import RedisClient, RedisReplyError
from dialguard.plan import CallerIdCandidate, build_plan, eligible_from_details, from_ms, ms
from dialguard.rules import MOVABLE_OUTCOMES, Policy, RulesError
from dialguard.timerules import next_allowed, time_reasons

log = logging.getLogger("dialguard.engine")
UTC = timezone.utc

EXPLAIN = {
    "invalid_number": "the number is not a valid dialable number",
    "paused": "outbound calling is paused (kill switch)",
    "campaign_not_approved": "the campaign is unknown, not approved, or outside its approved dates",
    "caller_id_not_approved": "the caller ID is not in the approved pool or is cooling down",
    "dnc": "the number is on a do-not-call list",
    "opted_out": "the person asked not to be called",
    "complained": "a complaint was recorded for this number",
    "no_consent": "the rules require recorded consent and there is none",
    "outside_hours": "outside the allowed hours in the callee's local time",
    "holiday": "not a calling day in the callee's calendar",
    "unknown_timezone": "the callee's local time cannot be determined",
    "attempt_cap": "too many attempts on this number in a window",
    "min_interval": "too soon after the previous attempt",
    "post_conversation_quiet": "within the quiet period after a conversation",
    "post_abandon_quiet": "within the quiet period after an abandoned call",
    "agent_cap": "the agent reached their daily cap",
    "caller_id_rate": "the caller ID reached its rate limit",
    "caller_id_concurrency": "the caller ID has too many live calls",
    "guard_unavailable": "the guard could not decide (store unreachable or too slow); denied to be safe",
}

CONVERSATION = "conversation"
POOL_WINDOW = 8  # caller IDs offered to one decision when the guard picks from a pool
CONTEXT_TTL = 2.0  # seconds a campaign's rules and caller-ID pool are cached


class CampaignRulesError(Exception):
    pass
ABANDON = {"abandoned": "ab", "amd": "am"}


_encode = json.JSONEncoder(separators=(",", ":")).encode


def new_id() -> str:
    """Time-ordered unique id: 12 hex of ms + 16 hex random."""
    return f"{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return t.astimezone(UTC)


class Engine:
    def __init__(self, redis, settings: Settings, policy: Policy, *, prefix: str | None = None,
                 skip_caller_id_without_pool: bool = False, audit: bool = True):
        self.redis = redis
        self.settings = settings
        self.policy = policy
        self.keys = Keys(prefix or settings.key_prefix, settings.hash_secret)
        self.skip_caller_id_without_pool = skip_caller_id_without_pool
        self.audit = audit
        self.sealer = Sealer()
        self.timeout = settings.redis_timeout_ms / 1000
        self._rr = itertools.count()
        self.default_region = policy.default_region or settings.default_region
        self._cid_tags: dict[str, str] = {}
        self._ctx_cache: dict[str, tuple[float, Policy, tuple[str, ...]]] = {}
        self._policies: dict[str, Policy] = {}
        # The decision's EVALSHA goes through this pipelined client when set
        # (Engine.create sets it); everything else uses `redis` (redis-py).
        self.fast: RedisClient | None = None
        # Where decisions the audit stream never saw go (dialguard/audit/spool.py);
        # an object with append(fields: dict), set by Engine.create when configured.
        self.spool = None
        self._ctx_inflight: dict[str, asyncio.Future] = {}

    # -- lifecycle ------------------------------------------------------------
    @classmethod
    async def create(cls, settings: Settings | None = None, policy: Policy | None = None,
                     redis=None, **kw) -> "Engine":
        settings = settings or Settings()
        policy = policy or Policy.load(settings.rules)
        if redis is None:
            t = settings.redis_timeout_ms / 1000
            # A bounded pool: a burst of calls queues for a connection (within the
            # decision deadline) instead of opening hundreds of sockets at once.
            pool = aioredis.BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=settings.redis_pool_size, timeout=max(t, 0.05),
                socket_timeout=max(t, 0.05), socket_connect_timeout=max(t, 0.05))
            redis = aioredis.Redis(connection_pool=pool)
            fast = RedisClient(settings.redis_url, timeout=t, connect_timeout=max(t, 0.05))
        else:
            fast = None
        engine = cls(redis, settings, policy, **kw)
        engine.fast = fast
        from dialguard.audit.spool import Spool  # the engine needs no audit import otherwise

        engine.spool = Spool.from_settings(settings)
        try:
            for s in scripts.ALL:
                await s.load(redis)
        except (RedisError, OSError) as exc:  # decide() retries on NOSCRIPT; stay up, fail closed
            log.warning("could not preload scripts: %s", exc)
        return engine

    async def close(self) -> None:
        if self.fast is not None:
            await self.fast.close()
        await self.redis.aclose()

    async def now(self) -> datetime:
        if self.settings.test_clock:
            v = await self.redis.get(self.keys.clock)
            if v:
                return from_ms(float(v))
        return utcnow()

    # -- the decision -----------------------------------------------------------
    async def _context(self, campaign: str) -> tuple[Policy, tuple[str, ...]]:
        """The campaign's rules and caller-ID pool, cached for CONTEXT_TTL seconds.

        A campaign may name its own packs (`rules` in its record); caller IDs added
        with `dialguard callerid add` (globally or for the campaign) join the pool
        of the rules. Kill switches and approval are read inside the script, so
        they take effect on the very next decision.
        """
        hit = self._ctx_cache.get(campaign)
        mono = time.monotonic()
        if hit and hit[0] > mono:
            return hit[1], hit[2]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.campaign(campaign), "rules")
            pipe.hvals(self.keys.pool(None))
            pipe.hvals(self.keys.pool(campaign))
            rules, gpool, cpool = await pipe.execute()
        policy = self.policy
        if rules:
            rules = rules.decode()
            policy = self._policies.get(rules)
            if policy is None:
                try:
                    policy = Policy.load(rules)
                except RulesError as exc:  # never guess: this campaign's calls are denied
                    log.error("campaign %s: rules %r unusable: %s", campaign, rules, exc)
                    raise CampaignRulesError(str(exc)) from None
                self._policies[rules] = policy
        pool = list(policy.caller_id_pool)
        for token in list(gpool) + list(cpool):
            try:
                e164 = self.sealer.open(token.decode())
            except Exception:  # noqa: BLE001 - a record sealed with another key
                log.error("caller-ID pool entry cannot be opened with this data key; ignored")
                continue
            if e164 not in pool:
                pool.append(e164)
        self._ctx_cache[campaign] = (mono + CONTEXT_TTL, policy, tuple(pool))
        return policy, tuple(pool)

    async def _context_shared(self, campaign: str) -> tuple[Policy, tuple[str, ...]]:
        """_context, fetched once for every decision that missed the cache at the
        same time (a burst would otherwise send one fetch per decision)."""
        fut = self._ctx_inflight.get(campaign)
        if fut is None:
            fut = self._ctx_inflight[campaign] = asyncio.ensure_future(self._context(campaign))
            fut.add_done_callback(lambda f, c=campaign: self._ctx_fetched(c, f))
        return await asyncio.shield(fut)

    def _ctx_fetched(self, campaign: str, fut: asyncio.Future) -> None:
        if self._ctx_inflight.get(campaign) is fut:
            del self._ctx_inflight[campaign]
        if not fut.cancelled():
            fut.exception()  # retrieved here: a waiter past its deadline may never look

    def _candidates(self, req: DecisionRequest, policy: Policy, pool: tuple[str, ...],
                    reasons: list[str], why: dict) -> tuple[list, bool]:
        if req.caller_id:
            info = parse_number(req.caller_id, self.default_region)
            if not info.valid:
                reasons.append("caller_id_not_approved")
                why["caller_id_not_approved"] = f"caller ID {req.caller_id!r}: {info.problem}"
                return [], False
            return [CallerIdCandidate(info.e164, self.keys.cid_tag(info.e164), info.e164 in pool)], True
        if pool:
            # Round robin spreads the load; a window of POOL_WINDOW candidates keeps
            # the cost of a decision flat however large the pool (the next decision
            # starts one further on, so every caller ID gets its turn).
            start = next(self._rr) % len(pool)
            order = [pool[(start + i) % len(pool)] for i in range(min(len(pool), POOL_WINDOW))]
            return [CallerIdCandidate(c, self._cid_tag(c), True) for c in order], True
        if self.skip_caller_id_without_pool or not policy.caller_id_required:
            return [], False
        reasons.append("caller_id_not_approved")
        why["caller_id_not_approved"] = "no caller ID given and the rules define no pool to pick from"
        return [], False

    async def decide(self, req: DecisionRequest, now: datetime | None = None) -> Decision:
        t0 = time.perf_counter()
        # One deadline for the whole decision, whatever the number of round trips.
        deadline = asyncio.get_running_loop().time() + self.timeout
        if now is None:
            try:
                async with asyncio.timeout_at(deadline):
                    now = await self.now()
            except (RedisError, OSError, asyncio.TimeoutError):
                return self._unavailable(req, new_id(), t0, "test clock unreadable")
        now = now.astimezone(UTC)
        did = new_id()
        try:
            hit = self._ctx_cache.get(req.campaign)
            if hit and hit[0] > time.monotonic():
                policy, pool = hit[1], hit[2]
            else:
                async with asyncio.timeout_at(deadline):
                    policy, pool = await self._context_shared(req.campaign)
        except CampaignRulesError as exc:
            return self._unavailable(req, did, t0, f"campaign rules unusable: {exc}", now)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            return self._unavailable(req, did, t0, f"store unavailable: {type(exc).__name__}", now)
        info: NumberInfo = parse_number(req.number, self.default_region)
        reasons: list[str] = []
        why: dict[str, str] = {}
        if not info.valid:
            reasons.append("invalid_number")
            why["invalid_number"] = f"{req.number!r}: {info.problem}"
            number_tag = keyed_hash(self.settings.hash_secret, "raw:" + req.number)
        else:
            number_tag = self.keys.number_tag(info.e164)
            treasons, twhy = time_reasons(policy, info.timezones, now)
            reasons.extend(treasons)
            why.update(twhy)
        candidates, check_cid = self._candidates(req, policy, pool, reasons, why)

        pre = sort_reasons(reasons) if reasons else []
        payload = None
        if self.audit:
            payload = _encode({
                "did": did, "at": ms(now), "ts": int(time.time() * 1000), "n": number_tag,
                "ne": self.sealer.seal(info.e164) if info.e164 else None,
                "campaign": req.campaign, "agent": req.agent, "subject": req.subject,
                "call_id": req.call_id, "pre": pre,
                # the caller ID asked for, sealed: no plaintext number in Redis (SPEC §7)
                "cid_req": self.sealer.seal(req.caller_id) if req.caller_id else None,
                "rules": policy.name, "rv": policy.version_hash, "node": self.settings.node,
            })
        plan = build_plan(
            policy=policy, keys=self.keys, info=info, number_tag=number_tag,
            campaign=req.campaign, agent=req.agent, subject=req.subject, call_id=req.call_id,
            decision_id=did, now=now, pre_reasons=list(pre), candidates=candidates,
            check_caller_id=check_cid, site_timezone=self.settings.site_timezone,
            audit_payload=payload, audit_max=self.settings.audit_backlog_max if self.audit else None,
        )
        try:
            if self.fast is not None:
                res = await self.fast.evalsha(scripts.DECIDE, plan.keys, plan.args(), deadline=deadline)
            else:
                async with asyncio.timeout_at(deadline):
                    res = await scripts.DECIDE(self.redis, plan.keys, plan.args())
        except (RedisError, RedisReplyError, OSError, asyncio.TimeoutError) as exc:
            log.warning("decide %s: store unavailable: %r", did, exc)
            return self._unavailable(req, did, t0, f"store unavailable: {type(exc).__name__}", now)

        allowed, lua_reasons, details, chosen, replayed, rdid = res
        if lua_reasons == [b"guard_unavailable"] or lua_reasons == ["guard_unavailable"]:
            # the script refused before writing anything (audit backlog ceiling)
            self._spool_unrecorded(req, did, now, "audit backlog ceiling")
        chosen = chosen.decode() if isinstance(chosen, bytes) else chosen
        rdid = rdid.decode() if isinstance(rdid, bytes) else rdid
        all_reasons = sort_reasons([r.decode() if isinstance(r, bytes) else r for r in lua_reasons]) \
            if lua_reasons else []
        caller_id = next((c.e164 for c in candidates if c.tag == chosen), None) if chosen else None
        if not caller_id and req.caller_id and not all_reasons:
            caller_id = candidates[0].e164 if candidates else None
        # Every field given and of its declared type: no validation pass needed.
        decision = Decision.model_construct(
            decision_id=rdid, decision="allow" if int(allowed) == 1 else "deny",
            reasons=all_reasons, next_eligible_at=None, caller_id=caller_id,
            max_duration_s=policy.max_duration_s, number=info.e164, override=False,
            explanations={}, latency_ms=0.0,
        )
        if decision.decision == "deny":
            decision.next_eligible_at = self._next_eligible(policy, all_reasons, plan, details, info, now)
            decision.explanations = {r: why.get(r) or EXPLAIN[r] for r in all_reasons}
            for item in details:
                cid = item[0].decode() if isinstance(item[0], bytes) else item[0]
                meta = plan.checks.get(cid)
                if meta and meta.label and meta.reason in decision.explanations:
                    decision.explanations[meta.reason] = meta.label
        decision.latency_ms = (time.perf_counter() - t0) * 1000
        metrics.observe(decision)
        return decision

    def _next_eligible(self, policy, reasons, plan, details, info, now) -> datetime | None:
        if any(r in PERMANENT for r in reasons) or "guard_unavailable" in reasons:
            return None
        t, never = eligible_from_details(plan, details)
        if never:
            return None
        start = max(now, t) if t else now
        if not info.valid:
            return None
        return next_allowed(policy, info.timezones, start)

    def _unavailable(self, req, did, t0, why, now: datetime | None = None) -> Decision:
        d = Decision(decision_id=did, decision="deny", reasons=["guard_unavailable"],
                     explanations={"guard_unavailable": f"{EXPLAIN['guard_unavailable']} ({why})"},
                     latency_ms=(time.perf_counter() - t0) * 1000)
        self._spool_unrecorded(req, did, now, why)
        metrics.observe(d)
        return d

    def _spool_unrecorded(self, req, did, now: datetime | None, why: str) -> None:
        """A decision the audit stream never saw (store down, backlog ceiling):
        written to the local spool, which audit-ship moves into PostgreSQL."""
        if self.spool is None or not self.audit:
            return
        info = parse_number(req.number, self.default_region)
        tag = self.keys.number_tag(info.e164) if info.valid else keyed_hash(self.settings.hash_secret,
                                                                             "raw:" + req.number)
        wall = int(time.time() * 1000)
        payload = _encode({
            "did": did, "at": ms(now) if now else wall, "ts": wall, "n": tag,
            "ne": self.sealer.seal(info.e164) if info.e164 else None,
            "campaign": req.campaign, "agent": req.agent, "subject": req.subject, "call_id": req.call_id,
            "pre": [], "cid_req": self.sealer.seal(req.caller_id) if req.caller_id else None,
            "rules": self.policy.name, "rv": self.policy.version_hash, "node": self.settings.node,
            "unrecorded": why,
        })
        try:
            self.spool.append({"t": "decision", "id": did, "allow": "0", "r": "guard_unavailable",
                               "ch": "", "cs": "", "j": payload})
        except Exception:  # noqa: BLE001 - the deny stands; the log says what was lost
            log.exception("decision %s: could not be spooled (deny stands, record lost)", did)

    # -- outcomes and events ------------------------------------------------------
    async def report_outcome(self, call_id: str, outcome: Outcome, now: datetime | None = None,
                             subject: str | None = None) -> bool:
        """Apply a call's outcome. True if it matched a recorded allowed call.

        `subject`: for a conversation that covered another subject (debt) than the
        call's own, report once per subject; each starts that subject's quiet period.
        """
        now = (now or await self.now()).astimezone(UTC)
        payload = json.dumps({"call_id": call_id, "at": ms(now), "res": outcome.result,
                              "talk_s": outcome.talk_s, "cause": outcome.hangup_cause, "subject": subject,
                              "node": self.settings.node}, separators=(",", ":"))
        qttl = str(int(self.policy.retention().total_seconds() * 1000))
        res = await scripts.OUTCOME(self.redis, [self.keys.call(call_id), self.keys.audit], [
            outcome.result, str(ms(now)), "1" if outcome.result in MOVABLE_OUTCOMES else "0",
            "1" if outcome.result == CONVERSATION else "0", ABANDON.get(outcome.result, ""),
            qttl, payload, new_id(),
            ("cv:s:" + short_hash(subject)) if subject and outcome.result == CONVERSATION else "",
        ])
        return int(res[0]) in (1, 3)

    async def _event(self, kind: str, number: str, op: str, field: str, value: str,
                     now: datetime | None, campaign: str | None = None) -> bool:
        e164 = parse_number(number, self.default_region)
        if not e164.valid:
            from dialguard.numbers import NumberError
            raise NumberError(f"{number!r}: {e164.problem}")
        now = (now or await self.now()).astimezone(UTC)
        tag = self.keys.number_tag(e164.e164)
        payload = json.dumps({"kind": kind, "n": tag, "ne": self.sealer.seal(e164.e164), "at": ms(now),
                              "campaign": campaign, "node": self.settings.node}, separators=(",", ":"))
        res = await scripts.EVENT(self.redis, [self.keys.flags(tag), self.keys.campaign_dnc(tag), self.keys.audit],
                                  [op, field, value, payload, new_id(), kind])
        return int(res) == 1

    async def opt_out(self, number: str, now: datetime | None = None) -> bool:
        return await self._event("opt_out", number, "set", "optout", str(ms(now or utcnow())), now)

    async def complaint(self, number: str, now: datetime | None = None) -> bool:
        return await self._event("complaint", number, "set", "complaint", str(ms(now or utcnow())), now)

    async def consent(self, number: str, now: datetime | None = None) -> bool:
        return await self._event("consent", number, "set", "consent", str(ms(now or utcnow())), now)

    async def consent_revoke(self, number: str, now: datetime | None = None) -> bool:
        return await self._event("consent_revoke", number, "clear", "consent", "", now)

    async def dnc_add(self, number: str, campaign: str | None = None, now: datetime | None = None) -> bool:
        from dialguard.numbers import short_hash
        if campaign:
            return await self._event("dnc_add", number, "camp_add", short_hash(campaign), "", now, campaign)
        return await self._event("dnc_add", number, "set", "dnc", "1", now)

    async def dnc_remove(self, number: str, campaign: str | None = None, now: datetime | None = None) -> bool:
        """Remove a number from a list: its own flag and the bulk-imported list alike."""
        from dialguard.dnc import DncStore, list_name

        if campaign:
            changed = await self._event("dnc_remove", number, "camp_del", short_hash(campaign), "", now, campaign)
        else:
            changed = await self._event("dnc_remove", number, "clear", "dnc", "", now)
        tag = self.keys.number_tag(parse_number(number, self.default_region).e164)
        removed = await DncStore(self.redis, self.keys).remove(list_name(campaign), [tag])
        return changed or removed > 0

    # -- administration ------------------------------------------------------------
    async def set_campaign(self, campaign: str, approved: bool = True,
                           start: datetime | None = None, end: datetime | None = None,
                           rules: str | None = None) -> None:
        """Approve (or not) a campaign, its dates and optionally its own rule packs."""
        if rules:
            Policy.load(rules)  # refuse unusable rules before they reach the store
        key = self.keys.campaign(campaign)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={
                "name": campaign, "approved": "1" if approved else "0",
                "start": str(ms(start)) if start else "", "end": str(ms(end)) if end else "",
                "rules": rules or "",
            })
            await pipe.execute()
        self._ctx_cache.pop(campaign, None)

    async def approve_caller_id(self, e164: str, pool: bool = False, campaign: str | None = None) -> None:
        """Approve a caller ID; with pool=True the guard may also pick it (global
        pool, or the campaign's). The pool holds the number sealed, never plain."""
        tag = self.keys.cid_tag(e164)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(self.keys.approved_cids, tag)
            if pool or campaign:
                pipe.hset(self.keys.pool(campaign), tag, self.sealer.seal(e164))
            await pipe.execute()
        self._ctx_cache.clear()

    async def remove_caller_id(self, e164: str, campaign: str | None = None) -> None:
        tag = self.keys.cid_tag(e164)
        async with self.redis.pipeline(transaction=True) as pipe:
            if campaign:
                pipe.hdel(self.keys.pool(campaign), tag)
            else:
                pipe.srem(self.keys.approved_cids, tag)
                pipe.hdel(self.keys.pool(None), tag)
            await pipe.execute()
        self._ctx_cache.clear()

    async def cooldown_caller_id(self, e164: str, until: datetime) -> None:
        await self.redis.zadd(self.keys.cid_cooldown, {self.keys.cid_tag(e164): ms(until)})

    async def pause(self, scope: str = "all", name: str | None = None) -> None:
        await self.redis.hset(self.keys.pause, self._pause_field(scope, name), str(ms(utcnow())))

    async def resume(self, scope: str = "all", name: str | None = None) -> None:
        await self.redis.hdel(self.keys.pause, self._pause_field(scope, name))

    def _pause_field(self, scope: str, name: str | None) -> str:
        if scope == "all":
            return "all"
        if scope == "campaign" and name:
            return "camp:" + name
        if scope == "caller_id" and name:
            return "cid:" + self.keys.cid_tag(parse_number(name, self.default_region).e164 or name)
        raise ValueError("pause scope is all, campaign NAME or caller_id NUMBER")

    async def set_test_clock(self, at: datetime | None) -> None:
        if at is None:
            await self.redis.delete(self.keys.clock)
        else:
            await self.redis.set(self.keys.clock, str(ms(at)))

    async def live_calls(self, e164: str) -> int:
        """Calls holding a lease on this caller ID now (by the rules clock)."""
        tag = self.keys.cid_tag(e164)
        return await self.redis.zcount(self.keys.cid_live(tag), ms(await self.now()), "+inf")

    def _cid_tag(self, e164: str) -> str:
        tag = self._cid_tags.get(e164)
        if tag is None:
            tag = self._cid_tags[e164] = self.keys.cid_tag(e164)
        return tag
