"""A FastAGI client: the Asterisk side of an AGI session, scripted. What
`dialguard agi check` points at a FastAGI server (an admin's end-to-end check
without a PBX), the latency measurement of bench/cps.py, and the protocol tests
use (their fake engine: tests/fakes/engine.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

# Commands res_agi accepts on a dead channel (the "dead" column of its table).
DEAD_OK = {("SET", "VARIABLE"), ("GET", "VARIABLE"), ("GET", "FULL"), ("VERBOSE",), ("NOOP",),
           ("DATABASE", "GET"), ("DATABASE", "PUT"), ("DATABASE", "DEL"), ("DATABASE", "DELTREE"),
           ("EXEC",)}
KNOWN = DEAD_OK | {("ANSWER",), ("HANGUP",), ("STREAM", "FILE"), ("WAIT", "FOR")}
SET_VARIABLE_USAGE = (
    " Usage: SET VARIABLE <variablename> <value>\n"
    "\tSets a variable to the current value.\n")


def parse_args(line: str) -> list[str]:
    """What Asterisk's res_agi parse_args makes of a command line (quotes group,
    backslash escapes the next character), to check our quoting against."""
    argv: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    whitespace = True
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                argv.append("")
                whitespace = False
            continue
        if ch in " \t" and not quoted and not escaped:
            if not whitespace:
                argv[-1] += "".join(cur)
                cur = []
            whitespace = True
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if whitespace:
            argv.append("")
            whitespace = False
        cur.append(ch)
        escaped = False
    if cur:
        argv[-1] += "".join(cur)
    return argv


def app_args(data: str, sep: str = ",") -> list[str]:
    """What Asterisk's application argument splitter (AST_STANDARD_APP_ARGS,
    quotes and backslashes removed) makes of an application's data."""
    out: list[str] = [""]
    quoted = escaped = False
    for ch in data:
        if escaped:
            out[-1] += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            out.append("")
        else:
            out[-1] += ch
    return out


def mset_pairs(data: str) -> list[tuple[str, str]]:
    """The (name, value) pairs MSet sets, in order; entries without '=' are
    ignored, as Asterisk does."""
    pairs = []
    for entry in app_args(data):
        name, sep, value = entry.partition("=")
        if sep:
            pairs.append((name, "".join(app_args(value, "\0"))))
    return pairs


def env_block(script: str | None = "check", args=(), *, uniqueid: str = "1700000000.1",
              channel: str = "PJSIP/agent-00000001", network: bool = True, extra=None) -> bytes:
    lines = []
    if network:
        lines.append("agi_network: yes")
        if script is not None:
            lines.append(f"agi_network_script: {script}")
        lines.append(f"agi_request: agi://127.0.0.1:14573/{script or ''}")
    else:
        lines.append("agi_request: /usr/share/asterisk/agi-bin/dialguard-agi")
    lines += [
        f"agi_channel: {channel}", "agi_language: en", "agi_type: PJSIP",
        f"agi_uniqueid: {uniqueid}", "agi_version: 22.0.0",
        "agi_callerid: 1001", "agi_calleridname: Agent One", "agi_callingpres: 0",
        "agi_callingani2: 0", "agi_callington: 0", "agi_callingtns: 0", "agi_dnid: unknown",
        "agi_rdnis: unknown", "agi_context: agents", "agi_extension: s", "agi_priority: 3",
        "agi_enhanced: 0.0", "agi_accountcode: ", "agi_threadid: 140000000000000",
    ]
    for k, v in (extra or {}).items():
        lines.append(f"{k}: {v}")
    for i, a in enumerate(args, 1):
        lines.append(f"agi_arg_{i}: {a}")
    return ("\n".join(lines) + "\n\n").encode()


@dataclass
class PeerResult:
    commands: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    history: list[tuple[str, str]] = field(default_factory=list)
    closed_by_server: bool = False


