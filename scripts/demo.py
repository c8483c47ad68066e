#!/usr/bin/env python3
"""make demo: real calls through the guard, a US debt-collection replay, then operating it.

Act 1. SIPp plays the agents and the carrier; every call goes agents ->
Asterisk -> [outbound] -> dialguard-dial -> FastAGI check -> engine -> Redis,
and is dialed only if the guard allows it. The calls (scripts/demo/calls.csv)
are placed in waves on the dev stack's test clock, so that together they show
every reason code of the SPEC at least once:

  wave 1-2  Sat 2026-10-10 Shanghai, a make-up working day (调休), during
            office hours; wave 2 comes after wave 1's calls ended and were
            reported (same clock);
  wave 3    Thu 2026-10-01, same time of day (National Day);
  wave 4    the FastAGI server stopped: no guard, no call (it comes back
            for act 3, on the demo's own key prefix).

The time of day is 10:00 plus a few seconds to 6 hours that change with every
run, so that `dialguard report --from/--to` (act 3) counts this run's decisions
only: the audit in PostgreSQL keeps those of every earlier run.

Demo campaigns carry small packs of their own (scripts/demo/packs/, combined
with cn-default: strictest wins); events go through the admin CLI (dnc add,
optout, complaint, consent, pause). The demo first deletes what earlier runs
left under its fixed numbers, agents, caller IDs and campaigns, so every run
gives the same verdicts; the test clock is reset at the end.

Act 2. `dialguard simulate scripts/demo/us-debt.yaml` replays a week of US
debt collection (us-regf + us-tcpa) in an isolated namespace and the demo
prints, call by call, the decision and why.

Act 3, operating it: the FastAGI server runs on a key prefix of the demo's own
(DEMO_PREFIX: `dgdemo` next to the stack's `dg`), so the rules versions, shadow
rules, overrides and kill switches it publishes never reach the stack's guard
(a published version cannot be unpublished: it would decide every later call
of the tests). A shipper of its own (`audit-ship --prefix dgdemo`) brings its
records to PostgreSQL. Then, through real calls: a candidate rules version in
shadow and `report --shadow`; `rules diff`, `rules apply` (the next call is
denied by it), `rules status`, `rules activate` (roll back); an override for a
number just denied attempt_cap, and its redial; the kill switch; `report --by
reason` over this run and the server's /metrics. At the end the stack's own
FastAGI server is back. The admin commands are the CLI's own (the typer app of
.venv/bin/dialguard), run in this process to spare an interpreter start each.

Run by `make demo` (after `make up`). Exit 1 if a verdict differs from
calls.csv's (or act 3's) expectation or a reason code was not shown.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO = REPO_ROOT / "scripts" / "demo"
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))

from guard import cdr_calls, channel_names, idle  # noqa: E402
from sipp import load_stack_env, run_calls, stack_dir, write_injection  # noqa: E402

load_stack_env()

from dialguard.config import Settings  # noqa: E402
from dialguard.engine import EXPLAIN, Engine  # noqa: E402
from dialguard.decision.models import REASONS  # noqa: E402
from dialguard.numbers import parse_number  # noqa: E402
from dialguard.rules import Policy  # noqa: E402

UTC = timezone.utc
SHANGHAI = ZoneInfo("Asia/Shanghai")
CLI = REPO_ROOT / ".venv" / "bin" / "dialguard"

# The rules clock of each wave (the dev stack's AGI server runs with DIALGUARD_TEST_CLOCK=1),
# before the run's time-of-day shift (run_shift).
CLOCKS = {
    1: datetime(2026, 10, 10, 10, 0, tzinfo=SHANGHAI),
    2: datetime(2026, 10, 10, 10, 0, tzinfo=SHANGHAI),
    3: datetime(2026, 10, 1, 10, 0, tzinfo=SHANGHAI),
    4: datetime(2026, 10, 10, 10, 0, tzinfo=SHANGHAI),
}
WAVES = {
    1: "Sat 2026-10-10 {t:%H:%M:%S} Shanghai, a make-up working day",
    2: "the same day and time, after wave 1's calls ended and were reported",
    3: "Thu 2026-10-01 {t:%H:%M:%S} Shanghai, National Day",
    4: "the FastAGI server stopped",
}
HOLD_MS = {1: 3000}  # wave 1: long enough to be a conversation, and for C2 to find C1 still talking

POOL = "+861058001234"
PACKS = DEMO / "packs"
# campaign -> (rules, its caller-ID pool); demo-unapproved is never approved.
CAMPAIGNS: dict[str, tuple[str | None, list[str]]] = {
    "demo-sale": (None, [POOL]),
    "demo-paused": (None, [POOL]),
    "demo-consent": (f"cn-default,{PACKS / 'demo-consent.yaml'}", [POOL]),
    "demo-us": ("us-tcpa", []),
    "demo-world": (f"cn-default,{PACKS / 'demo-callee-hours.yaml'}", [POOL]),
    "demo-interval": (f"cn-default,{PACKS / 'demo-min-interval.yaml'}", [POOL]),
    "demo-quiet": (f"cn-default,{PACKS / 'demo-quiet-after-conversation.yaml'}", [POOL]),
    "demo-abandon": (f"cn-default,{PACKS / 'demo-quiet-after-abandon.yaml'}", [POOL]),
    "demo-agentcap": (f"cn-default,{PACKS / 'demo-agent-cap.yaml'}", [POOL]),
    "demo-cidrate": (f"cn-default,{PACKS / 'demo-caller-id-rate.yaml'}", ["+861058001235"]),
    "demo-cidconc": (f"cn-default,{PACKS / 'demo-caller-id-concurrency.yaml'}", ["+861058001236"]),
}
ALL_CAMPAIGNS = [*CAMPAIGNS, "demo-unapproved"]
# Events, through the admin CLI.
EVENTS = [
    ["dnc", "add", "13800138005"],
    ["optout", "13800138006"],
    ["complaint", "13800138007"],
    ["consent", "13800138008"],
    ["pause", "--campaign", "demo-paused"],
]


# Act 3: the demo's own namespace and FastAGI server (see the docstring), and what it does there.
STACK_PREFIX = Settings().key_prefix
DEMO_PREFIX = f"{STACK_PREFIX}demo"
DEMO_BASE_RULES = "cn-default"  # what the demo's server runs, published as its first rules version
CANDIDATE = f"cn-default,{(PACKS / 'demo-one-attempt.yaml').relative_to(REPO_ROOT)}"
OPS = "demo-ops"  # a campaign without packs of its own: the published rules versions decide its calls
ACT3_CLOCK = timedelta(minutes=1)  # act 3's clock: a minute after wave 1-2's, the same Saturday
ADMIN_ENV = {"DIALGUARD_KEY_PREFIX": DEMO_PREFIX,
             # the CLI's rich console, indented by the demo: its lines fit the terminal, or 160 columns
             "COLUMNS": str(max(100, shutil.get_terminal_size((166, 25)).columns - 6))}


def _break_glass_host() -> None:
    """The demo's admin writes the store directly, as the operator of the dev stack's guard host
    in break-glass (dialguard/breakglass.py): a copy of the stack's secrets file that allows it
    (generated state, in .stack/), and --break-glass's variable. Audited as break-glass:<OS user>."""
    from dialguard.config import secrets_file

    src = secrets_file()
    if not src:
        return
    dst = REPO_ROOT / ".stack" / "demo-break-glass.env"
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(Path(src).read_text() + "\nDIALGUARD_BREAK_GLASS_ALLOWED=1\n")
    ADMIN_ENV.update({"DIALGUARD_SECRETS_FILE": str(dst), "DIALGUARD_BREAK_GLASS": "1"})


