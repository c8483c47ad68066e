"""A minimal pipelined RESP client for the decision hot path.

redis-py's asyncio client costs a few hundred microseconds per command under
load (connection pool checkout, one write and one read per command). The
guard's hot path is one EVALSHA per decision, so this client keeps one (or a
few) connections and pipelines every concurrent request on them:

- requests are encoded with hiredis.pack_command; on an idle connection a
  request is written at once, otherwise buffered: one write per event-loop
  turn carries every request made in that turn;
- Redis answers in order, so replies (parsed by hiredis.Reader) resolve the
  pending futures first in, first out;
- every request carries a deadline (event-loop time); one timer per connection
  fails the requests whose deadline passed with TimeoutError. Their replies,
  if they ever come, are read and dropped in order;
- a lost connection fails every pending request with ConnectionError (the
  engine turns both into a `guard_unavailable` deny: fail closed); the next
  request reconnects. Failed connects back off (50 ms doubling to 1 s), and
  requests made during a back-off fail at once instead of waiting;
- a connection on which nothing has been answered for `stale_s` while
  requests wait (Redis frozen, a network black hole) is dropped, so pending
  requests cannot pile up without bound;
- EVALSHA answered with NOSCRIPT (Redis restarted, SCRIPT FLUSH, failover) is
  retried once as EVAL of the source, which also caches the script again;
- with Sentinels (`sentinels=`, `master=`) every connect asks them for the
  primary (SENTINEL GET-MASTER-ADDR-BY-NAME; the Sentinel that answered last
  asked first, those that failed last; each gets its share of the connect
  budget, so a silent one cannot use it up) and checks with ROLE that the node is a primary; an answer
  -READONLY, -LOADING or -MASTERDOWN (a demoted primary, a replica still
  loading) fails that request and drops the connection, so the next request
  asks the Sentinels again. Nothing is retried on another node: a failed
  request is a `guard_unavailable` deny, never a second reservation;
- `evalsha_acked` sends WAIT on the connection that carried the script, so an
  ALLOW can wait until a replica has its reservation (docs/OPERATIONS.md).

Works with the default asyncio loop and with uvloop. Administration and other
cold paths keep using redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from urllib.parse import unquote, urlparse

import hiredis

__all__ = ["RedisClient", "RedisReplyError", "RedisConnectionError", "RedisTimeout"]


class RedisReplyError(Exception):
    """Redis answered with an error reply (-ERR ...)."""


class RedisConnectionError(ConnectionError):
    """Not connected, connection lost, or connect failed (an OSError)."""


class RedisTimeout(TimeoutError):
    """The request's deadline passed before its reply arrived."""


_pack = hiredis.pack_command
_ReplyError = hiredis.ReplyError
# Error replies that mean "this node is not a primary you can use now".
_NOT_PRIMARY = ("READONLY", "LOADING", "MASTERDOWN")


class _Pending:
    __slots__ = ("fut", "deadline")

    def __init__(self, fut: asyncio.Future, deadline: float):
        self.fut = fut
        self.deadline = deadline


