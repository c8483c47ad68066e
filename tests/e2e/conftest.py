"""Fixtures for the guard's end-to-end tests: an engine on the stack's live
store (the one the FastAGI server uses), the test clock, and campaigns that
are removed again afterwards."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from dialguard.config import Settings
from dialguard.engine import Engine
from dialguard.rules import Policy
from guard import WORKDAY_10H, caller_ids, tag


class Guard:
    """The live guard of the dev stack, as an admin and the tests see it."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.campaigns: list[str] = []
        self.clock: datetime | None = None

    async def set_clock(self, at: datetime | None) -> None:
        """Move the dev stack's rules clock (DIALGUARD_TEST_CLOCK=1 on its AGI server)."""
        self.clock = at
        await self.engine.set_test_clock(at)

    async def campaign(self, name: str = "", *, rules: Path | str | None = None, pool: int = 1,
                       pool_ids: list[str] | None = None) -> tuple[str, list[str]]:
        """A fresh approved campaign with `pool` new caller IDs in its own pool."""
        name = f"e2e-{name or 'c'}-{tag()}"
        await self.engine.set_campaign(name, True, rules=str(rules) if rules else None)
        ids = pool_ids if pool_ids is not None else caller_ids(pool)
        for cid in ids:
            await self.engine.approve_caller_id(cid, campaign=name)
        self.campaigns.append(name)
        return name, ids

    async def live_leases(self, caller_id: str) -> int:
        """Live-call leases of a caller ID at the test clock's time."""
        keys = self.engine.keys
        now = self.clock or datetime.now().astimezone()
        now_ms = int(now.timestamp() * 1000)
        return await self.engine.redis.zcount(keys.cid_live(keys.cid_tag(caller_id)), f"({now_ms}", "+inf")

    async def cleanup(self) -> None:
        keys = self.engine.keys
        for name in self.campaigns:
            await self.engine.redis.delete(keys.campaign(name), keys.pool(name))


@pytest.fixture
async def guard(redis_url, asterisk):
    """The live guard with its clock at WORKDAY_10H; clock and campaigns reset afterwards."""
    engine = await Engine.create(Settings(), Policy.load("cn-default"))
    g = Guard(engine)
    await g.set_clock(WORKDAY_10H)
    try:
        yield g
    finally:
        try:
            await engine.set_test_clock(None)
            await g.cleanup()
        finally:
            await engine.close()
