"""Real checks while one local process floods the FastAGI server (issue 13).

    set -a; source .stack/env; set +a
    .venv/bin/python bench/flood.py [--connections 10000] [--rate 50] [--seconds 20]

Starts a FastAGI server of its own (one worker, the real engine on the stack's
Redis in a key namespace of its own, an open-all-day rules pack, defaults of
the server otherwise) and measures `check` sessions at --rate per second from
a Python AGI client, in three phases of one run, side by side:

- baseline: nothing else connected;
- held flood: another process opens --connections connections (a share
  --slow-share sends half an environment block, the rest nothing) and holds
  them; the server runs with an environment deadline longer than the phase,
  so all of them stay in its table while the checks run;
- churn flood: the server's defaults (2 s to send the environment block), and
  every connection the server closes is opened again at once: --connections
  open at any time, thousands of new ones a second.

Per phase: checks answered (a decision id and DIALGUARD_RESULT set; of those,
how many were guard_unavailable: Redis too slow) / failed, p50 / p99 / max of
the whole session at the socket, the server's evictions and refusals (from
its /metrics), the flood's connections still open at the end and how many it
(re)opened. Last line: the p99 ratio flood / baseline. Target: p99 <= 20 ms at
50 checks/s with 10,000 idle or slow connections, no real check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agi.client import agi_call# noqa: E402

PACK = """pack: bench-flood
version: "1"
default_region: CN
hours:
  zone: callee
  weekly: {all: ["00:00-24:00"]}
caps:
  - {id: per-day, max: 2, window: {rolling: 24h}, scope: number}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the flooder (a process of its own) ---------------------------------------------------
async def flood(port: int, n: int, slow_share: float, churn: bool, status_path: str) -> None:
    stats = {"opened": 0, "open": 0, "failed": 0}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    sem = asyncio.Semaphore(256)  # connects in flight

    async def one(i: int) -> None:
        while not stop.is_set():
            async with sem:
                try:
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    stats["failed"] += 1
                    await asyncio.sleep(0.05)
                    continue
            stats["opened"] += 1
            stats["open"] += 1
            if i < n * slow_share:
                w.write(b"agi_network: yes\n")  # half a block, then silence
            try:
                while not stop.is_set() and await r.read(4096):
                    pass
            except OSError:
                pass
            stats["open"] -= 1
            w.close()
            if not churn:
                return

    async def report() -> None:
        while not stop.is_set():
            Path(status_path).write_text(json.dumps(stats))
            await asyncio.sleep(0.2)

    rep = asyncio.create_task(report())
    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await stop.wait()
    Path(status_path).write_text(json.dumps(stats))
    for t in tasks:
        t.cancel()
    rep.cancel()


# -- the measuring side ------------------------------------------------------------------------
def metric(port: int, name: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) + 1:].partition("} ")
            out[labels] = float(value)
    return out


def server_counts(metrics_port: int) -> dict[str, float]:
    ev = metric(metrics_port, "dialguard_agi_evicted_total")
    rf = metric(metrics_port, "dialguard_agi_refused_total")
    return {"evicted": sum(ev.values()), "refused": sum(rf.values())}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process so far."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy(seconds: float = 1.0) -> float:
    def snap():
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = snap()
    time.sleep(seconds)
    t1, i1 = snap()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def numbers(n: int) -> list[str]:
    rnd = random.SystemRandom()
    return [f"139{rnd.randrange(10**8):08d}" for _ in range(n)]


async def checks(port: int, rate: float, seconds: float, campaign: str) -> dict:
    n = int(rate * seconds)
    lat: list[float] = []
    failed = allow = unavailable = 0
    why: dict[str, int] = {}
    start = time.perf_counter()

    async def one(i: int, number: str) -> None:
        nonlocal failed, allow, unavailable
        t = time.perf_counter()
        try:
            res = await asyncio.wait_for(agi_call("127.0.0.1", port, "check", (number, campaign, "bench"),
                                                  uniqueid=f"{int(start)}.{i}"), 10)
            v = res.variables.get("DIALGUARD_RESULT")
        except (OSError, asyncio.TimeoutError, Exception) as exc:  # noqa: BLE001 - counted as failed
            v, res = None, None
            why[type(exc).__name__] = why.get(type(exc).__name__, 0) + 1
        if v not in ("ALLOW", "DENY") or not res.variables.get("DIALGUARD_DECISION_ID"):
            failed += 1  # no answer: refused, closed, or no decision (guard_unavailable before the engine)
            if res is not None:
                k = f"{v}:{res.variables.get('DIALGUARD_REASONS')}"
                why[k] = why.get(k, 0) + 1
            return
        unavailable += res.variables.get("DIALGUARD_REASONS") == "guard_unavailable"  # the store was slow
        allow += v == "ALLOW"
        lat.append((time.perf_counter() - t) * 1000)

    tasks = []
    for i, number in enumerate(numbers(n)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, number)))
    await asyncio.gather(*tasks)
    lat.sort()

    def pct(q):
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else float("nan")

    return {"checks": n, "answered": len(lat), "failed": failed, "failures": why, "allowed": allow, "guard_unavailable": unavailable,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(lat[-1], 2) if lat else float("nan")}


def start_server(env: dict, port: int, metrics_port: int, extra=()) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "agi.server", "--port", str(port), "--workers", "1",
                             "--metrics-port", str(metrics_port), "--log-level", "WARNING", *extra],
                            cwd=ROOT, env=env, stderr=open(env["BENCH_LOG"], "ab"))
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"FastAGI server did not start (log: {env['BENCH_LOG']})")


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


