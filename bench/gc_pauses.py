"""The garbage collector's pauses in a process that decides: `Engine.decide()`
on distinct numbers (as a campaign dials), 16 at a time, in one process on the
stack's Redis (a namespace of its own, dropped afterwards), with gc callbacks
timing every collection by generation. A full collection stops the FastAGI
server's event loop: every check arriving meanwhile waits for it.

    .venv/bin/python bench/gc_pauses.py [--decisions 80000] [--pool 200 --context-ttl 0.1]

`--pool N` gives the campaign N caller IDs to pick from (as bench/cps.py
does); `--context-ttl S` refreshes the campaign's context every S seconds
instead of every 2 (decider.CONTEXT_TTL), so that a run of seconds sees as
many refreshes as a server running for minutes.

Prints per generation: collections, the longest and the total pause, and the
objects the collector still tracks at the end (what a full collection walks).
For a before/after, run it with PYTHONPATH=<checkout of the older tree>.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from sipp import load_stack_env  # noqa: E402

load_stack_env()

from dialguard.config import Settings  # noqa: E402
from dialguard.decision.models import DecisionRequest  # noqa: E402
from dialguard.engine import Engine  # noqa: E402
from dialguard.rules import Policy  # noqa: E402

AT = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)  # a Monday, 11:00 in Beijing: calls allowed


async def run(decisions: int, concurrency: int, pool: int) -> None:
    e = await Engine.create(Settings(), Policy.load("cn-default"), prefix=f"dgbench-gc:{uuid.uuid4().hex[:8]}")
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started: list[float] = [0.0]

    def timed(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append((time.perf_counter() - started[0]) * 1000)

    try:
        await e.set_campaign("gc-bench", True)
        if pool:
            async with e.redis.pipeline(transaction=False) as pipe:
                for i in range(pool):
                    cid = f"+8610{5000_0000 + i:08d}"
                    tag = e.keys.cid_tag(cid)
                    pipe.sadd(e.keys.approved_cids, tag)
                    pipe.hset(e.keys.pool("gc-bench"), tag, e.sealer.seal(cid))
                await pipe.execute()
        gc.collect()
        gc.freeze()  # as the FastAGI server does after its start-up
        gc.callbacks.append(timed)
        todo = iter(range(decisions))

        async def worker() -> None:
            for i in todo:
                await e.decide(DecisionRequest(number=f"+86138{random.randrange(10**8):08d}", campaign="gc-bench",
                                               agent=f"a{i % 50}"), now=AT)

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        gc.callbacks.remove(timed)
        print(f"{decisions} decisions at concurrency {concurrency}: {wall:.1f} s, {cpu / decisions * 1e6:.0f} us CPU each")
        for g, p in pauses.items():
            if p:
                print(f"  gen{g}: {len(p)} collections, longest {max(p):.1f} ms, total {sum(p):.0f} ms")
            else:
                print(f"  gen{g}: no collection")
        tracked = Counter(type(o).__name__ for o in gc.get_objects())
        print(f"  objects tracked at the end: {sum(tracked.values())} (most: {tracked.most_common(3)})")
    finally:
        async for k in e.redis.scan_iter(match=e.keys.prefix + "*", count=5000):
            await e.redis.delete(k)
        await e.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=80000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--pool", type=int, default=0, help="caller IDs in the campaign's pool (default none)")
    ap.add_argument("--context-ttl", type=float, default=None,
                    help="seconds a campaign's context is cached (default the decider's CONTEXT_TTL)")
    args = ap.parse_args()
    import uvloop

    if args.context_ttl is not None:
        import dialguard.decision.decider as decider

        decider.CONTEXT_TTL = args.context_ttl
    uvloop.run(run(args.decisions, args.concurrency, args.pool))
    return 0


if __name__ == "__main__":
    sys.exit(main())
