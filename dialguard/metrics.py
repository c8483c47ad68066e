"""Prometheus metrics and the health endpoint (issue 8).

Every long-running adapter (FastAGI server, dialer) serves ``/metrics``
(Prometheus text format) and ``/healthz`` with :class:`MetricsServer`.
Decisions are observed in one place, ``Engine.decide`` (:func:`observe`);
the gauges that need the store (audit backlog, live calls, healthy) are
refreshed by a background task every few seconds, never on the call path.
Caller IDs appear as labels (they are the call centre's own numbers); callee
numbers never do.

Using it from an adapter (the dialer does the same as ``agi/server.py``)::

    from dialguard import metrics

    srv = metrics.MetricsServer(
        "127.0.0.1", port,                                   # port 0: any free port (tests)
        health=lambda: metrics.engine_health(engine),        # -> (ok, detail)
        refresh=lambda: metrics.refresh_from_engine(engine), # gauges from Redis
        interval=5.0)
    await srv.start()            # srv.bound_port is the port it got
    ...
    metrics.set_abandon_rate("campaign-7", 0.021)            # a ratio 0..1, per campaign
    ...
    await srv.stop()

``health`` is any coroutine function returning ``(ok: bool, detail: str)``;
``/healthz`` answers 200 ``{"ok": true, "status": "ok", ...}`` or 503
``{"ok": false, "status": "down", ...}`` with the detail. ``degraded`` (optional)
is a coroutine function returning the reasons the node, though serving, needs
an operator soon (a calendar within 45 days of its end:
:func:`calendar_degraded`): then 200 ``{"status": "degraded", "degraded": [...]}``.
Each is given 2 s; a health function that raises or times out is a 503. ``refresh`` may
raise: the loop logs it and goes on. Start at most one MetricsServer per
process (the registry is process-wide).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder

from dialguard import cancel
from dialguard.decision.models import REASONS

log = logging.getLogger("dialguard.metrics")

# *_created series double the output and no dashboard or alert here uses them.
disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)

# Several FastAGI worker processes (agi/workers.py) set PROMETHEUS_MULTIPROC_DIR
# before starting: prometheus_client then keeps every value in files there and
# /metrics sums the workers' counters; each gauge says how its values combine.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# -- decisions (every adapter; observed in Engine.decide) ------------------------------
DECISIONS = Counter("dialguard_decisions_total", "Decisions by result", ["result"], registry=REGISTRY)
DENY_REASONS = Counter("dialguard_deny_reasons_total", "Denied decisions by reason (one per reason)",
                       ["reason"], registry=REGISTRY)
LATENCY = Histogram("dialguard_decision_latency_seconds", "Time to decide",
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
                    registry=REGISTRY)
REDIS_ERRORS = Counter("dialguard_redis_errors_total", "Decisions that found the store unavailable",
                       registry=REGISTRY)
# DIALGUARD_REDIS_WAIT_REPLICAS: the decision plus WAIT for the replicas (an ALLOW
# only), and the ALLOWs turned into denials because too few replicas acknowledged.
REPLICA_WAIT = Histogram("dialguard_replica_wait_seconds",
                         "Decision script plus WAIT for the replicas' acknowledgement (ALLOWs only)",
                         buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
                         registry=REGISTRY)
REPLICA_UNACKED = Counter("dialguard_replica_unacked_total",
                          "ALLOWs denied because too few replicas acknowledged in time", registry=REGISTRY)

# -- gauges refreshed from the store -----------------------------------------------------
AUDIT_BACKLOG = Gauge("dialguard_audit_backlog", "Audit records waiting in Redis for PostgreSQL",
                      registry=REGISTRY, multiprocess_mode="mostrecent")
AUDIT_SPOOL_FILES = Gauge("dialguard_audit_spool_files",
                          "Files of this host's local audit spool (decisions denied while Redis was down) "
                          "waiting for audit-ship", registry=REGISTRY, multiprocess_mode="mostrecent")
AUDIT_SPOOL_DROPPED = Gauge("dialguard_audit_spool_dropped",
                            "Audit records this process could not spool (spool full) since it started: "
                            "records missing from the audit", registry=REGISTRY, multiprocess_mode="sum")
LIVE_CALLS = Gauge("dialguard_live_calls", "Live calls holding a lease, per caller ID", ["caller_id"],
                   registry=REGISTRY, multiprocess_mode="mostrecent")
ABANDON_RATE = Gauge("dialguard_abandon_rate", "Abandoned / live-answered calls, per campaign (0..1)",
                     ["campaign"], registry=REGISTRY, multiprocess_mode="mostrecent")
# caller-ID health (dialguard/callerid_health.py), per caller ID of the pools
CID_CALLS = Gauge("dialguard_callerid_health_calls", "Outcomes in the caller ID's health window",
                  ["caller_id"], registry=REGISTRY, multiprocess_mode="mostrecent")
CID_ANSWER_RATE = Gauge("dialguard_callerid_answer_rate", "Answered / calls in the health window (0..1)",
                        ["caller_id"], registry=REGISTRY, multiprocess_mode="mostrecent")
CID_SHORT_RATE = Gauge("dialguard_callerid_short_answer_rate",
                       "Answered calls with talk under the short-answer threshold / answered (0..1)",
                       ["caller_id"], registry=REGISTRY, multiprocess_mode="mostrecent")
CID_REJECTION_RATE = Gauge("dialguard_callerid_rejection_rate",
                           "Carrier rejections (SIP 403/603..., Q.850 21) / calls in the health window (0..1)",
                           ["caller_id"], registry=REGISTRY, multiprocess_mode="mostrecent")
CID_REJECTION_RUN = Gauge("dialguard_callerid_rejection_run", "Consecutive carrier rejections, newest first",
                          ["caller_id"], registry=REGISTRY, multiprocess_mode="mostrecent")
CID_COMPLAINTS = Gauge("dialguard_callerid_complaints_per_1000",
                       "Complaints on numbers it last called, per 1,000 calls in the health window",
                       ["caller_id"], registry=REGISTRY, multiprocess_mode="mostrecent")
CID_OPTOUTS = Gauge("dialguard_callerid_optouts_per_1000",
                    "Opt-outs on numbers it last called, per 1,000 calls in the health window",
                    ["caller_id"], registry=REGISTRY, multiprocess_mode="mostrecent")
CID_COOLING = Gauge("dialguard_callerid_cooling_down", "1 while the caller ID is cooling down",
                    ["caller_id"], registry=REGISTRY, multiprocess_mode="mostrecent")
HEALTH_COOLDOWNS = Counter("dialguard_callerid_health_cooldowns_total",
                           "Caller IDs cooled down by a health rule (pack/rule)", ["rule"], registry=REGISTRY)
HEALTH_ERRORS = Counter("dialguard_callerid_health_errors_total",
                        "Outcomes applied whose caller-ID health part failed in Redis (logged with the error; "
                        "the next outcome of that caller ID recomputes its figures)", registry=REGISTRY)
_CID_GAUGES = (CID_CALLS, CID_ANSWER_RATE, CID_SHORT_RATE, CID_REJECTION_RATE, CID_REJECTION_RUN, CID_COMPLAINTS,
               CID_OPTOUTS, CID_COOLING)
UP = Gauge("dialguard_healthy", "1 when the store answers PING within the decision deadline",
           registry=REGISTRY, multiprocess_mode="mostrecent")
CALENDAR_KNOWN = Gauge("dialguard_calendar_known_seconds",
                       "Seconds until the end of the last day each calendar the rules use is known "
                       "(negative once past; /healthz is degraded from 45 days before)", ["calendar"],
                       registry=REGISTRY, multiprocess_mode="min")
LAST_REFRESH = Gauge("dialguard_metrics_refresh_timestamp_seconds",
                     "When the store-backed gauges were last refreshed successfully (unix time)",
                     registry=REGISTRY, multiprocess_mode="max")

# -- FastAGI server ----------------------------------------------------------------------
AGI_RESULTS = ("ok", "malformed", "timeout", "refused", "evicted", "error")
AGI_SESSIONS = Counter("dialguard_agi_sessions_total",
                       "FastAGI sessions by result (ok, malformed, timeout, refused, evicted, error)", ["result"],
                       registry=REGISTRY)
AGI_REFUSED = Counter("dialguard_agi_refused_total",
                      "FastAGI connections refused, by reason (allowlist, max_sessions, shutting_down)",
                      ["reason"], registry=REGISTRY)
AGI_EVICTED = Counter("dialguard_agi_evicted_total",
                      "FastAGI connections closed before their environment block to make room, by reason "
                      "(table_full, source_limit)", ["reason"], registry=REGISTRY)
AGI_HANDLER_ERRORS = Counter("dialguard_agi_handler_errors_total",
                             "FastAGI handlers that raised or ran past the deadline (the channel is left "
                             "fail-closed)", ["script", "kind"], registry=REGISTRY)
AGI_ACTIVE = Gauge("dialguard_agi_sessions_active", "FastAGI sessions in progress", registry=REGISTRY,
                   multiprocess_mode="livesum")

for _r in ("allow", "deny"):
    DECISIONS.labels(_r)
for _r in REASONS:
    DENY_REASONS.labels(_r)
for _r in AGI_RESULTS:
    AGI_SESSIONS.labels(_r)
for _r in ("allowlist", "max_sessions", "shutting_down"):
    AGI_REFUSED.labels(_r)
for _r in ("table_full", "source_limit"):
    AGI_EVICTED.labels(_r)


# The children created above, looked up once: labels() costs more than inc()
# on the decision path. A label not listed here still goes through labels().
_DECISION_CHILD = {r: DECISIONS.labels(r) for r in ("allow", "deny")}
_REASON_CHILD = {r: DENY_REASONS.labels(r) for r in REASONS}


def observe(decision) -> None:
    """Record one decision (allow/deny, each deny reason, latency)."""
    d = decision.decision
    (_DECISION_CHILD.get(d) or DECISIONS.labels(d)).inc()
    for r in decision.reasons:
        (_REASON_CHILD.get(r) or DENY_REASONS.labels(r)).inc()
        if r == "guard_unavailable":
            REDIS_ERRORS.inc()
    LATENCY.observe(decision.latency_ms / 1000)


def observe_replica_wait(seconds: float) -> None:
    """One ALLOW's decision script + WAIT round trip."""
    REPLICA_WAIT.observe(seconds)


