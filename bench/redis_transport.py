"""Redis over loopback TCP against its Unix socket: CPU a round trip, both ends.

    .venv/bin/python bench/redis_transport.py [--ops 20000] [--rounds 5] [--concurrency 1,16] [--arg-bytes 1500]

After `make up` (the stack's Redis listens on 127.0.0.1 and on
DIALGUARD_REDIS_SOCKET). The hot path's pipelined client
(dialguard.redisclient.RedisClient, uvloop) sends `--ops` EVALSHAs of a script
that only returns its key, with an argument of `--arg-bytes` (about a decision
plan's size), `--concurrency` at a time (1: every call waits for its reply and
each end sleeps and wakes once a call, as a lone session does; 16: calls queue
and the client batches them in one write), over TCP and over the socket in
turn, `--rounds` times alternating. Each run prints this process's CPU a call
(user and kernel, getrusage) and Redis's (INFO cpu, user and kernel, its main
thread), and the wall time a call; the last lines give the medians and the
unix/TCP ratios. Other work on the machine moves every figure: compare the
pairs of one run, never runs of different sittings.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from sipp import load_stack_env  # noqa: E402

load_stack_env()

import redis  # noqa: E402

from dialguard.config import Settings  # noqa: E402
from dialguard.redisclient import RedisClient  # noqa: E402

SOURCE = "-- bench/redis_transport.py\nreturn KEYS[1]"


class _Script:
    source = SOURCE
    sha = hashlib.sha1(SOURCE.encode()).hexdigest()


def unix_url(tcp_url: str, path: str) -> str:
    u = urlsplit(tcp_url)
    auth = u.netloc.rsplit("@", 1)[0] + "@" if "@" in u.netloc else ""
    db = (u.path or "/0").strip("/") or "0"
    return urlunsplit(("unix", auth, path, f"db={db}", ""))


def redis_cpu(r: redis.Redis) -> tuple[float, float]:
    info = r.info("cpu")
    return (float(info.get("used_cpu_user_main_thread", info["used_cpu_user"])),
            float(info.get("used_cpu_sys_main_thread", info["used_cpu_sys"])))


async def run(url: str, ops: int, concurrency: int, arg: str) -> float:
    c = RedisClient(url, timeout=5.0)
    key = f"dgbench:transport:{uuid.uuid4().hex[:8]}"
    await c.evalsha(_Script, [key], [arg])  # connect and load the script outside the count
    left = ops

    async def worker():
        nonlocal left
        while left > 0:
            left -= 1
            await c.evalsha(_Script, [key], [arg])

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    await c.close()
    return wall


def measure(admin: redis.Redis, url: str, ops: int, concurrency: int, arg: str) -> dict:
    import uvloop

    r0, u0 = redis_cpu(admin), resource.getrusage(resource.RUSAGE_SELF)
    wall = uvloop.run(run(url, ops, concurrency, arg))
    r1, u1 = redis_cpu(admin), resource.getrusage(resource.RUSAGE_SELF)
    us = 1e6 / ops
    return {"client_user": (u1.ru_utime - u0.ru_utime) * us, "client_sys": (u1.ru_stime - u0.ru_stime) * us,
            "redis_user": (r1[0] - r0[0]) * us, "redis_sys": (r1[1] - r0[1]) * us, "wall": wall * us}


def load_pct(seconds: float = 1.0) -> float:
    def sample():
        f = open("/proc/stat").readline().split()[1:]
        v = [int(x) for x in f]
        return sum(v), v[3] + v[4]
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--arg-bytes", type=int, default=1500)
    args = ap.parse_args()
    sock = os.environ.get("DIALGUARD_REDIS_SOCKET")
    if not sock or not os.path.exists(sock):
        print("no DIALGUARD_REDIS_SOCKET: run `make up` (its Redis listens on a Unix socket too)", file=sys.stderr)
        return 3
    tcp = Settings().redis_url
    urls = {"tcp": tcp, "unix": unix_url(tcp, sock)}
    admin = redis.Redis.from_url(tcp)
    admin.script_load(SOURCE)
    arg = "x" * args.arg_bytes
    print(f"bench/redis_transport.py: {args.ops} EVALSHAs a run, argument {args.arg_bytes} bytes, "
          f"{os.cpu_count()} CPUs ({load_pct():.0f} % busy before), load average {os.getloadavg()[0]:.1f}; "
          f"Unix socket {sock}; µs a call")
    results: dict[tuple[int, str], list[dict]] = {}
    for rnd in range(args.rounds):
        order = ("tcp", "unix") if rnd % 2 == 0 else ("unix", "tcp")
        for conc in [int(x) for x in args.concurrency.split(",") if x.strip()]:
            for t in order:
                m = measure(admin, urls[t], args.ops, conc, arg)
                results.setdefault((conc, t), []).append(m)
                print(f"  round {rnd + 1} concurrency {conc:>3} {t:<4}: client {m['client_user'] + m['client_sys']:6.1f} "
                      f"(kernel {m['client_sys']:5.1f}), Redis {m['redis_user'] + m['redis_sys']:5.1f} "
                      f"(kernel {m['redis_sys']:5.1f}), wall {m['wall']:6.1f}; load average {os.getloadavg()[0]:.1f}",
                      flush=True)
    print("medians (µs a call), unix/TCP:")
    for conc in sorted({c for c, _ in results}):
        med = {t: {k: statistics.median(m[k] for m in results[(conc, t)]) for k in results[(conc, t)][0]}
               for t in ("tcp", "unix")}
        row = []
        for name, keys in (("client", ("client_user", "client_sys")), ("client kernel", ("client_sys",)),
                           ("Redis", ("redis_user", "redis_sys")), ("Redis kernel", ("redis_sys",)),
                           ("wall", ("wall",))):
            a, b = (sum(med[t][k] for k in keys) for t in ("tcp", "unix"))
            row.append(f"{name} {a:.1f} -> {b:.1f} ({b / a if a else 0:.2f})")
        print(f"  concurrency {conc:>3}: " + ", ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