_break_glass_host()


@dataclass
class Call:
    wave: int | str
    number: str
    campaign: str
    agent: str
    caller_id: str
    outcome: str
    expect: str
    note: str
    verdict: str = "?"  # ALLOW, or the reasons from the CDR
    cause: str = ""
    carrier: int = 0
    agents_saw: str = ""
    ok: bool = False
    extra: dict = field(default_factory=dict)


def load_calls() -> list[Call]:
    rows = []
    for line in (DEMO / "calls.csv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            f = line.split(";")
            rows.append(Call(int(f[0]), f[1], f[2], f[3], f[4], f[5], f[6], f[7]))
    return rows


def cli(args: list[str]) -> tuple[list[str], int, str]:
    """`dialguard ARGS` on the stack's own namespace, in break-glass as the demo's admin part is:
    the CLI's own typer app in this process, as act 3's Admin (an interpreter and the
    CLI's imports, about a CPU-second each, spared per command)."""
    from typer.testing import CliRunner

    from dialguard.cli import app

    glass = {k: v for k, v in ADMIN_ENV.items() if k in ("DIALGUARD_SECRETS_FILE", "DIALGUARD_BREAK_GLASS")}
    r = CliRunner().invoke(app, list(args), env=glass)
    text = r.output
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        text += f"{type(r.exception).__name__}: {r.exception}"
    lines = text.strip().splitlines()
    return args, r.exit_code, lines[-1] if lines else ""


def astcli(command: str) -> str:
    out = subprocess.run([str(REPO_ROOT / "scripts" / "astcli.sh"), command], capture_output=True, text=True,
                         timeout=30)
    return out.stdout if out.returncode == 0 else ""


def agi_server(action: str, prefix: str | None = None) -> None:
    """scripts/agi-server.sh; prefix: the key prefix of the server it starts (None: the stack's own)."""
    env = dict(os.environ)
    if prefix:
        # the demo's server: its own namespace, the stack's default rules whatever the caller's env
        env.update(DIALGUARD_KEY_PREFIX=prefix, DIALGUARD_RULES=DEMO_BASE_RULES)
    out = subprocess.run([str(REPO_ROOT / "scripts" / "agi-server.sh"), action], capture_output=True, text=True,
                         timeout=60, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/agi-server.sh {action}: {out.stderr.strip()}")


def agi_server_prefix() -> str | None:
    """The key prefix the running FastAGI server was started with ('' = default), None when down."""
    try:
        pid = int((stack_dir() / "services" / "agi.pid").read_text().split()[0])
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    for var in environ:
        if var.startswith(b"DIALGUARD_KEY_PREFIX="):
            return var.split(b"=", 1)[1].decode()
    return ""


def channels() -> set[str] | None:
    """The names of Asterisk's channels now; None: no answer."""
    return channel_names(astcli("core show channels"))


def wait_idle(before: set[str], timeout: float = 10.0) -> None:
    """Until the wave's own channels are gone, those up before it (`before`) aside, at
    most `timeout` seconds: every hangup handler (the report) has run. Was: until no
    channel at all, so a call left up on the PBX (by a test of the suite, before
    test_zy_demo) cost each of the demo's 9 waves the whole 10 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if idle(before, channels()):  # the wave's calls are gone, not another caller's
            return
        time.sleep(0.1)


def e164(number: str) -> str | None:
    return parse_number(number, "CN").e164


async def reset_demo_state(engine: Engine, calls: list[Call]) -> None:
    """Delete what earlier demo runs left, so every run starts from the same state."""
    k = engine.keys
    keys: list[str] = []
    campaigns = ALL_CAMPAIGNS
    for number in {c.number for c in calls}:
        n = e164(number)
        if not n:
            continue
        h = k.number_tag(n)
        attempt_keys = [k.attempts(h, "number")] + [k.attempts(h, "number_campaign", campaign=c) for c in campaigns]
        keys += attempt_keys + [a + ":x" for a in attempt_keys]
        keys += [k.conversations(h, "number"), k.num(h, "ab"), k.num(h, "am"), k.flags(h), k.campaign_dnc(h)]
    keys += [k.agent(a) for a in {c.agent for c in calls}]
    cids = {cid for _, pool in CAMPAIGNS.values() for cid in pool} | {c.caller_id for c in calls if c.caller_id}
    for cid in cids:
        tag = k.cid_tag(cid)
        keys += [k.cid_attempts(tag), k.cid_live(tag)]
    keys += [k.campaign(c) for c in campaigns] + [k.pool(c) for c in campaigns]
    await engine.redis.unlink(*keys)
    await engine.redis.zrem(k.cid_cooldown, *[k.cid_tag(c) for c in cids])
    for c in campaigns:
        await engine.resume("campaign", c)
    for number in ("13800138005",):
        await engine.dnc_remove(number)


async def approve(engine: Engine) -> list[str]:
    """Campaigns and caller IDs, as `dialguard campaign approve` / `callerid add` do."""
    said = []
    for name, (rules, pool) in CAMPAIGNS.items():
        await engine.set_campaign(name, True, rules=rules)
        for cid in pool:
            await engine.approve_caller_id(cid, campaign=name)
        shown = ",".join(Path(r).name if "/" in r else r for r in rules.split(",")) if rules else ""
        said.append(f"dialguard campaign approve {name}" + (f" --rules {shown}" if shown else "")
                    + "".join(f"; dialguard callerid add {cid} --campaign {name}" for cid in pool))
    return said


def place_wave(wave: int | str, calls: list[Call], workdir: Path, ports: dict[str, int], cdr_path: Path) -> None:
    wd = workdir / f"wave-{wave}"
    wd.mkdir(parents=True, exist_ok=True)
    injection = wd / "calls.csv"
    write_injection(injection, [(c.number, c.campaign, c.agent, c.caller_id, c.outcome) for c in calls])
    offset = cdr_path.stat().st_size if cdr_path.exists() else 0
    before = channels() or set()
    run = run_calls(injection, wd, sip_port=ports["sip"], agents_port=ports["agents"], carrier_port=ports["carrier"],
                    caller="agents", rate=10, limit=40, hold_ms=HOLD_MS.get(wave, 300), timeout_s=60,
                    uac_scenario=DEMO / "agents_uac.xml", uas_scenario=DEMO / "carrier_uas.xml")
    wait_idle(before)
    rows: dict[str, list[dict[str, str]]] = {}
    deadline = time.monotonic() + 5
    while True:
        rows = {}
        for row in cdr_calls(cdr_path, offset):
            rows.setdefault(row["dst"], []).append(row)
        if sum(map(len, rows.values())) >= len(calls) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    at_carrier = Counter(i.number for i in run.invites)
    saw: dict[str, list[str]] = {}
    for uc in run.calls:
        saw.setdefault(uc.number, []).append("answered" if uc.outcome == "answered" else f"SIP {uc.code}")
    for c in calls:
        row = rows.get(c.number, []).pop(0) if rows.get(c.number) else None
        if row:
            c.verdict = "ALLOW" if row["dialguard_result"] == "ALLOW" else (row["dialguard_reasons"] or "DENY")
            c.extra["decision_id"] = row["dialguard_decision_id"]
            c.cause = row["hangupcause"]
        c.agents_saw = saw.get(c.number, ["-"]).pop(0) if saw.get(c.number) else "-"
        c.carrier = 1 if at_carrier.get(c.number, 0) > 0 else 0
        if c.carrier:
            at_carrier[c.number] -= 1
        c.ok = c.verdict == c.expect and c.carrier == (1 if c.expect == "ALLOW" else 0)
    if run.uac.failed:
        print(f"  (SIPp agents: {run.uac.failed} failed calls; see {wd})")


def run_shift() -> timedelta:
    """This run's time of day after 10:00, from 0 s to 6 h: the audit keeps every run's
    decisions at their rules-clock time, so a report over this run's seconds counts
    this run only (two runs collide only when started a multiple of 6 h apart, to
    the minute). 10:00-16:00 stays inside cn-default's hours, and is night in DC."""
    return timedelta(seconds=int(time.time()) % (6 * 3600))


def table(rows: list[tuple[str, ...]], indent: str = "  ") -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print(indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def run_act2() -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), "simulate", str(DEMO / "us-debt.yaml")], capture_output=True, text=True,
                          timeout=60)