def observe_replica_unacked() -> None:
    REPLICA_UNACKED.inc()


def set_abandon_rate(campaign: str, value: float) -> None:
    """The dialer's abandon rate for a campaign, as a ratio (0.03 = 3 %)."""
    ABANDON_RATE.labels(campaign).set(float(value))


# Session outcomes logged by agi.runner -> the result label.
_AGI_OK = frozenset({"allow", "deny", "reported", "recorded", "skipped"})
_AGI_MALFORMED = frozenset({"protocol_error", "unknown_script"})


def agi_session_result(fields: dict) -> str:
    """The result label of one finished FastAGI session, from its log fields."""
    failure = fields.get("failure")
    if fields.get("outcome") == "evicted":
        return "evicted"
    if failure == "timeout" or fields.get("outcome") == "timeout":
        return "timeout"
    if failure == "protocol" or fields.get("outcome") in _AGI_MALFORMED:
        return "malformed"
    if failure or fields.get("outcome") not in _AGI_OK:
        return "error"
    return "ok"


_AGI_SESSION_CHILD = {r: AGI_SESSIONS.labels(r) for r in AGI_RESULTS}


def observe_agi_session(fields: dict) -> None:
    """Count one finished FastAGI session (and its handler error, if any)."""
    failure = fields.get("failure")
    if failure is None and fields.get("outcome") in _AGI_OK:  # the usual session, without labels()
        _AGI_SESSION_CHILD["ok"].inc()
        return
    AGI_SESSIONS.labels(agi_session_result(fields)).inc()
    if failure in ("timeout", "error"):
        AGI_HANDLER_ERRORS.labels(fields.get("script") or "unknown", failure).inc()


