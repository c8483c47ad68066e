"""The hot-path decider: one atomic check-and-reserve per outbound attempt.

Order of work for `decide` (SPEC §2):
1. rules that need no counters, in-process: number validity, hours, holidays;
2. one decide.lua call: kill switches, campaign approval, DNC/opt-out/complaint/
   consent, every counter rule, caller-ID choice; reserve only if all pass,
   and append the audit record in the same atomic step;
3. next_eligible_at from the failing rules.
Redis trouble or a slow answer is a deny with `guard_unavailable` (fail closed).
`create` loads the hot path: the Lua scripts, the pipelined client, the spool.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, replace
from datetime import datetime

from redis.exceptions import NoPermissionError, RedisError

from dialguard import callerid_health, metrics, redisconn
from dialguard.calendars import NO_CALENDARS, Calendars
from dialguard.config import Settings
from dialguard.decision import record, scripts
from dialguard.decision.models import PERMANENT, Decision, DecisionRequest, decision_of, sort_reasons, utcnow
from dialguard.decision.plan import (
    CallerIdCandidate, FilledPlan, PlanFieldError, build_plan, compile_plan, eligible_from_details,
)
from dialguard.decision.rules_choice import campaign_rules
from dialguard.ids import new_id
from dialguard.location import NOWHERE, Place, number_states, resolve
from dialguard.numbers import NumberInfo, keyed_hash, keyed_hasher, parse_number, short_hash, warm_plans
from dialguard.redisclient import RedisClient, RedisReplyError
from dialguard.rules import Policy, RulesError
from dialguard.store import CampaignRulesError, Store, _region_pauses, from_ms, log, ms
from dialguard.timerules import next_allowed, next_window, time_check
from dialguard.timeutil import UTC

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

# The party's own flag (decide.lua names it in details as 'party:<reason>').
PARTY_EXPLAIN = {
    "opted_out": "the person (party) asked not to be called, at any of their numbers",
    "complained": "a complaint was recorded for the person (party), at any of their numbers",
}

POOL_WINDOW = 8  # caller IDs offered to one decision when the guard picks from a pool
CONTEXT_TTL = 2.0  # seconds a campaign's rules and caller-ID pool are cached


@dataclass(frozen=True)
class _Context:
    """What a decision needs besides the request, cached CONTEXT_TTL seconds."""

    expires: float
    policy: Policy
    pool: tuple[str, ...]
    rvs: str  # "<active>|<shadow>" rules versions evaluated with ("|": the node's own rules)
    rver: str
    shadow: Policy | None
    sver: str
    cver: str = ""  # the calendar version evaluated with ("": none imported)
    cals: Calendars = NO_CALENDARS
    # kill switches by jurisdiction (`pause --region`): (region, from ms, until ms or None, why)
    region_pauses: tuple = ()


STALE_RETRIES = 2  # a rules or calendar switch during a decision: reload and decide again
# A campaign's context not in the cache at all (this node's first decision for it,
# or every context dropped after a rules or calendar switch) parses rules and
# calendars and takes several round trips: tens to hundreds of ms of local CPU on
# a loaded machine, which is not the store being slow. It gets a budget of its own,
# before the decision's deadline starts: COLD_CONTEXT_ROUND_TRIPS times the store
# deadline, at least COLD_CONTEXT_MIN_S. A frozen store still ends in a deny, later.
COLD_CONTEXT_ROUND_TRIPS = 8
COLD_CONTEXT_MIN_S = 2.0


_encode = json.JSONEncoder(separators=(",", ":")).encode


# reasons a wait can lift: the ones an unknown next time is told on
WAITABLE = ("outside_hours", "holiday", "attempt_cap", "min_interval", "post_conversation_quiet",
            "post_abandon_quiet", "agent_cap", "caller_id_rate", "caller_id_concurrency")


def note_next_unknown(explanations: dict[str, str], why: str) -> None:
    """Say in the explanations that the earliest time is unknown (next_eligible_at null
    is then "not known yet", not "never"), unless one says so already."""
    if any(why in v for v in explanations.values()):
        return
    for r in WAITABLE:
        if r in explanations:
            explanations[r] += f"; the earliest time is unknown: {why}"
            return


def _allowed(res) -> bool:
    """decide.lua's reply is an ALLOW (its first element)."""
    return isinstance(res, list) and bool(res) and res[0] == 1


def party_hash(secret: bytes, party: str) -> str:
    """The keyed hash a party is known by at rest (SPEC §7, as numbers; Keys.party_tag)."""
    return keyed_hash(secret, "party:" + party)


def region_pause_of(pauses: tuple, regions: set[str], now_ms: int) -> tuple[str, str] | None:
    """(region, why) of the first region kill switch in effect at now_ms that covers
    one of `regions`, or None. `regions`: every jurisdiction the callee may be in
    (ISO 3166-2 states, the stated region and the countries, ISO 3166-1)."""
    for region, start, until, why in pauses:
        if region in regions and start <= now_ms and (until is None or now_ms < until):
            end = f" until {from_ms(until).isoformat()}" if until else ""
            return region, f"calls into {region} are paused{end}" + (f": {why}" if why else "")
    return None


def region_pause_hit(pauses: tuple, regions: set[str], now_ms: int) -> str | None:
    """Why a call is paused by a region kill switch in effect at now_ms, or None."""
    hit = region_pause_of(pauses, regions, now_ms)
    return hit[1] if hit else None


