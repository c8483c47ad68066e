"""The guarded dial fails closed however the FastAGI check goes wrong, also
when an earlier guarded dial on the same channel left an ALLOW, its decision
id and caller ID behind (issue 21: the dialplan presets only what this needs,
asterisk_conf/extensions_dialguard.conf [dialguard-dial]).

A FastAGI proxy in front of the stack's server (the global DIALGUARD_AGI points
at it for the test) passes most sessions through and misbehaves for the numbers
it is told to: closes the connection unanswered, answers nothing for 1.5 s then
closes (a server too slow), sends a command Asterisk refuses, or writes the
five variables of an allow but dies before the ALLOW. Asterisk's AGISTATUS is
SUCCESS in every one of these cases (the server hung up on it, nothing failed
on its side): only the dialplan's presets keep the call from being dialed.

Each misbehaviour runs twice: as the channel's first check, and as the second
check of a failover (outbound-failover: the first number allowed, dialed and
busy, then this one), where the first check's ALLOW is still on the channel.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

from guard import Cdr, numbers, place_calls, scenario, tag

MODES = ("close", "slow", "refused", "partial")
PARTIAL_CID = "+8610555000"


class MisbehavingProxy:
    """A FastAGI server on 127.0.0.1: sessions for the numbers in `modes` get that
    misbehaviour, every other session is relayed to the real server."""

    def __init__(self, upstream_port: int, modes: dict[str, str]):
        self.upstream_port = upstream_port
        self.modes = modes
        self.seen: Counter[str] = Counter()  # misbehaviours played, by mode
        self.replies: list[str] = []  # what Asterisk answered to the refused command
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MisbehavingProxy":
        self._thread.start()
        assert self._ready.wait(10), "the proxy did not start"
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._session, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            env = b""
            while True:
                line = await reader.readline()
                env += line
                if line in (b"\n", b"") or line == b"\r\n":
                    break
            fields = dict(ln.split(": ", 1) for ln in env.decode().splitlines() if ": " in ln)
            mode = self.modes.get(fields.get("agi_arg_1", ""))
            if mode is None:
                await self._relay(env, reader, writer)
                return
            self.seen[mode] += 1
            if mode == "slow":
                await asyncio.sleep(1.5)
            elif mode == "refused":
                writer.write(b"NO SUCH COMMAND\n")
                await writer.drain()
                self.replies.append((await reader.readline()).decode().strip())
            elif mode == "partial":
                # an allow's other five variables, then the server dies before ALLOW
                writer.write(f'EXEC MSet "DIALGUARD_REASONS=,DIALGUARD_CALLERID={PARTIAL_CID},DIALGUARD_MAXDURATION=60,'
                             f'DIALGUARD_NEXT_ELIGIBLE=,DIALGUARD_DECISION_ID=partial0"\n'.encode())
                await writer.drain()
                await reader.readline()
        finally:
            writer.close()

    async def _relay(self, env: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up_writer.write(env)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer), return_exceptions=True)


async def test_every_unanswered_check_denies_without_dialing(stack, guard, asterisk, tmp_path: Path) -> None:
    campaign, _ = await guard.campaign("failclosed")
    first = dict(zip(MODES, numbers(len(MODES))))            # the channel's first check misbehaves
    busy = dict(zip(MODES, numbers(len(MODES), prefix="13600")))  # allowed, dialed, busy (486)
    second = dict(zip(MODES, numbers(len(MODES))))           # then the failover's check misbehaves
    modes = {n: m for m, n in first.items()} | {n: m for m, n in second.items()}
    agent = f"e2e-agent-{tag()}"
    rows = [f"{first[m]};{campaign};{agent};" for m in MODES] + \
           [f"{busy[m]};{campaign};{agent};{second[m]}" for m in MODES]
    injection = tmp_path / "calls.csv"
    injection.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
    cdr = Cdr.mark(stack.dir)

    old = asterisk.rx("dialplan show globals").split("DIALGUARD_AGI=", 1)[1].split()[0]
    with MisbehavingProxy(stack.agi_port, modes) as proxy:
        asterisk.rx(f"dialplan set global DIALGUARD_AGI agi://127.0.0.1:{proxy.port}")
        try:
            run = place_calls(stack, injection, tmp_path, rate=5, limit=2,
                              uac_scenario=scenario("guard_failover", "agents_uac.xml"),
                              uas_scenario=scenario("guard_failover", "carrier_uas.xml"))
        finally:
            asterisk.rx(f"dialplan set global DIALGUARD_AGI {old}")

    # every misbehaviour was played, twice; Asterisk refused the bogus command
    assert proxy.seen == {m: 2 for m in MODES}, proxy.seen
    assert proxy.replies and all(r.startswith("510") for r in proxy.replies), proxy.replies
    assert run.uac.failed == 0, run.uac.describe()
    # the carrier saw only the busy numbers (allowed through the proxy), never a misbehaving check's
    assert Counter(i.number for i in run.invites) == Counter(busy.values()), run.carrier.describe()
    # each call rejected with Q.850 34 (SIP 503: the guard could not decide)
    assert Counter((c.number, c.outcome, c.code) for c in run.calls) == \
        Counter({(n, "rejected", 503): 1 for n in [*first.values(), *busy.values()]}), run.calls
    found = cdr.for_numbers({*first.values(), *busy.values()}, expect=2 * len(MODES))
    for mode in MODES:
        for number in (first[mode], busy[mode]):
            verdicts = [(r["dialguard_result"], r["dialguard_reasons"], r["hangupcause"], r["dialguard_decision_id"],
                         r["dialguard_spec"]) for r in found[number] if r["dialguard_result"]]
            # Nothing of the earlier check survives (its decision id, caller ID, maximum
            # duration): the values of no decision. "partial" wrote its own before dying.
            want = ("partial0", f"{len(PARTIAL_CID)}|60|") if mode == "partial" else ("", "0|0|")
            assert verdicts[-1] == ("DENY", "guard_unavailable", "34", *want), (mode, number, found[number])