class _Conn(asyncio.Protocol):
    """One connection: FIFO of pending requests, coalesced writes."""

    def __init__(self, client: "RedisClient"):
        self.client = client
        self.loop = client._loop
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=_ReplyError)
        self.pending: collections.deque[_Pending] = collections.deque()
        self.wbuf: list[bytes] = []
        self.flush_scheduled = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.last_reply = self.loop.time()
        self.closed = False

    # -- asyncio.Protocol -------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        self.last_reply = self.loop.time()
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self._lost(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not pending:  # cannot happen with a well-behaved server
                self._lost(RedisConnectionError("reply without a request"))
                return
            fut = pending.popleft().fut
            if type(reply) is _ReplyError and str(reply).startswith(_NOT_PRIMARY):
                # Not (or no longer) a usable primary: whatever else is pending here
                # went to the wrong node too. Drop the connection: the next request
                # reconnects (and asks the Sentinels again).
                exc = RedisConnectionError(f"Redis at {self.client._where()} answered {str(reply)[:60]!r}")
                if not fut.done():
                    fut.set_exception(exc)
                self._lost(exc)
                return
            if not fut.done():
                fut.set_result(reply)

    def connection_lost(self, exc):
        self._lost(RedisConnectionError(f"Redis connection lost: {exc or 'closed by server'}"))

    # -- requests -------------------------------------------------------------------
    def send(self, packed: bytes, deadline: float) -> asyncio.Future:
        fut = self.loop.create_future()
        if self.closed:
            fut.set_exception(RedisConnectionError("Redis connection closed"))
            return fut
        idle = not self.pending
        if idle:
            self.last_reply = self.loop.time()  # "nothing answered since": counts from now
        self.pending.append(_Pending(fut, deadline))
        if idle and self.transport is not None and not self.wbuf:
            # Nothing in flight: write at once, the lowest latency.
            self.transport.write(packed)
        else:
            # Requests in flight: the others made in this loop turn (tasks woken by
            # the same batch of replies) go in the same write. One send(2) per
            # batch instead of one per request is most of the client's CPU under load.
            self.wbuf.append(packed)
            if not self.flush_scheduled:
                self.flush_scheduled = True
                self.loop.call_soon(self._flush)
        if self.timer is None or deadline < self.timer_at:
            self._arm(deadline)
        return fut

    def _flush(self):
        self.flush_scheduled = False
        if self.closed or not self.wbuf:
            return
        buf = self.wbuf
        self.wbuf = []
        self.transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def _arm(self, at: float):
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = at
        self.timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self):
        self.timer = None
        if self.closed:
            return
        now = self.loop.time()
        nxt = None
        for p in self.pending:
            if p.fut.done():
                continue
            if p.deadline <= now:
                p.fut.set_exception(RedisTimeout("Redis did not answer before the deadline"))
            elif nxt is None or p.deadline < nxt:
                nxt = p.deadline
        if self.pending and now - self.last_reply >= self.client.stale_s:
            self._lost(RedisConnectionError(f"Redis answered nothing for {now - self.last_reply:.1f}s"))
            return
        if self.pending:
            # Check again at the next deadline, and at least every stale_s while
            # requests wait (their replies are still owed, even once timed out).
            at = now + self.client.stale_s
            self._arm(min(nxt, at) if nxt is not None else at)

    def _lost(self, exc: Exception):
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        pending, self.pending = self.pending, collections.deque()
        for p in pending:
            if not p.fut.done():
                p.fut.set_exception(exc)
        self.wbuf = []
        if self.transport is not None:
            self.transport.abort()
        self.client._conn_lost(self)

    def close(self):
        self._lost(RedisConnectionError("client closed"))


