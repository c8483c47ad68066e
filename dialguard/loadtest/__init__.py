"""`dialguard loadtest`: drive a PBX with SIPp through the guard and print
calls/s, post-dial delay (and what the guard adds to it, against a plain
route) and denials.

Two SIPp scenarios ship here: uac.xml (the callers) and uas.xml (a carrier
to point a test trunk at). One pass sends rate x duration calls, numbers taken
in turn from the list, to the PBX as the From user `caller`; with a `plain`
caller (an unguarded route of the same PBX to the same trunk) a second pass
measures the same calls without the guard.

Post-dial delay (PDD) of a call: INVITE sent -> first 180/183, 200 or final
error received. A 403 is what the guard's refusal (cause 21) becomes on SIP, a
503 its "could not decide" (cause 34); the PBX may answer those for its own
reasons too, which the guard's audit tells apart.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path


class LoadtestError(RuntimeError):
    """SIPp missing, bad options, or SIPp failed to run."""


@dataclass(frozen=True)
class Options:
    pbx: str                      # HOST:PORT of the PBX's SIP listener
    caller: str                   # From user of the guarded path
    numbers: list[str]
    campaign: str = "loadtest"
    agent: str = "loadtest"
    rate: float = 10.0            # calls per second
    duration: float = 3.0         # seconds of sending
    hold_ms: int = 100            # talk time of answered calls
    plain: str | None = None      # From user of an unguarded route (PDD baseline)
    carrier_port: int | None = None  # run the SIPp carrier on this port (None: your PBX dials elsewhere)
    local_ip: str = "127.0.0.1"
    limit: int = 200              # at most this many calls at once
    timeout_s: int = 120
    workdir: Path = field(default_factory=lambda: Path("loadtest-run"))


@dataclass
class Pass:
    caller: str
    placed: int = 0
    answered: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # SIP code -> calls
    unanswered: int = 0           # no final response (SIPp timeout)
    carrier_invites: int | None = None
    calls_per_s: float = 0.0      # INVITEs sent per second, as achieved
    pdd_ms: dict[str, float] = field(default_factory=dict)  # p50, p95, max

    @property
    def denied(self) -> int:
        return self.rejected.get("403", 0)

    @property
    def unavailable(self) -> int:
        return self.rejected.get("503", 0)


def scenario(name: str) -> Path:
    return Path(str(resources.files("dialguard").joinpath("loadtest", name)))


def _sipp() -> str:
    path = shutil.which("sipp")
    if not path:
        raise LoadtestError("sipp not found: install SIPp (Debian/Ubuntu: apt-get install sip-tester)")
    return path


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _epoch(stamp: str) -> float | None:
    words = stamp.split()
    try:
        return float(words[-1]) if words else None
    except ValueError:
        return None


def _lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split(";") for line in path.read_text(errors="replace").splitlines() if line.strip()]


def _percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


class _Proc:
    def __init__(self, cmd: list[str], workdir: Path, name: str):
        self.screen = workdir / f"{name}.screen.log"
        with open(self.screen, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, grace: float) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGUSR1)  # finish the calls in hand, then exit
                self.proc.wait(timeout=grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()

    def tail(self) -> str:
        text = self.screen.read_text(errors="replace") if self.screen.exists() else ""
        return text[-1500:]


def _sipp_cmd(o: Options, name: str, scenario_file: Path, port: int, workdir: Path) -> list[str]:
    return [_sipp(), "-sf", str(scenario_file), "-i", o.local_ip, "-p", str(port),
            "-mi", o.local_ip, "-mp", str(_free_udp_port()), "-cp", str(_free_udp_port()),
            "-nostdin", "-trace_logs", "-log_file", str(workdir / f"{name}.log"),
            "-trace_err", "-error_file", str(workdir / f"{name}.errors.log"),
            "-timeout", f"{o.timeout_s}s", "-recv_timeout", "15000"]


def run_pass(o: Options, caller: str) -> Pass:
    """Send rate x duration calls as `caller`; read both ends' logs."""
    total = max(1, round(o.rate * o.duration))
    workdir = (o.workdir / caller).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("*.log"):
        old.unlink()
    injection = workdir / "calls.csv"
    injection.write_text("SEQUENTIAL\n" + "".join(
        f"{o.numbers[i % len(o.numbers)]};{o.campaign};{o.agent}\n" for i in range(total)))
    carrier = None
    if o.carrier_port is not None:
        carrier = _Proc(_sipp_cmd(o, "carrier", scenario("uas.xml"), o.carrier_port, workdir)
                        + ["-timeout", f"{o.timeout_s + 30}s"], workdir, "carrier")
        time.sleep(0.5)
        if carrier.proc.poll() is not None:
            raise LoadtestError(f"the SIPp carrier did not start: {carrier.tail()}")
    try:
        uac = _Proc(_sipp_cmd(o, "callers", scenario("uac.xml"), _free_udp_port(), workdir)
                    + ["-inf", str(injection), "-m", str(total), "-r", f"{o.rate:g}", "-l", str(o.limit),
                       "-d", str(o.hold_ms), "-key", "caller", caller, o.pbx], workdir, "callers")
        try:
            uac.proc.wait(timeout=o.timeout_s + 30)
        except subprocess.TimeoutExpired:
            uac.stop(2.0)
        if not (workdir / "callers.log").exists():
            raise LoadtestError(f"SIPp sent no call (exit {uac.proc.returncode}): {uac.tail()}")
    finally:
        if carrier is not None:
            carrier.stop(10.0)
    return _read(caller, workdir)