def observe_agi_evicted(reason: str) -> None:
    AGI_EVICTED.labels(reason).inc()


def observe_agi_refused(reason: str) -> None:
    AGI_SESSIONS.labels("refused").inc()
    AGI_REFUSED.labels(reason).inc()


# -- the store ---------------------------------------------------------------------------
async def ping(engine) -> None:
    """PING through the client decisions use, within the decision deadline."""
    fast = getattr(engine, "fast", None)
    if fast is not None:
        await fast.execute("PING")  # its default deadline is the decision deadline
    else:
        async with asyncio.timeout(max(engine.timeout, 0.05)):
            await engine.redis.ping()


async def engine_health(engine) -> tuple[bool, str]:
    """(True, "...") when the store answers PING within the decision deadline."""
    try:
        await ping(engine)
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        UP.set(0)
        return False, f"Redis did not answer PING within {engine.timeout * 1000:.0f} ms: " \
                      f"{type(exc).__name__}{': ' + str(exc) if str(exc) else ''}"
    UP.set(1)
    return True, "Redis answers"


def _refresh_spool(spool) -> None:
    """The local spool (dialguard/audit/spool.py), when the engine has one."""
    if spool is None:
        return
    dropped = getattr(spool, "dropped", None)
    if isinstance(dropped, int):
        AUDIT_SPOOL_DROPPED.set(dropped)
    directory = getattr(spool, "dir", None)
    if directory is not None:
        from dialguard.audit.spool import pending

        # this process's key prefix only (another namespace's files are not its backlog)
        AUDIT_SPOOL_FILES.set(pending(directory, getattr(spool, "prefix", None)))


