#!/usr/bin/env python3
"""Calls per second through the stack's Asterisk: plain Dial, dialguard, and a
guard written in plain dialplan, in one run; then FastAGI `check` latency.

    .venv/bin/python bench/cps.py            (after `make up`; about 2 to 4 minutes)
    options: --rates 50,100,200,... --step-s 5 --rounds 1 --max-pdd-ms 1000 --check-rates 100,1000
             --check-s 5 --pool 200 --redis-transport tcp|unix --json FILE

Three configurations, all SIPp agents -> Asterisk -> SIPp carrier on 127.0.0.1:

- plain      endpoint `direct`: Dial straight to the carrier (the baseline);
- dialguard  endpoint `dgbench` ([dialguard-bench]: one GoSub, as an admin plugs
             it in; `--dialguard-endpoint agents` goes through the test PBX's
             [from-agents] instead): dialguard-dial -> FastAGI `check`
             on the stack's dialguard-agi-server -> engine -> Redis (one
             decide.lua call, audit record appended), Dial, then at hangup
             one CEL event read by the outcome reader (dialguard-agi-outcomes);
             a campaign with its own pack (bench/cps-pack.yaml: cn-default's
             shape, open every hour and day, generous agent and caller-ID
             limits) and a 200-number caller-ID pool; the real clock
             (`--clock test`: the dev stack's test clock, a working day 10:00);
- agireport  (`--configs plain,dialguard,agireport,astdb`) dialguard with the
             global DIALGUARD_REPORT=agi: the outcome by a second AGI session
             (`report`) from the hangup handler, the path before issue 21;
- before     (`--before-tree DIR`) dialguard through an older tree's dialplan:
             DIR/asterisk_conf/extensions_dialguard.conf with its contexts
             renamed dgbefore-*, loaded beside this tree's (the stack's
             extensions.conf #tryincludes extensions_dgbefore.conf; the global
             DGBENCH_DIAL picks the subroutine [dialguard-bench] calls): a
             before/after of a dialplan change, interleaved in one run;
- astdb      endpoint `astdb`: what an admin writes today without dialguard
             (asterisk_conf/extensions_astdb_guard.conf): GotoIfTime, AstDB
             DB_EXISTS(dnc/N) and a per-number counter in AstDB.

Every call dials a distinct, valid number (nothing is denied). The rate ramps
up (--rates, interleaving the configurations at each rate, --step-s seconds a
step); a configuration's result is the highest rate at which a step had 0
failed calls (SIPp, both sides), every call answered and reaching the carrier,
the offered rate sustained (>= 95 %) and PDD p99 <= --max-pdd-ms (1 s: a path
that queues calls for seconds has failed them in practice, even if SIPp has
not timed them out yet). A configuration stops at its first failed step.
Before each step the bench waits until Asterisk has no channel, then for a second
in which the machine was below 20 % busy and Asterisk below 25 ms of CPU (up to
60 s), so that a step does not pay for the one before.
`--rounds N` runs the whole ramp N times; the ratio printed last is the
median of the N rounds' ratios (each round's is printed too), because the edge
found by one 5 s step moves from one minute to the next on a shared VM.
Post-dial delay (PDD) per call =
INVITE received at the carrier - INVITE sent by the agent (SIPp timestamps,
same host), p50/p99; "added" = minus plain's at the same rate.

FastAGI `check` latency: a Python AGI client (the protocol, as Asterisk speaks
it; uvloop) opens sessions at each of `--check-rates` per second for `--check-s`
seconds against the stack's server (no calls running), each a real allowed
decision; latency = connect to the server's close, at the socket, p50/p99,
and the server's CPU per check. Then `--saturation-clients` clients back to
back for `--saturation-s`: the checks/s the server sustains (saturation).
The client shares the machine's CPUs with the server.

The machine's CPU use is sampled for a second before the run: other work on
the machine lowers every figure (the run says so when it is busy).

Each step also prints the CPU time the stack's processes spent per call
(Asterisk, FastAGI server, outcome reader, Redis, PostgreSQL backends, audit shipper; from
/proc, SIPp excluded): where the guard's cost goes.

Last line: guarded/plain CPS ratio (target >= 0.85, aim 0.95).
The bench's keys (its numbers, caller IDs, agents, campaign) and AstDB
entries are deleted afterwards; the audit records stay (shipped to PostgreSQL
when the audit shipper runs), and the test clock is reset.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from sipp import load_stack_env, run_calls, stack_dir, write_injection  # noqa: E402

load_stack_env()

from agi.client import agi_call  # noqa: E402
from agi_load import check as lean_check  # noqa: E402  (bench/agi_load.py)
from ramp import highest_passed, median_round, round_ratio  # noqa: E402  (bench/ramp.py)
from dialguard.config import Settings  # noqa: E402
from dialguard.engine import Engine  # noqa: E402
from dialguard.numbers import parse_number, short_hash  # noqa: E402
from dialguard.rules import Policy  # noqa: E402

PACK = REPO / "bench" / "cps-pack.yaml"
WORKDAY_10H = datetime(2026, 9, 28, 2, 0, tzinfo=timezone.utc)  # Mon 10:00 Asia/Shanghai, a working day
CONFIGS = (("plain", "direct"), ("dialguard", "dgbench"), ("before", "dgbench"), ("agireport", "dgbench"),
           ("astdb", "astdb"))
# dialguard's configurations, told apart by the dialplan globals DIALGUARD_REPORT
# ("agireport" reports outcomes with a second AGI session, the path before issue
# 21) and DGBENCH_DIAL ("before": an older tree's dialplan, --before-tree).
GUARDED = {"dialguard": "cel", "before": "cel", "agireport": "agi"}
BEFORE_PREFIX = "dgbefore-"
_CONTEXTS = re.compile(r"\bdialguard-(dial|report|url|check|optout|complaint|features|dialer)\b")


def load_before(tree: Path) -> None:
    """An older tree's dialplan beside this one, every context renamed dgbefore-*
    (its cross-references with it), then `dialplan reload`."""
    text = (tree / "asterisk_conf" / "extensions_dialguard.conf").read_text()
    (stack_dir() / "asterisk" / "etc" / "extensions_dgbefore.conf").write_text(
        _CONTEXTS.sub(lambda m: BEFORE_PREFIX + m.group(1), text))
    astcli("dialplan reload")
    if f"{BEFORE_PREFIX}dial" not in astcli(f"dialplan show {BEFORE_PREFIX}dial"):
        raise RuntimeError(f"{BEFORE_PREFIX}dial did not load (does extensions.conf #tryinclude extensions_dgbefore.conf?)")
POOL_SIZE = 200
AGENTS = 50
DEFAULT_RATES = "50,100,200,250,280,300,320,340,360,380,400,440"
ASTDB_DNC = ("13900000001", "13900000002", "13900000003")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def cpu_sample() -> tuple[int, int]:
    """All CPUs' (total, idle) ticks so far (/proc/stat)."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v), v[3] + (v[4] if len(v) > 4 else 0)


