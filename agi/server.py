"""FastAGI server: ``dialguard-agi-server`` (entry point ``agi.server:main``).

Asterisk connects for each ``AGI(agi://HOST:PORT/NAME,...)``; the handler
registered as NAME runs (see :mod:`agi.handlers`). Binds 127.0.0.1 by default;
``--allow`` restricts clients to CIDRs. One malformed or hostile session is
logged and closed and never yields ALLOW; nothing a client sends stops the
server. SIGTERM/SIGINT: stop accepting, let sessions in flight finish (up to
the session timeout), then exit.

``--workers N`` (DIALGUARD_AGI_WORKERS; 0, the default = half the CPUs): N server processes
accept on one listening socket bound by a supervising parent (the pid to
signal; see :mod:`agi.workers`), so one Python process is not the ceiling.
Every worker has its own engine; all share Redis, so caps hold across them.

With ``metrics_port`` set (``--metrics-port``, DIALGUARD_METRICS_PORT; 0 or
empty disables) the server also serves ``/metrics`` and ``/healthz`` over
HTTP (:mod:`dialguard.metrics`), started and stopped with it. ``/healthz`` is
200 when the server accepts sessions and Redis answers PING within the
decision deadline, else 503 with the reason. Settings come from the
environment first, then the config file (DIALGUARD_CONFIG), then defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys

from dialguard import metrics
from dialguard.config import ConfigError, Settings, require_secrets
from dialguard.config import _env as _config_value

from . import protocol as p
from .engines import EngineProvider, EngineUnavailable, load_factory
from .handlers import Handler, Options, load_builtin
from .logs import setup_logging
from .runner import run_session

log = logging.getLogger("dialguard.agi")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 14573

WARMUP_TIMEOUT_S = 20.0

_REFUSED = {"shutting down": "shutting_down", "client address not allowed": "allowlist",
            "too many sessions": "max_sessions"}


def parse_networks(values) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for v in values or ():
        if isinstance(v, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            nets.append(v)
            continue
        for part in str(v).split(","):
            part = part.strip()
            if part:
                nets.append(ipaddress.ip_network(part, strict=False))
    return nets


class FastAGIServer:
    def __init__(self, engines: EngineProvider, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 allow=None, session_timeout: float = 5.0, max_sessions: int = 2000,
                 options: Options | None = None, handlers: dict[str, Handler] | None = None,
                 max_line_bytes: int = p.MAX_LINE_BYTES, max_env_lines: int = p.MAX_ENV_LINES,
                 metrics_host: str = DEFAULT_HOST, metrics_port: int | None = None,
                 metrics_interval: float = 5.0, sock=None):
        self.engines = engines
        self.host = host
        self.port = port
        self.allow = parse_networks(allow)
        self.session_timeout = session_timeout
        self.max_sessions = max_sessions
        self.options = options or Options()
        self.handlers = handlers if handlers is not None else load_builtin()
        self.max_line_bytes = max_line_bytes
        self.max_env_lines = max_env_lines
        self._server: asyncio.base_events.Server | None = None
        self._active: set[asyncio.Task] = set()
        self._closing = False
        self._bound_port: int | None = None
        self.stats = {"sessions": 0, "refused": 0}
        self.metrics_host = metrics_host
        self.metrics_port = metrics_port  # None or 0: no HTTP endpoint
        self.metrics_interval = metrics_interval
        self.metrics_server: metrics.MetricsServer | None = None
        self.sock = sock  # a listening socket shared by the workers (--workers N)
        self._refresh_task: asyncio.Task | None = None

    @property
    def bound_port(self) -> int:
        assert self._bound_port is not None, "not started"
        return self._bound_port

    def allowed(self, host: str) -> bool:
        if not self.allow:
            return True
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        candidates = [addr]
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            candidates.append(addr.ipv4_mapped)
        return any(a in net for a in candidates for net in self.allow if a.version == net.version)

    async def start(self) -> None:
        if self.sock is not None:
            self._server = await asyncio.start_server(
                self._on_connect, sock=self.sock, limit=self.max_line_bytes, backlog=1024)
        else:
            self._server = await asyncio.start_server(
                self._on_connect, self.host, self.port, limit=self.max_line_bytes,
                reuse_address=True, backlog=1024)
        self._bound_port = self._server.sockets[0].getsockname()[1]
        log.info("listening", extra={"fields": {
            "event": "agi_listening", "host": self.host, "port": self.bound_port,
            "allow": [str(n) for n in self.allow], "handlers": sorted(self.handlers),
            "session_timeout_s": self.session_timeout}})
        if self.metrics_port:
            await self._start_metrics()
        elif metrics.MULTIPROCESS:
            # Another worker serves /metrics; this one still keeps its share of
            # the gauges current (its spool's dropped records).
            self._refresh_task = asyncio.create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while True:
            await self.refresh_metrics()
            await asyncio.sleep(self.metrics_interval)

    async def _start_metrics(self) -> None:
        srv = metrics.MetricsServer(self.metrics_host, self.metrics_port, self.health,
                                    refresh=self.refresh_metrics, interval=self.metrics_interval)
        try:
            await srv.start()
        except OSError as exc:
            # The call path matters more than its dashboard: keep serving AGI;
            # Prometheus sees the target down.
            log.error("metrics endpoint not started: %s", exc, extra={"fields": {
                "event": "metrics_bind_failed", "host": self.metrics_host, "port": self.metrics_port}})
            return
        self.metrics_server = srv
        log.info("metrics listening", extra={"fields": {
            "event": "metrics_listening", "host": self.metrics_host, "port": srv.bound_port}})

    async def health(self) -> tuple[bool, str]:
        """/healthz: accepting sessions and Redis answering PING within the deadline."""
        if self._server is None or self._closing:
            metrics.UP.set(0)
            return False, "not accepting sessions (shutting down)" if self._closing else "not started"
        try:
            engine = await self.engines.get()
        except EngineUnavailable as exc:
            metrics.UP.set(0)
            return False, str(exc)
        ok, detail = await metrics.engine_health(engine)
        return ok, (f"accepting sessions on port {self.bound_port}; {detail}" if ok else detail)

    async def refresh_metrics(self) -> bool:
        """Background gauges (never on the call path; never raises)."""
        try:
            engine = await self.engines.get()
        except EngineUnavailable:
            metrics.UP.set(0)
            return False
        return await metrics.refresh_from_engine(engine)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_host = peer[0] if isinstance(peer, tuple) else str(peer)
        fields = {"event": "agi_session", "peer": f"{peer_host}:{peer[1]}" if isinstance(peer, tuple) else peer_host}
        refused = None
        if self._closing:
            refused = "shutting down"
        elif not self.allowed(peer_host):
            refused = "client address not allowed"
        elif len(self._active) >= self.max_sessions:
            refused = "too many sessions"
        if refused:
            self.stats["refused"] += 1
            metrics.observe_agi_refused(_REFUSED[refused])
            fields.update(outcome="refused", error=refused)
            log.warning("agi session refused", extra={"fields": fields})
            writer.transport.abort()
            return
        task = asyncio.current_task()
        self._active.add(task)
        self.stats["sessions"] += 1
        metrics.AGI_ACTIVE.inc()
        try:
            await run_session(reader, writer, handlers=self.handlers, engines=self.engines,
                              options=self.options, timeout_s=self.session_timeout,
                              fields=fields, max_line_bytes=self.max_line_bytes,
                              max_env_lines=self.max_env_lines)
        except Exception:  # run_session does not raise; belt and braces
            log.exception("session crashed", extra={"fields": fields})
            fields["outcome"] = "crashed"
        finally:
            metrics.AGI_ACTIVE.dec()
            metrics.observe_agi_session(fields)
            self._active.discard(task)
            try:
                writer.close()
                # Nothing left to send (the usual case): the transport closes
                # now, no need to wait for it (a timer and a loop turn a session).
                if writer.transport.get_write_buffer_size():
                    async with asyncio.timeout(1.0):
                        await writer.wait_closed()
            except Exception:
                writer.transport.abort()

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stop accepting, then wait for the sessions in flight (cancelled after grace)."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        pending = set(self._active)
        if pending:
            log.info("waiting for %d sessions in flight", len(pending))
            done, pending = await asyncio.wait(pending, timeout=grace_s if grace_s is not None
                                               else self.session_timeout + 1.0)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            self._refresh_task = None
        log.info("stopped", extra={"fields": {"event": "agi_stopped", **self.stats}})


def _env(name: str, default):
    """The environment first, then the config file (DIALGUARD_CONFIG), then the default."""
    return _config_value(name, str(default))


def _port_or_off(text: str) -> int:
    """A metrics port; 0 or empty disables the endpoint."""
    text = str(text).strip()
    if text in ("", "0"):
        return 0
    n = int(text)
    if not 0 < n < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="dialguard-agi-server",
        description="dialguard FastAGI server: the compliance check (and outcome, opt-out, "
                    "complaint reports) for Asterisk dialplans, AGI(agi://HOST:PORT/NAME,...).")
    ap.add_argument("--host", default=_env("DIALGUARD_AGI_HOST", DEFAULT_HOST),
                    help="address to bind (env DIALGUARD_AGI_HOST, default %(default)s)")
    ap.add_argument("--port", type=int, default=int(_env("DIALGUARD_AGI_PORT", DEFAULT_PORT)),
                    help="port (env DIALGUARD_AGI_PORT, default %(default)s)")
    ap.add_argument("--allow", nargs="*", metavar="CIDR",
                    default=[s for s in _env("DIALGUARD_AGI_ALLOW", "").split(",") if s.strip()],
                    help="client networks allowed to connect (env DIALGUARD_AGI_ALLOW, comma-separated; "
                         "default: any client that can reach the bound address)")
    ap.add_argument("--session-timeout", type=float,
                    default=float(_env("DIALGUARD_AGI_SESSION_TIMEOUT", "5")),
                    help="seconds one session may last (env DIALGUARD_AGI_SESSION_TIMEOUT, default %(default)s)")
    ap.add_argument("--engine-timeout", type=float,
                    default=float(_env("DIALGUARD_AGI_ENGINE_TIMEOUT", "2")),
                    help="seconds one engine call may take (env DIALGUARD_AGI_ENGINE_TIMEOUT, default %(default)s)")
    ap.add_argument("--max-sessions", type=int, default=int(_env("DIALGUARD_AGI_MAX_SESSIONS", "2000")),
                    help="concurrent sessions; more are refused (default %(default)s)")
    ap.add_argument("--conversation-min-s", type=int,
                    default=int(_env("DIALGUARD_CONVERSATION_MIN_S", "1")),
                    help="answered calls with at least this many talk seconds are a conversation "
                         "(env DIALGUARD_CONVERSATION_MIN_S, default %(default)s)")
    ap.add_argument("--set-mode", choices=("mset", "set"), default=_env("DIALGUARD_AGI_SET_MODE", "mset"),
                    help="how check writes its variables: one EXEC MSet (mset: 2 commands a check) or one "
                         "SET VARIABLE each (set: 7) (env DIALGUARD_AGI_SET_MODE, default %(default)s)")
    ap.add_argument("--engine-factory", default=_env("DIALGUARD_AGI_ENGINE_FACTORY", ""),
                    help="module:callable returning the engine (tests only; default: dialguard.engine)")
    settings = Settings()  # the metrics settings are shared with the dialer (dialguard.config)
    ap.add_argument("--metrics-host", default=settings.metrics_host,
                    help="address of /metrics and /healthz (env DIALGUARD_METRICS_HOST, default %(default)s)")
    ap.add_argument("--metrics-port", type=_port_or_off,
                    default=str(settings.metrics_port),
                    help="port of /metrics and /healthz, 0 disables (env DIALGUARD_METRICS_PORT, "
                         "default %(default)s)")
    ap.add_argument("--metrics-interval", type=float, default=settings.metrics_interval_s,
                    help="seconds between refreshes of the gauges read from Redis "
                         "(env DIALGUARD_METRICS_INTERVAL, default %(default)s)")
    ap.add_argument("--workers", type=int, default=int(_env("DIALGUARD_AGI_WORKERS", "0")),
                    help="server processes sharing the port (env DIALGUARD_AGI_WORKERS; default 0: half the "
                         "CPUs, at least 1, the rest left to Asterisk and Redis)")
    ap.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)  # a worker's socket
    ap.add_argument("--log-level", default=_env("DIALGUARD_LOG_LEVEL", "INFO"))
    return ap


async def serve(args: argparse.Namespace) -> int:
    engines = EngineProvider(load_factory(args.engine_factory),
                             create_timeout_s=max(0.5, args.session_timeout - 1.0))
    sock = None
    if args.listen_fd is not None:
        import socket

        sock = socket.socket(fileno=args.listen_fd)
    server = FastAGIServer(engines, host=args.host, port=args.port, allow=args.allow, sock=sock,
                           session_timeout=args.session_timeout, max_sessions=args.max_sessions,
                           options=Options(conversation_min_s=args.conversation_min_s,
                                           engine_timeout_s=args.engine_timeout,
                                           set_mode=args.set_mode),
                           metrics_host=args.metrics_host, metrics_port=args.metrics_port,
                           metrics_interval=args.metrics_interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    warm = asyncio.ensure_future(engines.get(create_timeout_s=WARMUP_TIMEOUT_S))
    # Warm up before accepting (a busy machine may need seconds: several
    # workers start at once); when this fails, sessions deny and it is retried.
    await asyncio.wait([warm, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        warm.cancel()
        await engines.close()
        return 0
    warm.exception() if warm.done() and not warm.cancelled() else None
    await server.start()
    await stop.wait()
    log.info("signal received: no new sessions, finishing those in flight")
    await server.shutdown()
    await engines.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        ap = build_parser()
    except (ConfigError, ValueError) as exc:
        print(f"dialguard-agi-server: unusable setting ({exc}): check the DIALGUARD_* environment "
              f"and the config file (DIALGUARD_CONFIG)", file=sys.stderr)
        return 2
    args = ap.parse_args(argv)
    os.umask(0o077)  # the spool and anything else the server writes: owner only
    try:
        require_secrets("dialguard-agi-server")
    except ConfigError as exc:
        print(f"dialguard-agi-server: {exc}", file=sys.stderr)
        return 2
    try:
        args.allow = parse_networks(args.allow)
    except ValueError as exc:
        ap.error(f"--allow: {exc}")
    if args.session_timeout <= 0 or args.engine_timeout <= 0:
        ap.error("timeouts must be positive")
    if args.metrics_interval <= 0:
        ap.error("--metrics-interval must be positive")
    if args.workers < 0:
        ap.error("--workers must be 0 (one per CPU) or more")
    setup_logging(args.log_level)
    # Measured on 2 cores: a second worker only adds contention (the machine,
    # not one Python process, is the ceiling there), hence half the CPUs.
    workers = args.workers or max(1, (os.cpu_count() or 1) // 2)
    if workers > 1 and args.listen_fd is None:
        from .workers import supervise

        return supervise(args, workers, argv if argv is not None else sys.argv[1:])
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(args))
    return uvloop.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