_campaigns_seen: set[str] = set()


async def _pool_caller_ids(engine) -> set[str]:
    """Caller IDs in the pools the engine knows: its rules' pool, the global
    pool in Redis (`dialguard callerid add`) and the pools of every campaign it
    has decided for since it started (read from Redis, opened with its key)."""
    _campaigns_seen.update(getattr(engine, "_ctx_cache", {}).keys())
    seen = set(engine.policy.caller_id_pool)
    campaigns = sorted(_campaigns_seen)
    async with engine.redis.pipeline(transaction=False) as pipe:
        pipe.hvals(engine.keys.pool(None))
        for c in campaigns:
            pipe.hvals(engine.keys.pool(c))
        pools = await pipe.execute()
    for pool in pools:
        for token in pool:
            try:
                seen.add(engine.sealer.open(token.decode()))
            except Exception:  # noqa: BLE001 - sealed with another key: the engine logs it
                continue
    return seen


_live_labels: set[str] = set()


async def _refresh_caller_ids(engine, cids: list[str], now_ms: int, timeout: float) -> None:
    from dialguard.callerid_health import read_health

    async with asyncio.timeout(timeout):
        for i in range(0, len(cids), HEALTH_CHUNK):
            chunk = cids[i:i + HEALTH_CHUNK]
            async with engine.redis.pipeline(transaction=False) as pipe:
                for cid in chunk:
                    # as decide.lua counts them: a lease ends at its score
                    pipe.zcount(engine.keys.cid_live(engine.keys.cid_tag(cid)), f"({now_ms}", "+inf")
                counts = await pipe.execute()
            for cid, n in zip(chunk, counts):
                LIVE_CALLS.labels(cid).set(n)
            for row in await read_health(engine, chunk, now_ms):
                cid, f = row["caller_id"], row["figures"]
                CID_CALLS.labels(cid).set(f["calls"])
                CID_ANSWER_RATE.labels(cid).set(f["answer_rate"])
                CID_SHORT_RATE.labels(cid).set(f["short_answer_rate"])
                CID_REJECTION_RATE.labels(cid).set(f["rejection_rate"])
                CID_REJECTION_RUN.labels(cid).set(f["run"])
                CID_COMPLAINTS.labels(cid).set(f["complaints_per_1000"])
                CID_OPTOUTS.labels(cid).set(f["optouts_per_1000"])
                CID_COOLING.labels(cid).set(1 if row["cooldown_until"] else 0)
            await asyncio.sleep(0)  # the calls waiting on this loop go first
    # caller IDs that left every pool stop being reported
    for gone in _live_labels.difference(cids):
        LIVE_CALLS.remove(gone)
        for g in _CID_GAUGES:
            try:
                g.remove(gone)
            except KeyError:
                pass
    _live_labels.clear()
    _live_labels.update(cids)