def act2(out: subprocess.CompletedProcess) -> bool:
    scenario = DEMO / "us-debt.yaml"
    print()
    print("Act 2: a week of US debt collection, replayed with `dialguard simulate` "
          f"({scenario.relative_to(REPO_ROOT)}: us-regf + us-tcpa)")
    if out.returncode != 0:
        print(f"  dialguard simulate failed: {out.stderr.strip()}")
        return False
    import yaml

    events = yaml.safe_load(scenario.read_text())["events"]
    et = ZoneInfo("America/New_York")
    rows = [("local time (ET)", "number", "debt", "decision", "why")]
    for line in out.stdout.splitlines():
        d = json.loads(line)
        ev = events[d["i"]]["attempt"]
        at = datetime.fromisoformat(d["at"].replace("Z", "+00:00")).astimezone(et)
        if d["decision"] == "allow":
            why = "every rule passes"
        else:
            why = "; ".join(f"{r}: {EXPLAIN[r]}" for r in d["reasons"])
            if d["next_eligible_at"]:
                ne = datetime.fromisoformat(d["next_eligible_at"].replace("Z", "+00:00"))
                local = ne.astimezone(ZoneInfo(parse_number(d["number"], "US").timezones[0]))
                why += f" (next eligible {local:%a %m-%d %H:%M} local)"
            else:
                why += " (never again)"
        rows.append((f"{at:%a %m-%d %H:%M}", d["number"], ev.get("subject") or "", d["decision"].upper(), why))
    table(rows)
    print("  (events between the calls: a busy signal, not counted by Regulation F; a 3-minute conversation "
          "about debt-17; an opt-out)")
    return True