async def main_async(a) -> None:
    from dialguard.config import Settings
    from dialguard.engine import Engine
    from dialguard.rules import Policy
    from dialguard.simulate import _drop_namespace

    busy = machine_busy()
    nofile = raise_nofile()
    if nofile < a.connections + 256:
        raise SystemExit(f"open files limit {nofile}: too low for {a.connections} connections (ulimit -n)")
    work = Path(tempfile.mkdtemp(prefix="dg-flood-"))
    pack = work / "pack.yaml"
    pack.write_text(PACK)
    prefix = f"dgbench-flood:{uuid.uuid4().hex[:8]}"
    campaign = "flood"
    env = dict(os.environ, DIALGUARD_KEY_PREFIX=prefix, DIALGUARD_RULES=str(pack), DIALGUARD_TEST_CLOCK="0",
               DIALGUARD_SPOOL_DIR=str(work / "spool"), BENCH_LOG=str(work / "agi.log"), PYTHONPATH=str(ROOT))
    settings = Settings()
    eng = await Engine.create(settings, Policy.load(str(pack)), prefix=prefix)
    await eng.set_campaign(campaign)
    rows = []
    server = None
    # held: a deadline longer than the phase, so every flood connection stays
    # in the table while the checks run (what 10,000 idle connections cost);
    # churn: the default deadline (2 s), every closed connection reopened at once
    phases = (("baseline", None, ()), ("held flood", "idle", ("--env-timeout", "600", "--session-timeout", "600")),
              ("churn flood", "churn", ()))
    wanted = set(a.phases.split(","))
    phases = tuple(p for p in phases if p[0].split()[0] in wanted)
    try:
        for phase, mode, extra in phases:
            port, mport = free_port(), free_port()
            server = start_server(env, port, mport, extra)
            await checks(port, a.rate, 2, campaign)  # warm up
            flooder = status = None
            if mode:
                status = work / f"{mode}.json"
                flooder = subprocess.Popen([sys.executable, __file__, "--flooder", str(port),
                                            "--connections", str(a.connections), "--slow-share",
                                            str(a.slow_share)] + (["--churn"] if mode == "churn" else []) +
                                           ["--status", str(status)], cwd=ROOT)
                # let it open its connections (the server keeps the newest max_sessions)
                deadline = time.time() + 60
                while time.time() < deadline:
                    await asyncio.sleep(0.5)
                    try:
                        st = json.loads(status.read_text())
                    except (OSError, ValueError):
                        continue
                    if st["opened"] >= a.connections:
                        break
                await asyncio.sleep(1)
            before = server_counts(mport)
            c0, f0, t0 = cpu_s(server.pid), cpu_s(flooder.pid) if flooder else 0.0, time.perf_counter()
            st0 = json.loads(status.read_text()) if flooder else None
            res = await checks(port, a.rate, a.seconds, campaign)
            wall = time.perf_counter() - t0
            after = server_counts(mport)
            res.update(phase=phase, evicted=int(after["evicted"] - before["evicted"]),
                       refused=int(after["refused"] - before["refused"]),
                       server_cpu=round((cpu_s(server.pid) - c0) / wall, 3))
            if flooder:
                st = json.loads(status.read_text())
                res.update(flood_open=st["open"], flood_opened=st["opened"] - st0["opened"],
                           flood_connect_failed=st["failed"], flood_cpu=round((cpu_s(flooder.pid) - f0) / wall, 3))
                flooder.send_signal(signal.SIGTERM)
                flooder.wait(30)
            rows.append(res)
            print(json.dumps(res), flush=True)
            stop_server(server)
            server = None
    finally:
        if server is not None:
            stop_server(server)
        await _drop_namespace(eng.redis, prefix)
        await eng.close()
    print(f"\nFastAGI check at {a.rate:g}/s for {a.seconds:g} s a phase; flood: {a.connections} connections "
          f"from one process ({a.slow_share:.0%} send half an environment block)")
    print(f"machine busy before the run: {busy:.0%}")
    print(f"{'phase':<12} {'answered':>9} {'failed':>6} {'unavail':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'evicted':>8} {'refused':>8} {'flood open/opened':>18} {'CPU server/flood':>17}")
    for r in rows:
        fl = f"{r.get('flood_open', '-')}/{r.get('flood_opened', '-')}"
        cpu = f"{r['server_cpu']:.0%}/{r.get('flood_cpu', 0):.0%}"
        print(f"{r['phase']:<12} {r['answered']:>9} {r['failed']:>6} {r['guard_unavailable']:>7} {r['p50_ms']:>7} {r['p99_ms']:>7} "
              f"{r['max_ms']:>7} {r['evicted']:>8} {r['refused']:>8} {fl:>18} {cpu:>17}")
    if rows and rows[0]["phase"] == "baseline":
        base = rows[0]["p99_ms"]
        print("p99 ratio flood/baseline: " + ", ".join(f"{r['phase']} {r['p99_ms'] / base:.2f}" for r in rows[1:]))
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=50.0, help="real checks per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="per phase")
    ap.add_argument("--slow-share", type=float, default=0.5)
    ap.add_argument("--phases", default="baseline,held,churn", help="which phases to run (comma-separated)")
    ap.add_argument("--flooder", type=int, help=argparse.SUPPRESS)  # internal: the flooding process
    ap.add_argument("--churn", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--status", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.flooder:
        raise_nofile()
        asyncio.run(flood(a.flooder, a.connections, a.slow_share, a.churn, a.status))
        return
    asyncio.run(main_async(a))


if __name__ == "__main__":
    main()