class RedisClient:
    """Pipelined RESP client for a `redis://`, `rediss://` or `unix://` URL.

    `timeout` is the default per-request deadline (seconds) when a call gives
    none; `connections` spreads requests round robin over that many sockets.
    """

    def __init__(self, url: str, *, timeout: float = 0.2, connect_timeout: float | None = None,
                 connections: int = 1, stale_s: float | None = None,
                 sentinels: list[tuple[str, int]] | None = None, master: str | None = None,
                 sentinel_username: str | None = None, sentinel_password: str | None = None):
        u = urlparse(url)
        self.url = url
        self.scheme = u.scheme
        if u.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {u.scheme!r}")
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 6379
        self.path = u.path if u.scheme == "unix" else None
        self.username = unquote(u.username) if u.username else None
        self.password = unquote(u.password) if u.password else None
        db = 0
        if u.scheme != "unix" and u.path and u.path.strip("/"):
            db = int(u.path.strip("/"))
        for part in (u.query or "").split("&"):
            if part.startswith("db="):
                db = int(part[3:])
        self.db = db
        self.timeout = timeout
        self.connect_timeout = connect_timeout if connect_timeout is not None else max(timeout, 0.05)
        self.stale_s = stale_s if stale_s is not None else max(1.0, 5 * timeout)
        self.n = max(1, connections)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: list[_Conn | None] = [None] * self.n
        self._connecting: list[asyncio.Future | None] = [None] * self.n
        self._backoff_until = [0.0] * self.n
        self._backoff = [0.0] * self.n
        self._rr = 0
        self._closed = False
        # Sentinel mode: the primary's address is asked for at every connect.
        self.sentinels = list(sentinels or [])
        if self.sentinels and (not master or self.path):
            raise ValueError("Sentinel mode needs a master name and a TCP (redis:// or rediss://) URL")
        self.master = master
        self.sentinel_username = sentinel_username
        self.sentinel_password = sentinel_password

    # -- connections -------------------------------------------------------------
    def _conn_lost(self, conn: _Conn) -> None:
        for i, c in enumerate(self._conns):
            if c is conn:
                self._conns[i] = None

    async def _open(self, conn: _Conn, host: str | None, port: int, hello: list, deadline: float) -> None:
        """Connect `conn` and send the `hello` commands (AUTH, SELECT, ...);
        an error reply to one of them is a RedisConnectionError."""
        loop = self._loop
        if self.path:
            await loop.create_unix_connection(lambda: conn, self.path)
        else:
            ctx = ssl.create_default_context() if self.scheme == "rediss" else None
            await loop.create_connection(lambda: conn, host, port, ssl=ctx)
            sock = conn.transport.get_extra_info("socket")
            if sock is not None:
                import socket
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
        for cmd in hello:
            r = await conn.send(_pack(cmd), deadline)
            if isinstance(r, _ReplyError):
                where = self.path or f"{host}:{port}"  # a Unix socket: its path, not a TCP address
                raise RedisConnectionError(f"Redis at {where} refused {cmd[0]}: {r}")

    async def _discover(self, deadline: float) -> tuple[str, int]:
        """The primary's address, from the first Sentinel that knows it."""
        hello = []
        if self.sentinel_password:
            hello.append(("AUTH", self.sentinel_username, self.sentinel_password) if self.sentinel_username
                         else ("AUTH", self.sentinel_password))
        problems, failed = [], []
        order = list(self.sentinels)
        try:
            for k, (host, port) in enumerate(order):
                # Each Sentinel gets its share of what is left, so one that does not
                # answer at all (its host gone) cannot use up the whole budget.
                now = self._loop.time()
                mine = now + (deadline - now) / (len(order) - k)
                conn = _Conn(self)
                try:
                    async with asyncio.timeout_at(mine):
                        await self._open(conn, host, port, hello, mine)
                        r = await conn.send(_pack(("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master)), mine)
                except (OSError, TimeoutError) as exc:
                    problems.append(f"{host}:{port}: {exc!r}")
                    failed.append((host, port))
                    continue
                finally:
                    conn.close()
                if isinstance(r, _ReplyError) or not r:
                    problems.append(f"{host}:{port}: {r or 'does not know master ' + repr(self.master)}")
                    failed.append((host, port))
                    continue
                # Ask this one first next time, the ones that failed last.
                self.sentinels = [(host, port)] + [a for a in order if a != (host, port) and a not in failed] + failed
                return r[0].decode(), int(r[1])
        finally:
            if len(failed) == len(order):
                self.sentinels = order
        raise RedisConnectionError(f"no Sentinel named the primary {self.master!r}: {'; '.join(problems)}")

    async def _connect(self, i: int) -> _Conn:
        loop = self._loop
        conn = _Conn(self)
        try:
            async with asyncio.timeout(self.connect_timeout):
                deadline = loop.time() + self.connect_timeout
                if self.sentinels:
                    self.host, self.port = await self._discover(deadline)
                hello = []
                if self.password:
                    hello.append(("AUTH", self.username, self.password) if self.username
                                 else ("AUTH", self.password))
                if self.db:
                    hello.append(("SELECT", str(self.db)))
                await self._open(conn, self.host, self.port, hello, deadline)
                if self.sentinels:
                    # The Sentinels may not have noticed a demotion yet (or the node
                    # restarted as a replica): only a primary takes decisions.
                    role = await conn.send(_pack(("ROLE",)), deadline)
                    if isinstance(role, _ReplyError) or not role or role[0] != b"master":
                        raise RedisConnectionError(
                            f"Redis at {self._where()} is not a primary (ROLE: {role!r:.60}): failover under way?")
        except BaseException as exc:
            conn.close()
            self._backoff[i] = min(1.0, max(0.05, self._backoff[i] * 2))
            self._backoff_until[i] = loop.time() + self._backoff[i]
            if isinstance(exc, (OSError, TimeoutError)) and not isinstance(exc, RedisConnectionError):
                raise RedisConnectionError(f"cannot connect to Redis at {self._where()}: {exc!r}") from None
            raise
        self._backoff[i] = 0.0
        self._conns[i] = conn
        return conn

    def _where(self) -> str:
        where = self.path or f"{self.host}:{self.port}"
        return f"{where} (primary {self.master!r} per Sentinel)" if self.sentinels else where

    async def _get_conn(self, i: int, deadline: float) -> _Conn:
        if self._closed:
            raise RedisConnectionError("client closed")
        loop = self._loop
        if loop.time() < self._backoff_until[i]:
            raise RedisConnectionError(f"Redis at {self._where()} unreachable (retrying shortly)")
        fut = self._connecting[i]
        if fut is None:
            fut = self._connecting[i] = asyncio.ensure_future(self._connect(i))
            fut.add_done_callback(lambda f, i=i: self._connect_done(i, f))
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(fut)

    def _connect_done(self, i: int, fut: asyncio.Future) -> None:
        if self._connecting[i] is fut:
            self._connecting[i] = None
        if not fut.cancelled():
            fut.exception()  # mark retrieved: callers that timed out may not have seen it

    # -- requests ----------------------------------------------------------------------
    async def execute(self, *args, deadline: float | None = None):
        """Send one command; its reply (bytes, int, list, None).

        Raises RedisReplyError for an error reply, RedisTimeout past the
        deadline, RedisConnectionError when not connected.
        """
        reply = await self._send(_pack(args), deadline)
        if isinstance(reply, _ReplyError):
            raise RedisReplyError(str(reply))
        return reply

    async def _pick(self, deadline: float | None) -> tuple[_Conn, float]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.timeout
        i = 0
        if self.n > 1:
            i = self._rr = (self._rr + 1) % self.n
        conn = self._conns[i]
        if conn is None:
            conn = await self._get_conn(i, deadline)
        return conn, deadline

    async def _send(self, packed: bytes, deadline: float | None):
        conn, deadline = await self._pick(deadline)
        return await conn.send(packed, deadline)

    async def _evalsha_on(self, conn: _Conn, script, keys, args, deadline: float):
        n = len(keys)
        reply = await conn.send(_pack(("EVALSHA", script.sha, n, *keys, *args)), deadline)
        if isinstance(reply, _ReplyError):
            if str(reply).startswith("NOSCRIPT"):
                reply = await conn.send(_pack(("EVAL", script.source, n, *keys, *args)), deadline)
                if not isinstance(reply, _ReplyError):
                    return reply
            raise RedisReplyError(str(reply))
        return reply

    async def evalsha(self, script, keys, args, *, deadline: float | None = None):
        """EVALSHA of a dialguard.decision.scripts.Script (sha, source); on NOSCRIPT,
        EVAL of its source once (which caches it again)."""
        conn, deadline = await self._pick(deadline)
        return await self._evalsha_on(conn, script, keys, args, deadline)

    async def evalsha_acked(self, script, keys, args, *, replicas: int, wait_ms: int, need,
                            deadline: float | None = None):
        """evalsha, then, when need(reply), `WAIT replicas wait_ms` on the same
        connection (WAIT counts the replicas that have this connection's writes).
        Returns (reply, replicas that acknowledged, or None when not asked)."""
        conn, deadline = await self._pick(deadline)
        reply = await self._evalsha_on(conn, script, keys, args, deadline)
        if not need(reply):
            return reply, None
        acked = await conn.send(_pack(("WAIT", replicas, wait_ms)), deadline)
        if isinstance(acked, _ReplyError):
            raise RedisReplyError(str(acked))
        return reply, int(acked)

    async def close(self) -> None:
        self._closed = True
        for c in self._conns:
            if c is not None:
                c.close()
        self._conns = [None] * self.n
        for f in self._connecting:
            if f is not None:
                f.cancel()

    def pending(self) -> int:
        return sum(len(c.pending) for c in self._conns if c is not None)