def run_act2b() -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), "simulate", str(DEMO / "us-states.yaml")], capture_output=True, text=True,
                          timeout=60)


def act2b(out: subprocess.CompletedProcess) -> bool:
    """Where the callee lives: a Florida resident with a New York number (us-states)."""
    scenario = DEMO / "us-states.yaml"
    print()
    print("Act 2b: where the callee lives, replayed with `dialguard simulate` "
          f"({scenario.relative_to(REPO_ROOT)}: us-tcpa + us-states)")
    if out.returncode != 0:
        print(f"  dialguard simulate failed: {out.stderr.strip()}")
        return False
    import yaml

    events = yaml.safe_load(scenario.read_text())["events"]
    et = ZoneInfo("America/New_York")
    rows = [("time (ET)", "number", "stated location", "decision", "why")]
    got = []
    for line in out.stdout.splitlines():
        d = json.loads(line)
        ev = events[d["i"]]["attempt"]
        at = datetime.fromisoformat(d["at"].replace("Z", "+00:00")).astimezone(et)
        where = " ".join(x for x in (ev.get("region"), ev.get("postal_code")) if x) or "(none)"
        why = "every rule passes" if d["decision"] == "allow" else "; ".join(d["reasons"])
        if d["next_eligible_at"]:
            ne = datetime.fromisoformat(d["next_eligible_at"].replace("Z", "+00:00")).astimezone(et)
            why += f" (next eligible {ne:%a %H:%M} ET)"
        rows.append((f"{at:%a %H:%M}", d["number"], where, d["decision"].upper(), why))
        got.append(d["decision"])
    table(rows)
    print("  (the Florida Telephone Solicitation Act ends at 20:00 in the called person's time zone; Florida "
          "spans Eastern and Central time unless a ZIP code says which)")
    return got == ["allow", "deny", "deny", "allow"]


def run_act2c() -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), "simulate", str(DEMO / "us-regf-party.yaml")], capture_output=True, text=True,
                          timeout=60)


def act2c(out: subprocess.CompletedProcess) -> bool:
    """One debtor, two numbers: Regulation F's 7-in-7 shared through the party."""
    scenario = DEMO / "us-regf-party.yaml"
    print()
    print(f"Act 2c: one debtor, two numbers ({scenario.relative_to(REPO_ROOT)}: us-regf, party debtor-1)")
    if out.returncode != 0:
        print(f"  dialguard simulate failed: {out.stderr.strip()}")
        return False
    et = ZoneInfo("America/New_York")
    rows = [("time (ET)", "number", "calls to the person", "decision", "why")]
    got = []
    for n, line in enumerate(out.stdout.splitlines(), start=1):
        d = json.loads(line)
        at = datetime.fromisoformat(d["at"].replace("Z", "+00:00")).astimezone(et)
        why = "every rule passes" if d["decision"] == "allow" else "; ".join(d["reasons"])
        if d["next_eligible_at"]:
            ne = datetime.fromisoformat(d["next_eligible_at"].replace("Z", "+00:00")).astimezone(et)
            why += f" (next eligible {ne:%a %m-%d %H:%M} ET)"
        rows.append((f"{at:%a %H:%M}", d["number"], str(n), d["decision"].upper(), why))
        got.append(d["decision"])
    table(rows)
    print("  (home and mobile of one person about one debt: the eighth call in seven days is refused, "
          "though the mobile had only three)")
    return got == ["allow"] * 7 + ["deny"]