# Caller IDs whose health figures one step of the refresh computes before it lets the
# event loop run again: the FastAGI server answers calls on the same loop, and a pool
# of 200 caller IDs with 100 outcomes each took 38-61 ms of CPU in one stretch every
# 5 s (measured 2026-12-05): every check arriving meanwhile waited for it.
HEALTH_CHUNK = 8
# The FastAGI server computes the caller-ID gauges at every sixth refresh of
# its gauges (30 s at the default 5 s --metrics-interval). A 200-number pool
# cost it about 60 ms of CPU a refresh, 12 ms a second at the 5 s interval: 7 %
# of its CPU at 300 checks/s (py-spy, 2026-12-05), for figures that move with
# outcomes over windows of calls. The dialer (ari_app) refreshes them at each of its own.
CALLER_ID_GAUGES_EVERY = 6


async def refresh_from_engine(engine, timeout: float = 3.0, caller_ids: bool = True) -> bool:
    """Refresh the store-backed gauges; returns whether the store answered.

    Never raises: a store that is down sets dialguard_healthy to 0 and leaves
    the other gauges at their last values (their timestamp stops moving). The
    caller-ID gauges are computed HEALTH_CHUNK caller IDs at a time, the loop
    free between two chunks; `caller_ids=False` leaves them as they are (the
    FastAGI server computes them less often: CALLER_ID_GAUGES_EVERY).
    """
    cids: list[str] = []
    now_ms = 0
    try:
        async with asyncio.timeout(timeout):
            await ping(engine)
            AUDIT_BACKLOG.set(await engine.redis.xlen(engine.keys.audit))
            if caller_ids:
                cids = sorted(await _pool_caller_ids(engine))
                now_ms = int((await engine.now()).timestamp() * 1000) if cids else 0
        UP.set(1)
        ok = True
        LAST_REFRESH.set(time.time())
    except Exception as exc:  # noqa: BLE001 - health reports it, never raises
        log.warning("metrics refresh failed: %r", exc)
        UP.set(0)
        ok = False
    if ok and caller_ids:
        try:  # a store that answered the ping: the caller-ID gauges, a chunk at a time
            await _refresh_caller_ids(engine, cids, now_ms, timeout * 10)
        except Exception as exc:  # noqa: BLE001 - gauges left at their last values
            log.warning("metrics: caller-ID gauges not refreshed: %r", exc)
    if ok:
        try:  # rules that cannot be read say nothing about the store: logged, not "unhealthy"
            async with asyncio.timeout(timeout):
                set_calendar_known(await calendar_status(engine))
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: calendars unknown: %r", exc)
    try:  # the spool is local: readable whatever Redis does
        _refresh_spool(getattr(engine, "spool", None))
    except Exception as exc:  # noqa: BLE001
        log.warning("metrics: spool backlog unreadable: %r", exc)
    return ok


# -- calendars: until when each one the rules use is known (dialguard/calendar_expiry.py) ----
async def policies_in_effect(engine) -> list:
    """The node's configured rules, the published version in effect and the
    rules of campaigns that name their own (those it has decided for)."""
    if getattr(engine, "policy", None) is None:
        return []  # an engine stand-in without rules (protocol tests)
    policies = [engine.policy]
    if getattr(engine, "versioned", False):
        active = await engine.redis.hget(engine.keys.rules, "active")
        if active:
            policies.append(await engine._version(active.decode()))
    policies.extend(getattr(engine, "_policies", {}).values())
    return policies


async def imported_calendar_years(engine) -> dict[str, set[int]]:
    """Calendar code -> the years of the calendar version in effect (`dialguard
    calendar import`): imported years extend how long a calendar is known.

    Reads ``engine.calendars()`` (the active calendar version: ``codes`` and
    ``years(code)``, dialguard/calendars.py); an engine without imported
    calendars has none, and the packages alone say how long a calendar is known.
    """
    get = getattr(engine, "calendars", None)
    if get is None:
        return {}
    cals = await get()
    return {code: set(cals.years(code)) for code in cals.codes}


