"""What every job on the live store shares: the Redis client, the key layout,
the data key, the rules clock, the published rules and calendar versions, and
the admin audit record. Light: no Lua preload, no pipelined client, no spool
(those belong to the hot path, dialguard/decision/decider.py)."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime

from dialguard import redisconn
from dialguard.calendars import NO_CALENDARS, Calendars
from dialguard.config import Settings
from dialguard.crypto import Sealer
from dialguard.decision.keys import Keys
from dialguard.decision.models import utcnow
from dialguard.ids import new_id
from dialguard.rules import Policy, RulesError
from dialguard.timeutil import from_ms, to_ms as ms

log = logging.getLogger("dialguard.engine")
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _region_pauses(raw: dict) -> tuple:
    """The `pause --region` hash as (region, from ms, until ms or None, why); an
    unreadable entry pauses its region with no end (fail closed)."""
    out = []
    for k, v in (raw or {}).items():
        region = k.decode() if isinstance(k, bytes) else k
        try:
            j = json.loads(v)
            out.append((region, int(j.get("from") or 0), int(j["until"]) if j.get("until") else None,
                        str(j.get("why") or "")))
        except (ValueError, TypeError, AttributeError):
            log.error("region pause %s: unreadable record; the region stays paused", region)
            out.append((region, 0, None, "unreadable pause record"))
    return tuple(sorted(out))


class CampaignRulesError(Exception):
    pass


class Store:
    def __init__(self, redis, settings: Settings, policy: Policy, *, prefix: str | None = None,
                 audit: bool = True, versioned: bool = True):
        self.redis = redis
        self.settings = settings
        self.policy = policy
        self.keys = Keys(prefix or settings.key_prefix, settings.hash_secret)
        self.audit = audit
        # Follow the rules versions published with `dialguard rules apply` (off for
        # replays and `check --rules`, which name their rules explicitly).
        self.versioned = versioned
        self._versions: dict[str, Policy] = {}
        self._calendar_versions: dict[str, Calendars] = {}
        self.sealer = Sealer()
        self.default_region = policy.default_region or settings.default_region

    # -- lifecycle ------------------------------------------------------------
    @classmethod
    async def create(cls, settings: Settings | None = None, policy: Policy | None = None, redis=None, **kw):
        settings = settings or Settings()
        policy = policy or Policy.load(settings.rules)
        if redis is None:
            t = settings.redis_timeout_ms / 1000
            # One URL or the primary Sentinel names (dialguard/redisconn.py).
            redis = redisconn.async_redis(settings, max_connections=settings.redis_pool_size, timeout=max(t, 0.05))
        return cls(redis, settings, policy, **kw)

    async def close(self) -> None:
        await self.redis.aclose()

    async def now(self) -> datetime:
        if self.settings.test_clock:
            v = await self.redis.get(self.keys.clock)
            if v:
                return from_ms(float(v))
        return utcnow()

    async def set_test_clock(self, at: datetime | None) -> None:
        if at is None:
            await self.redis.delete(self.keys.clock)
        else:
            await self.redis.set(self.keys.clock, str(ms(at)))

    def _forget(self, campaign: str | None = None) -> None:
        """A campaign's (or every) cached decision context is stale: the hot path drops it."""

    @property
    def active_policy(self) -> Policy:
        """The rules most recently seen in effect (for outcome retention, records)."""
        return self.policy

    # -- published rules and calendar versions -------------------------------------
    async def _version(self, version: str) -> Policy:
        """A published rules version (stored versions never change: cached for good)."""
        policy = self._versions.get(version)
        if policy is None:
            from dialguard.rules_store import RulesVersion

            raw = await self.redis.hget(self.keys.rules, f"v:{version}")
            if raw is None:
                raise CampaignRulesError(f"rules version {version} is in effect but not stored")
            try:
                policy = RulesVersion.from_json(raw).policy()
            except (RulesError, ValueError, KeyError) as exc:  # deny rather than guess
                log.error("rules version %s unusable here: %s", version, exc)
                raise CampaignRulesError(f"rules version {version} unusable: {exc}") from None
            self._versions[version] = policy
        return policy

    async def _calendars(self, version: str) -> Calendars:
        """A published calendar version (never changes once stored: cached for good)."""
        cals = self._calendar_versions.get(version)
        if cals is None:
            raw = await self.redis.hget(self.keys.calendars, f"v:{version}")
            if raw is None:
                raise CampaignRulesError(f"calendar version {version} is in effect but not stored")
            try:
                cals = Calendars.from_json(raw)
            except (ValueError, KeyError, TypeError) as exc:  # deny rather than guess
                log.error("calendar version %s unusable here: %s", version, exc)
                raise CampaignRulesError(f"calendar version {version} unusable: {exc}") from None
            self._calendar_versions[version] = cals
        return cals

    async def calendars(self) -> Calendars:
        """The calendar version in effect (the imported calendar years)."""
        v = await self.redis.hget(self.keys.calendars, "active")
        return await self._calendars(v.decode()) if v else NO_CALENDARS

    async def calendar_horizons(self) -> dict:
        """Calendar code -> last known day (date, or None: no end) of every calendar
        the rules in effect on this node use (dialguard.calendars.horizons)."""
        from dialguard.calendars import horizons

        active = await self.redis.hget(self.keys.rules, "active") if self.versioned else None
        policy = await self._version(active.decode()) if active else self.policy
        return horizons(policy, await self.calendars())

    # -- administration ------------------------------------------------------------
    # Every change is written together with its audit record (t=admin) in one
    # MULTI: the record's stream position is the moment the change took effect.
    def _admin(self, pipe, action: str, target: str | None, why: str = "", **extra) -> None:
        if not self.audit:
            return
        from dialguard.ids import actor

        j = {"action": action, "actor": extra.pop("actor", None) or actor(), "target": target, "why": why,
             "at": int(time.time() * 1000), "node": self.settings.node, **extra}
        pipe.xadd(self.keys.audit, {"t": "admin", "id": new_id(), "j": _encode(j)})
