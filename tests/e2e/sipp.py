"""Run SIPp against the stack's Asterisk and read back what happened.

Scenarios live in tests/e2e/scenarios/<name>/ (SIPp XML and injection CSV side
by side, Asterisk-testsuite style); the two shared ones are in
scenarios/common/:

- agents_uac.xml: the agents' side. One call per injection line
  (number;campaign;agent), logs "INVITE;<number>;<Call-ID>;<time>" when it
  sends the INVITE, then "<number>;answered" or "<number>;rejected;<code>".
- carrier_uas.xml: the carrier. Answers every INVITE and logs
  "INVITE;<request-URI user>;<From user>;<Call-ID>;<PAI user>;<time>",
  "ANSWER;<Call-ID>;<time>" and "BYE;<Call-ID>;<time>".
  (<time>: SIPp's [timestamp], whose last word is epoch.microseconds.)

Every SIPp process runs in its own session with a pid file under
.stack/sipp/, so `make down` reaps it even if the test process died.
The demo (scripts/demo.py) uses this module too.
"""

from __future__ import annotations

import csv
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
AGENTS_UAC = SCENARIOS / "common" / "agents_uac.xml"
CARRIER_UAS = SCENARIOS / "common" / "carrier_uas.xml"
REPO_ROOT = Path(__file__).resolve().parents[2]


def stack_dir() -> Path:
    return Path(os.environ.get("DIALGUARD_STACK_DIR", REPO_ROOT / ".stack"))


def load_stack_env() -> None:
    """Put the settings `make up` wrote to .stack/env into os.environ (what is
    already set wins), so tests and the demo reach this checkout's stack."""
    env_file = stack_dir() / "env"
    if not env_file.is_file():
        return
    for line in env_file.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            words = shlex.split(value)
            os.environ.setdefault(key, words[0] if words else "")


# --- results ---------------------------------------------------------------------

@dataclass(frozen=True)
class UacCall:
    """One call as the agents' side saw it."""

    number: str
    outcome: str  # "answered" | "rejected"
    code: int | None = None  # SIP status of a rejection


@dataclass(frozen=True)
class CarrierInvite:
    """One INVITE that reached the carrier."""

    number: str  # user part of the request URI
    from_user: str
    call_id: str
    pai_user: str = ""  # user part of P-Asserted-Identity ("" when absent)
    at: float | None = None  # epoch seconds when the carrier received it


@dataclass(frozen=True)
class UacInvite:
    """One INVITE the agents' side sent."""

    number: str
    call_id: str
    at: float  # epoch seconds


def log_time(field: str) -> float | None:
    """Epoch seconds from a SIPp [timestamp] (date, time, epoch.usec; tab-separated)."""
    words = field.split()
    try:
        return float(words[-1]) if words else None
    except ValueError:
        return None


def parse_stat_csv(path: Path) -> dict[str, str]:
    """The last row of a SIPp -trace_stat file, keyed by column name."""
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f, delimiter=";") if row]
    if len(rows) < 2:
        raise ValueError(f"{path}: no statistics row")
    header, last = rows[0], rows[-1]
    return {name: value for name, value in zip(header, last) if name}


def _log_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.rstrip("\n").split(";") for line in path.read_text().splitlines() if line.strip()]


def parse_uac_log(path: Path) -> list[UacCall]:
    calls = []
    for parts in _log_lines(path):
        if len(parts) >= 2 and parts[1] in ("answered", "rejected"):
            code = int(parts[2]) if parts[1] == "rejected" and len(parts) > 2 else None
            calls.append(UacCall(parts[0], parts[1], code))
    return calls


def parse_uac_invites(path: Path) -> list[UacInvite]:
    return [UacInvite(p[1], p[2], log_time(p[3]) or 0.0) for p in _log_lines(path)
            if len(p) >= 4 and p[0] == "INVITE"]


def parse_uas_log(path: Path) -> list[CarrierInvite]:
    return [CarrierInvite(p[1], p[2], p[3], p[4] if len(p) > 4 else "", log_time(p[5]) if len(p) > 5 else None)
            for p in _log_lines(path) if len(p) >= 4 and p[0] == "INVITE"]


def parse_uas_times(path: Path, event: str) -> dict[str, float]:
    """Call-ID -> epoch seconds of the carrier's ANSWER or BYE lines."""
    return {p[1]: t for p in _log_lines(path) if len(p) >= 3 and p[0] == event
            for t in [log_time(p[2])] if t is not None}