def active_pauses(pauses: tuple, now_ms: int) -> set[str]:
    """The regions whose kill switch is in effect at now_ms."""
    return {r for r, start, until, _why in pauses if start <= now_ms and (until is None or now_ms < until)}


def callee_regions(req: DecisionRequest, info: NumberInfo, place: Place) -> set[str]:
    """Every jurisdiction a region kill switch may name for this callee: the US states
    of the number and of the stated location, the stated region, the countries."""
    regions = {f"US-{st}" for st in number_states(info.e164) | place.states}
    regions.update(r for r in (req.region, place.country, info.region) if r)
    return regions


def request_fingerprint(secret: bytes, req: DecisionRequest, info: NumberInfo) -> str:
    """What makes two requests under one call id "the same request" (SPEC §2):
    the number (normalized when valid), campaign, agent, caller ID and subject
    as requested, and the location and party fields when the request has them.
    Keyed: the call record holds this hash, never the number."""
    return keyed_hash(secret, "req:" + _fingerprint_text(req, info))


def _fingerprint_text(req: DecisionRequest, info: NumberInfo) -> str:
    """What request_fingerprint hashes (after its "req:")."""
    parts = [info.e164 or "raw:" + req.number, req.campaign, req.agent, req.caller_id, req.subject]
    for extra in ("region", "postal_code", "party"):
        v = getattr(req, extra, None)
        if v is not None:
            parts.append([extra, v])
    return _encode(parts)


def _shape(candidates) -> tuple[list[str], tuple]:
    """The candidates' tags and the shape a compiled plan is keyed by: per
    candidate, the index of the first with its tag, and its static approval."""
    tags = [c.tag for c in candidates]
    return tags, tuple((tags.index(t), c.statically_approved) for t, c in zip(tags, candidates))