class AgiPeer:
    """The Asterisk side of one AGI session, scripted.

    ``hangup_before``: index of the command before whose reply an unsolicited
    ``HANGUP`` line is sent (then the channel is dead: commands not allowed on a
    dead channel get 511; with ``strict_dead`` every command does).
    ``replies``: command index -> raw reply bytes to send instead.
    ``EXEC MSet`` sets its variables in order (``history`` gets one entry
    each); other ``EXEC`` applications answer -2 (not found).
    """

    def __init__(self, reader: asyncio.StreamReader, writer, *, mset: bool = True):
        self.reader = reader
        self.writer = writer
        self.mset = mset  # False: an Asterisk without the MSet application (EXEC answers -2)

    @classmethod
    async def connect(cls, host: str, port: int, *, mset: bool = True) -> "AgiPeer":
        r, w = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(r, w, mset=mset)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def serve(self, *, hangup_before: int | None = None, strict_dead: bool = False,
                    replies: dict[int, bytes] | None = None, timeout: float = 10.0) -> PeerResult:
        res = PeerResult()
        dead = False
        replies = replies or {}
        async with asyncio.timeout(timeout):
            while True:
                line = await self.reader.readline()
                if not line:
                    res.closed_by_server = True
                    return res
                cmd = line.decode().rstrip("\n")
                i = len(res.commands)
                res.commands.append(cmd)
                if hangup_before is not None and i == hangup_before:
                    await self.send(b"HANGUP\n")
                    dead = True
                if i in replies:
                    await self.send(replies[i])
                    continue
                argv = parse_args(cmd)
                words = tuple(a.upper() for a in argv[:2])
                known = words in KNOWN or words[:1] in KNOWN
                if not known:
                    await self.send(b"510 Invalid or unknown command\n")
                elif dead and (strict_dead or not (words in DEAD_OK or words[:1] in DEAD_OK)):
                    await self.send(b"511 Command Not Permitted on a dead channel\n")
                elif words == ("SET", "VARIABLE"):
                    if len(argv) != 4:
                        await self.send(b"520-Invalid command syntax.  Proper usage follows:\n"
                                        + SET_VARIABLE_USAGE.encode() + b"520 End of proper usage.\n")
                        continue
                    res.variables[argv[2]] = argv[3]
                    res.history.append((argv[2], argv[3]))
                    await self.send(b"200 result=1\n")
                elif words[:1] == ("EXEC",) and len(argv) > 1 and argv[1].upper() == "MSET" and self.mset:
                    for name, value in mset_pairs(argv[2] if len(argv) > 2 else ""):
                        res.variables[name] = value
                        res.history.append((name, value))
                    await self.send(b"200 result=0\n")
                elif words[:1] == ("EXEC",):
                    await self.send(b"200 result=-2\n")  # no such application
                else:
                    await self.send(b"200 result=1\n")

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except Exception:
            pass


async def agi_call(host: str, port: int, script: str = "check", args=(), **serve_kw) -> PeerResult:
    peer = await AgiPeer.connect(host, port, mset=serve_kw.pop("mset", True))
    try:
        await peer.send(env_block(script, args, uniqueid=serve_kw.pop("uniqueid", "1700000000.1")))
        return await peer.serve(**serve_kw)
    finally:
        await peer.close()


async def measure_check_latency(host: str, port: int, n: int = 1000, concurrency: int = 1) -> dict:
    """Round trips of complete ``check`` sessions at the socket: connect, env
    block, the SET VARIABLE exchanges, close. Returns p50/p99/max in ms."""
    samples: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            res = await agi_call(host, port, "check", ("+8613800138000", "c1", "a1"),
                                 uniqueid=f"1700000000.{i}")
            samples.append((time.perf_counter() - t) * 1000)
            if res.variables.get("DIALGUARD_RESULT") not in ("ALLOW", "DENY"):
                raise AssertionError(f"bad session: {res}")

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - t0
    samples.sort()

    def pct(q: float) -> float:
        return round(samples[min(len(samples) - 1, int(q * len(samples)))], 3)

    return {"n": n, "concurrency": concurrency, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": round(samples[-1], 3), "sessions_per_s": round(n / wall, 1)}