def write_injection(path: Path, rows: Iterable[Sequence[str]], order: str = "SEQUENTIAL") -> int:
    """Write a SIPp injection file (-inf); returns the number of calls in it."""
    lines = [";".join(row) for row in rows]
    path.write_text(order + "\n" + "".join(line + "\n" for line in lines))
    return len(lines)


def read_injection(path: Path) -> list[list[str]]:
    """The data lines of an injection file (the first line is the read order)."""
    lines = path.read_text().splitlines()[1:]
    return [line.split(";") for line in lines if line.strip() and not line.startswith("#")]


@dataclass
class SippResult:
    name: str
    returncode: int
    stats: dict[str, str]
    log: Path
    errors: str
    screen: Path

    def count(self, column: str) -> int:
        return int(self.stats.get(f"{column}(C)", "0") or 0)

    @property
    def successful(self) -> int:
        return self.count("SuccessfulCall")

    @property
    def failed(self) -> int:
        return self.count("FailedCall")

    @property
    def created(self) -> int:
        return int(self.stats.get("TotalCallCreated", "0") or 0)

    def describe(self) -> str:
        """For assertion messages: where to look."""
        return (f"SIPp {self.name}: rc={self.returncode} created={self.created} "
                f"successful={self.successful} failed={self.failed}; screen {self.screen}; "
                f"errors: {self.errors[-2000:] or 'none'}")


# --- processes ---------------------------------------------------------------------

def sipp_binary() -> str:
    path = shutil.which("sipp")
    if not path:
        raise RuntimeError("sipp is not installed (Debian package sip-tester): run 'make setup'")
    return path


