"""Helpers for the guard's end-to-end tests (tests/e2e/test_guard_*.py).

The tests run against the dev stack's live guard: the FastAGI server started by
`make up` (test clock on, default rules cn-default) on the `dg` key prefix. To
keep tests apart on that shared store, every test uses its own campaign names,
numbers and caller IDs (random), and puts the test clock back afterwards.
"""

from __future__ import annotations

import csv
import os
import random
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from dialguard.numbers import parse_number

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
UTC = timezone.utc

# Monday 2026-09-28 10:00 in Asia/Shanghai: an official working day, within
# cn-default's 09:00-18:00. The tests' "now" on the dev stack's test clock.
WORKDAY_10H = datetime(2026, 9, 28, 2, 0, tzinfo=UTC)

CDR_COLUMNS = ["start", "src", "dst", "disposition", "billsec", "campaign", "agent",
               "dialguard_result", "dialguard_reasons", "dialguard_decision_id", "uniqueid",
               "hangupcause", "dialguard_spec"]

_rng = random.SystemRandom()


def cdr_calls(path: Path, offset: int) -> list[dict[str, str]]:
    """The guard's CDR lines after byte `offset`, one per call, in the order the
    calls came in. A call whose Dial failed (busy...) also gets a line written
    before its hangup handler ran, without the guard's columns: the line with them
    wins. Order: uniqueid is <epoch>.<sequence of the channel> (a denied call's
    line is written before that of an allowed call placed just before it)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        f.seek(offset)
        rows = [dict(zip(CDR_COLUMNS, row)) for row in csv.reader(f) if row]
    calls: dict[str, dict[str, str]] = {}
    for row in rows:
        key = row.get("uniqueid") or str(id(row))
        if key not in calls or row.get("dialguard_result"):
            calls[key] = row
    return sorted(calls.values(), key=lambda r: tuple(int(x) if x.isdigit() else 0
                                                       for x in (r.get("uniqueid") or "0.0").split(".", 1)))


def channel_names(core_show_channels: str) -> set[str] | None:
    """The channel names in the output of Asterisk's `core show channels`
    (PJSIP/carrier-0000002a...); None when it is not that output (no answer)."""
    if "active channel" not in core_show_channels:
        return None
    return {words[0] for words in map(str.split, core_show_channels.splitlines()) if words and "/" in words[0]}


def idle(before: set[str], now: set[str] | None) -> bool:
    """No channel left but those that were up before (another caller's calls on the
    PBX, a call a test left up): every call placed since has hung up."""
    return now is not None and now <= before


def tag() -> str:
    """A short random name part: e2e-<tag> campaigns and agents are this test's own."""
    return uuid.uuid4().hex[:8]


def numbers(n: int, prefix: str = "139") -> list[str]:
    """n distinct random, valid mainland mobile numbers (national format, as an agent dials)."""
    out: list[str] = []
    while len(out) < n:
        number = prefix + "".join(_rng.choice("0123456789") for _ in range(11 - len(prefix)))
        if number not in out and parse_number(number, "CN").valid:
            out.append(number)
    return out


def caller_ids(n: int) -> list[str]:
    """n distinct random, valid Beijing fixed-line numbers in E.164 (caller IDs to approve)."""
    out: list[str] = []
    while len(out) < n:
        number = "+86105" + "".join(_rng.choice("0123456789") for _ in range(7))
        if number not in out and parse_number(number, "CN").valid:
            out.append(number)
    return out


def dialguard(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The admin CLI against the stack's live store (settings from .stack/env)."""
    out = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "dialguard"), *args], capture_output=True,
                         text=True, timeout=60, env=os.environ.copy())
    if check and out.returncode != 0:
        raise AssertionError(f"dialguard {' '.join(args)} exited {out.returncode}: {out.stderr or out.stdout}")
    return out


def agi_server(action: str) -> None:
    """scripts/agi-server.sh start|stop|restart: only the stack's FastAGI server."""
    out = subprocess.run([str(REPO_ROOT / "scripts" / "agi-server.sh"), action], capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"agi-server.sh {action} failed: {out.stderr or out.stdout}")


@dataclass(frozen=True)
class Cdr:
    path: Path
    offset: int

    @classmethod
    def mark(cls, stack_dir: Path) -> "Cdr":
        """Remember where the CDR file ends now: rows() returns what comes after."""
        path = stack_dir / "asterisk" / "log" / "cdr-custom" / "dialguard.csv"
        return cls(path, path.stat().st_size if path.exists() else 0)

    def rows(self, expect: int = 0, timeout: float = 5.0) -> list[dict[str, str]]:
        """CDR rows written since mark(); waits until at least `expect` are there
        (a CDR is written when the channel is gone, just after SIPp's last message)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = cdr_calls(self.path, self.offset)
            if len(rows) >= expect or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)

    def for_numbers(self, wanted: set[str], expect: int = 0) -> dict[str, list[dict[str, str]]]:
        found: dict[str, list[dict[str, str]]] = {}
        deadline = time.monotonic() + 5.0
        while True:
            found = {}
            for row in self.rows():
                if row["dst"] in wanted:
                    found.setdefault(row["dst"], []).append(row)
            if sum(map(len, found.values())) >= expect or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


def scenario(name: str, file: str) -> Path:
    return SCENARIOS / name / file


def render(template: Path, dest: Path, **values: str) -> Path:
    """Fill a scenario's injection template ({name} placeholders) into dest."""
    from sipp import read_injection, write_injection

    order = template.read_text().splitlines()[0].strip()
    rows = [[field.format(**values) for field in row] for row in read_injection(template)]
    write_injection(dest, rows, order=order)
    return dest


def place_calls(stack, injection: Path, workdir: Path, **kw):
    """run_calls from the agents' side (the guarded path) against the stack."""
    from sipp import run_calls

    kw.setdefault("rate", 10)
    kw.setdefault("limit", 10)
    kw.setdefault("hold_ms", 200)
    kw.setdefault("timeout_s", 60)
    return run_calls(injection, workdir, sip_port=stack.sip_port, agents_port=stack.agents_port,
                     carrier_port=stack.carrier_port, caller="agents", **kw)
