"""Lua scripts from dialguard/decision/lua: loaded once, called by SHA.

If Redis lost its script cache (restart, SCRIPT FLUSH, failover), EVALSHA
answers NOSCRIPT; we load the script again and retry once.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from redis.exceptions import NoScriptError


class Script:
    def __init__(self, name: str):
        self.name = name
        self.source = resources.files("dialguard.decision.lua").joinpath(f"{name}.lua").read_text()
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


DECIDE = Script("decide")
OUTCOME = Script("outcome")
EVENT = Script("event")
DNC = Script("dnc")
RULES = Script("rules")
CALENDARS = Script("calendars")
PENALTIES = Script("penalties")
ALL = (DECIDE, OUTCOME, EVENT, DNC, RULES, CALENDARS, PENALTIES)
