"""Prometheus metrics and the health endpoint (issue 8).

Every adapter (FastAGI server, dialer) serves `/metrics` and `/healthz` with
`MetricsServer`; decisions are observed in one place, `Engine.decide`.
Caller IDs appear as labels (they are the call centre's own numbers); callee
numbers never do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("dialguard.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)

DECISIONS = Counter("dialguard_decisions_total", "Decisions by result", ["result"], registry=REGISTRY)
DENY_REASONS = Counter("dialguard_deny_reasons_total", "Denied decisions by reason (one per reason)",
                       ["reason"], registry=REGISTRY)
LATENCY = Histogram("dialguard_decision_latency_seconds", "Time to decide",
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
                    registry=REGISTRY)
REDIS_ERRORS = Counter("dialguard_redis_errors_total", "Decisions that found the store unavailable",
                       registry=REGISTRY)
AUDIT_BACKLOG = Gauge("dialguard_audit_backlog", "Audit records waiting in Redis for PostgreSQL",
                      registry=REGISTRY)
LIVE_CALLS = Gauge("dialguard_live_calls", "Live calls holding a lease, per caller ID", ["caller_id"],
                   registry=REGISTRY)
ABANDON_RATE = Gauge("dialguard_abandon_rate", "Abandoned / live-answered calls today, per campaign",
                     ["campaign"], registry=REGISTRY)
UP = Gauge("dialguard_healthy", "1 when the store answers", registry=REGISTRY)


def observe(decision) -> None:
    """Record one decision (allow/deny, each deny reason, latency)."""
    DECISIONS.labels(decision.decision).inc()
    for r in decision.reasons:
        DENY_REASONS.labels(r).inc()
        if r == "guard_unavailable":
            REDIS_ERRORS.inc()
    LATENCY.observe(decision.latency_ms / 1000)


async def refresh_from_engine(engine) -> bool:
    """Gauges read from the store; returns whether the store answered."""
    try:
        r = engine.redis
        AUDIT_BACKLOG.set(await r.xlen(engine.keys.audit))
        ctx = engine._ctx_cache  # caller IDs the engine has seen in pools
        seen = {c for _, _, pool in ctx.values() for c in pool} | set(engine.policy.caller_id_pool)
        for cid in seen:
            LIVE_CALLS.labels(cid).set(await engine.live_calls(cid))
        UP.set(1)
        return True
    except Exception as exc:  # noqa: BLE001 - health reports it, never raises
        log.warning("metrics refresh failed: %r", exc)
        UP.set(0)
        return False


class MetricsServer:
    """`/metrics` (Prometheus text) and `/healthz` (200 ok / 503 with the reason)."""

    def __init__(self, host: str, port: int, health: Callable[[], Awaitable[tuple[bool, str]]],
                 refresh: Callable[[], Awaitable[object]] | None = None, interval: float = 5.0):
        self.host, self.port = host, port
        self.health = health
        self.refresh = refresh
        self.interval = interval
        self._runner = None
        self._task: asyncio.Task | None = None
        self.bound_port: int | None = None

    async def start(self) -> None:
        from aiohttp import web

        async def metrics(_request):
            return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_request):
            try:
                ok, why = await asyncio.wait_for(self.health(), 2.0)
            except Exception as exc:  # noqa: BLE001
                ok, why = False, f"health check failed: {exc!r}"
            return web.json_response({"ok": ok, "detail": why, "time": time.time()}, status=200 if ok else 503)

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.bound_port = site._server.sockets[0].getsockname()[1]
        if self.refresh:
            self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001
                log.warning("metrics refresh: %r", exc)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._runner:
            await self._runner.cleanup()