@dataclass
class Sipp:
    """One SIPp process bound to 127.0.0.1:local_port.

    remote: "127.0.0.1:PORT" for a UAC; None for a UAS.
    calls/rate/limit: -m / -r / -l. hold_ms: -d (pause length in the scenario).
    timeout_s: SIPp's own global timeout (-timeout, counted as an error).
    """

    name: str
    scenario: Path
    workdir: Path
    local_port: int
    remote: str | None = None
    injection: Path | None = None
    calls: int | None = None
    rate: float | None = None
    limit: int | None = None
    hold_ms: int = 0
    timeout_s: int = 120
    keys: dict[str, str] = field(default_factory=dict)  # -key NAME VALUE ([NAME] in the scenario)
    extra: Sequence[str] = ()
    proc: subprocess.Popen | None = field(default=None, init=False)

    def _path(self, suffix: str) -> Path:
        return self.workdir / f"{self.name}.{suffix}"

    @property
    def pidfile(self) -> Path:
        return stack_dir() / "sipp" / f"{self.name}-{self.local_port}.pid"

    def command(self) -> list[str]:
        cmd = [
            sipp_binary(), "-sf", str(self.scenario),
            "-i", "127.0.0.1", "-p", str(self.local_port),
            # media (-mp, and -mp + 2) and control (-cp) ports next to the SIP port
            "-mi", "127.0.0.1", "-mp", str(self.local_port + 1000), "-cp", str(self.local_port + 2000),
            "-nostdin",
            "-trace_stat", "-stf", str(self._path("stat.csv")), "-fd", "1",
            "-trace_err", "-error_file", str(self._path("errors.log")),
            "-trace_logs", "-log_file", str(self._path("log")),
            "-timeout", f"{self.timeout_s}s", "-timeout_error",
            "-recv_timeout", "15000",
            "-d", str(self.hold_ms),
        ]
        if self.injection is not None:
            cmd += ["-inf", str(self.injection)]
        if self.calls is not None:
            cmd += ["-m", str(self.calls)]
        if self.rate is not None:
            cmd += ["-r", str(self.rate)]
        if self.limit is not None:
            cmd += ["-l", str(self.limit)]
        for key, value in self.keys.items():
            cmd += ["-key", key, value]
        cmd += list(self.extra)
        if self.remote:
            cmd.append(self.remote)
        return cmd

    def start(self) -> "Sipp":
        self.workdir.mkdir(parents=True, exist_ok=True)
        for suffix in ("stat.csv", "errors.log", "log", "screen.log"):
            self._path(suffix).unlink(missing_ok=True)
        with open(self._path("screen.log"), "wb") as screen:
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=screen, stderr=subprocess.STDOUT, start_new_session=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.write_text(f"{self.proc.pid}\n")
        return self

    def wait_ready(self, timeout: float = 5.0) -> None:
        """Wait until SIPp has written its first statistics (its sockets are bound)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"SIPp {self.name} exited at start: {self._tail()}")
            if self._path("stat.csv").exists():
                return
            time.sleep(0.05)
        raise RuntimeError(f"SIPp {self.name} not ready after {timeout}s: {self._tail()}")

    def _tail(self) -> str:
        screen = self._path("screen.log")
        text = screen.read_text(errors="replace") if screen.exists() else ""
        # SIPp prints start-up errors first, then its statistics screen.
        return text if len(text) < 2000 else text[:1000] + "\n[...]\n" + text[-1000:]

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to exit on its own (-m reached, or its -timeout)."""
        assert self.proc is not None, "not started"
        try:
            self.proc.wait(timeout=timeout if timeout is not None else self.timeout_s + 30)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        return self._result()

    def stop(self, grace: float = 5.0) -> SippResult | None:
        """Ask SIPp to finish its calls and exit (SIGUSR1); kill it after `grace` seconds."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGUSR1)
                self.proc.wait(timeout=grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        return self._result()

    def _result(self) -> SippResult:
        assert self.proc is not None
        self.pidfile.unlink(missing_ok=True)
        stat = self._path("stat.csv")
        errors = self._path("errors.log")
        return SippResult(
            name=self.name,
            returncode=self.proc.returncode,
            stats=parse_stat_csv(stat) if stat.exists() else {},
            log=self._path("log"),
            errors=errors.read_text(errors="replace") if errors.exists() else "",
            screen=self._path("screen.log"),
        )

    def __enter__(self) -> "Sipp":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(grace=2.0)


@dataclass
class CallRun:
    """What one agents -> Asterisk -> carrier run produced."""

    uac: SippResult
    carrier: SippResult
    calls: list[UacCall]
    invites: list[CarrierInvite]
    sent: list[UacInvite] = field(default_factory=list)
    answers: dict[str, float] = field(default_factory=dict)  # carrier Call-ID -> ACK of its 200 OK received
    byes: dict[str, float] = field(default_factory=dict)  # carrier Call-ID -> BYE received


def run_calls(injection: Path, workdir: Path, *, sip_port: int, agents_port: int, carrier_port: int,
              caller: str = "agents", rate: float = 50, limit: int = 50, hold_ms: int = 100,
              timeout_s: int = 120, uac_scenario: Path = AGENTS_UAC, uas_scenario: Path = CARRIER_UAS,
              uac_keys: dict[str, str] | None = None, uas_hold_ms: int = 0) -> CallRun:
    """Place every call of `injection` from the agents' side and collect both ends.

    caller: the From user, which picks the Asterisk endpoint: "agents" (the
    guarded path, context from-agents), "direct" (unguarded baseline) or
    "astdb" (the plain-dialplan guard of the benchmark).
    uac_keys: more -key NAME VALUE for the agents' scenario; uas_hold_ms: -d of
    the carrier (for carrier scenarios with a <pause/>).
    """
    total = len(read_injection(injection))
    carrier = Sipp("carrier", uas_scenario, workdir, carrier_port, timeout_s=timeout_s + 30, hold_ms=uas_hold_ms)
    with carrier:
        carrier.wait_ready()
        uac = Sipp("agents", uac_scenario, workdir, agents_port, remote=f"127.0.0.1:{sip_port}",
                   injection=injection, calls=total, rate=rate, limit=limit, hold_ms=hold_ms,
                   timeout_s=timeout_s, keys={"caller": caller, **(uac_keys or {})})
        with uac:
            uac_result = uac.wait()
        # The UAC is done once Asterisk answered its BYEs; the carrier's BYEs may
        # still be in flight: SIGUSR1 lets SIPp finish the calls it has.
        carrier_result = carrier.stop(grace=10.0)
    assert carrier_result is not None
    return CallRun(uac_result, carrier_result, parse_uac_log(uac_result.log), parse_uas_log(carrier_result.log),
                   parse_uac_invites(uac_result.log), parse_uas_times(carrier_result.log, "ANSWER"),
                   parse_uas_times(carrier_result.log, "BYE"))