def busy_since(before: tuple[int, int]) -> float:
    """Share of all CPUs busy since `before` (cpu_sample()), in %."""
    t2, i2 = cpu_sample()
    return 100.0 * (1 - (i2 - before[1]) / max(1, t2 - before[0]))


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over `seconds`, in %."""
    before = cpu_sample()
    time.sleep(seconds)
    return busy_since(before)


def reference_work_ms(rounds: int = 3) -> float:
    """CPU ms this process spends on a fixed piece of Python work (a loop, dict and str
    work, HMACs: what the guard's server does a check), the least of `rounds`. The same
    tree measured 0.4 ms a check at one sitting and 0.9 at another on this shared VM:
    this figure says how fast the machine was, so per-call figures of two sittings can
    be compared (divide each by it), while the ratios within one run need no help."""
    import hmac

    key = b"k" * 32
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        d: dict[str, int] = {}
        for i in range(200_000):
            s = f"{{g}}:n:{i}"
            d[s] = d.get(s, 0) + i
        for i in range(20_000):
            hmac.new(key, b"+8613800138000%d" % i, "sha256").digest()
        best = min(best, (time.process_time() - t0) * 1000)
    return best


def stack_pids() -> dict[str, int]:
    """The stack's processes whose CPU time the bench reports per call."""
    d = stack_dir()
    files = {"asterisk": d / "asterisk" / "asterisk.pid", "redis": d / "redis" / "redis.pid",
             "postgres": d / "pg" / "data" / "postmaster.pid"}
    files.update({p.stem: p for p in (d / "services").glob("*.pid")})
    pids = {}
    for name, f in files.items():
        try:
            pids[name] = int(f.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return pids


def _stat(pid: int) -> list[str]:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()


def cpu_ticks(pids: dict[str, int]) -> dict[str, int]:
    """utime + stime (all threads) of each process; "postgres" sums the
    postmaster's children (the backends, e.g. the audit shipper's)."""
    out = {}
    for name, pid in pids.items():
        try:
            f = _stat(pid)
            out[name] = int(f[11]) + int(f[12])
        except (OSError, IndexError, ValueError):
            pass
    # children count for their parent: PostgreSQL's backends, the FastAGI
    # server's workers (--workers N)
    parents = {pid: name for name, pid in pids.items() if name != "asterisk"}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                f = _stat(int(entry))
                name = parents.get(int(f[1]))
                if name is not None:
                    out[name] = out.get(name, 0) + int(f[11]) + int(f[12])
            except (OSError, IndexError, ValueError):
                pass
    return out


def _is_child(pid: int, parent: int) -> bool:
    try:
        return int(_stat(pid)[1]) == parent
    except (OSError, IndexError, ValueError):
        return False


def restart_guard(test_clock: bool, transport: str | None = None) -> None:
    """Restart the stack's FastAGI server and outcome reader with or without the
    dev stack's test clock (scripts/lib.sh, DIALGUARD_STACK_TEST_CLOCK), reaching
    Redis over `transport` (tcp or unix: DIALGUARD_REDIS_TRANSPORT; None: the
    environment's, the stack's default)."""
    env = dict(os.environ, DIALGUARD_STACK_TEST_CLOCK="1" if test_clock else "0")
    if transport:
        env["DIALGUARD_REDIS_TRANSPORT"] = transport
    for script in ("agi-server.sh", "agi-outcomes.sh"):
        if script == "agi-outcomes.sh" and not (stack_dir() / "services" / "outcomes.pid").exists():
            continue
        out = subprocess.run([str(REPO / "scripts" / script), "restart"], capture_output=True, text=True,
                             timeout=120, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"{script} restart: {out.stderr.strip() or out.stdout.strip()}")


def redis_transports() -> dict[str, dict[str, int]]:
    """Per Redis ACL user, its connections by transport ({"guard": {"unix": 3}, ...}),
    from CLIENT LIST (a Unix socket client's addr is the socket's path)."""
    import redis as _redis

    out: dict[str, dict[str, int]] = {}
    with _redis.Redis.from_url(Settings().redis_url) as r:
        for c in r.client_list():
            user = str(c.get("user", "")).rsplit("-", 1)[-1]
            kind = "unix" if str(c.get("addr", "")).startswith("/") else "tcp"
            out.setdefault(user, {}).setdefault(kind, 0)
            out[user][kind] += 1
    return out


def transport_line(t: dict[str, dict[str, int]]) -> str:
    guard = t.get("guard", {})
    kind = "unix socket" if guard.get("unix") and not guard.get("tcp") else \
        "TCP" if guard.get("tcp") and not guard.get("unix") else "mixed" if guard else "none yet"
    return (f"Redis transport of the guard (FastAGI server, outcome reader): {kind} ("
            + "; ".join(f"{u} " + ", ".join(f"{k} {n}" for k, n in sorted(v.items())) for u, v in sorted(t.items()))
            + ")")


def astcli(command: str) -> str:
    out = subprocess.run([str(REPO / "scripts" / "astcli.sh"), command], capture_output=True, text=True,
                         timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"asterisk -rx {command!r}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def wait_idle(timeout: float = 20.0) -> int:
    """Wait until Asterisk has no channel left; returns how many were left."""
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        m = re.search(r"(\d+) active channel", astcli("core show channels count"))
        n = int(m.group(1)) if m else -1
        if n == 0:
            return 0
        time.sleep(0.25)
    return n


def settle(busy_pct: float = 20.0, asterisk_ms_per_s: float = 25.0, timeout: float = 60.0) -> tuple[int, float, float]:
    """Before a step: Asterisk without channels, then a second in which the machine was
    below `busy_pct` and Asterisk itself below `asterisk_ms_per_s` of CPU (idle: about 8).
    An overloaded step leaves the outcome reader and the audit shipper catching up, and
    Asterisk's SIP transactions retransmitting and timing out for about 25 s after its
    last channel (20-80 ms of CPU a second here), which the next step would pay for.
    Returns the channels left, the machine's last busy share and the seconds it took."""
    t0 = time.monotonic()
    left = wait_idle(min(20.0, timeout))
    ast = stack_pids().get("asterisk")
    while True:
        before, a0 = cpu_sample(), cpu_ms("asterisk", ast)
        time.sleep(1.0)
        busy, ast_ms = busy_since(before), cpu_ms("asterisk", ast) - a0
        if (busy <= busy_pct and ast_ms <= asterisk_ms_per_s) or time.monotonic() - t0 >= timeout:
            return left, busy, time.monotonic() - t0


class Numbers:
    """Distinct valid mainland mobile numbers, from a random block per run."""

    def __init__(self) -> None:
        self.prefix = random.choice(["135", "136", "137", "138", "139", "150", "151", "158", "187", "188"])
        self.next = random.randrange(10**8 - 2 * 10**6)
        self.used: list[str] = []

    def take(self, n: int) -> list[str]:
        out = []
        while len(out) < n:
            number = f"{self.prefix}{self.next:08d}"
            self.next += 1
            if parse_number(number, "CN").valid:
                out.append(number)
        self.used += out
        return out


@dataclass
class Step:
    config: str
    rate: int
    calls: int
    ok: bool
    failed: int
    answered: int
    reached: int
    offered_cps: float
    pdd_p50_ms: float
    pdd_p99_ms: float
    why: str = ""
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)
    # --perf: Asterisk's context switches a call (perf stat, every thread): the
    # blocking and waking a path costs, which other work on the machine moves little
    ast_switches_per_call: float | None = None
    # Redis over the step (INFO cpu and commandstats, which also counts the
    # commands scripts call): its CPU a call split user / kernel, every command's
    # calls and usec a call; what each part of a guarded call costs Redis
    redis: dict = field(default_factory=dict)
    pdd: list[float] = field(default_factory=list, repr=False)
    round: int = 0  # --rounds: which ramp this step belongs to (set after the step)


def perf_switches(pid: int) -> subprocess.Popen:
    """`perf stat` counting the context switches of every thread of `pid` until SIGINT."""
    return subprocess.Popen(["perf", "stat", "-x,", "-e", "context-switches", "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def perf_count(proc: subprocess.Popen) -> float | None:
    import signal

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2] == "context-switches":
            try:
                return float(parts[0])
            except ValueError:
                return None
    return None


def run_step(config: str, caller: str, rate: int, numbers: list[str], campaign: str, workdir: Path,
             step_s: float, ports: dict[str, int], max_pdd_ms: float, perf: bool = False) -> Step:
    wd = workdir / f"{config}-{rate}"
    wd.mkdir(parents=True, exist_ok=True)
    injection = wd / "calls.csv"
    write_injection(injection, [(n, campaign, f"bench-agent-{i % AGENTS}") for i, n in enumerate(numbers)])
    pids = stack_pids()
    before = cpu_ticks(pids)
    red0 = redis_figures()
    counter = perf_switches(pids["asterisk"]) if perf and "asterisk" in pids else None
    run = run_calls(injection, wd, sip_port=ports["sip"], agents_port=ports["agents"],
                    carrier_port=ports["carrier"], caller=caller, rate=rate, limit=max(400, 3 * rate),
                    hold_ms=0, timeout_s=int(step_s) + 45)
    wait_idle()
    switches = perf_count(counter) if counter else None
    after = cpu_ticks(pids)
    red = redis_per(redis_figures(), red0, len(numbers))
    hz = os.sysconf("SC_CLK_TCK")
    cpu = {k: round((after[k] - before[k]) * 1000 / hz / max(1, len(numbers)), 2) for k in after if k in before}
    sent = {s.number: s.at for s in run.sent}
    arrived = {i.number: i.at for i in run.invites if i.at}
    pdd = [(arrived[n] - sent[n]) * 1000 for n in numbers if n in arrived and n in sent]
    times = sorted(sent.values())
    offered = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
    answered = sum(1 for c in run.calls if c.outcome == "answered")
    # At the carrier, count this step's calls that did not end with a BYE: SIPp's
    # own counter also counts the retransmissions Asterisk still sends for the
    # dialogs of an earlier, overloaded step (each makes a "call" that fails).
    carrier_failed = sum(1 for i in run.invites if i.call_id not in run.byes)
    failed = run.uac.failed + carrier_failed
    why = []
    if failed:
        why.append(f"{failed} failed calls (agents {run.uac.failed}, carrier {carrier_failed})")
    if answered != len(numbers):
        rejected = sum(1 for c in run.calls if c.outcome == "rejected")
        why.append(f"{answered}/{len(numbers)} answered ({rejected} rejected)")
    if len(arrived) != len(numbers):
        why.append(f"{len(arrived)}/{len(numbers)} reached the carrier")
    if offered < 0.95 * rate:
        why.append(f"offered {offered:.0f}/s of {rate}/s")
    if pdd and pct(pdd, 0.99) > max_pdd_ms:
        why.append(f"PDD p99 {pct(pdd, 0.99):.0f} ms > {max_pdd_ms:.0f} ms")
    return Step(config, rate, len(numbers), not why, failed, answered, len(arrived), round(offered, 1),
                round(pct(pdd, 0.5), 2), round(pct(pdd, 0.99), 2), "; ".join(why), cpu,
                round(switches / max(1, len(numbers)), 1) if switches is not None else None, red, pdd)


# As the dialplan asks (dialguard-dial presets DENY): one AGI command a check.
CHECK_SCRIPT = "check?preset=deny"


def cpu_ms(name: str, pid: int | None) -> float:
    """CPU time of the stack's process `name` (as cpu_ticks counts it), in ms; 0 without one."""
    return cpu_ticks({name: pid}).get(name, 0) * 1000 / os.sysconf("SC_CLK_TCK") if pid else 0.0


def agi_cpu_ms() -> float:
    """CPU time of the FastAGI server (its workers included), in ms."""
    return cpu_ms("agi", stack_pids().get("agi"))


def agi_sys_ms() -> float:
    """Kernel (system) CPU time of the FastAGI server process, in ms: its
    socket work (accept, read, write, close) against its Python's user time."""
    pid = stack_pids().get("agi")
    try:
        return int(_stat(pid)[12]) * 1000 / os.sysconf("SC_CLK_TCK") if pid else 0.0
    except (OSError, IndexError, ValueError):
        return 0.0


def redis_figures() -> dict[str, float]:
    """redis-server's CPU (INFO cpu, ms) and per command its calls and usec
    (INFO commandstats): what a check costs Redis, and how much of it is
    the scripts (EVALSHA: decide.lua in the check phase)."""
    import redis as _redis

    r = _redis.Redis.from_url(Settings().redis_url)
    try:
        cpu = r.info("cpu")
        out = {"cpu_ms": (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1000,
               "sys_ms": float(cpu["used_cpu_sys"]) * 1000}
        for name, st in r.info("commandstats").items():
            out[f"{name}.calls"] = float(st["calls"])
            out[f"{name}.usec"] = float(st["usec"])
        return out
    finally:
        r.close()


def redis_per(red1: dict, red0: dict, n: int) -> dict:
    """Redis figures between two redis_figures() a unit (call or check): CPU ms
    (of which kernel), commands (scripts' own calls included) and their usec."""
    n = max(1, n)
    calls = {k[8:-6]: red1[k] - red0.get(k, 0) for k in red1 if k.endswith(".calls")}
    usec = {k[8:-5]: red1[k] - red0.get(k, 0) for k in red1 if k.endswith(".usec")}
    return {"cpu_ms": round((red1["cpu_ms"] - red0["cpu_ms"]) / n, 3),
            "sys_ms": round((red1["sys_ms"] - red0["sys_ms"]) / n, 3),
            "commands": round(sum(calls.values()) / n, 2), "cmd_us": round(sum(usec.values()) / n, 1),
            "calls": {k: round(v / n, 2) for k, v in sorted(calls.items()) if v},
            "usec": {k: round(v / n, 1) for k, v in sorted(usec.items(), key=lambda kv: -kv[1]) if v}}


async def check_latency(port: int, campaign: str, numbers: list[str], rate: float, run_id: str,
                        clients: int = 0, script: str = CHECK_SCRIPT, client: str = "lean",
                        trace: list | None = None) -> dict:
    """Sessions offered at `rate` per second; or, with `clients` > 0, that many
    clients back to back (closed loop: the rate the server sustains)."""
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    results: dict[str, int] = {}
    errors: list[str] = []
    cpu0, sys0 = agi_cpu_ms(), agi_sys_ms()
    red0 = redis_figures()
    # the client's own CPU and the whole machine's: a p99 measured on a full machine is the machine's
    ru0, machine0 = resource.getrusage(resource.RUSAGE_SELF), cpu_sample()
    # the stack's other processes (shipper, PostgreSQL, Asterisk, ...): what shares the cores with the server
    others = {k: v for k, v in stack_pids().items() if k not in ("agi", "redis")}
    ticks0 = cpu_ticks(others)

    async def one(i: int, number: str) -> None:
        t0 = time.perf_counter()
        args = (number, campaign, f"bench-agent-{i % AGENTS}", "", "")
        try:
            if client == "exact":
                res = await agi_call("127.0.0.1", port, script, args, uniqueid=f"bench-{run_id}-{i}")
                r = res.variables.get("DIALGUARD_RESULT", "?") + ":" + res.variables.get("DIALGUARD_REASONS", "")
            else:
                r = ":".join(await lean_check("127.0.0.1", port, script, args, uniqueid=f"bench-{run_id}-{i}"))
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(repr(exc))
            return
        lat.append((time.perf_counter() - t0) * 1000)
        results[r] = results.get(r, 0) + 1
        if trace is not None:  # --check-trace: when each check started (CLOCK_MONOTONIC s) and took
            trace.append((rate, round(t0, 6), round(lat[-1], 3)))

    tasks = []
    # No cyclic GC in the client while it times the server: its collections
    # held every check in flight (a full one 161 ms, young ones up to 10 ms on
    # a busy machine; bench/check_tail.py). Collected after the phase.
    gc.collect()
    gc.disable()
    start = loop.time()
    if clients:
        todo = iter(enumerate(numbers))

        async def client() -> None:
            for i, number in todo:
                await one(i, number)

        await asyncio.gather(*(client() for _ in range(clients)))
        launched = loop.time() - start
    else:
        for i, number in enumerate(numbers):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, number)))
        launched = loop.time() - start
        await asyncio.gather(*tasks)
    took = loop.time() - start
    gc.enable()
    cpu, sys_ms = agi_cpu_ms() - cpu0, agi_sys_ms() - sys0
    ru1, machine = resource.getrusage(resource.RUSAGE_SELF), busy_since(machine0)
    client_ms = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) * 1000
    red1 = redis_figures()
    done = max(1, len(lat))
    ticks1 = cpu_ticks(others)
    hz = os.sysconf("SC_CLK_TCK")
    others_ms = {k: round((ticks1[k] - ticks0.get(k, 0)) * 1000 / hz / done, 3) for k in sorted(ticks1)}
    calls = {k[:-6]: red1[k] - red0.get(k, 0) for k in red1 if k.endswith(".calls")}
    usec = {k[:-5]: red1[k] - red0.get(k, 0) for k in red1 if k.endswith(".usec")}
    ev = calls.get("cmdstat_evalsha", 0)
    return {"sessions": len(numbers), "offered_per_s": round((len(numbers) - 1) / launched, 1) if launched else 0,
            "done_per_s": round(len(lat) / took, 1) if took else 0,
            "p50_ms": round(pct(lat, 0.5), 2), "p99_ms": round(pct(lat, 0.99), 2),
            "max_ms": round(max(lat), 2) if lat else None, "results": results, "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "server_cpu_ms_per_check": round(cpu / done, 3),
            "server_sys_ms_per_check": round(sys_ms / done, 3),  # of which the kernel's
            "client_cpu_ms_per_check": round(client_ms / done, 3), "machine_busy_pct": round(machine, 1),
            "others_cpu_ms_per_check": others_ms,
            # Redis: its whole CPU a check (commands, network, the shipper's reads),
            # the commands' own time a check, and decide.lua's usec a call (EVALSHA)
            "redis_cpu_ms_per_check": round((red1["cpu_ms"] - red0["cpu_ms"]) / done, 3),
            "redis_cmd_us_per_check": round(sum(usec.values()) / done, 1),
            "evalsha_us_per_call": round(usec.get("cmdstat_evalsha", 0) / ev, 1) if ev else None,
            "redis_commands_per_check": {k[8:]: round(v / done, 2) for k, v in sorted(calls.items()) if v}}


