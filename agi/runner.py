"""Run one AGI session end to end; shared by the FastAGI server and the
classic AGI script so both speak exactly the same protocol and handlers.

Never raises for anything the peer or a handler does: the outcome goes into
the returned log fields. A session that fails before its handler ran has not
touched the channel, whose DIALGUARD_RESULT stays at the DENY the dialplan
preset; a handler that fails gets its ``on_error`` (``check``: DENY,
guard_unavailable).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from dialguard.masking import mask_digits

from . import protocol as p
from .handlers import Context, Handler, Options
from .session import AGISession

log = logging.getLogger("dialguard.agi")

# Time a failing handler still gets to leave the channel fail-closed.
ON_ERROR_GRACE_S = 1.0

# Outcomes of a session that went as it should (logged at INFO only with
# Options.log_sessions, else DEBUG); any other outcome is a WARNING.
_OK = frozenset({"allow", "deny", "reported", "recorded", "skipped"})

RequestParser = Callable[[dict[str, str]], p.ScriptRequest]


async def run_session(reader: asyncio.StreamReader, writer, *, handlers: dict[str, Handler],
                      engines, options: Options | None = None, timeout_s: float = 5.0,
                      parse_request: RequestParser = p.fastagi_request,
                      fields: dict | None = None,
                      max_line_bytes: int = p.MAX_LINE_BYTES,
                      max_env_lines: int = p.MAX_ENV_LINES,
                      quiet_before_env: bool = False) -> dict:
    """`quiet_before_env`: a session that ends before its environment block is
    not logged here (the FastAGI server counts those in one line a second)."""
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    deadline = loop.time() + timeout_s
    fields = fields if fields is not None else {}
    fields.setdefault("event", "agi_session")
    session = AGISession(reader, writer, max_line_bytes=max_line_bytes, max_env_lines=max_env_lines)
    try:
        # One timeout for the whole session (a timer each costs CPU at high
        # rates); ctx tells which step it cut short.
        ctx = None
        try:
            async with asyncio.timeout_at(deadline):
                # 1. The environment block and the request it names.
                env = await session.read_env()
                request = parse_request(env)
                # A channel name may carry the dialed number (Local/9<number>@...): masked.
                fields.update(script=request.name, channel=mask_digits(env.get("agi_channel")),
                              uniqueid=env.get("agi_uniqueid"))
                handler = handlers.get(request.name)
                if handler is None:
                    fields.update(outcome="unknown_script", error=f"no handler named {request.name!r}")
                    return fields
                # 2. The handler, under the same session deadline.
                ctx = Context(session=session, request=request, handler=handler, engines=engines,
                              options=options or Options(), deadline=deadline, fields=fields)
                await handler.handle(ctx)
        except Exception as exc:  # TimeoutError included
            if ctx is None:
                if isinstance(exc, TimeoutError):
                    fields.update(outcome="timeout", error="no complete environment block before the deadline")
                    return fields
                if isinstance(exc, p.ProtocolError):
                    fields.update(outcome="protocol_error", error=str(exc))
                    return fields
                raise
            # protocol: the peer broke the protocol or hung up mid-way, not a handler bug
            kind = ("timeout" if isinstance(exc, TimeoutError)
                    else "protocol" if isinstance(exc, p.ProtocolError) else "error")
            fields["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            fields["failure"] = kind
            if not isinstance(exc, (p.ProtocolError, TimeoutError)):
                log.debug("handler %s failed", request.name, exc_info=True)
            if handler.on_error is not None:
                try:
                    async with asyncio.timeout(ON_ERROR_GRACE_S):
                        await handler.on_error(ctx, exc)
                except Exception as exc2:
                    fields["on_error_failed"] = f"{type(exc2).__name__}: {exc2}"
            fields.setdefault("outcome", "error")
            if fields["outcome"] in ("allow", "reported", "recorded"):
                fields["outcome"] = "error"
        return fields
    finally:
        fields["hungup"] = session.hungup
        fields["commands"] = session.commands_sent
        fields["duration_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        # before its environment block, a quiet session is counted by the caller
        # instead (a flood of idle connections logs one line a second)
        if not (quiet_before_env and not session.env):
            if fields.get("outcome") in _OK:
                level = logging.INFO if options is not None and options.log_sessions else logging.DEBUG
            else:
                level = logging.WARNING
            if log.isEnabledFor(level):
                log.log(level, "agi session %s", fields.get("outcome"), extra={"fields": dict(fields)})
