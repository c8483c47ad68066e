"""What the slow FastAGI checks coincided with.

    DGPROBE_DIR=/tmp/probe PYTHONPATH=bench/tail_probe <restart the stack's FastAGI server>
    DGPROBE_DIR=/tmp/probe PYTHONPATH=bench/tail_probe .venv/bin/python bench/cps.py --configs none \
        --check-rates 300,2000,2000 --saturation-s 0 --check-trace /tmp/probe/trace.jsonl
    .venv/bin/python bench/check_tail.py /tmp/probe [--slow-ms 5]

Reads the client's check trace (`bench/cps.py --check-trace`) and the event
files bench/tail_probe/sitecustomize.py wrote (the server's and the client's
GC collections, event-loop stalls and metrics-refresh spans, all on
CLOCK_MONOTONIC), and prints per offered rate the latency distribution and,
for the checks slower than --slow-ms, the share that overlapped each kind of
event, beside the share of all checks that did (an event that every check
overlaps explains nothing).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


_REDIS_LOG = re.compile(r"^\d+:[MC] (\d\d \w\w\w \d{4} [\d:.]+) \* (.*)$")


def redis_events(log: Path, offset: float) -> dict[str, list[tuple[float, float, str]]]:
    """The AOF rewrites in Redis's log, on the trace's clock: the fork (Redis's
    main thread stopped: from 'Starting automatic rewriting' to 'rewriting
    started') and the child writing the new base (a core busy meanwhile)."""
    out: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    start = child = None
    for line in log.read_text(errors="replace").splitlines():
        m = _REDIS_LOG.match(line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%d %b %Y %H:%M:%S.%f").timestamp() - offset
        msg = m.group(2)
        if msg.startswith("Starting automatic rewriting of AOF"):
            start = t
        elif msg.startswith("Background append only file rewriting started") and start is not None:
            out["redis AOF rewrite: fork"].append((start, t, f"{(t - start) * 1000:.0f} ms"))
            start, child = None, t
        elif msg.startswith("Background AOF rewrite terminated") and child is not None:
            out["redis AOF rewrite: child at work"].append((child, t, f"{t - child:.1f} s"))
            child = None
    return out


def load(d: Path, trace: Path, redis_log: Path | None) -> tuple[list[dict], dict[str, list[tuple[float, float, str]]]]:
    checks = [json.loads(x) for x in trace.read_text().splitlines() if x.strip()]
    events: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    offset = next((c["wall_minus_mono"] for c in checks if "wall_minus_mono" in c), None)
    checks = [c for c in checks if "rate" in c]
    if redis_log is not None and offset is not None and redis_log.exists():
        events.update(redis_events(redis_log, offset))
    for f in sorted(d.glob("*.jsonl")):
        if f == trace:
            continue
        who = "server" if f.name.startswith("server") else "client"
        for line in f.read_text().splitlines():
            e = json.loads(line)
            if "gc" in e:
                events[f"{who} gc gen{e['gc']}"].append((e["t"], e["t"] + e["ms"] / 1000,
                                                         f"{e['ms']:.1f} ms (rq {e.get('rq', 0):.1f})"))
                if "gen2_objects" in e:
                    print(f"{who} full collection at {e['t']:.3f}: {e['ms']:.1f} ms, {e['gen2_objects']} objects "
                          f"in the oldest generation ({e['frozen']} frozen): {e['gen2_types']}")
            elif "lag" in e:
                # a tick late by `lag` ms: the loop was held from (t - lag) to t
                kind = "own CPU" if e["cpu"] >= 0.5 * e["lag"] else ("runqueue" if e["rq"] >= 0.5 * e["lag"]
                                                                     else "other")
                events[f"{who} loop stall >2 ms ({kind})"].append(
                    (e["t"] - e["lag"] / 1000, e["t"], f"{e['lag']:.1f} ms (cpu {e['cpu']:.1f}, rq {e['rq']:.1f})"))
            elif "span" in e:
                events[f"{who} {e['span']}"].append((e["t"], e["t"] + e["ms"] / 1000,
                                                      f"{e['ms']:.1f} ms (cpu {e.get('cpu', 0):.1f})"))
    for v in events.values():
        v.sort()
    return checks, events


def overlaps(evs: list[tuple[float, float, str]], t0: float, t1: float) -> list[str]:
    return [d for a, b, d in evs if a < t1 and b > t0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--trace", type=Path, default=None, help="default DIR/trace.jsonl")
    ap.add_argument("--slow-ms", type=float, default=5.0)
    ap.add_argument("--redis-log", type=Path, default=Path(__file__).resolve().parents[1] / ".stack/redis/redis.log",
                    help="Redis's log, for its AOF rewrites (default the dev stack's)")
    ap.add_argument("--show", type=int, default=8, help="slowest checks listed with what they overlapped")
    args = ap.parse_args()
    checks, events = load(args.dir, args.trace or args.dir / "trace.jsonl", args.redis_log)
    phases: list[list[dict]] = []  # a new phase where the rate changes or the checks pause (cps.py sleeps 1 s)
    for c in sorted(checks, key=lambda c: c["t"]):
        if not phases or phases[-1][-1]["rate"] != c["rate"] or c["t"] - phases[-1][-1]["t"] > 0.5:
            phases.append([])
        phases[-1].append(c)
    for cs in phases:
        rate = cs[0]["rate"]
        ms = [c["ms"] for c in cs]
        t0, t1 = min(c["t"] for c in cs), max(c["t"] + c["ms"] / 1000 for c in cs)
        print(f"rate {rate:g}/s ({'closed loop' if not rate else 'open'}), {len(cs)} checks: "
              f"p50 {pct(ms, .5):.2f} p90 {pct(ms, .9):.2f} p99 {pct(ms, .99):.2f} p99.9 {pct(ms, .999):.2f} "
              f"max {max(ms):.2f} ms")
        slow = [c for c in cs if c["ms"] > args.slow_ms]
        print(f"  {len(slow)} slower than {args.slow_ms:g} ms; events in the phase, and the share of slow / all "
              f"checks that overlapped one:")
        for name, evs in sorted(events.items()):
            inside = [e for e in evs if t0 <= e[0] <= t1]
            if not inside:
                continue
            n_slow = sum(1 for c in slow if overlaps(inside, c["t"], c["t"] + c["ms"] / 1000))
            n_all = sum(1 for c in cs if overlaps(inside, c["t"], c["t"] + c["ms"] / 1000))
            longest = max(inside, key=lambda e: e[1] - e[0])
            print(f"    {name}: {len(inside)} (longest {longest[2]}); "
                  f"slow {n_slow}/{len(slow)} = {100 * n_slow / max(1, len(slow)):.0f} %, "
                  f"all {n_all}/{len(cs)} = {100 * n_all / len(cs):.0f} %")
        for c in sorted(slow, key=lambda c: -c["ms"])[:args.show]:
            hits = {n: overlaps(e, c["t"], c["t"] + c["ms"] / 1000) for n, e in events.items()}
            desc = "; ".join(f"{n}: {', '.join(h[:3])}" for n, h in hits.items() if h) or "nothing recorded"
            print(f"    {c['ms']:.1f} ms at +{c['t'] - t0:.3f} s: {desc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