class Admin:
    """The admin's commands on act 3's namespace: the CLI's own typer app, in this process."""

    def __init__(self) -> None:
        from typer.testing import CliRunner

        from dialguard.cli import app

        self.app, self.runner = app, CliRunner()
        self.problems: list[str] = []

    def __call__(self, *args: str, show: str = "all", ok: tuple[int, ...] = (0,), quiet: bool = False) -> str:
        """Run `dialguard ARGS`; print it and its output (show: all, last line, none)."""
        r = self.runner.invoke(self.app, list(args), env=ADMIN_ENV)
        text = r.output
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            text += f"{type(r.exception).__name__}: {r.exception}"
        lines = text.rstrip().splitlines()
        if not quiet:
            print(f"  $ dialguard {shlex.join(args)}")
            for line in lines if show == "all" else lines[-1:] if show == "last" else []:
                print(f"      {line}".rstrip())
        if r.exit_code not in ok:
            self.problems.append(f"`dialguard {shlex.join(args)}` exited {r.exit_code}: {' / '.join(lines[-2:])}")
            if quiet or show != "all":
                print(f"      (exit {r.exit_code}) {' / '.join(lines[-2:])}")
        return text

    def json(self, *args: str) -> dict | list | None:
        text = self(*args, quiet=True)
        try:
            return json.loads(text)
        except ValueError:
            return None

    def wait_shipped(self, timeout: float = 15.0) -> None:
        """`dialguard audit status --json` until act 3's stream and the stack's are shipped (backlog 0)."""
        deadline = time.monotonic() + timeout
        while True:
            sts = [self.json("audit", "status", "--prefix", p, "--json") or {} for p in (DEMO_PREFIX, STACK_PREFIX)]
            if all(st.get("backlog") == 0 for st in sts) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print("  $ dialguard audit status --json  (until the shipper has shipped: backlog 0)")
        for p, st in zip((DEMO_PREFIX, STACK_PREFIX), sts):
            print(f"      {p}: backlog {st.get('backlog')}, pending {st.get('pending')}")
            if st.get("backlog") != 0:
                self.problems.append(f"the audit stream of {p} was not shipped within {timeout:.0f} s")


def start_shipper(workdir: Path) -> subprocess.Popen:
    """`dialguard audit-ship` for act 3's prefix (the stack's shipper serves its own); it dies with the demo."""
    def die_with_parent() -> None:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    with open(workdir / "audit-ship.log", "ab") as log:
        return subprocess.Popen([str(CLI), "audit-ship", "--prefix", DEMO_PREFIX, "--consumer", "demo",
                                 "--block-ms", "200"],
                                stdout=log, stderr=log, preexec_fn=die_with_parent,
                                env={**os.environ, "DIALGUARD_KEY_PREFIX": DEMO_PREFIX})