async def setup_guard(engine: Engine, campaign: str, pool: list[str], test_clock: bool) -> None:
    await engine.set_campaign(campaign, True, rules=str(PACK))
    async with engine.redis.pipeline(transaction=False) as pipe:
        for cid in pool:
            tag = engine.keys.cid_tag(cid)
            pipe.sadd(engine.keys.approved_cids, tag)
            pipe.hset(engine.keys.pool(campaign), tag, engine.sealer.seal(cid))
        await pipe.execute()
    if test_clock:
        await engine.set_test_clock(WORKDAY_10H)


async def bench_call_records(engine: Engine, campaign: str) -> list[str]:
    """The call records of the bench's campaign (its calls' ids are Asterisk's, not known
    here): every `{g}:call:*` whose campaign tag `cp` is the campaign's."""
    k, tag, found = engine.keys, short_hash(campaign), []
    batch: list[str] = []

    async def look() -> None:
        async with engine.redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.hget(key, "cp")
            cps = await pipe.execute()
        found.extend(key for key, cp in zip(batch, cps) if cp is not None and _text(cp) == tag)
        batch.clear()

    async for key in engine.redis.scan_iter(match=k.call("*"), count=2000):
        batch.append(_text(key))
        if len(batch) >= 2000:
            await look()
    if batch:
        await look()
    return found


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