async def calendar_status(engine, now=None) -> list:
    """How long every calendar the rules in effect use is known, at `now`
    (default: the engine's clock, the test clock when set)."""
    from dialguard.calendar_expiry import calendars_known

    policies = await policies_in_effect(engine)
    if not policies:
        return []
    now = now or await engine.now()
    return calendars_known(policies, now, await imported_calendar_years(engine))


_calendar_labels: set[str] = set()


def set_calendar_known(known) -> None:
    """The gauge from a calendars_known() answer; calendars no longer used are dropped."""
    codes = {k.calendar for k in known}
    for k in known:
        CALENDAR_KNOWN.labels(k.calendar).set(k.seconds_left)
    for gone in _calendar_labels - codes:
        CALENDAR_KNOWN.remove(gone)
    _calendar_labels.clear()
    _calendar_labels.update(codes)


async def calendar_degraded(engine) -> list[str]:
    """/healthz: why this node is degraded (a calendar within 45 days of its end), or []."""
    from dialguard.calendar_expiry import warnings

    known = await calendar_status(engine)
    set_calendar_known(known)
    return warnings(known)


def exposed_registry() -> CollectorRegistry:
    """What /metrics shows: this process's registry, or in multiprocess mode
    every worker's values combined (read from PROMETHEUS_MULTIPROC_DIR)."""
    if not MULTIPROCESS:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


class MetricsServer:
    """``/metrics`` (Prometheus text) and ``/healthz`` (200 ok / 503 with the reason).

    ``health``: coroutine function -> (ok, detail). ``refresh``: coroutine
    function run every ``interval`` seconds in the background (first run at
    start). ``degraded``: coroutine function -> reasons (200 "degraded" when
    any). API kept stable for every adapter (see the module docstring).
    """

    def __init__(self, host: str, port: int, health: Callable[[], Awaitable[tuple[bool, str]]],
                 refresh: Callable[[], Awaitable[object]] | None = None, interval: float = 5.0,
                 degraded: Callable[[], Awaitable[list[str]]] | None = None):
        self.host, self.port = host, port
        self.health = health
        self.degraded = degraded
        self.refresh = refresh
        self.interval = interval
        self._runner = None
        self._task: asyncio.Task | None = None
        self.bound_port: int | None = None

    async def start(self) -> None:
        from aiohttp import web

        async def metrics(request):
            # the format the scraper asks for (Prometheus text or OpenMetrics)
            encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
            return web.Response(body=encoder(exposed_registry()), headers={"Content-Type": content_type})

        async def healthz(_request):
            try:
                ok, why = await cancel.within(2.0, self.health())
            except Exception as exc:  # noqa: BLE001
                ok, why = False, f"health check failed: {exc!r}"
            body = {"ok": ok, "status": "ok" if ok else "down", "detail": why, "time": time.time()}
            if ok and self.degraded is not None:
                # still serving (200), but something needs an operator soon
                try:
                    reasons = await cancel.within(2.0, self.degraded())
                except Exception as exc:  # noqa: BLE001
                    reasons = [f"degraded check failed: {exc!r}"]
                if reasons:
                    body.update(status="degraded", degraded=list(reasons))
            return web.json_response(body, status=200 if ok else 503)

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.bound_port = site._server.sockets[0].getsockname()[1]
        if self.refresh:
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        # until stop() sets _stopping: its cancel alone would not end a loop whose
        # refresh swallowed it (caught it, or a library did: dialguard/cancel.py)
        while not self._stopping.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001
                log.warning("metrics refresh: %r", exc)
            await cancel.wait_event(self._stopping, self.interval)

    async def stop(self) -> None:
        task, self._task = self._task, None
        try:
            if task:
                self._stopping.set()
                task.cancel()
                # the loop's end, whatever it is; a cancel of stop()'s caller goes on to
                # it (an `except CancelledError` around `await task` would swallow it)
                await asyncio.wait([task])
        finally:
            if self._runner:
                await self._runner.cleanup()
                self._runner = None
