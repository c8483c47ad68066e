"""Lua scripts from dialguard/decision/lua: loaded once, called by SHA.

If Redis lost its script cache (restart, SCRIPT FLUSH, failover), EVALSHA
answers NOSCRIPT; we load the script again and retry once.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from redis.exceptions import NoScriptError

from dialguard.decision.models import LIFTABLE


def lua_strings(items) -> str:
    """A Lua list of strings (the items: names of [a-z_] only, checked), in a stable order."""
    items = sorted(items)
    if not all(i and set(i) <= set("abcdefghijklmnopqrstuvwxyz_") for i in items):
        raise ValueError(f"not a Lua-safe name: {items}")  # not an assert: kept under python -O
    return ", ".join(f"'{i}'" for i in items)


class Script:
    """A script's source, with `fill`'s markers (Lua comments: `{--[[marker]]}`) replaced by the
    Lua text given for them: what Python holds and the script needs at every call, written into the
    script once rather than sent (and decoded) with every call."""

    def __init__(self, name: str, fill: dict[str, str] | None = None):
        self.name = name
        self.source = resources.files("dialguard.decision.lua").joinpath(f"{name}.lua").read_text()
        for marker, text in (fill or {}).items():
            m = "{--[[" + marker + "]]}"
            if self.source.count(m) != 1:
                raise ValueError(f"{name}.lua: marker {marker} not found exactly once")
            self.source = self.source.replace(m, "{" + text + "}")
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def load(self, redis) -> None:
        sha = await redis.script_load(self.source)
        assert sha == self.sha, f"{self.name}: Redis returned SHA {sha}, expected {self.sha}"

    async def __call__(self, redis, keys: list[str], args: list):
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load(redis)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)


# decide.lua's LIFTABLE_REASONS: the reasons an override may lift (SPEC §2)
@functools.lru_cache(maxsize=16)
def outcome_with(settings: str) -> Script:
    """outcome.lua with the health settings of the rules its caller runs with written in
    (dialguard.callerid_health.lua_settings; one script, one SHA, per settings)."""
    return Script("outcome", {"callerid_health.lua_settings": settings})


DECIDE = Script("decide", {"models.LIFTABLE": lua_strings(LIFTABLE)})
OUTCOME = Script("outcome")
EVENT = Script("event")
DNC = Script("dnc")
RULES = Script("rules")
CALENDARS = Script("calendars")
PENALTIES = Script("penalties")
ALL = (DECIDE, OUTCOME, EVENT, DNC, RULES, CALENDARS, PENALTIES)
