"""Round-trip latency of a complete FastAGI ``check`` session at the socket
(connect, env block, 7 SET VARIABLE exchanges, close), with the fake engine:
the cost the AGI layer adds on top of the engine's decision. The server runs
as its own process (``dialguard-agi-server``, uvloop), as in production."""

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from agi.client import agi_call, measure_check_latency

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def server_process():
    procs = []

    async def start(*extra, fake="allow", delay="0"):
        port = free_port()
        env = dict(os.environ, DIALGUARD_AGI_ENGINE_FACTORY="fakes.engine:fake_engine_factory",
                   DIALGUARD_FAKE_ENGINE=fake, DIALGUARD_FAKE_ENGINE_DELAY_S=delay,
                   PYTHONPATH=os.pathsep.join((str(ROOT), str(ROOT / "tests"))), DIALGUARD_LOG_LEVEL="WARNING")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agi.server", "--port", str(port), "--workers", "1", *extra,
            stderr=asyncio.subprocess.PIPE, env=env)
        procs.append(proc)
        deadline = time.monotonic() + 60  # generous: a loaded machine (parallel test workers) starts it slowly
        while time.monotonic() < deadline and proc.returncode is None:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                return proc, port
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError("server did not start")

    yield start
    for p in procs:
        if p.returncode is None:
            p.kill()
            await p.wait()


async def test_check_round_trip_latency(server_process, capsys):
    proc, port = await server_process()
    await measure_check_latency("127.0.0.1", port, n=100)  # warm up
    seq = await measure_check_latency("127.0.0.1", port, n=1000)
    par = await measure_check_latency("127.0.0.1", port, n=2000, concurrency=16)
    with capsys.disabled():
        print(f"\nFastAGI check round trip (server process, fake engine):\n"
              f"  sequential    {seq}\n  16 concurrent {par}")
    # Loose bounds (shared 2-core CI machine); the numbers are printed above.
    assert seq["p50_ms"] < 20 and seq["p99_ms"] < 100


async def test_sigterm_finishes_sessions_in_flight(server_process):
    proc, port = await server_process(delay="0.7")
    inflight = asyncio.create_task(agi_call("127.0.0.1", port, "check", ("+8613800138000", "c1", "a1")))
    await asyncio.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    res = await inflight
    assert res.variables["DIALGUARD_RESULT"] == "ALLOW"
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_server_starts_with_engine_down_and_denies(server_process):
    proc, port = await server_process(fake="down")
    res = await agi_call("127.0.0.1", port, "check", ("+8613800138000", "c1", "a1"))
    assert res.variables["DIALGUARD_RESULT"] == "DENY"
    assert res.variables["DIALGUARD_REASONS"] == "guard_unavailable"
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    logs = [json.loads(l) for l in (await proc.stderr.read()).decode().splitlines() if l.startswith("{")]
    assert any("engine could not start" in l["msg"] for l in logs)
