"""A thin asyncio ARI client on aiohttp: REST plus the events WebSocket.

What it guarantees (docs/DIALER.md explains why asyncari / ari-client were not used):

- credentials travel only in an `Authorization: Basic` header, never in a URL
  (a password with `&`, `#`, `@` or `:` works unchanged);
- one bounded HTTP connection pool (`pool_size`, sized by the caller for its pacing);
  requests beyond it queue, they never open more sockets;
- the events socket reconnects forever with capped exponential backoff and jitter;
  after every (re)connect `on_connect` runs (the dialer reconciles channels and
  bridges there) before the client reports itself `healthy`;
- the socket reader never awaits a handler: each event is put on the queue of its
  channel (or bridge, or a global queue) and a worker per key handles that key's
  events in order; a slow handler delays only its own channel;
- a closed session is never reused: `close()` is final, requests after it raise.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from collections import defaultdict, deque
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from dialguard import cancel

log = logging.getLogger("ari_app.client")

EventHandler = Callable[[dict], Awaitable[None]]
ConnectHook = Callable[[], Awaitable[None]]


class AriError(Exception):
    def __init__(self, status: int, method: str, path: str, body: str):
        super().__init__(f"ARI {method} {path}: HTTP {status}: {body[:200]}")
        self.status = status
        self.body = body


class AriUnavailable(Exception):
    """The HTTP request could not be sent or answered (connection, timeout)."""


class AriClosed(AriUnavailable):
    """This client was closed: its owner is stopping (a dying dialer must not act on a
    call it can no longer reach; the next dialer adopts it)."""


def event_key(event: dict) -> str:
    """The ordering key of an event: its channel, else its bridge, else global."""
    ch = event.get("channel")
    if isinstance(ch, dict) and ch.get("id"):
        return "ch:" + ch["id"]
    br = event.get("bridge")
    if isinstance(br, dict) and br.get("id"):
        return "br:" + br["id"]
    return "global"


class Backoff:
    """Capped exponential backoff with full jitter; reset after a healthy connection."""

    def __init__(self, base: float = 0.2, cap: float = 10.0, rng: random.Random | None = None):
        self.base, self.cap = base, cap
        self.attempt = 0
        self.rng = rng or random.Random()

    def next(self) -> float:
        upper = min(self.cap, self.base * (2 ** self.attempt))
        self.attempt += 1
        return self.rng.uniform(upper / 2, upper)

    def reset(self) -> None:
        self.attempt = 0


class AriClient:
    def __init__(self, url: str, user: str, password: str, app: str, *, pool_size: int = 16,
                 request_timeout: float = 5.0, backoff: Backoff | None = None,
                 on_event: EventHandler | None = None, on_connect: ConnectHook | None = None,
                 on_disconnect: Callable[[], Any] | None = None):
        parts = urlsplit(url.rstrip("/"))
        if parts.username or parts.password:
            raise ValueError("give ARI credentials separately, never inside the URL")
        self.base = urlunsplit(parts)
        self.app = app
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}
        self.pool_size = pool_size
        self.request_timeout = request_timeout
        self.backoff = backoff or Backoff()
        self.on_event = on_event
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._connected = asyncio.Event()  # socket open and on_connect done
        self._run_task: asyncio.Task | None = None
        self._queues: dict[str, deque] = defaultdict(deque)
        self._workers: dict[str, asyncio.Task] = {}
        self.connects = 0  # successful connections (for tests and metrics)
        self.max_backlog = 0

    # -- session -------------------------------------------------------------------
    def _sess(self) -> aiohttp.ClientSession:
        if self._closed:
            raise AriClosed("client closed")
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.pool_size, limit_per_host=self.pool_size)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.request_timeout))
        return self._session

    @property
    def healthy(self) -> bool:
        return self._connected.is_set() and not self._closed

    async def wait_healthy(self, timeout: float | None = None) -> bool:
        if timeout is None:
            await self._connected.wait()
            return True
        return await cancel.wait_event(self._connected, timeout)

    # -- REST --------------------------------------------------------------------------
    async def request(self, method: str, path: str, params: dict | None = None,
                      body: Any = None) -> Any:
        """One ARI call; JSON answer (or None). Raises AriError on an HTTP error status,
        AriUnavailable when Asterisk could not be reached or did not answer in time."""
        url = f"{self.base}/ari/{path.lstrip('/')}"
        clean = {k: (("true" if v else "false") if isinstance(v, bool) else str(v))
                 for k, v in (params or {}).items() if v is not None}
        try:
            async with self._sess().request(method, url, params=clean,
                                            json=body) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise AriError(resp.status, method, path, text)
                if not text:
                    return None
                try:
                    return json.loads(text)
                except ValueError:
                    return text
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise AriUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    async def get(self, path: str, **params):
        return await self.request("GET", path, params)

    async def post(self, path: str, body: Any = None, **params):
        return await self.request("POST", path, params, body)

    async def delete(self, path: str, **params):
        return await self.request("DELETE", path, params)

    # -- events -------------------------------------------------------------------------
    def start(self) -> asyncio.Task:
        if self._run_task is None or self._run_task.done():
            self._run_task = asyncio.create_task(self._run(), name="ari-events")
        return self._run_task

    def _ws_url(self) -> str:
        scheme = "wss" if self.base.startswith("https") else "ws"
        rest = self.base.split("://", 1)[1]
        return f"{scheme}://{rest}/ari/events"

    async def _run(self) -> None:
        while not self._closed:
            try:
                async with self._sess().ws_connect(
                        self._ws_url(), params={"app": self.app, "subscribeAll": "false"},
                        heartbeat=10.0, timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                        max_msg_size=16 * 1024 * 1024) as ws:
                    self.connects += 1
                    log.info("ARI events connected (app %s, connection %d)", self.app, self.connects)
                    reader = asyncio.create_task(self._read(ws), name="ari-reader")
                    try:
                        if self.on_connect:
                            await self.on_connect()  # reconcile; events queue meanwhile
                            if self._closed:  # close() ran, its cancel swallowed on the way
                                break  # (the last guard, dialguard/cancel.py)
                        self.backoff.reset()
                        self._connected.set()
                        await reader
                    finally:
                        reader.cancel()
                        await asyncio.gather(reader, return_exceptions=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                log.warning("ARI events: %s: %s", type(exc).__name__, exc)
            finally:
                was = self._connected.is_set()
                self._connected.clear()
                if was and self.on_disconnect:
                    try:
                        self.on_disconnect()
                    except Exception:  # noqa: BLE001
                        log.exception("on_disconnect failed")
            if self._closed:
                break
            delay = self.backoff.next()
            log.info("ARI events: reconnecting in %.2fs", delay)
            await asyncio.sleep(delay)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    event = json.loads(msg.data)
                except ValueError:
                    log.warning("ARI events: not JSON: %.200s", msg.data)
                    continue
                self.dispatch(event)
            elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        log.warning("ARI events socket closed")

    def dispatch(self, event: dict) -> None:
        """Queue an event for its key's worker; never blocks, never awaits."""
        key = event_key(event)
        q = self._queues[key]
        q.append(event)
        self.max_backlog = max(self.max_backlog, len(q))
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._work(key), name=f"ari-{key}")

    async def _work(self, key: str) -> None:
        q = self._queues[key]
        try:
            while q:
                # close() cancelled this worker, the cancel swallowed by on_event's store calls
                # (the last guard, dialguard/cancel.py): the rest is dropped
                cancel.check()
                event = q.popleft()
                if self.on_event is None:
                    continue
                try:
                    await self.on_event(event)
                except Exception:  # noqa: BLE001 - one bad event must not stop the channel
                    log.exception("handler failed for %s event on %s", event.get("type"), key)
        finally:
            self._workers.pop(key, None)
            if not q:
                self._queues.pop(key, None)
            elif not self._closed:  # appended while finishing: keep the order
                self._workers[key] = asyncio.create_task(self._work(key), name=f"ari-{key}")

    async def drain(self) -> None:
        """Wait until every queued event has been handled (tests, shutdown)."""
        while self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        self._connected.clear()
        if self._run_task:
            self._run_task.cancel()
            await asyncio.gather(self._run_task, return_exceptions=True)
        for t in list(self._workers.values()):
            t.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        if self._session is not None and not self._session.closed:
            await self._session.close()
