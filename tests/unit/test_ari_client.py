"""ARI client protocol tests against a local aiohttp server playing Asterisk."""

from __future__ import annotations

import asyncio
import base64
import json
import random

import pytest
from aiohttp import WSMsgType, web

from ari_app.client import AriClient, AriError, AriUnavailable, Backoff, event_key

PASSWORD = "p&ss#w:rd@x?y=1"


class FakeAri:
    """A minimal ARI: checks Basic auth, serves REST and an events socket it can drop."""

    def __init__(self):
        self.auth_seen: list[str] = []
        self.urls_seen: list[str] = []
        self.sockets: list[web.WebSocketResponse] = []
        self.ws_connects = 0
        self.refuse_ws = 0  # refuse the next N socket upgrades
        self.inflight = 0
        self.max_inflight = 0
        self.slow = 0.0
        self.app = web.Application()
        self.app.router.add_get("/ari/events", self.events)
        self.app.router.add_get("/ari/channels", self.channels)
        self.app.router.add_post("/ari/channels/{id}", self.originate)

    def _check(self, request) -> None:
        self.urls_seen.append(str(request.rel_url))
        self.auth_seen.append(request.headers.get("Authorization", ""))
        want = "Basic " + base64.b64encode(f"dialguard:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != want:
            raise web.HTTPUnauthorized()

    async def events(self, request):
        self._check(request)
        if self.refuse_ws > 0:
            self.refuse_ws -= 1
            raise web.HTTPServiceUnavailable()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws_connects += 1
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type == WSMsgType.CLOSE:
                break
        return ws

    async def channels(self, request):
        self._check(request)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await asyncio.sleep(self.slow)
        finally:
            self.inflight -= 1
        return web.json_response([{"id": "c1"}])

    async def originate(self, request):
        self._check(request)
        if request.match_info["id"] == "exists":
            return web.json_response({"message": "Channel with given unique ID already exists"}, status=409)
        return web.json_response({"id": request.match_info["id"], "q": dict(request.query)})

    async def send(self, event: dict) -> None:
        await self.sockets[-1].send_str(json.dumps(event))

    async def drop(self) -> None:
        for ws in self.sockets:
            await ws.close()


@pytest.fixture
async def ari(aiohttp_unused_port=None):
    fake = FakeAri()
    runner = web.AppRunner(fake.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


def client(fake, **kw) -> AriClient:
    kw.setdefault("backoff", Backoff(base=0.02, cap=0.1, rng=random.Random(1)))
    return AriClient(fake.url, "dialguard", PASSWORD, "test-app", **kw)


async def until(cond, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def ev(kind: str, channel: str | None = None, n: int = 0, **extra) -> dict:
    e = {"type": kind, "n": n, **extra}
    if channel:
        e["channel"] = {"id": channel}
    return e


def test_credentials_never_in_url():
    with pytest.raises(ValueError):
        AriClient("http://u:p@127.0.0.1:1", "u", "p", "a")


def test_backoff_grows_capped_and_resets():
    b = Backoff(base=0.1, cap=1.0, rng=random.Random(3))
    delays = [b.next() for _ in range(8)]
    assert all(0.05 <= d <= 1.0 for d in delays)
    assert delays[0] <= 0.1 and delays[-1] >= 0.5
    b.reset()
    assert b.next() <= 0.1


def test_event_key():
    assert event_key({"channel": {"id": "a"}, "bridge": {"id": "b"}}) == "ch:a"
    assert event_key({"bridge": {"id": "b"}}) == "br:b"
    assert event_key({"type": "ApplicationReplaced"}) == "global"


async def test_rest_with_header_auth_and_special_password(ari):
    c = client(ari)
    try:
        assert await c.get("channels") == [{"id": "c1"}]
        r = await c.post("channels/abc", endpoint="PJSIP/1@carrier", app="x", callerId="+1 <2>")
        assert r["q"]["callerId"] == "+1 <2>"
        with pytest.raises(AriError) as exc:
            await c.post("channels/exists", endpoint="PJSIP/1@carrier")
        assert exc.value.status == 409
    finally:
        await c.close()
    assert all(PASSWORD not in u and "dialguard" not in u for u in ari.urls_seen)
    assert all(a.startswith("Basic ") for a in ari.auth_seen)


async def test_closed_client_never_retries_on_closed_session(ari):
    c = client(ari)
    await c.get("channels")
    await c.close()
    with pytest.raises(AriUnavailable):
        await c.get("channels")


async def test_pool_is_bounded(ari):
    ari.slow = 0.05
    c = client(ari, pool_size=3)
    try:
        await asyncio.gather(*(c.get("channels") for _ in range(20)))
    finally:
        await c.close()
    assert ari.max_inflight == 3


async def test_reconnects_with_backoff_and_reconciles_every_time(ari):
    reconciles = []
    seen = []

    async def on_event(e):
        seen.append(e["n"])

    async def on_connect():
        reconciles.append(await c.get("channels"))  # REST works inside the hook

    ari.refuse_ws = 3  # the first three upgrades fail: backoff, then connect
    c = client(ari, on_event=on_event, on_connect=on_connect)
    c.start()
    try:
        assert await c.wait_healthy(5)
        assert ari.ws_connects == 1 and len(reconciles) == 1
        await ari.send(ev("StasisStart", "c1", 1))
        await until(lambda: seen == [1])
        await ari.drop()  # Asterisk restarts
        await until(lambda: not c.healthy)
        await until(lambda: c.healthy)
        assert ari.ws_connects == 2 and len(reconciles) == 2
        await ari.send(ev("ChannelDestroyed", "c1", 2))
        await until(lambda: seen == [1, 2])
    finally:
        await c.close()
    assert not c.healthy


async def test_not_healthy_until_reconcile_done(ari):
    gate = asyncio.Event()

    async def on_connect():
        await gate.wait()

    c = client(ari, on_connect=on_connect)
    c.start()
    try:
        await until(lambda: ari.ws_connects == 1)
        await asyncio.sleep(0.05)
        assert not c.healthy
        gate.set()
        assert await c.wait_healthy(2)
    finally:
        await c.close()


async def test_per_channel_order_and_slow_consumer_does_not_block_reader(ari):
    seen: dict[str, list[int]] = {}
    release = asyncio.Event()

    async def on_event(e):
        ch = e["channel"]["id"]
        if ch == "slow":
            await release.wait()
        else:
            await asyncio.sleep(random.random() / 1000)
        seen.setdefault(ch, []).append(e["n"])

    c = client(ari, on_event=on_event)
    c.start()
    try:
        assert await c.wait_healthy(5)
        for n in range(200):
            for ch in ("slow", "a", "b"):
                await ari.send(ev("ChannelVarset", ch, n))
        # a and b are fully handled, in order, while "slow" is stuck on its first event
        await until(lambda: len(seen.get("a", [])) == 200 and len(seen.get("b", [])) == 200)
        assert seen["a"] == list(range(200)) and seen["b"] == list(range(200))
        assert "slow" not in seen
        release.set()
        await until(lambda: len(seen.get("slow", [])) == 200)
        assert seen["slow"] == list(range(200))
        assert c.max_backlog >= 100  # the reader kept reading while the handler was stuck
    finally:
        await c.close()


async def test_handler_exception_does_not_stop_channel(ari):
    seen = []

    async def on_event(e):
        if e["n"] == 1:
            raise RuntimeError("boom")
        seen.append(e["n"])

    c = client(ari, on_event=on_event)
    for n in range(3):
        c.dispatch(ev("X", "c", n))
    await c.drain()
    await c.close()
    assert seen == [0, 2]


async def test_wrong_credentials_keep_retrying_without_health(ari):
    c = AriClient(ari.url, "dialguard", "wrong", "a", backoff=Backoff(base=0.01, cap=0.02))
    c.start()
    try:
        await until(lambda: c.backoff.attempt >= 3)
        assert not c.healthy
    finally:
        await c.close()


async def swallow_cancel() -> None:
    """Waits, and returns when cancelled: a cancel swallowed on the way."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        pass


async def test_close_ends_the_events_task_when_its_reconcile_swallowed_the_cancel(ari):
    """close() cancels the events task; a reconcile that swallows that cancel (as psycopg_pool's
    waits under asyncio.wait_for can on Python 3.11, dialguard/cancel.py) must not leave
    the task waiting on the socket for ever (and close() with it)."""
    entered = asyncio.Event()

    async def on_connect():
        entered.set()
        await swallow_cancel()

    c = client(ari, on_connect=on_connect)
    c.start()
    await asyncio.wait_for(entered.wait(), 5)
    closing = asyncio.ensure_future(c.close())
    done, _ = await asyncio.wait([closing], timeout=5)
    assert done, "close() waits on the events task for ever"
    assert not c.healthy


async def test_a_worker_whose_handler_swallowed_the_cancel_handles_no_more_events(ari):
    seen = []
    first = asyncio.Event()

    async def on_event(e):
        seen.append(e["n"])
        if e["n"] == 1:
            first.set()
            await swallow_cancel()

    c = client(ari, on_event=on_event)
    c.start()
    try:
        assert await c.wait_healthy(5)
        for n in range(1, 6):
            await ari.send(ev("ChannelVarset", "c1", n))
        await asyncio.wait_for(first.wait(), 5)
        await until(lambda: len(c._queues.get("ch:c1", ())) == 4)  # 2..5 queued behind it
    finally:
        await c.close()
    assert seen == [1]  # closed: the queued events are dropped, not handled after close()