async def cleanup_guard(engine: Engine, campaign: str, pool: list[str], numbers: list[str]) -> int:
    """Delete what the bench wrote under the live prefix (not the audit stream): the
    numbers' logs and last callers, the caller IDs' logs and health, the campaign's
    health pool and call records. Left behind, a run's calls stay for days (the call
    records' and last callers' expiries) and the dev stack's Redis grows by about
    150,000 keys a run: its append-only file then rewrites (a fork of the whole data
    set and seconds of a core) in the middle of a later run."""
    k = engine.keys
    keys = [k.campaign(campaign), k.pool(campaign), k.g("hp:" + short_hash(campaign))]
    for cid in pool:
        tag = k.cid_tag(cid)
        keys += [k.cid_attempts(tag), k.cid_live(tag), k.cid_outcomes(tag), k.cid_events(tag), k.cid_health(tag)]
    keys += [k.agent(f"bench-agent-{i}") for i in range(AGENTS)]
    for number in numbers:
        e164 = parse_number(number, "CN").e164
        h = k.number_tag(e164)
        for key in (k.attempts(h, "number"), k.attempts(h, "number_campaign", campaign=campaign)):
            keys += [key, key + ":x"]
        keys += [k.last_caller(h), k.conversations(h, "number"), k.num(h, "ab"), k.num(h, "am")]
    keys += await bench_call_records(engine, campaign)
    deleted = 0
    for i in range(0, len(keys), 2000):
        deleted += await engine.redis.unlink(*keys[i:i + 2000])
    async with engine.redis.pipeline(transaction=False) as pipe:
        for cid in pool:
            pipe.srem(k.approved_cids, k.cid_tag(cid))
        # the outcomes' pick penalties (keys.cid_penalties; spelled out: the bench also runs older trees)
        pipe.hdel(k.g("cidpen"), *[k.cid_tag(cid) for cid in pool])
        pipe.hdel(k.g("coolwhy"), *[k.cid_tag(cid) for cid in pool])
        pipe.zrem(k.g("cool"), *[k.cid_tag(cid) for cid in pool])
        await pipe.execute()
    await engine.set_test_clock(None)
    return deleted