def stop_process(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # audit-ship: finishes the batch in hand
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def reset_demo_namespace(engine3: Engine, t3: datetime) -> None:
    """Act 3 starts from an empty namespace of its own, but for its rules versions
    (numbered for the audit: never reused) and its audit stream (records maybe not
    shipped yet); then its campaign, caller ID and clock."""
    from dialguard.rules_store import RulesStore

    k = engine3.keys
    keep = {k.rules.encode(), k.audit.encode()}
    doomed = [key async for key in engine3.redis.scan_iter(match=f"{DEMO_PREFIX}:*", count=1000) if key not in keep]
    if doomed:
        await engine3.redis.unlink(*doomed)
    store = RulesStore(engine3.redis, k, engine3.settings.node)
    if (await store.in_effect())[1] is not None:
        await store.shadow_off(why="make demo: a shadow left by an interrupted run", who="ops-demo")
    await engine3.set_campaign(OPS, True)
    await engine3.approve_caller_id(POOL, campaign=OPS)
    await engine3.set_test_clock(t3)


def metrics_lines() -> list[str]:
    """A few lines of the FastAGI server's /metrics: decisions and the denial reasons seen."""
    url = f"http://127.0.0.1:{os.environ.get('DIALGUARD_METRICS_PORT', '19100')}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            text = r.read().decode()
    except OSError as exc:
        return [f"{url}: no answer ({exc})"]
    keep = [line for line in text.splitlines() if line.startswith("dialguard_decisions_total")
            or (line.startswith("dialguard_deny_reasons_total") and not line.endswith(" 0.0"))]
    return [url, *keep]


def calendar_lines() -> list[str]:
    """Until when the calendars of the stack guard's rules are known, at its clock, and its /healthz."""
    from dialguard.metrics import calendar_status

    async def go():
        e = await Engine.create(Settings())  # the stack's guard: its configured rules and published version
        try:
            return await calendar_status(e)
        finally:
            await e.close()

    out = []
    for k in asyncio.run(go()):
        until = k.last_day.isoformat() if k.last_day else "never"
        out.append(f"{k.calendar:6} known until {until} ({k.source}): {k.seconds_left / 86400:.1f} days left"
                   + ("  <- import the next year (docs/OPERATIONS.md, Calendars)" if k.warn else ""))
    url = f"http://127.0.0.1:{os.environ.get('DIALGUARD_METRICS_PORT', '19100')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            body = json.loads(r.read().decode())
        out.append(f"{url}: {r.status} {body.get('status')}"
                   + (f" ({'; '.join(body['degraded'])})" if body.get("degraded") else ""))
    except OSError as exc:
        out.append(f"{url}: no answer ({exc})")
    return out


def act3(engine3: Engine, t0: datetime, t3: datetime, ports: dict[str, int], workdir: Path,
         cdr_path: Path) -> tuple[bool, list[str]]:
    """Operating it, through real calls on the demo's own FastAGI server. Returns (ok, metrics)."""
    admin = Admin()
    placed: list[Call] = []
    n1, n2, n3 = "13800138031", "13800138032", "13800138033"

    def calls(label: str, title: str, specs: list[tuple[str, str, str]]) -> list[Call]:
        batch = [Call(label, number, OPS, "agent-9", "", "", expect, note) for number, expect, note in specs]
        place_wave(label, batch, workdir, ports, cdr_path)
        print(f"  the agent dials ({title}):")
        rows = [("number", "guard (CDR)", "carrier", "", "why")]
        for c in batch:
            rows.append((c.number, c.verdict, "reached" if c.carrier else "-", "" if c.ok else f"EXPECTED {c.expect}",
                         c.note))
        table(rows, indent="      ")
        placed.extend(batch)
        return batch

    def since(t: datetime) -> list[str]:
        return ["--from", t.isoformat(timespec="seconds"), "--to", (t3 + timedelta(seconds=1)).isoformat(
            timespec="seconds"), "--tz", "Asia/Shanghai"]

    print()
    print(f"Act 3: operating it. The FastAGI server now runs on the demo's own key prefix ({DEMO_PREFIX}; "
          f"the stack's is {STACK_PREFIX}),")
    print(f"  campaign {OPS} (no packs of its own: the published rules decide), clock Sat 2026-10-10 "
          f"{t3:%H:%M:%S} Shanghai;")
    print(f"  the admin's commands run with DIALGUARD_KEY_PREFIX={DEMO_PREFIX}, in break-glass")

    print()
    print("(1) publish the rules the guard runs, so there is a version to roll back to")
    admin("rules", "apply", DEMO_BASE_RULES, "--why", "the rules this guard was started with")
    base = ((admin.json("rules", "status", "--json") or {}).get("active") or {}).get("version")

    print()
    print("(2) try a candidate in shadow: evaluated beside the active rules on every decision, never enforced")
    admin("rules", "apply", "--shadow", CANDIDATE, "--why", "one attempt a day? see what it would change",
          show="last")
    shadow = ((admin.json("rules", "status", "--json") or {}).get("shadow") or {}).get("version")
    calls("3-shadow", "the shadow only watches", [
        (n1, "ALLOW", "first attempt"),
        (n1, "ALLOW", "second attempt: cn-default allows 2; the shadow rules would refuse it"),
        (n2, "ALLOW", "first attempt"),
    ])
    admin.wait_shipped()
    rep = admin.json("report", "--shadow", *since(t3), "--json") or {}
    print(f"  $ dialguard report --shadow {shlex.join(since(t3))} --json   (condensed here)")
    for v in rep.get("summary", []):
        print(f"      shadow version {v['shadow_version']} beside active version(s) "
              f"{', '.join(map(str, v['rules_versions']))}: {v['evaluated']} decisions evaluated, "
              f"{v['same_verdict']} the same, {v['allow_to_deny']} allow→deny "
              f"({', '.join(f'{r} {n}' for r, n in v['allow_to_deny_by_reason'].items()) or '-'}), "
              f"{v['deny_to_allow']} deny→allow")
    for d in rep.get("decisions", []):
        at = datetime.fromisoformat(d["decided_at"].replace("Z", "+00:00")).astimezone(SHANGHAI)
        print(f"      would have changed: {at:%H:%M:%S} decision {d['decision_id']} {d['campaign']} {d['agent']} "
              f"{d['number']}: enforced {d['enforced']}{' ' + d['enforced_reasons'] if d['enforced_reasons'] else ''}"
              f", shadow {d['shadow']} {d['shadow_reasons']}")
    mine = [v for v in rep.get("summary", []) if v.get("shadow_version") == shadow]
    if not mine or mine[0].get("allow_to_deny") != 1 or mine[0].get("allow_to_deny_by_reason") != {"attempt_cap": 1}:
        admin.problems.append(f"report --shadow: expected shadow version {shadow} to refuse 1 call (attempt_cap): "
                              f"{mine}")
    admin("rules", "shadow-off", "--why", "seen enough")

    print()
    print("(3) enforce it: what changes, publish it (every node, from the next decision), check, roll back")
    admin("rules", "diff", CANDIDATE, ok=(1,))
    admin("rules", "apply", CANDIDATE, "--why", "one attempt a day per number", show="last")
    admin("rules", "status")
    calls("3-enforced", "the next call", [
        (n2, "attempt_cap", "second attempt: the new version allows one in 24 hours"),
    ])
    admin("rules", "activate", str(base), "--why", "roll back: agents cannot reach callbacks")
    calls("3-rolled-back", "the same number again, twice", [
        (n2, "ALLOW", "second attempt: version " + str(base) + " (cn-default) allows 2"),
        (n2, "attempt_cap", "third attempt"),
    ])

    print()
    print("(4) an exception: the customer asked to be called back; a supervisor lifts attempt_cap once")
    admin("override", "grant", n2, "--lift", "attempt_cap", "--expires", "2h", "--reason", "customer asked for a "
          "callback", "--approver", "supervisor-li")
    grant = (admin.json("override", "show", n2, "--json") or {}).get("id")
    (redial,) = calls("3-override", "the agent redials",
                      [(n2, "ALLOW", "fourth attempt, allowed once by the override")])
    did = redial.extra.get("decision_id", "")
    admin.wait_shipped()
    d = admin.json("audit", "show", did, "--json") or {}
    print(f"  $ dialguard audit show {did} --json   (the decision id from the CDR)")
    print(f"      allowed {d.get('allowed')}, override_id {d.get('override_id')}, override_lifted "
          f"{d.get('override_lifted')}, rules_seq {d.get('rules_seq')}, campaign {d.get('campaign')}")
    if not (d.get("allowed") and d.get("override_id") == grant and d.get("override_lifted") == ["attempt_cap"]):
        admin.problems.append(f"the redial's decision {did} does not carry the override {grant}: {d}")
    admin("override", "show", n2, ok=(1,), show="last")

    print()
    print("(5) the kill switch: all outbound of this guard stops at the next decision")
    admin("pause")
    calls("3-paused", "while paused", [(n3, "paused", "every call, whatever its rules")])
    admin("resume")

    print()
    print("(6) what happened, from the audit (PostgreSQL): waves 1-2 of act 1 and act 3, this run only")
    admin.wait_shipped()
    admin("report", *since(t0), "--by", "reason")
    metrics = metrics_lines()

    wrong = [c for c in placed if not c.ok]
    for c in wrong:
        admin.problems.append(f"{c.number} ({c.wave}): {c.verdict}, expected {c.expect}")
    if admin.problems:
        print()
        print("  UNEXPECTED in act 3:")
        for p in admin.problems:
            print(f"    {p}")
    return not admin.problems, metrics

def main() -> int:
    t0 = time.monotonic()
    os.chdir(REPO_ROOT)  # the packs are named relative to the checkout, as an admin would
    env = os.environ
    ports = {"sip": int(env.get("DIALGUARD_SIP_PORT", 15060)), "agents": int(env.get("DIALGUARD_AGENTS_PORT", 15080)),
             "carrier": int(env.get("DIALGUARD_CARRIER_PORT", 15070))}
    stack = stack_dir()
    workdir = stack / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    cdr_path = stack / "asterisk" / "log" / "cdr-custom" / "dialguard.csv"
    calls = load_calls()
    shift = run_shift()
    clocks = {wave: at + shift for wave, at in CLOCKS.items()}
    t3 = clocks[1] + ACT3_CLOCK

    version = astcli("core show version").split(" built ")[0].strip()
    if not version:
        print("the stack's Asterisk does not answer: run `make up`", file=sys.stderr)
        return 3
    if "dialguard-dial" not in astcli("dialplan show outbound"):
        print("the dialplan's [outbound] does not go through dialguard-dial: the guard is not plugged in",
              file=sys.stderr)
        return 3
    if agi_server_prefix() == DEMO_PREFIX:  # an interrupted demo left act 3's server running
        print(f"the FastAGI server runs on {DEMO_PREFIX} (an interrupted demo): restarting the stack's own")
        agi_server("restart")
    print(f"dialguard demo. Act 1: {len(calls)} calls from the agents (SIPp) through {version} and the guard "
          f"(FastAGI {env.get('DIALGUARD_AGI_PORT', '14573')}), to the carrier (SIPp)")

    loop = asyncio.new_event_loop()
    engine = loop.run_until_complete(Engine.create(Settings(), Policy.load("cn-default")))
    engine3 = loop.run_until_complete(Engine.create(Settings(key_prefix=DEMO_PREFIX), Policy.load(DEMO_BASE_RULES)))
    shipper: subprocess.Popen | None = None
    background = ThreadPoolExecutor(3)
    act2_runs = None
    ok_act3, metrics = False, []
    try:
        loop.run_until_complete(reset_demo_state(engine, calls))
        print("the admin's part (campaigns and caller IDs, then events with the CLI):")
        for line in loop.run_until_complete(approve(engine)):
            print(f"  {line}")
        for args, rc, said in map(cli, EVENTS):
            print(f"  dialguard {' '.join(args)}: {said if rc == 0 else 'FAILED ' + said}")
            if rc != 0:
                return 1

        by_wave: dict[int, list[Call]] = {}
        for c in calls:
            by_wave.setdefault(c.wave, []).append(c)
        for wave in sorted(by_wave):
            loop.run_until_complete(engine.set_test_clock(clocks[wave]))
            print()
            print(f"wave {wave}: {WAVES[wave].format(t=clocks[wave])} ({len(by_wave[wave])} calls)")
            if wave == 4:
                # act 2 needs no FastAGI server: its three replays run meanwhile
                act2_runs = [background.submit(run) for run in (run_act2, run_act2b, run_act2c)]
                agi_server("stop")
                try:
                    place_wave(wave, by_wave[wave], workdir, ports, cdr_path)
                finally:
                    # act 3's server comes back on the demo's own prefix (the stack's own at the end)
                    loop.run_until_complete(reset_demo_namespace(engine3, t3))
                    shipper = start_shipper(workdir)
                    agi_server("start", prefix=DEMO_PREFIX)
            else:
                place_wave(wave, by_wave[wave], workdir, ports, cdr_path)
            rows = [("number", "campaign", "agent", "guard (CDR)", "cause", "carrier", "", "why")]
            for c in by_wave[wave]:
                rows.append((c.number, c.campaign, c.agent, c.verdict, c.cause, "reached" if c.carrier else "-",
                             "" if c.ok else f"EXPECTED {c.expect}", c.note))
            table(rows)
        loop.run_until_complete(engine.set_test_clock(None))

        allowed = [c for c in calls if c.verdict == "ALLOW"]
        denied = [c for c in calls if c.verdict not in ("ALLOW", "?")]
        reasons = Counter(r for c in denied for r in c.verdict.split(",") if r)
        missing = [r for r in REASONS if r not in reasons]
        wrong = [c for c in calls if not c.ok]
        reached = sum(c.carrier for c in calls)
        print()
        print("summary")
        print(f"  calls offered by the agents         {len(calls)}")
        print(f"  allowed by the guard                {len(allowed)}")
        print(f"  reached the carrier                 {reached}  (answered "
              f"{sum(1 for c in allowed if c.agents_saw == 'answered')}, busy "
              f"{sum(1 for c in allowed if c.agents_saw == 'SIP 486')})")
        print(f"  denied before the carrier           {len(denied)}  (Q.850 cause 21, SIP 403; "
              f"34, SIP 503, when the guard was unavailable)")
        print("  denied by reason                    " + ", ".join(f"{r} {reasons[r]}" for r in REASONS if reasons[r]))
        print(f"  reason codes shown                  {len(REASONS) - len(missing)} of {len(REASONS)}"
              + (f" (missing: {', '.join(missing)})" if missing else " (all of SPEC §2)"))
        if wrong:
            print(f"  UNEXPECTED verdicts                 {len(wrong)}: "
                  + ", ".join(f"{c.number} wave {c.wave}: {c.verdict} (expected {c.expect})" for c in wrong))

        runs = [f.result() for f in act2_runs] if act2_runs else [run_act2(), run_act2b(), run_act2c()]
        ok_act2 = act2(runs[0])
        ok_act2 = act2b(runs[1]) and ok_act2
        ok_act2 = act2c(runs[2]) and ok_act2
        ok_act3, metrics = act3(engine3, clocks[1], t3, ports, workdir, cdr_path)
    finally:
        # the stack's own guard again, as `make up` left it; nothing of the demo stays in effect
        stop_process(shipper)
        try:
            if agi_server_prefix() in (DEMO_PREFIX, None):
                agi_server("restart")
        finally:
            loop.run_until_complete(engine.set_test_clock(None))
            loop.run_until_complete(engine.resume("campaign", "demo-paused"))
            loop.run_until_complete(engine.close())
            loop.run_until_complete(engine3.close())
            loop.close()
            background.shutdown()

    if metrics:
        print(f"  the demo's FastAGI server's metrics ({metrics[0]}, before it stopped):")
        for line in metrics[1:]:
            print(f"      {line}")
    print()
    print("calendars: until when the days of the guard's calendars are known (dialguard status says the same)")
    for line in calendar_lines():
        print(f"  {line}")
    print()
    print("where to look next")
    print(f"  the CDR with the guard's verdict   {cdr_path}")
    # agi.log holds a session only when it failed (or with --log-sessions): the decisions are in the audit.
    print("  the guard's decisions              .venv/bin/dialguard report; dialguard audit history NUMBER"
          " (one number's decisions and outcomes)")
    print(f"  FastAGI server (failed sessions)   {stack / 'services' / 'agi.log'}")
    print(f"  Asterisk                           {stack / 'asterisk' / 'log' / 'messages.log'} (console: make asterisk-cli)")
    print(f"  SIPp logs, per wave                {workdir}/wave-N/")
    print("  the calls and expectations         scripts/demo/calls.csv; demo rules in scripts/demo/packs/")
    print("  one decision by hand               .venv/bin/dialguard check NUMBER --campaign C --agent A"
          " (a real attempt: it counts)")
    print(f"  act 3's namespace                  DIALGUARD_KEY_PREFIX={DEMO_PREFIX} .venv/bin/dialguard rules history"
          " (its own; the stack's guard never saw these versions)")
    print(f"  metrics of the stack's guard       http://127.0.0.1:{env.get('DIALGUARD_METRICS_PORT', '19100')}"
          "/metrics (Prometheus text; /healthz)")
    print()
    print(f"demo done in {time.monotonic() - t0:.0f} s; the stack keeps running (`make status`, `make down`)")
    return 0 if not wrong and not missing and ok_act2 and ok_act3 else 1


if __name__ == "__main__":
    sys.exit(main())
