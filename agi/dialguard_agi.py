"""Classic AGI script, for a PBX that cannot reach the FastAGI server.

``AGI(/path/to/agi/dialguard-agi,check,NUMBER,CAMPAIGN,AGENT[,SUBJECT])`` (first
argument: the handler name, optionally with ``?query`` arguments; the rest as
for FastAGI). Same protocol code, handlers and channel variables as the
server, over stdin/stdout. Slower than FastAGI: every call starts a Python
process and connects to Redis (tens of milliseconds against about one).

Settings come from the environment (argv carries the AGI arguments):
DIALGUARD_AGI_SESSION_TIMEOUT, DIALGUARD_AGI_ENGINE_TIMEOUT,
DIALGUARD_CONVERSATION_MIN_S, DIALGUARD_LOG_LEVEL, plus the engine's own
(DIALGUARD_REDIS_URL...). Logs go to stderr, never to stdout.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

from . import protocol as p
from .engines import EngineProvider, load_factory
from .handlers import Options, load_builtin
from .logs import setup_logging
from .runner import run_session


class _FdWriter:
    """stdout as a stream writer; commands are small, a blocking write is fine."""

    def __init__(self, fd: int):
        self.fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    async def drain(self) -> None:
        return None


async def _stdin_reader(limit: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError):
        # Not a pipe/socket/tty (e.g. a regular file): feed the reader from a thread.
        def pump():
            fd = sys.stdin.fileno()
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    loop.call_soon_threadsafe(reader.feed_eof)
                    return
                loop.call_soon_threadsafe(reader.feed_data, chunk)

        threading.Thread(target=pump, daemon=True).start()
    return reader


async def amain() -> int:
    options = Options(
        conversation_min_s=int(os.environ.get("DIALGUARD_CONVERSATION_MIN_S", "1")),
        engine_timeout_s=float(os.environ.get("DIALGUARD_AGI_ENGINE_TIMEOUT", "2")),
        set_mode="set" if os.environ.get("DIALGUARD_AGI_SET_MODE") == "set" else "mset",
        # a process a call: its one line costs nothing next to the start-up
        log_sessions=os.environ.get("DIALGUARD_AGI_LOG_SESSIONS", "1") not in ("0", "false", "no"))
    timeout_s = float(os.environ.get("DIALGUARD_AGI_SESSION_TIMEOUT", "5"))
    engines = EngineProvider(load_factory(), create_timeout_s=max(0.5, timeout_s - 1.0))
    reader = await _stdin_reader(p.MAX_LINE_BYTES)
    try:
        await run_session(reader, _FdWriter(sys.stdout.fileno()), handlers=load_builtin(),
                          engines=engines, options=options, timeout_s=timeout_s,
                          parse_request=p.classic_request, fields={"mode": "classic"})
    finally:
        await engines.close()
    return 0


def main() -> int:
    # Asterisk sends SIGHUP when the channel hangs up; finish the session (a
    # report must still reach the engine) instead of dying mid-way.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    setup_logging(os.environ.get("DIALGUARD_LOG_LEVEL", "INFO"))
    return asyncio.run(amain())


if __name__ == "__main__":
    sys.exit(main())