def fmt_step(s: Step, plain: Step | None) -> str:
    added = ""
    if plain and s.config != "plain" and plain.pdd and s.pdd:
        added = f"  added p50 {s.pdd_p50_ms - plain.pdd_p50_ms:+.1f} / p99 {s.pdd_p99_ms - plain.pdd_p99_ms:+.1f} ms"
    state = "ok  " if s.ok else "FAIL"
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in sorted(s.cpu_ms_per_call.items()) if v >= 0.01)
    return (f"  {s.config:<10} {s.rate:>4}/s  {state} {s.calls:>5} calls, offered {s.offered_cps:>6.1f}/s, "
            f"PDD p50 {s.pdd_p50_ms:6.1f} p99 {s.pdd_p99_ms:7.1f} ms{added}" + (f"  [{s.why}]" if s.why else "")
            + (f"\n{'':19}CPU ms per call: {cpu}" if cpu else "")
            + (f"; Asterisk context switches per call {s.ast_switches_per_call:.1f}"
               if s.ast_switches_per_call is not None else "")
            + (f"\n{'':19}Redis a call: CPU {s.redis['cpu_ms']:.3f} ms (kernel {s.redis['sys_ms']:.3f}), "
               f"{s.redis['commands']:.1f} commands, their usec {s.redis['cmd_us']:.1f}: "
               + ", ".join(f"{k} {v:g} ({s.redis['usec'].get(k, 0):g} us)"
                           for k, v in sorted(s.redis['calls'].items(), key=lambda kv: -kv[1]))
               if s.redis else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default=DEFAULT_RATES, help="calls/s per step, ascending (default %(default)s)")
    ap.add_argument("--step-s", type=float, default=5.0, help="seconds of calls per step")
    ap.add_argument("--configs", default="plain,dialguard,astdb")
    ap.add_argument("--max-pdd-ms", type=float, default=1000.0, help="a step fails above this PDD p99")
    ap.add_argument("--check-rates", default="100,1000", help="FastAGI check sessions per second ('' for none)")
    ap.add_argument("--check-s", type=float, default=5.0)
    ap.add_argument("--check-trace", type=Path, default=None,
                    help="write every check's start (CLOCK_MONOTONIC s), rate and ms to FILE (jsonl), "
                         "for bench/check_tail.py")
    ap.add_argument("--check-scripts", default=CHECK_SCRIPT,
                    help="AGI scripts to time at each check rate, in turn, e.g. 'check,check?preset=deny' "
                         "(2 AGI commands a check against 1)")
    ap.add_argument("--check-clients", default="lean",
                    help="AGI clients to time at each check rate, in turn: lean (bench/agi_load.py, the default: "
                         "as cheap as Python gets, so that the server is measured) and/or exact (agi/client.py's "
                         "AgiPeer, res_agi's parsing), e.g. 'lean,exact'")
    ap.add_argument("--pool", type=int, default=POOL_SIZE, help="caller IDs in the campaign's pool")
    ap.add_argument("--dialguard-endpoint", default="dgbench", choices=("dgbench", "agents"),
                    help="dgbench: GoSub(dialguard-dial) straight from the endpoint's context, as an admin "
                         "plugs it in (default); agents: through the test PBX's [from-agents] (header "
                         "filters, CDR fields and handler: about 16 more dialplan steps a call)")
    ap.add_argument("--clock", default="real", choices=("real", "test"),
                    help="real (default): the stack's FastAGI server and outcome reader are restarted "
                         "without DIALGUARD_TEST_CLOCK for the run, as in production (the bench pack is "
                         "open every hour of every day), and restarted as before afterwards; test: the "
                         "dev stack's test clock at a working day 10:00 (a Redis read a decision)")
    ap.add_argument("--saturation-s", type=float, default=5.0,
                    help="seconds of the closed-loop check phase (0: none)")
    ap.add_argument("--saturation-clients", type=int, default=32)
    ap.add_argument("--before-tree", type=Path,
                    help="a checkout of an older tree: config `before` runs its dialguard-dial (A/B of the dialplan)")
    ap.add_argument("--perf", action="store_true",
                    help="also count Asterisk's context switches a call with `perf stat -p` (erratic on a loaded machine)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the whole ramp this many times, the configurations interleaved in each; the "
                         "ratio printed last is the median of the rounds' ratios (the edge of one 5 s step "
                         "moves by 50-150 calls/s from one minute to the next on a shared VM)")
    ap.add_argument("--keep-going", action="store_true",
                    help="run every step even after a configuration failed one (CPU figures at fixed rates)")
    ap.add_argument("--redis-transport", choices=("tcp", "unix"), default=None,
                    help="restart the FastAGI server and outcome reader reaching Redis over TCP or its Unix "
                         "socket (DIALGUARD_REDIS_TRANSPORT) for this run; back to the stack's default after "
                         "(default: as they run)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    wanted = [c.strip() for c in args.configs.split(",") if c.strip()]
    configs = [(name, args.dialguard_endpoint if name in GUARDED else caller)
               for name, caller in CONFIGS if name in wanted]
    if "before" in wanted and (args.before_tree is None or args.dialguard_endpoint != "dgbench"):
        ap.error("config `before` needs --before-tree DIR (and the dgbench endpoint)")
    env = os.environ
    ports = {"sip": int(env.get("DIALGUARD_SIP_PORT", 15060)), "agents": int(env.get("DIALGUARD_AGENTS_PORT", 15080)),
             "carrier": int(env.get("DIALGUARD_CARRIER_PORT", 15070)), "agi": int(env.get("DIALGUARD_AGI_PORT", 14573))}
    run_id = uuid.uuid4().hex[:8]
    workdir = stack_dir() / "bench" / f"cps-{run_id}"
    workdir.mkdir(parents=True, exist_ok=True)
    campaign = f"bench-cps-{run_id}"
    numbers = Numbers()
    rnd = random.Random()
    pool: list[str] = []
    while len(pool) < args.pool:
        cid = f"+86105{rnd.randrange(10**7):07d}"
        if cid not in pool and parse_number(cid, "CN").valid:
            pool.append(cid)

    try:
        version = astcli("core show version").split(" built ")[0].strip()
    except Exception as exc:  # noqa: BLE001
        print(f"the stack's Asterisk does not answer ({exc}): run `make up` first", file=sys.stderr)
        return 3
    if "dialguard-dial" not in astcli("dialplan show outbound") + astcli("dialplan show dialguard-bench"):
        print("[outbound] does not go through dialguard-dial: the guard is not plugged in", file=sys.stderr)
        return 3
    services = sorted(p.stem for p in (stack_dir() / "services").glob("*.pid"))
    agi_pid = stack_pids().get("agi")
    agi_workers = 0
    if agi_pid:
        agi_workers = sum(1 for e in os.listdir("/proc") if e.isdigit() and _is_child(int(e), agi_pid))
    busy = round(cpu_busy(), 1)
    ref_start = reference_work_ms()
    if busy > 15:
        print(f"note: the machine is already {busy:.0f}% busy before the bench (other work): every figure "
              f"below is lower than on an idle machine")
    print(f"bench/cps.py run {run_id}: {version}, services {', '.join(services) or 'none'}; "
          f"FastAGI workers {agi_workers or 1}; "
          f"{os.cpu_count()} CPUs ({busy:.0f}% busy before); caller-ID pool {args.pool}; steps of {args.step_s:g} s; "
          f"SIPp logs in {workdir}")
    print(f"machine speed: the reference work took {ref_start:.0f} ms of CPU (bench/cps.py reference_work_ms; "
          f"per-call figures of two sittings compare after dividing by it)")

    real_clock = args.clock == "real"
    if real_clock or args.redis_transport:
        restart_guard(test_clock=not real_clock, transport=args.redis_transport)
    print(f"clock: {'real (FastAGI server and outcome reader without DIALGUARD_TEST_CLOCK)' if real_clock else 'test (a working day 10:00)'}")
    transports = redis_transports()
    print(transport_line(transports), flush=True)
    engine_loop = asyncio.new_event_loop()
    engine = engine_loop.run_until_complete(Engine.create(Settings(), Policy.load("cn-default")))
    engine_loop.run_until_complete(setup_guard(engine, campaign, pool, test_clock=not real_clock))
    for n in ASTDB_DNC:
        astcli(f"database put dnc {n} 1")
    if "before" in wanted:
        load_before(args.before_tree)
    steps: list[Step] = []
    checks: list[dict] = []
    trace: list | None = [] if args.check_trace else None
    saturation: dict | None = None
    t_start = time.monotonic()
    try:
        for rnd_i in range(max(1, args.rounds)):
            alive = {name for name, _ in configs}
            if args.rounds > 1:
                print(f"round {rnd_i + 1} of {args.rounds}", flush=True)
            for rate in rates:
                if not alive:
                    break
                for name, caller in configs:
                    if name not in alive:
                        continue
                    if name in GUARDED:
                        astcli(f"dialplan set global DIALGUARD_REPORT {GUARDED[name]}")
                        dial = f"{BEFORE_PREFIX}dial" if name == "before" else "dialguard-dial"
                        astcli(f"dialplan set global DGBENCH_DIAL {dial}")
                    left, busy_now, waited = settle()
                    if left:
                        print(f"  (Asterisk still has {left} channels before this step)")
                    if waited > 2 or busy_now > 20:
                        print(f"  (settled {waited:.1f} s before this step; machine {busy_now:.0f} % busy)")
                    step = run_step(name, caller, rate, numbers.take(int(rate * args.step_s)), campaign, workdir,
                                    args.step_s, ports, args.max_pdd_ms, perf=args.perf)
                    step.round = rnd_i
                    steps.append(step)
                    plain = next((s for s in steps if s.config == "plain" and s.rate == rate and s.round == rnd_i),
                                 None)
                    print(fmt_step(step, plain), flush=True)
                    if not step.ok and not args.keep_going:
                        alive.discard(name)
        wait_idle()
        import uvloop  # the client as fast as it gets, so the server is what is measured

        for rate in [float(r) for r in args.check_rates.split(",") if r.strip()]:
            for script in [x.strip() for x in args.check_scripts.split(",") if x.strip()]:
                for client in [x.strip() for x in args.check_clients.split(",") if x.strip()]:
                    nums = numbers.take(int(rate * args.check_s))
                    checks.append({"rate": rate, "script": script, "client": client, **uvloop.run(
                        check_latency(ports["agi"], campaign, nums, rate, run_id, script=script, client=client,
                                      trace=trace))})
                    time.sleep(1)
        if args.saturation_s > 0:
            # Sized from the last rate's throughput; at least 2,000 sessions.
            n = int(max(2000, max([c["done_per_s"] for c in checks] or [0]) * args.saturation_s))
            saturation = {"rate": 0, "clients": args.saturation_clients, **uvloop.run(check_latency(
                ports["agi"], campaign, numbers.take(n), 0, run_id, clients=args.saturation_clients,
                trace=trace))}
        transports = redis_transports()  # what the guard used while measured
    finally:
        try:
            astcli("dialplan set global DIALGUARD_REPORT cel")
            astcli("dialplan set global DGBENCH_DIAL dialguard-dial")
        except Exception as exc:  # noqa: BLE001
            print(f"could not reset DIALGUARD_REPORT: {exc}", file=sys.stderr)
        if real_clock or args.redis_transport:
            try:
                restart_guard(test_clock=True)
            except Exception as exc:  # noqa: BLE001
                print(f"could not restart the FastAGI server with the test clock: {exc}", file=sys.stderr)
        deleted = engine_loop.run_until_complete(cleanup_guard(engine, campaign, pool, numbers.used))
        engine_loop.run_until_complete(engine.close())
        engine_loop.close()
        try:
            astcli("database deltree dgbench-attempts")
            for n in ASTDB_DNC:
                astcli(f"database del dnc {n}")
        except Exception as exc:  # noqa: BLE001
            print(f"could not clean AstDB: {exc}", file=sys.stderr)

    rounds = max(1, args.rounds)
    bests = [highest_passed(steps, [name for name, _ in configs], r) for r in range(rounds)]
    ratios = [round_ratio(b) for b in bests]
    # the round whose ratio is the median's (the lower middle one of an even count): its
    # rates are the ones printed, so the figures and the ratio come from one ramp
    mid = median_round(ratios)
    best = bests[mid]
    ref_rate = rates[0]
    ref = {s.config: s for s in steps if s.rate == ref_rate and s.round == mid}
    print()
    print(f"highest rate with 0 failed calls (steps of {args.step_s:g} s, rates {args.rates}"
          + (f"; round {mid + 1} of {rounds}, the median ratio's" if rounds > 1 else "") + "):")
    for name, _ in configs:
        b = best[name]
        topped = b is not None and b.rate == max(rates)
        print(f"  {name:<10} {b.rate if b else 0:>4} calls/s" + ("  (the highest rate tried)" if topped else ""))
    if rounds > 1:
        print("  every round, dialguard / plain: " + ", ".join(
            f"{(b.get('dialguard').rate if b.get('dialguard') else 0)} / {(b.get('plain').rate if b.get('plain') else 0)}"
            f" = {x:.3f}" for b, x in zip(bests, ratios)))
    print(f"post-dial delay, INVITE sent by the agent -> INVITE at the carrier, at {ref_rate} calls/s:")
    base = ref.get("plain")
    for name, _ in configs:
        s = ref.get(name)
        if not s:
            continue
        added = ""
        if base and name != "plain":
            added = f"   added p50 {s.pdd_p50_ms - base.pdd_p50_ms:+.1f} ms, p99 {s.pdd_p99_ms - base.pdd_p99_ms:+.1f} ms"
        print(f"  {name:<10} p50 {s.pdd_p50_ms:6.1f} ms  p99 {s.pdd_p99_ms:6.1f} ms{added}")
    if best.get("dialguard") and best.get("plain"):
        g, p = best["dialguard"], best["plain"]
        gp = next((s for s in steps if s.config == "plain" and s.rate == g.rate and s.round == mid), None)
        if gp:
            print(f"  at {g.rate} calls/s (dialguard's best): plain p50 {gp.pdd_p50_ms:.1f} / p99 {gp.pdd_p99_ms:.1f} ms, "
                  f"dialguard p50 {g.pdd_p50_ms:.1f} / p99 {g.pdd_p99_ms:.1f} ms")
    guarded = [name for name, _ in configs if name in GUARDED or name == "astdb"]
    if "plain" in best and guarded:
        print("Asterisk CPU ms per call (x plain's at the same step of the ramp; cs: its context switches a call):")
        for i, rate in enumerate(rates * rounds):
            # the i-th step of each configuration (a rate may come back: --rates 200,200,200)
            at = {name: got[i] for name, _ in configs if len(got := [s for s in steps if s.config == name]) > i}
            by = {name: st.cpu_ms_per_call.get("asterisk") for name, st in at.items()}
            cs = {name: f", {st.ast_switches_per_call:.1f} cs" if st.ast_switches_per_call is not None else ""
                  for name, st in at.items()}
            p = by.get("plain")
            if not p:
                continue
            parts = [f"{n} {by[n]:.2f} ({by[n] / p:.2f} x{cs[n]})" for n in guarded if by.get(n)]
            print(f"  {rate:>4}/s  plain {p:.2f}{cs['plain']}  " + "  ".join(parts))
    for check in checks:
        print(f"FastAGI {check['script']} latency at {check['rate']:.0f} checks/s ({check['sessions']} sessions, "
              f"{check['offered_per_s']:.0f}/s offered; {check['client']} Python AGI client at the socket): "
              f"p50 {check['p50_ms']:.2f} ms, "
              f"p99 {check['p99_ms']:.2f} ms, max {check['max_ms']} ms; server CPU {check['server_cpu_ms_per_check']:.3f} "
              f"ms a check (kernel {check['server_sys_ms_per_check']:.3f}); Redis CPU "
              f"{check['redis_cpu_ms_per_check']:.3f} ms a check (commands "
              f"{check['redis_cmd_us_per_check']:.1f} us, decide.lua {check['evalsha_us_per_call']} us a call); "
              f"client CPU {check['client_cpu_ms_per_check']:.3f} ms a check; machine {check['machine_busy_pct']:.0f} % "
              f"busy; results {check['results']}, errors {check['errors']}")
        print(f"  the stack's other processes, CPU ms a check: "
              f"{', '.join(f'{k} {v:.3f}' for k, v in check['others_cpu_ms_per_check'].items())}")
    if saturation:
        print(f"FastAGI check saturation ({saturation['clients']} clients back to back, {saturation['sessions']} "
              f"sessions): {saturation['done_per_s']:.0f} checks/s, p50 {saturation['p50_ms']:.2f} ms, "
              f"p99 {saturation['p99_ms']:.2f} ms; server CPU {saturation['server_cpu_ms_per_check']:.3f} ms a check "
              f"(kernel {saturation['server_sys_ms_per_check']:.3f}), Redis CPU "
              f"{saturation['redis_cpu_ms_per_check']:.3f} ms a check (decide.lua {saturation['evalsha_us_per_call']} us); "
              f"errors {saturation['errors']}")
    print(transport_line(transports))
    print(f"cleanup: {deleted} bench keys deleted, AstDB counters dropped, test clock reset; clock {args.clock}; "
          f"run took {time.monotonic() - t_start:.0f} s")
    ratio = ratios[mid]
    if args.check_trace and trace is not None:
        # the first line: wall clock minus CLOCK_MONOTONIC, to place log lines (Redis's) on the trace's clock
        args.check_trace.write_text(json.dumps({"wall_minus_mono": time.time() - time.perf_counter()}) + "\n" + "".join(
            json.dumps({"rate": r, "t": t, "ms": ms}) + "\n" for r, t, ms in trace))
    if args.json:
        args.json.write_text(json.dumps({
            "run": run_id, "steps": [{k: v for k, v in asdict(s).items() if k != "pdd"} for s in steps],
            "best": {k: (v.rate if v else 0) for k, v in best.items()}, "checks": checks,
            "saturation": saturation, "clock": args.clock, "ratio": ratio, "ratios": ratios,
            "busy_before_pct": busy, "reference_work_ms": ref_start, "redis_transports": transports}, indent=2))
    print(f"machine speed: the reference work took {ref_start:.0f} ms of CPU at the start, "
          f"{reference_work_ms():.0f} ms at the end")
    print(f"guarded/plain CPS ratio{' (median of ' + str(rounds) + ' rounds)' if rounds > 1 else ''}: {ratio:.3f} "
          f"({best['dialguard'].rate if best.get('dialguard') else 0}/{best['plain'].rate if best.get('plain') else 0}; "
          f"target >= 0.85, aim 0.95: {'met' if ratio >= 0.85 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
