"""Getting an engine for the handlers, and never dying for want of one.

The server starts even when Redis is down: handlers then get
:class:`EngineUnavailable` (``check`` answers DENY guard_unavailable) and the
provider tries again, at most once per ``retry_s``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from typing import Any, Awaitable, Callable

from dialguard import cancel

log = logging.getLogger("dialguard.agi")

EngineFactory = Callable[[], Awaitable[Any]]
FACTORY_ENV = "DIALGUARD_AGI_ENGINE_FACTORY"


class EngineUnavailable(RuntimeError):
    pass


async def default_factory():
    from dialguard.config import Settings
    from dialguard.engine import Engine

    return await Engine.create(Settings())


def load_factory(spec: str | None = None) -> EngineFactory:
    """``module:callable`` returning an awaitable engine; the default is the real
    engine. Tests point this at a fake (``fakes.engine:fake_engine_factory``, tests/fakes/)."""
    spec = spec or os.environ.get(FACTORY_ENV) or ""
    if not spec:
        return default_factory
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"engine factory must be module:callable, not {spec!r}")
    obj = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class EngineProvider:
    def __init__(self, factory: EngineFactory | None = None, *, engine: Any = None,
                 retry_s: float = 1.0, create_timeout_s: float = 3.0):
        self.factory = factory or default_factory
        self.engine = engine
        self.retry_s = retry_s
        self.create_timeout_s = create_timeout_s
        self._lock = asyncio.Lock()
        self._failed_at: float | None = None
        self._last_error: str | None = None

    async def get(self, create_timeout_s: float | None = None):
        if self.engine is not None:
            return self.engine
        async with self._lock:
            if self.engine is not None:
                return self.engine
            if self._failed_at is not None and time.monotonic() - self._failed_at < self.retry_s:
                raise EngineUnavailable(self._last_error or "engine unavailable")
            try:
                self.engine = await cancel.within(create_timeout_s or self.create_timeout_s, self.factory())
            except Exception as exc:
                self._failed_at = time.monotonic()
                self._last_error = f"engine could not start: {exc!r}"
                log.error(self._last_error)
                raise EngineUnavailable(self._last_error) from exc
            self._failed_at = None
            # where it reaches Redis (TCP, a Unix socket, Sentinel), never the password
            settings = getattr(self.engine, "settings", None)
            log.info("engine ready", extra={"fields": {
                "event": "engine_ready", "redis": settings.redis_where() if settings is not None else None}})
            return self.engine

    async def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None and hasattr(engine, "close"):
            try:
                await engine.close()
            except Exception as exc:
                log.warning("engine close failed: %r", exc)