def _read(caller: str, workdir: Path) -> Pass:
    sent: dict[str, float] = {}
    first: dict[str, float] = {}
    result = Pass(caller)
    for parts in _lines(workdir / "callers.log"):
        kind = parts[0]
        if kind == "INVITE" and len(parts) >= 4:
            t = _epoch(parts[3])
            if t is not None:
                sent[parts[2]] = t
        elif kind in ("RING", "ANSWER") and len(parts) >= 4:
            t = _epoch(parts[3])
            if t is not None:
                first.setdefault(parts[2], t)
            if kind == "ANSWER":
                result.answered += 1
        elif kind == "REJECT" and len(parts) >= 5:
            t = _epoch(parts[4])
            if t is not None:
                first.setdefault(parts[2], t)
            result.rejected[parts[3]] = result.rejected.get(parts[3], 0) + 1
    result.placed = len(sent)
    result.unanswered = result.placed - result.answered - sum(result.rejected.values())
    if len(sent) > 1:
        times = sorted(sent.values())
        result.calls_per_s = round((len(times) - 1) / max(times[-1] - times[0], 1e-6), 2)
    pdd = [(first[cid] - t) * 1000 for cid, t in sent.items() if cid in first]
    if pdd:
        result.pdd_ms = {"p50": round(_percentile(pdd, 50), 2), "p95": round(_percentile(pdd, 95), 2),
                         "max": round(max(pdd), 2)}
    carrier_log = workdir / "carrier.log"
    if carrier_log.exists():
        result.carrier_invites = sum(1 for p in _lines(carrier_log) if p[0] == "INVITE")
    return result


def run(o: Options) -> dict:
    """The guarded pass, then the plain one if asked; the report as a dict."""
    if not o.numbers:
        raise LoadtestError("no numbers to call")
    if o.rate <= 0 or o.duration <= 0:
        raise LoadtestError("--rate and --duration must be positive")
    guarded = run_pass(o, o.caller)
    report = {"pbx": o.pbx, "rate": o.rate, "duration_s": o.duration,
              "guarded": asdict(guarded) | {"denied": guarded.denied, "unavailable": guarded.unavailable}}
    if o.plain:
        plain = run_pass(o, o.plain)
        report["plain"] = asdict(plain) | {"denied": plain.denied, "unavailable": plain.unavailable}
        if guarded.pdd_ms and plain.pdd_ms:
            report["pdd_added_ms"] = {k: round(guarded.pdd_ms[k] - plain.pdd_ms[k], 2) for k in ("p50", "p95")}
    return report


def render(report: dict) -> str:
    """The report for a terminal."""
    lines = [f"PBX {report['pbx']}: {report['rate']:g} calls/s for {report['duration_s']:g} s"]
    for name in ("guarded", "plain"):
        p = report.get(name)
        if not p:
            continue
        pdd = p["pdd_ms"]
        lines.append(
            f"{name:8} ({p['caller']}): placed {p['placed']}, answered {p['answered']}, "
            f"denied (403) {p['denied']}, guard unavailable (503) {p['unavailable']}, "
            f"other rejections {sum(p['rejected'].values()) - p['denied'] - p['unavailable']}, "
            f"no answer {p['unanswered']}"
            + (f", reached carrier {p['carrier_invites']}" if p["carrier_invites"] is not None else ""))
        lines.append(f"{'':8} {p['calls_per_s']:g} calls/s; PDD ms p50 {pdd.get('p50', '-')}, "
                     f"p95 {pdd.get('p95', '-')}, max {pdd.get('max', '-')}")
    if "pdd_added_ms" in report:
        a = report["pdd_added_ms"]
        lines.append(f"PDD added by the guard: p50 {a['p50']} ms, p95 {a['p95']} ms")
    return "\n".join(lines)
