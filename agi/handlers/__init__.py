"""Handlers by script name (``agi://host:port/NAME``), one small module each.

A handler module registers itself with :func:`register`; the server looks the
name up in :data:`HANDLERS`. Each handler gets a :class:`Context` and can be
tested alone with a scripted AGI peer and an engine object.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from dialguard.masking import mask_number  # noqa: F401  (handlers log numbers masked)

from ..protocol import ScriptRequest
from ..session import AGISession

HandleFn = Callable[["Context"], Awaitable[None]]
ErrorFn = Callable[["Context", BaseException], Awaitable[None]]


@dataclass(frozen=True)
class Handler:
    name: str
    handle: HandleFn
    # Names of the positional arguments (agi_arg_N), in order; the same names
    # work as query arguments (agi://host:port/NAME?campaign=c1).
    params: tuple[str, ...] = ()
    # Called when handle() raised or ran past the session deadline: the place
    # where a handler leaves the channel in its fail-closed state.
    on_error: ErrorFn | None = None


HANDLERS: dict[str, Handler] = {}
BUILTIN = ("check", "report", "optout", "complaint")


def register(name: str, *, params: tuple[str, ...] = (), on_error: ErrorFn | None = None):
    def deco(fn: HandleFn) -> HandleFn:
        HANDLERS[name] = Handler(name, fn, params, on_error)
        return fn
    return deco


def load_builtin() -> dict[str, Handler]:
    for mod in BUILTIN:
        importlib.import_module(f"{__name__}.{mod}")
    return HANDLERS


@dataclass
class Options:
    """Tunables shared by the handlers (set from the server's command line)."""

    # Answered calls with at least this many talk seconds count as a conversation.
    conversation_min_s: int = 1
    # Upper bound for one engine call; the session deadline may cut it shorter.
    engine_timeout_s: float = 2.0
    # How check writes its variables: "mset" (one EXEC MSet command for all of
    # them: 2 commands a check) or "set" (one SET VARIABLE each: 7 commands).
    set_mode: str = "mset"
    # The one log line of a session that went well (allow, deny, reported...):
    # INFO when True, else DEBUG (the audit trail has every decision; at high
    # rates the line cost ~8 % of a check). Failed sessions are always WARNING.
    log_sessions: bool = False


class BadRequest(ValueError):
    """The dialplan passed arguments the handler cannot use."""


@dataclass
class Context:
    session: AGISession
    request: ScriptRequest
    handler: Handler
    engines: Any  # an EngineProvider: ``await engines.get()`` -> engine
    options: Options = field(default_factory=Options)
    deadline: float | None = None  # loop.time() by which the session must end
    # Fields of the one log line written per session (outcome, reasons...).
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return self.session.env

    def param(self, name: str, default: str | None = None) -> str | None:
        """A positional argument by its name, else the query argument, else default.

        Empty positional arguments (GoSub passes them for optional ones) fall back
        to the query argument.
        """
        if name in self.handler.params:
            i = self.handler.params.index(name)
            if i < len(self.request.args) and self.request.args[i] != "":
                return self.request.args[i]
        value = self.request.query.get(name)
        if value not in (None, ""):
            return value
        return default

    def params(self) -> dict[str, str | None]:
        """Every named argument of the handler as param() gives it, in one pass
        (a check reads all nine: one lookup each was a share of its request)."""
        args, query = self.request.args, self.request.query
        n = len(args)
        return {name: (args[i] if i < n and args[i] != "" else query.get(name) or None)
                for i, name in enumerate(self.handler.params)}

    @property
    def call_id(self) -> str | None:
        return self.param("callid") or self.env.get("agi_uniqueid") or None

    def time_left(self, cap: float) -> float:
        """Seconds an engine call may take: at most ``cap``, and leave 0.5 s of the
        session for writing the result."""
        if self.deadline is None:
            return cap
        left = self.deadline - asyncio.get_running_loop().time() - 0.5
        return max(0.05, min(cap, left))

    async def engine_call(self, fn_name: str, *args, **kwargs):
        """Call the engine, bounded by the engine timeout and the session deadline."""
        async with asyncio.timeout(self.time_left(self.options.engine_timeout_s)):
            engine = getattr(self.engines, "engine", None) or await self.engines.get()
            return await getattr(engine, fn_name)(*args, **kwargs)


