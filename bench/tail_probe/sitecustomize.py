"""Event-loop stall recorder for bench/check_tail.py (loaded as `sitecustomize`
when this directory is on PYTHONPATH and DGPROBE_DIR is set; nothing otherwise).

In every process started so (the FastAGI server, the bench's client) it writes
DGPROBE_DIR/<name>-<pid>.jsonl, all times CLOCK_MONOTONIC seconds (the same
clock in every process, so the files line up with the client's check trace):
- {"gc": gen, "t": start, "ms": duration, "n": collected, "rq": ms runnable
  but not running inside it}: every collection; the first three full ones
  also with a census of the objects they walked (outside the frozen heap);
- {"lag": ms, "t": when the tick ran, "cpu": the thread's CPU ms since the
  previous tick, "rq": ms spent runnable but not running (schedstat) since
  then}: a 1 ms timer on the event loop that ran late by more than 2 ms;
- {"span": name, "t": start, "ms": wall, "cpu": the thread's CPU meanwhile}:
  the server's metrics refresh and its parts (caller-ID gauges, calendars),
  and, with DGPROBE_SESSIONS=1, its sessions (run_session) and decisions
  (Decider.decide) over 2 ms (thousands of records a second at 2,000
  checks/s: enough to turn the server's slack into a queue there).
Measurement scaffolding only: the 1 ms timer and its two /proc reads cost a
few per cent of a core, so compare probed runs with probed runs. Being a
`sitecustomize`, it hides any other one on the path while it is there.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time

_DIR = os.environ.get("DGPROBE_DIR")
_TICK = 0.001
_LAG_MS = 2.0


def _schedstat() -> tuple[int, int]:
    try:
        with open("/proc/thread-self/schedstat") as f:
            run, wait, _ = f.read().split()
        return int(run), int(wait)
    except OSError:
        return 0, 0


_ARGV0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
_NAME = {"dialguard-agi-server": "server", "cps.py": "client", "server.py": "server"}.get(_ARGV0)

if _DIR and _NAME:
    _name = _NAME
    _events: list[dict] = []
    _gc_t0 = [0.0]

    def _flush() -> None:
        if not _events:
            return
        with open(os.path.join(_DIR, f"{_name}-{os.getpid()}.jsonl"), "a") as f:
            f.write("".join(json.dumps(e) + "\n" for e in _events))
        _events.clear()

    atexit.register(_flush)

    _gc_rq = [0]
    _census = [0]

    def _on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            _gc_rq[0] = _schedstat()[1]
            _gc_t0[0] = time.perf_counter()
            return
        ms = round((time.perf_counter() - _gc_t0[0]) * 1000, 3)
        e = {"gc": info["generation"], "t": _gc_t0[0], "ms": ms, "n": info["collected"],
             "rq": round((_schedstat()[1] - _gc_rq[0]) / 1e6, 3)}
        if info["generation"] == 2 and _census[0] < 3:
            # what a full collection walked: the objects tracked outside the frozen start-up heap
            _census[0] += 1
            from collections import Counter
            objs = gc.get_objects(2)
            e["gen2_objects"] = len(objs)
            e["gen2_types"] = Counter(type(o).__qualname__ for o in objs).most_common(12)
            e["frozen"] = gc.get_freeze_count()
            del objs
        _events.append(e)

    gc.callbacks.append(_on_gc)

    def _span(mod, name: str) -> None:
        fn = getattr(mod, name, None)
        if fn is None or getattr(fn, "_probed", False):
            return

        async def wrapped(*a, **kw):
            # wall time, and the thread's CPU meanwhile (which includes the sessions
            # the loop served while this one awaited: an upper bound of its own)
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return await fn(*a, **kw)
            finally:
                _events.append({"span": name, "t": t0, "ms": round((time.perf_counter() - t0) * 1000, 3),
                                "cpu": round((time.thread_time() - c0) * 1000, 3)})

        wrapped._probed = True
        setattr(mod, name, wrapped)

    def _slow(owner, attr: str, label: str) -> bool:
        """owner.attr (a coroutine function) timed: the calls over 2 ms of wall
        time as spans named `label`. False when not there (yet)."""
        fn = getattr(owner, attr, None)
        if fn is None:
            return False
        if getattr(fn, "_probed", False):
            return True

        async def timed(*a, **kw):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return await fn(*a, **kw)
            finally:
                ms = (time.perf_counter() - t0) * 1000
                if ms > _LAG_MS:
                    _events.append({"span": label, "t": t0, "ms": round(ms, 3),
                                    "cpu": round((time.thread_time() - c0) * 1000, 3)})

        timed._probed = True
        setattr(owner, attr, timed)
        return True

    def _wrap_server() -> bool:
        """The server's sessions (from the environment block to the close) and
        its decisions (Decider.decide: the Redis round trip and whatever held the
        loop meanwhile) over 2 ms; the decider is imported once the engine is made."""
        done = True
        if "agi.server" in sys.modules:
            done &= _slow(sys.modules["agi.server"], "run_session", "session > 2 ms")
        dec = sys.modules.get("dialguard.decision.decider")
        done &= dec is not None and _slow(dec.Decider, "decide", "decide > 2 ms")
        return done

    def _start_probe() -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        if "dialguard.metrics" in sys.modules:
            m = sys.modules["dialguard.metrics"]
            for name in ("refresh_from_engine", "_refresh_caller_ids", "calendar_status", "calendar_degraded"):
                _span(m, name)
        # opt-in: thousands of spans a second slow a server at 2,000 checks/s into a queue
        wrapped = [_name != "server" or not os.environ.get("DGPROBE_SESSIONS") or _wrap_server()]
        state = {"due": time.perf_counter() + _TICK, "cpu": time.thread_time(), "rq": _schedstat()[1], "flush": 0.0}

        def tick() -> None:
            now = time.perf_counter()  # loop.time() is uvloop's cached, millisecond clock
            cpu, rq = time.thread_time(), _schedstat()[1]
            lag = (now - state["due"]) * 1000
            if lag > _LAG_MS:
                _events.append({"lag": round(lag, 3), "t": now, "cpu": round((cpu - state["cpu"]) * 1000, 3),
                                "rq": round((rq - state["rq"]) / 1e6, 3)})
            state.update(due=now + _TICK, cpu=cpu, rq=rq)
            if now - state["flush"] > 1.0:
                state["flush"] = now
                _flush()
                if not wrapped[0]:
                    wrapped[0] = _wrap_server()
            loop.call_later(_TICK, tick)

        loop.call_later(_TICK, tick)

    def _wrap_run(run):
        def probed_run(main, *a, **kw):
            async def with_probe():
                _start_probe()
                return await main

            return run(with_probe(), *a, **kw)

        return probed_run

    try:
        import uvloop

        uvloop.run = _wrap_run(uvloop.run)
    except ImportError:
        pass