class Decider(Store):
    def __init__(self, redis, settings: Settings, policy: Policy, *, prefix: str | None = None,
                 skip_caller_id_without_pool: bool = False, audit: bool = True, versioned: bool = True):
        super().__init__(redis, settings, policy, prefix=prefix, audit=audit, versioned=versioned)
        self.skip_caller_id_without_pool = skip_caller_id_without_pool
        self.timeout = settings.redis_timeout_ms / 1000
        self._req_secret, self._req_hash = None, None  # _fingerprint's prepared HMAC and its secret
        self._rr = itertools.count()
        self._cid_tags: dict[str, str] = {}
        self._ctx_cache: dict[str, _Context] = {}
        self._policies: dict[str, Policy] = {}
        self._retention_ms = 0  # the namespace's retention as far as known here (_retain)
        self._retain(policy)
        # The decision's EVALSHA goes through this pipelined client when set
        # (create sets it); everything else uses `redis` (redis-py).
        self.fast: RedisClient | None = None
        # Where decisions the audit stream never saw go (dialguard/audit/spool.py);
        # an object with append(fields: dict), set by create when configured.
        self.spool = None
        self._ctx_inflight: dict[str, asyncio.Future] = {}
        self._templates: dict[tuple, object] = {}  # compiled plans by shape (_plan_compiled)
        # False: every plan through build_plan, the reference (bench/engine.py compares)
        self.compiled_plans = True
        self._time_cache: dict[tuple, tuple] = {}  # _time_reasons
        self._whole_seconds: dict[Policy, bool] = {}
        # caller-ID pool windows by pool (id -> (pool, start -> candidates)) and
        # their tags and shape (id -> (candidates, tags, shape)): _candidates
        self._windows: dict[int, tuple] = {}
        self._shapes: dict[int, tuple] = {}
        self._pools: dict[str, tuple[str, ...]] = {}  # campaign -> its pool's tuple (_same_pool)
        # caller IDs whose penalty of an older store was looked for (_migrate_penalties)
        self._pen_migrated: set[str] = set()

    # -- lifecycle ------------------------------------------------------------
    @classmethod
    async def create(cls, settings: Settings | None = None, policy: Policy | None = None,
                     redis=None, **kw) -> "Decider":
        settings = settings or Settings()
        policy = policy or Policy.load(settings.rules)
        if redis is None:
            t = settings.redis_timeout_ms / 1000
            # One URL or the primary Sentinel names (dialguard/redisconn.py).
            redis = redisconn.async_redis(settings, max_connections=settings.redis_pool_size, timeout=max(t, 0.05))
            fast = redisconn.fast_client(settings, timeout=t, connect_timeout=max(t, 0.05))
        else:
            fast = None
        engine = cls(redis, settings, policy, **kw)
        engine.fast = fast
        if settings.redis_wait_replicas and fast is None:  # WAIT needs the connection that wrote
            log.warning("DIALGUARD_REDIS_WAIT_REPLICAS is ignored by an engine given its own Redis client")
        from dialguard.audit.spool import Spool  # the engine needs no audit import otherwise

        engine.spool = Spool.from_settings(settings, prefix=engine.keys.prefix)
        try:
            for s in scripts.ALL:
                await s.load(redis)
            # outcome.lua as this engine's outcomes run it: its rules' health settings written in
            await scripts.outcome_with(callerid_health.lua_settings(policy)).load(redis)
        except (RedisError, OSError) as exc:  # decide() retries on NOSCRIPT; stay up, fail closed
            log.warning("could not preload scripts: %s", exc)
        return engine

    async def warm_up(self, now: datetime | None = None, campaigns: tuple[str, ...] = ()) -> dict:
        """Load now what a first decision would otherwise load under its store
        deadline (and be denied guard_unavailable for): the rules and calendar
        versions in effect, the rules of campaigns that name their own, every state pack a `states` pack may add, the holiday
        calendars of their subdivisions (this year and the next), the number
        metadata and the ZIP data set. A service calls it before it accepts calls.
        Returns what it loaded (for the log); raises what the store raises."""
        from datetime import date

        from dialguard.calendars import calendars_used
        from dialguard.location import US_STATE_ZONES, warm_up as zip_warm_up
        from dialguard.timerules import UnknownYear, calling_day

        t0 = time.perf_counter()
        await asyncio.to_thread(zip_warm_up)
        now = (now or await self.now()).astimezone(UTC)
        info = parse_number("+12025550123", "US")  # phonenumbers' metadata and time zone data
        number_states(info.e164)
        policies: dict[int, tuple[Policy, Calendars]] = {}
        for campaign in ("", *campaigns):
            ctx = await self._context_shared(campaign)
            for pol in (ctx.policy, ctx.shadow):
                if pol is not None:
                    policies.setdefault(id(pol), (pol, ctx.cals))
        # campaigns with rules of their own (`campaign set --rules`): loaded as _context would.
        # Listed by the index `campaign set` keeps, which the guard's and the dialer's
        # Redis users may read, and by SCAN where the role may (the admin's tools;
        # a SCAN lists key names beyond a service's grants): a campaign set before
        # the index existed and not set since is found by SCAN only, and otherwise
        # loaded at its first decision, with the cold context's own budget.
        cals = ctx.cals
        camp_keys = [self.keys.campaign(n.decode())
                     for n in sorted(await self.redis.smembers(self.keys.campaigns_with_rules))]
        try:
            camp_keys += [key.decode() async for key in self.redis.scan_iter(match=self.keys.g("camp:*"), count=1000)]
        except NoPermissionError:
            log.info("warm-up: this Redis user may not SCAN; campaigns with rules of their own are "
                     "found by their index (%d)", len(camp_keys))
        for key in dict.fromkeys(camp_keys):  # once each
            rules = await self.redis.hget(key, "rules")
            if not rules:
                continue
            try:
                pol = self._campaign_pack(rules.decode())
            except RulesError:
                continue  # its calls are denied with the reason (_context)
            policies.setdefault(id(pol), (pol, cals))
        self._retain(*(p for p, _ in policies.values()))
        # the number plans of the regions the rules in effect read numbers in
        regions = {self.default_region, *(p.default_region for p, _ in policies.values())} - {None, ""}
        warmed = sorted(r for r in regions if warm_plans(r))
        checked = 0
        for pol, cals in list(policies.values()):
            variants = [pol]
            if pol.state_packs:
                # each state alone and the unplaced callee (every state pack): the
                # packs load, and their calendars' holidays are computed below
                variants += [pol.for_states(frozenset({st})) for st in sorted(pol.state_packs)]
                variants.append(pol.for_states(frozenset()))
            zones = tuple(sorted({z for zs in US_STATE_ZONES.values() for z in zs})) if pol.state_packs \
                else info.timezones
            for v in variants:
                for cal in calendars_used(v):  # this year's and the next year's days
                    for d in (now.date(), date(now.year + 1, 1, 2)):
                        try:
                            calling_day(d, cal, cals)
                        except UnknownYear:
                            pass  # a year the calendar does not know: the decision says so
                time_check(v, zones, now, cals)
                next_allowed(v, zones, now, cals)
                checked += 1
        done = {"policies": len(policies), "rule_sets_checked": checked, "number_plans": warmed,
                "seconds": round(time.perf_counter() - t0, 3)}
        log.info("engine warmed up: %s", done)
        return done

    async def close(self) -> None:
        if self.fast is not None:
            await self.fast.close()
        await super().close()

    def _forget(self, campaign: str | None = None) -> None:
        if campaign is None:
            self._ctx_cache.clear()
        else:
            self._ctx_cache.pop(campaign, None)

    # -- the decision -----------------------------------------------------------
    async def _context(self, campaign: str) -> _Context:
        """The campaign's rules and caller-ID pool, cached for CONTEXT_TTL seconds.

        The rules: the campaign's own packs (`rules` in its record; shadow rules are
        not evaluated for it), else the version in effect (`dialguard rules apply`),
        else the node's configured packs (rules_choice.campaign_rules). Caller IDs added with
        `dialguard callerid add` (globally or for the campaign) join the pool of the
        rules. Kill switches, approval and the rules version are checked inside the
        script, so they take effect on the very next decision.
        """
        hit = self._ctx_cache.get(campaign)
        mono = time.monotonic()
        if hit and hit.expires > mono:
            return hit
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.campaign(campaign), "rules")
            pipe.hvals(self.keys.pool(None))
            pipe.hvals(self.keys.pool(campaign))
            # imported calendars are data of the namespace: followed even with named rules
            pipe.hget(self.keys.calendars, "active")
            if self.versioned:
                pipe.hmget(self.keys.rules, "active", "shadow")
            pipe.hgetall(self.keys.pause_regions)
            res = await pipe.execute()
        rules, gpool, cpool, cver = res[:4]
        region_pauses = _region_pauses(res[-1])
        cver = cver.decode() if cver else ""
        cals = await self._calendars(cver) if cver else NO_CALENDARS
        rver, sver = ((v.decode() if v else "") for v in res[4]) if self.versioned else ("", "")
        in_effect = await self._version(rver) if rver else None
        shadow = await self._version(sver) if sver else None
        try:
            policy, shadow, _ = campaign_rules(rules.decode() if rules else None, in_effect, self.policy,
                                               shadow=shadow, load=self._campaign_pack)
        except RulesError as exc:  # never guess: this campaign's calls are denied
            log.error("campaign %s: rules %r unusable: %s", campaign, rules.decode(), exc)
            raise CampaignRulesError(str(exc)) from None
        # The health settings the call records of this campaign name (outcome.lua
        # reads them there): written on every refresh, so a flushed store gets them back.
        await self._publish_health(policy)
        pool = list(policy.caller_id_pool)
        for token in list(gpool) + list(cpool):
            try:
                e164 = self.sealer.open(token.decode())
            except Exception:  # noqa: BLE001 - a record sealed with another key
                log.error("caller-ID pool entry cannot be opened with this data key; ignored")
                continue
            if e164 not in pool:
                pool.append(e164)
        if len(pool) > 1:
            await self._migrate_penalties(pool)
        self._retain(policy, shadow)
        ctx = _Context(mono + CONTEXT_TTL, policy, self._same_pool(campaign, pool), f"{rver}|{sver}", rver, shadow, sver,
                       cver, cals, region_pauses)
        self._ctx_cache[campaign] = ctx
        return ctx

    def _retain(self, *policies: Policy | None) -> None:
        """Raise the namespace's retention (every plan's logs' expiry and trim) to what
        these rules need: the logs of a number are shared by every campaign, and rules
        needing less (a default) must not trim or expire what a campaign's own packs,
        or the shadow rules, still read. Only ever raised (a longer TTL costs memory,
        never a rule)."""
        self._retention_ms = max([self._retention_ms, *(p.retention_ms for p in policies if p is not None)])

    def _campaign_pack(self, rules: str) -> Policy:
        """The packs a campaign names as its own, loaded once (kept by their names)."""
        policy = self._policies.get(rules)
        if policy is None:
            policy = self._policies[rules] = Policy.load(rules)
        return policy

    def _same_pool(self, campaign: str, pool: list[str]) -> tuple[str, ...]:
        """The campaign's refreshed pool, as the very tuple of its context before
        when it has not changed: _candidates' windows are kept by the pool's
        identity, and a new tuple every CONTEXT_TTL seconds left the windows of
        the old ones behind (1,600 candidates each with a pool of 200, up to 64
        pools): objects every full collection of the cyclic GC walked, holding
        the event loop for 5-10 ms (docs/BENCHMARKS.md, "Stop 16, the check
        tail"). A pool that changed drops the windows of the one it replaces."""
        old = self._pools.get(campaign)
        if old is not None:
            if len(old) == len(pool) and old == tuple(pool):
                return old
            held = self._windows.get(id(old))
            if held is not None and held[0] is old:
                del self._windows[id(old)]
                for cands in held[1].values():
                    self._shapes.pop(id(cands), None)
        new = self._pools[campaign] = tuple(pool)
        return new

    async def _migrate_penalties(self, pool: list[str]) -> None:
        """Once per caller ID of the pools this node picks from: its pick penalty
        as a store written before the penalties hash keeps it (`pen` of its health
        hash) copied into that hash (penalties.lua; nothing when the hash already
        has one). A failure is logged and tried again at the next refresh: the
        penalty only orders the pick."""
        tags = [t for t in (self._cid_tag(c) for c in pool) if t not in self._pen_migrated]
        if not tags:
            return
        try:
            now_ms = ms(await self.now())
            for i in range(0, len(tags), 100):
                part = tags[i:i + 100]
                await scripts.PENALTIES(self.redis, [self.keys.cid_penalties] + [self.keys.cid_health(t) for t in part],
                                        [str(now_ms), *part])
        except (RedisError, OSError) as exc:
            log.warning("caller-ID penalties of the older layout not copied: %s", exc)
            return
        if len(self._pen_migrated) > 100_000:
            self._pen_migrated.clear()
        self._pen_migrated.update(tags)

    async def _publish_health(self, policy: Policy) -> None:
        await self.redis.set(self.keys.health_config(callerid_health.config_id(policy)),
                             callerid_health.config_json(policy))

    @property
    def active_policy(self) -> Policy:
        """The rules most recently seen in effect (for outcome retention, records)."""
        for ctx in self._ctx_cache.values():
            if ctx.rver:
                return self._versions.get(ctx.rver, self.policy)
        return self.policy

    async def campaign_policy(self, campaign: str) -> Policy:
        """The rules a campaign's calls are decided by (its own packs, else the version
        in effect): what the dialer reads the pack's abandon limits from."""
        return (await self._context_shared(campaign)).policy

    async def campaign_caller_ids(self, campaign: str) -> tuple[str, ...]:
        """The caller IDs a campaign's calls may present (its rules' pool and those added)."""
        return (await self._context_shared(campaign)).pool

    async def _context_shared(self, campaign: str) -> _Context:
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
            # the window of each start, built once per pool (the context's tuple,
            # by identity: a refreshed context brings a new one)
            held = self._windows.get(id(pool))
            if held is None or held[0] is not pool:
                if len(self._windows) >= 64:
                    self._windows.clear()
                    self._shapes.clear()
                held = self._windows[id(pool)] = (pool, {})
            cands = held[1].get(start)
            if cands is None:
                order = [pool[(start + i) % len(pool)] for i in range(min(len(pool), POOL_WINDOW))]
                cands = tuple(CallerIdCandidate(c, self._cid_tag(c), True) for c in order)
                self._shapes[id(cands)] = (cands, *_shape(cands))
                held[1][start] = cands
            return cands, True
        if self.skip_caller_id_without_pool or not policy.caller_id_required:
            return [], False
        reasons.append("caller_id_not_approved")
        why["caller_id_not_approved"] = "no caller ID given and the rules define no pool to pick from"
        return [], False

    async def decide(self, req: DecisionRequest, now: datetime | None = None) -> Decision:
        t0 = time.perf_counter()
        if req.postal_code is not None:
            # Before the deadline: the first ZIP code decompresses the data set
            # (location.warm_up at a service's start does it ahead).
            resolve(req.region, req.postal_code)
        # Local work before the first round trip: a number of a country not seen
        # yet compiles its patterns here (tens of ms once), which is not the store
        # being slow (DIALGUARD_REDIS_TIMEOUT_MS bounds the store's time).
        info: NumberInfo = parse_number(req.number, self.default_region)
        # One deadline for the whole decision, whatever the number of round trips.
        deadline = asyncio.get_running_loop().time() + self.timeout
        if now is not None:
            now = now.astimezone(UTC)
        elif not self.settings.test_clock:
            now = utcnow()  # production: no read, no await (the test clock is off the path)
        else:
            try:
                async with asyncio.timeout_at(deadline):
                    now = (await self.now()).astimezone(UTC)
            except (RedisError, OSError, asyncio.TimeoutError):
                return self._unavailable(req, new_id(), t0, "test clock unreadable")
        did = new_id()
        for _attempt in range(STALE_RETRIES + 1):
            try:
                ctx = self._ctx_cache.get(req.campaign)
                if ctx is None:
                    # cold: its own budget, and the decision's deadline starts after it
                    t_ctx = time.perf_counter()
                    async with asyncio.timeout(max(COLD_CONTEXT_MIN_S, COLD_CONTEXT_ROUND_TRIPS * self.timeout)):
                        ctx = await self._context_shared(req.campaign)
                    deadline += time.perf_counter() - t_ctx
                elif ctx.expires <= time.monotonic():
                    async with asyncio.timeout_at(deadline):
                        ctx = await self._context_shared(req.campaign)
            except CampaignRulesError as exc:
                return self._unavailable(req, did, t0, f"rules unusable: {exc}", now)
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                return self._unavailable(req, did, t0, f"store unavailable: {type(exc).__name__}", now)
            if info.valid and (req.region is not None or req.postal_code is not None or ctx.policy.state_packs
                               or ctx.region_pauses):
                # Local work (a first look-up loads the geocoder's data for the
                # number's prefix): not counted against the store's deadline.
                t_loc = time.perf_counter()
                ctx, cinfo, place = self._locate(req, ctx, info)
                deadline += time.perf_counter() - t_loc
            else:
                cinfo, place = info, NOWHERE
            policy = ctx.policy
            t_plan = time.perf_counter()
            plan, why = self._plan(req, ctx, cinfo, did, now, place)
            deadline += time.perf_counter() - t_plan  # local work too (a first plan of its rules: ms)
            acked = None
            try:
                if self.fast is not None and self.settings.redis_wait_replicas:
                    # An ALLOW waits until a replica has its reservation: a failover
                    # then cannot forget an attempt the caller was told to place.
                    w0 = time.perf_counter()
                    res, acked = await self.fast.evalsha_acked(
                        scripts.DECIDE, plan.keys, plan.args(), deadline=deadline,
                        replicas=self.settings.redis_wait_replicas, wait_ms=self.settings.redis_wait_ms,
                        need=_allowed)
                    if acked is not None:
                        metrics.observe_replica_wait(time.perf_counter() - w0)
                elif self.fast is not None:
                    res = await self.fast.evalsha(scripts.DECIDE, plan.keys, plan.args(), deadline=deadline)
                else:
                    async with asyncio.timeout_at(deadline):
                        res = await scripts.DECIDE(self.redis, plan.keys, plan.args())
            except (RedisError, RedisReplyError, OSError, asyncio.TimeoutError) as exc:
                # The script may have run before the connection broke (or during WAIT):
                # its allow record of `did` can be in the audit stream. The deny the
                # caller gets has its own id, so the audit never holds two verdicts for one.
                log.warning("decide %s: store unavailable: %r", did, exc)
                return self._unavailable(req, new_id(), t0, f"store unavailable: {type(exc).__name__} "
                                         f"(attempt {did} may be reserved)", now)
            if int(res[4]) != 2:
                break
            # Rules or calendars changed since this node loaded them: drop every cached context.
            self._ctx_cache.clear()
        else:
            return self._unavailable(req, did, t0, "rules kept changing while deciding", now)

        allowed, lua_reasons, details, chosen, status, rdid, lifted = res[:7]
        if acked is not None and acked < self.settings.redis_wait_replicas:
            # The reservation is on the primary only: a failover now could lose it.
            # Deny (fail closed); the reservation stays counted, which over-counts
            # (safe). The audit stream has the allow record of `rdid`; the spool gets
            # the deny the caller saw, under its own id, naming that record.
            rdid = rdid.decode() if isinstance(rdid, bytes) else rdid
            metrics.observe_replica_unacked()
            log.warning("decide %s: %d of %d replicas acknowledged within %d ms: denied",
                        rdid, acked, self.settings.redis_wait_replicas, self.settings.redis_wait_ms)
            return self._unavailable(
                req, new_id(), t0, f"reservation {rdid} not acknowledged by {self.settings.redis_wait_replicas} "
                f"replica(s) within {self.settings.redis_wait_ms} ms", now)
        replay = int(status) == 1
        if replay:  # the earlier answer to the identical request: its own time for next_eligible_at
            now = from_ms(float(res[7]))
        if int(status) == 3:  # refused at the audit backlog ceiling: the stream has no record of it
            self._spool_unrecorded(req, did, now, "audit backlog ceiling")
        chosen = chosen.decode() if isinstance(chosen, bytes) else chosen
        rdid = rdid.decode() if isinstance(rdid, bytes) else rdid
        all_reasons = sort_reasons([r.decode() if isinstance(r, bytes) else r for r in lua_reasons]) \
            if lua_reasons else []
        candidates = plan.candidates
        caller_id = next((c.e164 for c in candidates if c.tag == chosen), None) if chosen else None
        if chosen and caller_id is None:  # a replay: picked from the pool by an earlier decision
            caller_id = next((c for c in ctx.pool if self._cid_tag(c) == chosen), None)
        if not caller_id and req.caller_id and not all_reasons:
            caller_id = candidates[0].e164 if candidates else None
        lifted = sort_reasons([r.decode() if isinstance(r, bytes) else r for r in lifted]) if lifted else []
        verdict = "allow" if int(allowed) == 1 else "deny"
        explanations: dict[str, str] = {}
        next_at = next_unknown = None
        if lifted:
            explanations = {r: f"lifted by an override: {why.get(r) or EXPLAIN[r]}" for r in lifted}
        if verdict == "deny":
            next_at, next_unknown = self._next_eligible(policy, all_reasons, plan, details, cinfo, now, ctx.cals)
            explanations = {r: why.get(r) or EXPLAIN[r] for r in all_reasons}
            for item in details:
                cid = item[0].decode() if isinstance(item[0], bytes) else item[0]
                if cid.startswith("party:") and cid[6:] in explanations:  # the party's flag (decide.lua)
                    explanations[cid[6:]] = PARTY_EXPLAIN[cid[6:]]
                    continue
                meta = plan.checks.get(cid)
                if meta and meta.label and meta.reason in explanations:
                    explanations[meta.reason] = meta.label
            if next_unknown:
                note_next_unknown(explanations, next_unknown)
        # Every field given, in field order and of its declared type: no validation
        # pass needed (Decision.model_construct without its per-field loop).
        decision = decision_of({
            "decision_id": rdid, "decision": verdict, "reasons": all_reasons, "next_eligible_at": next_at,
            "caller_id": caller_id, "max_duration_s": policy.max_duration_s, "number": info.e164,
            "override": bool(lifted), "overridden": lifted, "explanations": explanations,
            "latency_ms": (time.perf_counter() - t0) * 1000, "replay": replay, "next_unknown": next_unknown,
        })
        metrics.observe(decision)
        return decision

    def _locate(self, req: DecisionRequest, ctx: _Context, info: NumberInfo):
        """Where the callee may be (SPEC §2): the number's zones and states and
        the stated location's, all of them. Returns the context with the rules
        of those states (a `states` pack), the number's info with every zone
        counted, and the stated place."""
        place = resolve(req.region, req.postal_code)
        policy = ctx.policy
        if policy.state_packs:
            states = number_states(info.e164) | place.states
            derived = policy.for_states(states)
            if derived is not policy:
                ctx = replace(ctx, policy=derived)
        if place.zones:
            zones = tuple(sorted(set(info.timezones) | set(place.zones)))
            if zones != info.timezones:
                info = info._replace(timezones=zones)
        return ctx, info, place

    def _plan(self, req: DecisionRequest, ctx: _Context, info: NumberInfo, did: str, now: datetime,
              place: Place = NOWHERE):
        """The decide.lua plan for one request (and the shadow rules' plan inside it).
        With a party (and a valid number), the plan names the party's flags and,
        under party-scoped rules, its counters: read in the same script call."""
        policy = ctx.policy
        reasons: list[str] = []
        why: dict[str, str] = {}
        if ctx.region_pauses and info.valid:
            hit = region_pause_hit(ctx.region_pauses, callee_regions(req, info, place), ms(now))
            if hit:
                reasons.append("paused")
                why["paused"] = hit
        if place.problem and not place.zones and (policy.time_rules or policy.state_packs):
            # A stated location that cannot be placed: its local time is unknown (fail closed).
            reasons.append("unknown_timezone")
            why["unknown_timezone"] = f"the stated location cannot be placed: {place.problem}"
        if not info.valid:
            reasons.append("invalid_number")
            why["invalid_number"] = f"{req.number!r}: {info.problem}"
            number_tag = keyed_hash(self.settings.hash_secret, "raw:" + req.number)
        else:
            number_tag = self.keys.number_tag(info.e164)
            treasons, twhy, est = self._time_check(policy, info.timezones, now, ctx.cals)
            reasons.extend(treasons)
            why.update(twhy)
        candidates, check_cid = self._candidates(req, policy, ctx.pool, reasons, why)

        pre = sort_reasons(reasons) if reasons else []
        party_tag = self.keys.party_tag(req.party) if req.party is not None and info.valid else None
        if not self.compiled_plans:
            return self._plan_built(req, ctx, info, did, now, number_tag, pre, candidates, check_cid,
                                    est if info.valid else (), party_tag=party_tag), why
        return self._plan_compiled(req, ctx, info, did, now, number_tag, pre, candidates, check_cid,
                                   est if info.valid else (), party_tag=party_tag), why

    def _fingerprint(self, req: DecisionRequest, info: NumberInfo) -> str:
        if req.call_id is None:
            return ""
        # request_fingerprint with the HMAC's key set up once per secret (settings may be swapped)
        secret = self.settings.hash_secret
        if secret is not self._req_secret:
            self._req_secret, self._req_hash = secret, keyed_hasher(secret, "req:")
        return self._req_hash(_fingerprint_text(req, info))

    def _audit_record(self, req: DecisionRequest, info: NumberInfo, did: str, now: datetime, number_tag: str,
                      pre_json: str, est, end: str) -> str:
        e164, cid = info.e164, req.caller_id
        return record.decision_record(
            decision_id=did, at_ms=ms(now), ts_ms=int(time.time() * 1000), number_tag=number_tag,
            sealed_number=self.sealer.seal(e164) if e164 else None, campaign=req.campaign, agent=req.agent,
            subject=req.subject, call_id=req.call_id, pre_json=pre_json,
            sealed_caller_id=self.sealer.seal(cid) if cid else None, estimated=est, end=end,
            region=req.region, postal=req.postal_code,
            party=party_hash(self.settings.hash_secret, req.party) if req.party is not None else None)

    def _plan_built(self, req: DecisionRequest, ctx: _Context, info: NumberInfo, did: str, now: datetime,
                    number_tag: str, pre: list[str], candidates: list, check_cid: bool, est=(),
                    party_tag: str | None = None):
        """The plan through build_plan, the reference the compiled one equals
        (compiled_plans off: bench/engine.py measures the difference), shadow rules included."""
        policy = ctx.policy
        payload = None
        if self.audit:
            payload = self._audit_record(
                req, info, did, now, number_tag, _encode(pre) if pre else "[]", est,
                record.tail(policy.name, policy.version_hash, self.settings.node, calendar=ctx.cver))
        shadow = None
        if ctx.shadow is not None:
            spre = [r for r in pre if r not in ("outside_hours", "holiday", "unknown_timezone")]
            if info.valid:
                spre += self._time_check(ctx.shadow, info.timezones, now, ctx.cals)[0]
            shadow = (ctx.shadow, ctx.sver, sort_reasons(spre))
        return build_plan(
            policy=policy, keys=self.keys, info=info, number_tag=number_tag, campaign=req.campaign,
            agent=req.agent, subject=req.subject, decision_id=did, now=now, candidates=candidates,
            check_caller_id=check_cid, site_timezone=self.settings.site_timezone, call_id=req.call_id,
            pre_reasons=list(pre), audit_payload=payload,
            audit_max=self.settings.audit_backlog_max if self.audit else None,
            request_fp=self._fingerprint(req, info) or None,
            versions=(ctx.rvs, ctx.rver) if self.versioned else None, calendar_version=ctx.cver, shadow=shadow,
            party_tag=party_tag, retention_ms=self._retention_ms)

    def _plan_compiled(self, req: DecisionRequest, ctx: _Context, info: NumberInfo, did: str, now: datetime,
                       number_tag: str, pre: list[str], candidates: list, check_cid: bool,
                       est=(), party_tag: str | None = None) -> FilledPlan:
        """The plan from a template compiled once per shape (dialguard.decision.plan.compile_plan):
        the same KEYS and plan as build_plan (tests/unit/test_plan_template.py), in MessagePack
        (build_plan's is JSON), shadow rules included, at a fraction of the cost."""
        policy = ctx.policy
        known = self._shapes.get(id(candidates))
        if known is not None and known[0] is candidates:  # a pool window (_candidates)
            tags, shape = known[1], known[2]
        elif not candidates:  # no caller ID to check (_shape's answer for none)
            tags, shape = [], ()
        else:
            tags, shape = _shape(candidates)
        audit = self.audit
        shadow = ctx.shadow
        key = (policy, req.campaign, info.valid, info.timezones, shape, check_cid, req.call_id is not None,
               ctx.rvs, ctx.rver, shadow, ctx.sver, ctx.cver, party_tag is not None, self._retention_ms)
        tpl = self._templates.get(key)
        if tpl is None:
            if len(self._templates) >= 4096:  # bounded: shapes are few, campaigns and zones not unlimited
                self._templates.clear()
            tpl = self._templates[key] = compile_plan(
                policy=policy, keys=self.keys, valid=info.valid, callee=info.timezones, campaign=req.campaign,
                cand_shape=shape, check_caller_id=check_cid, has_call=req.call_id is not None,
                site_timezone=self.settings.site_timezone, audit=audit,
                audit_max=self.settings.audit_backlog_max if audit else None,
                versions=(ctx.rvs, ctx.rver) if self.versioned else None, calendars=ctx.cver,
                shadow=(shadow, ctx.sver) if shadow is not None else None, party=party_tag is not None,
                retention_ms=self._retention_ms)
            # the audit record's constant end
            tpl.tail = record.tail(policy.name, policy.version_hash, self.settings.node, calendar=ctx.cver)
        pre_json = _encode(pre) if pre else "[]"
        spre: list[str] = []
        if shadow is not None:
            # the shadow's pre reasons: the request's but the time rules', then the shadow's time rules
            spre = [r for r in pre if r not in ("outside_hours", "holiday", "unknown_timezone")]
            if info.valid:
                spre += self._time_check(shadow, info.timezones, now, ctx.cals)[0]
            spre = sort_reasons(spre)
        payload = None
        if audit:
            payload = self._audit_record(req, info, did, now, number_tag, pre_json, est, tpl.tail)
        try:
            keys, argv = tpl.fill(now=now, decision_id=did, pre=pre, tag=number_tag,
                                  agent_hash=short_hash(req.agent), sub_hash=short_hash(req.subject or ""),
                                  cand_tags=tags, call_id=req.call_id, payload=payload, spre=spre,
                                  request_fp=self._fingerprint(req, info), party_tag=party_tag or "")
        except PlanFieldError:
            # a value the compiled plan has no room for (a time before 2001, a decision
            # id of another form): the reference writer, same plan in JSON
            return self._plan_built(req, ctx, info, did, now, number_tag, pre, candidates, check_cid, est,
                                    party_tag=party_tag)
        return FilledPlan(keys, argv, tpl.checks, candidates)

    def _time_reasons(self, policy: Policy, zones: tuple[str, ...], now: datetime,
                      cals: Calendars = NO_CALENDARS):
        return self._time_check(policy, zones, now, cals)[:2]

    def _time_check(self, policy: Policy, zones: tuple[str, ...], now: datetime,
                    cals: Calendars = NO_CALENDARS):
        """time_check, remembered per UTC second and calendar version: exact when every allowed-hours
        boundary is a whole second (HH:MM in the packs), since zone offsets are
        whole seconds too: all instants of one second then fall on the same side
        of every boundary, on the same local date, with the same HH:MM:SS in the
        explanation. The answer is shared: callers only read it."""
        whole = self._whole_seconds.get(policy)
        if whole is None:
            whole = self._whole_seconds[policy] = all(
                not (t.second or t.microsecond)
                for _pack, hours, _cal in policy.time_rules if hours is not None
                for spans in hours.weekly.values() for i in spans for t in (i.start, i.end))
        if not whole:
            return time_check(policy, zones, now, cals)
        # cals: one object per calendar version (Engine._calendars), compared by identity
        key = (policy, zones, now.replace(microsecond=0), cals)
        hit = self._time_cache.get(key)
        if hit is None:
            if len(self._time_cache) >= 4096:
                self._time_cache.clear()
            hit = self._time_cache[key] = time_check(policy, zones, now, cals)
        return hit

    def _next_eligible(self, policy, reasons, plan, details, info, now,
                       cals: Calendars = NO_CALENDARS) -> tuple[datetime | None, str | None]:
        """(next_eligible_at, None), or (None, why) when it lies past a calendar year
        not known yet: the SPEC's null, but not "never" (timerules.next_window)."""
        if any(r in PERMANENT for r in reasons) or "guard_unavailable" in reasons:
            return None, None
        t, never = eligible_from_details(plan, details)
        if never:
            return None, None
        start = max(now, t) if t else now
        if not info.valid:
            return None, None
        return next_window(policy, info.timezones, start, cals)

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
        payload = record.decision_record(
            decision_id=did, at_ms=ms(now) if now else wall, ts_ms=wall, number_tag=tag,
            sealed_number=self.sealer.seal(info.e164) if info.e164 else None, campaign=req.campaign,
            agent=req.agent, subject=req.subject, call_id=req.call_id, pre_json="[]",
            sealed_caller_id=self.sealer.seal(req.caller_id) if req.caller_id else None,
            region=req.region, postal=req.postal_code,
            party=party_hash(self.settings.hash_secret, req.party) if req.party is not None else None,
            end=record.tail(self.active_policy.name, self.active_policy.version_hash, self.settings.node,
                            unrecorded=why))
        try:
            self.spool.append({"t": "decision", "id": did, "allow": "0", "r": "guard_unavailable",
                               "ch": "", "cs": "", "j": payload})
        except Exception:  # noqa: BLE001 - the deny stands; the log says what was lost
            log.exception("decision %s: could not be spooled (deny stands, record lost)", did)

    def _cid_tag(self, e164: str) -> str:
        tag = self._cid_tags.get(e164)
        if tag is None:
            tag = self._cid_tags[e164] = self.keys.cid_tag(e164)
        return tag
