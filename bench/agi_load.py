"""A lean AGI load client for the benchmarks: the Asterisk side of a `check`
session, as cheap as Python gets (an asyncio Protocol, no stream objects, no
per-character parsing), so that on a small machine the server is what a
latency figure measures, not the client beside it.

agi/client.py's AgiPeer is the exact one (res_agi's argument parsing, MSet's
splitting, dead channels): the tests and `dialguard agi check` use it. This one
answers every command line `200 result=0` (what res_agi answers an EXEC of
MSet) and reads only DIALGUARD_RESULT and DIALGUARD_REASONS out of the
commands it saw, enough to count the verdicts.
"""

from __future__ import annotations

import asyncio
import re

from agi.client import env_block

_RESULT = re.compile(rb'DIALGUARD_RESULT[= ]\\?"?([A-Z]*)')
_REASONS = re.compile(rb'DIALGUARD_REASONS[= ]\\?"([^"\\]*)')


class _Session(asyncio.Protocol):
    __slots__ = ("env", "done", "buf", "seen", "transport")

    def __init__(self, env: bytes, done: asyncio.Future):
        self.env, self.done, self.buf, self.seen = env, done, b"", []

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.env)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, _, self.buf = self.buf.partition(b"\n")
            self.seen.append(line)
            self.transport.write(b"200 result=0\n")

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(self.seen)


async def check(host: str, port: int, script: str, args, uniqueid: str, timeout: float = 10.0) -> tuple[str, str]:
    """One session to its end (the server closes it): (DIALGUARD_RESULT, DIALGUARD_REASONS)
    as last set, '?' for a result never set."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _Session(env_block(script, args, uniqueid=uniqueid), done),
                                                host, port)
    try:
        seen = await asyncio.wait_for(done, timeout)
    finally:
        transport.close()
    result, reasons = "?", ""
    for line in seen:
        if m := _RESULT.search(line):
            result = m.group(1).decode()
        if m := _REASONS.search(line):
            reasons = m.group(1).decode()
    return result, reasons
