"""The admin store: kill switches, campaign approval, caller IDs, overrides
(SPEC §2), each change written with its audit record in one MULTI. Rules and
calendar versions: dialguard/rules_store.py, dialguard/calendars.py, on the
same client. `Admin` adds the number events: what an admin command needs, and
nothing of the hot path."""

from __future__ import annotations

import time
from datetime import datetime

from dialguard import redisconn
from dialguard.config import Settings
from dialguard.events import NumberEvents
from dialguard.ids import new_id
from dialguard.numbers import parse_number, short_hash
from dialguard.rules import Policy
from dialguard.store import Store, _encode, _region_pauses, from_ms, ms

# how long an admin command's Redis reads may wait (the CLI, the console's imports;
# not the call path, whose deadline is DIALGUARD_REDIS_TIMEOUT_MS)
ADMIN_REDIS_TIMEOUT_S = 10.0


def admin_redis(settings: Settings):
    """A Redis client for an operator's work: its reads wait ADMIN_REDIS_TIMEOUT_S."""
    t = max(settings.redis_timeout_ms / 1000, ADMIN_REDIS_TIMEOUT_S)
    return redisconn.async_redis(settings, max_connections=settings.redis_pool_size, timeout=t)


class AdminStore(Store):
    async def set_campaign(self, campaign: str, approved: bool = True,
                           start: datetime | None = None, end: datetime | None = None,
                           rules: str | None = None, why: str = "", actor: str | None = None,
                           approval: tuple[str, str] | None = None, **record) -> None:
        """Approve (or not) a campaign, its dates and optionally its own rule packs.
        actor: the authenticated identity; record: more for the audit (the request, its requester);
        approval: (request id, JSON) noted in keys.approvals in the same MULTI (dialguard/approvals.py)."""
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
            if rules:
                pipe.sadd(self.keys.campaigns_with_rules, campaign)
            else:
                pipe.srem(self.keys.campaigns_with_rules, campaign)
            self._admin(pipe, "campaign_approve" if approved else "campaign_revoke", campaign, why,
                        start=ms(start) if start else None, end=ms(end) if end else None, rules=rules or None,
                        actor=actor, **record)
            if approval:
                pipe.hset(self.keys.approvals, *approval)
            await pipe.execute()
        self._forget(campaign)

    async def approve_caller_id(self, e164: str, pool: bool = False, campaign: str | None = None,
                                why: str = "", actor: str | None = None) -> None:
        """Approve a caller ID; with pool=True the guard may also pick it (global
        pool, or the campaign's). The pool holds the number sealed, never plain."""
        tag = self.keys.cid_tag(e164)
        sealed = self.sealer.seal(e164)  # the same token in the pool and in the record (restored as is)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(self.keys.approved_cids, tag)
            if pool or campaign:
                pipe.hset(self.keys.pool(campaign), tag, sealed)
            self._admin(pipe, "callerid_add", tag, why, ne=sealed, pool=bool(pool or campaign),
                        campaign=campaign, actor=actor)
            await pipe.execute()
        self._forget()

    async def remove_caller_id(self, e164: str, campaign: str | None = None, why: str = "",
                               actor: str | None = None) -> None:
        tag = self.keys.cid_tag(e164)
        async with self.redis.pipeline(transaction=True) as pipe:
            if campaign:
                pipe.hdel(self.keys.pool(campaign), tag)
            else:
                pipe.srem(self.keys.approved_cids, tag)
                pipe.hdel(self.keys.pool(None), tag)
            self._admin(pipe, "callerid_remove", tag, why, ne=self.sealer.seal(e164), campaign=campaign,
                        actor=actor)
            await pipe.execute()
        self._forget()

    async def cooldown_caller_id(self, e164: str, until: datetime, why: str = "", actor: str | None = None) -> None:
        tag = self.keys.cid_tag(e164)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.cid_cooldown, {tag: ms(until)})
            self._admin(pipe, "callerid_cooldown", tag, why, ne=self.sealer.seal(e164), until=ms(until), actor=actor)
            await pipe.execute()

    async def pause(self, scope: str = "all", name: str | None = None, why: str = "",
                    actor: str | None = None) -> None:
        """Kill switch: the next decision on every node is denied `paused`.
        actor: the authenticated identity (dialguard.authz.actor_of) when there is one."""
        f = self._pause_field(scope, name)
        at = int(time.time() * 1000)  # one reading: `counters rebuild` restores "since" from the record's "at"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.pause, f, str(at))
            self._admin(pipe, "pause", f, why, at=at, actor=actor)
            await pipe.execute()

    async def resume(self, scope: str = "all", name: str | None = None, why: str = "",
                     actor: str | None = None) -> bool:
        f = self._pause_field(scope, name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.pause, f)
            self._admin(pipe, "resume", f, why, actor=actor)
            res = await pipe.execute()
        return bool(res[0])

    async def pause_region(self, region: str, start: datetime | None = None, until: datetime | None = None,
                           why: str = "", actor: str | None = None) -> None:
        """Kill switch by jurisdiction (a governor's emergency declaration): calls
        whose callee may be in `region` (ISO 3166-2 such as US-LA, or a country)
        are denied `paused` from `start` (default: at once) until `until` (default:
        no end; `resume_region` lifts it). Every node follows within CONTEXT_TTL."""
        from dialguard.location import parse_region

        region = parse_region(region)
        if region is None:
            raise ValueError("a region is needed (ISO 3166-2, e.g. US-LA)")
        at = int(time.time() * 1000)
        start_ms = ms(start) if start else 0  # no start: in effect from now on, whatever a decision's time
        until_ms = ms(until) if until else None
        if until_ms is not None and until_ms <= (start_ms or at):
            raise ValueError("the pause ends before it starts")
        rec = {"from": start_ms, "until": until_ms, "why": why, "since": at}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.pause_regions, region, _encode(rec))
            self._admin(pipe, "pause_region", region, why, at=at, actor=actor, **{"from": start_ms,
                                                                                   "until": until_ms})
            await pipe.execute()
        self._forget()

    async def resume_region(self, region: str, why: str = "", actor: str | None = None) -> bool:
        from dialguard.location import parse_region

        region = parse_region(region)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.pause_regions, region)
            self._admin(pipe, "resume_region", region, why, actor=actor)
            res = await pipe.execute()
        self._forget()
        return bool(res[0])

    async def paused_regions(self) -> list[dict]:
        """Region kill switches: region, from, until (None: no end), why."""
        raw = await self.redis.hgetall(self.keys.pause_regions)
        return [{"region": r, "from": from_ms(a) if a else None, "until": from_ms(u) if u else None, "why": w}
                for r, a, u, w in _region_pauses(raw)]

    async def paused(self) -> dict[str, datetime]:
        """Kill switches in effect: field (all, camp:NAME, cid:TAG) -> since."""
        raw = await self.redis.hgetall(self.keys.pause)
        return {k.decode(): from_ms(float(v)) for k, v in raw.items()}

    # -- overrides (SPEC §2) ----------------------------------------------------------
    async def override_grant(self, number: str, *, why: str, approver: str, expires: datetime,
                             campaign: str | None = None, lifts: list[str] | None = None,
                             now: datetime | None = None, actor: str | None = None,
                             requested_by: str | None = None, request_id: int | None = None,
                             approval: tuple[str, str] | None = None, gid: str | None = None) -> str:
        """A one-time exception for a number: its next decision denied only for
        counter or hours reasons (or those in `lifts`) is allowed, and the grant is
        used up. Never lifts dnc, opted_out, complained, invalid_number (nor
        kill switches, approvals, consent). Returns the grant id.
        approver/requested_by: the authenticated identities of the four eyes
        (dialguard/approvals.py); actor: who wrote it (default: the approver); approval: (request
        id, JSON) noted in keys.approvals in the same MULTI; gid: the grant's id, chosen by the
        caller (an approval records it before writing), default a new one."""
        from dialguard.decision.models import LIFTABLE
        from dialguard.numbers import NumberError

        if not why.strip() or not approver.strip():
            raise ValueError("an override needs a reason and an approver")
        lifts = sorted(set(lifts or ()))
        bad = [r for r in lifts if r not in LIFTABLE]
        if bad:
            raise ValueError(f"an override cannot lift {', '.join(bad)} (only {', '.join(sorted(LIFTABLE))}; "
                             "SPEC §2: never dnc, opted_out, complained, invalid_number)")
        info = parse_number(number, self.default_region)
        if not info.valid:
            raise NumberError(f"{number!r}: {info.problem}")
        # expiry is compared with the decisions' clock (the rules clock in tests)
        now = now or await self.now()
        if expires <= now:
            raise ValueError("the override's expiry is in the past")
        tag = self.keys.number_tag(info.e164)
        key = self.keys.override(tag)
        gid = gid or "ov-" + new_id()
        from dialguard.ids import actor as os_actor

        rec = {"op": "grant", "n": tag, "ne": self.sealer.seal(info.e164), "campaign": campaign,
               "lifted": lifts or sorted(LIFTABLE), "by": approver, "approver": approver,
               "actor": actor or os_actor(), "requested_by": requested_by, "request": request_id,
               "why": why, "at": int(time.time() * 1000), "expires": ms(expires), "node": self.settings.node}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)  # one grant per number: a new one replaces the old
            pipe.hset(key, mapping={"id": gid, "camp": short_hash(campaign) if campaign else "",
                                    "exp": str(ms(expires)), "lifts": ",".join(lifts)})
            pipe.pexpire(key, ms(expires) - ms(now))  # the key lives as long on Redis's clock
            if self.audit:
                pipe.xadd(self.keys.audit, {"t": "override", "id": gid, "j": _encode(rec)})
            if approval:
                pipe.hset(self.keys.approvals, *approval)
            await pipe.execute()
        return gid

    async def override_get(self, number: str) -> dict | None:
        info = parse_number(number, self.default_region)
        if not info.valid:
            from dialguard.numbers import NumberError
            raise NumberError(f"{number!r}: {info.problem}")
        raw = await self.redis.hgetall(self.keys.override(self.keys.number_tag(info.e164)))
        if not raw:
            return None
        g = {k.decode(): v.decode() for k, v in raw.items()}
        return {"id": g.get("id"), "campaign_tag": g.get("camp") or None,
                "expires_at": from_ms(float(g["exp"])).isoformat() if g.get("exp") else None,
                "lifts": [r for r in (g.get("lifts") or "").split(",") if r] or None}

    async def override_revoke(self, number: str, why: str = "", actor: str | None = None) -> bool:
        info = parse_number(number, self.default_region)
        if not info.valid:
            from dialguard.numbers import NumberError
            raise NumberError(f"{number!r}: {info.problem}")
        key = self.keys.override(self.keys.number_tag(info.e164))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(key, "id")
            pipe.delete(key)
            self._admin(pipe, "override_revoke", self.keys.number_tag(info.e164), why, actor=actor)
            res = await pipe.execute()
        return bool(res[1])

    def _pause_field(self, scope: str, name: str | None) -> str:
        if scope == "all":
            return "all"
        if scope == "campaign" and name:
            return "camp:" + name
        if scope == "caller_id" and name:
            return "cid:" + self.keys.cid_tag(parse_number(name, self.default_region).e164 or name)
        raise ValueError("pause scope is all, campaign NAME or caller_id NUMBER")

    async def live_calls(self, e164: str, now: datetime | None = None) -> int:
        """Calls holding a lease on this caller ID at `now` (default: the rules clock).
        A lease ends at its score, as decide.lua counts them: from (now, whether
        or not the ended ones were trimmed yet (only a write of the key trims)."""
        tag = self.keys.cid_tag(e164)
        now = now or await self.now()
        return await self.redis.zcount(self.keys.cid_live(tag), f"({ms(now)}", "+inf")


class Admin(AdminStore, NumberEvents):
    """Admin commands (the CLI): the admin store and the number events."""

    @classmethod
    async def create(cls, settings: Settings | None = None, policy: Policy | None = None, redis=None, **kw):
        """On a client of its own whose reads wait ADMIN_REDIS_TIMEOUT_S: the hot path's
        DIALGUARD_REDIS_TIMEOUT_MS (200 ms, a call's fail-closed bound) timed out a DNC
        import's pipeline on a busy Redis (CI, 2026-12-06); an operator's command waits."""
        settings = settings or Settings()
        return await super().create(settings, policy, redis=redis or admin_redis(settings), **kw)
