"""The FastAGI server freezes its start-up heap out of the cyclic GC once it
accepts sessions (agi/server.py serve): what start-up built (modules, rule
packs, the warmed engine) is never walked again by a full collection, which
would hold every check in flight (docs/BENCHMARKS.md, "Stop 16, the check tail")."""

import asyncio
import gc
import os
import signal

from agi import server as agi_server


async def test_start_up_heap_frozen_after_the_server_accepts(monkeypatch):
    order: list[str] = []
    real_start, real_freeze = agi_server.FastAGIServer.start, gc.freeze

    async def start(self):
        order.append("warm" if self.engines.engine is not None else "cold")
        await real_start(self)
        order.append("accepting")

    def freeze():
        real_freeze()
        order.append(f"frozen {gc.get_freeze_count() > 0}")
        os.kill(os.getpid(), signal.SIGTERM)  # serve's handler: shut down, return

    monkeypatch.setenv("DIALGUARD_FAKE_ENGINE", "allow")
    # not what is tested, and seconds of CPU: the shifted run at load 8 spent the
    # whole 10 s bound decompressing the ZIP data set
    monkeypatch.setattr("dialguard.location.warm_up", lambda: None)
    monkeypatch.setattr(agi_server.FastAGIServer, "start", start)
    monkeypatch.setattr(agi_server.gc, "freeze", freeze)
    args = agi_server.build_parser().parse_args(
        ["--port", "0", "--metrics-port", "0", "--engine-factory", "fakes.engine:fake_engine_factory"])
    try:
        assert await asyncio.wait_for(agi_server.serve(args), 60) == 0
    finally:
        gc.unfreeze()
    assert order == ["warm", "accepting", "frozen True"]
