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
decision deadline, else 503 with the reason; 200 with ``"status": "degraded"``
and the reason when a calendar its rules use is known for 45 days or less
(:mod:`dialguard.calendar_expiry`). Settings come from the
environment first, then the config file (DIALGUARD_CONFIG), then defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import os
import signal
import sys

from dialguard import cancel, metrics
from dialguard.config import ConfigError, Settings, require_secrets
from dialguard.config import _env as _config_value

from . import protocol as p
from .engines import EngineProvider, EngineUnavailable, load_factory
from .flood import Conn, ConnTable, CountLog
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
                 metrics_interval: float = 5.0, sock=None, env_timeout: float = 2.0,
                 max_pending: int = 10_000, max_pending_per_source: int = 10_000):
        self.engines = engines
        self.host = host
        self.port = port
        self.allow = parse_networks(allow)
        self.session_timeout = session_timeout
        self.max_sessions = max_sessions
        # A flood of idle connections (agi/flood.py): connections wait for their
        # environment block as cheap "pending" entries (no task), within env_timeout;
        # the oldest pending goes first when max_pending (or the source's
        # max_pending_per_source) is reached.
        self.env_timeout = min(env_timeout, session_timeout)
        self.table = ConnTable(max_pending, max_pending_per_source)
        self.flood_log = CountLog(log, "agi connections not served (last second)")
        self._max_env_bytes = max_line_bytes * (max_env_lines + 1)
        self._sweeper: asyncio.TimerHandle | None = None
        self.options = options or Options()
        self.handlers = handlers if handlers is not None else load_builtin()
        self.max_line_bytes = max_line_bytes
        self.max_env_lines = max_env_lines
        self._server: asyncio.base_events.Server | None = None
        self._active: set[asyncio.Task] = set()
        self._closing = False
        self._bound_port: int | None = None
        self.stats = {"sessions": 0, "refused": 0, "evicted": 0}
        self.metrics_host = metrics_host
        self.metrics_port = metrics_port  # None or 0: no HTTP endpoint
        self.metrics_interval = metrics_interval
        self.metrics_server: metrics.MetricsServer | None = None
        self.sock = sock  # a listening socket shared by the workers (--workers N)
        self._refresh_task: asyncio.Task | None = None
        self._cid_gauges_due = 0  # refresh_metrics: refreshes until the caller-ID gauges are due

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
        loop = asyncio.get_running_loop()
        if self.sock is not None:
            self._server = await loop.create_server(lambda: _Pending(self), sock=self.sock, backlog=1024)
        else:
            self._server = await loop.create_server(lambda: _Pending(self), self.host, self.port,
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
                                    refresh=self.refresh_metrics, interval=self.metrics_interval,
                                    degraded=self.degraded)
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

    async def degraded(self) -> list[str]:
        """/healthz still 200 but "degraded": a calendar the rules use ends within 45 days."""
        try:
            engine = await self.engines.get()
        except EngineUnavailable:
            return []  # health() already says 503
        return await metrics.calendar_degraded(engine)

    async def refresh_metrics(self) -> bool:
        """Background gauges (never on the call path; never raises). The
        caller-ID gauges at every CALLER_ID_GAUGES_EVERY-th refresh (30 s at the
        default 5 s interval): the costly part, on the loop that answers the checks."""
        try:
            engine = await self.engines.get()
        except EngineUnavailable:
            metrics.UP.set(0)
            return False
        cids = self._cid_gauges_due <= 0
        ok = await metrics.refresh_from_engine(engine, caller_ids=cids)
        if ok and cids:
            self._cid_gauges_due = metrics.CALLER_ID_GAUGES_EVERY
        self._cid_gauges_due -= 1
        return ok

    # -- connections: pending until their environment block is complete (agi/flood.py) --
    def _connected(self, pending: "_Pending") -> None:
        transport = pending.transport
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        refused = None
        if self._closing:
            refused = "shutting down"
        elif not self.allowed(host):
            refused = "client address not allowed"
        if refused:
            self._refuse(transport, refused)
            return
        for victim, why in self.table.admit(host):
            self._close_pending(victim, why)
        pending.conn = Conn(host, transport)
        pending.peer = peer
        loop = asyncio.get_running_loop()
        self.table.add(pending.conn, loop.time())
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.env_timeout, self._sweep)

    def _refuse(self, transport, why: str) -> None:
        self.stats["refused"] += 1
        metrics.observe_agi_refused(_REFUSED[why])
        self.flood_log.add(f"refused ({why})")
        transport.abort()

    def _close_pending(self, conn: Conn, why: str) -> None:
        """Close a connection that has not sent its environment block."""
        conn.evicted = why
        if why == "env_timeout":
            metrics.observe_agi_session({"outcome": "timeout"})
            self.flood_log.add("closed: no environment block within the deadline")
        else:
            self.stats["evicted"] += 1
            metrics.observe_agi_evicted(why)
            metrics.observe_agi_session({"outcome": "evicted"})
            self.flood_log.add(f"closed to make room ({why})")
        conn.transport.abort()

    def _sweep(self) -> None:
        """Close the pending connections past the environment block deadline.
        Armed only while connections are pending, for when the oldest one's
        deadline passes (at most every SWEEP_S: small batches under a flood):
        an idle server, or one whose sessions send their block at once, is not
        woken a hundred times a second for nothing."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in self.table.expired(now - self.env_timeout):
            self._close_pending(conn, "env_timeout")
        self._sweeper = None
        if not self._closing:
            oldest = self.table.oldest()
            if oldest is not None:
                self._sweeper = loop.call_at(max(oldest + self.env_timeout, now + SWEEP_S), self._sweep)

    def _env_ready(self, pending: "_Pending") -> None:
        """The environment block is buffered: hand the connection to a session."""
        conn = pending.conn
        self.table.remove(conn)
        transport = pending.transport
        if self._closing:
            self._refuse(transport, "shutting down")
            return
        if len(self._active) >= self.max_sessions:
            self._refuse(transport, "too many sessions")
            return
        loop = asyncio.get_running_loop()
        if SESSION_IO == "streams":
            reader = asyncio.StreamReader(limit=self.max_line_bytes, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            reader.feed_data(bytes(pending.buf))
            if pending.eof:
                reader.feed_eof()
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        else:
            reader = writer = _SessionIO(transport, pending.buf, pending.eof, loop)
            transport.set_protocol(reader)
        pending.buf = None
        pending.transport = None  # the session's protocol has it now
        conn.transport = None
        task = loop.create_task(self._session(reader, writer, pending.peer))
        self._active.add(task)

    async def _session(self, reader, writer, peer) -> None:
        peer_host = peer[0] if isinstance(peer, tuple) else str(peer)
        fields = {"event": "agi_session", "peer": f"{peer_host}:{peer[1]}" if isinstance(peer, tuple) else peer_host}
        task = asyncio.current_task()
        self.stats["sessions"] += 1
        metrics.AGI_ACTIVE.inc()
        try:
            await run_session(reader, writer, handlers=self.handlers, engines=self.engines,
                              options=self.options, timeout_s=self.session_timeout,
                              fields=fields, max_line_bytes=self.max_line_bytes,
                              max_env_lines=self.max_env_lines, quiet_before_env=True)
        except Exception:  # run_session does not raise; belt and braces
            log.exception("session crashed", extra={"fields": fields})
            fields["outcome"] = "crashed"
        finally:
            metrics.AGI_ACTIVE.dec()
            if "script" not in fields:  # garbage instead of an environment block
                self.flood_log.add(f"closed: bad environment block ({fields.get('outcome')})")
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

    def _pending_lost(self, pending: "_Pending") -> None:
        """A pending connection closed by its peer (or by us: then counted already)."""
        conn = pending.conn
        if conn is not None and conn.held:
            self.table.remove(conn)
            metrics.observe_agi_session({"outcome": "protocol_error"})
            self.flood_log.add("closed by the client before its environment block")

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stop accepting, then wait for the sessions in flight (cancelled after grace)."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.table.pending):
            self.table.remove(conn)
            conn.transport.abort()
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
        self.flood_log.flush()
        log.info("stopped", extra={"fields": {"event": "agi_stopped", **self.stats}})


SWEEP_S = 0.01  # how often pending connections past their deadline are closed (often: small batches)


# How a session reads and writes its socket: "protocol" (default), one small
# asyncio.Protocol that is both the session's reader and writer; "streams",
# asyncio's StreamReader/StreamWriter pair (DIALGUARD_AGI_IO=streams).
SESSION_IO = os.environ.get("DIALGUARD_AGI_IO", "protocol")


class _SessionIO(asyncio.Protocol):
    """A session's socket as the reader and writer AGISession needs (read,
    write, drain, close), without a StreamReader, StreamWriter and
    StreamReaderProtocol per session."""

    __slots__ = ("transport", "_buf", "_eof", "_lost", "_waiter", "_paused", "_drainer", "_closed", "_loop")

    def __init__(self, transport, buf: bytearray, eof: bool, loop):
        self.transport = transport
        self._buf = buf
        self._eof = eof
        self._lost = False
        self._waiter = None
        self._paused = False
        self._drainer = None
        self._closed = None
        self._loop = loop

    # -- protocol callbacks
    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # as StreamReaderProtocol: our replies may still go out

    def connection_lost(self, exc) -> None:
        self._eof = self._lost = True
        self._wake()
        d = self._drainer
        if d is not None and not d.done():
            d.set_result(None)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        d = self._drainer
        if d is not None and not d.done():
            d.set_result(None)

    # -- the reader
    async def read(self, n: int) -> bytes:
        while not self._buf and not self._eof:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    # -- the writer
    def write(self, data: bytes) -> None:
        self.transport.write(data)

    async def drain(self) -> None:
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if self._paused:
            self._drainer = self._loop.create_future()
            try:
                await self._drainer
            finally:
                self._drainer = None
            if self._lost:
                raise ConnectionResetError("Connection lost")

    def close(self) -> None:
        self.transport.close()

    async def wait_closed(self) -> None:
        if self._lost:
            return
        if self._closed is None:
            self._closed = self._loop.create_future()
        await self._closed


class _Pending(asyncio.Protocol):
    """A connection until its environment block is complete: a buffer and a
    slot in the server's table, no task and no timer of its own (a flood of
    idle connections costs little); then handed to a session (agi/flood.py)."""

    __slots__ = ("server", "transport", "buf", "conn", "peer", "eof")

    def __init__(self, server: FastAGIServer):
        self.server = server
        self.transport = None
        self.buf = bytearray()
        self.conn: Conn | None = None
        self.peer = None
        self.eof = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server._connected(self)

    def data_received(self, data: bytes) -> None:
        if self.conn is None or not self.conn.held:
            return  # refused or closed: nothing more to do
        buf = self.buf
        buf += data
        # the block ends with an empty line (or is garbage: the session's parser says so);
        # a line longer than any line may be is garbage at once, not held (up to the whole
        # block's bound, 1 MB, a pending connection) until the environment's deadline
        if (buf[:1] == b"\n" or buf[:2] == b"\r\n" or b"\n\n" in buf or b"\n\r\n" in buf
                or len(buf) > self.server._max_env_bytes
                or (len(buf) > self.server.max_line_bytes
                    and len(buf) - buf.rfind(b"\n") - 1 > self.server.max_line_bytes)):
            self.server._env_ready(self)

    def eof_received(self):
        if self.conn is not None and self.conn.held and self.buf:
            self.eof = True  # a block then EOF: let the session parse what came
            self.server._env_ready(self)
            return True
        return False  # closes the transport: connection_lost follows

    def connection_lost(self, exc) -> None:
        self.server._pending_lost(self)
        # no reference cycle left behind: freed at once, not by the cyclic GC
        # (its passes took up to 11 ms under a churning flood)
        self.transport = self.buf = None
        if self.conn is not None:
            self.conn.transport = None


def raise_fd_limit(max_sessions: int) -> int:
    """Raise the soft limit of open files to the hard one: every connection
    is a descriptor, and a server out of descriptors accepts nothing, Asterisk
    included (the systemd unit sets LimitNOFILE). Returns the soft limit."""
    try:
        import resource
    except ImportError:  # not POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, hard, exc)
    if soft != resource.RLIM_INFINITY and soft < max_sessions + 256:
        log.warning("open files limit %d is below --max-sessions + --max-pending (%d) + 256: under a flood "
                    "the server may run out of descriptors (raise LimitNOFILE / ulimit -n)", soft, max_sessions)
    return soft


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
                    help="sessions (environment block received) at once; more are refused "
                         "(env DIALGUARD_AGI_MAX_SESSIONS, default %(default)s)")
    ap.add_argument("--max-pending", type=int, default=int(_env("DIALGUARD_AGI_MAX_PENDING", "10000")),
                    help="connections waiting for their environment block; when full, the oldest is "
                         "closed for a new one (env DIALGUARD_AGI_MAX_PENDING, default %(default)s)")
    ap.add_argument("--env-timeout", type=float, default=float(_env("DIALGUARD_AGI_ENV_TIMEOUT", "2")),
                    help="seconds a connection has to send its environment block (Asterisk sends it at "
                         "once) (env DIALGUARD_AGI_ENV_TIMEOUT, default %(default)s)")
    ap.add_argument("--max-pending-per-source", type=int,
                    default=int(_env("DIALGUARD_AGI_MAX_PENDING_PER_SOURCE", "10000")),
                    help="connections without environment block per client address; one more closes "
                         "that address's oldest (env DIALGUARD_AGI_MAX_PENDING_PER_SOURCE, default "
                         "%(default)s)")
    ap.add_argument("--conversation-min-s", type=int,
                    default=int(_env("DIALGUARD_CONVERSATION_MIN_S", "1")),
                    help="answered calls with at least this many talk seconds are a conversation "
                         "(env DIALGUARD_CONVERSATION_MIN_S, default %(default)s)")
    ap.add_argument("--set-mode", choices=("mset", "set"), default=_env("DIALGUARD_AGI_SET_MODE", "mset"),
                    help="how check writes its variables: one EXEC MSet (mset: 2 commands a check) or one "
                         "SET VARIABLE each (set: 7) (env DIALGUARD_AGI_SET_MODE, default %(default)s)")
    ap.add_argument("--log-sessions", action=argparse.BooleanOptionalAction,
                    default=_env("DIALGUARD_AGI_LOG_SESSIONS", "0") in ("1", "true", "yes"),
                    help="log every session that went well (allow, deny, reported) at INFO; default: only "
                         "failed sessions (WARNING), the others at DEBUG: the audit trail has every decision "
                         "(env DIALGUARD_AGI_LOG_SESSIONS=1)")
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


async def _warm(engines: EngineProvider) -> None:
    """The engine, and what its first decision would load under the store
    deadline (rules and calendar versions in effect, state packs, holidays:
    Decider.warm_up); without it the first call may be denied guard_unavailable."""
    engine = await engines.get(create_timeout_s=WARMUP_TIMEOUT_S)
    warm_up = getattr(engine, "warm_up", None)
    if warm_up is None:  # a test's fake engine
        return
    try:
        await cancel.within(WARMUP_TIMEOUT_S, warm_up())
    except Exception as exc:  # noqa: BLE001 - serve anyway: a slow first decision denies (fail closed)
        log.warning("engine warm-up failed: %r", exc)


async def serve(args: argparse.Namespace) -> int:
    from dialguard.location import warm_up

    # The ZIP data set (location.py) decompressed once before serving, not in the
    # first decision with a postal code (the classic per-call script skips it).
    await asyncio.to_thread(warm_up)
    engines = EngineProvider(load_factory(args.engine_factory),
                             create_timeout_s=max(0.5, args.session_timeout - 1.0))
    sock = None
    if args.listen_fd is not None:
        import socket

        sock = socket.socket(fileno=args.listen_fd)
    server = FastAGIServer(engines, host=args.host, port=args.port, allow=args.allow, sock=sock,
                           session_timeout=args.session_timeout, max_sessions=args.max_sessions,
                           env_timeout=args.env_timeout, max_pending=args.max_pending,
                           max_pending_per_source=args.max_pending_per_source,
                           options=Options(conversation_min_s=args.conversation_min_s,
                                           engine_timeout_s=args.engine_timeout,
                                           set_mode=args.set_mode, log_sessions=args.log_sessions),
                           metrics_host=args.metrics_host, metrics_port=args.metrics_port,
                           metrics_interval=args.metrics_interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    warm = asyncio.ensure_future(_warm(engines))
    # Warm up before accepting (a busy machine may need seconds: several
    # workers start at once); when this fails, sessions deny and it is retried.
    # /healthz answers only once accepting: not ready until warm.
    await asyncio.wait([warm, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        warm.cancel()
        await engines.close()
        return 0
    warm.exception() if warm.done() and not warm.cancelled() else None
    await server.start()
    # What start-up built lives as long as the process: out of the cyclic GC's
    # full passes, which under a flood of connections would walk it again and again.
    gc.freeze()
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
    if args.env_timeout <= 0 or min(args.max_sessions, args.max_pending, args.max_pending_per_source) < 1:
        ap.error("--env-timeout must be positive, --max-sessions, --max-pending and "
                 "--max-pending-per-source at least 1")
    setup_logging(args.log_level)
    raise_fd_limit(args.max_sessions + args.max_pending)
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
